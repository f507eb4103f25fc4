"""The model card's sections, each computed from the source as Markdown: the dataset, the labels, the
hyper-parameters, the hardware, the results (and their model-index entries), the preprocessing.

Anything a user typed (a folder name, a label) is escaped here, so that it cannot end a code span,
start a heading or inject markup in the card; a local path is named by its last part only.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping
from typing import Any

from vitzoo import registry
from vitzoo.io import is_local_path
from vitzoo.publish.source import ModelSource

# results.json "eval" key -> (model-index metric_type, human name); only keys present are reported
METRICS = (
    ("accuracy", "accuracy", "Top-1 accuracy"),
    ("top5", "top-5", "Top-5 accuracy"),
    ("macro_f1", "f1", "Macro F1"),
    ("knn_accuracy", "accuracy", "k-NN top-1 accuracy"),
    ("linear_accuracy", "accuracy", "Linear-probe top-1 accuracy"),
)
# args.json keys that are bookkeeping, not hyper-parameters (left out of the card's table)
NOT_HYPERPARAMETERS = {
    "output_dir",
    "num_workers",
    "log_steps",
    "checkpoint_steps",
    "keep_checkpoints",
    "resume",
    "report_to",
    "config",
    "push_to_hub",
    "hub_model_id",
    "hub_private",
    "hub_revision",
    "cpu",
}
CPU_NAMES = {"x86_64", "amd64", "aarch64", "arm64", "i386", "i686", "ppc64le", "s390x", ""}


def describe_dataset(name: str | None) -> dict[str, Any]:
    """How a dataset argument is named in the card: a Hub id (linked, in the metadata), the bundled
    digits, or local data (named by its folder/file name only, never its full path)."""
    if not name:
        return {
            "kind": "unknown",
            "hub_id": None,
            "type": "unknown",
            "name": "an unrecorded dataset",
            "text": "a dataset that the run did not record",
        }
    from vitzoo.data.sources import BUILTIN_DATASETS

    if name in BUILTIN_DATASETS:
        return {
            "kind": "digits",
            "hub_id": None,
            "type": "digits",
            "name": "scikit-learn digits",
            "text": "the scikit-learn *digits* dataset (1,797 8x8 grey-scale scans of handwritten digits 0-9 from "
            "the UCI optical-recognition set, bundled with scikit-learn; not a Hub dataset)",
        }
    if is_local_path(name):
        label = os.path.basename(os.path.normpath(name)) or name
        return {
            "kind": "local",
            "hub_id": None,
            "type": "local",
            "name": f"local data ({_plain(label)})",
            "text": f"local data ({_code(label)}), not published on the Hub",
        }
    return {
        "kind": "hub",
        "hub_id": name,
        "type": name,
        "name": name,
        "text": f"the Hub dataset [{name}](https://huggingface.co/datasets/{name})",
    }


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value).replace("|", "\\|")


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def hyperparameters(source: ModelSource, dataset: dict[str, Any]) -> str | None:
    if not source.args:
        return None
    rows = []
    first = ("model", "scratch", "teacher", "dataset", "image_size", "epochs")
    ordered = [k for k in first if k in source.args] + [k for k in source.args if k not in first]
    for key in ordered:
        value = source.args[key]
        if key in NOT_HYPERPARAMETERS or value is None or value == "":
            continue
        if key == "dataset":
            value = dataset["name"]
        elif key == "model" and isinstance(value, str) and is_local_path(value):
            value = os.path.basename(os.path.normpath(value))
        rows.append((f"`{key}`", _fmt(value)))
    results = source.results or {}
    for key, label in (("steps", "optimizer steps (total)"), ("num_processes", "processes")):
        if key in results:
            rows.append((label, _fmt(results[key])))
    return table(rows, ("argument", "value")) if rows else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def hardware(source: ModelSource) -> str | None:
    results = source.results or {}
    env = results.get("environment") or {}
    rows = []
    if env.get("device") is not None:
        device = str(env["device"])
        rows.append(("device", f"CPU ({device})" if device.lower() in CPU_NAMES else device))
    if results.get("num_processes"):
        rows.append(("processes", _fmt(results["num_processes"])))
    if env.get("cpu_count"):
        rows.append(("CPU cores", _fmt(env["cpu_count"])))
    if results.get("wall_time_seconds") is not None:
        rows.append(("training time (wall clock)", _duration(float(results["wall_time_seconds"]))))
    if results.get("train_images_per_second") is not None:
        rows.append(("training throughput", f"{results['train_images_per_second']:.1f} images/s"))
    versions = [
        f"{lib} {env[lib]}"
        for lib in ("vitzoo", "torch", "transformers", "timm", "accelerate", "python")
        if env.get(lib)
    ]
    if versions:
        rows.append(("software", ", ".join(versions)))
    return table(rows, ("", "")) if rows else None


def eval_rows(source: ModelSource, block: str = "eval") -> list[tuple[str, str, str, float]]:
    """(results key, metric_type, name, value) for every metric results.json actually holds in `block`:
    "eval" (the split evaluated during training, which chose the model kept) or "test" (the test split kept
    apart, on which the kept model was scored once)."""
    evaluation = (source.results or {}).get(block) or {}
    rows = []
    for key, metric_type, name in METRICS:
        value = evaluation.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((key, metric_type, name, value))
    return rows


def split_names(source: ModelSource) -> tuple[str | None, str | None]:
    """(the split "eval" was measured on, the test split), as results.json labels them; runs that kept no
    test split name their eval split by --eval-split only (None: a validation split, or one held out)."""
    results = source.results or {}
    evaluation, test = results.get("eval") or {}, results.get("test") or {}
    named = evaluation.get("split") or (source.args or {}).get("eval_split")
    return (str(named) if named else None), (str(test["split"]) if test.get("split") else None)


def eval_results(source: ModelSource, dataset: dict[str, Any], model_name: str) -> list[Any]:
    """model-index entries: the eval split's metrics and, where the run kept one, the test split's, each
    labelled with its split."""
    from huggingface_hub import EvalResult

    eval_split, test_split = split_names(source)
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset["type"],
            dataset_name=dataset["name"],
            dataset_split=split,
            metric_type=metric_type,
            metric_name=name,
            metric_value=value,
            metric_args={"average": "macro"} if key == "macro_f1" else None,
        )
        for block, split in zip(("eval", "test"), (eval_split or "validation", test_split))
        if split is not None
        for key, metric_type, name, value in eval_rows(source, block)
    ]


def _score(value: float) -> str:
    return f"{value:.4f}" + (f" ({100 * value:.1f}%)" if 0 <= value <= 1 else "")


def results_table(source: ModelSource) -> str | None:
    """The measured metrics: one column, or, where the run kept a test split, the validation split's (which
    chose the model kept) and the test split's side by side, each named by its split."""
    measured = eval_rows(source)
    tested = {key: value for key, _, _, value in eval_rows(source, "test")}
    if not measured:
        return None
    if not tested:
        return table([(name, _score(value)) for _, _, name, value in measured], ("metric", "value"))
    eval_split, test_split = split_names(source)
    return table(
        [(name, _score(value), _score(tested[key]) if key in tested else "") for key, _, name, value in measured],
        ("metric", f"validation: {_code(eval_split) if eval_split else 'held out'}", f"test: {_code(test_split)}"),
    )


