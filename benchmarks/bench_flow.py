"""What the whole flow costs: data loading per worker, and each model's train and eval speed.

Two parts, printed as one markdown table:

* **Data loading**, per worker process: samples/s of the training pipeline (decode, the
  ``--augment`` list, BenCo's resize to ``--image_size``, masks, edge mask, tensors) for
  OpenSDID's adapter reading parquet rows, against BenCo's ``JsonDataset`` reading the same
  images exported to PNG files (what ``benco-maskclip export`` writes). The images are the
  embedded sample's sd15 test split, scaled to each ``--input_sizes`` (OpenSDID's images are
  512 px for SD1.5 and SD2, 1024 px for SDXL, SD3 and Flux), PNG in both.
  A DataLoader worker runs exactly this loop, so N workers give at most N times the figure.
* **Models**: one training step (forward, backward, AdamW) and one inference forward of
  MaskCLIP (the paper's vitl14_mae), IML-ViT, CAT-Net and TruFor (by default; ``--models``
  also takes NFA-ViT and the crossed benchmark's SparseViT, PSCC-Net, MVSS-Net and ManTra-Net),
  all with random weights at the same batch, input size and dtype, on a batch from the same
  pipeline (each model's BenCo post function included: CAT-Net's DCT coefficients). The FLOPs
  each step counts and the fraction of the machine's fp32 matmul throughput (measured in the
  same run) come with it. ``--flops_only`` counts each step's FLOPs once and times nothing
  (no data or scale rows): FLOPs do not depend on the machine or its load.

* **Reading OpenSDID at full size** (``--scale_shards``, e.g. 70 as SD1.5's training split):
  synthetic shards in the hub's layout and schema, row groups of ``--scale_group_rows`` rows
  (HF ``datasets`` wrote image datasets in row groups of 100), of 512 px PNG bytes repeated
  (each copy made unique after the PNG's end, so that parquet stores every copy as the hub's
  shards do). The reader in place (pyarrow) beside HF ``datasets``' Arrow copy
  (``Dataset.from_parquet``), each in a fresh child process that holds no model: first
  open time, bytes the process wrote, its USS memory after reading, and samples/s of one
  process reading rows in three orders (fetch and PNG decode, image and mask, and of that the
  time fetching the bytes; the rest of the pipeline is the same for both): fully shuffled, shuffled by row groups as ``train`` does
  (``RowGroupShuffleSampler`` with ``--scale_window`` row groups, the reader's cache sized for
  them; at least two windows of rows, so that each row group's read is shared as in an epoch),
  and in order. Then two processes open the shards at once.

Example, the figures in docs/performance.md (2 CPU threads)::

    python benchmarks/bench_flow.py --threads 2
    python benchmarks/bench_flow.py --models '' --augments none --input_sizes '' --scale_shards 70 --scale_rounds 2

and the crossed benchmark's models in docs/benchmarking.md::

    python benchmarks/bench_flow.py --flops_only --threads 1 --models NFA_ViT,SparseViT,PSCC_Net,MVSSNet,Trufor
    python benchmarks/bench_flow.py --flops_only --threads 1 --models MantraNet --image_size 256

Needs the baselines extra for CAT-Net (``jpegio``); ``--models`` chooses. Nothing is
downloaded; every file it writes goes to a temporary folder.
"""
import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import _count_cpu_attention, matmul_gflops, time_both_phases  # noqa: E402

