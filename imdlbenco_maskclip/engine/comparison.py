"""``report``: the results of several runs side by side in the paper's forms.

Reads, per run folder (or file), ``test``'s ``metrics.json`` (or ``train``'s: its last
test) and ``test-robust``'s ``robustness.json``, and writes to ``--output_dir``: ``report.md`` (Table 3 and Table 4
forms, best and second best marked, averages over splits, where each method's image scores
come from), ``report.csv``, and with robustness results ``robustness.csv`` and
``plots/compare_<metric>.png`` (Figure 5 form). ``--published`` adds the paper's numbers
(``imdlbenco_maskclip.published``), labelled as published, and the BR-Gen paper's Tables 2, 3,
4 and 7 beside the BR-Gen protocol's tables. A ``test`` of a checkpoint trained on one BR-Gen
subset (``--train_split gan`` or ``<source>#gan``) on the other is a row of the cross-type
table (Table 4 form). Runs of one method on different
splits (one ``test`` per split) are one row; a method tested twice on a split gets a row per
run, named with its folder.
"""
import json
import math
import os

from .. import published
from ..errors import UserError
from .evaluators import METRIC_KEYS
from . import reporting
from .checkpoints import training_source
from .brgen_protocol import AREA_BINS, CROSS_TYPE_PAIRS, PROTOCOL_KEYS, TABLE_2_3_COLUMNS, area_key, subset_of

RESULT_FILES = ("metrics.json", "robustness.json")


def _nan_for_null(metrics):
    undefined = set(METRIC_KEYS) | set(PROTOCOL_KEYS)
    return {k: (math.nan if v is None and k in undefined else v) for k, v in metrics.items()}


def result_files(paths):
    """The result JSON files of the runs named on the command line, in order."""
    found = []
    for path in paths:
        files = [os.path.join(path, name) for name in RESULT_FILES] if os.path.isdir(path) else [path]
        files = [f for f in files if os.path.isfile(f)]
        if not files:
            raise UserError(f"{path}: no {' or '.join(RESULT_FILES)} there",
                            hint="name the --output_dir of a `test` or `test-robust` run, or the JSON file")
        found += files
    return found


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(result, dict) or result.get("command") not in ("train", "test", "test-robust"):
        raise UserError(f"{path}: not the result of `benco-maskclip test`, `test-robust` or `train`",
                        hint="give the metrics.json or robustness.json those commands write")
    return result


def collect(paths):
    """-> (entries {label: {"source", "splits", "image_scores", "files", "trained_on"}}, robustness
    rows {label: rows}); metrics that JSON holds as null are NaN again. ``trained_on``: per split,
    the training source of the checkpoint tested there (None where the result does not say). A
    method tested again on a set is another row, named with its training source (the crossed
    benchmark's two directions), or else with its folder."""
    entries, robust = {}, {}
    for path in result_files(paths):
        result = _read(path)
        method = result.get("method") or result.get("args", {}).get("model", "?")
        if result["command"] == "test-robust":
            label = method if method not in robust else f"{method} ({os.path.basename(os.path.dirname(path))})"
            robust[label] = [_nan_for_null(row) for row in result["rows"]]
            continue
        splits = {split: _nan_for_null(m) for split, m in result["splits"].items()}
        source = _trained_on(result)
        label = method
        for other in ([f"{method} (trained on {source})"] if source else []) + [
                f"{method} ({os.path.basename(os.path.dirname(os.path.abspath(path)))})"]:
            if not (label in entries and set(splits) & set(entries[label]["splits"])):
                break
            label = other
        entry = entries.setdefault(label, {"source": "measured", "splits": {}, "image_scores": None, "files": [],
                                           "trained_on": {}})
        entry["splits"].update(splits)
        entry["trained_on"].update(dict.fromkeys(splits, source))
        entry["files"].append(path)
        # Older results say nothing: a model with image metrics then had its own pred_label.
        scores = result.get("image_scores", "pred_label" if any(
            math.isfinite(m["image_f1"]) for m in splits.values()) else None)
        entry["image_scores"] = entry["image_scores"] or scores
    return entries, robust


