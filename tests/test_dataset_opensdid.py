"""OpenSDID against BenCo: sources, splits, subsets, bad data, export, registry.

Every dataset here is written on the spot in tmp_path, in the OpenSDID schema
(key string, image Image, mask Image or None, label ClassLabel real/fake).
"""
import io
import json
import shutil
import warnings
from pathlib import Path

import albumentations as albu
import numpy as np
import pytest
import torch
from PIL import Image

from IMDLBenCo.datasets import BalancedDataset, JsonDataset, ManiDataset
from IMDLBenCo.registry import DATASETS

from imdlbenco_maskclip.datasets import BadSampleError, OpenSDID, OpenSDIDWarning
from imdlbenco_maskclip.datasets.export import export_source, export_split
from imdlbenco_maskclip.datasets.mask_area import JsonDatasetWithArea
from imdlbenco_maskclip.datasets.opensdid import ImageDataError, SourceError, sample_name, to_rgb_uint8

RNG = np.random.default_rng(0)


def png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def encoded(img, fmt="PNG"):
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def rgb(h, w):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def rect_mask(h, w, box):
    m = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = 255
    return m


def make_rows(split):
    """(rows, arrays): rows for parquet, arrays (image HWC RGB, mask HW or None) for BenCo files."""
    gray = RNG.integers(0, 256, (40, 48), dtype=np.uint8)
    spec = [
        (f"real/{split}/real/0000.jpg", rgb(40, 48), None, 0),
        (f"partial/{split}/fake/0001.jpg", rgb(40, 48), rect_mask(40, 48, (5, 20, 10, 30)), 1),
        (f"full/{split}/fake/0002.jpg", rgb(44, 40), None, 1),
        (f"real/{split}/real/0003.jpg", gray, None, 0),
        (f"partial/{split}/fake/0004.jpg", rgb(36, 52), rect_mask(36, 52, (0, 36, 30, 52)), 1),
    ]
    rows = [{"key": k, "image": {"bytes": png(img), "path": None},
             "mask": None if m is None else {"bytes": png(m), "path": None}, "label": lab}
            for k, img, m, lab in spec]
    return rows, spec


def features():
    from datasets import ClassLabel, Features, Image as HFImage, Value
    return Features({"key": Value("string"), "image": HFImage(), "mask": HFImage(),
                     "label": ClassLabel(names=["real", "fake"])})


def hf_dataset(rows, feats=None):
    from datasets import Dataset
    columns = {c: [r[c] for r in rows] for c in rows[0]}
    return Dataset.from_dict(columns, features=feats if feats is not None else features())


def write_hub_dir(root, splits=("sd15", "sd2"), rows_for=None):
    """Parquet shards laid out as on the hub: data/<split>-0000k-of-0000n.parquet."""
    for split in splits:
        rows = rows_for(split) if rows_for else make_rows(split)[0]
        half = len(rows) // 2
        for i, chunk in enumerate((rows[:half], rows[half:])):
            path = root / "data" / f"{split}-{i:05d}-of-00002.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            hf_dataset(chunk).to_parquet(str(path))
    return root


def assert_same_item(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]), k
        else:
            assert type(a[k]) is type(b[k]) and a[k] == b[k], (k, a[k], b[k])


SETTINGS = [
    dict(is_resizing=True, output_size=(32, 32)),
    dict(is_padding=True, output_size=(64, 64)),
    dict(is_resizing=True, output_size=(48, 48), edge_width=7),
    dict(is_padding=True, output_size=(64, 64), edge_width=3),
]


@pytest.fixture
def hub_dir(tmp_path):
    return write_hub_dir(tmp_path / "hub")


# -- parity with BenCo -------------------------------------------------------

