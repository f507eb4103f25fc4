"""One key map per family: timm state-dict names <-> transformers (v5) state-dict names.

A key map is a small declarative table. Each `Rename` pairs a timm key with a transformers key;
`{i}` stands for a block index. transformers keys are relative to the base model (`vit.`,
`deit.`, `beit.`, `dinov2.` when the model has a head on top, nothing otherwise) unless they start
with `^`, which marks a key of the head class itself (the classifiers). A `Fused` entry is timm's
fused `qkv` projection, which transformers keeps as separate q/k/v projections. Keys listed in
`transformers_only` exist only in transformers and carry nothing a forward pass uses (mask
tokens): they are filled with zeros going to transformers and dropped going to timm. Two optional
whole-state hooks cover what one tensor at a time cannot: `to_timm_state` rewrites the transformers
state before renaming (DINOv2 with registers folds its CLS position into the CLS token; DINOv3 drops
q/v biases that are all zero, which timm's DINOv3 leaves out), `to_hf_state` completes the renamed
one (DINOv3's zero q/v biases back).

`convert_state_dict` applies a map in either direction with strict checks: a key no rule
covers, a fused group with a member missing, a key the target model does not have, a key it
expects that nothing maps to, or a shape mismatch raises `BadInputError` naming the key. Nothing
is ever silently left out or partially loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from vitzoo.errors import BadInputError

Tensor = torch.Tensor


@dataclass(frozen=True)
class Rename:
    """One tensor under another name (optionally reshaped by `to_hf` / `to_timm`)."""

    timm: str
    hf: str
    to_hf: Callable[[Tensor], Tensor] | None = None
    to_timm: Callable[[Tensor, str], Tensor] | None = None  # gets the key too, for its messages


@dataclass(frozen=True)
class Fused:
    """timm's fused qkv tensor (q, k and v stacked on dim 0) <-> three transformers tensors."""

    timm: str
    hf: tuple[str, str, str]


@dataclass(frozen=True)
class KeyMap:
    family: str
    title: str  # how messages name the layout, e.g. "DeiT (distilled)"
    timm_classes: tuple[str, ...]  # timm model classes this layout comes from
    model_types: tuple[str, ...]  # transformers config.model_type values this layout comes from
    global_pool: str  # timm's pooling for this family ("token" or "avg")
    rules: tuple[Rename | Fused, ...]
    transformers_only: tuple[str, ...] = ()
    default_timm_arch: str = "vit_base_patch16_224"
    # the token layout a timm model must have: a CLS token, register tokens, a position table without
    # the prefix tokens (timm's `no_embed_class`), and the class of its rotary embedding (None: no RoPE)
    class_token: bool = True
    registers: int = 0
    no_embed_class: bool = False
    timm_rope: str | None = None
    # whole-state hooks (see the module docstring): (state, transformers prefix) -> state
    to_timm_state: Callable[[dict[str, Tensor], str], dict[str, Tensor]] | None = None
    to_hf_state: Callable[[dict[str, Tensor], str], dict[str, Tensor]] | None = None
    _compiled: dict = field(default_factory=dict, compare=False, repr=False)


# ----------------------------------------------------------------------------- the tables
PATCH_EMBED = (
    Rename("cls_token", "embeddings.cls_token"),
    Rename("patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight"),
    Rename("patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias"),
)
POS_EMBED = (Rename("pos_embed", "embeddings.position_embeddings"),)


def vit_block(prefix: str = "layers.{i}.") -> tuple[Rename | Fused, ...]:
    """A pre-norm transformer block as ViT/DeiT/MAE/DINO (and, renamed, BEiT) store it."""
    return (
        Rename("blocks.{i}.norm1.weight", prefix + "layernorm_before.weight"),
        Rename("blocks.{i}.norm1.bias", prefix + "layernorm_before.bias"),
        Fused("blocks.{i}.attn.qkv.weight", tuple(prefix + f"attention.{p}_proj.weight" for p in "qkv")),
        Rename("blocks.{i}.attn.proj.weight", prefix + "attention.o_proj.weight"),
        Rename("blocks.{i}.attn.proj.bias", prefix + "attention.o_proj.bias"),
        Rename("blocks.{i}.norm2.weight", prefix + "layernorm_after.weight"),
        Rename("blocks.{i}.norm2.bias", prefix + "layernorm_after.bias"),
        Rename("blocks.{i}.mlp.fc1.weight", prefix + "mlp.fc1.weight"),
        Rename("blocks.{i}.mlp.fc1.bias", prefix + "mlp.fc1.bias"),
        Rename("blocks.{i}.mlp.fc2.weight", prefix + "mlp.fc2.weight"),
        Rename("blocks.{i}.mlp.fc2.bias", prefix + "mlp.fc2.bias"),
    )