# Each model's flags for random weights, nothing read or downloaded, with its recipe's other
# model flags (benco_configs/): MVSS-Net's edge mask and two streams, SparseViT's default blocks.
MODELS = {
    "MaskCLIP": ["--model", "MaskCLIP", "--model_setting", "vitl14_mae", "--clip_pretrained", "none",
                 "--pixel_pretrained", "none"],
    "IML_ViT": ["--model", "IML_ViT", "--edge_mask_width", "7"],
    "Cat_Net": ["--model", "Cat_Net", "--pretrained_rgb", "none", "--pretrained_dct", "none"],
    "Trufor": ["--model", "Trufor"],  # random weight files are written for it: see trufor_files
    "NFA_ViT": ["--model", "NFA_ViT", "--np_pretrain_weights", "none", "--seg_b0_pretrain_weights", "none",
                "--seg_b2_pretrain_weights", "none"],
    "SparseViT": ["--model", "SparseViT"],
    "PSCC_Net": ["--model", "PSCC_Net", "--pretrain_path", "none"],
    "MVSSNet": ["--model", "MVSSNet", "--resnet50_pretrain_weights", "none", "--edge_mask_width", "7"],
    "MantraNet": ["--model", "MantraNet"],
}
# Timed by default (docs/performance.md); the others are chosen with --models.
TIMED_MODELS = ("MaskCLIP", "IML_ViT", "Cat_Net", "Trufor")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_sizes", default="512,1024", help="sides of the stored images, comma-separated")
    parser.add_argument("--image_size", type=int, default=512, help="the pipeline's and the models' input size")
    parser.add_argument("--augments", default="none,paper", help="--augment values to time, comma-separated")
    parser.add_argument("--images", type=int, default=48, help="samples per data-loading measurement")
    parser.add_argument("--models", default=",".join(TIMED_MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)}; '' for data loading only")
    parser.add_argument("--flops_only", action="store_true",
                        help="only count each model's FLOPs (one training step, one inference forward), "
                             "timing nothing: no data loading or scale rows, empty time columns")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model phase, after one warm-up")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--scale_shards", type=int, default=0, help="parquet shards of the scale rows (0: none)")
    parser.add_argument("--scale_rows", type=int, default=120, help="rows per scale shard")
    parser.add_argument("--scale_group_rows", type=int, default=100, help="rows per parquet row group")
    parser.add_argument("--scale_reads", type=int, default=200, help="rows read per scale measurement")
    parser.add_argument("--scale_rounds", type=int, default=1,
                        help="times each reader is measured, the two readers in turn (the load of a shared machine drifts)")
    parser.add_argument("--scale_window", type=int, default=4,
                        help="row groups per window of the row-group shuffle (train's --shuffle_window)")
    return parser.parse_args(argv)


def write_inputs(root: Path, side: int, count: int):
    """The sample's sd15 test rows scaled to side x side: (parquet file, JsonDataset JSON)."""
    import datasets
    from PIL import Image

    from imdlbenco_maskclip.datasets import OpenSDID
    from imdlbenco_maskclip.datasets.export import export_split

    sample = OpenSDID("sample:test#sd15", is_resizing=True)
    rows = {"key": [], "image": [], "mask": [], "label": []}
    for index, _, image, mask, label in sample.iter_raw():
        if index == count:
            break
        rows["key"].append(sample.keys[index])
        rows["image"].append(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))
        rows["mask"].append(Image.fromarray(mask[:, :, 0]).resize((side, side), Image.Resampling.NEAREST)
                            if sample.kinds[index] == "partial" else None)
        rows["label"].append(label)
    features = datasets.Features({"key": datasets.Value("string"), "image": datasets.Image(),
                                  "mask": datasets.Image(), "label": datasets.ClassLabel(names=["real", "fake"])})
    parquet = root / f"opensdid_{side}" / "sd15-00000-of-00001.parquet"
    parquet.parent.mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(parquet))
    stored = OpenSDID(str(parquet), is_resizing=True)
    return parquet, export_split(stored, root / f"json_{side}")


def loading_rate(path: str, augment: str, args) -> float:
    """Samples/s of one process running the training pipeline over ``path``, after one warm-up sample."""
    from imdlbenco_maskclip.engine import data
    from imdlbenco_maskclip.flags import parse

    run_args, _ = parse("train", ["--model", "MaskCLIP", "--data_path", path, "--image_size", str(args.image_size),
                                  "--if_resizing", "--augment", augment, "--edge_mask_width", "7",
                                  "--device", "cpu"])
    dataset = data.open_train_dataset(run_args)
    dataset[0]
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return len(dataset) / (time.perf_counter() - start)


