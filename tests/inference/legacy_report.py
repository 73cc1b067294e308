"""The report builder of schema 1.1 (cevit 0.2.0, ``cevit/inference/results.py`` at commit 5d49c1e), frozen.

The reference that :meth:`cevit.inference.results.Analysis.to_dict` is compared with: a 1.2 report must be the
1.1 report plus the 1.2 additions (``status``; ``frames_failed`` for videos), same values, same key order.
Not a test module (no ``test_`` prefix); imported by tests/inference/test_results.py and test_pipeline.py.
"""

from __future__ import annotations

from typing import Any

from cevit.inference.aggregation import frame_scores, label_and_confidence

ADDED_IN_1_2 = ("status", "frames_failed")


def _face_json(f: Any) -> dict[str, Any]:
    return {
        "frame_index": f.frame_index,
        "face_index": f.face_index,
        "box": [round(float(v), 1) for v in f.box],
        "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in f.landmarks],
        "detection_probability": round(float(f.detection_probability), 5),
        "score": round(float(f.score), 6),
    }


def _common(*, source, media_type, verdict, faces, rule, model_info, timings) -> dict[str, Any]:
    return {
        "schema_version": "1.1",
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
        "faces": [_face_json(f) for f in faces],
        "timings": {k: round(float(v), 4) for k, v in timings.items()},
    }


def image_report_1_1(*, source, width, height, verdict, faces, rule, model_info, timings) -> dict[str, Any]:
    report = _common(source=source, media_type="image", verdict=verdict, faces=faces, rule=rule,
                     model_info=model_info, timings=timings)  # fmt: skip
    report["dimensions"] = {"width": int(width), "height": int(height)}
    return report


def video_report_1_1(
    *, source, width, height, frames, verdict, faces, rule, model_info, timings, video_info=None
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


def _raw_timings(timings: Any) -> dict[str, float]:
    return {**{k: getattr(timings, k) for k in ("decode", "detect", "preprocess", "model", "total")}, **timings.extra}


def legacy_report_of(analysis: Any) -> dict[str, Any]:
    """What the 1.1 builder makes of the same inputs an :class:`Analysis` was built from."""
    common = dict(source=analysis.source, width=analysis.width, height=analysis.height, verdict=analysis.verdict,
                  faces=analysis.faces, rule=analysis.rule, model_info=analysis.model.to_dict(),
                  timings=_raw_timings(analysis.timings))  # fmt: skip
    if analysis.media_type == "image":
        return image_report_1_1(**common)
    video_info = None if analysis.video is None else analysis.video.to_dict()
    return video_report_1_1(frames=analysis.frames, video_info=video_info, **common)


def strip_1_2(report: dict[str, Any]) -> dict[str, Any]:
    """A 1.2 report without its 1.2 additions, labelled 1.1: what a 1.1 reader sees."""
    out = {k: v for k, v in report.items() if k not in ADDED_IN_1_2}
    out["schema_version"] = "1.1"
    return out
