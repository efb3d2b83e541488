"""Building a model of ``MODELS`` from the flags; each model's weight-source flags and files.

BenCo's baselines need more than their constructor flags say: CAT-Net and TruFor read
config files (the flags default to BenCo's packaged ones here), CAT-Net takes its weight
files from inside its config (``--pretrained_rgb`` / ``--pretrained_dct`` are written into
a copy of it in ``--output_dir``) and silently skips a missing one, TruFor's constructor
reads its files with no way to start from random weights, and its phase 3 reads a plain
state dict where ``train`` writes BenCo's checkpoint dict. Here every weight file is a
flag, checked before the model is built.
"""
import inspect
import os
import tempfile
import types

import torch
import yaml

import IMDLBenCo
from IMDLBenCo.registry import MODELS

from ..errors import CheckpointError, FlagValueError, UserError
from ..model_zoo.nfa_vit.pretrained import WEIGHT_FILES as NFA_VIT_FILES
from . import checkpoints

BENCO_CONFIGS = os.path.join(os.path.dirname(IMDLBenCo.__file__), "statics", "model_zoo", "configs")
# Model flags whose BenCo default (None) fails in the constructor: BenCo's packaged files.
FLAG_DEFAULTS = {
    "Cat_Net": {"cfg_file": os.path.join(BENCO_CONFIGS, "CAT_full.yaml")},
    "Trufor": {"config_path": os.path.join(BENCO_CONFIGS, "trufor.yaml")},
}
# Flags of weight files that are no constructor arguments: CAT-Net reads them from its
# config's MODEL.PRETRAINED_RGB / PRETRAINED_DCT.
EXTRA_FLAGS = {"Cat_Net": ("pretrained_rgb", "pretrained_dct")}
CAT_NET_CONFIG_KEYS = {"pretrained_rgb": "PRETRAINED_RGB", "pretrained_dct": "PRETRAINED_DCT"}
# The value of a weight-file flag that asks for random weights instead, and the models that
# cannot start from them (their constructor reads every weight file, with nothing to switch it off).
RANDOM = "none"
NO_RANDOM_START = {"Trufor"}

# Per model, its weight-file flags: the file, where to get it, and whether training needs it
# (then leaving it out is an error, and --flag none asks for random weights).
WEIGHT_FILES = {
    "IML_ViT": {"vit_pretrain_path": (
        "mae_pretrain_vit_base.pth from MAE's release (github.com/facebookresearch/mae); left out, "
        "BenCo starts from random weights", False)},
    "Cat_Net": {
        "pretrained_rgb": ("hrnetv2_w48_imagenet_pretrained.pth, the HRNet-W48 ImageNet weights linked from "
                           "github.com/mjkwon2021/CAT-Net (IMDLBenCo/model_zoo/cat_net/README.md)", True),
        "pretrained_dct": ("DCT_djpeg.pth.tar, CAT-Net's DCT-stream weights linked from "
                           "github.com/mjkwon2021/CAT-Net (IMDLBenCo/model_zoo/cat_net/README.md)", True)},
    "Trufor": {
        "np_pretrain_weights": ("noiseprint.pth, Noiseprint++ split from TruFor's release by BenCo (links in "
                                "IMDLBenCo/model_zoo/trufor/README.md); phase 2", True),
        "mit_b2_pretrain_weights": ("mit_b2.pth, SegFormer's ImageNet MiT-B2 (github.com/NVlabs/SegFormer, or "
                                    "BenCo's link in IMDLBenCo/model_zoo/trufor/README.md); phase 2", True),
        "det_resume_ckpt": ("phase 2's checkpoint (`benco-maskclip train --model Trufor --phase 2` writes "
                            "checkpoint-best.pth; read as it is); phase 3", True)},
    "NFA_ViT": {flag: (f"{file['file']}, {file['part']}, from {file['where']}", True)
                for flag, file in NFA_VIT_FILES.items()},
}

# Per model, its constructor arguments that name pretrained weights to read or download,
# and the value that reads nothing. A model whose weights all come from a checkpoint is
# built with these values. Models not listed (SPAN, MVSSNet's pretrained_base, the timm
# backbones ...) may still read their weight files or download theirs: those sources are
# not constructor flags that can be switched off here.
WEIGHT_SOURCES = {
    "MaskCLIP": {"clip_pretrained": "none", "pixel_pretrained": "none"},
    "NFA_ViT": {flag: RANDOM for flag in NFA_VIT_FILES},
    "IML_ViT": {"vit_pretrain_path": None},
    "ObjectFormer": {"init_weight_path": None},
    "PSCC_Net": {"pretrain_path": None},
    "SparseViT": {"pretrained_path": None},
    "Mesorch": {"seg_pretrain_path": None, "conv_pretrain": False},
    "Cat_Net": {"pretrained_rgb": RANDOM, "pretrained_dct": RANDOM},
    "Trufor": {"np_pretrain_weights": RANDOM, "mit_b2_pretrain_weights": RANDOM, "det_resume_ckpt": RANDOM},
}
# Extra packages a model needs (the [baselines] extra): import name -> (why, how it installs).
REQUIREMENTS = {"Cat_Net": {"jpegio": ("its post function reads the JPEG DCT coefficients with it",
                                       "it builds from source, about a minute; Linux only")}}


