"""Convert the three MTCNN state dicts (P-Net, R-Net, O-Net) into the single safetensors file cevit ships.

The source folder holds ``pnet.pt``, ``rnet.pt`` and ``onet.pt``: plain PyTorch state dicts as released in
the facenet-pytorch 2.5.3 wheel (MIT licence), which descend from the original MTCNN release by Zhang et
al. (2016). They are read with ``torch.load(..., weights_only=True)`` (no pickled code is executed) and
written as float32 tensors with the keys prefixed ``pnet.``, ``rnet.`` and ``onet.`` to
``src/cevit/faces/data/mtcnn.safetensors``, the file :class:`cevit.faces.MTCNN` loads.

Usage::

    python tools/convert_mtcnn_weights.py [SOURCE_DIR] [--output PATH]

``SOURCE_DIR`` defaults to ``$CEVIT_SHARED/reference/mtcnn_weights`` (``CEVIT_SHARED`` defaults to the
folder ``shared`` next to the project root).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

logger = logging.getLogger("convert_mtcnn_weights")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NETS = ("pnet", "rnet", "onet")


def default_source() -> Path:
    """``$CEVIT_SHARED/reference/mtcnn_weights`` (``CEVIT_SHARED`` defaults to ``<project>/../shared``)."""
    shared = os.environ.get("CEVIT_SHARED") or str(PROJECT_ROOT.parent / "shared")
    return Path(shared) / "reference" / "mtcnn_weights"


def default_output() -> Path:
    return PROJECT_ROOT / "src" / "cevit" / "faces" / "data" / "mtcnn.safetensors"


def convert(source: Path, output: Path) -> dict[str, torch.Tensor]:
    """Read the three ``.pt`` files in ``source`` and write the merged safetensors file to ``output``."""
    tensors: dict[str, torch.Tensor] = {}
    metadata = {
        "format": "pt",
        "model": "MTCNN (P-Net, R-Net, O-Net), Zhang et al. 2016",
        "source": "facenet-pytorch 2.5.3 wheel (MIT licence): facenet_pytorch/data/{pnet,rnet,onet}.pt; "
        "weights descend from the original MTCNN release by Zhang et al. 2016",
        "converted_by": "tools/convert_mtcnn_weights.py",
    }
    for net in NETS:
        path = source / f"{net}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MTCNN source weights not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{path}: entry {key!r} is not a tensor")
            tensors[f"{net}.{key}"] = value.detach().to(torch.float32).contiguous()
        metadata[f"sha256_{net}_pt"] = hashlib.sha256(path.read_bytes()).hexdigest()
        logger.info("%s: %d tensors", path, len(state))
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(output), metadata=metadata)
    logger.info("wrote %s (%d tensors)", output, len(tensors))
    return tensors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=None, help="folder with pnet.pt, rnet.pt, onet.pt")
    parser.add_argument("--output", type=Path, default=None, help="safetensors file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    source = args.source if args.source is not None else default_source()
    output = args.output if args.output is not None else default_output()
    try:
        convert(source, output)
    except (OSError, ValueError, RuntimeError) as exc:
        logger.error("conversion failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
