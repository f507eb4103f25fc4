"""`vitzoo evaluate`: a frozen backbone judged by DINO's weighted k-NN or a linear probe (vitzoo.probe)."""

from __future__ import annotations

import argparse
import json
import os

from vitzoo.cli import POSITIVE_INT, SEED, Number
from vitzoo.cli.inference import add_precision_argument
from vitzoo.errors import BadInputError
from vitzoo.io import check_output_file
from vitzoo.training.arguments import POSITIVE

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "vitzoo", "features")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="k-NN or linear-probe accuracy of a model's frozen features",
        description="Embed a dataset's train and eval splits with a frozen model (features cached per "
        "model/dataset/split/size) and score them: weighted k-NN (DINO: T=0.07) or a linear probe. Prints JSON.",
    )
    parser.add_argument("model", help="registry name, model folder (e.g. a run's model/) or timm model name")
    parser.add_argument("--dataset", default="digits", help="'digits', an image folder, a CSV/JSONL or a Hub dataset id")
    parser.add_argument("--protocol", choices=("knn", "linear"), default="knn", help="knn: DINO's weighted k-NN on L2-normalised features; linear: a linear probe on frozen features")
    parser.add_argument("--ks", default="10,20,100,200", help="k values for k-NN (those above the train size are dropped)")
    parser.add_argument("--temperature", type=Number(float, POSITIVE), default=0.07, help="k-NN temperature")
    parser.add_argument("--epochs", type=POSITIVE_INT, default=100, help="linear probe epochs")
    parser.add_argument("--image-size", type=POSITIVE_INT, default=None, help="input size (positions interpolated)")
    parser.add_argument("--scratch", action="store_true", help="random init of the registry architecture (a baseline)")
    parser.add_argument("--config-overrides", default=None, help="architecture changes for --scratch")
    parser.add_argument("--backend", choices=("transformers", "timm"), default=None, help="library that runs the model (default: transformers)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=128, help="images per forward pass when extracting features")
    parser.add_argument("--max-train-samples", type=POSITIVE_INT, default=None, help="use at most this many training images")
    parser.add_argument("--max-eval-samples", type=POSITIVE_INT, default=None, help="use at most this many evaluation images")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the train/eval split and the linear probe")
    add_precision_argument(parser, "feature extraction (cached features are kept per precision)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where extracted features are kept")
    parser.add_argument("--no-cache", action="store_true", help="recompute the features")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    parser.set_defaults(func=run_evaluate)


def _ks(text: str) -> list[int]:
    try:
        ks = [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise BadInputError(f"--ks must be comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise BadInputError(f"--ks must name positive k values, got {text!r}")
    return ks


def evaluate(args: argparse.Namespace) -> dict:
    import torch

    import vitzoo
    from vitzoo.data import load_splits
    from vitzoo.precision import dtype_name
    from vitzoo.probe import knn_evaluate, linear_probe, split_features

    ks = _ks(args.ks)
    if args.output:
        check_output_file(args.output, "--output")
    torch.manual_seed(args.seed)  # --scratch: the same random init as a recipe run with this seed
    zoo = vitzoo.load(args.model, task="features", pretrained=not args.scratch, backend=args.backend,
                      image_size=args.image_size, config_overrides=args.config_overrides, precision=args.precision)
    splits = load_splits(args.dataset, seed=args.seed, max_train_samples=args.max_train_samples,
                         max_eval_samples=args.max_eval_samples)
    features = split_features(zoo, splits, batch_size=args.batch_size, cache_dir=None if args.no_cache else args.cache_dir,
                              dataset=args.dataset, progress=True, seed=args.seed, backend=zoo.backend)
    (train_x, train_y), (test_x, test_y) = features["train"], features["eval"]
    result = {"model": args.model, "dataset": args.dataset, "protocol": args.protocol, "backend": zoo.backend,
              "image_size": zoo.image_size, "precision": dtype_name(zoo.compute_dtype), "feature_dim": int(train_x.shape[1]),
              "train_samples": int(train_x.shape[0]), "eval_samples": int(test_x.shape[0])}
    if args.protocol == "knn":
        usable = [k for k in ks if k <= train_x.shape[0]]
        if not usable:
            raise BadInputError(f"every k in --ks exceeds the {train_x.shape[0]} train images")
        scores = knn_evaluate(train_x, train_y, test_x, test_y, ks=usable, temperature=args.temperature,
                              num_classes=splits.num_classes)
        result["temperature"] = args.temperature
        result["knn"] = {str(k): v for k, v in scores.items()}
        result["accuracy"] = scores[20]["accuracy"] if 20 in scores else scores[usable[0]]["accuracy"]
    else:
        probe = linear_probe(train_x, train_y, test_x, test_y, epochs=args.epochs, seed=args.seed,
                             num_classes=splits.num_classes)
        result["linear"] = {k: v for k, v in probe.items() if isinstance(v, (int, float))}
        result["accuracy"] = probe["accuracy"]
    return result


def run_evaluate(args: argparse.Namespace) -> int:
    from vitzoo.io import atomic_write_json

    result = evaluate(args)
    if args.output:
        atomic_write_json(args.output, result)
    print(json.dumps(result, indent=2))
    return 0