@pytest.mark.parametrize("settings", SETTINGS, ids=["resize", "pad", "resize+edge", "pad+edge"])
def test_items_equal_benco_jsondataset_on_the_same_images(tmp_path, settings):
    rows, spec = make_rows("sd15")
    root = tmp_path / "hub"
    (root / "data").mkdir(parents=True)
    hf_dataset(rows).to_parquet(str(root / "data" / "sd15-00000-of-00001.parquet"))
    # The same pictures as BenCo's own files: a real is "Negative", a fully
    # generated fake has an all-white Gt.
    records = []
    for key, img, mask, label in spec:
        tp = tmp_path / "Tp" / sample_name(key)
        tp.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(tp)
        if label == 0:
            records.append([str(tp), "Negative"])
            continue
        gt = tmp_path / "Gt" / sample_name(key)
        gt.parent.mkdir(exist_ok=True)
        Image.fromarray(mask if mask is not None else np.full(img.shape[:2], 255, np.uint8)).save(gt)
        records.append([str(tp), str(gt)])
    (tmp_path / "benco.json").write_text(json.dumps(records))

    ours = OpenSDID(str(root), **settings)
    # BenCo's JsonDataset, its samples carrying the full-size mask's area as OpenSDID's do.
    benco = JsonDatasetWithArea(str(tmp_path / "benco.json"), **settings)
    assert set(ours[0]) - set(JsonDataset(str(tmp_path / "benco.json"), **settings)[0]) == {"mask_area"}
    assert len(ours) == len(benco) == len(spec)
    for i in range(len(spec)):
        assert_same_item(ours[i], benco[i])
    assert [ours[i]["label"] for i in range(5)] == [0, 1, 1, 0, 1]
    h, w = ours[2]["shape"].tolist()
    assert float(ours[2]["mask"][0, :h, :w].min()) == 1.0  # fully generated: every pixel fake
    assert float(ours[0]["mask"].max()) == 0.0


def test_label_recomputed_after_augmentation_like_benco(hub_dir):
    import albumentations as albu
    # Cropping to the left 10 columns leaves sample 4's mask (columns 30-51) empty.
    crop = albu.Compose([albu.Crop(0, 0, 10, 36)])
    ds = OpenSDID(f"{hub_dir}#sd15", is_resizing=True, output_size=(16, 16), common_transforms=crop)
    assert ds.labels[4] == 1
    assert ds[4]["label"] == 0 and float(ds[4]["mask"].max()) == 0.0


def test_post_funcs_are_applied(hub_dir):
    def tag(d):
        d["tagged"] = d["name"]
    item = OpenSDID(f"{hub_dir}#sd15", is_resizing=True, output_size=(16, 16), post_funcs=[tag])[1]
    assert item["tagged"] == "partial_sd15_fake_0001.png" == item["name"]


# -- subsets, splits, metadata ----------------------------------------------

def test_pixel_subset_keeps_only_partial_fakes(hub_dir):
    full = OpenSDID(str(hub_dir), split="sd15", is_resizing=True)
    pixel = OpenSDID(str(hub_dir), split="sd15", subset="pixel", is_resizing=True)
    assert full.kinds == ["real", "partial", "full", "real", "partial"]
    assert full.num_partial == 2 and list(full.is_partial) == [False, True, False, False, True]
    assert pixel.keys == ["partial/sd15/fake/0001.jpg", "partial/sd15/fake/0004.jpg"]
    assert len(pixel) == 2 and pixel.is_partial.all() and list(pixel.labels) == [1, 1]
    assert all(0 < float(pixel[i]["mask"].mean()) < 1 for i in range(2))


def test_metadata_needs_no_decoding(tmp_path):
    rows, _ = make_rows("sd15")
    rows[1]["image"] = {"bytes": b"definitely not an image", "path": None}
    root = write_hub_dir(tmp_path / "hub", splits=("sd15",), rows_for=lambda s: rows)
    ds = OpenSDID(str(root), is_resizing=True)  # builds: nothing decoded yet
    assert list(ds.labels) == [0, 1, 1, 0, 1] and ds.num_partial == 2
    with pytest.raises(BadSampleError, match="partial/sd15/fake/0001.jpg"):
        ds[1]


def test_split_by_argument_and_by_hash(hub_dir):
    by_arg = OpenSDID(str(hub_dir), split="sd2", is_resizing=True)
    by_hash = OpenSDID(f"{hub_dir}#sd2", is_resizing=True)
    assert by_arg.split == by_hash.split == "sd2"
    assert by_arg.keys == by_hash.keys and by_arg.keys[0].startswith("real/sd2/")
    assert by_arg[1]["name"] == "partial_sd2_fake_0001.png"


