"""The output store: atomic parts, twin repair, compaction, lock."""

from __future__ import annotations

import pytest

from cevit.errors import ConfigError
from cevit.scan.rows import ScanRow
from cevit.scan.store import ResultStore, read_records


def row(i, status="ok", source=None):
    return ScanRow(id=f"id{i}", source=source or f"/x/{i}.jpg", key=f"k{i}", status=status,
                   score=None if status != "ok" else i / 10, prediction="REAL" if status == "ok" else None)  # fmt: skip


def test_parts_are_committed_as_they_fill_and_the_buffer_on_close(tmp_path):
    store = ResultStore(folder=tmp_path / "out", formats=("parquet",), part_size=2)
    store.open()
    for i in range(3):
        store.add(row(i))
    assert [r["key"] for r in read_records(tmp_path / "out")] == ["k0", "k1"]  # one full part on disk
    store.close()
    assert [r["key"] for r in read_records(tmp_path / "out")] == ["k0", "k1", "k2"]


def test_missing_twin_part_is_rebuilt_and_temporaries_removed(tmp_path):
    out = tmp_path / "out"
    with ResultStore(folder=out, formats=("parquet", "jsonl"), part_size=2) as store:
        for i in range(4):
            store.add(row(i))
    (out / "parquet" / "part-000001.parquet").unlink()  # a crash between the JSONL and the Parquet rename
    (out / "parquet" / ".part-000002.parquet.123.tmp").write_bytes(b"half written")
    store = ResultStore(folder=out, formats=("parquet", "jsonl"))
    index = store.open()
    store.close()
    assert sorted(index.status_by_key) == ["k0", "k1", "k2", "k3"]
    assert not list((out / "parquet").glob(".*.tmp"))
    import pyarrow.parquet as pq

    assert pq.read_table(out / "parquet").column("key").to_pylist() == ["k0", "k1", "k2", "k3"]


def test_a_later_row_for_the_same_key_or_source_replaces_the_earlier(tmp_path):
    out = tmp_path / "out"
    with ResultStore(folder=out, formats=("jsonl",), part_size=2) as store:
        store.add(row(0, status="error"))
        store.add(row(1))
    with ResultStore(folder=out, formats=("jsonl",)) as store:
        store.add(row(0))  # retried: same key
        store.add(row(9, source="/x/1.jpg"))  # the file /x/1.jpg changed: new key, same source
    got = {r["key"]: r["status"] for r in read_records(out)}
    assert got == {"k0": "ok", "k9": "ok"}
    assert not (out / "jsonl" / "part-000000.jsonl").exists()  # every row of the first part was superseded


def test_a_second_writer_is_refused(tmp_path):
    with ResultStore(folder=tmp_path / "out", formats=("jsonl",)):
        with pytest.raises(ConfigError, match="another scan"):
            ResultStore(folder=tmp_path / "out", formats=("jsonl",)).open()


def test_output_that_is_a_file_is_a_config_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="folder"):
        ResultStore(folder=tmp_path / "f", formats=("jsonl",)).open()
