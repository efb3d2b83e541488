"""BenCo's own train.py, test.py and test_robust.py, as `benco init` writes them, with their one
import line changed, train and test MaskCLIP on OpenSDID (with BR-Gen in the training set): docs/benco_scripts.md
on a machine without CUDA (torchrun, one process, the tiny setting on the embedded sample,
BalancedDataset drawing fewer images a round than BenCo's 1840 to keep the suite short).
The same train.py trains NFA_ViT."""
import difflib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from IMDLBenCo.cli_funcs import cli_init
from IMDLBenCo.utils.paths import BencoPath

from imdlbenco_maskclip.cli import main as benco_maskclip
from imdlbenco_maskclip.datasets import BRGen, OpenSDID
from imdlbenco_maskclip.model_zoo.nfa_vit import NFA_ViT

STOCK_IMPORT = "from mymodel import MyModel"
OUR_IMPORT = "import imdlbenco_maskclip.cpu"
SCRIPTS = ("train.py", "test.py", "test_robust.py")
TINY = ["--model", "MaskCLIP", "--model_setting", "tiny", "--image_size", "64", "--if_resizing",
        "--edge_mask_width", "3", "--device", "cpu", "--test_batch_size", "4"]
F1 = "test_pixel-level F1"  # BenCo's PixelF1, the one evaluator its scripts enable


def as_the_readme_says(project):
    """`benco init` in ``project`` (the working directory), then the one line of each script changed."""
    cli_init(None, subcommand="base")  # what `benco init` runs
    for name in SCRIPTS:
        path = project / name
        lines = path.read_text().splitlines(keepends=True)
        stock = [i for i, line in enumerate(lines) if line.startswith(STOCK_IMPORT)]
        assert len(stock) == 1, name
        lines[stock[0]] = OUR_IMPORT + "\n"
        path.write_text("".join(lines))
        # Nothing else differs from BenCo's own script but the line `benco init` added.
        template = (BencoPath.get_templates_dir() / name).read_text().splitlines(keepends=True)
        changes = [op for op in difflib.SequenceMatcher(None, template, lines).get_opcodes() if op[0] != "equal"]
        assert [(tag, lines[j1:j2]) for tag, _, _, j1, j2 in changes] == [("insert", [OUR_IMPORT + "\n"])], name


def torchrun(project, script, argv, env):
    with subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                           "--nproc_per_node=1", script, *argv], cwd=project, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            # SIGTERM, not the SIGKILL of subprocess.run: torchrun then ends the script it
            # started (in a session of its own), which would otherwise run on.
            proc.terminate()
            proc.communicate(timeout=60)
            raise
    assert proc.returncode == 0, f"{script}\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return stdout


BALANCED_DRAW = 160  # per dataset and round; BenCo's default is 1840


