"""The result of analysing one media item: typed objects (:class:`Analysis`, :class:`AnalysisError`) and their
JSON report (schema version 1.2).

>>> result = detector.analyze_result("clip.mp4")      # an Analysis (cevit.inference.pipeline.Detector)
>>> result.prediction, result.score, result.status    # ("FAKE", 0.91, "ok")
>>> [f.score for f in result.frames]                   # per sampled video frame (None: no face in it)
>>> result.to_dict() == detector.analyze("clip.mp4")   # the report (same values, timings aside)
>>> print(result.to_json(indent=2))

The objects are frozen and hold the unrounded values; :meth:`Analysis.to_dict` writes the report, rounding
as documented below, and :meth:`Analysis.from_dict` reads one back (``from_dict(r).to_dict() == r``).

Report keys
-----------
Stable keys (names and types never change):

* image: ``prediction`` ("REAL"|"FAKE"), ``confidence`` (float), ``processing_time`` (float, s),
  ``dimensions`` {``width``, ``height``} (int), ``note`` (str)
* video: ``prediction``, ``confidence``, ``processing_time``, ``frames_analyzed`` (int),
  ``frame_predictions`` [{``index`` (int, source frame index), ``score`` (float|null), ``prediction``
  ("REAL"|"FAKE"|"NO_FACE")}], ``metrics`` {``final_average_score`` (float)}, ``note``

Added keys (1.1): ``schema_version``, ``source`` (the path as given), ``media_type`` ("image"|"video"),
``model`` {``name``, ``preset``, ``checkpoint_sha256``, ...}, ``score`` (final score, null when no face),
``faces`` (per face: ``frame_index``, ``face_index``, ``box`` [x1, y1, x2, y2] in pixels of the original
frame, ``landmarks`` [[x, y] × 5], ``detection_probability``, ``score``), ``aggregation`` (rule and
thresholds), ``timings`` (seconds per stage: ``decode``, ``detect``, ``preprocess``, ``model``, ``total``).
Videos also carry ``frames_with_faces``, ``video`` (fps, duration, frame count, rotation, codec) and, per entry
of ``frame_predictions``, ``timestamp`` (s) and ``num_faces``.

Added in 1.2 (additions only: a 1.1 reader keeps working): ``status`` — ``"ok"`` when at least one face was
found, ``"no_face"`` when none was (the verdict is then the no-face rule's REAL 0.99, which is *not* a
clearance: show "No face found"); videos: ``frames_failed`` (sampled frames that could not be decoded), when
the pipeline reports it. ``model.runtime`` {``backend`` ("torch"|"onnxruntime"), ``device`` ("cpu", "cuda:0",
...), ``precision`` ("fp32"|"bf16"|"fp16": the model's arithmetic)}: how the scores were computed, when the
detector reports it.

Frames in which no face was found stay in ``frame_predictions`` with ``score: null`` and
``prediction: "NO_FACE"``; ``frames_analyzed`` counts every sampled frame, with or without faces. When no face
is found at all, ``metrics.final_average_score`` is 0.0 and ``score`` is null.

Explanations (only when asked for: ``analyze(..., explain=True)``, ``cevit analyze --explain DIR``,
``POST /v1/analyze`` with ``explain=true``; absent otherwise): ``explanations`` {``method`` ("gradcam" |
"attention"), ``target`` ("fake logit"), ``time`` (s), ``faces`` [{``frame_index``, ``face_index``, ``peak``
[x, y] (the heat map's maximum in pixels of the model's ``crop_size`` × ``crop_size`` face crop), ``overlay``
(CLI: the overlay PNG's path relative to the --explain folder; HTTP: ``data:image/png;base64,...``)}],
``files`` {``annotated``, ``contact_sheet``, ``timeline`` (videos; else null)} (the same forms)}; ``timings``
then has an ``explain`` stage, included in ``total``. :class:`Analysis` holds the maps themselves
(``analysis.explanations.faces[i].heatmap``); ``from_dict`` does not read the block back.

A failed item's report is ``{"schema_version", "source", "error", "error_type"}`` (:class:`AnalysisError`,
:func:`error_report`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from cevit.inference.aggregation import (
    AggregationRule,
    Verdict,
    frame_scores,
    get_rule,
    label_and_confidence,
)

if TYPE_CHECKING:
    from cevit.explain.maps import Explanations

__all__ = [
    "SCHEMA_VERSION",
    "Status",
    "Face",
    "FrameResult",
    "FrameRecord",
    "FaceRecord",
    "Timings",
    "ModelInfo",
    "VideoInfo",
    "Analysis",
    "AnalysisError",
    "image_report",
    "video_report",
    "error_report",
]

SCHEMA_VERSION = "1.2"

Status = Literal["ok", "no_face"]
MediaType = Literal["image", "video"]
Prediction = Literal["REAL", "FAKE"]
FramePrediction = Literal["REAL", "FAKE", "NO_FACE"]

#: How a frame's score is made from its faces' scores (written into ``aggregation.frame_score``).
FRAME_SCORE_RULE = "max over the frame's faces"


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


# -- parts -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Face:
    """One detected face: where it is and the model's fake score P(fake) for it."""

    frame_index: int  # source frame index (0 for an image)
    face_index: int  # position in the detector's output for that frame
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the original frame
    landmarks: tuple[tuple[float, float], ...]  # 5 points (x, y)
    detection_probability: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame_index": int(self.frame_index),
            "face_index": int(self.face_index),
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "detection_probability": round(float(self.detection_probability), 5),
            "score": round(float(self.score), 6),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Face:
        x1, y1, x2, y2 = data["box"]
        return cls(
            frame_index=int(data["frame_index"]), face_index=int(data["face_index"]), box=(x1, y1, x2, y2),
            landmarks=tuple((x, y) for x, y in data["landmarks"]),
            detection_probability=float(data["detection_probability"]), score=float(data["score"]),
        )  # fmt: skip


