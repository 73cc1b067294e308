from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cevit.checkpoint import load_checkpoint
from cevit.convert import (
    config_from_original,
    convert_original_file,
    convert_original_state_dict,
    load_original_checkpoint,
)
from cevit.errors import CheckpointError, ConfigError
from cevit.models import create_model
from cevit.models.cross_efficient_vit import CrossEfficientViT

_SHAPE = re.compile(r"^(\S+) \((.*)\)$")


def _authors_like_state(model: CrossEfficientViT, *, pos_rows=(60, 40)) -> dict[str, torch.Tensor]:
    """Our state dict plus what the authors' file has on top: _fc layers, full lg B0, oversized pos embeddings."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    full = create_model("CROSS-EFFICIENT-VIT-V1", image_size=model.config.image_size, depth=1)
    for k, v in full.sm_image_embedder.efficient_net.state_dict().items():
        key = f"lg_image_embedder.efficient_net.{k}"
        state.setdefault(key, torch.randn(v.shape) if v.is_floating_point() else v.clone())
    for branch in ("sm", "lg"):
        state[f"{branch}_image_embedder.efficient_net._fc.weight"] = torch.randn(1000, 1280)
        state[f"{branch}_image_embedder.efficient_net._fc.bias"] = torch.randn(1000)
    for branch, rows in zip(("sm", "lg"), pos_rows):
        pos = state[f"{branch}_image_embedder.pos_embedding"]
        big = torch.randn(1, rows, pos.shape[2])
        big[:, : pos.shape[1]] = pos
        state[f"{branch}_image_embedder.pos_embedding"] = big
    return state


def test_convert_drops_unused_and_cuts_position_embeddings():
    torch.manual_seed(0)
    src = create_model("coccomini2022", image_size=64, depth=1, sm_dim=16, lg_dim=24).eval()
    state = _authors_like_state(src)
    assert any(".efficient_net._blocks.15." in k and k.startswith("lg_") for k in state)
    dst = CrossEfficientViT(config=src.config)
    converted = convert_original_state_dict(state, dst)
    assert not any("_fc." in k for k in converted)
    assert converted["sm_image_embedder.pos_embedding"].shape[1] == src.sm_image_embedder.num_patches + 1
    dst.eval()
    x = torch.randn(2, 3, 64, 64) * 255
    with torch.inference_mode():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_convert_names_missing_keys():
    src = create_model("coccomini2022", image_size=64, depth=1, sm_dim=16, lg_dim=24)
    state = _authors_like_state(src)
    del state["multi_scale_encoder.layers.0.2.layers.0.0.project_in.weight"]
    state["module.sm_mlp_head.0.weight"] = state.pop("sm_mlp_head.0.weight")  # DataParallel prefix is fine
    with pytest.raises(CheckpointError, match=r"my\.pth: .*missing key\(s\): multi_scale_encoder\.layers\.0\.2"):
        convert_original_state_dict(state, CrossEfficientViT(config=src.config), source="my.pth")


def test_full_released_key_list_strict_loads(shared_dir, tmp_path):
    """Tensors synthesised with every key and shape of the authors' released file load strictly."""
    lines = (shared_dir / "reference" / "original_state_dict_keys.txt").read_text().splitlines()
    state = {}
    for line in lines:
        key, shape = _SHAPE.match(line.strip()).groups()
        dims = tuple(int(d) for d in shape.replace(",", " ").split())
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(dims, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.ones(dims)
        else:
            state[key] = torch.randn(dims) * 0.01
    assert len(state) == 1152
    buffers = ("num_batches_tracked", "running_mean", "running_var")
    assert sum(v.numel() for k, v in state.items() if not k.endswith(buffers)) == 101_377_610
    path = tmp_path / "cross_efficient_vit.pth"
    torch.save(state, path)
    del state
    model = load_original_checkpoint(path)
    assert model.preset_name == "coccomini2022" and not model.training
    assert model.checkpoint_info.sha256 and len(model.checkpoint_info.sha256) == 64
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 224, 224) * 255)
    assert out.shape == (1, 1) and torch.isfinite(out).all()
    # and the CLI-facing file conversion round-trips into our format
    dst = tmp_path / "converted.safetensors"
    convert_original_file(path, dst)
    again = load_checkpoint(dst)
    assert again.preprocessing.channel_order == "BGR" and again.preprocessing.value_scale == 1.0
    x = torch.rand(1, 3, 224, 224) * 255
    with torch.inference_mode():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_reference_fixture_exactness(shared_dir):
    """The authors' model at a reduced config: our converter + model reproduce tokens and logits within 1e-4."""
    ref = shared_dir / "reference"
    sd_path = ref / "reference_small_state_dict.safetensors"
    with safe_open(str(sd_path), "pt") as fh:
        original_config = json.loads(fh.metadata()["config"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(sd_path)).items()}
    model = CrossEfficientViT(config=config_from_original(original_config))
    convert_original_state_dict(state, model, source=str(sd_path))
    model.eval()
    io = load_file(str(ref / "reference_small_io.safetensors"))
    with torch.inference_mode():
        sm, lg = model.embed(io["input"])
        logits = model(io["input"])
    assert (sm - io["sm_tokens"]).abs().max().item() < 1e-4
    assert (lg - io["lg_tokens"]).abs().max().item() < 1e-4
    assert (logits - io["logits"]).abs().max().item() < 1e-4


def test_config_from_original_rejects_unknown_and_unsupported():
    with pytest.raises(ConfigError, match="unknown key 'whatever'"):
        config_from_original({"whatever": 1})
    with pytest.raises(ConfigError, match="num-classes"):
        config_from_original({"num-classes": 2})
    cfg = config_from_original({"sm-dim": 32, "depth": 2})
    assert cfg.sm_dim == 32 and cfg.depth == 2 and cfg.image_size == 224
