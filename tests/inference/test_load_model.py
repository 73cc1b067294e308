"""load_model: registered weights, the inference config a checkpoint carries, overrides, deprecated names."""

from __future__ import annotations

import pytest
import torch

from cevit.checkpoint import save_checkpoint
from cevit.errors import ModelError
from cevit.inference.pipeline import bundled_weights_path, load_model
from cevit.models.pretrained import DEFAULT_WEIGHTS, DetectorSettings, InferenceConfig
from cevit.models.registry import create_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return create_model("cross_efficient_vit_v1", image_size=64, depth=1).eval()


def test_checkpoint_inference_config_is_applied_and_overridable(tiny, tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    authors_like = InferenceConfig(rule="coccomini2022-video", face_threshold=0.55, label_threshold=0.6,
                                   detector=DetectorSettings(min_face_size=40, max_side=960))  # fmt: skip
    save_checkpoint(tiny, path, inference=authors_like, weights_tag="cross_efficient_vit_v1.test")
    d = load_model(weights=path, device="cpu")
    assert (d.options.rule.name, d.options.rule.face_threshold, d.options.rule.label_threshold) == (
        "coccomini2022-video", 0.55, 0.6)  # fmt: skip
    assert d.options.min_face_size == 40 and d.options.detector_max_side == 960
    assert d.model_info["weights_tag"] == "cross_efficient_vit_v1.test"
    d = load_model(weights=path, device="cpu", rule="cevit-default", threshold=0.7, min_face_size=30)
    assert (d.options.rule.name, d.options.rule.face_threshold, d.options.rule.label_threshold) == (
        "cevit-default", 0.65, 0.7)  # fmt: skip
    assert d.options.min_face_size == 30


def test_checkpoint_without_inference_config_gets_cevit_defaults(tiny, tmp_path) -> None:
    path = tmp_path / "old.safetensors"
    save_checkpoint(tiny, path)
    d = load_model(weights=path, device="cpu")
    assert d.options.rule.name == "cevit-default" and d.model_info["weights_tag"] is None
    assert d.model_info["calibration"] == {"method": "none", "temperature": 1.0}


def test_authors_architecture_defaults_to_the_authors_rule(monkeypatch, tmp_path) -> None:
    import dataclasses

    import cevit.inference.pipeline as pipeline
    from cevit.checkpoint import CheckpointInfo

    model = create_model("coccomini2022", image_size=64, depth=1, sm_dim=16, lg_dim=24).eval()
    model.checkpoint_info = CheckpointInfo(path="x.pth", sha256="0" * 64, preset="coccomini2022", config=model.config,
                                           preprocessing=model.preprocessing)  # fmt: skip
    monkeypatch.setattr(pipeline, "load_weights", lambda path: model)
    (tmp_path / "x.pth").write_bytes(b"unused")
    d = load_model(weights=tmp_path / "x.pth", device="cpu")
    assert d.options.rule.name == "coccomini2022-video" and d.options.rule.label_threshold == 0.6
    assert d.model_info["weights_tag"] is None  # a reduced config is not the released checkpoint: no tag claimed
    from cevit.models.registry import PRESETS

    full = dataclasses.replace(model.checkpoint_info, config=PRESETS["coccomini2022"].config)
    model.checkpoint_info = full
    assert load_model(weights=tmp_path / "x.pth", device="cpu").model_info["weights_tag"] == "coccomini2022.dfdc"


def test_unbundled_weights_and_unknown_names_are_model_errors() -> None:
    with pytest.raises(ModelError, match="not bundled"):
        load_model("coccomini2022.dfdc")
    with pytest.raises(ModelError, match="registered weights"):
        load_model("cross_efficient_vit_v1_224.nope")


@pytest.mark.skipif(bundled_weights_path() is None, reason="no default weights bundled")
def test_default_and_deprecated_names_load_the_bundled_weights() -> None:
    d = load_model(device="cpu")
    assert d.model_info["name"] == d.model_info["weights_tag"] == DEFAULT_WEIGHTS
    with pytest.warns(DeprecationWarning):
        old = load_model("CROSS-EFFICIENT-VIT-V1", device="cpu")
    assert old.model_info["checkpoint_sha256"] == d.model_info["checkpoint_sha256"]
