"""Checkpoints: finding, reading, rebuilding their model, the best one, pruning and resuming.

Formats read: BenCo's ``misc.save_model`` dict (``model``, ``optimizer``, ``epoch``,
``scaler``, ``args``), which ``train`` writes, and a bare state dict. ``args`` holds the
training flags; ``args.model_args`` the model's own, so a checkpoint says how to rebuild
its model. A state dict of another codebase (the authors' MaskCLIP ``train.py``) is rebuilt
by the format its model registered in ``model_zoo.checkpoint_formats``.
:func:`save` writes with BenCo's ``misc.save_model``; ``checkpoint-best.pth`` is a copy replaced
by rename.

``test``, ``test-robust`` and ``predict`` read their checkpoint once (:func:`open_checkpoint`):
their flags take its training flags (:meth:`Checkpoint.training_flags`), and
:func:`models.model_from_checkpoint` builds the model from the same read (``models.rebuild``,
the one rebuild path, which ``MaskCLIP.from_checkpoint`` shares).
"""
import json
import math
import os
import pickle
import re
import shutil

import torch

import IMDLBenCo.training_scripts.utils.misc as misc

from ..compat import allow_saved_flags
from ..errors import CheckpointError, UserError
from ..model_zoo.checkpoint_formats import find as find_foreign_format

BEST_NAME = "checkpoint-best.pth"
BEST_JSON = "best.json"
_NUMBERED_RE = re.compile(r"^checkpoint-(\d+)\.pth$")
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


def read(path, flag="--checkpoint_path"):
    """A checkpoint dict (or a bare state dict), on the CPU.

    Weights are read whole, not memory-mapped: training replaces checkpoint-best.pth while a
    test of the same folder may be reading it, and mapped tensors would follow the file.
    """
    allow_saved_flags()
    try:
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
            raise CheckpointError(f"{flag} {path}: it holds Python objects that torch does not load without "
                                  f"running their code ({reason[:300]})",
                                  hint="load it yourself if you trust it and save {'model': state_dict}") from None
        raise CheckpointError(f"{flag} {path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{reason[:300]})",
                              hint="is it cut short (an interrupted save or copy), or another kind of file? Give a "
                                   "checkpoint-<epoch>.pth written by `benco-maskclip train`") from None


class Checkpoint:
    """A checkpoint file as read: BenCo's ``misc.save_model`` dict or a bare state dict."""

    def __init__(self, path, contents):
        self.path, self.contents = path, contents
        is_dict = isinstance(contents, dict)
        self.state_dict = contents.get("model", contents) if is_dict else contents
        self.flags = contents.get("args") if is_dict else None  # the training flags, if saved
        self.epoch = contents.get("epoch") if is_dict else None
        self.foreign = find_foreign_format(self.state_dict)

    def describes_its_model(self):
        """Whether it says how to rebuild its model: ``train`` saves the model flags, a foreign
        format (``model_zoo.checkpoint_formats``) has them in its tensors."""
        return hasattr(self.flags, "model_args") or self.foreign is not None

    def training_flags(self):
        """-> (main flags, model flags) it was trained with: ``--model`` and the model's input
        (``--image_size``, resize or pad, edge mask), and the model's own flags. A foreign
        format names its model; a bare state dict says nothing."""
        main = {"model": self.foreign.model} if self.foreign is not None else {}
        if self.flags is None:
            return main, {}
        main.update({k: getattr(self.flags, k) for k in ("model", "image_size", "edge_mask_width")
                     if hasattr(self.flags, k)})
        main.update({k: bool(getattr(self.flags, k, False)) for k in ("if_padding", "if_resizing")})
        return main, dict(getattr(self.flags, "model_args", None) or {})

    def training_data(self):
        """The source it was trained on (:func:`training_source`), or None when it does not say
        (a foreign format, a bare state dict)."""
        return training_source(getattr(self.flags, "data_path", None), getattr(self.flags, "train_split", None))


def training_source(data_path, train_split):
    """``train``'s ``--data_path`` with its ``--train_split``: ``<data_path>#<split>``, the path
    alone when it names its split or none was given; None without a path."""
    if not data_path:
        return None
    return f"{data_path}#{train_split}" if train_split and "#" not in str(data_path) else str(data_path)


# The file the command's flags were read from, kept until its model is built, so that one
# ``test`` / ``test-robust`` / ``predict`` reads its checkpoint once.
_opened = {}


def _identity(path):
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_mtime_ns, stat.st_size


def open_checkpoint(path, flag="--checkpoint_path"):
    """``resolve`` and ``read`` -> a :class:`Checkpoint`. The same unchanged file opened again
    (the command's model after its flags) is not read again."""
    path = resolve(path, flag)
    key = _identity(path)
    if key not in _opened:
        _opened.clear()
        _opened[key] = Checkpoint(path, read(path, flag))
    return _opened[key]


def close(checkpoint):
    """Forget a checkpoint ``open_checkpoint`` keeps, once its model is built."""
    _opened.pop(_identity(checkpoint.path), None)


def load_strictly(model, state_dict):
    """``load_state_dict(strict=True)`` whose error names the keys that do not fit, grouped."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    misshapen = sorted(key for key in set(own) & set(state_dict) if own[key].shape != state_dict[key].shape)
    if missing or unexpected or misshapen:
        parts = [f"{what} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("of another shape", misshapen)) if keys]
        raise CheckpointError("checkpoint keys do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state_dict)


def weights_do_not_fit(path, saved, args, flag, exc):
    hint = "pass the model flags it was trained with"
    if saved is not None:
        trained = getattr(saved, "model_args", {})
        ours = getattr(args, "model_args", {})
        differing = {k: v for k, v in trained.items() if ours.get(k, v) != v}
        shown = " ".join(f"--{k} {v}" for k, v in (differing or trained).items() if v is not None)
        hint = (f"it was trained with --model {saved.model} {shown}".rstrip()
                + ("; pass the same model flags" if not differing else
                   f" (this run has {' '.join(f'--{k} {ours[k]}' for k in differing)})"))
    return CheckpointError(f"{flag} {path}: its weights do not fit --model {args.model} with these flags\n"
                           f"{str(exc)[:2000]}", hint=hint)


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
        saved = Checkpoint(args.resume, read(args.resume, "--resume")).flags
        if "parameter group" in str(exc):
            raise UserError(f"--resume {args.resume}: its optimizer state does not fit this run's parameter "
                            f"groups ({exc})",
                            hint="resume with the flags it was trained with"
                                 + (f" (--optimizer {saved.optimizer} and the same model flags)"
                                    if hasattr(saved, "optimizer") else "")) from None
        if "state_dict" not in str(exc):
            raise
        raise weights_do_not_fit(args.resume, saved, args, "--resume", exc) from None


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
