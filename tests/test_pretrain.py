"""The pretraining recipe (MAE, BEiT, SimMIM) on tiny models and the bundled digits, plus its pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import vitzoo
from vitzoo import methods
from vitzoo.objectives.masking import BlockMaskingGenerator, random_patch_mask
from vitzoo.objectives.tokenizer import KMeansTokenizer, patchify

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"
MODEL = {"mae": "mae-base", "beit": "beit-base-pt22k", "simmim": "vit-base-in21k"}
TINY = ["--scratch", "--config-overrides", ARCH, "--image-size", "16", "--batch-size", "16", "--num-workers", "0",
        "--max-train-samples", "64", "--max-eval-samples", "32", "--log-steps", "1", "--learning-rate", "1e-3",
        "--num-reconstructions", "2"]
METHOD_FLAGS = {"mae": ["--decoder-hidden-size", "32", "--decoder-depth", "1"],
                "beit": ["--tokenizer-vocab-size", "16", "--tokenizer-images", "64", "--tokenizer-iterations", "5"],
                "simmim": []}


def run(output: str, method: str, *extra: str) -> dict:
    return methods.run("pretrain", ["--method", method, "--model", MODEL[method], *TINY, *METHOD_FLAGS[method],
                          "--output-dir", output, *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each method trained for one epoch (4 steps) once; {method: (results, run folder)}."""
    out = {}
    for method in ("mae", "beit", "simmim"):
        folder = str(tmp_path_factory.mktemp(method))
        out[method] = (run(folder, method, "--epochs", "1"), folder)
    return out


def tiny_mae(mask_ratio=0.75):
    zoo = vitzoo.load("mae-base", task="pretraining", pretrained=False, image_size=16, config_overrides=ARCH + (
        ",decoder_hidden_size=32,decoder_num_hidden_layers=1,decoder_num_attention_heads=2,decoder_intermediate_size=64"))
    zoo.model.config.mask_ratio, zoo.model.config.norm_pix_loss = mask_ratio, True
    return zoo.model.eval()


@pytest.mark.parametrize("ratio", [0.75, 0.5])
def test_mae_masks_requested_share_and_loss_uses_masked_patches_only(ratio):
    torch.manual_seed(0)
    model = tiny_mae(ratio)
    pixels = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        out = model(pixel_values=pixels)
    assert (out.mask.sum(1) == round(16 * ratio)).all()  # exactly the requested share of 16 patches
    # encoder saw only the visible patches (+ CLS)
    with torch.no_grad():
        hidden = model.vit(pixel_values=pixels).last_hidden_state
    assert hidden.shape[1] == 1 + 16 - round(16 * ratio)
    target = patchify(pixels, 4)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = ((out.logits - target) ** 2).mean(-1)
    by_hand = (per_patch * out.mask).sum() / out.mask.sum()
    assert torch.allclose(out.loss, by_hand, atol=1e-6)
    assert not torch.allclose(out.loss, per_patch.mean(), atol=1e-4)  # the visible ones do not count


def test_scratch_models_get_positions_and_tokens():
    """transformers 5 builds ViTMAE with zero (frozen) sin-cos tables and zero tokens: no model could
    tell masked positions apart. Scratch builds get MAE's sin-cos tables (transformers' own layout)."""
    model = tiny_mae()
    embeddings, decoder = model.vit.embeddings, model.decoder
    positions, decoder_positions = embeddings.position_embeddings.clone(), decoder.decoder_pos_embed.clone()
    for parameter in [*embeddings.parameters(), *decoder.parameters(), embeddings.patch_embeddings.projection]:
        parameter._is_hf_initialized = False
    with torch.no_grad():
        embeddings.position_embeddings.zero_()
        decoder.decoder_pos_embed.zero_()
    embeddings.initialize_weights()  # transformers' intended init, forced
    decoder.initialize_weights(embeddings.patch_embeddings.num_patches)
    assert positions.abs().sum() > 0 and torch.equal(positions, embeddings.position_embeddings)
    assert torch.equal(decoder_positions, decoder.decoder_pos_embed)
    beit = vitzoo.load("beit-base-pt22k", task="pretraining", pretrained=False, image_size=16,
                       config_overrides=ARCH + ",use_absolute_position_embeddings=true").model.beit.embeddings
    for tensor in (beit.cls_token, beit.mask_token, beit.position_embeddings):
        assert tensor.abs().sum() > 0
    deit = vitzoo.load("deit-tiny-distilled", pretrained=False, image_size=16, num_labels=3,
                       config_overrides=ARCH).model.deit.embeddings
    assert deit.cls_token.abs().sum() > 0 and deit.distillation_token.abs().sum() > 0
    assert not torch.equal(deit.cls_token, deit.distillation_token)  # two tokens, two draws


