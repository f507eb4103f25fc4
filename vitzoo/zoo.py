"""`vitzoo.load` and `ZooModel`: one interface over every family and both backends."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from vitzoo import hub, registry
from vitzoo.backends import hf_backend, timm_backend
from vitzoo.errors import BadInputError, UnknownModelError, WeightsNotFoundError, looks_like_token, redact_tokens
from vitzoo.families.base import check_task
from vitzoo.images import Preprocessor, check_float_pixels, is_float_pixels, preprocessing_from_image_processor
from vitzoo.io import MODEL_FOLDER, VITZOO_FILE, atomic_directory, is_local_path, read_json
from vitzoo.precision import autocast, dtype_name, resolve_precision
from vitzoo.registry import ModelSpec, Preprocessing, get_family

BACKENDS = ("transformers", "timm")


def resolve_labels(num_labels: int | None, id2label: Mapping[Any, str] | Sequence[str] | None) -> dict[int, str] | None:
    """The label names of a new head, from `num_labels` and/or `id2label` (a dict or a list)."""
    if id2label is None:
        if num_labels is None:
            return None
        if num_labels < 1:
            raise BadInputError(f"num_labels must be at least 1, got {num_labels}")
        return {index: f"LABEL_{index}" for index in range(num_labels)}
    if isinstance(id2label, Mapping):
        try:
            mapping = {int(key): str(value) for key, value in id2label.items()}
        except (TypeError, ValueError):
            raise BadInputError("id2label keys must be class indices (0, 1, ...)") from None
    else:
        mapping = {index: str(value) for index, value in enumerate(id2label)}
    if sorted(mapping) != list(range(len(mapping))) or not mapping:
        raise BadInputError(f"id2label must number its classes 0..N-1 without gaps, got indices {sorted(mapping)}")
    if num_labels is not None and num_labels != len(mapping):
        raise BadInputError(f"num_labels={num_labels} conflicts with id2label, which names {len(mapping)} classes")
    return mapping  # names may repeat (ImageNet-1k names "crane" twice); indices may not


def imagenet_labels() -> dict[int, str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return {index: info.index_to_description(index) for index in range(1000)}


@dataclasses.dataclass
class _Source:
    spec: ModelSpec
    backend: str
    location: str  # Hub id, timm name or folder
    task: str | None = None  # the task saved in a folder, if any
    folder_kind: str | None = None  # "transformers" | "timm" for folders
    id2label: dict[int, str] | None = None  # label names saved in a folder's vitzoo.json
    config: dict[str, Any] | None = None  # a folder's config.json


def _read_model_json(path: str) -> dict[str, Any]:
    """A model folder's JSON file (config.json, vitzoo.json...) as a dict, or one line naming it."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise BadInputError(f"{path} must hold a JSON object, not a {type(data).__name__}; restore it from where the "
                            "model came from, or save the model again")
    return data


