"""Bundle a trained checkpoint as the package's default weights: fp16 storage, checked logit drift, size limit.

    python tools/bundle_weights.py runs/default_v1_lfw_sbi_stage3/best.safetensors \\
        --faces-index data/lfw_faces/index.csv [--storage mixed|fp16-rounded] \\
        [--eval-metrics runs/eval_public_default/metrics.json] --weights-tag cross_efficient_vit_v1_224.lfw_sbi_v2 \\
        [--max-drift 1e-3] [--max-mib 30]

The shipped default weights were bundled with ``--storage fp16-rounded`` (see MODEL_CARD.md).

Writes ``src/cevit/weights/<weights tag>.safetensors`` (``architecture.tag``; registered in
:mod:`cevit.models.pretrained`, whose entry must then name the file and its SHA-256, printed at the end) with the
source checkpoint's provenance and inference config (calibration included), the evaluation metrics and a
``storage`` record.

Storage (``--storage``):

* ``mixed`` (default): every floating tensor is stored as fp16 except the few whose rounding moves the logits
  most, which stay fp32 (loading always gives an fp32 model). The tensors to keep are chosen on real faces:
  (1) calibration faces (``--n-calib``) and disjoint check faces (``--n-check`` plus the packaged sample photo)
  come from a face index (real rows, a fixed stride), preprocessed with the checkpoint's own contract; (2) each
  tensor's first-order effect on the logits, ``max_i |grad_i . (fp16(w) - w)|`` over the calibration faces,
  ranks the tensors (1-D tensors -- norms, biases, BN statistics -- always stay fp32); (3) the shortest prefix
  of that ranking whose *measured* drift on the calibration faces is <= ``--calib-fraction`` x ``--max-drift``
  is kept in fp32 (bisection over the prefix length); (4) the written file is reloaded and its drift measured
  on the check faces: above ``--max-drift``, or a file above ``--max-mib``, and the file is deleted and the tool
  fails.
* ``fp16-rounded``: the trained weights are rounded to fp16 and *the rounded weights are the model*: the file
  stores them exactly (storage drift 0, checked) and every number published for the default weights must be
  measured with this file. The change the rounding itself makes to the logits on the check faces is measured
  and recorded in the provenance (``storage.rounding_drift``), not enforced.

Why two modes: the early EfficientNet convolutions of the V1 sm branch amplify rounding errors (BatchNorm gains
up to ~20), so rounding every tensor to fp16 moves the logits by ~3e-2, and keeping enough tensors in fp32 to stay
under 1e-3 costs ~2.5 M fp32 values, ~31.6 MiB for the V1 default, above the 30 MiB limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _faces(index: str, n_calib: int, n_check: int, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    from cevit.data import load_crop, read_index
    from cevit.faces import MTCNN
    from cevit.media import load_image
    from cevit.preprocess import FacePreprocessor

    rows = [r for r in read_index(index) if r.label == 0 and r.face_index == 0]
    need = n_calib + n_check
    if len(rows) < need:
        raise SystemExit(f"{index}: {len(rows)} usable real faces, need {need}")
    stride = len(rows) // need
    picked = rows[::stride][:need]
    crops = [load_crop(r.crop_path) for r in picked]
    if any(c is None for c in crops):
        raise SystemExit(f"{index}: some face crops cannot be read")
    preprocessor = FacePreprocessor(spec=model.preprocessing)
    x = preprocessor(crops, [r.box for r in picked], valid=[r.valid for r in picked])
    sample = load_image(ROOT / "src" / "cevit" / "samples" / "astronaut.jpg")
    face = MTCNN().detect_one(sample)[0]
    xs = preprocessor([sample], [face.box])
    return x[:n_calib], torch.cat([x[n_calib:], xs])  # disjoint calibration and check faces


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(x[i : i + 16]) for i in range(0, len(x), 16)]).squeeze(1)


def _rounded(state: dict[str, torch.Tensor], keep32: set[str]) -> dict[str, torch.Tensor]:
    return {k: (v if k in keep32 or not v.is_floating_point() else v.half().float()) for k, v in state.items()}


def _drift(model: torch.nn.Module, state: dict[str, torch.Tensor], keep32: set[str], x: torch.Tensor,
           ref: torch.Tensor) -> float:  # fmt: skip
    model.load_state_dict(_rounded(state, keep32))
    try:
        return (_logits(model, x) - ref).abs().max().item()
    finally:
        model.load_state_dict(state)


def _ranking(model: torch.nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor) -> list[tuple[str, float]]:
    """Candidate tensors (floating, >= 2-D) ordered by the first-order logit effect of their fp16 rounding."""
    params = {k: p for k, p in model.named_parameters() if p.ndim >= 2}
    delta = {k: state[k].half().float() - state[k] for k in params}
    effect = dict.fromkeys(params, 0.0)
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        model(x[i : i + 1]).sum().backward()
        for k, p in params.items():
            if p.grad is not None:
                effect[k] = max(effect[k], abs(float((p.grad * delta[k]).sum())))
    model.zero_grad(set_to_none=True)
    return sorted(effect.items(), key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> int:
    from cevit.checkpoint import file_sha256, load_checkpoint, save_checkpoint

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--faces-index", required=True, help="face index CSV with real face crops (cevit extract-faces)")
    p.add_argument(
        "--weights-tag",
        required=True,
        metavar="ARCH.TAG",
        help="name of the weights, e.g. cross_efficient_vit_v1_224.mixed_v3 (the architecture must be the "
        "checkpoint's)",
    )
    p.add_argument("--eval-metrics", default=None, help="metrics.json of `cevit evaluate` to record in the provenance")
    p.add_argument("--storage", choices=("mixed", "fp16-rounded"), default="mixed", help="see the module docstring")
    p.add_argument("--max-drift", type=float, default=1e-3, help="largest allowed |logit| change on the check faces")
    p.add_argument("--max-mib", type=float, default=30.0, help="largest allowed file size in MiB")
    p.add_argument(
        "--calib-fraction",
        type=float,
        default=0.75,
        help="drift target on the calibration faces, as a fraction of --max-drift",
    )
    p.add_argument("--n-calib", type=int, default=32)
    p.add_argument("--n-check", type=int, default=64)
    args = p.parse_args(argv)

    from cevit.models.pretrained import split_name

    arch, tag = split_name(args.weights_tag)
    t0 = time.perf_counter()
    model = load_checkpoint(args.checkpoint)
    if tag is None or model.checkpoint_info.architecture != arch:
        raise SystemExit(f"--weights-tag {args.weights_tag!r}: expected ARCH.TAG with the checkpoint's architecture "
                         f"{model.checkpoint_info.architecture!r}")  # fmt: skip
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calib, check = _faces(args.faces_index, args.n_calib, args.n_check, model)
    ref_calib, ref_check = _logits(model, calib), _logits(model, check)
    storage: dict[str, object] = {"mode": args.storage}
    if args.storage == "mixed":
        always = {k for k, v in state.items() if v.is_floating_point() and v.ndim <= 1}
        ranking = _ranking(model, state, calib)
        target = args.calib_fraction * args.max_drift
        all16 = _drift(model, state, always, calib, ref_calib)
        lo, hi = 0, len(ranking)  # invariant: prefix hi meets the target (all fp32 does)
        while lo < hi:
            mid = (lo + hi) // 2
            if _drift(model, state, always | {k for k, _ in ranking[:mid]}, calib, ref_calib) <= target:
                hi = mid
            else:
                lo = mid + 1
        keep = always | {k for k, _ in ranking[:hi]}
        print(f"calibration ({len(calib)} faces): fp16 except 1-D tensors drifts {all16:.2e}; keeping {hi} more "
              f"tensor(s) in fp32 reaches <= {target:.1e}")  # fmt: skip
        storage["fp16_except"] = sorted(k for k in keep if state[k].ndim >= 2)
    else:
        keep = set()
        rounding_drift = _drift(model, state, set(), check, ref_check)
        model.load_state_dict(_rounded(state, set()))  # the rounded weights are the model from here on
        print(
            f"rounding every tensor to fp16 moves the logits by up to {rounding_drift:.2e} on {len(check)} check "
            f"faces (max |dP(fake)| {(torch.sigmoid(_logits(model, check)) - torch.sigmoid(ref_check)).abs().max():.2e})"
        )
        storage["rounding_drift"] = rounding_drift
        ref_check = _logits(model, check)

    provenance = dict(model.checkpoint_info.provenance)
    provenance["bundled_from"] = {"file": Path(args.checkpoint).name, "sha256": file_sha256(args.checkpoint)}
    if args.eval_metrics:
        m = json.loads(Path(args.eval_metrics).read_text())
        kept = ("auc", "auc_ci95", "ap", "eer", "accuracy", "f1", "n_items", "n_real", "n_fake", "threshold")
        provenance["eval_public"] = {k: m.get(k) for k in kept}
        if "frame_level" in m:
            provenance["eval_public"]["frame_level_auc"] = m["frame_level"].get("auc")
        provenance["eval_public"]["by_media_type"] = {
            k: {"auc": v.get("auc"), "auc_ci95": v.get("auc_ci95"), "n_items": v.get("n_items")}
            for k, v in m.get("by_group", {}).items() if k.startswith("media_type=")
        }  # fmt: skip
    out = ROOT / "src" / "cevit" / "weights" / f"{args.weights_tag}.safetensors"
    n_fp32 = sum(state[k].numel() for k in keep)
    storage.update(
        fp32_params=n_fp32,
        max_drift_rule=args.max_drift,
        fp16_params=sum(v.numel() for k, v in state.items() if v.is_floating_point() and k not in keep),
    )
    provenance["storage"] = storage
    save_checkpoint(model, out, half=True, keep_fp32=sorted(keep), weights_tag=args.weights_tag, **provenance)
    stored = load_checkpoint(out)
    drift_check = (_logits(stored, check) - ref_check).abs().max().item()
    size_mib = out.stat().st_size / 2**20
    p_sample = torch.sigmoid(ref_check[-1]).item()
    print(f"wrote {out} ({size_mib:.2f} MiB, {n_fp32:,} fp32 values); check faces ({len(check)}): max |dlogit| "
          f"{drift_check:.2e}; sample photo P(fake) = {p_sample:.4f}; {time.perf_counter() - t0:.0f} s")  # fmt: skip
    problems = []
    if drift_check > args.max_drift:
        problems.append(f"logit drift {drift_check:.2e} > {args.max_drift}")
    if size_mib > args.max_mib:
        problems.append(f"size {size_mib:.2f} MiB > {args.max_mib} MiB")
    if problems:
        out.unlink()
        print(f"refused: {'; '.join(problems)}", file=sys.stderr)
        return 1
    # record the measured check drift in the file itself (same tensors, so the drift is unchanged)
    storage.update(max_drift_check=drift_check, n_check_faces=len(check))
    digest = save_checkpoint(model, out, half=True, keep_fp32=sorted(keep), weights_tag=args.weights_tag, **provenance)
    print(f"sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
