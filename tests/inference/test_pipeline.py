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

    monkeypatch.setattr(pipeline, "bundled_weights_path", lambda name=None: None)
    with pytest.raises(ModelError, match="no trained weights are bundled"):
        load_model()
    with pytest.raises(ModelError, match="registered weights"):
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


# -- typed results (Analysis), report schema 1.2, argument checks ---------------------------------------------------
def _without_timings(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("timings", "processing_time")}


def test_analyze_result_to_dict_equals_the_1_1_report_of_an_image(detector):
    from legacy_report import legacy_report_of, strip_1_2

    from cevit.inference.results import Analysis, Face

    result = detector.analyze_result(SAMPLE_FACE)
    assert isinstance(result, Analysis) and result.media_type == "image" and result.status == "ok"
    assert len(result.faces) == 1 and isinstance(result.faces[0], Face) and result.frames == ()
    report = result.to_dict()
    assert list(report) == ["schema_version", "source", "media_type", "status", "prediction", "confidence", "score",
                            "processing_time", "note", "model", "aggregation", "faces", "timings",
                            "dimensions"]  # fmt: skip
    old = legacy_report_of(result)  # the 1.1 builder, fed what the pipeline found
    assert strip_1_2(report) == old and list(strip_1_2(report)) == list(old)
    assert report["schema_version"] == "1.2" and report["status"] == "ok"
    assert report["score"] == round(result.score, 6) and report["faces"][0]["score"] == report["score"]
    # analyze() is analyze_result().to_dict(): the same report, apart from the time it took
    assert _without_timings(detector.analyze(SAMPLE_FACE)) == _without_timings(report)
    json.loads(result.to_json())


def test_analyze_result_to_dict_equals_the_1_1_report_of_a_video(detector, face_rgb, tmp_path):
    from legacy_report import ADDED_IN_1_2, legacy_report_of, strip_1_2

    blank = np.full_like(face_rgb, 90)
    path = write_test_video(tmp_path / "clip.mp4", [face_rgb, blank, face_rgb, blank, blank])
    result = detector.analyze_result(path, num_frames=4)
    report = result.to_dict()
    assert result.media_type == "video" and result.status == "ok" and len(result.frames) == 4
    old = legacy_report_of(result)
    assert strip_1_2(report) == old and list(strip_1_2(report)) == list(old)
    assert set(report) - set(old) <= set(ADDED_IN_1_2) and "status" in report
    assert [f.index for f in result.frames] == [f["index"] for f in report["frame_predictions"]]
    assert [f.prediction for f in result.frames] == [f["prediction"] for f in report["frame_predictions"]]
    assert result.frames_with_faces == report["frames_with_faces"] == sum(f.score is not None for f in result.frames)
    assert report["video"]["frame_count"] == 5 and report["metrics"]["final_average_score"] == report["score"]
    assert _without_timings(detector.analyze(path, num_frames=4)) == _without_timings(report)


def test_status_no_face(detector, face_rgb, tmp_path):
    from PIL import Image

    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(gray)
    video = write_test_video(tmp_path / "blank.mp4", [np.full((64, 64, 3), 90, np.uint8)] * 3)
    for path in (gray, video):
        r = detector.analyze(path)
        assert r["status"] == "no_face" and r["faces"] == [] and r["score"] is None
        assert (r["prediction"], r["confidence"], r["note"]) == ("REAL", 0.99, "No face detected")  # 1.1 keys kept
    assert detector.analyze(SAMPLE_FACE)["status"] == "ok"


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "30"])
def test_num_frames_below_one_is_a_config_error(detector, bad):
    from cevit.errors import ConfigError

    with pytest.raises(ConfigError, match="num_frames"):
        detector.analyze(SAMPLE_FACE, num_frames=bad)  # 0 is not "the default": None is
    with pytest.raises(ConfigError, match="num_frames"):
        next(detector.analyze_many([SAMPLE_FACE], num_frames=bad))  # once for the batch, not per item
    with pytest.raises(ConfigError, match="num_frames"):
        next(detector.analyze_many_results([SAMPLE_FACE], num_frames=bad))


