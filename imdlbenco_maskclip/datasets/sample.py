"""The embedded OpenSDID sample: a small dataset in OpenSDID's hub layout, made offline.

It is generated, deterministically, from real photographs that ship inside the
``scikit-image`` and ``scikit-learn`` wheels (credits and licences in
:data:`PHOTOS`, repeated in the README written next to the data), so tests,
smoke runs and the README picture need neither the network nor the 300K-image
dataset. Nothing of it is committed: it is built on first use.

Layout, under ``$IMDLBENCO_MASKCLIP_CACHE`` (default ``~/.cache/imdlbenco_maskclip``)::

    opensdid_sample_v3/
        README.md  manifest.json
        train/README.md  train/data/sd15-0000{0,1}-of-00002.parquet
        test/README.md   test/data/{sd15,sd2,sdxl,sd3,flux}-00000-of-00001.parquet

``sample:train`` and ``sample:test`` are OpenSDID sources naming these two
folders, read through the same hub-layout code as a downloaded copy.

Every row is a crop of one photo, rescaled to 192-320 px a side (some not
square). Train crops come from the left 60% of each photo and test crops from
the right 40%, so no test pixel was seen in training. Kinds:

* real: the crop as it is (photos in grey stay single-channel ``L`` PNGs);
* partial (key ``partial/...``, exact 0/255 mask): ``splice`` (a polygon from
  another photo), ``copymove`` (a polygon of the same image moved elsewhere),
  ``inpaint`` (an irregular blob filled from its blurred, tinted surroundings);
* full (key ``full/...``, no mask): the whole image.

The pixels of every edited region and every fully generated image come out of
the split's :class:`Generator`, a stand-in for a latent-diffusion decoder whose
traces (latent grid, up-sampling kernel, lattice, grain, colour) are the same
throughout a split and differ between splits (:data:`GENERATORS`): as with real
OpenSDID fakes, a detector can learn them from ``sd15`` and finds less of them
in the other splits, least in ``flux``.
"""
import hashlib
import io
import json
import os
import shutil
import tempfile
import zlib
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SAMPLE_VERSION = 3

# name -> (package, file inside it, credit, licence)
PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png",
                  "Eileen Collins, NASA Great Images database (https://flic.kr/p/r9qvLn)",
                  "public domain (no known copyright restrictions)"),
    "camera": ("skimage", "data/camera.png", "Lav Varshney", "CC0"),
    "chelsea": ("skimage", "data/chelsea.png", "Stefan van der Walt", "CC0"),
    "coffee": ("skimage", "data/coffee.png",
               "Rachel Michetti, courtesy of Pikolo Espresso Bar", "CC0"),
    "coins": ("skimage", "data/coins.png", "Brooklyn Museum Collection",
              "no known copyright restrictions"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg",
                          "NASA / HubbleSite (Hubble eXtreme Deep Field)", "public domain"),
    "immunohistochemistry": ("skimage", "data/ihc.png",
                             "Center for Microscopy And Molecular Imaging (CMMI)",
                             "no known copyright restrictions"),
    "retina": ("skimage", "data/retina.jpg",
               "Mikael Haggstrom, Wikimedia Commons (Fundus photograph of normal left eye)",
               "CC0 1.0"),
    "rocket": ("skimage", "data/rocket.jpg", "SpaceX (DSCOVR launch on Falcon 9)", "public domain"),
    "china": ("sklearn", "datasets/images/china.jpg",
              "danielbuechele, Flickr (https://www.flickr.com/photos/danielbuechele/6061409035)",
              "CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/)"),
    "flower": ("sklearn", "datasets/images/flower.jpg",
               "vultilion, Flickr (https://www.flickr.com/photos/vultilion/6056698931)",
               "CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/)"),
}

# Per split: how many rows of each kind, and the parquet shards. Edits have the same sizes in
# every split, so that what differs between splits is the generator alone. Train: hundreds of
# rows to learn from; test: 40+ partial fakes per split, for pixel F1 that a few images do not
# swing. sd2 and sdxl have sizes that are not multiples of 4 or 8: tests use them for the short
# last batch.
PLANS = {
    "train": {
        "sd15": dict(real=80, splice=60, copymove=60, inpaint=60, full=40, shards=2),
    },
    "test": {
        "sd15": dict(real=30, splice=15, copymove=15, inpaint=14, full=10, shards=1),
        "sd2": dict(real=30, splice=14, copymove=15, inpaint=14, full=9, shards=1),
        "sdxl": dict(real=29, splice=14, copymove=14, inpaint=14, full=10, shards=1),
        "sd3": dict(real=30, splice=15, copymove=14, inpaint=15, full=10, shards=1),
        "flux": dict(real=30, splice=14, copymove=14, inpaint=15, full=10, shards=1),
    },
}
AREA = (0.06, 0.25)  # an edit's share of the image

