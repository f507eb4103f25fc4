"""Frozen-feature evaluation: feature extraction with a cache, DINO's weighted k-NN, linear probing.

The two standard protocols for judging a self-supervised backbone without fine-tuning it:

* **k-NN** (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
  DINO; after Wu et al., CVPR 2018): L2-normalised features, cosine similarity to the train set,
  the k nearest neighbours vote for their class with weight exp(similarity / T); k=20, T=0.07.
* **Linear probing** (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022,
  MAE; and DINO's linear evaluation): a single linear layer trained on frozen features.

    >>> train_x, train_y = extract_features(model, train_set, batch_size=128)
    >>> knn_evaluate(train_x, train_y, test_x, test_y)[20]["accuracy"]
    >>> linear_probe(train_x, train_y, test_x, test_y, epochs=100)["accuracy"]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vitzoo.errors import BadInputError
from vitzoo.metrics import classification_metrics

__all__ = [
    "cached_features",
    "extract_features",
    "feature_cache_key",
    "knn_classify",
    "knn_evaluate",
    "linear_probe",
]

IMAGE_KEYS = ("pixel_values", "image", "images", "img", "pixels")
LABEL_KEYS = ("labels", "label", "targets", "target", "y")
PROGRESS_MIN_BATCHES = 10  # progress=None shows a bar from this many batches on
KNN_CHUNK_ELEMENTS = 1 << 25  # test rows x train rows per similarity chunk (128 MiB of float32)


# --------------------------------------------------------------------------- extraction
def _is_map_dataset(data: Any) -> bool:
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(
        data, (torch.utils.data.DataLoader, torch.Tensor, np.ndarray, str, bytes)
    )


def _is_hf_dataset(data: Any) -> bool:
    try:
        import datasets
    except ImportError:  # pragma: no cover - a dependency
        return False
    return isinstance(data, datasets.Dataset)


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


def _hf_batches(dataset: Any, batch_size: int) -> Iterator[Any]:
    for start in range(0, len(dataset), batch_size):
        yield dataset[start : start + batch_size]


def _is_example_stream(data: Any) -> bool:
    """A stream of single examples: a torch or a Hugging Face `IterableDataset`."""
    if isinstance(data, torch.utils.data.IterableDataset):
        return True
    try:
        import datasets
    except ImportError:  # pragma: no cover - a dependency
        return False
    return isinstance(data, datasets.IterableDataset)


def _stream_batches(stream: Iterable[Any], batch_size: int, collate: _Collate) -> Iterator[Any]:
    examples: list[Any] = []
    for example in stream:
        examples.append(example)
        if len(examples) == batch_size:
            yield collate(examples)
            examples = []
    if examples:
        yield collate(examples)


def _batches(data: Any, batch_size: int, num_workers: int, preprocess: Callable[[Any], torch.Tensor] | None) -> tuple[Iterable[Any], int | None]:
    """An iterable of batches over `data` and its length, if known."""
    if isinstance(data, torch.utils.data.DataLoader):
        try:
            return data, len(data)
        except TypeError:  # an iterable dataset without a length
            return data, None
    if _is_hf_dataset(data):
        return _hf_batches(data, batch_size), math.ceil(len(data) / batch_size)
    if _is_map_dataset(data):
        loader = torch.utils.data.DataLoader(
            data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_Collate(preprocess)
        )
        return loader, len(loader)
    if _is_example_stream(data):
        return _stream_batches(data, batch_size, _Collate(preprocess)), None
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
            a map-style dataset (batched here with `batch_size` and `num_workers`), a Hugging
            Face `datasets.Dataset`, a torch or Hugging Face `IterableDataset` of examples
            (batched here, in this process), or any other iterable of ready batches. A batch or example is a dict
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
    from safetensors.torch import load_file, safe_open, save_file

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
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".features.", suffix=".tmp", dir=os.path.dirname(path))
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"key": canonical})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    return features, labels


# --------------------------------------------------------------------------- k-NN
def _features(values: Any, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    if tensor.ndim != 2 or tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise BadInputError(f"{what} must be a non-empty N x D array, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise BadInputError(f"{what} contain NaN or infinite values")
    return tensor


def _labels(values: Any, count: int, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    if tensor.ndim != 1 or tensor.shape[0] != count:
        raise BadInputError(f"{what} must hold one label per feature row ({count}), got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise BadInputError(f"{what} must be integer class indices, got dtype {tensor.dtype}")
    tensor = tensor.long()
    if tensor.numel() and int(tensor.min()) < 0:
        raise BadInputError(f"{what} must be non-negative class indices, got {int(tensor.min())}")
    return tensor


def _num_classes(num_classes: int | None, *labels: torch.Tensor) -> int:
    needed = max(int(label.max()) + 1 for label in labels if label.numel())
    if num_classes is None:
        return needed
    if num_classes < needed:
        raise BadInputError(f"num_classes={num_classes} but the labels go up to {needed - 1}")
    return int(num_classes)


def _knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    ks: Sequence[int],
    temperature: float,
    num_classes: int,
    chunk_size: int | None,
    device: str | torch.device | None,
) -> Iterator[tuple[slice, dict[int, torch.Tensor]]]:
    """Per chunk of test rows: {k: class scores (rows x C)} of DINO's weighted vote."""
    device = torch.device(device) if device is not None else train_features.device
    train = F.normalize(train_features.to(device, torch.float32), dim=1)
    train_labels = train_labels.to(device)
    max_k = max(ks)
    rows = chunk_size or max(1, KNN_CHUNK_ELEMENTS // train.shape[0])
    for start in range(0, test_features.shape[0], rows):
        stop = min(start + rows, test_features.shape[0])
        test = F.normalize(test_features[start:stop].to(device, torch.float32), dim=1)
        similarity = test @ train.T  # cosine similarity, rows x N_train
        distances, indices = similarity.topk(max_k, dim=1, largest=True, sorted=True)
        neighbour_labels = train_labels[indices]  # rows x max_k
        weights = (distances / temperature).exp()
        out: dict[int, torch.Tensor] = {}
        for k in ks:
            scores = torch.zeros(stop - start, num_classes, device=device)
            scores.scatter_add_(1, neighbour_labels[:, :k], weights[:, :k])
            out[k] = scores
        yield slice(start, stop), out


def _check_knn(
    train_features: Any, train_labels: Any, test_features: Any, ks: Sequence[int], temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    train = _features(train_features, "train_features")
    test = _features(test_features, "test_features")
    if train.shape[1] != test.shape[1]:
        raise BadInputError(f"train features have {train.shape[1]} dimensions but test features {test.shape[1]}")
    labels = _labels(train_labels, train.shape[0], "train_labels")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise BadInputError(f"k must be a positive integer, got {k!r}")
    too_large = [str(k) for k in ks if k > train.shape[0]]
    if too_large:
        raise BadInputError(
            f"k={', '.join(too_large)} neighbours asked for, but the train set has only {train.shape[0]} examples; "
            f"use k <= {train.shape[0]}"
        )
    if not temperature > 0:
        raise BadInputError(f"temperature must be positive, got {temperature}")
    return train, labels, test


def knn_classify(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_features: torch.Tensor | np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    *,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DINO's weighted k-NN classifier (Caron et al. 2021, sec. 4.1 / eval_knn.py; Wu et al. 2018).

    Features are L2-normalised; each test image takes its `k` train images of highest cosine
    similarity s_i, and each neighbour adds exp(s_i / temperature) to the score of its class.
    DINO's defaults: k=20, temperature=0.07. Test rows go in chunks (`chunk_size` rows; by
    default as many as keep a chunk's similarity matrix near 128 MiB), so large test sets fit.

    Args:
        device: where to compute (default: the train features' device); results come back on CPU.

    Returns:
        (predictions, scores): the predicted class of each test row (LongTensor M; ties go to
        the lower class index) and the summed vote weights per class (float M x C).

    Raises:
        BadInputError: k larger than the train set, mismatched shapes, bad labels.
    """
    train, labels, test = _check_knn(train_features, train_labels, test_features, [k], temperature)
    classes = _num_classes(num_classes, labels)
    scores = torch.empty(test.shape[0], classes)
    for rows, chunk in _knn_scores(train, labels, test, [k], temperature, classes, chunk_size, device):
        scores[rows] = chunk[k].cpu()
    return scores.argmax(dim=1), scores


def knn_evaluate(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_features: torch.Tensor | np.ndarray,
    test_labels: torch.Tensor | np.ndarray | Sequence[int],
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    *,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[int, dict[str, float]]:
    """k-NN accuracy for each k in `ks`, as DINO reports it (k in 10, 20, 100, 200; T=0.07).

    The neighbours are searched once, for the largest k. Returns
    ``{k: {"accuracy": top-1, "top5": top-5}}`` (fractions in [0, 1]). A k larger than the
    train set raises BadInputError.
    """
    ks = list(dict.fromkeys(ks))
    if not ks:
        raise BadInputError("ks is empty; pass at least one k")
    train, labels, test = _check_knn(train_features, train_labels, test_features, ks, temperature)
    targets = _labels(test_labels, test.shape[0], "test_labels")
    classes = _num_classes(num_classes, labels, targets)
    top1 = dict.fromkeys(ks, 0)
    top5 = dict.fromkeys(ks, 0)
    for rows, chunk in _knn_scores(train, labels, test, ks, temperature, classes, chunk_size, device):
        expected = targets[rows].to(chunk[ks[0]].device)
        for k, scores in chunk.items():
            # stable sort: ties go to the lower class index, as argmax does
            ranked = scores.sort(dim=1, descending=True, stable=True).indices[:, : min(5, classes)]
            hits = ranked == expected[:, None]
            top1[k] += int(hits[:, 0].sum())
            top5[k] += int(hits.any(dim=1).sum())
    count = test.shape[0]
    return {k: {"accuracy": top1[k] / count, "top5": top5[k] / count} for k in ks}


# --------------------------------------------------------------------------- linear probe
def _cosine_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_probe(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_features: torch.Tensor | np.ndarray,
    test_labels: torch.Tensor | np.ndarray | Sequence[int],
    *,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    warmup_epochs: int = 0,
    standardize: bool = True,
    num_classes: int | None = None,
    top_k: int = 5,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train a linear classifier on frozen features and score it on the test features.

    The protocol of MAE (He et al. 2022, sec. 4 and appendix A.3: "linear probing") and DINO's
    linear evaluation (Caron et al. 2021): one `nn.Linear` head (weights from a truncated normal
    with std 0.01, bias 0, as MAE), no batch norm, cross-entropy, SGD with momentum (or AdamW)
    and a cosine learning-rate schedule stepped per iteration, after `warmup_epochs` of linear
    warm-up. MAE uses LARS, lr 0.1 x batch/256, no weight decay, 90 epochs (10 warm-up); DINO
    uses SGD, lr 0.001 x batch/256, 100 epochs, no weight decay. Defaults here: SGD,
    lr 0.1, momentum 0.9, 100 epochs, batch 256.

    Standardisation (`standardize=True`, the default): MAE puts a BatchNorm1d *without affine
    parameters* before the head, which at test time divides by the running statistics of the
    train features. Here the features are standardised with the exact per-dimension mean and
    (biased) std of the whole train set, computed once: the same transform at test time, and
    fixed rather than per-batch during training. The returned head has the standardisation
    folded into it, so it applies to the raw features: ``W' = W / std``, ``b' = b - W' @ mean``.

    Args:
        optimizer: "sgd" (momentum `momentum`) or "adamw".
        seed: seeds the head's initialisation and the batch order (global RNG untouched).
        device: where to train (default: the train features' device).

    Returns:
        ``{"accuracy", f"top{top_k}", "macro_f1"}`` on the test set (via
        `vitzoo.metrics.classification_metrics`), "train_loss" (mean loss of the last epoch),
        "head" (the `nn.Linear` state dict, on CPU, taking raw features), "feature_mean" and
        "feature_std" (None when not standardised), "num_classes" and the settings used.
    """
    train = _features(train_features, "train_features")
    test = _features(test_features, "test_features")
    if train.shape[1] != test.shape[1]:
        raise BadInputError(f"train features have {train.shape[1]} dimensions but test features {test.shape[1]}")
    labels = _labels(train_labels, train.shape[0], "train_labels")
    targets = _labels(test_labels, test.shape[0], "test_labels")
    classes = _num_classes(num_classes, labels, targets)
    if epochs < 1 or batch_size < 1:
        raise BadInputError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    if not lr > 0 or weight_decay < 0:
        raise BadInputError(f"lr must be positive and weight_decay non-negative, got {lr} and {weight_decay}")
    if optimizer not in ("sgd", "adamw"):
        raise BadInputError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    if not 0 <= warmup_epochs < epochs:
        raise BadInputError(f"warmup_epochs must be in [0, epochs), got {warmup_epochs}")

    device = torch.device(device) if device is not None else train.device
    train = train.to(device, torch.float32)
    test = test.to(device, torch.float32)
    if train.is_inference():  # made under torch.inference_mode(): autograd cannot save it
        train = train.clone()
    labels = labels.to(device)
    if standardize:
        mean = train.mean(dim=0)
        std = train.std(dim=0, unbiased=False).clamp_min(1e-6)  # BatchNorm's eps scale, as MAE's 1e-6
        train = (train - mean) / std
        test = (test - mean) / std

    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(train.shape[1], classes, device="meta").to_empty(device="cpu")  # no global RNG draw
    with torch.no_grad():
        nn.init.trunc_normal_(head.weight, std=0.01, generator=generator)
        head.bias.zero_()
    head.to(device)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(train.shape[0] / batch_size)
    total_steps = epochs * steps_per_epoch
    warmup_steps = warmup_epochs * steps_per_epoch
    step = 0
    train_loss = float("nan")
    head.train()
    for _ in range(epochs):
        order = torch.randperm(train.shape[0], generator=generator).to(device)
        epoch_loss = torch.zeros((), device=device)
        for start in range(0, train.shape[0], batch_size):
            batch = order[start : start + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * _cosine_factor(step, total_steps, warmup_steps)
            loss = F.cross_entropy(head(train[batch]), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_loss += loss.detach() * batch.numel()
            step += 1
        train_loss = float(epoch_loss) / train.shape[0]

    head.eval()
    with torch.inference_mode():
        logits = head(test)
    metrics = classification_metrics(logits, targets, top_k=top_k)
    weight = head.weight.detach().float().cpu()
    bias = head.bias.detach().float().cpu()
    if standardize:
        mean_cpu, std_cpu = mean.cpu(), std.cpu()
        weight = weight / std_cpu
        bias = bias - weight @ mean_cpu
    return {
        **metrics,
        "train_loss": train_loss,
        "head": {"weight": weight.contiguous(), "bias": bias.contiguous()},
        "feature_mean": mean.cpu() if standardize else None,
        "feature_std": std.cpu() if standardize else None,
        "num_classes": classes,
        "settings": {
            "epochs": epochs,
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "seed": seed,
            "optimizer": optimizer,
            "momentum": momentum if optimizer == "sgd" else None,
            "warmup_epochs": warmup_epochs,
            "standardize": standardize,
        },
    }
