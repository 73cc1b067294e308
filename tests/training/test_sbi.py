"""Tests of cevit.training.sbi: self-blended pseudo-fakes from one real face and 5 landmarks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cevit.config import from_dict
from cevit.errors import CevitError, ConfigError, MediaError
from cevit.training.sbi import SBIConfig, SBIResult, face_region_mask, sbi_preview, self_blend

# Landmarks of an LFW-like centred face in a 250x250 crop; scaled for other sizes.
_LFW_LANDMARKS = np.array([(100, 115), (150, 115), (125, 140), (105, 165), (145, 165)], dtype=np.float64)
_ALLOWED_RATIOS = (0.25, 0.5, 0.75, 1.0)


def synthetic_face(size: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A face-like RGB image: textured background, skin ellipse, dark eye/mouth blobs, a nose blob."""
    rng = np.random.default_rng(seed)
    s = size / 250.0
    lm = _LFW_LANDMARKS * s
    img = rng.integers(20, 90, size=(size, size, 3), dtype=np.uint8)  # noisy background
    centre = (int(round(125 * s)), int(round(145 * s)))
    axes = (max(2, int(round(55 * s))), max(3, int(round(75 * s))))
    cv2.ellipse(img, centre, axes, 0, 0, 360, (205, 160, 130), thickness=-1)
    noise = rng.integers(-12, 13, size=img.shape)
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    r = max(1, int(round(7 * s)))
    for x, y in lm[:2]:
        cv2.circle(img, (int(round(x)), int(round(y))), r, (40, 30, 25), thickness=-1)
    cv2.circle(img, tuple(int(round(v)) for v in lm[2]), r, (170, 120, 100), thickness=-1)
    cv2.line(
        img,
        tuple(int(round(v)) for v in lm[3]),
        tuple(int(round(v)) for v in lm[4]),
        (120, 40, 50),
        thickness=max(1, int(round(5 * s))),
    )
    return img, lm


@pytest.mark.parametrize("size", [64, 128, 250])
def test_shapes_dtypes_and_ranges(size: int) -> None:
    image, lm = synthetic_face(size)
    result = self_blend(image, lm, rng=np.random.default_rng(3))
    assert isinstance(result, SBIResult)
    assert result.real.shape == (size, size, 3) and result.real.dtype == np.uint8
    assert result.fake.shape == (size, size, 3) and result.fake.dtype == np.uint8
    assert result.mask.shape == (size, size) and result.mask.dtype == np.float32
    assert float(result.mask.min()) >= 0.0 and float(result.mask.max()) <= 1.0
    assert float(result.mask.max()) > 0.0


def test_non_square_crop() -> None:
    image, lm = synthetic_face(128)
    image = np.ascontiguousarray(image[:, 10:118])  # 128 x 108
    lm = lm - np.array([10.0, 0.0])
    result = self_blend(image, lm, rng=np.random.default_rng(0))
    assert result.fake.shape == (128, 108, 3) and result.mask.shape == (128, 108)


@pytest.mark.parametrize("size", [64, 128, 250])
def test_mask_covers_landmarks_and_not_corners(size: int) -> None:
    image, lm = synthetic_face(size)
    for seed in range(25):
        mask = self_blend(image, lm, rng=np.random.default_rng(seed)).mask
        for x, y in lm:
            assert mask[int(round(y)), int(round(x))] > 0, f"seed {seed}: landmark ({x:.0f}, {y:.0f}) not covered"
        for cy, cx in [(0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1)]:
            assert mask[cy, cx] == 0.0, f"seed {seed}: corner ({cx}, {cy}) inside the mask"


def test_face_region_mask_is_binary_region_around_landmarks() -> None:
    _, lm = synthetic_face(250)
    cfg = SBIConfig()
    areas = []
    for seed in range(20):
        region = face_region_mask(lm, (250, 250), rng=np.random.default_rng(seed), config=cfg)
        assert region.shape == (250, 250) and region.dtype == np.float32
        assert set(np.unique(region).tolist()) <= {0.0, 1.0}
        for x, y in lm:
            assert region[int(round(y)), int(round(x))] == 1.0
        ys, xs = np.nonzero(region)
        # extends above the eyes (forehead) and below the mouth (chin), stays inside the crop's centre
        assert ys.min() < 115 - 10 and ys.max() > 165 + 15
        assert xs.min() > 40 and xs.max() < 210 and ys.min() > 40 and ys.max() < 235
        areas.append(int(region.sum()))
    assert len(set(areas)) > 10  # randomly varied


