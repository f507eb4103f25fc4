"""What a training method is, the table of them, and the command line of the recipes built on it.

A `Method` names its recipe (the command that runs it: `vitzoo finetune|distill|pretrain`), its
arguments dataclass, the start-up banner's title and modes, and the function that trains on parsed
arguments. Each file of this package registers one on import, as the families register theirs; the
recipes' commands, their `--method` choices and `--help` all come from this one table.

`parse(recipe, argv)` picks the method's class from `--method`, reads `--config FILE` first (its keys
are the class's fields) and lets command-line flags override it, like transformers' example scripts
but without exec-style configurators. A flag (or config key) the method does not use is refused before
anything runs, naming the flag and the commands that do take it; `--help` lists exactly the method's
flags. `run(recipe, argv)` parses and trains: the CLI, the scripts in recipes/, compare and peers call it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import HfArgumentParser

from vitzoo.errors import BadInputError
from vitzoo.training.arguments import GIVEN, HelpFormatter, RecipeParser, given_on_command_line, read_config_file
from vitzoo.training.objective import Callback

# the commands that train, in the order `vitzoo --help` and the refusals list them
RECIPES = ("finetune", "distill", "pretrain")


@dataclass(frozen=True)
class Method:
    """One way to train, as its recipe runs it.

    `rank` orders the methods of a recipe; the first is the recipe's default `--method`. A recipe with a
    single method whose arguments have no `method` field takes no `--method` flag (fine-tuning)."""

    name: str
    recipe: str
    arguments: type
    title: str
    modes: tuple[str, ...]
    train: Callable[[Any, Sequence[Callback]], dict]
    description: str
    rank: int = 0

    @property
    def option(self) -> str | None:
        """The `--method` value that selects this method, None where its recipe has no such flag."""
        return self.name if any(f.name == "method" for f in dataclasses.fields(self.arguments)) else None

    @property
    def command(self) -> str:
        return command_name(self.recipe, self.option)


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.recipe not in RECIPES:
        raise ValueError(f"method {method.name!r}: unknown recipe {method.recipe!r}; one of {', '.join(RECIPES)}")
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    _METHODS[method.name] = method
    return method


def methods_of(recipe: str) -> list[Method]:
    """The recipe's methods, its default first."""
    return sorted((m for m in _METHODS.values() if m.recipe == recipe), key=lambda m: (m.rank, m.name))


def recipes() -> dict[str, dict[str | None, type]]:
    """recipe -> `--method` value (None: the recipe has no --method) -> arguments class, in command order."""
    return {recipe: {method.option: method.arguments for method in methods_of(recipe)} for recipe in RECIPES}


def default_method(recipe: str) -> str | None:
    return methods_of(recipe)[0].option


def get(recipe: str, method: str | None = None) -> Method:
    """The method `recipe --method method` runs (the recipe's default when `method` is None)."""
    found = methods_of(recipe)
    if method is None:
        return found[0]
    for candidate in found:
        if candidate.option == method:
            return candidate
    choices = [m.option for m in found if m.option]
    raise BadInputError(f"vitzoo {recipe}: unknown --method {method!r}; choose one of {', '.join(choices)}")


def command_name(recipe: str, method: str | None) -> str:
    return f"vitzoo {recipe}" + (f" --method {method}" if method else "")


def arguments_class(recipe: str, method: str | None = None) -> type:
    """The arguments dataclass of `recipe` (and `method`, default the recipe's default method)."""
    return get(recipe, method).arguments


def build_parser(recipe: str, method: str | None = None) -> HfArgumentParser:
    chosen = get(recipe, method)
    options = [m.option for m in methods_of(recipe) if m.option]
    others = f"\n\nThe flags depend on --method ({', '.join(options)}): `vitzoo {recipe} --method M --help` lists them." if options else ""
    # no abbreviations: `--teacher` must not silently become DINO's `--teacher-temp`
    parser = RecipeParser(chosen.arguments, prog=f"vitzoo {recipe}",
                          description=chosen.description + others,
                          formatter_class=HelpFormatter, allow_abbrev=False)
    for action in parser._actions:
        if action.dest == "method":
            action.choices = options
    parser.add_argument("--config", default=None, help="YAML or JSON file of arguments (flags given here override it)")
    return parser


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _users(flag: str, recipe: str, method: str | None) -> list[str]:
    """The other recipes and methods that take `flag`."""
    return [command_name(other, other_method) for other, methods in recipes().items() for other_method in methods
            if (other, other_method) != (recipe, method) and flag in _flags(build_parser(other, other_method))]


def _refuse(flags: list[str], recipe: str, method: str | None) -> BadInputError:
    command = command_name(recipe, method)
    parts = []
    for flag in flags:
        users = _users(flag, recipe, method)
        parts.append(f"{flag} (used by {', '.join(users)})" if users else f"{flag} (no vitzoo command has it)")
    return BadInputError(f"{command} does not use {'; '.join(parts)}. Drop it; `{command} --help` lists the flags "
                         f"{'this method' if method else 'it'} takes")


def _method(recipe: str, argv: list[str]) -> str | None:
    """--method from the command line, else from --config, else the recipe's default."""
    default = default_method(recipe)
    if default is None:
        return None
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--method")
    early.add_argument("--config")
    known, _ = early.parse_known_args(argv)
    if known.method is None and known.config:
        known.method = read_config_file(known.config).get("method")
    return known.method or default


def parse(recipe: str, argv: list[str] | None = None) -> Any:
    """Parse `argv` into the arguments class of `recipe` and its `--method`; `--config FILE` (YAML or
    JSON) supplies defaults first. Flags the method does not use are refused, naming them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    method = _method(recipe, argv)
    cls = arguments_class(recipe, method)
    parser = build_parser(recipe, method)
    known, rest = parser.parse_known_args(argv)
    unknown = sorted({item.split("=", 1)[0] for item in rest if re.match(r"^--?[A-Za-z]", item)})
    if unknown:
        raise _refuse(unknown, recipe, method)
    if rest:
        raise BadInputError(f"{command_name(recipe, method)}: unexpected argument(s) {' '.join(rest[:3])} (values need a flag)")
    if known.config:
        data = read_config_file(known.config)
        names = {f.name for f in dataclasses.fields(cls)}
        unused = sorted(set(data) - names)
        if unused:
            raise _refuse([f"--{name.replace('_', '-')}" for name in unused], recipe, method)
        parser.set_defaults(**data)
        known = parser.parse_args(argv)
    args = cls(**{f.name: getattr(known, f.name) for f in dataclasses.fields(cls)})
    given = given_on_command_line(parser, argv) | (set(read_config_file(known.config)) if known.config else set())
    args.__dict__[GIVEN] = frozenset(given & {f.name for f in dataclasses.fields(cls)})
    return args


def run(recipe: str, argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    """`vitzoo RECIPE argv...` in this process: parse, then train; `callbacks` watch the loop."""
    args = parse(recipe, argv)
    return get(recipe, getattr(args, "method", None)).train(args, callbacks)
