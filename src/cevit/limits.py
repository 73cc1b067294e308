"""The resource policy per analysed item: limits on time, faces, duration and memory, and the errors they give.

Like ImageMagick's ``policy.xml``, but as settings (:class:`cevit.inference.pipeline.AnalyzeOptions`, the CLI flags
of ``cevit analyze`` / ``cevit serve``, the service's options) with safe defaults. The pixel limits of images and
video frames live with the readers (:mod:`cevit.media`); this module holds the others:

* ``max_item_seconds`` (default :data:`DEFAULT_MAX_ITEM_SECONDS`): wall time of one item. A :class:`Deadline` is
  checked before each demuxed packet of a video (probing and sampling), after decoding an image, between
  face-detection chunks and before scoring. It is cooperative: one step that never returns (a call inside FFmpeg or
  Pillow that hangs) is not interrupted. The steps are bounded by the pixel limits, so in practice a step takes
  at most seconds; what loops over a file (demuxing, decoding packet after packet) is what the deadline stops.
* ``max_video_seconds`` (default :data:`DEFAULT_MAX_VIDEO_SECONDS`): the duration a video's header declares,
  checked before its frames are sampled (a header that lies is caught by the time limit).
* ``max_faces_per_frame`` (default :data:`DEFAULT_MAX_FACES_PER_FRAME`): faces the detector found in one frame or
  image, checked before any of them is cropped or scored.
* ``max_item_memory_mb`` (default :data:`DEFAULT_MAX_ITEM_MEMORY_MB`): an *estimate* of the decoded pixels held at
  once (:func:`estimate_item_bytes`), from the image header or the video stream header, before decoding. The
  memory of the model, of the face detector and of FFmpeg's own buffers is not counted, and the process's real
  memory is not measured.

Every limit raises :class:`~cevit.errors.ResourceLimitError` (size limits: its subclass
:class:`~cevit.errors.MediaTooLargeError`) with a message naming the file, the setting and its value. ``None``
switches a limit off.
"""

from __future__ import annotations

import time

from cevit.errors import ConfigError, MediaTooLargeError, ResourceLimitError

__all__ = [
    "DEFAULT_MAX_ITEM_SECONDS",
    "DEFAULT_MAX_VIDEO_SECONDS",
    "DEFAULT_MAX_FACES_PER_FRAME",
    "DEFAULT_MAX_ITEM_MEMORY_MB",
    "Deadline",
    "check_limit_value",
    "check_video_duration",
    "check_faces",
    "estimate_item_bytes",
    "check_item_memory",
]

#: Wall time of one item (seconds): far above a normal analysis (images: under a second to a few seconds on a
#: CPU; a video of 30 sampled frames: seconds to tens of seconds), far below "stalled".
DEFAULT_MAX_ITEM_SECONDS = 300.0
#: Declared video duration (seconds): 3 hours, longer than a feature film.
DEFAULT_MAX_VIDEO_SECONDS = 3 * 3600.0
#: Faces in one frame or image: a large group photo passes, a mosaic of thousands of faces does not.
DEFAULT_MAX_FACES_PER_FRAME = 100
#: Estimated decoded pixels held at once (MiB): above what the default pixel limits allow (an image of
#: 100 MP: about 572 MiB), so by default it only binds when the pixel limits are raised.
DEFAULT_MAX_ITEM_MEMORY_MB = 2048

_MIB = 1 << 20


def check_limit_value(name: str, value: float | None, *, integer: bool = False) -> None:
    """ConfigError unless ``value`` is None (no limit) or a positive number (an integer when ``integer``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise ConfigError(f"{name} must be {'an integer' if integer else 'a number'} > 0 or None, got {value!r}")
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be > 0 (or None for no limit), got {value!r}")


class Deadline:
    """The wall-time budget of one item: :meth:`check` raises ResourceLimitError once it has run out."""

    def __init__(self, *, source: str, seconds: float | None, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.source = source
        self.seconds = seconds
        self._clock = clock
        self.start = clock()
        self.end = None if seconds is None else self.start + seconds

    def expired(self) -> bool:
        return self.end is not None and self._clock() > self.end

    def check(self, stage: str = "analysing") -> None:
        if self.expired():
            elapsed = self._clock() - self.start
            raise ResourceLimitError(
                f"{self.source}: stopped after {elapsed:.1f} s while {stage}: the item exceeded the time limit "
                f"max_item_seconds={self.seconds:g}"
            )

    def __call__(self) -> None:  # a callback for the media readers (checked per demuxed packet)
        self.check("decoding")


def check_video_duration(source: str, duration: float | None, limit: float | None) -> None:
    """MediaTooLargeError when the declared ``duration`` (seconds) exceeds ``limit``."""
    if limit is not None and duration is not None and duration > limit:
        raise MediaTooLargeError(
            f"{source}: video too long: its header declares {duration:.1f} s, above the limit "
            f"max_video_seconds={limit:g}"
        )


def check_faces(source: str, frame_index: int, count: int, limit: int | None, *, video: bool) -> None:
    """ResourceLimitError when one frame (or the image) holds more than ``limit`` faces."""
    if limit is not None and count > limit:
        where = f"frame {frame_index}" if video else "the image"
        raise ResourceLimitError(
            f"{source}: {count} faces found in {where}, above the limit max_faces_per_frame={limit}"
        )


def estimate_item_bytes(width: int, height: int, *, frames_held: int = 1) -> int:
    """Decoded bytes held at once: ``frames_held`` RGB frames plus the decoder's current frame, 3 bytes a pixel."""
    return (max(1, frames_held) + 1) * max(0, width) * max(0, height) * 3


def check_item_memory(source: str, width: int, height: int, *, frames_held: int, limit_mb: float | None) -> None:
    """MediaTooLargeError when :func:`estimate_item_bytes` exceeds ``limit_mb`` MiB."""
    if limit_mb is None:
        return
    estimate = estimate_item_bytes(width, height, frames_held=frames_held)
    if estimate > limit_mb * _MIB:
        raise MediaTooLargeError(
            f"{source}: decoding {width}x{height} ({frames_held} frame(s) held at once) needs an estimated "
            f"{estimate / _MIB:.0f} MiB, above the limit max_item_memory_mb={limit_mb:g}"
        )
