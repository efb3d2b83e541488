"""Speed and memory of MaskCLIP: one training step (forward, backward, Adam) and one inference forward.

Random weights (no downloads). Prints one markdown table. Example, the paper setting on CPU:

    python benchmarks/bench_model.py --setting vitl14_mae --batch_size 1 --image_size 512 --threads 2 --steps 3

Peak memory is CUDA ``max_memory_allocated`` on a GPU, else the process's peak resident set
(``ru_maxrss``), which includes building the model. The shared 2-core CPU machines are noisy:
the table also gives the fp32 matmul throughput measured before and after the timed phases,
so that figures from different runs can be put in proportion.
"""
import argparse
import contextlib
import resource
import time

import torch

from imdlbenco_maskclip.model_zoo.maskclip import MaskCLIP, list_settings

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="vitl14_mae", choices=list_settings())
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--image_size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per phase, after one warm-up step")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="autocast dtype (fp32: no autocast)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--grad_checkpointing", type=int, default=0, choices=(0, 1))
    return parser.parse_args()


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


def timed(step, steps: int, device: torch.device) -> float:
    """Mean seconds of ``step()`` over ``steps`` runs after one warm-up run."""
    step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def matmul_gflops(device: torch.device, seconds: float = 1.0) -> float:
    """fp32 GEMM throughput of the machine right now, on ViT-MLP-like shapes."""
    a = torch.randn(1024, 1024, device=device)
    b = torch.randn(1024, 4096, device=device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
        synchronize(device)
    return 2 * 1024 * 1024 * 4096 * runs / (time.perf_counter() - start) / 1e9


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    model = MaskCLIP(model_setting=args.setting, image_size=args.image_size, clip_pretrained="none",
                     pixel_pretrained="none", grad_checkpointing=args.grad_checkpointing).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16 and device.type == "cuda"))
    batch = make_batch(args.batch_size, args.image_size, device)

    def autocast():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def train_step():
        with autocast():
            loss = model(**batch, if_predcit_label=True)["backward_loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def inference_step():
        with torch.no_grad(), autocast():
            model(**batch)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gflops_before = matmul_gflops(device)
    model.train()
    train_seconds = timed(train_step, args.steps, device)
    model.eval()
    inference_seconds = timed(inference_step, args.steps, device)
    gflops_after = matmul_gflops(device)
    if device.type == "cuda":
        peak_gb, peak_kind = torch.cuda.max_memory_allocated(device) / 2 ** 30, "CUDA allocated"
    else:
        peak_gb, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "RSS"

    images = args.batch_size
    print()
    print(f"| setting | device | dtype | batch | image | threads | train step (s) | train img/s "
          f"| inference (s) | inference img/s | peak {peak_kind} (GiB) | trainable params "
          f"| fp32 matmul GFLOP/s before / after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.setting} | {args.device} | {args.dtype} | {images} | {args.image_size} | "
          f"{torch.get_num_threads()} | {train_seconds:.3f} | {images / train_seconds:.2f} | "
          f"{inference_seconds:.3f} | {images / inference_seconds:.2f} | {peak_gb:.2f} | "
          f"{sum(p.numel() for p in trainable) / 1e6:.1f}M | {gflops_before:.0f} / {gflops_after:.0f} |")


if __name__ == "__main__":
    main()
