"""vitzoo.metrics: the local evaluate modules and classification_metrics, checked against scikit-learn."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

from vitzoo.errors import BadInputError
from vitzoo.metrics import METRICS, classification_metrics, load_metric, metric_path


def _random_case(seed: int, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[np.arange(n), labels] += rng.uniform(0, 2, size=n).astype(np.float32)  # better than chance
    return logits, labels


def _sklearn(logits: np.ndarray, labels: np.ndarray, k: int) -> dict[str, float]:
    c = logits.shape[1]
    return {
        "accuracy": accuracy_score(labels, logits.argmax(1)),
        "topk": top_k_accuracy_score(labels, logits, k=min(k, c), labels=np.arange(c)) if c > 2 else None,
        "macro_f1": f1_score(labels, logits.argmax(1), average="macro"),
    }


@pytest.mark.parametrize(("seed", "n", "c", "k"), [(0, 500, 10, 5), (1, 64, 3, 2), (2, 1000, 100, 5), (3, 37, 7, 1)])
def test_classification_metrics_match_sklearn(seed, n, c, k):
    logits, labels = _random_case(seed, n, c)
    expected = _sklearn(logits, labels, k)
    got = classification_metrics(logits, labels, top_k=k)
    assert set(got) == {"accuracy", f"top{k}", "macro_f1"}
    assert all(isinstance(value, float) and 0.0 <= value <= 1.0 for value in got.values())
    assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert got[f"top{k}"] == pytest.approx(expected["topk"], abs=1e-12)
    assert got["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)


@pytest.mark.parametrize(("seed", "n", "c", "k"), [(4, 300, 10, 5), (5, 50, 4, 3)])
def test_evaluate_modules_match_sklearn(seed, n, c, k):
    logits, labels = _random_case(seed, n, c)
    expected = _sklearn(logits, labels, k)
    topk = load_metric("accuracy_topk").compute(predictions=logits.tolist(), references=labels.tolist(), k=k)
    assert topk["accuracy"] == pytest.approx(expected["accuracy"])
    assert topk["top_k_accuracy"] == pytest.approx(expected["topk"])
    assert topk["k"] == k
    f1 = load_metric("f1_macro")
    assert f1.compute(predictions=logits.argmax(1), references=labels)["f1"] == pytest.approx(expected["macro_f1"])
    assert f1.compute(predictions=logits.tolist(), references=labels)["f1"] == pytest.approx(expected["macro_f1"])


def test_modules_are_real_metrics_with_docs():
    import evaluate

    for name in METRICS:
        module = load_metric(name)
        assert isinstance(module, evaluate.Metric)
        assert module.description.strip() and module.citation.strip() and module.inputs_description.strip()
        assert load_metric(name) is module  # cached


def test_f1_macro_counts_classes_present_like_sklearn():
    rng = np.random.default_rng(6)
    predictions = rng.integers(0, 8, size=200)
    references = rng.choice([0, 2, 3, 7], size=200)  # classes 1, 4, 5, 6 only predicted or absent
    got = load_metric("f1_macro").compute(predictions=predictions, references=references)["f1"]
    assert got == pytest.approx(f1_score(references, predictions, average="macro", zero_division=0))


def test_hand_computed_values():
    logits = [[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]
    labels = [1, 2, 2, 1]
    got = classification_metrics(logits, labels, top_k=2)
    # argmax: 1, 0, 2, 0 -> 2/4 right; top-2 sets {1,2} {0,2} {2,1} {0,1} -> all 4 hit
    assert got["accuracy"] == 0.5 and got["top2"] == 1.0
    # class 0: TP 0, FP 2, FN 0 -> 0; class 1: TP 1, FN 1 -> 2/3; class 2: TP 1, FN 1 -> 2/3
    assert got["macro_f1"] == pytest.approx((0 + 2 / 3 + 2 / 3) / 3)


def test_topk_clipped_when_fewer_classes_than_k():
    logits, labels = _random_case(7, 40, 3)
    got = classification_metrics(logits, labels, top_k=5)
    assert got["top5"] == 1.0
    binary, binary_labels = _random_case(8, 20, 2)
    assert classification_metrics(binary, binary_labels)["top5"] == 1.0
    single = classification_metrics(np.zeros((3, 1)), [0, 0, 0])
    assert single == {"accuracy": 1.0, "top5": 1.0, "macro_f1": 1.0}


def test_ties_break_towards_the_lower_index_like_argmax():
    logits = np.zeros((2, 4))
    got = classification_metrics(logits, [0, 3], top_k=3)
    assert got["accuracy"] == 0.5  # argmax is class 0 for both rows
    assert got["top3"] == 0.5  # top-3 of a full tie is {0, 1, 2}


def test_torch_inputs_any_dtype():
    logits, labels = _random_case(9, 128, 10)
    expected = classification_metrics(logits, labels)
    got = classification_metrics(torch.from_numpy(logits).to(torch.bfloat16).float(), torch.from_numpy(labels))
    assert got == expected
    half = classification_metrics(torch.from_numpy(logits).to(torch.bfloat16), torch.from_numpy(labels))
    assert set(half) == set(expected)


@pytest.mark.parametrize(
    ("logits", "labels", "kwargs"),
    [
        (np.zeros((3, 4)), [0, 1], {}),  # length mismatch
        (np.zeros((0, 4)), [], {}),  # empty
        (np.zeros((3, 0)), [0, 0, 0], {}),  # no classes
        (np.zeros(3), [0, 1, 2], {}),  # 1-D logits
        (np.zeros((2, 3, 4)), [0, 1], {}),  # 3-D logits
        (np.zeros((2, 3)), [[0], [1]], {}),  # 2-D labels
        (np.zeros((2, 3)), [0, 3], {}),  # label out of range
        (np.zeros((2, 3)), [0, -1], {}),  # negative label
        (np.zeros((2, 3)), [0.5, 1.0], {}),  # non-integer labels
        (np.array([[0.0, np.nan], [1.0, 0.0]]), [0, 1], {}),  # NaN
        (np.zeros((2, 3)), [0, 1], {"top_k": 0}),
        (np.array([["a", "b"]]), [0], {}),  # not numeric
    ],
)
def test_bad_input(logits, labels, kwargs):
    with pytest.raises(BadInputError):
        classification_metrics(logits, labels, **kwargs)


def test_unknown_metric_name():
    with pytest.raises(BadInputError, match="accuracy_topk"):
        load_metric("accuracy")


def test_modules_load_offline_from_the_package_path(monkeypatch):
    """With HF_HUB_OFFLINE=1 and every socket connection refused, evaluate.load works on the
    package's own script and on its folder (the form `evaluate.load("./metrics/x")` takes)."""
    import socket

    import evaluate

    import vitzoo

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    package = os.path.dirname(os.path.abspath(vitzoo.__file__))
    for name in METRICS:
        assert metric_path(name).startswith(os.path.join(package, "metrics", name) + os.sep)
    topk = evaluate.load(os.path.dirname(metric_path("accuracy_topk")), keep_in_memory=True)
    assert topk.compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[1, 1], k=1) == {
        "accuracy": 0.5,
        "top_k_accuracy": 0.5,
        "k": 1,
    }
    f1 = evaluate.load(metric_path("f1_macro"), keep_in_memory=True)
    assert f1.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])["f1"] == pytest.approx(7 / 9)
