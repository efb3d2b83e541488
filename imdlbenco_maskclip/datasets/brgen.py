"""BR-Gen (*Zooming In on Fakes*, AAAI 2026) as an IMDL-BenCo dataset.

The released layout (one folder per part: train, val, test, or the authors' BRGen-Stuff-Val)::

    <root>/Tp/<Method>_<Stuff|Background>_<Source>_<id>.<ext>   a generated (inpainted) image
    <root>/Gt/<Method>_<Stuff|Background>_<Source>_<id>_mask.png its mask
    <root>/Au/<Source>_<id>.<ext>                               a real image (optional)

Methods: LaMa and MAT (the GAN family), SDXL, BrushNet and PowerPaint (the diffusion family);
mask types: Stuff (sky, ground, walls) and Background (the inverse of an object mask); sources:
COCO, ImageNet, Places. Names are matched case-insensitively and parsed by these known words,
since ids contain underscores (``ImageNet_n06359193_84719``). A generated image is paired
with its mask by file stem, never by sorted order. The release ships no real images
(copyright); ``Au/`` is rebuilt by the user from the source datasets, and a folder without it
is read with a warning: it has no real image.

``path`` is the folder, optionally ``<folder>#<subset>``: one method (``lama``, ``mat``,
``sdxl``, ``brushnet``, ``powerpaint``), one mask type (``stuff``, ``background``) or one
family (``gan``, ``diffusion``); ``all`` (the default) is the whole folder. Real images belong
to every subset. ``sample:brgen`` is the embedded BR-Gen-layout sample (``brgen_sample.py``).

Balance, as the authors describe it ("we randomly sample the generated images to keep the
number of real samples the same"): with ``balance=1`` (default) as many generated images as
there are real ones are drawn at random, with ``numpy.random.default_rng(seed)`` over the
generated images sorted by name, so a draw is the same on every machine; ``drawn`` lists
them. ``balance=0`` keeps every image. Without real images nothing is drawn.

Everything else is :class:`~.opensdid.OpenSDID`'s: the sample dict (with ``mask_area``),
the edge mask, ``on_bad_sample`` ``error`` / ``skip`` and its messages. A generated image whose
name does not parse or whose mask file is missing is a bad sample found at construction; a
mask of another size, an empty mask or a file that does not decode is found when read.
"""
import re
import warnings
from pathlib import Path

import numpy as np

from IMDLBenCo.datasets.utils import pil_loader
from IMDLBenCo.registry import DATASETS

from .brgen_names import FAKE_NAME, METHODS, SOURCES, SUBSETS, in_subset, parse_name
from .opensdid import _IMAGE_EXTS, OpenSDID, OpenSDIDWarning, SourceError, _visible_files

BRGEN_SAMPLE = "sample:brgen"


class BRGenWarning(OpenSDIDWarning):
    pass


class _BRGenRows:
    """The rows of one BR-Gen folder: every cell a file path; ``problems`` {row: reason} for the
    generated images that cannot be used (found without decoding)."""

    def __init__(self, root, subset):
        self.keys, labels, self._images, self._masks, self.problems = [], [], [], [], {}
        self.has_real_folder = (root / "Au").is_dir()
        masks = {}
        for f in _image_files(root / "Gt"):
            masks.setdefault(re.sub(r"_mask$", "", f.stem, flags=re.IGNORECASE).lower(), f)
        used = set()
        for f in _image_files(root / "Au"):
            reason = None if parse_name(f.name) else (
                f"the real image's name does not parse as <Source>_<id> (sources: {', '.join(SOURCES.values())}); "
                f"rename it as in the authors' RealImage lists, or move it out of Au/")
            self._add(f"Au/{f.name}", 0, f, None, reason, labels)
        for f in _image_files(root / "Tp"):
            parsed = parse_name(f.name)
            if parsed is None or "method" not in parsed:
                self._add(f"Tp/{f.name}", 1, f, None,
                          f"the name does not parse as {FAKE_NAME} (methods: {', '.join(METHODS.values())}; "
                          f"sources: {', '.join(SOURCES.values())}); rename it or move it out of Tp/", labels)
                continue
            if not in_subset(parsed, subset):
                continue
            mask = masks.get(f.stem.lower())
            used.add(f.stem.lower())
            reason = None if mask is not None else (
                f"its mask Gt/{f.stem}_mask.png is missing; restore it from the release, or move the image out of Tp/")
            self._add(f"Tp/{f.name}", 1, f, mask, reason, labels)
        orphans = sorted(m.name for stem, m in masks.items() if stem not in used and (
            (parse_name(m.name) or {}).get("method") is None or in_subset(parse_name(m.name), subset)))
        if orphans:
            warnings.warn(f"{root}: {len(orphans)} mask(s) in Gt/ match no image in Tp/ and are not used "
                          f"(first: {orphans[:5]}); a mask is named <image stem>_mask.png",
                          BRGenWarning, stacklevel=4)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.has_image = np.ones(len(self.keys), dtype=bool)
        self.has_mask = np.array([m is not None for m in self._masks], dtype=bool) | (self.labels == 0)

    def _add(self, key, label, image, mask, reason, labels):
        if reason is not None:
            self.problems[len(self.keys)] = reason
        self.keys.append(key)
        labels.append(label)
        self._images.append(str(image))
        self._masks.append(None if mask is None else str(mask))

    def __len__(self):
        return len(self.keys)

    def fetch(self, row, column):
        return self._images[row] if column == "image" else self._masks[row]


