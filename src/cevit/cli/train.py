"""``cevit train --config FILE.yaml``: train a Cross Efficient ViT (see :mod:`cevit.training.trainer`)."""

from __future__ import annotations

import argparse
import logging


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from face indexes (YAML config)",
        description="Train a Cross Efficient ViT as described by a YAML config (see configs/train_sbi_v1.yaml). "
        "Writes best.safetensors, last.safetensors, train_state.pt, log.csv and curves.png to the output folder.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="training config (YAML)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in the output folder exactly where it stopped"
    )
    p.add_argument("--output-dir", metavar="DIR", help="override output_dir of the config")
    p.add_argument("--device", metavar="DEV", help="override train.device: auto, cpu, cuda or cuda:N")
    p.add_argument("--max-steps", type=int, metavar="N", help="override train.max_steps (stop after N steps in total)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    from cevit.config import replace
    from cevit.training.config import load_train_config
    from cevit.training.trainer import train

    config = load_train_config(args.config)
    changes = {}
    if args.device is not None:
        changes["device"] = args.device
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
    if changes:
        config = replace(config, train=replace(config.train, **changes))
    if args.output_dir is not None:
        config = replace(config, output_dir=args.output_dir)
    training_log = logging.getLogger("cevit.training")
    if training_log.getEffectiveLevel() > logging.INFO:
        training_log.setLevel(logging.INFO)  # epoch summaries on stderr (the root handler prints them)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    m = result.final_metrics
    status = "stopped early" if result.stopped_early else ("finished" if result.finished else "stopped at max_steps")
    print(f"training {status}: {result.epochs_completed} epoch(s), {result.global_step} step(s) on {result.device}")
    print(f"best val AUC   {_fmt(result.best_metric)} (epoch {result.best_epoch if result.best_epoch else '-'})")
    if m:
        print(f"latest val     AUC frame {_fmt(m.get('val_auc_frame'))}, group {_fmt(m.get('val_auc_group'))}, "
              f"loss {_fmt(m.get('val_loss'))}")  # fmt: skip
    print(f"best weights   {result.best_checkpoint or '-'}")
    print(f"last weights   {result.last_checkpoint or '-'}")
    print(f"resume state   {result.train_state}")
    print(f"log            {result.output_dir}/log.csv")
    return 0
