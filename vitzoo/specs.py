"""What a checkpoint is, as data: `ModelSpec` with its `Architecture` and `Preprocessing`, and the
table of families by name (filled by `vitzoo.registry.register_family`). A leaf module: the registry
and the families import it, and it imports neither (as timm's `_registry.py` rests on `_pretrained.py`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)

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
        family = FAMILIES.get(self.family)
        return family is not None and family.timm_only

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["has_imagenet_head"] = self.has_imagenet_head
        fam = FAMILIES[self.family]
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



# every registered family by name (`vitzoo.registry.register_family` adds them)
FAMILIES: dict[str, Any] = {}  # name -> vitzoo.families.base.Family
