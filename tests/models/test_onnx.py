"""ONNX export and the onnxruntime backend: parity with torch, metadata round trip, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from cevit.checkpoint import file_sha256, load_checkpoint, save_checkpoint  # noqa: E402
from cevit.errors import CheckpointError, ConfigError  # noqa: E402
from cevit.inference.pipeline import load_model  # noqa: E402
from cevit.models.onnx import (  # noqa: E402
    ONNX_FORMAT_NAME,
    OnnxRuntimeModel,
    export_onnx,
    load_onnx_model,
)
from cevit.models.pretrained import Calibration, DetectorSettings, InferenceConfig  # noqa: E402
from conftest import SAMPLE_FACE  # noqa: E402

# the fast tests use PyTorch's TorchScript exporter (seconds); the dynamo exporter is tested in the slow test
FAST = "torchscript"


@pytest.fixture(scope="module")
def calibrated_checkpoint(tmp_path_factory):
    """A tiny random-weights checkpoint whose inference config carries a calibration temperature and a tag."""
    from cevit.models import create_model

    torch.manual_seed(1)
    model = create_model("cross_efficient_vit_v1", image_size=96, depth=1)
    inference = InferenceConfig(
        face_threshold=0.7, label_threshold=0.4, detector=DetectorSettings(min_face_size=24),
        calibration=Calibration(method="temperature", temperature=2.5, fitted_on="test"),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("onnx") / "calibrated.safetensors"
    save_checkpoint(model, path, inference=inference, weights_tag="cross_efficient_vit_v1.test_tag")
    return path


@pytest.fixture(scope="module")
def exported(calibrated_checkpoint):
    out = calibrated_checkpoint.with_name("calibrated.onnx")
    result = export_onnx(load_checkpoint(calibrated_checkpoint), out, exporter=FAST)
    return out, result


def test_export_checks_itself_and_records_what_it_wrote(exported, calibrated_checkpoint):
    out, result = exported
    assert result.max_abs_logit_diff is not None and result.max_abs_logit_diff <= 1e-4
    assert result.sha256 == file_sha256(out)
    assert result.source_sha256 == file_sha256(calibrated_checkpoint)
    assert result.opset == 18 and result.exporter == FAST
    assert result.weights_tag == "cross_efficient_vit_v1.test_tag"
    assert not out.with_name(out.name + ".tmp").exists()


def test_metadata_round_trip(exported, calibrated_checkpoint):
    import onnx

    out, _ = exported
    source = load_checkpoint(calibrated_checkpoint).checkpoint_info
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["format"] == ONNX_FORMAT_NAME and json.loads(meta["opset"]) == 18
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {18}
    # the batch axis is dynamic, the rest fixed by the preprocessing contract
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 96, 96]

    info = load_onnx_model(out).checkpoint_info
    assert info.config == source.config
    assert info.preprocessing == source.preprocessing
    assert info.inference == source.inference  # rule, thresholds, detector settings, calibration
    assert info.weights_tag == "cross_efficient_vit_v1.test_tag"
    assert info.provenance["source_sha256"] == source.sha256 and info.sha256 == file_sha256(out)
    assert info.preset == "cross_efficient_vit_v1" and info.architecture is None  # a reduced, unregistered size


def test_logits_match_torch_at_several_batch_sizes(exported, calibrated_checkpoint):
    out, _ = exported
    model = load_checkpoint(calibrated_checkpoint)
    scorer = load_onnx_model(out)
    g = torch.Generator().manual_seed(3)
    for batch in (1, 4, 9):  # the exported example batch was 2: the batch axis really is dynamic
        x = torch.randn(batch, 3, 96, 96, generator=g)
        with torch.inference_mode():
            expected = model(x)
        got = scorer(x)
        assert got.shape == (batch, 1) and got.dtype == torch.float32
        assert (got - expected).abs().max().item() <= 1e-4


def test_detectors_of_both_backends_give_the_same_report(exported, calibrated_checkpoint, face_rgb):
    out, _ = exported
    torch_det = load_model(weights=calibrated_checkpoint, device="cpu")
    onnx_det = load_model(weights=out, device="cpu")  # backend chosen from the file
    assert (torch_det.backend, onnx_det.backend) == ("torch", "onnxruntime")
    # the inference config travels in the ONNX metadata: same rule, thresholds, detector settings, calibration
    assert onnx_det.options == torch_det.options and onnx_det.calibration == torch_det.calibration
    assert onnx_det.model_info["weights_tag"] == "cross_efficient_vit_v1.test_tag"
    assert onnx_det.model_info["checkpoint_sha256"] == file_sha256(out)

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(5)]
    a, b = torch_det.score_faces(crops), onnx_det.score_faces(crops)
    assert np.abs(np.array(a) - np.array(b)).max() <= 1e-4
    # the calibration temperature (2.5) is applied the same way to both: P = sigmoid(logit / T)
    from cevit.preprocess import to_tensor

    with torch.inference_mode():
        logits = load_checkpoint(calibrated_checkpoint)(to_tensor(crops, torch_det.preprocessing)).squeeze(1)
    assert np.abs(np.array(b) - torch.sigmoid(logits / 2.5).numpy()).max() <= 1e-4

    ra, rb = torch_det.analyze(SAMPLE_FACE), onnx_det.analyze(SAMPLE_FACE)
    assert len(ra["faces"]) == len(rb["faces"]) == 1
    assert abs(ra["score"] - rb["score"]) <= 1e-4 and ra["prediction"] == rb["prediction"]


def test_in_memory_export_for_torch_weights(calibrated_checkpoint, monkeypatch):
    """backend="onnxruntime" with torch weights: exported in memory, the report names the weights file given."""
    import cevit.models.onnx as onnx_module

    monkeypatch.setattr(onnx_module, "DEFAULT_EXPORTER", FAST)
    det = load_model(weights=calibrated_checkpoint, device="cpu", backend="onnxruntime")
    assert det.backend == "onnxruntime" and isinstance(det.model, OnnxRuntimeModel)
    assert det.model_info["checkpoint_sha256"] == file_sha256(calibrated_checkpoint)
    assert det.calibration.temperature == 2.5


def test_in_memory_export_is_cached_per_weights_file(calibrated_checkpoint, monkeypatch, tmp_path, face_rgb):
    """The first onnxruntime load exports and caches; the next ones load the cache (no export) and score alike; a
    damaged entry is replaced by a fresh export."""
    import cevit.models.onnx as onnx_module

    monkeypatch.setattr(onnx_module, "DEFAULT_EXPORTER", FAST)
    monkeypatch.setenv("CEVIT_CACHE_DIR", str(tmp_path / "cache"))
    exports = []
    real_export = onnx_module.onnx_bytes
    monkeypatch.setattr(onnx_module, "onnx_bytes", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    first = load_model(weights=calibrated_checkpoint, device="cpu", backend="onnxruntime")
    entries = list((tmp_path / "cache" / "onnx").iterdir())
    assert len(exports) == 1 and len(entries) == 1 and entries[0].suffix == ".onnx"
    second = load_model(weights=calibrated_checkpoint, device="cpu", backend="onnxruntime")
    assert len(exports) == 1, "the cached export was not used"
    assert second.model_info == first.model_info
    assert second.model_info["checkpoint_sha256"] == file_sha256(calibrated_checkpoint)
    crops = [face_rgb[:96, :96].copy(), face_rgb[100:196, 100:196].copy()]
    assert np.allclose(first.score_faces(crops), second.score_faces(crops), atol=1e-6)
    entries[0].write_bytes(b"not an onnx model")
    third = load_model(weights=calibrated_checkpoint, device="cpu", backend="onnxruntime")
    assert len(exports) == 2 and entries[0].stat().st_size > 1000
    assert np.allclose(first.score_faces(crops), third.score_faces(crops), atol=1e-6)


def test_backend_errors(exported, calibrated_checkpoint):
    out, _ = exported
    with pytest.raises(ConfigError, match="unknown backend"):
        load_model(weights=calibrated_checkpoint, device="cpu", backend="tensorrt")
    with pytest.raises(ConfigError, match="onnxruntime backend"):
        load_model(weights=out, device="cpu", backend="torch")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"", "empty"),
        (b"\x08\x07garbage that is not a protobuf \xff\xfe" * 10, "not a readable ONNX model"),
    ],
)
def test_bad_onnx_files_are_checkpoint_errors(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        load_model(weights=path, device="cpu")
    assert str(path) in str(err.value)


def test_a_foreign_onnx_model_is_refused(tmp_path):
    """A valid ONNX model without cevit's metadata: a CheckpointError, not a crash at the first face."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 96, 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 96, 96])],
    )  # fmt: skip
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(CheckpointError, match="not an ONNX model exported by cevit"):
        load_onnx_model(path)


