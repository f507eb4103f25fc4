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
    paper_title = "Training data-efficient image transformers & distillation through attention"
    paper_url = "https://arxiv.org/abs/2012.12877"
    citation = """@inproceedings{touvron2021deit,
  title={Training data-efficient image transformers \\& distillation through attention},
  author={Touvron, Hugo and Cord, Matthieu and Douze, Matthijs and Massa, Francisco and Sablayrolles, Alexandre and J{\\'e}gou, Herv{\\'e}},
  booktitle={International Conference on Machine Learning},
  year={2021}
}"""
    model_types = ("deit",)
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
PLAIN_PREP = Preprocessing(resize_size=224, interpolation="bilinear", mean=HALF_MEAN, std=HALF_STD)
PREPROCESSING = {
    (size, distilled): PLAIN_PREP if not distilled else DISTILLED_PREP for size in ("tiny", "small", "base")
    for distilled in (False, True)
}
PREPROCESSING[("tiny", True)] = Preprocessing(resize_size=224, crop_size=224, interpolation="bicubic")
SIZES = {
    "tiny": dict(hidden_size=192, num_heads=3, top1=72.2, distilled_top1=74.5),
    "small": dict(hidden_size=384, num_heads=6, top1=79.8, distilled_top1=81.2),
    "base": dict(hidden_size=768, num_heads=12, top1=81.8, distilled_top1=83.4),
}
PARAMS = {
    ("tiny", False): 5_717_416,
    ("small", False): 22_050_664,
    ("base", False): 86_567_656,
    ("tiny", True): 5_910_800,
    ("small", True): 22_436_432,
    ("base", True): 87_338_192,
}

for size, info in SIZES.items():
    for distilled in (False, True):
        suffix = "-distilled" if distilled else ""
        hub_suffix = "distilled-" if distilled else ""
        register(
            ModelSpec(
                name=f"deit-{size}{suffix}",
                family="deit",
                hub_id=f"facebook/deit-{size}-{hub_suffix}patch16-224",
                timm_name=f"deit_{size}_{hub_suffix.replace('-', '_')}patch16_224.fb_in1k",
                architecture=Architecture(
                    image_size=224,
                    patch_size=16,
                    hidden_size=info["hidden_size"],
                    depth=12,
                    num_heads=info["num_heads"],
                    mlp_size=4 * info["hidden_size"],
                    distillation_token=distilled,
                ),
                preprocessing=PREPROCESSING[(size, distilled)],
                pretraining="distilled" if distilled else "supervised",
                pretrained_on="ImageNet-1k",
                method="hard distillation from a RegNetY-16GF teacher" if distilled else "supervised classification",
                num_classes=1000,
                num_params=PARAMS[(size, distilled)],
                published={"imagenet_top1": info["distilled_top1" if distilled else "top1"]},
            )
        )
