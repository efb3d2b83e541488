"""BenCo's CAT-Net, TruFor and IML-ViT through our pipeline: weight files as flags, clear
errors without them, one forward and backward step of each on the CPU with weight files
written here in the formats BenCo reads, and TruFor's phase 2 -> phase 3 hand-over."""
import sys

import pytest
import torch
from torch.utils.data import default_collate

from imdlbenco_maskclip import compat
from imdlbenco_maskclip.cli import main
from imdlbenco_maskclip.engine import data, models
from imdlbenco_maskclip.errors import UserError
from imdlbenco_maskclip.flags import parse

pytestmark = pytest.mark.usefixtures("no_process_group_left_behind")
SMALL = ["--device", "cpu", "--image_size", "64", "--data_path", "sample:test#sd15", "--num_workers", "0"]


def has_jpegio():
    try:
        import jpegio  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("argv, named", [
    (["--model", "Cat_Net"], ("--pretrained_rgb", "hrnetv2_w48_imagenet_pretrained.pth", "--pretrained_rgb none")),
    (["--model", "Cat_Net", "--pretrained_rgb", "none", "--pretrained_dct", "nowhere/DCT_djpeg.pth.tar"],
     ("--pretrained_dct nowhere/DCT_djpeg.pth.tar", "no such file", "github.com/mjkwon2021/CAT-Net")),
    (["--model", "Trufor"], ("--np_pretrain_weights", "noiseprint.pth", "cannot start from random weights")),
    (["--model", "Trufor", "--phase", "3"], ("--det_resume_ckpt", "checkpoint-best.pth")),
])
def test_a_baseline_without_its_weight_files_ends_in_one_clear_line(argv, named, tmp_path, capsys):
    assert main(["train", *argv, *SMALL, "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("benco-maskclip train: error: "))
    error, hint = lines[at], lines[at + 1]  # the error, its fix in parentheses
    assert hint.startswith("(") and lines[at + 2:] == []
    if "Cat_Net" in argv and not has_jpegio():  # named first: the run could not read its data
        assert "jpegio" in error and '.[baselines]' in hint
        return
    assert all(name in error + hint for name in named), err


def test_cat_net_without_jpegio_is_an_error_naming_it_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jpegio", None)  # import jpegio now raises ImportError
    with pytest.raises(UserError, match="jpegio") as raised:
        models.check_requirements("Cat_Net")
    assert '".[baselines]"' in raised.value.hint
    models.check_requirements("IML_ViT")  # needs nothing extra


def a_batch(args, count):
    """``count`` samples of the sample's sd15 split through our data pipeline (BenCo's post
    function of the model included), as one batch."""
    dataset = data.open_train_dataset(args)
    return default_collate([dataset[i] for i in range(count)])


def step(model, batch):
    """One training forward and backward -> the output; every gradient is finite."""
    output = model(**batch, if_predcit_label=True)
    output["backward_loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert output["pred_mask"].shape == batch["mask"].shape
    return output


@pytest.mark.skipif(not has_jpegio(),
                    reason='CAT-Net reads DCT coefficients with jpegio: pip install -e ".[baselines]"')
def test_cat_net_trains_a_step_on_cpu_from_its_weight_files(tmp_path):
    compat.apply_patches()  # what every command does first: CAT-Net's .cuda() calls (compat.PATCHES)
    rgb, dct = torch.randn(64, 3, 3, 3), torch.randn(64, 21, 3, 3)
    # CAT-Net keeps the keys of each file that its network has: a few suffice to show they are read.
    torch.save({"conv1.weight": rgb}, tmp_path / "hrnet.pth")
    torch.save({"state_dict": {"dc_layer0_dil.0.weight": dct}}, tmp_path / "DCT_djpeg.pth.tar")
    args, model_args = parse("train", ["--model", "Cat_Net", *SMALL, "--output_dir", str(tmp_path / "out"),
                                       "--pretrained_rgb", str(tmp_path / "hrnet.pth"),
                                       "--pretrained_dct", str(tmp_path / "DCT_djpeg.pth.tar")])
    model = models.build_model(args, model_args)
    assert torch.equal(model.model.conv1.weight, rgb) and torch.equal(model.model.dc_layer0_dil[0].weight, dct)
    copy = (tmp_path / "out" / "cat_net_config.yaml").read_text()
    assert str(tmp_path / "hrnet.pth") in copy and str(tmp_path / "DCT_djpeg.pth.tar") in copy
    batch = a_batch(args, 1)
    assert {"DCT_coef", "qtables"} <= set(batch)  # BenCo's cat_net_post_func ran in our dataset
    assert step(model, batch)["pred_label"] is None


def test_trufor_phase_2_then_phase_3_on_cpu_from_its_weight_files(tmp_path):
    from IMDLBenCo.model_zoo.trufor.trufor import config, confcmx, update_config
    compat.apply_patches()  # what every command does first: BenCo checkpoints' saved flags load
    update_config(config, None, models.FLAG_DEFAULTS["Trufor"]["config_path"])
    reference = confcmx(cfg=config)  # BenCo's network: the files in the formats its constructor reads
    noiseprint = {k: torch.randn_like(v) if v.is_floating_point() else v
                  for k, v in reference.dncnn.state_dict().items()}
    patch_embed = torch.randn_like(reference.backbone.patch_embed1.proj.weight)
    torch.save(noiseprint, tmp_path / "noiseprint.pth")
    torch.save({"patch_embed1.proj.weight": patch_embed}, tmp_path / "mit_b2.pth")  # read with strict=False
    del reference

    phase2, model_args = parse("train", ["--model", "Trufor", *SMALL, "--output_dir", str(tmp_path / "p2"),
                                         "--np_pretrain_weights", str(tmp_path / "noiseprint.pth"),
                                         "--mit_b2_pretrain_weights", str(tmp_path / "mit_b2.pth")])
    model = models.build_model(phase2, model_args)
    assert all(torch.equal(model.model.dncnn.state_dict()[k], v) for k, v in noiseprint.items())
    assert torch.equal(model.model.backbone.patch_embed1.proj.weight, patch_embed)
    batch = a_batch(phase2, 2)
    assert set(step(model, batch)["visual_loss"]) == {"loss_ce", "dice_loss", "combined_loss"}

    # Phase 3 reads phase 2's checkpoint as `train` writes it (BenCo's misc.save_model dict).
    checkpoint = tmp_path / "checkpoint-best.pth"
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 0, "args": phase2}, checkpoint)
    phase3, model_args = parse("train", ["--model", "Trufor", *SMALL, "--output_dir", str(tmp_path / "p3"),
                                         "--phase", "3", "--det_resume_ckpt", str(checkpoint)])
    continued = models.build_model(phase3, model_args)
    assert all(torch.equal(v, continued.state_dict()[k]) for k, v in model.state_dict().items())
    assert set(step(continued, batch)["visual_loss"]) == {"loss_conf", "loss_det", "combined_loss"}

    # test / test-robust: every weight from the checkpoint, phase 2's files not read (switched off).
    args, model_args = parse("test", ["--checkpoint_path", str(checkpoint), "--device", "cpu"])
    tested, _ = models.model_from_checkpoint(str(checkpoint), args, model_args)
    assert tested.phase == 2 and model_args.np_pretrain_weights == str(tmp_path / "noiseprint.pth")
    assert all(torch.equal(v, tested.state_dict()[k]) for k, v in model.state_dict().items())
