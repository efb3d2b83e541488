"""The checks of each command's parsed flags, in one table (``CHECKS``).

Each check takes ``(command, args, model_args)``, raises a ``UserError`` that names the flag,
and may fill in a value (``--log_dir`` from ``--output_dir``, comma lists parsed). ``flags.parse``
runs the command's checks in the order listed.
"""
import inspect
import os

from IMDLBenCo.registry import DATASETS

from .datasets.opensdid import OPENSDID_SPLITS
from .engine import models
from .errors import UserError

# Models' own names for their input size (IML_ViT, ObjectFormer, PSCC_Net; SparseViT).
INPUT_SIZE_FLAGS = ("input_size", "img_size")


def note(text):
    # Parsing runs before the process group (and BenCo's rank-0-only print) exists.
    if os.environ.get("RANK", "0") == "0":
        print(text)


def check_folder_flag(flag, path):
    """A folder flag (created if missing) that names an existing file is an error."""
    if path and os.path.isfile(path):
        raise UserError(f"--{flag} {path} is a file", hint="give a folder (it is created if missing)")


def comma_list(text, flag, convert, example):
    """``"3, 5,7"`` -> ``[convert("3"), ...]``; a bad entry names ``flag``."""
    try:
        return [convert(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected a comma list such as {example}") from None


def _at_least(args, minimum, *flags):
    for flag in flags:
        if getattr(args, flag) < minimum:
            raise UserError(f"--{flag} must be at least {minimum}, got {getattr(args, flag)}")


def follow_image_size(args, model_args, from_user, from_checkpoint):
    """A model's input-size flag follows --image_size unless given (by the user or the
    checkpoint's training flags); given, it must match: the datasets yield --image_size
    images, and a model built for another size fails deep inside (IML_ViT: 'Target size ...
    must be the same as input size')."""
    for flag in INPUT_SIZE_FLAGS:
        if not hasattr(model_args, flag):
            continue
        value = getattr(model_args, flag)
        try:
            matches = int(value) == args.image_size  # a YAML or checkpoint value may be text
        except (TypeError, ValueError):
            matches = False
        if matches or (flag not in from_user and flag not in from_checkpoint):
            setattr(model_args, flag, args.image_size)
        elif flag in from_user:
            raise UserError(f"--{flag} {value} differs from --image_size {args.image_size}: the datasets give "
                            f"--model {args.model} images of --image_size",
                            hint=f"give one value (--{flag} follows --image_size when left out)")
        else:
            raise UserError(f"--image_size {args.image_size} differs from the --{flag} {value} the checkpoint was "
                            f"trained with, and --model {args.model} is built for that size",
                            hint="leave --image_size out to use that size")


# ---------------------------------------------------------------------------- the checks

def _output_dir(command, args, model_args):
    check_folder_flag("output_dir", args.output_dir)


def _output_required(command, args, model_args):
    if not args.output:
        raise UserError(f"--output is required for `{command}`")


def _export_output(command, args, model_args):
    check_folder_flag("output", args.output)


def _preview(command, args, model_args):
    _at_least(args, 1, "num", "cols")


def _source_dataset(command, args, model_args):
    if args.dataset not in ("OpenSDID", "BRGen"):
        raise UserError(f"--dataset {args.dataset}: `{command}` reads OpenSDID sources and BR-Gen folders",
                        hint="give --dataset OpenSDID or BRGen")


def _model_input(command, args, model_args):
    """The model and its input: resize or pad, sizes, the edge mask, extra packages."""
    if args.if_padding and args.if_resizing:
        raise UserError("--if_padding and --if_resizing exclude each other", hint="give one")
    if not (args.if_padding or args.if_resizing):
        note(f"[{command}] neither --if_resizing nor --if_padding given: resizing to {args.image_size} "
             f"(the authors' setting)")
        args.if_resizing = True
    _at_least(args, 1, "image_size")
    _at_least(args, 0, "num_workers")
    width = args.edge_mask_width
    if width is not None and (width < 1 or width % 2 == 0 or width >= args.image_size):
        raise UserError(f"--edge_mask_width {width}: BenCo's edge mask needs an odd width of at least 1 and below "
                        f"--image_size (paper: 7)", hint="leave the flag out for no edge mask")
    models.check_requirements(args.model)
    models.check_input_size(args.model, args.image_size, vars(model_args))
    forward = inspect.signature(models.model_class(args.model).forward).parameters
    edge = forward.get("edge_mask")
    if edge is not None and edge.default is inspect.Parameter.empty and width is None:
        raise UserError(f"--model {args.model} needs BenCo's edge mask", hint="pass --edge_mask_width (e.g. 7)")


def _test_data(command, args, model_args):
    """The datasets and test sets of train, test and test-robust; --log_dir."""
    if not DATASETS.has(args.dataset):
        raise UserError(f"--dataset {args.dataset!r} is not registered in IMDLBenCo DATASETS",
                        hint=f"choose one of {sorted(DATASETS.module_dict)}")
    # A dataset class may name its own default split (BRGen: the whole folder).
    default_split = getattr(DATASETS.get(args.dataset), "DEFAULT_SPLIT", None)
    if args.test_splits is None:
        args.test_splits = default_split or ",".join(OPENSDID_SPLITS)
    if command == "train" and args.train_split is None:
        args.train_split = default_split or OPENSDID_SPLITS[0]
    args.test_splits = [s.strip() for s in str(args.test_splits).split(",") if s.strip()]
    if not args.test_splits:
        raise UserError("--test_splits is empty", hint=f"give a comma list such as {','.join(OPENSDID_SPLITS)}")
    _at_least(args, 1, "test_batch_size", "print_freq")
    check_folder_flag("log_dir", args.log_dir)
    if args.log_dir is None:
        args.log_dir = args.output_dir


def _train(command, args, model_args):
    # Before any data is opened; test commands take every weight from the checkpoint.
    models.check_weight_files(args.model, {**vars(model_args), **vars(args)})
    _at_least(args, 1, "batch_size", "epochs", "test_period", "accum_iter")
    _at_least(args, 0, "shuffle_window")
    for flag in ("lr", "blr", "min_lr", "weight_decay"):
        value = getattr(args, flag)
        if value is not None and (value < 0 or (flag in ("lr", "blr") and value == 0)):
            raise UserError(f"--{flag} {value}: must be {'above' if flag in ('lr', 'blr') else 'at least'} 0")
    if args.edge_mask_width is None and getattr(model_args, "edge_weight", 0) > 0:
        note(f"[train] no --edge_mask_width: the edge loss (--edge_weight {model_args.edge_weight}) is off; "
             f"the paper's recipe uses --edge_mask_width 7")


def _gallery(command, args, model_args):
    _at_least(args, 0, "gallery_size")


def _robust(command, args, model_args):
    args.blur_kernels = comma_list(args.blur_kernels, "--blur_kernels", int, "3,5,7")
    args.jpeg_qualities = comma_list(args.jpeg_qualities, "--jpeg_qualities", int, "60,80,100")
    args.noise_vars = comma_list(args.noise_vars, "--noise_vars", float, "10,20")
    if any(k < 3 or k % 2 == 0 for k in args.blur_kernels):
        raise UserError(f"--blur_kernels {args.blur_kernels}: kernel sizes must be odd and >= 3")
    if any(not 1 <= q <= 100 for q in args.jpeg_qualities):
        raise UserError(f"--jpeg_qualities {args.jpeg_qualities}: qualities lie in 1..100")
    if any(v <= 0 for v in args.noise_vars):
        raise UserError(f"--noise_vars {args.noise_vars}: variances must be > 0")


def _predict(command, args, model_args):
    _at_least(args, 1, "batch_size")
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold {args.threshold}: a probability in [0, 1]")


def _plain(value):
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (list, tuple)) and all(_plain(v) for v in value))


def _model_flags_saved(command, args, model_args):
    # Checkpoints store args; keeping model flags there says how to rebuild the model. Main
    # flags of the same name (image_size) are what the model gets, as in BenCo's scripts.
    # A default that is no plain value (SparseViT's norm_layer, a functools.partial) is left
    # out: no command line can give it, and torch.load(weights_only=True) would refuse the file.
    args.model_args = {k: value for k, v in vars(model_args).items() if _plain(value := getattr(args, k, v))}


_MODEL = (_model_input, _output_dir)
CHECKS = {
    "train": (*_MODEL, _test_data, _train, _model_flags_saved),
    "test": (*_MODEL, _test_data, _gallery, _model_flags_saved),
    "test-robust": (*_MODEL, _test_data, _robust, _model_flags_saved),
    "predict": (*_MODEL, _predict, _model_flags_saved),
    "report": (_output_dir,),
    "sample": (),
    "export": (_output_required, _export_output, _source_dataset),
    "preview": (_preview, _output_required, _source_dataset),
}


def check(command, args, model_args):
    """Run ``command``'s checks on its parsed flags."""
    for run in CHECKS[command]:
        run(command, args, model_args)
