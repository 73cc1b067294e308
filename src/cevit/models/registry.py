"""Named architectures (model presets): ``create_model(name, **overrides)`` and ``list_presets()``.

An architecture name means one network: ``cross_efficient_vit_v1`` (380 px), ``cross_efficient_vit_v1_224``
(the same design at 224 px, what cevit's bundled weights use) and ``coccomini2022`` (the authors' release).
Weights are registered separately, as ``architecture.tag`` (:mod:`cevit.models.pretrained`);
``create_model("architecture.tag")`` builds the architecture of that name (fresh weights). The name of earlier
releases, ``CROSS-EFFICIENT-VIT-V1``, still works (it meant the 380 px architecture here) with a deprecation
message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cevit.config import replace
from cevit.errors import ModelError
from cevit.models.cross_efficient_vit import (
    COCCOMINI2022_CONFIG,
    COCCOMINI2022_PREPROCESSING,
    V1_CONFIG,
    V1_PREPROCESSING,
    CrossEfficientViT,
    CrossEfficientViTConfig,
)
from cevit.preprocess import Preprocessing

__all__ = ["ModelPreset", "PRESETS", "DEFAULT_PRESET", "get_preset", "list_presets", "create_model", "architecture_of"]


@dataclass(frozen=True, kw_only=True)
class ModelPreset:
    name: str
    config: CrossEfficientViTConfig
    preprocessing: Preprocessing
    description: str


DEFAULT_PRESET = "cross_efficient_vit_v1"

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            name=DEFAULT_PRESET,
            config=V1_CONFIG,
            preprocessing=V1_PREPROCESSING,
            description="cevit's design at 380 px: RGB ImageNet-normalised input, multi-token branches",
        ),
        ModelPreset(
            name="cross_efficient_vit_v1_224",
            config=replace(V1_CONFIG, image_size=224),
            preprocessing=replace(V1_PREPROCESSING, input_size=224),
            description="cevit's design at 224 px (the bundled default weights' architecture)",
        ),
        ModelPreset(
            name="coccomini2022",
            config=COCCOMINI2022_CONFIG,
            preprocessing=COCCOMINI2022_PREPROCESSING,
            description="the authors' released model (ICIAP 2022): 224 px BGR 0-255 input, one token per branch",
        ),
    )
}


def list_presets() -> list[str]:
    """Names of the model presets, default first."""
    return list(PRESETS)


def get_preset(name: str) -> ModelPreset:
    """The architecture ``name`` (``architecture.tag`` names its architecture; deprecated names still work)."""
    from cevit.models.pretrained import deprecated, split_name

    old = deprecated(name)
    if old is not None:
        name = old[0]
    arch, _ = split_name(name)
    try:
        return PRESETS[arch]
    except KeyError:
        raise ModelError(f"unknown model architecture {name!r}; valid: {', '.join(PRESETS)}") from None


def architecture_of(config: CrossEfficientViTConfig) -> str | None:
    """The registered architecture whose config equals ``config`` (None for a custom configuration)."""
    for name, preset in PRESETS.items():
        if preset.config == config:
            return name
    return None


def create_model(name: str = DEFAULT_PRESET, **overrides: Any) -> CrossEfficientViT:
    """A fresh (randomly initialised) model of preset ``name``; ``overrides`` replace config fields.

    Overriding ``image_size`` also changes the preprocessing input size. Unknown keys raise ConfigError.
    """
    preset = get_preset(name)
    name = preset.name
    config = replace(preset.config, **overrides) if overrides else preset.config
    preprocessing = preset.preprocessing
    if config.image_size != preprocessing.input_size:
        preprocessing = replace(preprocessing, input_size=config.image_size)
    # named for what it is: overrides that give another registered architecture's config take that name
    return CrossEfficientViT(config=config, preprocessing=preprocessing, preset_name=architecture_of(config) or name)