def test_face_region_mask_follows_rotation() -> None:
    # rotate the landmark set by 90 degrees about the image centre: the region must rotate with it
    _, lm = synthetic_face(250)
    c = np.array([124.5, 124.5])
    rot = np.stack([c[0] - (lm[:, 1] - c[1]), c[1] + (lm[:, 0] - c[0])], axis=1)  # (x, y) -> 90 deg turn
    cfg = SBIConfig(elastic_prob=0.0, morph_prob=0.0, ellipse_prob=0.0)
    upright = face_region_mask(lm, (250, 250), rng=np.random.default_rng(1), config=cfg)
    turned = face_region_mask(rot, (250, 250), rng=np.random.default_rng(1), config=cfg)
    expected = np.rot90(upright, k=-1)  # clockwise turn of the image = the landmark turn above
    overlap = np.logical_and(expected > 0, turned > 0).sum() / np.logical_or(expected > 0, turned > 0).sum()
    assert overlap > 0.95


@pytest.mark.parametrize("size", [64, 128, 250])
def test_fake_differs_from_real_only_inside_mask(size: int) -> None:
    image, lm = synthetic_face(size, seed=size)
    differing = 0
    for seed in range(20):
        result = self_blend(image, lm, rng=np.random.default_rng(seed))
        outside = result.mask == 0
        assert outside.any()
        np.testing.assert_array_equal(result.fake[outside], result.real[outside])
        changed = np.any(result.fake != result.real, axis=2)
        assert not np.any(changed & outside)
        differing += int(changed[result.mask > 0].any())
    assert differing >= 18  # differs somewhere inside the mask for (almost) every seed


def test_real_is_input_or_augmented_target() -> None:
    image, lm = synthetic_face(128)
    untouched = augmented = 0
    for seed in range(30):
        result = self_blend(image, lm, rng=np.random.default_rng(seed))
        if np.array_equal(result.real, image):
            untouched += 1
        else:
            augmented += 1
    # the source is augmented in ~half the cases (real = input); otherwise real is the augmented target
    assert untouched >= 5 and augmented >= 5
    assert self_blend(image, lm, rng=np.random.default_rng(0)).real is not image


