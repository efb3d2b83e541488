"""The robustness sweep's levels are BenCo's wrappers, applied before resize like BenCo's test_robust.py;
test sets and weights as test and test-robust open them."""
import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from imdlbenco_maskclip import cli
from imdlbenco_maskclip.datasets import OpenSDID
from imdlbenco_maskclip.engine import data, evaluation, robustness
from imdlbenco_maskclip.engine.models import build_model
from imdlbenco_maskclip.flags import parse
from imdlbenco_maskclip.engine.robustness import sweep


def save_untrained_tiny(path):
    """A bare state dict of the tiny MaskCLIP at 64 px: untrained weights, no saved flags."""
    args, model_args = parse("train", ["--model_setting", "tiny", "--image_size", "64"])
    torch.save(build_model(args, model_args).state_dict(), path)


def robust_args(tmp_path, *extra):
    torch.save({}, tmp_path / "bare.pth")  # a state dict without flags: parsing reads nothing from it
    args, _ = parse("test-robust", ["--checkpoint_path", str(tmp_path / "bare.pth"), "--model_setting", "tiny",
                                    "--image_size", "64", "--test_data_path", "sample:test", "--test_splits", "sd2",
                                    *extra])
    return args


def test_paper_sweep_levels_with_clean_reference_first(tmp_path):
    levels = sweep(robust_args(tmp_path))
    assert levels[0] == ("clean", 0, None)
    assert [lv for p, lv, _ in levels if p == "gaussian_blur"] == list(range(3, 24, 2))
    assert [lv for p, lv, _ in levels if p == "jpeg"] == [60, 70, 80, 90, 100]
    assert not [lv for p, lv, _ in levels if p == "gaussian_noise"]  # noise only on request


