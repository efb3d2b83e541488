"""The BR-Gen paper's evaluation protocol (its Tables 2, 3, 4 and 7), for any dataset whose
samples have masks.

Figures, per test set, with BenCo's image threshold (an image is called generated when its
score is above 0.5, as BenCo's ``ImageF1`` does):

* ``real_r50``: Recall@50 of the real images (the share called real), ``gen_r50``: of the
  generated ones (the share called generated); ``n_real``, ``n_generated``;
* Split A, by generator family: ``gan_r50``, ``diffusion_r50``; Split B, by mask type:
  ``background_r50``, ``stuff_r50``; with their counts ``n_gan`` ... Family and mask type come
  from each sample's file name (BR-Gen's ``<Method>_<Stuff|Background>_<Source>_<id>``,
  :func:`~..datasets.brgen_names.parse_name`); a set whose names do not say has them n/a;
* by edited area (the share of the image its mask covers, on the full-size mask before any
  resizing, ``mask_area`` of the sample dict) in the bins of ``AREA_BINS``: per bin the count of
  generated images ``area_<lo>_<hi>_n``, their Recall@50 ``area_<lo>_<hi>_r50`` and their mean
  per-image pixel F1 ``area_<lo>_<hi>_pixel_f1`` (over the locally edited ones);
  ``n_area_unknown`` counts generated images whose dataset gives no area.

Image F1, AUC and pixel IoU are those of ``evaluators``; with no real image in a set, its
image F1 is over the generated images only and its AUC is undefined.

:func:`protocol_figures` computes the figures from per-image records, which
``evaluators.ImageRecords`` collects in BenCo's test pass. :func:`cross_type_markdown` lays out
runs trained on one type of edit and tested on the other (Table 4), from the subsets named by
the training source and the test set.
"""
import math

import numpy as np

from ..datasets.brgen_names import MASK_BINS, SUBSETS, parse_name

THRESHOLD = 0.5
AREA_BINS = MASK_BINS  # % of the image: [lo, hi), the last one [80, 100]
SPLITS = {"split_a": ("family", ("gan", "diffusion")), "split_b": ("mask", ("background", "stuff"))}
# Table 4's columns: (subset trained on, subset tested on).
CROSS_TYPE_PAIRS = (("gan", "diffusion"), ("diffusion", "gan"), ("background", "stuff"), ("stuff", "background"))


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


# ---------------------------------------------------------------------------- tables

# The columns of the BR-Gen paper's Tables 2 and 3: (heading, metric key).
TABLE_2_3_COLUMNS = (("Real R@50", "real_r50"), ("F1", "image_f1"), ("AUC", "image_auc"), ("R@50", "gen_r50"),
                     ("IoU", "pixel_iou"), ("GAN R@50", "gan_r50"), ("Diffusion R@50", "diffusion_r50"),
                     ("Background R@50", "background_r50"), ("Stuff R@50", "stuff_r50"))


def has_figures(metrics):
    """Whether a set's metrics hold this protocol's figures (results of older versions do not)."""
    return "gen_r50" in metrics


def fmt(value):
    """Three decimals, as the BR-Gen paper prints them; n/a when undefined, - when not published."""
    return "-" if value is None else "n/a" if not math.isfinite(value) else f"{value:.3f}"


def summary(metrics):
    """One line: R@50 of real and generated images, Split A and B, R@50 by area (counts in brackets)."""
    def part(label, key, count):
        return f"{label} {fmt(metrics[key])} ({metrics[count]})"
    parts = [part("real R@50", "real_r50", "n_real"), part("R@50", "gen_r50", "n_generated"),
             part("GAN", "gan_r50", "n_gan"), part("diffusion", "diffusion_r50", "n_diffusion"),
             part("background", "background_r50", "n_background"), part("stuff", "stuff_r50", "n_stuff")]
    parts += [part(f"<{hi}%", area_key(lo, hi, "r50"), area_key(lo, hi, "n")) for lo, hi in AREA_BINS]
    return ", ".join(parts)


def _row(cells):
    return "| " + " | ".join(cells) + " |"


