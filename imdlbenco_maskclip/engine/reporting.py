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

from ..figures import plot_robustness, split_title
from ..flags import METRIC_KEYS

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


def metrics_markdown(results, avg, method, title):
    names = list(results)
    header = "| method | " + " | ".join(split_title(n) for n in names) + " | AVG |"
    rule = "|---" * (len(names) + 2) + "|"

    def table(caption, *keys):
        row = f"| {method} | " + " | ".join(_cell([results[n][k] for k in keys]) for n in names)
        return [caption, "", header, rule, row + f" | {_avg_cell(avg, len(names), *keys)} |", ""]

    counts = ["Images and partial fakes evaluated:", "", "| | " + " | ".join(split_title(n) for n in names) + " | total |",
              "|---" * (len(names) + 2) + "|",
              "| images | " + " | ".join(str(results[n]["n_images"]) for n in names) + f" | {avg['n_images']} |",
              "| partial fakes | " + " | ".join(str(results[n]["n_partial"]) for n in names)
              + f" | {avg['n_partial']} |", ""]
    lines = [f"# {title}", ""]
    lines += table("Pixel level, partial fakes only (paper Table 3): IoU/F1, threshold 0.5", "pixel_iou", "pixel_f1")
    lines += table("Image level, all images (paper Table 4): F1/accuracy, threshold 0.5", "image_f1", "image_acc")
    lines += table("Image level, all images: AUC", "image_auc")
    lines += counts
    lines.append("n/a: undefined (no partial fake in the set, or the model gives no image-level prediction).")
    return "\n".join(lines) + "\n"


def write_metrics(output_dir, results, avg, meta, title):
    """metrics.json (per set, ``avg`` = ``average(results)``, counts, ``meta``) and metrics.md;
    returns their paths."""
    json_path = os.path.join(output_dir, "metrics.json")
    md_path = os.path.join(output_dir, "metrics.md")
    write_json(json_path, {**meta, "splits": results, "average": avg})
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(metrics_markdown(results, avg, meta["method"], title))
        if meta.get("skipped"):
            counts = ", ".join(f"{name} {len(keys)}" for name, keys in meta["skipped"].items())
            f.write(f"\nBad samples left out (--on_bad_sample skip): {counts}; listed in metrics.json.\n")
    return json_path, md_path


ROBUST_COLUMNS = ("split", "perturbation", "level") + METRIC_KEYS + COUNT_KEYS


def write_robustness(output_dir, rows, meta):
    """robustness.json, robustness.csv and the curves under plots/; returns the paths."""
    json_path = os.path.join(output_dir, "robustness.json")
    csv_path = os.path.join(output_dir, "robustness.csv")
    write_json(json_path, {**meta, "rows": rows})
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ROBUST_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(row[k], float) and not math.isfinite(row[k]) else row[k])
                             for k in ROBUST_COLUMNS})
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
                                        for k, v in metrics.items()))
