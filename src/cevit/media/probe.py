"""Decide whether a file is an image or a video by its content, and open video containers safely.

:func:`sniff_media_type` looks at the file's first bytes first: JPEG, PNG, GIF, WebP, BMP and TIFF have
unambiguous signatures ("magic bytes") and are reported as ``"image"`` without decoding anything. Every
other file is opened with PyAV (FFmpeg) and must contain a video stream to be reported as ``"video"``.
The extension is never trusted: a PNG named ``clip.mp4`` is an image, an MP4 named ``photo.jpg`` a video.

FFmpeg can open far more than cevit supports, and some of its demuxers are risky on untrusted input
(playlists such as HLS or ``concat`` open further files or URLs). :func:`open_av_container` therefore
opens files through FFmpeg's ``file:`` protocol only, with ``protocol_whitelist=file`` and a
``format_whitelist`` of the demuxers cevit accepts: MP4/MOV (and their 3GP/M4V/M4A siblings), AVI,
Matroska/WebM for video, plus WAV, MP3, Ogg, FLAC and ADTS-AAC so that an audio-only file can be
reported as such instead of as "unknown". Any other container (MPEG-TS, FLV, raw streams, ...) is
reported as not supported.

Errors all name the file: a missing path, a directory, an unreadable file or an empty file raise
:class:`~cevit.errors.MediaError`; content that is neither a supported image nor a video, and audio-only
files, raise :class:`~cevit.errors.UnsupportedMediaError`.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cevit.errors import MediaError, UnsupportedMediaError

if TYPE_CHECKING:
    import av.container

__all__ = [
    "MediaType",
    "DEFAULT_MAX_FRAME_PIXELS",
    "sniff_media_type",
    "sniff_image_format",
    "check_media_file",
    "read_head",
    "open_av_container",
    "select_video_stream",
]

logger = logging.getLogger(__name__)

MediaType = Literal["image", "video"]

#: Default limit on the pixels of one video frame (width x height): 40 megapixels, so 8K UHD (7680x4320,
#: 33.2 MP) passes. Used by :mod:`cevit.media.video` (re-exported there) and when sniffing.
DEFAULT_MAX_FRAME_PIXELS = 40_000_000

#: How many leading bytes :func:`sniff_image_format` looks at.
_HEAD_BYTES = 32

#: FFmpeg demuxers (``AVInputFormat.name``) that may contain the videos cevit supports.
_VIDEO_DEMUXERS = ("mov,mp4,m4a,3gp,3g2,mj2", "avi", "matroska,webm")
#: Audio-only demuxers, opened only to tell the user that the file has no video.
_AUDIO_DEMUXERS = ("wav", "mp3", "ogg", "flac", "aac")
_FORMAT_WHITELIST = ",".join(_VIDEO_DEMUXERS + _AUDIO_DEMUXERS)

#: BMP info-header sizes (BITMAPCOREHEADER ... BITMAPV5HEADER); checked so that a text file starting
#: with "BM" is not taken for a bitmap.
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def sniff_image_format(head: bytes) -> str | None:
    """Return the image format whose signature ``head`` starts with, or None.

    The names are Pillow's format names: ``"JPEG"``, ``"PNG"``, ``"GIF"``, ``"WEBP"``, ``"BMP"``,
    ``"TIFF"``. ``head`` should hold at least the file's first 18 bytes (fewer simply fail to match).
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if len(head) >= 18 and head[:2] == b"BM":
        dib_size = int.from_bytes(head[14:18], "little")
        if dib_size in _BMP_DIB_SIZES:
            return "BMP"
    return None


def _container_hint(head: bytes) -> str | None:
    """A human-readable name of the video container ``head`` looks like, for error messages."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "MP4/MOV"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska/WebM"
    return None


def check_media_file(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is an existing, readable, non-empty regular file and return it as a Path.

    Raises:
        MediaError: the path does not exist (or is a broken symbolic link, or a symlink loop), is a
            directory (or not a regular file), cannot be read, or is empty. The message names the file.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise MediaError(f"{p}: broken symbolic link (its target does not exist)") from None
        raise MediaError(f"{p}: file does not exist") from None
    except PermissionError as exc:
        raise MediaError(f"{p}: cannot be read (permission denied)") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MediaError(f"{p}: symlink loop (following its symbolic links never reaches a file)") from None
        raise MediaError(f"{p}: cannot be accessed ({exc.strerror or exc})") from exc
    if p.is_dir():
        raise MediaError(f"{p}: is a directory, not a media file")
    if not p.is_file():
        raise MediaError(f"{p}: is not a regular file")
    if st.st_size == 0:
        raise MediaError(f"{p}: empty file (0 bytes)")
    return p


def read_head(p: Path, n: int = _HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of ``p``; MediaError (naming the file) when it cannot be read."""
    try:
        with p.open("rb") as fh:
            return fh.read(n)
    except PermissionError as exc:
        raise MediaError(f"{p}: cannot be read (permission denied)") from exc
    except OSError as exc:
        raise MediaError(f"{p}: cannot be read ({exc.strerror or exc})") from exc


