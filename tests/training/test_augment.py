"""Tests of cevit.training.augment: shapes, determinism, geometry that moves box and landmarks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cevit.config import from_dict
from cevit.errors import ConfigError
from cevit.training.augment import (
    augment_geometry,
    augment_photometric,
    choose_resize_mode,
    color_jitter,
    gaussian_blur,
    gaussian_noise,
    hflip,
    jpeg_compress,
    shift_scale_rotate,
)
from cevit.training.config import AugmentSection

BOX = (18.0, 18.0, 78.0, 78.0)
LMS = np.array([(36.0, 40.0), (60.0, 40.0), (48.0, 52.0), (38.0, 64.0), (58.0, 64.0)])
ALL_ON = AugmentSection(hflip_prob=0.5, ssr_prob=1.0, color_jitter_prob=1.0, blur_prob=1.0, noise_prob=1.0,
                        jpeg_prob=1.0, isotropic_pad_prob=0.5)  # fmt: skip


def face(seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(30, 90, size=(size, size, 3), dtype=np.uint8)
    cv2.ellipse(img, (48, 50), (26, 32), 0, 0, 360, (205, 160, 130), thickness=-1)
    for x, y in LMS[:2]:
        cv2.circle(img, (int(x), int(y)), 4, (40, 30, 25), thickness=-1)
    cv2.line(img, (38, 64), (58, 64), (120, 40, 50), thickness=3)
    return img


def dot_image(x: float, y: float, size: int = 96) -> np.ndarray:
    img = np.zeros((size, size, 3), dtype=np.uint8)
    cv2.circle(img, (int(round(x)), int(round(y))), 2, (255, 255, 255), thickness=-1)
    return img


def brightest(img: np.ndarray) -> tuple[float, float]:
    g = img[..., 0].astype(np.float64)
    ys, xs = np.nonzero(g > 0.5 * g.max())
    w = g[ys, xs]
    return float((xs * w).sum() / w.sum()), float((ys * w).sum() / w.sum())


@pytest.mark.parametrize("seed", range(6))
def test_full_pipeline_keeps_shape_dtype_and_is_deterministic(seed: int) -> None:
    img = face(seed)
    outs = []
    for _ in range(2):
        rng = np.random.default_rng(seed)
        im, box, lm, _ = augment_geometry(img, BOX, LMS, rng=rng, config=ALL_ON)
        im = augment_photometric(im, rng=rng, config=ALL_ON, scale=1.5)
        iso = choose_resize_mode(rng, ALL_ON)
        assert im.shape == img.shape and im.dtype == np.uint8
        assert len(box) == 4 and lm is not None and lm.shape == (5, 2)
        outs.append((im, box, lm, iso))
    assert np.array_equal(outs[0][0], outs[1][0])
    assert outs[0][1] == outs[1][1] and np.array_equal(outs[0][2], outs[1][2]) and outs[0][3] == outs[1][3]
    assert not np.array_equal(outs[0][0], img)  # every photometric transform is on


def test_different_generators_give_different_images_and_input_untouched() -> None:
    img = face(1)
    before = img.copy()
    a = augment_photometric(img, rng=np.random.default_rng(0), config=ALL_ON)
    b = augment_photometric(img, rng=np.random.default_rng(1), config=ALL_ON)
    assert not np.array_equal(a, b)
    assert np.array_equal(img, before)


def test_disabled_or_zero_probabilities_are_identity() -> None:
    img = face(2)
    off = AugmentSection(enabled=False)
    im, box, lm, valid = augment_geometry(img, BOX, LMS, rng=np.random.default_rng(0), config=off, valid=(4, 5, 90, 96))
    assert np.array_equal(im, img) and box == BOX and np.array_equal(lm, LMS) and valid == (4, 5, 90, 96)
    assert np.array_equal(augment_photometric(img, rng=np.random.default_rng(0), config=off), img)
    zero = AugmentSection(hflip_prob=0, ssr_prob=0, color_jitter_prob=0, blur_prob=0, noise_prob=0, jpeg_prob=0)
    assert np.array_equal(augment_photometric(img, rng=np.random.default_rng(0), config=zero), img)
    assert not choose_resize_mode(np.random.default_rng(0), zero)


def test_hflip_moves_box_and_swaps_landmarks() -> None:
    img = face(3)
    out, box, lm = hflip(img, BOX, LMS)
    assert np.array_equal(out, img[:, ::-1])
    assert box == (96 - 78.0, 18.0, 96 - 18.0, 78.0)
    # the left eye of the flipped image is the mirrored right eye of the original
    assert np.allclose(lm[0], (96 - LMS[1, 0], LMS[1, 1]))
    assert np.allclose(lm[3], (96 - LMS[4, 0], LMS[4, 1]))
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left stays left
    back, box2, lm2 = hflip(out, box, lm)
    assert np.array_equal(back, img) and np.allclose(box2, BOX) and np.allclose(lm2, LMS)


@pytest.mark.parametrize(
    "shift, scale, angle", [((0.0, 0.0), 1.0, 30.0), ((0.1, -0.05), 1.2, -15.0), ((0.0, 0.1), 0.8, 0.0)]
)
def test_shift_scale_rotate_moves_landmarks_with_the_pixels(
    shift: tuple[float, float], scale: float, angle: float
) -> None:
    for k in (0, 1, 3):  # a dot drawn at a landmark ends up at the mapped landmark
        img = dot_image(*LMS[k])
        out, box, lm = shift_scale_rotate(img, BOX, LMS, shift=shift, scale=scale, angle=angle)
        x, y = brightest(out)
        assert abs(x - lm[k, 0]) < 1.0 and abs(y - lm[k, 1]) < 1.0, (k, (x, y), lm[k])
    # the box keeps its centre on the mapped centre and is scaled
    assert box[2] - box[0] == pytest.approx(60.0 * scale) and box[3] - box[1] == pytest.approx(60.0 * scale)
    img = dot_image(48.0, 48.0)
    out, box, _ = shift_scale_rotate(img, BOX, None, shift=shift, scale=scale, angle=angle)
    x, y = brightest(out)
    assert abs(x - (box[0] + box[2]) / 2) < 1.0 and abs(y - (box[1] + box[3]) / 2) < 1.0


@pytest.mark.parametrize("seed", range(8))
def test_valid_region_moves_with_the_pixels(seed: int) -> None:
    """A saved crop whose left 30 columns are padding: after any flip / shift-scale-rotate, the pixels outside the
    returned valid region are (almost all) zeros, and those inside are (almost all) content, up to the rotation's
    corner wedges and a one-pixel border of interpolation."""
    img = np.full((96, 96, 3), 200, np.uint8)
    img[:, :30] = 0
    config = AugmentSection(hflip_prob=0.5, ssr_prob=1.0)
    out, _, _, valid = augment_geometry(
        img, BOX, LMS, rng=np.random.default_rng(seed), config=config, valid=(30, 0, 96, 96)
    )
    x1, y1, x2, y2 = (int(round(v)) for v in valid)
    assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
    content = out[..., 0] > 100
    inside = np.zeros(content.shape, bool)
    inside[y1:y2, x1:x2] = True
    assert content[~inside].sum() <= 2 * 96  # at most the interpolated border lies outside
    wedges = 0.5 * (y2 - y1) * (x2 - x1) * 0.4  # generous bound on the zero corners a <= 15 degree turn adds
    assert (~content[inside]).sum() <= wedges + 2 * 96


def test_photometric_primitives() -> None:
    img = face(4)
    assert np.array_equal(color_jitter(img, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0), img)
    darker = color_jitter(img, brightness=0.5, contrast=1.0, saturation=1.0, hue=0.0)
    assert darker.mean() < 0.6 * img.mean()
    grey = color_jitter(img, brightness=1.0, contrast=1.0, saturation=0.0, hue=0.0).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 1
    blurred = gaussian_blur(img, 2.0)
    assert blurred.shape == img.shape and np.abs(np.diff(blurred.astype(float), axis=1)).mean() < np.abs(
        np.diff(img.astype(float), axis=1)).mean()  # fmt: skip
    flat = np.full((64, 64, 3), 128, dtype=np.uint8)
    noisy = gaussian_noise(flat, 8.0, np.random.default_rng(0))
    assert 7.0 < noisy.astype(float).std() < 9.0
    low, high = jpeg_compress(img, 10), jpeg_compress(img, 95)
    err = lambda a: np.abs(a.astype(int) - img.astype(int)).mean()  # noqa: E731
    assert low.shape == img.shape and low.dtype == np.uint8 and err(low) > err(high) > 0


def test_config_validation_and_yaml_keys() -> None:
    with pytest.raises(ConfigError, match="hflip_prob"):
        AugmentSection(hflip_prob=1.5)
    with pytest.raises(ConfigError, match="jpeg_quality"):
        AugmentSection(jpeg_quality=(90, 40))
    with pytest.raises(ConfigError, match="augment.rotate"):
        from_dict(AugmentSection, {"rotate": 5}, prefix="augment.")
    cfg = from_dict(AugmentSection, {"jpeg_quality": [50, 60], "noise_std": [1, 2]})
    assert cfg.jpeg_quality == (50, 60) and cfg.noise_std == (1.0, 2.0)


def test_down_up_scale_loses_detail_and_is_drawn_only_when_enabled() -> None:
    from cevit.training.augment import down_up_scale

    img = face(5)
    low = down_up_scale(img, 0.3)
    assert low.shape == img.shape and low.dtype == np.uint8
    detail = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    assert detail(low) < 0.8 * detail(img)
    assert np.abs(down_up_scale(img, 1.0).astype(int) - img.astype(int)).max() <= 1
    # downscale_prob 0 (the default) draws no random number: older configs keep their exact augmentations
    base = AugmentSection(color_jitter_prob=0.0, blur_prob=0.0, noise_prob=0.0, jpeg_prob=1.0)
    a = augment_photometric(img, rng=np.random.default_rng(3), config=base)
    rng = np.random.default_rng(3)
    rng.random(size=4)  # the colour, blur, noise and JPEG draws
    assert np.array_equal(a, jpeg_compress(img, int(rng.integers(40, 96))))
    on = AugmentSection(color_jitter_prob=0.0, blur_prob=0.0, noise_prob=0.0, jpeg_prob=0.0, downscale_prob=1.0,
                        downscale_range=(0.3, 0.3))  # fmt: skip
    assert np.array_equal(augment_photometric(img, rng=np.random.default_rng(0), config=on), down_up_scale(img, 0.3))
    with pytest.raises(ConfigError, match="downscale_range"):
        AugmentSection(downscale_range=(0.0, 0.5))
