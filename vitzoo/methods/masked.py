"""What the masked-image-modelling methods (mae.py, beit.py, simmim.py) share: one training function over
`vitzoo.objectives.mim`, the objective and the model's masking settings chosen by `--method`.
"""

from __future__ import annotations

from collections.abc import Sequence

import vitzoo
from vitzoo.data import eval_transform, make_loader, train_transform
from vitzoo.methods.base import Method, register
from vitzoo.objectives.masking import check_mask_ratio
from vitzoo.objectives.mim import masked_image_objective, pretraining_overrides
from vitzoo.training import smalldata
from vitzoo.training.arguments import PretrainArguments, load_data, resolve_augmentation
from vitzoo.training.engine import start_run
from vitzoo.training.fit import fit
from vitzoo.training.objective import Callback

# the three methods' banner
MODES = (
    "mae (ViTMAEForPreTraining, visible patches only), beit (blockwise masks, visual tokens), simmim (mask tokens, L1)",
    "any dataset source, labels ignored; pretrained weights or --scratch with --config-overrides",
    "AdamW (0.9, 0.95), lr = blr x total batch / 256, warm-up + cosine; accumulation, clipping, autocast",
    "one process, DDP on GPUs or CPU (gloo); atomic checkpoints, --resume auto; --push-to-hub",
)


def train(args: PretrainArguments, callbacks: Sequence[Callback] = ()) -> dict:
    """Masked image modelling on parsed arguments (`MAEArguments`, `BEiTArguments` or `SimMIMArguments`): the
    train function of the mae, beit and simmim methods, whose objective `masked_image_objective` picks."""
    check_mask_ratio(args.mask_ratio)  # bad input fails before anything is loaded
    accelerator, run = start_run(args, "pretrain", f"pretraining ({args.method})", MODES)

    # ---- data: only the images matter
    splits = load_data(args)
    hflip = resolve_augmentation(args, splits)["hflip"]
    small = smalldata.apply(args, "pretrain", splits, args.method, announce=accelerator.is_main_process)  # --scratch

    # ---- model: the method's pretraining class, its masking settings in the config
    zoo = vitzoo.load(args.model, task="pretraining", pretrained=not args.scratch, revision=args.revision,
                      image_size=args.image_size, config_overrides=pretraining_overrides(args))
    objective = masked_image_objective(args, zoo, splits, run, accelerator)
    if accelerator.is_main_process:
        weights = "RANDOM init (--scratch)" if args.scratch else "pretrained weights"
        print(f"model: {zoo.spec.name} as {type(zoo.model).__name__} ({weights}), {zoo.num_params / 1e6:.2f}M parameters, "
              f"input {zoo.image_size}px, patch {zoo.model.config.patch_size}, mask ratio {args.mask_ratio}; "
              f"data: {splits.summary()}", flush=True)
    model = zoo.model.train()
    train_loader = make_loader(splits.train, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
                               num_workers=args.num_workers, in_memory=args.in_memory,
                               transform=train_transform(zoo.spec.preprocessing, image_size=zoo.image_size, hflip=hflip,
                                                         scale=(args.crop_scale, 1.0)))
    eval_loader = make_loader(splits.eval, batch_size=args.eval_batch_size or 2 * args.batch_size, shuffle=False,
                              num_workers=args.num_workers, in_memory=args.in_memory,
                              transform=eval_transform(zoo.spec.preprocessing, zoo.image_size))

    # ---- optimisation: MAE's linear scaling rule and betas
    total_batch = args.batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    learning_rate = args.learning_rate if args.learning_rate is not None else args.blr * total_batch / 256
    accelerator.print(f"learning rate {learning_rate:.3g} (total batch {total_batch})")
    metadata = {"recipe": "pretrain", "method": args.method, "mask_ratio": args.mask_ratio, "learning_rate": learning_rate,
                "small_data_defaults": smalldata.record(small)}
    return fit(args, accelerator=accelerator, run=run, zoo=zoo, model=model, objective=objective,
                  train_loader=train_loader, eval_loader=eval_loader, splits=splits, metadata=metadata,
                  learning_rate=learning_rate, betas=(0.9, 0.95), callbacks=callbacks, description="pretraining")


def register_masked(name: str, arguments: type[PretrainArguments], rank: int, description: str) -> Method:
    """Register one masked-image-modelling method: its arguments and help over the shared training function."""
    return register(Method(name=name, recipe="pretrain", arguments=arguments, title=f"pretraining ({name})",
                           modes=MODES, train=train, description=description, rank=rank))
