"""End-to-end analysis: media → MTCNN faces → crops → the model → aggregation → JSON report.

>>> from cevit import load_model
>>> detector = load_model()        # the bundled default weights; loads once, reuse for many files
>>> report = detector.analyze(media_path="clip.mp4")             # a dict: the JSON report (schema 1.2)
>>> result = detector.analyze_result("clip.mp4")                 # the same as a typed Analysis (.to_dict())
>>> for report in detector.analyze_many(["a.jpg", "b.mp4"]): ...  # yields reports as they finish

Videos are processed in chunks of sampled frames (decode → detect → crop), so memory stays bounded by the
chunk size; all faces of one item then go through the model in as few batched forward passes as possible.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cevit.errors import CevitError, CheckpointError, ConfigError, FaceDetectionError, ModelError
from cevit.inference.aggregation import DEFAULT_RULE, AggregationRule, aggregate, get_rule
from cevit.inference.results import Analysis, AnalysisError, Face, FrameRecord
from cevit.limits import (
    DEFAULT_MAX_FACES_PER_FRAME,
    DEFAULT_MAX_ITEM_MEMORY_MB,
    DEFAULT_MAX_ITEM_SECONDS,
    DEFAULT_MAX_VIDEO_SECONDS,
    Deadline,
    check_faces,
    check_item_memory,
    check_limit_value,
    check_video_duration,
)
from cevit.media.image import DEFAULT_MAX_PIXELS
from cevit.media.probe import DEFAULT_MAX_FRAME_PIXELS
from cevit.models.cross_efficient_vit import CrossEfficientViT
from cevit.models.pretrained import Calibration, InferenceConfig, PretrainedWeights
from cevit.preprocess import FacePreprocessor

if TYPE_CHECKING:
    from cevit.inference.batch import BatchStats
    from cevit.models.onnx import OnnxRuntimeModel

__all__ = [
    "AnalyzeOptions",
    "Detector",
    "load_model",
    "load_weights",
    "bundled_weights_path",
    "resolve_device",
    "resolve_precision",
    "PRECISIONS",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: What runs the model part: PyTorch, or ONNX Runtime on an exported model (:mod:`cevit.models.onnx`).
BACKENDS = ("torch", "onnxruntime")
#: The model's arithmetic: ``fp32`` (the default), ``auto`` (bf16 autocast on a CUDA GPU that supports it, else fp16
#: on CUDA; fp32 on the CPU), or ``bf16`` / ``fp16`` autocast (:func:`resolve_precision`). Face detection always runs
#: in fp32. fp32 stays the default until mixed precision is checked on a GPU: with the CPU's autocast, bf16 moved the
#: default weights' logits by up to 0.073 (the issue's bound is 1e-2), fp16 by up to 0.0094.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True, kw_only=True)
class AnalyzeOptions:
    """Settings of the analysis pipeline (the model's preprocessing contract is separate and fixed)."""

    num_frames: int = 30
    rule: AggregationRule = field(default_factory=lambda: DEFAULT_RULE)
    batch_size: int = 32  # faces per forward pass
    frame_chunk: int = 8  # video frames decoded and detected together
    frame_chunk_pixels: int = 100_000_000  # ... or fewer, once the chunk's frames hold this many pixels
    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse images above this (decompression bombs), before decoding
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS  # refuse videos with larger frames, from the stream header
    detector_max_side: int = 1280  # detect on a copy downscaled to this longer side
    min_face_size: int = 20
    detector_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    detector_factor: float = 0.709
    # the resource policy per item (cevit.limits); None switches a limit off
    max_item_seconds: float | None = DEFAULT_MAX_ITEM_SECONDS  # wall time of one item
    max_video_seconds: float | None = DEFAULT_MAX_VIDEO_SECONDS  # declared duration, checked before sampling
    max_faces_per_frame: int | None = DEFAULT_MAX_FACES_PER_FRAME  # faces in one frame or image
    max_item_memory_mb: float | None = DEFAULT_MAX_ITEM_MEMORY_MB  # estimated decoded pixels held at once
    precision: str = "fp32"  # the model's arithmetic, one of PRECISIONS (see resolve_precision)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("max_item_seconds", "max_video_seconds", "max_item_memory_mb"):
            check_limit_value(name, getattr(self, name))
        check_limit_value("max_faces_per_frame", self.max_faces_per_frame, integer=True)
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.batch_size < 1 or self.frame_chunk < 1:
            raise ConfigError("batch_size and frame_chunk must be >= 1")
        for name in ("max_pixels", "max_frame_pixels", "frame_chunk_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``/``"cuda:N"`` or ``"mps"``; anything else,
    or a device that is not available, raises :class:`~cevit.errors.ConfigError`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {str(device)!r}; use auto, cpu or cuda (cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but CUDA is not available; use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {str(device)!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was requested but it is not available; use --device cpu or auto")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {str(device)!r} is not supported; use auto, cpu or cuda (cuda:N)")
    return dev


def _cuda_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` runs bf16 natively (compute capability 8.0+: Ampere, Hopper, ...); an older GPU
    only emulates it, slower than fp16."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: str | torch.device, *, backend: str = "torch") -> str:
    """The arithmetic the model runs in on ``device``: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``auto``: bf16 autocast on a CUDA GPU with native bf16, fp16 autocast on an older CUDA GPU, fp32 everywhere
    else (on a CPU, bf16 is slower than fp32 unless the CPU has bf16 instructions: ask for it explicitly).
    ``bf16`` / ``fp16``: :func:`torch.autocast` on CUDA or the CPU (bf16 on a GPU without native bf16 is refused).
    The onnxruntime backend runs the exported fp32 model: ``auto`` means fp32 there, ``bf16`` / ``fp16`` are
    refused. Raises :class:`~cevit.errors.ConfigError` for an unknown value or a combination that cannot run.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    if backend != "torch":
        if precision in ("auto", "fp32"):
            return "fp32"
        raise ConfigError(f"precision {precision} needs the torch backend: the {backend} backend runs the exported "
                          "fp32 model (use precision fp32 or auto)")  # fmt: skip
    if precision == "auto":
        if dev.type == "cuda":
            return "bf16" if _cuda_bf16(dev) else "fp16"
        return "fp32"
    if precision == "fp32":
        return "fp32"
    if dev.type == "cuda":
        if precision == "bf16" and not _cuda_bf16(dev):
            raise ConfigError(f"precision bf16: {torch.cuda.get_device_name(dev)} has no native bf16; use fp16")
        return precision
    if dev.type == "cpu":
        return precision
    raise ConfigError(f"precision {precision} is not supported on {dev.type}; use fp32 (or auto)")


_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def bundled_weights_path(name: str | None = None) -> Path | None:
    """The file shipped inside the package for the weights ``name`` (``architecture.tag``, an architecture, or a
    deprecated name; default: the default weights), or None when those weights are not bundled."""
    from cevit.models.pretrained import DEFAULT_WEIGHTS, deprecated, get_pretrained

    name = name or DEFAULT_WEIGHTS
    old = deprecated(name)
    if old is not None:
        name = old[1]
    try:
        weights = get_pretrained(name)
    except ModelError:
        return None
    if weights.file is None:
        return None
    ref = resources.files("cevit").joinpath("weights", weights.file)
    try:
        with resources.as_file(ref) as path:
            return Path(path) if Path(path).is_file() else None
    except (FileNotFoundError, ModuleNotFoundError):
        return None


def load_weights(path: str | Path) -> CrossEfficientViT:
    """A cevit checkpoint (safetensors) or the authors' ``.pth`` (converted on the fly), by the file's content.

    Every failure (missing, empty, unreadable, a directory, not a checkpoint, refused as unsafe, not matching
    the model) raises :class:`~cevit.errors.CheckpointError` naming the file and saying what is wrong.
    """
    from cevit.checkpoint import load_checkpoint
    from cevit.convert import load_original_checkpoint

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weights file does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a weights file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise CheckpointError(f"{path}: weights file cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not head:
        raise CheckpointError(f"{path}: empty weights file (0 bytes)")
    # safetensors: a little-endian u64 header length, then the JSON header ("{"); a file named .safetensors is
    # read as one too (and fails with safetensors' reason). Everything else (a zip from torch.save, a legacy
    # pickle) is treated as the authors' PyTorch checkpoint, loaded with weights_only=True.
    as_safetensors = (len(head) == 9 and head[8:9] == b"{") or path.suffix.lower() == ".safetensors"
    try:
        return load_checkpoint(path) if as_safetensors else load_original_checkpoint(path)
    except CevitError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a hostile file triggers, the user gets a CheckpointError
        log.debug("loading %s failed", path, exc_info=True)
        raise CheckpointError(f"{path}: cannot be loaded as model weights ({type(exc).__name__})") from None


@dataclass
class _Kept:
    """What explanations need from one analysis (only kept when they are asked for): the face crops in scoring
    order, and for an image the image itself; a video's frame to annotate is decoded again afterwards (one
    frame, instead of holding every sampled frame in memory)."""

    crops: list[np.ndarray] = field(default_factory=list)
    image: np.ndarray | None = None
    num_frames: int = 0


#: Longer side of the frame copies kept for the annotated image of an explained analysis.
EXPLAIN_FRAME_SIDE = 1280


class Detector:
    """A loaded model plus face detector: call :meth:`analyze` for one file, :meth:`analyze_many` for several.

    ``options.precision`` (:func:`resolve_precision`, resolved for ``device`` into :attr:`precision`) sets the
    model's arithmetic: bf16/fp16 run the model under :func:`torch.autocast` (scores come back as float32); the
    face detector and explanations (Grad-CAM, attention maps) always run in fp32. The report's ``model.runtime``
    block says how it was computed: ``{"backend", "device", "precision"}``.
    """

    def __init__(
        self, *, model: CrossEfficientViT | OnnxRuntimeModel, device: str | torch.device = "auto", options: AnalyzeOptions | None = None,
        name: str | None = None, checkpoint_path: str | Path | None = None, weights_tag: str | None = None,
        calibration: Calibration | None = None, owns_model: bool = False,
    ) -> None:  # fmt: skip
        """``owns_model=True``: the detector may change ``model`` in place (BatchNorm folding) instead of copying it;
        for a model nobody else uses (``load_model`` passes it for the model it loads)."""
        from cevit.faces import MTCNN
        from cevit.models.optimize import optimize_for_inference

        self.device = resolve_device(device)
        self.options = options or AnalyzeOptions()
        #: "torch", or "onnxruntime" for an exported model (:class:`cevit.models.onnx.OnnxRuntimeModel`)
        self.backend = getattr(model, "backend", "torch")
        #: the model's arithmetic in use: "fp32", "bf16" or "fp16" (``options.precision`` resolved for the device)
        self.precision = resolve_precision(self.options.precision, self.device, backend=self.backend)
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.preprocessing = model.preprocessing
        #: the checkpoint's contract as the one crop -> resize -> tensor path (shared with training and evaluation)
        self.preprocessor = FacePreprocessor(spec=model.preprocessing)
        #: P(fake) = sigmoid(logit / temperature) (temperature 1: the model's own probability)
        self.calibration = calibration or Calibration()
        info = getattr(model, "checkpoint_info", None)
        self.model_info = {
            "name": name or model.preset_name or "custom",
            "preset": model.preset_name,
            "checkpoint_sha256": info.sha256 if info is not None else None,
            "weights_tag": weights_tag,
            "calibration": {"method": self.calibration.method, "temperature": self.calibration.temperature},
            "runtime": {"backend": self.backend, "device": str(self.device), "precision": self.precision},
        }
        if isinstance(model, torch.nn.Module):
            self.model = optimize_for_inference(model.eval(), inplace=owns_model).to(self.device)
        else:  # a ready-made scorer: preprocessed batch (N, 3, S, S) -> logits (N, 1)
            self.model = model
        o = self.options
        self.face_detector = MTCNN(
            min_face_size=o.min_face_size, thresholds=o.detector_thresholds, factor=o.detector_factor,
            max_side=o.detector_max_side, device=str(self.device),
        )  # fmt: skip

    # -- model --------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_faces(self, faces: list[np.ndarray]) -> list[float]:
        """P(fake) for resized face crops (S, S, 3) uint8 RGB, in batches of ``options.batch_size``.

        The torch backend copies each batch to the device as uint8 (pinned memory on CUDA) and converts it there;
        with :attr:`precision` bf16/fp16 the model runs under autocast and its logits are taken back as float32.
        """
        scores: list[float] = []
        amp = _AMP_DTYPES.get(self.precision)
        for start in range(0, len(faces), self.options.batch_size):
            batch = faces[start : start + self.options.batch_size]
            if self.backend == "torch":
                x = self.preprocessor.to_tensor(batch, device=self.device)
            else:  # ONNX Runtime takes the CPU tensor (its session moves it to its provider)
                x = self.preprocessor.to_tensor(batch).to(self.device)
            if amp is None:
                logits = self.model(x).float()
            else:
                with torch.autocast(device_type=self.device.type, dtype=amp):
                    logits = self.model(x)
                logits = logits.float()
            if self.calibration.temperature != 1.0:
                logits = logits / self.calibration.temperature
            scores.extend(torch.sigmoid(logits).squeeze(1).tolist())
        return scores

    def _score_item(self, crops: list[np.ndarray]) -> list[float]:
        """An item's face scores: :meth:`score_faces`, or inside a pipelined batch or a service worker
        (:class:`cevit.inference.batch.SharedScorer`) the shared model thread, which scores the faces of several
        items together."""
        from cevit.inference.batch import item_scorer

        scorer = item_scorer()
        return self.score_faces(crops) if scorer is None else scorer(crops)

    # -- pipeline -------------------------------------------------------------------------------------------
    def _detect_and_crop(
        self, frames: list[np.ndarray], frame_ids: list[int], timings: dict[str, float],
        faces_out: list[tuple[int, int, Any]], crops_out: list[np.ndarray], *, source: str, video: bool,
    ) -> None:  # fmt: skip
        t0 = time.perf_counter()
        try:
            detections = self.face_detector.detect(frames)
        except CevitError:
            raise
        except Exception as exc:  # a detector bug must not kill a batch of files
            raise FaceDetectionError(f"face detection failed: {exc}") from exc
        t1 = time.perf_counter()
        for frame_id, found in zip(frame_ids, detections):
            check_faces(source, frame_id, len(found), self.options.max_faces_per_frame, video=video)
        for frame, frame_id, found in zip(frames, frame_ids, detections):
            for face_index, face in enumerate(found):
                try:
                    crop = self.preprocessor.crop(frame, face.box)
                except ValueError as exc:  # degenerate box
                    log.debug("skipping face %s: %s", face.box, exc)
                    continue
                faces_out.append((frame_id, face_index, face))
                crops_out.append(crop)
        timings["detect"] += t1 - t0
        timings["preprocess"] += time.perf_counter() - t1

    def _finish(
        self, faces: list[tuple[int, int, Any]], crops: list[np.ndarray], timings: dict[str, float]
    ) -> list[Face]:
        t0 = time.perf_counter()
        scores = self._score_item(crops)
        timings["model"] += time.perf_counter() - t0
        records = [
            Face(frame_index=fi, face_index=k, box=tuple(f.box), landmarks=tuple(f.landmarks),
                 detection_probability=f.probability, score=s)
            for (fi, k, f), s in zip(faces, scores)
        ]  # fmt: skip
        return records

    def _explain(self, result: Analysis, kept: _Kept, method: str) -> Analysis:
        """``result`` with heat maps of its faces (``kept.crops`` are in the order of ``result.faces``) and the
        frame to annotate: the image, or the video frame of the highest face score."""
        from cevit.explain.maps import Explanations, FaceExplanation, face_heatmaps
        from cevit.inference.batch import model_guard

        t0 = time.perf_counter()
        with model_guard():  # inside a shared scorer's use(): no shared model call runs during the gradient passes
            maps = face_heatmaps(self.model, kept.crops, preprocessing=self.preprocessing, method=method,
                                 device=self.device)  # fmt: skip
        faces = tuple(
            FaceExplanation(frame_index=f.frame_index, face_index=f.face_index, score=f.score, heatmap=m, crop=c)
            for f, m, c in zip(result.faces, maps, kept.crops)
        )  # fmt: skip
        best = max(result.faces, key=lambda f: f.score).frame_index if result.faces else None
        frame = kept.image
        if result.media_type == "video":
            best = result.frames[0].index if best is None else best
            frame = self._decode_frame(result.source, kept.num_frames, best)
        else:
            best = 0
        scale = 1.0
        if frame is not None and max(frame.shape[:2]) > EXPLAIN_FRAME_SIDE:
            import cv2

            scale = EXPLAIN_FRAME_SIDE / max(frame.shape[:2])
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        seconds = time.perf_counter() - t0
        timings = dataclasses.replace(result.timings, total=result.timings.total + seconds,
                                      extra={**result.timings.extra, "explain": seconds})  # fmt: skip
        explanations = Explanations(method=method, faces=faces, frame=frame, frame_index=best, frame_scale=scale,
                                    seconds=seconds)  # fmt: skip
        return dataclasses.replace(result, explanations=explanations, timings=timings)

    def _decode_frame(self, source: str, num_frames: int, index: int) -> np.ndarray | None:
        """The sampled frame ``index`` of a video, decoded again (None, logged, when that fails)."""
        from cevit.media import sample_frames

        try:
            for frame in sample_frames(source, num_frames=num_frames, max_frame_pixels=self.options.max_frame_pixels):
                if frame.index == index:
                    return frame.image
        except CevitError as exc:
            log.warning("%s: frame %d could not be decoded again for the annotated image: %s", source, index, exc)
        return None

    def analyze(
        self, media_path: str | Path, *, num_frames: int | None = None, threshold: float | None = None,
        rule: str | AggregationRule | None = None, progress: Progress | None = None, explain: bool | str = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Analyse one image or video and return its JSON report: a dict, ``analyze_result(...).to_dict()``.

        ``num_frames``: frames sampled per video (None: ``options.num_frames``; below 1: ConfigError).
        ``explain``: see :meth:`analyze_result` (the report then has an ``explanations`` block).
        Raises a :class:`~cevit.errors.CevitError` subclass on bad input.
        """
        return self.analyze_result(
            media_path, num_frames=num_frames, threshold=threshold, rule=rule, progress=progress, explain=explain
        ).to_dict()

    def analyze_result(
        self, media_path: str | Path, *, num_frames: int | None = None, threshold: float | None = None,
        rule: str | AggregationRule | None = None, progress: Progress | None = None, explain: bool | str = False,
    ) -> Analysis:  # fmt: skip
        """Analyse one image or video and return the typed :class:`~cevit.inference.results.Analysis`.

        ``explain``: False (default: no gradients, nothing kept), True (the default method) or a method name of
        :mod:`cevit.explain` ("gradcam", "attention"): ``result.explanations`` then holds a heat map per face
        (arrays) and the frame to annotate; :func:`cevit.explain.render.write_explanations` writes the PNGs.
        """
        from cevit.media import sniff_media_type

        method = None
        if explain is not False:
            from cevit.explain.maps import check_method

            method = check_method(explain)
        kept = _Kept() if method is not None else None
        start = time.perf_counter()
        num_frames = self._num_frames(num_frames)
        agg = self._rule(rule, threshold)
        source = str(media_path)
        timings = {"decode": 0.0, "detect": 0.0, "preprocess": 0.0, "model": 0.0}
        t0 = time.perf_counter()
        deadline = Deadline(source=source, seconds=self.options.max_item_seconds)
        kind = sniff_media_type(media_path)
        timings["decode"] += time.perf_counter() - t0
        if kind == "image":
            result = self._analyze_image(source, agg, timings, start, deadline, kept)
        else:
            result = self._analyze_video(source, agg, timings, start, num_frames, progress, deadline, kept)
        return result if kept is None or method is None else self._explain(result, kept, method)

    def _num_frames(self, num_frames: int | None) -> int:
        """``num_frames`` checked (None: the default); 0 is an error, not "the default"."""
        if num_frames is None:
            return self.options.num_frames
        if not isinstance(num_frames, numbers.Integral) or isinstance(num_frames, bool) or num_frames < 1:
            raise ConfigError(f"num_frames must be an integer >= 1 (or None for the default), got {num_frames!r}")
        return int(num_frames)

    def _rule(self, rule: str | AggregationRule | None, threshold: float | None) -> AggregationRule:
        if rule is None:
            base = self.options.rule
        elif isinstance(rule, AggregationRule):
            base = rule
        else:
            base = get_rule(rule)
        if threshold is None:
            return base
        return get_rule(base.name, face_threshold=base.face_threshold, label_threshold=threshold)

    def _analyze_image(
        self, source: str, agg: AggregationRule, timings: dict[str, float], start: float, deadline: Deadline,
        kept: _Kept | None = None,
    ) -> Analysis:  # fmt: skip
        from cevit.media import load_image, probe_image

        t0 = time.perf_counter()
        header = probe_image(source)
        if header.pixels <= self.options.max_pixels:  # above it, load_image refuses it by the pixel limit
            check_item_memory(source, header.width, header.height, frames_held=1,
                              limit_mb=self.options.max_item_memory_mb)  # fmt: skip
        image = load_image(source, max_pixels=self.options.max_pixels)
        timings["decode"] += time.perf_counter() - t0
        deadline.check("decoding the image")
        faces: list[tuple[int, int, Any]] = []
        crops: list[np.ndarray] = []
        self._detect_and_crop([image], [0], timings, faces, crops, source=source, video=False)
        deadline.check("detecting faces")
        if kept is not None:
            kept.crops, kept.image = crops, image
        records = self._finish(faces, crops, timings)
        verdict = aggregate([(r.frame_index, r.face_index, r.score) for r in records], agg)
        timings["total"] = time.perf_counter() - start
        h, w = image.shape[:2]
        return Analysis.for_image(source=source, width=w, height=h, verdict=verdict, faces=records, rule=agg,
                                  model_info=self.model_info, timings=timings)  # fmt: skip

    def _analyze_video(
        self, source: str, agg: AggregationRule, timings: dict[str, float], start: float, num_frames: int,
        progress: Progress | None, deadline: Deadline, kept: _Kept | None = None,
    ) -> Analysis:  # fmt: skip
        from cevit.errors import MediaError
        from cevit.media import DecodeStats, probe_video, sample_frames

        t0 = time.perf_counter()
        o = self.options
        info = probe_video(source, max_frame_pixels=o.max_frame_pixels, check_time=deadline)
        check_video_duration(source, info.duration, o.max_video_seconds)
        frame_px = max(1, info.width * info.height)
        held = min(o.frame_chunk, num_frames, -(-o.frame_chunk_pixels // frame_px))  # frames a chunk holds at most
        check_item_memory(source, info.width, info.height, frames_held=held, limit_mb=o.max_item_memory_mb)
        stats = DecodeStats()
        frames_meta: list[FrameRecord] = []
        faces: list[tuple[int, int, Any]] = []
        crops: list[np.ndarray] = []
        chunk: list[np.ndarray] = []
        chunk_ids: list[int] = []
        width, height = info.width, info.height
        total = min(num_frames, info.frame_count) if info.frame_count else num_frames
        iterator = iter(sample_frames(source, num_frames=num_frames, stats=stats,
                                      max_frame_pixels=self.options.max_frame_pixels, check_time=deadline))  # fmt: skip
        chunk_pixels = 0
        timings["decode"] += time.perf_counter() - t0
        while True:
            t0 = time.perf_counter()
            frame = next(iterator, None)
            timings["decode"] += time.perf_counter() - t0
            if frame is not None:
                frames_meta.append(FrameRecord(index=frame.index, timestamp=frame.timestamp))
                chunk.append(frame.image)
                chunk_ids.append(frame.index)
                height, width = frame.image.shape[:2]
                chunk_pixels += width * height
            if chunk and (frame is None or len(chunk) >= self.options.frame_chunk
                          or chunk_pixels >= self.options.frame_chunk_pixels):  # fmt: skip
                self._detect_and_crop(chunk, chunk_ids, timings, faces, crops, source=source, video=True)
                deadline.check("detecting faces")
                chunk, chunk_ids, chunk_pixels = [], [], 0
                if progress is not None:
                    progress(len(frames_meta), max(total, len(frames_meta)))
            if frame is None:
                break
        if not frames_meta:
            raise MediaError(f"{source}: no decodable frames")
        if kept is not None:
            kept.crops, kept.num_frames = crops, num_frames
        records = self._finish(faces, crops, timings)
        verdict = aggregate([(r.frame_index, r.face_index, r.score) for r in records], agg)
        if stats.frames_failed:  # a damaged video must not read as a clean one
            verdict = dataclasses.replace(verdict, note=(
                f"{verdict.note}; {stats.frames_failed} of {len(frames_meta) + stats.frames_failed} sampled frames "
                "could not be decoded (damaged video)"))  # fmt: skip
        timings["total"] = time.perf_counter() - start
        video_info = {"fps": info.fps, "duration": info.duration, "frame_count": info.frame_count,
                      "rotation": info.rotation, "codec": info.codec}  # fmt: skip
        return Analysis.for_video(source=source, width=width, height=height, frames=frames_meta, verdict=verdict,
                                  faces=records, rule=agg, model_info=self.model_info, timings=timings,
                                  video_info=video_info, frames_failed=stats.frames_failed)  # fmt: skip

    def analyze_many(
        self, paths: Iterable[str | Path], *, num_frames: int | None = None, threshold: float | None = None,
        rule: str | AggregationRule | None = None, progress: Progress | None = None, workers: int | None = None,
        unordered: bool = False, stats: BatchStats | None = None, explain: bool | str = False,
    ) -> Iterator[dict[str, Any]]:  # fmt: skip
        """Yield one report (dict) per path; a failing item yields an error report
        (``{"schema_version", "source", "error", "error_type"}``), never stops the batch.

        Pipelined (:mod:`cevit.inference.batch`): ``workers`` files are decoded and face-detected while the
        model scores the faces of earlier ones, several files' faces per model call; ``paths`` is read lazily and
        only a bounded number of items is in flight. ``workers``: None = the machine's cores minus one (at least
        1); 0 = one file after another in the calling thread. Reports come in input order, or as they finish with
        ``unordered=True``. ``stats`` (a :class:`~cevit.inference.batch.BatchStats`) is filled while it runs.
        ``explain`` (see :meth:`analyze_result`): heat maps per item; explained items are analysed one after
        another (the gradient passes need the model to themselves), so ``workers`` is then ignored.
        """
        for result in self.analyze_many_results(paths, num_frames=num_frames, threshold=threshold, rule=rule,
                                                progress=progress, workers=workers, unordered=unordered,
                                                stats=stats, explain=explain):  # fmt: skip
            yield result.to_dict()

    def analyze_many_results(
        self, paths: Iterable[str | Path], *, num_frames: int | None = None, threshold: float | None = None,
        rule: str | AggregationRule | None = None, progress: Progress | None = None, workers: int | None = None,
        unordered: bool = False, stats: BatchStats | None = None, explain: bool | str = False,
    ) -> Iterator[Analysis | AnalysisError]:  # fmt: skip
        """Like :meth:`analyze_many`, yielding :class:`Analysis` or, for a failed item, :class:`AnalysisError`.

        Invalid arguments (``num_frames`` < 1, an unknown rule, a threshold outside [0, 1], ``workers`` < 0)
        raise ConfigError before the first item, instead of failing every item.
        """
        from cevit.inference.batch import analyze_pipelined

        num_frames = self._num_frames(num_frames)
        agg = self._rule(rule, threshold)
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ConfigError(f"workers must be an integer >= 0 (0: no pipelining), got {workers!r}")
        if explain is not False:
            from cevit.explain.maps import check_method

            explain = check_method(explain)
        if workers != 0 and explain is False:
            return analyze_pipelined(self, paths, num_frames=num_frames, rule=agg, progress=progress,
                                     workers=workers, unordered=unordered, stats=stats)  # fmt: skip
        return self._analyze_sequentially(paths, num_frames=num_frames, rule=agg, progress=progress, explain=explain)

    def _analyze_sequentially(
        self, paths: Iterable[str | Path], *, num_frames: int, rule: AggregationRule, progress: Progress | None,
        explain: bool | str = False,
    ) -> Iterator[Analysis | AnalysisError]:  # fmt: skip
        agg = rule
        for path in paths:
            try:
                yield self.analyze_result(path, num_frames=num_frames, rule=agg, progress=progress, explain=explain)
            except CevitError as exc:  # the error is in the yielded report: no log record above DEBUG
                log.debug("%s", exc)
                yield AnalysisError.from_exception(str(path), exc)
            except Exception as exc:  # noqa: BLE001 - a batch always finishes the other items
                log.debug("unexpected error while analysing %s", path, exc_info=True)
                yield AnalysisError.from_exception(str(path), RuntimeError(f"{path}: internal error: {exc}"))


@dataclass(frozen=True, kw_only=True)
class ResolvedWeights:
    """Where the weights of a :func:`load_model` / ``cevit export`` call come from."""

    path: Path  #: the file
    registered: PretrainedWeights | None  #: the registry entry named (or the default), None for a user's file
    from_registry: bool  #: True when the file is the bundled file of ``registered`` (its SHA-256 is checked)
    display: str  #: the name reports show (the tag, or the file's name)


def resolve_weights(name: str | None, weights: str | Path | None) -> ResolvedWeights:
    """The file of the registered weights ``name`` (``architecture.tag``; default: the bundled default; old names
    with a deprecation message) or the user's file ``weights``. Raises ModelError for unknown or unbundled names."""
    from cevit.models.pretrained import DEFAULT_WEIGHTS, deprecated, get_pretrained

    registered = None
    if name is not None:
        old = deprecated(name)
        registered = get_pretrained(old[1] if old is not None else name)
    if weights is not None:
        path = Path(weights)
        return ResolvedWeights(path=path, registered=registered, from_registry=False, display=path.name)
    registered = registered or get_pretrained(DEFAULT_WEIGHTS)
    if registered.file is None:
        raise ModelError(
            f"the weights {registered.name!r} are not bundled with cevit; pass weights=PATH (CLI: --weights PATH) "
            "with the file (for coccomini2022.dfdc: the authors' cross_efficient_vit.pth)"
        )
    path = bundled_weights_path(registered.name)
    if path is None:
        raise ModelError(
            f"no trained weights are bundled for {registered.name!r} in this installation of cevit; "
            "pass weights=PATH (CLI: --weights PATH) with a cevit checkpoint or the authors' "
            "cross_efficient_vit.pth"
        )
    return ResolvedWeights(path=path, registered=registered, from_registry=True, display=registered.name)


def weights_identity(model: Any, resolved: ResolvedWeights) -> tuple[InferenceConfig | None, str | None]:
    """(inference config, weights tag) of loaded weights: the file's own, else the registry entry's; None where
    neither says. A bundled file is checked against its registered SHA-256 (CheckpointError when it differs)."""
    info = getattr(model, "checkpoint_info", None)
    registered = resolved.registered
    if resolved.from_registry and registered is not None and registered.sha256 and info is not None \
            and info.sha256 != registered.sha256:  # fmt: skip
        raise CheckpointError(f"{resolved.path}: SHA-256 {info.sha256} differs from the registered "
                              f"{registered.sha256} of {registered.name} (a damaged or replaced installation)")  # fmt: skip
    inference = info.inference if info is not None else None
    if inference is None and registered is not None:
        inference = registered.inference
    weights_tag = (info.weights_tag if info is not None else None) or (registered.name if registered else None)
    if weights_tag is None and info is not None and info.inference is None and info.architecture == "coccomini2022":
        # a file with the authors' exact architecture and no cevit inference config: their released checkpoint
        # (the only weights of that architecture; no SHA-256 is published to verify it)
        weights_tag = "coccomini2022.dfdc"
    return inference, weights_tag


def load_model(
    name: str | None = None, *, weights: str | Path | None = None, device: str = "auto", num_frames: int = 30,
    rule: str | None = None, threshold: float | None = None, backend: str | None = None, precision: str = "fp32",
    **options: Any,
) -> Detector:  # fmt: skip
    """Load a detector: registered weights ``name`` (``architecture.tag``; default: the bundled default weights),
    or the file ``weights`` (a cevit checkpoint, the authors' ``.pth``, or an ONNX model from ``cevit export onnx``).

    ``backend``: ``"torch"`` or ``"onnxruntime"`` (the model part run by ONNX Runtime, extra ``onnx``; face
    detection stays in torch). Default: ``"onnxruntime"`` for an ``.onnx`` file, else ``"torch"``. Torch weights
    with ``backend="onnxruntime"`` are exported to ONNX on first use and the export is cached (:mod:`cevit.cache`;
    seconds to a minute the first time, under a second after). Both backends give the same scores (≤ 1e-4, tested).

    ``precision`` (:data:`PRECISIONS`): ``fp32`` (default), ``auto`` (bf16 autocast on a CUDA GPU with native bf16,
    fp16 on an older one, fp32 on the CPU), ``bf16`` or ``fp16``; the onnxruntime backend runs fp32 only (ConfigError
    for bf16/fp16). Checked before any weights are read.

    How the weights are used (aggregation rule and thresholds, face-detector settings, calibration) comes from
    the checkpoint's own inference config, else from the registered weights ``name`` or the tag registered for
    the file's architecture (the authors' ``.pth`` → ``coccomini2022.dfdc``: their video rule, 0.55 / 0.6).
    ``rule`` / ``threshold`` and detector ``options`` (``min_face_size``, ``detector_thresholds``,
    ``detector_factor``, ``detector_max_side``) override it.

    Raises :class:`~cevit.errors.ModelError` for unknown names and weights that are not bundled — cevit never
    scores with untrained weights.
    """
    from cevit.models.onnx import is_onnx_file
    from cevit.models.pretrained import default_inference_for

    onnx_file = weights is not None and is_onnx_file(weights)
    backend = backend or ("onnxruntime" if onnx_file else "torch")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use {' or '.join(BACKENDS)}")
    if onnx_file and backend != "onnxruntime":
        raise ConfigError(f"{weights}: an ONNX model runs with the onnxruntime backend, not {backend}")
    resolve_precision(precision, resolve_device(device), backend=backend)  # a bad value fails before any loading
    resolved = resolve_weights(name, weights)
    path = resolved.path
    model: CrossEfficientViT | OnnxRuntimeModel
    if onnx_file:
        from cevit.models.onnx import load_onnx_model

        model = load_onnx_model(path, device=_onnx_device(device))
    else:
        model = load_weights(path)
    inference, weights_tag = weights_identity(model, resolved)
    if inference is None:
        inference = default_inference_for(model.preset_name)
    agg = inference.aggregation_rule(rule=rule, threshold=threshold)
    det = inference.detector
    detector_options = {"min_face_size": det.min_face_size, "detector_thresholds": det.thresholds,
                        "detector_factor": det.factor, "detector_max_side": det.max_side}  # fmt: skip
    detector_options.update(options)
    if backend == "onnxruntime" and not onnx_file:
        from cevit.models.onnx import runtime_model_of

        model = runtime_model_of(model, device=_onnx_device(device))  # exported once per weights file (cached)
    return Detector(model=model, device=device,
                    options=AnalyzeOptions(num_frames=num_frames, rule=agg, precision=precision, **detector_options),
                    name=resolved.display, checkpoint_path=path, weights_tag=weights_tag,
                    calibration=inference.calibration, owns_model=True)  # fmt: skip


def _onnx_device(device: str | torch.device) -> str:
    """The device ONNX Runtime runs on: ``auto`` means CUDA only where ONNX Runtime has its CUDA provider."""
    dev = resolve_device(device)
    if dev.type == "cuda" and str(device) == "auto":
        try:
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return "cpu"
        except ImportError:
            return "cpu"
    return str(dev)
