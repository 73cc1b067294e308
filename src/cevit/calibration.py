"""Probability calibration: temperature scaling of the fake logit and the expected calibration error.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) divides the logit by one
number ``T`` fitted on held-out data by minimising the negative log-likelihood: P(fake) = sigmoid(logit / T).
It does not change the ranking of scores (AUC is unchanged) nor the decision at 0.5, only what a probability
means: after it, of the faces scored 0.8, about 80 % should be fake *on data like the fitting data*.

The fit uses :class:`torch.optim.LBFGS` on ``log T`` (so ``T`` stays positive); the ECE is the usual
equal-width-bin estimate (15 bins).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cevit.errors import ConfigError

__all__ = ["fit_temperature", "expected_calibration_error", "apply_temperature", "binary_nll"]


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if z.shape != y.shape:
        raise ConfigError(f"calibration: {z.size} logits but {y.size} labels")
    if z.size == 0:
        raise ConfigError("calibration: no samples")
    if not np.isfinite(z).all():
        raise ConfigError("calibration: logits must be finite")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ConfigError("calibration: labels must be 0 (real) or 1 (fake)")
    return z, y


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """P(fake) = sigmoid(logit / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    return 1.0 / (1.0 + np.exp(-z))


def binary_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under sigmoid(logit / temperature)."""
    z, y = _check(logits, labels)
    t = torch.as_tensor(z / temperature)
    return float(torch.nn.functional.binary_cross_entropy_with_logits(t, torch.as_tensor(y)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, max_iter: int = 200) -> float:
    """The temperature T > 0 minimising the NLL of ``labels`` under sigmoid(``logits`` / T).

    Needs both classes. T > 1 softens over-confident scores, T < 1 sharpens timid ones.
    """
    z, y = _check(logits, labels)
    if y.min() == y.max():
        raise ConfigError("calibration: the fitting data must contain both real and fake samples")
    zt, yt = torch.as_tensor(z), torch.as_tensor(y)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(zt / log_t.exp(), yt)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or t <= 0:  # pragma: no cover - LBFGS on a convex 1-D problem
        raise ConfigError("calibration: the temperature fit did not converge")
    return t


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """ECE of P(fake): sum over equal-width bins of |mean P - fake fraction| weighted by the bin's share."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if p.shape != y.shape or p.size == 0:
        raise ConfigError(f"ECE: {p.size} probabilities but {y.size} labels")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ConfigError("ECE: probabilities must be finite and in [0, 1]")
    if n_bins < 1:
        raise ConfigError(f"ECE: n_bins must be >= 1, got {n_bins}")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(ece)
