"""Where training images come from: `load_splits` turns a `--dataset` value into train/eval sets.

One entry point for every recipe (fine-tuning, distillation, pretraining) so that they all
accept the same sources and fail the same way, *before* any model is built:

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, classes "0".."9");
  needs no network, so it is the default of every test and example.
- ``synthetic``, ``synthetic:N`` or ``synthetic:N:SIZE``: N (default 2560) random-noise RGB
  images of SIZE px (default 256) in 10 classes, made on the fly: a speed benchmark's data
  source of any length, with nothing to download or decode (nothing to learn either).
- a folder with one subfolder per class (class names = subfolder names, sorted), or with one
  subfolder per split (``train/``, ``validation/``...) each holding class subfolders;
- a CSV (or TSV) or JSONL file with ``path`` and ``label`` columns, paths relative to the
  file's folder, labels as names or integers;
- a folder written by `datasets.Dataset.save_to_disk`, a Hugging Face Hub id (through
  `datasets.load_dataset`), or a `datasets.DatasetDict` / `datasets.Dataset` object.

Sources with a single pool of images (digits, a flat folder, a CSV/JSONL file, a Hub dataset
without a validation split) get their eval split carved out of train: `val_fraction` of every
class, chosen with `seed`, so the split is stratified and reproducible.

Select on validation, report on test: with `keep_test` (the fine-tuning and DeiT recipes), a test
split -- the source's "test", or an `eval_split` that is not a validation split -- is kept apart as
`Splits.test`, and the eval split (what training evaluates on and keeps its best model by) is the
source's validation split or `val_fraction` (default `VAL_FRACTION_WITH_TEST`) of train held out.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from vitzoo.data.dataset import ArrayReader, FileReader, HFReader, LabeledImageDataset, Reader, SyntheticReader
from vitzoo.errors import BadInputError, looks_like_token
from vitzoo.io import is_local_path

BUILTIN_DATASETS = ("digits", "synthetic")
EVAL_SPLIT_NAMES = ("validation", "valid", "val")  # used as eval split when present; "test" never is
TEST_SPLIT_NAME = "test"  # kept apart for the final score when a recipe reports on a test split (`keep_test`)
# the share of train held out as the eval split when the source has none: for evaluation itself, or, when a
# test split is kept for the final score, for validation only (the choice of the kept model)
VAL_FRACTION = 0.2
VAL_FRACTION_WITH_TEST = 0.1
IMAGE_COLUMN_NAMES = ("image", "img")
LABEL_COLUMN_NAMES = ("label", "labels")
PATH_COLUMN_NAMES = ("path", "image", "file", "filename", "filepath", "image_path")  # CSV / JSONL
TABLE_LABEL_COLUMN_NAMES = ("label", "labels", "class", "target")  # CSV / JSONL


@dataclass
class Splits:
    """Train and eval datasets of one source, with the class names they share.

    `train`, `eval` and `test` yield `(uint8 3xHxW tensor, int label)` or `None` for a bad image;
    `skipped` sums the distinct bad images they have met so far, so read it after training
    and evaluation to report it. `test` is None unless a test split is kept apart (`keep_test`).
    """

    train: LabeledImageDataset
    eval: LabeledImageDataset
    id2label: dict[int, str]
    label2id: dict[str, int]
    source: str
    # augmentation defaults the source asks for, e.g. no mirroring for digits (see DIGITS_AUGMENTATION)
    augmentation: dict[str, Any] = field(default_factory=dict)
    eval_split: str = "eval"  # which split `eval` is, e.g. "validation" or "train (held-out 0.2)"
    test: LabeledImageDataset | None = None
    test_split: str | None = None
    duplicates: int = 0  # rows of a CSV/JSONL table that listed a file again (same label), left out

    @property
    def num_classes(self) -> int:
        return len(self.id2label)

    @property
    def skipped(self) -> int:
        return self.train.skipped + self.eval.skipped + (self.test.skipped if self.test is not None else 0)

    def summary(self) -> dict[str, Any]:
        """What a run's results.json records about its data (and its start-up line prints)."""
        test = {"test_split": self.test_split, "test_samples": len(self.test)} if self.test is not None else {}
        return {
            "source": self.source,
            "num_classes": self.num_classes,
            "train_samples": len(self.train),
            "eval_samples": len(self.eval),
            "eval_split": self.eval_split,
            **test,
            "skipped": self.skipped,
            **({"duplicates_dropped": self.duplicates} if self.duplicates else {}),
        }


