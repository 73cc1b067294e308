"""Tests of cevit.evaluation.metrics: hand-computed cases, scikit-learn as an oracle, bootstrap, reports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from cevit.errors import CevitError
from cevit.evaluation import (
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

SEEDS = [0, 1, 2, 3, 4]


def random_case(seed: int, n: int = 150, decimals: int = 1, fake_share: float = 0.5):
    """Labels and informative scores rounded to ``decimals`` so that many scores tie."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fake_share).astype(int)
    y[:2] = [0, 1]  # both classes always present
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.25), 0.0, 1.0).round(decimals)
    return y, s


# --------------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------------


def test_perfect_separation():
    y, s = [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]
    assert roc_auc(y, s) == 1.0
    assert average_precision(y, s) == 1.0
    assert eer(y, s) == (0.0, 0.8)  # exact crossing at the lowest fake score


def test_inverted_scores():
    y, s = [0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]
    assert roc_auc(y, s) == 0.0
    rate, _ = eer(y, s)
    assert rate == 1.0
    # Precision at full recall is 2/4, reached only after both real items: AP = 0.5 * 1/3 + 0.5 * 1/2.
    assert average_precision(y, s) == pytest.approx(0.5 / 3 + 0.5 / 2)


def test_all_ties():
    y, s = [0, 1, 0, 1, 1], [0.5] * 5
    assert roc_auc(y, s) == 0.5
    fpr, tpr, thr = roc_curve(y, s)
    np.testing.assert_array_equal(fpr, [0.0, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 1.0])
    np.testing.assert_array_equal(thr, [np.inf, 0.5])
    assert average_precision(y, s) == pytest.approx(3 / 5)
    rate, threshold = eer(y, s)
    assert rate == pytest.approx(0.5)
    assert threshold == pytest.approx(0.75)  # halfway between 1.0 (for inf) and 0.5


def test_three_by_three_with_one_inversion():
    # One (real, fake) pair of the nine is ordered wrongly: 0.6 (real) > 0.5 (fake).
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.6, 0.5, 0.8, 0.9]
    assert roc_auc(y, s) == pytest.approx(8 / 9)


def test_tie_between_classes_counts_half():
    y, s = [0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]
    assert roc_auc(y, s) == pytest.approx((4 - 0.5) / 4)


def test_roc_curve_hand_points_with_ties():
    y = [0, 1, 1, 0, 1]
    s = [0.2, 0.7, 0.4, 0.4, 0.9]
    fpr, tpr, thr = roc_curve(y, s)
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.7, 0.4, 0.2])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.5, 1])
    # The trapezoidal area of the curve equals the rank-based AUC.
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s))


def test_average_precision_hand_case():
    # The example of scikit-learn's documentation: AP = 0.5 * 1 + 0.5 * 2/3.
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)


