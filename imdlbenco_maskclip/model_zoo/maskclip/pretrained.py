"""Where MaskCLIP's weights come from, and reading them in the formats they are published in.

A weight source is ``"default"`` (the setting's own, from ``DEFAULT_SOURCES``), ``"none"``
(random init), a local file, or a hub tag (an open_clip tag for CLIP, a timm ``model.tag``
for the pixel encoder). Files are read strictly: every tensor must find its place, except
the ones the format is known to carry for nothing (``PIXEL_WEIGHTS[...]["unused"]``,
``OPENAI_ARCHIVE_EXTRAS``). A source that cannot be used raises ``WeightSourceError`` naming
the flag, the file or tag, and where to get the weights: a model is never randomly
initialised by accident.
"""
import copy
import os
from typing import Dict, Iterable, List, Tuple

import torch
import torch.nn as nn

from ..weight_files import WeightSourceError, read_weight_file

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Each setting's weights unless --clip_pretrained / --pixel_pretrained say otherwise.
DEFAULT_SOURCES = {
    "vitl14_mae": {"clip": "openai", "pixel": "mae_vit_base"},
    "vitb32_mae": {"clip": "openai", "pixel": "mae_vit_base"},
    "openclip_vitl14_mae": {"clip": "laion2b_s32b_b82k", "pixel": "mae_vit_base"},
    "vitl14_sam": {"clip": "openai", "pixel": "sam_vit_base"},
    "vitl14_dinov2": {"clip": "openai", "pixel": "dinov2_vit_base"},
}

PIXEL_WEIGHTS = {
    "mae_vit_base": {
        "file": "mae_pretrain_vit_base.pth",
        "url": "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
        "timm_tag": "vit_base_patch16_224.mae",
        "licence": "CC-BY-NC-4.0",
    },
    "sam_vit_base": {
        "file": "sam_vit_b_01ec64.pth",
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "timm_tag": "samvit_base_patch16.sa1b",
        "licence": "Apache-2.0",
    },
    "dinov2_vit_base": {
        "timm_tag": "vit_base_patch14_dinov2.lvd142m",
        "licence": "Apache-2.0",
    },
}

# What the weight files of each pixel-encoder type carry that the encoder does not use, and
# what they may lack, by key name (a name covers the keys below it and the keys ending in it).
FILE_LAYOUTS = {
    "windowed_vit": {
        # The last block feeds the decoder, as in IML-ViT: MAE's class token and final norm,
        # SAM's neck and its prompt and mask decoders have no place.
        "unused": ("cls_token", "norm", "neck", "prompt_encoder", "mask_decoder"),
        # IML-ViT's relative positions are new to MAE and start at zero.
        "not_in_file": ("rel_pos_h", "rel_pos_w"),
    },
    "timm_vit": {"unused": ("norm",), "not_in_file": ()},
}

# OpenAI's TorchScript archives (ViT-L-14.pt) keep three model constants among the tensors.
OPENAI_ARCHIVE_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def default_sources(setting_name: str) -> Dict[str, str]:
    """``{"clip": tag or "none", "pixel": PIXEL_WEIGHTS key or "none"}`` for a setting."""
    return DEFAULT_SOURCES.get(setting_name, {"clip": "none", "pixel": "none"})


def _looks_like_file(source: str) -> bool:
    return os.path.exists(source) or os.sep in source or source.endswith(WEIGHT_FILE_SUFFIXES)


def _named_by(key: str, names: Iterable[str]) -> bool:
    """Whether ``key`` is one of ``names``, lies below one (``norm`` -> ``norm.weight``) or ends in one."""
    return any(key == name or key.startswith(name + ".") or key.endswith("." + name) for name in names)


def _shorten(keys: List[str]) -> str:
    return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")


def _check_accounted(flag: str, source: str, missing: List[str], unexpected: List[str]) -> None:
    if missing or unexpected:
        parts = ([f"missing {len(missing)} tensors: {_shorten(missing)}"] if missing else []) + \
                ([f"{len(unexpected)} tensors it does not use: {_shorten(unexpected)}"] if unexpected else [])
        raise WeightSourceError(f"{flag}: weights {source!r} do not fit this setting ({'; '.join(parts)}). "
                                f"Is it the file for this --model_setting?")


# ---------------------------------------------------------------------------- CLIP


def build_clip(clip_spec, source: str, setting_name: str) -> Tuple[nn.Module, Tuple, Tuple]:
    """The setting's open_clip CLIP with weights from ``source``, and the input mean and std of those weights.

    ``clip_spec``: an open_clip model name, or an open_clip config dict.
    """
    import open_clip

    model_name = clip_spec if isinstance(clip_spec, str) else None
    config = copy.deepcopy(open_clip.get_model_config(model_name) if model_name else clip_spec)
    default_tag = default_sources(setting_name)["clip"]
    source = default_tag if source == "default" else source
    # A file or random init keeps the statistics of the weights the setting is made for.
    stats_tag = default_tag if source == "none" or _looks_like_file(source) else source
    mean, std = OPENAI_MEAN, OPENAI_STD
    quick_gelu = config.pop("quick_gelu", False)
    if model_name and stats_tag != "none":
        pretrained_cfg = _open_clip_pretrained_cfg(model_name, stats_tag)
        mean, std = pretrained_cfg.get("mean", mean), pretrained_cfg.get("std", std)
        # OpenAI weights were trained with QuickGELU; building GELU would load them silently wrong.
        quick_gelu = quick_gelu or pretrained_cfg.get("quick_gelu", False)

    model = open_clip.CLIP(**config, quick_gelu=quick_gelu)
    if source == "none":
        return model, tuple(mean), tuple(std)
    if _looks_like_file(source):
        if not os.path.isfile(source):
            raise WeightSourceError(
                f"--clip_pretrained: weight file {source!r} does not exist. Pass OpenAI's archive "
                f"(e.g. ViT-L-14.pt) or a CLIP state dict with OpenAI's key names, an open_clip tag, or 'none'.")
        path = source
    else:
        path = _download_open_clip(model_name, source, _open_clip_pretrained_cfg(model_name, source))
    load_clip_weights(model, read_weight_file(path, "--clip_pretrained"), source)
    return model, tuple(mean), tuple(std)


