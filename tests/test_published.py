"""The repos' published files, not vitzoo's own beliefs: every registered name and every task it
accepts, on tiny checkpoints built from each repo's published config.json (tests/tiny_hub.py), and
vitzoo's preprocessing against each repo's published preprocessor_config.json."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from tiny_hub import PUBLISHED, published
from transformers import AutoImageProcessor

import vitzoo
from vitzoo import registry
from vitzoo.images import Preprocessor

NAMES = [spec.name for spec in registry.all_specs()]


def tasks_of(name: str) -> list[str]:
    spec = registry.get_spec(name)
    family = registry.get_family(spec.family)
    accepted = []
    for task in ("classification", "features", "pretraining"):
        try:
            family.transformers_class(spec, task)
        except vitzoo.BadInputError:  # e.g. DINOv2 has no pretraining class
            continue
        accepted.append(task)
    return accepted


def test_every_registered_repo_has_its_published_files_and_their_sources():
    folders = {spec.hub_id.replace("/", "--") for spec in registry.all_specs()}
    assert folders <= set(os.listdir(PUBLISHED))
    for folder in folders:
        assert {"config.json", "preprocessor_config.json", "SOURCE.md"} <= set(os.listdir(os.path.join(PUBLISHED, folder)))


@pytest.fixture(scope="module")
def photos():
    """Real photos of natural, differing sizes (scikit-learn's samples, cropped)."""
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return [china[:300, :420], flower[50:400, 10:300], china[100:164, 200:500]]


@pytest.mark.parametrize("name", NAMES)
def test_pixels_equal_the_published_processor(name, photos):
    """vitzoo's pixels for a registry name are exactly those of `AutoImageProcessor` on that repo's
    published preprocessor_config.json (older `*FeatureExtractor` files included)."""
    spec = registry.get_spec(name)
    processor = AutoImageProcessor.from_pretrained(os.path.dirname(published(spec.hub_id, "config.json")))
    theirs = processor(photos, return_tensors="pt").pixel_values
    assert torch.equal(Preprocessor(spec.preprocessing)(photos), theirs)


@pytest.mark.parametrize(("name", "task"), [(name, task) for name in NAMES for task in tasks_of(name)])
def test_every_name_and_task_loads_runs_and_round_trips(tiny_hub, tmp_path, name, task):
    spec = tiny_hub[name]
    labels = None if spec.num_classes or task != "classification" else ["cat", "dog", "cat"]  # names may repeat
    zoo = vitzoo.load(name, task=task, id2label=labels)
    images = [np.random.default_rng(i).integers(0, 256, (20 + 3 * i, 24, 3), dtype=np.uint8) for i in range(3)]
    vectors = zoo.embed(images)
    assert vectors.shape == (3, spec.architecture.hidden_size) and torch.isfinite(vectors).all()
    grid = spec.architecture.image_size // spec.architecture.patch_size
    assert zoo.attention_maps(images).shape == (3, spec.architecture.num_heads, grid, grid)
    if task == "classification":
        predictions = zoo.predict(images, top_k=2)
        names = zoo.id2label
        if spec.num_classes == 1000:  # the published ImageNet names travelled from config.json
            assert names[134] == names[517] == "crane" and names[0] == "tench, Tinca tinca"
        assert all(p["label"] == names[p["index"]] for row in predictions for p in row)
    zoo.save_pretrained(tmp_path / "saved")
    again = vitzoo.load(tmp_path / "saved")
    assert again.task == task
    torch.testing.assert_close(again.embed(images), vectors, rtol=1e-5, atol=1e-5)
