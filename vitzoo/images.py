"""Images in, model-ready tensors out.

`to_uint8_rgb` turns whatever a user holds (a path, PIL image of any mode, numpy array, tensor)
into one 3xHxW uint8 tensor; `Preprocessor` applies a checkpoint's published pipeline (resize,
centre crop, normalise) to a batch with tensor ops: images of one size are resized together,
and normalisation is one fused op on the whole batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vitzoo.errors import BadInputError
from vitzoo.registry import Preprocessing

INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}
# PIL resample codes as transformers' image processors store them
PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}


EXIF_ORIENTATION = 0x0112


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file, or raise `BadInputError` naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BadInputError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return upright(image)
    except Image.DecompressionBombError as error:
        raise BadInputError(f"image {path!r} is too large to decode safely ({error}); resize it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadInputError(f"cannot decode image {path!r}: {error}. Is it an image file, and complete?") from None


def upright(image: Image.Image) -> Image.Image:
    """Decode `image` fully and turn it as its EXIF orientation says (a portrait photo taken with the
    camera on its side stands upright), as `transformers.image_utils.load_image` does."""
    image.load()
    if image.getexif().get(EXIF_ORIENTATION, 1) in (1, None):
        return image  # upright already: no copy
    return ImageOps.exif_transpose(image)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if image.mode != "RGB":
        image = image.convert("RGB")  # grayscale, palette, RGBA, CMYK, YCbCr, LAB...
    return np.asarray(image)


def is_float_pixels(images: Any) -> bool:
    """Whether `images` is a float tensor or array: pixels in [0, 1], whatever its shape."""
    if isinstance(images, torch.Tensor):
        return images.is_floating_point()
    return isinstance(images, np.ndarray) and np.issubdtype(images.dtype, np.floating)


def check_float_pixels(pixels: np.ndarray | torch.Tensor) -> None:
    """Refuse float pixels outside [0, 1]: floats are always pixel values, never a normalised batch, so
    0..255 floats or an already-normalised tensor are named, with what to pass instead."""
    if math.prod(pixels.shape) == 0:
        return
    low, high = float(pixels.min()), float(pixels.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise BadInputError("float pixels hold NaN or infinite values; pass uint8 images (0..255) or floats in [0, 1]")
    if low < 0 or high > 1:
        raise BadInputError(
            f"float pixels must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]; pass uint8 images (0..255) or "
            "floats in [0, 1] (an already-normalised batch goes to model.logits(pixel_values), model.features(...) or "
            "model.attention(...) directly)"
        )


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        check_float_pixels(array)
        return (array * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise BadInputError("integer image values must lie in [0, 255] (or be uint16)")
        return array.astype(np.uint8)
    raise BadInputError(f"unsupported image array dtype {array.dtype}")


def _hwc_to_rgb(array: np.ndarray, described: str) -> np.ndarray:
    """`array` (HxW or HxWxC) as HxWx3; `described` names the input as the user gave it, for errors."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise BadInputError(f"an image must be one picture, got {described}")
    channels = array.shape[2]
    if channels == 1:
        return np.repeat(array, 3, axis=2)
    if channels == 3:
        return array
    if channels == 4:
        return array[:, :, :3]  # drop alpha, as PIL's convert("RGB") does
    raise BadInputError(f"an image must have 1, 3 or 4 channels, got {channels} ({described})")


def to_uint8_rgb(image: Any) -> torch.Tensor:
    """One image of any supported kind as a 3xHxW uint8 RGB tensor.

    Accepts a file path, a PIL image (any mode: grayscale, RGBA, CMYK, 16-bit...), a numpy array
    (HxW, HxWxC; uint8, uint16, bool, or float in [0, 1]) or a torch tensor (CxHxW, HxW, or HxWxC
    when its first dimension is over 4; same dtypes). Floats are pixel values in [0, 1], always.
    """
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        array = _pil_to_array(image)
        described = f"a PIL image of mode {image.mode}"
    elif isinstance(image, np.ndarray):
        array = _array_to_uint8(image)
        described = f"an array of shape {tuple(image.shape)}, read as HxWxC"
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()  # numpy has no bfloat16
        described = f"a tensor of shape {tuple(tensor.shape)}, read as HxWxC"
        if tensor.ndim == 3 and tensor.shape[0] <= 4:
            tensor = tensor.permute(1, 2, 0)
            described = f"a tensor of shape {tuple(image.shape)}, read as CxHxW"
        array = _array_to_uint8(tensor.numpy())
    else:
        raise BadInputError(
            f"cannot use an object of type {type(image).__name__} as an image; "
            "pass a path, a PIL image, a numpy array or a tensor"
        )
    array = _hwc_to_rgb(array, described)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise BadInputError("image has zero width or height")
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, order="C")
    return torch.from_numpy(array).permute(2, 0, 1)


