"""Which patches a masked-image-modelling step hides.

- `BlockMaskingGenerator`: BEiT's blockwise masking (Bao et al., 2022, Algorithm 1; written after
  microsoft/unilm `beit/masking_generator.py`, own code): rectangles of random area (at least
  `min_num_patches`) and aspect ratio in [0.3, 1/0.3] are added until the requested number of
  patches is masked, so the model cannot fill a hole by copying a neighbour.
- `random_patch_mask`: SimMIM's random masking (Xie et al., 2022): a share of square
  `mask_patch_size` units (e.g. 32 px over 16 px patches) chosen uniformly, expanded to patches.

MAE needs neither: transformers' `ViTMAEForPreTraining` shuffles and drops patches itself, so
its encoder only ever sees the visible ones.

Masks are boolean (batch, num_patches) tensors in row-major patch order, True = masked, the
`bool_masked_pos` that transformers' MIM models take.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vitzoo.errors import BadInputError


def check_mask_ratio(ratio: float) -> None:
    if not 0.0 < ratio < 1.0:
        raise BadInputError(f"--mask-ratio must lie strictly between 0 and 1, got {ratio}")


class BlockMaskingGenerator:
    """BEiT's blockwise masking over a `height` x `width` patch grid.

    >>> mask = BlockMaskingGenerator(14, 14, num_masking_patches=75)(np.random.default_rng(0))
    >>> mask.shape, int(mask.sum()) <= 75
    ((14, 14), True)
    """

    def __init__(
        self,
        height: int,
        width: int,
        num_masking_patches: int,
        min_num_patches: int = 4,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ) -> None:
        if not 0 < num_masking_patches < height * width:
            raise BadInputError(f"cannot mask {num_masking_patches} of {height * width} patches")
        self.height, self.width = height, width
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min(min_num_patches, num_masking_patches)
        self.max_num_patches = max_num_patches or num_masking_patches
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))

    @classmethod
    def from_ratio(cls, grid: int, ratio: float, **kwargs) -> BlockMaskingGenerator:
        check_mask_ratio(ratio)
        return cls(grid, grid, max(1, min(grid * grid - 1, round(ratio * grid * grid))), **kwargs)

    def _add_block(self, mask: np.ndarray, budget: int, rng: np.random.Generator) -> int:
        """Mask one random rectangle that adds between 1 and `budget` new patches; return how many."""
        for _ in range(10):
            area = rng.uniform(self.min_num_patches, max(self.min_num_patches, budget))
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (0 < h < self.height and 0 < w < self.width):
                continue
            top = int(rng.integers(0, self.height - h + 1))
            left = int(rng.integers(0, self.width - w + 1))
            block = mask[top : top + h, left : left + w]
            new = h * w - int(block.sum())
            if 0 < new <= budget:
                block[...] = True
                return new
        return 0

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < self.num_masking_patches:
            added = self._add_block(mask, min(self.num_masking_patches - count, self.max_num_patches), rng)
            if added == 0:
                break
            count += added
        return mask

    def batch(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch, height * width) boolean masks; the seed comes from torch's RNG, which Accelerate
        checkpoints, so a resumed run draws the same masks."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        rng = np.random.default_rng(seed)
        return torch.from_numpy(np.stack([self(rng).reshape(-1) for _ in range(batch_size)]))


def random_patch_mask(
    batch_size: int,
    image_size: int,
    patch_size: int,
    mask_patch_size: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """SimMIM's masking: ceil(ratio * units) random `mask_patch_size` units per image, as a
    (batch, (image_size / patch_size)^2) boolean patch mask."""
    check_mask_ratio(ratio)
    check_mask_patch_size(image_size, patch_size, mask_patch_size)
    units = image_size // mask_patch_size
    scale = mask_patch_size // patch_size
    count = math.ceil(units * units * ratio)
    order = torch.rand(batch_size, units * units, generator=generator).argsort(dim=1)
    unit_mask = torch.zeros(batch_size, units * units, dtype=torch.bool)
    unit_mask.scatter_(1, order[:, :count], True)
    mask = unit_mask.view(batch_size, units, units).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return mask.reshape(batch_size, -1).to(device)


def check_mask_patch_size(image_size: int, patch_size: int, mask_patch_size: int) -> None:
    if mask_patch_size % patch_size or image_size % mask_patch_size:
        raise BadInputError(
            f"--mask-patch-size {mask_patch_size} must be a multiple of the patch size {patch_size} "
            f"and divide the image size {image_size}"
        )


def default_mask_patch_size(image_size: int, patch_size: int) -> int:
    return 2 * patch_size if image_size % (2 * patch_size) == 0 else patch_size


__all__ = ["BlockMaskingGenerator", "check_mask_ratio", "default_mask_patch_size", "random_patch_mask"]
