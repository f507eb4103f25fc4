"""Figures written by recipes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os

import torch


def _to_image(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised (3, H, W) -> (H, W, 3) in [0, 1]."""
    mean = torch.tensor(mean, dtype=pixels.dtype).view(3, 1, 1)
    std = torch.tensor(std, dtype=pixels.dtype).view(3, 1, 1)
    return (pixels.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0)


def save_reconstructions(path: str, rows: list[list[tuple[str, torch.Tensor]]], mean, std) -> str:
    """One row per image, one column per (title, panel); a panel is a normalised (3, H, W) image
    or an (H, W, 3) RGB array already in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns, 2.2 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(columns):
            axis = axes[r][c]
            axis.axis("off")
            if c >= len(row):
                continue
            title, panel = row[c]
            image = _to_image(panel, mean, std) if panel.shape[0] == 3 and panel.dim() == 3 else panel.cpu()
            axis.imshow(image.numpy(), interpolation="nearest")
            if r == 0:
                axis.set_title(title, fontsize=9)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    os.replace(tmp, path)
    return path
