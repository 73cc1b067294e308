"""Resumable scans of large collections (``cevit scan``): sources, output store, engines.

* :mod:`cevit.scan.sources` — folders, glob patterns and CSV/JSONL manifests → :class:`ScanItem` with a resume key;
* :mod:`cevit.scan.rows` — one :class:`ScanRow` per item and the Parquet schema;
* :mod:`cevit.scan.store` — the output folder: atomic parts, resume index, compaction;
* :mod:`cevit.scan.engines` / :mod:`cevit.scan.ray_engine` — the local engine and the Ray Data actor pool;
* :mod:`cevit.scan.scanner` — :func:`run_scan`, which ties them together.

Nothing heavy is imported here: torch, pyarrow and ray are imported when a scan needs them.
"""

from cevit.scan.engines import DetectorSpec, LocalEngine
from cevit.scan.rows import COLUMNS, ScanRow, arrow_schema
from cevit.scan.scanner import ScanConfig, ScanSummary, run_scan, summarize_output
from cevit.scan.sources import ScanItem, collect_items, read_manifest
from cevit.scan.store import ResultStore, read_records

__all__ = [
    "COLUMNS",
    "DetectorSpec",
    "LocalEngine",
    "ResultStore",
    "ScanConfig",
    "ScanItem",
    "ScanRow",
    "ScanSummary",
    "arrow_schema",
    "collect_items",
    "read_manifest",
    "read_records",
    "run_scan",
    "summarize_output",
]
