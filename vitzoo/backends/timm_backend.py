"""timm backend: a spec (or any timm model name) becomes a timm `nn.Module`.

Pretrained weights load through `timm.create_model(pretrained=True)`, which reads the
`timm/<arch>.<tag>` repository from the Hub cache. For registry models the architecture is
pinned to the spec's, so the registry stays the one source of truth for both libraries.
"""

from __future__ import annotations

import json
import os
from typing import Any

import timm
import torch

from vitzoo import hub
from vitzoo.errors import BadInputError, UnknownModelError
from vitzoo.registry import ModelSpec, Preprocessing, get_family

TIMM_CONFIG_KEYS = {"img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"}
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


def is_timm_folder(path: str) -> bool:
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return False
    with open(config) as handle:
        data = json.load(handle)
    return "architecture" in data and "model_type" not in data


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
    return kwargs


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
        raise hub.weights_not_found(arch, arch, cause=str(error).splitlines()[0]) from None


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
