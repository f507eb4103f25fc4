"""`vitzoo convert` and `vitzoo parity`: one checkpoint, two libraries, proven equal."""

from __future__ import annotations

import argparse
import json
import sys

from vitzoo.errors import BadInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between timm and transformers",
        description="Convert a checkpoint to the other library and save it in that library's own format: "
        "transformers (save_pretrained + preprocessor_config.json) or timm (save_for_hf: model.safetensors + "
        "config.json). Every weight is mapped by the family's key map; a missing, extra or misshapen key is an error.",
    )
    parser.add_argument(
        "source",
        metavar="SRC",
        help="registry name (see `vitzoo list`), timm model name (e.g. deit_small_distilled_patch16_224), "
        "or a local transformers / timm model folder",
    )
    parser.add_argument("--to", required=True, choices=("transformers", "timm"), help="the library to convert to")
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="folder to write, new or empty (an earlier convert output there is replaced, atomically); never the "
        "source folder, the current folder or one holding files vitzoo did not write",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="also replace another vitzoo output in DIR (a saved model folder, a Hub export); files vitzoo did not "
        "write are never replaced",
    )
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="random weights (nothing is read from the Hub), e.g. to try the converter",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run_convert)

    parser = subparsers.add_parser(
        "parity",
        help="compare one checkpoint's outputs under timm and transformers",
        description="Load each checkpoint with both backends (converting timm's weights to transformers when the "
        "two Hub repositories differ, or with --scratch) and print the largest absolute difference of logits, "
        "features and preprocessing (vitzoo's pipeline vs timm's own) on scikit-learn's sample photos.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="registry names with a timm equivalent")
    parser.add_argument("--all", action="store_true", help="every registered checkpoint with a timm equivalent")
    parser.add_argument("--scratch", action="store_true", help="random weights (nothing is read from the Hub)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run_parity)


def run_convert(args: argparse.Namespace) -> int:
    import os

    from vitzoo.convert.export import check_output, convert, print_summary

    check_output(args.source, args.output, args.overwrite)
    what = "its weights" if os.path.isdir(args.source) else "random weights" if args.scratch else "pretrained weights"
    summary = convert(args.source, args.to, args.output, scratch=args.scratch, overwrite=args.overwrite)
    # said after the work, so that a refusal is the only line a failed conversion prints
    print(f"converted {args.source} ({what}) to {args.to}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 0


def run_parity(args: argparse.Namespace) -> int:
    from vitzoo.convert.parity import convertible_names, format_table
    from vitzoo.convert.parity import run_parity as measure

    if args.all and args.names:
        raise BadInputError("give NAMEs or --all, not both")
    names = convertible_names() if args.all else args.names
    if not names:
        raise BadInputError("give at least one NAME, or --all")
    results = measure(names, scratch=args.scratch)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(format_table(results))
    return 1 if any(r.error for r in results) else 0
