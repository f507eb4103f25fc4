"""DeiT distillation (Touvron et al., "Training data-efficient image transformers & distillation
through attention", ICML 2021): the loss, the student's two heads, and the frozen teacher.

    loss = (1 - alpha) * CE(cls_logits, labels) + alpha * D(distillation_logits, teacher_logits)

with D = KL(softmax(teacher / tau) || softmax(student / tau)) * tau^2 ("soft", batch mean) or
CE(student, argmax teacher) ("hard", DeiT's default with alpha 0.5, tau 1). The same formula as
timm's `timm.task.TokenDistillationTask` / `LogitDistillationTask` with `task_loss_weight=1 - alpha`
(tests hold them equal). A student without a distillation token uses its one head for both terms.

Without augmentation that changes a sample's image between epochs, the teacher's logits are the
same every epoch: `TeacherLogitCache` computes them once (`--cache-teacher-logits`), and the
training loader yields each sample's index next to its label (`IndexedDataset`) to look them up.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from vitzoo.errors import BadInputError
from vitzoo.objectives.classification import Classification
from vitzoo.registry import Preprocessing
from vitzoo.training.objective import Context, History, Sign

DISTILL_TYPES = ("none", "soft", "hard")


def distillation_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, distill_type: str, tau: float = 1.0) -> torch.Tensor:
    """The distillation part alone: soft KL (x tau^2, mean over the batch) or CE to the teacher's argmax."""
    if distill_type == "soft":
        student = F.log_softmax(student_logits.float() / tau, dim=-1)
        teacher = F.log_softmax(teacher_logits.float() / tau, dim=-1)
        return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * (tau**2)
    if distill_type == "hard":
        return F.cross_entropy(student_logits, teacher_logits.argmax(dim=-1))
    raise BadInputError(f"unknown distill type {distill_type!r}; choose one of {', '.join(DISTILL_TYPES)}")


def deit_distillation_loss(
    cls_logits: torch.Tensor,
    distillation_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    distill_type: str = "hard",
    alpha: float = 0.5,
    tau: float = 1.0,
    criterion: nn.Module | None = None,
) -> torch.Tensor:
    """DeiT's loss: the class head against the labels, the distillation head against the teacher."""
    if distill_type not in DISTILL_TYPES:
        raise BadInputError(f"unknown distill type {distill_type!r}; choose one of {', '.join(DISTILL_TYPES)}")
    base = criterion(cls_logits, targets) if criterion is not None else F.cross_entropy(cls_logits, targets)
    if distill_type == "none":
        return base
    if teacher_logits is None:
        raise BadInputError(f"distill type {distill_type!r} needs teacher logits")
    return (1 - alpha) * base + alpha * distillation_term(distillation_logits, teacher_logits, distill_type, tau)


def student_heads(model: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class-head logits, distillation-head logits) of a training student; one head twice when it
    has no distillation token. transformers: `DeiTForImageClassificationWithTeacher`'s `cls_logits`
    and `distillation_logits`; timm: a distilled ViT in `set_distilled_training(True)` mode."""
    from vitzoo.training.engine import _is_transformers

    if _is_transformers(model):
        output = model(pixel_values=pixel_values)
        if hasattr(output, "cls_logits") and output.cls_logits is not None:
            return output.cls_logits, output.distillation_logits
        return output.logits, output.logits
    output = model(pixel_values)
    if isinstance(output, (tuple, list)):
        return output[0], output[1]
    return output, output


def has_distillation_token(model: nn.Module) -> bool:
    inner = getattr(model, "module", model)
    return hasattr(inner, "distillation_classifier") or getattr(inner, "dist_token", None) is not None


def enable_distilled_training(model: nn.Module) -> None:
    """timm's distilled ViTs return (cls, dist) while training only in this mode (eval averages them)."""
    if hasattr(model, "set_distilled_training"):
        model.set_distilled_training(True)


# --------------------------------------------------------------------------- labels
def parse_label_map(label_map: str | None) -> dict[str, str] | None:
    """`--label-map`: a JSON file {teacher_name: student_name} or "teacher=student,..."."""
    if not label_map:
        return None
    if os.path.isfile(label_map):
        with open(label_map) as handle:
            data = json.load(handle)
        if not isinstance(data, Mapping):
            raise BadInputError(f"{label_map} must hold a JSON object {{teacher label: student label}}")
        return {str(k): str(v) for k, v in data.items()}
    pairs = {}
    for item in label_map.split(","):
        if "=" not in item:
            raise BadInputError(f"--label-map {label_map!r}: expected teacher_name=student_name pairs or a JSON file")
        teacher, student = item.split("=", 1)
        pairs[teacher.strip()] = student.strip()
    return pairs


