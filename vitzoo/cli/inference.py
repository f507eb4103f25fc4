"""`vitzoo predict` and `vitzoo embed`: a checkpoint applied to image files."""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from vitzoo.cli import POSITIVE_INT
from vitzoo.errors import BadInputError
from vitzoo.io import check_output_file
from vitzoo.precision import PRECISION_HELP, PRECISIONS


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every command that loads one model shares."""
    parser.add_argument("model", help="registry name (see `vitzoo list`), local model folder, or timm model name")
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="random weights from the registry's architecture instead of pretrained ones (nothing is read from the Hub)",
    )
    parser.add_argument(
        "--backend",
        choices=("transformers", "timm"),
        default=None,
        help="library to run the model with (default: transformers)",
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of the weights")
    parser.add_argument("--image-size", type=POSITIVE_INT, default=None, help="input size; position embeddings are interpolated")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps... (default: cuda if available, else cpu)"
    )
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="images per forward pass (memory stays flat in the number of images)")
    add_precision_argument(parser, "the forward passes")


def add_precision_argument(parser: argparse.ArgumentParser, applies_to: str) -> None:
    """--precision: the same choices and meaning on every command that runs models for inference."""
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help=f"compute precision of {applies_to}: {PRECISION_HELP} (default auto)")


def load_from_args(args: argparse.Namespace, task: str | None):
    from vitzoo.zoo import load

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    what = "random weights" if args.scratch else "the folder's weights" if os.path.isdir(args.model) else "pretrained weights"
    model = load(
        args.model,
        task=task,
        pretrained=not args.scratch,
        backend=args.backend,
        revision=args.revision,
        image_size=args.image_size,
        device=device,
        precision=args.precision,
    )
    print(f"loaded {args.model} ({what}) on {device}", file=sys.stderr, flush=True)
    if args.scratch:
        print(f"note: {model.spec.name} has RANDOM weights (--scratch); its outputs mean nothing yet", file=sys.stderr)
    return model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify images",
        description="Classify image files with a checkpoint that carries a classification head; "
        "prints the top-k labels with probabilities for each image.",
    )
    add_model_arguments(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads)")
    parser.add_argument("--top-k", type=POSITIVE_INT, default=5, help="how many labels per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every image's predictions")
    parser.set_defaults(func=run_predict)

    parser = subparsers.add_parser(
        "embed",
        help="write one embedding per image",
        description="Compute one embedding per image with the family's pooling (CLS token for ViT/DeiT/DINO/MAE/"
        "DINOv2, mean of patch tokens for BEiT) and write them to a file.",
    )
    add_model_arguments(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads)")
    parser.add_argument(
        "--output",
        required=True,
        help="output file: .npy (N x D array), .safetensors or .pt (tensor 'embeddings' and the image paths)",
    )
    parser.set_defaults(func=run_embed)


def check_images(paths: list[str]) -> None:
    """Every image argument names a file, checked before the model loads (a typo costs no loading)."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BadInputError(f"image file not found: {missing[0]}{more}; give paths of image files")


def run_predict(args: argparse.Namespace) -> int:
    check_images(args.images)
    model = load_from_args(args, task="classification")
    results = dict(zip(args.images, model.predict(args.images, top_k=args.top_k, batch_size=args.batch_size)))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for path, predictions in results.items():
        print(path)
        for item in predictions:
            print(f"  {item['score']:.4f}  {item['label']}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    extension = os.path.splitext(args.output)[1].lower()
    if extension not in (".npy", ".safetensors", ".pt"):
        raise BadInputError(f"--output must end in .npy, .safetensors or .pt, got {args.output!r}")
    check_images(args.images)
    check_output_file(args.output, "--output")
    model = load_from_args(args, task="features")
    embeddings = model.embed(args.images, batch_size=args.batch_size).cpu()
    from vitzoo.io import atomic_write_bytes

    if extension == ".npy":
        import io

        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, embeddings.numpy())
        atomic_write_bytes(args.output, buffer.getvalue())
    elif extension == ".safetensors":
        from safetensors.torch import save

        atomic_write_bytes(args.output, save({"embeddings": embeddings}, metadata={"images": json.dumps(args.images)}))
    else:
        import io

        buffer = io.BytesIO()
        torch.save({"embeddings": embeddings, "images": list(args.images)}, buffer)
        atomic_write_bytes(args.output, buffer.getvalue())
    print(f"wrote {embeddings.shape[0]} embeddings of size {embeddings.shape[1]} to {args.output}", file=sys.stderr)
    return 0
