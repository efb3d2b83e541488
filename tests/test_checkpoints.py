"""The checkpoint module: reading BenCo's checkpoints, the best one, pruning, and the loader of
test, test-robust and predict."""
import argparse
import json
import math

import pytest
import torch

import IMDLBenCo.training_scripts.utils.misc as misc

from imdlbenco_maskclip.engine import checkpoints
from imdlbenco_maskclip.engine.models import build_model, model_from_checkpoint, without_weight_sources
from imdlbenco_maskclip.engine.training import loss_scaler
from imdlbenco_maskclip.errors import UserError
from imdlbenco_maskclip.flags import parse


def averages(**metrics):
    return {"pixel_f1": math.nan, "pixel_iou": math.nan, "image_f1": math.nan, "image_acc": math.nan,
            "image_auc": math.nan, **metrics}


def numbered_checkpoint(folder, epoch):
    path = folder / f"checkpoint-{epoch}.pth"
    torch.save({"model": {}, "epoch": epoch}, path)
    return str(path)


def test_the_best_checkpoint_follows_its_metric_and_skips_undefined_values(tmp_path):
    best = checkpoints.Best(str(tmp_path), "avg_image_auc")
    assert best.update(averages(image_auc=0.7, pixel_f1=0.9), 0, numbered_checkpoint(tmp_path, 0)) == "better"
    # pixel F1 rises, but this run selects by image AUC
    assert best.update(averages(image_auc=0.6, pixel_f1=0.99), 1, numbered_checkpoint(tmp_path, 1)) == "worse"
    assert best.update(averages(pixel_f1=1.0), 2, numbered_checkpoint(tmp_path, 2)) == "undefined"  # AUC NaN
    assert torch.load(tmp_path / "checkpoint-best.pth")["epoch"] == 0
    assert json.loads((tmp_path / "best.json").read_text()) == {"metric": "avg_image_auc", "value": 0.7, "epoch": 0}
    assert not (tmp_path / "checkpoint-best.pth.partial").exists()
    assert best.update(averages(image_auc=0.8), 3, numbered_checkpoint(tmp_path, 3)) == "better"
    assert torch.load(tmp_path / "checkpoint-best.pth")["epoch"] == 3 and best.path.endswith("checkpoint-best.pth")


def test_a_resumed_run_keeps_the_record_of_its_own_metric_only(tmp_path):
    first = checkpoints.Best(str(tmp_path), "avg_pixel_f1")
    first.update(averages(pixel_f1=0.5), 4, numbered_checkpoint(tmp_path, 4))
    resumed = checkpoints.Best.load(str(tmp_path), "avg_pixel_f1", resuming=True)
    assert (resumed.value, resumed.epoch) == (0.5, 4)
    assert resumed.update(averages(pixel_f1=0.4), 5, numbered_checkpoint(tmp_path, 5)) == "worse"
    for other in (checkpoints.Best.load(str(tmp_path), "avg_image_f1", resuming=True),
                  checkpoints.Best.load(str(tmp_path), "avg_pixel_f1", resuming=False)):
        assert (other.value, other.epoch, other.path) == (-math.inf, None, None)


