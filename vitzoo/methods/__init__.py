"""Training methods: one file each, registering a `Method` (`vitzoo.methods.base`) on import; every module in
this package is imported, as vitzoo/families are.

Adding a method is one file here: its arguments, its banner and its `train(args, callbacks)`. The recipes
(`vitzoo finetune|distill|pretrain`, the scripts in recipes/, compare, peers) run it through `run`.
"""

import importlib
import pkgutil

from vitzoo.methods.base import (
    RECIPES,
    Method,
    arguments_class,
    build_parser,
    command_name,
    get,
    methods_of,
    parse,
    recipes,
    register,
    run,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["RECIPES", "Method", "arguments_class", "build_parser", "command_name", "get", "methods_of", "parse",
           "recipes", "register", "run"]
