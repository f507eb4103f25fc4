"""MAE (He et al., 2022): masked autoencoders; the encoder sees only the visible 25% of patches.

Quirks: the checkpoints are `ViTMAEForPreTraining` (encoder + decoder). As a features model the
encoder runs with no masking and with its patches in their original order (transformers
shuffles them even at mask ratio 0 unless given an increasing `noise`). For classification the
encoder's weights move into a `ViTForImageClassification`, which has the same layout, so the
fine-tuned model is a plain ViT any transformers user can load.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel, ViTConfig, ViTForImageClassification, ViTMAEModel

from vitzoo.errors import BadInputError
from vitzoo.families.base import Family
from vitzoo.registry import Architecture, ModelSpec, Preprocessing, register, register_family


class MAE(Family):
    name = "mae"
    label = "MAE"
    paper_title = "Masked Autoencoders Are Scalable Vision Learners"
    paper_url = "https://arxiv.org/abs/2111.06377"
    citation = """@inproceedings{he2022mae,
  title={Masked Autoencoders Are Scalable Vision Learners},
  author={He, Kaiming and Chen, Xinlei and Xie, Saining and Li, Yanghao and Doll{\\'a}r, Piotr and Girshick, Ross},
  booktitle={Conference on Computer Vision and Pattern Recognition},
  year={2022}
}"""
    model_types = ("vit_mae",)
    classes = {
        "classification": "ViTForImageClassification",
        "features": "ViTMAEModel",
        "pretraining": "ViTMAEForPreTraining",
    }
    config_class = "ViTMAEConfig"
    features_kwargs = {}

    def build_config(self, spec: ModelSpec, task: str, **extra: Any) -> PretrainedConfig:
        config = super().build_config(spec, task, **extra)
        if task == "features":
            config.mask_ratio = 0.0
        return self.config_for_task(config, task)

    def config_for_task(self, config: PretrainedConfig, task: str) -> PretrainedConfig:
        if task == "classification" and config.model_type == "vit_mae":
            keys = (
                "image_size",
                "patch_size",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "hidden_act",
                "layer_norm_eps",
                "qkv_bias",
                "num_channels",
            )
            extra = {k: getattr(config, k) for k in ("num_labels", "id2label", "label2id") if hasattr(config, k)}
            return ViTConfig(**{k: getattr(config, k) for k in keys}, **extra)
        if task == "features":
            config.mask_ratio = 0.0
        return config

    def init_scratch(self, model: PreTrainedModel) -> None:
        """MAE's fixed 2D sin-cos position embeddings, encoder and decoder, which transformers 5
        leaves at zero (and frozen) when it builds `ViTMAE*` from a config: without them neither
        the encoder nor the decoder knows where a patch is, and reconstructions collapse to the
        mean. Same layout as transformers' `initialize_weights` (its h/w halves swapped, as the
        published checkpoints have them)."""
        from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

        def sincos(parameter: torch.Tensor) -> None:
            grid = int(round((parameter.shape[1] - 1) ** 0.5))
            table = build_2d_sinusoidal_position_embedding(grid, grid, embed_dim=parameter.shape[-1], cls_token=True)
            half = table.shape[-1] // 2
            table = torch.cat([table[..., half:], table[..., :half]], dim=-1)
            parameter.copy_(table.reshape(parameter.shape).to(parameter.dtype))

        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.is_meta:
                    continue
                if name.endswith(("embeddings.position_embeddings", "decoder_pos_embed")) and not parameter.any():
                    sincos(parameter)
        super().init_scratch(model)  # then the CLS and mask tokens

    def needs_conversion(self, checkpoint_config: PretrainedConfig, task: str) -> bool:
        return task == "classification" and checkpoint_config.model_type == "vit_mae"

    def convert_checkpoint_model(
        self, spec: ModelSpec, task: str, source: str, config: PretrainedConfig, revision: str | None
    ) -> PreTrainedModel:
        encoder = ViTMAEModel.from_pretrained(source, revision=revision, mask_ratio=0.0)
        model = ViTForImageClassification(config)
        state = {f"vit.{key}": value for key, value in encoder.state_dict().items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        left = [key for key in missing if not key.startswith("classifier.")]
        if left or unexpected:
            raise BadInputError(
                f"the MAE encoder at {source} does not fit a ViT: missing {left}, unexpected {unexpected}"
            )
        return model

    def encode(self, encoder: PreTrainedModel, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        config = encoder.config
        if config.model_type != "vit_mae" or config.mask_ratio == 0:
            return super().encode(encoder, pixel_values, **kwargs)
        ratio, config.mask_ratio = config.mask_ratio, 0.0  # a pretraining model, used as an encoder
        try:
            return super().encode(encoder, pixel_values, **kwargs)
        finally:
            config.mask_ratio = ratio

    def forward_kwargs(self, pixel_values: torch.Tensor, config: PretrainedConfig) -> dict[str, Any]:
        if config.model_type != "vit_mae":
            return {}
        batch = pixel_values.shape[0]
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
        num_patches = (size // patch) ** 2
        noise = torch.arange(num_patches, device=pixel_values.device, dtype=torch.float32)
        return {"noise": noise.expand(batch, -1)}


register_family(MAE())

# facebook/vit-mae-*: ViTImageProcessor, squash to 224x224, bilinear, ImageNet mean/std
MAE_PREP = Preprocessing(resize_size=224, interpolation="bilinear")
# published: ImageNet top-1 after end-to-end fine-tuning (MAE paper, Table 3)
register(
    ModelSpec(
        name="mae-base",
        family="mae",
        hub_id="facebook/vit-mae-base",
        timm_name="vit_base_patch16_224.mae",
        architecture=Architecture(
            image_size=224, patch_size=16, hidden_size=768, depth=12, num_heads=12, mlp_size=3072
        ),
        preprocessing=MAE_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-1k (no labels)",
        method="masked autoencoding, 75% of patches masked",
        license="cc-by-nc-4.0",
        num_params=85_798_656,
        published={"imagenet_finetuned_top1": 83.6},
        notes="num_params counts the encoder; the Hub checkpoint also holds the pretraining decoder.",
        checkpoint_task="pretraining",
    ),
    ModelSpec(
        name="mae-large",
        family="mae",
        hub_id="facebook/vit-mae-large",
        timm_name="vit_large_patch16_224.mae",
        architecture=Architecture(
            image_size=224, patch_size=16, hidden_size=1024, depth=24, num_heads=16, mlp_size=4096
        ),
        preprocessing=MAE_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-1k (no labels)",
        method="masked autoencoding, 75% of patches masked",
        license="cc-by-nc-4.0",
        num_params=303_301_632,
        published={"imagenet_finetuned_top1": 85.9},
        notes="num_params counts the encoder; the Hub checkpoint also holds the pretraining decoder.",
        checkpoint_task="pretraining",
    ),
    ModelSpec(
        name="mae-huge",
        family="mae",
        hub_id="facebook/vit-mae-huge",
        timm_name="vit_huge_patch14_224.mae",
        architecture=Architecture(
            image_size=224, patch_size=14, hidden_size=1280, depth=32, num_heads=16, mlp_size=5120
        ),
        preprocessing=MAE_PREP,
        pretraining="self-supervised",
        pretrained_on="ImageNet-1k (no labels)",
        method="masked autoencoding, 75% of patches masked",
        license="cc-by-nc-4.0",
        num_params=630_764_800,
        published={"imagenet_finetuned_top1": 86.9},
        notes="num_params counts the encoder; the Hub checkpoint also holds the pretraining decoder.",
        checkpoint_task="pretraining",
    ),
)
