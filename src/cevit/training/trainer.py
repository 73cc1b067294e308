"""The training loop: ``train(config) -> TrainResult`` (a :class:`Trainer`), resumable exactly, on CPU or CUDA.

What one run does (all settings in :class:`~cevit.training.config.TrainConfig`):

* builds the model (``create_model(preset, **overrides)`` after ``torch.manual_seed(seed)``, optionally
  EfficientNet-Lite0 backbones), reads and splits the data (:func:`cevit.training.data.prepare_data`);
* each epoch visits ``steps_per_epoch = items // items_per_batch`` batches in the order of the permutation
  ``np.random.default_rng([seed, epoch])`` (the remainder is dropped); before every optimisation step torch's
  RNG is re-seeded from ``(seed, global step)``, so dropout and drop-connect depend on nothing but the step;
* loss: ``BCEWithLogits`` with ``pos_weight`` (fake class); AdamW or SGD; the learning rate follows the
  schedule per optimisation step; optional gradient clipping, EMA of the weights (validated and saved
  instead of the raw weights when on), mixed precision and channels-last on CUDA;
* validates every epoch: frame AUC (every crop), group AUC (mean score per (group, label), i.e. per video or
  identity), validation loss (plain BCE, no pos_weight); early stopping on the group AUC, or the frame AUC
  when every group has one crop;
* writes to ``output_dir``: ``best.safetensors`` / ``last.safetensors`` (:func:`cevit.checkpoint.save_checkpoint`
  with provenance: config, index paths and SHA-256, git commit, metrics, epoch, steps, device, init),
  ``train_state.pt`` (everything needed to resume; written atomically every ``save_every_steps`` and at each
  epoch end; loadable with ``torch.load(weights_only=True)``), ``log.csv`` and ``curves.png``.

**Resuming** (``resume=True``) restores the raw weights, optimiser, scheduler, loss scaler, EMA, RNG states and
counters from ``train_state.pt`` and skips the finished part of the current epoch, so the weights after N steps
are the same as those of an uninterrupted run (bit for bit on CPU). The config must match the one of the
interrupted run except for the keys in :data:`RESUME_MUTABLE` (device, workers, logging, ``max_steps``,
``epochs``, ...), and the index files must be unchanged.

**max_steps** stops the run after that many optimisation steps in total. When this happens mid-epoch, the
state is saved (resumable), the current weights are validated for the record (``log.csv``, the result and
``last.safetensors``, marked ``partial_epoch``; ``best.safetensors`` only when none exists yet) without
counting for early stopping, so a resumed run continues exactly.

**Several processes** (``torchrun --nproc-per-node N -m cevit.cli.main train ...``, or ``cevit train --nproc N``;
a :class:`~cevit.training.distributed.DistributedContext`): the model is wrapped in DistributedDataParallel
(gloo on CPU, NCCL on CUDA with one GPU per process and synchronised BatchNorm); every global batch of
``batch_size`` items is split between the ranks (:class:`~cevit.training.distributed.RankBatchSampler`), so the
steps, the learning-rate schedule and the logged loss (averaged over the ranks) are those of a single process
with the same ``batch_size``. Rank 0 validates (the metrics are sent to the other ranks, so all take the same
early-stopping decision) and alone writes ``log.csv``, checkpoints, ``train_state.pt`` and curves; resuming
works as for one process (each rank loads rank 0's state).
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cevit.config import to_dict
from cevit.errors import CevitError, CheckpointError, ConfigError
from cevit.metrics import roc_auc
from cevit.training.config import OptimSection, ScheduleSection, TrainConfig
from cevit.training.data import EpochBatchSampler, TrainData, collate_sbi_pairs, prepare_data
from cevit.training.distributed import DistributedContext, RankBatchSampler, mean_over_ranks

__all__ = [
    "TrainResult", "Trainer", "LoopState", "train", "ModelEma", "lr_factor", "RESUME_MUTABLE", "STATE_FORMAT",
    "load_train_state",
]  # fmt: skip

logger = logging.getLogger(__name__)

STATE_FORMAT = "cevit-train-state"
STATE_VERSION = 1
#: Config keys that may differ between an interrupted run and its resumption.
RESUME_MUTABLE = frozenset({
    "output_dir", "data.num_workers", "train.device", "train.amp", "train.channels_last", "train.max_steps",
    "train.epochs", "train.early_stopping", "train.log_every_steps", "train.save_every_steps",
    "train.val_batch_size",
})  # fmt: skip
LOG_FIELDS = ("epoch", "step", "lr", "train_loss", "val_loss", "val_auc_frame", "val_auc_group", "seconds")


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a run produced (also when it stopped at ``max_steps`` or early)."""

    output_dir: str
    best_checkpoint: str | None  #: path of best.safetensors (None when it was never written)
    last_checkpoint: str | None
    train_state: str
    #: the early-stopping metric of the best epoch (group AUC, or frame AUC when groups == frames)
    best_metric: float | None
    best_epoch: int | None  #: 1-based
    epochs_completed: int
    global_step: int
    steps_per_epoch: int
    stopped_early: bool
    finished: bool  #: all epochs done or early-stopped (False: stopped by max_steps)
    final_metrics: dict[str, Any] = field(default_factory=dict)  #: the latest validation
    history: tuple[dict[str, Any], ...] = ()  #: one entry per completed epoch
    device: str = "cpu"


