"""``cevit scan SOURCE... --output RESULTS``: a resumable scan of a large collection (see :mod:`cevit.scan`).

Exit codes: 0 every item of this run analysed (some may have no face); 1 some items failed (their error rows are in
the output); 2 usage error; 3 model error; 130 interrupted by Ctrl-C or SIGTERM (the finished rows are committed:
re-run to continue).
"""

from __future__ import annotations

import argparse
import signal
import sys

from cevit.cli.options import add_model_options, add_precision_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scan",
        help="scan a large collection into Parquet/JSONL results, resumable, locally or on a Ray cluster",
        description="Analyse every image and video of folders, glob patterns or manifests (CSV with a header or "
        "JSONL; column/key 'path', optional 'id' and 'label') into RESULTS/parquet/part-*.parquet and/or "
        "RESULTS/jsonl/part-*.jsonl, one row per item. Re-running the same command skips items already in "
        "RESULTS (by path+size+mtime, or by content with --hash).",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="folders, glob patterns, files, .csv/.jsonl manifests")
    p.add_argument("--output", "-o", required=True, metavar="RESULTS", help="output folder (created if missing)")
    p.add_argument("--format", choices=("parquet", "jsonl", "both"), default="parquet",
                   help="output format (default: parquet)")  # fmt: skip
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: an actor pool on a Ray cluster")  # fmt: skip
    p.add_argument("--address", default=None,
                   help="ray: join this cluster (auto, HOST:PORT or ray://HOST:10001); default: start a local one")  # fmt: skip
    p.add_argument("--workers", type=int, default=None,
                   help="ray: actors (default: one per GPU, else one per CPU; a local cluster gets 2 CPUs)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=4, help="ray: items per actor call (default: 4)")
    p.add_argument("--hash", action="store_true", help="resume key: SHA-256 of the content instead of path+size+mtime")
    p.add_argument("--retry-failed", action="store_true", help="analyse again the items whose row is an error")
    p.add_argument("--part-size", type=int, default=100, help="rows per output part (default: 100)")
    p.add_argument("--flush-seconds", type=float, default=60.0,
                   help="commit a part at least this often while items finish (default: 60)")  # fmt: skip
    p.add_argument("--top", type=int, default=10, help="most suspicious items in the summary (default: 10)")
    p.add_argument("--weights", help="checkpoint: a cevit .safetensors or the authors' .pth (default: bundled weights)")
    add_model_options(p)
    p.add_argument("--frames", type=int, default=30, help="frames sampled evenly per video (default: 30)")
    p.add_argument("--threshold", type=float, default=None, help="label threshold: FAKE above it (default: the rule's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda, cuda:N (default: auto)")
    add_precision_option(p)
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="local engine: torch threads (default: torch's choice, all cores; on a machine busy with "
                   "other work, 1 can be several times faster); Ray actors always use 1")  # fmt: skip
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=run)


def format_summary(summary: object) -> str:
    from cevit.scan import ScanSummary

    assert isinstance(summary, ScanSummary)
    s = summary
    lines = [
        f"{'interrupted' if s.interrupted else 'done'}: {s.scanned} item(s) analysed in {s.seconds:.1f} s "
        f"({s.items_per_second:.2f} items/s, engine {s.engine}), {s.errors} failed, {s.skipped} already done",
        f"{s.output}: {s.rows} rows: {s.ok} with faces ({s.fake} FAKE), {s.no_face} no face, {s.failed} errors",
    ]
    if s.error_messages:
        lines.append("errors:" if s.errors <= len(s.error_messages) else f"first {len(s.error_messages)} errors:")
        lines.extend(f"  {message}" for message in s.error_messages)
    if s.most_suspicious:
        lines.append("most suspicious:")
        lines.extend(f"  {m.score:6.3f} {m.prediction:4s}  {m.source}" for m in s.most_suspicious)
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from cevit.cli.main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
    from cevit.cli.progress import progress_bar
    from cevit.errors import ConfigError
    from cevit.scan import DetectorSpec, ScanConfig, run_scan

    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1], got {args.threshold}")
    formats = ("parquet", "jsonl") if args.format == "both" else (args.format,)
    config = ScanConfig(
        sources=tuple(args.sources), output=args.output, formats=formats, engine=args.engine, address=args.address,
        workers=args.workers, batch_size=args.batch_size, use_hash=args.hash, retry_failed=args.retry_failed,
        part_size=args.part_size, flush_seconds=args.flush_seconds, top=args.top,
    )  # fmt: skip
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    spec = DetectorSpec(model=args.model, weights=args.weights, device=args.device, num_frames=args.frames,
                        rule=args.rule, threshold=args.threshold, threads=args.threads,
                        precision=args.precision)  # fmt: skip

    def on_sigterm(signum: int, frame: object) -> None:  # a scheduler's stop: commit like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with progress_bar("scanning", unit="item", enabled=not args.quiet) as update:
            summary = run_scan(config, spec=spec, progress=update)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        sys.stderr.write(format_summary(summary))
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary.errors else EXIT_OK
