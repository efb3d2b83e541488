"""``report``: the results of several runs side by side in the paper's forms.

Reads, per run folder (or file), ``test``'s ``metrics.json`` (or ``train``'s: its last
test) and ``test-robust``'s ``robustness.json``, and writes to ``--output_dir``: ``report.md`` (Table 3 and Table 4
forms, best and second best marked, averages over splits, where each method's image scores
come from), ``report.csv``, and with robustness results ``robustness.csv`` and
``plots/compare_<metric>.png`` (Figure 5 form). ``--published`` adds the paper's numbers
(``imdlbenco_maskclip.published``), labelled as published, and the BR-Gen paper's Tables 2, 3
and 7 beside the BR-Gen protocol's tables. Runs of one method on different
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
from .brgen_protocol import AREA_BINS, PROTOCOL_KEYS, TABLE_2_3_COLUMNS, area_key

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


def trained_on_text(trained):
    """A result's ``trained_on`` ({"dataset", "data_path", "split"}) as one line, or None."""
    if not trained:
        return None
    where = trained["data_path"] + (f"#{trained['split']}" if trained.get("split") else "")
    return f"{trained['dataset']}: {where}" if trained.get("dataset") else where


def collect(paths):
    """-> (entries {label: {"source", "trained_on", "splits", "image_scores", "files"}}, robustness
    rows {label: rows}); metrics that JSON holds as null are NaN again. A method trained on
    different data in different runs is labelled with what each run was trained on."""
    results = [(path, _read(path)) for path in result_files(paths)]
    trained_sets = {}
    for _, result in results:
        method = result.get("method") or result.get("args", {}).get("model", "?")
        trained_sets.setdefault(method, set()).add(trained_on_text(result.get("trained_on")))
    entries, robust = {}, {}
    for path, result in results:
        method = result.get("method") or result.get("args", {}).get("model", "?")
        trained = trained_on_text(result.get("trained_on"))
        if len(trained_sets[method]) > 1:
            method = f"{method} (trained on {trained or 'unknown data'})"
        if result["command"] == "test-robust":
            label = method if method not in robust else f"{method} ({os.path.basename(os.path.dirname(path))})"
            robust[label] = [_nan_for_null(row) for row in result["rows"]]
            continue
        splits = {split: _nan_for_null(m) for split, m in result["splits"].items()}
        label = method
        if label in entries and set(splits) & set(entries[label]["splits"]):
            label = f"{method} ({os.path.basename(os.path.dirname(os.path.abspath(path)))})"
        entry = entries.setdefault(label, {"source": "measured", "trained_on": trained, "splits": {},
                                           "image_scores": None, "files": []})
        entry["splits"].update(splits)
        entry["files"].append(path)
        # Older results say nothing: a model with image metrics then had its own pred_label.
        scores = result.get("image_scores", "pred_label" if any(
            math.isfinite(m["image_f1"]) for m in splits.values()) else None)
        entry["image_scores"] = entry["image_scores"] or scores
    return entries, robust


def with_published(entries):
    """``entries`` and the paper's rows, "<paper name> (published)"."""
    added = {f"{method} (published)": {"source": "published", "trained_on": PUBLISHED_TRAINING["OpenSDI"],
                                       "splits": splits, "image_scores": None, "files": [published.CITATION]}
             for method, splits in published.results().items()}
    return {**entries, **added}


# What the published rows were trained on, as the papers say.
PUBLISHED_TRAINING = {"OpenSDI": "OpenSDID SD1.5 (OpenSDI paper)", "BR-Gen Table 2": "its authors' release",
                      "BR-Gen Table 3": "BR-Gen train (BR-Gen paper)"}


def brgen_published_entries():
    """The BR-Gen paper's Tables 2 and 3 as report entries, one set each (named for what the
    model was trained on), Table 7's bins joined to the Table 3 rows of the same method (both
    on models trained on BR-Gen)."""
    keys = [key for _, key in TABLE_2_3_COLUMNS]

    def entry(table, set_name, metrics):
        return {"source": "published", "trained_on": PUBLISHED_TRAINING[table], "image_scores": None,
                "splits": {set_name: metrics}, "files": [published.BRGEN_CITATION]}

    entries = {f"{method} (published, Table 2)": entry("BR-Gen Table 2", "BR-Gen, released model",
                                                        dict(zip(keys, values)))
               for method, values in published.BRGEN_TABLE_2.items()}
    for method, values in published.BRGEN_TABLE_3.items():
        bins = {area_key(lo, hi, "r50"): v for (lo, hi), v in zip(AREA_BINS, published.BRGEN_TABLE_7.get(method, ()))}
        entries[f"{method} (published, Tables 3 and 7)"] = entry("BR-Gen Table 3", "BR-Gen, trained on BR-Gen",
                                                                  {**dict(zip(keys, values)), **bins})
    return entries


def run(args):
    entries, robust = collect(args.runs)
    if not entries and not robust:
        raise UserError("no results to compare")
    brgen_published = brgen_published_entries() if args.published else {}
    if args.published:
        entries = with_published(entries)
    title = "Comparison of " + ", ".join(dict.fromkeys([*entries, *robust]))
    paths = reporting.write_comparison(args.output_dir, entries, robust, title, brgen_published)
    print("[report] " + ", ".join(paths))
    if entries:  # report.md
        with open(paths[0], encoding="utf-8") as f:
            print(f.read())
    return 0
