"""Pretraining throughput: MAE (the encoder sees only the visible patches) against SimMIM (the
encoder sees every patch, masked ones as a mask token) on the same encoder, batch and machine.

    python benchmarks/pretrain_throughput.py                          # ViT-S/16 at 224, batch 16
    python benchmarks/pretrain_throughput.py --image-size 64 --steps 4 --output bench.json

Both models are built by `vitzoo.load(..., task="pretraining", pretrained=False)` with the same
encoder architecture (`--hidden-size/--depth/--heads/--patch-size`), random init, nothing
downloaded: MAE is `ViTMAEForPreTraining` with its published decoder (512 wide, 8 blocks, unless
`--decoder-hidden-size/--decoder-depth`) at `--mask-ratio` 0.75; SimMIM is
`ViTForMaskedImageModeling` (linear pixel-shuffle decoder) with SimMIM's random masking of the
same share in 2x-patch units, exactly as `recipes/pretrain.py` runs them. Each timed step is one
full training step (forward, loss, backward, AdamW step) on the same random batch, fp32, in this
process; `--warmup` untimed steps first, then the two models alternate step by step so both see
the same machine load. Prints images/s of each and the MAE / SimMIM ratio; `--output` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

import vitzoo
from vitzoo.objectives.masking import default_mask_patch_size
from vitzoo.objectives.mim import MAEObjective, SimMIMObjective


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224, help="input size (default 224)")
    parser.add_argument("--patch-size", type=int, default=16, help="patch size (default 16)")
    parser.add_argument("--hidden-size", type=int, default=384, help="encoder width (default 384: ViT-S)")
    parser.add_argument("--depth", type=int, default=12, help="encoder blocks (default 12)")
    parser.add_argument("--heads", type=int, default=6, help="attention heads (default 6)")
    parser.add_argument("--decoder-hidden-size", type=int, default=512, help="MAE decoder width (paper: 512)")
    parser.add_argument("--decoder-depth", type=int, default=8, help="MAE decoder blocks (paper: 8)")
    parser.add_argument("--mask-ratio", type=float, default=0.75, help="share of patches masked, both methods (default 0.75)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per method first (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    return parser.parse_args()


def build(args: argparse.Namespace) -> dict:
    encoder = dict(hidden_size=args.hidden_size, num_hidden_layers=args.depth, num_attention_heads=args.heads,
                   intermediate_size=4 * args.hidden_size, patch_size=args.patch_size)
    decoder = dict(decoder_hidden_size=args.decoder_hidden_size, decoder_num_hidden_layers=args.decoder_depth,
                   decoder_num_attention_heads=max(1, args.decoder_hidden_size // 32),
                   decoder_intermediate_size=4 * args.decoder_hidden_size)
    mae = vitzoo.load("mae-base", task="pretraining", pretrained=False, image_size=args.image_size,
                      config_overrides={**encoder, **decoder}).model
    mae.config.mask_ratio, mae.config.norm_pix_loss = args.mask_ratio, True
    simmim = vitzoo.load("vit-base-in21k", task="pretraining", pretrained=False, image_size=args.image_size,
                         config_overrides={**encoder, "encoder_stride": args.patch_size}).model
    mask_patch = default_mask_patch_size(args.image_size, args.patch_size)
    return {
        "mae": (mae, MAEObjective(args.patch_size)),
        "simmim": (simmim, SimMIMObjective(args.image_size, args.patch_size, mask_patch, args.mask_ratio)),
    }


def main() -> dict:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = build(args)
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95)) for name, (model, _) in models.items()}
    pixels = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    seconds = {name: 0.0 for name in models}

    def step(name: str) -> float:
        model, objective = models[name]
        start = time.perf_counter()
        loss, _ = objective.loss(model, pixels)
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for name in models:
        models[name][0].train()
        for _ in range(args.warmup):
            step(name)
    for _ in range(args.steps):
        for name in models:
            seconds[name] += step(name)
    rates = {name: args.batch_size * args.steps / seconds[name] for name in models}
    encoder_params = sum(p.numel() for p in models["mae"][0].vit.parameters())
    results = {
        "mae_images_per_second": rates["mae"],
        "simmim_images_per_second": rates["simmim"],
        "mae_over_simmim": rates["mae"] / rates["simmim"],
        "settings": {**vars(args), "encoder_params": encoder_params,
                     "visible_patches_mae": int((args.image_size // args.patch_size) ** 2 * (1 - args.mask_ratio))},
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "device": platform.processor() or platform.machine()},
    }
    print(f"encoder {args.hidden_size}x{args.depth}, patch {args.patch_size}, {args.image_size}px, batch {args.batch_size}, "
          f"mask {args.mask_ratio}, {args.steps} timed steps each, {torch.get_num_threads()} threads")
    print(f"MAE    {rates['mae']:8.2f} images/s  (decoder {args.decoder_hidden_size}x{args.decoder_depth})")
    print(f"SimMIM {rates['simmim']:8.2f} images/s")
    print(f"MAE / SimMIM = {results['mae_over_simmim']:.2f}x")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
