"""Classification metrics shipped as local `evaluate` modules, and the API the training engine uses.

Each metric is a real `evaluate.Metric` in its own folder (``vitzoo/metrics/<name>/<name>.py``),
so ``evaluate.load(metric_path("accuracy_topk"))`` works offline, from an installed package,
exactly like a Hub metric:

    >>> from vitzoo.metrics import classification_metrics, load_metric
    >>> load_metric("accuracy_topk").compute(predictions=[[0.2, 0.8], [0.9, 0.1]], references=[1, 1], k=1)
    {'accuracy': 0.5, 'top_k_accuracy': 0.5, 'k': 1}
    >>> classification_metrics(np.array([[0.2, 0.8], [0.9, 0.1]]), [1, 1])
    {'accuracy': 0.5, 'top5': 1.0, 'macro_f1': 0.3333333333333333}

`classification_metrics` runs the very functions those modules' `_compute` runs, on numpy
arrays, without `evaluate`'s Arrow round trip (which is slow on ImageNet-sized logits).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from vitzoo.errors import BadInputError

if TYPE_CHECKING:
    import evaluate
    import torch

__all__ = ["METRICS", "classification_metrics", "load_metric", "metric_path"]

METRICS = ("accuracy_topk", "f1_macro")
_HERE = os.path.dirname(os.path.abspath(__file__))
_LOADED: dict[str, evaluate.EvaluationModule] = {}
_LOCK = threading.Lock()


def metric_path(name: str) -> str:
    """The path of metric `name`'s module script, for `evaluate.load(path)`."""
    if name not in METRICS:
        raise BadInputError(f"unknown metric {name!r}; vitzoo ships: {', '.join(METRICS)}")
    path = os.path.join(_HERE, name, f"{name}.py")
    if not os.path.isfile(path):  # pragma: no cover - a broken install
        raise BadInputError(f"metric script {path} is missing; reinstall vitzoo (it ships vitzoo/metrics/*/*.py)")
    return path


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Metric `name` loaded with `evaluate.load` from the local script (no network), cached.

    The module is kept in memory (no Arrow cache files). The cached instance is shared: callers
    that use its `add_batch` / `compute` from several threads should `evaluate.load(metric_path(name))`
    their own.
    """
    path = metric_path(name)
    with _LOCK:
        if name not in _LOADED:
            import evaluate

            _LOADED[name] = evaluate.load(path, keep_in_memory=True)
        return _LOADED[name]


def _module_function(name: str, function: str) -> Callable[..., Any]:
    """A function defined in metric `name`'s script (as imported by `evaluate`)."""
    module: ModuleType = sys.modules[type(load_metric(name)).__module__]
    return getattr(module, function)


def _as_numpy(values: Any, what: str) -> np.ndarray:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None  # type: ignore[assignment]
    if torch is not None and isinstance(values, torch.Tensor):
        values = values.detach()
        if values.is_floating_point():
            values = values.float()
        return values.cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as error:
        raise BadInputError(f"{what} cannot be read as an array: {error}") from None


def classification_metrics(
    logits: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    labels: torch.Tensor | np.ndarray | Sequence[int],
    top_k: int = 5,
) -> dict[str, float]:
    """Top-1 accuracy, top-k accuracy and macro F1 of class scores against class ids.

    Args:
        logits: N x C class scores (logits or probabilities; any float dtype, any device).
        labels: N class indices in [0, C).
        top_k: k of the top-k accuracy; clipped to C, so top-5 works with fewer than 5 classes.

    Returns:
        ``{"accuracy": ..., f"top{top_k}": ..., "macro_f1": ...}``, floats in [0, 1]. The key
        keeps the requested k (``"top5"``) whatever the number of classes. Macro F1 averages
        over the classes present in `labels` or in the argmax predictions (scikit-learn's rule).

    Raises:
        BadInputError: shapes that do not match, no examples, labels out of range or not
            integers, NaN scores, or `top_k` < 1.
    """
    scores = _as_numpy(logits, "logits")
    targets = _as_numpy(labels, "labels")
    if scores.ndim != 2 or scores.dtype.kind not in "fiub":
        raise BadInputError(f"logits must be a numeric N x C array, got shape {scores.shape} and dtype {scores.dtype}")
    if targets.ndim != 1 or targets.shape[0] != scores.shape[0]:
        raise BadInputError(f"logits hold {scores.shape[0]} examples but labels have shape {tuple(targets.shape)}")
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise BadInputError(f"no examples to score (logits of shape {scores.shape})")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise BadInputError(f"top_k must be a positive integer, got {top_k!r}")
    top_k_accuracy = _module_function("accuracy_topk", "top_k_accuracy")
    macro_f1 = _module_function("f1_macro", "macro_f1")
    try:
        top1, topk, _ = top_k_accuracy(scores, targets, int(top_k))
        f1 = macro_f1(np.argmax(scores, axis=1), targets)
    except ValueError as error:
        raise BadInputError(str(error)) from None
    return {"accuracy": top1, f"top{int(top_k)}": topk, "macro_f1": f1}