def write_scale_shards(root: Path, args) -> list:
    """``--scale_shards`` sd15 shards in the hub's layout: reals, partial fakes with masks, full fakes."""
    import io

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from imdlbenco_maskclip.datasets import OpenSDID

    sample = OpenSDID("sample:test#sd15", is_resizing=True)
    pngs, masks = [], []
    for index, _, image, mask, _ in sample.iter_raw():
        if len(pngs) == 8:
            break
        for array, store, kernel in ((image, pngs, Image.Resampling.BICUBIC), (mask[:, :, 0], masks, Image.Resampling.NEAREST)):
            buffer = io.BytesIO()
            Image.fromarray(array).resize((512, 512), kernel).save(buffer, format="PNG")
            store.append(buffer.getvalue())
    features = datasets.Features({"key": datasets.Value("string"), "image": datasets.Image(),
                                  "mask": datasets.Image(), "label": datasets.ClassLabel(names=["real", "fake"])})
    files = []
    for shard in range(args.scale_shards):
        keys, images, shard_masks, labels = [], [], [], []
        for i in range(shard * args.scale_rows, (shard + 1) * args.scale_rows):
            kind = ("real", "partial", "full")[i % 3]
            keys.append(f"{kind}/sd15/{'real' if kind == 'real' else 'fake'}/{i:09d}.png")
            images.append({"bytes": pngs[i % len(pngs)] + i.to_bytes(8, "little"), "path": None})
            shard_masks.append({"bytes": masks[i % len(masks)], "path": None} if kind == "partial" else None)
            labels.append(int(kind != "real"))
        table = pa.Table.from_pydict({"key": keys, "image": images, "mask": shard_masks, "label": labels},
                                     schema=features.arrow_schema)
        path = root / "data" / f"sd15-{shard:05d}-of-{args.scale_shards:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=args.scale_group_rows)
        files.append(path)
    return files


def _written_bytes():
    with open("/proc/self/io") as f:
        return int(dict(line.split(": ") for line in f.read().splitlines())["wchar"])


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def scale_child(reader: str, files: list, cache_dir: str, args, queue) -> None:
    """One reader in a fresh process: open, then shuffled, row-group shuffled and in-order reads;
    figures to ``queue``."""
    import numpy as np
    import psutil

    from imdlbenco_maskclip.datasets.opensdid import _ArrowRows, _open_image, to_rgb_uint8
    from imdlbenco_maskclip.datasets.parquet_rows import ParquetRows
    from imdlbenco_maskclip.datasets.row_group_shuffle import RowGroupShuffleSampler

    baseline_uss = psutil.Process().memory_full_info().uss
    written = _written_bytes()
    start = time.perf_counter()
    if reader == "in place":
        store = ParquetRows(files, "scale#sd15")
    else:
        import datasets
        store = _ArrowRows(datasets.Dataset.from_parquet([str(f) for f in files], cache_dir=cache_dir), "scale#sd15")
    open_s = time.perf_counter() - start

    def read(rows):
        """(samples/s, ms per sample spent fetching the bytes, the rest being PNG decoding)"""
        fetching = 0.0
        start = time.perf_counter()
        for row in rows:
            for column in ("image", "mask") if store.has_mask[row] else ("image",):
                before = time.perf_counter()
                cell = store.fetch(int(row), column)
                fetching += time.perf_counter() - before
                to_rgb_uint8(_open_image(cell, column))
        return len(rows) / (time.perf_counter() - start), fetching / len(rows) * 1e3

    reads = args.scale_reads
    shuffled_rate = read(np.random.default_rng(0).permutation(len(store))[:reads])
    # Row groups as ParquetRows numbers them; the Arrow copy's rows are in the same file order.
    groups = np.searchsorted(np.cumsum([g.num_rows for f in files for g in _row_groups(f)]),
                             np.arange(len(store)), side="right")
    if reader == "in place":
        store.cache_row_groups(args.scale_window)
    window_reads = max(reads, 2 * args.scale_window * args.scale_group_rows)
    by_groups = list(RowGroupShuffleSampler(groups, window=args.scale_window, seed=0))[:window_reads]
    by_groups_rate = read(np.asarray(by_groups))
    in_order_rate = read(np.arange(min(reads, len(store))))
    queue.put({"reader": reader, "rows": len(store), "open_s": open_s,
               "written_bytes": _written_bytes() - written, "cache_bytes": _folder_bytes(Path(cache_dir)),
               "uss_gb": psutil.Process().memory_full_info().uss / 2**30, "baseline_uss_gb": baseline_uss / 2**30,
               "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
               "shuffled": shuffled_rate, "by_groups": by_groups_rate, "by_groups_reads": len(by_groups),
               "in_order": in_order_rate})


