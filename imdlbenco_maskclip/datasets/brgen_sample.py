"""The embedded BR-Gen-layout sample (``sample:brgen``): a small folder in BR-Gen's released
layout, made offline from the same photographs as the OpenSDID sample (``sample.py``; credits
in its README). Deterministic, built in a few seconds on first use, never committed.

Layout, under ``$IMDLBENCO_MASKCLIP_CACHE`` (default ``~/.cache/imdlbenco_maskclip``)::

    brgen_sample_v1/
        README.md  manifest.json
        test/Au/<Source>_<id>.png                          16 real images
        test/Tp/<Method>_<Stuff|Background>_<Source>_<id>.png   160 generated images
        test/Gt/<same stem>_mask.png                       their masks
        bad/Au/ bad/Tp/ bad/Gt/                            bad files, kept out of test/

As in BR-Gen, each real image has two masks, a *stuff* mask (a sky band, a ground band or a
wall: a broad region with a wavy edge) and a *background* mask (everything but an elliptic
object), and each mask is inpainted by the five methods: 10 generated images per real one.
The masks' areas are spread over the five bins of the BR-Gen paper's Table 7 (``MASK_BINS``:
stuff masks over the lower four, background masks over the upper four).

The inpainters are stand-ins (:class:`Inpainter`, the OpenSDID sample's decoder imitation with
the parameters of :data:`INPAINTERS`): LaMa and MAT share a GAN trace (a checkerboard of
their own, on a 2x grid), SDXL, BrushNet and PowerPaint a latent-diffusion trace most of which
is that of the OpenSDID sample's ``sd15`` split. A detector trained on the OpenSDID sample
therefore finds the diffusion family more easily than the GAN family, the direction of the
BR-Gen paper's cross-type results; the sample is for exercising code, not for measuring.

``bad/`` holds one file per kind of bad sample (:data:`BAD_FILES`); tests copy it over a copy
of ``test/``.
"""
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import sample as opensdid_sample
from .brgen_names import MASK_BINS, METHODS, SOURCES, family_of

SAMPLE_VERSION = 1
NUM_REAL = 16
STUFF_BINS, BACKGROUND_BINS = (0, 1, 2, 3), (1, 2, 3, 4)
STUFF_KINDS = ("sky", "ground", "wall")
_SIZES = [(96, 128), (128, 128), (128, 96), (112, 144), (144, 112), (120, 160)]  # (H, W)

# Per method: the OpenSDID sample's decoder parameters (see ``sample.GENERATORS``), and
# ``family_share``: how much of the lattice is the family's pattern (the rest the method's own).
# The diffusion family's pattern is the OpenSDID sample's sd15 one; the GAN family's its own.
INPAINTERS = {
    "lama": dict(latent=2, kernel="bilinear", detail=0.6, lattice=10.0, family_share=0.9, grain=1.5,
                 saturation=1.0, gains=(1.0, 1.0, 1.0)),
    "mat": dict(latent=2, kernel="bicubic", detail=0.5, lattice=10.0, family_share=0.85, grain=2.0,
                saturation=0.97, gains=(1.0, 1.01, 1.0)),
    "sdxl": dict(latent=4, kernel="bicubic", detail=0.4, lattice=12.0, family_share=0.8, grain=2.5,
                 saturation=1.0, gains=(1.0, 1.02, 0.99)),
    "brushnet": dict(latent=4, kernel="bilinear", detail=0.3, lattice=13.0, family_share=0.85, grain=3.0,
                     saturation=0.95, gains=(1.02, 1.0, 0.98)),
    "powerpaint": dict(latent=4, kernel="bilinear", detail=0.35, lattice=12.0, family_share=0.75, grain=2.5,
                       saturation=0.94, gains=(1.02, 1.0, 0.97)),
}
_FAMILY_TILE = {"gan": "brgen-gan", "diffusion": "sd15"}

# name in bad/ -> what is wrong with it; each is one bad sample.
BAD_FILES = {
    "Tp/SDXL_Stuff_COCO_000000900001.png": "its mask is missing from Gt/",
    "Tp/LaMa_Background_Places_00900002.png": "its mask has another size than the image",
    "Tp/MAT_Stuff_ImageNet_n09900003_1.png": "the image does not decode (truncated PNG)",
    "Tp/PowerPaint_Stuff_COCO_000000900004.png": "its mask is all black (marks nothing)",
    "Tp/Midjourney_Stuff_COCO_000000900005.png": "the name does not parse (an unknown method)",
    "Au/Flickr_900006.png": "the real image's name does not parse (an unknown source)",
}


