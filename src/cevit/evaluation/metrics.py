"""Binary-classification metrics for deepfake detectors, in plain numpy.

Conventions used by every function of this module:

* ``labels`` are ``0`` (real) or ``1`` (fake); booleans and floats that are exactly 0/1 are accepted.
* ``scores`` are the detector's probability that an item is fake, finite and within ``[0, 1]``.
* Inputs are one-dimensional, of equal, non-zero length. Anything else raises
  :class:`MetricInputError` (a :class:`ValueError` and a :class:`~cevit.errors.CevitError`) whose message
  names the argument and what is wrong with it.
* Two threshold conventions exist, each documented where it applies: the curve functions
  (:func:`roc_curve`, :func:`precision_recall_curve`, :func:`eer`) call an item fake when
  ``score >= threshold`` (as scikit-learn does, so every curve point corresponds to an observed score),
  while :func:`threshold_metrics` and :func:`summarize` call an item fake when ``score > threshold``.
* A metric that is undefined for the input (for example the AUC of a test set with one class only) is
  returned as ``float('nan')`` instead of raising, so a per-group breakdown can still report the metrics
  that are defined. The reason is logged at DEBUG level.

The definitions match scikit-learn's ``roc_curve(drop_intermediate=False)``, ``roc_auc_score``,
``average_precision_score``, ``precision_recall_curve`` and ``log_loss`` (the tests use scikit-learn as an
oracle), but scikit-learn is not needed at run time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cevit.calibration import expected_calibration_error
from cevit.metrics import (  # the metrics training also needs live in the neutral cevit.metrics
    MetricInputError,
    _batched_auc,
    _validate,
    roc_auc,
)

__all__ = [
    "MetricInputError",
    "roc_curve",
    "roc_auc",
    "precision_recall_curve",
    "average_precision",
    "eer",
    "log_loss",
    "threshold_metrics",
    "bootstrap_ci",
    "summarize",
    "summarize_by_group",
    "SUMMARY_KEYS",
]

logger = logging.getLogger(__name__)

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]
MetricFn = Callable[[ArrayLike, ArrayLike], float]

#: The keys of the dictionary that :func:`summarize` returns, in order.
SUMMARY_KEYS: tuple[str, ...] = (
    "auc",
    "ap",
    "eer",
    "eer_threshold",
    "log_loss",
    "ece",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "threshold",
    "n_items",
    "n_real",
    "n_fake",
    "auc_ci95",
    "confusion_matrix",
)

# Upper bound on the number of elements of one block of bootstrap resamples (rows x items), which
# bounds the memory of bootstrap_ci to a few tens of MB whatever the size of the test set.
_BOOTSTRAP_BLOCK_ELEMENTS = 2_000_000


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _check_threshold(threshold: float, name: str = "threshold") -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name}: expected a number, got {threshold!r}") from exc
    if not math.isfinite(value):
        raise MetricInputError(f"{name}: must be finite, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------------


def _binary_counts(y: np.ndarray, s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cumulative true/false positive counts at each distinct score, from the highest score down.

    Returns ``(fps, tps, thresholds)``: at ``thresholds[i]`` the items with ``score >= thresholds[i]``
    are called fake, of which ``tps[i]`` are fake and ``fps[i]`` real. Tied scores form one point.
    """
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # Index of the last item of each run of equal scores.
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.shape[0] - 1]
    tps = np.cumsum(y_sorted, dtype=np.float64)[last]
    fps = (last + 1).astype(np.float64) - tps
    return fps, tps, s_sorted[last]


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Receiver operating characteristic curve, with one point per distinct score.

    Equivalent to scikit-learn's ``roc_curve(labels, scores, drop_intermediate=False)``.

    Returns:
        ``(fpr, tpr, thresholds)``, three float arrays of equal length. Point ``i`` is the false/true
        positive rate when items with ``score >= thresholds[i]`` are called fake; ``thresholds`` decrease
        strictly and start with ``inf`` (nothing called fake, the point ``(0, 0)``); tied scores form a
        single point, so the curve runs diagonally through ties. When the labels contain no real item,
        ``fpr`` is all NaN; when they contain no fake item, ``tpr`` is all NaN.
    """
    y, s = _validate(labels, scores)
    fps, tps, thresholds = _binary_counts(y, s)
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    if fps[-1] == 0 or tps[-1] == 0:
        logger.debug("roc_curve: only one class present; the rate of the missing class is NaN")
    return fpr, tpr, thresholds


def precision_recall_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision-recall pairs for each distinct score.

    Equivalent to scikit-learn's ``precision_recall_curve(labels, scores)`` except when there is no fake
    item: scikit-learn then sets recall to 1, here recall is NaN (it is 0/0) apart from the final point.

    Returns:
        ``(precision, recall, thresholds)``. ``thresholds`` are the distinct scores in increasing order;
        ``precision[i]``/``recall[i]`` apply when items with ``score >= thresholds[i]`` are called fake.
        ``precision`` and ``recall`` have one more element than ``thresholds``: the final point
        ``(precision=1, recall=0)``, which has no threshold.
    """
    y, s = _validate(labels, scores)
    fps, tps, thresholds = _binary_counts(y, s)
    precision = tps / (tps + fps)  # tps + fps >= 1 at every observed score
    if tps[-1] > 0:
        recall = tps / tps[-1]
    else:
        logger.debug("precision_recall_curve: no fake item, recall is undefined (NaN)")
        recall = np.full_like(tps, np.nan)
    return (
        np.r_[precision[::-1], 1.0],
        np.r_[recall[::-1], 0.0],
        thresholds[::-1].copy(),
    )


