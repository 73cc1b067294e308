"""``cevit extract-faces DATA --output OUT``: dataset → face crops + index.csv (resumable, parallel)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract-faces",
        help="extract face crops and an index from a dataset of images/videos",
        description="Detect faces (MTCNN) in a dataset and save crops plus OUT/index.csv. Layouts: generic "
        "(real/ + fake/, or a flat folder with --label), dfdc, ff++, celebdf (auto-detected). Resumable: rerun the "
        "same command to continue; failures are listed in OUT/failures.csv.",
    )
    p.add_argument("data", help="dataset root folder")
    p.add_argument("--output", "-o", required=True, help="output folder (crops, index.csv, progress.jsonl)")
    p.add_argument("--layout", default="auto", choices=("auto", "generic", "dfdc", "ff++", "celebdf"))
    p.add_argument("--label", choices=("real", "fake"), help="label of a flat folder without real/ and fake/")
    p.add_argument("--quality", default="c23", help="FaceForensics++ compression folder (default: c23)")
    p.add_argument("--frames", type=int, default=30, help="frames per video, evenly spaced (default: 30)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default: 1)")
    p.add_argument("--save-margin", type=float, default=0.6, help="margin around the square box (fraction of side)")
    p.add_argument("--save-size", type=int, default=320, help="maximum side of a saved crop in px (default: 320)")
    p.add_argument("--format", dest="crop_format", default="png", choices=("png", "jpg"))
    p.add_argument("--max-faces", type=int, default=0, help="keep at most N faces per frame (0 = all)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="only the first N items of the dataset, in its sorted order (a reproducible subset)",
    )
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cevit.cli.progress import progress_bar
    from cevit.data.extract import ExtractConfig, extract_faces
    from cevit.errors import ConfigError

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    cfg = ExtractConfig(num_frames=args.frames, workers=args.workers, save_margin=args.save_margin,
                        save_size=args.save_size, crop_format=args.crop_format, max_faces_per_frame=args.max_faces)  # fmt: skip
    with progress_bar("extracting", enabled=not args.quiet) as progress:
        s = extract_faces(args.data, args.output, layout=args.layout, label=args.label, quality=args.quality,
                          config=cfg, progress=progress, limit=args.limit)  # fmt: skip
    print(f"{s.items} items ({s.done_before} done before, {s.processed} processed, {s.failed} failed), "
          f"{s.faces} faces in {s.index_path} ({s.seconds:.1f} s)")  # fmt: skip
    return 1 if s.failed else 0
