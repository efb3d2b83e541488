"""Trainable pixel encoders for MaskCLIP, built from timm.

Both encoders expose the same small interface so MaskCLIP can run their blocks one by one
and inject CLIP features between them:

* ``embed(image [B, 3, H, W]) -> (tokens, (h, w))``: tokens in the layout the blocks take;
* ``blocks``: the transformer blocks, applied in order;
* ``to_grid(tokens, (h, w)) -> [B, h, w, C]`` and ``from_grid(tokens, grid) -> tokens``;
* ``load_weights(state_dict) -> (missing, unexpected)`` for MAE, SAM, DINOv2 or timm checkpoints.
"""
import math
from functools import partial
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pos_embed_as_grid(pos_embed: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Absolute positions [1, prefix + n*n, C] or [1, h, w, C] -> [1, grid_h, grid_w, C]."""
    if pos_embed.ndim == 3:
        side = math.isqrt(pos_embed.shape[1])
        num_prefix = pos_embed.shape[1] - side * side
        pos_embed = pos_embed[:, num_prefix:].reshape(1, side, side, -1)
    if tuple(pos_embed.shape[1:3]) != tuple(grid):
        pos_embed = F.interpolate(pos_embed.permute(0, 3, 1, 2).float(), size=tuple(grid),
                                  mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    return pos_embed


def _resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Relative position table [L, d] -> [length, d] by linear interpolation."""
    if rel_pos.shape[0] == length:
        return rel_pos
    resized = F.interpolate(rel_pos.t().unsqueeze(0).float(), size=length, mode="linear", align_corners=False)
    return resized.squeeze(0).t()


class WindowedViT(nn.Module):
    """IML-ViT / SAM style ViT (timm ``VisionTransformerSAM`` blocks).

    Windowed attention except in ``global_blocks``, decomposed relative positions in every
    block (timm feeds them to ``F.scaled_dot_product_attention`` as the attention mask).
    image [B, 3, H, W] -> tokens [B, H/p, W/p, C]. No final norm or neck: the decoder
    takes the last block's output, as in IML-ViT.
    """

    def __init__(self, image_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 window_size: int, global_blocks: List[int], norm_eps: float, drop_path_rate: float):
        super().__init__()
        from timm.models.vision_transformer_sam import VisionTransformerSAM

        vit = VisionTransformerSAM(
            img_size=image_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, window_size=window_size, global_attn_indexes=tuple(global_blocks),
            use_rel_pos=True, use_abs_pos=True, norm_layer=partial(nn.LayerNorm, eps=norm_eps),
            drop_path_rate=drop_path_rate, num_classes=0, neck_chans=0)
        # Keep only what is used, under the key names MAE, SAM and timm checkpoints share.
        self.patch_embed = vit.patch_embed
        self.pos_embed = vit.pos_embed
        self.blocks = vit.blocks
        self.embed_dim = embed_dim
        self.patch_size = patch_size

    def embed(self, image: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        from timm.layers import resample_abs_pos_embed_nhwc

        tokens = self.patch_embed(image)
        tokens = tokens + resample_abs_pos_embed_nhwc(self.pos_embed, tokens.shape[1:3])
        return tokens, tuple(tokens.shape[1:3])

    def to_grid(self, tokens: torch.Tensor, grid_size: Tuple[int, int]) -> torch.Tensor:
        return tokens

    def from_grid(self, tokens: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return grid

    def load_weights(self, state_dict: Dict[str, torch.Tensor]) -> Tuple[List[str], List[str]]:
        """Load MAE / SAM / timm weights: class token dropped, positions resized to this grid."""
        own = self.state_dict()
        adapted = {}
        for key, value in state_dict.items():
            # Original SAM checkpoints prefix the image encoder and name the MLP differently.
            key = key.removeprefix("image_encoder.").replace("mlp.lin", "mlp.fc")
            if key == "pos_embed":
                value = _pos_embed_as_grid(value, own["pos_embed"].shape[1:3])
            elif key.endswith(("rel_pos_h", "rel_pos_w")) and key in own:
                value = _resize_rel_pos(value, own[key].shape[0])
            adapted[key] = value
        result = self.load_state_dict(adapted, strict=False)
        return list(result.missing_keys), list(result.unexpected_keys)


class PlainViT(nn.Module):
    """A timm ``VisionTransformer`` with global attention (DINOv2), any input size.

    image [B, 3, H, W] -> tokens [B, prefix + h*w, C] with h = ceil(H / p) (input padded).
    """

    def __init__(self, timm_model: str, drop_path_rate: float):
        super().__init__()
        import timm

        self.vit = timm.create_model(timm_model, pretrained=False, num_classes=0, dynamic_img_size=True,
                                     dynamic_img_pad=True, drop_path_rate=drop_path_rate)
        # The decoder takes the last block's output, as for the windowed encoder.
        self.vit.norm = nn.Identity()
        self.embed_dim = self.vit.embed_dim
        self.patch_size = self.vit.patch_embed.patch_size[0]

    @property
    def blocks(self) -> nn.Sequential:
        return self.vit.blocks

    def embed(self, image: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        tokens = self.vit.patch_embed(image)
        grid_size = tuple(tokens.shape[1:3])
        tokens = self.vit.norm_pre(self.vit.patch_drop(self.vit._pos_embed(tokens)))
        return tokens, grid_size

    def to_grid(self, tokens: torch.Tensor, grid_size: Tuple[int, int]) -> torch.Tensor:
        return tokens[:, self.vit.num_prefix_tokens:].unflatten(1, grid_size)

    def from_grid(self, tokens: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return torch.cat([tokens[:, :self.vit.num_prefix_tokens], grid.flatten(1, 2)], dim=1)

    def load_weights(self, state_dict: Dict[str, torch.Tensor]) -> Tuple[List[str], List[str]]:
        from timm.layers import resample_abs_pos_embed

        state_dict = dict(state_dict)
        own_pos = self.vit.pos_embed
        if "pos_embed" in state_dict and state_dict["pos_embed"].shape != own_pos.shape:
            state_dict["pos_embed"] = resample_abs_pos_embed(
                state_dict["pos_embed"], new_size=self.vit.patch_embed.grid_size,
                num_prefix_tokens=self.vit.num_prefix_tokens)
        result = self.vit.load_state_dict(state_dict, strict=False)
        return list(result.missing_keys), list(result.unexpected_keys)


def build_pixel_encoder(config: Dict, image_size: int) -> nn.Module:
    """The pixel encoder a setting's ``pixel_encoder`` entry describes, randomly initialised."""
    architecture = {key: value for key, value in config.items() if key not in ("type", "pretrained")}
    if config["type"] == "windowed_vit":
        return WindowedViT(image_size=image_size, **architecture)
    if config["type"] == "timm_vit":
        return PlainViT(**architecture)
    raise ValueError(f"unknown pixel encoder type {config['type']!r} in the setting (windowed_vit, timm_vit)")
