"""The dataset commands of ``benco-maskclip``; each takes its parsed flags (``flags.parse``)
and returns an exit code::

    benco-maskclip sample [--output DIR]
        Build the embedded OpenSDID sample (in the cache, or in DIR) and print its
        folder. Sources ``sample:train`` / ``sample:test`` then read it.

    benco-maskclip export SOURCE --output DIR [--dataset OpenSDID|BRGen] [--split S] [--subset all|pixel]
                                 [--balance 1|0] [--balance_seed 0] [--on_bad_sample error|skip]
        Write one split (a BR-Gen set: its drawn images) as BenCo's JSON-list dataset (Tp/,
        Gt/, <split>.json) and print the JSON's path, usable as a BenCo ``--data_path``/test
        JSON entry. BR-Gen images keep their file names, so the list JSON gives Split A/B.

    benco-maskclip preview SOURCE --output grid.png [--split S] [-n 12] [--subset all|pixel]
                                  [--on_bad_sample error|skip] [--cols 4] [--seed 0]
        Draw N samples in a grid, partial-edit masks outlined in red, titles giving the label,
        the kind (real / partial / full) and the name.

SOURCE is any OpenSDID source: a hub id, a local folder, ``sample:train`` or
``sample:test``, optionally ``<source>#<split>``; with ``--dataset BRGen`` a BR-Gen folder or
``sample:brgen``, optionally ``<folder>#<subset>``.
"""
import sys
from pathlib import Path

from ..errors import UserError


def sample(args):
    from .sample import ensure_sample, write_sample
    if args.output:
        write_sample(args.output)
        path = Path(args.output).resolve()
    else:
        path = ensure_sample()
    print(path)
    return 0


def _open(args):
    """The OpenSDID split or BR-Gen set ``args`` name (``--dataset``); a source, split or sample
    that cannot be used is a user error."""
    from .brgen import BRGen
    from .opensdid import OpenSDID, SourceError
    if args.dataset == "BRGen":
        if args.subset != "all":
            raise UserError(f"--subset {args.subset} is OpenSDID's", hint="BR-Gen subsets: --split or '<folder>#<subset>'")
        dataset, options = BRGen, dict(balance=args.balance, seed=args.balance_seed)
    else:
        dataset, options = OpenSDID, dict(subset=args.subset)
    try:
        # BenCo insists on a resize or pad transform; export and preview read raw rows and never use it.
        return dataset(args.source, is_resizing=True, split=args.split, on_bad_sample=args.on_bad_sample, **options)
    except SourceError as exc:
        raise UserError(f"{args.source}: {exc}", hint=exc.hint) from exc


def export(args):
    from .export import export_split
    dataset = _open(args)
    try:
        json_path = export_split(dataset, args.output)
    except OSError as exc:
        raise UserError(f"--output {args.output}: {exc}") from exc
    if dataset.skipped:
        print(dataset.report(), file=sys.stderr)
    print(json_path)
    return 0


def preview(args):
    from ..figures import write_preview
    dataset = _open(args)
    out = Path(args.output).resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_preview(dataset, str(out), num=args.num, cols=args.cols, seed=args.seed)
    except OSError as exc:
        raise UserError(f"--output {args.output}: {exc}") from exc
    print(out)
    return 0