def center_crop(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop with transformers' rounding (offsets floored), so outputs match its processors.

    (torchvision rounds half offsets up: one pixel of difference on odd margins.) Images smaller
    than `size` are padded with zeros first, as both libraries do.
    """
    height, width = pixels.shape[-2:]
    if height < size or width < size:
        return F.center_crop(pixels, [size, size])
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[..., top : top + size, left : left + size]


class Preprocessor:
    """A checkpoint's evaluation pipeline on batches of images of any size and kind."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.config = preprocessing
        self.interpolation = INTERPOLATIONS[preprocessing.interpolation]
        self.mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(preprocessing.std).view(1, 3, 1, 1) * 255.0

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def resize_crop(self, pixels: torch.Tensor) -> torch.Tensor:
        """Resize and crop uint8 images (CxHxW or a BxCxHxW batch of one size)."""
        cfg = self.config
        if cfg.resize_mode == "shortest":
            size: list[int] = [cfg.resize_size]
        else:
            size = [cfg.resize_size, cfg.resize_size]
        if list(pixels.shape[-2:]) != size:
            pixels = F.resize(pixels, size, interpolation=self.interpolation, antialias=True)
        if cfg.crop_size is not None:
            pixels = center_crop(pixels, cfg.crop_size)
        return pixels

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 Bx3xHxW to float, normalised with the checkpoint's mean and std."""
        if batch.device != self.mean.device:
            self.mean, self.std = self.mean.to(batch.device), self.std.to(batch.device)
        return (batch.float() - self.mean) / self.std

    def __call__(self, images: Sequence[Any] | Any, device: torch.device | str | None = None) -> torch.Tensor:
        """A normalised float batch of `images`, on `device` (default: the CPU).

        Images are decoded on the host; on a GPU only their uint8 pixels travel, and resizing,
        cropping and normalising run there, as a batch when the images share a size.
        """
        if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
            images = list(images)  # a batch: BxCxHxW tensor, BxHxWxC array
        elif not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise BadInputError("no images given")
        pixels = [to_uint8_rgb(image) for image in images]
        move = device is not None and torch.device(device).type != "cpu"
        if all(p.shape == pixels[0].shape for p in pixels):
            batch = torch.stack(pixels)
            batch = self.resize_crop(batch.to(device) if move else batch)
        else:
            batch = torch.stack([self.resize_crop(p.to(device) if move else p) for p in pixels])
        return self.normalize(batch)

    def to_image_processor_dict(self) -> dict[str, Any]:
        """The pipeline as a transformers image-processor config (`preprocessor_config.json`).

        The processor class is the one of transformers' that runs this pipeline: ViT's for a
        plain resize, DeiT's for squash-then-crop, BiT's for shortest-edge-then-crop.
        """
        cfg = self.config
        if cfg.crop_size is None:
            image_processor_type = "ViTImageProcessor"
        elif cfg.resize_mode == "shortest":
            image_processor_type = "BitImageProcessor"
        else:
            image_processor_type = "DeiTImageProcessor"
        if cfg.resize_mode == "shortest":
            size: dict[str, int] = {"shortest_edge": cfg.resize_size}
        else:
            size = {"height": cfg.resize_size, "width": cfg.resize_size}
        data: dict[str, Any] = {
            "image_processor_type": image_processor_type,
            "do_resize": True,
            "size": size,
            "resample": PIL_RESAMPLE[cfg.interpolation],
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(cfg.mean),
            "image_std": list(cfg.std),
            "do_convert_rgb": True,
        }
        if cfg.crop_size is not None:
            data.update(do_center_crop=True, crop_size={"height": cfg.crop_size, "width": cfg.crop_size})
        return data


def preprocessing_from_image_processor(data: dict[str, Any]) -> Preprocessing:
    """Read a transformers `preprocessor_config.json` (current or legacy layout) back."""
    size = data.get("size", 224)
    if isinstance(size, int):
        resize, mode = size, "exact"
    elif "shortest_edge" in size:
        resize, mode = size["shortest_edge"], "shortest"
    else:
        resize, mode = size["height"], "exact"
    crop = None
    if data.get("do_center_crop"):
        crop_size = data.get("crop_size", resize)
        crop = crop_size if isinstance(crop_size, int) else crop_size["height"]
    resample = {v: k for k, v in PIL_RESAMPLE.items()}.get(data.get("resample", 2), "bilinear")
    return Preprocessing(
        resize_size=resize,
        crop_size=crop,
        resize_mode=mode,
        interpolation=resample,
        mean=tuple(data.get("image_mean", (0.5, 0.5, 0.5))),
        std=tuple(data.get("image_std", (0.5, 0.5, 0.5))),
    )
