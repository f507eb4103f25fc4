"""DINO's weighted k-NN on frozen features (Caron et al., "Emerging Properties in Self-Supervised
Vision Transformers", ICCV 2021; after Wu et al., CVPR 2018): L2-normalised features, cosine
similarity to the train set, the k nearest neighbours vote for their class with weight
exp(similarity / T); k=20, T=0.07."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from vitzoo.errors import BadInputError

KNN_CHUNK_ELEMENTS = 1 << 25  # test rows x train rows per similarity chunk (128 MiB of float32)


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
