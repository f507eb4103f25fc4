"""Torch datasets over labelled images that survive bad files.

A `LabeledImageDataset` pairs a *reader* (something that fetches image number `i` from
wherever the images live: an in-memory array, files on disk, a Hugging Face dataset) with an
integer label array. Decoding is lazy and robust: an item whose image cannot be decoded
(corrupt, truncated, zero-byte, not an image at all) comes back as `None` instead of raising,
so one bad file cannot end a long run; the collate function of `vitzoo.data.make_loader` drops
those `None`s.

Bad items are recorded in a boolean mask held in shared memory, so marks made inside
DataLoader worker processes are visible to the main process: `dataset.skipped` is the number
of *distinct* bad items seen so far (an item that is bad in every epoch counts once), which is
what a run reports in its results. A long run of bad items in a row is not noise but a broken
dataset (wrong folder, wrong column, truncated download), so after `max_consecutive_bad` bad
items in a row the dataset raises `BadInputError` instead of silently training on nothing.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vitzoo.errors import BadInputError
from vitzoo.images import EXIF_ORIENTATION, open_image, to_uint8_rgb, upright

logger = logging.getLogger("vitzoo.data")

MAX_CONSECUTIVE_BAD = 50

Item = tuple[torch.Tensor, int]


def decode_image_bytes(data: bytes) -> Image.Image:
    """Fully decode an encoded image held in memory (the bytes twin of `open_image`)."""
    if not data:
        raise BadInputError("image bytes are empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return upright(image)
    except Image.DecompressionBombError as error:
        raise BadInputError(f"an image is too large to decode safely ({error}); resize it first") from None


# --- readers: fetch image `i` of a source as anything `to_uint8_rgb` accepts --------------------


class ArrayReader:
    """Images held in one N x H x W (x C) numpy array (e.g. scikit-learn's digits)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, index: int) -> Any:
        return self.images[index]

    def describe(self, index: int) -> str:
        return f"array item {index}"

    def subset(self, indices: np.ndarray) -> ArrayReader:
        return ArrayReader(self.images[indices])


class SyntheticReader:
    """Random-noise RGB images made on the fly from their index (the `synthetic` dataset): a
    source of any size with no decode cost and no download, for measuring training speed."""

    def __init__(self, ids: np.ndarray, size: int) -> None:
        self.ids, self.size = np.asarray(ids, dtype=np.int64), size

    def __len__(self) -> int:
        return len(self.ids)

    def __call__(self, index: int) -> Any:
        rng = np.random.default_rng(int(self.ids[index]))
        return rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)

    def describe(self, index: int) -> str:
        return f"synthetic image {int(self.ids[index])}"

    def subset(self, indices: np.ndarray) -> SyntheticReader:
        return SyntheticReader(self.ids[indices], self.size)


