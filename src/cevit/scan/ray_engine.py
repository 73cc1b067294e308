"""The Ray engine: a Ray Data pipeline whose ``map_batches`` stage is a fixed pool of actors, each of which
loads the detector once and analyses batches of items with the library's batch API.

* ``address=None`` starts a local Ray cluster in this process with ``workers`` CPUs (default 2) and stops it
  at the end; ``address="auto"`` or ``"ray://host:10001"`` / ``"host:6379"`` joins an existing cluster (cevit
  must be installed on every node, and the files must be readable at the same paths there, e.g. a shared mount).
* One actor per CPU (1 CPU and 1 torch thread each); on a cluster with GPUs, one actor per GPU with
  ``num_gpus=1`` and the detector on ``cuda``.
* Items go to the actors as JSON text and rows come back as JSON text, so the only process that writes the
  output is the driver (:class:`~cevit.scan.store.ResultStore`: atomic parts, resumable); rows arrive in
  completion order.

Ray is an optional dependency (``pip install 'cevit[ray]'``); without it this engine raises
:class:`~cevit.errors.ConfigError` saying so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

from cevit.errors import CevitError, ConfigError
from cevit.scan.engines import DetectorSpec, analyze_items
from cevit.scan.rows import ScanRow
from cevit.scan.sources import ScanItem

__all__ = ["RayEngine", "DEFAULT_LOCAL_CPUS"]

log = logging.getLogger(__name__)

DEFAULT_LOCAL_CPUS = 2
_LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024  # items and rows are small JSON texts


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--engine ray needs Ray Data: pip install 'cevit[ray]' ({exc})") from None
    return ray


class _ScanActor:
    """A Ray Data actor: the detector loaded once, then batches of items analysed (runs inside Ray workers)."""

    def __init__(self, spec: DetectorSpec) -> None:
        logging.basicConfig(level=logging.WARNING)
        self.detector = spec.load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        items = [ScanItem(**json.loads(text)) for text in batch["item"]]
        rows = analyze_items(self.detector, items, engine="ray")
        return {"row": [json.dumps(row.to_json_record(), allow_nan=False) for row in rows]}


class RayEngine:
    """Analyse items on a Ray cluster (see the module docstring)."""

    name = "ray"

    def __init__(self, *, spec: DetectorSpec, address: str | None = None, workers: int | None = None,
                 batch_size: int = 4) -> None:  # fmt: skip
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.spec = spec
        self.address = address
        self.workers = workers
        self.batch_size = batch_size
        self._ray: Any = None
        self._started_cluster = False

    def _connect(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.workers or DEFAULT_LOCAL_CPUS, include_dashboard=False,
                         object_store_memory=_LOCAL_OBJECT_STORE_BYTES, log_to_driver=False,
                         configure_logging=False)  # fmt: skip
                self._started_cluster = True
            else:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the scan has its own bar
        ctx.print_on_execution_start = False
        self._ray = ray
        return ray

    def run(self, items: list[ScanItem]) -> Iterator[ScanRow]:
        if not items:
            return
        _import_ray()  # a clear error when Ray is missing, before the model is loaded
        self.spec.check()
        ray = self._connect()
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            size = self.workers or gpus
            spec = dataclasses.replace(self.spec, device="cuda" if self.spec.device == "auto" else self.spec.device)
            per_actor: dict[str, float] = {"num_gpus": 1, "num_cpus": 1}
        else:
            size = self.workers or max(1, int(resources.get("CPU", 1)))
            spec = dataclasses.replace(self.spec, threads=self.spec.threads or 1)
            per_actor = {"num_cpus": 1}
        log.info("ray: %d actor(s) on a cluster with %s", size, resources)
        records = [{"item": json.dumps(dataclasses.asdict(item))} for item in items]
        ds = ray.data.from_items(records, override_num_blocks=max(1, min(len(records), size * 4)))
        ds = ds.map_batches(
            _ScanActor, fn_constructor_kwargs={"spec": spec}, batch_size=self.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size), **per_actor,
        )  # fmt: skip
        try:
            for row in ds.iter_rows():
                yield ScanRow.from_record(json.loads(row["row"]))
        except ray.exceptions.RayError as exc:  # an actor that cannot load the model, a lost node, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CevitError(
                f"ray engine failed ({type(exc).__name__}): {first}; the rows finished so far are "
                "kept, re-run to continue"
            ) from exc

    def close(self) -> None:
        if self._ray is not None and self._started_cluster:
            self._ray.shutdown()
        self._ray = None
        self._started_cluster = False
