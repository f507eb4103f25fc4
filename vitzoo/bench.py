"""`vitzoo bench`: how fast vitzoo turns this machine into predictions and trained models, against
its peers and against the machine's own limit, all measured in one run on one device.

For each model, batch size and image size, in the inference precision chosen (`--precision`, auto
by default: bf16 autocast where the hardware computes it natively, see `vitzoo.precision`):

* inference images/s of `ZooModel.predict` on decoded images (preprocessing included), of the raw
  transformers model and of the raw timm model on ready tensors (autocast to the same dtype), and of
  `transformers.pipeline("image-classification")` on the same decoded images, loaded from a folder as
  a user would, once with its defaults (fp32) and once given `dtype=torch.bfloat16`, with ratios;
* the quality cost of the precision: top-1 agreement with fp32 and the largest logit and embedding
  differences (`vitzoo.precision_agreement`) on the same photos, with the released weights where
  they are in the Hub cache, else with the random ones (near-tied logits: a pessimistic figure);
* batch-1 latency of `ZooModel.predict`;
* training-step images/s (forward, backward, AdamW step, as the fine-tuning recipe runs it), on
  the transformers backend and, where the model has a timm twin, on the timm backend too; and
  the data pipeline's images/s (decode + augment + collate with the default workers), so a user
  sees which one bounds a run;
* on a CPU, the fine-tuning recipe against `transformers.Trainer` set up as the docs show, each
  with its own defaults, steady-state images/s of whole training steps (vitzoo.peers);
* model FLOPs utilisation (MFU): forward FLOPs counted by torch's FlopCounterMode x images/s
  (training counted as 3x forward) over the peak matrix-multiply FLOP/s measured in the same run,
  on the same device and dtype.

Weights are random (speed does not depend on them), so the benchmark needs no download.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import vitzoo
from vitzoo.measure import count_flops, latency, throughput
from vitzoo.precision import autocast, dtype_name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], Any], device: torch.device, *, warmup: int, min_seconds: float, min_iters: int) -> float:
    """Seconds per call of `step`, after `warmup` calls, over at least `min_iters` calls and `min_seconds`."""
    for _ in range(warmup):
        step()
    _sync(device)
    start, done = time.perf_counter(), 0
    while done < min_iters or time.perf_counter() - start < min_seconds:
        step()
        done += 1
    _sync(device)
    return (time.perf_counter() - start) / done


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, size: int | None = None, min_seconds: float = 1.0) -> float:
    """FLOP/s of a plain square matrix multiply: the machine's practical limit for this dtype."""
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = _timed(lambda: a @ b, device, warmup=2, min_seconds=min_seconds, min_iters=3)
    return 2 * size**3 / seconds


