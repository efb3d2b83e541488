"""NFA-ViT's weight files and the authors' checkpoints, read strictly into our module names.

Three files start a training run, one per flag (``WEIGHT_FILES``): Noiseprint++ (the DnCNN's
``layers`` state dict, the ``noiseprint.pth`` TruFor reads too) and the SegFormer MiT-b0 and
MiT-b2 backbones (NVlabs' key names: ``patch_embed1.proj.weight``, ``block1.0.attn.q.weight``
...). b0 runs on the one-channel noise: its 3-channel stem is averaged over the channels, as
the authors do. Every tensor of a file must find its place and every tensor of the model must
be in the file, except the ones listed in ``UNUSED_IN_FILES``; anything else raises
``WeightSourceError`` naming the flag and the keys. "none" starts from random weights.
"""
import os
import re
from typing import Dict, Iterable

import torch
import torch.nn as nn

from ..weight_files import WeightSourceError, read_weight_file

RANDOM = "none"
BRGEN_WEIGHTS = ("BR-Gen's release (the Baidu Netdisk link in github.com/clpbc/BR-Gen, "
                 "model_zoo/nfa_vit/README.md)")
WEIGHT_FILES = {
    "np_pretrain_weights": {
        "file": "noiseprint.pth", "part": "Noiseprint++ (the noise extractor)",
        "where": f"{BRGEN_WEIGHTS}, or the same file from BenCo's TruFor links (IMDLBenCo/model_zoo/trufor/README.md)"},
    "seg_b0_pretrain_weights": {
        "file": "segformer_b0_backbone_weights.pth", "part": "SegFormer MiT-b0 (the noise branch)",
        "where": BRGEN_WEIGHTS},
    "seg_b2_pretrain_weights": {
        "file": "segformer_b2_backbone_weights.pth", "part": "SegFormer MiT-b2 (the image branch)",
        "where": f"{BRGEN_WEIGHTS}, or NVlabs' ImageNet mit_b2.pth (github.com/NVlabs/SegFormer)"},
}
# Tensors a backbone file may hold that have no place here (patterns of NVlabs' key names).
UNUSED_IN_FILES = {
    # NVlabs' ImageNet files keep the classifier of their pre-training.
    "seg_b0_pretrain_weights": (r"head\.", r"block\d+\.\d+\.norm1\."),  # the noise block applies no norm1
    "seg_b2_pretrain_weights": (r"head\.",),
}
STEM = "patch_embed1.proj.weight"

_MIT_KEY = re.compile(r"^(patch_embed|block|norm)(\d)\.(.*)$")
_OUR_KEY = re.compile(r"^stages\.(\d)\.(patch_embed|blocks|norm)\.(.*)$")


def our_key(key: str) -> str:
    """NVlabs' MiT key -> ours: ``block2.1.mlp.dwconv.dwconv.weight`` -> ``stages.1.blocks.1.mlp.dwconv.weight``.
    Keys of another form are returned as they are."""
    match = _MIT_KEY.match(key)
    if not match:
        return key
    part, stage, rest = match.groups()
    part = {"block": "blocks"}.get(part, part)
    return f"stages.{int(stage) - 1}.{part}.{rest.replace('mlp.dwconv.dwconv.', 'mlp.dwconv.')}"


def mit_key(key: str) -> str:
    """Our backbone key -> NVlabs' MiT key (the inverse of ``our_key``)."""
    match = _OUR_KEY.match(key)
    if not match:
        return key
    stage, part, rest = match.groups()
    part = {"blocks": "block"}.get(part, part)
    return f"{part}{int(stage) + 1}.{rest.replace('mlp.dwconv.', 'mlp.dwconv.dwconv.')}"


