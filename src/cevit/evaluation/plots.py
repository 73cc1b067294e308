"""PNG plots of a detector's evaluation: ROC curves, precision-recall curves and score histograms.

The plots need matplotlib, an optional dependency of cevit (extra ``eval``). It is imported inside each
function, never at import time, and used through its object-oriented API with the Agg (raster, no
display) canvas, so the global pyplot state and backend of the calling program are left alone.
Each function writes one PNG (creating missing parent folders) and returns its path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cevit.errors import CevitError
from cevit.evaluation.metrics import (
    MetricInputError,
    _check_threshold,
    _validate,
    average_precision,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PlotDependencyError", "plot_roc", "plot_pr", "plot_score_histogram"]

logger = logging.getLogger(__name__)

Curves = Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]


class PlotDependencyError(CevitError, ImportError):
    """matplotlib, needed for plotting, is not installed."""


def _new_figure(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotDependencyError(
            "plotting needs matplotlib, which is not installed; install it with `pip install cevit[eval]` "
            "or `pip install matplotlib`"
        ) from exc
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=dpi)
    logger.info("wrote %s", out)
    return out


def _check_curves(curves: Curves) -> None:
    if not isinstance(curves, Mapping) or not curves:
        raise MetricInputError("curves: expected a non-empty mapping of name -> (labels, scores)")
    for name, pair in curves.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise MetricInputError(f"curves[{name!r}]: expected a (labels, scores) pair")


def _fmt(value: float) -> str:
    return "undefined" if math.isnan(value) else f"{value:.3f}"


def plot_roc(
    curves: Curves,
    path: str | Path,
    *,
    title: str = "ROC curve",
    dpi: int = 120,
) -> Path:
    """Plot one ROC curve per entry of ``curves`` (``{name: (labels, scores)}``) into a PNG at ``path``.

    The legend gives each curve's AUC; the chance diagonal is drawn dashed. An entry with only one class
    has no ROC curve: it is listed in the legend as undefined and not drawn.
    """
    _check_curves(curves)
    fig, ax = _new_figure((5.5, 5.0))
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance (AUC = 0.500)")
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        auc = roc_auc(labels, scores)
        if math.isnan(auc):
            logger.warning("plot_roc: %r has only one class; its ROC curve is undefined", name)
            ax.plot([], [], label=f"{name} (AUC undefined: one class)")
            continue
        ax.plot(fpr, tpr, linewidth=1.8, label=f"{name} (AUC = {_fmt(auc)})")
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        xlabel="False positive rate (real called fake)",
        ylabel="True positive rate (fake detected)",
        title=title,
        aspect="equal",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path, dpi)


def plot_pr(
    curves: Curves,
    path: str | Path,
    *,
    title: str = "Precision-recall curve",
    dpi: int = 120,
) -> Path:
    """Plot one precision-recall curve per entry of ``curves`` (``{name: (labels, scores)}``) into a PNG.

    Curves are drawn as steps (average precision is their step-wise area); the legend gives each
    curve's AP and its share of fake items, the precision of a chance detector. An entry without fake
    items has no curve: it is listed as undefined and not drawn.
    """
    _check_curves(curves)
    fig, ax = _new_figure((5.5, 5.0))
    for name, (labels, scores) in curves.items():
        precision, recall, _ = precision_recall_curve(labels, scores)
        ap = average_precision(labels, scores)
        if math.isnan(ap):
            logger.warning("plot_pr: %r has no fake item; its precision-recall curve is undefined", name)
            ax.plot([], [], label=f"{name} (AP undefined: no fake item)")
            continue
        prevalence = float(np.mean(np.asarray(labels) == 1))
        ax.plot(
            recall,
            precision,
            drawstyle="steps-post",
            linewidth=1.8,
            label=f"{name} (AP = {_fmt(ap)}, fake share {prevalence:.2f})",
        )
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.05),
        xlabel="Recall (fake detected)",
        ylabel="Precision (called fake that are fake)",
        title=title,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path, dpi)


def plot_score_histogram(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    path: str | Path,
    threshold: float = 0.5,
    *,
    bins: int = 20,
    title: str = "Score distribution",
    dpi: int = 120,
) -> Path:
    """Histogram of the scores of real and fake items, overlaid, with the decision threshold marked.

    The title gives the AUC (when both classes are present); the legend gives each class's count.
    """
    y, s = _validate(labels, scores)
    threshold = _check_threshold(threshold)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise MetricInputError(f"bins: must be a positive integer, got {bins!r}")
    fig, ax = _new_figure((6.0, 4.0))
    edges = np.linspace(0.0, 1.0, bins + 1)
    style: dict[str, Any] = {"bins": edges, "alpha": 0.55, "edgecolor": "white", "linewidth": 0.5}
    n_real = int(np.count_nonzero(y == 0))
    n_fake = int(y.shape[0] - n_real)
    real_counts, _, _ = ax.hist(s[y == 0], color="tab:blue", label=f"real (n = {n_real})", **style)
    fake_counts, _, _ = ax.hist(s[y == 1], color="tab:red", label=f"fake (n = {n_fake})", **style)
    tallest = max(float(np.max(real_counts)), float(np.max(fake_counts)), 1.0)
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold = {threshold:g}")
    auc = roc_auc(y, s)
    ax.set(
        xlim=(0.0, 1.0),
        xlabel="Score (probability of fake)",
        ylim=(0.0, tallest * 1.25),  # headroom for the legend above the bars
        ylabel="Number of items",
        title=f"{title} (AUC = {_fmt(auc)})",
    )
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncols=3, fontsize="small")
    return _save(fig, path, dpi)
