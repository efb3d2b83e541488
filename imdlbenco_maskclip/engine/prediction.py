"""``predict``: a trained checkpoint on your own images -> masks, overlays and fake probabilities.

    benco-maskclip predict --checkpoint_path CKPT [--output_dir DIR] IMAGE_OR_FOLDER [...]

The model, its flags and the input handling (resize, or pad, to the training ``--image_size``;
the edge mask) come from the flags the checkpoint saved at training time (the command line
wins, ``--config`` does not), and every image goes through BenCo's own dataset pipeline, so
it sees exactly the preprocessing ``test`` applies. Weights all come from the checkpoint
(``models.model_from_checkpoint``). Folders are searched recursively for image files.
Written to ``--output_dir``:

* ``masks/<name>.png``: P(manipulated) per pixel as 8-bit grey (255 = 1.0), at the image's size;
* ``overlays/<name>.jpg``: the image, pixels above ``--threshold`` tinted red;
* ``predictions.csv`` and ``predictions.json``: per image its path, P(fake), the verdict at 0.5
  and the fraction of pixels above ``--threshold``; the JSON also lists skipped files. A
  model without image-level output (IML-ViT) gets "n/a" (JSON: null) for P(fake) and verdict;
* ``gallery.png``: the first 16 overlays with their probabilities, to look at.

A file that does not decode is skipped, counted and listed with its reason; the command
exits with 1 when any file was skipped.
"""
import csv
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, default_collate

from IMDLBenCo.datasets.abstract_dataset import AbstractDataset

from .. import figures
from ..datasets.opensdid import _IMAGE_EXTS, ImageDataError, to_rgb_uint8
from ..errors import UserError
from . import data, models, precision, reporting, runtime

GALLERY_SIZE = 16


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
            raise UserError(f"input {entry!r}: no such file or folder")
    if not found:
        raise UserError(f"no image files ({', '.join(_IMAGE_EXTS)}) in {', '.join(map(repr, inputs))}")
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
        except (OSError, ValueError, ImageDataError, Image.DecompressionBombError) as exc:  # unreadable files
            return {"index": index, "error": f"{type(exc).__name__}: {exc}"}
        item.update(index=index, original=self._original)
        return item


def collate(items):
    """-> (BenCo batch of the readable images or None, their original RGB arrays, [(index, error), ...])."""
    good = [item for item in items if "error" not in item]
    errors = [(item["index"], item["error"]) for item in items if "error" in item]
    originals = [item.pop("original") for item in good]
    return (default_collate(good) if good else None), originals, errors


def overlay(image, prob, threshold):
    """RGB uint8 [H, W, 3], probabilities [H, W] -> RGB uint8 with marked pixels tinted red."""
    marked = (prob > threshold)[:, :, None]
    red = np.array([255, 0, 0], dtype=np.float32)
    return np.where(marked, 0.5 * image + 0.5 * red, image).astype(np.uint8)


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


def open_images(args, paths):
    """A DataLoader of ``paths`` through BenCo's pipeline, as the checkpoint's training flags say."""
    size = args.image_size
    dataset = ImageFiles(paths, is_padding=args.if_padding, is_resizing=args.if_resizing, output_size=(size, size),
                         edge_width=args.edge_mask_width, post_funcs=data.post_function(args.model))
    return DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate,
                      pin_memory=data.pin_memory(args))


def predict(model, loader, device, padded, skipped):
    """Yield (index, P(manipulated) [H, W] at the image's size, P(fake) or None, original RGB)
    per readable image; unreadable ones are appended to ``skipped`` as (index, reason)."""
    for batch, originals, errors in loader:
        skipped += errors
        if batch is None:
            continue
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "index"}
        output = model(**inputs)
        probs = output["pred_mask"][:, 0].float().cpu()
        fakes = models.fake_probabilities(output)
        fakes = [None] * len(originals) if fakes is None else fakes.float().cpu().tolist()
        for i, (index, image) in enumerate(zip(batch["index"].tolist(), originals)):
            prob = to_image_size(probs[i], batch["origin_shape"][i].tolist(), padded, image.shape[:2]).numpy()
            yield index, prob, fakes[i], image


def write_image_outputs(out, name, prob, image, threshold):
    """masks/<name>.png and overlays/<name>.jpg -> the overlay."""
    Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(out / "masks" / f"{name}.png")
    tinted = overlay(image, prob, threshold)
    Image.fromarray(tinted).save(out / "overlays" / f"{name}.jpg", quality=90)
    return tinted


def write_tables(out, rows, meta):
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path"])
        writer.writeheader()
        writer.writerows([{k: "n/a" if v is None else v for k, v in row.items()} for row in rows])
    reporting.write_json(out / "predictions.json", {**meta, "predictions": rows})


def run(args, model_args):
    device = runtime.device_without_process_group(args)
    paths = find_images(args.inputs)
    names = output_names(paths)
    model, epoch = models.model_from_checkpoint(args.checkpoint_path, args, model_args)
    model = precision.for_inference(model.to(device).eval(), args.dtype, device)
    loader = open_images(args, paths)
    out = Path(args.output_dir)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(exist_ok=True)
    print(f"[predict] {len(paths)} images, {args.model} from {args.checkpoint_path}"
          + (f" (epoch {epoch})" if epoch is not None else "")
          + f", {'padded' if args.if_padding else 'resized'} to {args.image_size}, on {device} in {args.dtype}")

    from tqdm import tqdm
    rows, errors, gallery = [], [], []
    with torch.no_grad(), tqdm(total=len(paths), unit="img", file=sys.stdout) as progress:
        for index, prob, fake, image in predict(model, loader, device, args.if_padding, errors):
            name = names[index]
            tinted = write_image_outputs(out, name, prob, image, args.threshold)
            rows.append({"path": str(paths[index]), "name": name, "fake_probability": fake,
                         "predicted_fake": None if fake is None else int(fake >= 0.5),
                         "marked_fraction": float((prob > args.threshold).mean()),
                         "height": image.shape[0], "width": image.shape[1]})
            if len(gallery) < GALLERY_SIZE:
                gallery.append((name, tinted, fake))
            progress.n = len(rows) + len(errors)
            progress.refresh()

    skipped = [{"path": str(paths[index]), "reason": reason} for index, reason in sorted(errors)]
    write_tables(out, rows, {"checkpoint": args.checkpoint_path, "epoch": epoch, "model": args.model, "dtype": args.dtype,
                             "model_args": args.model_args, "threshold": args.threshold, "skipped": skipped})
    if gallery:
        figures.write_prediction_gallery(out / "gallery.png", gallery, args.threshold)
    print(f"[predict] {len(rows)} images predicted, {len(skipped)} skipped; "
          f"{out / 'predictions.csv'}, masks in {out / 'masks'}, overlays in {out / 'overlays'}"
          + (f", {out / 'gallery.png'}" if gallery else ""))
    for entry in skipped:
        print(f"[predict] skipped {entry['path']}: {entry['reason']}", file=sys.stderr)
    return 1 if skipped else 0
