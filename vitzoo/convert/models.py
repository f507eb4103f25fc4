"""`to_transformers` / `to_timm`: one model of a family, rebuilt in the other library.

The target model is built from the source's own architecture (read from the timm module or the
transformers config), its layer-norm eps set to the source's, and loaded with a state dict the
family's key map produced and checked key by key (see `vitzoo.convert.keymaps`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import timm
import torch
from torch import nn
from transformers import PreTrainedModel

from vitzoo.backends.timm_backend import architecture_from_timm
from vitzoo.convert.keymaps import KeyMap, check_against, keymap_for, timm_to_transformers, transformers_to_timm
from vitzoo.errors import BadInputError
from vitzoo.registry import ModelSpec, Preprocessing, family_for_model_type, get_family

# timm architecture names outside the registry -> (family, distilled), first match wins
TIMM_NAME_FAMILIES = (
    (re.compile(r"^deit\d*_.*distilled"), "deit", True),
    (re.compile(r"^deit_"), "deit", False),  # DeiT III (deit3_*) has no transformers class
    (re.compile(r"^beit_"), "beit", False),
    (re.compile(r"_reg4_dinov2"), "dinov2_reg", False),
    (re.compile(r"dinov2"), "dinov2", False),
    (re.compile(r"dinov3"), "dinov3", False),
    (re.compile(r"^vit_\w+_patch\d+_gap_\d+$"), "ijepa", False),  # no CLS token, mean-pooled: I-JEPA's layout
    (re.compile(r"^vit_"), "vit", False),
)
# timm classes -> the family a message suggests when a model of the wrong family is given
TIMM_CLASS_HINT = {
    "Beit": "beit", "VisionTransformerDistilled": "deit (distilled)", "VisionTransformer": "vit", "Eva": "dinov3",
}


# --------------------------------------------------------------------------- timm side helpers
def family_for_timm_name(name: str) -> tuple[str, bool]:
    """(family, distilled) of a timm architecture name that is not in the registry."""
    arch = name.split(".")[0]
    for pattern, family, distilled in TIMM_NAME_FAMILIES:
        if pattern.search(arch):
            return family, distilled
    raise BadInputError(
        f"timm model {name!r} does not belong to a family vitzoo converts (its name should look like "
        "vit_*, deit_*, deit_*distilled*, beit_*, *dinov2*, *_reg4_dinov2*, *dinov3* or vit_*_gap_*)"
    )


def timm_layer_norm_eps(model: nn.Module) -> float:
    """The one eps every LayerNorm of a timm model uses (transformers configs hold one value)."""
    values = {module.eps for module in model.modules() if isinstance(module, nn.LayerNorm)}
    if len(values) != 1:
        raise BadInputError(
            f"the timm model's LayerNorms use several eps values {sorted(values)}; transformers has one"
        )
    return values.pop()


def set_layer_norm_eps(model: nn.Module, eps: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps


def _check_timm_model(model: nn.Module, keymap: KeyMap, spec: ModelSpec) -> None:
    cls = type(model).__name__
    if cls not in keymap.timm_classes:
        hint = TIMM_CLASS_HINT.get(cls, "not a convertible family")
        raise BadInputError(
            f"wrong family: {spec.name} is a {keymap.title} model ({', '.join(keymap.timm_classes)} in timm), "
            f"but the timm model given is a {cls} ({hint})"
        )
    pool = getattr(model, "global_pool", None)
    if pool != keymap.global_pool:
        raise BadInputError(
            f"the timm model pools with global_pool={pool!r}, but {keymap.title} models in transformers pool "
            f"with {keymap.global_pool!r}; create it with global_pool={keymap.global_pool!r}"
        )
    act = getattr(model.blocks[0].mlp, "act", None)
    if not (isinstance(act, nn.GELU) and act.approximate == "none"):
        raise BadInputError(f"the timm model's MLP activation is {act!r}; transformers' {keymap.title} uses exact GELU")
    reg_token = getattr(model, "reg_token", None)  # VisionTransformer and Eva keep their registers here
    registers = reg_token.shape[1] if reg_token is not None else 0
    if registers != keymap.registers:
        raise BadInputError(
            f"the timm model has {registers} register tokens, transformers' {keymap.title} has {keymap.registers}"
        )
    if (getattr(model, "cls_token", None) is not None) != keymap.class_token:
        has = "has a" if keymap.class_token else "has no"
        raise BadInputError(f"transformers' {keymap.title} {has} CLS token, and the timm model does not agree")
    if getattr(model, "pos_embed", None) is not None and getattr(model, "no_embed_class", False) != keymap.no_embed_class:
        raise BadInputError(
            f"the timm model's position table {'skips' if model.no_embed_class else 'covers'} the prefix tokens; "
            f"transformers' {keymap.title} {'skips' if keymap.no_embed_class else 'covers'} them"
        )
    rope = type(getattr(model, "rope", None)).__name__ if getattr(model, "rope", None) is not None else None
    if rope != keymap.timm_rope:
        raise BadInputError(
            f"the timm model's rotary position embedding is {rope}; transformers' {keymap.title} uses {keymap.timm_rope}"
        )


def timm_labels(model: nn.Module, spec: ModelSpec | None = None) -> dict[int, str] | None:
    """Label names of a timm classifier: ImageNet's for 1000 classes, else its pretrained cfg's."""
    from vitzoo.zoo import imagenet_labels

    num_classes = getattr(model, "num_classes", 0)
    if not num_classes:
        return None
    if num_classes == 1000:
        return imagenet_labels()
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if names and len(names) == num_classes:
        return dict(enumerate(names))
    return {index: f"LABEL_{index}" for index in range(num_classes)}


def hf_prefix(model: PreTrainedModel) -> str:
    """The prefix of the encoder's weights: "" for a features model (its embeddings at the top, whatever
    `base_model` says: DINOv3ViTModel's names its layer stack), the base-model prefix under a head."""
    if model.base_model is model or isinstance(getattr(model, "embeddings", None), nn.Module):
        return ""
    return model.base_model_prefix + "."


