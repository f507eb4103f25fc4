"""`vitzoo plot RUN_DIR [RUN_DIR ...]`: the curves of one or more runs on shared axes."""

from __future__ import annotations

import argparse
import json
import os

from vitzoo.errors import BadInputError
from vitzoo.io import check_output_file


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="draw the training curves of one or more runs on shared axes",
        description="Read each run folder's metrics.jsonl and draw training loss and learning rate per step, the "
        "per-step entropies a method logs, and every evaluation metric per epoch; several runs share the axes, "
        "labelled by folder name, so two runs compare at a glance.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (each holds the metrics.jsonl a recipe wrote)")
    parser.add_argument("--output", default="curves.png", help="PNG file to write (default: curves.png)")
    parser.add_argument("--labels", default=None,
                        help="comma-separated names for the runs in the legend (default: the folder names)")
    parser.set_defaults(func=run)


def read_events(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise BadInputError(f"{run_dir} has no metrics.jsonl: pass run folders written by vitzoo finetune, distill or pretrain")
    with open(path) as handle:
        events = [json.loads(line) for line in handle if line.strip()]
    if not events:
        raise BadInputError(f"{path} is empty: the run logged nothing yet")
    return events


def run(args: argparse.Namespace) -> int:
    from vitzoo.plots import save_run_curves

    labels = args.labels.split(",") if args.labels else [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs):
        raise BadInputError(f"--labels names {len(labels)} runs, {len(args.runs)} were given")
    check_output_file(args.output, "--output")
    save_run_curves(args.output, [(label, read_events(run_dir)) for label, run_dir in zip(labels, args.runs)])
    print(f"curves of {len(args.runs)} run(s) in {args.output}")
    return 0
