"""Recipe arguments: dataclasses with help text, from the command line or a YAML/JSON file.

`parse(ArgumentsClass, argv)` reads `--config FILE` first (its keys are the dataclass fields)
and lets command-line flags override it, like transformers' example scripts but without
exec-style configurators. The resolved arguments are saved as `args.json` in the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml
from transformers import HfArgumentParser

from vitzoo.errors import BadInputError

T = TypeVar("T")


def arg(default: Any, help: str, **metadata: Any) -> Any:  # noqa: A002 (the dataclass field's help text)
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class DataArguments:
    """Where images come from (shared by every recipe)."""

    dataset: str = arg("digits", "'digits' (bundled, no network), an image folder (one subfolder per class), a CSV/JSONL of path,label, or a Hub dataset id")
    image_column: str | None = arg(None, "image column of a Hub dataset (found automatically when omitted)")
    label_column: str | None = arg(None, "label column of a Hub dataset (found automatically when omitted)")
    train_split: str = arg("train", "split to train on")
    eval_split: str | None = arg(None, "split to evaluate on (default: a validation split if there is one, else carved from train)")
    val_fraction: float = arg(0.2, "share of train held out for evaluation when the dataset has no eval split")
    max_train_samples: int | None = arg(None, "use at most this many training images (quick runs)")
    max_eval_samples: int | None = arg(None, "use at most this many evaluation images")
    num_workers: int | None = arg(None, "data-loading processes per training process (default: min(4, CPUs))")


@dataclass
class ModelArguments:
    """Which model, and how it is built."""

    model: str = arg("deit-tiny", "registry name (see `vitzoo list`), local model folder, or timm model name")
    scratch: bool = arg(False, "start from random weights (the registry's architecture) instead of pretrained ones")
    backend: str | None = arg(None, "library that runs the model", choices=["transformers", "timm"])
    config_overrides: str | None = arg(None, "architecture changes for --scratch, e.g. hidden_size=64,num_hidden_layers=4,patch_size=4")
    image_size: int | None = arg(None, "train/eval input size (a multiple of the patch size); position embeddings are interpolated")
    revision: str | None = arg(None, "Hub revision of the weights")


@dataclass
class TrainingArguments:
    """The optimisation, shared by every recipe."""

    output_dir: str = arg("runs/finetune", "run folder: args.json, metrics.jsonl, results.json, checkpoints/, model/")
    epochs: int = arg(10, "passes over the training set")
    batch_size: int = arg(64, "images per step per process (before gradient accumulation)")
    eval_batch_size: int | None = arg(None, "images per evaluation step (default: 2 x batch size)")
    learning_rate: float = arg(5e-4, "peak learning rate of AdamW (after warm-up)")
    min_learning_rate: float = arg(1e-6, "learning rate at the end of the cosine schedule")
    weight_decay: float = arg(0.05, "AdamW weight decay (never on biases, norms, position embeddings, tokens)")
    layer_decay: float | None = arg(None, "layer-wise LR decay, e.g. 0.65 (block i gets lr * decay^(depth+1-i)); off when omitted")
    warmup_ratio: float = arg(0.05, "share of all steps spent warming the learning rate up linearly")
    gradient_accumulation_steps: int = arg(1, "steps whose gradients add up before one optimizer update")
    max_grad_norm: float | None = arg(1.0, "clip gradients to this global norm (omit or 0 to disable)")
    mixed_precision: str = arg("auto", "autocast dtype through Accelerate; auto: bf16 on GPUs that support it, else none", choices=["auto", "no", "bf16", "fp16"])
    ema_decay: float | None = arg(None, "keep an exponential moving average of the weights with this decay (e.g. 0.9998) and evaluate/save it")
    seed: int = arg(0, "seed for weights, data order and augmentation")
    log_steps: int = arg(20, "log loss, learning rate and images/s every this many optimizer updates")
    eval_steps: int | None = arg(None, "evaluate every this many updates as well as at each epoch end")
    checkpoint_steps: int | None = arg(None, "save a resumable checkpoint every this many updates (always at each epoch end)")
    keep_checkpoints: int = arg(2, "how many of the newest checkpoints to keep")
    resume: str | None = arg(None, "'auto': continue from the newest checkpoint in --output-dir; or a checkpoint folder")
    report_to: str | None = arg(None, "also log to these Accelerate trackers", choices=["tensorboard", "wandb", "mlflow"])
    compile: bool = arg(False, "torch.compile the model")
    channels_last: bool = arg(False, "channels-last memory format for the input images and patch embedding")
    cpu: bool = arg(False, "train on the CPU even where a GPU exists (multi-process CPU runs use gloo)")


@dataclass
class FinetuneArguments(DataArguments, ModelArguments, TrainingArguments):
    """Everything `recipes/finetune.py` takes."""

    label_smoothing: float = arg(0.1, "label smoothing of the cross-entropy (timm's implementation)")
    mixup: float = arg(0.0, "mixup alpha (timm's Mixup); 0 disables")
    cutmix: float = arg(0.0, "cutmix alpha (timm's Mixup); 0 disables")
    auto_augment: str | None = arg(None, "RandAugment or TrivialAugment on training images", choices=["rand", "trivial"])
    hflip: float | None = arg(None, "probability of a horizontal flip (default 0.5; 0 for sources that are not mirror-symmetric, such as digits)")
    random_resized_crop: bool = arg(True, "random resized crops for training (off: resize + centre crop)")
    crop_scale: float | None = arg(None, "smallest area share of a random resized crop (default 0.08 as in timm; 0.5 for the 8x8 digits)")
    freeze_backbone: bool = arg(False, "train only the classification head on frozen features (linear probing)")


def parse(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parse `argv` into `cls`; `--config FILE` (YAML or JSON) supplies defaults first."""
    parser = HfArgumentParser(cls, description=description or cls.__doc__)
    parser.add_argument("--config", default=None, help="YAML or JSON file of arguments (flags given here override it)")
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_config_file(known.config, cls))
    namespace = parser.parse_args(argv)
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)}
    return cls(**values)


def load_config_file(path: str, cls: type) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise BadInputError(f"config file not found: {path}")
    with open(path) as handle:
        data = yaml.safe_load(handle) if path.endswith((".yaml", ".yml")) else json.load(handle)
    if not isinstance(data, dict):
        raise BadInputError(f"{path} must hold a mapping of argument names to values")
    names = {f.name for f in dataclasses.fields(cls)}
    data = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(data) - names)
    if unknown:
        raise BadInputError(f"{path}: unknown argument(s) {', '.join(unknown)}")
    return data
