"""Pretrained weights: tags, and the inference config each set of weights carries (timm's ``pretrained_cfg``).

A model is named ``architecture.tag`` as in timm (``cross_efficient_vit_v1_224.mixed_v3``): the architecture
(:mod:`cevit.models.registry`) says which network is built; the tag says which weights fill it and how they
are meant to be used. Everything a tag's weights need at inference time is an :class:`InferenceConfig`:

* the aggregation rule and its two thresholds (:mod:`cevit.inference.aggregation`) — the authors' weights are
  meant for their own video protocol (0.55 / 0.6), cevit's for ``cevit-default`` (0.65 / 0.5);
* the face-detector settings the crops depend on (minimum face size, cascade thresholds, pyramid factor, the
  longer side of the copy the detector runs on);
* the calibration of the model's probability (temperature scaling fitted on a validation split: P(fake) =
  sigmoid(logit / T); T = 1 means uncalibrated).

The preprocessing contract (:class:`~cevit.preprocess.Preprocessing`) travels with every checkpoint already.
cevit writes the inference config into the metadata of every checkpoint it saves (key ``inference``), and
:func:`cevit.load_model` uses it unless the caller overrides a setting; checkpoints without one (the authors'
``.pth``, older cevit files) get the config of their architecture's registered tag.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from cevit.config import from_dict, to_dict
from cevit.errors import ConfigError, ModelError

__all__ = [
    "Calibration",
    "DetectorSettings",
    "InferenceConfig",
    "PretrainedWeights",
    "PRETRAINED",
    "DEFAULT_WEIGHTS",
    "DEPRECATED_NAMES",
    "get_pretrained",
    "list_pretrained",
    "default_inference_for",
    "inference_config_from_json",
    "split_name",
]

log = logging.getLogger(__name__)

MODEL_CARD = "MODEL_CARD.md"


@dataclass(frozen=True, kw_only=True)
class DetectorSettings:
    """MTCNN settings the face crops of a set of weights were made with (see :class:`cevit.faces.MTCNN`)."""

    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    max_side: int = 1280

    def __post_init__(self) -> None:
        if self.min_face_size < 1 or self.max_side < 1:
            raise ConfigError("detector: min_face_size and max_side must be >= 1")
        if not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ConfigError(f"detector: thresholds must be in [0, 1], got {list(self.thresholds)}")
        if not 0.0 < self.factor < 1.0:
            raise ConfigError(f"detector: factor must be in (0, 1), got {self.factor}")


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Temperature scaling of the logit: P(fake) = sigmoid(logit / temperature).

    ``method`` ``none`` (temperature 1) or ``temperature``; ``fitted_on`` names the data it was fitted on
    and ``ece_before`` / ``ece_after`` are the expected calibration errors measured there (informational).
    """

    method: Literal["none", "temperature"] = "none"
    temperature: float = 1.0
    fitted_on: str = ""
    ece_before: float | None = None
    ece_after: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"calibration temperature must be a finite number > 0, got {self.temperature}")
        if self.method == "none" and self.temperature != 1.0:
            raise ConfigError("calibration method 'none' needs temperature 1.0")


@dataclass(frozen=True, kw_only=True)
class InferenceConfig:
    """How a set of weights is meant to be used: aggregation rule and thresholds, face detector, calibration."""

    rule: Literal["cevit-default", "coccomini2022-video"] = "cevit-default"
    face_threshold: float = 0.65
    label_threshold: float = 0.5
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    calibration: Calibration = field(default_factory=Calibration)

    def __post_init__(self) -> None:
        self.aggregation_rule()  # validates the rule name and thresholds

    def aggregation_rule(self, *, rule: str | None = None, threshold: float | None = None):  # noqa: ANN201
        """The :class:`~cevit.inference.aggregation.AggregationRule` of this config.

        ``rule`` names another rule (with that rule's own default thresholds); ``threshold`` overrides the
        label threshold.
        """
        from cevit.inference.aggregation import get_rule

        if rule is not None and rule != self.rule:
            return get_rule(rule, label_threshold=threshold)
        return get_rule(self.rule, face_threshold=self.face_threshold,
                        label_threshold=self.label_threshold if threshold is None else threshold)  # fmt: skip

    def to_json_dict(self) -> dict[str, Any]:
        return to_dict(self)


