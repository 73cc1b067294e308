"""End-to-end analysis: media → MTCNN faces → crops → the model → aggregation → JSON report.

>>> from cevit import load_model
>>> detector = load_model("CROSS-EFFICIENT-VIT-V1")            # loads once, reuse for many files
>>> report = detector.analyze(media_path="clip.mp4")             # a dict (see cevit.inference.results)
>>> for report in detector.analyze_many(["a.jpg", "b.mp4"]): ...  # yields reports as they finish

Videos are processed in chunks of sampled frames (decode → detect → crop), so memory stays bounded by the
chunk size; all faces of one item then go through the model in as few batched forward passes as possible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cevit.errors import CevitError, CheckpointError, ConfigError, FaceDetectionError, ModelError
from cevit.inference.aggregation import DEFAULT_RULE, AggregationRule, aggregate, get_rule
from cevit.inference.results import FaceRecord, FrameRecord, error_report, image_report, video_report
from cevit.models.cross_efficient_vit import CrossEfficientViT
from cevit.models.registry import DEFAULT_PRESET, get_preset
from cevit.preprocess import crop_face, resize_face, to_tensor

__all__ = ["AnalyzeOptions", "Detector", "load_model", "load_weights", "bundled_weights_path", "resolve_device"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class AnalyzeOptions:
    """Settings of the analysis pipeline (the model's preprocessing contract is separate and fixed)."""

    num_frames: int = 30
    rule: AggregationRule = field(default_factory=lambda: DEFAULT_RULE)
    batch_size: int = 32  # faces per forward pass
    frame_chunk: int = 8  # video frames decoded and detected together
    max_pixels: int = 100_000_000  # refuse images above this (decompression bombs)
    detector_max_side: int = 1280  # detect on a copy downscaled to this longer side
    min_face_size: int = 20
    detector_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    detector_factor: float = 0.709

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.batch_size < 1 or self.frame_chunk < 1:
            raise ConfigError("batch_size and frame_chunk must be >= 1")


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but CUDA is not available; use --device cpu or auto")
    return dev


def bundled_weights_path(preset: str) -> Path | None:
    """The weights shipped inside the package for ``preset``, or None when none are bundled."""
    ref = resources.files("cevit").joinpath("weights", f"{preset}.safetensors")
    try:
        with resources.as_file(ref) as path:
            return Path(path) if Path(path).is_file() else None
    except (FileNotFoundError, ModuleNotFoundError):
        return None


def load_weights(path: str | Path) -> CrossEfficientViT:
    """A cevit checkpoint (safetensors) or the authors' ``.pth`` (converted on the fly), by the file's content."""
    from cevit.checkpoint import load_checkpoint
    from cevit.convert import load_original_checkpoint

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weights file does not exist")
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors: a little-endian u64 header length, then the JSON header ("{"); everything else (a zip from
    # torch.save, a legacy pickle) is treated as the authors' PyTorch checkpoint, loaded with weights_only=True.
    if len(head) == 9 and head[8:9] == b"{":
        return load_checkpoint(path)
    return load_original_checkpoint(path)


class Detector:
    """A loaded model plus face detector: call :meth:`analyze` for one file, :meth:`analyze_many` for several."""

    def __init__(
        self, *, model: CrossEfficientViT, device: str | torch.device = "auto", options: AnalyzeOptions | None = None,
        name: str | None = None, checkpoint_path: str | Path | None = None,
    ) -> None:  # fmt: skip
        from cevit.faces import MTCNN
        from cevit.models.optimize import optimize_for_inference

        self.device = resolve_device(device)
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.options = options or AnalyzeOptions()
        self.preprocessing = model.preprocessing
        info = getattr(model, "checkpoint_info", None)
        self.model_info = {
            "name": name or model.preset_name or "custom",
            "preset": model.preset_name,
            "checkpoint_sha256": info.sha256 if info is not None else None,
        }
        self.model = optimize_for_inference(model.eval()).to(self.device)
        o = self.options
        self.face_detector = MTCNN(
            min_face_size=o.min_face_size, thresholds=o.detector_thresholds, factor=o.detector_factor,
            max_side=o.detector_max_side, device=str(self.device),
        )  # fmt: skip

    # -- model --------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_faces(self, faces: list[np.ndarray]) -> list[float]:
        """P(fake) for resized face crops (S, S, 3) uint8 RGB, in batches of ``options.batch_size``."""
        scores: list[float] = []
        for start in range(0, len(faces), self.options.batch_size):
            x = to_tensor(faces[start : start + self.options.batch_size], self.preprocessing).to(self.device)
            logits = self.model(x)
            scores.extend(torch.sigmoid(logits.float()).squeeze(1).tolist())
        return scores

    # -- pipeline -------------------------------------------------------------------------------------------
    def _detect_and_crop(
        self, frames: list[np.ndarray], frame_ids: list[int], timings: dict[str, float],
        faces_out: list[tuple[int, int, Any]], crops_out: list[np.ndarray],
    ) -> None:  # fmt: skip
        t0 = time.perf_counter()
        try:
            detections = self.face_detector.detect(frames)
        except CevitError:
            raise
        except Exception as exc:  # a detector bug must not kill a batch of files
            raise FaceDetectionError(f"face detection failed: {exc}") from exc
        t1 = time.perf_counter()
        for frame, frame_id, found in zip(frames, frame_ids, detections):
            for face_index, face in enumerate(found):
                try:
                    crop = resize_face(crop_face(frame, face.box, self.preprocessing), self.preprocessing)
                except ValueError as exc:  # degenerate box
                    log.debug("skipping face %s: %s", face.box, exc)
                    continue
                faces_out.append((frame_id, face_index, face))
                crops_out.append(crop)
        timings["detect"] += t1 - t0
        timings["preprocess"] += time.perf_counter() - t1

    def _finish(self, faces: list[tuple[int, int, Any]], crops: list[np.ndarray], timings: dict[str, float]):
        t0 = time.perf_counter()
        scores = self.score_faces(crops)
        timings["model"] += time.perf_counter() - t0
        records = [
            FaceRecord(frame_index=fi, face_index=k, box=tuple(f.box), landmarks=tuple(f.landmarks),
                       detection_probability=f.probability, score=s)
            for (fi, k, f), s in zip(faces, scores)
        ]  # fmt: skip
        return records

    def analyze(
        self, media_path: str | Path, *, num_frames: int | None = None, threshold: float | None = None,
        rule: str | AggregationRule | None = None, progress: Progress | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Analyse one image or video and return its report (raises a CevitError subclass on bad input)."""
        from cevit.media import sniff_media_type

        start = time.perf_counter()
        agg = self._rule(rule, threshold)
        source = str(media_path)
        timings = {"decode": 0.0, "detect": 0.0, "preprocess": 0.0, "model": 0.0}
        t0 = time.perf_counter()
        kind = sniff_media_type(media_path)
        timings["decode"] += time.perf_counter() - t0
        if kind == "image":
            return self._analyze_image(source, agg, timings, start)
        return self._analyze_video(source, agg, timings, start, num_frames or self.options.num_frames, progress)

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

    def _analyze_image(self, source: str, agg: AggregationRule, timings: dict[str, float], start: float) -> dict:
        from cevit.media import load_image

        t0 = time.perf_counter()
        image = load_image(source, max_pixels=self.options.max_pixels)
        timings["decode"] += time.perf_counter() - t0
        faces: list[tuple[int, int, Any]] = []
        crops: list[np.ndarray] = []
        self._detect_and_crop([image], [0], timings, faces, crops)
        records = self._finish(faces, crops, timings)
        verdict = aggregate([(r.frame_index, r.face_index, r.score) for r in records], agg)
        timings["total"] = time.perf_counter() - start
        h, w = image.shape[:2]
        return image_report(source=source, width=w, height=h, verdict=verdict, faces=records, rule=agg,
                            model_info=self.model_info, timings=timings)  # fmt: skip

    def _analyze_video(
        self, source: str, agg: AggregationRule, timings: dict[str, float], start: float, num_frames: int,
        progress: Progress | None,
    ) -> dict:  # fmt: skip
        from cevit.errors import MediaError
        from cevit.media import probe_video, sample_frames

        t0 = time.perf_counter()
        info = probe_video(source)
        frames_meta: list[FrameRecord] = []
        faces: list[tuple[int, int, Any]] = []
        crops: list[np.ndarray] = []
        chunk: list[np.ndarray] = []
        chunk_ids: list[int] = []
        width, height = info.width, info.height
        total = min(num_frames, info.frame_count) if info.frame_count else num_frames
        iterator = iter(sample_frames(source, num_frames=num_frames))
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
            if chunk and (frame is None or len(chunk) >= self.options.frame_chunk):
                self._detect_and_crop(chunk, chunk_ids, timings, faces, crops)
                chunk, chunk_ids = [], []
                if progress is not None:
                    progress(len(frames_meta), max(total, len(frames_meta)))
            if frame is None:
                break
        if not frames_meta:
            raise MediaError(f"{source}: no decodable frames")
        records = self._finish(faces, crops, timings)
        verdict = aggregate([(r.frame_index, r.face_index, r.score) for r in records], agg)
        timings["total"] = time.perf_counter() - start
        video_info = {"fps": info.fps, "duration": info.duration, "frame_count": info.frame_count,
                      "rotation": info.rotation, "codec": info.codec}  # fmt: skip
        return video_report(source=source, width=width, height=height, frames=frames_meta, verdict=verdict,
                            faces=records, rule=agg, model_info=self.model_info, timings=timings,
                            video_info=video_info)  # fmt: skip

    def analyze_many(
        self, paths: Iterable[str | Path], *, num_frames: int | None = None, threshold: float | None = None,
        rule: str | AggregationRule | None = None, progress: Progress | None = None,
    ) -> Iterator[dict[str, Any]]:  # fmt: skip
        """Yield one report per path as each finishes; a failing item yields an error report, never stops the batch."""
        for path in paths:
            try:
                yield self.analyze(path, num_frames=num_frames, threshold=threshold, rule=rule, progress=progress)
            except CevitError as exc:
                log.warning("%s", exc)
                yield error_report(str(path), exc)
            except Exception as exc:  # noqa: BLE001 - a batch always finishes the other items
                log.exception("unexpected error while analysing %s", path)
                yield error_report(str(path), RuntimeError(f"{path}: internal error: {exc}"))


def load_model(
    name: str = DEFAULT_PRESET, *, weights: str | Path | None = None, device: str = "auto",
    num_frames: int = 30, rule: str = "cevit-default", threshold: float | None = None, **options: Any,
) -> Detector:  # fmt: skip
    """Load a detector: the bundled weights of preset ``name``, or ``weights`` (cevit checkpoint or authors' .pth).

    Raises :class:`~cevit.errors.ModelError` when no trained weights are bundled for ``name`` and no ``weights``
    are given — cevit never scores with untrained weights.
    """
    if weights is None:
        get_preset(name)  # unknown name → ModelError listing the valid ones
        path = bundled_weights_path(name)
        if path is None:
            raise ModelError(
                f"no trained weights are bundled for {name!r} in this version of cevit; "
                "pass weights=PATH (CLI: --weights PATH) with a cevit checkpoint or the authors' "
                "cross_efficient_vit.pth"
            )
        display = name
    else:
        path = Path(weights)
        display = path.name
    model = load_weights(path)
    agg = get_rule(rule, label_threshold=threshold)
    return Detector(model=model, device=device, options=AnalyzeOptions(num_frames=num_frames, rule=agg, **options),
                    name=display, checkpoint_path=path)  # fmt: skip
