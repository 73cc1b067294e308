"""Tests of cevit.media.probe (content sniffing, errors) and cevit.media.iter_media_files."""

from __future__ import annotations

import os
import pathlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from cevit.errors import MediaError, UnsupportedMediaError
from cevit.media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    iter_media_files,
    sniff_media_type,
)
from cevit.media.probe import sniff_image_format

VIDEO_CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(path: Path, *, codec: str = VIDEO_CODEC, frames: int = 5, fmt: str | None = None) -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            image = np.full((32, 32, 3), (i * 20) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio(path: Path, codec: str, *, rate: int = 16000, fmt: str | None = None) -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        samples = stream.codec_context.frame_size or 1024
        sample_format = stream.codec_context.format.name
        for i in range(8):
            frame = av.AudioFrame(format=sample_format, layout="mono", samples=samples)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate, frame.pts = rate, i * samples
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: Path, fmt: str) -> Path:
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[:, :6] = (255, 0, 0)
    Image.fromarray(rgb).save(path, format=fmt)
    return path


# -- images -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_images_are_recognised_by_content(tmp_path: Path, fmt: str) -> None:
    path = write_image(tmp_path / "picture.bin", fmt)  # no telling extension
    assert sniff_image_format(path.read_bytes()[:32]) == fmt
    assert sniff_media_type(path) == "image"


def test_image_with_video_extension_is_an_image(tmp_path: Path) -> None:
    path = write_image(tmp_path / "clip.mp4", "PNG")
    assert sniff_media_type(path) == "image"


def test_text_starting_like_a_bitmap_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.bmp"
    path.write_text("BM is how this note starts, but it is plain text.\n")
    with pytest.raises(UnsupportedMediaError, match="not a supported image or video"):
        sniff_media_type(path)


# -- videos -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("v.mp4", VIDEO_CODEC),
        ("v.mov", VIDEO_CODEC),
        ("v.avi", "mpeg4"),
        ("v.mkv", VIDEO_CODEC),
        ("v.webm", "libvpx-vp9"),
    ],
)
def test_videos_are_recognised(tmp_path: Path, name: str, codec: str) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV build lacks the {codec} encoder")
    path = write_video(tmp_path / name, codec=codec)
    assert sniff_media_type(path) == "video"


def test_video_with_image_extension_is_a_video(tmp_path: Path) -> None:
    path = write_video(tmp_path / "photo.jpg", fmt="mp4")
    assert sniff_media_type(path) == "video"


def test_container_outside_the_whitelist_is_unsupported(tmp_path: Path) -> None:
    path = write_video(tmp_path / "broadcast.ts", codec="mpeg4")
    with pytest.raises(UnsupportedMediaError, match="not a supported image or video"):
        sniff_media_type(path)


def test_truncated_mp4_is_a_media_error_naming_the_file(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.mp4", frames=20)
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: lost
    with pytest.raises(MediaError, match="truncated or corrupt") as info:
        sniff_media_type(cut)
    assert not isinstance(info.value, UnsupportedMediaError)
    assert "cut.mp4" in str(info.value)


# -- audio only ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec", "rate", "fmt"),
    [
        ("sound.wav", "pcm_s16le", 16000, None),
        ("sound.mp3", "libmp3lame", 16000, None),
        ("sound.m4a", "aac", 16000, "ipod"),
        ("sound.ogg", "libopus", 48000, None),
        ("sound.mp4", "aac", 16000, None),  # an MP4 container with no video
    ],
)
def test_audio_only_files_are_unsupported(tmp_path: Path, name: str, codec: str, rate: int, fmt: str | None) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV build lacks the {codec} encoder")
    path = write_audio(tmp_path / name, codec, rate=rate, fmt=fmt)
    with pytest.raises(UnsupportedMediaError, match="contains audio but no video stream") as info:
        sniff_media_type(path)
    assert name in str(info.value)


# -- bad paths ----------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="does not exist") as info:
        sniff_media_type(tmp_path / "nowhere.jpg")
    assert "nowhere.jpg" in str(info.value)


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "album.jpg"
    folder.mkdir()
    with pytest.raises(MediaError, match="directory") as info:
        sniff_media_type(folder)
    assert "album.jpg" in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match="empty file") as info:
        sniff_media_type(path)
    assert "empty.mp4" in str(info.value)


