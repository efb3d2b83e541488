"""Our NFA-ViT against the authors' code: same weights and pixels, same Top-k picks, outputs,
losses and gradients, in eval and in train mode.

Needs ``../shared/reference/authors-nfavit`` beside the project (or its path in
``NFAVIT_AUTHORS_CODE``) and ``einops`` (test extras). Without them the tests skip, saying
why; under CI (``CI=true``) that is a failure. Their model runs at 128 px: every stage then has
4 x 4 keys, so each fixed sparse group holds 4 of them and each query's Top-k picks 4 of 16;
at 64 px a group would hold one key and its attention would have nothing to weigh.
"""
import argparse
import os
from pathlib import Path

import pytest
import torch
from conftest import import_file, parity_reference_missing, through_test_robust_and_predict

from imdlbenco_maskclip.engine.models import load_model
from imdlbenco_maskclip.model_zoo.nfa_vit import NFA_ViT, authors_checkpoint_filter
from imdlbenco_maskclip.model_zoo.nfa_vit.nfa_vit import TOPK_RATIO

AUTHORS_CODE = Path(os.environ.get("NFAVIT_AUTHORS_CODE",
                                   Path(__file__).resolve().parents[2] / "shared" / "reference" / "authors-nfavit"))


def _reference_or_skip():
    missing = [what for what, ok in (
        (f"the authors' code at {AUTHORS_CODE} (set NFAVIT_AUTHORS_CODE)", (AUTHORS_CODE / "authors_reference.py").is_file()),
        ("einops (pip install -e '.[test]')", __import__("importlib").util.find_spec("einops") is not None)) if not ok]
    if missing:
        parity_reference_missing("needs " + " and ".join(missing))


_reference_or_skip()
# Under a name of its own: MaskCLIP's parity test imports another authors_reference.
_reference = import_file(AUTHORS_CODE / "authors_reference.py", "authors_reference_nfavit")
_random_parts, build_authors_nfavit = _reference._random_parts, _reference.build_authors_nfavit

SIZE = 128
# Per batch size, an image seed whose Top-k picks are no near-ties (see _least_attended_gap).
IMAGE_SEEDS = {1: 3, 3: 1}


def relative_error(ours, theirs):
    return ((ours.double() - theirs.double()).norm() / theirs.double().norm()).item()


def randomise(model, seed):
    """Every floating tensor drawn anew, so that no path rests on an init of zeros or ones (the
    decoder's gammas start at 1e-6, biases at 0). Matrices get fan-in scaling; vectors vary by
    0.1 around 0, or around 1 for a norm's gain and a BatchNorm's running variance.

    The noise branch's queries are 4 times larger: its blocks replace the tokens by the
    attention output (no skip), and with flat attention the tokens of a stage become nearly
    equal, so that the Top-k picks would be near-ties that rounding decides."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if tensor.ndim > 1:
                sharper = 4.0 if name.startswith("noise_backbone.") and name.endswith("attn.q.weight") else 1.0
                tensor.copy_(noise * sharper / tensor[0].numel() ** 0.5)
            else:
                around_one = name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "norm3.weight",
                                            "norm4.weight", "running_var")) or (
                    name.startswith("noise_extractor") and name.endswith("weight"))
                tensor.copy_((noise * 0.1 + 1.0).abs() if around_one else noise * 0.1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(theirs, ours, checkpoint, theirs as built): their model randomised and saved as their
    train.py saves it (BenCo's misc.save_model dict), ours read from that file."""
    theirs = build_authors_nfavit(seed=0)
    as_built = {key: value.clone() for key, value in theirs.state_dict().items()}
    randomise(theirs, seed=1)
    path = tmp_path_factory.mktemp("authors") / "checkpoint-199.pth"
    args = argparse.Namespace(model="NFA_ViT", np_pretrain_weights="./model_zoo/nfavit/noiseprint.pth",
                              seg_b0_pretrain_weights="./model_zoo/nfa_vit/segformer_b0_backbone_weights.pth",
                              seg_b2_pretrain_weights="./model_zoo/nfa_vit/segformer_b2_backbone_weights.pth",
                              image_size=512, if_resizing=True, batch_size=16, epochs=200, lr=2e-4, seed=42)
    torch.save({"model": theirs.state_dict(), "optimizer": {}, "epoch": 199, "scaler": {}, "args": args}, path)
    return theirs, load_model(str(path), "NFA_ViT"), path, as_built


def batch(size, seed):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(size, 3, SIZE, SIZE, generator=generator)
    mask = (torch.rand(size, 1, SIZE, SIZE, generator=generator) > 0.7).float()
    label = torch.arange(size) % 2
    return {"image": image, "mask": mask, "label": label}


def test_weight_files_of_their_classes_load_as_they_load_them(models, tmp_path):
    """The files their builder writes (Noiseprint++ layers, MiT-b0 with an RGB stem, MiT-b2, from
    their own classes) give our model the tensors theirs holds after its loading."""
    as_built = authors_checkpoint_filter(models[3])
    paths = {}
    for flag, state in zip(("np_pretrain_weights", "seg_b0_pretrain_weights", "seg_b2_pretrain_weights"),
                           _random_parts(None, seed=0)):
        paths[flag] = str(tmp_path / f"{flag}.pth")
        torch.save(state, paths[flag])
    ours = NFA_ViT(**paths)
    loaded = {key: value for key, value in ours.state_dict().items()
              if key.startswith(("noise_extractor.", "noise_backbone.", "image_backbone."))}
    assert loaded and all(torch.equal(value, as_built[key]) for key, value in loaded.items())


def test_checkpoint_of_their_train_py_loads_every_tensor(models):
    theirs, ours = models[:2]
    mapped = authors_checkpoint_filter(theirs.state_dict())
    own = ours.state_dict()
    assert set(mapped) == set(own)
    assert all(torch.equal(mapped[key], own[key]) for key in own)


