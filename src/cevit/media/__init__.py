"""Media input: decide image vs video by content, read images, probe videos and sample their frames.

* :func:`sniff_media_type` — ``"image"`` or ``"video"`` from the file's content
  (:mod:`cevit.media.probe`).
* :func:`load_image` / :func:`probe_image` — robust still-image reading (:mod:`cevit.media.image`).
* :func:`probe_video` / :func:`sample_frames` — video facts and evenly spaced frames
  (:mod:`cevit.media.video`); frames above :data:`DEFAULT_MAX_FRAME_PIXELS` (40 megapixels) are refused
  from the stream header, before decoding.
* :func:`iter_media_files` — expand files, folders and glob patterns into a list of media files, using
  :data:`IMAGE_EXTENSIONS` and :data:`VIDEO_EXTENSIONS` (lower-case suffixes). Extensions only
  decide which files a *folder* or *pattern* contributes; a file named explicitly is always kept, and
  its content decides later what it is.
"""

from __future__ import annotations

import errno
import glob
import os
from collections.abc import Sequence
from pathlib import Path

from cevit.errors import MediaError
from cevit.media.image import DEFAULT_MAX_PIXELS, ImageInfo, load_image, probe_image
from cevit.media.probe import MediaType, check_media_file, sniff_media_type
from cevit.media.video import (
    DEFAULT_MAX_FRAME_PIXELS,
    DecodeStats,
    VideoFrame,
    VideoInfo,
    probe_video,
    rotate_upright,
    sample_frames,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "MEDIA_EXTENSIONS",
    "MediaType",
    "sniff_media_type",
    "check_media_file",
    "ImageInfo",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_FRAME_PIXELS",
    "load_image",
    "probe_image",
    "VideoFrame",
    "VideoInfo",
    "DecodeStats",
    "probe_video",
    "sample_frames",
    "rotate_upright",
    "iter_media_files",
]

#: Suffixes of the image files a folder or glob pattern contributes (lower case, with the dot).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
#: Suffixes of the video files a folder or glob pattern contributes (lower case, with the dot).
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".3gp"})
MEDIA_EXTENSIONS: frozenset[str] = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS

_GLOB_CHARS = frozenset("*?[")


def _is_media_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS


def _walk_folder(folder: Path) -> list[Path]:
    """Media files under ``folder`` (recursive), hidden files and folders skipped, sorted by path."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        root_path = Path(root)
        found.extend(root_path / name for name in files if _is_media_name(name))
    found.sort(key=lambda f: f.relative_to(folder).parts)
    return found


def _identity(path: Path) -> Path:
    """The key under which ``path`` is de-duplicated: its resolved path; for a link that cannot be resolved (a
    symlink loop), its resolved folder and its name. Such an entry is kept, and fails later with an error naming
    it."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: "Symlink loop" before Python 3.13
        pass
    try:
        return path.parent.resolve() / path.name
    except (OSError, RuntimeError):
        return path.absolute()


def _symlink_problem(path: Path) -> str | None:
    """Why ``path``, a symbolic link that does not lead to a file or folder, is unusable; None when it is fine."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (following its symbolic links never reaches a file)"
        return f"symbolic link cannot be followed ({exc.strerror or exc})"
    return None


def iter_media_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, folders and glob patterns into a de-duplicated list of media files.

    * an existing **file** is kept as given, whatever its extension;
    * an existing **folder** contributes its media files (by :data:`IMAGE_EXTENSIONS` /
      :data:`VIDEO_EXTENSIONS`, case-insensitive), recursively, sorted, skipping hidden files and
      hidden folders (names starting with ``.``);
    * anything else containing ``*``, ``?`` or ``[`` is a **glob pattern** (``**`` recurses): matching
      media files are kept, matching folders are expanded as above, hidden names are not matched.

    The order follows ``paths``; a file reached twice is listed once (first occurrence). Inside a folder or a
    pattern, a symbolic link with a media name that leads nowhere (a symlink loop, a broken link) is listed
    like a file, so that analysing it fails for that one item with an error naming it; symbolic links to
    folders are not followed.

    Raises:
        MediaError: a path that does not exist, a symbolic link named directly that is a loop or broken, a
            folder without media files, or a pattern that matches no media file; the message names it.
            Callers that want to go on past one bad entry call this once per entry.
    """
    result: list[Path] = []
    seen: set[Path] = set()

    def add(candidates: list[Path]) -> None:
        for candidate in candidates:
            key = _identity(candidate)
            if key not in seen:
                seen.add(key)
                result.append(candidate)

    for entry in paths:
        text = os.fspath(entry)
        p = Path(text)
        if p.is_file():
            add([p])
        elif p.is_dir():
            files = _walk_folder(p)
            if not files:
                raise MediaError(f"{p}: folder contains no image or video files")
            add(files)
        elif _GLOB_CHARS & set(text):
            files = []
            for match in sorted(glob.glob(text, recursive=True)):
                mp = Path(match)
                if mp.is_dir():
                    files.extend(_walk_folder(mp))
                elif _is_media_name(mp.name) and (mp.is_file() or mp.is_symlink()):
                    files.append(mp)
            if not files:
                raise MediaError(f"{text}: pattern matches no image or video files")
            add(files)
        elif (problem := _symlink_problem(p)) is not None:
            raise MediaError(f"{p}: {problem}")
        elif p.exists():
            raise MediaError(f"{p}: is not a regular file or folder")
        else:
            raise MediaError(f"{p}: file or folder does not exist")
    return result