QKV_BIAS = (Fused("blocks.{i}.attn.qkv.bias", tuple(f"layers.{{i}}.attention.{p}_proj.bias" for p in "qkv")),)
FINAL_NORM = (Rename("norm.weight", "layernorm.weight"), Rename("norm.bias", "layernorm.bias"))
HEAD = (Rename("head.weight", "^classifier.weight"), Rename("head.bias", "^classifier.bias"))

VIT_RULES = PATCH_EMBED + POS_EMBED + vit_block() + QKV_BIAS + FINAL_NORM + HEAD

VIT = KeyMap("vit", "ViT", ("VisionTransformer",), ("vit",), "token", VIT_RULES)
DINO = KeyMap("dino", "DINO (ViT)", ("VisionTransformer",), ("vit",), "token", VIT_RULES)
DEIT = KeyMap(
    "deit", "DeiT", ("VisionTransformer",), ("vit",), "token", VIT_RULES, default_timm_arch="deit_base_patch16_224"
)
DEIT_DISTILLED = KeyMap(
    "deit",
    "DeiT (distilled)",
    ("VisionTransformerDistilled",),
    ("deit",),
    "token",
    PATCH_EMBED
    + POS_EMBED
    + (Rename("dist_token", "embeddings.distillation_token"),)
    + vit_block()
    + QKV_BIAS
    + FINAL_NORM
    + (
        Rename("head.weight", "^cls_classifier.weight"),
        Rename("head.bias", "^cls_classifier.bias"),
        Rename("head_dist.weight", "^distillation_classifier.weight"),
        Rename("head_dist.bias", "^distillation_classifier.bias"),
    ),
    default_timm_arch="deit_base_distilled_patch16_224",
)
# MAE's encoder: ViTMAEModel (or the ViT it is fine-tuned as); its decoder has no timm counterpart
MAE = KeyMap("mae", "MAE encoder", ("VisionTransformer",), ("vit_mae", "vit"), "token", VIT_RULES)

BEIT = KeyMap(
    "beit",
    "BEiT",
    ("Beit",),
    ("beit",),
    "avg",
    PATCH_EMBED
    + POS_EMBED  # only with use_abs_pos_emb / use_absolute_position_embeddings
    + (Rename("rel_pos_bias.relative_position_bias_table", "shared_position_bias.relative_position_bias_table"),)
    + vit_block()
    + (
        # BEiT: q and v biases, no k bias (timm keeps a zero k_bias buffer, not in the state dict)
        Rename("blocks.{i}.attn.q_bias", "layers.{i}.attention.q_proj.bias"),
        Rename("blocks.{i}.attn.v_bias", "layers.{i}.attention.v_proj.bias"),
        Rename(
            "blocks.{i}.attn.relative_position_bias_table",
            "layers.{i}.relative_position_bias.relative_position_bias_table",
        ),
        Rename("blocks.{i}.gamma_1", "layers.{i}.lambda_1"),
        Rename("blocks.{i}.gamma_2", "layers.{i}.lambda_2"),
        # mean pooling: timm's fc_norm is the LayerNorm of transformers' pooler
        Rename("fc_norm.weight", "pooler.layernorm.weight"),
        Rename("fc_norm.bias", "pooler.layernorm.bias"),
    )
    + HEAD,
    transformers_only=("embeddings.mask_token",),
    default_timm_arch="beit_base_patch16_224",
)


def _pad_dinov2_head(weight: Tensor) -> Tensor:
    """timm's DINOv2 head reads the CLS token; transformers' reads [CLS, mean of patches]."""
    return torch.cat([weight, torch.zeros_like(weight)], dim=1)


def _unpad_dinov2_head(weight: Tensor, key: str) -> Tensor:
    half = weight.shape[1] // 2
    if weight.shape[1] % 2 or torch.count_nonzero(weight[:, half:]):
        raise BadInputError(
            f"{key}: this DINOv2 classifier also reads the mean of the patch tokens (its second half is "
            "not zero), which timm's DINOv2 head (CLS token only) cannot express; convert the model "
            "without its head (task='features')."
        )
    return weight[:, :half]


