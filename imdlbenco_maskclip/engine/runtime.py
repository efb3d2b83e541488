"""Process set-up shared by the commands: process group, device, seeds."""
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


def start(args, command):
    """Process group (compat, which applies its patches first), device and seeds -> torch.device."""
    _check_device_flag(args)
    given = {k: getattr(args, k, None) for k in ("world_size", "local_rank", "dist_on_itp")}
    try:
        device = compat.init_distributed_mode(args)
    except ValueError as exc:  # the device named cannot be had; process-group errors keep theirs
        raise UserError(str(exc)) from None
    _note_benco_launch_flags(given, args, command)
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
