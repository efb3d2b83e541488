"""MaskCLIP (OpenSDI, CVPR 2025) for IMDL-BenCo: detection and localisation of diffusion edits.

By default this computes what the authors' release computes (github.com/iamwangyabin/OpenSDI,
commit b1cf3c5): from the same weights and pixels, the same masks, logits and losses. A frozen
CLIP (vision and text towers) guides a trainable pixel encoder (MAE, SAM or DINOv2 ViT-B); a
setting without pretrained CLIP weights (``tiny``) may train its CLIP (``train_clip``):

* PromptLearner: "[SOS] V_1 .. V_M an image. [EOS]" with a learned context V per class
  (real, fake) -> text embeddings t = (t_real, t_fake), unit length;
* VCA: after some pixel-encoder blocks, queries from one CLIP layer's patch tokens attend
  over the pixel tokens; the attended features are added to the stream;
* FPNDecoder: simple feature pyramid on the last pixel-encoder map, at 4x its resolution;
* TVCA: t_fake, projected to the decoder width, attends over the decoder map; the one
  attended vector is added to every pixel before the mask head;
* VSA: self-attention over the class tokens of the tapped CLIP layers -> image embedding g;
* detection logits = g . t (g is not normalised: the authors' head).

Shapes: B batch, H x W input, h x w pixel-encoder grid, Dc CLIP vision width, Dt CLIP
embedding width, Dp pixel-encoder width, C decoder width, K tapped CLIP layers.
"""
import math
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from IMDLBenCo.registry import MODELS

from .pixel_encoders import build_pixel_encoder
from .pretrained import build_clip, load_pixel_weights
from .settings import DEFAULT_SETTING, load_setting

# Both classes share the words; only the learned context tells them apart.
PROMPT_WORDS = "an image"
# Without prompt learning the classes need words of their own.
FIXED_PROMPTS = ("a photo of a real image", "a photo of a fake image")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DETECTION_HEADS = ("authors", "cosine")


def _up_to_end_token(tokens: torch.Tensor) -> torch.Tensor:
    """Token ids [P, context] -> [P, L], L = last end-token position + 1.

    The text tower is causal, so positions after the end token never reach its output:
    dropping them gives the same embeddings for a fraction of the cost.
    """
    return tokens[:, :int(tokens.argmax(dim=-1).max()) + 1]


def _layer_list(text: str, flag: str) -> List[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--{flag} takes comma-separated layer indices like 2,4,8, got {text!r}") from None


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
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        # The key bias adds the same score to all keys of a query, which the softmax removes: its
        # gradient is zero. Frozen, it is kept for checkpoints and cannot stall DDP as a
        # trainable tensor that gets no gradient would.
        self.k_proj.bias.requires_grad_(False)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, num_queries, dim = query.shape

        def heads(x):
            return x.view(batch, x.shape[1], self.num_heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q_proj(query)), heads(self.k_proj(context)),
                                             heads(self.v_proj(context)))
        return self.out_proj(out.transpose(1, 2).reshape(batch, num_queries, dim))


class PromptLearner(nn.Module):
    """CoOp prompts "[SOS] V_1 .. V_M an image. [EOS]" with a context V per class.

    ``token_embeddings(token_embedding)`` -> [2, L, Dt_text] (real, fake) with the M learned
    vectors spliced after the start token; ``tokens`` [2, L] are the matching token ids.
    """

    def __init__(self, tokens: torch.Tensor, text_width: int, length: int):
        super().__init__()
        self.length = length
        self.register_buffer("tokens", tokens.expand(2, -1).clone(), persistent=False)
        self.ctx = nn.Parameter(torch.randn(2, length, text_width) * 0.02)

    @staticmethod
    def template(length: int) -> str:
        # "X" is one token: its embedding is replaced by the learned context.
        return " ".join(["X"] * length) + f" {PROMPT_WORDS}."

    def token_embeddings(self, token_embedding: nn.Embedding) -> torch.Tensor:
        embedded = token_embedding(self.tokens)
        return torch.cat([embedded[:, :1], self.ctx.to(embedded.dtype), embedded[:, 1 + self.length:]], dim=1)


