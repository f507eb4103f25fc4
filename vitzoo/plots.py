"""Figures written by recipes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import torch


def _to_image(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised (3, H, W) -> (H, W, 3) in [0, 1]."""
    mean = torch.tensor(mean, dtype=pixels.dtype).view(3, 1, 1)
    std = torch.tensor(std, dtype=pixels.dtype).view(3, 1, 1)
    return (pixels.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0)


def save_figure(figure, path: str, dpi: int = 100) -> str:
    """Write a matplotlib figure to `path` as PNG, atomically (`vitzoo.io`), and close it."""
    import io

    import matplotlib.pyplot as plt

    from vitzoo.io import atomic_write_bytes

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path


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
    return save_figure(figure, path)


def save_dino_curves(path: str, events: list[dict], out_dim: int) -> str:
    """DINO's run at a glance from its metrics.jsonl events: loss and teacher entropy per step
    (uniform collapse sits on the dashed ln(out_dim) line, one-prototype collapse near 0), and the
    teacher's k-NN accuracy per epoch, epoch 0 being the random or loaded start."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e for e in events if "loss" in e]
    knn = sorted((e["epoch"], e["knn_accuracy"]) for e in events if "knn_accuracy" in e)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([e["step"] for e in steps], [e["loss"] for e in steps], label="loss")
    if steps and "teacher_entropy" in steps[0]:
        left.plot([e["step"] for e in steps], [e["teacher_entropy"] for e in steps], label="teacher entropy")
        left.plot([e["step"] for e in steps], [e["mean_teacher_entropy"] for e in steps], label="entropy of the batch-mean teacher")
    left.axhline(math.log(out_dim), color="grey", linestyle="--", linewidth=1, label=f"ln(out_dim) = {math.log(out_dim):.2f} (uniform)")
    left.set_xlabel("step")
    left.set_ylabel("nats")
    left.legend(fontsize=8)
    left.set_title("loss and teacher entropy")
    if knn:
        right.plot([k[0] for k in knn], [100 * k[1] for k in knn], marker="o")
        right.axhline(100 * knn[0][1], color="grey", linestyle="--", linewidth=1, label="at the start")
        right.legend(fontsize=8)
    right.set_xlabel("epoch")
    right.set_ylabel("k-NN accuracy (%)")
    right.set_title("teacher features, weighted 20-NN")
    return save_figure(figure, path)
