"""metrics.json / metrics.md (paper Tables 3 and 4) and robustness.json / .csv / PNG curves.

JSON files hold ``null`` where a metric is undefined (no partial fake in a set, no
``pred_label`` from the model), never NaN, so any JSON reader accepts them.
"""
import csv
import json
import math
import os

import numpy as np

from .options import METRIC_KEYS

COUNT_KEYS = ("n_images", "n_partial")
SPLIT_TITLES = {"sd15": "SD1.5", "sd2": "SD2.1", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux.1"}
METRIC_TITLES = {"pixel_f1": "pixel F1", "pixel_iou": "pixel IoU", "image_f1": "image F1",
                 "image_acc": "image accuracy", "image_auc": "image AUC"}
PERTURBATION_TITLES = {"gaussian_blur": "Gaussian blur (kernel size)", "jpeg": "JPEG compression (quality)",
                       "gaussian_noise": "Gaussian noise (variance)"}


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


def _title(split):
    return SPLIT_TITLES.get(split, split)


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
    header = "| method | " + " | ".join(_title(n) for n in names) + " | AVG |"
    rule = "|---" * (len(names) + 2) + "|"

    def table(caption, *keys):
        row = f"| {method} | " + " | ".join(_cell([results[n][k] for k in keys]) for n in names)
        return [caption, "", header, rule, row + f" | {_avg_cell(avg, len(names), *keys)} |", ""]

    counts = ["Images and partial fakes evaluated:", "", "| | " + " | ".join(_title(n) for n in names) + " | total |",
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


def plot_robustness(plot_dir, rows, method):
    """Per set: pixel F1, image F1 and image AUC against each perturbation's level, the clean
    value as a dashed line (paper Fig. 5/9 style); per perturbation: pixel F1 of every set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(plot_dir, exist_ok=True)
    splits = list(dict.fromkeys(r["split"] for r in rows))
    perturbations = list(dict.fromkeys(r["perturbation"] for r in rows if r["perturbation"] != "clean"))
    clean = {r["split"]: r for r in rows if r["perturbation"] == "clean"}
    paths = []
    if not perturbations:
        return paths

    def curve(split, perturbation):
        points = sorted((r["level"], r) for r in rows if r["split"] == split and r["perturbation"] == perturbation)
        return [p[0] for p in points], [p[1] for p in points]

    def draw(ax, split, perturbation, key, index, label):
        """One metric against the level, and its clean value as a dashed line of the same colour.
        Each series has its own marker, smaller than the one before, so equal curves stay visible."""
        colour = f"C{index}"
        levels, points = curve(split, perturbation)
        ax.plot(levels, [p[key] for p in points], "-", marker="osD^v"[index % 5], markersize=9 - 2 * (index % 4),
                color=colour, label=label, alpha=0.85)
        if split in clean and math.isfinite(clean[split][key]):
            ax.axhline(clean[split][key], color=colour, linestyle="--", linewidth=0.8)
        ax.set_xlabel(PERTURBATION_TITLES.get(perturbation, perturbation))
        ax.set_xticks(levels)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)

    def save(fig, name):
        path = os.path.join(plot_dir, name)
        fig.savefig(path, dpi=100, bbox_inches="tight")  # keeps the legends placed outside the axes
        plt.close(fig)
        paths.append(path)

    for split in splits:
        fig, axes = plt.subplots(1, len(perturbations), figsize=(4.6 * len(perturbations), 3.6), squeeze=False)
        for ax, perturbation in zip(axes[0], perturbations):
            for i, key in enumerate(("pixel_f1", "image_f1", "image_auc")):
                draw(ax, split, perturbation, key, i, METRIC_TITLES[key])
        axes[0][0].set_ylabel("metric (dashed: clean)")
        fig.suptitle(f"{method}: robustness on {_title(split)}", fontsize=10)
        fig.tight_layout()
        # Below the panels, not over their points.
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=3, fontsize=8, frameon=False)
        save(fig, f"robustness_{split}.png")

    for perturbation in perturbations:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        for i, split in enumerate(splits):
            draw(ax, split, perturbation, "pixel_f1", i, _title(split))
        ax.set_ylabel("pixel F1, partial fakes (dashed: clean)")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        ax.set_title(f"{method}: pixel F1 under {perturbation.replace('_', ' ')}", fontsize=10)
        save(fig, f"pixel_f1_{perturbation}.png")
    return paths
