"""``cevit export onnx [--weights W] OUT.onnx``: the model as an ONNX file, for ONNX Runtime and other runtimes."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from cevit.models.onnx import DEFAULT_EXPORTER, DEFAULT_OPSET

    p = sub.add_parser(
        "export",
        help="export the model to another format (onnx)",
        description="Export the model that `cevit analyze` would use (or --weights / --model) to another format.",
    )
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    onnx = formats.add_parser(
        "onnx",
        help="an ONNX file: dynamic batch, preprocessing and inference config in its metadata",
        description="Write the network as one ONNX file (input 'faces' (N, 3, S, S) after the checkpoint's "
        "preprocessing, output 'logits' (N, 1), dynamic batch axis). The preprocessing contract, the inference "
        "config (rule, thresholds, detector settings, calibration temperature), the weights tag, the opset and the "
        "source checkpoint's SHA-256 go into the model's metadata. Run it with `cevit analyze --weights OUT.onnx` "
        '(backend onnxruntime). Needs the extra: pip install "cevit[onnx]".',
    )
    onnx.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    onnx.add_argument("--weights", help="a cevit .safetensors or the authors' .pth (default: the bundled weights)")
    onnx.add_argument("--model", default=None, metavar="ARCH.TAG", help="registered weights to export")
    onnx.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    onnx.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript"),
        default=DEFAULT_EXPORTER,
        help=f"PyTorch's ONNX exporter (default: {DEFAULT_EXPORTER}: 3x faster to run here; dynamo: PyTorch's newer one)",
    )
    onnx.add_argument("--no-check", action="store_true", help="skip comparing ONNX Runtime's logits with torch's")
    onnx.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="verbose logging and tracebacks")
    onnx.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cevit.export import export_weights_onnx

    result = export_weights_onnx(args.output, name=args.model, weights=args.weights, opset=args.opset,
                                 exporter=args.exporter, check=not args.no_check)  # fmt: skip
    check = (
        ""
        if result.max_abs_logit_diff is None
        else f", max |logit difference| to torch {result.max_abs_logit_diff:.2e}"
    )
    print(f"wrote {result.path} (sha256 {result.sha256}; opset {result.opset}, exporter {result.exporter}; "
          f"weights {result.weights_tag or 'untagged'}, source sha256 {result.source_sha256}{check})")  # fmt: skip
    return 0