# --------------------------------------------------------------------------- timm -> transformers
def to_transformers(timm_model: nn.Module, spec: ModelSpec, id2label: dict[int, str] | None = None) -> PreTrainedModel:
    """The timm model as the transformers class vitzoo uses for `spec`'s family, same weights.

    A timm model with a head becomes the family's classification class (labels: `id2label`, or
    ImageNet's for 1000 classes), one without becomes its features class. Raises
    `BadInputError` naming the key on any missing or extra key or shape mismatch.
    """
    from vitzoo.backends.hf_backend import label_kwargs, quiet_transformers

    distilled = getattr(timm_model, "dist_token", None) is not None
    keymap = keymap_for(
        spec.family, distilled=distilled or bool(spec.architecture and spec.architecture.distillation_token)
    )
    _check_timm_model(timm_model, keymap, spec)
    family = get_family(spec.family)
    layer_scale = spec.architecture.layer_scale_init if spec.architecture else None
    arch = architecture_from_timm(timm_model, layer_scale)
    num_classes = getattr(timm_model, "num_classes", 0)
    task = "classification" if num_classes else "features"
    labels = id2label if id2label is not None else timm_labels(timm_model, spec)
    if labels is not None and len(labels) != num_classes:
        raise BadInputError(f"id2label names {len(labels)} classes, but the timm head has {num_classes}")
    target_spec = dataclasses.replace(spec, architecture=arch, num_classes=num_classes)
    config = family.build_config(target_spec, task, **label_kwargs(labels if task == "classification" else None))
    config.layer_norm_eps = timm_layer_norm_eps(timm_model)
    state = timm_model.state_dict()
    family.config_from_timm_state(config, state, arch)
    cls = family.transformers_class(target_spec, task)
    with quiet_transformers():
        model = cls(config, **family.features_kwargs) if task == "features" else cls(config)
    target = model.state_dict()
    what = f"transformers {cls.__name__}"
    converted = timm_to_transformers(state, keymap, hf_prefix(model))
    converted = check_against(
        converted, target, target=what, fill_zeros=tuple(hf_prefix(model) + k for k in keymap.transformers_only)
    )
    model.load_state_dict(converted, strict=True)
    return model.eval()


# --------------------------------------------------------------------------- transformers -> timm
def timm_data_config(preprocessing: Preprocessing) -> dict[str, Any]:
    """A spec's pipeline in timm's pretrained-cfg vocabulary (input_size, crop_pct, crop_mode...).

    timm resizes to floor(input / crop_pct), then centre-crops `input`: "squash" resizes both
    sides, "center" the shortest edge.
    """
    size = preprocessing.input_size
    crop_pct = size / preprocessing.resize_size if preprocessing.crop_size else 1.0
    while math.floor(size / crop_pct) < preprocessing.resize_size:  # float rounding: 16 / (16 / 18) = 17.999...
        crop_pct = math.nextafter(crop_pct, 0.0)
    return {
        "input_size": (3, size, size),
        "crop_pct": crop_pct,
        "crop_mode": "squash" if preprocessing.resize_mode == "exact" else "center",
        "interpolation": preprocessing.interpolation,
        "mean": tuple(preprocessing.mean),
        "std": tuple(preprocessing.std),
    }


def preprocessing_from_timm(data_config: dict[str, Any]) -> Preprocessing:
    """timm's pipeline (a pretrained cfg or resolved data config) as a `Preprocessing`."""
    size = data_config["input_size"][-1]
    crop_pct = data_config.get("crop_pct") or 1.0
    squash = data_config.get("crop_mode") == "squash"
    resize = math.floor(size / crop_pct)
    return Preprocessing(
        resize_size=resize,
        crop_size=None if squash and resize == size else size,
        resize_mode="exact" if squash else "shortest",
        interpolation=data_config.get("interpolation") or "bicubic",
        mean=tuple(data_config.get("mean") or (0.485, 0.456, 0.406)),
        std=tuple(data_config.get("std") or (0.229, 0.224, 0.225)),
    )


