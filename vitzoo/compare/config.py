"""What one comparison is: `CompareConfig` (its defaults with and without --scratch), the model
names it resolves, and the slug of a name; read by the runner and the report alike."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vitzoo import registry
from vitzoo.data import sources
from vitzoo.errors import BadInputError
from vitzoo.precision import resolve_precision

PROTOCOLS = ("knn", "linear", "finetune", "lora")
# the protocols that train a model with the fine-tuning recipe (lora: `--peft lora`, adapters and head only)
FINETUNING = ("finetune", "lora")
# LoRA's update starts at zero and is scaled by alpha / r: it wants a larger step than a full fine-tune
# (PEFT's image-classification example uses 5e-3)
LORA_LEARNING_RATE = 5e-3
# one checkpoint per family, each a different architecture once shrunk for --scratch: DeiT with
# its distillation token, BEiT (relative positions, layer scale, mean pooling), DINO (plain ViT).
# (MAE's encoder is a plain ViT too: from scratch it would repeat DINO's row exactly.)
DEFAULT_MODELS = ("deit-tiny-distilled", "beit-base", "dino-vits16")
# --scratch: random weights, so k-NN or a linear probe on their features says nothing; the default
# is a short fine-tune of every model shrunk to the same small shape (width 64, depth 4, 4 heads,
# MLP 128) at 16 px with 4 px patches (16 tokens; the digits are 8x8 images), 50 epochs, so the whole
# default compare takes under 3 minutes on 2 CPU cores (148 s on 2026-12-02, best 97.8%; at 15 epochs it
# took 44 s and its best model reached 86%: a ranking of under-trained models)
SCRATCH_OVERRIDES = "hidden_size=64,num_hidden_layers=4,num_attention_heads=4,intermediate_size=128,patch_size=4"
SCRATCH_DEFAULTS: dict[str, Any] = {
    "protocol": "finetune",
    "epochs": 50,
    "image_size": 16,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "config_overrides": SCRATCH_OVERRIDES,
}
PRETRAINED_DEFAULTS: dict[str, Any] = {"protocol": "knn", "epochs": 3, "batch_size": 64}
LINEAR_EPOCHS = 100  # vitzoo.probe.linear_probe's default
# --time-budget: the share of the whole budget kept for evaluating every model and measuring its cost; the
# rest is split evenly among the trainings (models x seeds), each one a recipe run with its own --time-budget
BUDGET_RESERVE = 0.15
# the share of the training split held out: for validation (the recipe's evaluation and the choice of its best
# epoch) when the comparison reports on a test split; as the evaluation split itself when the data has neither.
# The recipes' own defaults (vitzoo.data.sources), so that a compare fine-tune holds out what the recipe would.
VAL_FRACTION_WITH_TEST = sources.VAL_FRACTION_WITH_TEST
HELD_OUT_EVAL_FRACTION = sources.VAL_FRACTION


@dataclass
class CompareConfig:
    """One comparison. None means "the default for this mode" (see `resolved`)."""

    models: str | Sequence[str] | None = None  # comma-separated or a list; wildcards; None: DEFAULT_MODELS
    dataset: str = "digits"
    protocol: str | None = None  # knn | linear | finetune | lora; default finetune with scratch, else knn
    epochs: int | None = None  # finetune/lora epochs (default 15 with scratch, else 3) or linear-probe epochs (100)
    image_size: int | None = None  # default 16 with scratch, else each model's own
    scratch: bool = False
    batch_size: int | None = None  # feature extraction, fine-tuning, throughput; default 32 with scratch, else 64
    device: str | None = None  # default: cuda where available, else cpu
    config_overrides: str | None = None  # default SCRATCH_OVERRIDES with scratch
    output_dir: str = "runs/compare"
    k: int = 20  # k-NN neighbours
    seed: int = 0
    seeds: int = 1  # trainings (finetune, lora) or probe fits (linear; k-NN: bootstrap resamples) per model
    train_split: str = "train"
    eval_split: str | None = None  # default: "test" where the data has one, else a validation split, else held out
    val_fraction: float | None = None  # default 0.1 (validation) with a test split, else 0.2 (held-out eval)
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    num_workers: int | None = None  # data-loading workers (default: the recipe's; 0 for feature extraction)
    time_budget: str | None = None  # finetune and lora: the whole comparison's wall time (e.g. 3m), split among the trainings
    learning_rate: float | None = None  # finetune and lora only (default 1e-3 with scratch, else the recipe's; lora 5e-3)
    precision: str = "auto"  # inference: feature extraction and the speed measurement (vitzoo.precision)
    sort_by: str = "accuracy"
    command: str | None = None  # how this compare was started, for the report
    defaults_applied: dict[str, Any] = field(default_factory=dict)
    # filled by the runner for the report: the splits' descriptions and sizes (not a setting)
    splits_info: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> CompareConfig:
        """A copy with every None default filled in; `defaults_applied` says which were."""
        defaults = SCRATCH_DEFAULTS if self.scratch else PRETRAINED_DEFAULTS
        out = dataclasses.replace(self, defaults_applied=dict(self.defaults_applied))
        if (out.protocol or defaults["protocol"]) == "lora" and out.learning_rate is None:  # before --scratch's 1e-3
            out.learning_rate = out.defaults_applied["learning_rate"] = LORA_LEARNING_RATE
        for key, value in defaults.items():
            if getattr(out, key) is None:
                if key == "epochs" and (out.protocol or defaults["protocol"]) == "linear":
                    value = LINEAR_EPOCHS
                setattr(out, key, value)
                out.defaults_applied[key] = value
        if out.models is None:
            out.models = list(DEFAULT_MODELS)
            out.defaults_applied["models"] = ",".join(DEFAULT_MODELS)
        if out.device is None:
            out.device = "cuda" if torch.cuda.is_available() else "cpu"
        if out.protocol not in PROTOCOLS:
            raise BadInputError(f"unknown protocol {out.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if out.protocol == "lora":
            from vitzoo.training.adapters import INSTALL, peft_installed

            if not peft_installed():
                raise BadInputError(f"--protocol lora fine-tunes with PEFT, which is not installed: {INSTALL}")
        for name in ("epochs", "batch_size", "k", "seeds"):
            value = getattr(out, name)
            if not isinstance(value, int) or value < 1:
                raise BadInputError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if out.time_budget is not None:
            from vitzoo.training.budget import UNLIMITED_EPOCHS, parse_duration

            parse_duration(out.time_budget)  # a bad duration is refused before any model runs
            if out.protocol not in FINETUNING:
                raise BadInputError(f"--time-budget splits the comparison's time among its trainings; --protocol "
                                    f"{out.protocol} trains nothing (use it with --protocol finetune or lora)")
            if "epochs" in out.defaults_applied:  # the budget alone ends each training, unless --epochs was given
                out.epochs = out.defaults_applied["epochs"] = UNLIMITED_EPOCHS
        if out.val_fraction is not None and not 0.0 < out.val_fraction < 1.0:
            raise BadInputError(f"--val-fraction must lie strictly between 0 and 1, got {out.val_fraction}")
        if out.image_size is not None and out.image_size < 1:
            raise BadInputError(f"image size must be positive, got {out.image_size}")
        if out.config_overrides and not out.scratch:
            raise BadInputError("--config-overrides change the architecture, so they need --scratch (random weights)")
        resolve_precision(out.precision, out.device)
        return out

    def training_budget(self, models: int) -> str | None:
        """Each training's share of --time-budget (its recipe's --time-budget), in seconds: what is left after
        `BUDGET_RESERVE`, split evenly among `models` x seeds trainings."""
        if self.time_budget is None:
            return None
        from vitzoo.training.budget import parse_duration

        return f"{parse_duration(self.time_budget) * (1 - BUDGET_RESERVE) / (models * self.seeds):.1f}"

    def settings(self) -> dict[str, Any]:
        """What a model's result depends on: a saved result is reused only under equal settings."""
        keep = (
            "dataset",
            "protocol",
            "epochs",
            "image_size",
            "scratch",
            "batch_size",
            "device",
            "config_overrides",
            "k",
            "seed",
            "seeds",
            "train_split",
            "eval_split",
            "val_fraction",
            "max_train_samples",
            "max_eval_samples",
            "learning_rate",
            "time_budget",
            "precision",
        )
        return {key: getattr(self, key) for key in keep}


