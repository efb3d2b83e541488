"""Our MaskCLIP against the authors' code: same weights and pixels, same outputs and gradients.

Needs ``../shared/reference/authors-maskclip`` beside the project (or its path in
``MASKCLIP_AUTHORS_CODE``) and the ``openai-clip`` package (test extras). Without them the file
skips with the reason; under ``CI=true`` (how CI runs the suite) it fails instead, so CI cannot
pass without these tests having run. Their model runs with a small CLIP (``SMALL_CLIP``) at
256 px, so the CLIP resize, the window padding (16 x 16 tokens in windows of 14) and the
position resampling (14 x 14 -> 16 x 16) all take part; their side network is the full ViT-B.
"""
import os
from pathlib import Path

import pytest
import torch
from conftest import import_file, parity_reference_missing, through_test_robust_and_predict

from imdlbenco_maskclip.errors import CheckpointError
from imdlbenco_maskclip.model_zoo.maskclip import MaskCLIP, WeightSourceError
from imdlbenco_maskclip.model_zoo.maskclip.maskclip import (IMAGENET_MEAN, IMAGENET_STD, VSA,
                                                            authors_checkpoint_filter, openai_clip_config)
from imdlbenco_maskclip.model_zoo.maskclip.pretrained import OPENAI_MEAN, OPENAI_STD

AUTHORS_CODE = Path(os.environ.get("MASKCLIP_AUTHORS_CODE",
                                   Path(__file__).resolve().parents[2] / "shared" / "reference" / "authors-maskclip"))


if not (AUTHORS_CODE / "authors_reference.py").is_file():
    parity_reference_missing(f"the authors' code is not at {AUTHORS_CODE} (set MASKCLIP_AUTHORS_CODE)")
# Imported first: where setuptools no longer ships pkg_resources, it stands in for what openai-clip imports.
# Imported from its file under a name of its own: the NFA-ViT parity test's reference module is
# also called authors_reference, and the first one imported would shadow the other.
authors_reference = import_file(AUTHORS_CODE / "authors_reference.py", "authors_reference_maskclip")

try:
    import clip  # noqa: F401
except ImportError:
    parity_reference_missing("openai-clip is not installed (pip install -e '.[test]')")
SMALL_CLIP, authors_forward = authors_reference.SMALL_CLIP, authors_reference.authors_forward
build_authors_maskclip = authors_reference.build_authors_maskclip

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


