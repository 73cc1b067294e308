"""The GPU path: run where CUDA is present (``pytest -m cuda``), skipped cleanly everywhere else.

Mixed precision must not change what the model says: under bf16 / fp16 autocast the logits of the optimised
inference model stay within 1e-2 of fp32 (issue 12, item 3), for a reduced-size model of each architecture
family and for the bundled default weights; and the Detector on CUDA (MTCNN on the GPU, faces copied as uint8
through pinned memory, the model under autocast) gives the CPU's fp32 scores within 1e-2 on the logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

DTYPES = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="fp16")]


def _autocast_logits(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    from cevit.models.optimize import optimize_for_inference

    fast = optimize_for_inference(model.eval()).cuda()
    x = x.cuda()
    with torch.inference_mode():
        reference = fast(x).float()
        with torch.autocast("cuda", dtype=dtype):
            mixed = fast(x).float()
    return reference.cpu(), mixed.cpu()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", ["cross_efficient_vit_v1_224", "coccomini2022"])
def test_autocast_logits_within_1e_2_of_fp32_small(preset, dtype):
    from cevit.models import create_model

    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    torch.manual_seed(0)
    model = create_model(preset, depth=1)
    size = model.config.image_size
    x = torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(1))
    reference, mixed = _autocast_logits(model, x, dtype)
    assert (mixed - reference).abs().max().item() <= 1e-2


@pytest.mark.parametrize("dtype", DTYPES)
def test_autocast_logits_of_the_default_weights(dtype, face_rgb):
    """Real weights and real face crops (the sample photo's face at several crops) under autocast."""
    from cevit.inference.pipeline import bundled_weights_path, load_weights
    from cevit.preprocess import preprocess_faces

    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    path = bundled_weights_path()
    if path is None:
        pytest.skip("no bundled weights in this installation")
    model = load_weights(path)
    boxes = [(150 + d, 60 + d, 320 - d, 230 - d) for d in range(0, 32, 2)]
    x = preprocess_faces([face_rgb] * len(boxes), boxes, model.preprocessing)
    reference, mixed = _autocast_logits(model, x, dtype)
    assert (mixed - reference).abs().max().item() <= 1e-2


def test_detector_on_cuda_matches_cpu():
    """The whole pipeline on the GPU (fp32): MTCNN and the model give the CPU's faces and scores."""
    from cevit.inference.pipeline import load_model
    from conftest import SAMPLE_FACE

    cpu = load_model(device="cpu").analyze(SAMPLE_FACE)
    gpu = load_model(device="cuda", precision="fp32").analyze(SAMPLE_FACE)  # (explicit, though fp32 is the default)
    assert len(cpu["faces"]) == len(gpu["faces"]) == 1
    for a, b in zip(cpu["faces"], gpu["faces"]):
        assert a["box"] == pytest.approx(b["box"], abs=1.0)
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)


def test_onnxruntime_cuda_provider_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (onnxruntime-gpu)")
    from cevit.inference.pipeline import load_model
    from conftest import SAMPLE_FACE

    cpu = load_model(device="cpu").analyze(SAMPLE_FACE)
    gpu = load_model(device="cuda", backend="onnxruntime").analyze(SAMPLE_FACE)
    assert [f["score"] for f in gpu["faces"]] == pytest.approx([f["score"] for f in cpu["faces"]], abs=1e-3)


def _logits(scores, temperature: float) -> np.ndarray:
    """Back from calibrated probabilities P = sigmoid(logit / T) to the model's logits (float64)."""
    p = np.asarray(scores, dtype=np.float64)
    return temperature * np.log(p / (1.0 - p))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_detector_autocast_on_cuda_matches_cpu_fp32(precision, face_rgb, monkeypatch):
    """End to end on the GPU with autocast against the CPU in fp32: the same faces, logits within 1e-2; the batch
    goes through pinned memory; the report says bf16/fp16 on cuda."""
    from cevit.inference.pipeline import load_model
    from conftest import SAMPLE_FACE

    if precision == "bf16" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("this GPU has no native bf16")
    pinned = []
    original = torch.Tensor.pin_memory
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a: pinned.append(self.shape) or original(self, *a))
    cpu, gpu = load_model(device="cpu", precision="fp32"), load_model(device="cuda", precision=precision)
    assert gpu.precision == precision and gpu.calibration == cpu.calibration
    ra, rb = cpu.analyze(SAMPLE_FACE), gpu.analyze(SAMPLE_FACE)
    assert rb["model"]["runtime"] == {"backend": "torch", "device": "cuda", "precision": precision}
    assert len(ra["faces"]) == len(rb["faces"]) == 1 and pinned  # the face batch was pinned before its copy
    assert ra["faces"][0]["box"] == pytest.approx(rb["faces"][0]["box"], abs=1.0)
    # many real crops through score_faces: uint8 -> pinned -> device -> normalise there -> autocast -> float32
    boxes = [(150 + d, 60 + d, 320 - d, 230 - d) for d in range(0, 32, 2)]
    crops = [cpu.preprocessor.crop(face_rgb, box) for box in boxes]
    t = cpu.calibration.temperature
    a, b = _logits(cpu.score_faces(crops), t), _logits(gpu.score_faces(crops), t)
    assert np.abs(a - b).max() <= 1e-2


def test_uint8_to_the_gpu_gives_the_cpu_input_tensor(face_rgb):
    """FacePreprocessor.to_tensor(device="cuda") (uint8 copied, converted on the GPU) equals the CPU conversion up to
    float rounding (the GPU may divide by 255 as a multiplication by its reciprocal); auto is bf16 on Ampere+."""
    from cevit.inference.pipeline import resolve_precision
    from cevit.preprocess import FacePreprocessor, Preprocessing

    pre = FacePreprocessor(spec=Preprocessing(input_size=224))
    crops = [pre.crop(face_rgb, (150 + d, 60 + d, 320 - d, 230 - d)) for d in range(0, 16, 2)]
    on_gpu = pre.to_tensor(crops, device="cuda")
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    assert (on_gpu.cpu() - pre.to_tensor(crops)).abs().max().item() <= 1e-6
    expected = "bf16" if torch.cuda.get_device_capability()[0] >= 8 else "fp16"
    assert resolve_precision("auto", torch.device("cuda")) == expected
