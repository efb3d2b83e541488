"""MaskCLIP on the ``tiny`` setting: BenCo contract, trainable or frozen CLIP, ablations, weights, precision."""
import inspect
import types
import warnings

import pytest
import torch

import imdlbenco_maskclip  # noqa: F401  (registers MaskCLIP)
from imdlbenco_maskclip.model_zoo.maskclip import MaskCLIP, WeightSourceError, list_settings, load_setting
from imdlbenco_maskclip.model_zoo.maskclip.maskclip import (VCA, VSA, TVCA, ClassTokenMean, FixedPrompts, MaskHead,
                                                            PromptLearner)

IMAGE_SIZE = 64


def tiny(**overrides) -> MaskCLIP:
    torch.manual_seed(0)
    return MaskCLIP(model_setting="tiny", image_size=IMAGE_SIZE, **overrides)


def frozen_tiny(**overrides) -> MaskCLIP:
    """``tiny`` with its CLIP frozen, as the paper's settings have it."""
    torch.manual_seed(0)
    return MaskCLIP(model_setting=dict(load_setting("tiny"), train_clip=False), image_size=IMAGE_SIZE, **overrides)


def make_batch(batch_size: int = 2, size: int = IMAGE_SIZE) -> dict:
    generator = torch.Generator().manual_seed(1)
    mask = torch.zeros(batch_size, 1, size, size)
    mask[:, :, size // 4:size // 2, size // 4:size // 2] = 1.0
    mask[0] = 0.0  # one authentic image
    edge_mask = torch.nn.functional.max_pool2d(mask, 5, 1, 2) - (-torch.nn.functional.max_pool2d(-mask, 5, 1, 2))
    return {
        "image": torch.randn(batch_size, 3, size, size, generator=generator),
        "mask": mask,
        "label": (mask.flatten(1).amax(dim=1) > 0).long(),
        "edge_mask": edge_mask,
    }


def adam_steps(model: MaskCLIP, steps: int, lr: float = 1e-3) -> None:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    batch = make_batch()
    model.train()
    for _ in range(steps):
        model(**batch, if_predcit_label=True)["backward_loss"].backward()
        optimizer.step()
        optimizer.zero_grad()


def test_registered_in_benco_models():
    from IMDLBenCo.registry import MODELS

    assert MODELS.get("MaskCLIP") is MaskCLIP
    assert {"tiny", "vitl14_mae", "vitb32_mae", "openclip_vitl14_mae", "vitl14_dinov2", "vitl14_sam"} <= set(list_settings())


def test_constructor_arguments_are_benco_flags():
    """BenCo types flags by annotation: only str/int/float with defaults survive its parser."""
    parameters = list(inspect.signature(MaskCLIP.__init__).parameters.values())[1:]
    for parameter in parameters:
        assert parameter.annotation in (str, int, float), parameter.name
        assert parameter.default is not inspect.Parameter.empty, parameter.name
        assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, parameter.name


def test_benco_argparser_builds_the_model():
    from IMDLBenCo.training_scripts.utils import misc

    args = misc.create_argparser(MaskCLIP).parse_args(
        ["--model_setting", "tiny", "--use_vsa", "0", "--edge_weight", "1.5", "--image_size", "64"])
    assert (args.model_setting, args.use_vsa, args.edge_weight) == ("tiny", 0, 1.5)
    model = MaskCLIP(**vars(args))
    assert model.edge_weight == 1.5 and isinstance(model.vsa, ClassTokenMean)


@pytest.mark.parametrize("with_edge_mask", [True, False])
def test_forward_follows_benco_contract(with_edge_mask):
    model = tiny()
    batch = make_batch(batch_size=3)
    if not with_edge_mask:
        del batch["edge_mask"]
    out = model(**batch, if_predcit_label=True, shape=torch.tensor([[64, 64]] * 3), name=["a", "b", "c"])

    loss = out["backward_loss"]
    assert loss.ndim == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    terms = out["visual_loss"]
    assert ("edge_loss" in terms) == with_edge_mask
    assert torch.allclose(terms["total_loss"], loss)
    assert torch.allclose(sum(v for k, v in terms.items() if k != "total_loss"), loss)
    assert all(v.ndim == 0 for v in terms.values())

    pred_mask = out["pred_mask"]
    assert pred_mask.shape == (3, 1, IMAGE_SIZE, IMAGE_SIZE) and pred_mask.dtype == torch.float32
    assert pred_mask.min() >= 0 and pred_mask.max() <= 1
    pred_label = out["pred_label"]
    assert pred_label.shape == (3,) and pred_label.dtype == torch.float32
    # A probability, not a hard argmax: strictly inside (0, 1) for an untrained model.
    assert ((pred_label > 0) & (pred_label < 1)).all()
    assert out["visual_image"]["pred_mask"] is pred_mask
    loss.backward()


def test_edge_weight_scales_the_edge_term():
    batch = make_batch()
    losses = {weight: tiny(edge_weight=weight).eval()(**batch)["visual_loss"]["edge_loss"].item()
              for weight in (1.0, 20.0)}
    assert losses[20.0] == pytest.approx(20.0 * losses[1.0], rel=1e-5)


def test_only_tiny_trains_its_clip():
    # tiny's CLIP has no pretrained weights; every other setting's CLIP is pretrained and frozen.
    assert {name: load_setting(name)["train_clip"] for name in list_settings()} == {
        name: name == "tiny" for name in list_settings()}


def test_frozen_clip_stays_unchanged_while_everything_else_trains():
    model = frozen_tiny()
    clip_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert not any(p.requires_grad for p in model.clip.parameters())

    adam_steps(model, steps=3)

    for key, value in model.clip.state_dict().items():
        assert torch.equal(value, clip_before[key]), key
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, trainable_before[n])]
    assert unchanged == []
    for part in ("prompts.ctx", "fusions.", "vsa.", "tvca.", "mask_head.", "decoder.", "pixel_encoder."):
        assert any(name.startswith(part) for name in trainable_before), part