def _folder_source(path: str, backend: str | None) -> _Source:
    config_path = os.path.join(path, "config.json")
    run_model = os.path.join(path, "model")
    if not os.path.isfile(config_path) and os.path.isfile(os.path.join(run_model, "config.json")):
        path, config_path = run_model, os.path.join(run_model, "config.json")  # a run folder: its model/
    if not os.path.isfile(config_path):
        raise BadInputError(
            f"{path} has no config.json, so it is not a saved model folder. "
            "Pass the folder written by save_pretrained / a vitzoo run's model/ folder, or a registry name."
        )
    config = _read_model_json(config_path)
    if not (timm_backend.is_timm_config(config) or config.get("model_type")):
        raise BadInputError(
            f"{config_path} names no model_type (a transformers model) and no architecture (a timm model), so it is not "
            "a saved model's config; restore it from where the model came from, or save the model again")
    meta_path = os.path.join(path, VITZOO_FILE)
    meta = _read_model_json(meta_path) if os.path.isfile(meta_path) else {}
    try:
        spec = ModelSpec.from_dict(meta["spec"]) if "spec" in meta else None
        labels = {int(k): str(v) for k, v in meta["id2label"].items()} if meta.get("id2label") else None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise BadInputError(
            f"{meta_path} does not describe a model ({type(error).__name__}: {error}); restore it, or delete it to load "
            "the folder from config.json alone") from None
    if timm_backend.is_timm_config(config):
        spec = spec or _timm_only_spec(config["architecture"])
        if labels is None and config.get("num_classes"):
            labels = resolve_labels(config["num_classes"], config.get("label_names"))
        return _Source(spec, "timm", path, meta.get("task"), "timm", labels, config)
    if backend == "timm":
        raise BadInputError(f"{path} holds a transformers model; load it with backend='transformers'.")
    if spec is None:
        # a folder saved without vitzoo.json: the family that claims its transformers model_type
        family = registry.family_for_model_type(config.get("model_type", ""))
        if family is None:
            raise BadInputError(
                f"{path}: model_type {config.get('model_type')!r} is not a vision transformer vitzoo knows "
                f"(known: {', '.join(registry.known_model_types())})."
            )
        spec = _spec_from_transformers_folder(path, family.name, config)
    return _Source(dataclasses.replace(spec, hub_id=path), "transformers", path, meta.get("task"), "transformers")


def _spec_from_transformers_folder(path: str, family_name: str, config: dict[str, Any]) -> ModelSpec:
    from transformers import AutoConfig

    family = get_family(family_name)
    arch = family.architecture_from_config(AutoConfig.from_pretrained(path))
    prep_path = os.path.join(path, "preprocessor_config.json")
    if os.path.isfile(prep_path):
        preprocessing = preprocessing_from_image_processor(_read_model_json(prep_path))
    else:
        preprocessing = Preprocessing(resize_size=arch.image_size)
    return ModelSpec(
        name=os.path.basename(os.path.normpath(path)),
        family=family_name,
        hub_id=path,
        architecture=arch,
        preprocessing=preprocessing,
        pretraining="unknown",
        pretrained_on="unknown",
        num_classes=len(config.get("id2label") or {})
        if "architectures" in config and any("Classification" in name for name in config["architectures"])
        else 0,
        license="unknown",
    )


def _timm_only_spec(arch: str) -> ModelSpec:
    return ModelSpec(
        name=arch,
        family="timm",
        hub_id=arch,
        timm_name=arch,
        architecture=None,
        preprocessing=Preprocessing(resize_size=224),  # replaced by timm's own config once built
        pretraining="unknown",
        pretrained_on="unknown",
        license="unknown",
    )


def _resolve(name_or_path: str | os.PathLike, backend: str | None, revision: str | None) -> _Source:
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return _folder_source(name, backend)
    if registry.is_registered(name):
        spec = registry.get_spec(name)
        chosen = backend or ("timm" if get_family(spec.family).no_transformers else "transformers")
        if chosen == "timm" and spec.timm_name is None:
            raise BadInputError(f"{name} has no timm equivalent; use backend='transformers'.")
        return _Source(spec, chosen, spec.timm_name if chosen == "timm" else spec.hub_id)
    if os.sep in name and not os.path.exists(name) and name.count("/") > 1:
        raise BadInputError(f"no such folder: {name}")
    if timm_backend.is_timm_name(name):
        if backend == "transformers":
            raise BadInputError(f"{name} is a timm model name; load it with backend='timm'.")
        return _Source(_timm_only_spec(name), "timm", name)
    if name.count("/") == 1 and not is_local_path(name):
        return _hub_source(name, backend, revision)
    close = registry.closest_names(name)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}: not a registered name, a local folder, or a timm model.{hint} "
        "`vitzoo list` shows every registered name."
    )


