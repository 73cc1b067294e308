"""Video probing and frame sampling: :func:`cevit.media.probe_video` and :func:`cevit.media.sample_frames` (every
sampled frame consumed) on any bytes; a 1-megapixel frame limit and a decode budget keep each run short."""

from __future__ import annotations

from pathlib import Path

from fuzz import seeds
from fuzz.common import scratch_file

INSTRUMENT = ("cevit.media",)
MAX_FRAME_PIXELS = 1_000_000


def seed(folder: Path) -> None:
    seeds.write_videos(folder)


def load() -> None:
    global CevitError, DecodeStats, probe_video, sample_frames
    from cevit.errors import CevitError
    from cevit.media import DecodeStats, probe_video, sample_frames


def one_input(data: bytes) -> None:
    path = scratch_file(data)
    try:
        info = probe_video(path, max_frame_pixels=MAX_FRAME_PIXELS)
    except CevitError:
        return
    assert info.width > 0 and info.height > 0, info
    stats = DecodeStats()
    try:
        for frame in sample_frames(path, num_frames=4, max_decode_seconds=10.0, stats=stats,
                                   max_frame_pixels=MAX_FRAME_PIXELS):  # fmt: skip
            assert frame.image.ndim == 3 and frame.image.shape[2] == 3, frame.image.shape
    except CevitError:
        return
    assert stats.frames_failed >= 0
