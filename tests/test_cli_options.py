"""Flags, YAML configs and the errors a bad command line gets (no training here)."""
import argparse
import json

import pytest
import torch
from IMDLBenCo.datasets import BalancedDataset
from IMDLBenCo.registry import DATASETS

from imdlbenco_maskclip import cli
from imdlbenco_maskclip.datasets import OpenSDID
from imdlbenco_maskclip.engine import data
from imdlbenco_maskclip.errors import UserError
from imdlbenco_maskclip.flags import parse


def write_yaml(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def benco_checkpoint(path, **saved):
    """A checkpoint as BenCo's misc.save_model writes it (weights left out: parsing reads only
    args); without ``saved`` flags, a bare state dict."""
    torch.save({"model": {}, "epoch": 3, "args": argparse.Namespace(**saved)} if saved else {}, path)
    return str(path)


def test_yaml_gives_defaults_for_main_and_model_flags_and_the_command_line_wins(tmp_path, capsys):
    config = write_yaml(tmp_path, "\n".join([
        "epochs: 2",
        "lr: 1e-3",                 # PyYAML reads this as a string: the flag's own type converts it
        "if_padding: true",
        "test_splits: [sd2, sd3]",
        "model_setting: tiny",      # a MaskCLIP constructor argument
        "edge_weight: 5",
        "blur_kernels: 3,5",        # a test-robust flag: ignored by train, with a note
    ]))
    args, model_args = parse("train", ["--config", config, "--epochs", "5", "--edge_weight", "7.5"])
    assert args.epochs == 5 and args.lr == pytest.approx(1e-3) and args.if_padding and not args.if_resizing
    assert args.test_splits == ["sd2", "sd3"]
    assert model_args.model_setting == "tiny" and model_args.edge_weight == pytest.approx(7.5)
    assert args.model_args["model_setting"] == "tiny"  # stored in checkpoints with args
    assert "blur_kernels" in capsys.readouterr().out

    checkpoint = benco_checkpoint(tmp_path / "bare.pth")
    args, _ = parse("test-robust", ["--config", config, "--checkpoint_path", checkpoint, "--jpeg_qualities", ""])
    assert args.blur_kernels == [3, 5] and args.jpeg_qualities == [] and args.noise_vars == []


def test_model_flags_come_from_the_model_constructor():
    args, model_args = parse("train", ["--model", "IML_ViT", "--input_size", "64", "--edge_mask_width", "7",
                                       "--image_size", "64"])
    assert model_args.input_size == 64 and args.image_size == 64
    assert not hasattr(model_args, "model_setting")


@pytest.mark.parametrize("argv, named", [
    (["train", "--model", "MaskClip"], "--model"),
    (["train", "--dataset", "OpenSDI"], "--dataset"),
    (["train", "--model", "IML_ViT"], "--edge_mask_width"),
    (["train", "--if_padding", "--if_resizing"], "--if_padding"),
    (["test"], "--checkpoint_path"),
    (["test", "--checkpoint_path", "missing/checkpoint-3.pth"], "--checkpoint_path missing/checkpoint-3.pth"),
    (["test-robust", "--checkpoint_path", "{bare}", "--blur_kernels", "4"], "--blur_kernels"),
    (["test-robust", "--checkpoint_path", "{bare}", "--jpeg_qualities", "90,120"], "--jpeg_qualities"),
    (["test-robust", "--checkpoint_path", "{bare}", "--noise_vars", "a,b"], "--noise_vars"),
    (["train", "--resume", "missing.pth", "--device", "cpu"], "--resume missing.pth"),
    (["train", "--edge_mask_width", "4"], "--edge_mask_width 4"),
    (["train", "--lr", "-1"], "--lr -1.0"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--output_dir", "README.md"], "--output_dir README.md"),
    (["train", "--model_setting", "vitl14-mae", "--device", "cpu", "--data_path", "sample:test#sd15",
      "--test_data_path", "sample:test#sd2", "--image_size", "64"], "--model_setting"),
    (["train", "--model_setting", "tiny", "--image_size", "70", "--device", "cpu", "--data_path", "sample:test#sd15",
      "--test_data_path", "sample:test#sd2"], "--image_size"),
    (["train", "--model_setting", "tiny", "--image_size", "64", "--clip_pretrained", "nowhere/clip.pt",
      "--device", "cpu", "--data_path", "sample:test#sd15", "--test_data_path", "sample:test#sd2"],
     "--clip_pretrained"),
    (["test", "--checkpoint_path", "{bare}", "--edge_mask_width", "0"], "--edge_mask_width 0"),
    (["predict", "--checkpoint_path", "{bare}", "x.png"], "--checkpoint_path"),
    (["train", "--pin_mem"], "--no_pin_mem"),
    (["preview", "sample:test#sd2", "-n", "0", "--output", "p.png"], "--num"),
    (["export", "sample:test#sd2"], "--output"),
])
def test_bad_flags_are_one_error_line_naming_the_flag(tmp_path, argv, named, capsys):
    bare = benco_checkpoint(tmp_path / "bare.pth")
    assert cli.main([a.replace("{bare}", bare) for a in argv]) == 2
    err = capsys.readouterr().err  # may begin with HF datasets' progress bars
    prefix = f"benco-maskclip {argv[0]}: error: "
    assert prefix in err and named in err[err.index(prefix):] and "Traceback" not in err


def test_a_bad_yaml_key_is_named_with_the_fix(tmp_path, capsys):
    config = write_yaml(tmp_path, "epochs: 2\nlearning_rate: 1e-4\n")
    assert cli.main(["train", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "error: --config" in err and "learning_rate" in err
    with pytest.raises(UserError, match="if_resizing"):
        parse("train", ["--config", write_yaml(tmp_path, "if_resizing: 1\n")])


def test_unknown_commands_and_help(capsys):
    assert cli.main(["fit"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--best_metric" in out and "--model_setting" in out  # main flags, then the model's


def test_benco_json_sources_and_split_names(tmp_path):
    balanced = tmp_path / "balanced.json"
    balanced.write_text(json.dumps([["OpenSDID", "sample:train#sd15"]]))
    tests = tmp_path / "tests.json"
    tests.write_text(json.dumps({"in_domain": "sample:test#sd15", "cross": "sample:test#flux"}))
    args, _ = parse("train", ["--data_path", str(balanced), "--test_data_path", str(tests), "--image_size", "64",
                              "--model_setting", "tiny"])
    train = data.open_train_dataset(args)
    assert isinstance(train, BalancedDataset) and len(train) == 1840  # BenCo's samples per entry and epoch
    sources = data.test_sources(args)
    assert list(sources) == ["in_domain", "cross"]
    assert [len(data.open_test_dataset(args, name, source)) for name, source in sources.items()] == [84, 83]

    args.test_data_path = "sample:test#sd3"
    assert list(data.test_sources(args)) == ["sd3"]
    # Nothing after '#' selects no split (as OpenSDID reads it): one set per --test_splits entry.
    args.test_data_path, args.test_splits = "sample:test#", ["sd15", "sd2"]
    assert data.test_sources(args) == {"sd15": ("sample:test#", "sd15"), "sd2": ("sample:test#", "sd2")}
    args.test_data_path, args.test_splits = "sample:test", ["sd15", "sd4"]
    with pytest.raises(UserError, match="--test_splits.*sd4"):
        data.open_test_dataset(args, "sd4", data.test_sources(args)["sd4"])


class WithoutBencoArguments:
    """A dataset class whose constructor lacks BenCo's common_transforms/edge_width/post_funcs."""

    def __init__(self, path, is_padding=False, is_resizing=False, output_size=(512, 512)):
        self.path = path


class BrokenInside(OpenSDID):
    """BenCo's constructor signature, and a bug (of either kind) when it runs."""
    error = TypeError

    def __init__(self, path, **kwargs):
        raise self.error("a bug inside the dataset constructor")


def test_only_a_constructor_that_cannot_take_the_arguments_is_a_flag_error(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS.module_dict, "WithoutBencoArguments", WithoutBencoArguments)
    monkeypatch.setitem(DATASETS.module_dict, "BrokenInside", BrokenInside)
    args, _ = parse("train", ["--dataset", "WithoutBencoArguments", "--data_path", "sample:train",
                              "--image_size", "64", "--model_setting", "tiny"])
    with pytest.raises(UserError, match="^--dataset WithoutBencoArguments"):
        data.open_train_dataset(args)
    balanced = tmp_path / "balanced.json"
    balanced.write_text(json.dumps([["OpenSDID", "sample:train#sd15"], ["WithoutBencoArguments", "x"]]))
    args.data_path = str(balanced)
    with pytest.raises(UserError, match="entry 'WithoutBencoArguments'"):
        data.open_train_dataset(args)
    balanced.write_text(json.dumps([["OpenSDID", "sample:train#sd15"], ["OpenSDI", "x"]]))
    with pytest.raises(UserError, match="entry 'OpenSDI'"):
        data.open_train_dataset(args)

    args.dataset, args.data_path = "BrokenInside", "sample:train"
    for error in (TypeError, AttributeError):
        monkeypatch.setattr(BrokenInside, "error", error)
        with pytest.raises(error, match="a bug inside"):
            data.open_train_dataset(args)


@pytest.mark.parametrize("content", [[], {"sd15": "sample:test#sd15"}, [["a.jpg"]]])
def test_a_json_that_is_no_dataset_list_is_named(tmp_path, content):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(content))
    args, _ = parse("train", ["--data_path", str(path), "--image_size", "64", "--model_setting", "tiny"])
    with pytest.raises(UserError, match=r"^--data_path\S* .*train.json"):
        data.open_train_dataset(args)


def test_a_json_list_naming_a_missing_file_is_refused_before_benco_reads_it(tmp_path, monkeypatch):
    """BenCo's JsonDataset checks only the first image, and then fails with an UnboundLocalError;
    a later missing file would stop the run mid-epoch. Every listed file is checked up front."""
    from PIL import Image
    image = tmp_path / "tp.png"
    Image.new("RGB", (8, 8)).save(image)
    listing = tmp_path / "train.json"
    args, _ = parse("train", ["--data_path", str(listing), "--image_size", "64", "--model_setting", "tiny"])
    for entries, missing in [([["missing_first.png", "Negative"]], "missing_first.png"),
                             ([[str(image), "Negative"], [str(image), "gt_missing.png"]], "gt_missing.png")]:
        listing.write_text(json.dumps(entries))
        with pytest.raises(UserError, match=rf"^--data_path .*train.json.*{missing}"):
            data.open_train_dataset(args)
    listing.write_text(json.dumps([[str(image), "Negative"]]))
    assert len(data.open_train_dataset(args)) == 1

    # The same list reached through a BalancedDataset entry.
    listing.write_text(json.dumps([[str(image), "Negative"], ["elsewhere/tp.png", "Negative"]]))
    balanced = tmp_path / "balanced.json"
    balanced.write_text(json.dumps([["OpenSDID", "sample:train#sd15"], ["JsonDataset", str(listing)]]))
    args.data_path = str(balanced)
    with pytest.raises(UserError, match=r"entry 'JsonDataset'.*train.json.*elsewhere/tp.png"):
        data.open_train_dataset(args)


def test_a_device_that_cannot_be_had_is_named_and_other_process_group_errors_keep_their_own(monkeypatch):
    from imdlbenco_maskclip import compat
    from imdlbenco_maskclip.engine import runtime
    args, _ = parse("train", ["--device", "gpu0", "--model_setting", "tiny"])
    with pytest.raises(UserError, match="^--device gpu0"):
        runtime.start(args, "train")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    args.device = "cuda"
    with pytest.raises(UserError, match="^--device cuda:? "):
        runtime.start(args, "train")

    def rendezvous_fails(args):
        raise RuntimeError("the rendezvous at MASTER_ADDR refused the connection")
    monkeypatch.setattr(compat, "init_distributed_mode", rendezvous_fails)
    args.device = "cpu"
    with pytest.raises(RuntimeError, match="^the rendezvous"):  # not blamed on --device
        runtime.start(args, "train")


def test_test_commands_take_the_model_and_its_flags_from_the_checkpoint_and_the_command_line_wins(tmp_path, capsys):
    checkpoint = benco_checkpoint(tmp_path / "checkpoint-3.pth", model="MaskCLIP", image_size=64, if_padding=True,
                                  if_resizing=False, model_args={"model_setting": "tiny", "use_vsa": 0,
                                                                 "image_size": 64, "edge_weight": 20.0})
    for command in ("test", "test-robust"):
        args, model_args = parse(command, ["--checkpoint_path", checkpoint])
        assert (args.model, args.image_size, args.if_padding, args.if_resizing) == ("MaskCLIP", 64, True, False)
        assert (model_args.model_setting, model_args.use_vsa, model_args.use_tvca) == ("tiny", 0, 1)
    note = capsys.readouterr().out
    assert "--model MaskCLIP --image_size 64 --if_padding --model_setting tiny --use_vsa 0\n" in note

    # A folder finds its checkpoint; the command line and --config win, and a switch given
    # replaces the checkpoint's resize-or-pad choice.
    args, model_args = parse("test", ["--checkpoint_path", str(tmp_path), "--use_vsa", "1", "--if_resizing",
                                      "--config", write_yaml(tmp_path, "image_size: 128\n")])
    assert (args.image_size, args.if_padding, args.if_resizing, model_args.use_vsa) == (128, False, True, 1)
    assert model_args.model_setting == "tiny"
    # Another --model gets none of MaskCLIP's flags.
    args, model_args = parse("test", ["--checkpoint_path", checkpoint, "--model", "IML_ViT", "--edge_mask_width", "7"])
    assert args.model == "IML_ViT" and not hasattr(model_args, "model_setting")
    # A bare state dict says nothing: the usual defaults.
    torch.save({}, tmp_path / "bare.pth")
    args, model_args = parse("test", ["--checkpoint_path", str(tmp_path / "bare.pth")])
    assert (args.image_size, model_args.model_setting) == (512, "vitl14_mae")


def test_a_file_that_is_no_checkpoint_is_named_without_torchs_weights_only_advice(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    whole = benco_checkpoint(tmp_path / "checkpoint-3.pth", model="MaskCLIP", model_args={})
    cut = tmp_path / "cut.pth"
    cut.write_bytes(open(whole, "rb").read()[:300])
    for path in (text, cut):
        with pytest.raises(UserError, match=rf"^--checkpoint_path {path}") as info:
            parse("test", ["--checkpoint_path", str(path)])
        assert "weights_only" not in str(info.value) and "Unsupported global" not in str(info.value)
    # Objects torch's weights_only loader refuses are named as such, not as a broken file.
    import numpy as np
    with_numpy = tmp_path / "numpy.pth"
    torch.save({"model": {}, "best": np.float64(0.5)}, with_numpy)
    with pytest.raises(UserError, match=r"^--checkpoint_path .*Unsupported global.*numpy"):
        parse("test", ["--checkpoint_path", str(with_numpy)])


def test_a_models_own_input_size_flag_follows_image_size_and_must_agree_with_it(tmp_path):
    """BenCo's IML_ViT builds for --input_size (default 1024) whatever --image_size the data has,
    then fails in its loss: 'Target size ... must be the same as input size'."""
    base = ["--model", "IML_ViT", "--image_size", "64", "--edge_mask_width", "7"]
    assert parse("train", base)[1].input_size == 64
    assert parse("train", [*base, "--input_size", "64"])[1].input_size == 64
    with pytest.raises(UserError, match="^--input_size 1024 .*--image_size 64"):
        parse("train", [*base, "--input_size", "1024"])
    with pytest.raises(UserError, match="^--input_size 1024"):
        parse("train", [*base, "--config", write_yaml(tmp_path, "input_size: 1024\n")])


def test_training_without_an_edge_mask_says_the_edge_loss_is_off(capsys):
    parse("train", ["--model_setting", "tiny"])
    out = capsys.readouterr().out
    assert "--edge_mask_width" in out and "--edge_weight 20.0" in out
    parse("train", ["--model_setting", "tiny", "--edge_mask_width", "7"])
    parse("train", ["--model_setting", "tiny", "--edge_weight", "0"])
    assert "--edge_mask_width" not in capsys.readouterr().out


def test_on_bad_sample_reaches_opensdid_and_is_refused_where_it_cannot_act(tmp_path):
    args, _ = parse("train", ["--data_path", "sample:train#sd15", "--image_size", "64", "--model_setting", "tiny",
                              "--on_bad_sample", "skip"])
    assert data.open_train_dataset(args).on_bad_sample == "skip"
    balanced = tmp_path / "balanced.json"
    balanced.write_text(json.dumps([["OpenSDID", "sample:train#sd15"]]))
    args.data_path = str(balanced)
    with pytest.raises(UserError, match=r"^--on_bad_sample skip.*balanced.json"):
        data.open_train_dataset(args)


def test_checkpoint_defaults_corner_cases(tmp_path, capsys):
    padded = benco_checkpoint(tmp_path / "padded.pth", model="MaskCLIP", image_size=64, if_padding=True,
                              if_resizing=False, edge_mask_width=7, model_args={"model_setting": "tiny"})
    # A YAML that switches resizing off leaves the checkpoint's padding in place.
    args, _ = parse("test", ["--checkpoint_path", padded, "--config", write_yaml(tmp_path, "if_resizing: false\n")])
    assert (args.if_padding, args.if_resizing, args.edge_mask_width) == (True, False, 7)
    # --help never depends on the checkpoint being readable.
    broken = tmp_path / "broken.pth"
    broken.write_bytes(open(padded, "rb").read()[:200])
    with pytest.raises(SystemExit) as exit_info:
        parse("test", ["--checkpoint_path", str(broken), "--help"])
    assert exit_info.value.code == 0 and "--model_setting" in capsys.readouterr().out

    # IML_ViT trained at 512 (its input_size saved, whatever its default) is tested at 512; BenCo's
    # own checkpoints need their edge mask, which comes from the checkpoint too.
    for input_size in (512, 1024):
        iml_vit = benco_checkpoint(tmp_path / f"iml_vit_{input_size}.pth", model="IML_ViT", image_size=input_size,
                                   if_resizing=True, edge_mask_width=7, model_args={"input_size": input_size})
        args, model_args = parse("test", ["--checkpoint_path", iml_vit])
        assert (args.image_size, model_args.input_size, args.edge_mask_width) == (input_size, input_size, 7)
        with pytest.raises(UserError, match=rf"^--image_size 256 .*--input_size {input_size}"):
            parse("test", ["--checkpoint_path", iml_vit, "--image_size", "256"])
    # An unannotated constructor argument (SparseViT's img_size) takes its default's type.
    args, model_args = parse("train", ["--model", "SparseViT", "--image_size", "1024", "--img_size", "1024",
                                       "--edge_mask_width", "7"])
    assert model_args.img_size == 1024


def test_predict_takes_the_checkpoints_model_flags_over_the_yaml_unless_given_on_the_command_line(tmp_path, capsys):
    checkpoint = benco_checkpoint(tmp_path / "checkpoint-3.pth", model="MaskCLIP", image_size=64, if_padding=True,
                                  if_resizing=False, model_args={"model_setting": "tiny", "use_vsa": 0})
    config = write_yaml(tmp_path, "image_size: 128\nuse_vsa: 1\nthreshold: 0.25\nif_resizing: true\nepochs: 3\n")
    args, model_args = parse("predict", ["--config", config, "--checkpoint_path", str(tmp_path), "x.png"])
    assert (args.image_size, args.if_padding, args.if_resizing, model_args.use_vsa) == (64, True, False, 0)
    assert args.threshold == 0.25 and args.checkpoint_path == checkpoint  # the folder resolved to its file
    assert "epochs" in capsys.readouterr().out  # a train key, skipped with a note
    args, model_args = parse("predict", ["--config", config, "--checkpoint_path", checkpoint, "--use_vsa", "1",
                                         "--image_size", "128", "x.png"])
    assert (args.image_size, model_args.use_vsa) == (128, 1)


@pytest.mark.parametrize("command", ["sample", "export", "preview"])
def test_dataset_commands_take_a_config_of_their_own_flags(tmp_path, command, capsys):
    source = [] if command == "sample" else ["sample:test"]
    config = write_yaml(tmp_path, f"output: {tmp_path / 'out'}\nnum: 3\nsplit: sd2\nepochs: 2\n")
    args, model_args = parse(command, ["--config", config, *source])
    assert model_args is None and args.output == str(tmp_path / "out")
    assert getattr(args, "split", "sd2") == "sd2" and getattr(args, "num", 3) == 3
    assert "epochs" in capsys.readouterr().out
    with pytest.raises(UserError, match="nmu"):
        parse(command, ["--config", write_yaml(tmp_path, "nmu: 3\n"), *source])


def test_files_that_do_not_parse_are_named_with_their_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: 2\nlr: [1e-4\n")
    with pytest.raises(UserError, match=rf"^--config {config}: .*line 3"):
        parse("train", ["--config", str(config)])
    tests = tmp_path / "tests.json"
    tests.write_text('{"sd2": "sample:test#sd2",\n "sd3": }\n')
    args, _ = parse("train", ["--test_data_path", str(tests), "--model_setting", "tiny"])
    with pytest.raises(UserError, match=r"^--test_data_path .*tests.json.*line 2"):
        data.test_sources(args)
    args.data_path = str(tests)
    with pytest.raises(UserError, match=r"^--data_path .*tests.json.*line 2"):
        data.open_train_dataset(args)


def test_bencos_pin_mem_in_a_config_is_an_error_naming_the_flag_to_use(tmp_path):
    with pytest.raises(UserError) as info:
        parse("train", ["--config", write_yaml(tmp_path, "pin_mem: true\n")])
    assert "--no_pin_mem" in f"{info.value} {info.value.hint}"


@pytest.mark.usefixtures("no_process_group_left_behind")
def test_benco_launch_flags_are_accepted_and_torchruns_values_decide(capsys):
    from imdlbenco_maskclip.engine import runtime
    args, _ = parse("train", ["--device", "cpu", "--world_size", "4", "--dist_on_itp", "--model_setting", "tiny"])
    runtime.start(args, "train")
    assert args.world_size == 1 and not args.distributed
    out = capsys.readouterr().out
    assert "--world_size 4" in out and "--dist_on_itp" in out


def test_a_checkpoint_of_bencos_own_scripts_gives_test_its_model_but_predict_refuses_it(tmp_path):
    stock = benco_checkpoint(tmp_path / "stock.pth", model="IML_ViT", image_size=256, if_resizing=True,
                             if_padding=False, edge_mask_width=7)  # BenCo's args: no model_args
    args, model_args = parse("test", ["--checkpoint_path", stock])
    assert (args.model, args.image_size, args.edge_mask_width, model_args.input_size) == ("IML_ViT", 256, 7, 256)
    with pytest.raises(UserError, match=f"^--checkpoint_path {stock}"):
        parse("predict", ["--checkpoint_path", stock, "x.png"])
