"""`vitzoo bench`: speed against peers and against the machine's matrix-multiply peak."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from vitzoo.cli import COUNT, Number, Numbers
from vitzoo.cli.inference import add_precision_argument
from vitzoo.errors import BadInputError
from vitzoo.training.arguments import POSITIVE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure inference, training and data speed against peers and the machine's peak",
        description="For each model, batch size and image size, in one run on one device: images/s of "
        "ZooModel.predict (preprocessing included) at --precision, of the raw transformers and timm models "
        "at the same dtype and of transformers.pipeline with its defaults (fp32) and with dtype=torch.bfloat16, "
        "with ratios; the precision's top-1 agreement with fp32; batch-1 latency; training-step and "
        "data-pipeline images/s; and MFU against the peak matrix-multiply FLOP/s measured in the same run. "
        "Weights are random.",
    )
    parser.add_argument("--models", default="deit-tiny,deit-small", help="comma-separated registry names")
    parser.add_argument("--batch-sizes", type=Numbers(int, POSITIVE), default=[32], help="comma-separated batch sizes (default 32)")
    parser.add_argument("--image-sizes", type=Numbers(int, POSITIVE), default=[224], help="comma-separated image sizes (default 224)")
    add_precision_argument(parser, "ZooModel.predict, the raw forwards, the training step and the peak matmul "
                           "(the pipeline runs with its defaults and with dtype=torch.bfloat16)")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None,
                        help="deprecated: the old name of --precision, mapped to it")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--min-seconds", type=Number(float, POSITIVE), default=2.0, help="time each measurement for at least this long")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the transformers.pipeline peer")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step measurement")
    parser.add_argument("--no-data", action="store_true", help="skip the data-pipeline measurement")
    parser.add_argument("--data-dir", default=None,
                        help="image folder (one subfolder per class) whose files the data column decodes and augments "
                        "as the recipe does (default: 2,000 real JPEG photos built once in ~/.cache/vitzoo from the "
                        "photos scikit-learn and scikit-image ship)")
    parser.add_argument("--trainer-steps", type=COUNT, default=12,
                        help="on a CPU, run the fine-tuning recipe and transformers.Trainer (each with its defaults, on "
                        "digits at the bench's image size and batch) for this many steps and report recipe / Trainer; "
                        "the first quarter is untimed warm-up; 0 skips it (default 12)")
    parser.add_argument("--output", default=None, help="write every figure as JSON to this file")
    parser.add_argument("--markdown", default=None, help="write the table as markdown to this file")
    parser.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from vitzoo import bench
    from vitzoo.io import atomic_write_json, atomic_write_text, check_output_file
    from vitzoo.precision import dtype_name, resolve_precision
    from vitzoo.registry import get_spec

    if args.trainer_steps < 0 or args.trainer_steps == 1:
        raise BadInputError(f"--trainer-steps must be 0 (skip) or at least 2, got {args.trainer_steps}")
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    if not names:
        raise BadInputError("--models is empty")
    for name in names:
        get_spec(name)
    for option, path in (("--output", args.output), ("--markdown", args.markdown)):
        if path:
            check_output_file(path, option)
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise BadInputError(f"--data-dir {args.data_dir} is not a folder; give an image folder (one subfolder per "
                            "class), or leave it out to measure on the bundled real photos")
    if args.dtype is not None:
        if args.precision not in ("auto", args.dtype):
            raise BadInputError(f"--dtype {args.dtype} (deprecated) conflicts with --precision {args.precision}; "
                                "give --precision only")
        print(f"note: --dtype is deprecated; use --precision {args.dtype}", file=sys.stderr)
        args.precision = args.dtype
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = resolve_precision(args.precision, device)
    print(f"measuring the peak {dtype_name(dtype)} matmul on {device} ...", file=sys.stderr, flush=True)
    peak = bench.peak_matmul_flops(device, dtype)
    print(f"peak matmul: {peak / 1e9:.1f} GFLOP/s", file=sys.stderr, flush=True)
    results = []
    for name in names:
        for batch_size in args.batch_sizes:
            for image_size in args.image_sizes:
                print(f"bench {name} batch {batch_size} size {image_size} ...", file=sys.stderr, flush=True)
                results.append(bench.bench_model(
                    name, batch_size=batch_size, image_size=image_size, device=device, precision=args.precision,
                    compile=args.compile, channels_last=args.channels_last, min_seconds=args.min_seconds,
                    peak_flops=peak, include_pipeline=not args.no_pipeline, include_training=not args.no_train,
                    include_data=not args.no_data, trainer_steps=args.trainer_steps, data_dir=args.data_dir,
                ))
    table = bench.markdown_table(results)
    print(f"precision {args.precision} ({dtype_name(dtype)}); peak {dtype_name(dtype)} matmul on {device}: "
          f"{peak / 1e9:.1f} GFLOP/s; threads: {torch.get_num_threads()}")
    print(table)
    if args.output:
        atomic_write_json(args.output, {"peak_matmul_gflops": peak / 1e9, "device": str(device),
                                        "precision": args.precision, "dtype": dtype_name(dtype), "results": results})
    if args.markdown:
        atomic_write_text(args.markdown, table + "\n")
    return 0
