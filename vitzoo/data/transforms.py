"""Per-sample image transforms for training and evaluation, and batch normalisation.

Transforms work on uint8 3xHxW tensors (torchvision.transforms.v2) and return uint8 3xSxS
tensors: a batch of uint8 images is a quarter of the float batch to move between DataLoader
workers and to the GPU, and mean/std normalisation is then one op on the whole batch
(`normalize_batch`) instead of per-sample float work.

Image files are decoded by the transform itself when it can use less than the whole image
(`from_file`): a JPEG is decoded at the smallest DCT scale (1/1, 1/2, 1/4 or 1/8, PIL's `draft`
mode) that still leaves the region the transform keeps at least as large as its output -- the
random crop for training, the whole image for evaluation -- so a 800 px photo cropped to 224 px
is decoded at 400 px or less. The crop is drawn first from the header's size with the same
random draws as the decoded path, so both paths crop the same region; the rest is the same resize.

`eval_transform` follows the checkpoint's own published pipeline (its `Preprocessing`: resize
mode, size, crop ratio, interpolation), scaled to the training input size, so evaluation during
fine-tuning sees exactly what inference later will.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vitzoo.errors import BadInputError
from vitzoo.images import INTERPOLATIONS, Preprocessor, to_uint8_rgb
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

    def from_file(self, image: Image.Image) -> torch.Tensor:
        """The same on an opened, not yet decoded image: decoded no larger than the resize needs."""
        factor = draft_factor(*image.size, needed=self.preprocessing.resize_size)
        return self(decode_reduced(image, factor))

    def __repr__(self) -> str:
        return f"EvalTransform({self.preprocessing}, image_size={self.image_size})"


def draft_factor(width: int, height: int, needed: int) -> int:
    """The largest JPEG DCT reduction (8, 4, 2 or 1) that keeps a `width` x `height` region at
    least `needed` pixels on its shorter side: the region is then only ever scaled down to the
    output, never up, so nothing is lost that a full decode would keep."""
    for factor in (8, 4, 2):
        if min(width, height) / factor >= needed:
            return factor
    return 1


def decode_reduced(image: Image.Image, factor: int) -> torch.Tensor:
    """Decode an opened image as uint8 3xHxW, a JPEG at 1/`factor` scale (PIL's draft mode);
    other formats, and images already decoded, whole."""
    if factor > 1 and image.format == "JPEG" and image.tile:
        image.draft("RGB", (max(1, image.width // factor), max(1, image.height // factor)))
    return to_uint8_rgb(image)


class RandomResizedCrop:
    """The ViT/DeiT training crop (torchvision's sampling of `scale` and `ratio`, then an
    antialiased resize to `size`), on a uint8 tensor or, via `from_file`, on an opened image
    decoded at the smallest scale that the drawn crop allows."""

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                 interpolation: InterpolationMode) -> None:
        self.size, self.scale, self.ratio, self.interpolation = size, scale, ratio, interpolation

    def _params(self, image: torch.Tensor | Image.Image) -> tuple[int, int, int, int]:
        from torchvision.transforms import RandomResizedCrop as Sampler  # reads only the size of a PIL image

        return Sampler.get_params(image, list(self.scale), list(self.ratio))

    def _resize(self, image: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
        return F.resized_crop(image, top, left, height, width, [self.size, self.size],
                              interpolation=self.interpolation, antialias=True)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self._resize(image, *self._params(image))

    def from_file(self, image: Image.Image) -> torch.Tensor:
        full_width, full_height = image.size
        top, left, height, width = self._params(image)
        pixels = decode_reduced(image, draft_factor(width, height, needed=self.size))
        scale_y, scale_x = pixels.shape[-2] / full_height, pixels.shape[-1] / full_width
        return self._resize(pixels, round(top * scale_y), round(left * scale_x), max(1, round(height * scale_y)),
                            max(1, round(width * scale_x)))

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, {self.interpolation.value})"


class Pipeline:
    """A geometry step (crop or resize, which can also start from a file) then per-pixel steps."""

    def __init__(self, first: RandomResizedCrop | EvalTransform, rest: list[Transform]) -> None:
        self.first, self.rest = first, rest

    def _finish(self, image: torch.Tensor) -> torch.Tensor:
        for step in self.rest:
            image = step(image)
        return image

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self._finish(self.first(image))

    def from_file(self, image: Image.Image) -> torch.Tensor:
        return self._finish(self.first.from_file(image))

    def __repr__(self) -> str:
        return f"Pipeline({self.first!r}, {self.rest!r})"


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
    first: RandomResizedCrop | EvalTransform
    if random_resized_crop:
        first = RandomResizedCrop(image_size, scale, ratio, INTERPOLATIONS[preprocessing.interpolation])
    else:
        first = EvalTransform(preprocessing, image_size)
    steps: list[Transform] = []
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if auto_augment == "rand":
        steps.append(v2.RandAugment(num_ops=2, magnitude=9, interpolation=InterpolationMode.BILINEAR))
    elif auto_augment == "trivial":
        steps.append(v2.TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR))
    elif auto_augment is not None:
        raise BadInputError(f"unknown auto_augment {auto_augment!r}; choose one of {', '.join(AUTO_AUGMENTS)} or None")
    return Pipeline(first, steps)


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
