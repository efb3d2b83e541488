"""Process set-up shared by the commands: process group, seeds, model, checkpoints."""
import inspect
import os
import pickle
import random
import re
import types
import zipfile

import numpy as np
import torch
import torch.distributed as dist

import IMDLBenCo.training_scripts.utils.misc as misc
from IMDLBenCo.registry import MODELS

from .. import compat
from .options import ConfigError

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)\.pth$")


def _check_device_flag(args):
    """Default --device (cuda when available); one torch cannot parse is a flag error."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(args.device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {args.device}: {exc}; give cpu, cuda or cuda:N") from None


def start(args, command):
    """Process group (compat, which applies its patches first), device and seeds -> torch.device."""
    _check_device_flag(args)
    try:
        device = compat.init_distributed_mode(args)
    except ValueError as exc:  # the device named cannot be had; process-group errors keep theirs
        raise ConfigError(str(exc)) from None
    torch.multiprocessing.set_sharing_strategy("file_system")
    seed_everything(args.seed + misc.get_rank())
    print(f"[{command}] device {device}, {misc.get_world_size()} process(es), "
          f"{'distributed' if args.distributed else 'single process'}")
    return device


def device_without_process_group(args):
    """--device for a command that needs no process group (predict) -> torch.device."""
    _check_device_flag(args)
    try:
        return compat.resolve_device(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def seed_everything(seed):
    # Not misc.seed_torch: it also turns cuDNN off entirely, a large slowdown on GPUs.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def finish():
    if dist.is_initialized():
        dist.destroy_process_group()


def build_model(args, model_args):
    """The model from MODELS, given arguments the way BenCo's scripts combine them: main
    flags of the same name (e.g. image_size) first, then the model's own flags."""
    model = MODELS.get(args.model)
    target = model if isinstance(model, (types.FunctionType, types.MethodType)) else model.__init__
    params = inspect.signature(target).parameters
    combined = {k: v for k, v in vars(args).items() if k in params}
    for k, v in vars(model_args).items():
        if k in params and k not in combined:
            combined[k] = v
    try:
        return model(**combined)
    except ValueError as exc:  # a flag value the constructor refuses (MaskCLIP's messages name the flag)
        raise ConfigError(f"--model {args.model}: {exc}") from exc


def without_weight_sources(model_args):
    """Model flags with every weight source (``*_pretrained``) set to ``none``: for a model whose
    weights all come from a checkpoint, so nothing is downloaded or read only to be overwritten."""
    return types.SimpleNamespace(**{k: "none" if k.endswith("_pretrained") else v
                                    for k, v in vars(model_args).items()})


def numbered_checkpoints(directory):
    """The checkpoint-<n>.pth files in ``directory``, by increasing n."""
    numbered = [(int(m.group(1)), name) for name in os.listdir(directory)
                for m in [_CHECKPOINT_RE.match(name)] if m]
    return [os.path.join(directory, name) for _, name in sorted(numbered)]


def latest_checkpoint(directory):
    """checkpoint-<n>.pth with the largest n in ``directory``, or None."""
    numbered = numbered_checkpoints(directory) if os.path.isdir(directory) else []
    return numbered[-1] if numbered else None


def resolve_checkpoint(path, flag="--checkpoint_path"):
    """A .pth file, or a training output dir (checkpoint-best.pth, else the latest)."""
    if os.path.isdir(path):
        best = os.path.join(path, "checkpoint-best.pth")
        found = best if os.path.isfile(best) else latest_checkpoint(path)
        if found is None:
            raise ConfigError(f"{flag} {path}: the folder holds no checkpoint-best.pth or "
                              f"checkpoint-<epoch>.pth; point it at a .pth file or a training --output_dir")
        return found
    if not os.path.isfile(path):
        raise ConfigError(f"{flag} {path}: no such file; give a .pth checkpoint or a training --output_dir")
    return path


def read_checkpoint(path, flag="--checkpoint_path", tensors=True):
    """A BenCo checkpoint dict (or a bare state dict), on the CPU.

    Weights are read whole, not memory-mapped: training replaces checkpoint-best.pth while a
    test of the same folder may be reading it, and mapped tensors would follow the file.
    ``tensors=False`` is for reading only the saved flags: the tensors are then mapped and
    never read (zip checkpoints; torch < 1.6 files are read whole).
    """
    compat.allow_args_in_checkpoints()  # BenCo's save_model stores the argparse flags
    try:
        if not tensors and zipfile.is_zipfile(path):
            return torch.load(path, map_location="cpu", mmap=True)
        return torch.load(path, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        # torch's weights_only message suggests weights_only=False; the part that says what
        # failed is the one worth showing.
        text, marker = str(exc), "WeightsUnpickler error:"
        if marker in text:
            reason = " ".join(text.split(marker, 1)[1].split("Check the documentation")[0].split())
        else:
            reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if "Unsupported global" in reason:
            raise ConfigError(f"{flag} {path}: it holds Python objects that torch does not load without running "
                              f"their code ({reason[:300]}); load it yourself if you trust it and save "
                              f"{{'model': state_dict}}") from None
        raise ConfigError(f"{flag} {path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                          f"{reason[:300]}). Is it cut short (an interrupted save or copy), or another kind "
                          f"of file? Give a checkpoint-<epoch>.pth written by `benco-maskclip train`") from None


def saved_training_args(checkpoint):
    """The argparse flags a BenCo checkpoint saved (``args``), or None for a bare state dict."""
    return checkpoint.get("args") if isinstance(checkpoint, dict) else None


def weights_do_not_fit(path, checkpoint, args, flag, exc):
    """The ConfigError for a checkpoint whose tensors do not fit the model the flags built."""
    saved = saved_training_args(checkpoint)
    hint = ""
    if saved is not None:
        saved_flags = getattr(saved, "model_args", {})
        differing = {k: v for k, v in saved_flags.items() if getattr(args, "model_args", {}).get(k, v) != v}
        shown = differing or saved_flags
        flags = " ".join(f"--{k} {v}" for k, v in shown.items() if v is not None)
        hint = (f" It was trained with --model {saved.model} {flags}".rstrip()
                + ("; pass the same model flags." if not differing else
                   f" (this run has {' '.join(f'--{k} {args.model_args[k]}' for k in differing)})."))
    return ConfigError(f"{flag} {path}: its weights do not fit --model {args.model} with these "
                       f"flags.{hint}\n{str(exc)[:2000]}")


def load_weights(model, path, args, flag="--checkpoint_path", checkpoint=None):
    """Load a BenCo checkpoint's (or a bare state dict's) weights -> the checkpoint's epoch or None.

    ``checkpoint``: what ``read_checkpoint(path)`` returned, for callers that read it already.
    """
    if checkpoint is None:
        checkpoint = read_checkpoint(path, flag)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise weights_do_not_fit(path, checkpoint, args, flag, exc) from None
    epoch = checkpoint.get("epoch") if isinstance(checkpoint, dict) else None
    print(f"Loaded {path}" + (f" (epoch {epoch})" if epoch is not None else ""))
    return epoch
