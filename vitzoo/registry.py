"""The model registry: one `ModelSpec` per checkpoint, declared in its family's file.

A spec is the single source of truth for a checkpoint: where its weights live (a Hub id and,
where one exists, the timm `arch.tag`), its architecture, how it was pretrained, how images
must be preprocessed for it, and what was published about it. The CLI listing, the docs/zoo.md
table and the parametrized tests are all generated from here. The family files register
themselves when `vitzoo` is imported (its `__init__` imports `vitzoo.families`).
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import TYPE_CHECKING

from vitzoo.errors import UnknownModelError
from vitzoo.specs import (
    FAMILIES,
    HALF_MEAN,
    HALF_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRETRAINING_KINDS,
    Architecture,
    ModelSpec,
    Preprocessing,
)

if TYPE_CHECKING:
    from vitzoo.families.base import Family

__all__ = [
    "FAMILY_ORDER", "HALF_MEAN", "HALF_STD", "IMAGENET_MEAN", "IMAGENET_STD", "PRETRAINING_KINDS", "Architecture",
    "ModelSpec", "Preprocessing", "all_specs", "get_family", "get_spec", "list_families", "list_models", "register",
    "register_family",
]

# the order families are listed in: the historical order of the papers
FAMILY_ORDER = ("vit", "deit", "beit", "dino", "mae", "deit3", "ijepa", "dinov2", "dinov2_reg", "dinov3")

_SPECS: dict[str, ModelSpec] = {}
_FAMILIES = FAMILIES


def register_family(family: Family) -> Family:
    for other in _FAMILIES.values():
        claimed = set(family.model_types) & set(other.model_types)
        if other.name != family.name and claimed:
            raise ValueError(f"families {other.name!r} and {family.name!r} both claim model_type {sorted(claimed)}")
    _FAMILIES[family.name] = family
    return family


def register(*specs: ModelSpec) -> None:
    """Add checkpoints to the registry; a family file calls this once with all of its specs."""
    for spec in specs:
        if spec.name in _SPECS and _SPECS[spec.name] != spec:
            raise ValueError(f"model name {spec.name!r} is registered twice")
        _SPECS[spec.name] = spec


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnknownModelError(f"unknown family {name!r}; known families: {', '.join(sorted(_FAMILIES))}") from None


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def _families_in_order() -> list[Family]:
    rank = {name: index for index, name in enumerate(FAMILY_ORDER)}
    return sorted(_FAMILIES.values(), key=lambda family: rank.get(family.name, len(rank)))


def family_for_model_type(model_type: str) -> Family | None:
    """The family that claims transformers `model_type` (see `Family.model_types`), or None."""
    for family in _families_in_order():
        if model_type in family.model_types:
            return family
    return None


def known_model_types() -> list[str]:
    """Every transformers `model_type` a family claims, in the families' order."""
    return [model_type for family in _families_in_order() for model_type in family.model_types]


def base_model_prefixes() -> list[str]:
    """The `base_model_prefix` of every family's transformers classes ("vit", "deit", ...), once each."""
    return list(dict.fromkeys(prefix for family in _families_in_order() for prefix in family.base_model_prefixes))


def head_names() -> frozenset[str]:
    """Top-level module names of the classification heads of every family's models (both libraries)."""
    return frozenset().union(*(family.head_names for family in _families_in_order()))


def is_registered(name: str) -> bool:
    return name in _SPECS


def closest_names(name: str, n: int = 5) -> list[str]:
    return difflib.get_close_matches(name, list(_SPECS), n=n, cutoff=0.4)


def get_spec(name: str) -> ModelSpec:
    """The spec registered under `name`; an unknown name lists the closest registered ones."""
    try:
        return _SPECS[name]
    except KeyError:
        close = closest_names(name)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} `vitzoo list` shows every registered name; "
            "a local folder or a timm model name works too."
        ) from None


def list_models(family: str | None = None, pattern: str | None = None) -> list[str]:
    """Registered names, optionally of one family and matching a shell-style pattern (`deit-*`)."""
    if family is not None:
        get_family(family)
    specs = sorted(_SPECS.values(), key=lambda s: FAMILY_ORDER.index(s.family) if s.family in FAMILY_ORDER else 99)
    names = [s.name for s in specs if family is None or s.family == family]
    if pattern is not None:
        names = fnmatch.filter(names, pattern)
    return names


def all_specs() -> list[ModelSpec]:
    return list(_SPECS.values())