FaceRecord = Face  # the 1.1 name, kept for existing imports


@dataclass(frozen=True, kw_only=True)
class FrameRecord:
    """A sampled frame as the pipeline saw it, before scoring: source frame index and timestamp (s)."""

    index: int
    timestamp: float | None


@dataclass(frozen=True, kw_only=True)
class FrameResult:
    """One sampled video frame: score = max over its faces (None without a face), and its label."""

    index: int  # source frame index
    timestamp: float | None  # seconds
    score: float | None
    prediction: FramePrediction
    num_faces: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": int(self.index),
            "timestamp": _round(self.timestamp, 4),
            "score": _round(self.score, 6),
            "prediction": self.prediction,
            "num_faces": int(self.num_faces),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrameResult:
        return cls(index=int(data["index"]), timestamp=data.get("timestamp"), score=data.get("score"),
                   prediction=data["prediction"], num_faces=int(data.get("num_faces", 0)))  # fmt: skip


_TIMING_STAGES = ("decode", "detect", "preprocess", "model", "total")


@dataclass(frozen=True, kw_only=True)
class Timings:
    """Seconds spent per stage; ``total`` is the whole analysis (the report's ``processing_time``)."""

    decode: float = 0.0
    detect: float = 0.0
    preprocess: float = 0.0
    model: float = 0.0
    total: float = 0.0
    extra: Mapping[str, float] = field(default_factory=dict)  # further stages, reported after the standard ones

    @classmethod
    def from_mapping(cls, timings: Mapping[str, float]) -> Timings:
        known = {k: float(timings[k]) for k in _TIMING_STAGES if k in timings}
        extra = {k: float(v) for k, v in timings.items() if k not in _TIMING_STAGES}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, float]:
        stages = {k: getattr(self, k) for k in _TIMING_STAGES}
        return {k: round(float(v), 4) for k, v in {**stages, **self.extra}.items()}


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """Which model produced the result; ``extra`` holds further keys of the detector's model description."""

    name: str | None
    preset: str | None = None
    checkpoint_sha256: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, info: Mapping[str, Any]) -> ModelInfo:
        extra = {k: copy.deepcopy(v) for k, v in info.items() if k not in ("name", "preset", "checkpoint_sha256")}
        return cls(name=info.get("name"), preset=info.get("preset"),
                   checkpoint_sha256=info.get("checkpoint_sha256"), extra=extra)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "preset": self.preset, "checkpoint_sha256": self.checkpoint_sha256,
                **copy.deepcopy(dict(self.extra))}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class VideoInfo:
    """Container/stream facts of a video (the report's ``video`` block)."""

    fps: float | None
    duration: float | None
    frame_count: int | None
    rotation: int
    codec: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"fps": self.fps, "duration": self.duration, "frame_count": self.frame_count,
                "rotation": self.rotation, "codec": self.codec}  # fmt: skip

    @classmethod
    def from_mapping(cls, info: Mapping[str, Any]) -> VideoInfo:
        return cls(fps=info.get("fps"), duration=info.get("duration"), frame_count=info.get("frame_count"),
                   rotation=int(info.get("rotation") or 0), codec=info.get("codec"))  # fmt: skip


