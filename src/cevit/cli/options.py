"""Command-line options shared by several subcommands (defined once, so their help texts cannot drift)."""

from __future__ import annotations

import argparse


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
