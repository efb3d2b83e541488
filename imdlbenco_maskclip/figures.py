"""Every figure the commands draw, with matplotlib's Agg backend (no display needed).

* ``write_mask_gallery``: ``test``'s ``masks/<set>.png``, a few partial fakes per test set,
  image beside truth and prediction, so that a look shows what the metrics mean.
* ``plot_robustness``: ``test-robust``'s curves (paper Fig. 5/9 style).
* ``plot_robustness_comparison``: ``report``'s curves of several models (paper Fig. 5 form).
* ``write_prediction_gallery``: ``predict``'s ``gallery.png``.
* ``write_preview``: the ``preview`` command's grid of dataset samples.
"""
import math
import os

import numpy as np

from .datasets.opensdid import OPENSDID_SPLITS, BadSampleError

SPLIT_TITLES = dict(zip(OPENSDID_SPLITS, ("SD1.5", "SD2.1", "SDXL", "SD3", "Flux.1")))
METRIC_TITLES = {"pixel_f1": "pixel F1", "pixel_iou": "pixel IoU", "image_f1": "image F1",
                 "image_acc": "image accuracy", "image_auc": "image AUC"}
PERTURBATION_TITLES = {"gaussian_blur": "Gaussian blur (kernel size)", "jpeg": "JPEG compression (quality)",
                       "gaussian_noise": "Gaussian noise (variance)"}


def split_title(split):
    return SPLIT_TITLES.get(split, split)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _f1(pred, truth):
    tp = float((pred & truth).sum())
    denominator = float(pred.sum() + truth.sum())
    return 2 * tp / denominator if denominator else 0.0


def write_mask_gallery(path, rows, title):
    """Rows of image (truth outlined) | P(manipulated) | prediction > 0.5 (pixel F1) -> ``path``.
    ``rows``: dicts of ``image`` [H, W, 3] in 0..1, ``prob`` and ``truth`` [H, W], ``caption``,
    as ``engine.evaluation.gallery_rows`` gives them."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.8, 2.7 * len(rows)), squeeze=False)
    for row, shown in enumerate(rows):
        image, prob, truth = shown["image"], shown["prob"], shown["truth"]
        panels = ((image, shown["caption"], None), (prob, "P(manipulated)", "magma"),
                  (prob > 0.5, f"> 0.5: pixel F1 {_f1(prob > 0.5, truth):.3f}", "gray"))
        for ax, (picture, label, cmap) in zip(axes[row], panels):
            ax.imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.contour(truth, levels=[0.5], colors="cyan", linewidths=1.0)
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    fig.suptitle(f"{title}\ncyan: true manipulated region", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _curve(rows, split, perturbation):
    """(levels, rows) of one split's perturbation, by level."""
    points = sorted((r["level"], r) for r in rows if r["split"] == split and r["perturbation"] == perturbation)
    return [p[0] for p in points], [p[1] for p in points]


def _draw_curve(ax, rows, split, perturbation, key, index, label):
    """One metric against the level, and its clean value as a dashed line of the same colour.
    Each series has its own marker, smaller than the one before, so equal curves stay visible."""
    colour = f"C{index}"
    levels, points = _curve(rows, split, perturbation)
    ax.plot(levels, [p[key] for p in points], "-", marker="osD^v"[index % 5], markersize=9 - 2 * (index % 4),
            color=colour, label=label, alpha=0.85)
    clean = [r for r in rows if r["split"] == split and r["perturbation"] == "clean"]
    if clean and math.isfinite(clean[0][key]):
        ax.axhline(clean[0][key], color=colour, linestyle="--", linewidth=0.8)
    ax.set_xlabel(PERTURBATION_TITLES.get(perturbation, perturbation))
    ax.set_xticks(levels)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _save(plt, fig, path, paths):
    fig.savefig(path, dpi=100, bbox_inches="tight")  # keeps the legends placed outside the axes
    plt.close(fig)
    paths.append(path)


def _perturbations(rows):
    return list(dict.fromkeys(r["perturbation"] for r in rows if r["perturbation"] != "clean"))


