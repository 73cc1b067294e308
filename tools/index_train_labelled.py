"""Give the face index of ``shared/data/train_labelled`` its real groups, splits and sources.

    cevit extract-faces ../shared/data/train_labelled --output data/labelled_faces --workers 2
    python tools/index_train_labelled.py data/labelled_faces/index.csv ../shared/data/train_labelled/MANIFEST.tsv \
        --output data/labelled_faces/index_sources.csv

Why: the pack's files are named ``<tag>__real_N.jpg`` / ``<tag>__fake_N.jpg``, so ``extract-faces``' generic
layout (group = the file stem without its counter) puts every real of a source into one group and every fake
into another; a group split then sends a whole class of a source to one side. This rewrites, per row:

* ``group`` = the pack file's stem (one image, one group: the pack has no identities; ``fake_N`` and ``real_N``
  are unrelated photos);
* ``split`` from the manifest's ``split_in_repo``: the source repository's ``train`` split → ``train``, its
  ``val`` and ``test`` splits → ``val`` (for CIPLAB, ``sf/all/<split>``), so validation never sees a
  training photo of the pack;
* ``dataset`` = the source tag (``lfwfs``: FaceSwap swaps between LFW photos with LFW reals; ``cip``: CIPLAB
  Photoshop face-part swaps with CIPLAB reals): the trainer reports validation AUC per ``dataset``;
* ``method`` = ``original`` for reals, ``faceswap`` / ``photoshop`` for fakes.

Besides ``--output`` (all rows), it writes ``index_<tag>.csv`` per source next to it, so a training config can
weight the sources (``data.index_repeats``) or cap them (``data.index_max_items``) one by one.

Rows whose source file is not in the manifest are an error (the index and the manifest must match).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

METHODS = {"lfwfs": "faceswap", "cip": "photoshop"}


def repo_split(value: str) -> str:
    """``train`` → ``train``; ``val`` / ``test`` (optionally after a ``sf/all/`` prefix) → ``val``."""
    last = value.strip().rsplit("/", 1)[-1].lower()
    if last == "train":
        return "train"
    if last in ("val", "test"):
        return "val"
    raise ValueError(f"unknown split_in_repo value {value!r}")


def read_manifest(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}


def rewrite(index: Path, manifest: Path, output: Path) -> dict[tuple[str, str, str], int]:
    """Write the rewritten index; returns counts per (dataset, split, label)."""
    entries = read_manifest(manifest)
    counts: dict[tuple[str, str, str], int] = {}
    with open(index, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    for row in rows:
        source = row["source"].replace("\\", "/")
        entry = entries.get(source)
        if entry is None:
            raise SystemExit(f"{index}: row source {source!r} is not in {manifest}")
        stem = Path(source).stem
        tag = stem.split("__", 1)[0]
        if tag not in METHODS:
            raise SystemExit(f"{manifest}: unknown source tag {tag!r} in {source!r}")
        row["group"] = stem
        row["split"] = repo_split(entry["split_in_repo"])
        row["dataset"] = tag
        row["method"] = "original" if row["label"] == "real" else METHODS[tag]
        key = (tag, row["split"], row["label"])
        counts[key] = counts.get(key, 0) + 1
    _write(output, fields, rows)
    for tag in sorted({r["dataset"] for r in rows}):
        _write(output.with_name(f"index_{tag}.csv"), fields, [r for r in rows if r["dataset"] == tag])
    return counts


def _write(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="index.csv written by cevit extract-faces for the pack")
    parser.add_argument("manifest", type=Path, help="the pack's MANIFEST.tsv")
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        required=True,
        help="the rewritten index (crop paths stay valid when it sits in the same folder as the input index)",
    )
    args = parser.parse_args(argv)
    if args.output.resolve().parent != args.index.resolve().parent:
        parser.error("--output must be in the same folder as the input index (crop paths are relative to it)")
    counts = rewrite(args.index, args.manifest, args.output)
    for (tag, split, label), n in sorted(counts.items()):
        print(f"{tag:6s} {split:5s} {label:4s} {n:6d}")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
