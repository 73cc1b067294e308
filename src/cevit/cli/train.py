"""``cevit train --config FILE.yaml``: train a Cross Efficient ViT (see :mod:`cevit.training.trainer`).

Data-parallel on several processes: ``cevit train --nproc N --config ...`` runs
``torchrun --standalone --nproc-per-node N -m cevit.cli.main train --config ...`` (one machine), or start that
``torchrun`` command yourself (several machines: ``--nnodes``, ``--rdzv-endpoint``). Under torchrun each process
reads its rank from the environment; rank 0 alone prints, logs and writes the outputs.
"""

from __future__ import annotations

import argparse
import logging
import sys


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
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel processes on this machine, started with torchrun (default 1); one per GPU "
                   "on CUDA (NCCL), CPU processes with gloo otherwise; train.batch_size stays the global batch")  # fmt: skip
    p.set_defaults(func=run)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The ``train`` command line each torchrun worker runs: these arguments without ``--nproc``."""
    argv = ["train", "--config", str(args.config)]
    for flag, value in (("--output-dir", args.output_dir), ("--device", args.device), ("--max-steps", args.max_steps)):
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--resume", args.resume), ("--no-progress", args.no_progress),
                                   ("--debug", getattr(args, "debug", False))) if on]  # fmt: skip
    return argv


def _torchrun(args: argparse.Namespace) -> int:
    """Run this command under ``torchrun --standalone`` with ``--nproc`` processes on this machine."""
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(["--standalone", f"--nproc-per-node={args.nproc}", "-m", "cevit.cli.main", *_worker_argv(args)])
    except Exception as exc:  # noqa: BLE001 - torchrun's ChildFailedError names each failed rank and its error
        print(f"cevit: error: distributed training failed: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from cevit.config import replace
    from cevit.errors import ConfigError
    from cevit.training.config import load_train_config
    from cevit.training.distributed import DistributedContext
    from cevit.training.trainer import train

    context = DistributedContext.from_env()
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc > 1 and not context.enabled:
        return _torchrun(args)
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
    if not context.is_main:
        training_log.setLevel(logging.WARNING)  # rank 0 reports for the run
    elif training_log.getEffectiveLevel() > logging.INFO:
        training_log.setLevel(logging.INFO)  # epoch summaries on stderr (the root handler prints them)
    try:
        result = train(config, resume=args.resume, progress=not args.no_progress, distributed=context)
    finally:
        context.shutdown()
    if not context.is_main:
        return 0
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
