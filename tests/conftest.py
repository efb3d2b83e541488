import os
import shutil
import tempfile

# No test may reach a model or dataset hub: everything they load is made on the spot.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# The suite runs in pytest-xdist's worker processes (setup.cfg's addopts), which inherit
# the environment that this file gave the controlling process.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def threads_per_test_process():
    """Each worker's share of the cores, at most 2: OpenMP teams that together ask for more
    threads than there are cores spin against each other (a 35x slowdown measured on 2 cores).
    runtime.cpu_threads_per_process's rule, computed here because importing that module
    imports torch, which must start after OMP_NUM_THREADS is set."""
    return max(1, min(2, len(os.sched_getaffinity(0)) // WORKERS))


# OMP_NUM_THREADS set by the user wins; the one this file set (the marker says so) is
# recomputed in each worker.
if os.environ.get("OMP_NUM_THREADS") in (None, os.environ.get("_IMDLBENCO_MASKCLIP_TEST_THREADS")):
    os.environ["OMP_NUM_THREADS"] = os.environ["_IMDLBENCO_MASKCLIP_TEST_THREADS"] = str(threads_per_test_process())
# The embedded sample is built in a folder of this session, not the user's cache; set in
# os.environ so that the workers and the torchrun and CLI subprocesses the tests start use it
# too (its build is locked: workers asking at once build it once).
CACHE = os.environ.get("_IMDLBENCO_MASKCLIP_TEST_CACHE") or tempfile.mkdtemp(prefix="imdlbenco_maskclip_test_cache_")
os.environ["IMDLBENCO_MASKCLIP_CACHE"] = os.environ["_IMDLBENCO_MASKCLIP_TEST_CACHE"] = CACHE

import builtins
import socket

import pytest
import torch

import IMDLBenCo.training_scripts.utils.misc as misc


def pytest_unconfigure(config):
    if "PYTEST_XDIST_WORKER" not in os.environ:  # the controlling process, after every worker
        shutil.rmtree(CACHE, ignore_errors=True)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per 2 cores, at least 2 (each test runs on 1-2 threads; the
    multi-process tests start their own processes)."""
    return max(2, len(os.sched_getaffinity(0)) // 2)


@pytest.fixture(autouse=True)
def keep_builtin_print(monkeypatch):
    """In-process init_distributed_mode lets BenCo wrap builtins.print with timestamps,
    which would leak into the printed paths that later tests read."""
    monkeypatch.setattr(builtins, "print", builtins.print)


@pytest.fixture(autouse=True)
def unpatched_benco(monkeypatch):
    """Each test starts from BenCo as released: what compat.apply_patches (run by every
    in-process init_distributed_mode) replaced is put back after the test."""
    from imdlbenco_maskclip import compat
    monkeypatch.setattr(misc.SmoothedValue, "synchronize_between_processes",
                        misc.SmoothedValue.synchronize_between_processes)
    for name in ("all_reduce_mean", "all_reduce", "init_distributed_mode"):
        monkeypatch.setattr(misc, name, getattr(misc, name))
    monkeypatch.setattr(torch.cuda, "synchronize", torch.cuda.synchronize)
    from IMDLBenCo.model_zoo.cat_net.cat_net import Cat_Net
    for name in ("__init__", "forward"):
        monkeypatch.setattr(Cat_Net, name, getattr(Cat_Net, name))
    from IMDLBenCo.model_zoo.trufor.trufor import Trufor
    for name in ("__init__", "detection_loss"):
        monkeypatch.setattr(Trufor, name, getattr(Trufor, name))
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", torch.nn.parallel.DistributedDataParallel)
    # The classmethod object itself: getattr would give a bound method, restored as a plain one.
    monkeypatch.setattr(torch.nn.SyncBatchNorm, "convert_sync_batchnorm",
                        torch.nn.SyncBatchNorm.__dict__["convert_sync_batchnorm"])
    monkeypatch.setattr(compat, "_applied", compat._applied)


@pytest.fixture
def no_process_group_left_behind():
    """Destroy the process group a test set up in this process (init_distributed_mode)."""
    yield
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.fixture
def free_port():
    """A free localhost TCP port, the MASTER_PORT of the ranks a test spawns."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the slow tests that build the paper-size settings")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="paper-size setting: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def import_file(path, name):
    """Import the Python file at ``path`` as module ``name``. The two authors' reference
    folders each hold an ``authors_reference.py``; imported by file under distinct names,
    neither shadows the other in ``sys.modules``."""
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def parity_reference_missing(reason):
    """Skip the calling parity test file, saying why; under ``CI=true`` (how CI runs the suite)
    fail it instead, so that CI cannot pass with a parity test skipped."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}; CI=true needs the parity tests to run", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture
def cli_in_this_process(capsys, no_process_group_left_behind):
    """``run(argv)`` -> what the command printed: our commands in this process, as the console
    script runs them, without a new process's start-up (seconds of imports each)."""
    from imdlbenco_maskclip.cli import main

    def run(argv):
        assert main(argv) == 0, capsys.readouterr().err
        return capsys.readouterr().out
    return run


def through_test_robust_and_predict(run_cli, common, evaluation, tmp_path):
    """A checkpoint (``common`` flags) through ``test`` and ``test-robust`` on ``evaluation``'s
    four-image set "four", then ``predict`` on a random 64 x 64 photo, with the checks every
    model shares. ``run_cli(argv)`` -> what the command printed.
    -> (test's log, the photo [1, 3, 64, 64] in [0, 1], its predicted mask [64, 64] in 0-255)."""
    import json

    import numpy as np
    from PIL import Image

    log = run_cli(["test", *common, *evaluation, "--output_dir", str(tmp_path / "test")])
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())["splits"]["four"]
    assert metrics["n_images"] == 4 and metrics["image_auc"] is not None  # P(fake) is a score

    run_cli(["test-robust", *common, *evaluation, "--blur_kernels", "5", "--jpeg_qualities", "70",
             "--output_dir", str(tmp_path / "robust")])
    rows = json.loads((tmp_path / "robust" / "robustness.json").read_text())["rows"]
    assert {row["perturbation"] for row in rows} >= {"gaussian_blur", "jpeg"}

    # A 64 x 64 photo (no resize): its mask is comparable pixel for pixel with a model's.
    pixels = np.random.default_rng(8).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    run_cli(["predict", *common, "--output_dir", str(tmp_path / "predict"), str(tmp_path / "photo.png")])
    mask = np.asarray(Image.open(tmp_path / "predict" / "masks" / "photo.png")).astype(float)
    assert mask.std() > 1.0  # not a flat mask that any model would match
    return log, torch.from_numpy(pixels).permute(2, 0, 1).float()[None] / 255, mask
