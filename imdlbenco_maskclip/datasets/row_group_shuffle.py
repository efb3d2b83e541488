"""A training order for samples stored in parquet row groups: shuffled, yet read group by group.

A sample read from parquet costs its row group's column (pyarrow reads no less), so a fully
random order reads about one row group per sample. :class:`RowGroupShuffleSampler` shuffles
as streaming loaders do: each epoch takes the row groups in a random order and shuffles the
samples within windows of ``window`` consecutive row groups of that order. A process whose
row-group cache holds one window (``ParquetRows.cache_row_groups``) then reads each of its
row groups once per epoch.

Ranks, as ``DistributedSampler``: every rank draws the same epoch order from ``(seed,
epoch)`` (``set_epoch``) and takes its own contiguous share of it, padded with the order's
first samples so that every share has the same length (at most ``num_replicas - 1``
samples twice per epoch; none when the dataset divides evenly). Contiguous shares keep each
rank in its own row groups; a row group at a boundary is read by both ranks.

DataLoader workers: a DataLoader hands batch ``b`` to worker ``b % num_workers``. The sampler
cuts its share into one contiguous part per worker, whole batches each, shuffles windows
within each part and deals the parts' batches in that same turn, so each worker reads its
own row groups. Each worker keeps its own cache, so the memory cost is one window of row
groups (their image and mask columns) per worker. The share's last ``len % batch_size``
samples, which a ``drop_last`` DataLoader drops, come last: the tail of the last part's
shuffle, so which samples are dropped changes every epoch.
"""
import numpy as np
import torch


class RowGroupShuffleSampler(torch.utils.data.Sampler):
    """Dataset indices in a row-group-local shuffled order; see the module docstring.

    ``row_groups``: the row group of each sample (any integer ids, one per dataset index).
    ``window``: row groups whose samples are shuffled together (>= 1). ``batch_size`` and
    ``num_workers``: the DataLoader's, so that each worker's batches come from its own row
    groups. ``num_replicas``, ``rank``, ``seed``, ``set_epoch``: as ``DistributedSampler``.
    """

    def __init__(self, row_groups, window=4, batch_size=1, num_workers=0, num_replicas=1, rank=0, seed=0):
        if window < 1 or batch_size < 1 or num_workers < 0 or not 0 <= rank < num_replicas:
            raise ValueError(f"RowGroupShuffleSampler: window {window} and batch_size {batch_size} must be >= 1, "
                             f"num_workers {num_workers} >= 0, rank {rank} in [0, {num_replicas})")
        self.row_groups = np.asarray(row_groups)
        self.window, self.batch_size, self.workers = window, batch_size, max(1, num_workers)
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.num_samples = -(-len(self.row_groups) // num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        return iter(self.order().tolist())

    def order(self):
        """This rank's indices for the current epoch, as the DataLoader should receive them."""
        rng = np.random.default_rng([self.seed % 2**32, self.epoch])
        groups = self.row_groups
        ids, group_of = np.unique(groups, return_inverse=True)
        group_position = rng.permutation(len(ids))[group_of]
        in_group_order = np.lexsort((rng.random(len(groups)), group_position))
        padded = np.resize(in_group_order, self.num_samples * self.num_replicas)  # repeats from the start
        share = padded[self.rank * self.num_samples:(self.rank + 1) * self.num_samples]
        batches = len(share) // self.batch_size
        per_worker = [batches // self.workers + (w < batches % self.workers) for w in range(self.workers)]
        cuts = np.cumsum([0] + per_worker) * self.batch_size
        cuts[-1] = len(share)  # the last part takes the samples that fill no whole batch
        parts = [self._shuffle_windows(share[a:b], rng) for a, b in zip(cuts[:-1], cuts[1:])]
        dealt = [part[turn * self.batch_size:(turn + 1) * self.batch_size]
                 for turn in range(max(per_worker)) for part, count in zip(parts, per_worker) if turn < count]
        tail = parts[-1][per_worker[-1] * self.batch_size:]
        return np.concatenate(dealt + [tail]).astype(np.int64)

    def _shuffle_windows(self, part, rng):
        """``part`` (samples in row-group order) shuffled within windows of ``window`` row groups."""
        groups = self.row_groups[part]
        group_number = np.cumsum(np.diff(groups, prepend=groups[:1]) != 0)  # 0, 0, 1, 1, 1, 2, ...
        return part[np.lexsort((rng.random(len(part)), group_number // self.window))]
