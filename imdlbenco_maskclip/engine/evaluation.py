"""``test``: one checkpoint on every test set with the paper's protocol.

Writes ``metrics.json`` and ``metrics.md`` to ``--output_dir``, a ``log.txt`` line there,
``masks/<set>.png`` (``--gallery_size`` partial fakes with their true and predicted masks),
and per set ``<log_dir>/<set>/`` with its own TensorBoard log and ``log.txt`` (BenCo's
``test.py`` writes every set's stats into the last set's log).
"""
import os

from torch.utils.tensorboard import SummaryWriter

import IMDLBenCo.training_scripts.utils.misc as misc

from . import data, gallery, reporting, runtime
from .evaluators import build_evaluators, evaluate


def load_model(args, model_args, device, checkpoint):
    """The model with the weights of ``checkpoint`` (a path from ``runtime.resolve_checkpoint``),
    on ``device`` -> (model, the checkpoint's epoch or None)."""
    model = runtime.build_model(args, runtime.without_weight_sources(model_args))
    epoch = runtime.load_weights(model, checkpoint, args)
    # No DDP wrapper: testing needs no gradient synchronisation; the evaluators reduce.
    model.to(device)
    return model, epoch


def run(args, model_args):
    device = runtime.start(args, "test")
    # Resolved once, before opening data and building the model, so a bad path fails first.
    checkpoint = runtime.resolve_checkpoint(args.checkpoint_path)
    loaders = {name: data.test_loader(data.open_test_dataset(args, name, source), args)
               for name, source in data.test_sources(args).items()}
    model, epoch = load_model(args, model_args, device, checkpoint)
    epoch = epoch if isinstance(epoch, int) else 0
    main = misc.is_main_process()
    writers = {}
    if main:
        os.makedirs(args.output_dir, exist_ok=True)
        writers = {name: SummaryWriter(log_dir=os.path.join(args.log_dir, name)) for name in loaders}
    results = evaluate(model, loaders, build_evaluators(), device, epoch, args, writers, is_test=True)
    if main:
        for name, writer in writers.items():
            reporting.append_json_line(os.path.join(args.log_dir, name, "log.txt"),
                                       {**{f"test_{k}": v for k, v in results[name].items()}, "epoch": epoch})
            writer.close()
        avg = reporting.average(results)
        reporting.append_json_line(os.path.join(args.output_dir, "log.txt"),
                                   {**reporting.flat_stats(results, avg), "epoch": epoch})
        meta = {"command": "test", "method": reporting.method_name(args), "checkpoint": checkpoint,
                "epoch": epoch, "args": vars(args),
                "skipped": data.skipped_samples({name: loader.dataset for name, loader in loaders.items()})}
        paths = reporting.write_metrics(args.output_dir, results, avg, meta,
                                        f"{meta['method']}, {os.path.basename(checkpoint)} (epoch {epoch})")
        print(f"[test] metrics: {paths[1]} and {paths[0]}")
        if args.gallery_size > 0:
            galleries = [gallery.write_mask_gallery(os.path.join(args.output_dir, "masks", f"{name}.png"),
                                                    loader.dataset, model, device, f"{meta['method']} on {name}",
                                                    count=args.gallery_size)
                         for name, loader in loaders.items()]
            drawn = [path for path in galleries if path]
            if drawn:
                print(f"[test] predicted masks: {', '.join(drawn)}")
    runtime.finish()
    return 0
