"""Compare models on one dataset, measured the same way on this machine in one run.

    >>> from vitzoo.compare import CompareConfig, run_compare
    >>> rows = run_compare(CompareConfig(models="deit-tiny,dino-vits16", dataset="digits", protocol="knn"))

For each model: quality by a protocol (top-1, top-5, macro F1 on the eval split) --
``knn`` (DINO's weighted k-NN on frozen features, `vitzoo.probe`), ``linear``
(`vitzoo.probe.linear_probe` on frozen features) or ``finetune`` (the fine-tuning recipe,
one run folder per model in ``DIR/runs/<model>``) -- and cost (`vitzoo.measure`: parameters,
forward GFLOPs counted by torch, inference images/s, batch-1 latency, peak memory; training
images/s for ``finetune``), beside the published numbers of the model's registry spec.

Each model's result goes to ``DIR/models/<model>.json`` (atomically) as soon as it is done, with
the settings it was measured under; a rerun with the same settings reuses it, so an interrupted
compare resumes at the first unfinished model. A model that fails (cannot load, out of memory,
image size it cannot take) is recorded as failed with its reason and the others go on. The
report (`vitzoo.report`) is written at the end: results.json, results.csv, report.md and two plots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vitzoo import registry
from vitzoo.errors import BadInputError
from vitzoo.io import atomic_write_json, read_json

__all__ = [
    "DEFAULT_MODELS",
    "PROTOCOLS",
    "SCRATCH_DEFAULTS",
    "CompareConfig",
    "evaluate_model",
    "model_slug",
    "resolve_models",
    "run_compare",
]

PROTOCOLS = ("knn", "linear", "finetune")
# one checkpoint per family, each a different architecture once shrunk for --scratch: DeiT with
# its distillation token, BEiT (relative positions, layer scale, mean pooling), DINO (plain ViT).
# (MAE's encoder is a plain ViT too: from scratch it would repeat DINO's row exactly.)
DEFAULT_MODELS = ("deit-tiny-distilled", "beit-base", "dino-vits16")
# --scratch: random weights, so k-NN or a linear probe on their features says nothing; the default
# is a short fine-tune of every model shrunk to the same small shape (width 64, depth 4, 4 heads,
# MLP 128) at 16 px with 4 px patches (16 tokens; the digits are 8x8 images), so the whole default
# compare takes minutes on 2 CPU cores
SCRATCH_OVERRIDES = "hidden_size=64,num_hidden_layers=4,num_attention_heads=4,intermediate_size=128,patch_size=4"
SCRATCH_DEFAULTS: dict[str, Any] = {
    "protocol": "finetune",
    "epochs": 15,
    "image_size": 16,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "config_overrides": SCRATCH_OVERRIDES,
}
PRETRAINED_DEFAULTS: dict[str, Any] = {"protocol": "knn", "epochs": 3, "batch_size": 64}
LINEAR_EPOCHS = 100  # vitzoo.probe.linear_probe's default


@dataclass
class CompareConfig:
    """One comparison. None means "the default for this mode" (see `resolved`)."""

    models: str | Sequence[str] | None = None  # comma-separated or a list; wildcards; None: DEFAULT_MODELS
    dataset: str = "digits"
    protocol: str | None = None  # knn | linear | finetune; default finetune with scratch, else knn
    epochs: int | None = None  # finetune epochs (default 15 with scratch, else 3) or linear-probe epochs (100)
    image_size: int | None = None  # default 16 with scratch, else each model's own
    scratch: bool = False
    batch_size: int | None = None  # feature extraction, fine-tuning, throughput; default 32 with scratch, else 64
    device: str | None = None  # default: cuda where available, else cpu
    config_overrides: str | None = None  # default SCRATCH_OVERRIDES with scratch
    output_dir: str = "runs/compare"
    k: int = 20  # k-NN neighbours
    seed: int = 0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    num_workers: int | None = None  # data-loading workers (default: the recipe's; 0 for feature extraction)
    learning_rate: float | None = None  # finetune only (default 1e-3 with scratch, else the recipe's)
    sort_by: str = "accuracy"
    command: str | None = None  # how this compare was started, for the report
    defaults_applied: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> CompareConfig:
        """A copy with every None default filled in; `defaults_applied` says which were."""
        defaults = SCRATCH_DEFAULTS if self.scratch else PRETRAINED_DEFAULTS
        out = dataclasses.replace(self, defaults_applied=dict(self.defaults_applied))
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
        for name in ("epochs", "batch_size", "k"):
            value = getattr(out, name)
            if not isinstance(value, int) or value < 1:
                raise BadInputError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if out.image_size is not None and out.image_size < 1:
            raise BadInputError(f"image size must be positive, got {out.image_size}")
        if out.config_overrides and not out.scratch:
            raise BadInputError("--config-overrides change the architecture, so they need --scratch (random weights)")
        return out

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
            "max_train_samples",
            "max_eval_samples",
            "learning_rate",
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


# --------------------------------------------------------------------------- data
def _load_splits(config: CompareConfig) -> Any:
    from vitzoo.data import load_splits

    return load_splits(
        config.dataset,
        seed=config.seed,
        max_train_samples=config.max_train_samples,
        max_eval_samples=config.max_eval_samples,
    )


def check_dataset(config: CompareConfig, splits: Any) -> None:
    """A clear error when the dataset is too small for the protocol (before any model runs)."""
    train, test = len(splits.train), len(splits.eval)
    if test == 0 or train == 0:
        raise BadInputError(f"{config.dataset} has {train} train and {test} eval images; both splits need images")
    if config.protocol == "knn" and config.k > train:
        raise BadInputError(
            f"k-NN with k={config.k} needs at least {config.k} train images but {config.dataset} has {train}; "
            "lower --k or use more data"
        )
    if config.protocol == "linear" and train < 2:
        raise BadInputError(f"a linear probe needs at least 2 train images, {config.dataset} has {train}")
    if config.protocol == "finetune" and config.batch_size > train:
        raise BadInputError(
            f"fine-tuning drops incomplete batches: --batch-size {config.batch_size} is more than the "
            f"{train} train images of {config.dataset}; lower --batch-size"
        )


def _ready_batches(split: Any, zoo: Any, config: CompareConfig) -> Any:
    """(normalised pixels, labels) batches of a split at the model's input size, in order."""
    from vitzoo.data import eval_transform, make_loader, normalize_batch

    loader = make_loader(
        split,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.num_workers or 0,
        transform=eval_transform(zoo.spec.preprocessing, zoo.image_size),
    )
    for images, labels in loader:
        if images.shape[0]:
            yield normalize_batch(images, zoo.spec.preprocessing), labels


