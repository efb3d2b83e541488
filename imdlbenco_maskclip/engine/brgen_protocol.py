"""The BR-Gen paper's evaluation protocol (its Tables 2, 3, 4 and 7), for any dataset whose
samples have masks.

Figures, per test set, with BenCo's image threshold (an image is called generated when its
score is above 0.5, as BenCo's ``ImageF1`` does):

* ``real_r50``: Recall@50 of the real images (the share called real), ``gen_r50``: of the
  generated ones (the share called generated); ``n_real``, ``n_generated``;
* Split A, by generator family: ``gan_r50``, ``diffusion_r50``; Split B, by mask type:
  ``background_r50``, ``stuff_r50``; with their counts ``n_gan`` ... Family and mask type come
  from each sample's file name (BR-Gen's ``<Method>_<Stuff|Background>_<Source>_<id>``,
  :func:`~..datasets.brgen.parse_name`); a set whose names do not say has them n/a;
* by edited area (the share of the image its mask covers, on the full-size mask before any
  resizing, ``mask_area`` of the sample dict) in the bins of ``AREA_BINS``: per bin the count of
  generated images ``area_<lo>_<hi>_n``, their Recall@50 ``area_<lo>_<hi>_r50`` and their mean
  per-image pixel F1 ``area_<lo>_<hi>_pixel_f1`` (over the locally edited ones);
  ``n_area_unknown`` counts generated images whose dataset gives no area.

Image F1, AUC and pixel IoU are those of ``evaluators``; with no real image in a set, its
image F1 is over the generated images only and its AUC is undefined.

:func:`protocol_figures` computes the figures from per-image records, which
``evaluators.ImageRecords`` collects in BenCo's test pass.
"""
import math

import numpy as np

from ..datasets.brgen import MASK_BINS, parse_name

THRESHOLD = 0.5
AREA_BINS = MASK_BINS  # % of the image: [lo, hi), the last one [80, 100]
SPLITS = {"split_a": ("family", ("gan", "diffusion")), "split_b": ("mask", ("background", "stuff"))}


def area_key(lo, hi, what):
    return f"area_{lo}_{hi}_{what}"


PROTOCOL_KEYS = (("real_r50", "gen_r50", "gan_r50", "diffusion_r50", "background_r50", "stuff_r50")
                 + tuple(area_key(lo, hi, w) for lo, hi in AREA_BINS for w in ("r50", "pixel_f1")))
PROTOCOL_COUNT_KEYS = (("n_real", "n_generated", "n_gan", "n_diffusion", "n_background", "n_stuff",
                        "n_area_unknown") + tuple(area_key(lo, hi, "n") for lo, hi in AREA_BINS))


def area_bin(area):
    """The index in ``AREA_BINS`` of an area share in [0, 1], or None (unknown)."""
    if area is None or not math.isfinite(area):
        return None
    percent = 100 * area
    for i, (lo, hi) in enumerate(AREA_BINS):
        if lo <= percent < hi or (i == len(AREA_BINS) - 1 and percent >= lo):
            return i
    return None


def _recall(scores, generated):
    """Share of ``scores`` on the right side of the threshold; NaN when there are none or the
    model gives no score."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0 or not np.isfinite(scores).all():
        return math.nan
    return float(np.mean(scores > THRESHOLD if generated else scores <= THRESHOLD))


def _mean(values):
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def protocol_figures(records):
    """Per-image records -> the protocol's figures (module docstring), a flat dict.

    A record: {"label": 0 or 1, "score": P(generated) or NaN (no image-level output),
    "name": the file name, "area": share of the full-size mask or NaN, "pixel_f1": the
    image's pixel F1 (NaN unless it is a locally edited fake)}.
    """
    real = [r for r in records if r["label"] == 0]
    fake = [r for r in records if r["label"] == 1]
    figures = {"real_r50": _recall([r["score"] for r in real], generated=False), "n_real": len(real),
               "gen_r50": _recall([r["score"] for r in fake], generated=True), "n_generated": len(fake)}
    parsed = [parse_name(r["name"]) or {} for r in fake]
    for field, groups in SPLITS.values():
        for group in groups:
            members = [r["score"] for r, p in zip(fake, parsed) if p.get(field) == group]
            figures[f"{group}_r50"] = _recall(members, generated=True)
            figures[f"n_{group}"] = len(members)
    bins = [area_bin(r["area"]) for r in fake]
    figures["n_area_unknown"] = bins.count(None)
    for i, (lo, hi) in enumerate(AREA_BINS):
        members = [r for r, b in zip(fake, bins) if b == i]
        figures[area_key(lo, hi, "n")] = len(members)
        figures[area_key(lo, hi, "r50")] = _recall([r["score"] for r in members], generated=True)
        figures[area_key(lo, hi, "pixel_f1")] = _mean([r["pixel_f1"] for r in members])
    return figures
