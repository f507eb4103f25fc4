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
    paper_title = "Emerging Properties in Self-Supervised Vision Transformers"
    paper_url = "https://arxiv.org/abs/2104.14294"
    citation = """@inproceedings{caron2021dino,
  title={Emerging Properties in Self-Supervised Vision Transformers},
  author={Caron, Mathilde and Touvron, Hugo and Misra, Ishan and J{\\'e}gou, Herv{\\'e} and Mairal, Julien and Bojanowski, Piotr and Joulin, Armand},
  booktitle={International Conference on Computer Vision},
  year={2021}
}"""


register_family(DINO())

# facebook/dino-*: ViTImageProcessor, squash to 224x224, bilinear, ImageNet mean/std
DINO_PREP = Preprocessing(resize_size=224, interpolation="bilinear")
# published ImageNet results of the frozen backbones (DINO paper, Table 2)
VARIANTS = [
    ("dino-vits16", "vits16", 16, 384, 6, "vit_small_patch16_224.dino", 21_665_664, 77.0, 74.5),
    ("dino-vits8", "vits8", 8, 384, 6, "vit_small_patch8_224.dino", 21_670_272, 79.7, 78.3),
    ("dino-vitb16", "vitb16", 16, 768, 12, "vit_base_patch16_224.dino", 85_798_656, 78.2, 76.1),
    ("dino-vitb8", "vitb8", 8, 768, 12, "vit_base_patch8_224.dino", 85_807_872, 80.1, 77.4),
]

register(
    *(
        ModelSpec(
            name=name,
            family="dino",
            hub_id=f"facebook/dino-{hub}",
            timm_name=timm_name,
            architecture=Architecture(224, patch, hidden, 12, heads, 4 * hidden),
            preprocessing=DINO_PREP,
            pretraining="self-supervised",
            pretrained_on="ImageNet-1k (no labels)",
            method="DINO self-distillation",
            num_params=params,
            published={"imagenet_linear_top1": linear, "imagenet_knn_top1": knn},
        )
        for name, hub, patch, hidden, heads, timm_name, params, linear, knn in VARIANTS
    )
)
