"""Command-line flags of every ``benco-maskclip`` command, in one place.

Each command's parser is built from the flag groups it lists in ``COMMANDS``; every flag
is defined once, with BenCo's underscore spelling. Flag names and meanings follow BenCo's
``train.py`` / ``test.py`` / ``test_robust.py``. Model flags come from the model's
constructor through BenCo's ``misc.create_argparser`` and are parsed from what the main
parser leaves, as BenCo's scripts do. ``config`` reads ``--config``, ``engine.checkpoints``
the checkpoint's training flags, and ``checks.CHECKS`` checks each command's values.

Where values come from, the later winning: the command's defaults; for ``test`` and
``test-robust`` the flags the checkpoint was trained with; ``--config FILE.yaml`` (its keys
for other commands are skipped with a note); for ``predict`` the checkpoint's flags; the
command line.

Defaults that differ from BenCo's scripts, and why:

* ``--accum_iter 1`` (BenCo: 16): with fewer than 16 steps per epoch BenCo's 16 never
  steps the optimizer at all.
* ``--epochs 20`` (paper), ``--model MaskCLIP``, OpenSDID hub ids as data paths.
* ``--test_period N`` tests after every N-th epoch (epochs N-1, 2N-1, ...) and after the
  last; BenCo's ``epoch % N == 0`` also tests an untrained model at epoch 0.
* neither ``--if_resizing`` nor ``--if_padding`` given: resizing (the authors' setting)
  with a printed note; BenCo's datasets would raise.
* ``--device`` defaults to cuda when available, else cpu.
* DataLoader memory is pinned on CUDA unless ``--no_pin_mem``; BenCo's ``--pin_mem``
  (already the default there) is not a flag here.
* ``--world_size``, ``--local_rank`` and ``--dist_on_itp`` are accepted because BenCo's
  scripts pass them; torchrun's environment decides, and a value that differs from it is
  noted at start.
"""
import argparse
import os
import sys
import typing

import IMDLBenCo.training_scripts.utils.misc as misc

from .checks import check, follow_image_size, note
from .config import check_removed_flags, given_on_command_line, load_config
from .datasets.opensdid import OPENSDID_SPLITS
from .engine import checkpoints, models
from .engine.evaluators import IMAGE_SCORE_RULES, METRIC_KEYS
from .engine.precision import DTYPES
from .engine.models import model_class
from .errors import UserError

BEST_METRICS = tuple(f"avg_{key}" for key in METRIC_KEYS)
AUGMENTATIONS = ("paper", "authors", "benco", "none")

# ---------------------------------------------------------------------------- flag groups

def _config(add, command):
    add("-h", "--help", action="store_true", help="show this help (and the flags of --model)")
    add("--config", default=None, help="YAML file of flag values (model flags too); the command line wins")


def _model(add, command):
    add("--model", default="MaskCLIP", help="a name in IMDLBenCo.registry.MODELS (default MaskCLIP)")
    if command == "train":  # BenCo's trainer reads it; its tester does not
        add("--if_predict_label", action="store_true",
            help="BenCo: models that can take labels use them and their label loss")
    add("--image_size", default=512, type=int, help="images are resized or padded to this size")
    add("--if_padding", action="store_true", help="zero-pad every image to --image_size (BenCo)")
    add("--if_resizing", action="store_true", help="resize every image to --image_size (BenCo)")
    add("--edge_mask_width", default=None, type=int,
        help="width in pixels of the edge mask for edge losses (paper: 7)")


def _dataset(add, command):
    add("--dataset", default="OpenSDID",
        help="dataset class (a name in DATASETS) for data paths that are not BenCo JSON files: OpenSDID, "
             "BRGen (a BR-Gen folder of Tp/, Gt/ and Au/), or one of BenCo's")
    add("--balance", default=1, type=int, choices=(0, 1),
        help="BRGen: 1 (default, the authors' protocol) draws as many generated images as there are real "
             "ones, at random; 0 keeps every image")
    add("--balance_seed", default=0, type=int, help="BRGen: the seed of that draw (default 0)")


def _bad_samples(add, command):
    add("--on_bad_sample", default="error", choices=("error", "skip"),
        help="a sample that does not decode or whose mask does not fit (OpenSDID): error (default) "
             "stops with its key and the fix; skip leaves it out, counted and listed. Test sets are "
             "checked whole first, so their metrics cover exactly the other samples; in training a bad "
             "sample found while reading is replaced by the next one")


