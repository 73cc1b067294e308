"""Writing reports safely: output targets checked before any work, names that stay inside their folder, and
atomic writes.

* :func:`check_output_target` — checks (and for a folder, creates) where reports will go, *before* the model is
  loaded or any input analysed, so that a typo in ``--output`` costs nothing.
* :func:`report_file_name` — the file name of one input's report in an output folder. It is built from the last
  component of the input's path only, cleaned, so that it can never escape the folder: ``../x``, absolute
  paths, path separators, control characters, names starting with a dot, reserved Windows device names and
  names too long for the file system are all turned into a plain, short file name; names are unique within
  one run (case-insensitively, for case-insensitive file systems).
* :func:`atomic_write_text` — writes to a temporary file in the target's folder, then renames it over the
  target: a crash leaves the old file or the new one, never a half-written report. A symbolic link at the
  target is replaced, not followed.

Errors are :class:`~cevit.errors.ConfigError` (a wrong output target is a usage error) naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import MutableSet
from pathlib import Path

from cevit.errors import ConfigError

__all__ = ["check_output_target", "is_directory_target", "report_file_name", "atomic_write_text"]

#: Bytes of a report name's stem (file systems allow 255 bytes per name: room for ".NNN.json").
MAX_NAME_BYTES = 200
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}
)


def is_directory_target(output: str | os.PathLike[str]) -> bool:
    """Whether ``output`` names a folder (one report file per input): it ends with a separator or is a folder."""
    text = os.fspath(output)
    return text.endswith(("/", "\\")) or Path(text).is_dir()


def check_output_target(output: str | os.PathLike[str]) -> Path:
    """Check that reports can be written to ``output`` and return it as a Path.

    A folder target (see :func:`is_directory_target`) is created when missing and must be writable. A file
    target's folder must exist and be writable (an existing special file such as ``/dev/stdout`` must be
    writable itself).

    Raises:
        ConfigError: naming the path and what is wrong.
    """
    path = Path(output)
    if is_directory_target(output):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: output folder is an existing file, not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{path}: output folder cannot be created ({exc.strerror or exc})") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{path}: output folder is not writable")
        return path
    if path.exists() and not path.is_file():  # /dev/stdout, a FIFO: written directly
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{path}: output is not writable")
        return path
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"{path}: cannot write the output file: its folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: cannot write the output file: its folder {parent} is not writable "
                          "(reports are written to a temporary file there, then renamed)")  # fmt: skip
    return path


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def report_file_name(source: str, used: MutableSet[str], *, suffix: str = ".json") -> str:
    """A safe, unique file name (``<cleaned name><suffix>``) for the report of ``source`` in an output folder.

    Only the last path component of ``source`` is used (``/`` and ``\\`` both separate), normalised to NFC;
    control characters and characters that are not allowed in file names on common systems become ``_``;
    leading dots and spaces and trailing dots and spaces are stripped (no hidden files, no ``.``/``..``);
    reserved Windows device names get a ``_`` prefix; an empty result becomes ``input``. A name longer than
    :data:`MAX_NAME_BYTES` UTF-8 bytes is cut and gets a short hash of the whole source, so different long
    names stay different. A name already in ``used`` (compared case-insensitively) gets ``.2``, ``.3``, ...;
    the chosen name is added to ``used``.
    """
    last = re.split(r"[/\\]", source.rstrip("/\\"))[-1] if source.strip("/\\") else ""
    last = last.encode("utf-8", errors="replace").decode("utf-8")  # undecodable bytes (surrogates) become "?"
    name = _UNSAFE.sub("_", unicodedata.normalize("NFC", last))
    name = name.lstrip(". ").rstrip(". ")
    if not name:
        name = "input"
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        digest = hashlib.sha256(source.encode("utf-8", errors="surrogatepass")).hexdigest()[:10]
        name = _truncate_utf8(name, MAX_NAME_BYTES - len(digest) - 1).rstrip(". ") + "~" + digest
    candidate = name + suffix
    k = 1
    while candidate.casefold() in used:
        k += 1
        candidate = f"{name}.{k}{suffix}"
    used.add(candidate.casefold())
    return candidate


def _new_file_mode() -> int:
    """The permission bits a new file gets here (0o666 less the umask), read without changing the umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", allow_special: bool = False
) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, flushed, then renamed over
    ``path``. An existing file keeps its permission bits; a symbolic link at ``path`` is replaced, not followed.

    A target that is (or links to) an existing non-regular file (``/dev/stdout``, a FIFO) is written directly
    when ``allow_special`` is true (a path the user named), and refused otherwise.

    Raises:
        OSError: the folder is not writable, the disk is full, a special file not allowed, ... (the temporary
            file is removed).
    """
    path = Path(path)
    try:
        st = path.stat()  # follows links: what a plain write would reach
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
        if not allow_special:
            raise OSError(errno.EPERM, "not a regular file; refusing to write a report into it", str(path))
        with open(path, "w", encoding=encoding, newline="") as fh:
            fh.write(text)
        return
    mode = stat.S_IMODE(st.st_mode) if st is not None and not path.is_symlink() else _new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cevit-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