def _image_files(folder):
    return [f for f in _visible_files(folder) if f.suffix.lower() in _IMAGE_EXTS] if folder.is_dir() else []


@DATASETS.register_module()
class BRGen(OpenSDID):
    """A BR-Gen folder in BenCo's dataset contract; see the module docstring.

    ``split`` is a subset name (the same as ``<folder>#<subset>``), so the commands'
    ``--test_splits gan,diffusion`` tests each subset as its own set. ``balance`` (1 or 0) and
    ``seed`` choose the generated images as the authors do. Beyond OpenSDID's metadata:
    ``parsed`` (per sample, :func:`parse_name`'s result), ``has_real_images``, ``drawn``
    (the generated images kept by the balanced draw, or None when nothing was drawn).
    """

    DEFAULT_SPLIT = "all"

    def __init__(self, path,
                 is_padding=False,
                 is_resizing=False,
                 output_size=(1024, 1024),
                 common_transforms=None,
                 edge_width=None,
                 img_loader=pil_loader,
                 post_funcs=None,
                 split=None,
                 on_bad_sample="error",
                 balance: int = 1,
                 seed: int = 0):
        if int(balance) not in (0, 1):
            raise SourceError(f"balance must be 1 (as many generated images as real ones, drawn at random) "
                              f"or 0 (every image), got {balance!r}")
        self.balance, self.seed, self.drawn = int(balance), int(seed), None
        super().__init__(path, is_padding=is_padding, is_resizing=is_resizing, output_size=output_size,
                         common_transforms=common_transforms, edge_width=edge_width, img_loader=img_loader,
                         post_funcs=post_funcs, split=split, on_bad_sample=on_bad_sample)

    def _open_store(self, source, subset):
        subset = (subset or self.DEFAULT_SPLIT).lower()
        if subset not in SUBSETS:
            raise SourceError(f"unknown BR-Gen subset {subset!r}; choose one of {list(SUBSETS)} "
                              f"(a method, a mask type or a family)")
        if source == BRGEN_SAMPLE:
            from .brgen_sample import ensure_brgen_sample
            root, where = ensure_brgen_sample(), source
        else:
            root = where = Path(source).expanduser()
            if not root.is_dir():
                raise SourceError(f"BR-Gen folder {source!r} does not exist; give the folder that holds "
                                  f"Tp/ and Gt/ (and Au/), or {BRGEN_SAMPLE}")
            where = str(root)
        if not (root / "Tp").is_dir():
            raise SourceError(f"{where} has no Tp/ folder, so it is not in BR-Gen's layout "
                              f"(Tp/{FAKE_NAME}.<ext>, Gt/<stem>_mask.png, Au/<Source>_<id>.<ext>)")
        rows = _BRGenRows(root, subset)
        if not rows.has_real_folder:
            warnings.warn(f"{where}: no Au/ folder, so no real images: real recall and AUC are n/a and image F1 "
                          f"is over the generated images only. The release ships no real images; rebuild Au/ "
                          f"from COCO, ImageNet and Places with the authors' RealImage/*_image_list.txt",
                          BRGenWarning, stacklevel=5)
        return rows, subset, where

    def _unique_names(self, keys):
        return super()._unique_names([key.split("/", 1)[-1] for key in keys])  # the file's own name

    def _partial_rows(self):
        return self._store.labels == 1  # every BR-Gen fake is a local edit

    def _select(self, rows):
        labels = self._store.labels[rows]
        real, fake = rows[labels == 0], rows[labels == 1]
        if not self.balance or len(real) == 0 or len(fake) <= len(real):
            return rows
        by_name = fake[np.argsort([self._store.keys[r] for r in fake], kind="stable")]
        chosen = np.sort(np.random.default_rng(self.seed).choice(by_name, size=len(real), replace=False))
        self.drawn = [self._store.keys[r] for r in chosen]
        return np.sort(np.concatenate([real, chosen]))

    @property
    def parsed(self):
        return [parse_name(self._store.keys[r]) for r in self._rows]

    @property
    def has_real_images(self):
        return bool((self.labels == 0).any())

    def selection(self):
        """What repeats this set's draw exactly: balance, seed and the drawn generated images."""
        return {"dataset": type(self).__name__, "path": self.entry_path, "balance": self.balance,
                "seed": self.seed, "drawn": self.drawn}

    def __str__(self):
        labels = self.labels
        real = int((labels == 0).sum())
        draw = (f", {len(self.drawn):,} generated drawn to match the real ones (seed {self.seed})"
                if self.drawn is not None else "")
        note = "" if self._store.has_real_folder else " (no Au/ folder: no real images)"
        return (f"[BRGen] {self.entry_path}: {len(self._rows):,} samples ({real:,} real{note}, "
                f"{int((labels == 1).sum()):,} generated){draw}, {len(self.skipped):,} skipped")
