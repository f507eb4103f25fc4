"""DINOv2 (Oquab et al., 2024): self-supervised ViTs with patch size 14 and layer scale.

Quirks: position embeddings are learnt for 518x518 inputs and interpolated for any other size
on every forward (both libraries), so the model takes any multiple of 14; the published
pipeline feeds 224x224 crops. The embedding is the final CLS token.
"""

from __future__ import annotations

from typing import Any

from vitzoo.errors import BadInputError
from vitzoo.families.base import Family
from vitzoo.registry import Architecture, ModelSpec, Preprocessing, register, register_family


class DINOv2(Family):
    name = "dinov2"
    label = "DINOv2"
    paper_title = "DINOv2: Learning Robust Visual Features without Supervision"
    paper_url = "https://arxiv.org/abs/2304.07193"
    citation = """@article{oquab2024dinov2,
  title={{DINOv2}: Learning Robust Visual Features without Supervision},
  author={Oquab, Maxime and Darcet, Timoth{\\'e}e and Moutakanni, Th{\\'e}o and Vo, Huy and Szafraniec, Marc and Khalidov, Vasil and Fernandez, Pierre and Haziza, Daniel and Massa, Francisco and El-Nouby, Alaaeldin and others},
  journal={Transactions on Machine Learning Research},
  year={2024}
}"""
    model_types = ("dinov2",)
    base_model_prefixes = ("dinov2",)
    classes = {
        "classification": "Dinov2ForImageClassification",
        "features": "Dinov2Model",
        "pretraining": None,
    }
    config_class = "Dinov2Config"
    features_kwargs = {}
    dynamic_image_size = True

    def config_kwargs(self, arch: Architecture) -> dict[str, Any]:
        kwargs = super().config_kwargs(arch)
        kwargs.pop("intermediate_size")
        kwargs.update(mlp_ratio=arch.mlp_size // arch.hidden_size, layerscale_value=arch.layer_scale_init or 1.0)
        return kwargs

    def architecture_from_config(self, config) -> Architecture:
        return Architecture(
            image_size=config.image_size,
            patch_size=config.patch_size,
            hidden_size=config.hidden_size,
            depth=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            mlp_size=int(config.hidden_size * config.mlp_ratio),
            layer_scale_init=config.layerscale_value,
        )

    def resize_model(self, model, arch: Architecture, new_size: int):
        return model  # interpolates on every forward

    def timm_kwargs(self, arch: Architecture) -> dict[str, Any]:
        kwargs = super().timm_kwargs(arch)
        kwargs.update(dynamic_img_size=True, init_values=arch.layer_scale_init or 1.0)
        return kwargs

    def check_timm_convertible(self, config) -> None:
        if getattr(config, "use_swiglu_ffn", False):
            raise BadInputError("DINOv2 models with a SwiGLU MLP (giant) are not supported by this converter")

    def timm_kwargs_from_transformers(self, config, state: dict[str, Any], prefix: str) -> dict[str, Any]:
        return {**super().timm_kwargs_from_transformers(config, state, prefix), "init_values": config.layerscale_value}


register_family(DINOv2())

# facebook/dinov2-*: BitImageProcessor, shortest edge 256, centre crop 224, bicubic, ImageNet mean/std
DINOV2_PREP = Preprocessing(resize_size=256, crop_size=224, resize_mode="shortest", interpolation="bicubic")

register(
    ModelSpec(
        name="dinov2-small",
        family="dinov2",
        hub_id="facebook/dinov2-small",
        timm_name="vit_small_patch14_dinov2.lvd142m",
        architecture=Architecture(
            image_size=518, patch_size=14, hidden_size=384, depth=12, num_heads=6, mlp_size=1536, layer_scale_init=1e-5
        ),
        preprocessing=DINOV2_PREP,
        pretraining="self-supervised",
        pretrained_on="LVD-142M (no labels)",
        method="DINOv2 self-distillation with iBOT masked-token loss",
        num_params=22_056_192,
        published={"imagenet_linear_top1": 81.1, "imagenet_knn_top1": 79.0},
    ),
    ModelSpec(
        name="dinov2-base",
        family="dinov2",
        hub_id="facebook/dinov2-base",
        timm_name="vit_base_patch14_dinov2.lvd142m",
        architecture=Architecture(
            image_size=518, patch_size=14, hidden_size=768, depth=12, num_heads=12, mlp_size=3072, layer_scale_init=1e-5
        ),
        preprocessing=DINOV2_PREP,
        pretraining="self-supervised",
        pretrained_on="LVD-142M (no labels)",
        method="DINOv2 self-distillation with iBOT masked-token loss",
        num_params=86_579_712,
        published={"imagenet_linear_top1": 84.5, "imagenet_knn_top1": 82.1},
    ),
)