# ----------------------------------------------------------------------------------------------------------
# small building blocks


class ModelEma:
    """Exponential moving average of a model's state (parameters and buffers).

    ``ema = d * ema + (1 - d) * model`` after every optimisation step, with ``d = min(decay, (1 + n) / (10 + n))``
    after n updates (the average starts fast, so short runs are not dominated by the initial weights).
    Integer buffers (BN step counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        ema_f, src_f = [], []
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.is_floating_point():
                ema_f.append(e)
                src_f.append(m.detach())
            else:
                e.copy_(m)
        if not ema_f:
            return
        if hasattr(torch, "_foreach_lerp_"):  # one fused call instead of hundreds of small kernels
            torch._foreach_lerp_(ema_f, src_f, 1.0 - d)
        else:  # pragma: no cover - older torch
            for e, m in zip(ema_f, src_f):
                e.lerp_(m, 1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])


def lr_factor(step: int, *, schedule: ScheduleSection, steps_per_epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rate at optimisation step ``step`` (0-based)."""
    warm = int(round(schedule.warmup_epochs * steps_per_epoch))
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if schedule.name == "constant":
        return 1.0
    if schedule.name == "step":
        return float(schedule.gamma ** ((step // steps_per_epoch) // schedule.step_size))
    total = epochs * steps_per_epoch
    t = min(max((step - warm) / max(1, total - warm), 0.0), 1.0)
    return schedule.min_lr_ratio + (1.0 - schedule.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters the model says get no weight decay (its ``no_weight_decay()``, as in timm)."""
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def _build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.Optimizer:
    """AdamW or SGD with two groups: weight decay, and none (with ``no_decay_bias_norm``: every 0-/1-D parameter,
    i.e. biases and normalisation weights, and the parameters named by the model's ``no_weight_decay()``)."""
    skip = _no_weight_decay_names(model) if cfg.no_decay_bias_norm else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if cfg.no_decay_bias_norm and (p.ndim <= 1 or name in skip):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]  # fmt: skip
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def _step_seed(seed: int, step: int) -> int:
    words = np.random.SeedSequence([seed, step, 0x5EED]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [int(version), [int(v) for v in internal], gauss],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },  # fmt: skip
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch_cpu"])
    cuda = state.get("torch_cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                           text=True, timeout=5, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    out = r.stdout.strip()
    return out if r.returncode == 0 and len(out) == 40 else None


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but CUDA is not available (use auto or cpu)")
    return torch.device(name)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and k != "overrides":
                out.update(_flatten(v, key + "."))
            else:
                out[key] = v
        return out
    return {prefix.rstrip("."): d}


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read ``train_state.pt`` with ``torch.load(weights_only=True)``; CheckpointError when unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state to resume from (start without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the training state ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: not a cevit training state (format {STATE_FORMAT} v{STATE_VERSION})")
    return state


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _CsvLog:
    def __init__(self, path: Path, *, append: bool) -> None:
        self.path = path
        if not (append and path.exists()):
            with open(path, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow(LOG_FIELDS)

    def write(self, **row: Any) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow([_fmt(row.get(k)) for k in LOG_FIELDS])


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        if not getattr(_plot_curves, "_warned", False):
            logger.warning("matplotlib is not installed: skipping %s (pip install matplotlib)", path)
            _plot_curves._warned = True  # type: ignore[attr-defined]
        return
    if not history:
        return
    epochs = [h["epoch"] for h in history]

    def series(key: str) -> list[float]:
        return [float("nan") if h.get(key) is None else float(h[key]) for h in history]

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, series("train_loss"), marker="o", label="train loss")
    ax1.plot(epochs, series("val_loss"), marker="o", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("BCE loss")
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax2.plot(epochs, series("val_auc_frame"), marker="o", label="val AUC (frame)")
    ax2.plot(epochs, series("val_auc_group"), marker="o", label="val AUC (group)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("ROC AUC")
    ax2.set_ylim(0.0, 1.0)
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def _worker_init(worker_id: int) -> None:  # pragma: no cover - runs in worker processes
    # One torch thread per worker (the workers are the parallelism). OpenCV's thread count is deliberately NOT
    # changed here: cv2.setNumThreads() in a forked worker deadlocks when the parent had used OpenCV's pool.
    torch.set_num_threads(1)


def _loader(dataset: Any, *, batch_sampler: Any = None, batch_size: int | None = None, num_workers: int,
            pin: bool, collate: Any = None, seed: int = 0) -> torch.utils.data.DataLoader:  # fmt: skip
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(worker_init_fn=_worker_init, prefetch_factor=4)
    if batch_sampler is not None:
        kwargs["batch_sampler"] = batch_sampler
    else:
        kwargs.update(batch_size=batch_size, shuffle=False)
    return torch.utils.data.DataLoader(
        dataset, num_workers=num_workers, pin_memory=pin, collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),  # keeps the loader off torch's global RNG
        **kwargs,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# validation


@torch.no_grad()
def _evaluate(model: nn.Module, data: TrainData, *, batch_size: int, device: torch.device, num_workers: int,
              amp_dtype: torch.dtype | None, channels_last: bool) -> dict[str, Any]:  # fmt: skip
    dataset = data.val
    assert dataset is not None
    was_training = model.training
    model.eval()
    scores, labels, items = [], [], []
    loss_sum = 0.0
    loader = _loader(dataset, batch_size=batch_size, num_workers=num_workers, pin=device.type == "cuda")
    for x, y, idx in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x).squeeze(1)
        logits = logits.float().cpu()
        if not torch.isfinite(logits).all():
            raise CevitError("validation produced non-finite logits: training diverged (lower optim.lr)")
        loss_sum += float(F.binary_cross_entropy_with_logits(logits, y, reduction="sum"))
        scores.append(torch.sigmoid(logits).double().numpy())
        labels.append(y.numpy())
        items.append(idx.numpy())
    model.train(was_training)
    s = np.concatenate(scores)
    y = np.concatenate(labels).astype(np.int64)
    item = np.concatenate(items)
    groups = dataset.groups
    per_group: dict[tuple[str, int], list[float]] = {}
    for score, label, i in zip(s, y, item):
        per_group.setdefault((groups[int(i)], int(label)), []).append(float(score))
    g_labels = np.array([k[1] for k in per_group], dtype=np.int64)
    g_scores = np.array([np.mean(v) for v in per_group.values()], dtype=np.float64)
    auc_frame = roc_auc(y, np.clip(s, 0.0, 1.0))
    auc_group = roc_auc(g_labels, np.clip(g_scores, 0.0, 1.0))
    by_source = per_source_auc(np.clip(s, 0.0, 1.0), y, [dataset.sources[int(i)] for i in item])
    metrics: dict[str, Any] = {
        "val_loss": loss_sum / len(y),
        "val_auc_frame": auc_frame,
        "val_auc_group": auc_group,
        "val_items": int(len(y)),
        "val_groups": int(len(per_group)),
        # early stopping: group AUC unless every group has one crop (then both AUCs are the same thing)
        "val_metric": auc_group if len(per_group) < len(y) else auc_frame,
    }
    metrics.update({f"val_auc_{name}": auc for name, auc in by_source.items()})
    if len(by_source) >= 2:
        # several sources: the mean of their AUCs, so the largest source does not decide the checkpoint alone
        metrics["val_auc_mean_source"] = float(np.mean(list(by_source.values())))
        metrics["val_metric"] = metrics["val_auc_mean_source"]
    return metrics


def per_source_auc(scores: np.ndarray, labels: np.ndarray, sources: list[str]) -> dict[str, float]:
    """Validation AUC per source (frame level).

    A source with both classes (a labelled set: its reals vs its fakes) gets its own AUC. The self-blended
    pseudo-fakes (source ``sbi``) are scored against every real item of the validation split, as the SBI
    modes always did. Sources with one class only (real-only sets) contribute their reals to ``sbi``.
    """
    src = np.asarray(sources)
    out: dict[str, float] = {}
    for name in sorted(set(sources) - {"sbi"}):
        mask = src == name
        if 0 < labels[mask].sum() < mask.sum():
            out[name] = float(roc_auc(labels[mask], scores[mask]))
    sbi = src == "sbi"
    if sbi.any() and (labels == 0).any():
        mask = sbi | (labels == 0)
        out["sbi"] = float(roc_auc(labels[mask], scores[mask]))
    return out


# ----------------------------------------------------------------------------------------------------------
# the loop


def _build_model(config: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    from cevit.models.registry import create_model

    try:
        model = create_model(config.model.preset, **dict(config.model.overrides))
    except ConfigError as exc:
        raise ConfigError(f"model.overrides: {exc}") from None
    init: dict[str, Any] = {"method": config.model.init}
    if config.model.init == "lite0":
        from cevit.training.lite0 import init_backbones_from_lite0

        init["counts"] = init_backbones_from_lite0(model)
    elif config.model.init == "checkpoint":
        from cevit.checkpoint import load_checkpoint

        path = str(config.model.init_checkpoint)
        source = load_checkpoint(path)
        if source.config != model.config:
            raise ConfigError(
                f"{path}: model.init_checkpoint has another architecture than model.preset + overrides "
                f"({source.config} vs {model.config})"
            )
        if source.preprocessing != model.preprocessing:
            raise ConfigError(
                f"{path}: model.init_checkpoint has another preprocessing contract than the model being trained "
                f"({source.preprocessing} vs {model.preprocessing})"
            )
        model.load_state_dict(source.state_dict(), strict=True)
        prov = source.checkpoint_info.provenance or {}
        init.update(checkpoint=str(Path(path).resolve()), sha256=source.checkpoint_info.sha256,
                    source_steps=prov.get("steps"), source_init=prov.get("init"),
                    source_metrics=prov.get("metrics"))  # fmt: skip
    return model, init


def _check_resume(
    state: dict[str, Any], config: TrainConfig, data: TrainData, steps_per_epoch: int, path: Path
) -> None:
    old, new = _flatten(state["config"]), _flatten(to_dict(config))
    diffs = sorted(k for k in set(old) | set(new) if k not in RESUME_MUTABLE and old.get(k) != new.get(k))
    if diffs:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diffs[:6])
        raise ConfigError(f"{path}: cannot resume with a different config ({detail}); start a new output_dir")
    old_idx = {i["path"]: i["sha256"] for i in state["data_indexes"]}
    for i in data.indexes:
        if old_idx.get(i["path"]) not in (None, i["sha256"]):
            raise ConfigError(
                f"{i['path']}: the face index changed since the run started (SHA-256 differs); cannot resume"
            )
    if int(state["steps_per_epoch"]) != steps_per_epoch:
        raise ConfigError(
            f"{path}: steps per epoch changed ({state['steps_per_epoch']} -> {steps_per_epoch}); the data changed"
        )
    if old.get("train.epochs") != new.get("train.epochs") and config.schedule.name == "cosine":
        logger.warning("resuming with train.epochs %s instead of %s: the cosine schedule changes from here",
                       new.get("train.epochs"), old.get("train.epochs"))  # fmt: skip


@dataclass(kw_only=True)
class LoopState:
    """The counters and records of a run that change while it trains (saved in ``train_state.pt``)."""

    epoch: int = 0  #: completed epochs
    step_in_epoch: int = 0  #: optimisation steps done in the current epoch
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None  #: 1-based
    patience: int = 0  #: epochs since the best one
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    final_metrics: dict[str, Any] = field(default_factory=dict)
    elapsed_before: float = 0.0  #: seconds trained before this process (resumed runs)
    #: training-loss sums and counts: since the last log line, and since the epoch started
    log_sum: float = 0.0
    log_n: int = 0
    epoch_sum: float = 0.0
    epoch_n: int = 0

    def loss_acc(self) -> dict[str, Any]:
        return {"log_sum": self.log_sum, "log_n": self.log_n, "epoch_sum": self.epoch_sum, "epoch_n": self.epoch_n}

    @classmethod
    def from_train_state(cls, state: dict[str, Any]) -> LoopState:
        acc = state["loss_acc"]
        return cls(
            epoch=int(state["epoch"]), step_in_epoch=int(state["step_in_epoch"]), global_step=int(state["global_step"]),
            best_metric=state["best_metric"], best_epoch=state["best_epoch"], patience=int(state["patience"]),
            stopped_early=bool(state["stopped_early"]), history=list(state["history"]),
            final_metrics=dict(state.get("final_metrics") or {}), elapsed_before=float(state["elapsed"]),
            log_sum=float(acc["log_sum"]), log_n=int(acc["log_n"]), epoch_sum=float(acc["epoch_sum"]),
            epoch_n=int(acc["epoch_n"]),
        )  # fmt: skip


class Trainer:
    """One training run: builds the model, data, optimiser and schedule from ``config``; :meth:`fit` trains.

    The constructor does everything :func:`train` did before the first step: it refuses an ``output_dir`` that
    already holds a run (unless ``resume``), seeds every RNG with ``train.seed``, builds the model and the data,
    moves the model to the device and creates the optimiser, scheduler, loss scaler and EMA. With ``resume=True``
    it then reads ``train_state.pt`` and calls :meth:`resume`. The methods are the pieces of the loop:
    :meth:`step` (one optimisation step), :meth:`validate`, :meth:`save` (the resumable state),
    :meth:`save_checkpoints` (``last`` / ``best``), :meth:`state_dict` / :meth:`resume`, and :meth:`fit` (the
    whole run, returning a :class:`TrainResult`).
    """

    def __init__(
        self, *, config: TrainConfig, resume: bool = False, progress: bool = True,
        distributed: DistributedContext | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.dist = dist_ctx = distributed or DistributedContext()
        self.show_progress = progress
        self.output_dir = out = Path(config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.state_path = out / "train_state.pt"
        self.best_path, self.last_path = out / "best.safetensors", out / "last.safetensors"
        saved: dict[str, Any] | None = None
        if resume:
            saved = load_train_state(self.state_path)
        elif self.state_path.exists():
            raise ConfigError(
                f"{out}: already holds a training run (train_state.pt); resume it or use another output_dir"
            )

        tc = self.tc = config.train
        self.device = device = dist_ctx.device(_resolve_device(tc.device))
        self.cuda = cuda = device.type == "cuda"
        dist_ctx.init(device)
        self.seed = tc.seed
        _seed_everything(self.seed)
        self.model, self.init = _build_model(config)
        self.data = data = prepare_data(config.data, spec=self.model.preprocessing, augment=config.augment,
                                        seed=self.seed, batch_size=tc.batch_size)  # fmt: skip
        self.steps_per_epoch = len(data.train) // data.items_per_batch
        if data.items_per_batch % dist_ctx.world_size:
            raise ConfigError(f"train.batch_size: {data.items_per_batch} items per batch cannot be split equally "
                              f"between {dist_ctx.world_size} processes")  # fmt: skip
        if saved is not None:
            _check_resume(saved, config, data, self.steps_per_epoch, self.state_path)
        total = tc.epochs * self.steps_per_epoch
        self.stop_at = total if tc.max_steps is None else min(tc.max_steps, total)

        if tc.pos_weight == "balanced":
            self.pos_weight = data.n_train_real / max(1, data.n_train_fake)
        else:
            self.pos_weight = float(tc.pos_weight)
        num_workers = config.data.num_workers
        if num_workers is None:
            num_workers = min(8, max(1, (os.cpu_count() or 2) - 1)) if cuda else 0
        self.num_workers: int = num_workers
        self.amp_dtype: torch.dtype | None = None
        if cuda and tc.amp != "none":
            self.amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
            if self.amp_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                logger.warning("bf16 is not supported on %s: using fp16 with loss scaling",
                               torch.cuda.get_device_name(device))  # fmt: skip
                self.amp_dtype = torch.float16
        self.channels_last = cuda and tc.channels_last
        if cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        if dist_ctx.enabled and cuda:  # global-batch statistics, as in one process (gloo on CPU cannot)
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        #: what the training step calls: the model itself, or its DistributedDataParallel wrapper
        self.train_model: nn.Module = self.model
        if dist_ctx.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if cuda else None
            )
        self.optimizer = _build_optimizer(self.model, config.optim)
        steps_per_epoch, schedule, epochs = self.steps_per_epoch, config.schedule, tc.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_factor(step, schedule=schedule, steps_per_epoch=steps_per_epoch, epochs=epochs),
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.ema = ModelEma(self.model, tc.ema_decay) if tc.ema_decay > 0 else None
        self.criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.pos_weight], device=device))
        #: the weights that are validated and saved: the EMA when on, else the raw model
        self.eval_model: nn.Module = self.ema.module if self.ema is not None else self.model
        self.val_batch_size = tc.val_batch_size or tc.batch_size
        self.loop = LoopState()
        self.resumed = False
        self._t0 = time.monotonic()
        self._git_commit: str | None = None
        self._log: _CsvLog | None = None
        if saved is not None:
            self.resume(saved)

    # ------------------------------------------------------------------------------------------------------
    # state

    def seconds(self) -> float:
        """Training seconds of the run so far (including those before a resume)."""
        return self.loop.elapsed_before + (time.monotonic() - self._t0)

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`resume` needs (what ``train_state.pt`` holds); plain tensors and containers only."""
        loop = self.loop
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, "config": to_dict(self.config),
            "data_indexes": [dict(i) for i in self.data.indexes], "steps_per_epoch": self.steps_per_epoch,
            "model": {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": loop.epoch, "step_in_epoch": loop.step_in_epoch, "global_step": loop.global_step,
            "best_metric": loop.best_metric, "best_epoch": loop.best_epoch, "patience": loop.patience,
            "stopped_early": loop.stopped_early, "history": loop.history, "final_metrics": loop.final_metrics,
            "elapsed": self.seconds(), "loss_acc": loop.loss_acc(), "rng": _rng_state(), "device": str(self.device),
        }  # fmt: skip

    def resume(self, state: dict[str, Any]) -> None:
        """Restore the weights, optimiser, scheduler, scaler, EMA, counters and RNG states of a saved run.

        ``state`` is what :func:`load_train_state` returns; the caller has checked that it belongs to this
        config (the constructor does, with ``resume=True``). The RNG states are restored last, so the next
        step draws exactly what the interrupted run would have drawn.
        """
        from cevit.checkpoint import load_state_dict_strict

        load_state_dict_strict(self.model, state["model"], source=str(self.state_path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise ConfigError(
                    f"{self.state_path}: the interrupted run had no EMA; cannot resume with train.ema_decay > 0"
                )
            self.ema.load_state_dict(state["ema"])
        self.loop = LoopState.from_train_state(state)
        _set_rng_state(state["rng"])
        self.resumed = True
        logger.info("resuming %s at epoch %d, step %d/%d (global step %d)", self.output_dir, self.loop.epoch + 1,
                    self.loop.step_in_epoch, self.steps_per_epoch, self.loop.global_step)  # fmt: skip

    def save(self) -> None:
        """Write ``train_state.pt`` atomically (a crash while writing leaves the previous state); rank 0 only."""
        if self.dist.is_main:
            _save_atomic(self.state_dict(), self.state_path)

    def provenance(self, metrics: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        """What ``best`` / ``last`` checkpoints record about the run."""
        from cevit import __version__

        config, data, loop = self.config, self.data, self.loop
        return {
            "config": to_dict(config),
            "data": {"indexes": [dict(i) for i in data.indexes], "mode": config.data.mode,
                     "train_items": len(data.train), "train_real": data.n_train_real, "train_fake": data.n_train_fake,
                     "val_real": data.n_val_real, "val_fake": data.n_val_fake, "val_groups": data.n_val_groups},
            "git_commit": self._git_commit, "metrics": {k: _finite_or_none(v) for k, v in metrics.items()},
            "epoch": loop.epoch, "steps": loop.global_step, "partial_epoch": partial, "device": str(self.device),
            "init": self.init, "weights": "ema" if self.ema is not None else "raw", "pos_weight": self.pos_weight,
            "cevit_version": __version__, "trainer": "cevit.training.trainer",
        }  # fmt: skip

    def save_checkpoints(self, metrics: dict[str, Any], *, partial: bool, best: bool) -> None:
        """Write ``last.safetensors`` (always) and ``best.safetensors`` (when ``best``) from the evaluated weights;
        rank 0 only."""
        from cevit.checkpoint import save_checkpoint

        if not self.dist.is_main:
            return
        save_checkpoint(self.eval_model, self.last_path, **self.provenance(metrics, partial=partial))
        if best:
            save_checkpoint(self.eval_model, self.best_path, **self.provenance(metrics, partial=partial))

    def result(self, *, finished: bool) -> TrainResult:
        loop = self.loop
        return TrainResult(
            output_dir=str(self.output_dir), best_checkpoint=str(self.best_path) if self.best_path.exists() else None,
            last_checkpoint=str(self.last_path) if self.last_path.exists() else None, train_state=str(self.state_path),
            best_metric=_finite_or_none(loop.best_metric), best_epoch=loop.best_epoch, epochs_completed=loop.epoch,
            global_step=loop.global_step, steps_per_epoch=self.steps_per_epoch, stopped_early=loop.stopped_early,
            finished=finished, final_metrics=dict(loop.final_metrics), history=tuple(loop.history),
            device=str(self.device),
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------------------
    # the pieces of the loop

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimisation step on a batch (images ``x``, 0/1 labels ``y``); returns the batch loss.

        Torch's RNG is re-seeded from ``(seed, global step)`` first, so dropout and drop-connect depend on
        nothing but the step number (this is what makes a resumed run bit-exact).
        """
        tc, loop = self.tc, self.loop
        torch.manual_seed(_step_seed(self.seed, loop.global_step))
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(self.device, non_blocking=True)
        amp = self.amp_dtype
        with torch.autocast(device_type=self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = self.train_model(x).squeeze(1)
        loss = self.criterion(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if tc.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        loop.global_step += 1
        loop.step_in_epoch += 1
        loss_value = mean_over_ranks(float(loss.detach()), self.dist, self.device)  # the global batch's loss
        if not math.isfinite(loss_value) and self.scaler is None:
            raise CevitError(f"training diverged: loss is {loss_value} at step {loop.global_step} (lower optim.lr)")
        loop.log_sum += loss_value
        loop.log_n += 1
        loop.epoch_sum += loss_value
        loop.epoch_n += 1
        return loss_value

    def validate(self) -> dict[str, Any]:
        """Validation metrics of the evaluated weights (``{}`` without a validation split); see ``_evaluate``."""
        if self.data.val is None:
            return {}
        metrics: dict[str, Any] = {}
        if self.dist.is_main:
            metrics = _evaluate(self.eval_model, self.data, batch_size=self.val_batch_size, device=self.device,
                                num_workers=self.num_workers, amp_dtype=self.amp_dtype,
                                channels_last=self.channels_last)  # fmt: skip
        if self.dist.enabled:  # rank 0's metrics everywhere: every rank takes the same early-stopping decision
            import torch.distributed as dist

            shared: list[Any] = [metrics]
            dist.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        return metrics

    def fit(self) -> TrainResult:
        """Train until ``train.epochs``, early stopping or ``train.max_steps``; see the module docstring."""
        tc, loop = self.tc, self.loop
        if self.dist.is_main:
            self._log = _CsvLog(self.output_dir / "log.csv", append=self.resumed)
        self._t0 = time.monotonic()
        self._git_commit = _git_commit()
        if loop.stopped_early or loop.epoch >= tc.epochs:
            logger.info("%s: training already finished (%d epochs%s)", self.output_dir, loop.epoch,
                        ", stopped early" if loop.stopped_early else "")  # fmt: skip
            return self.result(finished=True)
        if loop.global_step >= self.stop_at:
            logger.info("%s: max_steps=%s already reached (global step %d)", self.output_dir, tc.max_steps,
                        loop.global_step)  # fmt: skip
            return self.result(finished=False)

        logger.info("training %s on %s: %d epochs x %d steps, batch %d, %s mode, pos_weight %.3g, %s",
                    self.model.preset_name, self.device, tc.epochs, self.steps_per_epoch, tc.batch_size,
                    self.config.data.mode, self.pos_weight,
                    f"amp {self.amp_dtype}" if self.amp_dtype else "fp32")  # fmt: skip
        self.model.train()
        while self.loop.epoch < tc.epochs and self.loop.global_step < self.stop_at:
            self._train_epoch()
            if self.loop.step_in_epoch < self.steps_per_epoch:  # stopped by max_steps inside the epoch
                self._stop_mid_epoch()
                return self.result(finished=False)
            self._end_epoch()
            if self.loop.stopped_early:
                logger.info("early stopping: no better validation AUC for %d epochs", self.loop.patience)
                return self.result(finished=True)
        return self.result(finished=self.loop.epoch >= tc.epochs)

    def _train_epoch(self) -> None:
        """Steps of the current epoch from ``step_in_epoch`` on, until its end or ``stop_at``."""
        tc, loop = self.tc, self.loop
        sampler = EpochBatchSampler(len(self.data.train), self.data.items_per_batch, seed=self.seed, epoch=loop.epoch,
                                    steps=self.steps_per_epoch, start_step=loop.step_in_epoch)  # fmt: skip
        if self.dist.enabled:  # this rank's share of every global batch
            sampler = RankBatchSampler(sampler, rank=self.dist.rank, world_size=self.dist.world_size)
        collate = collate_sbi_pairs if self.config.data.mode == "sbi" else None
        loader = _loader(self.data.train, batch_sampler=sampler, num_workers=self.num_workers, pin=self.cuda,
                         collate=collate, seed=self.seed + loop.epoch)  # fmt: skip
        bar = None
        if self.show_progress and self.dist.is_main and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=self.steps_per_epoch, initial=loop.step_in_epoch, unit="step", leave=False,
                       desc=f"epoch {loop.epoch + 1}/{tc.epochs}", file=sys.stderr, dynamic_ncols=True)  # fmt: skip
        self.model.train()
        for x, y, _ in loader:
            self.step(x, y)
            if bar is not None:
                bar.update(1)
            if loop.global_step % tc.log_every_steps == 0 and loop.log_n:
                mean = loop.log_sum / loop.log_n
                self._write_log(epoch=loop.global_step / self.steps_per_epoch, step=loop.global_step,
                                lr=self.current_lr(), train_loss=mean, seconds=self.seconds())  # fmt: skip
                if bar is not None:
                    bar.set_postfix(loss=f"{mean:.4f}", lr=f"{self.current_lr():.2e}")
                logger.debug("step %d: loss %.4f, lr %.3g", loop.global_step, mean, self.current_lr())
                loop.log_sum, loop.log_n = 0.0, 0
            if (tc.save_every_steps and loop.global_step % tc.save_every_steps == 0
                    and loop.step_in_epoch < self.steps_per_epoch):  # fmt: skip
                self.save()
            if loop.global_step >= self.stop_at:
                break
        if bar is not None:
            bar.close()

    def _write_log(self, **row: Any) -> None:
        if not self.dist.is_main:
            return
        assert self._log is not None, "fit() opens the log"
        self._log.write(**row)

    def _stop_mid_epoch(self) -> None:
        """``max_steps`` reached inside an epoch: save (resumable), validate for the record, write ``last``."""
        loop = self.loop
        self.save()
        metrics = self.validate()
        loop.final_metrics = metrics
        train_loss = loop.epoch_sum / max(1, loop.epoch_n)
        self._write_log(epoch=loop.global_step / self.steps_per_epoch, step=loop.global_step, lr=self.current_lr(),
                        train_loss=train_loss, val_loss=metrics.get("val_loss"),
                        val_auc_frame=metrics.get("val_auc_frame"), val_auc_group=metrics.get("val_auc_group"),
                        seconds=self.seconds())  # fmt: skip
        # best.safetensors only when none exists yet: a partial epoch does not count for model selection
        self.save_checkpoints(metrics, partial=True, best=not self.best_path.exists())
        self.save()  # records final_metrics
        logger.info("stopped at max_steps=%d (epoch %d, step %d/%d); resumable with --resume", loop.global_step,
                    loop.epoch + 1, loop.step_in_epoch, self.steps_per_epoch)  # fmt: skip

    def _end_epoch(self) -> None:
        """Validate, log, track the best epoch and early stopping, write checkpoints, state and curves."""
        tc, loop = self.tc, self.loop
        metrics = self.validate()
        loop.epoch += 1
        loop.step_in_epoch = 0
        train_loss = loop.epoch_sum / max(1, loop.epoch_n)
        loop.epoch_sum, loop.epoch_n = 0.0, 0
        loop.final_metrics = metrics
        entry = {"epoch": loop.epoch, "step": loop.global_step, "lr": self.current_lr(), "train_loss": train_loss,
                 "val_loss": metrics.get("val_loss"), "val_auc_frame": _finite_or_none(metrics.get("val_auc_frame")),
                 "val_auc_group": _finite_or_none(metrics.get("val_auc_group")), "seconds": self.seconds()}  # fmt: skip
        self._write_log(**entry)
        sources = {k: _finite_or_none(v) for k, v in metrics.items() if k.startswith("val_auc_") and k not in entry}
        entry.update(sources)
        loop.history.append(entry)
        if sources:
            logger.info(
                "epoch %d validation AUC per source: %s",
                loop.epoch,
                ", ".join(f"{k.removeprefix('val_auc_')} {_fmt(v)}" for k, v in sorted(sources.items())),
            )
        metric = metrics.get("val_metric")
        m = float(metric) if metric is not None and math.isfinite(metric) else -math.inf
        improved = loop.best_metric is None or m > loop.best_metric or self.data.val is None
        if improved:
            loop.best_metric, loop.best_epoch, loop.patience = m, loop.epoch, 0
        else:
            loop.patience += 1
        self.save_checkpoints(metrics, partial=False, best=improved)
        if tc.early_stopping and loop.patience >= tc.early_stopping:
            loop.stopped_early = True
        self.save()
        if self.dist.is_main:
            _plot_curves(loop.history, self.output_dir / "curves.png")
        logger.info(
            "epoch %d/%d: train loss %.4f, val loss %s, AUC frame %s / group %s (best %s @ epoch %s), lr %.3g, %.0f s",
            loop.epoch, tc.epochs, train_loss, _fmt(metrics.get("val_loss")) or "-",
            _fmt(metrics.get("val_auc_frame")) or "-", _fmt(metrics.get("val_auc_group")) or "-",
            _fmt(_finite_or_none(loop.best_metric)) or "-", loop.best_epoch, self.current_lr(), self.seconds(),
        )  # fmt: skip


def train(
    config: TrainConfig, *, resume: bool = False, progress: bool = True, distributed: DistributedContext | None = None
) -> TrainResult:  # fmt: skip
    """Train (or resume training) as described by ``config``; see the module docstring and :class:`Trainer`.
    ``distributed``: this process's place in a data-parallel run (None: a single process)."""
    return Trainer(config=config, resume=resume, progress=progress, distributed=distributed).fit()
