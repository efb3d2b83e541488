"""Building a model of ``MODELS`` from the flags; each model's weight-source flags and files.

BenCo's baselines need more than their constructor flags say: CAT-Net and TruFor read
config files (the flags default to BenCo's packaged ones here), CAT-Net takes its weight
files from inside its config (``--pretrained_rgb`` / ``--pretrained_dct`` are written into
a copy of it in ``--output_dir``) and silently skips a missing one, TruFor's constructor
reads its files with no way to start from random weights, and its phase 3 reads a plain
state dict where ``train`` writes BenCo's checkpoint dict. PSCC-Net fails on its default
(no file) and skips a path that is no file; MVSS-Net fetches torchvision's ResNet-50 with
torch.hub in its constructor, downloading it unless torch.hub's cache holds it, and loads
any file without checking its keys. Here every weight file is a flag, checked before the
model is built, and no constructor downloads anything.
"""
import contextlib
import inspect
import os
import tempfile
import types
import urllib.parse

import torch
import yaml

import IMDLBenCo
from IMDLBenCo.model_zoo.mvss_net.mvssnet import Bottleneck, ResNet, model_urls as mvss_net_urls
from IMDLBenCo.registry import MODELS

from ..errors import CheckpointError, FlagValueError, UserError
from ..model_zoo.weight_files import read_weight_file
from ..model_zoo.nfa_vit.pretrained import WEIGHT_FILES as NFA_VIT_FILES
from . import checkpoints

BENCO_CONFIGS = os.path.join(os.path.dirname(IMDLBenCo.__file__), "statics", "model_zoo", "configs")
# Model flags whose BenCo default (None) fails in the constructor: BenCo's packaged files.
FLAG_DEFAULTS = {
    "Cat_Net": {"cfg_file": os.path.join(BENCO_CONFIGS, "CAT_full.yaml")},
    "Trufor": {"config_path": os.path.join(BENCO_CONFIGS, "trufor.yaml")},
}
# Flags of weight files that are no constructor arguments: CAT-Net reads them from its
# config's MODEL.PRETRAINED_RGB / PRETRAINED_DCT, MVSS-Net from torch.hub's cache.
EXTRA_FLAGS = {"Cat_Net": ("pretrained_rgb", "pretrained_dct"), "MVSSNet": ("resnet50_pretrain_weights",)}
CAT_NET_CONFIG_KEYS = {"pretrained_rgb": "PRETRAINED_RGB", "pretrained_dct": "PRETRAINED_DCT"}
# The value of a weight-file flag that asks for random weights instead, and the models that
# cannot start from them (their constructor reads every weight file, with nothing to switch it off).
RANDOM = "none"
NO_RANDOM_START = {"Trufor"}

# Weight files a constructor fetches with torch.hub (flag -> URL): left out, the flag reads
# the file from torch.hub's cache, $TORCH_HOME/hub/checkpoints/<the URL's file name>.
HUB_FILES = {"MVSSNet": {"resnet50_pretrain_weights": mvss_net_urls["resnet50"]}}

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
    "PSCC_Net": {"pretrain_path": (
        "hrnet_w18_small_v2.pth, the HRNet-W18-small ImageNet weights of github.com/proteus1991/PSCC-Net "
        "(models/hrnet_w18_small_v2.pth)", True)},
    "SparseViT": {"pretrained_path": (
        "uniformer_base_in1k.pth, UniFormer-B's ImageNet weights (huggingface.co/Sense-X/uniformer_image); "
        "left out, BenCo starts from random weights", False)},
    "MVSSNet": {"resnet50_pretrain_weights": (
        f"{os.path.basename(HUB_FILES['MVSSNet']['resnet50_pretrain_weights'])}, torchvision's ImageNet ResNet-50 "
        f"({HUB_FILES['MVSSNet']['resnet50_pretrain_weights']}), which both of MVSS-Net's ResNet-50s start from; "
        f"left out, torch.hub's cache ($TORCH_HOME/hub/checkpoints/)", True)},
}