def test_split_errors(hub_dir, tmp_path):
    with pytest.raises(SourceError, match=r"conflicting splits.*'sd15'.*'sd2'"):
        OpenSDID(f"{hub_dir}#sd2", split="sd15", is_resizing=True)
    with pytest.raises(SourceError, match=r"several splits \['sd15', 'sd2'\]"):
        OpenSDID(str(hub_dir), is_resizing=True)
    with pytest.raises(SourceError, match=r"unknown split 'sdxl'.*\['sd15', 'sd2'\]"):
        OpenSDID(str(hub_dir), split="sdxl", is_resizing=True)
    single = write_hub_dir(tmp_path / "single", splits=("flux",))
    assert OpenSDID(str(single), is_resizing=True).split == "flux"


def test_subset_and_mode_arguments_are_checked(hub_dir):
    with pytest.raises(SourceError, match="subset"):
        OpenSDID(f"{hub_dir}#sd15", subset="partial", is_resizing=True)
    with pytest.raises(SourceError, match="on_bad_sample"):
        OpenSDID(f"{hub_dir}#sd15", on_bad_sample="ignore", is_resizing=True)


# -- other sources -------------------------------------------------------------

def test_save_to_disk_datasetdict_and_dataset(tmp_path):
    from datasets import DatasetDict
    rows15, _ = make_rows("sd15")
    rows3, _ = make_rows("sd3")
    DatasetDict({"sd15": hf_dataset(rows15), "sd3": hf_dataset(rows3)}).save_to_disk(str(tmp_path / "dd"))
    dd = OpenSDID(f"{tmp_path / 'dd'}#sd3", is_resizing=True, output_size=(16, 16))
    assert dd.keys == [r["key"] for r in rows3] and dd[1]["label"] == 1
    with pytest.raises(SourceError, match=r"several splits \['sd15', 'sd3'\]"):
        OpenSDID(str(tmp_path / "dd"), is_resizing=True)

    hf_dataset(rows15).save_to_disk(str(tmp_path / "one"))
    one = OpenSDID(str(tmp_path / "one"), split="sd15", is_resizing=True, output_size=(16, 16))
    assert one.keys == [r["key"] for r in rows15] and one.kinds[2] == "full"


def test_image_folder_layout(tmp_path):
    root = tmp_path / "folder"
    for d in ("sd3/real", "sd3/fake", "sd3/masks"):
        (root / d).mkdir(parents=True)
    Image.fromarray(rgb(30, 30)).save(root / "sd3/real/a.jpg")
    Image.fromarray(rgb(30, 40)).save(root / "sd3/fake/b.png")
    Image.fromarray(rect_mask(30, 40, (0, 10, 0, 10))).save(root / "sd3/masks/b.png")
    Image.fromarray(rgb(20, 20)).save(root / "sd3/fake/c.png")
    (root / "sd3/real/.DS_Store").write_bytes(b"")
    ds = OpenSDID(str(root), is_resizing=True, output_size=(16, 16))
    assert ds.split == "sd3"
    assert ds.keys == ["real/sd3/real/a.jpg", "partial/sd3/fake/b.png", "full/sd3/fake/c.png"]
    assert ds.kinds == ["real", "partial", "full"]
    image, mask, label = ds.read(1)
    assert label == 1 and image.shape == (30, 40, 3) and mask[:10, :10].min() == 255 and mask[10:].max() == 0
    Image.fromarray(rect_mask(5, 5, (0, 5, 0, 5))).save(root / "sd3/masks/zzz.png")
    with pytest.warns(OpenSDIDWarning, match=r"1 mask\(s\) match no image.*zzz"):
        OpenSDID(str(root), is_resizing=True)


