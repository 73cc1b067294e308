"""Tests of cevit.data.index: the valid region columns, writing and reading an index."""

from __future__ import annotations

import pytest

from cevit.data import INDEX_COLUMNS, VALID_COLUMNS, read_index, write_index
from cevit.errors import ConfigError

ROW = {"crop_path": "a.png", "source": "v.mp4", "label": "fake", "x1": 1, "y1": 2, "x2": 30, "y2": 40}


def test_write_then_read_round_trip_with_valid_region(tmp_path):
    n = write_index(tmp_path / "i.csv", [dict(ROW, vx1=4, vy1=0, vx2=64, vy2=60.5), dict(ROW, crop_path="b.png")])
    assert n == 2
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    header = (tmp_path / "i.csv").read_text().splitlines()[0].split(",")
    assert header == list(INDEX_COLUMNS) and set(VALID_COLUMNS) <= set(header)
    a, b = read_index(tmp_path / "i.csv")
    assert a.valid == (4.0, 0.0, 64.0, 60.5) and a.label == 1 and a.crop_path == str(tmp_path / "a.png")
    assert b.valid is None  # empty cells: the whole crop is frame


def test_old_index_without_valid_columns(tmp_path):
    (tmp_path / "old.csv").write_text("crop_path,x1,y1,x2,y2,label\na.png,1,2,30,40,real\n")
    (row,) = read_index(tmp_path / "old.csv")
    assert row.valid is None and row.label == 0


def test_bad_valid_region_names_file_line_and_column(tmp_path):
    write_index(tmp_path / "i.csv", [ROW, dict(ROW, vx1=10, vy1=0, vx2=10, vy2=5)])
    with pytest.raises(ConfigError, match=r"i\.csv:3: empty valid region"):
        read_index(tmp_path / "i.csv")
    write_index(tmp_path / "j.csv", [dict(ROW, vx1="x", vy1=0, vx2=10, vy2=5)])
    with pytest.raises(ConfigError, match=r"j\.csv:2: column 'vx1'"):
        read_index(tmp_path / "j.csv")


def test_unknown_keys_are_refused_when_writing(tmp_path):
    with pytest.raises(ValueError):
        write_index(tmp_path / "i.csv", [dict(ROW, colour="red")])
    assert not list(tmp_path.iterdir())  # neither the index nor a temporary file