def test_higher_levels_are_stronger_perturbations(tmp_path):
    """Each level's transform is the perturbation its name says, at the strength its level says."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 60, (64, 64, 3)), 0, 255).astype(np.uint8)
    args = robust_args(tmp_path, "--blur_kernels", "3,7,23", "--jpeg_qualities", "30,95", "--noise_vars", "5,200")
    change = {}
    for perturbation, level, transform in sweep(args)[1:]:
        perturbed = transform(image=image)["image"]
        assert perturbed.shape == image.shape
        change[perturbation, level] = np.abs(perturbed.astype(float) - image).mean()
    assert 0 < change["gaussian_blur", 3] < change["gaussian_blur", 7] < change["gaussian_blur", 23]
    assert 0 < change["jpeg", 95] < change["jpeg", 30]
    assert 0 < change["gaussian_noise", 5] < change["gaussian_noise", 200]


def test_each_level_changes_the_image_but_not_mask_or_label(tmp_path):
    args = robust_args(tmp_path, "--blur_kernels", "9", "--jpeg_qualities", "60", "--noise_vars", "50")
    dataset = data.open_test_dataset(args, "sd2", data.test_sources(args)["sd2"])
    partial = int(dataset.is_partial.nonzero()[0][0])
    samples = {}
    for perturbation, level, transform in sweep(args):
        dataset.common_transforms = transform  # what robustness.run does per level
        samples[perturbation] = dataset[partial]
    clean = samples.pop("clean")
    for perturbation, sample in samples.items():
        assert not torch.allclose(sample["image"], clean["image"], atol=1e-3), perturbation
        assert torch.equal(sample["mask"], clean["mask"]) and sample["label"] == clean["label"] == 1


@pytest.mark.usefixtures("no_process_group_left_behind")
@pytest.mark.parametrize("command", ["test", "test-robust"])
def test_a_balanced_dataset_test_set_is_refused_before_the_model_loads(tmp_path, capsys, command):
    balanced = tmp_path / "balanced.json"
    balanced.write_text(json.dumps([["OpenSDID", "sample:test#sd2"]]))
    tests = tmp_path / "tests.json"
    tests.write_text(json.dumps({"mixed": str(balanced)}))
    # Training flags but no weights: loading it would fail, so the error below comes first.
    checkpoint = tmp_path / "never_loaded.pth"
    torch.save({"model": {}, "args": argparse.Namespace(model="MaskCLIP", model_args={})}, checkpoint)
    assert cli.main([command, "--checkpoint_path", str(checkpoint), "--model_setting", "tiny",
                     "--image_size", "64", "--test_data_path", str(tests), "--device", "cpu",
                     "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: --test_data_path [mixed] {balanced}" in err and "BalancedDataset" in err


@pytest.mark.usefixtures("no_process_group_left_behind")
def test_every_level_logs_at_its_own_step_so_fractional_noise_levels_stay_apart(tmp_path):
    checkpoint, out = tmp_path / "tiny.pth", tmp_path / "out"
    save_untrained_tiny(checkpoint)  # only the logs count
    args, model_args = parse("test-robust", [
        "--checkpoint_path", str(checkpoint), "--model_setting", "tiny", "--image_size", "64", "--device", "cpu",
        "--test_data_path", "sample:test", "--test_splits", "sd2", "--blur_kernels", "", "--jpeg_qualities", "",
        "--noise_vars", "0.5,0.7", "--num_workers", "0", "--test_batch_size", "8", "--output_dir", str(out)])
    assert robustness.run(args, model_args) == 0

    steps, levels, logged = {}, {}, {}
    for level_dir in (out / "sd2").iterdir():
        events = EventAccumulator(str(level_dir))
        events.Reload()
        steps[level_dir.name] = {e.step for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
        levels[level_dir.name] = [(e.step, e.value) for tag in events.Tags()["scalars"] if tag.endswith("_level")
                                  for e in events.Scalars(tag)]
        logged[level_dir.name] = json.loads((level_dir / "log.txt").read_text()).get("step")
    assert steps == {"clean_0": {0}, "gaussian_noise_0.5": {1}, "gaussian_noise_0.7": {2}}
    assert logged == {"clean_0": 0, "gaussian_noise_0.5": 1, "gaussian_noise_0.7": 2}
    assert levels["gaussian_noise_0.5"] == [(1, pytest.approx(0.5))]
    assert levels["gaussian_noise_0.7"] == [(2, pytest.approx(0.7))]


@pytest.mark.usefixtures("no_process_group_left_behind")
def test_test_takes_every_weight_from_the_checkpoint_and_reads_no_weight_source(tmp_path):
    checkpoint, out = tmp_path / "tiny.pth", tmp_path / "out"
    argv = ["--checkpoint_path", str(checkpoint), "--model_setting", "tiny", "--image_size", "64",
            "--device", "cpu", "--test_data_path", "sample:test", "--test_splits", "sd2", "--num_workers", "0",
            "--test_batch_size", "8", "--output_dir", str(out)]
    save_untrained_tiny(checkpoint)
    # Weight sources that cannot be read: building the model from them would raise WeightSourceError.
    missing = str(tmp_path / "not_downloaded.pt")
    args, model_args = parse("test", [*argv, "--clip_pretrained", missing, "--pixel_pretrained", missing])
    assert evaluation.run(args, model_args) == 0
    assert (out / "metrics.json").is_file()
    # --gallery_size 6: a row of 7.8 x 2.7 inches at 90 dpi per partial fake shown
    shown = min(6, OpenSDID("sample:test#sd2", is_resizing=True).num_partial)
    with Image.open(out / "masks" / "sd2.png") as gallery:
        assert gallery.format == "PNG" and gallery.size == (702, 243 * shown)


@pytest.mark.usefixtures("no_process_group_left_behind")
def test_a_bad_test_sample_stops_with_its_key_or_is_skipped_counted_and_listed(tmp_path, capsys):
    import numpy as np
    from PIL import Image
    root = tmp_path / "folder"
    for folder in ("sd3/real", "sd3/fake", "sd3/masks"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / f"sd3/real/r{i}.png")
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / f"sd3/fake/f{i}.png")
        mask = np.zeros((48, 48), dtype=np.uint8)
        mask[8:24, 8:24] = 255
        Image.fromarray(mask).save(root / f"sd3/masks/f{i}.png")
    (root / "sd3/fake/f1.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    checkpoint, out = tmp_path / "tiny.pth", tmp_path / "out"
    argv = ["test", "--checkpoint_path", str(checkpoint), "--model_setting", "tiny", "--image_size", "64",
            "--device", "cpu", "--test_data_path", str(root), "--test_splits", "sd3", "--num_workers", "0",
            "--test_batch_size", "2", "--output_dir", str(out), "--gallery_size", "0"]
    save_untrained_tiny(checkpoint)

    for workers in ("0", "1"):  # read here, or in a DataLoader worker
        assert cli.main([*argv, "--num_workers", workers]) == 2
        err = capsys.readouterr().err
        assert "partial/sd3/fake/f1.png" in err and "--on_bad_sample skip" in err and "Traceback" not in err

    assert cli.main([*argv, "--on_bad_sample", "skip"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["splits"]["sd3"]["n_images"], metrics["splits"]["sd3"]["n_partial"]) == (5, 2)
    assert list(metrics["skipped"]["sd3"]) == ["partial/sd3/fake/f1.png"]
    assert "Bad samples left out (--on_bad_sample skip): sd3 1" in (out / "metrics.md").read_text()
    assert "1 sample(s) skipped" in capsys.readouterr().out