# What of tiny's CLIP stays frozen: parts that do not reach the outputs (a trainable tensor
# without gradient stalls DDP) and the word-embedding table.
TINY_CLIP_FROZEN = ("clip.token_embedding.", "clip.logit_scale", "clip.visual.ln_post.", "clip.visual.proj",
                    "clip.visual.transformer.resblocks.3.mlp.")


def test_tiny_trains_the_clip_parts_that_reach_the_outputs():
    model = tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {n for n in frozen if n.startswith("clip.")} == {
        n for n in before if n.startswith(TINY_CLIP_FROZEN)}
    assert frozen - {n for n in frozen if n.startswith("clip.")} == {
        n for n in before if n.endswith("attn.k_proj.bias")}  # no gradient by design, see Attention

    adam_steps(model, steps=3)

    # every trainable tensor moved (each got a gradient), CLIP's towers among them; the rest did not
    after = dict(model.named_parameters())
    assert [n for n in before if n not in frozen and torch.equal(after[n], before[n])] == []
    assert [n for n in frozen if not torch.equal(after[n], before[n])] == []
    for part in ("clip.visual.conv1.", "clip.visual.transformer.resblocks.0.", "clip.transformer.", "clip.ln_final."):
        assert any(n.startswith(part) for n in before if n not in frozen), part


def test_cosine_head_trains_tiny_clip_logit_scale():
    assert tiny(detection_head="cosine").clip.logit_scale.requires_grad
    assert not frozen_tiny(detection_head="cosine").clip.logit_scale.requires_grad


def test_train_mode_keeps_a_frozen_clip_in_eval():
    model = frozen_tiny()
    model.train()
    assert model.training and model.decoder.training and model.vsa.training
    assert not any(module.training for module in model.clip.modules())
    model.eval()
    assert not model.decoder.training
    trainable = tiny().train()
    assert all(module.training for module in trainable.clip.modules())