def test_num_frames_none_is_the_default(detector, face_rgb, tmp_path):
    frames = [np.ascontiguousarray(face_rgb[:64, :64])] * 5
    path = write_test_video(tmp_path / "five.mp4", frames)
    assert detector.options.num_frames == 30
    assert detector.analyze(path, num_frames=None)["frames_analyzed"] == 5
    assert detector.analyze(path, num_frames=2)["frames_analyzed"] == 2
    assert detector.analyze(path, num_frames=np.int64(3))["frames_analyzed"] == 3  # any integer type


def test_analyze_many_results_yields_typed_results(detector, tmp_path):
    from cevit.inference.results import Analysis, AnalysisError

    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    results = list(detector.analyze_many_results([SAMPLE_FACE, bad]))
    assert isinstance(results[0], Analysis) and isinstance(results[1], AnalysisError)
    assert results[1].source == str(bad) and results[1].error_type == "UnsupportedMediaError"
    reports = list(detector.analyze_many([SAMPLE_FACE, bad]))
    assert reports[1] == results[1].to_dict()
    assert _without_timings(reports[0]) == _without_timings(results[0].to_dict())


def test_detector_implements_the_protocol(detector):
    from cevit.inference import DetectorProtocol

    assert isinstance(detector, DetectorProtocol)
    assert not isinstance(object(), DetectorProtocol)


# -- bad weights files and limits (issue 15) ---------------------------------------------------------------------
def test_bad_weights_files_are_checkpoint_errors(tmp_path):
    from cevit.errors import CheckpointError
    from cevit.inference.pipeline import load_weights

    cases = {
        "text.txt": b"hello, I am not a checkpoint\n",  # torch.load raised a raw KeyError
        "empty.safetensors": b"",
        "five.safetensors": b"abcde",  # safetensors: header too small
        "random.bin": bytes(range(256)) * 16,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_weights(path)
        assert str(path) in str(info.value) and "weights_only" not in str(info.value), name
    with pytest.raises(CheckpointError, match="is a directory"):
        load_weights(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="text.txt"):  # through the public entry point too
        load_model(weights=tmp_path / "text.txt", device="cpu")


def test_video_frame_pixel_limit_and_options(tiny_checkpoint, face_rgb, tmp_path):
    from cevit.errors import ConfigError, MediaTooLargeError

    assert AnalyzeOptions().max_frame_pixels == 40_000_000 and AnalyzeOptions().max_pixels == 100_000_000
    for bad in ({"max_frame_pixels": 0}, {"max_pixels": -1}, {"frame_chunk_pixels": 0}):
        with pytest.raises(ConfigError):
            AnalyzeOptions(**bad)
    path = write_test_video(tmp_path / "v.mp4", [face_rgb[:128, :128]] * 3)
    small = load_model(weights=tiny_checkpoint, device="cpu", max_frame_pixels=128 * 128 - 1)
    with pytest.raises(MediaTooLargeError, match="max_frame_pixels"):
        small.analyze(path)
    report = next(small.analyze_many([path]))
    assert report["error_type"] == "MediaTooLargeError" and str(path) in report["error"]


def test_damaged_video_report_counts_the_frames_that_failed(detector, face_rgb, tmp_path):
    rng = np.random.default_rng(0)
    base = face_rgb[:128, :128].astype(int)
    frames = [np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8) for _ in range(20)]
    clean = write_test_video(tmp_path / "clean.mp4", frames)
    report = detector.analyze(clean, num_frames=20)
    assert report["frames_failed"] == 0 and "could not be decoded" not in report["note"]
    data = bytearray(clean.read_bytes())
    mdat = data.find(b"mdat")
    a, b = mdat + (len(data) - mdat) * 45 // 100, mdat + (len(data) - mdat) * 55 // 100
    data[a:b] = rng.integers(0, 256, b - a, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    report = detector.analyze(damaged, num_frames=20)
    assert 0 < report["frames_failed"] and report["frames_analyzed"] + report["frames_failed"] == 20
    assert f"{report['frames_failed']} of 20 sampled frames could not be decoded" in report["note"]


def test_analyze_many_logs_nothing_above_debug_for_a_failed_item(detector, tmp_path, caplog):
    import logging

    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with caplog.at_level(logging.INFO):
        reports = list(detector.analyze_many([bad, SAMPLE_FACE]))
    assert "error" in reports[0] and "error" not in reports[1]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- precision (issue 12, item 3) -------------------------------------------------------------------------------
#: bf16 autocast on the CPU vs fp32 with the bundled default weights, 16 crops of the sample face (torch 2.13 CPU
#: build, this project's 2-core Xeon): largest difference 6.4e-3 on the face scores (probabilities) and 0.073 on the
#: logits (-3.1 to -1.7); fp16 autocast: 8.5e-4 and 0.0094. The bound keeps 3x margin over the bf16 figure. (The
#: issue's 1e-2-on-logits bound is for CUDA and is tested in tests/models/test_cuda.py.)
BF16_CPU_SCORE_TOL = 2e-2


def test_precision_is_checked_and_resolved_per_device(monkeypatch):
    import torch

    import cevit.inference.pipeline as pipeline
    from cevit.errors import ConfigError
    from cevit.inference.pipeline import PRECISIONS, resolve_precision

    assert PRECISIONS == ("auto", "fp32", "bf16", "fp16") and AnalyzeOptions().precision == "fp32"
    for bad in ("int8", "FP32", "", None):
        with pytest.raises(ConfigError, match="precision"):
            AnalyzeOptions(precision=bad)
        with pytest.raises(ConfigError, match="precision"):
            resolve_precision(bad, "cpu")
    cpu = torch.device("cpu")
    assert [resolve_precision(p, cpu) for p in PRECISIONS] == ["fp32", "fp32", "bf16", "fp16"]
    # the CUDA rules, without a GPU: auto is bf16 where the GPU has it natively, else fp16
    cuda = torch.device("cuda")
    for native, auto in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(pipeline, "_cuda_bf16", lambda device, native=native: native)
        assert resolve_precision("auto", cuda) == auto and resolve_precision("fp16", cuda) == "fp16"
        assert resolve_precision("fp32", cuda) == "fp32"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    with pytest.raises(ConfigError, match="V100 has no native bf16"):
        resolve_precision("bf16", cuda)
    # ONNX Runtime runs the exported fp32 model: auto means fp32, bf16/fp16 are refused
    assert resolve_precision("auto", cuda, backend="onnxruntime") == "fp32"
    for p in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match="torch backend"):
            resolve_precision(p, cpu, backend="onnxruntime")
        with pytest.raises(ConfigError, match="not supported on mps"):
            resolve_precision(p, torch.device("mps"))


