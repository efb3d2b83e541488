"""Checkpoints: finding, reading, loading, the best one, pruning and resuming.

Formats read: BenCo's ``misc.save_model`` dict (``model``, ``optimizer``, ``epoch``,
``scaler``, ``args``), which ``train`` writes, and a bare state dict. ``args`` holds the
training flags; ``args.model_args`` the model's own, so a checkpoint says how to rebuild
its model. A MaskCLIP checkpoint of the authors' ``train.py`` (the same dict around their
state dict, no ``model_args``) is rebuilt from its tensor shapes by ``MaskCLIP.from_state_dict``.
:func:`save` writes with BenCo's ``misc.save_model``; ``checkpoint-best.pth`` is a copy replaced
by rename.

``test``, ``test-robust`` and ``predict`` build their model with :func:`model_from_checkpoint`;
their flag parsing reads the saved flags with ``read(path, tensors=False)``, which maps the tensors
without reading them.
"""
import argparse
import json
import math
import os
import pickle
import re
import shutil
import zipfile

import torch

import IMDLBenCo.training_scripts.utils.misc as misc

from ..errors import UserError
from ..model_zoo import nfa_vit
from ..model_zoo.maskclip import MaskCLIP, is_authors_state_dict
from .models import build_model, without_weight_sources

BEST_NAME = "checkpoint-best.pth"
BEST_JSON = "best.json"
_NUMBERED_RE = re.compile(r"^checkpoint-(\d+)\.pth$")
# What misc.save_model pickles besides tensors: the argparse flags.
SAFE_GLOBALS = [argparse.Namespace]


def allow_saved_flags():
    """Let ``torch.load`` with ``weights_only`` (BenCo's ``misc.load_model`` too) read ``args``."""
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


def numbered(directory):
    """The checkpoint-<n>.pth files in ``directory``, by increasing n."""
    found = [(int(m.group(1)), name) for name in os.listdir(directory)
             for m in [_NUMBERED_RE.match(name)] if m]
    return [os.path.join(directory, name) for _, name in sorted(found)]


def latest(directory):
    """checkpoint-<n>.pth with the largest n in ``directory``, or None."""
    found = numbered(directory) if os.path.isdir(directory) else []
    return found[-1] if found else None


def resolve(path, flag="--checkpoint_path"):
    """A .pth file, or a training output dir (its checkpoint-best.pth, else the latest)."""
    path = str(path)
    if os.path.isdir(path):
        best = os.path.join(path, BEST_NAME)
        found = best if os.path.isfile(best) else latest(path)
        if found is None:
            raise UserError(f"{flag} {path}: the folder holds no {BEST_NAME} or checkpoint-<epoch>.pth",
                            hint="point it at a .pth file or a training --output_dir")
        return found
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path}: no such file", hint="give a .pth checkpoint or a training --output_dir")
    return path


def read(path, flag="--checkpoint_path", tensors=True):
    """A checkpoint dict (or a bare state dict), on the CPU.

    Weights are read whole, not memory-mapped: training replaces checkpoint-best.pth while a
    test of the same folder may be reading it, and mapped tensors would follow the file.
    ``tensors=False`` maps them and never reads them, for the saved flags only (zip
    checkpoints; torch < 1.6 files are read whole).
    """
    allow_saved_flags()
    try:
        if not tensors and zipfile.is_zipfile(path):
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        # torch's weights_only message suggests weights_only=False; the part that says what
        # failed is the one worth showing.
        text, marker = str(exc), "WeightsUnpickler error:"
        if marker in text:
            reason = " ".join(text.split(marker, 1)[1].split("Check the documentation")[0].split())
        else:
            reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if "Unsupported global" in reason:
            raise UserError(f"{flag} {path}: it holds Python objects that torch does not load without running "
                            f"their code ({reason[:300]})",
                            hint="load it yourself if you trust it and save {'model': state_dict}") from None
        raise UserError(f"{flag} {path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {reason[:300]})",
                        hint="is it cut short (an interrupted save or copy), or another kind of file? Give a "
                             "checkpoint-<epoch>.pth written by `benco-maskclip train`") from None


