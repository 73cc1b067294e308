from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cevit.checkpoint import file_sha256, load_checkpoint, read_checkpoint_info, save_checkpoint
from cevit.errors import CheckpointError
from cevit.models import create_model


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return create_model("cross_efficient_vit_v1", image_size=64, depth=1).eval()


def test_save_load_roundtrip_identical_outputs(small_model, tmp_path):
    path = tmp_path / "m.safetensors"
    digest = save_checkpoint(small_model, path, data="unit test", metrics={"auc": 0.5})
    assert digest == file_sha256(path) and len(digest) == 64
    loaded = load_checkpoint(path)
    assert not loaded.training
    assert loaded.config == small_model.config and loaded.preprocessing == small_model.preprocessing
    assert loaded.preset_name == "cross_efficient_vit_v1"  # a custom config keeps the name it was made from
    info = loaded.checkpoint_info
    assert info.sha256 == digest and info.provenance == {"data": "unit test", "metrics": {"auc": 0.5}}
    assert info.created and info.created.endswith("+00:00")
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), small_model(x), rtol=0, atol=0)


def test_half_storage_is_smaller_and_close(small_model, tmp_path):
    full, half = tmp_path / "f.safetensors", tmp_path / "h.safetensors"
    save_checkpoint(small_model, full)
    save_checkpoint(small_model, half, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_checkpoint(half)
    assert read_checkpoint_info(half).dtype == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert (loaded(x) - small_model(x)).abs().max() < 1e-2


def test_mixed_storage_keeps_named_tensors_exact(small_model, tmp_path):
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    floats = [k for k, v in small_model.state_dict().items() if v.is_floating_point()]
    keep = floats[:5]
    save_checkpoint(small_model, path, half=True, keep_fp32=keep)
    assert read_checkpoint_info(path).dtype == "mixed"
    with safe_open(str(path), framework="pt") as fh:
        stored = {k: fh.get_tensor(k).dtype for k in fh.keys()}
    assert {k for k in floats if stored[k] == torch.float32} == set(keep)
    assert all(stored[k] == torch.float16 for k in floats[5:])
    loaded = load_checkpoint(path).state_dict()
    for k in keep:
        assert torch.equal(loaded[k], small_model.state_dict()[k])
    with pytest.raises(CheckpointError, match="does not have"):
        save_checkpoint(small_model, path, half=True, keep_fp32=["no.such.tensor"])
    with pytest.raises(CheckpointError, match="half=True"):
        save_checkpoint(small_model, path, keep_fp32=keep)


def test_wrong_keys_are_named(small_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(small_model, path)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    state = load_file(str(path))
    state.pop("sm_mlp_head.1.bias")
    state["extra.weight"] = torch.zeros(2)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=meta)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    msg = str(exc.value)
    assert str(bad) in msg and "missing key(s): sm_mlp_head.1.bias" in msg and "unexpected key(s): extra.weight" in msg


def test_wrong_shape_is_named(small_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(small_model, path)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    state = load_file(str(path))
    state["sm_mlp_head.1.bias"] = torch.zeros(3)
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"sm_mlp_head\.1\.bias \(3,\) != \(1,\)"):
        load_checkpoint(path)


def test_truncated_file(small_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(small_model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(plain))
    with pytest.raises(CheckpointError, match="not a cevit checkpoint"):
        load_checkpoint(plain)
    text = tmp_path / "text.safetensors"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(text)


def test_bad_metadata_config(small_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(small_model, path)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    cfg = json.loads(meta["config"])
    cfg["surprise"] = 1
    meta["config"] = json.dumps(cfg)
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="unknown key"):
        load_checkpoint(path)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/cevit_pwned_marker",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    import os

    from cevit.convert import load_original_checkpoint

    marker = "/tmp/cevit_pwned_marker"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"x": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_original_checkpoint(path)
    # also through torch's zip format
    path2 = tmp_path / "evil2.pth"
    torch.save({"x": _Evil()}, path2)
    with pytest.raises(CheckpointError):
        load_original_checkpoint(path2)
    assert not os.path.exists(marker)


# -- hostile or broken files (issue 15): always a CheckpointError naming the file ----------------------------


def test_broken_safetensors_files_are_checkpoint_errors(small_model, tmp_path):
    cases = {
        "empty.safetensors": b"",
        "five.safetensors": b"abcde",
        "text.safetensors": b"hello, I am not a checkpoint\n",
        "huge_header.safetensors": (2**40).to_bytes(8, "little") + b"{}",
        "bad_json.safetensors": (6).to_bytes(8, "little") + b"{nope}",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value), name
    with pytest.raises(CheckpointError, match="empty checkpoint file"):
        load_checkpoint(tmp_path / "empty.safetensors")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_metadata_of_the_wrong_shape_is_a_checkpoint_error(small_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(small_model, path)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as fh:
        good = dict(fh.metadata())
    tensors = load_file(str(path))
    for key, value in (("config", "[1, 2]"), ("preprocessing", "null"), ("config", '{"image_size": "big"}')):
        save_file(tensors, str(path), metadata={**good, key: value})
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value), (key, value)


def test_provenance_never_stores_absolute_paths(small_model, tmp_path, monkeypatch):
    from cevit.checkpoint import portable_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    path = tmp_path / "m.safetensors"
    save_checkpoint(small_model, path, data={"indexes": [{"path": str(tmp_path / "data" / "index.csv")}]},
                    init={"checkpoint": "/home/someone/runs/stage2/best.safetensors"}, note="a / b, not a path")  # fmt: skip
    prov = read_checkpoint_info(path).provenance
    assert prov["data"]["indexes"][0]["path"] == "data/index.csv"
    assert prov["init"]["checkpoint"] == ".../stage2/best.safetensors" and prov["note"] == "a / b, not a path"
    assert "/home/" not in json.dumps(prov) and str(tmp_path) not in json.dumps(prov)
    assert portable_paths({"k": [1, None, "rel/x"]}) == {"k": [1, None, "rel/x"]}


def test_unwritable_output_is_a_checkpoint_error(small_model, tmp_path):
    (tmp_path / "file").write_text("in the way")
    for bad in (tmp_path / "file" / "out.safetensors", Path("/proc/cevit-test/out.safetensors"), Path("/proc/x.st")):
        with pytest.raises(CheckpointError, match="cannot write checkpoint"):
            save_checkpoint(small_model, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_metadata_asking_for_a_huge_model_is_refused_before_building_it(small_model, tmp_path):
    """A few bytes of metadata must not make cevit allocate a model of any size: the described model is compared
    with the file's tensors (built on the meta device) before it is built for real."""
    import resource

    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    save_checkpoint(small_model, path)
    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    cfg = json.loads(meta["config"])
    cfg["sm_dim"] = cfg["sm_enc_mlp_dim"] = 30_000  # about 1.9e9 parameters: 7 GB if it were built
    meta["config"] = json.dumps(cfg)
    hostile = tmp_path / "huge.safetensors"
    save_file({"w": torch.zeros(2)}, str(hostile), metadata=meta)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(CheckpointError, match=r"huge\.safetensors: weights do not match the model"):
        load_checkpoint(hostile)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 512 * 1024


def test_the_meta_device_check_is_skipped_only_for_registered_files(tmp_path, monkeypatch):
    """The bundled weights (SHA-256 registered) load without the meta-device model check; any other file gets it."""
    import cevit.checkpoint as checkpoint_module
    from cevit.models.pretrained import DEFAULT_WEIGHTS, get_pretrained

    calls = []
    monkeypatch.setattr(checkpoint_module, "_check_model_matches_tensors", lambda path, info: calls.append(path))
    bundled = Path(checkpoint_module.__file__).parent / "weights" / get_pretrained(DEFAULT_WEIGHTS).file
    if not bundled.exists():
        pytest.skip("the bundled weights file is not in this checkout")
    load_checkpoint(bundled)
    assert calls == []
    other = tmp_path / "other.safetensors"
    save_checkpoint(create_model("cross_efficient_vit_v1", image_size=96, depth=1), other)
    load_checkpoint(other)
    assert calls == [other]
