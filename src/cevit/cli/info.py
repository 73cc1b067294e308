"""``cevit info``: summarise a model (a preset with its bundled weights, or a checkpoint)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="print a model summary (registered weights, architecture or checkpoint)",
        description="Summarise the model that `cevit analyze` would use: registered weights (default: the "
        "bundled default weights), an architecture with fresh random weights, or --weights. "
        "--list shows the architectures and the registered weights separately.",
    )
    p.add_argument(
        "name",
        nargs="?",
        default=None,
        metavar="NAME",
        help="registered weights ARCH.TAG (default: the bundled default) or an architecture name",
    )
    p.add_argument("--weights", help="summarise this checkpoint instead")
    p.add_argument("--list", action="store_true", help="list the architectures and the registered weights, then exit")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _list(as_json: bool) -> int:
    from cevit.config import to_dict
    from cevit.inference.pipeline import bundled_weights_path
    from cevit.models.pretrained import PRETRAINED, list_pretrained
    from cevit.models.registry import PRESETS

    weights = []
    for name in list_pretrained():
        w = PRETRAINED[name]
        where = "bundled" if bundled_weights_path(name) else ("file given with --weights" if w.file is None
                                                              else "not in this installation")  # fmt: skip
        weights.append({"name": name, "architecture": w.architecture, "version": w.version or None,
                        "description": w.description, "available": where, "sha256": w.sha256,
                        "inference": to_dict(w.inference), "model_card": w.model_card})  # fmt: skip
    archs = [{"name": n, "description": p.description, "input_size": p.preprocessing.input_size}
             for n, p in PRESETS.items()]  # fmt: skip
    if as_json:
        json.dump({"architectures": archs, "weights": weights}, sys.stdout, indent=2)
        print()
        return 0
    print("architectures (create_model; fresh weights):")
    for a in archs:
        print(f"  {a['name']:28s} {a['description']}")
    print("weights (load_model / cevit analyze --model; the first is the default):")
    for w in weights:
        inf = w["inference"]
        cal = inf["calibration"]
        temp = f", temperature {cal['temperature']:.3g}" if cal["method"] != "none" else ""
        print(
            f"  {w['name']:40s} [{w['available']}] {w['description']}; rule {inf['rule']} "
            f"({inf['face_threshold']:g} / {inf['label_threshold']:g}){temp}"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    from cevit.config import to_dict
    from cevit.errors import ModelError
    from cevit.inference.pipeline import bundled_weights_path, load_weights
    from cevit.models.pretrained import DEFAULT_WEIGHTS, deprecated, get_pretrained
    from cevit.models.registry import PRESETS, create_model

    if args.list:
        return _list(args.json)
    weights_desc = args.weights
    name = args.name or DEFAULT_WEIGHTS
    old = deprecated(name)
    if old is not None:
        name = old[1]
    if args.weights:
        model = load_weights(args.weights)
    elif name in PRESETS:
        model = create_model(name)
        weights_desc = "fresh random weights (an architecture, no checkpoint)"
    else:
        name = get_pretrained(name).name  # unknown names: ModelError listing the registered weights
        bundled = bundled_weights_path(name)
        if bundled is None:
            raise ModelError(
                f"the weights {name!r} are not bundled with this installation; give the file with --weights"
            )
        model = load_weights(bundled)  # what `cevit analyze` uses without --weights
        weights_desc = f"bundled weights {name} ({bundled.name}, see MODEL_CARD.md)"
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
        "weights": weights_desc,
    }
    if info is not None:
        summary["checkpoint_sha256"] = info.sha256
        summary["weights_tag"] = info.weights_tag
        summary["inference"] = to_dict(info.inference) if info.inference is not None else None
        summary["provenance"] = info.provenance
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print(f"architecture   {summary['preset']}")
    print(f"parameters     {n_params:,}")
    for part, count in summary["parameters_by_part"].items():
        print(f"  {part:22s} {count:,}")
    for branch, g in model.token_grids.items():
        print(
            f"{branch} branch      {g['channels']} ch, {g['feature_grid']}x{g['feature_grid']} feature map"
            f" (padded {g['padded_grid']}), patch {g['patch_size']} -> {g['patch_grid']}x{g['patch_grid']}"
            f" patches + CLS = {g['tokens']} tokens"
        )
    pp = model.preprocessing
    print(
        f"input          {pp.input_size}x{pp.input_size} {pp.channel_order}, /{pp.value_scale:g}, mean {pp.mean}, "
        f"std {pp.std}, resize {pp.resize_mode}, crop margin {pp.crop_margin}, border {pp.crop_border}"
    )
    print(f"weights        {summary['weights']}")
    if info is not None:
        print(f"sha256         {info.sha256}")
        if info.inference is not None:
            inf = info.inference
            print(f"inference      rule {inf.rule} ({inf.face_threshold:g} / {inf.label_threshold:g}), calibration "
                  f"{inf.calibration.method} (temperature {inf.calibration.temperature:.4g}), detector min face "
                  f"{inf.detector.min_face_size} px")  # fmt: skip
        ev = info.provenance.get("eval_public") if isinstance(info.provenance, dict) else None
        if isinstance(ev, dict):
            parts = [f"{k.split('=', 1)[1]}s AUC {v['auc']:.3f}" for k, v in sorted(ev.get("by_media_type", {}).items())
                     if isinstance(v, dict) and isinstance(v.get("auc"), float)]  # fmt: skip
            if parts:
                print(
                    f"evaluation     eval_public: {', '.join(parts)} (see MODEL_CARD.md for what this does and does not mean)"
                )
    return 0
