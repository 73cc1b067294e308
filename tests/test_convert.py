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
    full = create_model("cross_efficient_vit_v1", image_size=model.config.image_size, depth=1)
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


@pytest.mark.slow  # the full-size authors' model (95 M parameters): 30-40 s on 2 cores
def test_full_released_key_list_strict_loads(shared_file, tmp_path):
    """Tensors synthesised with every key and shape of the authors' released file load strictly."""
    lines = shared_file("reference/original_state_dict_keys.txt").read_text().splitlines()
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


def test_reference_fixture_exactness(shared_file):
    """The authors' model at a reduced config: our converter + model reproduce tokens and logits within 1e-4."""
    sd_path = shared_file("reference/reference_small_state_dict.safetensors")
    io_path = shared_file("reference/reference_small_io.safetensors")
    with safe_open(str(sd_path), "pt") as fh:
        original_config = json.loads(fh.metadata()["config"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(sd_path)).items()}
    model = CrossEfficientViT(config=config_from_original(original_config))
    convert_original_state_dict(state, model, source=str(sd_path))
    model.eval()
    io = load_file(str(io_path))
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


def test_foreign_files_are_checkpoint_errors_without_torch_advice(tmp_path):
    """Whatever the bytes, loading fails with a CheckpointError naming the file, and torch's advice to load with
    weights_only=False (switching the safety off) never reaches the user."""
    import io
    import pickle
    import zipfile

    rng = torch.Generator().manual_seed(0)
    good = tmp_path / "good.pth"
    torch.save({"a": torch.zeros(2)}, good)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a", "b")
    cases = {
        "text.pth": b"hello, I am not a checkpoint\n",  # torch: KeyError
        "random.bin": bytes(torch.randint(0, 256, (4096,), generator=rng, dtype=torch.uint8).tolist()),
        "zip.pth": zipped.getvalue(),
        "truncated.pth": good.read_bytes()[:300],
        "list.pth": pickle.dumps([1, 2], protocol=2),
        "int_keys.pth": None,  # written below with torch.save
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is None:
            torch.save({1: torch.zeros(1)}, path)
        else:
            path.write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_original_checkpoint(path)
        message = str(info.value)
        assert str(path) in message, name
        assert "weights_only" not in message and "False" not in message, (name, message)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty checkpoint file"):
        load_original_checkpoint(empty)
