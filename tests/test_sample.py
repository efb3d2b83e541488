"""The embedded OpenSDID sample: built offline, deterministic, race-safe, in the hub layout."""
import hashlib
import io
import json
import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from imdlbenco_maskclip.datasets import OPENSDID_SPLITS, OpenSDID, SourceError
from imdlbenco_maskclip.datasets import sample as sample_mod

EXPECTED = {  # split -> (rows, real, partial, full)
    "train/sd15": (300, 80, 180, 40),
    "test/sd15": (84, 30, 44, 10),
    "test/sd2": (82, 30, 43, 9),
    "test/sdxl": (81, 29, 42, 10),
    "test/sd3": (84, 30, 44, 10),
    "test/flux": (83, 30, 43, 10),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskclip_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMDLBENCO_MASKCLIP_CACHE", str(root))
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
        assert sum(k.endswith(f"_{edit}.png") for k in keys) == 60
    with pytest.raises(SourceError, match=r"several splits \['flux', 'sd15', 'sd2', 'sd3', 'sdxl'\]"):
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
    generator = sample_mod.Generator("sd2")
    if edit == "splice":
        out, mask = sample_mod._splice(img, rng.integers(0, 256, img.shape, dtype=np.uint8), generator, rng)
    else:
        out, mask = sample_mod._EDIT_FUNCS[edit](img, generator, rng)
    assert mask.dtype == bool and 0.02 < mask.mean() < 0.5
    assert np.array_equal(out[~mask], img[~mask])
    assert (out[mask] != img[mask]).any(axis=1).mean() > 0.9


@pytest.fixture(scope="module")
def photos():
    return sample_mod._load_photos()


def on_model_grid(img):
    """What the model sees of an image at the demo's input handling: BenCo's resize (OpenCV bilinear)."""
    n = sample_mod.DECODE_SIZE
    return cv2.resize(img, (n, n), interpolation=cv2.INTER_LINEAR).astype(np.float64)


def traces(split, photo, seed):
    """What a split's generator leaves, measured on the model's input grid as a detector could:
    on a photo, the share of its fine detail and of its colour that comes through (regression
    slopes, which the generator's noise does not bias); on a flat grey image, the lattice along
    sd15's pattern (the chroma residual averaged per latent-grid phase, projected on sd15's
    tile) and the grain (what is left of the luminance)."""
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(seed)
    generator = sample_mod.Generator(split)
    img = sample_mod._crop(photo, (0.0, 1.0), (256, 320), rng)
    out, img = on_model_grid(generator(img, rng)), on_model_grid(img)
    slope = lambda y, x: (x * y).sum() / (x * x).sum()  # noqa: E731
    fine = lambda a: a - gaussian_filter(a, (1.5, 1.5, 0))  # noqa: E731
    chroma = lambda a: a - a.mean(axis=2, keepdims=True)  # noqa: E731
    flat = on_model_grid(generator(np.full((240, 304, 3), 128, np.uint8), rng))
    f, n = sample_mod.GENERATORS[split]["latent"], sample_mod.DECODE_SIZE
    direction = sample_mod._LATTICE_COLOUR[3]
    along = flat @ direction / (direction @ direction)
    lattice = along.reshape(n // f, f, n // f, f).mean(axis=(0, 2))
    sd15_tile = sample_mod.Generator("sd15").tile
    grain = (flat.mean(axis=2) - flat.mean()).std()
    return np.array([slope(fine(out), fine(img)), (lattice * sd15_tile).mean(), grain,
                     slope(chroma(out), chroma(img))])


def test_each_split_has_its_own_generator_traces_and_flux_differs_most_from_sd15(photos):
    """Traces are consistent within a split (two photos, two seeds) and differ between splits,
    growing from sd2 to flux away from sd15's (the model trained on sd15 should find least in flux)."""
    chelsea, coffee = photos["chelsea"], photos["coffee"]
    splits = ["sd15", "sd2", "sdxl", "sd3", "flux"]
    scale = np.ptp([traces(s, chelsea, 0) for s in splits], axis=0)  # each trace's range over the splits
    distance = lambda a, b: np.linalg.norm((a - b) / scale)  # noqa: E731
    same = {s: distance(traces(s, chelsea, 0), traces(s, coffee, 1)) for s in splits}
    from_sd15 = {s: distance(traces("sd15", chelsea, 0), traces(s, coffee, 1)) for s in splits[1:]}
    assert max(same.values()) < min(from_sd15.values()), (same, from_sd15)
    assert list(from_sd15) == sorted(from_sd15, key=from_sd15.get), from_sd15


def test_generator_changes_every_pixel_the_same_way_every_time():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    out = sample_mod.Generator("sd15")(img, np.random.default_rng(3))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out != img).any(axis=2).mean() > 0.95
    assert np.array_equal(out, sample_mod.Generator("sd15")(img, np.random.default_rng(3)))
    grey = sample_mod.Generator("flux")(img[:, :, :1], rng)
    assert grey.shape == (64, 80, 1)


def test_sample_is_deterministic(tmp_path):
    # Built again: byte for byte the sample that every other test reads.
    sample_mod.write_sample(tmp_path / "again")
    assert tree_hashes(tmp_path / "again") == tree_hashes(sample_mod.ensure_sample())
    assert len(tree_hashes(tmp_path / "again")) == 11


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
