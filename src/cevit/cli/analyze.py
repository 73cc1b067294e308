"""``cevit analyze PATH [PATH ...]``: analyse images and videos, print or write reports."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, TextIO

FORMATS = ("json", "jsonl", "csv", "table")
CSV_COLUMNS = ("source", "media_type", "prediction", "confidence", "score", "num_faces", "frames_analyzed",
               "processing_time", "error")  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyse images and videos for face deepfakes",
        description="Analyse images and videos (files, folders searched recursively, glob patterns). One input "
        "prints one JSON report; several print JSON Lines unless --format/--output say otherwise.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image/video files, folders or glob patterns")
    p.add_argument("--weights", help="checkpoint: a cevit .safetensors or the authors' .pth (default: bundled weights)")
    p.add_argument("--model", default=None, help="preset whose bundled weights to use (default: CROSS-EFFICIENT-VIT-V1)")
    p.add_argument("--frames", type=int, default=30, help="frames sampled evenly per video (default: 30)")
    p.add_argument("--threshold", type=float, default=None, help="label threshold: FAKE above it (default: the rule's)")
    p.add_argument("--rule", default="cevit-default", choices=("cevit-default", "coccomini2022-video"),
                   help="aggregation rule (default: cevit-default)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="json (default for one input), jsonl (default for several), csv or table")
    p.add_argument("--output", "-o", help="write to FILE, or to DIR (existing folder or ending in /): one .json per input")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=run)


def _expand(paths: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Resolve arguments to media files; a bad argument becomes an error report instead of stopping the run."""
    from cevit.errors import MediaError
    from cevit.inference.results import error_report
    from cevit.media import iter_media_files

    files: list[str] = []
    errors: list[dict[str, Any]] = []
    for arg in paths:
        try:
            files.extend(str(p) for p in iter_media_files([arg]))
        except MediaError as exc:
            errors.append(error_report(arg, exc))
    return files, errors


def _csv_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": r.get("source"), "media_type": r.get("media_type"), "prediction": r.get("prediction"),
        "confidence": r.get("confidence"), "score": r.get("score"), "num_faces": len(r.get("faces", []) or []),
        "frames_analyzed": r.get("frames_analyzed", 1 if r.get("media_type") == "image" else None),
        "processing_time": r.get("processing_time"), "error": r.get("error"),
    }  # fmt: skip


def _suspicion(r: dict[str, Any]) -> float:
    """Sort key: most suspicious first (fake score; failed items last)."""
    if "error" in r:
        return -2.0
    return -1.0 if r.get("score") is None else float(r["score"])


def format_table(reports: list[dict[str, Any]]) -> str:
    rows = sorted(reports, key=_suspicion, reverse=True)
    lines = [f"{'PREDICTION':10s} {'CONF':>6s} {'SCORE':>6s} {'FACES':>5s}  SOURCE"]
    for r in rows:
        if "error" in r:
            lines.append(f"{'ERROR':10s} {'':>6s} {'':>6s} {'':>5s}  {r['source']}: {r['error']}")
            continue
        score = "-" if r.get("score") is None else f"{r['score']:.3f}"
        lines.append(f"{r['prediction']:10s} {r['confidence']:6.3f} {score:>6s} {len(r.get('faces', [])):5d}  {r['source']}")
    return "\n".join(lines) + "\n"


def write_reports(reports: list[dict[str, Any]], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        json.dump(reports[0] if len(reports) == 1 else reports, out, indent=2)
        out.write("\n")
    elif fmt == "jsonl":
        for r in reports:
            out.write(json.dumps(r) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in reports:
            writer.writerow(_csv_row(r))
    else:
        out.write(format_table(reports))


def _dir_output_name(source: str, used: set[str]) -> str:
    stem = Path(source).name or "input"
    name = f"{stem}.json"
    k = 1
    while name in used:
        k += 1
        name = f"{stem}.{k}.json"
    used.add(name)
    return name


class _Progress:
    """A tqdm bar over files and, inside a video, over its frames; off when stderr is not a TTY or --quiet."""

    def __init__(self, total_files: int, enabled: bool) -> None:
        self.enabled = enabled
        self.files = None
        self.frames = None
        if enabled:
            from tqdm import tqdm

            self._tqdm = tqdm
            if total_files > 1:
                self.files = tqdm(total=total_files, unit="file", desc="analysing", file=sys.stderr, position=0)

    def frame_callback(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.frames is None:
            self.frames = self._tqdm(total=total, unit="frame", desc="frames", file=sys.stderr, leave=False,
                                     position=1 if self.files is not None else 0)  # fmt: skip
        self.frames.total = total
        self.frames.n = done
        self.frames.refresh()

    def file_done(self) -> None:
        if self.frames is not None:
            self.frames.close()
            self.frames = None
        if self.files is not None:
            self.files.update(1)

    def close(self) -> None:
        if self.frames is not None:
            self.frames.close()
        if self.files is not None:
            self.files.close()


def run(args: argparse.Namespace) -> int:
    from cevit.errors import ConfigError
    from cevit.inference.pipeline import load_model
    from cevit.models.registry import DEFAULT_PRESET

    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1], got {args.threshold}")
    files, reports = _expand(args.paths)
    for r in reports:
        print(f"cevit: error: {r['error']}", file=sys.stderr)
    detector = None
    if files:
        detector = load_model(args.model or DEFAULT_PRESET, weights=args.weights, device=args.device,
                              num_frames=args.frames, rule=args.rule, threshold=args.threshold)  # fmt: skip
    n_inputs = len(files) + len(reports)
    fmt = args.format or ("json" if n_inputs == 1 and not (args.output and _is_dir_target(args.output)) else "jsonl")
    progress = _Progress(len(files), enabled=not args.quiet and sys.stderr.isatty())
    dir_target = Path(args.output) if args.output and _is_dir_target(args.output) else None
    if dir_target is not None:
        dir_target.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    stream_out = None
    if args.output is None and fmt == "jsonl":
        stream_out = sys.stdout  # stream JSON Lines as items finish: nothing is lost if the run is interrupted
        for r in reports:  # arguments that could not be resolved
            stream_out.write(json.dumps(r) + "\n")
    try:
        if detector is not None:
            for report in detector.analyze_many(files, progress=progress.frame_callback):
                progress.file_done()
                reports.append(report)
                if "error" in report:
                    print(f"cevit: error: {report['error']}", file=sys.stderr)
                if stream_out is not None:
                    stream_out.write(json.dumps(report) + "\n")
                    stream_out.flush()
                if dir_target is not None:
                    (dir_target / _dir_output_name(report["source"], used)).write_text(json.dumps(report, indent=2) + "\n")
    finally:
        progress.close()
    if dir_target is not None:
        for r in reports[: n_inputs - len(files)]:  # arguments that could not be resolved
            (dir_target / _dir_output_name(r["source"], used)).write_text(json.dumps(r, indent=2) + "\n")
    elif args.output:
        buf = io.StringIO()
        write_reports(reports, fmt, buf)
        Path(args.output).write_text(buf.getvalue(), encoding="utf-8")
    elif stream_out is None:
        write_reports(reports, fmt, sys.stdout)
    failed = sum(1 for r in reports if "error" in r)
    if n_inputs > 1 and not args.quiet:
        sys.stderr.write(f"\n{n_inputs} inputs, {n_inputs - failed} analysed, {failed} failed; most suspicious first:\n")
        sys.stderr.write(format_table(reports))
    return 1 if failed else 0


def _is_dir_target(output: str) -> bool:
    return output.endswith(("/", "\\")) or Path(output).is_dir()