def _aggregation_dict(rule: AggregationRule) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "face_threshold": rule.face_threshold,
        "label_threshold": rule.label_threshold,
        "frame_score": FRAME_SCORE_RULE,
    }


# -- the result ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Analysis:
    """The result of one analysed image or video (see the module docstring for its report).

    Build one with :meth:`for_image` / :meth:`for_video` (what the pipeline does) or :meth:`from_dict`.
    ``frames`` lists the sampled video frames in order (empty for an image); ``faces`` every scored face in
    scan order (frame order, then the detector's order within a frame).
    """

    source: str
    media_type: MediaType
    prediction: Prediction
    confidence: float
    score: float | None  # the final score the verdict is based on; None when no face was found
    note: str
    model: ModelInfo
    rule: AggregationRule
    faces: tuple[Face, ...] = ()
    timings: Timings = field(default_factory=Timings)
    width: int
    height: int
    frames: tuple[FrameResult, ...] = ()
    frames_failed: int | None = None  # videos: sampled frames that could not be decoded (None: not reported)
    video: VideoInfo | None = None
    explanations: Explanations | None = None  # heat maps, when analysed with explain (see cevit.explain)

    schema_version: ClassVar[str] = SCHEMA_VERSION

    # -- derived ----------------------------------------------------------------------------------------------
    @property
    def status(self) -> Status:
        """``"ok"`` when at least one face was found, ``"no_face"`` when none was."""
        return "ok" if self.faces else "no_face"

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.prediction, self.confidence, self.score, self.note)

    @property
    def is_fake(self) -> bool:
        return self.prediction == "FAKE"

    @property
    def processing_time(self) -> float:
        return self.timings.total

    @property
    def frames_analyzed(self) -> int:
        """Sampled frames (with or without faces); 1 for an image."""
        return len(self.frames) if self.media_type == "video" else 1

    @property
    def frames_with_faces(self) -> int:
        if self.media_type == "image":
            return 1 if self.faces else 0
        return sum(1 for f in self.frames if f.score is not None)

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def for_image(
        cls, *, source: str, width: int, height: int, verdict: Verdict, faces: Sequence[Face], rule: AggregationRule,
        model_info: Mapping[str, Any], timings: Mapping[str, float],
    ) -> Analysis:  # fmt: skip
        return cls(
            source=source, media_type="image", prediction=verdict.prediction, confidence=verdict.confidence,
            score=verdict.score, note=verdict.note, model=ModelInfo.from_mapping(model_info), rule=rule,
            faces=tuple(faces), timings=Timings.from_mapping(timings), width=int(width), height=int(height),
        )  # fmt: skip

    @classmethod
    def for_video(
        cls, *, source: str, width: int, height: int, frames: Sequence[FrameRecord], verdict: Verdict,
        faces: Sequence[Face], rule: AggregationRule, model_info: Mapping[str, Any], timings: Mapping[str, float],
        video_info: Mapping[str, Any] | VideoInfo | None = None, frames_failed: int | None = None,
    ) -> Analysis:  # fmt: skip
        """Per-frame results from the sampled ``frames`` and the scored ``faces`` (max per frame)."""
        scores = frame_scores([(f.frame_index, f.face_index, f.score) for f in faces], [fr.index for fr in frames])
        counts: dict[int, int] = {}
        for f in faces:
            counts[f.frame_index] = counts.get(f.frame_index, 0) + 1
        results = tuple(
            FrameResult(
                index=fr.index, timestamp=fr.timestamp, score=score, num_faces=counts.get(fr.index, 0),
                prediction="NO_FACE" if score is None else label_and_confidence(score, rule.label_threshold)[0],
            )
            for fr, score in zip(frames, scores)
        )  # fmt: skip
        video = video_info if isinstance(video_info, VideoInfo) else None
        if video_info and not isinstance(video_info, VideoInfo):
            video = VideoInfo.from_mapping(video_info)
        return cls(
            source=source, media_type="video", prediction=verdict.prediction, confidence=verdict.confidence,
            score=verdict.score, note=verdict.note, model=ModelInfo.from_mapping(model_info), rule=rule,
            faces=tuple(faces), timings=Timings.from_mapping(timings), width=int(width), height=int(height),
            frames=results, frames_failed=frames_failed, video=video,
        )  # fmt: skip

    # -- the report -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON report (schema 1.2): plain dicts, lists, str, int, float, bool and None."""
        report: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "media_type": self.media_type,
            "status": self.status,
            "prediction": self.prediction,
            "confidence": round(float(self.confidence), 6),
            "score": _round(self.score, 6),
            "processing_time": round(float(self.timings.total), 4),
            "note": self.note,
            "model": self.model.to_dict(),
            "aggregation": _aggregation_dict(self.rule),
            "faces": [f.to_dict() for f in self.faces],
            "timings": self.timings.to_dict(),
            "dimensions": {"width": int(self.width), "height": int(self.height)},
        }
        if self.media_type == "video":
            report["frames_analyzed"] = len(self.frames)
            if self.frames_failed is not None:
                report["frames_failed"] = int(self.frames_failed)
            report["frames_with_faces"] = self.frames_with_faces
            report["frame_predictions"] = [f.to_dict() for f in self.frames]
            report["metrics"] = {"final_average_score": 0.0 if self.score is None else round(float(self.score), 6)}
            if self.video is not None:
                report["video"] = self.video.to_dict()
        if self.explanations is not None:
            report["explanations"] = self.explanations.to_dict()
        return report

    def to_json(self, *, indent: int | None = None) -> str:
        """:meth:`to_dict` as JSON text (strict: no NaN or infinity)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, report: Mapping[str, Any]) -> Analysis:
        """Read a report (schema 1.1 or 1.2) back; raises KeyError/ValueError/ConfigError on a malformed one."""
        if "error" in report:
            raise ValueError("this is an error report: use AnalysisError.from_dict")
        agg = report["aggregation"]
        rule = get_rule(agg["rule"], face_threshold=agg["face_threshold"], label_threshold=agg["label_threshold"])
        video = report.get("video")
        dims = report["dimensions"]
        return cls(
            source=report["source"], media_type=report["media_type"], prediction=report["prediction"],
            confidence=float(report["confidence"]), score=report.get("score"), note=report["note"],
            model=ModelInfo.from_mapping(report["model"]), rule=rule,
            faces=tuple(Face.from_dict(f) for f in report["faces"]),
            timings=Timings.from_mapping(report.get("timings") or {"total": report["processing_time"]}),
            width=int(dims["width"]), height=int(dims["height"]),
            frames=tuple(FrameResult.from_dict(f) for f in report.get("frame_predictions", ())),
            frames_failed=report.get("frames_failed"),
            video=None if not video else VideoInfo.from_mapping(video),
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class AnalysisError:
    """An item that could not be analysed: ``error`` is a one-line message naming the file."""

    source: str
    error: str
    error_type: str  # the exception class name, e.g. "MediaError"

    schema_version: ClassVar[str] = SCHEMA_VERSION
    status: ClassVar[str] = "error"  # for code that handles Analysis and AnalysisError alike

    @classmethod
    def from_exception(cls, source: str, error: BaseException) -> AnalysisError:
        text = str(error).strip()
        return cls(source=source, error=text.splitlines()[0] if text else type(error).__name__,
                   error_type=type(error).__name__)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "source": self.source, "error": self.error,
                "error_type": self.error_type}  # fmt: skip

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, report: Mapping[str, Any]) -> AnalysisError:
        return cls(source=report["source"], error=report["error"], error_type=report["error_type"])


# -- report builders (dict in, dict out), kept for callers of schema 1.1 -------------------------------------
def image_report(
    *, source: str, width: int, height: int, verdict: Verdict, faces: Sequence[Face], rule: AggregationRule,
    model_info: Mapping[str, Any], timings: Mapping[str, float],
) -> dict[str, Any]:  # fmt: skip
    """``Analysis.for_image(...).to_dict()``."""
    return Analysis.for_image(source=source, width=width, height=height, verdict=verdict, faces=faces, rule=rule,
                              model_info=model_info, timings=timings).to_dict()  # fmt: skip


def video_report(
    *, source: str, width: int, height: int, frames: Sequence[FrameRecord], verdict: Verdict,
    faces: Sequence[Face], rule: AggregationRule, model_info: Mapping[str, Any], timings: Mapping[str, float],
    video_info: Mapping[str, Any] | None = None, frames_failed: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``Analysis.for_video(...).to_dict()``."""
    return Analysis.for_video(source=source, width=width, height=height, frames=frames, verdict=verdict,
                              faces=faces, rule=rule, model_info=model_info, timings=timings,
                              video_info=video_info, frames_failed=frames_failed).to_dict()  # fmt: skip


def error_report(source: str, error: BaseException) -> dict[str, Any]:
    """The report of an item that could not be analysed; ``error`` is a one-line message naming the file."""
    return AnalysisError.from_exception(source, error).to_dict()
