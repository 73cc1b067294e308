from __future__ import annotations

import csv
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cevit.cli.main import main
from conftest import SAMPLE_FACE, write_test_video


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_single_image_prints_one_json_object(tiny_checkpoint, capsys):
    code, out, err = run(["analyze", str(SAMPLE_FACE), "--weights", str(tiny_checkpoint), "--device", "cpu"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["source"] == str(SAMPLE_FACE) and len(report["faces"]) == 1
    assert "Traceback" not in err


def test_no_weights_fails_clearly_without_scoring(monkeypatch, capsys):
    import cevit.inference.pipeline as pipeline

    monkeypatch.setattr(pipeline, "bundled_weights_path", lambda preset: None)
    code, out, err = run(["analyze", str(SAMPLE_FACE)], capsys)
    assert code == 3 and out == ""
    assert "no trained weights are bundled" in err and "Traceback" not in err


def test_usage_errors_exit_2(tiny_checkpoint, capsys):
    assert run(["analyze"], capsys)[0] == 2
    assert run(["analyze", str(SAMPLE_FACE), "--frames", "0", "--weights", str(tiny_checkpoint)], capsys)[0] == 2
    assert run(["analyze", str(SAMPLE_FACE), "--threshold", "2", "--weights", str(tiny_checkpoint)], capsys)[0] == 2
    assert run(["frobnicate"], capsys)[0] == 2


def _png_claiming(path, width, height):
    """A tiny PNG whose header declares width x height (a decompression bomb's signature)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _bad_inputs(tmp_path, face_rgb):
    import av

    bad = {}
    bad["zero bytes"] = tmp_path / "zero.jpg"
    bad["zero bytes"].write_bytes(b"")
    bad["text as jpg"] = tmp_path / "notes.jpg"
    bad["text as jpg"].write_text("hello, I am not a picture\n")
    full = tmp_path / "full.jpg"
    Image.fromarray(face_rgb).save(full, quality=90)
    data = full.read_bytes()
    bad["truncated jpeg"] = tmp_path / "truncated.jpg"
    bad["truncated jpeg"].write_bytes(data[: len(data) // 3])
    clip = write_test_video(tmp_path / "clip_src.mp4", [face_rgb] * 6)
    vdata = clip.read_bytes()
    bad["truncated mp4"] = tmp_path / "truncated.mp4"
    bad["truncated mp4"].write_bytes(vdata[: len(vdata) // 8])
    garbage = bytearray(vdata)
    mdat = garbage.find(b"mdat")
    rng = np.random.default_rng(0)
    garbage[mdat + 4 :] = rng.integers(0, 256, len(garbage) - mdat - 4, dtype=np.uint8).tobytes()
    bad["undecodable video"] = tmp_path / "garbage.mp4"
    bad["undecodable video"].write_bytes(bytes(garbage))
    audio = tmp_path / "speech.wav"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    bad["audio only"] = audio
    bad["bomb"] = _png_claiming(tmp_path / "bomb.png", 20000, 20000)
    bad["missing"] = tmp_path / "missing.png"
    empty_dir = tmp_path / "no_media"
    empty_dir.mkdir()
    (empty_dir / "readme.txt").write_text("x")
    bad["folder without media"] = empty_dir
    return bad


def test_batch_with_every_kind_of_bad_input_finishes(tiny_checkpoint, face_rgb, tmp_path, capsys):
    bad = _bad_inputs(tmp_path, face_rgb)
    good = tmp_path / "good.jpg"
    Image.fromarray(face_rgb).save(good)
    argv = ["analyze", *map(str, bad.values()), str(good), "--weights", str(tiny_checkpoint), "--device", "cpu"]
    code, out, err = run(argv, capsys)
    assert code == 1  # some inputs failed
    lines = [json.loads(line) for line in out.splitlines()]
    by_source = {r["source"]: r for r in lines}
    assert "error" not in by_source[str(good)] and by_source[str(good)]["faces"]
    for kind, path in bad.items():
        report = by_source[str(path)]
        assert "error" in report, kind
        assert str(path) in report["error"], (kind, report["error"])
        assert report["error"] in err, kind  # a stderr line per failure
        assert len(_error_lines(err, path)) == 1, (kind, err)  # and only one (the summary table aside)
    assert "Traceback" not in err
    assert (
        "too large" in by_source[str(bad["bomb"])]["error"].lower() or "pixels" in by_source[str(bad["bomb"])]["error"]
    )
    assert "no video stream" in by_source[str(bad["audio only"])]["error"]
    # the batch summary on stderr, most suspicious first, failures listed
    assert "inputs," in err and "failed" in err


def test_formats_and_outputs(tiny_checkpoint, face_rgb, tmp_path, capsys):
    a, b = tmp_path / "in" / "a.jpg", tmp_path / "in" / "sub" / "b.png"
    b.parent.mkdir(parents=True)
    Image.fromarray(face_rgb).save(a)
    Image.fromarray(face_rgb[:, ::-1].copy()).save(b)
    base = ["--weights", str(tiny_checkpoint), "--device", "cpu", "--quiet"]
    # folder (recursive) -> JSON Lines
    code, out, _ = run(["analyze", str(tmp_path / "in"), *base], capsys)
    assert code == 0 and [json.loads(x)["source"] for x in out.splitlines()] == [str(a), str(b)]
    # glob + csv
    code, out, _ = run(["analyze", str(tmp_path / "in" / "*.jpg"), "--format", "csv", *base], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 1 and rows[0]["source"] == str(a) and rows[0]["num_faces"] == "1"
    # table
    code, out, _ = run(["analyze", str(a), str(b), "--format", "table", *base], capsys)
    assert code == 0 and out.splitlines()[0].startswith("PREDICTION") and len(out.splitlines()) == 3
    # --output FILE (json array for several inputs)
    target = tmp_path / "reports.json"
    code, out, _ = run(["analyze", str(a), str(b), "--format", "json", "--output", str(target), *base], capsys)
    assert code == 0 and out == "" and len(json.loads(target.read_text())) == 2
    # --output DIR: one json per input
    outdir = str(tmp_path / "out") + "/"
    code, _, _ = run(["analyze", str(a), str(b), "--output", str(outdir), *base], capsys)
    assert code == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg.json", "b.png.json"]


def test_debug_shows_traceback_for_errors(tiny_checkpoint, capsys, monkeypatch):
    import cevit.inference.pipeline as pipeline

    monkeypatch.setattr(pipeline, "bundled_weights_path", lambda preset: None)
    with pytest.raises(Exception, match="no trained weights"):
        main(["--debug", "analyze", str(SAMPLE_FACE)])


def test_video_input_via_cli(tiny_checkpoint, face_rgb, tmp_path, capsys):
    path = write_test_video(tmp_path / "v.mp4", [face_rgb] * 5)
    code, out, err = run(
        ["analyze", str(path), "--frames", "3", "--weights", str(tiny_checkpoint), "--device", "cpu"], capsys
    )
    r = json.loads(out)
    assert code == 0 and r["media_type"] == "video" and r["frames_analyzed"] == 3
    assert [f["index"] for f in r["frame_predictions"]] == [0, 2, 4]


# -- found when tried as a new user (issue 15) -------------------------------------------------------------------
def _model_must_not_load(monkeypatch):
    """Make any model load fail the test: the command must decide without the model."""
    import cevit.inference.pipeline as pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipeline, "load_model", refuse)


def _error_lines(err: str, path) -> list[str]:
    lines = [part for line in err.splitlines() for part in line.split("\r")]  # progress bars redraw with \r
    return [line for line in lines if line.startswith("cevit:") and str(path) in line]


def test_symlink_loop_in_a_folder_fails_alone(tiny_checkpoint, face_rgb, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = folder / "a.jpg"
    Image.fromarray(face_rgb).save(good)
    loop = folder / "loop.jpg"
    loop.symlink_to(loop.name)
    code, out, err = run(["analyze", str(folder), "--weights", str(tiny_checkpoint), "--device", "cpu", "-q"], capsys)
    by_source = {r["source"]: r for r in map(json.loads, out.splitlines())}
    assert code == 1 and "internal error" not in err
    assert "error" not in by_source[str(good)]
    assert "symlink loop" in by_source[str(loop)]["error"] and str(loop) in by_source[str(loop)]["error"]
    code, out, err = run(["analyze", str(loop), "--weights", str(tiny_checkpoint)], capsys)
    assert code == 1 and "symlink loop" in json.loads(out)["error"] and "does not exist" not in err


@pytest.mark.parametrize("kind", ["text", "empty", "five bytes", "directory", "random"])
def test_bad_weights_exit_3_with_a_clear_message(tmp_path, capsys, kind):
    weights = {"text": tmp_path / "w.txt", "empty": tmp_path / "w.safetensors", "five bytes": tmp_path / "f.safetensors",
               "directory": tmp_path / "wdir", "random": tmp_path / "w.bin"}[kind]  # fmt: skip
    if kind == "directory":
        weights.mkdir()
    else:
        data = {"text": b"hello world\n", "empty": b"", "five bytes": b"abcde",
                "random": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()}[kind]  # fmt: skip
        weights.write_bytes(data)
    code, out, err = run(["analyze", str(SAMPLE_FACE), "--weights", str(weights)], capsys)
    assert code == 3, err
    assert out == "" and "internal error" not in err and "Traceback" not in err
    assert str(weights) in err and "weights_only" not in err and len(err.strip().splitlines()) == 1


def test_output_target_and_device_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    _model_must_not_load(monkeypatch)
    code, out, err = run(["analyze", str(SAMPLE_FACE), "--output", str(tmp_path / "nonexistent" / "dir" / "out.csv")],
                         capsys)  # fmt: skip
    assert code == 2 and "does not exist" in err and "nonexistent" in err and out == ""
    code, _, err = run(["analyze", str(SAMPLE_FACE), "--device", "tpu"], capsys)
    assert code == 2 and "tpu" in err and "internal error" not in err
    code, _, err = run(["analyze", str(SAMPLE_FACE), "--format", "table", "--output", str(tmp_path / "reports") + "/"],
                       capsys)  # fmt: skip
    assert code == 2 and "--format table" in err
    for flag in ("--max-pixels", "--max-frame-pixels"):
        assert run(["analyze", str(SAMPLE_FACE), flag, "0"], capsys)[0] == 2


def test_inputs_rejected_at_once_do_not_load_the_model(tmp_path, capsys, monkeypatch):
    _model_must_not_load(monkeypatch)
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    code, out, err = run(["analyze", str(text), str(empty), str(missing), "--weights", "no-such-file"], capsys)
    assert code == 1
    reports = [json.loads(line) for line in out.splitlines()]
    assert [r["source"] for r in reports] == [str(missing), str(text), str(empty)]
    assert all("error" in r for r in reports)
    for path in (text, empty, missing):
        assert len(_error_lines(err, path)) == 1  # one stderr line per failed input


def test_debug_works_after_the_subcommand(capsys, monkeypatch):
    import cevit.inference.pipeline as pipeline

    monkeypatch.setattr(pipeline, "bundled_weights_path", lambda *a, **k: None)
    with pytest.raises(Exception, match="bundled"):
        main(["analyze", str(SAMPLE_FACE), "--debug"])


def _grey_jpeg_with_corrupt_exif(path):
    """A face-less grey photo whose EXIF block declares more data than it holds (Pillow warns about it)."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHII", 0x010E, 2, 1000, 26)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(path, exif=b"Exif\x00\x00" + tiff + struct.pack("<I", 0))
    return path


def test_table_csv_and_summary_show_no_face_errors_once_and_no_library_warnings(tiny_checkpoint, tmp_path, capsys,
                                                                                 monkeypatch):  # fmt: skip
    import warnings

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # a terminal: the summary is shown
    grey = _grey_jpeg_with_corrupt_exif(tmp_path / "grey.jpg")
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    base = ["analyze", str(grey), str(bad), "--weights", str(tiny_checkpoint), "--device", "cpu"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run([*base, "--format", "table"], capsys)
    assert code == 1
    assert not [w for w in caught if "EXIF" in str(w.message) or "Tag data" in str(w.message)]
    assert "Warning" not in err
    grey_row = next(line for line in out.splitlines() if str(grey) in line)
    assert grey_row.startswith("NO_FACE") and "no face found" in grey_row and "REAL" not in grey_row
    bad_row = next(line for line in out.splitlines() if str(bad) in line)
    assert bad_row.startswith("ERROR") and bad_row.count(str(bad)) == 1  # the path is not repeated
    assert out.count("PREDICTION") == 1 and len(out.splitlines()) == 3
    assert "PREDICTION" not in err  # the table is on stdout: not printed a second time on stderr
    assert "2 inputs, 1 analysed (1 with no face found), 1 failed" in err
    assert len(_error_lines(err, bad)) == 1
    code, out, err = run([*base, "--format", "csv", "-q"], capsys)
    rows = {r["source"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows[str(grey)]["prediction"] == "NO_FACE" and rows[str(grey)]["confidence"] == ""
    assert rows[str(grey)]["status"] == "no_face" and rows[str(grey)]["num_faces"] == "0"
    assert rows[str(bad)]["num_faces"] == "" and rows[str(bad)]["status"] == "error"


def test_format_table_treats_a_report_without_score_as_no_face():
    from cevit.cli.analyze import _csv_row, format_table

    old_style = {"source": "x.jpg", "media_type": "image", "prediction": "REAL", "confidence": 0.99, "score": None,
                 "faces": []}  # fmt: skip
    assert format_table([old_style]).splitlines()[1].startswith("NO_FACE")
    assert _csv_row(old_style)["prediction"] == "NO_FACE"
    fake = {"source": "y.mp4", "media_type": "video", "status": "ok", "prediction": "FAKE", "confidence": 0.9,
            "score": 0.9, "faces": [{}], "frames_failed": 3}  # fmt: skip
    row = format_table([old_style, fake]).splitlines()[1]
    assert row.startswith("FAKE") and "3 sampled frames could not be decoded" in row


def test_frame_progress_rate_counts_from_the_start_of_the_item():
    from cevit.cli.analyze import _Progress

    progress = _Progress(2, enabled=True, stream=io.StringIO())
    progress._item_start -= 100.0  # the item started 100 s ago; the bar appears after its first chunk
    progress.frame_callback(8, 30)
    bar = progress.frames
    elapsed = bar.format_dict["elapsed"]
    assert bar.n == 8 and elapsed >= 100.0 and 8 / elapsed < 1.0  # about 0.08 frame/s, not 10^5
    assert "frame/s" in str(bar) or "s/frame" in str(bar)
    progress.frame_callback(16, 30)
    assert bar.n == 16
    progress.file_done()
    progress.close()


def test_output_dir_names_stay_inside_and_writes_are_atomic(tiny_checkpoint, face_rgb, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    long_name = inputs / ("é" * 100 + "x" * 40 + ".jpg")  # 245 bytes: + ".json" is over the 255-byte limit
    hidden_like = inputs / "..weird.jpg"
    for path in (long_name, hidden_like):
        Image.fromarray(face_rgb).save(path, format="JPEG")
    outdir = tmp_path / "out"
    code, _, err = run(["analyze", str(long_name), str(hidden_like), str(tmp_path / "gone.jpg"), "-o", str(outdir) + "/",
                        "--weights", str(tiny_checkpoint), "--device", "cpu", "-q"], capsys)  # fmt: skip
    assert code == 1, err
    names = sorted(p.name for p in outdir.iterdir())
    assert len(names) == 3 and all(n.endswith(".json") and not n.startswith(".") for n in names)
    assert all(len(n.encode()) <= 255 for n in names)
    sources = {json.loads((outdir / n).read_text())["source"] for n in names}
    assert sources == {str(long_name), str(hidden_like), str(tmp_path / "gone.jpg")}


def test_video_frame_pixel_limit_flag(tiny_checkpoint, face_rgb, tmp_path, capsys):
    path = write_test_video(tmp_path / "v.mp4", [face_rgb[:64, :64]] * 3)
    code, out, err = run(["analyze", str(path), "--max-frame-pixels", "4000", "--weights", str(tiny_checkpoint),
                          "--device", "cpu"], capsys)  # fmt: skip
    report = json.loads(out)
    assert code == 1 and report["error_type"] == "MediaTooLargeError"
    assert "64x64" in report["error"] and "4000" in report["error"] and str(path) in report["error"]


def _is_png(path) -> bool:
    with Image.open(path) as img:
        img.verify()
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_writes_valid_pngs_listed_in_the_report(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "explain"
    code, stdout, err = run(["analyze", str(SAMPLE_FACE), "--weights", str(tiny_checkpoint), "--device", "cpu",
                             "--explain", str(out), "--explain-method", "attention"], capsys)  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    block = report["explanations"]
    assert block["method"] == "attention" and len(block["faces"]) == len(report["faces"]) == 1
    files = [block["files"]["annotated"], block["files"]["contact_sheet"], block["faces"][0]["overlay"]]
    assert block["files"]["timeline"] is None
    for rel in files:
        assert not rel.startswith("/") and ".." not in rel and rel.startswith("astronaut.jpg/")
        assert _is_png(out / rel)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(files)


def test_explain_method_without_explain_is_a_usage_error(tiny_checkpoint, capsys):
    code, out, err = run(["analyze", str(SAMPLE_FACE), "--weights", str(tiny_checkpoint),
                          "--explain-method", "gradcam"], capsys)  # fmt: skip
    assert code == 2 and "--explain-method needs --explain" in err


def test_resource_limit_flags(tiny_checkpoint, face_rgb, tmp_path, capsys):
    video = write_test_video(tmp_path / "two_seconds.mp4", [face_rgb[:64, :64]] * 20, rate=10)
    weights = ["--weights", str(tiny_checkpoint), "--device", "cpu"]
    code, out, err = run(["analyze", str(video), "--max-video-seconds", "1.5", *weights], capsys)
    report = json.loads(out)
    assert code == 1 and report["error_type"] == "MediaTooLargeError"
    assert str(video) in report["error"] and "max_video_seconds=1.5" in report["error"]
    assert err.count("max_video_seconds=1.5") == 1  # one stderr line for the failed item
    code, out, err = run(["analyze", str(SAMPLE_FACE), "--max-faces", "none", "--max-item-seconds", "none",
                          "--max-video-seconds", "off", "--max-item-memory-mb", "64", *weights], capsys)  # fmt: skip
    assert code == 0, err
    for flag, value in [("--max-faces", "0"), ("--max-faces", "1.5"), ("--max-item-seconds", "-3"),
                        ("--max-item-memory-mb", "lots")]:  # fmt: skip
        code, out, err = run(["analyze", str(SAMPLE_FACE), flag, value, *weights], capsys)
        assert code == 2 and flag in err, (flag, value, err)


def _photos(tmp_path, face_rgb, n):
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for i in range(n):
        p = folder / f"p{i:02d}.jpg"
        image = face_rgb if i % 2 == 0 else np.full((96, 128, 3), 20 * i, np.uint8)
        Image.fromarray(image).save(p)
        paths.append(p)
    return folder, paths


def test_workers_and_unordered(tiny_checkpoint, face_rgb, tmp_path, capsys):
    folder, paths = _photos(tmp_path, face_rgb, 6)
    base = ["analyze", str(folder), "--weights", str(tiny_checkpoint), "--device", "cpu", "--quiet"]
    outputs = {}
    for flags in ([], ["--workers", "0"], ["--workers", "2"]):
        code, out, err = run([*base, *flags], capsys)
        assert code == 0, err
        outputs[tuple(flags)] = [json.loads(line) for line in out.splitlines()]
        assert [r["source"] for r in outputs[tuple(flags)]] == [str(p) for p in paths]  # input order
    for reports in outputs.values():
        assert [r["score"] for r in reports] == pytest.approx([r["score"] for r in outputs[()]], abs=1e-5, nan_ok=True)
    code, out, err = run([*base, "--workers", "2", "--unordered"], capsys)
    assert code == 0, err
    assert sorted(json.loads(line)["source"] for line in out.splitlines()) == sorted(str(p) for p in paths)
    code, out, err = run([*base, "--workers", "-1"], capsys)
    assert code == 2 and "--workers must be >= 0" in err


@pytest.mark.parametrize("target", ["file", "dir"])
def test_interrupt_keeps_the_finished_reports(tiny_checkpoint, face_rgb, tmp_path, capsys, monkeypatch, target):
    """Ctrl-C during a batch: exit 130, the reports finished before it are written (--output FILE or DIR/)."""
    import cevit.cli.analyze as analyze_cli

    folder, paths = _photos(tmp_path, face_rgb, 8)
    done = []
    original = analyze_cli._Progress.file_done

    def file_done(self):
        if len(done) == 3:
            raise KeyboardInterrupt  # arrives in the main thread, as Ctrl-C does
        done.append(1)
        original(self)

    monkeypatch.setattr(analyze_cli._Progress, "file_done", file_done)
    out = str(tmp_path / "reports.jsonl") if target == "file" else str(tmp_path / "out") + "/"
    code, stdout, err = run(["analyze", str(folder), "--weights", str(tiny_checkpoint), "--device", "cpu",
                             "--workers", "1", "--output", out], capsys)  # fmt: skip
    assert code == 130 and "interrupted" in err
    if target == "file":
        kept = [json.loads(line)["source"] for line in Path(out).read_text().splitlines()]
    else:
        kept = [str(folder / p.name[: -len(".json")]) for p in sorted((tmp_path / "out").iterdir())]
    assert kept == [str(p) for p in paths[:3]]


def test_precision_flag_reaches_the_library(capsys, monkeypatch, tmp_path):
    """--precision is parsed (a bad value is a usage error, exit 2, before any model) and passed to load_model by
    analyze and evaluate; scan carries it in its DetectorSpec."""
    import cevit.inference.pipeline as pipeline
    from cevit.errors import ConfigError

    _model_must_not_load(monkeypatch)
    code, _, err = run(["analyze", str(SAMPLE_FACE), "--precision", "int8"], capsys)
    assert code == 2 and "--precision" in err and "int8" in err
    seen = []

    def capture(*args, **kwargs):
        seen.append(kwargs["precision"])
        raise ConfigError("stop here")

    monkeypatch.setattr(pipeline, "load_model", capture)
    assert run(["analyze", str(SAMPLE_FACE), "--precision", "bf16"], capsys)[0] == 2
    assert run(["analyze", str(SAMPLE_FACE)], capsys)[0] == 2
    assert run(["evaluate", str(tmp_path), "--output", str(tmp_path / "o"), "--precision", "fp16"], capsys)[0] == 2
    assert seen == ["bf16", "fp32", "fp16"]  # fp32 by default
    from cevit.cli.main import build_parser
    from cevit.scan import DetectorSpec

    args = build_parser().parse_args(["scan", str(tmp_path), "--output", str(tmp_path / "s"), "--precision", "fp32"])
    with pytest.raises(ConfigError, match="stop here"):
        DetectorSpec(device="cpu", precision=args.precision).load()
    assert seen[-1] == "fp32"
