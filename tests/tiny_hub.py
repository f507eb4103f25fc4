"""A tiny offline stand-in for the Hugging Face Hub.

For every registered checkpoint this writes a tiny random checkpoint, saved by the same model
class and config keys as the published one, under its canonical Hub id in a Hub-cache layout
(`models--org--name/refs/main` + `snapshots/<commit>/...`), and the same for its timm
equivalent under `timm/<arch>.<tag>`. With HF_HUB_OFFLINE=1 and HF_HUB_CACHE pointing there,
`vitzoo.load("deit-small")` runs exactly the code a user online runs, minus the download.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import timm
import torch

from vitzoo.images import Preprocessor
from vitzoo.registry import Architecture, ModelSpec, get_family

TINY_IMAGE = 16
TINY_PATCH = 4


def tiny_spec(spec: ModelSpec) -> ModelSpec:
    """The same checkpoint at a size that runs in milliseconds."""
    arch = spec.architecture
    tiny = Architecture(
        image_size=TINY_IMAGE,
        patch_size=TINY_PATCH,
        hidden_size=32,
        depth=2,
        num_heads=2,
        mlp_size=64,
        distillation_token=arch.distillation_token,
        layer_scale_init=arch.layer_scale_init,
    )
    return dataclasses.replace(spec, architecture=tiny, preprocessing=spec.preprocessing.for_input_size(TINY_IMAGE))


def snapshot_dir(cache: str, repo_id: str) -> str:
    folder = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    os.makedirs(os.path.join(folder, "refs"), exist_ok=True)
    with open(os.path.join(folder, "refs", "main"), "w") as handle:
        handle.write(commit)
    path = os.path.join(folder, "snapshots", commit)
    os.makedirs(path, exist_ok=True)
    return path


def imagenet_id2label(num_classes: int) -> dict[int, str]:
    from vitzoo.zoo import imagenet_labels

    return imagenet_labels() if num_classes == 1000 else {i: f"LABEL_{i}" for i in range(num_classes)}


def write_transformers_checkpoint(cache: str, spec: ModelSpec) -> None:
    family = get_family(spec.family)
    task = spec.hub_task
    extra = {}
    if spec.num_classes:
        labels = imagenet_id2label(spec.num_classes)
        extra = {"id2label": labels, "label2id": {v: k for k, v in labels.items()}}
    config = family.build_config(spec, task, **extra)
    if config.model_type == "vit_mae":
        config.update(
            dict(
                decoder_hidden_size=32,
                decoder_num_hidden_layers=1,
                decoder_num_attention_heads=2,
                decoder_intermediate_size=64,
            )
        )
    model = family.transformers_class(spec, task)(config)
    path = snapshot_dir(cache, spec.hub_id)
    model.save_pretrained(path)
    with open(os.path.join(path, "preprocessor_config.json"), "w") as handle:
        json.dump(Preprocessor(spec.preprocessing).to_image_processor_dict(), handle)


def write_timm_checkpoint(cache: str, spec: ModelSpec) -> None:
    from timm.models import save_for_hf

    family = get_family(spec.family)
    arch = spec.timm_name.split(".")[0]
    model = timm.create_model(
        arch, pretrained=False, num_classes=spec.num_classes, **family.timm_kwargs(spec.architecture)
    )
    save_for_hf(model, snapshot_dir(cache, f"timm/{spec.timm_name}"), safe_serialization=True)


def build_tiny_hub(cache: str, specs: list[ModelSpec]) -> list[ModelSpec]:
    """Write every spec's tiny checkpoints into `cache`; return the tiny specs."""
    torch.manual_seed(0)
    tiny = [tiny_spec(spec) for spec in specs]
    for spec in tiny:
        write_transformers_checkpoint(cache, spec)
        if spec.timm_name:
            write_timm_checkpoint(cache, spec)
    return tiny