def batch(seed=1, size=SIZE):
    """The same pixels, normalised as each pipeline does: theirs with CLIP's statistics, BenCo's with ImageNet's."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(2, 3, size, size, generator=generator)

    def normalise(mean, std):
        return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    top, bottom, left, right = (size * edge // 256 for edge in (40, 150, 60, 200))
    mask = torch.zeros(2, 1, size, size)
    mask[0, :, top:bottom, left:right] = 1
    edge_mask = torch.zeros_like(mask)
    edge_mask[0, :, top - 3:top + 3, left:right] = 1
    edge_mask[0, :, bottom - 3:bottom + 3, left:right] = 1
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


def our_forward(model, **batch):
    """Our forward, plus the raw detection logits [B, 2] (real, fake) whose softmax is ``pred_label``."""
    captured = []
    detection_logits = model._detection_logits
    model._detection_logits = lambda *args: captured.append(detection_logits(*args)) or captured[-1]
    try:
        out = model(**batch)
    finally:
        del model._detection_logits
    return out, captured[-1]


def forward_and_backward(models, training: bool, seed: int = 0, size: int = SIZE):
    """One forward and backward of each model on the same pixels, each from the same random state.

    -> (their output, their logits, our output, our logits, their gradients, our gradients),
    the gradients by our parameter names. In training mode dropout and drop-path draw their
    masks; both models draw them in the same order and shapes (drop-path twice per pixel
    block, then the mask head's dropout, then VSA's), so the same seed gives the same masks.
    """
    theirs, ours, _ = models
    their_batch, our_batch = batch(size=size)
    results = []
    for model, run, model_batch in ((theirs, authors_forward, their_batch), (ours, our_forward, our_batch)):
        model.train(training).zero_grad()
        torch.manual_seed(seed)
        try:
            out, logits = run(model, **model_batch)
            out["backward_loss"].backward()
        finally:
            model.eval()
        results.append((out, logits))
    (their_out, their_logits), (our_out, our_logits) = results
    their_grads = authors_checkpoint_filter({name: p.grad for name, p in theirs.named_parameters()
                                             if p.grad is not None and not name.startswith("clip.")})
    our_grads = {name: p.grad for name, p in ours.named_parameters() if p.requires_grad}
    return their_out, their_logits, our_out, our_logits, their_grads, our_grads


@pytest.fixture(scope="module")
def passes(models):
    """Eval mode (no dropout, no drop-path)."""
    return forward_and_backward(models, training=False)


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


@pytest.fixture(scope="module")
def models_at_64(authors_checkpoint_at_64):
    """(theirs, ours, path) at 64 px, ours loaded from their checkpoint: 16 times cheaper per pass."""
    theirs, path = authors_checkpoint_at_64
    return theirs, MaskCLIP.from_checkpoint(str(path), clip_layers=TAPS).eval(), path


def assert_same_outputs(passes):
    their_out, their_logits, our_out, our_logits, _, _ = passes
    assert their_logits.shape == our_logits.shape == (2, 2)
    assert relative_error(our_logits, their_logits) <= 1e-5
    assert relative_error(our_out["pred_mask"], their_out["pred_mask"]) <= 1e-5
    assert relative_error(our_out["pred_label"], their_logits.softmax(-1)[:, 1]) <= 1e-5
    assert torch.equal(our_out["pred_label"] > 0.5, their_out["pred_label"].bool())  # their argmax
    for ours_name, their_name in (("ce_loss", "loss_ce"), ("bce_loss", "loss_bce"), ("edge_loss", "loss_edge"),
                                  ("total_loss", "combined_loss")):
        assert relative_error(our_out["visual_loss"][ours_name], their_out["visual_loss"][their_name]) <= 1e-5


def assert_same_gradients(models, passes):
    _, ours, _ = models
    _, _, _, _, their_grads, our_grads = passes
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


def test_forward_matches_their_logits_outputs_and_losses(passes):
    their_out, their_logits, _, _, _, _ = passes
    # weights random enough that the outputs are not trivially alike
    assert their_logits.softmax(-1)[:, 1].std() > 1e-3 and their_out["pred_mask"].std() > 1e-2
    assert_same_outputs(passes)


def test_gradients_match_theirs_for_every_trainable_tensor(models, passes):
    assert_same_gradients(models, passes)


def test_training_mode_matches_theirs_with_dropout_and_drop_path(models_at_64):
    """Dropout 0.1 in the mask head and VSA, drop-path up to 0.1 in the pixel encoder, at 64 px."""
    training_passes = forward_and_backward(models_at_64, training=True, seed=11, size=64)
    assert_same_outputs(training_passes)
    assert_same_gradients(models_at_64, training_passes)
    # The random masks change the outputs: the comparison sees dropout and drop-path act.
    theirs = models_at_64[0]
    with torch.no_grad():
        without_dropout = authors_forward(theirs, **batch(size=64)[0])
    assert relative_error(training_passes[0]["pred_mask"], without_dropout[0]["pred_mask"]) > 1e-3
    assert relative_error(training_passes[1], without_dropout[1]) > 1e-3


def test_vsa_starts_from_their_initialisation():
    """Their VSA is ``nn.MultiheadAttention``: xavier-uniform over the stacked [3D, D] q/k/v
    weight, zero q/k/v and output biases. ``nn.Linear``'s init would give q/k/v weights an 18%
    smaller spread and biases up to 1/sqrt(D)."""
    dim, embed_dim = 1024, 768  # ViT-L/14's vision and text widths
    torch.manual_seed(0)
    their_module = authors_reference._import_authors().CLSAttentionAggregator(
        feature_dim=dim, out_dim=embed_dim, num_heads=8, num_layers=1, dropout_rate=0.1)
    theirs = authors_checkpoint_filter({f"cls_aggregator.{key}": value
                                        for key, value in their_module.state_dict().items()})
    ours = {f"vsa.{key}": value for key, value in VSA(dim, embed_dim, num_heads=8, dropout=0.1).state_dict().items()}
    assert set(ours) == set(theirs)
    for key, their_value in theirs.items():
        our_value = ours[key]
        if their_value.std() == 0:  # zero biases, LayerNorm's ones and zeros
            assert torch.equal(our_value, their_value), key
        else:  # one random draw each: the same distribution, not the same values
            assert our_value.std().item() == pytest.approx(their_value.std().item(), rel=0.02), key
            assert our_value.abs().max().item() == pytest.approx(their_value.abs().max().item(), rel=0.02), key
    bound = (6 / (dim + 3 * dim)) ** 0.5  # xavier-uniform of the stacked [3D, D] weight
    stacked = torch.cat([ours[f"vsa.attn.{name}_proj.weight"] for name in ("q", "k", "v")])
    assert 0.99 * bound < stacked.abs().max() <= bound
    assert stacked.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.01)


def test_mask_loss_departs_from_theirs_only_where_the_sigmoid_saturates(models_at_64):
    """Theirs is BCELoss(sigmoid(x)) with log clamped at -100; ours BCE with logits. Where the
    fp32 sigmoid rounds to 1 (logit above about 17) a real pixel costs them 100 with zero
    gradient, and us the logit, with gradient 1 per pixel. Below that the two agree (the
    forward and gradient tests above, on unsaturated logits)."""
    theirs, ours, _ = models_at_64
    their_batch, our_batch = batch(size=64)
    real_share = (our_batch["mask"] == 0).float().mean().item()
    shift = 30.0  # every mask logit far into saturation: 30 plus the model's order-one output
    results = []
    for model, bias, model_batch in ((theirs, theirs.aggregator.mask_decoder.predict.bias, their_batch),
                                     (ours, ours.mask_head.predict.bias, our_batch)):
        original = bias.detach().clone()
        with torch.no_grad():
            bias += shift
        try:
            out = model(**model_batch)
            bce = out["visual_loss"]["loss_bce" if model is theirs else "bce_loss"]
            gradient, = torch.autograd.grad(bce, bias)
        finally:
            with torch.no_grad():
                bias.copy_(original)
        assert out["pred_mask"].min() == 1.0  # saturated in fp32
        results.append((bce.item(), gradient.item()))
    (their_loss, their_gradient), (our_loss, our_gradient) = results
    assert their_loss == pytest.approx(100 * real_share, rel=1e-5) and their_gradient == 0.0
    assert 10 * real_share < our_loss < 50 * real_share  # the logits themselves, about 30
    assert our_gradient == pytest.approx(real_share, rel=1e-4)  # a mean over 8192 pixels in fp32


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


MAE_UNUSED = ("cls_token", "norm.weight", "norm.bias")  # no place in the side network, ours or theirs


def mae_release(seed=5):
    """``mae_pretrain_vit_base.pth``'s ``['model']`` as MAE publishes it, written from MAE's ViT-B/16
    encoder (timm's key names), not from our model: class token, 1 + 14 x 14 positions, twelve
    blocks, final norm; no relative positions, no decoder."""
    dim, hidden = 768, 3072
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, 1 + 14 * 14, dim),
              "patch_embed.proj.weight": (dim, 3, 16, 16), "patch_embed.proj.bias": (dim,),
              "norm.weight": (dim,), "norm.bias": (dim,)}
    for block in range(12):
        for name, shape in (("norm1.weight", (dim,)), ("norm1.bias", (dim,)),
                            ("attn.qkv.weight", (3 * dim, dim)), ("attn.qkv.bias", (3 * dim,)),
                            ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
                            ("norm2.weight", (dim,)), ("norm2.bias", (dim,)),
                            ("mlp.fc1.weight", (hidden, dim)), ("mlp.fc1.bias", (hidden,)),
                            ("mlp.fc2.weight", (dim, hidden)), ("mlp.fc2.bias", (dim,))):
            shapes[f"blocks.{block}.{name}"] = shape
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) * 0.02 for key, shape in shapes.items()}


def test_mae_release_loads_as_their_side_network_loads_it(models, tmp_path):
    theirs, _, _ = models
    mae = mae_release()
    assert len(mae) == 150
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": mae}, path)
    reference = build_authors_maskclip(clip_arch=SMALL_CLIP, mae_state_dict=mae, resolution=SIZE,
                                       selected_layers=[0, 1, 2, 3, 3, 3, 3])
    setting = small_clip_setting(theirs.state_dict(), "clip.") | {"name": "vitl14_mae"}
    loaded = MaskCLIP(model_setting=setting, image_size=SIZE, clip_pretrained="none", pixel_pretrained=str(path))
    ours = loaded.pixel_encoder.state_dict()
    # every tensor of the file that has a place arrived under its own name
    assert all(torch.equal(ours[key], value) for key, value in mae.items() if key not in MAE_UNUSED)
    theirs_mapped = authors_checkpoint_filter(reference.state_dict())
    for key, value in ours.items():
        their_value = theirs_mapped[f"pixel_encoder.{key}"]
        assert torch.equal(value, their_value) or ("rel_pos" in key and not value.any() and not their_value.any()), key


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


def test_their_checkpoint_goes_through_test_test_robust_and_predict(authors_checkpoint_at_64, tmp_path,
                                                                     cli_in_this_process):
    import numpy as np

    theirs, path = authors_checkpoint_at_64
    common = ["--checkpoint_path", str(path), "--clip_layers", TAPS, "--device", "cpu", "--num_workers", "0"]
    evaluation = ["--test_data_path", str(four_image_test_set(tmp_path)), "--test_batch_size", "4"]
    log, image, mask = through_test_robust_and_predict(cli_in_this_process, common, evaluation, tmp_path)
    assert "authors' train.py" in log
    image = (image - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out, _ = authors_forward(theirs, image=image, mask=torch.zeros(1, 1, 64, 64), label=torch.zeros(1).long(),
                                 edge_mask=torch.zeros(1, 1, 64, 64))
    assert np.abs(mask - out["pred_mask"][0, 0].numpy() * 255).max() <= 1.0


def test_their_checkpoint_without_the_taps_it_needs_is_one_clear_line(authors_checkpoint_at_64, tmp_path, capsys):
    from imdlbenco_maskclip.cli import main

    _, path = authors_checkpoint_at_64
    assert main(["test", "--checkpoint_path", str(path), "--device", "cpu", "--num_workers", "0",
                 "--test_data_path", str(four_image_test_set(tmp_path)), "--output_dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "--checkpoint_path" in error and "--clip_layers" in error and "Traceback" not in error
