"""Face indexes: the CSV that lists saved face crops (written by ``cevit extract-faces``, read by training,
calibration and evaluation).

One row per face. Columns (:data:`INDEX_COLUMNS`): ``crop_path`` (relative to the index file's folder, or
absolute), ``source`` (the media item), ``frame_index``, ``timestamp``, ``face_index``, the face box ``x1 y1 x2 y2``
and 5 landmarks ``lm0x .. lm4y`` **in the crop's pixels**, ``det_prob``, ``label`` (real/fake), ``split``
(train/val/test/empty), ``method``, ``dataset``, ``group`` (the leakage-free split key), and the crop's valid
region ``vx1 vy1 vx2 vy2``: the rectangle of the saved crop that shows the original frame (the rest is zero
padding where the face was near the frame's edge). Only :data:`REQUIRED_COLUMNS` must be present; indexes
written before the valid region existed read with ``valid=None`` (the whole crop counts as frame).

:func:`read_index` parses a file into frozen :class:`FaceRow` records; errors (:class:`~cevit.errors.ConfigError`)
name the file, line and column. :func:`write_index` writes rows atomically.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from cevit.errors import ConfigError

__all__ = ["INDEX_COLUMNS", "REQUIRED_COLUMNS", "VALID_COLUMNS", "FaceRow", "read_index", "read_indexes", "write_index"]

logger = logging.getLogger(__name__)

INDEX_COLUMNS: tuple[str, ...] = (
    "crop_path", "source", "frame_index", "timestamp", "face_index", "x1", "y1", "x2", "y2",
    "lm0x", "lm0y", "lm1x", "lm1y", "lm2x", "lm2y", "lm3x", "lm3y", "lm4x", "lm4y",
    "det_prob", "label", "split", "method", "dataset", "group", "vx1", "vy1", "vx2", "vy2",
)  # fmt: skip
#: Columns without which a row cannot be used; the others default to empty/0.
REQUIRED_COLUMNS: tuple[str, ...] = ("crop_path", "x1", "y1", "x2", "y2", "label")
_LM_COLUMNS = INDEX_COLUMNS[9:19]
#: The valid region of the saved crop (optional columns).
VALID_COLUMNS: tuple[str, ...] = ("vx1", "vy1", "vx2", "vy2")
_LABELS = {"real": 0, "fake": 1}
_SPLITS = ("", "train", "val", "test")


@dataclass(frozen=True, kw_only=True)
class FaceRow:
    """One face of a face index, with paths resolved and values typed."""

    crop_path: str  #: absolute path of the saved crop
    source: str
    frame_index: int
    timestamp: float | None
    face_index: int
    box: tuple[float, float, float, float]  #: x1, y1, x2, y2 in the crop's pixels
    landmarks: tuple[tuple[float, float], ...] | None  #: 5 (x, y) in the crop's pixels, or None
    det_prob: float
    label: int  #: 0 real, 1 fake
    split: str  #: "train", "val", "test" or ""
    method: str
    dataset: str
    group: str  #: the split key (never empty: falls back to the source / crop stem)
    index_path: str  #: the index file this row came from
    line: int  #: its line number in that file (header = 1)
    #: x1, y1, x2, y2 of the crop that shows the original frame (crop pixels); None = the whole crop
    valid: tuple[float, float, float, float] | None = None

    @property
    def landmarks_array(self) -> np.ndarray | None:
        return None if self.landmarks is None else np.asarray(self.landmarks, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------
# reading


def _num(value: str, kind: type, *, where: str, column: str) -> Any:
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: column {column!r}: {value!r} is not a valid {kind.__name__}") from None
    if kind is float and not math.isfinite(out):
        raise ConfigError(f"{where}: column {column!r}: {value!r} is not finite")
    return out


def read_index(path: str | Path) -> list[FaceRow]:
    """Parse one face index CSV; errors (ConfigError) name the file, line and column (text that is not UTF-8 or
    not CSV included)."""
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read face index ({exc.strerror or exc})") from None
    rows: list[FaceRow] = []
    try:
        with fh:
            _read_rows(fh, path, rows)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a face index: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: not a face index: unreadable CSV ({exc})") from None
    logger.info("read %d faces from %s", len(rows), path)
    return rows


def _read_rows(fh: IO[str], path: Path, rows: list[FaceRow]) -> None:
    base = path.resolve().parent
    reader = csv.DictReader(fh)
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"{path}: not a face index: missing column(s) {', '.join(missing)}")
    has_lm = all(c in header for c in _LM_COLUMNS)
    has_valid = all(c in header for c in VALID_COLUMNS)
    for line_no, rec in enumerate(reader, start=2):
        where = f"{path}:{line_no}"
        get = lambda c: (rec.get(c) or "").strip()  # noqa: E731, B023 - called within this iteration only
        if not any(v for v in rec.values() if isinstance(v, str) and v.strip()):
            continue  # blank line
        crop = get("crop_path")
        if not crop:
            raise ConfigError(f"{where}: empty crop_path")
        label_name = get("label").lower()
        if label_name not in _LABELS:
            raise ConfigError(f"{where}: label must be 'real' or 'fake', got {get('label')!r}")
        split = get("split").lower()
        if split not in _SPLITS:
            raise ConfigError(f"{where}: split must be train, val, test or empty, got {get('split')!r}")
        box = tuple(_num(get(c), float, where=where, column=c) for c in ("x1", "y1", "x2", "y2"))
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ConfigError(f"{where}: degenerate face box {box}")
        landmarks = None
        if has_lm and all(get(c) for c in _LM_COLUMNS):
            vals = [_num(get(c), float, where=where, column=c) for c in _LM_COLUMNS]
            landmarks = tuple((vals[2 * i], vals[2 * i + 1]) for i in range(5))
        valid = None
        if has_valid and all(get(c) for c in VALID_COLUMNS):
            valid = tuple(_num(get(c), float, where=where, column=c) for c in VALID_COLUMNS)
            if not (valid[2] > valid[0] and valid[3] > valid[1]):
                raise ConfigError(f"{where}: empty valid region {valid}")
        source = get("source")
        group = get("group") or (Path(source).stem if source else Path(crop).stem)
        crop_path = Path(crop)
        rows.append(
            FaceRow(
                crop_path=str(crop_path if crop_path.is_absolute() else base / crop_path),
                source=source,
                frame_index=_num(get("frame_index") or "0", int, where=where, column="frame_index"),
                timestamp=_num(get("timestamp"), float, where=where, column="timestamp")
                if get("timestamp")
                else None,
                face_index=_num(get("face_index") or "0", int, where=where, column="face_index"),
                box=box,  # type: ignore[arg-type]
                landmarks=landmarks,
                det_prob=_num(get("det_prob") or "1", float, where=where, column="det_prob"),
                label=_LABELS[label_name],
                split=split,
                method=get("method"),
                dataset=get("dataset"),
                group=group,
                valid=valid,  # type: ignore[arg-type]
                index_path=str(path),
                line=line_no,
            )
        )


def read_indexes(paths: Sequence[str | Path]) -> list[FaceRow]:
    """All rows of several face indexes, in order."""
    rows: list[FaceRow] = []
    for p in paths:
        rows.extend(read_index(p))
    return rows


def write_index(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write index rows (dicts keyed by :data:`INDEX_COLUMNS`; missing keys empty) atomically; returns the count."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS, lineterminator="\n", extrasaction="raise")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
                n += 1
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n
