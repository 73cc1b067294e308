"""Evaluation toolkit of cevit: metrics of a detector on a labelled test set.

The metric functions (numpy only) are exported here; the plotting helpers live in
:mod:`cevit.evaluation.plots` and need the optional ``matplotlib`` dependency (extra ``eval``), so they
are not imported by this package.
"""

from __future__ import annotations

from cevit.evaluation.metrics import (
    SUMMARY_KEYS,
    MetricInputError,
    average_precision,
    bootstrap_ci,
    eer,
    log_loss,
    precision_recall_curve,
    roc_auc,
    roc_curve,
    summarize,
    summarize_by_group,
    threshold_metrics,
)

__all__ = [
    "SUMMARY_KEYS",
    "MetricInputError",
    "average_precision",
    "bootstrap_ci",
    "eer",
    "log_loss",
    "precision_recall_curve",
    "roc_auc",
    "roc_curve",
    "summarize",
    "summarize_by_group",
    "threshold_metrics",
]