DINOV2_BLOCK = (
    Rename("blocks.{i}.norm1.weight", "encoder.layer.{i}.norm1.weight"),
    Rename("blocks.{i}.norm1.bias", "encoder.layer.{i}.norm1.bias"),
    Fused("blocks.{i}.attn.qkv.weight", tuple(f"encoder.layer.{{i}}.attention.{p}_proj.weight" for p in "qkv")),
    Fused("blocks.{i}.attn.qkv.bias", tuple(f"encoder.layer.{{i}}.attention.{p}_proj.bias" for p in "qkv")),
    Rename("blocks.{i}.attn.proj.weight", "encoder.layer.{i}.attention.o_proj.weight"),
    Rename("blocks.{i}.attn.proj.bias", "encoder.layer.{i}.attention.o_proj.bias"),
    Rename("blocks.{i}.ls1.gamma", "encoder.layer.{i}.layer_scale1.lambda1"),
    Rename("blocks.{i}.norm2.weight", "encoder.layer.{i}.norm2.weight"),
    Rename("blocks.{i}.norm2.bias", "encoder.layer.{i}.norm2.bias"),
    Rename("blocks.{i}.mlp.fc1.weight", "encoder.layer.{i}.mlp.fc1.weight"),
    Rename("blocks.{i}.mlp.fc1.bias", "encoder.layer.{i}.mlp.fc1.bias"),
    Rename("blocks.{i}.mlp.fc2.weight", "encoder.layer.{i}.mlp.fc2.weight"),
    Rename("blocks.{i}.mlp.fc2.bias", "encoder.layer.{i}.mlp.fc2.bias"),
    Rename("blocks.{i}.ls2.gamma", "encoder.layer.{i}.layer_scale2.lambda1"),
)
DINOV2_HEAD = (
    Rename("head.weight", "^classifier.weight", to_hf=_pad_dinov2_head, to_timm=_unpad_dinov2_head),
    Rename("head.bias", "^classifier.bias"),
)
DINOV2 = KeyMap(
    "dinov2",
    "DINOv2",
    ("VisionTransformer",),
    ("dinov2",),
    "token",
    PATCH_EMBED + POS_EMBED + DINOV2_BLOCK + FINAL_NORM + DINOV2_HEAD,
    transformers_only=("embeddings.mask_token",),
    default_timm_arch="vit_base_patch14_dinov2",
)

# DINOv2 with registers: DINOv2's blocks; timm (no_embed_class) keeps no position row for the CLS token
def _fold_cls_position(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """transformers -> timm: the CLS token's position row moves into the CLS token (timm adds none to it)."""
    out = dict(state)
    cls, pos = prefix + "embeddings.cls_token", prefix + "embeddings.position_embeddings"
    if cls in out and pos in out:
        out[cls] = out[cls] + out[pos][:, :1]
        out[pos] = torch.cat([torch.zeros_like(out[pos][:, :1]), out[pos][:, 1:]], dim=1)
    return out


def _add_cls_position_row(pos: Tensor) -> Tensor:
    return torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)


def _drop_cls_position_row(pos: Tensor, key: str) -> Tensor:
    if torch.count_nonzero(pos[:, :1]):
        raise BadInputError(f"{key}: the CLS token's position row is not zero; fold it into the CLS token first")
    return pos[:, 1:]


DINOV2_REG = KeyMap(
    "dinov2_reg",
    "DINOv2 with registers",
    ("VisionTransformer",),
    ("dinov2_with_registers",),
    "token",
    PATCH_EMBED
    + (
        Rename("reg_token", "embeddings.register_tokens"),
        Rename("pos_embed", "embeddings.position_embeddings", to_hf=_add_cls_position_row, to_timm=_drop_cls_position_row),
    )
    + DINOV2_BLOCK
    + FINAL_NORM
    + DINOV2_HEAD,
    transformers_only=("embeddings.mask_token",),
    default_timm_arch="vit_base_patch14_reg4_dinov2",
    registers=4,
    no_embed_class=True,
    to_timm_state=_fold_cls_position,
)

# DINOv3: RoPE (no position table), 4 registers, layer scale; q/v biases but no k bias
DINOV3_QV_BIASES = ("attention.q_proj.bias", "attention.v_proj.bias")