@dataclass
class _RawSplit:
    reader: Reader
    labels: np.ndarray  # int64 class ids (or, before `encode_labels`, the raw label values)
    duplicates: int = 0  # table rows left out for listing a file already listed

    def subset(self, indices: np.ndarray) -> _RawSplit:
        return _RawSplit(self.reader.subset(indices), self.labels[indices])


def load_splits(
    dataset: Any,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str = "train",
    eval_split: str | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    keep_test: bool = False,
) -> Splits:
    """Load `dataset` as train/eval splits (and a test split with `keep_test`), checking everything that
    can be checked up front.

    `dataset` is "digits", a local path (image folder, CSV/TSV/JSONL file, `save_to_disk`
    folder), a Hub id, or a `datasets.DatasetDict` / `datasets.Dataset`. `image_column` and
    `label_column` override column detection (Hugging Face datasets, CSV/JSONL files).
    `eval_split` defaults to a "validation"/"valid"/"val" split when the source has one;
    otherwise `val_fraction` (default `VAL_FRACTION`) of train is held out (stratified, seeded by `seed`).
    With `keep_test`, a test split -- `eval_split` when it names a split that is not a validation split,
    else the source's labelled "test" split -- becomes `Splits.test` (`test_split_of`), and the eval split
    is chosen as if `eval_split` were not given, `val_fraction` defaulting to `VAL_FRACTION_WITH_TEST`.
    `max_train_samples` / `max_eval_samples` keep a seeded random subset (for quick runs; the eval
    limit applies to the test split too).

    Raises `BadInputError` for a path that does not exist, an unknown split (listing those that
    exist), a missing image or label column (listing the columns), an empty split, or fewer
    than two classes. Images are decoded lazily; bad ones are skipped and counted then.
    """
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise BadInputError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    splits, names, source = _resolve(dataset, image_column, label_column, train_split)
    duplicates = sum(split.duplicates for split in splits.values())

    if train_split not in splits:
        raise BadInputError(f"unknown train split {train_split!r} in {source}; available splits: {', '.join(splits)}")
    if eval_split is not None and eval_split not in splits:
        raise BadInputError(f"unknown eval split {eval_split!r} in {source}; available splits: {', '.join(splits)}")
    test_split = test_split_of(splits, train_split, eval_split) if keep_test else None
    if test_split is not None and eval_split is None and not _labelled(splits[test_split], names):
        warnings.warn(f"the {test_split!r} split of {source} is unlabelled: no test score; training evaluates on "
                      "the validation split or a held-out share of train", stacklevel=2)
        test_split = None
    if test_split is not None:
        eval_split = None  # validation apart from the test split
    if val_fraction is None:
        val_fraction = VAL_FRACTION_WITH_TEST if test_split is not None else VAL_FRACTION
    if eval_split is None:
        eval_split = next((s for s in EVAL_SPLIT_NAMES if s in splits and s != train_split), None)
    if names is None:  # raw label values: name the classes of the splits in use only
        used = [s for s in (train_split, eval_split, test_split) if s is not None]
        encoded, names = encode_labels(*(splits[s].labels for s in used))
        splits = {s: _RawSplit(splits[s].reader, ids) for s, ids in zip(used, encoded)}

    train = splits[train_split]
    _check_not_empty(train, train_split, source)
    _check_labels(train, train_split, names, source)
    if eval_split is None:
        train_idx, eval_idx = stratified_split(train.labels, val_fraction, seed)
        train, evaluation = train.subset(train_idx), train.subset(eval_idx)
        eval_name = f"{train_split} (held-out {val_fraction:g})"
    else:
        evaluation, eval_name = splits[eval_split], eval_split
        _check_labels(evaluation, eval_split, names, source)
    test = splits[test_split] if test_split is not None else None
    if test is not None:
        _check_labels(test, test_split, names, source)

    if max_train_samples is not None:
        train = train.subset(_sample(len(train.labels), max_train_samples, seed + 1))
    if max_eval_samples is not None:
        evaluation = evaluation.subset(_sample(len(evaluation.labels), max_eval_samples, seed + 2))
        if test is not None:
            test = test.subset(_sample(len(test.labels), max_eval_samples, seed + 2))
    _check_not_empty(train, train_split, source)
    _check_not_empty(evaluation, eval_name, source)
    if test is not None:
        _check_not_empty(test, test_split, source)
    present = np.unique(train.labels)
    if len(present) < 2:
        only = names[int(present[0])]
        raise BadInputError(
            f"the {train_split} split of {source} holds a single class ({only!r}); classification needs at least two"
        )

    id2label = dict(enumerate(names))
    return Splits(
        train=LabeledImageDataset(train.reader, train.labels, name="train"),
        eval=LabeledImageDataset(evaluation.reader, evaluation.labels, name="eval"),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        source=source,
        augmentation=dict(DIGITS_AUGMENTATION) if source == "digits" else {},
        eval_split=eval_name,
        test=LabeledImageDataset(test.reader, test.labels, name="test") if test is not None else None,
        test_split=test_split,
        duplicates=duplicates,
    )


