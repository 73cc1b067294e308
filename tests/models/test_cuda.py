"""The GPU path: run where CUDA is present (``pytest -m cuda``), skipped cleanly everywhere else.

Mixed precision must not change what the model says: under bf16 / fp16 autocast the logits of the optimised
inference model stay within 1e-2 of fp32 (issue 12, item 3), for a reduced-size model of each architecture
family and for the bundled default weights.
"""

from __future__ import annotations

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

    cpu, gpu = load_model(device="cpu").analyze(SAMPLE_FACE), load_model(device="cuda").analyze(SAMPLE_FACE)
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