def inference_config_from_json(data: Any, *, source: str | None = None) -> InferenceConfig:
    """Build an :class:`InferenceConfig` from its JSON form (unknown keys → ConfigError naming ``source``)."""
    return from_dict(InferenceConfig, data, source=source)


@dataclass(frozen=True, kw_only=True)
class PretrainedWeights:
    """One registered set of weights: ``architecture.tag``, where its file comes from, how it is used."""

    architecture: str
    tag: str
    description: str
    inference: InferenceConfig
    #: file name inside the package's ``weights/`` folder; None when the user supplies the file (``--weights``)
    file: str | None = None
    #: SHA-256 of the file (the bundled file is checked against it when loaded; None = not known)
    sha256: str | None = None
    model_card: str = MODEL_CARD
    version: str = ""

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.tag}"


# The authors' rule for their own weights, as described in ../shared/reference/ORIGINAL_MODEL.md.
COCCOMINI2022_INFERENCE = InferenceConfig(rule="coccomini2022-video", face_threshold=0.55, label_threshold=0.6)
CEVIT_INFERENCE = InferenceConfig()

DEFAULT_WEIGHTS = "cross_efficient_vit_v1_224.lfw_sbi_v2"

PRETRAINED: dict[str, PretrainedWeights] = {
    w.name: w
    for w in (
        PretrainedWeights(
            architecture="cross_efficient_vit_v1_224",
            tag="lfw_sbi_v2",
            version="0.2.0",
            description="cevit v0.2 default: trained on a CPU from real LFW faces with self-blended pseudo-fakes",
            # the file carries the same config; T fitted with `cevit calibrate` on the v0.3 run's validation split
            inference=InferenceConfig(
                calibration=Calibration(
                    method="temperature",
                    temperature=1.6114148902235794,
                    fitted_on="validation split of default_v1_mixed_v3 (2344 samples: 990 real, 1354 fake or pseudo-fake)",
                )
            ),
            file="cross_efficient_vit_v1_224.lfw_sbi_v2.safetensors",
            sha256="329bf493b3436a410ae3f0b3b711d7ea009963eae1af77ed7feecfb7a87dd5ae",
        ),
        PretrainedWeights(
            architecture="coccomini2022",
            tag="dfdc",
            description="the authors' released checkpoint (trained on DFDC); give its path with --weights",
            inference=COCCOMINI2022_INFERENCE,
        ),
    )
}

#: Names of earlier releases → what they mean now, for :func:`cevit.load_model` (weights) and
#: :func:`cevit.create_model` (architectures). Using one logs a deprecation message.
DEPRECATED_NAMES: dict[str, tuple[str, str]] = {
    # old name: (architecture for create_model, weights for load_model)
    "CROSS-EFFICIENT-VIT-V1": ("cross_efficient_vit_v1", DEFAULT_WEIGHTS),
}


def split_name(name: str) -> tuple[str, str | None]:
    """``"arch.tag"`` → ``("arch", "tag")``; ``"arch"`` → ``("arch", None)``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def deprecated(name: str) -> tuple[str, str] | None:
    """The (architecture, weights) that a deprecated name stands for, with a warning; None if not deprecated."""
    if name not in DEPRECATED_NAMES:
        return None
    arch, weights = DEPRECATED_NAMES[name]
    message = (f"model name {name!r} is deprecated: use the architecture {arch!r} (create_model) or the weights "
               f"{weights!r} (load_model)")  # fmt: skip
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    log.warning("%s", message)
    return arch, weights


def list_pretrained() -> list[str]:
    """Names (``architecture.tag``) of the registered weights, default first."""
    return sorted(PRETRAINED, key=lambda n: (n != DEFAULT_WEIGHTS, n))


def get_pretrained(name: str) -> PretrainedWeights:
    """The registered weights ``architecture.tag``; an architecture alone means its first registered tag."""
    if name in PRETRAINED:
        return PRETRAINED[name]
    arch, tag = split_name(name)
    if tag is None:
        for w in (PRETRAINED[n] for n in list_pretrained()):
            if w.architecture == arch:
                return w
    raise ModelError(f"unknown weights {name!r}; registered weights: {', '.join(list_pretrained())}")


def default_inference_for(architecture: str | None) -> InferenceConfig:
    """The inference config of an architecture's registered weights (cevit's defaults when none is registered)."""
    if architecture:
        for w in PRETRAINED.values():
            if w.architecture == architecture:
                return w.inference
    return CEVIT_INFERENCE
