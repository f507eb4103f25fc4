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


# what a step event or an evaluation event holds besides curves worth drawing
_NOT_CURVES = {"step", "epoch", "eval", "samples", "images_per_second", "lr", "loss", "best_step"}


def run_curves(events: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """A run's metrics.jsonl events as curves: 'loss' and 'lr' per step, each logged per-step value
    ('teacher_entropy', ...) per step, and each evaluation metric ('eval accuracy', ...) per epoch."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for event in events:
        if event.get("eval"):
            for key, value in event.items():
                if key not in _NOT_CURVES and isinstance(value, (int, float)) and not isinstance(value, bool):
                    curves.setdefault(f"eval {key}", []).append((event["epoch"], float(value)))
            if "loss" in event:
                curves.setdefault("eval loss", []).append((event["epoch"], float(event["loss"])))
        elif "loss" in event:
            for key, value in event.items():
                if key in ("loss", "lr") or (key not in _NOT_CURVES and isinstance(value, (int, float))
                                             and not isinstance(value, bool) and key.endswith("entropy")):
                    curves.setdefault(key, []).append((event["step"], float(value)))
    return curves


def save_run_curves(path: str, runs: list[tuple[str, list[dict]]]) -> str:
    """curves.png: for one run or several on shared axes, training loss and learning rate per step,
    the per-step entropies a method logs (DINO's teacher), and every evaluation metric per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = [(label, run_curves(events)) for label, events in runs]
    names: list[str] = []
    for _, curves in every:
        names += [name for name in curves if name not in names]
    order = ["loss", "lr"] + sorted(n for n in names if not n.startswith("eval ") and n not in ("loss", "lr")) + \
        sorted(n for n in names if n.startswith("eval "))
    panels = [name for name in order if name in names] or ["loss"]
    columns = min(3, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, name in zip(axes.flat, panels):
        for label, curves in every:
            points = curves.get(name, [])
            if points:
                marker = "o" if name.startswith("eval ") else None
                axis.plot([p[0] for p in points], [p[1] for p in points], marker=marker, markersize=3, label=label)
        axis.set_title(name)
        axis.set_xlabel("epoch" if name.startswith("eval ") else "step")
        if name == "lr":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        if len(runs) > 1:
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    return save_figure(figure, path)
