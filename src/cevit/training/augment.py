"""Training augmentations written with OpenCV and numpy, applied to the SAVED face crop before the contract.

Where they act (a documented choice): every transform works on the saved crop of the face index (the face with
its generous margin), before :func:`cevit.preprocess.crop_face` / ``resize_face`` / ``to_tensor`` turn it into
the model's input exactly as at inference.

* **Geometric** (:func:`augment_geometry`): horizontal flip and a small shift-scale-rotate about the face box
  centre. They move the face box and the 5 landmarks with the image, so the contract's crop follows the face,
  and rotations bring real context from the margin into the corners instead of black wedges. A flip mirrors x
  (``x' = W - x`` in continuous pixel coordinates) and swaps left/right landmarks (eyes, mouth corners). A
  shift-scale-rotate moves the box centre with the affine map and multiplies its width and height by the scale
  (the box keeps its axis-aligned shape: the face inside it turns, the crop does not grow). Pixels from outside
  the saved crop are zeros, as the contract's ``pad`` border and the saved crops' own padding are.
* **Photometric** (:func:`augment_photometric`), in this order: colour jitter (brightness, contrast,
  saturation, hue), Gaussian blur, Gaussian noise, JPEG re-compression. Artefacts thus arise at the saved
  crop's resolution and are then resized by the contract, as compression and blur of a real video happen
  before a detector crops and resizes the face. The blur sigma is given at the model's input resolution
  and scaled by ``scale`` (crop pixels per input pixel) so its visible strength does not depend on the
  crop's size.
* **Resize mode** (:func:`choose_resize_mode`): with ``isotropic_pad_prob`` the contract's ``isotropic_pad``
  resize replaces the model's own ``resize_mode`` for that sample.

Every function takes a ``numpy.random.Generator`` and is deterministic given its state; each transform first
draws whether it applies, then its parameters. Inputs are never modified in place; outputs are ``uint8`` RGB
arrays of the input's shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from cevit.training.config import AugmentSection

__all__ = [
    "hflip",
    "shift_scale_rotate",
    "ssr_matrix",
    "map_region",
    "color_jitter",
    "gaussian_blur",
    "gaussian_noise",
    "jpeg_compress",
    "augment_geometry",
    "augment_photometric",
    "choose_resize_mode",
]

Box = tuple[float, float, float, float]

# Left/right landmark swap under a horizontal flip: eyes (0, 1), nose (2), mouth corners (3, 4).
_FLIP_ORDER = (1, 0, 2, 4, 3)


def _as_landmarks(landmarks: np.ndarray | None) -> np.ndarray | None:
    return None if landmarks is None else np.asarray(landmarks, dtype=np.float64).reshape(5, 2)


# ----------------------------------------------------------------------------------------------------------
# geometric


def hflip(
    image: np.ndarray, box: Sequence[float], landmarks: np.ndarray | None
) -> tuple[np.ndarray, Box, np.ndarray | None]:
    """Mirror the image left-right; the box and landmarks follow (left and right landmarks are swapped)."""
    w = image.shape[1]
    x1, y1, x2, y2 = (float(v) for v in box)
    out = np.ascontiguousarray(image[:, ::-1])
    lm = _as_landmarks(landmarks)
    if lm is not None:
        lm = lm[list(_FLIP_ORDER)].copy()
        lm[:, 0] = w - lm[:, 0]
    return out, (w - x2, y1, w - x1, y2), lm


def ssr_matrix(box: Sequence[float], *, shift: tuple[float, float], scale: float, angle: float) -> np.ndarray:
    """The (2, 3) affine map of :func:`shift_scale_rotate`: rotate by ``angle`` degrees and scale about the box
    centre, then shift by ``shift`` x box side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    side = max(x2 - x1, y2 - y1)
    matrix = cv2.getRotationMatrix2D((cx, cy), float(angle), float(scale))  # (2, 3), about the centre
    matrix[0, 2] += shift[0] * side
    matrix[1, 2] += shift[1] * side
    return matrix


def map_region(region: Sequence[float], matrix: np.ndarray, shape: tuple[int, ...]) -> Box:
    """The axis-aligned bounding box of ``region`` (x1, y1, x2, y2) moved by the affine ``matrix``, clipped to an
    image of ``shape``. For a rotation it includes the small corner wedges that the warp fills with zeros."""
    x1, y1, x2, y2 = (float(v) for v in region)
    corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]]) @ matrix[:, :2].T + matrix[:, 2]
    h, w = shape[:2]
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return (max(0.0, float(lo[0])), max(0.0, float(lo[1])), min(float(w), float(hi[0])), min(float(h), float(hi[1])))


