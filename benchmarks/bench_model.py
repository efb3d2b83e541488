"""Speed and memory of MaskCLIP or NFA-ViT: one training step (forward, backward, AdamW) and one inference forward.

Random weights (no downloads). Prints one markdown table. Example, the paper setting on CPU:

    python benchmarks/bench_model.py --setting vitl14_mae --batch_size 1 --image_size 512 --threads 2 --steps 3

``--reference`` times the authors' model (built from their code in ``--reference_code DIR``, the
folder the parity tests read) beside ours at the same settings, alternately. Each phase (training
step, inference) of each model runs in a child process of its own, so that peak memory is per
model and phase. Every row also gives the machine's matmul throughput in the dtype being run
(``--dtype``), measured in the same process before and after the timed phase, and the fraction
of it the model reached (model FLOPs counted by ``torch.utils.flop_counter``): figures from
another machine or another day compare nothing. Beside the wall time per step, the process's
CPU time per step (all its threads): the load of other jobs on a shared machine moves it less.
``--profile`` adds each phase's costliest operators (``torch.profiler``, self CPU time of one
step).

Peak memory is CUDA ``max_memory_allocated`` on a GPU, else the process's peak resident set
(``ru_maxrss``), which includes building the model.
"""
import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Per model, the variable naming the folder of the authors' code, as the parity tests read it
# (CONTRIBUTING.md), and where that folder is when the variable is not set (a development checkout).
REFERENCES = {model: (variable, Path(__file__).resolve().parents[2] / "shared" / "reference" / folder)
              for model, variable, folder in (("MaskCLIP", "MASKCLIP_AUTHORS_CODE", "authors-maskclip"),
                                              ("NFA_ViT", "NFAVIT_AUTHORS_CODE", "authors-nfavit"))}


