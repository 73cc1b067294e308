"""Image loading: :func:`cevit.media.probe_image` and :func:`cevit.media.load_image` (header checks, EXIF
orientation, mode conversion) on any bytes; a small pixel limit keeps each run fast."""

from __future__ import annotations

from pathlib import Path

from fuzz import seeds
from fuzz.common import scratch_file

INSTRUMENT = ("cevit.media", "PIL")
MAX_PIXELS = 4_000_000


def seed(folder: Path) -> None:
    seeds.write_images(folder)


def load() -> None:
    global CevitError, load_image, probe_image
    from cevit.errors import CevitError
    from cevit.media import load_image, probe_image


def one_input(data: bytes) -> None:
    path = scratch_file(data)
    try:
        probe_image(path)
    except CevitError:
        pass
    try:
        image = load_image(path, max_pixels=MAX_PIXELS)
    except CevitError:
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype.name == "uint8", (image.shape, image.dtype)
    assert 0 < image.shape[0] * image.shape[1] <= MAX_PIXELS
