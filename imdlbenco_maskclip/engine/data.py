"""Datasets, augmentations and loaders for the commands.

Loaders are built so that BenCo's ``test_one_epoch`` sees every test sample exactly once
for any number of processes:

* distributed: ``DistributedSampler(shuffle=False, drop_last=True)`` and a DataLoader with
  ``drop_last=True`` cover the first ``N - N % (world * batch)`` samples, each on one rank;
  BenCo's tail pass then runs the remaining ``N % (world * batch)`` samples on every rank
  (its evaluators count that tail once);
* one process: ``SequentialSampler`` without ``drop_last`` (BenCo's stock scripts shuffle
  and drop the tail there, losing up to ``batch - 1`` samples).
"""
import inspect
import json
import os

import albumentations as albu
import cv2
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

import IMDLBenCo.training_scripts.utils.misc as misc
from IMDLBenCo.datasets import BalancedDataset, JsonDataset
from IMDLBenCo.registry import DATASETS, POSTFUNCS

from ..datasets.mask_area import WITH_AREA
from ..datasets.opensdid import BadSampleError, parse_source
from ..datasets.row_group_shuffle import RowGroupShuffleSampler
from ..errors import DataError, UserError


def post_function(model_name):
    """BenCo's ``<model>_post_func`` from POSTFUNCS (case-insensitive), or None."""
    wanted = f"{model_name}_post_func".lower()
    for name, func in POSTFUNCS.module_dict.items():
        if name.lower() == wanted:
            return func
    return None


def train_transform(args):
    """The training augmentations ``--augment`` names, in albumentations 1.3.0; BenCo's resize or
    pad runs after them.

    ``paper``: the paper's list (blur, JPEG, random scale, flips, and in pad mode a random crop
    to --image_size, the paper's random 512 crop, so BenCo's top-left crop never cuts the same
    corner; padding added here counts as authentic content). ``authors``: the list of the
    authors' train.py, which adds brightness/contrast and rotate-90 and has no crop.
    ``benco``: BenCo's own list, with its copy-move and inpainting that add manipulated regions.
    """
    if args.augment == "none":
        return None
    if args.augment == "benco":
        from IMDLBenCo.transforms import get_albu_transforms

        return get_albu_transforms("train")
    scale_and_flips = [albu.RandomScale(scale_limit=0.2, p=1), albu.HorizontalFlip(p=0.5), albu.VerticalFlip(p=0.5)]
    jpeg = albu.ImageCompression(quality_lower=70, quality_upper=100, p=0.2)
    blur = albu.GaussianBlur(blur_limit=(3, 7), p=0.2)
    if args.augment == "authors":
        brightness_contrast = albu.RandomBrightnessContrast(brightness_limit=(-0.1, 0.1), contrast_limit=0.1, p=1)
        return albu.Compose(scale_and_flips + [brightness_contrast, jpeg, albu.RandomRotate90(p=0.5), blur])
    steps = scale_and_flips + [jpeg, blur]
    if args.if_padding:
        size = args.image_size
        steps += [albu.PadIfNeeded(size, size, border_mode=cv2.BORDER_CONSTANT, value=0, mask_value=0),
                  albu.RandomCrop(size, size)]
    return albu.Compose(steps)


def _is_json_file(path):
    return str(path).endswith(".json") and os.path.isfile(path)


def read_json(path, flag):
    """A JSON file the user named; one that cannot be read or does not parse names ``flag``,
    the file and the line."""
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as exc:
        raise UserError(f"{flag} {path!r}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{flag} {path!r}: not valid JSON at line {exc.lineno}, column {exc.colno} "
                        f"({exc.msg})") from None


def _read_json_list(path, flag):
    """A BenCo dataset JSON's entries; a file that is not one is an error naming ``flag``."""
    entries = read_json(path, flag)
    if not (isinstance(entries, list) and entries
            and all(isinstance(e, list) and len(e) == 2 for e in entries)):
        raise UserError(f"{flag} {path!r}: a BenCo dataset JSON is a non-empty list of pairs, [[tp, gt], ...] "
                        f"(JsonDataset) or [[dataset, path], ...] (BalancedDataset)",
                        hint="fix the file or pass a dataset source")
    return entries


def _check_listed_files(path, entries, flag):
    """Every image and mask a JsonDataset list names exists ("Negative" = no mask). BenCo
    checks only the first image (and then fails with an UnboundLocalError); a later missing
    file would stop a run in the middle of an epoch."""
    missing = [p for tp, gt in entries for p in (tp, gt) if p != "Negative" and not os.path.isfile(p)]
    if missing:
        raise UserError(f"{flag} {path!r}: {len(missing)} of the files it lists do not exist, e.g. "
                        f"{missing[:3]}; BenCo reads relative paths from the current directory "
                        f"({os.getcwd()}): fix the paths (absolute ones are safest) or run from their folder")


