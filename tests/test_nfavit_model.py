"""NFA_ViT on its own: BenCo's contract, what is frozen, the loss, and its three weight files."""
import pytest
import torch

from imdlbenco_maskclip.model_zoo.nfa_vit import NFA_ViT, WeightSourceError
from imdlbenco_maskclip.model_zoo.nfa_vit.pretrained import STEM, mit_key

RANDOM = {"np_pretrain_weights": "none", "seg_b0_pretrain_weights": "none", "seg_b2_pretrain_weights": "none"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return NFA_ViT(**RANDOM)


def inputs(batch, height=64, width=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(batch, 3, height, width, generator=generator),
            "mask": (torch.rand(batch, 1, height, width, generator=generator) > 0.5).float(),
            "label": torch.arange(batch) % 2}


def test_benco_outputs_for_one_image_and_several(model):
    model.eval()
    with torch.no_grad():
        for batch in (1, 2):
            out = model(**inputs(batch), shape=None, name=["x"] * batch, if_predcit_label=True)
            assert out["pred_mask"].shape == (batch, 1, 64, 64)
            assert out["pred_label"].shape == (batch,)
            assert ((out["pred_mask"] >= 0) & (out["pred_mask"] <= 1)).all()
            losses = out["visual_loss"]
            assert torch.allclose(out["backward_loss"], losses["seg_loss"] + 0.5 * losses["cls_loss"])
            assert losses["total_loss"] is out["backward_loss"]


def test_a_non_square_image_runs_and_a_tiny_one_is_refused(model):
    with torch.no_grad():
        out = model.eval()(**inputs(1, height=96, width=64))
        assert out["pred_mask"].shape == (1, 1, 96, 64)
        with pytest.raises(ValueError, match="64 x 64"):
            model(**inputs(1, height=48, width=64))


def test_cls_loss_weight_weighs_the_detection_loss():
    torch.manual_seed(0)
    equal = NFA_ViT(**RANDOM, cls_loss_weight=1.0).eval()
    with torch.no_grad():
        losses = equal(**inputs(2))["visual_loss"]
    assert torch.allclose(losses["total_loss"], losses["seg_loss"] + losses["cls_loss"])
    with pytest.raises(ValueError, match="--cls_loss_weight"):
        NFA_ViT(**RANDOM, cls_loss_weight=-1.0)


def test_noise_side_is_frozen_yet_its_batchnorm_follows_the_batch_in_training(model):
    frozen = [p for part in (model.noise_extractor, model.noise_backbone) for p in part.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert {name.split(".")[0] for name, _ in trainable} == {"image_backbone", "seg_decoder", "cls_head"}
    batchnorm = model.noise_extractor.layers[3]
    before = batchnorm.running_mean.clone()
    model.train().zero_grad()
    model(**inputs(2))["backward_loss"].backward()
    assert not torch.equal(batchnorm.running_mean, before)  # batch statistics in training, as theirs
    assert all(p.grad is None for p in frozen)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable)


# ---------------------------------------------------------------------------- weight files


def backbone_file(backbone, generator, rgb_stem=False):
    """A MiT state dict under NVlabs' names for ``backbone``, as SegFormer's files lay it out;
    b0's released stem has three channels."""
    state = {mit_key(key): torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
             for key, value in backbone.state_dict().items()}
    if rgb_stem:
        state[STEM] = torch.randn(state[STEM].shape[0], 3, *state[STEM].shape[2:], generator=generator)
    return state


@pytest.fixture(scope="module")
def weight_files(model, tmp_path_factory):
    """The three files (noiseprint.pth, MiT-b0 with an RGB stem and its ImageNet head, MiT-b2),
    as state dicts and as paths."""
    folder = tmp_path_factory.mktemp("nfavit_weights")
    generator = torch.Generator().manual_seed(3)
    states = {
        "np_pretrain_weights": {key: torch.randn(value.shape, generator=generator).abs()
                                if value.is_floating_point() else value
                                for key, value in model.noise_extractor.layers.state_dict().items()},
        "seg_b0_pretrain_weights": dict(backbone_file(model.noise_backbone, generator, rgb_stem=True),
                                        **{"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}),
        "seg_b2_pretrain_weights": backbone_file(model.image_backbone, generator),
    }
    # the noise blocks' norm1, which theirs holds and never applies
    states["seg_b0_pretrain_weights"].update({f"block{stage}.{index}.norm1.weight": torch.ones(width)
                                              for stage, width in zip((1, 2, 3, 4), (32, 64, 160, 256))
                                              for index in (0, 1)})
    paths = {}
    for flag, state in states.items():
        paths[flag] = str(folder / f"{flag}.pth")
        torch.save(state, paths[flag])
    return states, paths


def test_the_three_files_load_with_b0_stem_averaged(weight_files):
    states, paths = weight_files
    loaded = NFA_ViT(**paths)
    assert all(torch.equal(loaded.noise_extractor.layers.state_dict()[key], value)
               for key, value in states["np_pretrain_weights"].items())
    b0 = loaded.noise_backbone.state_dict()
    assert torch.equal(b0["stages.0.patch_embed.proj.weight"],
                       states["seg_b0_pretrain_weights"][STEM].mean(dim=1, keepdim=True))
    assert torch.equal(b0["stages.1.blocks.1.mlp.dwconv.weight"],
                       states["seg_b0_pretrain_weights"]["block2.1.mlp.dwconv.dwconv.weight"])
    b2 = loaded.image_backbone.state_dict()
    assert all(torch.equal(b2[key], states["seg_b2_pretrain_weights"][mit_key(key)]) for key in b2)


def test_a_file_saved_from_a_gpu_loads_on_a_cpu(weight_files, tmp_path, monkeypatch):
    states, paths = weight_files
    gpu_file = tmp_path / "segformer_b2_backbone_weights.pth"
    with monkeypatch.context() as saving_from_a_gpu:  # every storage tagged cuda:0, as torch.save writes CUDA tensors
        saving_from_a_gpu.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(states["seg_b2_pretrain_weights"], gpu_file)
    locations = []
    torch.load(gpu_file, map_location=lambda storage, location: locations.append(location) or storage)
    assert set(locations) == {"cuda:0"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = NFA_ViT(**dict(RANDOM, seg_b2_pretrain_weights=str(gpu_file)))
    assert loaded.image_backbone.stages[0].patch_embed.proj.weight.device.type == "cpu"
    assert torch.equal(loaded.image_backbone.stages[0].patch_embed.proj.weight, states["seg_b2_pretrain_weights"][STEM])


@pytest.mark.parametrize("flag,change,named", [
    ("seg_b2_pretrain_weights", {"block1.0.attn.extra.weight": torch.zeros(2)}, "block1.0.attn.extra.weight"),
    ("seg_b2_pretrain_weights", {"block4.2.mlp.fc2.bias": None}, "block4.2.mlp.fc2.bias"),
    ("seg_b0_pretrain_weights", {"block3.1.attn.q.weight": torch.zeros(3, 3)}, "block3.1.attn.q.weight"),
    ("np_pretrain_weights", {"layers.0.weight": torch.zeros(2)}, "layers.0.weight"),
], ids=["foreign", "missing", "misshapen", "noiseprint-foreign"])
def test_a_tensor_that_does_not_fit_is_named_with_its_flag(weight_files, tmp_path, flag, change, named):
    states, paths = weight_files
    state = dict(states[flag])
    for key, value in change.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightSourceError, match=f"--{flag} .*{named.replace('.', '[.]')}"):
        NFA_ViT(**dict(paths, **{flag: str(tmp_path / "bad.pth")}))


@pytest.mark.parametrize("flag", ["np_pretrain_weights", "seg_b0_pretrain_weights", "seg_b2_pretrain_weights"])
def test_a_missing_file_names_its_flag_and_where_to_get_it(weight_files, tmp_path, flag):
    _, paths = weight_files
    for value in (None, str(tmp_path / "absent.pth")):
        with pytest.raises(WeightSourceError) as error:
            NFA_ViT(**dict(paths, **{flag: value}))
        message = str(error.value)
        assert f"--{flag}" in message and "github.com/clpbc/BR-Gen" in message and f"--{flag} none" in message
        assert "\n" not in message


@pytest.mark.parametrize("recipe,optimizer,lr,epochs,cls_loss_weight", [
    ("nfa_vit_authors", "adamw", 2e-4, 200, 0.5), ("nfa_vit_paper", "adam", 5e-3, 30, 1.0)])
def test_recipes_parse_and_ask_for_the_weight_files(recipe, optimizer, lr, epochs, cls_loss_weight):
    from pathlib import Path

    from imdlbenco_maskclip.errors import UserError
    from imdlbenco_maskclip.flags import parse

    config = str(Path(__file__).resolve().parents[1] / "benco_configs" / f"{recipe}.yaml")
    with pytest.raises(UserError, match="--np_pretrain_weights"):
        parse("train", ["--config", config])
    args, model_args = parse("train", ["--config", config, *[part for flag in RANDOM for part in (f"--{flag}", "none")]])
    assert (args.model, args.optimizer, args.lr, args.epochs, args.batch_size) == ("NFA_ViT", optimizer, lr, epochs, 16)
    assert model_args.cls_loss_weight == cls_loss_weight
