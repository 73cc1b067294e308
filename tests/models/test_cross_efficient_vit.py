from __future__ import annotations

import pytest
import torch

import cevit
from cevit.errors import ConfigError, ModelError
from cevit.models import create_model, list_presets
from cevit.models.cross_efficient_vit import CrossEfficientViT, CrossEfficientViTConfig

V1 = "cross_efficient_vit_v1"


@pytest.fixture(scope="module")
def v1() -> CrossEfficientViT:
    torch.manual_seed(0)
    return create_model(V1).eval()


@pytest.fixture(scope="module")
def orig() -> CrossEfficientViT:
    torch.manual_seed(0)
    return create_model("coccomini2022").eval()


def test_presets_listed_and_unknown_name_lists_valid_ones():
    assert list_presets()[0] == V1
    assert "coccomini2022" in list_presets()
    with pytest.raises(ModelError, match="valid: cross_efficient_vit_v1, cross_efficient_vit_v1_224, coccomini2022"):
        create_model("nope")


def test_public_api_is_lazy_and_complete():
    assert cevit.create_model is create_model
    assert callable(cevit.load_checkpoint) and callable(cevit.load_original_checkpoint)
    with pytest.raises(AttributeError):
        cevit.does_not_exist  # noqa: B018


def test_v1_parameter_count_and_token_grids(v1):
    n = sum(p.numel() for p in v1.parameters())
    assert 10_000_000 <= n <= 15_000_000
    assert n == 14_019_024  # documented in the README
    grids = v1.token_grids
    # sm: 380 -> 12x12 map, patch 4 -> 3x3 = 9 tokens (+CLS); lg: 95x95 map padded to 96, patch 16 -> 36 (+CLS)
    assert grids["sm"] == {
        "channels": 1280,
        "feature_grid": 12,
        "padded_grid": 12,
        "patch_size": 4,
        "patch_grid": 3,
        "tokens": 10,
    }
    assert grids["lg"] == {
        "channels": 24,
        "feature_grid": 95,
        "padded_grid": 96,
        "patch_size": 16,
        "patch_grid": 6,
        "tokens": 37,
    }


def test_lg_extractor_is_really_truncated(v1):
    lg = v1.lg_image_embedder.efficient_net
    assert len(lg._blocks) == 3 and not hasattr(lg, "_conv_head") and not hasattr(lg, "_fc")
    assert sum(p.numel() for p in lg.parameters()) < 25_000
    assert v1.sm_image_embedder.efficient_net.out_channels == 1280


def test_coccomini_parameter_count(orig):
    # authors' file: 101,377,610 parameters, of which the unused lg blocks 3-15/head and both _fc are dropped,
    # and the position embeddings are cut to the 2 rows used.
    n = sum(p.numel() for p in orig.parameters())
    assert n == 94_624_976
    assert orig.token_grids["sm"]["tokens"] == 2 and orig.token_grids["lg"]["tokens"] == 2


# Forward shapes, token counts and gradients of every architecture, at reduced and (slow) full size:
# tests/models/test_presets.py.


def test_wrong_input_size_is_a_clear_error(v1):
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 3, 380, 380\)"):
        v1(torch.randn(1, 3, 224, 224))


def test_overrides_and_unknown_keys():
    model = create_model(V1, image_size=224, depth=1)
    assert model.config.image_size == 224 and model.preprocessing.input_size == 224
    assert model.token_grids["sm"]["feature_grid"] == 7
    with pytest.raises(ConfigError, match="unknown key"):
        create_model(V1, not_a_field=3)
    with pytest.raises(ConfigError, match="sm_dim must be a positive integer"):
        CrossEfficientViTConfig(sm_dim=0)


def test_patch_padding_keeps_every_token():
    # 7x7 sm grid with patch 4 -> padded to 8 -> 2x2 tokens; nothing truncated
    model = create_model(V1, image_size=224, depth=1).eval()
    assert model.token_grids["sm"]["padded_grid"] == 8 and model.token_grids["sm"]["tokens"] == 5
    with torch.inference_mode():
        sm, lg = model.embed(torch.randn(1, 3, 224, 224))
    assert sm.shape == (1, 5, 64)
    # the bottom-right feature row/column influences the output (it would not if it were cut away)
    emb = model.sm_image_embedder
    feats = torch.zeros(1, 1280, 7, 7, requires_grad=True)
    padded = torch.nn.functional.pad(feats, (0, emb.pad, 0, emb.pad))
    emb.to_patch_embedding(padded).sum().backward()
    assert feats.grad[0, :, 6, 6].abs().sum() > 0
