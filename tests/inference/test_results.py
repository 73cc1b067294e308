from __future__ import annotations

import dataclasses
import json

from cevit.inference.aggregation import DEFAULT_RULE, aggregate
from cevit.inference.results import FaceRecord, FrameRecord, error_report, image_report, video_report

MODEL = {"name": "test", "preset": "cross_efficient_vit_v1", "checkpoint_sha256": "0" * 64}
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


# -- the typed result (schema 1.2) -------------------------------------------------------------------------------
import math  # noqa: E402

import pytest  # noqa: E402
from legacy_report import image_report_1_1, legacy_report_of, strip_1_2, video_report_1_1  # noqa: E402

from cevit.inference.aggregation import get_rule  # noqa: E402
from cevit.inference.results import SCHEMA_VERSION, Analysis, AnalysisError, Face, FrameResult  # noqa: E402

IMAGE_KEYS = ["schema_version", "source", "media_type", "status", "prediction", "confidence", "score",
              "processing_time", "note", "model", "aggregation", "faces", "timings", "dimensions"]  # fmt: skip
VIDEO_KEYS = [*IMAGE_KEYS, "frames_analyzed", "frames_failed", "frames_with_faces", "frame_predictions", "metrics",
              "video"]  # fmt: skip
VIDEO_INFO = {"fps": 25.0, "duration": 1.2, "frame_count": 30, "rotation": 90, "codec": "h264"}


def _image(faces, rule=DEFAULT_RULE, **kw):
    verdict = aggregate([(f.frame_index, f.face_index, f.score) for f in faces], rule)
    return Analysis.for_image(source="a.jpg", width=640, height=480, verdict=verdict, faces=faces, rule=rule,
                              model_info=MODEL, timings=TIMINGS, **kw)  # fmt: skip


def _video(faces, frames, rule=DEFAULT_RULE, **kw):
    verdict = aggregate([(f.frame_index, f.face_index, f.score) for f in faces], rule)
    return Analysis.for_video(source="v.mp4", width=1920, height=1080, frames=frames, verdict=verdict, faces=faces,
                              rule=rule, model_info=MODEL, timings=TIMINGS, **kw)  # fmt: skip


def test_schema_version_is_1_2():
    assert SCHEMA_VERSION == "1.2" and Analysis.schema_version == AnalysisError.schema_version == "1.2"


@pytest.mark.parametrize("scores", [[0.8], [0.123456789, 0.3, 0.7], []])
def test_image_to_dict_is_the_1_1_report_plus_status(scores):
    faces = [_face(0, k, s) for k, s in enumerate(scores)]
    verdict = aggregate([(0, k, s) for k, s in enumerate(scores)], DEFAULT_RULE)
    args = dict(source="a.jpg", width=640, height=480, verdict=verdict, faces=faces, rule=DEFAULT_RULE,
                model_info=MODEL, timings=TIMINGS)  # fmt: skip
    report = Analysis.for_image(**args).to_dict()
    old = image_report_1_1(**args)
    assert strip_1_2(report) == old
    assert [k for k in report if k != "status"] == list(old)  # same key order
    assert list(report) == IMAGE_KEYS
    assert report["status"] == ("ok" if scores else "no_face")
    assert image_report(**args) == report  # the dict builder kept for 1.1 callers


@pytest.mark.parametrize("rule", [DEFAULT_RULE, get_rule("coccomini2022-video")])
def test_video_to_dict_is_the_1_1_report_plus_additions(rule):
    frames = [FrameRecord(index=i, timestamp=i / 25) for i in (0, 10, 20, 30)]
    faces = [_face(0, 0, 0.2), _face(0, 1, 0.9), _face(20, 0, 0.3), _face(30, 0, 0.58)]
    verdict = aggregate([(f.frame_index, f.face_index, f.score) for f in faces], rule)
    args = dict(source="v.mp4", width=1920, height=1080, frames=frames, verdict=verdict, faces=faces, rule=rule,
                model_info=MODEL, timings=TIMINGS, video_info=VIDEO_INFO)  # fmt: skip
    old = video_report_1_1(**args)
    plain = Analysis.for_video(**args).to_dict()
    assert strip_1_2(plain) == old and list(strip_1_2(plain)) == list(old)
    assert "frames_failed" not in plain and plain["status"] == "ok"
    damaged = Analysis.for_video(**args, frames_failed=3).to_dict()
    assert strip_1_2(damaged) == old and list(damaged) == VIDEO_KEYS and damaged["frames_failed"] == 3
    assert video_report(**args, frames_failed=3) == damaged
    assert [f["prediction"] for f in plain["frame_predictions"]] == (
        ["FAKE", "NO_FACE", "REAL", "FAKE"] if rule is DEFAULT_RULE else ["FAKE", "NO_FACE", "REAL", "REAL"]
    )


def test_video_without_any_face_is_no_face():
    frames = [FrameRecord(index=i, timestamp=i / 10) for i in range(3)]
    result = _video([], frames, video_info=VIDEO_INFO, frames_failed=0)
    r = result.to_dict()
    assert r["status"] == "no_face" and result.status == "no_face"
    assert (r["prediction"], r["confidence"], r["score"], r["note"]) == ("REAL", 0.99, None, "No face detected")
    assert r["frames_analyzed"] == 3 and r["frames_with_faces"] == 0 and r["frames_failed"] == 0
    assert [f["prediction"] for f in r["frame_predictions"]] == ["NO_FACE"] * 3
    assert strip_1_2(r) == legacy_report_of(result)


