"""Tests of cevit.training.data: index parsing, group split, datasets, determinism, bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cevit.data import INDEX_COLUMNS, FaceRow, read_index
from cevit.data import write_index as write_index_rows
from cevit.errors import ConfigError
from cevit.preprocess import Preprocessing
from cevit.training.config import AugmentSection, DataSection
from cevit.training.data import (
    EpochBatchSampler,
    LabelledFaceDataset,
    SBIFaceDataset,
    collate_sbi_pairs,
    prepare_data,
    split_rows,
)

BOX = (18.0, 18.0, 78.0, 78.0)
LMS = [(36.0, 40.0), (60.0, 40.0), (48.0, 52.0), (38.0, 64.0), (58.0, 64.0)]
SPEC = Preprocessing(input_size=48, crop_margin=0.2)


def face_crop(seed: int, fake: bool, size: int = 96) -> np.ndarray:
    """A synthetic saved crop: noisy background, skin ellipse, eye/nose/mouth blobs; fakes are blurred."""
    rng = np.random.default_rng(seed)
    img = rng.integers(30, 90, size=(size, size, 3), dtype=np.uint8)
    cv2.ellipse(img, (48, 50), (26, 32), 0, 0, 360, (int(rng.integers(180, 230)), 160, 130), thickness=-1)
    for x, y in LMS[:2]:
        cv2.circle(img, (int(x), int(y)), 4, (40, 30, 25), thickness=-1)
    cv2.circle(img, (48, 52), 3, (170, 120, 100), thickness=-1)
    cv2.line(img, (38, 64), (58, 64), (120, 40, 50), thickness=3)
    if fake:
        img[30:70, 28:68] = cv2.GaussianBlur(img[30:70, 28:68], (5, 5), 1.5)
    return img


def write_index(folder: Path, *, groups: int = 6, frames: int = 2, fakes: bool = True, split=None,
                landmarks: bool = True) -> Path:  # fmt: skip
    """Crops + index: per group ``frames`` real crops and (optionally) ``frames`` fake crops (own group)."""
    (folder / "crops").mkdir(parents=True, exist_ok=True)
    rows = []
    for g in range(groups):
        for label in ("real", "fake") if fakes else ("real",):
            for f in range(frames):
                rel = f"crops/g{g}_{label}_{f}.png"
                cv2.imwrite(str(folder / rel), cv2.cvtColor(face_crop(100 * g + f, label == "fake"), cv2.COLOR_RGB2BGR))
                grp = f"vid{g}" if label == "real" else f"vid{g}_fake"
                lm = [v for p in LMS for v in p] if landmarks else [""] * 10
                rows.append([rel, f"videos/{grp}.mp4", f, f * 0.5, 0, *BOX, *lm, 0.99, label,
                             split(g) if split else "", "original" if label == "real" else "x", "generic", grp])  # fmt: skip
    path = folder / "index.csv"
    # rows leave the trailing optional columns (the valid region) out: written empty
    write_index_rows(path, (dict(zip(INDEX_COLUMNS, r)) for r in rows))  # noqa: B905
    return path


def row(group: str, *, split: str = "", label: int = 0) -> FaceRow:
    return FaceRow(crop_path=f"/x/{group}.png", source="", frame_index=0, timestamp=None, face_index=0, box=BOX,
                   landmarks=None, det_prob=1.0, label=label, split=split, method="", dataset="", group=group,
                   index_path="i.csv", line=2)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# reading


def test_read_index_types_and_paths(tmp_path: Path) -> None:
    path = write_index(tmp_path / "d", groups=2, frames=1)
    rows = read_index(path)
    assert len(rows) == 4
    r = rows[0]
    assert Path(r.crop_path).is_absolute() and Path(r.crop_path).is_file()
    assert r.box == BOX and r.landmarks == tuple(LMS) and r.label == 0 and r.group == "vid0"
    assert rows[1].label == 1 and rows[1].group == "vid0_fake" and r.timestamp == 0.0 and r.frame_index == 0
    assert r.landmarks_array.shape == (5, 2)


def test_read_index_errors_name_file_and_line(tmp_path: Path) -> None:
    path = write_index(tmp_path / "d", groups=1, frames=1)
    text = path.read_text().replace(",real,", ",maybe,")
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"index\.csv:2: label"):
        read_index(path)
    bad = tmp_path / "bad.csv"
    bad.write_text("crop_path,label\na.png,real\n")
    with pytest.raises(ConfigError, match=r"bad\.csv: not a face index: missing column\(s\) x1"):
        read_index(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        read_index(tmp_path / "absent.csv")


# ----------------------------------------------------------------------------------------------------------
# split


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("seed", [0, 7])
def test_group_split_never_shares_a_group(fraction: float, seed: int) -> None:
    rows = [row(f"g{g}", label=f % 2) for g in range(200) for f in range(4)]
    train, val = split_rows(rows, val_fraction=fraction, seed=seed)
    assert len(train) + len(val) == len(rows)
    assert not {r.group for r in train} & {r.group for r in val}
    assert abs(len({r.group for r in val}) / 200 - fraction) < 0.1
    # stable: adding groups does not move existing ones
    more = rows + [row(f"new{g}") for g in range(50)]
    _, val2 = split_rows(more, val_fraction=fraction, seed=seed)
    assert {r.group for r in val} == {r.group for r in val2 if not r.group.startswith("new")}


def test_split_column_wins_and_takes_the_group_along() -> None:
    rows = [row("a", split="val"), row("a"), row("b", split="train"), row("b"), row("c", split="test"), row("d")]
    train, val = split_rows(rows, val_fraction=0.0)
    assert [r.group for r in val] == ["a", "a"]
    assert {r.group for r in train} == {"b", "d"}  # test rows are left out
    with pytest.raises(ConfigError, match="group 'a'"):
        split_rows([row("a", split="train"), row("a", split="val")], val_fraction=0.1)


def test_split_always_validates_something_when_asked() -> None:
    rows = [row(f"g{g}") for g in range(3)]
    train, val = split_rows(rows, val_fraction=0.01, seed=0)
    assert len(val) == 1 and len(train) == 2


# ----------------------------------------------------------------------------------------------------------
# datasets


def test_labelled_dataset_items_deterministic_and_order_independent(tmp_path: Path) -> None:
    rows = read_index(write_index(tmp_path / "d", groups=2, frames=2))
    ds = LabelledFaceDataset(rows, spec=SPEC, augment=AugmentSection(), seed=3)
    x, y, i = ds[(1, 2)]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and i == 2 and float(y) == rows[2].label
    ds2 = LabelledFaceDataset(rows, spec=SPEC, augment=AugmentSection(), seed=3)
    _ = ds2[(5, 0)], ds2[(1, 3)]  # other requests first: no influence
    assert torch.equal(ds2[(1, 2)][0], x)
    assert not torch.equal(ds[(2, 2)][0], x)  # another epoch, other augmentation
    # validation items: no augmentation, the contract only
    plain = LabelledFaceDataset(rows, spec=SPEC)
    from cevit.preprocess import preprocess_faces

    img = cv2.cvtColor(cv2.imread(rows[0].crop_path), cv2.COLOR_BGR2RGB)
    assert torch.equal(plain[0][0], preprocess_faces([img], [rows[0].box], SPEC)[0])


def test_sbi_dataset_pairs(tmp_path: Path) -> None:
    rows = read_index(write_index(tmp_path / "d", groups=3, frames=1))
    ds = SBIFaceDataset(rows, spec=SPEC, augment=AugmentSection(), seed=0)
    assert len(ds) == 3  # fakes are ignored
    real, fake, i = ds[(0, 1)]
    assert real.shape == fake.shape == (3, 48, 48) and i == 1
    assert not torch.equal(real, fake)
    r2, f2, _ = ds[(0, 1)]
    assert torch.equal(real, r2) and torch.equal(fake, f2)
    x, y, idx = collate_sbi_pairs([ds[(0, 0)], ds[(0, 2)]])
    assert x.shape == (4, 3, 48, 48) and y.tolist() == [0.0, 0.0, 1.0, 1.0] and idx.tolist() == [0, 2, 0, 2]


def test_mixed_dataset_adds_pseudo_fakes_with_own_groups(tmp_path: Path) -> None:
    rows = read_index(write_index(tmp_path / "d", groups=2, frames=1))
    ds = LabelledFaceDataset(rows, spec=SPEC, sbi_from_reals=True, seed=0)
    assert len(ds) == 4 + 2
    assert ds.labels.tolist() == [0, 1, 0, 1, 1, 1]
    assert ds.groups[4:] == ["vid0#sbi", "vid1#sbi"]
    x, y, _ = ds[4]
    assert float(y) == 1.0 and not torch.equal(x, ds[0][0])


def test_missing_crop_is_skipped_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = read_index(write_index(tmp_path / "d", groups=2, frames=1))
    Path(rows[1].crop_path).unlink()
    Path(rows[2].crop_path).write_bytes(b"not an image")
    ds = LabelledFaceDataset(rows, spec=SPEC, seed=0)
    with caplog.at_level(logging.WARNING, logger="cevit.training.data"):
        x, y, j = ds[1]
        assert j == 3  # fell back over the two bad files to the next good item
        assert torch.equal(x, ds[3][0])
        ds[1], ds[2]
    warnings = [r for r in caplog.records if "skipping face crop" in r.getMessage()]
    assert len(warnings) == 2
    assert any(rows[1].crop_path in r.getMessage() for r in warnings)


def test_loader_batches_do_not_depend_on_worker_count(tmp_path: Path) -> None:
    rows = read_index(write_index(tmp_path / "d", groups=3, frames=2))
    ds = LabelledFaceDataset(rows, spec=SPEC, augment=AugmentSection(), seed=1)
    sampler = EpochBatchSampler(len(ds), 4, seed=1, epoch=2, steps=3)
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers)
        batches.append([b[0] for b in loader])
    assert len(batches[0]) == 3
    assert all(torch.equal(a, b) for a, b in zip(*batches))


def test_epoch_batch_sampler_order_and_resume() -> None:
    full = list(EpochBatchSampler(10, 3, seed=5, epoch=1, steps=3))
    perm = np.random.default_rng([5, 1]).permutation(10)
    assert [i for b in full for _, i in b] == perm[:9].tolist()
    assert all(e == 1 for b in full for e, _ in b)
    assert list(EpochBatchSampler(10, 3, seed=5, epoch=1, steps=3, start_step=2)) == full[2:]
    assert list(EpochBatchSampler(10, 3, seed=5, epoch=2, steps=3)) != full


def test_prepare_data_counts_and_modes(tmp_path: Path) -> None:
    index = str(write_index(tmp_path / "d", groups=6, frames=2, split=lambda g: "val" if g < 2 else ""))
    labelled = prepare_data(
        DataSection(indexes=(index,), val_fraction=0.0), spec=SPEC, augment=None, seed=0, batch_size=4
    )
    assert labelled.n_train_real == labelled.n_train_fake == 8 and labelled.items_per_batch == 4
    assert labelled.val is not None and labelled.n_val_real == labelled.n_val_fake == 4 and labelled.n_val_groups == 4
    assert len(labelled.indexes[0]["sha256"]) == 64
    sbi = prepare_data(DataSection(indexes=(index,), mode="sbi", val_fraction=0.0), spec=SPEC, augment=None, seed=0,
                       batch_size=4)  # fmt: skip
    assert isinstance(sbi.train, SBIFaceDataset) and len(sbi.train) == 8 and sbi.items_per_batch == 2
    assert sbi.n_val_real == 4 and sbi.n_val_fake == 4  # validation: val reals + their pseudo-fakes
    mixed = prepare_data(DataSection(indexes=(index,), mode="mixed", val_fraction=0.0), spec=SPEC, augment=None, seed=0,
                         batch_size=4)  # fmt: skip
    assert mixed.n_train_real == 8 and mixed.n_train_fake == 16
    capped = prepare_data(DataSection(indexes=(index,), max_train_items=5, val_fraction=0.0), spec=SPEC, augment=None,
                          seed=0, batch_size=4)  # fmt: skip
    assert len(capped.train) == 5
    no_fakes = str(write_index(tmp_path / "r", groups=4, fakes=False))
    with pytest.raises(ConfigError, match="labelled mode needs fake rows"):
        prepare_data(DataSection(indexes=(no_fakes,)), spec=SPEC, augment=None, seed=0, batch_size=2)
    with pytest.raises(ConfigError, match="fewer than one batch"):
        prepare_data(DataSection(indexes=(index,)), spec=SPEC, augment=None, seed=0, batch_size=64)


def test_filter_rows_by_face_index_size_and_probability():
    from cevit.training.data import filter_rows

    def row(face_index, side, prob):
        return FaceRow(crop_path="x.png", source="s", frame_index=0, timestamp=None, face_index=face_index,
                       box=(10.0, 10.0, 10.0 + side, 10.0 + side), landmarks=None, det_prob=prob, label=0, split="",
                       method="", dataset="d", group="g", index_path="i.csv", line=2)  # fmt: skip

    rows = [row(0, 100, 0.99), row(1, 100, 0.99), row(0, 30, 0.99), row(0, 100, 0.8)]
    assert filter_rows(rows) == rows
    assert filter_rows(rows, max_face_index=0) == [rows[0], rows[2], rows[3]]
    assert filter_rows(rows, min_face_size=60) == [rows[0], rows[1], rows[3]]
    assert filter_rows(rows, min_det_prob=0.9, max_face_index=0, min_face_size=60) == [rows[0]]


# ----------------------------------------------------------------------------------------------------------
# per-index caps, sources, file-size check


def test_cap_per_index_caps_named_indexes_only_and_is_stable() -> None:
    from cevit.training.data import cap_per_index

    rows = [FaceRow(**{**row(f"a{i}").__dict__, "index_path": "a.csv"}) for i in range(10)]
    rows += [FaceRow(**{**row(f"b{i}").__dict__, "index_path": "b.csv"}) for i in range(4)]
    capped = cap_per_index(rows, {"a.csv": 3, "b.csv": None}, seed=0)
    assert sum(r.index_path == "a.csv" for r in capped) == 3 and sum(r.index_path == "b.csv" for r in capped) == 4
    assert capped == [r for r in rows if r in capped]  # order kept
    assert cap_per_index(rows, {"a.csv": 3}, seed=0) == capped  # same seed, same subset
    assert cap_per_index(rows, {"a.csv": 3}, seed=1) != capped
    assert cap_per_index(rows, {"a.csv": 50}, seed=0) == rows


def test_index_max_items_in_config_and_prepare_data(tmp_path: Path) -> None:
    a = str(write_index(tmp_path / "a", groups=6, frames=2))
    b = str(write_index(tmp_path / "b", groups=2, frames=2))
    data = prepare_data(DataSection(indexes=(a, b), index_max_items=(3, None), val_fraction=0.0), spec=SPEC,
                        augment=None, seed=0, batch_size=2)  # fmt: skip
    assert len(data.train) == 3 + 8
    with pytest.raises(ConfigError, match="index_max_items"):
        DataSection(indexes=(a, b), index_max_items=(3,))
    with pytest.raises(ConfigError, match="index_max_items"):
        DataSection(indexes=(a,), index_max_items=(0,))


def test_sources_of_items_and_file_size_check(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from cevit.training.data import file_size_auc, log_file_size_check, row_source

    index = write_index(tmp_path / "pack", groups=4, frames=2)
    rows = read_index(index)
    assert {row_source(r) for r in rows} == {"pack"}  # dataset "generic" -> the index's folder
    assert row_source(FaceRow(**{**rows[0].__dict__, "dataset": "lfwfs"})) == "lfwfs"
    ds = LabelledFaceDataset(rows, spec=SPEC, sbi_from_reals=True)
    assert ds.sources.count("sbi") == 8 and ds.sources.count("pack") == 16
    # fakes of the synthetic set are blurred: their PNG crops differ in size, a shortcut the check must flag
    aucs = file_size_auc(rows)
    assert set(aucs) == {"pack", "all"} and max(aucs["pack"], 1 - aucs["pack"]) > 0.9
    with caplog.at_level(logging.INFO, logger="cevit"):
        log_file_size_check(rows)
    assert "file size alone separates real from fake in 'pack'" in caplog.text
    caplog.clear()
    reals = [r for r in rows if r.label == 0]
    with caplog.at_level(logging.INFO, logger="cevit"):
        assert log_file_size_check(reals) == {}  # one class: nothing to separate
    assert "separates" not in caplog.text


@pytest.mark.parametrize("border", ["clip", "pad"])
def test_saved_crop_at_the_frame_edge_trains_on_what_inference_sees(tmp_path: Path, border: str) -> None:
    """extract-faces' saved crop + its valid region, read back by the training dataset, gives exactly the tensor
    inference makes from the full frame, also for a face at the frame's edge (where the saved crop is padded)."""
    import dataclasses

    from cevit.data import save_face_crop, write_index
    from cevit.preprocess import FacePreprocessor

    frame = np.random.default_rng(0).integers(1, 255, size=(100, 120, 3), dtype=np.uint8)
    box = (2.0, 10.0, 50.0, 62.0)  # near the left edge: the contract's square leaves the frame
    spec = Preprocessing(input_size=32, crop_margin=0.2, crop_border=border)
    expected = FacePreprocessor(spec=spec)([frame], [box])[0]

    saved = save_face_crop(frame, box, [], margin=0.6, max_size=1000)  # no downscaling: pixel-exact
    assert saved.valid[0] > 0  # the saved crop is padded on the left
    cv2.imwrite(str(tmp_path / "f.png"), saved.image[:, :, ::-1])
    row = {"crop_path": "f.png", "source": "v.mp4", "label": "real", "x1": saved.box[0], "y1": saved.box[1],
           "x2": saved.box[2], "y2": saved.box[3], "vx1": saved.valid[0], "vy1": saved.valid[1],
           "vx2": saved.valid[2], "vy2": saved.valid[3]}  # fmt: skip
    write_index(tmp_path / "index.csv", [row])
    (face_row,) = read_index(tmp_path / "index.csv")
    x, _, _ = LabelledFaceDataset([face_row], spec=spec)[0]
    assert torch.equal(x, expected)
    # without the valid region (indexes written before it existed) clip keeps the padding as black bands
    old_x, _, _ = LabelledFaceDataset([dataclasses.replace(face_row, valid=None)], spec=spec)[0]
    assert torch.equal(old_x, expected) == (border == "pad")
