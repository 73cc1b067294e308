"""Pipelined batch analysis (cevit.inference.batch): order, completeness, error isolation, bounded work, cancellation.

Every wait is on a condition with a deadline; nothing asserts on timing.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from cevit.errors import ConfigError
from cevit.inference.batch import THREAD_PREFIX, BatchStats, _ModelThread, default_workers
from cevit.inference.pipeline import load_model
from conftest import SAMPLE_FACE, write_test_video

DEADLINE = 120.0  # only caps a hang on a loaded machine


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    return load_model(weights=tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory, face_rgb):
    """Generated inputs: photos with the sample face at several sizes, photos without faces, a short video,
    and a corrupt file."""
    root = tmp_path_factory.mktemp("batch")
    paths = []
    for i, size in enumerate((512, 300, 420)):
        p = root / f"face_{i}.jpg"
        Image.fromarray(face_rgb).resize((size, size)).save(p)
        paths.append(p)
    for i in range(3):
        p = root / f"blank_{i}.png"
        Image.fromarray(np.full((64 + 8 * i, 80, 3), 40 * i, np.uint8)).save(p)
        paths.append(p)
    blank = np.full_like(face_rgb, 90)
    paths.append(write_test_video(root / "clip.mp4", [face_rgb, blank, face_rgb, blank]))
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(SAMPLE_FACE.read_bytes()[:600])  # a truncated JPEG
    return {"faces": paths[:3], "blank": paths[3:6], "video": paths[6], "corrupt": corrupt}


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in time")
        time.sleep(0.01)


def _batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def _strip(report: dict) -> dict:
    report = dict(report)
    report.pop("processing_time", None)
    report.pop("timings", None)
    return report


def test_default_workers_leaves_a_core_for_the_model():
    assert default_workers() >= 1


def test_ordered_reports_match_the_sequential_loop(detector, media):
    paths = [media["faces"][0], media["blank"][0], media["video"], media["corrupt"], media["faces"][1],
             media["blank"][1], media["faces"][2]]  # fmt: skip
    stats = BatchStats()
    pipelined = list(detector.analyze_many(paths, workers=2, stats=stats))
    sequential = list(detector.analyze_many(paths, workers=0))
    assert [r["source"] for r in pipelined] == [str(p) for p in paths]  # input order
    for a, b in zip(pipelined, sequential):
        a, b = _strip(a), _strip(b)
        if "faces" in a:  # faces scored in shared batches: equal up to float rounding of other batch sizes
            assert [f["score"] for f in a["faces"]] == pytest.approx([f["score"] for f in b["faces"]], abs=1e-5)
            a.pop("faces"), b.pop("faces")
            for key in ("score", "confidence"):
                assert a.pop(key) == pytest.approx(b.pop(key), abs=1e-5)
            for r in (a, b):
                for fp in r.get("frame_predictions", []):
                    fp["score"] = None if fp["score"] is None else round(fp["score"], 4)
                r.get("metrics", {}).pop("final_average_score", None)
        assert a == b
    assert "error" in pipelined[3] and "corrupt.jpg" in pipelined[3]["error"]
    assert stats.taken == stats.yielded == len(paths) and stats.faces_scored == 3 + 2  # photos + video frames


def test_faces_of_several_files_share_model_calls(detector, media, monkeypatch):
    """While the model is busy, the faces of every item that finished detecting wait and then go in together; one
    decode slot is enough, because a worker gives its slot back when it hands its faces over."""
    gate = threading.Event()
    original = detector.score_faces
    calls = []
    submitted = []
    original_submit = _ModelThread.submit

    def submit(self, crops):
        submitted.append(len(crops))
        return original_submit(self, crops)

    def score(crops):
        calls.append(len(crops))
        if len(calls) == 1:  # hold the first call until the other items have queued their faces
            assert gate.wait(DEADLINE)
        return original(crops)

    monkeypatch.setattr(_ModelThread, "submit", submit)
    monkeypatch.setattr(detector, "score_faces", score)
    stats = BatchStats()
    paths = [media["faces"][i % 3] for i in range(4)]
    collected: list = []
    consumer = threading.Thread(
        target=lambda: collected.extend(detector.analyze_many_results(paths, workers=1, stats=stats))
    )
    consumer.start()
    _wait_until(lambda: len(submitted) == 4, "all four items waiting for the model")
    gate.set()
    consumer.join(DEADLINE)
    assert len(collected) == 4 and all(r.status == "ok" for r in collected)
    assert calls == [1, 3]  # the first item alone, then the three that waited, in one call
    assert stats.model_calls == 2 and stats.max_items_per_call == 3 and stats.faces_scored == 4


def test_unordered_yields_every_item_once_and_does_not_wait_for_a_slow_one(detector, media, monkeypatch):
    slow = media["video"]
    release = threading.Event()
    original = detector.analyze_result

    def analyze_result(path, **kwargs):
        if str(path) == str(slow):
            assert release.wait(DEADLINE), "the test never released the slow item"
        return original(path, **kwargs)

    monkeypatch.setattr(detector, "analyze_result", analyze_result)
    paths = [slow, *media["faces"], *media["blank"], media["corrupt"]]
    seen = []
    for report in detector.analyze_many(paths, workers=2, unordered=True):
        seen.append(report["source"])
        if len(seen) == len(paths) - 1:  # everything else came out while the first item was still held
            assert str(slow) not in seen
            release.set()
    assert sorted(seen) == sorted(str(p) for p in paths) and len(set(seen)) == len(paths)
    assert seen[-1] == str(slow)


def test_errors_stay_with_their_item(detector, media, monkeypatch):
    """A corrupt file, an unexpected exception inside one item and a model call that fails for one item's faces
    each fail that item only."""
    original_analyze = detector.analyze_result
    boom = media["faces"][1]

    def analyze_result(path, **kwargs):
        if str(path) == str(boom):
            raise ZeroDivisionError("injected bug")
        return original_analyze(path, **kwargs)

    monkeypatch.setattr(detector, "analyze_result", analyze_result)
    paths = [media["faces"][0], media["corrupt"], boom, media["blank"][0], media["faces"][2], media["video"]]
    reports = list(detector.analyze_many(paths, workers=2))
    assert [r["source"] for r in reports] == [str(p) for p in paths]
    assert "error" in reports[1] and reports[1]["error_type"] in ("MediaError", "UnsupportedMediaError")
    assert reports[2]["error_type"] == "RuntimeError" and "injected bug" in reports[2]["error"]
    assert all("error" not in reports[i] for i in (0, 3, 4, 5))


def test_a_failing_shared_model_call_is_retried_item_by_item():
    """The model thread: a shared call that fails is redone one item at a time, so only the poisoned item fails."""
    from cevit.inference.batch import _Request

    poison = np.full((4, 4, 3), 255, np.uint8)
    calls = []

    def score(crops):
        calls.append(len(crops))
        if any(c is poison for c in crops):
            raise ValueError("poisoned crop")
        return [float(c[0, 0, 0]) for c in crops]

    cancel = threading.Event()
    cancel.set()  # the thread itself ends at once: the test drives one shared call directly
    stats = BatchStats()
    model = _ModelThread(score=score, max_faces=32, stats=stats, cancel=cancel, threads=1)
    requests = [_Request([np.full((4, 4, 3), 1, np.uint8)]), _Request([poison]),
                _Request([np.full((4, 4, 3), 2, np.uint8)] * 2)]  # fmt: skip
    model._serve(requests, 4)
    assert all(r.done.is_set() for r in requests)
    assert requests[0].scores == [1.0] and requests[2].scores == [2.0, 2.0]
    assert isinstance(requests[1].error, ValueError) and requests[1].scores is None
    assert calls == [4, 1, 1, 2]  # the shared call, then each item alone


def test_a_long_folder_is_read_lazily_with_bounded_work(detector, media):
    """10,000 inputs: only a bounded number is ever taken from the iterable ahead of the consumer."""
    pulled = 0

    def inputs():
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield media["blank"][i % 3]

    stats = BatchStats()
    reports = detector.analyze_many(inputs(), workers=1, stats=stats)
    for consumed in range(1, 25):
        next(reports)
        assert pulled - consumed <= stats.limit  # never more than `limit` items in flight
        assert stats.max_in_flight <= stats.limit
    reports.close()
    assert pulled < 24 + stats.limit + 1 and stats.limit == 2 * (1 + 1 + 2)
    _wait_until(lambda: not _batch_threads(), "batch threads ended")


def test_closing_the_iterator_stops_the_work_and_keeps_what_was_yielded(detector, media):
    pulled = []

    def inputs():
        for i in range(1_000):
            pulled.append(i)
            yield media["video"] if i % 4 == 0 else media["faces"][i % 3]

    gen = detector.analyze_many(inputs(), workers=2)
    kept = [next(gen) for _ in range(3)]
    gen.close()
    after_close = len(pulled)
    _wait_until(lambda: not _batch_threads(), "batch threads ended after close()")
    assert len(pulled) == after_close < 1_000
    assert [r["source"] for r in kept] == [str(media["video"]), str(media["faces"][1]), str(media["faces"][2])]
    assert all("error" not in r for r in kept)


def test_keyboard_interrupt_in_the_consumer_thread_stops_cleanly(detector, media):
    """Ctrl-C arrives in the main thread: while it reads the next input here. Finished reports stay yielded."""

    def inputs():
        for i in range(1_000):
            if i == 6:
                raise KeyboardInterrupt
            yield media["faces"][i % 3]

    kept = []
    with pytest.raises(KeyboardInterrupt):
        for report in detector.analyze_many(inputs(), workers=1):
            kept.append(report)
    _wait_until(lambda: not _batch_threads(), "batch threads ended after KeyboardInterrupt")
    assert [r["source"] for r in kept] == [str(media["faces"][i % 3]) for i in range(len(kept))]
    assert all("error" not in r for r in kept)


def test_bad_arguments_fail_before_any_item(detector, media):
    with pytest.raises(ConfigError, match="workers"):
        list(detector.analyze_many([media["faces"][0]], workers=-1))
    with pytest.raises(ConfigError, match="num_frames"):
        list(detector.analyze_many([media["faces"][0]], num_frames=0))
    from cevit.inference.batch import analyze_pipelined

    with pytest.raises(ConfigError, match="max_in_flight"):
        list(analyze_pipelined(detector, [media["faces"][0]], num_frames=1, rule=detector.options.rule, workers=2,
                               max_in_flight=3))  # fmt: skip


def test_torch_threads_setting_is_restored(detector, media):
    import torch

    before = torch.get_num_threads()
    list(detector.analyze_many(media["faces"], workers=1))
    assert torch.get_num_threads() == before


# -- SharedScorer: the model thread for a long-lived owner (cevit serve) -----------------------------------------
def _crop(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, np.uint8)


def _first_pixel(crops):
    return [float(c[0, 0, 0]) for c in crops]


def test_shared_scorer_scores_the_waiting_items_together_and_isolates_a_failing_one():
    from cevit.inference.batch import SharedScorer

    gate = threading.Event()
    calls = []

    def score(crops):
        calls.append(len(crops))
        if len(calls) == 1:
            assert gate.wait(DEADLINE)
        if any(c[0, 0, 0] == 255 for c in crops):
            raise ValueError("poisoned crop")
        return _first_pixel(crops)

    scorer = SharedScorer(score=score, max_faces=32, threads=1)
    results: dict[str, object] = {}

    def submit(name, crops):
        try:
            results[name] = scorer.submit(crops)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[name] = exc

    with scorer:
        first = threading.Thread(target=submit, args=("first", [_crop(7)]))
        first.start()
        _wait_until(lambda: len(calls) == 1, "the first call is held")
        others = [threading.Thread(target=submit, args=(n, c))
                  for n, c in (("a", [_crop(1), _crop(2)]), ("poison", [_crop(255)]), ("b", [_crop(3)]))]  # fmt: skip
        for t in others:
            t.start()
        _wait_until(lambda: scorer.pending == 3, "three items waiting")
        gate.set()
        for t in [first, *others]:
            t.join(DEADLINE)
        assert scorer.submit([]) == []
    assert results["first"] == [7.0] and results["a"] == [1.0, 2.0] and results["b"] == [3.0]
    assert isinstance(results["poison"], ValueError)
    assert calls[:2] == [1, 4] and sorted(calls[2:]) == [1, 1, 2]  # the shared call failed: each item alone
    s = scorer.stats
    assert (s.model_calls, s.faces_scored, s.failed_calls, s.max_items_per_call, s.max_faces_per_call) == (
        3,
        4,
        2,
        1,
        2,
    )


def test_shared_scorer_close_releases_waiters_and_is_idempotent():
    from cevit.errors import ModelError
    from cevit.inference.batch import SharedScorer

    gate = threading.Event()
    calls = []

    def score(crops):
        calls.append(len(crops))
        assert gate.wait(DEADLINE)
        return _first_pixel(crops)

    scorer = SharedScorer(score=score, max_faces=8)
    with pytest.raises(ModelError):  # not started yet
        scorer.submit([_crop(1)])
    assert scorer.start() is scorer and scorer.start() is scorer and scorer.running
    errors = []

    def submit() -> None:
        try:
            scorer.submit([_crop(1)])
        except ModelError as exc:
            errors.append(exc)

    waiters = [threading.Thread(target=submit) for _ in range(2)]  # one in the held call, one waiting behind it
    waiters[0].start()
    _wait_until(lambda: len(calls) == 1, "a call in progress")
    waiters[1].start()
    _wait_until(lambda: scorer.pending == 1, "a request waiting")
    closer = threading.Thread(target=scorer.close)
    closer.start()
    _wait_until(lambda: len(errors) == 2, "both waiters released with an error")
    gate.set()  # the call in progress ends; close() then returns
    closer.join(DEADLINE)
    for t in waiters:
        t.join(DEADLINE)
    assert calls == [1]  # the waiting request never reached the model
    assert not scorer.thread.is_alive() and not scorer.running
    assert scorer.close() is True and scorer.start() is scorer and not scorer.thread.is_alive()
    with pytest.raises(ModelError, match="closed"):
        scorer.submit([_crop(1)])
    assert SharedScorer(score=_first_pixel, max_faces=1).close() is True  # never started


def test_use_installs_the_scorer_for_the_calling_thread_only_and_restores_the_previous_one():
    from contextlib import nullcontext

    from cevit.inference.batch import SharedScorer, item_scorer, model_guard

    handovers = []
    with SharedScorer(score=_first_pixel, max_faces=4) as outer, SharedScorer(score=_first_pixel, max_faces=4) as inner:
        assert item_scorer() is None and isinstance(model_guard(), nullcontext)
        with outer.use():
            with inner.use(on_handover=lambda: handovers.append(1)):
                assert item_scorer()([_crop(5)]) == [5.0] and item_scorer()([]) == []
                assert model_guard() is inner.exclusive()
                seen = []
                other = threading.Thread(target=lambda: seen.append(item_scorer()))
                other.start()
                other.join(DEADLINE)
                assert seen == [None]  # thread-local
            assert model_guard() is outer.exclusive()
        assert item_scorer() is None
    assert handovers == [1, 1] and inner.stats.model_calls == 1


def test_shared_scorer_for_a_detector_and_the_service_threads(detector):
    from cevit.inference.batch import serving_threads, shared_scorer_for, torch_threads

    assert shared_scorer_for(object(), workers=2) is None
    assert shared_scorer_for(detector, workers=1) is None  # one request at a time: nothing to share
    scorer = shared_scorer_for(detector, workers=3)
    assert scorer is not None and scorer.threads == max(1, torch_threads() // 4)
    assert serving_threads(1) == torch_threads()  # one worker never computes while its faces are scored
    with scorer:
        assert scorer.submit([np.zeros((96, 96, 3), np.uint8)] * 2) == pytest.approx(
            detector.score_faces([np.zeros((96, 96, 3), np.uint8)] * 2), abs=1e-6
        )
    with pytest.raises(ConfigError, match="max_faces"):
        type(scorer)(score=_first_pixel, max_faces=0)


def test_an_item_with_more_faces_than_a_call_takes_turns_with_the_others():
    """Five faces with max_faces=2 go in parts of 2, 2 and 1, in order; a small item that arrives while the first
    part is scored is not kept waiting for the rest."""
    from cevit.inference.batch import SharedScorer

    gate = threading.Event()
    calls = []

    def score(crops):
        calls.append(_first_pixel(crops))
        if len(calls) == 1:
            assert gate.wait(DEADLINE)
        return _first_pixel(crops)

    results = {}
    with SharedScorer(score=score, max_faces=2) as scorer:
        big = threading.Thread(target=lambda: results.update(big=scorer.submit([_crop(v) for v in range(1, 6)])))
        big.start()
        _wait_until(lambda: len(calls) == 1, "the first part in the model")
        small = threading.Thread(target=lambda: results.update(small=scorer.submit([_crop(9)])))
        small.start()
        _wait_until(lambda: scorer.pending == 1, "the small item waiting")
        gate.set()
        for t in (big, small):
            t.join(DEADLINE)
    assert results == {"big": [1.0, 2.0, 3.0, 4.0, 5.0], "small": [9.0]}
    # the small item went in right after the first part (alone, or with the second part if that was queued by then)
    assert calls[0] == [1.0, 2.0] and [v for c in calls for v in c] == [1.0, 2.0, 9.0, 3.0, 4.0, 5.0]
    assert calls[-1] == [5.0]