def model_class(name):
    if not MODELS.has(name):
        raise UserError(f"--model {name!r} is not registered in IMDLBenCo MODELS",
                        hint=f"choose one of {sorted(MODELS.module_dict)}")
    return MODELS.get(name)


def check_requirements(model_name):
    """A package ``model_name`` needs (``REQUIREMENTS``) that cannot be imported is a UserError."""
    for package, (why, install) in REQUIREMENTS.get(model_name, {}).items():
        try:
            __import__(package)
        except ImportError:
            raise UserError(f"--model {model_name} needs the {package} package: {why}",
                            hint=f'pip install -e ".[baselines]" ({install})') from None


def _needed(model_name, flags):
    """The weight-file flags this model, with these flags, reads."""
    files = WEIGHT_FILES.get(model_name, {})
    if model_name == "Trufor":  # phase 2 reads Noiseprint++ and MiT-B2, phase 3 phase 2's weights
        wanted = ("det_resume_ckpt",) if int(flags.get("phase", 2)) == 3 else (
            "np_pretrain_weights", "mit_b2_pretrain_weights")
        return {k: v for k, v in files.items() if k in wanted}
    return files


def _random(value):
    return isinstance(value, str) and value.lower() == RANDOM


def check_weight_files(model_name, flags):
    """Each weight-file flag ``model_name`` reads names a file, or ``none`` (random weights)."""
    random_ok = model_name not in NO_RANDOM_START
    for flag, (what, required) in _needed(model_name, flags).items():
        value = flags.get(flag)
        if (_random(value) and random_ok) or (value in (None, "") and not required):
            continue
        instead = (f", or pass --{flag} {RANDOM} to start from random weights" if random_ok else
                   f" (BenCo's {model_name} reads every weight file: it cannot start from random weights)")
        if value in (None, "") or _random(value):
            raise UserError(f"--model {model_name} needs --{flag}: {what}",
                            hint=f"download it and pass --{flag} PATH{instead}")
        if not os.path.isfile(value):
            raise UserError(f"--{flag} {value}: no such file (--model {model_name} reads {what})",
                            hint=f"download it{instead if required else ', or leave the flag out'}")


def _write_atomically(path, write):
    """Every torchrun process writes the same file: each to its own name, then renamed."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    write(partial)
    os.replace(partial, path)


def _cat_net_config(args, flags):
    """A copy of CAT-Net's config in --output_dir with the weight flags written into it -> its path."""
    path = flags["cfg_file"]
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except OSError as exc:
        raise UserError(f"--cfg_file {path}: {exc.strerror or exc}",
                        hint=f"leave it out for BenCo's {FLAG_DEFAULTS['Cat_Net']['cfg_file']}") from None
    for flag, key in CAT_NET_CONFIG_KEYS.items():
        value = flags.get(flag)
        # CAT-Net skips a path that is no file; "" says so plainly in the copy.
        config["MODEL"][key] = "" if value is None or _random(value) else os.path.abspath(value)
    copy = os.path.join(args.output_dir, "cat_net_config.yaml")

    def write(path):
        with open(path, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)

    _write_atomically(copy, write)
    return copy


def trufor_phase2_weights(path):
    """TruFor's phase 3 reads a plain state dict; ``train`` writes BenCo's checkpoint dict
    (``model``, ``optimizer``, ``args`` ...). -> the state dict in ``path``."""
    return checkpoints.Checkpoint(path, checkpoints.read(path, "--det_resume_ckpt")).state_dict


def _trufor(model, flags, folder, checkpoint):
    """TruFor with phase 2's checkpoint read as it is. Built from a ``checkpoint`` (every
    weight from it; its constructor must read some file), it is built as phase 3 from that
    checkpoint's weights and then given its own phase back: the phase decides only its loss
    and which parameters train."""
    phase = int(flags.get("phase", 2))
    plain = os.path.join(folder, "phase2_state_dict.pth")
    if checkpoint is not None:
        flags.update(phase=3, det_resume_ckpt=plain)
        torch.save(checkpoint.state_dict, plain)
    elif int(flags["phase"]) == 3:
        torch.save(trufor_phase2_weights(flags["det_resume_ckpt"]), plain)
        flags["det_resume_ckpt"] = plain
    built = model(**flags)
    built.phase = phase
    return built


