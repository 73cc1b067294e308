from __future__ import annotations

import json

from cevit.inference.aggregation import DEFAULT_RULE, aggregate
from cevit.inference.results import FaceRecord, FrameRecord, error_report, image_report, video_report

MODEL = {"name": "test", "preset": "CROSS-EFFICIENT-VIT-V1", "checkpoint_sha256": "0" * 64}
TIMINGS = {"decode": 0.1, "detect": 0.2, "preprocess": 0.01, "model": 0.3, "total": 0.7}


def _face(frame, k, score):
    return FaceRecord(frame_index=frame, face_index=k, box=(10, 20, 110, 140),
                      landmarks=((40, 60), (80, 60), (60, 80), (45, 110), (75, 110)),
                      detection_probability=0.999, score=score)  # fmt: skip


def test_image_report_stable_keys_and_types():
    faces = [_face(0, 0, 0.8)]
    verdict = aggregate([(0, 0, 0.8)], DEFAULT_RULE)
    r = image_report(source="a.jpg", width=640, height=480, verdict=verdict, faces=faces, rule=DEFAULT_RULE,
                     model_info=MODEL, timings=TIMINGS)  # fmt: skip
    assert r["prediction"] == "FAKE" and isinstance(r["confidence"], float)
    assert isinstance(r["processing_time"], float) and r["processing_time"] == 0.7
    assert r["dimensions"] == {"width": 640, "height": 480} and isinstance(r["note"], str)
    assert r["schema_version"] and r["source"] == "a.jpg" and r["media_type"] == "image"
    assert r["model"]["checkpoint_sha256"] == "0" * 64
    assert r["faces"][0]["box"] == [10.0, 20.0, 110.0, 140.0] and len(r["faces"][0]["landmarks"]) == 5
    assert r["aggregation"] == {"rule": "cevit-default", "face_threshold": 0.65, "label_threshold": 0.5,
                                "frame_score": "max over the frame's faces"}  # fmt: skip
    assert set(r["timings"]) == {"decode", "detect", "preprocess", "model", "total"}
    json.dumps(r, allow_nan=False)


def test_video_report_keeps_no_face_frames():
    frames = [FrameRecord(index=i, timestamp=i / 25) for i in (0, 10, 20)]
    faces = [_face(0, 0, 0.2), _face(0, 1, 0.4), _face(20, 0, 0.3)]
    verdict = aggregate([(f.frame_index, f.face_index, f.score) for f in faces], DEFAULT_RULE)
    r = video_report(source="v.mp4", width=1920, height=1080, frames=frames, verdict=verdict, faces=faces,
                     rule=DEFAULT_RULE, model_info=MODEL, timings=TIMINGS)  # fmt: skip
    assert r["frames_analyzed"] == 3 and r["frames_with_faces"] == 2
    fp = r["frame_predictions"]
    assert [f["index"] for f in fp] == [0, 10, 20]
    assert fp[0]["score"] == 0.4 and fp[0]["prediction"] == "REAL" and fp[0]["num_faces"] == 2
    assert fp[1] == {"index": 10, "timestamp": 0.4, "score": None, "prediction": "NO_FACE", "num_faces": 0}
    assert r["metrics"]["final_average_score"] == 0.3 and r["prediction"] == "REAL"
    json.dumps(r, allow_nan=False)


def test_video_without_any_face():
    frames = [FrameRecord(index=0, timestamp=0.0)]
    r = video_report(source="v.mp4", width=64, height=64, frames=frames, verdict=aggregate([]), faces=[],
                     rule=DEFAULT_RULE, model_info=MODEL, timings=TIMINGS)  # fmt: skip
    assert r["prediction"] == "REAL" and r["confidence"] == 0.99 and r["note"] == "No face detected"
    assert r["score"] is None and r["metrics"]["final_average_score"] == 0.0
    assert r["frame_predictions"][0]["prediction"] == "NO_FACE"


def test_error_report_is_one_line():
    r = error_report("x.jpg", ValueError("x.jpg: truncated\nmore detail"))
    assert r == {"schema_version": r["schema_version"], "source": "x.jpg", "error": "x.jpg: truncated",
                 "error_type": "ValueError"}  # fmt: skip
