"""Per-source results on the public evaluation set, as Markdown tables (for MODEL_CARD.md).

    python tools/eval_sources.py runs/eval_public_v2/scores.csv [--manifest ../shared/data/eval_public/MANIFEST.tsv]

Reads the ``scores.csv`` written by ``cevit evaluate`` and the set's ``MANIFEST.tsv`` and prints, with the same
metric functions as ``cevit evaluate`` (AUC with a 1,000-sample bootstrap 95 % interval, accuracy and F1 at the
given threshold):

* one row per source family and media kind: CIPLAB Photoshop face-part swaps vs their real photos, StyleGAN faces
  vs CelebA-HQ photos, DFDC, FF++/DFD, and all images / all videos;
* one row per FF++ manipulation method: that method's fake videos vs all FF++ original videos of the set;
* FF++ pairs: each fake video ``<target>_<source>`` against the original video of its target (when the set has
  it) -- the fake should score higher.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

FAMILIES = (
    ("Real and Fake Face Detection", "CIPLAB Photoshop face-part swaps vs real photos"),
    ("CelebA-HQ", "StyleGAN faces vs CelebA-HQ photos"),
    ("StyleGAN", "StyleGAN faces vs CelebA-HQ photos"),
    ("DFDC", "DFDC"),
    ("FF++", "FF++ / DFD"),
    ("DFD", "FF++ / DFD"),
)
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
_FAKE = re.compile(r"ffpp_(" + "|".join(METHODS) + r")_(?:c23_)?(\d{3})_(\d{3})")
_ORIGINAL = re.compile(r"ffpp_original_(?:youtube_c23_)?(\d{3})")


def family(dataset_of_origin: str) -> str:
    for prefix, name in FAMILIES:
        if dataset_of_origin.startswith(prefix):
            return name
    return dataset_of_origin


def main(argv: list[str] | None = None) -> int:
    from cevit.evaluation.metrics import bootstrap_ci, roc_auc, threshold_metrics

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scores", help="scores.csv of `cevit evaluate`")
    p.add_argument("--manifest", default="../shared/data/eval_public/MANIFEST.tsv")
    p.add_argument("--threshold", type=float, default=0.5)
    args = p.parse_args(argv)

    root = Path(args.manifest).resolve().parent
    with open(args.manifest, newline="", encoding="utf-8") as fh:
        manifest = {r["file"]: r for r in csv.DictReader(fh, delimiter="\t")}
    scores: dict[str, float] = {}
    with open(args.scores, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            src = Path(r["source"]).resolve()
            rel = src.relative_to(root).as_posix() if src.is_relative_to(root) else r["source"]
            if r["score"]:
                scores[rel] = float(r["score"])
    missing = [f for f in manifest if f not in scores]
    if missing:
        print(f"note: {len(missing)} manifest item(s) have no score (failed or no face): {', '.join(missing[:5])}",
              file=sys.stderr)  # fmt: skip

    groups: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    originals: dict[str, float] = {}
    fakes: list[tuple[str, str, str, float]] = []
    for rel, row in manifest.items():
        if rel not in scores:
            continue
        y, s, kind = int(row["label"] == "FAKE"), scores[rel], row["kind"]
        groups[(family(row["dataset_of_origin"]), kind)].append((y, s))
        groups[(f"all {kind}s", kind)].append((y, s))
        if kind == "video" and (m := _ORIGINAL.search(rel)) and y == 0:
            originals[m.group(1)] = s
        elif kind == "video" and (m := _FAKE.search(rel)) and y == 1:
            fakes.append((m.group(1), m.group(2), m.group(3), s))
    for method in METHODS:
        rows = [(1, s) for meth, _, _, s in fakes if meth == method] + [(0, s) for s in originals.values()]
        if any(y for y, _ in rows):
            groups[(f"FF++ {method} vs FF++ originals", "video")] = rows

    print(f"| source | kind | real / fake | AUC | 95 % CI | accuracy @{args.threshold} | F1 @{args.threshold} |")
    print("|---|---|---|---|---|---|---|")
    order = sorted(groups, key=lambda k: (not k[0].startswith("all"), k[1], k[0]))
    for name, kind in order:
        ys = [y for y, _ in groups[(name, kind)]]
        ss = [s for _, s in groups[(name, kind)]]
        n_fake = sum(ys)
        auc, ci = float("nan"), (float("nan"), float("nan"))
        if 0 < n_fake < len(ys):
            auc, ci = roc_auc(ys, ss), bootstrap_ci(ys, ss, n_boot=1000, seed=0)
        tm = threshold_metrics(ys, ss, args.threshold)
        fmt = lambda v: "n/a" if math.isnan(v) else f"{v:.2f}"  # noqa: E731
        print(f"| {name} | {kind} | {len(ys) - n_fake} / {n_fake} | {'n/a' if math.isnan(auc) else f'{auc:.3f}'} | "
              f"[{fmt(ci[0])}, {fmt(ci[1])}] | {tm['accuracy']:.3f} | {tm['f1']:.3f} |")  # fmt: skip

    pairs = [(meth, t, src, s, originals[t]) for meth, t, src, s in fakes if t in originals]
    if pairs:
        won = sum(1 for *_, s, o in pairs if s > o)
        print(f"\nFF++ pairs (fake `<target>_<source>` vs the target's original): the fake scores higher in {won} of "
              f"{len(pairs)}.\n")  # fmt: skip
        print("| method | fake (target_source) | P(fake) of the fake | P(fake) of the target's original |")
        print("|---|---|---|---|")
        for meth, t, src, s, o in sorted(pairs):
            print(f"| {meth} | {t}_{src} | {s:.3f} | {o:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
