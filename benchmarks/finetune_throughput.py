"""Steady-state training throughput: vitzoo's fine-tuning recipe vs a plain `transformers.Trainer`.

    python benchmarks/finetune_throughput.py                        # deit-tiny, 224px, batch 32, 30 steps
    python benchmarks/finetune_throughput.py --image-size 64 --steps 20 --workers 0 --output bench.json

Both sides train the same architecture (`vitzoo.load(MODEL, pretrained=False, ...)`, random init,
so nothing is downloaded) on the same data (the bundled digits, the recipe's own train split), at
the same batch size and input size, in this one process (so with the same torch thread count),
without evaluation or checkpointing inside the timed steps:

- recipe: `vitzoo.methods.finetune.train(FinetuneArguments(...))`, i.e. the recipe exactly as `vitzoo finetune` runs it
  (uint8 tensor augmentation in the DataLoader workers, batch normalisation in the loop, timm
  label-smoothing loss, AdamW with parameter groups, gradient clipping at 1.0).
- Trainer: the transformers image-classification guide: a `ViTImageProcessor` gives size / mean /
  std, torchvision `Compose([RandomResizedCrop, ToTensor, Normalize])` runs on PIL images through
  `dataset.set_transform`, `DefaultDataCollator`, `TrainingArguments(remove_unused_columns=False)`
  and otherwise its defaults (adamw_torch_fused, max_grad_norm 1.0). The crop matches the recipe's
  for digits (scale (0.5, 1), bicubic, no flip), so both do the same augmentation work.

Timing: a timestamp after every optimizer step (a `TrainerCallback.on_step_end` for the Trainer;
for the recipe, a `vitzoo.training.objective.Callback.on_step`, called by the shared loop after each
optimizer update the same way). The rate
is images / seconds over steps `--warmup`..`--steps`, leaving out any step that starts a new epoch
(the recipe evaluates and checkpoints at epoch ends; both restart their DataLoader workers there).
The recipe's own figure from metrics.jsonl (its `images_per_second` log windows after the first)
is recorded as a cross-check.

Settings compared (runs with equal settings shared, alternating Trainer / recipe, after a few
untimed training steps that warm the process up, since its first steps are slow whichever side
runs them):

1. each side's defaults, as a user gets them: the recipe with no --num-workers and no
   --mixed-precision (`auto`: bf16 autocast on CPUs with native bf16, else fp32; workers from
   `default_num_workers()`), the Trainer in fp32 with 0 workers;
2. both in bf16 autocast (the Trainer's `bf16=True`) with `--workers` workers, on CPUs with native bf16;
3. both in fp32 with `--workers` workers.

Everything the two sides print is kept out of the terminal (see --log); only the final table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

import torch

from vitzoo.peers import (
    build_trainer_dataset,
    busy_cpu_seconds,
    captured,
    own_cpu_seconds,
    run_recipe,
    run_trainer,
    warm_up_process,
)
from vitzoo.training.engine import reset_accelerate_state


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from vitzoo.data import default_num_workers

    parser = argparse.ArgumentParser(
        description="Steady-state training images/s of vitzoo's fine-tuning recipe vs a plain transformers.Trainer "
        "(same model, data, batch size, image size, process and threads): each side's defaults, then both in bf16 "
        "(where the CPU has it natively) and both in fp32.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="deit-tiny",
        help="vitzoo registry name with a transformers backend; built with random weights "
        "(vitzoo.load(..., pretrained=False)) for both sides, so nothing is downloaded",
    )
    parser.add_argument(
        "--image-size", type=int, default=224, help="input size in pixels (a multiple of the patch size)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per optimizer step, both sides")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument(
        "--warmup", type=int, default=5, help="steps left out of the timing: the rate covers steps WARMUP..STEPS"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_num_workers(),
        help="DataLoader workers for the matched runs of both sides (default: the recipe's own "
        "default here); each side also runs once with its own defaults (Trainer: 0)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every configuration this many times (alternating sides) and report the best "
        "rate of each; use 2-3 on a machine other work shares, since contention only slows runs",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch intra-op threads for both sides (default: leave torch's default, {torch.get_num_threads()} here)",
    )
    parser.add_argument("--output", metavar="FILE", default=None, help="also write the results as JSON to FILE")
    parser.add_argument(
        "--log",
        metavar="FILE",
        default=None,
        help="append everything the runs print (progress bars, warnings) to FILE "
        "(default: a temporary file, shown only if a run fails)",
    )
    args = parser.parse_args(argv)
    if args.steps < 2 or not 0 <= args.warmup < args.steps:
        parser.error("need --steps >= 2 and 0 <= --warmup < --steps")
    if args.batch_size < 1 or args.image_size < 1 or args.workers < 0 or args.repeats < 1:
        parser.error("--batch-size, --image-size and --repeats must be positive, --workers >= 0")
    return args


# ---- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    import datasets
    import transformers

    import vitzoo
    from vitzoo.data import default_num_workers, load_splits
    from vitzoo.training.engine import resolve_mixed_precision

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()

    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vitzoo-bench-") as workdir:
        log_path = os.path.abspath(args.log) if args.log else os.path.join(workdir, "runs.log")
        recipe_default = default_num_workers()
        os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
        recipe_precision = resolve_mixed_precision("auto", use_cpu=True)  # what the recipe's default picks here
        matched = (["bf16"] if recipe_precision == "bf16" else []) + ["no"]
        candidates = [("trainer", 0, "no"), ("recipe", recipe_default, recipe_precision)]
        for precision in matched:
            candidates += [("trainer", args.workers, precision), ("recipe", args.workers, precision)]
        plan = []  # (side, workers, precision); equal settings run once
        for key in candidates:
            if key not in plan:
                plan.append(key)
        attempts: dict[tuple[str, int, str], list[dict[str, Any]]] = {key: [] for key in plan}
        load_before = os.getloadavg()
        busy_before, own_before = busy_cpu_seconds(), own_cpu_seconds()
        try:
            with captured(log_path):
                splits = load_splits("digits", seed=0)  # the recipe's split (its --seed defaults to 0)
                dataset = build_trainer_dataset(splits)
                warm_up_seconds = warm_up_process(args, splits.id2label)
                for _ in range(args.repeats):
                    for side, workers, precision in plan:
                        reset_accelerate_state()
                        if side == "recipe":
                            # the recipe's default run leaves --num-workers and --mixed-precision unset, as a user would
                            default = workers == recipe_default and precision == recipe_precision
                            run = run_recipe(
                                args, None if default else workers, None if default else precision,
                                len(splits.train), workdir,
                            )
                            run["num_workers"] = workers
                        else:
                            run = run_trainer(args, workers, precision, splits, dataset, workdir)
                        run["precision"] = precision
                        run["threads_after"] = torch.get_num_threads()
                        attempts[side, workers, precision].append(run)
        except BaseException:
            if not args.log:
                with open(log_path) as handle:
                    sys.stderr.write("".join(handle.readlines()[-60:]))
            raise
        load_after = os.getloadavg()
        # CPU time other processes took meanwhile: on a shared machine they slow both sides, unevenly
        busy_after = busy_cpu_seconds()
        foreign = (
            None
            if busy_before is None or busy_after is None
            else max(0.0, busy_after - busy_before - (own_cpu_seconds() - own_before))
        )
        runs = {key: max(tries, key=lambda run: run["images_per_second"]) for key, tries in attempts.items()}
        total = time.perf_counter() - begin

    rows = [("each side's defaults", runs["recipe", recipe_default, recipe_precision], runs["trainer", 0, "no"])]
    for precision in matched:
        rows.append((f"both {'fp32' if precision == 'no' else precision}, {args.workers} workers",
                     runs["recipe", args.workers, precision], runs["trainer", args.workers, precision]))
    results = {
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "workers": args.workers,
        "torch_threads": threads,
        "recipe_default_precision": recipe_precision,
        "comparisons": [
            {
                "setting": name,
                "recipe_workers": r["num_workers"],
                "trainer_workers": t["num_workers"],
                "recipe_precision": r["precision"],
                "trainer_precision": t["precision"],
                "recipe_images_per_second": r["images_per_second"],
                "trainer_images_per_second": t["images_per_second"],
                "ratio_recipe_over_trainer": r["images_per_second"] / t["images_per_second"],
            }
            for name, r, t in rows
        ],
        "runs": [
            {"side": side, "attempt": i, **run} for (side, _, _), tries in attempts.items() for i, run in enumerate(tries)
        ],
        "repeats": args.repeats,
        "load_average_1_5_15min": {"before": load_before, "after": load_after},
        "other_processes_cpu_seconds": foreign,
        "process_warm_up_seconds": warm_up_seconds,
        "total_seconds": total,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
            "vitzoo": vitzoo.__version__,
            "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "cuda": torch.cuda.is_available(),
        },
    }

    print(
        f"{args.model}, {args.image_size}px, batch {args.batch_size}, {threads} torch threads; "
        f"images/s over steps {args.warmup}..{args.steps}"
        + (f", best of {args.repeats}" if args.repeats > 1 else "")
        + f"; load average before {load_before[0]:.1f}"
    )
    header = (f"{'setting':<30} {'workers r/T':>11} {'precision r/T':>13} {'recipe img/s':>13} {'Trainer img/s':>14} "
              f"{'recipe/Trainer':>15}")
    print(header)
    print("-" * len(header))
    for c in results["comparisons"]:
        print(
            f"{c['setting']:<30} {str(c['recipe_workers']) + '/' + str(c['trainer_workers']):>11} "
            f"{c['recipe_precision'] + '/' + c['trainer_precision']:>13} "
            f"{c['recipe_images_per_second']:>13.1f} {c['trainer_images_per_second']:>14.1f} "
            f"{c['ratio_recipe_over_trainer']:>14.2f}x"
        )
    if foreign is not None and foreign > 0.05 * total * (os.cpu_count() or 1):
        print(
            f"note: other processes used {foreign:.0f} CPU-seconds during these {total:.0f} s; "
            "the figures are disturbed, rerun on a quiet machine (or use --repeats)"
        )
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)
            handle.write("\n")
    return results


if __name__ == "__main__":
    main()
