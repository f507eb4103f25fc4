"""A tiny offline stand-in for the Hugging Face Hub, built from the repos' published files.

For every registered checkpoint this starts from the repo's published `config.json` (in
`tests/data/published/<owner>--<name>/`, with where each file came from), changes only the sizes
(hidden size, depth, heads, MLP, image and patch size; MAE's decoder), keeps every other key (the
label names, the processor type, the flags of the time), builds random weights with the published
architecture class and saves them with the published `preprocessor_config.json` under the canonical
Hub id in a Hub-cache layout (`models--org--name/refs/main` + `snapshots/<commit>/...`), and the
same for its timm equivalent under `timm/<arch>.<tag>`. With HF_HUB_OFFLINE=1 and HF_HUB_CACHE
pointing there, `vitzoo.load("deit-small")` runs exactly the code a user online runs, minus the
download.

Two kinds of checkpoints are not in that layout. A family transformers cannot run (DeiT III, whose
Hub repository is timm's own) gets its timm checkpoint only. timm weights published at a URL rather
than in a Hub repository (I-JEPA's, on dl.fbaipublicfiles.com) go to torch's hub cache, which
`build_tiny_hub` points (TORCH_HOME) at a folder beside the Hub cache, in the released file's
layout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil

import timm
import torch
import transformers

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


PUBLISHED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "published")
TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
               "image_size": TINY_IMAGE, "patch_size": TINY_PATCH}
TINY_DECODER = {"decoder_hidden_size": 32, "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2,
                "decoder_intermediate_size": 64}


def published(repo_id: str, name: str) -> str:
    """The path of a file `repo_id` published (config.json, preprocessor_config.json)."""
    return os.path.join(PUBLISHED, repo_id.replace("/", "--"), name)


def tiny_config(repo_id: str) -> transformers.PretrainedConfig:
    """The repo's published config with only the sizes changed."""
    with open(published(repo_id, "config.json")) as handle:
        values = json.load(handle)
    values.update(TINY_CONFIG)
    if "stage_names" in values:  # backbone fields derived from the depth (DINOv2 with registers): rederived
        for key in ("stage_names", "out_features", "out_indices"):
            values.pop(key, None)
    if values["model_type"] == "vit_mae":
        values.update(TINY_DECODER)
    return transformers.AutoConfig.for_model(**values)


def write_transformers_checkpoint(cache: str, spec: ModelSpec) -> None:
    config = tiny_config(spec.hub_id)
    model = getattr(transformers, config.architectures[0])(config)
    path = snapshot_dir(cache, spec.hub_id)
    model.save_pretrained(path)
    shutil.copy(published(spec.hub_id, "preprocessor_config.json"), path)


def write_timm_checkpoint(cache: str, spec: ModelSpec) -> None:
    from timm.models import save_for_hf

    family = get_family(spec.family)
    arch = spec.timm_name.split(".")[0]
    model = timm.create_model(
        arch, pretrained=False, num_classes=spec.num_classes, **family.timm_kwargs(spec.architecture)
    )
    cfg = timm.models.get_pretrained_cfg(spec.timm_name)
    if cfg.hf_hub_id:
        save_for_hf(model, snapshot_dir(cache, f"timm/{spec.timm_name}"), safe_serialization=True)
        return
    # weights at a URL: torch's hub cache, under the URL's file name. I-JEPA's release is a training
    # checkpoint with the context encoder under "encoder", its keys prefixed by DDP's "module."
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"encoder": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)


def build_tiny_hub(cache: str, specs: list[ModelSpec]) -> list[ModelSpec]:
    """Write every spec's tiny checkpoints into `cache` (and torch's hub cache beside it); return the tiny specs."""
    torch.manual_seed(0)
    os.environ["TORCH_HOME"] = os.path.join(os.path.dirname(os.path.abspath(cache)), "torch")
    tiny = [tiny_spec(spec) for spec in specs]
    for spec in tiny:
        if not get_family(spec.family).no_transformers:
            write_transformers_checkpoint(cache, spec)
        if spec.timm_name:
            write_timm_checkpoint(cache, spec)
    return tiny
