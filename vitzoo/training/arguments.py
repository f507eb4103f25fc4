"""Recipe arguments: one dataclass per recipe and method, composed from shared groups (the bases
are listed last-first, so that `--help` shows data, model, training, Hub, then the method's own).

Groups: data, model, training (what the shared loop reads), Hub, weight EMA, classification
augmentation and PEFT (LoRA adapters, read by the loop too); each method adds its own fields. `parse("distill", argv)` picks the method's class
from `--method`, reads `--config FILE` first (its keys are the class's fields) and lets
command-line flags override it, like transformers' example scripts but without exec-style
configurators. A flag (or config key) the method does not use is refused before anything runs,
naming the flag and the method; `--help` lists exactly the method's flags. The resolved
arguments are saved as `args.json` in the run folder (`--config args.json` reruns them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from transformers import HfArgumentParser

from vitzoo.errors import BadInputError, redact_tokens

if TYPE_CHECKING:
    from vitzoo.data import Splits

T = TypeVar("T")


def arg(default: Any, help: str, **metadata: Any) -> Any:  # noqa: A002 (the dataclass field's help text)
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class DataArguments:
    """Where images come from (shared by every recipe)."""

    dataset: str = arg("digits", "'digits' (bundled, no network), an image folder (one subfolder per class), a CSV/JSONL of path,label, a Hub dataset id, or 'synthetic[:N[:SIZE]]' (random images, for speed tests)")
    image_column: str | None = arg(None, "image column of a Hub dataset (found automatically when omitted)")
    label_column: str | None = arg(None, "label column of a Hub dataset (found automatically when omitted)")
    train_split: str = arg("train", "split to train on")
    eval_split: str | None = arg(None, "split to evaluate on during training, which also chooses the model kept (default: a validation split if there is one, else --val-fraction of train held out). finetune and distill --method deit select on validation and report on test: a 'test' split in the data, or a split named here that is not a validation split, is kept apart and scores the kept model once at the end")
    val_fraction: float | None = arg(None, "share of train held out (stratified, seeded by --seed) for evaluation when the data has no validation split (default: 0.1 when a test split is kept apart for the final score, else 0.2)")
    max_train_samples: int | None = arg(None, "use at most this many training images (quick runs)")
    max_eval_samples: int | None = arg(None, "use at most this many evaluation images")
    in_memory: str = arg("auto", "decode the images once into memory and augment whole batches (no decoding per step): auto when the decoded images are one size and fit in a quarter of the free memory (4 GiB at most); on; off: decode per image in the loader", choices=["auto", "on", "off"])
    num_workers: int | None = arg(None, "data-loading processes per training process (default: with GPUs, most cores shared among them; on a CPU, 0 up to 2 cores, else min(4, CPUs/4))")


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
    config_overrides: str | None = arg(None, "architecture changes for --scratch, e.g. hidden_size=64,num_hidden_layers=4,patch_size=4")
    image_size: int | None = arg(None, "train/eval input size (a multiple of the patch size); position embeddings are interpolated")
    revision: str | None = arg(None, "Hub revision of the weights")


@dataclass
class BackendArguments:
    """For recipes that run either library."""

    backend: str | None = arg(None, "library that runs the model", choices=["transformers", "timm"])


@dataclass
class TrainingArguments:
    """What the shared training loop (`vitzoo.training.fit`) reads, for every recipe and method."""

    output_dir: str = arg("runs/finetune", "run folder: args.json, metrics.jsonl, results.json, checkpoints/, model/")
    epochs: int = arg(10, "passes over the training set (with --time-budget and no --epochs: as many as fit in the budget)")
    batch_size: int = arg(64, "images per step per process (before gradient accumulation)")
    eval_batch_size: int | None = arg(None, "images per evaluation step (default: 2 x batch size)")
    learning_rate: float = arg(5e-4, "peak learning rate of AdamW (after warm-up)")
    min_learning_rate: float = arg(1e-6, "learning rate at the end of the cosine schedule")
    weight_decay: float = arg(0.05, "AdamW weight decay (never on biases, norms, position embeddings, tokens)")
    layer_decay: float | None = arg(None, "layer-wise LR decay, e.g. 0.65 (block i gets lr * decay^(depth+1-i)); off when omitted")
    warmup_ratio: float = arg(0.05, "share of all steps spent warming the learning rate up linearly")
    gradient_accumulation_steps: int = arg(1, "steps whose gradients add up before one optimizer update")
    max_grad_norm: float | None = arg(1.0, "clip gradients to this global norm (omit or 0 to disable)")
    mixed_precision: str = arg("auto", "autocast dtype through Accelerate; auto: bf16 on GPUs that support it and on CPUs with native bf16 (AVX512-BF16/AMX), else none", choices=["auto", "no", "bf16", "fp16"])
    seed: int = arg(0, "seed for weights, data order and augmentation")
    log_steps: int = arg(20, "log loss, learning rate and images/s every this many optimizer updates")
    eval_steps: int | None = arg(None, "evaluate every this many updates as well as at each epoch end")
    checkpoint_steps: int | None = arg(None, "save a resumable checkpoint every this many updates (always at each epoch end)")
    time_budget: str | None = arg(None, "train as many steps as fit in this wall time, e.g. 20m, 90s, 1h30m: the speed is measured over the first steps and the learning-rate schedule planned for exactly the steps that fit (evaluations and saving included); with --epochs, whichever ends first")
    stop_on_collapse: bool = arg(False, "end the run (evaluated, checkpointed, model/ kept) at the first sign of collapse or stall, which is otherwise only warned of (console, metrics.jsonl, results.json), from the 50th update on: DINO, the teacher's entropy within 2%% of ln(out_dim) or its batch-mean entropy under 10%% of it after the first epoch, or its k-NN below the epoch-0 figure at two evaluations in a row (model/ then keeps the best teacher by k-NN, not the newest); finetune and DeiT, the training loss within 2%% of ln(classes) (chance) after the first epoch and the warm-up; MAE, BEiT, SimMIM, the training loss not 2%% below its first epoch's after a quarter of the run (docs/reliability.md)")
    keep_checkpoints: int = arg(2, "how many of the newest checkpoints to keep, 1 or more (--resume auto continues from the newest)")
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

    ema_decay: float | None = arg(None, "keep an exponential moving average of the weights with this decay (e.g. 0.9998) and evaluate/save it")


@dataclass
class AugmentationArguments:
    """Training-image augmentation and targets for classification."""

    label_smoothing: float = arg(0.1, "label smoothing of the cross-entropy (timm's implementation)")
    mixup: float = arg(0.0, "mixup alpha (timm's Mixup); 0 disables")
    cutmix: float = arg(0.0, "cutmix alpha (timm's Mixup); 0 disables")
    auto_augment: str | None = arg(None, "RandAugment or TrivialAugment on training images", choices=["rand", "trivial"])
    hflip: float | None = arg(None, "probability of a horizontal flip (default 0.5; 0 for sources that are not mirror-symmetric, such as digits)")
    random_resized_crop: bool = arg(True, "random resized crops for training (off: resize + centre crop)")
    crop_scale: float | None = arg(None, "smallest area share of a random resized crop (default 0.08 as in timm; 0.5 for the 8x8 digits)")


@dataclass
class PEFTArguments:
    """Parameter-efficient fine-tuning through PEFT (`pip install "vitzoo[peft]"`): low-rank adapters on
    the attention projections, the classification head trained whole; model/ gets the merged weights and
    adapter/ the adapter alone (docs/peft.md)."""

    peft: str | None = arg(None, "train low-rank adapters (LoRA) instead of every weight; omitted: full fine-tuning", choices=["lora"])
    lora_rank: int = arg(8, "rank r of each LoRA update (trainable per adapted Linear in->out: r x (in + out))")
    lora_alpha: float = arg(16.0, "LoRA scaling numerator: the update is (alpha / r) x B A")
    lora_dropout: float = arg(0.0, "dropout on the input of each LoRA update (PEFT's default 0; 0.1 regularises small data)")
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

    method: str = arg("deit", "deit: distil a teacher's predictions into the student; dino: self-distillation on unlabelled images (`--method dino --help` lists its flags)", choices=["deit", "dino"])
    output_dir: str = arg("runs/distill", "run folder: args.json, metrics.jsonl, results.json, checkpoints/, model/")
    teacher: str | None = arg(None, "DeiT teacher: registry name, local model folder (e.g. a finetune run's model/) or timm model name (a CNN works)")
    teacher_scratch: bool = arg(False, "random-init teacher with a fresh head for the dataset's classes (tests)")
    teacher_backend: str | None = arg(None, "library that runs the teacher", choices=["transformers", "timm"])
    distill_type: str = arg("hard", "none: labels only; soft: KL to the teacher at temperature tau; hard: CE to the teacher's argmax (DeiT)", choices=["none", "soft", "hard"])
    alpha: float = arg(0.5, "weight of the distillation term (the label term gets 1 - alpha)")
    tau: float = arg(1.0, "temperature of soft distillation")
    label_map: str | None = arg(None, "how teacher classes match student classes: a JSON file {teacher: student} or teacher_name=student_name,...")
    cache_teacher_logits: bool = arg(False, "run the teacher once over the training set before training and read its logits afterwards; only without augmentation that changes images between epochs (--no-random-resized-crop, --hflip 0, no --auto-augment, --mixup 0, --cutmix 0)")


@dataclass
class DINOArguments(HubArguments, TrainingArguments, ModelArguments, DataArguments):
    """`vitzoo distill --method dino`: self-distillation of a transformers backbone (multi-crop needs
    interpolated positions) on unlabelled images (labels only feed the k-NN monitor)."""

    method: str = arg("dino", "deit: distil a teacher's predictions into the student; dino: self-distillation on unlabelled images", choices=["deit", "dino"])
    model: str = arg("dino-vits16", "registry name (see `vitzoo list`) or local model folder of a transformers ViT")
    output_dir: str = arg("runs/dino", "run folder: args.json, metrics.jsonl, results.json, checkpoints/, model/ (the teacher backbone), dino_curves.png")
    hflip: float | None = arg(None, "probability of a horizontal flip of each crop (default 0.5; 0 for sources that are not mirror-symmetric, such as digits)")
    out_dim: int = arg(65536, "DINO head output dimension (prototypes); small for small data")
    head_hidden_dim: int = arg(2048, "DINO head MLP width")
    head_bottleneck_dim: int = arg(256, "DINO head bottleneck before the weight-normed last layer")
    local_crops: int = arg(8, "number of small local crops per image (2 global crops always)")
    global_crop_scale: str = arg("0.4,1.0", "area range of the global crops")
    local_crop_scale: str = arg("0.05,0.4", "area range of the local crops")
    local_crop_size: int | None = arg(None, "local crop size (default: 96/224 of the image size, a multiple of the patch)")
    momentum_teacher: float = arg(0.996, "EMA momentum of the teacher at the start (cosine to 1)")
    teacher_temp: float = arg(0.04, "teacher temperature after warm-up")
    warmup_teacher_temp: float = arg(0.04, "teacher temperature at the start")
    warmup_teacher_temp_epochs: int = arg(0, "epochs of linear teacher-temperature warm-up")
    student_temp: float = arg(0.1, "student temperature")
    center_momentum: float = arg(0.9, "momentum of the centre of the teacher outputs")
    weight_decay_end: float = arg(0.4, "weight decay at the end of its cosine schedule (from --weight-decay)")
    freeze_last_layer: int = arg(1, "epochs during which the head's last layer is not updated")
    head_batch_norm: bool = arg(False, "batch norm after the head's hidden layers (DINO's --use_bn_in_head); helped tiny scratch ViTs on small data stay clear of collapse (docs/distillation.md: DINO on small data); synced across GPUs, per process on CPU")
    norm_last_layer: bool = arg(True, "keep the norm of the head's last layer fixed at 1 (off: learnt, better features but less stable)")


@dataclass
class PretrainArguments(WeightEMAArguments, HubArguments, TrainingArguments, ModelArguments, DataArguments):
    """Masked image modelling on unlabelled images (the dataset's labels, if any, are ignored):
    what MAE, BEiT and SimMIM share."""

    method: str = arg("mae", "mae: masked autoencoder (pixels, encoder sees visible patches only); beit: visual-token prediction; simmim: L1 pixel regression with mask tokens (`--method M --help` lists each one's flags)", choices=["mae", "beit", "simmim"])
    output_dir: str = arg("runs/pretrain", "run folder: args.json, metrics.jsonl, results.json, checkpoints/, model/, reconstructions.png")
    blr: float = arg(1.5e-4, "base learning rate: lr = blr * total batch / 256 (MAE paper) unless --learning-rate is given")
    learning_rate: float | None = arg(None, "absolute peak learning rate (overrides --blr scaling)")
    warmup_ratio: float = arg(0.1, "share of all steps spent warming the learning rate up linearly")
    hflip: float | None = arg(None, "probability of a horizontal flip (default 0.5; the source's default, 0 for digits)")
    crop_scale: float = arg(0.2, "smallest area share of the random resized crop (MAE: 0.2)")
    num_reconstructions: int = arg(4, "eval images drawn in reconstructions.png (0: no figure)")


@dataclass
class MAEArguments(PretrainArguments):
    """`vitzoo pretrain --method mae`: `ViTMAEForPreTraining`, normalised-pixel MSE on masked patches."""

    model: str = arg("mae-base", "registry name or model folder of an MAE model (model_type vit_mae)")
    mask_ratio: float = arg(0.75, "share of patches masked, in (0, 1)")
    norm_pix_loss: bool = arg(True, "regress per-patch normalised pixels (the paper's better target)")
    decoder_hidden_size: int | None = arg(None, "decoder width (with --scratch; also decoder_hidden_size=... in --config-overrides)")
    decoder_depth: int | None = arg(None, "decoder blocks (with --scratch; decoder_num_hidden_layers=...)")


@dataclass
class BEiTArguments(PretrainArguments):
    """`vitzoo pretrain --method beit`: blockwise masks, visual-token targets from a tokenizer."""

    method: str = arg("beit", "mae | beit | simmim (`--method M --help` lists each one's flags)", choices=["mae", "beit", "simmim"])
    model: str = arg("beit-base-pt22k", "registry name or model folder of a BEiT model")
    mask_ratio: float = arg(0.4, "share of patches masked, in (0, 1)")
    min_block_patches: int = arg(4, "smallest masked block, in patches")
    tokenizer: str | None = arg(None, "a saved tokenizer folder (default: fit a k-means codebook on this dataset and save it with the run)")
    tokenizer_vocab_size: int = arg(256, "codes of the fitted k-means tokenizer (at most 8192; must equal the model's vocab_size)")
    tokenizer_images: int = arg(2000, "images whose patches the k-means tokenizer is fitted on")
    tokenizer_iterations: int = arg(25, "k-means (Lloyd) iterations")
    tokenizer_normalisation: str = arg("pixels", "what the k-means tokenizer clusters: pixels (the patch's normalised pixels: brightness and shape) or patch (each patch standardised: shape and contrast only)", choices=["pixels", "patch"])


@dataclass
class SimMIMArguments(PretrainArguments):
    """`vitzoo pretrain --method simmim`: `ViTForMaskedImageModeling`, L1 on masked pixels."""

    method: str = arg("simmim", "mae | beit | simmim (`--method M --help` lists each one's flags)", choices=["mae", "beit", "simmim"])
    model: str = arg("vit-base-in21k", "registry name or model folder of a ViT or DeiT model")
    mask_ratio: float = arg(0.6, "share of patches masked, in (0, 1)")
    mask_patch_size: int | None = arg(None, "side of the square masking unit, a multiple of the patch size (default 2 x patch when it divides the image, else the patch)")


# recipe -> method -> arguments class; None: the recipe has no --method
RECIPES: dict[str, dict[str | None, type]] = {
    "finetune": {None: FinetuneArguments},
    "distill": {"deit": DeiTArguments, "dino": DINOArguments},
    "pretrain": {"mae": MAEArguments, "beit": BEiTArguments, "simmim": SimMIMArguments},
}
DEFAULT_METHOD = {"distill": "deit", "pretrain": "mae"}


class _Parser(HfArgumentParser):
    """A recipe's parser: its error messages never echo a token a user typed."""

    def error(self, message: str):
        super().error(redact_tokens(message))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help, and the description's examples kept line by line."""


def command_name(recipe: str, method: str | None) -> str:
    return f"vitzoo {recipe}" + (f" --method {method}" if method else "")


def arguments_class(recipe: str, method: str | None = None) -> type:
    """The arguments dataclass of `recipe` (and `method`, default the recipe's default method)."""
    methods = RECIPES[recipe]
    method = method or DEFAULT_METHOD.get(recipe)
    if method not in methods:
        raise BadInputError(f"{command_name(recipe, None)}: unknown --method {method!r}; choose one of {', '.join(map(str, methods))}")
    return methods[method]


def build_parser(recipe: str, method: str | None = None, description: str | None = None) -> HfArgumentParser:
    cls = arguments_class(recipe, method)
    methods = [m for m in RECIPES[recipe] if m]
    others = f"\n\nThe flags depend on --method ({', '.join(methods)}): `vitzoo {recipe} --method M --help` lists them." if methods else ""
    # no abbreviations: `--teacher` must not silently become DINO's `--teacher-temp`
    parser = _Parser(cls, prog=f"vitzoo {recipe}", description=(description or cls.__doc__ or "") + others,
                              formatter_class=_HelpFormatter, allow_abbrev=False)
    parser.add_argument("--config", default=None, help="YAML or JSON file of arguments (flags given here override it)")
    return parser


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _users(flag: str, recipe: str, method: str | None) -> list[str]:
    """The other recipes and methods that take `flag`."""
    return [command_name(other, other_method) for other, methods in RECIPES.items() for other_method in methods
            if (other, other_method) != (recipe, method) and flag in _flags(build_parser(other, other_method))]


def _refuse(flags: list[str], recipe: str, method: str | None) -> BadInputError:
    command = command_name(recipe, method)
    parts = []
    for flag in flags:
        users = _users(flag, recipe, method)
        parts.append(f"{flag} (used by {', '.join(users)})" if users else f"{flag} (no vitzoo command has it)")
    return BadInputError(f"{command} does not use {'; '.join(parts)}. Drop it; `{command} --help` lists the flags "
                         f"{'this method' if method else 'it'} takes")


def _method(recipe: str, argv: list[str]) -> str | None:
    """--method from the command line, else from --config, else the recipe's default."""
    if recipe not in DEFAULT_METHOD:
        return None
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--method")
    early.add_argument("--config")
    known, _ = early.parse_known_args(argv)
    if known.method is None and known.config:
        known.method = read_config_file(known.config).get("method")
    return known.method or DEFAULT_METHOD[recipe]


def parse(recipe: str, argv: list[str] | None = None, description: str | None = None) -> Any:
    """Parse `argv` into the arguments class of `recipe` and its `--method`; `--config FILE` (YAML or
    JSON) supplies defaults first. Flags the method does not use are refused, naming them."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    method = _method(recipe, argv)
    cls = arguments_class(recipe, method)
    parser = build_parser(recipe, method, description)
    known, rest = parser.parse_known_args(argv)
    unknown = sorted({item.split("=", 1)[0] for item in rest if re.match(r"^--?[A-Za-z]", item)})
    if unknown:
        raise _refuse(unknown, recipe, method)
    if rest:
        raise BadInputError(f"{command_name(recipe, method)}: unexpected argument(s) {' '.join(rest[:3])} (values need a flag)")
    if known.config:
        data = read_config_file(known.config)
        names = {f.name for f in dataclasses.fields(cls)}
        unused = sorted(set(data) - names)
        if unused:
            raise _refuse([f"--{name.replace('_', '-')}" for name in unused], recipe, method)
        parser.set_defaults(**data)
        known = parser.parse_args(argv)
    args = cls(**{f.name: getattr(known, f.name) for f in dataclasses.fields(cls)})
    given = _given_on_command_line(parser, argv) | (set(read_config_file(known.config)) if known.config else set())
    args.__dict__[GIVEN] = frozenset(given & {f.name for f in dataclasses.fields(cls)})
    return args


GIVEN = "_vitzoo_given"  # where `parse` notes the fields set by a flag or the config file


def given(args: Any) -> frozenset[str]:
    """The fields of `args` that a flag or `--config` set (the rest hold their defaults). Arguments built in
    code rather than by `parse` count every field whose value differs from the class default as given."""
    if GIVEN in vars(args):
        return vars(args)[GIVEN]
    return frozenset(f.name for f in dataclasses.fields(args)
                     if f.default is not dataclasses.MISSING and getattr(args, f.name) != f.default)


def _given_on_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options present in `argv` (`--flag V`, `--flag=V`, `--no-flag`)."""
    present = {item.split("=", 1)[0] for item in argv if item.startswith("-")}
    names = set()
    for action in parser._actions:
        if present & set(action.option_strings):
            names.add(action.dest)
            names.add(re.sub(r"^no_", "", action.dest))  # HfArgumentParser's --no-x for a bool that defaults to True
    return names


# value checks, by field name, for whichever of these fields a method has (None: not given)
POSITIVE = ("epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "log_steps", "eval_steps",
            "checkpoint_steps", "keep_checkpoints", "max_train_samples", "max_eval_samples", "image_size", "out_dim", "head_hidden_dim",
            "head_bottleneck_dim", "tokenizer_images", "tokenizer_iterations", "decoder_hidden_size", "decoder_depth",
            "min_block_patches", "mask_patch_size", "local_crop_size", "tau", "teacher_temp", "warmup_teacher_temp",
            "student_temp", "lora_rank", "lora_alpha")
NON_NEGATIVE = ("learning_rate", "min_learning_rate", "weight_decay", "max_grad_norm", "num_workers",
                "mixup", "cutmix", "blr", "weight_decay_end", "freeze_last_layer", "local_crops",
                "warmup_teacher_temp_epochs", "num_reconstructions")
RANGES = {  # (low, high, low included, high included)
    "warmup_ratio": (0, 1, True, False), "val_fraction": (0, 1, False, False), "label_smoothing": (0, 1, True, False),
    "hflip": (0, 1, True, True), "crop_scale": (0, 1, False, True), "alpha": (0, 1, True, True),
    "layer_decay": (0, 1, False, True), "ema_decay": (0, 1, False, False), "momentum_teacher": (0, 1, True, True),
    "center_momentum": (0, 1, True, True), "mask_ratio": (0, 1, False, False), "lora_dropout": (0, 1, True, False),
}


def check_arguments(args: Any) -> None:
    """Refuse out-of-range values before anything runs, naming the flag and what it accepts."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)}

    def refuse(name: str, accepted: str) -> BadInputError:
        return BadInputError(f"--{name.replace('_', '-')} must be {accepted}, got {values[name]!r}")

    for name in POSITIVE:
        if values.get(name) is not None and not values[name] > 0:
            raise refuse(name, "positive")
    for name in NON_NEGATIVE:
        if values.get(name) is not None and not values[name] >= 0:
            raise refuse(name, "0 or more")
    for name, (low, high, low_in, high_in) in RANGES.items():
        value = values.get(name)
        if value is None:
            continue
        if not ((value >= low if low_in else value > low) and (value <= high if high_in else value < high)):
            raise refuse(name, f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}")
    if "peft" in values:
        from vitzoo.training.adapters import check_peft_arguments

        check_peft_arguments(args)


def read_config_file(path: str) -> dict[str, Any]:
    """A YAML or JSON mapping of argument names (dashes or underscores) to values."""
    if not os.path.isfile(path):
        raise BadInputError(f"config file not found: {path}")
    with open(path) as handle:
        data = yaml.safe_load(handle) if path.endswith((".yaml", ".yml")) else json.load(handle)
    if not isinstance(data, dict):
        raise BadInputError(f"{path} must hold a mapping of argument names to values")
    return {key.replace("-", "_"): value for key, value in data.items()}
