"""Pipelined batch analysis: what :meth:`cevit.inference.pipeline.Detector.analyze_many` runs.

Decoding and face detection of the next files overlap model scoring of the current ones, and the faces of
several files go through the model together:

* ``workers`` items are decoded, face-detected and cropped at the same time, each in a worker thread (PyAV,
  OpenCV and torch release the GIL while they work). Each item runs the same code as
  :meth:`~cevit.inference.pipeline.Detector.analyze_result`; only its call to the model is handed over.
* When an item's faces are cropped, its worker gives up its decode slot (the next item starts decoding at once)
  and waits while **one model thread** scores the crops. The model thread takes every item that is waiting and
  scores their faces in shared batches (up to ``options.batch_size`` faces per call), so files with a face or two
  each still fill the model's batches. If a shared batch fails, its items are scored one by one again, so one
  item can never fail another.
* **Bounded**: the input iterable is read lazily; at most ``max_in_flight`` items are taken from it and not yet
  yielded (items being decoded, waiting for the model, or finished and waiting for an earlier item in ordered
  mode). A folder of 10,000 files therefore holds the same few items in memory as a folder of 10; a video's
  frames are decoded in chunks as before, and only its face crops wait for the model.
* Reports come out **in input order** (default) or, with ``unordered=True``, as they finish. An error in one
  item becomes its error report (:class:`~cevit.inference.results.AnalysisError`); it never stops the others.
* **Cancellation**: when the consumer stops iterating (``close()``, ``break``, a ``KeyboardInterrupt`` while
  waiting), no further input is read, items not started are dropped, running videos stop at their next chunk of
  frames, and the threads end on their own (daemon threads: an interpreter exit never waits for them). Every
  report already yielded stays with the caller.

**Timings**: in a pipelined run an item's ``timings.model`` is the time from handing its faces over to getting
their scores back: the wait for the model thread included, shared with the other items of the same call.

**CPU threads**: each stage thread (workers and the model thread) runs torch with
``torch.get_num_threads() // (workers + 1)`` intra-op threads (at least 1), so the stages share the cores
instead of all spreading over all of them: on two cores, detection of the next file and scoring of the current
one each get one core. The caller's setting is restored when the run ends.

Threads rather than processes: the model and MTCNN weights are shared, nothing is copied between stages, and
start-up is instant; the stages that matter (video decoding, resizing, the convolutions) run outside the GIL.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cevit.errors import CevitError, ConfigError

if TYPE_CHECKING:
    import numpy as np

    from cevit.inference.aggregation import AggregationRule
    from cevit.inference.pipeline import Detector
    from cevit.inference.results import Analysis, AnalysisError

__all__ = ["BatchStats", "default_workers", "analyze_pipelined", "item_scorer"]

log = logging.getLogger(__name__)

_POLL = 0.1  # seconds between checks of the cancel flag while a thread waits
#: how long a stopped batch waits for its threads to finish their current step (an image being detected, a frame)
_JOIN_SECONDS = 60.0
THREAD_PREFIX = "cevit-batch"


def default_workers() -> int:
    """What the machine has, minus one core for the model thread; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


@dataclass(kw_only=True)
class BatchStats:
    """Instrumentation of one pipelined run, updated while it runs (read it from the consuming thread).

    ``taken``: items read from the input; ``yielded``: reports given back; ``max_in_flight``: the most items taken
    and not yet yielded at any time (never above ``limit``); ``model_calls`` / ``faces_scored``: shared scoring
    calls and the faces in them; ``max_items_per_call``: the most items whose faces shared one call.
    """

    workers: int = 0
    stage_threads: int = 0  #: torch intra-op threads of each stage thread
    limit: int = 0  #: the bound on items in flight
    taken: int = 0
    yielded: int = 0
    max_in_flight: int = 0
    model_calls: int = 0
    faces_scored: int = 0
    max_items_per_call: int = 0
    batch_sizes: list[int] = field(default_factory=list)  #: faces per model call (the first 10,000 calls)


def _set_stage_threads(n: int) -> None:
    """torch's intra-op threads for the calling stage thread (each thread keeps the value it starts with)."""
    import torch

    torch.set_num_threads(n)


class _Cancelled(Exception):
    """Raised inside a worker (from the progress callback) to stop an item when the run is cancelled."""


# -- the hand-over of an item's faces to the model thread -----------------------------------------------------
_local = threading.local()


