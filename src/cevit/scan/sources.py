"""What a scan reads: folders, glob patterns and manifests expanded into :class:`ScanItem` objects.

A source is

* a **manifest**: a ``.csv`` file (with a header row) or a ``.jsonl`` file (one JSON object per line) whose
  ``path`` column/key names a local file; optional ``id`` and ``label``. Relative paths are taken relative to the
  manifest's folder. A row without a path, or a malformed line, is a :class:`~cevit.errors.ConfigError` naming the
  manifest and the line: a manifest is data the user prepared, so it must be right before a long scan starts;
* anything else: a file, a folder (searched recursively) or a glob pattern, as for ``cevit analyze``
  (:func:`cevit.media.iter_media_files`).

Each item carries its **resume key**: ``path|size|mtime_ns`` of the resolved absolute path (cheap: one ``stat``),
or, with ``use_hash=True``, ``sha256:<hex>`` of the content (survives moves and copies, costs one read of every
file). An item that cannot be found or read gets a key all the same (``missing:<path>``), so that its error row is
written once and retried only on request.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cevit.errors import CevitError, ConfigError

__all__ = ["ScanItem", "SourceError", "MANIFEST_SUFFIXES", "collect_items", "read_manifest", "item_key"]

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = frozenset({".csv", ".jsonl"})
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class ScanItem:
    """One file to scan: ``id`` (the manifest's id, else the path as given), ``path``, optional ``label``,
    and the resume ``key`` (see the module docstring); ``size`` / ``mtime_ns`` are None when the file is missing."""

    id: str
    path: str
    key: str
    label: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class SourceError:
    """A source argument that produced no item (a folder without media, a pattern without match): one error row."""

    source: str
    error: str
    error_type: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def item_key(path: str | os.PathLike[str], *, use_hash: bool = False) -> tuple[str, int | None, int | None, str | None]:
    """``(key, size, mtime_ns, sha256)`` of one file; a file that cannot be stat'ed or read: ``missing:<abs path>``."""
    absolute = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(absolute)
    except OSError:
        return f"missing:{absolute}", None, None, None
    if use_hash:
        try:
            digest = _sha256(Path(absolute))
        except OSError:
            return f"unreadable:{absolute}", st.st_size, st.st_mtime_ns, None
        return f"sha256:{digest}", st.st_size, st.st_mtime_ns, digest
    return f"{absolute}|{st.st_size}|{st.st_mtime_ns}", st.st_size, st.st_mtime_ns, None


def _make_item(path: str, *, item_id: str | None, label: str | None, use_hash: bool) -> ScanItem:
    key, size, mtime_ns, digest = item_key(path, use_hash=use_hash)
    return ScanItem(id=item_id if item_id else path, path=path, key=key, label=label, size=size, mtime_ns=mtime_ns,
                    sha256=digest)  # fmt: skip


def _manifest_rows(manifest: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """``(line number, row)`` of a CSV (header row) or JSONL manifest."""
    try:
        fh = open(manifest, encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"{manifest}: manifest cannot be read ({exc.strerror or exc})") from None
    with fh:
        if manifest.suffix.lower() == ".csv":
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise ConfigError(f"{manifest}: CSV manifest needs a header row with a 'path' column "
                                  f"(optional: id, label); found {reader.fieldnames}")  # fmt: skip
            for row in reader:
                yield reader.line_num, dict(row)
            return
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{manifest}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{manifest}:{number}: not a JSON object")
            yield number, row


def read_manifest(manifest: str | os.PathLike[str], *, use_hash: bool = False) -> list[ScanItem]:
    """The items a manifest lists, in its order (see the module docstring)."""
    manifest = Path(manifest)
    items = []
    for number, row in _manifest_rows(manifest):
        raw = row.get("path")
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError(f"{manifest}:{number}: row has no 'path'")
        path = raw.strip()
        if not os.path.isabs(path):
            path = os.path.join(manifest.parent, path)
        item_id, label = row.get("id"), row.get("label")
        items.append(_make_item(path, item_id=None if item_id in (None, "") else str(item_id),
                                label=None if label in (None, "") else str(label), use_hash=use_hash))  # fmt: skip
    return items


def is_manifest(source: str) -> bool:
    return Path(source).suffix.lower() in MANIFEST_SUFFIXES and Path(source).is_file()


def collect_items(
    sources: Sequence[str], *, use_hash: bool = False, progress: Callable[[int], None] | None = None
) -> tuple[list[ScanItem], list[SourceError]]:
    """Expand ``sources`` into items (de-duplicated by key, first occurrence wins) and per-source errors.

    A manifest that is malformed raises :class:`~cevit.errors.ConfigError`; any other bad source becomes a
    :class:`SourceError` and the others are scanned. ``progress(n)`` is called with the number of items so far.
    """
    from cevit.media import iter_media_files

    items: list[ScanItem] = []
    errors: list[SourceError] = []
    seen: set[str] = set()
    for source in sources:
        if is_manifest(source):
            found = read_manifest(source, use_hash=use_hash)
        else:
            try:
                paths = iter_media_files([source])
            except CevitError as exc:
                errors.append(SourceError(source=source, error=str(exc), error_type=type(exc).__name__))
                continue
            found = []
            for p in paths:
                found.append(_make_item(str(p), item_id=None, label=None, use_hash=use_hash))
                if progress is not None and len(found) % 256 == 0:
                    progress(len(items) + len(found))
        for item in found:
            if item.key in seen:
                log.debug("%s: skipped, same key as an earlier item (%s)", item.path, item.key)
                continue
            seen.add(item.key)
            items.append(item)
        if progress is not None:
            progress(len(items))
    return items, errors
