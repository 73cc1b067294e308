"""``cevit analyze PATH [PATH ...]``: analyse images and videos, print or write reports.

Order of work: the arguments and the output target are checked first, then the inputs are expanded; inputs
rejected at once (missing, empty, a symlink loop, not an image or video) get their error report without the
model, which is loaded (and torch imported) only when the first input that can be analysed comes up.

A report without any face (``status`` "no_face", or no score and no error in older reports) is shown as
``NO_FACE`` in the table, the CSV and the summary, never as a REAL verdict: no face found is not a clearance.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from cevit.cli.options import add_limit_options, add_model_options, add_precision_option, limit_options

FORMATS = ("json", "jsonl", "csv", "table")
CSV_COLUMNS = ("source", "media_type", "prediction", "confidence", "score", "num_faces", "frames_analyzed",
               "processing_time", "error", "status", "frames_failed")  # fmt: skip
#: What the table, the CSV and the summary show instead of a verdict when no face was found.
NO_FACE_LABEL = "NO_FACE"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyse images and videos for face deepfakes",
        description="Analyse images and videos (files, folders searched recursively, glob patterns). One input "
        "prints one JSON report; several print JSON Lines unless --format/--output say otherwise.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image/video files, folders or glob patterns")
    p.add_argument(
        "--weights",
        help="a cevit .safetensors, the authors' .pth or an ONNX model from `cevit export onnx` "
        "(default: bundled weights)",
    )
    add_model_options(p)  # --model ARCH.TAG, --rule
    p.add_argument("--frames", type=int, default=30, help="frames sampled evenly per video (default: 30)")
    p.add_argument("--threshold", type=float, default=None, help="label threshold: FAKE above it (default: the rule's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda, cuda:N (default: auto)")
    add_precision_option(p)  # --precision auto|fp32|bf16|fp16
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default=None,
        help="what runs the model: torch, or onnxruntime (extra 'onnx'; torch weights are exported in memory "
        "first) (default: onnxruntime for --weights FILE.onnx, else torch)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="json (default for one input), jsonl (default for several), csv or table",
    )
    p.add_argument(
        "--output", "-o", help="write to FILE, or to DIR (existing folder or ending in /): one .json per input"
    )
    add_limit_options(p)  # --max-pixels, --max-frame-pixels, --max-item-seconds, ...
    p.add_argument(
        "--explain",
        metavar="DIR",
        help="also explain each verdict: write per input a folder in DIR with an annotated image, per-face heat "
        "maps, a contact sheet of the most suspicious faces and (videos) a score timeline; the report lists them "
        "in 'explanations' (costs gradient passes: slower)",
    )
    p.add_argument(
        "--explain-method",
        choices=("gradcam", "attention"),
        default=None,
        help="heat-map method for --explain (default: the library's default, see README 'Explanations')",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="files decoded and face-detected at the same time while the model scores earlier ones (default: "
        "the machine's cores minus one, at least 1; 0: one file after another)",
    )
    p.add_argument(
        "--unordered",
        action="store_true",
        help="write each report as soon as its file is done (default: in input order)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=run)


def _expand(paths: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Resolve arguments to media files; a bad argument becomes an error report instead of stopping the run."""
    from cevit.errors import CevitError
    from cevit.inference.results import error_report
    from cevit.media import iter_media_files

    files: list[str] = []
    errors: list[dict[str, Any]] = []
    for arg in paths:
        try:
            files.extend(str(p) for p in iter_media_files([arg]))
        except CevitError as exc:
            errors.append(error_report(arg, exc))
    return files, errors


def report_status(r: dict[str, Any]) -> str:
    """``"error"``, ``"no_face"`` or ``"ok"``; reports without a ``status`` key: no score and no error is no face."""
    if "error" in r:
        return "error"
    status = r.get("status")
    if status in ("ok", "no_face"):
        return str(status)
    return "no_face" if r.get("score") is None else "ok"


def _error_text(r: dict[str, Any]) -> str:
    """The error message without the leading ``SOURCE: `` (the table shows the source already)."""
    error, prefix = str(r.get("error", "")), f"{r.get('source')}: "
    return error[len(prefix) :] if error.startswith(prefix) else error


def _csv_row(r: dict[str, Any]) -> dict[str, Any]:
    status = report_status(r)
    ok = status == "ok"
    prediction = {"error": None, "no_face": NO_FACE_LABEL}.get(status, r.get("prediction"))
    return {
        "source": r.get("source"), "media_type": r.get("media_type"), "prediction": prediction,
        "confidence": r.get("confidence") if ok else None, "score": r.get("score") if ok else None,
        "num_faces": None if status == "error" else len(r.get("faces", []) or []),
        "frames_analyzed": r.get("frames_analyzed", 1 if r.get("media_type") == "image" else None),
        "processing_time": r.get("processing_time"), "error": r.get("error"), "status": status,
        "frames_failed": r.get("frames_failed"),
    }  # fmt: skip


