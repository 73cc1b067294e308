"""run_scan with the local engine: rows, schema, errors, resume, --retry-failed, interruption."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from cevit.errors import ConfigError, MediaError
from cevit.inference.pipeline import Detector, load_model
from cevit.scan import COLUMNS, LocalEngine, ScanConfig, arrow_schema, read_records, run_scan
from cevit.scan.engines import DetectorSpec
from scan_media import make_collection


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    return load_model(weights=tiny_checkpoint, device="cpu")


def scan(detector, sources, output, **kw):
    config = ScanConfig(sources=tuple(str(s) for s in sources), output=output, **kw)
    return run_scan(config, spec=DetectorSpec(), engine=LocalEngine(detector=detector))


def rows(output, columns=None):
    return list(read_records(output, columns))


def test_one_row_per_item_in_both_formats_with_the_documented_schema(detector, tmp_path):
    paths = make_collection(tmp_path / "in", 6, videos=1, corrupt=1)
    out = tmp_path / "out"
    summary = scan(detector, [tmp_path / "in"], out, formats=("parquet", "jsonl"), part_size=3)
    assert summary.scanned == len(paths) == summary.rows and summary.errors == 1 and summary.failed == 1
    assert summary.no_face == 1 and summary.ok == len(paths) - 2
    parquet_parts = sorted((out / "parquet").glob("part-*.parquet"))
    assert len(parquet_parts) == 3  # 8 rows in parts of 3
    table = pq.read_table(out / "parquet")
    assert table.schema.remove_metadata().equals(arrow_schema()) and tuple(table.column_names) == COLUMNS
    by_source = {r["source"]: r for r in table.to_pylist()}
    assert set(by_source) == {str(p) for p in paths}
    broken = by_source[str(tmp_path / "in" / "broken_00.jpg")]
    assert broken["status"] == "error" and "broken_00.jpg" in broken["error"] and broken["prediction"] is None
    video = by_source[str(tmp_path / "in" / "clip_00.mp4")]
    assert video["media_type"] == "video" and len(video["frames"]) == 6 and video["faces"]
    assert video["frames"][0]["prediction"] in ("REAL", "FAKE")
    face = by_source[str(tmp_path / "in" / "face_000.jpg")]
    assert face["status"] == "ok" and face["num_faces"] == len(face["faces"]) == 1 and len(face["faces"][0]["box"]) == 4
    assert face["model"] and face["timings"]["total"] > 0 and face["engine"] == "local"
    assert by_source[str(tmp_path / "in" / "noise_004.png")]["status"] == "no_face"
    # the JSONL parts hold the same rows
    jsonl = [json.loads(line) for p in sorted((out / "jsonl").glob("*.jsonl")) for line in p.read_text().splitlines()]
    assert [r["key"] for r in jsonl] == table.column("key").to_pylist()
    assert [r["score"] for r in jsonl] == pytest.approx(table.column("score").to_pylist(), abs=1e-6)
    assert json.loads((out / "_summary.json").read_text())["rows"] == len(paths)


def test_resume_skips_done_items_and_never_duplicates(detector, tmp_path):
    make_collection(tmp_path / "in", 4, corrupt=1)
    out = tmp_path / "out"
    first = scan(detector, [tmp_path / "in"], out)
    before = rows(out)
    again = scan(detector, [tmp_path / "in"], out)
    assert first.scanned == 5 and again.scanned == 0 and again.skipped == 5
    assert rows(out) == before  # nothing rewritten, failed item not retried without --retry-failed


def test_retry_failed_reanalyses_errors_only_and_keeps_one_row(detector, tmp_path, monkeypatch):
    paths = make_collection(tmp_path / "in", 4)
    out = tmp_path / "out"
    flaky = str(paths[1])
    original = Detector.analyze_result

    def failing(self, media_path, **kw):
        if str(media_path) == flaky:
            raise MediaError(f"{media_path}: transient read error")
        return original(self, media_path, **kw)

    monkeypatch.setattr(Detector, "analyze_result", failing)
    assert scan(detector, [tmp_path / "in"], out).errors == 1
    monkeypatch.setattr(Detector, "analyze_result", original)
    assert scan(detector, [tmp_path / "in"], out).scanned == 0  # the error row counts as done
    retried = scan(detector, [tmp_path / "in"], out, retry_failed=True)
    assert retried.scanned == 1 and retried.errors == 0
    final = rows(out, ["source", "status"])
    assert Counter(r["source"] for r in final) == Counter(str(p) for p in paths)
    assert {r["source"]: r["status"] for r in final}[flaky] == "ok"


def test_changed_file_is_rescanned_and_replaces_its_row(detector, tmp_path):
    paths = make_collection(tmp_path / "in", 3)
    out = tmp_path / "out"
    scan(detector, [tmp_path / "in"], out)
    paths[0].write_bytes(paths[1].read_bytes() + b"\0")  # new size and mtime: a new version of the item
    assert scan(detector, [tmp_path / "in"], out).scanned == 1
    assert sorted(r["source"] for r in rows(out)) == sorted(str(p) for p in paths)


def test_hash_key_skips_moved_files(detector, tmp_path):
    make_collection(tmp_path / "in", 3)
    out = tmp_path / "out"
    scan(detector, [tmp_path / "in"], out, use_hash=True)
    (tmp_path / "in").rename(tmp_path / "moved")
    summary = scan(detector, [tmp_path / "moved"], out, use_hash=True)
    assert summary.scanned == 0 and summary.skipped == 3
    assert all(r["key"].startswith("sha256:") and len(r["sha256"]) == 64 for r in rows(out))


def test_manifest_with_ids_labels_and_a_missing_file(detector, tmp_path):
    make_collection(tmp_path / "in", 2)
    manifest = tmp_path / "in" / "list.csv"
    manifest.write_text("path,id,label\nface_000.jpg,a,real\nface_001.jpg,b,fake\nnot_there.jpg,c,\n")
    out = tmp_path / "out"
    summary = scan(detector, [manifest], out, formats=("jsonl",))
    got = {r["id"]: r for r in rows(out)}
    assert summary.scanned == 3 and summary.errors == 1
    assert got["a"]["label"] == "real" and got["b"]["label"] == "fake" and got["a"]["status"] == "ok"
    assert got["c"]["status"] == "error" and "not_there.jpg" in got["c"]["error"]


def test_source_without_media_is_an_error_row_and_the_rest_is_scanned(detector, tmp_path):
    make_collection(tmp_path / "in", 2)
    (tmp_path / "empty").mkdir()
    summary = scan(detector, [tmp_path / "empty", tmp_path / "in"], tmp_path / "out")
    assert summary.rows == 3 and summary.failed == 1 and summary.ok == 2


def test_interrupt_commits_finished_rows_and_a_rerun_completes(detector, tmp_path):
    paths = make_collection(tmp_path / "in", 6)
    out = tmp_path / "out"

    class Interrupted(LocalEngine):
        def run(self, items):
            for k, row in enumerate(super().run(items)):
                if k == 3:
                    raise KeyboardInterrupt
                yield row

    config = ScanConfig(sources=(str(tmp_path / "in"),), output=out, part_size=100)
    summary = run_scan(config, spec=DetectorSpec(), engine=Interrupted(detector=detector))
    assert summary.interrupted and summary.scanned == 3 and summary.rows == 3  # buffered rows committed
    assert scan(detector, [tmp_path / "in"], out).scanned == 3
    assert sorted(r["source"] for r in rows(out)) == sorted(str(p) for p in paths)


def test_bad_configuration_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        ScanConfig(sources=(), output=tmp_path)
    with pytest.raises(ConfigError):
        ScanConfig(sources=("x",), output=tmp_path, engine="spark")
    with pytest.raises(ConfigError):
        ScanConfig(sources=("x",), output=tmp_path, address="auto")  # --address without --engine ray
