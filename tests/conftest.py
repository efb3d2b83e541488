import os
import shutil
import tempfile

# No test may reach a model or dataset hub: everything they load is made on the spot.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")
# The embedded sample is built in a folder of this session, not the user's cache; set in
# os.environ so that the torchrun and CLI subprocesses the tests start use it too.
CACHE = tempfile.mkdtemp(prefix="imdlbenco_maskclip_test_cache_")
os.environ["IMDLBENCO_MASKCLIP_CACHE"] = CACHE

import builtins
import socket

import pytest
import torch

import IMDLBenCo.training_scripts.utils.misc as misc


def pytest_unconfigure(config):
    shutil.rmtree(CACHE, ignore_errors=True)


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
