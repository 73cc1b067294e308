"""Tests of cevit.media.video: probing, evenly spaced sampling, seeking, VFR, rotation, damaged files."""

from __future__ import annotations

import io
import logging
import types
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cevit.errors import MediaError, MediaTooLargeError, UnsupportedMediaError
from cevit.media import DEFAULT_MAX_FRAME_PIXELS, DecodeStats, probe_video, rotate_upright, sample_frames
from cevit.media import video as video_module
from conftest import require_shared

H264 = "libx264" in av.codecs_available
CODEC = "libx264" if H264 else "mpeg4"
FAST = {"preset": "ultrafast"} if H264 else {}


def card(i: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame ``i``: red top half, blue bottom half, and a grey bar whose level encodes ``i``."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[: height // 2] = (220, 30, 30)
    rgb[height // 2 :] = (30, 30, 220)
    rgb[:, : width // 4] = (i * 7) % 256
    return rgb


def write_video(
    path: Path,
    *,
    frames: int = 60,
    rate: int = 30,
    codec: str = CODEC,
    gop: int | None = None,
    times_ms: Sequence[int] | None = None,
    rotation: int | None = None,
    options: dict[str, str] | None = None,
    fmt: str | None = None,
    size: tuple[int, int] = (48, 64),
    container_options: dict[str, str] | None = None,
    target: object = None,
) -> Path:
    """Write a small video. ``times_ms`` gives per-frame timestamps (variable frame rate)."""
    height, width = size
    count = len(times_ms) if times_ms is not None else frames
    with av.open(
        target if target is not None else str(path), "w", format=fmt, options=container_options or {}
    ) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        opts = dict(FAST if codec == "libx264" else {})
        opts.update(options or {})
        if codec == "libx264" and gop is not None:
            opts["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        if opts:
            stream.codec_context.options = opts
        if times_ms is not None:
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(card(i, height, width), format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            else:
                frame.pts, frame.time_base = i, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def reference_frames(path: Path) -> list[tuple[float, np.ndarray]]:
    """Every frame of ``path`` decoded plainly with PyAV: (pts seconds, RGB array)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]


def expected_indices(count: int, num: int) -> list[int]:
    return np.linspace(0, count - 1, num).round().astype(int).tolist()


# -- probing ------------------------------------------------------------------------------------------


def test_probe_video_mp4(tmp_path: Path) -> None:
    info = probe_video(write_video(tmp_path / "v.mp4", frames=60, rate=30))
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.frame_count == 60
    assert info.rotation == 0
    assert info.codec == ("h264" if H264 else "mpeg4")


def test_probe_estimates_frame_count_when_container_lacks_it(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mkv", frames=90, rate=30)
    with av.open(str(path)) as container:
        assert not container.streams.video[0].frames  # Matroska stores no frame count
    info = probe_video(path)
    assert info.frame_count == 90
    assert info.duration == pytest.approx(3.0, abs=0.05)


class _NonSeekable(io.RawIOBase):
    """A write-only sink: the Matroska muxer cannot go back to write duration and cues."""

    def __init__(self, sink: io.BufferedWriter) -> None:
        self.sink = sink

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:  # type: ignore[no-untyped-def,override]
        return self.sink.write(data)


def test_missing_duration_falls_back_to_packet_scan(tmp_path: Path) -> None:
    path = tmp_path / "live.mkv"
    with path.open("wb") as sink:
        write_video(path, frames=45, rate=30, fmt="matroska", target=_NonSeekable(sink))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.duration is None and not container.duration and not stream.metadata
    info = probe_video(path)
    assert info.duration == pytest.approx(1.5, abs=0.05)
    assert info.frame_count == 45
    stats = DecodeStats()
    frames = list(sample_frames(path, num_frames=10, stats=stats))
    assert stats.scanned_packets == 45
    assert [f.index for f in frames] == expected_indices(45, 10)


# -- sampling -----------------------------------------------------------------------------------------


CONTAINERS = [
    ("v.mp4", CODEC),
    ("v.mov", CODEC),
    ("v.avi", "mpeg4"),
    ("v.mkv", CODEC),
    ("v.webm", "libvpx-vp9"),
    ("v8.webm", "libvpx"),
]


@pytest.mark.parametrize(("name", "codec"), CONTAINERS)
def test_sampling_is_even_and_matches_the_decoded_frames(tmp_path: Path, name: str, codec: str) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV build lacks the {codec} encoder")
    path = write_video(tmp_path / name, frames=60, codec=codec, gop=12)
    reference = reference_frames(path)
    assert len(reference) == 60
    stats = DecodeStats()
    frames = list(sample_frames(path, num_frames=10, stats=stats))
    assert [f.index for f in frames] == expected_indices(60, 10)
    for f in frames:
        ref_time, ref_image = reference[f.index]
        assert f.timestamp == pytest.approx(ref_time, abs=1e-6)
        np.testing.assert_array_equal(f.image, ref_image)
        assert f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3)
    assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:]))
    assert stats.converted_frames == 10
    assert stats.decoded_frames <= 60 + 12  # at most one extra GOP re-decoded


def test_short_video_yields_every_frame(tmp_path: Path) -> None:
    for name in ("short.mp4", "short.mkv"):  # frame count stored / counted by a scan
        path = write_video(tmp_path / name, frames=12)
        stats = DecodeStats()
        frames = list(sample_frames(path, num_frames=30, stats=stats))
        assert [f.index for f in frames] == list(range(12))
        assert stats.strategy == "all"
        times = [t for t, _ in reference_frames(path)]
        assert [f.timestamp for f in frames] == pytest.approx(times)


def test_single_frame_is_taken_from_the_middle(tmp_path: Path) -> None:
    frames = list(sample_frames(write_video(tmp_path / "v.mp4", frames=61), num_frames=1))
    assert len(frames) == 1 and frames[0].index == 30


def test_frames_are_yielded_lazily(tmp_path: Path) -> None:
    stats = DecodeStats()
    iterator = sample_frames(write_video(tmp_path / "v.mp4", frames=60), num_frames=10, stats=stats)
    assert stats.decoded_frames == 0  # nothing happens before iteration
    first = next(iterator)
    assert first.index == 0 and stats.converted_frames == 1 and stats.decoded_frames < 60
    iterator.close()


def test_dense_targets_decode_sequentially(tmp_path: Path) -> None:
    # One keyframe for the whole clip: seeking could not skip anything.
    path = write_video(tmp_path / "v.mp4", frames=150, gop=300)
    stats = DecodeStats()
    frames = list(sample_frames(path, num_frames=30, stats=stats))
    assert [f.index for f in frames] == expected_indices(150, 30)
    assert stats.seeks == 0 and stats.strategy == "sequential"
    assert stats.decoded_frames == 150 and stats.converted_frames == 30


@pytest.mark.skipif(not H264, reason="PyAV build lacks libx264 (B-frames needed)")
def test_unneeded_b_frames_are_skipped_and_indices_stay_exact(tmp_path: Path) -> None:
    path = write_video(tmp_path / "b.mp4", frames=150, gop=300, options={"preset": "faster"})
    reference = reference_frames(path)
    stats = DecodeStats()
    frames = list(sample_frames(path, num_frames=10, stats=stats))
    assert [f.index for f in frames] == expected_indices(150, 10)
    for f in frames:
        np.testing.assert_array_equal(f.image, reference[f.index][1])
        assert f.timestamp == pytest.approx(reference[f.index][0], abs=1e-6)
    assert stats.seeks == 0
    assert stats.decoded_frames < 130  # non-reference B-frames far from the targets were skipped


@pytest.mark.parametrize("name", ["long.mp4", "long.mkv"])
def test_two_hour_video_decodes_only_what_is_needed(tmp_path: Path, name: str) -> None:
    # 2 hours at 1 fps (7,200 tiny frames), a keyframe every 60 s.
    path = write_video(tmp_path / name, frames=7200, rate=1, gop=60, size=(32, 32))
    info = probe_video(path)
    assert info.duration == pytest.approx(7200, abs=2)
    stats = DecodeStats()
    frames = list(sample_frames(path, num_frames=30, stats=stats))
    assert [f.index for f in frames] == expected_indices(7200, 30)
    for f in frames:
        assert f.timestamp == pytest.approx(f.index, abs=1e-6)  # 1 fps: time == index
        assert int(f.image[16, 2, 0]) == pytest.approx((f.index * 7) % 256, abs=6)
    assert stats.seeks >= 25
    assert stats.decoded_frames <= 30 * 60 + 60  # about one GOP per target, never the whole video
    assert stats.converted_frames == 30


def test_variable_frame_rate_is_sampled_by_time(tmp_path: Path) -> None:
    # 20 frames 10 ms apart, then 20 frames 200 ms apart: by time, most samples are in the sparse part.
    times_ms = [i * 10 for i in range(20)] + [190 + (i + 1) * 200 for i in range(20)]
    path = write_video(tmp_path / "vfr.mp4", times_ms=times_ms, gop=5)
    stats = DecodeStats()
    frames = list(sample_frames(path, num_frames=8, stats=stats))
    assert len(frames) == 8
    assert stats.seeks > 0
    for f in frames:  # indices are exact (MP4 indexes every frame), timestamps are the pts
        assert f.timestamp == pytest.approx(times_ms[f.index] / 1000, abs=1e-6)
    assert frames[0].index == 0 and frames[-1].index == 39
    assert sum(f.index < 20 for f in frames) <= 2  # index-based sampling would take 4
    gaps = np.diff([f.timestamp for f in frames])
    assert gaps.min() > 0.3 and gaps.max() < 0.9  # about 4.19 s / 7 = 0.6 s apart


def test_variable_frame_rate_in_matroska_keeps_true_timestamps(tmp_path: Path) -> None:
    times_ms = [i * 10 for i in range(20)] + [190 + (i + 1) * 200 for i in range(20)]
    path = write_video(tmp_path / "vfr.mkv", times_ms=times_ms, gop=5)
    frames = list(sample_frames(path, num_frames=8))
    written = {t / 1000 for t in times_ms}
    assert all(round(f.timestamp, 3) in written for f in frames)
    assert all(b.index > a.index and b.timestamp > a.timestamp for a, b in zip(frames, frames[1:]))
    assert frames[-1].timestamp == pytest.approx(4.19)


# -- rotation -----------------------------------------------------------------------------------------


def test_rotate_upright_helper() -> None:
    image = np.arange(6).reshape(2, 3)
    assert rotate_upright(image, 0) is image
    np.testing.assert_array_equal(rotate_upright(image, 90), [[3, 0], [4, 1], [5, 2]])  # clockwise
    np.testing.assert_array_equal(rotate_upright(image, 180), image[::-1, ::-1])
    np.testing.assert_array_equal(rotate_upright(image, 270), [[2, 5], [1, 4], [0, 3]])
    np.testing.assert_array_equal(rotate_upright(image, -90), rotate_upright(image, 270))


@pytest.mark.parametrize(("ccw", "clockwise"), [(90, 270), (-90, 90), (180, 180)])
def test_display_matrix_rotation_is_applied(tmp_path: Path, ccw: int, clockwise: int) -> None:
    path = write_video(tmp_path / "phone.mp4", frames=10, rotation=ccw)
    info = probe_video(path)
    assert info.rotation == clockwise
    assert (info.width, info.height) == ((48, 64) if clockwise in (90, 270) else (64, 48))
    reference = reference_frames(path)
    frames = list(sample_frames(path, num_frames=3))
    for f in frames:
        # The display matrix turns the stored frame counter-clockwise by `ccw` degrees.
        np.testing.assert_array_equal(f.image, np.rot90(reference[f.index][1], k=ccw // 90))
        assert f.image.flags.c_contiguous
    if clockwise == 90:  # the stored top (red) half ends up on the right
        assert frames[0].image[:, -5:, 0].mean() > 150 and frames[0].image[:, 5:10, 2].mean() > 150


# -- damaged and wrong inputs -------------------------------------------------------------------------


def test_truncated_mp4_never_crashes(tmp_path: Path) -> None:
    for name, options in (("end.mp4", None), ("fast.mp4", {"movflags": "faststart"})):
        full = write_video(tmp_path / name, frames=90, gop=10, container_options=options)
        cut = tmp_path / f"cut_{name}"
        data = full.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        try:
            frames = list(sample_frames(cut, num_frames=10))
        except MediaError as exc:
            assert cut.name in str(exc)
            assert name == "end.mp4"  # the index (moov) is at the end and was cut away
        else:
            assert name == "fast.mp4"  # index first: the readable half still decodes
            assert 1 <= len(frames) <= 10
            assert all(f.index < 90 for f in frames)


def test_truncated_mkv_yields_the_readable_part(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.mkv", frames=90, gop=10)
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    frames = list(sample_frames(cut, num_frames=10))
    assert 1 <= len(frames) < 10
    assert frames[0].index == 0


def test_garbage_packets_have_no_decodable_frames(tmp_path: Path) -> None:
    path = write_video(tmp_path / "garbage.mp4", frames=30)
    data = bytearray(path.read_bytes())
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    rng = np.random.default_rng(7)
    data[at + 4 : at - 4 + size] = rng.integers(0, 256, size - 8, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(MediaError, match="no decodable frames") as info:
        list(sample_frames(path, num_frames=5))
    assert "garbage.mp4" in str(info.value)
    with pytest.raises(MediaError, match="no decodable frames"):
        probe_video(path)


def test_time_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = write_video(tmp_path / "v.mp4", frames=60)
    with pytest.raises(MediaError, match="max_decode_seconds") as info:
        list(sample_frames(path, num_frames=10, max_decode_seconds=1e-9))
    assert "v.mp4" in str(info.value)
    # A clock that advances 1 s per reading: the budget runs out part way, frames so far are kept.
    ticks = iter(range(10**6))
    monkeypatch.setattr(video_module, "time", types.SimpleNamespace(monotonic=lambda: next(ticks)))
    with caplog.at_level(logging.WARNING, logger="cevit.media.video"):
        frames = list(sample_frames(path, num_frames=10, max_decode_seconds=20))
    assert 1 <= len(frames) < 10
    assert "max_decode_seconds" in caplog.text


def test_audio_only_and_images_are_not_videos(tmp_path: Path) -> None:
    wav = tmp_path / "sound.wav"
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame(format="s16", layout="mono", samples=800)
        frame.planes[0].update(bytes(frame.planes[0].buffer_size))
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(UnsupportedMediaError, match="contains audio but no video stream"):
        list(sample_frames(wav))
    with pytest.raises(UnsupportedMediaError, match="contains audio but no video stream"):
        probe_video(wav)
    png = tmp_path / "still.mp4"
    from PIL import Image

    Image.fromarray(card(0)).save(png, format="PNG")
    with pytest.raises(UnsupportedMediaError, match="is an image"):
        list(sample_frames(png))


def test_bad_arguments_and_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        sample_frames(tmp_path / "x.mp4", num_frames=0)
    with pytest.raises(ValueError):
        sample_frames(tmp_path / "x.mp4", max_decode_seconds=0)
    with pytest.raises(MediaError, match="does not exist"):
        list(sample_frames(tmp_path / "x.mp4"))
    with pytest.raises(MediaError, match="does not exist"):
        probe_video(tmp_path / "x.mp4")


# -- speed and real data (slow) -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not H264, reason="PyAV build lacks libx264")
def test_1080p_sampling_decodes_only_what_is_needed(tmp_path: Path) -> None:
    """30 frames from a 10 s 1080p H.264 clip: only the sampled frames are converted to RGB (speed: see the
    numbers in cevit.media.video's docstring and benchmarks/analyze.py; no wall-clock assertion here)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (135, 240, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    path = tmp_path / "hd.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.codec_context.options = {"preset": "medium"}
        for i in range(300):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    stats = DecodeStats()
    frames = list(sample_frames(path, num_frames=30, stats=stats))
    assert len(frames) == 30 and frames[0].image.shape == (1080, 1920, 3)
    assert stats.converted_frames == 30 and stats.decoded_frames < 300  # not the whole clip (measured: 195)


@pytest.mark.slow
def test_shared_public_videos(shared_dir: Path) -> None:
    """Every video of the shared evaluation set probes consistently with its manifest and samples."""
    folder = shared_dir / "data" / "eval_public"
    manifest = folder / "MANIFEST.tsv"
    require_shared(manifest.relative_to(shared_dir))  # skips without shared/; fails under CI=true if it is lost
    lines = manifest.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]
    videos = [row for row in rows if row.get("kind") == "video"]
    assert videos
    for row in videos:
        path = folder / row["file"]
        info = probe_video(path)
        if row.get("width") and row.get("height"):
            assert {info.width, info.height} == {int(row["width"]), int(row["height"])}, path
        frames = list(sample_frames(path, num_frames=8))
        assert len(frames) == 8, path
        assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:])), path
        if row.get("n_frames"):
            assert frames[-1].index == pytest.approx(int(row["n_frames"]) - 1, abs=2), path


# -- limits and damage reporting (issue 15) -----------------------------------------------------------


def test_frame_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = write_video(tmp_path / "wide.mp4", frames=10, size=(48, 64))
    assert DEFAULT_MAX_FRAME_PIXELS == 40_000_000
    stats = DecodeStats()
    with pytest.raises(MediaTooLargeError, match="max_frame_pixels") as info:
        list(sample_frames(path, num_frames=5, stats=stats, max_frame_pixels=64 * 48 - 1))
    message = str(info.value)
    assert "wide.mp4" in message and "64x48" in message and str(64 * 48 - 1) in message
    assert stats.decoded_frames == 0 and stats.packets == 0  # refused from the stream header
    with pytest.raises(MediaTooLargeError, match="max_frame_pixels"):
        probe_video(path, max_frame_pixels=1000)
    # at the limit is allowed; None switches the limit off
    assert len(list(sample_frames(path, num_frames=5, max_frame_pixels=64 * 48))) == 5
    assert probe_video(path, max_frame_pixels=None).width == 64
    with pytest.raises(ValueError, match="max_frame_pixels"):
        sample_frames(path, max_frame_pixels=0)


def test_frame_pixel_limit_also_guards_decoded_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream whose header understates its size (or that changes size) is still refused before RGB conversion."""
    path = write_video(tmp_path / "v.mp4", frames=10)
    real_open = video_module._open

    def header_says_nothing(p: Path, max_frame_pixels: int | None = None):
        return real_open(p, None)  # skip the header check, as for a stream without a declared size

    monkeypatch.setattr(video_module, "_open", header_says_nothing)
    stats = DecodeStats()
    with pytest.raises(MediaTooLargeError, match="max_frame_pixels"):
        list(sample_frames(path, num_frames=5, stats=stats, max_frame_pixels=100))
    assert stats.converted_frames == 0


def _corrupt_middle(path: Path, seed: int = 0) -> Path:
    """Overwrite the middle tenth of the video data with random bytes (the container stays readable)."""
    data = bytearray(path.read_bytes())
    mdat = data.find(b"mdat")
    n = len(data) - mdat
    a, b = mdat + int(n * 0.45), mdat + int(n * 0.55)
    data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    damaged = path.with_name("damaged_" + path.name)
    damaged.write_bytes(bytes(data))
    return damaged


def _noisy_video(path: Path, frames: int) -> Path:
    """Frames with noise, so each one takes several packets' worth of data (corruption hits several frames)."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        if FAST:
            stream.codec_context.options = dict(FAST)
        for i in range(frames):
            image = np.clip(card(i, 64, 96).astype(int) + rng.integers(-40, 40, (64, 96, 3)), 0, 255)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("frames", [30, 90])  # 30: every frame wanted ("all"); 90: targets spread out
def test_frames_that_fail_to_decode_are_counted(tmp_path: Path, frames: int) -> None:
    clean = _noisy_video(tmp_path / "clean.mp4", frames)
    stats = DecodeStats()
    assert len(list(sample_frames(clean, num_frames=30, stats=stats))) == 30
    assert stats.frames_failed == 0
    damaged = _corrupt_middle(clean)
    stats = DecodeStats()
    got = list(sample_frames(damaged, num_frames=30, stats=stats))
    assert stats.decode_errors > 0
    assert 0 < len(got) < 30
    assert stats.frames_failed == 30 - len(got)  # every sampled frame is either yielded or counted as failed


def test_truncated_video_counts_the_frames_it_lost(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.mkv", frames=90, gop=10)
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    stats = DecodeStats()
    frames = list(sample_frames(cut, num_frames=10, stats=stats))
    assert 1 <= len(frames) < 10
    assert stats.frames_failed == 10 - len(frames)