def count_text_tower_runs(model: MaskCLIP) -> list:
    runs = []
    model.clip.transformer.register_forward_hook(lambda *args: runs.append(1))
    return runs


def test_text_tower_runs_every_training_step_and_once_in_eval_while_frozen():
    model = frozen_tiny()
    runs = count_text_tower_runs(model)
    batch = make_batch()
    model.train()
    model(**batch)
    model(**batch)
    assert len(runs) == 2
    model.eval()
    with torch.no_grad():
        first = model(**batch)["pred_label"]
        second = model(**batch)["pred_label"]
    assert len(runs) == 3
    assert torch.equal(first, second)


def test_trainable_clip_has_no_text_cache():
    model = tiny().eval()
    runs = count_text_tower_runs(model)
    with torch.no_grad():
        model(**make_batch())
        model(**make_batch())
    assert len(runs) == 2
    # a step that changes only the text tower, not the prompt context, changes the text features
    with torch.no_grad():
        before = model._text_features()
        model.clip.ln_final.bias.add_(0.5)
        assert not torch.allclose(model._text_features(), before)


def test_text_cache_is_dropped_after_training():
    model = frozen_tiny().eval()
    with torch.no_grad():
        model(**make_batch())  # fills the cache
    adam_steps(model, steps=2, lr=1e-2)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model._text_features(), model._encode_prompts())


def test_text_cache_is_dropped_when_loading_a_state_dict():
    batch = make_batch()
    model, other = frozen_tiny().eval(), frozen_tiny().eval()
    with torch.no_grad():
        other.prompts.ctx.add_(1.0)
        model(**batch)  # fills the cache with the old prompts
        model.load_state_dict(other.state_dict())
        assert torch.allclose(model(**batch)["pred_label"], other(**batch)["pred_label"])


