"""NFA_ViT through ``benco-maskclip`` (the commands in this process): train one epoch at 64 px
from random weights on four images, then test and predict with the checkpoint it wrote."""
import json

import numpy as np
from PIL import Image

RANDOM = ["--np_pretrain_weights", "none", "--seg_b0_pretrain_weights", "none", "--seg_b2_pretrain_weights", "none"]
CPU = ["--device", "cpu", "--image_size", "64", "--if_resizing", "--num_workers", "0", "--seed", "0"]


def four_images(folder):
    """A BenCo JSON list [[image, mask or "Negative"], ...]: two real, two partly edited."""
    rng = np.random.default_rng(3)
    entries = []
    for index in range(4):
        image = folder / f"tp_{index}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
        if index < 2:
            entries.append([str(image), "Negative"])
            continue
        mask = np.zeros((64, 64), np.uint8)
        mask[8 * index:40, 16:56] = 255
        Image.fromarray(mask).save(folder / f"gt_{index}.png")
        entries.append([str(image), str(folder / f"gt_{index}.png")])
    (folder / "four.json").write_text(json.dumps(entries))
    (folder / "test_sets.json").write_text(json.dumps({"four": str(folder / "four.json")}))
    return folder / "four.json", folder / "test_sets.json"


def test_train_then_test_and_predict_with_its_checkpoint(tmp_path, cli_in_this_process):
    run_cli = cli_in_this_process
    train_set, test_sets = four_images(tmp_path)
    out = tmp_path / "train"
    run_cli(["train", "--model", "NFA_ViT", *RANDOM, *CPU, "--data_path", str(train_set), "--batch_size", "2",
             "--epochs", "1", "--warmup_epochs", "0", "--lr", "1e-4", "--test_data_path", str(test_sets),
             "--test_batch_size", "4", "--output_dir", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())["splits"]["four"]
    assert metrics["n_images"] == 4 and metrics["image_auc"] is not None

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(photo)
    log = run_cli(["predict", "--checkpoint_path", str(out), "--device", "cpu", "--output_dir",
                   str(tmp_path / "predict"), str(photo)])
    assert "NFA_ViT" in log
    assert np.asarray(Image.open(tmp_path / "predict" / "masks" / "photo.png")).shape == (72, 96)
