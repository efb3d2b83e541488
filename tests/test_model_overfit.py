"""A tiny MaskCLIP can learn: it overfits a few images with a pasted square to high pixel F1."""
import torch
import torch.nn.functional as F

from imdlbenco_maskclip.model_zoo.maskclip import MaskCLIP

SIZE = 64


def pasted_square_images(count: int, generator: torch.Generator):
    """Smooth backgrounds with a square of fine-grained noise pasted at a random place."""
    backgrounds = F.interpolate(torch.randn(count, 3, 8, 8, generator=generator), size=(SIZE, SIZE),
                                mode="bilinear", align_corners=False)
    images, masks = backgrounds.clone(), torch.zeros(count, 1, SIZE, SIZE)
    for index in range(count):
        side = int(torch.randint(16, 29, (1,), generator=generator))
        top, left = (int(v) for v in torch.randint(0, SIZE - side, (2,), generator=generator))
        images[index, :, top:top + side, left:left + side] = torch.randn(3, side, side, generator=generator)
        masks[index, :, top:top + side, left:left + side] = 1.0
    return images, masks


def pixel_f1(pred_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image F1 of ``pred_mask > 0.5`` against the binary mask -> [B]."""
    predicted = (pred_mask > 0.5).float().flatten(1)
    target = mask.flatten(1)
    true_positive = (predicted * target).sum(1)
    return 2 * true_positive / (predicted.sum(1) + target.sum(1)).clamp(min=1)


def test_tiny_model_overfits_pasted_squares():
    torch.manual_seed(0)
    images, masks = pasted_square_images(8, torch.Generator().manual_seed(0))
    labels = torch.ones(8, dtype=torch.long)
    model = MaskCLIP(model_setting="tiny", image_size=SIZE, edge_weight=0.0).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)

    for _ in range(150):  # about 20 s on 2 idle cores
        loss = model(image=images, mask=masks, label=labels)["backward_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    with torch.no_grad():
        out = model(image=images, mask=masks, label=labels)
    f1 = pixel_f1(out["pred_mask"], masks)
    assert f1.mean() > 0.9, f1
    assert (out["pred_label"] > 0.5).all()
