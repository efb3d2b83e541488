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
    assert vitl14_mae.pixel_encoder.pos_embed.shape == (1, 32, 32, 768)
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
