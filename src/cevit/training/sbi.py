"""Self-blended images (SBI): pseudo-fakes made from one real face, for training without fakes.

After Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022). A real face crop
is copied twice, into a *source* and a *target*. One of the two (50/50) is changed by a source-target
augmentation (colour: RGB shift, hue/saturation/value shift, brightness/contrast; frequency: a
down-then-up scaling or a sharpening; each applied with some probability), the source is moved by a
small random affine warp (translation and scale), and the source is pasted onto the target through a
soft face-region mask::

    pseudo_fake = mask * source + (1 - mask) * target

The result carries the typical traces of face swapping (blending boundary, colour and sharpness
mismatch, slightly misaligned landmarks) without any identity change, so a detector trained on
(real, pseudo-fake) pairs learns generic forgery traces.

**What is returned as ``real``.** :attr:`SBIResult.real` is exactly the target used in the blend: the
untouched input image when the *source* was the augmented copy, the *augmented* image when the target
was. Hence ``fake == real`` bit for bit wherever ``mask == 0``, and a (real, fake) pair differs only
inside the blended region.

**The face-region mask from 5 landmarks** (:func:`face_region_mask`). Only the 5 MTCNN points are known
(left eye, right eye, nose, left and right mouth corner). They fix a face frame: the origin is the
midpoint of the eyes, the x axis runs from one eye to the other, the y axis is perpendicular to it and
points towards the mouth (so tilted faces are handled). Two lengths scale everything: ``e``, the
distance between the eyes, and ``d``, the distance from the eye line to the mouth centre along y.
The hull is built from the 5 landmarks plus these derived points (factor ranges are
:class:`SBIConfig` defaults, each factor is drawn independently per side, so masks are not
symmetric):

* forehead: above each eye by ``forehead_range`` = 0.25–0.7 ``d``, 0.15 ``e`` further out than the eye,
  and a centre point 1.15 times as high as their mean -- a frontal face's eyebrows sit ~0.3 ``d`` above
  the eyes and the hairline ~0.8 ``d``, so the mask covers the brows and sometimes most of the forehead;
* temples: on the eye line, ``temple_range`` = 0.25–0.5 ``e`` outside each eye (the face edge at eye
  height is ~0.45 ``e`` outside the eyes on LFW-like crops);
* cheeks: at nose height, ``cheek_range`` = 0.25–0.45 ``e`` outside each eye's x;
* jaw: 0.25 ``d`` below each mouth corner, ``jaw_width_range`` = 0.05–0.3 ``e`` outside it;
* chin: the mouth centre mirrored downwards by ``chin_range`` = 0.4–0.75 ``d`` (the chin tip of a frontal
  face is ~0.7 ``d`` below the mouth), plus two points below the mouth corners at 0.85 of that depth to
  round the chin.

The filled convex hull of these points (or, with ``ellipse_prob``, the ellipse fitted to the hull's
vertices) covers eyes, brows, nose, cheeks, mouth and chin, the region face-swap methods replace, while
staying inside the face outline so that the blending boundary lies on skin as in real deepfakes. It is
then deformed randomly: an elastic warp (a smooth random displacement field, up to
``elastic_alpha_range`` = 0.03-0.08 ``d``) and a dilation or erosion with a random elliptic or
rectangular kernel (``morph_kernel_range`` = 0.03-0.12 ``d``). The hull reaches well beyond the
landmarks (>= 0.25 ``d`` above the eyes and below the mouth, ~0.15 ``e`` or more beside the mouth
corners of a frontal face), more than the default deformation can take away, so the landmarks stay
inside the mask. :func:`self_blend` then blurs the mask twice with random Gaussian kernels
(``blur_kernel_range`` = 0.1-0.5 ``d``), normalises it to a maximum of 1, zeroes values that cannot
change a ``uint8`` pixel (< 1/512) and multiplies it by a blend ratio drawn from ``blend_ratios``
(default {0.25, 0.5, 0.75, 1, 1, 1}); ``mask.max()`` therefore equals the blend ratio.

**Part masks** (an addition to the paper, off by default: ``part_mask_prob``). Face-part manipulations
(expression reenactment mostly changes the mouth; Photoshop edits swap eyes, nose or mouth) leave blending
boundaries *inside* the face, which whole-face masks never show. With probability ``part_mask_prob`` the
region is instead a random non-empty subset of {left eye, right eye, nose, mouth} (each part kept with
probability 1/2), each an ellipse in the face frame: an eye ellipse is centred on the eye (lifted by up to
0.15 ``d`` to take the brow in sometimes), 0.28-0.42 ``e`` by 0.2-0.35 ``d`` semi-axes; the nose ellipse runs
from about the eye line to 0.05-0.15 ``d`` below the nose tip, 0.18-0.3 ``e`` wide; the mouth ellipse is
centred on the mouth, reaching 0.1-0.25 ``e`` beyond the corners and 0.18-0.32 ``d`` up and down. The same
deformation, blur and blend ratio follow.

Everything is deterministic given the ``numpy.random.Generator`` passed in; only numpy and OpenCV are
used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from cevit.errors import CevitError, ConfigError, MediaError

__all__ = ["SBIConfig", "SBIResult", "face_region_mask", "self_blend", "sbi_preview"]

logger = logging.getLogger(__name__)

_SEPARATOR_PX = 3
_MASK_EPS = 1.0 / 512.0  # mask values below this cannot change a uint8 pixel: set to exactly 0


@dataclass(frozen=True, kw_only=True)
class SBIConfig:
    """Probabilities and ranges of the self-blending; ``(lo, hi)`` ranges are sampled uniformly.

    Lengths of the mask construction are relative to the face: ``e`` is the distance between the eyes,
    ``d`` the distance from the eye line to the mouth centre (see the module docstring).
    """

    #: Probability that the *source* gets the source-target augmentation (else the target gets it).
    augment_source_prob: float = 0.5
    # -- colour transforms ------------------------------------------------------------------------
    #: Probability of a random per-channel shift, each channel by an integer in ±``rgb_shift_limit``.
    rgb_shift_prob: float = 0.3
    rgb_shift_limit: int = 15
    #: Probability of a hue/saturation/value shift: hue by ±``hue_shift_limit`` degrees, saturation and
    #: value by ±limit × 255 (additive, in OpenCV's 8-bit HSV).
    hsv_prob: float = 0.5
    hue_shift_limit: float = 5.0
    saturation_shift_limit: float = 0.12
    value_shift_limit: float = 0.12
    #: Probability of ``x * (1 + c) + b * 255``, ``c`` in ±``contrast_limit``, ``b`` in
    #: ±``brightness_limit``.
    brightness_contrast_prob: float = 0.5
    brightness_limit: float = 0.1
    contrast_limit: float = 0.1
    # -- frequency transforms ---------------------------------------------------------------------
    #: Probability of one frequency transform: down-then-up scaling or sharpening (50/50).
    frequency_prob: float = 0.5
    #: Downscale factor range of the down-then-up scaling.
    downscale_range: tuple[float, float] = (0.25, 0.5)
    #: Unsharp-mask amount range of the sharpening (``x + a * (x - blur(x))``).
    sharpen_amount_range: tuple[float, float] = (0.3, 1.0)
    # -- source warp ------------------------------------------------------------------------------
    #: Largest translation of the source, as a fraction of the image width/height, each axis.
    translate_limit: float = 0.03
    #: Scale range of the source warp (about the image centre).
    scale_range: tuple[float, float] = (0.95, 1.05)
    # -- mask shape (see the module docstring) ----------------------------------------------------
    forehead_range: tuple[float, float] = (0.25, 0.7)
    temple_range: tuple[float, float] = (0.25, 0.5)
    cheek_range: tuple[float, float] = (0.25, 0.45)
    jaw_width_range: tuple[float, float] = (0.05, 0.3)
    chin_range: tuple[float, float] = (0.4, 0.75)
    #: Probability to use the ellipse fitted to the hull points instead of the hull itself.
    ellipse_prob: float = 0.25
    #: Probability that the blended region is made of face *parts* instead of the whole face region: a random
    #: non-empty subset of {left eye, right eye, nose, mouth}, each an ellipse placed from the landmarks (see
    #: the module docstring). 0 (the default) keeps the whole-face masks of the paper.
    part_mask_prob: float = 0.0
    # -- mask deformation -------------------------------------------------------------------------
    #: Probability of an elastic deformation; its largest displacement is drawn from
    #: ``elastic_alpha_range`` × ``d``, on a random field with ``elastic_grid`` × ``elastic_grid`` knots.
    elastic_prob: float = 0.5
    elastic_alpha_range: tuple[float, float] = (0.03, 0.08)
    elastic_grid: int = 5
    #: Probability of a dilation or erosion (50/50) with a kernel of ``morph_kernel_range`` × ``d``.
    morph_prob: float = 0.5
    morph_kernel_range: tuple[float, float] = (0.03, 0.12)
    # -- blur and blend ---------------------------------------------------------------------------
    #: Size range of both Gaussian kernels, as a fraction of ``d`` (rounded to an odd size >= 3).
    blur_kernel_range: tuple[float, float] = (0.1, 0.5)
    #: Blend ratios, drawn uniformly (repeat a value to weight it).
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ConfigError(f"SBIConfig.{f.name}: {value!r} is not a probability in [0, 1]")
            if f.name.endswith("_range"):
                lo, hi = value
                if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi):
                    raise ConfigError(f"SBIConfig.{f.name}: expected 0 <= lo <= hi, got {value!r}")
            if f.name.endswith("_limit") and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"SBIConfig.{f.name}: expected a non-negative number, got {value!r}")
        if not 0.0 < self.downscale_range[0] <= self.downscale_range[1] <= 1.0:
            raise ConfigError(f"SBIConfig.downscale_range: expected 0 < lo <= hi <= 1, got {self.downscale_range!r}")
        if not 0.0 < self.scale_range[0]:
            raise ConfigError(f"SBIConfig.scale_range: expected a positive scale, got {self.scale_range!r}")
        if self.elastic_grid < 2:
            raise ConfigError(f"SBIConfig.elastic_grid: expected an integer >= 2, got {self.elastic_grid!r}")
        if not self.blend_ratios or not all(0.0 < r <= 1.0 for r in self.blend_ratios):
            raise ConfigError(f"SBIConfig.blend_ratios: expected ratios in (0, 1], got {self.blend_ratios!r}")


@dataclass(frozen=True)
class SBIResult:
    """One self-blended pair.

    ``real`` is the target used in the blend (the untouched image when the source was augmented, the
    augmented image otherwise); ``fake`` equals ``real`` exactly where ``mask == 0``.
    """

    real: np.ndarray  #: (H, W, 3) uint8 RGB, the target actually blended onto
    fake: np.ndarray  #: (H, W, 3) uint8 RGB, the pseudo-fake
    mask: np.ndarray  #: (H, W) float32 in [0, 1], blend mask after the blend ratio (its max is the ratio)


# ------------------------------------------------------------------------------------------------
# input checks and small helpers
# ------------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise MediaError(f"self_blend: expected a uint8 RGB image of shape (H, W, 3), got {desc}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise MediaError(f"self_blend: image of shape {image.shape} is too small (at least 8x8 pixels)")


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise CevitError(f"self_blend: expected 5 finite (x, y) landmarks of shape (5, 2), got shape {pts.shape}")
    return pts


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _odd_kernel(size: float) -> int:
    k = max(3, int(round(size)))
    return k if k % 2 == 1 else k + 1


# ------------------------------------------------------------------------------------------------
# source-target augmentation
# ------------------------------------------------------------------------------------------------


def _rgb_shift(img: np.ndarray, rng: np.random.Generator, limit: int) -> np.ndarray:
    shift = rng.integers(-limit, limit + 1, size=3)
    return np.clip(img.astype(np.int16) + shift.astype(np.int16), 0, 255).astype(np.uint8)


def _hsv_shift(img: np.ndarray, rng: np.random.Generator, config: SBIConfig) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int16)
    dh = int(round(rng.uniform(-config.hue_shift_limit, config.hue_shift_limit) / 2.0))  # OpenCV hue: 0..179
    ds = int(round(rng.uniform(-config.saturation_shift_limit, config.saturation_shift_limit) * 255.0))
    dv = int(round(rng.uniform(-config.value_shift_limit, config.value_shift_limit) * 255.0))
    hsv[..., 0] = (hsv[..., 0] + dh) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + ds, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + dv, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _brightness_contrast(img: np.ndarray, rng: np.random.Generator, config: SBIConfig) -> np.ndarray:
    contrast = 1.0 + rng.uniform(-config.contrast_limit, config.contrast_limit)
    brightness = rng.uniform(-config.brightness_limit, config.brightness_limit) * 255.0
    out = img.astype(np.float32) * np.float32(contrast) + np.float32(brightness)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _down_up(img: np.ndarray, rng: np.random.Generator, config: SBIConfig) -> np.ndarray:
    h, w = img.shape[:2]
    s = _uniform(rng, config.downscale_range)
    small = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    down_interp = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_NEAREST)[int(rng.integers(3))]
    up_interp = (cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(2))]
    return cv2.resize(cv2.resize(img, small, interpolation=down_interp), (w, h), interpolation=up_interp)


def _sharpen(img: np.ndarray, rng: np.random.Generator, config: SBIConfig) -> np.ndarray:
    amount = _uniform(rng, config.sharpen_amount_range)
    x = img.astype(np.float32)
    blurred = cv2.GaussianBlur(x, (0, 0), sigmaX=1.0)
    return np.clip(np.rint(x + np.float32(amount) * (x - blurred)), 0, 255).astype(np.uint8)


def _augment(img: np.ndarray, rng: np.random.Generator, config: SBIConfig) -> np.ndarray:
    """The source-target augmentation: colour transforms, then at most one frequency transform."""
    out = img
    if rng.random() < config.rgb_shift_prob:
        out = _rgb_shift(out, rng, config.rgb_shift_limit)
    if rng.random() < config.hsv_prob:
        out = _hsv_shift(out, rng, config)
    if rng.random() < config.brightness_contrast_prob:
        out = _brightness_contrast(out, rng, config)
    if rng.random() < config.frequency_prob:
        out = _down_up(out, rng, config) if rng.random() < 0.5 else _sharpen(out, rng, config)
    return out.copy() if out is img else out


def _warp_source(img: np.ndarray, rng: np.random.Generator, config: SBIConfig) -> np.ndarray:
    h, w = img.shape[:2]
    scale = _uniform(rng, config.scale_range)
    tx = rng.uniform(-config.translate_limit, config.translate_limit) * w
    ty = rng.uniform(-config.translate_limit, config.translate_limit) * h
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    matrix = np.array([[scale, 0.0, cx - scale * cx + tx], [0.0, scale, cy - scale * cy + ty]], dtype=np.float64)
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


# ------------------------------------------------------------------------------------------------
# mask
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FaceFrame:
    """The face frame of the module docstring: origin between the eyes, x towards the right eye, y to the mouth."""

    origin: np.ndarray
    x_axis: np.ndarray
    y_axis: np.ndarray
    e: float  #: eye distance (>= 1 px)
    d: float  #: eye line to mouth centre (>= 0.3 e, >= 1 px)

    def to_face(self, p: np.ndarray) -> tuple[float, float]:
        q = p - self.origin
        return float(np.dot(q, self.x_axis)), float(np.dot(q, self.y_axis))

    def to_image(self, fp: np.ndarray) -> np.ndarray:
        """Face-frame points (N, 2) -> image pixels (N, 2)."""
        return self.origin + fp[:, :1] * self.x_axis + fp[:, 1:] * self.y_axis

    @property
    def angle_deg(self) -> float:
        return math.degrees(math.atan2(float(self.x_axis[1]), float(self.x_axis[0])))


def _face_frame(pts: np.ndarray) -> _FaceFrame:
    left_eye, right_eye, _nose, mouth_a, mouth_b = pts
    eye_vec = right_eye - left_eye
    e = float(np.hypot(*eye_vec))
    eye_mid = (left_eye + right_eye) / 2.0
    mouth_mid = (mouth_a + mouth_b) / 2.0
    if e < 1e-6:  # degenerate: fall back to an upright frame
        x_axis = np.array([1.0, 0.0])
    else:
        x_axis = eye_vec / e
    y_axis = np.array([-x_axis[1], x_axis[0]])
    if float(np.dot(mouth_mid - eye_mid, y_axis)) < 0.0:
        y_axis = -y_axis
    d = float(np.dot(mouth_mid - eye_mid, y_axis))
    e = max(e, 1.0)
    d = max(d, 0.3 * e, 1.0)
    return _FaceFrame(origin=eye_mid, x_axis=x_axis, y_axis=y_axis, e=e, d=d)


def _hull_points(pts: np.ndarray, rng: np.random.Generator, config: SBIConfig) -> np.ndarray:
    """The landmarks plus derived forehead/temple/cheek/jaw/chin points, in image pixels (N, 2)."""
    left_eye, right_eye, nose, mouth_a, mouth_b = pts
    frame = _face_frame(pts)
    e, d, face = frame.e, frame.d, frame.to_face

    (xl, yl), (xr, yr), (xn, yn) = face(left_eye), face(right_eye), face(nose)
    (xa, ya), (xb, yb) = face(mouth_a), face(mouth_b)
    (xml, yml), (xmr, ymr) = ((xa, ya), (xb, yb)) if xa <= xb else ((xb, yb), (xa, ya))
    xmc, ymc = (xml + xmr) / 2.0, (yml + ymr) / 2.0

    f_l, f_r = _uniform(rng, config.forehead_range), _uniform(rng, config.forehead_range)
    t_l, t_r = _uniform(rng, config.temple_range), _uniform(rng, config.temple_range)
    c_l, c_r = _uniform(rng, config.cheek_range), _uniform(rng, config.cheek_range)
    j_l, j_r = _uniform(rng, config.jaw_width_range), _uniform(rng, config.jaw_width_range)
    chin = _uniform(rng, config.chin_range)

    face_pts = [
        (xl, yl),
        (xr, yr),
        (xn, yn),
        (xml, yml),
        (xmr, ymr),
        # forehead
        (xl - 0.15 * e, yl - f_l * d),
        (xr + 0.15 * e, yr - f_r * d),
        ((xl + xr) / 2.0, -1.15 * d * (f_l + f_r) / 2.0),
        # temples
        (xl - t_l * e, yl),
        (xr + t_r * e, yr),
        # cheeks at nose height
        (xl - c_l * e, yn),
        (xr + c_r * e, yn),
        # jaw below the mouth corners
        (xml - j_l * e, yml + 0.25 * d),
        (xmr + j_r * e, ymr + 0.25 * d),
        # chin
        (xmc, ymc + chin * d),
        (xml, ymc + 0.85 * chin * d),
        (xmr, ymc + 0.85 * chin * d),
    ]
    return frame.to_image(np.asarray(face_pts, dtype=np.float64))


#: The face parts of part masks, in the order their inclusion is drawn.
PARTS: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth")


def _part_ellipses(pts: np.ndarray, rng: np.random.Generator) -> list[tuple[str, tuple[float, float], float, float]]:
    """A random non-empty subset of face-part ellipses: (part, centre (x, y) in the face frame, semi-axis along
    x, semi-axis along y), sized from ``e`` and ``d`` (module docstring)."""
    frame = _face_frame(pts)
    e, d = frame.e, frame.d
    (xl, yl), (xr, yr), (xn, yn) = frame.to_face(pts[0]), frame.to_face(pts[1]), frame.to_face(pts[2])
    (xa, ya), (xb, yb) = frame.to_face(pts[3]), frame.to_face(pts[4])
    xmc, ymc = (xa + xb) / 2.0, (ya + yb) / 2.0
    half_mouth = abs(xb - xa) / 2.0
    chosen = [p for p in PARTS if rng.random() < 0.5]
    if not chosen:
        chosen = [PARTS[int(rng.integers(len(PARTS)))]]
    out = []
    for part in chosen:
        if part in ("left_eye", "right_eye"):
            x, y = (xl, yl) if part == "left_eye" else (xr, yr)
            lift = rng.uniform(0.0, 0.15) * d  # sometimes include the brow
            out.append((part, (x, y - lift), rng.uniform(0.28, 0.42) * e, rng.uniform(0.2, 0.35) * d + lift))
        elif part == "nose":
            bottom = yn + rng.uniform(0.05, 0.15) * d
            top = rng.uniform(-0.05, 0.15) * d
            out.append((part, (xn / 2.0, (top + bottom) / 2.0), rng.uniform(0.18, 0.3) * e, (bottom - top) / 2.0))
        else:
            out.append((part, (xmc, ymc), half_mouth + rng.uniform(0.1, 0.25) * e, rng.uniform(0.18, 0.32) * d))
    return out


def _part_region(pts: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Filled face-part ellipses (H, W) uint8 in {0, 1}."""
    frame = _face_frame(pts)
    canvas = np.zeros(shape, dtype=np.uint8)
    for _part, (cx, cy), ax, ay in _part_ellipses(pts, rng):
        ((px, py),) = frame.to_image(np.array([[cx, cy]], dtype=np.float64))
        axes = (max(1, int(round(ax))), max(1, int(round(ay))))
        cv2.ellipse(canvas, (int(round(px)), int(round(py))), axes, frame.angle_deg, 0.0, 360.0, 1, thickness=-1)
    return canvas


