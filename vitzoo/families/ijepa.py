"""I-JEPA (Assran et al., 2023): self-supervised ViTs that predict the representations of masked
target blocks from a context block, without pixel reconstruction or hand-made augmentations.

Quirks: no CLS token. The encoder's tokens are the patches only (one position table entry each),
so the embedding is the mean of the final patch tokens (after the last LayerNorm; timm's
`vit_*_gap_*` with global_pool="avg", fc_norm=False, as in the paper's linear probes and
transformers' `IJepaForImageClassification`), and the attention map is what the patches attend to
on average (the last layer's attention averaged over all query patches) rather than a CLS row.
The published processor normalises with mean = std = 0.5 (ViTImageProcessor's defaults) while
timm's cfg keeps ImageNet's mean/std and a 0.9 centre crop; vitzoo follows the published file.
timm fetches these weights from Meta's URL (torch's hub cache), not from a Hub repository.
"""

from __future__ import annotations

from typing import Any

import torch

from vitzoo.families.base import Family
from vitzoo.registry import HALF_MEAN, HALF_STD, Architecture, ModelSpec, Preprocessing, register, register_family


class IJepa(Family):
    name = "ijepa"
    label = "I-JEPA"
    paper_title = "Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture"
    paper_url = "https://arxiv.org/abs/2301.08243"
    citation = """@inproceedings{assran2023ijepa,
  title={Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture},
  author={Assran, Mahmoud and Duval, Quentin and Misra, Ishan and Bojanowski, Piotr and Vincent, Pascal and Rabbat, Michael and LeCun, Yann and Ballas, Nicolas},
  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  year={2023}
}"""
    model_types = ("ijepa",)
    base_model_prefixes = ("ijepa",)
    classes = {
        "classification": "IJepaForImageClassification",
        "features": "IJepaModel",
        "pretraining": None,
    }
    config_class = "IJepaConfig"

    def config_kwargs(self, arch: Architecture) -> dict[str, Any]:
        return {**super().config_kwargs(arch), "layer_norm_eps": 1e-6}  # the released models' (and timm's)

    def num_prefix_tokens(self, arch: Architecture) -> int:
        return 0  # patches only

    def pool(self, outputs: Any, arch: Architecture) -> torch.Tensor:
        return outputs.last_hidden_state.mean(dim=1)

    def patch_attention(self, attention: torch.Tensor, num_prefix: int) -> torch.Tensor:
        # each query's row is a softmax (sums to 1); in bf16 only up to rounding, so it is renormalised in
        # fp32 first and the average map is a distribution over the patches, as a CLS row is
        rows = attention[:, :, num_prefix:, num_prefix:].float()
        return (rows / rows.sum(dim=-1, keepdim=True)).mean(dim=2)

    def timm_kwargs(self, arch: Architecture) -> dict[str, Any]:
        return {**super().timm_kwargs(arch), "class_token": False, "global_pool": "avg", "fc_norm": False}


register_family(IJepa())

# facebook/ijepa_vith14_1k: ViTImageProcessor(size 224x224) with its defaults: squash, bilinear, mean = std = 0.5
IJEPA_PREP = Preprocessing(resize_size=224, interpolation="bilinear", mean=HALF_MEAN, std=HALF_STD)

register(
    ModelSpec(
        name="ijepa-vith14",
        family="ijepa",
        hub_id="facebook/ijepa_vith14_1k",
        timm_name="vit_huge_patch14_gap_224.in1k_ijepa",
        architecture=Architecture(image_size=224, patch_size=14, hidden_size=1280, depth=32, num_heads=16, mlp_size=5120),
        preprocessing=IJEPA_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-1k (no labels), 300 epochs",
        license="cc-by-nc-4.0",
        method="I-JEPA: predict target-block representations from a context block (EMA target encoder)",
        num_params=630_762_240,
        published={"imagenet_linear_top1": 79.3},
        notes=(
            "License: CC BY-NC 4.0 (non-commercial). Embedding: mean of the patch tokens (no CLS token). The "
            "published processor normalises with mean = std = 0.5; timm's pipeline uses ImageNet mean/std and a "
            "0.9 centre crop. timm downloads these weights from dl.fbaipublicfiles.com into torch's hub cache."
        ),
    ),
)
