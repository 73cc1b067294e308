"""The JSON report of one analysed media item (schema version 1.1).

Stable keys (names and types never change):

* image: ``prediction`` ("REAL"|"FAKE"), ``confidence`` (float), ``processing_time`` (float, s),
  ``dimensions`` {``width``, ``height``} (int), ``note`` (str)
* video: ``prediction``, ``confidence``, ``processing_time``, ``frames_analyzed`` (int),
  ``frame_predictions`` [{``index`` (int, source frame index), ``score`` (float|null), ``prediction``
  ("REAL"|"FAKE"|"NO_FACE")}], ``metrics`` {``final_average_score`` (float)}, ``note``

Added keys: ``schema_version``, ``source`` (the path as given), ``media_type`` ("image"|"video"), ``model``
{``name``, ``checkpoint_sha256``}, ``score`` (final score, null when no face), ``faces`` (per face:
``frame_index``, ``face_index``, ``box`` [x1, y1, x2, y2] in pixels of the original frame, ``landmarks``
[[x, y] × 5], ``detection_probability``, ``score``), ``aggregation`` (rule and thresholds), ``timings``
(seconds per stage: ``decode``, ``detect``, ``preprocess``, ``model``, ``total``). Videos also carry
``frames_with_faces`` and, per entry of ``frame_predictions``, ``timestamp`` (s) and ``num_faces``.

Frames in which no face was found stay in ``frame_predictions`` with ``score: null`` and
``prediction: "NO_FACE"``; ``frames_analyzed`` counts every sampled frame, with or without faces. When no face
is found at all, ``metrics.final_average_score`` is 0.0 and ``score`` is null.

A failed item's report is ``{"schema_version", "source", "error", "error_type"}`` (see :func:`error_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cevit.inference.aggregation import AggregationRule, Verdict, frame_scores, label_and_confidence

__all__ = ["SCHEMA_VERSION", "FaceRecord", "FrameRecord", "image_report", "video_report", "error_report"]

SCHEMA_VERSION = "1.1"


@dataclass(frozen=True, kw_only=True)
class FaceRecord:
    frame_index: int
    face_index: int
    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    detection_probability: float
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "frame_index": self.frame_index,
            "face_index": self.face_index,
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "detection_probability": round(float(self.detection_probability), 5),
            "score": round(float(self.score), 6),
        }


@dataclass(frozen=True, kw_only=True)
class FrameRecord:
    index: int  # source frame index (0 for an image)
    timestamp: float | None


def _common(
    *, source: str, media_type: str, verdict: Verdict, faces: Sequence[FaceRecord], rule: AggregationRule,
    model_info: dict[str, Any], timings: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "media_type": media_type,
        "prediction": verdict.prediction,
        "confidence": round(float(verdict.confidence), 6),
        "score": None if verdict.score is None else round(float(verdict.score), 6),
        "processing_time": round(float(timings.get("total", 0.0)), 4),
        "note": verdict.note,
        "model": dict(model_info),
        "aggregation": {
            "rule": rule.name,
            "face_threshold": rule.face_threshold,
            "label_threshold": rule.label_threshold,
            "frame_score": "max over the frame's faces",
        },
        "faces": [f.to_json() for f in faces],
        "timings": {k: round(float(v), 4) for k, v in timings.items()},
    }


def image_report(
    *, source: str, width: int, height: int, verdict: Verdict, faces: Sequence[FaceRecord], rule: AggregationRule,
    model_info: dict[str, Any], timings: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    report = _common(source=source, media_type="image", verdict=verdict, faces=faces, rule=rule,
                     model_info=model_info, timings=timings)  # fmt: skip
    report["dimensions"] = {"width": int(width), "height": int(height)}
    return report


def video_report(
    *, source: str, width: int, height: int, frames: Sequence[FrameRecord], verdict: Verdict,
    faces: Sequence[FaceRecord], rule: AggregationRule, model_info: dict[str, Any], timings: dict[str, float],
    video_info: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    report = _common(source=source, media_type="video", verdict=verdict, faces=faces, rule=rule,
                     model_info=model_info, timings=timings)  # fmt: skip
    triples = [(f.frame_index, f.face_index, f.score) for f in faces]
    scores = frame_scores(triples, [fr.index for fr in frames])
    counts: dict[int, int] = {}
    for f in faces:
        counts[f.frame_index] = counts.get(f.frame_index, 0) + 1
    frame_predictions = []
    for fr, score in zip(frames, scores):
        prediction = "NO_FACE" if score is None else label_and_confidence(score, rule.label_threshold)[0]
        frame_predictions.append({
            "index": int(fr.index),
            "timestamp": None if fr.timestamp is None else round(float(fr.timestamp), 4),
            "score": None if score is None else round(float(score), 6),
            "prediction": prediction,
            "num_faces": counts.get(fr.index, 0),
        })  # fmt: skip
    report["dimensions"] = {"width": int(width), "height": int(height)}
    report["frames_analyzed"] = len(frames)
    report["frames_with_faces"] = sum(1 for s in scores if s is not None)
    report["frame_predictions"] = frame_predictions
    report["metrics"] = {"final_average_score": 0.0 if verdict.score is None else round(float(verdict.score), 6)}
    if video_info:
        report["video"] = dict(video_info)
    return report


def error_report(source: str, error: BaseException) -> dict[str, Any]:
    """The report of an item that could not be analysed; ``error`` is a one-line message naming the file."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return {"schema_version": SCHEMA_VERSION, "source": source, "error": message, "error_type": type(error).__name__}
