"""The paper's settings build on CPU with random weights, with the paper's parameter budget."""
import pytest
import torch

from imdlbenco_maskclip.model_zoo.maskclip import MaskCLIP

PAPER_TRAINABLE_VITL14_MAE = 114e6  # paper Table 12


def trainable_parameters(model: MaskCLIP) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def uses_quick_gelu(model: MaskCLIP) -> bool:
    from open_clip.transformer import QuickGELU

    return all(isinstance(block.mlp.gelu, QuickGELU) for block in model.clip.visual.transformer.resblocks)


@pytest.fixture(scope="module")
def vitl14_mae():
    return MaskCLIP(model_setting="vitl14_mae", image_size=512, clip_pretrained="none", pixel_pretrained="none")


def test_vitl14_mae_matches_the_paper_size(vitl14_mae):
    assert abs(trainable_parameters(vitl14_mae) - PAPER_TRAINABLE_VITL14_MAE) < 0.1 * PAPER_TRAINABLE_VITL14_MAE
    assert vitl14_mae.clip.visual.transformer.width == 1024 and len(vitl14_mae.clip.visual.transformer.resblocks) == 24
    assert uses_quick_gelu(vitl14_mae)  # OpenAI weights were trained with QuickGELU
    assert vitl14_mae.pixel_encoder.pos_embed.shape == (1, 1 + 14 * 14, 768)  # MAE's table, resampled per forward
    global_blocks = [i for i, block in enumerate(vitl14_mae.pixel_encoder.blocks) if block.window_size == 0]
    assert global_blocks == [2, 5, 8, 11]
    assert not any(p.requires_grad for p in vitl14_mae.clip.parameters())


def test_vitb32_mae_builds():
    model = MaskCLIP(model_setting="vitb32_mae", image_size=512, clip_pretrained="none", pixel_pretrained="none")
    assert model.clip.visual.transformer.width == 768 and model.clip.visual.grid_size == (7, 7)
    assert uses_quick_gelu(model)
    assert 0 < trainable_parameters(model) < 130e6


@pytest.mark.slow
def test_vitl14_mae_forward_at_512(vitl14_mae):
    model = vitl14_mae.eval()
    image = torch.randn(1, 3, 512, 512)
    mask = torch.zeros(1, 1, 512, 512)
    with torch.no_grad():
        out = model(image=image, mask=mask, label=torch.zeros(1, dtype=torch.long))
    assert out["pred_mask"].shape == (1, 1, 512, 512) and out["pred_label"].shape == (1,)
    assert torch.isfinite(out["backward_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["vitl14_sam", "vitl14_dinov2", "openclip_vitl14_mae"])
def test_other_paper_settings_forward(setting):
    # 240 is no multiple of 14: DINOv2 pads its input and the mask is cropped back.
    model = MaskCLIP(model_setting=setting, image_size=240, clip_pretrained="none", pixel_pretrained="none").eval()
    with torch.no_grad():
        out = model(image=torch.randn(1, 3, 240, 240), mask=torch.zeros(1, 1, 240, 240),
                    label=torch.ones(1, dtype=torch.long))
    assert out["pred_mask"].shape == (1, 1, 240, 240) and torch.isfinite(out["backward_loss"])
    assert uses_quick_gelu(model) == (setting != "openclip_vitl14_mae")


def paper_pixel_encoder(setting: str):
    from imdlbenco_maskclip.model_zoo.maskclip import load_setting
    from imdlbenco_maskclip.model_zoo.maskclip.pixel_encoders import build_pixel_encoder

    setting = load_setting(setting)
    return build_pixel_encoder(setting["pixel_encoder"], image_size=512), setting


def test_mae_release_layout_loads_into_the_windowed_encoder(tmp_path):
    """timm's ViT-B/16 keys are the MAE release's: class token, 14x14 positions, final norm."""
    import timm
    from imdlbenco_maskclip.model_zoo.maskclip.pretrained import load_pixel_weights

    mae = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": mae.state_dict()}, path)
    encoder, setting = paper_pixel_encoder("vitl14_mae")
    load_pixel_weights(encoder, setting, str(path))  # strict: raises on any tensor left over

    assert torch.equal(encoder.blocks[11].mlp.fc2.weight, mae.blocks[11].mlp.fc2.weight)
    assert torch.equal(encoder.patch_embed.proj.weight, mae.patch_embed.proj.weight)
    assert torch.equal(encoder.pos_embed, mae.pos_embed)


def test_sam_layout_loads_into_the_windowed_encoder(tmp_path):
    """SAM at 1024 (64x64 grid): positions and global relative positions resized to 512."""
    import timm
    from imdlbenco_maskclip.model_zoo.maskclip.pretrained import load_pixel_weights

    sam = timm.create_model("samvit_base_patch16", pretrained=False, num_classes=0)
    with torch.no_grad():
        sam.blocks[2].attn.rel_pos_h.normal_()
    path = tmp_path / "sam_vit_b.pth"
    torch.save(sam.state_dict(), path)
    encoder, setting = paper_pixel_encoder("vitl14_sam")
    load_pixel_weights(encoder, setting, str(path))

    assert encoder.blocks[2].attn.rel_pos_h.shape == (63, 64)
    assert encoder.blocks[2].attn.rel_pos_h.abs().sum() > 0  # resized from SAM's, not left at zero
    assert torch.equal(encoder.blocks[0].attn.rel_pos_h, sam.blocks[0].attn.rel_pos_h)  # windowed: same size
    assert torch.equal(encoder.blocks[5].attn.qkv.weight, sam.blocks[5].attn.qkv.weight)
    assert torch.equal(encoder.pos_embed, sam.pos_embed.flatten(1, 2))