def _encoder_of(hf_model: PreTrainedModel, keymap: KeyMap) -> PreTrainedModel:
    name = type(hf_model).__name__
    if name.endswith(("ForPreTraining", "ForMaskedImageModeling")):
        if keymap.family == "mae":
            return hf_model.base_model  # the MAE encoder; the pretraining decoder has no timm counterpart
        raise BadInputError(
            f"{name} carries a pretraining head timm has no place for; convert its encoder "
            "(model.base_model, or load the checkpoint with task='features')"
        )
    return hf_model


def timm_arch_name(spec: ModelSpec, keymap: KeyMap) -> str:
    """The timm architecture to build: the spec's own timm name, or the family's default."""
    if spec.timm_name:
        arch = spec.timm_name.split(".")[0]
        try:
            family, distilled = family_for_timm_name(arch)
        except BadInputError:
            return arch
        if keymap_for(family, distilled).rules == keymap.rules:  # the same layout (ViT, DeiT, DINO, MAE share one)
            return arch
    return keymap.default_timm_arch


def to_timm(hf_model: PreTrainedModel, spec: ModelSpec) -> nn.Module:
    """The transformers model as a timm model of `spec`'s family, same weights.

    The timm architecture is `spec.timm_name`'s (or the family's default), pinned to the
    transformers config's shapes; its LayerNorm eps is set to the config's, and its pretrained cfg
    carries the spec's preprocessing. MAE pretraining models give their encoder. Raises
    `BadInputError` naming the key on any missing or extra key or shape mismatch.
    """
    config = hf_model.config
    model_type = getattr(config, "model_type", None)
    keymap = keymap_for(spec.family, distilled=model_type == "deit")
    if model_type not in keymap.model_types:
        claimant = family_for_model_type(model_type)
        hint = claimant.describe_model_type(model_type) if claimant is not None else "not a convertible family"
        raise BadInputError(
            f"wrong family: {spec.name} is a {keymap.title} model (transformers model_type "
            f"{' or '.join(keymap.model_types)}), but the transformers model given is {type(hf_model).__name__} "
            f"(model_type {model_type!r}: {hint})"
        )
    hf_model = _encoder_of(hf_model, keymap)
    config = hf_model.config
    family = get_family(spec.family)
    family.check_timm_convertible(config)
    if getattr(config, "hidden_act", "gelu") != "gelu":
        raise BadInputError(f"hidden_act={config.hidden_act!r}: timm's {keymap.title} uses exact GELU ('gelu')")
    arch = family.architecture_from_config(config)
    state = hf_model.state_dict()
    prefix = hf_prefix(hf_model)
    num_classes = int(config.num_labels) if prefix else 0  # a head on top: the encoder sits under its prefix
    kwargs = family.timm_kwargs(arch)
    kwargs["num_classes"] = num_classes
    kwargs.update(family.timm_kwargs_from_transformers(config, state, prefix))
    arch_name = timm_arch_name(spec, keymap)
    model = timm.create_model(arch_name, pretrained=False, **kwargs)
    set_layer_norm_eps(model, float(config.layer_norm_eps))
    converted = transformers_to_timm(state, keymap, prefix)
    converted = check_against(converted, model.state_dict(), target=f"timm {arch_name}")
    model.load_state_dict(converted, strict=True)
    prep = spec.preprocessing
    if not family.dynamic_image_size and prep.input_size != arch.image_size:
        prep = prep.for_input_size(arch.image_size)
    model.pretrained_cfg = {**dict(model.pretrained_cfg), **timm_data_config(prep)}
    labels = getattr(config, "id2label", None) if num_classes else None
    if labels and num_classes != 1000:
        model.pretrained_cfg["label_names"] = [labels[i] for i in range(num_classes)]
    return model.eval()


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    to: str,
    *,
    prefix: str = "",
    target: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A bare state dict converted by `spec`'s family key map, `to` "transformers" or "timm".

    `prefix`: the transformers base-model prefix ("vit.", "deit.", ... for models with a head).
    With `target` (the receiving model's state dict), every key and shape is checked against it.
    """
    distilled = any(k.endswith(("dist_token", "distillation_token")) for k in state_dict)
    keymap = keymap_for(spec.family, distilled=distilled)
    if to == "transformers":
        out = timm_to_transformers(state_dict, keymap, prefix)
        if target is not None:
            fill = tuple(prefix + key for key in keymap.transformers_only)
            out = check_against(out, target, target="the transformers model", fill_zeros=fill)
        return out
    if to == "timm":
        out = transformers_to_timm(state_dict, keymap, prefix)
        return check_against(out, target, target="the timm model") if target is not None else out
    raise BadInputError(f"`to` must be 'transformers' or 'timm', got {to!r}")
