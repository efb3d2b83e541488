"""Entry functions for the dataset subcommands of ``benco-maskclip``.

Each takes the arguments after the subcommand name and returns an exit code::

    main_sample(argv)   benco-maskclip sample [--out DIR]
        Build the embedded OpenSDID sample (in the cache, or in DIR) and print its
        folder. Sources ``sample:train`` / ``sample:test`` then read it.

    main_export(argv)   benco-maskclip export SOURCE --out DIR [--split S] [--subset all|pixel]
                                              [--on-bad-sample error|skip]
        Write one split as BenCo's JSON-list dataset (Tp/, Gt/, <split>.json) and
        print the JSON's path, usable as a BenCo ``--data_path``/test JSON entry.

    main_preview(argv)  benco-maskclip preview SOURCE --out grid.png [--split S] [-n 12]
                                               [--subset all|pixel] [--on-bad-sample error|skip]
                                               [--cols 4] [--seed 0]
        Draw N samples in a grid, partial-edit masks outlined in red, titles giving the label,
        the kind (real / partial / full) and the name.

SOURCE is any OpenSDID source: a hub id, a local folder, ``sample:train`` or
``sample:test``, optionally ``<source>#<split>``.
"""
import argparse
import sys
from pathlib import Path

import numpy as np


def main_sample(argv):
    parser = argparse.ArgumentParser(prog="benco-maskclip sample",
                                     description="Build the embedded OpenSDID sample and print its folder.")
    parser.add_argument("--out", help="build into this folder instead of the cache "
                                      "($IMDLBENCO_MASKCLIP_CACHE or ~/.cache/imdlbenco_maskclip)")
    args = parser.parse_args(argv)
    from .sample import ensure_sample, write_sample
    if args.out:
        write_sample(args.out)
        path = Path(args.out).resolve()
    else:
        path = ensure_sample()
    print(path)
    return 0


def main_export(argv):
    parser = _source_parser("export", "Write an OpenSDID split as a BenCo JSON dataset.",
                            "folder to write Tp/, Gt/ and <split>.json into")
    args = parser.parse_args(argv)
    from .export import export_source
    json_path, dataset = export_source(args.source, args.out, split=args.split, subset=args.subset,
                                       on_bad_sample=args.on_bad_sample)
    if dataset.skipped:
        print(dataset.report(), file=sys.stderr)
    print(json_path)
    return 0


def main_preview(argv):
    parser = _source_parser("preview", "Draw a grid of samples with their masks.", "PNG file to write")
    parser.add_argument("-n", "--num", type=int, default=12, help="how many samples (default 12)")
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="which samples: a seeded random choice")
    args = parser.parse_args(argv)
    if args.num < 1 or args.cols < 1:
        parser.error(f"-n/--num {args.num} and --cols {args.cols} must be at least 1")
    from .opensdid import OpenSDID
    # BenCo insists on a resize or pad transform; the preview reads raw rows and never uses it.
    dataset = OpenSDID(args.source, is_resizing=True, split=args.split, subset=args.subset,
                       on_bad_sample=args.on_bad_sample)
    Path(args.out).resolve().parent.mkdir(parents=True, exist_ok=True)
    write_preview(dataset, args.out, num=args.num, cols=args.cols, seed=args.seed)
    print(Path(args.out).resolve())
    return 0


def write_preview(dataset, out, num=12, cols=4, seed=0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .opensdid import BadSampleError

    pick = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:num])
    kinds, names = dataset.kinds, dataset.names  # properties that build a list over the whole set
    n_rows = max(1, -(-len(pick) // cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 3.4 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, pick):
        name = names[i]
        try:
            image, mask, label = dataset.read(i)
        except BadSampleError as exc:
            ax.set_title(f"BAD: {name}\n{exc.reason[:60]}", fontsize=7, color="red")
            continue
        ax.imshow(image)
        if kinds[i] == "partial":
            # An outline rather than a fill, so the edit itself stays visible.
            ax.contour(mask.mean(axis=2) > 127.5, levels=[0.5], colors="red", linewidths=1.2)
        ax.set_title(f"label {label} ({kinds[i]})  {image.shape[1]}x{image.shape[0]}\n{name[:42]}",
                     fontsize=7)
    fig.suptitle(f"OpenSDID {dataset.entry_path} ({dataset.subset}); red outline = mask of a partial edit",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _source_parser(command, description, out_help):
    parser = argparse.ArgumentParser(prog=f"benco-maskclip {command}", description=description)
    parser.add_argument("source", help="hub id, local folder, sample:train or sample:test; '#<split>' allowed")
    parser.add_argument("--split", help="sd15, sd2, sdxl, sd3 or flux (or a custom source's own)")
    parser.add_argument("--subset", choices=("all", "pixel"), default="all",
                        help="pixel: only locally edited fakes")
    parser.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                        help="skip: leave bad rows out and list them")
    parser.add_argument("--out", required=True, help=out_help)
    return parser
