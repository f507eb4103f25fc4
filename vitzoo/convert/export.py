"""`convert(src, to, output)`: a checkpoint from one library, saved in the other's own format.

transformers: `save_pretrained` (safetensors) + `preprocessor_config.json` + `vitzoo.json`.
timm: `timm.models.save_for_hf` (model.safetensors + config.json whose pretrained cfg carries the
spec's preprocessing) + `vitzoo.json`, so that both
`timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=DIR/model.safetensors), **model_args)`
and `vitzoo.load(DIR)` load it. The folder is written beside the target and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import torch
from torch import nn

from vitzoo import registry
from vitzoo.backends.timm_backend import architecture_from_timm
from vitzoo.convert.keymaps import CONVERTIBLE_FAMILIES
from vitzoo.convert.models import (
    family_for_timm_name,
    preprocessing_from_timm,
    set_layer_norm_eps,
    timm_data_config,
    timm_labels,
    to_timm,
    to_transformers,
)
from vitzoo.errors import BadInputError, UnknownModelError
from vitzoo.images import Preprocessor
from vitzoo.io import CONVERTED, atomic_directory, check_folder
from vitzoo.registry import ModelSpec

TARGETS = ("transformers", "timm")
TIMM_DEFAULT_EPS = 1e-6


@dataclasses.dataclass
class Source:
    """A loaded model to convert, with what is known about it."""

    model: nn.Module
    spec: ModelSpec
    library: str  # "timm" | "transformers"
    task: str
    id2label: dict[int, str] | None
    description: str  # for vitzoo.json and messages
    pretrained: bool


def spec_for_timm_model(name: str, model: nn.Module) -> ModelSpec:
    """A spec for a timm model outside the registry: family from its arch name, architecture
    read from the module, preprocessing from its pretrained cfg."""
    import timm.data

    family, _distilled = family_for_timm_name(name)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    return ModelSpec(
        name=name.split(".")[0],
        family=family,
        hub_id=name,
        timm_name=name,
        architecture=architecture_from_timm(model),
        preprocessing=preprocessing_from_timm(timm.data.resolve_data_config({}, model=model)),
        pretraining="unknown",
        pretrained_on="unknown",
        num_classes=getattr(model, "num_classes", 0),
        license=cfg.get("license") or "unknown",
    )


def _timm_num_classes(name: str) -> int:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:
        cfg = None
    if cfg is None or cfg.num_classes is None:
        return 1000
    return cfg.num_classes


def load_source(src: str | os.PathLike, to: str, scratch: bool = False) -> Source:
    """The model `src` names, from the library that is not `to`."""
    from vitzoo.backends import timm_backend
    from vitzoo.zoo import load

    if to not in TARGETS:
        raise BadInputError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    other = "timm" if to == "transformers" else "transformers"
    src = os.fspath(src)
    if os.path.isdir(src) and timm_backend.is_timm_folder(src):
        if to == "timm":
            raise BadInputError(f"{src} already holds a timm model; convert it --to transformers")
        return _timm_folder_source(src)
    if os.path.isdir(src):
        zoo = load(src)
        if zoo.backend == to:
            raise BadInputError(f"{src} already holds a {to} model; convert it --to {other}")
        spec = zoo.spec
        if spec.timm_only:  # a timm folder saved without vitzoo.json
            spec = spec_for_timm_model(spec.timm_name or spec.name, zoo.model)
        return Source(zoo.model, spec, zoo.backend, zoo.task, zoo.id2label, f"{zoo.backend} folder {src}", True)
    if registry.is_registered(src):
        spec = registry.get_spec(src)
        if spec.family not in CONVERTIBLE_FAMILIES:
            raise BadInputError(f"{src} ({spec.family}) has no timm <-> transformers converter")
        if other == "timm" and spec.timm_name is None:
            raise BadInputError(f"{src} has no timm equivalent to convert from; convert it --to timm instead")
        zoo = load(src, backend=other, pretrained=not scratch)
        where = spec.timm_name if other == "timm" else spec.hub_id
        return Source(zoo.model, spec, other, zoo.task, zoo.id2label, f"{other} {where}", not scratch)
    if timm_backend.is_timm_name(src):
        if to == "timm":
            raise BadInputError(f"{src} is a timm model already; convert it --to transformers")
        model = timm_backend.create(
            src.split(".")[0] if scratch else src,
            spec=None,
            num_classes=_timm_num_classes(src),
            pretrained=not scratch,
            config_overrides={},
            image_size=None,
        )
        spec = spec_for_timm_model(src, model)
        task = "classification" if spec.num_classes else "features"
        return Source(model, spec, "timm", task, timm_labels(model, spec), f"timm {src}", not scratch)
    close = registry.closest_names(src)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {src!r}: not a registered name, a local folder, or a timm model.{hint}")


def _timm_folder_source(path: str, restore_eps: bool = True) -> Source:
    """A timm folder (save_for_hf), rebuilt with the model_args its config.json records.

    `restore_eps`: give the LayerNorms the eps of the model it was converted from (vitzoo.json),
    which timm's config cannot record."""
    import timm

    from vitzoo.zoo import VITZOO_FILE, resolve_labels

    with open(os.path.join(path, "config.json")) as handle:
        config = json.load(handle)
    meta: dict[str, Any] = {}
    if os.path.isfile(os.path.join(path, VITZOO_FILE)):
        with open(os.path.join(path, VITZOO_FILE)) as handle:
            meta = json.load(handle)
    arch = config["architecture"]
    num_classes = int(config.get("num_classes", 0))
    kwargs = {**config.get("model_args", {}), "num_classes": num_classes}
    weights = os.path.join(path, "model.safetensors")
    if not os.path.isfile(weights):
        raise BadInputError(f"{path} has no model.safetensors")
    try:
        model = timm.create_model(
            arch, pretrained=True, pretrained_cfg_overlay={"file": weights, "num_classes": num_classes}, **kwargs
        ).eval()
    except RuntimeError as error:
        raise BadInputError(f"{path}: the weights do not fit timm's {arch}: {str(error).splitlines()[0]}") from None
    eps = (meta.get("converted_from") or {}).get("layer_norm_eps")
    if restore_eps and eps is not None:
        set_layer_norm_eps(model, float(eps))
    if meta.get("spec"):
        spec = ModelSpec.from_dict(meta["spec"])
    else:
        spec = spec_for_timm_model(arch, model)
    labels = {int(k): v for k, v in meta["id2label"].items()} if meta.get("id2label") else None
    if labels is None and num_classes:
        names = config.get("label_names")
        labels = resolve_labels(num_classes, names) if names else timm_labels(model, spec)
    task = "classification" if num_classes else "features"
    return Source(model, spec, "timm", task, labels, f"timm folder {path}", True)


