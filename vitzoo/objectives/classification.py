"""Supervised classification: cross-entropy with label smoothing, or soft-target cross-entropy on
timm's mixup/cutmix (both timm's losses); evaluated by top-1, top-5 and macro F1 on the eval split,
and the best top-1 keeps model/. Its sign of a stall: the training loss still at ln(classes), the loss of
uniform predictions, after the first epoch."""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from vitzoo.data import mixup_fn
from vitzoo.errors import BadInputError
from vitzoo.registry import head_names
from vitzoo.training.engine import evaluate_classifier, forward_logits
from vitzoo.training.objective import Context, History, Objective, Sign

CHANCE_SHARE = 0.98  # a mean training loss at or above this share of ln(classes) is still at chance


class Classification(Objective):
    name = "classification"
    select = "accuracy"

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0, mixup: float = 0.0, cutmix: float = 0.0) -> None:
        self.num_classes = num_classes
        self.mixup = mixup_fn(mixup, cutmix, label_smoothing, num_classes)
        self.criterion = SoftTargetCrossEntropy() if self.mixup else LabelSmoothingCrossEntropy(label_smoothing)

    def mix(self, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch after mixup/cutmix and its (soft) targets; unchanged without them."""
        return self.mixup(pixels, labels) if self.mixup is not None else (pixels, labels)

    def loss(self, model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, context: Context) -> tuple[torch.Tensor, dict[str, Any]]:
        pixels, targets = self.mix(pixels, labels)
        return self.criterion(forward_logits(model, pixels), targets), {}

    def evaluate(self, model: torch.nn.Module, loader: Any, context: Context) -> dict[str, float]:
        return evaluate_classifier(model, loader, context.accelerator, context.pixels)

    def health(self, context: Context, history: History) -> list[Sign]:
        """From the end of the first epoch and of the warm-up on (before them a loss near chance is no news)."""
        if context.state.step < max(context.plan.steps_per_epoch, context.plan.warmup_steps):
            return []
        sign = chance_loss_sign(history.recent("loss"), self.num_classes)
        return [sign] if sign else []

    def summary(self, results: dict[str, Any], model_dir: str) -> str:
        best = results["eval"]  # None in the results.json of an older vitzoo's run that trained no step
        scores = (f"eval accuracy {best['accuracy']:.4f} (top-5 {best['top5']:.4f}, macro F1 {best['macro_f1']:.4f})"
                  if best else "not evaluated")
        return f"{scores}, {self.speed(results)}, {results['wall_time_seconds'] / 60:.1f} min; model in {model_dir}"

    def speed(self, results: dict[str, Any]) -> str:
        return f"{results['train_images_per_second']:.1f} train images/s"


def chance_loss_sign(losses: list[float], num_classes: int) -> Sign | None:
    """A stall when the mean of the newest logged training losses is within 2% of ln(classes) or above it:
    the cross-entropy of uniform predictions is exactly ln(classes) for any target, hard, smoothed or mixed."""
    if not losses:
        return None
    loss, chance = sum(losses) / len(losses), math.log(num_classes)
    if loss < CHANCE_SHARE * chance:
        return None
    return Sign("loss_at_chance", "stall",
                f"training stalled: loss {loss:.3f} over the last {len(losses)} logs is {loss / chance:.1%} of "
                f"ln({num_classes}) = {chance:.3f} (uniform predictions)",
                "try another --learning-rate (too high never settles, too low never moves; --warmup-ratio eases the "
                "start) and check that the labels match the images (--label-column)")


def freeze_all_but_head(model: torch.nn.Module) -> None:
    """Linear probing: only the classifier (transformers `classifier*`, timm `head*`) trains."""
    trainable = 0
    heads = head_names()  # every family's (Family.head_names)
    for name, parameter in model.named_parameters():
        is_head = name.split(".")[0] in heads
        parameter.requires_grad_(is_head)
        trainable += parameter.numel() if is_head else 0
    if trainable == 0:
        raise BadInputError("--freeze-backbone found no classification head to train")
