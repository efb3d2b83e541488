"""``test-robust``: the paper's robustness sweep (Fig. 5 and 9) with BenCo's wrappers.

For every test set: the clean reference (level 0), then BenCo's ``GaussianBlurWrapper``,
``JpegCompressionWrapper`` and ``GaussianNoiseWrapper`` levels, each applied as the
dataset's ``common_transforms`` (before resize/pad, as in BenCo's ``test_robust.py``),
evaluated with the full protocol. Results: ``robustness.json``, ``robustness.csv``,
``plots/*.png`` in ``--output_dir``; per level ``<log_dir>/<set>/<perturbation>_<level>/``
holds its TensorBoard log and ``log.txt`` (folder names without spaces or parentheses), at
the level's index in the sweep as TensorBoard step, with the level itself as a scalar.
"""
import os
import time

from torch.utils.tensorboard import SummaryWriter

import IMDLBenCo.training_scripts.utils.misc as misc
from IMDLBenCo.transforms.robustness_wrapper import (GaussianBlurWrapper, GaussianNoiseWrapper,
                                                     JpegCompressionWrapper)

from . import data, reporting, runtime
from .evaluation import load_model
from .evaluators import build_evaluators, evaluate, image_score_source


def sweep(args):
    """[(perturbation, level, transform)]: the clean reference, then every wrapper level."""
    levels = [("clean", 0, None)]
    for perturbation, wrapper in (("gaussian_blur", GaussianBlurWrapper(args.blur_kernels)),
                                  ("jpeg", JpegCompressionWrapper(args.jpeg_qualities)),
                                  ("gaussian_noise", GaussianNoiseWrapper(args.noise_vars))):
        levels += [(perturbation, level, transform) for level, transform in wrapper]
    return levels


def run(args, model_args):
    device = runtime.start(args, "test-robust")
    # Each set is opened once, before the model is built (a bad source or split fails now,
    # not after a long sweep).
    datasets = {name: data.open_test_dataset(args, name, source) for name, source in data.test_sources(args).items()}
    model, epoch = load_model(args, model_args, device)
    main = misc.is_main_process()
    if main:
        os.makedirs(args.output_dir, exist_ok=True)
    levels = sweep(args)
    evaluators = build_evaluators(args.image_score_from_mask)
    rows = []
    total, step, start = len(datasets) * len(levels), 0, time.time()
    for name, dataset in datasets.items():
        for level_index, (perturbation, level, transform) in enumerate(levels):
            step += 1
            print(f"[test-robust] ({step}/{total}) {name}: {perturbation} {level:g}")
            # The same random draws (JPEG quality within [q-1, q], noise) on every run.
            runtime.seed_everything(args.seed + misc.get_rank())
            # BenCo's datasets apply common_transforms in __getitem__ (before resize/pad); loader
            # workers start afresh for each level, so setting it here is what reopening would do.
            dataset.common_transforms = transform
            loader = data.test_loader(dataset, args)
            level_dir = os.path.join(args.log_dir, name, f"{perturbation}_{level:g}")
            writer = SummaryWriter(log_dir=level_dir) if main else None
            # The TensorBoard step is the level's place in the sweep, not int(level), which would
            # put noise variances 0.5 and 0.7 (and the clean reference) all at step 0.
            metrics = evaluate(model, {name: loader}, evaluators, device, level_index, args, writer,
                               **reporting.test_printers(args))[name]
            if writer is not None:
                writer.add_scalar(f"{name}_robustness/{perturbation}_level", level, level_index)
                writer.close()
                reporting.append_json_line(os.path.join(level_dir, "log.txt"),
                                           {**{f"test_{k}": v for k, v in metrics.items()}, "level": level,
                                            "step": level_index})
            rows.append({"split": name, "perturbation": perturbation, "level": level, **metrics})
            elapsed = time.time() - start
            print(f"[test-robust] ({step}/{total}) {name} {perturbation} {level:g}: pixel F1 "
                  f"{metrics['pixel_f1']:.4f}, image F1 {metrics['image_f1']:.4f}, image AUC "
                  f"{metrics['image_auc']:.4f}; {elapsed:.0f}s elapsed, ~{elapsed / step * (total - step):.0f}s left")
    if main:
        meta = {"command": "test-robust", "method": reporting.method_name(args), "checkpoint": args.checkpoint_path,
                "epoch": epoch, "image_scores": image_score_source(evaluators), "args": vars(args), "skipped": data.skipped_samples(datasets),
                "selections": data.dataset_selections(datasets)}
        paths = reporting.write_robustness(args.output_dir, rows, meta)
        print("[test-robust] results: " + ", ".join(paths))
    runtime.finish()
    return 0
