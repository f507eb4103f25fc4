"""A folder of real JPEG photographs for data benchmarks, made from the photos that ship with
scikit-learn (`load_sample_images`) and, when installed, scikit-image (`skimage.data`).

    >>> from vitzoo.data.photos import photo_folder
    >>> folder = photo_folder()          # built once, then reused: ~/.cache/vitzoo/photos-2000-v1

Each file is a random crop of a source photo, resized so that its longer side is 300-800 px
(typical of user photo folders, and larger than a 224 px model input), saved as JPEG quality 90
in one class folder per source photo. Nothing is downloaded: every source ships inside the
installed packages. The folder is written atomically and keyed by its recipe, so a changed
recipe builds a new one.
"""

from __future__ import annotations

import os

import numpy as np

from vitzoo.errors import BadInputError
from vitzoo.io import FolderKind, atomic_directory

VERSION = "v1"
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def source_photos() -> dict[str, np.ndarray]:
    """name -> HxWx3 uint8 photograph, from the installed packages only."""
    from sklearn.datasets import load_sample_images

    bundle = load_sample_images()
    photos = {os.path.splitext(os.path.basename(name))[0]: image for name, image in zip(bundle.filenames, bundle.images)}
    try:
        import skimage.data
    except ImportError:
        return photos
    for name in SKIMAGE_PHOTOS:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - an image missing from this skimage build is simply left out
            continue
        if image.ndim == 3 and image.shape[2] == 3:
            photos[name] = image
    return photos


# a folder of class subfolders, finished when DONE is written last
PHOTO_FOLDER = FolderKind("vitzoo photo folder", ("*",), lambda folder: os.path.isfile(os.path.join(folder, "DONE")))


def default_location(count: int) -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "vitzoo", f"photos-{count}-{VERSION}")


def photo_folder(path: str | None = None, *, count: int = 2000, seed: int = 0,
                 sizes: tuple[int, int] = (300, 800), quality: int = 90) -> str:
    """The folder of `count` JPEGs at `path` (default: the user cache), built on first use."""
    from PIL import Image

    path = path or default_location(count)
    if os.path.isfile(os.path.join(path, "DONE")):
        return path
    photos = source_photos()
    if not photos:
        raise BadInputError("no source photographs found (scikit-learn's sample images are missing)")
    rng = np.random.default_rng(seed)
    names = sorted(photos)
    with atomic_directory(path, PHOTO_FOLDER) as tmp:
        for index in range(count):
            name = names[index % len(names)]
            photo = photos[name]
            height, width = photo.shape[:2]
            # a crop of 40-100% of each side, anywhere in the photo, then resized: longer side in `sizes`
            crop_h, crop_w = (int(side * rng.uniform(0.4, 1.0)) for side in (height, width))
            top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
            crop = Image.fromarray(photo[top : top + crop_h, left : left + crop_w])
            longer = int(rng.integers(sizes[0], sizes[1] + 1))
            scale = longer / max(crop_h, crop_w)
            crop = crop.resize((max(1, round(crop_w * scale)), max(1, round(crop_h * scale))), Image.Resampling.BICUBIC)
            folder = os.path.join(tmp, name)
            os.makedirs(folder, exist_ok=True)
            crop.save(os.path.join(folder, f"{index:05d}.jpg"), quality=quality)
        with open(os.path.join(tmp, "DONE"), "w") as handle:
            handle.write(f"{count} photos, seed {seed}, sizes {sizes}, quality {quality}\n")
    return path
