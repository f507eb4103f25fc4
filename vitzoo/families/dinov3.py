"""DINOv3 (Siméoni et al., 2025): self-supervised ViTs with patch size 16, RoPE positions, four
register tokens and layer scale, distilled from a 7B teacher on LVD-1689M.

Quirks:
- Positions are rotary (RoPE on the patch tokens' queries and keys, from normalised patch
  coordinates): there is no position table, so any multiple of 16 runs as it is, with nothing
  to interpolate (`--image-size` changes the pipeline only).
- The sequence is [CLS, 4 registers, patches]: the embedding is the final CLS token, and
  attention maps skip the registers.
- transformers has a features model only (`DINOv3ViTModel`); there is no DINOv3 classifier, so a
  new head goes on the timm backend. Its `base_model_prefix` ("model") names the layer stack
  inside `DINOv3ViTModel`, so vitzoo uses a subclass whose `base_model` is itself, as for every
  other family's features model (same weights, same config, saved under the same class name).
- The released weights' q/v biases are all zero: transformers keeps them (k has none), timm's
  `vit_*_dinov3` leaves them out; the converter fills or drops the zeros.
- timm pools with the mean of the patch tokens by default; vitzoo creates it with
  global_pool="token", the CLS token, as the paper and transformers do.
- The weights are under the DINOv3 License, in gated repositories.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from transformers import PreTrainedModel

from vitzoo.errors import BadInputError
from vitzoo.families.base import Family, check_task
from vitzoo.registry import Architecture, ModelSpec, Preprocessing, register, register_family

LICENSE_URL = "https://ai.meta.com/resources/models-and-libraries/dinov3-license/"


@functools.cache
def features_class() -> type[PreTrainedModel]:
    """transformers' `DINOv3ViTModel` whose `base_model` is the model itself (see the module docstring)."""
    from transformers import DINOv3ViTModel

    class Model(DINOv3ViTModel):
        @property
        def base_model(self) -> PreTrainedModel:
            return self

    Model.__name__ = Model.__qualname__ = "DINOv3ViTModel"  # what save_pretrained writes in config.json
    Model.__doc__ = "transformers' DINOv3ViTModel; `base_model` is the model itself, which runs on pixels."
    return Model


