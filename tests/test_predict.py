"""``benco-maskclip predict``: a checkpoint on a user's own image files."""
import argparse
import csv
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from imdlbenco_maskclip.cli import main
from imdlbenco_maskclip.model_zoo.maskclip import MaskCLIP

SIZE = 64
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def save_checkpoint(path, padding=False, clip_pretrained="none", mask_bias=0.0):
    """A checkpoint as `benco-maskclip train` writes it: BenCo's save_model dict with the flags.
    ``mask_bias`` shifts every mask logit (negative: most pixels unmarked)."""
    torch.manual_seed(0)
    model = MaskCLIP(model_setting="tiny", image_size=SIZE, clip_pretrained="none", pixel_pretrained="none")
    for parameter in model.parameters():  # zero-initialised parts would make every mask flat
        parameter.data.add_(torch.randn_like(parameter) * 0.05)
    model.mask_head.predict.bias.data.add_(mask_bias)
    model_args = {"model_setting": "tiny", "image_size": SIZE, "clip_pretrained": clip_pretrained,
                  "pixel_pretrained": "none"}
    args = argparse.Namespace(model="MaskCLIP", model_args=model_args, image_size=SIZE,
                              if_padding=padding, if_resizing=not padding)
    torch.save({"model": model.state_dict(), "epoch": 3, "args": args}, path)
    return model.eval()


