"""``train``: BenCo's ``train_one_epoch`` and ``test_one_epoch`` with the paper's protocol.

Per epoch: train; test when due (after every ``--test_period``-th epoch and the last);
save ``checkpoint-<epoch>.pth`` (BenCo's ``misc.save_model``); copy it to
``checkpoint-best.pth`` when ``--best_metric`` improved (recorded in ``best.json``);
delete older ``checkpoint-<n>.pth`` files, so the folder holds the latest epoch (what
``--resume`` needs) and the best one; append one JSON line to ``log.txt``. A run killed
at any point resumes with ``--resume auto`` and ends at the same ``--epochs``.

At the end the last test is written as ``metrics.json`` and ``metrics.md``.
"""
import datetime
import math
import os
import time
import types

import torch
from timm.optim import param_groups_weight_decay
from torch.utils.tensorboard import SummaryWriter

import IMDLBenCo.training_scripts.utils.misc as misc
from IMDLBenCo.training_scripts.trainer import train_one_epoch

from . import checkpoints, data, reporting, runtime
from .evaluators import build_evaluators, evaluate
from .models import build_model


def build_optimizer(model, args):
    """Adam or AdamW on the trainable parameters only, without weight decay on biases and
    1-D parameters (BenCo's timm factory does the same grouping)."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = param_groups_weight_decay(model, args.weight_decay, no_weight_decay_list=skip)
    optimizer_class = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(groups, lr=args.lr, betas=(0.9, 0.999))


def open_data(args):
    """-> (training set, its loader, {name: test set}, {name: test loader})."""
    train_set = data.open_train_dataset(args)
    test_sets = {name: data.open_test_dataset(args, name, source) for name, source in data.test_sources(args).items()}
    print(f"[train] training set: {train_set}")
    for name, dataset in test_sets.items():
        print(f"[train] test set {name}: {dataset}")
    return (train_set, data.train_loader(train_set, args), test_sets,
            {name: data.test_loader(dataset, args) for name, dataset in test_sets.items()})


def loss_scaler(device):
    """BenCo's loss scaler for a model on ``device``. Its GradScaler is a CUDA one, enabled
    whenever a GPU exists, even for a model on the CPU: off unless ``device`` is CUDA."""
    scaler = misc.NativeScalerWithGradNormCount()
    if device.type != "cuda":
        scaler._scaler = torch.amp.GradScaler("cuda", enabled=False)
    return scaler


def prepare_model(args, model_args, device):
    """The model on ``device`` (DDP-wrapped when distributed), its optimizer and BenCo's loss
    scaler, resumed from --resume -> namespace(model, bare, optimizer, scaler)."""
    model = build_model(args, model_args)
    if args.distributed and device.type == "cuda":
        # SyncBatchNorm runs only on CUDA; gloo CPU runs keep per-process statistics.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    bare = model
    effective_batch = args.batch_size * args.accum_iter * misc.get_world_size()
    if args.lr is None:
        args.lr = args.blr * effective_batch / 256
    print(f"[train] lr {args.lr:.2e}, effective batch {effective_batch} ({args.batch_size} x "
          f"{args.accum_iter} accumulation x {misc.get_world_size()} process(es)), optimizer {args.optimizer}")
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[args.gpu] if device.type == "cuda" else None,
            find_unused_parameters=args.find_unused_parameters)
    optimizer = build_optimizer(bare, args)
    scaler = loss_scaler(device)
    checkpoints.resume(args, bare, optimizer, scaler)
    return types.SimpleNamespace(model=model, bare=bare, optimizer=optimizer, scaler=scaler)


def test_epoch(parts, test_loaders, evaluators, device, epoch, args, log_writer):
    """One test of every set -> (results, their averages, the log.txt fields)."""
    results = evaluate(parts.model, test_loaders, evaluators, device, epoch, args, log_writer, is_test=False,
                       **reporting.test_printers(args))
    avg = reporting.average(results)
    if log_writer is not None:
        for name, metrics in list(results.items()) + [("avg", avg)]:
            for key in reporting.METRIC_KEYS:
                if math.isfinite(metrics[key]):
                    log_writer.add_scalar(f"test_{name}/{key}", metrics[key], epoch)
    return results, avg, reporting.flat_stats(results, avg)


def keep_checkpoints(args, epoch, checkpoint, avg, best):
    """Main process, after an epoch's ``checkpoint`` is saved: update checkpoint-best.pth from a
    test's ``avg`` (None: untested epoch) and delete older numbered checkpoints."""
    if avg is not None:
        outcome = best.update(avg, epoch, checkpoint)
        if outcome == "undefined":
            print(f"[train] --best_metric {args.best_metric} is undefined here (no partial fakes, or no "
                  f"image-level prediction from --model {args.model}); checkpoint-best.pth not updated")
        elif outcome == "better":
            print(f"[train] new best {args.best_metric} {best.value:.4f} at epoch {epoch}")
    checkpoints.prune(args.output_dir, keep=checkpoint)


