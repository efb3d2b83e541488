"""Fixes for IMDL-BenCo 0.1.45 so that its own trainer, tester, ``misc`` helpers,
evaluators and the scripts ``benco init`` writes run on CPU (gloo) and in a single process,
not only under torchrun on CUDA.

Every fix is listed in ``PATCHES`` with the reason it exists; ``tests/test_compat.py``
shows each BenCo behaviour failing without its fix. Nothing here changes what BenCo
computes on its production path (torchrun + NCCL on CUDA): the patched functions do the
same collective calls, only on the device the process group can use.

Use: call :func:`apply_patches` once, then :func:`init_distributed_mode` in place of
``misc.init_distributed_mode``. BenCo's stock scripts (``benco init``) call
``misc.init_distributed_mode`` and wrap the model in DDP themselves: importing
:mod:`imdlbenco_maskclip.cpu` applies the patches, which cover those two calls too.
"""
import argparse
import contextlib
import datetime
import functools
import os

import torch
import torch.distributed as dist

import IMDLBenCo.training_scripts.utils.misc as misc
from IMDLBenCo.model_zoo.cat_net.cat_net import Cat_Net
from IMDLBenCo.model_zoo.trufor.trufor import Trufor

# What misc.save_model pickles besides tensors: the argparse flags.
SAFE_GLOBALS = [argparse.Namespace]


def allow_saved_flags():
    """Let ``torch.load`` with ``weights_only`` (BenCo's ``misc.load_model`` too) read ``args``."""
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


PATCHES = {
    "SmoothedValue.synchronize_between_processes":
        "reduces a tensor created with device='cuda', so metric logging fails on a gloo "
        "(CPU) process group",
    "misc.all_reduce_mean / misc.all_reduce":
        "call .cuda() on the value, so loss logging fails with more than one CPU process",
    "torch.cuda.synchronize":
        "train_one_epoch calls it twice per step, which raises on a machine without a "
        "CUDA driver; it now does nothing when CUDA is unavailable",
    "torch.load of BenCo checkpoints":
        "misc.save_model stores args (an argparse.Namespace), which torch>=2.6's "
        "weights_only loading refuses, so misc.load_model cannot resume; Namespace is "
        "allowed as a safe global",
    "Cat_Net: .cuda() in __init__ and forward":
        "its constructor puts the loss weights on CUDA and its forward builds the DCT volume "
        "with .cuda(), so CAT-Net cannot be built without a CUDA driver, and a model on the CPU "
        "(or another GPU) gets tensors on cuda:0; inside these two calls .cuda() now means the "
        "CPU in the constructor (the model is moved afterwards, loss weights with it) and the "
        "image's device in forward, which is the same GPU on BenCo's production path",
    "Trufor: torch.load in __init__":
        "its constructor reads the Noiseprint++ and MiT-B2 files with torch.load and no "
        "map_location, so a file saved from a GPU fails on a machine without CUDA, and under "
        "torchrun every process puts its copy on cuda:0; inside the constructor a torch.load "
        "without map_location now reads to the CPU (the model is moved afterwards)",
    "Trufor.detection_loss":
        "phase 3's loss compares pred_label [B] (squeezed) with label.unsqueeze(1) [B, 1]: "
        "torch >= 2 refuses the sizes, so phase 3 fails on its first batch (older torch "
        "broadcast them to [B, B], a wrong loss); the label now takes pred_label's shape",
    "init_distributed_mode":
        "BenCo's hard-codes torch.cuda.set_device and NCCL; in a single process it sets "
        "up no process group, while ImageF1/ImageAUC/ImageAccuracy call dist.all_gather "
        "unconditionally (see init_distributed_mode below)",
    "misc.init_distributed_mode, for BenCo's stock scripts":
        "with a --device that is not CUDA, BenCo's own calls torch.cuda.set_device (no CUDA "
        "driver) and asks for NCCL (no CUDA tensors); it now sets up gloo there, keeping "
        "BenCo's args.distributed=True under torchrun, which the stock scripts need for "
        "global_rank and model.module",
    "torch.nn.parallel.DistributedDataParallel":
        "the stock scripts pass device_ids=[args.gpu], which DDP refuses for a module on the "
        "CPU; device_ids are dropped for such a module",
    "torch.nn.SyncBatchNorm.convert_sync_batchnorm":
        "the stock train.py converts every BatchNorm to SyncBatchNorm under torchrun, which "
        "runs only on GPUs (DDP refuses it in a CPU module, its forward a CPU input), so a "
        "model with a BatchNorm (the DnCNN of NFA_ViT and TruFor) cannot train on the CPU; "
        "under a gloo (CPU) process group the model is now left as it is, each process "
        "keeping its own statistics, as our train does on the CPU",
}