def sample_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """Decoded photos of natural sizes (scikit-learn's bundled samples, cropped at random)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        photo = photos[index % len(photos)]
        top, left = rng.integers(0, 60), rng.integers(0, 60)
        out.append(np.ascontiguousarray(photo[top : top + 360, left : left + 480]))
    return out


def bench_model(
    name: str,
    *,
    batch_size: int,
    image_size: int,
    device: torch.device,
    precision: str = "auto",
    compile: bool = False,
    channels_last: bool = False,
    min_seconds: float = 2.0,
    peak_flops: float | None = None,
    include_pipeline: bool = True,
    include_training: bool = True,
    include_data: bool = True,
    trainer_steps: int = 0,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Every figure above for one model at one batch and image size (with `trainer_steps` > 0 on a
    CPU, also the fine-tuning recipe against `transformers.Trainer`, each with its defaults)."""
    zoo = vitzoo.load(name, pretrained=False, image_size=image_size, device=device, precision=precision)
    torch_dtype = zoo.compute_dtype
    images = sample_images(batch_size)
    model = zoo.model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward_model = torch.compile(model) if compile else model

    def hf_forward(pixels: torch.Tensor) -> torch.Tensor:
        with autocast(device.type, torch_dtype):
            return forward_model(pixel_values=pixels).logits

    result: dict[str, Any] = {"model": name, "batch_size": batch_size, "image_size": image_size, "device": str(device),
                              "precision": precision, "dtype": dtype_name(torch_dtype), "compile": compile,
                              "params": zoo.num_params}
    result.update(_agreement(zoo, images, precision))
    if include_pipeline:  # a folder, as users load the pipeline: from_pretrained with its defaults, or a dtype
        with tempfile.TemporaryDirectory() as folder:
            zoo.save_pretrained(folder)
            result["pipeline_images_per_second"] = _pipeline_rate(folder, images, device, min_seconds)
            result["pipeline_bf16_images_per_second"] = _pipeline_rate(folder, images, device, min_seconds,
                                                                       dtype=torch.bfloat16)
    flops = count_flops(lambda x: model(pixel_values=x).logits, image_size, model)
    result["gflops_per_image"] = flops / 1e9
    iters = dict(warmup=2, iters=3, min_seconds=min_seconds)
    result["transformers_images_per_second"] = throughput(hf_forward, image_size, model, batch_size=batch_size, **iters)

    zoo.model = forward_model  # predict runs the same (possibly compiled) module, in its own precision
    result["predict_images_per_second"] = batch_size / _timed(lambda: zoo.predict(images, top_k=5), device, warmup=1,
                                                              min_seconds=min_seconds, min_iters=3)
    one = images[:1]
    result["predict_latency_ms"] = 1000 * _timed(lambda: zoo.predict(one), device, warmup=2, min_seconds=min_seconds / 2, min_iters=5)
    result["transformers_latency"] = latency(hf_forward, image_size, model, iters=10)

    spec = zoo.spec
    if spec.timm_name:
        timm_zoo = vitzoo.load(name, pretrained=False, backend="timm", image_size=image_size, device=device)
        timm_model = timm_zoo.model.eval()
        timm_forward_model = torch.compile(timm_model) if compile else timm_model

        def timm_forward(pixels: torch.Tensor) -> torch.Tensor:
            with autocast(device.type, torch_dtype):
                return timm_forward_model(pixels)

        result["timm_images_per_second"] = throughput(timm_forward, image_size, timm_model, batch_size=batch_size, **iters)
    if include_training:
        result["train_images_per_second"] = _train_rate(zoo, batch_size, device, torch_dtype, compile, min_seconds)
        if spec.timm_name:  # the same step on the timm backend (`--backend timm` in the recipes)
            result["timm_train_images_per_second"] = _train_rate(zoo, batch_size, device, torch_dtype, compile, min_seconds,
                                                                 backend="timm")
    if include_data:
        rate, workers = data_pipeline_rate(zoo, batch_size, min_seconds, data_dir=data_dir)
        # per core: the loader's workers each use one (none: the main process's one)
        result.update(data_images_per_second=rate, data_workers=workers,
                      data_images_per_second_per_core=rate / max(1, workers), data_dir=data_dir or "real photos")
    if trainer_steps and device.type == "cpu" and zoo.backend == "transformers":
        from vitzoo.peers import compare_defaults

        result.update(compare_defaults(name, image_size=image_size, batch_size=batch_size, steps=trainer_steps,
                                       warmup=max(1, trainer_steps // 4)))

    raw_best = max(result["transformers_images_per_second"], result.get("timm_images_per_second", 0.0))
    result["predict_vs_raw"] = result["predict_images_per_second"] / result["transformers_images_per_second"]
    result["predict_vs_fastest_raw"] = result["predict_images_per_second"] / raw_best
    if "pipeline_images_per_second" in result:
        result["predict_vs_pipeline"] = result["predict_images_per_second"] / result["pipeline_images_per_second"]
        result["predict_vs_pipeline_bf16"] = result["predict_images_per_second"] / result["pipeline_bf16_images_per_second"]
    if peak_flops:
        result["peak_matmul_gflops"] = peak_flops / 1e9
        result["inference_mfu"] = flops * result["transformers_images_per_second"] / peak_flops
        if "train_images_per_second" in result:
            result["train_mfu"] = 3 * flops * result["train_images_per_second"] / peak_flops
        if "timm_train_images_per_second" in result:
            result["timm_train_mfu"] = 3 * flops * result["timm_train_images_per_second"] / peak_flops
    if "data_images_per_second" in result and "train_images_per_second" in result:
        result["data_vs_train"] = result["data_images_per_second"] / result["train_images_per_second"]
    return result


def _agreement(zoo, images: list[np.ndarray], precision: str) -> dict[str, Any]:
    """`vitzoo.precision_agreement` of `precision` on the bench's photos, with the released weights where
    the Hub cache holds them (a trained model's margins), else with `zoo`'s random ones."""
    from vitzoo import hub

    if zoo.spec.hub_id and hub.is_cached(zoo.spec.hub_id, "model.safetensors"):
        zoo, weights = vitzoo.load(zoo.spec.name, image_size=zoo.image_size, device=zoo.device), "pretrained"
    else:
        weights = "random"
    agreement = vitzoo.precision_agreement(zoo, images, precision, batch_size=len(images))
    return {"top1_agreement": agreement.top1_agreement, "max_abs_logit_diff": agreement.max_abs_logit_diff,
            "max_abs_embedding_diff": agreement.max_abs_embedding_diff, "agreement_images": agreement.images,
            "agreement_weights": weights}


def _pipeline_rate(folder: str, images: list[np.ndarray], device: torch.device, min_seconds: float,
                   dtype: torch.dtype | None = None) -> float:
    """`transformers.pipeline("image-classification")` loaded from `folder` on the same decoded images:
    with its defaults (fp32 weights), or given `dtype` (weights and inputs cast to it)."""
    import transformers
    from PIL import Image

    classifier = transformers.pipeline("image-classification", model=folder, device=device,
                                       **({"dtype": dtype} if dtype is not None else {}))
    pil_images = [Image.fromarray(image) for image in images]
    return len(images) / _timed(lambda: classifier(pil_images, batch_size=len(images), top_k=5), device,
                                warmup=1, min_seconds=min_seconds, min_iters=2)


def _train_rate(zoo, batch_size: int, device: torch.device, dtype: torch.dtype, compile: bool, min_seconds: float,
                backend: str | None = None) -> float:
    """Images/s of the fine-tuning recipe's step: normalise, forward, loss, backward, clip, AdamW
    (on the model's default backend, or on `backend`)."""
    from vitzoo.data import normalize_batch
    from vitzoo.training.optim import build_optimizer

    train_zoo = vitzoo.load(zoo.spec.timm_name if zoo.spec.timm_only else zoo.spec.name, pretrained=False,
                            num_labels=10, image_size=zoo.image_size, device=device, backend=backend)
    model = train_zoo.model.train()
    step_model = torch.compile(model) if compile else model
    optimizer = build_optimizer(model, learning_rate=1e-4, weight_decay=0.05, layer_decay=None,
                                depth=train_zoo.spec.architecture.depth)
    images = torch.randint(0, 256, (batch_size, 3, zoo.image_size, zoo.image_size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> None:
        pixels = normalize_batch(images, train_zoo.spec.preprocessing)
        with autocast(device.type, dtype):
            logits = step_model(pixels) if train_zoo.backend == "timm" else step_model(pixel_values=pixels).logits
            loss = criterion(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return batch_size / _timed(step, device, warmup=2, min_seconds=min_seconds, min_iters=3)


def data_pipeline_rate(zoo, batch_size: int, min_seconds: float, num_workers: int | None = None,
                       data_dir: str | None = None) -> tuple[float, int]:
    """(images/s, workers): what the recipe's training data pipeline delivers (decode + random
    resized crop + flip + uint8 collate, per image: no in-memory cache) with the default worker
    count, over the image files of `data_dir` (default: the real-photo folder of
    `vitzoo.data.photos`, 2,000 JPEGs built once in the user cache)."""
    from vitzoo.data import default_num_workers, load_splits, make_loader, train_transform
    from vitzoo.data.photos import photo_folder

    workers = default_num_workers() if num_workers is None else num_workers
    splits = load_splits(data_dir or photo_folder(), val_fraction=0.1, seed=0)
    loader = make_loader(splits.train, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=False,
                         transform=train_transform(zoo.spec.preprocessing, image_size=zoo.image_size),
                         persistent_workers=True, in_memory="off")
    count, start, deadline = 0, None, None
    while deadline is None or time.perf_counter() < deadline:
        for images, _ in loader:
            if start is None:  # the first batch pays for starting the workers
                start, deadline = time.perf_counter(), time.perf_counter() + min_seconds
                continue
            count += images.shape[0]
            if time.perf_counter() >= deadline:
                break
    return count / (time.perf_counter() - start), workers


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The README's table: one row per model and setting, every ratio the issue asks for."""
    columns = [
        ("model", "model", "{}"),
        ("batch_size", "batch", "{}"),
        ("image_size", "size", "{}"),
        ("dtype", "dtype", "{}"),
        ("predict_images_per_second", "predict img/s", "{:.1f}"),
        ("transformers_images_per_second", "raw HF img/s", "{:.1f}"),
        ("timm_images_per_second", "raw timm img/s", "{:.1f}"),
        ("pipeline_images_per_second", "pipeline img/s", "{:.1f}"),
        ("pipeline_bf16_images_per_second", "pipeline bf16 img/s", "{:.1f}"),
        ("predict_vs_fastest_raw", "predict / fastest raw", "{:.2f}x"),
        ("predict_vs_pipeline", "predict / pipeline", "{:.2f}x"),
        ("predict_vs_pipeline_bf16", "predict / pipeline bf16", "{:.2f}x"),
        ("top1_agreement", "top-1 agreement vs fp32", "{:.1%}"),
        ("max_abs_logit_diff", "max logit diff vs fp32", "{:.3g}"),
        ("agreement_weights", "agreement weights", "{}"),
        ("predict_latency_ms", "predict b1 ms", "{:.1f}"),
        ("train_images_per_second", "train img/s", "{:.1f}"),
        ("timm_train_images_per_second", "timm train img/s", "{:.1f}"),
        ("data_images_per_second_per_core", "data img/s per core", "{:.1f}"),
        ("data_vs_train", "data / train", "{:.2f}x"),
        ("inference_mfu", "inference MFU", "{:.0%}"),
        ("train_mfu", "train MFU", "{:.0%}"),
        ("timm_train_mfu", "timm train MFU", "{:.0%}"),
        ("recipe_vs_trainer", "recipe / Trainer", "{:.2f}x"),
    ]
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in results:
        cells = [fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
