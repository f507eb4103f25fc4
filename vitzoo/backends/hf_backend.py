"""transformers backend: a spec and a task become a `PreTrainedModel`.

Pretrained weights load through the task class's own `from_pretrained` (the Hub cache or a
local folder); random weights come from a config built from the registry alone, so `--scratch`
needs nothing cached. Loading reports are checked, not silenced: a checkpoint that leaves
encoder weights uninitialised is an error, and only the head may be new.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import re
from typing import Any

import transformers
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from vitzoo import hub
from vitzoo.errors import BadInputError
from vitzoo.registry import ModelSpec, base_model_prefixes, get_family


@functools.cache
def new_parameter() -> re.Pattern[str]:
    """Parameters a checkpoint may lack without anything being lost: heads, poolers, mask tokens
    and pretraining decoders that the requested task adds on top of the encoder, and the final
    LayerNorm, bare or under any family's base-model prefix ("vit.", "deit.", ...)."""
    prefixes = "|".join(map(re.escape, base_model_prefixes()))
    return re.compile(
        r"(^|\.)(classifier|cls_classifier|distillation_classifier|pooler|mask_token|lm_head|decoder|fc_norm)(\.|$)"
        rf"|^layernorm\.|^({prefixes})\.layernorm\."
    )


@contextlib.contextmanager
def quiet_transformers():
    """transformers' own load report is replaced by vitzoo's checks; keep the console clean."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)


def label_kwargs(id2label: dict[int, str] | None) -> dict[str, Any]:
    if id2label is None:
        return {}
    return {
        "num_labels": len(id2label),
        "id2label": dict(id2label),
        "label2id": {label: index for index, label in id2label.items()},
    }


def check_overrides(config: PretrainedConfig, overrides: dict[str, Any]) -> None:
    for key in overrides:
        if not hasattr(config, key):
            raise BadInputError(
                f"config override {key!r} is not a field of {type(config).__name__}; "
                f"fields are e.g. hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, "
                "patch_size, image_size"
            )
    for names in (("hidden_size", "num_attention_heads"), ("decoder_hidden_size", "decoder_num_attention_heads")):
        if set(names) & set(overrides) and all(hasattr(config, name) for name in names):
            width, heads = (overrides.get(name, getattr(config, name)) for name in names)
            check_heads(width, heads, names)


def check_heads(width: int, heads: int, names: tuple[str, str] = ("hidden_size", "num_attention_heads")) -> None:
    """Attention splits the width evenly among the heads: refuse heads that do not divide the width, naming
    both (transformers would build narrower projections without a word, timm fails an assertion)."""
    if width % heads == 0:
        return
    small = [d for d in range(1, math.isqrt(width) + 1) if width % d == 0]
    divisors = sorted({*small, *(width // d for d in small)})
    choices = [max(d for d in divisors if d < heads), *[d for d in divisors if d > heads][:1]]
    widths = [w for w in (width // heads * heads, (width // heads + 1) * heads) if w]
    width_name, heads_name = names
    raise BadInputError(
        f"{width_name} {width} is not a multiple of {heads_name} {heads} (attention splits the width evenly among the "
        f"heads); use {heads_name}={' or '.join(map(str, choices))}, or {width_name}={' or '.join(map(str, widths))} "
        "(--config-overrides)"
    )


def build(
    spec: ModelSpec,
    task: str,
    *,
    id2label: dict[int, str] | None,
    config_overrides: dict[str, Any],
    image_size: int | None,
) -> PreTrainedModel:
    """Random weights from the registry's architecture (no file is read)."""
    family = get_family(spec.family)
    cls = family.transformers_class(spec, task)
    check_overrides(family.build_config(spec, task), config_overrides)
    if image_size is not None:
        config_overrides = {**config_overrides, "image_size": image_size}
    # overrides go through the config's constructor, so derived fields (e.g. BEiT's backbone
    # stage names, which follow num_hidden_layers) are computed from them
    config = family.build_config(spec, task, **label_kwargs(id2label), **config_overrides)
    with quiet_transformers():
        model = cls(config, **family.features_kwargs) if task == "features" else cls(config)
    family.init_scratch(model)
    return model


def load_config(source: str, spec: ModelSpec, revision: str | None) -> PretrainedConfig:
    hub.ensure_available(source, spec.name, "config.json", revision)
    try:
        return AutoConfig.from_pretrained(source, revision=revision)
    except OSError as error:
        raise hub.weights_not_found(source, spec.name, revision, cause=str(error).splitlines()[0]) from None


def load(
    spec: ModelSpec,
    task: str,
    *,
    source: str,
    id2label: dict[int, str] | None,
    revision: str | None,
    image_size: int | None,
) -> PreTrainedModel:
    """Pretrained weights from `source` (Hub id or folder) into the class that serves `task`."""
    family = get_family(spec.family)
    cls = family.transformers_class(spec, task)
    checkpoint_config = load_config(source, spec, revision)
    hub.ensure_weights(source, spec.name, revision)
    hub.local_weights(source, revision)  # a damaged file, or a pickle of more than tensors: one line naming it
    config = family.config_for_task(copy.deepcopy(checkpoint_config), task)
    new_head = id2label is not None and task == "classification"
    if new_head:
        for key, value in label_kwargs(id2label).items():
            setattr(config, key, value)
    elif task == "classification" and not (
        spec.num_classes or any("Classification" in name for name in checkpoint_config.architectures or [])
    ):
        raise BadInputError(f"{spec.name} carries no classification head; pass num_labels (or id2label) for a new one.")

    kwargs: dict[str, Any] = dict(config=config, revision=revision, output_loading_info=True)
    if new_head:
        kwargs["ignore_mismatched_sizes"] = True
    if task == "features":
        kwargs.update(family.features_kwargs)
    with quiet_transformers():
        if family.needs_conversion(checkpoint_config, task):
            model = family.convert_checkpoint_model(spec, task, source, config, revision)
            info = {"missing_keys": []}
        else:
            model, info = cls.from_pretrained(source, **kwargs)
    lost = [key for key in info["missing_keys"] if not new_parameter().search(key)]
    if lost:
        shown = ", ".join(sorted(lost)[:8])
        raise BadInputError(
            f"the checkpoint at {source} does not fit {cls.__name__}: {len(lost)} weights would stay "
            f"uninitialised ({shown}{', ...' if len(lost) > 8 else ''}). Is it a {family.name} checkpoint?"
        )
    dropped = re.compile(family.dropped_weights(task))
    unused = [key for key in info.get("unexpected_keys", []) if not dropped.search(key)]
    if unused:
        shown = ", ".join(sorted(unused)[:8])
        raise BadInputError(
            f"the checkpoint at {source} has {len(unused)} trained weights that {cls.__name__} would leave unused "
            f"({shown}{', ...' if len(unused) > 8 else ''}); vitzoo drops only what the {family.name} family declares "
            f"for task={task!r}. Is it a {family.name} checkpoint, or meant for another task?"
        )
    if image_size is not None and image_size != family.architecture_from_config(model.config).image_size:
        if not family.dynamic_image_size:
            model = family.resize_model(model, family.architecture_from_config(model.config), image_size)
    return model
