"""``cevit convert-original IN.pth OUT.safetensors``: the authors' checkpoint → cevit's format."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-original",
        help="convert the authors' cross_efficient_vit.pth into a cevit checkpoint",
        description="Convert the authors' released Cross Efficient ViT state dict (loaded with weights_only=True, "
        "never executing code) into a cevit safetensors checkpoint with the coccomini2022 preset.",
    )
    p.add_argument("input", help="the authors' .pth file")
    p.add_argument("output", help="the .safetensors file to write")
    p.add_argument("--config", help="authors' model config (YAML/JSON with hyphenated keys) for a non-default size")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cevit.convert import config_from_original, convert_original_file

    config = None
    if args.config:
        import yaml

        from cevit.errors import ConfigError

        try:
            with open(args.config, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{args.config}: cannot read config ({exc})") from None
        config = config_from_original(data.get("model", data) if isinstance(data, dict) else {})
    digest = convert_original_file(args.input, args.output, config=config)
    print(f"wrote {args.output} (sha256 {digest})")
    return 0
