"""--dtype: reduced-precision inference agrees with fp32, and the parts that would not stay fp32."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from imdlbenco_maskclip.datasets import OpenSDID
from imdlbenco_maskclip.engine import precision
from imdlbenco_maskclip.errors import UserError
from imdlbenco_maskclip.model_zoo.maskclip import MaskCLIP
from imdlbenco_maskclip.model_zoo.maskclip.maskclip import TVCA

SIZE = 64
CPU = torch.device("cpu")


def batch_of(dataset, indices):
    return default_collate([dataset[i] for i in indices])


@pytest.fixture(scope="module")
def trained():
    """A tiny MaskCLIP trained on four of the sample's sd15 training rows until its masks are
    confident, and eight of the sample's sd15 test rows."""
    torch.manual_seed(0)
    train = OpenSDID("sample:train#sd15", is_resizing=True, output_size=(SIZE, SIZE))
    test = OpenSDID("sample:test#sd15", is_resizing=True, output_size=(SIZE, SIZE))

    def rows(dataset, partial, real):
        kinds = dataset.kinds
        return [i for i, k in enumerate(kinds) if k == "partial"][:partial] + \
            [i for i, k in enumerate(kinds) if k == "real"][:real]
    batch = batch_of(train, rows(train, 3, 1))
    model = MaskCLIP(model_setting="tiny", image_size=SIZE, edge_weight=0.0).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(40):
        loss = model(image=batch["image"], mask=batch["mask"], label=batch["label"])["backward_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), batch_of(test, rows(test, 6, 2))


def run(model, batch, dtype_name):
    with torch.no_grad():
        out = precision.for_inference(model, dtype_name, CPU)(image=batch["image"], mask=batch["mask"],
                                                              label=batch["label"])
    return out


def f1(a, b):
    """F1 of boolean mask ``a`` against ``b`` over all pixels."""
    both, total = (a & b).sum().item(), a.sum().item() + b.sum().item()
    return 1.0 if total == 0 else 2 * both / total


@pytest.mark.parametrize("dtype_name", ["bf16", "fp16"])
def test_reduced_precision_masks_and_scores_agree_with_fp32(trained, dtype_name):
    model, batch = trained
    reference = run(model, batch, "fp32")
    probs = reference["pred_mask"]
    # Confident masks, so that agreement at the 0.5 threshold means something.
    assert ((probs - 0.5).abs() < 0.1).float().mean() < 0.1
    out = run(model, batch, dtype_name)
    assert all(v.dtype == torch.float32 for k, v in out.items() if torch.is_tensor(v) and v.is_floating_point())
    assert f1(out["pred_mask"] > 0.5, probs > 0.5) >= 0.99
    assert (out["pred_label"] - reference["pred_label"]).abs().max() <= 0.01
    assert not torch.equal(out["pred_mask"], probs)  # it did run in reduced precision


def test_fp32_is_the_model_itself():
    model = torch.nn.Linear(2, 2)
    assert precision.for_inference(model, "fp32", CPU) is model
    wrapped = precision.for_inference(model, "bf16", CPU)
    assert wrapped.model is model and wrapped(torch.ones(1, 2)).dtype == torch.float32


def test_bf16_on_a_gpu_without_it_names_the_flag(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Old GPU")
    with pytest.raises(UserError, match="--dtype bf16") as info:
        precision.check_supported("bf16", torch.device("cuda"))
    assert "fp16" in info.value.hint


def test_tvca_softmax_over_all_pixels_needs_no_fp32_island():
    """In fp16 a softmax over 128 x 128 pixels flushes its smallest weights to zero, yet TVCA's
    attended vector, a sum over all pixels, stays within 2% of fp32's (fp16's own rounding of
    the map and the projections is of that size): it runs under autocast as it is."""
    torch.manual_seed(0)
    tvca = TVCA(text_dim=32, channels=64, num_heads=8).eval()
    feature_map, text = torch.randn(1, 64, 128, 128), torch.randn(32)
    logits = torch.randn(1, 8, 128 * 128) * 2
    assert (logits.softmax(-1) > 0).all() and (logits.half().softmax(-1) == 0).any()
    with torch.no_grad():
        change = tvca(feature_map, text) - feature_map  # the attended vector added to every pixel
        with torch.autocast("cpu", dtype=torch.float16):
            reduced = tvca(feature_map.half(), text).float() - feature_map.half().float()
    assert (reduced - change).abs().max() / change.abs().max() < 0.02


def test_losses_are_fp32_under_autocast():
    """Why: the edge-weighted BCE of a 512 x 512 mask sums 262K per-pixel terms; an fp16 sum
    overflows at 65504."""
    logits, target = torch.randn(1, 1, 512, 512) * 4, (torch.rand(1, 1, 512, 512) > 0.5).float()
    per_pixel = F.binary_cross_entropy_with_logits(logits.half(), target.half(), reduction="none")
    assert torch.isinf(per_pixel.sum()) and torch.isfinite(per_pixel.float().sum())
    model = MaskCLIP(model_setting="tiny", image_size=SIZE).eval()
    image = torch.randn(1, 3, SIZE, SIZE)
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 16:40, 16:40] = 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out = model(image=image, mask=mask, label=torch.ones(1), edge_mask=mask)
    assert all(loss.dtype == torch.float32 for loss in out["visual_loss"].values())
    logits = torch.logit(out["pred_mask"].double()).float()
    assert torch.allclose(out["visual_loss"]["bce_loss"] / model.bce_weight,
                          F.binary_cross_entropy_with_logits(logits, mask), rtol=1e-3)


def test_layer_norm_needs_no_fp32_island():
    """torch's LayerNorm kernels keep their statistics in fp32 for bf16 and fp16 inputs (and CUDA
    autocast runs layer_norm in fp32), so activations whose squares overflow fp16 normalise
    correctly."""
    x = torch.randn(4, 1024) * 300  # x ** 2 is beyond fp16's 65504
    assert torch.isinf(x.half() ** 2).any()
    reference = F.layer_norm(x, (1024,))
    for dtype in (torch.float16, torch.bfloat16):
        assert (F.layer_norm(x.to(dtype), (1024,)).float() - reference).abs().max() < 0.05


def test_predict_at_bf16_agrees_with_fp32_and_says_so(tmp_path, trained, capsys):
    """Through the command: the trained checkpoint on the sample's test images, fp32 and bf16."""
    import argparse
    import csv
    import json

    from PIL import Image

    from imdlbenco_maskclip.cli import main
    model, _ = trained
    checkpoint = tmp_path / "checkpoint.pth"
    args = argparse.Namespace(model="MaskCLIP", model_args={"model_setting": "tiny", "image_size": SIZE,
                                                            "clip_pretrained": "none", "pixel_pretrained": "none"},
                              image_size=SIZE, if_padding=False, if_resizing=True)
    torch.save({"model": model.state_dict(), "epoch": 0, "args": args}, checkpoint)
    test = OpenSDID("sample:test#sd15", is_resizing=True)
    for index in [i for i, kind in enumerate(test.kinds) if kind == "partial"][:3]:
        Image.fromarray(test.read(index)[0]).save(tmp_path / f"{index}.png")
    outputs = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / dtype
        assert main(["predict", "--checkpoint_path", str(checkpoint), "--output_dir", str(out), "--device", "cpu",
                     "--num_workers", "0", "--dtype", dtype, *map(str, sorted(tmp_path.glob("*.png")))]) == 0
        assert f"on cpu in {dtype}" in capsys.readouterr().out
        assert json.loads((out / "predictions.json").read_text())["dtype"] == dtype
        with open(out / "predictions.csv") as f:
            outputs[dtype] = list(csv.DictReader(f))
    for fp32, bf16 in zip(outputs["fp32"], outputs["bf16"]):
        assert abs(float(fp32["fake_probability"]) - float(bf16["fake_probability"])) <= 0.01
        masks = [np.asarray(Image.open(tmp_path / d / "masks" / f"{fp32['name']}.png")) > 127 for d in outputs]
        assert f1(torch.from_numpy(masks[1]), torch.from_numpy(masks[0])) >= 0.99
    with pytest.raises(SystemExit) as exit_info:  # argparse's own error for a value not among the choices
        main(["predict", "--checkpoint_path", str(checkpoint), "--dtype", "int8", str(tmp_path)])
    assert exit_info.value.code == 2 and "--dtype" in capsys.readouterr().err
