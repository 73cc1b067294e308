"""Benchmark: `cevit scan` throughput of the local and the Ray engine on photos and videos (prints numbers).

    python benchmarks/scan.py [--photos 200] [--videos 20] [--engines local,ray] [--kinds photos,videos]
                              [--workers 2] [--work DIR]

Photos: the real photos of ``$CEVIT_SHARED/data/faces`` (70, many large) topped up with LFW photos
(``data/train_real/lfw``, 250x250) to ``--photos``. Videos: generated 640x360 H.264 clips (5 s at 25 fps, an LFW
face pasted in, moving), ``--frames`` sampled each (default 30, the CLI default). The bundled default weights are
used. The photos and then the videos are scanned by each engine into fresh output folders; the local engine runs one
process with ``--threads`` torch threads (default 1), the Ray engine a local cluster of ``--workers``
CPUs with one actor and one torch thread per CPU. Reports wall time (including model loading and, for Ray,
cluster start), items/s, s/item and items/hour, and the same without the start-up (steady state: rows committed
after the first one, from the rows' ``scanned_at``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _shared() -> Path:
    return Path(os.environ.get("CEVIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _photos(n: int) -> list[Path]:
    root = _shared() / "data"
    faces = sorted(p for p in (root / "faces").glob("*.jpg"))
    lfw = sorted((root / "train_real" / "lfw").glob("*.jpg"))
    if not faces and not lfw:
        sys.exit(f"no photos under {root} (set CEVIT_SHARED)")
    return (faces + lfw)[:n]


def _videos(folder: Path, n: int, faces: list[Path]) -> list[Path]:
    import av
    import cv2
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"clip_{i:03d}.mp4"
        out.append(path)
        if path.exists():
            continue
        face = np.asarray(Image.open(faces[i % len(faces)]).convert("RGB").resize((160, 160)))
        w, h, fps = 640, 360, 25
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for k in range(5 * fps):
                frame = np.full((h, w, 3), 60 + 5 * i, np.uint8)
                x = 200 + int(60 * np.sin(k / 10 + i))
                frame[100:260, x : x + 160] = cv2.resize(face, (160, 160))
                for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--kinds", default="photos,videos", help="which inputs to scan")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="local engine: torch threads (default 1: on a loaded 2-core machine, 2 threads spinning at "
                    "OpenMP barriers were far slower)")  # fmt: skip
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--work", default=None, help="folder for the generated videos and the outputs (kept)")
    args = ap.parse_args(argv)

    from cevit.scan import DetectorSpec, ScanConfig, read_records, run_scan

    work = Path(args.work or tempfile.mkdtemp(prefix="cevit-scan-bench-"))
    photos = _photos(args.photos)
    photo_dir = work / "photos"
    photo_dir.mkdir(parents=True, exist_ok=True)
    manifest = photo_dir / "manifest.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in photos))
    videos = _videos(work / "videos", args.videos, photos)
    print(f"inputs: {len(photos)} photos, {len(videos)} videos (640x360, 5 s, {args.frames} frames sampled); "
          f"{os.cpu_count()} CPU(s); outputs in {work}", flush=True)  # fmt: skip
    sources = {"photos": str(manifest), "videos": str(work / "videos")}
    for kind in args.kinds.split(","):
        source = sources[kind]
        for engine in args.engines.split(","):
            threads = args.threads if engine == "local" else 1
            spec = DetectorSpec(weights=args.weights, device="cpu", num_frames=args.frames, threads=threads)
            out = work / f"out-{engine}-{kind}"
            shutil.rmtree(out, ignore_errors=True)
            config = ScanConfig(sources=(source,), output=out, engine=engine, workers=args.workers, part_size=50)
            t0 = time.perf_counter()
            summary = run_scan(config, spec=spec)
            wall = time.perf_counter() - t0
            stamps = sorted(r["scanned_at"] for r in read_records(out, ["scanned_at"]))
            steady = (stamps[-1] - stamps[0]).total_seconds() / max(1, len(stamps) - 1)
            n = summary.scanned
            print(f"{engine:5s} {kind:6s}: {n} items, {summary.errors} errors, {wall:7.1f} s wall, "
                  f"{n / wall:6.2f} items/s, {wall / n:6.2f} s/item, {3600 * n / wall:8.0f} items/h; steady state "
                  f"{steady:6.2f} s/item = {3600 / steady:8.0f} items/h", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
