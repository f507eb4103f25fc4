"""The `vitzoo` command: each module in this package adds its subcommands.

A module defines `register(subparsers)`, adding parsers whose `func` takes the parsed
arguments and returns an exit code. Errors vitzoo raises on purpose print as one message.
"""

from __future__ import annotations

import argparse
import importlib
import math
import pkgutil
import sys

from vitzoo import methods
from vitzoo.errors import Interrupted, VitzooError, exit_usage_error, redact_tokens
from vitzoo.training.arguments import NON_NEGATIVE, POSITIVE, SEEDS, Range
from vitzoo.version import __version__


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but its refusals are one line that never echoes a token a user typed (`--hub-token hf_...`)."""

    def error(self, message: str):
        exit_usage_error(self.prog, message)


class Number:
    """An argparse `type` for a number in a `Range` (the same ranges the recipes' flags declare), e.g.
    `Number(int, POSITIVE)`: a value outside it (not a number, not finite, out of range) is refused while the
    command line is parsed, before any work, naming the flag and the range it accepts."""

    def __init__(self, number: type, domain: Range) -> None:
        self.number, self.domain = number, domain
        self.__name__ = number.__name__  # argparse names the type in its messages

    def __call__(self, text: str) -> int | float:
        try:
            value = self.number(text)
        except ValueError:
            kind = "an integer" if self.number is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not (math.isfinite(value) and self.domain.holds(value)):
            raise argparse.ArgumentTypeError(f"must be {self.domain}, got {text}")
        return value


class Numbers(Number):
    """A comma-separated list of numbers, each in the range (`--batch-sizes 1,32`)."""

    def __call__(self, text: str) -> list[int | float]:  # type: ignore[override]
        values = [super(Numbers, self).__call__(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, each {self.domain}, got {text!r}")
        return values


POSITIVE_INT = Number(int, POSITIVE)
COUNT = Number(int, NON_NEGATIVE)  # 0 included: none of it
SEED = Number(int, SEEDS)


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
    for name in methods.RECIPES:
        subparsers.add_parser(name, help=f"run recipes/{name}.py in this process (see `vitzoo {name} --help`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command (the recipes' `python recipes/X.py` too). vitzoo's own errors print as one line and exit 2; a
    training stopped by SIGINT or SIGTERM once its checkpoint is saved says where and exits 128 + the signal (130,
    143), as a scheduler that pre-empts a job expects."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in methods.RECIPES:  # their arguments are the method's dataclass, parsed by vitzoo.methods
        command = argv[0]

        def run() -> int:
            methods.run(command, argv[1:])
            return 0
    else:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit_:
            return _refused(exit_)
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
    except SystemExit as exit_:
        return _refused(exit_)
    finally:
        engine = sys.modules.get("vitzoo.training.engine")  # loaded only by the commands that train
        if engine is not None:
            engine.release_open_runs()


def _refused(exit_: SystemExit) -> int:
    """A parser's refusal (its one line already printed) as the exit code, so that callers in-process get a code
    as the shell does; --help and --version still end the process as argparse means them to."""
    if exit_.code in (0, None):
        raise exit_
    return exit_.code if isinstance(exit_.code, int) else 2