def _test_data(add, command):
    add("--test_data_path", "--test_data_json", dest="test_data_path", default="nebula/OpenSDI_test",
        help="test source: an OpenSDID source (hub id, local folder, sample:test) read once per "
             "--test_splits entry, or a BenCo test JSON {name: path}")
    add("--test_splits", default=None,
        help="comma list of test splits of --test_data_path, each tested as its own set (default: the "
             "five OpenSDID splits; with --dataset BRGen the whole folder, 'all'; BRGen subsets: a method "
             "lama, mat, sdxl, brushnet, powerpaint, a mask type stuff, background, a family gan, diffusion)")
    add("--test_batch_size", default=2, type=int, help="batch size per process for testing")
    add("--no_model_eval", action="store_true", help="do not call model.eval() for testing")
    add("--print_freq", default=20, type=int, help="print progress every N test batches")


def _output_dir(add, command):
    default = {"train": "./output_dir"}.get(command, f"./{command.replace('-', '_')}_dir")
    add("--output_dir", default=default, help="the folder everything is written to (created if missing)")


def _log_dir(add, command):
    add("--log_dir", default=None, help="TensorBoard logs (default: --output_dir)")


def _device(add, command):
    add("--device", default=None,
        help="cuda, cuda:N (one process; under torchrun each process uses GPU LOCAL_RANK) or cpu "
             "(default: cuda when available)")
    add("--num_workers", default=2 if command == "predict" else 1, type=int, help="DataLoader worker processes")
    add("--no_pin_mem", action="store_false", dest="pin_mem", help="do not pin DataLoader memory (CUDA)")
    if command != "train":  # train: BenCo's AMP switch (--if_not_amp)
        add("--dtype", default="fp32", choices=list(DTYPES),
            help="precision of the model's forward (autocast); metrics and thresholds stay fp32. "
                 "bf16/fp16 for speed on GPUs and CPUs with bf16 matrix units; fp32 reproduces earlier runs")


def _processes(add, command):
    add("--seed", default=42, type=int)
    add("--dist_url", default="env://", help="url used to set up distributed training")
    add("--world_size", default=None, type=int,
        help="BenCo's scripts pass it; torchrun's WORLD_SIZE decides (a differing value is noted)")
    add("--local_rank", default=None, type=int,
        help="BenCo's scripts pass it; torchrun's LOCAL_RANK decides (a differing value is noted)")
    add("--dist_on_itp", action="store_true",
        help="BenCo's scripts pass it; processes are always set up from torchrun's variables (noted)")


def _batch(add, command):
    add("--batch_size", default=4 if command == "predict" else 1, type=int,
        help="images per batch" + (" per process (effective: batch_size * accum_iter * processes)"
                                   if command == "train" else ""))


def _train(add, command):
    add("--data_path", default="nebula/OpenSDI_train",
        help="training source: an OpenSDID source (split from --train_split or '<source>#<split>'), "
             "or a BenCo JSON (JsonDataset list, or BalancedDataset [[name, path], ...])")
    add("--train_split", default=None,
        help="split of --data_path to train on (default sd15; with --dataset BRGen the whole folder, or a subset)")
    add("--augment", default="paper", choices=AUGMENTATIONS,
        help="training augmentations: paper (blur, JPEG, scale, flips; random crop when padding), "
             "authors (their train.py: also brightness/contrast and rotate-90), benco (BenCo's list, "
             "with its copy-move and inpainting), none")
    add("--shuffle_window", default=4, type=int,
        help="parquet sources (OpenSDID): each epoch takes the row groups in a random order and shuffles "
             "the samples within windows of this many row groups, so that each DataLoader worker reads "
             "each row group once and caches one window (about 30 MB per row group of 512 px PNGs); "
             "0: a fully random order, which reads about one row group per sample")
    add("--epochs", default=20, type=int)
    add("--start_epoch", default=0, type=int, help="set from the checkpoint by --resume")
    add("--test_period", default=4, type=int, help="test after every N-th epoch and after the last one")
    add("--log_per_epoch_count", default=20, type=int, help="loss points per epoch in TensorBoard")
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


def _image_scores(add, command):
    add("--image_score_from_mask", default="none", choices=tuple(IMAGE_SCORE_RULES),
        help="image scores of a model with no image-level output (CAT-Net, IML-ViT): none (default; its "
             "image metrics are n/a) or max (the largest P(manipulated) of its predicted mask); models "
             "with pred_label keep theirs")


def _checkpoint(add, command):
    add("--checkpoint_path", default=None,
        help="a .pth file, or a training --output_dir (its checkpoint-best.pth, else its latest "
             "checkpoint-<epoch>.pth)")


