"""Predicted masks as pictures: which samples the gallery shows, and the picture drawn."""
import torch
from PIL import Image
from torch.utils.data import Subset

from imdlbenco_maskclip import figures
from imdlbenco_maskclip.datasets.opensdid import OpenSDID
from imdlbenco_maskclip.engine.evaluation import gallery_rows
from imdlbenco_maskclip.engine.evaluators import partial_fake_indices
from imdlbenco_maskclip.engine.models import build_model
from imdlbenco_maskclip.flags import parse


def test_partial_fakes_from_metadata_and_from_scanning_agree():
    dataset = OpenSDID("sample:test#sd2", is_resizing=True, output_size=(64, 64))
    from_metadata = partial_fake_indices(dataset, 4)
    # A Subset has no is_partial: the samples are read and their label and mask looked at.
    from_scan = partial_fake_indices(Subset(dataset, range(len(dataset))), 4)
    assert from_metadata == from_scan and len(from_metadata) == 4
    assert all(dataset.kinds[i] == "partial" for i in from_metadata)
    assert partial_fake_indices(dataset, 100) == [i for i, kind in enumerate(dataset.kinds) if kind == "partial"]
    reals = Subset(dataset, [i for i, kind in enumerate(dataset.kinds) if kind == "real"])
    assert partial_fake_indices(reals, 6) == []


def test_gallery_draws_one_row_per_sample(tmp_path):
    args, model_args = parse("train", ["--model_setting", "tiny", "--image_size", "64"])
    model = build_model(args, model_args)
    dataset = OpenSDID("sample:test#sd2", is_resizing=True, output_size=(64, 64))
    sizes = {}
    for rows in (1, 3):
        shown = gallery_rows(dataset, partial_fake_indices(dataset, rows), model, torch.device("cpu"))
        path = figures.write_mask_gallery(str(tmp_path / "masks" / f"{rows}.png"), shown, "tiny")
        with Image.open(path) as picture:
            assert picture.format == "PNG"
            sizes[rows] = picture.size
    # 7.8 x 2.7 inches per row at 90 dpi: the same width, three times the height.
    assert sizes == {1: (702, 243), 3: (702, 729)}


class SqueezedLabel(torch.nn.Module):
    """A model whose pred_label is squeezed, as TruFor's: 0-d for a batch of one image."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **batch):
        output = self.model(**batch)
        return {**output, "pred_label": output["pred_label"].squeeze()}


def test_gallery_of_one_image_takes_a_squeezed_pred_label(tmp_path):
    args, model_args = parse("train", ["--model_setting", "tiny", "--image_size", "64"])
    model = SqueezedLabel(build_model(args, model_args))
    dataset = OpenSDID("sample:test#sd2", is_resizing=True, output_size=(64, 64))
    rows = gallery_rows(dataset, partial_fake_indices(dataset, 1), model, torch.device("cpu"))
    assert len(rows) == 1 and "P(fake) " in rows[0]["caption"]
    path = figures.write_mask_gallery(str(tmp_path / "one.png"), rows, "squeezed")
    assert Image.open(path).size == (702, 243)
