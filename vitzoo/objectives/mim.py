"""The three masked-image-modelling objectives behind `recipes/pretrain.py`, one interface
(`MaskedImageModeling`, an objective of `vitzoo.training.fit`):

    objective.compute(model, pixels) -> (loss, {extra metrics})   # one training/eval batch
    objective.figure_rows(model, pixels) -> rows for reconstructions.png

Evaluation is the mean loss (and extras) over the eval split; model/ is the newest pretraining
model (encoder + head/decoder), saved at every evaluation. The sign of a stall: after a quarter of
the run, the training loss not below its first epoch's (`stalled_loss_sign`).

- `MAEObjective`: transformers' `ViTMAEForPreTraining` masks `mask_ratio` of the patches itself
  (per-sample random shuffle), its encoder sees only the visible ones, and its loss is the mean
  squared error on the masked patches only, of per-patch normalised pixels (`norm_pix_loss`).
- `BEiTObjective`: `BeitForMaskedImageModeling` with BEiT's blockwise masks; targets are the
  visual tokenizer's codes of the masked patches; also reports masked-token accuracy.
- `SimMIMObjective`: `ViTForMaskedImageModeling` (a mask token replaces masked patches in the
  encoder, a linear decoder + pixel shuffle); transformers' loss is the L1 error on masked pixels.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from vitzoo.errors import BadInputError
from vitzoo.objectives.masking import (
    BlockMaskingGenerator,
    check_mask_patch_size,
    check_mask_ratio,
    default_mask_patch_size,
    random_patch_mask,
)
from vitzoo.objectives.tokenizer import KMeansTokenizer, VisualTokenizer, check_vocab, patchify
from vitzoo.training.objective import Context, History, Objective, Sign

FIGURE = "reconstructions.png"
TOKENIZER_DIR = "tokenizer"
MODEL_TYPES = {"mae": ("vit_mae",), "beit": ("beit",), "simmim": ("vit", "deit")}

Rows = list[list[tuple[str, torch.Tensor]]]
FALL_SHARE = 0.98  # after a quarter of the run the training loss should be below this share of its first epoch's


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """(B, L, p*p*C) -> (B, C, H, W), inverse of `tokenizer.patchify`."""
    batch, length, _ = patches.shape
    grid = int(round(length**0.5))
    x = patches.reshape(batch, grid, grid, patch_size, patch_size, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(batch, channels, grid * patch_size, grid * patch_size)


def patch_mask_to_pixels(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, L) patch mask -> (B, 1, H, W) pixel mask."""
    grid = int(round(mask.shape[1] ** 0.5))
    m = mask.float().reshape(-1, 1, grid, grid)
    return m.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)


