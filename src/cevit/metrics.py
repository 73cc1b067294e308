"""Pure metric functions shared by training and evaluation (numpy only; no import of either package).

:mod:`cevit.evaluation.metrics` re-exports everything here and documents the conventions (labels 0 real /
1 fake, scores = P(fake) in ``[0, 1]``, invalid input raises :class:`MetricInputError`, an undefined metric
is ``nan``). Training uses :func:`roc_auc` for its validation AUCs; the evaluation toolkit builds its curves,
bootstrap intervals and reports on the same validation helpers and rank AUC.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt

from cevit.errors import CevitError

__all__ = ["MetricInputError", "roc_auc"]

logger = logging.getLogger(__name__)

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


class MetricInputError(CevitError, ValueError):
    """Labels, scores or a parameter given to a metric function are invalid."""


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:  # ragged nested sequences and the like
        raise MetricInputError(f"{name}: cannot be read as a 1-D array ({exc})") from exc
    if arr.ndim != 1:
        raise MetricInputError(f"{name}: expected a 1-D sequence, got an array of shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise MetricInputError(f"{name}: expected numbers, got values of dtype {arr.dtype}")
    return arr


def _validate_labels(labels: ArrayLike, name: str = "labels") -> np.ndarray:
    arr = _as_1d(labels, name)
    bad = ~((arr == 0) | (arr == 1))  # NaN compares unequal to both, so it is rejected too
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise MetricInputError(
            f"{name}: must contain only 0 (real) and 1 (fake); found {int(bad.sum())} other value(s), "
            f"the first {arr[first].item()!r} at index {first}"
        )
    return arr.astype(np.int64)


def _validate_scores(scores: ArrayLike, name: str = "scores") -> FloatArray:
    arr = _as_1d(scores, name).astype(np.float64)
    bad = ~np.isfinite(arr) | (arr < 0.0) | (arr > 1.0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise MetricInputError(
            f"{name}: must be finite probabilities in [0, 1]; found {int(bad.sum())} invalid value(s), "
            f"the first {arr[first].item()!r} at index {first}"
        )
    return arr


def _validate(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, FloatArray]:
    """Return ``labels`` as int64 and ``scores`` as float64 arrays, or raise MetricInputError."""
    y = _validate_labels(labels)
    s = _validate_scores(scores)
    if y.shape[0] != s.shape[0]:
        raise MetricInputError(
            f"labels and scores must have the same length; got {y.shape[0]} labels and {s.shape[0]} scores"
        )
    if y.shape[0] == 0:
        raise MetricInputError("labels and scores are empty; at least one item is needed")
    return y, s


def _batched_auc(labels: np.ndarray, scores: np.ndarray) -> FloatArray:
    """Mann-Whitney AUC of each row of ``(rows, n)`` label and score arrays (NaN for one-class rows).

    Ties get their average rank, so a tied (real, fake) pair counts one half.
    """
    rows, n = scores.shape
    order = np.argsort(scores, axis=1, kind="stable")
    v = np.take_along_axis(scores, order, axis=1)
    y = np.take_along_axis(labels, order, axis=1).astype(np.float64)
    idx = np.arange(n)
    differs = v[:, 1:] != v[:, :-1]
    first_of_run = np.ones((rows, n), dtype=bool)
    first_of_run[:, 1:] = differs
    last_of_run = np.ones((rows, n), dtype=bool)
    last_of_run[:, :-1] = differs
    start = np.maximum.accumulate(np.where(first_of_run, idx, 0), axis=1)
    end = np.minimum.accumulate(np.where(last_of_run, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
    midrank = (start + end) / 2.0 + 1.0  # 1-based average rank of each tie run
    n_pos = y.sum(axis=1)
    n_neg = n - n_pos
    rank_sum = (midrank * y).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve, computed from ranks (the Mann-Whitney U statistic).

    It is the probability that a random fake item scores higher than a random real item, a tie counting
    one half; it equals the trapezoidal area under :func:`cevit.evaluation.metrics.roc_curve` and scikit-learn's
    ``roc_auc_score``.

    Returns:
        The AUC in ``[0, 1]``, or ``nan`` when only one class is present (the AUC is then undefined;
        scikit-learn raises instead).
    """
    y, s = _validate(labels, scores)
    value = float(_batched_auc(y[None, :], s[None, :])[0])
    if math.isnan(value):
        logger.debug("roc_auc: only one class present (%d items), AUC is undefined", y.shape[0])
    return value
