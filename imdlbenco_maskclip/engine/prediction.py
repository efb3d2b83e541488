"""``predict``: a trained checkpoint on your own images -> masks, overlays and fake probabilities.

    benco-maskclip predict --checkpoint_path CKPT [--output_dir DIR] IMAGE_OR_FOLDER [...]

The model, its flags and the input handling (resize, or pad, to the training ``--image_size``)
come from the flags the checkpoint saved at training time, and every image goes through
BenCo's own dataset pipeline, so it sees exactly the preprocessing ``test`` applies. Weights
all come from the checkpoint: weight-source flags are set to ``none`` and nothing is
downloaded. Folders are searched recursively for image files. Written to ``--output_dir``:

* ``masks/<name>.png``: P(manipulated) per pixel as 8-bit grey (255 = 1.0), at the image's size;
* ``overlays/<name>.jpg``: the image, pixels above ``--threshold`` tinted red;
* ``predictions.csv`` and ``predictions.json``: per image its path, P(fake), the verdict at 0.5
  and the fraction of pixels above ``--threshold``; the JSON also lists skipped files;
* ``gallery.png``: the first 16 overlays with their probabilities, to look at.

A file that does not decode is skipped, counted and listed with its reason; the command
exits with 1 when any file was skipped.
"""
import argparse
import csv
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, default_collate

from IMDLBenCo.datasets.abstract_dataset import AbstractDataset

from ..datasets.opensdid import _IMAGE_EXTS, to_rgb_uint8
from . import data, reporting, runtime
from .options import ConfigError, check_folder_flag

GALLERY_SIZE = 16