def _grey_out(pixels: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    return pixels * (1 - pixel_mask)  # 0 in normalised space = the dataset mean (grey)


class MaskedImageModeling(Objective):
    """What MAE, BEiT and SimMIM share in the loop: the loss from `compute`, evaluation as the mean
    of it over the eval split (from every process), reconstructions.png at the end, the stall sign."""

    title = "masked-image pretraining"  # as warnings name the method

    def __init__(self, figure_split: Any = None, figure_transform: Any = None, num_reconstructions: int = 0) -> None:
        self.figure_split, self.figure_transform, self.num_reconstructions = figure_split, figure_transform, num_reconstructions

    def compute(self, model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def figure_rows(self, model: torch.nn.Module, pixels: torch.Tensor) -> Rows:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, context: Context) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.compute(model, pixels)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, loader: Any, context: Context) -> dict[str, float]:
        accelerator = context.accelerator
        was_training = model.training
        model.eval()
        totals: dict[str, torch.Tensor] = {}
        count = torch.zeros((), device=accelerator.device)
        for images, _labels in loader:
            if images.shape[0] == 0:
                continue
            with accelerator.autocast():
                loss, extra = self.compute(model, context.pixels(images))
            n = images.shape[0]
            for key, value in {"loss": loss, **extra}.items():
                totals[key] = totals.get(key, torch.zeros((), device=accelerator.device)) + value.detach().float() * n
            count += n
        model.train(was_training)
        summed = accelerator.reduce(torch.stack([count, *totals.values()]), reduction="sum")
        return {key: (summed[i + 1] / summed[0].clamp_min(1)).item() for i, key in enumerate(totals)}

    def describe(self, metrics: dict[str, Any]) -> str:
        return ", ".join(f"eval {key} {value:.4f}" for key, value in metrics.items())

    def health(self, context: Context, history: History) -> list[Sign]:
        """From a quarter of the planned steps on (--time-budget may have planned them): the newest losses
        against those of the first epoch, or of the first eighth of a shorter run (the two never overlap)."""
        plan = context.plan
        if context.state.step < plan.total_steps / 4:
            return []
        sign = stalled_loss_sign(history, min(plan.steps_per_epoch, max(1, plan.total_steps // 8)), self.title)
        return [sign] if sign else []

    def summary(self, results: dict[str, Any], model_dir: str) -> str:
        return super().summary(results, model_dir).replace("; model in ", "; encoder in ")

    def finish(self, model: torch.nn.Module, context: Context) -> None:
        """reconstructions.png: a few eval images, masked, and what the model made of them."""
        from vitzoo.training.distributed import is_sharded

        model = context.accelerator.unwrap_model(model)
        # under FSDP every process must take part in the forward pass; only the main one draws
        if self.num_reconstructions <= 0 or not (context.accelerator.is_main_process or is_sharded(model)):
            return
        from vitzoo.plots import save_reconstructions

        split = self.figure_split
        images = [split[i][0] for i in range(min(self.num_reconstructions, len(split))) if split[i] is not None]
        if not images:
            return
        pixels = context.pixels(torch.stack([self.figure_transform(image) for image in images]).to(context.accelerator.device))
        was_training = model.training
        model.eval()
        rows = self.figure_rows(model, pixels)
        model.train(was_training)
        if context.accelerator.is_main_process:
            save_reconstructions(context.run.file(FIGURE), rows, context.preprocessing.mean, context.preprocessing.std)


def stalled_loss_sign(history: History, first: int, method: str) -> Sign | None:
    """A stall when the mean of the newest logged training losses after step `first` is not 2% below the
    mean of those logged up to step `first`."""
    start, now = history.first("loss", first), history.recent("loss", after=first)
    if not start or not now:
        return None
    before, loss = sum(start) / len(start), sum(now) / len(now)
    if loss < FALL_SHARE * before:
        return None
    return Sign("loss_not_falling", "stall",
                f"{method} stalled: training loss {loss:.4f} over the last {len(now)} logs is {loss / before:.1%} of its "
                f"mean over steps 1-{first}, {before:.4f}",
                "try another --blr or --learning-rate (too high never settles, too low never moves) or a longer "
                "--warmup-ratio (docs/pretraining.md)")


class MAEObjective(MaskedImageModeling):
    name = "mae"
    title = "MAE"

    def __init__(self, patch_size: int, **figure: Any) -> None:
        super().__init__(**figure)
        self.patch_size = patch_size

    def compute(self, model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        return model(pixel_values=pixels).loss, {}

    @torch.no_grad()
    def figure_rows(self, model: torch.nn.Module, pixels: torch.Tensor) -> Rows:
        out = model(pixel_values=pixels)
        predicted = out.logits.float()
        if model.config.norm_pix_loss:  # back from per-patch normalised pixels (MAE's demo does the same)
            target = patchify(pixels.float(), self.patch_size)
            predicted = predicted * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
        reconstruction = unpatchify(predicted, self.patch_size)
        pixel_mask = patch_mask_to_pixels(out.mask, self.patch_size)
        pasted = pixels * (1 - pixel_mask) + reconstruction * pixel_mask
        return [[("original", pixels[i]), ("masked", _grey_out(pixels, pixel_mask)[i]),
                 ("reconstruction", reconstruction[i]), ("+ visible", pasted[i])] for i in range(len(pixels))]


class SimMIMObjective(MaskedImageModeling):
    name = "simmim"
    title = "SimMIM"

    def __init__(self, image_size: int, patch_size: int, mask_patch_size: int, mask_ratio: float, **figure: Any) -> None:
        super().__init__(**figure)
        self.image_size, self.patch_size = image_size, patch_size
        self.mask_patch_size, self.mask_ratio = mask_patch_size, mask_ratio

    def mask(self, batch: int, device: torch.device) -> torch.Tensor:
        return random_patch_mask(batch, self.image_size, self.patch_size, self.mask_patch_size, self.mask_ratio,
                                 device=device)

    def compute(self, model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        out = model(pixel_values=pixels, bool_masked_pos=self.mask(pixels.shape[0], pixels.device))
        return out.loss, {}

    @torch.no_grad()
    def figure_rows(self, model: torch.nn.Module, pixels: torch.Tensor) -> Rows:
        mask = self.mask(pixels.shape[0], pixels.device)
        reconstruction = model(pixel_values=pixels, bool_masked_pos=mask).reconstruction.float()
        pixel_mask = patch_mask_to_pixels(mask, self.patch_size)
        pasted = pixels * (1 - pixel_mask) + reconstruction * pixel_mask
        return [[("original", pixels[i]), ("masked", _grey_out(pixels, pixel_mask)[i]),
                 ("reconstruction", reconstruction[i]), ("+ visible", pasted[i])] for i in range(len(pixels))]


class BEiTObjective(MaskedImageModeling):
    name = "beit"
    title = "BEiT"

    def __init__(self, grid: int, patch_size: int, mask_ratio: float, tokenizer: VisualTokenizer,
                 min_block_patches: int = 4, **figure: Any) -> None:
        super().__init__(**figure)
        self.generator = BlockMaskingGenerator.from_ratio(grid, mask_ratio, min_num_patches=min_block_patches)
        self.patch_size = patch_size
        self.tokenizer = tokenizer

    def _forward(self, model, pixels):
        mask = self.generator.batch(pixels.shape[0]).to(pixels.device)
        codes = self.tokenizer.encode(pixels)
        out = model(pixel_values=pixels, bool_masked_pos=mask, labels=codes[mask])
        return out, mask, codes

    def compute(self, model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        out, mask, codes = self._forward(model, pixels)
        correct = (out.logits[mask].argmax(-1) == codes[mask]).float()
        return out.loss, {"masked_token_accuracy": correct.mean()}

    @torch.no_grad()
    def figure_rows(self, model: torch.nn.Module, pixels: torch.Tensor) -> Rows:
        out, mask, codes = self._forward(model, pixels)
        correct = out.logits.argmax(-1) == codes
        grid = int(round(mask.shape[1] ** 0.5))
        # accuracy map: grey = visible, green = masked and predicted right, red = masked and wrong
        colours = torch.full((*mask.shape, 3), 0.6)
        colours[mask & correct] = torch.tensor([0.1, 0.7, 0.1])
        colours[mask & ~correct] = torch.tensor([0.85, 0.1, 0.1])
        colours = colours.reshape(-1, grid, grid, 3)
        pixel_mask = patch_mask_to_pixels(mask, self.patch_size)
        rows = []
        for i in range(len(pixels)):
            accuracy = correct[i][mask[i]].float().mean().item()
            rows.append([("original", pixels[i]), ("mask", _grey_out(pixels, pixel_mask)[i]),
                         (f"token accuracy ({accuracy:.0%})" if i == 0 else "token accuracy", colours[i].cpu())])
        return rows


# --------------------------------------------------------------------------- building one from arguments
def pretraining_overrides(args: Any) -> dict[str, Any] | None:
    """--config-overrides plus the method's own architecture needs (MAE's decoder flags; for scratch
    models SimMIM's decoder stride, BEiT's vocabulary, and the family's own needs: BEiT's absolute positions)."""
    from vitzoo.registry import family_for_model_type
    from vitzoo.zoo import parse_overrides

    overrides = parse_overrides(args.config_overrides)
    if args.method == "mae":
        decoder = {"decoder_hidden_size": args.decoder_hidden_size, "decoder_num_hidden_layers": args.decoder_depth}
        overrides.update({key: value for key, value in decoder.items() if value is not None})
    if "decoder_hidden_size" in overrides:
        width = overrides["decoder_hidden_size"]
        overrides.setdefault("decoder_intermediate_size", 4 * width)
        overrides.setdefault("decoder_num_attention_heads", max(1, width // 64) if width % 64 == 0 else 1)
    if not args.scratch:
        return overrides or None
    if args.method == "simmim":  # the pixel-shuffle decoder must undo exactly one patch
        from vitzoo.registry import get_spec, is_registered

        patch = overrides.get("patch_size") or (get_spec(args.model).architecture.patch_size if is_registered(args.model) else None)
        if patch:
            overrides.setdefault("encoder_stride", patch)
    if args.method == "beit" and args.tokenizer is None:
        overrides.setdefault("vocab_size", args.tokenizer_vocab_size)
    # what the families of the models this method pretrains need of a new model (BEiT: absolute positions)
    for model_type in MODEL_TYPES.get(args.method, ()):
        family = family_for_model_type(model_type)
        for key, value in (family.scratch_pretraining_overrides(args.method) if family else {}).items():
            overrides.setdefault(key, value)
    return overrides


def masked_image_objective(args: Any, zoo: Any, splits: Any, run: Any, accelerator: Any) -> MaskedImageModeling:
    """The objective `args.method` names, for the pretraining model in `zoo`, checked first: the model
    type fits the method, the image is whole patches, SimMIM's masking unit fits, BEiT's tokenizer
    (given, the run's own on resume, or fitted on the training images now) matches the vocabulary."""
    from vitzoo.data import eval_transform

    check_mask_ratio(args.mask_ratio)
    config = zoo.model.config
    if config.model_type not in MODEL_TYPES[args.method]:
        raise BadInputError(f"--method {args.method} needs a {' or '.join(MODEL_TYPES[args.method])} model; "
                            f"{args.model} is {config.model_type}")
    patch, size = int(config.patch_size), zoo.image_size
    if size % patch:
        raise BadInputError(f"image size {size} is not a multiple of the patch size {patch}")
    transform = eval_transform(zoo.spec.preprocessing, size)
    figure = {"figure_split": splits.eval, "figure_transform": transform, "num_reconstructions": args.num_reconstructions}
    if args.method == "mae":
        config.mask_ratio, config.norm_pix_loss = args.mask_ratio, args.norm_pix_loss
        return MAEObjective(patch, **figure)
    if args.method == "simmim":
        mask_patch = args.mask_patch_size or default_mask_patch_size(size, patch)
        check_mask_patch_size(size, patch, mask_patch)
        return SimMIMObjective(size, patch, mask_patch, args.mask_ratio, **figure)
    tokenizer = beit_tokenizer(args, splits.train, transform, zoo.spec.preprocessing, patch, config.vocab_size, run, accelerator)
    return BEiTObjective(size // patch, patch, args.mask_ratio, tokenizer, args.min_block_patches, **figure)


def beit_tokenizer(args: Any, train_split: Any, transform: Any, preprocessing: Any, patch: int, model_vocab: int,
                   run: Any, accelerator: Any) -> KMeansTokenizer:
    """--tokenizer DIR, the run's own tokenizer/ (resume), or a k-means codebook fitted on the data
    (on the main process, then read by all) -- checked against the model's vocabulary first."""
    from vitzoo.training.engine import prepare_pixels

    path = args.tokenizer or run.file(TOKENIZER_DIR)
    if args.tokenizer is None and not os.path.isdir(path):
        if not 2 <= args.tokenizer_vocab_size <= 8192:
            raise BadInputError(f"--tokenizer-vocab-size must be in [2, 8192], got {args.tokenizer_vocab_size}")
        if args.tokenizer_vocab_size != model_vocab:
            check_vocab(KMeansTokenizer(torch.zeros(args.tokenizer_vocab_size, 1), patch), model_vocab)
        if accelerator.is_main_process:
            patches = []
            for index in range(min(len(train_split), args.tokenizer_images)):
                item = train_split[index]
                if item is not None:
                    patches.append(transform(item[0]))
            pixels = prepare_pixels(torch.stack(patches), preprocessing, False)
            tokenizer = KMeansTokenizer.fit_images(pixels, args.tokenizer_vocab_size, patch,
                                                   normalisation=args.tokenizer_normalisation,
                                                   iterations=args.tokenizer_iterations, seed=args.seed)
            tokenizer.save(path)
            print(f"tokenizer: k-means codebook of {tokenizer.vocab_size} codes ({tokenizer.normalisation}) "
                  f"fitted on {pixels.shape[0]} images "
                  f"({pixels.shape[0] * (pixels.shape[-1] // patch) ** 2} patches), saved in {path}", flush=True)
        accelerator.wait_for_everyone()
    tokenizer = KMeansTokenizer.load(path)
    check_vocab(tokenizer, model_vocab)
    if tokenizer.patch_size != patch:
        raise BadInputError(f"the tokenizer in {path} codes {tokenizer.patch_size}px patches, the model uses {patch}px")
    return tokenizer