# --------------------------------------------------------------------------- model names
def resolve_models(models: str | Sequence[str] | None) -> list[str]:
    """Comma-separated names (or a list) to model names: wildcards expand over the registry
    (`deit-*`); local folders and timm names are kept. Duplicates are dropped, order kept.

    Raises:
        BadInputError: an empty list, a pattern matching no registered name, or a name that is
            neither registered, a folder nor a timm model.
    """
    from vitzoo.backends.timm_backend import is_timm_name

    items = models.split(",") if isinstance(models, str) else list(models or [])
    items = [item.strip() for item in items if item and item.strip()]
    if not items:
        raise BadInputError("the model list is empty; pass --models NAME[,NAME...] (`vitzoo list` shows the names)")
    names: list[str] = []
    for item in items:
        if any(char in item for char in "*?[") and not os.path.exists(item):
            matched = registry.list_models(pattern=item)
            if not matched:
                raise BadInputError(f"--models pattern {item!r} matches no registered model; `vitzoo list` shows them")
            names.extend(matched)
        elif os.path.isdir(item) or registry.is_registered(item) or is_timm_name(item):
            names.append(item)
        else:
            close = registry.closest_names(item)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise BadInputError(
                f"unknown model {item!r}: not a registered name, a local folder, or a timm model.{hint}"
            )
    return list(dict.fromkeys(names))


def model_slug(name: str) -> str:
    """A file-name-safe version of a model name or path (`runs/x/model` -> `runs-x-model`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.normpath(name)).strip("-.") or "model"
