"""OpenSDID rows read in place from parquet shards with pyarrow: nothing is copied.

Opening reads each shard's footer (its row groups and column statistics) and the small
``key`` and ``label`` columns, plus the ``mask`` column's presence per row (masks are a few
KB each; the reals have none). Whether each ``image`` cell holds data is read from the column
statistics (``null_count`` per row group); only a row group whose statistics cannot show it
has its image column read at opening. An image cell holding empty bytes is therefore found
when the row is read, as "the image cell is empty", rather than at opening.

Rows are read lazily by row group: ``fetch`` reads the requested column of the row's row
group (pyarrow cannot read less of a parquet column chunk) and keeps the last few in a cache
bounded in bytes. Sequential reading thus reads each row group once; shuffled reading over
many row groups reads about one row group per row, unless the order keeps to a few row groups
at a time (``row_group_shuffle``, with ``cache_row_groups`` sizing the cache for them).

Open files and the cache belong to one process: a DataLoader worker (forked or spawned)
opens its own on first use, so nothing mutable is shared between processes.
"""
import os
from collections import OrderedDict

import numpy as np

from ..errors import DataError

OPENSDID_COLUMNS = ("key", "image", "mask", "label")
DEFAULT_CACHE_BYTES = 64 << 20


class SourceError(DataError):
    """An OpenSDID source, split, column or argument that cannot be used as given."""


class ImageDataError(DataError):
    """Bytes that are no usable image; :class:`BadSampleError` adds the row's key."""


def check_columns(names, where):
    missing = [c for c in OPENSDID_COLUMNS if c not in names]
    if missing:
        raise SourceError(f"{where} lacks the OpenSDID column(s) {missing}; found {list(names)}. OpenSDID rows "
                          f"need key (string), image (Image), mask (Image or empty), label (0 real / 1 fake)")


def labels_to_int(column, where):
    """An Arrow label column (integers, or the strings 'real'/'fake') -> int64 array, -1 for others."""
    import pyarrow as pa
    if pa.types.is_integer(column.type):
        return np.asarray(column.fill_null(-1).to_numpy(), dtype=np.int64)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        names = {"real": 0, "fake": 1}
        return np.array([names.get(v, -1) for v in column.to_pylist()], dtype=np.int64)
    raise SourceError(f"{where}: column 'label' has type {column.type}; expected integers 0/1 "
                      f"or the strings 'real'/'fake'")


