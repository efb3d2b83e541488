"""NFA-ViT (BR-Gen, AAAI 2026) for IMDL-BenCo: localisation and detection of local AI edits.

By default this computes what the authors' release computes (github.com/clpbc/BR-Gen, commit
4ced0e0): from the same weights and pixels, the same masks, logits, losses and gradients.

* Noise extractor: Noiseprint++ (TruFor's DnCNN, BenCo's class), frozen -> noise [B, 1, H, W];
* noise branch: SegFormer MiT-b0 on the noise. The last attention of each stage picks, per
  query, the 25% of keys it attends to least: the noise-guided mask of that stage. Its blocks
  are the authors': no LayerNorm before attention, and the attention output is its own residual;
* image branch: SegFormer MiT-b2 on the image. Every block attends only to keys of its
  query's sparse group (fixed sparse attention, 2 x 2 groups of windows), except the last of
  each stage, which attends only to the keys the noise-guided mask picked;
* weighted decoder: each stage map projected to 512 channels, resized to stage 1's grid,
  scaled per channel by a learned gamma, summed, LayerNorm, 1x1 conv -> mask logits;
* detection head: stage 4 map, averaged, linear -> one logit.

No gradient reaches the noise side in theirs (the masks are detached, the noise branch's
features are never read): here it is frozen and runs without autograd.

Shapes: B batch, H x W input, (h, w) a stage's token grid, N = h * w queries, Nk keys (the
grid reduced ``sr_ratio`` times), C a stage's width.
"""
from functools import partial
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models.pvt_v2 import Attention, MlpWithDepthwiseConv, OverlapPatchEmbed

from IMDLBenCo.model_zoo.trufor.DnCNN import DnCNN
from IMDLBenCo.registry import MODELS

from .pretrained import load_pretrained, read_pretrained

# SegFormer MiT-b0 (noise) and MiT-b2 (image); both share heads and reduction ratios, so that
# a noise-guided mask [B, heads, N, Nk] fits the image stage it guides.
NOISE_WIDTHS, NOISE_DEPTHS = (32, 64, 160, 256), (2, 2, 2, 2)
IMAGE_WIDTHS, IMAGE_DEPTHS = (64, 128, 320, 512), (3, 4, 6, 3)
NUM_HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
MLP_RATIO = 4
DROP_PATH_RATE = 0.1
TOPK_RATIO = 0.25  # the paper's Top-k: each query keeps the 25% of keys it attends to least
SPARSE_GROUPS = 2  # fixed sparse attention: 2 x 2 groups of windows
DECODER_WIDTH = 512
# Stage 1's keys are the 4x grid reduced 8 times: from 64 px on, every stage has at least 2 x 2
# keys, so every sparse group of queries has keys to attend to.
MIN_IMAGE_SIDE = 64
# SegFormer's blocks use the tanh approximation of GELU (the authors' MiT code writes it out).
TANH_GELU = partial(nn.GELU, approximate="tanh")


class SpatialReductionAttention(Attention):
    """SegFormer's efficient self-attention (timm's PVTv2 ``Attention``): keys and values from
    the token grid reduced ``sr_ratio`` times, with an optional mask of allowed keys.

    tokens [B, N, C], grid (h, w), mask bool, broadcastable to [B, heads, N, Nk] (True: may
    attend) -> [B, N, C].
    """

    def _heads(self, tokens: torch.Tensor, grid: Tuple[int, int]):
        """tokens [B, N, C] -> q [B, heads, N, d], k and v [B, heads, Nk, d]."""
        batch, length, channels = tokens.shape
        q = self.q(tokens).reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr is not None:
            grid_map = tokens.transpose(1, 2).reshape(batch, channels, *grid)
            tokens = self.norm(self.sr(grid_map).flatten(2).transpose(1, 2))
        k, v = self.kv(tokens).reshape(batch, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _merge(self, attended: torch.Tensor) -> torch.Tensor:
        """[B, heads, N, d] -> projected [B, N, C]."""
        batch, _, length, _ = attended.shape
        return self.proj_drop(self.proj(attended.transpose(1, 2).reshape(batch, length, -1)))

    def forward(self, tokens: torch.Tensor, grid: Tuple[int, int], mask: Optional[torch.Tensor] = None):
        q, k, v = self._heads(tokens, grid)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  dropout_p=self.attn_drop.p if self.training else 0.0)
        return self._merge(attended)

    def forward_and_pick(self, tokens: torch.Tensor, grid: Tuple[int, int], ratio: float):
        """Attention that also picks, per query, the ``ratio`` of keys it attends to least.

        -> (output [B, N, C], picked [B, heads, N, Nk] bool), at least one key per query.
        """
        q, k, v = self._heads(tokens, grid)
        weights = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        count = max(1, int(weights.shape[-1] * ratio))
        least = weights.topk(count, dim=-1, largest=False).indices
        picked = torch.zeros_like(weights, dtype=torch.bool).scatter_(-1, least, True)
        return self._merge(self.attn_drop(weights) @ v), picked


