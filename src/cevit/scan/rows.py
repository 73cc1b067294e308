"""One row of scan output per item (:class:`ScanRow`) and its Parquet schema (:func:`arrow_schema`).

Columns (the order of :data:`COLUMNS`; every column nullable unless said otherwise):

==================  ===================================  =========================================================
column              type                                 meaning
==================  ===================================  =========================================================
id                  string, not null                     the manifest's id, else the path as given
source              string, not null                     the file's path as given (manifest paths: joined to its folder)
key                 string, not null                     the resume key: ``ABS_PATH|SIZE|MTIME_NS`` or ``sha256:HEX``
label               string                               the manifest's label (ground truth, if known)
size                int64                                bytes
mtime_ns            int64                                modification time, ns since the epoch
sha256              string                               content hash (``--hash`` only)
status              string, not null                     ``ok`` (faces found), ``no_face`` or ``error``
media_type          string                               ``image`` or ``video``
prediction          string                               ``REAL`` / ``FAKE`` (a ``no_face`` row: the no-face rule's
                                                         REAL, which is not a clearance)
score               float64                              final P(fake); null without a face or on error
confidence          float64                              confidence of the prediction
note                string                               the verdict's explanation
error               string                               one-line error naming the file (status ``error``)
error_type          string                               the exception class, e.g. ``MediaError``
model               string                               the weights tag (e.g. ``cross_efficient_vit_v1_224.lfw_sbi_v2``)
model_sha256        string                               SHA-256 of the checkpoint
width, height       int32                                pixels (videos: of the frames)
num_faces           int32                                faces scored
frames_failed       int32                                videos: sampled frames that could not be decoded
processing_time     float64                              seconds for this item (the report's ``timings.total``)
timings             struct<decode, detect, preprocess,   seconds per stage
                    model, total: float64>
faces               list<struct<frame_index, face_index: every scored face (the JSON report's ``faces``)
                    int32, box: list<float64>, landmarks:
                    list<list<float64>>, detection_
                    probability, score: float64>>
frames              list<struct<index: int64, timestamp, per sampled video frame (empty for images)
                    score: float64, prediction: string,
                    num_faces: int32>>
engine              string                               ``local`` or ``ray``
worker              string                               host:pid that analysed the item
scanned_at          timestamp[ms, UTC]                   when the row was made
==================  ===================================  =========================================================

The JSON Lines output holds the same keys per line (``scanned_at`` as ISO 8601 text).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cevit.inference.results import Analysis, AnalysisError, Face, FrameResult
from cevit.scan.sources import ScanItem, SourceError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["COLUMNS", "ScanRow", "arrow_schema", "worker_name"]

COLUMNS = (
    "id", "source", "key", "label", "size", "mtime_ns", "sha256", "status", "media_type", "prediction", "score",
    "confidence", "note", "error", "error_type", "model", "model_sha256", "width", "height", "num_faces",
    "frames_failed", "processing_time", "timings", "faces", "frames", "engine", "worker", "scanned_at",
)  # fmt: skip
TIMING_FIELDS = ("decode", "detect", "preprocess", "model", "total")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def arrow_schema() -> pa.Schema:
    """The Parquet schema of the scan output (see the module docstring)."""
    import pyarrow as pa

    f64, i32, s = pa.float64(), pa.int32(), pa.string()
    face = pa.struct([("frame_index", i32), ("face_index", i32), ("box", pa.list_(f64)),
                      ("landmarks", pa.list_(pa.list_(f64))), ("detection_probability", f64), ("score", f64)])  # fmt: skip
    frame = pa.struct([("index", pa.int64()), ("timestamp", f64), ("score", f64), ("prediction", s),
                       ("num_faces", i32)])  # fmt: skip
    types = {
        "id": s, "source": s, "key": s, "label": s, "size": pa.int64(), "mtime_ns": pa.int64(), "sha256": s,
        "status": s, "media_type": s, "prediction": s, "score": f64, "confidence": f64, "note": s, "error": s,
        "error_type": s, "model": s, "model_sha256": s, "width": i32, "height": i32, "num_faces": i32,
        "frames_failed": i32, "processing_time": f64, "timings": pa.struct([(k, f64) for k in TIMING_FIELDS]),
        "faces": pa.list_(face), "frames": pa.list_(frame), "engine": s, "worker": s,
        "scanned_at": pa.timestamp("ms", tz="UTC"),
    }  # fmt: skip
    required = {"id", "source", "key", "status"}
    return pa.schema([pa.field(name, types[name], nullable=name not in required) for name in COLUMNS])


@dataclass(frozen=True, kw_only=True)
class ScanRow:
    """The output row of one item; build it with :meth:`from_result` or :meth:`for_source_error`."""

    id: str
    source: str
    key: str
    status: str
    label: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    media_type: str | None = None
    prediction: str | None = None
    score: float | None = None
    confidence: float | None = None
    note: str | None = None
    error: str | None = None
    error_type: str | None = None
    model: str | None = None
    model_sha256: str | None = None
    width: int | None = None
    height: int | None = None
    frames_failed: int | None = None
    processing_time: float | None = None
    timings: Mapping[str, float] | None = None
    faces: tuple[Face, ...] = ()
    frames: tuple[FrameResult, ...] = ()
    engine: str | None = None
    worker: str | None = None
    scanned_at: dt.datetime | None = None

    @property
    def num_faces(self) -> int | None:
        return None if self.status == "error" else len(self.faces)

    @classmethod
    def from_result(
        cls, item: ScanItem, result: Analysis | AnalysisError, *, model: str | None, model_sha256: str | None,
        engine: str,
    ) -> ScanRow:  # fmt: skip
        common: dict[str, Any] = dict(
            id=item.id, source=item.path, key=item.key, label=item.label, size=item.size, mtime_ns=item.mtime_ns,
            sha256=item.sha256, model=model, model_sha256=model_sha256, engine=engine, worker=worker_name(),
            scanned_at=dt.datetime.now(dt.UTC),
        )  # fmt: skip
        if isinstance(result, AnalysisError):
            return cls(status="error", error=result.error, error_type=result.error_type, **common)
        timings = result.timings.to_dict()
        return cls(
            status=result.status, media_type=result.media_type, prediction=result.prediction, score=result.score,
            confidence=result.confidence, note=result.note, width=result.width, height=result.height,
            frames_failed=result.frames_failed, processing_time=result.timings.total,
            timings={k: timings[k] for k in TIMING_FIELDS}, faces=result.faces, frames=result.frames, **common,
        )  # fmt: skip

    @classmethod
    def for_source_error(cls, error: SourceError, *, engine: str) -> ScanRow:
        """The row of a source argument that gave no item (keyed by the argument, so it is written once)."""
        return cls(id=error.source, source=error.source, key=f"source:{error.source}", status="error",
                   error=error.error, error_type=error.error_type, engine=engine, worker=worker_name(),
                   scanned_at=dt.datetime.now(dt.UTC))  # fmt: skip

    # -- records: what the store writes ---------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """The row as a dict of :data:`COLUMNS` (``scanned_at`` a datetime; faces and frames lists of dicts)."""
        record = {name: getattr(self, name) for name in COLUMNS if name not in ("faces", "frames", "timings")}
        record["timings"] = None if self.timings is None else {k: float(self.timings[k]) for k in TIMING_FIELDS}
        record["faces"] = [f.to_dict() for f in self.faces]
        record["frames"] = [f.to_dict() for f in self.frames]
        record["num_faces"] = self.num_faces
        return {name: record[name] for name in COLUMNS}

    def to_json_record(self) -> dict[str, Any]:
        """:meth:`to_record` with ``scanned_at`` as ISO 8601 text (JSON Lines)."""
        record = self.to_record()
        if record["scanned_at"] is not None:
            record["scanned_at"] = record["scanned_at"].isoformat(timespec="milliseconds")
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ScanRow:
        """Read a record back (from :meth:`to_record`, :meth:`to_json_record` or a Parquet row)."""
        values = {k: record.get(k) for k in COLUMNS if k not in ("faces", "frames", "num_faces", "scanned_at")}
        scanned = record.get("scanned_at")
        if isinstance(scanned, str):
            scanned = dt.datetime.fromisoformat(scanned)
        values["faces"] = tuple(Face.from_dict(f) for f in record.get("faces") or ())
        values["frames"] = tuple(FrameResult.from_dict(f) for f in record.get("frames") or ())
        return cls(scanned_at=scanned, **values)
