"""MaskCLIP (OpenSDI, CVPR 2025) for IMDL-BenCo: detection and localisation of diffusion edits.

A frozen CLIP (vision and text towers) guides a trainable pixel encoder (MAE, SAM or
DINOv2 ViT-B):

* PromptLearner: learnable CoOp context for the prompts "real" and "fake" -> text embeddings t;
* VCA: CLIP patch tokens attend into the pixel encoder stream after some of its blocks;
* FPNDecoder: multi-scale decoder on the last pixel-encoder map;
* TVCA: the text embeddings attend over the decoder map and condition the mask head;
* VSA: self-attention over CLIP class tokens of several layers -> image embedding g;
* detection logits = CLIP's logit scale * cosine(g, t).

Shapes: B batch, H x W input, h x w pixel-encoder grid, Dc CLIP vision width, Dt CLIP
embedding width, Dp pixel-encoder width, C decoder channels, K tapped CLIP layers.
"""
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from IMDLBenCo.registry import MODELS

from .pixel_encoders import build_pixel_encoder
from .pretrained import build_clip, load_pixel_weights
from .settings import load_setting

PROMPT_CLASSES = ("real", "fake")
FIXED_PROMPTS = ("a photo of a real image", "a photo of a fake image")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _up_to_end_token(tokens: torch.Tensor) -> torch.Tensor:
    """Token ids [P, context] -> [P, L], L = last end-token position + 1.

    The text tower is causal, so positions after the end token never reach its output:
    dropping them gives the same embeddings for a fraction of the cost.
    """
    return tokens[:, :int(tokens.argmax(dim=-1).max()) + 1]