# Per model, its flags that name pretrained weights to read or download, and the value that
# reads nothing. A model whose weights all come from a checkpoint is built with these values.
# Models not listed (SPAN, the timm backbones ...) may still read their weight files or
# download theirs: those sources are not flags that can be switched off here.
WEIGHT_SOURCES = {
    "MaskCLIP": {"clip_pretrained": "none", "pixel_pretrained": "none"},
    "NFA_ViT": {flag: RANDOM for flag in NFA_VIT_FILES},
    "IML_ViT": {"vit_pretrain_path": None},
    "ObjectFormer": {"init_weight_path": None},
    "PSCC_Net": {"pretrain_path": RANDOM},
    "MVSSNet": {"resnet50_pretrain_weights": RANDOM},
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


def check_input_size(model_name, image_size, flags):
    """SparseViT splits its stage-3 and stage-4 maps (1/16 and 1/32 of the input) into
    32 / s and 16 / s blocks for each s of ``--s_blocks3`` and ``--s_blocks4``; an input that
    does not divide fails deep inside (512 px with the defaults, or 64 with
    ``--s_blocks3 16,16,16,16 --s_blocks4 16,16``)."""
    if model_name != "SparseViT":
        return
    for flag, stride, blocks in (("s_blocks3", 16, 32), ("s_blocks4", 32, 16)):
        for s in flags.get(flag) or ():
            if image_size % stride or (image_size // stride) % (blocks // int(s)):
                raise UserError(f"--image_size {image_size}: --model SparseViT with --{flag} "
                                f"{','.join(map(str, flags[flag]))} needs a multiple of {stride * (blocks // int(s))}",
                                hint="give such an --image_size (512 with the defaults), or larger --s_blocks3 / "
                                     "--s_blocks4 values (smaller blocks)")


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


def hub_cache_file(url):
    """Where torch.hub keeps (and looks for) the file of ``url``: $TORCH_HOME/hub/checkpoints/."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlparse(url).path))


def weight_file(model_name, flag, value):
    """A weight-file flag's value, with a flag of ``HUB_FILES`` left out read from torch.hub's
    cache when the file is there."""
    url = HUB_FILES.get(model_name, {}).get(flag)
    if value in (None, "") and url and os.path.isfile(hub_cache_file(url)):
        return hub_cache_file(url)
    return value


def check_weight_files(model_name, flags):
    """Each weight-file flag ``model_name`` reads names a file, or ``none`` (random weights)."""
    random_ok = model_name not in NO_RANDOM_START
    for flag, (what, required) in _needed(model_name, flags).items():
        value = weight_file(model_name, flag, flags.get(flag))
        if (_random(value) and random_ok) or (value in (None, "") and not required):
            continue
        instead = (f", or pass --{flag} {RANDOM} to start from random weights" if random_ok else
                   f" (BenCo's {model_name} reads every weight file: it cannot start from random weights)")
        if value in (None, "") or _random(value):
            url = HUB_FILES.get(model_name, {}).get(flag)
            where = f" (or download {url} into {os.path.dirname(hub_cache_file(url))})" if url else ""
            raise UserError(f"--model {model_name} needs --{flag}: {what}",
                            hint=f"download it and pass --{flag} PATH{where}{instead}")
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


def _check_resnet50_file(path, flag):
    """A ResNet-50 file for MVSS-Net holds the tensors of BenCo's ResNet-50 by name, which
    BenCo's ``strict=False`` load would otherwise skip without a word (the file of another
    network loads nothing)."""
    with torch.device("meta"):
        expected = set(ResNet(Bottleneck, [3, 4, 6, 3]).state_dict())
    found = set(read_weight_file(path, f"--{flag}"))
    foreign = sorted(found - expected)
    # torchvision's file predates BatchNorm's num_batches_tracked counters.
    missing = sorted(k for k in expected - found if not k.endswith("num_batches_tracked"))
    if foreign or missing:
        raise UserError(f"--{flag} {path}: not a ResNet-50 state dict with torchvision's names ("
                        + "; ".join(f"{what} {len(keys)} tensors, e.g. {keys[:3]}"
                                    for what, keys in (("missing", missing), ("foreign", foreign)) if keys) + ")",
                        hint=f"give torchvision's {os.path.basename(mvss_net_urls['resnet50'])}")


@contextlib.contextmanager
def _torch_hub_holding(url, path):
    """torch.hub's cache, for the block, a folder whose file for ``url`` is ``path`` (linked), or
    an empty state dict when ``path`` is None: a constructor that loads ``url`` with torch.hub
    (``strict=False``) reads that file, or nothing, and downloads nothing."""
    with tempfile.TemporaryDirectory(prefix="torch_home_") as home:
        cached = os.path.join(home, "hub", "checkpoints", os.path.basename(urllib.parse.urlparse(url).path))
        os.makedirs(os.path.dirname(cached))
        if path is None:
            torch.save({}, cached)
        else:
            os.symlink(os.path.abspath(path), cached)
        before = os.environ.get("TORCH_HOME")
        os.environ["TORCH_HOME"] = home  # torch.hub.get_dir() follows it (set_dir is never called here)
        try:
            yield
        finally:
            if before is None:
                del os.environ["TORCH_HOME"]
            else:
                os.environ["TORCH_HOME"] = before


def _mvss_net(model, flags, own, checkpoint):
    """MVSS-Net with both ResNet-50s from --resnet50_pretrain_weights (or torch.hub's cache), or
    from nothing when built for a ``checkpoint`` or with ``none``."""
    flag = "resnet50_pretrain_weights"
    path = weight_file("MVSSNet", flag, own.get(flag))
    if checkpoint is not None or _random(path):
        path = None
    else:
        _check_resnet50_file(path, flag)
    with _torch_hub_holding(HUB_FILES["MVSSNet"][flag], path):
        return model(**flags)


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
        if args.model == "PSCC_Net" and (checkpoint is not None or _random(combined.get("pretrain_path"))):
            combined["pretrain_path"] = ""  # BenCo's HRNet reads a path that is a file; its default None fails
        if args.model == "Trufor":
            with tempfile.TemporaryDirectory(prefix="trufor_weights_") as folder:
                return _trufor(model, combined, folder, checkpoint)
        if args.model == "MVSSNet":
            return _mvss_net(model, combined, own, checkpoint)
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
