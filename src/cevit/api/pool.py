"""The bounded worker pool of the service: ``workers`` inference threads plus ``queue_size`` admitted waiters.

A request reserves a :class:`Slot` *before* its body is read and holds it while uploading, waiting and being
analysed; without a free slot the service answers 503 with ``Retry-After`` (:meth:`InferencePool.retry_after`,
an estimate from recent analysis times).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["DEFAULT_QUEUE_SIZE", "InferencePool", "Slot"]

DEFAULT_QUEUE_SIZE = 8


class Slot:
    """One admission ticket of the pool; :meth:`release` is idempotent."""

    def __init__(self, pool: InferencePool) -> None:
        self._pool = pool
        self._released = False

    def release(self) -> None:
        with self._pool._lock:
            if not self._released:
                self._released = True
                self._pool._in_flight -= 1


class InferencePool:
    """``workers`` inference threads and at most ``queue_size`` further admitted requests; ``thread_setup`` runs
    once in each inference thread when it starts (the service sets the thread's torch threads there)."""

    def __init__(self, *, workers: int, queue_size: int, thread_setup: Callable[[], None] | None = None) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cevit-infer",
                                            initializer=thread_setup)  # fmt: skip
        self._lock = threading.Lock()
        self._in_flight = 0
        self._avg_seconds = 2.0  # running estimate of one analysis, for Retry-After

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_reserve(self) -> Slot | None:
        with self._lock:
            if self._in_flight >= self.capacity:
                return None
            self._in_flight += 1
        return Slot(self)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: queued work divided over the workers."""
        with self._lock:
            waiting = max(1, self._in_flight - self.workers + 1)
            estimate = self._avg_seconds * waiting / self.workers
        return int(min(300, max(1, math.ceil(estimate))))

    def submit(self, slot: Slot, fn: Callable[[], Any], *, cleanup: Callable[[], None]) -> Future:
        """Run ``fn`` in a worker; when it finishes or is cancelled, call ``cleanup`` and free ``slot``."""

        def job() -> Any:
            t0 = time.perf_counter()
            try:
                return fn()
            finally:
                elapsed = time.perf_counter() - t0
                with self._lock:
                    self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * elapsed

        future = self._executor.submit(job)  # RuntimeError once shut down: the caller cleans up

        def done(_: Future) -> None:
            try:
                cleanup()
            finally:
                slot.release()

        future.add_done_callback(done)
        return future

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
