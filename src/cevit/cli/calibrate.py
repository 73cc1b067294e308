"""``cevit calibrate``: fit a temperature on a run's validation split and store it with the weights."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit a temperature (probability calibration) on a run's validation split",
        description="Rebuild the validation split of a training config, score it with --weights, fit the temperature T "
        "of P(fake) = sigmoid(logit / T) by minimising the log-loss, and write a copy of the checkpoint that carries T "
        "(cevit analyze then reports calibrated scores). Prints the expected calibration error before and after.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the training config (YAML) of the weights")
    p.add_argument("--weights", required=True, metavar="FILE", help="the checkpoint to calibrate")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="the calibrated checkpoint to write")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cevit.errors import ConfigError
    from cevit.training.calibrate import calibrate_checkpoint
    from cevit.training.config import load_train_config

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    report = calibrate_checkpoint(load_train_config(args.config), args.weights, args.output, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"temperature    {report.temperature:.4f} (fitted on {report.n_samples} validation samples)")
    print(f"ECE            {report.ece_before:.4f} -> {report.ece_after:.4f}")
    print(f"log-loss       {report.nll_before:.4f} -> {report.nll_after:.4f}")
    for name, s in report.by_source.items():
        auc = report.auc_by_source.get(name)
        auc_text = f"  AUC {auc:.4f}" if auc is not None else ""
        print(f"  {name:14s} n={s['n']:5d}  ECE {s['ece_before']:.4f} -> {s['ece_after']:.4f}{auc_text}")
    print(f"wrote          {report.output} (sha256 {report.sha256})")
    return 0
