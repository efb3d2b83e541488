"""Predicted masks as pictures: which samples the gallery shows, and that test writes it."""
import torch
from torch.utils.data import Subset

from imdlbenco_maskclip.datasets.opensdid import OpenSDID
from imdlbenco_maskclip.engine import gallery, runtime
from imdlbenco_maskclip.engine.options import parse


def test_partial_fakes_from_metadata_and_from_scanning_agree():
    dataset = OpenSDID("sample:test#sd2", is_resizing=True, output_size=(64, 64))
    from_metadata = gallery.partial_fake_indices(dataset, 4)
    # A Subset has no is_partial: the gallery reads the samples and looks at label and mask.
    from_scan = gallery.partial_fake_indices(Subset(dataset, range(len(dataset))), 4)
    assert from_metadata == from_scan and len(from_metadata) == 4
    assert all(dataset.kinds[i] == "partial" for i in from_metadata)
    assert gallery.partial_fake_indices(dataset, 100) == [i for i, kind in enumerate(dataset.kinds)
                                                          if kind == "partial"]


def test_gallery_draws_one_row_per_partial_fake(tmp_path):
    args, model_args = parse("test", ["--checkpoint_path", "unused.pth", "--model_setting", "tiny", "--image_size", "64"])
    model = runtime.build_model(args, model_args)
    dataset = OpenSDID("sample:test#sd2", is_resizing=True, output_size=(64, 64))
    path = gallery.write_mask_gallery(str(tmp_path / "masks" / "sd2.png"), dataset, model, torch.device("cpu"),
                                      "tiny on sd2", count=3)
    from PIL import Image
    picture = Image.open(path)
    assert picture.format == "PNG" and picture.height > 2 * picture.width / 3 * 0.9  # 3 rows of 3 panels
    reals = OpenSDID("sample:test#sd2", is_resizing=True, output_size=(64, 64))
    reals_only = Subset(reals, [i for i, kind in enumerate(reals.kinds) if kind == "real"])
    assert gallery.write_mask_gallery(str(tmp_path / "none.png"), reals_only, model, torch.device("cpu"), "x") is None
    assert not (tmp_path / "none.png").exists()
