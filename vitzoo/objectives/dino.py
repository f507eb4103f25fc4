"""DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021):
self-distillation without labels. The pieces `recipes/distill.py --method dino` is made of.

- multi-crop: 2 global crops and N local ones per image (`MultiCrop`), packed side by side into one
  uint8 canvas so the shared loaders and collate work unchanged (`unpack_crops` splits them again);
- `DINOHead`: 3-layer MLP (optionally with batch norm, DINO's `use_bn_in_head`), L2-normalised
  bottleneck, weight-normed last layer (its norm fixed to 1 unless `norm_last_layer=False`);
- `DINOLoss`: cross-entropy between the sharpened, centred teacher output on the global crops and
  the student output on every other crop; the centre is an EMA (0.9) of the teacher's outputs
  (all-reduced across processes), the teacher temperature warms up linearly; it also records the
  teacher's entropy so that a run can tell collapse (to uniform, or onto one prototype) early
  (`collapse_signs`, read by the training loop's watch with the teacher's k-NN);
- `cosine_at`: the per-step schedules of momentum (0.996 -> 1) and weight decay (0.04 -> 0.4), over the
  planned steps (which a time budget may plan again);
- `ema_update`: teacher <- m * teacher + (1 - m) * student; `cancel_last_layer_gradients` freezes the
  head's last layer in the first epoch(s).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2

from vitzoo.errors import BadInputError
from vitzoo.training.distributed import gathered_parameters
from vitzoo.training.objective import Context, History, Objective, Sign

INTERPOLATION = v2.InterpolationMode.BICUBIC
CURVES = "dino_curves.png"  # loss, teacher entropy and k-NN per evaluation, in the run folder
KNN_K = 20
# collapse (DINO paper, section 5.3): the teacher's entropy at this share of ln(out_dim) or above (every image's
# output uniform), or the entropy of its batch-mean output below this share (every image on one prototype)
UNIFORM_SHARE, ONE_PROTOTYPE_SHARE = 0.98, 0.1
FIXES = "--head-batch-norm, --learning-rate 2.5e-4, --momentum-teacher 0.99"  # the documented good run's


def local_crop_size(image_size: int, patch_size: int) -> int:
    """DINO's 96/224 local crops, scaled to `image_size` and rounded to whole patches (at least one)."""
    return max(patch_size, round(image_size * 96 / 224 / patch_size) * patch_size)


class MultiCrop:
    """uint8 3xHxW -> one uint8 canvas 3 x G x (2G + N*L): two global crops of size G (DINO's
    colour jitter, grey, blur 1.0 / 0.1 + solarize 0.2), then N local crops of size L (blur 0.5).
    The hflip probability follows the dataset (0 for digits)."""

    def __init__(
        self,
        global_size: int,
        local_size: int,
        local_crops: int,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        hflip: float = 0.5,
    ) -> None:
        if local_size > global_size:
            raise BadInputError(f"local crops ({local_size}px) must not exceed global crops ({global_size}px)")
        self.global_size, self.local_size, self.local_crops = global_size, local_size, local_crops
        # small images (< 64 px, e.g. upscaled digits) skip hue jitter and blur: both cost tens of ms per
        # tiny crop in torchvision and add nothing at that size
        small = global_size < 64

        def view(size: int, scale: tuple[float, float], blur: float, solarize: float) -> v2.Compose:
            steps = [
                v2.RandomResizedCrop(size, scale=scale, interpolation=INTERPOLATION, antialias=True),
                v2.RandomHorizontalFlip(hflip),
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.0 if small else 0.1)], p=0.8),
                v2.RandomGrayscale(0.2),
            ]
            if not small:
                steps.append(v2.RandomApply([v2.GaussianBlur(23, sigma=(0.1, 2.0))], p=blur))
            if solarize:
                steps.append(v2.RandomSolarize(128, p=solarize))
            return v2.Compose(steps)

        self.global1 = view(global_size, global_scale, 1.0, 0.0)
        self.global2 = view(global_size, global_scale, 0.1, 0.2)
        self.local = view(local_size, local_scale, 0.5, 0.0)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        g, s = self.global_size, self.local_size
        canvas = torch.zeros((3, g, 2 * g + self.local_crops * s), dtype=torch.uint8)
        canvas[:, :, :g] = self.global1(image)
        canvas[:, :, g : 2 * g] = self.global2(image)
        for index in range(self.local_crops):
            start = 2 * g + index * s
            canvas[:, :s, start : start + s] = self.local(image)
        return canvas


