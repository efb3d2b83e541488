"""Where MaskCLIP's weights come from, and loading them.

A weight source is ``"default"`` (the setting's own), ``"none"`` (random init), a local
file, or a hub tag (an open_clip tag for CLIP, a timm ``model.tag`` for the pixel
encoder). A source that cannot be used raises ``WeightSourceError`` naming the flag, the
file or tag, and where to get the weights: a model is never randomly initialised by
accident.
"""
import copy
import os
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from ...errors import UserError

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
# Loading a pixel checkpoint leaves these new: IML-ViT adds relative positions to MAE.
NEW_PIXEL_KEYS = ("rel_pos_h", "rel_pos_w")


class WeightSourceError(UserError):
    """A weight source that cannot be used; the message names the flag and the fix."""


def _looks_like_file(source: str) -> bool:
    return os.path.exists(source) or os.sep in source or source.endswith(WEIGHT_FILE_SUFFIXES)


def _report(what: str, source: str, missing: Sequence[str], unexpected: Sequence[str]) -> None:
    def shorten(keys):
        return ", ".join(list(keys)[:6]) + (" ..." if len(keys) > 6 else "")

    line = f"[MaskCLIP] {what} weights loaded from {source}"
    if missing:
        line += f"; {len(missing)} missing keys (left at init): {shorten(missing)}"
    if unexpected:
        line += f"; {len(unexpected)} unused keys: {shorten(unexpected)}"
    print(line)


def _read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A plain state dict from a file: safetensors, or torch with ``model``/``state_dict`` wrapping."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


# ---------------------------------------------------------------------------- CLIP


def build_clip(clip_setting: Dict, source: str) -> Tuple[nn.Module, List[float], List[float]]:
    """The setting's open_clip CLIP with weights from ``source``, and its input mean and std."""
    import open_clip

    model_name = clip_setting.get("model")
    config = copy.deepcopy(clip_setting["config"] if model_name is None else open_clip.get_model_config(model_name))
    source = clip_setting["pretrained"] if source == "default" else source
    mean, std = clip_setting["mean"], clip_setting["std"]
    quick_gelu = config.get("quick_gelu", False)

    checkpoint = None
    if source == "none":
        pass
    elif _looks_like_file(source):
        if not os.path.isfile(source):
            raise WeightSourceError(
                f"--clip_pretrained: weight file {source!r} does not exist. Pass an existing open_clip "
                f"checkpoint or state dict for {model_name or 'this setting'}, an open_clip tag, or 'none'.")
        checkpoint = source
    else:
        pretrained_cfg = _open_clip_pretrained_cfg(model_name, source)
        # OpenAI weights were trained with QuickGELU; building GELU would load them silently wrong.
        quick_gelu = quick_gelu or pretrained_cfg.get("quick_gelu", False)
        mean, std = pretrained_cfg.get("mean", mean), pretrained_cfg.get("std", std)
        checkpoint = _download_open_clip(model_name, source, pretrained_cfg)

    model = open_clip.CLIP(embed_dim=config["embed_dim"], vision_cfg=config["vision_cfg"],
                           text_cfg=config["text_cfg"], quick_gelu=quick_gelu)
    if checkpoint is not None:
        _load_clip_checkpoint(model, checkpoint, source, model_name)
    return model, list(mean), list(std)


def _open_clip_pretrained_cfg(model_name: str, tag: str) -> Dict:
    import open_clip

    if model_name is None:
        raise WeightSourceError(
            f"--clip_pretrained: {tag!r} is not a file, and this setting's CLIP is built from a config "
            f"in its JSON, which has no hub tags. Pass a weight file or 'none'.")
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
            f"(offline, or not in the local cache): {str(err).rstrip('.')}. Run once with hub access (HF_HUB_OFFLINE unset) "
            f"to cache them, or download them and pass the file path.") from err


def _load_clip_checkpoint(model: nn.Module, path: str, source: str, model_name: str) -> None:
    import open_clip

    try:
        result = open_clip.load_checkpoint(model, path, strict=False)
    except RuntimeError as err:
        raise WeightSourceError(
            f"--clip_pretrained: weights {source!r} do not fit the setting's CLIP "
            f"({model_name or 'config from the setting JSON'}): {err}") from err
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if len(missing) == len(model.state_dict()):
        raise WeightSourceError(f"--clip_pretrained: {source!r} holds no CLIP weights (no key matched).")
    _report("CLIP", source, missing, unexpected)


# ---------------------------------------------------------------------------- pixel encoder


def load_pixel_weights(encoder: nn.Module, pixel_setting: Dict, source: str) -> None:
    """Load ``source`` into the pixel encoder (no-op for ``none``, and ``default`` without a source)."""
    sources = pixel_setting.get("pretrained", {})
    if source == "default":
        source = sources.get("timm_tag", "none")
    if source == "none":
        return
    if _looks_like_file(source):
        if not os.path.isfile(source):
            raise WeightSourceError(
                f"--pixel_pretrained: weight file {source!r} does not exist. {_where_to_get(sources)}")
        state_dict = _read_state_dict(source)
    else:
        state_dict = _download_timm(source, sources)
    try:
        missing, unexpected = encoder.load_weights(state_dict)
    except RuntimeError as err:
        raise WeightSourceError(
            f"--pixel_pretrained: weights {source!r} do not fit the setting's pixel encoder: {err}") from err
    if len(missing) == len(encoder.state_dict()):
        raise WeightSourceError(f"--pixel_pretrained: {source!r} holds no pixel-encoder weights (no key matched).")
    unexplained = [key for key in missing if not key.endswith(NEW_PIXEL_KEYS)]
    if unexplained:
        print(f"[MaskCLIP] warning: --pixel_pretrained {source!r} lacks {len(unexplained)} encoder keys, "
              f"e.g. {unexplained[:4]}; they keep their random init")
    _report("pixel encoder", source, missing, unexpected)


def _where_to_get(sources: Dict) -> str:
    hints = []
    if sources.get("url"):
        hints.append(f"download {sources.get('file', 'the checkpoint')} from {sources['url']} and pass its path")
    if sources.get("timm_tag"):
        hints.append(f"use the timm tag {sources['timm_tag']!r} (needs hub access once)")
    hints.append("pass 'none' for random init")
    return "Get the weights: " + "; or ".join(hints) + "."


def _download_timm(tag: str, sources: Dict) -> Dict[str, torch.Tensor]:
    import timm

    if timm.models.get_pretrained_cfg(tag) is None:
        raise WeightSourceError(
            f"--pixel_pretrained: {tag!r} is neither an existing file nor a timm pretrained tag "
            f"(like 'vit_base_patch16_224.mae'). {_where_to_get(sources)}")
    try:
        return timm.create_model(tag, pretrained=True, num_classes=0).state_dict()
    except OSError as err:
        raise WeightSourceError(
            f"--pixel_pretrained: cannot fetch timm weights {tag!r} (offline, or not in the local "
            f"Hugging Face cache): {str(err).rstrip('.')}. {_where_to_get(sources)}") from err
