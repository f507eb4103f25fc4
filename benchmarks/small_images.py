"""Small images from scratch: `vitzoo finetune` against a plain PyTorch loop on the same files.

    python benchmarks/small_images.py                    # 60,000 28x28 PNGs, 0.46M-parameter ViT, batch 64
    python benchmarks/small_images.py --images 10000 --steps 150 --output small.json

The data: a folder of `--images` 28x28 grayscale PNGs in 10 class folders, generated once (cached
beside the user cache) from scikit-learn's bundled digits: each 8x8 digit upscaled to 20 px at a
random offset in the 28 px frame, with a little noise.

Both sides train the same model -- the registry's deit-tiny with `--config-overrides
hidden_size=96,num_hidden_layers=4,num_attention_heads=3,intermediate_size=384,patch_size=7`
at 28 px (0.46M parameters), random init -- with AdamW at batch 64, in this one process (the
same torch threads), each in its faster precision:

- recipe: `vitzoo.methods.finetune.train(FinetuneArguments(dataset=FOLDER, ...))`, the recipe as
  `vitzoo finetune` runs it with its defaults (`--mixed-precision auto`, `--in-memory auto`, its
  augmentation: random resized crop and flip, label smoothing, clipping, logging, progress bar).
- plain loop (written here, the way one would by hand): every PNG decoded once into a uint8 tensor,
  a shuffled order per epoch, a batched random flip, normalisation, the transformers model, cross
  entropy, `loss.backward()`, AdamW; run in fp32 and in bf16 autocast, the faster one counted.

Rates are images/s over steps `--warmup`..`--steps` of the first epoch (timestamps after each
optimizer step), the median of `--repeats` runs alternating the sides. The recipe's data loading
(decoding once) happens before its first step, as the plain loop's does before its timer starts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

SHAPE = "hidden_size=96,num_hidden_layers=4,num_attention_heads=3,intermediate_size=384,patch_size=7"


def small_image_folder(count: int, seed: int = 0) -> str:
    """`count` 28x28 grayscale PNGs in 10 class folders, made once from the bundled digits."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from vitzoo.data.photos import PHOTO_FOLDER, default_location
    from vitzoo.io import atomic_directory

    path = default_location(count).replace("photos-", "small-digits-")
    if os.path.isfile(os.path.join(path, "DONE")):
        return path
    digits = load_digits()
    rng = np.random.default_rng(seed)
    with atomic_directory(path, PHOTO_FOLDER) as tmp:
        for label in range(10):
            os.makedirs(os.path.join(tmp, str(label)))
        for index in range(count):
            source = int(rng.integers(0, len(digits.images)))
            digit = Image.fromarray((digits.images[source] * 255 / 16).astype(np.uint8)).resize((20, 20), Image.Resampling.BILINEAR)
            frame = np.zeros((28, 28), dtype=np.float32)
            top, left = rng.integers(0, 9, size=2)
            frame[top : top + 20, left : left + 20] = np.asarray(digit, dtype=np.float32)
            frame = np.clip(frame + rng.normal(0, 8, frame.shape), 0, 255).astype(np.uint8)
            Image.fromarray(frame).save(os.path.join(tmp, str(digits.target[source]), f"{index:06d}.png"))
        with open(os.path.join(tmp, "DONE"), "w") as handle:
            handle.write(f"{count} images, seed {seed}\n")
    return path


def steady_rate(stamps: list[float], batch_size: int, warmup: int, steps: int) -> float:
    stamps = stamps[:steps]
    return (len(stamps) - warmup) * batch_size / (stamps[-1] - stamps[warmup - 1])


