"""The `vitzoo` command: each module in this package adds its subcommands.

A module defines `register(subparsers)`, adding parsers whose `func` takes the parsed
arguments and returns an exit code. Errors vitzoo raises on purpose print as one message.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from vitzoo import __version__
from vitzoo.errors import VitzooError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitzoo",
        description="The vision-transformer family (ViT, DeiT, BEiT, DINO, MAE, DINOv2) as one zoo "
        "over transformers and timm. `vitzoo COMMAND --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"vitzoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{module.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VitzooError as error:
        print(f"vitzoo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vitzoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