def _check_takes_benco_arguments(cls, path, kwargs, where):
    """A class whose constructor cannot take BenCo's dataset arguments is a wrong ``--dataset``
    (or JSON entry). Found by binding the arguments, not by catching the call's TypeError, so
    that a TypeError raised inside a constructor (a bug) keeps its own traceback."""
    try:
        inspect.signature(cls).bind(path, **kwargs)
    except TypeError as exc:
        raise UserError(f"{where}: {cls.__name__} cannot be built with BenCo's dataset arguments ({exc}); "
                        f"its constructor must take (path, {', '.join(kwargs)}), as BenCo's "
                        f"AbstractDataset does") from None


def open_dataset(path, args, transform=None, split=None, flag="--data_path"):
    """One dataset: a BenCo JSON (JsonDataset list or BalancedDataset [[name, path], ...]),
    else ``--dataset``'s class on ``path`` (with ``split`` when the class takes one)."""
    kwargs = dict(is_padding=args.if_padding, is_resizing=args.if_resizing,
                  output_size=(args.image_size, args.image_size), common_transforms=transform,
                  edge_width=args.edge_mask_width, post_funcs=post_function(args.model))
    if _is_json_file(path):
        entries = _read_json_list(path, flag)
        cls = JsonDataset
        if not DATASETS.has(str(entries[0][0])):
            _check_listed_files(path, entries, flag)
        else:
            cls = BalancedDataset  # it builds each entry's class with these arguments
            for name, entry_path in entries:
                if not DATASETS.has(str(name)):
                    raise UserError(f"{flag} {path!r}: entry {name!r} is not registered in IMDLBenCo "
                                    f"DATASETS; choose one of {sorted(DATASETS.module_dict)}")
                where = f"{flag} {path!r}: entry {name!r}"
                _check_takes_benco_arguments(DATASETS.get(name), entry_path, kwargs, where)
                if DATASETS.get(name) is JsonDataset:
                    _check_listed_files(entry_path, _read_json_list(entry_path, where), where)
        if args.on_bad_sample == "skip":
            raise UserError(f"--on_bad_sample skip: BenCo's {cls.__name__} ({flag} {path!r}) cannot skip bad "
                            f"samples (it builds its datasets with its own arguments); fix the data, or use "
                            f"an OpenSDID source")
    else:
        cls = DATASETS.get(args.dataset)
        takes = inspect.signature(cls).parameters
        if split is not None and parse_source(path)[1] is None and "split" in takes:
            kwargs["split"] = split
        if "balance" in takes:  # BRGen: the authors' balanced draw
            kwargs.update(balance=args.balance, seed=args.balance_seed)
        if "on_bad_sample" in takes:
            kwargs["on_bad_sample"] = args.on_bad_sample
        elif args.on_bad_sample == "skip":
            raise UserError(f"--on_bad_sample skip: --dataset {args.dataset} cannot skip bad samples "
                            f"(its constructor takes no on_bad_sample)")
        _check_takes_benco_arguments(cls, path, kwargs, f"--dataset {args.dataset}")
        if cls.__module__.startswith("IMDLBenCo.") and not os.path.exists(path):
            raise UserError(f"{flag} {path!r}: no such file or folder (--dataset {args.dataset})")
    # A dataset names a bad source or split with a DataError (a bad sample with its own
    # BadSampleError, which says the key); anything else is a bug and keeps its traceback.
    try:
        return WITH_AREA.get(cls, cls)(path, **kwargs)  # BenCo's own classes, with samples' mask_area
    except BadSampleError:
        raise
    except DataError as exc:
        raise UserError(f"{flag} {path!r}: {exc}", hint=exc.hint) from exc


def open_train_dataset(args):
    # --train_split reaches only a dataset source that names no split of its own
    uses_train_split = not _is_json_file(args.data_path) and parse_source(args.data_path)[1] is None
    flag = "--data_path/--train_split" if uses_train_split else "--data_path"
    return open_dataset(args.data_path, args, train_transform(args), split=args.train_split, flag=flag)


