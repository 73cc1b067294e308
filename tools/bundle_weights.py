"""Bundle a trained checkpoint as the package's default weights (fp16 storage), checking the logit drift.

    python tools/bundle_weights.py runs/default_v1_lfw_sbi/best.safetensors [--preset CROSS-EFFICIENT-VIT-V1]
        [--eval-metrics runs/eval_public_v1/metrics.json] [--max-drift 1e-3]

Writes ``src/cevit/weights/<preset>.safetensors`` (loaded by ``load_model(preset)`` and ``cevit analyze`` without
``--weights``) with the source checkpoint's provenance plus the evaluation metrics, and prints the largest
|logit(fp16 storage) - logit(fp32)| over the sample face and random inputs; refuses when it exceeds --max-drift.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from cevit.checkpoint import file_sha256, load_checkpoint, save_checkpoint
    from cevit.faces import MTCNN
    from cevit.media import load_image
    from cevit.preprocess import preprocess_faces

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--preset", default="CROSS-EFFICIENT-VIT-V1")
    p.add_argument("--eval-metrics", default=None, help="metrics.json of `cevit evaluate` to record in the provenance")
    p.add_argument("--max-drift", type=float, default=1e-3)
    args = p.parse_args(argv)

    model = load_checkpoint(args.checkpoint)
    provenance = dict(model.checkpoint_info.provenance)
    provenance["bundled_from"] = {"file": Path(args.checkpoint).name, "sha256": file_sha256(args.checkpoint)}
    if args.eval_metrics:
        m = json.loads(Path(args.eval_metrics).read_text())
        keep = ("auc", "auc_ci95", "ap", "eer", "accuracy", "f1", "n_items", "n_real", "n_fake", "threshold")
        provenance["eval_public"] = {k: m.get(k) for k in keep}
        if "frame_level" in m:
            provenance["eval_public"]["frame_level_auc"] = m["frame_level"].get("auc")
        provenance["eval_public"]["by_media_type"] = {
            k: {"auc": v.get("auc"), "n_items": v.get("n_items")} for k, v in m.get("by_group", {}).items()
            if k.startswith("media_type=")
        }
    out = ROOT / "src" / "cevit" / "weights" / f"{args.preset}.safetensors"
    digest = save_checkpoint(model, out, half=True, **provenance)
    half = load_checkpoint(out)
    image = load_image(ROOT / "src" / "cevit" / "samples" / "astronaut.jpg")
    face = MTCNN().detect_one(image)[0]
    x = torch.cat([preprocess_faces([image], [face.box], model.preprocessing),
                   torch.randn(7, 3, model.config.image_size, model.config.image_size)])  # fmt: skip
    with torch.inference_mode():
        drift = (half(x) - model(x)).abs().max().item()
        p_face = torch.sigmoid(model(x[:1])).item()
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, sha256 {digest}); max |dlogit| fp16 vs fp32 = {drift:.2e}; "
          f"sample face P(fake) = {p_face:.4f}")  # fmt: skip
    if drift > args.max_drift:
        out.unlink()
        print(f"refused: logit drift {drift:.2e} > {args.max_drift}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
