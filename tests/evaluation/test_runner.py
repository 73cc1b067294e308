from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from cevit.cli.main import main
from cevit.errors import ConfigError
from cevit.evaluation.runner import discover_test_set, run_evaluation
from cevit.inference.pipeline import load_model
from conftest import write_test_video


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    return load_model(weights=tiny_checkpoint, device="cpu", num_frames=3)


def _test_set(root, face_rgb):
    (root / "real" / "srcA").mkdir(parents=True)
    (root / "fake").mkdir(parents=True)
    Image.fromarray(face_rgb).save(root / "real" / "srcA" / "r1.jpg")
    Image.fromarray(face_rgb[:, ::-1].copy()).save(root / "real" / "r2.png")
    Image.fromarray(np.clip(face_rgb.astype(int) + 20, 0, 255).astype(np.uint8)).save(root / "fake" / "f1.png")
    write_test_video(root / "fake" / "f2.mp4", [face_rgb] * 4)
    (root / "fake" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def test_folder_layout_metrics_and_outputs(detector, face_rgb, tmp_path):
    data = _test_set(tmp_path / "set", face_rgb)
    out = tmp_path / "eval"
    m = run_evaluation(detector, data, out, reencode_jpeg=90, n_boot=50)
    for key in ("auc", "ap", "eer", "log_loss", "accuracy", "f1", "n_items", "auc_ci95", "by_group"):
        assert key in m
    assert (m["n_items"], m["n_real"], m["n_fake"], m["n_failed"]) == (4, 2, 2, 1)
    assert "media_type=video" in m["by_group"] and "media_type=image" in m["by_group"]
    assert m["frame_level"]["n_items"] == 2 + 1 + 3  # 3 images + 3 frames of the video
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["meta"]["reencode_jpeg"] == 90 and saved["n_items"] == 4
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 5 and {r["label"] for r in rows} == {"REAL", "FAKE"}
    assert [r for r in rows if r["source"].endswith("broken.jpg")][0]["error"]
    assert "| item |" in (out / "report.md").read_text()
    frames = list(csv.DictReader(open(out / "frame_scores.csv")))
    assert len(frames) == m["frame_level"]["n_items"] and 0.0 <= float(frames[0]["score"]) <= 1.0
    assert 0.0 <= m["ece"] <= 1.0 and "ece" in m["frame_level"]
    for png in ("roc.png", "pr.png", "score_histogram.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pipelined_evaluation_matches_the_sequential_one(detector, face_rgb, tmp_path):
    """evaluate_items runs through the batch API: the same items, order, errors and scores with files pipelined
    (workers=2) as one after another (workers=0), re-encoded images included."""
    from cevit.evaluation.runner import evaluate_items

    items = discover_test_set(_test_set(tmp_path / "set", face_rgb))
    runs = {w: evaluate_items(detector, items, reencode_jpeg=90, num_frames=3, workers=w) for w in (0, 2)}
    for a, b in zip(runs[0], runs[2], strict=True):
        assert a.item.path == b.item.path and a.media_type == b.media_type and a.num_faces == b.num_faces
        assert (a.error is None) == (b.error is None)
        if a.error is None:
            assert a.score == pytest.approx(b.score, abs=1e-5)
            assert a.frame_scores == pytest.approx(b.frame_scores, abs=1e-5)
    assert [r.item.path.name for r in runs[2] if r.error] == ["broken.jpg"]
    assert "broken.jpg" in next(r.error for r in runs[2] if r.error)


def test_manifest_layout(tmp_path, face_rgb):
    data = _test_set(tmp_path / "set", face_rgb)
    manifest = data / "MANIFEST.tsv"
    manifest.write_text("file\tlabel\tdataset_of_origin\tfake_type\n"
                        "real/r2.png\tREAL\tX\tnone\nfake/f1.png\tFAKE\tY\tswap\n")  # fmt: skip
    items = discover_test_set(data)
    assert [(i.path.name, i.label, i.groups) for i in items] == [
        ("r2.png", 0, {"dataset": "X", "method": "none"}),
        ("f1.png", 1, {"dataset": "Y", "method": "swap"}),
    ]
    manifest.write_text("file\tlabel\nreal/r2.png\tmaybe\n")
    with pytest.raises(ConfigError, match="label 'maybe'"):
        discover_test_set(data)
    with pytest.raises(ConfigError, match="does not exist"):
        discover_test_set(tmp_path / "nope")


def test_cli_evaluate(tiny_checkpoint, face_rgb, tmp_path, capsys):
    data = _test_set(tmp_path / "set", face_rgb)
    code = main(["evaluate", str(data), "--weights", str(tiny_checkpoint), "--output", str(tmp_path / "o"),
                 "--frames", "2", "--bootstrap", "20", "--device", "cpu", "--quiet"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "AUC" in out and (tmp_path / "o" / "metrics.json").exists()
    code = main(["evaluate", str(data), "--weights", str(tiny_checkpoint), "--output", str(tmp_path / "o"),
                 "--workers", "-1"])  # fmt: skip
    assert code == 2 and "--workers must be >= 0" in capsys.readouterr().err


def test_face_index_evaluation(detector, face_rgb, tmp_path):
    from cevit.data.extract import ExtractConfig, extract_faces

    data = _test_set(tmp_path / "set", face_rgb)
    extract_faces(data, tmp_path / "faces", config=ExtractConfig(num_frames=3))
    m = run_evaluation(detector, tmp_path / "faces" / "index.csv", tmp_path / "eval", n_boot=20)
    # 4 readable sources (2 real images, 1 fake image, 1 fake video with 3 frames)
    assert (m["n_items"], m["n_real"], m["n_fake"]) == (4, 2, 2)
    assert m["frame_level"]["n_items"] == 6
    rows = list(csv.DictReader(open(tmp_path / "eval" / "scores.csv")))
    assert {r["media_type"] for r in rows} == {"crops"}
