"""ViT (Dosovitskiy et al., 2021): the original vision transformer, supervised on ImageNet-21k."""

from __future__ import annotations

from vitzoo.families.base import Family
from vitzoo.registry import HALF_MEAN, HALF_STD, Architecture, ModelSpec, Preprocessing, register, register_family


class ViT(Family):
    name = "vit"
    label = "ViT"
    paper_title = "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale"
    paper_url = "https://arxiv.org/abs/2010.11929"
    citation = """@inproceedings{dosovitskiy2021vit,
  title={An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale},
  author={Dosovitskiy, Alexey and Beyer, Lucas and Kolesnikov, Alexander and Weissenborn, Dirk and Zhai, Xiaohua and Unterthiner, Thomas and Dehghani, Mostafa and Minderer, Matthias and Heigold, Georg and Gelly, Sylvain and Uszkoreit, Jakob and Houlsby, Neil},
  booktitle={International Conference on Learning Representations},
  year={2021}
}"""
    model_types = ("vit",)


register_family(ViT())

BASE = Architecture(image_size=224, patch_size=16, hidden_size=768, depth=12, num_heads=12, mlp_size=3072)
LARGE = Architecture(image_size=224, patch_size=16, hidden_size=1024, depth=24, num_heads=16, mlp_size=4096)
# google/vit-*: ViTImageProcessor, squash to 224x224, bilinear, mean = std = 0.5
GOOGLE_PREP = Preprocessing(resize_size=224, interpolation="bilinear", mean=HALF_MEAN, std=HALF_STD)

register(
    ModelSpec(
        name="vit-base",
        family="vit",
        hub_id="google/vit-base-patch16-224",
        timm_name="vit_base_patch16_224.orig_in21k_ft_in1k",
        architecture=BASE,
        preprocessing=GOOGLE_PREP,
        pretraining="supervised",
        pretrained_on="ImageNet-21k, fine-tuned on ImageNet-1k",
        method="supervised classification",
        num_classes=1000,
        num_params=86_567_656,
    ),
    ModelSpec(
        name="vit-base-in21k",
        family="vit",
        hub_id="google/vit-base-patch16-224-in21k",
        timm_name="vit_base_patch16_224.orig_in21k",
        architecture=BASE,
        preprocessing=GOOGLE_PREP,
        pretraining="supervised",
        pretrained_on="ImageNet-21k",
        method="supervised classification (head not shipped)",
        num_params=85_798_656,
    ),
    ModelSpec(
        name="vit-large",
        family="vit",
        hub_id="google/vit-large-patch16-224",
        timm_name=None,  # timm's vit_large_patch16_224 weights are AugReg, not these
        architecture=LARGE,
        preprocessing=GOOGLE_PREP,
        pretraining="supervised",
        pretrained_on="ImageNet-21k, fine-tuned on ImageNet-1k",
        method="supervised classification",
        num_classes=1000,
        num_params=304_326_632,
    ),
)