def photo(height, width, seed):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return np.clip(base + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(photo(80, 100, 0)).save(root / "a" / "x.png")
    Image.fromarray(photo(50, 40, 1)).save(root / "b" / "x.jpg", quality=95)  # same stem, other folder
    Image.fromarray(photo(90, 70, 2)).convert("L").save(root / "b" / "grey.png")
    Image.fromarray(photo(120, 150, 3)).convert("RGBA").save(root / "b" / "rgba.png")
    (root / "b" / ".hidden.png").write_bytes(b"not a sample")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def read_rows(out):
    with open(out / "predictions.csv") as f:
        return list(csv.DictReader(f))


def hand_prediction(model, path):
    """BenCo's resize pipeline written out: cv2 bilinear resize, ImageNet normalisation."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    resized = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    image = torch.from_numpy(((resized / 255.0 - MEAN) / STD).transpose(2, 0, 1)).float()[None]
    with torch.no_grad():
        out = model(image=image, mask=torch.zeros(1, 1, SIZE, SIZE), label=torch.zeros(1, dtype=torch.long))
    mask = F.interpolate(out["pred_mask"], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    return float(out["pred_label"][0]), mask.numpy()


def test_predict_writes_masks_overlays_table_and_gallery(tmp_path, images, capsys):
    checkpoint = tmp_path / "checkpoint-best.pth"
    model = save_checkpoint(checkpoint)
    out = tmp_path / "out"
    rc = main(["predict", "--checkpoint_path", str(checkpoint), "--output_dir", str(out), "--device", "cpu",
               "--batch_size", "3", "--num_workers", "0", str(images)])
    assert rc == 0
    rows = read_rows(out)
    assert [row["path"] for row in rows] == [str(images / p) for p in ("a/x.png", "b/grey.png", "b/rgba.png", "b/x.jpg")]
    assert [row["name"] for row in rows] == ["x", "grey", "rgba", "x~2"]
    for row in rows:
        original = Image.open(row["path"])
        mask = np.asarray(Image.open(out / "masks" / f"{row['name']}.png"))
        assert mask.shape == (original.height, original.width) and mask.dtype == np.uint8
        assert Image.open(out / "overlays" / f"{row['name']}.jpg").size == original.size
        fake, hand_mask = hand_prediction(model, row["path"])
        assert float(row["fake_probability"]) == pytest.approx(fake, abs=1e-5)
        assert int(row["predicted_fake"]) == int(fake >= 0.5)
        assert np.abs(mask.astype(float) - hand_mask * 255).max() <= 1.0
        assert float(row["marked_fraction"]) == pytest.approx((hand_mask > 0.5).mean(), abs=0.02)
    assert len({row["fake_probability"] for row in rows}) == 4  # each image its own prediction
    with Image.open(out / "gallery.png") as gallery:
        # four images in one row of 3.2 x 3.4 inch panels at 90 dpi, each picture drawn in it
        assert gallery.format == "PNG" and gallery.size == (1152, 306)
        assert len(np.unique(np.asarray(gallery.convert("RGB")).reshape(-1, 3), axis=0)) > 1000
    saved = json.loads((out / "predictions.json").read_text())
    assert saved["epoch"] == 3 and saved["skipped"] == [] and len(saved["predictions"]) == 4
    assert "4 images predicted, 0 skipped" in capsys.readouterr().out


def test_weights_come_from_the_checkpoint_without_any_download(tmp_path, images):
    checkpoint = tmp_path / "model.pth"
    save_checkpoint(checkpoint, clip_pretrained=str(tmp_path / "clip_weights_that_do_not_exist.pt"))
    rc = main(["predict", "--checkpoint_path", str(checkpoint), "--output_dir", str(tmp_path / "out"),
               "--device", "cpu", "--num_workers", "0", str(images / "a" / "x.png")])
    assert rc == 0 and len(read_rows(tmp_path / "out")) == 1


def test_unreadable_files_are_skipped_counted_and_listed(tmp_path, images, capsys):
    checkpoint = tmp_path / "model.pth"
    save_checkpoint(checkpoint)
    broken = images / "b" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    out = tmp_path / "out"
    rc = main(["predict", "--checkpoint_path", str(checkpoint), "--output_dir", str(out), "--device", "cpu",
               "--batch_size", "2", "--num_workers", "1", str(images)])
    assert rc == 1
    assert [row["name"] for row in read_rows(out)] == ["x", "grey", "rgba", "x~2"]
    skipped = json.loads((out / "predictions.json").read_text())["skipped"]
    assert [entry["path"] for entry in skipped] == [str(broken)] and skipped[0]["reason"]
    captured = capsys.readouterr()
    assert "4 images predicted, 1 skipped" in captured.out and f"skipped {broken}" in captured.err
    assert not (out / "masks" / "broken.png").exists()


def test_pad_mode_crops_small_images_and_shrinks_large_ones(tmp_path):
    checkpoint = tmp_path / "model.pth"
    model = save_checkpoint(checkpoint, padding=True)
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.fromarray(photo(40, 50, 4)).save(small)
    Image.fromarray(photo(100, 200, 5)).save(large)
    out = tmp_path / "out"
    # Both in one batch: padded (or shrunk) to the same --image_size, whatever their own sizes.
    assert main(["predict", "--checkpoint_path", str(checkpoint), "--output_dir", str(out), "--device", "cpu",
                 "--num_workers", "0", "--batch_size", "2", str(small), str(large)]) == 0
    for path in (small, large):
        assert Image.open(out / "masks" / f"{path.stem}.png").size == Image.open(path).size
    # The small image, black-padded bottom-right to 64 x 64, then normalised: its mask is the top-left crop.
    padded = np.zeros((SIZE, SIZE, 3))
    padded[:40, :50] = np.asarray(Image.open(small))
    padded = (padded / 255.0 - MEAN) / STD
    with torch.no_grad():
        expected = model(image=torch.from_numpy(padded.transpose(2, 0, 1)).float()[None],
                         mask=torch.zeros(1, 1, SIZE, SIZE), label=torch.zeros(1, dtype=torch.long))
    mask = np.asarray(Image.open(out / "masks" / "small.png")).astype(float)
    assert np.abs(mask - expected["pred_mask"][0, 0, :40, :50].numpy() * 255).max() <= 1.0


def test_exif_rotated_photos_are_predicted_upright_and_a_file_named_twice_once(tmp_path):
    checkpoint = tmp_path / "model.pth"
    save_checkpoint(checkpoint, mask_bias=-2.0)  # the overlay must show the photo in most places
    folder = tmp_path / "phone"
    folder.mkdir()
    stored = photo(60, 120, 7)  # 120 wide as stored; EXIF 6 says: turn 90 degrees clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(folder / "rot.jpg", exif=exif, quality=95)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint_path", str(checkpoint), "--output_dir", str(out), "--device", "cpu",
                 "--num_workers", "0", str(folder), str(folder / "rot.jpg")]) == 0
    assert Image.open(out / "masks" / "rot.png").size == Image.open(out / "overlays" / "rot.jpg").size == (60, 120)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(folder / "rot.jpg"))).astype(float)
    turned_the_other_way = np.rot90(np.asarray(Image.open(folder / "rot.jpg")), k=1).astype(float)
    overlay = np.asarray(Image.open(out / "overlays" / "rot.jpg")).astype(float)
    unmarked = np.asarray(Image.open(out / "masks" / "rot.png")) <= 127  # the photo itself shows there
    assert unmarked.mean() > 0.1
    assert (np.abs(overlay - upright)[unmarked].mean() * 2
            < np.abs(overlay - turned_the_other_way)[unmarked].mean())
    rows = (out / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and rows[1].startswith(str(folder / "rot.jpg"))


@pytest.mark.parametrize("case, message", [
    ("missing_input", "nowhere"),
    ("no_images", "empty"),
    ("bare_state_dict", "--checkpoint_path"),
    ("bad_threshold", "--threshold"),
    ("bad_device", "--device gpu0"),
    ("bad_batch_size", "--batch_size"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, case, message):
    checkpoint = tmp_path / "model.pth"
    save_checkpoint(checkpoint)
    inputs = [str(tmp_path / "image.png")]
    Image.fromarray(photo(20, 20, 6)).save(inputs[0])
    extra = []
    if case == "missing_input":
        inputs = [str(tmp_path / "nowhere")]
    elif case == "no_images":
        (tmp_path / "empty").mkdir()
        inputs = [str(tmp_path / "empty")]
    elif case == "bare_state_dict":
        torch.save(torch.load(checkpoint, weights_only=False)["model"], checkpoint)
    elif case == "bad_threshold":
        extra = ["--threshold", "1.5"]
    elif case == "bad_batch_size":
        extra = ["--batch_size", "0"]
    else:
        extra = ["--device", "gpu0"]
    rc = main(["predict", "--checkpoint_path", str(checkpoint), "--output_dir", str(tmp_path / "out"),
               "--device", "cpu", *extra, *inputs])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("benco-maskclip predict: error: ") and message in err


def test_a_model_without_image_level_output_predicts_masks_and_na(tmp_path, images):
    """BenCo's IML-ViT needs its edge mask and gives no pred_label: masks, and n/a for P(fake)."""
    from IMDLBenCo.registry import MODELS
    small = {"input_size": SIZE, "embed_dim": 48, "fpn_channels": 16, "mlp_embeding_dim": 16}
    torch.manual_seed(0)
    model = MODELS.get("IML_ViT")(**small)
    # Its weight source as saved at training time, a file absent here: predict must not read it.
    model_args = {**small, "vit_pretrain_path": str(tmp_path / "mae_weights_not_here.pth")}
    args = argparse.Namespace(model="IML_ViT", model_args=model_args, image_size=SIZE, if_padding=False,
                              if_resizing=True, edge_mask_width=7)
    torch.save({"model": model.state_dict(), "epoch": 0, "args": args}, tmp_path / "iml_vit.pth")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint_path", str(tmp_path / "iml_vit.pth"), "--output_dir", str(out),
                 "--device", "cpu", "--num_workers", "0", str(images / "a" / "x.png")]) == 0
    rows = read_rows(out)
    assert [(row["name"], row["fake_probability"], row["predicted_fake"]) for row in rows] == [("x", "n/a", "n/a")]
    saved = json.loads((out / "predictions.json").read_text())["predictions"][0]
    assert saved["fake_probability"] is None and saved["predicted_fake"] is None
    assert Image.open(out / "masks" / "x.png").size == (100, 80)
