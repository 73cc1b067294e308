"""``cevit scan``: exit codes, summary, and a scan killed with SIGKILL then resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cevit.cli.main import main
from cevit.scan import read_records
from scan_media import make_collection

SRC = Path(__file__).resolve().parents[2] / "src"


def test_scan_cli_writes_rows_and_prints_a_summary(tiny_checkpoint, tmp_path, capsys):
    paths = make_collection(tmp_path / "in", 4, corrupt=1)
    out = tmp_path / "out"
    argv = ["scan", str(tmp_path / "in"), "--output", str(out), "--weights", str(tiny_checkpoint),
            "--device", "cpu", "--format", "jsonl"]  # fmt: skip
    assert main(argv) == 1  # one item failed
    err = capsys.readouterr().err
    assert "5 item(s) analysed" in err and "1 errors" in err and "most suspicious" in err
    assert Counter(r["source"] for r in read_records(out)) == Counter(str(p) for p in paths)
    assert main(argv) == 0  # nothing left to do: nothing failed in this run
    assert "0 item(s) analysed" in capsys.readouterr().err


def test_scan_cli_usage_errors(tmp_path, capsys):
    assert main(["scan", str(tmp_path), "--output", str(tmp_path / "o"), "--address", "auto"]) == 2
    assert main(["scan", str(tmp_path), "--output", str(tmp_path / "o"), "--frames", "0"]) == 2
    bad = tmp_path / "m.csv"
    bad.write_text("file\nx.jpg\n")
    assert main(["scan", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "'path' column" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_half_way_then_rerun_gives_one_row_per_item(tiny_checkpoint, tmp_path):
    paths = make_collection(tmp_path / "in", 60)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cevit.cli.main", "scan", str(tmp_path / "in"), "--output", str(out),
           "--weights", str(tiny_checkpoint), "--device", "cpu", "--part-size", "4", "--format", "both", "-q"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while len(list((out / "parquet").glob("part-*.parquet"))) < 2:  # at least 8 rows committed
            assert proc.poll() is None, "the scan finished before it could be killed"
            assert time.monotonic() < deadline, "no parts were written in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    done = list(read_records(out, ["source"]))
    assert 8 <= len(done) < len(paths)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    for fmt in ("parquet", "jsonl"):
        import pandas as pd

        if fmt == "parquet":
            sources = pd.read_parquet(out / "parquet")["source"].tolist()
        else:
            sources = [r["source"] for p in sorted((out / "jsonl").glob("*.jsonl"))
                       for r in pd.read_json(p, lines=True).to_dict("records")]  # fmt: skip
        assert Counter(sources) == Counter(str(p) for p in paths), fmt


@pytest.mark.slow
def test_sigterm_commits_every_finished_row_and_exits_130(tiny_checkpoint, tmp_path):
    import json

    make_collection(tmp_path / "in", 60)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cevit.cli.main", "scan", str(tmp_path / "in"), "--output", str(out),
           "--weights", str(tiny_checkpoint), "--device", "cpu", "--part-size", "7", "--threads", "1", "-q"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "parquet").glob("part-*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, "no part was written in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["interrupted"] and 7 <= summary["rows"] == summary["scanned"] < 60  # no finished row lost
