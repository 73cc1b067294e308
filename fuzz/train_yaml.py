"""Training YAML configs: :func:`cevit.training.config.load_train_config` (YAML, then typed, validated sections)."""

from __future__ import annotations

from pathlib import Path

from fuzz import seeds
from fuzz.common import scratch_file

INSTRUMENT = ("cevit.config", "cevit.training.config")
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def seed(folder: Path) -> None:
    seeds.write_configs(folder, REPO_CONFIGS)


def load() -> None:
    global CevitError, load_train_config
    from cevit.errors import CevitError
    from cevit.training.config import load_train_config


def one_input(data: bytes) -> None:
    try:
        load_train_config(scratch_file(data, "train.yaml"))
    except CevitError:
        return
