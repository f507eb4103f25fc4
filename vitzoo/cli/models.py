"""`vitzoo list` and `vitzoo info`: the registry, as tables or JSON."""

from __future__ import annotations

import argparse
import json

from vitzoo import registry
from vitzoo.registry import ModelSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list",
        help="list the registered checkpoints",
        description="List every registered checkpoint with its family, pretraining, size and sources.",
    )
    parser.add_argument("--family", help="only this family (vit, deit, beit, dino, mae, dinov2)")
    parser.add_argument(
        "--format",
        choices=("table", "json", "markdown"),
        default="table",
        help="table: aligned text for the terminal; json: every spec field; markdown: the table of docs/zoo.md",
    )
    parser.set_defaults(func=run_list)

    parser = subparsers.add_parser(
        "info",
        help="show one checkpoint's spec",
        description="Show a registered checkpoint's architecture, parameters, preprocessing, license, "
        "sources and published results.",
    )
    parser.add_argument("name", help="a registry name, e.g. deit-small-distilled")
    parser.add_argument("--json", action="store_true", help="print the spec as JSON")
    parser.set_defaults(func=run_info)


def _params(spec: ModelSpec) -> str:
    return f"{spec.num_params / 1e6:.1f}M" if spec.num_params else "-"


def _rows(family: str | None) -> list[dict[str, str]]:
    rows = []
    for name in registry.list_models(family=family):
        spec = registry.get_spec(name)
        arch = spec.architecture
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "pretraining": spec.pretraining,
                "params": _params(spec),
                "patch": str(arch.patch_size),
                "width x depth": f"{arch.hidden_size}x{arch.depth}",
                "head": "in1k" if spec.has_imagenet_head else ("-" if not spec.num_classes else str(spec.num_classes)),
                "license": spec.license,
                "hub id": spec.hub_id,
                "timm": spec.timm_name or "-",
            }
        )
    return rows


def run_list(args: argparse.Namespace) -> int:
    if args.format == "json":
        specs = [registry.get_spec(name).to_dict() for name in registry.list_models(family=args.family)]
        print(json.dumps(specs, indent=2))
        return 0
    rows = _rows(args.family)
    columns = list(rows[0]) if rows else []
    if args.format == "markdown":
        print("| " + " | ".join(columns) + " |")
        print("|" + "|".join("---" for _ in columns) + "|")
        for row in rows:
            print(
                "| "
                + " | ".join(f"`{v}`" if k in ("name", "hub id", "timm") and v != "-" else v for k, v in row.items())
                + " |"
            )
        return 0
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns))
    return 0


def run_info(args: argparse.Namespace) -> int:
    spec = registry.get_spec(args.name)
    if args.json:
        print(json.dumps(spec.to_dict(), indent=2))
        return 0
    family = registry.get_family(spec.family)
    arch, prep = spec.architecture, spec.preprocessing
    lines = [
        f"{spec.name}  ({family.name} family)",
        f"  hub id            {spec.hub_id}",
        f"  timm              {spec.timm_name or '- (no timm equivalent)'}",
        f"  parameters        {spec.num_params:,}" if spec.num_params else "  parameters        -",
        f"  architecture      image {arch.image_size}, patch {arch.patch_size}, hidden {arch.hidden_size}, "
        f"depth {arch.depth}, heads {arch.num_heads}, MLP {arch.mlp_size}"
        + (", distillation token" if arch.distillation_token else "")
        + (f", layer scale {arch.layer_scale_init:g}" if arch.layer_scale_init else ""),
        f"  pretraining       {spec.pretraining}: {spec.method}",
        f"  pretrained on     {spec.pretrained_on}",
        f"  head              {'ImageNet-1k (1000 classes)' if spec.has_imagenet_head else (spec.num_classes or 'none')}",
        f"  preprocessing     resize {prep.resize_size} ({prep.resize_mode}), "
        + (f"centre crop {prep.crop_size}, " if prep.crop_size else "")
        + f"{prep.interpolation}, mean {list(prep.mean)}, std {list(prep.std)}",
        f"  license           {spec.license}",
        f"  paper             {family.paper_title} ({family.paper_url})",
    ]
    for key, value in spec.published.items():
        lines.append(f"  published         {key.replace('_', ' ')}: {value}")
    if spec.notes:
        lines.append(f"  notes             {spec.notes}")
    from vitzoo.convert import preprocessing_differences

    for difference in preprocessing_differences(spec):
        lines.append(f"  timm preprocesses differently: {difference}")
    print("\n".join(lines))
    return 0
