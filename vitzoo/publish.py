"""Publishing a vitzoo model to the Hugging Face Hub: a Hub-ready export with a model card, then one commit.

    export = export_model("runs/digits", "someone/deit-tiny-digits")  # runs/digits/hub_export/
    push("runs/digits", "someone/deit-tiny-digits", private=True)      # export + create_repo + one upload_folder

The export holds `model.safetensors` (never a pickle), `config.json` (label names included),
`preprocessor_config.json`, `vitzoo.json` (the spec, the base model, the training arguments and
results) and `README.md`, a model card rendered from the template of the model's kind
(`vitzoo/model_cards/`): fine-tuned classifier, distilled student or self-supervised encoder.
The token comes from `HF_TOKEN` or `hf auth login` and is never printed, saved or put in the card.
(`vitzoo/hub.py` is the other direction: deciding where weights are loaded from.)
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import shutil
import struct
from collections.abc import Callable, Mapping
from typing import Any

from vitzoo import registry
from vitzoo.errors import BadInputError, VitzooError
from vitzoo.io import atomic_directory

EXPORT_DIR = "hub_export"
VITZOO_FILE = "vitzoo.json"
CARD_FILE = "README.md"
REDACTED = "<redacted>"

KIND_CLASSIFIER = "fine-tuned classifier"
KIND_DISTILLED = "distilled student"
KIND_SELF_SUPERVISED = "self-supervised encoder"
TEMPLATES = {
    KIND_CLASSIFIER: "classifier.md",
    KIND_DISTILLED: "distilled.md",
    KIND_SELF_SUPERVISED: "self_supervised.md",
}
DISTILL_RECIPES = {"distill", "distillation"}
SELF_SUPERVISED_METHODS = {
    "dino": "DINO self-distillation",
    "mae": "masked autoencoder (MAE)",
    "beit": "BEiT masked image modelling",
    "simmim": "SimMIM masked image modelling",
    "ibot": "iBOT",
}
SELF_SUPERVISED_RECIPES = {"pretrain", "pretraining", "dino", "mae", "beit", "ibot", "self-supervised", "ssl"}

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
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
# argument names that hold credentials (hub_token, hf_token, token, ...; not tokenizer_class or pad_token_id)
SECRET_KEY = re.compile(r"(^|_)(auth_|access_|api_)?token$|secret|password|api_?key", re.IGNORECASE)
WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
FAMILY_LABELS = {"vit": "ViT", "deit": "DeiT", "beit": "BEiT", "dino": "DINO", "mae": "MAE", "dinov2": "DINOv2"}
CPU_NAMES = {"x86_64", "amd64", "aarch64", "arm64", "i386", "i686", "ppc64le", "s390x", ""}


class PushError(VitzooError):
    """The upload could not happen (no token, refused, network); the local export is intact."""


# ---------------------------------------------------------------------------------- the source


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


def _read_json(path: str) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise BadInputError(f"{path} is not valid JSON ({error}); is the run folder complete?") from None


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
            args = _read_json(os.path.join(run_dir, "args.json"))
        if os.path.isfile(os.path.join(run_dir, "results.json")):
            results = _read_json(os.path.join(run_dir, "results.json"))
    secrets = _secrets()  # everything read is scrubbed once, here: no token reaches the export or the card
    return ModelSource(
        model_dir=model_dir,
        run_dir=run_dir,
        meta=scrub(_read_json(os.path.join(model_dir, VITZOO_FILE)), secrets),
        config=scrub(_read_json(os.path.join(model_dir, "config.json")), secrets, by_key=False),
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


# ---------------------------------------------------------------------------------- tokens


def scrub(value: Any, secrets: tuple[str, ...] = (), by_key: bool = True) -> Any:
    """A copy of `value` with anything token-like replaced: strings starting with `hf_`, any of
    `secrets` wherever it appears, and (`by_key`) string values under keys named like a token."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if by_key and SECRET_KEY.search(str(key)) and isinstance(item, str) and item
            else scrub(item, secrets, by_key)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub(item, secrets, by_key) for item in value]
    if isinstance(value, str):
        if value.startswith("hf_"):
            return REDACTED
        for secret in secrets:
            if secret:
                value = value.replace(secret, REDACTED)
    return value


