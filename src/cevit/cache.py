"""cevit's cache of derived files: things cevit can always rebuild, kept so it does not rebuild them every run.

Today it holds ONNX exports of torch weights for ``--backend onnxruntime`` (:mod:`cevit.models.onnx`): exporting the
default weights takes 10-30 s on a small CPU, loading the cached file well under a second.

Location: ``$CEVIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/cevit``, else ``~/.cache/cevit``. ``CEVIT_CACHE_DIR=""``
(set and empty) turns the cache off. Deleting the folder is always safe. Entries are written atomically (a temporary
file renamed into place), so a crash or a concurrent writer never leaves a half-written entry under its final
name; a cache that cannot be written (read-only home, full disk) is skipped with a DEBUG log record, never an error.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "read_entry", "write_entry", "remove_entry"]

log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
    """The cache folder (not created here), or None when the cache is turned off."""
    configured = os.environ.get("CEVIT_CACHE_DIR")
    if configured is not None:
        return Path(configured).expanduser() if configured.strip() else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and xdg.strip() else Path.home() / ".cache"
    return base / "cevit"


def _entry(name: str) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"cache entry names are relative paths inside the cache, got {name!r}")
    return root / name


def read_entry(name: str) -> bytes | None:
    """The bytes of cache entry ``name`` (a relative path such as ``onnx/<key>.onnx``), or None when absent or
    unreadable or the cache is off."""
    path = _entry(name)
    if path is None:
        return None
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.debug("cache entry %s not readable: %s", path, exc)
        return None


def write_entry(name: str, data: bytes) -> Path | None:
    """Store ``data`` as entry ``name`` atomically; returns its path, or None when the cache is off or not
    writable (logged at DEBUG)."""
    path = _entry(name)
    if path is None:
        return None
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return path
    except OSError as exc:
        log.debug("cache entry %s not written: %s", path, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return None


def remove_entry(name: str) -> None:
    """Delete entry ``name`` if it exists (a damaged entry, before it is rebuilt)."""
    path = _entry(name)
    if path is not None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.debug("cache entry %s not removed: %s", path, exc)
