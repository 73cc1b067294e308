"""``cevit info``: summarises what ``cevit analyze`` would use (bundled weights when present)."""

from __future__ import annotations

import json

import torch

from cevit.cli.main import main


def test_info_without_bundled_weights_says_so(monkeypatch, capsys):
    import cevit.inference.pipeline as pipeline

    monkeypatch.setattr(pipeline, "bundled_weights_path", lambda preset: None)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "parameters     14,019,024" in out and "fresh random weights (no checkpoint, none bundled)" in out


def test_info_summarises_the_bundled_weights(monkeypatch, tmp_path, capsys):
    import cevit.inference.pipeline as pipeline
    from cevit.checkpoint import save_checkpoint
    from cevit.models import create_model

    torch.manual_seed(0)
    path = tmp_path / "CROSS-EFFICIENT-VIT-V1.safetensors"
    ev = {"auc": 0.6, "by_media_type": {"media_type=image": {"auc": 0.55, "n_items": 10},
                                        "media_type=video": {"auc": 0.8, "n_items": 4}}}  # fmt: skip
    save_checkpoint(create_model("CROSS-EFFICIENT-VIT-V1", image_size=96, depth=1), path, eval_public=ev)
    monkeypatch.setattr(pipeline, "bundled_weights_path", lambda preset: path)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "bundled default weights (CROSS-EFFICIENT-VIT-V1.safetensors" in out
    assert "input          96x96" in out and "images AUC 0.550, videos AUC 0.800" in out
    assert main(["info", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"]["image_size"] == 96 and summary["provenance"]["eval_public"]["auc"] == 0.6