def _secrets() -> tuple[str, ...]:
    token = _token()
    return (token,) if token else ()


def _token() -> str | None:
    import huggingface_hub

    return huggingface_hub.get_token()


def check_repo_id(repo_id: str) -> str:
    """`user/name` (or `org/name`) as the Hub accepts it, else a BadInputError saying so."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id):
        raise BadInputError(
            f"repo id {repo_id!r} must look like USER/NAME or ORG/NAME (letters, digits, '-', '_', '.'), "
            "e.g. someone/deit-tiny-digits"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise BadInputError(f"repo id {repo_id!r} is not valid on the Hub: {error}") from None
    return repo_id


def check_push(repo_id: str | None) -> None:
    """Fail fast, before a training run, if its --push-to-hub could not work: bad repo id or no token."""
    if not repo_id:
        raise BadInputError("--push-to-hub needs --hub-model-id USER/NAME (the Hub repository to create or update)")
    check_repo_id(repo_id)
    if not _token():
        raise PushError(_login_hint("--push-to-hub needs a Hugging Face token."))


def _login_hint(first: str) -> str:
    return (
        f"{first} Log in once with `hf auth login` (a token with write access, from "
        "https://huggingface.co/settings/tokens), or set the HF_TOKEN environment variable."
    )


# ---------------------------------------------------------------------------------- export


@dataclasses.dataclass
class Export:
    path: str
    kind: str
    files: list[tuple[str, int]]  # (relative path, size in bytes), sorted

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def default_export_dir(source: ModelSource) -> str:
    if source.run_dir is not None:
        return os.path.join(source.run_dir, EXPORT_DIR)
    return source.model_dir.rstrip(os.sep) + "-" + EXPORT_DIR


def _check_export_dir(export_dir: str, source: ModelSource) -> str:
    export_dir = os.path.abspath(export_dir)
    protected = [source.model_dir] + ([source.run_dir] if source.run_dir else [])
    for folder in protected:
        real, target = os.path.realpath(folder), os.path.realpath(export_dir)
        if target == real or real.startswith(target + os.sep):
            raise BadInputError(
                f"--export-dir {export_dir} would replace {folder}; choose a new folder (default: {EXPORT_DIR}/ in the run)"
            )
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not is_export(export_dir):
        raise BadInputError(
            f"--export-dir {export_dir} exists and is not a vitzoo export; an export replaces its folder, "
            "so choose a new or empty one"
        )
    return export_dir


def _weight_files(model_dir: str) -> list[str]:
    names = sorted(os.listdir(model_dir))
    weights = [n for n in names if n.endswith(WEIGHT_SUFFIXES)]
    if "model.safetensors.index.json" in names:
        weights.append("model.safetensors.index.json")
    if not any(n.endswith(".safetensors") for n in weights):
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        found = f" (found only pickled weights: {', '.join(pickles)})" if pickles else ""
        raise BadInputError(
            f"{model_dir} has no model.safetensors{found}; vitzoo publishes safetensors only. "
            "Re-save the model with vitzoo.load(folder).save_pretrained(new_folder)."
        )
    return weights


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # weights are never rewritten in place, so a hard link is a safe copy
    except OSError:
        shutil.copy2(source, target)


def export_model(
    path: str | os.PathLike,
    repo_id: str,
    export_dir: str | os.PathLike | None = None,
) -> Export:
    """Write the Hub-ready folder (weights, configs, vitzoo.json, README.md) atomically and return it."""
    check_repo_id(repo_id)
    source = resolve_source(path)
    kind = detect_kind(source.meta)
    target = _check_export_dir(os.fspath(export_dir) if export_dir else default_export_dir(source), source)
    secrets = _secrets()
    card = render_card(source, repo_id, kind, secrets=secrets)
    with atomic_directory(target) as tmp:
        for name in _weight_files(source.model_dir):
            _link_or_copy(os.path.join(source.model_dir, name), os.path.join(tmp, name))
        with open(os.path.join(tmp, "config.json"), "w") as handle:
            json.dump(source.config, handle, indent=2)
        if os.path.isfile(os.path.join(source.model_dir, "preprocessor_config.json")):
            with open(os.path.join(tmp, "preprocessor_config.json"), "w") as handle:
                json.dump(
                    scrub(_read_json(os.path.join(source.model_dir, "preprocessor_config.json")), secrets, False),
                    handle,
                    indent=2,
                )
        with open(os.path.join(tmp, VITZOO_FILE), "w") as handle:
            json.dump(_export_metadata(source, repo_id), handle, indent=2, default=str)
        with open(os.path.join(tmp, CARD_FILE), "w", encoding="utf-8") as handle:
            handle.write(str(card))
        _assert_no_secret(tmp, secrets)
        files = sorted(
            (os.path.relpath(os.path.join(root, name), tmp), os.path.getsize(os.path.join(root, name)))
            for root, _, names in os.walk(tmp)
            for name in names
        )
    return Export(path=target, kind=kind, files=files)


def _export_metadata(source: ModelSource, repo_id: str) -> dict[str, Any]:
    meta = dict(source.meta)
    training = source.training
    if source.args is not None:
        training["arguments"] = source.args
    if source.results is not None:
        training["results"] = {
            key: source.results[key]
            for key in (
                "eval",
                "steps",
                "epochs",
                "train_images_per_second",
                "wall_time_seconds",
                "num_processes",
                "data",
                "environment",
            )
            if key in source.results
        }
    base = _base_spec(source)
    if base is not None:
        training.setdefault("base_model_hub_id", base.hub_id)
    if training:
        meta["training"] = training
    meta["hub_repo_id"] = repo_id
    return meta


def _assert_no_secret(folder: str, secrets: tuple[str, ...]) -> None:
    """A last guard: no exported file (text files, safetensors headers) holds the token."""
    needles = [s.encode() for s in secrets if s]
    if not needles:
        return
    for root, _, names in os.walk(folder):
        for name in names:
            file = os.path.join(root, name)
            with open(file, "rb") as handle:
                if name.endswith(".safetensors"):
                    (length,) = struct.unpack("<Q", handle.read(8))
                    data = handle.read(min(length, 100_000_000))
                else:
                    data = handle.read()
            if any(needle in data for needle in needles):
                raise PushError(f"refusing to publish: {name} contains your Hugging Face token")


# ---------------------------------------------------------------------------------- the card


def _base_spec(source: ModelSource) -> registry.ModelSpec | None:
    base = source.training.get("base_model")
    if isinstance(base, str) and registry.is_registered(base):
        return registry.get_spec(base)
    return None


def _model_spec(source: ModelSource) -> registry.ModelSpec | None:
    spec = source.meta.get("spec")
    if not spec or spec.get("family") == "timm":
        return None
    try:
        return registry.ModelSpec.from_dict(spec)
    except (TypeError, KeyError, ValueError):
        return None


def _is_local_path(name: str) -> bool:
    return (
        os.path.exists(os.path.expanduser(name))
        or name.startswith(("/", ".", "~", "\\"))
        or name.count("/") > 1
        or name.lower().endswith((".csv", ".jsonl", ".json", ".tsv"))
    )


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
    if _is_local_path(name):
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


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)


def _hyperparameters(source: ModelSource, dataset: dict[str, Any]) -> str | None:
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
        elif key == "model" and isinstance(value, str) and _is_local_path(value):
            value = os.path.basename(os.path.normpath(value))
        rows.append((f"`{key}`", _fmt(value)))
    results = source.results or {}
    for key, label in (("steps", "optimizer steps (total)"), ("num_processes", "processes")):
        if key in results:
            rows.append((label, _fmt(results[key])))
    return _table(rows, ("argument", "value")) if rows else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _hardware(source: ModelSource) -> str | None:
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
    return _table(rows, ("", "")) if rows else None


def _eval_rows(source: ModelSource) -> list[tuple[str, str, str, float]]:
    """(results key, metric_type, name, value) for every metric results.json actually holds."""
    evaluation = (source.results or {}).get("eval") or {}
    rows = []
    for key, metric_type, name in METRICS:
        value = evaluation.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((key, metric_type, name, value))
    return rows


def _eval_results(source: ModelSource, dataset: dict[str, Any], model_name: str) -> list[Any]:
    from huggingface_hub import EvalResult

    split = (source.args or {}).get("eval_split") or "validation"
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
        for key, metric_type, name, value in _eval_rows(source)
    ]


def _objective_table(evaluation: Mapping[str, Any]) -> str | None:
    """The training objective's own held-out numbers (e.g. a pretraining loss): reported, never as model-index."""
    skip = {key for key, _, _ in METRICS} | {"samples", "k", "step", "epoch"}
    rows = [
        (f"held-out {key.replace('_', ' ')}", f"{value:.4f}")
        for key, value in evaluation.items()
        if key not in skip and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    return _table(rows, ("metric", "value")) if rows else None


def _num_params(model_dir: str) -> int | None:
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


def _preprocessing_text(spec: registry.ModelSpec | None) -> str:
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


def _labels_text(config: Mapping[str, Any]) -> tuple[int, str]:
    labels = config.get("id2label") or {}
    names = [labels[k] for k in sorted(labels, key=lambda k: int(k))]
    if not names:
        return 0, ""
    shown = ", ".join(_code(n) for n in names[:20])
    return len(names), shown + (f", ... ({len(names)} in all)" if len(names) > 20 else "")


def _model_reference(name: str | None) -> str | None:
    """A registry name as a link to its Hub checkpoint; a folder by its name; None stays None."""
    if not name:
        return None
    if registry.is_registered(name):
        spec = registry.get_spec(name)
        return f"`{name}` ([{spec.hub_id}](https://huggingface.co/{spec.hub_id}))"
    if _is_local_path(name):
        return f"a local model (`{os.path.basename(os.path.normpath(name))}`)"
    return f"`{name}`"


def card_context(source: ModelSource, repo_id: str, kind: str) -> dict[str, Any]:
    """Everything a template needs, computed here so that templates hold only prose and layout."""
    training = source.training
    spec = _model_spec(source)
    base = _base_spec(source) or spec
    family = registry.get_family(base.family) if base is not None and base.family != "timm" else None
    pretrained = bool(training.get("pretrained", source.meta.get("pretrained", True)))
    args = source.args or {}
    dataset = describe_dataset(training.get("dataset") or args.get("dataset"))
    num_labels, labels = _labels_text(source.config)
    arch = spec.architecture if spec is not None else None
    architectures = source.config.get("architectures") or []
    model_class = architectures[0] if architectures else "AutoModel"
    eval_rows = _eval_rows(source)
    evaluation = (source.results or {}).get("eval") or {}
    teacher = training.get("teacher") or args.get("teacher")
    method = training.get("method") or args.get("method")
    results_table = None
    if eval_rows:
        results_table = _table(
            [
                (name, f"{value:.4f}" + (f" ({100 * value:.1f}%)" if 0 <= value <= 1 else ""))
                for _, _, name, value in eval_rows
            ],
            ("metric", "value"),
        )
    published = ""
    if base is not None and pretrained and base.published:
        published = "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in base.published.items())
    return {
        "repo_id": repo_id,
        "model_name": repo_id.split("/", 1)[1],
        "kind": kind,
        "task": source.task,
        "backend": source.backend,
        "is_classifier": source.task == "classification",
        "pretrained": pretrained,
        "recipe": training.get("recipe"),
        "method": SELF_SUPERVISED_METHODS.get(str(method).lower(), method) if method else None,
        "objective_table": _objective_table(evaluation),
        "knn_k": evaluation.get("k"),
        "base_name": training.get("base_model") or (spec.name if spec else None),
        "base_reference": _model_reference(training.get("base_model") or (spec.name if spec else None)),
        "base": base,
        "base_published": published,
        "family": family,
        "family_label": FAMILY_LABELS.get(family.name, family.name) if family else "vision-transformer",
        "family_title": family.paper_title if family else None,
        "citation": family.citation if family else None,
        "teacher_reference": _model_reference(teacher) if isinstance(teacher, str) else None,
        "dataset": dataset,
        "num_labels": num_labels,
        "labels": labels,
        "architecture": arch,
        "num_params": _num_params(source.model_dir),
        "image_size": source.meta.get("image_size") or (arch.image_size if arch else None),
        "model_class": model_class,
        "preprocessing": _preprocessing_text(spec),
        "hyperparameters": _hyperparameters(source, dataset),
        "hardware": _hardware(source),
        "results_table": results_table,
        "eval_samples": evaluation.get("samples"),
        "eval_split": args.get("eval_split") or "held-out validation",
        "train_samples": ((source.results or {}).get("data") or {}).get("train_samples"),
        "best_epoch": evaluation.get("epoch"),
        "epochs": (source.results or {}).get("epochs") or args.get("epochs"),
        "license": _license(base),
    }


def _license(spec: registry.ModelSpec | None) -> str:
    if spec is None or not spec.license or spec.license == "unknown":
        return "other"
    return spec.license


def card_data(source: ModelSource, repo_id: str, kind: str, context: Mapping[str, Any]) -> Any:
    from huggingface_hub import ModelCardData

    dataset = context["dataset"]
    base = context["base"]
    tags = [
        "vitzoo",
        "vision-transformer",
        "image-classification" if context["is_classifier"] else "image-feature-extraction",
    ]
    if base is not None:
        tags.append(base.family)
    tags += {KIND_DISTILLED: ["distillation"], KIND_SELF_SUPERVISED: ["self-supervised"]}.get(kind, [])
    if source.backend == "timm":
        tags.append("timm")
    eval_results = _eval_results(source, dataset, context["model_name"])
    return ModelCardData(
        license=context["license"],
        library_name="timm" if source.backend == "timm" else "transformers",
        pipeline_tag="image-classification" if context["is_classifier"] else "image-feature-extraction",
        tags=list(dict.fromkeys(tags)),
        base_model=_base_hub_id(source, context),
        datasets=[dataset["hub_id"]] if dataset["hub_id"] else None,
        metrics=list(dict.fromkeys(r.metric_type for r in eval_results)) or None,
        model_name=context["model_name"] if eval_results else None,
        eval_results=eval_results or None,
    )


def how_to_use(context: Mapping[str, Any]) -> str:
    """The card's loading code, for the backend and task the model was saved with."""
    repo, cls = context["repo_id"], context["model_class"]
    classifier = context["is_classifier"]
    use = (
        'print(model.predict("image.png", top_k=3))'
        if classifier
        else 'embeddings = model.embed(["a.png", "b.png"])  # one vector per image'
    )
    parts = [
        "## How to use",
        "With vitzoo (`pip install vitzoo`), which applies the preprocessing in the card and pools features as the family does:",
        f'```python\nimport vitzoo\nfrom huggingface_hub import snapshot_download\n\nmodel = vitzoo.load(snapshot_download("{repo}"))\n{use}\n```',
    ]
    if context["backend"] == "timm":
        last = (
            "probabilities = model(pixels).softmax(-1)"
            if classifier
            else "features = model.forward_head(model.forward_features(pixels), pre_logits=True)"
        )
        parts += [
            "With plain timm:",
            f'```python\nimport timm\nfrom PIL import Image\n\nmodel = timm.create_model("hf-hub:{repo}", pretrained=True).eval()\n'
            "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))\n"
            f'pixels = transform(Image.open("image.png").convert("RGB")).unsqueeze(0)\n{last}\n```',
        ]
        return "\n\n".join(parts)
    head = (
        f"from PIL import Image\nfrom transformers import AutoImageProcessor, {cls}\n\n"
        f'processor = AutoImageProcessor.from_pretrained("{repo}")\nmodel = {cls}.from_pretrained("{repo}")\n'
        'inputs = processor(Image.open("image.png").convert("RGB"), return_tensors="pt")\n'
    )
    if classifier:
        body = "logits = model(**inputs).logits\nprint(model.config.id2label[logits.argmax(-1).item()])"
    elif context["task"] == "features":
        body = "hidden = model(**inputs).last_hidden_state  # tokens; [:, 0] is the CLS token"
    else:
        body = "outputs = model(**inputs)  # the pretraining model (encoder and its pretraining head), to train further"
    parts += ["With plain transformers:", f"```python\n{head}{body}\n```"]
    return "\n\n".join(parts)


def _base_hub_id(source: ModelSource, context: Mapping[str, Any]) -> str | None:
    """The Hub repo the weights started from: the registry spec's (timm's for timm-backend models); none for --scratch."""
    base = _base_spec(source)
    if base is None or not context["pretrained"]:
        return None
    if source.backend == "timm" and base.timm_name:
        return f"timm/{base.timm_name}"
    return base.hub_id


def template_path(kind: str) -> str:
    from importlib.resources import files

    return str(files("vitzoo").joinpath("model_cards", TEMPLATES[kind]))


def render_card(source: ModelSource, repo_id: str, kind: str | None = None, secrets: tuple[str, ...] = ()) -> Any:
    """The model card of `source` as a huggingface_hub `ModelCard`."""
    from huggingface_hub import ModelCard

    kind = kind or detect_kind(source.meta)
    context = card_context(source, repo_id, kind)
    context["how_to_use"] = how_to_use(context)
    data = card_data(source, repo_id, kind, context)
    card = ModelCard.from_template(data, template_path=template_path(kind), **context)
    text = re.sub(r"\n{3,}", "\n\n", str(card)).strip() + "\n"
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return ModelCard(re.sub(r"hf_[A-Za-z0-9]{8,}", REDACTED, text))


# ---------------------------------------------------------------------------------- upload


@dataclasses.dataclass
class PushResult:
    export: Export
    repo_id: str
    revision: str | None
    private: bool
    uploaded: bool
    url: str | None = None


def _network_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    errors: list[type[BaseException]] = [HfHubHTTPError, OfflineModeIsEnabled, OSError, TimeoutError]
    for module, name in (("httpx", "HTTPError"), ("httpx2", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _explain(error: BaseException, repo_id: str, token: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set; unset it to upload"
    status = (
        getattr(getattr(error, "response", None), "status_code", None) if isinstance(error, HfHubHTTPError) else None
    )
    if status == 401:
        reason = "the Hub rejected the token (401); log in again with `hf auth login` or fix HF_TOKEN"
    elif status == 403:
        reason = f"the token may not write to {repo_id.split('/')[0]}/ (403); use a token with write access to it"
    else:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no message'}"
    return reason.replace(token, REDACTED) if token else reason


def upload(
    export: Export, repo_id: str, *, private: bool = False, revision: str | None = None, token: str | None = None
) -> str:
    """create_repo (exist_ok) + the branch if needed + ONE upload_folder commit; returns the commit URL."""
    from huggingface_hub import HfApi

    token = token or _token()
    if not token:
        raise PushError(
            _login_hint(
                f"No Hugging Face token found, so nothing was uploaded; the export in {export.path} is complete."
            )
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=export.path,
            repo_type="model",
            revision=revision,
            commit_message=f"Upload {export.kind} exported by vitzoo",
        )
    except _network_errors() as error:
        retry = f"vitzoo push {export.path} --repo-id {repo_id}" + (f" --revision {revision}" if revision else "")
        raise PushError(
            f"upload to {repo_id} failed: {_explain(error, repo_id, token)}. Nothing was committed (one commit per "
            f"push); the export in {export.path} is intact. Retry with `{retry}`."
        ) from None
    return str(getattr(commit, "commit_url", None) or commit)


def is_export(path: str) -> bool:
    """A folder written by export_model (pushed again as it is, without re-exporting)."""
    meta_path = os.path.join(path, VITZOO_FILE)
    if not (os.path.isfile(os.path.join(path, CARD_FILE)) and os.path.isfile(meta_path)):
        return False
    return "hub_repo_id" in _read_json(meta_path)


def push(
    path: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    export_dir: str | os.PathLike | None = None,
    echo: Callable[[str], None] = print,
) -> PushResult:
    """Export `path` (a run or model folder) and upload it to `repo_id` in one commit.

    `dry_run` exports and lists the files without any network call. An existing export folder
    (a retry) is uploaded as it is.
    """
    check_repo_id(repo_id)
    path = os.fspath(path)
    if os.path.isdir(path) and is_export(path) and export_dir is None:
        made_for = _read_json(os.path.join(path, VITZOO_FILE)).get("hub_repo_id")
        if made_for != repo_id:
            raise BadInputError(
                f"{path} was exported for {made_for} (its card names that repo); push the run or model folder "
                f"to export it again for {repo_id}"
            )
        export = _existing_export(path)
        echo(f"{path} is an export already; uploading it as it is")
    else:
        export = export_model(path, repo_id, export_dir)
        echo(f"exported {export.kind} to {export.path}:")
    echo(_listing(export))
    where = f"{repo_id}" + (f" (branch {revision})" if revision else "") + (" [private]" if private else "")
    if dry_run:
        echo(f"dry run: would upload these {len(export.files)} files to {where} in one commit; nothing uploaded.")
        return PushResult(export, repo_id, revision, private, uploaded=False)
    token = _token()
    if not token:
        raise PushError(
            _login_hint(
                f"No Hugging Face token found, so nothing was uploaded; the export in "
                f"{export.path} is complete (push that folder once logged in)."
            )
        )
    echo(f"uploading {len(export.files)} files ({_size(export.total_bytes)}) to {where} ...")
    url = upload(export, repo_id, private=private, revision=revision, token=token)
    echo(f"done: https://huggingface.co/{repo_id}" + (f"/tree/{revision}" if revision else "") + f" (commit {url})")
    return PushResult(export, repo_id, revision, private, uploaded=True, url=url)


def push_run(output_dir: str, repo_id: str, private: bool = False, revision: str | None = None) -> str | None:
    """What a recipe's --push-to-hub calls at the end of training: export + upload; the commit URL."""
    return push(output_dir, repo_id, private=private, revision=revision).url


def _existing_export(path: str) -> Export:
    meta = _read_json(os.path.join(path, VITZOO_FILE))
    files = sorted(
        (os.path.relpath(os.path.join(root, name), path), os.path.getsize(os.path.join(root, name)))
        for root, _, names in os.walk(path)
        for name in names
    )
    return Export(path=os.path.abspath(path), kind=detect_kind(meta), files=files)


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _listing(export: Export) -> str:
    width = max(len(name) for name, _ in export.files)
    lines = [f"  {name.ljust(width)}  {_size(size):>9}" for name, size in export.files]
    lines.append(f"  {'total'.ljust(width)}  {_size(export.total_bytes):>9}")
    return "\n".join(lines)