def test_block_masking_share_and_blocks():
    generator = BlockMaskingGenerator.from_ratio(14, 0.4)
    masks = generator.batch(200, torch.Generator().manual_seed(0)).view(200, 14, 14)
    share = masks.float().mean().item()
    assert 0.37 <= share <= 0.41 and (masks.flatten(1).sum(1) <= 78).all()
    # blocks, not scattered patches: nearly every masked patch has a masked 4-neighbour
    padded = torch.nn.functional.pad(masks.float(), (1, 1, 1, 1))
    neighbours = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
    assert ((neighbours > 0) & masks).sum() / masks.sum() > 0.95
    tiny = BlockMaskingGenerator.from_ratio(4, 0.4).batch(100).float().mean().item()  # the 4x4 grid of the tests
    assert 0.25 <= tiny <= 0.4


def test_simmim_masks_whole_units():
    mask = random_patch_mask(8, 16, 4, 8, 0.6, generator=torch.Generator().manual_seed(0)).view(8, 4, 4)
    assert (mask.float().mean((1, 2)) == 0.75).all()  # ceil(0.6 * 4 units) = 3 of 4 units
    units = mask.view(8, 2, 2, 2, 2)  # every 2x2 patch unit all masked or all visible
    assert (units.all(dim=(2, 4)) == units.any(dim=(2, 4))).all()


@pytest.mark.parametrize("normalisation", ["pixels", "patch"])
def test_tokenizer_codes_are_stable(tmp_path, normalisation):
    pixels = torch.randn(20, 3, 16, 16)
    first = KMeansTokenizer.fit_images(pixels, 16, 4, normalisation=normalisation, iterations=5, seed=1)
    again = KMeansTokenizer.fit_images(pixels, 16, 4, normalisation=normalisation, iterations=5, seed=1)
    assert torch.equal(first.codebook, again.codebook)
    codes = first.encode(pixels)
    assert codes.shape == (20, 16) and codes.dtype == torch.long and int(codes.max()) < first.vocab_size
    assert torch.equal(codes, first.encode(pixels.clone()))
    loaded = KMeansTokenizer.load(first.save(str(tmp_path / "tok")))
    assert torch.equal(loaded.encode(pixels), codes) and loaded.vocab_size == 16
    assert loaded.normalisation == normalisation


@pytest.mark.parametrize("normalisation", ["pixels", "patch"])
def test_tokenizer_gives_flat_patches_one_code(normalisation):
    """Background patches with faint noise are one target, not noise blown up to unit variance."""
    torch.manual_seed(0)
    pixels = torch.randn(20, 3, 16, 16)
    pixels[..., :8] = -1 + 1e-3 * torch.randn(20, 3, 16, 8)  # left half flat: patch columns 0 and 1
    tokenizer = KMeansTokenizer.fit_images(pixels, 16, 4, normalisation=normalisation, iterations=5, seed=0)
    codes = tokenizer.encode(pixels).view(20, 4, 4)
    assert codes[..., :2].unique().numel() == 1
    assert codes[..., 2:].unique().numel() > 4


