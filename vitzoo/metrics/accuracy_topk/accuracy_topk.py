"""Top-k accuracy as a local `evaluate` metric module (self-contained: numpy, datasets, evaluate)."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Top-k accuracy: the fraction of examples whose true class is among the k classes with the
highest scores. The predictions are per-class scores (logits or probabilities, one list per
example) and the references are class indices. Top-1 accuracy (argmax) is returned alongside.
Ties are broken towards the lower class index, so top-1 equals `argmax` accuracy. A `k`
larger than the number of classes is clipped to it (and the top-k accuracy is then 1.0).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): per-class scores, shape (n_examples, n_classes).
    references (`list` of `int`): true class indices in [0, n_classes).
    k (`int`, defaults to 5): how many of the highest-scoring classes count as a hit.
Returns:
    accuracy (`float`): top-1 accuracy in [0, 1].
    top_k_accuracy (`float`): top-k accuracy in [0, 1].
    k (`int`): the k actually used (clipped to the number of classes).
Examples:
    >>> metric = evaluate.load("vitzoo/metrics/accuracy_topk")
    >>> metric.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]], references=[2, 2], k=2)
    {'accuracy': 0.0, 'top_k_accuracy': 1.0, 'k': 2}
"""

_CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O.
          and Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A.
          and Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
@inproceedings{russakovsky2015imagenet,
  title={{ImageNet} Large Scale Visual Recognition Challenge},
  author={Russakovsky, Olga and Deng, Jia and Su, Hao and others},
  booktitle={International Journal of Computer Vision},
  volume={115},
  pages={211--252},
  year={2015}
}
"""


def top_k_accuracy(scores: np.ndarray, references: np.ndarray, k: int = 5) -> tuple[float, float, int]:
    """(top-1 accuracy, top-k accuracy, k used) of `scores` (N x C) against class ids (N)."""
    scores = np.asarray(scores)
    references = np.asarray(references)
    if scores.ndim != 2 or scores.dtype == object:
        raise ValueError(f"predictions must be per-class scores of shape (n_examples, n_classes), got shape {scores.shape}")
    if references.ndim != 1 or references.shape[0] != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} predictions but references of shape {references.shape}")
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError("no predictions to score")
    if references.dtype.kind not in "iu":
        if references.dtype.kind != "f" or not np.all(np.mod(references, 1) == 0):
            raise ValueError(f"references must be integer class indices, got dtype {references.dtype}")
        references = references.astype(np.int64)
    num_classes = scores.shape[1]
    if references.min() < 0 or references.max() >= num_classes:
        raise ValueError(f"references must lie in [0, {num_classes}), got [{references.min()}, {references.max()}]")
    if np.isnan(scores).any():
        raise ValueError("predictions contain NaN")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    k = min(int(k), num_classes)
    top1 = float(np.mean(np.argmax(scores, axis=1) == references))
    # Rank of the true class with ties broken towards the lower class index (as argmax does):
    # classes scoring strictly higher, plus equal-scoring classes with a lower index.
    true_scores = np.take_along_axis(scores, references[:, None], axis=1)
    lower_index = np.arange(num_classes)[None, :] < references[:, None]
    rank = np.sum((scores > true_scores) | ((scores == true_scores) & lower_index), axis=1)
    topk = float(np.mean(rank < k))
    return top1, topk, k


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AccuracyTopk(evaluate.Metric):
    """Top-1 and top-k accuracy from per-class scores."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.top_k_accuracy_score.html"],
        )

    def _compute(self, predictions, references, k: int = 5) -> dict:
        top1, topk, used_k = top_k_accuracy(np.asarray(predictions), np.asarray(references), k)
        return {"accuracy": top1, "top_k_accuracy": topk, "k": used_k}