def _trained_on(result):
    """The training source of a result's model: ``train``'s own flags, or what ``test`` recorded
    from its checkpoint."""
    args = result.get("args", {})
    if result["command"] == "train":
        return training_source(args.get("data_path"), args.get("train_split"))
    return args.get("trained_on")


def with_published(entries):
    """``entries`` and the paper's rows, "<paper name> (published)"."""
    added = {f"{method} (published)": {"source": "published", "splits": splits, "image_scores": None,
                                       "files": [published.CITATION],
                                       "trained_on": dict.fromkeys(splits, PUBLISHED_TRAINING["OpenSDI"])}
             for method, splits in published.results().items()}
    return {**entries, **added}


# What the published rows were trained on, as the papers say (BR-Gen's by the set name of
# ``brgen_published_rows``).
PUBLISHED_TRAINING = {"OpenSDI": "OpenSDID SD1.5 (OpenSDI paper)",
                      "BR-Gen, released model": "its authors' release (BR-Gen paper, Table 2)",
                      "BR-Gen, trained on BR-Gen": "BR-Gen train (BR-Gen paper, Table 3)"}


def as_entries(brgen_rows):
    """``brgen_published_rows`` as report entries, for the table of both datasets side by side."""
    return {label: {"source": "published", "splits": {name: metrics}, "image_scores": None,
                    "files": [published.BRGEN_CITATION], "trained_on": {name: PUBLISHED_TRAINING[name]}}
            for label, name, metrics in brgen_rows}


def brgen_published_rows():
    """[(label, set, {metric key: value})] of the BR-Gen paper's Tables 2 and 3, Table 7's bins
    joined to the Table 3 rows of the same method (both on models trained on BR-Gen)."""
    keys = [key for _, key in TABLE_2_3_COLUMNS]
    rows = [(f"{method} (published, Table 2)", "BR-Gen, released model", dict(zip(keys, values)))
            for method, values in published.BRGEN_TABLE_2.items()]
    for method, values in published.BRGEN_TABLE_3.items():
        bins = {area_key(lo, hi, "r50"): v for (lo, hi), v in zip(AREA_BINS, published.BRGEN_TABLE_7.get(method, ()))}
        rows.append((f"{method} (published, Tables 3 and 7)", "BR-Gen, trained on BR-Gen",
                     {**dict(zip(keys, values)), **bins}))
    return rows


def cross_type_rows(entries):
    """[(label, {(subset trained on, subset tested on): metrics})] of the measured runs that
    trained on one subset of ``CROSS_TYPE_PAIRS`` and tested on its partner."""
    rows = []
    for label, entry in entries.items():
        pairs = {(subset_of(entry.get("trained_on", {}).get(split)), subset_of(split)): metrics
                 for split, metrics in entry["splits"].items()}
        pairs = {pair: metrics for pair, metrics in pairs.items() if pair in CROSS_TYPE_PAIRS}
        if pairs:
            rows.append((label, pairs))
    return rows


def brgen_published_cross_type_rows():
    """The BR-Gen paper's Table 4 as ``cross_type_rows`` gives measured runs."""
    return [(f"{method} (published, Table 4)", {pair: {"gen_r50": gen, "real_r50": real}
                                                for pair, (gen, real) in pairs.items()})
            for method, pairs in published.BRGEN_TABLE_4.items()]


def run(args):
    entries, robust = collect(args.runs)
    if not entries and not robust:
        raise UserError("no results to compare")
    brgen_published = brgen_published_rows() if args.published else []
    cross_type = (cross_type_rows(entries), brgen_published_cross_type_rows() if args.published else [])
    if args.published:
        entries = with_published(entries)
    title = "Comparison of " + ", ".join(dict.fromkeys([*entries, *robust]))
    paths = reporting.write_comparison(args.output_dir, entries, robust, title, brgen_published, cross_type,
                                       as_entries(brgen_published))
    print("[report] " + ", ".join(paths))
    if entries:  # report.md
        with open(paths[0], encoding="utf-8") as f:
            print(f.read())
    return 0
