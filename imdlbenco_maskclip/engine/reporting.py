"""What the commands print and write: test progress and results, metrics.json / metrics.md
(paper Tables 3 and 4), robustness.json / .csv with its curves, BenCo's log.txt lines.

JSON files hold ``null`` where a metric is undefined (no partial fake in a set, no
``pred_label`` from the model), never NaN, so any JSON reader accepts them.
"""
import csv
import json
import math
import os

import numpy as np

import IMDLBenCo.training_scripts.utils.misc as misc

from .. import published
from ..datasets.opensdid import OPENSDID_SPLITS
from ..figures import plot_robustness, plot_robustness_comparison, split_title
from . import brgen_protocol
from .evaluators import IMAGE_SCORE_RULES, METRIC_KEYS

COUNT_KEYS = ("n_images", "n_partial")


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(json_safe(data), f, indent=2, default=str)
        f.write("\n")


def append_json_line(path, record):
    """Append ``record`` (NaN as null) as one JSON line, BenCo's ``log.txt`` format."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(json_safe(record)) + "\n")


def average(results):
    """Mean of each metric over the sets where it is defined, and the counts summed.

    ``defined_in`` says how many sets each mean covers: the paper's AVG column is a mean
    over all five splits, so a mean over fewer is flagged in the tables.
    """
    avg, defined = {}, {}
    for key in METRIC_KEYS:
        values = [r[key] for r in results.values() if math.isfinite(r[key])]
        avg[key] = float(np.mean(values)) if values else math.nan
        defined[key] = len(values)
    for key in COUNT_KEYS:
        avg[key] = int(sum(r[key] for r in results.values()))
    avg["defined_in"] = defined
    return avg


def flat_stats(results, avg):
    """One log.txt line's test fields: ``test_<set>_<key>`` and ``test_avg_<key>``."""
    stats = {f"test_{name}_{k}": v for name, metrics in results.items() for k, v in metrics.items()}
    stats.update({f"test_avg_{k}": v for k, v in avg.items() if k != "defined_in"})
    return stats


def method_name(args):
    setting = args.model_args.get("model_setting")
    return f"{args.model} ({setting})" if setting else args.model


def _num(value):
    return "n/a" if not math.isfinite(value) else f"{value:.4f}".replace("0.", ".", 1) if value < 1 else f"{value:.4f}"


def _cell(values):
    """"IoU/F1"-style cell; a single n/a when nothing in it is defined."""
    return "/".join(_num(v) for v in values) if any(math.isfinite(v) for v in values) else "n/a"


def _avg_cell(avg, n_sets, *keys):
    cell = _cell([avg[k] for k in keys])
    partial = sorted({avg["defined_in"][k] for k in keys if 0 < avg["defined_in"][k] < n_sets})
    return cell + (f" (over {partial[0]} of {n_sets})" if partial else "")


def markdown_table(header, rows):
    """Markdown table lines: ``header`` cells, then one line per list of cells in ``rows``."""
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(map(str, row)) + " |"
                                                                          for row in rows]


def metrics_markdown(results, avg, method, title):
    names = list(results)
    header = ["method", *(split_title(n) for n in names), "AVG"]

    def table(caption, *keys):
        row = [method, *(_cell([results[n][k] for k in keys]) for n in names), _avg_cell(avg, len(names), *keys)]
        return [caption, ""] + markdown_table(header, [row]) + [""]

    counts = ["Images and partial fakes evaluated:", ""] + markdown_table(
        ["", *(split_title(n) for n in names), "total"],
        [["images", *(results[n]["n_images"] for n in names), avg["n_images"]],
         ["partial fakes", *(results[n]["n_partial"] for n in names), avg["n_partial"]]]) + [""]
    lines = [f"# {title}", ""]
    lines += table("Pixel level, partial fakes only (paper Table 3): IoU/F1, threshold 0.5", "pixel_iou", "pixel_f1")
    lines += table("Image level, all images (paper Table 4): F1/accuracy, threshold 0.5", "image_f1", "image_acc")
    lines += table("Image level, all images: AUC", "image_auc")
    lines += counts
    lines.append("n/a: undefined (no partial fake in the set, or the model gives no image-level prediction).")
    brgen_rows = [(method, split_title(n), results[n]) for n in names if brgen_protocol.has_figures(results[n])]
    if brgen_rows:
        lines += ["", "## The BR-Gen paper's protocol", ""] + brgen_protocol.tables_markdown(brgen_rows)
    return "\n".join(lines) + "\n"


