"""Parquet shards read in place: what opening reads, what each row reads, and that nothing is
written or shared between processes. Shards are written here with pyarrow in the hub's schema
(Image columns as structs of bytes and path), several row groups each."""
import io
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from imdlbenco_maskclip.datasets import BadSampleError, OpenSDID, SourceError, parquet_rows
from imdlbenco_maskclip.datasets.parquet_rows import ParquetRows

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(seed, size=(20, 24), mask=False):
    rng = np.random.default_rng(seed)
    if mask:
        arr = np.zeros(size, np.uint8)
        arr[2:10, 3:12] = 255
    else:
        arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def rows(split, count, start=0):
    """Reals, partial fakes (with masks) and fully generated fakes in turn."""
    out = []
    for i in range(start, start + count):
        kind = ("real", "partial", "full")[i % 3]
        out.append({"key": f"{kind}/{split}/{'real' if kind == 'real' else 'fake'}/{i:04d}.png",
                    "image": {"bytes": png(i), "path": None},
                    "mask": {"bytes": png(i, mask=True), "path": None} if kind == "partial" else None,
                    "label": int(kind != "real")})
    return out


def write_shard(path, shard_rows, row_group_size=4):
    table = pa.table({"key": pa.array([r["key"] for r in shard_rows], pa.string()),
                      "image": pa.array([r["image"] for r in shard_rows], IMAGE),
                      "mask": pa.array([r["mask"] for r in shard_rows], IMAGE),
                      "label": pa.array([r["label"] for r in shard_rows], pa.int64())})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.fixture
def shards(tmp_path):
    """Two sd15 shards of 10 rows in row groups of 4, 4, 2; one sd2 shard."""
    data = tmp_path / "hub" / "data"
    files = [write_shard(data / f"sd15-{i:05d}-of-00002.parquet", rows("sd15", 10, start=10 * i))
             for i in range(2)]
    write_shard(data / "sd2-00000-of-00001.parquet", rows("sd2", 6))
    return files


@pytest.fixture
def group_reads(monkeypatch):
    """Every (file, row group, column) that ParquetRows reads from a shard."""
    reads = []
    original = parquet_rows._read_group

    def counted(path, shard, group, column):
        reads.append((Path(path).name, group, column))
        return original(path, shard, group, column)
    monkeypatch.setattr(parquet_rows, "_read_group", counted)
    return reads