def _rate(figures):
    per_s, fetch_ms = figures
    return f"{per_s:.1f} ({fetch_ms:.2f})"


def _row_groups(path):
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    return [metadata.row_group(i) for i in range(metadata.num_row_groups)]


def scale_rows(root: Path, args) -> list:
    """The scale rows: each reader alone in a child, then two in-place readers at once."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    print(f"writing {args.scale_shards} shards of {args.scale_rows} rows ...", file=sys.stderr, flush=True)
    files = write_scale_shards(root / "scale", args)
    size_gb = sum(f.stat().st_size for f in files) / 2**30
    lines = []

    def run(readers):
        queue = context.Queue()
        children = [context.Process(target=scale_child, args=(reader, files, str(root / f"arrow_{i}"), args, queue))
                    for i, reader in enumerate(readers)]
        for child in children:
            child.start()
        results = [queue.get() for _ in children]
        for child in children:
            child.join()
        return results

    for round_, reader in [(r, reader) for r in range(1, args.scale_rounds + 1) for reader in ("in place", "HF Arrow copy")]:
        print(f"scale: {reader}, round {round_} ...", file=sys.stderr, flush=True)
        (f,) = run([reader])
        shutil.rmtree(root / "arrow_0", ignore_errors=True)  # one Arrow copy on disk at a time
        name = "OpenSDID in place (pyarrow)" if reader == "in place" else "HF datasets Arrow copy (Dataset.from_parquet)"
        name += f", round {round_}" if args.scale_rounds > 1 else ""
        lines.append(f"| data at scale | {name} | {len(files)} shards, {f['rows']:,} rows, {size_gb:.1f} GB, "
                     f"row groups of {args.scale_group_rows} | 1 process | first open {f['open_s']:.1f} s, "
                     f"wrote {f['written_bytes'] / 2**20:,.0f} MiB (cache {f['cache_bytes'] / 2**20:,.0f} MiB), "
                     f"USS {f['uss_gb']:.2f} GiB ({f['baseline_uss_gb']:.2f} after imports), "
                     f"peak RSS {f['peak_rss_gb']:.2f} GiB; samples/s (ms per sample fetching): "
                     f"{_rate(f['shuffled'])} shuffled, {_rate(f['by_groups'])} shuffled by row groups "
                     f"(window {args.scale_window}, {f['by_groups_reads']:,} rows), {_rate(f['in_order'])} "
                     f"in order | | |")
    print("scale: two processes at once ...", file=sys.stderr, flush=True)
    both = run(["in place", "in place"])
    opens = " and ".join(f"{f['open_s']:.1f}" for f in both)
    lines.append(f"| data at scale | OpenSDID in place (pyarrow) | the same shards | 2 processes at once "
                 f"| first open {opens} s, wrote {sum(f['written_bytes'] for f in both) / 2**20:,.0f} MiB | | |")
    return lines


def trufor_files(folder: Path):
    """Random Noiseprint++ and MiT-B2 files in the formats TruFor's constructor reads."""
    from IMDLBenCo.model_zoo.trufor.trufor import config, confcmx, update_config

    from imdlbenco_maskclip.engine import models

    update_config(config, None, models.FLAG_DEFAULTS["Trufor"]["config_path"])
    reference = confcmx(cfg=config)
    torch.save(reference.dncnn.state_dict(), folder / "noiseprint.pth")
    torch.save(reference.backbone.state_dict(), folder / "mit_b2.pth")
    return ["--np_pretrain_weights", str(folder / "noiseprint.pth"),
            "--mit_b2_pretrain_weights", str(folder / "mit_b2.pth")]