# The demo's input grid, which the generators below are designed for: `--image_size 128` with
# `--if_resizing` (BenCo's bilinear resize). A generator decodes on this grid, whatever the
# image's own size, and its output is scaled up to the image with an interpolating kernel, so
# that the resize brings back the decoded pixels, traces included, on the model's input grid:
# as with a real latent-diffusion model whose output reaches a detector at its native size.
DECODE_SIZE = 128

# Per split, the "generator" whose decoder renders every edited region and every fully
# generated image, imitating what a latent-diffusion decoder leaves: the content passes
# through a latent grid `latent` times coarser than DECODE_SIZE, comes back up with the
# split's `kernel`, keeps `detail` of its own fine structure (1 keeps it all; flux's decoder
# sharpens), and gets the decoder's `lattice` (a fixed pattern repeating with the latent grid,
# std in 0-255 levels; `lattice_share` of it is sd15's pattern, the rest the split's own),
# `grain` (white noise std) and its colour handling (`saturation`, per-channel `gains`).
# sd2 is close to sd15; sdxl, sd3 and flux move away from it in that order, flux keeping all
# detail (sharpened), no lattice and little grain: a detector of sd15's traces finds least
# there, as in the paper's Table 3.
GENERATORS = {
    "sd15": dict(latent=4, kernel="bilinear", detail=0.2, lattice=14.0, lattice_share=1.0, grain=3.0,
                 saturation=0.92, gains=(1.03, 1.0, 0.96)),
    "sd2": dict(latent=4, kernel="bilinear", detail=0.3, lattice=14.0, lattice_share=0.8, grain=3.0,
                saturation=0.95, gains=(1.02, 1.0, 0.98)),
    "sdxl": dict(latent=4, kernel="bicubic", detail=0.5, lattice=10.0, lattice_share=0.5, grain=2.5,
                 saturation=1.0, gains=(1.0, 1.02, 0.99)),
    "sd3": dict(latent=4, kernel="lanczos", detail=0.75, lattice=7.0, lattice_share=0.25, grain=2.0,
                saturation=1.05, gains=(1.0, 1.0, 1.0)),
    "flux": dict(latent=4, kernel="lanczos", detail=1.15, lattice=0.0, lattice_share=0.0, grain=1.0,
                 saturation=1.12, gains=(1.01, 1.0, 1.01)),
}
# The lattice's direction in colour: on RGB it changes the colour but not the luminance
# (Rec. 601 weights), which the eye hardly sees at the lattice's fine period and a detector
# finds as easily; on a grey image it can only change the luminance, which the eye sees, so
# it is weaker there.
_LATTICE_COLOUR = {3: np.array([1.0, -0.315, -1.0], np.float32), 1: np.array([0.4], np.float32)}
_KERNELS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "lanczos": Image.Resampling.LANCZOS}

_SIZES = [(192, 256), (224, 224), (256, 256), (240, 320), (320, 240), (256, 192),
          (288, 288), (320, 320), (208, 304), (304, 208), (256, 320), (320, 256)]  # (H, W)
_BANDS = {"train": (0.0, 0.6), "test": (0.6, 1.0)}
_EDITS = ("splice", "copymove", "inpaint")
_FEATURES = {"key": {"dtype": "string", "_type": "Value"}, "image": {"_type": "Image"},
             "mask": {"_type": "Image"}, "label": {"names": ["real", "fake"], "_type": "ClassLabel"}}


# ---------------------------------------------------------------------------
# where it lives

