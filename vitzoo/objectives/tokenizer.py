"""Visual tokenizers for BEiT: image -> one discrete code per patch, the targets of masked
image modelling.

The interface is two members, so any tokenizer plugs in (DALL-E's dVAE, a VQ-GAN, BEiT v2's
VQ-KD, ...):

    tokenizer.vocab_size -> int
    tokenizer.encode(pixel_values) -> LongTensor (batch, num_patches), row-major patch order

`KMeansTokenizer`, the default, works offline on any dataset: a k-means codebook fitted on the
dataset's own patches; a patch's code is its nearest centroid. What is clustered is set by
`normalisation`:

- "pixels" (default): the patch's normalised pixels as they are, so a code describes brightness,
  colour and shape together (k-means "visual words" on pixels, as in iGPT's colour clusters).
- "patch": each patch shifted to zero mean and scaled to unit variance (with a floor, `PATCH_EPS`,
  so that flat patches stay flat instead of having their faint noise blown up to unit variance),
  so codes describe shape and contrast only, like MAE's normalised-pixel target.

On small, low-detail images the per-patch standardisation throws away most of what a patch holds
(an upscaled 8x8 digit's 4x4 patches are mostly uniform shades: their mean is the content), and
with a tiny floor the flat background patches were scattered over dozens of codes at random,
targets no model can predict; hence "pixels" by default. The tokenizer is saved with the run
(`tokenizer/`: `codebook.safetensors` + `tokenizer.json`, normalisation included) and reloads
with `KMeansTokenizer.load`.

Compared with BEiT's DALL-E dVAE (8192 codes, trained on 250M images, a deep convolutional
encoder that sees context beyond one patch): the k-means codebook is a per-patch vector
quantiser with no context and no training beyond Lloyd iterations, so its codes are a
low-level target, close to predicting a clustered version of the pixels (like the k-means
"visual words" baselines in the BEiT / PeCo / iBOT ablations). It needs no download, fits in
seconds on small data, and makes the BEiT objective runnable and testable anywhere; for
ImageNet-scale pretraining plug in a learned tokenizer through the same interface.
"""

from __future__ import annotations

import json
import os
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file

from vitzoo.errors import BadInputError
from vitzoo.io import FolderKind, atomic_directory

MAX_VOCAB = 8192
MAX_FIT_PATCHES = 200_000
NORMALISATIONS = ("pixels", "patch")
PATCH_EPS = 0.01  # variance floor of "patch" standardisation, in normalised-pixel units (ImageNet std = 1)
CODEBOOK_FILE = "codebook.safetensors"
CONFIG_FILE = "tokenizer.json"
TOKENIZER_FOLDER = FolderKind("vitzoo k-means tokenizer", (CODEBOOK_FILE, CONFIG_FILE),
                              lambda folder: os.path.isfile(os.path.join(folder, CODEBOOK_FILE)))


