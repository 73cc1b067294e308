from __future__ import annotations

import pytest
import torch

from cevit.models import DEFAULT_PRESET, create_model, list_presets
from cevit.models.optimize import InferenceModel, optimize_for_inference


def _perturbed(preset: str, **overrides):
    torch.manual_seed(0)
    model = create_model(preset, **overrides).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics so folding is really exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


#: Reduced size for the fast loop (the folding and channels-last paths are the same at any size).
SMALL = dict(image_size=96, depth=1, sm_dim=32, lg_dim=32, sm_enc_depth=1, lg_enc_depth=1, cross_attn_depth=1)


@pytest.mark.parametrize("size", ["small", pytest.param("full", marks=pytest.mark.slow)])
@pytest.mark.parametrize("preset", list_presets())
@pytest.mark.parametrize("channels_last", [True, False])
def test_optimised_model_is_numerically_equivalent(preset, channels_last, size):
    model = _perturbed(preset, **(SMALL if size == "small" else {}))
    fast = optimize_for_inference(model, channels_last=channels_last, cpu_micro_batch=2)
    assert isinstance(fast, InferenceModel)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    s = model.config.image_size
    x = torch.randn(3, 3, s, s) * (255 if model.preprocessing.value_scale == 1.0 else 1)  # raw 0-255 contract
    with torch.inference_mode():
        ref = model(x)
        out = fast(x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-4
    # the original is untouched (optimisation works on a copy)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_micro_batching_matches_one_batch():
    model = _perturbed(DEFAULT_PRESET, image_size=96, depth=1)
    x = torch.randn(5, 3, 96, 96)
    with torch.inference_mode():
        whole = optimize_for_inference(model, cpu_micro_batch=0)(x)
        parts = optimize_for_inference(model, cpu_micro_batch=2)(x)
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-5)


def test_inplace_optimises_the_given_model_itself():
    model = _perturbed(DEFAULT_PRESET, **SMALL)
    s = model.config.image_size
    x = torch.randn(2, 3, s, s) * 255
    with torch.inference_mode():
        ref = model(x)
    fast = optimize_for_inference(model, inplace=True)
    assert fast.model is model  # no copy: the caller's model was changed
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    again = optimize_for_inference(model, inplace=True)  # already folded: nothing is folded twice
    with torch.inference_mode():
        assert (fast(x) - ref).abs().max().item() <= 1e-4
        assert (again(x) - ref).abs().max().item() <= 1e-4
