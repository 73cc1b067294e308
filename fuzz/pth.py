"""The authors' ``.pth`` path: :func:`cevit.convert.read_original_state_dict` (``torch.load(weights_only=True)`` of
any bytes: zip archives, legacy pickles), then the key/shape conversion onto a model built once."""

from __future__ import annotations

from pathlib import Path

from fuzz import seeds
from fuzz.common import scratch_file

INSTRUMENT = ("cevit.convert",)
#: with ``--deep``: torch's unpickler (Python) too; much better guidance, but instrumenting it costs about a minute
INSTRUMENT_DEEP = ("torch.serialization", "torch._weights_only_unpickler")


def seed(folder: Path) -> None:
    seeds.write_pth(folder)


def load() -> None:
    global CevitError, MODEL, convert_original_state_dict, read_original_state_dict
    from cevit.convert import convert_original_state_dict, read_original_state_dict
    from cevit.errors import CevitError
    from cevit.models import create_model

    MODEL = create_model("coccomini2022", depth=1)


def one_input(data: bytes) -> None:
    path = scratch_file(data, "input.pth")
    try:
        state = read_original_state_dict(path)
        convert_original_state_dict(state, MODEL, source=str(path))
    except CevitError:
        return
