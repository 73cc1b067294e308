"""cevit's own checkpoint format: one safetensors file whose metadata carries everything needed to use it.

Metadata keys (all JSON strings, as safetensors metadata is str → str):

* ``format`` — ``"cevit-checkpoint"``; ``format_version`` — ``"1"``
* ``preset`` — the preset name the architecture came from (informational)
* ``config`` — the full :class:`~cevit.models.CrossEfficientViTConfig`
* ``preprocessing`` — the :class:`~cevit.preprocess.Preprocessing` contract
* ``provenance`` — free-form JSON: data, recipe, metrics, git commit, ... (given to :func:`save_checkpoint`)
* ``inference`` — optional: the :class:`~cevit.models.pretrained.InferenceConfig` the weights are meant to be used
  with (aggregation rule and thresholds, face-detector settings, calibration temperature) and ``weights_tag``
  (``architecture.tag``) when the weights are registered; :func:`cevit.load_model` applies it
* ``created`` — ISO-8601 UTC creation time

Loading never executes code (safetensors holds only tensors), matches keys strictly and names missing and
unexpected keys and the file in its errors. Tensors stored as fp16 are cast to fp32 on load.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cevit.config import from_dict, to_dict
from cevit.errors import CevitError, CheckpointError
from cevit.models.cross_efficient_vit import CrossEfficientViT, CrossEfficientViTConfig
from cevit.models.pretrained import InferenceConfig, inference_config_from_json
from cevit.preprocess import Preprocessing

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointInfo",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_info",
    "file_sha256",
    "load_state_dict_strict",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "cevit-checkpoint"
FORMAT_VERSION = "1"


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """What a checkpoint file says about itself (without building the model)."""

    path: str
    sha256: str
    preset: str | None
    config: CrossEfficientViTConfig
    preprocessing: Preprocessing
    provenance: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    dtype: str = "float32"  #: storage: "float32", "float16" or "mixed" (fp16 except named tensors)
    #: how the weights are meant to be used (None: the file predates this key or was saved without one)
    inference: InferenceConfig | None = None
    weights_tag: str | None = None  #: ``architecture.tag`` of registered weights

    @property
    def architecture(self) -> str | None:
        """The registered architecture whose config this checkpoint has (None: a custom configuration)."""
        from cevit.models.registry import architecture_of

        return architecture_of(self.config)


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def portable_paths(obj: Any, *, base: Path | None = None) -> Any:
    """``obj`` (JSON-like) with every absolute path string made portable: relative to ``base`` (default: the
    working directory) when inside it, else its last two components after ``.../``. Provenance never records
    where the build machine kept its files."""
    base = (base or Path.cwd()).resolve()
    if isinstance(obj, dict):
        return {k: portable_paths(v, base=base) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable_paths(v, base=base) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and "\n" not in obj and len(obj) < 4096:
        p = Path(obj)
        try:
            return p.resolve().relative_to(base).as_posix()
        except (ValueError, OSError):
            return ".../" + "/".join(p.parts[-2:])
    return obj


def save_checkpoint(
    model: CrossEfficientViT,
    path: str | Path,
    *,
    half: bool = False,
    keep_fp32: Collection[str] = (),
    inference: InferenceConfig | None = None,
    weights_tag: str | None = None,
    **provenance: Any,
) -> str:
    """Write ``model`` to ``path`` (safetensors + metadata); returns the file's SHA-256.

    ``provenance`` keyword arguments (data, recipe, metrics, git_commit, ...) must be JSON-serialisable; absolute
    paths in them are stored relative to the working directory (see :func:`portable_paths`).
    ``half=True`` stores floating-point tensors as fp16 (half the size; check the logit drift before shipping),
    except those named in ``keep_fp32``, which stay fp32 (mixed storage, metadata ``dtype`` = ``"mixed"``).
    Loading always gives an fp32 model. ``inference`` (and ``weights_tag``) record how the weights are meant to be
    used; without it, the inference config of a model loaded from a checkpoint (``model.checkpoint_info``) is kept,
    so re-saving a loaded model never drops its calibration or operating point.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    keep = set(keep_fp32)
    unknown = sorted(keep - set(model.state_dict()))
    if unknown:
        raise CheckpointError(f"{path}: keep_fp32 names tensors the model does not have: {', '.join(unknown[:5])}")
    if keep and not half:
        raise CheckpointError(f"{path}: keep_fp32 only makes sense with half=True")
    try:
        provenance_json = json.dumps(portable_paths(provenance), sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: provenance is not JSON-serialisable ({exc})") from None
    tensors = {}
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        if half and t.is_floating_point() and key not in keep:
            t = t.half()
        tensors[key] = t.contiguous()
    if inference is None and getattr(model, "checkpoint_info", None) is not None:
        inference = model.checkpoint_info.inference
        weights_tag = weights_tag or model.checkpoint_info.weights_tag
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "preset": json.dumps(model.preset_name),
        "config": json.dumps(to_dict(model.config), sort_keys=True),
        "preprocessing": json.dumps(to_dict(model.preprocessing), sort_keys=True),
        "provenance": provenance_json,
        "created": json.dumps(_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")),
        "dtype": json.dumps(("mixed" if keep else "float16") if half else "float32"),
    }
    if inference is not None:
        metadata["inference"] = json.dumps(to_dict(inference), sort_keys=True)
    if weights_tag is not None:
        metadata["weights_tag"] = json.dumps(weights_tag)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint under the final name
    except (OSError, SafetensorError) as exc:  # a missing or read-only folder, a file in the way, a full disk
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CheckpointError(f"{path}: cannot write checkpoint ({why})") from None
    digest = file_sha256(path)
    log.info("saved checkpoint %s (sha256 %s)", path, digest)
    return digest


def check_checkpoint_file(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is an existing, readable, non-empty regular file.

    The checks every weights reader (cevit's safetensors, the authors' ``.pth``) makes before parsing a byte.
    """
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(
            f"{path}: checkpoint file cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None
    if size == 0:
        raise CheckpointError(f"{path}: empty checkpoint file (0 bytes)")


def _safe_open_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    check_checkpoint_file(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except PermissionError:
        raise CheckpointError(f"{path}: checkpoint file cannot be read (permission denied)") from None
    except Exception as exc:  # safetensors raises SafetensorError / OSError for truncated or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({reason})") from None


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Parse and validate a cevit checkpoint's metadata."""
    path = Path(path)
    meta = _safe_open_metadata(path)
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: not a cevit checkpoint (metadata 'format' is {meta.get('format')!r}); "
            "convert the authors' .pth with `cevit convert-original`"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format version {meta.get('format_version')!r} "
            f"(this cevit reads version {FORMAT_VERSION})"
        )
    try:
        config = from_dict(CrossEfficientViTConfig, json.loads(meta["config"]), source=f"{path} [config]")
        preprocessing = from_dict(Preprocessing, json.loads(meta["preprocessing"]), source=f"{path} [preprocessing]")
        provenance = json.loads(meta.get("provenance", "{}"))
        preset = json.loads(meta.get("preset", "null"))
        created = json.loads(meta.get("created", "null"))
        dtype = json.loads(meta.get("dtype", '"float32"'))
        inference = None
        if "inference" in meta:
            inference = inference_config_from_json(json.loads(meta["inference"]), source=f"{path} [inference]")
        weights_tag = json.loads(meta.get("weights_tag", "null"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({exc})") from None
    except CevitError as exc:
        raise CheckpointError(str(exc)) from None
    except (TypeError, ValueError, AttributeError) as exc:  # well-formed JSON of the wrong shape
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({type(exc).__name__}: {exc})") from None
    return CheckpointInfo(
        path=str(path), sha256=file_sha256(path), preset=preset, config=config, preprocessing=preprocessing,
        provenance=provenance, created=created, dtype=dtype, inference=inference, weights_tag=weights_tag,
    )  # fmt: skip


def check_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], *, source: str) -> None:
    """CheckpointError unless ``found`` has exactly the keys of ``expected`` with the same shapes."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
            )
        raise CheckpointError(f"{source}: weights do not match the model: {'; '.join(parts)}")
    wrong = [f"{k} {tuple(found[k])} != {tuple(v)}" for k, v in expected.items() if tuple(found[k]) != tuple(v)]
    if wrong:
        raise CheckpointError(f"{source}: tensor shapes do not match the model: {'; '.join(wrong[:8])}")


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` into ``model`` requiring the same keys and shapes; errors name the keys and ``source``."""
    expected = model.state_dict()
    check_shapes({k: tuple(v.shape) for k, v in expected.items()}, {k: tuple(v.shape) for k, v in state.items()},
                 source=source)  # fmt: skip
    cast = {k: v.to(dtype=expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(cast, strict=True)


def _registered_sha256() -> set[str]:
    """SHA-256 of the registered weights files (:data:`cevit.models.pretrained.PRETRAINED`)."""
    from cevit.models.pretrained import PRETRAINED

    return {w.sha256 for w in PRETRAINED.values() if w.sha256}


def _check_model_matches_tensors(path: Path, info: CheckpointInfo) -> None:
    """Refuse a checkpoint whose metadata describes another model than the tensors it holds, spending no memory.

    The model the metadata describes is built on PyTorch's ``meta`` device (shapes only, no storage) and its keys
    and shapes are compared with the safetensors header. So a file can only make cevit build a model as large as
    the tensors it really contains (without this, a few bytes of metadata could ask for a model of any size).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - a header safetensors cannot read
        raise CheckpointError(f"{path}: cannot read tensors ({exc})") from None
    try:
        with torch.device("meta"):
            skeleton = CrossEfficientViT(config=info.config, preprocessing=info.preprocessing,
                                         preset_name=info.architecture or info.preset)  # fmt: skip
    except CevitError as exc:
        raise CheckpointError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a config the model cannot be built from
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: the model this checkpoint describes cannot be built ({reason})") from None
    check_shapes({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, found, source=str(path))


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> CrossEfficientViT:
    """Build the model described by a cevit checkpoint and load its weights (eval mode, fp32).

    The returned model has ``checkpoint_info`` (a :class:`CheckpointInfo`, with the file's SHA-256) attached.
    """
    from safetensors.torch import load_file

    path = Path(path)
    info = read_checkpoint_info(path)
    if info.sha256 not in _registered_sha256():  # a registered file (the bundled weights) is known to fit; the
        # check's meta-device model costs ~0.7 s of a first load (torch imports its meta kernels)
        _check_model_matches_tensors(path, info)  # before any memory is spent on the model or the tensors
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read tensors ({exc})") from None
    try:
        # the registered architecture with this config (a file saved under a deprecated name gets today's name)
        model = CrossEfficientViT(config=info.config, preprocessing=info.preprocessing,
                                  preset_name=info.architecture or info.preset)  # fmt: skip
        load_state_dict_strict(model, state, source=str(path))
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config the model cannot be built from, odd tensors, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: the model this checkpoint describes cannot be built and loaded ({reason})"
        ) from None
    model.checkpoint_info = info
    log.info("loaded checkpoint %s (sha256 %s)", path, info.sha256)
    return model.to(device).eval()
