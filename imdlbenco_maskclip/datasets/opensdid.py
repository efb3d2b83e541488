"""OpenSDID (OpenSDI, CVPR 2025) as an IMDL-BenCo dataset.

``OpenSDID`` subclasses BenCo's ``AbstractDataset``: it only says where rows come
from (``_init_dataset_path``) and how one row becomes BenCo's raw tuple
(``_get_image``); BenCo's own ``__getitem__`` does augmentation, label
recomputation, binarisation, edge masks, resize/pad and post functions, so the
dict is exactly what BenCo's ``JsonDataset`` would give for the same files.

Sources (``path``; ``<source>#<split>`` selects a split):

* a hub id such as ``nebula/OpenSDI_test``: only the requested split's parquet
  files are fetched (``data/<split>-NNNNN-of-NNNNN.parquet`` on the hub); with
  ``HF_HUB_OFFLINE=1`` the local hub cache is used;
* a local directory of parquet shards laid out as on the hub: a file named
  ``<split>-NNNNN-of-NNNNN.parquet`` or ``<split>.parquet`` belongs to
  ``<split>``, any other parquet file to the split named by its parent folder
  (the hub's ``refs/convert/parquet`` layout ``default/<split>/0000.parquet``);
* a ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` directory;
* an image folder: ``<root>/<split>/real/<file>`` (real),
  ``<root>/<split>/fake/<file>`` (fake) and ``<root>/<split>/masks/<stem>.png``
  (mask of the fake ``<stem>.*``); a fake with a mask is a local edit (key
  ``partial/<split>/fake/<file>``), a fake without one is fully generated (key
  ``full/<split>/fake/<file>``); reals get key ``real/<split>/real/<file>``;
  files whose names start with ``.`` are not samples;
* ``sample:train`` / ``sample:test``: the embedded sample (``sample.py``).

Row semantics (one rule, from key and label only, so it is known without
decoding anything): a row is a *partial* fake when ``label == 1`` and its key
contains ``partial``; its mask is required and is used as given (RGB uint8,
BenCo binarises mean > 127.5). Any other fake is fully generated: its mask is
all 255. A real has an all-zero mask. Masks stored on reals or on fully
generated fakes are not used; how many were ignored is warned once at
construction. The ``pixel`` subset is exactly the partial fakes.

The authors' loader (their ``hf_datasets.py``) differs: it uses a stored mask on
any fake, partial or not (all 255 only where none is stored), and its pixel
subset keeps the rows whose key holds both ``partial`` and ``fake``, whatever the
label. On the hub data, where only partial fakes carry masks and their keys hold
``fake``, both readings give the same masks and subsets.

Bad data. Checks that need no decoding (label not 0/1, key segment ``real`` or
``fake`` contradicting the label, a partial fake with no mask, a row with no
image or no key) run at construction over the whole split, whatever the subset; decoding errors, a mask of another size, an empty
partial mask and unsupported pixel formats are found when the row is read.
``on_bad_sample="error"`` raises :class:`BadSampleError` naming the key and the
fix. ``on_bad_sample="skip"`` records the row in ``skipped`` (key -> reason),
warns once per skipped key and, inside ``__getitem__``, returns the next valid
row instead, so a batch never breaks. Rows found bad at read time stay in
``len()`` until :meth:`OpenSDID.validate` is run; run it before evaluation so no
sample is substituted (it drops the bad rows from the index). In DataLoader
worker processes the records live in the workers; the warnings still print.
"""
import io
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from IMDLBenCo.datasets.abstract_dataset import AbstractDataset
from IMDLBenCo.datasets.utils import pil_loader
from IMDLBenCo.registry import DATASETS

from ..errors import DataError
from .mask_area import MaskAreaMixin
from .parquet_rows import (ImageDataError, ParquetRows, SourceError, cell_value, check_columns, has_image_data,
                           labels_to_int)

