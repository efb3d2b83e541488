"""Predicted masks as pictures: a few partial fakes per test set, image beside truth and prediction.

``test`` writes ``<output_dir>/masks/<set>.png`` with this, so that a look shows what the
metrics mean. The samples are the first partial fakes of the set (OpenSDID knows them
from its metadata; other datasets are scanned from the start), so two checkpoints tested
on one set show the same images.
"""
import os

import numpy as np
import torch
from torch.utils.data import default_collate

from IMDLBenCo.datasets.utils import denormalize

from .evaluators import partial_rows

SCAN_LIMIT = 256  # samples read at most to find partial fakes in a dataset without metadata


def partial_fake_indices(dataset, count):
    """Indices of the first ``count`` partial fakes of ``dataset`` (fewer if it has fewer)."""
    known = getattr(dataset, "is_partial", None)
    if known is not None:
        return [int(i) for i in np.flatnonzero(known)[:count]]
    found = []
    for index in range(min(len(dataset), SCAN_LIMIT)):
        sample = dataset[index]
        label = torch.as_tensor(sample["label"]).reshape(1)
        shape_mask = sample.get("shape_mask")
        if partial_rows(sample["mask"][None], label, None if shape_mask is None else shape_mask[None])[0]:
            found.append(index)
            if len(found) == count:
                break
    return found


def _f1(pred, truth):
    tp = float((pred & truth).sum())
    denominator = float(pred.sum() + truth.sum())
    return 2 * tp / denominator if denominator else 0.0


@torch.no_grad()
def write_mask_gallery(path, dataset, model, device, title, count=6):
    """Rows of image (truth outlined) | P(manipulated) | prediction > 0.5 (pixel F1) -> ``path``,
    or None when the set has no partial fake."""
    indices = partial_fake_indices(dataset, count)
    if not indices:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [dataset[i] for i in indices]
    batch = {key: value.to(device) if torch.is_tensor(value) else value
             for key, value in default_collate(samples).items()}
    model.eval()
    output = model(**batch)  # the whole BenCo batch: some models need edge_mask or shape_mask
    probs = output["pred_mask"][:, 0].float().cpu().numpy()
    images = denormalize(batch["image"].cpu()).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    truths = batch["mask"][:, 0].cpu().numpy() > 0.5
    fake_probabilities = output.get("pred_label")

    fig, axes = plt.subplots(len(samples), 3, figsize=(7.8, 2.7 * len(samples)), squeeze=False)
    for row, (sample, image, prob, truth) in enumerate(zip(samples, images, probs, truths)):
        height, width = (int(v) for v in sample["shape"])  # without padding
        image, prob, truth = image[:height, :width], prob[:height, :width], truth[:height, :width]
        caption = str(sample.get("name", indices[row]))[:40]
        if fake_probabilities is not None:
            caption += f"\nP(fake) {float(fake_probabilities[row]):.3f}"
        panels = ((image, caption, None), (prob, "P(manipulated)", "magma"),
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
