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

**The model thread for long-lived owners**: :class:`SharedScorer` is that model thread on its own, for a caller
that runs items in threads of its own (``cevit serve``: one scorer for the app's lifetime, its pool workers run
:meth:`~cevit.inference.pipeline.Detector.analyze_result` inside :meth:`SharedScorer.use`, so the faces of
concurrent requests share model calls). A pipelined run uses the same class, one per run.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cevit.errors import CevitError, ConfigError, ModelError

if TYPE_CHECKING:
    import numpy as np

    from cevit.inference.aggregation import AggregationRule
    from cevit.inference.pipeline import Detector
    from cevit.inference.results import Analysis, AnalysisError

__all__ = [
    "BatchStats",
    "ScorerStats",
    "SharedScorer",
    "default_workers",
    "analyze_pipelined",
    "item_scorer",
    "model_guard",
    "serving_threads",
    "set_torch_threads",
    "shared_scorer_for",
    "torch_threads",
]

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
class ScorerStats:
    """Counters of a :class:`SharedScorer`, updated by its model thread (read them from any thread).

    ``model_calls`` / ``faces_scored``: successful scoring calls and the faces in them; ``max_items_per_call`` /
    ``max_faces_per_call``: the most items (files, requests) and faces that shared one call; ``failed_calls``:
    calls that raised (a failed shared call is then retried item by item, each retry counted again).
    """

    model_calls: int = 0
    faces_scored: int = 0
    max_items_per_call: int = 0
    max_faces_per_call: int = 0
    failed_calls: int = 0
    batch_sizes: list[int] = field(default_factory=list)  #: faces per model call (the first 10,000 calls)


@dataclass(kw_only=True)
class BatchStats(ScorerStats):
    """Instrumentation of one pipelined run, updated while it runs (read it from the consuming thread).

    ``taken``: items read from the input; ``yielded``: reports given back; ``max_in_flight``: the most items taken
    and not yet yielded at any time (never above ``limit``); the model thread's counters: :class:`ScorerStats`.
    """

    workers: int = 0
    stage_threads: int = 0  #: torch intra-op threads of each stage thread
    limit: int = 0  #: the bound on items in flight
    taken: int = 0
    yielded: int = 0
    max_in_flight: int = 0


def torch_threads() -> int:
    """torch's intra-op threads as the calling thread sees them."""
    import torch

    return torch.get_num_threads()


def set_torch_threads(n: int) -> None:
    """torch's intra-op threads for the calling stage thread (each thread keeps the value it starts with)."""
    import torch

    torch.set_num_threads(n)


