"""``cevit info``: summarise a model (a preset with its bundled weights, or a checkpoint)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a model summary (preset or checkpoint)",
                       description="Summarise the model that `cevit analyze` would use: the preset with its bundled default "
                                   "weights (fresh random weights when none are bundled), or --weights.")
    p.add_argument("preset", nargs="?", default=None, help="preset name (default: CROSS-EFFICIENT-VIT-V1)")
    p.add_argument("--weights", help="summarise this checkpoint instead of the preset's bundled weights")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cevit.config import to_dict
    from cevit.inference.pipeline import bundled_weights_path
    from cevit.models.registry import DEFAULT_PRESET, PRESETS, create_model

    if args.list:
        for name, preset in PRESETS.items():
            bundled = "bundled weights" if bundled_weights_path(name) else "no bundled weights"
            print(f"{name:24s} {preset.description} [{bundled}]")
        return 0
    from cevit.inference.pipeline import load_weights

    weights_desc = args.weights
    if args.weights:
        model = load_weights(args.weights)
    elif (bundled := bundled_weights_path(args.preset or DEFAULT_PRESET)) is not None:
        model = load_weights(bundled)  # what `cevit analyze` uses without --weights
        weights_desc = f"bundled default weights ({bundled.name}, see MODEL_CARD.md)"
    else:
        model = create_model(args.preset or DEFAULT_PRESET)
    n_params = sum(p.numel() for p in model.parameters())
    info = getattr(model, "checkpoint_info", None)
    summary = {
        "preset": model.preset_name,
        "parameters": n_params,
        "parameters_by_part": {
            name: sum(p.numel() for p in getattr(model, name).parameters())
            for name in ("sm_image_embedder", "lg_image_embedder", "multi_scale_encoder", "sm_mlp_head", "lg_mlp_head")
        },
        "token_grids": model.token_grids,
        "config": to_dict(model.config),
        "preprocessing": to_dict(model.preprocessing),
        "weights": weights_desc or "fresh random weights (no checkpoint, none bundled)",
    }
    if info is not None:
        summary["checkpoint_sha256"] = info.sha256
        summary["provenance"] = info.provenance
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print(f"model          {summary['preset']}")
    print(f"parameters     {n_params:,}")
    for part, count in summary["parameters_by_part"].items():
        print(f"  {part:22s} {count:,}")
    for branch, g in model.token_grids.items():
        print(f"{branch} branch      {g['channels']} ch, {g['feature_grid']}x{g['feature_grid']} feature map"
              f" (padded {g['padded_grid']}), patch {g['patch_size']} -> {g['patch_grid']}x{g['patch_grid']}"
              f" patches + CLS = {g['tokens']} tokens")
    pp = model.preprocessing
    print(f"input          {pp.input_size}x{pp.input_size} {pp.channel_order}, /{pp.value_scale:g}, mean {pp.mean}, "
          f"std {pp.std}, resize {pp.resize_mode}, crop margin {pp.crop_margin}, border {pp.crop_border}")
    print(f"weights        {summary['weights']}")
    if info is not None:
        print(f"sha256         {info.sha256}")
        ev = info.provenance.get("eval_public") if isinstance(info.provenance, dict) else None
        if isinstance(ev, dict):
            parts = [f"{k.split('=', 1)[1]}s AUC {v['auc']:.3f}" for k, v in sorted(ev.get("by_media_type", {}).items())
                     if isinstance(v, dict) and isinstance(v.get("auc"), float)]  # fmt: skip
            if parts:
                print(f"evaluation     eval_public: {', '.join(parts)} (see MODEL_CARD.md for what this does and does not mean)")
    return 0
