"""Compare models on one dataset, measured the same way on this machine in one run.

For each model: quality by a protocol (top-1, top-5, macro F1 on the scored split, `resolve_splits`; over
``config.seeds`` runs, with each model's per-image predictions for the report's paired test) --
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
compare resumes at the first unfinished model. The cost columns are measured at the end, every finished
model together (`measure_costs`: round-robin, fixed threads). A model that fails (cannot load, out of memory,
image size it cannot take) is recorded as failed with its reason and the others go on. The
report (`vitzoo.compare.report`) is written at the end: results.json, results.csv, report.md and two plots.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
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
def resolve_splits(config: CompareConfig) -> tuple[CompareConfig, dict[str, Any]]:
    """Which split the comparison reports on, and what the fine-tunes validate on.

    The report's split is `config.eval_split` when given, else the data's "test" split where it has one,
    else its validation split, else `HELD_OUT_EVAL_FRACTION` of the training split held out. With a test
    split (or any given split that is not a validation split), a fine-tune validates on the data's validation
    split or on `config.val_fraction` (default `VAL_FRACTION_WITH_TEST`) of the training split held out, and
    keeps its best epoch by it; only that model is then scored on the test split. Returns the config with
    `eval_split` and `val_fraction` filled in, and {"eval": description, "validation": description or None,
    "test_mode": bool}.
    """
    import dataclasses

    from vitzoo.compare.config import HELD_OUT_EVAL_FRACTION, VAL_FRACTION_WITH_TEST
    from vitzoo.data.sources import EVAL_SPLIT_NAMES

    available = _split_names(config)
    out = dataclasses.replace(config, defaults_applied=dict(config.defaults_applied))
    if out.eval_split is None and "test" in available and out.train_split != "test":
        out.eval_split = out.defaults_applied["eval_split"] = "test"
    validation = next((name for name in EVAL_SPLIT_NAMES if name in available and name != out.train_split), None)
    test_mode = out.eval_split is not None and out.eval_split not in EVAL_SPLIT_NAMES
    if out.val_fraction is None:
        out.val_fraction = out.defaults_applied["val_fraction"] = (
            VAL_FRACTION_WITH_TEST if test_mode else HELD_OUT_EVAL_FRACTION
        )
    held_out = f"{out.val_fraction:g} of `{out.train_split}` held out (stratified, seed {out.seed})"
    if out.eval_split is not None:
        evaluation = f"`{out.eval_split}`"
    else:
        evaluation = f"`{validation}`" if validation else held_out
    validation_text = None
    if test_mode:
        validation_text = f"`{validation}`" if validation else held_out
    return out, {"eval": evaluation, "validation": validation_text, "test_mode": test_mode}


def _split_names(config: CompareConfig) -> list[str]:
    """The split names the dataset has (empty where they cannot be listed without loading it)."""
    import contextlib as _contextlib

    from vitzoo.data import sources

    if config.dataset in sources.BUILTIN_DATASETS:
        return ["train"]
    with _contextlib.suppress(Exception):
        return list(sources._resolve(config.dataset, None, None, config.train_split)[0])
    return []


def _load_splits(config: CompareConfig) -> Any:
    from vitzoo.data import load_splits

    return load_splits(
        config.dataset,
        train_split=config.train_split,
        eval_split=config.eval_split,
        val_fraction=config.val_fraction,
        seed=config.seed,
        max_train_samples=config.max_train_samples,
        max_eval_samples=config.max_eval_samples,
    )


def _training_splits(config: CompareConfig) -> dict[str, Any]:
    """The fine-tuning recipe's split flags: in test mode it validates apart from the test split (its
    default validation split, or `val_fraction` held out); otherwise it evaluates on the report's split."""
    from vitzoo.data.sources import EVAL_SPLIT_NAMES

    test_mode = config.eval_split is not None and config.eval_split not in EVAL_SPLIT_NAMES
    return {
        "train_split": config.train_split,
        "eval_split": None if test_mode else config.eval_split,
        "val_fraction": config.val_fraction,
    }


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


def seeds_of(config: CompareConfig) -> list[int]:
    """The seeds a model is trained (or its probe fitted) with: `config.seed` and the next `config.seeds - 1`."""
    return [config.seed + index for index in range(config.seeds)]


