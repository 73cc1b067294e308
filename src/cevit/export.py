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

from cevit.errors import ConfigError
from cevit.models.onnx import DEFAULT_EXPORTER, DEFAULT_OPSET, Exporter, OnnxExport, export_onnx, is_onnx_file

__all__ = ["export_weights_onnx"]


def export_weights_onnx(
    out: str | Path, *, name: str | None = None, weights: str | Path | None = None, opset: int = DEFAULT_OPSET,
    exporter: Exporter = DEFAULT_EXPORTER, check: bool = True,
) -> OnnxExport:  # fmt: skip
    """Export the weights ``name`` (``architecture.tag``; default: the bundled default) or the file ``weights`` to
    the ONNX file ``out`` (see :func:`cevit.models.onnx.export_onnx`)."""
    from cevit.inference.pipeline import load_weights, resolve_weights, weights_identity

    out = Path(out)
    if not is_onnx_file(out):
        raise ConfigError(f"{out}: the output file must end in .onnx")
    if weights is not None and is_onnx_file(weights):
        raise ConfigError(f"{weights}: is an ONNX model already; export takes a cevit checkpoint or the authors' .pth")
    resolved = resolve_weights(name, weights)
    model = load_weights(resolved.path)
    inference, weights_tag = weights_identity(model, resolved)
    return export_onnx(model, out, opset=opset, exporter=exporter, check=check, inference=inference,
                       weights_tag=weights_tag)  # fmt: skip
