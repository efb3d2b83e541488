"""benchmarks/bench_flow.py's data-loading part runs and reports both readers at each size and
augmentation (its figures are measurements, not checked here; docs/performance.md has one run)."""
import re
import subprocess
import sys
from pathlib import Path

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
