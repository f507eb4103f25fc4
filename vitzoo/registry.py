"""The model registry: one `ModelSpec` per checkpoint, declared in its family's file.

A spec is the single source of truth for a checkpoint: where its weights live (a Hub id and,
where one exists, the timm `arch.tag`), its architecture, how it was pretrained, how images
must be preprocessed for it, and what was published about it. The CLI listing, the README
table and the parametrized tests are all generated from here.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vitzoo.errors import UnknownModelError

if TYPE_CHECKING:
    from vitzoo.families.base import Family

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)

# the order families are listed in: the historical order of the papers
FAMILY_ORDER = ("vit", "deit", "beit", "dino", "mae", "dinov2")
PRETRAINING_KINDS = ("supervised", "distilled", "self-supervised", "unknown")


@dataclass(frozen=True)
class Architecture:
    """The shape of a vision transformer, in transformers' config vocabulary."""

    image_size: int
    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_size: int
    distillation_token: bool = False
    layer_scale_init: float | None = None

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint expects its pixels, as its published image processor does it.

    `resize_mode` is "exact" (squash to `resize_size` x `resize_size`) or "shortest"
    (shortest edge to `resize_size`, aspect kept); `crop_size` is the centre crop that
    follows, or None when the resize already gives the model's input size.
    """

    resize_size: int
    crop_size: int | None = None
    resize_mode: str = "exact"
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def input_size(self) -> int:
        return self.crop_size or self.resize_size

    def for_input_size(self, size: int) -> Preprocessing:
        """The same pipeline scaled to another input size (the crop ratio is kept)."""
        if size == self.input_size:
            return self
        resize = round(size * self.resize_size / self.input_size)
        return dataclasses.replace(self, resize_size=resize, crop_size=size if self.crop_size else None)


@dataclass(frozen=True)
class ModelSpec:
    """One registered checkpoint."""

    name: str
    family: str
    hub_id: str
    architecture: Architecture | None  # None only for timm models outside the registry
    preprocessing: Preprocessing
    pretraining: str  # one of PRETRAINING_KINDS
    pretrained_on: str
    timm_name: str | None = None
    num_classes: int = 0  # size of the head the published checkpoint carries (0: none)
    license: str = "apache-2.0"
    method: str = ""
    num_params: int | None = None  # published parameter count of the checkpoint as shipped
    published: dict[str, Any] = field(default_factory=dict)  # e.g. {"imagenet_top1": 79.9}
    notes: str = ""
    # the task of the class the published checkpoint is saved as; default: classification when
    # it carries a head, features otherwise
    checkpoint_task: str | None = None

    def __post_init__(self) -> None:
        if self.pretraining not in PRETRAINING_KINDS:
            raise ValueError(f"{self.name}: pretraining must be one of {PRETRAINING_KINDS}")

    @property
    def hub_task(self) -> str:
        return self.checkpoint_task or ("classification" if self.num_classes else "features")

    @property
    def has_imagenet_head(self) -> bool:
        return self.num_classes == 1000

    @property
    def timm_only(self) -> bool:
        """A model outside the registry that only timm runs (any timm name): its spec is a stand-in,
        with no architecture or facts of its own, and no transformers classes."""
        _ensure_loaded()
        family = _FAMILIES.get(self.family)
        return family is not None and family.timm_only

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["has_imagenet_head"] = self.has_imagenet_head
        fam = get_family(self.family)
        data["paper"] = {"title": fam.paper_title, "url": fam.paper_url}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("architecture") is not None:
            kwargs["architecture"] = Architecture(**kwargs["architecture"])
        prep = dict(kwargs["preprocessing"])
        prep["mean"], prep["std"] = tuple(prep["mean"]), tuple(prep["std"])
        kwargs["preprocessing"] = Preprocessing(**prep)
        return cls(**kwargs)


_SPECS: dict[str, ModelSpec] = {}
_FAMILIES: dict[str, Family] = {}


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


def _ensure_loaded() -> None:
    if not _SPECS:
        import vitzoo.families  # noqa: F401  (registers every family on import)


def get_family(name: str) -> Family:
    _ensure_loaded()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnknownModelError(f"unknown family {name!r}; known families: {', '.join(sorted(_FAMILIES))}") from None


def list_families() -> list[str]:
    _ensure_loaded()
    return sorted(_FAMILIES)


def _families_in_order() -> list[Family]:
    _ensure_loaded()
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
    _ensure_loaded()
    return name in _SPECS


def closest_names(name: str, n: int = 5) -> list[str]:
    _ensure_loaded()
    return difflib.get_close_matches(name, list(_SPECS), n=n, cutoff=0.4)


def get_spec(name: str) -> ModelSpec:
    """The spec registered under `name`; an unknown name lists the closest registered ones."""
    _ensure_loaded()
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
    _ensure_loaded()
    if family is not None:
        get_family(family)
    specs = sorted(_SPECS.values(), key=lambda s: FAMILY_ORDER.index(s.family) if s.family in FAMILY_ORDER else 99)
    names = [s.name for s in specs if family is None or s.family == family]
    if pattern is not None:
        names = fnmatch.filter(names, pattern)
    return names


def all_specs() -> list[ModelSpec]:
    _ensure_loaded()
    return list(_SPECS.values())
