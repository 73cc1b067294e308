"""Content sniffing: :func:`cevit.media.sniff_media_type` decides image / video / refused from the bytes."""

from __future__ import annotations

from pathlib import Path

from fuzz import seeds
from fuzz.common import scratch_file

INSTRUMENT = ("cevit.media",)


def seed(folder: Path) -> None:
    seeds.write_images(folder)
    seeds.write_videos(folder)


def load() -> None:
    global CevitError, sniff_media_type
    from cevit.errors import CevitError
    from cevit.media import sniff_media_type


def one_input(data: bytes) -> None:
    try:
        kind = sniff_media_type(scratch_file(data))
    except CevitError:
        return
    assert kind in ("image", "video"), kind