def has_image_data(column):
    """Whether each cell of an Arrow Image column (struct of bytes/path, or binary) holds data."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if pa.types.is_struct(column.type):
        present = pc.is_valid(column)
        parts = []
        for field in ("bytes", "path"):
            if column.type.get_field_index(field) >= 0:
                child = pc.struct_field(column, field)
                if pa.types.is_null(child.type):  # all None: written by pyarrow or pandas, not HF datasets
                    continue
                parts.append(pc.fill_null(pc.greater(pc.binary_length(child), 0), False))
        if parts:
            anything = parts[0] if len(parts) == 1 else pc.or_(parts[0], parts[1])
            present = pc.and_(present, anything)
        return np.asarray(present.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return np.asarray(pc.fill_null(pc.greater(pc.binary_length(column), 0), False)
                          .to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)


def cell_value(column, offset):
    """The bytes (or, failing those, the path) of one Image cell; None when it holds neither."""
    value = column[offset].as_py()
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return value or None
    if value.get("bytes"):
        return value["bytes"]
    return value.get("path") or None


def _presence_from_statistics(group_meta, leaves):
    """Whether each row of a row group holds an Image cell, when its statistics tell; else None.

    ``leaves`` are the column's leaf columns (``bytes`` and ``path``, or the binary column).
    """
    rows = group_meta.num_rows
    counts = []
    for leaf in leaves:
        stats = group_meta.column(leaf).statistics
        if stats is None or not stats.has_null_count:
            return None
        counts.append(stats.null_count)
    if counts and min(counts) == 0:
        return np.ones(rows, dtype=bool)
    if counts and all(count == rows for count in counts):
        return np.zeros(rows, dtype=bool)
    return None


class ParquetRows:
    """The rows of parquet shards, in file order, read in place; see the module docstring.

    ``keys`` (list of str), ``labels`` (int64), ``has_image`` and ``has_mask`` (bool) describe
    every row without decoding; ``fetch(row, column)`` returns one cell's bytes (or path).
    """

    def __init__(self, files, where, cache_bytes=DEFAULT_CACHE_BYTES):
        import pyarrow as pa
        import pyarrow.parquet as pq
        self._files = [os.fspath(f) for f in files]
        self.cache_bytes = cache_bytes
        keys, labels, has_image, has_mask = [], [], [], []
        group_rows, group_file, group_index, group_bytes = [], [], [], []
        for file_index, path in enumerate(self._files):
            try:
                shard = pq.ParquetFile(path, pre_buffer=False)
                check_columns(shard.schema_arrow.names, where if len(self._files) == 1 else f"{where} ({path})")
                table = shard.read(columns=["key", "label"], use_threads=False)
            except pa.ArrowException as exc:  # a file that is no readable parquet
                raise SourceError(f"{path}: not readable as parquet ({exc})",
                                  hint="re-download or re-write the file") from exc
            keys += table.column("key").to_pylist()
            labels.append(labels_to_int(table.column("label"), where))
            leaves = {column: [i for i in range(len(shard.schema))
                               if shard.schema.column(i).path.split(".")[0] == column]
                      for column in ("image", "mask")}
            for group in range(shard.num_row_groups):
                meta = shard.metadata.row_group(group)
                group_rows.append(meta.num_rows)
                group_file.append(file_index)
                group_index.append(group)
                group_bytes.append(sum(meta.column(leaf).total_uncompressed_size
                                       for column in ("image", "mask") for leaf in leaves[column]))
                for column, presence in (("image", has_image), ("mask", has_mask)):
                    known = _presence_from_statistics(meta, leaves[column])
                    presence.append(known if known is not None
                                    else has_image_data(_read_group(path, shard, group, column)))
            shard.close()
        self.keys = keys
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        self.has_image = np.concatenate(has_image) if has_image else np.zeros(0, bool)
        self.has_mask = np.concatenate(has_mask) if has_mask else np.zeros(0, bool)
        # Row group g is the row group group_index[g] of file group_file[g] and holds the rows
        # [group_start[g], group_start[g + 1]).
        self._group_start = np.concatenate([[0], np.cumsum(group_rows)]).astype(np.int64)
        self._group_file, self._group_index = group_file, group_index
        self._group_bytes = np.asarray(group_bytes, dtype=np.int64)  # image and mask columns, as stored
        self._reset_process_state()

    def __len__(self):
        return len(self.keys)

    def row_groups(self, rows):
        """The row group (numbered across all shards) of each of ``rows``."""
        return np.searchsorted(self._group_start, np.asarray(rows), side="right") - 1

    def cache_row_groups(self, count):
        """Make each process's cache hold the image and mask columns of ``count`` + 1 of the largest
        row groups, at least, so that an order that keeps to ``count`` row groups at a time reads
        each once (one more as a margin: a column takes a little more memory than its stored size)."""
        largest = np.sort(self._group_bytes)[::-1][:count + 1]
        self.cache_bytes = max(self.cache_bytes, int(largest.sum()))

    def fetch(self, row, column):
        """The bytes (or path) in ``column`` of ``row``, or None where the cell is empty."""
        group = int(np.searchsorted(self._group_start, row, side="right")) - 1
        values = self._cached_group(group, column)
        return cell_value(values, int(row - self._group_start[group]))

    # -- per-process state -------------------------------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_shards"], state["_cache"], state["_cached_bytes"] = {}, OrderedDict(), 0
        return state

    def _reset_process_state(self):
        self._pid = os.getpid()
        self._shards = {}
        self._cache = OrderedDict()
        self._cached_bytes = 0

    def _cached_group(self, group, column):
        if self._pid != os.getpid():  # a forked DataLoader worker: open its own files
            self._reset_process_state()
        key = (group, column)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        file_index = self._group_file[group]
        values = _read_group(self._files[file_index], self._shard(file_index), self._group_index[group], column)
        self._cache[key] = values
        self._cached_bytes += values.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.nbytes
        return values

    def _shard(self, file_index):
        import pyarrow.parquet as pq
        if file_index not in self._shards:
            # pre_buffer=False: pages are read as they are decoded, not held all at once beside the array.
            self._shards[file_index] = pq.ParquetFile(self._files[file_index], pre_buffer=False)
        return self._shards[file_index]


def _read_group(path, shard, group, column):
    """One column of one row group of the shard at ``path``, as a single Arrow array."""
    import pyarrow as pa
    try:
        table = shard.read_row_group(group, columns=[column], use_threads=False)
    except pa.ArrowException as exc:  # truncated or corrupt pages
        raise ImageDataError(f"row group {group} of {path} does not read ({exc}); download the shard "
                             f"again") from None
    column = table.column(0)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
