"""The resource policy applied by the pipeline, on generated media: each limit refuses the item with an error
naming the file and the limit, and a batch goes on to the next item."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

import cevit.inference.pipeline as pipeline
from cevit.errors import ConfigError, MediaTooLargeError, ResourceLimitError
from cevit.inference.pipeline import AnalyzeOptions, load_model
from cevit.inference.results import Analysis, AnalysisError
from cevit.limits import Deadline
from conftest import SAMPLE_FACE, write_test_video


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    return load_model(weights=tiny_checkpoint, device="cpu")


def _limit(monkeypatch, detector, **limits):
    monkeypatch.setattr(detector, "options", dataclasses.replace(detector.options, **limits))


@pytest.fixture(scope="module")
def video_3s(tmp_path_factory):
    """3 s at 10 fps, 32x24 (30 frames)."""
    frames = [np.full((24, 32, 3), 8 * i, np.uint8) for i in range(30)]
    return write_test_video(tmp_path_factory.mktemp("lim") / "three_seconds.mp4", frames, rate=10)


def test_defaults_are_safe_and_none_switches_a_limit_off():
    o = AnalyzeOptions()
    assert o.max_item_seconds == 300 and o.max_video_seconds == 3 * 3600
    assert o.max_faces_per_frame == 100 and o.max_item_memory_mb == 2048
    AnalyzeOptions(max_item_seconds=None, max_video_seconds=None, max_faces_per_frame=None, max_item_memory_mb=None)
    with pytest.raises(ConfigError, match="max_faces_per_frame"):
        AnalyzeOptions(max_faces_per_frame=0)
    with pytest.raises(ConfigError, match="max_item_seconds"):
        AnalyzeOptions(max_item_seconds=-1.0)


def test_load_model_takes_the_limits(tiny_checkpoint):
    d = load_model(weights=tiny_checkpoint, device="cpu", max_item_seconds=7.0, max_faces_per_frame=3)
    assert d.options.max_item_seconds == 7.0 and d.options.max_faces_per_frame == 3


def test_video_duration_limit(detector, video_3s, monkeypatch):
    _limit(monkeypatch, detector, max_video_seconds=1.0)
    with pytest.raises(MediaTooLargeError, match=rf"{video_3s.name}: video too long.*max_video_seconds=1\b"):
        detector.analyze(video_3s)
    _limit(monkeypatch, detector, max_video_seconds=3.5)
    assert detector.analyze(video_3s, num_frames=2)["frames_analyzed"] == 2


def test_memory_estimate_limit_for_images_and_videos(detector, video_3s, tmp_path, monkeypatch):
    big = tmp_path / "plain_2000px.png"
    Image.new("RGB", (2000, 2000), (90, 90, 90)).save(big)  # a few KB on disk, 12 MB decoded
    _limit(monkeypatch, detector, max_item_memory_mb=10)
    with pytest.raises(MediaTooLargeError, match=r"plain_2000px\.png: decoding 2000x2000.*max_item_memory_mb=10"):
        detector.analyze(big)
    _limit(monkeypatch, detector, max_item_memory_mb=0.01)  # 32x24 frames: about 2.3 KB each
    with pytest.raises(MediaTooLargeError, match=rf"{video_3s.name}: decoding 32x24 \(8 frame\(s\).*=0.01"):
        detector.analyze(video_3s)


def test_faces_per_frame_limit(detector, face_rgb, tmp_path, monkeypatch):
    crowd = tmp_path / "three_faces.jpg"
    Image.fromarray(np.concatenate([face_rgb] * 3, axis=1)).save(crowd, quality=92)
    found = len(detector.analyze(crowd)["faces"])
    assert found >= 2, "the tiled photo should show several faces"
    _limit(monkeypatch, detector, max_faces_per_frame=found - 1)
    with pytest.raises(ResourceLimitError, match=rf"three_faces\.jpg: {found} faces found in the image.*"
                       rf"max_faces_per_frame={found - 1}"):  # fmt: skip
        detector.analyze(crowd)
    _limit(monkeypatch, detector, max_faces_per_frame=found)
    assert len(detector.analyze(crowd)["faces"]) == found


class SlowDecoder(Deadline):
    """Each demuxed packet 'takes' 20 ms, like a decoder crawling through a hostile file; counts the packets."""

    packets = 0

    def __call__(self) -> None:
        import time

        SlowDecoder.packets += 1
        time.sleep(0.02)
        super().__call__()


def test_time_limit_stops_a_slow_video_and_the_batch_goes_on(detector, tmp_path, monkeypatch):
    long_video = write_test_video(tmp_path / "slow.mp4", [np.full((24, 32, 3), i % 256, np.uint8) for i in range(200)],
                                  rate=25)  # fmt: skip
    monkeypatch.setattr(pipeline, "Deadline", SlowDecoder)
    _limit(monkeypatch, detector, max_item_seconds=0.5)
    SlowDecoder.packets = 0
    results = list(detector.analyze_many_results([long_video, SAMPLE_FACE], num_frames=200))
    assert isinstance(results[0], AnalysisError) and results[0].error_type == "ResourceLimitError"
    assert "slow.mp4" in results[0].error and "max_item_seconds=0.5" in results[0].error
    assert SlowDecoder.packets < 200  # stopped part-way, not after reading the whole file
    assert isinstance(results[1], Analysis)  # the next item is analysed


def test_time_limit_none_lets_an_item_run(detector, video_3s, monkeypatch):
    _limit(monkeypatch, detector, max_item_seconds=None)
    assert detector.analyze(video_3s, num_frames=3)["frames_analyzed"] == 3