@pytest.mark.parametrize("method", ["mae", "beit", "simmim"])
def test_each_method_trains_and_writes_the_run_folder(runs, method):
    results, folder = runs[method]
    expected = {"args.json", "checkpoints", "curves.png", "metrics.jsonl", "model", "reconstructions.png", "results.json"}
    assert expected | ({"tokenizer"} if method == "beit" else set()) == set(os.listdir(folder))
    events = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
    train = [e for e in events if not e.get("eval")]
    assert [e["step"] for e in train] == [1, 2, 3, 4] and all(np.isfinite(e["loss"]) for e in train)
    assert results["steps"] == 4 and np.isfinite(results["eval"]["loss"])
    if method == "beit":
        assert all(0 <= e["masked_token_accuracy"] <= 1 for e in events)
    # the saved model's encoder loads as a classifier
    classifier = vitzoo.load(os.path.join(folder, "model"), task="classification", num_labels=10)
    assert classifier.logits(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_pretrained_encoder_finetunes_and_weights_carry_over(runs, tmp_path):
    _, folder = runs["mae"]
    model_dir = os.path.join(folder, "model")
    pretrained = vitzoo.load(model_dir, task="pretraining").model
    classifier = vitzoo.load(model_dir, task="classification", num_labels=10).model
    source, target = pretrained.state_dict(), classifier.state_dict()
    encoder_keys = [k for k in target if k.startswith("vit.") and k in source]
    assert len(encoder_keys) > 20 and all(torch.equal(source[k], target[k]) for k in encoder_keys)
    results = methods.run("finetune", ["--model", model_dir, "--dataset", "digits", "--image-size", "16", "--epochs", "1",
                             "--batch-size", "16", "--num-workers", "0", "--max-train-samples", "64",
                             "--max-eval-samples", "32", "--output-dir", str(tmp_path / "ft")])
    assert results["steps"] == 4 and results["eval"]["samples"] == 32


def test_resume_auto_continues(runs, tmp_path):
    folder = str(tmp_path / "resumed")
    run(folder, "simmim", "--epochs", "1")
    results = run(folder, "simmim", "--epochs", "2", "--resume", "auto")
    assert results["steps"] == 8
    assert sorted(os.listdir(os.path.join(folder, "checkpoints"))) == ["step-00000004", "step-00000008"]


@pytest.mark.parametrize(("method", "extra", "match"), [
    ("mae", ["--mask-ratio", "1.0"], "mask-ratio"),
    ("simmim", ["--mask-ratio", "0"], "mask-ratio"),
    ("mae", ["--image-size", "18"], "not a whole number of mae-base's 4-px patches"),
    ("simmim", ["--mask-patch-size", "6"], "mask-patch-size"),
    ("beit", ["--config-overrides", ARCH + ",vocab_size=64"], "tokenizer has 16 codes"),
])
def test_bad_inputs_fail_before_training(tmp_path, method, extra, match):
    folder = tmp_path / "bad"
    with pytest.raises(vitzoo.BadInputError, match=match):
        run(str(folder), method, *extra)
    assert not (folder / "checkpoints").exists()


def test_push_to_hub_checked_first_and_run_pushed_at_the_end(tmp_path, monkeypatch):
    from vitzoo import publish

    folder = tmp_path / "no-repo"
    with pytest.raises(vitzoo.BadInputError, match="--hub-model-id"):
        run(str(folder), "simmim", "--epochs", "1", "--push-to-hub")
    assert not folder.exists()  # nothing trained, nothing written
    pushed = []
    monkeypatch.setenv("HF_TOKEN", "hf_fakeTOKEN0123456789abcdefghijklmnop")
    monkeypatch.setattr(publish, "push_run", lambda output_dir, repo_id, **kwargs: pushed.append((output_dir, repo_id, kwargs)))
    folder = str(tmp_path / "pushed")
    run(folder, "simmim", "--epochs", "1", "--push-to-hub", "--hub-model-id", "someone/mim", "--hub-private")
    assert pushed == [(folder, "someone/mim", {"private": True, "revision": None})]


def test_two_process_launch(tmp_path):
    output = str(tmp_path / "ddp")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               os.path.join(ROOT, "recipes", "pretrain.py"), "--method", "mae", "--model", "mae-base", *TINY,
               *METHOD_FLAGS["mae"], "--epochs", "1", "--output-dir", output]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(output, "results.json")) as handle:
        results = json.load(handle)
    assert results["num_processes"] == 2 and results["steps"] == 64 // 16 // 2
    assert "distributed: DDP over 2 CPU processes" in done.stdout
    assert vitzoo.load(os.path.join(output, "model"), task="classification", num_labels=10).image_size == 16
