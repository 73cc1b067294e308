"""MTCNN face detector (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", IEEE SPL 2016) in plain torch + numpy.

The detector is a cascade of three small networks:

1. **P-Net** (proposal net) runs fully convolutionally over an image pyramid (scales
   ``12 / min_face_size * factor**k`` while the shorter side stays >= 12 px). Each output cell stands for
   a 12x12 window at stride 2. Windows with a face probability above ``thresholds[0]`` are kept, reduced
   by non-maximum suppression (NMS, IoU 0.5) within each scale and again across scales (IoU 0.7), moved by
   the predicted box regression and made square.
2. **R-Net** (refine net) re-scores 24x24 crops of those candidates; survivors (``thresholds[1]``) are
   reduced by NMS (IoU 0.7), regressed and squared again.
3. **O-Net** (output net) re-scores 48x48 crops (``thresholds[2]``), regresses the boxes and predicts five
   landmarks; a final NMS uses the "min" overlap (intersection over the smaller area, 0.7).

Input pixels are RGB, scaled as ``(x - 127.5) / 128``. The dense layers of R-Net/O-Net come from Caffe, so
the last convolution map is permuted to (batch, width, height, channels) before it is flattened.

Implementation choices (cevit's, not the paper's):

* Coordinates are continuous pixel coordinates: a box ``(x1, y1, x2, y2)`` covers ``x1 <= x < x2``; the
  pixel with index ``i`` spans ``[i, i + 1)``. Boxes are **not** clipped to the frame; a face at the border
  may have a box that extends slightly beyond it.
* Pyramid levels are made with OpenCV's area interpolation, each from the previous level (the first from
  the possibly downscaled frame): about 4x cheaper than resampling every level from the frame, with the
  same detections up to the usual few-percent jitter of MTCNN boxes.
* R-Net/O-Net crops: the candidate box is squared and rounded to whole pixels, the part outside the frame is
  zero-padded, and the square is resized to 24 or 48 px with **area interpolation** in the sense of adaptive
  average pooling (``torch.nn.functional.interpolate(mode="area")``, computed for all crops of a frame at
  once from its integral image): blocks of pixels are averaged when shrinking, pixels are repeated when
  enlarging. This is also how the widely used facenet-pytorch port resizes its crops; on the reference
  photos it gave fewer low-confidence false positives than bilinear enlarging (the astronaut sample, for
  one, gets a spurious 0.87 "face" on the suit collar with bilinear crops), and bilinear shrinking would
  alias on large faces.
* Frames whose longer side exceeds ``max_side`` are detected on an area-downscaled copy (``refine="working"``,
  the default). With ``refine="full"`` only P-Net (the pyramid, the costly stage) runs on the copy: its
  candidates are mapped to the original frame and R-Net and O-Net score crops of the **original** pixels, at
  almost no extra cost (their crops have a fixed size). On the 21 public videos both settings found every
  confident face (p >= 0.95) of a full-resolution run in all 630 sampled frames (see
  ``benchmarks/detection_recall.py``), so the default stays as the shipped weights were measured with.
  Boxes and landmarks are always in the original frame's pixel coordinates.
* Frames of equal (working) size go through P-Net together; the R-Net crops of all frames form one batch,
  as do the O-Net crops. Each batch is fed to its net in sub-batches (:data:`CPU_CHUNKS`) that fit the CPU
  caches, which is markedly faster on CPU than one huge forward call.

All faces are kept (no "largest face only" mode); each frame's faces are sorted by probability, highest
first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cevit.errors import CheckpointError, ConfigError, FaceDetectionError

__all__ = ["PNet", "RNet", "ONet", "MTCNN", "DetectedFace", "nms", "batched_nms"]

logger = logging.getLogger(__name__)

#: Name of the packaged weights file inside ``cevit/faces/data``.
WEIGHTS_FILE = "mtcnn.safetensors"
#: Forward-call sizes on CPU. All frames' candidates go through each net together, but in sub-batches
#: small enough to stay in the CPU caches: on a 2-core Xeon these ran 2-3x faster than one big call.
#: P-Net: input pixels (frames x height x width of one pyramid level) per call; R-Net/O-Net: crops per call.
CPU_CHUNKS = {"pnet_pixels": 1 << 19, "rnet_crops": 256, "onet_crops": 64}
#: Forward-call sizes on other devices (GPUs), bounded only to limit memory.
DEVICE_CHUNKS = {"pnet_pixels": 1 << 24, "rnet_crops": 8192, "onet_crops": 2048}

_PNET_CELL = 12
_PNET_STRIDE = 2


# --------------------------------------------------------------------------------------------------------
# Networks. Attribute names equal the keys of the released weights (conv1, prelu1, ..., dense6_3).
# --------------------------------------------------------------------------------------------------------


def _first_conv(conv: nn.Conv2d, x: torch.Tensor, pixels: bool) -> torch.Tensor:
    """Apply a net's first convolution; with ``pixels=True`` ``x`` holds raw RGB values 0-255 and the input
    normalisation ``(x - 127.5) / 128`` is folded into the weights (exact: the convolution has no padding),
    which saves two passes over the largest tensor."""
    if not pixels:
        return conv(x)
    weight = conv.weight * (1.0 / 128.0)
    bias = conv.bias - 127.5 * weight.sum(dim=(1, 2, 3))
    return F.conv2d(x, weight, bias)


class PNet(nn.Module):
    """Proposal network: fully convolutional, one output cell per 12x12 window at stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor, *, pixels: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (N, 3, H, W) RGB, normalised as ``(v - 127.5) / 128`` (or raw 0-255 values with
        ``pixels=True``). Returns the face probability (N, H', W') and the box regression (N, 4, H', W') as
        (dx1, dy1, dx2, dy2) relative to the window size; H' = ceil((H - 2) / 2) - 4, likewise W'."""
        x = self.pool1(self.prelu1(_first_conv(self.conv1, x, pixels)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        # both 1x1 heads in one convolution (one pass over the feature map)
        weight = torch.cat([self.conv4_1.weight, self.conv4_2.weight])
        bias = torch.cat([self.conv4_1.bias, self.conv4_2.bias])
        out = F.conv2d(x, weight, bias)
        prob = torch.sigmoid(out[:, 1] - out[:, 0])  # == softmax over the two logits, face class
        return prob, out[:, 2:]


def _flatten_caffe(x: torch.Tensor) -> torch.Tensor:
    """Flatten a conv map in Caffe's (batch, width, height, channels) order, as the dense weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refine network on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor, *, pixels: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (N, 3, 24, 24) RGB, normalised (or raw 0-255 with ``pixels=True``, see :class:`PNet`).
        Returns the face probability (N,) and the box regression (N, 4)."""
        x = self.pool1(self.prelu1(_first_conv(self.conv1, x, pixels)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_caffe(x)))
        logits = self.dense5_1(x)
        return torch.softmax(logits, dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output network on 48x48 crops: probability, box regression and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor, *, pixels: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x``: (N, 3, 48, 48) RGB, normalised (or raw 0-255 with ``pixels=True``, see :class:`PNet`).
        Returns the face probability (N,), the box regression (N, 4) and the landmarks (N, 10): five x then
        five y, relative to the crop box."""
        x = self.pool1(self.prelu1(_first_conv(self.conv1, x, pixels)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_caffe(x)))
        logits = self.dense6_1(x)
        return torch.softmax(logits, dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


# --------------------------------------------------------------------------------------------------------
# Box utilities (numpy; boxes are float arrays (N, 4) of x1, y1, x2, y2).
# --------------------------------------------------------------------------------------------------------


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: Literal["union", "min"] = "union") -> np.ndarray:
    """Greedy non-maximum suppression.

    Boxes are visited by decreasing score; a box is kept unless its overlap with an already kept box is
    greater than ``threshold``. Overlap is intersection over union (``mode="union"``) or intersection over
    the smaller of the two areas (``mode="min"``). Boxes with zero area overlap nothing. Returns the indices
    of the kept boxes, highest score first (ties keep the input order).
    """
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', got {mode!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"nms got {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    if boxes.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    # coordinates in visiting order; each round keeps the first box and drops the ones it overlaps
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[order, k]) for k in range(4))
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    idx = order
    keep: list[int] = []
    while idx.size:
        keep.append(int(idx[0]))
        if idx.size == 1:
            break
        iw = np.minimum(x2[0], x2[1:]) - np.maximum(x1[0], x1[1:])
        ih = np.minimum(y2[0], y2[1:]) - np.maximum(y1[0], y1[1:])
        inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
        if mode == "union":
            denom = areas[0] + areas[1:] - inter
        else:
            denom = np.minimum(areas[0], areas[1:])
        # overlap = inter / denom <= threshold, written without division: a zero denominator means no
        # intersection, and such a box is kept
        rest = np.flatnonzero(inter <= threshold * denom) + 1
        idx, x1, y1, x2, y2, areas = idx[rest], x1[rest], y1[rest], x2[rest], y2[rest], areas[rest]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    mode: Literal["union", "min"] = "union",
) -> np.ndarray:
    """:func:`nms` applied separately within each group (e.g. each frame); boxes of different groups never
    suppress each other. Returns kept indices into the inputs, sorted ascending."""
    groups = np.asarray(groups).reshape(-1)
    if groups.size == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    ends = np.r_[starts[1:], sorted_groups.size]
    kept = [order[s:e][nms(boxes[order[s:e]], scores[order[s:e]], threshold, mode)] for s, e in zip(starts, ends)]
    return np.sort(np.concatenate(kept))