def test_pruning_keeps_the_latest_and_the_best(tmp_path):
    for epoch in (0, 1, 10):
        numbered_checkpoint(tmp_path, epoch)
    (tmp_path / "checkpoint-best.pth").write_bytes(b"")
    checkpoints.prune(str(tmp_path), keep=str(tmp_path / "checkpoint-10.pth"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10.pth", "checkpoint-best.pth"]
    assert checkpoints.latest(str(tmp_path)) == str(tmp_path / "checkpoint-10.pth")
    assert checkpoints.resolve(str(tmp_path)) == str(tmp_path / "checkpoint-best.pth")
    (tmp_path / "checkpoint-best.pth").unlink()
    assert checkpoints.resolve(str(tmp_path)) == str(tmp_path / "checkpoint-10.pth")
    (tmp_path / "checkpoint-10.pth").unlink()
    with pytest.raises(UserError, match=f"^--checkpoint_path {tmp_path}"):
        checkpoints.resolve(str(tmp_path))


def test_benco_resumes_only_with_the_saved_flags_allowed(tmp_path):
    """misc.save_model stores args (an argparse.Namespace), which torch's weights_only loading
    (the default since torch 2.6) refuses, so BenCo's misc.load_model cannot resume alone."""
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters())
    scaler = loss_scaler(torch.device("cpu"))  # the same path with and without a GPU
    args = argparse.Namespace(output_dir=str(tmp_path), resume="", start_epoch=0)
    misc.save_model(args, 4, model, model, optimizer, scaler)
    args.resume = str(tmp_path / "checkpoint-4.pth")
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(Exception, match="[Ww]eights only"):
            misc.load_model(args, model, optimizer, scaler)
        checkpoints.resume(args, model, optimizer, scaler)
    finally:
        torch.serialization.add_safe_globals(allowed)
    assert args.start_epoch == 5


def test_the_loader_takes_every_weight_from_the_checkpoint_and_names_a_mismatch(tmp_path, capsys):
    torch.save({}, tmp_path / "bare.pth")
    missing = str(tmp_path / "not_downloaded.pt")
    args, model_args = parse("test", ["--checkpoint_path", str(tmp_path / "bare.pth"), "--model_setting", "tiny",
                                      "--image_size", "64", "--clip_pretrained", missing, "--pixel_pretrained", missing])
    source = build_model(args, without_weight_sources("MaskCLIP", model_args)[0])
    torch.save({"model": source.state_dict(), "epoch": 7, "args": args}, tmp_path / "trained.pth")
    model, epoch = model_from_checkpoint(str(tmp_path / "trained.pth"), args, model_args)
    assert epoch == 7
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert "--clip_pretrained none --pixel_pretrained none" in capsys.readouterr().out

    model_args.use_vsa = 0
    args.model_args = vars(model_args)
    with pytest.raises(UserError, match="^--checkpoint_path .*trained.pth") as info:
        model_from_checkpoint(str(tmp_path / "trained.pth"), args, model_args)
    assert "--use_vsa 1" in info.value.hint and "--use_vsa 0" in info.value.hint


def test_a_command_reads_its_checkpoint_once(tmp_path, monkeypatch):
    args, model_args = parse("train", ["--model_setting", "tiny", "--image_size", "64"])
    source = build_model(args, without_weight_sources("MaskCLIP", model_args)[0])
    torch.save({"model": source.state_dict(), "epoch": 2, "args": args}, tmp_path / "checkpoint-2.pth")
    reads = []
    stock = checkpoints.read
    monkeypatch.setattr(checkpoints, "read", lambda *a, **k: reads.append(a[0]) or stock(*a, **k))
    args, model_args = parse("test", ["--checkpoint_path", str(tmp_path)])
    assert (args.image_size, model_args.model_setting) == (64, "tiny")  # the saved flags
    model, epoch = model_from_checkpoint(args.checkpoint_path, args, model_args)
    assert reads == [str(tmp_path / "checkpoint-2.pth")] and epoch == 2
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


def test_a_model_package_plugs_in_its_foreign_format(tmp_path, monkeypatch):
    """A format registered in model_zoo.checkpoint_formats is found by its key names, its
    flags read from its tensors and its keys converted; the reader itself knows nothing of it."""
    from imdlbenco_maskclip.model_zoo import checkpoint_formats
    from imdlbenco_maskclip.model_zoo.maskclip import MaskCLIP

    args, model_args = parse("train", ["--model_setting", "tiny", "--image_size", "64", "--use_vsa", "0"])
    source = build_model(args, without_weight_sources("MaskCLIP", model_args)[0])
    torch.save({"theirs." + k: v for k, v in source.state_dict().items()}, tmp_path / "theirs.pth")
    monkeypatch.setattr(checkpoint_formats, "FORMATS", [])
    checkpoint_formats.register(checkpoint_formats.ForeignFormat(
        model="MaskCLIP", source="a test format", recognises=lambda sd: all(k.startswith("theirs.") for k in sd),
        model_flags=lambda sd: {"model_setting": "tiny", "image_size": 64,
                                "use_vsa": int("theirs.vsa.attn.q_proj.weight" in sd)},
        convert=lambda sd: {k[len("theirs."):]: v for k, v in sd.items()}, fixed_flags=("model_setting", "image_size")))
    model = MaskCLIP.from_checkpoint(str(tmp_path / "theirs.pth"))
    assert model.use_vsa == 0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())
    # The CLI takes the model from the format, and keeps what the format decides.
    args, model_args = parse("test", ["--checkpoint_path", str(tmp_path / "theirs.pth"), "--image_size", "64"])
    assert args.model == "MaskCLIP"
    tested, _ = model_from_checkpoint(args.checkpoint_path, args, model_args)
    assert all(torch.equal(tested.state_dict()[k], v) for k, v in source.state_dict().items())