def _face_scale(pts: np.ndarray) -> float:
    """``d``: the distance from the eye line to the mouth centre (>= 1 px), used to scale kernels."""
    eye_mid = (pts[0] + pts[1]) / 2.0
    mouth_mid = (pts[3] + pts[4]) / 2.0
    e = float(np.hypot(*(pts[1] - pts[0])))
    return max(float(np.hypot(*(mouth_mid - eye_mid))), 0.3 * e, 1.0)


def _elastic(mask: np.ndarray, rng: np.random.Generator, alpha: float, grid: int) -> np.ndarray:
    h, w = mask.shape
    field = rng.uniform(-1.0, 1.0, size=(2, grid, grid)).astype(np.float32)
    dx = cv2.resize(field[0], (w, h), interpolation=cv2.INTER_CUBIC) * np.float32(alpha)
    dy = cv2.resize(field[1], (w, h), interpolation=cv2.INTER_CUBIC) * np.float32(alpha)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = cv2.remap(mask, xs + dx, ys + dy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return (warped >= 0.5).astype(np.float32)


def face_region_mask(
    landmarks: np.ndarray, shape: tuple[int, int], *, rng: np.random.Generator, config: SBIConfig
) -> np.ndarray:
    """A randomly varied and deformed face-region mask (H, W) float32 in {0, 1}, before any blur.

    ``landmarks`` are the 5 MTCNN points (left eye, right eye, nose, mouth left, mouth right) as pixel
    (x, y) of the image; ``shape`` is (H, W) (a longer shape is cut to its first two values). The hull of
    the landmarks and derived points (module docstring) is filled, optionally replaced by its fitted
    ellipse, then elastically deformed and dilated/eroded; when the deformation would empty the mask,
    the undeformed region is returned. With ``config.part_mask_prob`` the region is a set of face-part
    ellipses instead (module docstring).
    """
    pts = _check_landmarks(landmarks)
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise CevitError(f"face_region_mask: invalid mask shape {tuple(shape)!r}")
    d = _face_scale(pts)
    hull_pts = _hull_points(pts, rng, config)

    canvas = np.zeros((h, w), dtype=np.uint8)
    if config.part_mask_prob > 0.0 and rng.random() < config.part_mask_prob:
        canvas = _part_region(pts, (h, w), rng)
    elif rng.random() < config.ellipse_prob:
        vertices = cv2.convexHull(hull_pts.astype(np.float32))  # fit the outline, not the inner landmarks
        (cx, cy), (ax1, ax2), angle = cv2.fitEllipse(vertices)
        center = (int(round(cx)), int(round(cy)))
        axes = (max(1, int(round(ax1 / 2.0))), max(1, int(round(ax2 / 2.0))))
        cv2.ellipse(canvas, center, axes, angle, 0.0, 360.0, 1, thickness=-1)
    else:
        hull = cv2.convexHull(np.rint(hull_pts).astype(np.int32))
        cv2.fillConvexPoly(canvas, hull, 1)
    base = canvas.astype(np.float32)

    mask = base
    if rng.random() < config.elastic_prob:
        mask = _elastic(mask, rng, _uniform(rng, config.elastic_alpha_range) * d, config.elastic_grid)
    if rng.random() < config.morph_prob:
        k = max(1, int(round(_uniform(rng, config.morph_kernel_range) * d)))
        kshape = cv2.MORPH_ELLIPSE if rng.random() < 0.5 else cv2.MORPH_RECT
        kernel = cv2.getStructuringElement(kshape, (k, k))
        op = cv2.dilate if rng.random() < 0.5 else cv2.erode
        mask = op(mask, kernel)
    if not np.any(mask > 0):
        logger.debug("face_region_mask: deformation emptied the mask; using the undeformed region")
        mask = base
    return np.ascontiguousarray(mask, dtype=np.float32)


def _soft_mask(region: np.ndarray, d: float, rng: np.random.Generator, config: SBIConfig) -> np.ndarray:
    """Blur twice with random Gaussian kernels, normalise to max 1, zero negligible values."""
    mask = region.astype(np.float32)
    for _ in range(2):
        k = _odd_kernel(_uniform(rng, config.blur_kernel_range) * d)
        mask = cv2.GaussianBlur(mask, (k, k), 0, borderType=cv2.BORDER_CONSTANT)
        peak = float(mask.max())
        if peak > 0.0:
            mask = mask / np.float32(peak)
    mask[mask < _MASK_EPS] = 0.0
    return np.clip(mask, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# public entry points
# ------------------------------------------------------------------------------------------------


def self_blend(
    image: np.ndarray, landmarks: np.ndarray, *, rng: np.random.Generator, config: SBIConfig = SBIConfig()
) -> SBIResult:
    """Make one self-blended pseudo-fake of ``image`` (uint8 RGB (H, W, 3)) with its 5 landmarks (5, 2).

    See the module docstring; ``result.fake`` equals ``result.real`` exactly wherever ``result.mask``
    is 0, and ``result.mask.max()`` is the blend ratio drawn.
    """
    _check_image(image)
    pts = _check_landmarks(landmarks)
    h, w = image.shape[:2]

    source = np.ascontiguousarray(image)
    target = np.ascontiguousarray(image).copy()
    if rng.random() < config.augment_source_prob:
        source = _augment(source, rng, config)
    else:
        target = _augment(target, rng, config)
    source = _warp_source(source, rng, config)

    region = face_region_mask(pts, (h, w), rng=rng, config=config)
    mask = _soft_mask(region, _face_scale(pts), rng, config)
    ratio = float(config.blend_ratios[int(rng.integers(len(config.blend_ratios)))])
    mask = (mask * np.float32(ratio)).astype(np.float32)

    m = mask[..., None]
    blended = m * source.astype(np.float32) + (np.float32(1.0) - m) * target.astype(np.float32)
    fake = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return SBIResult(real=target, fake=fake, mask=mask)


def sbi_preview(
    images_with_landmarks: Sequence[tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    seed: int = 0,
    config: SBIConfig = SBIConfig(),
) -> None:
    """Write a PNG grid to ``path``: one row per face, ``real | pseudo-fake | mask`` (mask in gray).

    Cells have the size of the first image (others are resized to it); cells are separated by 3-pixel
    white lines (no outer border), so the PNG is ``3 * W + 6`` wide and ``n * H + 3 * (n - 1)`` high.
    One ``numpy.random.default_rng(seed)`` is used for all faces, in order.
    """
    items = list(images_with_landmarks)
    if not items:
        raise CevitError(f"sbi_preview: no images given for {path}")
    rng = np.random.default_rng(seed)
    ch, cw = items[0][0].shape[:2]
    sep = _SEPARATOR_PX
    grid = np.full((len(items) * ch + sep * (len(items) - 1), 3 * cw + 2 * sep, 3), 255, dtype=np.uint8)
    for row, (image, landmarks) in enumerate(items):
        result = self_blend(image, landmarks, rng=rng, config=config)
        gray = np.clip(np.rint(result.mask * 255.0), 0, 255).astype(np.uint8)
        cells = [result.real, result.fake, np.repeat(gray[..., None], 3, axis=2)]
        y0 = row * (ch + sep)
        for col, cell in enumerate(cells):
            if cell.shape[:2] != (ch, cw):
                cell = cv2.resize(cell, (cw, ch), interpolation=cv2.INTER_AREA)
            x0 = col * (cw + sep)
            grid[y0 : y0 + ch, x0 : x0 + cw] = cell
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise MediaError(f"{out}: could not write the SBI preview PNG")
    logger.info("sbi_preview: wrote %d faces to %s", len(items), out)