def test_precision_recall_curve_hand_case():
    p, r, thr = precision_recall_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(p, [0.5, 2 / 3, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(r, [1.0, 1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(thr, [0.1, 0.35, 0.4, 0.8])


def test_eer_exact_crossing():
    # ROC points: (0,0) -> (0,.5) at 0.9 -> (.5,.5) at 0.6, where FPR = FNR = 0.5.
    rate, threshold = eer([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    assert rate == pytest.approx(0.5)
    assert threshold == pytest.approx(0.6)


def test_eer_interpolated_crossing():
    # ROC points (fpr, fnr): thr .7 -> (1/3, 1/2), FPR - FNR = -1/6; thr .6 -> (1/3, 0), +1/3.
    # Crossing at t = (1/6) / (1/2) = 1/3 of the way: EER = 1/3, threshold = .7 - .1/3.
    rate, threshold = eer([0, 0, 0, 1, 1], [0.1, 0.2, 0.7, 0.6, 0.9])
    assert rate == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.7 - 0.1 / 3)


def test_log_loss_hand_cases():
    assert log_loss([0, 1, 1], [0.5, 0.5, 0.5]) == pytest.approx(math.log(2))
    assert log_loss([1, 0], [0.8, 0.1]) == pytest.approx(-(math.log(0.8) + math.log(0.9)) / 2)
    # A confident wrong answer is clipped: it costs -log(eps), not infinity.
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7))
    assert log_loss([1], [0.0], eps=1e-3) == pytest.approx(-math.log(1e-3))
    assert log_loss([0, 1], [0.0, 1.0]) == pytest.approx(-math.log(1 - 1e-7))


def test_threshold_metrics_hand_case():
    y = [0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.5, 0.7, 0.5, 0.6, 0.9, 0.2]
    m = threshold_metrics(y, s, threshold=0.5)
    # score == threshold counts as real: predictions = [0, 0, 1, 0, 1, 1, 0]
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 2)
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert all(type(m[k]) is int for k in ("tp", "fp", "tn", "fn"))
    assert set(m) == {"accuracy", "precision", "recall", "f1", "tp", "fp", "tn", "fn"}


def test_threshold_metrics_zero_division_is_zero():
    m = threshold_metrics([0, 0, 1], [0.1, 0.2, 0.3], threshold=0.9)  # nothing called fake
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    assert m["accuracy"] == pytest.approx(2 / 3)
    m = threshold_metrics([0, 0], [0.1, 0.2], threshold=0.5)  # no fake item at all
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 1.0)


def test_one_class_gives_nan_not_an_error():
    y, s = [1, 1, 1], [0.2, 0.5, 0.9]
    assert math.isnan(roc_auc(y, s))
    assert all(math.isnan(v) for v in eer(y, s))
    fpr, tpr, _ = roc_curve(y, s)
    assert np.isnan(fpr).all() and not np.isnan(tpr).any()
    assert average_precision(y, s) == 1.0  # all fake: every prediction of fake is right
    assert math.isnan(average_precision([0, 0], [0.2, 0.5]))  # no fake item: recall is 0/0


def test_inputs_accept_lists_bools_and_float_labels():
    expected = roc_auc([0, 1, 0, 1], [0.1, 0.4, 0.35, 0.8])
    assert roc_auc(np.array([False, True, False, True]), [0.1, 0.4, 0.35, 0.8]) == expected
    assert roc_auc(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.1, 0.4, 0.35, 0.8], np.float32)) == (
        pytest.approx(expected)
    )


# --------------------------------------------------------------------------------------------------
# scikit-learn as oracle
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skm():
    return pytest.importorskip("sklearn.metrics", reason="scikit-learn (test oracle) is not installed")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_auc_ap_match_sklearn(skm, seed, decimals):
    y, s = random_case(seed, decimals=decimals, fake_share=0.3 + 0.1 * seed)
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_curves_match_sklearn(skm, seed):
    y, s = random_case(seed, decimals=1 if seed % 2 else 2)
    fpr, tpr, thr = roc_curve(y, s)
    fpr2, tpr2, thr2 = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, fpr2)
    np.testing.assert_allclose(tpr, tpr2)
    np.testing.assert_array_equal(thr, thr2)
    p, r, t = precision_recall_curve(y, s)
    p2, r2, t2 = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(p, p2)
    np.testing.assert_allclose(r, r2)
    np.testing.assert_array_equal(t, t2)


@pytest.mark.parametrize("seed", SEEDS)
def test_log_loss_matches_sklearn(skm, seed):
    y, s = random_case(seed, decimals=3)  # the rounding puts some scores at exactly 0 and 1
    eps = 1e-7
    expected = skm.log_loss(y, np.clip(s, eps, 1 - eps), labels=[0, 1])
    assert log_loss(y, s, eps=eps) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.6])
def test_threshold_metrics_match_sklearn(skm, seed, threshold):
    y, s = random_case(seed, decimals=1)  # many scores equal to the threshold
    pred = (s > threshold).astype(int)
    m = threshold_metrics(y, s, threshold)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred, zero_division=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)


@pytest.mark.parametrize("seed", SEEDS)
def test_eer_lies_on_the_roc_curve(skm, seed):
    y, s = random_case(seed, decimals=2)
    rate, threshold = eer(y, s)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    fnr = 1 - tpr
    i = int(np.flatnonzero(fpr - fnr >= 0)[0])
    # The EER lies between the FPR and FNR of the two points that straddle the crossing.
    lo, hi = sorted([fpr[i - 1], fnr[i - 1]])
    assert min(fpr[i], fnr[i], lo) - 1e-12 <= rate <= max(fpr[i], fnr[i], hi) + 1e-12
    assert 0.0 <= threshold <= 1.0


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------


