"""Heat maps (cevit.explain.maps): shape, range, where they peak, and that the model is untouched by them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cevit.errors import ConfigError
from cevit.explain.maps import (
    METHODS,
    _attention_modules,
    _tokens_to_pixels,
    attention_rollout,
    check_method,
    face_heatmaps,
    grad_cam,
    normalise,
    rollout_relevance,
)
from cevit.models import create_model


def _needs_captum(method: str) -> None:
    if method == "gradcam":
        pytest.importorskip("captum", reason="the 'explain' extra (captum) is not installed")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_model("cross_efficient_vit_v1", image_size=96, depth=1).eval()


@pytest.mark.parametrize("method", METHODS)
def test_maps_have_the_crop_shape_are_finite_and_normalised(tiny_model, method):
    _needs_captum(method)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    maps = face_heatmaps(tiny_model, crops, preprocessing=tiny_model.preprocessing, method=method, batch_size=2)
    assert len(maps) == 3
    for m in maps:
        assert m.shape == (96, 96) and m.dtype == np.float32
        assert np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0
        # min-max scaled; Grad-CAM of random weights may find no positive evidence at all: then all zeros
        assert m.min() == 0.0 and (m.max() == pytest.approx(1.0) or (method == "gradcam" and m.max() == 0.0))
    if method == "attention":
        assert not np.allclose(maps[0], maps[1])  # a map depends on its face


def test_explaining_leaves_the_model_as_it_was(tiny_model):
    x = torch.randn(2, 3, 96, 96)
    keys = list(tiny_model.state_dict())
    with torch.inference_mode():
        before = tiny_model(x)
    attention_rollout(tiny_model, x)
    with torch.inference_mode():
        after = tiny_model(x)
    assert torch.equal(before, after) and list(tiny_model.state_dict()) == keys
    assert all(not m.keep_attention and "attention" not in m.__dict__ for _, m in _attention_modules(tiny_model))
    assert all(p.grad is None for p in tiny_model.parameters())


def test_kept_attention_gives_the_same_output(tiny_model):
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        fused = tiny_model(x)
        for _, m in _attention_modules(tiny_model):
            m.keep_attention = True
        try:
            explicit = tiny_model(x)
        finally:
            for _, m in _attention_modules(tiny_model):
                m.keep_attention = False
                m.__dict__.pop("attention", None)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)


class _BrightSpot(nn.Module):
    """Logit = mean(relu(x - 0.5)) - mean(relu(0.3 - x)) over two 'feature' channels at full resolution: only
    bright pixels raise it. Grad-CAM at ``body`` must then light up the bright pixels and nothing else."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([[1 / 3] * 3, [-1 / 3] * 3]).view(2, 3, 1, 1))
            conv.bias.copy_(torch.tensor([-0.5, 0.3]))
        self.body = nn.Sequential(conv, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.body(x)
        return (a[:, 0].mean((1, 2)) - a[:, 1].mean((1, 2)))[:, None]


def test_grad_cam_peaks_where_the_only_differing_region_is():
    _needs_captum("gradcam")
    x = torch.full((1, 3, 40, 40), 0.4)
    x[:, :, 5:12, 26:35] = 0.9  # the one region that differs: top right (a transposed map would be bottom left)
    net = _BrightSpot()
    cam = grad_cam(net, net.body, x, size=(40, 40))[0]
    y, xx = np.unravel_index(int(np.argmax(cam)), cam.shape)
    assert 5 <= y < 12 and 26 <= xx < 35
    inside = np.zeros((40, 40), bool)
    inside[5:12, 26:35] = True
    assert cam[inside].min() > 0.9 and cam[~inside].max() < 0.1


def test_rollout_follows_cross_attention_to_the_other_branch():
    """sm CLS attends (cross step) only to lg patch 6: the relevance must land on that token, and the token's
    pixels (row 1, column 2 of a 4x4 grid) must be where the pixel map peaks."""
    n_sm, n_lg = 4, 16
    eye = lambda n: torch.eye(n)[None]  # noqa: E731 - attention to self only: no mixing
    cross_sm = torch.zeros(1, 1, 1 + n_lg)
    cross_sm[0, 0, 1 + 6] = 1.0
    steps = [
        ("sm", eye(1 + n_sm)),
        ("lg", eye(1 + n_lg)),
        ("sm_cls", cross_sm),
        ("lg_cls", torch.zeros(1, 1, 1 + n_sm)),
    ]
    rel = rollout_relevance(steps, n_sm=n_sm, n_lg=n_lg)[0]
    lg_rel = rel[2 + n_sm :]
    assert int(torch.argmax(lg_rel)) == 6 and float(lg_rel[6]) > 0
    assert torch.all(rel[1 : 1 + n_sm] == 0)  # no sm patch was attended to

    class Emb:  # 4x4 patch grid over a 56-cell feature grid padded to 64, image 224 px (the 224 px preset's lg)
        patch_grid, grid_padded = 4, 64

        class efficient_net:  # noqa: N801
            out_grid = 56

    pix = _tokens_to_pixels(lg_rel[None].float(), Emb, 224)[0].numpy()
    y, x = np.unravel_index(int(np.argmax(pix)), pix.shape)
    assert 64 <= y < 128 and 128 <= x < 192  # token 6 = row 1, column 2; each token covers 64 px


def test_normalise_and_methods():
    maps = normalise(np.array([[[1.0, np.nan], [3.0, np.inf]], [[2.0, 2.0], [2.0, 2.0]]]))
    assert np.isfinite(maps).all()
    np.testing.assert_allclose(maps[0], [[1 / 3, 0.0], [1.0, 0.0]], atol=1e-6)
    assert (maps[1] == 0).all()  # a flat map has no evidence anywhere
    assert check_method(True) in METHODS and check_method("attention") == "attention"
    with pytest.raises(ConfigError, match="unknown explanation method"):
        check_method("lime")
