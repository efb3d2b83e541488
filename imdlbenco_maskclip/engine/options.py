"""Command-line flags of ``train``, ``test`` and ``test-robust``.

Flag names and meanings follow BenCo's ``train.py`` / ``test.py`` / ``test_robust.py``;
model flags are built from the model's constructor by BenCo's ``misc.create_argparser``
and parsed from what the main parser leaves (``parse_known_args``), exactly as BenCo's
scripts do. ``--config FILE.yaml`` gives flag values (model flags too); the command line
wins because YAML values become parser defaults.

Defaults that differ from BenCo's scripts, and why:

* ``--accum_iter 1`` (BenCo: 16): with fewer than 16 steps per epoch BenCo's 16 never
  steps the optimizer at all.
* ``--epochs 20`` (paper), ``--model MaskCLIP``, OpenSDID hub ids as data paths.
* ``--test_period N`` tests after every N-th epoch (epochs N-1, 2N-1, ...) and after the
  last; BenCo's ``epoch % N == 0`` also tests an untrained model at epoch 0.
* neither ``--if_resizing`` nor ``--if_padding`` given: resizing (the authors' setting)
  with a printed note; BenCo's datasets would raise.
* ``--device`` defaults to cuda when available, else cpu.
"""
import argparse
import inspect
import os
import sys

import yaml

import IMDLBenCo.training_scripts.utils.misc as misc
from IMDLBenCo.registry import DATASETS, MODELS

COMMANDS = ("train", "test", "test-robust")
METRIC_KEYS = ("pixel_f1", "pixel_iou", "image_f1", "image_acc", "image_auc")
BEST_METRICS = tuple(f"avg_{key}" for key in METRIC_KEYS)
AUGMENTATIONS = ("paper", "authors", "benco", "none")
DEFAULT_TEST_SPLITS = "sd15,sd2,sdxl,sd3,flux"


class ConfigError(ValueError):
    """A bad flag or config value; the message names the flag and the fix."""


def _common(parser, command):
    add = parser.add_argument
    add("-h", "--help", action="store_true", help="show this help and the flags of --model")
    add("--config", default=None, help="YAML file of flag values (model flags too); the command line wins")
    add("--model", default="MaskCLIP", help="a name in IMDLBenCo.registry.MODELS (default MaskCLIP)")
    add("--if_predict_label", action="store_true",
        help="BenCo: models that can take labels use them and their label loss")
    add("--image_size", default=512, type=int, help="images are resized or padded to this size")
    add("--if_padding", action="store_true", help="zero-pad every image to --image_size (BenCo)")
    add("--if_resizing", action="store_true", help="resize every image to --image_size (BenCo)")
    add("--edge_mask_width", default=None, type=int,
        help="width in pixels of the edge mask for edge losses (paper: 7)")
    add("--dataset", default="OpenSDID",
        help="dataset class (a name in DATASETS) for data paths that are not BenCo JSON files")
    add("--on_bad_sample", default="error", choices=("error", "skip"),
        help="a sample that does not decode or whose mask does not fit (OpenSDID): error (default) "
             "stops with its key and the fix; skip leaves it out, counted and listed. Test sets are "
             "checked whole first, so their metrics cover exactly the other samples; in training a bad "
             "sample found while reading is replaced by the next one")
    add("--test_data_path", "--test_data_json", dest="test_data_path", default="nebula/OpenSDI_test",
        help="test source: an OpenSDID source (hub id, local folder, sample:test) read once per "
             "--test_splits entry, or a BenCo test JSON {name: path}")
    add("--test_splits", default=DEFAULT_TEST_SPLITS,
        help="comma list of test splits of --test_data_path (default: all five OpenSDID splits)")
    add("--test_batch_size", default=2, type=int, help="batch size per process for testing")
    add("--no_model_eval", action="store_true", help="do not call model.eval() for testing")
    add("--print_freq", default=20, type=int, help="print progress every N test batches")
    add("--output_dir", default="./output_dir" if command == "train" else f"./{command.replace('-', '_')}_dir",
        help="where checkpoints, metrics and logs go")
    add("--log_dir", default=None, help="TensorBoard logs (default: --output_dir)")
    add("--device", default=None,
        help="cuda, cuda:N (one process; under torchrun each process uses GPU LOCAL_RANK) or cpu "
             "(default: cuda when available)")
    add("--seed", default=42, type=int)
    add("--num_workers", default=1, type=int)
    add("--pin_mem", action="store_true", help="pin DataLoader memory (CUDA only)")
    add("--no_pin_mem", action="store_false", dest="pin_mem")
    parser.set_defaults(pin_mem=True)
    add("--world_size", default=1, type=int, help="BenCo compatibility; torchrun sets the real one")
    add("--local_rank", default=-1, type=int)
    add("--dist_on_itp", action="store_true")
    add("--dist_url", default="env://", help="url used to set up distributed training")


