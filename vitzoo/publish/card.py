"""The model card: what the templates in model_cards/ are given, and the card huggingface_hub renders.

`card_context` computes every fact (the sections themselves come from `card_parts`), `card_data`
the card's YAML metadata (model-index included), `render_card` the `ModelCard` with no token in it.
Templates hold prose and layout only; one per kind of model (see `TEMPLATES`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vitzoo import registry
from vitzoo.publish.card_parts import (
    describe_dataset,
    eval_results,
    hardware,
    hyperparameters,
    labels_text,
    model_reference,
    num_params,
    objective_table,
    preprocessing_text,
    results_table,
    split_texts,
)
from vitzoo.publish.source import (
    KIND_CLASSIFIER,
    KIND_DISTILLED,
    KIND_SELF_SUPERVISED,
    SELF_SUPERVISED_METHODS,
    ModelSource,
    base_spec,
    detect_kind,
    model_spec,
)
from vitzoo.publish.tokens import REDACTED

# the template of each kind, in model_cards/ (installed as the package vitzoo.model_cards)
TEMPLATES = {
    KIND_CLASSIFIER: "classifier.md",
    KIND_DISTILLED: "distilled.md",
    KIND_SELF_SUPERVISED: "self_supervised.md",
}


def card_context(source: ModelSource, repo_id: str, kind: str) -> dict[str, Any]:
    """Everything a template needs, computed here so that templates hold only prose and layout."""
    training = source.training
    spec = model_spec(source)
    base = base_spec(source) or spec
    family = registry.get_family(base.family) if base is not None and not base.timm_only else None
    pretrained = bool(training.get("pretrained", source.meta.get("pretrained", True)))
    args = source.args or {}
    dataset = describe_dataset(training.get("dataset") or args.get("dataset"))
    num_labels, labels = labels_text(source.config)
    arch = spec.architecture if spec is not None else None
    architectures = source.config.get("architectures") or []
    model_class = architectures[0] if architectures else "AutoModel"
    evaluation = (source.results or {}).get("eval") or {}
    teacher = training.get("teacher") or args.get("teacher")
    method = training.get("method") or args.get("method")
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
        "objective_table": objective_table(evaluation),
        "knn_k": evaluation.get("k"),
        "base_name": training.get("base_model") or (spec.name if spec else None),
        "base_reference": model_reference(training.get("base_model") or (spec.name if spec else None)),
        "base": base,
        "base_published": published,
        "family": family,
        "family_label": family.label if family else "vision-transformer",
        "family_title": family.paper_title if family else None,
        "citation": family.citation if family else None,
        "teacher_reference": model_reference(teacher) if isinstance(teacher, str) else None,
        "dataset": dataset,
        "num_labels": num_labels,
        "labels": labels,
        "architecture": arch,
        "num_params": num_params(source.model_dir),
        "image_size": source.meta.get("image_size") or (arch.image_size if arch else None),
        "model_class": model_class,
        "preprocessing": preprocessing_text(spec),
        "hyperparameters": hyperparameters(source, dataset),
        "hardware": hardware(source),
        "results_table": results_table(source),
        "eval_samples": evaluation.get("samples"),
        **split_texts(source),  # eval_split, test_split, test_samples
        "train_samples": ((source.results or {}).get("data") or {}).get("train_samples"),
        "best_epoch": evaluation.get("epoch"),
        "epochs": _epochs(source.results or {}, args),
        "license": _license(base),
    }


def _epochs(results: dict[str, Any], args: dict[str, Any]) -> Any:
    """The run's epochs, or (a --time-budget without --epochs: results.json's epochs is None) what ended it."""
    if results.get("epochs") is None and results.get("time_budget"):
        return f"a run ended by its {results['time_budget']['seconds'] / 60:g}-minute time budget"
    return results.get("epochs") or args.get("epochs")


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
    results = eval_results(source, dataset, context["model_name"])
    return ModelCardData(
        license=context["license"],
        library_name="timm" if source.backend == "timm" else "transformers",
        pipeline_tag="image-classification" if context["is_classifier"] else "image-feature-extraction",
        tags=list(dict.fromkeys(tags)),
        base_model=_base_hub_id(source, context),
        datasets=[dataset["hub_id"]] if dataset["hub_id"] else None,
        metrics=list(dict.fromkeys(r.metric_type for r in results)) or None,
        model_name=context["model_name"] if results else None,
        eval_results=results or None,
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
    base = base_spec(source)
    if base is None or not context["pretrained"]:
        return None
    if source.backend == "timm" and base.timm_name:
        return f"timm/{base.timm_name}"
    return base.hub_id


def template_path(kind: str) -> str:
    """The shipped template of `kind`: model_cards/ in the source tree, installed as `vitzoo.model_cards`."""
    from importlib.resources import files

    return str(files("vitzoo.model_cards").joinpath(TEMPLATES[kind]))


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
