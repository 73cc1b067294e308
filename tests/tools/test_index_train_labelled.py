"""tools/index_train_labelled.py: groups, splits and sources of the labelled pack's face index."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from cevit.data import INDEX_COLUMNS, read_index
from cevit.training.data import split_rows

TOOL = Path(__file__).resolve().parents[2] / "tools" / "index_train_labelled.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("index_train_labelled", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(folder: Path) -> tuple[Path, Path]:
    files = [("real/lfwfs__real_1.jpg", "train"), ("fake/lfwfs__fake_1.jpg", "train"), ("real/lfwfs__real_2.jpg", "test"),
             ("fake/lfwfs__fake_2.jpg", "val"), ("real/cip__real_00003.jpg", "sf/all/train"),
             ("fake/cip__easy_4_0011.jpg", "sf/all/val")]  # fmt: skip
    folder.mkdir(parents=True)
    with open(folder / "MANIFEST.tsv", "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["file", "label", "split_in_repo"])
        w.writerows([(f, f.split("/")[0].upper(), s) for f, s in files])
    with open(folder / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
        w.writeheader()
        for f, _ in files:
            stem = Path(f).stem
            w.writerow({"crop_path": f"crops/{stem}.png", "source": f, "x1": 1, "y1": 1, "x2": 50, "y2": 50,
                        "label": f.split("/")[0], "dataset": "generic", "group": stem.rsplit("_", 1)[0]})  # fmt: skip
    return folder / "index.csv", folder / "MANIFEST.tsv"


def test_rewrites_groups_splits_and_sources(tmp_path: Path) -> None:
    index, manifest = write(tmp_path / "pack")
    assert load_tool().main([str(index), str(manifest), "-o", str(tmp_path / "pack" / "index_sources.csv")]) == 0
    rows = read_index(tmp_path / "pack" / "index_sources.csv")
    assert len({r.group for r in rows}) == len(rows)  # one image, one group (not one group per class)
    by_stem = {Path(r.source).stem: r for r in rows}
    assert by_stem["lfwfs__real_2"].split == "val" and by_stem["lfwfs__fake_1"].split == "train"
    assert by_stem["cip__easy_4_0011"].split == "val" and by_stem["cip__easy_4_0011"].method == "photoshop"
    assert {r.dataset for r in rows} == {"lfwfs", "cip"} and by_stem["cip__real_00003"].method == "original"
    train, val = split_rows(rows, val_fraction=0.0)
    assert len(train) == 3 and len(val) == 3
    per_source = read_index(tmp_path / "pack" / "index_cip.csv")
    assert [Path(r.source).stem for r in per_source] == ["cip__real_00003", "cip__easy_4_0011"]


def test_unknown_source_and_bad_output_folder(tmp_path: Path) -> None:
    index, manifest = write(tmp_path / "pack")
    text = manifest.read_text().splitlines()
    manifest.write_text("\n".join(text[:-1]) + "\n")
    tool = load_tool()
    with pytest.raises(SystemExit, match="not in"):
        tool.main([str(index), str(manifest), "-o", str(tmp_path / "pack" / "out.csv")])
    with pytest.raises(SystemExit):
        tool.main([str(index), str(manifest), "-o", str(tmp_path / "elsewhere.csv")])