def item_scorer() -> Callable[[list[np.ndarray]], list[float]] | None:
    """The scorer that the current thread must use for an item's faces (set in the workers of a pipelined run),
    or None outside one: :meth:`Detector._score_item` then calls ``score_faces`` directly."""
    return getattr(_local, "scorer", None)


class _Request:
    __slots__ = ("crops", "done", "scores", "error")

    def __init__(self, crops: list[np.ndarray]) -> None:
        self.crops = crops
        self.done = threading.Event()
        self.scores: list[float] | None = None
        self.error: BaseException | None = None


class _ModelThread:
    """One thread that scores the waiting items' faces together, ``max_faces`` faces per call at most."""

    def __init__(self, *, score: Callable[[list[np.ndarray]], list[float]], max_faces: int, stats: BatchStats,
                 cancel: threading.Event, threads: int) -> None:  # fmt: skip
        self._score = score
        self._threads = threads
        self._max_faces = max_faces
        self._stats = stats
        self._cancel = cancel
        self._requests: queue.Queue[_Request] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}-model", daemon=True)
        self.thread.start()

    def submit(self, crops: list[np.ndarray]) -> list[float]:
        """Score ``crops`` (called by a worker; blocks until done, raises the scoring error or _Cancelled)."""
        request = _Request(crops)
        self._requests.put(request)
        while not request.done.wait(_POLL):
            if self._cancel.is_set():
                raise _Cancelled
        if request.error is not None:
            raise request.error
        assert request.scores is not None
        return request.scores

    def _run(self) -> None:
        _set_stage_threads(self._threads)
        while not self._cancel.is_set():
            try:
                first = self._requests.get(timeout=_POLL)
            except queue.Empty:
                continue
            batch, faces = [first], len(first.crops)
            while faces < self._max_faces:  # everything already waiting joins, up to a full batch
                try:
                    request = self._requests.get_nowait()
                except queue.Empty:
                    break
                batch.append(request)
                faces += len(request.crops)
            self._serve(batch, faces)
        while True:  # cancelled: release whoever still waits
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            request.error = _Cancelled()
            request.done.set()

    def _serve(self, batch: list[_Request], faces: int) -> None:
        crops = [c for r in batch for c in r.crops]
        try:
            scores = self._score(crops)
            if len(scores) != len(crops):
                raise RuntimeError(f"the model returned {len(scores)} scores for {len(crops)} faces")
        except BaseException as exc:  # noqa: BLE001 - retried one by one below, so only a bad item fails
            if len(batch) > 1:
                log.debug("a shared model batch failed (%s); scoring its %d items one by one", exc, len(batch))
                for request in batch:
                    self._serve([request], len(request.crops))
                return
            batch[0].error = exc
            batch[0].done.set()
            return
        s = self._stats
        s.model_calls += 1
        s.faces_scored += faces
        s.max_items_per_call = max(s.max_items_per_call, len(batch))
        if len(s.batch_sizes) < 10_000:
            s.batch_sizes.append(faces)
        start = 0
        for request in batch:
            request.scores = scores[start : start + len(request.crops)]
            start += len(request.crops)
            request.done.set()


class _Slots:
    """The decode/detect slots: ``workers`` items at a time; a worker gives its slot back when it hands its faces
    to the model thread (or when the item ends)."""

    def __init__(self, workers: int, cancel: threading.Event) -> None:
        self._sem = threading.Semaphore(workers)
        self._cancel = cancel

    def acquire(self) -> bool:
        while not self._sem.acquire(timeout=_POLL):
            if self._cancel.is_set():
                return False
        return True

    def release(self) -> None:
        self._sem.release()