def _shorten(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")


def _read(flag: str, source) -> Dict[str, torch.Tensor]:
    """The state dict of ``--flag source``, or None for "none"; a missing value or file is a WeightSourceError."""
    info = WEIGHT_FILES[flag]
    get = f"get {info['file']} from {info['where']}, or pass --{flag} {RANDOM} for random weights"
    if source is None or source == "":
        raise WeightSourceError(f"--{flag}: NFA_ViT needs {info['part']} weights; {get}")
    if source.lower() == RANDOM:
        return None
    if not os.path.isfile(source):
        raise WeightSourceError(f"--{flag} {source}: no such file; {get}")
    return read_weight_file(source, f"--{flag}")


def load_file_strictly(module: nn.Module, state: Dict[str, torch.Tensor], flag: str, source: str,
                       backbone: bool) -> None:
    """Load ``state`` (a file's tensors, by the file's names) into ``module``: every tensor of
    either side must meet one of the other's, except the file's ``UNUSED_IN_FILES``. A
    ``backbone`` file has NVlabs' MiT names; errors name the keys as the file does."""
    to_ours, to_file = (our_key, mit_key) if backbone else (str, str)
    unused = UNUSED_IN_FILES.get(flag, ())
    own = module.state_dict()
    mapped = {to_ours(key): (key, value) for key, value in state.items()}
    missing = [to_file(key) for key in own if key not in mapped]
    unexpected = [file_key for key, (file_key, _) in mapped.items()
                  if key not in own and not any(re.match(pattern, file_key) for pattern in unused)]
    misshapen = [f"{file_key} {tuple(value.shape)}, model {tuple(own[key].shape)}"
                 for key, (file_key, value) in mapped.items() if key in own and own[key].shape != value.shape]
    if missing or unexpected or misshapen:
        parts = [f"{what}: {_shorten(keys)}" for what, keys in (
            ("missing", missing), ("not used by the model", unexpected), ("of another shape", misshapen)) if keys]
        raise WeightSourceError(f"--{flag} {source}: the file does not fit {WEIGHT_FILES[flag]['part']} ("
                                + "; ".join(parts) + f"). Is it {WEIGHT_FILES[flag]['file']}?")
    module.load_state_dict({key: mapped[key][1] for key in own})


def read_pretrained(sources: Dict[str, str]) -> Dict[str, Dict[str, torch.Tensor]]:
    """flag -> value of the three weight-file flags => flag -> state dict, None for "none". Read
    before the model is built, so that a missing or unreadable file fails at once."""
    return {flag: _read(flag, sources[flag]) for flag in WEIGHT_FILES}


def load_pretrained(model: nn.Module, states: Dict[str, Dict[str, torch.Tensor]], sources: Dict[str, str]) -> None:
    """``read_pretrained``'s state dicts into ``model``'s noise extractor, noise branch and image branch."""
    noiseprint, noise_mit, image_mit = (states[flag] for flag in WEIGHT_FILES)
    if noiseprint is not None:
        load_file_strictly(model.noise_extractor.layers, noiseprint, "np_pretrain_weights",
                           sources["np_pretrain_weights"], backbone=False)
    if noise_mit is not None:
        if STEM in noise_mit:  # an RGB stem on the one-channel noise: its mean over the channels
            noise_mit = dict(noise_mit, **{STEM: noise_mit[STEM].mean(dim=1, keepdim=True)})
        load_file_strictly(model.noise_backbone, noise_mit, "seg_b0_pretrain_weights",
                           sources["seg_b0_pretrain_weights"], backbone=True)
    if image_mit is not None:
        load_file_strictly(model.image_backbone, image_mit, "seg_b2_pretrain_weights",
                           sources["seg_b2_pretrain_weights"], backbone=True)


# ---------------------------------------------------------------------------- the authors' checkpoints

# Tensors of the authors' model that have no place here: two decoder gammas its forward never
# reads, and the norm1 its noise blocks hold but never apply.
AUTHORS_UNUSED = (r"seg_decoder\.gamma[56]$", r"noise_backbone\.block\d+\.\d+\.norm1\.")
_AUTHORS_PARTS = {"seg_decoder.conv_last.": "seg_decoder.predict.",
                  "seg_decoder.norm.": "seg_decoder.norm.", "cls_decoder.2.": "cls_head.",
                  "noise_extractor.": "noise_extractor."}


def is_authors_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is the authors' NFA-ViT (their module names)."""
    return "seg_decoder.gamma1" in state_dict


def authors_checkpoint_filter(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The authors' NFA-ViT state dict under this model's key names (timm's ``checkpoint_filter_fn``).

    Their backbones keep NVlabs' MiT names; the decoder's four used gammas are stacked into one
    tensor. Keys it does not know are kept, for ``load_strictly`` to name.
    """
    out = {}
    for key, value in state_dict.items():
        if any(re.match(pattern, key) for pattern in AUTHORS_UNUSED):
            continue
        branch, _, rest = key.partition(".")
        if branch in ("noise_backbone", "image_backbone"):
            out[f"{branch}.{our_key(rest)}"] = value
        elif key.startswith("seg_decoder.conv_layer"):
            index, leaf = key[len("seg_decoder.conv_layer"):].split(".", 1)
            out[f"seg_decoder.lateral.{int(index) - 1}.{leaf}"] = value
        elif not re.match(r"seg_decoder\.gamma\d$", key):
            prefix = next((p for p in _AUTHORS_PARTS if key.startswith(p)), None)
            out[_AUTHORS_PARTS[prefix] + key[len(prefix):] if prefix else key] = value
    gammas = [state_dict.get(f"seg_decoder.gamma{index}") for index in range(1, 5)]
    if all(gamma is not None for gamma in gammas):
        out["seg_decoder.gammas"] = torch.stack(gammas)
    return out
