"""Compare models on one dataset, measured the same way on this machine in one run.

For each model: quality by a protocol (top-1, top-5, macro F1 on the eval split) --
``knn`` (DINO's weighted k-NN on frozen features, `vitzoo.probe`), ``linear``
(`vitzoo.probe.linear_probe` on frozen features), ``finetune`` (the fine-tuning recipe,
one run folder per model in ``DIR/runs/<model>``) or ``lora`` (the same with ``--peft lora``:
LoRA adapters and the head train, the row gives the trainable parameters beside the model's) -- and cost (`vitzoo.measure`: parameters,
forward GFLOPs counted by torch, inference images/s, batch-1 latency, peak memory; training
images/s for ``finetune`` and ``lora``), beside the published numbers of the model's registry spec. Frozen
features and the inference cost are computed in ``config.precision`` (`vitzoo.precision`); a
fine-tune trains in the recipe's own ``--mixed-precision``.

Each model's result goes to ``DIR/models/<model>.json`` (atomically) as soon as it is done, with
the settings it was measured under; a rerun with the same settings reuses it, so an interrupted
compare resumes at the first unfinished model. A model that fails (cannot load, out of memory,
image size it cannot take) is recorded as failed with its reason and the others go on. The
report (`vitzoo.compare.report`) is written at the end: results.json, results.csv, report.md and two plots.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from vitzoo import registry
from vitzoo.compare.config import FINETUNING, CompareConfig, model_slug, resolve_models
from vitzoo.errors import BadInputError
from vitzoo.io import atomic_write_json, read_json


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
    if config.protocol in FINETUNING and config.batch_size > train:
        raise BadInputError(
            f"fine-tuning drops incomplete batches: --batch-size {config.batch_size} is more than the "
            f"{train} train images of {config.dataset}; lower --batch-size"
        )


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
    from vitzoo.probe import knn_classify, linear_probe, split_features

    torch.manual_seed(config.seed)  # the same random init for --scratch, run after run
    zoo = vitzoo.load(
        name,
        task="features",
        pretrained=not config.scratch,
        image_size=config.image_size,
        config_overrides=config.config_overrides if config.scratch else None,
        device=config.device,
        precision=config.precision,
    )
    features = split_features(
        zoo, splits, batch_size=config.batch_size, cache_dir=os.path.join(config.output_dir, "features"),
        dataset=config.dataset, num_workers=config.num_workers or 0, scratch=config.scratch,
        overrides=config.config_overrides or "", max_train=config.max_train_samples, max_eval=config.max_eval_samples,
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
    # the run depends on every setting but the inference precision (it trains in the recipe's own)
    wanted = {"model": name, **{key: value for key, value in config.settings().items() if key != "precision"}}
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
            peft="lora" if config.protocol == "lora" else None,
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
        precision=config.precision,
    )
    best = results["eval"]
    quality = {key: best[key] for key in ("accuracy", "top5", "macro_f1")}
    quality["train_images_per_second"] = results.get("train_images_per_second")
    quality["trainable_params"] = results.get("trainable_parameters")  # the adapters and the head under lora
    quality["run_dir"] = run_dir
    return zoo, quality


def evaluate_model(name: str, config: CompareConfig, splits: Any) -> dict[str, Any]:
    """One model's row: quality by `config.protocol`, cost by `vitzoo.measure`, published numbers.

    Raises whatever loading, training or measuring raises (`run_compare` records it as failed).
    """
    from vitzoo.measure import measure
    from vitzoo.precision import dtype_name

    start = time.perf_counter()
    if config.protocol in FINETUNING:
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
        "precision": dtype_name(zoo.compute_dtype),
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
    report is written to ``config.output_dir`` (`vitzoo.compare.report.write_report`) and the terminal
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
        from vitzoo.compare.report import terminal_table, write_report

        write_report(rows, config)
        (echo or print)(terminal_table(rows, sort_by=config.sort_by))
        (echo or print)(f"report: {os.path.join(config.output_dir, 'report.md')}")
    return rows
