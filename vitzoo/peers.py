"""Peers measured the same way as vitzoo: the fine-tuning recipe and a plain `transformers.Trainer`
set up as the transformers image-classification guide does it, on the same model, data, batch,
image size, process and threads, timed per optimizer step.

Used by `vitzoo bench` (each side's defaults) and by `benchmarks/finetune_throughput.py` (which
adds equal-precision pairs, repeats and the full report). The guide's Trainer: a
`ViTImageProcessor` gives size / mean / std, torchvision `Compose([RandomResizedCrop, ToTensor,
Normalize])` runs on PIL images through `dataset.set_transform`, `DefaultDataCollator`,
`TrainingArguments(remove_unused_columns=False)` and otherwise its defaults (adamw_torch_fused,
max_grad_norm 1.0, fp32, 0 workers). The crop matches the recipe's for digits (scale (0.5, 1),
bicubic, no flip), so both do the same augmentation work.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import torch

# ---- quiet runs: both sides' stdout/stderr (progress bars, warnings, worker output) go to a log


@contextlib.contextmanager
def captured(log_path: str):
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (Linux /proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    import resource

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


# ---- timing shared by both sides


def steady_rate(stamps: list[float], epochs: list[int], batch_size: int, warmup: int, steps: int) -> dict[str, Any]:
    """images/s over steps warmup..steps from per-step end times (stamps[i] = end of step i+1).

    A step interval (end of step k-1 -> end of step k) is timed when k-1 >= warmup and both steps
    are in the same epoch; with warmup 0 the first interval starts at the first step's end.
    """
    start = max(warmup, 1)
    intervals = [stamps[k - 1] - stamps[k - 2] for k in range(start + 1, steps + 1) if epochs[k - 1] == epochs[k - 2]]
    if not intervals:
        raise RuntimeError("no timed steps: raise --steps")
    seconds = sum(intervals)
    return {
        "images_per_second": batch_size * len(intervals) / seconds,
        "timed_steps": len(intervals),
        "timed_seconds": seconds,
        "median_step_seconds": statistics.median(intervals),
        "first_step_seconds": stamps[0] if stamps else None,  # from the start of the training loop
    }


# ---- the recipe


def run_recipe(
    args: argparse.Namespace, workers: int | None, precision: str | None, splits_len: int, workdir: str
) -> dict[str, Any]:
    from vitzoo.methods import finetune
    from vitzoo.training.arguments import FinetuneArguments
    from vitzoo.training.objective import Callback

    steps_per_epoch = min(args.steps, splits_len // args.batch_size)
    epochs = math.ceil(args.steps / steps_per_epoch)
    output_dir = tempfile.mkdtemp(prefix="recipe-", dir=workdir)
    arguments = FinetuneArguments(
        model=args.model,
        scratch=True,
        dataset="digits",
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=epochs,
        cpu=True,
        # one epoch = exactly --steps steps when they fit in the train split, so no eval/checkpoint inside
        max_train_samples=steps_per_epoch * args.batch_size,
        max_eval_samples=args.batch_size,  # the epoch-end eval (untimed) stays short
        log_steps=max(args.warmup, 1),
        output_dir=output_dir,
        num_workers=workers,
        mixed_precision=precision or "auto",
    )
    stamps: list[float] = []

    class Stamp(Callback):
        """The end time of each optimizer step, from the start of the training loop."""

        def on_train_begin(self, context) -> None:
            self.start = time.perf_counter()

        def on_step(self, context) -> None:
            stamps.append(time.perf_counter() - self.start)

    begin = time.perf_counter()
    results = finetune.train(arguments, callbacks=[Stamp()])
    wall = time.perf_counter() - begin
    stamps = stamps[: args.steps]
    step_epochs = [i // steps_per_epoch for i in range(len(stamps))]
    rate = steady_rate(stamps, step_epochs, args.batch_size, args.warmup, args.steps)

    # cross-check: the recipe's own log windows (log_steps = warmup) after the first, first epoch only
    with open(os.path.join(output_dir, "metrics.jsonl")) as handle:
        events = [json.loads(line) for line in handle]
    windows = [
        e
        for e in events
        if "images_per_second" in e
        and e["step"] > max(args.warmup, 1)
        and e["step"] <= min(args.steps, steps_per_epoch)
    ]
    images = len(windows) * max(args.warmup, 1) * args.batch_size
    own = (
        images / sum(max(args.warmup, 1) * args.batch_size / e["images_per_second"] for e in windows)
        if windows
        else None
    )
    return {
        **rate,
        "metrics_jsonl_images_per_second": own,
        "whole_run_images_per_second": results["train_images_per_second"],
        "run_seconds": wall,
        "num_workers": workers if workers is not None else "recipe default",
        "arguments": {key: value for key, value in dataclasses.asdict(arguments).items() if key != "output_dir"},
    }


# ---- the Trainer, set up as in the transformers image-classification guide


def build_trainer_dataset(splits: Any) -> Any:
    """The recipe's train split as a `datasets.Dataset` of PIL images + ClassLabel, as a Hub dataset would be."""
    import datasets
    from PIL import Image

    from vitzoo.images import to_uint8_rgb

    images = [
        Image.fromarray(to_uint8_rgb(splits.train.reader(i)).permute(1, 2, 0).numpy()) for i in range(len(splits.train))
    ]
    names = [splits.id2label[i] for i in range(splits.num_classes)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict(
        {"image": images, "label": [int(x) for x in splits.train.labels]}, features=features
    )


def run_trainer(
    args: argparse.Namespace, workers: int, precision: str, splits: Any, dataset: Any, workdir: str
) -> dict[str, Any]:
    from torchvision.transforms import Compose, InterpolationMode, Normalize, RandomResizedCrop, ToTensor
    from transformers import DefaultDataCollator, Trainer, TrainerCallback, TrainingArguments, ViTImageProcessor

    import vitzoo

    zoo = vitzoo.load(
        args.model, task="classification", id2label=splits.id2label, pretrained=False, image_size=args.image_size
    )
    if zoo.backend != "transformers":
        raise SystemExit(
            f"{args.model} loads with the {zoo.backend} backend; the Trainer side needs a transformers model"
        )
    pre = zoo.spec.preprocessing
    image_processor = ViTImageProcessor(
        size={"height": zoo.image_size, "width": zoo.image_size}, image_mean=list(pre.mean), image_std=list(pre.std)
    )
    # the guide's transforms, with the crop the recipe uses for digits (scale >= 0.5, no flip, bicubic)
    size = (image_processor.size["height"], image_processor.size["width"])
    normalize = Normalize(mean=image_processor.image_mean, std=image_processor.image_std)
    _transforms = Compose(
        [
            RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=InterpolationMode[pre.interpolation.upper()]),
            ToTensor(),
            normalize,
        ]
    )

    def transforms(examples: dict[str, list]) -> dict[str, list]:
        examples["pixel_values"] = [_transforms(img.convert("RGB")) for img in examples["image"]]
        del examples["image"]
        return examples

    train = dataset.with_format(None)
    train.set_transform(transforms)

    stamps: list[float] = []
    epochs: list[float] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, targs, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, targs, state, control, **kwargs):
            stamps.append(time.perf_counter() - self.start)
            epochs.append(state.epoch)

    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="trainer-", dir=workdir),
        remove_unused_columns=False,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=5e-4,
        weight_decay=0.05,
        dataloader_num_workers=workers,
        dataloader_drop_last=True,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        bf16=precision == "bf16",
        seed=0,
    )
    trainer = Trainer(
        model=zoo.model,
        args=training_args,
        train_dataset=train,
        data_collator=DefaultDataCollator(),
        callbacks=[Stamp()],
    )
    begin = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - begin
    steps_per_epoch = len(dataset) // args.batch_size
    step_epochs = [i // steps_per_epoch for i in range(len(stamps))]
    rate = steady_rate(stamps, step_epochs, args.batch_size, args.warmup, args.steps)
    return {**rate, "run_seconds": wall, "num_workers": workers, "optim": str(training_args.optim.value)}


# ---- process warm-up: the first training steps of a process are slow (oneDNN primitives, the
# allocator's thresholds, page faults); without this, whichever side runs first pays for them


def warm_up_process(args: argparse.Namespace, id2label: dict[int, str], steps: int = 4) -> float:
    import vitzoo

    begin = time.perf_counter()
    model = vitzoo.load(
        args.model, task="classification", id2label=id2label, pretrained=False, image_size=args.image_size
    ).model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixels = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, len(id2label), (args.batch_size,))
    for _ in range(steps):
        model(pixel_values=pixels, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - begin


def compare_defaults(
    model: str, *, image_size: int, batch_size: int, steps: int = 12, warmup: int = 3, log_path: str | None = None
) -> dict[str, Any]:
    """Steady-state images/s of the recipe and of the Trainer, each with its own defaults (the
    recipe: `--mixed-precision auto` and its default workers; the Trainer: fp32, 0 workers), on the
    bundled digits at `image_size`, after an untimed warm-up of the process."""
    from vitzoo.data import default_num_workers, load_splits
    from vitzoo.training.engine import reset_accelerate_state, resolve_mixed_precision

    args = argparse.Namespace(model=model, image_size=image_size, batch_size=batch_size, steps=steps, warmup=warmup)
    previous = os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
    try:
        precision = resolve_mixed_precision("auto", use_cpu=True)
        with tempfile.TemporaryDirectory(prefix="vitzoo-peers-") as workdir:
            with captured(log_path or os.path.join(workdir, "runs.log")):
                splits = load_splits("digits", seed=0)
                dataset = build_trainer_dataset(splits)
                warm_up_process(args, splits.id2label)
                reset_accelerate_state()  # the Trainer builds its Accelerator on whatever state is left
                trainer = run_trainer(args, 0, "no", splits, dataset, workdir)
                recipe = run_recipe(args, None, None, len(splits.train), workdir)
                reset_accelerate_state()
    finally:
        if previous is not None:
            os.environ["ACCELERATE_MIXED_PRECISION"] = previous
    return {
        "recipe_images_per_second": recipe["images_per_second"],
        "trainer_images_per_second": trainer["images_per_second"],
        "recipe_vs_trainer": recipe["images_per_second"] / trainer["images_per_second"],
        "recipe_precision": precision,
        "recipe_workers": default_num_workers(),
    }
