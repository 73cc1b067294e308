"""``cevit info``: summarises what ``cevit analyze`` would use (bundled weights when present)."""

from __future__ import annotations

import json

import torch

from cevit.cli.main import main


def test_info_without_bundled_weights_says_so(monkeypatch, capsys):
    import cevit.inference.pipeline as pipeline

    monkeypatch.setattr(pipeline, "bundled_weights_path", lambda name=None: None)
    assert main(["info"]) == 3  # the default weights are missing from this installation: a model error
    assert "not bundled" in capsys.readouterr().err
    assert main(["info", "cross_efficient_vit_v1"]) == 0  # an architecture: fresh weights, says so
    out = capsys.readouterr().out
    assert "parameters     14,019,024" in out and "fresh random weights (an architecture, no checkpoint)" in out


def test_info_list_shows_architectures_and_weights_separately(capsys):
    assert main(["info", "--list"]) == 0
    out = capsys.readouterr().out
    archs, weights = out.split("weights (")
    assert "cross_efficient_vit_v1 " in archs and "cross_efficient_vit_v1_224" in archs and "coccomini2022" in archs
    assert "cross_efficient_vit_v1_224." in weights and "coccomini2022.dfdc" in weights
    assert "rule coccomini2022-video (0.55 / 0.6)" in weights
    assert main(["info", "--list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {a["name"] for a in listing["architectures"]} == {"cross_efficient_vit_v1", "cross_efficient_vit_v1_224",
                                                             "coccomini2022"}  # fmt: skip
    dfdc = next(w for w in listing["weights"] if w["name"] == "coccomini2022.dfdc")
    assert dfdc["inference"]["label_threshold"] == 0.6 and dfdc["available"] == "file given with --weights"


def test_info_summarises_the_bundled_weights(monkeypatch, tmp_path, capsys):
    import cevit.inference.pipeline as pipeline
    from cevit.checkpoint import save_checkpoint
    from cevit.models import create_model

    torch.manual_seed(0)
    path = tmp_path / "bundled.safetensors"
    ev = {"auc": 0.6, "by_media_type": {"media_type=image": {"auc": 0.55, "n_items": 10},
                                        "media_type=video": {"auc": 0.8, "n_items": 4}}}  # fmt: skip
    save_checkpoint(create_model("cross_efficient_vit_v1", image_size=96, depth=1), path, eval_public=ev)
    monkeypatch.setattr(pipeline, "bundled_weights_path", lambda name=None: path)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "bundled weights cross_efficient_vit_v1_224.lfw_sbi_v2 (bundled.safetensors" in out
    assert "input          96x96" in out and "images AUC 0.550, videos AUC 0.800" in out
    assert main(["info", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"]["image_size"] == 96 and summary["provenance"]["eval_public"]["auc"] == 0.6
