"""DeiT distillation: a student (a distillation token and head where it has them, else logit distillation)
learns the labels and a frozen teacher's predictions.

    python recipes/distill.py --method deit --model deit-tiny-distilled --teacher runs/teacher/model \\
        --dataset digits --scratch --image-size 32 --epochs 20 --output-dir runs/distill

model/ is the best student by validation accuracy (both heads averaged); with a test split it is scored once on test.
"""

from __future__ import annotations

from collections.abc import Sequence

import vitzoo
from vitzoo.data import eval_transform, make_loader, train_transform
from vitzoo.methods.base import Method, register
from vitzoo.objectives import deit_distill
from vitzoo.training.arguments import DeiTArguments, load_data, resolve_augmentation
from vitzoo.training.engine import start_run
from vitzoo.training.fit import fit
from vitzoo.training.objective import Callback

MODES = (
    "--method deit: distillation token + head (distilled students) or logit distillation (any other student); "
    "teacher: registry name, model folder or timm model (CNNs too), frozen; --distill-type none|soft|hard, --alpha, "
    "--tau; --label-map; --cache-teacher-logits (runs without augmentation)",
    "one process, DDP on GPUs or CPU (gloo); atomic checkpoints, --resume auto",
)


def train(args: DeiTArguments, callbacks: Sequence[Callback] = ()) -> dict:
    """DeiT distillation on parsed arguments; `callbacks` watch the loop."""
    accelerator, run = start_run(args, METHOD.recipe, METHOD.title, METHOD.modes)
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


METHOD = register(Method(name="deit", recipe="distill", arguments=DeiTArguments, title="distillation (DeiT)",
                         modes=MODES, train=train, description=__doc__))