def open_av_container(
    path: str | os.PathLike[str], *, max_frame_pixels: int | None = None
) -> av.container.InputContainer:
    """Open ``path`` with PyAV, restricted to local files and the demuxers cevit accepts.

    The caller closes the container (use it as a context manager). Only checks that FFmpeg can read the
    container header; it does not require a video stream (see :func:`sniff_media_type`).
    ``max_frame_pixels`` is passed to FFmpeg as ``max_pixels``, so that the frames it decodes while probing
    the streams cannot be larger (the stream's declared size is still read from the header; callers
    check it themselves).

    Raises:
        MediaError: the file is missing, unreadable or empty, or looks like a supported video container
            but cannot be opened (truncated or corrupt).
        UnsupportedMediaError: FFmpeg does not recognise it as one of the accepted containers.
    """
    import av  # imported lazily: importing cevit.media must stay cheap

    p = check_media_file(path)
    url = "file:" + os.fspath(p.absolute())
    options = {"protocol_whitelist": "file", "format_whitelist": _FORMAT_WHITELIST}
    if max_frame_pixels is not None:
        options["max_pixels"] = str(int(max_frame_pixels))
    try:
        return av.open(url, mode="r", options=options, metadata_errors="replace")
    except PermissionError as exc:
        raise MediaError(f"{p}: cannot be read (permission denied)") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        hint = _container_hint(read_head(p))
        if hint is not None:
            raise MediaError(
                f"{p}: looks like a video ({hint}) but cannot be opened; the file is truncated or "
                f"corrupt ({_ffmpeg_message(exc)})"
            ) from exc
        raise UnsupportedMediaError(
            f"{p}: not a supported image or video (supported: JPEG, PNG, WebP, BMP, TIFF, GIF images; "
            "MP4, MOV, AVI, MKV, WebM videos)"
        ) from exc


def _ffmpeg_message(exc: BaseException) -> str:
    """The short FFmpeg error text of ``exc`` (without the file name PyAV appends)."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else type(exc).__name__


def _video_streams(container: av.container.InputContainer) -> list[av.video.stream.VideoStream]:
    """The container's real video streams: cover art (attached pictures) does not count."""
    import av

    streams = []
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        streams.append(stream)
    return streams


def select_video_stream(container: av.container.InputContainer, p: Path) -> av.video.stream.VideoStream:
    """Return the video stream to read from ``container`` or raise UnsupportedMediaError.

    The container must be one of the accepted video demuxers and hold a video stream that is not cover
    art; an audio-only file gets its own message ("contains audio but no video stream").
    """
    streams = _video_streams(container)
    fmt = container.format.name
    if streams and fmt in _VIDEO_DEMUXERS:
        # Prefer the stream FFmpeg marks as default, then the first one.
        for stream in streams:
            if stream.disposition & _default_disposition():
                return stream
        return streams[0]
    if container.streams.audio and not streams:
        raise UnsupportedMediaError(f"{p}: contains audio but no video stream")
    raise UnsupportedMediaError(f"{p}: not a supported image or video (container {fmt!r})")


def _default_disposition() -> int:
    import av

    return int(av.stream.Disposition.default)


def sniff_media_type(path: str | os.PathLike[str]) -> MediaType:
    """Tell whether ``path`` holds an image or a video, by content.

    Images are recognised by their signature (JPEG, PNG, GIF, WebP, BMP, TIFF) without decoding; anything
    else is opened with PyAV (see :func:`open_av_container`) and must be an MP4/MOV, AVI or Matroska/WebM
    file with at least one video stream that is not cover art.

    Raises:
        MediaError: missing path ("... does not exist"), a directory, an unreadable file, an empty file
            ("empty file"), or a video container that cannot be opened (truncated or corrupt).
        UnsupportedMediaError: unknown content ("not a supported image or video") or an audio-only file
            ("contains audio but no video stream").
    """
    p = check_media_file(path)
    head = read_head(p)
    if sniff_image_format(head) is not None:
        return "image"
    with open_av_container(p, max_frame_pixels=DEFAULT_MAX_FRAME_PIXELS) as container:
        select_video_stream(container, p)
    return "video"
