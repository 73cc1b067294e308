"""Converter for the authors' released Cross Efficient ViT checkpoint (``cross_efficient_vit.pth``).

The file is a plain pickled ``state_dict`` (1,152 tensors). It is read with ``torch.load(weights_only=True)``,
which refuses pickles that would run code. The authors' module names are ours, so conversion only

* drops tensors the model does not use: both EfficientNets' ``_fc`` classifier, and the large-scale branch's
  blocks after ``lg_last_block``, its ``_conv_head`` and ``_bn1`` (the authors' block deletion had no effect);
* cuts the over-sized position embeddings (stored for image_size/patch_size tokens) to the rows the model uses
  (the authors' forward only ever reads ``pos_embedding[:, :n + 1]``);
* strips a ``module.`` prefix (checkpoints saved from ``DataParallel``).

It works for any config of the family (:func:`config_from_original` reads the authors' hyphenated config keys),
so the reduced-size exactness fixture tests the same code path as the released weights.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cevit.checkpoint import CheckpointInfo, file_sha256, load_state_dict_strict, save_checkpoint
from cevit.config import replace
from cevit.errors import CheckpointError, ConfigError
from cevit.models.cross_efficient_vit import CrossEfficientViT, CrossEfficientViTConfig
from cevit.models.registry import get_preset

__all__ = [
    "ORIGINAL_PRESET",
    "config_from_original",
    "read_original_state_dict",
    "convert_original_state_dict",
    "load_original_checkpoint",
    "convert_original_file",
]

log = logging.getLogger(__name__)

ORIGINAL_PRESET = "coccomini2022"

_ORIGINAL_KEYS = {
    "image-size": "image_size", "depth": "depth",
    "sm-dim": "sm_dim", "sm-patch-size": "sm_patch_size", "sm-enc-depth": "sm_enc_depth",
    "sm-enc-heads": "sm_enc_heads", "sm-enc-dim-head": "sm_enc_dim_head", "sm-enc-mlp-dim": "sm_enc_mlp_dim",
    "lg-dim": "lg_dim", "lg-patch-size": "lg_patch_size", "lg-enc-depth": "lg_enc_depth",
    "lg-enc-heads": "lg_enc_heads", "lg-enc-dim-head": "lg_enc_dim_head", "lg-enc-mlp-dim": "lg_enc_mlp_dim",
    "cross-attn-depth": "cross_attn_depth", "cross-attn-heads": "cross_attn_heads",
    "cross-attn-dim-head": "cross_attn_dim_head", "dropout": "dropout", "emb-dropout": "emb_dropout",
}  # fmt: skip
# Keys of the authors' config that follow from the architecture and are only checked.
_FIXED = {"num-classes": 1, "sm-channels": 1280, "lg-channels": 24}


def config_from_original(original: Mapping[str, Any]) -> CrossEfficientViTConfig:
    """Translate the authors' YAML/JSON model config (hyphenated keys) into a CrossEfficientViTConfig."""
    values: dict[str, Any] = {}
    for key, value in original.items():
        if key in _FIXED:
            if value != _FIXED[key]:
                raise ConfigError(f"original config: {key}={value!r} is not supported (expected {_FIXED[key]})")
        elif key in _ORIGINAL_KEYS:
            values[_ORIGINAL_KEYS[key]] = value
        else:
            raise ConfigError(f"original config: unknown key {key!r}")
    base = get_preset(ORIGINAL_PRESET).config
    return replace(base, **values)


