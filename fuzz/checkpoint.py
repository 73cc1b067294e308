"""cevit checkpoints: the safetensors header and cevit's metadata (:func:`cevit.checkpoint.read_checkpoint_info`),
then :func:`cevit.checkpoint.load_checkpoint` for files whose metadata passes (builds the described model when it
is small, and loads the tensors strictly)."""

from __future__ import annotations

from pathlib import Path

from fuzz import seeds
from fuzz.common import scratch_file

INSTRUMENT = ("cevit.checkpoint", "cevit.config", "cevit.models.pretrained", "cevit.inference.aggregation")


def seed(folder: Path) -> None:
    seeds.write_safetensors(folder)


def load() -> None:
    global CevitError, load_checkpoint, read_checkpoint_info
    from cevit.checkpoint import load_checkpoint, read_checkpoint_info
    from cevit.errors import CevitError


def one_input(data: bytes) -> None:
    path = scratch_file(data, "input.safetensors")
    try:
        info = read_checkpoint_info(path)
    except CevitError:
        return
    assert info.config is not None
    try:
        load_checkpoint(path)
    except CevitError:
        return