def _gallery(add, command):
    add("--gallery_size", default=6, type=int,
        help="partial fakes per test set drawn with their true and predicted masks in "
             "<output_dir>/masks/<set>.png (0: none)")


def _robust(add, command):
    add("--blur_kernels", default="3,5,7,9,11,13,15,17,19,21,23",
        help="Gaussian blur kernel sizes (odd, >= 3); empty to skip")
    add("--jpeg_qualities", default="60,70,80,90,100", help="JPEG qualities (1-100), e.g. 60,80; empty to skip")
    add("--noise_vars", default="", help="Gaussian noise variances (> 0); empty (default) to skip")


def _predict(add, command):
    add("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    add("--threshold", default=0.5, type=float, help="P(manipulated) above which a pixel is marked")


def _source(add, command):
    add("source", help="hub id, local folder, sample:train or sample:test (OpenSDID), a BR-Gen folder or "
                       "sample:brgen (--dataset BRGen); '#<split>' allowed")
    add("--split", help=f"{', '.join(OPENSDID_SPLITS)} (or a custom source's own; BRGen: a subset)")
    add("--subset", choices=("all", "pixel"), default="all", help="pixel: only locally edited fakes")


def _output(add, command):
    add("--output", help={
        "sample": "build into this folder instead of the cache ($IMDLBENCO_MASKCLIP_CACHE or "
                  "~/.cache/imdlbenco_maskclip)",
        "export": "folder to write Tp/, Gt/ and <split>.json into",
        "preview": "PNG file to write"}[command])


def _preview(add, command):
    add("-n", "--num", type=int, default=12, help="how many samples (default 12)")
    add("--cols", type=int, default=4)
    add("--seed", type=int, default=0, help="which samples: a seeded random choice")


def _report(add, command):
    add("runs", nargs="+", help="--output_dir folders of `test` / `test-robust` runs (their metrics.json, "
                                "robustness.json), or those files")
    add("--published", action="store_true",
        help="add the published numbers as rows labelled (published), not ranked: the OpenSDI paper's Tables 3 "
             "and 4, and beside the BR-Gen protocol's tables the BR-Gen paper's Tables 2, 3, 4 and 7")


_TESTING = (_model, _dataset, _bad_samples, _test_data, _output_dir, _log_dir, _device, _processes, _checkpoint,
            _image_scores)
# Per command: its flag groups, whether it builds a model (so takes --model's flags), and
# the line --help starts with.
COMMANDS = {
    "train": ((_config, _model, _dataset, _bad_samples, _test_data, _output_dir, _log_dir, _device,
               _processes, _batch, _train), True, "train a model with BenCo's trainer"),
    "test": ((_config, *_TESTING, _gallery), True, "test a checkpoint on every test set"),
    "test-robust": ((_config, *_TESTING, _robust), True, "test a checkpoint under blur, JPEG and noise"),
    "predict": ((_config, _model, _checkpoint, _output_dir, _device, _batch, _predict), True,
                "a checkpoint on your own images: masks, overlays, P(fake)"),
    "report": ((_config, _report, _output_dir), False,
               "the results of several test / test-robust runs side by side: paper Tables 3 and 4, Figure 5"),
    "sample": ((_config, _output), False, "build the embedded OpenSDID sample and print its folder"),
    "export": ((_config, _source, _dataset, _bad_samples, _output), False,
               "write an OpenSDID split or a BR-Gen set as a BenCo JSON dataset (Tp/, Gt/, <split>.json)"),
    "preview": ((_config, _source, _dataset, _bad_samples, _output, _preview), False,
                "draw a grid of samples with their masks"),
}


def build_parser(command):
    groups, _, description = COMMANDS[command]
    parser = argparse.ArgumentParser(prog=f"benco-maskclip {command}", description=description, add_help=False,
                                     allow_abbrev=False)
    for group in groups:
        group(parser.add_argument, command)
    return parser


def _dests(parser):
    return {a.dest: a for a in parser._actions if a.dest != "help"}


# ---------------------------------------------------------------------------- values

def _as_default(action, value, where):
    """A YAML value as an argparse default, converted by the flag's own type at parse time."""
    if action.type is None and action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise UserError(f"{where}: {action.dest} is a switch; give true or false, not {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        if typing.get_origin(action.type) is not None:
            # A List[...] constructor flag (IML-ViT's fpn_scale_factors) cannot parse text;
            # argparse keeps a default that is no string as it is.
            return list(value)
        return ",".join(str(v) for v in value)
    return None if value is None else str(value)


def _apply(parser, values, where):
    actions = _dests(parser)
    parser.set_defaults(**{k: _as_default(actions[k], v, where) for k, v in values.items()})


def _switch(text):
    """``true``/``false`` (or 1/0, yes/no) as a bool; BenCo's parser would take ``False`` as text, which is true."""
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(str(text).lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def _typed_like(default):
    """The argparse type for an unannotated constructor argument, from its default: bool, int
    and float as such, a list of numbers as a comma list (SparseViT's ``--s_blocks3 16,16,16,16``);
    None (text) for anything else."""
    if isinstance(default, (list, tuple)) and default and all(type(v) in (int, float) for v in default):
        element = float if float in map(type, default) else int

        def comma_list(text):
            return [element(v) for v in text.split(",") if v.strip()]

        return comma_list
    return {bool: _switch, int: int, float: float}.get(type(default))


def model_parser_for(model_cls, command):
    """BenCo's parser of the constructor's arguments, with the weight-file flags that are no
    constructor arguments (CAT-Net's), each weight flag's file and source in its help, and
    BenCo's packaged config files as defaults where BenCo's default (None) fails. Arguments
    without an annotation, which BenCo parses as text, take the type of their default."""
    name = model_cls.__name__
    parser = misc.create_argparser(model_cls)
    parser.prog = f"benco-maskclip {command} --model {name}"
    for action in parser._actions:
        if action.type is str and _typed_like(action.default) is not None:
            action.type = _typed_like(action.default)
    for flag in models.EXTRA_FLAGS.get(name, ()):
        parser.add_argument(f"--{flag}", default=None)
    for action in parser._actions:
        if action.dest in models.FLAG_DEFAULTS.get(name, {}):
            packaged = os.path.basename(models.FLAG_DEFAULTS[name][action.dest])
            action.help = f"config file (default: BenCo's packaged {packaged})"
        if action.dest in models.WEIGHT_FILES.get(name, {}):
            action.help = models.WEIGHT_FILES[name][action.dest][0] + (
                "" if name in models.NO_RANDOM_START else f"; {models.RANDOM}: random weights")
    parser.set_defaults(**models.FLAG_DEFAULTS.get(name, {}))
    return parser


def _checkpoint_values(command, argv, config):
    """Commands that read a checkpoint: the checkpoint and the flags it was trained with as
    (``checkpoints.Checkpoint`` or None, main flags, model flags). The model (``--model``, its own flags) and its
    input (``--image_size``, resize or pad, edge mask) must match the training run. Resize or
    pad comes from the checkpoint only when neither switch is given (a switch cannot be unset).
    """
    if _checkpoint not in COMMANDS[command][0] or {"-h", "--help"} & set(argv):
        return None, {}, {}  # help works whatever the checkpoint
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--checkpoint_path")
    path = pre.parse_known_args(argv)[0].checkpoint_path or config.get("checkpoint_path")
    if not path:
        raise UserError(f"--checkpoint_path is required for `{command}`",
                        hint="give a .pth file or a training --output_dir")
    checkpoint = checkpoints.open_checkpoint(path)  # the model is built from this same read
    if command == "predict" and not checkpoint.describes_its_model():
        raise UserError(f"--checkpoint_path {checkpoint.path}: it holds no training flags of `benco-maskclip train`, "
                        f"so the model to build is unknown",
                        hint="predict with a checkpoint that command wrote, or one of the authors' MaskCLIP or NFA-ViT train.py")
    main, model = checkpoint.training_flags()
    switches = ("if_padding", "if_resizing")
    switched_on = {k for k in switches if config.get(k) is True and command != "predict"}
    if set(switches) & (switched_on | given_on_command_line(argv)):
        main = {k: v for k, v in main.items() if k not in switches}
    return checkpoint, main, model


def _other_commands_keys(command, config):
    keys = set().union(*(_dests(build_parser(c)) for c in COMMANDS if c != command))
    model = config.get("model", "MaskCLIP")
    try:
        keys |= set(_dests(model_parser_for(model_class(model), command)))
    except UserError:
        pass  # a --model key naming no model is reported by the commands that build one
    return keys


def parse(command, argv):
    """-> (args, model_args) for ``command`` from ``argv`` (the flags after the command name);
    model_args is None for commands without a model."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    config_path = pre.parse_known_args(argv)[0].config
    config = load_config(config_path) if config_path else {}
    where = f"--config {config_path}"
    check_removed_flags(argv, config, where)

    parser = build_parser(command)
    own = _dests(parser)
    builds_model = COMMANDS[command][1]
    opened, saved_main, saved_model = _checkpoint_values(command, argv, config)
    checkpoint = opened.path if opened is not None else None
    from_config = {k: v for k, v in config.items() if k in own and k != "config"}
    if command == "predict":  # the checkpoint says what model it holds; the YAML cannot change that
        from_config = {k: v for k, v in from_config.items() if k not in saved_main}
        _apply(parser, from_config, where)
        _apply(parser, saved_main, f"--checkpoint_path {checkpoint}")
    else:
        _apply(parser, saved_main, f"--checkpoint_path {checkpoint}")
        _apply(parser, from_config, where)
    if {"-h", "--help"} & set(argv):  # whatever the other flags say
        _print_help(parser, command, argv, config)
    model = parser.parse_known_args(argv)[0].model if builds_model else None
    model_parser = model_parser_for(model_class(model), command) if builds_model else None
    main_argv, model_argv = _split_model_flags(argv, parser, model_parser)
    args = parser.parse_args(main_argv)
    model_dests = _dests(model_parser) if model_parser else {}
    others = _other_commands_keys(command, config)
    unknown = sorted(k for k in config if k not in own and k not in model_dests and k not in others)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}: neither flags of `{command}` nor constructor "
                        f"arguments of its model",
                        hint=f"fix the spelling or remove them; valid keys: "
                             f"{sorted(set(own) | set(model_dests) - {'config'})}")
    skipped = sorted(k for k in config if k not in own and k not in model_dests)
    if skipped:
        note(f"[{command}] {where}: keys for other commands skipped here: {skipped}")
    if not builds_model:
        check(command, args, None)
        return args, None

    if args.model != saved_main.get("model"):
        saved_model = {}  # another model's flags
    saved_model = {k: v for k, v in saved_model.items() if k in model_dests and k not in own}
    model_config = {k: v for k, v in config.items() if k in model_dests and k not in own}
    # The note shows the main flags that are set, and the model flags that differ from the
    # model's own defaults, unless --config or the command line replaced them.
    shown = {**{k: v for k, v in saved_main.items() if v is not None and v is not False},
             **{k: v for k, v in saved_model.items() if str(v) != str(model_parser.get_default(k))}}
    if command == "predict":
        _apply(model_parser, {k: v for k, v in model_config.items() if k not in saved_model}, where)
        _apply(model_parser, saved_model, f"--checkpoint_path {checkpoint}")
        overridden = given_on_command_line(argv)
    else:
        _apply(model_parser, saved_model, f"--checkpoint_path {checkpoint}")
        _apply(model_parser, model_config, where)
        overridden = set(config) | given_on_command_line(argv)
    taken = {k: v for k, v in shown.items() if k not in overridden}
    if taken:
        note(f"[{command}] from the checkpoint's training flags: "
             + " ".join(f"--{k}" if v is True else f"--{k} {v}" for k, v in taken.items()))
    model_args = model_parser.parse_args(model_argv)
    if opened is not None:
        args.checkpoint_path = checkpoint  # resolved once, here
        args.trained_on = opened.training_data()  # recorded in the results beside the checkpoint
    follow_image_size(args, model_args, from_user=overridden, from_checkpoint=set(saved_model))
    check(command, args, model_args)
    return args, model_args


def _print_help(parser, command, argv, config):
    parser.print_help()
    if COMMANDS[command][1]:
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        pre.add_argument("--model", default=config.get("model", "MaskCLIP"))
        print()
        model_parser_for(model_class(pre.parse_known_args(argv)[0].model), command).print_help()
    sys.exit(0)


def _split_model_flags(argv, parser, model_parser):
    """``argv`` -> (the main parser's part, the model flags with their values). Split before
    parsing, so that a model flag's value is never taken for a positional argument."""
    if model_parser is None:
        return argv, []
    main_options = parser._option_string_actions
    model_options = {k: a for k, a in model_parser._option_string_actions.items()
                     if k not in main_options and a.dest != "help"}
    main_argv, model_argv, i = [], [], 0
    while i < len(argv):
        action = model_options.get(argv[i].split("=", 1)[0])
        if action is None:
            main_argv.append(argv[i])
            i += 1
            continue
        end = i + 1
        if "=" not in argv[i] and action.nargs != 0:
            if action.nargs in ("+", "*"):
                while end < len(argv) and not argv[end].startswith("--"):
                    end += 1
            else:
                end += 1 if action.nargs is None else int(action.nargs)
        model_argv += argv[i:end]
        i = end
    return main_argv, model_argv