def unpack_crops(canvas: torch.Tensor, global_size: int, local_size: int, local_crops: int) -> list[torch.Tensor]:
    """A batch of `MultiCrop` canvases (B x 3 x G x W) -> [global 1, global 2, local 1, ...], each B x 3 x S x S."""
    g, s = global_size, local_size
    crops = [canvas[..., :g], canvas[..., g : 2 * g]]
    crops += [canvas[..., :s, 2 * g + i * s : 2 * g + (i + 1) * s] for i in range(local_crops)]
    channels_last = canvas.dim() == 4 and canvas.is_contiguous(memory_format=torch.channels_last) and not canvas.is_contiguous()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return [crop.contiguous(memory_format=layout) for crop in crops]


class DINOHead(nn.Module):
    """MLP (in -> hidden -> hidden -> bottleneck, GELU; batch norm after the hidden layers with
    `batch_norm`, DINO's `use_bn_in_head`), L2 normalisation, then a weight-normed linear layer to
    `out_dim` prototypes whose norm (g) is fixed to 1 unless `norm_last_layer` is False."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        blocks: list[nn.Module] = []
        for index, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            blocks.append(nn.Linear(a, b))
            if index < len(dims) - 2:
                if batch_norm:
                    blocks.append(nn.BatchNorm1d(b))
                blocks.append(nn.GELU())
        self.mlp = nn.Sequential(*blocks)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        magnitude.data.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    @property
    def has_batch_norm(self) -> bool:
        return any(isinstance(module, nn.BatchNorm1d) for module in self.mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class DINOLoss(nn.Module):
    """Cross-entropy of the student's crops to the teacher's global crops (not the same view),
    with the teacher centred (EMA centre, `center_momentum`) and sharpened (temperature warm-up)."""

    def __init__(
        self,
        out_dim: int,
        num_crops: int,
        warmup_teacher_temp: float,
        teacher_temp: float,
        warmup_teacher_temp_epochs: int,
        epochs: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.num_crops = num_crops
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        # collapse monitor (DINO paper, section 5.3): the teacher's entropy goes to ln(out_dim) when the
        # outputs collapse to uniform and to 0 when one prototype takes every image; the batch-mean
        # distribution's entropy tells the second apart from a healthy sharp teacher
        self.teacher_entropy = torch.tensor(float("nan"))
        self.mean_teacher_entropy = torch.tensor(float("nan"))
        warmup = min(warmup_teacher_temp_epochs, epochs)
        self.teacher_temps = np.concatenate(
            (np.linspace(warmup_teacher_temp, teacher_temp, warmup), np.ones(epochs - warmup) * teacher_temp)
        )

    def teacher_temperature(self, epoch: int) -> float:
        return float(self.teacher_temps[min(epoch, len(self.teacher_temps) - 1)])

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor, epoch: int) -> torch.Tensor:
        """student_output: (num_crops * B) x out_dim, crop-major; teacher_output: (2 * B) x out_dim."""
        student = (student_output.float() / self.student_temp).chunk(self.num_crops)
        temperature = self.teacher_temperature(epoch)
        teacher = F.softmax((teacher_output.float() - self.center) / temperature, dim=-1).detach().chunk(2)
        total, terms = 0.0, 0
        for t_index, t in enumerate(teacher):
            for s_index, s in enumerate(student):
                if s_index == t_index:
                    continue  # never the same view
                total = total + torch.sum(-t * F.log_softmax(s, dim=-1), dim=-1).mean()
                terms += 1
        self.record_entropies(torch.cat(teacher))
        self.update_center(teacher_output)
        return total / terms

    @torch.no_grad()
    def record_entropies(self, probabilities: torch.Tensor) -> None:
        def entropy(p: torch.Tensor) -> torch.Tensor:
            return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)

        # tensors, so that no step waits on the device; read them when logging
        self.teacher_entropy = entropy(probabilities).mean()
        self.mean_teacher_entropy = entropy(probabilities.mean(0))

    def collapse(self) -> str | None:
        """'uniform' or 'one prototype' when the last batch's teacher looks collapsed, else None."""
        return collapse_kind(float(self.teacher_entropy), float(self.mean_teacher_entropy), self.center.shape[-1])

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        batch_center = teacher_output.float().sum(dim=0, keepdim=True)
        count = torch.tensor([teacher_output.shape[0]], device=teacher_output.device, dtype=torch.float32)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            dist.all_reduce(count)
        batch_center = batch_center / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


