"""Make the README's explanation example: the shipped sample photo analysed with the default weights, as
``cevit analyze --explain`` draws it (annotated photo), next to both methods' heat-map overlays of its face.

    python tools/explain_example.py [--output docs/explain/astronaut.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "cevit" / "samples" / "astronaut.jpg"


def main(argv: list[str] | None = None) -> int:
    from cevit.explain.maps import METHODS
    from cevit.explain.render import annotate_frame, overlay
    from cevit.inference.pipeline import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default=str(ROOT / "docs" / "explain" / "astronaut.png"))
    p.add_argument("--tile", type=int, default=224)
    args = p.parse_args(argv)
    detector = load_model(device="cpu")
    tiles, captions = [], []
    for i, method in enumerate(METHODS):
        result = detector.analyze_result(SAMPLE, explain=method)
        expl = result.explanations
        if i == 0:
            frame = annotate_frame(result, expl.frame, frame_index=0, scale=expl.frame_scale)
            tiles.append(frame)
            captions.append(f"annotated (score {result.faces[0].score:.3f})")
        face = expl.faces[0]
        tiles.append(overlay(face.crop, face.heatmap))
        captions.append(f"{method} heat map")
    t, cap = args.tile, 22
    sheet = np.full((t + cap, t * len(tiles), 3), 255, np.uint8)
    for k, (img, text) in enumerate(zip(tiles, captions)):
        sheet[:t, k * t : (k + 1) * t] = cv2.resize(img, (t, t), interpolation=cv2.INTER_AREA)
        cv2.putText(sheet, text, (k * t + 6, t + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (30, 30, 30), 1, cv2.LINE_AA)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(sheet).quantize(colors=192, dither=Image.Dither.NONE).save(out, optimize=True)  # a small file
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