OPENSDID_SPLITS = ("sd15", "sd2", "sdxl", "sd3", "flux")
SAMPLE_SOURCES = ("sample:train", "sample:test")

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_SHARD_RE = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}\.parquet$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class BadSampleError(DataError):
    """One row of an OpenSDID source (or a BR-Gen folder) that cannot be used; ``key`` names it.

    A DataLoader worker's error reaches the main process rebuilt from its traceback text,
    as ``BadSampleError(text)``: ``key`` and ``reason`` are then None.
    """

    hint = "--on_bad_sample skip leaves such samples out, counted and listed"

    def __init__(self, key, reason=None):
        super().__init__(key if reason is None else f"sample {key!r}: {reason}")
        self.key, self.reason = (None, None) if reason is None else (key, reason)


class OpenSDIDWarning(UserWarning):
    pass


# ---------------------------------------------------------------------------
# pixel conversion

def to_rgb_uint8(img):
    """A PIL image as HWC uint8 RGB.

    16-bit greys are scaled by 1/257 (65535 -> 255) rather than clipped, which is
    what ``Image.convert('RGB')`` would do. Alpha is dropped like BenCo's
    ``pil_loader`` does, so exported files read back identically.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.int64)
        arr = (np.clip(arr, 0, 65535) + 128) // 257
        return np.repeat(arr.astype(np.uint8)[:, :, None], 3, axis=2)
    if mode == "F":
        raise ImageDataError("32-bit float pixels have no agreed range; store 8- or 16-bit images")
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def _open_image(data, what):
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
        img.load()
    except Exception as exc:  # PIL raises several unrelated types for broken files
        raise ImageDataError(f"{what} does not decode ({type(exc).__name__}: {exc}); "
                             f"re-encode it or remove the row") from exc
    return img


def sample_name(key):
    """The file-like name BenCo reports for a row (``name`` in its dict)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_") or "sample"
    root, ext = os.path.splitext(stem)
    if ext.lower() in _IMAGE_EXTS:
        stem = root
    return stem + ".png"


# ---------------------------------------------------------------------------
# row stores: the metadata of every row plus a way to fetch one row's bytes

class _ArrowRows:
    """Rows of an HF ``datasets.Dataset`` (memory-mapped Arrow), read one at a time."""

    def __init__(self, hf_dataset, where):
        check_columns(hf_dataset.column_names, where)
        self._ds = hf_dataset.with_format("arrow")
        table = self._ds[0:len(self._ds)]  # zero-copy view of the memory-mapped table
        self.keys = table.column("key").to_pylist()
        self.labels = labels_to_int(table.column("label"), where)
        self.has_image = has_image_data(table.column("image"))
        self.has_mask = has_image_data(table.column("mask"))

    def __len__(self):
        return len(self.keys)

    def fetch(self, row, column):
        return cell_value(self._ds[int(row)].column(column), 0)


class _FolderRows:
    """Rows of the image-folder layout; every cell is a file path."""

    def __init__(self, split_dir, split):
        self.keys, labels, self._images, self._masks = [], [], [], []
        mask_dir = split_dir / "masks"
        masks = {p.stem: p for p in _visible_files(mask_dir)} if mask_dir.is_dir() else {}
        used = set()
        for sub, label in (("real", 0), ("fake", 1)):
            d = split_dir / sub
            for f in (_visible_files(d) if d.is_dir() else []):
                mask = masks.get(f.stem) if label == 1 else None
                if mask is not None:
                    used.add(f.stem)
                kind = "real" if label == 0 else ("partial" if mask is not None else "full")
                self.keys.append(f"{kind}/{split}/{sub}/{f.name}")
                labels.append(label)
                self._images.append(str(f))
                self._masks.append(None if mask is None else str(mask))
        orphans = sorted(set(masks) - used)
        if orphans:
            warnings.warn(f"{split_dir}: {len(orphans)} mask(s) match no image in fake/ and are not "
                          f"used (first: {orphans[:5]}); a mask must share its fake's file stem",
                          OpenSDIDWarning, stacklevel=3)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.has_image = np.ones(len(self.keys), dtype=bool)
        self.has_mask = np.array([m is not None for m in self._masks], dtype=bool)

    def __len__(self):
        return len(self.keys)

    def fetch(self, row, column):
        return self._images[row] if column == "image" else self._masks[row]


