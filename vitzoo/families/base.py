"""What every family shares, and the hooks where a family's quirks go.

A `Family` turns a `ModelSpec` into transformers configs and model classes, into timm
keyword arguments, and says how to pool one embedding per image from the encoder's output.
The plain-ViT behaviour lives here; each family file overrides only what differs.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from transformers import PretrainedConfig, PreTrainedModel

from vitzoo.errors import BadInputError
from vitzoo.specs import Architecture, ModelSpec

TASKS = ("classification", "features", "pretraining")


# learned tokens and position tables that papers (and timm) draw from N(0, 0.02) at random init
# (transformers leaves DINOv2-with-registers' register tokens at zero: four identical tokens would stay
# identical through training)
SCRATCH_TOKENS = ("cls_token", "mask_token", "distillation_token", "position_embeddings", "register_tokens")


class Family:
    """Default behaviour: a plain ViT with a CLS token, as transformers' `ViT*` classes."""

    name: ClassVar[str]
    # how prose (model cards, figures) writes the family's name; default: `name`
    label: ClassVar[str]
    paper_title: ClassVar[str]
    paper_url: ClassVar[str]
    citation: ClassVar[str]
    # transformers `model_type` values that identify this family's checkpoints: a folder saved
    # without vitzoo.json loads as the family that claims its model_type. One family per value
    # (`registry.register_family` checks): DeiT's plain checkpoints and DINO's are model_type
    # "vit", so only the ViT family claims "vit".
    model_types: ClassVar[tuple[str, ...]] = ()
    # `base_model_prefix` of this family's transformers classes: a model with a head keeps its
    # encoder under it ("vit.", "deit.", ...)
    base_model_prefixes: ClassVar[tuple[str, ...]] = ("vit",)
    # top-level module names of the classification heads, transformers' (`classifier*`) and timm's
    # (`head*`): what linear probing trains
    head_names: ClassVar[frozenset[str]] = frozenset({"classifier", "head"})
    # the Linear layers `--peft lora` adapts by default (`--lora-targets` overrides), by the last part of their
    # module name: the query and value projections of every attention block, as in the LoRA paper (Hu et al.,
    # 2022, section 7.1: W_q and W_v), which is how transformers 5 names them in every ViT family; timm fuses
    # them into one `qkv` Linear, so there the key projection is adapted too
    lora_targets: ClassVar[tuple[str, ...]] = ("q_proj", "v_proj")
    timm_lora_targets: ClassVar[tuple[str, ...]] = ("qkv",)
    # models outside the registry that only timm runs (no spec of their own, no transformers classes)
    timm_only: ClassVar[bool] = False
    # why transformers cannot run this registered family (it has no such model class): non-empty means
    # the timm backend only, and asking transformers for it is refused with this reason (DeiT III)
    no_transformers: ClassVar[str] = ""
    # what a user must do before this family's weights download (a gated repository, a license to
    # accept): added to the error when they are missing from the cache (`vitzoo.hub.weights_not_found`)
    weights_note: ClassVar[str] = ""
    # learned register tokens between the CLS token and the patches (Darcet et al., 2024); they carry
    # no image position, so pooling and attention maps skip them
    register_tokens: ClassVar[int] = 0
    # transformers class per task; None means the family has no such model
    classes: ClassVar[dict[str, str | None]] = {
        "classification": "ViTForImageClassification",
        "features": "ViTModel",
        "pretraining": "ViTForMaskedImageModeling",
    }
    config_class: ClassVar[str] = "ViTConfig"
    # keyword arguments a features model is built with (no pooler where the family pools itself)
    features_kwargs: ClassVar[dict[str, Any]] = {"add_pooling_layer": False}
    # a family whose models accept any input size (interpolating position embeddings on the fly)
    dynamic_image_size: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and "label" not in cls.__dict__:
            cls.label = cls.name

    # ----------------------------------------------------------------- transformers side
    def init_scratch(self, model: PreTrainedModel) -> None:
        """Fix-ups of a randomly initialised model (`--scratch`), after transformers' own init.

        transformers 5 leaves some learned tokens and position embeddings at zero when a model is
        built from a config (BEiT's and ViT's MIM mask token, BEiT's CLS token and absolute
        position embeddings, MAE's tokens, DeiT's CLS and distillation tokens); the papers draw them from N(0, 0.02) (timm's
        trunc_normal_(std=.02)), and with zeros every masked position looks the same at the
        start. Trainable ones that are all zero get that init here; checkpoints never come
        through this path."""
        std = getattr(model.config, "initializer_range", 0.02)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                last = name.rsplit(".", 1)[-1]
                if parameter.is_meta:  # shape-only builds (parameter counts): nothing to fill
                    continue
                if last in SCRATCH_TOKENS and parameter.requires_grad and not parameter.any():
                    parameter.normal_(0.0, std)

    def transformers_class(self, spec: ModelSpec, task: str) -> type[PreTrainedModel]:
        import transformers

        check_task(task)
        if self.no_transformers:
            raise BadInputError(
                f"{spec.name} ({self.label}) runs on the timm backend only: {self.no_transformers} "
                "Load it with backend='timm' (--backend timm on the command line)."
            )
        class_name = self.classes.get(task)
        if class_name is None:
            raise BadInputError(
                f"{spec.name} ({self.name}) has no {task!r} model; use task='features' or 'classification'."
            )
        return getattr(transformers, class_name)

    def config_kwargs(self, arch: Architecture) -> dict[str, Any]:
        """transformers config arguments that describe `arch`."""
        return {
            "image_size": arch.image_size,
            "patch_size": arch.patch_size,
            "hidden_size": arch.hidden_size,
            "num_hidden_layers": arch.depth,
            "num_attention_heads": arch.num_heads,
            "intermediate_size": arch.mlp_size,
            "qkv_bias": True,
        }

    def build_config(self, spec: ModelSpec, task: str, **extra: Any) -> PretrainedConfig:
        """A transformers config for `spec`, built from the registry alone (no download)."""
        import transformers

        config_class = getattr(transformers, self.config_class)
        return config_class(**{**self.config_kwargs(spec.architecture), **extra})

    def architecture_from_config(self, config: PretrainedConfig) -> Architecture:
        """Read an `Architecture` back from a transformers config (local folders, overrides)."""
        image_size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        patch_size = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
        return Architecture(
            image_size=image_size,
            patch_size=patch_size,
            hidden_size=config.hidden_size,
            depth=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            mlp_size=config.intermediate_size,
        )

    def config_for_task(self, config: PretrainedConfig, task: str) -> PretrainedConfig:
        """Adapt a checkpoint's config to the class that serves `task` (identity for most)."""
        return config

    def dropped_weights(self, task: str) -> str:
        """A regex of the checkpoint weights that loading for `task` leaves out on purpose; any other
        weight the built model does not use is an error naming it. Here: the pooler (a ViT's pre-logits
        layer, as in vit-base-in21k), which neither transformers' ViT classifier nor vitzoo's CLS-token
        features use; the classification heads when a task needs none; and a pretraining model's
        decoder and mask token (MAE, SimMIM) when only its encoder is wanted."""
        pooler = r"(^|\.)pooler\."
        heads = r"(^|\.)(classifier|cls_classifier|distillation_classifier)\."
        pretraining = r"(^|\.)decoder\.|(^|\.)embeddings\.mask_token$"
        if task == "pretraining":
            return f"{pooler}|{heads}"
        if task == "classification":
            return f"{pooler}|{pretraining}"
        return f"{pooler}|{pretraining}|{heads}"

    def needs_conversion(self, checkpoint_config: PretrainedConfig, task: str) -> bool:
        """Whether `task`'s class cannot `from_pretrained` this checkpoint by itself."""
        return False

    def convert_checkpoint_model(
        self, spec: ModelSpec, task: str, source: str, config: PretrainedConfig, revision: str | None
    ) -> PreTrainedModel:
        """Build the `task` model from a checkpoint of another class (see `needs_conversion`)."""
        raise NotImplementedError(f"{self.name} checkpoints load directly")

    def num_prefix_tokens(self, arch: Architecture) -> int:
        """Tokens before the patches in the encoder's output: CLS (and DeiT's distillation token), registers."""
        return (2 if arch.distillation_token else 1) + self.register_tokens

    def patch_attention(self, attention: torch.Tensor, num_prefix: int) -> torch.Tensor:
        """One weight per head and patch from the last layer's attention (B x heads x tokens x tokens):
        what the CLS token (token 0) attends to in each patch, the `num_prefix` tokens before the
        patches (CLS, distillation token, registers) left out."""
        return attention[:, :, 0, num_prefix:]

    def forward_kwargs(self, pixel_values: torch.Tensor, config: PretrainedConfig) -> dict[str, Any]:
        """Extra arguments every forward of a features model needs."""
        return {}

    def encode(self, encoder: PreTrainedModel, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        """Run a transformers encoder (the model's `base_model`) on a batch, with the family's quirks."""
        return encoder(pixel_values=pixel_values, **self.forward_kwargs(pixel_values, encoder.config), **kwargs)

    def pool(self, outputs: Any, arch: Architecture) -> torch.Tensor:
        """One vector per image from a transformers features model's output: the final CLS token."""
        return outputs.last_hidden_state[:, 0]

    def position_embedding_keys(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        return [k for k in state_dict if k.endswith("embeddings.position_embeddings")]

    def init_kwargs(self, model: PreTrainedModel) -> dict[str, Any]:
        """Constructor arguments to rebuild `model`'s class the way vitzoo built it."""
        return dict(self.features_kwargs) if model.base_model is model else {}

    def resize_state_dict(
        self, state_dict: dict[str, torch.Tensor], arch: Architecture, new_size: int
    ) -> dict[str, torch.Tensor]:
        """Weights for the same model at another input size (absolute position embeddings resampled)."""
        from timm.layers import resample_abs_pos_embed

        grid = new_size // arch.patch_size
        old_grid = arch.image_size // arch.patch_size
        out = dict(state_dict)
        for key in self.position_embedding_keys(state_dict):
            out[key] = resample_abs_pos_embed(
                state_dict[key],
                new_size=(grid, grid),
                old_size=(old_grid, old_grid),
                num_prefix_tokens=self.num_prefix_tokens(arch),
            )
        return out

    def scratch_pretraining_overrides(self, method: str) -> dict[str, Any]:
        """Config fields a randomly initialised model of this family needs before the masked-image
        `method` ("mae", "beit", "simmim") pretrains it; the user's own overrides win."""
        return {}

    def resize_model(self, model: PreTrainedModel, arch: Architecture, new_size: int) -> PreTrainedModel:
        """The same model (same weights) for a new input size, position embeddings interpolated."""
        config = copy.deepcopy(model.config)
        config.image_size = new_size
        resized = type(model)(config, **self.init_kwargs(model))
        state = self.resize_state_dict(model.state_dict(), arch, new_size)
        resized.load_state_dict(state)
        return resized

    # --------------------------------------------------------------------- timm side
    def timm_kwargs(self, arch: Architecture) -> dict[str, Any]:
        """timm `create_model` arguments that pin the architecture to the spec's."""
        return {
            "img_size": arch.image_size,
            "patch_size": arch.patch_size,
            "embed_dim": arch.hidden_size,
            "depth": arch.depth,
            "num_heads": arch.num_heads,
            "mlp_ratio": arch.mlp_size / arch.hidden_size,
        }

    # ------------------------------------------------------ timm <-> transformers conversion
    def config_from_timm_state(
        self, config: PretrainedConfig, state: dict[str, torch.Tensor], arch: Architecture
    ) -> None:
        """Set the transformers config fields that a timm model's state dict decides (`to_transformers`):
        here, whether attention has a qkv bias."""
        config.qkv_bias = any(key.endswith("attn.qkv.bias") for key in state)

    def describe_model_type(self, model_type: str) -> str:
        """How a message names this family's checkpoints of a transformers `model_type` it claims."""
        return self.name

    def check_timm_convertible(self, config: PretrainedConfig) -> None:
        """Refuse (BadInputError) a transformers config whose model has no timm counterpart (`to_timm`)."""

    def timm_kwargs_from_transformers(
        self, config: PretrainedConfig, state: dict[str, torch.Tensor], prefix: str
    ) -> dict[str, Any]:
        """timm `create_model` arguments, besides `timm_kwargs`, that a transformers model's config and
        state dict decide (`to_timm`; `prefix` is its base-model prefix, "" without a head)."""
        return {"qkv_bias": bool(getattr(config, "qkv_bias", True))}

    def timm_arch_for(self, spec: ModelSpec) -> str:
        if spec.timm_name is None:
            raise BadInputError(f"{spec.name} has no timm equivalent; use backend='transformers'.")
        return spec.timm_name


def check_task(task: str) -> None:
    if task not in TASKS:
        raise BadInputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}.")
