"""Engines that turn scan items into rows: :class:`LocalEngine` (this process) and, in
:mod:`cevit.scan.ray_engine`, :class:`~cevit.scan.ray_engine.RayEngine` (an actor pool on a Ray cluster).

Both run :func:`analyze_items`, which hands the whole list of paths to the library's batch API
(:meth:`Detector.analyze_many_results <cevit.inference.pipeline.Detector.analyze_many_results>`), so the scan
gets whatever that API does to keep the hardware busy. Results are matched back to items by their source
path, not by position, so a batch API that yields in completion order works as well.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cevit.inference.results import AnalysisError
from cevit.scan.rows import ScanRow
from cevit.scan.sources import ScanItem

if TYPE_CHECKING:
    from cevit.inference.pipeline import Detector

__all__ = ["DetectorSpec", "Engine", "LocalEngine", "analyze_items", "make_engine", "ENGINES"]

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass(frozen=True, kw_only=True)
class DetectorSpec:
    """How to load the detector: the arguments of :func:`cevit.load_model`, picklable so that workers on other
    machines can load the same model once each. ``threads``: torch intra-op threads (None: torch's default)."""

    model: str | None = None
    weights: str | None = None
    device: str = "auto"
    num_frames: int = 30
    rule: str | None = None
    threshold: float | None = None
    threads: int | None = None
    precision: str = "fp32"  #: the model's arithmetic (see :func:`cevit.inference.pipeline.resolve_precision`)

    def load(self) -> Detector:
        from cevit.inference.pipeline import load_model

        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        return load_model(self.model, weights=self.weights, device=self.device, num_frames=self.num_frames,
                          rule=self.rule, threshold=self.threshold, precision=self.precision)  # fmt: skip

    def check(self) -> None:
        """Load the detector once here, on the CPU, and drop it: a wrong ``weights`` / ``model`` fails with its
        CheckpointError / ModelError before any remote worker starts (a worker failing to load would be retried)."""
        import dataclasses

        dataclasses.replace(self, device="cpu", threads=None, precision="fp32").load()


def model_tag(detector: Detector) -> tuple[str | None, str | None]:
    """``(weights tag or name, checkpoint SHA-256)`` of a loaded detector, for the output's model columns."""
    info = detector.model_info
    return info.get("weights_tag") or info.get("name"), info.get("checkpoint_sha256")


def analyze_items(detector: Detector, items: list[ScanItem], *, engine: str) -> Iterator[ScanRow]:
    """One row per item, in the order the batch API yields them; an item that fails gets an error row."""
    tag, sha = model_tag(detector)
    by_source = {item.path: item for item in items}
    seen: set[str] = set()
    for result in detector.analyze_many_results([Path(item.path) for item in items]):
        item = by_source.get(result.source)
        if item is None or result.source in seen:  # cannot happen with the library's API; never write a stray row
            log.warning("scan: result for unexpected source %s ignored", result.source)
            continue
        seen.add(result.source)
        yield ScanRow.from_result(item, result, model=tag, model_sha256=sha, engine=engine)
    for item in items:  # an item the batch API skipped must not vanish silently
        if item.path not in seen:
            error = AnalysisError(source=item.path, error=f"{item.path}: no result from the analysis",
                                  error_type="RuntimeError")  # fmt: skip
            yield ScanRow.from_result(item, error, model=tag, model_sha256=sha, engine=engine)


class Engine(Protocol):
    """Runs items through the detector; ``run`` yields one row per item, in any order."""

    name: str

    def run(self, items: list[ScanItem]) -> Iterator[ScanRow]: ...

    def close(self) -> None: ...


class LocalEngine:
    """The detector in this process, loaded on the first item (a scan with nothing left to do loads nothing).
    All items go to the batch API in one call; rows reach the output store as the API yields them.
    ``detector``: an already loaded detector to use instead of loading ``spec``'s."""

    name = "local"

    def __init__(self, *, spec: DetectorSpec | None = None, detector: Detector | None = None) -> None:
        if spec is None and detector is None:
            raise ValueError("LocalEngine needs a DetectorSpec or a loaded Detector")
        self.spec = spec or DetectorSpec()
        self._detector = detector

    def run(self, items: list[ScanItem]) -> Iterator[ScanRow]:
        if not items:
            return
        if self._detector is None:
            self._detector = self.spec.load()
        yield from analyze_items(self._detector, items, engine=self.name)

    def close(self) -> None:
        """Nothing to release: the detector lives as long as the engine (a second run reuses it)."""


def make_engine(name: str, *, spec: DetectorSpec, address: str | None = None, workers: int | None = None,
                batch_size: int = 4) -> Engine:  # fmt: skip
    """``local`` or ``ray`` (``address``: an existing cluster; ``workers``: actors, default one per CPU of a
    local cluster / per GPU of a cluster with GPUs)."""
    from cevit.errors import ConfigError

    if name == "local":
        return LocalEngine(spec=spec)
    if name == "ray":
        from cevit.scan.ray_engine import RayEngine

        return RayEngine(spec=spec, address=address, workers=workers, batch_size=batch_size)
    raise ConfigError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