def test_text_file_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "readme.mp4"
    path.write_text("just some words, not a video\n" * 10)
    with pytest.raises(UnsupportedMediaError, match="not a supported image or video") as info:
        sniff_media_type(path)
    assert "readme.mp4" in str(info.value)


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "secret.png", "PNG")
    real_open = pathlib.Path.open

    def deny(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if self.name == "secret.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pathlib.Path, "open", deny)
    with pytest.raises(MediaError, match="permission denied") as info:
        sniff_media_type(path)
    assert "secret.png" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="file permissions do not bind root")
def test_unreadable_file_real_permissions(tmp_path: Path) -> None:
    path = write_image(tmp_path / "locked.png", "PNG")
    path.chmod(0)
    try:
        with pytest.raises(MediaError, match="permission denied"):
            sniff_media_type(path)
    finally:
        path.chmod(0o644)


# -- iter_media_files ---------------------------------------------------------------------------------


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_extension_sets_are_lower_case_suffixes() -> None:
    for ext in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
        assert ext.startswith(".") and ext == ext.lower()
    assert {".jpg", ".png", ".webp", ".bmp", ".tif", ".gif"} <= IMAGE_EXTENSIONS
    assert {".mp4", ".avi", ".mkv", ".mov", ".webm"} <= VIDEO_EXTENSIONS
    assert not IMAGE_EXTENSIONS & VIDEO_EXTENSIONS


def test_folder_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    b = _touch(root / "b.JPG")
    a = _touch(root / "a.mp4")
    nested = _touch(root / "sub" / "c.png")
    _touch(root / "notes.txt")
    _touch(root / ".hidden.jpg")
    _touch(root / ".cache" / "d.jpg")
    assert iter_media_files([str(root)]) == [a, b, nested]


def test_files_patterns_and_duplicates(tmp_path: Path) -> None:
    one = _touch(tmp_path / "one.jpg")
    two = _touch(tmp_path / "two.webm")
    odd = _touch(tmp_path / "frame.raw")  # named explicitly: kept whatever its extension
    _touch(tmp_path / "skip.txt")
    found = iter_media_files([str(odd), str(tmp_path / "*"), str(one)])
    assert found == [odd, one, two]


def test_recursive_glob(tmp_path: Path) -> None:
    deep = _touch(tmp_path / "x" / "y" / "z.mov")
    assert iter_media_files([str(tmp_path / "**" / "*.mov")]) == [deep]


def test_missing_path_and_empty_folder_raise(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="does not exist") as info:
        iter_media_files([str(tmp_path / "gone")])
    assert "gone" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    _touch(empty / "readme.txt")
    with pytest.raises(MediaError, match="no image or video files") as info:
        iter_media_files([str(empty)])
    assert "empty" in str(info.value)
    with pytest.raises(MediaError, match="matches no image or video files"):
        iter_media_files([str(tmp_path / "*.mkv")])


# -- symbolic links that lead nowhere (issue 15) -----------------------------------------------------


def test_symlink_loop_in_a_folder_is_listed_and_fails_alone(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    good = _touch(root / "a.jpg")
    loop = root / "loop.jpg"
    loop.symlink_to(loop.name)  # points at itself
    ring_a, ring_b = root / "ring_a.mp4", root / "ring_b.mp4"
    ring_a.symlink_to(ring_b.name)
    ring_b.symlink_to(ring_a.name)
    broken = root / "broken.png"
    broken.symlink_to("nowhere.png")
    (root / "dirloop").symlink_to(".")  # a link to a folder is not followed
    found = iter_media_files([str(root)])
    assert found == [good, broken, loop, ring_a, ring_b]
    globbed = iter_media_files([str(root / "*")])  # the pattern also matches the folder link: no duplicates
    assert sorted(p.name for p in globbed) == sorted(p.name for p in found)
    for path in (loop, ring_a):
        with pytest.raises(MediaError, match="symlink loop") as info:
            sniff_media_type(path)
        assert str(path) in str(info.value)
    with pytest.raises(MediaError, match="broken symbolic link"):
        sniff_media_type(broken)


def test_symlink_loop_named_directly_says_so(tmp_path: Path) -> None:
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop.name)
    with pytest.raises(MediaError, match="symlink loop") as info:
        iter_media_files([str(loop)])
    assert str(loop) in str(info.value) and "does not exist" not in str(info.value)
    broken = tmp_path / "broken.jpg"
    broken.symlink_to("gone.jpg")
    with pytest.raises(MediaError, match="broken symbolic link"):
        iter_media_files([str(broken)])
