"""Shared fixtures: the reference folder ``shared/`` (skip cleanly when absent) and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    return Path(os.environ.get("CEVIT_SHARED", PROJECT_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"reference folder {path} is absent (set CEVIT_SHARED to use it)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
