"""Our MaskCLIP against the authors' code: same weights and pixels, same outputs and gradients.

Needs ``../shared/reference/authors-maskclip`` beside the project (or its path in
``MASKCLIP_AUTHORS_CODE``) and the ``openai-clip`` package (test extras); skips with the
reason otherwise. Their model runs with a small CLIP (``SMALL_CLIP``) at 256 px, so the CLIP
resize, the window padding (16 x 16 tokens in windows of 14) and the position resampling
(14 x 14 -> 16 x 16) all take part; their side network is the full ViT-B.
"""
import os
import sys
from pathlib import Path

import pytest
import torch

from imdlbenco_maskclip.errors import CheckpointError
from imdlbenco_maskclip.model_zoo.maskclip import MaskCLIP, WeightSourceError
from imdlbenco_maskclip.model_zoo.maskclip.maskclip import (IMAGENET_MEAN, IMAGENET_STD, authors_checkpoint_filter,
                                                            openai_clip_config)
from imdlbenco_maskclip.model_zoo.maskclip.pretrained import OPENAI_MEAN, OPENAI_STD

AUTHORS_CODE = Path(os.environ.get("MASKCLIP_AUTHORS_CODE",
                                   Path(__file__).resolve().parents[2] / "shared" / "reference" / "authors-maskclip"))
if not (AUTHORS_CODE / "authors_reference.py").is_file():
    pytest.skip(f"the authors' code is not at {AUTHORS_CODE} (set MASKCLIP_AUTHORS_CODE)", allow_module_level=True)
sys.path.insert(0, str(AUTHORS_CODE))
# Imported first: where setuptools no longer ships pkg_resources, it stands in for what openai-clip imports.
import authors_reference  # noqa: E402

pytest.importorskip("clip", reason="openai-clip is not installed (pip install -e '.[test]')")
from authors_reference import SMALL_CLIP, authors_forward, build_authors_maskclip  # noqa: E402
from test_e2e_cli import run_cli  # noqa: E402

SIZE = 256
TAPS = "0,1,2,3,3,3,3"


def relative_error(ours, theirs):
    return ((ours.double() - theirs.double()).norm() / theirs.double().norm()).item()


def randomise(model, seed):
    """Every floating tensor drawn anew: their init zeroes biases, relative positions and
    LayerNorm shifts, which would leave those paths untested. Matrices get fan-in scaling so
    that activations and logits stay of order one; vectors (biases, gains, positions) vary by 0.1
    around 0, or around 1 for a LayerNorm gain."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or name.endswith("logit_scale"):
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if tensor.ndim > 1 and not name.endswith(("rel_pos_h", "rel_pos_w", "pos_embed", "positional_embedding",
                                                      "class_embedding", "ctx_pos", "ctx_neg")):
                tensor.copy_(noise / (tensor[0].numel() ** 0.5))
            else:
                is_gain = tensor.ndim == 1 and name.endswith("weight")
                tensor.copy_(noise * 0.1 + (1.0 if is_gain else 0.0))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(theirs, ours, checkpoint path): their model randomised, saved as their train.py saves it,
    and ours loaded from that file with from_checkpoint."""
    import argparse

    theirs = build_authors_maskclip(clip_arch=SMALL_CLIP, resolution=SIZE, selected_layers=[0, 1, 2, 3, 3, 3, 3])
    randomise(theirs, seed=0)
    theirs.eval()
    path = tmp_path_factory.mktemp("authors") / "authors_checkpoint.pth"
    optimizer = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=1e-4)
    torch.save({"model": theirs.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3, "scaler": {},
                "args": argparse.Namespace(model="MaskCLIP", model_setting_name="ViTL", image_size=SIZE)}, path)
    ours = MaskCLIP.from_checkpoint(str(path), clip_layers=TAPS).eval()
    return theirs, ours, path


