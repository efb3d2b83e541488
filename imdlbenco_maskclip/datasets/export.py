"""Write an OpenSDID split as BenCo's JSON-list dataset (``JsonDataset``), in a folder that
is also a BenCo folder dataset (``ManiDataset``).

Layout written under ``out_dir``::

    Tp/<name>.png   the image, 8-bit RGB, lossless
    Gt/<name>.png   the mask: the partial fake's own mask, all white for a fully
                    generated fake (BenCo then marks every pixel fake), all black
                    for a real image
    <split>.json    [["<abs>/Tp/<name>.png", "<abs>/Gt/<name>.png" or "Negative"], ...]

Paths in the JSON are absolute because BenCo resolves them against the working
directory, not the JSON file. ``<name>`` is the ``name`` OpenSDID reports, so
both datasets give the same ``name`` for a sample. ``ManiDataset`` pairs the sorted
``Tp/`` and ``Gt/`` listings, so every image has its ``Gt/`` file of the same name, real
ones included (the JSON calls those "Negative", which gives them label 0 even when no
transform runs; in the folder, BenCo takes a real image's label from its black mask only
when a transform runs, as in its stock training and test scripts).
"""
import json
from pathlib import Path

from PIL import Image

from .opensdid import OpenSDID


def export_split(dataset, out_dir):
    """Export every (valid) row of an :class:`OpenSDID`; returns the JSON path.

    With ``on_bad_sample='skip'`` bad rows are left out and listed in ``dataset.skipped``.
    """
    out_dir = Path(out_dir).resolve()
    (out_dir / "Tp").mkdir(parents=True, exist_ok=True)
    (out_dir / "Gt").mkdir(parents=True, exist_ok=True)
    records = []
    for _, name, image, mask, label in dataset.iter_raw():
        tp, gt = out_dir / "Tp" / name, out_dir / "Gt" / name
        Image.fromarray(image).save(tp)
        Image.fromarray(mask).save(gt)
        records.append([str(tp), "Negative" if label == 0 else str(gt)])
    json_path = out_dir / f"{dataset.split}.json"
    json_path.write_text(json.dumps(records, indent=0) + "\n")
    return json_path


def export_source(source, out_dir, split=None, subset="all", on_bad_sample="error"):
    """Open ``source`` (any OpenSDID source) and export one split; returns (json path, dataset)."""
    # BenCo insists on a resize or pad transform; export reads raw rows and never uses it.
    dataset = OpenSDID(source, is_resizing=True, split=split, subset=subset, on_bad_sample=on_bad_sample)
    return export_split(dataset, out_dir), dataset
