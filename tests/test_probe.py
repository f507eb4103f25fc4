"""vitzoo.probe: feature extraction and its cache, DINO's weighted k-NN, linear probing."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from vitzoo.errors import BadInputError
from vitzoo.probe import (
    cached_features,
    extract_features,
    feature_cache_key,
    knn_classify,
    knn_evaluate,
    linear_probe,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: one thread is faster, and far faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clusters(seed: int, classes: int, per_class: int, dim: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=generator) * 5
    labels = torch.arange(classes).repeat_interleave(per_class)
    features = centers[labels] + noise * torch.randn(len(labels), dim, generator=generator)
    return features, labels


# --------------------------------------------------------------------------- k-NN
def test_knn_separated_clusters_are_perfect():
    train_x, train_y = _clusters(0, classes=5, per_class=40, dim=16, noise=0.3)
    test_x, test_y = _clusters(0, classes=5, per_class=10, dim=16, noise=0.3)  # same centers
    results = knn_evaluate(train_x, train_y, test_x, test_y, ks=(1, 10, 20, 100))
    assert set(results) == {1, 10, 20, 100}
    assert all(r["accuracy"] == 1.0 and r["top5"] == 1.0 for r in results.values())
    predictions, scores = knn_classify(train_x, train_y, test_x)
    assert torch.equal(predictions, test_y)
    assert scores.shape == (50, 5)


def test_knn_random_features_is_near_chance():
    generator = torch.Generator().manual_seed(1)
    train_x, test_x = torch.randn(2000, 32, generator=generator), torch.randn(1000, 32, generator=generator)
    train_y = torch.randint(0, 10, (2000,), generator=generator)
    test_y = torch.randint(0, 10, (1000,), generator=generator)
    results = knn_evaluate(train_x, train_y, test_x, test_y, ks=(20, 200))
    for result in results.values():  # chance is 0.1 (std ~0.01 over 1000 test points)
        assert 0.06 <= result["accuracy"] <= 0.14
        assert 0.40 <= result["top5"] <= 0.60


def test_knn_weighted_vote_by_hand():
    # test point along +x; train points (cosine similarity to it): a 1.0 (class 0, not unit
    # length: normalised first), b 0.8 and c 0.6 (class 1), d 0.0 and e -1.0 (class 2).
    train_x = torch.tensor([[3.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    train_y = torch.tensor([0, 1, 1, 2, 2])
    test_x = torch.tensor([[2.0, 0.0]])
    # k=3 takes a, b, c. T=0.1: class 0 gets e^(1/0.1) = 22026.47, class 1 e^8 + e^6 = 3384.39
    predictions, scores = knn_classify(train_x, train_y, test_x, k=3, temperature=0.1)
    assert predictions.tolist() == [0]
    assert scores[0].tolist() == pytest.approx([math.exp(10), math.exp(8) + math.exp(6), 0.0], rel=1e-5)
    # T=1 flattens the weights, so the two class-1 votes win: e^1 = 2.718 < e^0.8 + e^0.6 = 4.048
    predictions, scores = knn_classify(train_x, train_y, test_x, k=3, temperature=1.0)
    assert predictions.tolist() == [1]
    assert scores[0].tolist() == pytest.approx([math.e, math.exp(0.8) + math.exp(0.6), 0.0], rel=1e-5)
    # k=5 adds d (weight e^0 = 1) and e (e^-1) to class 2; num_classes pads the score columns
    _, scores = knn_classify(train_x, train_y, test_x, k=5, temperature=1.0, num_classes=4)
    assert scores[0].tolist() == pytest.approx([math.e, math.exp(0.8) + math.exp(0.6), 1 + math.exp(-1), 0.0], rel=1e-5)


def test_knn_chunks_give_the_same_answer():
    train_x, train_y = _clusters(2, classes=4, per_class=30, dim=8, noise=4.0)
    test_x = torch.randn(53, 8, generator=torch.Generator().manual_seed(3))
    whole = knn_classify(train_x, train_y, test_x, k=7)
    chunked = knn_classify(train_x.numpy(), train_y.numpy(), test_x.numpy(), k=7, chunk_size=5)
    assert torch.equal(whole[0], chunked[0])
    torch.testing.assert_close(whole[1], chunked[1])


def test_knn_bad_input():
    train_x, train_y = _clusters(4, classes=2, per_class=5, dim=4, noise=0.1)
    with pytest.raises(BadInputError, match="only 10 examples"):
        knn_classify(train_x, train_y, train_x, k=20)
    with pytest.raises(BadInputError, match="k=20, 100, 200 "):
        knn_evaluate(train_x, train_y, train_x, train_y)  # default ks go up to 200
    with pytest.raises(BadInputError):
        knn_classify(train_x, train_y, torch.randn(3, 5), k=3)  # dimension mismatch
    with pytest.raises(BadInputError):
        knn_classify(train_x, train_y[:-1], train_x, k=3)  # one label short
    with pytest.raises(BadInputError):
        knn_classify(train_x, train_y.float(), train_x, k=3)  # float labels
    with pytest.raises(BadInputError):
        knn_classify(train_x, train_y, train_x, k=0)
    with pytest.raises(BadInputError):
        knn_classify(train_x, train_y, train_x, k=3, temperature=0.0)
    with pytest.raises(BadInputError):
        knn_classify(train_x, train_y, train_x, k=3, num_classes=1)


# --------------------------------------------------------------------------- linear probe
def _separable(seed: int, n: int, dim: int = 20, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels from a fixed random linear map (argmax), keeping points with a margin: separable."""
    generator = torch.Generator().manual_seed(seed)
    true_weight = torch.randn(dim, classes, generator=torch.Generator().manual_seed(100))
    features = torch.randn(3 * n, dim, generator=generator)
    scores = (features @ true_weight).sort(dim=1, descending=True).values
    features = features[scores[:, 0] - scores[:, 1] > 1.0][:n]
    assert len(features) == n
    return features * 3 + 1.5, (features @ true_weight).argmax(dim=1)  # off-centre and unscaled


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_linear_probe_learns_separable_data(optimizer):
    train_x, train_y = _separable(0, 800)
    test_x, test_y = _separable(1, 400)
    lr = 0.1 if optimizer == "sgd" else 0.05
    result = linear_probe(
        train_x, train_y, test_x, test_y, epochs=20, lr=lr, weight_decay=0.0, batch_size=100, seed=0, optimizer=optimizer
    )
    assert result["accuracy"] > 0.95
    assert result["top5"] == 1.0  # 4 classes
    assert 0.9 < result["macro_f1"] <= 1.0
    # the returned head has the standardisation folded in: it takes the raw features
    head = torch.nn.Linear(20, 4)
    head.load_state_dict(result["head"])
    with torch.no_grad():
        accuracy = (head(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy == pytest.approx(result["accuracy"], abs=1e-6)


def test_linear_probe_is_seeded_and_leaves_global_rng_alone():
    train_x, train_y = _separable(2, 200)
    test_x, test_y = _separable(3, 100)
    kwargs = {"epochs": 2, "lr": 0.05, "weight_decay": 1e-4, "batch_size": 64, "standardize": False}
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = linear_probe(train_x, train_y, test_x, test_y, seed=7, **kwargs)
    assert torch.equal(torch.rand(1), before)
    second = linear_probe(train_x, train_y, test_x, test_y, seed=7, **kwargs)
    other = linear_probe(train_x, train_y, test_x, test_y, seed=8, **kwargs)
    assert torch.equal(first["head"]["weight"], second["head"]["weight"])
    assert not torch.equal(first["head"]["weight"], other["head"]["weight"])
    assert first["feature_mean"] is None


def test_linear_probe_on_inference_mode_features_and_bad_input():
    train_x, train_y = _separable(4, 64)
    with torch.inference_mode():
        frozen = train_x * 1.0
    result = linear_probe(frozen, train_y, frozen, train_y, epochs=1, lr=0.1, batch_size=16, standardize=False)
    assert 0.0 <= result["accuracy"] <= 1.0
    with pytest.raises(BadInputError):
        linear_probe(train_x, train_y, train_x[:, :5], train_y, epochs=1)
    with pytest.raises(BadInputError):
        linear_probe(train_x, train_y, train_x, train_y, epochs=1, optimizer="lars")
    with pytest.raises(BadInputError):
        linear_probe(train_x, train_y, train_x, train_y, epochs=0)
    with pytest.raises(BadInputError):
        linear_probe(train_x, train_y, torch.full_like(train_x, float("nan")), train_y, epochs=1)


# --------------------------------------------------------------------------- cache
def test_cache_round_trip_computes_once(tmp_path):
    calls = []
    features = torch.randn(10, 6, generator=torch.Generator().manual_seed(5))
    labels = torch.arange(10)

    def compute():
        calls.append(1)
        return features, labels

    key = feature_cache_key("dino-vits16", "imagenette/full", "validation", 224, weights="0123abcd")
    first = cached_features(tmp_path / "cache", key, compute)
    second = cached_features(tmp_path / "cache", key, compute)
    assert len(calls) == 1
    for got in (first, second):
        assert torch.equal(got[0], features) and got[0].dtype == features.dtype
        assert torch.equal(got[1], labels) and got[1].dtype == labels.dtype
    files = os.listdir(tmp_path / "cache")
    assert len(files) == 1 and files[0].endswith(".safetensors") and "/" not in files[0]
    # a different image size is another entry; refresh recomputes
    cached_features(tmp_path / "cache", {**key, "image_size": 448}, compute)
    cached_features(tmp_path / "cache", key, compute, refresh=True)
    assert len(calls) == 3
    assert sorted(os.listdir(tmp_path / "cache")) == sorted({*files, *os.listdir(tmp_path / "cache")})
    assert len(os.listdir(tmp_path / "cache")) == 2  # no temporary files left behind


def test_cache_without_labels_and_unreadable_file(tmp_path):
    features = torch.ones(3, 2, dtype=torch.float16)
    got, labels = cached_features(tmp_path, "plain key", lambda: (features, None))
    assert labels is None
    got, labels = cached_features(tmp_path, "plain key", lambda: pytest.fail("recomputed"))
    assert torch.equal(got, features) and labels is None
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable"):
        got, _ = cached_features(tmp_path, "plain key", lambda: (features * 2, None))
    assert torch.equal(got, features * 2)


# --------------------------------------------------------------------------- extraction
@pytest.fixture(scope="module")
def tiny_model():
    from tiny_hub import tiny_spec

    import vitzoo
    from vitzoo import registry

    spec = dataclasses.replace(tiny_spec(registry.get_spec("deit-tiny")), name="probe-tiny-deit")
    registry._SPECS[spec.name] = spec
    try:
        torch.manual_seed(0)
        yield vitzoo.load(spec.name, task="features", pretrained=False)
    finally:
        registry._SPECS.pop(spec.name, None)


def test_extract_features_from_raw_images_and_loaders(tiny_model):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8) for i in range(7)]
    dataset = [(image, i % 3) for i, image in enumerate(images)]  # map-style: (image, label)
    expected = tiny_model.embed(images)
    tiny_model.model.train()
    features, labels = extract_features(tiny_model, dataset, batch_size=3, progress=False)
    assert tiny_model.model.training  # mode restored
    tiny_model.model.eval()
    assert features.dtype == torch.float32 and features.shape == (7, 32)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0]

    pixel_values = tiny_model.preprocess(images)
    loader = torch.utils.data.DataLoader(
        [{"pixel_values": p, "label": i % 3} for i, p in enumerate(pixel_values)], batch_size=4
    )
    from_loader, loader_labels = extract_features(tiny_model, loader, progress=True)
    torch.testing.assert_close(from_loader, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(loader_labels, labels)

    unlabelled, none = extract_features(tiny_model, iter([pixel_values[:5], pixel_values[5:]]))  # batches
    assert none is None and unlabelled.shape == (7, 32)


def test_split_features_cache_on_the_weights_content(tiny_model, tmp_path):
    """The train and eval features of a dataset, as vitzoo evaluate, compare and DINO's monitor get
    them: cached once, read back for the same weights, extracted again for other weights."""
    from vitzoo.data import load_splits
    from vitzoo.probe import split_features

    splits = load_splits("digits", seed=0, max_train_samples=20, max_eval_samples=10)
    first = split_features(tiny_model, splits, batch_size=8, cache_dir=tmp_path, dataset="digits")
    assert first["train"][0].shape == (20, 32) and first["eval"][1].shape == (10,)
    assert len(list(tmp_path.iterdir())) == 2
    again = split_features(tiny_model, splits, batch_size=8, cache_dir=tmp_path, dataset="digits")
    assert torch.equal(again["train"][0], first["train"][0]) and len(list(tmp_path.iterdir())) == 2
    uncached = split_features(tiny_model, splits, batch_size=8)
    torch.testing.assert_close(uncached["eval"][0], first["eval"][0])
    with torch.no_grad():
        next(tiny_model.model.parameters()).add_(1.0)  # other weights, same model
    changed = split_features(tiny_model, splits, batch_size=8, cache_dir=tmp_path, dataset="digits")
    assert len(list(tmp_path.iterdir())) == 4 and not torch.equal(changed["train"][0], first["train"][0])


def test_extract_features_duck_typed_model_and_errors():
    calls = []

    def embed(pixel_values: torch.Tensor) -> torch.Tensor:
        calls.append(pixel_values.shape[0])
        assert not torch.is_grad_enabled()  # no_grad, not inference_mode (BEiT caches tensors)
        return pixel_values.flatten(1)[:, :4]

    data = torch.utils.data.TensorDataset(torch.randn(10, 3, 2, 2), torch.arange(10))
    features, labels = extract_features(embed, data, batch_size=4)
    assert calls == [4, 4, 2] and features.shape == (10, 4) and labels.tolist() == list(range(10))
    with pytest.raises(BadInputError, match="preprocess"):
        extract_features(embed, [(np.zeros((4, 4, 3), dtype=np.uint8), 0)], batch_size=1)
    with pytest.raises(BadInputError, match="no images"):
        extract_features(embed, [], batch_size=1)
    with pytest.raises(BadInputError):
        extract_features(embed, data, batch_size=0)