def _hub_source(repo_id: str, backend: str | None, revision: str | None) -> _Source:
    """A Hub repository outside the registry, read from the local Hub cache like a folder (its snapshot)."""
    config = hub.cached_file(repo_id, "config.json", revision)
    if config is None:
        where = ("and the Hub is offline (HF_HUB_OFFLINE=1 is set)" if hub.offline() else
                 "and the Hub cannot be reached" if not hub.hub_reachable() else
                 "(vitzoo reads a repository outside its registry from the cache only)")
        raise WeightsNotFoundError(
            f"{repo_id} is a Hub id that is not in the local Hub cache ({hub.cache_dir()}) {where}, and no folder of that "
            f"name exists here; download it where the Hub is reachable (`hf download {repo_id}`), or pass a local folder")
    source = _folder_source(os.path.dirname(config), backend)
    source.spec = dataclasses.replace(source.spec, name=repo_id, hub_id=repo_id)
    return source


def check_device(device: str | torch.device | None) -> torch.device | None:
    """`device` as a torch.device, refused with a clear message when this machine has no such device."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise BadInputError(f"unknown device {str(device)!r} ({error}); use 'cpu', 'cuda', 'cuda:1', 'mps'...") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU on this machine; use device='cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BadInputError(f"device {str(device)!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BadInputError("device 'mps' asked for, but this machine has no Apple GPU; use device='cpu'")
    return device


# overrides that count or measure (layers, heads, widths, pixels), in either library's vocabulary
WHOLE_NUMBER_OVERRIDES = ("_size", "_layers", "_heads", "_dim", "depth")


def parse_overrides(config_overrides: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """"hidden_size=64,num_hidden_layers=4" (or a mapping) as a dict, each text value read as JSON or else kept
    as text. Refused, naming the item (a token in it redacted): an item that is not key=value, and a size, depth
    or count (`WHOLE_NUMBER_OVERRIDES`) that is not a whole number of at least 1."""
    if config_overrides is None:
        return {}
    if isinstance(config_overrides, Mapping):
        items = list(config_overrides.items())
    else:
        items = []
        for item in filter(None, (part.strip() for part in config_overrides.split(","))):
            if "=" not in item:
                raise BadInputError(f"config override {redact_tokens(item)!r} (--config-overrides) must look like "
                                    "key=value, e.g. hidden_size=64")
            items.append(tuple(part.strip() for part in item.split("=", 1)))
    out: dict[str, Any] = {}
    for key, value in items:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        shown = redact_tokens(f"{key}={value}")
        if key.endswith(WHOLE_NUMBER_OVERRIDES):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise BadInputError(f"config override {shown} (--config-overrides) must be a whole number, e.g. {key}=64")
            if value < 1:
                raise BadInputError(f"config override {shown} must be at least 1 (--config-overrides)")
        out[key] = value
    return out


def load(
    name_or_path: str | os.PathLike,
    task: str | None = None,
    num_labels: int | None = None,
    id2label: Mapping[Any, str] | Sequence[str] | None = None,
    pretrained: bool = True,
    backend: str | None = None,
    revision: str | None = None,
    device: str | torch.device | None = None,
    image_size: int | None = None,
    config_overrides: str | Mapping[str, Any] | None = None,
    precision: str = "auto",
) -> ZooModel:
    """Load any registered checkpoint, local folder or timm model as a `ZooModel`.

    Args:
        name_or_path: a registry name (`"deit-small"`), a folder written by `save_pretrained`
            or a vitzoo run, or a timm model name.
        task: "classification", "features" or "pretraining"; by default the checkpoint's own:
            classification where it carries a head, features otherwise.
        num_labels / id2label: put a fresh classification head with these classes on any
            checkpoint (self-supervised ones included).
        pretrained: False builds random weights from the registry's architecture (nothing is
            read from the Hub); said out loud as `ZooModel.pretrained`.
        backend: "transformers" (default) or "timm", for checkpoints that exist in both.
        image_size: another input size; position embeddings are interpolated.
        config_overrides: architecture changes for a random-init model, as a dict or as
            transformers' examples spell them: "hidden_size=64,num_hidden_layers=4".
        precision: what predict, embed, attention_maps, logits and features compute in, under
            torch.autocast on the model's device: "auto" (bf16 on GPUs that support it and on
            CPUs with native bf16, AVX512-BF16 or AMX; fp32 elsewhere), "fp32" (no autocast),
            "bf16", or "fp16" (GPUs only: refused on CPUs, where bf16 is as fast and safer; see
            `vitzoo.precision.resolve_precision`). Results are fp32 whatever it is; the weights
            stay fp32. `ZooModel.precision` changes it later; `precision_agreement` measures it.

    Example:
        >>> model = vitzoo.load("deit-small")  # doctest: +SKIP
        >>> model.predict("cat.jpg", top_k=5)  # doctest: +SKIP
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise BadInputError(f"the model must be named by a str (registry name, Hub id, folder or timm name) or a path, "
                            f"got {type(name_or_path).__name__} {name_or_path!r}")
    if backend is not None and backend not in BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    for what, text in (("the model's name", os.fspath(name_or_path)), ("revision", revision or "")):
        if looks_like_token(text):  # before it reaches a message or a Hub URL
            raise BadInputError(f"{what} looks like a Hugging Face access token (hf_...), which it must not be: it was "
                                "neither used nor sent anywhere; vitzoo reads a token from HF_TOKEN or `hf auth login`")
    if task is not None:
        check_task(task)
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise BadInputError(f"image_size must be a positive number of pixels, got {image_size!r}")
    device = check_device(device)
    resolve_precision(precision, device or "cpu")  # a bad precision is refused before anything loads
    source = _resolve(name_or_path, backend, revision)
    spec = source.spec
    labels = resolve_labels(num_labels, id2label)
    if labels is None and source.folder_kind == "timm":
        labels = source.id2label
    overrides = parse_overrides(config_overrides)
    for key, value in overrides.items():
        if (key.endswith(("_size", "_layers", "_heads", "_depth")) or key == "patch_size") and isinstance(value, (int, float)) \
                and not isinstance(value, bool) and value < 1:
            raise BadInputError(f"config override {key}={value} must be at least 1")
    if overrides and pretrained:
        raise BadInputError(
            "config_overrides change the architecture, so they need random weights (pretrained=False / --scratch)"
        )
    if task is None:
        task = source.task or ("classification" if spec.num_classes or labels else "features")
    if task == "classification" and labels is None and not pretrained and spec.num_classes:
        labels = imagenet_labels() if spec.num_classes == 1000 else resolve_labels(spec.num_classes, None)
    patch_size = overrides.get("patch_size", spec.architecture.patch_size if spec.architecture else None)
    if image_size is not None and patch_size is not None and image_size % patch_size:
        raise BadInputError(f"image size {image_size} is not a multiple of {spec.name}'s patch size {patch_size}")

    if source.backend == "timm":
        model = _load_timm(source, task, labels, pretrained, overrides, image_size)
    elif pretrained:
        model = hf_backend.load(
            spec, task, source=source.location, id2label=labels, revision=revision, image_size=image_size
        )
    else:
        model = hf_backend.build(spec, task, id2label=labels, config_overrides=overrides, image_size=image_size)

    if device is not None:
        model.to(device)
    return ZooModel(
        model, spec, task=task, backend=source.backend, pretrained=pretrained, id2label=labels, image_size=image_size,
        precision=precision,
    )


