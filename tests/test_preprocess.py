"""Tests of cevit.preprocess: FacePreprocessor (the one crop -> resize -> tensor path) and the valid region."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cevit.preprocess import (
    FacePreprocessor,
    Preprocessing,
    crop_face,
    padded_square_crop,
    preprocess_faces,
    resize_face,
    to_tensor,
    valid_region,
)

FRAME = np.random.default_rng(0).integers(1, 255, size=(90, 120, 3), dtype=np.uint8)


@pytest.mark.parametrize("border", ["clip", "pad"])
@pytest.mark.parametrize("mode", ["stretch", "isotropic_pad"])
def test_preprocessor_is_the_three_steps(border: str, mode: str) -> None:
    spec = Preprocessing(input_size=24, crop_margin=0.3, crop_border=border, resize_mode=mode)
    boxes = [(10, 12, 50, 60), (-5, 40, 30, 95), (100.5, 3.2, 130.0, 40.0)]  # inside, off the bottom-left, the right
    expected = to_tensor([resize_face(crop_face(FRAME, b, spec), spec) for b in boxes], spec)
    pre = FacePreprocessor(spec=spec)
    got = pre([FRAME] * 3, boxes)
    assert got.shape == (3, 3, 24, 24) and got.dtype == torch.float32
    assert torch.equal(got, expected)
    assert torch.equal(preprocess_faces([FRAME] * 3, boxes, spec), expected)
    assert pre.input_size == 24 and pre.crop(FRAME, boxes[1]).shape == (24, 24, 3)


def test_resize_mode_override_per_face() -> None:
    spec = Preprocessing(input_size=24, crop_border="clip", resize_mode="stretch")
    pre = FacePreprocessor(spec=spec)
    box = (-10, 10, 30, 50)  # clipped to a 30x40 crop: stretch and isotropic_pad differ
    iso = pre.crop(FRAME, box, resize_mode="isotropic_pad")
    assert not np.array_equal(iso, pre.crop(FRAME, box))
    assert (iso[:, :2] == 0).all()  # the isotropic pad's side bands
    with pytest.raises(ValueError, match="resize_mode"):
        pre.crop(FRAME, box, resize_mode="bilinear")  # type: ignore[arg-type]


def test_empty_and_mismatched_inputs() -> None:
    pre = FacePreprocessor(spec=Preprocessing(input_size=16))
    assert pre([], []).shape == (0, 3, 16, 16)
    with pytest.raises(ValueError, match="same length"):
        pre([FRAME], [])
    with pytest.raises(ValueError, match="same length"):
        pre([FRAME], [(0, 0, 10, 10)], valid=[])


def test_valid_region_limits_both_borders() -> None:
    image = np.full((60, 60, 3), 50, np.uint8)
    image[:, :20] = 0  # a saved crop whose 20 left columns are padding
    box, valid = (10, 10, 50, 50), (20, 0, 60, 60)
    clip = Preprocessing(input_size=16, crop_border="clip")
    pad = Preprocessing(input_size=16, crop_border="pad")
    assert crop_face(image, box, clip).shape == (40, 40, 3)  # without the region: the black band stays
    assert crop_face(image, box, clip, valid=valid).shape == (40, 30, 3)  # cut at the frame's edge
    assert (crop_face(image, box, clip, valid=valid) == 50).all()
    padded = crop_face(FRAME[:60, :60], box, pad, valid=valid)
    assert padded.shape == (40, 40, 3) and (padded[:, :10] == 0).all() and (padded[:, 10:] != 0).any()
    with pytest.raises(ValueError, match="outside the valid region"):
        crop_face(image, (0, 0, 10, 10), clip, valid=valid)


def test_padded_square_crop_reports_its_real_part() -> None:
    crop, region = padded_square_crop(FRAME, (-10, -20, 30, 20), 0.0)
    assert crop.shape == (40, 40, 3)
    assert region == (10, 20, 40, 40)
    assert np.array_equal(crop[20:40, 10:40], FRAME[0:20, 0:30])
    assert not crop[:20].any() and not crop[:, :10].any()


def test_valid_region_rounding_and_errors() -> None:
    assert valid_region((0.4, 1.6, 59.5, 200), (60, 60, 3)) == (0, 2, 60, 60)
    with pytest.raises(ValueError, match="empty"):
        valid_region((30, 0, 30, 10), (60, 60, 3))
    with pytest.raises(ValueError, match="non-finite"):
        valid_region((float("nan"), 0, 10, 10), (60, 60, 3))


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_tensor_on_a_device_is_made_from_uint8_there(order: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """to_tensor(device=...) moves the uint8 faces and converts them on the device: the same tensor as the CPU's
    conversion (CUDA itself is tested in tests/models/test_cuda.py; here the CPU and the shape-only meta device)."""
    from cevit.preprocess import normalize, stack_faces, to_device

    spec = Preprocessing(input_size=16, channel_order=order)
    faces = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(3)]
    expected = to_tensor(faces, spec)
    assert expected.shape == (3, 3, 16, 16) and expected.dtype == torch.float32
    assert torch.equal(normalize(torch.from_numpy(stack_faces(faces)), spec), expected)
    pinned: list[torch.Tensor] = []
    original = torch.Tensor.pin_memory
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a: pinned.append(self) or original(self, *a))
    pre = FacePreprocessor(spec=spec)
    assert torch.equal(pre.to_tensor(faces, device="cpu"), expected)
    meta = pre.to_tensor(faces, device="meta")  # the device path: uint8 moved, converted on the device
    assert meta.device.type == "meta" and meta.shape == expected.shape and meta.dtype == torch.float32
    assert to_device(torch.zeros(2, dtype=torch.uint8), "cpu").device.type == "cpu"
    assert pinned == []  # pinned memory only for a CUDA device
    assert pre.to_tensor([], device="meta").shape == (0, 3, 16, 16)
    with pytest.raises(ValueError, match="expected"):
        stack_faces(np.zeros((2, 16, 16), np.uint8))