def _outcome(scores: torch.Tensor, labels: torch.Tensor, seed: int) -> dict[str, Any]:
    """One seed's result on the evaluation images: its metrics and, per image, the predicted class."""
    from vitzoo.metrics import classification_metrics

    quality = classification_metrics(scores, labels)
    predictions = scores.argmax(dim=1)
    return {
        "seed": seed,
        **{key: float(quality[key]) for key in ("accuracy", "top5", "macro_f1")},
        "predictions": [int(p) for p in predictions],
    }


def summarise_seeds(outcomes: list[dict[str, Any]], labels: torch.Tensor) -> dict[str, Any]:
    """A model's quality over its seeds: mean and standard deviation of each metric, the values per seed,
    the Wilson 95% interval of the first seed's top-1 over the evaluation images, and the first seed's
    per-image predictions and correct (1) / wrong (0) outcomes (what the report's paired test uses)."""
    from vitzoo.compare.stats import mean_std, wilson_interval

    out: dict[str, Any] = {"seeds": [o["seed"] for o in outcomes]}
    for key in ("accuracy", "top5", "macro_f1"):
        values = [o[key] for o in outcomes]
        out[key], out[f"{key}_std"] = mean_std(values)
        out[f"{key}_per_seed"] = values
    first = outcomes[0]["predictions"]
    correct = [int(p == int(y)) for p, y in zip(first, labels)]
    out["eval_images"] = len(correct)
    out["accuracy_ci_low"], out["accuracy_ci_high"] = wilson_interval(sum(correct), len(correct))
    out["predictions"] = first
    out["correct"] = "".join(str(c) for c in correct)
    return out


def _frozen_quality(name: str, config: CompareConfig, splits: Any) -> tuple[Any, dict[str, Any]]:
    """k-NN or a linear probe on frozen features. The linear probe is fitted once per seed. k-NN has no
    randomness given the features: its first "seed" is the k-NN on the whole training set, each further
    one the k-NN on a bootstrap resample of the training set (drawn with that seed), so its spread is that
    of resampling the training data."""
    import vitzoo
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
        **_split_key(config),
    )
    (train_x, train_y), (test_x, test_y) = features["train"], features["eval"]
    outcomes = []
    for index, seed in enumerate(seeds_of(config)):
        if config.protocol == "knn":
            x, y = train_x, train_y
            if index > 0:
                pick = torch.randint(len(train_y), (len(train_y),), generator=torch.Generator().manual_seed(seed))
                x, y = train_x[pick], train_y[pick]
            _, scores = knn_classify(x, y, test_x, k=config.k, num_classes=splits.num_classes)
        else:
            probe = linear_probe(
                train_x, train_y, test_x, test_y, epochs=config.epochs, seed=seed, num_classes=splits.num_classes
            )
            head = probe["head"]  # in the raw features' space (the standardisation folded in)
            scores = test_x.float() @ head["weight"].T + head["bias"]
        outcomes.append(_outcome(scores, test_y, seed))
    return zoo, summarise_seeds(outcomes, test_y)


def _split_key(config: CompareConfig) -> dict[str, Any]:
    """What the feature cache must tell apart beyond the defaults: other splits than train and the default eval."""
    key = {}
    if config.train_split != "train":
        key["train_split"] = config.train_split
    if config.eval_split is not None:
        key["eval_split"] = config.eval_split
    return key