def teacher_class_index(
    teacher_labels: Mapping[int, str] | None, student_labels: Mapping[int, str], label_map: str | None = None
) -> torch.Tensor:
    """For each student class (in order), the teacher's class index whose logit stands for it.

    The two label sets must match by name (any order), unless `label_map` pairs them up; anything
    else is a BadInputError before training."""
    if not teacher_labels:
        raise BadInputError("the teacher has no classification head; pass a classifier (or --teacher-scratch)")
    by_name = {name: index for index, name in teacher_labels.items()}
    pairs = parse_label_map(label_map)
    if pairs is not None:
        unknown = sorted(set(pairs) - set(by_name))
        if unknown:
            raise BadInputError(f"--label-map names teacher labels the teacher lacks: {', '.join(unknown[:5])}")
        inverse = {student: teacher for teacher, student in pairs.items()}
        missing = [name for name in student_labels.values() if name not in inverse]
        if missing:
            raise BadInputError(f"--label-map gives no teacher label for student label(s) {', '.join(missing[:5])}")
        return torch.tensor([by_name[inverse[student_labels[i]]] for i in range(len(student_labels))])
    if len(teacher_labels) != len(student_labels) or set(by_name) != set(student_labels.values()):
        only_teacher = sorted(set(by_name) - set(student_labels.values()))[:3]
        only_student = sorted(set(student_labels.values()) - set(by_name))[:3]
        raise BadInputError(
            f"the teacher's {len(teacher_labels)} classes differ from the student's {len(student_labels)} "
            f"(teacher only: {only_teacher}, student only: {only_student}); fine-tune the teacher on this dataset "
            "or say how they match with --label-map (a JSON file or teacher_name=student_name,...)"
        )
    return torch.tensor([by_name[student_labels[i]] for i in range(len(student_labels))])