def tree(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def test_rows_metadata_and_cells_match_the_shards(shards):
    store = ParquetRows(shards, "hub#sd15")
    expected = rows("sd15", 20)
    assert len(store) == 20 and store.keys == [r["key"] for r in expected]
    assert list(store.labels) == [r["label"] for r in expected]
    assert store.has_image.all() and list(store.has_mask) == [r["mask"] is not None for r in expected]
    for row in (0, 5, 9, 10, 19):  # first and last rows of shards and row groups
        assert store.fetch(row, "image") == expected[row]["image"]["bytes"]
        mask = expected[row]["mask"]
        assert store.fetch(row, "mask") == (mask["bytes"] if mask else None)


def test_opening_reads_no_image_column_when_statistics_tell(shards, group_reads):
    store = ParquetRows(shards, "hub#sd15")
    assert not [r for r in group_reads if r[2] == "image"]
    # Masks: only the row groups that mix rows with and without a mask are read.
    assert {r[2] for r in group_reads} == {"mask"}
    group_reads.clear()
    store.fetch(13, "image")  # second shard, row 3: its first row group
    assert group_reads == [(shards[1].name, 0, "image")]


def test_reading_in_order_reads_each_row_group_once(shards, group_reads):
    store = ParquetRows(shards, "hub#sd15")
    group_reads.clear()
    for row in range(len(store)):
        store.fetch(row, "image")
    assert group_reads == [(f.name, g, "image") for f in shards for g in range(3)]


def test_cache_is_bounded_in_bytes(shards, group_reads):
    store = ParquetRows(shards, "hub#sd15", cache_bytes=1)  # keeps only the last row group
    group_reads.clear()
    for row in (0, 1, 4, 0):
        store.fetch(row, "image")
    assert [r[1] for r in group_reads] == [0, 1, 0]
    assert len(store._cache) == 1


def test_a_missing_image_is_found_at_opening_from_the_column(tmp_path, group_reads):
    shard_rows = rows("sd15", 6)
    shard_rows[4]["image"] = None
    path = write_shard(tmp_path / "data" / "sd15-00000-of-00001.parquet", shard_rows)
    store = ParquetRows([path], "x")
    assert list(store.has_image) == [True] * 4 + [False, True]
    assert (path.name, 1, "image") in group_reads and (path.name, 0, "image") not in group_reads
    with pytest.raises(BadSampleError, match=r"partial/sd15/fake/0004.png.*image cell is empty"):
        OpenSDID(str(tmp_path), is_resizing=True)


def test_empty_image_bytes_are_reported_when_the_row_is_read(tmp_path):
    shard_rows = rows("sd15", 3)
    shard_rows[2]["image"] = {"bytes": b"", "path": None}
    write_shard(tmp_path / "data" / "sd15-00000-of-00001.parquet", shard_rows)
    dataset = OpenSDID(str(tmp_path), is_resizing=True, output_size=(16, 16))
    with pytest.raises(BadSampleError, match=r"full/sd15/fake/0002.png.*image cell is empty"):
        dataset[2]


def test_missing_columns_name_the_shard(tmp_path, shards):
    table = pq.read_table(shards[0]).drop_columns(["mask"])
    pq.write_table(table, shards[1])
    with pytest.raises(SourceError, match=r"sd15-00001-of-00002.parquet.*\['mask'\].*\['key', 'image', 'label'\]"):
        ParquetRows(shards, "hub#sd15")


def test_a_file_that_is_no_parquet_is_named(tmp_path, shards):
    shards[1].write_bytes(b"PAR1 but nothing else")
    with pytest.raises(SourceError, match=r"sd15-00001-of-00002.parquet: not readable as parquet") as info:
        ParquetRows(shards, "hub#sd15")
    assert "re-download" in info.value.hint


def test_opening_and_reading_write_nothing(tmp_path, shards, monkeypatch):
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    before = tree(tmp_path)
    dataset = OpenSDID(str(tmp_path / "hub"), split="sd15", is_resizing=True, output_size=(16, 16))
    for index in range(len(dataset)):
        dataset[index]
    assert tree(tmp_path) == before


def test_dataloader_workers_open_their_own_files(shards):
    dataset = OpenSDID(str(shards[0].parent.parent), split="sd15", is_resizing=True, output_size=(16, 16))
    dataset[0]  # the parent process has a file open and a row group cached
    assert dataset._store._shards and dataset._store._cache
    in_process = [dataset[i]["image"] for i in range(len(dataset))]
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=2, multiprocessing_context="fork")
    images = torch.cat([batch["image"] for batch in loader])
    assert torch.equal(images, torch.stack(in_process))
    # What a spawned worker receives: the row index, no open file and no cached row group.
    state = dataset._store.__getstate__()
    assert state["_shards"] == {} and len(state["_cache"]) == 0 and state["keys"] == dataset._store.keys


def _open_in_child(root, queue):
    store = OpenSDID(root, split="sd15", is_resizing=True)._store
    queue.put((os.getpid(), len(store), store.fetch(len(store) - 1, "image")[:8]))


def test_two_processes_open_the_same_shards_at_once(tmp_path, shards):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_open_in_child, args=(str(tmp_path / "hub"), queue)) for _ in range(2)]
    before = tree(tmp_path)
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert len({pid for pid, _, _ in results}) == 2
    assert [r[1:] for r in results] == [(20, b"\x89PNG\r\n\x1a\n")] * 2
    assert tree(tmp_path) == before  # no cache, no lock file
