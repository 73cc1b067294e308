"""Tests of cevit.evaluation.plots: PNG files are written and readable (needs matplotlib)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cevit.evaluation import MetricInputError, plots

pytest.importorskip("matplotlib", reason="matplotlib (optional extra 'eval') is not installed")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    y[:2] = [0, 1]
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0.0, 1.0)
    return y, s


def assert_png(path, size=None):
    assert path.is_file()
    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE
    assert len(raw) > 2000  # a real plot, not an empty canvas
    if size is not None:
        from PIL import Image

        with Image.open(path) as im:
            assert im.size == size


def test_plot_roc_writes_png(tmp_path, data):
    y, s = data
    out = plots.plot_roc({"model A": (y, s), "model B": (y, 1 - s)}, tmp_path / "nested" / "roc.png", dpi=100)
    assert out == tmp_path / "nested" / "roc.png"
    assert_png(out, size=(550, 500))


def test_plot_pr_writes_png(tmp_path, data):
    y, s = data
    out = plots.plot_pr({"model A": (y, s)}, str(tmp_path / "pr.png"))
    assert_png(out)


def test_plot_score_histogram_writes_png(tmp_path, data):
    y, s = data
    out = plots.plot_score_histogram(y, s, tmp_path / "hist.png", threshold=0.4)
    assert_png(out, size=(720, 480))


def test_one_class_entries_are_listed_not_drawn(tmp_path, data):
    y, s = data
    curves = {"ok": (y, s), "only real": ([0, 0, 0], [0.1, 0.2, 0.3])}
    assert_png(plots.plot_roc(curves, tmp_path / "roc.png"))
    assert_png(plots.plot_pr(curves, tmp_path / "pr.png"))
    assert_png(plots.plot_score_histogram([1, 1], [0.6, 0.9], tmp_path / "hist.png"))


def test_plots_leave_pyplot_state_alone(tmp_path, data):
    y, s = data
    plots.plot_roc({"m": (y, s)}, tmp_path / "roc.png")
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_invalid_plot_inputs(tmp_path, data):
    y, s = data
    with pytest.raises(MetricInputError, match="curves"):
        plots.plot_roc({}, tmp_path / "roc.png")
    with pytest.raises(MetricInputError, match="pair"):
        plots.plot_pr({"m": (y, s, s)}, tmp_path / "pr.png")
    with pytest.raises(MetricInputError, match="scores"):
        plots.plot_score_histogram(y, s * 2, tmp_path / "hist.png")
    assert not any(tmp_path.iterdir())


def test_missing_matplotlib_gives_clear_error(tmp_path, data, monkeypatch):
    y, s = data
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(plots.PlotDependencyError, match="pip install"):
        plots.plot_roc({"m": (y, s)}, tmp_path / "roc.png")
    with pytest.raises(ImportError):
        plots.plot_score_histogram(y, s, tmp_path / "hist.png")
