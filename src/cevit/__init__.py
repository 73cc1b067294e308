"""cevit — face-deepfake detection with the Cross Efficient ViT.

Public API (imported lazily, so ``import cevit`` is cheap)::

    import cevit
    model = cevit.create_model("cross_efficient_vit_v1")        # fresh weights of a named architecture
    cevit.list_presets()
    sha = cevit.save_checkpoint(model, "model.safetensors", data="...", recipe="...")
    model = cevit.load_checkpoint("model.safetensors")
    model = cevit.load_original_checkpoint("cross_efficient_vit.pth")   # the authors' released weights
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "create_model": "cevit.models.registry",
    "list_presets": "cevit.models.registry",
    "get_preset": "cevit.models.registry",
    "DEFAULT_PRESET": "cevit.models.registry",
    "CrossEfficientViT": "cevit.models.cross_efficient_vit",
    "CrossEfficientViTConfig": "cevit.models.cross_efficient_vit",
    "Preprocessing": "cevit.preprocess",
    "save_checkpoint": "cevit.checkpoint",
    "load_checkpoint": "cevit.checkpoint",
    "read_checkpoint_info": "cevit.checkpoint",
    "load_original_checkpoint": "cevit.convert",
    "convert_original_file": "cevit.convert",
    "load_model": "cevit.inference.pipeline",
    "Detector": "cevit.inference.pipeline",
    "DetectorProtocol": "cevit.inference.protocol",
    "Analysis": "cevit.inference.results",
    "AnalysisError": "cevit.inference.results",
    "CevitError": "cevit.errors",
    "ConfigError": "cevit.errors",
    "CheckpointError": "cevit.errors",
    "MediaError": "cevit.errors",
    "ModelError": "cevit.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cevit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