class FixedPrompts(nn.Module):
    """Hand-written prompts (``prompt_learning=0``): no learned context.

    ``token_embeddings(token_embedding)`` -> [2, L, Dt_text].
    """

    def __init__(self, tokens: torch.Tensor):
        super().__init__()
        self.register_buffer("tokens", tokens, persistent=False)

    def token_embeddings(self, token_embedding: nn.Embedding) -> torch.Tensor:
        return token_embedding(self.tokens)


class VCA(nn.Module):
    """Visual cross-attention: queries from CLIP patch tokens, keys and values from the pixel tokens.

    pixel_grid [B, h, w, Dp], clip_grid [B, Dc, gh, gw] -> pixel_grid + fused [B, h, w, Dp].
    """

    def __init__(self, clip_dim: int, pixel_dim: int, num_heads: int):
        super().__init__()
        self.clip_proj = nn.Conv2d(clip_dim, pixel_dim, kernel_size=1)
        self.clip_norm = nn.LayerNorm(pixel_dim, eps=1e-6)
        self.attn = Attention(pixel_dim, num_heads)
        self.out_norm = nn.LayerNorm(pixel_dim)

    def forward(self, pixel_grid: torch.Tensor, clip_grid: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = pixel_grid.shape
        # Project, then resize: both are linear and bilinear weights sum to 1, so the order does
        # not change the result, and the 1x1 conv runs on the smaller CLIP grid.
        queries = F.interpolate(self.clip_proj(clip_grid.to(pixel_grid.dtype)), size=(height, width),
                                mode="bilinear", align_corners=False)
        queries = self.clip_norm(queries.permute(0, 2, 3, 1)).reshape(batch, height * width, dim)
        fused = self.out_norm(self.attn(queries, pixel_grid.reshape(batch, height * width, dim)))
        return pixel_grid + fused.view(batch, height, width, dim)


class FPNDecoder(nn.Module):
    """Simple feature pyramid (IML-ViT style) fused at 4x the encoder resolution.

    feature_map [B, Dp, h, w] -> [B, C, 4h, 4w]. Branches at 4x, 2x (transposed convs),
    1x and 0.5x (max-pool); each 1x1 conv to C then 3x3 conv, resized, concatenated, fused.
    """

    def __init__(self, in_dim: int, channels: int):
        super().__init__()
        from timm.layers import LayerNorm2d

        half, quarter = in_dim // 2, in_dim // 4
        self.rescale = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(in_dim, half, 2, stride=2), LayerNorm2d(half, eps=1e-6), nn.GELU(),
                          nn.ConvTranspose2d(half, quarter, 2, stride=2)),
            nn.ConvTranspose2d(in_dim, half, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2),
        ])
        self.lateral = nn.ModuleList([
            nn.Sequential(nn.Conv2d(width, channels, 1), LayerNorm2d(channels, eps=1e-6),
                          nn.Conv2d(channels, channels, 3, padding=1), LayerNorm2d(channels, eps=1e-6))
            for width in (quarter, half, in_dim, in_dim)
        ])
        self.fuse = nn.Conv2d(4 * channels, channels, 1)

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
    """Textual-visual cross-attention: t_fake attends over the decoder map.

    feature_map [B, C, h, w], text_fake [Dt] -> feature_map + attended [B, C, h, w], the one
    attended vector of each image added to all its pixels.
    """

    def __init__(self, text_dim: int, channels: int, num_heads: int):
        super().__init__()
        self.text_proj = nn.Linear(text_dim, channels)
        self.attn = Attention(channels, num_heads)

    def forward(self, feature_map: torch.Tensor, text_fake: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = feature_map.shape
        attn = self.attn
        heads, head_dim = attn.num_heads, channels // attn.num_heads
        query = attn.q_proj(self.text_proj(text_fake.to(feature_map.dtype))).view(heads, head_dim)
        # Fold the key projection into the query, q.(W_k p + b_k) = (W_k^T q).p + const (the
        # constant drops out of the softmax), and apply the value projection after the weighted
        # sum (weights sum to 1): the same attention, but per pixel it costs C instead of C x C.
        query = torch.einsum("hd,hdc->hc", query, attn.k_proj.weight.view(heads, head_dim, channels))
        # One query per head over all pixels: two matrix products. (SDPA's CPU kernel takes about a
        # second for these shapes, 8 queries against 16K keys, for 0.1 GFLOP of work.)
        pixels = feature_map.flatten(2)  # [B, C, hw]
        weights = (torch.einsum("hc,bcn->bhn", query, pixels) * head_dim ** -0.5).softmax(dim=-1)
        pooled = torch.einsum("bhn,bcn->bhc", weights, pixels)  # [B, heads, C]
        attended = torch.einsum("bhc,hdc->bhd", pooled, attn.v_proj.weight.view(heads, head_dim, channels))
        attended = attn.out_proj(attended.reshape(batch, channels) + attn.v_proj.bias)
        return feature_map + attended[:, :, None, None]


class MaskHead(nn.Module):
    """LayerNorm, dropout and a 1x1 conv: decoder map [B, C, h, w] -> mask logits [B, 1, h, w]."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        from timm.layers import LayerNorm2d

        self.norm = LayerNorm2d(channels, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.predict = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.predict(self.dropout(self.norm(feature_map)))


class VSA(nn.Module):
    """Visual self-attention over the class tokens of the K tapped CLIP layers.

    cls_tokens [B, K, Dc] -> image embedding g [B, Dt].
    """

    def __init__(self, clip_dim: int, embed_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.attn = Attention(clip_dim, num_heads)
        self.norm = nn.LayerNorm(clip_dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(clip_dim, embed_dim, bias=False)
        self._init_as_multihead_attention()

    def _init_as_multihead_attention(self) -> None:
        """``nn.MultiheadAttention``'s init, which the authors' module has: xavier-uniform over the
        stacked [3 Dc, Dc] q/k/v weight (bound sqrt(6 / (4 Dc)), not that of each [Dc, Dc] part),
        zero q/k/v and output biases; the output weight keeps ``nn.Linear``'s init, as theirs."""
        attn = self.attn
        stacked = torch.empty(3 * attn.q_proj.out_features, attn.q_proj.in_features)
        nn.init.xavier_uniform_(stacked)
        with torch.no_grad():
            for projection, weight in zip((attn.q_proj, attn.k_proj, attn.v_proj), stacked.chunk(3)):
                projection.weight.copy_(weight)
                projection.bias.zero_()
            attn.out_proj.bias.zero_()

    def forward(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.dropout(self.norm(self.attn(cls_tokens, cls_tokens) + cls_tokens))
        return self.proj(tokens.mean(dim=1))


class ClassTokenMean(nn.Module):
    """VSA without its attention (``use_vsa=0``): cls_tokens [B, K, Dc] -> mean -> linear -> [B, Dt]."""

    def __init__(self, clip_dim: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(clip_dim, embed_dim, bias=False)

    def forward(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(cls_tokens.mean(dim=1))


def _check_switch(name: str, value: int) -> bool:
    if value not in (0, 1):
        raise ValueError(f"--{name} must be 0 (off) or 1 (on), got {value!r}")
    return bool(value)


@MODELS.register_module()
class MaskCLIP(nn.Module):
    """MaskCLIP: frozen CLIP + trainable pixel encoder; mask and real/fake prediction.

    A setting with ``"train_clip": true`` (``tiny``, whose CLIP has no pretrained weights)
    trains the CLIP parts that reach the outputs as well.

    ``model_setting``: a setting name (``list_settings()``), or from Python a setting dict as
    ``load_setting`` returns. ``clip_layers``: comma-separated CLIP layers to tap instead of the
    setting's. ``clip_pretrained`` / ``pixel_pretrained``: "default" (the setting's source),
    "none" (random init), a local file, or a hub tag (open_clip tag / timm ``model.tag``).
    ``prompt_learning``, ``use_vsa``, ``use_vca``, ``use_tvca``: 0/1 switches of paper Table 5.
    ``detection_head``: "authors" (g . t) or "cosine" (CLIP's logit scale x cos(g, t)).
    Loss = ce_weight * CE(detection) + bce_weight * BCE(mask) + edge_weight * edge-weighted BCE.
    """

    def __init__(self,
                 model_setting: str = DEFAULT_SETTING,
                 image_size: int = 512,
                 clip_layers: str = "",
                 clip_pretrained: str = "default",
                 pixel_pretrained: str = "default",
                 prompt_learning: int = 1,
                 use_vsa: int = 1,
                 use_vca: int = 1,
                 use_tvca: int = 1,
                 detection_head: str = "authors",
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
        if detection_head not in DETECTION_HEADS:
            raise ValueError(f"--detection_head must be one of {', '.join(DETECTION_HEADS)}, got {detection_head!r}")
        self.detection_head = detection_head
        for name, weight in (("ce_weight", ce_weight), ("bce_weight", bce_weight), ("edge_weight", edge_weight)):
            if not weight >= 0:
                raise ValueError(f"--{name} must be a non-negative number, got {weight!r}")
        self.ce_weight, self.bce_weight, self.edge_weight = float(ce_weight), float(bce_weight), float(edge_weight)
        setting = dict(model_setting) if isinstance(model_setting, dict) else load_setting(model_setting)
        setting_name = setting.get("name", "custom")
        pixel_setting = setting["pixel_encoder"]
        # Windowed encoders need whole patches; timm ViTs (DINOv2) pad their input instead.
        patch = pixel_setting.get("patch_size", 1)
        if image_size < patch or image_size % patch:
            raise ValueError(f"--image_size must be a positive multiple of the pixel encoder's patch size "
                             f"{patch} (setting {setting_name}), got {image_size}")
        self.image_size = image_size  # the input side length it was built for (BenCo's --image_size)

        import open_clip

        clip, clip_mean, clip_std = build_clip(setting["clip"], clip_pretrained, setting_name)
        self.clip = clip
        visual = clip.visual
        clip_dim, clip_depth = visual.transformer.width, len(visual.transformer.resblocks)
        embed_dim = visual.output_dim
        self.clip_layers = _layer_list(clip_layers, "clip_layers") if clip_layers else list(setting["clip_layers"])
        if not all(0 <= layer < clip_depth for layer in self.clip_layers):
            raise ValueError(f"--clip_layers {','.join(map(str, self.clip_layers))}: this CLIP has layers "
                             f"0..{clip_depth - 1} (setting {setting_name})")
        self.train_clip = bool(setting.get("train_clip", False))
        self._set_clip_trainable()
        # Both towers see the pixels normalised with the CLIP weights' statistics, as the authors'
        # data pipeline gives them; BenCo's pipeline normalises with ImageNet's. Undoing one and
        # applying the other fold into one per-channel affine map.
        in_mean, in_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        clip_mean, clip_std = torch.tensor(clip_mean), torch.tensor(clip_std)
        self.register_buffer("input_scale", (in_std / clip_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", ((in_mean - clip_mean) / clip_std).view(1, 3, 1, 1), persistent=False)

        self.pixel_encoder = build_pixel_encoder(pixel_setting, image_size)
        load_pixel_weights(self.pixel_encoder, setting, pixel_pretrained)
        pixel_dim, pixel_depth = self.pixel_encoder.embed_dim, len(self.pixel_encoder.blocks)
        self.fusion_blocks = list(setting["fusion_blocks"])
        if len(self.fusion_blocks) != len(self.clip_layers) or not all(0 <= b < pixel_depth for b in self.fusion_blocks):
            raise ValueError(f"setting {setting_name}: fusion_blocks {self.fusion_blocks} must pair one-to-one "
                             f"with clip_layers {self.clip_layers} and lie in 0..{pixel_depth - 1}")

        context_length = clip.context_length
        if self.prompt_learning:
            length = setting["prompt_length"]
            tokens = open_clip.tokenize([PromptLearner.template(length)], context_length=context_length)
            self.prompts = PromptLearner(_up_to_end_token(tokens), clip.transformer.width, length)
        else:
            tokens = open_clip.tokenize(list(FIXED_PROMPTS), context_length=context_length)
            self.prompts = FixedPrompts(_up_to_end_token(tokens))
        self._text_cache = None
        # A load may replace the text tower itself, which the context's version does not see.
        self.register_load_state_dict_post_hook(lambda module, incompatible_keys: module._drop_text_cache())

        if self.use_vca:
            self.fusions = nn.ModuleList(VCA(clip_dim, pixel_dim, setting["fusion_heads"]) for _ in self.clip_layers)
        channels = setting["decoder_dim"]
        self.decoder = FPNDecoder(pixel_dim, channels)
        if self.use_tvca:
            self.tvca = TVCA(embed_dim, channels, setting["decoder_heads"])
        self.mask_head = MaskHead(channels, setting["decoder_dropout"])
        if self.use_vsa:
            self.vsa = VSA(clip_dim, embed_dim, setting["cls_heads"], setting["cls_dropout"])
        else:
            self.vsa = ClassTokenMean(clip_dim, embed_dim)

        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        print(f"[MaskCLIP] setting {setting_name}: {trainable / 1e6:.2f}M trainable, {frozen / 1e6:.2f}M frozen "
              f"parameters (CLIP {'trains' if self.train_clip else 'frozen'})")

    def _set_clip_trainable(self) -> None:
        """Freeze CLIP, or with ``train_clip`` (a setting without pretrained CLIP weights) train the
        parts of it that reach the outputs. The rest stays frozen, since a trainable tensor that
        gets no gradient stalls DDP: the vision blocks after the last tap, the last tapped block's
        MLP (the tap is its ``ln_2`` output), the vision head, and the logit scale unless the
        cosine head reads it. The word embeddings stay frozen too: the prompts use a few rows of
        the [vocabulary, width] table, the learned context gives each class its own vectors, and
        an optimizer would update the whole table every step."""
        clip = self.clip.requires_grad_(self.train_clip)
        if not self.train_clip:
            clip.eval()
            return
        visual = clip.visual
        visual.requires_grad_(False)
        last = max(self.clip_layers)
        blocks = visual.transformer.resblocks
        for part in (visual.conv1, visual.ln_pre, *blocks[:last + 1]):
            part.requires_grad_(True)
        visual.class_embedding.requires_grad_(True)
        visual.positional_embedding.requires_grad_(True)
        blocks[last].mlp.requires_grad_(False)
        blocks[last].ls_2.requires_grad_(False)
        clip.logit_scale.requires_grad_(self.detection_head == "cosine")
        clip.token_embedding.requires_grad_(False)

    # ------------------------------------------------------------------ checkpoints

    @classmethod
    def from_checkpoint(cls, path: str, map_location="cpu", **overrides) -> "MaskCLIP":
        """A ready model with every weight from ``path``: a checkpoint our ``train`` wrote, or
        one the authors' ``train.py`` wrote (BenCo's ``misc.save_model`` dict around their whole
        state dict). ``overrides`` are constructor arguments (``clip_layers=``, ``image_size=``...).
        The command line's rebuild path (``engine.models.rebuild``), imported when called.
        """
        from ...engine.models import load_model

        return load_model(path, cls.__name__, **overrides).to(map_location)

    # ------------------------------------------------------------------ mode and caches

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_clip:
            # A frozen CLIP stays in eval mode: no dropout / patch dropout in a frozen network.
            self.clip.eval()
        return self

    def _drop_text_cache(self) -> None:
        self._text_cache = None

    # ------------------------------------------------------------------ towers

    def _encode_prompts(self) -> torch.Tensor:
        """Prompt embeddings through the text tower -> unit vectors [2, Dt] (fp32), (real, fake)."""
        clip, tokens = self.clip, self.prompts.tokens
        length = tokens.shape[1]
        text = self.prompts.token_embeddings(clip.token_embedding) + clip.positional_embedding[:length]
        text = clip.ln_final(clip.transformer(text, attn_mask=clip.attn_mask[:length, :length]))
        text = text[torch.arange(text.shape[0], device=text.device), tokens.argmax(dim=-1)]
        projection = clip.text_projection
        text = projection(text) if isinstance(projection, nn.Linear) else text @ projection
        return F.normalize(text.float(), dim=-1)

    def _text_features(self) -> torch.Tensor:
        """Unit text embeddings [2, Dt]: through the text tower while gradients reach the context
        and whenever CLIP trains, else from a cache that an optimizer step or a weight load (both
        bump the context's version counter) or another device renews."""
        if self.train_clip or (self.prompt_learning and torch.is_grad_enabled()):
            return self._encode_prompts()
        key = (self.prompts.ctx._version if self.prompt_learning else 0, self.prompts.tokens.device)
        if self._text_cache is None or self._text_cache[0] != key:
            with torch.no_grad():
                self._text_cache = (key, self._encode_prompts())
        return self._text_cache[1]

    def _clip_features(self, pixels: torch.Tensor) -> List[torch.Tensor]:
        """CLIP-normalised image [B, 3, H, W] -> K tapped layers [B, 1 + gh * gw, Dc].

        The image is resized to CLIP's input size as the authors do (bilinear, corners
        aligned, no antialiasing). A tap is the ``ln_2`` output (normalised, pre-MLP) of a
        tapped block; the tower stops after the last tapped block. A frozen CLIP runs without
        autograd.
        """
        visual = self.clip.visual
        clip_input = F.interpolate(pixels.float(), size=visual.image_size, mode="bilinear", align_corners=True)
        taps: Dict[int, torch.Tensor] = {}

        def tap(layer):
            return lambda module, inputs, output: taps.__setitem__(layer, output)

        hooks = [visual.transformer.resblocks[layer].ln_2.register_forward_hook(tap(layer))
                 for layer in sorted(set(self.clip_layers))]
        try:
            with torch.set_grad_enabled(self.train_clip and torch.is_grad_enabled()):
                visual.forward_intermediates(clip_input, indices=[max(self.clip_layers)], stop_early=True,
                                             intermediates_only=True)
        finally:
            for hook in hooks:
                hook.remove()
        return [taps[layer] for layer in self.clip_layers]

    def _pixel_features(self, pixels: torch.Tensor, clip_grids: List[torch.Tensor]) -> torch.Tensor:
        """image [B, 3, H, W] + CLIP grids [B, Dc, gh, gw] -> last pixel-encoder map [B, Dp, h, w]."""
        encoder = self.pixel_encoder
        tokens, grid_size = encoder.embed(pixels)
        fusion_at = {block: index for index, block in enumerate(self.fusion_blocks)} if self.use_vca else {}
        use_checkpoint = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for index, block in enumerate(encoder.blocks):
            tokens = checkpoint(block, tokens, use_reentrant=False) if use_checkpoint else block(tokens)
            if index in fusion_at:
                fusion = self.fusions[fusion_at[index]]
                grid = fusion(encoder.to_grid(tokens, grid_size), clip_grids[fusion_at[index]])
                tokens = encoder.from_grid(tokens, grid)
        return encoder.to_grid(tokens, grid_size).permute(0, 3, 1, 2)

    def _mask_logits(self, pixel_map: torch.Tensor, text_fake: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Last pixel-encoder map [B, Dp, h, w] -> mask logits [B, 1, H, W] (fp32)."""
        decoded = self.decoder(pixel_map)
        if self.use_tvca:
            decoded = self.tvca(decoded, text_fake)
        mask_logits = self.mask_head(decoded)
        # An encoder that pads its input (DINOv2, patch 14) covers more than the image: resize to
        # the covered area, then crop the padding away.
        height, width = size
        patch = self.pixel_encoder.patch_size
        covered = (max(pixel_map.shape[-2] * patch, height), max(pixel_map.shape[-1] * patch, width))
        mask_logits = F.interpolate(mask_logits, size=covered, mode="bilinear", align_corners=True)
        return mask_logits[..., :height, :width].float()

    def _detection_logits(self, image_embedding: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """g [B, Dt], unit t [2, Dt] -> logits [B, 2] (real, fake), in fp32 even under autocast."""
        with torch.autocast(device_type=image_embedding.device.type, enabled=False):
            image_embedding, text = image_embedding.float(), text.float()
            if self.detection_head == "cosine":
                logit_scale = self.clip.logit_scale.exp().clamp(max=100.0).float()
                return logit_scale * F.normalize(image_embedding, dim=-1) @ text.t()
            return image_embedding @ text.t()

    # ------------------------------------------------------------------ forward

    def forward(self, image: torch.Tensor, mask: torch.Tensor, label: torch.Tensor,
                edge_mask: torch.Tensor = None, **kwargs) -> Dict:
        """BenCo contract: image [B, 3, H, W] (ImageNet-normalised), mask [B, 1, H, W], label [B].

        ``edge_mask`` [B, 1, H, W] adds the edge loss; other BenCo keys (``shape``, ``name``,
        ``if_predcit_label`` ...) are accepted and ignored. Returns ``backward_loss``,
        ``visual_loss``, ``pred_mask`` [B, 1, H, W] probabilities, ``pred_label`` [B]
        probability of fake, ``visual_image``.
        """
        pixels = image * self.input_scale + self.input_shift
        taps = self._clip_features(pixels)
        grid_h, grid_w = self.clip.visual.grid_size
        clip_grids = [tap[:, 1:].transpose(1, 2).unflatten(2, (grid_h, grid_w)) for tap in taps]
        text = self._text_features()

        pixel_map = self._pixel_features(pixels, clip_grids)
        mask_logits = self._mask_logits(pixel_map, text[1], image.shape[-2:])
        image_embedding = self.vsa(torch.stack([tap[:, 0] for tap in taps], dim=1))
        label_logits = self._detection_logits(image_embedding, text)

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


# ---------------------------------------------------------------------------- foreign checkpoints


def is_authors_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is the authors' MaskCLIP (their module names)."""
    return any(key.startswith("aggregator.vit_model.") for key in state_dict)


def openai_clip_config(state_dict: Dict[str, torch.Tensor], prefix: str = "") -> Dict:
    """open_clip config of an OpenAI-format CLIP state dict, read from its tensor shapes as
    OpenAI's ``build_model`` does (heads = width / 64; OpenAI's CLIPs use QuickGELU)."""
    def shape(key):
        return state_dict[prefix + key].shape

    def count(stem):
        start = prefix + stem + "."
        return len({key[len(start):].split(".")[0] for key in state_dict if key.startswith(start)})

    vision_width, _, patch, _ = shape("visual.conv1.weight")
    grid = math.isqrt(shape("visual.positional_embedding")[0] - 1)
    text_width = shape("ln_final.weight")[0]
    return {
        "embed_dim": shape("text_projection")[1],
        "quick_gelu": True,
        "vision_cfg": {"image_size": patch * grid, "layers": count("visual.transformer.resblocks"),
                       "width": vision_width, "patch_size": patch, "head_width": 64},
        "text_cfg": {"context_length": shape("positional_embedding")[0],
                     "vocab_size": shape("token_embedding.weight")[0], "width": text_width,
                     "heads": text_width // 64, "layers": count("transformer.resblocks")},
    }


def authors_model_flags(state_dict: Dict[str, torch.Tensor]) -> Dict:
    """Constructor arguments of the model an authors' state dict fits.

    The CLIP comes from the tensor shapes; so does the image size (the first global block's
    relative-position table spans 2 x grid - 1). The tapped CLIP layers cannot be read from
    shapes: they stay the default setting's, as in the authors' only setting.
    """
    setting = load_setting(DEFAULT_SETTING)
    setting.update(name="authors checkpoint", clip=openai_clip_config(state_dict, prefix="clip."))
    pixel = setting["pixel_encoder"]
    rel_pos = state_dict[f"aggregator.vit_model.blocks.{pixel['global_blocks'][0]}.attn.rel_pos_h"]
    return {"model_setting": setting, "image_size": (rel_pos.shape[0] + 1) // 2 * pixel["patch_size"]}


def authors_checkpoint_filter(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The authors' MaskCLIP state dict under this model's key names (timm's ``checkpoint_filter_fn``).

    Their CLIP keeps OpenAI's names, as open_clip does; the MAE side network, fusion, decoder,
    class-token aggregator and prompt contexts are renamed, and packed projections are split.
    """
    out = {}
    # their MaskDecoder.stages.<level>.<index> -> our FPN rescale / lateral modules
    stage_map = {0: {0: "rescale.0.0", 1: "rescale.0.1", 3: "rescale.0.3"},
                 1: {0: "rescale.1"}, 2: {}, 3: {}}
    lateral_start = {0: 4, 1: 1, 2: 0, 3: 1}
    simple = {
        "aggregator.vit_model.": "pixel_encoder.",
        "aggregator.text_projection.": "tvca.text_proj.",
        "aggregator.mask_decoder.to_q.": "tvca.attn.q_proj.",
        "aggregator.mask_decoder.proj.": "tvca.attn.out_proj.",
        "aggregator.mask_decoder.linear_fuse.": "decoder.fuse.",
        "aggregator.mask_decoder.norm.": "mask_head.norm.",
        "aggregator.mask_decoder.predict.": "mask_head.predict.",
        "cls_aggregator.layers.0.multihead_attn.out_proj.": "vsa.attn.out_proj.",
        "cls_aggregator.layers.0.layer_norm.": "vsa.norm.",
        "cls_aggregator.projector.0.": "vsa.proj.",
        "clip.": "clip.",
    }
    fusion_parts = {"channel_adjust.0": "clip_proj", "channel_adjust.1": "clip_norm", "query_proj": "attn.q_proj",
                    "key_proj": "attn.k_proj", "value_proj": "attn.v_proj", "output_proj.0": "attn.out_proj",
                    "output_proj.1": "out_norm"}
    # their fusion_layers.layer_<block>, in block order, are our fusions.<index>
    fused_blocks = sorted({int(key.split(".")[2].removeprefix("layer_")) for key in state_dict
                           if key.startswith("aggregator.fusion_layers.")})
    fusion_index = {block: index for index, block in enumerate(fused_blocks)}
    for key, value in state_dict.items():
        prefix = next((p for p in simple if key.startswith(p)), None)
        if prefix is not None:
            out[simple[prefix] + key[len(prefix):]] = value
        elif key.startswith("aggregator.fusion_layers.layer_"):
            _, _, layer, rest = key.split(".", 3)
            part, leaf = rest.rsplit(".", 1)
            out[f"fusions.{fusion_index[int(layer.removeprefix('layer_'))]}.{fusion_parts[part]}.{leaf}"] = value
        elif key.startswith("aggregator.mask_decoder.to_kv."):
            leaf = key.rsplit(".", 1)[1]
            out[f"tvca.attn.k_proj.{leaf}"], out[f"tvca.attn.v_proj.{leaf}"] = value.chunk(2, dim=0)
        elif key.startswith("aggregator.mask_decoder.stages."):
            _, _, _, level, index, leaf = key.split(".")
            level, index = int(level), int(index)
            if index in stage_map[level]:
                out[f"decoder.{stage_map[level][index]}.{leaf}"] = value
            else:
                out[f"decoder.lateral.{level}.{index - lateral_start[level]}.{leaf}"] = value
        elif key.startswith("cls_aggregator.layers.0.multihead_attn.in_proj_"):
            leaf = key.rsplit("_", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"vsa.attn.{name}.{leaf}"] = part
        elif key in ("prompt_learner.ctx_neg", "prompt_learner.ctx_pos"):
            continue
        else:
            out[key] = value  # left for load_strictly to name
    if "prompt_learner.ctx_neg" in state_dict:
        # their prompt order is [negative, positive], ours (real, fake)
        out["prompts.ctx"] = torch.cat([state_dict["prompt_learner.ctx_neg"], state_dict["prompt_learner.ctx_pos"]])
    return out
