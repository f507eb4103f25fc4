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
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from transformers import HfArgumentParser

from vitzoo.errors import BadInputError

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
    eval_split: str | None = arg(None, "split to evaluate on (default: a validation split if there is one, else carved from train)")
    val_fraction: float = arg(0.2, "share of train held out for evaluation when the dataset has no eval split")
    max_train_samples: int | None = arg(None, "use at most this many training images (quick runs)")
    max_eval_samples: int | None = arg(None, "use at most this many evaluation images")
    num_workers: int | None = arg(None, "data-loading processes per training process (default: with GPUs, most cores shared among them; on a CPU, 0 up to 2 cores, else min(4, CPUs/4))")


def load_data(args: DataArguments) -> Splits:
    """The train/eval splits that a recipe's data flags name (its `--seed` also seeds the held-out split)."""
    from vitzoo.data import load_splits

    return load_splits(
        args.dataset, image_column=args.image_column, label_column=args.label_column, train_split=args.train_split,
        eval_split=args.eval_split, val_fraction=args.val_fraction, seed=args.seed,
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
    )


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
    mixed_precision: str = arg("auto", "autocast dtype through Accelerate; auto: bf16 on GPUs that support it and on CPUs with native bf16 (AVX512-BF16/AMX), else none", choices=["auto", "no", "bf16", "fp16"])
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
    push_to_hub: bool = arg(False, "after training, publish model/ with a model card to the Hugging Face Hub (as `vitzoo push`); token from HF_TOKEN or `hf auth login`")
    hub_model_id: str | None = arg(None, "Hub repository for --push-to-hub, as USER/NAME")
    hub_private: bool = arg(False, "create the --push-to-hub repository as private")
    hub_revision: str | None = arg(None, "branch for --push-to-hub (default: main)")


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


@dataclass
class DistillArguments(FinetuneArguments):
    """Everything `recipes/distill.py` takes: the fine-tuning arguments, plus DeiT's teacher or DINO's
    self-distillation (--method)."""

    method: str = arg("deit", "deit: distil a teacher's predictions into the student; dino: self-distillation on unlabelled images", choices=["deit", "dino"])
    # DeiT
    teacher: str | None = arg(None, "DeiT teacher: registry name, local model folder (e.g. a finetune run's model/) or timm model name (a CNN works)")
    teacher_scratch: bool = arg(False, "random-init teacher with a fresh head for the dataset's classes (tests)")
    teacher_backend: str | None = arg(None, "library that runs the teacher", choices=["transformers", "timm"])
    distill_type: str = arg("hard", "none: labels only; soft: KL to the teacher at temperature tau; hard: CE to the teacher's argmax (DeiT)", choices=["none", "soft", "hard"])
    alpha: float = arg(0.5, "weight of the distillation term (the label term gets 1 - alpha)")
    tau: float = arg(1.0, "temperature of soft distillation")
    label_map: str | None = arg(None, "how teacher classes match student classes: a JSON file {teacher: student} or teacher_name=student_name,...")
    cache_teacher_logits: bool = arg(False, "DeiT: run the teacher once over the training set before training and read its logits afterwards; only without augmentation that changes images between epochs (--no-random-resized-crop, --hflip 0, no --auto-augment, --mixup 0, --cutmix 0)")
    # DINO
    out_dim: int = arg(65536, "DINO head output dimension (prototypes); small for small data")
    head_hidden_dim: int = arg(2048, "DINO head MLP width")
    head_bottleneck_dim: int = arg(256, "DINO head bottleneck before the weight-normed last layer")
    local_crops: int = arg(8, "DINO: number of small local crops per image (2 global crops always)")
    global_crop_scale: str = arg("0.4,1.0", "DINO: area range of the global crops")
    local_crop_scale: str = arg("0.05,0.4", "DINO: area range of the local crops")
    local_crop_size: int | None = arg(None, "DINO: local crop size (default: 96/224 of the image size, a multiple of the patch)")
    momentum_teacher: float = arg(0.996, "DINO: EMA momentum of the teacher at the start (cosine to 1)")
    teacher_temp: float = arg(0.04, "DINO: teacher temperature after warm-up")
    warmup_teacher_temp: float = arg(0.04, "DINO: teacher temperature at the start")
    warmup_teacher_temp_epochs: int = arg(0, "DINO: epochs of linear teacher-temperature warm-up")
    student_temp: float = arg(0.1, "DINO: student temperature")
    center_momentum: float = arg(0.9, "DINO: momentum of the centre of the teacher outputs")
    weight_decay_end: float = arg(0.4, "DINO: weight decay at the end of its cosine schedule (from --weight-decay)")
    freeze_last_layer: int = arg(1, "DINO: epochs during which the head's last layer is not updated")
    head_batch_norm: bool = arg(False, "DINO: batch norm after the head's hidden layers (DINO's --use_bn_in_head); helped tiny scratch ViTs on small data stay clear of collapse (README: DINO on small data); synced across GPUs, per process on CPU")
    norm_last_layer: bool = arg(True, "DINO: keep the norm of the head's last layer fixed at 1 (off: learnt, better features but less stable)")


