"""`vitzoo compare`: several models on one dataset, quality and cost measured the same way, one report."""

from __future__ import annotations

import argparse
import shlex
import sys

from vitzoo.cli import COUNT, POSITIVE_INT, SEED, Number
from vitzoo.cli.inference import add_precision_argument
from vitzoo.compare import DEFAULT_MODELS, LINEAR_EPOCHS, PROTOCOLS, SCRATCH_DEFAULTS, CompareConfig, run_compare
from vitzoo.compare.config import (
    BUDGET_RESERVE,
    HELD_OUT_EVAL_FRACTION,
    LORA_LEARNING_RATE,
    PRETRAINED_DEFAULTS,
    VAL_FRACTION_WITH_TEST,
)
from vitzoo.compare.report import SORTABLE
from vitzoo.training.arguments import OPEN_SHARE, POSITIVE


def register(subparsers: argparse._SubParsersAction) -> None:
    scratch = ", ".join(f"{key.replace('_', '-')} {value}" for key, value in SCRATCH_DEFAULTS.items())
    parser = subparsers.add_parser(
        "compare",
        help="compare models on one dataset: accuracy, GFLOPs, speed, memory, one report",
        description="Measure several models the same way on this machine: quality by a protocol (k-NN or "
        "linear probe on frozen features, a fine-tune, or a LoRA fine-tune), parameters (and those trained), forward GFLOPs (torch's FLOP counter), "
        "inference images/s, batch-1 latency, peak memory, and for fine-tuning training images/s, beside each "
        "checkpoint's published numbers. Writes results.json, results.csv, report.md and two plots to "
        "--output-dir; each finished model is saved at once, so a rerun resumes where it stopped. "
        f"With --scratch and no other flags: {scratch}, on {', '.join(DEFAULT_MODELS)}.",
        epilog="example: vitzoo compare --dataset digits --scratch   |   "
        "vitzoo compare --models 'deit-*,dino-vits16' --dataset digits --protocol knn",
    )
    parser.add_argument(
        "--models",
        help="comma-separated registry names (wildcards like 'deit-*'), local model folders or timm names "
        f"(default: {','.join(DEFAULT_MODELS)})",
    )
    parser.add_argument(
        "--dataset", default="digits", help="'digits' (bundled), an image folder, a CSV/JSONL or a Hub id"
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="knn: weighted k-NN on frozen features; linear: linear probe on frozen features; finetune: the "
        "fine-tuning recipe, a run folder per model in OUTPUT_DIR/runs; lora: the same with --peft lora (adapters and "
        "head only; needs `pip install \"vitzoo[peft]\"`) (default: finetune with --scratch, else knn)",
    )
    parser.add_argument(
        "--epochs",
        type=POSITIVE_INT,
        help=f"fine-tuning epochs (default {SCRATCH_DEFAULTS['epochs']} with --scratch, "
        f"{PRETRAINED_DEFAULTS['epochs']} without) or linear-probe epochs (default {LINEAR_EPOCHS})",
    )
    parser.add_argument(
        "--image-size", type=POSITIVE_INT, help=f"input size for every model (default {SCRATCH_DEFAULTS['image_size']} with --scratch, else each model's own)"
    )
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="random weights from the registry's architectures (said so in the report)",
    )
    parser.add_argument(
        "--batch-size",
        type=POSITIVE_INT,
        help="batch size of feature extraction, fine-tuning and the throughput measurement (default "
        f"{SCRATCH_DEFAULTS['batch_size']} with --scratch, else {PRETRAINED_DEFAULTS['batch_size']})",
    )
    parser.add_argument("--device", help="where to run: cpu, cuda, cuda:1 (default: cuda where available, else cpu)")
    parser.add_argument(
        "--config-overrides",
        help="architecture changes applied to every model, needs --scratch, e.g. hidden_size=64,num_hidden_layers=4,patch_size=4 "
        f"(default with --scratch: {SCRATCH_DEFAULTS['config_overrides']})",
    )
    parser.add_argument(
        "--output-dir",
        default="runs/compare",
        help="report folder (default runs/compare); models/ holds one result per model",
    )
    add_precision_argument(
        parser, "k-NN/linear feature extraction and the inference speed measurement (a fine-tune trains in the "
        "recipe's own --mixed-precision)"
    )
    parser.add_argument("--k", type=POSITIVE_INT, default=20, help="neighbours of the k-NN protocol (default 20, DINO's)")
    parser.add_argument(
        "--learning-rate",
        type=Number(float, POSITIVE),
        help=f"fine-tuning peak learning rate (default {SCRATCH_DEFAULTS['learning_rate']:g} with --scratch, else the "
        f"recipe's; lora: {LORA_LEARNING_RATE:g})",
    )
    parser.add_argument(
        "--num-workers", type=COUNT, help="data-loading processes (default: the recipe's for finetune, 0 for features)"
    )
    parser.add_argument("--max-train-samples", type=POSITIVE_INT, help="use at most this many training images")
    parser.add_argument("--max-eval-samples", type=POSITIVE_INT, help="use at most this many evaluation images")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of random init, data order and probes (default 0)")
    parser.add_argument(
        "--seeds",
        type=POSITIVE_INT,
        default=1,
        help="runs per model, seeds SEED, SEED+1, ...: fine-tunes (finetune, lora) or linear-probe fits; k-NN "
        "has no seed, so its further runs resample the training set (bootstrap). The report gives mean ± std; "
        "with 1 (the default), a Wilson 95%% interval over the evaluation images",
    )
    parser.add_argument("--train-split", default="train", help="split to train on (default train)")
    parser.add_argument(
        "--eval-split",
        help="split the report scores (default: 'test' where the data has one, else a validation split, else "
        f"{HELD_OUT_EVAL_FRACTION:g} of the training split held out)",
    )
    parser.add_argument(
        "--time-budget",
        help="finetune and lora: wall time for the whole comparison, e.g. 3m or 90s; "
        f"{BUDGET_RESERVE * 100:.0f}%% is kept for evaluating and measuring the models, the rest split evenly among the "
        "trainings (models x seeds), each planning its steps and schedule to fit its share (the recipes' "
        "--time-budget); without --epochs, the budget alone ends each training",
    )
    parser.add_argument(
        "--val-fraction",
        type=Number(float, OPEN_SHARE),
        help=f"share of the training split held out (default {VAL_FRACTION_WITH_TEST:g} when reporting on a test "
        "split: fine-tunes keep their best epoch by it, then that model is scored once on the test split; "
        f"{HELD_OUT_EVAL_FRACTION:g} when the data has neither a test nor a validation split: then it is the "
        "evaluation split)",
    )
    parser.add_argument(
        "--sort-by", default="accuracy", choices=SORTABLE, help="column the report is sorted by (default accuracy)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (the per-model lines and the table still print)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = CompareConfig(
        models=args.models,
        dataset=args.dataset,
        protocol=args.protocol,
        epochs=args.epochs,
        image_size=args.image_size,
        scratch=args.scratch,
        batch_size=args.batch_size,
        device=args.device,
        config_overrides=args.config_overrides,
        output_dir=args.output_dir,
        k=args.k,
        seed=args.seed,
        seeds=args.seeds,
        train_split=args.train_split,
        eval_split=args.eval_split,
        val_fraction=args.val_fraction,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        num_workers=args.num_workers,
        learning_rate=args.learning_rate,
        time_budget=args.time_budget,
        precision=args.precision,
        sort_by=args.sort_by,
        command=_command(args),
    )
    rows = run_compare(config, progress=not args.no_progress)
    return 0 if any(row.get("status") == "ok" for row in rows) else 1


def _command(args: argparse.Namespace) -> str:
    """The command line as typed (or, when called in-process, rebuilt from the parsed flags)."""
    if sys.argv[1:2] == ["compare"]:
        return shlex.join(["vitzoo", *sys.argv[1:]])
    parts = ["vitzoo", "compare"]
    for key, value in vars(args).items():
        if key in ("func", "command") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)
