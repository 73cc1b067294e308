"""The cache of derived files: location rules, atomic writes, an unwritable cache is skipped."""

from __future__ import annotations

import os

import pytest

from cevit import cache


def test_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CEVIT_CACHE_DIR", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    monkeypatch.setenv("CEVIT_CACHE_DIR", "")
    assert cache.cache_dir() is None
    assert cache.write_entry("onnx/x.onnx", b"data") is None and cache.read_entry("onnx/x.onnx") is None
    monkeypatch.delenv("CEVIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "cevit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "cevit"


def test_round_trip_leaves_no_temporary_file(monkeypatch, tmp_path):
    monkeypatch.setenv("CEVIT_CACHE_DIR", str(tmp_path))
    assert cache.read_entry("onnx/a.onnx") is None
    path = cache.write_entry("onnx/a.onnx", b"first")
    assert path == tmp_path / "onnx" / "a.onnx" and cache.read_entry("onnx/a.onnx") == b"first"
    cache.write_entry("onnx/a.onnx", b"second")
    assert cache.read_entry("onnx/a.onnx") == b"second"
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["a.onnx"]
    cache.remove_entry("onnx/a.onnx")
    assert cache.read_entry("onnx/a.onnx") is None
    cache.remove_entry("onnx/a.onnx")  # absent: no error


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_cache_is_skipped(monkeypatch, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        monkeypatch.setenv("CEVIT_CACHE_DIR", str(ro / "cevit"))
        assert cache.write_entry("onnx/a.onnx", b"x") is None
    finally:
        ro.chmod(0o700)


def test_a_cache_path_that_is_a_file_is_skipped(monkeypatch, tmp_path):
    (tmp_path / "file").write_bytes(b"")
    monkeypatch.setenv("CEVIT_CACHE_DIR", str(tmp_path / "file"))
    assert cache.write_entry("onnx/a.onnx", b"x") is None
    assert cache.read_entry("onnx/a.onnx") is None


def test_entry_names_stay_inside_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CEVIT_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError):
        cache.write_entry("../escape", b"x")
    with pytest.raises(ValueError):
        cache.read_entry("/etc/passwd")
