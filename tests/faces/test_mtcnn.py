"""Tests of the MTCNN face detector (cevit.faces)."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from cevit.errors import CheckpointError, ConfigError, FaceDetectionError
from cevit.faces import MTCNN, DetectedFace
from cevit.faces.mtcnn import ONet, PNet, RNet, batched_nms, nms

# Photos of $CEVIT_SHARED/data/faces whose faces were counted by eye (on renders with the detected boxes
# drawn); only photos without small, blurred or cut-off background faces, so the count is unambiguous.
COUNTED_PHOTOS = {
    "dpf__couple.jpg": 2,
    "fnpt__multiface.jpg": 6,
    "dpf__img10.jpg": 1,
    "fnpt__paul_rudd_1.jpg": 1,
}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    ref = resources.files("cevit").joinpath("samples").joinpath("astronaut.jpg")
    with resources.as_file(ref) as path:
        return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def faces_dir(shared_file) -> Path:
    return shared_file("data/faces/MANIFEST.tsv").parent  # skip without ../shared; under CI=true, fail if missing


def _assert_plausible(face: DetectedFace, width: int, height: int) -> None:
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    assert w > 0 and h > 0
    assert 0.9 < h / w < 1.7  # MTCNN face boxes are a bit taller than wide
    assert -0.1 * w <= x1 and x2 <= width + 0.1 * w and -0.1 * h <= y1 and y2 <= height + 0.1 * h
    assert len(face.landmarks) == 5
    for x, y in face.landmarks:
        assert x1 <= x <= x2 and y1 <= y <= y2
    (lex, ley), (rex, rey), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lex < rex and mlx < mrx  # left/right as seen in the image (upright faces)
    assert max(ley, rey) < ny < min(mly, mry)  # eyes above the nose above the mouth


# ------------------------------------------------------------------------------------------------ detection
def test_astronaut_has_one_face(detector: MTCNN, astronaut: np.ndarray) -> None:
    faces = detector.detect_one(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert isinstance(face, DetectedFace)
    assert face.probability > 0.9
    H, W = astronaut.shape[:2]
    x1, y1, x2, y2 = face.box
    # the face is in the upper middle of the portrait and about a fifth of the image wide
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    assert 0.3 * W < cx < 0.6 * W and 0.1 * H < cy < 0.4 * H
    assert x1 < 224 < x2 and y1 < 120 < y2  # the face centre (between eyes and mouth), read off the image
    assert 0.1 * W < x2 - x1 < 0.3 * W
    _assert_plausible(face, W, H)
    assert all(isinstance(v, float) for v in face.box)


@pytest.mark.parametrize("kind", ["gray", "noise"])
def test_no_face_in_flat_or_noise_image(detector: MTCNN, kind: str) -> None:
    if kind == "gray":
        frame = np.full((360, 480, 3), 128, dtype=np.uint8)
    else:
        frame = np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    assert detector.detect_one(frame) == []


@pytest.mark.parametrize("refine", ["working", "full"])
def test_max_side_downscaling_maps_back_to_original_pixels(detector: MTCNN, astronaut: np.ndarray, refine: str) -> None:
    (ref,) = detector.detect_one(astronaut)
    big = cv2.resize(astronaut, (3 * 512, 3 * 512), interpolation=cv2.INTER_LINEAR)
    small_side = MTCNN(max_side=512, refine=refine)
    (face,) = small_side.detect_one(big)
    width = 3 * (ref.box[2] - ref.box[0])
    # "full": R-Net / O-Net regress from other pixels, so the usual MTCNN box jitter applies (a run on the
    # full-resolution frame itself differs from 3x the reference by 3 %)
    tol = (0.04 if refine == "working" else 0.06) * width
    for got, want in zip(face.box, ref.box):
        assert got == pytest.approx(3 * want, abs=tol)
    for (gx, gy), (wx, wy) in zip(face.landmarks, ref.landmarks):
        assert gx == pytest.approx(3 * wx, abs=tol) and gy == pytest.approx(3 * wy, abs=tol)
    # non-uniform downscaling (the working size is rounded per axis) is undone per axis
    wide = cv2.resize(astronaut, (1030, 512), interpolation=cv2.INTER_LINEAR)
    (face,) = small_side.detect_one(wide)
    rel = 0.05 if refine == "working" else 0.08
    assert (face.box[0] + face.box[2]) / 2 == pytest.approx((ref.box[0] + ref.box[2]) / 2 * 1030 / 512, rel=rel)
    assert (face.box[1] + face.box[3]) / 2 == pytest.approx((ref.box[1] + ref.box[3]) / 2, rel=rel)


def test_batch_detection_equals_per_frame_detection(detector: MTCNN, astronaut: np.ndarray) -> None:
    frames = [
        astronaut,
        np.ascontiguousarray(astronaut[:, ::-1]),  # same size as the first: batched together
        astronaut[40:460, 60:400],  # a non-contiguous view of another size
        np.full((200, 300, 3), 90, dtype=np.uint8),
        cv2.resize(astronaut, (400, 400), interpolation=cv2.INTER_AREA),
    ]
    batch = detector.detect(frames)
    assert len(batch) == len(frames)
    assert [len(r) for r in batch] == [1, 1, 1, 0, 1]
    for frame, got in zip(frames, batch):
        want = detector.detect_one(frame)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.box == pytest.approx(w.box, abs=1e-2)
            assert g.probability == pytest.approx(w.probability, abs=1e-4)
            assert np.allclose(g.landmarks, w.landmarks, atol=1e-2)
    # the mirrored face is found at the mirrored place
    (a,), (b,) = batch[0], batch[1]
    assert (a.box[0] + a.box[2]) / 2 == pytest.approx(512 - (b.box[0] + b.box[2]) / 2, abs=6)
    assert detector.detect([]) == []


def test_counted_real_photos(detector: MTCNN, faces_dir: Path) -> None:
    with open(faces_dir / "MANIFEST.tsv", newline="") as fh:
        listed = {row["file"] for row in csv.DictReader(fh, delimiter="\t")}
    names = [n for n in COUNTED_PHOTOS if n in listed and (faces_dir / n).is_file()]
    if not names:
        pytest.skip("none of the counted photos is present")
    frames = [np.asarray(Image.open(faces_dir / n).convert("RGB")) for n in names]
    results = detector.detect(frames)
    for name, frame, faces in zip(names, frames, results):
        H, W = frame.shape[:2]
        assert len(faces) == COUNTED_PHOTOS[name], name
        probs = [f.probability for f in faces]
        assert probs == sorted(probs, reverse=True), name  # highest probability first
        for face in faces:
            assert face.probability > 0.95, name
            assert face.box[2] - face.box[0] > 0.03 * min(W, H), name
            _assert_plausible(face, W, H)
        if name == "dpf__couple.jpg":  # one face in each half of the picture, not overlapping
            left, right = sorted(faces, key=lambda f: f.box[0])
            assert left.box[2] < right.box[0]
            assert (left.box[0] + left.box[2]) / 2 < W / 2 < (right.box[0] + right.box[2]) / 2


# ------------------------------------------------------------------------------------------------ NMS
def test_nms_union_hand_computed() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # a, score .9
            [1, 1, 11, 11],  # b: IoU with a = 81 / 119 = 0.681
            [0, 0, 5, 5],  # c: inside a, IoU 25 / 100 = 0.25, min-overlap 1.0
            [20, 20, 30, 30],  # d: disjoint
        ],
        dtype=float,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]  # b suppressed by a
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2, 3]  # 0.681 <= 0.7 keeps b
    assert nms(boxes, scores, 0.2).tolist() == [0, 3]  # c (0.25) suppressed too
    # the order follows the scores, not the input
    assert nms(boxes, np.array([0.1, 0.8, 0.7, 0.95]), 0.5).tolist() == [3, 1, 2]
    # b beats a when it scores higher; a is then suppressed, c overlaps b by 16 / 109 only
    assert nms(boxes, np.array([0.5, 0.9, 0.4, 0.3]), 0.5).tolist() == [1, 2, 3]


def test_nms_min_mode_hand_computed() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 5, 5], [5, 0, 15, 10]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7])
    # c inside a: min-overlap 25/25 = 1; third box overlaps a by 50 / min(100, 100) = 0.5
    assert nms(boxes, scores, 0.7, mode="min").tolist() == [0, 2]
    assert nms(boxes, scores, 0.4, mode="min").tolist() == [0]
    assert nms(boxes, scores, 0.7, mode="union").tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        nms(boxes, scores, 0.5, mode="max")  # type: ignore[arg-type]


def test_nms_edge_cases() -> None:
    assert nms(np.empty((0, 4)), np.empty(0), 0.5).tolist() == []
    # zero-area boxes overlap nothing (no division by zero)
    boxes = np.array([[1, 1, 1, 5], [1, 1, 1, 5], [0, 0, 4, 4]], dtype=float)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 1, 2]
    # identical boxes: the first of equal scores wins
    same = np.array([[0, 0, 4, 4]] * 3, dtype=float)
    assert nms(same, np.array([0.5, 0.5, 0.5]), 0.5).tolist() == [0]


def test_batched_nms_keeps_groups_apart() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [1, 1, 11, 11]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    groups = np.array([0, 0, 1, 1])
    assert batched_nms(boxes, scores, groups, 0.5).tolist() == [0, 3]
    assert batched_nms(boxes, scores, np.zeros(4), 0.5).tolist() == [3]
    assert batched_nms(np.empty((0, 4)), np.empty(0), np.empty(0), 0.5).tolist() == []


# ------------------------------------------------------------------------------------------------ weights, API
def test_layer_names_match_the_weight_keys() -> None:
    assert list(PNet().state_dict())[:3] == ["conv1.weight", "conv1.bias", "prelu1.weight"]
    assert "dense5_2.weight" in RNet().state_dict()
    assert {"dense6_1.weight", "dense6_2.weight", "dense6_3.bias"} <= set(ONet().state_dict())


def test_pixel_input_equals_normalised_input(detector: MTCNN) -> None:
    x = torch.randint(0, 256, (2, 3, 48, 48)).float()
    with torch.inference_mode():
        raw = detector.onet(x, pixels=True)
        norm = detector.onet((x - 127.5) / 128.0)
    for a, b in zip(raw, norm):
        assert torch.allclose(a, b, atol=1e-4)


def test_converter_reproduces_the_packaged_weights(tmp_path: Path, shared_file) -> None:
    source = shared_file("reference/mtcnn_weights/pnet.pt").parent  # skip without ../shared; CI=true: no skip
    import importlib.util

    from safetensors.torch import load_file

    script = Path(__file__).resolve().parents[2] / "tools" / "convert_mtcnn_weights.py"
    spec = importlib.util.spec_from_file_location("convert_mtcnn_weights", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "mtcnn.safetensors"
    assert module.main([str(source), "--output", str(out)]) == 0
    assert module.main([str(tmp_path / "nowhere"), "--output", str(tmp_path / "x.safetensors")]) == 1
    converted = load_file(str(out))
    with resources.as_file(resources.files("cevit.faces").joinpath("data").joinpath("mtcnn.safetensors")) as p:
        packaged = load_file(str(p))
    assert converted.keys() == packaged.keys() and len(packaged) == 50
    assert all(torch.equal(converted[k], packaged[k]) for k in packaged)
    MTCNN(weights_path=out)  # loads


def test_corrupted_weights_raise_checkpoint_error(tmp_path: Path) -> None:
    bad = tmp_path / "mtcnn_bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(100))
    with pytest.raises(CheckpointError, match="mtcnn_bad.safetensors"):
        MTCNN(weights_path=bad)
    with pytest.raises(CheckpointError, match="not found"):
        MTCNN(weights_path=tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    partial = tmp_path / "mtcnn_partial.safetensors"
    save_file({f"pnet.{k}": v for k, v in PNet().state_dict().items()}, str(partial))
    with pytest.raises(CheckpointError, match="rnet"):
        MTCNN(weights_path=partial)


def test_full_resolution_refine_changes_only_downscaled_frames(detector: MTCNN, astronaut: np.ndarray) -> None:
    full = MTCNN(max_side=512, refine="full")
    assert full.detect_one(astronaut) == detector.detect_one(astronaut)  # 512 px: not downscaled, same detector
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    (a,) = full.detect_one(big)
    (b,) = MTCNN(max_side=512, refine="working").detect_one(big)
    assert a != b  # R-Net / O-Net saw other pixels
    assert a.probability > 0.99 and b.probability > 0.99


def test_invalid_arguments_and_frames(detector: MTCNN) -> None:
    with pytest.raises(ConfigError, match="refine"):
        MTCNN(refine="half")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        MTCNN(factor=1.2)
    with pytest.raises(ConfigError):
        MTCNN(thresholds=(0.6, 0.7))
    with pytest.raises(FaceDetectionError, match="frame 1"):
        detector.detect([np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20), np.uint8)])
    with pytest.raises(FaceDetectionError):
        detector.detect_one(np.zeros((20, 20, 3), np.float32))
    # frames too small for the pyramid simply have no faces
    assert detector.detect_one(np.zeros((8, 8, 3), np.uint8)) == []
