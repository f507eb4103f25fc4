"""Datasets and input pipelines for the fine-tuning, distillation and pretraining recipes.

    >>> from vitzoo.data import load_splits, train_transform, eval_transform, make_loader
    >>> splits = load_splits("digits", seed=0)
    >>> splits.num_classes, len(splits.train) + len(splits.eval)
    (10, 1797)

`load_splits` reads a source ("digits", an image folder, a CSV/JSONL file, a Hub id or a
`datasets.DatasetDict`) into train/eval datasets of uint8 images; `train_transform` /
`eval_transform` build per-sample uint8 transforms; `make_loader` batches them, dropping
images that cannot be decoded (counted in `splits.skipped`); `normalize_batch` and
`mixup_fn` finish the batch on the accelerator.
"""

from vitzoo.data.dataset import LabeledImageDataset, TransformedDataset
from vitzoo.data.loader import collate_skip_bad, default_num_workers, make_loader, mixup_fn
from vitzoo.data.sources import Splits, encode_labels, load_splits, stratified_split
from vitzoo.data.transforms import EvalTransform, eval_transform, normalize_batch, train_transform

__all__ = [
    "EvalTransform",
    "LabeledImageDataset",
    "Splits",
    "TransformedDataset",
    "collate_skip_bad",
    "default_num_workers",
    "encode_labels",
    "eval_transform",
    "load_splits",
    "make_loader",
    "mixup_fn",
    "normalize_batch",
    "stratified_split",
    "train_transform",
]