def plot_robustness(plot_dir, rows, method):
    """Per set: pixel F1, image F1 and image AUC against each perturbation's level, the clean
    value as a dashed line (paper Fig. 5/9 style); per perturbation: pixel F1 of every set."""
    plt = _pyplot()
    os.makedirs(plot_dir, exist_ok=True)
    splits = list(dict.fromkeys(r["split"] for r in rows))
    perturbations = _perturbations(rows)
    paths = []
    if not perturbations:
        return paths

    for split in splits:
        fig, axes = plt.subplots(1, len(perturbations), figsize=(4.6 * len(perturbations), 3.6), squeeze=False)
        for ax, perturbation in zip(axes[0], perturbations):
            for i, key in enumerate(("pixel_f1", "image_f1", "image_auc")):
                _draw_curve(ax, rows, split, perturbation, key, i, METRIC_TITLES[key])
        axes[0][0].set_ylabel("metric (dashed: clean)")
        fig.suptitle(f"{method}: robustness on {split_title(split)}", fontsize=10)
        fig.tight_layout()
        # Below the panels, not over their points.
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=3, fontsize=8, frameon=False)
        _save(plt, fig, os.path.join(plot_dir, f"robustness_{split}.png"), paths)

    for perturbation in perturbations:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        for i, split in enumerate(splits):
            _draw_curve(ax, rows, split, perturbation, "pixel_f1", i, split_title(split))
        ax.set_ylabel("pixel F1, partial fakes (dashed: clean)")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        ax.set_title(f"{method}: pixel F1 under {perturbation.replace('_', ' ')}", fontsize=10)
        _save(plt, fig, os.path.join(plot_dir, f"pixel_f1_{perturbation}.png"), paths)
    return paths


def plot_robustness_comparison(plot_dir, rows_by_method):
    """``report``'s curves (paper Fig. 5 form): per metric one figure, a panel per split
    (rows) and perturbation (columns), a curve per method, its clean value dashed. Metrics
    no method defines anywhere (image metrics of mask-only models) get no figure."""
    plt = _pyplot()
    os.makedirs(plot_dir, exist_ok=True)
    every_row = [r for rows in rows_by_method.values() for r in rows]
    splits = list(dict.fromkeys(r["split"] for r in every_row))
    perturbations = _perturbations(every_row)
    paths = []
    if not perturbations:
        return paths
    for key, title in METRIC_TITLES.items():
        if not any(math.isfinite(r[key]) for r in every_row):
            continue
        fig, axes = plt.subplots(len(splits), len(perturbations), figsize=(4.6 * len(perturbations),
                                                                           3.4 * len(splits)), squeeze=False)
        for ax_row, split in zip(axes, splits):
            for ax, perturbation in zip(ax_row, perturbations):
                for i, (method, rows) in enumerate(rows_by_method.items()):
                    _draw_curve(ax, rows, split, perturbation, key, i, method)
                ax.set_title(f"{split_title(split)}", fontsize=9)
            ax_row[0].set_ylabel(f"{title} (dashed: clean)")
        fig.suptitle(f"{title} under perturbations", fontsize=11)
        fig.tight_layout()
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(4, len(rows_by_method)), fontsize=8, frameon=False)
        _save(plt, fig, os.path.join(plot_dir, f"compare_{key}.png"), paths)
    return paths


def write_prediction_gallery(path, entries, threshold):
    plt = _pyplot()
    cols = min(4, len(entries))
    rows = -(-len(entries) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, picture, fake_probability) in zip(axes.flat, entries):
        ax.imshow(picture)
        shown = "n/a" if fake_probability is None else f"{fake_probability:.3f}"
        ax.set_title(f"{name[:36]}\nP(fake) {shown}", fontsize=7)
    fig.suptitle(f"red: P(manipulated) > {threshold}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_preview(dataset, out, num=12, cols=4, seed=0):
    plt = _pyplot()

    pick = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:num])
    kinds, names = dataset.kinds, dataset.names  # properties that build a list over the whole set
    n_rows = max(1, -(-len(pick) // cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 3.4 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, pick):
        name = names[i]
        try:
            image, mask, label = dataset.read(i)
        except BadSampleError as exc:
            ax.set_title(f"BAD: {name}\n{exc.reason[:60]}", fontsize=7, color="red")
            continue
        ax.imshow(image)
        if kinds[i] == "partial":
            # An outline rather than a fill, so the edit itself stays visible.
            ax.contour(mask.mean(axis=2) > 127.5, levels=[0.5], colors="red", linewidths=1.2)
        ax.set_title(f"label {label} ({kinds[i]})  {image.shape[1]}x{image.shape[0]}\n{name[:42]}",
                     fontsize=7)
    fig.suptitle(f"{type(dataset).__name__} {dataset.entry_path} ({dataset.subset}); red outline = mask of a "
                 f"partial edit", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