def _visible_files(d):
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


# ---------------------------------------------------------------------------
# source resolution

def parse_source(path):
    """``'<source>#<split>'`` -> (source, split or None). A path that exists wins."""
    path = os.fspath(path)
    if "#" in path and not os.path.exists(path):
        source, split = path.rsplit("#", 1)
        return source, (split or None)
    return path, None


def choose_split(available, requested, where):
    available = sorted(available)
    if not available:
        raise SourceError(f"{where} holds no OpenSDID split")
    if requested is None:
        if len(available) == 1:
            return available[0]
        raise SourceError(f"{where} has several splits {available}; choose one with split=... (commands: --split, "
                          f"--train_split or --test_splits) or '<source>#<split>' (OpenSDID splits: "
                          f"{list(OPENSDID_SPLITS)})")
    if requested not in available:
        raise SourceError(f"unknown split {requested!r} for {where}; valid splits here: {available}")
    return requested


def parquet_split_of(relpath):
    """The split a parquet file belongs to in the hub layout, or None."""
    parts = Path(relpath).parts
    name = parts[-1]
    m = _SHARD_RE.match(name)
    if m:
        return m.group("split")
    if len(parts) >= 2 and re.fullmatch(r"\d+\.parquet", name):
        return parts[-2]
    if name.endswith(".parquet"):
        return name[: -len(".parquet")]
    return None


def group_parquet_files(relpaths):
    groups = {}
    for rel in sorted(relpaths):
        split = parquet_split_of(rel)
        if split is not None:
            groups.setdefault(split, []).append(rel)
    return groups


