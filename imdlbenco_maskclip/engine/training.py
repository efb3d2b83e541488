"""``train``: BenCo's ``train_one_epoch`` and ``test_one_epoch`` with the paper's protocol.

Per epoch: train; test when due (after every ``--test_period``-th epoch and the last);
save ``checkpoint-<epoch>.pth`` with BenCo's ``misc.save_model``; copy it to
``checkpoint-best.pth`` when ``--best_metric`` improved (recorded in ``best.json``);
delete older ``checkpoint-<n>.pth`` files, so the folder holds the latest epoch (what
``--resume`` needs) and the best one; append one JSON line to ``log.txt``. A run killed
at any point resumes with ``--resume auto`` and ends at the same ``--epochs``.

At the end the last test is written as ``metrics.json`` and ``metrics.md``.
"""
import datetime
import json
import math
import os
import pickle
import shutil
import time

import torch
from timm.optim import param_groups_weight_decay
from torch.utils.tensorboard import SummaryWriter

import IMDLBenCo.training_scripts.utils.misc as misc
from IMDLBenCo.training_scripts.trainer import train_one_epoch

from . import data, reporting, runtime
from .evaluators import build_evaluators, evaluate
from .options import ConfigError


def build_optimizer(model, args):
    """Adam or AdamW on the trainable parameters only, without weight decay on biases and
    1-D parameters (BenCo's timm factory does the same grouping)."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = param_groups_weight_decay(model, args.weight_decay, no_weight_decay_list=skip)
    optimizer_class = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(groups, lr=args.lr, betas=(0.9, 0.999))


def _resolve_resume(args):
    if args.resume == "auto":
        found = runtime.latest_checkpoint(args.output_dir)
        print(f"[train] --resume auto: " + (f"continuing from {found}" if found else
                                            f"no checkpoint in {args.output_dir}, starting afresh"))
        args.resume = found or ""
    elif args.resume and not os.path.isfile(args.resume):
        raise ConfigError(f"--resume {args.resume}: no such file; give a checkpoint-<epoch>.pth, or "
                          f"'auto' for the latest one in --output_dir")


def run(args, model_args):
    device = runtime.start(args, "train")
    if device.type != "cuda" and not args.if_not_amp:
        print(f"[train] fp16 autocast needs CUDA: training in fp32 on {device} (as with --if_not_amp)")
        args.if_not_amp = True
    main = misc.is_main_process()
    if main:
        os.makedirs(args.output_dir, exist_ok=True)
        os.makedirs(args.log_dir, exist_ok=True)
    _resolve_resume(args)

    train_set = data.open_train_dataset(args)
    test_sets = {name: data.open_test_dataset(args, name, source)
                 for name, source in data.test_sources(args).items()}
    print(f"[train] training set: {train_set}")
    for name, dataset in test_sets.items():
        print(f"[train] test set {name}: {dataset}")
    train_loader = data.train_loader(train_set, args)
    test_loaders = {name: data.test_loader(dataset, args) for name, dataset in test_sets.items()}

    model = runtime.build_model(args, model_args)
    if args.distributed and device.type == "cuda":
        # SyncBatchNorm runs only on CUDA; gloo CPU runs keep per-process statistics.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    model_without_ddp = model
    effective_batch = args.batch_size * args.accum_iter * misc.get_world_size()
    if args.lr is None:
        args.lr = args.blr * effective_batch / 256
    print(f"[train] lr {args.lr:.2e}, effective batch {effective_batch} ({args.batch_size} x "
          f"{args.accum_iter} accumulation x {misc.get_world_size()} process(es)), optimizer {args.optimizer}")
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[args.gpu] if device.type == "cuda" else None,
            find_unused_parameters=args.find_unused_parameters)

    optimizer = build_optimizer(model_without_ddp, args)
    loss_scaler = misc.NativeScalerWithGradNormCount()
    if device.type != "cuda":
        # BenCo's scaler is a CUDA GradScaler, enabled whenever a GPU exists even for --device cpu.
        loss_scaler._scaler = torch.amp.GradScaler("cuda", enabled=False)
    try:
        misc.load_model(args=args, model_without_ddp=model_without_ddp, optimizer=optimizer, loss_scaler=loss_scaler)
    except (RuntimeError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        # BenCo loads the file with no word on what is wrong with it: an unreadable file, model
        # flags or optimizer groups other than the run's are named here (read_checkpoint
        # raises the first).
        checkpoint = runtime.read_checkpoint(args.resume, "--resume")
        if "parameter group" in str(exc):
            saved = runtime.saved_training_args(checkpoint)
            raise ConfigError(f"--resume {args.resume}: its optimizer state does not fit this run's parameter "
                              f"groups ({exc}); resume with the flags it was trained with"
                              + (f" (--optimizer {saved.optimizer} and the same model flags)"
                                 if hasattr(saved, "optimizer") else "")) from None
        if "state_dict" not in str(exc):
            raise
        raise runtime.weights_do_not_fit(args.resume, checkpoint, args, "--resume", exc) from None

    best_json = os.path.join(args.output_dir, "best.json")
    best = {"metric": args.best_metric, "value": -math.inf, "epoch": None}
    if args.resume and os.path.isfile(best_json):
        with open(best_json) as f:
            saved = json.load(f)
        if saved.get("metric") == args.best_metric:
            best = saved
    log_writer = SummaryWriter(log_dir=args.log_dir) if main else None
    evaluators = build_evaluators()

    if args.start_epoch >= args.epochs:
        print(f"[train] the checkpoint already finished epoch {args.start_epoch - 1} of --epochs {args.epochs}; "
              f"nothing to do")
    print(f"[train] epochs {args.start_epoch}..{args.epochs - 1}; logs in {args.log_dir}")
    start_time = time.time()
    results = None
    for epoch in range(args.start_epoch, args.epochs):
        if args.distributed:
            train_loader.sampler.set_epoch(epoch)
        train_stats = train_one_epoch(model, train_loader, optimizer, device, epoch, loss_scaler,
                                      log_writer=log_writer, log_per_epoch_count=args.log_per_epoch_count,
                                      args=args)
        optimizer.zero_grad()
        log_stats = {f"train_{k}": v for k, v in train_stats.items()}
        tested = (epoch + 1) % args.test_period == 0 or epoch + 1 == args.epochs
        if tested:
            results = evaluate(model, test_loaders, evaluators, device, epoch, args, log_writer, is_test=False)
            avg = reporting.average(results)
            log_stats.update(reporting.flat_stats(results, avg))
            if log_writer is not None:
                for name, metrics in list(results.items()) + [("avg", avg)]:
                    for key in reporting.METRIC_KEYS:
                        if math.isfinite(metrics[key]):
                            log_writer.add_scalar(f"test_{name}/{key}", metrics[key], epoch)
        misc.save_model(args=args, model=model, model_without_ddp=model_without_ddp, optimizer=optimizer,
                        loss_scaler=loss_scaler, epoch=epoch)
        if main:
            checkpoint = os.path.join(args.output_dir, f"checkpoint-{epoch}.pth")
            if tested:
                value = avg[args.best_metric[len("avg_"):]]
                if not math.isfinite(value):
                    print(f"[train] --best_metric {args.best_metric} is undefined here (no partial fakes, or "
                          f"no image-level prediction from --model {args.model}); checkpoint-best.pth not updated")
                elif value > best["value"]:
                    best = {"metric": args.best_metric, "value": value, "epoch": epoch}
                    # Copied under another name, then renamed: a test reading checkpoint-best.pth
                    # meanwhile sees the old file or the new one, never half of one.
                    best_path = os.path.join(args.output_dir, "checkpoint-best.pth")
                    shutil.copyfile(checkpoint, best_path + ".partial")
                    os.replace(best_path + ".partial", best_path)
                    reporting.write_json(best_json, best)
                    print(f"[train] new best {args.best_metric} {value:.4f} at epoch {epoch}")
            for old in runtime.numbered_checkpoints(args.output_dir):
                if old != checkpoint:
                    os.remove(old)
            reporting.append_json_line(os.path.join(args.output_dir, "log.txt"), {**log_stats, "epoch": epoch})
            if log_writer is not None:
                log_writer.flush()

    print(f"[train] training time {datetime.timedelta(seconds=int(time.time() - start_time))}")
    if getattr(train_set, "skipped", None):
        # This process's record: samples found bad in DataLoader workers were warned about there.
        print(f"[train] training set: {train_set.report()}")
    if main and results is not None:
        meta = {"command": "train", "method": reporting.method_name(args), "epoch": args.epochs - 1,
                "train_data": str(train_set), "best": best, "args": vars(args),
                "skipped": data.skipped_samples({"train": train_set, **test_sets})}
        paths = reporting.write_metrics(args.output_dir, results, avg, meta,
                                        f"{meta['method']} after epoch {args.epochs - 1}")
        print(f"[train] metrics: {paths[1]} and {paths[0]}; best checkpoint: "
              f"{os.path.join(args.output_dir, 'checkpoint-best.pth') if best['epoch'] is not None else 'none'}")
    if log_writer is not None:
        log_writer.close()
    runtime.finish()
    return 0
