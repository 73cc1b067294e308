"""Dataset layouts understood by ``cevit extract-faces``: which media files a dataset has, and their labels.

Each layout yields :class:`MediaItem` rows: path, label (``real``/``fake``), split (``train``/``val``/``test``
or empty), manipulation method (``original`` for reals), dataset name, and a **group** key that keeps related
media on one side of a train/validation split (never split by frame):

* ``generic`` — ``real/`` and ``fake/`` folders (searched recursively; the first sub-folder under ``fake/``
  names the method), or a flat folder whose label is given (``label="real"``, e.g. LFW). Group: a video's
  stem; for images the stem without a trailing ``_0001``-style counter (LFW's ``Name_0001.jpg`` → the person).
* ``dfdc`` — ``dfdc_train_part_*/metadata.json`` (``{"x.mp4": {"label": "FAKE", "split": ..., "original":
  "y.mp4"}}``). Group: the original video's stem (a fake and its source share a group).
* ``ff++`` — ``original_sequences/youtube/<quality>/videos`` and ``manipulated_sequences/<method>/<quality>/
  videos``; the official ``splits/{train,val,test}.json`` pairs give the split when present. Group: the
  pair ``"a_b"`` (sorted ids) so a target, its source and both fakes stay together; an original outside the
  split files is its own group.
* ``celebdf`` — ``Celeb-real``, ``YouTube-real``, ``Celeb-synthesis`` and ``List_of_testing_videos.txt``
  (``<1 = real | 0 = fake> <path>``) for the test split. Group: the target identity (``id0`` of
  ``id0_id1_0000.mp4``); YouTube-real videos are their own groups.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cevit.errors import ConfigError

__all__ = ["MediaItem", "LAYOUTS", "detect_layout", "discover"]

LAYOUTS = ("generic", "dfdc", "ff++", "celebdf")
_COUNTER = re.compile(r"_\d+$")


@dataclass(frozen=True, kw_only=True)
class MediaItem:
    path: Path
    rel: str  # path relative to the dataset root (POSIX)
    label: Literal["real", "fake"]
    split: str = ""
    method: str = ""
    dataset: str = "generic"
    group: str = ""


def _media(folder: Path) -> list[Path]:
    from cevit.media import iter_media_files

    return iter_media_files([str(folder)]) if folder.is_dir() else []


def detect_layout(root: Path) -> str:
    if any(root.glob("dfdc_train_part_*/metadata.json")):
        return "dfdc"
    if (root / "original_sequences").is_dir() or (root / "manipulated_sequences").is_dir():
        return "ff++"
    if (root / "Celeb-synthesis").is_dir() or (root / "Celeb-real").is_dir():
        return "celebdf"
    return "generic"


def _generic(root: Path, label: str | None) -> Iterator[MediaItem]:
    from cevit.media import VIDEO_EXTENSIONS

    sub = [(root / "real", "real"), (root / "fake", "fake")]
    if not any(p.is_dir() for p, _ in sub):
        if label not in ("real", "fake"):
            raise ConfigError(f"{root}: no real/ or fake/ folder; pass a label for a flat folder (--label real|fake)")
        sub = [(root, label)]
    for folder, lab in sub:
        for path in _media(folder):
            rel_in = path.relative_to(folder)
            method = "original" if lab == "real" else (rel_in.parts[0] if len(rel_in.parts) > 1 else "")
            stem = path.stem if path.suffix.lower() in VIDEO_EXTENSIONS else _COUNTER.sub("", path.stem)
            group = "/".join((*rel_in.parts[:-1], stem))
            yield MediaItem(path=path, rel=path.relative_to(root).as_posix(), label=lab, method=method,
                            dataset="generic", group=group)  # fmt: skip


def _dfdc(root: Path) -> Iterator[MediaItem]:
    for meta_path in sorted(root.glob("dfdc_train_part_*/metadata.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{meta_path}: cannot read DFDC metadata ({exc})") from None
        for name, info in sorted(meta.items()):
            path = meta_path.parent / name
            label = "fake" if str(info.get("label", "")).upper() == "FAKE" else "real"
            original = info.get("original") or name
            yield MediaItem(path=path, rel=path.relative_to(root).as_posix(), label=label,
                            split=str(info.get("split", "")), method="dfdc" if label == "fake" else "original",
                            dataset="dfdc", group=Path(original).stem)  # fmt: skip


def _ffpp(root: Path, quality: str) -> Iterator[MediaItem]:
    split_of: dict[str, str] = {}
    pair_of: dict[str, str] = {}
    for split in ("train", "val", "test"):
        f = root / "splits" / f"{split}.json"
        if f.is_file():
            for a, b in json.loads(f.read_text()):
                key = "_".join(sorted((a, b)))
                for vid in (a, b, f"{a}_{b}", f"{b}_{a}"):
                    split_of[vid] = split
                    pair_of[vid] = key
    originals = root / "original_sequences" / "youtube" / quality / "videos"
    for path in _media(originals):
        vid = path.stem
        yield MediaItem(path=path, rel=path.relative_to(root).as_posix(), label="real", split=split_of.get(vid, ""),
                        method="original", dataset="ff++", group=pair_of.get(vid, vid))  # fmt: skip
    manipulated = root / "manipulated_sequences"
    if manipulated.is_dir():
        for method_dir in sorted(p for p in manipulated.iterdir() if p.is_dir()):
            for path in _media(method_dir / quality / "videos"):
                vid = path.stem
                group = pair_of.get(vid, "_".join(sorted(vid.split("_")[:2])))
                yield MediaItem(path=path, rel=path.relative_to(root).as_posix(), label="fake",
                                split=split_of.get(vid, ""), method=method_dir.name, dataset="ff++", group=group)  # fmt: skip


def _celebdf(root: Path) -> Iterator[MediaItem]:
    test: set[str] = set()
    listing = root / "List_of_testing_videos.txt"
    if listing.is_file():
        for line in listing.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                test.add(parts[1])
    for folder, label, method in (("Celeb-real", "real", "original"), ("YouTube-real", "real", "original"),
                                  ("Celeb-synthesis", "fake", "celeb-synthesis")):  # fmt: skip
        for path in _media(root / folder):
            rel = path.relative_to(root).as_posix()
            group = path.stem.split("_")[0] if folder != "YouTube-real" else f"yt-{path.stem}"
            yield MediaItem(path=path, rel=rel, label=label, split="test" if rel in test else ("train" if test else ""),
                            method=method, dataset="celebdf", group=group)  # fmt: skip


def discover(
    root: str | Path, *, layout: str = "auto", label: str | None = None, quality: str = "c23"
) -> list[MediaItem]:
    """All media items of the dataset at ``root`` (sorted by relative path)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: dataset folder does not exist")
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "generic":
        items = list(_generic(root, label))
    elif layout == "dfdc":
        items = list(_dfdc(root))
    elif layout == "ff++":
        items = list(_ffpp(root, quality))
    elif layout == "celebdf":
        items = list(_celebdf(root))
    else:
        raise ConfigError(f"unknown dataset layout {layout!r}; valid: auto, {', '.join(LAYOUTS)}")
    if not items:
        raise ConfigError(f"{root}: no media found for layout {layout!r}")
    return sorted(items, key=lambda it: it.rel)