# BenCo's (and torch's) functions as they were before apply_patches, for the tests that
# show each one failing.
ORIGINALS = {}
_applied = False
_print_wrapped = False


def collective_device() -> torch.device:
    """The device that tensors handed to the current process group must live on."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _synchronize_between_processes(self):
    if not misc.is_dist_avail_and_initialized():
        return
    t = torch.tensor([self.count, self.total], dtype=torch.float64, device=collective_device())
    dist.barrier()
    dist.all_reduce(t)
    t = t.tolist()
    self.count = int(t[0] + 0.5)  # counts travel as float64; round as BenCo does
    self.total = t[1]


def _all_reduce(x, mean):
    world_size = misc.get_world_size()
    if world_size == 1:
        return x
    reduced = torch.tensor(x, device=collective_device())
    dist.all_reduce(reduced)
    if mean:
        reduced /= world_size
    return reduced.item()


def _all_reduce_sum(x):
    return _all_reduce(x, mean=False)


def _all_reduce_mean(x):
    return _all_reduce(x, mean=True)


@contextlib.contextmanager
def _cuda_means(device):
    """Inside: ``Tensor.cuda()`` and ``Module.cuda()`` move to ``device`` instead."""
    tensor_cuda, module_cuda = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self.to(device)
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self.to(device)
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = tensor_cuda, module_cuda


def _patch_cat_net():
    init, forward = Cat_Net.__init__, Cat_Net.forward
    ORIGINALS.update(cat_net_init=init, cat_net_forward=forward)

    @functools.wraps(init)
    def cat_net_init(self, *args, **kwargs):
        with _cuda_means(torch.device("cpu")):
            init(self, *args, **kwargs)

    @functools.wraps(forward)
    def cat_net_forward(self, image, *args, **kwargs):
        with _cuda_means(image.device):
            return forward(self, image, *args, **kwargs)

    Cat_Net.__init__, Cat_Net.forward = cat_net_init, cat_net_forward


@contextlib.contextmanager
def _loads_to_cpu():
    """Inside: ``torch.load`` without a ``map_location`` reads to the CPU."""
    load = torch.load

    def load_to_cpu(*args, **kwargs):
        if len(args) < 2 and "map_location" not in kwargs:
            kwargs["map_location"] = "cpu"
        return load(*args, **kwargs)

    torch.load = load_to_cpu
    try:
        yield
    finally:
        torch.load = load


def _patch_trufor_init():
    init = Trufor.__init__
    ORIGINALS["trufor_init"] = init

    @functools.wraps(init)
    def trufor_init(self, *args, **kwargs):
        with _loads_to_cpu():
            init(self, *args, **kwargs)

    Trufor.__init__ = trufor_init


def _trufor_detection_loss(self, pred_label, label):
    return torch.nn.functional.binary_cross_entropy(pred_label, label.reshape(pred_label.shape))


def apply_patches() -> None:
    """Install the fixes listed in ``PATCHES``. Idempotent."""
    global _applied
    if _applied:
        return
    ORIGINALS.update(
        synchronize_between_processes=misc.SmoothedValue.synchronize_between_processes,
        all_reduce_mean=misc.all_reduce_mean,
        all_reduce=misc.all_reduce,
        cuda_synchronize=torch.cuda.synchronize,
        init_distributed_mode=misc.init_distributed_mode,
        DistributedDataParallel=torch.nn.parallel.DistributedDataParallel,
        convert_sync_batchnorm=torch.nn.SyncBatchNorm.convert_sync_batchnorm,
    )
    misc.SmoothedValue.synchronize_between_processes = _synchronize_between_processes
    misc.all_reduce_mean = _all_reduce_mean
    misc.all_reduce = _all_reduce_sum

    cuda_synchronize = ORIGINALS["cuda_synchronize"]

    def synchronize_if_cuda(device=None):
        if torch.cuda.is_available():
            cuda_synchronize(device)

    torch.cuda.synchronize = synchronize_if_cuda
    _patch_cat_net()
    _patch_trufor_init()
    ORIGINALS["trufor_detection_loss"] = Trufor.detection_loss
    Trufor.detection_loss = _trufor_detection_loss
    misc.init_distributed_mode = _stock_init_distributed_mode
    torch.nn.parallel.DistributedDataParallel = DistributedDataParallelOnCPU
    torch.nn.SyncBatchNorm.convert_sync_batchnorm = classmethod(_convert_sync_batchnorm)
    allow_saved_flags()
    _applied = True


def _stock_init_distributed_mode(args):
    """``misc.init_distributed_mode`` as BenCo's stock scripts call it: BenCo's own for a
    CUDA ``--device``; otherwise ours (gloo), with BenCo's meaning of ``args.distributed``
    (launched by torchrun, whatever the number of processes)."""
    if torch.device(args.device).type == "cuda":
        return ORIGINALS["init_distributed_mode"](args)
    init_distributed_mode(args)
    args.distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ


class DistributedDataParallelOnCPU(torch.nn.parallel.distributed.DistributedDataParallel):
    """torch's DDP, ignoring ``device_ids``/``output_device`` for a module on the CPU."""

    def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
        if all(p.device.type == "cpu" for p in module.parameters()):
            device_ids = output_device = None
        super().__init__(module, device_ids, output_device, *args, **kwargs)