# --------------------------------------------------------------------------- one model
def _published(name: str, spec: Any) -> dict[str, Any]:
    """The registry's published numbers for a model, each key prefixed `published_`."""
    if registry.is_registered(name):
        spec = registry.get_spec(name)
    if spec is None:
        return {}
    out = {f"published_{key}": value for key, value in (spec.published or {}).items()}
    out["published_params"] = spec.num_params
    out["published_license"] = spec.license
    return out


def _frozen_quality(name: str, config: CompareConfig, splits: Any) -> tuple[Any, dict[str, Any]]:
    import vitzoo
    from vitzoo.metrics import classification_metrics
    from vitzoo.probe import (
        cached_features,
        extract_features,
        feature_cache_key,
        knn_classify,
        linear_probe,
        weights_fingerprint,
    )

    torch.manual_seed(config.seed)  # the same random init for --scratch, run after run
    zoo = vitzoo.load(
        name,
        task="features",
        pretrained=not config.scratch,
        image_size=config.image_size,
        config_overrides=config.config_overrides if config.scratch else None,
        device=config.device,
    )
    cache = os.path.join(config.output_dir, "features")
    extra = {
        "scratch": config.scratch,
        "overrides": config.config_overrides or "",
        "seed": config.seed,
        "max_train": config.max_train_samples,
        "max_eval": config.max_eval_samples,
    }
    features = {}
    weights = weights_fingerprint(zoo.model)
    for split_name, split in (("train", splits.train), ("eval", splits.eval)):
        key = feature_cache_key(name, config.dataset, split_name, zoo.image_size, weights=weights, **extra)
        features[split_name] = cached_features(
            cache, key, lambda split=split: extract_features(zoo, _ready_batches(split, zoo, config), progress=False)
        )
    (train_x, train_y), (test_x, test_y) = features["train"], features["eval"]
    if config.protocol == "knn":
        _, scores = knn_classify(train_x, train_y, test_x, k=config.k, num_classes=splits.num_classes)
        quality = classification_metrics(scores, test_y)
    else:
        probe = linear_probe(
            train_x, train_y, test_x, test_y, epochs=config.epochs, seed=config.seed, num_classes=splits.num_classes
        )
        quality = {key: probe[key] for key in ("accuracy", "top5", "macro_f1")}
    return zoo, quality