def _hub_split_files(repo_id, split):
    """Download (or find in the hub cache) only ``split``'s parquet files of ``repo_id``."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    how = (f"download it where the network is reachable, e.g. `hf download {repo_id} --repo-type dataset "
           f"--include 'data/{split or '<split>'}-*'`, then run again with HF_HUB_OFFLINE=1, or pass "
           f"a local directory of its parquet files as the path")
    try:
        remote = HfApi().list_repo_files(repo_id, repo_type="dataset")
    except HfHubHTTPError as exc:  # the hub answered (unknown or gated repo ...): its message says what is wrong
        raise SourceError(f"hub dataset {repo_id!r}: {exc}") from exc
    except Exception as exc:  # offline mode or no network: fall back to the local hub cache
        try:
            snapshot = Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
        except LocalEntryNotFoundError:
            raise SourceError(f"the hub is unreachable ({type(exc).__name__}) and nothing of the dataset "
                              f"{repo_id!r} is in the local hub cache; {how}") from None
        groups = group_parquet_files(str(p.relative_to(snapshot)) for p in snapshot.rglob("*.parquet"))
        if not groups:
            raise SourceError(f"the local hub cache of {repo_id!r} holds no parquet file; {how}")
        chosen = choose_split(groups, split, f"{repo_id} (offline: splits found in the local hub cache)")
        return chosen, [snapshot / rel for rel in groups[chosen]]
    groups = group_parquet_files(f for f in remote if f.endswith(".parquet"))
    chosen = choose_split(groups, split, f"hub dataset {repo_id}")
    return chosen, [Path(hf_hub_download(repo_id, rel, repo_type="dataset")) for rel in groups[chosen]]


def open_rows(source, split):
    """Resolve ``source`` to (rows, split, description). ``split`` may be None."""
    if source in SAMPLE_SOURCES:
        from .sample import ensure_sample
        root = ensure_sample() / source.split(":", 1)[1]
        chosen, rows = _open_local_dir(root, split, f"{source} ({root})")
        return rows, chosen, source
    p = Path(source).expanduser()
    if p.is_dir():
        chosen, rows = _open_local_dir(p, split, str(p))
        return rows, chosen, str(p)
    if p.is_file() and p.suffix == ".parquet":
        chosen = choose_split([parquet_split_of(p.name)], split, str(p))
        return ParquetRows([p], str(p)), chosen, str(p)
    if p.exists():
        raise SourceError(f"{source!r} is neither a directory nor a parquet file; see the OpenSDID "
                          f"docstring for the supported sources")
    if _HUB_ID_RE.match(source):
        chosen, files = _hub_split_files(source, split)
        return ParquetRows(files, f"{source}#{chosen}"), chosen, source
    raise SourceError(f"OpenSDID source {source!r} is not a local path, not a hub id "
                      f"('owner/name') and not one of {list(SAMPLE_SOURCES)}")


def _open_local_dir(root, split, where):
    import datasets
    if (root / "dataset_dict.json").is_file():
        names = json.loads((root / "dataset_dict.json").read_text())["splits"]
        chosen = choose_split(names, split, where)
        return chosen, _ArrowRows(datasets.load_from_disk(str(root / chosen)), f"{where}#{chosen}")
    if (root / "state.json").is_file() and (root / "dataset_info.json").is_file():
        ds = datasets.load_from_disk(str(root))
        # An unnamed saved Dataset is one split; any requested name selects it.
        name = ds.split and str(ds.split)
        chosen = choose_split([name], split, where) if name else (split or "default")
        return chosen, _ArrowRows(ds, where)
    parquet = [str(p.relative_to(root)) for p in root.rglob("*.parquet")]
    if parquet:
        groups = group_parquet_files(parquet)
        chosen = choose_split(groups, split, where)
        return chosen, ParquetRows([root / rel for rel in groups[chosen]], f"{where}#{chosen}")
    folders = [d.name for d in sorted(root.iterdir())
               if d.is_dir() and ((d / "real").is_dir() or (d / "fake").is_dir())]
    if folders:
        chosen = choose_split(folders, split, where)
        return chosen, _FolderRows(root / chosen, chosen)
    raise SourceError(f"{where} is not an OpenSDID source: no parquet files, no save_to_disk files "
                      f"and no <split>/real or <split>/fake folders")


# ---------------------------------------------------------------------------

@DATASETS.register_module()
class OpenSDID(MaskAreaMixin, AbstractDataset):
    """OpenSDID rows in BenCo's dataset contract; see the module docstring.

    Per-row metadata, available without decoding images: ``keys``, ``names``,
    ``labels`` (int64 array), ``is_partial`` (bool array), ``kinds``
    ('real' / 'partial' / 'full'), ``num_partial``. ``img_loader`` is accepted for
    BenCo's signature only: rows are bytes, decoded by :func:`to_rgb_uint8`.
    """

    def __init__(self, path,
                 is_padding=False,
                 is_resizing=False,
                 output_size=(1024, 1024),
                 common_transforms=None,
                 edge_width=None,
                 img_loader=pil_loader,
                 post_funcs=None,
                 split=None,
                 subset="all",
                 on_bad_sample="error"):
        if subset not in ("all", "pixel"):
            raise SourceError(f"subset must be 'all' or 'pixel' (partial fakes only), got {subset!r}")
        if on_bad_sample not in ("error", "skip"):
            raise SourceError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self._split_arg = split
        self.subset = subset
        self.on_bad_sample = on_bad_sample
        self.skipped = {}
        super().__init__(path, is_padding=is_padding, is_resizing=is_resizing,
                         output_size=output_size, common_transforms=common_transforms,
                         edge_width=edge_width, img_loader=img_loader, post_funcs=post_funcs)

    # -- BenCo hooks -------------------------------------------------------

    def _init_dataset_path(self, path):
        source, split_in_path = parse_source(path)
        if self._split_arg is not None and split_in_path is not None and self._split_arg != split_in_path:
            raise SourceError(f"conflicting splits: split={self._split_arg!r} but the path {path!r} selects "
                              f"{split_in_path!r}; give the split once")
        self._store, self.split, self.source = self._open_store(source, self._split_arg or split_in_path)
        self.entry_path = f"{self.source}#{self.split}"
        self._all_names = self._unique_names(self._store.keys)
        self._all_partial = self._partial_rows()
        rows = self._select(self._metadata_checks())
        if self.subset == "pixel":
            rows = rows[self._all_partial[rows]]
        self._bad_rows = set()
        self._rows = rows
        return self._paths()

    def _open_store(self, source, split):
        """-> (row store, split, source description); subclasses read other layouts."""
        return open_rows(source, split)

    def _partial_rows(self):
        """Bool per row of the store: a locally edited fake (the module docstring's rule)."""
        return np.array(["partial" in (k or "") for k in self._store.keys], dtype=bool) & (self._store.labels == 1)

    def _select(self, rows):
        """The rows (valid ones, in store order) this dataset serves; subclasses draw from them."""
        return rows

    def _get_image(self, index):
        n = len(self._rows)
        for step in range(n):
            position = (index + step) % n
            row = int(self._rows[position])
            if row in self._bad_rows:
                continue
            try:
                tp_img, gt_img, label = self.read_row(row)
            except BadSampleError as exc:
                self._bad(row, exc)
                continue
            shape = (tp_img.shape[1], tp_img.shape[0])
            # tp_path / gt_path are built once per index by _paths(), in step with _rows.
            return self._with_mask_area((tp_img, gt_img, label, shape, shape, self.tp_path[position],
                                         self.gt_path[position]))
        raise SourceError(f"{self.entry_path}: every sample is bad; {self.report()}")

    # -- public API ----------------------------------------------------------

    def read_row(self, row):
        """Decode one underlying row -> (image HWC uint8 RGB, mask HWC uint8 RGB, label).

        Raises :class:`BadSampleError`; never substitutes another row.
        """
        key = self._store.keys[row]
        label = int(self._store.labels[row])
        try:
            tp = to_rgb_uint8(_open_image(self._read_cell(row, "image"), "the image"))
        except ImageDataError as exc:
            raise BadSampleError(key, str(exc)) from None
        h, w = tp.shape[:2]
        if label == 0:
            return tp, np.zeros((h, w, 3), np.uint8), 0
        if not self._all_partial[row]:
            return tp, np.full((h, w, 3), 255, np.uint8), 1
        try:
            mask_img = _open_image(self._read_cell(row, "mask"), "the mask")
            gt = to_rgb_uint8(mask_img)
        except ImageDataError as exc:
            raise BadSampleError(key, str(exc)) from None
        if gt.shape[:2] != (h, w):
            raise BadSampleError(key, f"mask is {gt.shape[1]}x{gt.shape[0]} but the image is {w}x{h}; "
                                      f"resize the mask to the image size with nearest-neighbour "
                                      f"interpolation (or re-export both at one size)")
        if not (gt.mean(axis=2) > 127.5).any():
            raise BadSampleError(key, "the partial fake's mask has no pixel above 127.5, so it marks "
                                      "nothing; masks must be 0/255 (a 0/1 mask looks black: multiply "
                                      "it by 255)")
        return tp, gt, 1

    def read(self, index):
        """:meth:`read_row` for the ``index``-th sample of this dataset (no substitution)."""
        return self.read_row(int(self._rows[index]))

    def iter_raw(self):
        """Yield (index, name, image, mask, label) for every row in order, without substitution.

        Bad rows raise (``error``) or are recorded in ``skipped`` and left out (``skip``).
        """
        for i, row, (tp, gt, label) in self._checked_rows(self.read_row):
            yield i, self._all_names[row], tp, gt, label

    def validate(self, decode=True):
        """Check every active row now; in ``skip`` mode drop bad rows from the index.

        ``decode=False`` only reads image headers (size, mode), which finds missing
        files, unknown formats and mask-size mismatches quickly but not truncated data.
        Returns the number of bad rows found.
        """
        bad_before = len(self._bad_rows)
        for _ in self._checked_rows(self.read_row if decode else self._check_headers):
            pass
        found = len(self._bad_rows) - bad_before
        if self._bad_rows:
            self._rows = np.array([r for r in self._rows if int(r) not in self._bad_rows], dtype=np.int64)
            self.tp_path, self.gt_path = self._paths()
        return found

    def report(self):
        if not self.skipped:
            return f"{self.entry_path}: no sample skipped"
        lines = [f"{self.entry_path}: {len(self.skipped)} sample(s) skipped:"]
        lines += [f"  {key}: {reason}" for key, reason in self.skipped.items()]
        return "\n".join(lines)

    def row_groups(self):
        """The parquet row group of each sample, in index order; None for a source that is not
        parquet shards (a save_to_disk copy, an image folder)."""
        return self._store.row_groups(self._rows) if isinstance(self._store, ParquetRows) else None

    def cache_row_groups(self, count):
        """Size each process's cache of a parquet source to hold ``count`` row groups."""
        self._store.cache_row_groups(count)

    @property
    def keys(self):
        return [self._store.keys[r] for r in self._rows]

    @property
    def names(self):
        return [self._all_names[r] for r in self._rows]

    @property
    def labels(self):
        return self._store.labels[self._rows].copy()

    @property
    def is_partial(self):
        return self._all_partial[self._rows].copy()

    @property
    def kinds(self):
        labels, partial = self.labels, self.is_partial
        return ["real" if lab == 0 else ("partial" if p else "full") for lab, p in zip(labels, partial)]

    @property
    def num_partial(self):
        return int(self._all_partial[self._rows].sum())

    def __str__(self):
        labels = self.labels
        return (f"[OpenSDID] {self.entry_path} subset={self.subset}: {len(self._rows):,} samples "
                f"({int((labels == 0).sum()):,} real, {self.num_partial:,} partial fakes, "
                f"{int((labels == 1).sum()) - self.num_partial:,} fully generated), "
                f"{len(self.skipped):,} skipped")

    # -- internals -----------------------------------------------------------

    def _checked_rows(self, check):
        for i, row in enumerate(self._rows):
            row = int(row)
            if row in self._bad_rows:
                continue
            try:
                result = check(row)
            except BadSampleError as exc:
                self._bad(row, exc)
                continue
            yield i, row, result

    def _paths(self):
        tp = [f"{self.entry_path}/{self._all_names[r]}" for r in self._rows]
        gt = ["Negative" if self._store.labels[r] == 0 else f"{p}:mask" for r, p in zip(self._rows, tp)]
        return tp, gt

    def _read_cell(self, row, column):
        data = self._store.fetch(row, column)
        if data is None:
            raise ImageDataError(f"the {column} cell is empty")
        return data

    def _check_headers(self, row):
        key = self._store.keys[row]
        sizes = {}
        columns = ("image", "mask") if self._all_partial[row] else ("image",)
        for column in columns:
            try:
                data = self._read_cell(row, column)
                with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
                    sizes[column] = img.size
            except Exception as exc:
                raise BadSampleError(key, f"the {column} header does not read ({type(exc).__name__}: "
                                          f"{exc}); re-encode it or remove the row") from None
        if "mask" in sizes and sizes["mask"] != sizes["image"]:
            (mw, mh), (w, h) = sizes["mask"], sizes["image"]
            raise BadSampleError(key, f"mask is {mw}x{mh} but the image is {w}x{h}; resize the mask "
                                      f"to the image size with nearest-neighbour interpolation")

    def _unique_names(self, keys):
        names, seen, clashes = [], set(), 0
        for row, key in enumerate(keys):
            name = sample_name(key or f"row{row}")
            if name in seen:
                clashes += 1
                name = f"{name[:-4]}~{row}.png"
            seen.add(name)
            names.append(name)
        if clashes:
            warnings.warn(f"{self.entry_path}: {clashes} key(s) repeat an earlier key's file name; "
                          f"their names get a '~<row>' suffix so saved predictions do not overwrite",
                          OpenSDIDWarning, stacklevel=4)
        return names

    def _metadata_checks(self):
        store = self._store
        labels = store.labels
        # A layout's own findings (a file name that does not parse, a missing mask file) come first.
        bad = dict(getattr(store, "problems", {}))
        for row in np.flatnonzero((labels != 0) & (labels != 1)):
            bad[row] = f"label must be 0 (real) or 1 (fake), the row has {labels[row]}"
        for row in np.flatnonzero(~store.has_image):
            bad.setdefault(row, "the image cell is empty; remove the row or restore its image")
        for row in np.flatnonzero(self._all_partial & ~store.has_mask):
            bad.setdefault(row, "a partial (locally edited) fake needs its mask, and the mask cell is "
                                "empty; add the mask, or if the image is fully generated give it a key "
                                "without 'partial'")
        for row, key in enumerate(store.keys):
            if not key:
                bad.setdefault(row, "the key is empty; every row needs a unique string key")
                continue
            # Hub keys look like 'partial/sd15/fake/000651821.jpg': a lone 'real' or
            # 'fake' path segment is the authors' own statement of the label.
            claims = set(key.lower().split("/")) & {"real", "fake"}
            if len(claims) == 1 and labels[row] in (0, 1) and (claims == {"fake"}) != (labels[row] == 1):
                bad.setdefault(row, f"the key says {claims.pop()!r} but the label is {labels[row]}; "
                                    f"fix the label or the key")
        ignored_real = int(((labels == 0) & store.has_mask).sum())
        ignored_full = int(((labels == 1) & ~self._all_partial & store.has_mask).sum())
        if ignored_real or ignored_full:
            warnings.warn(f"{self.entry_path}: masks ignored on {ignored_real} real image(s) (all-zero "
                          f"mask) and {ignored_full} fully generated fake(s) (all-255 mask: no "
                          f"'partial' in the key)", OpenSDIDWarning, stacklevel=4)
        if bad and self.on_bad_sample == "error":
            first = [f"  {store.keys[r] or f'row {r}'}: {reason}" for r, reason in sorted(bad.items())[:5]]
            raise BadSampleError(store.keys[min(bad)] or f"row {min(bad)}",
                                 f"{len(bad)} bad row(s) in {self.entry_path}:\n" + "\n".join(first)
                                 + "\nfix the data, or pass on_bad_sample='skip' to leave them out "
                                   "(they are counted in .skipped)")
        for row, reason in sorted(bad.items()):
            self.skipped[store.keys[row] or f"row {row}"] = reason
        if bad:
            warnings.warn(f"{self.entry_path}: {len(bad)} bad row(s) left out at construction; "
                          f"see .report()", OpenSDIDWarning, stacklevel=4)
        keep = np.ones(len(store), dtype=bool)
        keep[list(bad)] = False
        return np.flatnonzero(keep).astype(np.int64)

    def _bad(self, row, exc):
        if self.on_bad_sample == "error":
            raise exc
        self._bad_rows.add(row)
        if exc.key not in self.skipped:
            self.skipped[exc.key] = exc.reason
            warnings.warn(f"{self.entry_path}: skipped {exc} ({len(self.skipped)} skipped so far)",
                          OpenSDIDWarning, stacklevel=3)
