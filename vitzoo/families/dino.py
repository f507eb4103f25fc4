"""DINO (Caron et al., 2021): self-distillation with no labels; ViT backbones without a head.

The Hub checkpoints are plain `ViTModel`s (model_type "vit"): only the registry tells them
apart from supervised ViTs. Their embedding is the final CLS token, as in the paper's k-NN and
linear evaluations.
"""

from __future__ import annotations

from vitzoo.families.base import Family
from vitzoo.registry import Architecture, ModelSpec, Preprocessing, register, register_family


class DINO(Family):
    name = "dino"
    label = "DINO"
    paper_title = "Emerging Properties in Self-Supervised Vision Transformers"
    paper_url = "https://arxiv.org/abs/2104.14294"
    citation = """@inproceedings{caron2021dino,
  title={Emerging Properties in Self-Supervised Vision Transformers},
  author={Caron, Mathilde and Touvron, Hugo and Misra, Ishan and J{\\'e}gou, Herv{\\'e} and Mairal, Julien and Bojanowski, Piotr and Joulin, Armand},
  booktitle={International Conference on Computer Vision},
  year={2021}
}"""
    # the checkpoints are model_type "vit", which the ViT family claims: a DINO folder saved without
    # vitzoo.json loads as a ViT (same classes, same CLS-token embedding)
    model_types = ()


register_family(DINO())

# facebook/dino-*: ViTImageProcessor, squash to 224x224, bilinear, ImageNet mean/std
DINO_PREP = Preprocessing(resize_size=224, interpolation="bilinear")
# published ImageNet results of the frozen backbones (DINO paper, Table 2)
register(
    ModelSpec(
        name="dino-vits16",
        family="dino",
        hub_id="facebook/dino-vits16",
        timm_name="vit_small_patch16_224.dino",
        architecture=Architecture(image_size=224, patch_size=16, hidden_size=384, depth=12, num_heads=6, mlp_size=1536),
        preprocessing=DINO_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-1k (no labels)",
        method="DINO self-distillation",
        num_params=21_665_664,
        published={"imagenet_linear_top1": 77.0, "imagenet_knn_top1": 74.5},
    ),
    ModelSpec(
        name="dino-vits8",
        family="dino",
        hub_id="facebook/dino-vits8",
        timm_name="vit_small_patch8_224.dino",
        architecture=Architecture(image_size=224, patch_size=8, hidden_size=384, depth=12, num_heads=6, mlp_size=1536),
        preprocessing=DINO_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-1k (no labels)",
        method="DINO self-distillation",
        num_params=21_670_272,
        published={"imagenet_linear_top1": 79.7, "imagenet_knn_top1": 78.3},
    ),
    ModelSpec(
        name="dino-vitb16",
        family="dino",
        hub_id="facebook/dino-vitb16",
        timm_name="vit_base_patch16_224.dino",
        architecture=Architecture(
            image_size=224, patch_size=16, hidden_size=768, depth=12, num_heads=12, mlp_size=3072
        ),
        preprocessing=DINO_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-1k (no labels)",
        method="DINO self-distillation",
        num_params=85_798_656,
        published={"imagenet_linear_top1": 78.2, "imagenet_knn_top1": 76.1},
    ),
    ModelSpec(
        name="dino-vitb8",
        family="dino",
        hub_id="facebook/dino-vitb8",
        timm_name="vit_base_patch8_224.dino",
        architecture=Architecture(image_size=224, patch_size=8, hidden_size=768, depth=12, num_heads=12, mlp_size=3072),
        preprocessing=DINO_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-1k (no labels)",
        method="DINO self-distillation",
        num_params=85_807_872,
        published={"imagenet_linear_top1": 80.1, "imagenet_knn_top1": 77.4},
    ),
)