def batch(seed=1):
    """The same pixels, normalised as each pipeline does: theirs with CLIP's statistics, BenCo's with ImageNet's."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(2, 3, SIZE, SIZE, generator=generator)

    def normalise(mean, std):
        return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[0, :, 40:150, 60:200] = 1
    edge_mask = torch.zeros_like(mask)
    edge_mask[0, :, 37:43, 60:200] = 1
    edge_mask[0, :, 147:153, 60:200] = 1
    common = {"mask": mask, "label": torch.tensor([1, 0]), "edge_mask": edge_mask}
    return dict(common, image=normalise(OPENAI_MEAN, OPENAI_STD)), dict(common, image=normalise(IMAGENET_MEAN,
                                                                                               IMAGENET_STD))


def test_checkpoint_of_their_train_py_loads_every_tensor(models):
    theirs, ours, _ = models
    mapped = authors_checkpoint_filter(theirs.state_dict())
    own = ours.state_dict()
    assert set(mapped) == set(own)
    assert all(torch.equal(mapped[key], own[key]) for key in own)
    assert ours.clip_layers == [0, 1, 2, 3, 3, 3, 3]


@pytest.fixture(scope="module")
def passes(models):
    """One forward and backward of each model on the same pixels, in eval mode (no dropout)."""
    theirs, ours, _ = models
    their_batch, our_batch = batch()
    theirs.zero_grad()
    ours.zero_grad()
    their_out, their_logits = authors_forward(theirs, **their_batch)
    our_out = ours(**our_batch)
    their_out["backward_loss"].backward()
    our_out["backward_loss"].backward()
    their_grads = authors_checkpoint_filter({name: p.grad for name, p in theirs.named_parameters()
                                             if p.grad is not None and not name.startswith("clip.")})
    our_grads = {name: p.grad for name, p in ours.named_parameters() if p.requires_grad}
    return their_out, their_logits, our_out, their_grads, our_grads


def test_forward_matches_their_outputs_and_losses(passes):
    their_out, their_logits, our_out, _, _ = passes
    their_p_fake = their_logits.softmax(-1)[:, 1]
    # weights random enough that the outputs are not trivially alike
    assert their_p_fake.std() > 1e-3 and their_out["pred_mask"].std() > 1e-2
    assert relative_error(our_out["pred_mask"], their_out["pred_mask"]) <= 1e-5
    assert relative_error(our_out["pred_label"], their_p_fake) <= 1e-5
    assert torch.equal(our_out["pred_label"] > 0.5, their_out["pred_label"].bool())  # their argmax
    for ours_name, their_name in (("ce_loss", "loss_ce"), ("bce_loss", "loss_bce"), ("edge_loss", "loss_edge"),
                                  ("total_loss", "combined_loss")):
        assert relative_error(our_out["visual_loss"][ours_name], their_out["visual_loss"][their_name]) <= 1e-5


def test_gradients_match_theirs_for_every_trainable_tensor(models, passes):
    _, ours, _ = models
    _, _, _, their_grads, our_grads = passes
    assert all(p.grad is None for p in ours.clip.parameters())
    # Attention key biases are frozen in ours: a key bias shifts all scores of a query alike,
    # which the softmax removes, so its exact gradient is zero and theirs is rounding noise.
    frozen_by_design = {name for name in their_grads if name.endswith("attn.k_proj.bias")}
    assert len(frozen_by_design) == 9  # seven VCA blocks, TVCA, VSA
    assert set(our_grads) == set(their_grads) - frozen_by_design
    for name in frozen_by_design:
        value_bias = their_grads[name.replace("k_proj", "v_proj")]
        assert their_grads[name].norm() <= 1e-4 * value_bias.norm(), name
    worst = max((relative_error(our_grads[name], their_grads[name]), name) for name in our_grads)
    assert worst[0] <= 1e-4, worst


def test_their_checkpoint_needs_the_taps_it_was_trained_with(models):
    _, _, path = models
    # Their default taps (2..23) do not exist in a 4-layer CLIP: a clear error naming the flag.
    with pytest.raises(ValueError, match="--clip_layers"):
        MaskCLIP.from_checkpoint(str(path))


def test_a_foreign_tensor_is_named(models, tmp_path):
    theirs, _, _ = models
    state = dict(theirs.state_dict(), **{"aggregator.extra_head.weight": torch.zeros(2)})
    path = tmp_path / "extra.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="aggregator.extra_head.weight"):
        MaskCLIP.from_checkpoint(str(path), clip_layers=TAPS)


def openai_archive(path, seed=3):
    """A CLIP in OpenAI's published format: a traced TorchScript archive of fp16 weights whose
    state dict carries input_resolution, context_length and vocab_size beside the weights."""
    import clip.model

    torch.manual_seed(seed)
    model = clip.model.CLIP(**SMALL_CLIP).eval()
    randomise(model, seed)
    for name, key in (("input_resolution", "image_resolution"), ("context_length", "context_length"),
                      ("vocab_size", "vocab_size")):
        if hasattr(model, name):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(SMALL_CLIP[key]))
    clip.model.convert_weights(model)
    image, text = torch.zeros(1, 3, 224, 224, dtype=torch.half), torch.zeros(1, 77, dtype=torch.long)
    torch.jit.trace(model, (image, text), check_trace=False).save(str(path))
    return model


def small_clip_setting(state_dict, prefix=""):
    from imdlbenco_maskclip.model_zoo.maskclip import load_setting

    setting = load_setting("vitl14_mae")
    setting.update(name="small clip", clip=openai_clip_config(state_dict, prefix), clip_layers=[0, 1, 2, 3, 3, 3, 3])
    return setting


def test_openai_archive_gives_the_image_embedding_of_openai_clip(tmp_path):
    import clip

    path = tmp_path / "ViT-S-32.pt"
    openai_archive(path)
    reference, _ = clip.load(str(path), device="cpu", jit=False)
    state = dict(torch.jit.load(str(path)).state_dict())
    ours = MaskCLIP(model_setting=small_clip_setting(state), image_size=64, clip_pretrained=str(path),
                    pixel_pretrained="none")
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert relative_error(ours.clip.encode_image(image), reference.encode_image(image)) <= 1e-5
    # the same weights as a plain state dict with OpenAI's key names
    plain = tmp_path / "ViT-S-32-state.pth"
    torch.save({k: v for k, v in reference.state_dict().items()}, plain)
    again = MaskCLIP(model_setting=small_clip_setting(state), image_size=64, clip_pretrained=str(plain),
                     pixel_pretrained="none")
    assert all(torch.equal(a, b) for a, b in zip(again.clip.state_dict().values(), ours.clip.state_dict().values()))


def test_openai_file_with_a_tensor_too_many_or_missing_is_named(tmp_path):
    import clip.model

    state = clip.model.CLIP(**SMALL_CLIP).state_dict()
    setting = small_clip_setting(state)
    extra, missing = tmp_path / "extra.pth", tmp_path / "missing.pth"
    torch.save(dict(state, **{"visual.extra_proj": torch.zeros(3)}), extra)
    torch.save({k: v for k, v in state.items() if k != "ln_final.bias"}, missing)
    for path, key in ((extra, "visual.extra_proj"), (missing, "ln_final.bias")):
        with pytest.raises(WeightSourceError, match=f"--clip_pretrained.*{key}"):
            MaskCLIP(model_setting=setting, image_size=64, clip_pretrained=str(path), pixel_pretrained="none")


def mae_release(pixel_encoder, seed=5):
    """A state dict laid out like mae_pretrain_vit_base.pth's ['model']: class-token row in the
    14 x 14 position table, a final norm, no relative positions."""
    generator = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(value.shape, generator=generator) * 0.02
             for key, value in pixel_encoder.state_dict().items() if "rel_pos" not in key}
    dim = state["pos_embed"].shape[-1]
    state.update({"cls_token": torch.randn(1, 1, dim, generator=generator),
                  "norm.weight": torch.ones(dim), "norm.bias": torch.zeros(dim)})
    return state


def test_mae_release_loads_as_their_side_network_loads_it(models, tmp_path):
    theirs, ours, _ = models
    mae = mae_release(ours.pixel_encoder)
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": mae}, path)
    reference = build_authors_maskclip(clip_arch=SMALL_CLIP, mae_state_dict=mae, resolution=SIZE,
                                       selected_layers=[0, 1, 2, 3, 3, 3, 3])
    setting = small_clip_setting(theirs.state_dict(), "clip.") | {"name": "vitl14_mae"}
    loaded = MaskCLIP(model_setting=setting, image_size=SIZE, clip_pretrained="none", pixel_pretrained=str(path))
    theirs_mapped = authors_checkpoint_filter(reference.state_dict())
    for key, value in loaded.pixel_encoder.state_dict().items():
        their_value = theirs_mapped[f"pixel_encoder.{key}"]
        assert torch.equal(value, their_value) or ("rel_pos" in key and not value.any() and not their_value.any()), key

    torch.save({"model": dict(mae, **{"decoder_embed.weight": torch.zeros(2)})}, path)
    with pytest.raises(WeightSourceError, match="--pixel_pretrained.*decoder_embed.weight"):
        MaskCLIP(model_setting=setting, image_size=SIZE, clip_pretrained="none", pixel_pretrained=str(path))


@pytest.fixture(scope="module")
def authors_checkpoint_at_64(tmp_path_factory):
    """(their model, path): their model with a small CLIP at 64 px, saved as their train.py saves
    it, with the flags their argparser gives to `benco-maskclip`'s reading."""
    import argparse

    theirs = build_authors_maskclip(clip_arch=SMALL_CLIP, resolution=64, selected_layers=[0, 1, 2, 3, 3, 3, 3])
    randomise(theirs, seed=7)
    path = tmp_path_factory.mktemp("authors64") / "MaskCLIP_sd15.pth"
    args = argparse.Namespace(exp_name="MaskCLIP_sd15", model="MaskCLIP", if_predict_label=True, image_size=64,
                              if_padding=False, if_resizing=True, edge_mask_width=7, data_path="nebula/OpenSDI_train",
                              train_split_name="sd15", test_split_name="sd15", batch_size=16, epochs=50, lr=1e-4,
                              weight_decay=0.05, device="cuda", seed=42, world_size=1)
    torch.save({"model": theirs.state_dict(), "optimizer": {}, "epoch": 4, "scaler": {}, "args": args}, path)
    return theirs.eval(), path