def test_bootstrap_contains_point_estimate_and_is_deterministic():
    y, s = random_case(0, n=200, decimals=2)
    auc = roc_auc(y, s)
    low, high = bootstrap_ci(y, s, n_boot=500, seed=7)
    assert low < auc < high
    assert bootstrap_ci(y, s, n_boot=500, seed=7) == (low, high)
    assert bootstrap_ci(y, s, n_boot=500, seed=8) != (low, high)


def test_bootstrap_narrows_with_more_data():
    y_small, s_small = random_case(1, n=60, decimals=3)
    y_big, s_big = random_case(1, n=2000, decimals=3)
    low_s, high_s = bootstrap_ci(y_small, s_small, n_boot=400)
    low_b, high_b = bootstrap_ci(y_big, s_big, n_boot=400)
    assert (high_b - low_b) < 0.5 * (high_s - low_s)


def test_bootstrap_fast_auc_path_equals_generic_path():
    y, s = random_case(2, n=120, decimals=1)
    fast = bootstrap_ci(y, s, metric=roc_auc, n_boot=300, seed=3)
    generic = bootstrap_ci(y, s, metric=lambda a, b: roc_auc(a, b), n_boot=300, seed=3)
    assert fast == pytest.approx(generic, abs=1e-12)


def test_bootstrap_stratified_keeps_class_counts():
    y, s = random_case(3, n=40)
    seen = []

    def n_fake(labels, scores):
        seen.append(int(np.sum(labels)))
        return float(np.mean(scores))

    bootstrap_ci(y, s, metric=n_fake, n_boot=50, stratified=True)
    assert set(seen) == {int(y.sum())}
    seen.clear()
    bootstrap_ci(y, s, metric=n_fake, n_boot=50, stratified=False)
    assert len(set(seen)) > 1


def test_bootstrap_unstratified_skips_one_class_resamples():
    y = np.array([0] * 9 + [1])
    s = np.linspace(0.05, 0.95, 10)
    low, high = bootstrap_ci(y, s, n_boot=200, stratified=False)  # ~35% of resamples lack the fake
    assert 0.0 <= low <= high <= 1.0


def test_bootstrap_one_class_gives_nan_pair():
    low, high = bootstrap_ci([1, 1, 1], [0.2, 0.3, 0.9], n_boot=20)
    assert math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_boot": 0}, "n_boot"), ({"n_boot": 2.5}, "n_boot"), ({"alpha": 1.0}, "alpha"), ({"metric": 3}, "metric")],
)
def test_bootstrap_rejects_bad_parameters(kwargs, match):
    with pytest.raises(MetricInputError, match=match):
        bootstrap_ci([0, 1], [0.2, 0.8], **kwargs)


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def test_summarize_keys_types_and_values():
    y, s = random_case(5, n=100, decimals=2)
    summary = summarize(y, s, threshold=0.45, n_boot=200, seed=1)
    assert tuple(summary) == SUMMARY_KEYS
    assert set(summary) == {
        "auc", "ap", "eer", "eer_threshold", "log_loss", "ece", "accuracy", "precision", "recall", "f1",
        "threshold", "n_items", "n_real", "n_fake", "auc_ci95", "confusion_matrix",
    }  # fmt: skip
    from cevit.calibration import expected_calibration_error

    assert summary["ece"] == expected_calibration_error(np.asarray(s), np.asarray(y)) and 0 <= summary["ece"] <= 1
    json.loads(json.dumps(summary, allow_nan=False))  # both classes present: no NaN anywhere
    for key in ("auc", "ap", "eer", "eer_threshold", "log_loss", "accuracy", "precision", "recall", "f1", "threshold"):
        assert type(summary[key]) is float, key
    for key in ("n_items", "n_real", "n_fake"):
        assert type(summary[key]) is int, key
    assert summary["auc"] == roc_auc(y, s)
    assert summary["ap"] == average_precision(y, s)
    assert (summary["eer"], summary["eer_threshold"]) == eer(y, s)
    assert summary["log_loss"] == log_loss(y, s)
    assert summary["auc_ci95"] == list(bootstrap_ci(y, s, n_boot=200, seed=1))
    assert (summary["n_items"], summary["n_real"], summary["n_fake"]) == (100, 100 - int(y.sum()), int(y.sum()))
    tm = threshold_metrics(y, s, 0.45)
    assert summary["confusion_matrix"] == {k: tm[k] for k in ("tn", "fp", "fn", "tp")}
    assert all(type(v) is int for v in summary["confusion_matrix"].values())
    assert summary["accuracy"] == tm["accuracy"] and summary["threshold"] == 0.45


