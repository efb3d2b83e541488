"""BRGen: BR-Gen's released layout read by parsing names, paired by stem, balanced as the
authors do, subsets, bad files, a folder without Au/, and the embedded sample."""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from IMDLBenCo.registry import DATASETS

from imdlbenco_maskclip.datasets import BadSampleError, BRGen, BRGenWarning, SourceError
from imdlbenco_maskclip.datasets.brgen_names import parse_name
from imdlbenco_maskclip.datasets.brgen_sample import BAD_FILES, bad_files_dir, ensure_brgen_sample
from imdlbenco_maskclip.datasets.mask_area import mask_area

GAN, DIFFUSION = {"lama", "mat"}, {"sdxl", "brushnet", "powerpaint"}


def brgen(path, **kwargs):
    return BRGen(str(path), is_resizing=True, output_size=(64, 64), **kwargs)


@pytest.fixture(scope="module")
def sample_root():
    return ensure_brgen_sample()


def copy_part(root, out, reals=3, with_real_folder=True):
    """A small BR-Gen folder: ``reals`` real images of the sample and their 10 generated ones each."""
    ids = sorted(p.stem for p in (root / "Au").iterdir())[:reals]
    for folder in ("Tp", "Gt") + (("Au",) if with_real_folder else ()):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for f in (root / folder).iterdir():
            if any(f.stem == i or f.stem.endswith("_" + i) or f.stem.endswith("_" + i + "_mask") for i in ids):
                shutil.copy(f, out / folder / f.name)
    return out


def test_registered_and_names_parse_by_known_words():
    assert DATASETS.get("BRGen") is BRGen
    assert parse_name("Tp/PowerPaint_Stuff_ImageNet_n06359193_84719.png") == {
        "method": "powerpaint", "mask": "stuff", "source": "imagenet", "id": "n06359193_84719", "family": "diffusion"}
    assert parse_name("lama_background_coco_000000000520_mask.png")["family"] == "gan"
    assert parse_name("MAT_Stuff_Places_00001234.jpg")["id"] == "00001234"
    assert parse_name("ImageNet_n06359193_84719.png") == {"source": "imagenet", "id": "n06359193_84719"}
    for bad in ("Midjourney_Stuff_COCO_1.png", "LaMa_Sky_COCO_1.png", "partial_sd15_fake_1.png", "x.png"):
        assert parse_name(bad) is None or "method" not in parse_name(bad), bad