def split_logits(zoo: Any, split: Any, *, batch_size: int, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A classifier's logits (N x C, fp32, CPU) and the labels of every image of `split`, each through the
    model's evaluation transform, in order."""
    from vitzoo.data import eval_transform, make_loader, normalize_batch
    from vitzoo.probe import extract_features

    preprocessing = zoo.spec.preprocessing
    loader = make_loader(split, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                         transform=eval_transform(preprocessing, zoo.image_size))
    batches = ((normalize_batch(images.to(zoo.device), preprocessing), labels)
               for images, labels in loader if images.shape[0])
    zoo.model.eval()
    return extract_features(zoo.logits, batches, progress=False, description="logits")


class _StepProgress:
    """A training callback that moves a tqdm bar one optimizer step at a time."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def on_train_begin(self, context: Any) -> None:
        self.bar.reset(total=context.plan.total_steps)
        self.bar.update(context.state.step)

    def on_step(self, context: Any) -> None:
        self.bar.update(1)

    def __getattr__(self, name: str) -> Any:  # every other callback event: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def _finetune_one(name: str, config: CompareConfig, seed: int, steps: Any) -> tuple[str, dict[str, Any]]:
    """Train (or reuse) one seed's run folder; return it and its results.json."""
    from vitzoo.methods import finetune
    from vitzoo.training.arguments import FinetuneArguments

    slug = model_slug(name)
    run_dir = os.path.join(config.output_dir, "runs", slug if seed == config.seed else f"{slug}-seed{seed}")
    settings_file = os.path.join(run_dir, "compare_settings.json")
    # the run depends on every setting but the inference precision (it trains in the recipe's own) and the
    # number of seeds
    wanted = {"model": name, **{key: value for key, value in config.settings().items()
                                if key not in ("precision", "seeds")}, "seed": seed}
    results_file = os.path.join(run_dir, "results.json")
    # a run of other settings starts over: the run folder clears its own run files, never anything else there
    fresh = os.path.isdir(run_dir) and _read_json(settings_file) != wanted
    results = None if fresh else _read_json(results_file)
    if not (results and isinstance(results.get("eval"), dict) and "top5" in results["eval"]):
        os.makedirs(run_dir, exist_ok=True)
        atomic_write_json(settings_file, wanted)
        arguments = FinetuneArguments(
            model=name,
            dataset=config.dataset,
            output_dir=run_dir,
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=seed,
            resume=None if fresh else "auto",
            overwrite=fresh,
            image_size=config.image_size,
            config_overrides=config.config_overrides if config.scratch else None,
            num_workers=config.num_workers,
            max_train_samples=config.max_train_samples,
            max_eval_samples=config.max_eval_samples,
            scratch=config.scratch,
            cpu=config.device == "cpu",
            peft="lora" if config.protocol == "lora" else None,
            **_training_splits(config),
        )
        if config.learning_rate is not None:
            arguments.learning_rate = config.learning_rate
        arguments.time_budget = config.training_budget(len(resolve_models(config.models)))
        with (
            open(os.path.join(run_dir, "compare.log"), "w" if fresh else "a") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            results = finetune.train(arguments, callbacks=[_StepProgress(steps)] if steps is not None else [])
    return run_dir, results


def _finetune_quality(name: str, config: CompareConfig, splits: Any, steps: Any = None) -> tuple[Any, dict[str, Any]]:
    """Fine-tune once per seed; each run's model/ (the best by the recipe's own evaluation) is then scored
    here on the evaluation images, so that every model's per-image predictions are known."""
    import vitzoo

    outcomes, speeds, runs, validation, trainable = [], [], [], [], None
    labels = None
    for seed in seeds_of(config):
        if steps is not None:
            steps.set_description(f"  {name} seed {seed}")
        run_dir, results = _finetune_one(name, config, seed, steps)
        trained = vitzoo.load(os.path.join(run_dir, "model"), task="classification", device=config.device,
                              precision="fp32")
        scores, labels = split_logits(trained, splits.eval, batch_size=config.batch_size)
        del trained
        outcomes.append(_outcome(scores, labels, seed))
        speeds.append(results.get("train_images_per_second"))
        validation.append(results["eval"].get("accuracy"))
        trainable = results.get("trainable_parameters")  # the adapters and the head under lora
        runs.append(run_dir)
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
    quality = summarise_seeds(outcomes, labels)
    known = [s for s in speeds if isinstance(s, (int, float))]
    quality["train_images_per_second"] = sum(known) / len(known) if known else None
    quality["trainable_params"] = trainable
    if config.eval_split is not None and _training_splits(config)["eval_split"] is None:
        # test mode: each run kept its best epoch by its validation accuracy, scored here on the test split
        quality["val_accuracy"] = sum(validation) / len(validation)
        quality["val_accuracy_per_seed"] = validation
    quality["run_dir"] = runs[0]
    quality["run_dirs"] = runs
    return zoo, quality


def evaluate_model(name: str, config: CompareConfig, splits: Any, steps: Any = None) -> dict[str, Any]:
    """One model's quality by `config.protocol` (over `config.seeds` seeds), what it is, and its published
    numbers; its cost is measured afterwards with every other model's (`measure_costs`).

    Raises whatever loading or training raises (`run_compare` records it as failed).
    """
    from vitzoo.precision import dtype_name

    start = time.perf_counter()
    if config.protocol in FINETUNING:
        zoo, quality = _finetune_quality(name, config, splits, steps)
    else:
        zoo, quality = _frozen_quality(name, config, splits)
    return {
        "family": zoo.spec.family,
        "backend": zoo.backend,
        "pretrained": not config.scratch,
        "precision": dtype_name(zoo.compute_dtype),
        **quality,
        **_published(name, zoo.spec),
        "seconds": time.perf_counter() - start,
    }


def _cost_model(name: str, config: CompareConfig, num_labels: int) -> Any:
    """The model whose cost is measured: the architecture as compared (the cost is the architecture's,
    not the weights'), built afresh: a classifier for fine-tuning protocols, the feature extractor else."""
    import vitzoo

    torch.manual_seed(config.seed)
    finetuning = config.protocol in FINETUNING
    return vitzoo.load(
        name,
        task="classification" if finetuning else "features",
        num_labels=num_labels if finetuning else None,
        pretrained=not config.scratch,
        image_size=config.image_size,
        config_overrides=config.config_overrides if config.scratch else None,
        device=config.device,
        precision=config.precision,
    )


MEASURE_ROUNDS = 5  # round-robin rounds of the speed measurement; images/s is their median
MEASURE_SECONDS = 0.1  # the least time of each model's throughput passes in each round
LATENCY_ITERS = 10  # batch-1 passes per model per round (the percentiles pool every round's)


def measure_costs(names: list[str], config: CompareConfig, num_labels: int) -> dict[str, dict[str, Any]]:
    """{name: cost} of the given models, measured together by `vitzoo.measure.measure_many` (round-robin,
    fixed threads, median of `MEASURE_ROUNDS` rounds); a model that cannot be built or measured maps to
    {"error": text}."""
    from vitzoo.measure import measure_many

    built, out = {}, {}
    for name in names:
        try:
            zoo = _cost_model(name, config, num_labels)
        except Exception as error:  # noqa: BLE001 - that model's cost is missing, the others go on
            out[name] = {"error": _error_text(error)}
            continue
        forward = zoo.logits if config.protocol in FINETUNING else zoo.features
        built[name] = (forward, zoo.model, zoo.image_size)
    if built:
        try:
            out.update(measure_many(built, batch_size=config.batch_size, rounds=MEASURE_ROUNDS,
                                    min_seconds=MEASURE_SECONDS, latency_iters=LATENCY_ITERS))
        except Exception as error:  # noqa: BLE001
            out.update({name: {"error": _error_text(error)} for name in built})
    return out


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
    config, described = resolve_splits(config)
    splits = _load_splits(config)
    check_dataset(config, splits)
    config.splits_info = {**described, "eval_images": len(splits.eval), "train_images": len(splits.train)}
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
            steps = None
            if progress and config.protocol in FINETUNING:
                steps = tqdm(total=1, desc=f"  {name}", unit="step", leave=False, file=sys.stderr)
            try:
                extra = {"steps": steps} if steps is not None else {}
                row = {"model": name, "status": "ok", "error": "", **evaluate_model(name, config, splits, **extra)}
            except Exception as error:  # noqa: BLE001 - any failure of one model is that model's row
                row = {"model": name, "status": "failed", "error": _error_text(error)}
                if config.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            finally:
                if steps is not None:
                    steps.close()
            row = {**row, "protocol": config.protocol, "settings": settings, "weights": weights}
            atomic_write_json(path, row)
            note = "done" if row["status"] == "ok" else "FAILED"
        rows.append(row)
        accuracy = row.get("accuracy")
        detail = f"accuracy {accuracy:.4f}" if isinstance(accuracy, float) and math.isfinite(accuracy) else row["error"]
        tqdm.write(f"  {name}: {note}, {detail}", file=sys.stderr)
    bar.close()
    finished = [row["model"] for row in rows if row.get("status") == "ok"]
    if finished:
        if progress:
            tqdm.write(f"  measuring the cost of {len(finished)} models together (round-robin)", file=sys.stderr)
        costs = measure_costs(finished, config, splits.num_classes)
        for index, row in enumerate(rows):
            cost = costs.get(row["model"])
            if cost is None:
                continue
            if "error" in cost:
                rows[index] = row = {**row, "cost_error": cost["error"]}
            else:
                rows[index] = row = {**row, **{k: v for k, v in cost.items() if k not in ("batch_size", "device")}}
            atomic_write_json(model_result_path(config, row["model"]), row)
    if write:
        from vitzoo.compare.report import best_line, terminal_table, write_report

        write_report(rows, config)
        (echo or print)(terminal_table(rows, sort_by=config.sort_by))
        (echo or print)(best_line(rows))
        (echo or print)(f"report: {os.path.join(config.output_dir, 'report.md')}")
    return rows