def serving_threads(workers: int) -> int:
    """torch intra-op threads for each thread of a service with ``workers`` worker threads and one
    :class:`SharedScorer`: the calling thread's count shared over ``workers + 1`` threads (at least 1), as in a
    pipelined run; with one worker, all of them, because that worker waits while the model thread scores its
    faces (the two never compute at the same time)."""
    total = torch_threads()
    return total if workers <= 1 else max(1, total // (workers + 1))


class _Cancelled(Exception):
    """Raised inside a worker (from the progress callback) to stop an item when the run is cancelled."""


# -- the hand-over of an item's faces to the model thread -----------------------------------------------------
_local = threading.local()


def item_scorer() -> Callable[[list[np.ndarray]], list[float]] | None:
    """The scorer that the current thread must use for an item's faces (set by :meth:`SharedScorer.use`: in the
    workers of a pipelined run and of ``cevit serve``), or None outside one: :meth:`Detector._score_item` then
    calls ``score_faces`` directly."""
    return getattr(_local, "scorer", None)


def model_guard() -> AbstractContextManager[object]:
    """Hold it while the current thread runs the model itself (the gradient passes of explanations): inside
    :meth:`SharedScorer.use` it is that scorer's :meth:`~SharedScorer.exclusive` lock, so no shared call runs
    through the same model at the same time (Grad-CAM hooks and the attention maps kept for rollout live on the
    model's modules: a concurrent forward pass would overwrite them); elsewhere it does nothing."""
    owner: SharedScorer | None = getattr(_local, "owner", None)
    return nullcontext() if owner is None else owner.exclusive()


class _Request:
    __slots__ = ("crops", "done", "scores", "error")

    def __init__(self, crops: list[np.ndarray]) -> None:
        self.crops = crops
        self.done = threading.Event()
        self.scores: list[float] | None = None
        self.error: BaseException | None = None


class SharedScorer:
    """One model thread that scores the faces of items analysed in other threads, several items per call.

    Items hand their face crops over with :meth:`submit` (or, inside :meth:`use`, through
    :meth:`Detector._score_item <cevit.inference.pipeline.Detector._score_item>`) and wait. The model thread takes
    every request that is waiting and scores their faces together, ``max_faces`` faces per call at most. If a
    shared call fails, its items are scored one by one again, so one item's faces can never fail another item.

    Args:
        score: faces -> P(fake) per face (:meth:`Detector.score_faces <cevit.inference.pipeline.Detector.score_faces>`).
        max_faces: the most faces in one call: the call takes waiting items' faces up to it, and an item with more
            faces hands them over in parts of this size (see :meth:`submit`).
        threads: torch intra-op threads of the model thread (None: torch's default for a new thread).
        stats: counters to update (default: a fresh :class:`ScorerStats`, see :attr:`stats`).
        name: the thread's name.
        stop: an event that stops the thread when set, as :meth:`close` does (a pipelined run's cancel flag).

    Lifecycle: :meth:`start` starts the thread; :meth:`close` stops it (waiters and later submits get a
    :class:`~cevit.errors.ModelError`), waits a bounded time for a call in progress, and may be called any number
    of times; a closed scorer cannot be started again. Also a context manager (start ... close).
    """

    def __init__(
        self, *, score: Callable[[list[np.ndarray]], list[float]], max_faces: int, threads: int | None = None,
        stats: ScorerStats | None = None, name: str = "cevit-model", stop: threading.Event | None = None,
    ) -> None:  # fmt: skip
        if isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 1:
            raise ConfigError(f"max_faces must be an integer >= 1, got {max_faces!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be an integer >= 1 or None, got {threads!r}")
        self._score = score
        self._threads = threads
        self._max_faces = max_faces
        self._stats = stats if stats is not None else ScorerStats()
        self._stop = stop if stop is not None else threading.Event()
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._model_lock = threading.Lock()  # held during every call of the model thread (see exclusive())
        self._state_lock = threading.Lock()
        self._started = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def stats(self) -> ScorerStats:
        return self._stats

    @property
    def threads(self) -> int | None:
        """torch intra-op threads of the model thread (None: not set)."""
        return self._threads

    @property
    def pending(self) -> int:
        """Requests waiting for the model thread (not counting those of the call in progress)."""
        return self._requests.qsize()

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self._stop.is_set()

    def start(self) -> SharedScorer:
        """Start the model thread (once; later calls do nothing). Returns self."""
        with self._state_lock:
            if not self._started:
                self._started = True
                self.thread.start()
        return self

    def close(self, timeout: float = _JOIN_SECONDS) -> bool:
        """Stop the model thread: requests still waiting get a :class:`~cevit.errors.ModelError`, and so does any
        later :meth:`submit`. Waits up to ``timeout`` seconds for the call in progress to end. Returns whether the
        thread has ended (always True for a scorer never started)."""
        self._stop.set()
        with self._state_lock:
            started = self._started
            self._started = True  # a closed scorer is never started
        if started and self.thread is not threading.current_thread():
            self.thread.join(timeout)
            if self.thread.is_alive():
                log.warning("the model thread %s is still busy %.0f s after close()", self.thread.name, timeout)
                return False
        self._release_waiting()
        return True

    def __enter__(self) -> SharedScorer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _closed_error(self) -> BaseException:
        return ModelError("the shared model thread was closed before these faces were scored")

    def submit(self, crops: list[np.ndarray]) -> list[float]:
        """Score ``crops`` in the model thread, together with whatever else is waiting; blocks until done and
        raises the scoring error of these faces, or ModelError when the scorer is closed or was never started.

        More than ``max_faces`` faces are handed over ``max_faces`` at a time, each part queued after the previous
        one is scored: the parts take turns with the other items' faces instead of holding the model thread for
        the whole item (a long video cannot stall the small requests of a service behind it)."""
        scores: list[float] = []
        for start in range(0, len(crops), self._max_faces):
            scores.extend(self._submit_part(crops[start : start + self._max_faces]))
        return scores

    def _submit_part(self, crops: list[np.ndarray]) -> list[float]:
        if not self._started or self._stop.is_set():
            raise self._closed_error()
        request = _Request(crops)
        self._requests.put(request)
        while not request.done.wait(_POLL):
            if self._stop.is_set() or not self.thread.is_alive():
                raise self._closed_error()
        if request.error is not None:
            raise request.error
        assert request.scores is not None
        return request.scores

    @contextmanager
    def use(self, *, on_handover: Callable[[], None] | None = None) -> Iterator[SharedScorer]:
        """Make this scorer the calling thread's :func:`item_scorer` (and :func:`model_guard`) while the block
        runs: a :meth:`~cevit.inference.pipeline.Detector.analyze_result` called inside it hands its faces to the
        model thread. ``on_handover`` is called in the calling thread each time an item hands its faces over,
        before it waits (a pipelined run frees the item's decode slot there). The previous setting is restored."""

        def score(crops: list[np.ndarray]) -> list[float]:
            if on_handover is not None:
                on_handover()
            return self.submit(crops) if crops else []

        previous = getattr(_local, "scorer", None), getattr(_local, "owner", None)
        _local.scorer, _local.owner = score, self
        try:
            yield self
        finally:
            _local.scorer, _local.owner = previous

    def exclusive(self) -> AbstractContextManager[object]:
        """A lock that the model thread holds during each call: holding it keeps the model to oneself."""
        return self._model_lock

    def _run(self) -> None:
        if self._threads is not None:
            set_torch_threads(self._threads)
        try:
            while not self._stop.is_set():
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
        finally:
            self._release_waiting()

    def _release_waiting(self) -> None:
        """Stopped: release whoever still waits (with the closed error)."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            request.error = self._closed_error()
            request.done.set()

    def _serve(self, batch: list[_Request], faces: int) -> None:
        crops = [c for r in batch for c in r.crops]
        try:
            with self._model_lock:
                scores = self._score(crops)
            if len(scores) != len(crops):
                raise RuntimeError(f"the model returned {len(scores)} scores for {len(crops)} faces")
        except BaseException as exc:  # noqa: BLE001 - retried one by one below, so only a bad item fails
            self._stats.failed_calls += 1
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
        s.max_faces_per_call = max(s.max_faces_per_call, faces)
        if len(s.batch_sizes) < 10_000:
            s.batch_sizes.append(faces)
        start = 0
        for request in batch:
            request.scores = scores[start : start + len(request.crops)]
            start += len(request.crops)
            request.done.set()


class _ModelThread(SharedScorer):
    """The model thread of one pipelined run: started at once, stopped by the run's cancel flag; a worker that
    waits when the run is cancelled gets ``_Cancelled`` (it then just ends)."""

    def __init__(self, *, score: Callable[[list[np.ndarray]], list[float]], max_faces: int, stats: BatchStats,
                 cancel: threading.Event, threads: int) -> None:  # fmt: skip
        super().__init__(score=score, max_faces=max_faces, threads=threads, stats=stats, stop=cancel,
                         name=f"{THREAD_PREFIX}-model")  # fmt: skip
        self.start()

    def _closed_error(self) -> BaseException:
        return _Cancelled()


def shared_scorer_for(detector: object, *, workers: int, stats: ScorerStats | None = None) -> SharedScorer | None:
    """A (not yet started) :class:`SharedScorer` for a service whose ``workers`` threads analyse items with
    ``detector``: it scores with ``detector.score_faces``, ``options.batch_size`` faces per call, its model thread
    with :func:`serving_threads` torch threads (``scorer.threads``; give the worker threads the same). None when
    ``detector`` is not a :class:`~cevit.inference.pipeline.Detector` (a fake, or another implementation of the
    protocol: it scores its items itself), and None for one worker: one request at a time has nobody to share a
    model call with, and the hand-over to the model thread cost about 10 % of the throughput (``benchmarks/load.py
    --workers 1``, bundled weights, idle 2-core machine: 5.0-5.1 against 5.5-5.9 requests/s without it)."""
    pipeline = sys.modules.get("cevit.inference.pipeline")  # never imported: no Detector exists (spares torch)
    if workers < 2 or pipeline is None or not isinstance(detector, pipeline.Detector):
        return None
    return SharedScorer(score=detector.score_faces, max_faces=detector.options.batch_size,
                        threads=serving_threads(workers), stats=stats)  # fmt: skip


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
    caller_threads = torch_threads()
    stage_threads = max(1, caller_threads // (workers + 1))
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

        def handover() -> None:
            if holding[0]:  # the item is cropped: the next one may start decoding while this one waits
                slots.release()
                holding[0] = False

        with model.use(on_handover=handover):
            work_items(holding)

    def work_items(holding: list[bool]) -> None:
        set_torch_threads(stage_threads)
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
        set_torch_threads(caller_threads)  # the caller's setting (the stage threads changed the global)