def collapse_kind(entropy: float, mean_entropy: float, out_dim: int) -> str | None:
    """'uniform', 'one prototype' or None, from the teacher's entropy per image and that of its batch-mean output."""
    top = math.log(out_dim)
    if entropy >= UNIFORM_SHARE * top:
        return "uniform"
    if mean_entropy < ONE_PROTOTYPE_SHARE * top:
        return "one prototype"
    return None


def collapse_signs(history: History, out_dim: int, knn_from: int = 0) -> list[Sign]:
    """DINO's signs of collapse: the teacher's entropies averaged over the newest logs (`collapse_kind`),
    and its k-NN accuracy below the epoch-0 figure at the two newest evaluations from step `knn_from` on (a
    scratch backbone's k-NN often dips in the first epochs before it climbs: on digits, seed 1 of the
    small-data defaults fell from 54.3% to 47.6% by epoch 2 and passed its start at epoch 5)."""
    signs, top = [], math.log(out_dim)
    where = "(docs/distillation.md: DINO on small data)"
    advice = f"try {FIXES} {where}"
    entropies, means = history.recent("teacher_entropy"), history.recent("mean_teacher_entropy")
    if entropies and means:
        entropy, mean = sum(entropies) / len(entropies), sum(means) / len(means)
        kind = collapse_kind(entropy, mean, out_dim)
        if kind == "uniform":  # sharper teacher outputs (a lower temperature) counter it too
            signs.append(Sign("dino_uniform", "collapse", f"DINO collapse: teacher entropy {entropy:.2f} is "
                              f"{entropy / top:.1%} of ln({out_dim}) = {top:.2f} (uniform outputs)",
                              f"try {FIXES}, --teacher-temp 0.025 {where}"))
        elif kind == "one prototype":
            signs.append(Sign("dino_one_prototype", "collapse", f"DINO collapse: the teacher's batch-mean output has "
                              f"entropy {mean:.2f}, {mean / top:.1%} of ln({out_dim}) = {top:.2f} (every image on one "
                              "prototype)", advice))
    start = [event["knn_accuracy"] for event in history.evaluations if event["step"] == 0]
    last = [event["knn_accuracy"] for event in history.evaluations if event["step"] > max(0, knn_from - 1)][-2:]
    if start and len(last) == 2 and max(last) < start[0]:
        signs.append(Sign("dino_knn_below_start", "collapse", f"DINO collapse: teacher k-NN accuracy {last[0]:.1%} then "
                          f"{last[1]:.1%} at the last two evaluations, below {start[0]:.1%} before training", advice))
    return signs


def check_batch_size(batch_size: int) -> None:
    """Warn of a batch under 16 images per process: the centre of the teacher outputs is estimated from it."""
    if batch_size < 16:
        warnings.warn(f"DINO with {batch_size} images per process: the centre of the teacher outputs is "
                      "estimated from few samples and may be unstable (use 16 or more)", stacklevel=3)


def _planned_cosine(start: float, end: float, step: int, context: Context) -> float:
    """`cosine_at` over the run's planned steps, read now (past the plan: its last step's value)."""
    total = context.plan.total_steps
    return float(cosine_at(start, end, min(step, total - 1), total))


def cosine_at(start: float, end: float, step: Any, total: int) -> Any:
    """The cosine from `start` (step 0) towards `end` (step `total`) at `step` (a number or an array)."""
    return end + 0.5 * (start - end) * (1 + np.cos(np.pi * step / total))


