"""Benchmark: model forward time per face on CPU (default 2 threads) for both presets, eager vs optimised vs ONNX Runtime.

    python benchmarks/model_forward.py [--threads 2] [--batches 1 8] [--repeats 5] [--image-sizes 380 224]
    python benchmarks/model_forward.py --presets cross_efficient_vit_v1_224 --onnx --exporters dynamo torchscript

Prints a table: preset, variant (eager = as trained; optimised = BatchNorm folded, channels-last, in-place SiLU, CPU
micro-batches, what the torch backend runs, see cevit.models.optimize; ``ort-<exporter>`` = the model exported to
ONNX by cevit.models.onnx with that PyTorch exporter and run by ONNX Runtime with the same number of threads, what
``--backend onnxruntime`` runs), batch size, ms per face (median of the repeats), peak RSS of the process, the largest
logit difference to the eager model, and for ONNX Runtime its time relative to the optimised torch model. Weights
are random: speed does not depend on them. ``--image-sizes`` overrides the presets' input size (e.g. 224, the input
size of the default weights). Variants of one batch size are timed interleaved (round-robin over the repeats), so
a change in the load of a shared machine hits all of them alike.
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


def bench_interleaved(models: dict, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms per face of each model, the models timed in turn within each repeat."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for m in models.values():
            m(x)  # warm-up
        for _ in range(repeats):
            for name, m in models.items():
                t0 = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) / x.shape[0] * 1000.0 for name, t in times.items()}


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
    p.add_argument("--onnx", action="store_true", help="also export to ONNX and time ONNX Runtime")
    p.add_argument("--exporters", nargs="+", default=["dynamo"], choices=["dynamo", "torchscript"])
    p.add_argument("--no-eager", action="store_true", help="skip the eager model (time only what the backends run)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} repeats (median)")
    print(f"{'preset':24s} {'size':>4s} {'variant':16s} {'batch':>5s} {'ms/face':>9s} {'peak RSS MB':>12s} "
          f"{'max |dlogit|':>13s} {'/optimised':>10s}")  # fmt: skip
    for name in args.presets:
        for size in args.image_sizes or [None]:
            model = (create_model(name) if size is None else create_model(name, image_size=size)).eval()
            variants = {} if args.no_eager else {"eager": model}
            variants["optimised"] = optimize_for_inference(model, cpu_micro_batch=args.micro_batch)
            if args.onnx:
                from cevit.models.onnx import OnnxRuntimeModel, onnx_bytes

                for exporter in args.exporters:
                    t0 = time.perf_counter()
                    data, _ = onnx_bytes(model, exporter=exporter)
                    ort_model = OnnxRuntimeModel.from_bytes(data, threads=args.threads)
                    print(
                        f"# {name} {exporter} export + session: {time.perf_counter() - t0:.1f} s, {len(data) / 1e6:.1f} MB"
                    )
                    variants[f"ort-{exporter}"] = ort_model
            s = model.config.image_size
            for batch in args.batches:
                x = torch.randn(batch, 3, s, s)
                with torch.inference_mode():
                    ref = model(x)
                    diffs = {v: (ref - m(x)).abs().max().item() for v, m in variants.items()}
                times = bench_interleaved(variants, x, args.repeats)
                for variant in variants:
                    ratio = times[variant] / times["optimised"]
                    print(f"{name:24s} {s:4d} {variant:16s} {batch:5d} {times[variant]:9.1f} {_rss_mb():12.0f} "
                          f"{diffs[variant]:13.2e} {ratio:10.2f}")  # fmt: skip
                    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