def write_metrics(output_dir, results, avg, meta, title):
    """metrics.json (per set, ``avg`` = ``average(results)``, counts, ``meta``) and metrics.md;
    returns their paths."""
    json_path = os.path.join(output_dir, "metrics.json")
    md_path = os.path.join(output_dir, "metrics.md")
    write_json(json_path, {**meta, "splits": results, "average": avg})
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(metrics_markdown(results, avg, meta["method"], title))
        if meta.get("image_scores") not in (None, "pred_label"):
            f.write(f"\nImage scores of this model: {IMAGE_SCORE_RULES[meta['image_scores']]} "
                    f"(--image_score_from_mask {meta['image_scores']}).\n")
        if meta.get("skipped"):
            counts = ", ".join(f"{name} {len(keys)}" for name, keys in meta["skipped"].items())
            f.write(f"\nBad samples left out (--on_bad_sample skip): {counts}; listed in metrics.json.\n")
    return json_path, md_path


def csv_value(value):
    """A CSV cell: blank for an undefined metric (None or NaN)."""
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


ROBUST_COLUMNS = (("split", "perturbation", "level") + METRIC_KEYS + COUNT_KEYS + brgen_protocol.PROTOCOL_KEYS
                  + brgen_protocol.PROTOCOL_COUNT_KEYS)


def write_robustness(output_dir, rows, meta):
    """robustness.json, robustness.csv and the curves under plots/; returns the paths."""
    json_path = os.path.join(output_dir, "robustness.json")
    csv_path = os.path.join(output_dir, "robustness.csv")
    write_json(json_path, {**meta, "rows": rows})
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ROBUST_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_value(row.get(k)) for k in ROBUST_COLUMNS})
    return [json_path, csv_path] + plot_robustness(os.path.join(output_dir, "plots"), rows, meta["method"])


def print_test_plan(name, loader, args):
    """How a test set is split over the processes, before its pass."""
    dataset = loader.dataset
    tail = len(dataset) - len(loader) * loader.batch_size * misc.get_world_size() if args.distributed else 0
    print(f"[test] {name}: {len(dataset)} samples, {len(loader)} batch(es) per process"
          + (f" + {tail} in BenCo's tail pass" if tail > 0 else ""))


