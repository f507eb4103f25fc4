"""`vitzoo.load` over every registered checkpoint, both backends, through the real loading path.

The `tiny_hub` fixture puts a tiny random checkpoint under each canonical Hub id in an offline
Hub cache, so these tests run the same `from_pretrained` / `timm.create_model(pretrained=True)`
code a user online would.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import transformers

import vitzoo
from vitzoo import registry

NAMES = vitzoo.list_models()
# the names transformers runs (DeiT III runs on timm only) and those with a transformers classifier (DINOv3
# is a features model there)
HF_NAMES = [name for name in NAMES if not registry.get_family(registry.get_spec(name).family).no_transformers]
HF_CLASSIFIERS = [name for name in HF_NAMES if registry.get_family(registry.get_spec(name).family).classes["classification"]]
BOTH = [
    (name, backend)
    for name in NAMES
    for backend in ("transformers", "timm")
    if (name in HF_NAMES if backend == "transformers" else registry.get_spec(name).timm_name)
]


@pytest.fixture
def images(sample_image):
    rng = np.random.default_rng(0)
    return [sample_image[:120, :200], rng.integers(0, 256, (30, 20), dtype=np.uint8)]


@pytest.mark.parametrize("name,backend", BOTH)
def test_load_and_run(tiny_hub, images, name, backend):
    model = vitzoo.load(name, backend=backend)
    spec = tiny_hub[name]
    assert model.pretrained and model.spec.name == name
    expected_task = "classification" if spec.num_classes else "features"
    assert model.task == expected_task
    embeddings = model.embed(images)
    assert embeddings.shape == (2, spec.architecture.hidden_size)
    assert torch.isfinite(embeddings).all()
    grid = model.image_size // spec.architecture.patch_size
    maps = model.attention_maps(images)
    assert maps.shape == (2, spec.architecture.num_heads, grid, grid)
    # CLS attention is a softmax row: what goes to patches is positive and sums to at most 1
    totals = maps.sum(dim=(-1, -2))
    assert (maps >= 0).all() and (totals <= 1 + 1e-5).all() and (totals > 0.3).all()
    if model.task == "classification":
        predictions = model.predict(images, top_k=5)
        assert len(predictions) == 2 and len(predictions[0]) == 5
        scores = [p["score"] for p in predictions[0]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        assert predictions[0][0]["label"] == model.id2label[predictions[0][0]["index"]]
        assert "LABEL_" not in predictions[0][0]["label"]  # ImageNet names travel with the head


def test_pretrained_weights_are_the_checkpoints(tiny_hub):
    """Loading really reads the cached weights: two loads agree, and differ from a random init."""
    first = vitzoo.load("deit-small").model.state_dict()
    again = vitzoo.load("deit-small").model.state_dict()
    scratch = vitzoo.load("deit-small", pretrained=False).model.state_dict()
    key = "vit.layers.0.attention.q_proj.weight"
    assert torch.equal(first[key], again[key]) and not torch.equal(first[key], scratch[key])


@pytest.mark.parametrize("name,backend", [(n, b) for n, b in BOTH if b == "timm" or n in HF_CLASSIFIERS])
def test_new_head_on_any_checkpoint(tiny_hub, images, name, backend):
    model = vitzoo.load(name, backend=backend, id2label=["cat", "dog", "fish"])
    predictions = model.predict(images, top_k=5)
    assert {p["label"] for p in predictions[0]} == {"cat", "dog", "fish"}
    # the encoder is the checkpoint's: same embeddings as loading it as a features model
    features = vitzoo.load(name, backend=backend, task="features")
    assert torch.allclose(model.embed(images), features.embed(images), atol=1e-5)


@pytest.mark.parametrize("name", HF_CLASSIFIERS)
def test_save_round_trip_identical_outputs(tiny_hub, images, tmp_path, name):
    # fp32 on every machine: the outputs are compared with plain transformers' own fp32 forward
    model = vitzoo.load(name, num_labels=4 if not tiny_hub[name].num_classes else None, precision="fp32")
    folder = model.save_pretrained(tmp_path / "saved")
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "preprocessor_config.json", "vitzoo.json"]
    again = vitzoo.load(folder, precision="fp32")
    assert again.task == "classification" and again.spec.name == name and again.id2label == model.id2label
    pixels = model.preprocess(images)
    assert torch.equal(again.preprocess(images), pixels)
    with torch.inference_mode():
        expected = model.logits(pixels)
        assert torch.equal(again.logits(pixels), expected)
        # plain transformers, knowing nothing of vitzoo, loads the same model
        config = transformers.AutoConfig.from_pretrained(folder)
        plain = getattr(transformers, config.architectures[0]).from_pretrained(folder).eval()
        assert torch.allclose(plain(pixel_values=pixels).logits, expected, atol=1e-6)
        processor = transformers.AutoImageProcessor.from_pretrained(folder)
        from PIL import Image

        pil = Image.fromarray(images[0])
        assert torch.allclose(processor(pil, return_tensors="pt")["pixel_values"], model.preprocess(pil), atol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if registry.get_spec(n).timm_name][:6])
def test_timm_save_round_trip(tiny_hub, images, tmp_path, name):
    model = vitzoo.load(name, backend="timm", num_labels=3)
    folder = model.save_pretrained(tmp_path / "timm-saved")
    again = vitzoo.load(folder)
    assert again.backend == "timm"
    pixels = model.preprocess(images)
    with torch.inference_mode():
        assert torch.equal(again.logits(pixels), model.logits(pixels))


def test_family_pooling_conventions(tiny_hub, images):
    """Embeddings follow each family's documented pooling, recomputed here from hidden states (in fp32,
    as the raw modules run)."""
    distilled = vitzoo.load("deit-small-distilled", precision="fp32")
    pixels = distilled.preprocess(images)
    with torch.inference_mode():
        hidden = distilled.model.deit(pixel_values=pixels).last_hidden_state
        assert torch.allclose(distilled.features(pixels), (hidden[:, 0] + hidden[:, 1]) / 2)
        # its classification averages the class and distillation heads, as DeiT does
        out = distilled.model(pixel_values=pixels)
        assert torch.allclose(distilled.logits(pixels), (out.cls_logits + out.distillation_logits) / 2)

    beit = vitzoo.load("beit-base", precision="fp32")
    pixels = beit.preprocess(images)
    with torch.inference_mode():
        hidden = beit.model.beit(pixel_values=pixels).last_hidden_state
        norm = beit.model.beit.pooler.layernorm
        assert torch.allclose(beit.features(pixels), norm(hidden[:, 1:].mean(dim=1)), atol=1e-6)


def test_mae_features_use_every_patch_in_order(tiny_hub, images):
    """MAE's encoder as a features model: no masking, no shuffling; the same encoder moved into a
    ViT classifier (a second implementation) gives the same CLS embedding."""
    mae = vitzoo.load("mae-base")
    pixels = mae.preprocess(images)
    first, second = mae.features(pixels), mae.features(pixels)
    assert torch.equal(first, second)
    classifier = vitzoo.load("mae-base", num_labels=2)
    assert type(classifier.model).__name__ == "ViTForImageClassification"
    assert torch.allclose(classifier.features(pixels), first, atol=1e-5)
    pretraining = vitzoo.load("mae-base", task="pretraining")
    assert torch.allclose(pretraining.features(pixels), first, atol=1e-5)
    assert pretraining.model.config.mask_ratio == 0.75  # untouched for pretraining


@pytest.mark.parametrize(
    "name,backend",
    [
        ("deit-small", "transformers"),
        ("deit-small", "timm"),
        ("beit-base", "transformers"),
        ("dino-vits16", "transformers"),
        ("dinov2-small", "transformers"),
    ],
)
def test_image_size_override(tiny_hub, images, name, backend):
    same = vitzoo.load(name, backend=backend, image_size=tiny_hub[name].preprocessing.input_size)
    base = vitzoo.load(name, backend=backend)
    assert torch.allclose(same.embed(images), base.embed(images), atol=1e-6)
    bigger = vitzoo.load(name, backend=backend, image_size=24)
    assert bigger.image_size == 24 and bigger.preprocess(images).shape[-1] == 24
    assert bigger.embed(images).shape == base.embed(images).shape
    with pytest.raises(vitzoo.BadInputError, match="multiple"):
        vitzoo.load(name, backend=backend, image_size=22)


def test_scratch_with_overrides_needs_no_cache():
    model = vitzoo.load(
        "deit-tiny",
        pretrained=False,
        config_overrides="hidden_size=48,num_hidden_layers=2,num_attention_heads=3,patch_size=4",
        image_size=16,
    )
    assert not model.pretrained and model.spec.architecture.hidden_size == 48 and model.spec.architecture.depth == 2
    assert model.predict(np.zeros((16, 16, 3), dtype=np.uint8))[0][0]["label"]
    with pytest.raises(vitzoo.BadInputError, match="not a field"):
        vitzoo.load("deit-tiny", pretrained=False, config_overrides="hiden_size=48")
    with pytest.raises(vitzoo.BadInputError, match="random weights"):
        vitzoo.load("deit-tiny", config_overrides={"hidden_size": 48})


def test_missing_weights_error_names_repo_and_cache(monkeypatch):
    import dataclasses

    spec = dataclasses.replace(registry.get_spec("deit-small"), hub_id="nobody/not-cached")
    monkeypatch.setitem(registry._SPECS, "deit-small", spec)
    with pytest.raises(vitzoo.WeightsNotFoundError) as error:
        vitzoo.load("deit-small")
    message = str(error.value)
    assert "nobody/not-cached" in message and os.environ["HF_HUB_CACHE"] in message and "--scratch" in message
    uncached = "vit_small_patch16_224.augreg_in21k"  # a real timm tag the tiny hub does not hold
    monkeypatch.setitem(registry._SPECS, "deit-small", dataclasses.replace(spec, timm_name=uncached))
    with pytest.raises(vitzoo.WeightsNotFoundError, match=f"timm/{uncached}"):
        vitzoo.load("deit-small", backend="timm")


def test_bad_inputs(tiny_hub, tmp_path):
    with pytest.raises(vitzoo.UnknownModelError, match="deit-small"):
        vitzoo.load("deit-smal")
    (tmp_path / "empty").mkdir()
    with pytest.raises(vitzoo.BadInputError, match="no config.json"):
        vitzoo.load(tmp_path / "empty")
    with pytest.raises(vitzoo.BadInputError, match="conflicts"):
        vitzoo.load("dino-vits16", num_labels=3, id2label=["a", "b"])
    with pytest.raises(vitzoo.BadInputError, match="no classification head"):
        vitzoo.load("dino-vits16", task="classification")
    with pytest.raises(vitzoo.BadInputError, match="task"):
        vitzoo.load("dino-vits16", task="segmentation")
    with pytest.raises(vitzoo.BadInputError, match="backend"):
        vitzoo.load("dino-vits16", backend="jax")
    with pytest.raises(vitzoo.BadInputError, match="without gaps"):
        vitzoo.load("dino-vits16", id2label={0: "a", 2: "b"})
    model = vitzoo.load("dino-vits16")
    with pytest.raises(vitzoo.BadInputError, match="task='classification'"):
        model.predict(np.zeros((8, 8), dtype=np.uint8))


def test_folder_without_vitzoo_metadata(tiny_hub, tmp_path, images):
    """A plain transformers save (no vitzoo.json) loads by its model_type."""
    model = vitzoo.load("beit-base")
    model.model.save_pretrained(tmp_path / "plain")
    with open(tmp_path / "plain" / "preprocessor_config.json", "w") as handle:
        json.dump(model.preprocessor.to_image_processor_dict(), handle)
    again = vitzoo.load(tmp_path / "plain")
    assert again.spec.family == "beit" and again.task == "classification"
    pixels = model.preprocess(images)
    assert torch.equal(again.logits(pixels), model.logits(pixels))


def test_scratch_overrides_round_trip_for_every_family(tmp_path):
    """Overrides reach the config's constructor, so derived fields follow (BEiT's backbone stages
    follow num_hidden_layers): a shrunk model saves and loads back."""
    overrides = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,patch_size=4"
    for name in ("vit-base", "deit-base-distilled", "beit-base", "mae-base", "dinov2-small"):
        model = vitzoo.load(name, pretrained=False, num_labels=3, image_size=16, config_overrides=overrides)
        assert model.spec.architecture.depth == 2
        again = vitzoo.load(model.save_pretrained(tmp_path / name))
        pixels = torch.randn(1, 3, 16, 16)
        assert torch.equal(again.logits(pixels), model.logits(pixels))


def test_beit_trains_after_feature_extraction(tiny_hub):
    """transformers caches BEiT's relative-position index across calls; nothing vitzoo runs
    without gradients may create it as an inference tensor, or a later training step fails."""
    from vitzoo.probe import extract_features

    model = vitzoo.load("beit-base", num_labels=2)
    extract_features(model, [(np.zeros((16, 16, 3), dtype=np.uint8), 0)] * 2, batch_size=2)
    model.predict(np.zeros((16, 16, 3), dtype=np.uint8))
    model.model.train()
    loss = model.model(pixel_values=torch.randn(2, 3, 16, 16)).logits.sum()
    loss.backward()


def test_a_real_label_set_with_repeated_names_loads(tiny_hub):
    """ImageNet-1k names "crane" twice (the bird, 134, and the machine, 517): names may repeat, indices
    may not; the labels survive a save and reload."""
    import tempfile

    from vitzoo.zoo import imagenet_labels

    labels = imagenet_labels()
    assert labels[134] == labels[517] == "crane"
    zoo = vitzoo.load("deit-tiny", id2label=labels)
    assert zoo.id2label == labels
    with tempfile.TemporaryDirectory() as folder:
        zoo.save_pretrained(folder)
        assert vitzoo.load(folder).id2label[517] == "crane"


def test_saved_metadata_describes_the_saved_model(tmp_path):
    """A shrunk model trained from scratch is not "pretrained on ImageNet-1k" with 5.7M parameters and
    1000 classes: vitzoo.json says what it is, and keeps the release's facts apart."""
    import json

    zoo = vitzoo.load("deit-tiny", pretrained=False, num_labels=10, image_size=16,
                      config_overrides="hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4")
    zoo.save_pretrained(tmp_path / "model")
    meta = json.load(open(tmp_path / "model" / "vitzoo.json"))
    assert meta["spec"]["num_params"] == zoo.num_params == sum(p.numel() for p in zoo.model.parameters())
    assert meta["spec"]["num_classes"] == 10 and not meta["spec"]["has_imagenet_head"]
    assert meta["spec"]["pretrained_on"] == "nothing: trained from random weights" and meta["pretrained"] is False
    released = meta["released_checkpoint"]
    assert released["pretrained_on"] == "ImageNet-1k" and released["num_classes"] == 1000
    assert released["num_params"] == vitzoo.get_spec("deit-tiny").num_params
    reloaded = vitzoo.load(tmp_path / "model")
    assert reloaded.num_classes == 10 if hasattr(reloaded, "num_classes") else len(reloaded.id2label) == 10


