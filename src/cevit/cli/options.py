"""Command-line options shared by several subcommands (defined once, so their help texts cannot drift)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model ARCH.TAG`` and ``--rule``: which registered weights, and an override of their aggregation rule."""
    p.add_argument(
        "--model",
        default=None,
        metavar="ARCH.TAG",
        help="registered weights to use (default: the bundled default; list them with `cevit info --list`); "
        "with --weights, names the registered weights the file is (for their inference settings)",
    )
    p.add_argument(
        "--rule",
        default=None,
        choices=("cevit-default", "coccomini2022-video"),
        help="aggregation rule (default: the one the weights carry: cevit-default for cevit's, "
        "coccomini2022-video for the authors' checkpoint)",
    )


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """``--precision``: the model's arithmetic (cevit.inference.pipeline.PRECISIONS; face detection stays fp32)."""
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="the model's arithmetic: fp32 (default), auto (bf16 autocast on a CUDA GPU with bf16, else fp16 on "
        "CUDA; fp32 on the CPU), bf16 or fp16 (autocast: faster on a GPU, face scores move by up to about 0.01 from "
        "fp32's); the onnxruntime backend runs fp32 only",
    )


def _limit(kind: type) -> Callable[[str], float | int | None]:
    """argparse type of a limit: a positive number, or ``none`` / ``off`` for no limit."""

    def parse(text: str) -> float | int | None:
        if text.strip().lower() in ("none", "off"):
            return None
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__} or 'none', got {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__} or 'none', got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_limit_options(p: argparse.ArgumentParser) -> None:
    """The resource policy per item (:mod:`cevit.limits`, plus the pixel limits of the readers): one flag each."""
    from cevit.limits import (
        DEFAULT_MAX_FACES_PER_FRAME,
        DEFAULT_MAX_ITEM_MEMORY_MB,
        DEFAULT_MAX_ITEM_SECONDS,
        DEFAULT_MAX_VIDEO_SECONDS,
    )
    from cevit.media.image import DEFAULT_MAX_PIXELS
    from cevit.media.probe import DEFAULT_MAX_FRAME_PIXELS

    g = p.add_argument_group("resource limits per item ('none' switches one off; see SECURITY.md)")
    g.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images of more than N pixels, checked before decoding (default: {DEFAULT_MAX_PIXELS})",
    )
    g.add_argument(
        "--max-frame-pixels",
        type=int,
        default=DEFAULT_MAX_FRAME_PIXELS,
        metavar="N",
        help="refuse videos whose frames have more than N pixels, checked from the stream header before "
        f"decoding (default: {DEFAULT_MAX_FRAME_PIXELS})",
    )
    g.add_argument(
        "--max-item-seconds",
        type=_limit(float),
        default=DEFAULT_MAX_ITEM_SECONDS,
        metavar="S",
        help=f"stop an item after S seconds of wall time with an error (default: {DEFAULT_MAX_ITEM_SECONDS:g})",
    )
    g.add_argument(
        "--max-video-seconds",
        type=_limit(float),
        default=DEFAULT_MAX_VIDEO_SECONDS,
        metavar="S",
        help=f"refuse videos whose header declares a longer duration (default: {DEFAULT_MAX_VIDEO_SECONDS:g})",
    )
    g.add_argument(
        "--max-faces",
        type=_limit(int),
        default=DEFAULT_MAX_FACES_PER_FRAME,
        metavar="N",
        help=f"refuse an item with more than N faces in one frame (default: {DEFAULT_MAX_FACES_PER_FRAME})",
    )
    g.add_argument("--max-item-memory-mb", type=_limit(float), default=DEFAULT_MAX_ITEM_MEMORY_MB, metavar="MB",
                   help="refuse an item whose decoded frames held at once are estimated above MB MiB, from its "
                   f"header (default: {DEFAULT_MAX_ITEM_MEMORY_MB})")  # fmt: skip


def limit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`cevit.load_model` for the flags of :func:`add_limit_options`."""
    return {"max_pixels": args.max_pixels, "max_frame_pixels": args.max_frame_pixels,
            "max_item_seconds": args.max_item_seconds, "max_video_seconds": args.max_video_seconds,
            "max_faces_per_frame": args.max_faces, "max_item_memory_mb": args.max_item_memory_mb}  # fmt: skip
