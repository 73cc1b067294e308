"""Benchmark: end-to-end analysis time per stage on generated inputs (prints numbers; not a test).

    python benchmarks/analyze.py [--threads 2] [--device cpu] [--weights CKPT] [--repeats 2]

Inputs are made in a temporary folder from the shipped sample face (src/cevit/samples/astronaut.jpg):
a 10 s 1080p 30 fps H.264 clip with the face pasted in (moving slightly), a 720p clip with three faces, and a
4000x3000 photo with one face. Without --weights a V1 model with random weights is used: speed does not depend
on the weight values. Reports decode / detect / crop+preprocess / model / total seconds (median over repeats),
faces per second and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "cevit" / "samples" / "astronaut.jpg"


def _face() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(SAMPLE).convert("RGB"))


def _paste(canvas: np.ndarray, face: np.ndarray, x: int, y: int, size: int) -> None:
    import cv2

    patch = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
    canvas[y : y + size, x : x + size] = patch


def _video(path: Path, w: int, h: int, seconds: int, fps: int, faces: list[tuple[int, int, int]]) -> Path:
    import av

    face = _face()
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            s.codec_context.options = {"preset": "veryfast", "crf": "23"}
        for i in range(seconds * fps):
            frame = np.full((h, w, 3), 70, np.uint8)
            frame[:, :, 1] = (np.arange(w) * 255 // w).astype(np.uint8)[None, :]
            for k, (x, y, size) in enumerate(faces):
                dx = int(20 * np.sin(i / 15 + k))
                _paste(frame, face, x + dx, y, size)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _photo(path: Path) -> Path:
    from PIL import Image

    img = np.full((3000, 4000, 3), 120, np.uint8)
    _paste(img, _face(), 1500, 800, 1400)
    Image.fromarray(img).save(path, quality=92)
    return path


def main(argv: list[str] | None = None) -> int:
    import torch

    from cevit.checkpoint import save_checkpoint
    from cevit.inference.pipeline import load_model
    from cevit.models import create_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--frames", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="cevit-bench-") as tmp:
        tmp_path = Path(tmp)
        weights = args.weights
        if weights is None:
            weights = tmp_path / "random_v1.safetensors"
            save_checkpoint(create_model("cross_efficient_vit_v1"), weights, note="random weights for benchmarking")
        print("making inputs ...", file=sys.stderr)
        inputs = {
            "1080p 10 s, 1 face": _video(tmp_path / "v1080.mp4", 1920, 1080, 10, 30, [(800, 300, 360)]),
            "720p 10 s, 3 faces": _video(
                tmp_path / "v720.mp4", 1280, 720, 10, 30, [(100, 200, 220), (520, 240, 200), (900, 180, 240)]
            ),  # fmt: skip
            "4000x3000 photo": _photo(tmp_path / "photo.jpg"),
        }
        detector = load_model(weights=weights, device=args.device, num_frames=args.frames)
        print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}, {args.frames} frames/video, "
              f"median of {args.repeats} runs after one warm-up")  # fmt: skip
        header = f"{'input':22s} {'decode':>7s} {'detect':>7s} {'crop+pre':>8s} {'model':>7s} {'total':>7s} {'faces':>5s} {'faces/s':>8s}"
        print(header)
        for name, path in inputs.items():
            detector.analyze(media_path=path)  # warm-up
            runs = [detector.analyze(media_path=path) for _ in range(args.repeats)]
            t = {
                k: statistics.median(r["timings"][k] for r in runs)
                for k in ("decode", "detect", "preprocess", "model", "total")
            }
            n = len(runs[0]["faces"])
            print(f"{name:22s} {t['decode']:7.2f} {t['detect']:7.2f} {t['preprocess']:8.3f} {t['model']:7.2f} "
                  f"{t['total']:7.2f} {n:5d} {n / t['total']:8.1f}")  # fmt: skip
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
