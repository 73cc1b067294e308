"""Named model presets: ``create_model(name, **overrides)`` and ``list_presets()``."""

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

__all__ = ["ModelPreset", "PRESETS", "DEFAULT_PRESET", "get_preset", "list_presets", "create_model"]


@dataclass(frozen=True, kw_only=True)
class ModelPreset:
    name: str
    config: CrossEfficientViTConfig
    preprocessing: Preprocessing
    description: str


DEFAULT_PRESET = "CROSS-EFFICIENT-VIT-V1"

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            name=DEFAULT_PRESET,
            config=V1_CONFIG,
            preprocessing=V1_PREPROCESSING,
            description="cevit's default: 380 px RGB ImageNet-normalised input, multi-token branches",
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
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


def create_model(name: str = DEFAULT_PRESET, **overrides: Any) -> CrossEfficientViT:
    """A fresh (randomly initialised) model of preset ``name``; ``overrides`` replace config fields.

    Overriding ``image_size`` also changes the preprocessing input size. Unknown keys raise ConfigError.
    """
    preset = get_preset(name)
    config = replace(preset.config, **overrides) if overrides else preset.config
    preprocessing = preset.preprocessing
    if config.image_size != preprocessing.input_size:
        preprocessing = replace(preprocessing, input_size=config.image_size)
    return CrossEfficientViT(config=config, preprocessing=preprocessing, preset_name=name)
