"""The training order of parquet sources: every sample once per epoch across ranks, a new order
per epoch and seed, each DataLoader worker kept to its own row groups a window at a time, and
the loader of an OpenSDID parquet source using it (other sources keep BenCo's samplers)."""
from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

from imdlbenco_maskclip.datasets import parquet_rows
from imdlbenco_maskclip.datasets.parquet_rows import ParquetRows
from imdlbenco_maskclip.datasets.row_group_shuffle import RowGroupShuffleSampler
from imdlbenco_maskclip.engine import data
from imdlbenco_maskclip.errors import UserError
from imdlbenco_maskclip.flags import parse
from test_parquet_rows import png, rows, write_shard


def ragged_groups(count=23, seed=0):
    """Row group ids of samples as a subset leaves them: groups of 1-12 samples, ids not 0..n."""
    sizes = np.random.default_rng(seed).integers(1, 13, count)
    return np.repeat(np.arange(count) * 7 + 3, sizes)


def lru_misses(groups, capacity):
    """Row-group reads of a reader that caches the last ``capacity`` row groups."""
    cache, misses = OrderedDict(), 0
    for group in groups:
        if group in cache:
            cache.move_to_end(group)
            continue
        misses += 1
        cache[group] = True
        if len(cache) > capacity:
            cache.popitem(last=False)
    return misses