def analyze_pipelined(
    detector: Detector, paths: Iterable[str | Path], *, num_frames: int, rule: AggregationRule,
    progress: Callable[[int, int], None] | None = None, workers: int | None = None, unordered: bool = False,
    max_in_flight: int | None = None, stats: BatchStats | None = None,
) -> Iterator[Analysis | AnalysisError]:  # fmt: skip
    """Yield one :class:`Analysis` or :class:`AnalysisError` per path (see the module docstring).

    ``workers``: items decoded and face-detected at the same time (None: :func:`default_workers`).
    ``max_in_flight``: items taken from ``paths`` and not yet yielded (default: enough to keep every worker and
    the model busy: ``2 * workers + 2``, plus as many again in ordered mode for items finished early).
    ``progress`` is called from the worker threads, possibly for several videos at once.
    """
    from cevit.inference.results import AnalysisError

    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    waiting = workers + 2  # items that can wait for (or be in) the model at once: the batching window
    threads = workers + waiting
    if max_in_flight is None:
        max_in_flight = threads if unordered else 2 * threads
    if max_in_flight < threads:
        raise ConfigError(f"max_in_flight must be >= {threads} for {workers} worker(s), got {max_in_flight}")
    stats = stats if stats is not None else BatchStats()
    stats.workers, stats.limit = workers, max_in_flight

    cancel = threading.Event()
    tasks: queue.Queue[tuple[int, str | Path] | None] = queue.Queue()
    results: queue.Queue[tuple[int, Analysis | AnalysisError]] = queue.Queue()
    import torch

    torch_threads = torch.get_num_threads()
    stage_threads = max(1, torch_threads // (workers + 1))
    stats.stage_threads = stage_threads
    model = _ModelThread(score=detector.score_faces, max_faces=detector.options.batch_size, stats=stats,
                         cancel=cancel, threads=stage_threads)  # fmt: skip
    slots = _Slots(workers, cancel)

    def checked_progress(done: int, total: int) -> None:
        if cancel.is_set():
            raise _Cancelled
        if progress is not None:
            progress(done, total)

    def work() -> None:
        holding = [False]

        def score(crops: list[np.ndarray]) -> list[float]:
            if holding[0]:  # the item is cropped: the next one may start decoding while this one waits
                slots.release()
                holding[0] = False
            return model.submit(crops) if crops else []

        _local.scorer = score
        _set_stage_threads(stage_threads)
        while True:
            task = tasks.get()
            if task is None or cancel.is_set():
                return
            index, path = task
            if not slots.acquire():
                return
            holding[0] = True
            try:
                result: Analysis | AnalysisError = detector.analyze_result(
                    path, num_frames=num_frames, rule=rule, progress=checked_progress
                )
            except _Cancelled:
                return
            except CevitError as exc:  # the error is in the yielded report: no log record above DEBUG
                log.debug("%s", exc)
                result = AnalysisError.from_exception(str(path), exc)
            except BaseException as exc:  # noqa: BLE001 - a batch always finishes the other items; a worker that
                # died here would leave its item unanswered and the run waiting for it
                log.debug("unexpected error while analysing %s", path, exc_info=True)
                result = AnalysisError.from_exception(str(path), RuntimeError(f"{path}: internal error: {exc}"))
            finally:
                if holding[0]:
                    slots.release()
                    holding[0] = False
            results.put((index, result))

    pool = [threading.Thread(target=work, name=f"{THREAD_PREFIX}-worker-{i}", daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    source = iter(paths)
    exhausted = False
    taken = yielded = 0
    finished: dict[int, Analysis | AnalysisError] = {}
    try:
        while True:
            while not exhausted and taken - yielded < max_in_flight:
                try:
                    path = next(source)
                except StopIteration:
                    exhausted = True
                    break
                tasks.put((taken, path))
                taken += 1
                stats.taken = taken
                stats.max_in_flight = max(stats.max_in_flight, taken - yielded)
            if exhausted and yielded == taken:
                return
            try:
                index, result = results.get(timeout=_POLL)
            except queue.Empty:
                if not model.thread.is_alive():  # cannot happen short of a bug; never hang on it
                    raise RuntimeError("the model thread of the batch ended unexpectedly") from None
                continue
            if unordered:
                yielded += 1
                stats.yielded = yielded
                yield result
                continue
            finished[index] = result
            while yielded in finished:
                out = finished.pop(yielded)
                yielded += 1
                stats.yielded = yielded
                yield out
    finally:
        cancel.set()
        for _ in pool:
            tasks.put(None)
        # Wait for the threads to stop (each stops at its next check: a video frame, a model call, a new item) before
        # returning: a process that exits right after an interrupted batch (Ctrl-C, SIGTERM) must not tear the
        # interpreter down under threads still inside PyAV or torch (that aborts the process instead of exiting).
        deadline = time.monotonic() + _JOIN_SECONDS
        for t in [*pool, model.thread]:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in (*pool, model.thread) if t.is_alive()]
        if alive:
            log.warning("%d batch thread(s) still busy %.0f s after the batch stopped: %s", len(alive),
                        _JOIN_SECONDS, ", ".join(alive))  # fmt: skip
        torch.set_num_threads(torch_threads)  # the caller's setting (the stage threads changed the global)
