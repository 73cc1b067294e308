"""Benchmark: face-detection recall and speed of cevit's MTCNN settings against a full-resolution reference.

    python benchmarks/detection_recall.py [DATA] [--frames 30] [--threads 2] [--max-side 1280]

For every video of the evaluation folder DATA (default ``../shared/data/eval_public``, read from its
MANIFEST.tsv), the frames that ``cevit analyze`` samples (``--frames``, evenly spaced) go through:

* ``reference``: MTCNN with facenet-pytorch's settings (min face 20 px, thresholds 0.6/0.7/0.7, factor 0.709)
  on the **full-resolution** frames (``max_side=None``): the detections a full-resolution MTCNN makes;
* ``working``: the cascade on the frame downscaled to ``--max-side`` (cevit <= 0.2's default);
* ``full``: P-Net on the downscaled frame, R-Net/O-Net on the original pixels (``refine="full"``, the default).

A reference face counts as found when a detection of the same frame overlaps it with IoU >= 0.5; recall is given
over all reference detections and over the confident ones (probability >= ``--confident``, 0.95): on the public
videos the reference's low-probability detections (0.7-0.85) are mostly background texture (carpet, clothing
prints), so the confident recall is the one that says whether real faces are lost. Frames whose
longer side is at most ``--max-side`` are not downscaled: all three settings are the same detector there, so
they are run once. Prints per video: size, reference faces, recall and extra detections of each setting, and
milliseconds per frame; then the totals. Not a test: it needs the shared evaluation set and takes minutes.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (N, 4) and b (M, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def match(ref: list, got: list, confident: float) -> tuple[int, int, int]:
    """(reference faces found, confident reference faces found, detections matching no reference face)."""
    found = found_conf = extra = 0
    for r, g in zip(ref, got):
        m = iou(np.array([f.box for f in r]).reshape(-1, 4), np.array([f.box for f in g]).reshape(-1, 4))
        hit = (m >= 0.5).any(axis=1) if m.size else np.zeros(len(r), bool)
        found += int(hit.sum())
        found_conf += int(sum(h for h, f in zip(hit, r) if f.probability >= confident))
        extra += len(g) - (int((m >= 0.5).any(axis=0).sum()) if m.size else 0)
    return found, found_conf, extra


def timed(detector, frames: list[np.ndarray]) -> tuple[list, float]:
    start = time.perf_counter()
    out = [detector.detect_one(f) for f in frames]
    return out, (time.perf_counter() - start) * 1000 / max(1, len(frames))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "eval_public"))
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-side", type=int, default=1280)
    p.add_argument("--limit", type=int, default=None, help="only the first N videos")
    p.add_argument("--confident", type=float, default=0.95, help="probability of a confident reference face")
    args = p.parse_args(argv)

    import torch

    from cevit.faces import MTCNN
    from cevit.media import sample_frames

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    with open(data / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        videos = [r["file"] for r in csv.DictReader(fh, delimiter="\t") if r["kind"] == "video"]
    videos = videos[: args.limit]
    settings = {"reference": MTCNN(max_side=None),
                "working": MTCNN(max_side=args.max_side, refine="working"),
                "full": MTCNN(max_side=args.max_side, refine="full")}  # fmt: skip
    totals = {k: [0, 0, 0, 0.0, 0] for k in settings}  # found, confident found, extra, ms sum, frames
    n_ref = n_conf = 0
    head = " | ".join(f"{k + ': all conf. extra ms':>28s}" for k in ("working", "full"))
    print(f"{'video':50s} {'size':>9s} {'ref (conf.)':>11s} | {head}")
    for rel in videos:
        frames = [f.image for f in sample_frames(data / rel, num_frames=args.frames)]
        h, w = frames[0].shape[:2]
        ref, ms_ref = timed(settings["reference"], frames)
        n = sum(len(r) for r in ref)
        nc = sum(f.probability >= args.confident for r in ref for f in r)
        n_ref += n
        n_conf += nc
        totals["reference"][3] += ms_ref * len(frames)
        totals["reference"][4] += len(frames)
        cells = []
        for k in ("working", "full"):
            if max(h, w) <= args.max_side:
                got, ms = ref, ms_ref  # not downscaled: the same detector as the reference
            else:
                got, ms = timed(settings[k], frames)
            found, found_conf, extra = match(ref, got, args.confident)
            t = totals[k]
            t[0] += found
            t[1] += found_conf
            t[2] += extra
            t[3] += ms * len(frames)
            t[4] += len(frames)
            cells.append(f"{found:3d}/{n:<3d} {found_conf:3d}/{nc:<3d} +{extra:<3d} {ms:5.0f}")
        print(
            f"{rel[:50]:50s} {w:>4d}x{h:<4d} {n:5d} ({nc:3d}) | " + " | ".join(f"{c:>28s}" for c in cells), flush=True
        )
    ms_ref = totals["reference"][3] / max(1, totals["reference"][4])
    print(f"\nreference: {n_ref} detections, {n_conf} with p >= {args.confident}, {ms_ref:.0f} ms/frame")
    for k in ("working", "full"):
        found, found_conf, extra, ms, nf = totals[k]
        print(f"{k:9s}: recall {found}/{n_ref} = {found / max(1, n_ref):.1%}, confident faces "
              f"{found_conf}/{n_conf} = {found_conf / max(1, n_conf):.1%}, extra detections {extra}, "
              f"{ms / max(1, nf):.0f} ms/frame")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
