"""Under torchrun on the CPU each process takes its share of the cores, unless the user set them."""
import pytest
import torch

from imdlbenco_maskclip.engine import runtime


@pytest.fixture
def eight_cores(monkeypatch):
    set_to = []
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    return set_to


@pytest.mark.parametrize("processes,omp,device,expected", [
    ("2", "1", "cpu", [4]),     # torchrun's default OMP_NUM_THREADS=1: each its share
    ("3", "1", "cpu", [2]),
    ("16", None, "cpu", [1]),   # never below one thread
    ("2", "3", "cpu", []),      # the user's value stays
    ("1", "1", "cpu", []),      # one process: torch's own default
    ("2", "1", "cuda", []),     # GPU processes keep torch's default
], ids=["2-procs", "3-procs", "16-procs", "user-set", "one-process", "cuda"])
def test_each_cpu_process_gets_its_share_of_the_cores(eight_cores, monkeypatch, capsys, processes, omp, device,
                                                       expected):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    runtime.share_cpu_threads(torch.device(device), "train")
    assert eight_cores == expected
    if expected:
        assert f"{processes} processes on 8 cores: {expected[0]} CPU thread(s) each" in capsys.readouterr().out
