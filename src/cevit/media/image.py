"""Read still images robustly into cevit's frame convention: ``uint8`` RGB arrays of shape (H, W, 3).

:func:`load_image` reads JPEG (and camera MPO), PNG, GIF, WebP, BMP and TIFF files with Pillow:

* **Size limit first.** The header is parsed and ``width * height`` is compared with ``max_pixels``
  *before* any pixel is decoded, so a decompression bomb (a tiny PNG that declares 20000x20000 pixels)
  costs nothing and raises :class:`~cevit.errors.MediaTooLargeError` naming the file and its dimensions.
  The header is read through Pillow's format plugins directly, so Pillow's own global
  ``Image.MAX_IMAGE_PIXELS`` check is not what decides; should a Pillow plugin still raise
  ``DecompressionBombError`` while decoding (GIF/TIFF/MPO sub-frames), it becomes a
  ``MediaTooLargeError`` too, and ``DecompressionBombWarning`` is silenced for images within
  ``max_pixels``.
* **Truncated files are errors.** Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left as it is (False by
  default; cevit never sets it), so a JPEG cut in half raises :class:`~cevit.errors.MediaError`
  ("truncated or corrupt") instead of coming back half gray. (If an application sets that flag to True
  globally, Pillow fills the missing part and this module cannot notice.)
* **Orientation.** The EXIF orientation tag is applied (``ImageOps.exif_transpose``), so a portrait
  photo taken with a rotated camera comes back upright. A malformed EXIF block is logged and ignored.
* **First frame only** of animated GIF/WebP and multi-page TIFF files.
* **Colour modes** all become 8-bit RGB:

  - ``1`` (bilevel) → 0/255; ``L`` → grey replicated into R, G, B; ``P`` (palette) → its colours;
    ``CMYK``, ``YCbCr`` → Pillow's conversion.
  - **Alpha** (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent palette entry, premultiplied
    ``RGBa``/``La``) is **composited on black**: ``rgb * alpha / 255``. Fully transparent pixels are
    therefore black whatever colour the file stores behind them (often garbage), and opaque pixels
    keep their colour exactly.
  - **High bit depth / float** (``I;16*``, ``I``, ``F``) is *scaled*, not clipped: integer images whose
    values all lie in [0, 65535] are read as 16-bit (``round(v / 257)``, so 65535 → 255 and 257 → 1);
    float images whose values all lie in [0, 1] are multiplied by 255; anything else (negative or
    larger values, e.g. 32-bit data) is min-max normalised to [0, 255] (a constant image becomes 0).
    NaN becomes 0. The grey result is replicated into R, G, B.
  - Modes Pillow cannot convert to RGB (e.g. ``LAB``) raise :class:`~cevit.errors.UnsupportedMediaError`.

:func:`probe_image` reads only the header and returns an :class:`ImageInfo`.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from cevit.errors import MediaError, MediaTooLargeError, UnsupportedMediaError
from cevit.media.probe import check_media_file, sniff_image_format

__all__ = ["ImageInfo", "DEFAULT_MAX_PIXELS", "load_image", "probe_image"]

logger = logging.getLogger(__name__)

#: Default refusal threshold of :func:`load_image` (100 megapixels, e.g. 10000 x 10000).
DEFAULT_MAX_PIXELS = 100_000_000

#: EXIF orientations (tag 0x0112) that swap width and height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})

#: Exceptions Pillow raises for files it cannot parse or decode.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    zlib.error,
)


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    """What an image file's header says.

    ``width`` and ``height`` are those of the array :func:`load_image` returns, i.e. after the EXIF
    orientation is applied; ``orientation`` is the EXIF tag (1 = upright, 6 = rotate 90° clockwise,
    ...). ``format`` is Pillow's format name (``"JPEG"``, ``"PNG"``, ...) and ``mode`` the colour mode
    stored in the file (``"RGB"``, ``"P"``, ``"I;16"``, ...).
    """

    width: int
    height: int
    format: str
    mode: str
    orientation: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _unsupported(p: Path) -> UnsupportedMediaError:
    return UnsupportedMediaError(f"{p}: not a supported image (supported: JPEG, PNG, WebP, BMP, TIFF, GIF)")


def _open_header(fh: IO[bytes], p: Path) -> ImageFile.ImageFile:
    """Parse the image header with the matching Pillow plugin, without decoding pixels.

    Pillow's ``Image.open`` runs its own global decompression-bomb check on the declared size; the
    plugin factories are called directly instead so that cevit's ``max_pixels`` decides and the
    dimensions can be reported.
    """
    prefix = fh.read(32)
    hinted = sniff_image_format(prefix)
    if hinted is None:
        raise _unsupported(p)
    Image.preinit()
    if hinted not in Image.OPEN:
        Image.init()
    entry = Image.OPEN.get(hinted)
    if entry is None:  # plugin missing from this Pillow build
        raise UnsupportedMediaError(f"{p}: {hinted} images are not supported by this Pillow build")
    factory, accept = entry
    accepted = True if accept is None else accept(prefix[:16])
    if not accepted or isinstance(accepted, str):
        raise _unsupported(p)
    fh.seek(0)
    try:
        return factory(fh, os.fspath(p))
    except Image.DecompressionBombError as exc:
        raise MediaTooLargeError(f"{p}: image too large to decode safely ({exc})") from exc
    except _DECODE_ERRORS as exc:
        raise MediaError(f"{p}: truncated or corrupt {hinted} image header ({exc})") from exc


_WARNINGS_LOCK = threading.Lock()


def _may_warn(im: Image.Image) -> bool:
    """Whether decoding ``im`` can trigger Pillow's DecompressionBombWarning (more pixels than its global limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and im.size[0] * im.size[1] > limit


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except _DECODE_ERRORS:
        return 1


