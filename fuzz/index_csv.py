"""Training face index CSVs: :func:`cevit.data.read_index` on any bytes."""

from __future__ import annotations

from pathlib import Path

from fuzz import seeds
from fuzz.common import scratch_file

INSTRUMENT = ("cevit.data.index",)


def seed(folder: Path) -> None:
    seeds.write_indexes(folder)


def load() -> None:
    global CevitError, read_index
    from cevit.data import read_index
    from cevit.errors import CevitError


def one_input(data: bytes) -> None:
    try:
        rows = read_index(scratch_file(data, "index.csv"))
    except CevitError:
        return
    for row in rows:
        assert row.label in (0, 1) and row.box[2] > row.box[0] and row.box[3] > row.box[1], row
        assert row.valid is None or (row.valid[2] > row.valid[0] and row.valid[3] > row.valid[1]), row
