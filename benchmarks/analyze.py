"""Benchmark: end-to-end analysis time per stage on generated inputs (prints numbers; not a test).

    python benchmarks/analyze.py [--threads 2] [--device cpu] [--weights CKPT] [--repeats 2]
    python benchmarks/analyze.py --batch photos [--count 200] [--workers N] [--backend onnxruntime]
    python benchmarks/analyze.py --batch videos [--count 50] [--workers N]
    python benchmarks/analyze.py --batch photos --photos ../shared/data/faces    # real photos instead

``--batch``: a folder of generated photos (mixed sizes from 480x360 to 2400x1800, 0-6 faces each, pasted at
60-400 px) or short 720p videos (3 s, 1-2 faces) analysed with ``analyze_many`` twice, each run in its own
process: sequentially (``workers=0``, the loop of cevit <= 0.2) with ``--threads`` torch threads and with one
(``sequential-1t``: what each stage thread of the pipeline gets on 2 cores, to separate the gain of the threading
from that of the overlap), and pipelined (``--workers``, default the machine's cores minus one). Prints files/s, faces/s, the throughput ratio, the peak RSS of each process and the
pipelined run's model batching (faces per model call). Uses the bundled default weights unless --weights.

Inputs are made in a temporary folder from the shipped sample face (src/cevit/samples/astronaut.jpg):
a 10 s 1080p 30 fps H.264 clip with the face pasted in (moving slightly), a 720p clip with three faces, and a
4000x3000 photo with one face. Uses the bundled default weights (224 px input) unless --weights; earlier versions
timed random weights of the 380 px V1 preset by default, which made the model part about 2x slower than what users
run.
``--backend onnxruntime`` runs the model in ONNX Runtime (its export cached, see README), ``--min-face-size``
overrides the detector's smallest face (the speed/recall trade-off of the pyramid). The 30-frame 1080p row is
compared with the naive reference pipeline's published 27.8 s on the same kind of 2-core machine (facenet-pytorch
cannot be imported here: it needs torchvision). Reports decode / detect / crop+preprocess / model / total seconds (median over repeats),
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

#: the naive reference pipeline (OpenCV seek per frame, facenet-pytorch MTCNN on full frames, the authors' model) on a
#: 30-frame 1080p DFDC clip, 2 cores (issue 12)
REFERENCE_SECONDS = 27.8
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


def _batch_inputs(kind: str, folder: Path, count: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    face = _face()
    paths = []
    for i in range(count):
        if kind == "photos":
            w = int(rng.integers(480, 2401))
            h = w * 3 // 4
            img = np.empty((h, w, 3), np.uint8)
            img[:] = rng.integers(40, 200, 3, dtype=np.uint8)
            for _ in range(int(rng.integers(0, 7))):
                size = int(rng.integers(60, min(400, h // 2) + 1))
                _paste(img, face, int(rng.integers(0, w - size)), int(rng.integers(0, h - size)), size)
            path = folder / f"photo_{i:04d}.jpg"
            Image.fromarray(img).save(path, quality=90)
        else:
            faces = [(100 + 500 * k, 200, int(rng.integers(160, 260))) for k in range(int(rng.integers(1, 3)))]
            path = _video(folder / f"clip_{i:03d}.mp4", 1280, 720, 3, 30, faces)
        paths.append(path)
    return paths


def _batch_child(args: argparse.Namespace) -> int:
    """One mode of --batch in this process: prints one JSON line (files, seconds, faces, model batching, RSS)."""
    import json
    import time

    import torch

    from cevit.inference.batch import BatchStats
    from cevit.inference.pipeline import load_model

    torch.set_num_threads(args.threads)
    paths = sorted(
        p for p in Path(args.child_folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".mp4")
    )
    detector = load_model(weights=args.weights, device=args.device, num_frames=args.frames, backend=args.backend)
    detector.analyze(paths[0])  # warm-up (first-call allocations), not timed
    stats = BatchStats()
    workers = 0 if args.child_mode.startswith("sequential") else args.workers
    t0 = time.perf_counter()
    reports = list(detector.analyze_many(paths, workers=workers, stats=stats))
    seconds = time.perf_counter() - t0
    faces = sum(len(r.get("faces", [])) for r in reports)
    errors = sum("error" in r for r in reports)
    print(json.dumps({"mode": args.child_mode, "files": len(paths), "seconds": seconds, "faces": faces,
                      "errors": errors, "model_calls": stats.model_calls, "workers": stats.workers,
                      "stage_threads": stats.stage_threads,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))  # fmt: skip
    return 0


def _batch(args: argparse.Namespace) -> int:
    import json
    import subprocess

    with tempfile.TemporaryDirectory(prefix="cevit-batch-bench-") as tmp:
        folder = Path(args.photos) if args.photos else Path(tmp)
        if not args.photos:
            print(f"making {args.count} {args.batch} ...", file=sys.stderr)
            _batch_inputs(args.batch, folder, args.count)
        results = {}
        for mode in ("sequential", "sequential-1t", "pipelined"):
            threads = 1 if mode == "sequential-1t" else args.threads
            cmd = [sys.executable, __file__, "--child-mode", mode, "--child-folder", str(folder),
                   "--threads", str(threads), "--device", args.device, "--frames", str(args.frames),
                   "--backend", args.backend]  # fmt: skip
            if args.weights:
                cmd += ["--weights", str(args.weights)]
            if args.workers is not None:
                cmd += ["--workers", str(args.workers)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
        print(f"{args.batch}: {results['sequential']['files']} files, {args.threads} torch threads, backend "
              f"{args.backend}, {args.frames} frames/video")  # fmt: skip
        print(f"{'mode':13s} {'workers':>7s} {'seconds':>8s} {'files/s':>8s} {'faces':>6s} {'faces/s':>8s} "
              f"{'errors':>6s} {'faces/call':>10s} {'peak RSS MB':>11s}")  # fmt: skip
        for mode, r in results.items():
            per_call = f"{r['faces'] / r['model_calls']:.1f}" if r["model_calls"] else "-"
            print(f"{mode:13s} {r['workers']:7d} {r['seconds']:8.1f} {r['files'] / r['seconds']:8.2f} {r['faces']:6d} "
                  f"{r['faces'] / r['seconds']:8.1f} {r['errors']:6d} {per_call:>10s} {r['peak_rss_mb']:11.0f}")  # fmt: skip
        for base in ("sequential", "sequential-1t"):
            ratio = results[base]["seconds"] / results["pipelined"]["seconds"]
            print(f"throughput ratio pipelined / {base}: {ratio:.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    import torch

    from cevit.inference.pipeline import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None)
    p.add_argument("--min-face-size", type=float, default=None, help="detector's smallest face (default: the weights')")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--batch", choices=("photos", "videos"), help="throughput of analyze_many: sequential vs pipelined")
    p.add_argument("--count", type=int, default=60, help="--batch: generated files (default 60)")
    p.add_argument("--photos", help="--batch photos: a folder of real photos instead of generated ones")
    p.add_argument("--workers", type=int, default=None, help="--batch: workers of the pipelined run")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    p.add_argument("--child-mode", help=argparse.SUPPRESS)
    p.add_argument("--child-folder", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_mode:
        return _batch_child(args)
    if args.batch:
        return _batch(args)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="cevit-bench-") as tmp:
        tmp_path = Path(tmp)
        print("making inputs ...", file=sys.stderr)
        inputs = {
            "1080p 10 s, 1 face": _video(tmp_path / "v1080.mp4", 1920, 1080, 10, 30, [(800, 300, 360)]),
            "720p 10 s, 3 faces": _video(
                tmp_path / "v720.mp4", 1280, 720, 10, 30, [(100, 200, 220), (520, 240, 200), (900, 180, 240)]
            ),  # fmt: skip
            "4000x3000 photo": _photo(tmp_path / "photo.jpg"),
        }
        extra = {} if args.min_face_size is None else {"min_face_size": args.min_face_size}
        detector = load_model(weights=args.weights, device=args.device, num_frames=args.frames, backend=args.backend,
                              **extra)  # fmt: skip
        print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}, backend {detector.backend}, "
              f"min face {detector.options.min_face_size} px, {args.frames} frames/video, "
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
            if name.startswith("1080p"):
                reference = f"   ({REFERENCE_SECONDS / t['total']:.1f}x faster than the naive reference's {REFERENCE_SECONDS} s)"
                print(reference)
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
