from __future__ import annotations

import csv
import io
import json
import struct
import zlib

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
    assert "Traceback" not in err
    assert "too large" in by_source[str(bad["bomb"])]["error"].lower() or "pixels" in by_source[str(bad["bomb"])]["error"]
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
    code, out, err = run(["analyze", str(path), "--frames", "3", "--weights", str(tiny_checkpoint), "--device", "cpu"], capsys)
    r = json.loads(out)
    assert code == 0 and r["media_type"] == "video" and r["frames_analyzed"] == 3
    assert [f["index"] for f in r["frame_predictions"]] == [0, 2, 4]