def test_input_not_modified() -> None:
    image, lm = synthetic_face(128)
    before, lm_before = image.copy(), lm.copy()
    for seed in range(5):
        self_blend(image, lm, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(image, before)
    np.testing.assert_array_equal(lm, lm_before)


def test_deterministic_given_seed_and_seeds_differ() -> None:
    image, lm = synthetic_face(128)
    a = self_blend(image, lm, rng=np.random.default_rng(42))
    b = self_blend(image, lm, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(a.fake, b.fake)
    np.testing.assert_array_equal(a.real, b.real)
    np.testing.assert_array_equal(a.mask, b.mask)
    fakes = {self_blend(image, lm, rng=np.random.default_rng(s)).fake.tobytes() for s in range(8)}
    assert len(fakes) == 8


def test_blend_ratios_from_allowed_set() -> None:
    image, lm = synthetic_face(64)
    seen = []
    for seed in range(60):
        peak = float(self_blend(image, lm, rng=np.random.default_rng(seed)).mask.max())
        match = [r for r in _ALLOWED_RATIOS if abs(peak - r) < 1e-6]
        assert match, f"seed {seed}: mask max {peak} is no allowed blend ratio"
        seen.append(match[0])
    assert set(seen) == set(_ALLOWED_RATIOS)
    assert seen.count(1.0) > seen.count(0.25)  # 1 is drawn three times as often


def test_config_blend_ratio_and_no_augmentation() -> None:
    # no augmentation, no warp, no deformation: source == target, so the fake equals the image
    cfg = SBIConfig(
        rgb_shift_prob=0.0,
        hsv_prob=0.0,
        brightness_contrast_prob=0.0,
        frequency_prob=0.0,
        translate_limit=0.0,
        scale_range=(1.0, 1.0),
        blend_ratios=(0.5,),
    )
    image, lm = synthetic_face(128)
    result = self_blend(image, lm, rng=np.random.default_rng(0), config=cfg)
    np.testing.assert_array_equal(result.real, image)
    np.testing.assert_array_equal(result.fake, image)
    assert float(result.mask.max()) == pytest.approx(0.5)


def test_config_validation_and_from_dict() -> None:
    with pytest.raises(ConfigError, match="hsv_prob"):
        SBIConfig(hsv_prob=1.5)
    with pytest.raises(ConfigError, match="chin_range"):
        SBIConfig(chin_range=(0.8, 0.4))
    with pytest.raises(ConfigError, match="blend_ratios"):
        SBIConfig(blend_ratios=())
    with pytest.raises(ConfigError, match="downscale_range"):
        SBIConfig(downscale_range=(0.0, 0.5))
    cfg = from_dict(SBIConfig, {"blend_ratios": [1.0], "scale_range": [0.9, 1.1]})
    assert cfg.blend_ratios == (1.0,) and cfg.scale_range == (0.9, 1.1)
    with pytest.raises(TypeError):
        SBIConfig(0.5)  # type: ignore[misc]  # keyword-only


def test_invalid_inputs() -> None:
    image, lm = synthetic_face(64)
    with pytest.raises(MediaError):
        self_blend(image.astype(np.float32), lm, rng=np.random.default_rng(0))  # type: ignore[arg-type]
    with pytest.raises(MediaError):
        self_blend(image[..., 0], lm, rng=np.random.default_rng(0))
    with pytest.raises(CevitError, match="landmarks"):
        self_blend(image, lm[:4], rng=np.random.default_rng(0))
    with pytest.raises(CevitError, match="landmarks"):
        self_blend(image, np.full((5, 2), np.nan), rng=np.random.default_rng(0))


def test_sbi_preview_writes_png_of_expected_size(tmp_path: Path) -> None:
    faces = [synthetic_face(96, seed=i) for i in range(3)]
    faces.append(synthetic_face(128, seed=9))  # a different size is resized to the first cell size
    out = tmp_path / "sub" / "preview.png"
    sbi_preview(faces, out, seed=5)
    grid = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert grid is not None
    assert grid.shape == (4 * 96 + 3 * 3, 3 * 96 + 2 * 3, 3)
    # separators are white; the first row's left cell is the real image (BGR on disk)
    assert np.all(grid[96:99, :] == 255) and np.all(grid[:, 96:99] == 255) and np.all(grid[:, 195:198] == 255)
    first = self_blend(faces[0][0], faces[0][1], rng=np.random.default_rng(5))
    np.testing.assert_array_equal(grid[:96, :96, ::-1], first.real)
    np.testing.assert_array_equal(grid[:96, 99:195, ::-1], first.fake)
    gray = grid[:96, 198:294]
    assert np.all(gray[..., 0] == gray[..., 1]) and np.all(gray[..., 1] == gray[..., 2])
    # deterministic given the seed
    out2 = tmp_path / "again.png"
    sbi_preview(faces, out2, seed=5)
    np.testing.assert_array_equal(cv2.imread(str(out2)), grid)
    with pytest.raises(CevitError):
        sbi_preview([], tmp_path / "empty.png")


def test_part_masks_cover_parts_and_leave_face_outline_untouched() -> None:
    # part masks: blobs around eyes/nose/mouth, never the cheeks or chin the whole-face region covers
    _, lm = synthetic_face(250)
    cfg = SBIConfig(part_mask_prob=1.0, elastic_prob=0.0, morph_prob=0.0)
    whole = SBIConfig(elastic_prob=0.0, morph_prob=0.0)
    part_areas, whole_areas, covered = [], [], set()
    for seed in range(40):
        region = face_region_mask(lm, (250, 250), rng=np.random.default_rng(seed), config=cfg)
        assert set(np.unique(region).tolist()) <= {0.0, 1.0} and region.any()
        for name, (x, y) in zip(("left_eye", "right_eye", "nose", "mouth_l", "mouth_r"), lm):
            if region[int(round(y)), int(round(x))]:
                covered.add(name)
        assert region[200, 125] == 0.0  # below the chin-side of the mouth ellipse (mouth at y=165, d=50)
        assert region[140, 60] == 0.0 and region[140, 190] == 0.0  # cheeks beside the face
        part_areas.append(float(region.sum()))
        whole_areas.append(float(face_region_mask(lm, (250, 250), rng=np.random.default_rng(seed), config=whole).sum()))
    assert {"left_eye", "right_eye", "nose", "mouth_l"} <= covered  # every part is drawn sometimes
    assert np.median(part_areas) < 0.5 * np.median(whole_areas)


def test_part_masks_follow_rotation_and_blend_only_inside() -> None:
    image, lm = synthetic_face(250)
    c = np.array([124.5, 124.5])
    rot = np.stack([c[0] - (lm[:, 1] - c[1]), c[1] + (lm[:, 0] - c[0])], axis=1)
    cfg = SBIConfig(part_mask_prob=1.0, elastic_prob=0.0, morph_prob=0.0)
    upright = face_region_mask(lm, (250, 250), rng=np.random.default_rng(5), config=cfg)
    turned = face_region_mask(rot, (250, 250), rng=np.random.default_rng(5), config=cfg)
    expected = np.rot90(upright, k=-1)
    overlap = np.logical_and(expected > 0, turned > 0).sum() / np.logical_or(expected > 0, turned > 0).sum()
    assert overlap > 0.9
    result = self_blend(image, lm, rng=np.random.default_rng(2), config=cfg)
    assert np.array_equal(result.fake[result.mask == 0], result.real[result.mask == 0])


def test_part_mask_prob_is_validated() -> None:
    with pytest.raises(ConfigError, match="part_mask_prob"):
        SBIConfig(part_mask_prob=1.5)
