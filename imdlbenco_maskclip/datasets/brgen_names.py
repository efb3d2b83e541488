"""BR-Gen's file names: the methods, mask types and sources they are made of, the subsets and
the area bins of the BR-Gen paper, and :func:`parse_name`.

``<Method>_<Stuff|Background>_<Source>_<id>.<ext>`` names a generated image (its mask adds
``_mask``), ``<Source>_<id>.<ext>`` a real one. Ids contain underscores
(``ImageNet_n06359193_84719``), so names are parsed by the known words, case-insensitively.
"""
import re
from pathlib import PurePath

from .opensdid import _IMAGE_EXTS

METHODS = {"lama": "LaMa", "mat": "MAT", "sdxl": "SDXL", "brushnet": "BrushNet", "powerpaint": "PowerPaint"}
MASK_TYPES = {"stuff": "Stuff", "background": "Background"}
SOURCES = {"coco": "COCO", "imagenet": "ImageNet", "places": "Places"}
FAMILIES = {"gan": ("lama", "mat"), "diffusion": ("sdxl", "brushnet", "powerpaint")}
# The BR-Gen paper's Table 7 bins of the edited area, in % of the image: [lo, hi), the last [80, 100].
MASK_BINS = ((0, 20), (20, 40), (40, 60), (60, 80), (80, 100))
SUBSETS = ("all",) + tuple(METHODS) + tuple(MASK_TYPES) + tuple(FAMILIES)



def _one_of(names):
    return "|".join(sorted(names, key=len, reverse=True))  # longest first


_FAKE_RE = re.compile(rf"^(?P<method>{_one_of(METHODS)})_(?P<mask>{_one_of(MASK_TYPES)})_"
                      rf"(?P<source>{_one_of(SOURCES)})_(?P<id>.+)$", re.IGNORECASE)
_REAL_RE = re.compile(rf"^(?P<source>{_one_of(SOURCES)})_(?P<id>.+)$", re.IGNORECASE)
FAKE_NAME = "<Method>_<Stuff|Background>_<Source>_<id>"


def family_of(method):
    """'gan' or 'diffusion' for a method key ('lama', ...)."""
    return next(family for family, methods in FAMILIES.items() if method in methods)


def parse_name(name):
    """A file name (or path) -> {"method", "mask", "source", "id", "family"} of a BR-Gen fake,
    {"source", "id"} of a BR-Gen real image, or None. Keys are lower case (``METHODS`` keys);
    a trailing ``_mask`` (a Gt file) is ignored."""
    stem = PurePath(str(name)).name
    suffix = PurePath(stem).suffix
    stem = stem[: -len(suffix)] if suffix.lower() in _IMAGE_EXTS else stem
    stem = re.sub(r"_mask$", "", stem)
    fake = _FAKE_RE.match(stem)
    if fake:
        method = fake["method"].lower()
        return {"method": method, "mask": fake["mask"].lower(), "source": fake["source"].lower(),
                "id": fake["id"], "family": family_of(method)}
    real = _REAL_RE.match(stem)
    return {"source": real["source"].lower(), "id": real["id"]} if real else None


def in_subset(parsed, subset):
    """Whether a parsed fake belongs to ``subset`` (a name of ``SUBSETS``)."""
    return subset == "all" or subset in (parsed["method"], parsed["mask"], parsed["family"])
