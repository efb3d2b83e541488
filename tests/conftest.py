import os

# No test may reach a model or dataset hub: everything they load is made on the spot.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")

import builtins
import socket

import pytest


@pytest.fixture(autouse=True)
def keep_builtin_print(monkeypatch):
    """In-process init_distributed_mode lets BenCo wrap builtins.print with timestamps,
    which would leak into the printed paths that later tests read."""
    monkeypatch.setattr(builtins, "print", builtins.print)


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