def run_recipe(folder: str, args: argparse.Namespace) -> dict:
    from vitzoo.methods import finetune
    from vitzoo.training.arguments import FinetuneArguments
    from vitzoo.training.objective import Callback

    stamps: list[float] = []
    seen: dict = {}

    class Stamp(Callback):
        def on_train_begin(self, context) -> None:
            from vitzoo.data.memory import InMemorySplit

            seen["precision"] = context.accelerator.mixed_precision
            seen["in_memory"] = isinstance(context.train_loader.dataset, InMemorySplit)
            self.start = time.perf_counter()

        def on_step(self, context) -> None:
            stamps.append(time.perf_counter() - self.start)
            if len(stamps) == args.steps:
                raise KeyboardInterrupt  # measured: stop the run here

    with tempfile.TemporaryDirectory() as output:
        arguments = FinetuneArguments(model="deit-tiny", scratch=True, dataset=folder, image_size=28, config_overrides=SHAPE,
                                      batch_size=args.batch_size, epochs=1, output_dir=output, cpu=True)
        try:
            finetune.train(arguments, callbacks=[Stamp()])
        except KeyboardInterrupt:
            pass
    return {"rate": steady_rate(stamps, args.batch_size, args.warmup, args.steps), **seen}


def load_folder(folder: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every PNG decoded once: uint8 N x 1 x 28 x 28 and int64 labels."""
    from PIL import Image

    images, labels = [], []
    for label in sorted(os.listdir(folder)):
        directory = os.path.join(folder, label)
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            with Image.open(os.path.join(directory, name)) as image:
                images.append(np.asarray(image.convert("L")))
            labels.append(int(label))
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(labels)


def run_plain(images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace, bf16: bool) -> float:
    """The hand-written loop; images/s over steps warmup..steps."""
    import vitzoo

    torch.manual_seed(0)
    model = vitzoo.load("deit-tiny", task="classification", id2label={i: str(i) for i in range(10)}, pretrained=False,
                        image_size=28, config_overrides=SHAPE).model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    order = torch.randperm(len(images))
    stamps, start = [], time.perf_counter()
    for step in range(args.steps):
        batch = order[step * args.batch_size : (step + 1) * args.batch_size]
        x = images[batch].expand(-1, 3, -1, -1).float().div_(127.5).sub_(1.0)
        flip = torch.rand(len(batch)) < 0.5
        x[flip] = x[flip].flip(-1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(pixel_values=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[batch])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter() - start)
    return steady_rate(stamps, args.batch_size, args.warmup, args.steps)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--images", type=int, default=60000, help="PNGs in the generated folder (default 60,000)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run, warm-up included (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the rate (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating (default 3)")
    parser.add_argument("--output", default=None, help="write the figures as JSON to this file")
    args = parser.parse_args(argv)

    folder = small_image_folder(args.images)
    begin = time.perf_counter()
    images, labels = load_folder(folder)
    decode_seconds = time.perf_counter() - begin
    recipe, plain = [], {"fp32": [], "bf16": []}
    for _ in range(args.repeats):
        for precision in plain:
            plain[precision].append(run_plain(images, labels, args, bf16=precision == "bf16"))
        recipe.append(run_recipe(folder, args))
    plain_rates = {precision: statistics.median(rates) for precision, rates in plain.items()}
    best_plain = max(plain_rates, key=plain_rates.get)
    recipe_rate = statistics.median(run["rate"] for run in recipe)
    results = {"folder": folder, "images": len(images), "decode_seconds": decode_seconds, "settings": vars(args),
               "plain_images_per_second": plain_rates, "plain_precision": best_plain,
               "recipe_images_per_second": recipe_rate, "recipe_runs": recipe,
               "ratio": recipe_rate / plain_rates[best_plain], "threads": torch.get_num_threads(),
               "date": time.strftime("%Y-%m-%d")}
    print(f"{len(images):,} 28x28 PNGs ({folder}; decoding all once: {decode_seconds:.1f} s), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"plain loop: fp32 {plain_rates['fp32']:.0f} img/s, bf16 {plain_rates['bf16']:.0f} img/s")
    print(f"recipe ({recipe[-1]['precision']}, in memory: {recipe[-1]['in_memory']}): {recipe_rate:.0f} img/s "
          f"= {results['ratio']:.2f}x the plain loop's {best_plain}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
