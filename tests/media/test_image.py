"""Tests of cevit.media.image: formats, orientation, colour modes, size limits and damaged files."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageFile

from cevit.errors import MediaError, MediaTooLargeError, UnsupportedMediaError
from cevit.media import load_image, probe_image
from conftest import require_shared


def pattern(height: int = 24, width: int = 32) -> np.ndarray:
    """An RGB test card with flat blocks (survives lossy coding) and a distinct top-left corner."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[: height // 2, : width // 2] = (250, 20, 20)
    rgb[: height // 2, width // 2 :] = (20, 250, 20)
    rgb[height // 2 :, : width // 2] = (20, 20, 250)
    rgb[height // 2 :, width // 2 :] = (240, 240, 240)
    return rgb


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares width x height (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def check_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.dtype == np.uint8
    assert array.shape == (height, width, 3)
    assert array.flags.c_contiguous


# -- formats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True}), ("GIF", {})],
)
def test_lossless_formats_round_trip(tmp_path: Path, fmt: str, options: dict) -> None:
    rgb = pattern()
    path = tmp_path / f"card.{fmt.lower()}"
    Image.fromarray(rgb).save(path, format=fmt, **options)
    out = load_image(path)
    check_rgb(out, 24, 32)
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.writeable


def test_jpeg_round_trip_is_close(tmp_path: Path) -> None:
    rgb = pattern(64, 64)
    path = tmp_path / "card.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    out = load_image(path)
    check_rgb(out, 64, 64)
    # Compare block interiors (JPEG rings at the edges between blocks).
    assert np.abs(out[8:24, 8:24].astype(int) - rgb[8:24, 8:24]).max() <= 8
    assert np.abs(out[40:56, 40:56].astype(int) - rgb[40:56, 40:56]).max() <= 8


def test_gif_first_frame_of_animation(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 6), color) for color in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = load_image(path)
    check_rgb(out, 6, 10)
    assert (out == (255, 0, 0)).all()


def test_content_decides_not_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "actually_png.jpg"
    Image.fromarray(pattern()).save(path, format="PNG")
    np.testing.assert_array_equal(load_image(path), pattern())


# -- EXIF orientation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # stored turned left: rotate 90 degrees clockwise
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, expected) -> None:
    rgb = pattern(48, 64)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(rgb).save(path, quality=95, exif=exif)
    out = load_image(path)
    want = expected(rgb)
    assert out.shape == want.shape
    if orientation in (6, 8):
        assert out.shape == (64, 48, 3)  # transposed
    # Each quadrant's mean colour lands where the rotation puts it.
    h, w = want.shape[:2]
    for rows in (slice(2, h // 2 - 2), slice(h // 2 + 2, h - 2)):
        for cols in (slice(2, w // 2 - 2), slice(w // 2 + 2, w - 2)):
            diff = out[rows, cols].astype(float).mean((0, 1)) - want[rows, cols].mean((0, 1))
            assert np.abs(diff).max() < 10
    info = probe_image(path)
    assert (info.height, info.width, info.orientation) == (*out.shape[:2], orientation)


# -- colour modes -------------------------------------------------------------------------------------


def test_grayscale_L(tmp_path: Path) -> None:
    gray = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    check_rgb(out, 4, 6)
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], gray)


def test_bilevel_1(tmp_path: Path) -> None:
    bits = Image.new("1", (5, 3), 0)
    bits.putpixel((2, 1), 1)
    bits.save(tmp_path / "b.png")
    out = load_image(tmp_path / "b.png")
    assert out[1, 2].tolist() == [255, 255, 255]
    assert out.sum() == 3 * 255


def test_palette_P_and_palette_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (4, 2))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 1)
    im.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    assert out[0, 0].tolist() == [200, 100, 50]
    assert out[1, 3].tolist() == [10, 20, 30]
    # Palette index 0 transparent: composited on black.
    im.save(tmp_path / "pt.png", transparency=0)
    out = load_image(tmp_path / "pt.png")
    assert out[0, 0].tolist() == [200, 100, 50]
    assert out[1, 3].tolist() == [0, 0, 0]
    im.save(tmp_path / "pt.gif", transparency=0)
    assert load_image(tmp_path / "pt.gif")[1, 3].tolist() == [0, 0, 0]


def test_rgba_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (200, 100, 50, 255)  # opaque: unchanged
    rgba[0, 1] = (200, 100, 50, 128)  # half transparent: about half
    rgba[0, 2] = (200, 100, 50, 0)  # transparent: black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out[0, 0].tolist() == [200, 100, 50]
    assert out[0, 1].tolist() == [100, 50, 25]
    assert out[0, 2].tolist() == [0, 0, 0]
    la = Image.fromarray(np.array([[[90, 255], [90, 0]]], np.uint8), "LA")
    la.save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png")[0].tolist() == [[90, 90, 90], [0, 0, 0]]


def test_cmyk(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    cmyk.putpixel((1, 1), (0, 255, 255, 0))  # magenta + yellow = red
    cmyk.save(tmp_path / "c.jpg", quality=100)
    out = load_image(tmp_path / "c.jpg")
    check_rgb(out, 2, 2)
    assert out[0, 0].min() > 200  # no ink: white
    cmyk.save(tmp_path / "c.tif")
    out = load_image(tmp_path / "c.tif")
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[1, 1].tolist() == [255, 0, 0]


def test_16_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode.startswith("I")
    out = load_image(tmp_path / "g16.png")
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()
    Image.fromarray(values).save(tmp_path / "g16.tif")
    assert load_image(tmp_path / "g16.tif")[0, :, 1].tolist() == [0, 1, 128, 255]


def test_32_bit_integer_and_float(tmp_path: Path) -> None:
    ints = np.array([[0, 65535]], np.int32)  # within 16-bit range: 16-bit scaling
    Image.fromarray(ints, "I").save(tmp_path / "i.tif")
    assert load_image(tmp_path / "i.tif")[0, :, 0].tolist() == [0, 255]
    wide = np.array([[-1000, 0, 1000]], np.int32)  # outside: min-max
    Image.fromarray(wide, "I").save(tmp_path / "iw.tif")
    assert load_image(tmp_path / "iw.tif")[0, :, 0].tolist() == [0, 128, 255]
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)  # [0, 1] floats: times 255
    Image.fromarray(unit, "F").save(tmp_path / "f.tif")
    assert load_image(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 128, 255]
    big = np.array([[10.0, 20.0, 30.0]], np.float32)  # other floats: min-max
    Image.fromarray(big, "F").save(tmp_path / "fb.tif")
    assert load_image(tmp_path / "fb.tif")[0, :, 0].tolist() == [0, 128, 255]


# -- size limits --------------------------------------------------------------------------------------


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    path = png_declaring(tmp_path / "bomb.png", 20000, 20000)
    assert path.stat().st_size < 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not leak
        with pytest.raises(MediaTooLargeError) as info:
            load_image(path)
    message = str(info.value)
    assert "bomb.png" in message and "20000x20000" in message
    # Above Pillow's own hard limit too: still our error, never DecompressionBombError.
    with pytest.raises(MediaTooLargeError):
        load_image(png_declaring(tmp_path / "huge.png", 60000, 60000))


def test_max_pixels_parameter(tmp_path: Path) -> None:
    Image.fromarray(pattern(100, 100)).save(tmp_path / "p.png")
    with pytest.raises(MediaTooLargeError, match="100x100"):
        load_image(tmp_path / "p.png", max_pixels=9_999)
    assert load_image(tmp_path / "p.png", max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ValueError):
        load_image(tmp_path / "p.png", max_pixels=0)


def test_within_our_limit_pillow_global_limit_does_not_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.fromarray(pattern(40, 40)).save(tmp_path / "p.png")
    Image.fromarray(pattern(40, 40)).save(tmp_path / "p.webp", lossless=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "p.png").shape == (40, 40, 3)
        # Some Pillow plugins check the global limit again while decoding: never a Pillow exception.
        try:
            assert load_image(tmp_path / "p.webp").shape == (40, 40, 3)
        except MediaTooLargeError:
            pass


# -- damaged and wrong inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_an_error_not_gray(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(noise).save(full, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="truncated or corrupt") as info:
        load_image(cut)
    assert cut.name in str(info.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(MediaError, match="bad.png"):
        load_image(path)


def test_not_an_image(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("hello\n" * 20)
    with pytest.raises(UnsupportedMediaError, match="notes.jpg"):
        load_image(text)
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height = 16, 16
        for packet in stream.encode(av.VideoFrame.from_ndarray(pattern(16, 16), format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(UnsupportedMediaError, match="clip.mp4"):
        load_image(video)


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(MediaError, match="directory"):
        load_image(tmp_path)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(MediaError, match="empty file"):
        load_image(tmp_path / "zero.png")


def test_probe_image_reads_header_only(tmp_path: Path) -> None:
    info = probe_image(png_declaring(tmp_path / "big.png", 20000, 15000))
    assert (info.width, info.height, info.format, info.pixels) == (20000, 15000, "PNG", 300_000_000)


def test_shared_photos(shared_dir: Path) -> None:
    """Every shared photo loads as upright RGB; evaluation images match their manifest's size."""
    data = shared_dir / "data"
    manifest = data / "eval_public" / "MANIFEST.tsv"
    require_shared(manifest.relative_to(shared_dir))  # skips without shared/; fails under CI=true if it is lost
    lines = manifest.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]
    images = [row for row in rows if row.get("kind") == "image"]
    assert images
    for row in images:
        out = load_image(data / "eval_public" / row["file"])
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        if row.get("width") and row.get("height"):
            assert {out.shape[0], out.shape[1]} == {int(row["width"]), int(row["height"])}, row["file"]
    faces = sorted((data / "faces").glob("*.jpg"))
    for path in faces:
        out = load_image(path)
        info = probe_image(path)
        assert out.shape == (info.height, info.width, 3), path