@pytest.mark.parametrize("replicas, workers, batch", [(1, 0, 1), (1, 3, 4), (2, 0, 3), (2, 2, 4)])
def test_every_sample_once_per_epoch_across_ranks(replicas, workers, batch):
    groups = ragged_groups()
    samplers = [RowGroupShuffleSampler(groups, window=3, batch_size=batch, num_workers=workers,
                                       num_replicas=replicas, rank=rank, seed=5) for rank in range(replicas)]
    shares = [list(s) for s in samplers]
    assert {len(share) for share in shares} == {len(samplers[0])} == {-(-len(groups) // replicas)}
    counts = Counter(i for share in shares for i in share)
    assert set(counts) == set(range(len(groups)))
    # like DistributedSampler: padded to equal shares, so at most replicas - 1 samples come twice
    assert sum(counts.values()) - len(groups) == (-len(groups)) % replicas
    assert max(counts.values()) <= 2


def test_order_changes_with_epoch_and_seed_and_repeats_for_both():
    groups = ragged_groups()

    def order(seed, epoch):
        sampler = RowGroupShuffleSampler(groups, window=2, batch_size=2, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)
    # the row groups come in another order too, not only the samples within them
    first_groups = {seed: [groups[i] for i in order(seed, 0)][:5] for seed in (1, 2, 3)}
    assert len({tuple(g) for g in first_groups.values()}) == 3


def test_each_dataloader_worker_reads_its_own_row_groups_once_a_window_at_a_time():
    """A real DataLoader deals the batches; each worker's samples, in the order it got them,
    touch each of its row groups once through a cache of ``window`` row groups, and the two
    workers share at most the row group at their boundary."""
    groups = ragged_groups(count=40, seed=1)

    class WhoReads(torch.utils.data.Dataset):
        def __len__(self):
            return len(groups)

        def __getitem__(self, index):
            return torch.tensor([index, torch.utils.data.get_worker_info().id])

    window = 3
    sampler = RowGroupShuffleSampler(groups, window=window, batch_size=4, num_workers=2, seed=0)
    sampler.set_epoch(3)
    loader = DataLoader(WhoReads(), sampler=sampler, batch_size=4, num_workers=2, drop_last=True)
    got = torch.cat(list(loader)).tolist()
    assert len(got) == len(groups) // 4 * 4
    per_worker = {w: [groups[i] for i, who in got if who == w] for w in (0, 1)}
    for worker_groups in per_worker.values():
        assert lru_misses(worker_groups, capacity=window) == len(set(worker_groups))
        # shuffled within windows, not read group after group
        changes = sum(a != b for a, b in zip(worker_groups, worker_groups[1:]))
        assert changes > 2 * len(set(worker_groups))
    assert len(set(per_worker[0]) & set(per_worker[1])) <= 1
    # a fully random order, for scale: the same cache reads several times as many row groups
    shuffled = groups[np.random.default_rng(0).permutation(len(groups))]
    assert lru_misses(shuffled, capacity=window) > 3 * len(set(groups))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="window"):
        RowGroupShuffleSampler([0, 0, 1], window=0)
    with pytest.raises(ValueError, match="rank"):
        RowGroupShuffleSampler([0, 0, 1], num_replicas=2, rank=2)


@pytest.fixture
def parquet_source(tmp_path):
    """Two shards of 15 rows in row groups of 3: 10 row groups."""
    data_dir = tmp_path / "hub" / "data"
    return [write_shard(data_dir / f"sd15-{i:05d}-of-00002.parquet", rows("sd15", 15, start=15 * i), row_group_size=3)
            for i in range(2)]


def test_parquet_rows_in_this_order_read_each_row_group_once(parquet_source, monkeypatch):
    reads = Counter()
    original = parquet_rows._read_group

    def counted(path, shard, group, column):
        reads[(path, group, column)] += 1
        return original(path, shard, group, column)

    monkeypatch.setattr(parquet_rows, "_read_group", counted)

    def read_all(order):
        """Image row groups read, each how often, by a fresh process (as each epoch's DataLoader
        workers are) whose cache holds what ``cache_row_groups(2)`` asks for."""
        store = ParquetRows(parquet_source, "test", cache_bytes=0)
        store.cache_row_groups(2)
        reads.clear()
        for row in order:
            store.fetch(row, "image")
            if store.has_mask[row]:
                store.fetch(row, "mask")
        return [n for (_, _, column), n in reads.items() if column == "image"]

    groups = ParquetRows(parquet_source, "test").row_groups(np.arange(30))
    assert list(groups) == [i // 3 for i in range(30)]
    sampler = RowGroupShuffleSampler(groups, window=2, seed=3)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        image_reads = read_all(list(sampler))
        assert len(image_reads) == 10 and set(image_reads) == {1}
    assert sum(read_all(np.random.default_rng(0).permutation(30))) > 15


def train_args(source, *extra):
    args, _ = parse("train", ["--model", "MaskCLIP", "--model_setting", "tiny", "--data_path", str(source),
                              "--device", "cpu", "--num_workers", "0", "--batch_size", "2", "--image_size", "32",
                              *extra])
    args.distributed = False  # as runtime.start sets it for one process
    return args


def test_a_parquet_source_trains_in_row_group_order(parquet_source):
    args = train_args(parquet_source[0].parents[1], "--shuffle_window", "2")
    dataset = data.open_train_dataset(args)
    sampler = data.train_loader(dataset, args).sampler
    assert isinstance(sampler, RowGroupShuffleSampler) and sampler.window == 2
    assert sorted(sampler) == list(range(len(dataset)))
    assert list(sampler.row_groups) == [i // 3 for i in range(30)]  # OpenSDID's samples are the shards' rows


def test_other_sources_and_window_zero_keep_bencos_sampler(parquet_source, tmp_path):
    args = train_args(parquet_source[0].parents[1], "--shuffle_window", "0")
    assert isinstance(data.train_loader(data.open_train_dataset(args), args).sampler, RandomSampler)
    for i, kind in enumerate(("real", "fake") * 2):  # an image folder: no row groups
        folder = tmp_path / "folder" / "sd15" / kind
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(png(i))
    args = train_args(tmp_path / "folder")
    assert isinstance(data.train_loader(data.open_train_dataset(args), args).sampler, RandomSampler)
    with pytest.raises(UserError, match="--shuffle_window"):
        train_args(parquet_source[0].parents[1], "--shuffle_window", "-1")
