from __future__ import annotations

import json

import numpy as np
import pytest

from cevit.errors import MediaError, ModelError
from cevit.inference.pipeline import AnalyzeOptions, load_model
from conftest import SAMPLE_FACE, write_test_video


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    return load_model(weights=tiny_checkpoint, device="cpu")


def test_no_bundled_weights_is_a_clear_error(monkeypatch):
    import cevit.inference.pipeline as pipeline

    monkeypatch.setattr(pipeline, "bundled_weights_path", lambda preset: None)
    with pytest.raises(ModelError, match="no trained weights are bundled"):
        load_model("CROSS-EFFICIENT-VIT-V1")
    with pytest.raises(ModelError, match="valid presets"):
        load_model("nope")


def test_analyze_image_report(detector, tiny_checkpoint):
    r = detector.analyze(media_path=SAMPLE_FACE)
    assert r["media_type"] == "image" and r["source"] == str(SAMPLE_FACE)
    assert r["prediction"] in ("REAL", "FAKE") and 0.5 <= r["confidence"] <= 1.0
    assert r["dimensions"] == {"width": 512, "height": 512}
    assert len(r["faces"]) == 1
    x1, y1, x2, y2 = r["faces"][0]["box"]
    assert 150 < (x1 + x2) / 2 < 300 and 60 < (y1 + y2) / 2 < 200  # the astronaut's face
    assert r["faces"][0]["score"] == r["score"]
    from cevit.checkpoint import file_sha256

    assert r["model"]["checkpoint_sha256"] == file_sha256(tiny_checkpoint)
    json.dumps(r, allow_nan=False)


def test_scores_match_a_direct_model_call(detector, face_rgb):
    """The pipeline's face score equals crop → contract preprocessing → model, done by hand."""
    import torch

    from cevit.checkpoint import load_checkpoint
    from cevit.preprocess import preprocess_faces

    r = detector.analyze(media_path=SAMPLE_FACE)
    model = load_checkpoint(detector.checkpoint_path)
    x = preprocess_faces([face_rgb], [r["faces"][0]["box"]], model.preprocessing)
    with torch.inference_mode():
        expected = torch.sigmoid(model(x)).item()
    assert abs(r["faces"][0]["score"] - expected) < 1e-3  # box rounded to 0.1 px in the report


def test_image_without_face(detector, tmp_path):
    from PIL import Image

    path = tmp_path / "gray.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(path)
    r = detector.analyze(media_path=path)
    assert (r["prediction"], r["confidence"], r["note"], r["faces"]) == ("REAL", 0.99, "No face detected", [])


def test_analyze_video_keeps_frames_without_faces(detector, face_rgb, tmp_path):
    blank = np.full_like(face_rgb, 90)
    frames = [face_rgb if i % 2 == 0 else blank for i in range(8)]
    path = write_test_video(tmp_path / "clip.mp4", frames)
    seen = []
    r = detector.analyze(media_path=path, num_frames=30, progress=lambda d, t: seen.append((d, t)))
    assert r["media_type"] == "video" and r["frames_analyzed"] == 8
    fp = r["frame_predictions"]
    assert [f["index"] for f in fp] == list(range(8))
    assert [f["prediction"] == "NO_FACE" for f in fp] == [i % 2 == 1 for i in range(8)]
    assert all(f["score"] is None for f in fp[1::2]) and all(isinstance(f["score"], float) for f in fp[::2])
    assert r["frames_with_faces"] == 4 and len(r["faces"]) == 4
    assert fp[2]["timestamp"] == pytest.approx(0.2, abs=1e-3)
    assert isinstance(r["metrics"]["final_average_score"], float)
    assert seen and seen[-1][0] == 8
    # sampling fewer frames than the video has
    r4 = detector.analyze(media_path=path, num_frames=4)
    assert r4["frames_analyzed"] == 4


def test_analyze_many_survives_bad_items(detector, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    reports = list(detector.analyze_many([bad, SAMPLE_FACE, empty, tmp_path / "missing.png"]))
    assert [("error" in r) for r in reports] == [True, False, True, True]
    assert str(bad) in reports[0]["error"] and "empty" in reports[2]["error"]
    assert "does not exist" in reports[3]["error"]


def test_threshold_and_rule_are_written_into_the_report(detector):
    r = detector.analyze(media_path=SAMPLE_FACE, threshold=0.0, rule="coccomini2022-video")
    assert r["aggregation"]["rule"] == "coccomini2022-video" and r["aggregation"]["label_threshold"] == 0.0
    assert r["prediction"] == "FAKE"  # any score > 0 is FAKE at threshold 0


def test_options_validation():
    from cevit.errors import ConfigError

    with pytest.raises(ConfigError):
        AnalyzeOptions(num_frames=0)


def test_media_error_for_single_bad_file(detector, tmp_path):
    bad = tmp_path / "t.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 10)  # a JPEG header and nothing else
    with pytest.raises(MediaError, match=str(bad)):
        detector.analyze(media_path=bad)


@pytest.mark.slow
def test_load_model_converts_the_authors_pth_on_the_fly(tmp_path):
    import torch

    from cevit.models import create_model

    torch.manual_seed(0)
    original = create_model("coccomini2022").eval()
    path = tmp_path / "cross_efficient_vit.pth"
    torch.save(original.state_dict(), path)  # a plain state dict in the authors' key names
    det = load_model(weights=path, device="cpu")
    assert det.preprocessing.channel_order == "BGR" and det.model_info["preset"] == "coccomini2022"
    r = det.analyze(media_path=SAMPLE_FACE)
    assert len(r["faces"]) == 1 and r["model"]["name"] == "cross_efficient_vit.pth"


def test_weights_format_is_sniffed_from_the_safetensors_header(tmp_path, monkeypatch):
    """A safetensors header length whose low byte is 0x80 must not be mistaken for a pickle."""
    import cevit.inference.pipeline as pipeline

    calls = []
    monkeypatch.setattr("cevit.checkpoint.load_checkpoint", lambda p: calls.append(("own", p)))
    monkeypatch.setattr("cevit.convert.load_original_checkpoint", lambda p: calls.append(("orig", p)))
    own = tmp_path / "a.safetensors"
    own.write_bytes((0x180).to_bytes(8, "little") + b'{"__metadata__": {}}')
    pth = tmp_path / "b.pth"
    pth.write_bytes(b"PK\x03\x04rest-of-zip")
    pickle_file = tmp_path / "c.pth"
    pickle_file.write_bytes(b"\x80\x02}q\x00.")
    for p in (own, pth, pickle_file):
        pipeline.load_weights(p)
    assert [c[0] for c in calls] == ["own", "orig", "orig"]