def tables_markdown(rows, counts=True):
    """The BR-Gen paper's Table 2/3 form and Table 7 form as markdown lines, for ``rows``:
    [(method, set name, metrics)]. ``counts``: give each R@50 its number of images (measured
    rows; published rows have none and leave the count out)."""
    def with_count(metrics, value_key, count_key):
        count = metrics.get(count_key)
        return fmt(metrics.get(value_key)) + (f" ({count})" if counts and count is not None else "")

    lines = ["Detection and localization (BR-Gen paper Tables 2 and 3 form): Recall@50 of real and of "
             "generated images, image F1 and AUC, pixel IoU over the locally edited fakes; Split A by "
             "generator family, Split B by mask type (n/a where file names do not say). Counts in brackets.", "",
             _row(["method", "set"] + [h for h, _ in TABLE_2_3_COLUMNS]), "|---" * (2 + len(TABLE_2_3_COLUMNS)) + "|"]
    count_of = {"real_r50": "n_real", "gen_r50": "n_generated", "gan_r50": "n_gan", "diffusion_r50": "n_diffusion",
                "background_r50": "n_background", "stuff_r50": "n_stuff"}
    for method, name, m in rows:
        cells = [with_count(m, key, count_of[key]) if key in count_of else fmt(m.get(key))
                 for _, key in TABLE_2_3_COLUMNS]
        lines.append(_row([method, name] + cells))
    fakes_only = [f"{method} on {name}" for method, name, m in rows if counts and m.get("n_real") == 0]
    if fakes_only:
        lines += ["", f"No real image in {', '.join(fakes_only)}: real R@50 and AUC are n/a, image F1 is over "
                      f"the generated images only."]
    heads = [f"< {hi}%" for _, hi in AREA_BINS]
    lines += ["", "Generated images by edited area (BR-Gen paper Table 7 form): the share of the image the "
                  "full-size mask covers, in disjoint bins " + ", ".join(
                      f"[{lo}, {hi}{']' if hi == 100 else ')'}" for lo, hi in AREA_BINS) + " %. R@50 (count):", "",
              _row(["method", "set"] + heads), "|---" * (2 + len(heads)) + "|"]
    for method, name, m in rows:
        lines.append(_row([method, name] + [with_count(m, area_key(lo, hi, "r50"), area_key(lo, hi, "n"))
                                            for lo, hi in AREA_BINS]))
    measured = [(method, name, m) for method, name, m in rows if any(
        area_key(lo, hi, "pixel_f1") in m for lo, hi in AREA_BINS)]
    if measured:
        lines += ["", "Pixel F1 of the locally edited fakes by edited area (threshold 0.5):", "",
                  _row(["method", "set"] + heads), "|---" * (2 + len(heads)) + "|"]
        lines += [_row([method, name] + [fmt(m.get(area_key(lo, hi, "pixel_f1"))) for lo, hi in AREA_BINS])
                  for method, name, m in measured]
    unknown = [f"{method} on {name} ({m['n_area_unknown']})" for method, name, m in rows if m.get("n_area_unknown")]
    if unknown:
        lines += ["", f"Generated images whose dataset gives no mask area, in no bin: {', '.join(unknown)}."]
    return lines + [""]


def subset_of(name):
    """The BR-Gen subset that a source or test set name selects ("/data/BR-Gen#gan", "gan",
    "sample:brgen#Stuff") -> "gan", "stuff", ...; None when it names none."""
    subset = str(name or "").rsplit("#", 1)[-1].strip().lower()
    return subset if subset in SUBSETS and subset != "all" else None


def cross_type_markdown(rows, counts=True):
    """The BR-Gen paper's Table 4 form as markdown lines, for ``rows``: [(method, {(subset
    trained on, subset tested on): metrics})], with the pairs of ``CROSS_TYPE_PAIRS``.
    ``counts``: give each R@50 its number of images (measured rows)."""
    def cell(metrics, key, count_key):
        if metrics is None:
            return "-"
        count = metrics.get(count_key)
        return fmt(metrics.get(key)) + (f" ({count})" if counts and count is not None else "")

    heads = [f"{trained} → {tested} {what}" for trained, tested in CROSS_TYPE_PAIRS for what in ("Gen. R@50", "Real R@50")]
    lines = ["Cross-type (BR-Gen paper Table 4 form): trained on one subset, tested on the other; R@50 of "
             "the tested subset's generated and real images" + (" (count)" if counts else "") + ". -: pair not run.",
             "", _row(["method"] + heads), "|---" * (1 + len(heads)) + "|"]
    for method, pairs in rows:
        cells = []
        for pair in CROSS_TYPE_PAIRS:
            metrics = pairs.get(pair)
            cells += [cell(metrics, "gen_r50", "n_generated"), cell(metrics, "real_r50", "n_real")]
        lines.append(_row([method] + cells))
    return lines + [""]