def test_grad_checkpointing_gives_the_same_gradients():
    batch = make_batch()
    grads = []
    for enabled in (0, 1):
        model = tiny(grad_checkpointing=enabled).train()
        torch.manual_seed(3)
        model(**batch)["backward_loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-6), name


def modules_of(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("window_size, grid", [(5, (8, 8)), (0, (6, 7)), (4, (8, 4))])
def test_rel_pos_block_matches_timm_sam_block(window_size, grid):
    """RelPosBlock folds the relative positions into SDPA; it must be timm's block, value for value."""
    from timm.models.vision_transformer_sam import Block
    from imdlbenco_maskclip.model_zoo.maskclip.pixel_encoders import RelPosBlock

    torch.manual_seed(0)
    kwargs = dict(dim=32, num_heads=4, window_size=window_size, use_rel_pos=True,
                  input_size=(window_size,) * 2 if window_size else grid)
    reference, ours = Block(**kwargs).eval(), RelPosBlock(**kwargs).eval()
    for parameter in reference.parameters():
        parameter.data.normal_(0.0, 0.2)  # rel_pos and biases start at zero: make them matter
    ours.load_state_dict(reference.state_dict())
    tokens = torch.randn(2, *grid, 32)
    outputs, grads = [], []
    for block in (reference, ours):
        x = tokens.clone().requires_grad_()
        out = block(x)
        out.square().sum().backward()
        outputs.append(out)
        grads.append([x.grad] + [p.grad for p in block.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for ours_grad, reference_grad in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours_grad, reference_grad, rtol=1e-4, atol=1e-5)


def test_prompt_learning_off_uses_fixed_prompts():
    model = tiny(prompt_learning=0)
    assert isinstance(model.prompts, FixedPrompts)
    assert not modules_of(model, PromptLearner)
    assert not any("ctx" in name for name, _ in model.named_parameters())
    assert isinstance(tiny().prompts, PromptLearner)
    model(**make_batch())["backward_loss"].backward()


def test_vsa_off_averages_the_class_tokens_without_attention():
    model = tiny(use_vsa=0)
    assert isinstance(model.vsa, ClassTokenMean) and not modules_of(model, VSA)
    assert isinstance(tiny().vsa, VSA)
    model(**make_batch())["backward_loss"].backward()
    assert model.vsa.proj.weight.grad.abs().sum() > 0
    cls_tokens = torch.randn(2, 3, model.vsa.proj.in_features)
    assert torch.allclose(model.vsa(cls_tokens), cls_tokens.mean(dim=1) @ model.vsa.proj.weight.t())


def test_vca_off_leaves_the_pixel_encoder_alone():
    model = tiny(use_vca=0).eval()
    assert not modules_of(model, VCA) and not hasattr(model, "fusions")
    assert len(tiny().fusions) == len(tiny().clip_layers)
    batch = make_batch()
    # Without VCA, CLIP's patch tokens cannot reach the mask: changing the CLIP tower changes
    # only the detection logits.
    with torch.no_grad():
        before = model(**batch)
        model.clip.visual.conv1.weight.mul_(2.0)
        after = model(**batch)
    assert torch.equal(before["pred_mask"], after["pred_mask"])
    assert not torch.equal(before["pred_label"], after["pred_label"])


def test_tvca_off_feeds_the_decoder_map_straight_to_the_mask_head():
    model = tiny(use_tvca=0)
    assert not modules_of(model, TVCA) and isinstance(model.mask_head, MaskHead)
    out = model(**make_batch())
    assert out["pred_mask"].shape == (2, 1, IMAGE_SIZE, IMAGE_SIZE)
    out["backward_loss"].backward()
    assert model.prompts.ctx.grad is not None  # the detection head still trains the prompts


def test_tvca_adds_one_text_conditioned_vector_to_every_pixel():
    model = tiny().eval()
    feature_map = torch.randn(2, model.tvca.text_proj.out_features, 8, 8)
    with torch.no_grad():
        shifted = model.tvca(feature_map, model._text_features()[1]) - feature_map
    assert torch.allclose(shifted, shifted[:, :, :1, :1].expand_as(shifted), atol=1e-6)
    assert not torch.allclose(shifted[0], shifted[1])  # the attended vector depends on the image


def test_detection_heads():
    batch = make_batch()
    authors, cosine = tiny().eval(), tiny(detection_head="cosine").eval()
    with torch.no_grad():
        text = authors._text_features()
        embedding = authors.vsa(torch.randn(4, len(authors.clip_layers), authors.vsa.proj.in_features) * 50)
        assert torch.allclose(authors._detection_logits(embedding, text), embedding @ text.t())
        bounded = cosine._detection_logits(embedding, text)
        assert bounded.abs().max() <= cosine.clip.logit_scale.exp() + 1e-4
        assert torch.isfinite(cosine(**batch)["backward_loss"])
    with pytest.raises(ValueError, match="--detection_head"):
        tiny(detection_head="linear")


def test_clip_layers_flag_overrides_the_setting():
    model = tiny(clip_layers="3,3,0")
    assert model.clip_layers == [3, 3, 0]
    assert model(**make_batch())["pred_mask"].shape == (2, 1, IMAGE_SIZE, IMAGE_SIZE)
    for bad in ("1,x,3", "1,2,9"):
        with pytest.raises(ValueError, match="--clip_layers"):
            tiny(clip_layers=bad)


@pytest.mark.parametrize("flag", ["prompt_learning", "use_vsa", "use_vca", "use_tvca", "grad_checkpointing"])
def test_switches_reject_values_other_than_0_and_1(flag):
    with pytest.raises(ValueError, match=f"--{flag} must be 0 .* or 1"):
        MaskCLIP(model_setting="tiny", image_size=IMAGE_SIZE, **{flag: 2})


def test_unknown_setting_lists_the_available_ones():
    with pytest.raises(ValueError, match="--model_setting: unknown setting 'vitl14'; available: .*tiny.*vitl14_mae"):
        MaskCLIP(model_setting="vitl14", image_size=IMAGE_SIZE)


def test_bad_image_size_and_loss_weight_are_rejected():
    with pytest.raises(ValueError, match="--image_size must be a positive multiple of .* 16"):
        MaskCLIP(model_setting="tiny", image_size=72)
    with pytest.raises(ValueError, match="--edge_weight must be a non-negative number"):
        MaskCLIP(model_setting="tiny", image_size=IMAGE_SIZE, edge_weight=-1.0)


def test_clip_weights_load_from_a_state_dict_file(tmp_path):
    source = tiny()
    with torch.no_grad():
        for parameter in source.clip.parameters():
            parameter.add_(torch.randn_like(parameter))
    path = tmp_path / "tiny_clip.pt"
    torch.save(source.clip.state_dict(), path)

    loaded = frozen_tiny(clip_pretrained=str(path))
    for key, value in source.clip.state_dict().items():
        assert torch.equal(loaded.clip.state_dict()[key], value), key
    assert not any(p.requires_grad for p in loaded.clip.parameters())


def mae_style_checkpoint(encoder) -> dict:
    """The tiny encoder's weights laid out like the MAE release: class token, final norm, no rel-pos."""
    weights = {k: v for k, v in encoder.state_dict().items() if "rel_pos" not in k}
    width = weights["pos_embed"].shape[-1]
    weights.update({"cls_token": torch.zeros(1, 1, width), "norm.weight": torch.ones(width),
                    "norm.bias": torch.zeros(width)})
    return {"model": weights}


def test_pixel_weights_load_from_an_mae_style_file(tmp_path, capsys):
    source = tiny()
    with torch.no_grad():
        for parameter in source.pixel_encoder.parameters():
            parameter.add_(torch.randn_like(parameter))
    path = tmp_path / "tiny_mae.pth"
    torch.save(mae_style_checkpoint(source.pixel_encoder), path)

    loaded = tiny(pixel_pretrained=str(path))
    for key, value in source.pixel_encoder.state_dict().items():
        if "rel_pos" not in key:
            assert torch.equal(loaded.pixel_encoder.state_dict()[key], value), key
        else:
            assert not loaded.pixel_encoder.state_dict()[key].any(), key  # new to MAE: zero
    assert "tiny_mae.pth" in capsys.readouterr().out

    # At another input size the pretrained table is kept and resampled to the grid on each forward.
    larger = MaskCLIP(model_setting="tiny", image_size=2 * IMAGE_SIZE, pixel_pretrained=str(path))
    encoder = larger.pixel_encoder
    assert torch.equal(encoder.pos_embed, source.pixel_encoder.pos_embed)
    image = torch.randn(1, 3, 2 * IMAGE_SIZE, 2 * IMAGE_SIZE)
    with torch.no_grad():
        positions = encoder.embed(image)[0] - encoder.patch_embed(image)
    table = source.pixel_encoder.pos_embed[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(table, size=(8, 8), mode="bicubic", align_corners=False)
    assert torch.allclose(positions, expected.permute(0, 2, 3, 1).expand_as(positions), atol=1e-5)


def test_pixel_weight_file_is_read_strictly(tmp_path):
    checkpoint = mae_style_checkpoint(tiny().pixel_encoder)
    path = tmp_path / "mae.pth"
    torch.save({"model": dict(checkpoint["model"], **{"decoder_pred.weight": torch.zeros(2)})}, path)
    with pytest.raises(WeightSourceError, match="--pixel_pretrained.*decoder_pred.weight"):
        tiny(pixel_pretrained=str(path))
    torch.save({"model": {k: v for k, v in checkpoint["model"].items() if k != "blocks.1.mlp.fc2.bias"}}, path)
    with pytest.raises(WeightSourceError, match="--pixel_pretrained.*blocks.1.mlp.fc2.bias"):
        tiny(pixel_pretrained=str(path))


@pytest.mark.parametrize("flag", ["clip_pretrained", "pixel_pretrained"])
def test_missing_weight_file_names_the_file_and_the_flag(tmp_path, flag):
    missing = tmp_path / "not_downloaded_weights.pth"
    with pytest.raises(WeightSourceError, match=f"--{flag}: weight file .*not_downloaded_weights.pth"):
        tiny(**{flag: str(missing)})


def test_weights_that_do_not_fit_raise_a_clear_error(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightSourceError, match="--pixel_pretrained: weights .*wrong.pth.* do not fit"):
        tiny(pixel_pretrained=str(path))


def skip_if_cached(repo_id: str, filename: str):
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, filename), str):
        pytest.skip(f"{repo_id} is in the local hub cache, so offline loading would succeed")


def test_pixel_hub_tag_offline_raises_a_clear_error():
    skip_if_cached("timm/vit_base_patch16_224.mae", "model.safetensors")
    with pytest.raises(WeightSourceError, match="--pixel_pretrained: cannot fetch timm weights "
                                                "'vit_base_patch16_224.mae'"):
        tiny(pixel_pretrained="vit_base_patch16_224.mae")
    # The paper setting's default source: the error also says where the MAE release lives.
    with pytest.raises(WeightSourceError, match="'vit_base_patch16_224.mae'.*download mae_pretrain_vit_base.pth "
                                                "from https://dl.fbaipublicfiles.com/mae/pretrain/"):
        MaskCLIP(model_setting="vitb32_mae", image_size=IMAGE_SIZE, clip_pretrained="none")


def test_clip_hub_tag_offline_raises_a_clear_error():
    skip_if_cached("timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin")
    skip_if_cached("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors")
    with pytest.raises(WeightSourceError, match="--clip_pretrained: cannot fetch open_clip weights "
                                                "ViT-B-32-quickgelu / 'openai'"):
        MaskCLIP(model_setting="vitb32_mae", image_size=IMAGE_SIZE, pixel_pretrained="none")


def test_unknown_tags_are_rejected():
    with pytest.raises(WeightSourceError, match="--pixel_pretrained: 'not_a_model.tag' is neither"):
        tiny(pixel_pretrained="not_a_model.tag")
    with pytest.raises(WeightSourceError, match="--clip_pretrained: 'laion2b_s32b_b82k' is not a file"):
        tiny(clip_pretrained="laion2b_s32b_b82k")


def test_bf16_autocast_gives_finite_losses():
    model = tiny().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**make_batch())
    assert torch.isfinite(out["backward_loss"]) and out["backward_loss"].dtype == torch.float32
    out["backward_loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_fp16_autocast_gives_finite_losses():
    model = tiny().train()
    # torch >= 2.3 runs fp16 autocast on the CPU: a RuntimeError here is a dtype mismatch in the model.
    with torch.autocast("cpu", dtype=torch.float16):
        out = model(**make_batch())
    assert torch.isfinite(out["backward_loss"]) and out["backward_loss"].dtype == torch.float32
    assert out["pred_mask"].dtype == torch.float32 and out["pred_label"].dtype == torch.float32
    out["backward_loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_runs_inside_benco_train_one_epoch(monkeypatch):
    """BenCo's own loop: ``model(**data, if_predcit_label=...)``, ``.item()`` on visual losses."""
    from IMDLBenCo.training_scripts.trainer import train_one_epoch

    from imdlbenco_maskclip.engine.training import loss_scaler

    # The trainer synchronises CUDA unconditionally; nothing to wait for on CPU.
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args, **kwargs: None)
    model = tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    args = types.SimpleNamespace(if_not_amp=True, accum_iter=1, if_predict_label=True,
                                 lr=1e-3, min_lr=0.0, warmup_epochs=0, epochs=1)
    with warnings.catch_warnings():  # BenCo's torch.cuda.amp.GradScaler warns: deprecated, or no CUDA
        warnings.simplefilter("ignore")
        scaler = loss_scaler(torch.device("cpu"))  # the same path with and without a GPU
    stats = train_one_epoch(model, [make_batch(), make_batch()], optimizer, torch.device("cpu"), 0, scaler,
                            log_writer=None, args=args)
    assert {"total_loss", "ce_loss", "bce_loss", "edge_loss"} <= set(stats)
    assert all(isinstance(value, float) for value in stats.values())
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