def _train(parser):
    add = parser.add_argument
    add("--data_path", default="nebula/OpenSDI_train",
        help="training source: an OpenSDID source (split from --train_split or '<source>#<split>'), "
             "or a BenCo JSON (JsonDataset list, or BalancedDataset [[name, path], ...])")
    add("--train_split", default="sd15", help="split of --data_path to train on (default sd15)")
    add("--augment", default="paper", choices=AUGMENTATIONS,
        help="training augmentations: paper (blur, JPEG, scale, flips; random crop when padding), "
             "authors (their train.py: also brightness/contrast and rotate-90), benco (BenCo's list, "
             "with its copy-move and inpainting), none")
    add("--batch_size", default=1, type=int,
        help="batch size per process (effective: batch_size * accum_iter * processes)")
    add("--epochs", default=20, type=int)
    add("--start_epoch", default=0, type=int, help="set from the checkpoint by --resume")
    add("--test_period", default=4, type=int,
        help="test after every N-th epoch and after the last one")
    add("--log_per_epoch_count", default=20, type=int,
        help="loss points per epoch in TensorBoard")
    add("--find_unused_parameters", action="store_true", help="DDP find_unused_parameters")
    add("--if_not_amp", action="store_true", help="no fp16 autocast (always off on CPU)")
    add("--accum_iter", default=1, type=int, help="gradient accumulation steps")
    add("--optimizer", default="adamw", choices=("adam", "adamw"),
        help="adamw (BenCo) or adam (paper); no weight decay on biases and 1-D parameters")
    add("--weight_decay", default=0.05, type=float)
    add("--lr", default=None, type=float, help="absolute learning rate (paper: 1e-4)")
    add("--blr", default=1e-3, type=float,
        help="base learning rate when --lr is not given: lr = blr * effective batch / 256")
    add("--min_lr", default=0.0, type=float, help="floor of BenCo's cosine schedule")
    add("--warmup_epochs", default=4, type=int, help="linear warm-up epochs of BenCo's schedule")
    add("--best_metric", default="avg_pixel_f1", choices=BEST_METRICS,
        help="metric (average over test splits) that selects checkpoint-best.pth")
    add("--resume", default="",
        help="checkpoint to continue from, or 'auto' for the latest checkpoint-<epoch>.pth in --output_dir")


def _evaluate(parser):
    parser.add_argument("--checkpoint_path", default=None,
                        help="a .pth file, or a training --output_dir (its checkpoint-best.pth, "
                             "else its latest checkpoint-<epoch>.pth)")


def _test(parser):
    parser.add_argument("--gallery_size", default=6, type=int,
                        help="partial fakes per test set drawn with their true and predicted masks in "
                             "<output_dir>/masks/<set>.png (0: none)")


def _robust(parser):
    add = parser.add_argument
    add("--blur_kernels", default="3,5,7,9,11,13,15,17,19,21,23",
        help="Gaussian blur kernel sizes (odd, >= 3); empty to skip")
    add("--jpeg_qualities", default="60,70,80,90,100", help="JPEG qualities (1-100); empty to skip")
    add("--noise_vars", default="", help="Gaussian noise variances (> 0); empty (default) to skip")


