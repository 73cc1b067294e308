"""cevit calibrate: temperature fitted on a run's validation split, stored with the weights, used by analysis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic_faces import face_crop
from test_trainer import TINY, index, make_config  # noqa: F401 - index is a fixture

from cevit.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from cevit.cli.main import main
from cevit.inference.pipeline import load_model
from cevit.models.registry import create_model
from cevit.preprocess import resize_face


@pytest.fixture()
def weights(tmp_path):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_model("cross_efficient_vit_v1", **TINY).eval()
    path = tmp_path / "w.safetensors"
    save_checkpoint(model, path, half=True, note="test")
    return path


def test_calibrate_writes_temperature_and_analysis_uses_it(index, weights, tmp_path, capsys) -> None:  # noqa: F811
    import yaml

    from cevit.config import to_dict

    config = make_config(index, tmp_path / "run")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(to_dict(config)))
    out = tmp_path / "cal.safetensors"
    assert main(["calibrate", "--config", str(tmp_path / "c.yaml"), "--weights", str(weights), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "temperature" in printed and "ECE" in printed
    info = read_checkpoint_info(out)
    cal = info.inference.calibration
    assert cal.method == "temperature" and cal.temperature > 0 and "4 samples" in cal.fitted_on
    assert info.dtype == "float16" and info.provenance["calibration"]["nll_after"] <= info.provenance["calibration"][
        "nll_before"] + 1e-12  # fmt: skip
    a, b = load_checkpoint(weights).state_dict(), load_checkpoint(out).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same weights, only the metadata differs
    assert load_model(weights=out, device="cpu").model_info["calibration"]["temperature"] == pytest.approx(
        cal.temperature
    )


def test_detector_divides_the_logit_by_the_stored_temperature(weights, tmp_path) -> None:
    from cevit.models.pretrained import Calibration, InferenceConfig

    model = load_checkpoint(weights)
    with torch.no_grad():  # moderate logits, so probabilities are far from 0 and 1
        model.sm_mlp_head[-1].weight.div_(400.0)
        model.lg_mlp_head[-1].weight.div_(400.0)
    plain, scaled = tmp_path / "plain.safetensors", tmp_path / "scaled.safetensors"
    save_checkpoint(model, plain, inference=InferenceConfig())
    save_checkpoint(
        model, scaled, inference=InferenceConfig(calibration=Calibration(method="temperature", temperature=2.5))
    )
    raw, calibrated = load_model(weights=plain, device="cpu"), load_model(weights=scaled, device="cpu")
    crops = [resize_face(face_crop(s, s % 2 == 1), raw.preprocessing) for s in range(4)]
    p_raw, p_cal = np.array(raw.score_faces(crops)), np.array(calibrated.score_faces(crops))
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert np.allclose(logit(p_cal) * 2.5, logit(p_raw), atol=1e-3) and not np.allclose(p_cal, p_raw)
    assert calibrated.model_info["calibration"] == {"method": "temperature", "temperature": 2.5}


def test_calibrate_refuses_to_overwrite_its_input(index, weights, tmp_path) -> None:  # noqa: F811
    import yaml

    from cevit.config import to_dict

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(to_dict(make_config(index, tmp_path / "run"))))
    assert main(["calibrate", "--config", str(tmp_path / "c.yaml")]) == 2  # usage: --weights and --output missing
    assert main(["calibrate", "--config", str(tmp_path / "c.yaml"), "--weights", str(weights), "-o", str(weights)]) == 2