def test_summarize_one_class_and_no_bootstrap():
    summary = summarize([0, 0, 0], [0.1, 0.7, 0.2], n_boot=0)
    assert math.isnan(summary["auc"]) and math.isnan(summary["eer"]) and math.isnan(summary["ap"])
    assert all(math.isnan(v) for v in summary["auc_ci95"])
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 0, "tp": 0}
    json.dumps(summary)  # NaN is written as NaN, still serialisable


def test_summarize_by_group():
    y, s = random_case(6, n=90, decimals=2)
    groups = np.array(["deepfakes", "face2face", "real_only"])[np.arange(90) % 3]
    y = y.copy()
    y[groups == "real_only"] = 0
    result = summarize_by_group(y, s, list(groups), threshold=0.4, n_boot=50, seed=2)
    assert list(result) == ["deepfakes", "face2face", "real_only"]
    for name in ("deepfakes", "face2face"):
        mask = groups == name
        assert result[name] == summarize(y[mask], s[mask], threshold=0.4, n_boot=50, seed=2)
    only_real = result["real_only"]
    assert math.isnan(only_real["auc"])
    assert only_real["n_fake"] == 0 and only_real["n_items"] == 30
    assert only_real["accuracy"] == pytest.approx(float(np.mean(s[groups == "real_only"] <= 0.4)))
    json.dumps(result)


def test_summarize_by_group_validation():
    with pytest.raises(MetricInputError, match="groups"):
        summarize_by_group([0, 1], [0.1, 0.9], ["a"])
    with pytest.raises(MetricInputError, match="strings"):
        summarize_by_group([0, 1], [0.1, 0.9], ["a", 2])


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([0, 1, 1], [0.2, 0.4], "same length"),
        ([], [], "empty"),
        ([0, 2], [0.2, 0.4], "only 0 \\(real\\) and 1 \\(fake\\).*2 at index 1"),
        ([0, -1], [0.2, 0.4], "labels"),
        ([0.0, float("nan")], [0.2, 0.4], "labels"),
        (["real", "fake"], [0.2, 0.4], "labels: expected numbers"),
        ([[0, 1]], [[0.2, 0.4]], "1-D"),
        ([0, 1], [0.2, 1.5], "scores: must be finite probabilities in \\[0, 1\\].*index 1"),
        ([0, 1], [-0.1, 0.5], "scores"),
        ([0, 1], [0.2, float("nan")], "scores"),
        ([0, 1], [0.2, float("inf")], "scores"),
        ([0, 1], ["a", "b"], "scores: expected numbers"),
    ],
)
@pytest.mark.parametrize(
    "fn", [roc_curve, roc_auc, average_precision, precision_recall_curve, eer, log_loss, threshold_metrics, summarize]
)
def test_invalid_inputs_raise_value_error(fn, labels, scores, match):
    with pytest.raises(ValueError, match=match) as info:
        fn(labels, scores)
    assert isinstance(info.value, CevitError)


def test_invalid_parameters():
    with pytest.raises(MetricInputError, match="eps"):
        log_loss([0, 1], [0.2, 0.8], eps=0.0)
    with pytest.raises(MetricInputError, match="threshold"):
        threshold_metrics([0, 1], [0.2, 0.8], threshold=float("nan"))
    with pytest.raises(MetricInputError, match="n_boot"):
        summarize([0, 1], [0.2, 0.8], n_boot=-1)


def test_no_warnings_on_one_class_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summarize([1, 1], [0.3, 0.6], n_boot=10)


def test_package_import_does_not_load_matplotlib():
    code = "import sys, cevit.evaluation, cevit.evaluation.plots; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=None)
