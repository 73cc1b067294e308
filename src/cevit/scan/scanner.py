"""``run_scan``: expand the sources, skip what the output already holds, analyse the rest on an engine, write
rows in atomic parts, and summarise.

>>> from cevit.scan import ScanConfig, DetectorSpec, run_scan
>>> summary = run_scan(ScanConfig(sources=("archive/",), output="results"), spec=DetectorSpec())
>>> summary.scanned, summary.errors, summary.items_per_second

Ctrl-C (KeyboardInterrupt) commits the rows already finished, releases the output and returns a summary with
``interrupted=True``; an exception does the same and propagates. Re-running the same call continues where it
stopped. SIGKILL loses at most the rows of the part in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cevit.errors import ConfigError
from cevit.scan.engines import ENGINES, DetectorSpec, Engine, make_engine
from cevit.scan.rows import ScanRow
from cevit.scan.sources import collect_items
from cevit.scan.store import FORMATS, ResultStore, read_records

__all__ = ["ScanConfig", "ScanSummary", "SuspiciousItem", "run_scan", "summarize_output"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class ScanConfig:
    """What to scan, where to write, how (see ``cevit scan --help`` for each setting)."""

    sources: tuple[str, ...]
    output: str | Path
    formats: tuple[str, ...] = ("parquet",)
    engine: str = "local"
    address: str | None = None  # ray: an existing cluster (None: a local one)
    workers: int | None = None  # ray: actors
    batch_size: int = 4  # ray: items per actor call
    use_hash: bool = False
    retry_failed: bool = False
    part_size: int = 100
    flush_seconds: float = 60.0
    top: int = 10

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("scan needs at least one source (a folder, glob pattern or manifest)")
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; use one of {', '.join(ENGINES)}")
        if not self.formats or any(f not in FORMATS for f in self.formats):
            raise ConfigError(f"formats must be among {FORMATS}, got {self.formats}")
        if self.address is not None and self.engine != "ray":
            raise ConfigError("--address joins a Ray cluster: it needs --engine ray")
        if self.part_size < 1 or self.flush_seconds <= 0 or self.top < 0 or self.batch_size < 1:
            raise ConfigError("part size and batch size must be >= 1, flush seconds > 0, top >= 0")


@dataclass(frozen=True, kw_only=True)
class SuspiciousItem:
    id: str
    source: str
    score: float
    prediction: str


@dataclass(frozen=True, kw_only=True)
class ScanSummary:
    """This run (``found``, ``skipped``, ``scanned``, ``errors`` of this run, ``seconds``, ``items_per_second``)
    and the whole output (``rows`` and the counts by outcome, ``most_suspicious`` first)."""

    output: str
    engine: str
    found: int
    skipped: int
    scanned: int
    errors: int
    seconds: float
    items_per_second: float
    rows: int
    ok: int
    no_face: int
    failed: int
    fake: int
    most_suspicious: tuple[SuspiciousItem, ...] = field(default_factory=tuple)
    #: the first error messages of this run (at most ``ScanConfig.top``)
    error_messages: tuple[str, ...] = ()
    interrupted: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def summarize_output(folder: str | Path, *, top: int = 10) -> dict[str, object]:
    """Counts over every row of an output folder and its ``top`` most suspicious items (highest score)."""
    counts = {"rows": 0, "ok": 0, "no_face": 0, "failed": 0, "fake": 0}
    best: list[SuspiciousItem] = []
    for r in read_records(folder, ["id", "source", "status", "prediction", "score"]):
        counts["rows"] += 1
        status = r["status"]
        if status == "error":
            counts["failed"] += 1
        elif status == "no_face":
            counts["no_face"] += 1
        else:
            counts["ok"] += 1
            counts["fake"] += r["prediction"] == "FAKE"
            best.append(SuspiciousItem(id=r["id"], source=r["source"], score=float(r["score"]),
                                       prediction=r["prediction"]))  # fmt: skip
            if len(best) > 4 * max(top, 1):
                best = sorted(best, key=lambda s: -s.score)[:top]
    best = sorted(best, key=lambda s: -s.score)[:top]
    return {**counts, "most_suspicious": tuple(best)}


def run_scan(
    config: ScanConfig, *, spec: DetectorSpec, engine: Engine | None = None, progress: Progress | None = None
) -> ScanSummary:  # fmt: skip
    """Scan ``config.sources`` into ``config.output`` (see the module docstring).

    ``progress(done, total)`` is called after each item of this run. Raises
    :class:`~cevit.errors.ConfigError` for a bad configuration, a malformed manifest or an output folder
    that another scan holds; bad items become error rows.
    """
    start = time.perf_counter()
    store = ResultStore(folder=config.output, formats=config.formats, part_size=config.part_size,
                        flush_seconds=config.flush_seconds)  # fmt: skip
    engine = engine or make_engine(config.engine, spec=spec, address=config.address, workers=config.workers,
                                   batch_size=config.batch_size)  # fmt: skip
    scanned = errors = 0
    messages: list[str] = []
    interrupted = False
    index = store.open()
    try:
        items, source_errors = collect_items(config.sources, use_hash=config.use_hash)
        pending = [it for it in items if not index.is_done(it.key, retry_failed=config.retry_failed)]
        found = len(items) + len(source_errors)
        log.info("scan: %d item(s) found, %d already in %s", len(items), len(items) - len(pending), config.output)
        for error in source_errors:
            row = ScanRow.for_source_error(error, engine=engine.name)
            if not index.is_done(row.key, retry_failed=config.retry_failed):
                store.add(row)
                errors += 1
                messages.append(row.error or "")
        skipped = len(items) - len(pending)
        total = len(pending)
        if progress is not None:
            progress(0, total)
        try:
            for row in engine.run(pending):
                store.add(row)
                scanned += 1
                if row.status == "error":
                    errors += 1
                    if len(messages) < config.top:
                        messages.append(row.error or "")
                if progress is not None:
                    progress(scanned, total)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("scan interrupted: %d row(s) of this run kept in %s; re-run to continue", scanned,
                        config.output)  # fmt: skip
        finally:
            engine.close()
    finally:
        store.close()
    seconds = time.perf_counter() - start
    totals = summarize_output(config.output, top=config.top)
    summary = ScanSummary(
        output=str(config.output), engine=engine.name, found=found, skipped=skipped, scanned=scanned, errors=errors,
        seconds=round(seconds, 3), items_per_second=round(scanned / seconds, 3) if seconds > 0 else 0.0,
        interrupted=interrupted, error_messages=tuple(messages[: config.top]), **totals,
    )  # fmt: skip
    store.write_summary(summary.to_dict())
    return summary
