"""Frozen-feature evaluation: features (extraction and cache), DINO's weighted k-NN, linear probing.

The two standard protocols for judging a self-supervised backbone without fine-tuning it:
`vitzoo.probe.knn` (DINO's weighted k-NN) and `vitzoo.probe.linear` (a linear probe, as MAE and
DINO evaluate). `split_features` gives both the train and eval features of a dataset, cached on the
weights' content.

    >>> train_x, train_y = extract_features(model, train_set, batch_size=128)
    >>> knn_evaluate(train_x, train_y, test_x, test_y)[20]["accuracy"]
    >>> linear_probe(train_x, train_y, test_x, test_y, epochs=100)["accuracy"]
"""

from vitzoo.probe.features import (
    cached_features,
    extract_features,
    feature_cache_key,
    split_features,
    weights_fingerprint,
)
from vitzoo.probe.knn import knn_classify, knn_evaluate
from vitzoo.probe.linear import linear_probe

__all__ = [
    "cached_features",
    "extract_features",
    "feature_cache_key",
    "knn_classify",
    "knn_evaluate",
    "linear_probe",
    "split_features",
    "weights_fingerprint",
]
