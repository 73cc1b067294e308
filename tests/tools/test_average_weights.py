"""tools/average_weights.py: WiSE-FT interpolation of two checkpoints."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from cevit.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from cevit.models import create_model

TOOL = Path(__file__).resolve().parents[2] / "tools" / "average_weights.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("average_weights", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    a = create_model("cross_efficient_vit_v1", image_size=64, depth=1)
    torch.manual_seed(1)
    b = create_model("cross_efficient_vit_v1", image_size=64, depth=1)
    save_checkpoint(a, tmp_path / "a.safetensors")
    save_checkpoint(b, tmp_path / "b.safetensors")
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


def test_interpolation_end_points_and_middle(tmp_path):
    a, b = _pair(tmp_path)
    tool = load_tool()
    sa, sb = load_checkpoint(a).state_dict(), load_checkpoint(b).state_dict()
    for alpha in (0.0, 0.5, 1.0):
        out = tmp_path / f"m{alpha}.safetensors"
        assert tool.main([str(a), str(b), "--alpha", str(alpha), "-o", str(out)]) == 0
        sm = load_checkpoint(out).state_dict()
        for key, va in sa.items():
            if va.is_floating_point():
                assert torch.allclose(sm[key], (1 - alpha) * va + alpha * sb[key], atol=1e-6), key
            else:
                assert torch.equal(sm[key], va), key
    info = read_checkpoint_info(tmp_path / "m0.5.safetensors")
    assert info.provenance["recipe"]["alpha"] == 0.5
    assert info.provenance["data"]["finetuned"]["sha256"]


def test_different_architectures_are_refused(tmp_path, capsys):
    a, _ = _pair(tmp_path)
    other = create_model("cross_efficient_vit_v1", image_size=96, depth=1)
    save_checkpoint(other, tmp_path / "c.safetensors")
    assert load_tool().main([str(a), str(tmp_path / "c.safetensors"), "-o", str(tmp_path / "x.safetensors")]) == 1
    assert "differ in architecture" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(SystemExit):
        load_tool().main([str(a), str(a), "--alpha", "2", "-o", str(tmp_path / "x.safetensors")])
