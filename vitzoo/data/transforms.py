"""Per-sample image transforms for training and evaluation, and batch normalisation.

Transforms work on uint8 3xHxW tensors (torchvision.transforms.v2) and return uint8 3xSxS
tensors: a batch of uint8 images is a quarter of the float batch to move between DataLoader
workers and to the GPU, and mean/std normalisation is then one op on the whole batch
(`normalize_batch`) instead of per-sample float work.

`eval_transform` follows the checkpoint's own published pipeline (its `Preprocessing`: resize
mode, size, crop ratio, interpolation), scaled to the training input size, so evaluation during
fine-tuning sees exactly what inference later will.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vitzoo.errors import BadInputError
from vitzoo.images import INTERPOLATIONS, Preprocessor
from vitzoo.registry import Preprocessing

AUTO_AUGMENTS = ("rand", "trivial")

Transform = Callable[[torch.Tensor], torch.Tensor]


class EvalTransform:
    """The checkpoint's resize and centre crop (via `vitzoo.images.Preprocessor`), always SxS.

    A "shortest edge" pipeline without a crop keeps the aspect ratio, which would leave
    non-square images that cannot be batched; those get a centre crop to the input size.
    """

    def __init__(self, preprocessing: Preprocessing, image_size: int) -> None:
        self.preprocessing = preprocessing.for_input_size(image_size)
        self.image_size = image_size
        self.preprocessor = Preprocessor(self.preprocessing)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = self.preprocessor.resize_crop(image)
        if tuple(image.shape[-2:]) != (self.image_size, self.image_size):
            image = F.center_crop(image, [self.image_size, self.image_size])
        return image

    def __repr__(self) -> str:
        return f"EvalTransform({self.preprocessing}, image_size={self.image_size})"


def eval_transform(preprocessing: Preprocessing, image_size: int) -> Transform:
    """uint8 3xHxW -> uint8 3xSxS with the checkpoint's pipeline scaled to `image_size`."""
    return EvalTransform(preprocessing, image_size)


def train_transform(
    preprocessing: Preprocessing,
    *,
    image_size: int,
    auto_augment: str | None = None,
    hflip: float = 0.5,
    random_resized_crop: bool = True,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Transform:
    """The training augmentation: uint8 3xHxW -> uint8 3xSxS.

    - `random_resized_crop`: the standard ViT/DeiT crop of `scale` (fraction of the image area)
      and `ratio`, resized to `image_size` with the checkpoint's interpolation; when False, the
      deterministic `eval_transform` resize is used instead.
    - `scale`: (0.08, 1.0) is the ImageNet default, made for large photos. For tiny sources
      (the 8x8 digits, 32x32 CIFAR) upscaled to the model's size it keeps crops of a few
      pixels that no longer show the object; use (0.5, 1.0) or so there, or turn the crop off.
    - `hflip`: probability of a horizontal flip (0 turns it off; for digits and text it should
      be 0, a flipped digit is not the same digit).
    - `auto_augment`: "rand" (RandAugment, 2 ops at magnitude 9) or "trivial"
      (TrivialAugmentWide), applied after crop and flip, or None. Their geometric ops run with
      bilinear interpolation, the best that tensor affine warps support.
    """
    if image_size < 1:
        raise BadInputError(f"image_size must be positive, got {image_size}")
    if not 0.0 <= hflip <= 1.0:
        raise BadInputError(f"hflip is a probability in [0, 1], got {hflip}")
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise BadInputError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    steps: list[Transform] = []
    if random_resized_crop:
        interpolation = INTERPOLATIONS[preprocessing.interpolation]
        steps.append(
            v2.RandomResizedCrop(image_size, scale=scale, ratio=ratio, interpolation=interpolation, antialias=True)
        )
    else:
        steps.append(EvalTransform(preprocessing, image_size))
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if auto_augment == "rand":
        steps.append(v2.RandAugment(num_ops=2, magnitude=9, interpolation=InterpolationMode.BILINEAR))
    elif auto_augment == "trivial":
        steps.append(v2.TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR))
    elif auto_augment is not None:
        raise BadInputError(f"unknown auto_augment {auto_augment!r}; choose one of {', '.join(AUTO_AUGMENTS)} or None")
    return v2.Compose(steps)


def normalize_batch(
    batch: torch.Tensor, preprocessing: Preprocessing, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A uint8 Bx3xHxW batch (on any device) as normalised floats, the checkpoint's mean and std.

    The same arithmetic as `Preprocessor.normalize`, with the constants moved to the batch's
    device, so it can run after the batch reached the GPU.
    """
    if batch.dtype != torch.uint8:
        raise BadInputError(f"normalize_batch expects a uint8 batch, got {batch.dtype}")
    mean, std = _mean_std(preprocessing, batch.device)
    return ((batch.float() - mean) / std).to(dtype)


@functools.lru_cache(maxsize=64)
def _mean_std(preprocessing: Preprocessing, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The constants on `device`, made once: a training loop then copies nothing to the GPU per step."""
    pre = Preprocessor(preprocessing)
    return pre.mean.to(device), pre.std.to(device)
