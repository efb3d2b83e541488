"""The paper's protocol on BenCo's tester: partial fakes only for pixel metrics, every
sample exactly once for 1, 2 and 3 processes (BenCo's distributed tail included)."""
import argparse
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from imdlbenco_maskclip import compat
from imdlbenco_maskclip.engine import data, runtime
from imdlbenco_maskclip.engine.evaluators import (PartialFakePixelMetric, build_evaluators, evaluate,
                                                  partial_rows)
from IMDLBenCo.evaluation import PixelF1, PixelIOU

SIZE = 8
N_SAMPLES = 11  # with batch 2: a short last batch in one process, a tail of 3 (2 ranks) or 5 (3 ranks)


pytestmark = pytest.mark.usefixtures("no_process_group_left_behind")


def synthetic_sample(index):
    """BenCo-style sample: kinds cycle real, partial, full, partial, fake-whose-edit-vanished."""
    g = torch.Generator().manual_seed(index)
    image = torch.rand(3, SIZE, SIZE, generator=g)
    kind = ("real", "partial", "full", "partial", "vanished")[index % 5]
    mask = torch.zeros(1, SIZE, SIZE)
    if kind == "partial":
        top, left = index % 4, (index * 3) % 4
        mask[:, top:top + 3 + index % 2, left:left + 4] = 1
    elif kind == "full":
        mask[:] = 1
    label = 0 if kind == "real" else 1
    return {"image": image, "mask": mask, "label": label, "shape": torch.tensor([SIZE, SIZE]),
            "origin_shape": torch.tensor([SIZE, SIZE]), "name": f"s{index}.png"}, kind


class SyntheticSet(Dataset):
    def __len__(self):
        return N_SAMPLES

    def __getitem__(self, index):
        return synthetic_sample(index)[0]


class PerSampleModel(torch.nn.Module):
    """Predictions depend on each sample alone, so batching and ranks cannot change them."""

    def forward(self, image, **kwargs):
        return {"pred_mask": torch.sigmoid(8 * (image[:, :1] - 0.5)),
                "pred_label": torch.sigmoid(12 * (image.mean(dim=(1, 2, 3)) - 0.5))}


def hand_protocol():
    f1s, ious, scores, labels = [], [], [], []
    model = PerSampleModel()
    for i in range(N_SAMPLES):
        sample, kind = synthetic_sample(i)
        out = model(sample["image"][None])
        scores.append(out["pred_label"].item())
        labels.append(sample["label"])
        if kind != "partial":
            continue
        pred = out["pred_mask"][0].numpy() > 0.5
        gt = sample["mask"].numpy() > 0.5
        tp, fp, fn = (pred & gt).sum(), (pred & ~gt).sum(), (~pred & gt).sum()
        f1s.append(2 * tp / (2 * tp + fp + fn))
        ious.append(tp / (tp + fp + fn))
    scores, labels = np.array(scores), np.array(labels)
    hard = scores > 0.5
    tp, fp, fn = (hard & (labels == 1)).sum(), (hard & (labels == 0)).sum(), (~hard & (labels == 1)).sum()
    pos, neg = scores[labels == 1], scores[labels == 0]
    return {"pixel_f1": np.mean(f1s), "pixel_iou": np.mean(ious), "image_f1": 2 * tp / (2 * tp + fp + fn),
            "image_acc": (hard == (labels == 1)).mean(),
            "image_auc": (pos[:, None] > neg[None, :]).mean(),  # no ties in these scores
            "n_images": N_SAMPLES, "n_partial": len(f1s),
            # the BR-Gen protocol's recalls (its Split A/B and area bins: tests/test_brgen_protocol.py)
            "real_r50": (neg <= 0.5).mean(), "gen_r50": (pos > 0.5).mean(), "n_real": len(neg), "n_generated": len(pos)}


def protocol_args():
    return argparse.Namespace(device="cpu", dist_url="env://", test_batch_size=2, num_workers=0, pin_mem=False,
                              no_model_eval=False, print_freq=100, image_size=SIZE)