class FileReader:
    """Images stored as files, one path per item."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, index: int) -> Any:
        return open_image(self.paths[index])

    def describe(self, index: int) -> str:
        return self.paths[index]

    def decode_with(self, index: int, decode: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
        """`decode` given the file opened but not yet decoded (so it can decode less of a JPEG);
        an image that EXIF says to turn is decoded whole and turned first."""
        path = self.paths[index]
        if not os.path.exists(path):
            raise BadInputError(f"image file not found: {path}")
        with Image.open(path) as image:
            if image.getexif().get(EXIF_ORIENTATION, 1) not in (1, None):
                return decode(upright(image))
            return decode(image)

    def subset(self, indices: np.ndarray) -> FileReader:
        return FileReader([self.paths[i] for i in indices])


class HFReader:
    """One column of a Hugging Face `datasets.Dataset`.

    An `Image` feature column should be cast to `Image(decode=False)` beforehand (as
    `load_splits` does) so that decoding happens here, where a corrupt image is caught, rather
    than inside `datasets`. Cells may also hold a path, encoded bytes, a PIL image or pixel
    arrays.
    """

    def __init__(self, dataset: Any, column: str) -> None:
        self.dataset = dataset
        self.column = column

    def __len__(self) -> int:
        return len(self.dataset)

    def __call__(self, index: int) -> Any:
        cell = self.dataset[int(index)][self.column]
        if isinstance(cell, dict):  # an undecoded `Image` feature: {"bytes": ..., "path": ...}
            if cell.get("bytes"):
                return decode_image_bytes(cell["bytes"])
            if cell.get("path"):
                return open_image(cell["path"])
            raise BadInputError("image cell holds neither bytes nor a path")
        if isinstance(cell, (bytes, bytearray)):
            return decode_image_bytes(bytes(cell))
        if isinstance(cell, str):
            return open_image(cell)
        if isinstance(cell, (list, tuple)):
            return np.asarray(cell)
        if cell is None:
            raise BadInputError("image cell is empty")
        return cell

    def describe(self, index: int) -> str:
        return f"row {index} of column {self.column!r}"

    def subset(self, indices: np.ndarray) -> HFReader:
        return HFReader(self.dataset.select([int(i) for i in indices]), self.column)


Reader = ArrayReader | FileReader | HFReader


class LabeledImageDataset(Dataset):
    """`(uint8 3xHxW RGB tensor, int label)` items, or `None` for an image that cannot be used.

    Picklable (DataLoader workers get a copy); the bad-item mask lives in shared memory, so
    `skipped` counts what every worker found.
    """

    def __init__(
        self,
        reader: Reader,
        labels: Sequence[int] | np.ndarray,
        *,
        name: str = "dataset",
        max_consecutive_bad: int = MAX_CONSECUTIVE_BAD,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) != len(reader):
            raise ValueError(f"{len(reader)} images but {len(labels)} labels")
        self.reader = reader
        self.labels = labels
        self.name = name
        self.max_consecutive_bad = max_consecutive_bad
        self._bad = torch.zeros(len(labels), dtype=torch.bool).share_memory_()
        self._consecutive_bad = 0  # per process: each DataLoader worker counts its own run
        self._recent_bad: list[str] = []

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def skipped(self) -> int:
        """Distinct items found undecodable so far (across all DataLoader workers)."""
        return int(self._bad.sum())

    def skipped_items(self) -> list[str]:
        """Where the items counted in `skipped` come from (file paths, row numbers)."""
        return [self.reader.describe(int(i)) for i in torch.nonzero(self._bad).flatten()]

    def _mark_bad(self, index: int, reason: str) -> None:
        if not self._bad[index]:
            self._bad[index] = True
            logger.warning("skipping bad image in %s (%s): %s", self.name, self.reader.describe(index), reason)
        self._consecutive_bad += 1
        self._recent_bad = (self._recent_bad + [f"{self.reader.describe(index)}: {reason}"])[-3:]
        if self._consecutive_bad >= self.max_consecutive_bad:
            examples = "\n  ".join(self._recent_bad)
            raise BadInputError(
                f"{self._consecutive_bad} bad images in a row in the {self.name} data; the dataset looks broken "
                f"(wrong folder or image column, incomplete download?). Last ones:\n  {examples}"
            )

    def __getitem__(self, index: int) -> Item | None:
        return self.load(index)

    def load(self, index: int, decode: Callable[[Image.Image], torch.Tensor] | None = None) -> Item | None:
        """Item `index`, or None when its image cannot be decoded. `decode` (a transform's
        `from_file`, for readers of files: see `decodes_files`) decodes the opened file itself,
        so that it can decode less of it, and returns the transformed image."""
        index = int(index)
        if self._bad[index]:
            self._mark_bad(index, "known bad")
            return None
        try:
            image = self.reader.decode_with(index, decode) if decode is not None else to_uint8_rgb(self.reader(index))
        except Exception as error:  # any decoder failure on any input is a bad item, not a crash
            self._mark_bad(index, f"{type(error).__name__}: {error}")
            return None
        self._consecutive_bad = 0
        return image, int(self.labels[index])

    @property
    def decodes_files(self) -> bool:
        """Whether `load` can hand opened image files to a transform's `from_file`."""
        return hasattr(self.reader, "decode_with")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_consecutive_bad"] = 0
        state["_recent_bad"] = []
        return state

    def __repr__(self) -> str:
        return f"LabeledImageDataset({self.name!r}, {len(self)} items, {self.skipped} skipped)"


class TransformedDataset(Dataset):
    """A dataset with a per-sample image transform applied; `None` items pass through.

    With a `seed`, each sample's random augmentation draws from an RNG seeded by (seed, epoch,
    index) alone, not from the global stream: the augmentation of a sample does not depend on
    which worker made it, on loader prefetching, or on whether the run was resumed mid-epoch.
    Call `set_epoch` at each epoch start.
    """

    def __init__(
        self, dataset: Dataset, transform: Callable[[torch.Tensor], torch.Tensor] | None, seed: int | None = None
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def skipped(self) -> int:
        return int(getattr(self.dataset, "skipped", 0))

    def __getitem__(self, index: int) -> Item | None:
        if self.seed is None:
            return self._item(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            return self._item(index)

    def _item(self, index: int) -> Item | None:
        from_file = getattr(self.transform, "from_file", None)
        if from_file is not None and getattr(self.dataset, "decodes_files", False):
            return self.dataset.load(index, from_file)  # files: the transform decodes only what it keeps
        item = self.dataset[index]
        if item is None or self.transform is None:
            return item
        image, label = item
        return self.transform(image), label