def _reload(folder: str, to: str, target: nn.Module, spec: ModelSpec) -> nn.Module:
    if to == "timm":
        return _timm_folder_source(folder, restore_eps=False).model
    from vitzoo.backends.hf_backend import quiet_transformers

    with quiet_transformers():
        return type(target).from_pretrained(folder, **registry.get_family(spec.family).init_kwargs(target)).eval()


def _random_batch(model: nn.Module, spec: ModelSpec) -> torch.Tensor:
    size = spec.preprocessing.input_size if spec.architecture is None else spec.architecture.image_size
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, size, size, generator=generator)


def max_output_difference(source: Source, target: nn.Module) -> float:
    """Largest absolute difference of the source's and the converted model's outputs
    (logits, or features for models without a head) on a fixed random batch."""
    from vitzoo.zoo import ZooModel

    other = "transformers" if source.library == "timm" else "timm"
    # in fp32 whatever this machine's default: the difference is the conversion's, not rounding's
    a = ZooModel(source.model, source.spec, task=source.task, backend=source.library, pretrained=True, precision="fp32")
    b = ZooModel(target, source.spec, task=source.task, backend=other, pretrained=True, precision="fp32")
    pixels = _random_batch(source.model, a.spec)
    with torch.no_grad():
        if source.task == "classification":
            return float((a.logits(pixels) - b.logits(pixels)).abs().max())
        return float((a.features(pixels) - b.features(pixels)).abs().max())


def _destination(src: str, overwrite: bool) -> dict[str, Any]:
    # a run folder is read through its model/, which the output must not replace either
    reading = (src, os.path.join(src, "model")) if os.path.isdir(src) else ()
    return dict(overwrite=overwrite, reading=reading, option="--output", overwrite_hint="--overwrite")


