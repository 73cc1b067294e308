"""The Ray engine on a local 2-CPU Ray cluster gives the same rows as the local engine."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from cevit.scan import ScanConfig, read_records, run_scan
from cevit.scan.engines import DetectorSpec
from scan_media import make_collection

# find_spec instead of importing: importing ray.data takes seconds, and collection must stay fast. Installed but
# broken, Ray fails the tests below instead of skipping them.
_MISSING = [name for name in ("ray", "pyarrow", "pandas") if importlib.util.find_spec(name) is None]
RAY_MISSING = f"{', '.join(_MISSING)} not installed: pip install 'cevit[ray]'" if _MISSING else None

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_missing_ray_is_a_clear_config_error(monkeypatch, tmp_path):
    import builtins

    from cevit.errors import ConfigError
    from cevit.scan.ray_engine import RayEngine

    real_import = builtins.__import__

    def no_ray(name, *args, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    make_collection(tmp_path / "in", 1)
    engine = RayEngine(spec=DetectorSpec())
    with pytest.raises(ConfigError, match="cevit\\[ray\\]"):
        list(engine.run([object()]))  # type: ignore[list-item]


@pytest.mark.slow
@pytest.mark.skipif(RAY_MISSING is not None, reason=RAY_MISSING or "")
def test_ray_and_local_engines_give_the_same_predictions(tiny_checkpoint, tmp_path, monkeypatch):
    paths = make_collection(tmp_path / "in", 56, videos=3, corrupt=1)
    assert len(paths) == 60
    # the Ray workers are new processes: they must import this checkout's cevit, one torch thread each
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = DetectorSpec(weights=str(tiny_checkpoint), device="cpu", threads=1)
    results = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        summary = run_scan(ScanConfig(sources=(str(tmp_path / "in"),), output=out, engine=engine, part_size=16),
                           spec=spec)  # fmt: skip
        assert summary.scanned == 60 and summary.errors == 1, summary
        results[engine] = {r["source"]: r for r in read_records(out)}
    local, distributed = results["local"], results["ray"]
    assert set(local) == set(distributed) == {str(p) for p in paths}
    for source, row in local.items():
        other = distributed[source]
        assert (other["status"], other["prediction"], other["media_type"]) == (
            row["status"], row["prediction"], row["media_type"]), source  # fmt: skip
        if row["score"] is not None:
            assert other["score"] == pytest.approx(row["score"], abs=1e-5), source
        assert len(other["faces"]) == len(row["faces"]) and len(other["frames"]) == len(row["frames"])
        assert other["engine"] == "ray" and row["engine"] == "local"
    workers = {r["worker"] for r in distributed.values()}
    assert len(workers) == 2, workers  # two actors on the 2-CPU local cluster shared the work