def _suspicion(r: dict[str, Any]) -> float:
    """Sort key: most suspicious first (fake score; no face next; failed items last)."""
    status = report_status(r)
    if status == "error":
        return -2.0
    return -1.0 if status == "no_face" else float(r["score"])


def format_table(reports: list[dict[str, Any]]) -> str:
    rows = sorted(reports, key=_suspicion, reverse=True)
    lines = [f"{'PREDICTION':10s} {'CONF':>6s} {'SCORE':>6s} {'FACES':>5s}  SOURCE"]
    for r in rows:
        status = report_status(r)
        if status == "error":
            lines.append(f"{'ERROR':10s} {'':>6s} {'':>6s} {'':>5s}  {r['source']}: {_error_text(r)}")
            continue
        faces = len(r.get("faces", []) or [])
        failed = r.get("frames_failed") or 0
        notes = ["no face found"] if status == "no_face" else []
        if failed:
            notes.append(f"{failed} sampled frame{'s' if failed != 1 else ''} could not be decoded")
        remark = f": {'; '.join(notes)}" if notes else ""
        if status == "no_face":
            lines.append(f"{NO_FACE_LABEL:10s} {'':>6s} {'-':>6s} {faces:5d}  {r['source']}{remark}")
            continue
        lines.append(
            f"{r['prediction']:10s} {r['confidence']:6.3f} {r['score']:6.3f} {faces:5d}  {r['source']}{remark}"
        )
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


def summary_line(reports: list[dict[str, Any]]) -> str:
    statuses = [report_status(r) for r in reports]
    failed, no_face = statuses.count("error"), statuses.count("no_face")
    return (f"{len(reports)} inputs, {len(reports) - failed} analysed ({no_face} with no face found), "
            f"{failed} failed")  # fmt: skip


