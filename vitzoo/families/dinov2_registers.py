"""DINOv2 with registers (Darcet et al., 2024, "Vision Transformers Need Registers"): DINOv2 ViTs
trained with four extra learned tokens that absorb the high-norm artefacts plain DINOv2 writes
into background patches.

Quirks, beyond DINOv2's (patch 14, layer scale, position table for 518x518 inputs interpolated on
every forward):
- The sequence is [CLS, 4 registers, patches]; the registers carry no position embedding. The
  embedding is the final CLS token; attention maps skip the registers.
- transformers' position table has a row for the CLS token; timm (no_embed_class) folds that row
  into its CLS token and keeps the patch rows only. The converter adds the row to the CLS token
  going to timm and writes a zero row coming back: the same function, and the same weights but for
  that fold.
- transformers' classifier reads [CLS, mean of the patch tokens] (registers left out), timm's the
  CLS token, as for DINOv2.
"""

from __future__ import annotations

from typing import Any

from vitzoo.families.dinov2 import DINOV2_PREP, DINOv2
from vitzoo.registry import Architecture, ModelSpec, register, register_family


class DINOv2Registers(DINOv2):
    name = "dinov2_reg"
    label = "DINOv2 with registers"
    paper_title = "Vision Transformers Need Registers"
    paper_url = "https://arxiv.org/abs/2309.16588"
    citation = """@inproceedings{darcet2024registers,
  title={Vision Transformers Need Registers},
  author={Darcet, Timoth{\\'e}e and Oquab, Maxime and Mairal, Julien and Bojanowski, Piotr},
  booktitle={International Conference on Learning Representations},
  year={2024}
}"""
    model_types = ("dinov2_with_registers",)
    base_model_prefixes = ("dinov2_with_registers",)
    classes = {
        "classification": "Dinov2WithRegistersForImageClassification",
        "features": "Dinov2WithRegistersModel",
        "pretraining": None,
    }
    config_class = "Dinov2WithRegistersConfig"
    register_tokens = 4

    def config_kwargs(self, arch: Architecture) -> dict[str, Any]:
        return {**super().config_kwargs(arch), "num_register_tokens": self.register_tokens}

    def timm_kwargs(self, arch: Architecture) -> dict[str, Any]:
        return {**super().timm_kwargs(arch), "reg_tokens": self.register_tokens, "no_embed_class": True}

    def check_timm_convertible(self, config) -> None:
        super().check_timm_convertible(config)
        from vitzoo.errors import BadInputError

        if getattr(config, "num_register_tokens", self.register_tokens) != self.register_tokens:
            raise BadInputError(f"timm's DINOv2 models with registers have {self.register_tokens} of them")


register_family(DINOv2Registers())

# facebook/dinov2-with-registers-*: the same BitImageProcessor file as facebook/dinov2-* (shortest edge
# 256, centre crop 224, bicubic, ImageNet mean/std). published: k-NN and linear ImageNet top-1 from the
# DINOv2 repository's table of distilled models with registers.
SHARED = dict(
    family="dinov2_reg",
    preprocessing=DINOV2_PREP,
    pretraining="self-supervised",
    pretrained_on="LVD-142M (no labels)",
    method="DINOv2 self-distillation with iBOT masked-token loss, 4 register tokens",
)

register(
    ModelSpec(
        name="dinov2-small-reg",
        hub_id="facebook/dinov2-with-registers-small",
        timm_name="vit_small_patch14_reg4_dinov2.lvd142m",
        architecture=Architecture(
            image_size=518, patch_size=14, hidden_size=384, depth=12, num_heads=6, mlp_size=1536, layer_scale_init=1e-5
        ),
        num_params=22_057_344,
        published={"imagenet_linear_top1": 80.9, "imagenet_knn_top1": 79.1},
        **SHARED,
    ),
    ModelSpec(
        name="dinov2-base-reg",
        hub_id="facebook/dinov2-with-registers-base",
        timm_name="vit_base_patch14_reg4_dinov2.lvd142m",
        architecture=Architecture(
            image_size=518, patch_size=14, hidden_size=768, depth=12, num_heads=12, mlp_size=3072, layer_scale_init=1e-5
        ),
        num_params=86_582_016,
        published={"imagenet_linear_top1": 84.6, "imagenet_knn_top1": 82.0},
        **SHARED,
    ),
)