def _apply_regression(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Move box edges by the regression offsets (dx1, dy1, dx2, dy2), given relative to the box size."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + reg * np.concatenate([w, h, w, h], axis=1)


def _square_int(boxes: np.ndarray) -> np.ndarray:
    """Square each box around its centre (side = longer side), rounded to whole pixels: int64 (N, 4)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = np.round(boxes[:, 0] + (w - side) / 2.0)
    y1 = np.round(boxes[:, 1] + (h - side) / 2.0)
    s = np.round(side)
    return np.stack([x1, y1, x1 + s, y1 + s], axis=1).astype(np.int64)


def _gather(table: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Rows of ``table`` at the flat indices ``rows + cols`` (broadcast), flattened."""
    return np.take(table, (rows + cols).ravel(), axis=0)


def _area_crops(images: Sequence[np.ndarray], frame_idx: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut the integer boxes (N, 4) out of ``images[frame_idx]`` and resize them to ``size`` x ``size`` with
    area interpolation; what lies outside the frame counts as zeros. Returns float32 (N, S, S, 3), 0-255.

    "Area" has the semantics of adaptive average pooling (``torch.nn.functional.interpolate(mode="area")``):
    output pixel ``i`` of a side of length ``s`` is the mean of input pixels ``floor(i*s/S)`` to
    ``ceil((i+1)*s/S) - 1``. Shrinking averages whole pixel blocks; enlarging repeats pixels (averaging two
    at block seams). All crops of a frame are computed at once from the frame's integral image.
    """
    import cv2

    n = boxes.shape[0]
    out = np.empty((n, size, size, 3), dtype=np.float32)
    if n == 0:
        return out
    lo = np.arange(size, dtype=np.int64)[None, :]
    hi = lo + 1
    order = np.argsort(frame_idx, kind="stable")
    fsorted = frame_idx[order]
    starts = np.flatnonzero(np.r_[True, fsorted[1:] != fsorted[:-1]])
    ends = np.r_[starts[1:], n]
    for s, e in zip(starts.tolist(), ends.tolist()):
        sel = order[s:e]
        img = images[int(fsorted[s])]
        H, W = img.shape[:2]
        depth = cv2.CV_32S if (H + 1) * (W + 1) * 255 < 2**31 else cv2.CV_64F
        ii = cv2.integral(img, sdepth=depth).reshape(-1, 3)  # ((H+1)*(W+1), 3) prefix sums
        b = boxes[sel]
        w = (b[:, 2] - b[:, 0])[:, None]
        h = (b[:, 3] - b[:, 1])[:, None]
        xs = b[:, 0:1] + (lo * w) // size
        xe = b[:, 0:1] - ((-hi * w) // size)  # ceil division
        ys = b[:, 1:2] + (lo * h) // size
        ye = b[:, 1:2] - ((-hi * h) // size)
        count = ((ye - ys)[:, :, None] * (xe - xs)[:, None, :]).astype(np.float32)
        # clipping the bin edges to the frame leaves only the in-frame pixels in each sum (zero padding)
        np.clip(xs, 0, W, out=xs)
        np.clip(xe, 0, W, out=xe)
        np.clip(ys, 0, H, out=ys)
        np.clip(ye, 0, H, out=ye)
        ys *= W + 1
        ye *= W + 1
        xs3, xe3 = xs[:, None, :], xe[:, None, :]
        ys3, ye3 = ys[:, :, None], ye[:, :, None]
        sums = _gather(ii, ye3, xe3) - _gather(ii, ys3, xe3) - _gather(ii, ye3, xs3) + _gather(ii, ys3, xs3)
        out[sel] = sums.reshape(len(sel), size, size, 3).astype(np.float32) / count[..., None]
    return out


# --------------------------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectedFace:
    """One detected face, in pixel coordinates of the original frame.

    ``box`` is (x1, y1, x2, y2), continuous coordinates (x2/y2 exclusive), possibly extending slightly
    beyond the frame. ``landmarks`` are five (x, y) points: left eye, right eye, nose, mouth left, mouth
    right (left/right as seen in the image). ``probability`` is O-Net's face probability.
    """

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    probability: float


@dataclass
class _Candidates:
    """Candidate boxes of all frames, in working-image coordinates."""

    frame: np.ndarray  # (N,) int64 index into the frames list
    boxes: np.ndarray  # (N, 4) float64
    scores: np.ndarray  # (N,) float64

    @classmethod
    def empty(cls) -> _Candidates:
        return cls(np.empty(0, np.int64), np.empty((0, 4), np.float64), np.empty(0, np.float64))

    def take(self, idx: np.ndarray) -> _Candidates:
        return _Candidates(self.frame[idx], self.boxes[idx], self.scores[idx])

    def __len__(self) -> int:
        return int(self.frame.shape[0])


class MTCNN:
    """Multi-task cascaded CNN face detector with batch detection over frames.

    :meth:`detect` takes RGB uint8 frames (H, W, 3) of any sizes and returns, per frame, a list of
    :class:`DetectedFace` (box, five landmarks, probability) in original-frame pixels, **sorted by
    probability, highest first**. All faces above the thresholds are kept. The weights are loaded once, in
    the constructor; the networks run under ``torch.inference_mode()``. :meth:`detect` keeps no state
    between calls.

    ``chunks`` holds the forward-call sizes (see :data:`CPU_CHUNKS`); they change speed and memory use,
    not results (beyond float rounding).

    Args:
        min_face_size: smallest face side (pixels of the working image, i.e. after ``max_side``
            downscaling) the pyramid looks for.
        thresholds: face-probability thresholds of P-Net, R-Net and O-Net.
        factor: scale step of the image pyramid (0 < factor < 1).
        max_side: frames whose longer side exceeds this go through P-Net on an area-downscaled copy with that
            longer side (results are mapped back to the original pixels); ``None`` never downscales.
        refine: where R-Net and O-Net crop the candidates of a downscaled frame: ``"working"`` from the
            downscaled copy, ``"full"`` from the original frame (no effect on frames that were not downscaled).
        device: torch device the networks run on.
        weights_path: a safetensors file with ``pnet.*``, ``rnet.*``, ``onet.*`` tensors; ``None`` loads the
            weights packaged with cevit (``cevit/faces/data/mtcnn.safetensors``).

    Raises:
        ConfigError: a setting is out of range.
        CheckpointError: the weights file is missing, unreadable or does not fit the networks.
    """

    def __init__(
        self,
        *,
        min_face_size: float = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        max_side: int | None = 1280,
        refine: Literal["full", "working"] = "working",
        device: str | torch.device = "cpu",
        weights_path: str | Path | None = None,
    ) -> None:
        if not min_face_size > 0:
            raise ConfigError(f"MTCNN min_face_size must be > 0, got {min_face_size}")
        thresholds = tuple(float(t) for t in thresholds)
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ConfigError(f"MTCNN thresholds must be three values in [0, 1], got {thresholds}")
        if not 0.0 < factor < 1.0:
            raise ConfigError(f"MTCNN factor must be in (0, 1), got {factor}")
        if max_side is not None and max_side < 12:
            raise ConfigError(f"MTCNN max_side must be >= 12 or None, got {max_side}")
        self.min_face_size = float(min_face_size)
        self.thresholds: tuple[float, float, float] = thresholds  # type: ignore[assignment]
        self.factor = float(factor)
        if refine not in ("full", "working"):
            raise ConfigError(f"MTCNN refine must be 'full' or 'working', got {refine!r}")
        self.max_side = None if max_side is None else int(max_side)
        self.refine: Literal["full", "working"] = refine
        self.device = torch.device(device)
        self.chunks = dict(CPU_CHUNKS if self.device.type == "cpu" else DEVICE_CHUNKS)
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self._load_weights(weights_path)
        for net in (self.pnet, self.rnet, self.onet):
            net.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)

    # ---------------------------------------------------------------------------------------- weights
    def _load_weights(self, weights_path: str | Path | None) -> None:
        from safetensors.torch import load as load_safetensors

        ref: Traversable | Path
        if weights_path is None:
            ref = resources.files("cevit.faces").joinpath("data").joinpath(WEIGHTS_FILE)
            name = f"cevit/faces/data/{WEIGHTS_FILE} (packaged)"
        else:
            ref = Path(weights_path)
            name = str(weights_path)
        try:
            data = ref.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{name}: MTCNN weights file not found") from None
        except OSError as exc:
            raise CheckpointError(f"{name}: cannot read MTCNN weights file ({exc})") from exc
        try:
            state = load_safetensors(data)
        except Exception as exc:  # safetensors raises its own error types for malformed files
            raise CheckpointError(f"{name}: not a valid safetensors file ({exc})") from exc
        for prefix, net in (("pnet.", self.pnet), ("rnet.", self.rnet), ("onet.", self.onet)):
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            expected = net.state_dict()
            missing = sorted(set(expected) - set(sub))
            unexpected = sorted(set(sub) - set(expected))
            if missing or unexpected:
                raise CheckpointError(
                    f"{name}: MTCNN weights do not fit {prefix[:-1]} "
                    f"(missing {[prefix + k for k in missing]}, unexpected {[prefix + k for k in unexpected]})"
                )
            for k, v in sub.items():
                if tuple(v.shape) != tuple(expected[k].shape):
                    raise CheckpointError(
                        f"{name}: tensor {prefix + k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
                    )
            net.load_state_dict({k: v.to(torch.float32) for k, v in sub.items()}, strict=True)
        logger.debug("loaded MTCNN weights from %s", name)

    # ---------------------------------------------------------------------------------------- public API
    def detect_one(self, frame: np.ndarray) -> list[DetectedFace]:
        """Detect the faces of one RGB uint8 frame (H, W, 3), sorted by probability, highest first."""
        return self.detect([frame])[0]

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        """Detect the faces of several RGB uint8 frames (H, W, 3), which may differ in size.

        Returns one list per frame, in input order; each list holds that frame's faces sorted by
        probability, highest first (an empty list when the frame has no face).

        Raises:
            FaceDetectionError: a frame is not a uint8 (H, W, 3) array, or the networks failed (e.g. out of
                memory).
        """
        frames = list(frames)
        if not frames:
            return []
        work: list[np.ndarray] = []
        back_scale = np.empty((len(frames), 2), dtype=np.float64)  # (sx, sy): working -> original pixels
        for i, frame in enumerate(frames):
            img, sx, sy = self._working_image(frame, i)
            work.append(img)
            back_scale[i] = (sx, sy)

        try:
            with torch.inference_mode():
                cand = self._stage_pnet(work)
                if self.refine == "full" and (back_scale != 1.0).any():
                    # R-Net / O-Net on the original pixels: P-Net's candidates to original coordinates
                    sx, sy = back_scale[cand.frame, 0][:, None], back_scale[cand.frame, 1][:, None]
                    cand.boxes = cand.boxes * np.concatenate([sx, sy, sx, sy], axis=1)
                    work = [np.ascontiguousarray(f) for f in frames]
                    back_scale[:] = 1.0
                cand = self._stage_rnet(work, cand)
                cand, landmarks = self._stage_onet(work, cand)
        except RuntimeError as exc:  # torch failures (out of memory, device errors)
            raise FaceDetectionError(f"MTCNN failed on {len(frames)} frame(s) on {self.device}: {exc}") from exc

        results: list[list[DetectedFace]] = [[] for _ in frames]
        if len(cand):
            sx = back_scale[cand.frame, 0][:, None]
            sy = back_scale[cand.frame, 1][:, None]
            boxes = cand.boxes * np.concatenate([sx, sy, sx, sy], axis=1)
            lx = landmarks[:, :5] * sx
            ly = landmarks[:, 5:] * sy
            order = np.lexsort((-cand.scores, cand.frame))  # by frame, then probability descending
            for n in order.tolist():
                results[int(cand.frame[n])].append(
                    DetectedFace(
                        box=tuple(float(v) for v in boxes[n]),  # type: ignore[arg-type]
                        landmarks=tuple((float(x), float(y)) for x, y in zip(lx[n], ly[n])),
                        probability=float(cand.scores[n]),
                    )
                )
        return results

    # ---------------------------------------------------------------------------------------- stages
    def _working_image(self, frame: np.ndarray, index: int) -> tuple[np.ndarray, float, float]:
        """Validate ``frame`` and downscale it to ``max_side`` if needed; returns (image, sx, sy)."""
        import cv2

        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            desc = (
                f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            )
            raise FaceDetectionError(f"frame {index}: expected a uint8 RGB array of shape (H, W, 3), got {desc}")
        h, w = frame.shape[:2]
        if h == 0 or w == 0:
            raise FaceDetectionError(f"frame {index}: empty frame of shape {frame.shape}")
        frame = np.ascontiguousarray(frame)
        if self.max_side is None or max(h, w) <= self.max_side:
            return frame, 1.0, 1.0
        r = self.max_side / max(h, w)
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        small = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
        return small, w / nw, h / nh

    def _scales(self, h: int, w: int) -> list[float]:
        m = _PNET_CELL / self.min_face_size
        scales = []
        min_side = min(h, w) * m
        scale = m
        while min_side >= _PNET_CELL:
            scales.append(scale)
            scale *= self.factor
            min_side *= self.factor
        return scales

    def _to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) pixels 0-255 (uint8 or float32) -> float (N, 3, H, W) on the device, still 0-255 (the
        nets are called with ``pixels=True``), in channels-last memory layout (the permute of an NHWC
        array), which the CPU convolutions run faster on."""
        return torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float()

    def _stage_pnet(self, work: list[np.ndarray]) -> _Candidates:
        import cv2

        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(work):
            groups.setdefault(img.shape[:2], []).append(i)
        threshold = self.thresholds[0]
        parts: list[_Candidates] = []
        regs: list[np.ndarray] = []  # box regression, applied only after the cross-scale NMS
        for (h, w), members in groups.items():
            level = [work[i] for i in members]
            for scale in self._scales(h, w):
                hs, ws = math.ceil(h * scale), math.ceil(w * scale)
                sx, sy = ws / w, hs / h  # exact per-axis scale of this level
                # each level is resampled from the previous one (cost ~ the pyramid's area, not levels x frame)
                level = [cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA) for img in level]
                per_chunk = max(1, self.chunks["pnet_pixels"] // (hs * ws))
                for c in range(0, len(members), per_chunk):
                    idx = members[c : c + per_chunk]
                    batch = np.stack(level[c : c + per_chunk])
                    prob, reg = self.pnet(self._to_tensor(batch), pixels=True)
                    hit = torch.nonzero(prob > threshold)  # (K, 3): batch index, row, col
                    if hit.shape[0] == 0:
                        continue
                    b, r, col = hit[:, 0], hit[:, 1], hit[:, 2]
                    score = prob[b, r, col].double().cpu().numpy()
                    offsets = reg[b, :, r, col].double().cpu().numpy()
                    r_np = r.double().cpu().numpy()
                    c_np = col.double().cpu().numpy()
                    boxes = np.stack(
                        [
                            c_np * _PNET_STRIDE / sx,
                            r_np * _PNET_STRIDE / sy,
                            (c_np * _PNET_STRIDE + _PNET_CELL) / sx,
                            (r_np * _PNET_STRIDE + _PNET_CELL) / sy,
                        ],
                        axis=1,
                    )
                    frame_ids = np.asarray(idx, dtype=np.int64)[b.cpu().numpy()]
                    keep = batched_nms(boxes, score, frame_ids, 0.5, "union")
                    parts.append(_Candidates(frame_ids[keep], boxes[keep], score[keep]))
                    regs.append(offsets[keep])
        if not parts:
            return _Candidates.empty()
        cand = _Candidates(
            np.concatenate([p.frame for p in parts]),
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
        )
        reg = np.concatenate(regs)
        keep = batched_nms(cand.boxes, cand.scores, cand.frame, 0.7, "union")
        cand = cand.take(keep)
        cand.boxes = _apply_regression(cand.boxes, reg[keep])
        return cand

    def _run_crops(self, net: nn.Module, crops: np.ndarray, chunk: int) -> list[np.ndarray]:
        """Run R-Net/O-Net on crops (N, S, S, 3), pixels 0-255, ``chunk`` at a time; returns float64 arrays."""
        outs: list[list[np.ndarray]] = []
        for c in range(0, crops.shape[0], chunk):
            res = net(self._to_tensor(crops[c : c + chunk]), pixels=True)
            outs.append([t.double().cpu().numpy() for t in res])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def _stage_rnet(self, work: list[np.ndarray], cand: _Candidates) -> _Candidates:
        cand = self._squared(cand)
        if not len(cand):
            return cand
        crops = _area_crops(work, cand.frame, cand.boxes.astype(np.int64), 24)
        prob, reg = self._run_crops(self.rnet, crops, self.chunks["rnet_crops"])
        ok = np.flatnonzero(prob > self.thresholds[1])
        cand = _Candidates(cand.frame[ok], cand.boxes[ok], prob[ok])
        reg = reg[ok]
        keep = batched_nms(cand.boxes, cand.scores, cand.frame, 0.7, "union")
        cand = cand.take(keep)
        cand.boxes = _apply_regression(cand.boxes, reg[keep])
        return cand

    def _stage_onet(self, work: list[np.ndarray], cand: _Candidates) -> tuple[_Candidates, np.ndarray]:
        cand = self._squared(cand)
        if not len(cand):
            return cand, np.empty((0, 10), np.float64)
        crops = _area_crops(work, cand.frame, cand.boxes.astype(np.int64), 48)
        prob, reg, marks = self._run_crops(self.onet, crops, self.chunks["onet_crops"])
        ok = np.flatnonzero(prob > self.thresholds[2])
        cand = _Candidates(cand.frame[ok], cand.boxes[ok], prob[ok])
        reg, marks = reg[ok], marks[ok]
        # landmarks are relative to the crop box (before regression)
        w = (cand.boxes[:, 2] - cand.boxes[:, 0])[:, None]
        h = (cand.boxes[:, 3] - cand.boxes[:, 1])[:, None]
        landmarks = np.concatenate(
            [cand.boxes[:, 0:1] + w * marks[:, :5], cand.boxes[:, 1:2] + h * marks[:, 5:]], axis=1
        )
        cand.boxes = _apply_regression(cand.boxes, reg)
        keep = batched_nms(cand.boxes, cand.scores, cand.frame, 0.7, "min")
        return cand.take(keep), landmarks[keep]

    @staticmethod
    def _squared(cand: _Candidates) -> _Candidates:
        """Square the boxes on whole pixels and drop degenerate ones (before cropping for the next net)."""
        if not len(cand):
            return cand
        sq = _square_int(cand.boxes)
        ok = np.flatnonzero(sq[:, 2] > sq[:, 0])
        return _Candidates(cand.frame[ok], sq[ok].astype(np.float64), cand.scores[ok])
