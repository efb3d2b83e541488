"""``benco-maskclip``: train, test and robustness sweeps on IMDL-BenCo, predictions, and dataset tools.

    benco-maskclip train       [--config FILE.yaml] [BenCo flags] [model flags]
    benco-maskclip test        --checkpoint_path CKPT [...]
    benco-maskclip test-robust --checkpoint_path CKPT [--blur_kernels ...] [--jpeg_qualities ...]
    benco-maskclip predict     --checkpoint_path CKPT IMAGE_OR_FOLDER [...]   (your own images)
    benco-maskclip sample | export | preview ...   (OpenSDID tools)

Each command's ``--help`` lists its flags (and those of ``--model``). Under torchrun use
``torchrun --nproc_per_node=N -m imdlbenco_maskclip <command> ...``.
"""
import sys
from importlib import import_module

import imdlbenco_maskclip  # noqa: F401  (registers MaskCLIP and OpenSDID in BenCo's registries)

from .errors import UserError

# Command -> (module, function called with the parsed flags).
COMMANDS = {
    "train": (".engine.training", "run"),
    "test": (".engine.evaluation", "run"),
    "test-robust": (".engine.robustness", "run"),
    "predict": (".engine.prediction", "run"),
    "sample": (".datasets.commands", "sample"),
    "export": (".datasets.commands", "export"),
    "preview": (".datasets.commands", "preview"),
}


def _message(exc):
    """A user error's text; one a DataLoader worker raised arrives as that worker's whole
    traceback, whose last line is the original message."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__.lstrip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.stderr.write(f"benco-maskclip: unknown command {command!r}; choose one of {list(COMMANDS)}\n")
        return 2
    from . import flags
    from .engine import runtime
    module, function = COMMANDS[command]
    try:
        args, model_args = flags.parse(command, rest)
        run = getattr(import_module(module, __package__), function)
        return run(args) if model_args is None else run(args, model_args)
    except UserError as exc:
        # stderr, not print: BenCo silences print on ranks other than 0.
        sys.stderr.write(f"benco-maskclip {command}: error: {_message(exc)}\n"
                         + (f"({exc.hint})\n" if exc.hint else ""))
        runtime.finish()
        return 2
