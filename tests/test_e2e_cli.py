"""End to end through ``python -m imdlbenco_maskclip`` and torchrun (gloo, CPU): train, test,
test-robust and resume on the embedded OpenSDID sample with the tiny MaskCLIP, and that model
tested on the embedded BR-Gen sample with the BR-Gen paper's protocol (BenCo's baselines
through the same pipeline: test_report.py and test_baselines.py)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SPLIT_SIZES = {"sd2": 82, "sdxl": 81}  # not multiples of 4 (one process) or 8 (two): short batch and tail
TINY = ["--device", "cpu", "--model_setting", "tiny", "--image_size", "64", "--if_resizing",
        "--edge_mask_width", "3", "--num_workers", "0", "--test_batch_size", "4", "--seed", "0",
        "--test_data_path", "sample:test", "--test_splits", ",".join(SPLIT_SIZES)]
# Trains on the 84-image sd15 test split of the sample: the 300-image train split is 3.5x slower
# and these tests check the pipeline, not what the model learns.
TRAIN = ["train", *TINY, "--data_path", "sample:test#sd15", "--batch_size", "4", "--epochs", "2",
         "--test_period", "2", "--optimizer", "adam", "--lr", "1e-3", "--warmup_epochs", "0"]
METRICS = ("pixel_f1", "pixel_iou", "image_f1", "image_acc", "image_auc")


def command(argv, nproc=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    return [*launcher, "-m", "imdlbenco_maskclip", *argv]


def run_cli(argv, nproc=1, timeout=300):
    # conftest's OMP_NUM_THREADS is for one process; under torchrun the command shares the cores.
    env = {k: v for k, v in os.environ.items() if not (nproc > 1 and k == "OMP_NUM_THREADS")}
    proc = subprocess.run(command(argv, nproc), cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def read_json(path):
    with open(path) as f:
        return json.load(f)


def log_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def assert_complete_metrics(metrics_json, image_level=True, splits=tuple(SPLIT_SIZES)):
    for split in splits:
        size = SPLIT_SIZES[split]
        metrics = metrics_json["splits"][split]
        assert metrics["n_images"] == size
        assert metrics["n_partial"] > 0
        # IoU = F1 / (2 - F1) per image: never above F1, equal only at 0 and 1
        assert math.isfinite(metrics["pixel_f1"]) and metrics["pixel_iou"] <= metrics["pixel_f1"]
        for key in ("image_f1", "image_acc", "image_auc"):
            assert (metrics[key] is not None and math.isfinite(metrics[key])) == image_level, key
    assert metrics_json["average"]["n_images"] == sum(SPLIT_SIZES[split] for split in splits)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_single")
    run_cli([*TRAIN, "--output_dir", str(out)])
    return out


def test_single_process_training_keeps_last_and_best_checkpoints_and_writes_reports(trained):
    assert sorted(p.name for p in trained.glob("checkpoint-*.pth")) == ["checkpoint-1.pth", "checkpoint-best.pth"]
    assert torch.load(trained / "checkpoint-1.pth", weights_only=False)["epoch"] == 1
    best = read_json(trained / "best.json")
    assert best["metric"] == "avg_pixel_f1" and best["epoch"] == 1  # the only test: --test_period 2
    assert torch.load(trained / "checkpoint-best.pth", weights_only=False)["epoch"] == best["epoch"]
    lines = log_lines(trained / "log.txt")
    assert [line["epoch"] for line in lines] == [0, 1]
    assert all(math.isfinite(line["train_total_loss"]) for line in lines)
    assert "test_sd2_n_images" not in lines[0]
    assert lines[-1]["test_sd2_n_images"] == 82 and lines[-1]["test_sdxl_n_images"] == 81
    metrics = read_json(trained / "metrics.json")
    assert_complete_metrics(metrics)
    for split in SPLIT_SIZES:  # the final tables are the last test's
        assert {k: lines[-1][f"test_{split}_{k}"] for k in METRICS} == {k: metrics["splits"][split][k] for k in METRICS}
    table = (trained / "metrics.md").read_text()
    assert "| method | SD2.1 | SDXL | AVG |" in table and "MaskCLIP (tiny)" in table
    assert list(trained.glob("events.out.tfevents.*"))


def test_two_process_training_over_gloo(tmp_path):
    argv = [arg if arg != "2" else "1" for arg in TRAIN]  # one epoch
    stdout = run_cli([*argv, "--output_dir", str(tmp_path)], nproc=2)
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"[train] 2 processes on {len(os.sched_getaffinity(0))} cores: {threads} CPU thread(s) each" in stdout
    assert (tmp_path / "checkpoint-0.pth").is_file() and (tmp_path / "checkpoint-best.pth").is_file()
    assert_complete_metrics(read_json(tmp_path / "metrics.json"))
    assert [line["epoch"] for line in log_lines(tmp_path / "log.txt")] == [0]


def test_one_and_two_process_tests_agree_and_keep_each_split_log_apart(trained, tmp_path):
    results = {}
    for nproc in (1, 2):
        out = tmp_path / f"test_{nproc}"
        stdout = run_cli(["test", *TINY, "--checkpoint_path", str(trained), "--output_dir", str(out)], nproc=nproc)
        if nproc == 2:  # batches of 4 on 2 processes: 82 = 10 x 8 + 2, 81 = 10 x 8 + 1
            assert "sd2: 82 samples, 10 batch(es) per process + 2 in BenCo's tail pass" in stdout
            assert "sdxl: 81 samples, 10 batch(es) per process + 1 in BenCo's tail pass" in stdout
        results[nproc] = read_json(out / "metrics.json")
        assert results[nproc]["checkpoint"].endswith("checkpoint-best.pth")
        assert_complete_metrics(results[nproc])
        for split, size in SPLIT_SIZES.items():
            assert [line["test_n_images"] for line in log_lines(out / split / "log.txt")] == [size]
            assert list((out / split).glob("events.out.tfevents.*"))
        assert "Pixel level, partial fakes only" in (out / "metrics.md").read_text()
    for split in SPLIT_SIZES:
        one, two = results[1]["splits"][split], results[2]["splits"][split]
        assert one["n_partial"] == two["n_partial"]
        for key in METRICS:
            assert one[key] == pytest.approx(two[key], abs=1e-5), (split, key)


def test_robustness_sweep_writes_json_csv_and_curves(trained, tmp_path):
    argv = ["test-robust", *TINY, "--checkpoint_path", str(trained / "checkpoint-1.pth"), "--test_splits", "sd2",
            "--blur_kernels", "3", "--jpeg_qualities", "90", "--noise_vars", "10", "--output_dir", str(tmp_path)]
    stdout = run_cli(argv)
    assert "(4/4) sd2 gaussian_noise 10" in stdout
    rows = read_json(tmp_path / "robustness.json")["rows"]
    assert [(r["perturbation"], r["level"]) for r in rows] == [
        ("clean", 0), ("gaussian_blur", 3), ("jpeg", 90), ("gaussian_noise", 10)]
    for row in rows:
        assert row["split"] == "sd2" and row["n_images"] == 82
        assert all(math.isfinite(row[key]) for key in METRICS)
    csv_lines = (tmp_path / "robustness.csv").read_text().splitlines()
    assert csv_lines[0].startswith("split,perturbation,level,pixel_f1") and len(csv_lines) == 5
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["pixel_f1_gaussian_blur.png", "pixel_f1_gaussian_noise.png", "pixel_f1_jpeg.png",
                    "robustness_sd2.png"]
    for png in (tmp_path / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert sorted(p.name for p in (tmp_path / "sd2").iterdir()) == [
        "clean_0", "gaussian_blur_3", "gaussian_noise_10", "jpeg_90"]


class Killed(BaseException):
    """A kill: no handler of the package catches it."""


def test_a_killed_run_resumes_to_the_same_final_epoch(trained, tmp_path, monkeypatch):
    # Killed as soon as epoch 1 starts, whatever the machine's speed: epoch 0's checkpoint and
    # log line are written, nothing of epoch 1.
    from imdlbenco_maskclip.cli import main
    from imdlbenco_maskclip.engine import runtime, training
    stock = training.train_one_epoch

    def killed_in_epoch_1(model, loader, optimizer, device, epoch, *args, **kwargs):
        if epoch == 1:
            raise Killed
        return stock(model, loader, optimizer, device, epoch, *args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", killed_in_epoch_1)
    try:
        with pytest.raises(Killed):
            main([*TRAIN, "--output_dir", str(tmp_path)])
    finally:
        runtime.finish()
    log = tmp_path / "log.txt"
    assert [line["epoch"] for line in log_lines(log)] == [0]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pth")) == ["checkpoint-0.pth"]  # untested yet

    stdout = run_cli([*TRAIN, "--output_dir", str(tmp_path), "--resume", "auto"])
    assert "continuing from" in stdout and "checkpoint-0.pth" in stdout
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pth")) == \
        sorted(p.name for p in trained.glob("checkpoint-*.pth"))
    assert torch.load(tmp_path / "checkpoint-1.pth", weights_only=False)["epoch"] == \
        torch.load(trained / "checkpoint-1.pth", weights_only=False)["epoch"] == 1
    assert [line["epoch"] for line in log_lines(log)] == [0, 1]
    assert_complete_metrics(read_json(tmp_path / "metrics.json"))


def test_resuming_with_other_model_flags_or_a_broken_file_is_a_clear_error(trained, tmp_path, capsys):
    from imdlbenco_maskclip.cli import main
    resume = [*TRAIN, "--output_dir", str(tmp_path), "--resume"]
    assert main([*resume, str(trained / "checkpoint-1.pth"), "--use_vsa", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: --resume" in err and "--use_vsa 1" in err and "--use_vsa 0" in err
    # Optimizer groups of another make (e.g. another version's weight-decay grouping).
    other_groups = torch.load(trained / "checkpoint-1.pth", weights_only=False)
    groups = other_groups["optimizer"]["param_groups"]
    groups[0]["params"] += groups.pop(1)["params"]
    torch.save(other_groups, tmp_path / "other_groups.pth")
    assert main([*resume, str(tmp_path / "other_groups.pth")]) == 2
    err = capsys.readouterr().err
    assert "error: --resume" in err and "--optimizer adam" in err
    broken = tmp_path / "checkpoint-1.pth"
    broken.write_bytes((trained / "checkpoint-1.pth").read_bytes()[:1000])
    assert main([*resume, str(broken)]) == 2
    assert f"error: --resume {broken}: " in capsys.readouterr().err


def test_predict_runs_a_trained_checkpoint_on_image_files(trained, tmp_path):
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for name, (height, width) in {"wide.png": (60, 90), "tall.jpg": (100, 50)}.items():
        pixels = (torch.rand(height, width, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / name)
    out = tmp_path / "out"
    stdout = run_cli(["predict", "--checkpoint_path", str(trained), "--output_dir", str(out), "--device", "cpu",
                      "--num_workers", "0", str(tmp_path / "wide.png"), str(tmp_path / "tall.jpg")])
    assert "checkpoint-best.pth" in stdout and "2 images predicted, 0 skipped" in stdout
    predictions = read_json(out / "predictions.json")["predictions"]
    assert [p["name"] for p in predictions] == ["wide", "tall"]
    assert all(p["predicted_fake"] == int(p["fake_probability"] >= 0.5) for p in predictions)
    assert Image.open(out / "masks" / "tall.png").size == (50, 100)


# ---------------------------------------------------------------------------- BR-Gen

BRGEN_TEST = ["test", *TINY, "--dataset", "BRGen", "--test_data_path", "sample:brgen", "--gallery_size", "0"]


def brgen_sample_counts():
    from imdlbenco_maskclip.datasets.brgen_sample import ensure_brgen_sample
    return read_json(ensure_brgen_sample().parent / "manifest.json")


def defined(value):
    return value is not None and math.isfinite(value)


def test_trained_on_opensdid_tested_on_brgen_with_the_papers_protocol(trained, tmp_path):
    from imdlbenco_maskclip.cli import main
    from imdlbenco_maskclip.engine.brgen_protocol import AREA_BINS, area_key
    out = tmp_path / "test"
    run_cli([*BRGEN_TEST, "--checkpoint_path", str(trained), "--test_splits", "all,gan", "--balance", "0",
             "--output_dir", str(out)], timeout=600)
    metrics = read_json(out / "metrics.json")
    sample = brgen_sample_counts()
    real, generated = sample["real"], sample["generated"]
    m = metrics["splits"]["all"]
    assert (m["n_images"], m["n_real"], m["n_generated"], m["n_partial"]) == (real + generated, real, generated,
                                                                               generated)
    assert (m["n_gan"], m["n_diffusion"]) == (2 * generated // 5, 3 * generated // 5)
    assert m["n_background"] == m["n_stuff"] == generated // 2
    assert [m[area_key(lo, hi, "n")] for lo, hi in AREA_BINS] == sample["area_bins"]
    for key in ("real_r50", "gen_r50", "image_f1", "image_auc", "pixel_iou", "gan_r50", "diffusion_r50",
                "background_r50", "stuff_r50") + tuple(area_key(lo, hi, w) for lo, hi in AREA_BINS
                                                       for w in ("r50", "pixel_f1")):
        assert defined(m[key]) and 0 <= m[key] <= 1, key
    # The generated images' recall is the count-weighted mean of its parts, by family and by area.
    assert m["gen_r50"] == pytest.approx((m["gan_r50"] * m["n_gan"] + m["diffusion_r50"] * m["n_diffusion"])
                                         / generated)
    assert m["gen_r50"] == pytest.approx(sum(m[area_key(lo, hi, "r50")] * m[area_key(lo, hi, "n")]
                                             for lo, hi in AREA_BINS) / generated)
    gan = metrics["splits"]["gan"]  # a subset: every real image, the GAN family's generated ones
    assert (gan["n_real"], gan["n_gan"], gan["n_diffusion"]) == (real, 2 * generated // 5, 0)
    assert gan["gan_r50"] == pytest.approx(m["gan_r50"]) and gan["real_r50"] == pytest.approx(m["real_r50"])
    assert metrics["selections"]["all"] == {"dataset": "BRGen", "path": "sample:brgen#all", "balance": 0,
                                            "seed": 0, "drawn": None}
    assert metrics["args"]["trained_on"] == "sample:test#sd15"  # the checkpoint's --data_path
    md = (out / "metrics.md").read_text()
    assert "Tables 2 and 3 form" in md and "Table 7 form" in md and "| < 20% |" in md

    report = tmp_path / "report"
    assert main(["report", str(out), "--published", "--output_dir", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert f"| MaskCLIP (tiny) | all | {m['real_r50']:.3f} ({real}) |" in text
    assert "| NFA-ViT (published, Tables 3 and 7) | BR-Gen, trained on BR-Gen | 0.992 |" in text
    assert "| 0.965 | 0.960 | 0.954 | 0.945 | 0.948 |" in text  # Table 7's NFA-ViT row
    assert "| FatFormer (published, Table 2) | BR-Gen, released model | 0.989 | 0.493 | 0.606 | 0.331 | - |" in text


def test_brgen_without_au_has_real_metrics_n_a_and_a_balanced_set_records_its_draw(trained, tmp_path):
    import shutil
    from imdlbenco_maskclip.datasets.brgen_sample import ensure_brgen_sample
    folder = tmp_path / "no_au"
    for part in ("Tp", "Gt"):
        (folder / part).mkdir(parents=True)
        for f in sorted((ensure_brgen_sample() / part).glob("*_COCO_*")):
            shutil.copy(f, folder / part / f.name)
    sets = tmp_path / "sets.json"
    sets.write_text(json.dumps({"no_au": str(folder), "diffusion": "sample:brgen#diffusion"}))
    out = tmp_path / "test"
    run_cli([*BRGEN_TEST, "--checkpoint_path", str(trained), "--test_data_path", str(sets), "--balance_seed", "3",
             "--output_dir", str(out)], timeout=600)
    metrics = read_json(out / "metrics.json")
    no_au = metrics["splits"]["no_au"]
    generated = len(list((folder / "Tp").iterdir()))
    assert (no_au["n_real"], no_au["n_generated"]) == (0, generated)
    assert no_au["real_r50"] is None and no_au["image_auc"] is None
    assert defined(no_au["image_f1"]) and defined(no_au["gen_r50"])
    assert "image F1 is over the generated images only" in (out / "metrics.md").read_text()
    real = brgen_sample_counts()["real"]
    diffusion = metrics["splits"]["diffusion"]
    assert (diffusion["n_real"], diffusion["n_generated"], diffusion["n_gan"]) == (real, real, 0)  # balanced
    selection = metrics["selections"]["diffusion"]
    assert selection["seed"] == 3 and selection["balance"] == 1 and len(selection["drawn"]) == real
    assert metrics["selections"]["no_au"]["drawn"] is None  # no real image: nothing to match
