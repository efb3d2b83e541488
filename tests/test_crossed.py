"""The crossed benchmark on the embedded samples, offline and in one process: the BR-Gen paper's
BenCo baselines new here (SparseViT, PSCC-Net, MVSS-Net, ManTra-Net), each trained one step at
64 px on four images of one dataset's sample and tested on a few of the other's (MaskCLIP and
NFA-ViT take the same commands: test_e2e_cli.py and test_nfavit_cli.py); `report` with both
datasets side by side, its cells the values of the runs' metrics.json files; MVSS-Net's
ResNet-50 from $TORCH_HOME or its flag, never downloaded; and the crossed scripts' training
commands, which parse for every model."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from imdlbenco_maskclip.cli import main
from imdlbenco_maskclip.datasets.brgen_sample import ensure_brgen_sample
from imdlbenco_maskclip.datasets.opensdid import OPENSDID_SPLITS
from imdlbenco_maskclip.datasets.sample import ensure_sample
from imdlbenco_maskclip.engine import brgen_protocol, checkpoints, models, reporting
from imdlbenco_maskclip.engine.checkpoints import training_source
from imdlbenco_maskclip.errors import UserError
from imdlbenco_maskclip.figures import split_title
from imdlbenco_maskclip.flags import parse

pytestmark = pytest.mark.usefixtures("no_process_group_left_behind")
REPO = Path(__file__).resolve().parents[1]
RESNET50 = os.path.basename(models.HUB_FILES["MVSSNet"]["resnet50_pretrain_weights"])
# Per model: the dataset it is trained on (then tested on the other) and its flags, two models
# per direction. Smaller than the recipes where a full-size model costs much here: SparseViT
# with fewer stage-1/2/3 blocks and blocks that divide 64 px; MVSS-Net with one ResNet-50 stream
# (--constrain false: its checkpoints are 1.7 GB with two); both still read their files.
RUNS = {
    "SparseViT": ("opensdid", ["--depth", "1,1,15,4", "--s_blocks3", "16,16,16,16", "--s_blocks4", "16,16"]),
    "MVSSNet": ("opensdid", ["--edge_mask_width", "3", "--constrain", "false"]),  # ResNet-50 from $TORCH_HOME
    "PSCC_Net": ("brgen", ["--pretrain_path", "none"]),
    "MantraNet": ("brgen", []),
}
# One step: four images, batch 4; lr 1e-9 keeps the weights at what they were built from.
TRAIN = ["--device", "cpu", "--image_size", "64", "--if_resizing", "--num_workers", "0", "--batch_size", "4",
         "--epochs", "1", "--warmup_epochs", "0", "--lr", "1e-9", "--test_batch_size", "4", "--seed", "0"]
TEST = ["--device", "cpu", "--num_workers", "0", "--test_batch_size", "4", "--gallery_size", "0",
        "--image_score_from_mask", "max"]


def tiny_opensdid(root):
    """The OpenSDID sample's test splits cut to a few rows (SD1.5: two real, two partial fakes; the
    others one each), as parquet files in the hub layout."""
    (root / "data").mkdir(parents=True)
    for split in OPENSDID_SPLITS:
        shard = next((ensure_sample() / "test" / "data").glob(f"{split}-*.parquet"))
        table = pq.read_table(shard)
        keys = table.column("key").to_pylist()
        each = 2 if split == "sd15" else 1
        rows = [i for i, k in enumerate(keys) if k.startswith("real/")][:each] + \
               [i for i, k in enumerate(keys) if k.startswith("partial/")][:each]
        pq.write_table(table.take(rows), root / "data" / f"{split}-00000-of-00001.parquet")
    return str(root)


def tiny_brgen(root):
    """Four images of the BR-Gen sample in its layout: two real, a GAN stuff and a diffusion
    background edit."""
    sample = ensure_brgen_sample()
    generated = sorted(p.name for p in (sample / "Tp").iterdir())
    picks = {"Au": sorted(p.name for p in (sample / "Au").iterdir())[:2],
             "Tp": [next(n for n in generated if n.startswith(prefix)) for prefix in ("LaMa_Stuff", "SDXL_Background")]}
    picks["Gt"] = [f"{Path(n).stem}_mask.png" for n in picks["Tp"]]
    for part, names in picks.items():
        (root / part).mkdir(parents=True)
        for name in names:
            shutil.copy(sample / part / name, root / part / name)
    return str(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossed")
    opensdid, brgen = tiny_opensdid(root / "opensdid"), tiny_brgen(root / "brgen")
    yield {"root": root,
           "opensdid": {"train": ["--dataset", "OpenSDID", "--data_path", opensdid, "--train_split", "sd15",
                                  "--test_data_path", opensdid, "--test_splits", "sd15"],
                        "test": ["--dataset", "OpenSDID", "--test_data_path", opensdid,
                                 "--test_splits", ",".join(OPENSDID_SPLITS)]},
           "brgen": {"train": ["--dataset", "BRGen", "--data_path", brgen, "--train_split", "all",
                               "--test_data_path", brgen, "--test_splits", "all"],
                     "test": ["--dataset", "BRGen", "--test_data_path", brgen, "--test_splits", "all"]},
           "runs": {}}
    shutil.rmtree(root, ignore_errors=True)  # the checkpoints: about 2 GB


def random_resnet50(torch_home):
    """torchvision's ResNet-50, randomly initialised, where torch.hub keeps MVSS-Net's file -> its weights."""
    import torchvision
    weights = torchvision.models.resnet50().state_dict()
    (torch_home / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(weights, torch_home / "hub" / "checkpoints" / RESNET50)
    return weights


def crossed_run(model, data, monkeypatch):
    """``model`` trained on its dataset, tested on the other (once per module) -> the two folders."""
    if model in data["runs"]:
        return data["runs"][model]
    source, flags = RUNS[model]
    target = "brgen" if source == "opensdid" else "opensdid"
    out = data["root"] / model
    if model == "MVSSNet":
        monkeypatch.setenv("TORCH_HOME", str(out / "torch_home"))
        data["resnet50"] = random_resnet50(out / "torch_home")
    assert main(["train", "--model", model, *TRAIN, *data[source]["train"], *flags,
                 "--output_dir", str(out / "train")]) == 0
    # Tested with an empty $TORCH_HOME: every weight comes from the checkpoint, nothing is downloaded.
    monkeypatch.setenv("TORCH_HOME", str(out / "empty_torch_home"))
    assert main(["test", "--checkpoint_path", str(out / "train"), *TEST, *data[target]["test"],
                 "--output_dir", str(out / "test")]) == 0
    data["runs"][model] = (out / "train", out / "test")
    return data["runs"][model]


def read(path):
    return json.loads(Path(path).read_text())


@pytest.mark.parametrize("model", list(RUNS))
def test_trained_one_step_on_one_sample_and_tested_on_the_other(model, data, monkeypatch):
    train, test = crossed_run(model, data, monkeypatch)
    source, _ = RUNS[model]
    trained, tested = read(train / "metrics.json"), read(test / "metrics.json")
    assert trained["args"]["dataset"] == {"opensdid": "OpenSDID", "brgen": "BRGen"}[source]
    # the test records what its checkpoint learnt from
    assert tested["args"]["trained_on"] == training_source(trained["args"]["data_path"], trained["args"]["train_split"])
    assert [json.loads(line)["epoch"] for line in (train / "log.txt").read_text().splitlines()] == [0]
    if source == "opensdid":  # tested on BR-Gen: two real images, two generated, one per family and mask type
        m = tested["splits"]["all"]
        assert (m["n_real"], m["n_generated"], m["n_gan"], m["n_diffusion"]) == (2, 2, 1, 1)
        assert (m["n_background"], m["n_stuff"]) == (1, 1)
        keys = ("real_r50", "gen_r50", "image_f1", "image_auc", "pixel_iou", "gan_r50", "diffusion_r50",
                "background_r50", "stuff_r50")
    else:  # tested on OpenSDID's five splits
        assert list(tested["splits"]) == list(OPENSDID_SPLITS)
        m = tested["splits"]["sd15"]
        assert (m["n_images"], m["n_partial"], m["n_real"]) == (4, 2, 2)
        assert tested["splits"]["flux"]["n_images"] == 2
        keys = ("pixel_f1", "pixel_iou", "image_f1", "image_auc", "real_r50", "gen_r50")
    for key in keys:  # image scores: the model's own, or its mask's maximum
        assert m[key] is not None and 0 <= m[key] <= 1, key
    assert tested["image_scores"] == ("max" if model in ("SparseViT", "MantraNet") else "pred_label")
    if model == "MVSSNet":  # its ResNet-50 started from the file in $TORCH_HOME (lr 1e-9: still there)
        state = checkpoints.read(str(train / "checkpoint-0.pth"))["model"]
        for key in ("conv1.weight", "layer4.2.conv3.weight"):
            assert torch.allclose(state["model." + key], data["resnet50"][key], atol=1e-6), key


def test_report_puts_both_datasets_side_by_side_with_the_runs_values(data, monkeypatch, tmp_path):
    runs = {model: crossed_run(model, data, monkeypatch) for model in RUNS}
    folders = [str(folder) for pair in runs.values() for folder in pair]
    assert main(["report", *folders, "--published", "--output_dir", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    side_by_side = text.split("## OpenSDID and BR-Gen side by side")[1]
    rows = {}
    for line in side_by_side.splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells)
    header = [c.strip() for c in next(line for line in side_by_side.splitlines()
                                      if line.startswith("| method")).strip("|").split("|")]
    columns = {name: i for i, name in enumerate(header)}
    brgen_columns = [(heading, key) for heading, key in brgen_protocol.TABLE_2_3_COLUMNS]
    for model, (train, test) in runs.items():
        row = rows[model]
        results = {**read(train / "metrics.json")["splits"], **read(test / "metrics.json")["splits"]}
        opensdid = {s: m for s, m in results.items() if s in OPENSDID_SPLITS}
        for split, metrics in opensdid.items():  # pixel F1 / image F1, as the runs wrote them
            nan = float("nan")
            expected = reporting._cell([nan if metrics[k] is None else metrics[k] for k in ("pixel_f1", "image_f1")])
            assert row[columns[split_title(split)]] == expected, (model, split)
        assert row[columns["BR-Gen set"]] == "all"
        for heading, key in brgen_columns:
            value = results["all"][key]
            assert row[columns[heading]] == brgen_protocol.fmt(float("nan") if value is None else value), (model, key)
        train_args = read(train / "metrics.json")["args"]
        assert row[columns["trained on"]] == training_source(train_args["data_path"], train_args["train_split"])
    # the papers' rows where they exist: OpenSDI's on OpenSDID, BR-Gen's Table 3 on BR-Gen
    maskclip = rows["MaskCLIP (published)"]  # no MaskCLIP run here: the paper's row still shows
    assert maskclip[columns["SD1.5"]] == ".7563/.9264" and maskclip[columns["BR-Gen set"]] == "-"
    nfa_vit = rows["NFA-ViT (published, Tables 3 and 7)"]
    assert nfa_vit[columns["SD1.5"]] == "-" and nfa_vit[columns["Real R@50"]] == "0.992"
    assert nfa_vit[columns["IoU"]] == "0.907" and nfa_vit[columns["trained on"]].startswith("BR-Gen train")
    with open(tmp_path / "report.csv") as f:
        csv_rows = [line for line in f.read().splitlines()[1:] if line.startswith("MantraNet,measured,")]
    assert csv_rows and all(f"{data['root'] / 'brgen'}#all" in line for line in csv_rows)


def test_mvss_net_reads_its_resnet50_from_the_flag_or_torch_hub_and_names_the_flag_without_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    argv = ["--model", "MVSSNet", "--edge_mask_width", "3", "--data_path", "sample:test#sd15",
            "--output_dir", str(tmp_path / "out")]
    with pytest.raises(UserError, match="--resnet50_pretrain_weights") as missing:
        parse("train", argv)
    assert RESNET50 in missing.value.hint and str(tmp_path / "empty") in missing.value.hint
    wrong = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "layer5.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UserError, match=r"--resnet50_pretrain_weights .*layer5\.weight"):
        models._check_resnet50_file(str(wrong), "resnet50_pretrain_weights")
    args, model_args = parse("train", [*argv, "--resnet50_pretrain_weights", "none"])  # random weights on purpose
    assert models.weight_file("MVSSNet", "resnet50_pretrain_weights", None) is None


@pytest.mark.parametrize("script", ["crossed_opensdid_to_brgen.sh", "crossed_brgen_to_opensdid.sh"])
def test_the_crossed_scripts_train_every_model_with_flags_that_parse(script, tmp_path):
    """Each script run with `launch` and `report` recorded instead of run: every model's training
    command parses (its YAML, weight files and data flags), and each checkpoint is tested on both."""
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("noiseprint.pth", "segformer_b0_backbone_weights.pth", "segformer_b2_backbone_weights.pth",
                 "mit_b2.pth", "uniformer_base_in1k.pth", "hrnet_w18_small_v2.pth", RESNET50):
        (weights / name).write_bytes(b"")
    log = tmp_path / "commands"
    shim = (f'launch() {{ printf "%s\\0" "$@" >> {log}; printf "\\n" >> {log}; }}; '
            f'python() {{ echo report >> {log}; }}; ')
    library = (REPO / "run_scripts" / "baseline_lib.sh").read_text()
    script_text = (REPO / "run_scripts" / script).read_text().replace(
        "source run_scripts/baseline_lib.sh", library + "\n" + shim)
    out = tmp_path / "out"
    env = {**os.environ, "WEIGHTS": str(weights), "ROBUST": "0", "BASE_DIR": str(out)}
    subprocess.run(["bash", "-c", script_text.replace('cd "$(dirname "$0")/.."', f"cd {REPO}"), script],
                   env=env, check=True, capture_output=True, text=True)
    commands = [line.split("\0")[:-1] for line in log.read_text().split("\n") if line and line != "report"]
    trained = [c for c in commands if c[0] == "train"]  # TruFor's two phases
    assert len(trained) == 8 and len([c for c in commands if c[0] == "test"]) == 2 * 7  # seven models
    (out / "trufor" / "train" / "phase2").mkdir(parents=True)
    (out / "trufor" / "train" / "phase2" / "checkpoint-best.pth").write_bytes(b"")
    models_trained = set()
    for command in trained:
        args, _ = parse("train", command[2:] + ["--output_dir", command[1]])
        assert args.epochs == (20 if "opensdid_to" in script else 200)
        assert args.dataset == ("OpenSDID" if "opensdid_to" in script else "BRGen")
        models_trained.add(args.model)
    assert models_trained == {*RUNS, "MaskCLIP", "NFA_ViT", "Trufor"}
    assert log.read_text().endswith("report\n")


def test_benco_flags_without_annotation_take_their_defaults_type(tmp_path):
    """BenCo parses them as text, so `--sobel false` would be true and a list flag a string."""
    out = ["--output_dir", str(tmp_path)]
    _, mvss = parse("train", ["--model", "MVSSNet", "--edge_mask_width", "3", "--resnet50_pretrain_weights", "none",
                              "--sobel", "false", "--aux", "1", "--nclass", "2", *out])
    assert (mvss.sobel, mvss.aux, mvss.nclass, mvss.constrain) == (False, True, 2, True)
    with pytest.raises(SystemExit):
        parse("train", ["--model", "MVSSNet", "--edge_mask_width", "3", "--sobel", "maybe", *out])
    _, sparse = parse("train", ["--model", "SparseViT", "--image_size", "64", "--s_blocks3", "16,16,16,16",
                                "--s_blocks4", "16,16", *out])
    assert sparse.s_blocks3 == [16, 16, 16, 16] and sparse.img_size == 64
    with pytest.raises(UserError, match=r"^--image_size 256: --model SparseViT with --s_blocks3 8,4,2,1 .* 512"):
        parse("train", ["--model", "SparseViT", "--image_size", "256", *out])


def test_both_directions_reported_together_give_a_method_a_row_per_training_source(tmp_path):
    from test_report import metrics_file
    protocol = {"gen_r50": 0.5, "n_generated": 2, "real_r50": 0.5, "n_real": 2}
    runs = [metrics_file(tmp_path / name, "M", {split: (0.5,) * 5}, args={"trained_on": source}, extra=protocol)
            for name, split, source in (("a", "sd15", "nebula/OpenSDI_train#sd15"), ("b", "all", "nebula/OpenSDI_train#sd15"),
                                        ("c", "all", "/data/BR-Gen/train#all"), ("d", "sd15", "/data/BR-Gen/train#all"))]
    assert main(["report", *runs, "--output_dir", str(tmp_path / "out")]) == 0
    side_by_side = (tmp_path / "out" / "report.md").read_text().split("## OpenSDID and BR-Gen side by side")[1]
    rows = [line.split(" | ")[:2] for line in side_by_side.splitlines() if line.startswith("| M")]
    assert rows == [["| M", "nebula/OpenSDI_train#sd15"],
                    ["| M (trained on /data/BR-Gen/train#all)", "/data/BR-Gen/train#all"]]