def _finetune_quality(name: str, config: CompareConfig, splits: Any) -> tuple[Any, dict[str, Any]]:
    import vitzoo
    from vitzoo.recipes import finetune
    from vitzoo.training.arguments import FinetuneArguments

    run_dir = os.path.join(config.output_dir, "runs", model_slug(name))
    settings_file = os.path.join(run_dir, "compare_settings.json")
    wanted = {"model": name, **config.settings()}
    results_file = os.path.join(run_dir, "results.json")
    if os.path.isdir(run_dir) and _read_json(settings_file) != wanted:
        shutil.rmtree(run_dir)  # a run of other settings: start over
    results = _read_json(results_file)
    if not (results and isinstance(results.get("eval"), dict) and "top5" in results["eval"]):
        os.makedirs(run_dir, exist_ok=True)
        atomic_write_json(settings_file, wanted)
        arguments = FinetuneArguments(
            model=name,
            dataset=config.dataset,
            output_dir=run_dir,
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=config.seed,
            resume="auto",
            image_size=config.image_size,
            config_overrides=config.config_overrides if config.scratch else None,
            num_workers=config.num_workers,
            max_train_samples=config.max_train_samples,
            max_eval_samples=config.max_eval_samples,
            scratch=config.scratch,
            cpu=config.device == "cpu",
        )
        if config.learning_rate is not None:
            arguments.learning_rate = config.learning_rate
        with (
            open(os.path.join(run_dir, "compare.log"), "a") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            results = finetune.train(arguments)
    # the cost is the architecture's, not the weights': measure the same model built afresh (the
    # saved model/ holds the same shapes), which also spares reading the run's weights back
    torch.manual_seed(config.seed)
    zoo = vitzoo.load(
        name,
        task="classification",
        num_labels=len(splits.id2label),
        pretrained=not config.scratch,
        image_size=config.image_size,
        config_overrides=config.config_overrides if config.scratch else None,
        device=config.device,
    )
    best = results["eval"]
    quality = {key: best[key] for key in ("accuracy", "top5", "macro_f1")}
    quality["train_images_per_second"] = results.get("train_images_per_second")
    quality["run_dir"] = run_dir
    return zoo, quality


def evaluate_model(name: str, config: CompareConfig, splits: Any) -> dict[str, Any]:
    """One model's row: quality by `config.protocol`, cost by `vitzoo.measure`, published numbers.

    Raises whatever loading, training or measuring raises (`run_compare` records it as failed).
    """
    from vitzoo.measure import measure

    start = time.perf_counter()
    if config.protocol == "finetune":
        zoo, quality = _finetune_quality(name, config, splits)
        forward = zoo.logits
    else:
        zoo, quality = _frozen_quality(name, config, splits)
        forward = zoo.features
    cost = measure(forward, zoo.model, zoo.image_size, batch_size=config.batch_size)
    return {
        "family": zoo.spec.family,
        "backend": zoo.backend,
        "pretrained": not config.scratch,
        **quality,
        **{key: value for key, value in cost.items() if key not in ("batch_size", "device")},
        **_published(name, zoo.spec),
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------- the run
def _read_json(path: str) -> Any:
    """A file an earlier run saved, or None where it is missing or unreadable: then the work is done again."""
    try:
        return read_json(path)
    except (OSError, BadInputError):
        return None


def _error_text(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return f"out of memory: {text[:300]}"
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def saved_weights(name: str) -> str | None:
    """For a model folder (or a run folder's model/), a hash of its weight files, so that a folder
    trained again in place is measured again; None for registry and timm names."""
    if not os.path.isdir(name):
        return None
    folder = name if os.path.isfile(os.path.join(name, "config.json")) else os.path.join(name, "model")
    digest = hashlib.sha256()
    for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if file.endswith((".safetensors", ".bin")):
            with open(os.path.join(folder, file), "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def model_result_path(config: CompareConfig, name: str) -> str:
    return os.path.join(config.output_dir, "models", f"{model_slug(name)}.json")


def run_compare(
    config: CompareConfig,
    *,
    progress: bool = True,
    write: bool = True,
    echo: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Compare `config.models`; return one row per model (the report's rows, unsorted).

    Finished models (``DIR/models/<model>.json`` with the same settings) are read, not rerun;
    a failing model becomes a row with ``status="failed"`` and its ``error``. With `write`, the
    report is written to ``config.output_dir`` (`vitzoo.report.write_report`) and the terminal
    table printed through `echo` (default: print).
    """
    from tqdm.auto import tqdm

    config = config.resolved()
    names = resolve_models(config.models)
    splits = _load_splits(config)
    check_dataset(config, splits)
    settings = config.settings()
    os.makedirs(os.path.join(config.output_dir, "models"), exist_ok=True)
    rows: list[dict[str, Any]] = []
    bar = tqdm(names, desc=f"compare ({config.protocol})", unit="model", disable=not progress, file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        path = model_result_path(config, name)
        saved = _read_json(path)
        weights = saved_weights(name)
        if (isinstance(saved, dict) and saved.get("settings") == settings and saved.get("status") == "ok"
                and saved.get("weights") == weights):
            row = saved
            note = "reused"
        else:
            try:
                row = {"model": name, "status": "ok", "error": "", **evaluate_model(name, config, splits)}
            except Exception as error:  # noqa: BLE001 - any failure of one model is that model's row
                row = {"model": name, "status": "failed", "error": _error_text(error)}
                if config.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            row = {**row, "protocol": config.protocol, "settings": settings, "weights": weights}
            atomic_write_json(path, row)
            note = "done" if row["status"] == "ok" else "FAILED"
        rows.append(row)
        accuracy = row.get("accuracy")
        detail = f"accuracy {accuracy:.4f}" if isinstance(accuracy, float) and math.isfinite(accuracy) else row["error"]
        tqdm.write(f"  {name}: {note}, {detail}", file=sys.stderr)
    bar.close()
    if write:
        from vitzoo.report import terminal_table, write_report

        write_report(rows, config)
        (echo or print)(terminal_table(rows, sort_by=config.sort_by))
        (echo or print)(f"report: {os.path.join(config.output_dir, 'report.md')}")
    return rows
