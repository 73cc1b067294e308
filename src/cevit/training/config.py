"""The training configuration: frozen dataclasses, read from YAML with :func:`cevit.config.load_yaml`.

One YAML file describes a whole training run (see ``configs/train_sbi_v1.yaml``)::

    model:    {preset: cross_efficient_vit_v1, overrides: {}, init: lite0}
    data:     {indexes: [faces/index.csv], mode: sbi, val_fraction: 0.1}
    augment:  {hflip_prob: 0.5, jpeg_prob: 0.3, ...}
    optim:    {name: adamw, lr: 3.0e-4, weight_decay: 0.05}
    schedule: {name: cosine, warmup_epochs: 1}
    train:    {epochs: 30, batch_size: 32, seed: 0, ...}
    output_dir: runs/sbi_v1

Every section has defaults except ``data.indexes`` and ``output_dir``. Unknown keys and wrong types raise
:class:`~cevit.errors.ConfigError` naming the file and the key (that is :func:`cevit.config.from_dict`'s job);
the range checks below add the section and key to their messages.

Use :func:`load_train_config` to read a file: it calls ``load_yaml(TrainConfig, path)`` and then resolves
relative ``data.indexes`` paths against the YAML file's folder (``output_dir`` stays relative to the current
directory, as for any output path given on a command line).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cevit.config import load_yaml
from cevit.errors import ConfigError
from cevit.models.registry import DEFAULT_PRESET
from cevit.training.sbi import SBIConfig

__all__ = [
    "ModelSection",
    "DataSection",
    "AugmentSection",
    "OptimSection",
    "ScheduleSection",
    "TrainSection",
    "TrainConfig",
    "load_train_config",
]


def _check_prob(section: str, name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{section}.{name}: {value!r} is not a probability in [0, 1]")


def _check_range(section: str, name: str, value: tuple[float, float], lo: float, hi: float) -> None:
    a, b = value
    if not (math.isfinite(a) and math.isfinite(b) and lo <= a <= b <= hi):
        raise ConfigError(f"{section}.{name}: expected {lo} <= low <= high <= {hi}, got {list(value)}")


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """Which network to train and how to initialise it."""

    #: A preset of :mod:`cevit.models.registry`.
    preset: str = DEFAULT_PRESET
    #: Fields of :class:`~cevit.models.CrossEfficientViTConfig` to override, e.g. ``{image_size: 224}``.
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: ``random``: fresh weights; ``lite0``: both EfficientNet extractors from ImageNet EfficientNet-Lite0
    #: (see :mod:`cevit.training.lite0`), the transformer stays random; ``checkpoint``: every weight from the
    #: cevit checkpoint ``init_checkpoint`` (fine-tuning or continuing a finished run with a new recipe;
    #: its architecture must equal ``preset`` + ``overrides``). Optimiser state and schedule start fresh.
    init: Literal["random", "lite0", "checkpoint"] = "random"
    #: The checkpoint of ``init: checkpoint`` (a path relative to the YAML's folder, or absolute).
    init_checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.init == "checkpoint" and not self.init_checkpoint:
            raise ConfigError("model.init_checkpoint: give the checkpoint to initialise from (init: checkpoint)")
        if self.init != "checkpoint" and self.init_checkpoint:
            raise ConfigError(f"model.init_checkpoint is only used with init: checkpoint (init is {self.init!r})")


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """Where the faces come from and how they are split."""

    #: Face index CSV files (see the index format of ``cevit extract-faces``).
    indexes: tuple[str, ...]
    #: Optional repeat count per index (same order as ``indexes``): each *training* row of index ``i`` is used
    #: ``index_repeats[i]`` times per epoch (with fresh augmentation and pseudo-fakes each time), to give a small
    #: index more weight. Validation rows are never repeated. ``null`` = 1 for every index.
    index_repeats: tuple[int, ...] | None = None
    #: Optional cap per index (same order as ``indexes``) on its *training* rows after the split and before the
    #: repeats (a subset drawn with ``split_seed``), so a large index does not dominate; ``null`` entries (or
    #: ``null`` for the whole key) mean no cap. Validation rows are never capped by it.
    index_max_items: tuple[int | None, ...] | None = None
    #: ``labelled``: real and fake rows with their labels; ``sbi``: real rows only, each paired in its batch with
    #: its self-blended pseudo-fake (a batch of B holds B/2 reals + their B/2 pseudo-fakes); ``mixed``: the
    #: labelled rows plus one self-blended pseudo-fake of every real row.
    mode: Literal["labelled", "sbi", "mixed"] = "labelled"
    #: Fraction of the groups (not frames) that go to validation when a row's ``split`` column is empty.
    val_fraction: float = 0.1
    #: Splitting is always by the index's ``group`` column, so no video/identity is on both sides.
    split_by: Literal["group"] = "group"
    #: Seed of the group hash used for the split (kept apart from ``train.seed``: changing the training seed
    #: does not change the split).
    split_seed: int = 0
    #: Optional caps on the number of index rows used after the split (real rows in ``sbi`` mode), for quick
    #: runs; a subset drawn with ``split_seed``.
    max_train_items: int | None = None
    max_val_items: int | None = None
    #: Row filters applied before the split: keep faces whose index within their frame is at most
    #: ``max_face_index`` (0 = only the detector's most confident face per frame; null = all), whose box side
    #: in the crop is at least ``min_face_size`` px, and whose detection probability is at least ``min_det_prob``.
    max_face_index: int | None = None
    min_face_size: float = 0.0
    min_det_prob: float = 0.0
    #: DataLoader worker processes; ``null`` = 0 on CPU, min(8, CPUs - 1) on CUDA.
    num_workers: int | None = None
    #: Parameters of the self-blended pseudo-fakes (``sbi`` and ``mixed`` modes).
    sbi: SBIConfig = field(default_factory=SBIConfig)

    def __post_init__(self) -> None:
        if not self.indexes:
            raise ConfigError("data.indexes: give at least one face index CSV")
        if self.index_repeats is not None:
            if len(self.index_repeats) != len(self.indexes):
                raise ConfigError(
                    f"data.index_repeats: {len(self.index_repeats)} value(s) for {len(self.indexes)} index(es)"
                )
            if not all(isinstance(r, int) and r >= 1 for r in self.index_repeats):
                raise ConfigError(f"data.index_repeats: expected integers >= 1, got {list(self.index_repeats)}")
        if self.index_max_items is not None:
            if len(self.index_max_items) != len(self.indexes):
                raise ConfigError(
                    f"data.index_max_items: {len(self.index_max_items)} value(s) for {len(self.indexes)} index(es)"
                )
            if not all(c is None or (isinstance(c, int) and c >= 1) for c in self.index_max_items):
                raise ConfigError(
                    f"data.index_max_items: expected integers >= 1 or null, got {list(self.index_max_items)}"
                )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.split_seed < 0:
            raise ConfigError(f"data.split_seed must be >= 0, got {self.split_seed}")
        for name in ("max_train_items", "max_val_items"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.{name} must be >= 1 (or null), got {value}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0 (or null), got {self.num_workers}")


@dataclass(frozen=True, kw_only=True)
class AugmentSection:
    """Training-time augmentations (:mod:`cevit.training.augment`); validation never augments.

    Each transform is applied with its ``*_prob``. Geometric transforms (flip, shift-scale-rotate) act on the
    saved face crop and move its box and landmarks; photometric ones (colour, blur, noise, JPEG) act on the
    saved crop too, then the preprocessing contract crops, resizes and normalises as at inference.
    """

    enabled: bool = True
    #: Horizontal flip (box and landmarks mirrored, left/right landmarks swapped).
    hflip_prob: float = 0.5
    #: Shift-scale-rotate about the face box centre: shift up to ``shift_limit`` x box side on each axis,
    #: scale in [1 - scale_limit, 1 + scale_limit], rotation within +-``rotate_limit`` degrees.
    ssr_prob: float = 0.3
    shift_limit: float = 0.05
    scale_limit: float = 0.1
    rotate_limit: float = 10.0
    #: Colour jitter: brightness/contrast/saturation factors in [1 - x, 1 + x]; hue shift of +-``hue`` of the
    #: full hue circle (0.02 = +-7.2 degrees).
    color_jitter_prob: float = 0.3
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    #: Gaussian blur; sigma in pixels AT THE MODEL'S INPUT RESOLUTION (scaled to the crop's resolution).
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    #: Down/up-scaling: shrink the saved crop by a factor drawn from ``downscale_range`` and enlarge it back
    #: (a low-resolution face, as in a small video face or a thumbnail). Off by default.
    downscale_prob: float = 0.0
    downscale_range: tuple[float, float] = (0.3, 0.9)
    #: Additive Gaussian noise, standard deviation in 0-255 units, per pixel and channel.
    noise_prob: float = 0.1
    noise_std: tuple[float, float] = (2.0, 8.0)
    #: JPEG re-compression with a quality drawn uniformly (integers).
    jpeg_prob: float = 0.3
    jpeg_quality: tuple[int, int] = (40, 95)
    #: Use the contract's ``isotropic_pad`` resize instead of the model's resize mode. NB: with square crops
    #: (``crop_border: pad``, or a box well inside the saved crop) both modes give the same image.
    isotropic_pad_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip_prob", "ssr_prob", "color_jitter_prob", "blur_prob", "noise_prob", "jpeg_prob",
                     "isotropic_pad_prob", "downscale_prob"):  # fmt: skip
            _check_prob("augment", name, getattr(self, name))
        limits = {"shift_limit": 0.5, "scale_limit": 0.9, "rotate_limit": 180.0, "brightness": 1.0,
                  "contrast": 1.0, "saturation": 1.0, "hue": 0.5}  # fmt: skip
        for name, hi in limits.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= hi):
                raise ConfigError(f"augment.{name}: expected a number in [0, {hi}], got {value!r}")
        _check_range("augment", "blur_sigma", self.blur_sigma, 0.0, 50.0)
        _check_range("augment", "noise_std", self.noise_std, 0.0, 255.0)
        _check_range("augment", "jpeg_quality", self.jpeg_quality, 1, 100)
        _check_range("augment", "downscale_range", self.downscale_range, 0.05, 1.0)


@dataclass(frozen=True, kw_only=True)
class OptimSection:
    """The optimiser."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-4
    weight_decay: float = 0.05
    #: SGD only.
    momentum: float = 0.9
    nesterov: bool = False
    #: AdamW only.
    betas: tuple[float, float] = (0.9, 0.999)
    #: No weight decay on biases, normalisation weights, position embeddings and CLS tokens (ViT practice).
    no_decay_bias_norm: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"optim.momentum must be in [0, 1), got {self.momentum}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must be in [0, 1), got {list(self.betas)}")


