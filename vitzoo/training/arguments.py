"""Recipe arguments: one dataclass per recipe and method, composed from shared groups (the bases
are listed last-first, so that `--help` shows data, model, training, Hub, then the method's own).

Groups: data, model, training (what the shared loop reads), Hub, weight EMA, classification
augmentation and PEFT (LoRA adapters, read by the loop too); each method adds its own fields. Which
class a command line becomes is the method table's to say (`vitzoo.methods.parse`); this module gives it
the parser, the `--config` reader and the fields given. The resolved arguments are saved as `args.json`
in the run folder (`--config args.json` reruns them).

Each field declares beside it the values it takes (`arg(..., check)`: a `Range`, or a parser of its text).
`check_arguments` refuses any other value before anything runs, and `check_inputs` what the model's shape
and the data source show without loading either, before the run folder is opened: one line each.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_type_hints

import yaml
from transformers import HfArgumentParser

from vitzoo.errors import BadInputError, exit_usage_error, looks_like_token, redact_tokens
from vitzoo.objectives.tokenizer import MAX_VOCAB
from vitzoo.training.budget import UNLIMITED_EPOCHS, parse_duration
from vitzoo.zoo import parse_overrides

if TYPE_CHECKING:
    from vitzoo.data import Splits

T = TypeVar("T")


CHECK = "vitzoo_check"  # a field's metadata key: what `check_arguments` asks of its value


def arg(default: Any, help: str, check: Callable[[Any, str], None] | None = None, **metadata: Any) -> Any:  # noqa: A002 (the dataclass field's help text)
    """A dataclass field with its help text; `check(value, flag)` refuses a value it does not accept (a `Range`,
    or a parser of the field's text), in `check_arguments`."""
    return field(default=default, metadata={"help": help, **metadata, **({CHECK: check} if check else {})})


@dataclass(frozen=True)
class Range:
    """The numbers a flag accepts: from `low` (0 or more) to `high` (None: unbounded), either end open. Upper
    bounds stop values that would only exhaust memory or time (a head of 2**40 outputs, 2**40 worker processes)."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or (value < self.high if self.high_open else value <= self.high))

    def __call__(self, value: float, flag: str) -> None:
        if not self.holds(value):
            raise BadInputError(f"{flag} must be {self}, got {value!r}")

    def __str__(self) -> str:
        if self.high is None:
            return "positive" if self.low_open else "0 or more"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
SHARE = Range(0, 1)  # a probability or a momentum: [0, 1]
OPEN_SHARE = Range(0, 1, low_open=True, high_open=True)  # (0, 1): neither none nor all
SEEDS = Range(0, 2**32 - 1)  # what numpy's generators take
MAX_IMAGE_SIZE = 8192
MAX_WIDTH = 65536  # widths of the layers a flag adds (DINO's head, MAE's decoder, LoRA's rank)
MAX_DEPTH = 256


def _duration(text: str, flag: str) -> None:
    parse_duration(text)


def parse_scale(text: str, what: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise BadInputError(f"{what} must be 'min,max', got {text!r}") from None
    if not 0 < low <= high <= 1:
        raise BadInputError(f"{what} must satisfy 0 < min <= max <= 1, got {text!r}")
    return low, high


def _crop_scale(text: str, flag: str) -> None:
    parse_scale(text, flag)


def _overrides(text: str, flag: str) -> None:
    parse_overrides(text)


@dataclass
class DataArguments:
    """Where images come from (shared by every recipe)."""

    dataset: str = arg("digits", "'digits' (bundled, no network), an image folder (one subfolder per class), a CSV/JSONL of path,label, a Hub dataset id, or 'synthetic[:N[:SIZE]]' (random images, for speed tests)")
    image_column: str | None = arg(None, "image column of a Hub dataset (found automatically when omitted)")
    label_column: str | None = arg(None, "label column of a Hub dataset (found automatically when omitted)")
    train_split: str = arg("train", "split to train on")
    eval_split: str | None = arg(None, "split to evaluate on during training, which also chooses the model kept (default: a validation split if there is one, else --val-fraction of train held out). finetune and distill --method deit select on validation and report on test: a 'test' split in the data, or a split named here that is not a validation split, is kept apart and scores the kept model once at the end")
    val_fraction: float | None = arg(None, "share of train held out (stratified, seeded by --seed) for evaluation when the data has no validation split (default: 0.1 when a test split is kept apart for the final score, else 0.2)", OPEN_SHARE)
    max_train_samples: int | None = arg(None, "use at most this many training images (quick runs)", POSITIVE)
    max_eval_samples: int | None = arg(None, "use at most this many evaluation images", POSITIVE)
    in_memory: str = arg("auto", "decode the images once into memory and augment whole batches (no decoding per step): auto when the decoded images are one size and fit in a quarter of the free memory (4 GiB at most); on; off: decode per image in the loader", choices=["auto", "on", "off"])
    num_workers: int | None = arg(None, "data-loading processes per training process (default: with GPUs, most cores shared among them; on a CPU, 0 up to 2 cores, else min(4, CPUs/4))", Range(0, 1024))


def load_data(args: DataArguments, keep_test: bool = False) -> Splits:
    """The train/eval splits that a recipe's data flags name (its `--seed` also seeds the held-out split);
    `keep_test`: a test split is kept apart for the kept model's final score (`vitzoo.data.load_splits`)."""
    from vitzoo.data import load_splits

    return load_splits(
        args.dataset, image_column=args.image_column, label_column=args.label_column, train_split=args.train_split,
        eval_split=args.eval_split, val_fraction=args.val_fraction, seed=args.seed,
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples, keep_test=keep_test,
    )


def resolve_augmentation(args: Any, splits: Splits) -> dict[str, Any]:
    """hflip and crop_scale: the source's defaults (digits: no flips, crops of at least half the image)
    over timm's (0.5, 0.08), and the flags given over both."""
    chosen = {"hflip": 0.5, "crop_scale": 0.08, **splits.augmentation}
    for key in chosen:
        if getattr(args, key, None) is not None:
            chosen[key] = getattr(args, key)
    return chosen


@dataclass
class ModelArguments:
    """Which model, and how it is built."""

    model: str = arg("deit-tiny", "registry name (see `vitzoo list`), local model folder, or timm model name")
    scratch: bool = arg(False, "start from random weights (the registry's architecture) instead of pretrained ones")
    config_overrides: str | None = arg(None, "architecture changes for --scratch, e.g. hidden_size=64,num_hidden_layers=4,patch_size=4", _overrides)
    image_size: int | None = arg(None, "train/eval input size (a multiple of the patch size); position embeddings are interpolated", Range(1, MAX_IMAGE_SIZE))
    revision: str | None = arg(None, "Hub revision of the weights")


@dataclass
class BackendArguments:
    """For recipes that run either library."""

    backend: str | None = arg(None, "library that runs the model", choices=["transformers", "timm"])


@dataclass
class TrainingArguments:
    """What the shared training loop (`vitzoo.training.fit`) reads, for every recipe and method."""

    output_dir: str = arg("runs/finetune", "run folder: args.json, metrics.jsonl, results.json, checkpoints/, model/")
    epochs: int = arg(10, "passes over the training set (with --time-budget and no --epochs: as many as fit in the budget)", Range(1, UNLIMITED_EPOCHS))
    batch_size: int = arg(64, "images per step per process (before gradient accumulation)", POSITIVE)
    eval_batch_size: int | None = arg(None, "images per evaluation step (default: 2 x batch size)", POSITIVE)
    learning_rate: float = arg(5e-4, "peak learning rate of AdamW (after warm-up)", NON_NEGATIVE)
    min_learning_rate: float = arg(1e-6, "learning rate at the end of the cosine schedule", NON_NEGATIVE)
    weight_decay: float = arg(0.05, "AdamW weight decay (never on biases, norms, position embeddings, tokens)", NON_NEGATIVE)
    layer_decay: float | None = arg(None, "layer-wise LR decay, e.g. 0.65 (block i gets lr * decay^(depth+1-i)); off when omitted", Range(0, 1, low_open=True))
    warmup_ratio: float = arg(0.05, "share of all steps spent warming the learning rate up linearly", Range(0, 1, high_open=True))
    gradient_accumulation_steps: int = arg(1, "steps whose gradients add up before one optimizer update", POSITIVE)
    max_grad_norm: float | None = arg(1.0, "clip gradients to this global norm (omit or 0 to disable)", NON_NEGATIVE)
    mixed_precision: str = arg("auto", "autocast dtype through Accelerate; auto: bf16 on GPUs that support it and on CPUs with native bf16 (AVX512-BF16/AMX), else none", choices=["auto", "no", "bf16", "fp16"])
    seed: int = arg(0, "seed for weights, data order and augmentation", SEEDS)
    log_steps: int = arg(20, "log loss, learning rate and images/s every this many optimizer updates", POSITIVE)
    eval_steps: int | None = arg(None, "evaluate every this many updates as well as at each epoch end", POSITIVE)
    checkpoint_steps: int | None = arg(None, "save a resumable checkpoint every this many updates (always at each epoch end)", POSITIVE)
    time_budget: str | None = arg(None, "train as many steps as fit in this wall time, e.g. 20m, 90s, 1h30m: the speed is measured over the first steps and the learning-rate schedule planned for exactly the steps that fit (evaluations and saving included); with --epochs, whichever ends first", _duration)
    stop_on_collapse: bool = arg(False, "end the run (evaluated, checkpointed, model/ kept) at the first sign of collapse or stall, which is otherwise only warned of (console, metrics.jsonl, results.json), from the 50th update on: DINO, the teacher's entropy within 2%% of ln(out_dim) or its batch-mean entropy under 10%% of it after the first epoch, or its k-NN below the epoch-0 figure at two evaluations in a row (model/ then keeps the best teacher by k-NN, not the newest); finetune and DeiT, the training loss within 2%% of ln(classes) (chance) after the first epoch and the warm-up; MAE, BEiT, SimMIM, the training loss not 2%% below its first epoch's after a quarter of the run (docs/reliability.md)")
    keep_checkpoints: int = arg(2, "how many of the newest checkpoints to keep, 1 or more (--resume auto continues from the newest)", POSITIVE)
    resume: str | None = arg(None, "'auto': continue from the newest intact checkpoint in --output-dir; or a checkpoint folder")
    overwrite: bool = arg(False, "clear the run files of another run in --output-dir before starting (without it, a folder that holds a run is refused)")
    report_to: str | None = arg(None, "also log to these Accelerate trackers (tensorboard: event files under OUTPUT_DIR/logs)", choices=["tensorboard", "wandb", "mlflow"])
    compile: bool = arg(False, "torch.compile the model")
    channels_last: bool = arg(False, "channels-last memory format for the input images and patch embedding")
    cpu: bool = arg(False, "train on the CPU even where a GPU exists (multi-process CPU runs use gloo)")


@dataclass
class HubArguments:
    """Publishing the run's model/ when training ends."""

    push_to_hub: bool = arg(False, "after training, publish model/ with a model card to the Hugging Face Hub (as `vitzoo push`); token from HF_TOKEN or `hf auth login`")
    hub_model_id: str | None = arg(None, "Hub repository for --push-to-hub, as USER/NAME")
    hub_private: bool = arg(False, "create the --push-to-hub repository as private")
    hub_revision: str | None = arg(None, "branch for --push-to-hub (default: main)")


@dataclass
class WeightEMAArguments:
    """An exponential moving average of the weights, evaluated and saved instead of the raw weights."""

    ema_decay: float | None = arg(None, "keep an exponential moving average of the weights with this decay (e.g. 0.9998) and evaluate/save it", OPEN_SHARE)


@dataclass
class AugmentationArguments:
    """Training-image augmentation and targets for classification."""

    label_smoothing: float = arg(0.1, "label smoothing of the cross-entropy (timm's implementation)", Range(0, 1, high_open=True))
    mixup: float = arg(0.0, "mixup alpha (timm's Mixup); 0 disables", NON_NEGATIVE)
    cutmix: float = arg(0.0, "cutmix alpha (timm's Mixup); 0 disables", NON_NEGATIVE)
    auto_augment: str | None = arg(None, "RandAugment or TrivialAugment on training images", choices=["rand", "trivial"])
    hflip: float | None = arg(None, "probability of a horizontal flip (default 0.5; 0 for sources that are not mirror-symmetric, such as digits)", SHARE)
    random_resized_crop: bool = arg(True, "random resized crops for training (off: resize + centre crop)")
    crop_scale: float | None = arg(None, "smallest area share of a random resized crop (default 0.08 as in timm; 0.5 for the 8x8 digits)", Range(0, 1, low_open=True))


@dataclass
class PEFTArguments:
    """Parameter-efficient fine-tuning through PEFT (`pip install "vitzoo[peft]"`): low-rank adapters on
    the attention projections, the classification head trained whole; model/ gets the merged weights and
    adapter/ the adapter alone (docs/peft.md)."""

    peft: str | None = arg(None, "train low-rank adapters (LoRA) instead of every weight; omitted: full fine-tuning", choices=["lora"])
    lora_rank: int = arg(8, "rank r of each LoRA update (trainable per adapted Linear in->out: r x (in + out))", Range(1, MAX_WIDTH))
    lora_alpha: float = arg(16.0, "LoRA scaling numerator: the update is (alpha / r) x B A", POSITIVE)
    lora_dropout: float = arg(0.0, "dropout on the input of each LoRA update (PEFT's default 0; 0.1 regularises small data)", Range(0, 1, high_open=True))
    lora_targets: str | None = arg(None, "comma-separated names of the Linear layers to adapt (default: the family's, q_proj,v_proj on transformers and qkv on timm; docs/peft.md)")


@dataclass
class FinetuneArguments(PEFTArguments, AugmentationArguments, WeightEMAArguments, HubArguments, TrainingArguments,
                        BackendArguments, ModelArguments, DataArguments):
    """Everything `vitzoo finetune` takes."""

    freeze_backbone: bool = arg(False, "train only the classification head on frozen features (linear probing)")


@dataclass
class DeiTArguments(AugmentationArguments, WeightEMAArguments, HubArguments, TrainingArguments, BackendArguments,
                    ModelArguments, DataArguments):
    """`vitzoo distill --method deit`: a student learns the labels and a frozen teacher's predictions."""

    method: str = arg("deit", "deit: distil a teacher's predictions into the student; dino: self-distillation on unlabelled images (`--method dino --help` lists its flags)")
    output_dir: str = arg("runs/distill", "run folder: args.json, metrics.jsonl, results.json, checkpoints/, model/")
    teacher: str | None = arg(None, "DeiT teacher: registry name, local model folder (e.g. a finetune run's model/) or timm model name (a CNN works)")
    teacher_scratch: bool = arg(False, "random-init teacher with a fresh head for the dataset's classes (tests)")
    teacher_backend: str | None = arg(None, "library that runs the teacher", choices=["transformers", "timm"])
    distill_type: str = arg("hard", "none: labels only; soft: KL to the teacher at temperature tau; hard: CE to the teacher's argmax (DeiT)", choices=["none", "soft", "hard"])
    alpha: float = arg(0.5, "weight of the distillation term (the label term gets 1 - alpha)", SHARE)
    tau: float = arg(1.0, "temperature of soft distillation", POSITIVE)
    label_map: str | None = arg(None, "how teacher classes match student classes: a JSON file {teacher: student} or teacher_name=student_name,...")
    cache_teacher_logits: bool = arg(False, "run the teacher once over the training set before training and read its logits afterwards; only without augmentation that changes images between epochs (--no-random-resized-crop, --hflip 0, no --auto-augment, --mixup 0, --cutmix 0)")


@dataclass
class DINOArguments(HubArguments, TrainingArguments, ModelArguments, DataArguments):
    """`vitzoo distill --method dino`: self-distillation of a transformers backbone (multi-crop needs
    interpolated positions) on unlabelled images (labels only feed the k-NN monitor)."""

    method: str = arg("dino", "deit: distil a teacher's predictions into the student; dino: self-distillation on unlabelled images")
    model: str = arg("dino-vits16", "registry name (see `vitzoo list`) or local model folder of a transformers ViT")
    output_dir: str = arg("runs/dino", "run folder: args.json, metrics.jsonl, results.json, checkpoints/, model/ (the teacher backbone), dino_curves.png")
    hflip: float | None = arg(None, "probability of a horizontal flip of each crop (default 0.5; 0 for sources that are not mirror-symmetric, such as digits)", SHARE)
    out_dim: int = arg(65536, "DINO head output dimension (prototypes); small for small data", Range(1, 2**20))
    head_hidden_dim: int = arg(2048, "DINO head MLP width", Range(1, MAX_WIDTH))
    head_bottleneck_dim: int = arg(256, "DINO head bottleneck before the weight-normed last layer", Range(1, MAX_WIDTH))
    local_crops: int = arg(8, "number of small local crops per image (2 global crops always)", Range(0, 64))
    global_crop_scale: str = arg("0.4,1.0", "area range of the global crops", _crop_scale)
    local_crop_scale: str = arg("0.05,0.4", "area range of the local crops", _crop_scale)
    local_crop_size: int | None = arg(None, "local crop size (default: 96/224 of the image size, a multiple of the patch)", Range(1, MAX_IMAGE_SIZE))
    momentum_teacher: float = arg(0.996, "EMA momentum of the teacher at the start (cosine to 1)", SHARE)
    teacher_temp: float = arg(0.04, "teacher temperature after warm-up", POSITIVE)
    warmup_teacher_temp: float = arg(0.04, "teacher temperature at the start", POSITIVE)
    warmup_teacher_temp_epochs: int = arg(0, "epochs of linear teacher-temperature warm-up", Range(0, UNLIMITED_EPOCHS))
    student_temp: float = arg(0.1, "student temperature", POSITIVE)
    center_momentum: float = arg(0.9, "momentum of the centre of the teacher outputs", SHARE)
    weight_decay_end: float = arg(0.4, "weight decay at the end of its cosine schedule (from --weight-decay)", NON_NEGATIVE)
    freeze_last_layer: int = arg(1, "epochs during which the head's last layer is not updated", Range(0, UNLIMITED_EPOCHS))
    head_batch_norm: bool = arg(False, "batch norm after the head's hidden layers (DINO's --use_bn_in_head); helped tiny scratch ViTs on small data stay clear of collapse (docs/distillation.md: DINO on small data); synced across GPUs, per process on CPU")
    norm_last_layer: bool = arg(True, "keep the norm of the head's last layer fixed at 1 (off: learnt, better features but less stable)")


@dataclass
class PretrainArguments(WeightEMAArguments, HubArguments, TrainingArguments, ModelArguments, DataArguments):
    """Masked image modelling on unlabelled images (the dataset's labels, if any, are ignored):
    what MAE, BEiT and SimMIM share."""

    method: str = arg("mae", "mae: masked autoencoder (pixels, encoder sees visible patches only); beit: visual-token prediction; simmim: L1 pixel regression with mask tokens (`--method M --help` lists each one's flags)")
    output_dir: str = arg("runs/pretrain", "run folder: args.json, metrics.jsonl, results.json, checkpoints/, model/, reconstructions.png")
    blr: float = arg(1.5e-4, "base learning rate: lr = blr * total batch / 256 (MAE paper) unless --learning-rate is given", NON_NEGATIVE)
    learning_rate: float | None = arg(None, "absolute peak learning rate (overrides --blr scaling)", NON_NEGATIVE)
    warmup_ratio: float = arg(0.1, "share of all steps spent warming the learning rate up linearly", Range(0, 1, high_open=True))
    hflip: float | None = arg(None, "probability of a horizontal flip (default 0.5; the source's default, 0 for digits)", SHARE)
    crop_scale: float = arg(0.2, "smallest area share of the random resized crop (MAE: 0.2)", Range(0, 1, low_open=True))
    num_reconstructions: int = arg(4, "eval images drawn in reconstructions.png (0: no figure)", NON_NEGATIVE)


@dataclass
class MAEArguments(PretrainArguments):
    """`vitzoo pretrain --method mae`: `ViTMAEForPreTraining`, normalised-pixel MSE on masked patches."""

    model: str = arg("mae-base", "registry name or model folder of an MAE model (model_type vit_mae)")
    mask_ratio: float = arg(0.75, "share of patches masked, in (0, 1)", OPEN_SHARE)
    norm_pix_loss: bool = arg(True, "regress per-patch normalised pixels (the paper's better target)")
    decoder_hidden_size: int | None = arg(None, "decoder width (with --scratch; also decoder_hidden_size=... in --config-overrides)", Range(1, MAX_WIDTH))
    decoder_depth: int | None = arg(None, "decoder blocks (with --scratch; decoder_num_hidden_layers=...)", Range(1, MAX_DEPTH))


@dataclass
class BEiTArguments(PretrainArguments):
    """`vitzoo pretrain --method beit`: blockwise masks, visual-token targets from a tokenizer."""

    method: str = arg("beit", "mae | beit | simmim (`--method M --help` lists each one's flags)")
    model: str = arg("beit-base-pt22k", "registry name or model folder of a BEiT model")
    mask_ratio: float = arg(0.4, "share of patches masked, in (0, 1)", OPEN_SHARE)
    min_block_patches: int = arg(4, "smallest masked block, in patches", POSITIVE)
    tokenizer: str | None = arg(None, "a saved tokenizer folder (default: fit a k-means codebook on this dataset and save it with the run)")
    tokenizer_vocab_size: int = arg(256, "codes of the fitted k-means tokenizer (at most 8192; must equal the model's vocab_size)", Range(2, MAX_VOCAB))
    tokenizer_images: int = arg(2000, "images whose patches the k-means tokenizer is fitted on", POSITIVE)
    tokenizer_iterations: int = arg(25, "k-means (Lloyd) iterations", Range(1, 10_000))
    tokenizer_normalisation: str = arg("pixels", "what the k-means tokenizer clusters: pixels (the patch's normalised pixels: brightness and shape) or patch (each patch standardised: shape and contrast only)", choices=["pixels", "patch"])


@dataclass
class SimMIMArguments(PretrainArguments):
    """`vitzoo pretrain --method simmim`: `ViTForMaskedImageModeling`, L1 on masked pixels."""

    method: str = arg("simmim", "mae | beit | simmim (`--method M --help` lists each one's flags)")
    model: str = arg("vit-base-in21k", "registry name or model folder of a ViT or DeiT model")
    mask_ratio: float = arg(0.6, "share of patches masked, in (0, 1)", OPEN_SHARE)
    mask_patch_size: int | None = arg(None, "side of the square masking unit, a multiple of the patch size (default 2 x patch when it divides the image, else the patch)", Range(1, MAX_IMAGE_SIZE))


class RecipeParser(HfArgumentParser):
    """A recipe's parser: its error messages never echo a token a user typed."""

    def error(self, message: str):
        exit_usage_error(self.prog, message)

    @staticmethod
    def _parse_dataclass_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
        """HfArgumentParser's, without the field's `CHECK` (argparse would take it for an option of its own)."""
        if CHECK in field.metadata:
            field = copy.copy(field)
            field.metadata = types.MappingProxyType({k: v for k, v in field.metadata.items() if k != CHECK})
        HfArgumentParser._parse_dataclass_field(parser, field)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help, and the description's examples kept line by line."""


GIVEN = "_vitzoo_given"  # where `vitzoo.methods.parse` notes the fields set by a flag or the config file


def given(args: Any) -> frozenset[str]:
    """The fields of `args` that a flag or `--config` set (the rest hold their defaults). Arguments built in
    code rather than by `parse` count every field whose value differs from the class default as given."""
    if GIVEN in vars(args):
        return vars(args)[GIVEN]
    return frozenset(f.name for f in dataclasses.fields(args)
                     if f.default is not dataclasses.MISSING and getattr(args, f.name) != f.default)


def given_on_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options present in `argv` (`--flag V`, `--flag=V`, `--no-flag`)."""
    present = {item.split("=", 1)[0] for item in argv if item.startswith("-")}
    names = set()
    for action in parser._actions:
        if present & set(action.option_strings):
            names.add(action.dest)
            names.add(re.sub(r"^no_", "", action.dest))  # HfArgumentParser's --no-x for a bool that defaults to True
    return names


TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def check_arguments(args: Any) -> None:
    """Refuse, before anything runs, what the arguments alone show to be wrong, naming the flag and what it
    takes: a token where a name belongs, a value of another type (a --config file can hold any), a number
    that is not finite or outside its field's `Range`, a text its field cannot parse (--time-budget,
    --config-overrides, DINO's crop scales), a choice not offered, and flags that need others."""
    hints = get_type_hints(type(args))
    for f in dataclasses.fields(args):
        value, flag = getattr(args, f.name), "--" + f.name.replace("_", "-")
        if isinstance(value, str) and looks_like_token(value):
            raise BadInputError(f"{flag} looks like a Hugging Face access token (hf_...), which no flag takes: it was "
                                f"neither used nor sent anywhere. Give {flag} the value meant; vitzoo reads a token from "
                                "HF_TOKEN or `hf auth login` only")
        _check_type(value, hints[f.name], flag)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInputError(f"{flag} must be a finite number, got {value}")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise BadInputError(f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")
        if CHECK in f.metadata:
            f.metadata[CHECK](value, flag)
    architecture = [f"--{name.replace('_', '-')}" for name in ("config_overrides", "decoder_hidden_size", "decoder_depth")
                    if getattr(args, name, None) is not None]
    if architecture and not args.scratch:
        raise BadInputError(f"{', '.join(architecture)} change{'s' if len(architecture) == 1 else ''} the architecture, "
                            "so the weights must be new: add --scratch, or drop "
                            f"{'it' if len(architecture) == 1 else 'them'} to fine-tune the pretrained model as it is")
    if "peft" in vars(args):
        from vitzoo.training.adapters import check_peft_arguments

        check_peft_arguments(args)


def _check_type(value: Any, hint: Any, flag: str) -> None:
    """`value` is of the field's type (`int | None`: a whole number or nothing; a float field takes an int)."""
    allowed = get_args(hint) or (hint,)
    if value is None:
        if type(None) not in allowed:
            raise BadInputError(f"{flag} needs a value (a --config file gives it none)")
        return
    kind = next(t for t in allowed if t is not type(None))
    if kind is float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not fits:
        quote = "; quote it in the --config file" if kind is str and isinstance(value, (int, float)) else ""
        raise BadInputError(f"{flag} must be {TYPE_NAMES[kind]}, got {value!r}{quote}")


def read_config_file(path: str) -> dict[str, Any]:
    """A YAML or JSON mapping of argument names (dashes or underscores) to values; a file that is not one is
    refused naming it, and for a syntax error the line and column."""
    if not os.path.isfile(path):
        raise BadInputError(f"--config file not found: {path}")
    yaml_file = path.endswith((".yaml", ".yml"))
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) if yaml_file else json.load(handle)
    except UnicodeDecodeError:
        raise BadInputError(f"--config {path} is not UTF-8 text; save it as UTF-8") from None
    except yaml.YAMLError as error:
        # where the construct that went wrong starts (an unclosed quote's line), else where reading stopped
        mark = getattr(error, "context_mark", None) or getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = ", ".join(filter(None, (getattr(error, "context", None), getattr(error, "problem", None)))) or "not YAML"
        raise BadInputError(f"--config {path}{where}: {redact_tokens(what)}; fix the YAML there (one 'name: value' "
                            "per line, a space after each colon, quotes closed)") from None
    except json.JSONDecodeError as error:
        raise BadInputError(f"--config {path}, line {error.lineno}, column {error.colno}: {error.msg}; fix the JSON there "
                            "(one object of \"name\": value pairs, commas between them, none after the last)") from None
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise BadInputError(f"--config {path} must hold a mapping of argument names to values, e.g. 'epochs: 20'")
    return {key.replace("-", "_"): value for key, value in data.items()}