def build_model(args, model_args, checkpoint=None):
    """The model from MODELS, given arguments the way BenCo's scripts combine them: main
    flags of the same name (e.g. image_size) first, then the model's own flags.

    ``checkpoint``: the ``checkpoints.Checkpoint`` every weight will be loaded from (``rebuild``,
    with the weight sources switched off); without it, the weight files are checked first.
    """
    model = model_class(args.model)
    target = model if isinstance(model, (types.FunctionType, types.MethodType)) else model.__init__
    params = inspect.signature(target).parameters
    own = {**vars(args), **{k: v for k, v in vars(model_args).items() if k not in vars(args)}}
    if checkpoint is None:
        check_weight_files(args.model, own)
    combined = {k: v for k, v in own.items() if k in params}
    try:
        if args.model == "Cat_Net":
            combined["cfg_file"] = _cat_net_config(args, own)
        if args.model == "Trufor":
            with tempfile.TemporaryDirectory(prefix="trufor_weights_") as folder:
                return _trufor(model, combined, folder, checkpoint)
        return model(**combined)
    except ValueError as exc:
        # A constructor refuses a flag value with a ValueError that names the flag (MaskCLIP's
        # "--image_size must be ..."); any other ValueError is a bug and keeps its traceback.
        if not str(exc).startswith("--"):
            raise
        raise FlagValueError(f"--model {args.model}: {exc}") from exc


def fake_probabilities(output):
    """A model output's P(fake) per image as [B], or None for a model with no image-level output
    (IML-ViT). TruFor squeezes its ``pred_label``: a 0-d tensor for a batch of one image."""
    scores = output.get("pred_label")
    return None if scores is None else scores.reshape(-1)


def without_weight_sources(model_name, model_args):
    """-> (model flags with every weight source of ``model_name`` set to read nothing, a line
    saying what that means for this model)."""
    off = WEIGHT_SOURCES.get(model_name, {})
    flags = types.SimpleNamespace(**{**vars(model_args), **off})
    if model_name not in WEIGHT_SOURCES:
        return flags, (f"--model {model_name} has no weight-source flags known here: it may read or download "
                       f"pretrained weights that the checkpoint's then replace")
    shown = " ".join(f"--{k} {v}" for k, v in off.items())
    return flags, f"all weights from the checkpoint, nothing downloaded ({shown})"


def rebuild(checkpoint, args, model_args):
    """The model of ``args.model`` with ``model_args`` and every weight from ``checkpoint``
    (weight sources switched off, so nothing is downloaded). A checkpoint in a registered
    foreign format of that model is converted first; the file decides its ``fixed_flags``.
    The one rebuild path of ``test``, ``test-robust``, ``predict`` and ``MaskCLIP.from_checkpoint``.
    Raises ``FlagValueError`` for flags the constructor refuses and ``CheckpointError`` for
    weights that do not fit."""
    foreign = checkpoint.foreign if checkpoint.foreign and checkpoint.foreign.model == args.model else None
    state = checkpoint.state_dict
    flags, note = without_weight_sources(args.model, model_args)
    if foreign is not None:
        flags = types.SimpleNamespace(**{**{k: v for k, v in vars(flags).items() if k not in foreign.fixed_flags},
                                         **foreign.model_flags(state)})
        given = f"its tensors give {', '.join(foreign.fixed_flags)}; " if foreign.fixed_flags else ""
        note = f"{foreign.source}: {given}{note}"
        state = foreign.convert(state)
        # The file's own input size, not the command line's: the model is built for it.
        args = types.SimpleNamespace(**{**vars(args), "image_size": flags.image_size}) \
            if hasattr(flags, "image_size") else args
    print(f"[checkpoint] {args.model}: {note}")
    model = build_model(args, flags, checkpoint=checkpoint)
    checkpoints.load_strictly(model, state)
    return model


def load_model(path, model=None, **overrides):
    """``rebuild`` for Python callers: the model in checkpoint ``path`` (a file ``train`` wrote,
    or a registered foreign format of ``model``), with constructor ``overrides``."""
    checkpoint = checkpoints.open_checkpoint(path)
    checkpoints.close(checkpoint)
    main, model_flags = checkpoint.training_flags()
    args = types.SimpleNamespace(model=model or main.get("model", "MaskCLIP"), output_dir=os.path.dirname(checkpoint.path))
    if "image_size" in main:
        args.image_size = main["image_size"]
    model_args = types.SimpleNamespace(**{**model_flags, **overrides})
    return rebuild(checkpoint, args, model_args)


def model_from_checkpoint(path, args, model_args):
    """``rebuild`` for ``test``, ``test-robust`` and ``predict`` -> (model on the CPU, the
    checkpoint's epoch or None), with errors that name ``--checkpoint_path`` and the fix."""
    checkpoint = checkpoints.open_checkpoint(path)
    checkpoints.close(checkpoint)
    try:
        model = rebuild(checkpoint, args, model_args)
    except (FlagValueError, CheckpointError) as exc:
        foreign = checkpoint.foreign
        if foreign is not None and foreign.model == args.model:
            raise CheckpointError(f"--checkpoint_path {checkpoint.path}: {exc}", hint=foreign.hint(exc)) from None
        if isinstance(exc, FlagValueError):
            raise
        raise checkpoints.weights_do_not_fit(checkpoint.path, checkpoint.flags, args, "--checkpoint_path", exc) from None
    print(f"[checkpoint] loaded {checkpoint.path}"
          + (f" (epoch {checkpoint.epoch})" if checkpoint.epoch is not None else ""))
    return model, checkpoint.epoch
