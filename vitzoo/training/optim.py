"""AdamW parameter groups with layer-wise LR decay, and the warm-up + cosine schedule.

ViT fine-tuning recipes (BEiT, MAE, DeiT III) decay each block's learning rate by
`layer_decay ** (depth + 1 - block)` and apply no weight decay to biases, norms, layer scales,
position embeddings, relative position bias tables and the CLS / distillation / mask tokens.
transformers' examples match none of those names for ViTs; timm's `param_groups_layer_decay`
does it for timm models (through each model's `group_matcher`), so timm models use it and
transformers models get the same grouping from their parameter names here.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from timm.optim import param_groups_layer_decay
from timm.scheduler import CosineLRScheduler

# parameters that are not weights of a linear/conv map: never weight-decayed
NO_DECAY = re.compile(
    r"(bias$|norm|lambda|layer_scale|gamma|position_embedding|pos_embed|relative_position|rel_pos"
    r"|cls_token|distillation_token|dist_token|mask_token|reg_token)"
)
BLOCK = re.compile(r"\.(?:layers?|blocks)\.(\d+)\.")
EMBEDDING = re.compile(r"(embeddings|cls_token|pos_embed|patch_embed|dist_token|mask_token|reg_token)")


def layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for block i, depth + 1 for the final norm and the head."""
    match = BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    if EMBEDDING.search(name):
        return 0
    return depth + 1


def parameter_groups(
    model: torch.nn.Module, *, weight_decay: float, layer_decay: float | None, depth: int
) -> list[dict[str, Any]]:
    """Groups for `torch.optim.AdamW`, each with an `lr_scale` the schedule multiplies in."""
    if hasattr(model, "group_matcher") and layer_decay is not None:
        return param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay,
                                        no_weight_decay_list=tuple(getattr(model, "no_weight_decay", set)()))
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = not (parameter.ndim <= 1 or NO_DECAY.search(name))
        layer = layer_id(name, depth) if layer_decay is not None else depth + 1
        scale = layer_decay ** (depth + 1 - layer) if layer_decay is not None else 1.0
        group = groups.setdefault(
            (layer, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        )
        group["params"].append(parameter)
    return list(groups.values())


def build_optimizer(
    model: torch.nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    layer_decay: float | None,
    depth: int,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    groups = parameter_groups(model, weight_decay=weight_decay, layer_decay=layer_decay, depth=depth)
    # every group starts at the base rate: the timm scheduler multiplies each group's lr_scale in
    # the fused kernel updates every parameter in one pass, on CPUs too (measured faster than foreach:
    # see docs/speed.md); it needs float parameters on a device that has it
    fused = all(p.is_floating_point() and p.device.type in _FUSED_DEVICES for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused or None)


_FUSED_DEVICES = ("cpu", "cuda", "xpu", "mps")


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int, min_lr: float = 1e-6, warmup_lr: float = 1e-7
) -> CosineLRScheduler:
    """timm's cosine schedule with linear warm-up, stepped per optimizer update (`step_update`).

    timm's scheduler honours each group's `lr_scale`, so layer decay survives the schedule.
    """
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps),
        lr_min=min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=warmup_lr,
        t_in_epochs=False,
    )
