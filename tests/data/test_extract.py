from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from cevit.cli.main import main
from cevit.errors import ConfigError
from cevit.data import INDEX_COLUMNS, save_face_crop
from cevit.data.extract import ExtractConfig, extract_faces
from cevit.data.layouts import discover
from conftest import write_test_video


def _dataset(tmp_path, face_rgb):
    root = tmp_path / "data"
    (root / "real").mkdir(parents=True)
    (root / "fake" / "methodA").mkdir(parents=True)
    (root / "fake" / "methodB").mkdir(parents=True)
    write_test_video(root / "real" / "clip.mp4", [face_rgb] * 6)
    Image.fromarray(face_rgb).save(root / "fake" / "methodA" / "x_0001.jpg")
    Image.fromarray(face_rgb[:, ::-1].copy()).save(root / "fake" / "methodB" / "x_0001.jpg")  # same name, other method
    (root / "fake" / "methodA" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return root


def _rows(index):
    with open(index, newline="") as fh:
        return list(csv.DictReader(fh))


def test_extract_short_clip_and_images(tmp_path, face_rgb):
    root = _dataset(tmp_path, face_rgb)
    out = tmp_path / "out"
    s = extract_faces(root, out, config=ExtractConfig(num_frames=3))
    assert (s.items, s.failed) == (4, 1)
    rows = _rows(s.index_path)
    assert list(rows[0].keys()) == list(INDEX_COLUMNS)
    video_rows = [r for r in rows if r["source"] == "real/clip.mp4"]
    assert [int(r["frame_index"]) for r in video_rows] == [0, 2, 5] or len(video_rows) == 3
    assert all(r["label"] == "real" and r["method"] == "original" and r["group"] == "clip" for r in video_rows)
    fakes = [r for r in rows if r["label"] == "fake"]
    assert sorted(r["method"] for r in fakes) == ["methodA", "methodB"]
    assert len({r["crop_path"] for r in fakes}) == 2  # same file name, two methods: no overwrite
    for r in rows:
        img = cv2.imread(str(out / r["crop_path"]))
        assert img is not None and img.shape[0] == img.shape[1] <= 320
        x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 < x2 <= img.shape[1] and 0 <= y1 < y2 <= img.shape[0]
        eyes_y = float(r["lm0y"]), float(r["lm1y"])
        assert y1 < min(eyes_y) and max(eyes_y) < float(r["lm3y"]) < y2
    failures = (out / "failures.csv").read_text()
    assert "broken.png" in failures


def test_extract_resumes_and_skips_done_items(tmp_path, face_rgb):
    root = _dataset(tmp_path, face_rgb)
    out = tmp_path / "out"
    extract_faces(root, out, config=ExtractConfig(num_frames=2))
    lines = (out / "progress.jsonl").read_text().splitlines()
    # simulate a kill in the middle of writing the last record
    (out / "progress.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    s = extract_faces(root, out, config=ExtractConfig(num_frames=2))
    ok_before = sum(1 for line in lines[:-1] if json.loads(line)["status"] == "ok")
    assert s.done_before == ok_before and s.processed == 4 - ok_before
    assert len(_rows(s.index_path)) == len({r["crop_path"] for r in _rows(s.index_path)})


def test_save_face_crop_maps_coordinates():
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[50:150, 100:180] = 255
    saved = save_face_crop(frame, (100, 50, 180, 150), [(120, 80), (160, 80), (140, 100), (125, 130), (155, 130)],
                           margin=0.5, max_size=75)  # fmt: skip
    assert saved.image.shape == (75, 75, 3)
    # side 100 * 1.5 = 150 -> scale 0.5; box centred
    assert saved.box == pytest.approx((17.5, 12.5, 57.5, 62.5), abs=0.6)
    assert saved.landmarks[0] == pytest.approx((27.5, 27.5), abs=0.6)
    # the square (65..215, 25..175) lies inside the 300x200 frame: all of it is valid
    assert saved.valid == pytest.approx((0, 0, 75, 75))


def test_save_face_crop_records_the_in_frame_region_at_the_edge():
    frame = np.full((100, 120, 3), 200, np.uint8)
    # a face touching the left and top edges: its 1.6x square (side 64) starts at (-12, -14) in the frame
    saved = save_face_crop(frame, (0, 0, 40, 36), [], margin=0.6, max_size=1000)
    assert saved.image.shape == (64, 64, 3)
    x1, y1, x2, y2 = (int(v) for v in saved.valid)
    assert (x1, y1, x2, y2) == (12, 14, 64, 64)
    assert (saved.image[y1:y2, x1:x2] == 200).all()  # the frame's pixels
    outside = np.ones(saved.image.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert (saved.image[outside] == 0).all()  # zero padding everywhere else


def test_flat_folder_needs_a_label_and_groups_by_identity(tmp_path, face_rgb):
    flat = tmp_path / "lfw"
    flat.mkdir()
    for name in ("Ann_Lee_0001.jpg", "Ann_Lee_0002.jpg", "Bob_0001.jpg"):
        Image.fromarray(face_rgb).save(flat / name)
    with pytest.raises(ConfigError, match="--label"):
        discover(flat)
    items = discover(flat, label="real")
    assert [i.group for i in items] == ["Ann_Lee", "Ann_Lee", "Bob"]


def test_ffpp_and_dfdc_layouts(tmp_path):
    ff = tmp_path / "ff"
    (ff / "original_sequences/youtube/c23/videos").mkdir(parents=True)
    (ff / "manipulated_sequences/Deepfakes/c23/videos").mkdir(parents=True)
    (ff / "splits").mkdir()
    for p in ("original_sequences/youtube/c23/videos/000.mp4", "original_sequences/youtube/c23/videos/003.mp4",
              "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4"):  # fmt: skip
        (ff / p).write_bytes(b"x")
    (ff / "splits" / "val.json").write_text('[["000", "003"]]')
    items = discover(ff)
    assert {i.group for i in items} == {"000_003"} and {i.split for i in items} == {"val"}
    assert {(i.label, i.method) for i in items} == {("real", "original"), ("fake", "Deepfakes")}
    dfdc = tmp_path / "dfdc" / "dfdc_train_part_0"
    dfdc.mkdir(parents=True)
    (dfdc / "metadata.json").write_text(json.dumps({"a.mp4": {"label": "FAKE", "split": "train", "original": "b.mp4"},
                                                    "b.mp4": {"label": "REAL", "split": "train"}}))  # fmt: skip
    items = discover(tmp_path / "dfdc")
    assert [(i.label, i.group) for i in items] == [("fake", "b"), ("real", "b")]


def test_cli_extract_faces(tmp_path, face_rgb, capsys, caplog):
    root = _dataset(tmp_path, face_rgb)
    code = main(["extract-faces", str(root), "--output", str(tmp_path / "o"), "--frames", "2", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 1 and "1 failed" in out and "Traceback" not in err
    assert "broken.png" in caplog.text + err  # a warning line names the failed file


def test_cli_sbi_preview_from_index_and_images(tmp_path, face_rgb, capsys):
    root = _dataset(tmp_path, face_rgb)
    extract_faces(root, tmp_path / "out", config=ExtractConfig(num_frames=2))
    png = tmp_path / "grid.png"
    assert main(["sbi-preview", str(tmp_path / "out" / "index.csv"), "--output", str(png), "--count", "2"]) == 0
    grid = cv2.imread(str(png))
    assert grid is not None and grid.shape[0] > grid.shape[1] / 3  # two rows of three cells
    png2 = tmp_path / "grid2.png"
    assert (
        main(["sbi-preview", str(root / "fake" / "methodA" / "x_0001.jpg"), "--output", str(png2), "--count", "1"]) == 0
    )
    h, w = cv2.imread(str(png2)).shape[:2]
    assert w == 3 * h + 6  # one row: real | fake | mask, square cells, two 3-px separators
    code = main(["sbi-preview", str(tmp_path / "nothing.csv"), "--output", str(png)])
    assert code == 2 and "cannot read face index" in capsys.readouterr().err


def test_limit_keeps_the_first_items_in_sorted_order(tmp_path, face_rgb):
    root = _dataset(tmp_path, face_rgb)
    full = extract_faces(root, tmp_path / "full", config=ExtractConfig(num_frames=2))
    s = extract_faces(root, tmp_path / "two", config=ExtractConfig(num_frames=2), limit=2)
    assert s.items == 2 and s.items < full.items
    sources = sorted({r["source"] for r in _rows(s.index_path)})
    assert sources == sorted({r["source"] for r in _rows(full.index_path)})[: len(sources)]
