"""cevit.calibration: temperature fit and expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from cevit.calibration import apply_temperature, binary_nll, expected_calibration_error, fit_temperature
from cevit.errors import ConfigError


def sample(n: int, scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), and logits ``scale * z`` (over-confident for scale > 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return scale * z, y


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_fit_temperature_recovers_the_scale(scale: float) -> None:
    logits, labels = sample(20000, scale)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(scale, rel=0.08)
    assert binary_nll(logits, labels, t) <= binary_nll(logits, labels, 1.0) + 1e-12


def test_temperature_improves_ece_of_an_overconfident_model_and_keeps_the_ranking() -> None:
    logits, labels = sample(20000, 4.0, seed=1)
    t = fit_temperature(logits, labels)
    before, after = apply_temperature(logits, 1.0), apply_temperature(logits, t)
    assert expected_calibration_error(after, labels) < 0.5 * expected_calibration_error(before, labels)
    assert np.array_equal(np.argsort(before, kind="stable"), np.argsort(after, kind="stable"))


def test_ece_values() -> None:
    # two bins used: 0.2 (4 items, 1 fake: fraction 0.25) and 0.9 (4 items, all fake)
    p = np.array([0.2, 0.2, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    assert expected_calibration_error(p, y, n_bins=10) == pytest.approx(0.5 * 0.05 + 0.5 * 0.1)
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([0, 1])) == 0.0


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="both real and fake"):
        fit_temperature(np.array([1.0, 2.0]), np.array([1, 1]))
    with pytest.raises(ConfigError, match="finite"):
        fit_temperature(np.array([np.nan, 2.0]), np.array([0, 1]))
    with pytest.raises(ConfigError, match="labels"):
        fit_temperature(np.array([1.0, 2.0]), np.array([0, 2]))
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        expected_calibration_error(np.array([1.5]), np.array([1]))