@dataclass(frozen=True, kw_only=True)
class ScheduleSection:
    """The learning-rate schedule, evaluated at every optimisation step (so resuming mid-epoch is exact).

    ``cosine``: linear warm-up over ``warmup_epochs`` (may be fractional), then cosine decay from ``lr`` to
    ``min_lr_ratio`` x ``lr`` at the end of training. ``step``: ``lr`` x ``gamma`` ** (epoch // step_size),
    switching at epoch boundaries like PyTorch's StepLR stepped once per epoch. ``constant``: ``lr``. The
    warm-up, when given, applies to every schedule.
    """

    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    step_size: int = 15
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ConfigError(f"schedule.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.step_size < 1:
            raise ConfigError(f"schedule.step_size must be >= 1 (epochs), got {self.step_size}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ConfigError(f"schedule.gamma must be > 0, got {self.gamma}")


@dataclass(frozen=True, kw_only=True)
class TrainSection:
    """The loop: epochs, batches, precision, checkpoints, logging."""

    epochs: int = 30
    #: Samples per optimisation step (in ``sbi`` mode: B/2 reals + B/2 pseudo-fakes; must be even).
    batch_size: int = 32
    #: Validation batch size; ``null`` = ``batch_size``.
    val_batch_size: int | None = None
    #: Max gradient norm; 0 = no clipping.
    grad_clip: float = 1.0
    #: Mixed precision on CUDA (``bf16`` falls back to ``fp16`` + loss scaling where bf16 is unsupported);
    #: ignored on CPU, which always trains in fp32.
    amp: Literal["none", "bf16", "fp16"] = "bf16"
    #: channels-last memory format on CUDA (faster convolutions); ignored on CPU.
    channels_last: bool = True
    #: Exponential moving average of the weights; 0 = off. When on, validation and the saved checkpoints
    #: use the EMA weights.
    ema_decay: float = 0.0
    #: Stop after this many epochs without a better validation AUC; 0 = off.
    early_stopping: int = 0
    seed: int = 0
    #: Also write the resumable ``train_state.pt`` every N optimisation steps (0 = only at epoch ends).
    save_every_steps: int = 0
    log_every_steps: int = 50
    #: Global cap on optimisation steps (tests, benchmarks, quick looks).
    max_steps: int | None = None
    #: Weight of the fake class in the loss: ``balanced`` = n_real / n_fake of the training set, or a number.
    pos_weight: Literal["balanced"] | float = "balanced"
    #: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.val_batch_size is not None and self.val_batch_size < 1:
            raise ConfigError(f"train.val_batch_size must be >= 1 (or null), got {self.val_batch_size}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ConfigError(f"train.grad_clip must be >= 0, got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("early_stopping", "seed", "save_every_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.log_every_steps < 1:
            raise ConfigError(f"train.log_every_steps must be >= 1, got {self.log_every_steps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1 (or null), got {self.max_steps}")
        if not isinstance(self.pos_weight, str) and not (math.isfinite(self.pos_weight) and self.pos_weight > 0):
            raise ConfigError(f"train.pos_weight must be 'balanced' or a number > 0, got {self.pos_weight!r}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {dev!r}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A complete training run."""

    data: DataSection
    output_dir: str
    model: ModelSection = field(default_factory=ModelSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ConfigError("output_dir must not be empty")
        if self.data.mode == "sbi" and self.train.batch_size % 2:
            raise ConfigError(
                f"train.batch_size must be even in sbi mode (B/2 reals + B/2 pseudo-fakes), got {self.train.batch_size}"
            )


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training YAML with ``load_yaml(TrainConfig, path)``; relative index and checkpoint paths → the YAML's folder."""
    path = Path(path)
    config = load_yaml(TrainConfig, path)
    base = path.resolve().parent

    def resolve(p: str) -> str:
        return str(Path(p) if Path(p).is_absolute() else (base / p).resolve())

    indexes = tuple(resolve(p) for p in config.data.indexes)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, indexes=indexes))
    if config.model.init_checkpoint:
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, init_checkpoint=resolve(config.model.init_checkpoint))
        )
    return config