def build_parser():
    parser = argparse.ArgumentParser(prog="benco-maskclip predict", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    add("--checkpoint_path", required=True,
        help="a checkpoint written by `benco-maskclip train`, or its --output_dir (checkpoint-best.pth)")
    add("--output_dir", default="./predict_dir")
    add("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    add("--batch_size", default=4, type=int)
    add("--num_workers", default=2, type=int, help="DataLoader workers decoding images")
    add("--threshold", default=0.5, type=float, help="P(manipulated) above which a pixel is marked")
    return parser


def find_images(inputs):
    """Files and folders -> image paths, folders searched recursively in sorted order; a file
    reached twice (by name and in a folder) is predicted once."""
    found = []
    for entry in inputs:
        path = Path(entry)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(p for p in sorted(path.rglob("*"))
                         if p.is_file() and p.suffix.lower() in _IMAGE_EXTS
                         and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            raise ConfigError(f"input {entry!r}: no such file or folder")
    if not found:
        raise ConfigError(f"no image files ({', '.join(_IMAGE_EXTS)}) in {', '.join(map(repr, inputs))}")
    unique = {path.resolve(): path for path in reversed(found)}  # a file named twice: its first mention
    return [path for path in found if unique[path.resolve()] is path]


def output_names(paths):
    """A distinct file stem per image: its own stem, with ``~2``, ``~3`` ... for repeats."""
    seen, names = {}, []
    for path in paths:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}~{seen[stem]}")
    return names


class ImageFiles(AbstractDataset):
    """Images without ground truth, through BenCo's ``AbstractDataset`` pipeline.

    Each item is BenCo's dict (mask all zero, label 0: unknown, only there for the model's
    loss) plus ``index`` and ``original`` (the decoded RGB array, for the overlay); an
    image that does not decode gives
    ``{"index", "error"}`` instead, so one bad file never stops a DataLoader. In pad mode an
    image larger than ``output_size`` is first shrunk to fit (BenCo's pad transform would crop
    it to its top-left corner); ``origin_shape`` is then smaller than ``original``.
    """

    def _init_dataset_path(self, paths):
        self.entry_path = f"{len(paths)} image files"
        return [str(p) for p in paths], ["Negative"] * len(paths)

    def _get_image(self, index):
        path = self.tp_path[index]
        with Image.open(path) as img:
            # Upright as viewers show it (phone photos store the rotation in EXIF), so the
            # mask and overlay line up with the picture the user sees.
            image = to_rgb_uint8(ImageOps.exif_transpose(img))
        # Handed to __getitem__ beside BenCo's dict (it only passes on what it knows).
        self._original = image
        height, width = image.shape[:2]
        if self.is_padding and (height > self.output_size[0] or width > self.output_size[1]):
            scale = min(self.output_size[0] / height, self.output_size[1] / width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
        shape = (image.shape[1], image.shape[0])
        return image, np.zeros_like(image), 0, shape, shape, path, "Negative"

    def __getitem__(self, index):
        try:
            item = super().__getitem__(index)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return {"index": index, "error": f"{type(exc).__name__}: {exc}"}
        item.update(index=index, original=self._original)
        return item


def collate(items):
    """-> (BenCo batch of the readable images or None, their original RGB arrays, [(index, error), ...])."""
    good = [item for item in items if "error" not in item]
    errors = [(item["index"], item["error"]) for item in items if "error" in item]
    originals = [item.pop("original") for item in good]
    return (default_collate(good) if good else None), originals, errors


def checkpoint_flags(checkpoint, path):
    """The training flags a checkpoint saved -> (args, model_args) to build its model."""
    saved = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    if saved is None or not hasattr(saved, "model_args"):
        raise ConfigError(f"--checkpoint_path {path}: it holds no training flags of `benco-maskclip train`, "
                          f"so the model to build is unknown; predict with a checkpoint that command wrote")
    args = types.SimpleNamespace(model=saved.model, image_size=saved.image_size,
                                 if_padding=bool(saved.if_padding), if_resizing=not saved.if_padding)
    return args, runtime.without_weight_sources(types.SimpleNamespace(**saved.model_args))


def overlay(image, prob, threshold):
    """RGB uint8 [H, W, 3], probabilities [H, W] -> RGB uint8 with marked pixels tinted red."""
    marked = (prob > threshold)[:, :, None]
    red = np.array([255, 0, 0], dtype=np.float32)
    return np.where(marked, 0.5 * image + 0.5 * red, image).astype(np.uint8)


def write_gallery(path, entries, threshold):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(entries))
    rows = -(-len(entries) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, picture, fake_probability) in zip(axes.flat, entries):
        ax.imshow(picture)
        ax.set_title(f"{name[:36]}\nP(fake) {fake_probability:.3f}", fontsize=7)
    fig.suptitle(f"red: P(manipulated) > {threshold}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def to_image_size(prob, origin_shape, padded, full_size):
    """Model probabilities [S, S] -> [H, W] of the original image.

    ``origin_shape``: the size the dataset saw (BenCo's ``origin_shape``; smaller than
    ``full_size`` when pad mode shrank a large image), ``padded``: pad mode, else resize mode.
    """
    if padded:
        prob = prob[:origin_shape[0], :origin_shape[1]]
    if tuple(prob.shape) != tuple(full_size):
        prob = F.interpolate(prob[None, None], size=tuple(full_size), mode="bilinear", align_corners=False)[0, 0]
    return prob


def run(argv):
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold {args.threshold}: a probability in [0, 1]")
    if args.batch_size < 1 or args.num_workers < 0:
        raise ConfigError(f"--batch_size {args.batch_size} / --num_workers {args.num_workers}: "
                          f"at least 1 image per batch and 0 or more workers")
    check_folder_flag("output_dir", args.output_dir)
    device = runtime.device_without_process_group(args)
    paths = find_images(args.inputs)
    names = output_names(paths)
    checkpoint_file = runtime.resolve_checkpoint(args.checkpoint_path)
    checkpoint = runtime.read_checkpoint(checkpoint_file)
    model_flags, model_args = checkpoint_flags(checkpoint, checkpoint_file)
    model = runtime.build_model(model_flags, model_args)
    epoch = runtime.load_weights(model, checkpoint_file, model_flags, checkpoint=checkpoint)
    del checkpoint
    model.to(device).eval()

    size = model_flags.image_size
    dataset = ImageFiles(paths, is_padding=model_flags.if_padding, is_resizing=model_flags.if_resizing,
                         output_size=(size, size), post_funcs=data.post_function(model_flags.model))
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate)
    out = Path(args.output_dir)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(exist_ok=True)
    print(f"[predict] {len(paths)} images, {model_flags.model} from {checkpoint_file}"
          + (f" (epoch {epoch})" if epoch is not None else "")
          + f", {'padded' if model_flags.if_padding else 'resized'} to {size}, on {device}")

    from tqdm import tqdm
    rows, skipped, gallery = [], [], []
    with torch.no_grad(), tqdm(total=len(paths), unit="img", file=sys.stdout) as progress:
        for batch, originals, errors in loader:
            skipped += [{"path": str(paths[index]), "reason": reason} for index, reason in errors]
            progress.update(len(errors))
            if batch is None:
                continue
            inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()
                      if k != "index"}
            output = model(**inputs)
            probs = output["pred_mask"][:, 0].float().cpu()
            fake = output["pred_label"].reshape(-1).float().cpu()
            for i, (index, image) in enumerate(zip(batch["index"].tolist(), originals)):
                prob = to_image_size(probs[i], batch["origin_shape"][i].tolist(), model_flags.if_padding,
                                     image.shape[:2]).numpy()
                name = names[index]
                Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(out / "masks" / f"{name}.png")
                tinted = overlay(image, prob, args.threshold)
                Image.fromarray(tinted).save(out / "overlays" / f"{name}.jpg", quality=90)
                rows.append({"path": str(paths[index]), "name": name, "fake_probability": float(fake[i]),
                             "predicted_fake": int(fake[i] >= 0.5),
                             "marked_fraction": float((prob > args.threshold).mean()),
                             "height": image.shape[0], "width": image.shape[1]})
                if len(gallery) < GALLERY_SIZE:
                    gallery.append((name, tinted, float(fake[i])))
            progress.update(len(batch["index"]))

    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path"])
        writer.writeheader()
        writer.writerows(rows)
    reporting.write_json(out / "predictions.json", {
        "checkpoint": checkpoint_file, "epoch": epoch, "model": model_flags.model,
        "model_args": vars(model_args), "threshold": args.threshold,
        "predictions": rows, "skipped": skipped})
    if gallery:
        write_gallery(out / "gallery.png", gallery, args.threshold)
    print(f"[predict] {len(rows)} images predicted, {len(skipped)} skipped; "
          f"{out / 'predictions.csv'}, masks in {out / 'masks'}, overlays in {out / 'overlays'}"
          + (f", {out / 'gallery.png'}" if gallery else ""))
    for entry in skipped:
        print(f"[predict] skipped {entry['path']}: {entry['reason']}", file=sys.stderr)
    return 1 if skipped else 0
