"""Export registered weights or a weights file to other runtimes (``cevit export onnx``).

>>> from cevit.export import export_weights_onnx
>>> result = export_weights_onnx("cevit.onnx")                       # the bundled default weights
>>> result = export_weights_onnx("m.onnx", weights="model.safetensors")

The weights are resolved as :func:`cevit.load_model` resolves them (a registered name, the bundled default, a
cevit checkpoint or the authors' ``.pth``; the bundled file checked against its registered SHA-256), and the
inference config written into the ONNX metadata is the one ``load_model`` would apply. The format itself is in
:mod:`cevit.models.onnx`.
"""

from __future__ import annotations

from pathlib import Path

from cevit.errors import CheckpointError, ConfigError, ModelError
from cevit.models.onnx import DEFAULT_EXPORTER, DEFAULT_OPSET, Exporter, OnnxExport, export_onnx, is_onnx_file

__all__ = ["export_weights_onnx"]


def export_weights_onnx(
    out: str | Path, *, name: str | None = None, weights: str | Path | None = None, opset: int = DEFAULT_OPSET,
    exporter: Exporter = DEFAULT_EXPORTER, check: bool = True,
) -> OnnxExport:  # fmt: skip
    """Export the weights ``name`` (``architecture.tag``; default: the bundled default) or the file ``weights`` to
    the ONNX file ``out`` (see :func:`cevit.models.onnx.export_onnx`)."""
    from cevit.inference.pipeline import bundled_weights_path, load_weights
    from cevit.models.pretrained import DEFAULT_WEIGHTS, deprecated, get_pretrained

    out = Path(out)
    if not is_onnx_file(out):
        raise ConfigError(f"{out}: the output file must end in .onnx")
    if weights is not None and is_onnx_file(weights):
        raise ConfigError(f"{weights}: is an ONNX model already; export takes a cevit checkpoint or the authors' .pth")
    registered = None
    if name is not None:
        old = deprecated(name)
        registered = get_pretrained(old[1] if old is not None else name)
    if weights is None:
        registered = registered or get_pretrained(DEFAULT_WEIGHTS)
        path = bundled_weights_path(registered.name)
        if path is None:
            raise ModelError(f"the weights {registered.name!r} are not bundled with this installation of cevit; "
                             "pass --weights PATH")  # fmt: skip
    else:
        path = Path(weights)
    model = load_weights(path)
    info = getattr(model, "checkpoint_info", None)
    if weights is None and registered is not None and registered.sha256 and info is not None \
            and info.sha256 != registered.sha256:  # fmt: skip
        raise CheckpointError(f"{path}: SHA-256 {info.sha256} differs from the registered {registered.sha256} of "
                              f"{registered.name} (a damaged or replaced installation)")  # fmt: skip
    inference = info.inference if info is not None else None
    weights_tag = info.weights_tag if info is not None else None
    if inference is None and registered is not None:
        inference = registered.inference
    if weights_tag is None and registered is not None:
        weights_tag = registered.name
    if weights_tag is None and info is not None and info.inference is None and info.architecture == "coccomini2022":
        weights_tag = "coccomini2022.dfdc"  # as load_model names the authors' released checkpoint
    return export_onnx(model, out, opset=opset, exporter=exporter, check=check, inference=inference,
                       weights_tag=weights_tag)  # fmt: skip
