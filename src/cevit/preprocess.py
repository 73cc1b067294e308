"""The preprocessing contract: how a detected face becomes the model's input tensor.

The contract is defined once, here, and travels with every checkpoint (see :mod:`cevit.checkpoint`), so
training, validation and inference always turn faces into tensors the same way:

1. **Crop** (:func:`crop_face`): the detector's box is made square by growing its shorter side
   symmetrically, then grown by ``crop_margin`` (a fraction of the square side, split equally between
   both sides). Parts outside the frame are either cut away (``crop_border="clip"``, the authors'
   convention: the crop may then be non-square) or filled with zeros (``crop_border="pad"``: the crop is
   always square and the face stays centred).
2. **Resize** (:func:`resize_face`) to ``input_size``: ``"isotropic_pad"`` scales the longer side to
   ``input_size`` keeping the aspect ratio and pads the rest with zeros, image centred; ``"stretch"``
   scales both sides to ``input_size``. Shrinking uses area interpolation, enlarging bicubic.
3. **To tensor** (:func:`to_tensor`): channel order (``RGB`` or ``BGR``), values divided by
   ``value_scale`` (255 → [0, 1]; 1 → raw 0–255), then ``(x - mean) / std`` when a mean/std is given.
   :func:`normalize` is this step on a ``uint8`` tensor wherever it lives: inference on a GPU copies the
   ``uint8`` faces (a quarter of the float32 bytes) through pinned memory (:func:`to_device`) and converts
   them there, with the same float32 operations, so the input is the same tensor as on the CPU.

Frames enter as ``uint8`` RGB arrays of shape (H, W, 3) everywhere in cevit. :class:`FacePreprocessor`, built
from a checkpoint's :class:`Preprocessing`, is the one object that inference, training, validation and
evaluation call for these three steps.

**Saved crops** (training data, see :mod:`cevit.data`): a face index stores a generous, zero-padded crop around
each face and the crop's *valid region* — the rectangle that shows the original frame. Passing it as ``valid``
makes the contract treat the padding as outside the frame, so ``clip`` cuts where inference would cut on the full
frame instead of keeping black bands.

Bad boxes: :func:`square_box` and :func:`crop_face` raise ``ValueError`` (and nothing else) for a box with a
non-finite coordinate, a zero or negative width or height, a square that lies entirely outside the frame, or
one more than :data:`MAX_BOX_TO_FRAME` times the frame's longer side (no detector produces that; a zero-padded
canvas of that size would only waste memory). Every other box, at any frame edge and for any frame size, gives
a crop that :func:`resize_face` turns into exactly ``(input_size, input_size, 3)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from cevit.errors import ConfigError

__all__ = [
    "Preprocessing",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "square_box",
    "crop_face",
    "resize_face",
    "to_tensor",
    "stack_faces",
    "normalize",
    "to_device",
    "preprocess_faces",
    "FacePreprocessor",
    "Region",
    "padded_square_crop",
    "valid_region",
]

#: A squared (and margin-grown) face box may be at most this many times the frame's longer side.
MAX_BOX_TO_FRAME = 8

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """Everything needed to turn a face in a frame into the model's input, stored with each checkpoint."""

    input_size: int
    channel_order: Literal["RGB", "BGR"] = "RGB"
    value_scale: float = 255.0
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD
    resize_mode: Literal["stretch", "isotropic_pad"] = "stretch"
    crop_margin: float = 0.0
    crop_border: Literal["clip", "pad"] = "pad"

    def __post_init__(self) -> None:
        if self.input_size < 16:
            raise ConfigError(f"preprocessing.input_size must be >= 16, got {self.input_size}")
        if self.value_scale <= 0:
            raise ConfigError(f"preprocessing.value_scale must be > 0, got {self.value_scale}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("preprocessing.mean and preprocessing.std must be given together")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"preprocessing.std must be positive, got {self.std}")
        if not 0.0 <= self.crop_margin <= 2.0:
            raise ConfigError(f"preprocessing.crop_margin must be in [0, 2], got {self.crop_margin}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ConfigError(f"preprocessing.channel_order must be RGB or BGR, got {self.channel_order!r}")
        if self.resize_mode not in ("stretch", "isotropic_pad"):
            raise ConfigError(f"preprocessing.resize_mode must be stretch or isotropic_pad, got {self.resize_mode!r}")
        if self.crop_border not in ("clip", "pad"):
            raise ConfigError(f"preprocessing.crop_border must be clip or pad, got {self.crop_border!r}")


def square_box(box: Sequence[float], margin: float = 0.0) -> tuple[int, int, int, int]:
    """Make ``box`` = (x1, y1, x2, y2) square around its centre and grow it by ``margin``.

    The shorter side is grown symmetrically to the longer one; then ``margin`` × side is added, half on each
    side. Returns integer pixel coordinates (x2/y2 exclusive); the box may extend beyond the frame.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2, w, h)):
        raise ValueError(f"face box {tuple(box)} has a non-finite coordinate")
    if not (w > 0 and h > 0):
        raise ValueError(f"degenerate face box {tuple(box)}")
    side = max(w, h) * (1.0 + margin)
    if not math.isfinite(side):
        raise ValueError(f"face box {tuple(box)} is too large")
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    nx1 = int(round(cx - side / 2.0))
    ny1 = int(round(cy - side / 2.0))
    s = max(1, int(round(side)))
    return nx1, ny1, nx1 + s, ny1 + s


Region = tuple[int, int, int, int]  #: (x1, y1, x2, y2) in pixels, x2/y2 exclusive


def _square_in_frame(
    shape: tuple[int, ...], box: Sequence[float], margin: float, valid: Sequence[float] | None
) -> tuple[Region, Region]:
    """The squared, margin-grown box and its part with real pixels (inside the frame and ``valid``)."""
    H, W = shape[:2]
    x1, y1, x2, y2 = square_box(box, margin)
    if x2 - x1 > MAX_BOX_TO_FRAME * max(H, W, 1):
        raise ValueError(f"face box {tuple(box)} is more than {MAX_BOX_TO_FRAME} times the {W}x{H} frame")
    vx1, vy1, vx2, vy2 = (0, 0, W, H) if valid is None else valid_region(valid, shape)
    cx1, cy1, cx2, cy2 = max(x1, vx1), max(y1, vy1), min(x2, vx2), min(y2, vy2)
    if cx2 <= cx1 or cy2 <= cy1:
        where = f"the {W}x{H} frame" if valid is None else f"the valid region {tuple(valid)} of the {W}x{H} frame"
        raise ValueError(f"face box {tuple(box)} lies outside {where}")
    return (x1, y1, x2, y2), (cx1, cy1, cx2, cy2)


def valid_region(region: Sequence[float], shape: tuple[int, ...]) -> Region:
    """``region`` (x1, y1, x2, y2) rounded to whole pixels and clipped to an image of ``shape`` (H, W, ...)."""
    H, W = shape[:2]
    x1, y1, x2, y2 = (float(v) for v in region)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"valid region {tuple(region)} has a non-finite coordinate")
    out = (max(0, int(math.floor(x1 + 0.5))), max(0, int(math.floor(y1 + 0.5))),
           min(W, int(math.floor(x2 + 0.5))), min(H, int(math.floor(y2 + 0.5))))  # fmt: skip
    if out[2] <= out[0] or out[3] <= out[1]:
        raise ValueError(f"valid region {tuple(region)} is empty in the {W}x{H} image")
    return out


def padded_square_crop(
    frame: np.ndarray, box: Sequence[float], margin: float, *, valid: Sequence[float] | None = None
) -> tuple[np.ndarray, Region]:
    """The square around ``box`` grown by ``margin``, zeros where it has no real pixels, and that real part.

    Returns ``(crop, region)``: ``crop`` is square (side = the squared box's side) and ``region`` is the
    rectangle of ``crop`` (its own pixel coordinates) filled from the frame; everything else is zero. ``valid``
    (frame pixels) limits the real pixels further: a saved crop whose padding is not part of the scene.
    This is the one implementation of the padded crop: the contract's ``pad`` border and the saved crops of
    :mod:`cevit.data.extract` both use it.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {frame.shape}")
    (x1, y1, x2, y2), (cx1, cy1, cx2, cy2) = _square_in_frame(frame.shape, box, margin, valid)
    out = np.zeros((y2 - y1, x2 - x1, 3), dtype=frame.dtype)
    region = (cx1 - x1, cy1 - y1, cx2 - x1, cy2 - y1)
    out[region[1] : region[3], region[0] : region[2]] = frame[cy1:cy2, cx1:cx2]
    return out, region


def crop_face(
    frame: np.ndarray, box: Sequence[float], spec: Preprocessing, *, valid: Sequence[float] | None = None
) -> np.ndarray:
    """Cut the face at ``box`` out of the full-resolution RGB ``frame`` following ``spec``'s crop rule.

    ``valid`` (x1, y1, x2, y2 in ``frame`` pixels; None = the whole frame) is the part of ``frame`` that shows
    the scene: a saved training crop records it (its zero padding lies outside), so that ``clip`` cuts at the
    original frame's edge exactly as inference does on the full frame, and ``pad`` zero-fills the same area.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {frame.shape}")
    if spec.crop_border == "pad":
        return padded_square_crop(frame, box, spec.crop_margin, valid=valid)[0]
    _, (cx1, cy1, cx2, cy2) = _square_in_frame(frame.shape, box, spec.crop_margin, valid)
    return np.ascontiguousarray(frame[cy1:cy2, cx1:cx2])


def resize_face(crop: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Resize a face crop to (input_size, input_size, 3) uint8 following ``spec.resize_mode``."""
    import cv2

    size = spec.input_size
    h, w = crop.shape[:2]
    if spec.resize_mode == "stretch":
        if (h, w) == (size, size):
            return crop
        interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_CUBIC
        return cv2.resize(crop, (size, size), interpolation=interp)
    # isotropic_pad: longer side to `size`, keep aspect, centre on a zero canvas
    if max(h, w) != size:
        scale = size / max(h, w)
        nw, nh = (size, int(h * scale)) if w > h else (int(w * scale), size)
        interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
        crop = cv2.resize(crop, (max(nw, 1), max(nh, 1)), interpolation=interp)
        h, w = crop.shape[:2]
    if (h, w) == (size, size):
        return crop
    out = np.zeros((size, size, 3), dtype=crop.dtype)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = crop
    return out


def stack_faces(faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Resized RGB uint8 faces as one contiguous ``(N, S, S, 3)`` array (a single face ``(S, S, 3)`` → N = 1)."""
    arr = np.stack(list(faces)) if not isinstance(faces, np.ndarray) else faces
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) faces, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def normalize(faces: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """``(N, S, S, 3)`` faces (uint8, RGB 0-255, on any device) → the model's float32 input ``(N, 3, S, S)``
    on the same device: channel order, ``/ value_scale``, ``(x - mean) / std``, as :func:`to_tensor`."""
    x = faces.permute(0, 3, 1, 2).float()  # (N, 3, S, S), RGB 0-255
    if spec.channel_order == "BGR":
        x = x.flip(1)
    if spec.value_scale != 1.0:
        x = x / spec.value_scale
    if spec.mean is not None and spec.std is not None:
        mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``x`` (a CPU tensor) on ``device``: to a CUDA device through pinned (page-locked) host memory with an
    asynchronous copy (work queued after it on the stream waits for it; the pinned buffer is kept until the copy is
    done by PyTorch's caching host allocator); elsewhere a plain ``.to(device)``."""
    device = torch.device(device)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def to_tensor(faces: np.ndarray | Sequence[np.ndarray], spec: Preprocessing) -> torch.Tensor:
    """Stack resized RGB uint8 faces (N, S, S, 3) into the model's float input (N, 3, S, S)."""
    return normalize(torch.from_numpy(stack_faces(faces)), spec)


class FacePreprocessor:
    """The one path from (image, face box) to the model's input, built from a checkpoint's contract.

    Inference (:class:`cevit.inference.pipeline.Detector`), training and validation
    (:mod:`cevit.training.data`), evaluation of face indexes (:mod:`cevit.evaluation.runner`) and the SBI
    preview all call it, so a face becomes the same tensor everywhere:

    * :meth:`crop` — crop (:func:`crop_face`, with the image's valid region when it is a saved crop) and resize
      (:func:`resize_face`) to ``(S, S, 3)`` uint8 RGB;
    * :meth:`to_tensor` — stack resized faces into the model's float input ``(N, 3, S, S)``;
    * calling it does both for a list of (image, box) pairs.

    ``resize_mode`` in :meth:`crop` overrides the contract's mode for one face (the training augmentation that
    sometimes uses ``isotropic_pad``); everything else comes from ``spec``.
    """

    def __init__(self, *, spec: Preprocessing) -> None:
        self.spec = spec
        self._iso = spec if spec.resize_mode == "isotropic_pad" else replace(spec, resize_mode="isotropic_pad")
        self._stretch = spec if spec.resize_mode == "stretch" else replace(spec, resize_mode="stretch")

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def __repr__(self) -> str:
        return f"FacePreprocessor(spec={self.spec!r})"

    def crop(
        self, image: np.ndarray, box: Sequence[float], *, valid: Sequence[float] | None = None,
        resize_mode: Literal["stretch", "isotropic_pad"] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """The face at ``box`` of ``image`` cropped and resized: ``(S, S, 3)`` uint8 RGB.

        Raises ``ValueError`` for an unusable box (see the module docstring).
        """
        spec = self.spec
        if resize_mode is not None and resize_mode != spec.resize_mode:
            if resize_mode not in ("stretch", "isotropic_pad"):
                raise ValueError(f"resize_mode must be stretch or isotropic_pad, got {resize_mode!r}")
            spec = self._iso if resize_mode == "isotropic_pad" else self._stretch
        return resize_face(crop_face(image, box, spec, valid=valid), spec)

    def to_tensor(
        self, faces: np.ndarray | Sequence[np.ndarray], *, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Resized faces ``(N, S, S, 3)`` uint8 RGB → the model's input ``(N, 3, S, S)`` float32.

        ``device`` (default: the CPU): where the tensor is wanted. The uint8 faces are moved there first
        (:func:`to_device`: pinned memory and an asynchronous copy to a GPU) and converted on that device; the
        result equals ``to_tensor(faces).to(device)`` (the same float32 operations, exactly rounded everywhere).
        """
        if not isinstance(faces, np.ndarray) and len(faces) == 0:
            return torch.empty((0, 3, self.spec.input_size, self.spec.input_size), device=device)
        if device is None or torch.device(device).type == "cpu":
            return to_tensor(faces, self.spec)
        return normalize(to_device(torch.from_numpy(stack_faces(faces)), device), self.spec)

    def __call__(
        self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[float]],
        *, valid: Sequence[Sequence[float] | None] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Crop, resize and tensorise one face per (image, box) pair → ``(N, 3, S, S)``."""
        if len(images) != len(boxes) or (valid is not None and len(valid) != len(boxes)):
            raise ValueError("images, boxes (and valid regions) must have the same length")
        regions = valid if valid is not None else [None] * len(boxes)
        return self.to_tensor([self.crop(im, b, valid=v) for im, b, v in zip(images, boxes, regions)])


def preprocess_faces(
    frames: Sequence[np.ndarray], boxes: Sequence[Sequence[float]], spec: Preprocessing
) -> torch.Tensor:
    """Crop, resize and tensorise one face per (frame, box) pair: ``FacePreprocessor(spec=spec)(frames, boxes)``."""
    return FacePreprocessor(spec=spec)(frames, boxes)