def test_metadata_that_does_not_fit_the_graph_is_refused(exported, tmp_path):
    import onnx

    proto = onnx.load(str(exported[0]))
    for prop in proto.metadata_props:
        if prop.key == "preprocessing":
            spec = json.loads(prop.value)
            spec["input_size"] = 128
            prop.value = json.dumps(spec)
    path = tmp_path / "mismatch.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(CheckpointError, match=r"needs \(batch, 3, 128, 128\)"):
        load_onnx_model(path)


def test_export_arguments_are_checked(calibrated_checkpoint, tmp_path):
    from cevit.export import export_weights_onnx

    with pytest.raises(ConfigError, match="must end in .onnx"):
        export_weights_onnx(tmp_path / "x.bin", weights=calibrated_checkpoint)
    with pytest.raises(ConfigError, match="opset"):
        export_weights_onnx(tmp_path / "x.onnx", weights=calibrated_checkpoint, opset=7)
    with pytest.raises(CheckpointError, match="does not exist"):
        export_weights_onnx(tmp_path / "x.onnx", weights=tmp_path / "missing.safetensors")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_bundled_default_weights_dynamo_export_parity(tmp_path, face_rgb):
    """The shipped weights through PyTorch's default (dynamo) exporter: logits and face scores within 1e-4."""
    from cevit.export import export_weights_onnx
    from cevit.inference.pipeline import bundled_weights_path, load_weights
    from cevit.models.pretrained import DEFAULT_WEIGHTS, get_pretrained

    out = tmp_path / "default.onnx"
    result = export_weights_onnx(out, exporter="dynamo")
    assert result.weights_tag == DEFAULT_WEIGHTS and result.max_abs_logit_diff <= 1e-4
    assert result.source_sha256 == get_pretrained(DEFAULT_WEIGHTS).sha256
    model = load_weights(bundled_weights_path())
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(x)
    assert (load_onnx_model(out)(x) - expected).abs().max().item() <= 1e-4

    torch_det, onnx_det = load_model(device="cpu"), load_model(weights=out, device="cpu")
    assert onnx_det.calibration == torch_det.calibration and onnx_det.calibration.temperature != 1.0
    assert onnx_det.options == torch_det.options
    ra, rb = torch_det.analyze(SAMPLE_FACE), onnx_det.analyze(SAMPLE_FACE)
    assert [f["score"] for f in ra["faces"]] == pytest.approx([f["score"] for f in rb["faces"]], abs=1e-4)
    assert ra["prediction"] == rb["prediction"]
