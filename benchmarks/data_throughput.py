"""Data pipeline speed on real JPEG photographs: vitzoo's training and eval transforms against timm's.

    python benchmarks/data_throughput.py                       # 2,000 photos, 224 px, deit-small's preprocessing
    python benchmarks/data_throughput.py --images 600 --repeats 5 --output data.json

The photos: `vitzoo.data.photos.photo_folder()` (built once in the user cache): random crops of the
photographs that ship with scikit-learn and scikit-image, longer side 300-800 px, JPEG quality 90,
one class folder per source photo.

Both sides run on the same files, in this one process, on one core (`torch.set_num_threads(1)`,
DataLoader with 0 workers: the figure is images/s per core; a loader with N workers scales it by
about N), with the same output: a uint8 batch of 3x224x224 images (normalisation happens later, on
the whole batch, in both libraries' training loops: vitzoo's `normalize_batch`, timm's prefetcher).

- vitzoo: `load_splits(folder)` + `train_transform` / `eval_transform` (deit-small's published
  preprocessing) + `make_loader`, exactly as the recipes build them.
- timm: `timm.data.ImageDataset(folder)` + `timm.data.create_transform(224, is_training=...,
  use_prefetcher=True)` (its uint8 path) with the same interpolation, crop scale/ratio and flip, and
  timm's `fast_collate`, in a torch DataLoader.

Decoding less: from a file, vitzoo decodes a JPEG at the smallest DCT scale (1/1..1/8, PIL's draft
mode) that keeps the region its transform uses at least as large as the output (the drawn crop in
training, the whole image in evaluation). The script also compares the eval transform from the file
against the same transform on the whole decoded image, and saves the first pairs as a figure.

Each side's rate is the median of `--repeats` timed passes over `--images` images, alternating the
two sides; the ratio is vitzoo / timm. The first pass of each is untimed (file cache, imports).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def vitzoo_loader(folder: str, train: bool, image_size: int, batch_size: int, model: str):
    from vitzoo.data import eval_transform, load_splits, make_loader, train_transform
    from vitzoo.registry import get_spec

    preprocessing = get_spec(model).preprocessing
    splits = load_splits(folder, seed=0)  # 80% held for training, as a recipe would
    transform = (train_transform(preprocessing, image_size=image_size) if train
                 else eval_transform(preprocessing, image_size))
    return make_loader(splits.train, batch_size=batch_size, shuffle=train, transform=transform, num_workers=0, seed=0)


def timm_loader(folder: str, train: bool, image_size: int, batch_size: int, model: str):
    import timm.data
    from timm.data.loader import fast_collate

    from vitzoo.registry import get_spec

    preprocessing = get_spec(model).preprocessing
    transform = timm.data.create_transform(
        image_size, is_training=train, use_prefetcher=True, interpolation=preprocessing.interpolation,
        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5, **eval_geometry(preprocessing))
    dataset = timm.data.ImageDataset(folder, transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=0,
                                       collate_fn=fast_collate, generator=torch.Generator().manual_seed(0))


def eval_geometry(preprocessing) -> dict:
    """timm's eval resize/crop arguments for the checkpoint's published pipeline (the same work)."""
    if preprocessing.resize_mode == "exact":  # resize to SxS, no crop
        return {"crop_pct": 1.0, "crop_mode": "squash"}
    crop = preprocessing.crop_size or preprocessing.resize_size
    return {"crop_pct": crop / preprocessing.resize_size, "crop_mode": "center"}


def draft_check(folder: str, image_size: int, model: str, figure: str | None, count: int = 64) -> dict:
    """The eval transform from the file (JPEG decoded at the DCT scale the resize allows) against the
    same transform on the whole decoded image: mean and largest absolute difference in grey levels,
    and a figure of the first 4 pairs (whole decode above, reduced decode below)."""
    import numpy as np
    from PIL import Image

    from vitzoo.data import eval_transform, load_splits
    from vitzoo.data.transforms import draft_factor
    from vitzoo.images import open_image, to_uint8_rgb
    from vitzoo.registry import get_spec

    transform = eval_transform(get_spec(model).preprocessing, image_size)
    reader = load_splits(folder, seed=0).train.reader
    means, largest, factors, pairs = [], 0.0, [], []
    for index in range(min(count, len(reader))):
        path = reader.describe(index)
        whole = transform(to_uint8_rgb(open_image(path)))
        with Image.open(path) as image:
            factors.append(draft_factor(*image.size, needed=transform.preprocessing.resize_size))
            reduced = transform.from_file(image)
        difference = (whole.float() - reduced.float()).abs()
        means.append(difference.mean().item())
        largest = max(largest, difference.max().item())
        if factors[-1] > 1 and len(pairs) < 4:
            pairs.append((whole, reduced))
    if figure and pairs:
        columns = [np.concatenate([a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy()], axis=0) for a, b in pairs]
        os.makedirs(os.path.dirname(os.path.abspath(figure)), exist_ok=True)
        Image.fromarray(np.concatenate(columns, axis=1)).save(figure)
    return {"images": len(means), "reduced": sum(f > 1 for f in factors), "mean_abs_difference": statistics.mean(means),
            "max_abs_difference": largest, "figure": figure if pairs else None}


def rate(loader, images: int) -> float:
    """Images/s of one pass over the first `images` images of `loader`."""
    done, start = 0, time.perf_counter()
    for batch, _labels in loader:
        assert batch.dtype == torch.uint8
        done += batch.shape[0]
        if done >= images:
            break
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--folder", default=None, help="a folder of class subfolders of photos (default: built once in the cache)")
    parser.add_argument("--count", type=int, default=2000, help="photos in the generated folder (default 2000)")
    parser.add_argument("--images", type=int, default=512, help="images per timed pass (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per side, alternating (default 3)")
    parser.add_argument("--image-size", type=int, default=224, help="output size (default 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--model", default="deit-small", help="registry name whose preprocessing is used (default deit-small)")
    parser.add_argument("--output", default=None, help="write the figures as JSON to this file")
    parser.add_argument("--figure", default=os.path.join(HERE, "results", "data-throughput", "draft_vs_full.png"),
                        help="where to save whole-decode vs reduced-decode eval images (top row vs bottom row)")
    args = parser.parse_args(argv)

    from vitzoo.data.photos import photo_folder

    torch.set_num_threads(1)
    folder = args.folder or photo_folder(count=args.count)
    results: dict = {"folder": folder, "images": args.images, "repeats": args.repeats, "image_size": args.image_size,
                     "model": args.model, "cores": 1, "date": time.strftime("%Y-%m-%d")}
    for kind, train in (("train", True), ("eval", False)):
        sides = {"vitzoo": vitzoo_loader, "timm": timm_loader}
        loaders = {name: build(folder, train, args.image_size, args.batch_size, args.model) for name, build in sides.items()}
        rates: dict[str, list[float]] = {name: [] for name in sides}
        for loader in loaders.values():
            rate(loader, args.batch_size)  # untimed: file cache, first-call costs
        for _ in range(args.repeats):
            for name, loader in loaders.items():
                rates[name].append(rate(loader, args.images))
        medians = {name: statistics.median(values) for name, values in rates.items()}
        results[kind] = {"vitzoo_images_per_second_per_core": medians["vitzoo"],
                         "timm_images_per_second_per_core": medians["timm"],
                         "ratio": medians["vitzoo"] / medians["timm"], "passes": rates}
    results["draft"] = draft_check(folder, args.image_size, args.model, args.figure)
    print(f"real photos: {folder} ({args.images} images per pass, median of {args.repeats}, 1 core, {args.image_size} px)")
    print(f"{'transform':<10} {'vitzoo img/s':>13} {'timm img/s':>11} {'vitzoo / timm':>14}")
    for kind in ("train", "eval"):
        row = results[kind]
        print(f"{kind:<10} {row['vitzoo_images_per_second_per_core']:>13.1f} {row['timm_images_per_second_per_core']:>11.1f} "
              f"{row['ratio']:>13.2f}x")
    draft = results["draft"]
    print(f"eval images decoded at 1/2 to 1/8 scale: {draft['reduced']} of {draft['images']}; against a whole decode: "
          f"mean |difference| {draft['mean_abs_difference']:.2f}, largest {draft['max_abs_difference']:.0f} grey levels"
          + (f"; pairs in {draft['figure']}" if draft["figure"] else ""))
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
