"""``test``: one checkpoint on every test set with the paper's protocol.

Writes ``metrics.json`` and ``metrics.md`` to ``--output_dir``, a ``log.txt`` line there,
``masks/<set>.png`` (``--gallery_size`` partial fakes with their true and predicted masks),
and per set ``<log_dir>/<set>/`` with its own TensorBoard log and ``log.txt`` (BenCo's
``test.py`` writes every set's stats into the last set's log).
"""
import os

import torch
from torch.utils.data import default_collate
from torch.utils.tensorboard import SummaryWriter

import IMDLBenCo.training_scripts.utils.misc as misc
from IMDLBenCo.datasets.utils import denormalize

from .. import figures
from . import data, models, precision, reporting, runtime
from .evaluators import build_evaluators, evaluate, image_score_source, partial_fake_indices


def load_model(args, model_args, device):
    """The model of ``--checkpoint_path`` (resolved by the flags), on ``device``, run at ``--dtype``
    -> (model, epoch or None). No DDP wrapper: testing needs no gradient synchronisation; the
    evaluators reduce."""
    model, epoch = models.model_from_checkpoint(args.checkpoint_path, args, model_args)
    return precision.for_inference(model.to(device), args.dtype, device), epoch


def write_logs(args, results, epoch, writers):
    """Per set its own log.txt line (and close its TensorBoard writer), and one line for all."""
    for name, writer in writers.items():
        reporting.append_json_line(os.path.join(args.log_dir, name, "log.txt"),
                                   {**{f"test_{k}": v for k, v in results[name].items()}, "epoch": epoch})
        writer.close()
    reporting.append_json_line(os.path.join(args.output_dir, "log.txt"),
                               {**reporting.flat_stats(results, reporting.average(results)), "epoch": epoch})


@torch.no_grad()
def gallery_rows(dataset, indices, model, device):
    """The model on the samples ``indices`` of ``dataset`` as one batch -> per sample a dict of
    ``image`` [H, W, 3] in 0..1, ``prob`` P(manipulated) and ``truth`` (bool) [H, W], all without
    padding, and a ``caption`` (its name, and P(fake) when the model gives one)."""
    samples = [dataset[i] for i in indices]
    batch = {key: value.to(device) if torch.is_tensor(value) else value
             for key, value in default_collate(samples).items()}
    model.eval()
    output = model(**batch)  # the whole BenCo batch: some models need edge_mask or shape_mask
    probs = output["pred_mask"][:, 0].float().cpu().numpy()
    images = denormalize(batch["image"].cpu()).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    truths = batch["mask"][:, 0].cpu().numpy() > 0.5
    fakes = models.fake_probabilities(output)
    rows = []
    for i, (sample, image, prob, truth) in enumerate(zip(samples, images, probs, truths)):
        height, width = (int(v) for v in sample["shape"])
        caption = str(sample.get("name", indices[i]))[:40]
        if fakes is not None:
            caption += f"\nP(fake) {float(fakes[i]):.3f}"
        rows.append({"image": image[:height, :width], "prob": prob[:height, :width],
                     "truth": truth[:height, :width], "caption": caption})
    return rows


def draw_galleries(args, loaders, model, device, method):
    drawn = []
    for name, loader in loaders.items():
        indices = partial_fake_indices(loader.dataset, args.gallery_size)
        if indices:
            drawn.append(figures.write_mask_gallery(os.path.join(args.output_dir, "masks", f"{name}.png"),
                                                    gallery_rows(loader.dataset, indices, model, device),
                                                    f"{method} on {name}"))
    if drawn:
        print(f"[test] predicted masks: {', '.join(drawn)}")


def run(args, model_args):
    device = runtime.start(args, "test")
    loaders = {name: data.test_loader(data.open_test_dataset(args, name, source), args)
               for name, source in data.test_sources(args).items()}
    model, epoch = load_model(args, model_args, device)
    epoch = epoch if isinstance(epoch, int) else 0
    main = misc.is_main_process()
    writers = {}
    if main:
        os.makedirs(args.output_dir, exist_ok=True)
        writers = {name: SummaryWriter(log_dir=os.path.join(args.log_dir, name)) for name in loaders}
    evaluators = build_evaluators(args.image_score_from_mask)
    results = evaluate(model, loaders, evaluators, device, epoch, args, writers, is_test=True,
                       **reporting.test_printers(args))
    if main:
        write_logs(args, results, epoch, writers)
        meta = {"command": "test", "method": reporting.method_name(args), "checkpoint": args.checkpoint_path,
                "epoch": epoch, "image_scores": image_score_source(evaluators), "args": vars(args),
                "skipped": data.skipped_samples({name: loader.dataset for name, loader in loaders.items()}),
                "selections": data.dataset_selections({name: loader.dataset for name, loader in loaders.items()})}
        paths = reporting.write_metrics(args.output_dir, results, reporting.average(results), meta,
                                        f"{meta['method']}, {os.path.basename(args.checkpoint_path)} (epoch {epoch})")
        print(f"[test] metrics: {paths[1]} and {paths[0]}")
        if args.gallery_size > 0:
            draw_galleries(args, loaders, model, device, meta["method"])
    runtime.finish()
    return 0