def _load_timm(
    source: _Source,
    task: str,
    labels: dict[int, str] | None,
    pretrained: bool,
    overrides: dict[str, Any],
    image_size: int | None,
) -> torch.nn.Module:
    spec = source.spec
    if task == "pretraining":
        raise BadInputError("timm models have no pretraining heads here; use backend='transformers'.")
    arch_spec = None if spec.timm_only else spec
    checkpoint = None
    arch = spec.timm_name or spec.name
    if source.folder_kind == "timm":
        arch = source.config["architecture"]
        # the folder's own architecture arguments (e.g. BEiT's shared relative position bias) win
        model_args = {k: v for k, v in source.config.get("model_args", {}).items() if k != "num_classes"}
        overrides = {**model_args, **overrides}
        if pretrained:
            hub.ensure_weights(source.location, spec.name)
            checkpoint = hub.local_weights(source.location)
    if task == "classification":
        num_classes = len(labels) if labels is not None else spec.num_classes
        if num_classes == 0:
            raise BadInputError(
                f"{spec.name} carries no classification head; pass num_labels (or id2label) for a new one."
            )
    else:
        num_classes = 0
    return timm_backend.create(
        arch,
        spec=arch_spec,
        num_classes=num_classes,
        pretrained=pretrained,
        config_overrides=overrides,
        image_size=image_size,
        checkpoint_file=checkpoint,
    )