TINY_ARCH = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"


def test_checkpoint_files_as_users_have_them(tmp_path):
    """Only pytorch_model.bin loads the same; an extra trained tensor the model would not use is named;
    a config without its weights is the clear WeightsNotFoundError."""
    from safetensors.torch import load_file, save_file

    zoo = vitzoo.load("deit-tiny", pretrained=False, num_labels=3, image_size=16, config_overrides=TINY_ARCH)
    pixels = torch.randn(2, 3, 16, 16)
    old = tmp_path / "old"
    zoo.model.save_pretrained(old)  # then as checkpoints saved years ago: a pickled state dict only
    torch.save(load_file(old / "model.safetensors"), old / "pytorch_model.bin")
    (old / "model.safetensors").unlink()
    assert sorted(p.name for p in old.iterdir()) == ["config.json", "pytorch_model.bin"]
    assert torch.allclose(vitzoo.load(old).logits(pixels), zoo.logits(pixels), atol=1e-6)

    extra = tmp_path / "extra"
    zoo.save_pretrained(extra)
    weights = load_file(extra / "model.safetensors")
    save_file({**weights, "vit.embeddings.extra_projection.weight": torch.ones(4, 4)}, extra / "model.safetensors")
    with pytest.raises(vitzoo.BadInputError, match="extra_projection"):
        vitzoo.load(extra)

    (extra / "model.safetensors").unlink()
    with pytest.raises(vitzoo.WeightsNotFoundError, match="no weights file"):
        vitzoo.load(extra)