def _convert_sync_batchnorm(cls, module, process_group=None):
    """torch's conversion, except under a gloo (CPU) process group: there ``module`` as it is."""
    if dist.is_initialized() and dist.get_backend(process_group) == "gloo":
        return module
    return ORIGINALS["convert_sync_batchnorm"](module, process_group)


def resolve_device(args) -> torch.device:
    """``args.device`` as a torch.device; for CUDA, the GPU this process runs on.

    Call after :func:`init_distributed_mode` has set ``args.world_size`` and ``args.gpu``.
    In one process an explicit ``cuda:N`` wins (``args.gpu`` is only a default there). Under
    torchrun with several processes each one takes GPU ``LOCAL_RANK`` (``args.gpu``), as in
    BenCo, so an explicit index is an error: every rank would claim the same GPU. A device
    that cannot be had is a ValueError naming --device.
    """
    device = torch.device(args.device)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here; pass --device cpu for a CPU run.")
    if device.index is not None and getattr(args, "world_size", 1) > 1:
        raise ValueError(
            f"--device {args.device}: a GPU index cannot hold for {args.world_size} torchrun "
            f"processes, each of which uses GPU LOCAL_RANK; pass --device cuda, and choose the "
            f"GPUs with CUDA_VISIBLE_DEVICES.")
    index = (getattr(args, "gpu", 0) or 0) if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"--device {args.device}: this process would run on GPU {index}, but only {count} "
            f"GPU(s) are visible here (cuda:0..cuda:{count - 1}).")
    return torch.device("cuda", index)


def init_distributed_mode(args) -> torch.device:
    """Set up the process group the way BenCo's training and evaluation code expects.

    Under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set): NCCL on CUDA, BenCo's own
    production path, each process on GPU ``LOCAL_RANK``, or gloo with ``--device cpu``;
    ``args.distributed`` is True.

    In a single process: a world-size-1 group on an in-process store, because BenCo's
    image-level evaluators gather across ranks unconditionally, on the GPU ``--device
    cuda:N`` names (else GPU 0). ``args.distributed`` stays False, so samplers and BenCo's
    tester treat the run as single-process (no tail pass).

    Returns the device this process runs on (:func:`resolve_device`); for CUDA, ``args.gpu``
    is its index and the current CUDA device.
    """
    apply_patches()
    on_cuda = torch.device(args.device).type == "cuda"
    backend = "nccl" if on_cuda else "gloo"
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if launched:
        args.rank = int(os.environ["RANK"])
        args.world_size = int(os.environ["WORLD_SIZE"])
        args.gpu = int(os.environ.get("LOCAL_RANK", 0))
    else:
        args.rank, args.world_size, args.gpu = 0, 1, 0
    args.distributed = launched and args.world_size > 1
    args.dist_backend = backend
    device = resolve_device(args)
    if on_cuda:
        # The GPU resolve_device picks (an explicit cuda:N in one process) is the current
        # device too, so that collective_device() and NCCL use the GPU the model is on.
        args.gpu = device.index
        torch.cuda.set_device(args.gpu)

    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=30)
        if launched:
            dist.init_process_group(backend=backend, init_method=getattr(args, "dist_url", "env://"),
                                    world_size=args.world_size, rank=args.rank, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(),
                                    world_size=1, rank=0, timeout=timeout)
    if args.distributed:
        print(f"| distributed init (rank {args.rank}/{args.world_size}, {backend})", flush=True)
        dist.barrier()
    global _print_wrapped
    if not _print_wrapped:  # BenCo wraps builtins.print again on every call
        misc.setup_for_distributed(args.rank == 0)
        _print_wrapped = True
    return device