class _Progress:
    """A tqdm bar over files and, inside a video, over its frames; off when stderr is not a TTY or --quiet.

    The frame bar's rate is frames of the current item over the time since that item started (the bar itself
    appears only after the first chunk of frames, so its own clock would show absurd rates)."""

    def __init__(self, total_files: int, enabled: bool, *, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.files = None
        self.frames = None
        self._item_start = time.time()  # tqdm's clock
        if enabled:
            from tqdm import tqdm

            self._tqdm = tqdm
            if total_files > 1:
                self.files = tqdm(total=total_files, unit="file", desc="analysing", file=self.stream, position=0)

    def frame_callback(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.frames is None:
            self.frames = self._tqdm(total=total, unit="frame", desc="frames", file=self.stream, leave=False,
                                     smoothing=0, position=1 if self.files is not None else 0)  # fmt: skip
            self.frames.start_t = self._item_start  # smoothing=0: rate = frames / time since the item started
        self.frames.total = total
        self.frames.update(max(0, done - self.frames.n))

    def write(self, line: str) -> None:
        """A line on stderr that does not garble the bars."""
        if self.enabled:
            self._tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream)

    def file_done(self) -> None:
        if self.frames is not None:
            self.frames.close()
            self.frames = None
        if self.files is not None:
            self.files.update(1)
        self._item_start = time.time()

    def close(self) -> None:
        if self.frames is not None:
            self.frames.close()
        if self.files is not None:
            self.files.close()


def _check_arguments(args: argparse.Namespace) -> None:
    """Usage errors that need no file system access (ConfigError, exit 2)."""
    from cevit.errors import ConfigError
    from cevit.output import is_directory_target

    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1], got {args.threshold}")
    for flag, value in (("--max-pixels", args.max_pixels), ("--max-frame-pixels", args.max_frame_pixels)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.explain_method is not None and args.explain is None:
        raise ConfigError("--explain-method needs --explain DIR (where the explanation images go)")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if not _DEVICE.fullmatch(str(args.device)):
        raise ConfigError(f"unknown device {args.device!r}; use auto, cpu or cuda (cuda:N)")
    if args.output is not None and is_directory_target(args.output) and args.format not in (None, "json"):
        raise ConfigError(f"--output {args.output} is a folder, which gets one JSON report per input; "
                          f"--format {args.format} needs an output file (or standard output)")  # fmt: skip


def _explained(results: Iterator[Any], folder: Any, method: str, progress: _Progress) -> Iterator[dict[str, Any]]:
    """Reports of explained results: each item's PNGs go into its own sub-folder of ``folder`` (a name made
    safe and unique like a report's), listed in the report's ``explanations`` block (paths relative to
    ``folder``). A folder that cannot be written costs that item its images, not its report."""
    from cevit.explain.render import write_explanations
    from cevit.output import report_file_name

    used: set[str] = set()
    for result in results:
        report = result.to_dict()
        if getattr(result, "explanations", None) is not None:
            sub = folder / report_file_name(str(result.source), used, suffix="")
            try:
                report["explanations"] = write_explanations(result, sub, relative_to=folder)
            except OSError as exc:
                why = f"{sub}: cannot write the explanation images ({exc.strerror or exc})"
                progress.write(f"cevit: error: {why}")
                report["explanations"] = {"method": method, "error": why}
        yield report


def _analyse(
    files: list[str], load: Callable[[], Any], progress: _Progress, explain: tuple[Any, str] | None = None, *,
    workers: int | None = None, unordered: bool = False,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """One report per file (in order unless ``unordered``). Until the model is needed, each file's content is
    checked first (cheap: its header), so that a batch of rejected inputs never loads the model.
    ``explain``: (folder, method)."""
    from cevit.errors import CevitError
    from cevit.inference.results import error_report
    from cevit.media import sniff_media_type

    for i, path in enumerate(files):
        try:
            sniff_media_type(path)
        except CevitError as exc:
            yield error_report(path, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - as in analyze_many: one bad item never stops the batch
            yield error_report(path, RuntimeError(f"{path}: internal error: {exc}"))
            continue
        detector = load()
        rest = files[i:]
        # the frame bar follows one video: with several files, several are in progress at once
        frames = progress.frame_callback if len(rest) == 1 else None
        if explain is None:
            yield from detector.analyze_many(rest, progress=frames, workers=workers, unordered=unordered)
        else:  # explained items run one after another (see Detector.analyze_many)
            folder, method = explain
            results = detector.analyze_many_results(rest, progress=progress.frame_callback, explain=method)
            yield from _explained(results, folder, method, progress)
        return


def run(args: argparse.Namespace) -> int:
    from cevit.output import atomic_write_text, check_output_target, is_directory_target, report_file_name

    _check_arguments(args)
    dir_target = args.output is not None and is_directory_target(args.output)
    out_path = check_output_target(args.output) if args.output is not None else None  # before any work
    explain = None
    if args.explain is not None:
        from cevit.explain.maps import check_method

        explain = (check_output_target(args.explain.rstrip("/\\") + "/"), check_method(args.explain_method))
    files, reports = _expand(args.paths)
    n_inputs = len(files) + len(reports)
    fmt = args.format or ("json" if n_inputs == 1 and not dir_target else "jsonl")
    # JSON Lines on stdout stream as items finish: nothing is lost if the run is interrupted
    stream_out = sys.stdout if args.output is None and fmt == "jsonl" else None
    used: set[str] = set()
    progress = _Progress(len(files), enabled=not args.quiet and sys.stderr.isatty())

    def emit(report: dict[str, Any]) -> None:
        if "error" in report:
            progress.write(f"cevit: error: {report['error']}")  # one line per failed input
        if stream_out is not None:
            stream_out.write(json.dumps(report) + "\n")
            stream_out.flush()
        if dir_target and out_path is not None:
            atomic_write_text(out_path / report_file_name(str(report["source"]), used),
                              json.dumps(report, indent=2) + "\n")  # fmt: skip

    def load() -> Any:
        from cevit.inference.pipeline import load_model

        return load_model(args.model, weights=args.weights, device=args.device, num_frames=args.frames,
                          rule=args.rule, threshold=args.threshold, backend=args.backend,
                          precision=args.precision, **limit_options(args))  # fmt: skip

    for r in reports:  # arguments that could not be resolved
        emit(r)
    try:
        for report in _analyse(files, load, progress, explain, workers=args.workers, unordered=args.unordered):
            progress.file_done()
            reports.append(report)
            emit(report)
    except KeyboardInterrupt:  # keep every finished report: an --output FILE gets those done so far
        if out_path is not None and not dir_target and reports:
            buf = io.StringIO()
            write_reports(reports, fmt, buf)
            atomic_write_text(out_path, buf.getvalue(), allow_special=True)
        raise
    finally:
        progress.close()
    if out_path is not None and not dir_target:
        buf = io.StringIO()
        write_reports(reports, fmt, buf)
        atomic_write_text(out_path, buf.getvalue(), allow_special=True)
    elif stream_out is None and not dir_target:
        write_reports(reports, fmt, sys.stdout)
    failed = sum(1 for r in reports if "error" in r)
    if n_inputs > 1 and not args.quiet:
        if fmt == "table" and args.output is None:  # the table is on stdout already: do not print it twice
            sys.stderr.write(f"\n{summary_line(reports)}\n")
        else:
            sys.stderr.write(f"\n{summary_line(reports)}; most suspicious first:\n")
            sys.stderr.write(format_table(reports))
    return 1 if failed else 0
