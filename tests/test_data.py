"""vitzoo.data: sources, robust decoding, transforms, loaders and mixup. No network."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from vitzoo.data import (
    TransformedDataset,
    eval_transform,
    load_splits,
    make_loader,
    mixup_fn,
    normalize_batch,
    stratified_split,
    train_transform,
)
from vitzoo.errors import BadInputError
from vitzoo.registry import HALF_MEAN, HALF_STD, Preprocessing

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _png(path: Path, color=RED, size=(12, 10), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def _png_bytes(color=RED) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), color).save(buffer, "PNG")
    return buffer.getvalue()


def _all_items(dataset) -> list:
    return [dataset[i] for i in range(len(dataset))]


# --- digits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", val_fraction=0.2, seed=0)


def test_digits_stratified_split(digits):
    assert digits.num_classes == 10
    assert digits.id2label == {i: str(i) for i in range(10)}
    assert digits.label2id["7"] == 7
    assert len(digits.train) + len(digits.eval) == 1797
    assert len(digits.eval) == round(1797 * 0.2)
    train_counts = np.bincount(digits.train.labels, minlength=10)
    eval_counts = np.bincount(digits.eval.labels, minlength=10)
    # every class is held out in proportion (stratified), not just the total
    np.testing.assert_allclose(eval_counts / (train_counts + eval_counts), 0.2, atol=0.01)
    image, label = digits.train[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
    assert isinstance(label, int)
    assert int(image.max()) == 255  # 0..16 scaled to the full uint8 range
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grayscale -> RGB


def test_digits_split_is_seeded():
    a, b = load_splits("digits", seed=1), load_splits("digits", seed=1)
    c = load_splits("digits", seed=2)
    assert torch.equal(a.eval[0][0], b.eval[0][0])
    assert a.eval.reader.images.tobytes() == b.eval.reader.images.tobytes()
    assert a.eval.reader.images.tobytes() != c.eval.reader.images.tobytes()


def test_max_samples_and_val_fraction():
    splits = load_splits("digits", val_fraction=0.5, max_train_samples=100, max_eval_samples=30)
    assert (len(splits.train), len(splits.eval)) == (100, 30)
    with pytest.raises(BadInputError, match="val_fraction"):
        load_splits("digits", val_fraction=0.0)


def test_stratified_split_keeps_rare_classes_in_train():
    labels = np.array([0] * 10 + [1] * 10 + [2])  # class 2 has one example
    train, held = stratified_split(labels, 0.3, seed=0)
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(21))
    assert 2 in labels[train] and 2 not in labels[held]
    assert np.bincount(labels[held], minlength=3).tolist()[:2] == [3, 3]


def test_datasets_pickle(digits):
    clone = pickle.loads(pickle.dumps(digits.train))
    assert torch.equal(clone[5][0], digits.train[5][0]) and clone[5][1] == digits.train[5][1]


# --- image folders and bad files --------------------------------------------------------------


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("messy")
    for i in range(4):
        _png(root / "cat" / f"good{i}.png", RED)
        _png(root / "dog" / f"good{i}.png", BLUE)
    _png(root / "cat" / "rgba.png", (*RED, 128), mode="RGBA")
    Image.new("CMYK", (9, 7), (0, 255, 255, 0)).save(root / "cat" / "cmyk.jpg")  # red in CMYK
    Image.fromarray(np.full((5, 5), 65535, dtype=np.uint16)).save(root / "dog" / "deep.png")  # 16-bit
    assert Image.open(root / "dog" / "deep.png").mode.startswith("I")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (root / "cat" / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.png").write_text("not an image at all\n")
    (root / "dog" / "README.txt").write_text("ignored: not an image extension")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1junk")
    return root


def test_folder_source_skips_and_counts_bad_files(messy_folder):
    splits = load_splits(str(messy_folder), val_fraction=0.25, seed=0)
    assert splits.id2label == {0: "cat", 1: "dog"}
    assert len(splits.train) + len(splits.eval) == 14  # .txt and hidden files are not listed
    items = _all_items(splits.train) + _all_items(splits.eval)
    good = [item for item in items if item is not None]
    assert len(good) == 11
    assert splits.skipped == 3
    names = sorted(Path(p).name for p in splits.train.skipped_items() + splits.eval.skipped_items())
    assert names == ["empty.png", "notes.png", "truncated.jpg"]
    for image, label in good:
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        if image.shape[-2:] == (5, 5):  # the 16-bit image: full scale -> 255
            assert label == 1 and int(image.min()) == 255
        else:  # every other cat is red and every dog blue, RGBA and CMYK included
            red, blue = image[0].float().mean(), image[2].float().mean()
            assert (red > blue) == (label == 0), (label, image[:, 0, 0])
    # going over the data again does not count the same bad files twice
    _all_items(splits.train)
    assert splits.skipped == 3


def test_loader_workers_report_skipped(messy_folder):
    splits = load_splits(str(messy_folder), val_fraction=0.25, seed=0)
    transform = eval_transform(Preprocessing(16), 16)
    bad = {"empty.png", "notes.png", "truncated.jpg"}
    assert bad <= {Path(p).name for p in splits.train.reader.paths}  # seed 0 puts them all in train
    seen = 0
    for dataset, workers in ((splits.train, 2), (splits.eval, 0)):
        loader = make_loader(dataset, batch_size=4, shuffle=True, transform=transform, num_workers=workers, seed=0)
        for images, labels in loader:
            if len(labels) == 0:  # every image of the batch was bad: an empty batch, to be skipped
                assert images.shape[0] == 0
                continue
            assert images.dtype == torch.uint8 and images.shape[1:] == (3, 16, 16)
            assert labels.dtype == torch.int64 and len(labels) == len(images)
            seen += len(labels)
        if workers:
            assert splits.train.skipped == 3  # counted inside worker processes, read in this one
    assert seen == 11
    assert splits.skipped == 3


def test_too_many_consecutive_bad_files(tmp_path):
    for i in range(60):
        (tmp_path / "a" / f"bad{i:02d}.png").parent.mkdir(exist_ok=True)
        (tmp_path / "a" / f"bad{i:02d}.png").write_bytes(b"")
    for i in range(3):
        _png(tmp_path / "b" / f"ok{i}.png")
    splits = load_splits(str(tmp_path), val_fraction=0.1)
    loader = make_loader(splits.train, batch_size=8, shuffle=False, num_workers=0)
    with pytest.raises(BadInputError, match="50 bad images in a row"):
        for _ in loader:
            pass


def test_folder_with_split_subfolders(tmp_path):
    for split, n in (("train", 3), ("validation", 2)):
        for cls, color in (("cat", RED), ("dog", BLUE)):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", color)
    splits = load_splits(str(tmp_path))
    assert (len(splits.train), len(splits.eval)) == (6, 4)  # the validation folder, nothing carved
    assert splits.id2label == {0: "cat", 1: "dog"}
    with pytest.raises(BadInputError, match="available splits: train, validation"):
        load_splits(str(tmp_path), eval_split="test")


# --- CSV / JSONL ----------------------------------------------------------------------------


def test_csv_source_with_names(tmp_path):
    rows = ["path,label"]
    for i in range(5):
        _png(tmp_path / "imgs" / f"r{i}.png", RED)
        _png(tmp_path / "imgs" / f"b{i}.png", BLUE)
        rows += [f"imgs/r{i}.png,red", f"imgs/b{i}.png,blue"]
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    splits = load_splits(str(csv_path), val_fraction=0.2)
    assert splits.id2label == {0: "blue", 1: "red"}
    assert (len(splits.train), len(splits.eval)) == (8, 2)
    assert sorted(splits.eval.labels.tolist()) == [0, 1]
    for image, label in _all_items(splits.train) + _all_items(splits.eval):
        assert (image[0, 0, 0] > image[2, 0, 0]) == (splits.id2label[label] == "red")


def test_jsonl_source_with_int_labels_and_missing_column(tmp_path):
    lines = []
    for i in range(6):
        _png(tmp_path / f"{i}.png", RED if i % 2 else BLUE)
        lines.append(json.dumps({"path": f"{i}.png", "label": i % 2}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    splits = load_splits(str(tmp_path / "data.jsonl"), val_fraction=0.34)
    assert splits.id2label == {0: "0", 1: "1"}
    image, label = splits.train[0]
    assert (image[0, 0, 0] > image[2, 0, 0]) == (label == 1)

    (tmp_path / "bad.jsonl").write_text(json.dumps({"path": "0.png", "category": 1}) + "\n")
    with pytest.raises(BadInputError, match=r"no label column.*columns: path, category"):
        load_splits(str(tmp_path / "bad.jsonl"))


# --- Hugging Face datasets --------------------------------------------------------------------


def _hf_split(n: int, names=("ant", "bee", "cow"), label_feature=None) -> datasets.Dataset:
    colors = [(i * 80, 0, 0) for i in range(len(names))]
    features = datasets.Features(
        {
            "picture": datasets.Image(),
            "fine": label_feature or datasets.ClassLabel(names=list(names)),
            "note": datasets.Value("string"),
        }
    )
    labels = [i % len(names) for i in range(n)]
    return datasets.Dataset.from_dict(
        {
            "picture": [{"bytes": _png_bytes(colors[y]), "path": None} for y in labels],
            "fine": labels,
            "note": ["x"] * n,
        },
        features=features,
    )


def test_datasetdict_source_detects_columns_and_classlabel_names():
    corrupt = _hf_split(9)
    corrupt = datasets.Dataset.from_dict(
        {
            "picture": [{"bytes": b"garbage", "path": None}] + corrupt[1:]["picture"],
            "fine": corrupt["fine"],
            "note": corrupt["note"],
        },
        features=corrupt.features.copy(),
    )
    data = datasets.DatasetDict({"train": corrupt, "validation": _hf_split(6)})
    splits = load_splits(data)
    assert splits.id2label == {0: "ant", 1: "bee", 2: "cow"}
    assert (len(splits.train), len(splits.eval)) == (9, 6)  # the validation split is used as is
    assert splits.train[0] is None and splits.skipped == 1
    image, label = splits.train[4]
    assert image.shape == (3, 6, 6) and label == 1 and int(image[0, 0, 0]) == 80
    clone = pickle.loads(pickle.dumps(splits.eval))  # DataLoader workers get copies
    assert torch.equal(clone[2][0], splits.eval[2][0])


def test_saved_dataset_path_carves_eval_split(tmp_path):
    _hf_split(30).save_to_disk(str(tmp_path / "saved"))
    splits = load_splits(str(tmp_path / "saved"), val_fraction=0.2, seed=3)
    assert (len(splits.train), len(splits.eval)) == (24, 6)
    assert np.bincount(splits.eval.labels).tolist() == [2, 2, 2]
    assert splits.id2label[2] == "cow"


def test_hf_string_labels_and_label_column_errors():
    split = _hf_split(8, label_feature=datasets.Value("string"))
    split = split.cast_column("fine", datasets.Value("string")).rename_column("fine", "category")
    data = datasets.DatasetDict({"train": split})
    with pytest.raises(BadInputError, match=r"no label column.*columns: picture, category, note"):
        load_splits(data)
    with pytest.raises(BadInputError, match=r"label column 'kind' not found.*columns: picture, category, note"):
        load_splits(data, label_column="kind")
    splits = load_splits(data, label_column="category", val_fraction=0.25)
    assert splits.id2label == {0: "0", 1: "1", 2: "2"}
    with pytest.raises(BadInputError, match="unknown train split 'training'.*available splits: train"):
        load_splits(data, label_column="category", train_split="training")


def test_one_class_empty_split_and_missing_path(tmp_path):
    for i in range(4):
        _png(tmp_path / "only" / "cat" / f"{i}.png")
    with pytest.raises(BadInputError, match="1 class.*at least two"):
        load_splits(str(tmp_path / "only"))
    empty = datasets.DatasetDict({"train": _hf_split(6), "validation": _hf_split(6).select([])})
    with pytest.raises(BadInputError, match="validation split .* is empty"):
        load_splits(empty)
    with pytest.raises(BadInputError, match="train split .* is empty"):
        load_splits("digits", max_train_samples=0)
    with pytest.raises(BadInputError, match="does not exist"):
        load_splits(str(tmp_path / "nowhere"))
    with pytest.raises(BadInputError, match="does not exist"):
        load_splits("./no/such/data.csv")


# --- transforms, loader, mixup ----------------------------------------------------------------


def test_transforms_shapes_and_dtypes():
    deit = Preprocessing(resize_size=256, crop_size=224, interpolation="bicubic")
    tiny = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    for augment in (None, "rand", "trivial"):
        out = train_transform(deit, image_size=32, auto_augment=augment, scale=(0.5, 1.0))(tiny)
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    out = train_transform(deit, image_size=24, random_resized_crop=False, hflip=0.0)(tiny)
    assert out.shape == (3, 24, 24)
    wide = torch.randint(0, 256, (3, 10, 30), dtype=torch.uint8)
    for prep in (deit, Preprocessing(224, resize_mode="shortest"), Preprocessing(256, 224, "shortest")):
        out = eval_transform(prep, 32)(wide)
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    with pytest.raises(BadInputError, match="auto_augment"):
        train_transform(deit, image_size=32, auto_augment="auto")


def test_normalize_batch():
    batch = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = normalize_batch(batch, Preprocessing(224, mean=HALF_MEAN, std=HALF_STD))
    assert out.dtype == torch.float32
    assert torch.allclose(out[0], torch.full((3, 2, 2), -1.0)) and torch.allclose(out[1], torch.full((3, 2, 2), 1.0))


def test_loader_is_seeded_and_mixup_gives_soft_targets(digits):
    prep = Preprocessing(16, mean=HALF_MEAN, std=HALF_STD)
    transform = train_transform(prep, image_size=16, hflip=0.0, scale=(0.5, 1.0))

    def first_labels(seed: int) -> list[int]:
        loader = make_loader(digits.train, batch_size=32, shuffle=True, transform=transform, num_workers=0, seed=seed)
        return next(iter(loader))[1].tolist()

    assert first_labels(0) == first_labels(0) != first_labels(1)

    loader = make_loader(digits.train, batch_size=16, shuffle=True, transform=transform, num_workers=0, seed=0)
    images, labels = next(iter(loader))
    assert images.shape == (16, 3, 16, 16) and images.dtype == torch.uint8
    mix = mixup_fn(0.8, 1.0, 0.1, digits.num_classes)
    assert mix is not None
    mixed, targets = mix(normalize_batch(images, prep), labels)
    assert mixed.shape == (16, 3, 16, 16) and mixed.dtype == torch.float32
    assert targets.shape == (16, 10)
    assert torch.allclose(targets.sum(1), torch.ones(16))
    assert (targets.max(1).values < 1.0).all()  # smoothed / mixed, not one-hot
    # an odd batch (bad images dropped) still works
    mixed, targets = mix(normalize_batch(images[:5], prep), labels[:5])
    assert mixed.shape[0] == 5 and targets.shape == (5, 10)
    assert mixup_fn(0.0, 0.0, 0.1, 10) is None


def test_unreachable_hub_id_is_a_clear_error():
    # the test session is offline (conftest), so the Hub cannot be asked
    with pytest.raises(BadInputError, match="cannot load dataset 'someone/not-there'"):
        load_splits("someone/not-there")


def test_synthetic_source_is_deterministic_balanced_and_checked():
    splits = load_splits("synthetic:200:24", val_fraction=0.25, seed=0)
    assert (len(splits.train), len(splits.eval)) == (150, 50)
    assert list(splits.id2label.values()) == [str(i) for i in range(10)]
    image, label = splits.train[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8
    again = load_splits("synthetic:200:24", val_fraction=0.25, seed=0)
    assert torch.equal(again.train[0][0], image) and again.train[0][1] == label
    assert not torch.equal(splits.train[0][0], splits.train[1][0])  # each index its own image
    counts = np.bincount(splits.train.labels, minlength=10)
    assert counts.min() == counts.max() == 15  # 20 images per class, a quarter held out
    assert load_splits("synthetic", val_fraction=0.5).train[0][0].shape == (3, 256, 256)
    for bad in ("synthetic:5", "synthetic:many", "synthetic:100:0", "synthetic:1:2:3"):
        with pytest.raises(BadInputError, match="synthetic:N:SIZE"):
            load_splits(bad)


# --------------------------------------------------------------------------- decoding less of a JPEG
@pytest.fixture(scope="module")
def photo_files(tmp_path_factory) -> Path:
    """Real photographs as large JPEGs (two classes), one PNG, and one JPEG that EXIF says to turn."""
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("photos")
    for name, image in zip(("china", "flower"), load_sample_images().images):
        (root / name).mkdir()
        big = Image.fromarray(image).resize((1280, 854), Image.Resampling.BICUBIC)
        for index in range(3):
            big.rotate(index * 7).save(root / name / f"{index}.jpg", quality=90)
        big.save(root / name / "lossless.png")
    turned = Image.fromarray(load_sample_images().images[0][:400, :300])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    turned.save(root / "china" / "turned.jpg", quality=95, exif=exif)
    return root


def _items(dataset, transform, decode_files: bool, epoch: int = 0) -> list:
    """Every item through `transform`, decoded by the transform from the file or whole first."""
    wrapped = transform if decode_files else (lambda image: transform(image))
    transformed = TransformedDataset(dataset, wrapped, seed=7)
    transformed.set_epoch(epoch)
    return [transformed[i] for i in range(len(transformed))]


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_decoding_less_of_a_jpeg_keeps_the_crop_and_the_pixels(photo_files, kind):
    """From the file, a JPEG is decoded at a DCT scale the crop allows; the crop is the same region
    (same random draws) and the pixels match a full decode's to within JPEG-scaling noise. PNGs and
    EXIF-turned JPEGs take the whole-decode path: identical."""
    from vitzoo.data.transforms import decode_reduced, draft_factor

    preprocessing = Preprocessing(resize_size=224, resize_mode="exact", interpolation="bilinear")
    transform = (train_transform(preprocessing, image_size=224, hflip=0.5, scale=(0.5, 1.0)) if kind == "train"
                 else eval_transform(preprocessing, 224))
    splits = load_splits(str(photo_files), seed=0, val_fraction=0.25)
    dataset = splits.train
    for epoch in (0, 1):
        drafted, whole = _items(dataset, transform, True, epoch), _items(dataset, transform, False, epoch)
        for index, ((a, label_a), (b, label_b)) in enumerate(zip(drafted, whole)):
            assert label_a == label_b and a.shape == b.shape == (3, 224, 224) and a.dtype == torch.uint8
            path = dataset.reader.describe(index)
            if path.endswith(".png") or "turned" in path:
                assert torch.equal(a, b), path
                continue
            # the crop's corners are placed to the nearest pixel of the smaller decode (a shift of at
            # most one full-size pixel): compared at 1/4 scale, the same region is within a few grey
            # levels, while the mirrored image (a wrong flip or another region) is tens away
            def pooled(image):
                return torch.nn.functional.avg_pool2d(image.float()[None], 4)

            difference = (pooled(a) - pooled(b)).abs().mean().item()
            assert difference < 2.5, (path, difference)
            assert (pooled(a) - pooled(b.flip(-1))).abs().mean().item() > 4 * difference, path
    # the rule: the kept region's shorter side / factor >= output; a JPEG then decodes at 1/factor
    assert draft_factor(1280, 854, needed=224) == 2 and draft_factor(900, 1800, needed=224) == 4
    assert draft_factor(300, 1000, needed=224) == 1
    with Image.open(next((photo_files / "china").glob("0.jpg"))) as image:
        assert decode_reduced(image, 2).shape == (3, 427, 640)


def test_a_corrupt_jpeg_is_still_skipped_and_counted_on_the_file_path(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        for index in range(4):
            Image.new("RGB", (300, 260), (index * 40, 90, 30)).save(tmp_path / folder / f"{index}.jpg", quality=90)
    good = (tmp_path / "a" / "0.jpg").read_bytes()
    (tmp_path / "a" / "0.jpg").write_bytes(good[: len(good) // 3])  # truncated mid-scan
    splits = load_splits(str(tmp_path), seed=0, val_fraction=0.25)
    transform = train_transform(Preprocessing(resize_size=32, resize_mode="exact"), image_size=32)
    items = _items(splits.train, transform, True) + _items(splits.eval, transform, True)
    assert sum(item is None for item in items) == 1
    assert splits.train.skipped + splits.eval.skipped == 1
