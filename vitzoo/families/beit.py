"""BEiT (Bao et al., 2022): BERT-style masked image modelling on visual tokens.

Quirks: relative position bias in every layer (no absolute position embeddings), layer scale,
and mean pooling of the patch tokens (with a final LayerNorm) instead of a CLS token. A new
input size therefore resizes the relative position bias tables, not a position embedding.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from vitzoo.errors import BadInputError
from vitzoo.families.base import Family
from vitzoo.registry import HALF_MEAN, HALF_STD, Architecture, ModelSpec, Preprocessing, register, register_family


class BEiT(Family):
    name = "beit"
    label = "BEiT"
    paper_title = "BEiT: BERT Pre-Training of Image Transformers"
    paper_url = "https://arxiv.org/abs/2106.08254"
    citation = """@inproceedings{bao2022beit,
  title={{BEiT}: {BERT} Pre-Training of Image Transformers},
  author={Bao, Hangbo and Dong, Li and Piao, Songhao and Wei, Furu},
  booktitle={International Conference on Learning Representations},
  year={2022}
}"""
    model_types = ("beit",)
    base_model_prefixes = ("beit",)
    classes = {
        "classification": "BeitForImageClassification",
        "features": "BeitModel",
        "pretraining": "BeitForMaskedImageModeling",
    }
    config_class = "BeitConfig"
    features_kwargs = {"add_pooling_layer": True}  # BEiT's pooler is its mean pooling + LayerNorm

    def config_kwargs(self, arch: Architecture) -> dict[str, Any]:
        kwargs = super().config_kwargs(arch)
        kwargs.pop("qkv_bias")
        kwargs.update(
            use_relative_position_bias=True,
            use_shared_relative_position_bias=False,
            use_absolute_position_embeddings=False,
            use_mean_pooling=True,
            layer_scale_init_value=arch.layer_scale_init or 0.1,
            vocab_size=8192,
        )
        return kwargs

    def build_config(self, spec: ModelSpec, task: str, **extra: Any):
        config = super().build_config(spec, task, **extra)
        if task == "pretraining":
            # the self-supervised checkpoint shares one bias table across layers, as published
            config.use_shared_relative_position_bias = True
            config.use_relative_position_bias = False
            config.use_mask_token = True
        return config

    def architecture_from_config(self, config) -> Architecture:
        arch = super().architecture_from_config(config)
        return dataclasses.replace(arch, layer_scale_init=config.layer_scale_init_value)

    def dropped_weights(self, task: str) -> str:
        """Besides the default: a pretraining checkpoint's masked-image-modelling head and its final
        LayerNorm, which classification and features replace by mean pooling with its own LayerNorm
        (as BEiT's fine-tuning does)."""
        base = super().dropped_weights(task)
        return base if task == "pretraining" else base + r"|(^|\.)lm_head\.|^layernorm\."

    def pool(self, outputs: Any, arch: Architecture) -> torch.Tensor:
        if outputs.pooler_output is not None:
            return outputs.pooler_output
        # the masked-image-modelling model (task="pretraining") has no pooler: the same mean of the
        # patch tokens, normalised without the pooler's learnt scale and shift (the checkpoint has none)
        patches = outputs.last_hidden_state[:, self.num_prefix_tokens(arch):]
        mean = patches.mean(dim=1)
        return torch.nn.functional.layer_norm(mean, mean.shape[-1:], eps=1e-12)  # BEiT's layer_norm_eps

    def num_prefix_tokens(self, arch: Architecture) -> int:
        return 1

    def resize_model(self, model, arch: Architecture, new_size: int):
        from timm.layers import resize_rel_pos_bias_table

        config = copy.deepcopy(model.config)
        config.image_size = new_size
        resized = type(model)(config, **self.init_kwargs(model))
        target = resized.state_dict()
        state = {}
        for key, value in model.state_dict().items():
            if key.endswith("relative_position_bias_table") and value.shape != target[key].shape:
                grid = new_size // arch.patch_size
                value = resize_rel_pos_bias_table(
                    value, new_window_size=(grid, grid), new_bias_shape=tuple(target[key].shape)
                )
            elif key.endswith("relative_position_index"):
                value = target[key]
            state[key] = value
        resized.load_state_dict(state)
        return resized

    def timm_kwargs(self, arch: Architecture) -> dict[str, Any]:
        kwargs = super().timm_kwargs(arch)
        if arch.layer_scale_init is not None:
            kwargs["init_values"] = arch.layer_scale_init
        return kwargs

    def scratch_pretraining_overrides(self, method: str) -> dict[str, Any]:
        if method != "beit":
            return {}
        # the shared relative position bias starts at zero, so a new BEiT alone cannot tell masked
        # positions apart until it has learnt one: learned absolute positions give it that from step 1
        return {"use_absolute_position_embeddings": True}

    def config_from_timm_state(self, config, state: dict[str, torch.Tensor], arch: Architecture) -> None:
        """Which position embeddings and biases the timm model has, and its layer scale (no qkv_bias
        field: BEiT's attention always has a query and value bias)."""
        config.use_absolute_position_embeddings = "pos_embed" in state
        config.use_shared_relative_position_bias = "rel_pos_bias.relative_position_bias_table" in state
        config.use_relative_position_bias = any(key.endswith("attn.relative_position_bias_table") for key in state)
        config.use_mask_token = False
        config.layer_scale_init_value = arch.layer_scale_init or 0.0

    def check_timm_convertible(self, config) -> None:
        if not getattr(config, "use_mean_pooling", True):
            raise BadInputError(
                "BEiT models without mean pooling (use_mean_pooling=False) have no timm counterpart here"
            )

    def timm_kwargs_from_transformers(self, config, state: dict[str, torch.Tensor], prefix: str) -> dict[str, Any]:
        shared = any(k.endswith("shared_position_bias.relative_position_bias_table") for k in state)
        return {
            "use_abs_pos_emb": f"{prefix}embeddings.position_embeddings" in state,
            "use_rel_pos_bias": any(k.endswith("relative_position_bias.relative_position_bias_table") for k in state)
            and not shared,
            "use_shared_rel_pos_bias": shared,
            "init_values": config.layer_scale_init_value if config.layer_scale_init_value > 0 else None,
        }


register_family(BEiT())

# microsoft/beit-*: BeitImageProcessor, squash to 224x224, bilinear, mean = std = 0.5
BEIT_PREP = Preprocessing(resize_size=224, interpolation="bilinear", mean=HALF_MEAN, std=HALF_STD)
BASE = Architecture(
    image_size=224, patch_size=16, hidden_size=768, depth=12, num_heads=12, mlp_size=3072, layer_scale_init=0.1
)
LARGE = Architecture(
    image_size=224, patch_size=16, hidden_size=1024, depth=24, num_heads=16, mlp_size=4096, layer_scale_init=1e-5
)

register(
    ModelSpec(
        name="beit-base",
        family="beit",
        hub_id="microsoft/beit-base-patch16-224",
        timm_name="beit_base_patch16_224.in22k_ft_in22k_in1k",
        architecture=BASE,
        preprocessing=BEIT_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-22k (masked image modelling), fine-tuned on ImageNet-22k then ImageNet-1k",
        method="BEiT masked image modelling, then supervised fine-tuning",
        num_classes=1000,
        num_params=86_530_984,
        published={"imagenet_top1": 85.2},
    ),
    ModelSpec(
        name="beit-base-pt22k",
        family="beit",
        hub_id="microsoft/beit-base-patch16-224-pt22k",
        timm_name=None,  # timm ships no BEiT checkpoint without fine-tuning
        architecture=BASE,
        preprocessing=BEIT_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-22k (masked image modelling only)",
        method="BEiT masked image modelling on DALL-E visual tokens",
        notes="Checkpoint is BeitForMaskedImageModeling (shared relative position bias); no classifier.",
        checkpoint_task="pretraining",
    ),
    ModelSpec(
        name="beit-large",
        family="beit",
        hub_id="microsoft/beit-large-patch16-224",
        timm_name="beit_large_patch16_224.in22k_ft_in22k_in1k",
        architecture=LARGE,
        preprocessing=BEIT_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-22k (masked image modelling), fine-tuned on ImageNet-22k then ImageNet-1k",
        method="BEiT masked image modelling, then supervised fine-tuning",
        num_classes=1000,
        num_params=304_430_568,
        published={"imagenet_top1": 87.4},
    ),
)