def _check_size(im: Image.Image, p: Path, max_pixels: int) -> None:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise MediaError(f"{p}: image declares invalid dimensions {width}x{height}")
    if width * height > max_pixels:
        raise MediaTooLargeError(
            f"{p}: image is {width}x{height} ({width * height} pixels), above the limit of "
            f"{max_pixels} pixels (max_pixels)"
        )


def probe_image(path: str | os.PathLike[str]) -> ImageInfo:
    """Read the header of an image file (no pixel decoding) and return an :class:`ImageInfo`.

    Raises:
        MediaError: missing/unreadable/empty file or a header that cannot be parsed.
        UnsupportedMediaError: not a JPEG, PNG, GIF, WebP, BMP or TIFF image.
    """
    p = check_media_file(path)
    with _open_file(p) as fh, _open_header(fh, p) as im:
        width, height = im.size
        orientation = _orientation(im)
        if orientation in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        return ImageInfo(width=width, height=height, format=str(im.format), mode=im.mode, orientation=orientation)


def _open_file(p: Path) -> IO[bytes]:
    try:
        return p.open("rb")
    except PermissionError as exc:
        raise MediaError(f"{p}: cannot be read (permission denied)") from exc
    except OSError as exc:
        raise MediaError(f"{p}: cannot be read ({exc.strerror or exc})") from exc


def load_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an upright ``uint8`` RGB array of shape (H, W, 3).

    See the module docstring for the colour-mode, alpha, bit-depth and orientation rules.

    Args:
        path: the image file. Its content decides the format, not its extension.
        max_pixels: refuse images whose header declares more than this many pixels (width x height).

    Raises:
        MediaError: missing, unreadable or empty file; truncated or corrupt image data.
        MediaTooLargeError: the declared size exceeds ``max_pixels`` (checked before decoding).
        UnsupportedMediaError: not a supported image format, or a colour mode that cannot become RGB.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    p = check_media_file(path)
    with _open_file(p) as fh, _open_header(fh, p) as im:
        _check_size(im, p, max_pixels)
        try:
            if _may_warn(im):
                # Within our own limit Pillow's (lower, global) bomb warning is noise. catch_warnings changes
                # process-wide state, so it runs under a lock, and only for the rare images above Pillow's limit.
                with _WARNINGS_LOCK, warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    im.load()
            else:
                im.load()
        except Image.DecompressionBombError as exc:
            raise MediaTooLargeError(f"{p}: image too large to decode safely ({exc})") from exc
        except MemoryError as exc:
            raise MediaTooLargeError(f"{p}: not enough memory to decode the image") from exc
        except _DECODE_ERRORS as exc:
            raise MediaError(f"{p}: truncated or corrupt {im.format} image ({exc})") from exc
        # A GIF frame may extend its canvas while loading: check the final size again.
        _check_size(im, p, max_pixels)
        upright = _exif_transpose(im, p)
        try:
            return _to_rgb8(upright, p)
        finally:
            if upright is not im:
                upright.close()


def _exif_transpose(im: Image.Image, p: Path) -> Image.Image:
    try:
        transposed = ImageOps.exif_transpose(im)
    except _DECODE_ERRORS as exc:
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", p, exc)
        return im
    return im if transposed is None else transposed


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale a 2-D integer or float array to uint8 following the module's bit-depth rules."""
    if np.issubdtype(values.dtype, np.floating):
        data = values.astype(np.float32, copy=False)
        finite = np.isfinite(data)
        if not finite.all():
            data = np.where(finite, data, 0.0).astype(np.float32)
        lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            scaled = data * 255.0
        elif hi > lo:
            scaled = (data - lo) * (255.0 / (hi - lo))
        else:
            scaled = np.zeros_like(data)
    else:
        lo_i, hi_i = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if lo_i >= 0 and hi_i <= 65535:
            scaled = values.astype(np.float32) / 257.0
        elif hi_i > lo_i:
            scaled = (values.astype(np.float64) - lo_i) * (255.0 / (hi_i - lo_i))
        else:
            scaled = np.zeros(values.shape, np.float32)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb8(im: Image.Image, p: Path) -> np.ndarray:
    """Convert a loaded Pillow image of any mode to a contiguous (H, W, 3) uint8 RGB array."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        gray = _scale_to_uint8(np.asarray(im))
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode in ("P", "L", "RGB") and "transparency" in im.info)
    try:
        if has_alpha:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
            rgb = rgba[:, :, :3].astype(np.uint16)
            alpha = rgba[:, :, 3:4].astype(np.uint16)
            out = ((rgb * alpha + 127) // 255).astype(np.uint8)
            return np.ascontiguousarray(out)
        rgb_im = im if mode == "RGB" else im.convert("RGB")
        out = np.array(rgb_im, dtype=np.uint8)
    except ValueError as exc:
        raise UnsupportedMediaError(f"{p}: colour mode {mode!r} cannot be converted to RGB") from exc
    if out.ndim != 3 or out.shape[2] != 3:
        raise UnsupportedMediaError(f"{p}: colour mode {mode!r} did not convert to 3-channel RGB")
    return out
