"""Frozen features: extraction from any model and data, a cache keyed on everything that changes
them (the weights' content included), and `split_features`, the one way vitzoo's evaluation paths
(`vitzoo evaluate`, `compare --protocol knn|linear`, DINO's k-NN monitor) get the train and eval
features of a dataset."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from vitzoo.errors import BadInputError
from vitzoo.io import atomic_write_bytes
from vitzoo.precision import dtype_name

IMAGE_KEYS = ("pixel_values", "image", "images", "img", "pixels")
LABEL_KEYS = ("labels", "label", "targets", "target", "y")
PROGRESS_MIN_BATCHES = 10  # progress=None shows a bar from this many batches on


# --------------------------------------------------------------------------- extraction
def _is_map_dataset(data: Any) -> bool:
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(
        data, (torch.utils.data.DataLoader, torch.Tensor, np.ndarray, str, bytes)
    )


def _split_example(example: Any) -> tuple[Any, Any]:
    """(images, labels) of a batch or example: a dict, an (image, label) pair or images alone."""
    if isinstance(example, Mapping):
        image_key = next((key for key in IMAGE_KEYS if key in example), None)
        if image_key is None:
            raise BadInputError(
                f"cannot find the images in a batch with keys {sorted(example)}; name them one of {IMAGE_KEYS}"
            )
        label_key = next((key for key in LABEL_KEYS if key in example), None)
        return example[image_key], example[label_key] if label_key is not None else None
    if isinstance(example, (tuple, list)) and len(example) == 2:
        return example[0], example[1]
    return example, None


class _Collate:
    """Batches map-style examples; raw images are preprocessed here, i.e. in the loader's workers."""

    def __init__(self, preprocess: Callable[[Any], torch.Tensor] | None) -> None:
        self.preprocess = preprocess

    def __call__(self, examples: list[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        pairs = [_split_example(example) for example in examples]
        images = [image for image, _ in pairs]
        labels = [label for _, label in pairs]
        if all(isinstance(image, torch.Tensor) and image.ndim == 3 and image.is_floating_point() for image in images):
            pixel_values = torch.stack(images)
        else:
            pixel_values = _preprocess(self.preprocess, images)
        if any(label is None for label in labels):
            return pixel_values, None
        return pixel_values, torch.as_tensor([int(label) for label in labels], dtype=torch.long)


def _preprocess(preprocess: Callable[[Any], torch.Tensor] | None, images: Any) -> torch.Tensor:
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point():
        return images  # already a preprocessed batch
    if preprocess is None:
        raise BadInputError(
            "the data holds raw images but the model has no `preprocess`; pass a vitzoo ZooModel "
            "or data that yields preprocessed float batches (B x 3 x H x W)"
        )
    return preprocess(list(images) if isinstance(images, (tuple, list)) else images)


def _batches(data: Any, batch_size: int, num_workers: int, preprocess: Callable[[Any], torch.Tensor] | None) -> tuple[Iterable[Any], int | None]:
    """An iterable of batches over `data` and its length, if known."""
    if isinstance(data, torch.utils.data.DataLoader):
        try:
            return data, len(data)
        except TypeError:  # an iterable dataset without a length
            return data, None
    if _is_map_dataset(data):
        loader = torch.utils.data.DataLoader(
            data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_Collate(preprocess)
        )
        return loader, len(loader)
    if isinstance(data, Iterable):
        return data, None
    raise BadInputError(f"cannot extract features from a {type(data).__name__}; pass a dataset or a DataLoader")


@contextlib.contextmanager
def _eval_mode(module: nn.Module | None) -> Iterator[None]:
    if module is None:
        yield
        return
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def extract_features(
    zoo_model: Any,
    dataset_or_loader: Any,
    batch_size: int = 64,
    *,
    num_workers: int = 0,
    progress: bool | None = None,
    description: str = "features",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Embed every image of a dataset with a frozen model: (features N x D float32 on CPU, labels N).

    Args:
        zoo_model: a `vitzoo.ZooModel` (its `features`, pooled per family, and `preprocess` are
            used), or any object with a `features(pixel_values)` method, or a callable
            pixel_values -> features. It runs on its own device, in eval mode, under
            `torch.no_grad()` (not inference_mode: transformers caches some tensors across calls); its train/eval mode is restored afterwards.
        dataset_or_loader: a `torch.utils.data.DataLoader` (used as is, so keep shuffle off),
            a map-style dataset (batched here with `batch_size` and `num_workers`), or any other
            iterable of ready batches. A batch or example is a dict
            (images under one of `IMAGE_KEYS`, labels under one of `LABEL_KEYS`), an
            (images, labels) pair, or images alone. Images are preprocessed float batches
            (B x 3 x H x W, used as is) or raw images (paths, PIL, arrays), which go through
            the model's `preprocess`.
        batch_size: images per forward pass (ignored for a DataLoader).
        num_workers: loader workers for a map-style dataset (raw images are preprocessed there).
        progress: show a tqdm bar; None shows it from `PROGRESS_MIN_BATCHES` batches on.
        description: the bar's label.

    Returns:
        (features, labels): labels is a LongTensor, or None when the data carries no labels.
    """
    if batch_size < 1:
        raise BadInputError(f"batch_size must be at least 1, got {batch_size}")
    if hasattr(zoo_model, "features"):
        embed = zoo_model.features
    elif callable(zoo_model):
        embed = zoo_model
    else:
        raise BadInputError(f"{type(zoo_model).__name__} has no `features` method and is not callable")
    preprocess = getattr(zoo_model, "preprocess", None)
    module = getattr(zoo_model, "model", zoo_model if isinstance(zoo_model, nn.Module) else None)
    batches, total = _batches(dataset_or_loader, batch_size, num_workers, preprocess)
    show = progress if progress is not None else (total is None or total >= PROGRESS_MIN_BATCHES)

    from tqdm.auto import tqdm

    features: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    missing_labels = False
    with _eval_mode(module), torch.no_grad():  # not inference_mode: BEiT caches index tensors training reuses
        for batch in tqdm(batches, total=total, desc=description, disable=not show, unit="batch"):
            images, batch_labels = _split_example(batch)
            pixel_values = _preprocess(preprocess, images)
            output = embed(pixel_values)
            if output.ndim != 2 or output.shape[0] != pixel_values.shape[0]:
                raise BadInputError(
                    f"the model's features have shape {tuple(output.shape)} for {pixel_values.shape[0]} images; "
                    "expected one vector per image"
                )
            features.append(output.float().cpu())
            if batch_labels is None:
                missing_labels = True
            else:
                labels.append(torch.as_tensor(batch_labels).reshape(-1).long().cpu())
    if not features:
        raise BadInputError("the data holds no images")
    all_labels = None if missing_labels else torch.cat(labels)
    all_features = torch.cat(features)
    if all_labels is not None and all_labels.shape[0] != all_features.shape[0]:
        raise BadInputError(f"{all_features.shape[0]} images but {all_labels.shape[0]} labels")
    return all_features, all_labels


# --------------------------------------------------------------------------- cache
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "features"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A hash of a model's weights (names, shapes and values): features cached for one set of weights
    are never read back for another, such as a model folder trained again in place."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def feature_cache_key(
    model: str, dataset: str, split: str, image_size: int, *, weights: str, **extra: Any
) -> dict[str, Any]:
    """The cache key of one extraction: model, the weights' content (`weights_fingerprint`), dataset,
    split, image size and anything else that changes the features (e.g. ``pooling="mean"``)."""
    return {"model": str(model), "weights": weights, "dataset": str(dataset), "split": str(split),
            "image_size": int(image_size), **extra}


def _cache_path(cache_dir: str | os.PathLike, key: str | Mapping[str, Any]) -> tuple[str, str]:
    if isinstance(key, Mapping):
        canonical = json.dumps(dict(key), sort_keys=True, default=str)
        readable = "_".join(str(value) for value in key.values())
    else:
        canonical = readable = str(key)
    if not canonical:
        raise BadInputError("the feature cache key is empty")
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return os.path.join(os.fspath(cache_dir), f"{_slug(readable)}-{digest}.safetensors"), canonical


def cached_features(
    cache_dir: str | os.PathLike,
    key: str | Mapping[str, Any],
    compute_fn: Callable[[], tuple[torch.Tensor, torch.Tensor | None]],
    *,
    refresh: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`compute_fn()`'s (features, labels), computed once and then read from `cache_dir`.

    The file is ``<cache_dir>/<readable key>-<hash>.safetensors``, holding ``features`` and
    (when not None) ``labels``, with the full key in its metadata. It is written to a temporary
    file and renamed into place, so a crash never leaves a half-written cache. Key it by
    everything that changes the features: `feature_cache_key(model, dataset, split, image_size)`.
    A cache file that cannot be read, or whose stored key differs, is recomputed; so is every
    file with ``refresh=True``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open, save

    path, canonical = _cache_path(cache_dir, key)
    if os.path.isfile(path) and not refresh:
        try:
            with safe_open(path, framework="pt") as handle:
                stored_key = (handle.metadata() or {}).get("key")
            if stored_key == canonical:
                tensors = load_file(path)
                return tensors["features"], tensors.get("labels")
            warnings.warn(f"feature cache {path} holds another key; recomputing", stacklevel=2)
        except (SafetensorError, OSError, KeyError, ValueError) as error:
            warnings.warn(f"feature cache {path} is unreadable ({error}); recomputing", stacklevel=2)
    features, labels = compute_fn()
    if not isinstance(features, torch.Tensor) or (labels is not None and not isinstance(labels, torch.Tensor)):
        raise BadInputError("compute_fn must return (features tensor, labels tensor or None)")
    tensors = {"features": features.detach().cpu().contiguous()}
    if labels is not None:
        tensors["labels"] = labels.detach().cpu().contiguous()
    atomic_write_bytes(path, save(tensors, metadata={"key": canonical}))
    return features, labels




# --------------------------------------------------------------------------- a dataset's splits
def split_features(
    zoo: Any,
    splits: Any,
    *,
    batch_size: int,
    cache_dir: str | os.PathLike | None = None,
    dataset: str = "",
    num_workers: int = 0,
    progress: bool = False,
    seed: int | None = None,
    **key: Any,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (features, labels), "eval": (...)} of a `vitzoo.data.Splits`, each image through the
    model's evaluation transform (resize/crop, normalisation) on its device, computed in the model's
    precision (`zoo.compute_dtype`) and kept as fp32. With `cache_dir`, each split is read from or written
    to the cache under a key of the model, the weights' content, the dataset, the split and its size, the
    image size, the preprocessing and the compute precision (bf16 and fp32 features are never mixed), plus
    `key`. `seed` seeds torch before each split (models whose features draw random numbers, such as MAE's
    masking noise)."""
    from vitzoo.data import eval_transform, make_loader, normalize_batch

    preprocessing = zoo.spec.preprocessing
    weights = weights_fingerprint(zoo.model) if cache_dir is not None else ""
    out = {}
    for name, split in (("train", splits.train), ("eval", splits.eval)):
        def compute(split: Any = split, name: str = name) -> tuple[torch.Tensor, torch.Tensor | None]:
            if seed is not None:
                torch.manual_seed(seed)
            loader = make_loader(split, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                 transform=eval_transform(preprocessing, zoo.image_size))
            batches = ((normalize_batch(images.to(zoo.device), preprocessing), labels)
                       for images, labels in loader if images.shape[0])
            return extract_features(zoo, batches, progress=progress, description=f"{name} features")

        if cache_dir is None:
            out[name] = compute()
            continue
        cache_key = feature_cache_key(zoo.spec.name, dataset, name, zoo.image_size, weights=weights, samples=len(split),
                                      preprocessing=dataclasses.asdict(preprocessing), seed=seed,
                                      precision=dtype_name(zoo.compute_dtype), **key)
        out[name] = cached_features(cache_dir, cache_key, compute)
    return out