class ImageBlock(nn.Module):
    """MiT block: pre-norm attention and Mix-FFN, each a residual with drop path.

    tokens [B, N, C], grid (h, w), mask as in ``SpatialReductionAttention`` -> [B, N, C].
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SpatialReductionAttention(dim, num_heads=num_heads, sr_ratio=sr_ratio, qkv_bias=True)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MlpWithDepthwiseConv(dim, dim * MLP_RATIO, act_layer=TANH_GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, tokens: torch.Tensor, grid: Tuple[int, int], mask: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.drop_path1(self.attn(self.norm1(tokens), grid, mask))
        return tokens + self.drop_path2(self.mlp(self.norm2(tokens), grid))


class NoiseBlock(nn.Module):
    """The authors' noise-branch block: attention without a LayerNorm before it, whose output is
    its own residual (a + drop_path(a)), then the Mix-FFN as in ``ImageBlock``.

    tokens [B, N, C], grid (h, w) -> (tokens [B, N, C], picked keys [B, heads, N, Nk] bool if
    ``pick`` else None).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, drop_path: float):
        super().__init__()
        self.attn = SpatialReductionAttention(dim, num_heads=num_heads, sr_ratio=sr_ratio, qkv_bias=True)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MlpWithDepthwiseConv(dim, dim * MLP_RATIO, act_layer=TANH_GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, tokens: torch.Tensor, grid: Tuple[int, int], pick: bool):
        if pick:
            attended, picked = self.attn.forward_and_pick(tokens, grid, TOPK_RATIO)
        else:
            attended, picked = self.attn(tokens, grid), None
        tokens = attended + self.drop_path1(attended)
        return tokens + self.drop_path2(self.mlp(self.norm2(tokens), grid)), picked