def test_a_cached_config_without_its_weights(tiny_hub, monkeypatch, tmp_path, capsys):
    """An interrupted download: the Hub cache has the repo's config.json and no weights."""
    import dataclasses
    import os

    from tiny_hub import snapshot_dir

    from vitzoo import registry
    from vitzoo.cli import main as cli

    repo = "vitzoo-tests/interrupted-download"
    snapshot = snapshot_dir(os.environ["HF_HUB_CACHE"], repo)
    vitzoo.load("deit-tiny").model.config.to_json_file(os.path.join(snapshot, "config.json"))
    monkeypatch.setitem(registry._SPECS, "deit-tiny", dataclasses.replace(tiny_hub["deit-tiny"], hub_id=repo))
    with pytest.raises(vitzoo.WeightsNotFoundError, match="config.json is cached, but no weights file"):
        vitzoo.load("deit-tiny")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    capsys.readouterr()
    assert cli(["predict", "deit-tiny", str(image)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors or pytorch_model.bin" in err and "Traceback" not in err


def test_beit_pretraining_model_embeds(tiny_hub):
    """BEiT's masked-image-modelling model has no pooler: embed still gives one vector per image."""
    zoo = vitzoo.load("beit-base-pt22k", task="pretraining")
    images = torch.randint(0, 256, (3, 3, 24, 24), dtype=torch.uint8)
    vectors = zoo.embed(images)
    assert vectors.shape == (3, zoo.spec.architecture.hidden_size) and torch.isfinite(vectors).all()
    assert torch.allclose(vectors.mean(-1), torch.zeros(3), atol=1e-4)  # layer-normalised means