def saved_flags(checkpoint):
    """The training flags a checkpoint saved (``args``), or None for a bare state dict."""
    return checkpoint.get("args") if isinstance(checkpoint, dict) else None


def describes_its_model(checkpoint):
    """Whether a checkpoint (``read``'s result) says how to rebuild its model: our ``train`` saves
    the model flags, an authors' MaskCLIP checkpoint has its tensor shapes, and the authors'
    NFA-ViT has no flags beyond its weight files (all in the checkpoint)."""
    if not isinstance(checkpoint, dict):
        return False
    state = checkpoint.get("model", {})
    return (hasattr(saved_flags(checkpoint), "model_args") or is_authors_state_dict(state)
            or nfa_vit.is_authors_state_dict(state))


def _weights_do_not_fit(path, checkpoint, args, flag, exc):
    saved = saved_flags(checkpoint)
    hint = "pass the model flags it was trained with"
    if saved is not None:
        trained = getattr(saved, "model_args", {})
        ours = getattr(args, "model_args", {})
        differing = {k: v for k, v in trained.items() if ours.get(k, v) != v}
        shown = " ".join(f"--{k} {v}" for k, v in (differing or trained).items() if v is not None)
        hint = (f"it was trained with --model {saved.model} {shown}".rstrip()
                + ("; pass the same model flags" if not differing else
                   f" (this run has {' '.join(f'--{k} {ours[k]}' for k in differing)})"))
    return UserError(f"{flag} {path}: its weights do not fit --model {args.model} with these flags\n"
                     f"{str(exc)[:2000]}", hint=hint)