# --------------------------------------------------------------------------- teacher
class FrozenTeacher(nn.Module):
    """The teacher: frozen, always in eval mode, run without gradients; turns the student's pixels
    into its own input (re-normalised, resized for a ViT of another size) and its logits into the
    student's class order. Keeps the time it takes, for the share of step time logged."""

    def __init__(self, zoo: Any, student_preprocessing: Preprocessing, class_index: torch.Tensor) -> None:
        super().__init__()
        self.zoo = zoo
        self.model = zoo.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        teacher = zoo.spec.preprocessing
        self.register_buffer("student_mean", torch.tensor(student_preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("student_std", torch.tensor(student_preprocessing.std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("teacher_mean", torch.tensor(teacher.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("teacher_std", torch.tensor(teacher.std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("class_index", class_index, persistent=False)
        # a ViT needs its own input size; a CNN takes any
        self.size = zoo.image_size if zoo.spec.architecture is not None else None
        self.seconds = 0.0

    @classmethod
    def load(cls, name: str, student: Any, labels: Mapping[int, str], *, scratch: bool = False, backend: str | None = None,
             label_map: str | None = None) -> FrozenTeacher:
        """The teacher `name` for the `student` ZooModel, its classes matched to the student's (by name, or
        by `label_map`) before any training; `scratch`: random init with the dataset's `labels` (tests)."""
        import vitzoo

        zoo = vitzoo.load(name, task="classification", pretrained=not scratch, backend=backend,
                          id2label=labels if scratch else None)
        index = teacher_class_index(zoo.id2label, student.id2label or labels, label_map)
        return cls(zoo, student.spec.preprocessing, index)

    def describe(self) -> str:
        weights = "trained weights" if self.zoo.pretrained else "RANDOM init"
        return f"{self.zoo.spec.name} ({self.zoo.backend}, {weights}), {self.zoo.num_params / 1e6:.2f}M parameters, frozen"

    def train(self, mode: bool = True) -> FrozenTeacher:  # noqa: ARG002 (the teacher never trains)
        return super().train(False)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        pixels = pixel_values
        if not (torch.equal(self.student_mean, self.teacher_mean) and torch.equal(self.student_std, self.teacher_std)):
            pixels = (pixels * self.student_std + self.student_mean - self.teacher_mean) / self.teacher_std
        if self.size is not None and pixels.shape[-1] != self.size:
            pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bicubic", align_corners=False)
        from vitzoo.training.engine import forward_logits

        logits = forward_logits(self.model, pixels)[:, self.class_index]
        self.seconds += time.perf_counter() - start
        return logits.detach()


# --------------------------------------------------------------------------- cached teacher logits
def augmentations_that_vary(
    *, random_resized_crop: bool, hflip: float, auto_augment: str | None, mixup: float, cutmix: float
) -> list[str]:
    """The flags (as given) under which a sample's training image differs between epochs."""
    varying = []
    if random_resized_crop:
        varying.append("random resized crop is on (--no-random-resized-crop turns it off)")
    if hflip > 0:
        varying.append(f"--hflip {hflip} (use --hflip 0)")
    if auto_augment:
        varying.append(f"--auto-augment {auto_augment} (omit it)")
    if mixup > 0:
        varying.append(f"--mixup {mixup} (use --mixup 0)")
    if cutmix > 0:
        varying.append(f"--cutmix {cutmix} (use --cutmix 0)")
    return varying


def check_cacheable(**augmentation: Any) -> None:
    """`--cache-teacher-logits` only where every epoch shows the teacher the same images."""
    varying = augmentations_that_vary(**augmentation)
    if varying:
        raise BadInputError(
            "--cache-teacher-logits needs training images that are the same in every epoch, but "
            + "; ".join(varying)
            + ". Cached logits would belong to other images: turn these off, or drop --cache-teacher-logits"
        )


class IndexedDataset(Dataset):
    """`dataset`'s items with their index: `(image, (label, index))`, so the loader's collate stacks
    `(label, index)` pairs into a Bx2 tensor (`split_labels` takes it apart); a None item (an
    undecodable image) stays None. Anything else is read from the wrapped dataset."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if item is None:
            return None
        image, label = item
        return image, (label, index)

    def __getattr__(self, name: str) -> Any:  # skipped, skipped_items, name, ...
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def split_labels(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An `IndexedDataset` batch's Bx2 (label, index) tensor -> (labels, indices)."""
    return keys[:, 0], keys[:, 1]


class TeacherLogitCache:
    """The teacher's logits for every training sample, computed once: `cache[indices]`.

    `build` runs the (frozen) teacher over a loader of `IndexedDataset` batches, under the given
    autocast; with several processes the loader is sharded among them and the shards are
    gathered, so every process holds the logits of the whole training set (float32, on the CPU;
    looked-up rows move to the batch's device). Rows of undecodable images stay NaN and are never
    asked for: they are dropped from training batches as well."""

    def __init__(self, table: torch.Tensor, seconds: float = 0.0) -> None:
        self.table = table
        self.seconds = seconds

    @classmethod
    def build(cls, teacher: nn.Module, loader: Any, num_samples: int, num_classes: int, *, pixels: Any,
              accelerator: Any) -> TeacherLogitCache:
        """`pixels(uint8 batch)` turns a loader batch into the student's normalised input;
        `loader` should be prepared by `accelerator` (sharded, on its device)."""
        start = time.perf_counter()
        table = torch.full((num_samples, num_classes), float("nan"))
        device = accelerator.device
        for images, keys in loader:
            _, indices = split_labels(keys.to(device))
            if images.shape[0]:
                with accelerator.autocast():
                    logits = teacher(pixels(images.to(device))).float()
            else:
                logits = torch.zeros((0, num_classes), device=device)
            if accelerator.num_processes > 1:  # shards may differ in size (dropped images): pad, gather, unpad
                indices = accelerator.gather(accelerator.pad_across_processes(indices.contiguous(), dim=0, pad_index=-1))
                logits = accelerator.gather(accelerator.pad_across_processes(logits.contiguous(), dim=0))
            keep = indices >= 0
            table[indices[keep].cpu()] = logits[keep].cpu()
        return cls(table, time.perf_counter() - start)

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        logits = self.table[indices.cpu()]
        if torch.isnan(logits).any():
            missing = indices.cpu()[torch.isnan(logits).any(dim=1)].tolist()
            raise RuntimeError(f"no cached teacher logits for training samples {missing[:5]}")
        return logits.to(indices.device, non_blocking=True)


# --------------------------------------------------------------------------- the objective
class DeiTDistillation(Classification):
    """DeiT's objective for `fit`: the class head learns the (mixed) labels, the distillation head the
    frozen teacher's logits on the same pixels, live or from a `TeacherLogitCache` built at setup
    (then each batch's labels come as (label, index) pairs, see `IndexedDataset`). Evaluation and
    the kept model are classification's (the student's two heads averaged)."""

    name = "deit"

    def __init__(
        self,
        num_classes: int,
        teacher: FrozenTeacher | None,
        *,
        distill_type: str = "hard",
        alpha: float = 0.5,
        tau: float = 1.0,
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        cache_from: Any = None,
    ) -> None:
        """`cache_from`: a loader of `IndexedDataset` batches over the training set (in the training
        transform) to cache the teacher's logits from, or None for the live teacher."""
        if teacher is None and distill_type != "none":
            raise BadInputError("--method deit needs --teacher (or --distill-type none to train on labels alone)")
        if not 0.0 <= alpha <= 1.0 or tau <= 0:
            raise BadInputError(f"--alpha must lie in [0, 1] and --tau be positive (got {alpha}, {tau})")
        super().__init__(num_classes, label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix)
        self.teacher, self.distill_type, self.alpha, self.tau = teacher, distill_type, alpha, tau
        self.cache_from, self.cache = cache_from, None
        self.seconds_at_start = self.seconds_at_log = 0.0

    @property
    def teacher_seconds(self) -> float:
        return self.teacher.seconds if self.teacher is not None else 0.0

    def setup(self, context: Context) -> None:
        accelerator = context.accelerator
        if self.teacher is not None:
            self.teacher.to(accelerator.device)
        if self.cache_from is not None:
            from accelerate.data_loader import prepare_data_loader

            # sharded among the processes like a prepared loader, but not registered with the accelerator
            # (its checkpoints keep the same layout with or without the cache)
            loader = prepare_data_loader(self.cache_from, accelerator.device, num_processes=accelerator.num_processes,
                                         process_index=accelerator.process_index, put_on_device=True)
            with torch.random.fork_rng(devices=[]):  # the run's random stream stays as without the cache
                self.cache = TeacherLogitCache.build(self.teacher, loader, len(self.cache_from.dataset),
                                                     len(self.teacher.class_index), accelerator=accelerator,
                                                     pixels=context.pixels)
            accelerator.print(f"cached the teacher's logits of {len(self.cache_from.dataset)} training images in "
                              f"{self.cache.seconds:.1f} s; the teacher does not run again")
        self.seconds_at_start = self.seconds_at_log = self.teacher_seconds

    def loss(self, model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, context: Context) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.cache is not None:
            labels, indices = split_labels(labels)
        pixels, targets = self.mix(pixels, labels)
        if self.cache is not None:
            teacher_logits = self.cache(indices)
        else:
            teacher_logits = self.teacher(pixels) if self.teacher is not None else None
        cls_logits, dist_logits = student_heads(model, pixels)
        loss = deit_distillation_loss(cls_logits, dist_logits, teacher_logits, targets, distill_type=self.distill_type,
                                      alpha=self.alpha, tau=self.tau, criterion=self.criterion)
        return loss, {}

    def health(self, context: Context, history: History) -> list[Sign]:
        """Classification's stall at ln(classes), but not with soft distillation: a uniform student's KL to
        the teacher is ln(classes) less the teacher's entropy, so its loss has no fixed chance level."""
        if self.distill_type == "soft" and self.alpha > 0:
            return []
        return super().health(context, history)

    def on_log(self, seconds: float) -> dict[str, float]:
        spent, self.seconds_at_log = self.teacher_seconds - self.seconds_at_log, self.teacher_seconds
        return {"teacher_time_share": spent / seconds}

    def speed(self, results: dict[str, Any]) -> str:
        return f"teacher {results['teacher_time_share']:.0%} of the time"

    def results(self, context: Context) -> dict[str, Any]:
        wall = context.state.train_seconds
        return {
            "teacher_time_share": (self.teacher_seconds - self.seconds_at_start) / wall if wall else 0.0,
            "cached_teacher_logits": self.cache is not None,
            "teacher_cache_seconds": self.cache.seconds if self.cache is not None else 0.0,
        }