def brgen_sample_dir():
    return opensdid_sample.cache_root() / f"brgen_sample_v{SAMPLE_VERSION}"


def ensure_brgen_sample():
    """The sample's ``test/`` folder (``sample:brgen``), built first if missing."""
    return opensdid_sample.ensure_built(brgen_sample_dir(), build_brgen_sample) / "test"


def bad_files_dir():
    """The folder of bad files (:data:`BAD_FILES`), in the same layout as ``test/``."""
    return opensdid_sample.ensure_built(brgen_sample_dir(), build_brgen_sample) / "bad"


class Inpainter(opensdid_sample.Generator):
    """One method's stand-in: the OpenSDID sample's decoder with :data:`INPAINTERS`' parameters;
    ``inpainter(content, rng)`` renders an (H, W, C) uint8 image with the method's traces."""

    def __init__(self, method):
        p = INPAINTERS[method]
        self.params = {**p, "lattice_share": p["family_share"]}
        family = opensdid_sample._unit_tile(_FAMILY_TILE[family_of(method)], p["latent"])
        own = opensdid_sample._unit_tile(f"brgen-{method}", p["latent"])
        share = p["family_share"]
        self.tile = share * family + np.sqrt(1 - share ** 2) * own


def build_brgen_sample(out_dir):
    """Write ``test/``, ``bad/``, README.md and manifest.json into ``out_dir``; returns the manifest."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(zlib.crc32(f"brgen-sample-v{SAMPLE_VERSION}".encode()))
    photos = opensdid_sample._load_photos()
    names = sorted(photos)
    inpainters = {method: Inpainter(method) for method in METHODS}
    test = out_dir / "test"
    for folder in ("Au", "Tp", "Gt"):
        (test / folder).mkdir(parents=True)
    sources = list(SOURCES.values())
    areas = {}
    for i in range(NUM_REAL):
        source = sources[i % len(sources)]
        real_name = _real_name(source, i)
        size = _SIZES[i % len(_SIZES)]
        real = opensdid_sample._crop(photos[names[i % len(names)]], (0.0, 1.0), size, rng)
        _save(test / "Au" / f"{real_name}.png", real)
        stuff_bin, background_bin = STUFF_BINS[i % len(STUFF_BINS)], BACKGROUND_BINS[i % len(BACKGROUND_BINS)]
        kind = STUFF_KINDS[i % len(STUFF_KINDS)]
        masks = {"Stuff": _in_bin(stuff_bin, lambda share: _stuff_mask(size, kind, share, rng), rng),
                 "Background": _in_bin(background_bin, lambda share: _background_mask(size, share, rng), rng)}
        for mask_type, mask in masks.items():
            for method, inpainter in inpainters.items():
                stem = f"{METHODS[method]}_{mask_type}_{real_name}"
                _save(test / "Tp" / f"{stem}.png", opensdid_sample._render(real, real, mask, inpainter, rng))
                _save(test / "Gt" / f"{stem}_mask.png", mask.astype(np.uint8) * 255)
                areas[stem] = float(mask.mean())
    _write_bad_files(out_dir / "bad", photos[names[0]], inpainters, rng)
    bins = [sum(lo <= 100 * a < hi or (hi == 100 and 100 * a == 100) for a in areas.values())
            for lo, hi in MASK_BINS]
    manifest = {"version": SAMPLE_VERSION, "real": NUM_REAL, "generated": len(areas), "area_bins": bins,
                "bad_files": BAD_FILES}
    (out_dir / "README.md").write_text(_readme(manifest))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _real_name(source, i):
    """Names in the forms of the release: COCO ids, ImageNet synset_image, Places ids."""
    return {"COCO": f"COCO_{100000 + 7919 * i:012d}", "ImageNet": f"ImageNet_n0{3000000 + 104729 * i}_{1000 + i}",
            "Places": f"Places_{2000000 + 31 * i:08d}"}[source]


def _target(bin_index, rng):
    """An area share inside the bin, 3 points away from its edges."""
    lo, hi = MASK_BINS[bin_index]
    return rng.uniform(lo + 3, hi - 3) / 100


def _in_bin(bin_index, draw, rng):
    """A mask from ``draw(share)`` whose area falls in the bin (a clipped ellipse or a wave can
    move it out: drawn again)."""
    lo, hi = MASK_BINS[bin_index]
    while True:
        mask = draw(_target(bin_index, rng))
        if lo <= 100 * mask.mean() < hi:
            return mask


def _wavy_edge(length, level, rng):
    """Per position along an edge, a boundary at ``level`` (pixels) that waves by a few pixels."""
    x = np.arange(length)
    phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5) * length
    return level + 0.04 * length * np.sin(2 * np.pi * x / period + phase)


def _stuff_mask(size, kind, share, rng):
    """A broad region of about ``share`` of the image: the top band (sky), the bottom band
    (ground) or a side (wall), with a wavy edge."""
    h, w = size
    if kind == "wall":
        edge = _wavy_edge(h, share * w, rng)[:, None]
        cols = np.arange(w)[None, :]
        return cols < edge if rng.random() < 0.5 else cols >= w - edge
    edge = _wavy_edge(w, share * h, rng)[None, :]
    rows = np.arange(h)[:, None]
    return rows < edge if kind == "sky" else rows >= h - edge


def _background_mask(size, share, rng):
    """Everything but an elliptic object of about ``1 - share`` of the image."""
    h, w = size
    object_px = (1 - share) * h * w
    aspect = w / h * rng.uniform(0.8, 1.25)
    a = min(np.sqrt(object_px / np.pi * aspect), 0.5 * w)  # semi-axis along x
    b = min(object_px / (np.pi * a), 0.5 * h)
    cy, cx = rng.uniform(b, h - b), rng.uniform(a, w - a)
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy + 0.5 - cy) / b) ** 2 + ((xx + 0.5 - cx) / a) ** 2 > 1


def _save(path, arr):
    Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(path, compress_level=1)


def _write_bad_files(bad, photo, inpainters, rng):
    for folder in ("Au", "Tp", "Gt"):
        (bad / folder).mkdir(parents=True)
    img = opensdid_sample._crop(photo, (0.0, 1.0), (96, 128), rng)
    mask = _stuff_mask((96, 128), "sky", 0.3, rng)
    fake = opensdid_sample._render(img, img, mask, inpainters["sdxl"], rng)
    for rel in BAD_FILES:
        _save(bad / rel, img if rel.startswith("Au/") else fake)
        stem = Path(rel).stem
        if rel.startswith("Tp/") and "SDXL_Stuff" not in rel:
            _save(bad / "Gt" / f"{stem}_mask.png", mask.astype(np.uint8) * 255)
    truncated = bad / "Tp" / "MAT_Stuff_ImageNet_n09900003_1.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    _save(bad / "Gt" / "LaMa_Background_Places_00900002_mask.png", np.zeros((64, 64), np.uint8) + 255)
    _save(bad / "Gt" / "PowerPaint_Stuff_COCO_000000900004_mask.png", np.zeros((96, 128), np.uint8))


def _readme(manifest):
    bins = ", ".join(f"[{lo}, {hi}) %: {n}" for (lo, hi), n in zip(MASK_BINS, manifest["area_bins"]))
    return (f"# Embedded BR-Gen-layout sample v{SAMPLE_VERSION}\n\n"
            "Generated by `imdlbenco_maskclip.datasets.brgen_sample` from photographs shipped in the\n"
            "scikit-image and scikit-learn packages (credits and licences: the OpenSDID sample's README).\n"
            "It imitates the layout and file names of BR-Gen; its inpainters are stand-ins, so it is\n"
            "for exercising code, not for measuring detectors.\n\n"
            f"test/: {manifest['real']} real images (Au/), {manifest['generated']} generated ones (Tp/, masks in Gt/).\n"
            f"Generated images per edited-area bin: {bins}.\n\n"
            "bad/: one bad file of each kind:\n\n"
            + "".join(f"- {name}: {why}\n" for name, why in manifest["bad_files"].items()))