def test_split_of(available: Sequence[str], train_split: str, eval_split: str | None) -> str | None:
    """The split a run reports on at the end, apart from the one it validates on: `eval_split` when it
    names a split that is neither a validation split (`EVAL_SPLIT_NAMES`) nor the training split, else
    "test" when the source has one (and does not train on it); None: no test split."""
    if eval_split is not None:
        return None if eval_split in EVAL_SPLIT_NAMES or eval_split == train_split else eval_split
    return TEST_SPLIT_NAME if TEST_SPLIT_NAME in available and train_split != TEST_SPLIT_NAME else None


def _labelled(split: _RawSplit, names: Sequence[str] | None) -> bool:
    """Whether every example of `split` has a label (class ids in range, or raw values that are not empty)."""
    if names is None:
        return not any(v is None or v == "" for v in split.labels)
    return bool(((split.labels >= 0) & (split.labels < len(names))).all())


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, held-out) indices: `fraction` of every class held out, chosen with `seed`.

    The held-out total is `round(len(labels) * fraction)`, shared between classes by largest
    remainder; every class keeps at least one training example (a class seen once goes to
    train).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    target = min(max(int(round(len(labels) * fraction)), 1), len(labels) - 1)
    quota = counts * fraction
    cap = np.maximum(counts - 1, 0)
    take = np.minimum(np.floor(quota).astype(np.int64), cap)
    remainder = quota - take
    # classes with the largest remainders get one more; random tie-break, seeded
    for c in np.lexsort((rng.random(len(classes)), -remainder)):
        if take.sum() >= target:
            break
        if take[c] < cap[c]:
            take[c] += 1
    held_out = [rng.permutation(np.flatnonzero(inverse == c))[: take[c]] for c in range(len(classes))]
    eval_idx = np.sort(np.concatenate(held_out)) if held_out else np.zeros(0, np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[eval_idx] = False
    return np.flatnonzero(train_mask), eval_idx


# --- checks ----------------------------------------------------------------------------------


def _check_not_empty(split: _RawSplit, name: str, source: str) -> None:
    if len(split.labels) == 0:
        raise BadInputError(f"the {name} split of {source} is empty")


def _check_labels(split: _RawSplit, name: str, names: Sequence[str], source: str) -> None:
    if len(names) < 2:
        only = f" ({names[0]!r})" if names else ""
        raise BadInputError(f"{source} has {len(names)} class{only}; classification needs at least two")
    bad = (split.labels < 0) | (split.labels >= len(names))
    if bad.any():
        raise BadInputError(
            f"{int(bad.sum())} examples of the {name} split of {source} have a label outside 0..{len(names) - 1} "
            "(an unlabelled split? pick another with train_split / eval_split)"
        )


def _sample(n: int, limit: int, seed: int) -> np.ndarray:
    if limit >= n:
        return np.arange(n)
    if limit < 0:
        raise BadInputError(f"max samples must be at least 0, got {limit}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


# --- resolving a source ------------------------------------------------------------------------


def _resolve(
    dataset: Any, image_column: str | None, label_column: str | None, train_split: str
) -> tuple[dict[str, _RawSplit], list[str] | None, str]:
    """The splits of a source, its class names (None: labels are raw values still to encode)
    and a description of it for messages."""
    if not isinstance(dataset, (str, os.PathLike)):
        return _from_hf(dataset, image_column, label_column, source=type(dataset).__name__)
    name = os.fspath(dataset)
    if name in BUILTIN_DATASETS:
        return _digits() if name == "digits" else _synthetic(name)
    if name.startswith("synthetic:"):
        return _synthetic(name)
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset_dict.json")) or os.path.exists(os.path.join(path, "state.json")):
            import datasets

            return _from_hf(datasets.load_from_disk(path), image_column, label_column, source=name)
        return _from_folder(path, train_split)
    if os.path.isfile(path):
        return _from_table(path, image_column, label_column)
    return _from_hf(_load_hub(name), image_column, label_column, source=name)


def check_source(dataset: str, image_column: str | None = None, label_column: str | None = None) -> None:
    """Refuse now what `load_splits` would refuse about `dataset` without decoding an image or asking the Hub:
    a bad synthetic spec, a path that does not exist, a CSV/JSONL table's columns and rows (read, not its
    images), a token typed as a Hub id, and, offline, a Hub id not in the local cache (asked of the cache, at
    once). Recipes call it before they open the run folder; image folders are walked when the data loads."""
    name = os.fspath(dataset)
    path = os.path.expanduser(name)
    if name in BUILTIN_DATASETS or name.startswith("synthetic:"):
        if name != "digits":
            _synthetic(name)
    elif os.path.isfile(path):
        _from_table(path, image_column, label_column)
    elif not os.path.isdir(path):
        _check_hub_id(name)
        import datasets

        if datasets.config.HF_HUB_OFFLINE:
            _hub_call(name, datasets.load_dataset_builder)


def _check_hub_id(name: str) -> None:
    """What is wrong with `name` as a Hub id before it goes into a Hub URL: a local path that does not exist,
    or a token (which must never be sent as a name, nor echoed)."""
    if is_local_path(name):
        raise BadInputError(f"dataset path does not exist: {name}")
    if looks_like_token(name):
        raise BadInputError("the dataset name looks like a Hugging Face access token (hf_...): it was neither used nor "
                            "sent to the Hub. Pass a dataset id (USER/NAME), folder or file; vitzoo reads a token from "
                            "HF_TOKEN or `hf auth login` only")


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")  # either one keeps `datasets` off the Hub


def _load_hub(name: str) -> Any:
    _check_hub_id(name)
    import datasets

    return _hub_call(name, datasets.load_dataset)


def _hub_call(name: str, call: Callable[[str], Any]) -> Any:
    """`call(name)` (`datasets.load_dataset` or its builder), its failures as one line."""
    import datasets

    try:
        return call(name)
    except ConnectionError:
        if not datasets.config.HF_HUB_OFFLINE:
            raise BadInputError(f"cannot load dataset {name!r}: the Hub cannot be reached from this machine and the "
                                "dataset is not in the local cache; load it once where the Hub is reachable, or pass "
                                "'digits', an image folder, or a CSV/JSONL file") from None
        switches = " and ".join(f"{variable}={os.environ[variable]}" for variable in OFFLINE_VARIABLES
                                if os.environ.get(variable, "").upper() in ("1", "ON", "YES", "TRUE")) or "offline mode"
        raise BadInputError(f"cannot load dataset {name!r}: it is not in the local cache ({datasets.config.HF_DATASETS_CACHE}) "
                            f"and the Hub is offline ({switches}); load it once with the Hub reachable and offline mode "
                            "off, or pass 'digits', an image folder, or a CSV/JSONL file") from None
    except Exception as error:  # not found, gated, a broken cache...: all mean "cannot use this name"
        raise BadInputError(
            f"cannot load dataset {name!r}: it is not a local path, and loading it with datasets.load_dataset "
            f"failed ({type(error).__name__}: {error}). Check the name and your network, or pass 'digits', "
            "an image folder, or a CSV/JSONL file."
        ) from error


# Handwritten digits are not mirror-symmetric (a flipped 2 is no 2), and at 8x8 pixels a crop of
# 8% of the area keeps about 2x2 pixels: recipes default to no flips and crops of half the area
# or more for this source. An explicit --hflip / --crop-scale always wins.
DIGITS_AUGMENTATION = {"hflip": 0.0, "crop_scale": 0.5}


def _digits() -> tuple[dict[str, _RawSplit], list[str], str]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    labels = digits.target.astype(np.int64)
    return {"train": _RawSplit(ArrayReader(images), labels)}, [str(i) for i in range(10)], "digits"


SYNTHETIC_DEFAULTS = (2560, 256)  # images, pixels per side


def _synthetic(name: str) -> tuple[dict[str, _RawSplit], list[str], str]:
    """`synthetic[:N[:SIZE]]`: N random RGB images of SIZE px, labels cycling through 10 classes."""
    parts = name.split(":")[1:]
    try:
        count, size = (*map(int, parts), *SYNTHETIC_DEFAULTS[len(parts):]) if len(parts) <= 2 else (0, 0)
    except ValueError:
        count, size = 0, 0
    if count < 20 or size < 1:
        raise BadInputError(
            f"bad synthetic dataset {name!r}: expected 'synthetic', 'synthetic:N' or 'synthetic:N:SIZE' "
            "with N >= 20 images (two per class) and SIZE >= 1 pixels, e.g. 'synthetic:51200:256'"
        )
    labels = np.arange(count, dtype=np.int64) % 10
    return {"train": _RawSplit(SyntheticReader(np.arange(count), size), labels)}, [str(i) for i in range(10)], name


def _image_extensions() -> set[str]:
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def _class_files(folder: str, extensions: set[str]) -> list[str]:
    """Image files (by extension) under `folder`, recursively, sorted; hidden files ignored. Links to
    folders inside it are not followed (a link to `..` would pull other classes' images in)."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            if not file.startswith(".") and os.path.splitext(file)[1].lower() in extensions:
                found.append(os.path.join(root, file))
    return found


def _subdirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _from_folder(path: str, train_split: str) -> tuple[dict[str, _RawSplit], list[str], str]:
    """A folder of class subfolders, or of split subfolders that each hold class subfolders.

    It is read as split subfolders when it has a `train_split` subfolder ("train") that holds
    folders itself (class folders hold images, possibly in nested folders of their own).
    """
    extensions = _image_extensions()
    top = _subdirs(path)
    if not top:
        raise BadInputError(f"{path} has no subfolders; expected one subfolder of images per class")
    split_layout = train_split in top and bool(_subdirs(os.path.join(path, train_split)))
    split_roots = {d: os.path.join(path, d) for d in top} if split_layout else {"train": path}
    per_split = {
        split: {cls: _class_files(os.path.join(root, cls), extensions) for cls in _subdirs(root)}
        for split, root in split_roots.items()
    }
    train = train_split if split_layout else "train"
    # the label set is the training split's classes; an empty class folder there is left out (with a
    # warning), and a class that only another split has is an error: the head could never learn it
    empty = sorted(cls for cls, files in per_split[train].items() if not files)
    if empty:
        warnings.warn(f"{path}: class folder(s) {', '.join(empty)} hold no images and are left out of the label set",
                      stacklevel=3)
    names = sorted(cls for cls, files in per_split[train].items() if files)
    for split, classes in per_split.items():
        unknown = sorted(cls for cls, files in classes.items() if files and cls not in names)
        if unknown:
            raise BadInputError(f"{path}: the {split!r} split has class folder(s) {', '.join(unknown[:5])} that the "
                                f"training split ({train!r}) lacks; the labels come from the training split, so add "
                                "training images of those classes or remove them")
    index = {cls: i for i, cls in enumerate(names)}
    seen: set[str] = set()  # one file counted once, whatever links lead to it (the training split first)
    splits = {}
    for split in sorted(per_split, key=lambda name: name != train):
        paths, labels = [], []
        for cls in sorted(per_split[split]):
            for file in per_split[split][cls]:
                real = os.path.realpath(file)
                if cls in index and real not in seen:
                    seen.add(real)
                    paths.append(file)
                    labels.append(index[cls])
        splits[split] = _RawSplit(FileReader(paths), np.array(labels, dtype=np.int64))
    return splits, names, path


def _read_rows(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a CSV/TSV or JSONL file, and the column names seen."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv"):
        # utf-8-sig: a table saved by Excel starts with a byte-order mark, which is no part of the first column's name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if ext == ".tsv" else ",")
            return list(reader), list(reader.fieldnames or [])
    if ext in (".jsonl", ".json"):
        rows, columns = [], {}
        with open(path, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise BadInputError(f"{path}, line {number}: not a JSON object ({error})") from None
                if not isinstance(row, dict):
                    raise BadInputError(f"{path}, line {number}: expected a JSON object per line")
                rows.append(row)
                columns.update(dict.fromkeys(row))
        return rows, list(columns)
    raise BadInputError(
        f"unsupported dataset file {path}: expected a .csv, .tsv or .jsonl file with path and label columns, "
        "or an image folder"
    )


def _pick_column(given: str | None, candidates: Sequence[str], columns: Sequence[str], what: str, where: str) -> str:
    if given is not None:
        if given not in columns:
            raise BadInputError(f"{what} column {given!r} not found in {where}; columns: {', '.join(columns)}")
        return given
    for name in candidates:
        if name in columns:
            return name
    option = "image_column" if what == "image" else "label_column"
    raise BadInputError(
        f"no {what} column found in {where} (looked for {', '.join(candidates)}); columns: {', '.join(columns)}. "
        f"Name it with {option}."
    )


def _from_table(
    path: str, image_column: str | None, label_column: str | None
) -> tuple[dict[str, _RawSplit], None, str]:
    """A CSV/JSONL table's rows as one split. Each file counts once, however its path is spelled (./a.png,
    a.png, an absolute path, a link): a row that lists it again with the same label is left out and counted
    (`_RawSplit.duplicates`), as folders count a file once; with another label it is an error, since the same
    image would teach both classes and could land in train and eval at once."""
    rows, columns = _read_rows(path)
    path_col = _pick_column(image_column, PATH_COLUMN_NAMES, columns, "image", path)
    label_col = _pick_column(label_column, TABLE_LABEL_COLUMN_NAMES, columns, "label", path)
    folder = os.path.dirname(os.path.abspath(path))
    paths, values = [], []
    seen: dict[str, tuple[int, Any, str]] = {}  # resolved path -> (row, label, file as written)
    for number, row in enumerate(rows, 1):
        file, label = row.get(path_col), row.get(label_col)
        if file in (None, "") or label in (None, ""):
            raise BadInputError(f"{path}, row {number}: empty {path_col!r} or {label_col!r}")
        joined = os.path.join(folder, os.path.expanduser(str(file)))
        real = os.path.normcase(os.path.realpath(joined))
        if real in seen:
            first_row, first_label, first_file = seen[real]
            if str(first_label) != str(label):
                raise BadInputError(f"{path}: rows {first_row} ({first_file!r}) and {number} ({str(file)!r}) list the same "
                                    f"file under two labels, {first_label!r} and {label!r}; an image has one label: keep "
                                    "the right row and delete the other")
            continue
        seen[real] = (number, label, str(file))
        paths.append(joined)
        values.append(label)
    split = _RawSplit(FileReader(paths), np.array(values, dtype=object), duplicates=len(rows) - len(paths))
    return {"train": split}, None, path


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def encode_labels(*columns: Sequence[Any]) -> tuple[list[np.ndarray], list[str]]:
    """Class ids for label values given as names or integers, and the class names.

    Integers (or integer strings) are sorted numerically, names alphabetically; ids are
    positions in that order, so integer labels 0..K-1 keep their values (other integers are
    renumbered, their names are kept). Several columns (e.g. train and eval labels) share one
    set of names: returns one id array per column, and the names.
    """
    values = [v for column in columns for v in column]
    if any(v is None or v == "" for v in values):
        raise BadInputError(f"{sum(v is None or v == '' for v in values)} examples have no label")
    ints = [_as_int(v) for v in values]
    if values and all(i is not None for i in ints):
        distinct = sorted(set(ints))
        keys = [str(i) for i in distinct]
        lookup = {i: n for n, i in enumerate(distinct)}
        encoded = [np.array([lookup[_as_int(v)] for v in column], dtype=np.int64) for column in columns]
    else:
        keys = sorted({str(v) for v in values})
        lookup_str = {name: n for n, name in enumerate(keys)}
        encoded = [np.array([lookup_str[str(v)] for v in column], dtype=np.int64) for column in columns]
    return encoded, keys


def _from_hf(
    data: Any, image_column: str | None, label_column: str | None, *, source: str
) -> tuple[dict[str, _RawSplit], list[str] | None, str]:
    import datasets

    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"train": data})
    if not isinstance(data, datasets.DatasetDict):
        raise BadInputError(
            f"cannot use a {type(data).__name__} as a dataset; pass 'digits', a path, a Hub id, "
            "or a datasets.DatasetDict / datasets.Dataset (streaming datasets are not supported)"
        )
    if not data:
        raise BadInputError(f"{source} has no splits")
    first = next(iter(data.values()))
    features = first.features
    columns = list(first.column_names)
    image_col = image_column or next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    image_col = _pick_column(image_col, IMAGE_COLUMN_NAMES, columns, "image", source)
    label_col = label_column or next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    label_col = _pick_column(label_col, LABEL_COLUMN_NAMES, columns, "label", source)
    for split, ds in data.items():
        for col, what in ((image_col, "image"), (label_col, "label")):
            if col not in ds.column_names:
                raise BadInputError(
                    f"{what} column {col!r} not found in split {split!r} of {source}; "
                    f"columns: {', '.join(ds.column_names)}"
                )

    readers = {}
    for split, ds in data.items():
        images = ds.select_columns([image_col]).with_format(None)  # plain Python cells, whatever the format
        if isinstance(images.features[image_col], datasets.Image):
            images = images.cast_column(image_col, datasets.Image(decode=False))  # decode (and catch) ourselves
        readers[split] = HFReader(images, image_col)

    # class names come from a ClassLabel feature when there is one, else from the values themselves
    class_label = features[label_col] if isinstance(features[label_col], datasets.ClassLabel) else None
    names = list(class_label.names) if class_label is not None else None
    labels = {}
    for split, ds in data.items():
        values = ds.with_format("arrow")[label_col].to_pylist()
        if class_label is not None:
            labels[split] = np.array([-1 if v is None else v for v in values], dtype=np.int64)
            continue
        labels[split] = np.array(values, dtype=object)  # names assigned by `encode_labels`
    return {split: _RawSplit(readers[split], labels[split]) for split in data}, names, source