def test_sample_has_the_planned_layout_counts_and_areas(sample_root):
    manifest = json.loads((sample_root.parent / "manifest.json").read_text())
    ds = brgen(sample_root, balance=0)
    assert (int((ds.labels == 0).sum()), int((ds.labels == 1).sum())) == (16, 160) == (
        manifest["real"], manifest["generated"])
    parsed = [p for p in ds.parsed if "method" in p]
    assert {p["method"] for p in parsed} == GAN | DIFFUSION and {p["mask"] for p in parsed} == {"stuff", "background"}
    # Paired by stem: each generated image's mask is its own Gt/<stem>_mask.png.
    bins = [0] * 5
    for i, key in enumerate(ds.keys):
        image, mask, label = ds.read(i)
        if label == 1:
            stem = key.split("/")[1].rsplit(".", 1)[0]
            stored = np.asarray(Image.open(sample_root / "Gt" / f"{stem}_mask.png"))
            assert np.array_equal(mask[:, :, 0] > 127, stored > 127), key
            bins[min(int(100 * mask_area(mask)) // 20, 4)] += 1
    assert bins == manifest["area_bins"] and all(bins)
    item = ds[ds.keys.index(next(k for k in ds.keys if k.startswith("Tp/")))]
    assert 0 < item["mask_area"] < 1 and item["name"].endswith(".png") and parse_name(item["name"])


def test_the_sample_is_deterministic(tmp_path, sample_root):
    from imdlbenco_maskclip.datasets.brgen_sample import build_brgen_sample
    build_brgen_sample(tmp_path)
    for folder in ("Au", "Tp", "Gt"):
        for f in (sample_root / folder).iterdir():
            assert f.read_bytes() == (tmp_path / "test" / folder / f.name).read_bytes(), f.name


def test_balanced_by_default_with_a_seeded_draw(sample_root):
    ds = brgen(sample_root)
    assert (int((ds.labels == 0).sum()), int((ds.labels == 1).sum())) == (16, 16)
    assert len(ds.drawn) == 16 and set(ds.drawn) == {k for k in ds.keys if k.startswith("Tp/")}
    assert brgen(sample_root).drawn == ds.drawn  # repeatable
    assert brgen(sample_root, seed=1).drawn != ds.drawn
    assert ds.selection() == {"dataset": "BRGen", "path": ds.entry_path, "balance": 1, "seed": 0, "drawn": ds.drawn}
    assert brgen(sample_root, balance=0).drawn is None
    with pytest.raises(SourceError, match="balance"):
        brgen(sample_root, balance=2)


@pytest.mark.parametrize("subset,methods", [("gan", GAN), ("diffusion", DIFFUSION), ("lama", {"lama"}),
                                            ("brushnet", {"brushnet"})])
def test_subsets_by_method_and_family_keep_every_real_image(sample_root, subset, methods):
    ds = brgen(f"{sample_root}#{subset}", balance=0)
    parsed = ds.parsed
    assert {p["method"] for p in parsed if "method" in p} == methods
    assert sum("method" not in p for p in parsed) == 16
    assert ds.split == subset and brgen(sample_root, split=subset, balance=0).keys == ds.keys


def test_subsets_by_mask_type_and_unknown_subsets(sample_root):
    for mask_type in ("stuff", "background"):
        ds = brgen(f"{sample_root}#{mask_type}", balance=0)
        assert {p.get("mask") for p in ds.parsed} == {mask_type, None} and len(ds) == 16 + 80
    with pytest.raises(SourceError, match="gan"):
        brgen(f"{sample_root}#sky")


def test_a_folder_without_au_has_no_real_images_and_says_so(tmp_path, sample_root):
    folder = copy_part(sample_root, tmp_path / "noau", with_real_folder=False)
    with pytest.warns(BRGenWarning, match="Au/"):
        ds = brgen(folder)
    assert len(ds) == 30 and not ds.has_real_images and ds.drawn is None
    assert "no Au/ folder" in str(ds)


def with_bad_file(sample_root, out, rel):
    folder = copy_part(sample_root, out)
    bad = bad_files_dir()
    shutil.copy(bad / rel, folder / rel)
    stem = rel.split("/")[1].rsplit(".", 1)[0]
    if (bad / "Gt" / f"{stem}_mask.png").is_file():
        shutil.copy(bad / "Gt" / f"{stem}_mask.png", folder / "Gt" / f"{stem}_mask.png")
    return folder


@pytest.mark.parametrize("rel", sorted(BAD_FILES))
def test_each_bad_file_is_one_clear_error_naming_it(tmp_path, sample_root, rel):
    folder = with_bad_file(sample_root, tmp_path / "bad", rel)
    with pytest.raises(BadSampleError) as caught:
        brgen(folder, balance=0).validate()
    assert caught.value.key == rel and rel.split("/")[1] in str(caught.value)


def test_every_bad_file_is_a_counted_skip(tmp_path, sample_root):
    folder = copy_part(sample_root, tmp_path / "bad")
    bad = bad_files_dir()
    for f in bad.rglob("*.png"):
        shutil.copy(f, folder / f.relative_to(bad))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = brgen(folder, balance=0, on_bad_sample="skip")
        assert ds.validate() == 3  # the three found when read; three more at construction
    assert set(ds.skipped) == set(BAD_FILES)
    assert len(ds) == 33 and int((ds.labels == 0).sum()) == 3


def test_flags_reach_brgen_and_its_default_split_is_the_whole_folder(sample_root):
    from imdlbenco_maskclip.engine import data
    from imdlbenco_maskclip.errors import UserError
    from imdlbenco_maskclip.flags import parse
    base = ["--dataset", "BRGen", "--data_path", str(sample_root), "--test_data_path", "sample:brgen",
            "--image_size", "64", "--model_setting", "tiny"]
    args, _ = parse("train", base)
    assert (args.train_split, args.test_splits, args.balance, args.balance_seed) == ("all", ["all"], 1, 0)
    train = data.open_train_dataset(args)
    assert isinstance(train, BRGen) and train.drawn is not None and train.split == "all"
    args, _ = parse("train", [*base, "--train_split", "gan", "--test_splits", "diffusion,stuff", "--balance", "0",
                              "--balance_seed", "2"])
    train = data.open_train_dataset(args)
    assert (train.split, train.balance, train.seed, train.drawn) == ("gan", 0, 2, None)
    sources = data.test_sources(args)
    assert [data.open_test_dataset(args, name, s).split for name, s in sources.items()] == ["diffusion", "stuff"]
    args.test_splits = ["sky"]
    with pytest.raises(UserError, match="--test_splits.*sky"):
        data.open_test_dataset(args, "sky", data.test_sources(args)["sky"])
    assert parse("train", ["--image_size", "64", "--model_setting", "tiny"])[0].train_split == "sd15"  # OpenSDID's


def test_export_writes_a_list_json_that_keeps_brgen_names_and_areas(tmp_path, sample_root, capsys):
    from imdlbenco_maskclip.cli import main
    from imdlbenco_maskclip.datasets.mask_area import JsonDatasetWithArea
    assert main(["export", "sample:brgen", "--dataset", "BRGen", "--output", str(tmp_path / "out")]) == 0
    listing = tmp_path / "out" / "all.json"
    assert capsys.readouterr().out.strip().endswith(str(listing))
    records = json.loads(listing.read_text())
    ours = brgen(sample_root)
    assert len(records) == len(ours) and sum(gt == "Negative" for _, gt in records) == 16
    assert {Path(tp).name for tp, _ in records} == set(ours.names)
    listed = JsonDatasetWithArea(str(listing), is_resizing=True, output_size=(64, 64))
    by_name = {ours[i]["name"]: ours[i]["mask_area"] for i in range(len(ours))}
    for i in range(len(listed)):
        item = listed[i]
        assert item["mask_area"] == pytest.approx(by_name[item["name"]]) and parse_name(item["name"])
    assert main(["preview", "sample:brgen", "--dataset", "BRGen", "-n", "4", "--output", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["export", "sample:brgen", "--dataset", "ManiDataset", "--output", str(tmp_path / "x")]) == 2
    assert "--dataset ManiDataset" in capsys.readouterr().err