def four_image_test_set(folder):
    """A BenCo test JSON {"four": list} over two real and two partly edited 80 x 80 images."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(9)
    entries = []
    for index in range(4):
        image = folder / f"tp_{index}.png"
        Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(image)
        if index < 2:
            entries.append([str(image), "Negative"])
            continue
        mask = np.zeros((80, 80), np.uint8)
        mask[10:40, 20:70] = 255
        Image.fromarray(mask).save(folder / f"gt_{index}.png")
        entries.append([str(image), str(folder / f"gt_{index}.png")])
    (folder / "four.json").write_text(json.dumps(entries))
    (folder / "test_sets.json").write_text(json.dumps({"four": str(folder / "four.json")}))
    return folder / "test_sets.json"


def test_their_checkpoint_goes_through_test_test_robust_and_predict(authors_checkpoint_at_64, tmp_path):
    import json

    import numpy as np
    from PIL import Image

    theirs, path = authors_checkpoint_at_64
    common = ["--checkpoint_path", str(path), "--clip_layers", TAPS, "--device", "cpu", "--num_workers", "0"]
    evaluation = ["--test_data_path", str(four_image_test_set(tmp_path)), "--test_batch_size", "4"]

    log = run_cli(["test", *common, *evaluation, "--output_dir", str(tmp_path / "test")])
    assert "authors' train.py" in log
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())["splits"]["four"]
    assert metrics["n_images"] == 4 and metrics["image_auc"] is not None  # P(fake) is a score

    run_cli(["test-robust", *common, *evaluation, "--blur_kernels", "5", "--jpeg_qualities", "70",
             "--output_dir", str(tmp_path / "robust")])
    rows = json.loads((tmp_path / "robust" / "robustness.json").read_text())["rows"]
    assert {row["perturbation"] for row in rows} >= {"gaussian_blur", "jpeg"}

    # predict on a 64 x 64 photo (no resize): its mask is their model's on the same pixels
    pixels = np.random.default_rng(8).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    run_cli(["predict", *common, "--output_dir", str(tmp_path / "predict"), str(tmp_path / "photo.png")])
    mask = np.asarray(Image.open(tmp_path / "predict" / "masks" / "photo.png")).astype(float)
    image = torch.from_numpy(pixels).permute(2, 0, 1).float()[None] / 255
    image = (image - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out, _ = authors_forward(theirs, image=image, mask=torch.zeros(1, 1, 64, 64), label=torch.zeros(1).long(),
                                 edge_mask=torch.zeros(1, 1, 64, 64))
    assert np.abs(mask - out["pred_mask"][0, 0].numpy() * 255).max() <= 1.0
    assert mask.std() > 1.0  # not a flat mask that any model would match


def test_their_checkpoint_without_the_taps_it_needs_is_one_clear_line(authors_checkpoint_at_64, tmp_path, capsys):
    from imdlbenco_maskclip.cli import main

    _, path = authors_checkpoint_at_64
    assert main(["test", "--checkpoint_path", str(path), "--device", "cpu", "--num_workers", "0",
                 "--test_data_path", str(four_image_test_set(tmp_path)), "--output_dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "--checkpoint_path" in error and "--clip_layers" in error and "Traceback" not in error
