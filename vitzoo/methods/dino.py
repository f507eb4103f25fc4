"""DINO: self-distillation of a ViT backbone on unlabelled images (labels only feed the k-NN monitor); --scratch
on small data takes the small-data defaults (docs/small-data.md).

    python recipes/distill.py --method dino --model dino-vits16 --scratch --dataset digits --image-size 32 --time-budget 5m

model/ is the teacher backbone (`vitzoo.load(path, task="features")`); the run adds dino_curves.png (loss, teacher
entropy, k-NN accuracy from before the first step on).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

import vitzoo
from vitzoo.data import make_loader
from vitzoo.methods.base import Method, register
from vitzoo.objectives import dino
from vitzoo.training import smalldata
from vitzoo.training.arguments import DINOArguments, load_data, parse_scale, resolve_augmentation
from vitzoo.training.engine import start_run
from vitzoo.training.fit import fit
from vitzoo.training.objective import Callback

MODES = (
    "--method dino: multi-crop, EMA teacher, centring + sharpening, DINO head (see vitzoo/objectives/dino.py)",
    "one process, DDP on GPUs or CPU (gloo); atomic checkpoints, --resume auto",
)


def train(args: DINOArguments, callbacks: Sequence[Callback] = ()) -> dict:
    """DINO self-distillation of a backbone; labels are ignored (only the k-NN monitor reads them)."""
    accelerator, run = start_run(args, METHOD.recipe, METHOD.title, METHOD.modes)
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


METHOD = register(Method(name="dino", recipe="distill", arguments=DINOArguments, title="self-distillation (DINO)",
                         modes=MODES, train=train, description=__doc__, rank=1))