# --------------------------------------------------------------------------------------------------
# Scalar ranking metrics
# --------------------------------------------------------------------------------------------------


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision: the step-wise (non-interpolated) area under the precision-recall curve.

    ``AP = sum_i (R_i - R_{i-1}) * P_i`` over the distinct scores from the highest down, as in
    scikit-learn's ``average_precision_score``; tied scores form a single step.

    Returns:
        AP in ``[0, 1]``; ``nan`` when there is no fake item (recall is undefined; scikit-learn warns
        and returns a meaningless value instead). With no real item AP is 1.
    """
    precision, recall, _ = precision_recall_curve(labels, scores)
    if np.isnan(recall[0]):
        return float("nan")
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def eer(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """Equal error rate: the error rate where the false positive rate equals the false negative rate.

    Walks :func:`roc_curve`; ``FPR - FNR`` rises strictly from -1 to +1 along it, and the EER is taken
    where it crosses zero, interpolating linearly between the two ROC points around the crossing (at an
    exact crossing no interpolation is needed). The threshold is interpolated the same way between the
    two points' thresholds (the ``inf`` threshold of the first point, where nothing is called fake, is
    taken as 1.0 for this purpose), so it may lie between observed scores; items with
    ``score >= threshold`` are called fake.

    Returns:
        ``(eer, threshold)``, or ``(nan, nan)`` when only one class is present.
    """
    fpr, tpr, thresholds = roc_curve(labels, scores)
    if np.isnan(fpr[0]) or np.isnan(tpr[0]):
        logger.debug("eer: only one class present, EER is undefined")
        return float("nan"), float("nan")
    fnr = 1.0 - tpr
    diff = fpr - fnr
    i = int(np.flatnonzero(diff >= 0.0)[0])  # exists: the last point has fpr=1, fnr=0
    thr = np.where(np.isinf(thresholds), 1.0, thresholds)
    if diff[i] == 0.0 or i == 0:
        return float(fpr[i]), float(thr[i])
    t = -diff[i - 1] / (diff[i] - diff[i - 1])
    rate = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    threshold = thr[i - 1] + t * (thr[i] - thr[i - 1])
    return float(rate), float(threshold)


def log_loss(labels: ArrayLike, scores: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy (natural log) with scores clipped to ``[eps, 1 - eps]``.

    Clipping keeps a confident wrong answer (score exactly 0 or 1) finite: it costs ``-log(eps)``
    (about 16.1 for the default ``eps``).
    """
    y, s = _validate(labels, scores)
    eps = float(eps)
    if not (0.0 < eps < 0.5):
        raise MetricInputError(f"eps: must be in (0, 0.5), got {eps!r}")
    p = np.clip(s, eps, 1.0 - eps)
    losses = np.where(y == 1, -np.log(p), -np.log1p(-p))
    return float(losses.mean())