@dataclass
class PretrainArguments(DataArguments, ModelArguments, TrainingArguments):
    """Everything `recipes/pretrain.py` takes: masked image modelling on unlabelled images
    (MAE, BEiT or SimMIM); the dataset's labels, if any, are ignored."""

    method: str = arg("mae", "mae: masked autoencoder (pixels, encoder sees visible patches only); beit: visual-token prediction; simmim: L1 pixel regression with mask tokens", choices=["mae", "beit", "simmim"])
    model: str | None = arg(None, "registry name or model folder (default per method: mae-base, beit-base-pt22k, vit-base-in21k)")
    mask_ratio: float | None = arg(None, "share of patches masked, in (0, 1) (default: mae 0.75, beit 0.4, simmim 0.6)")
    norm_pix_loss: bool = arg(True, "MAE: regress per-patch normalised pixels (the paper's better target)")
    decoder_hidden_size: int | None = arg(None, "MAE decoder width (with --scratch; also decoder_hidden_size=... in --config-overrides)")
    decoder_depth: int | None = arg(None, "MAE decoder blocks (with --scratch; decoder_num_hidden_layers=...)")
    mask_patch_size: int | None = arg(None, "SimMIM: side of the square masking unit, a multiple of the patch size (default 2 x patch when it divides the image, else the patch)")
    min_block_patches: int = arg(4, "BEiT: smallest masked block, in patches")
    tokenizer: str | None = arg(None, "BEiT: a saved tokenizer folder (default: fit a k-means codebook on this dataset and save it with the run)")
    tokenizer_vocab_size: int = arg(256, "BEiT: codes of the fitted k-means tokenizer (at most 8192; must equal the model's vocab_size)")
    tokenizer_images: int = arg(2000, "BEiT: images whose patches the k-means tokenizer is fitted on")
    tokenizer_iterations: int = arg(25, "BEiT: k-means (Lloyd) iterations")
    tokenizer_normalisation: str = arg("pixels", "BEiT: what the k-means tokenizer clusters: pixels (the patch's normalised pixels: brightness and shape) or patch (each patch standardised: shape and contrast only)", choices=["pixels", "patch"])
    blr: float = arg(1.5e-4, "base learning rate: lr = blr * total batch / 256 (MAE paper) unless --learning-rate is given")
    learning_rate: float | None = arg(None, "absolute peak learning rate (overrides --blr scaling)")
    warmup_ratio: float = arg(0.1, "share of all steps spent warming the learning rate up linearly")
    hflip: float | None = arg(None, "probability of a horizontal flip (default 0.5; the source's default, 0 for digits)")
    crop_scale: float = arg(0.2, "smallest area share of the random resized crop (MAE: 0.2)")
    num_reconstructions: int = arg(4, "eval images drawn in reconstructions.png (0: no figure)")