class VisualTokenizer(Protocol):
    vocab_size: int

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor: ...


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, patch*patch*C), patches in row-major order (transformers' layout)."""
    batch, channels, height, width = pixel_values.shape
    if height % patch_size or width % patch_size:
        raise BadInputError(f"image size {height}x{width} is not a multiple of the patch size {patch_size}")
    x = pixel_values.reshape(batch, channels, height // patch_size, patch_size, width // patch_size, patch_size)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(batch, -1, patch_size * patch_size * channels)


def standardise(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def patch_features(pixel_values: torch.Tensor, patch_size: int, normalisation: str = "pixels") -> torch.Tensor:
    """(B, C, H, W) normalised images -> (B, L, D) the vectors a k-means tokenizer clusters."""
    if normalisation not in NORMALISATIONS:
        raise BadInputError(f"tokenizer normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}")
    patches = patchify(pixel_values.float(), patch_size)
    return standardise(patches, eps=PATCH_EPS) if normalisation == "patch" else patches


class KMeansTokenizer:
    """Nearest-centroid codes of patches (raw normalised pixels, or per-patch standardised)."""

    def __init__(self, codebook: torch.Tensor, patch_size: int, normalisation: str = "pixels") -> None:
        if normalisation not in NORMALISATIONS:
            raise BadInputError(f"tokenizer normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}")
        self.codebook = codebook.float()
        self.patch_size = patch_size
        self.normalisation = normalisation

    @property
    def vocab_size(self) -> int:
        return self.codebook.shape[0]

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = patch_features(pixel_values, self.patch_size, self.normalisation)
        codebook = self.codebook.to(patches.device)
        # argmin ||p - c||^2 = argmin (||c||^2 - 2 p.c): no (B, L, K, D) tensor
        scores = codebook.pow(2).sum(-1) - 2 * patches @ codebook.T
        return scores.argmin(dim=-1)

    @classmethod
    @torch.no_grad()
    def fit_images(
        cls, pixel_values: torch.Tensor, vocab_size: int, patch_size: int, normalisation: str = "pixels",
        iterations: int = 25, seed: int = 0,
    ) -> KMeansTokenizer:
        """Fit on the patches of (B, C, H, W) normalised images, as `encode` will see them."""
        features = patch_features(pixel_values, patch_size, normalisation)
        return cls.fit(features, vocab_size, patch_size, iterations=iterations, seed=seed, normalisation=normalisation)

    @classmethod
    @torch.no_grad()
    def fit(
        cls, patches: torch.Tensor, vocab_size: int, patch_size: int, iterations: int = 25, seed: int = 0,
        normalisation: str = "pixels",
    ) -> KMeansTokenizer:
        """Lloyd's k-means on (N, D) patch features (`patch_features` with the same `normalisation`),
        k-means++-style seeding; deterministic for a given seed. Empty clusters are re-seeded with
        the worst-fitted patches."""
        if not 2 <= vocab_size <= MAX_VOCAB:
            raise BadInputError(f"tokenizer vocabulary must be in [2, {MAX_VOCAB}], got {vocab_size}")
        data = patches.reshape(-1, patches.shape[-1]).float()
        if data.shape[0] < vocab_size:
            raise BadInputError(
                f"{data.shape[0]} patches cannot fit a {vocab_size}-code tokenizer; lower --tokenizer-vocab-size"
            )
        generator = torch.Generator().manual_seed(seed)
        if data.shape[0] > MAX_FIT_PATCHES:  # torch.multinomial's limit is 2^24 categories; plenty anyway
            data = data[torch.randperm(data.shape[0], generator=generator)[:MAX_FIT_PATCHES]]
        centroids = data[torch.randint(data.shape[0], (1,), generator=generator)]
        # k-means++ seeding, greedily in chunks (1 + log k candidates per draw is the usual trick; one suffices here)
        distance = torch.cdist(data, centroids).squeeze(1).pow(2)
        chosen = [centroids[0]]
        for _ in range(vocab_size - 1):
            weights = distance.clamp_min(0) + 1e-12
            index = torch.multinomial(weights, 1, generator=generator)
            chosen.append(data[index[0]])
            distance = torch.minimum(distance, (data - data[index[0]]).pow(2).sum(-1))
        centroids = torch.stack(chosen)
        for _ in range(iterations):
            scores = centroids.pow(2).sum(-1) - 2 * data @ centroids.T
            assign = scores.argmin(dim=-1)
            sums = torch.zeros_like(centroids).index_add_(0, assign, data)
            counts = torch.bincount(assign, minlength=vocab_size).to(data.dtype)
            empty = counts == 0
            centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
            if empty.any():
                error = (data - centroids[assign]).pow(2).sum(-1)
                centroids[empty] = data[error.topk(int(empty.sum())).indices]
        return cls(centroids, patch_size, normalisation)

    def save(self, directory: str) -> str:
        with atomic_directory(directory, TOKENIZER_FOLDER) as tmp:
            save_file({"codebook": self.codebook.contiguous()}, os.path.join(tmp, CODEBOOK_FILE))
            with open(os.path.join(tmp, CONFIG_FILE), "w") as handle:
                json.dump({"type": "kmeans", "vocab_size": self.vocab_size, "patch_size": self.patch_size,
                           "normalisation": self.normalisation}, handle, indent=2)
        return directory

    @classmethod
    def load(cls, directory: str) -> KMeansTokenizer:
        path = os.path.join(directory, CONFIG_FILE)
        if not os.path.isfile(path):
            raise BadInputError(f"{directory} is not a saved tokenizer (no {CONFIG_FILE})")
        with open(path) as handle:
            config = json.load(handle)
        return cls(load_file(os.path.join(directory, CODEBOOK_FILE))["codebook"], config["patch_size"],
                   config.get("normalisation", "patch"))


def check_vocab(tokenizer: VisualTokenizer, model_vocab_size: int) -> None:
    if tokenizer.vocab_size != model_vocab_size:
        raise BadInputError(
            f"the tokenizer has {tokenizer.vocab_size} codes but the BEiT model predicts {model_vocab_size}: "
            f"use --tokenizer-vocab-size {model_vocab_size}, or --scratch (the model then gets the tokenizer's "
            "vocabulary), or config override vocab_size to match"
        )
