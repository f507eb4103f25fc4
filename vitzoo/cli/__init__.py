"""The `vitzoo` command: each module in this package adds its subcommands.

A module defines `register(subparsers)`, adding parsers whose `func` takes the parsed
arguments and returns an exit code. Errors vitzoo raises on purpose print as one message.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from vitzoo.errors import Interrupted, VitzooError, redact_tokens
from vitzoo.version import __version__


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but its error messages never echo a token a user typed (`--hub-token hf_...`)."""

    def error(self, message: str):
        super().error(redact_tokens(message))


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="vitzoo",
        description="The vision-transformer family (ViT, DeiT, BEiT, DINO, MAE, DINOv2) as one zoo "
        "over transformers and timm. `vitzoo COMMAND --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"vitzoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in sorted((m for m in pkgutil.iter_modules(__path__) if m.name != "__main__"), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{module.name}").register(subparsers)
    for name, module in RECIPES.items():
        subparsers.add_parser(name, help=f"run recipes/{module.rsplit('.', 1)[1]}.py in this process (see `vitzoo {name} --help`)")
    return parser


# commands that are recipes: their arguments are the recipe's own dataclass, parsed by the recipe
RECIPES = {"finetune": "vitzoo.recipes.finetune", "distill": "vitzoo.recipes.distill", "pretrain": "vitzoo.recipes.pretrain"}


def main(argv: list[str] | None = None) -> int:
    """Run one command (the recipes' `python recipes/X.py` too). vitzoo's own errors print as one line and exit 2; a
    training stopped by SIGINT or SIGTERM once its checkpoint is saved says where and exits 128 + the signal (130,
    143), as a scheduler that pre-empts a job expects."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in RECIPES:
        command, recipe = argv[0], importlib.import_module(RECIPES[argv[0]])

        def run() -> int:
            recipe.main(argv[1:])
            return 0
    else:
        args = build_parser().parse_args(argv)
        command = args.command

        def run() -> int:
            return int(args.func(args) or 0)
    try:
        return run()
    except Interrupted as stop:
        print(f"vitzoo {command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except VitzooError as error:
        print(f"vitzoo {command}: error: {redact_tokens(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before or after the training loop, which stops on a signal by itself
        print(f"vitzoo {command}: interrupted", file=sys.stderr)
        return 130

