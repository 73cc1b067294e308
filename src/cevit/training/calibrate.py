"""Fit the temperature of a trained checkpoint on its run's validation split and store it with the weights.

    cevit calibrate --config configs/default_v1_mixed_v3.yaml --weights runs/.../best.safetensors --output cal.safetensors

The validation split is rebuilt from the training config exactly as the trainer built it (same indexes,
filters, split seed, pseudo-fakes; no augmentation), so the temperature is fitted on faces the weights were
never trained on. The output checkpoint holds the same tensors, in the same storage (fp32, fp16 or mixed), and
its inference config gains ``calibration`` (:class:`cevit.models.pretrained.Calibration`): the temperature,
what it was fitted on and the expected calibration error (ECE) before and after, overall and per source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cevit.calibration import apply_temperature, binary_nll, expected_calibration_error, fit_temperature
from cevit.errors import ConfigError
from cevit.models.cross_efficient_vit import CrossEfficientViT
from cevit.training.config import TrainConfig
from cevit.training.data import LabelledFaceDataset, prepare_data

__all__ = ["CalibrationReport", "validation_logits", "calibrate_checkpoint"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CalibrationReport:
    temperature: float
    n_samples: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    by_source: dict[str, dict[str, float]]  #: per source: n, ece_before, ece_after
    auc_by_source: dict[str, float]  #: validation AUC per source, as the trainer reports it (unchanged by T)
    output: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@torch.no_grad()
def validation_logits(model: CrossEfficientViT, dataset: LabelledFaceDataset, *, batch_size: int = 64,
                      num_workers: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:  # fmt: skip
    """(logits, labels, sources) of every item of ``dataset`` (eval mode, fp32)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    model.eval()
    logits, labels, items = [], [], []
    for x, y, idx in loader:
        logits.append(model(x).float().squeeze(1).numpy().astype(np.float64))
        labels.append(y.numpy().astype(np.int64))
        items.append(idx.numpy())
    sources = dataset.sources
    order = np.concatenate(items)
    return np.concatenate(logits), np.concatenate(labels), [sources[int(i)] for i in order]


def _storage(path: Path) -> tuple[bool, list[str]]:
    """(half, keep_fp32) that reproduce the storage of the checkpoint at ``path``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        dtypes = {k: fh.get_slice(k).get_dtype() for k in fh.keys()}  # noqa: SIM118 - safe_open has no items()
    floats = {k: d for k, d in dtypes.items() if d in ("F16", "F32", "BF16", "F64")}
    if not any(d == "F16" for d in floats.values()):
        return False, []
    return True, sorted(k for k, d in floats.items() if d == "F32")


def calibrate_checkpoint(
    config: TrainConfig, weights: str | Path, output: str | Path, *, batch_size: int = 64
) -> CalibrationReport:
    """Fit a temperature for ``weights`` on the validation split of ``config``; write ``output``.

    The validation images are made with the checkpoint's own preprocessing contract (as at inference).
    """
    from cevit.checkpoint import load_checkpoint, save_checkpoint
    from cevit.models.pretrained import Calibration, default_inference_for

    weights, output = Path(weights), Path(output)
    if output.resolve() == weights.resolve():
        raise ConfigError(f"{output}: write the calibrated checkpoint to a new file, not over its input")
    model = load_checkpoint(weights)
    info = model.checkpoint_info
    data = prepare_data(config.data, spec=model.preprocessing, augment=None, seed=config.train.seed,
                        batch_size=config.train.batch_size)  # fmt: skip
    if data.val is None:
        raise ConfigError("the training config has no validation split to calibrate on (data.val_fraction = 0 and no "
                          "explicit val rows)")  # fmt: skip
    log.info("scoring %d validation samples of %s", len(data.val), weights)
    z, y, sources = validation_logits(model, data.val, batch_size=batch_size)
    t = fit_temperature(z, y)
    p0, p1 = apply_temperature(z, 1.0), apply_temperature(z, t)
    ece0, ece1 = expected_calibration_error(p0, y), expected_calibration_error(p1, y)
    from cevit.training.trainer import per_source_auc

    auc_by_source = per_source_auc(p0, y, sources)
    by_source: dict[str, dict[str, float]] = {}
    src = np.asarray(sources)
    for name in sorted(set(sources)):
        mask = src == name
        by_source[name] = {"n": int(mask.sum()), "ece_before": expected_calibration_error(p0[mask], y[mask]),
                           "ece_after": expected_calibration_error(p1[mask], y[mask])}  # fmt: skip
    fitted_on = (f"validation split of {Path(config.output_dir).name} ({len(y)} samples: "
                 f"{int((y == 0).sum())} real, {int((y == 1).sum())} fake or pseudo-fake)")  # fmt: skip
    base = info.inference or default_inference_for(model.preset_name)
    inference = replace(base, calibration=Calibration(method="temperature", temperature=t, fitted_on=fitted_on,
                                                      ece_before=ece0, ece_after=ece1))  # fmt: skip
    half, keep = _storage(weights)
    provenance = dict(info.provenance)
    provenance["calibration"] = {"temperature": t, "fitted_on": fitted_on, "ece_before": ece0, "ece_after": ece1,
                                 "nll_before": binary_nll(z, y), "nll_after": binary_nll(z, y, t),
                                 "by_source": by_source, "auc_by_source": auc_by_source,
                                 "calibrated_from_sha256": info.sha256}  # fmt: skip
    sha = save_checkpoint(model, output, half=half, keep_fp32=keep, inference=inference, weights_tag=info.weights_tag,
                          **provenance)  # fmt: skip
    return CalibrationReport(temperature=t, n_samples=int(len(y)), ece_before=ece0, ece_after=ece1,
                             nll_before=binary_nll(z, y), nll_after=binary_nll(z, y, t), by_source=by_source,
                             auc_by_source=auc_by_source, output=str(output), sha256=sha)  # fmt: skip
