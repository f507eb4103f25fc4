"""Linear probing on frozen features (He et al., "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022, MAE; and DINO's linear evaluation): one linear layer trained on the features."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vitzoo.errors import BadInputError
from vitzoo.metrics import classification_metrics
from vitzoo.probe.knn import _features, _labels, _num_classes


def _cosine_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_probe(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_features: torch.Tensor | np.ndarray,
    test_labels: torch.Tensor | np.ndarray | Sequence[int],
    *,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    warmup_epochs: int = 0,
    standardize: bool = True,
    num_classes: int | None = None,
    top_k: int = 5,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train a linear classifier on frozen features and score it on the test features.

    The protocol of MAE (He et al. 2022, sec. 4 and appendix A.3: "linear probing") and DINO's
    linear evaluation (Caron et al. 2021): one `nn.Linear` head (weights from a truncated normal
    with std 0.01, bias 0, as MAE), no batch norm, cross-entropy, SGD with momentum (or AdamW)
    and a cosine learning-rate schedule stepped per iteration, after `warmup_epochs` of linear
    warm-up. MAE uses LARS, lr 0.1 x batch/256, no weight decay, 90 epochs (10 warm-up); DINO
    uses SGD, lr 0.001 x batch/256, 100 epochs, no weight decay. Defaults here: SGD,
    lr 0.1, momentum 0.9, 100 epochs, batch 256.

    Standardisation (`standardize=True`, the default): MAE puts a BatchNorm1d *without affine
    parameters* before the head, which at test time divides by the running statistics of the
    train features. Here the features are standardised with the exact per-dimension mean and
    (biased) std of the whole train set, computed once: the same transform at test time, and
    fixed rather than per-batch during training. The returned head has the standardisation
    folded into it, so it applies to the raw features: ``W' = W / std``, ``b' = b - W' @ mean``.

    Args:
        optimizer: "sgd" (momentum `momentum`) or "adamw".
        seed: seeds the head's initialisation and the batch order (global RNG untouched).
        device: where to train (default: the train features' device).

    Returns:
        ``{"accuracy", f"top{top_k}", "macro_f1"}`` on the test set (via
        `vitzoo.metrics.classification_metrics`), "train_loss" (mean loss of the last epoch),
        "head" (the `nn.Linear` state dict, on CPU, taking raw features), "feature_mean" and
        "feature_std" (None when not standardised), "num_classes" and the settings used.
    """
    train = _features(train_features, "train_features")
    test = _features(test_features, "test_features")
    if train.shape[1] != test.shape[1]:
        raise BadInputError(f"train features have {train.shape[1]} dimensions but test features {test.shape[1]}")
    labels = _labels(train_labels, train.shape[0], "train_labels")
    targets = _labels(test_labels, test.shape[0], "test_labels")
    classes = _num_classes(num_classes, labels, targets)
    if epochs < 1 or batch_size < 1:
        raise BadInputError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    if not lr > 0 or weight_decay < 0:
        raise BadInputError(f"lr must be positive and weight_decay non-negative, got {lr} and {weight_decay}")
    if optimizer not in ("sgd", "adamw"):
        raise BadInputError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    if not 0 <= warmup_epochs < epochs:
        raise BadInputError(f"warmup_epochs must be in [0, epochs), got {warmup_epochs}")

    device = torch.device(device) if device is not None else train.device
    train = train.to(device, torch.float32)
    test = test.to(device, torch.float32)
    if train.is_inference():  # made under torch.inference_mode(): autograd cannot save it
        train = train.clone()
    labels = labels.to(device)
    if standardize:
        mean = train.mean(dim=0)
        std = train.std(dim=0, unbiased=False).clamp_min(1e-6)  # BatchNorm's eps scale, as MAE's 1e-6
        train = (train - mean) / std
        test = (test - mean) / std

    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(train.shape[1], classes, device="meta").to_empty(device="cpu")  # no global RNG draw
    with torch.no_grad():
        nn.init.trunc_normal_(head.weight, std=0.01, generator=generator)
        head.bias.zero_()
    head.to(device)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(train.shape[0] / batch_size)
    total_steps = epochs * steps_per_epoch
    warmup_steps = warmup_epochs * steps_per_epoch
    step = 0
    train_loss = float("nan")
    head.train()
    for _ in range(epochs):
        order = torch.randperm(train.shape[0], generator=generator).to(device)
        epoch_loss = torch.zeros((), device=device)
        for start in range(0, train.shape[0], batch_size):
            batch = order[start : start + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * _cosine_factor(step, total_steps, warmup_steps)
            loss = F.cross_entropy(head(train[batch]), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_loss += loss.detach() * batch.numel()
            step += 1
        train_loss = float(epoch_loss) / train.shape[0]

    head.eval()
    with torch.inference_mode():
        logits = head(test)
    metrics = classification_metrics(logits, targets, top_k=top_k)
    weight = head.weight.detach().float().cpu()
    bias = head.bias.detach().float().cpu()
    if standardize:
        mean_cpu, std_cpu = mean.cpu(), std.cpu()
        weight = weight / std_cpu
        bias = bias - weight @ mean_cpu
    return {
        **metrics,
        "train_loss": train_loss,
        "head": {"weight": weight.contiguous(), "bias": bias.contiguous()},
        "feature_mean": mean.cpu() if standardize else None,
        "feature_std": std.cpu() if standardize else None,
        "num_classes": classes,
        "settings": {
            "epochs": epochs,
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "seed": seed,
            "optimizer": optimizer,
            "momentum": momentum if optimizer == "sgd" else None,
            "warmup_epochs": warmup_epochs,
            "standardize": standardize,
        },
    }