def _drop_zero_qv_biases(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """transformers -> timm: q/v biases that are all zero (the released weights') are left out, as
    timm's `vit_*_dinov3` has none; any non-zero one keeps them all (timm's qkv_bias=True)."""
    biases = [k for k in state if k.endswith(DINOV3_QV_BIASES)]
    if any(torch.count_nonzero(state[k]) for k in biases):
        return dict(state)
    return {k: v for k, v in state.items() if k not in biases}


def _zero_qv_biases(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """timm -> transformers: zero q/v biases where the timm model has none (the released layout)."""
    out = dict(state)
    for key, value in state.items():
        if key.endswith("attention.q_proj.weight"):
            for name in DINOV3_QV_BIASES:
                out.setdefault(key[: -len("attention.q_proj.weight")] + name, value.new_zeros(value.shape[0]))
    return out


DINOV3 = KeyMap(
    "dinov3",
    "DINOv3",
    ("Eva",),
    ("dinov3_vit",),
    "token",
    (
        Rename("cls_token", "embeddings.cls_token"),
        Rename("reg_token", "embeddings.register_tokens"),
        Rename("patch_embed.proj.weight", "embeddings.patch_embeddings.weight"),
        Rename("patch_embed.proj.bias", "embeddings.patch_embeddings.bias"),
        Rename("blocks.{i}.norm1.weight", "model.layer.{i}.norm1.weight"),
        Rename("blocks.{i}.norm1.bias", "model.layer.{i}.norm1.bias"),
        Fused("blocks.{i}.attn.qkv.weight", tuple(f"model.layer.{{i}}.attention.{p}_proj.weight" for p in "qkv")),
        Rename("blocks.{i}.attn.q_bias", "model.layer.{i}.attention.q_proj.bias"),
        Rename("blocks.{i}.attn.v_bias", "model.layer.{i}.attention.v_proj.bias"),
        Rename("blocks.{i}.attn.proj.weight", "model.layer.{i}.attention.o_proj.weight"),
        Rename("blocks.{i}.attn.proj.bias", "model.layer.{i}.attention.o_proj.bias"),
        Rename("blocks.{i}.gamma_1", "model.layer.{i}.layer_scale1.lambda1"),
        Rename("blocks.{i}.norm2.weight", "model.layer.{i}.norm2.weight"),
        Rename("blocks.{i}.norm2.bias", "model.layer.{i}.norm2.bias"),
        Rename("blocks.{i}.mlp.fc1.weight", "model.layer.{i}.mlp.up_proj.weight"),
        Rename("blocks.{i}.mlp.fc1.bias", "model.layer.{i}.mlp.up_proj.bias"),
        Rename("blocks.{i}.mlp.fc2.weight", "model.layer.{i}.mlp.down_proj.weight"),
        Rename("blocks.{i}.mlp.fc2.bias", "model.layer.{i}.mlp.down_proj.bias"),
        Rename("blocks.{i}.gamma_2", "model.layer.{i}.layer_scale2.lambda1"),
        Rename("norm.weight", "norm.weight"),
        Rename("norm.bias", "norm.bias"),
    ),
    transformers_only=("embeddings.mask_token",),
    default_timm_arch="vit_base_patch16_dinov3",
    registers=4,
    timm_rope="RotaryEmbeddingDinoV3",
    to_timm_state=_drop_zero_qv_biases,
    to_hf_state=_zero_qv_biases,
)

# I-JEPA: a ViT without CLS token (patches only in the position table), mean-pooled
IJEPA = KeyMap(
    "ijepa",
    "I-JEPA",
    ("VisionTransformer",),
    ("ijepa",),
    "avg",
    PATCH_EMBED[1:] + POS_EMBED + vit_block() + QKV_BIAS + FINAL_NORM + HEAD,
    default_timm_arch="vit_huge_patch14_gap_224",
    class_token=False,
)

KEYMAPS: dict[str, KeyMap] = {
    "vit": VIT, "deit": DEIT, "beit": BEIT, "dino": DINO, "mae": MAE, "dinov2": DINOV2,
    "dinov2_reg": DINOV2_REG, "dinov3": DINOV3, "ijepa": IJEPA,
}
CONVERTIBLE_FAMILIES = tuple(KEYMAPS)


def keymap_for(family: str, distilled: bool = False) -> KeyMap:
    """The key map of `family` (DeiT: the distilled layout when `distilled`)."""
    if family == "deit" and distilled:
        return DEIT_DISTILLED
    try:
        return KEYMAPS[family]
    except KeyError:
        raise BadInputError(
            f"family {family!r} has no timm <-> transformers converter; convertible families: "
            f"{', '.join(CONVERTIBLE_FAMILIES)}"
        ) from None


# ----------------------------------------------------------------------------- the engine
def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


def _hf_full(template: str, prefix: str) -> str:
    return template[1:] if template.startswith("^") else prefix + template


def _patterns(keymap: KeyMap, prefix: str) -> list[tuple[re.Pattern[str], re.Pattern[str], Rename | Fused, int]]:
    """(timm pattern, transformers pattern, rule, member index) for every key a rule names."""
    cached = keymap._compiled.get(prefix)
    if cached is None:
        cached = []
        for rule in keymap.rules:
            if isinstance(rule, Rename):
                cached.append((_pattern(rule.timm), _pattern(_hf_full(rule.hf, prefix)), rule, 0))
            else:
                for index, hf in enumerate(rule.hf):
                    cached.append((_pattern(rule.timm), _pattern(_hf_full(hf, prefix)), rule, index))
        keymap._compiled[prefix] = cached
    return cached


def _fill(template: str, match: re.Match[str]) -> str:
    index = match.groupdict().get("i")
    return template.replace("{i}", index) if index is not None else template


def timm_to_transformers(state_dict: Mapping[str, Tensor], keymap: KeyMap, prefix: str = "") -> dict[str, Tensor]:
    """Rename (and split) a timm state dict into transformers names; unknown keys raise."""
    out: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    patterns = _patterns(keymap, prefix)
    for key, value in state_dict.items():
        for timm_pattern, _hf_pattern, rule, member in patterns:
            match = timm_pattern.match(key)
            if match is None or member:
                continue
            if isinstance(rule, Fused):
                if value.shape[0] % 3:
                    raise BadInputError(
                        f"timm key {key!r}: a fused qkv tensor needs a first dim divisible by 3, got {tuple(value.shape)}"
                    )
                for hf, part in zip(rule.hf, value.chunk(3, dim=0)):
                    name = _fill(_hf_full(hf, prefix), match)
                    out[name], sources[name] = part, key
            else:
                name = _fill(_hf_full(rule.hf, prefix), match)
                out[name] = rule.to_hf(value) if rule.to_hf else value
                sources[name] = key
            break
        else:
            raise BadInputError(
                f"timm key {key!r} has no counterpart in the {keymap.title} key map: "
                f"is this a {keymap.title} model, with an architecture transformers supports?"
            )
    return keymap.to_hf_state(out, prefix) if keymap.to_hf_state else out


def transformers_to_timm(state_dict: Mapping[str, Tensor], keymap: KeyMap, prefix: str = "") -> dict[str, Tensor]:
    """Rename (and fuse) a transformers state dict into timm names; unknown keys raise."""
    out: dict[str, Tensor] = {}
    groups: dict[str, tuple[Fused, re.Match[str], dict[int, Tensor]]] = {}
    patterns = _patterns(keymap, prefix)
    dropped = [_pattern(prefix + key) for key in keymap.transformers_only]
    if keymap.to_timm_state:
        state_dict = keymap.to_timm_state(dict(state_dict), prefix)
    for key, value in state_dict.items():
        if any(pattern.match(key) for pattern in dropped):
            continue  # no timm counterpart and unused by a forward pass (see the module docstring)
        for _timm_pattern, hf_pattern, rule, member in patterns:
            match = hf_pattern.match(key)
            if match is None:
                continue
            name = _fill(rule.timm, match)
            if isinstance(rule, Fused):
                groups.setdefault(name, (rule, match, {}))[2][member] = value
            else:
                out[name] = rule.to_timm(value, key) if rule.to_timm else value
            break
        else:
            raise BadInputError(
                f"transformers key {key!r} has no counterpart in the {keymap.title} key map: "
                f"is this a {keymap.title} model, with an architecture timm supports?"
            )
    for name, (rule, match, parts) in groups.items():
        for member, hf in enumerate(rule.hf):
            if member not in parts:
                raise BadInputError(
                    f"transformers key {_fill(_hf_full(hf, prefix), match)!r} is missing: timm's {name!r} "
                    "fuses q, k and v and needs all three"
                )
        out[name] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


def check_against(
    converted: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    *,
    target: str,
    fill_zeros: tuple[str, ...] = (),
) -> dict[str, Tensor]:
    """`converted`, checked key by key and shape by shape against the target model's state dict.

    `fill_zeros`: patterns of target keys nothing maps to that may start as zeros (mask tokens).
    """
    fill = [_pattern(key) for key in fill_zeros]
    out = dict(converted)
    missing = [key for key in expected if key not in converted]
    for key in missing:
        if any(pattern.match(key) for pattern in fill):
            out[key] = torch.zeros_like(expected[key])
        else:
            raise BadInputError(f"missing key {key!r}: {target} expects it, but nothing in the source maps to it")
    for key, value in converted.items():
        if key not in expected:
            raise BadInputError(f"extra key {key!r}: the source has it, but {target} has no such weight")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise BadInputError(
                f"shape mismatch at {key!r}: the source gives {tuple(value.shape)}, "
                f"{target} expects {tuple(expected[key].shape)}"
            )
    return out
