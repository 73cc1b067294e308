"""Tests of cevit.training.trainer (and the config loader and CLI): exact resume, seeds, outputs, provenance.

A tiny Cross Efficient ViT (64 px, one thin encoder layer) trains for a few steps on synthetic face crops.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from synthetic_faces import write_face_index

from cevit.checkpoint import file_sha256, load_checkpoint, portable_paths
from cevit.config import from_dict, to_dict
from cevit.errors import CheckpointError, ConfigError
from cevit.training.config import ScheduleSection, TrainConfig, load_train_config
from cevit.training.trainer import LOG_FIELDS, Trainer, TrainResult, _build_optimizer, lr_factor, train

TINY = dict(image_size=64, depth=1, sm_enc_depth=1, lg_enc_depth=1, cross_attn_depth=1, sm_enc_heads=2,
            lg_enc_heads=2, cross_attn_heads=2, sm_enc_dim_head=16, lg_enc_dim_head=16, cross_attn_dim_head=16,
            sm_enc_mlp_dim=32, lg_enc_mlp_dim=32, sm_dim=32, lg_dim=32)  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    """One intra-op thread: fast and stable on a small, shared CPU (results do not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 groups x (2 real + 2 fake crops); group 0 (and its fakes) is validation: 20 train / 4 val crops."""
    return write_face_index(tmp_path_factory.mktemp("faces"), groups=6)


def make_config(
    index: Path, out: Path, *, mode: str = "labelled", data: dict | None = None, **train_kw: Any
) -> TrainConfig:
    train_section = {"epochs": 2, "batch_size": 4, "ema_decay": 0.9, "log_every_steps": 1, "seed": 0, **train_kw}
    return from_dict(TrainConfig, {
        "model": {"overrides": TINY},
        "data": {"indexes": [str(index)], "mode": mode, "val_fraction": 0.0, **(data or {})},
        "augment": {"ssr_prob": 0.5, "jpeg_prob": 0.5, "noise_prob": 0.5, "color_jitter_prob": 0.5},
        "schedule": {"name": "cosine", "warmup_epochs": 0.5},
        "train": train_section,
        "output_dir": str(out),
    })  # fmt: skip


def state(out: Path) -> dict[str, Any]:
    return torch.load(out / "train_state.pt", map_location="cpu", weights_only=True)


def assert_same_tree(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), where


# ----------------------------------------------------------------------------------------------------------
# exact resume


@pytest.mark.parametrize(
    "mode, data, steps",
    [
        ("labelled", None, 2),  # resume mid-epoch (5 steps per epoch)
        ("sbi", {"max_train_items": 4}, 3),  # 2 steps per epoch: resume mid-epoch, then cross an epoch end
    ],
)
def test_resume_gives_the_same_weights_and_optimizer(index: Path, tmp_path: Path, mode: str, data: dict | None,
                                                     steps: int) -> None:  # fmt: skip
    a = train(make_config(index, tmp_path / "a", mode=mode, data=data, max_steps=steps), progress=False)
    assert a.global_step == steps
    b1 = train(make_config(index, tmp_path / "b", mode=mode, data=data, max_steps=1), progress=False)
    assert b1.global_step == 1 and not b1.finished and state(tmp_path / "b")["step_in_epoch"] == 1
    b = train(make_config(index, tmp_path / "b", mode=mode, data=data, max_steps=steps), resume=True, progress=False)
    assert b.global_step == steps
    sa, sb = state(tmp_path / "a"), state(tmp_path / "b")
    assert_same_tree(sa["model"], sb["model"], "model")
    assert_same_tree(sa["optimizer"], sb["optimizer"], "optimizer")
    assert_same_tree(sa["ema"], sb["ema"], "ema")
    assert_same_tree(sa["scheduler"], sb["scheduler"], "scheduler")
    assert (sa["epoch"], sa["step_in_epoch"]) == (sb["epoch"], sb["step_in_epoch"])
    # a changed recipe cannot be resumed; a missing state is an error; an existing run is not overwritten
    with pytest.raises(ConfigError, match="optim.lr"):
        changed = make_config(index, tmp_path / "b", mode=mode, data=data, max_steps=steps + 1)
        train(from_dict(TrainConfig, {**to_dict(changed), "optim": {"lr": 0.1}}), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="no training state"):
        train(make_config(index, tmp_path / "c", mode=mode, data=data, max_steps=1), resume=True, progress=False)
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(make_config(index, tmp_path / "a", mode=mode, data=data, max_steps=1), progress=False)


@pytest.mark.timeout(300)  # a DataLoader worker deadlock must fail, not hang
def test_same_seed_same_weights_other_seed_other_weights(index: Path, tmp_path: Path) -> None:
    def weights(name: str, seed: int, workers: int = 0) -> dict[str, torch.Tensor]:
        config = make_config(
            index, tmp_path / name, data={"num_workers": workers}, max_steps=2, seed=seed, ema_decay=0.0
        )
        train(config, progress=False)
        return state(tmp_path / name)["model"]

    # the second run uses 2 DataLoader workers (forked after this process used OpenCV): same weights
    w1, w2, w3 = weights("s0", 0), weights("s0bis", 0, workers=2), weights("s1", 1)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)


# ----------------------------------------------------------------------------------------------------------
# outputs


def test_full_epoch_outputs_and_provenance(index: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = make_config(index, out, epochs=1, log_every_steps=2)
    result = train(config, progress=False)
    assert isinstance(result, TrainResult) and result.finished and result.epochs_completed == 1
    assert result.steps_per_epoch == 5 and result.global_step == 5 and result.best_epoch == 1
    assert result.best_metric is not None and 0.0 <= result.best_metric <= 1.0
    assert set(result.final_metrics) >= {"val_loss", "val_auc_frame", "val_auc_group"}
    assert len(result.history) == 1 and result.history[0]["epoch"] == 1
    for name in ("best.safetensors", "last.safetensors"):
        model = load_checkpoint(out / name)
        prov = model.checkpoint_info.provenance
        # checkpoints store absolute paths portably (cevit.checkpoint.portable_paths); train_state.pt keeps them
        assert prov["data"]["indexes"] == portable_paths([{"path": str(index.resolve()), "sha256": file_sha256(index)}])
        assert prov["metrics"]["val_auc_frame"] == pytest.approx(result.final_metrics["val_auc_frame"])
        assert (
            prov["epoch"] == 1 and prov["steps"] == 5 and prov["device"] == "cpu" and prov["init"]["method"] == "random"
        )
        assert prov["config"] == portable_paths(to_dict(config)) and "git_commit" in prov and prov["weights"] == "ema"
        assert model.config.image_size == 64
    # the saved weights are the EMA weights
    st = state(out)
    last = load_checkpoint(out / "last.safetensors").state_dict()
    assert all(torch.equal(last[k], v) for k, v in st["ema"]["weights"].items())
    assert not all(torch.equal(last[k], v) for k, v in st["model"].items() if v.is_floating_point())
    # train_state: plain tensors and containers only
    assert st["global_step"] == 5 and st["epoch"] == 1 and st["step_in_epoch"] == 0
    assert isinstance(st["rng"]["torch_cpu"], torch.Tensor) and isinstance(st["rng"]["numpy"]["keys"], torch.Tensor)
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == LOG_FIELDS
    assert [r["step"] for r in rows] == ["2", "4", "5"]
    assert rows[-1]["val_auc_frame"] != "" and rows[0]["val_auc_frame"] == "" and float(rows[0]["lr"]) > 0
    pytest.importorskip("matplotlib")
    assert (out / "curves.png").stat().st_size > 1000


def test_early_stopping_on_a_flat_val_auc(index: Path, tmp_path: Path) -> None:
    config = make_config(index, tmp_path / "es", data={"max_train_items": 8}, epochs=6, early_stopping=1, ema_decay=0.0)
    config = from_dict(TrainConfig, {**to_dict(config), "optim": {"lr": 1e-12}})  # the val AUC cannot improve
    result = train(config, progress=False)
    assert result.stopped_early and result.finished and result.epochs_completed == 2 and result.best_epoch == 1
    assert state(tmp_path / "es")["patience"] == 1
    again = train(config, resume=True, progress=False)  # nothing left to do
    assert again.stopped_early and again.global_step == result.global_step


def test_lr_schedules() -> None:
    cos = ScheduleSection(name="cosine", warmup_epochs=0.5, min_lr_ratio=0.1)
    f = [lr_factor(s, schedule=cos, steps_per_epoch=10, epochs=3) for s in range(30)]
    assert f[0] == pytest.approx(0.2) and f[4] == pytest.approx(1.0) and f[5] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(f[5:], f[6:])) and f[29] == pytest.approx(0.1, abs=0.01)
    step = ScheduleSection(name="step", step_size=2, gamma=0.5)
    g = [lr_factor(s, schedule=step, steps_per_epoch=10, epochs=6) for s in range(0, 60, 10)]
    assert g == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert lr_factor(7, schedule=ScheduleSection(name="constant"), steps_per_epoch=10, epochs=1) == 1.0


# ----------------------------------------------------------------------------------------------------------
# config file and CLI


def write_yaml(path: Path, index_rel: str, extra_train: str = "") -> Path:
    overrides = ", ".join(f"{k}: {v}" for k, v in TINY.items())
    path.write_text(
        f"model:\n  overrides: {{{overrides}}}\n"
        f"data:\n  indexes: [{index_rel}]\n  val_fraction: 0.0\n"
        f"train:\n  epochs: 1\n  batch_size: 4\n{extra_train}"
        f"output_dir: out\n",
        encoding="utf-8",
    )
    return path


def test_unknown_yaml_key_names_key_and_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "bad.yaml", "i.csv", "  batchsize: 8\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'train\.batchsize'"):
        load_train_config(path)
    odd = tmp_path / "odd.yaml"
    odd.write_text("data: {indexes: [i.csv], mode: sbi}\ntrain: {batch_size: 3}\noutput_dir: out\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"odd\.yaml.*batch_size must be even"):
        load_train_config(odd)


def test_cli_train_with_relative_index(index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cevit.cli import train as cli_train

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    rel = Path(*([".."] * len(cfg_dir.resolve().parts[1:]))) / index.resolve().relative_to("/")
    path = write_yaml(cfg_dir / "t.yaml", str(rel))
    assert load_train_config(path).data.indexes == (str(index.resolve()),)
    parser = argparse.ArgumentParser()
    cli_train.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--config", str(path), "--max-steps", "1", "--device", "cpu",
                              "--output-dir", str(tmp_path / "cli_out"), "--no-progress"])  # fmt: skip
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "stopped at max_steps" in text and str(tmp_path / "cli_out" / "last.safetensors") in text
    assert (tmp_path / "cli_out" / "train_state.pt").is_file()


# ----------------------------------------------------------------------------------------------------------
# init from a checkpoint, index repeats


def test_init_from_checkpoint_starts_from_its_weights(index: Path, tmp_path: Path) -> None:
    first = train(make_config(index, tmp_path / "first", epochs=1, ema_decay=0.0), progress=False)
    source = load_checkpoint(first.last_checkpoint).state_dict()
    base = to_dict(make_config(index, tmp_path / "second", max_steps=1, ema_decay=0.0))
    base["model"] = {**base["model"], "init": "checkpoint", "init_checkpoint": first.last_checkpoint}
    config = from_dict(TrainConfig, {**base, "optim": {"lr": 1e-12}})  # one step that cannot move the weights
    train(config, progress=False)
    after = state(tmp_path / "second")["model"]
    params = [k for k in source if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) > 20 and all(torch.allclose(after[k], source[k], atol=1e-6) for k in params)
    prov = load_checkpoint(tmp_path / "second" / "last.safetensors").checkpoint_info.provenance
    assert prov["init"]["method"] == "checkpoint" and prov["init"]["sha256"] == file_sha256(first.last_checkpoint)
    assert prov["init"]["source_steps"] == 5
    # another architecture is refused, naming the checkpoint
    other = {**base, "model": {**base["model"], "overrides": {**TINY, "sm_dim": 48}}, "output_dir": str(tmp_path / "x")}
    with pytest.raises(ConfigError, match="another architecture"):
        train(from_dict(TrainConfig, other), progress=False)
    with pytest.raises(ConfigError, match="init_checkpoint"):
        from_dict(TrainConfig, {**base, "model": {**base["model"], "init_checkpoint": None}})


def test_init_checkpoint_path_is_relative_to_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "run.yaml"
    path.write_text("model: {init: checkpoint, init_checkpoint: ../w/best.safetensors}\n"
                    "data: {indexes: [i.csv]}\noutput_dir: out\n")  # fmt: skip
    config = load_train_config(path)
    assert config.model.init_checkpoint == str((tmp_path / "w" / "best.safetensors").resolve())


def test_index_repeats_weight_training_rows_only(index: Path, tmp_path: Path) -> None:
    from cevit.preprocess import Preprocessing
    from cevit.training.data import prepare_data

    config = make_config(index, tmp_path / "r", data={"val_fraction": 0.1})
    spec = Preprocessing(input_size=64)
    plain = prepare_data(config.data, spec=spec, augment=None, seed=0, batch_size=4)
    rep_cfg = from_dict(TrainConfig, {**to_dict(config), "data": {**to_dict(config)["data"], "index_repeats": [3]}})
    repeated = prepare_data(rep_cfg.data, spec=spec, augment=None, seed=0, batch_size=4)
    assert len(plain.train) >= 12 and len(repeated.train) == 3 * len(plain.train)
    assert repeated.n_val_real + repeated.n_val_fake == plain.n_val_real + plain.n_val_fake >= 4
    with pytest.raises(ConfigError, match="index_repeats"):
        from_dict(TrainConfig, {**to_dict(config), "data": {**to_dict(config)["data"], "index_repeats": [1, 2]}})
    with pytest.raises(ConfigError, match="index_repeats"):
        from_dict(TrainConfig, {**to_dict(config), "data": {**to_dict(config)["data"], "index_repeats": [0]}})


def test_per_source_auc_separates_labelled_sources_from_sbi() -> None:
    from cevit.training.trainer import per_source_auc

    scores = np.array([0.1, 0.9, 0.2, 0.3, 0.8, 0.6, 0.7, 0.4])
    labels = np.array([0, 1, 0, 0, 1, 1, 1, 0])
    sources = ["lfwfs", "lfwfs", "cip", "cip", "cip", "sbi", "sbi", "lfw"]
    out = per_source_auc(scores, labels, sources)
    assert out["lfwfs"] == 1.0 and out["cip"] == 1.0
    # sbi pseudo-fakes (0.6, 0.7) against every real (0.1, 0.2, 0.3, 0.4): all above
    assert out["sbi"] == 1.0 and "lfw" not in out  # a real-only source has no AUC of its own
    flipped = per_source_auc(1 - scores, labels, sources)
    assert flipped["cip"] == 0.0 and flipped["sbi"] == 0.0


# ----------------------------------------------------------------------------------------------------------
# the Trainer class and the optimiser's weight-decay groups


def test_trainer_pieces_and_keyword_only_constructor(index: Path, tmp_path: Path) -> None:
    config = make_config(index, tmp_path / "t", mode="mixed", max_steps=2)
    with pytest.raises(TypeError):
        Trainer(config)  # type: ignore[misc]
    trainer = Trainer(config=config, progress=False)
    assert trainer.steps_per_epoch == len(trainer.data.train) // 4 == 7  # 20 labelled + 10 self-blended items
    assert trainer.loop.global_step == 0 and trainer.ema is not None and trainer.eval_model is trainer.ema.module
    result = trainer.fit()
    assert result.global_step == trainer.loop.global_step == 2 and not result.finished
    saved = state(tmp_path / "t")
    assert set(saved) == set(trainer.state_dict())
    # mixed mode: a labelled source and the self-blended pseudo-fakes, each with its AUC; selection on their mean
    metrics = trainer.validate()
    sources = {k for k in metrics if k.startswith("val_auc_")} - {
        "val_auc_frame",
        "val_auc_group",
        "val_auc_mean_source",
    }
    assert len(sources) == 2 and "val_auc_sbi" in sources
    assert metrics["val_metric"] == metrics["val_auc_mean_source"]
    # one more step by hand continues the counters exactly like the loop does
    x = torch.zeros(4, 3, 64, 64)
    loss = trainer.step(x, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert math.isfinite(loss) and trainer.loop.global_step == 3 and trainer.loop.step_in_epoch == 3


def _reference_groups(model: torch.nn.Module, no_decay_bias_norm: bool) -> tuple[list[str], list[str]]:
    """The rule the trainer used before ``no_weight_decay()`` moved onto the model (names hard-coded)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if no_decay_bias_norm and (p.ndim <= 1 or name.endswith(("pos_embedding", "cls_token"))):
            no_decay.append(name)
        else:
            decay.append(name)
    return decay, no_decay


@pytest.mark.parametrize("name", ["adamw", "sgd"])
@pytest.mark.parametrize("no_decay_bias_norm", [True, False])
def test_optimizer_groups_come_from_the_model_and_match_the_old_rule(name: str, no_decay_bias_norm: bool) -> None:
    from cevit.models import DEFAULT_PRESET, create_model
    from cevit.training.config import OptimSection

    model = create_model(DEFAULT_PRESET, **TINY)
    assert model.no_weight_decay() == {
        f"{b}_image_embedder.{p}" for b in ("sm", "lg") for p in ("pos_embedding", "cls_token")
    }
    assert model.no_weight_decay() <= dict(model.named_parameters()).keys()
    cfg = OptimSection(name=name, weight_decay=0.05, no_decay_bias_norm=no_decay_bias_norm)
    optimizer = _build_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [([names[id(p)] for p in g["params"]], g["weight_decay"]) for g in optimizer.param_groups]
    decay, no_decay = _reference_groups(model, no_decay_bias_norm)
    expected = [(decay, 0.05)] + ([(no_decay, 0.0)] if no_decay else [])
    assert groups == expected  # same groups, same parameter order (the optimiser state's indices depend on it)
    assert isinstance(optimizer, torch.optim.SGD if name == "sgd" else torch.optim.AdamW)
