"""``cevit export onnx`` and ``cevit analyze --backend onnxruntime``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cevit.cli.main import main
from conftest import SAMPLE_FACE

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def generated_image(tmp_path):
    """A generated photo: noise background with the sample face pasted in at a different place and size."""
    rng = np.random.default_rng(5)
    canvas = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    face = Image.open(SAMPLE_FACE).convert("RGB").crop((100, 0, 400, 300)).resize((240, 240))
    canvas.paste(face, (300, 120))
    path = tmp_path / "generated.png"
    canvas.save(path)
    return path


def test_export_then_analyze_with_onnxruntime(tiny_checkpoint, generated_image, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    code, stdout, err = run(["export", "onnx", "--weights", str(tiny_checkpoint), "--exporter", "torchscript",
                             str(out)], capsys)  # fmt: skip
    assert code == 0, err
    assert f"wrote {out}" in stdout and "opset 18" in stdout and "max |logit difference| to torch" in stdout
    assert out.is_file() and "Warning" not in err and "Traceback" not in err

    base = ["analyze", str(generated_image), "--device", "cpu"]
    code, stdout, err = run([*base, "--weights", str(tiny_checkpoint)], capsys)
    assert code == 0, err
    torch_report = json.loads(stdout)
    code, stdout, err = run([*base, "--weights", str(out), "--backend", "onnxruntime"], capsys)
    assert code == 0, err
    onnx_report = json.loads(stdout)
    assert len(torch_report["faces"]) == len(onnx_report["faces"]) >= 1
    for a, b in zip(torch_report["faces"], onnx_report["faces"]):
        assert a["box"] == b["box"] and abs(a["score"] - b["score"]) <= 1e-4
    assert onnx_report["prediction"] == torch_report["prediction"]
    assert set(onnx_report) == set(torch_report)  # the same report schema

    code, stdout, err = run([*base, "--weights", str(out), "--backend", "torch"], capsys)
    assert code == 2 and "onnxruntime backend" in err


def test_export_errors_exit_with_their_codes(tmp_path, capsys):
    code, _, err = run(["export", "onnx", "--weights", str(tmp_path / "missing.safetensors"), str(tmp_path / "x.onnx")],
                       capsys)  # fmt: skip
    assert code == 3 and "does not exist" in err and "Traceback" not in err
    code, _, err = run(["export", "onnx", str(tmp_path / "x.txt")], capsys)
    assert code == 2 and "must end in .onnx" in err
    assert run(["export"], capsys)[0] == 2  # the format is required


def test_analyze_with_a_broken_onnx_file_exits_3(generated_image, tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model at all")
    code, stdout, err = run(["analyze", str(generated_image), "--weights", str(bad), "--device", "cpu"], capsys)
    assert code == 3 and stdout == ""
    assert f"{bad}: not a readable ONNX model" in err and "Traceback" not in err
