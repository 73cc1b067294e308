"""The training loop: ``train(config) -> TrainResult``, resumable exactly, on CPU or CUDA.

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
from cevit.training.config import OptimSection, ScheduleSection, TrainConfig
from cevit.training.data import EpochBatchSampler, TrainData, collate_sbi_pairs, prepare_data

__all__ = ["TrainResult", "train", "ModelEma", "lr_factor", "RESUME_MUTABLE", "STATE_FORMAT", "load_train_state"]

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


def _build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if cfg.no_decay_bias_norm and (p.ndim <= 1 or name.endswith(("pos_embedding", "cls_token"))):
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
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},  # fmt: skip
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
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
    from cevit.evaluation.metrics import roc_auc

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
    from cevit.evaluation.metrics import roc_auc

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


def _check_resume(state: dict[str, Any], config: TrainConfig, data: TrainData, steps_per_epoch: int, path: Path) -> None:
    old, new = _flatten(state["config"]), _flatten(to_dict(config))
    diffs = sorted(k for k in set(old) | set(new) if k not in RESUME_MUTABLE and old.get(k) != new.get(k))
    if diffs:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diffs[:6])
        raise ConfigError(f"{path}: cannot resume with a different config ({detail}); start a new output_dir")
    old_idx = {i["path"]: i["sha256"] for i in state["data_indexes"]}
    for i in data.indexes:
        if old_idx.get(i["path"]) not in (None, i["sha256"]):
            raise ConfigError(f"{i['path']}: the face index changed since the run started (SHA-256 differs); cannot resume")
    if int(state["steps_per_epoch"]) != steps_per_epoch:
        raise ConfigError(
            f"{path}: steps per epoch changed ({state['steps_per_epoch']} -> {steps_per_epoch}); the data changed"
        )
    if old.get("train.epochs") != new.get("train.epochs") and config.schedule.name == "cosine":
        logger.warning("resuming with train.epochs %s instead of %s: the cosine schedule changes from here",
                       new.get("train.epochs"), old.get("train.epochs"))  # fmt: skip


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or resume training) as described by ``config``; see the module docstring."""
    from cevit.checkpoint import save_checkpoint

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "train_state.pt"
    best_path, last_path = out / "best.safetensors", out / "last.safetensors"
    state: dict[str, Any] | None = None
    if resume:
        state = load_train_state(state_path)
    elif state_path.exists():
        raise ConfigError(f"{out}: already holds a training run (train_state.pt); resume it or use another output_dir")

    tc = config.train
    device = _resolve_device(tc.device)
    cuda = device.type == "cuda"
    seed = tc.seed
    _seed_everything(seed)
    model, init = _build_model(config)
    data = prepare_data(config.data, spec=model.preprocessing, augment=config.augment, seed=seed, batch_size=tc.batch_size)
    steps_per_epoch = len(data.train) // data.items_per_batch
    if state is not None:
        _check_resume(state, config, data, steps_per_epoch, state_path)
    stop_at = tc.epochs * steps_per_epoch if tc.max_steps is None else min(tc.max_steps, tc.epochs * steps_per_epoch)

    if tc.pos_weight == "balanced":
        pos_weight = data.n_train_real / max(1, data.n_train_fake)
    else:
        pos_weight = float(tc.pos_weight)
    num_workers = config.data.num_workers
    if num_workers is None:
        num_workers = min(8, max(1, (os.cpu_count() or 2) - 1)) if cuda else 0
    amp_dtype: torch.dtype | None = None
    if cuda and tc.amp != "none":
        amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
        if amp_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            logger.warning("bf16 is not supported on %s: using fp16 with loss scaling", torch.cuda.get_device_name(device))
            amp_dtype = torch.float16
    channels_last = cuda and tc.channels_last
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _build_optimizer(model, config.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, schedule=config.schedule, steps_per_epoch=steps_per_epoch, epochs=tc.epochs),
    )
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = ModelEma(model, tc.ema_decay) if tc.ema_decay > 0 else None
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight], device=device))

    # loop state
    epoch = step_in_epoch = global_step = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    patience = 0
    stopped_early = False
    history: list[dict[str, Any]] = []
    final_metrics: dict[str, Any] = {}
    elapsed_before = 0.0
    acc = {"log_sum": 0.0, "log_n": 0, "epoch_sum": 0.0, "epoch_n": 0}
    if state is not None:
        from cevit.checkpoint import load_state_dict_strict

        load_state_dict_strict(model, state["model"], source=str(state_path))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if state.get("ema") is None:
                raise ConfigError(f"{state_path}: the interrupted run had no EMA; cannot resume with train.ema_decay > 0")
            ema.load_state_dict(state["ema"])
        epoch, step_in_epoch, global_step = int(state["epoch"]), int(state["step_in_epoch"]), int(state["global_step"])
        best_metric = state["best_metric"]
        best_epoch = state["best_epoch"]
        patience = int(state["patience"])
        stopped_early = bool(state["stopped_early"])
        history = list(state["history"])
        final_metrics = dict(state.get("final_metrics") or {})
        elapsed_before = float(state["elapsed"])
        acc = {k: type(acc[k])(state["loss_acc"][k]) for k in acc}
        _set_rng_state(state["rng"])
        logger.info("resuming %s at epoch %d, step %d/%d (global step %d)", out, epoch + 1, step_in_epoch,
                    steps_per_epoch, global_step)  # fmt: skip

    log = _CsvLog(out / "log.csv", append=state is not None)
    t0 = time.monotonic()
    git_commit = _git_commit()
    eval_model = ema.module if ema is not None else model
    val_bs = tc.val_batch_size or tc.batch_size

    def seconds() -> float:
        return elapsed_before + (time.monotonic() - t0)

    def current_lr() -> float:
        return float(optimizer.param_groups[0]["lr"])

    def train_state() -> dict[str, Any]:
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, "config": to_dict(config),
            "data_indexes": [dict(i) for i in data.indexes], "steps_per_epoch": steps_per_epoch,
            "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
            "best_metric": best_metric, "best_epoch": best_epoch, "patience": patience,
            "stopped_early": stopped_early, "history": history, "final_metrics": final_metrics,
            "elapsed": seconds(), "loss_acc": dict(acc), "rng": _rng_state(), "device": str(device),
        }  # fmt: skip

    def provenance(metrics: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        from cevit import __version__

        return {
            "config": to_dict(config),
            "data": {"indexes": [dict(i) for i in data.indexes], "mode": config.data.mode,
                     "train_items": len(data.train), "train_real": data.n_train_real, "train_fake": data.n_train_fake,
                     "val_real": data.n_val_real, "val_fake": data.n_val_fake, "val_groups": data.n_val_groups},
            "git_commit": git_commit, "metrics": {k: _finite_or_none(v) for k, v in metrics.items()},
            "epoch": epoch, "steps": global_step, "partial_epoch": partial, "device": str(device), "init": init,
            "weights": "ema" if ema is not None else "raw", "pos_weight": pos_weight, "cevit_version": __version__,
            "trainer": "cevit.training.trainer",
        }  # fmt: skip

    def validate() -> dict[str, Any]:
        if data.val is None:
            return {}
        return _evaluate(eval_model, data, batch_size=val_bs, device=device, num_workers=num_workers,
                         amp_dtype=amp_dtype, channels_last=channels_last)  # fmt: skip

    def result(finished: bool) -> TrainResult:
        return TrainResult(
            output_dir=str(out), best_checkpoint=str(best_path) if best_path.exists() else None,
            last_checkpoint=str(last_path) if last_path.exists() else None, train_state=str(state_path),
            best_metric=_finite_or_none(best_metric), best_epoch=best_epoch, epochs_completed=epoch,
            global_step=global_step, steps_per_epoch=steps_per_epoch, stopped_early=stopped_early, finished=finished,
            final_metrics=dict(final_metrics), history=tuple(history), device=str(device),
        )  # fmt: skip

    if stopped_early or epoch >= tc.epochs:
        logger.info("%s: training already finished (%d epochs%s)", out, epoch, ", stopped early" if stopped_early else "")
        return result(True)
    if global_step >= stop_at:
        logger.info("%s: max_steps=%s already reached (global step %d)", out, tc.max_steps, global_step)
        return result(False)

    logger.info("training %s on %s: %d epochs x %d steps, batch %d, %s mode, pos_weight %.3g, %s", model.preset_name,
                device, tc.epochs, steps_per_epoch, tc.batch_size, config.data.mode, pos_weight,
                f"amp {amp_dtype}" if amp_dtype else "fp32")  # fmt: skip
    collate = collate_sbi_pairs if config.data.mode == "sbi" else None
    show_bar = progress and sys.stderr.isatty()
    model.train()
    while epoch < tc.epochs and global_step < stop_at:
        sampler = EpochBatchSampler(len(data.train), data.items_per_batch, seed=seed, epoch=epoch,
                                    steps=steps_per_epoch, start_step=step_in_epoch)  # fmt: skip
        loader = _loader(data.train, batch_sampler=sampler, num_workers=num_workers, pin=cuda, collate=collate,
                         seed=seed + epoch)  # fmt: skip
        bar = None
        if show_bar:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch + 1}/{tc.epochs}",
                       file=sys.stderr, dynamic_ncols=True, leave=False, unit="step")  # fmt: skip
        model.train()
        for x, y, _ in loader:
            torch.manual_seed(_step_seed(seed, global_step))
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(x).squeeze(1)
            loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if tc.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if tc.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            global_step += 1
            step_in_epoch += 1
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value) and scaler is None:
                raise CevitError(f"training diverged: loss is {loss_value} at step {global_step} (lower optim.lr)")
            acc["log_sum"] += loss_value
            acc["log_n"] += 1
            acc["epoch_sum"] += loss_value
            acc["epoch_n"] += 1
            if bar is not None:
                bar.update(1)
            if global_step % tc.log_every_steps == 0 and acc["log_n"]:
                mean = acc["log_sum"] / acc["log_n"]
                log.write(epoch=global_step / steps_per_epoch, step=global_step, lr=current_lr(), train_loss=mean,
                          seconds=seconds())  # fmt: skip
                if bar is not None:
                    bar.set_postfix(loss=f"{mean:.4f}", lr=f"{current_lr():.2e}")
                logger.debug("step %d: loss %.4f, lr %.3g", global_step, mean, current_lr())
                acc["log_sum"], acc["log_n"] = 0.0, 0
            if tc.save_every_steps and global_step % tc.save_every_steps == 0 and step_in_epoch < steps_per_epoch:
                _save_atomic(train_state(), state_path)
            if global_step >= stop_at:
                break
        if bar is not None:
            bar.close()

        if step_in_epoch < steps_per_epoch:  # stopped by max_steps inside the epoch
            _save_atomic(train_state(), state_path)
            metrics = validate()
            final_metrics = metrics
            train_loss = acc["epoch_sum"] / max(1, acc["epoch_n"])
            log.write(epoch=global_step / steps_per_epoch, step=global_step, lr=current_lr(), train_loss=train_loss,
                      val_loss=metrics.get("val_loss"), val_auc_frame=metrics.get("val_auc_frame"),
                      val_auc_group=metrics.get("val_auc_group"), seconds=seconds())  # fmt: skip
            save_checkpoint(eval_model, last_path, **provenance(metrics, partial=True))
            if not best_path.exists():
                save_checkpoint(eval_model, best_path, **provenance(metrics, partial=True))
            _save_atomic(train_state(), state_path)  # records final_metrics
            logger.info("stopped at max_steps=%d (epoch %d, step %d/%d); resumable with --resume", global_step,
                        epoch + 1, step_in_epoch, steps_per_epoch)  # fmt: skip
            return result(False)

        # end of an epoch
        metrics = validate()
        epoch += 1
        step_in_epoch = 0
        train_loss = acc["epoch_sum"] / max(1, acc["epoch_n"])
        acc["epoch_sum"], acc["epoch_n"] = 0.0, 0
        final_metrics = metrics
        entry = {"epoch": epoch, "step": global_step, "lr": current_lr(), "train_loss": train_loss,
                 "val_loss": metrics.get("val_loss"), "val_auc_frame": _finite_or_none(metrics.get("val_auc_frame")),
                 "val_auc_group": _finite_or_none(metrics.get("val_auc_group")), "seconds": seconds()}  # fmt: skip
        log.write(**entry)
        sources = {k: _finite_or_none(v) for k, v in metrics.items() if k.startswith("val_auc_") and k not in entry}
        entry.update(sources)
        history.append(entry)
        if sources:
            logger.info("epoch %d validation AUC per source: %s", epoch,
                        ", ".join(f"{k.removeprefix('val_auc_')} {_fmt(v)}" for k, v in sorted(sources.items())))
        metric = metrics.get("val_metric")
        m = float(metric) if metric is not None and math.isfinite(metric) else -math.inf
        improved = best_metric is None or m > best_metric or data.val is None
        if improved:
            best_metric, best_epoch, patience = m, epoch, 0
        else:
            patience += 1
        save_checkpoint(eval_model, last_path, **provenance(metrics, partial=False))
        if improved:
            save_checkpoint(eval_model, best_path, **provenance(metrics, partial=False))
        if tc.early_stopping and patience >= tc.early_stopping:
            stopped_early = True
        _save_atomic(train_state(), state_path)
        _plot_curves(history, out / "curves.png")
        logger.info(
            "epoch %d/%d: train loss %.4f, val loss %s, AUC frame %s / group %s (best %s @ epoch %s), lr %.3g, %.0f s",
            epoch, tc.epochs, train_loss, _fmt(metrics.get("val_loss")) or "-", _fmt(metrics.get("val_auc_frame")) or "-",
            _fmt(metrics.get("val_auc_group")) or "-", _fmt(_finite_or_none(best_metric)) or "-", best_epoch,
            current_lr(), seconds(),
        )  # fmt: skip
        if stopped_early:
            logger.info("early stopping: no better validation AUC for %d epochs", patience)
            return result(True)
    return result(epoch >= tc.epochs)