def load_weights(model, checkpoint, path, args, flag="--checkpoint_path"):
    """Load a checkpoint's weights (``read(path)``'s result) into ``model`` -> its epoch or None."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise _weights_do_not_fit(path, checkpoint, args, flag, exc) from None
    return checkpoint.get("epoch") if isinstance(checkpoint, dict) else None


def model_from_checkpoint(path, args, model_args):
    """The model of ``args.model`` with ``model_args``, every weight from the checkpoint file
    ``path`` (weight sources switched off, so nothing is downloaded) -> (model on the CPU,
    the checkpoint's epoch or None). The one loader of ``test``, ``test-robust`` and ``predict``."""
    checkpoint = read(path)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if args.model == "MaskCLIP" and is_authors_state_dict(state):
        model = _authors_maskclip(path, checkpoint, model_args)
        epoch = checkpoint.get("epoch")
    else:
        flags, note = without_weight_sources(args.model, model_args)
        print(f"[checkpoint] {args.model}: {note}")
        model = build_model(args, flags, checkpoint=path)
        epoch = load_weights(model, checkpoint, path, args)
    print(f"[checkpoint] loaded {path}" + (f" (epoch {epoch})" if epoch is not None else ""))
    return model, epoch


# What an authors' checkpoint says itself: its tensors give the CLIP and the image size, and it
# holds every weight.
AUTHORS_FILE_FLAGS = ("model_setting", "image_size", "clip_pretrained", "pixel_pretrained")


def _authors_maskclip(path, checkpoint, model_args):
    flags = {k: v for k, v in vars(model_args).items() if k not in AUTHORS_FILE_FLAGS}
    print("[checkpoint] MaskCLIP: a checkpoint of the authors' train.py; CLIP and image size from its "
          "tensors, all weights from it, nothing downloaded"
          + (f", CLIP layers --clip_layers {flags['clip_layers']}" if flags.get("clip_layers") else ""))
    try:
        return MaskCLIP.from_state_dict(checkpoint, **flags)
    except (ValueError, UserError) as exc:
        hint = ("the tapped CLIP layers cannot be read from the tensors: pass the --clip_layers it was trained "
                "with (their ViTL setting taps 2,4,8,12,16,20,23)" if "--clip_layers" in str(exc) else
                "give the file their train.py wrote, as it wrote it")
        raise UserError(f"--checkpoint_path {path}: {exc}", hint=hint) from None


def save(args, epoch, model, model_without_ddp, optimizer, loss_scaler):
    """BenCo's ``misc.save_model`` (the main process writes) -> the path of checkpoint-<epoch>.pth."""
    misc.save_model(args=args, model=model, model_without_ddp=model_without_ddp, optimizer=optimizer,
                    loss_scaler=loss_scaler, epoch=epoch)
    return os.path.join(args.output_dir, f"checkpoint-{epoch}.pth")


def resolve_resume(args):
    """``--resume auto`` -> the latest checkpoint in --output_dir (or none); a named file must exist."""
    if args.resume == "auto":
        found = latest(args.output_dir)
        print("[train] --resume auto: " + (f"continuing from {found}" if found else
                                           f"no checkpoint in {args.output_dir}, starting afresh"))
        args.resume = found or ""
    elif args.resume and not os.path.isfile(args.resume):
        raise UserError(f"--resume {args.resume}: no such file",
                        hint="give a checkpoint-<epoch>.pth, or 'auto' for the latest one in --output_dir")


def resume(args, model_without_ddp, optimizer, loss_scaler):
    """BenCo's ``misc.load_model`` for ``--resume`` (sets ``args.start_epoch``), with a clear
    error for a file that is no checkpoint, or whose weights or optimizer groups differ."""
    allow_saved_flags()
    try:
        misc.load_model(args=args, model_without_ddp=model_without_ddp, optimizer=optimizer, loss_scaler=loss_scaler)
    except (RuntimeError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        # BenCo says nothing of what is wrong with the file; read() raises for one it cannot read.
        checkpoint = read(args.resume, "--resume")
        if "parameter group" in str(exc):
            saved = saved_flags(checkpoint)
            raise UserError(f"--resume {args.resume}: its optimizer state does not fit this run's parameter "
                            f"groups ({exc})",
                            hint="resume with the flags it was trained with"
                                 + (f" (--optimizer {saved.optimizer} and the same model flags)"
                                    if hasattr(saved, "optimizer") else "")) from None
        if "state_dict" not in str(exc):
            raise
        raise _weights_do_not_fit(args.resume, checkpoint, args, "--resume", exc) from None


class Best:
    """The best checkpoint so far by ``--best_metric``, recorded in best.json beside it."""

    def __init__(self, output_dir, metric):
        self.output_dir, self.metric = output_dir, metric
        self.value, self.epoch = -math.inf, None

    @classmethod
    def load(cls, output_dir, metric, resuming):
        """A resumed run continues the record of the same metric; anything else starts afresh."""
        best = cls(output_dir, metric)
        path = os.path.join(output_dir, BEST_JSON)
        if resuming and os.path.isfile(path):
            with open(path) as f:
                saved = json.load(f)
            if saved.get("metric") == metric and saved.get("value") is not None:
                best.value, best.epoch = saved["value"], saved.get("epoch")
        return best

    @property
    def path(self):
        return os.path.join(self.output_dir, BEST_NAME) if self.epoch is not None else None

    def as_dict(self):
        return {"metric": self.metric, "value": self.value, "epoch": self.epoch}

    def update(self, averages, epoch, checkpoint):
        """Copy ``checkpoint`` to checkpoint-best.pth when ``averages`` beat the record ->
        "better", "worse" or "undefined" (the metric is NaN: no partial fake, or no image-level
        prediction)."""
        value = averages[self.metric[len("avg_"):]]
        if not math.isfinite(value):
            return "undefined"
        if value <= self.value:
            return "worse"
        self.value, self.epoch = value, epoch
        # Copied under another name, then renamed: a test reading checkpoint-best.pth
        # meanwhile sees the old file or the new one, never half of one.
        partial = os.path.join(self.output_dir, BEST_NAME + ".partial")
        shutil.copyfile(checkpoint, partial)
        os.replace(partial, os.path.join(self.output_dir, BEST_NAME))
        with open(os.path.join(self.output_dir, BEST_JSON), "w") as f:
            json.dump(self.as_dict(), f, indent=2)
            f.write("\n")
        return "better"


def prune(output_dir, keep):
    """Delete every checkpoint-<n>.pth in ``output_dir`` but ``keep`` (checkpoint-best.pth stays)."""
    for old in numbered(output_dir):
        if old != keep:
            os.remove(old)
