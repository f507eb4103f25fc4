"""The three masked-image-modelling objectives behind `recipes/pretrain.py`, one interface:

    objective.loss(model, pixels) -> (loss, {extra metrics})      # one training/eval batch
    objective.figure_rows(model, pixels) -> rows for reconstructions.png

- `MAEObjective`: transformers' `ViTMAEForPreTraining` masks `mask_ratio` of the patches itself
  (per-sample random shuffle), its encoder sees only the visible ones, and its loss is the mean
  squared error on the masked patches only, of per-patch normalised pixels (`norm_pix_loss`).
- `BEiTObjective`: `BeitForMaskedImageModeling` with BEiT's blockwise masks; targets are the
  visual tokenizer's codes of the masked patches; also reports masked-token accuracy.
- `SimMIMObjective`: `ViTForMaskedImageModeling` (a mask token replaces masked patches in the
  encoder, a linear decoder + pixel shuffle); transformers' loss is the L1 error on masked pixels.
"""

from __future__ import annotations

from typing import Any

import torch

from vitzoo.objectives.masking import BlockMaskingGenerator, random_patch_mask
from vitzoo.objectives.tokenizer import VisualTokenizer, patchify

Rows = list[list[tuple[str, torch.Tensor]]]


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """(B, L, p*p*C) -> (B, C, H, W), inverse of `tokenizer.patchify`."""
    batch, length, _ = patches.shape
    grid = int(round(length**0.5))
    x = patches.reshape(batch, grid, grid, patch_size, patch_size, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(batch, channels, grid * patch_size, grid * patch_size)


def patch_mask_to_pixels(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, L) patch mask -> (B, 1, H, W) pixel mask."""
    grid = int(round(mask.shape[1] ** 0.5))
    m = mask.float().reshape(-1, 1, grid, grid)
    return m.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)


def _grey_out(pixels: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    return pixels * (1 - pixel_mask)  # 0 in normalised space = the dataset mean (grey)


class MAEObjective:
    name = "mae"

    def __init__(self, patch_size: int) -> None:
        self.patch_size = patch_size

    def loss(self, model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        return model(pixel_values=pixels).loss, {}

    @torch.no_grad()
    def figure_rows(self, model: torch.nn.Module, pixels: torch.Tensor) -> Rows:
        out = model(pixel_values=pixels)
        predicted = out.logits.float()
        if model.config.norm_pix_loss:  # back from per-patch normalised pixels (MAE's demo does the same)
            target = patchify(pixels.float(), self.patch_size)
            predicted = predicted * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
        reconstruction = unpatchify(predicted, self.patch_size)
        pixel_mask = patch_mask_to_pixels(out.mask, self.patch_size)
        pasted = pixels * (1 - pixel_mask) + reconstruction * pixel_mask
        return [[("original", pixels[i]), ("masked", _grey_out(pixels, pixel_mask)[i]),
                 ("reconstruction", reconstruction[i]), ("+ visible", pasted[i])] for i in range(len(pixels))]


class SimMIMObjective:
    name = "simmim"

    def __init__(self, image_size: int, patch_size: int, mask_patch_size: int, mask_ratio: float) -> None:
        self.image_size, self.patch_size = image_size, patch_size
        self.mask_patch_size, self.mask_ratio = mask_patch_size, mask_ratio

    def mask(self, batch: int, device: torch.device) -> torch.Tensor:
        return random_patch_mask(batch, self.image_size, self.patch_size, self.mask_patch_size, self.mask_ratio,
                                 device=device)

    def loss(self, model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        out = model(pixel_values=pixels, bool_masked_pos=self.mask(pixels.shape[0], pixels.device))
        return out.loss, {}

    @torch.no_grad()
    def figure_rows(self, model: torch.nn.Module, pixels: torch.Tensor) -> Rows:
        mask = self.mask(pixels.shape[0], pixels.device)
        reconstruction = model(pixel_values=pixels, bool_masked_pos=mask).reconstruction.float()
        pixel_mask = patch_mask_to_pixels(mask, self.patch_size)
        pasted = pixels * (1 - pixel_mask) + reconstruction * pixel_mask
        return [[("original", pixels[i]), ("masked", _grey_out(pixels, pixel_mask)[i]),
                 ("reconstruction", reconstruction[i]), ("+ visible", pasted[i])] for i in range(len(pixels))]


class BEiTObjective:
    name = "beit"

    def __init__(self, grid: int, patch_size: int, mask_ratio: float, tokenizer: VisualTokenizer,
                 min_block_patches: int = 4) -> None:
        self.generator = BlockMaskingGenerator.from_ratio(grid, mask_ratio, min_num_patches=min_block_patches)
        self.patch_size = patch_size
        self.tokenizer = tokenizer

    def _forward(self, model, pixels):
        mask = self.generator.batch(pixels.shape[0]).to(pixels.device)
        codes = self.tokenizer.encode(pixels)
        out = model(pixel_values=pixels, bool_masked_pos=mask, labels=codes[mask])
        return out, mask, codes

    def loss(self, model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        out, mask, codes = self._forward(model, pixels)
        correct = (out.logits[mask].argmax(-1) == codes[mask]).float()
        return out.loss, {"masked_token_accuracy": correct.mean()}

    @torch.no_grad()
    def figure_rows(self, model: torch.nn.Module, pixels: torch.Tensor) -> Rows:
        out, mask, codes = self._forward(model, pixels)
        correct = out.logits.argmax(-1) == codes
        grid = int(round(mask.shape[1] ** 0.5))
        # accuracy map: grey = visible, green = masked and predicted right, red = masked and wrong
        colours = torch.full((*mask.shape, 3), 0.6)
        colours[mask & correct] = torch.tensor([0.1, 0.7, 0.1])
        colours[mask & ~correct] = torch.tensor([0.85, 0.1, 0.1])
        colours = colours.reshape(-1, grid, grid, 3)
        pixel_mask = patch_mask_to_pixels(mask, self.patch_size)
        rows = []
        for i in range(len(pixels)):
            accuracy = correct[i][mask[i]].float().mean().item()
            rows.append([("original", pixels[i]), ("mask", _grey_out(pixels, pixel_mask)[i]),
                         (f"token accuracy ({accuracy:.0%})" if i == 0 else "token accuracy", colours[i].cpu())])
        return rows
