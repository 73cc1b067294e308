"""Inputs the fuzzers (``fuzz/``, atheris) found to break a reader's contract, replayed in the normal suite.

Each file under ``tests/fuzz_regressions/TARGET/`` is run once through that target's harness (``fuzz/TARGET.py``,
no atheris needed): the harness passes when the reader returns or raises a ``CevitError`` (the upload parser: an
``ApiError`` with a 4xx status) and fails on anything else. The inputs are kept small and committed.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"
CASES = sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file())


def test_regression_inputs_are_present_and_small() -> None:
    assert CASES, f"no regression inputs under {REGRESSIONS}"
    assert all(p.stat().st_size <= 16_384 for p in CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_fuzz_regression(case: Path) -> None:
    harness = importlib.import_module(f"fuzz.{case.parent.name}")
    harness.load()
    harness.one_input(case.read_bytes())  # raises (and fails) on anything but the reader's documented errors
