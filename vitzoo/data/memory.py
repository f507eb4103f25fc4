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

Each image draws its crop and flip from counter-based hashes of (seed, epoch, its index) alone:
an image gets the same augmentation whatever its batch, process or accumulation step, and after a resume.

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
        bar = tqdm(range(len(source)), desc=f"decoding {source.name} once", disable=not progress, leave=False, delay=2)
        for index in bar:  # the bar shows only when decoding takes over 2 s
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
            images = self.augment(images, sample_keys(self.seed or 0, self.epoch, indices))
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

    def crops(self, draws: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """One crop box (left, top, right, bottom) per row of uniform `draws` (columns 0-21), as
        torchvision's RandomResizedCrop draws them: ten tries at an area in `scale` and a
        log-uniform aspect in `ratio` that fits, else the whole image cut to the nearest allowed aspect."""
        tries = TRIES
        area = height * width
        target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * draws[:, :tries])
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_low + (log_high - log_low) * draws[:, tries : 2 * tries])
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
        w = torch.where(found, w, torch.tensor(fallback_w, dtype=w.dtype))
        h = torch.where(found, h, torch.tensor(fallback_h, dtype=h.dtype))
        top = torch.where(found, torch.floor(draws[:, 2 * tries] * (height - h + 1)), torch.round((height - h) / 2))
        left = torch.where(found, torch.floor(draws[:, 2 * tries + 1] * (width - w + 1)), torch.round((width - w) / 2))
        return torch.stack([left, top, left + w, top + h], dim=1).float()

    def __call__(self, images: torch.Tensor, keys: np.ndarray) -> torch.Tensor:
        """Augment a uint8 batch; `keys` (one per image, `sample_keys`) decide each image's draws, so
        an image is augmented the same whatever batch it is in (gradient accumulation, processes)."""
        count, _, height, width = images.shape
        draws = uniforms(keys, DRAWS)
        boxes = self.crops(draws, height, width)
        rois = torch.cat([torch.arange(count, dtype=torch.float32)[:, None], boxes], dim=1)
        # sampling_ratio 0: ceil(crop / output) samples per output pixel and direction, averaged
        out = roi_align(images.float(), rois, output_size=self.size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
        if self.hflip > 0:
            flip = draws[:, 2 * TRIES + 2] < self.hflip
            out[flip] = out[flip].flip(-1)
        for index in range(count) if self.per_image else ():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(draws[index, 2 * TRIES + 3] * 2**62))
                for step in self.per_image:
                    out[index] = step(out[index])
        return out


TRIES = 10
DRAWS = 2 * TRIES + 4  # area and aspect per try, top, left, flip, the per-image steps' seed


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic): well-spread 64-bit hashes."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def sample_keys(seed: int, epoch: int, indices: list[int]) -> np.ndarray:
    """One 64-bit key per sample from (seed, epoch, index) alone."""
    with np.errstate(over="ignore"):
        base = _mix(np.array([(seed * 0x9E3779B1 + epoch * 0x85EBCA77) & 0xFFFF_FFFF_FFFF_FFFF], dtype=np.uint64))
        return _mix(base ^ np.asarray(indices, dtype=np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))


def uniforms(keys: np.ndarray, count: int) -> torch.Tensor:
    """`count` uniform draws in [0, 1) per key (counter-based: draw j of key k is a hash of (k, j))."""
    with np.errstate(over="ignore"):
        counters = keys[:, None] + np.arange(1, count + 1, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15)
        bits = _mix(counters) >> np.uint64(11)
    return torch.from_numpy(bits.astype(np.float64) / float(1 << 53))