def test_sources(args):
    """Test set name -> (path, split or None), in report order.

    A BenCo test JSON ``{name: path}`` is used whole (``--test_splits`` does not filter it);
    a source naming its split (``<source>#<split>``) is one set; any other source is read
    once per ``--test_splits`` entry.
    """
    path = args.test_data_path
    if _is_json_file(path):
        entries = read_json(path, "--test_data_path")
        if not isinstance(entries, dict) or not entries:
            raise UserError(f"--test_data_path {path}: a test JSON maps names to dataset paths, "
                            f"e.g. {{\"sd15\": \"nebula/OpenSDI_test#sd15\"}}")
        return {name: (p, None) for name, p in entries.items()}
    named = parse_source(path)[1]
    if named is not None:
        return {named: (path, None)}
    return {split: (path, split) for split in args.test_splits}


def open_test_dataset(args, name, source, transform=None):
    """One test set; a BalancedDataset is refused: it draws its images at random, with repeats
    (so not every test image once), and never applies a robustness level's transforms."""
    path, split = source
    flag = "--test_data_path" if split is None else "--test_data_path/--test_splits"
    dataset = open_dataset(path, args, transform, split=split, flag=f"{flag} [{name}]")
    if isinstance(dataset, BalancedDataset):
        raise UserError(
            f"--test_data_path [{name}] {path}: a BalancedDataset JSON cannot be a test set: it samples its "
            f"entries at random, with repeats, so the metrics would not cover every test image once (and a "
            f"robustness sweep's perturbations would not reach its images). Give this set a single dataset "
            f"source instead, e.g. \"{name}\": \"nebula/OpenSDI_test#sd15\" or a JsonDataset list [[tp, gt], ...].")
    print(f"[data] {name}: {dataset}")
    if args.on_bad_sample == "skip" and hasattr(dataset, "validate"):
        # Checked whole now, bad samples dropped from the index: none is replaced by another
        # one during evaluation, so every remaining sample counts exactly once.
        print(f"[data] {name}: checking every sample (--on_bad_sample skip)")
        dataset.validate()
        if dataset.skipped:
            print(f"[data] {name}: {dataset.report()}")
    return dataset


def skipped_samples(datasets):
    """{set name: {sample key: reason}} for the sets that skipped samples."""
    return {name: dict(dataset.skipped) for name, dataset in datasets.items() if getattr(dataset, "skipped", None)}


def dataset_selections(datasets):
    """{set name: what repeats its draw (balance, seed, drawn files)} for the sets that draw (BRGen)."""
    return {name: dataset.selection() for name, dataset in datasets.items() if hasattr(dataset, "selection")}


def pin_memory(args):
    return bool(args.pin_mem) and torch.device(args.device).type == "cuda"


def train_sampler(dataset, args):
    """A dataset read from parquet row groups (OpenSDID's shards, hub ids, the embedded sample)
    is shuffled row group by row group (``--shuffle_window``; see ``datasets.row_group_shuffle``),
    so that each worker reads each row group once per epoch; any other, and
    ``--shuffle_window 0``, by BenCo's samplers."""
    groups = dataset.row_groups() if args.shuffle_window and hasattr(dataset, "row_groups") else None
    if groups is not None:
        dataset.cache_row_groups(args.shuffle_window)
        print(f"[data] training order: row groups at random, samples shuffled within windows of "
              f"{args.shuffle_window} row groups (--shuffle_window)")
        return RowGroupShuffleSampler(groups, window=args.shuffle_window, batch_size=args.batch_size,
                                      num_workers=args.num_workers, num_replicas=misc.get_world_size(),
                                      rank=misc.get_rank(), seed=args.seed)
    if args.distributed:
        return DistributedSampler(dataset, num_replicas=misc.get_world_size(), rank=misc.get_rank(),
                                  shuffle=True, seed=args.seed)
    return RandomSampler(dataset)


def train_loader(dataset, args):
    sampler = train_sampler(dataset, args)
    loader = DataLoader(dataset, sampler=sampler, batch_size=args.batch_size, num_workers=args.num_workers,
                        pin_memory=pin_memory(args), drop_last=True)
    if len(loader) == 0:
        raise UserError(f"--batch_size {args.batch_size} x {misc.get_world_size()} process(es) is larger "
                        f"than the training set ({len(dataset)} samples): no full batch to train on")
    return loader


def test_loader(dataset, args):
    """See the module docstring: every sample exactly once with BenCo's tail pass."""
    if args.distributed:
        sampler = DistributedSampler(dataset, num_replicas=misc.get_world_size(), rank=misc.get_rank(),
                                     shuffle=False, drop_last=True)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, sampler=sampler, batch_size=args.test_batch_size, num_workers=args.num_workers,
                      pin_memory=pin_memory(args), drop_last=args.distributed)