def run_protocol():
    args = protocol_args()
    compat.init_distributed_mode(args)
    loader = data.test_loader(SyntheticSet(), args)
    return evaluate(PerSampleModel(), {"synthetic": loader}, build_evaluators(), torch.device("cpu"), 0, args)[
        "synthetic"]


def _rank_worker(rank, world, port, results):
    torch.set_num_threads(runtime.cpu_threads_per_process(world))  # not conftest's OMP_NUM_THREADS in each
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    results[rank] = run_protocol()
    dist.destroy_process_group()


def assert_matches_hand(metrics):
    expected = hand_protocol()
    assert metrics["n_images"] == N_SAMPLES and metrics["n_partial"] == expected["n_partial"]
    assert (metrics["n_real"], metrics["n_generated"]) == (expected["n_real"], expected["n_generated"])
    # No BR-Gen names and no mask areas in these samples: Split A/B empty, every fake of unknown area.
    assert metrics["n_gan"] == metrics["n_stuff"] == 0 and metrics["n_area_unknown"] == expected["n_generated"]
    for key in ("pixel_f1", "pixel_iou", "image_f1", "image_acc", "image_auc", "real_r50", "gen_r50"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key


def test_partial_rows_are_label_one_with_a_mask_neither_empty_nor_full():
    mask = torch.zeros(5, 1, 4, 4)
    mask[1, :, :2] = 1          # partial
    mask[2] = 1                 # fully generated
    mask[3, :, :2] = 1          # real label, masked: not a fake
    label = torch.tensor([0, 1, 1, 0, 1])  # row 4: a fake whose edit vanished
    assert partial_rows(mask, label).tolist() == [False, True, False, False, False]
    # Padding: a fully generated image padded to size is full inside shape_mask.
    shape_mask = torch.zeros(5, 1, 4, 4)
    shape_mask[:, :, :2] = 1
    padded_full = mask.clone()
    padded_full[2, :, 2:] = 0
    assert partial_rows(padded_full, label, shape_mask).tolist() == [False, False, False, False, False]


def test_partial_fake_metric_matches_hand_computation_and_counts_the_tail_once():
    pred = torch.zeros(4, 1, 4, 4)
    mask = torch.zeros(4, 1, 4, 4)
    pred[0, :, :2, :2] = 0.9    # 4 predicted, 2 of them right -> F1 2*2/(2*2+2+2) = 0.5, IoU 2/6
    mask[0, :, :1] = 1          # 4 marked
    pred[1] = 0.9               # a real image predicted fake everywhere: not scored
    pred[2, :, 0, 0] = 0.9      # partial: 1 of 2 found -> F1 2/3, IoU 1/2
    mask[2, :, 0, :2] = 1
    mask[3] = 1                 # fully generated: not scored
    label = torch.tensor([1, 0, 1, 1])
    f1 = PartialFakePixelMetric(PixelF1(threshold=0.5, mode="origin"), "pixel_f1")
    iou = PartialFakePixelMetric(PixelIOU(threshold=0.5, mode="origin"), "pixel_iou")
    for metric in (f1, iou):
        assert metric.batch_update(predict=pred[:2], mask=mask[:2], label=label[:2]) is None
        # BenCo's distributed tail: every rank gets the same rows through remain_update.
        assert metric.remain_update(predict=pred[2:], mask=mask[2:], label=label[2:]) is None
    assert f1.epoch_update() == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-6)
    assert iou.epoch_update() == pytest.approx((2 / 6 + 1 / 2) / 2, abs=1e-6)
    f1.recovery()
    f1.batch_update(predict=pred[1:2], mask=mask[1:2], label=label[1:2])
    assert np.isnan(f1.epoch_update())  # no partial fake: undefined, never 0


def test_one_process_scores_every_sample_once_with_a_short_last_batch():
    assert_matches_hand(run_protocol())


def test_three_processes_score_every_sample_once_with_benco_tail(free_port):
    # Two processes on real data: tests/test_e2e_cli.py.
    world = 3
    assert N_SAMPLES % (world * 2) != 0  # BenCo's tail pass runs
    results = mp.Manager().dict()
    mp.spawn(_rank_worker, args=(world, free_port, results), nprocs=world, join=True)
    for rank in range(world):
        assert_matches_hand(results[rank])
