"""Data-parallel training: RankBatchSampler and the environment (fast), and 2 gloo CPU processes launched with
``cevit train --nproc 2`` (torchrun) against one process with the same global batch (slow)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from synthetic_faces import write_face_index

from cevit.config import from_dict, to_dict
from cevit.errors import ConfigError
from cevit.training.config import TrainConfig
from cevit.training.data import EpochBatchSampler
from cevit.training.distributed import DistributedContext, RankBatchSampler
from cevit.training.trainer import train

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = dict(image_size=64, depth=1, sm_enc_depth=1, lg_enc_depth=1, cross_attn_depth=1, sm_enc_heads=2,
            lg_enc_heads=2, cross_attn_heads=2, sm_enc_dim_head=16, lg_enc_dim_head=16, cross_attn_dim_head=16,
            sm_enc_mlp_dim=32, lg_enc_mlp_dim=32, sm_dim=32, lg_dim=32,
            dropout=0.0, emb_dropout=0.0, drop_connect_rate=0.0)  # fmt: skip


def test_rank_batch_sampler_splits_every_global_batch_between_ranks():
    base = EpochBatchSampler(12, 4, seed=3, epoch=1, steps=3, start_step=1)
    shares = [list(RankBatchSampler(base, rank=r, world_size=2)) for r in range(2)]
    assert len(RankBatchSampler(base, rank=0, world_size=2)) == 2
    for batch, a, b in zip(base, *shares):
        assert len(a) == len(b) == 2 and sorted(a + b) == sorted(batch)
    with pytest.raises(ConfigError, match="split equally"):
        list(RankBatchSampler(base, rank=0, world_size=3))


def test_context_from_torchrun_environment():
    assert not DistributedContext.from_env({}).enabled
    ctx = DistributedContext.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert ctx.enabled and not ctx.is_main and ctx.device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError):
        DistributedContext.from_env({"RANK": "2", "WORLD_SIZE": "2"})


def _index(folder: Path, groups: int = 9) -> Path:
    """``groups`` x (2 real + 2 fake) crops; group 0 is validation."""
    return write_face_index(folder, groups)


def _config(index: Path, out: Path, **train_kw) -> TrainConfig:
    return from_dict(TrainConfig, {
        "model": {"overrides": TINY},
        "data": {"indexes": [str(index)], "mode": "labelled", "val_fraction": 0.0, "num_workers": 0},
        "augment": {"ssr_prob": 0.5, "jpeg_prob": 0.5, "noise_prob": 0.5, "color_jitter_prob": 0.5},
        "schedule": {"name": "cosine", "warmup_epochs": 0.5},
        "train": {"epochs": 2, "batch_size": 8, "log_every_steps": 1, "seed": 0, "device": "cpu", **train_kw},
        "output_dir": str(out),
    })  # fmt: skip


def _losses(out: Path) -> dict[int, float]:
    with open(out / "log.csv", newline="") as fh:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(fh) if not r["val_loss"]}


def _run_2_processes(config: TrainConfig, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"config-{Path(config.output_dir).name}.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "cevit.cli.main", "train", "--config", str(path), "--nproc", "2", "--no-progress",
           *extra]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_gloo_processes_follow_the_single_process_loss_curve_and_resume_exactly(tmp_path):
    index = _index(tmp_path / "faces")
    torch.set_num_threads(1)
    single = train(_config(index, tmp_path / "one"), progress=False)
    ran = _run_2_processes(_config(index, tmp_path / "two"), tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "training finished" in ran.stdout and ran.stdout.count("training finished") == 1  # rank 0 reports
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, single.global_step + 1))
    diffs = [abs(one[s] - two[s]) for s in one]
    print("step losses, 1 process:", [round(one[s], 4) for s in sorted(one)])
    print("step losses, 2 processes:", [round(two[s], 4) for s in sorted(two)])
    assert one[1] == pytest.approx(two[1], rel=0.05, abs=0.02)  # same weights, same global batch
    assert max(diffs) < 0.05, diffs  # measured: < 0.01 (BatchNorm sees 4 of the 8 items per rank)
    # exact resume with 2 processes: stop after 3 steps, resume, same weights as the uninterrupted 2-process run
    stopped = _run_2_processes(_config(index, tmp_path / "resumed"), tmp_path, "--max-steps", "3")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    resumed = _run_2_processes(_config(index, tmp_path / "resumed"), tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "two" / "train_state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nproc_below_one_is_a_usage_error(tmp_path, capsys):
    from cevit.cli.main import main

    assert main(["train", "--config", str(tmp_path / "none.yaml"), "--nproc", "0"]) == 2
    assert "--nproc must be >= 1" in capsys.readouterr().err
