"""Helpers shared by the harnesses: a scratch file per process for readers that take paths, and the contract."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["scratch_file"]

_SCRATCH: Path | None = None


def scratch_file(data: bytes, name: str = "input") -> Path:
    """Write ``data`` to a file in this process's private scratch folder (overwritten each call); its path."""
    global _SCRATCH
    if _SCRATCH is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _SCRATCH = Path(tempfile.mkdtemp(prefix="cevit-fuzz-", dir=base))
        atexit.register(shutil.rmtree, _SCRATCH, True)
    path = _SCRATCH / name
    path.write_bytes(data)
    return path
