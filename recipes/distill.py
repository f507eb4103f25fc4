"""Distillation: DeiT's teacher-to-student distillation, or DINO's self-distillation.

    # DeiT: a distilled student (distillation token + head) learns from any teacher
    python recipes/distill.py --method deit --model deit-tiny-distilled --teacher runs/teacher/model \\
        --dataset digits --scratch --image-size 32 --epochs 20 --output-dir runs/distill

    # DINO: self-distillation of a ViT backbone on unlabelled images (labels only feed the k-NN monitor);
    # --scratch on small data takes the small-data defaults (docs/small-data.md)
    python recipes/distill.py --method dino --model dino-vits16 --scratch --dataset digits --image-size 32 --time-budget 5m

`vitzoo distill ...` runs this same code; `accelerate launch` runs it on N processes. The run folder
is the fine-tuning recipe's, model/ being the best student (DeiT; both heads averaged) or the teacher
backbone (DINO: `vitzoo.load(path, task="features")`); DINO adds dino_curves.png (loss, teacher
entropy, k-NN accuracy from before the first step on).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

import vitzoo
from vitzoo.data import eval_transform, make_loader, train_transform
from vitzoo.objectives import deit_distill, dino
from vitzoo.training import smalldata
from vitzoo.training.arguments import DeiTArguments, DINOArguments, load_data, parse, parse_scale, resolve_augmentation
from vitzoo.training.engine import start_run
from vitzoo.training.fit import fit
from vitzoo.training.objective import Callback

MODES = [
    "--method deit: distillation token + head (distilled students) or logit distillation (any other student); "
    "teacher: registry name, model folder or timm model (CNNs too), frozen; --distill-type none|soft|hard, --alpha, "
    "--tau; --label-map; --cache-teacher-logits (runs without augmentation)",
    "--method dino: multi-crop, EMA teacher, centring + sharpening, DINO head (see vitzoo/objectives/dino.py)",
    "one process, DDP on GPUs or CPU (gloo); atomic checkpoints, --resume auto",
]


def main(argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    args = parse("distill", argv, description=__doc__)
    return train_dino(args, callbacks) if args.method == "dino" else train_deit(args, callbacks)


def train_deit(args: DeiTArguments, callbacks: Sequence[Callback] = ()) -> dict:
    accelerator, run = start_run(args, "distillation (DeiT)", MODES)
    splits = load_data(args, keep_test=True)  # a test split is kept apart: select on validation, report on test
    augmentation = resolve_augmentation(args, splits)  # the source's defaults (digits: no flips), flags over them
    hflip, crop_scale = augmentation["hflip"], augmentation["crop_scale"]
    caching = args.cache_teacher_logits and args.distill_type != "none"
    if caching:  # before any model is built: cached logits must belong to the images trained on
        deit_distill.check_cacheable(random_resized_crop=args.random_resized_crop, hflip=hflip, auto_augment=args.auto_augment,
                        mixup=args.mixup, cutmix=args.cutmix)

    # ---- student, then teacher: label sets checked before any training
    zoo = vitzoo.load(args.model, task="classification", id2label=splits.id2label, pretrained=not args.scratch,
                      backend=args.backend, revision=args.revision, image_size=args.image_size,
                      config_overrides=args.config_overrides)
    teacher = None
    if args.distill_type != "none" and args.teacher is not None:
        teacher = deit_distill.FrozenTeacher.load(args.teacher, zoo, splits.id2label, scratch=args.teacher_scratch,
                                     backend=args.teacher_backend, label_map=args.label_map)
    model = zoo.model.train()
    token = deit_distill.has_distillation_token(model)
    deit_distill.enable_distilled_training(model)
    if accelerator.is_main_process:
        weights = "RANDOM init (--scratch)" if args.scratch else "pretrained weights"
        kind = "distillation token" if token else "logit distillation (no distillation token)"
        print(f"student: {zoo.spec.name} ({zoo.backend}, {weights}), {zoo.num_params / 1e6:.2f}M parameters, "
              f"input {zoo.image_size}px, {kind}; data: {splits.summary()}", flush=True)
        if teacher is not None:
            print(f"teacher: {teacher.describe()}; distill type {args.distill_type}, alpha {args.alpha}, tau {args.tau}",
                  flush=True)
    transform = train_transform(zoo.spec.preprocessing, image_size=zoo.image_size, auto_augment=args.auto_augment,
                                hflip=hflip, random_resized_crop=args.random_resized_crop, scale=(crop_scale, 1.0))
    # with cached logits each batch also carries its samples' indices: labels come as (label, index) pairs
    train_set = deit_distill.IndexedDataset(splits.train) if caching else splits.train
    eval_batch_size = args.eval_batch_size or 2 * args.batch_size
    train_loader = make_loader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
                               num_workers=args.num_workers, in_memory=args.in_memory, transform=transform)
    evaluation = {"batch_size": eval_batch_size, "shuffle": False, "num_workers": args.num_workers,
                  "in_memory": args.in_memory, "transform": eval_transform(zoo.spec.preprocessing, zoo.image_size)}
    eval_loader = make_loader(splits.eval, **evaluation)
    test_loader = make_loader(splits.test, **evaluation) if splits.test is not None else None

    # ---- objective: the class head learns the labels, the distillation head the teacher (live or cached)
    cache_from = make_loader(train_set, batch_size=eval_batch_size, shuffle=False, num_workers=args.num_workers,
                             in_memory=args.in_memory, transform=transform) if caching else None
    objective = deit_distill.DeiTDistillation(splits.num_classes, teacher, distill_type=args.distill_type, alpha=args.alpha,
                                 tau=args.tau, label_smoothing=args.label_smoothing, mixup=args.mixup,
                                 cutmix=args.cutmix, cache_from=cache_from)
    metadata = {"recipe": "distill", "method": "deit", "teacher": args.teacher, "distill_type": args.distill_type,
                "distillation_token": token}
    return fit(args, accelerator=accelerator, run=run, zoo=zoo, model=model, objective=objective,
                  train_loader=train_loader, eval_loader=eval_loader, test_loader=test_loader, splits=splits,
                  metadata=metadata, callbacks=callbacks, description="distilling")


def train_dino(args: DINOArguments, callbacks: Sequence[Callback] = ()) -> dict:
    """DINO self-distillation of a backbone; labels are ignored (only the k-NN monitor reads them)."""
    accelerator, run = start_run(args, "self-distillation (DINO)", MODES)
    splits = load_data(args)
    small = smalldata.apply(args, "distill", splits, "dino", announce=accelerator.is_main_process)  # --scratch, small data
    zoo = vitzoo.load(args.model, task="features", pretrained=not args.scratch, backend="transformers",
                      revision=args.revision, image_size=args.image_size, config_overrides=args.config_overrides)
    arch = zoo.spec.architecture
    global_size, local_size = dino.scaled_sizes(zoo.image_size, arch.patch_size, args.local_crop_size)
    dino.check_batch_size(args.batch_size)  # a warning below 16 images per process
    hflip = resolve_augmentation(args, splits)["hflip"]

    # ---- the student: backbone + DINO head (its EMA teacher is the objective's)
    head = dino.DINOHead(arch.hidden_size, args.out_dim, args.head_hidden_dim, args.head_bottleneck_dim,
                         batch_norm=args.head_batch_norm, norm_last_layer=args.norm_last_layer)
    student = dino.DINOModel(zoo.model.train(), head, zoo.family, arch, zoo.image_size)
    if head.has_batch_norm and accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)
    if accelerator.is_main_process:
        weights = "RANDOM init (--scratch)" if args.scratch else "pretrained weights"
        print(f"backbone: {zoo.spec.name} ({weights}), {zoo.num_params / 1e6:.2f}M parameters; crops: 2 x {global_size}px "
              f"+ {args.local_crops} x {local_size}px; head out_dim {args.out_dim}; data: {splits.summary()} (labels ignored)",
              flush=True)
    train_loader = make_loader(
        splits.train, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
        num_workers=args.num_workers, in_memory=args.in_memory,
        transform=dino.MultiCrop(global_size, local_size, args.local_crops,
                                 parse_scale(args.global_crop_scale, "--global-crop-scale"),
                                 parse_scale(args.local_crop_scale, "--local-crop-scale"), hflip),
    )
    objective = dino.DINO(
        student, zoo, splits, global_size=global_size, local_size=local_size, local_crops=args.local_crops,
        out_dim=args.out_dim, epochs=args.epochs, momentum_teacher=args.momentum_teacher, teacher_temp=args.teacher_temp,
        warmup_teacher_temp=args.warmup_teacher_temp, warmup_teacher_temp_epochs=args.warmup_teacher_temp_epochs,
        student_temp=args.student_temp, center_momentum=args.center_momentum, weight_decay=args.weight_decay,
        weight_decay_end=args.weight_decay_end, freeze_last_layer=args.freeze_last_layer,
        eval_batch_size=args.eval_batch_size or 2 * args.batch_size,
    )
    return fit(args, accelerator=accelerator, run=run, zoo=zoo, model=student, objective=objective,
                  train_loader=train_loader, splits=splits, callbacks=callbacks, description="DINO",
                  metadata={"recipe": "distill", "method": "dino", "small_data_defaults": smalldata.record(small)})


if __name__ == "__main__":  # as `vitzoo distill`: one line and exit code 2 for bad input, 130/143 when interrupted
    from vitzoo.cli import main as command

    sys.exit(command(["distill", *sys.argv[1:]]))
