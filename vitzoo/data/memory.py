"""Small datasets decoded once into memory, augmented a whole batch at a time.

A split whose decoded images are all the same size and fit comfortably in memory (`fits_in_memory`:
at most `MEMORY_SHARE` of the available memory and `MEMORY_CAP` bytes) is decoded once into one uint8
N x 3 x H x W tensor (`InMemorySplit`). Then no image is decoded again, and the training
augmentation runs on whole batches (`BatchAugment`): the random resized crop of each image
(the per-image path's sampling of area `scale` and aspect `ratio`, ten tries then a centre crop)
becomes one `torchvision.ops.roi_align` over the batch, averaging ceil(crop / output) samples per
output pixel in each direction (an area filter when a crop shrinks, bilinear when it grows), and the
flip one indexed copy. Augmentation that only exists per image (RandAugment, TrivialAugment) still
runs per image, on the decoded tensors. The eval transform is deterministic, so an eval split is
stored already transformed.

Each batch draws its crops and flips from a generator seeded by (seed, epoch, the batch's indices):
the same batch gets the same augmentation whatever the process, and after a resume.

For tiny images this is what a hand-written loop does (decode once, augment tensors), and it
takes the data pipeline's per-image cost (file decode, per-sample transforms, collation: about
1 ms per 28 px PNG) out of every step. Loaders over an `InMemorySplit` run in the main process.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchvision.ops import roi_align
from torchvision.transforms import v2

from vitzoo.data.dataset import LabeledImageDataset
from vitzoo.data.transforms import EvalTransform, Pipeline, RandomResizedCrop, Transform

MEMORY_SHARE = 0.25  # of the memory available when the run starts
MEMORY_CAP = 4 << 30  # bytes


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or 8 GiB where /proc/meminfo is absent."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def fits_in_memory(dataset: Any) -> tuple[bool, str]:
    """Whether `dataset`'s decoded images fit comfortably in memory, judged from its first image
    (each image is checked again while decoding); and why, in words."""
    if not isinstance(dataset, LabeledImageDataset) or len(dataset) == 0:
        return False, "not a vitzoo image dataset"
    first = next((item for item in (dataset[i] for i in range(min(len(dataset), 20))) if item is not None), None)
    if first is None:
        return False, "its first images cannot be decoded"
    needed = first[0].numel() * len(dataset)
    budget = min(MEMORY_CAP, int(MEMORY_SHARE * available_memory()))
    if needed > budget:
        return False, f"{len(dataset):,} images of {tuple(first[0].shape[1:])} need {needed / 2**20:,.0f} MiB, over {budget / 2**20:,.0f} MiB"
    return True, f"{len(dataset):,} images of {first[0].shape[-1]}x{first[0].shape[-2]} px in {needed / 2**20:,.0f} MiB"


class InMemorySplit(torch.utils.data.Dataset):
    """A split decoded once: `images` (uint8 N x 3 x H x W), `labels`, and the batch augmentation.

    Items the source could not decode are left out (and counted by the source dataset, as on the
    per-image path). `__getitems__` returns a whole batch `(images, labels)`, augmented."""

    def __init__(self, source: LabeledImageDataset, transform: Transform | None, *, seed: int | None = None,
                 progress: bool = True) -> None:
        from tqdm.auto import tqdm

        self.source, self.seed, self.epoch = source, seed, 0
        keep, images, shape = [], [], None
        eval_only = isinstance(transform, EvalTransform)
        for index in tqdm(range(len(source)), desc=f"decoding {source.name} once", disable=not progress, leave=False):
            item = source[index]
            if item is None:
                continue
            image = transform(item[0]) if eval_only else item[0]
            if shape is None:
                shape = image.shape
            elif image.shape != shape:
                raise ValueError(f"{source.reader.describe(index)} is {tuple(image.shape)}, the first image {tuple(shape)}")
            keep.append(index)
            images.append(image)
        self.indices = np.asarray(keep, dtype=np.int64)
        self.images = torch.stack(images) if images else torch.empty((0, 3, 1, 1), dtype=torch.uint8)
        self.labels = torch.as_tensor(source.labels[self.indices])
        self.transform = None if eval_only else transform
        self.augment = BatchAugment.from_transform(transform) if BatchAugment.handles(self.transform) else None

    @property
    def skipped(self) -> int:
        return self.source.skipped

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.__getitems__([index])
        return images[0], int(labels[0])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.as_tensor(indices, dtype=torch.int64)
        images, labels = self.images[positions], self.labels[positions]
        if self.augment is not None:
            generator = torch.Generator()
            generator.manual_seed(hash((self.seed or 0, self.epoch, tuple(int(i) for i in indices))) & 0x7FFF_FFFF_FFFF_FFFF)
            images = self.augment(images, generator)
        elif self.transform is not None:  # no batched form (DINO's multi-crop): per image, seeded as per image
            outputs = []
            for index, image in zip(indices, images):
                with torch.random.fork_rng(devices=[]):
                    if self.seed is not None:
                        torch.manual_seed(hash((self.seed, self.epoch, int(index))) & 0x7FFF_FFFF_FFFF_FFFF)
                    outputs.append(self.transform(image))
            images = torch.stack(outputs)
        return images, labels

    def describe(self) -> str:
        """For the start-up line."""
        how = ("augmented a whole batch at a time" if self.augment is not None else
               "transformed per image" if self.transform is not None else "stored transformed")
        return (f"{self.source.name} split decoded once into memory ({len(self):,} images, "
                f"{self.images.numel() / 2**20:,.0f} MiB), {how}")


class BatchAugment:
    """The training `Pipeline` (random resized crop, flip, then per-image steps) on whole uint8 batches."""

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float], hflip: float,
                 per_image: list[Transform]) -> None:
        self.size, self.scale, self.ratio, self.hflip, self.per_image = size, scale, ratio, hflip, per_image

    @staticmethod
    def handles(transform: Any) -> bool:
        return isinstance(transform, Pipeline) and isinstance(transform.first, RandomResizedCrop)

    @classmethod
    def from_transform(cls, transform: Pipeline) -> BatchAugment:
        crop, hflip, per_image = transform.first, 0.0, []
        for step in transform.rest:
            if isinstance(step, v2.RandomHorizontalFlip) and not per_image:
                hflip = step.p
            else:
                per_image.append(step)
        return cls(crop.size, crop.scale, crop.ratio, hflip, per_image)

    def crops(self, count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """`count` crop boxes (left, top, right, bottom), as torchvision's RandomResizedCrop draws
        them: ten tries at an area in `scale` and a log-uniform aspect in `ratio` that fits, else
        the whole image cut to the nearest allowed aspect."""
        tries = 10
        area = height * width
        target = area * torch.empty(count, tries).uniform_(*self.scale, generator=generator)
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(torch.empty(count, tries).uniform_(log_low, log_high, generator=generator))
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = torch.argmax(fits.to(torch.int8), dim=1)  # the first try that fits
        found = fits.any(dim=1)
        w, h = w.gather(1, first[:, None])[:, 0], h.gather(1, first[:, None])[:, 0]
        fallback_w, fallback_h = float(width), float(height)
        if width / height < self.ratio[0]:
            fallback_h = float(round(width / self.ratio[0]))
        elif width / height > self.ratio[1]:
            fallback_w = float(round(height * self.ratio[1]))
        w = torch.where(found, w, torch.tensor(fallback_w))
        h = torch.where(found, h, torch.tensor(fallback_h))
        top_draw, left_draw = torch.rand(count, generator=generator), torch.rand(count, generator=generator)
        top = torch.where(found, torch.floor(top_draw * (height - h + 1)), torch.round((height - h) / 2))
        left = torch.where(found, torch.floor(left_draw * (width - w + 1)), torch.round((width - w) / 2))
        return torch.stack([left, top, left + w, top + h], dim=1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count, _, height, width = images.shape
        boxes = self.crops(count, height, width, generator)
        rois = torch.cat([torch.arange(count, dtype=torch.float32)[:, None], boxes], dim=1)
        # sampling_ratio 0: ceil(crop / output) samples per output pixel and direction, averaged
        out = roi_align(images.float(), rois, output_size=self.size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
        if self.hflip > 0:
            flip = torch.rand(count, generator=generator) < self.hflip
            out[flip] = out[flip].flip(-1)
        if self.per_image:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
                for index in range(count):
                    for step in self.per_image:
                        out[index] = step(out[index])
        return out