def load_clip_weights(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Load an OpenAI-format CLIP state dict strictly (open_clip's CLIP uses OpenAI's key names)."""
    state_dict = {key: value for key, value in state_dict.items() if key not in OPENAI_ARCHIVE_EXTRAS}
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shapes that do not fit
        raise WeightSourceError(f"--clip_pretrained: weights {source!r} do not fit the setting's CLIP: "
                                f"{str(err)[:1500]}") from err
    _check_accounted("--clip_pretrained", source, list(result.missing_keys), list(result.unexpected_keys))
    print(f"[MaskCLIP] CLIP weights loaded from {source}")


def _open_clip_pretrained_cfg(model_name: str, tag: str) -> Dict:
    import open_clip

    if model_name is None:
        raise WeightSourceError(
            f"--clip_pretrained: {tag!r} is not a file, and this setting's CLIP is an architecture written "
            f"out in its JSON, which has no hub tags. Pass a weight file or 'none'.")
    pretrained_cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not pretrained_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name))
        raise WeightSourceError(
            f"--clip_pretrained: {tag!r} is neither an existing file nor an open_clip tag of {model_name} "
            f"(tags: {tags}).")
    return pretrained_cfg


def _download_open_clip(model_name: str, tag: str, pretrained_cfg: Dict) -> str:
    import open_clip

    where = pretrained_cfg.get("hf_hub") or pretrained_cfg.get("url")
    try:
        return open_clip.download_pretrained(pretrained_cfg)
    except OSError as err:
        raise WeightSourceError(
            f"--clip_pretrained: cannot fetch open_clip weights {model_name} / {tag!r} from {where} "
            f"(offline, or not in the local cache): {str(err).rstrip('.')}. Run once with hub access "
            f"(HF_HUB_OFFLINE unset) to cache them, or download them and pass the file path.") from err


# ---------------------------------------------------------------------------- pixel encoder


def load_pixel_weights(encoder: nn.Module, setting: Dict, source: str) -> None:
    """Load ``source`` into the setting's pixel encoder (nothing for ``none``, or ``default`` of a
    setting without published weights)."""
    weights = PIXEL_WEIGHTS.get(default_sources(setting.get("name", ""))["pixel"], {})
    layout = FILE_LAYOUTS[setting["pixel_encoder"]["type"]]
    if source == "default":
        source = weights.get("timm_tag", "none")
    if source == "none":
        return
    if _looks_like_file(source):
        if not os.path.isfile(source):
            raise WeightSourceError(
                f"--pixel_pretrained: weight file {source!r} does not exist. {_where_to_get(weights)}")
        state_dict = read_weight_file(source, "--pixel_pretrained")
    else:
        state_dict = _download_timm(source, weights)
    try:
        missing, unexpected = encoder.load_weights(state_dict)
    except RuntimeError as err:
        raise WeightSourceError(f"--pixel_pretrained: weights {source!r} do not fit the setting's pixel encoder: "
                                f"{str(err)[:1500]}") from err
    _check_accounted("--pixel_pretrained", source,
                     [key for key in missing if not _named_by(key, layout["not_in_file"])],
                     [key for key in unexpected if not _named_by(key, layout["unused"])])
    print(f"[MaskCLIP] pixel encoder weights loaded from {source}")


def _where_to_get(weights: Dict) -> str:
    hints = []
    if weights.get("url"):
        hints.append(f"download {weights['file']} from {weights['url']} and pass its path")
    if weights.get("timm_tag"):
        hints.append(f"use the timm tag {weights['timm_tag']!r} (needs hub access once)")
    hints.append("pass 'none' for random init")
    return "Get the weights: " + "; or ".join(hints) + "."


def _download_timm(tag: str, weights: Dict) -> Dict[str, torch.Tensor]:
    import timm

    if timm.models.get_pretrained_cfg(tag) is None:
        raise WeightSourceError(
            f"--pixel_pretrained: {tag!r} is neither an existing file nor a timm pretrained tag "
            f"(like 'vit_base_patch16_224.mae'). {_where_to_get(weights)}")
    try:
        return timm.create_model(tag, pretrained=True, num_classes=0).state_dict()
    except OSError as err:
        raise WeightSourceError(
            f"--pixel_pretrained: cannot fetch timm weights {tag!r} (offline, or not in the local "
            f"Hugging Face cache): {str(err).rstrip('.')}. {_where_to_get(weights)}") from err
