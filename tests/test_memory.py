"""Small datasets decoded once into memory and augmented a whole batch at a time
(`vitzoo.data.memory`): the same augmentation semantics as the per-image path, reproducible, and
chosen only when it fits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from vitzoo.data import eval_transform, load_splits, make_loader, train_transform
from vitzoo.data.memory import DRAWS, BatchAugment, InMemorySplit, fits_in_memory, sample_keys, uniforms
from vitzoo.errors import BadInputError
from vitzoo.registry import Preprocessing

PRE = Preprocessing(resize_size=16, resize_mode="exact", interpolation="bilinear")


def test_crops_follow_the_area_and_aspect_ranges_and_the_seed():
    augment = BatchAugment(16, scale=(0.3, 0.9), ratio=(0.75, 4 / 3), hflip=0.5, per_image=[])
    boxes = augment.crops(uniforms(sample_keys(1, 0, list(range(4000))), DRAWS), 60, 80)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all() and (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 60).all()
    area = width * height / (60 * 80)
    # rounding to whole pixels moves the area and aspect a little past the drawn values
    assert area.min() > 0.3 - 0.03 and area.max() < 0.9 + 0.03
    aspect = width / height
    assert aspect.min() > 0.75 - 0.05 and aspect.max() < 4 / 3 + 0.05
    # log-uniform aspect: on a square image as many crops wider than tall as taller than wide
    square = augment.crops(uniforms(sample_keys(1, 0, list(range(4000))), DRAWS), 64, 64)
    wide = ((square[:, 2] - square[:, 0]) > (square[:, 3] - square[:, 1])).float().mean().item()
    tall = ((square[:, 2] - square[:, 0]) < (square[:, 3] - square[:, 1])).float().mean().item()
    assert abs(wide - tall) < 0.05
    again = augment.crops(uniforms(sample_keys(1, 0, list(range(4000))), DRAWS), 60, 80)
    assert torch.equal(boxes, again)
    assert not torch.equal(boxes, augment.crops(uniforms(sample_keys(2, 0, list(range(4000))), DRAWS), 60, 80))
    assert not torch.equal(boxes, augment.crops(uniforms(sample_keys(1, 1, list(range(4000))), DRAWS), 60, 80))
    # the draws are uniform: their mean and spread are those of U(0, 1)
    draws = uniforms(sample_keys(1, 0, list(range(4000))), DRAWS)
    assert abs(draws.mean().item() - 0.5) < 0.01 and abs(draws.var().item() - 1 / 12) < 0.005


def test_a_crop_that_never_fits_falls_back_to_the_centre_at_the_nearest_aspect():
    # a 10x100 strip cannot hold any crop of aspect 3/4..4/3 and area >= 90%: torchvision's fallback
    augment = BatchAugment(8, scale=(0.9, 1.0), ratio=(0.75, 4 / 3), hflip=0.0, per_image=[])
    boxes = augment.crops(uniforms(sample_keys(0, 0, list(range(5))), DRAWS), 10, 100)
    expected_w = round(10 * 4 / 3)
    assert torch.equal(boxes[0], torch.tensor([round((100 - expected_w) / 2), 0.0, round((100 - expected_w) / 2) + expected_w, 10.0]))


def test_the_batched_resize_is_the_identity_at_the_same_size_and_an_area_filter_when_halving():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=generator)
    whole = BatchAugment(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, per_image=[])
    assert torch.equal(whole(images, sample_keys(0, 0, list(range(6)))), images)
    half = BatchAugment(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, per_image=[])
    pooled = torch.nn.functional.avg_pool2d(images.float(), 2).round().to(torch.uint8)
    assert (half(images, sample_keys(0, 0, list(range(6)))).int() - pooled.int()).abs().max() <= 1
    flip_all = BatchAugment(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0, per_image=[])
    assert torch.equal(flip_all(images, sample_keys(0, 0, list(range(6)))), images.flip(-1))


def test_the_batched_crop_matches_the_per_image_crop_of_the_same_box():
    """For one box, roi_align's area average and torchvision's antialiased bilinear resize agree
    closely (a different kernel, the same region)."""
    image = torch.from_numpy(np.asarray(Image.fromarray(
        (np.add.outer(np.arange(40), np.arange(40)) * 3 % 256).astype(np.uint8)).convert("RGB"))).permute(2, 0, 1)
    augment = BatchAugment(16, scale=(0.3, 0.9), ratio=(0.75, 4 / 3), hflip=0.0, per_image=[])
    keys = sample_keys(3, 0, [0])
    batched = augment(image[None], keys)[0]
    left, top, right, bottom = augment.crops(uniforms(keys, DRAWS), 40, 40)[0].int().tolist()
    single = F.resized_crop(image, top, left, bottom - top, right - left, [16, 16], antialias=True)
    assert (batched.float() - single.float()).abs().mean() < 3.0


@pytest.fixture()
def folder(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(12):
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(tmp_path / label / f"{index}.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    return tmp_path


def test_in_memory_loaders_give_what_the_per_image_ones_give(folder):
    splits = load_splits(str(folder), seed=0, val_fraction=0.25)
    fits, why = fits_in_memory(splits.train)
    assert fits and "20x20" in why
    transform = train_transform(PRE, image_size=16, hflip=0.5)
    memory = make_loader(splits.train, batch_size=4, shuffle=True, seed=3, transform=transform, in_memory="on")
    assert isinstance(memory.dataset, InMemorySplit) and memory.num_workers == 0
    assert memory.dataset.augment is not None and "a whole batch at a time" in memory.dataset.describe()
    per_image = make_loader(splits.train, batch_size=4, shuffle=True, seed=3, transform=transform, in_memory="off")
    labels_memory = torch.cat([labels for _, labels in memory])
    labels_image = torch.cat([labels for _, labels in per_image])
    # the broken file is left out of memory (and counted), the per-image loader drops it per batch
    assert sorted(labels_memory.tolist()) == sorted(labels_image.tolist())
    assert splits.train.skipped + splits.eval.skipped >= 1
    batch, _ = next(iter(memory))
    assert batch.dtype == torch.uint8 and batch.shape[1:] == (3, 16, 16)
    # seeded per (seed, epoch, batch): the same epoch again is the same, another epoch is not
    dataset = memory.dataset
    first, _ = dataset.__getitems__([0, 5, 2, 7])
    assert torch.equal(first, dataset.__getitems__([0, 5, 2, 7])[0])
    # an image's augmentation does not depend on its batch (gradient accumulation, processes)
    assert torch.equal(first[1], dataset.__getitems__([5])[0][0])
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset.__getitems__([0, 5, 2, 7])[0])

    evaluation = eval_transform(PRE, 16)
    stored = make_loader(splits.eval, batch_size=5, shuffle=False, transform=evaluation, in_memory="on")
    assert "stored transformed" in stored.dataset.describe()
    plain = make_loader(splits.eval, batch_size=5, shuffle=False, transform=evaluation, in_memory="off")
    assert torch.equal(torch.cat([x for x, _ in stored]), torch.cat([x for x, _ in plain]))


def test_images_of_several_sizes_stay_per_image_unless_asked(folder):
    Image.new("L", (30, 20)).save(folder / "b" / "wide.png")
    splits = load_splits(str(folder), seed=0, val_fraction=0.25)
    split = splits.train if any("wide" in p for p in splits.train.reader.paths) else splits.eval
    transform = train_transform(PRE, image_size=16)
    assert not isinstance(make_loader(split, batch_size=4, shuffle=True, transform=transform, in_memory="auto").dataset,
                          InMemorySplit)
    with pytest.raises(BadInputError, match="one size"):
        make_loader(split, batch_size=4, shuffle=True, transform=transform, in_memory="on")


def test_a_split_too_large_for_memory_is_refused_by_name(folder, monkeypatch):
    from vitzoo.data import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 1000)
    splits = load_splits(str(folder), seed=0, val_fraction=0.25)
    fits, why = fits_in_memory(splits.train)
    assert not fits and "over" in why
    with pytest.raises(BadInputError, match="cannot be held in memory"):
        make_loader(splits.train, batch_size=4, shuffle=True, transform=train_transform(PRE, image_size=16), in_memory="on")
    assert math.isfinite(len(make_loader(splits.train, batch_size=4, shuffle=True, in_memory="auto")))
