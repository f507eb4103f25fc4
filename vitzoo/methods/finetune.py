"""Fine-tuning: a fresh classification head on any vitzoo model (any family, either backend), trained on an
image-classification dataset with the shared loop.

    python recipes/finetune.py --model deit-tiny --dataset digits --scratch --image-size 32 --epochs 20
    accelerate launch --multi_gpu --num_processes 2 -m vitzoo finetune --model deit-small --dataset beans

The run folder (--output-dir) gets args.json, metrics.jsonl, results.json, checkpoints/ and model/ (the best
model by validation accuracy); with a test split, model/ is scored once on test.
"""

from __future__ import annotations

from collections.abc import Sequence

import vitzoo
from vitzoo.data import eval_transform, make_loader, train_transform
from vitzoo.methods.base import Method, register
from vitzoo.objectives.classification import Classification, freeze_all_but_head
from vitzoo.training import smalldata
from vitzoo.training.arguments import FinetuneArguments, load_data, resolve_augmentation
from vitzoo.training.engine import start_run
from vitzoo.training.fit import fit
from vitzoo.training.objective import Callback

MODES = (
    "any registry family (ViT, DeiT, BEiT, DINO, MAE, DINOv2), local folder or timm model; --backend timm|transformers",
    "pretrained or --scratch (random init, --config-overrides for the architecture); --image-size interpolates positions",
    "RandAugment/TrivialAugment, mixup/cutmix, label smoothing (timm); EMA of weights",
    "AdamW with layer-wise LR decay and no decay on biases/norms/positions/tokens; warm-up + cosine",
    "gradient accumulation and clipping; bf16/fp16 autocast; --freeze-backbone for linear probing",
    "one process, DDP on GPUs or CPU (gloo), FSDP and DeepSpeed through accelerate configs",
    "atomic checkpoints, --resume auto (mid-epoch too)",
)


def train(args: FinetuneArguments, callbacks: Sequence[Callback] = ()) -> dict:
    """Fine-tuning on parsed arguments; `callbacks` watch the loop (see `vitzoo.training.objective.Callback`)."""
    accelerator, run = start_run(args, METHOD.recipe, METHOD.title, METHOD.modes)

    # ---- data: label names travel from the dataset into the model's config; a test split is kept apart
    splits = load_data(args, keep_test=True)
    small = smalldata.apply(args, "finetune", splits, announce=accelerator.is_main_process)  # --scratch, small data
    augmentation = resolve_augmentation(args, splits)  # the source's defaults (digits: no flips), flags over them
    hflip, crop_scale = augmentation["hflip"], augmentation["crop_scale"]

    # ---- model: a fresh head with the dataset's classes on any checkpoint
    zoo = vitzoo.load(args.model, task="classification", id2label=splits.id2label, pretrained=not args.scratch,
                      backend=args.backend, revision=args.revision, image_size=args.image_size,
                      config_overrides=args.config_overrides)
    if accelerator.is_main_process:
        weights = "RANDOM init (--scratch)" if args.scratch else "pretrained weights"
        print(f"model: {zoo.spec.name} ({zoo.backend}, {weights}), {zoo.num_params / 1e6:.2f}M parameters, "
              f"input {zoo.image_size}px; data: {splits.summary()}", flush=True)
        print(f"augmentation: flip {hflip}, crop scale >= {crop_scale}, auto-augment {args.auto_augment}, "
              f"mixup {args.mixup}, cutmix {args.cutmix}, label smoothing {args.label_smoothing}", flush=True)
    model = zoo.model.train()
    if args.freeze_backbone:
        freeze_all_but_head(model)
    train_loader = make_loader(
        splits.train, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
        num_workers=args.num_workers, in_memory=args.in_memory,
        transform=train_transform(zoo.spec.preprocessing, image_size=zoo.image_size, auto_augment=args.auto_augment,
                                  hflip=hflip, random_resized_crop=args.random_resized_crop, scale=(crop_scale, 1.0)),
    )
    evaluation = {"batch_size": args.eval_batch_size or 2 * args.batch_size, "shuffle": False,
                  "num_workers": args.num_workers, "in_memory": args.in_memory,
                  "transform": eval_transform(zoo.spec.preprocessing, zoo.image_size)}
    eval_loader = make_loader(splits.eval, **evaluation)  # validation: evaluated during training, chooses model/
    test_loader = make_loader(splits.test, **evaluation) if splits.test is not None else None  # scores it once

    # ---- objective: cross-entropy on the (mixed) labels; the best validation accuracy keeps model/
    objective = Classification(splits.num_classes, label_smoothing=args.label_smoothing, mixup=args.mixup,
                               cutmix=args.cutmix)

    # ---- the shared loop: resume, accumulation, evaluation, checkpoints, results.json, push
    return fit(args, accelerator=accelerator, run=run, zoo=zoo, model=model, objective=objective,
                  train_loader=train_loader, eval_loader=eval_loader, test_loader=test_loader, splits=splits,
                  metadata={"recipe": "finetune", "small_data_defaults": smalldata.record(small)}, callbacks=callbacks, description="training")


METHOD = register(Method(name="finetune", recipe="finetune", arguments=FinetuneArguments, title="fine-tuning",
                         modes=MODES, train=train, description=__doc__))