def threshold_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> dict[str, Any]:
    """Confusion counts and derived metrics at one decision threshold.

    An item is called fake when ``score > threshold`` (strictly). Ratios whose denominator is zero
    (precision with no item called fake, recall with no fake item, F1 when both are zero) are defined as
    0.0, like scikit-learn's ``zero_division=0``.

    Returns:
        ``{"accuracy", "precision", "recall", "f1"}`` as floats and ``{"tp", "fp", "tn", "fn"}`` as ints,
        where positive means fake.
    """
    y, s = _validate(labels, scores)
    threshold = _check_threshold(threshold)
    pred = s > threshold
    fake = y == 1
    tp = int(np.count_nonzero(pred & fake))
    fp = int(np.count_nonzero(pred & ~fake))
    fn = int(np.count_nonzero(~pred & fake))
    tn = int(np.count_nonzero(~pred & ~fake))

    def ratio(num: int, den: int) -> float:
        return num / den if den else 0.0

    return {
        "accuracy": ratio(tp + tn, tp + fp + tn + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------


def _resample_blocks(y: np.ndarray, n_boot: int, rng: np.random.Generator, stratified: bool) -> Iterator[np.ndarray]:
    """Yield blocks of bootstrap index rows, ``(rows, n)`` each, ``n_boot`` rows in all.

    Stratified: each row draws, with replacement, as many real items from the real ones and as many fake
    items from the fake ones as the input has (real ones first). Otherwise rows draw from all items.
    """
    n = y.shape[0]
    block = max(1, min(n_boot, _BOOTSTRAP_BLOCK_ELEMENTS // n))
    pools = [np.flatnonzero(y == 0), np.flatnonzero(y == 1)] if stratified else [np.arange(n)]
    pools = [p for p in pools if p.size]
    done = 0
    while done < n_boot:
        rows = min(block, n_boot - done)
        parts = [pool[rng.integers(0, pool.size, size=(rows, pool.size))] for pool in pools]
        yield np.concatenate(parts, axis=1)
        done += rows


def bootstrap_ci(
    labels: ArrayLike,
    scores: ArrayLike,
    metric: MetricFn = roc_auc,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | None = 0,
    stratified: bool = True,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``metric(labels, scores)``.

    Draws ``n_boot`` resamples with replacement and returns the ``alpha/2`` and ``1 - alpha/2``
    percentiles (linear interpolation) of the metric over them. With ``stratified=True`` (the default)
    the real and the fake items are resampled separately, so every resample keeps the input's class
    counts and, when the input has both classes, both classes. The same ``seed`` gives the same
    resamples and so the same interval, whatever the metric.

    ``metric`` is any function of ``(labels, scores)`` returning a float; :func:`roc_auc` (the default)
    is computed for all resamples at once with vectorised numpy (1000 resamples of 200 items take a few
    tens of ms), other metrics are called once per resample. Resamples where the metric is NaN (for
    example a one-class resample without stratification) are left out of the percentiles.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when the metric is NaN for every resample.
    """
    y, s = _validate(labels, scores)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise MetricInputError(f"n_boot: must be a positive integer, got {n_boot!r}")
    alpha = float(alpha)
    if not (0.0 < alpha < 1.0):
        raise MetricInputError(f"alpha: must be in (0, 1), got {alpha!r}")
    if not callable(metric):
        raise MetricInputError(f"metric: must be callable, got {metric!r}")

    rng = np.random.default_rng(seed)
    values: list[np.ndarray] = []
    for idx in _resample_blocks(y, int(n_boot), rng, stratified):
        if metric is roc_auc:
            values.append(_batched_auc(y[idx], s[idx]))
        else:
            values.append(np.array([float(metric(y[row], s[row])) for row in idx], dtype=np.float64))
    stats = np.concatenate(values)
    finite = stats[np.isfinite(stats)]
    if finite.size < stats.size:
        logger.debug("bootstrap_ci: %d of %d resamples gave a NaN metric", stats.size - finite.size, stats.size)
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(low), float(high)


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def summarize(
    labels: ArrayLike,
    scores: ArrayLike,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int | None = 0,
) -> dict[str, Any]:
    """All metrics of a labelled test set in one JSON-serialisable dictionary.

    Keys (see :data:`SUMMARY_KEYS`): ``auc``, ``ap``, ``eer``, ``eer_threshold``, ``log_loss``, ``ece`` (expected
    calibration error of the scores as probabilities, 15 equal-width bins, :mod:`cevit.calibration`) and
    ``accuracy``, ``precision``, ``recall``, ``f1``, ``threshold`` (floats); ``n_items``, ``n_real``,
    ``n_fake`` (ints); ``auc_ci95``, the ``[low, high]`` stratified percentile-bootstrap 95% interval of
    the AUC over ``n_boot`` resamples (``n_boot=0`` skips it and gives ``[nan, nan]``); and
    ``confusion_matrix``, ``{"tn", "fp", "fn", "tp"}`` (ints). The threshold metrics call an item fake
    when ``score > threshold``. Values are plain Python numbers; NaN appears only for metrics that are
    undefined on the input (AUC, AP, EER and the interval on a one-class set).
    """
    y, s = _validate(labels, scores)
    threshold = _check_threshold(threshold)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise MetricInputError(f"n_boot: must be a non-negative integer, got {n_boot!r}")
    tm = threshold_metrics(y, s, threshold)
    eer_value, eer_threshold = eer(y, s)
    n_fake = int(np.count_nonzero(y == 1))
    if n_boot > 0:
        ci_low, ci_high = bootstrap_ci(y, s, metric=roc_auc, n_boot=int(n_boot), alpha=0.05, seed=seed)
    else:
        ci_low, ci_high = float("nan"), float("nan")
    return {
        "auc": roc_auc(y, s),
        "ap": average_precision(y, s),
        "eer": eer_value,
        "eer_threshold": eer_threshold,
        "log_loss": log_loss(y, s),
        "ece": expected_calibration_error(s, y),
        "accuracy": tm["accuracy"],
        "precision": tm["precision"],
        "recall": tm["recall"],
        "f1": tm["f1"],
        "threshold": threshold,
        "n_items": int(y.shape[0]),
        "n_real": int(y.shape[0]) - n_fake,
        "n_fake": n_fake,
        "auc_ci95": [ci_low, ci_high],
        "confusion_matrix": {"tn": tm["tn"], "fp": tm["fp"], "fn": tm["fn"], "tp": tm["tp"]},
    }


def summarize_by_group(
    labels: ArrayLike,
    scores: ArrayLike,
    groups: Sequence[str],
    **kw: Any,
) -> dict[str, dict[str, Any]]:
    """:func:`summarize` applied separately to the items of each group (e.g. manipulation method).

    ``groups`` gives each item's group name (a string), aligned with ``labels`` and ``scores``; keyword
    arguments (``threshold``, ``n_boot``, ``seed``) are passed to :func:`summarize`. A group with one
    class gets NaN for AUC, AP, EER and the AUC interval, but its accuracy and other threshold metrics
    are still computed.

    Returns:
        ``{group: summary}`` with the groups in sorted order.
    """
    y, s = _validate(labels, scores)
    group_list = list(groups)
    if len(group_list) != y.shape[0]:
        raise MetricInputError(
            f"groups must have the same length as labels; got {len(group_list)} groups and {y.shape[0]} labels"
        )
    for i, g in enumerate(group_list):
        if not isinstance(g, str):
            raise MetricInputError(f"groups: expected strings, got {g!r} ({type(g).__name__}) at index {i}")
    names = np.array(group_list, dtype=object)
    return {str(name): summarize(y[names == name], s[names == name], **kw) for name in sorted(set(group_list))}
