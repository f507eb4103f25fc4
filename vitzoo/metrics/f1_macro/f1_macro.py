"""Macro-averaged F1 as a local `evaluate` metric module (self-contained: numpy, datasets, evaluate)."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Macro F1: the unweighted mean over classes of the per-class F1 score
F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c). As in scikit-learn's `f1_score(average="macro")`,
the mean runs over the classes that occur in the references or the predictions, so a class
absent from both does not count. The predictions are either class indices or per-class scores
(logits or probabilities, one list per example), which are reduced by argmax.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `float`): predicted class indices, or
        per-class scores of shape (n_examples, n_classes).
    references (`list` of `int`): true class indices.
Returns:
    f1 (`float`): macro F1 in [0, 1].
Examples:
    >>> metric = evaluate.load("vitzoo/metrics/f1_macro")
    >>> metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'f1': 0.7777777777777777}
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
@article{sokolova2009systematic,
  title={A systematic analysis of performance measures for classification tasks},
  author={Sokolova, Marina and Lapalme, Guy},
  journal={Information Processing \\& Management},
  volume={45},
  number={4},
  pages={427--437},
  year={2009}
}
"""


def _class_ids(values: np.ndarray, what: str) -> np.ndarray:
    if values.dtype.kind in "iu":
        out = values.astype(np.int64)
    elif values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0):
        out = values.astype(np.int64)
    else:
        raise ValueError(f"{what} must be integer class indices, got dtype {values.dtype}")
    if out.size and out.min() < 0:
        raise ValueError(f"{what} must be non-negative class indices, got {out.min()}")
    return out


def macro_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """Macro F1 of predicted class ids (N) or scores (N x C) against class ids (N)."""
    predictions = np.asarray(predictions)
    references = np.asarray(references)
    if predictions.ndim == 2 and predictions.dtype != object:
        if predictions.shape[1] == 0:
            raise ValueError("predictions have no classes")
        if np.isnan(predictions).any():
            raise ValueError("predictions contain NaN")
        predictions = np.argmax(predictions, axis=1)
    if predictions.ndim != 1:
        raise ValueError(f"predictions must be class indices (N) or scores (N x C), got shape {predictions.shape}")
    if references.ndim != 1 or references.shape[0] != predictions.shape[0]:
        raise ValueError(f"{predictions.shape[0]} predictions but references of shape {references.shape}")
    if predictions.shape[0] == 0:
        raise ValueError("no predictions to score")
    predictions = _class_ids(predictions, "predictions")
    references = _class_ids(references, "references")
    num_classes = int(max(predictions.max(), references.max())) + 1
    true_positive = np.bincount(references[predictions == references], minlength=num_classes)
    predicted = np.bincount(predictions, minlength=num_classes)
    actual = np.bincount(references, minlength=num_classes)
    denominator = predicted + actual  # = 2 TP + FP + FN
    present = denominator > 0
    f1 = 2.0 * true_positive[present] / denominator[present]
    return float(np.mean(f1))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1Macro(evaluate.Metric):
    """Macro-averaged F1 from class indices or per-class scores."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
                ),
            ],
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references) -> dict:
        return {"f1": macro_f1(np.asarray(predictions), np.asarray(references))}
