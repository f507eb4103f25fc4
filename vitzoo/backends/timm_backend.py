"""timm backend: a spec (or any timm model name) becomes a timm `nn.Module`.

Pretrained weights load through `timm.create_model(pretrained=True)`, which reads the
`timm/<arch>.<tag>` repository from the Hub cache. For registry models the architecture is
pinned to the spec's, so the registry stays the one source of truth for both libraries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import timm
import torch

from vitzoo import hub
from vitzoo.backends.hf_backend import check_heads
from vitzoo.errors import BadInputError, UnknownModelError
from vitzoo.io import read_json
from vitzoo.registry import Architecture, ModelSpec, Preprocessing, get_family

# transformers-style override names (as `--config-overrides` takes them) to timm arguments
OVERRIDE_NAMES = {
    "hidden_size": "embed_dim",
    "num_hidden_layers": "depth",
    "num_attention_heads": "num_heads",
    "image_size": "img_size",
    "patch_size": "patch_size",
}


def is_timm_name(name: str) -> bool:
    return timm.is_model(name.split(".")[0])


def is_timm_config(config: Mapping[str, Any]) -> bool:
    """Whether a model folder's config.json is timm's (an architecture, no transformers model_type)."""
    return "architecture" in config and "model_type" not in config


def is_timm_folder(path: str) -> bool:
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return False
    data = read_json(config)
    return isinstance(data, dict) and is_timm_config(data)


def timm_overrides(overrides: dict[str, Any], spec_kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(spec_kwargs)
    for key, value in overrides.items():
        if key == "intermediate_size":
            hidden = overrides.get("hidden_size", kwargs.get("embed_dim"))
            if hidden is None:
                raise BadInputError("intermediate_size needs hidden_size for a timm model")
            kwargs["mlp_ratio"] = value / hidden
        elif key in OVERRIDE_NAMES:
            kwargs[OVERRIDE_NAMES[key]] = value
        else:
            kwargs[key] = value
    # a model outside the registry leaves the width or the heads to timm's defaults, unknown here
    names = head_names(overrides)
    if set(names) & set(overrides) and isinstance(kwargs.get("embed_dim"), int) and isinstance(kwargs.get("num_heads"), int):
        check_heads(kwargs["embed_dim"], kwargs["num_heads"], names)
    return kwargs


def head_names(overrides: dict[str, Any]) -> tuple[str, str]:
    """What `overrides` call the width and the number of heads: timm's embed_dim and num_heads where they use
    them, else transformers' hidden_size and num_attention_heads (for messages)."""
    width = "embed_dim" if "embed_dim" in overrides else "hidden_size"
    return width, "num_heads" if "num_heads" in overrides else "num_attention_heads"


def create(
    arch: str,
    *,
    spec: ModelSpec | None,
    num_classes: int,
    pretrained: bool,
    config_overrides: dict[str, Any],
    image_size: int | None,
    checkpoint_file: str | None = None,
) -> torch.nn.Module:
    """`timm.create_model` with the spec's architecture, a head of `num_classes` (0: none)."""
    kwargs: dict[str, Any] = {}
    if spec is not None:
        kwargs = get_family(spec.family).timm_kwargs(spec.architecture)
    kwargs = timm_overrides(config_overrides, kwargs)
    if image_size is not None:
        kwargs["img_size"] = image_size
    if pretrained and checkpoint_file is None:
        try:
            cfg = timm.models.get_pretrained_cfg(arch)
        except RuntimeError:
            cfg = None
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if repo:
            what = spec.name if spec is not None else arch
            if not (hub.is_cached(repo, "model.safetensors") or hub.is_cached(repo, "pytorch_model.bin")):
                if not hub.hub_reachable():
                    raise hub.weights_not_found(repo, what, cause="neither model.safetensors nor pytorch_model.bin of it is cached")
            hub.local_weights(repo)  # a damaged file, or a pickle of more than tensors: one line naming it
    # a saved folder holds its own head: tell timm so, or it drops a head of another size
    overlay = {"file": checkpoint_file, "num_classes": num_classes} if checkpoint_file else None
    try:
        return timm.create_model(
            arch, pretrained=pretrained, num_classes=num_classes, pretrained_cfg_overlay=overlay, **kwargs
        )
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise UnknownModelError(f"unknown timm model {arch!r}: {error}") from None
        raise
    except OSError as error:
        raise hub.weights_not_found(arch, arch, cause=str(error).strip() or type(error).__name__) from None


def is_vision_transformer(model: torch.nn.Module) -> bool:
    """Whether a timm module is a ViT-family model (patch embedding and transformer blocks)."""
    return getattr(model, "blocks", None) is not None and getattr(model, "patch_embed", None) is not None


def has_layer_scale(model: torch.nn.Module) -> bool:
    block = model.blocks[0]
    if getattr(block, "gamma_1", None) is not None:  # BEiT
        return True
    return hasattr(getattr(block, "ls1", None), "gamma")


def architecture_from_timm(
    model: torch.nn.Module, layer_scale_init: float | None = None, *, default_image_size: int | None = None
) -> Architecture:
    """A timm ViT-family module's architecture, in the registry's vocabulary: the one reader of a
    timm model's shape (`ZooModel` on the timm backend, the converters).

    The module does not keep its layer-scale init: a model with layer scale gets `layer_scale_init`
    (1e-5, timm's usual, when None). A model built without a fixed size (img_size=None) gets
    `default_image_size`, or is refused when there is none."""
    if not is_vision_transformer(model) or not len(model.blocks):
        raise BadInputError(f"the timm model ({type(model).__name__}) is not a vision transformer with blocks")
    blocks, patch_embed = model.blocks, model.patch_embed
    image_size = patch_embed.img_size[0] if patch_embed.img_size is not None else default_image_size
    if image_size is None:
        raise BadInputError("the timm model has no fixed image size (img_size=None); create it with one")
    return Architecture(
        image_size=image_size,
        patch_size=patch_embed.patch_size[0],
        hidden_size=model.embed_dim,
        depth=len(blocks),
        num_heads=blocks[0].attn.num_heads,
        mlp_size=blocks[0].mlp.fc1.out_features,
        distillation_token=getattr(model, "dist_token", None) is not None,
        layer_scale_init=(layer_scale_init or 1e-5) if has_layer_scale(model) else None,
    )


def preprocessing_of(model: torch.nn.Module) -> Preprocessing:
    """timm's own evaluation pipeline for `model` (from its pretrained config) as a `Preprocessing`."""
    config = timm.data.resolve_data_config({}, model=model)
    size = config["input_size"][-1]
    crop_pct = config.get("crop_pct", 1.0) or 1.0
    return Preprocessing(
        resize_size=int(size / crop_pct),
        crop_size=size,
        resize_mode="shortest",
        interpolation=config.get("interpolation", "bicubic"),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
    )
