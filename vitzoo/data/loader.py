"""DataLoaders over vitzoo datasets, and mixup/cutmix.

`make_loader` returns a plain `torch.utils.data.DataLoader` (a standard sampler, a seeded
generator) so that shuffling is reproducible and Accelerate can prepare it and resume it
mid-epoch with `skip_first_batches`. Its collate function drops the `None` items a dataset
returns for undecodable images (the dataset counts them, see `LabeledImageDataset.skipped`)
and stacks the rest as uint8.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from torch.utils.data import DataLoader, Dataset

from vitzoo.data.dataset import Item, TransformedDataset
from vitzoo.data.memory import InMemorySplit, fits_in_memory
from vitzoo.data.transforms import Transform
from vitzoo.errors import BadInputError


def collate_skip_bad(items: list[Item | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """`(uint8 Bx3xHxW images, int64 B labels)` from the items that are not None.

    A batch whose items were all bad comes back empty (B = 0); training loops skip it.
    """
    if isinstance(items, tuple):  # a whole batch already (`InMemorySplit.__getitems__`)
        return items
    good = [item for item in items if item is not None]
    if not good:
        return torch.empty((0, 3, 0, 0), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    shapes = {tuple(image.shape) for image, _ in good}
    if len(shapes) > 1:
        raise BadInputError(
            f"images of different sizes in one batch ({sorted(shapes)[:3]}...); pass a transform that "
            "resizes them (vitzoo.data.train_transform / eval_transform)"
        )
    images = torch.stack([image for image, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.int64)
    return images, labels


def default_num_workers() -> int:
    """DataLoader workers when none are asked for.

    With GPUs, the CPU's only job is decoding and augmenting: most cores, shared among the local
    GPUs, one left for the training process. On a CPU the training step's threads already use
    every core, so a worker only pays off when there are cores to spare (none on 2 cores, where
    workers would take compute threads from the model).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.cuda.is_available():
        return max(1, min(16, cpus // max(1, torch.cuda.device_count()) - 1))
    return 0 if cpus <= 2 else min(4, cpus // 4)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    transform: Transform | None = None,
    num_workers: int | None = None,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool | None = None,
    persistent_workers: bool = False,
    in_memory: str = "off",
) -> DataLoader:
    """A DataLoader yielding `(uint8 images, int64 labels)` batches, bad images dropped.

    `transform` runs per sample inside the workers (it must output same-size uint8 images);
    normalise afterwards on the whole batch with `normalize_batch`. Shuffling draws from a
    generator seeded with `seed`, which also seeds the workers' augmentation RNGs, so two
    loaders built alike yield the same batches (with `num_workers=0` the augmentations draw
    from the global torch RNG instead: seed it for reproducible augmentation).
    `num_workers` defaults to `default_num_workers()`, `pin_memory` to whether CUDA is available.

    `in_memory`: "on" decodes `dataset` once into memory and augments whole batches (see
    `vitzoo.data.memory`; the loader then runs in the main process unless `num_workers` is given),
    "auto" does so when its decoded images fit comfortably (`fits_in_memory`) and are all one size,
    "off" decodes per image in the loader.
    """
    if batch_size < 1:
        raise BadInputError(f"batch_size must be at least 1, got {batch_size}")
    if in_memory not in ("auto", "on", "off"):
        raise BadInputError(f"in_memory must be 'auto', 'on' or 'off', got {in_memory!r}")
    if in_memory != "off":
        memory = _in_memory(dataset, transform, seed if shuffle else None, in_memory == "on")
        if memory is not None:
            dataset, transform = memory, None
            num_workers = 0 if num_workers is None else num_workers
    if num_workers is None:
        num_workers = default_num_workers()
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset if isinstance(dataset, InMemorySplit) else TransformedDataset(dataset, transform, seed=seed if shuffle else None),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_skip_bad,
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
    )


def _in_memory(dataset: Dataset, transform: Transform | None, seed: int | None, required: bool) -> InMemorySplit | None:
    fits, why = fits_in_memory(dataset)
    if not fits:
        if required:
            raise BadInputError(f"--in-memory on: the {getattr(dataset, 'name', 'data')} split cannot be held in memory: {why}; "
                                "use --in-memory auto or off")
        return None
    try:
        return InMemorySplit(dataset, transform, seed=seed)
    except ValueError as error:  # images of different sizes: stay per image
        if required:
            raise BadInputError(f"--in-memory on needs images of one size after decoding: {error}; use auto or off") from None
        return None


class _OddBatchMixup(Mixup):
    """timm's `Mixup`, also for odd batches (which dropped bad images can leave).

    timm pairs each sample with its mirror in the batch and so needs an even size: an odd
    batch leaves its last sample unmixed (plain smoothed one-hot target).
    """

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) % 2 == 0:
            return super().__call__(x, target)
        last = mixup_target(target[-1:], self.num_classes, 1.0, self.label_smoothing)
        if len(x) == 1:
            return x, last
        mixed, soft = super().__call__(x[:-1], target[:-1])
        return torch.cat([mixed, x[-1:]]), torch.cat([soft, last])


def mixup_fn(mixup: float, cutmix: float, label_smoothing: float, num_classes: int, **kwargs: Any) -> Mixup | None:
    """timm's Mixup/CutMix with `mixup` / `cutmix` alphas, or None when both are 0.

    Call it on the *normalised float* batch (mixup blends pixels) and the int labels; it
    returns the mixed batch and soft targets (B x num_classes, label smoothing included), to
    train with soft-target cross-entropy. With neither, apply `label_smoothing` in the loss.
    Extra keyword arguments go to `timm.data.Mixup` (e.g. `prob`, `switch_prob`, `mode`).
    """
    if mixup < 0 or cutmix < 0:
        raise BadInputError(f"mixup and cutmix alphas must be >= 0, got {mixup} and {cutmix}")
    if not 0.0 <= label_smoothing < 1.0:
        raise BadInputError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
    if mixup == 0 and cutmix == 0:
        return None
    return _OddBatchMixup(
        mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes, **kwargs
    )