def _run(model, inputs, training, seed):
    """One forward and backward -> (outputs, Top-k masks of the four noise stages, gradients)."""
    model.train(training)
    model.zero_grad()
    picked = {}
    hook = model.noise_backbone.register_forward_hook(lambda module, args, output: picked.update(masks=output))
    torch.manual_seed(seed)
    try:
        out = model(**inputs)
    finally:
        hook.remove()
    out["backward_loss"].backward()
    masks = picked["masks"]
    masks = masks[1] if isinstance(masks, tuple) else masks  # theirs returns (features, masks)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out, [mask.bool() for mask in masks], grads


def _least_attended_gap(ours, inputs, training, seed):
    """The smallest gap, over the four Top-k picks of a pass of ``ours``, between the last
    picked and the first unpicked attention score (logit) of a query: how far the picks are
    from a tie. Scores of order 10 carry rounding errors of about 1e-6 in fp32 (and their
    softmax weights relative ones of about 1e-7): a gap of 5e-5 orders the weights the same in
    any implementation."""
    stages = ours.noise_backbone.stages
    captured = {}
    hooks = [stage.blocks[-1].register_forward_pre_hook(
        lambda module, args, index=index: captured.__setitem__(index, args[:2])) for index, stage in enumerate(stages)]
    ours.train(training)
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            ours(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    gaps = []
    for index, stage in enumerate(stages):
        attn = stage.blocks[-1].attn
        q, k, _ = attn._heads(*captured[index])
        scores = (q @ k.transpose(-2, -1) * attn.scale).sort(dim=-1).values
        count = max(1, int(scores.shape[-1] * TOPK_RATIO))
        gaps.append((scores[..., count] - scores[..., count - 1]).min().item())
    return min(gaps)


@pytest.fixture
def statistics_kept(models):
    """Each test starts from the saved BatchNorm statistics, whatever ran before it."""
    saved = [{name: buffer.clone() for name, buffer in model.named_buffers()} for model in models[:2]]
    yield
    for model, buffers in zip(models[:2], saved):
        model.load_state_dict(buffers, strict=False)


@pytest.mark.usefixtures("statistics_kept")
@pytest.mark.parametrize("training,batch_size", [(False, 1), (False, 3), (True, 1), (True, 3)],
                         ids=["eval-batch1", "eval-batch3", "train-batch1", "train-batch3"])
def test_same_picks_outputs_losses_and_gradients(models, training, batch_size):
    theirs, ours = models[:2]
    inputs = batch(batch_size, seed=IMAGE_SEEDS[batch_size])
    statistics = {name: buffer.clone() for name, buffer in ours.named_buffers()}
    # No pick is a near-tie here, so both must pick the same keys exactly.
    assert _least_attended_gap(ours, inputs, training, seed=5) > 5e-5
    ours.load_state_dict(statistics, strict=False)  # a train-mode pass updated the BatchNorm statistics
    # Train mode: the same seed gives the same drop-path draws, in the same order (DnCNN, noise
    # branch, image branch) and the DnCNN's BatchNorm uses the batch's statistics in both.
    their_out, their_picks, their_grads = _run(theirs, inputs, training, seed=5)
    our_out, our_picks, our_grads = _run(ours, inputs, training, seed=5)
    assert len(our_picks) == 4
    for their_mask, our_mask in zip(their_picks, our_picks):
        assert torch.equal(their_mask, our_mask)

    assert their_out["pred_mask"].std() > 1e-2  # weights random enough that outputs differ
    assert relative_error(our_out["pred_mask"], their_out["pred_mask"]) <= 1e-5
    assert our_out["pred_label"].shape == (batch_size,)  # theirs squeezes a batch of one to a scalar
    assert relative_error(our_out["pred_label"], their_out["pred_label"].reshape(-1)) <= 1e-5
    for ours_name, their_name in (("seg_loss", "predict_mask_loss"), ("cls_loss", "predict_label_loss"),
                                  ("total_loss", "predict_loss")):
        assert relative_error(our_out["visual_loss"][ours_name], their_out["visual_loss"][their_name]) <= 1e-5

    # Nothing reaches their noise side or their two unused gammas: ours freezes them.
    assert not any(name.startswith(("noise_extractor.", "noise_backbone.")) for name in their_grads)
    assert not {"seg_decoder.gamma5", "seg_decoder.gamma6"} & set(their_grads)
    their_grads = authors_checkpoint_filter(their_grads)
    assert set(our_grads) == set(their_grads) == {name for name, p in ours.named_parameters() if p.requires_grad}
    worst = max((relative_error(our_grads[name], their_grads[name]), name) for name in our_grads)
    assert worst[0] <= 1e-4, worst


def test_their_checkpoint_goes_through_test_test_robust_and_predict(models, tmp_path, cli_in_this_process):
    """Every weight from the checkpoint: the weight files its args name do not exist here."""
    import numpy as np
    from test_nfavit_cli import four_images

    theirs, _, path, _ = models
    common = ["--checkpoint_path", str(path), "--image_size", "64", "--device", "cpu", "--num_workers", "0"]
    evaluation = ["--test_data_path", str(four_images(tmp_path)[1]), "--test_batch_size", "4"]
    log, image, mask = through_test_robust_and_predict(cli_in_this_process, common, evaluation, tmp_path)
    assert "--np_pretrain_weights none" in log  # nothing read but the checkpoint
    image = (image - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = theirs.eval()(image=image, mask=torch.zeros(1, 1, 64, 64), label=torch.zeros(1).long())
    assert np.abs(mask - out["pred_mask"][0, 0].numpy() * 255).max() <= 1.0
