"""Model architectures and presets."""

from cevit.models.cross_efficient_vit import CrossEfficientViT, CrossEfficientViTConfig
from cevit.models.registry import DEFAULT_PRESET, ModelPreset, create_model, get_preset, list_presets

__all__ = [
    "CrossEfficientViT",
    "CrossEfficientViTConfig",
    "DEFAULT_PRESET",
    "ModelPreset",
    "create_model",
    "get_preset",
    "list_presets",
]
