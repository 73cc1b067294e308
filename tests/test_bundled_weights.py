"""The default weights shipped inside the package (skipped while none are bundled)."""

from __future__ import annotations

import pytest

from cevit.inference.pipeline import bundled_weights_path
from cevit.models.pretrained import DEFAULT_WEIGHTS, get_pretrained
from conftest import SAMPLE_FACE


@pytest.fixture(scope="module")
def bundled():
    path = bundled_weights_path(DEFAULT_WEIGHTS)
    if path is None:
        pytest.skip(f"no weights bundled for {DEFAULT_WEIGHTS}")
    return path


def test_bundled_checkpoint_is_small_fp16_with_provenance(bundled):
    from cevit.checkpoint import read_checkpoint_info

    info = read_checkpoint_info(bundled)
    assert bundled.stat().st_size <= 30 * 2**20
    assert info.dtype in ("float16", "mixed") and info.architecture == get_pretrained(DEFAULT_WEIGHTS).architecture
    assert info.sha256 == get_pretrained(DEFAULT_WEIGHTS).sha256  # the registry names exactly this file
    prov = info.provenance
    assert prov.get("config") and prov["data"]["indexes"] and prov.get("metrics") and prov.get("init")
    assert prov["steps"] > 0 and prov["metrics"]["val_auc_frame"] > 0.8  # trained, not fresh weights
    assert "eval_public" in prov and 0.0 <= prov["eval_public"]["auc"] <= 1.0
    storage = prov["storage"]  # written by tools/bundle_weights.py after checking the stored file
    assert storage["max_drift_check"] <= storage["max_drift_rule"] <= 1e-3 and storage["n_check_faces"] >= 32


def test_default_model_analyzes_the_sample_out_of_the_box(bundled):
    from cevit import load_model
    from cevit.checkpoint import file_sha256

    detector = load_model(device="cpu")
    report = detector.analyze(media_path=SAMPLE_FACE)
    assert report["model"]["name"] == DEFAULT_WEIGHTS and report["model"]["weights_tag"] == DEFAULT_WEIGHTS
    assert report["model"]["preset"] == get_pretrained(DEFAULT_WEIGHTS).architecture
    assert report["model"]["checkpoint_sha256"] == file_sha256(bundled)
    assert len(report["faces"]) == 1 and report["prediction"] in ("REAL", "FAKE")
    # the sample is a real (public-domain NASA) photo: the shipped default must not call it fake
    assert report["prediction"] == "REAL"
