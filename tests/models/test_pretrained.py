"""cevit.models.pretrained: weights tags, their inference configs, deprecated names."""

from __future__ import annotations

import warnings

import pytest

from cevit.errors import ConfigError, ModelError
from cevit.models.pretrained import (
    DEFAULT_WEIGHTS,
    PRETRAINED,
    Calibration,
    DetectorSettings,
    InferenceConfig,
    default_inference_for,
    get_pretrained,
    inference_config_from_json,
    list_pretrained,
)
from cevit.models.registry import PRESETS, architecture_of, create_model, get_preset


def test_every_tag_names_a_registered_architecture_and_a_valid_rule() -> None:
    assert list_pretrained()[0] == DEFAULT_WEIGHTS
    for name, w in PRETRAINED.items():
        assert name == f"{w.architecture}.{w.tag}" and w.architecture in PRESETS
        rule = w.inference.aggregation_rule()
        assert rule.name == w.inference.rule and rule.label_threshold == w.inference.label_threshold


def test_authors_weights_carry_the_authors_protocol() -> None:
    w = get_pretrained("coccomini2022.dfdc")
    assert w.file is None and (w.inference.rule, w.inference.face_threshold, w.inference.label_threshold) == (
        "coccomini2022-video", 0.55, 0.6)  # fmt: skip
    assert default_inference_for("coccomini2022") == w.inference
    assert get_pretrained("coccomini2022") is w  # an architecture alone: its registered tag
    with pytest.raises(ModelError, match="registered weights"):
        get_pretrained("cross_efficient_vit_v1.nope")


def test_one_name_one_network() -> None:
    assert PRESETS["cross_efficient_vit_v1"].config.image_size == 380
    assert PRESETS["cross_efficient_vit_v1_224"].config.image_size == 224
    assert architecture_of(PRESETS["cross_efficient_vit_v1_224"].config) == "cross_efficient_vit_v1_224"
    assert architecture_of(create_model("cross_efficient_vit_v1", depth=1).config) is None
    assert get_preset(f"{'cross_efficient_vit_v1_224'}.lfw_sbi_v2").name == "cross_efficient_vit_v1_224"


def test_deprecated_name_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="deprecated"):
        model = create_model("CROSS-EFFICIENT-VIT-V1", depth=1)
    assert model.preset_name == "cross_efficient_vit_v1" and model.config.image_size == 380
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_model("cross_efficient_vit_v1", depth=1)  # the new name: no warning


def test_inference_config_overrides_and_validation() -> None:
    config = InferenceConfig(rule="coccomini2022-video", face_threshold=0.55, label_threshold=0.6)
    assert config.aggregation_rule(threshold=0.7).label_threshold == 0.7
    assert config.aggregation_rule(rule="cevit-default").face_threshold == 0.65  # another rule: its own defaults
    assert inference_config_from_json(config.to_json_dict()) == config
    with pytest.raises(ConfigError, match="unknown key"):
        inference_config_from_json({"rule": "cevit-default", "temprature": 2})
    with pytest.raises(ConfigError):
        InferenceConfig(label_threshold=1.5)
    with pytest.raises(ConfigError, match="temperature"):
        Calibration(method="temperature", temperature=0.0)
    with pytest.raises(ConfigError, match="needs temperature 1.0"):
        Calibration(method="none", temperature=2.0)
    with pytest.raises(ConfigError, match="factor"):
        DetectorSettings(factor=1.0)
