"""DeiT III (Touvron et al., 2022, "DeiT III: Revenge of the ViT"): plain ViTs trained supervised on
ImageNet-1k with a simpler, stronger recipe (3-Augment, binary cross-entropy, LayerScale).

Quirks: every block carries layer scale (per-channel scales on both residual branches, init 1e-6),
and the position table covers the patches only (the CLS token is added after it, timm's
`no_embed_class`). transformers has no class for that layout, so DeiT III runs on the timm backend
only; asking transformers for it is refused with the reason. The checkpoints live in timm's Hub
repositories (timm/deit3_*), which are the specs' Hub ids.
"""

from __future__ import annotations

from typing import Any

from vitzoo.families.base import Family
from vitzoo.registry import Architecture, ModelSpec, Preprocessing, register, register_family


class DeiT3(Family):
    name = "deit3"
    label = "DeiT III"
    paper_title = "DeiT III: Revenge of the ViT"
    paper_url = "https://arxiv.org/abs/2204.07118"
    citation = """@inproceedings{touvron2022deit3,
  title={{DeiT III}: Revenge of the {ViT}},
  author={Touvron, Hugo and Cord, Matthieu and J{\\'e}gou, Herv{\\'e}},
  booktitle={European Conference on Computer Vision},
  year={2022}
}"""
    base_model_prefixes = ()
    classes = {"classification": None, "features": None, "pretraining": None}
    no_transformers = (
        "transformers has no DeiT III class (its blocks carry layer scale, and its position table skips the "
        "CLS token; transformers' ViT and DeiT classes have neither)."
    )

    def timm_kwargs(self, arch: Architecture) -> dict[str, Any]:
        return {**super().timm_kwargs(arch), "init_values": arch.layer_scale_init or 1e-6, "no_embed_class": True}


register_family(DeiT3())

# timm's pretrained cfg for deit3_*_224.fb_in1k (its Hub config.json): shortest edge to 248 (crop_pct
# 0.9), centre crop 224, bicubic, ImageNet mean/std. published: ImageNet-1k top-1, 224px, trained on
# ImageNet-1k only (DeiT III paper).
DEIT3_PREP = Preprocessing(resize_size=248, crop_size=224, resize_mode="shortest", interpolation="bicubic")
NOTES = "timm backend only: transformers has no DeiT III class (layer scale, position table without the CLS token)."

SHARED = dict(
    family="deit3",
    preprocessing=DEIT3_PREP,
    pretraining="supervised",
    pretrained_on="ImageNet-1k",
    method="supervised classification (3-Augment, binary cross-entropy, LayerScale)",
    num_classes=1000,
    notes=NOTES,
)

register(
    ModelSpec(
        name="deit3-small",
        hub_id="timm/deit3_small_patch16_224.fb_in1k",
        timm_name="deit3_small_patch16_224.fb_in1k",
        architecture=Architecture(
            image_size=224, patch_size=16, hidden_size=384, depth=12, num_heads=6, mlp_size=1536, layer_scale_init=1e-6
        ),
        num_params=22_059_496,
        published={"imagenet_top1": 81.4},
        **SHARED,
    ),
    ModelSpec(
        name="deit3-base",
        hub_id="timm/deit3_base_patch16_224.fb_in1k",
        timm_name="deit3_base_patch16_224.fb_in1k",
        architecture=Architecture(
            image_size=224, patch_size=16, hidden_size=768, depth=12, num_heads=12, mlp_size=3072, layer_scale_init=1e-6
        ),
        num_params=86_585_320,
        published={"imagenet_top1": 83.8},
        **SHARED,
    ),
)
