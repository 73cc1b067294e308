"""Generic tests run on every registered architecture (``cevit.list_presets()``), after timm's test_models.py.

Each architecture is built at a reduced size (small image, narrow and shallow transformer; the preset's patch
sizes, channel order and B0 extractors stay) and checked for: forward / ``forward_features`` / ``forward_head``
shapes, the token counts of both branches, a backward pass reaching every parameter, deterministic eval mode
and a safetensors save → load round trip. A newly registered architecture is tested without adding a line here.
The same checks at full size are marked ``slow`` (``python -m pytest -m "not slow"`` skips them); the token
counts at the full image size only need the model built (with narrow transformers), so they stay in the fast loop.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import cevit
from cevit.models.cross_efficient_vit import CrossEfficientViT

ARCHITECTURES = cevit.list_presets()

#: Reduced size: 96 px input (sm feature map 3x3, lg 24x24), one layer of everything, 2 heads of 16.
SMALL = dict(
    image_size=96, sm_dim=32, lg_dim=32, depth=1, sm_enc_depth=1, lg_enc_depth=1, cross_attn_depth=1,
    sm_enc_heads=2, lg_enc_heads=2, cross_attn_heads=2, sm_enc_dim_head=16, lg_enc_dim_head=16,
    cross_attn_dim_head=16, sm_enc_mlp_dim=32, lg_enc_mlp_dim=32,
)  # fmt: skip
#: No dropout or drop-connect: every parameter must get a non-zero gradient from one batch.
NO_DROPOUT = dict(dropout=0.0, emb_dropout=0.0, drop_connect_rate=0.0)

SIZES = [pytest.param("small", id="small"), pytest.param("full", id="full", marks=pytest.mark.slow)]


def build(name: str, size: str = "small", *, seed: int = 0, **extra: object) -> CrossEfficientViT:
    torch.manual_seed(seed)
    overrides = {**(SMALL if size == "small" else {}), **extra}
    return cevit.create_model(name, **overrides)


def expected_tokens(model: CrossEfficientViT) -> tuple[int, int]:
    """Tokens (CLS + patches) of the sm and lg branches, from the config alone.

    B0's TF-style "same" padding gives feature grids of ceil(S / 32) (sm: the full trunk) and ceil(S / 4) (lg:
    stem + blocks 0-2); a grid that the patch size does not divide is padded up, so no feature is dropped.
    """
    cfg = model.config
    sm_grid, lg_grid = math.ceil(cfg.image_size / 32), math.ceil(cfg.image_size / 4)
    return math.ceil(sm_grid / cfg.sm_patch_size) ** 2 + 1, math.ceil(lg_grid / cfg.lg_patch_size) ** 2 + 1


def sample_input(model: CrossEfficientViT, batch: int = 2, *, seed: int = 1) -> torch.Tensor:
    """Random input on the scale of the model's preprocessing contract (0-1 normalised or raw 0-255)."""
    s = model.config.image_size
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, s, s, generator=g)
    spec = model.preprocessing
    if spec.value_scale != 1.0 and spec.mean is not None:  # normalised contract: roughly zero-mean, unit-variance
        return (x - 0.5) / 0.25
    return x * (255.0 / spec.value_scale)


def test_every_registered_architecture_is_listed_once() -> None:
    assert ARCHITECTURES and len(set(ARCHITECTURES)) == len(ARCHITECTURES)
    assert cevit.DEFAULT_PRESET in ARCHITECTURES


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_token_counts_at_full_image_size(name: str) -> None:
    """Token grids and position embeddings at the preset's image size match the config (no forward pass).

    Token counts depend on the image and patch sizes only, so the transformer is kept narrow to build fast.
    """
    model = build(name, "full", **{k: v for k, v in SMALL.items() if k != "image_size"})
    assert model.config.image_size == cevit.get_preset(name).config.image_size
    sm, lg = expected_tokens(model)
    grids = model.token_grids
    assert (grids["sm"]["tokens"], grids["lg"]["tokens"]) == (sm, lg)
    assert model.sm_image_embedder.pos_embedding.shape == (1, sm, model.config.sm_dim)
    assert model.lg_image_embedder.pos_embedding.shape == (1, lg, model.config.lg_dim)
    assert model.preprocessing.input_size == model.config.image_size


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_forward_shapes_and_token_counts(name: str, size: str) -> None:
    model = build(name, size).eval()
    cfg = model.config
    batch = 2
    x = sample_input(model, batch)
    with torch.inference_mode():
        sm_tokens, lg_tokens = model.embed(x)
        features = model.forward_features(x)
        head = model.forward_head(features)
        logits = model(x)
        proba = model.predict_proba(x)
    sm, lg = expected_tokens(model)
    assert sm_tokens.shape == (batch, sm, cfg.sm_dim) and lg_tokens.shape == (batch, lg, cfg.lg_dim)
    assert features[0].shape == (batch, cfg.sm_dim) and features[1].shape == (batch, cfg.lg_dim)
    assert logits.shape == (batch, 1) and torch.isfinite(logits).all()
    torch.testing.assert_close(head, logits, rtol=0, atol=0)
    assert proba.shape == (batch,) and ((proba >= 0) & (proba <= 1)).all()
    torch.testing.assert_close(proba, torch.sigmoid(logits).squeeze(1))
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.zeros(1, 3, cfg.image_size + 32, cfg.image_size + 32))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_backward_reaches_every_parameter(name: str, size: str) -> None:
    model = build(name, size, **NO_DROPOUT).train()
    x = sample_input(model, 2)
    model(x).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert dead == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_same_seed_same_model_and_eval_is_deterministic(name: str) -> None:
    a, b = build(name, seed=3).eval(), build(name, seed=3).eval()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = sample_input(a, 3)
    with torch.inference_mode():
        first, second, other = a(x), a(x), b(x)
    assert torch.equal(first, second) and torch.equal(first, other)
    # and batching does not change an item's result (eval mode: no batch statistics, no dropout)
    with torch.inference_mode():
        alone = a(x[1:2])
    torch.testing.assert_close(alone, first[1:2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_no_weight_decay_names_real_parameters(name: str) -> None:
    model = build(name)
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names and names <= params.keys()
    assert {n.rsplit(".", 1)[1] for n in names} == {"pos_embedding", "cls_token"}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_safetensors_round_trip(name: str, size: str, tmp_path: Path) -> None:
    model = build(name, size).eval()
    path = tmp_path / f"{name}.safetensors"
    sha = cevit.save_checkpoint(model, path, note="test_presets round trip")
    loaded = cevit.load_checkpoint(path)
    assert isinstance(loaded, CrossEfficientViT) and not loaded.training
    assert loaded.config == model.config and loaded.preprocessing == model.preprocessing
    assert (
        loaded.checkpoint_info.sha256 == sha and loaded.checkpoint_info.provenance["note"] == "test_presets round trip"
    )
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    x = sample_input(model, 1)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
