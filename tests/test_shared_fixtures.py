"""The rule for tests that need the shared reference folder (``require_shared`` in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import require_shared


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_missing_fixture_in_an_existing_shared_folder_fails_under_ci(tmp_path: Path, monkeypatch, ci: str) -> None:
    (tmp_path / "reference").mkdir()
    monkeypatch.setenv("CEVIT_SHARED", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="reference_small_io.safetensors is missing"):
        require_shared("reference/reference_small_io.safetensors")


def test_missing_fixture_skips_outside_ci(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CEVIT_SHARED", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="is missing"):
        require_shared("reference/x.safetensors")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="is missing"):
        require_shared("reference/x.safetensors")


def test_absent_shared_folder_skips_even_under_ci(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CEVIT_SHARED", str(tmp_path / "no-such-folder"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.skip.Exception, match="is absent"):
        require_shared("reference/x.safetensors")


def test_present_fixture_is_returned(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "keys.txt").write_text("k (1)\n")
    monkeypatch.setenv("CEVIT_SHARED", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert require_shared("reference/keys.txt") == tmp_path / "reference" / "keys.txt"