def with_smaller_balanced_draw(folder, env):
    """``env`` with a ``sitecustomize`` on its path that lowers the number of images BenCo's
    BalancedDataset draws a round from each dataset (a constructor default that its train.py
    keeps) to BALANCED_DRAW in train.py's processes: the same code path, a tenth of the steps."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        "if sys.argv and sys.argv[0].endswith('train.py'):\n"
        "    from IMDLBenCo.datasets.balanced_dataset import BalancedDataset\n"
        f"    BalancedDataset.__init__.__defaults__ = (None, {BALANCED_DRAW})\n")
    return dict(env, PYTHONPATH=os.pathsep.join([str(folder), env.get("PYTHONPATH", "")]))


def keep_first(export, count):
    """An ``export`` folder cut to its first ``count`` images, its JSON list, Tp/ and Gt/ alike:
    test_robust.py reads the folder 19 times."""
    listing = export / f"{export.name}.json"
    entries = json.loads(listing.read_text())
    for image, _ in entries[count:]:
        for part in ("Tp", "Gt"):
            for path in (export / part).glob(Path(image).stem + ".*"):
                path.unlink()
    listing.write_text(json.dumps(entries[:count]))
    assert len(list((export / "Tp").iterdir())) == len(list((export / "Gt").iterdir())) == count


def log_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stock_scripts_train_and_test_maskclip_on_opensdid(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    as_the_readme_says(project)
    # Hidden GPUs make a CUDA machine the machine without CUDA that this path is for.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")

    assert benco_maskclip(["export", "sample:test#sdxl", "--output", str(project / "sdxl")]) == 0
    keep_first(project / "sdxl", 24)
    # BR-Gen's sample beside OpenSDID's: BalancedDataset builds both from the registry, as
    # BenCo's users list their datasets (BRGen balanced as the authors do, by default).
    (project / "balanced_dataset.json").write_text(json.dumps([["OpenSDID", "sample:train#sd15"],
                                                               ["BRGen", "sample:brgen"]]))
    (project / "test_datasets.json").write_text(json.dumps({"sdxl": str(project / "sdxl" / "sdxl.json")}))

    stdout = torchrun(project, "train.py", [
        *TINY, "--data_path", "balanced_dataset.json", "--test_data_path", "test_datasets.json", "--batch_size", "32",
        "--epochs", "1", "--accum_iter", "1", "--lr", "1e-3", "--warmup_epochs", "0", "--if_not_amp",
        "--output_dir", "train_out", "--log_dir", "train_out"], with_smaller_balanced_draw(tmp_path / "site", env))
    # BalancedDataset built OpenSDID and BRGen from the registry and drew BALANCED_DRAW images a round from each.
    rows = len(OpenSDID("sample:train#sd15", is_resizing=True))
    assert f"Dataset 1: [OpenSDID] sample:train#sd15 subset=all: {rows} samples" in stdout
    brgen = BRGen("sample:brgen", is_resizing=True)
    assert f"Dataset 2: [BRGen] sample:brgen#all: {len(brgen)} samples ({len(brgen.drawn)} real" in stdout
    steps = 2 * BALANCED_DRAW // 32
    assert f"Epoch: [0]  [{steps - 1:{len(str(steps))}d}/{steps}]" in stdout  # BenCo pads the step to the total's width
    [trained] = log_lines(project / "train_out" / "log.txt")
    assert trained["epoch"] == 0
    assert all(math.isfinite(trained[f"train_{k}"]) for k in ("ce_loss", "bce_loss", "edge_loss", "total_loss"))
    assert 0.0 <= trained[F1] <= 1.0
    checkpoint = torch.load(project / "train_out" / "checkpoint-0.pth", map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 0 and checkpoint["args"].model == "MaskCLIP"
    assert any(k.startswith("pixel_encoder.") for k in checkpoint["model"])  # MaskCLIP's, not the DDP wrapper's
    assert list((project / "train_out").glob("events.out.tfevents.*"))

    torchrun(project, "test.py", [*TINY, "--test_data_json", "test_datasets.json", "--checkpoint_path", "train_out",
                                  "--output_dir", "test_out", "--log_dir", "test_out"], env)
    [tested] = log_lines(project / "test_out" / "sdxl" / "log.txt")
    assert tested["epoch"] == 0 and tested[F1] == pytest.approx(trained[F1], abs=1e-6)

    # The export folder as BenCo's folder dataset; BenCo's sweep is fixed: blur 0 (none) to 23,
    # noise 3 to 23, JPEG 50 to 100.
    stdout = torchrun(project, "test_robust.py", [*TINY, "--test_data_path", "sdxl", "--checkpoint_path",
                                                  "train_out/checkpoint-0.pth", "--output_dir", "robust_out",
                                                  "--log_dir", "robust_out"], env)
    exported = len(json.loads((project / "sdxl" / "sdxl.json").read_text()))
    assert stdout.count(f"len(dataset_test) {exported}") == 19  # every pass reads all of the folder's sdxl
    runs = {p.parent.name: log_lines(p) for p in (project / "robust_out").glob("*/log.txt")}
    assert len(runs) == 19 and sum(name.startswith("GaussianBlur") for name in runs) == 6
    assert all(len(lines) == 1 and 0.0 <= lines[0][F1] <= 1.0 for lines in runs.values())
    assert runs["None"][0][F1] == pytest.approx(trained[F1], abs=1e-6)  # unperturbed: what train.py measured


def test_stock_train_py_trains_nfa_vit_without_unused_parameters(tmp_path, monkeypatch):
    """Two steps under DDP without --find_unused_parameters (their script passes it): DDP would
    stop at the second if a parameter got no gradient at the first. The DnCNN's BatchNorm
    trains on the CPU (compat leaves out the script's SyncBatchNorm conversion there), and the
    frozen noise side stays as loaded."""
    from test_nfavit_cli import four_images

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    as_the_readme_says(project)
    train_set, test_sets = four_images(project)
    random_model = NFA_ViT(np_pretrain_weights="none", seg_b0_pretrain_weights="none", seg_b2_pretrain_weights="none")
    generator = torch.Generator().manual_seed(1)
    # Noiseprint++ weights of our own: convolutions at fan-in scale, BatchNorm vectors around 1
    noiseprint = {key: value if not value.is_floating_point() else
                  torch.randn(value.shape, generator=generator) / value[0].numel() ** 0.5 if value.ndim > 1 else
                  torch.rand(value.shape, generator=generator) + 0.5
                  for key, value in random_model.noise_extractor.layers.state_dict().items()}
    torch.save(noiseprint, project / "noiseprint.pth")
    flags = ["--np_pretrain_weights", "noiseprint.pth", "--seg_b0_pretrain_weights", "none",
             "--seg_b2_pretrain_weights", "none"]

    stdout = torchrun(project, "train.py", [
        "--model", "NFA_ViT", *flags, "--image_size", "64", "--if_resizing", "--device", "cpu", "--data_path",
        str(train_set), "--test_data_path", str(test_sets), "--batch_size", "2", "--test_batch_size", "4",
        "--epochs", "1", "--accum_iter", "1", "--lr", "1e-4", "--warmup_epochs", "0", "--if_not_amp",
        "--num_workers", "0", "--output_dir", "train_out", "--log_dir", "train_out"],
        dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert "Epoch: [0]  [1/2]" in stdout
    [trained] = log_lines(project / "train_out" / "log.txt")
    assert all(math.isfinite(trained[f"train_{k}"]) for k in ("seg_loss", "cls_loss", "total_loss"))
    assert 0.0 <= trained[F1] <= 1.0
    checkpoint = torch.load(project / "train_out" / "checkpoint-0.pth", map_location="cpu", weights_only=False)
    assert checkpoint["args"].model == "NFA_ViT" and set(checkpoint["model"]) == set(random_model.state_dict())
    trainable = [p for p in random_model.parameters() if p.requires_grad]
    moments = [state["exp_avg"] for state in checkpoint["optimizer"]["state"].values()]
    assert len(moments) == len(trainable) and all(m.abs().sum() > 0 for m in moments)  # every one got a gradient
    weights = [key for key in noiseprint if key.endswith("weight")]
    assert all(torch.equal(checkpoint["model"][f"noise_extractor.layers.{key}"], noiseprint[key]) for key in weights)
