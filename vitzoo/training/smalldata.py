"""Defaults scaled to the data for runs from random weights (`--scratch`) on small datasets.

The recipes' defaults are ImageNet's: they assume pretrained weights, or a million images. From
random weights on a few thousand images they under-train (fine-tuning) or collapse (DINO). With
`--scratch` and at most `SMALL_DATA_IMAGES` training images, each recipe takes the defaults of its
row below instead; a flag (or `--config` key) the user gave is never changed, and neither is what the
data source itself knows (the digits' no-flip and crop scale). The start-up prints what was chosen
and why, `results.json` records it under `small_data_defaults`, and docs/small-data.md has the table
with the runs (3 seeds each) behind every value.

This module is the one place the rule lives: `RULES` maps a recipe (and method) to a function of the
number of training images and the image size that returns the defaults with their reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vitzoo.training.arguments import given

SMALL_DATA_IMAGES = 50_000  # at most this many training images (and --scratch): the rows below apply


@dataclass(frozen=True)
class Default:
    """One default the rule chose: the argument, its value, and why (printed at start-up)."""

    field: str
    value: Any
    why: str
    unless: tuple[str, ...] = ()  # not chosen when any of these fields was given (--tokenizer brings its own codes)


def _finetune(images: int, size: int, patch: int) -> list[Default]:
    return [
        Default("learning_rate", 1e-3, "random weights take larger steps than pretrained ones"),
        Default("warmup_ratio", 0.1, "a longer warm-up keeps the first steps of a random ViT stable"),
    ]


MIN_TOKENS = 16  # patches an image (DINO: a global crop) holds at least (DINO's local crops then a quarter of that)


def patch_for(size: int, patch: int) -> int | None:
    """A patch size under which a `size`-px image holds at least `MIN_TOKENS` patches: the largest divisor of
    `size` at most `size` / 4 (None when `patch` already gives that many)."""
    if (size // patch) ** 2 >= MIN_TOKENS:
        return None
    return max((p for p in range(1, size // 4 + 1) if size % p == 0), default=1)  # under 4 px: 1-px patches


# DINO from random weights on a few thousand images, on CPUs: a ViT-S (width 384, depth 12) trains too few
# steps in minutes to get anywhere; this shape (2.7M parameters) is the one docs/distillation.md's 3-seed
# runs used
SMALL_DINO_SHAPE = "hidden_size=192,num_hidden_layers=6,num_attention_heads=3,intermediate_size=768"
SMALL_DINO_IMAGES = 10_000  # below this many images, SMALL_DINO_SHAPE


def _dino(images: int, size: int, patch: int) -> list[Default]:
    smaller = patch_for(size, patch)
    shape = [SMALL_DINO_SHAPE] if images < SMALL_DINO_IMAGES else []
    patches = [f"patch_size={smaller}"] if smaller else []
    why = ["width 192, depth 6 (2.7M parameters): many steps in a CPU's minutes"] if shape else []
    why += [f"{(size // smaller) ** 2} patches of {smaller} px, not {(size // patch) ** 2} of {patch}: a local crop "
            "keeps a few"] if smaller else []
    return [
        *([Default("config_overrides", ",".join(shape + patches), "; ".join(why))] if shape or patches else []),
        Default("head_batch_norm", True, "keeps the outputs of different images apart (no uniform collapse)"),
        Default("out_dim", 256, "few prototypes for few images"),
        Default("head_hidden_dim", 512, "a head in proportion to the prototypes"),
        Default("head_bottleneck_dim", 128, "a head in proportion to the prototypes"),
        Default("local_crops", 4, "small images have little to crop locally"),
        Default("batch_size", 32, "more steps per epoch on few images"),
        Default("learning_rate", 2.5e-4, "the backbone learns before the teacher flattens"),
        Default("momentum_teacher", 0.99, "the teacher follows a fast-changing student"),
        Default("weight_decay", 0.04, "DINO's starting weight decay"),
        Default("warmup_ratio", 0.1, "a longer warm-up for a random backbone"),
        Default("max_grad_norm", 3.0, "DINO's clipping"),
    ]


def _masked_image_modelling(images: int, size: int, patch: int) -> list[Default]:
    smaller = patch_for(size, patch)
    return [
        *([Default("config_overrides", f"patch_size={smaller}", f"{(size // smaller) ** 2} patches of {smaller} px, not "
                   f"{(size // patch) ** 2} of {patch}: a mask over 4 patches leaves the encoder one or two to see")] if smaller else []),
        Default("blr", 3e-3, "blr 1.5e-4 assumes batches of thousands and hundreds of epochs"),
        Default("batch_size", 32, "more steps per epoch on few images"),
    ]


def _beit(images: int, size: int, patch: int) -> list[Default]:
    rule = _masked_image_modelling(images, size, patch)
    if size <= 64:
        rule.append(Default("tokenizer_vocab_size", 32, "few codes for small, low-detail images", unless=("tokenizer",)))
    return rule


# recipe -> method -> rule
RULES: dict[str, dict[str | None, Callable[[int, int, int], list[Default]]]] = {
    "finetune": {None: _finetune},
    "distill": {"dino": _dino},
    "pretrain": {"mae": _masked_image_modelling, "simmim": _masked_image_modelling, "beit": _beit},
}


def choose(args: Any, recipe: str, method: str | None, images: int, size: int, source: dict[str, Any] | None = None,
           patch: int = 16) -> list[Default]:
    """The defaults of the rule for `recipe`/`method` that apply to `args` (whose model has `patch`-px patches):
    none without `--scratch` or above `SMALL_DATA_IMAGES`; never a field the user set (`arguments.given`) or
    the data source sets."""
    rule = RULES.get(recipe, {}).get(method)
    if rule is None or not getattr(args, "scratch", False) or images > SMALL_DATA_IMAGES:
        return []
    kept = given(args) | set(source or {})
    return [default for default in rule(images, size, patch)
            if hasattr(args, default.field) and default.field not in kept and not kept & set(default.unless)]


def input_size(args: Any) -> tuple[int, int]:
    """(image size, patch size) a run will train at: --image-size, else the registered model's; its patch
    (224 and 16 for a model outside the registry)."""
    from vitzoo import registry

    spec = registry.get_spec(args.model) if registry.is_registered(args.model) else None
    architecture = spec.architecture if spec is not None else None
    size = getattr(args, "image_size", None) or (architecture.image_size if architecture else 224)
    return size, architecture.patch_size if architecture else 16


def apply(args: Any, recipe: str, splits: Any, method: str | None = None, announce: bool = False) -> list[Default]:
    """Set the chosen defaults on `args` (see `choose`) and return them; `announce`: print the start-up line."""
    images, (size, patch) = len(splits.train), input_size(args)
    chosen = choose(args, recipe, method, images, size, getattr(splits, "augmentation", None), patch)
    for default in chosen:
        setattr(args, default.field, default.value)
    if chosen and announce:
        print(describe(chosen, images, size), flush=True)
    return chosen


def describe(chosen: list[Default], images: int, size: int) -> str:
    """The start-up line: "small-data defaults: 1,438 images at 32 px: --learning-rate 0.001 (why), ..."."""
    if not chosen:
        return ""
    parts = [f"{_flag(default)}: {default.why}" for default in chosen]
    return (f"small-data defaults (--scratch, {images:,} images at {size} px; any flag overrides): " + "; ".join(parts))


def record(chosen: list[Default]) -> dict[str, Any]:
    """What results.json keeps: {field: value}."""
    return {default.field: default.value for default in chosen}


def _flag(default: Default) -> str:
    flag = "--" + default.field.replace("_", "-")
    if default.value is True:
        return flag
    return f"{flag} {default.value:g}" if isinstance(default.value, float) else f"{flag} {default.value}"
