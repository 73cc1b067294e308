"""Benchmark: training throughput (images/s) and peak memory of one optimisation step, synthetic inputs.

    python benchmarks/train_step.py [--device auto|cpu|cuda] [--batches 16 64] [--steps 5] [--warmup 1]
                                    [--image-size N] [--preset cross_efficient_vit_v1] [--threads 2] [--amp bf16]

One step = forward, BCE-with-logits loss, backward, gradient clipping (max norm 1), AdamW step: what
:mod:`cevit.training.trainer` does per batch, without data loading (inputs are random tensors already on the
device, so this is the model's ceiling, not the data pipeline's). On CUDA the step runs like the trainer's
default: ``amp`` autocast (bf16 unless told otherwise) and channels-last. After ``--warmup`` untimed steps,
``--steps`` steps are timed; the table shows the median step time, images/s (batch / median), and peak memory:
the process's peak RSS on CPU (``resource.getrusage``; it never decreases, so later rows include earlier peaks)
or ``torch.cuda.max_memory_allocated`` on CUDA (reset for each batch size). CPU numbers use ``--threads``
intra-op threads (default 2); on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Sequence

import torch


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_batch(model: torch.nn.Module, batch: int, *, device: torch.device, steps: int, warmup: int,
                amp_dtype: torch.dtype | None, channels_last: bool) -> dict[str, float]:  # fmt: skip
    s = model.config.image_size
    x = torch.randn(batch, 3, s, s, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.arange(batch, device=device) % 2).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x).squeeze(1)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mb()
    del optimizer
    return {"step_s": median, "images_per_s": batch / median, "peak_mb": peak, "min_step_s": min(times)}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        import cevit  # noqa: F401
    except ImportError:  # running from a source checkout without installing
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from cevit.models import DEFAULT_PRESET, create_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    p.add_argument("--steps", type=int, default=5, help="timed steps per batch size")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--image-size", type=int, default=None, help="override the preset's input size")
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads")
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16", help="CUDA autocast dtype")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))  # fmt: skip
    cuda = device.type == "cuda"
    torch.set_num_threads(args.threads)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[args.amp] if cuda else None
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    overrides = {"image_size": args.image_size} if args.image_size else {}
    model = create_model(args.preset, **overrides).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    precision = f"autocast {amp_dtype}, channels-last" if cuda and amp_dtype else "fp32"
    print(f"torch {torch.__version__}, {where}, {args.preset} at {model.config.image_size} px, {precision}, "
          f"{args.warmup} warm-up + {args.steps} timed steps (median)")  # fmt: skip
    mem = "peak GPU MB" if cuda else "peak RSS MB"
    print(f"{'batch':>5s} {'s/step':>9s} {'min s/step':>10s} {'images/s':>9s} {mem:>12s}")
    for batch in args.batches:
        try:
            r = bench_batch(model, batch, device=device, steps=args.steps, warmup=args.warmup, amp_dtype=amp_dtype,
                            channels_last=cuda)  # fmt: skip
        except torch.OutOfMemoryError:
            print(f"{batch:5d} {'out of memory':>44s}")
            if cuda:
                torch.cuda.empty_cache()
            continue
        print(f"{batch:5d} {r['step_s']:9.3f} {r['min_step_s']:10.3f} {r['images_per_s']:9.2f} {r['peak_mb']:12.0f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