class DINOModel(nn.Module):
    """Backbone + head over a list of crops: crops of one size go through the backbone together."""

    def __init__(self, backbone: nn.Module, head: DINOHead, family: Any, architecture: Any, image_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.family = family
        self.architecture = architecture
        self.image_size = image_size

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {}
        if pixel_values.shape[-1] != self.image_size and "interpolate_pos_encoding" in _forward_arguments(self.backbone.base_model):
            kwargs["interpolate_pos_encoding"] = True
        outputs = self.family.encode(self.backbone.base_model, pixel_values, **kwargs)
        return self.family.pool(outputs, self.architecture)

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        outputs, start = [], 0
        sizes = [crop.shape[-1] for crop in crops]
        while start < len(crops):
            end = start
            while end < len(crops) and sizes[end] == sizes[start]:
                end += 1
            outputs.append(self.embed(torch.cat(crops[start:end])))
            start = end
        return self.head(torch.cat(outputs))


def _forward_arguments(module: nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)


@torch.no_grad()
def ema_update(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter (the
    student's gathered whole where FSDP shards it: the teacher is whole on every process)."""
    for s, t in zip(gathered_parameters(student), teacher.parameters()):
        t.mul_(momentum).add_(s.to(t.dtype), alpha=1 - momentum)


def cancel_last_layer_gradients(model: nn.Module, epoch: int, freeze_last_layer: int) -> None:
    """DINO keeps the head's last layer fixed during the first `freeze_last_layer` epochs."""
    if epoch >= freeze_last_layer:
        return
    for name, parameter in model.named_parameters():
        if "last_layer" in name:
            parameter.grad = None


class DINO(Objective):
    """DINO's objective for `fit`: the student (`model`, backbone + head) sees every crop, its EMA
    teacher the two global ones; the teacher's centre and temperature follow DINO's schedules, and
    so do the teacher momentum (cosine to 1) and the weight decay (cosine to `weight_decay_end`) per
    update; the head's last layer stays fixed for `freeze_last_layer` epochs. Evaluation is the
    teacher backbone's weighted 20-NN accuracy (train -> eval split), also before the first step;
    model/ is the teacher's backbone."""

    name = "dino"
    watched_select = "knn_accuracy"  # --stop-on-collapse: model/ is the best teacher, not the collapsed newest
    evaluate_at_start = True

    def __init__(
        self,
        student: DINOModel,
        zoo: Any,
        splits: Any,
        *,
        global_size: int,
        local_size: int,
        local_crops: int,
        out_dim: int,
        epochs: int,
        momentum_teacher: float = 0.996,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        weight_decay: float = 0.04,
        weight_decay_end: float = 0.4,
        freeze_last_layer: int = 1,
        eval_batch_size: int = 64,
    ) -> None:
        from vitzoo.zoo import ZooModel

        self.teacher = copy.deepcopy(student).eval()  # the EMA of the student; never trained by gradients
        self.teacher.head.train(student.head.has_batch_norm)  # as in DINO, a batch-norm head uses the batch's statistics
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.criterion = DINOLoss(out_dim, 2 + local_crops, warmup_teacher_temp, teacher_temp,
                                  warmup_teacher_temp_epochs, epochs, student_temp, center_momentum)
        self.teacher_zoo = ZooModel(self.teacher.backbone, zoo.spec, task="features", backend=zoo.backend,
                                    pretrained=zoo.pretrained, image_size=zoo.image_size)
        self.splits, self.eval_batch_size = splits, eval_batch_size
        self.sizes = (global_size, local_size, local_crops)
        self.out_dim, self.epochs, self.freeze_last_layer = out_dim, epochs, freeze_last_layer
        self.momentum_start, self.weight_decay, self.weight_decay_end = momentum_teacher, weight_decay, weight_decay_end
        self.knn_at_start: float | None = None
        self.evaluation_line = ""

    def setup(self, context: Context) -> None:
        device = context.accelerator.device
        self.teacher.to(device)
        self.criterion.to(device)

    # the teacher's momentum (to 1) and the weight decay follow a cosine over the run's planned steps, read at each
    # step from the plan, so that a --time-budget that plans the run again moves them with the learning rate
    def _momentum(self, step: int, context: Context) -> float:
        return _planned_cosine(self.momentum_start, 1.0, step, context)

    def _weight_decay(self, step: int, context: Context) -> float:
        return _planned_cosine(self.weight_decay, self.weight_decay_end, step, context)

    def loss(self, model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, context: Context) -> tuple[torch.Tensor, dict[str, Any]]:
        crops = unpack_crops(pixels, *self.sizes)
        epoch = context.state.epoch
        with torch.no_grad():
            teacher_output = self.teacher(crops[:2])  # only the global views reach the teacher
        loss = self.criterion(model(crops), teacher_output, epoch)
        step = context.state.step
        return loss, {"weight_decay": self._weight_decay(step, context), "momentum": self._momentum(step, context),
                      "teacher_temp": self.criterion.teacher_temperature(epoch),
                      "teacher_entropy": self.criterion.teacher_entropy,
                      "mean_teacher_entropy": self.criterion.mean_teacher_entropy,
                      "center_norm": self.criterion.center.norm()}

    def before_update(self, model: nn.Module, optimizer: torch.optim.Optimizer, context: Context) -> None:
        for group in optimizer.param_groups:
            if group["weight_decay"] > 0:
                group["weight_decay"] = self._weight_decay(context.state.step, context)
        cancel_last_layer_gradients(model, context.state.epoch, self.freeze_last_layer)

    def after_update(self, model: nn.Module, context: Context) -> None:
        momentum = self._momentum(context.state.step - 1, context)
        ema_update(context.accelerator.unwrap_model(model), self.teacher, momentum)

    def evaluate(self, model: nn.Module, loader: Any, context: Context) -> dict[str, float]:
        knn = self.knn_accuracy(context)
        self.evaluation_line = f"teacher k-NN accuracy {knn:.4f}"
        if context.state.step == 0:
            self.knn_at_start = knn
            return {"knn_accuracy": knn}
        entropy = float(self.criterion.teacher_entropy)
        self.evaluation_line = (f"loss {context.last_loss:.4f}, teacher entropy {entropy:.3f} (uniform "
                        f"{math.log(self.out_dim):.3f}), {self.evaluation_line}")
        return {"knn_accuracy": knn}

    def health(self, context: Context, history: History) -> list[Sign]:
        """From the end of the first epoch on (a scratch teacher may start on one prototype and leave it); the
        k-NN sign from a quarter of the planned steps on."""
        if context.state.step < context.plan.steps_per_epoch:
            return []
        return collapse_signs(history, self.out_dim, knn_from=context.plan.total_steps // 4)

    def describe(self, metrics: dict[str, Any]) -> str:
        return self.evaluation_line

    def knn_accuracy(self, context: Context) -> float:
        """Weighted 20-NN accuracy of the teacher's features (train split -> eval split), on the main process."""
        from vitzoo.probe import knn_evaluate, split_features

        accelerator = context.accelerator
        accuracy = torch.zeros(1, device=accelerator.device)
        if accelerator.is_main_process:
            features = split_features(self.teacher_zoo, self.splits, batch_size=self.eval_batch_size)
            (train_x, train_y), (test_x, test_y) = features["train"], features["eval"]
            k = min(KNN_K, train_x.shape[0])
            accuracy[0] = knn_evaluate(train_x, train_y, test_x, test_y, ks=(k,))[k]["accuracy"]
        return float(accelerator.reduce(accuracy, reduction="sum")[0])

    def saved_model(self, zoo: Any, model: nn.Module) -> tuple[Any, nn.Module]:
        return self.teacher_zoo, self.teacher.backbone

    def summary(self, results: dict[str, Any], model_dir: str) -> str:
        evaluation = results["eval"]
        start = evaluation["knn_accuracy_at_start"]
        start = f" ({start:.4f} at the start)" if start is not None else ""
        return (f"teacher k-NN accuracy {evaluation['knn_accuracy']:.4f}{start}, "
                f"{results['wall_time_seconds'] / 60:.1f} min; backbone in {model_dir}")

    def finish(self, model: nn.Module, context: Context) -> None:
        if context.accelerator.is_main_process:
            from vitzoo.plots import save_dino_curves

            save_dino_curves(context.run.file(CURVES), context.run.events(), self.out_dim)

    def results(self, context: Context) -> dict[str, Any]:
        best = context.state.best or {}
        return {"eval": {**best, "knn_accuracy_at_start": self.knn_at_start, "k": KNN_K}, "final_loss": context.last_loss}

    def state_dict(self) -> dict[str, Any]:
        teacher = {f"teacher.{key}": value for key, value in self.teacher.state_dict().items()}
        return {**teacher, "center": self.criterion.center, "knn_at_start": self.knn_at_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict({key[len("teacher."):]: value for key, value in state.items() if key.startswith("teacher.")})
        self.criterion.center.copy_(state["center"])
        self.knn_at_start = state.get("knn_at_start")


def scaled_sizes(image_size: int, patch_size: int, local_size: int | None) -> tuple[int, int]:
    size = local_size or local_crop_size(image_size, patch_size)
    if size % patch_size:
        raise BadInputError(f"--local-crop-size {size} is not a multiple of the patch size {patch_size}")
    return image_size, size


__all__ = [
    "DINO", "DINOHead", "DINOLoss", "DINOModel", "MultiCrop", "cancel_last_layer_gradients", "check_batch_size",
    "cosine_at",
    "ema_update", "local_crop_size", "unpack_crops",
]
