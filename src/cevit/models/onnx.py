"""The model as an ONNX file: export (``cevit export onnx``) and an ONNX Runtime scorer for the analysis pipeline.

>>> from cevit.models.onnx import export_onnx, load_onnx_model
>>> info = export_onnx(model, "cevit.onnx")          # a loaded CrossEfficientViT (e.g. load_weights(...))
>>> scorer = load_onnx_model("cevit.onnx")            # what load_model(..., backend="onnxruntime") runs

**What the file holds.** The network only: input ``faces`` (N, 3, S, S) float32 — the crops after the
checkpoint's preprocessing contract (:func:`cevit.preprocess.to_tensor`) — and output ``logits`` (N, 1) float32,
with a dynamic batch axis. Face detection, cropping, the tensor conversion, the calibration temperature and the
aggregation stay in Python and are shared with the torch backend, so both backends turn the same crops into the
same scores (P(fake) = sigmoid(logit / T) is applied by :meth:`cevit.inference.pipeline.Detector.score_faces`
for both).

**Metadata** (``metadata_props`` of the ONNX model, JSON strings like a cevit checkpoint's): ``format``
(``"cevit-onnx"``), ``format_version`` (``"1"``), ``preset``, ``config``, ``preprocessing``, ``inference`` (the
inference config: rule and thresholds, detector settings, calibration), ``weights_tag``, ``source_sha256`` (the
checkpoint the weights came from), ``opset``, ``exporter``, ``torch_version``, ``cevit_version``, ``created``.
:func:`load_onnx_model` rebuilds a :class:`~cevit.checkpoint.CheckpointInfo` from them (its ``sha256`` is the
ONNX file's own), so ``load_model`` applies the same inference config to both backends.

**Exporters.** ``exporter="torchscript"`` (the default: PyTorch's tracing exporter, deprecated upstream but
working in torch 2.13) or ``"dynamo"`` (PyTorch's ``torch.export``-based exporter; needs ``onnxscript``). Both
give logits within 1e-5 of torch (tested) and graphs that ONNX Runtime runs equally fast (default weights,
2 threads: 122 vs 154 ms/face at batch 1, 133 vs 136 at batch 8, ``benchmarks/model_forward.py``, loaded
machine), but on the 2-core development machine the TorchScript exporter took 32 s for the default weights
against 89 s for dynamo (tiny test model: 2-6 s against 15-20 s). That matters where the export happens on the
fly (``load_model(backend="onnxruntime")`` with torch weights), hence the default; when PyTorch drops the
TorchScript exporter, switch :data:`DEFAULT_EXPORTER`. Loading never needs torch's exporter, only
``onnxruntime`` (extra ``onnx``: ``pip install "cevit[onnx]"``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cevit.checkpoint import CheckpointInfo, check_checkpoint_file, file_sha256
from cevit.config import from_dict, to_dict
from cevit.errors import CevitError, CheckpointError, ConfigError, ModelError
from cevit.models.cross_efficient_vit import CrossEfficientViT, CrossEfficientViTConfig
from cevit.models.pretrained import InferenceConfig, inference_config_from_json
from cevit.preprocess import Preprocessing

__all__ = [
    "ONNX_FORMAT_NAME",
    "ONNX_FORMAT_VERSION",
    "DEFAULT_OPSET",
    "OnnxExport",
    "OnnxRuntimeModel",
    "export_onnx",
    "onnx_bytes",
    "load_onnx_model",
    "is_onnx_file",
    "runtime_model_of",
]

log = logging.getLogger(__name__)

ONNX_FORMAT_NAME = "cevit-onnx"
ONNX_FORMAT_VERSION = "1"
#: ONNX opset written by default (supported by onnxruntime >= 1.16).
DEFAULT_OPSET = 18
INPUT_NAME = "faces"
OUTPUT_NAME = "logits"
Exporter = Literal["dynamo", "torchscript"]
DEFAULT_EXPORTER: Exporter = "torchscript"

_INSTALL_HINT = 'install the ONNX extra: pip install "cevit[onnx]"'


@dataclass(frozen=True, kw_only=True)
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    path: str
    sha256: str  #: of the ONNX file
    source_sha256: str | None  #: of the checkpoint the weights came from (None: a model not loaded from a file)
    opset: int
    exporter: str
    weights_tag: str | None
    max_abs_logit_diff: float | None  #: against torch on a random batch, when checked (``check=True``)


def is_onnx_file(path: str | Path) -> bool:
    """True when ``path`` is named ``*.onnx`` (ONNX files have no magic number; the name decides)."""
    return Path(path).suffix.lower() == ".onnx"


def _metadata(
    model: CrossEfficientViT, *, opset: int, exporter: str, inference: InferenceConfig | None,
    weights_tag: str | None,
) -> dict[str, str]:  # fmt: skip
    from cevit import __version__

    info: CheckpointInfo | None = getattr(model, "checkpoint_info", None)
    if inference is None and info is not None:
        inference = info.inference
    if inference is None:  # a file without one (the authors' .pth): its architecture's registered config
        from cevit.models.pretrained import default_inference_for

        inference = default_inference_for(model.preset_name)
    if weights_tag is None and info is not None:
        weights_tag = info.weights_tag
    meta = {
        "format": ONNX_FORMAT_NAME,
        "format_version": ONNX_FORMAT_VERSION,
        "preset": json.dumps(model.preset_name),
        "config": json.dumps(to_dict(model.config), sort_keys=True),
        "preprocessing": json.dumps(to_dict(model.preprocessing), sort_keys=True),
        "inference": json.dumps(to_dict(inference), sort_keys=True),
        "weights_tag": json.dumps(weights_tag),
        "source_sha256": json.dumps(info.sha256 if info is not None else None),
        "opset": json.dumps(opset),
        "exporter": json.dumps(exporter),
        "torch_version": json.dumps(torch.__version__),
        "cevit_version": json.dumps(__version__),
        "created": json.dumps(_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")),
        "input": json.dumps({"name": INPUT_NAME, "shape": ["batch", 3, model.config.image_size,
                                                           model.config.image_size], "dtype": "float32"}),
        "output": json.dumps({"name": OUTPUT_NAME, "shape": ["batch", 1], "dtype": "float32",
                              "meaning": "logit of P(fake), before the calibration temperature"}),
    }  # fmt: skip
    return meta


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(
            f"the ONNX backend needs the package {module!r}, which is not installed; {_INSTALL_HINT}"
        ) from None


def onnx_bytes(
    model: CrossEfficientViT, *, opset: int = DEFAULT_OPSET, exporter: Exporter = DEFAULT_EXPORTER,
    inference: InferenceConfig | None = None, weights_tag: str | None = None,
) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    """Export ``model`` (eval mode, fp32, on the CPU) to a serialised ONNX model with cevit's metadata.

    The metadata's inference config and weights tag are ``inference`` / ``weights_tag`` when given, else those of
    the checkpoint the model was loaded from, else the config registered for its architecture.

    Returns the bytes and the metadata written into them. Raises :class:`~cevit.errors.ModelError` when the
    export fails or the packages it needs (``onnx``, and ``onnxscript`` for the dynamo exporter) are missing.
    """
    if exporter not in ("dynamo", "torchscript"):
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; use dynamo or torchscript")
    if not isinstance(opset, int) or isinstance(opset, bool) or not 14 <= opset <= 23:
        raise ConfigError(f"ONNX opset must be an integer in [14, 23], got {opset!r}")
    onnx = _require("onnx")
    if exporter == "dynamo":
        _require("onnxscript")
    model = model.to("cpu").eval()
    size = model.config.image_size
    example = torch.zeros(2, 3, size, size)
    try:
        # the exporters print progress and tracer warnings meant for their developers: kept out of cevit's output
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            proto = _export_proto(model, example, onnx=onnx, opset=opset, exporter=exporter)
    except CevitError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporter internals: one clear error, details at DEBUG
        log.debug("ONNX export failed", exc_info=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"ONNX export ({exporter}) failed: {reason}") from None
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    meta = _metadata(model, opset=int(written), exporter=exporter, inference=inference, weights_tag=weights_tag)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "cevit"
    return proto.SerializeToString(), meta


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log_ = logging.getLogger(logger)
    level = log_.level
    log_.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log_.setLevel(level)


def _export_proto(model: CrossEfficientViT, example: torch.Tensor, *, onnx: Any, opset: int, exporter: str) -> Any:
    if exporter == "dynamo":
        program = torch.onnx.export(
            model, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
            dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False,
        )  # fmt: skip
        return program.model_proto
    buf = io.BytesIO()
    torch.onnx.export(
        model, (example,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
        dynamo=False, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )  # fmt: skip
    return onnx.load_from_string(buf.getvalue())


def export_onnx(
    model: CrossEfficientViT, path: str | Path, *, opset: int = DEFAULT_OPSET, exporter: Exporter = DEFAULT_EXPORTER,
    check: bool = True, inference: InferenceConfig | None = None, weights_tag: str | None = None,
) -> OnnxExport:  # fmt: skip
    """Write ``model`` to the ONNX file ``path`` (one self-contained file, written atomically).

    ``check=True`` runs the written file with ONNX Runtime on a random batch of 3 and compares the logits with
    torch's (``max_abs_logit_diff``; a difference above 1e-3 raises :class:`~cevit.errors.ModelError`).
    """
    path = Path(path)
    data, meta = onnx_bytes(model, opset=opset, exporter=exporter, inference=inference, weights_tag=weights_tag)
    diff = None
    if check:
        size = model.config.image_size
        x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            expected = model(x).float().numpy()
        got = OnnxRuntimeModel.from_bytes(data, source=str(path))(x).numpy()
        diff = float(np.abs(got - expected).max())
        if not diff <= 1e-3:
            raise ModelError(f"{path}: the exported ONNX model's logits differ from torch's by {diff:.3g}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: never a half-written model under the final name
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CevitError(f"{path}: cannot write the ONNX model ({exc.strerror or type(exc).__name__})") from None
    digest = file_sha256(path)
    log.info("wrote ONNX model %s (sha256 %s, opset %s)", path, digest, meta["opset"])
    return OnnxExport(path=str(path), sha256=digest, source_sha256=json.loads(meta["source_sha256"]),
                      opset=json.loads(meta["opset"]), exporter=exporter, weights_tag=json.loads(meta["weights_tag"]),
                      max_abs_logit_diff=diff)  # fmt: skip


def _info_from_metadata(meta: dict[str, str], *, source: str, sha256: str) -> CheckpointInfo:
    if meta.get("format") != ONNX_FORMAT_NAME:
        raise CheckpointError(f"{source}: not an ONNX model exported by cevit (metadata 'format' is "
                              f"{meta.get('format')!r}); export one with `cevit export onnx`")  # fmt: skip
    if meta.get("format_version") != ONNX_FORMAT_VERSION:
        raise CheckpointError(f"{source}: unsupported cevit ONNX format version {meta.get('format_version')!r} "
                              f"(this cevit reads version {ONNX_FORMAT_VERSION})")  # fmt: skip
    try:
        config = from_dict(CrossEfficientViTConfig, json.loads(meta["config"]), source=f"{source} [config]")
        preprocessing = from_dict(Preprocessing, json.loads(meta["preprocessing"]), source=f"{source} [preprocessing]")
        inference = inference_config_from_json(json.loads(meta["inference"]), source=f"{source} [inference]")
        provenance = {key: json.loads(meta[key]) for key in ("source_sha256", "opset", "exporter", "torch_version",
                                                              "cevit_version") if key in meta}  # fmt: skip
        return CheckpointInfo(
            path=source, sha256=sha256, preset=json.loads(meta.get("preset", "null")), config=config,
            preprocessing=preprocessing, provenance=provenance, created=json.loads(meta.get("created", "null")),
            inference=inference, weights_tag=json.loads(meta.get("weights_tag", "null")),
        )  # fmt: skip
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{source}: corrupt cevit ONNX metadata ({type(exc).__name__}: {exc})") from None
    except CevitError as exc:
        raise CheckpointError(str(exc)) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{source}: corrupt cevit ONNX metadata ({type(exc).__name__}: {exc})") from None


class OnnxRuntimeModel:
    """An exported cevit model run by ONNX Runtime, standing in for the torch model inside a
    :class:`~cevit.inference.pipeline.Detector`: calling it with the preprocessed batch (N, 3, S, S) returns the
    logits (N, 1) as a CPU float32 tensor.

    It carries what the detector reads from a torch model: ``config``, ``preprocessing``, ``preset_name`` and
    ``checkpoint_info`` (from the file's metadata). ``threads``: ONNX Runtime's intra-op threads (default:
    ``torch.get_num_threads()``, so both backends use the same number of cores). ``device`` ``cuda`` needs
    ONNX Runtime's CUDA provider (``onnxruntime-gpu``).
    """

    backend = "onnxruntime"

    def __init__(
        self, *, session: Any, info: CheckpointInfo, device: str | torch.device = "cpu",
    ) -> None:  # fmt: skip
        self.session = session
        self.checkpoint_info = info
        self.config = info.config
        self.preprocessing = info.preprocessing
        self.preset_name = info.architecture or info.preset
        self.device = torch.device(device)
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(session.get_outputs()) != 1:
            raise CheckpointError(f"{info.path}: expected an ONNX model with one input and one output, got "
                                  f"{len(inputs)} and {len(session.get_outputs())}")  # fmt: skip
        shape = list(inputs[0].shape)
        s = self.preprocessing.input_size
        if len(shape) != 4 or shape[1:] != [3, s, s]:
            raise CheckpointError(f"{info.path}: the ONNX model's input {inputs[0].name} has shape {shape}; "
                                  f"its preprocessing needs (batch, 3, {s}, {s})")  # fmt: skip
        self.input_name = inputs[0].name

    @classmethod
    def from_bytes(
        cls, data: bytes, *, source: str = "<memory>", sha256: str | None = None, device: str | torch.device = "cpu",
        threads: int | None = None,
    ) -> OnnxRuntimeModel:  # fmt: skip
        """A scorer from a serialised cevit ONNX model (what :func:`onnx_bytes` returns)."""
        import hashlib

        session = _session(data, source=source, device=device, threads=threads)
        meta = dict(session.get_modelmeta().custom_metadata_map)
        info = _info_from_metadata(meta, source=source, sha256=sha256 or hashlib.sha256(data).hexdigest())
        return cls(session=session, info=info, device=device)

    def eval(self) -> OnnxRuntimeModel:
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(np.asarray(logits, dtype=np.float32))


def _session(data: bytes | str, *, source: str, device: str | torch.device, threads: int | None) -> Any:
    ort = _require("onnxruntime")
    dev = torch.device(device)
    if dev.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError("--backend onnxruntime on cuda needs ONNX Runtime's CUDA provider (onnxruntime-gpu); "
                              "this installation has only " + ", ".join(ort.get_available_providers()))  # fmt: skip
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
    elif dev.type == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise ConfigError(f"the onnxruntime backend runs on cpu or cuda, not {dev.type}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads if threads is not None else torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are noise to a user
    try:
        return ort.InferenceSession(data, sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for foreign or broken files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.debug("onnxruntime could not load %s", source, exc_info=True)
        raise CheckpointError(f"{source}: not a readable ONNX model ({reason[:300]})") from None


def load_onnx_model(
    path: str | Path, *, device: str | torch.device = "cpu", threads: int | None = None
) -> OnnxRuntimeModel:
    """Load an ONNX file written by :func:`export_onnx` into an :class:`OnnxRuntimeModel`.

    A missing, empty or unreadable file, a file ONNX Runtime cannot parse, or an ONNX model without cevit's
    metadata raises :class:`~cevit.errors.CheckpointError` naming the file and what is wrong.
    """
    path = Path(path)
    check_checkpoint_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    import hashlib

    return OnnxRuntimeModel.from_bytes(data, source=str(path), sha256=hashlib.sha256(data).hexdigest(), device=device,
                                       threads=threads)  # fmt: skip


def runtime_model_of(model: CrossEfficientViT, *, device: str | torch.device = "cpu") -> OnnxRuntimeModel:
    """``model`` (torch weights loaded from a file) run by ONNX Runtime: what ``load_model(backend="onnxruntime")``
    uses for torch weights.

    The export is cached (:mod:`cevit.cache`, ``onnx/<key>.onnx``; the key covers the checkpoint's SHA-256, the
    exporter, the opset and the torch and cevit versions), so only the first run with given weights pays for it
    (about 10 s for the default weights on a 2-core CPU; loading the cached file: under a second). A damaged or
    foreign cache entry is replaced by a fresh export (logged as a warning); a model not loaded from a file (no
    SHA-256) is exported in memory every time. The returned scorer's ``checkpoint_info`` names the weights file
    the model came from, not the export.
    """
    import dataclasses
    import hashlib

    from cevit import __version__
    from cevit.cache import read_entry, remove_entry, write_entry

    info = getattr(model, "checkpoint_info", None)
    source = info.path if info is not None else "<model>"
    entry = None
    if info is not None and info.sha256:
        key = hashlib.sha256(
            f"{info.sha256}|{DEFAULT_EXPORTER}|{DEFAULT_OPSET}|{torch.__version__}|{__version__}".encode()
        ).hexdigest()[:40]
        entry = f"onnx/{key}.onnx"
    scorer = None
    data = read_entry(entry) if entry is not None else None
    if data is not None:
        try:
            scorer = OnnxRuntimeModel.from_bytes(data, source=f"cached export of {source}", device=device)
            if scorer.checkpoint_info.provenance.get("source_sha256") != info.sha256:  # type: ignore[union-attr]
                raise CheckpointError("the cached export was made from other weights")
            log.debug("loaded the cached ONNX export of %s", source)
        except CheckpointError as exc:
            log.warning("ignoring a damaged cached ONNX export of %s (%s); exporting again", source, exc)
            remove_entry(entry)  # type: ignore[arg-type]
            scorer = None
    if scorer is None:
        log.info("exporting %s to ONNX for the onnxruntime backend (once: the export is cached)", source)
        data, _ = onnx_bytes(model, exporter=DEFAULT_EXPORTER)
        scorer = OnnxRuntimeModel.from_bytes(data, source=source, device=device)
        if entry is not None:
            write_entry(entry, data)
    if info is not None:  # the report names the weights file the user gave, not the export
        scorer.checkpoint_info = dataclasses.replace(scorer.checkpoint_info, path=info.path, sha256=info.sha256,
                                                     inference=info.inference, weights_tag=info.weights_tag)  # fmt: skip
    return scorer
