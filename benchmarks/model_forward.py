"""Benchmark: model forward time per face on CPU (default 2 threads) for both presets, eager vs optimised.

    python benchmarks/model_forward.py [--threads 2] [--batches 1 8] [--repeats 5] [--image-sizes 380 224]

Prints a table: preset, variant (eager = as trained; optimised = BatchNorm folded, channels-last, in-place SiLU, CPU
micro-batches; see cevit.models.optimize), batch size, ms per face (median of the repeats), peak RSS of the process, and the
largest logit difference between the two variants. Weights are random: speed does not depend on them.
``--image-sizes`` overrides the presets' input size (e.g. 224, the input size of the default weights).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import torch


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        model(x)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) / x.shape[0] * 1000.0


def main(argv: list[str] | None = None) -> int:
    from cevit.models import create_model, list_presets
    from cevit.models.optimize import optimize_for_inference

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--presets", nargs="+", default=list_presets())
    p.add_argument(
        "--image-sizes", type=int, nargs="+", default=None, help="input sizes to run (default: each preset's own)"
    )
    p.add_argument("--micro-batch", type=int, default=2, help="CPU micro-batch of the optimised model (0 = off)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} repeats (median)")
    print(f"{'preset':24s} {'size':>4s} {'variant':10s} {'batch':>5s} {'ms/face':>9s} {'peak RSS MB':>12s} "
          f"{'max |dlogit|':>13s}")  # fmt: skip
    for name in args.presets:
        for size in args.image_sizes or [None]:
            model = (create_model(name) if size is None else create_model(name, image_size=size)).eval()
            fast = optimize_for_inference(model, cpu_micro_batch=args.micro_batch)
            s = model.config.image_size
            for batch in args.batches:
                x = torch.randn(batch, 3, s, s)
                with torch.inference_mode():
                    diff = (model(x) - fast(x)).abs().max().item()
                for variant, m in (("eager", model), ("optimised", fast)):
                    ms = bench(m, x, args.repeats)
                    print(f"{name:24s} {s:4d} {variant:10s} {batch:5d} {ms:9.1f} {_rss_mb():12.0f} {diff:13.2e}")
                    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