def test_typed_fields_and_derived_values():
    frames = [FrameRecord(index=i, timestamp=None if i == 0 else i / 25) for i in (0, 5)]
    result = _video([_face(5, 0, 0.25), _face(5, 1, 0.75)], frames, video_info=VIDEO_INFO)
    assert isinstance(result.faces, tuple) and all(isinstance(f, Face) for f in result.faces)
    assert result.frames == (
        FrameResult(index=0, timestamp=None, score=None, prediction="NO_FACE", num_faces=0),
        FrameResult(index=5, timestamp=0.2, score=0.75, prediction="FAKE", num_faces=2),
    )
    assert result.prediction == "FAKE" and result.is_fake and result.score == 0.75 and result.status == "ok"
    assert result.verdict == aggregate([(5, 0, 0.25), (5, 1, 0.75)], DEFAULT_RULE)
    assert (result.frames_analyzed, result.frames_with_faces, result.processing_time) == (2, 1, 0.7)
    assert result.model.name == "test" and result.model.checkpoint_sha256 == "0" * 64
    assert result.video is not None and result.video.rotation == 90 and result.rule is DEFAULT_RULE
    assert result.timings.model == 0.3 and (result.width, result.height) == (1920, 1080)
    image = _image([_face(0, 0, 0.1)])
    assert (image.frames, image.frames_analyzed, image.frames_with_faces, image.video) == ((), 1, 1, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.score = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        Analysis("a.jpg")  # type: ignore[misc]  # keyword-only


def test_model_info_keys_and_values_are_kept_and_copied():
    info = {"name": "m", "preset": "p", "checkpoint_sha256": None, "weights_tag": "a.b",
            "calibration": {"method": "temperature", "temperature": 1.5}}  # fmt: skip
    verdict = aggregate([], DEFAULT_RULE)
    result = Analysis.for_image(source="x.png", width=1, height=1, verdict=verdict, faces=[], rule=DEFAULT_RULE,
                                model_info=info, timings=TIMINGS)  # fmt: skip
    info["calibration"]["temperature"] = 9.0  # the caller's dict changes later: the result does not
    report = result.to_dict()
    assert report["model"] == {"name": "m", "preset": "p", "checkpoint_sha256": None, "weights_tag": "a.b",
                               "calibration": {"method": "temperature", "temperature": 1.5}}  # fmt: skip
    report["model"]["calibration"]["temperature"] = 0.0  # nor does editing a report
    assert result.to_dict()["model"]["calibration"]["temperature"] == 1.5


def test_to_json_and_from_dict_round_trip():
    frames = [FrameRecord(index=i, timestamp=i / 30) for i in (0, 15, 29)]
    faces = [_face(0, 0, 0.123456789), _face(29, 0, 0.987654321)]
    timings = {"decode": 0.123456, "detect": 1.0, "preprocess": 0.0, "model": 2.5, "total": 3.7, "calibrate": 0.01}
    verdict = aggregate([(f.frame_index, f.face_index, f.score) for f in faces], DEFAULT_RULE)
    for result in (
        Analysis.for_video(source="ü/v.mp4", width=64, height=48, frames=frames, verdict=verdict, faces=faces,
                           rule=DEFAULT_RULE, model_info=MODEL, timings=timings, video_info=VIDEO_INFO,
                           frames_failed=1),
        _image([_face(0, 0, 0.5)]),
        _image([]),
    ):  # fmt: skip
        report = result.to_dict()
        assert json.loads(result.to_json()) == report
        assert json.loads(result.to_json(indent=2)) == report
        assert ("ü" in result.to_json()) == (result.source == "ü/v.mp4")  # not escaped
        again = Analysis.from_dict(report)
        assert again.to_dict() == report and list(again.to_dict()) == list(report)
        assert Analysis.from_dict(json.loads(json.dumps(report))).to_dict() == report
    assert list(report["timings"]) == ["decode", "detect", "preprocess", "model", "total"]
    video = Analysis.from_dict(json.loads(Analysis.for_video(
        source="v", width=64, height=48, frames=frames, verdict=verdict, faces=faces, rule=DEFAULT_RULE,
        model_info=MODEL, timings=timings).to_json()))  # fmt: skip
    assert video.timings.extra == {"calibrate": 0.01} and video.frames[2].score == 0.987654


def test_to_json_refuses_nan():
    from cevit.inference.aggregation import Verdict

    result = Analysis.for_image(source="a.jpg", width=8, height=8, verdict=Verdict("FAKE", math.nan, math.nan, ""),
                                faces=[_face(0, 0, math.nan)], rule=DEFAULT_RULE, model_info=MODEL,
                                timings=TIMINGS)  # fmt: skip
    with pytest.raises(ValueError):
        result.to_json()


def test_analysis_error():
    err = AnalysisError.from_exception("x.jpg", ValueError("x.jpg: truncated\nmore detail"))
    assert (err.source, err.error, err.error_type, err.status) == ("x.jpg", "x.jpg: truncated", "ValueError", "error")
    assert err.to_dict() == error_report("x.jpg", ValueError("x.jpg: truncated\nmore detail"))
    assert list(err.to_dict()) == ["schema_version", "source", "error", "error_type"]
    assert json.loads(err.to_json()) == err.to_dict() and AnalysisError.from_dict(err.to_dict()) == err
    assert AnalysisError.from_exception("y", RuntimeError()).error == "RuntimeError"  # empty message
    with pytest.raises(ValueError, match="error report"):
        Analysis.from_dict(err.to_dict())