def test_a_bad_precision_fails_before_the_weights_are_read(monkeypatch, tiny_checkpoint):
    import cevit.inference.pipeline as pipeline
    from cevit.errors import ConfigError

    def refuse(path):
        raise AssertionError("weights were read")

    monkeypatch.setattr(pipeline, "load_weights", refuse)
    with pytest.raises(ConfigError, match="unknown precision 'int8'"):
        load_model(weights=tiny_checkpoint, device="cpu", precision="int8")


def test_the_report_says_how_it_was_computed(detector, tiny_checkpoint):
    from cevit.inference.results import Analysis

    assert detector.precision == "fp32"  # auto on the CPU
    r = detector.analyze(SAMPLE_FACE)
    assert r["model"]["runtime"] == {"backend": "torch", "device": "cpu", "precision": "fp32"}
    assert Analysis.from_dict(r).to_dict()["model"]["runtime"] == r["model"]["runtime"]
    bf16 = load_model(weights=tiny_checkpoint, device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and bf16.options.precision == "bf16"
    assert bf16.analyze(SAMPLE_FACE)["model"]["runtime"]["precision"] == "bf16"


def test_bf16_autocast_on_the_cpu_scores_close_to_fp32(face_rgb):
    """The bundled default weights on a real face crop (the one of the largest difference among the sixteen
    measured; bf16 is slow on this CPU): bf16 autocast, asked for explicitly on the CPU, gives the fp32 score within
    BF16_CPU_SCORE_TOL, as a float in (0, 1), and it did run in bf16 (the scores differ)."""
    from cevit.inference.pipeline import bundled_weights_path

    if bundled_weights_path() is None:
        pytest.skip("no bundled weights in this installation")
    fp32, bf16 = load_model(device="cpu", precision="fp32"), load_model(device="cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    crops = [fp32.preprocessor.crop(face_rgb, (150 + d, 60 + d, 320 - d, 230 - d)) for d in (6,)]
    a, b = np.array(fp32.score_faces(crops)), np.array(bf16.score_faces(crops))
    assert b.dtype == np.float64 and np.all((b > 0) & (b < 1))
    assert 0 < np.abs(a - b).max() <= BF16_CPU_SCORE_TOL
