"""``cevit evaluate``: run a detector over a labelled test set and write metrics, scores and plots.

A test set is one of:

* a folder with ``real/`` and ``fake/`` sub-folders (searched recursively for images and videos);
* a folder or file with a manifest (``MANIFEST.tsv`` or any ``.tsv``/``.csv``) holding a path column (``file``
  or ``path``, relative to the manifest's folder) and a ``label`` column (REAL/FAKE, real/fake or 0/1);
  optional columns ``dataset``/``dataset_of_origin``, ``method``/``fake_type`` and ``kind`` give the
  breakdowns under ``by_group`` (text in parentheses is dropped from group names);
* a face index (``index.csv`` from ``cevit extract-faces``, recognised by its ``crop_path`` column): the saved
  crops are scored directly (no detection), each re-cropped with the model's preprocessing contract; frame
  level = one score per crop, item level = the aggregation rule over each source media item's faces.

Every item goes through the full analysis pipeline (detection, crops, model, aggregation). The item score is
the report's final score; an item without any face counts as REAL with its reported confidence (score 0.01).
Items that fail (unreadable files) are listed and left out of the metrics. Frame-level metrics use each sampled
frame's score (max over its faces) with its item's label.

``reencode_jpeg=Q`` re-encodes every IMAGE as JPEG quality Q before scoring, so real and fake images reach the
model through the same compression (a format shortcut — e.g. PNG fakes vs JPEG reals — cannot fake accuracy).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cevit.errors import CevitError, ConfigError
from cevit.evaluation.metrics import summarize, summarize_by_group

if TYPE_CHECKING:
    from cevit.inference.protocol import DetectorProtocol

__all__ = [
    "LabelledItem", "ItemResult", "discover_test_set", "evaluate_items", "evaluate_face_index", "write_outputs",
    "run_evaluation",
]  # fmt: skip

log = logging.getLogger(__name__)

_PATH_COLUMNS = ("file", "path", "filepath", "media")
_GROUP_COLUMNS = {"dataset": ("dataset", "dataset_of_origin"), "method": ("method", "fake_type"), "kind": ("kind",)}


@dataclass(frozen=True)
class LabelledItem:
    path: Path
    label: int  # 0 real, 1 fake
    groups: dict[str, str] = field(default_factory=dict)


@dataclass
class ItemResult:
    item: LabelledItem
    score: float | None = None
    prediction: str | None = None
    media_type: str | None = None
    frame_scores: list[float] = field(default_factory=list)
    num_faces: int = 0
    error: str | None = None


def _parse_label(value: str, where: str) -> int:
    v = value.strip().lower()
    if v in ("real", "0", "pristine", "original"):
        return 0
    if v in ("fake", "1", "manipulated"):
        return 1
    raise ConfigError(f"{where}: label {value!r} is not REAL/FAKE/0/1")


def _group_value(text: str) -> str:
    """A manifest cell as a group name: text in parentheses and surrounding quotes dropped ("DFDC (crop of x.mp4)"
    → "DFDC"), so per-file details do not make one group per file."""
    import re

    return re.sub(r"\s*\(.*?(\)|$)", "", text).strip().strip('"').strip()


def _read_manifest(path: Path) -> list[LabelledItem]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read manifest ({exc})") from None
    if not rows:
        raise ConfigError(f"{path}: manifest has no rows")
    columns = rows[0].keys()
    path_col = next((c for c in _PATH_COLUMNS if c in columns), None)
    if path_col is None or "label" not in columns:
        raise ConfigError(f"{path}: manifest needs a path column ({'/'.join(_PATH_COLUMNS)}) and a 'label' column")
    items = []
    for i, row in enumerate(rows, start=2):
        groups = {}
        for name, candidates in _GROUP_COLUMNS.items():
            value = _group_value(next((row[c] for c in candidates if c in row and row[c]), ""))
            if value:
                groups[name] = value
        media = path.parent / row[path_col]
        items.append(LabelledItem(media, _parse_label(row["label"], f"{path}:{i}"), groups))
    return items


def discover_test_set(data: str | Path) -> list[LabelledItem]:
    """The labelled items of a test set (see the module docstring for the accepted layouts)."""
    from cevit.media import iter_media_files

    data = Path(data)
    if not data.exists():
        raise ConfigError(f"{data}: test set does not exist")
    if data.is_file():
        return _read_manifest(data)
    manifest = data / "MANIFEST.tsv"
    if manifest.is_file():
        return _read_manifest(manifest)
    items = []
    for label_name, label in (("real", 0), ("fake", 1)):
        folder = data / label_name
        if folder.is_dir():
            for f in iter_media_files([str(folder)]):
                rel = f.relative_to(folder)
                groups = {"subfolder": rel.parts[0]} if len(rel.parts) > 1 else {}
                items.append(LabelledItem(f, label, groups))
    if not items:
        raise ConfigError(f"{data}: no MANIFEST.tsv and no media under real/ and fake/")
    return items


def _reencoded(path: Path, quality: int, tmpdir: Path) -> Path:
    import cv2

    from cevit.media import load_image

    rgb = load_image(path)
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CevitError(f"{path}: JPEG re-encoding failed")
    out = tmpdir / f"{abs(hash(str(path)))}.jpg"
    out.write_bytes(buf.tobytes())
    return out


def evaluate_items(
    detector: DetectorProtocol, items: list[LabelledItem], *, reencode_jpeg: int | None = None, num_frames: int | None = None,
    progress: Callable[[int, int], None] | None = None, workers: int | None = None,
) -> list[ItemResult]:  # fmt: skip
    """Analyse every item with ``detector`` (a :class:`cevit.inference.pipeline.Detector`) through its batch API,
    ``analyze_many``: ``workers`` files are decoded and face-detected while the model scores earlier ones (None:
    the detector's default; 0: one after another); reports come back in input order. Images are re-encoded
    (``reencode_jpeg``) lazily, as the batch reads its next input."""
    from cevit.media import sniff_media_type

    results = [ItemResult(item) for item in items]
    with tempfile.TemporaryDirectory(prefix="cevit-eval-") as tmp:

        def targets() -> Iterator[Path]:
            for res in results:
                target = res.item.path
                if reencode_jpeg is not None:
                    try:
                        if sniff_media_type(target) == "image":
                            target = _reencoded(target, reencode_jpeg, Path(tmp))
                    except CevitError as exc:  # this item's error; its (unused) report still keeps the order
                        res.error = str(exc).splitlines()[0]
                yield target

        reports = detector.analyze_many(targets(), num_frames=num_frames, workers=workers)
        for k, (res, report) in enumerate(zip(results, reports)):
            if res.error is None and "error" in report:
                res.error = str(report["error"]).splitlines()[0]
            if res.error is not None:
                log.warning("%s", res.error)
            else:
                res.media_type = report["media_type"]
                res.prediction = report["prediction"]
                res.num_faces = len(report["faces"])
                res.score = report["score"] if report["score"] is not None else 1.0 - report["confidence"]
                if report["media_type"] == "video":
                    res.frame_scores = [f["score"] for f in report["frame_predictions"] if f["score"] is not None]
                elif report["score"] is not None:
                    res.frame_scores = [max(f["score"] for f in report["faces"])]
            if progress is not None:
                progress(k + 1, len(items))
    return results


def _metrics(results: list[ItemResult], *, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    ok = [r for r in results if r.error is None]
    if not ok:
        raise CevitError("no item of the test set could be analysed")
    labels = [r.item.label for r in ok]
    scores = [min(max(float(r.score), 0.0), 1.0) for r in ok]
    out: dict[str, Any] = summarize(labels, scores, threshold=threshold, n_boot=n_boot, seed=seed)
    out["n_failed"] = len(results) - len(ok)
    out["n_no_face"] = sum(1 for r in ok if r.num_faces == 0)
    by_group: dict[str, Any] = {}
    for key in sorted({k for r in ok for k in r.item.groups} | {"media_type"}):
        values = [r.media_type if key == "media_type" else r.item.groups.get(key, "") for r in ok]
        keep = [i for i, v in enumerate(values) if v]
        if not keep:
            continue
        per = summarize_by_group([labels[i] for i in keep], [scores[i] for i in keep], [values[i] for i in keep],
                                 threshold=threshold, n_boot=n_boot, seed=seed)  # fmt: skip
        for value, summary in per.items():
            by_group[f"{key}={value}"] = summary
    out["by_group"] = by_group
    frame_labels = [r.item.label for r in ok for _ in r.frame_scores]
    frame_scores = [min(max(float(s), 0.0), 1.0) for r in ok for s in r.frame_scores]
    if frame_scores:
        out["frame_level"] = summarize(frame_labels, frame_scores, threshold=threshold, n_boot=n_boot, seed=seed)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _report_md(metrics: dict[str, Any], meta: dict[str, Any], results: list[ItemResult]) -> str:
    lines = [f"# cevit evaluation — {meta['data']}", "", f"- model: `{meta['model']}` (sha256 `{meta['sha256']}`)",
             f"- rule: {meta['rule']}, threshold {meta['threshold']}, frames per video {meta['num_frames']}, "
             f"JPEG re-encoding: {meta['reencode_jpeg'] or 'off'}", f"- date: {meta['date']}, "
             f"time {meta['seconds']:.1f} s", ""]  # fmt: skip
    cols = ("n_items", "n_real", "n_fake", "auc", "auc_ci95", "ap", "eer", "accuracy", "f1", "log_loss", "ece")

    def row(name: str, m: dict[str, Any]) -> str:
        cells = []
        for c in cols:
            v = m.get(c)
            cells.append(f"[{_fmt(v[0])}, {_fmt(v[1])}]" if isinstance(v, list) else _fmt(v))
        return f"| {name} | " + " | ".join(cells) + " |"

    lines += ["| level | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|", row("item", metrics)]
    if "frame_level" in metrics:
        lines.append(row("frame", metrics["frame_level"]))
    lines += ["", "## By group", "", "| group | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [row(name, m) for name, m in metrics["by_group"].items()]
    failed = [r for r in results if r.error]
    if failed:
        lines += ["", "## Failed items", ""] + [f"- `{r.item.path}`: {r.error}" for r in failed]
    lines += ["", "Plots: `roc.png`, `pr.png`, `score_histogram.png`; per-item scores: `scores.csv`.", ""]
    return "\n".join(lines)


def write_outputs(
    out_dir: str | Path, results: list[ItemResult], metrics: dict[str, Any], meta: dict[str, Any], *, threshold: float
) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({**metrics, "meta": meta}, indent=2) + "\n")
    with open(out / "scores.csv", "w", newline="", encoding="utf-8") as fh:
        group_keys = sorted({k for r in results for k in r.item.groups})
        w = csv.writer(fh)
        w.writerow(["source", "label", "score", "prediction", "media_type", "num_faces", *group_keys, "error"])
        for r in results:
            w.writerow([str(r.item.path), "FAKE" if r.item.label else "REAL",
                        "" if r.score is None else f"{r.score:.6f}", r.prediction or "", r.media_type or "",
                        r.num_faces, *(r.item.groups.get(k, "") for k in group_keys), r.error or ""])  # fmt: skip
    with open(out / "frame_scores.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)  # per sampled frame with faces: max over its faces (the frame-level metrics' inputs)
        w.writerow(["source", "label", "frame", "score"])
        for r in results:
            for k, score in enumerate(r.frame_scores):
                w.writerow([str(r.item.path), "FAKE" if r.item.label else "REAL", k, f"{float(score):.6f}"])
    (out / "report.md").write_text(_report_md(metrics, meta, results))
    try:
        from cevit.evaluation import plots
    except ImportError:  # pragma: no cover
        return
    ok = [r for r in results if r.error is None]
    labels = [r.item.label for r in ok]
    scores = [min(max(float(r.score), 0.0), 1.0) for r in ok]
    curves = {"all items": (labels, scores)}
    for kind in ("image", "video"):
        sel = [i for i, r in enumerate(ok) if r.media_type == kind]
        if sel:
            curves[f"{kind}s"] = ([labels[i] for i in sel], [scores[i] for i in sel])
    try:
        plots.plot_roc(curves, out / "roc.png", title="ROC")
        plots.plot_pr(curves, out / "pr.png", title="Precision-recall")
        plots.plot_score_histogram(labels, scores, out / "score_histogram.png", threshold=threshold)
    except CevitError as exc:  # matplotlib missing
        log.warning("plots skipped: %s", exc)


def _is_face_index(path: Path) -> bool:
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        return "crop_path" in fh.readline().split(",")


def evaluate_face_index(
    detector: DetectorProtocol, index: Path, *, progress: Callable[[int, int], None] | None = None
) -> list[ItemResult]:
    """Score the crops of a face index; one :class:`ItemResult` per source media item."""
    from cevit.data import load_crop, read_index
    from cevit.inference.aggregation import aggregate
    from cevit.preprocess import FacePreprocessor

    rows = read_index(index)
    preprocessor = FacePreprocessor(spec=detector.preprocessing)
    by_source: dict[str, list[Any]] = {}
    for r in rows:
        by_source.setdefault(r.source, []).append(r)
    results = []
    for k, (source, items) in enumerate(by_source.items()):
        first = items[0]
        groups = {key: value for key, value in (("dataset", first.dataset), ("method", first.method)) if value}
        res = ItemResult(LabelledItem(Path(source), first.label, groups), media_type="crops")
        crops, kept = [], []
        for r in items:
            image = load_crop(r.crop_path)
            if image is None:
                log.warning("%s: missing or unreadable crop", r.crop_path)
                continue
            try:
                crops.append(preprocessor.crop(image, r.box, valid=r.valid))
            except ValueError as exc:  # a box outside its crop: that face is skipped, the item still counts
                log.warning("%s: unusable face box: %s", r.crop_path, exc)
                continue
            kept.append(r)
        if not crops:
            res.error = f"{source}: no readable crop"
        else:
            scores = detector.score_faces(crops)
            verdict = aggregate([(r.frame_index, r.face_index, s) for r, s in zip(kept, scores)], detector.options.rule)
            res.score, res.prediction, res.num_faces = verdict.score, verdict.prediction, len(scores)
            res.frame_scores = list(scores)
        results.append(res)
        if progress is not None:
            progress(k + 1, len(by_source))
    return results


def run_evaluation(
    detector: DetectorProtocol, data: str | Path, out_dir: str | Path, *, reencode_jpeg: int | None = None,
    num_frames: int | None = None, n_boot: int = 1000, seed: int = 0,
    progress: Callable[[int, int], None] | None = None, workers: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Evaluate ``detector`` on the test set ``data``; writes the outputs into ``out_dir``; returns the metrics.
    ``workers``: files analysed at once (see :func:`evaluate_items`)."""
    import datetime as dt

    if reencode_jpeg is not None and not 1 <= reencode_jpeg <= 100:
        raise ConfigError(f"JPEG quality must be in [1, 100], got {reencode_jpeg}")
    start = time.perf_counter()
    if _is_face_index(Path(data)):
        results = evaluate_face_index(detector, Path(data), progress=progress)
    else:
        items = discover_test_set(data)
        results = evaluate_items(detector, items, reencode_jpeg=reencode_jpeg, num_frames=num_frames, progress=progress,
                                 workers=workers)  # fmt: skip
    rule = detector.options.rule
    metrics = _metrics(results, threshold=rule.label_threshold, n_boot=n_boot, seed=seed)
    meta = {
        "data": str(data), "model": detector.model_info.get("name"), "sha256": detector.model_info.get("checkpoint_sha256"),
        "rule": rule.name, "threshold": rule.label_threshold, "num_frames": num_frames or detector.options.num_frames,
        "reencode_jpeg": reencode_jpeg, "bootstrap": n_boot, "seed": seed,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    write_outputs(out_dir, results, metrics, meta, threshold=rule.label_threshold)
    return metrics