class Stage(nn.Module):
    """Overlapping patch embedding (7x7 stride 4 for stage 1, else 3x3 stride 2), blocks, LayerNorm."""

    def __init__(self, block, in_chans: int, dim: int, depth: int, num_heads: int, sr_ratio: int,
                 first: bool, drop_paths: List[float]):
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(patch_size=7 if first else 3, stride=4 if first else 2,
                                             in_chans=in_chans, embed_dim=dim)
        self.blocks = nn.ModuleList(block(dim, num_heads, sr_ratio, drop_paths[index]) for index in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.sr_ratio = sr_ratio

    def embed(self, grid_map: torch.Tensor):
        """[B, Cin, H, W] -> (tokens [B, N, C], grid (h, w))."""
        tokens = self.patch_embed(grid_map)  # [B, h, w, C]
        batch, height, width, channels = tokens.shape
        return tokens.reshape(batch, height * width, channels), (height, width)

    def to_map(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """tokens [B, N, C] -> normalised map [B, C, h, w]."""
        return self.norm(tokens).transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def _stages(block, in_chans: int, widths, depths) -> nn.ModuleList:
    drop_paths = torch.linspace(0, DROP_PATH_RATE, sum(depths)).tolist()
    stages, start = [], 0
    for index, (width, depth) in enumerate(zip(widths, depths)):
        stages.append(Stage(block, in_chans if index == 0 else widths[index - 1], width, depth, NUM_HEADS[index],
                            SR_RATIOS[index], index == 0, drop_paths[start:start + depth]))
        start += depth
    return nn.ModuleList(stages)


class NoiseEncoder(nn.Module):
    """MiT-b0 on the noise map: noise [B, 1, H, W] -> the noise-guided mask of each of the four
    stages, [B, heads, N, Nk] bool (True: a key the query attends to least)."""

    def __init__(self, in_chans: int = 1):
        super().__init__()
        self.stages = _stages(NoiseBlock, in_chans, NOISE_WIDTHS, NOISE_DEPTHS)

    def forward(self, noise: torch.Tensor) -> List[torch.Tensor]:
        masks, grid_map = [], noise
        for stage in self.stages:
            tokens, grid = stage.embed(grid_map)
            for index, block in enumerate(stage.blocks):
                tokens, picked = block(tokens, grid, pick=index == len(stage.blocks) - 1)
            masks.append(picked)
            grid_map = stage.to_map(tokens, grid)
        return masks


def fixed_sparse_mask(grid: Tuple[int, int], sr_ratio: int, device) -> torch.Tensor:
    """Fixed sparse attention (SparseViT): the queries of window (i, j) (windows of ``sr_ratio``
    x ``sr_ratio`` tokens, one key each) attend only to the keys (k, l) with k = i and l = j
    modulo 2.

    -> [N, Nk] bool for the token grid ``grid`` and its key grid (grid // sr_ratio).
    """
    def groups(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return ((rows % SPARSE_GROUPS)[:, None] * SPARSE_GROUPS + (cols % SPARSE_GROUPS)[None, :]).flatten()

    height, width = grid
    query_group = groups(torch.arange(height, device=device) // sr_ratio,
                         torch.arange(width, device=device) // sr_ratio)
    key_group = groups(torch.arange(height // sr_ratio, device=device), torch.arange(width // sr_ratio, device=device))
    return query_group[:, None] == key_group[None, :]


class ImageEncoder(nn.Module):
    """MiT-b2 with fixed sparse attention, guided by the noise masks in the last block of each stage.

    image [B, 3, H, W], noise masks (``NoiseEncoder``) -> four maps [B, C, h, w] at 1/4 .. 1/32.
    """

    def __init__(self, in_chans: int = 3):
        super().__init__()
        self.stages = _stages(ImageBlock, in_chans, IMAGE_WIDTHS, IMAGE_DEPTHS)

    def forward(self, image: torch.Tensor, noise_masks: List[torch.Tensor]) -> List[torch.Tensor]:
        maps, grid_map = [], image
        for stage, noise_mask in zip(self.stages, noise_masks):
            tokens, grid = stage.embed(grid_map)
            sparse_mask = fixed_sparse_mask(grid, stage.sr_ratio, image.device)
            for index, block in enumerate(stage.blocks):
                tokens = block(tokens, grid, noise_mask if index == len(stage.blocks) - 1 else sparse_mask)
            grid_map = stage.to_map(tokens, grid)
            maps.append(grid_map)
        return maps


class WeightedDecoder(nn.Module):
    """The paper's weighted decoder: stage maps projected (1x1 conv) to one width, resized to
    stage 1's grid (bilinear), scaled per channel by learned gammas, summed, LayerNorm, 1x1 conv.

    four maps [B, C_i, h_i, w_i] -> mask logits [B, 1, h_1, w_1].
    """

    def __init__(self, in_widths=IMAGE_WIDTHS, width: int = DECODER_WIDTH, gamma_init: float = 1e-6):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(in_width, width, kernel_size=1) for in_width in in_widths)
        self.gammas = nn.Parameter(torch.full((len(in_widths), width), gamma_init))
        self.norm = LayerNorm2d(width, eps=1e-6)
        self.predict = nn.Conv2d(width, 1, kernel_size=1)

    def forward(self, maps: List[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        fused = 0
        for lateral, gamma, grid_map in zip(self.lateral, self.gammas, maps):
            projected = lateral(grid_map)
            if projected.shape[-2:] != size:
                projected = F.interpolate(projected, size=size, mode="bilinear", align_corners=False)
            fused = fused + gamma[:, None, None] * projected
        return self.predict(self.norm(fused))


def _init_mit_weights(module: nn.Module) -> None:
    """SegFormer's init: truncated normal linears, unit LayerNorms, fan-out normal convs."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, std=(2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@MODELS.register_module()
class NFA_ViT(nn.Module):
    """NFA-ViT: noise-guided forgery amplification; mask and real/fake prediction.

    ``np_pretrain_weights``, ``seg_b0_pretrain_weights``, ``seg_b2_pretrain_weights``: weight
    files of Noiseprint++ and of the SegFormer MiT-b0 and MiT-b2 backbones, or "none" (random
    weights, on purpose). Loss = BCE(mask) + ``cls_loss_weight`` x BCE(detection).
    """

    def __init__(self,
                 np_pretrain_weights: str = None,
                 seg_b0_pretrain_weights: str = None,
                 seg_b2_pretrain_weights: str = None,
                 cls_loss_weight: float = 0.5):
        super().__init__()
        if not cls_loss_weight >= 0:
            raise ValueError(f"--cls_loss_weight must be a non-negative number, got {cls_loss_weight!r}")
        self.cls_loss_weight = float(cls_loss_weight)
        sources = {"np_pretrain_weights": np_pretrain_weights, "seg_b0_pretrain_weights": seg_b0_pretrain_weights,
                   "seg_b2_pretrain_weights": seg_b2_pretrain_weights}
        states = read_pretrained(sources)
        self.noise_extractor = DnCNN(nplanes_in=3, nplanes_out=1, features=64, kernel=3, depth=17, activation="relu",
                                     lastact="linear", residual=True, bn=True)
        self.noise_backbone = NoiseEncoder(in_chans=1)
        self.image_backbone = ImageEncoder(in_chans=3)
        self.seg_decoder = WeightedDecoder()
        self.cls_head = nn.Linear(IMAGE_WIDTHS[-1], 1)
        for module in (self.noise_backbone, self.image_backbone, self.cls_head):
            module.apply(_init_mit_weights)
        load_pretrained(self, states, sources)
        # Frozen without switching to eval mode: in training the DnCNN's BatchNorm uses the
        # batch's statistics and the noise branch its drop path, as in theirs.
        self.noise_extractor.requires_grad_(False)
        self.noise_backbone.requires_grad_(False)

    # ------------------------------------------------------------------ forward

    def forward(self, image: torch.Tensor, mask: torch.Tensor, label: torch.Tensor, **kwargs) -> Dict:
        """BenCo contract: image [B, 3, H, W] (ImageNet-normalised), mask [B, 1, H, W], label [B].

        Other BenCo keys (``shape``, ``name``, ``if_predcit_label`` ...) are accepted and
        ignored. Returns ``backward_loss``, ``visual_loss``, ``pred_mask`` [B, 1, H, W]
        probabilities, ``pred_label`` [B] probability of fake, ``visual_image``.
        """
        if min(image.shape[-2:]) < MIN_IMAGE_SIDE:
            raise ValueError(f"NFA_ViT needs images of at least {MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE} pixels "
                             f"(its stage-1 keys are 1/32 of the image), got {tuple(image.shape[-2:])}")
        with torch.no_grad():
            noise_masks = self.noise_backbone(self.noise_extractor(image))
        maps = self.image_backbone(image, noise_masks)
        mask_logits = F.interpolate(self.seg_decoder(maps), size=image.shape[-2:], mode="bilinear",
                                    align_corners=False).float()
        label_logits = self.cls_head(maps[-1].mean(dim=(2, 3))).squeeze(1).float()

        seg_loss = F.binary_cross_entropy_with_logits(mask_logits, mask.float())
        cls_loss = F.binary_cross_entropy_with_logits(label_logits, label.reshape(-1).float())
        total_loss = seg_loss + self.cls_loss_weight * cls_loss
        pred_mask = torch.sigmoid(mask_logits)
        return {
            "backward_loss": total_loss,
            "visual_loss": {"seg_loss": seg_loss, "cls_loss": cls_loss, "total_loss": total_loss},
            "pred_mask": pred_mask,
            "pred_label": torch.sigmoid(label_logits),
            "visual_image": {"pred_mask": pred_mask},
        }



