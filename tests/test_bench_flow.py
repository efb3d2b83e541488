"""benchmarks/bench_flow.py's data-loading part runs and reports both readers at each size and
augmentation (its figures are measurements, not checked here; docs/performance.md has one run);
``--flops_only`` counts models without timing them, ManTra-Net's count a cost per pixel; a
convolution's backward is counted as twice its forward, grouped or not."""
import json
import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_data_loading_rows_for_both_readers_at_each_size_and_augmentation():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_flow.py"), "--input_sizes", "96,160",
                           "--images", "4", "--image_size", "64", "--augments", "none,paper", "--models", ""],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^\| data \| (.+?) \| (\d+) px PNG -> 64, --augment (\w+) \| 1 worker \| ([\d.]+) samples/s",
                      proc.stdout, flags=re.M)
    readers = {"OpenSDID (parquet)", "BenCo JsonDataset (PNG files)"}
    assert {(r, int(s), a) for r, s, a, _ in rows} == {(r, s, a) for r in readers for s in (96, 160)
                                                       for a in ("none", "paper")}
    assert all(float(rate) > 0 for *_, rate in rows)


def test_an_unknown_model_is_refused_by_name():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_flow.py"), "--models", "MaskCLIP,SegNet"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "SegNet" in proc.stderr and "--models" in proc.stderr


def test_scale_rows_show_the_reader_in_place_writing_nothing():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_flow.py"), "--models", "", "--augments",
                           "none", "--input_sizes", "", "--scale_shards", "3", "--scale_rows", "12",
                           "--scale_group_rows", "5", "--scale_reads", "6"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = dict(re.findall(r"^\| data at scale \| (.+?) \| 3 shards, 36 rows.*?wrote ([\d,]+) MiB", proc.stdout, flags=re.M))
    assert set(rows) == {"OpenSDID in place (pyarrow)", "HF datasets Arrow copy (Dataset.from_parquet)"}
    assert rows["OpenSDID in place (pyarrow)"] == "0"
    rates = re.findall(r"^\| data at scale \| .+?samples/s \(ms per sample fetching\): ([\d.]+) \(([\d.]+)\) shuffled, "
                       r"([\d.]+) \(([\d.]+)\) shuffled by row groups \(window 4, 36 rows\), ([\d.]+) \(([\d.]+)\) "
                       r"in order", proc.stdout, flags=re.M)
    assert len(rates) == 2 and all(float(figure) > 0 for figures in rates for figure in figures)
    assert re.search(r"^\| data at scale \| OpenSDID in place \(pyarrow\) \| the same shards \| 2 processes at once "
                     r"\| first open [\d.]+ and [\d.]+ s, wrote 0 MiB", proc.stdout, flags=re.M)


def test_flops_only_counts_each_model_and_times_nothing():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_flow.py"), "--flops_only", "--threads", "1",
                           "--image_size", "32", "--models", "PSCC_Net,MantraNet"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^\| (train step|inference) \| (\w+) \([\d.]+M trainable\) \| batch 1, 32 px, fp32, cpu "
                      r"\| 1 threads \| \| ([\d.]+) \| \|$", proc.stdout, flags=re.M)
    counted = {(phase, model): float(gflop) for phase, model, gflop in rows}
    assert set(counted) == {(p, m) for p in ("train step", "inference") for m in ("PSCC_Net", "MantraNet")}
    assert "| data" not in proc.stdout  # nothing timed: no data-loading rows
    for model in ("PSCC_Net", "MantraNet"):  # a training step adds the backward's work to the forward's
        assert 0 < counted["inference", model] < counted["train step", model]
    # ManTra-Net's convolutions all keep the full resolution (stride 1, symmetric padding), so its
    # count is a cost per pixel times the pixels, which docs/benchmarking.md scales to 512 px.
    # Per pixel (2 x in x out x kernel area): the three 5x5 first convolutions (3 -> 4 + 3 + 9),
    # the 3x3 chain 16-32-64-64-128-128-128-256 and five 256 -> 256, the 1x1 adaptation
    # 256 -> 64, four steps of the ConvLSTM's 7x7 (64 + 8 -> 4 x 8) and the 7x7 end 8 -> 1.
    chain = [16, 32, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256]
    per_pixel = (2 * 25 * 3 * 16 + sum(2 * 9 * a * b for a, b in zip(chain, chain[1:])) + 2 * 256 * 64
                 + 4 * 2 * 49 * 72 * 32 + 2 * 49 * 8)
    exact = json.loads(proc.stderr.strip().splitlines()[-1])["models"]["MantraNet"]["eval_gflop"]
    assert round(exact * 1e9) == per_pixel * 32 * 32


def test_a_convolutions_backward_counts_twice_its_forward_with_groups_too():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_model import counted_flops

    for groups in (1, 64):  # torch's own formula counts the depthwise one's backward 64 times over
        conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=groups)
        image = torch.randn(2, 64, 16, 16, requires_grad=True)
        forward = counted_flops(lambda: conv(image))
        assert forward == 2 * 2 * 16 * 16 * 64 * (64 // groups) * 9
        assert counted_flops(lambda: conv(image).sum().backward()) == 3 * forward