def shift_scale_rotate(
    image: np.ndarray,
    box: Sequence[float],
    landmarks: np.ndarray | None,
    *,
    shift: tuple[float, float],
    scale: float,
    angle: float,
) -> tuple[np.ndarray, Box, np.ndarray | None]:
    """Rotate by ``angle`` degrees (counter-clockwise) and scale about the box centre, then shift by
    ``shift`` x box side (x, y). The box centre and landmarks are mapped; the box size is multiplied by
    ``scale``. Pixels from outside the image are zeros."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    matrix = ssr_matrix(box, shift=shift, scale=scale, angle=angle)
    out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0, 0, 0))  # fmt: skip
    ncx, ncy = matrix @ np.array([cx, cy, 1.0])
    hw, hh = (x2 - x1) * scale / 2.0, (y2 - y1) * scale / 2.0
    lm = _as_landmarks(landmarks)
    if lm is not None:
        lm = lm @ matrix[:, :2].T + matrix[:, 2]
    return out, (ncx - hw, ncy - hh, ncx + hw, ncy + hh), lm


def augment_geometry(
    image: np.ndarray,
    box: Sequence[float],
    landmarks: np.ndarray | None,
    *,
    rng: np.random.Generator,
    config: AugmentSection,
    valid: Sequence[float] | None = None,
) -> tuple[np.ndarray, Box, np.ndarray | None, Box]:
    """Random flip and shift-scale-rotate of a saved crop with its face box, (optional) landmarks and valid region.

    Returns ``(image, box, landmarks, valid)``; ``valid`` (the part of the crop that shows the original frame,
    None = all of it) is moved with the image (:func:`map_region`), so the contract's crop still stops at the
    frame's edge after the transform.
    """
    h, w = image.shape[:2]
    out, b, lm = image, tuple(float(v) for v in box), _as_landmarks(landmarks)
    region: Box = (0.0, 0.0, float(w), float(h)) if valid is None else tuple(float(v) for v in valid)  # type: ignore[assignment]
    if not config.enabled:
        return out, b, lm, region  # type: ignore[return-value]
    if rng.random() < config.hflip_prob:
        out, b, lm = hflip(out, b, lm)
        region = (w - region[2], region[1], w - region[0], region[3])
    if rng.random() < config.ssr_prob:
        shift = (float(rng.uniform(-config.shift_limit, config.shift_limit)),
                 float(rng.uniform(-config.shift_limit, config.shift_limit)))  # fmt: skip
        scale = float(rng.uniform(1.0 - config.scale_limit, 1.0 + config.scale_limit))
        angle = float(rng.uniform(-config.rotate_limit, config.rotate_limit))
        matrix = ssr_matrix(b, shift=shift, scale=scale, angle=angle)
        out, b, lm = shift_scale_rotate(out, b, lm, shift=shift, scale=scale, angle=angle)
        region = map_region(region, matrix, out.shape)
    return out, b, lm, region  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------
# photometric


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def color_jitter(image: np.ndarray, *, brightness: float, contrast: float, saturation: float, hue: float) -> np.ndarray:
    """Multiply brightness, scale contrast about the mean grey, blend with grey for saturation (factors of 1 =
    unchanged), then rotate the hue by ``hue`` x 360 degrees."""
    x = image.astype(np.float32) * np.float32(brightness)
    gray = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]).astype(np.float32)
    x = (x - gray.mean()) * np.float32(contrast) + gray.mean()
    gray = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]).astype(np.float32)
    x = (x - gray[..., None]) * np.float32(saturation) + gray[..., None]
    out = _to_uint8(x)
    shift = int(round(hue * 180.0))  # OpenCV's 8-bit hue runs over 0..179
    if shift % 180:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (kernel +-3 sigma)."""
    if sigma <= 0:
        return image.copy()
    k = 2 * int(math.ceil(3.0 * sigma)) + 1
    return cv2.GaussianBlur(image, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Add i.i.d. Gaussian noise of standard deviation ``std`` (0-255 units) to every pixel and channel."""
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
    return _to_uint8(image.astype(np.float32) + noise)


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` (1-100) and decode again."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        return image.copy()
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def down_up_scale(image: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by ``factor`` (area interpolation) and enlarge back to the original size (bilinear): a low-resolution
    copy, as from a small face in a video frame or a thumbnail."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def augment_photometric(
    image: np.ndarray, *, rng: np.random.Generator, config: AugmentSection, scale: float = 1.0
) -> np.ndarray:
    """Random colour jitter, blur, down/up-scaling, noise and JPEG (in that order) of a uint8 RGB image.

    ``scale`` is the number of image pixels per model-input pixel (crop side / input size); the blur sigma
    of the config is multiplied by it.
    """
    out = image
    if not config.enabled:
        return out.copy()
    if rng.random() < config.color_jitter_prob:
        b = float(rng.uniform(1.0 - config.brightness, 1.0 + config.brightness))
        c = float(rng.uniform(1.0 - config.contrast, 1.0 + config.contrast))
        s = float(rng.uniform(1.0 - config.saturation, 1.0 + config.saturation))
        h = float(rng.uniform(-config.hue, config.hue))
        out = color_jitter(out, brightness=b, contrast=c, saturation=s, hue=h)
    if rng.random() < config.blur_prob:
        out = gaussian_blur(out, float(rng.uniform(*config.blur_sigma)) * max(scale, 1e-3))
    # drawn only when enabled, so configs without it keep their random streams (and their exact results)
    if config.downscale_prob > 0 and rng.random() < config.downscale_prob:
        out = down_up_scale(out, float(rng.uniform(*config.downscale_range)))
    if rng.random() < config.noise_prob:
        out = gaussian_noise(out, float(rng.uniform(*config.noise_std)), rng)
    if rng.random() < config.jpeg_prob:
        lo, hi = config.jpeg_quality
        out = jpeg_compress(out, int(rng.integers(lo, hi + 1)))
    return out.copy() if out is image else out


def choose_resize_mode(rng: np.random.Generator, config: AugmentSection) -> bool:
    """True when this sample should use the ``isotropic_pad`` resize instead of the model's own."""
    return bool(config.enabled and rng.random() < config.isotropic_pad_prob)
