"""Tests of cevit.output: report names that never escape their folder, atomic writes, output targets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cevit.errors import ConfigError
from cevit.output import (
    MAX_NAME_BYTES,
    atomic_write_text,
    check_output_target,
    is_directory_target,
    report_file_name,
)

HOSTILE_SOURCES = [
    "../x.jpg", "../../etc/passwd", "/etc/passwd", "/", "", ".", "..", "a/b/..", "clips/", "C:\\evil\\..\\x.png",
    "\\\\server\\share\\y.mp4", ".hidden.jpg", "...", " spaced .jpg ", "nul", "CON.jpg", "a\x00b.jpg", "new\nline.jpg",
    "tab\there.jpg", 'q"u<o>t|e?*:.jpg', "é" * 200 + ".jpg", "x" * 400 + ".mp4", "日本語の動画.mp4", "emoji 😀.png",
    "bad\udcffbytes.jpg",  # an undecodable file-system name (surrogate escape)
]  # fmt: skip


@pytest.mark.parametrize("source", HOSTILE_SOURCES)
def test_report_names_never_escape_the_folder(tmp_path: Path, source: str) -> None:
    used: set[str] = set()
    name = report_file_name(source, used)
    assert name.endswith(".json") and "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".") and name not in (".json", "..json")
    assert len(name.encode("utf-8")) <= 255
    target = tmp_path / name
    atomic_write_text(target, "{}\n")  # the file system accepts it
    assert target.resolve().parent == tmp_path.resolve()
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_report_names_are_unique_case_insensitively_and_keep_long_names_apart() -> None:
    used: set[str] = set()
    names = [report_file_name(s, used) for s in ("a/clip.mp4", "b/clip.mp4", "c/CLIP.mp4", "clip.mp4")]
    assert names == ["clip.mp4.json", "clip.mp4.2.json", "CLIP.mp4.3.json", "clip.mp4.4.json"]
    long_a, long_b = "x" * 300 + "a.jpg", "x" * 300 + "b.jpg"
    na, nb = report_file_name(long_a, used), report_file_name(long_b, used)
    assert na != nb and len(na.encode()) <= MAX_NAME_BYTES + len(".json")
    assert report_file_name("../x.jpg", set()) == "x.jpg.json"
    assert report_file_name("", set()) == "input.json"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.json"
    target.write_text("old\n")
    os.chmod(target, 0o640)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left behind
    monkeypatch.undo()
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and (target.stat().st_mode & 0o777) == 0o640


def test_atomic_write_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    folder = tmp_path / "reports"
    folder.mkdir()
    trap = folder / "a.jpg.json"
    trap.symlink_to(outside)
    atomic_write_text(trap, "{}\n")
    assert outside.read_text() == "precious\n"
    assert not trap.is_symlink() and trap.read_text() == "{}\n"


def test_output_targets_are_checked(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "out.csv"
    with pytest.raises(ConfigError, match="does not exist") as info:
        check_output_target(missing)
    assert str(missing) in str(info.value)
    assert check_output_target(tmp_path / "out.csv") == tmp_path / "out.csv"
    new_dir = str(tmp_path / "new" / "reports") + "/"
    assert is_directory_target(new_dir) and not (tmp_path / "new").exists()
    check_output_target(new_dir)
    assert (tmp_path / "new" / "reports").is_dir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output_target(str(a_file) + "/")
    with pytest.raises(ConfigError, match="cannot be created"):
        check_output_target(str(a_file / "sub") + "/")