def cache_root():
    env = os.environ.get("IMDLBENCO_MASKCLIP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "imdlbenco_maskclip"


def sample_dir():
    return cache_root() / f"opensdid_sample_v{SAMPLE_VERSION}"


def ensure_sample():
    """The sample's folder, built first if missing. Safe across processes (file lock + rename)."""
    return ensure_built(sample_dir(), build_sample)


def ensure_built(final, build):
    """``final``, built first by ``build(folder)`` if it has no manifest.json (file lock + rename)."""
    from filelock import FileLock
    if (final / "manifest.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock", timeout=600):
        if not (final / "manifest.json").is_file():
            write_atomically(final, build)
    return final


def write_sample(out_dir):
    """Build the sample into ``out_dir`` atomically; see :func:`write_atomically`."""
    return write_atomically(out_dir, build_sample)


def write_atomically(out_dir, build):
    """Run ``build(folder)`` (which returns the manifest) into a sibling temp folder, renamed to
    ``out_dir`` at the end. An existing complete build at ``out_dir`` is kept. Returns the manifest.
    """
    out_dir = Path(out_dir)
    if (out_dir / "manifest.json").is_file():
        return json.loads((out_dir / "manifest.json").read_text())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        manifest = build(tmp)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process (without the lock, e.g. an explicit --output) finished first.
            if not (out_dir / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


# ---------------------------------------------------------------------------
# building

def build_sample(out_dir):
    """Write the sample's files into the existing folder ``out_dir``; returns the manifest."""
    out_dir = Path(out_dir)
    photos = _load_photos()
    manifest = {"version": SAMPLE_VERSION, "splits": {}}
    for part, plans in PLANS.items():
        (out_dir / part / "data").mkdir(parents=True, exist_ok=True)
        for split, plan in plans.items():
            rows = _make_split(part, split, plan, photos)
            files = _write_shards(rows, out_dir / part / "data", split, plan["shards"])
            manifest["splits"][f"{part}/{split}"] = {
                "rows": len(rows),
                "real": sum(r["label"] == 0 for r in rows),
                "partial": sum(r["key"].startswith("partial/") for r in rows),
                "full": sum(r["key"].startswith("full/") for r in rows),
                "files": {str(f.relative_to(out_dir)): _sha256(f) for f in files},
            }
        (out_dir / part / "README.md").write_text(_hub_card(plans))
    (out_dir / "README.md").write_text(_credits_readme(manifest))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _load_photos():
    photos = {}
    for name, (package, rel, _, _) in PHOTOS.items():
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the embedded sample needs the photo {rel} from the package "
                               f"{package!r}, which is not installed")
        path = Path(spec.submodule_search_locations[0]) / rel
        if not path.is_file():
            raise RuntimeError(f"the embedded sample needs {path} ({package} ships it in its wheel); "
                               f"reinstall {package}")
        with Image.open(path) as img:
            img = img.convert("L" if img.mode in ("L", "I;16", "I") else "RGB")
            if max(img.size) > 720:
                scale = 720 / max(img.size)
                img = img.resize((round(img.width * scale), round(img.height * scale)),
                                 Image.Resampling.LANCZOS)
            photos[name] = img.copy()
    return photos


def _make_split(part, split, plan, photos):
    rng = np.random.default_rng(zlib.crc32(f"opensdid-sample-v{SAMPLE_VERSION}/{part}/{split}".encode()))
    generator = Generator(split)
    kinds = ["real"] * plan["real"] + [e for e in _EDITS for _ in range(plan[e])] + ["full"] * plan["full"]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    names = sorted(photos)
    order = rng.permutation(len(names))
    rows = []
    for i, kind in enumerate(kinds):
        photo = names[order[i % len(names)]]
        size = _SIZES[rng.integers(len(_SIZES))]
        img = _crop(photos[photo], _BANDS[part], size, rng)
        if kind == "real":
            rows.append(_row(f"real/{split}/real/{i:05d}_{photo}.png", img, None, 0))
        elif kind == "full":
            rows.append(_row(f"full/{split}/fake/{i:05d}_{photo}_generated.png", generator(img, rng), None, 1))
        else:
            if kind == "splice":
                donor_name = names[(names.index(photo) + 1 + rng.integers(len(names) - 1)) % len(names)]
                edited, mask = _splice(img, _crop(photos[donor_name], _BANDS[part], size, rng), generator, rng)
            else:
                edited, mask = _EDIT_FUNCS[kind](img, generator, rng)
            rows.append(_row(f"partial/{split}/fake/{i:05d}_{photo}_{kind}.png", edited, mask, 1))
    return rows


class Generator:
    """One split's stand-in for a latent-diffusion model's decoder (see :data:`GENERATORS`).

    ``generator(content, rng)`` renders an (H, W, C) uint8 image as this split's decoder
    would: same size and channels, every pixel changed, the split's traces throughout,
    laid out on the DECODE_SIZE grid.
    """

    def __init__(self, split):
        self.params = p = GENERATORS[split]
        # The lattice is the decoder's own: one pattern per split, not per image, sharing
        # `lattice_share` of sd15's so that a detector of sd15's finds it in proportion.
        own, sd15 = (_unit_tile(name, p["latent"]) for name in (split, "sd15"))
        share = p["lattice_share"]
        self.tile = share * sd15 + np.sqrt(1 - share ** 2) * own

    def __call__(self, content, rng):
        from scipy.ndimage import gaussian_filter
        p = self.params
        n, f = DECODE_SIZE, p["latent"]
        h, w, c = content.shape
        pil = Image.fromarray(content[:, :, 0] if c == 1 else content)
        grid = pil.resize((n, n), Image.Resampling.BILINEAR)
        x = np.asarray(grid, dtype=np.float32).reshape(n, n, c)
        latent = grid.resize((n // f, n // f), Image.Resampling.BOX)
        decoded = np.asarray(latent.resize((n, n), _KERNELS[p["kernel"]]), dtype=np.float32).reshape(n, n, c)
        decoded += p["detail"] * (x - gaussian_filter(x, sigma=(f / 2, f / 2, 0)))
        if c == 3:
            grey = decoded.mean(axis=2, keepdims=True)
            decoded = (grey + p["saturation"] * (decoded - grey)) * np.asarray(p["gains"], np.float32)
        decoded += p["lattice"] * np.tile(self.tile, (n // f, n // f))[:, :, None] * _LATTICE_COLOUR[c]
        decoded += rng.normal(0, p["grain"], decoded.shape).astype(np.float32)
        # Back to the image's size through a kernel that passes through its samples: BenCo's
        # resize to DECODE_SIZE then lands on them (to within rounding) and finds the traces.
        channels = [Image.fromarray(decoded[:, :, i]).resize((w, h), Image.Resampling.BICUBIC)
                    for i in range(c)]
        out = np.stack([np.asarray(ch) for ch in channels], axis=2)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _unit_tile(name, f):
    tile = np.random.default_rng(zlib.crc32(f"opensdid-sample-lattice/{name}".encode())).normal(size=(f, f))
    return ((tile - tile.mean()) / tile.std()).astype(np.float32)


def _crop(photo, band, size, rng):
    """A random crop inside the photo's column band, resized to ``size`` (H, W)."""
    th, tw = size
    W, H = photo.size
    x0, x1 = band[0] * W, band[1] * W
    aspect = tw / th
    max_h = min(H, (x1 - x0) / aspect)
    ch = max_h * rng.uniform(0.45, 0.95)
    cw = ch * aspect
    y = rng.uniform(0, H - ch)
    x = x0 + rng.uniform(0, (x1 - x0) - cw)
    img = photo.resize((tw, th), Image.Resampling.BICUBIC, box=(x, y, x + cw, y + ch))
    arr = np.asarray(img)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _shape(rng, area_px, kind, limit):
    """A bool patch holding a star-shaped polygon or a blob of ellipses of about ``area_px``."""
    r = min(np.sqrt(area_px / np.pi), (limit - 4) / 2.6)
    side = int(np.ceil(2.6 * r)) + 2
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    c = side / 2
    if kind == "polygon":
        n = int(rng.integers(5, 11))
        # Jittered around evenly spread directions: random angles can bunch up into a sliver.
        angles = (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * (2 * np.pi / n)
        radii = r * rng.uniform(0.6, 1.25, n)
        draw.polygon([(c + q * np.cos(a), c + q * np.sin(a)) for a, q in zip(angles, radii)], fill=255)
    else:
        for _ in range(int(rng.integers(3, 7))):
            ox, oy = rng.uniform(-0.45, 0.45, 2) * r
            rx, ry = rng.uniform(0.35, 0.75, 2) * r
            draw.ellipse((c + ox - rx, c + oy - ry, c + ox + rx, c + oy + ry), fill=255)
    patch = np.asarray(canvas) > 0
    ys, xs = np.nonzero(patch)
    return patch[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _place(patch, shape, rng):
    """Random top-left corner so ``patch`` fits in an image of ``shape`` (H, W)."""
    return int(rng.integers(0, shape[0] - patch.shape[0] + 1)), int(rng.integers(0, shape[1] - patch.shape[1] + 1))


def _full_mask(patch, yx, shape):
    mask = np.zeros(shape[:2], dtype=bool)
    y, x = yx
    mask[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
    return mask


def _area(img, rng):
    h, w = img.shape[:2]
    return rng.uniform(*AREA) * h * w, min(h, w)


def _render(img, content, mask, generator, rng):
    """``img`` with the pixels under ``mask`` replaced by the generator's rendering of ``content``.

    The whole image is rendered, so that the edit's traces sit on the same grid as those of a
    fully generated image.
    """
    out = img.copy()
    out[mask] = generator(content, rng)[mask]
    return out


def _splice(img, donor, generator, rng):
    """A polygon of another photo, as the generator renders it."""
    area, limit = _area(img, rng)
    patch = _shape(rng, area, "polygon", limit)
    mask = _full_mask(patch, _place(patch, img.shape, rng), img.shape)
    if donor.shape[2] != img.shape[2]:
        donor = np.asarray(Image.fromarray(donor[:, :, 0] if donor.shape[2] == 1 else donor)
                           .convert("L" if img.shape[2] == 1 else "RGB"))
        donor = donor[:, :, None] if donor.ndim == 2 else donor
    return _render(img, donor, mask, generator, rng), mask


def _copymove(img, generator, rng):
    """A polygon of the same image moved elsewhere, as the generator renders it."""
    area, limit = _area(img, rng)
    patch = _shape(rng, area, "polygon", limit)
    src = _place(patch, img.shape, rng)
    # Prefer a destination at least half a patch away so the move is visible.
    for _ in range(20):
        dst = _place(patch, img.shape, rng)
        if max(abs(dst[0] - src[0]) / patch.shape[0], abs(dst[1] - src[1]) / patch.shape[1]) >= 0.5:
            break
    ph, pw = patch.shape
    moved = img.copy()
    moved[dst[0]:dst[0] + ph, dst[1]:dst[1] + pw][patch] = img[src[0]:src[0] + ph, src[1]:src[1] + pw][patch]
    mask = _full_mask(patch, dst, img.shape)
    return _render(img, moved, mask, generator, rng), mask


def _inpaint(img, generator, rng):
    """An irregular blob filled from its surroundings (blurred, tinted), as the generator renders it."""
    from scipy.ndimage import gaussian_filter
    area, limit = _area(img, rng)
    patch = _shape(rng, area, "blob", limit)
    mask = _full_mask(patch, _place(patch, img.shape, rng), img.shape)
    sigma = rng.uniform(3.0, 6.0)
    fill = gaussian_filter(img.astype(np.float32), sigma=(sigma, sigma, 0))
    fill += rng.uniform(-12, 12, (1, 1, img.shape[2])).astype(np.float32)
    return _render(img, np.clip(np.rint(fill), 0, 255).astype(np.uint8), mask, generator, rng), mask


_EDIT_FUNCS = {"copymove": _copymove, "inpaint": _inpaint}


def _png(arr):
    buf = io.BytesIO()
    # Level 1: most of the build's time went into PNG compression at the default 6, for 10% smaller files.
    Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(
        buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _row(key, img, mask, label):
    return {"key": key, "image": {"bytes": _png(img), "path": None},
            "mask": None if mask is None else {"bytes": _png(mask.astype(np.uint8) * 255), "path": None},
            "label": label}


def _write_shards(rows, data_dir, split, shards):
    import pyarrow as pa
    import pyarrow.parquet as pq
    cell = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("key", pa.string()), ("image", cell), ("mask", cell), ("label", pa.int64())],
                       metadata={"huggingface": json.dumps({"info": {"features": _FEATURES}})})
    files = []
    for s, chunk in enumerate(np.array_split(np.arange(len(rows)), shards)):
        path = data_dir / f"{split}-{s:05d}-of-{shards:05d}.parquet"
        pq.write_table(pa.Table.from_pylist([rows[i] for i in chunk], schema=schema), path,
                       row_group_size=16)
        files.append(path)
    return files


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _hub_card(plans):
    configs = "\n".join(f"      - split: {s}\n        path: data/{s}-*" for s in plans)
    return ("---\nlicense: cc-by-sa-4.0\nconfigs:\n  - config_name: default\n    data_files:\n"
            f"{configs}\n---\n\nPart of the embedded OpenSDID sample; see ../README.md.\n")


def _credits_readme(manifest):
    lines = [
        f"# Embedded OpenSDID sample v{SAMPLE_VERSION}",
        "",
        "Generated by `imdlbenco_maskclip.datasets.sample` from photographs shipped in the",
        "scikit-image and scikit-learn packages. It imitates the layout and semantics of",
        "`nebula/OpenSDI_train` / `nebula/OpenSDI_test`; its edited regions and generated",
        "images come from a small per-split imitation of a latent-diffusion decoder, not",
        "from diffusion models, so it is for exercising code, not for measuring detectors.",
        "Derived images keep the licence of their source photo;",
        "the CC BY 2.0 photos need the attribution below.",
        "",
        "| split | rows | real | partial | full |",
        "|---|---|---|---|---|",
    ]
    for name, s in manifest["splits"].items():
        lines.append(f"| {name} | {s['rows']} | {s['real']} | {s['partial']} | {s['full']} |")
    lines += ["", "## Photographs", "", "| photo | file | credit | licence |", "|---|---|---|---|"]
    for name, (package, rel, credit, licence) in PHOTOS.items():
        lines.append(f"| {name} | {package}/{rel} | {credit} | {licence} |")
    return "\n".join(lines) + "\n"
