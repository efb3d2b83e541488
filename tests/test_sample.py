"""The embedded OpenSDID sample: built offline, deterministic, race-safe, in the hub layout."""
import hashlib
import io
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imdlbenco_maskclip.datasets import OPENSDID_SPLITS, OpenSDID
from imdlbenco_maskclip.datasets import sample as sample_mod

EXPECTED = {  # split -> (rows, real, partial, full)
    "train/sd15": (72, 36, 27, 9),
    "test/sd15": (16, 8, 6, 2),
    "test/sd2": (18, 8, 7, 3),
    "test/sdxl": (14, 7, 6, 1),
    "test/sd3": (18, 8, 7, 3),
    "test/flux": (16, 8, 6, 2),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskclip_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMDLBENCO_MASKCLIP_CACHE", str(root))
        import datasets
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", root / "hf_datasets_cache")
        yield root


def tree_hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_sample_builds_offline_in_the_hub_layout(cache):
    root = sample_mod.ensure_sample()
    assert root == cache / f"opensdid_sample_v{sample_mod.SAMPLE_VERSION}"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))
    assert files == ["test/data/flux-00000-of-00001.parquet", "test/data/sd15-00000-of-00001.parquet",
                     "test/data/sd2-00000-of-00001.parquet", "test/data/sd3-00000-of-00001.parquet",
                     "test/data/sdxl-00000-of-00001.parquet", "train/data/sd15-00000-of-00002.parquet",
                     "train/data/sd15-00001-of-00002.parquet"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert {k: (v["rows"], v["real"], v["partial"], v["full"]) for k, v in manifest["splits"].items()} == EXPECTED
    for split in manifest["splits"].values():
        for rel, digest in split["files"].items():
            assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest
    readme = (root / "README.md").read_text()
    for name, (_, _, credit, licence) in sample_mod.PHOTOS.items():
        assert credit in readme and licence in readme
    assert not list(cache.glob(".opensdid_sample_v*.tmp-*"))  # the temp build folder is gone


@pytest.mark.parametrize("part,split", [(k.split("/")[0], k.split("/")[1]) for k in EXPECTED])
def test_sample_sources_have_the_planned_kinds(cache, part, split):
    ds = OpenSDID(f"sample:{part}#{split}", is_resizing=True, output_size=(64, 64))
    rows, real, partial, full = EXPECTED[f"{part}/{split}"]
    kinds = ds.kinds
    assert (len(ds), kinds.count("real"), kinds.count("partial"), kinds.count("full")) == (rows, real, partial, full)
    assert all(k.startswith(f"{kind}/{split}/") for k, kind in zip(ds.keys, kinds))
    assert ds.validate() == 0 and not ds.skipped
    sizes = set()
    for i in range(len(ds)):
        image, mask, label = ds.read(i)
        h, w = image.shape[:2]
        sizes.add((h, w))
        assert 192 <= h <= 320 and 192 <= w <= 320
        area = (mask.mean(axis=2) > 127.5).mean()
        assert {"real": area == 0, "full": area == 1, "partial": 0.005 < area < 0.6}[kinds[i]], ds.keys[i]
        assert label == (kinds[i] != "real")
    assert len(sizes) >= 4 and any(h != w for h, w in sizes)


def test_sample_splits_and_edits(cache):
    assert sorted(sample_mod.PLANS["test"]) == sorted(OPENSDID_SPLITS)
    keys = OpenSDID("sample:train", is_resizing=True).keys
    for edit in ("splice", "copymove", "inpaint"):
        assert sum(k.endswith(f"_{edit}.png") for k in keys) == 9
    with pytest.raises(ValueError, match=r"several splits \['flux', 'sd15', 'sd2', 'sd3', 'sdxl'\]"):
        OpenSDID("sample:test", is_resizing=True)
    # Grey photos stay single-channel in the files, as some real datasets have them.
    import pyarrow.parquet as pq
    table = pq.read_table(sample_mod.sample_dir() / "train/data/sd15-00000-of-00002.parquet")
    modes = {key: Image.open(io.BytesIO(cell["bytes"])).mode
             for key, cell in zip(table.column("key").to_pylist(), table.column("image").to_pylist())}
    assert {m for k, m in modes.items() if "_camera" in k or "_coins" in k} == {"L"}
    assert {m for k, m in modes.items() if "_chelsea" in k or "_astronaut" in k} == {"RGB"}


@pytest.mark.parametrize("edit", ["splice", "copymove", "inpaint"])
def test_edit_masks_are_exact(edit):
    """Outside the mask every pixel is the photo's; inside, (almost) every pixel changed."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)
    plan = sample_mod.PLANS["test"]["sd2"]
    if edit == "splice":
        out, mask = sample_mod._splice(img, rng.integers(0, 256, img.shape, dtype=np.uint8), plan, rng)
    else:
        out, mask = sample_mod._EDIT_FUNCS[edit](img, plan, rng)
    assert mask.dtype == bool and 0.02 < mask.mean() < 0.5
    assert np.array_equal(out[~mask], img[~mask])
    assert (out[mask] != img[mask]).any(axis=1).mean() > 0.9


def test_full_resynthesis_changes_the_whole_image():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    out = sample_mod._resynthesise(img, rng)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out != img).any(axis=2).mean() > 0.95


def test_sample_is_deterministic(tmp_path):
    sample_mod.write_sample(tmp_path / "a")
    sample_mod.write_sample(tmp_path / "b")
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")
    assert len(tree_hashes(tmp_path / "a")) == 11


def _build_in(cache_dir, queue):
    import os
    os.environ["IMDLBENCO_MASKCLIP_CACHE"] = cache_dir
    queue.put(str(sample_mod.ensure_sample()))


def test_two_processes_asking_at_once_get_one_sample_built_once(tmp_path, monkeypatch):
    builds = tmp_path / "builds"
    builds.mkdir()
    build = sample_mod.build_sample

    def slow_build_recorded(out_dir):
        import os
        import time
        (builds / str(os.getpid())).touch()
        time.sleep(1.0)  # both processes are asking meanwhile
        return build(out_dir)

    monkeypatch.setattr(sample_mod, "build_sample", slow_build_recorded)  # inherited by the forked processes
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in, args=(str(cache), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list(builds.iterdir())) == 1  # the second waited for the first, then read its sample
    paths = {queue.get(timeout=5) for _ in procs}
    assert paths == {str(cache / f"opensdid_sample_v{sample_mod.SAMPLE_VERSION}")}
    root = Path(paths.pop())
    manifest = json.loads((root / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for rel, digest in split["files"].items():
            assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest
    assert not list(cache.glob(".opensdid_sample_v*.tmp-*"))


def test_sample_and_preview_commands(cache, tmp_path, capsys):
    from imdlbenco_maskclip.cli import main
    assert main(["sample"]) == 0
    assert capsys.readouterr().out.strip() == str(sample_mod.sample_dir())
    out = tmp_path / "grid.png"
    assert main(["preview", "sample:test#sd3", "-n", "8", "--output", str(out)]) == 0
    with Image.open(out) as im:
        # 3.2 x 3.4 inches per cell at 90 dpi: 8 samples in the default 4 columns are 2 rows
        assert im.format == "PNG" and im.size == (1152, 612)
        pixels = np.asarray(im.convert("RGB"))
    # The red outlines of the partial edits are drawn.
    assert ((pixels[:, :, 0] > 200) & (pixels[:, :, 1] < 60) & (pixels[:, :, 2] < 60)).sum() > 100
