"""Process set-up shared by the commands: process group, device, CPU threads, seeds."""
import os
import random

import numpy as np
import torch
import torch.distributed as dist

import IMDLBenCo.training_scripts.utils.misc as misc

from .. import compat
from ..errors import UserError


def _check_device_flag(args):
    """Default --device (cuda when available); one torch cannot parse is a flag error."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(args.device)
    except RuntimeError as exc:
        raise UserError(f"--device {args.device}: {exc}", hint="give cpu, cuda or cuda:N") from None


def _note_benco_launch_flags(given, args, command):
    """BenCo's scripts pass --world_size, --local_rank and --dist_on_itp; torchrun's variables decide."""
    actual = {"world_size": args.world_size, "local_rank": os.environ.get("LOCAL_RANK")}
    for flag, value in given.items():
        if actual.get(flag) is not None and value is not None and value != int(actual[flag]):
            print(f"[{command}] --{flag} {value} differs from torchrun's {actual[flag]}; torchrun's is used")
    if given.get("dist_on_itp"):
        print(f"[{command}] --dist_on_itp: processes are set up from torchrun's variables, not ITP's")


def cpu_threads_per_process(processes):
    """The cores this process may run on, shared among ``processes`` processes (at least 1)."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, processes))


def share_cpu_threads(device, command):
    """Under torchrun on the CPU, give each process its share of the cores.

    torchrun sets OMP_NUM_THREADS=1 for its processes when the user did not set it; torch
    would otherwise start one thread per core in every process, and OpenMP threads spinning
    against each other slow a run many times over. A value the user set (anything but 1) is
    kept.
    """
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type != "cpu" or processes <= 1 or os.environ.get("OMP_NUM_THREADS", "1") != "1":
        return
    threads = cpu_threads_per_process(processes)
    torch.set_num_threads(threads)
    if misc.is_main_process():
        print(f"[{command}] {processes} processes on {len(os.sched_getaffinity(0))} cores: {threads} CPU "
              f"thread(s) each (OMP_NUM_THREADS overrides)")


def start(args, command):
    """Process group (compat, which applies its patches first), device and seeds -> torch.device."""
    _check_device_flag(args)
    given = {k: getattr(args, k, None) for k in ("world_size", "local_rank", "dist_on_itp")}
    try:
        device = compat.init_distributed_mode(args)
    except ValueError as exc:  # the device named cannot be had; process-group errors keep theirs
        raise UserError(str(exc)) from None
    _note_benco_launch_flags(given, args, command)
    share_cpu_threads(device, command)
    torch.multiprocessing.set_sharing_strategy("file_system")
    seed_everything(args.seed + misc.get_rank())
    print(f"[{command}] device {device}, {misc.get_world_size()} process(es), "
          f"{'distributed' if args.distributed else 'single process'}")
    return device


def device_without_process_group(args):
    """--device for a command that needs no process group (predict) -> torch.device."""
    _check_device_flag(args)
    try:
        return compat.resolve_device(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def seed_everything(seed):
    # Not misc.seed_torch: it also turns cuDNN off entirely, a large slowdown on GPUs.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def finish():
    if dist.is_initialized():
        dist.destroy_process_group()