def print_test_results(name, metrics, dataset, args):
    """A test set's metrics, and a warning when they do not cover the whole set."""
    if metrics["n_images"] != len(dataset):
        print(f"WARNING [test] {name}: evaluated {metrics['n_images']} images but the set has "
              f"{len(dataset)}; metrics are not over the whole set")
    expected_partial = getattr(dataset, "num_partial", None)
    if expected_partial is not None and expected_partial != metrics["n_partial"]:
        print(f"WARNING [test] {name}: {metrics['n_partial']} partial fakes scored, the dataset lists "
              f"{expected_partial}: edits that vanish when resized to --image_size {args.image_size}, or "
              f"that lie outside the top-left crop BenCo's --if_padding keeps of larger images, are not scored")
    print(f"[test] {name}: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in metrics.items() if k in METRIC_KEYS + COUNT_KEYS))
    if brgen_protocol.has_figures(metrics):
        print(f"[test] {name} (BR-Gen protocol): {brgen_protocol.summary(metrics)}")


def test_printers(args):
    """``evaluate``'s ``announce`` and ``report`` hooks: the two printers above, for ``args``."""
    return {"announce": lambda name, loader: print_test_plan(name, loader, args),
            "report": lambda name, metrics, dataset: print_test_results(name, metrics, dataset, args)}


# ---------------------------------------------------------------------------- report

def _marked(value, rank):
    text = _num(value)
    return f"**{text}**" if rank == 0 else f"_{text}_" if rank == 1 else text


def _ranks(values):
    """Per value its place among the distinct finite values, best (largest) first: 0, 1, ... (None if NaN)."""
    distinct = sorted({v for v in values if math.isfinite(v)}, reverse=True)
    return [distinct.index(v) if math.isfinite(v) else None for v in values]


def comparison_columns(entries):
    """The splits of the measured entries (published ones show the same splits when they have them)."""
    measured = [e for e in entries.values() if e["source"] == "measured"] or list(entries.values())
    return list(dict.fromkeys(split for e in measured for split in e["splits"]))


def comparison_values(entries, columns):
    """{label: {column: metrics}} with "AVG": the mean of each metric over the entry's splits
    among ``columns`` where it is defined (``average``), NaN for a split it has not."""
    blank = dict.fromkeys(METRIC_KEYS, math.nan)
    table = {}
    for label, entry in entries.items():
        shown = {s: {**blank, **entry["splits"][s]} for s in columns if s in entry["splits"]}
        avg = average({s: {**m, **{k: m.get(k, 0) for k in COUNT_KEYS}} for s, m in shown.items()})
        table[label] = {**{s: shown.get(s, blank) for s in columns}, "AVG": avg}
    return table


def _brgen_sets(entry):
    """An entry's sets other than OpenSDID's splits with the BR-Gen protocol's figures."""
    return [name for name, metrics in entry["splits"].items()
            if name not in OPENSDID_SPLITS and brgen_protocol.has_figures(metrics)]


def _trained_on(entry, sets):
    """What an entry's runs on ``sets`` were trained on, one line ("?" where no result says)."""
    return "; ".join(dict.fromkeys(str(entry.get("trained_on", {}).get(s) or "?") for s in sets)) or "?"


def side_by_side_markdown(entries, brgen_published):
    """Both benchmarks in one table, a row per run and BR-Gen set: what it was trained on,
    OpenSDID's splits (pixel F1 / image F1, the OpenSDI paper's Tables 3 and 4) with their
    mean, then the BR-Gen paper's Table 2/3 columns. ``brgen_published``: the BR-Gen paper's
    rows as entries (``comparison.as_entries``). Published rows fill what the papers give, "-"
    elsewhere. Empty unless the measured runs cover both datasets."""
    measured = {label: e for label, e in entries.items() if e["source"] == "measured"}
    splits = [s for s in OPENSDID_SPLITS if any(s in e["splits"] for e in measured.values())]
    if not splits or not any(_brgen_sets(e) for e in measured.values()):
        return []
    table = comparison_values(entries, splits)
    header = ["method", "trained on", *(split_title(s) for s in splits), "AVG", "BR-Gen set",
              *(heading for heading, _ in brgen_protocol.TABLE_2_3_COLUMNS)]
    rows = []
    for label, entry in {**entries, **brgen_published}.items():
        tested = [s for s in splits if s in entry["splits"]]
        opensdid = ["-"] * (len(splits) + 1)
        if tested:
            opensdid = [_cell([table[label][s][k] for k in ("pixel_f1", "image_f1")]) if s in tested else "-"
                        for s in splits] + [_cell([table[label]["AVG"][k] for k in ("pixel_f1", "image_f1")])]
        sets = _brgen_sets(entry) or [None]
        for i, name in enumerate(sets):
            metrics = entry["splits"].get(name, {})
            brgen = [brgen_protocol.fmt(metrics.get(key)) if name else "-" for _, key in brgen_protocol.TABLE_2_3_COLUMNS]
            trained = _trained_on(entry, tested + [name] if i == 0 else [name])
            rows.append([label, trained, *(opensdid if i == 0 else [""] * len(opensdid)), name or "-", *brgen])
    return ["## OpenSDID and BR-Gen side by side", "",
            "Each run on both benchmarks. OpenSDID: pixel F1 (partial fakes) / image F1 per split, threshold "
            "0.5 (the OpenSDI paper's Tables 3 and 4), AVG over the splits shown. BR-Gen: the BR-Gen paper's "
            "Table 2/3 columns (R@50: Recall@50; Split A by generator family, Split B by mask type). "
            "-: not tested, or not published.", ""] + markdown_table(header, rows) + [""]


def comparison_markdown(entries, title, brgen_published=(), cross_type=((), ()), side_by_side_published=None):
    """The paper's Table 3 (pixel IoU/F1) and Table 4 (image F1/accuracy, and AUC) forms for
    several methods: per column and metric the best measured value in bold, the second
    best in italics; published rows are shown, not ranked. ``brgen_published``: the BR-Gen
    paper's rows of its Tables 2, 3 and 7; ``cross_type``: (measured, published) rows of its
    Table 4 form (``comparison.cross_type_rows``); then OpenSDID and BR-Gen side by side
    (``side_by_side_markdown``, with ``side_by_side_published``)."""
    columns = comparison_columns(entries)
    table = comparison_values(entries, columns)
    measured = [label for label, e in entries.items() if e["source"] == "measured"]
    header = ["method", *(split_title(c) for c in columns), "AVG"]

    def section(caption, keys):
        ranks = {(c, k): dict(zip(measured, _ranks([table[m][c][k] for m in measured])))
                 for c in columns + ["AVG"] for k in keys}
        rows = []
        # The paper publishes no AUC: its rows would be all n/a.
        for label in [e for e in entries if "image_auc" not in keys or entries[e]["source"] == "measured"]:
            cells = []
            for column in columns + ["AVG"]:
                values = [table[label][column][k] for k in keys]
                if not any(math.isfinite(v) for v in values):
                    cells.append("n/a" if column == "AVG" or column in entries[label]["splits"] else "-")
                    continue
                cells.append("/".join(_marked(v, ranks[(column, k)].get(label)) for v, k in zip(values, keys)))
            rows.append([label, *cells])
        return [f"## {caption}", ""] + markdown_table(header, rows) + [""]

    lines = [f"# {title}", ""]
    lines += section("Pixel level, partial fakes only (paper Table 3 form): IoU/F1, threshold 0.5",
                     ("pixel_iou", "pixel_f1"))
    lines += section("Image level, all images (paper Table 4 form): F1/accuracy, threshold 0.5",
                     ("image_f1", "image_acc"))
    lines += section("Image level, all images: AUC", ("image_auc",))
    lines += ["**Bold**: best measured value of its column and metric; _italics_: second best. AVG: the mean "
              "over the splits shown where the metric is defined. -: split not tested. n/a: undefined (no "
              "partial fake, or no image-level output).", "", "Image scores per method:", ""]
    for label, entry in entries.items():
        rule = entry.get("image_scores")
        source = ("published" if entry["source"] == "published" else "its own pred_label" if rule == "pred_label"
                  else f"--image_score_from_mask {rule}: {IMAGE_SCORE_RULES[rule]}" if rule in IMAGE_SCORE_RULES
                  else "none: the model gives no image-level prediction (n/a; --image_score_from_mask max "
                       "scores an image by the maximum of its mask)")
        lines.append(f"- {label}: {source}")
    lines += ["", "Sources:", ""] + [f"- {label}: {', '.join(entry['files'])}" for label, entry in entries.items()]
    brgen_rows = [(label, split_title(split), metrics) for label, entry in entries.items()
                  for split, metrics in entry["splits"].items() if brgen_protocol.has_figures(metrics)]
    if brgen_rows or brgen_published:
        lines += ["", "## The BR-Gen paper's protocol", ""] + brgen_protocol.tables_markdown(brgen_rows)
        if brgen_published:
            lines += ["Published (" + published.BRGEN_CITATION + "), not measured here:", ""]
            lines += brgen_protocol.tables_markdown(brgen_published, counts=False)
    measured_cross, published_cross = cross_type
    if measured_cross or (published_cross and (brgen_rows or brgen_published)):
        lines += ["## The BR-Gen paper's cross-type test", ""]
        lines += brgen_protocol.cross_type_markdown(measured_cross) if measured_cross else []
        if published_cross:
            lines += ["Published (" + published.BRGEN_CITATION + "), not measured here:", ""]
            lines += brgen_protocol.cross_type_markdown(published_cross, counts=False)
    side_by_side = side_by_side_markdown(entries, side_by_side_published or {})
    if side_by_side:
        lines += [""] + side_by_side
    return "\n".join(lines) + "\n"


COMPARISON_COLUMNS = (("method", "source", "trained_on", "image_scores", "split") + METRIC_KEYS + COUNT_KEYS
                      + brgen_protocol.PROTOCOL_KEYS + brgen_protocol.PROTOCOL_COUNT_KEYS)


def write_comparison(output_dir, entries, robust_rows, title, brgen_published=(), cross_type=((), ()),
                     side_by_side_published=None):
    """report.md, report.csv (one row per method and split, AVG included) for ``entries``, and for
    ``robust_rows`` ({method: test-robust rows}), robustness.csv with a method column and
    the curves under plots/ -> the paths. ``brgen_published``: the BR-Gen paper's rows
    (``comparison.brgen_published_rows``), shown in report.md's BR-Gen tables; ``cross_type``:
    the rows of its cross-type table (``comparison_markdown``); ``side_by_side_published``: the
    BR-Gen paper's rows as entries, in the table of both datasets side by side."""
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    if entries:
        paths += _write_comparison_tables(output_dir, entries, title, brgen_published, cross_type,
                                          side_by_side_published)
    if robust_rows:
        robust_csv = os.path.join(output_dir, "robustness.csv")
        with open(robust_csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=("method",) + ROBUST_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for method, rows in robust_rows.items():
                for row in rows:
                    writer.writerow({k: csv_value(v) for k, v in {**row, "method": method}.items()})
        paths += [robust_csv] + plot_robustness_comparison(os.path.join(output_dir, "plots"), robust_rows)
    return paths


def _write_comparison_tables(output_dir, entries, title, brgen_published, cross_type, side_by_side_published):
    md_path = os.path.join(output_dir, "report.md")
    csv_path = os.path.join(output_dir, "report.csv")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(comparison_markdown(entries, title, brgen_published, cross_type, side_by_side_published))
    table = comparison_values(entries, comparison_columns(entries))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COMPARISON_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for label, columns in table.items():
            entry = entries[label]
            for column, metrics in columns.items():
                if column != "AVG" and column not in entry["splits"]:
                    continue
                counts = {k: metrics.get(k) if entry["source"] == "measured" else None for k in COUNT_KEYS}
                trained = _trained_on(entry, [column] if column != "AVG" else list(entry["splits"]))
                writer.writerow({k: csv_value(v) for k, v in {
                    **metrics, **counts, "method": label, "source": entry["source"], "trained_on": trained,
                    "image_scores": entry.get("image_scores"), "split": column}.items()})
    return [md_path, csv_path]
