"""Explained analyses (Detector.analyze_result(explain=...)) and their PNGs (cevit.explain.render)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cevit.explain import render
from conftest import SAMPLE_FACE, write_test_video


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    from cevit.inference.pipeline import load_model

    return load_model(weights=tiny_checkpoint, device="cpu")


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    img.verify()
    return Image.open(io.BytesIO(data))


def test_without_explain_nothing_changes_and_no_map_is_computed(detector, monkeypatch):
    import cevit.explain.maps as maps

    def boom(*args, **kwargs):
        raise AssertionError("heat maps computed without explain")

    monkeypatch.setattr(maps, "face_heatmaps", boom)
    result = detector.analyze_result(SAMPLE_FACE)
    report = detector.analyze(SAMPLE_FACE)
    assert result.explanations is None and "explanations" not in report and "explain" not in report["timings"]
    assert set(report) == set(result.to_dict())


def test_explained_image_holds_maps_and_writes_valid_pngs(detector, tmp_path):
    result = detector.analyze_result(SAMPLE_FACE, explain="attention")
    expl = result.explanations
    size = detector.preprocessing.input_size
    assert expl is not None and expl.method == "attention" and len(expl.faces) == len(result.faces) == 1
    face = expl.faces[0]
    assert face.heatmap.shape == (size, size) and face.crop.shape == (size, size, 3)
    assert np.isfinite(face.heatmap).all() and 0.0 <= face.heatmap.min() and face.heatmap.max() <= 1.0
    assert face.score == result.faces[0].score
    report = result.to_dict()
    assert report["explanations"]["method"] == "attention" and "explain" in report["timings"]
    assert report["prediction"] == detector.analyze(SAMPLE_FACE)["prediction"]  # the verdict is unchanged

    block = render.write_explanations(result, tmp_path / "out")
    files = block["files"]
    assert files["timeline"] is None  # an image has no timeline
    annotated = _png((tmp_path / "out" / files["annotated"]).read_bytes())
    assert annotated.size == (result.width, result.height)
    overlay = _png((tmp_path / "out" / block["faces"][0]["overlay"]).read_bytes())
    assert overlay.size == (size, size)
    _png((tmp_path / "out" / files["contact_sheet"]).read_bytes())


def test_explained_video_annotates_the_most_suspicious_frame_and_draws_a_timeline(detector, tmp_path, face_rgb):
    face = np.asarray(Image.fromarray(face_rgb).resize((160, 160)))
    frames = []
    for i in range(6):
        frame = np.full((240, 320, 3), 60, np.uint8)
        if i not in (2, 3):  # frames 2 and 3: no face
            frame[40:200, 40 + 10 * i : 200 + 10 * i] = face
        frames.append(frame)
    video = write_test_video(tmp_path / "clip.mp4", frames)
    result = detector.analyze_result(video, num_frames=6, explain="attention")
    assert any(f.prediction == "NO_FACE" for f in result.frames) and result.faces
    best = max(result.faces, key=lambda f: f.score)
    assert result.explanations.frame_index == best.frame_index
    pngs = render.render_explanations(result)
    timeline = np.asarray(_png(pngs["timeline.png"]).convert("RGB"))
    assert (timeline == (140, 140, 160)).all(axis=2).sum() > 10  # the grey NO_FACE crosses

    no_gap = render.timeline(result.__class__(**{**result.__dict__, "frames": tuple(
        f for f in result.frames if f.prediction != "NO_FACE")}))  # fmt: skip
    assert (no_gap == (140, 140, 160)).all(axis=2).sum() == 0
    assert {"annotated.png", "contact_sheet.png", "timeline.png"} <= set(pngs)
    assert sum(name.startswith("faces/") for name in pngs) == len(result.faces)


def test_render_needs_explanations(detector):
    from cevit.errors import ConfigError

    with pytest.raises(ConfigError, match="no explanations"):
        render.render_explanations(detector.analyze_result(SAMPLE_FACE))
