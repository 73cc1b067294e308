"""``cevit extract-faces``: turn a dataset of images/videos into face crops on disk plus an index (CSV).

For every media item (see :mod:`cevit.data.layouts`), ``num_frames`` frames are sampled evenly (images: the
image), MTCNN finds all faces, and each face is saved as a crop: its box made square, grown by
``save_margin`` × side (zero padding outside the frame) and downscaled so its side is at most ``save_size``
(:func:`cevit.data.crops.save_face_crop`). The index row (:mod:`cevit.data.index`) stores the face box, 5
landmarks and the crop's valid region (the part that shows the frame) **in the crop's pixel coordinates**, so
training re-crops each face with the model's own preprocessing contract, exactly like inference does on the
full frame.

Crops go to ``OUT/crops/<dataset>/<method or label>/<source path without extension>/f<frame>_<face>.<ext>``:
different methods never overwrite each other. The run is resumable: every finished item is appended (and
flushed) to ``OUT/progress.jsonl``; a rerun skips items recorded there, so a killed run loses at most the
items in flight. Failures (unreadable media, ...) are recorded, reported in ``OUT/failures.csv`` and retried
on the next run; they never stop the run. ``OUT/index.csv`` is rewritten (atomically) at the end of each run.
Memory stays bounded: one item per worker at a time, frames processed in chunks.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cevit.data.crops import save_face_crop
from cevit.data.index import write_index
from cevit.data.layouts import MediaItem, discover
from cevit.errors import CevitError, ConfigError

__all__ = ["ExtractConfig", "ExtractSummary", "extract_item", "extract_faces"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    num_frames: int = 30
    save_margin: float = 0.6
    save_size: int = 320
    crop_format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = 95
    min_face_size: int = 20
    detector_max_side: int = 1280
    max_faces_per_frame: int = 0  # 0 = keep all
    frame_chunk: int = 8
    workers: int = 1

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.save_size < 16 or self.workers < 1 or self.frame_chunk < 1:
            raise ConfigError("extract: num_frames, workers, frame_chunk must be >= 1 and save_size >= 16")
        if not 0 <= self.save_margin <= 2:
            raise ConfigError(f"extract: save_margin must be in [0, 2], got {self.save_margin}")
        if self.crop_format not in ("png", "jpg"):
            raise ConfigError(f"extract: crop_format must be png or jpg, got {self.crop_format!r}")


@dataclass(frozen=True)
class ExtractSummary:
    items: int
    done_before: int
    processed: int
    failed: int
    faces: int
    index_path: Path
    seconds: float


def _crop_dir(item: MediaItem) -> Path:
    rel = Path(item.rel)
    return Path("crops") / item.dataset / (item.method or item.label) / rel.parent / rel.stem


def _frames(item: MediaItem, cfg: ExtractConfig):
    from cevit.media import load_image, sample_frames, sniff_media_type

    if sniff_media_type(item.path) == "image":
        yield 0, None, load_image(item.path)
    else:
        for fr in sample_frames(item.path, num_frames=cfg.num_frames):
            yield fr.index, fr.timestamp, fr.image


def extract_item(item: MediaItem, out_dir: Path, cfg: ExtractConfig, detector: Any) -> list[dict[str, Any]]:
    """Detect, crop and save the faces of one item; returns its index rows (raises CevitError on bad media)."""
    import cv2

    rows: list[dict[str, Any]] = []
    crop_dir = _crop_dir(item)
    (out_dir / crop_dir).mkdir(parents=True, exist_ok=True)

    def flush(chunk: list[tuple[int, float | None, np.ndarray]]) -> None:
        detections = detector.detect([img for _, _, img in chunk])
        for (frame_index, ts, img), faces in zip(chunk, detections):
            if cfg.max_faces_per_frame:
                faces = faces[: cfg.max_faces_per_frame]
            for k, face in enumerate(faces):
                try:
                    saved = save_face_crop(
                        img, face.box, face.landmarks, margin=cfg.save_margin, max_size=cfg.save_size
                    )
                except ValueError as exc:  # a degenerate box: skip the face, keep the item
                    log.debug("%s frame %d: skipping face %d: %s", item.rel, frame_index, k, exc)
                    continue
                name = crop_dir / f"f{frame_index:06d}_{k}.{cfg.crop_format}"
                params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if cfg.crop_format == "jpg" else []
                if not cv2.imwrite(str(out_dir / name), saved.image[:, :, ::-1], params):
                    raise CevitError(f"{out_dir / name}: cannot write crop")
                box, valid = saved.box, saved.valid
                row = {"crop_path": name.as_posix(), "source": item.rel, "frame_index": frame_index,
                       "timestamp": "" if ts is None else round(ts, 4), "face_index": k,
                       "x1": round(box[0], 2), "y1": round(box[1], 2), "x2": round(box[2], 2), "y2": round(box[3], 2),
                       "vx1": round(valid[0], 2), "vy1": round(valid[1], 2),
                       "vx2": round(valid[2], 2), "vy2": round(valid[3], 2)}  # fmt: skip
                for j, (x, y) in enumerate(saved.landmarks):
                    row[f"lm{j}x"], row[f"lm{j}y"] = round(x, 2), round(y, 2)
                row.update(det_prob=round(face.probability, 5), label=item.label, split=item.split,
                           method=item.method, dataset=item.dataset, group=item.group)  # fmt: skip
                rows.append(row)

    chunk: list[tuple[int, float | None, np.ndarray]] = []
    for frame in _frames(item, cfg):
        chunk.append(frame)
        if len(chunk) >= cfg.frame_chunk:
            flush(chunk)
            chunk = []
    if chunk:
        flush(chunk)
    return rows


# -- worker pool ---------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init(cfg_dict: dict[str, Any], threads: int) -> None:
    import torch

    from cevit.faces import MTCNN

    torch.set_num_threads(threads)
    cfg = ExtractConfig(**cfg_dict)
    _WORKER["cfg"] = cfg
    _WORKER["detector"] = MTCNN(min_face_size=cfg.min_face_size, max_side=cfg.detector_max_side)


def _worker_run(args: tuple[MediaItem, str]) -> dict[str, Any]:
    item, out_dir = args
    try:
        rows = extract_item(item, Path(out_dir), _WORKER["cfg"], _WORKER["detector"])
        return {"rel": item.rel, "status": "ok", "rows": rows}
    except CevitError as exc:
        return {"rel": item.rel, "status": "failed", "error": str(exc).splitlines()[0]}
    except Exception as exc:  # noqa: BLE001 - one bad item never stops a dataset
        return {"rel": item.rel, "status": "failed", "error": f"{item.path}: {type(exc).__name__}: {exc}"}


def _read_progress(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: that item is redone
                continue
            done[rec["rel"]] = rec
    return done


def _write_index(out_dir: Path, items: list[MediaItem], records: dict[str, dict[str, Any]]) -> tuple[Path, int]:
    index = out_dir / "index.csv"
    ok = (records.get(item.rel) for item in items)
    n = write_index(index, (row for rec in ok if rec and rec["status"] == "ok" for row in rec["rows"]))
    failures = [records[it.rel] for it in items if it.rel in records and records[it.rel]["status"] == "failed"]
    with open(out_dir / "failures.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["source", "error"])
        for rec in failures:
            writer.writerow([rec["rel"], rec["error"]])
    return index, n


def extract_faces(
    root: str | Path, out_dir: str | Path, *, layout: str = "auto", label: str | None = None, quality: str = "c23",
    config: ExtractConfig | None = None, progress: Callable[[int, int], None] | None = None, limit: int | None = None,
) -> ExtractSummary:  # fmt: skip
    """Extract the faces of every item of the dataset at ``root`` into ``out_dir`` (resumable).

    ``limit`` keeps only the first ``limit`` items in the layout's sorted order (a reproducible subset; the index
    then lists only those, even when a previous run extracted more).
    """
    cfg = config or ExtractConfig()
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = discover(root, layout=layout, label=label, quality=quality)
    if limit is not None:
        items = items[:limit]
    progress_path = out / "progress.jsonl"
    records = _read_progress(progress_path)
    todo = [it for it in items if records.get(it.rel, {}).get("status") != "ok"]
    done_before = len(items) - len(todo)
    log.info("%d items, %d already done, %d to process", len(items), done_before, len(todo))
    failed = 0
    with open(progress_path, "a", encoding="utf-8") as log_fh:

        def record(rec: dict[str, Any]) -> None:
            nonlocal failed
            records[rec["rel"]] = rec
            failed += rec["status"] == "failed"
            if rec["status"] == "failed":
                log.warning("%s", rec["error"])
            log_fh.write(json.dumps(rec) + "\n")
            log_fh.flush()
            os.fsync(log_fh.fileno())

        args = [(it, str(out)) for it in todo]
        if cfg.workers == 1:
            _worker_init(asdict(cfg), threads=max(1, min(2, os.cpu_count() or 1)))
            for k, a in enumerate(args):
                record(_worker_run(a))
                if progress:
                    progress(done_before + k + 1, len(items))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ctx.Pool(cfg.workers, initializer=_worker_init, initargs=(asdict(cfg), 1)) as pool:
                for k, rec in enumerate(pool.imap_unordered(_worker_run, args, chunksize=1)):
                    record(rec)
                    if progress:
                        progress(done_before + k + 1, len(items))
    index, n_faces = _write_index(out, items, records)
    summary = {"dataset": str(root), "layout": layout, "items": len(items), "faces": n_faces, "failed": failed,
               "config": asdict(cfg)}  # fmt: skip
    (out / "extract_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return ExtractSummary(len(items), done_before, len(todo), failed, n_faces, index, time.perf_counter() - start)
