"""The resource policy's rules (cevit.limits), without media: deadline, duration, faces, memory estimate."""

from __future__ import annotations

import pytest

from cevit.errors import ConfigError, MediaError, MediaTooLargeError, ResourceLimitError
from cevit.limits import (
    Deadline,
    check_faces,
    check_item_memory,
    check_limit_value,
    check_video_duration,
    estimate_item_bytes,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_resource_limit_errors_are_media_errors():
    assert issubclass(ResourceLimitError, MediaError) and issubclass(MediaTooLargeError, ResourceLimitError)


def test_deadline_raises_only_after_its_time_naming_file_stage_and_limit():
    clock = FakeClock()
    deadline = Deadline(source="clip.mp4", seconds=2.5, clock=clock)
    clock.now += 2.5
    deadline.check("decoding")  # exactly at the limit: still fine
    deadline()
    clock.now += 0.01
    with pytest.raises(ResourceLimitError, match=r"clip\.mp4: stopped after 2\.5 s while detecting faces.*"
                       r"max_item_seconds=2\.5"):  # fmt: skip
        deadline.check("detecting faces")
    with pytest.raises(ResourceLimitError, match="while decoding"):
        deadline()  # the media readers' per-packet callback


def test_deadline_without_limit_never_expires():
    clock = FakeClock()
    deadline = Deadline(source="x", seconds=None, clock=clock)
    clock.now += 1e9
    deadline.check()
    assert not deadline.expired()


def test_video_duration_limit():
    check_video_duration("v.mp4", 3600.0, 3600.0)
    check_video_duration("v.mp4", None, 1.0)  # unknown duration: the time limit bounds it
    check_video_duration("v.mp4", 1e9, None)
    with pytest.raises(MediaTooLargeError, match=r"v\.mp4: video too long.*3600\.5 s.*max_video_seconds=3600"):
        check_video_duration("v.mp4", 3600.5, 3600.0)


def test_faces_limit_names_the_frame():
    check_faces("a.jpg", 0, 100, 100, video=False)
    check_faces("a.jpg", 0, 10_000, None, video=False)
    with pytest.raises(ResourceLimitError, match=r"a\.jpg: 101 faces found in the image.*max_faces_per_frame=100"):
        check_faces("a.jpg", 0, 101, 100, video=False)
    with pytest.raises(ResourceLimitError, match="in frame 42"):
        check_faces("v.mp4", 42, 3, 2, video=True)


def test_memory_estimate_and_limit():
    assert estimate_item_bytes(1000, 1000, frames_held=1) == 2 * 3_000_000
    assert estimate_item_bytes(1000, 1000, frames_held=8) == 9 * 3_000_000
    check_item_memory("a.png", 1000, 1000, frames_held=1, limit_mb=6_000_000 / 2**20)
    check_item_memory("a.png", 10**6, 10**6, frames_held=8, limit_mb=None)
    with pytest.raises(MediaTooLargeError, match=r"a\.png: decoding 1000x1000.*max_item_memory_mb=5"):
        check_item_memory("a.png", 1000, 1000, frames_held=1, limit_mb=5)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "10"])
def test_limit_values_are_checked(bad):
    with pytest.raises(ConfigError):
        check_limit_value("max_item_seconds", bad)


def test_integer_limits_refuse_fractions():
    check_limit_value("max_faces_per_frame", 3, integer=True)
    check_limit_value("max_faces_per_frame", None, integer=True)
    with pytest.raises(ConfigError, match="integer"):
        check_limit_value("max_faces_per_frame", 2.5, integer=True)