class ZooModel:
    """A loaded model with its spec and preprocessing, hiding each family's and backend's quirks.

    `.model` is the real transformers or timm module: train it, compile it, wrap it with
    Accelerate. The methods below take raw images (paths, PIL, numpy, tensors, any mode) and
    compute in `precision` (see `load`), returning fp32.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        *,
        task: str,
        backend: str,
        pretrained: bool,
        id2label: dict[int, str] | None = None,
        image_size: int | None = None,
        precision: str = "auto",
    ) -> None:
        self.model = model.eval()
        self.precision = precision
        self.task = task
        self.backend = backend
        self.pretrained = pretrained
        self.family = get_family(spec.family)
        if backend == "timm":
            architecture = _timm_architecture(model, spec)
            if spec.timm_only:
                preprocessing = timm_backend.preprocessing_of(model)
            else:
                preprocessing = spec.preprocessing
        else:
            architecture = self.family.architecture_from_config(model.config)
            preprocessing = spec.preprocessing
        input_size = image_size or (
            preprocessing.input_size
            if self.family.dynamic_image_size or architecture is None
            else architecture.image_size
        )
        self.spec = dataclasses.replace(
            spec, architecture=architecture, preprocessing=preprocessing.for_input_size(input_size)
        )
        self.preprocessor = Preprocessor(self.spec.preprocessing)
        if id2label is None and task == "classification":
            id2label = _model_labels(model, backend)
        self.id2label = id2label

    # ------------------------------------------------------------------ properties
    @property
    def image_size(self) -> int:
        return self.spec.preprocessing.input_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def precision(self) -> str:
        """What inference computes in: "auto", "fp32", "bf16" or "fp16" (see `load`); settable."""
        return self._precision

    @precision.setter
    def precision(self, precision: str) -> None:
        resolve_precision(precision, self.device)  # refused at once when this device cannot run it
        self._precision = precision

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype inference computes in: `precision` resolved on the model's current device."""
        return resolve_precision(self._precision, self.device)

    def to(self, device: str | torch.device) -> ZooModel:
        device = check_device(device)
        resolve_precision(self._precision, device)
        self.model.to(device)
        return self

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device.type, self.compute_dtype)

    def __repr__(self) -> str:
        weights = "pretrained" if self.pretrained else "random init"
        return f"ZooModel({self.spec.name}, family={self.spec.family}, task={self.task}, backend={self.backend}, {weights})"

    # ------------------------------------------------------------------ inference
    def preprocess(self, images: Any) -> torch.Tensor:
        """Images of any kind, size and mode to a normalised float batch (Bx3xSxS) on the model's device.

        What `predict`, `embed` and `attention_maps` take: a path, a PIL image, a numpy array or tensor
        of one image, a list of these, or a batch (a BxCxHxW tensor, a BxHxWxC array). Integer pixels
        are 0..255 (uint16: 0..65535); float pixels, in a tensor or array of any shape, are always
        values in [0, 1] and are resized and normalised like any image, so a float batch and the same
        images as uint8 give the same result. A tensor that is already normalised is no image: pass it
        to `logits`, `features` or `attention` instead.
        """
        return self.preprocessor(images, device=self.device)

    def _chunks(self, images: Any, batch_size: int) -> Iterator[Any]:
        """`images` in groups of at most `batch_size`, so memory stays flat in the number of images; none
        for an empty list or batch. Float pixels are checked whole first, before any forward pass."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise BadInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if is_float_pixels(images):
            check_float_pixels(images)
        if isinstance(images, (list, tuple)) or (isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4):
            for start in range(0, len(images), batch_size):
                yield images[start : start + batch_size]
        else:
            yield images

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Class scores (fp32) for a preprocessed batch (for distilled DeiT: both heads averaged)."""
        if self.task != "classification":
            raise BadInputError(
                f"{self.spec.name} was loaded with task={self.task!r}; load it with task='classification' to classify"
            )
        pixel_values = pixel_values.to(self.device)
        with self._autocast():
            if self.backend == "timm":
                logits = self.model(pixel_values)
            else:
                kwargs = self.family.forward_kwargs(pixel_values, self.model.config)
                logits = self.model(pixel_values=pixel_values, **kwargs).logits
        return logits.float()

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """One embedding (fp32) per image of a preprocessed batch, pooled by the family's convention."""
        pixel_values = pixel_values.to(self.device)
        with self._autocast():
            if self.backend == "timm":
                features = self.model.forward_head(self.model.forward_features(pixel_values), pre_logits=True)
            else:
                outputs = self.family.encode(self.model.base_model, pixel_values)
                features = self.family.pool(outputs, self.spec.architecture)
        return features.float()

    @torch.no_grad()  # not inference_mode: BEiT caches index tensors that training reuses later
    def predict(self, images: Any, top_k: int = 5, batch_size: int = 32) -> list[list[dict[str, Any]]]:
        """Top-k labels with probabilities, one list per image (none for no images); `batch_size` images
        per forward pass. `images` as `preprocess` takes them: float pixels are values in [0, 1]."""
        if not isinstance(top_k, int) or top_k < 1:
            raise BadInputError(f"top_k must be a positive integer, got {top_k!r}")
        labels = self.id2label or {}
        results: list[list[dict[str, Any]]] = []
        for chunk in self._chunks(images, batch_size):
            probabilities = self.logits(self.preprocess(chunk)).softmax(dim=-1)
            scores, indices = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
            results.extend(
                [{"label": labels.get(int(i), f"LABEL_{int(i)}"), "index": int(i), "score": float(s)}
                 for s, i in zip(row_s.tolist(), row_i.tolist())]
                for row_s, row_i in zip(scores.cpu(), indices.cpu())
            )
        return results

    @torch.no_grad()  # not inference_mode: BEiT caches index tensors that training reuses later
    def embed(self, images: Any, batch_size: int = 32) -> torch.Tensor:
        """One vector per image (CLS for ViT/DeiT/DINO/MAE/DINOv2, mean of patches for BEiT,
        mean of CLS and distillation tokens for distilled DeiT), B x dim (0 x dim for no images);
        `batch_size` images per forward pass. `images` as `preprocess` takes them: float pixels are
        values in [0, 1]; `features` takes an already-normalised batch."""
        vectors = [self.features(self.preprocess(chunk)) for chunk in self._chunks(images, batch_size)]
        return torch.cat(vectors) if vectors else torch.empty(0, self._embedding_size(), device=self.device)

    @torch.no_grad()  # not inference_mode: BEiT caches index tensors that training reuses later
    def attention_maps(self, images: Any, batch_size: int = 32) -> torch.Tensor:
        """Last-layer attention of the CLS token to every patch, per head: B x heads x H/p x W/p (B = 0
        for no images). `images` as `preprocess` takes them: float pixels are values in [0, 1];
        `attention` takes an already-normalised batch."""
        maps = [self.attention(self.preprocess(chunk)) for chunk in self._chunks(images, batch_size)]
        if maps:
            return torch.cat(maps)
        grid = self.image_size // self.spec.architecture.patch_size
        return torch.empty(0, self.spec.architecture.num_heads, grid, grid, device=self.device)

    def _embedding_size(self) -> int:
        if self.backend == "timm":
            return self.model.num_features
        return self.spec.architecture.hidden_size

    def attention(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`attention_maps` (fp32) of a preprocessed batch."""
        pixel_values = pixel_values.to(self.device)
        prefix = self._num_prefix_tokens()
        with self._autocast():
            if self.backend == "timm":
                attention = self._timm_last_attention(pixel_values)
            else:
                with _eager_attention(self.model):
                    outputs = self.family.encode(self.model.base_model, pixel_values, output_attentions=True)
                attention = outputs.attentions[-1]
        cls_attention = self.family.patch_attention(attention, prefix)  # CLS row, prefix tokens skipped
        grid_h = pixel_values.shape[-2] // self.spec.architecture.patch_size
        grid_w = pixel_values.shape[-1] // self.spec.architecture.patch_size
        return cls_attention.reshape(cls_attention.shape[0], cls_attention.shape[1], grid_h, grid_w).float()

    def _num_prefix_tokens(self) -> int:
        if self.backend == "timm":
            return getattr(self.model, "num_prefix_tokens", 1)
        return self.family.num_prefix_tokens(self.spec.architecture)

    def _timm_last_attention(self, pixel_values: torch.Tensor) -> torch.Tensor:
        attention_module = self.model.blocks[-1].attn
        captured: list[torch.Tensor] = []
        hook = attention_module.attn_drop.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
        fused = attention_module.fused_attn
        attention_module.fused_attn = False
        try:
            self.model.forward_features(pixel_values)
        finally:
            attention_module.fused_attn = fused
            hook.remove()
        return captured[-1]

    # ------------------------------------------------------------------ saving
    def vitzoo_metadata(self) -> dict[str, Any]:
        from vitzoo.version import __version__

        spec = dataclasses.asdict(self.spec) if self.spec.timm_only else self.spec.to_dict()
        # the registry's facts are about the released checkpoint: keep them apart, and say what this
        # model is (its own size and classes; no pretraining when it started from random weights)
        released = {key: spec.get(key) for key in ("name", "hub_id", "timm_name", "pretrained_on", "num_params",
                                                   "num_classes", "published") if key in spec}
        num_classes = len(self.id2label) if self.id2label else 0
        spec.update(num_params=self.num_params, num_classes=num_classes, has_imagenet_head=num_classes == 1000)
        if not self.pretrained:
            spec["pretrained_on"] = "nothing: trained from random weights"
        return {
            "vitzoo_version": __version__,
            "spec": spec,
            "released_checkpoint": released,
            "task": self.task,
            "backend": self.backend,
            "pretrained": self.pretrained,
            "image_size": self.image_size,
            "id2label": self.id2label,
        }

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        extra_metadata: Mapping[str, Any] | None = None,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        overwrite: bool = False,
    ) -> str:
        """Write a folder that `vitzoo.load(dir)` and (transformers backend) `from_pretrained` load.

        `state_dict` (same keys as this model's) saves other weights of this architecture, such
        as an EMA or a teacher, without loading them into `self.model`. The folder appears
        complete or not at all: it is written beside the target and renamed.

        `directory` must be new, empty, or a model folder saved here before (saving again replaces
        it). `overwrite=True` also replaces another vitzoo output (a `vitzoo convert` folder, a Hub
        export). A folder holding any file vitzoo did not write is refused even with `overwrite`, so
        that nothing of yours is deleted or left mixed with the model; so are the current folder, the
        home folder and any folder holding them (`vitzoo.io.check_folder`).
        """
        directory = os.fspath(directory)
        with atomic_directory(directory, MODEL_FOLDER, overwrite=overwrite, overwrite_hint="overwrite=True") as tmp:
            if self.backend == "timm":
                from safetensors.torch import save_file
                from timm.models import save_for_hf
                from timm.models._hub import save_config_for_hf  # what save_for_hf writes beside the weights

                if state_dict is None:
                    save_for_hf(self.model, tmp, safe_serialization=True)
                else:  # the given weights only: the live module may be sharded (FSDP) or hold others
                    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
                    save_file(tensors, os.path.join(tmp, "model.safetensors"))
                    save_config_for_hf(self.model, os.path.join(tmp, "config.json"))
            else:
                self.model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
                with open(os.path.join(tmp, "preprocessor_config.json"), "w") as handle:
                    json.dump(self.preprocessor.to_image_processor_dict(), handle, indent=2)
            with open(os.path.join(tmp, VITZOO_FILE), "w") as handle:
                json.dump({**self.vitzoo_metadata(), **(extra_metadata or {})}, handle, indent=2, default=str)
        return directory


def _model_labels(model: torch.nn.Module, backend: str) -> dict[int, str] | None:
    if backend == "transformers":
        labels = getattr(model.config, "id2label", None)
        return {int(k): v for k, v in labels.items()} if labels else None
    num_classes = getattr(model, "num_classes", 0)
    if num_classes == 1000:
        return imagenet_labels()
    label_names = getattr(getattr(model, "pretrained_cfg", {}), "get", lambda *_: None)("label_names")
    return dict(enumerate(label_names)) if label_names else None


def _timm_architecture(model: torch.nn.Module, spec: ModelSpec) -> registry.Architecture | None:
    """A timm model's architecture as built (overrides, image size); one that is not a vision
    transformer (a CNN teacher) keeps the spec's. The layer-scale init is the spec's."""
    if not timm_backend.is_vision_transformer(model):
        return spec.architecture
    arch = timm_backend.architecture_from_timm(
        model, default_image_size=spec.architecture.image_size if spec.architecture else None
    )
    return dataclasses.replace(arch, layer_scale_init=spec.architecture.layer_scale_init if spec.architecture else None)


@contextlib.contextmanager
def _eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Attention weights need the eager kernel; SDPA (the default) is restored afterwards."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


@dataclasses.dataclass(frozen=True)
class PrecisionAgreement:
    """What computing in `precision` instead of fp32 changes on some images (see `precision_agreement`)."""

    precision: str  # as asked, "auto" included
    compute_dtype: str  # what it computed in on this machine: "fp32", "bf16" or "fp16"
    images: int
    top1_agreement: float | None  # share of images with the same top-1 class; None without a classification head
    max_abs_logit_diff: float | None  # None without a classification head
    max_abs_embedding_diff: float


@torch.no_grad()  # not inference_mode: BEiT caches index tensors that training reuses later
def precision_agreement(zoo: ZooModel, images: Any, precision: str, batch_size: int = 32) -> PrecisionAgreement:
    """The quality cost of a precision, measured: `images` (anything `predict` takes) run through `zoo` in
    fp32 and in `precision`, each batch preprocessed once for both. Returns the share of images whose top-1
    class agrees and the largest absolute difference of a logit and of an embedding value; `zoo.precision`
    is left as it was.

    Example:
        >>> precision_agreement(vitzoo.load("deit-small"), paths, "bf16").top1_agreement  # doctest: +SKIP
        0.995
    """
    compute_dtype = dtype_name(resolve_precision(precision, zoo.device))
    classifies = zoo.task == "classification"
    kept = zoo.precision
    count = agreeing = 0
    logit_diff = embedding_diff = 0.0
    try:
        for chunk in zoo._chunks(images, batch_size):
            pixels = zoo.preprocess(chunk)
            outputs = []
            for name in ("fp32", precision):
                zoo.precision = name
                outputs.append((zoo.logits(pixels) if classifies else None, zoo.features(pixels)))
            (reference_logits, reference_features), (logits, features) = outputs
            count += pixels.shape[0]
            embedding_diff = max(embedding_diff, float((features - reference_features).abs().max()))
            if classifies:
                agreeing += int((logits.argmax(dim=-1) == reference_logits.argmax(dim=-1)).sum())
                logit_diff = max(logit_diff, float((logits - reference_logits).abs().max()))
    finally:
        zoo.precision = kept
    if not count:
        raise BadInputError("precision_agreement needs at least one image")
    return PrecisionAgreement(
        precision=precision,
        compute_dtype=compute_dtype,
        images=count,
        top1_agreement=agreeing / count if classifies else None,
        max_abs_logit_diff=logit_diff if classifies else None,
        max_abs_embedding_diff=embedding_diff,
    )
