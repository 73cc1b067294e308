"""``cevit evaluate --weights W DATA --output DIR``: metrics of a detector on a labelled test set."""

from __future__ import annotations

import argparse
import math

from cevit.cli.options import add_model_options, add_precision_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model on a labelled test set (metrics, scores, plots)",
        description="Run the full analysis pipeline over a labelled test set (a folder with real/ and fake/, or a "
        "manifest with a label column) and write metrics.json, report.md, scores.csv and ROC/PR/histogram plots.",
    )
    p.add_argument("data", help="test set folder, manifest file (.tsv/.csv), or a face index.csv from extract-faces")
    p.add_argument("--weights", help="checkpoint to evaluate (default: the bundled weights of --model)")
    add_model_options(p)  # --model ARCH.TAG, --rule
    p.add_argument("--output", "-o", required=True, help="output folder")
    p.add_argument("--frames", type=int, default=30, help="frames per video (default: 30)")
    p.add_argument("--threshold", type=float, default=None, help="label threshold (default: the rule's)")
    p.add_argument(
        "--reencode-jpeg",
        type=int,
        default=None,
        metavar="Q",
        help="re-encode every image as JPEG quality Q before scoring (removes format shortcuts)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUC CI (default: 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    add_precision_option(p)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="files decoded and face-detected at once while the model scores earlier ones (default: the machine's "
        "cores minus one; 0: one after another)",
    )
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cevit.cli.progress import progress_bar
    from cevit.errors import ConfigError
    from cevit.evaluation.runner import run_evaluation
    from cevit.inference.pipeline import load_model

    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    detector = load_model(args.model, weights=args.weights, device=args.device, precision=args.precision,
                          num_frames=args.frames, rule=args.rule, threshold=args.threshold)  # fmt: skip
    with progress_bar("evaluating", enabled=not args.quiet) as progress:
        m = run_evaluation(detector, args.data, args.output, reencode_jpeg=args.reencode_jpeg,
                           num_frames=args.frames, n_boot=args.bootstrap, seed=args.seed, progress=progress,
                           workers=args.workers)  # fmt: skip

    def f(v: float) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    lo, hi = m["auc_ci95"]
    print(f"items {m['n_items']} (real {m['n_real']}, fake {m['n_fake']}, failed {m['n_failed']}): "
          f"AUC {f(m['auc'])} [{f(lo)}, {f(hi)}], AP {f(m['ap'])}, EER {f(m['eer'])}, "
          f"accuracy {f(m['accuracy'])}, F1 {f(m['f1'])}")  # fmt: skip
    print(f"wrote {args.output}/metrics.json, report.md, scores.csv and plots")
    return 0
