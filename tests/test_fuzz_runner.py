"""The fuzz runner's verdicts (fuzz/run.py): what fails a run (the CI smoke run included) and what does not."""

from __future__ import annotations

import pytest

from fuzz.run import TARGETS, _parse

INITED = "#2\tINITED cov: 40 ft: 50 corp: 2/416b exec/s: 0 rss: 261Mb\n"
DONE = "#5000\tDONE   cov: 55 ft: 70 corp: 9/1Kb lim: 336 exec/s: 1000 rss: 262Mb\nDone 5000 runs in 5 second(s)\n"


@pytest.mark.parametrize(
    ("rc", "log", "outcome"),
    [
        (0, INITED + DONE, "ok"),
        (1, INITED + " === Uncaught Python exception: ===\nTypeError: x\n==1== ERROR: libFuzzer: fuzz target exited\n"
         "Test unit written to /w/crashes/t-crash-abc\n", "crash"),
        (1, INITED + "==1== ERROR: libFuzzer: deadly signal\n", "crash"),
        (1, INITED + "==1== ERROR: libFuzzer: out-of-memory (used: 4000Mb; exceeds: 3072Mb)\n", "oom"),
        (70, INITED + "ALARM: working on the last Unit for 61 seconds\n==1== ERROR: libFuzzer: timeout after 61 seconds\n",
         "timeout"),
        (2, "usage: something else went wrong\n", "error"),
    ],
)  # fmt: skip
def test_outcomes(tmp_path, rc, log, outcome):
    path = tmp_path / "t.log"
    path.write_text(log)
    result = _parse("t", path, rc, 1.0, tmp_path)
    assert result.outcome == outcome
    if outcome == "ok":
        assert (result.executions, result.cov_start, result.cov_end, result.corpus) == (5000, 40, 55, 9)
    if outcome == "crash" and "Test unit" in log:
        assert result.artifact == "/w/crashes/t-crash-abc"


def test_every_target_has_a_harness():
    import importlib

    for target in TARGETS:
        harness = importlib.import_module(f"fuzz.{target}")
        assert callable(harness.seed) and callable(harness.load) and callable(harness.one_input) and harness.INSTRUMENT
        assert all(isinstance(m, str) for m in getattr(harness, "INSTRUMENT_DEEP", ()))
