"""What is being published: a run folder (with model/) or a model folder, read once and scrubbed.

`resolve_source` reads vitzoo.json, config.json and, for a run, args.json and results.json;
`detect_kind` says which of the three model cards the model gets.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from vitzoo import registry
from vitzoo.errors import BadInputError
from vitzoo.io import read_json
from vitzoo.publish.tokens import known_secrets, scrub

VITZOO_FILE = "vitzoo.json"

KIND_CLASSIFIER = "fine-tuned classifier"
KIND_DISTILLED = "distilled student"
KIND_SELF_SUPERVISED = "self-supervised encoder"
# what the recipes write as vitzoo.json's training.recipe and training.method
DISTILL_RECIPES = {"distill"}  # recipes/distill.py: method "deit" (a student) or "dino" (an encoder)
SELF_SUPERVISED_RECIPES = {"pretrain"}  # recipes/pretrain.py: method "mae", "beit" or "simmim"
SELF_SUPERVISED_METHODS = {
    "dino": "DINO self-distillation",
    "mae": "masked autoencoder (MAE)",
    "beit": "BEiT masked image modelling",
    "simmim": "SimMIM masked image modelling",
}


@dataclasses.dataclass
class ModelSource:
    """A vitzoo model folder and, where it came from a run, that run's arguments and results."""

    model_dir: str
    run_dir: str | None
    meta: dict[str, Any]
    config: dict[str, Any]
    args: dict[str, Any] | None
    results: dict[str, Any] | None

    @property
    def training(self) -> dict[str, Any]:
        return dict(self.meta.get("training") or {})

    @property
    def task(self) -> str:
        return self.meta.get("task") or "classification"

    @property
    def backend(self) -> str:
        return self.meta.get("backend") or "transformers"


def _is_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, VITZOO_FILE)) and os.path.isfile(os.path.join(path, "config.json"))


def resolve_source(path: str | os.PathLike) -> ModelSource:
    """A run folder (with model/) or a model folder (with vitzoo.json and config.json)."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise BadInputError(f"no such folder: {path}")
    if _is_model_dir(os.path.join(path, "model")):
        run_dir, model_dir = path, os.path.join(path, "model")
    elif _is_model_dir(path):
        model_dir = path
        parent = os.path.dirname(path)
        is_run = os.path.basename(path) == "model" and (
            os.path.isfile(os.path.join(parent, "args.json")) or os.path.isfile(os.path.join(parent, "results.json"))
        )
        run_dir = parent if is_run else None
    else:
        raise BadInputError(
            f"{path} is not a vitzoo output: expected a run folder with model/, or a model folder with "
            f"{VITZOO_FILE} and config.json (written by `vitzoo finetune` or ZooModel.save_pretrained)."
        )
    args = results = None
    if run_dir is not None:
        if os.path.isfile(os.path.join(run_dir, "args.json")):
            args = read_json(os.path.join(run_dir, "args.json"))
        if os.path.isfile(os.path.join(run_dir, "results.json")):
            results = read_json(os.path.join(run_dir, "results.json"))
    secrets = known_secrets()  # everything read is scrubbed once, here: no token reaches the export or the card
    return ModelSource(
        model_dir=model_dir,
        run_dir=run_dir,
        meta=scrub(read_json(os.path.join(model_dir, VITZOO_FILE)), secrets),
        config=scrub(read_json(os.path.join(model_dir, "config.json")), secrets, by_key=False),
        args=scrub(args, secrets),
        results=scrub(results, secrets),
    )


def detect_kind(meta: Mapping[str, Any]) -> str:
    """Fine-tuned classifier, distilled student or self-supervised encoder, from vitzoo.json.

    `distill --method deit` (a teacher) makes a student; `distill --method dino` (self-distillation),
    `pretrain` (MAE/BEiT/SimMIM) and any features/pretraining model make an encoder.
    """
    training = meta.get("training") or {}
    recipe = str(training.get("recipe") or "").lower()
    method = str(training.get("method") or "").lower()
    if training.get("teacher") or (recipe in DISTILL_RECIPES and method in ("", "deit")):
        return KIND_DISTILLED
    if (
        recipe in SELF_SUPERVISED_RECIPES
        or method in SELF_SUPERVISED_METHODS
        or meta.get("task") in ("features", "pretraining")
    ):
        return KIND_SELF_SUPERVISED
    return KIND_CLASSIFIER


def base_spec(source: ModelSource) -> registry.ModelSpec | None:
    """The registry spec of the checkpoint training started from (training.base_model), if registered."""
    base = source.training.get("base_model")
    if isinstance(base, str) and registry.is_registered(base):
        return registry.get_spec(base)
    return None


def model_spec(source: ModelSource) -> registry.ModelSpec | None:
    """The spec saved in vitzoo.json (the model's own architecture and preprocessing); None for timm names."""
    spec = source.meta.get("spec")
    if not spec or spec.get("family") == "timm":
        return None
    try:
        return registry.ModelSpec.from_dict(spec)
    except (TypeError, KeyError, ValueError):
        return None
