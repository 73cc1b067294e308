"""``cevit sbi-preview``: a PNG grid of real faces, their self-blended pseudo-fakes and the blend masks."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sbi-preview",
        help="write a PNG grid of real / self-blended pseudo-fake / mask triples",
        description="Show what self-blended-image training sees. INPUT is a face index (CSV from extract-faces; "
        "its landmarks are used) or a folder/file of images (faces are detected with MTCNN). Each row of the "
        "PNG: the real face, its pseudo-fake, the blend mask.",
    )
    p.add_argument("input", help="face index CSV, or image file(s)/folder")
    p.add_argument("--output", "-o", required=True, help="PNG file to write")
    p.add_argument("--count", type=int, default=8, help="number of faces (rows), default 8")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cevit.training.preview import collect_faces
    from cevit.training.sbi import sbi_preview

    faces = collect_faces(args.input, count=args.count, seed=args.seed)
    sbi_preview(faces, args.output, seed=args.seed)
    print(f"wrote {args.output} ({len(faces)} faces)")
    return 0
