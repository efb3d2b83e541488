"""``benco-maskclip``: train, test and robustness sweeps on IMDL-BenCo, and dataset tools.

    benco-maskclip train       [--config FILE.yaml] [BenCo flags] [model flags]
    benco-maskclip test        --checkpoint_path CKPT [...]
    benco-maskclip test-robust --checkpoint_path CKPT [--blur_kernels ...] [--jpeg_qualities ...]
    benco-maskclip predict     --checkpoint_path CKPT IMAGE_OR_FOLDER [...]   (your own images)
    benco-maskclip sample | export | preview ...   (OpenSDID tools)

Each command's ``--help`` lists its flags and those of ``--model``. Under torchrun use
``torchrun --nproc_per_node=N -m imdlbenco_maskclip <command> ...``.
"""
import sys

import imdlbenco_maskclip  # noqa: F401  (registers MaskCLIP and OpenSDID in BenCo's registries)

ENGINE_COMMANDS = {"train": "training", "test": "evaluation", "test-robust": "robustness"}
DATASET_COMMANDS = {"sample": "main_sample", "export": "main_export", "preview": "main_preview"}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__.lstrip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in DATASET_COMMANDS:
        from .datasets import commands
        try:
            return getattr(commands, DATASET_COMMANDS[command])(rest)
        except (ValueError, OSError) as exc:  # a bad source, split or sample; a path that cannot be written
            sys.stderr.write(f"benco-maskclip {command}: error: {exc}\n")
            return 2
    if command not in ENGINE_COMMANDS and command != "predict":
        sys.stderr.write(f"benco-maskclip: unknown command {command!r}; choose one of "
                         f"{list(ENGINE_COMMANDS) + ['predict'] + list(DATASET_COMMANDS)}\n")
        return 2
    from importlib import import_module
    from .datasets.opensdid import BadSampleError
    from .engine.options import ConfigError, parse
    from .engine.runtime import finish
    try:
        if command == "predict":
            from .engine import prediction
            return prediction.run(rest)
        args, model_args = parse(command, rest)
        return import_module(f".engine.{ENGINE_COMMANDS[command]}", __package__).run(args, model_args)
    except ConfigError as exc:
        # stderr, not print: BenCo silences print on ranks other than 0.
        sys.stderr.write(f"benco-maskclip {command}: error: {exc}\n")
        finish()
        return 2
    except BadSampleError as exc:  # also from DataLoader workers, which re-raise it from its text
        sys.stderr.write(f"benco-maskclip {command}: error: {exc}\n(--on_bad_sample skip leaves such samples "
                         f"out, counted and listed)\n")
        finish()
        return 2
