"""The sections of ``benchmarks/gpu_check.sh`` (issue 12, item 3), one subcommand each; prints numbers, tests nothing.

    python benchmarks/gpu_check.py prepare [--carry .gpu_carry]        # HERE: what travels to the GPU machine
    python benchmarks/gpu_check.py model   [--device cuda] [--tiny]    # model faces/s: 224/380 px, fp32/bf16
    python benchmarks/gpu_check.py mtcnn   [--device cuda] [--tiny]    # MTCNN ms/frame at 1080p
    python benchmarks/gpu_check.py e2e     [--device cuda] [--tiny]    # 30-frame 1080p videos/min with decoding
    python benchmarks/gpu_check.py train   [--device cuda] [--tiny]    # `cevit train` images/s + a resume check

``--tiny`` runs the same code with tiny sizes (the script's ``--dry-run``: every section on the CPU in a minute or
two). Inputs come from ``--carry`` (default ``.gpu_carry``, made by ``prepare``) where present, else are generated.

Decoding without PyAV: the GPU machine has no PyAV (104 MB with its FFmpeg libraries: too large for the 64 MiB
that travel), and :mod:`cevit.media` decodes videos with PyAV only. When ``import av`` fails (or with
``--decoder opencv``), ``e2e`` swaps in :class:`OpenCvVideo` — ``cv2.VideoCapture`` (OpenCV's own FFmpeg) behind
the three functions the pipeline calls (``sniff_media_type``, ``probe_video``, ``sample_frames``), with the same
contract: ``num_frames`` frames evenly spaced over the video, upright uint8 RGB, read sequentially (``grab`` every
frame, ``retrieve`` only the sampled ones, as cevit's sampler decodes a short clip sequentially). Everything else
— :meth:`Detector.analyze_many`'s pipelined batch, MTCNN, crops, the model, aggregation — is the library's code.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "cevit" / "samples" / "astronaut.jpg"
#: Pure-Python packages the GPU machine lacks (efficientnet_pytorch for the model, pytest for `pytest -m cuda`).
CARRY_PACKAGES = ("efficientnet_pytorch", "pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py.py")
#: The public 1080p clip carried for the end-to-end figure (a real DFDC video, one face), when the shared folder has it.
PUBLIC_CLIP = "data/eval_public/real/icpr__dfdc_lynaeydofd.mp4"
VIDEOS_PER_MINUTE_TARGET = 100
FACES_PER_SECOND_TARGET = 2000
#: A reduced model for --tiny training (the test suite's tiny configuration).
TINY_MODEL = dict(image_size=64, depth=1, sm_enc_depth=1, lg_enc_depth=1, cross_attn_depth=1, sm_enc_heads=2,
                  lg_enc_heads=2, cross_attn_heads=2, sm_enc_dim_head=16, lg_enc_dim_head=16, cross_attn_dim_head=16,
                  sm_enc_mlp_dim=32, lg_enc_mlp_dim=32, sm_dim=32, lg_dim=32)  # fmt: skip


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@functools.cache
def _face(size: int) -> np.ndarray:
    """The sample face, resized to ``size`` x ``size`` (RGB uint8)."""
    import cv2
    from PIL import Image

    return cv2.resize(np.asarray(Image.open(SAMPLE).convert("RGB")), (size, size), interpolation=cv2.INTER_AREA)


def synthetic_frame(i: int, width: int = 1920, height: int = 1080, face_px: int = 360) -> np.ndarray:
    """A frame of the generated clip: a gradient background and the sample face moving slowly (RGB uint8)."""
    frame = np.full((height, width, 3), 70, np.uint8)
    frame[:, :, 1] = (np.arange(width) * 255 // width).astype(np.uint8)[None, :]
    face = _face(face_px)
    x = width // 2 - face_px // 2 + int(40 * np.sin(i / 15))
    y = height // 3 - face_px // 4
    frame[y : y + face_px, x : x + face_px] = face
    return frame


# -- prepare (here) ------------------------------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace) -> int:
    """Fill ``--carry``: site/ (pure-Python packages), faces/ (a small face index of JPEG crops), clips/."""
    carry = Path(args.carry)
    shutil.rmtree(carry, ignore_errors=True)
    (carry / "site").mkdir(parents=True)
    import importlib.util

    for name in CARRY_PACKAGES:
        spec = importlib.util.find_spec(name.removesuffix(".py"))
        if spec is None or spec.origin is None:
            print(f"prepare: {name} is not installed here: not carried")
            continue
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, carry / "site" / origin.parent.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
        else:
            shutil.copy2(origin, carry / "site" / origin.name)
    _prepare_faces(carry / "faces", Path(args.faces), count=args.faces_count)
    clips = carry / "clips"
    clips.mkdir()
    _encode_fallback_clip(clips / "generated_1080p_h264.mp4")
    shared = Path(os.environ.get("CEVIT_SHARED", ROOT.parent / "shared"))
    public = shared / PUBLIC_CLIP
    if public.is_file() and public.stat().st_size <= 4_500_000:
        shutil.copyfile(public, clips / public.name)
    else:
        print(f"prepare: {public} absent (or larger than 4.5 MB): only the generated clip travels")
    total = sum(f.stat().st_size for f in carry.rglob("*") if f.is_file())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False).stdout
    tree = sum((ROOT / f).stat().st_size for f in tracked.decode().split("\0") if f and (ROOT / f).is_file())
    print(f"prepared {carry}: {total / 2**20:.1f} MiB (working tree {tree / 2**20:.1f} MiB; together "
          f"{(total + tree) / 2**20:.1f} of 64 MiB)")  # fmt: skip
    for sub in ("site", "faces", "clips"):
        size = sum(f.stat().st_size for f in (carry / sub).rglob("*") if f.is_file())
        print(f"  {sub:6s} {size / 2**20:6.2f} MiB")
    if total + tree > 60 * 2**20:
        print("prepare: too large to travel (keep 4 MiB of margin under 64 MiB)", file=sys.stderr)
        return 1
    return 0


def _prepare_faces(out: Path, source: Path, *, count: int) -> None:
    """``count`` real faces of a face index (``cevit extract-faces`` format) as JPEG crops (q 92) + their index;
    without one, generated faces (the training tests' synthetic crops)."""
    import cv2

    from cevit.data import INDEX_COLUMNS

    (out / "crops").mkdir(parents=True)
    rows: list[list[str]] = []
    index = source / "index.csv"
    if index.is_file():
        with open(index, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                if len(rows) >= count:
                    break
                if row["label"] != "real":
                    continue
                img = cv2.imread(str(source / row["crop_path"]), cv2.IMREAD_COLOR)
                if img is None:
                    continue
                rel = f"crops/{len(rows):04d}.jpg"
                cv2.imwrite(str(out / rel), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
                rows.append([rel if c == "crop_path" else row.get(c) or "" for c in INDEX_COLUMNS])
        what = f"real faces from {index}"
    else:
        rows = _generated_faces(out, count=count)
        what = "generated faces"
    with open(out / "index.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(INDEX_COLUMNS)
        w.writerows(rows)
    print(f"prepare: {len(rows)} {what} -> {out}")


def _generated_faces(out: Path, *, count: int) -> list[list[str]]:
    """Synthetic face crops (96 px: an ellipse face with eyes and a mouth) with their index rows."""
    import cv2

    from cevit.data import INDEX_COLUMNS

    (out / "crops").mkdir(parents=True, exist_ok=True)
    box = (18.0, 18.0, 78.0, 78.0)
    lms = [(36.0, 40.0), (60.0, 40.0), (48.0, 52.0), (38.0, 64.0), (58.0, 64.0)]
    rows = []
    for i in range(count):
        rng = np.random.default_rng(i)
        img = rng.integers(30, 90, size=(96, 96, 3), dtype=np.uint8)
        cv2.ellipse(img, (48, 50), (26, 32), 0, 0, 360, (int(rng.integers(180, 230)), 160, 130), thickness=-1)
        for x, y in lms[:2]:
            cv2.circle(img, (int(x), int(y)), 4, (40, 30, 25), thickness=-1)
        cv2.line(img, (38, 64), (58, 64), (120, 40, 50), thickness=3)
        rel = f"crops/{i:04d}.jpg"
        cv2.imwrite(str(out / rel), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        values = {"crop_path": rel, "source": f"gen{i}.jpg", "frame_index": "0", "timestamp": "", "face_index": "0",
                  "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3], "det_prob": "0.99", "label": "real",
                  "split": "", "method": "original", "dataset": "generic", "group": f"gen{i}"}  # fmt: skip
        for k, (x, y) in enumerate(lms):
            values[f"lm{k}x"], values[f"lm{k}y"] = x, y
        rows.append([str(values.get(c, "")) for c in INDEX_COLUMNS])
    return rows


def _encode_fallback_clip(path: Path, *, seconds: int = 10, fps: int = 30) -> None:
    """The generated 1080p clip as H.264 (PyAV, here), for a GPU machine whose OpenCV cannot write mp4v."""
    try:
        import av
    except ImportError:
        print("prepare: PyAV absent here: no fallback clip (the GPU machine generates one with OpenCV)")
        return
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
        if codec == "libx264":
            s.codec_context.options = {"preset": "veryfast", "crf": "30"}
        for i in range(seconds * fps):
            for p in s.encode(av.VideoFrame.from_ndarray(synthetic_frame(i), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


# -- model ---------------------------------------------------------------------------------------------------------
def cmd_model(args: argparse.Namespace) -> int:
    """Bare model faces/s (random inputs already on the device), then Detector.score_faces faces/s (uint8 crops:
    pinned copy, conversion on the device, autocast) with the bundled weights."""
    import torch

    from cevit.inference.pipeline import load_model
    from cevit.models import create_model
    from cevit.models.optimize import optimize_for_inference

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    batches = (1,) if args.tiny else (32, 256)
    window = 0.1 if args.tiny else 3.0
    print(f"{'preset':28s} {'px':>4s} {'dtype':>6s} {'batch':>6s} {'faces/s':>9s}")
    rates: dict[tuple[int, str, int], float] = {}
    reduced = {"image_size": 96, "depth": 1} if args.tiny else {}  # --tiny: a reduced model of each preset
    presets = ("cross_efficient_vit_v1_224",) if args.tiny else ("cross_efficient_vit_v1_224", "cross_efficient_vit_v1")
    for preset in presets:
        model = optimize_for_inference(create_model(preset, **reduced).eval()).to(device)
        size = model.config.image_size
        for dtype in ("fp32", "bf16"):
            amp = dtype == "bf16"
            for batch in batches:
                x = torch.randn(batch, 3, size, size, device=device)
                try:
                    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        for _ in range(1 if args.tiny else 3):
                            model(x)
                        _sync(device)
                        n, t0 = 0, time.perf_counter()
                        while time.perf_counter() - t0 < window:
                            model(x)
                            n += batch
                        _sync(device)
                    rate = n / (time.perf_counter() - t0)
                except torch.OutOfMemoryError:
                    print(f"{preset:28s} {size:4d} {dtype:>6s} {batch:6d} {'OOM':>9s}")
                    torch.cuda.empty_cache()
                    continue
                rates[(size, dtype, batch)] = rate
                print(f"{preset:28s} {size:4d} {dtype:>6s} {batch:6d} {rate:9.1f}", flush=True)
        del model
    key = (224, "bf16", batches[-1])
    if key in rates:
        print(f"target >= {FACES_PER_SECOND_TARGET} faces/s (224 px, bf16, batch {batches[-1]}): {rates[key]:.0f} "
              f"-> {'met' if rates[key] >= FACES_PER_SECOND_TARGET else 'NOT met'}")  # fmt: skip
    # the library's path: uint8 crops -> (pinned) copy -> normalise on the device -> autocast -> float32 scores
    crops = [np.random.default_rng(i).integers(0, 256, (224, 224, 3), dtype=np.uint8) for i in range(batches[-1])]
    for precision in ("fp32",) if args.tiny else ("fp32", "bf16"):  # (--tiny: bf16 runs in the parity check)
        det = load_model(device=str(device), precision=precision, batch_size=batches[-1])
        det.score_faces(crops)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < window:
            det.score_faces(crops)
            n += len(crops)
        rate = n / (time.perf_counter() - t0)
        print(f"Detector.score_faces, bundled weights (224 px), {det.precision}, batch {batches[-1]} uint8 crops: "
              f"{rate:.0f} faces/s", flush=True)  # fmt: skip
    _parity(args)
    return 0


def _parity(args: argparse.Namespace) -> None:
    """Logits of the bundled weights on real crops of the sample face, per precision on the device, against the CPU
    in fp32 (the issue's bound: 1e-2), printed even where the `cuda` tests fail."""
    from PIL import Image

    from cevit.errors import ConfigError
    from cevit.inference.pipeline import load_model

    face = np.asarray(Image.open(SAMPLE).convert("RGB"))
    ref = load_model(device="cpu", precision="fp32")
    crops = [ref.preprocessor.crop(face, (150 + d, 60 + d, 320 - d, 230 - d)) for d in range(0, 32, 2)]
    crops = crops[3:4] if args.tiny else crops  # bf16 is slow on a CPU without bf16 instructions
    t = ref.calibration.temperature

    def logits(scores: list[float]) -> np.ndarray:
        p = np.asarray(scores, dtype=np.float64)
        return t * np.log(p / (1.0 - p))

    base = logits(ref.score_faces(crops))
    for precision in ("fp32", "bf16", "fp16"):
        try:
            det = load_model(device=args.device, precision=precision)
        except ConfigError as exc:
            print(f"parity {precision}: {exc}")
            continue
        d = np.abs(logits(det.score_faces(crops)) - base)
        print(f"parity {precision} on {det.device}: {len(crops)} real face crops, max |logit - CPU fp32 logit| "
              f"{d.max():.4f}, mean {d.mean():.4f} ({'within' if d.max() <= 1e-2 else 'OVER'} the issue's 1e-2)",
              flush=True)  # fmt: skip


# -- MTCNN ---------------------------------------------------------------------------------------------------------
def cmd_mtcnn(args: argparse.Namespace) -> int:
    import torch

    from cevit.faces import MTCNN

    n = 2 if args.tiny else 8
    frames = [synthetic_frame(i * 5) for i in range(n)]
    for max_side in (1280, 1920):
        det = MTCNN(device=args.device, max_side=max_side)
        det.detect(frames)
        _sync(args.device)
        reps = 1 if args.tiny else 5
        t0 = time.perf_counter()
        for _ in range(reps):
            found = det.detect(frames)
        _sync(args.device)
        ms = (time.perf_counter() - t0) / (reps * n) * 1000
        print(f"MTCNN max_side {max_side}: {ms:.1f} ms/frame (batches of {n} 1080p frames), "
              f"faces/frame {np.mean([len(x) for x in found]):.1f}", flush=True)  # fmt: skip
        del det
    if torch.device(args.device).type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")
    return 0


# -- end to end ----------------------------------------------------------------------------------------------------
class OpenCvVideo:
    """``cv2.VideoCapture`` behind cevit.media's video functions, for a machine without PyAV (see the module
    docstring). Frame indices are evenly spaced over the container's frame count (cevit spaces them by time: the
    same frames for a constant frame rate); OpenCV applies a rotation tag itself (reported as 0)."""

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2

    def installed(self) -> contextlib.AbstractContextManager[None]:
        """Patch ``cevit.media`` (the pipeline imports these names from it at call time) while inside."""
        return _media_functions(self.sniff_media_type, self.probe_video, self.sample_frames)

    def _open(self, path: str | os.PathLike[str]) -> Any:
        from cevit.errors import MediaError

        cap = self.cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise MediaError(f"{path}: OpenCV cannot open this video")
        return cap

    def sniff_media_type(self, path: str | os.PathLike[str]) -> str:
        from cevit.media.probe import check_media_file, read_head, sniff_image_format

        p = check_media_file(path)
        if sniff_image_format(read_head(p)) is not None:
            return "image"
        self._open(p).release()
        return "video"

    def probe_video(self, path: str | os.PathLike[str], **_: Any) -> Any:
        from cevit.media import VideoInfo

        cv2 = self.cv2
        cap = self._open(path)
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) or None
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
            fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
            codec = "".join(chr((fourcc >> 8 * k) & 0xFF) for k in range(4)).strip() or "unknown"
            return VideoInfo(width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                             fps=fps, duration=count / fps if fps and count else None, frame_count=count, rotation=0,
                             codec=codec)  # fmt: skip
        finally:
            cap.release()

    def sample_frames(self, path: str | os.PathLike[str], *, num_frames: int = 30, stats: Any = None,
                      check_time: Any = None, **_: Any) -> Iterator[Any]:  # fmt: skip
        from cevit.media import VideoFrame

        cv2 = self.cv2
        cap = self._open(path)
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            targets = set(np.round(np.linspace(0, max(count - 1, 0), num_frames)).astype(int).tolist())
            last = max(targets)
            for index in range(last + 1):
                if check_time is not None:
                    check_time()
                if not cap.grab():
                    break
                if stats is not None:
                    stats.decoded_frames += 1
                if index in targets:
                    ok, bgr = cap.retrieve()
                    if not ok:
                        if stats is not None:
                            stats.frames_failed += 1
                        continue
                    if stats is not None:
                        stats.converted_frames += 1
                    yield VideoFrame(index=index, timestamp=index / fps,
                                     image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))  # fmt: skip
        finally:
            cap.release()


@contextlib.contextmanager
def _media_functions(sniff: Any, probe_video: Any, sample_frames: Any) -> Iterator[None]:
    """``cevit.media``'s ``sniff_media_type``, ``probe_video`` and ``sample_frames`` replaced while inside."""
    import cevit.media as media

    names = ("sniff_media_type", "probe_video", "sample_frames")
    saved = {k: getattr(media, k) for k in names}
    for k, fn in zip(names, (sniff, probe_video, sample_frames)):
        setattr(media, k, fn)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(media, k, v)


def _unpatched() -> contextlib.AbstractContextManager[None]:
    """cevit.media's own video functions inside an :meth:`OpenCvVideo.installed` block."""
    import cevit.media.probe as probe
    import cevit.media.video as video

    return _media_functions(probe.sniff_media_type, video.probe_video, video.sample_frames)


def generate_clip(path: Path, *, seconds: float, fps: int) -> bool:
    """Write the synthetic 1080p clip with OpenCV (mp4v); True when it can be read back with all its frames."""
    import cv2

    n = int(seconds * fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1920, 1080))
    if not writer.isOpened():
        return False
    for i in range(n):
        writer.write(cv2.cvtColor(synthetic_frame(i), cv2.COLOR_RGB2BGR))
    writer.release()
    cap = cv2.VideoCapture(str(path))
    ok = cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == n and cap.read()[0]
    cap.release()
    return bool(ok)


def _pyav_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _clips(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path]]:
    seconds, fps = (1.0, 10) if args.tiny else (10.0, 30)
    clips = []
    generated = tmp / "generated_1080p_mp4v.mp4"
    t0 = time.perf_counter()
    if generate_clip(generated, seconds=seconds, fps=fps):
        print(f"generated a {seconds:.0f} s {fps} fps 1080p mp4v clip with OpenCV in {time.perf_counter() - t0:.1f} s")
        clips.append(("generated 1080p (mp4v)", generated))
    else:
        carried = Path(args.carry) / "clips" / "generated_1080p_h264.mp4"
        print(f"OpenCV could not write mp4v here: using the carried {carried}" if carried.is_file()
              else "OpenCV could not write mp4v here and no clip was carried")  # fmt: skip
        if carried.is_file():
            clips.append(("generated 1080p (H.264, carried)", carried))
    for public in sorted((Path(args.carry) / "clips").glob("*.mp4")):
        if not public.name.startswith("generated") and not args.tiny:
            clips.append((f"public {public.stem}", public))
    return clips


def _repeated(item: Path, *, at_least: int, seconds: float) -> Iterator[Path]:
    """``item`` again and again, read lazily by the batch: at least ``at_least`` times, then until ``seconds`` passed."""
    started, k = time.perf_counter(), 0
    while k < at_least or time.perf_counter() - started < seconds:
        k += 1
        yield item


def cmd_e2e(args: argparse.Namespace) -> int:
    """End-to-end items/min: Detector.analyze_many (the pipelined batch) on 30-frame samples of 1080p clips,
    decoding included; then photos/s."""
    import torch
    from PIL import Image

    from cevit.inference.batch import BatchStats, default_workers
    from cevit.inference.pipeline import load_model

    decoder = args.decoder
    if decoder == "auto":  # --tiny exercises the OpenCV decoding that a machine without PyAV uses
        decoder = "pyav" if _pyav_available() and not args.tiny else "opencv"
    shim = OpenCvVideo() if decoder == "opencv" else None
    frames = 4 if args.tiny else 30
    workers = 1 if args.tiny else (args.workers or default_workers())
    window = 0.0 if args.tiny else args.seconds
    det = load_model(device=args.device, num_frames=frames, precision="auto")  # autocast on a GPU, fp32 on a CPU
    print(f"decoder {decoder}{' (cevit.media patched with OpenCV: no PyAV here)' if shim else ''}; device "
          f"{det.device}, model precision {det.precision}, {frames} frames per video, torch threads "
          f"{torch.get_num_threads()}, CPUs {os.cpu_count()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cevit-gpu-check-") as tmp_name, \
            (shim.installed() if shim else contextlib.nullcontext()):  # fmt: skip
        tmp = Path(tmp_name)
        for label, clip in _clips(args, tmp):
            first = det.analyze(clip)  # warm-up (cudnn autotuning, allocations); also shows the clip works
            if "error" in first:
                print(f"{label}: {first['error']}")
                continue
            print(f"{label}: {first['video']['frame_count']} frames, {first['frames_analyzed']} sampled, "
                  f"{len(first['faces'])} faces, runtime {first['model'].get('runtime')}")  # fmt: skip
            if shim is not None and _pyav_available():  # the same frames as cevit's own (PyAV) sampler?
                ours = [f["index"] for f in first["frame_predictions"]]
                with _unpatched():
                    from cevit.media import sample_frames

                    theirs = [f.index for f in sample_frames(clip, num_frames=frames)]
                print(f"  sampled frames: OpenCV {ours}, PyAV {theirs}: {'same' if ours == theirs else 'DIFFERENT'}")
            one = []
            for _ in range(1 if args.tiny else 3):
                t0 = time.perf_counter()
                r = det.analyze(clip)
                one.append(time.perf_counter() - t0)
            t = r["timings"]
            print(f"  one at a time: {statistics.median(one):.2f} s per video ({60 / statistics.median(one):.0f}/min); "
                  f"stages decode {t['decode']:.2f}, detect {t['detect']:.2f}, preprocess {t['preprocess']:.2f}, "
                  f"model {t['model']:.2f} s")  # fmt: skip
            stats = BatchStats()
            started = time.perf_counter()
            feed = _repeated(clip, at_least=2 if args.tiny else 2 * workers, seconds=window)
            reports = list(det.analyze_many(feed, workers=workers, stats=stats))
            seconds = time.perf_counter() - started
            errors = sum("error" in r for r in reports)
            rate = len(reports) / seconds * 60
            print(f"  pipelined, workers={stats.workers}: {len(reports)} videos in {seconds:.1f} s = {rate:.0f} "
                  f"videos/min, errors {errors}, model calls {stats.model_calls} ({stats.faces_scored} faces)")  # fmt: skip
            if not args.tiny:
                print(f"  target >= {VIDEOS_PER_MINUTE_TARGET} thirty-frame videos/min end to end: "
                      f"{'met' if rate >= VIDEOS_PER_MINUTE_TARGET else 'NOT met'}")  # fmt: skip
        n_photos = 4 if args.tiny else 40
        paths = []
        for i in range(n_photos):
            p = tmp / f"p{i}.jpg"
            Image.fromarray(synthetic_frame(i * 7)).save(p, quality=90)
            paths.append(p)
        for w in (0, workers):
            t0 = time.perf_counter()
            reports = list(det.analyze_many(paths, workers=w))
            print(f"{n_photos} 1080p photos, workers={w}: {n_photos / (time.perf_counter() - t0):.1f} photos/s, "
                  f"errors {sum('error' in r for r in reports)}", flush=True)  # fmt: skip
    return 0


# -- training ------------------------------------------------------------------------------------------------------
def _train_config(args: argparse.Namespace, index: Path, out: Path) -> Path:
    import yaml

    model: dict[str, Any] = {"preset": args.preset, "init": "random"}
    if args.tiny:
        model["overrides"] = TINY_MODEL
    config = {
        "model": model,
        "data": {"indexes": [str(index)], "mode": "sbi", "val_fraction": 0.0, "index_repeats": [args.repeats]},
        "schedule": {"name": "cosine", "warmup_epochs": 1.0, "min_lr_ratio": 0.01},
        "train": {"epochs": 30, "batch_size": args.batch, "amp": "bf16", "channels_last": True, "ema_decay": 0.999,
                  "seed": 0, "log_every_steps": args.log_every, "save_every_steps": 0},
        "output_dir": str(out / "unused"),
    }  # fmt: skip
    path = out / "train.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _cevit_train(config: Path, out: Path, device: str, max_steps: int, *, resume: bool = False) -> float:
    """``cevit train`` in a child process (as a user runs it); returns its wall time."""
    cmd = [sys.executable, "-m", "cevit.cli.main", "train", "--config", str(config), "--output-dir", str(out),
           "--device", device, "--max-steps", str(max_steps), "--no-progress"] + (["--resume"] if resume else [])  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"cevit train failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return seconds


def _log_rows(out: Path) -> list[dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    with open(out / "log.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(float(row["step"]))
            if step not in rows and row["seconds"]:
                rows[step] = {"step": step, "seconds": float(row["seconds"]),
                              "train_loss": float(row["train_loss"]) if row["train_loss"] else float("nan")}  # fmt: skip
    return [rows[k] for k in sorted(rows)]


def _model_state(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def cmd_train(args: argparse.Namespace) -> int:
    """``cevit train`` images/s with its data pipeline (SBI mode, augmentations, DataLoader workers, bf16 on CUDA),
    then a resume check: k steps, stop, resume to 2k, against 2k uninterrupted steps."""
    import torch

    if args.tiny:
        args.batch, args.steps, args.log_every, args.repeats = 4, 4, 1, 2
    k = args.steps // 2
    with tempfile.TemporaryDirectory(prefix="cevit-gpu-train-") as tmp_name:
        tmp = Path(tmp_name)
        index = Path(args.carry) / "faces" / "index.csv"
        if not index.is_file():
            rows = _generated_faces(tmp / "faces", count=64)
            index = tmp / "faces" / "index.csv"
            from cevit.data import INDEX_COLUMNS

            with open(index, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows([list(INDEX_COLUMNS), *rows])
            print(f"no carried face index: {len(rows)} generated faces")
        with open(index, newline="") as fh:
            n_faces = sum(1 for _ in csv.DictReader(fh))
        config = _train_config(args, index, tmp)
        preset = "tiny (64 px)" if args.tiny else args.preset
        print(f"cevit train: {preset}, random init, sbi mode, {n_faces} real faces x {args.repeats} repeats, "
              f"batch {args.batch}, bf16 autocast on CUDA, EMA, device {args.device}, {args.steps} steps")  # fmt: skip
        a_out, b_out = tmp / "a", tmp / "b"
        wall = _cevit_train(config, a_out, args.device, args.steps)
        rows = _log_rows(a_out)
        skip = max(1, len(rows) // 4)  # leave out the first rows: worker start-up, cudnn autotuning
        first, last = rows[skip - 1], rows[-1]
        if last["step"] > first["step"]:
            rate = (last["step"] - first["step"]) * args.batch / (last["seconds"] - first["seconds"])
            print(f"images/s including the data pipeline: {rate:.1f} (steps {first['step']}-{last['step']}, "
                  f"{last['seconds'] - first['seconds']:.1f} s); whole command {wall:.1f} s for {args.steps} steps")  # fmt: skip
        _cevit_train(config, b_out, args.device, k)
        shutil.copy2(b_out / "train_state.pt", tmp / "b_k.pt")
        _cevit_train(config, b_out, args.device, args.steps, resume=True)
        sa, sb = _model_state(a_out / "train_state.pt"), _model_state(b_out / "train_state.pt")
        sk = _model_state(tmp / "b_k.pt")
        keys = [n for n, v in sa.items() if v.is_floating_point()]
        diff = max((sa[n].float() - sb[n].float()).abs().max().item() for n in keys)
        moved = torch.sqrt(sum(((sb[n].float() - sk[n].float()) ** 2).sum() for n in keys)).item()
        apart = torch.sqrt(sum(((sa[n].float() - sb[n].float()) ** 2).sum() for n in keys)).item()
        identical = all(torch.equal(sa[n], sb[n]) for n in sa)
        la, lb = _log_rows(a_out)[-1]["train_loss"], _log_rows(b_out)[-1]["train_loss"]
        ratio = apart / moved if moved > 0 else float("inf")
        ok = identical or ratio <= 0.1
        print(f"resume check: {k} steps, stop, resume to {args.steps} vs {args.steps} uninterrupted: "
              f"{'bitwise identical weights' if identical else f'max |dw| {diff:.3g}'}; |w_a - w_b| / |w_b - w_k| "
              f"= {ratio:.3g} (the part of the resumed steps' weight change that differs; pass <= 0.1); last logged "
              f"train loss {la:.5f} vs {lb:.5f} -> {'PASS' if ok else 'FAIL'}")  # fmt: skip
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("section", choices=("prepare", "model", "mtcnn", "e2e", "train"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (the script's --dry-run on the CPU)")
    p.add_argument("--carry", default=str(ROOT / ".gpu_carry"), help="what prepare writes and the sections read")
    p.add_argument("--faces", default=str(ROOT / "data" / "lfw_faces"),
                   help="prepare: a face index folder (cevit extract-faces) to take real faces from; without one, "
                   "generated faces")  # fmt: skip
    p.add_argument("--faces-count", type=int, default=160, help="prepare: faces to carry")
    p.add_argument("--decoder", choices=("auto", "pyav", "opencv"), default="auto", help="e2e: video decoding")
    p.add_argument("--workers", type=int, default=None, help="e2e: pipelined workers (default: cores - 1)")
    p.add_argument("--seconds", type=float, default=15.0, help="e2e: seconds of pipelined analysis per clip")
    p.add_argument("--preset", default="cross_efficient_vit_v1", help="train: the model (default: the recipe's)")
    p.add_argument("--batch", type=int, default=32, help="train: batch size (default: the recipe's 32)")
    p.add_argument("--steps", type=int, default=40, help="train: steps of the uninterrupted run (resume at half)")
    p.add_argument("--log-every", type=int, default=5, help="train: log.csv rows every N steps")
    p.add_argument("--repeats", type=int, default=16, help="train: index_repeats (one epoch must hold --steps)")
    args = p.parse_args(argv)
    commands = {"prepare": cmd_prepare, "model": cmd_model, "mtcnn": cmd_mtcnn, "e2e": cmd_e2e, "train": cmd_train}
    return commands[args.section](args)


if __name__ == "__main__":
    sys.exit(main())