def parse_args(argv=None):
    from imdlbenco_maskclip.model_zoo.maskclip import list_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MaskCLIP", choices=sorted(REFERENCES))
    parser.add_argument("--setting", default="vitl14_mae", choices=list_settings(), help="MaskCLIP's setting")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--image_size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per phase, after one warm-up step")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="autocast dtype (fp32: no autocast)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--grad_checkpointing", type=int, default=0, choices=(0, 1))
    parser.add_argument("--reference", action="store_true",
                        help="also time the authors' model (vitl14_mae only), alternately with ours")
    parser.add_argument("--reference_code",
                        help="folder holding the authors' code and the authors_reference.py that builds their model, "
                             "the folder the parity tests read (default: $MASKCLIP_AUTHORS_CODE for MaskCLIP, "
                             "$NFAVIT_AUTHORS_CODE for NFA_ViT)")
    parser.add_argument("--rounds", type=int, default=2, help="with --reference: alternations of ours and theirs")
    parser.add_argument("--profile", action="store_true", help="print each phase's top operators")
    parser.add_argument("--phases", default="train,inference", help="phases to measure, comma-separated")
    parser.add_argument("--child", choices=("ours", "authors"), help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("train", "inference"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    variable, fallback = REFERENCES[args.model]
    args.reference_code = args.reference_code or os.environ.get(variable, str(fallback))
    return args


def make_batch(batch_size: int, image_size: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    mask = torch.zeros(batch_size, 1, image_size, image_size)
    quarter = image_size // 4
    mask[:, :, quarter:3 * quarter, quarter:3 * quarter] = 1.0
    edge_mask = torch.zeros_like(mask)
    edge_mask[:, :, quarter - 4:3 * quarter + 4, quarter - 4:3 * quarter + 4] = 1.0
    edge_mask[:, :, quarter + 4:3 * quarter - 4, quarter + 4:3 * quarter - 4] = 0.0
    label = torch.ones(batch_size, dtype=torch.long)
    batch = {"image": image, "mask": mask, "label": label, "edge_mask": edge_mask}
    return {key: value.to(device) for key, value in batch.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, steps: int, device: torch.device):
    """Mean (wall seconds, this process's CPU seconds) of ``step()`` over ``steps`` runs after
    one warm-up run. On a shared machine the CPU time moves less with the load than the wall time."""
    step()
    synchronize(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps


def _count_cpu_attention() -> None:
    """torch's FLOP counter has formulas for SDPA's CUDA kernels only; without these, attention
    run by SDPA on the CPU would count as no work at all."""
    from torch.utils.flop_counter import register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def forward_flops(query_shape, key_shape, value_shape, *args, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs):
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _convolution_backward_flops(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                                output_padding, groups, output_mask, out_shape, **kwargs) -> int:
    """A convolution's gradients as the same work as its forward each: the input's gradient
    (when asked for) and the weight's. torch's own formula leaves ``groups`` out of the weight's
    gradient, counting a depthwise convolution's backward (SegFormer's, UniFormer's) ``groups``
    times over; with ``groups`` 1 the two formulas agree."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def counted_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten.convolution_backward: _convolution_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        step()
    return counter.get_total_flops()


def matmul_gflops(device: torch.device, seconds: float = 1.0, dtype: torch.dtype = torch.float32) -> float:
    """GEMM throughput of the machine right now in ``dtype``, on ViT-MLP-like shapes."""
    a = torch.randn(1024, 1024, device=device, dtype=dtype)
    b = torch.randn(1024, 4096, device=device, dtype=dtype)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
        synchronize(device)
    return 2 * 1024 * 1024 * 4096 * runs / (time.perf_counter() - start) / 1e9


def time_both_phases(model, train_step, inference_step, steps: int, device: torch.device):
    """(train s, train FLOPs, inference s, inference FLOPs): each step timed in its mode, then
    counted; with ``steps`` 0 only counted, its seconds None."""
    model.train()
    train_seconds = timed(train_step, steps, device)[0] if steps else None
    train_flops = counted_flops(train_step)
    model.eval()
    inference_seconds = timed(inference_step, steps, device)[0] if steps else None
    return train_seconds, train_flops, inference_seconds, counted_flops(inference_step)


def build(args, which: str, device: torch.device):
    """(model, forward(batch) -> output dict) for ours or the authors'."""
    if args.model == "NFA_ViT":
        return build_nfa_vit(args, which, device)
    if which == "ours":
        from imdlbenco_maskclip.model_zoo.maskclip import MaskCLIP

        model = MaskCLIP(model_setting=args.setting, image_size=args.image_size, clip_pretrained="none",
                         pixel_pretrained="none", grad_checkpointing=args.grad_checkpointing).to(device)
        return model, lambda batch: model(**batch, if_predcit_label=True)
    sys.path.insert(0, args.reference_code)
    from authors_reference import build_authors_maskclip

    model = build_authors_maskclip(resolution=args.image_size).to(device)
    # their pipeline feeds CLIP-normalised pixels; the timing does not depend on the values
    return model, lambda batch: model(**batch)


def build_nfa_vit(args, which: str, device: torch.device):
    if which == "ours":
        from imdlbenco_maskclip.model_zoo.nfa_vit import NFA_ViT

        model = NFA_ViT(np_pretrain_weights="none", seg_b0_pretrain_weights="none",
                        seg_b2_pretrain_weights="none").to(device)
    else:
        sys.path.insert(0, args.reference_code)
        from authors_reference import build_authors_nfavit

        model = build_authors_nfavit(seed=0).to(device)
    return model, lambda batch: model(image=batch["image"], mask=batch["mask"], label=batch["label"])


def measure(args) -> dict:
    """One model's figures, in this process."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        _count_cpu_attention()
    dtype = DTYPES[args.dtype]
    model, forward = build(args, args.child, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.05)
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16 and device.type == "cuda"))
    batch = make_batch(args.batch_size, args.image_size, device)

    def autocast():
        return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)

    def train_step():
        with autocast():
            loss = forward(batch)["backward_loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def inference_step():
        with torch.no_grad(), autocast():
            forward(batch)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = train_step if args.phase == "train" else inference_step
    model.train(args.phase == "train")
    gflops_before = matmul_gflops(device, dtype=dtype)
    (seconds, cpu_seconds), flops = timed(step, args.steps, device), counted_flops(step)
    gflops_after = matmul_gflops(device, dtype=dtype)
    profile = top_operators(step) if args.profile else ""
    if device.type == "cuda":
        peak_gb, peak_kind = torch.cuda.max_memory_allocated(device) / 2 ** 30, "CUDA allocated"
    else:
        peak_gb, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "RSS"
    return {"model": args.child, "phase": args.phase, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "gflop": flops / 1e9,
            "peak_gb": peak_gb, "peak_kind": peak_kind, "threads": torch.get_num_threads(),
            "trainable_m": sum(p.numel() for p in trainable) / 1e6,
            "matmul_gflops": (gflops_before, gflops_after), "profile": profile}


def top_operators(step, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run_child(which: str, phase: str) -> dict:
    argv = [arg for arg in sys.argv[1:] if arg != "--reference"] + ["--child", which, "--phase", phase]
    result = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"the {which} {phase} measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def row(args, train, inference) -> str:
    """One table row; a phase not measured (None) leaves its cells empty."""
    images = args.batch_size
    measured = train or inference

    def cells(figures):
        if figures is None:
            return "| | | |"
        rate = figures["gflop"] / figures["seconds"] / (sum(figures["matmul_gflops"]) / 2)
        return (f"{figures['seconds']:.3f} | {figures['cpu_seconds']:.2f} | {images / figures['seconds']:.2f} "
                f"| {rate:.0%}")

    def peak(figures):
        return "-" if figures is None else f"{figures['peak_gb']:.2f}"

    rates = " / ".join("-" if f is None else f"{f['matmul_gflops'][0]:.0f}-{f['matmul_gflops'][1]:.0f}"
                       for f in (train, inference))
    setting = args.setting if args.model == "MaskCLIP" else args.model
    return (f"| {measured['model']} | {setting} | {args.device} | {args.dtype} | {images} | {args.image_size} | "
            f"{measured['threads']} | {cells(train)} | {cells(inference)} | {peak(train)} / {peak(inference)} | "
            f"{measured['trainable_m']:.1f}M | {rates} |")


def main():
    args = parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    if args.reference and args.model == "MaskCLIP" and args.setting != "vitl14_mae":
        sys.exit("--reference: the authors released only the vitl14_mae setting (their ViTL)")
    order = ["ours", "authors"] * args.rounds if args.reference else ["ours"]
    results = []
    for number, which in enumerate(order, 1):
        print(f"measuring {which} ({number}/{len(order)}) ...", file=sys.stderr, flush=True)
        results.append({phase: run_child(which, phase) if phase in args.phases.split(",") else None
                        for phase in ("train", "inference")})
    kind = next(f for f in results[0].values() if f)["peak_kind"]
    print()
    print(f"| model | setting | device | dtype | batch | image | threads | train step (s) | train CPU s "
          f"| train img/s | train % of matmul | inference (s) | inference CPU s | inference img/s "
          f"| inference % of matmul "
          f"| peak {kind} train / inference (GiB) | trainable params "
          f"| {args.dtype} matmul GFLOP/s around train / inference |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for figures in results:
        print(row(args, figures["train"], figures["inference"]))
    for figures in results:
        for phase in ("train", "inference"):
            if figures[phase] and figures[phase]["profile"]:
                print(f"\n{figures[phase]['model']} {phase}, top operators by self CPU time:\n"
                      f"{figures[phase]['profile']}")
    if args.reference:
        for which in ("ours", "authors"):
            runs = [r for r in results if (r["train"] or r["inference"])["model"] == which]
            best = {(phase, kind): min((r[phase][kind] for r in runs if r[phase]), default=float("nan"))
                    for phase in ("train", "inference") for kind in ("seconds", "cpu_seconds")}
            peaks = {phase: max((r[phase]["peak_gb"] for r in runs if r[phase]), default=float("nan"))
                     for phase in ("train", "inference")}
            print(f"{which}: best train step {best['train', 'seconds']:.3f} s ({best['train', 'cpu_seconds']:.2f} "
                  f"CPU s), best inference {best['inference', 'seconds']:.3f} s "
                  f"({best['inference', 'cpu_seconds']:.2f} CPU s), "
                  f"peak train {peaks['train']:.2f} GiB, inference {peaks['inference']:.2f} GiB", file=sys.stderr)


if __name__ == "__main__":
    main()