def check_output(src: str, output: str, overwrite: bool = False) -> None:
    """Refuse an `output` that convert would not write (a BadInputError), before anything is loaded."""
    check_folder(output, CONVERTED, **_destination(src, overwrite))


def convert(src: str | os.PathLike, to: str, output: str | os.PathLike, scratch: bool = False,
            overwrite: bool = False) -> dict[str, Any]:
    """Convert `src` (registry name, timm name or folder) to `to` and save it to `output`.

    `output` must be new, empty, or an earlier convert output (replaced); `overwrite` also replaces
    another vitzoo output (a saved model folder, a Hub export). A folder holding files vitzoo did not
    write, and one equal to or holding the source folder, are refused before anything is loaded, even
    with `overwrite` (`vitzoo.io.check_folder`).

    Returns a summary: the output folder, the classes, the largest output difference between
    source and converted model on a random batch, and notes.
    """
    from vitzoo.version import __version__
    from vitzoo.zoo import VITZOO_FILE, ZooModel

    src, output = os.fspath(src), os.fspath(output)
    check_output(src, output, overwrite)
    source = load_source(src, to, scratch)
    notes: list[str] = []
    if to == "transformers":
        target = to_transformers(source.model, source.spec, id2label=source.id2label)
        eps = float(target.config.layer_norm_eps)
    else:
        if source.task == "pretraining":
            source.model, source.task = source.model.base_model, "features"
        target = to_timm(source.model, source.spec)
        eps = float(source.model.config.layer_norm_eps)
    difference = max_output_difference(source, target)
    zoo = ZooModel(
        target, source.spec, task=source.task, backend=to, pretrained=source.pretrained, id2label=source.id2label
    )
    metadata = {
        **zoo.vitzoo_metadata(),
        "vitzoo_version": __version__,
        "converted_from": {"source": source.description, "library": source.library, "layer_norm_eps": eps},
    }
    with atomic_directory(output, CONVERTED, **_destination(src, overwrite)) as tmp:
        if to == "transformers":
            target.save_pretrained(tmp, safe_serialization=True)
            with open(os.path.join(tmp, "preprocessor_config.json"), "w") as handle:
                json.dump(Preprocessor(zoo.spec.preprocessing).to_image_processor_dict(), handle, indent=2)
        else:
            from timm.models import save_for_hf

            model_config: dict[str, Any] = {}
            if source.id2label and len(source.id2label) != 1000:
                model_config["label_names"] = [source.id2label[i] for i in range(len(source.id2label))]
            save_for_hf(
                target,
                tmp,
                model_config=model_config,
                safe_serialization=True,
                data_config=timm_data_config(zoo.spec.preprocessing),
            )
        with open(os.path.join(tmp, VITZOO_FILE), "w") as handle:
            json.dump(metadata, handle, indent=2, default=str)
        # read the folder back as the target library would: it must load, and how close it is gets reported
        reloaded = _reload(tmp, to, target, source.spec)
        saved_difference = max_output_difference(source, reloaded)
    if to == "timm" and eps != TIMM_DEFAULT_EPS:
        notes.append(
            f"layer norm eps {eps:g}: timm.create_model rebuilds this architecture with eps {TIMM_DEFAULT_EPS:g} "
            f"(vitzoo.json records the original); reloaded from the folder, outputs differ by up to "
            f"{saved_difference:.3g} on the random batch"
        )
    return {
        "output": output,
        "source": source.description,
        "source_class": type(source.model).__name__,
        "target": to,
        "target_class": type(target).__name__,
        "timm_architecture": target.pretrained_cfg.get("architecture") if to == "timm" else None,
        "pretrained": source.pretrained,
        "max_abs_difference": difference,
        "saved_max_abs_difference": saved_difference,
        "notes": notes,
    }


def print_summary(summary: dict[str, Any], file=None) -> None:
    file = file or sys.stdout
    weights = "pretrained" if summary["pretrained"] else "RANDOM (--scratch)"
    print(
        f"wrote {summary['output']}: {summary['target']} {summary['target_class']} "
        f"from {summary['source']} ({summary['source_class']}, {weights} weights)",
        file=file,
    )
    print(
        "largest output difference, source vs converted (random batch): "
        f"{summary['max_abs_difference']:.3g} in memory, {summary['saved_max_abs_difference']:.3g} read back from disk",
        file=file,
    )
    for note in summary["notes"]:
        print(f"note: {note}", file=file)
