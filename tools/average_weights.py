"""Weight-space interpolation of two checkpoints of the same architecture (WiSE-FT).

    python tools/average_weights.py BASE.safetensors FINETUNED.safetensors --alpha 0.5 -o OUT.safetensors

Writes ``(1 - alpha) * BASE + alpha * FINETUNED`` for every floating-point tensor (weights, biases and BatchNorm
running statistics; integer tensors such as ``num_batches_tracked`` come from BASE), with provenance naming both
inputs, their SHA-256 and ``alpha``. Interpolating between a model and its fine-tuned version is WiSE-FT
(Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): when the fine-tuned model was trained from
the base, the two lie in one basin and the interpolation often keeps the base's robustness to distribution shift
while gaining what fine-tuning taught. The output carries no calibration (the inference config of BASE without
its temperature): fit one with ``cevit calibrate`` on validation data.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    from cevit.checkpoint import file_sha256, load_checkpoint, save_checkpoint
    from cevit.errors import CevitError
    from cevit.models.pretrained import Calibration

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base")
    p.add_argument("finetuned")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of FINETUNED (0: BASE, 1: FINETUNED)")
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        p.error(f"--alpha must be in [0, 1], got {args.alpha}")
    try:
        base, tuned = load_checkpoint(args.base), load_checkpoint(args.finetuned)
        if base.config != tuned.config or base.preprocessing != tuned.preprocessing:
            raise CevitError("the two checkpoints differ in architecture or preprocessing: cannot interpolate")
        a = args.alpha
        sd_b, sd_t = base.state_dict(), tuned.state_dict()
        mixed = {k: ((1 - a) * v.float() + a * sd_t[k].float()).to(v.dtype) if v.is_floating_point() else v
                 for k, v in sd_b.items()}  # fmt: skip
        base.load_state_dict(mixed)
        info = base.checkpoint_info
        inference = None
        if info is not None and info.inference is not None:
            inference = dataclasses.replace(info.inference, calibration=Calibration())
        digest = save_checkpoint(
            base, args.output, inference=inference, weights_tag=None,
            recipe={"method": "WiSE-FT weight interpolation", "alpha": a},
            data={"base": {"path": args.base, "sha256": file_sha256(args.base)},
                  "finetuned": {"path": args.finetuned, "sha256": file_sha256(args.finetuned)}},
        )  # fmt: skip
    except CevitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} (alpha {a}, sha256 {digest})")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main())