def split_texts(source: ModelSource) -> dict[str, Any]:
    """The card's words for the splits measured: `eval_split`, and `test_split` with `test_samples` (None
    where the run kept no test split)."""
    eval_split, test_split = split_names(source)
    test = (source.results or {}).get("test") or {}
    return {
        "eval_split": _code(eval_split) if eval_split else "held-out validation",
        "test_split": _code(test_split) if test_split and eval_rows(source, "test") else None,
        "test_samples": test.get("samples"),
    }


def objective_table(evaluation: Mapping[str, Any]) -> str | None:
    """The training objective's own held-out numbers (e.g. a pretraining loss): reported, never as model-index."""
    skip = {key for key, _, _ in METRICS} | {"samples", "k", "step", "epoch"}
    rows = [
        (f"held-out {key.replace('_', ' ')}", f"{value:.4f}")
        for key, value in evaluation.items()
        if key not in skip and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    return table(rows, ("metric", "value")) if rows else None


def num_params(model_dir: str) -> int | None:
    from safetensors import safe_open

    total = 0
    try:
        for name in os.listdir(model_dir):
            if name.endswith(".safetensors"):
                with safe_open(os.path.join(model_dir, name), "pt") as handle:
                    for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                        shape = handle.get_slice(key).get_shape()
                        count = 1
                        for dim in shape:
                            count *= dim
                        total += count
    except OSError:
        return None
    return total or None


def preprocessing_text(spec: registry.ModelSpec | None) -> str:
    if spec is None:
        return ""
    prep = spec.preprocessing
    size = f"resized to {prep.resize_size}" + (" (shortest edge)" if prep.resize_mode == "shortest" else "")
    crop = f", centre-cropped to {prep.crop_size}" if prep.crop_size else ""
    stats = {registry.IMAGENET_MEAN: "ImageNet mean/std", registry.HALF_MEAN: "mean/std 0.5"}.get(tuple(prep.mean))
    norm = (
        stats
        if stats and tuple(prep.std) in (registry.IMAGENET_STD, registry.HALF_STD)
        else f"mean {list(prep.mean)}, std {list(prep.std)}"
    )
    return f"{size} ({prep.interpolation}){crop}, normalised with {norm} (`preprocessor_config.json`)"


def _printable(text: Any) -> str:
    """User text on one line: control characters (newlines included) written as escapes."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(text))


def _code(text: Any) -> str:
    """A class or folder name as inline code in the card: no newline, backtick or HTML in it can end
    the span, start a heading or inject markup."""
    return "<code>" + html.escape(_printable(text)).replace("`", "&#96;").replace("|", "&#124;") + "</code>"


def _plain(text: Any) -> str:
    """User text in the card's prose: one line, HTML and Markdown punctuation escaped."""
    return re.sub(r"([\\`*_\[\]<>#|!])", r"\\\1", html.escape(_printable(text), quote=False))


def labels_text(config: Mapping[str, Any]) -> tuple[int, str]:
    labels = config.get("id2label") or {}
    names = [labels[k] for k in sorted(labels, key=lambda k: int(k))]
    if not names:
        return 0, ""
    shown = ", ".join(_code(n) for n in names[:20])
    return len(names), shown + (f", ... ({len(names)} in all)" if len(names) > 20 else "")


def model_reference(name: str | None) -> str | None:
    """A registry name as a link to its Hub checkpoint; a folder by its name; None stays None."""
    if not name:
        return None
    if registry.is_registered(name):
        spec = registry.get_spec(name)
        return f"`{name}` ([{spec.hub_id}](https://huggingface.co/{spec.hub_id}))"
    if is_local_path(name):
        return f"a local model (`{os.path.basename(os.path.normpath(name))}`)"
    return f"`{name}`"
