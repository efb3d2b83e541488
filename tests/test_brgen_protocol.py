"""The BR-Gen paper's protocol (Recall@50 of real and generated images, Split A/B, results by
edited area) against values worked out by hand, on BenCo's tester in 1 and 2 processes."""
import argparse
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from imdlbenco_maskclip import compat
from imdlbenco_maskclip.engine import data, runtime
from imdlbenco_maskclip.engine.brgen_protocol import area_bin, protocol_figures
from imdlbenco_maskclip.engine.evaluators import build_evaluators, evaluate

pytestmark = pytest.mark.usefixtures("no_process_group_left_behind")

SIZE = 8
# name, P(generated) the model gives, area of the full-size mask, rows of the 8x8 mask that are
# edited, rows the model marks. 4 reals, 6 fakes over the five area bins.
FIXTURE = [
    ("COCO_000000000001.png", 0.1, 0.0, 0, 0),
    ("ImageNet_n01440764_2.png", 0.3, 0.0, 0, 0),
    ("Places_00000003.png", 0.7, 0.0, 0, 0),                    # a real called generated
    ("COCO_000000000004.png", 0.5, 0.0, 0, 0),                  # 0.5 is not above the threshold: real
    ("LaMa_Stuff_COCO_000000000001.png", 0.9, 0.10, 2, 2),      # bin 0, found, pixel F1 1
    ("MAT_Background_ImageNet_n01440764_2.png", 0.4, 0.30, 2, 1),  # bin 1, missed, F1 8*2/(8*2+8) = 2/3
    ("SDXL_Stuff_Places_00000003.png", 0.8, 0.50, 2, 2),        # bin 2, found, F1 1
    ("BrushNet_Background_COCO_000000000004.png", 0.6, 0.70, 2, 4),  # bin 3, found, F1 16*2/(16*2+16) = 2/3
    ("PowerPaint_Stuff_COCO_000000000005.png", 0.2, 0.90, 2, 2),  # bin 4, missed, F1 1
    ("PowerPaint_Background_Places_00000006.png", 0.45, 0.20, 2, 0),  # bin 1 (its lower edge), missed, F1 0
]
HAND = {
    "real_r50": 3 / 4, "n_real": 4, "gen_r50": 3 / 6, "n_generated": 6,
    "gan_r50": 1 / 2, "n_gan": 2, "diffusion_r50": 2 / 4, "n_diffusion": 4,
    "background_r50": 1 / 3, "n_background": 3, "stuff_r50": 2 / 3, "n_stuff": 3,
    "area_0_20_n": 1, "area_0_20_r50": 1.0, "area_0_20_pixel_f1": 1.0,
    "area_20_40_n": 2, "area_20_40_r50": 0.0, "area_20_40_pixel_f1": (2 / 3 + 0) / 2,
    "area_40_60_n": 1, "area_40_60_r50": 1.0, "area_40_60_pixel_f1": 1.0,
    "area_60_80_n": 1, "area_60_80_r50": 1.0, "area_60_80_pixel_f1": 2 / 3,
    "area_80_100_n": 1, "area_80_100_r50": 0.0, "area_80_100_pixel_f1": 1.0,
    "n_area_unknown": 0,
    # BenCo's image F1: TP 3 (found fakes), FP 1 (the real at 0.7), FN 3 -> 6 / (6 + 1 + 3)
    "image_f1": 0.6,
    # pixel IoU over the 6 fakes: 1, 1/2, 1, 1/2, 1, 0
    "pixel_iou": 4 / 6,
}


def sample(index):
    name, score, area, edited, marked = FIXTURE[index]
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, :edited] = 1
    image = torch.full((3, SIZE, SIZE), float(index))  # the model reads the index back
    return {"image": image, "mask": mask, "label": int(edited > 0), "shape": torch.tensor([SIZE, SIZE]),
            "origin_shape": torch.tensor([SIZE, SIZE]), "name": name, "mask_area": area}


class FixtureSet(Dataset):
    def __len__(self):
        return len(FIXTURE)

    def __getitem__(self, index):
        return sample(index)


class KnownPredictions(torch.nn.Module):
    def forward(self, image, **kwargs):
        index = image[:, 0, 0, 0].long().tolist()
        pred_mask = torch.zeros(len(index), 1, SIZE, SIZE)
        for row, i in enumerate(index):
            pred_mask[row, :, :FIXTURE[i][4]] = 0.9
        return {"pred_mask": pred_mask, "pred_label": torch.tensor([FIXTURE[i][1] for i in index])}


def run_fixture():
    args = argparse.Namespace(device="cpu", dist_url="env://", test_batch_size=2, num_workers=0, pin_mem=False,
                              no_model_eval=False, print_freq=100, image_size=SIZE)
    compat.init_distributed_mode(args)
    loader = data.test_loader(FixtureSet(), args)
    return evaluate(KnownPredictions(), {"fixture": loader}, build_evaluators(), torch.device("cpu"), 0, args)[
        "fixture"]


def _rank_worker(rank, world, port, results):
    torch.set_num_threads(runtime.cpu_threads_per_process(world))  # not conftest's OMP_NUM_THREADS in each
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    results[rank] = run_fixture()
    dist.destroy_process_group()


def assert_hand_values(figures):
    for key, value in HAND.items():
        assert figures[key] == pytest.approx(value, abs=1e-6), key


def test_protocol_figures_from_records_match_the_hand_values():
    records = [{"label": int(edited > 0), "score": score, "name": name, "area": area,
                "pixel_f1": {(2, 2): 1.0, (2, 1): 2 / 3, (2, 4): 2 / 3, (2, 0): 0.0}.get((edited, marked), math.nan)}
               for name, score, area, edited, marked in FIXTURE]
    figures = protocol_figures(records)
    assert_hand_values({**figures, "image_f1": 0.6, "pixel_iou": 4 / 6})


def test_names_that_do_not_say_and_models_without_scores_give_n_a():
    records = [{"label": 1, "score": 0.9, "name": "partial_sd15_fake_0001.png", "area": 0.3, "pixel_f1": 0.5},
               {"label": 1, "score": 0.2, "name": "a.png", "area": math.nan, "pixel_f1": 0.5}]
    figures = protocol_figures(records)
    assert figures["gen_r50"] == 0.5 and figures["n_real"] == 0 and math.isnan(figures["real_r50"])
    for group in ("gan", "diffusion", "background", "stuff"):
        assert figures[f"n_{group}"] == 0 and math.isnan(figures[f"{group}_r50"])
    assert figures["n_area_unknown"] == 1 and figures["area_20_40_n"] == 1
    unscored = protocol_figures([{**r, "score": math.nan} for r in records])
    assert math.isnan(unscored["gen_r50"]) and math.isnan(unscored["area_20_40_r50"])
    assert unscored["area_20_40_pixel_f1"] == 0.5


def test_area_bins_are_disjoint_and_close_at_100_percent():
    assert [area_bin(a) for a in (0.0, 0.1999, 0.2, 0.3999, 0.4, 0.6, 0.8, 0.95, 1.0)] == [0, 0, 1, 1, 2, 3, 4, 4, 4]
    assert area_bin(math.nan) is None and area_bin(None) is None


def test_one_process_counts_every_image_once():
    assert_hand_values(run_fixture())


def test_two_processes_count_every_image_once_with_benco_tail(free_port):
    world = 2
    assert len(FIXTURE) % (world * 2) != 0  # BenCo's tail pass runs
    results = mp.Manager().dict()
    mp.spawn(_rank_worker, args=(world, free_port, results), nprocs=world, join=True)
    for rank in range(world):
        assert_hand_values(results[rank])
