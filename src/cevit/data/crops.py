"""Saved face crops: writing a face of a frame to disk for a face index, and reading it back.

A saved crop is the face's box made square and grown by a generous ``margin`` (so training can re-crop it with
any model's contract and augment it), zero-padded where it leaves the frame, and downscaled so its side is at
most ``max_size``. :func:`save_face_crop` uses the contract's own padded crop
(:func:`cevit.preprocess.padded_square_crop`) and returns the face box, landmarks and the crop's *valid region*
(the part that shows the frame) in the saved crop's pixels — the values a face index row records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from cevit.preprocess import padded_square_crop, square_box

__all__ = ["SavedCrop", "save_face_crop", "load_crop"]

Box = tuple[float, float, float, float]


@dataclass(frozen=True, kw_only=True)
class SavedCrop:
    """A face crop ready to be written, with its geometry in the crop's own pixels."""

    image: np.ndarray  #: (s, s, 3) uint8 RGB
    box: Box  #: the detector's face box
    landmarks: tuple[tuple[float, float], ...]  #: the 5 landmarks (empty when the detector gave none)
    valid: Box  #: the rectangle that shows the original frame; zero padding outside


def save_face_crop(
    frame: np.ndarray, box: Sequence[float], landmarks: Iterable[Sequence[float]], *, margin: float, max_size: int
) -> SavedCrop:
    """The saved crop of the face at ``box`` in ``frame`` (RGB uint8), grown by ``margin``, side <= ``max_size``.

    Raises ``ValueError`` for an unusable box (see :mod:`cevit.preprocess`).
    """
    import cv2

    crop, (vx1, vy1, vx2, vy2) = padded_square_crop(frame, box, margin)
    side0 = crop.shape[0]
    scale = 1.0
    if side0 > max_size:
        side = max(1, int(round(max_size)))
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
        scale = side / side0
    # the square's origin in frame pixels (padded_square_crop places the squared box at the crop's (0, 0))
    ox, oy = square_box(box, margin)[:2]
    bx = ((box[0] - ox) * scale, (box[1] - oy) * scale, (box[2] - ox) * scale, (box[3] - oy) * scale)
    lms = tuple(((float(x) - ox) * scale, (float(y) - oy) * scale) for x, y in landmarks)
    valid = (vx1 * scale, vy1 * scale, vx2 * scale, vy2 * scale)
    return SavedCrop(image=crop, box=tuple(float(v) for v in bx), landmarks=lms, valid=valid)  # type: ignore[arg-type]


def load_crop(path: str) -> np.ndarray | None:
    """A saved crop as uint8 RGB (H, W, 3), or None when missing or undecodable."""
    import cv2

    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if buf.size == 0:
        return None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[0] < 2 or img.shape[1] < 2:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
