"""metrics.md, metrics.json and robustness.csv as written for undefined metrics."""
import csv
import json
import math

import pytest

from imdlbenco_maskclip.engine import reporting

NAN = math.nan


def metrics(pixel_f1, image_f1, n_partial):
    return {"pixel_f1": pixel_f1, "pixel_iou": pixel_f1 / 2, "image_f1": image_f1, "image_acc": image_f1,
            "image_auc": image_f1, "n_images": 10, "n_partial": n_partial}


def test_the_average_covers_the_sets_where_a_metric_is_defined_and_says_so(tmp_path):
    results = {"sd15": metrics(0.8, 0.6, 3), "sd2": metrics(NAN, 0.4, 0), "flux": metrics(0.4, 0.5, 2)}
    avg = reporting.average(results)
    assert avg["pixel_f1"] == pytest.approx(0.6)
    assert avg["defined_in"] == {"pixel_f1": 2, "pixel_iou": 2, "image_f1": 3, "image_acc": 3, "image_auc": 3}
    assert (avg["n_images"], avg["n_partial"]) == (30, 5)
    table = reporting.metrics_markdown(results, avg, "M", "title").splitlines()
    pixel_row, image_row = [line for line in table if line.startswith("| M |")][:2]
    assert pixel_row == "| M | .4000/.8000 | n/a | .2000/.4000 | .3000/.6000 (over 2 of 3) |"
    assert image_row == "| M | .6000/.6000 | .4000/.4000 | .5000/.5000 | .5000/.5000 |"

    reporting.write_metrics(str(tmp_path), results, avg, {"method": "M"}, "title")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["splits"]["sd2"]["pixel_f1"] is None and saved["average"]["pixel_f1"] == avg["pixel_f1"]


def test_undefined_metrics_are_blank_cells_in_the_robustness_csv(tmp_path):
    rows = [{"split": "sd2", "perturbation": "clean", "level": 0, **metrics(0.5, NAN, 2)},
            {"split": "sd2", "perturbation": "jpeg", "level": 90, **metrics(NAN, 0.25, 0)}]
    reporting.write_robustness(str(tmp_path), rows, {"method": "M"})
    with open(tmp_path / "robustness.csv") as f:
        read = list(csv.DictReader(f))
    assert [(r["pixel_f1"], r["image_f1"], r["n_partial"]) for r in read] == [("0.5", "", "2"), ("", "0.25", "0")]
    assert json.loads((tmp_path / "robustness.json").read_text())["rows"][0]["image_f1"] is None
