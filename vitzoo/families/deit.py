"""DeiT (Touvron et al., 2021): data-efficient ViTs trained on ImageNet-1k, with or without a
distillation token.

Quirks: the plain DeiT checkpoints on the Hub are stored as `ViTForImageClassification`
(model_type "vit"); only the distilled ones use the `DeiT*` classes. A distilled model has a
second prefix token, and its embedding is the mean of the CLS and distillation tokens, as in
timm's `VisionTransformerDistilled.forward_head(pre_logits=True)`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from vitzoo.families.base import Family
from vitzoo.registry import HALF_MEAN, HALF_STD, Architecture, ModelSpec, Preprocessing, register, register_family


class DeiT(Family):
    name = "deit"
    label = "DeiT"
    paper_title = "Training data-efficient image transformers & distillation through attention"
    paper_url = "https://arxiv.org/abs/2012.12877"
    citation = """@inproceedings{touvron2021deit,
  title={Training data-efficient image transformers \\& distillation through attention},
  author={Touvron, Hugo and Cord, Matthieu and Douze, Matthijs and Massa, Francisco and Sablayrolles, Alexandre and J{\\'e}gou, Herv{\\'e}},
  booktitle={International Conference on Machine Learning},
  year={2021}
}"""
    model_types = ("deit",)  # the distilled checkpoints; the plain ones are model_type "vit"
    base_model_prefixes = ("vit", "deit")  # plain: ViT's classes; distilled: DeiT's
    # and the distilled classifiers' two heads: transformers' `cls_classifier` and
    # `distillation_classifier`, timm's `head` and `head_dist`
    head_names = Family.head_names | {"cls_classifier", "distillation_classifier", "head_dist"}
    distilled_classes: dict[str, str | None] = {
        "classification": "DeiTForImageClassificationWithTeacher",
        "features": "DeiTModel",
        "pretraining": "DeiTForMaskedImageModeling",
    }

    def transformers_class(self, spec: ModelSpec, task: str) -> type[PreTrainedModel]:
        if not spec.architecture.distillation_token:
            return super().transformers_class(spec, task)
        import transformers

        return getattr(transformers, self.distilled_classes[task])

    def build_config(self, spec: ModelSpec, task: str, **extra: Any):
        if not spec.architecture.distillation_token:
            return super().build_config(spec, task, **extra)
        from transformers import DeiTConfig

        return DeiTConfig(**{**self.config_kwargs(spec.architecture), **extra})

    def architecture_from_config(self, config) -> Architecture:
        import dataclasses

        arch = super().architecture_from_config(config)
        return dataclasses.replace(arch, distillation_token=config.model_type == "deit")

    def describe_model_type(self, model_type: str) -> str:
        return "deit (distilled)"  # model_type "deit" is only ever a distilled checkpoint

    def pool(self, outputs: Any, arch: Architecture) -> torch.Tensor:
        hidden = outputs.last_hidden_state
        if arch.distillation_token:
            return (hidden[:, 0] + hidden[:, 1]) / 2
        return hidden[:, 0]


register_family(DeiT())

# What each repo's preprocessor_config.json says (tests/data/published/): the distilled repos ship
# DeiTImageProcessor (squash to 256x256, centre crop 224, bicubic, ImageNet mean/std; deit-tiny-distilled
# squashes to 224 since its "set correct image size" change), the non-distilled ones ViT's processor
# (squash to 224, bilinear, mean/std 0.5) -- not the paper's evaluation pipeline, which timm keeps.
# vitzoo follows the published files, as a transformers user gets them.
DISTILLED_PREP = Preprocessing(resize_size=256, crop_size=224, interpolation="bicubic")
TINY_DISTILLED_PREP = Preprocessing(resize_size=224, crop_size=224, interpolation="bicubic")
PLAIN_PREP = Preprocessing(resize_size=224, interpolation="bilinear", mean=HALF_MEAN, std=HALF_STD)

# published: ImageNet-1k top-1 from the DeiT paper
register(
    ModelSpec(
        name="deit-tiny",
        family="deit",
        hub_id="facebook/deit-tiny-patch16-224",
        timm_name="deit_tiny_patch16_224.fb_in1k",
        architecture=Architecture(
            image_size=224,
            patch_size=16,
            hidden_size=192,
            depth=12,
            num_heads=3,
            mlp_size=768,
        ),
        preprocessing=PLAIN_PREP,
        pretraining="supervised",
        pretrained_on="ImageNet-1k",
        method="supervised classification",
        num_classes=1000,
        num_params=5_717_416,
        published={"imagenet_top1": 72.2},
    ),
    ModelSpec(
        name="deit-tiny-distilled",
        family="deit",
        hub_id="facebook/deit-tiny-distilled-patch16-224",
        timm_name="deit_tiny_distilled_patch16_224.fb_in1k",
        architecture=Architecture(
            image_size=224,
            patch_size=16,
            hidden_size=192,
            depth=12,
            num_heads=3,
            mlp_size=768,
            distillation_token=True,
        ),
        preprocessing=TINY_DISTILLED_PREP,
        pretraining="distilled",
        pretrained_on="ImageNet-1k",
        method="hard distillation from a RegNetY-16GF teacher",
        num_classes=1000,
        num_params=5_910_800,
        published={"imagenet_top1": 74.5},
    ),
    ModelSpec(
        name="deit-small",
        family="deit",
        hub_id="facebook/deit-small-patch16-224",
        timm_name="deit_small_patch16_224.fb_in1k",
        architecture=Architecture(
            image_size=224,
            patch_size=16,
            hidden_size=384,
            depth=12,
            num_heads=6,
            mlp_size=1536,
        ),
        preprocessing=PLAIN_PREP,
        pretraining="supervised",
        pretrained_on="ImageNet-1k",
        method="supervised classification",
        num_classes=1000,
        num_params=22_050_664,
        published={"imagenet_top1": 79.8},
    ),
    ModelSpec(
        name="deit-small-distilled",
        family="deit",
        hub_id="facebook/deit-small-distilled-patch16-224",
        timm_name="deit_small_distilled_patch16_224.fb_in1k",
        architecture=Architecture(
            image_size=224,
            patch_size=16,
            hidden_size=384,
            depth=12,
            num_heads=6,
            mlp_size=1536,
            distillation_token=True,
        ),
        preprocessing=DISTILLED_PREP,
        pretraining="distilled",
        pretrained_on="ImageNet-1k",
        method="hard distillation from a RegNetY-16GF teacher",
        num_classes=1000,
        num_params=22_436_432,
        published={"imagenet_top1": 81.2},
    ),
    ModelSpec(
        name="deit-base",
        family="deit",
        hub_id="facebook/deit-base-patch16-224",
        timm_name="deit_base_patch16_224.fb_in1k",
        architecture=Architecture(
            image_size=224,
            patch_size=16,
            hidden_size=768,
            depth=12,
            num_heads=12,
            mlp_size=3072,
        ),
        preprocessing=PLAIN_PREP,
        pretraining="supervised",
        pretrained_on="ImageNet-1k",
        method="supervised classification",
        num_classes=1000,
        num_params=86_567_656,
        published={"imagenet_top1": 81.8},
    ),
    ModelSpec(
        name="deit-base-distilled",
        family="deit",
        hub_id="facebook/deit-base-distilled-patch16-224",
        timm_name="deit_base_distilled_patch16_224.fb_in1k",
        architecture=Architecture(
            image_size=224,
            patch_size=16,
            hidden_size=768,
            depth=12,
            num_heads=12,
            mlp_size=3072,
            distillation_token=True,
        ),
        preprocessing=DISTILLED_PREP,
        pretraining="distilled",
        pretrained_on="ImageNet-1k",
        method="hard distillation from a RegNetY-16GF teacher",
        num_classes=1000,
        num_params=87_338_192,
        published={"imagenet_top1": 83.4},
    ),
)