def test_hub_id_downloads_only_the_requested_split(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import HfApi
    remote = write_hub_dir(tmp_path / "remote")
    listing = sorted(str(p.relative_to(remote)) for p in remote.rglob("*.parquet")) + ["README.md"]
    fetched = []

    def fake_download(repo_id, filename, repo_type=None, **kwargs):
        assert (repo_id, repo_type) == ("nebula/OpenSDI_test", "dataset")
        fetched.append(filename)
        local = tmp_path / "downloads" / filename
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(remote / filename, local)
        return str(local)

    monkeypatch.setattr(HfApi, "list_repo_files", lambda self, repo_id, repo_type=None, **kw: listing)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    ds = OpenSDID("nebula/OpenSDI_test#sd2", is_resizing=True, output_size=(16, 16))
    assert fetched == ["data/sd2-00000-of-00002.parquet", "data/sd2-00001-of-00002.parquet"]
    assert ds.split == "sd2" and len(ds) == 5 and ds[1]["label"] == 1
    with pytest.raises(SourceError, match=r"hub dataset nebula/OpenSDI_test has several splits"):
        OpenSDID("nebula/OpenSDI_test", is_resizing=True)


def test_hub_id_offline_reads_the_hub_cache_or_says_how_to_download(tmp_path, monkeypatch):
    from huggingface_hub import constants
    assert constants.HF_HUB_OFFLINE  # set by conftest
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub_cache"))
    with pytest.raises(SourceError, match=r"nebula/OpenSDI_test.*hf download nebula/OpenSDI_test"
                                           r".*data/sd3-\*.*local directory"):
        OpenSDID("nebula/OpenSDI_test#sd3", is_resizing=True)

    commit = "0" * 40
    repo = tmp_path / "hub_cache" / "datasets--nebula--OpenSDI_test"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    write_hub_dir(repo / "snapshots" / commit, splits=("sd3",))
    ds = OpenSDID("nebula/OpenSDI_test", is_resizing=True, output_size=(16, 16))
    assert ds.split == "sd3" and ds.keys[0] == "real/sd3/real/0000.jpg"
    with pytest.raises(SourceError, match=r"unknown split 'flux'.*local hub cache.*\['sd3'\]"):
        OpenSDID("nebula/OpenSDI_test#flux", is_resizing=True)


def test_registered_and_built_by_benco_balanced_dataset(hub_dir, tmp_path):
    assert DATASETS.get("OpenSDID") is OpenSDID
    setting = tmp_path / "balanced.json"
    setting.write_text(json.dumps([["OpenSDID", f"{hub_dir}#sd15"], ["OpenSDID", f"{hub_dir}#sd2"]]))
    balanced = BalancedDataset(str(setting), sample_number=3, is_resizing=True, output_size=(24, 24),
                               edge_width=3)
    assert len(balanced) == 6
    assert [d.split for d in balanced.dataset_list] == ["sd15", "sd2"]
    item = balanced[4]
    assert item["image"].shape == (3, 24, 24) and item["edge_mask"].shape == (1, 24, 24)
    assert item["name"].startswith(("real_sd2", "partial_sd2", "full_sd2"))


# -- pixel formats ---------------------------------------------------------------

def test_pixel_formats_become_8bit_rgb():
    grey16 = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    assert to_rgb_uint8(Image.fromarray(grey16)).tolist() == [[[v] * 3 for v in (0, 1, 255, 128)]]
    rgba = rgb(4, 4)
    alpha = np.dstack([rgba, np.zeros((4, 4), np.uint8)])
    assert np.array_equal(to_rgb_uint8(Image.fromarray(alpha, "RGBA")), rgba)
    grey = RNG.integers(0, 256, (3, 5), dtype=np.uint8)
    assert np.array_equal(to_rgb_uint8(Image.fromarray(grey)), np.repeat(grey[:, :, None], 3, 2))
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    assert to_rgb_uint8(cmyk).reshape(-1, 3).tolist() == [[255, 0, 0]] * 16
    out = to_rgb_uint8(Image.fromarray(grey16))
    assert out.dtype == np.uint8 and out.flags.writeable
    with pytest.raises(ImageDataError, match="float pixels.*8- or 16-bit"):
        to_rgb_uint8(Image.new("F", (2, 2)))


def test_odd_formats_read_from_rows(tmp_path):
    grey16 = (RNG.integers(0, 65536, (24, 24))).astype(np.uint16)
    cmyk = Image.fromarray(rgb(24, 24)).convert("CMYK")
    rgba = np.dstack([rgb(24, 24), np.full((24, 24), 7, np.uint8)])
    mask16 = (rect_mask(24, 24, (0, 12, 0, 24)).astype(np.uint16) * 257)
    rows = [
        {"key": "real/sd15/real/g16.png", "image": {"bytes": png(grey16), "path": None}, "mask": None, "label": 0},
        {"key": "real/sd15/real/cmyk.jpg", "image": {"bytes": encoded(cmyk, "JPEG"), "path": None},
         "mask": None, "label": 0},
        {"key": "partial/sd15/fake/rgba.png", "image": {"bytes": png(rgba), "path": None},
         "mask": {"bytes": png(mask16), "path": None}, "label": 1},
    ]
    root = write_hub_dir(tmp_path / "hub", splits=("sd15",), rows_for=lambda s: rows)
    ds = OpenSDID(str(root), is_resizing=True, output_size=(24, 24))
    img, _, _ = ds.read(0)
    assert np.array_equal(img[:, :, 0], ((grey16.astype(np.int64) + 128) // 257).astype(np.uint8))
    img, _, _ = ds.read(1)
    assert np.array_equal(img, np.asarray(Image.open(io.BytesIO(rows[1]["image"]["bytes"])).convert("RGB")))
    img, mask, _ = ds.read(2)
    assert np.array_equal(img, rgba[:, :, :3]) and set(np.unique(mask)) == {0, 255}
    assert float(ds[2]["mask"][0, :12].min()) == 1.0 and float(ds[2]["mask"][0, 12:].max()) == 0.0


# -- bad data ----------------------------------------------------------------------

def build(tmp_path, mutate, **kwargs):
    rows, _ = make_rows("sd15")
    mutate(rows)
    root = write_hub_dir(tmp_path / "hub", splits=("sd15",), rows_for=lambda s: rows)
    return OpenSDID(str(root), is_resizing=True, output_size=(16, 16), **kwargs)


def undecodable(rows):
    rows[1]["image"] = {"bytes": b"\x89PNG\r\n\x1a\n broken", "path": None}


def wrong_mask_size(rows):
    rows[4]["mask"] = {"bytes": png(rect_mask(10, 10, (0, 5, 0, 5))), "path": None}


def zero_one_mask(rows):
    rows[1]["mask"] = {"bytes": png(rect_mask(40, 48, (5, 20, 10, 30)) // 255), "path": None}


@pytest.mark.parametrize("mutate,key,fix", [
    (undecodable, "partial/sd15/fake/0001.jpg", "does not decode"),
    (wrong_mask_size, "partial/sd15/fake/0004.jpg", "10x10.*52x36"),
    (zero_one_mask, "partial/sd15/fake/0001.jpg", "marks nothing"),
], ids=["undecodable", "mask-size", "0/1-mask"])
def test_bad_rows_found_when_read(tmp_path, mutate, key, fix):
    ds = build(tmp_path, mutate)
    index = ds.keys.index(key)
    with pytest.raises(BadSampleError, match=f"{key}.*{fix}"):
        ds[index]
    with pytest.raises(BadSampleError, match=key):
        ds.validate()


@pytest.mark.parametrize("mutate,key", [
    (undecodable, "partial/sd15/fake/0001.jpg"),
    (wrong_mask_size, "partial/sd15/fake/0004.jpg"),
], ids=["undecodable", "mask-size"])
def test_skip_returns_the_next_valid_row_and_counts(tmp_path, mutate, key):
    ds = build(tmp_path, mutate, on_bad_sample="skip")
    index = ds.keys.index(key)
    with pytest.warns(OpenSDIDWarning, match=f"skipped.*{key}.*1 skipped so far"):
        item = ds[index]
    assert item["name"] == ds.names[(index + 1) % len(ds)]
    assert list(ds.skipped) == [key] and "1 sample(s) skipped" in ds.report() and key in ds.report()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known bad row is passed over without a second warning
        assert ds[index]["name"] == item["name"]
    assert len(ds) == 5
    assert ds.validate() == 0 and len(ds) == 4 and key not in ds.keys and len(ds.tp_path) == 4


def test_validate_headers_only_finds_size_mismatch_and_drops_it(tmp_path):
    ds = build(tmp_path, wrong_mask_size, on_bad_sample="skip")
    with pytest.warns(OpenSDIDWarning):
        assert ds.validate(decode=False) == 1
    assert len(ds) == 4 and list(ds.skipped) == ["partial/sd15/fake/0004.jpg"]


def test_partial_fake_without_mask(tmp_path):
    def drop_mask(rows):
        rows[1]["mask"] = None
    with pytest.raises(BadSampleError, match=r"partial/sd15/fake/0001.jpg.*mask"):
        build(tmp_path, drop_mask)
    with pytest.warns(OpenSDIDWarning, match="1 bad row"):
        ds = build(tmp_path, drop_mask, on_bad_sample="skip")
    assert len(ds) == 4 and "partial/sd15/fake/0001.jpg" not in ds.keys
    assert ds.skipped == {"partial/sd15/fake/0001.jpg": ds.skipped["partial/sd15/fake/0001.jpg"]}
    assert "needs its mask" in ds.report()


def test_metadata_errors(tmp_path):
    def contradicting(rows):
        rows[0]["label"] = 1
    with pytest.raises(BadSampleError, match=r"real/sd15/real/0000.jpg.*'real'.*label"):
        build(tmp_path, contradicting)

    def odd_label_and_no_key(rows):
        rows[2]["label"] = 2
        rows[3]["key"] = None
    from datasets import Features, Image as HFImage, Value
    feats = Features({"key": Value("string"), "image": HFImage(), "mask": HFImage(), "label": Value("int64")})
    rows, _ = make_rows("sd15")
    odd_label_and_no_key(rows)
    path = tmp_path / "odd" / "data" / "sd15-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    hf_dataset(rows, feats).to_parquet(str(path))
    with pytest.warns(OpenSDIDWarning, match="2 bad row"):
        ds = OpenSDID(str(tmp_path / "odd"), is_resizing=True, on_bad_sample="skip")
    assert ds.skipped == {"full/sd15/fake/0002.jpg": "label must be 0 (real) or 1 (fake), the row has 2",
                          "row 3": "the key is empty; every row needs a unique string key"}
    assert len(ds) == 3 and ds.names[-1] == "partial_sd15_fake_0004.png"


def test_mask_on_real_or_full_fake_is_ignored_with_a_warning(tmp_path):
    def add_masks(rows):
        rows[0]["mask"] = {"bytes": png(rect_mask(40, 48, (0, 40, 0, 48))), "path": None}
        rows[2]["mask"] = {"bytes": png(rect_mask(44, 40, (0, 4, 0, 4))), "path": None}
    with pytest.warns(OpenSDIDWarning, match=r"masks ignored on 1 real.*and 1 fully generated"):
        ds = build(tmp_path, add_masks)
    assert float(ds[0]["mask"].max()) == 0.0 and float(ds[2]["mask"].min()) == 1.0


def test_missing_column_named_with_columns_found(tmp_path):
    rows, _ = make_rows("sd15")
    from datasets import ClassLabel, Features, Image as HFImage, Value
    feats = Features({"key": Value("string"), "image": HFImage(), "label": ClassLabel(names=["real", "fake"])})
    path = tmp_path / "hub" / "data" / "sd15-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    hf_dataset([{k: r[k] for k in ("key", "image", "label")} for r in rows], feats).to_parquet(str(path))
    with pytest.raises(SourceError, match=r"\['mask'\].*\['key', 'image', 'label'\]"):
        OpenSDID(str(tmp_path / "hub"), is_resizing=True)


# -- export --------------------------------------------------------------------

@pytest.mark.parametrize("settings", SETTINGS[1:3], ids=["pad", "resize+edge"])
def test_export_round_trips_through_benco_jsondataset(hub_dir, tmp_path, settings):
    json_path, ours = export_source(str(hub_dir), tmp_path / "export", split="sd2")
    records = json.loads(json_path.read_text())
    assert json_path.name == "sd2.json" and len(records) == 5
    assert [r[1] == "Negative" for r in records] == [True, False, False, True, False]
    assert np.asarray(Image.open(records[2][1])).min() == 255  # fully generated: white Gt
    ours = OpenSDID(f"{hub_dir}#sd2", **settings)
    benco = JsonDatasetWithArea(str(json_path), **settings)
    for i in range(len(ours)):
        assert_same_item(ours[i], benco[i])


def test_export_folder_is_a_benco_folder_dataset(hub_dir, tmp_path):
    """ManiDataset pairs the sorted Tp/ and Gt/ listings: every image needs its Gt/ file,
    a black one for a real image. With a transform, as BenCo's scripts always pass, the label
    comes from that mask, so the folder gives what the JSON gives."""
    json_path, _ = export_source(str(hub_dir), tmp_path / "export", split="sd2")
    real = [Path(tp).name for tp, gt in json.loads(json_path.read_text()) if gt == "Negative"]
    assert len(real) == 2 and sorted(p.name for p in (tmp_path / "export" / "Gt").iterdir()) == \
        sorted(p.name for p in (tmp_path / "export" / "Tp").iterdir())
    assert all(np.asarray(Image.open(tmp_path / "export" / "Gt" / name)).max() == 0 for name in real)
    settings = dict(is_resizing=True, output_size=(48, 48), edge_width=7, common_transforms=albu.Compose([]))
    folder = ManiDataset(str(tmp_path / "export"), **settings)
    benco = JsonDataset(str(json_path), **settings)
    by_name = {benco[i]["name"]: benco[i] for i in range(len(benco))}
    assert len(folder) == len(by_name) == 5
    for i in range(len(folder)):
        item = folder[i]
        assert_same_item(item, by_name[item["name"]])
    assert sorted(by_name[name]["label"] for name in by_name) == [0, 0, 1, 1, 1]


def test_export_skip_leaves_bad_rows_out_and_lists_them(tmp_path):
    ds = build(tmp_path, undecodable, on_bad_sample="skip")
    with pytest.warns(OpenSDIDWarning):
        json_path = export_split(ds, tmp_path / "export")
    records = json.loads(json_path.read_text())
    assert len(records) == 4 and not any("0001" in r[0] for r in records)
    assert list(ds.skipped) == ["partial/sd15/fake/0001.jpg"]


def test_export_and_preview_commands(hub_dir, tmp_path, capsys):
    from imdlbenco_maskclip.cli import main
    assert main(["export", f"{hub_dir}#sd15", "--subset", "pixel", "--output", str(tmp_path / "e")]) == 0
    json_path = capsys.readouterr().out.strip()
    assert len(json.loads(open(json_path).read())) == 2
    assert main(["preview", str(hub_dir), "--split", "sd2", "-n", "5", "--cols", "3",
                 "--output", str(tmp_path / "p.png")]) == 0
    with Image.open(tmp_path / "p.png") as im:
        # 3.2 x 3.4 inches per cell at 90 dpi: 5 samples in 3 columns are 2 rows
        assert im.format == "PNG" and im.size == (864, 612)


def test_dataset_commands_end_bad_input_with_an_error_line(hub_dir, tmp_path, capsys):
    from imdlbenco_maskclip.cli import main
    assert main(["preview", str(hub_dir), "--output", str(tmp_path / "p.png")]) == 2  # two splits, none chosen
    assert "preview: error: " in capsys.readouterr().err
    assert main(["export", f"{hub_dir}#sd4", "--output", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("benco-maskclip export: error: ") and "sd4" in err
    (tmp_path / "a_file").write_text("")
    assert main(["export", f"{hub_dir}#sd2", "--output", str(tmp_path / "a_file")]) == 2
    assert "error: --output" in capsys.readouterr().err
    assert main(["preview", f"{hub_dir}#sd2", "-n", "2", "--output", str(tmp_path / "new" / "dir" / "p.png")]) == 0
    assert (tmp_path / "new" / "dir" / "p.png").is_file()


def test_parquet_written_by_pyarrow_with_all_none_paths(tmp_path):
    """pyarrow (or pandas) types an Image struct's all-None ``path`` field as null, not string."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows, _ = make_rows("sd15")
    columns = {name: [row[name] for row in rows] for name in ("key", "image", "mask", "label")}
    table = pa.table(columns)
    assert pa.types.is_null(table.schema.field("image").type.field("path").type)
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "sd15-00000-of-00001.parquet")
    dataset = OpenSDID(str(tmp_path), is_resizing=True, output_size=(32, 32))
    assert len(dataset) == 5 and dataset.num_partial == 2
    assert dataset[1]["mask"].sum() > 0