class DINOv3(Family):
    name = "dinov3"
    label = "DINOv3"
    paper_title = "DINOv3"
    paper_url = "https://arxiv.org/abs/2508.10104"
    citation = """@article{simeoni2025dinov3,
  title={{DINOv3}},
  author={Sim{\\'e}oni, Oriane and Vo, Huy V. and Seitzer, Maximilian and Baldassarre, Federico and Oquab, Maxime and Jose, Cijo and Khalidov, Vasil and Szafraniec, Marc and Yi, Seungeun and Ramamonjisoa, Micha{\\"e}l and others},
  journal={arXiv preprint arXiv:2508.10104},
  year={2025}
}"""
    model_types = ("dinov3_vit",)
    base_model_prefixes = ("model",)
    classes = {"classification": None, "features": "DINOv3ViTModel", "pretraining": None}
    config_class = "DINOv3ViTConfig"
    features_kwargs = {}
    dynamic_image_size = True  # RoPE: any multiple of the patch size, nothing to interpolate
    register_tokens = 4
    weights_note = (
        "the facebook/dinov3-* repositories are gated and their weights are under the DINOv3 License "
        f"({LICENSE_URL}): accept it on the model's Hub page, then log in (`hf auth login`) before "
        "downloading; timm's copies (timm/vit_*_dinov3.lvd1689m) are under the same license."
    )

    def transformers_class(self, spec: ModelSpec, task: str) -> type[PreTrainedModel]:
        if task == "features":
            return features_class()
        check_task(task)
        raise BadInputError(
            f"{spec.name} (DINOv3) has no {task!r} model in transformers, which ships DINOv3 as a features "
            "model only: use task='features' (k-NN, linear probes), or backend='timm' for a classification head."
        )

    def config_kwargs(self, arch: Architecture) -> dict[str, Any]:
        kwargs = super().config_kwargs(arch)
        del kwargs["qkv_bias"]  # DINOv3's config says which of q, k and v have a bias: q and v
        kwargs.update(
            num_register_tokens=self.register_tokens,
            layerscale_value=arch.layer_scale_init or 1.0,
            query_bias=True,
            key_bias=False,
            value_bias=True,
        )
        return kwargs

    def architecture_from_config(self, config) -> Architecture:
        if config.num_register_tokens != self.register_tokens:
            raise BadInputError(
                f"a DINOv3 config with {config.num_register_tokens} register tokens; vitzoo's DINOv3 family has "
                f"{self.register_tokens}, as every released DINOv3 ViT"
            )
        return dataclasses.replace(super().architecture_from_config(config), layer_scale_init=config.layerscale_value)

    def resize_model(self, model, arch: Architecture, new_size: int):
        return model  # RoPE: nothing depends on the input size

    def position_embedding_keys(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        return []  # no position table

    # ------------------------------------------------------------------ timm
    def timm_kwargs(self, arch: Architecture) -> dict[str, Any]:
        kwargs = super().timm_kwargs(arch)
        kwargs.update(dynamic_img_size=True, init_values=arch.layer_scale_init or 1.0, global_pool="token")
        return kwargs

    def config_from_timm_state(self, config, state: dict[str, torch.Tensor], arch: Architecture) -> None:
        # the released layout: q and v biases (zero when timm has none), no k bias
        config.query_bias, config.key_bias, config.value_bias = True, False, True

    def check_timm_convertible(self, config) -> None:
        if getattr(config, "use_gated_mlp", False):
            raise BadInputError("DINOv3 models with a SwiGLU MLP (ViT-S+, H+, 7B) are not supported by this converter")
        if getattr(config, "key_bias", False):
            raise BadInputError("a DINOv3 model with a key bias: timm's DINOv3 attention has none")
        if getattr(config, "num_register_tokens", self.register_tokens) != self.register_tokens:
            raise BadInputError(f"timm's DINOv3 models have {self.register_tokens} register tokens")

    def timm_kwargs_from_transformers(self, config, state: dict[str, Any], prefix: str) -> dict[str, Any]:
        biases = [v for k, v in state.items() if k.endswith(("attention.q_proj.bias", "attention.v_proj.bias"))]
        return {"qkv_bias": any(bool(b.any()) for b in biases), "init_values": config.layerscale_value}


register_family(DINOv3())

# facebook/dinov3-*-pretrain-lvd1689m: DINOv3ViTImageProcessorFast, squash to 224x224, bilinear,
# ImageNet mean/std (timm's cfg: 256x256 bicubic, the README's transform at 256 bilinear)
DINOV3_PREP = Preprocessing(resize_size=224, interpolation="bilinear")
NOTES = (
    "License: DINOv3 License (not Apache 2.0; " + LICENSE_URL + "). The Hub repositories are gated: accept the "
    "license on the model page and log in before downloading. transformers has no DINOv3 classifier: "
    "classification heads run on the timm backend."
)

# what the three distilled ViTs share. num_params: the released checkpoint as timm ships it (no q/v biases:
# they are all zero); transformers' model adds those zeros and a mask token. published: the DINOv3 model
# card's results for the distilled ViTs, where a stored copy confirmed them (ViT-L/16)
SHARED = dict(
    family="dinov3",
    preprocessing=DINOV3_PREP,
    pretraining="self-supervised",
    pretrained_on="LVD-1689M (no labels)",
    license="dinov3-license",
    method="distilled from the DINOv3 ViT-7B (self-distillation, iBOT, KoLeo, Gram anchoring)",
    notes=NOTES,
)


def _arch(hidden_size: int, depth: int, num_heads: int) -> Architecture:
    return Architecture(image_size=224, patch_size=16, hidden_size=hidden_size, depth=depth, num_heads=num_heads,
                        mlp_size=4 * hidden_size, layer_scale_init=1e-5)


register(
    ModelSpec(
        name="dinov3-vits16",
        hub_id="facebook/dinov3-vits16-pretrain-lvd1689m",
        timm_name="vit_small_patch16_dinov3.lvd1689m",
        architecture=_arch(384, 12, 6),
        num_params=21_586_944,
        **SHARED,
    ),
    ModelSpec(
        name="dinov3-vitb16",
        hub_id="facebook/dinov3-vitb16-pretrain-lvd1689m",
        timm_name="vit_base_patch16_dinov3.lvd1689m",
        architecture=_arch(768, 12, 12),
        num_params=85_641_216,
        **SHARED,
    ),
    ModelSpec(
        name="dinov3-vitl16",
        hub_id="facebook/dinov3-vitl16-pretrain-lvd1689m",
        timm_name="vit_large_patch16_dinov3.lvd1689m",
        architecture=_arch(1024, 24, 16),
        num_params=303_079_424,
        published={"imagenet_real_linear_top1": 90.2, "ade20k_linear_miou": 54.9},
        **SHARED,
    ),
)