def model_figures(name: str, parquet: Path, folder: Path, args) -> dict:
    from torch.utils.data import default_collate

    from imdlbenco_maskclip import compat
    from imdlbenco_maskclip.engine import data, models
    from imdlbenco_maskclip.flags import parse

    compat.apply_patches()  # as every command does: CAT-Net's .cuda() calls on a CPU machine
    device = torch.device(args.device)
    extra = trufor_files(folder) if name == "Trufor" else []
    run_args, model_args = parse("train", [*MODELS[name], *extra, "--data_path", str(parquet),
                                           "--image_size", str(args.image_size), "--if_resizing",
                                           "--augment", "none", "--device", args.device,
                                           "--output_dir", str(folder / name)])
    models.check_requirements(name)
    model = models.build_model(run_args, model_args).to(device)
    dataset = data.open_train_dataset(run_args)
    batch = default_collate([dataset[i] for i in range(args.batch_size)])
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.05)

    def train_step():
        model(**batch, if_predcit_label=True)["backward_loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def eval_step():
        with torch.no_grad():
            model(**batch, if_predcit_label=True)

    steps = 0 if args.flops_only else args.steps
    train_s, train_flops, eval_s, eval_flops = time_both_phases(model, train_step, eval_step, steps, device)
    return {"train_s": train_s, "eval_s": eval_s, "train_gflop": train_flops / 1e9,
            "eval_gflop": eval_flops / 1e9, "trainable_m": sum(p.numel() for p in trainable) / 1e6}


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cpu":
        _count_cpu_attention()
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        sys.exit(f"--models: unknown {unknown}; choose from {sorted(MODELS)}")
    if args.flops_only:  # nothing timed: no data rows, no machine throughput
        args.input_sizes, args.scale_shards = "", 0
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench_flow_") as tmp:
        root = Path(tmp)
        machine_before = None if args.flops_only else matmul_gflops(torch.device(args.device))
        inputs = {}
        for side in (int(s) for s in args.input_sizes.split(",") if s):
            print(f"writing {args.images} images of {side} px ...", file=sys.stderr, flush=True)
            inputs[side] = write_inputs(root, side, args.images)
        for side, (parquet, json_list) in inputs.items():
            for augment in args.augments.split(","):
                for reader, path in (("OpenSDID (parquet)", parquet), ("BenCo JsonDataset (PNG files)", json_list)):
                    print(f"loading {side} px, --augment {augment}, {reader} ...", file=sys.stderr, flush=True)
                    rate = loading_rate(str(path), augment, args)
                    lines.append(f"| data | {reader} | {side} px PNG -> {args.image_size}, --augment {augment} "
                                 f"| 1 worker | {rate:.1f} samples/s | | |")
        if args.scale_shards:
            lines += scale_rows(root, args)
        figures = {}
        if names:
            # Any stored size serves: the pipeline resizes to --image_size before the model.
            model_data = inputs[min(inputs)][0] if inputs else write_inputs(root, args.image_size, args.batch_size)[0]
        for name in names:
            print(f"{'counting' if args.flops_only else 'timing'} {name} ...", file=sys.stderr, flush=True)
            figures[name] = model_figures(name, model_data, root, args)
        machine = None if args.flops_only else (machine_before + matmul_gflops(torch.device(args.device))) / 2
        for name, f in figures.items():
            setting = f"batch {args.batch_size}, {args.image_size} px, fp32, {args.device}"
            for phase, label in (("train", "train step"), ("eval", "inference")):
                seconds, gflop = f[f"{phase}_s"], f[f"{phase}_gflop"]
                timing = (f"| | {gflop:.1f} | |" if seconds is None else
                          f"| {args.batch_size / seconds:.2f} images/s | {gflop:.0f} | {gflop / seconds / machine:.0%} |")
                lines.append(f"| {label} | {name} ({f['trainable_m']:.1f}M trainable) | {setting} "
                             f"| {torch.get_num_threads()} threads {timing}")
    print()
    if args.flops_only:
        print(f"FLOPs counted by torch.utils.flop_counter (a multiply-add as 2), nothing timed, torch {torch.__version__}")
    else:
        print(f"machine: fp32 matmul {machine:.0f} GFLOP/s (mean of before and after), torch {torch.__version__}")
    print()
    print("| part | what | setting | processes | throughput | GFLOP per step | % of matmul |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    print(json.dumps({"machine_gflops": machine, "models": figures}), file=sys.stderr)


if __name__ == "__main__":
    main()