class Attention(nn.Module):
    """Multi-head attention on ``F.scaled_dot_product_attention``.

    query [B, Nq, dim], context [B, Nk, dim] -> [B, Nq, dim].
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, num_queries, dim = query.shape
        q = self.q_proj(query).view(batch, num_queries, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv_proj(context).view(batch, context.shape[1], 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, num_queries, dim))


class PromptLearner(nn.Module):
    """CoOp prompts with class-specific context: "[SOS] V_1 .. V_M <class>. [EOS]".

    ``token_embeddings(token_embedding)`` -> [2, L, Dt_text] with the M learnable vectors
    spliced after the start token; ``tokens`` [2, L] are the matching token ids.
    """

    def __init__(self, tokens: torch.Tensor, text_width: int, n_ctx: int):
        super().__init__()
        self.n_ctx = n_ctx
        self.register_buffer("tokens", tokens, persistent=False)
        self.ctx = nn.Parameter(torch.randn(len(PROMPT_CLASSES), n_ctx, text_width) * 0.02)

    @staticmethod
    def template(n_ctx: int) -> List[str]:
        # "X" is one token: its embedding is replaced by the learned context.
        return [" ".join(["X"] * n_ctx) + f" {name}." for name in PROMPT_CLASSES]

    def token_embeddings(self, token_embedding: nn.Embedding) -> torch.Tensor:
        embedded = token_embedding(self.tokens)
        return torch.cat([embedded[:, :1], self.ctx.to(embedded.dtype), embedded[:, 1 + self.n_ctx:]], dim=1)


class FixedPrompts(nn.Module):
    """Hand-written prompts (ablation ``prompt_learning=0``): no learnable context.

    ``token_embeddings(token_embedding)`` -> [2, L, Dt_text].
    """

    def __init__(self, tokens: torch.Tensor):
        super().__init__()
        self.register_buffer("tokens", tokens, persistent=False)

    def token_embeddings(self, token_embedding: nn.Embedding) -> torch.Tensor:
        return token_embedding(self.tokens)


class VCA(nn.Module):
    """Visual cross-attention: CLIP patch tokens query the pixel-encoder tokens.

    pixel_grid [B, h, w, Dp], clip_grid [B, Dc, gh, gw] -> pixel_grid + attention [B, h, w, Dp].
    """

    def __init__(self, clip_dim: int, pixel_dim: int, num_heads: int):
        super().__init__()
        self.clip_proj = nn.Conv2d(clip_dim, pixel_dim, kernel_size=1)
        self.norm_pixels = nn.LayerNorm(pixel_dim)
        self.attn = Attention(pixel_dim, num_heads)
        # Start as the identity so the pretrained pixel encoder is undisturbed at step 0.
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, pixel_grid: torch.Tensor, clip_grid: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = pixel_grid.shape
        # Project then resize: both are linear (bilinear weights sum to 1), so the order does
        # not change the result, and the 1x1 conv runs on the smaller CLIP grid.
        queries = F.interpolate(self.clip_proj(clip_grid), size=(height, width), mode="bilinear", align_corners=False)
        queries = queries.flatten(2).transpose(1, 2)
        context = self.norm_pixels(pixel_grid.reshape(batch, height * width, dim))
        return pixel_grid + self.attn(queries, context).view(batch, height, width, dim)


class ConcatFusion(nn.Module):
    """Ablation of VCA (``use_vca=0``): concatenate resized CLIP features and project back.

    pixel_grid [B, h, w, Dp], clip_grid [B, Dc, gh, gw] -> [B, h, w, Dp].
    """

    def __init__(self, clip_dim: int, pixel_dim: int):
        super().__init__()
        self.proj = nn.Linear(pixel_dim + clip_dim, pixel_dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, pixel_grid: torch.Tensor, clip_grid: torch.Tensor) -> torch.Tensor:
        clip_resized = F.interpolate(clip_grid, size=pixel_grid.shape[1:3], mode="bilinear", align_corners=False)
        clip_resized = clip_resized.permute(0, 2, 3, 1).to(pixel_grid.dtype)
        return pixel_grid + self.proj(torch.cat([pixel_grid, clip_resized], dim=-1))


class FPNDecoder(nn.Module):
    """Simple feature pyramid (IML-ViT style) fused at 4x the encoder resolution.

    feature_map [B, Dp, h, w] -> [B, C, 4h, 4w]. Branches at 4x, 2x (transposed convs),
    1x and 0.5x (max-pool); each 1x1 conv to C then 3x3 conv; resized, concatenated, fused.
    """

    def __init__(self, in_dim: int, channels: int):
        super().__init__()
        from timm.layers import LayerNorm2d

        half, quarter = in_dim // 2, in_dim // 4
        self.rescale = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(in_dim, half, 2, stride=2), LayerNorm2d(half), nn.GELU(),
                          nn.ConvTranspose2d(half, quarter, 2, stride=2)),
            nn.ConvTranspose2d(in_dim, half, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2),
        ])
        self.lateral = nn.ModuleList([
            nn.Sequential(nn.Conv2d(width, channels, 1, bias=False), LayerNorm2d(channels),
                          nn.Conv2d(channels, channels, 3, padding=1, bias=False), LayerNorm2d(channels))
            for width in (quarter, half, in_dim, in_dim)
        ])
        self.fuse = nn.Sequential(nn.Conv2d(4 * channels, channels, 1, bias=False), LayerNorm2d(channels), nn.GELU())

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        size = (4 * feature_map.shape[-2], 4 * feature_map.shape[-1])
        levels = []
        for rescale, lateral in zip(self.rescale, self.lateral):
            level = lateral(rescale(feature_map))
            if level.shape[-2:] != size:
                level = F.interpolate(level, size=size, mode="bilinear", align_corners=False)
            levels.append(level)
        return self.fuse(torch.cat(levels, dim=1))


class TVCA(nn.Module):
    """Textual-visual cross-attention mask head.

    feature_map [B, C, h, w], text [2, Dt] (real, fake) -> mask logits [B, 2, h, w].
    The text embeddings attend over the decoder pixels (keys and values: pixels projected
    to Dt); the attended vectors, mapped back to C, are compared with every pixel, and the
    similarity maps join the decoder map in a 1x1 conv.
    """

    def __init__(self, text_dim: int, channels: int, num_heads: int):
        super().__init__()
        if text_dim % num_heads:
            raise ValueError(f"TVCA width {text_dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(text_dim, text_dim)
        # No key bias: it would add the same score to every pixel, which softmax ignores.
        self.k_proj = nn.Linear(channels, text_dim, bias=False)
        self.v_proj = nn.Linear(channels, text_dim)
        self.out_proj = nn.Linear(text_dim, channels)
        self.head = nn.Conv2d(channels + len(PROMPT_CLASSES), len(PROMPT_CLASSES), kernel_size=1)

    def forward(self, feature_map: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = feature_map.shape
        num_prompts, text_dim = text.shape
        heads, head_dim = self.num_heads, text_dim // self.num_heads
        pixels = feature_map.flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, hw, C]
        text = text.to(feature_map.dtype)
        # Fold the key projection into the queries, q.(W_k p) = (W_k^T q).p, and apply the value
        # projection after the weighted sum (weights sum to 1): the same attention, but per
        # pixel it costs C instead of C x Dt, and all heads share one SDPA call.
        queries = self.q_proj(text).view(num_prompts, heads, head_dim)
        queries = torch.einsum("khd,hdc->hkc", queries, self.k_proj.weight.view(heads, head_dim, channels))
        queries = queries.reshape(1, 1, heads * num_prompts, channels).expand(batch, -1, -1, -1)
        pooled = F.scaled_dot_product_attention(queries, pixels, pixels, scale=head_dim ** -0.5)
        pooled = pooled.view(batch, heads, num_prompts, channels)
        attended = torch.einsum("bhkc,hdc->bkhd", pooled, self.v_proj.weight.view(heads, head_dim, channels))
        attended = attended.reshape(batch, num_prompts, text_dim) + self.v_proj.bias
        conditions = self.out_proj(attended + text)  # [B, 2, C]
        similarity = torch.einsum("bcn,bkc->bkn", F.normalize(feature_map.flatten(2), dim=1),
                                  F.normalize(conditions, dim=-1))
        similarity = similarity.view(batch, num_prompts, height, width)
        return self.head(torch.cat([feature_map, similarity], dim=1))


class VSA(nn.Module):
    """Visual self-attention over CLIP class tokens of K layers.

    cls_tokens [B, K, Dc] -> image embedding g [B, Dt].
    """

    def __init__(self, clip_dim: int, embed_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.attn = Attention(clip_dim, num_heads)
        self.norm = nn.LayerNorm(clip_dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(clip_dim, embed_dim)

    def forward(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(cls_tokens + self.dropout(self.attn(cls_tokens, cls_tokens)))
        return self.proj(tokens.mean(dim=1))


def _check_switch(name: str, value: int) -> bool:
    if value not in (0, 1):
        raise ValueError(f"--{name} must be 0 (off) or 1 (on), got {value!r}")
    return bool(value)


@MODELS.register_module()
class MaskCLIP(nn.Module):
    """MaskCLIP: frozen CLIP + trainable pixel encoder; mask and real/fake prediction.

    Settings (``--model_setting``) are JSON files in ``model_configs/``: ``list_settings()``.
    ``clip_pretrained`` / ``pixel_pretrained``: "default" (the setting's source), "none"
    (random init), a local file, or a hub tag (open_clip tag / timm ``model.tag``).
    ``prompt_learning``, ``use_vsa``, ``use_vca``, ``use_tvca``: 0/1 switches of paper Table 5.
    Loss = ce_weight * CE(detection) + bce_weight * BCE(mask) + edge_weight * edge-weighted BCE
    (paper text: all 1; the authors' code and IML-ViT: edge 20).
    """

    def __init__(self,
                 model_setting: str = "vitl14_mae",
                 image_size: int = 512,
                 clip_pretrained: str = "default",
                 pixel_pretrained: str = "default",
                 prompt_learning: int = 1,
                 use_vsa: int = 1,
                 use_vca: int = 1,
                 use_tvca: int = 1,
                 ce_weight: float = 1.0,
                 bce_weight: float = 1.0,
                 edge_weight: float = 20.0,
                 grad_checkpointing: int = 0):
        super().__init__()
        self.prompt_learning = _check_switch("prompt_learning", prompt_learning)
        self.use_vsa = _check_switch("use_vsa", use_vsa)
        self.use_vca = _check_switch("use_vca", use_vca)
        self.use_tvca = _check_switch("use_tvca", use_tvca)
        self.grad_checkpointing = _check_switch("grad_checkpointing", grad_checkpointing)
        for name, weight in (("ce_weight", ce_weight), ("bce_weight", bce_weight), ("edge_weight", edge_weight)):
            if not weight >= 0:
                raise ValueError(f"--{name} must be a non-negative number, got {weight!r}")
        self.ce_weight, self.bce_weight, self.edge_weight = float(ce_weight), float(bce_weight), float(edge_weight)
        setting = load_setting(model_setting)
        self.model_setting = model_setting
        pixel_setting = setting["pixel_encoder"]
        # Windowed encoders need whole patches; timm ViTs (DINOv2) pad their input instead.
        patch = pixel_setting.get("patch_size", 1)
        if image_size < patch or image_size % patch:
            raise ValueError(f"--image_size must be a positive multiple of the pixel encoder's patch size "
                             f"{patch} (setting {model_setting}), got {image_size}")

        import open_clip

        clip, clip_mean, clip_std = build_clip(setting["clip"], clip_pretrained)
        clip.requires_grad_(False)
        self.clip = clip.eval()
        visual = clip.visual
        clip_dim, clip_depth = visual.transformer.width, len(visual.transformer.resblocks)
        embed_dim = visual.output_dim
        self.clip_layers = list(setting["clip_layers"])
        if not all(0 <= layer < clip_depth for layer in self.clip_layers):
            raise ValueError(f"setting {model_setting}: clip_layers {self.clip_layers} outside 0..{clip_depth - 1}")
        # CLIP sees the ImageNet-normalised input resized to its own size and normalised its own
        # way; un-normalise and re-normalise fold into one per-channel affine map.
        in_mean, in_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        clip_mean, clip_std = torch.tensor(clip_mean), torch.tensor(clip_std)
        self.register_buffer("clip_input_scale", (in_std / clip_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_input_shift", ((in_mean - clip_mean) / clip_std).view(1, 3, 1, 1), persistent=False)

        self.pixel_encoder = build_pixel_encoder(pixel_setting, image_size)
        load_pixel_weights(self.pixel_encoder, pixel_setting, pixel_pretrained)
        pixel_dim, pixel_depth = self.pixel_encoder.embed_dim, len(self.pixel_encoder.blocks)
        self.fusion_blocks = list(setting["fusion_blocks"])
        if len(self.fusion_blocks) != len(self.clip_layers) or not all(0 <= b < pixel_depth for b in self.fusion_blocks):
            raise ValueError(f"setting {model_setting}: fusion_blocks {self.fusion_blocks} must pair one-to-one "
                             f"with clip_layers {self.clip_layers} and lie in 0..{pixel_depth - 1}")

        context_length = clip.context_length
        if self.prompt_learning:
            tokens = open_clip.tokenize(PromptLearner.template(setting["n_ctx"]), context_length=context_length)
            self.prompts = PromptLearner(_up_to_end_token(tokens), clip.transformer.width, setting["n_ctx"])
        else:
            tokens = open_clip.tokenize(list(FIXED_PROMPTS), context_length=context_length)
            self.prompts = FixedPrompts(_up_to_end_token(tokens))
        self._text_cache = None
        self.register_load_state_dict_post_hook(lambda module, incompatible_keys: module._drop_text_cache())

        if self.use_vca:
            self.fusions = nn.ModuleList(VCA(clip_dim, pixel_dim, setting["vca_heads"]) for _ in self.clip_layers)
        else:
            self.fusions = nn.ModuleList(ConcatFusion(clip_dim, pixel_dim) for _ in self.clip_layers)
        channels = setting["decoder_channels"]
        self.decoder = FPNDecoder(pixel_dim, channels)
        if self.use_tvca:
            self.mask_head = TVCA(embed_dim, channels, setting["tvca_heads"])
        else:
            self.mask_head = nn.Conv2d(channels, 1, kernel_size=1)
        if self.use_vsa:
            self.vsa = VSA(clip_dim, embed_dim, setting["vsa_heads"], setting["vsa_dropout"])
        else:
            # Baseline: CLIP's own projected last-layer class token, through one trainable
            # linear map that starts as the identity (zero-shot CLIP).
            self.cls_proj = nn.Linear(embed_dim, embed_dim)
            nn.init.eye_(self.cls_proj.weight)
            nn.init.zeros_(self.cls_proj.bias)

        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        print(f"[MaskCLIP] setting {model_setting}: {trainable / 1e6:.2f}M trainable, "
              f"{frozen / 1e6:.2f}M frozen (CLIP) parameters")

    # ------------------------------------------------------------------ mode and caches

    def train(self, mode: bool = True):
        super().train(mode)
        # The frozen CLIP stays in eval mode: no dropout / patch dropout in a frozen network.
        self.clip.eval()
        if mode:
            self._drop_text_cache()
        return self

    def _drop_text_cache(self) -> None:
        self._text_cache = None

    # ------------------------------------------------------------------ towers

    def _encode_prompts(self) -> torch.Tensor:
        """Prompt embeddings through the frozen text tower -> unit vectors [2, Dt] (fp32)."""
        clip, tokens = self.clip, self.prompts.tokens
        length = tokens.shape[1]
        text = self.prompts.token_embeddings(clip.token_embedding) + clip.positional_embedding[:length]
        text = clip.ln_final(clip.transformer(text, attn_mask=clip.attn_mask[:length, :length]))
        text = text[torch.arange(text.shape[0], device=text.device), tokens.argmax(dim=-1)]
        projection = clip.text_projection
        text = projection(text) if isinstance(projection, nn.Linear) else text @ projection
        return F.normalize(text.float(), dim=-1)

    def _text_features(self) -> torch.Tensor:
        if self.training and self.prompt_learning:
            return self._encode_prompts()  # the context is being learned: gradients flow through
        if self._text_cache is None or self._text_cache.device != self.prompts.tokens.device:
            with torch.no_grad():
                self._text_cache = self._encode_prompts()
        return self._text_cache

    @torch.no_grad()
    def _clip_features(self, image: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """ImageNet-normalised image [B, 3, H, W] -> (K tapped layers [B, 1 + n, Dc], image embedding).

        Tapped features are the ``ln_2`` outputs (normalised, pre-MLP) of ``clip_layers``; the
        image embedding [B, Dt] is computed only when VSA is off, else it is None.
        """
        visual = self.clip.visual
        clip_input = F.interpolate(image.float(), size=visual.image_size, mode="bilinear",
                                   align_corners=False, antialias=True)
        clip_input = clip_input * self.clip_input_scale + self.clip_input_shift
        taps: Dict[int, torch.Tensor] = {}

        def tap(layer):
            return lambda module, inputs, output: taps.__setitem__(layer, output)

        hooks = [visual.transformer.resblocks[layer].ln_2.register_forward_hook(tap(layer))
                 for layer in self.clip_layers]
        try:
            if self.use_vsa:
                visual.forward_intermediates(clip_input, indices=[max(self.clip_layers)], stop_early=True,
                                             intermediates_only=True)
                image_embedding = None
            else:
                image_embedding = visual(clip_input)
        finally:
            for hook in hooks:
                hook.remove()
        return [taps[layer] for layer in self.clip_layers], image_embedding

    def _pixel_features(self, image: torch.Tensor, clip_grids: List[torch.Tensor]) -> torch.Tensor:
        """image [B, 3, H, W] + CLIP grids [B, Dc, gh, gw] -> last pixel-encoder map [B, Dp, h, w]."""
        encoder = self.pixel_encoder
        tokens, grid_size = encoder.embed(image)
        fusion_at = {block: index for index, block in enumerate(self.fusion_blocks)}
        use_checkpoint = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for index, block in enumerate(encoder.blocks):
            tokens = checkpoint(block, tokens, use_reentrant=False) if use_checkpoint else block(tokens)
            if index in fusion_at:
                fusion = self.fusions[fusion_at[index]]
                grid = fusion(encoder.to_grid(tokens, grid_size), clip_grids[fusion_at[index]])
                tokens = encoder.from_grid(tokens, grid)
        return encoder.to_grid(tokens, grid_size).permute(0, 3, 1, 2)

    # ------------------------------------------------------------------ forward

    def forward(self, image: torch.Tensor, mask: torch.Tensor, label: torch.Tensor,
                edge_mask: torch.Tensor = None, **kwargs) -> Dict:
        """BenCo contract: image [B, 3, H, W] (ImageNet-normalised), mask [B, 1, H, W], label [B].

        ``edge_mask`` [B, 1, H, W] adds the edge loss; other BenCo keys (``shape``, ``name``,
        ``if_predcit_label`` ...) are accepted and ignored. Returns ``backward_loss``,
        ``visual_loss``, ``pred_mask`` [B, 1, H, W] probabilities, ``pred_label`` [B]
        probability of fake, ``visual_image``.
        """
        taps, image_embedding = self._clip_features(image)
        grid_h, grid_w = self.clip.visual.grid_size
        clip_grids = [tap[:, 1:].transpose(1, 2).unflatten(2, (grid_h, grid_w)) for tap in taps]
        text = self._text_features()

        pixel_map = self._pixel_features(image, clip_grids)
        decoded = self.decoder(pixel_map)
        if self.use_tvca:
            real_fake = self.mask_head(decoded, text)
            # sigmoid(fake - real) is softmax over (real, fake): both channels get gradients.
            mask_logits = real_fake[:, 1:] - real_fake[:, :1]
        else:
            mask_logits = self.mask_head(decoded)
        # An encoder that pads the input (DINOv2, patch 14) covers more than the image: resize to
        # the covered area, then crop the padding away.
        height, width = image.shape[-2:]
        patch = self.pixel_encoder.patch_size
        covered = (max(pixel_map.shape[-2] * patch, height), max(pixel_map.shape[-1] * patch, width))
        mask_logits = F.interpolate(mask_logits, size=covered, mode="bilinear", align_corners=False)
        mask_logits = mask_logits[..., :height, :width].float()

        if self.use_vsa:
            image_embedding = self.vsa(torch.stack([tap[:, 0] for tap in taps], dim=1))
        else:
            image_embedding = self.cls_proj(image_embedding)
        # Cosines and losses in fp32 even under autocast, which would run the matmul in half.
        with torch.autocast(device_type=image.device.type, enabled=False):
            logit_scale = self.clip.logit_scale.exp().clamp(max=100.0).float()
            label_logits = logit_scale * F.normalize(image_embedding.float(), dim=-1) @ text.float().t()

        mask = mask.float()
        ce_loss = self.ce_weight * F.cross_entropy(label_logits, label.reshape(-1).long())
        bce_loss = self.bce_weight * F.binary_cross_entropy_with_logits(mask_logits, mask)
        visual_loss = {"ce_loss": ce_loss, "bce_loss": bce_loss}
        total_loss = ce_loss + bce_loss
        if edge_mask is not None:
            edge_loss = self.edge_weight * F.binary_cross_entropy_with_logits(
                mask_logits, mask, weight=edge_mask.float())
            visual_loss["edge_loss"] = edge_loss
            total_loss = total_loss + edge_loss
        visual_loss["total_loss"] = total_loss

        pred_mask = torch.sigmoid(mask_logits)
        return {
            "backward_loss": total_loss,
            "visual_loss": visual_loss,
            "pred_mask": pred_mask,
            "pred_label": label_logits.softmax(dim=-1)[:, 1],
            "visual_image": {"pred_mask": pred_mask},
        }

