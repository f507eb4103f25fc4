"""Any other timm model (a CNN teacher, a ViT variant not in the registry), by its timm name.

Such models run on the timm backend only, with timm's own pooling and preprocessing; they have
no registry spec, so no transformers classes.
"""

from __future__ import annotations

from vitzoo.families.base import Family
from vitzoo.registry import register_family


class TimmModels(Family):
    name = "timm"
    paper_title = "PyTorch Image Models"
    paper_url = "https://github.com/huggingface/pytorch-image-models"
    citation = """@misc{rw2019timm,
  author={Ross Wightman},
  title={PyTorch Image Models},
  year={2019},
  publisher={GitHub},
  howpublished={\\url{https://github.com/rwightman/pytorch-image-models}}
}"""
    classes = {"classification": None, "features": None, "pretraining": None}
    base_model_prefixes = ()
    timm_only = True


register_family(TimmModels())