def _note(text):
    # Parsing runs before the process group (and BenCo's rank-0-only print) exists.
    if os.environ.get("RANK", "0") == "0":
        print(text)


def build_parser(command):
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    parser = argparse.ArgumentParser(prog=f"benco-maskclip {command}", add_help=False, allow_abbrev=False)
    _common(parser, command)
    if command == "train":
        _train(parser)
    else:
        _evaluate(parser)
    if command == "test":
        _test(parser)
    if command == "test-robust":
        _robust(parser)
    return parser


def _dests(parser):
    return {a.dest: a for a in parser._actions if a.dest != "help"}


def load_config(path):
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag names to values, got "
                          f"{type(config).__name__}")
    return {str(k).lstrip("-").replace("-", "_"): v for k, v in config.items()}


def _as_default(action, value, where):
    """A YAML value as an argparse default, converted by the flag's own type at parse time."""
    if action.type is None and action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {action.dest} is a switch; give true or false, not {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return None if value is None else str(value)


def _apply(parser, values, where):
    actions = _dests(parser)
    parser.set_defaults(**{k: _as_default(actions[k], v, where) for k, v in values.items()})


def model_class_of(name):
    if not MODELS.has(name):
        raise ConfigError(f"--model {name!r} is not registered in IMDLBenCo MODELS; choose one of "
                          f"{sorted(MODELS.module_dict)}")
    return MODELS.get(name)


def model_parser_for(model_class, command):
    parser = misc.create_argparser(model_class)
    parser.prog = f"benco-maskclip {command} --model {model_class.__name__}"
    return parser


def _given_on_command_line(argv):
    return {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}


def checkpoint_defaults(command, argv, config):
    """``test`` / ``test-robust``: the flags the checkpoint was trained with, as defaults ->
    (main flags, model flags, checkpoint file); empty for ``train`` or a checkpoint without them.

    The model (``--model``, its own flags) and its input (``--image_size``, resize or pad)
    must match the training run; ``--config`` and the command line still win. Resize or pad
    comes from the checkpoint only when neither switch is given (a switch cannot be unset).
    A path that does not exist gives no defaults: the command names it after checking flags.
    """
    if command == "train" or {"-h", "--help"} & set(argv):  # help works whatever the checkpoint
        return {}, {}, None
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--checkpoint_path")
    path = pre.parse_known_args(argv)[0].checkpoint_path or config.get("checkpoint_path")
    if not path or not os.path.exists(str(path)):
        return {}, {}, None
    from . import runtime  # runtime imports this module
    path = runtime.resolve_checkpoint(str(path))
    saved = runtime.saved_training_args(runtime.read_checkpoint(path, tensors=False))
    if saved is None:
        return {}, {}, path
    main = {k: getattr(saved, k) for k in ("model", "image_size", "edge_mask_width") if hasattr(saved, k)}
    switches = ("if_padding", "if_resizing")
    switched_on = {k for k in switches if config.get(k) is True} | _given_on_command_line(argv)
    if not set(switches) & switched_on:
        main.update({k: bool(getattr(saved, k, False)) for k in switches})
    return main, dict(getattr(saved, "model_args", None) or {}), path


def parse(command, argv):
    """-> (args, model_args) for ``command`` from ``argv`` (the flags after the command name)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    config_path = pre.parse_known_args(argv)[0].config
    config = load_config(config_path) if config_path else {}
    where = f"--config {config_path}"

    parser = build_parser(command)
    own = _dests(parser)
    other_commands = set().union(*(_dests(build_parser(c)) for c in COMMANDS if c != command))
    saved_main, saved_model, checkpoint = checkpoint_defaults(command, argv, config)
    _apply(parser, saved_main, f"--checkpoint_path {checkpoint}")
    _apply(parser, {k: v for k, v in config.items() if k in own and k != "config"}, where)
    args, remaining = parser.parse_known_args(argv)

    model_parser = model_parser_for(model_class_of(args.model), command)
    model_dests = _dests(model_parser)
    unknown = sorted(k for k in config if k not in own and k not in model_dests and k not in other_commands)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}: neither flags of `{command}` nor constructor "
            f"arguments of --model {args.model}. Fix the spelling or remove them; valid keys: "
            f"{sorted(set(own) | set(model_dests) - {'config'})}")
    ignored = sorted(k for k in config if k not in own and k not in model_dests)
    if ignored:
        _note(f"[{command}] {where}: keys for other commands ignored here: {ignored}")
    if args.model != saved_main.get("model"):
        saved_model = {}  # another model's flags
    saved_model = {k: v for k, v in saved_model.items() if k in model_dests and k not in own}
    # The note below shows the main flags that are set, and the model flags that differ from
    # the model's own defaults, unless --config or the command line replaced them.
    shown = {**{k: v for k, v in saved_main.items() if v is not None and v is not False},
             **{k: v for k, v in saved_model.items() if str(v) != str(model_parser.get_default(k))}}
    _apply(model_parser, saved_model, f"--checkpoint_path {checkpoint}")
    _apply(model_parser, {k: v for k, v in config.items() if k in model_dests and k not in own}, where)
    overridden = set(config) | _given_on_command_line(argv)
    taken = {k: v for k, v in shown.items() if k not in overridden}
    if taken and not args.help:
        _note(f"[{command}] from the checkpoint's training flags (--config and the command line win): "
              + " ".join(f"--{k}" if v is True else f"--{k} {v}" for k, v in taken.items()))

    if args.help:
        parser.print_help()
        print()
        model_parser.print_help()
        sys.exit(0)
    model_args = model_parser.parse_args(remaining)
    _follow_image_size(args, model_args, from_user=overridden, from_checkpoint=set(saved_model))
    _check(command, args, model_args)
    return args, model_args


# Models' own names for their input size (IML_ViT, ObjectFormer, PSCC_Net; SparseViT).
INPUT_SIZE_FLAGS = ("input_size", "img_size")


def _follow_image_size(args, model_args, from_user, from_checkpoint):
    """A model's input-size flag follows --image_size unless given (by the user or the
    checkpoint's training flags); given, it must match: the datasets yield --image_size
    images, and a model built for another size fails deep inside (IML_ViT: 'Target size ...
    must be the same as input size')."""
    for flag in INPUT_SIZE_FLAGS:
        if not hasattr(model_args, flag):
            continue
        value = getattr(model_args, flag)
        try:
            matches = int(value) == args.image_size  # untyped constructor arguments parse as str
        except (TypeError, ValueError):
            matches = False
        if matches or (flag not in from_user and flag not in from_checkpoint):
            setattr(model_args, flag, args.image_size)
        elif flag in from_user:
            raise ConfigError(f"--{flag} {value} differs from --image_size {args.image_size}: the datasets give "
                              f"--model {args.model} images of --image_size; give one value (--{flag} follows "
                              f"--image_size when left out)")
        else:
            raise ConfigError(f"--image_size {args.image_size} differs from the --{flag} {value} the checkpoint was "
                              f"trained with, and --model {args.model} is built for that size; leave "
                              f"--image_size out to test at it")


def check_folder_flag(flag, path):
    """A folder flag (created if missing) that names an existing file is an error."""
    if path and os.path.isfile(path):
        raise ConfigError(f"--{flag} {path} is a file; give a folder (it is created if missing)")


def comma_list(text, flag, convert, expected):
    """``"3, 5,7"`` -> ``[convert("3"), ...]``; a bad entry names ``flag`` and what is ``expected``."""
    try:
        return [convert(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected a comma list of {expected}") from None


def _check(command, args, model_args):
    if args.if_padding and args.if_resizing:
        raise ConfigError("--if_padding and --if_resizing exclude each other; give one")
    if not (args.if_padding or args.if_resizing):
        _note(f"[{command}] neither --if_resizing nor --if_padding given: resizing to "
              f"{args.image_size} (the authors' setting)")
        args.if_resizing = True
    if not DATASETS.has(args.dataset):
        raise ConfigError(f"--dataset {args.dataset!r} is not registered in IMDLBenCo DATASETS; choose "
                          f"one of {sorted(DATASETS.module_dict)}")
    args.test_splits = [s.strip() for s in str(args.test_splits).split(",") if s.strip()]
    if not args.test_splits:
        raise ConfigError("--test_splits is empty; give a comma list such as sd15,sd2,sdxl,sd3,flux")
    for flag in ("image_size", "test_batch_size", "print_freq") + (
            ("batch_size", "epochs", "test_period", "accum_iter") if command == "train" else ()):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if command == "train":
        for flag in ("lr", "blr", "min_lr", "weight_decay"):
            value = getattr(args, flag)
            if value is not None and (value < 0 or (flag in ("lr", "blr") and value == 0)):
                raise ConfigError(f"--{flag} {value}: must be {'above' if flag in ('lr', 'blr') else 'at least'} 0")
    for flag in ("output_dir", "log_dir"):
        check_folder_flag(flag, getattr(args, flag))
    if command == "test" and args.gallery_size < 0:
        raise ConfigError(f"--gallery_size must be 0 (no pictures) or more, got {args.gallery_size}")
    width = args.edge_mask_width
    if width is not None and (width < 1 or width % 2 == 0 or width >= args.image_size):
        raise ConfigError(f"--edge_mask_width {width}: BenCo's edge mask needs an odd width of at least 1 "
                          f"and below --image_size (paper: 7); leave the flag out for no edge mask")
    if command == "train" and width is None and getattr(model_args, "edge_weight", 0) > 0:
        _note(f"[train] no --edge_mask_width: the edge loss (--edge_weight {model_args.edge_weight}) is off; "
              f"the paper's recipe uses --edge_mask_width 7")
    forward = inspect.signature(model_class_of(args.model).forward).parameters
    edge = forward.get("edge_mask")
    if edge is not None and edge.default is inspect.Parameter.empty and args.edge_mask_width is None:
        raise ConfigError(f"--model {args.model} needs BenCo's edge mask; pass --edge_mask_width "
                          f"(e.g. 7)")
    if args.log_dir is None:
        args.log_dir = args.output_dir
    if command != "train" and not args.checkpoint_path:
        raise ConfigError(f"--checkpoint_path is required for `{command}`: a .pth file or a "
                          f"training --output_dir")
    if command == "test-robust":
        args.blur_kernels = comma_list(args.blur_kernels, "--blur_kernels", int, "integers, e.g. 3,5,7")
        args.jpeg_qualities = comma_list(args.jpeg_qualities, "--jpeg_qualities", int, "integers, e.g. 3,5,7")
        args.noise_vars = comma_list(args.noise_vars, "--noise_vars", float, "numbers, e.g. 10,20")
        if any(k < 3 or k % 2 == 0 for k in args.blur_kernels):
            raise ConfigError(f"--blur_kernels {args.blur_kernels}: kernel sizes must be odd and >= 3")
        if any(not 1 <= q <= 100 for q in args.jpeg_qualities):
            raise ConfigError(f"--jpeg_qualities {args.jpeg_qualities}: qualities lie in 1..100")
        if any(v <= 0 for v in args.noise_vars):
            raise ConfigError(f"--noise_vars {args.noise_vars}: variances must be > 0")
    # Checkpoints store args; keeping model flags there says how to rebuild the model. Main
    # flags of the same name (image_size) are what the model gets, as in BenCo's scripts.
    args.model_args = {k: getattr(args, k, v) for k, v in vars(model_args).items()}
