"""Pretraining throughput: MAE (the encoder sees only the visible patches) against SimMIM (the
encoder sees every patch, masked ones as a mask token) on the same encoder, batch and machine.

    python benchmarks/pretrain_throughput.py                     # ViT-B and ViT-S encoders, paper and light decoders
    python benchmarks/pretrain_throughput.py --runs base/512x8 --batch-size 4 --output bench.json
    python benchmarks/pretrain_throughput.py --runs custom/256x2 --hidden-size 192 --depth 6 --heads 3 --image-size 64

Each entry of `--runs` is ENCODER/DECODER: ENCODER is tiny (192x12), small (384x12), base (768x12:
the mae-base architecture), large (1024x24) or custom (`--hidden-size/--depth/--heads`); DECODER is
MAE's decoder as WIDTHxBLOCKS (the paper's is 512x8). The default compares the paper's decoder and
a light 256x2 one behind ViT-B/16 and ViT-S/16 at 224 px.

Both models are built by `vitzoo.load(..., task="pretraining", pretrained=False)` with the same
encoder architecture, random init, nothing downloaded: MAE is `ViTMAEForPreTraining` at
`--mask-ratio` 0.75; SimMIM is `ViTForMaskedImageModeling` (linear pixel-shuffle decoder) with
SimMIM's random masking of the same share in 2x-patch units, exactly as `recipes/pretrain.py`
runs them. Each timed step is one full training step (forward, loss, backward, AdamW step) on the
same random batch, fp32, in this process; `--warmup` untimed steps first, then the two models
alternate step by step so both see the same machine load. Printed per entry: images/s of each,
the measured MAE / SimMIM ratio, and the ratio of forward FLOPs (SimMIM's over MAE's: what the
speed-up would be if time followed FLOPs). The 1-minute load average before and after is recorded,
since other processes on the machine skew absolute numbers (the alternation keeps the ratio fairer).

Why the ratio depends on the encoder: MAE saves encoder work (it runs on 25% of the tokens) but adds
a decoder that runs on all of them. The paper's 3x and more (Table 2) are for ViT-L/H encoders,
where a 512x8 decoder costs little next to the encoder; behind ViT-B the same decoder costs about as
much as the encoder saves on the visible quarter, and behind ViT-S it costs more.
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

ENCODERS = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
DEFAULT_RUNS = "base/512x8,base/256x2,small/512x8,small/256x2"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated ENCODER/WIDTHxBLOCKS entries (default {DEFAULT_RUNS})")
    parser.add_argument("--image-size", type=int, default=224, help="input size (default 224)")
    parser.add_argument("--patch-size", type=int, default=16, help="patch size (default 16)")
    parser.add_argument("--hidden-size", type=int, default=384, help="encoder width of a custom encoder")
    parser.add_argument("--depth", type=int, default=12, help="encoder blocks of a custom encoder")
    parser.add_argument("--heads", type=int, default=6, help="attention heads of a custom encoder")
    parser.add_argument("--mask-ratio", type=float, default=0.75, help="share of patches masked, both methods (default 0.75)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method and entry (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per method first (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    return parser.parse_args()


def parse_run(entry: str, args: argparse.Namespace) -> dict:
    try:
        encoder, decoder = entry.strip().split("/")
        width, blocks = (int(x) for x in decoder.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--runs entry {entry!r} is not ENCODER/WIDTHxBLOCKS, e.g. base/512x8") from None
    if encoder == "custom":
        hidden, depth, heads = args.hidden_size, args.depth, args.heads
    elif encoder in ENCODERS:
        hidden, depth, heads = ENCODERS[encoder]
    else:
        raise SystemExit(f"unknown encoder {encoder!r}: one of {', '.join([*ENCODERS, 'custom'])}")
    return {"name": entry.strip(), "encoder": encoder, "hidden_size": hidden, "depth": depth, "heads": heads,
            "decoder_hidden_size": width, "decoder_depth": blocks}


def build(run: dict, args: argparse.Namespace) -> dict:
    encoder = dict(hidden_size=run["hidden_size"], num_hidden_layers=run["depth"], num_attention_heads=run["heads"],
                   intermediate_size=4 * run["hidden_size"], patch_size=args.patch_size)
    width = run["decoder_hidden_size"]
    decoder = dict(decoder_hidden_size=width, decoder_num_hidden_layers=run["decoder_depth"],
                   decoder_num_attention_heads=max(1, width // 32), decoder_intermediate_size=4 * width)
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


def forward_flops(model: torch.nn.Module, objective, image_size: int) -> int:
    """Forward FLOPs of one image through the pretraining loss (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    from vitzoo.measure import _extra_formulas

    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    with torch.no_grad(), counter:
        objective.loss(model, torch.randn(1, 3, image_size, image_size))
    return int(counter.get_total_flops())


def measure(run: dict, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    models = build(run, args)
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

    flops = {name: forward_flops(model, objective, args.image_size) for name, (model, objective) in models.items()}
    load_before = os.getloadavg()[0]
    for name in models:
        models[name][0].train()
        for _ in range(args.warmup):
            step(name)
    for _ in range(args.steps):
        for name in models:
            seconds[name] += step(name)
    rates = {name: args.batch_size * args.steps / seconds[name] for name in models}
    mae = models["mae"][0]
    return {
        **run,
        "encoder_params": sum(p.numel() for p in mae.vit.parameters()),
        "decoder_params": sum(p.numel() for p in mae.decoder.parameters()),
        "mae_images_per_second": rates["mae"],
        "simmim_images_per_second": rates["simmim"],
        "mae_over_simmim": rates["mae"] / rates["simmim"],
        "mae_forward_gflops": flops["mae"] / 1e9,
        "simmim_forward_gflops": flops["simmim"] / 1e9,
        "flops_ratio": flops["simmim"] / flops["mae"],
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }


def main() -> dict:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    entries = [parse_run(entry, args) for entry in args.runs.split(",") if entry.strip()]
    grid = args.image_size // args.patch_size
    print(f"{args.image_size}px, patch {args.patch_size} ({grid * grid} patches, MAE encoder sees "
          f"{int(grid * grid * (1 - args.mask_ratio))}), batch {args.batch_size}, mask {args.mask_ratio}, "
          f"{args.steps} timed steps each, fp32, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"{'encoder/decoder':<16} {'enc params':>10} {'dec params':>10} {'MAE img/s':>10} {'SimMIM img/s':>12} "
          f"{'MAE/SimMIM':>10} {'FLOPs ratio':>11} {'load':>10}")
    results = []
    for entry in entries:
        r = measure(entry, args)
        results.append(r)
        print(f"{r['name']:<16} {r['encoder_params'] / 1e6:>9.1f}M {r['decoder_params'] / 1e6:>9.1f}M "
              f"{r['mae_images_per_second']:>10.2f} {r['simmim_images_per_second']:>12.2f} {r['mae_over_simmim']:>9.2f}x "
              f"{r['flops_ratio']:>10.2f}x {r['load_average_1min'][0]:>4.1f}-{r['load_average_1min'][1]:.1f}", flush=True)
    output = {
        "runs": results,
        "settings": {k: v for k, v in vars(args).items() if k not in ("output",)},
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "device": platform.processor() or platform.machine()},
    }
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(output, handle, indent=2)
    return output


if __name__ == "__main__":
    main()