def read_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the authors' ``.pth`` safely (no code execution) and return its tensors."""
    from cevit.checkpoint import check_checkpoint_file

    path = Path(path)
    check_checkpoint_file(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises anything (KeyError, RuntimeError, ...) on foreign bytes
        log.debug("torch.load(%s, weights_only=True) failed", path, exc_info=True)
        raise _load_error(path, exc) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(f"{path}: expected a state dict of named tensors, got {type(obj).__name__}")
    return dict(obj)


def _load_error(path: Path, exc: BaseException) -> CheckpointError:
    """A CheckpointError for a failed weights-only ``torch.load``, in cevit's words.

    torch's own message is never relayed: for files it refuses, it advises loading with the safety switched off.
    """
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in text.lower():
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" (it refers to {found.group(1)}, which is not a tensor type)" if found else ""
        return CheckpointError(
            f"{path}: cannot load as a weights-only PyTorch checkpoint (refusing anything that would run code): "
            f"the file is not a pickle of plain tensors{what}"
        )
    if isinstance(exc, PermissionError):
        return CheckpointError(f"{path}: checkpoint file cannot be read (permission denied)")
    if isinstance(exc, RuntimeError) and (
        "zip archive" in text or "PytorchStreamReader" in text or "inline_container" in text
    ):
        return CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint (its zip archive cannot be read)")
    return CheckpointError(
        f"{path}: not a model checkpoint cevit can read: neither a cevit .safetensors checkpoint nor a PyTorch "
        f"checkpoint of tensors ({type(exc).__name__} while reading it)"
    )


def convert_original_state_dict(
    state: Mapping[str, torch.Tensor], model: CrossEfficientViT, *, source: str = "original checkpoint"
) -> dict[str, torch.Tensor]:
    """Map the authors' tensors onto ``model``'s keys and shapes (fp32) and load them into ``model`` strictly.

    Returns the converted state dict. Errors name the file (``source``) and the missing/unexpected keys.
    """
    config = model.config
    lg_block = re.compile(r"^lg_image_embedder\.efficient_net\._blocks\.(\d+)\.")
    dropped_prefixes = (
        "sm_image_embedder.efficient_net._fc.",
        "lg_image_embedder.efficient_net._fc.",
        "lg_image_embedder.efficient_net._conv_head.",
        "lg_image_embedder.efficient_net._bn1.",
    )
    model_shapes = {
        "sm_image_embedder.pos_embedding": None,
        "lg_image_embedder.pos_embedding": None,
    }
    out: dict[str, torch.Tensor] = {}
    dropped = 0
    for key, tensor in state.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if key.startswith(dropped_prefixes):
            dropped += 1
            continue
        m = lg_block.match(key)
        if m and int(m.group(1)) > config.lg_last_block:
            dropped += 1
            continue
        out[key] = tensor.float() if tensor.is_floating_point() else tensor
    # position embeddings: keep only the rows the model reads
    for key in model_shapes:
        if key not in out:
            continue
        branch = model.sm_image_embedder if key.startswith("sm_") else model.lg_image_embedder
        need = branch.num_patches + 1
        if out[key].ndim != 3:
            raise CheckpointError(f"{source}: {key} has shape {tuple(out[key].shape)}, expected (1, tokens, dim)")
        have = out[key].shape[1]
        if have < need:
            raise CheckpointError(f"{source}: {key} has {have} rows, the model needs {need}")
        out[key] = out[key][:, :need].contiguous()
    log.debug("converted %d tensors, dropped %d unused", len(out), dropped)
    load_state_dict_strict(model, out, source=source)  # validates keys and shapes with clear errors
    return out


def load_original_checkpoint(
    path: str | Path, *, config: CrossEfficientViTConfig | None = None, device: str | torch.device = "cpu"
) -> CrossEfficientViT:
    """Load the authors' ``.pth`` as a ``coccomini2022`` model in eval mode.

    Its forward takes float (B, 3, 224, 224) tensors in the authors' convention (BGR, 0–255, no normalisation)
    and returns logits (B, 1). Pass ``config`` for a checkpoint of another size of the same family.
    """
    path = Path(path)
    preset = get_preset(ORIGINAL_PRESET)
    config = config or preset.config
    state = read_original_state_dict(path)
    preprocessing = preset.preprocessing
    if config.image_size != preprocessing.input_size:
        preprocessing = replace(preprocessing, input_size=config.image_size)
    model = CrossEfficientViT(config=config, preprocessing=preprocessing, preset_name=ORIGINAL_PRESET)
    convert_original_state_dict(state, model, source=str(path))
    model.checkpoint_info = CheckpointInfo(
        path=str(path), sha256=file_sha256(path), preset=ORIGINAL_PRESET, config=config,
        preprocessing=preprocessing, provenance={"converted_from": "authors' cross_efficient_vit.pth"},
    )  # fmt: skip
    return model.to(device).eval()


def convert_original_file(src: str | Path, dst: str | Path, *, config: CrossEfficientViTConfig | None = None) -> str:
    """Convert the authors' ``.pth`` into a cevit checkpoint at ``dst``; returns its SHA-256."""
    model = load_original_checkpoint(src, config=config)
    return save_checkpoint(
        model, dst,
        source_file=str(Path(src).name), source_sha256=file_sha256(src),
        data="DFDC (as trained by Coccomini et al., ICIAP 2022)",
        recipe="authors' release, converted by `cevit convert-original`",
    )  # fmt: skip
