"""``report``: the baselines' YAML through train and test-robust on the embedded sample, then
the paper-style tables and curves, whose values are the runs' JSON values."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imdlbenco_maskclip.cli import main
from imdlbenco_maskclip.engine import reporting
from imdlbenco_maskclip.engine.evaluators import ImageMetricIfPredicted
from IMDLBenCo.evaluation import ImageAUC

REPO = Path(__file__).resolve().parents[1]
METRICS = ("pixel_f1", "pixel_iou", "image_f1", "image_acc", "image_auc")
# The baseline YAMLs with CPU and size overrides: one epoch on the sample's 16-image sd15 test
# split (its 72-image train split is 4x slower, and the pipeline is what is checked here).
CPU = ["--device", "cpu", "--image_size", "64", "--data_path", "sample:test#sd15", "--test_data_path",
       "sample:test", "--test_splits", "sd2", "--epochs", "1", "--batch_size", "4", "--test_batch_size", "8",
       "--num_workers", "0", "--warmup_epochs", "0", "--test_period", "1", "--seed", "0"]
SWEEP = ["--device", "cpu", "--test_data_path", "sample:test", "--test_splits", "sd2", "--blur_kernels", "5",
         "--jpeg_qualities", "", "--test_batch_size", "8", "--num_workers", "0"]


def read(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.usefixtures("no_process_group_left_behind")
def test_baselines_train_sweep_and_report_side_by_side(tmp_path):
    # IML-ViT from an MAE file in the format it reads ({"model": ...}, strict=False), small.
    mae = torch.randn(48, 3, 16, 16)
    torch.save({"model": {"patch_embed.proj.weight": mae}}, tmp_path / "mae.pth")
    iml_vit, maskclip = tmp_path / "iml_vit", tmp_path / "maskclip"
    assert main(["train", "--config", str(REPO / "benco_configs/iml_vit.yaml"), *CPU, "--output_dir", str(iml_vit),
                 "--vit_pretrain_path", str(tmp_path / "mae.pth"), "--embed_dim", "48", "--fpn_channels", "16",
                 "--mlp_embeding_dim", "16"]) == 0
    assert main(["train", "--config", str(REPO / "benco_configs/maskclip_paper.yaml"), *CPU, "--output_dir",
                 str(maskclip), "--model_setting", "tiny", "--edge_mask_width", "3"]) == 0
    # IML-ViT's image scores by the documented rule in the sweep; none (n/a) in its training tests.
    assert main(["test-robust", "--checkpoint_path", str(iml_vit), *SWEEP, "--image_score_from_mask", "max",
                 "--output_dir", str(tmp_path / "iml_vit_robust")]) == 0
    assert main(["test-robust", "--checkpoint_path", str(maskclip), *SWEEP,
                 "--output_dir", str(tmp_path / "maskclip_robust")]) == 0
    report = tmp_path / "report"
    assert main(["report", str(iml_vit), str(maskclip), str(tmp_path / "iml_vit_robust"),
                 str(tmp_path / "maskclip_robust"), "--published", "--output_dir", str(report)]) == 0

    measured = {"IML_ViT": read(iml_vit / "metrics.json"), "MaskCLIP (tiny)": read(maskclip / "metrics.json")}
    opensdi_tables, brgen_tables = (iml_vit / "metrics.md").read_text().split("## The BR-Gen paper's protocol")
    iml_rows = [line for line in opensdi_tables.splitlines() if line.startswith("| IML_ViT |")]
    assert iml_rows[1:] == ["| IML_ViT | n/a | n/a |"] * 2 and "n/a" not in iml_rows[0]  # no pred_label
    # The BR-Gen protocol's recalls need image scores too; its IoU does not.
    brgen_row = next(line for line in brgen_tables.splitlines() if line.startswith("| IML_ViT |")).split(" | ")
    assert brgen_row[2].startswith("n/a (30)") and brgen_row[5].startswith("n/a (52)") and brgen_row[6] != "n/a"
    with open(report / "report.csv") as f:
        rows = {(r["method"], r["split"]): r for r in csv.DictReader(f)}
    for method, result in measured.items():
        for split, values in [("sd2", result["splits"]["sd2"]), ("AVG", result["average"])]:
            for key in METRICS:
                cell = rows[(method, split)][key]
                assert (cell == "" if values[key] is None else float(cell) == values[key]), (method, split, key)
    assert rows[("IML_ViT", "sd2")]["image_scores"] == "" and rows[("MaskCLIP (tiny)", "sd2")]["image_scores"] == \
        "pred_label"
    assert float(rows[("CAT-Net (published)", "sd2")]["pixel_f1"]) == .6232  # paper Table 3, SD2.1
    assert rows[("CAT-Net (published)", "sd2")]["n_images"] == ""  # published: no counts

    text = (report / "report.md").read_text()
    table3 = text.split("## ")[1].splitlines()
    iml, mc = (measured[m]["splits"]["sd2"] for m in ("IML_ViT", "MaskCLIP (tiny)"))
    best_f1 = max(iml["pixel_f1"], mc["pixel_f1"])
    for method, values in (("IML_ViT", iml), ("MaskCLIP (tiny)", mc)):
        row = next(line for line in table3 if line.startswith(f"| {method} |"))
        f1 = reporting._num(values["pixel_f1"])
        assert row.split(" | ")[1].split("/")[1] == (f"**{f1}**" if values["pixel_f1"] == best_f1 else f"_{f1}_")
    table4 = text.split("## ")[2].splitlines()
    assert "| IML_ViT | n/a | n/a |" in table4  # no image-level output, no rule: n/a
    assert "- IML_ViT: none: the model gives no image-level prediction" in text
    assert "(published)" in text and "CVPR 2025" in text

    sweep = {(r["method"], r["perturbation"], r["level"]): r for r in csv.DictReader(open(report / "robustness.csv"))}
    for method, folder in (("IML_ViT", "iml_vit_robust"), ("MaskCLIP (tiny)", "maskclip_robust")):
        for row in read(tmp_path / folder / "robustness.json")["rows"]:
            shown = sweep[(method, row["perturbation"], str(row["level"]))]
            assert all((shown[k] == "" if row[k] is None else float(shown[k]) == row[k]) for k in METRICS)
    iml_blur = read(tmp_path / "iml_vit_robust" / "robustness.json")
    assert iml_blur["image_scores"] == "max" and all(r["image_auc"] is not None for r in iml_blur["rows"])
    for key in METRICS:  # every metric is defined for some model: a Figure 5 per metric, both models drawn
        with Image.open(report / "plots" / f"compare_{key}.png") as plot:
            pixels = np.asarray(plot.convert("RGB")).reshape(-1, 3).astype(int)
        for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # matplotlib's C0 and C1: one curve each
            assert (np.abs(pixels - colour).max(axis=1) <= 8).sum() > 20, (key, colour)


def metrics_file(path, method, splits, command="test", image_scores="pred_label", args=None, extra=None):
    path.mkdir()
    with open(path / "metrics.json", "w") as f:
        json.dump({"command": command, "method": method, "image_scores": image_scores,
                   "args": args or {},
                   "splits": {s: {**dict(zip(METRICS, values)), "n_images": 4, "n_partial": 2, **(extra or {})}
                              for s, values in splits.items()}}, f)
    return str(path)


def test_report_marks_best_and_second_and_averages_over_splits(tmp_path, capsys):
    a = metrics_file(tmp_path / "a", "A", {"sd15": (0.5, 0.4, 0.9, 0.8, 0.7), "flux": (0.1, 0.1, 0.2, 0.3, 0.4)})
    b = metrics_file(tmp_path / "b", "B", {"sd15": (0.5, 0.3, None, None, None)}, image_scores=None)
    c = metrics_file(tmp_path / "c", "C", {"sd15": (0.2, 0.2, 0.1, 0.1, 0.1)})
    assert main(["report", a, b, c, "--output_dir", str(tmp_path / "out")]) == 0
    lines = (tmp_path / "out" / "report.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith("| A |") or line.startswith("| B |") or line.startswith("| C |")]
    # pixel IoU/F1: A and B tie for best F1 at sd15 (C is then second); B has no flux run; AVG is
    # the mean over a method's own splits (A: (.4 + .1) / 2 = .25, (.5 + .1) / 2 = .3)
    assert rows[0] == "| A | **.4000**/**.5000** | **.1000**/**.1000** | _.2500_/_.3000_ |"
    assert rows[1] == "| B | _.3000_/**.5000** | - | **.3000**/**.5000** |"
    assert rows[2] == "| C | .2000/_.2000_ | - | .2000/.2000 |"
    assert rows[4] == "| B | n/a | - | n/a |"  # image level: no prediction, no rule
    printed = capsys.readouterr().out  # the tables are printed too
    assert all(row in printed for row in rows)


def test_runs_trained_on_one_brgen_subset_and_tested_on_its_partner_fill_the_cross_type_table(tmp_path):
    recalls = {"gen_r50": 0.25, "n_generated": 8, "real_r50": 0.75, "n_real": 4}
    gan = metrics_file(tmp_path / "gan", "M", {"diffusion": (0.5,) * 5}, args={"trained_on": "sample:brgen#gan"},
                       extra=recalls)
    stuff = metrics_file(tmp_path / "stuff", "M", {"background": (0.5,) * 5},
                         args={"trained_on": "/data/BR-Gen/train#Stuff"}, extra={**recalls, "gen_r50": 0.5})
    # A training run's own last test: its --data_path and --train_split say what it trained on.
    trained = metrics_file(tmp_path / "train", "T", {"stuff": (0.5,) * 5}, command="train",
                           args={"data_path": "/data/BR-Gen/train", "train_split": "background"}, extra=recalls)
    # Trained on the whole set: no pair of Table 4, so no row.
    whole = metrics_file(tmp_path / "whole", "W", {"gan": (0.5,) * 5}, args={"trained_on": "/data/BR-Gen/train"},
                         extra=recalls)
    assert main(["report", gan, stuff, trained, whole, "--published", "--output_dir", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text().split("## The BR-Gen paper's cross-type test")[1]
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    # Columns: GAN -> diffusion, diffusion -> GAN, background -> stuff, stuff -> background.
    assert rows["| M"] == "| M | 0.250 (8) | 0.750 (4) | - | - | - | - | 0.500 (8) | 0.750 (4) |"
    assert rows["| T"] == "| T | - | - | - | - | 0.250 (8) | 0.750 (4) | - | - |"
    assert "| W" not in rows
    assert rows["| NFA-ViT (published, Table 4)"] == ("| NFA-ViT (published, Table 4) | 0.466 | 0.980 | 0.820 | 0.973 "
                                                     "| 0.841 | 0.982 | 0.908 | 0.970 |")


def test_the_max_rule_scores_an_image_by_its_largest_mask_value_inside_the_image():
    evaluator = ImageMetricIfPredicted(ImageAUC(), "image_auc", rule="max")
    predict = torch.zeros(2, 1, 4, 4)
    predict[0, 0, 0, 0], predict[1, 0, 3, 3] = 0.3, 0.9  # image 1's 0.9 lies in its padding
    shape_mask = torch.ones(2, 1, 4, 4)
    shape_mask[1, 0, 2:, 2:] = 0
    assert torch.equal(evaluator._scores(predict, None, shape_mask), torch.tensor([0.3, 0.0]))
    assert evaluator.source == "max"
    assert torch.equal(evaluator._scores(predict, torch.tensor([0.7, 0.1]), None), torch.tensor([0.7, 0.1]))
    assert evaluator.source == "pred_label"  # a model's own scores always win
    assert ImageMetricIfPredicted(ImageAUC(), "image_auc")._scores(predict, None, shape_mask) is None