def write_final_metrics(args, results, avg, best, train_set, test_sets):
    meta = {"command": "train", "method": reporting.method_name(args), "epoch": args.epochs - 1,
            "train_data": str(train_set), "best": best.as_dict(), "args": vars(args),
            "skipped": data.skipped_samples({"train": train_set, **test_sets}),
            "selections": data.dataset_selections({"train": train_set, **test_sets})}
    paths = reporting.write_metrics(args.output_dir, results, avg, meta, f"{meta['method']} after epoch {args.epochs - 1}")
    print(f"[train] metrics: {paths[1]} and {paths[0]}; best checkpoint: {best.path or 'none'}")


def run(args, model_args):
    device = runtime.start(args, "train")
    if device.type != "cuda" and not args.if_not_amp:
        print(f"[train] fp16 autocast needs CUDA: training in fp32 on {device} (as with --if_not_amp)")
        args.if_not_amp = True
    main = misc.is_main_process()
    if main:
        os.makedirs(args.output_dir, exist_ok=True)
        os.makedirs(args.log_dir, exist_ok=True)
    checkpoints.resolve_resume(args)
    train_set, train_loader, test_sets, test_loaders = open_data(args)
    parts = prepare_model(args, model_args, device)
    best = checkpoints.Best.load(args.output_dir, args.best_metric, resuming=bool(args.resume))
    log_writer = SummaryWriter(log_dir=args.log_dir) if main else None
    evaluators = build_evaluators()

    if args.start_epoch >= args.epochs:
        print(f"[train] the checkpoint already finished epoch {args.start_epoch - 1} of --epochs {args.epochs}; "
              f"nothing to do")
    print(f"[train] epochs {args.start_epoch}..{args.epochs - 1}; logs in {args.log_dir}")
    start_time = time.time()
    results = avg = None
    for epoch in range(args.start_epoch, args.epochs):
        if hasattr(train_loader.sampler, "set_epoch"):  # DistributedSampler, RowGroupShuffleSampler
            train_loader.sampler.set_epoch(epoch)
        train_stats = train_one_epoch(parts.model, train_loader, parts.optimizer, device, epoch, parts.scaler,
                                      log_writer=log_writer, log_per_epoch_count=args.log_per_epoch_count,
                                      args=args)
        parts.optimizer.zero_grad()
        log_stats = {f"train_{k}": v for k, v in train_stats.items()}
        tested = (epoch + 1) % args.test_period == 0 or epoch + 1 == args.epochs
        if tested:
            results, avg, test_stats = test_epoch(parts, test_loaders, evaluators, device, epoch, args, log_writer)
            log_stats.update(test_stats)
        checkpoint = checkpoints.save(args, epoch, parts.model, parts.bare, parts.optimizer, parts.scaler)
        if main:
            keep_checkpoints(args, epoch, checkpoint, avg if tested else None, best)
            reporting.append_json_line(os.path.join(args.output_dir, "log.txt"), {**log_stats, "epoch": epoch})
            if log_writer is not None:
                log_writer.flush()

    print(f"[train] training time {datetime.timedelta(seconds=int(time.time() - start_time))}")
    if getattr(train_set, "skipped", None):
        # This process's record: samples found bad in DataLoader workers were warned about there.
        print(f"[train] training set: {train_set.report()}")
    if main and results is not None:
        write_final_metrics(args, results, avg, best, train_set, test_sets)
    if log_writer is not None:
        log_writer.close()
    runtime.finish()
    return 0
