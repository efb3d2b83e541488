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
from timm.models.vision_transformer_sam import Block, get_rel_pos, VisionTransformerSAM


def resample_pos_embed(pos_embed: torch.Tensor, num_prefix: int, grid: Sequence[int]) -> torch.Tensor:
    """Absolute positions [1, num_prefix + n*n, C] -> [1, grid_h, grid_w, C], prefix dropped.

    Plain bicubic (``align_corners=False``, no antialiasing) as in IML-ViT and the authors'
    code; timm's resampler antialiases, which changes the kernel even when upsampling.
    """
    table = pos_embed[:, num_prefix:]
    side = math.isqrt(table.shape[1])
    table = table.reshape(1, side, side, -1)
    if (side, side) == tuple(grid):
        return table
    table = F.interpolate(table.permute(0, 3, 1, 2), size=tuple(grid), mode="bicubic", align_corners=False)
    return table.permute(0, 2, 3, 1)


def _resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Relative position table [L, d] -> [length, d] by linear interpolation."""
    if rel_pos.shape[0] == length:
        return rel_pos
    resized = F.interpolate(rel_pos.t().unsqueeze(0).float(), size=length, mode="linear", align_corners=False)
    return resized.squeeze(0).t()


class RelPosBlock(Block):
    """timm's SAM ``Block`` with the relative-position bias folded into the attention inputs.

    timm adds a materialised bias [B * windows * heads, n, n] to the attention scores (kept
    for backward in training) and runs q/k/v on the padded windows. This block computes
    the same function (same parameters, same key names) more cheaply:

    * q/k/v run on the unpadded tokens; padding tokens get what timm gives a zero-padded
      token after ``norm1``: the q/k/v bias;
    * bias[i, j] = q_i . Rh[i_h - j_h] + q_i . Rw[i_w - j_w] is an inner product of
      q'_i = [scale * q_i, q_i . Rh[i_h - :], q_i . Rw[i_w - :]] with
      k'_j = [k_j, onehot(j_h), onehot(j_w)], so one unmasked SDPA call computes it; v is
      zero-padded to the same width because fused SDPA kernels want equal head widths.
    """

    def _attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """q/k/v of windows [N, gh, gw, 3 * C] -> attention output [N, gh, gw, C]."""
        attn = self.attn
        windows, grid_h, grid_w, width = qkv.shape
        heads, head_dim = attn.num_heads, width // 3 // attn.num_heads
        tokens = grid_h * grid_w
        q, k, v = qkv.reshape(windows, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        q_grid = q.reshape(windows, heads, grid_h, grid_w, head_dim)
        rel_h = torch.einsum("nahwc,hkc->nahwk", q_grid, get_rel_pos(grid_h, grid_h, attn.rel_pos_h))
        rel_w = torch.einsum("nahwc,wkc->nahwk", q_grid, get_rel_pos(grid_w, grid_w, attn.rel_pos_w))
        onehot_h = torch.eye(grid_h, dtype=q.dtype, device=q.device).repeat_interleave(grid_w, dim=0)
        onehot_w = torch.eye(grid_w, dtype=q.dtype, device=q.device).repeat(grid_h, 1)
        q = torch.cat([q * attn.scale, rel_h.reshape(windows, heads, tokens, grid_h),
                       rel_w.reshape(windows, heads, tokens, grid_w)], dim=-1)
        k = torch.cat([k, onehot_h.expand(windows, heads, -1, -1), onehot_w.expand(windows, heads, -1, -1)],
                      dim=-1)
        v = F.pad(v, (0, grid_h + grid_w))
        dropout = attn.attn_drop.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=1.0)[..., :head_dim]
        return out.transpose(1, 2).reshape(windows, grid_h, grid_w, width // 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """tokens [B, H, W, C] -> [B, H, W, C]."""
        batch, height, width, channels = x.shape
        qkv = self.attn.qkv(self.norm1(x))
        size = self.window_size
        if size > 0:
            padded_h, padded_w = -(-height // size) * size, -(-width // size) * size
            if (padded_h, padded_w) != (height, width):
                padded = self.attn.qkv.bias.to(qkv.dtype).expand(batch, padded_h, padded_w, -1).clone()
                padded[:, :height, :width] = qkv
                qkv = padded
            qkv = qkv.view(batch, padded_h // size, size, padded_w // size, size, -1).transpose(2, 3)
            out = self._attention(qkv.reshape(-1, size, size, qkv.shape[-1]))
            out = out.view(batch, padded_h // size, padded_w // size, size, size, channels).transpose(2, 3)
            out = out.reshape(batch, padded_h, padded_w, channels)[:, :height, :width]
        else:
            out = self._attention(qkv)
        x = x + self.drop_path1(self.ls1(self.attn.proj_drop(self.attn.proj(out))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class WindowedViT(nn.Module):
    """IML-ViT / SAM style ViT (timm ``VisionTransformerSAM`` blocks).

    Windowed attention except in ``global_blocks``, decomposed relative positions in every
    block, folded into one SDPA call per block (``RelPosBlock``). The absolute positions keep
    the pretrained table (``pos_embed_grid`` squared, after ``pos_embed_prefix`` class-token
    rows: MAE's 1 + 14 x 14) and are resampled to the input grid on every forward, as IML-ViT
    does, so the trained parameter is the same whatever the input size.
    image [B, 3, H, W] -> tokens [B, H/p, W/p, C]. No final norm or neck: the decoder takes
    the last block's output, as in IML-ViT.
    """

    def __init__(self, image_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 window_size: int, global_blocks: List[int], pos_embed_grid: int, pos_embed_prefix: int,
                 norm_eps: float, drop_path_rate: float):
        super().__init__()
        vit = VisionTransformerSAM(
            img_size=image_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, window_size=window_size, global_attn_indexes=tuple(global_blocks),
            use_rel_pos=True, use_abs_pos=False, norm_layer=partial(nn.LayerNorm, eps=norm_eps),
            drop_path_rate=drop_path_rate, num_classes=0, neck_chans=0, block_fn=RelPosBlock)
        # Keep only what is used, under the key names MAE, SAM and timm checkpoints share.
        self.patch_embed = vit.patch_embed
        self.blocks = vit.blocks
        self.num_prefix = pos_embed_prefix
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_embed_prefix + pos_embed_grid ** 2, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.embed_dim = embed_dim
        self.patch_size = patch_size

    def embed(self, image: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        tokens = self.patch_embed(image)
        grid_size = tuple(tokens.shape[1:3])
        return tokens + resample_pos_embed(self.pos_embed, self.num_prefix, grid_size), grid_size

    def to_grid(self, tokens: torch.Tensor, grid_size: Tuple[int, int]) -> torch.Tensor:
        return tokens

    def from_grid(self, tokens: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return grid

    def load_weights(self, state_dict: Dict[str, torch.Tensor]) -> Tuple[List[str], List[str]]:
        """Load MAE / SAM / timm weights -> (missing, unexpected) keys.

        SAM's [1, h, w, C] position table is flattened to this layout; relative-position tables
        of another length (SAM's global blocks at 1024 px) are resized.
        """
        own = self.state_dict()
        adapted = {}
        for key, value in state_dict.items():
            # Original SAM checkpoints prefix the image encoder and name the MLP differently.
            key = key.removeprefix("image_encoder.").replace("mlp.lin", "mlp.fc")
            if key == "pos_embed" and value.ndim == 4:
                value = value.flatten(1, 2)
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
    architecture = {key: value for key, value in config.items() if key != "type"}
    if config["type"] == "windowed_vit":
        return WindowedViT(image_size=image_size, **architecture)
    if config["type"] == "timm_vit":
        return PlainViT(**architecture)
    raise ValueError(f"unknown pixel encoder type {config['type']!r} in the setting (windowed_vit, timm_vit)")
