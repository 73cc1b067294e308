"""The scan output folder: rows written in parts, each committed atomically, read back for resuming.

Layout of ``RESULTS/``::

    RESULTS/parquet/part-000000.parquet     # --format parquet or both (read: pandas.read_parquet("RESULTS/parquet"))
    RESULTS/jsonl/part-000000.jsonl         # --format jsonl or both (same rows, one JSON object per line)
    RESULTS/_summary.json                   # the last run's summary (counts, throughput, most suspicious)
    RESULTS/.lock                           # held while a scan writes (a second scan into RESULTS is refused)

Rows are buffered and written as a part once ``part_size`` rows are waiting or ``flush_seconds`` have passed
since the last part. A part is written to a hidden temporary file in its folder, flushed to disk and renamed
into place, so a crash (even SIGKILL) loses at most the rows of the part in flight and never leaves a
half-written part; with both formats the JSONL part is renamed first, and a Parquet or JSONL part whose twin is
missing is rebuilt from the other when the store is opened.

**One row per item.** A resumed scan skips every key already in the output. A retried item (``--retry-failed``)
or a file that changed since it was scanned (same path, new size or mtime) gets a new row in a new part; when the
store is opened and closed, older rows with the same key or the same source are removed from their parts
(each part rewritten atomically), so the output holds the latest row per item.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cevit.errors import ConfigError
from cevit.scan.rows import ScanRow

__all__ = ["FORMATS", "ResultStore", "StoreIndex", "read_records"]

log = logging.getLogger(__name__)

FORMATS = ("parquet", "jsonl")
_PART = re.compile(r"part-(\d{6})\.(parquet|jsonl)")


@dataclass(frozen=True, kw_only=True)
class StoreIndex:
    """What the output already holds: the status of every key (the latest row's)."""

    status_by_key: dict[str, str]

    def is_done(self, key: str, *, retry_failed: bool) -> bool:
        status = self.status_by_key.get(key)
        return status is not None and not (retry_failed and status == "error")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _part_path(folder: Path, fmt: str, number: int) -> Path:
    return folder / fmt / f"part-{number:06d}.{fmt}"


def _write_tmp(path: Path, fmt: str, records: list[dict[str, Any]]) -> Path:
    """Write ``records`` to a hidden temporary file next to ``path`` (synced to disk) and return its path."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        from cevit.scan.rows import arrow_schema

        table = pa.Table.from_pylist(records, schema=arrow_schema())
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    else:
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(_jsonable(r), ensure_ascii=False, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    return tmp


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    scanned = record.get("scanned_at")
    if scanned is not None and not isinstance(scanned, str):
        record = {**record, "scanned_at": scanned.isoformat(timespec="milliseconds")}
    return record


def _read_part(path: Path, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
    cols = None if columns is None else list(columns)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=cols).to_pylist()
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                rows.append(r if cols is None else {c: r.get(c) for c in cols})
    return rows


def _parts(folder: Path) -> dict[int, dict[str, Path]]:
    """``{part number: {format: path}}`` of the committed parts."""
    found: dict[int, dict[str, Path]] = {}
    for fmt in FORMATS:
        sub = folder / fmt
        if not sub.is_dir():
            continue
        for p in sub.iterdir():
            m = _PART.fullmatch(p.name)
            if m and m.group(2) == fmt:
                found.setdefault(int(m.group(1)), {})[fmt] = p
    return dict(sorted(found.items()))


def read_records(folder: str | os.PathLike[str], columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every row of a scan output folder, part by part (from the Parquet part where there is one)."""
    cols = None if columns is None else list(columns)
    for files in _parts(Path(folder)).values():
        yield from _read_part(files.get("parquet") or files["jsonl"], cols)


class ResultStore:
    """Append-only writer of scan rows into ``folder`` (see the module docstring); use as a context manager."""

    def __init__(self, *, folder: str | os.PathLike[str], formats: tuple[str, ...] = ("parquet",),
                 part_size: int = 100, flush_seconds: float = 60.0) -> None:  # fmt: skip
        unknown = [f for f in formats if f not in FORMATS]
        if not formats or unknown:
            raise ConfigError(f"output formats must be among {FORMATS}, got {formats}")
        if part_size < 1:
            raise ConfigError(f"part size must be >= 1, got {part_size}")
        if "parquet" in formats:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ConfigError("Parquet output needs pyarrow: pip install 'cevit[scan]' "
                                  "(or use --format jsonl)") from None  # fmt: skip
        self.folder = Path(folder)
        self.formats = tuple(formats)
        self.part_size = part_size
        self.flush_seconds = flush_seconds
        self._buffer: list[ScanRow] = []
        self._last_flush = time.monotonic()
        self._next_part = 0
        self._lock_fd: int | None = None
        self.rows_written = 0

    # -- opening ------------------------------------------------------------------------------------------------
    def __enter__(self) -> ResultStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> StoreIndex:
        """Create the folder, take the lock, repair and compact the parts; return what is already done."""
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"{self.folder}: output must be a folder (it is a file)")
        try:
            for fmt in self.formats:
                (self.folder / fmt).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{self.folder}: output folder cannot be created ({exc.strerror or exc})") from None
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"{self.folder}: another scan is writing to this output folder") from None
        self._lock_fd = fd
        self._remove_temporaries()
        self._repair_twins()
        self.compact()
        parts = _parts(self.folder)
        self._next_part = (max(parts) + 1) if parts else 0
        return self.index()

    def index(self) -> StoreIndex:
        status: dict[str, str] = {}
        for r in read_records(self.folder, ["key", "status"]):
            status[r["key"]] = r["status"]
        return StoreIndex(status_by_key=status)

    def _remove_temporaries(self) -> None:
        for fmt in FORMATS:
            sub = self.folder / fmt
            if sub.is_dir():
                for p in sub.glob(".part-*.tmp"):
                    with contextlib.suppress(OSError):
                        p.unlink()

    def _repair_twins(self) -> None:
        """With both formats: rebuild a part's missing Parquet or JSONL file from the other (a crash between the
        two renames), so that both folders hold the same rows."""
        if len(self.formats) < 2:
            return
        for number, files in _parts(self.folder).items():
            for fmt in self.formats:
                if fmt not in files:
                    (other,) = files.values()
                    log.info("rebuilding %s from %s", _part_path(self.folder, fmt, number), other)
                    self._replace(_part_path(self.folder, fmt, number), fmt, _read_part(other))

    def _replace(self, path: Path, fmt: str, records: list[dict[str, Any]]) -> None:
        tmp = _write_tmp(path, fmt, records)
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def compact(self) -> int:
        """Remove rows superseded by a later row with the same key or source; returns how many were removed."""
        parts = _parts(self.folder)
        last: dict[str, int] = {}
        for number, files in parts.items():
            for fmt_path in files.values():
                for r in _read_part(fmt_path, ["key", "source"]):
                    last[f"k:{r['key']}"] = number
                    last[f"s:{r['source']}"] = number
        removed = 0
        for number, files in parts.items():
            for fmt, path in files.items():
                rows = _read_part(path, ["key", "source"])
                keep = [last[f"k:{r['key']}"] <= number and last[f"s:{r['source']}"] <= number for r in rows]
                if all(keep):
                    continue
                removed += keep.count(False)
                full = _read_part(path)
                kept = [r for r, k in zip(full, keep) if k]
                if kept:
                    self._replace(path, fmt, kept)
                else:
                    path.unlink()
                    _fsync_dir(path.parent)
        if removed:
            log.info("%s: removed %d superseded row(s)", self.folder, removed)
        return removed

    # -- writing ------------------------------------------------------------------------------------------------
    def add(self, row: ScanRow) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.part_size or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered rows as the next part (nothing when the buffer is empty)."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        records = [r.to_record() for r in self._buffer]
        number = self._next_part
        # JSONL renamed first: a crash before the Parquet rename leaves a JSONL part that _repair_twins completes
        order = [f for f in ("jsonl", "parquet") if f in self.formats]
        temporaries = [(_write_tmp(_part_path(self.folder, f, number), f, records), f) for f in order]
        for tmp, fmt in temporaries:
            os.replace(tmp, _part_path(self.folder, fmt, number))
            _fsync_dir(tmp.parent)
        self.rows_written += len(records)
        self._next_part += 1
        self._buffer.clear()

    def close(self) -> None:
        """Commit what is buffered, remove superseded rows and release the lock."""
        if self._lock_fd is None:
            return
        try:
            self.flush()
            self.compact()
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def write_summary(self, summary: dict[str, Any]) -> None:
        from cevit.output import atomic_write_text

        atomic_write_text(self.folder / "_summary.json", json.dumps(summary, indent=2) + "\n")
