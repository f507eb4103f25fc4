"""The repos' published files, not vitzoo's own beliefs: every registered name and every task it
accepts, on tiny checkpoints built from each repo's published config.json (tests/tiny_hub.py), and
vitzoo's preprocessing against each repo's published preprocessor_config.json."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import timm
import torch
from tiny_hub import PUBLISHED, published
from transformers import AutoImageProcessor

import vitzoo
from vitzoo import registry
from vitzoo.convert import preprocessing_from_timm
from vitzoo.images import Preprocessor

NAMES = [spec.name for spec in registry.all_specs()]
# families whose Hub repository is timm's own (transformers has no class for them): their published
# file is timm's config.json, whose pretrained cfg is their preprocessing
TIMM_REPO_NAMES = [name for name in NAMES if registry.get_family(registry.get_spec(name).family).no_transformers]
# the families added with DINOv3: every name of theirs also runs on its timm checkpoint here
NEW_FAMILIES = ("dinov3", "dinov2_reg", "deit3", "ijepa")
NEW_NAMES = [name for name in NAMES if registry.get_spec(name).family in NEW_FAMILIES]


def tasks_of(name: str) -> list[str]:
    spec = registry.get_spec(name)
    family = registry.get_family(spec.family)
    accepted = []
    for task in ("classification", "features", "pretraining"):
        try:
            family.transformers_class(spec, task)
        except vitzoo.BadInputError:  # e.g. DINOv2 has no pretraining class
            continue
        accepted.append(task)
    return accepted


def test_every_registered_repo_has_its_published_files_and_their_sources():
    folders = {spec.hub_id.replace("/", "--") for spec in registry.all_specs()}
    assert folders <= set(os.listdir(PUBLISHED))
    timm_repos = {registry.get_spec(name).hub_id.replace("/", "--") for name in TIMM_REPO_NAMES}
    for folder in folders:
        files = {"config.json", "SOURCE.md"} | (set() if folder in timm_repos else {"preprocessor_config.json"})
        assert files <= set(os.listdir(os.path.join(PUBLISHED, folder))), folder


@pytest.fixture(scope="module")
def photos():
    """Real photos of natural, differing sizes (scikit-learn's samples, cropped)."""
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return [china[:300, :420], flower[50:400, 10:300], china[100:164, 200:500]]


@pytest.mark.parametrize("name", [name for name in NAMES if name not in TIMM_REPO_NAMES])
def test_pixels_equal_the_published_processor(name, photos):
    """vitzoo's pixels for a registry name are exactly those of `AutoImageProcessor` on that repo's
    published preprocessor_config.json (older `*FeatureExtractor` files included)."""
    spec = registry.get_spec(name)
    processor = AutoImageProcessor.from_pretrained(os.path.dirname(published(spec.hub_id, "config.json")))
    theirs = processor(photos, return_tensors="pt").pixel_values
    ours = Preprocessor(spec.preprocessing)(photos)
    with open(published(spec.hub_id, "preprocessor_config.json")) as handle:
        kind = json.load(handle).get("image_processor_type", "")
    if kind.startswith("DINOv3ViTImageProcessor"):
        # DINOv3's processor rescales to floats before resizing; vitzoo resizes the uint8 pixels, so a
        # resized pixel may round to the next level: at most one level of 255, nothing more
        levels = (ours - theirs).abs() * torch.tensor(spec.preprocessing.std).view(1, 3, 1, 1) * 255
        assert levels.max() <= 1.0 + 1e-3 and levels.mean() < 0.5
        return
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(("name", "task"), [(name, task) for name in NAMES for task in tasks_of(name)])
def test_every_name_and_task_loads_runs_and_round_trips(tiny_hub, tmp_path, name, task):
    spec = tiny_hub[name]
    labels = None if spec.num_classes or task != "classification" else ["cat", "dog", "cat"]  # names may repeat
    zoo = vitzoo.load(name, task=task, id2label=labels)
    images = [np.random.default_rng(i).integers(0, 256, (20 + 3 * i, 24, 3), dtype=np.uint8) for i in range(3)]
    vectors = zoo.embed(images)
    assert vectors.shape == (3, spec.architecture.hidden_size) and torch.isfinite(vectors).all()
    grid = spec.architecture.image_size // spec.architecture.patch_size
    assert zoo.attention_maps(images).shape == (3, spec.architecture.num_heads, grid, grid)
    if task == "classification":
        predictions = zoo.predict(images, top_k=2)
        names = zoo.id2label
        if spec.num_classes == 1000:  # the published ImageNet names travelled from config.json
            assert names[134] == names[517] == "crane" and names[0] == "tench, Tinca tinca"
        assert all(p["label"] == names[p["index"]] for row in predictions for p in row)
    zoo.save_pretrained(tmp_path / "saved")
    again = vitzoo.load(tmp_path / "saved")
    assert again.task == task
    torch.testing.assert_close(again.embed(images), vectors, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TIMM_REPO_NAMES)
def test_timm_repos_preprocessing_is_their_published_pretrained_cfg(name):
    """A checkpoint published in timm's repository only (DeiT III): its pipeline is that config.json's."""
    spec = registry.get_spec(name)
    with open(published(spec.hub_id, "config.json")) as handle:
        config = json.load(handle)
    assert config["architecture"] == spec.timm_name.split(".")[0] and config["num_classes"] == spec.num_classes
    assert spec.preprocessing == preprocessing_from_timm(config["pretrained_cfg"])


# --------------------------------------------------------------------------- the families added with DINOv3
@pytest.mark.parametrize("name", NEW_NAMES)
def test_new_names_run_on_their_timm_checkpoints_and_round_trip(tiny_hub, tmp_path, name):
    """Each new name on the timm backend (DeiT III: its only one): embeddings, attention maps without the
    CLS/register tokens, predictions where it has a head, and save -> load."""
    spec = tiny_hub[name]
    zoo = vitzoo.load(name, backend="timm")
    assert zoo.backend == "timm" and zoo.pretrained
    images = [np.random.default_rng(i).integers(0, 256, (20 + 3 * i, 24, 3), dtype=np.uint8) for i in range(3)]
    vectors = zoo.embed(images)
    assert vectors.shape == (3, spec.architecture.hidden_size) and torch.isfinite(vectors).all()
    grid = spec.architecture.image_size // spec.architecture.patch_size
    maps = zoo.attention_maps(images)
    assert maps.shape == (3, spec.architecture.num_heads, grid, grid) and torch.isfinite(maps).all()
    if spec.num_classes:
        assert zoo.task == "classification"
        assert len(zoo.predict(images, top_k=2)[0]) == 2 and zoo.id2label[134] == "crane"
    zoo.save_pretrained(tmp_path / "saved")
    again = vitzoo.load(tmp_path / "saved")
    assert again.backend == "timm" and again.task == zoo.task
    torch.testing.assert_close(again.embed(images), vectors, rtol=1e-5, atol=1e-5)


def _reference_pooling(name: str, hidden: torch.Tensor) -> torch.Tensor:
    if registry.get_spec(name).family == "ijepa":
        return hidden.mean(dim=1)  # no CLS token: the mean of the patch tokens
    return hidden[:, 0]


@pytest.mark.parametrize("name", ["dinov3-vits16", "dinov2-small-reg", "ijepa-vith14"])
def test_new_families_pool_and_attend_as_their_papers(tiny_hub, name):
    """Embedding: the CLS token (I-JEPA: the patch mean); attention maps: the CLS row over the patches,
    register tokens left out (I-JEPA: what the patches attend to on average)."""
    zoo = vitzoo.load(name)
    spec = tiny_hub[name]
    family, arch = zoo.family, zoo.spec.architecture
    pixels = torch.randn(2, 3, spec.architecture.image_size, spec.architecture.image_size)
    registers = family.register_tokens
    with torch.no_grad():
        zoo.model.set_attn_implementation("eager")
        outputs = zoo.model(pixel_values=pixels, output_attentions=True)
        hidden, attention = outputs.last_hidden_state, outputs.attentions[-1]
        patches = (spec.architecture.image_size // spec.architecture.patch_size) ** 2
        prefix = family.num_prefix_tokens(arch)
        assert hidden.shape[1] == patches + prefix == patches + (0 if spec.family == "ijepa" else 1 + registers)
        expected = attention.mean(dim=2) if spec.family == "ijepa" else attention[:, :, 0, 1 + registers :]
        # the family's hooks, exactly (fp32) ...
        torch.testing.assert_close(family.pool(outputs, arch), _reference_pooling(name, hidden))
        torch.testing.assert_close(family.patch_attention(attention, prefix), expected)
        # ... and what ZooModel computes with them (in its default precision: bf16 on some CPUs)
        torch.testing.assert_close(zoo.features(pixels), _reference_pooling(name, hidden), atol=3e-2, rtol=3e-2)
        torch.testing.assert_close(zoo.attention(pixels).flatten(2), expected, atol=1e-2, rtol=5e-2)


def test_dinov3_needs_no_position_interpolation(tiny_hub):
    """RoPE: another input size runs the same weights as they are (no table to resample), on both backends."""
    base = vitzoo.load("dinov3-vits16")
    bigger = vitzoo.load("dinov3-vits16", image_size=24)
    assert bigger.image_size == 24 and bigger.spec.preprocessing.input_size == 24
    assert all(torch.equal(a, b) for a, b in zip(base.model.state_dict().values(), bigger.model.state_dict().values()))
    pixels = torch.randn(2, 3, 24, 24)
    timm_zoo = vitzoo.load("dinov3-vits16", backend="timm", image_size=24)
    assert bigger.features(pixels).shape == timm_zoo.features(pixels).shape == (2, 32)
    assert bigger.attention(pixels).shape == timm_zoo.attention(pixels).shape == (2, 2, 6, 6)


def test_ijepa_timm_weights_come_from_torchs_hub_cache(tiny_hub):
    """timm publishes I-JEPA's weights at Meta's URL, not in a Hub repository: the tiny release file in
    torch's hub cache is what timm loads (its "encoder", DDP prefix stripped)."""
    cfg = timm.models.get_pretrained_cfg("vit_huge_patch14_gap_224.in1k_ijepa")
    saved = torch.load(os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url)))["encoder"]
    loaded = vitzoo.load("ijepa-vith14", backend="timm").model.state_dict()
    assert all(torch.equal(loaded[key], saved[f"module.{key}"]) for key in loaded)


def test_deit3_on_transformers_is_refused_by_name(tiny_hub):
    with pytest.raises(vitzoo.BadInputError, match=r"timm backend only.*layer scale.*backend='timm'"):
        vitzoo.load("deit3-small", backend="transformers")
    with pytest.raises(vitzoo.BadInputError, match="backend='timm'"):
        vitzoo.load("deit3-base", backend="transformers", pretrained=False)
    assert vitzoo.load("deit3-small").backend == "timm"  # without a backend: the one that runs it


def test_dinov3_has_no_transformers_classifier(tiny_hub):
    with pytest.raises(vitzoo.BadInputError, match="features model only.*backend='timm'"):
        vitzoo.load("dinov3-vits16", num_labels=3)
    zoo = vitzoo.load("dinov3-vits16", backend="timm", num_labels=3)
    assert zoo.task == "classification" and zoo.logits(torch.randn(1, 3, 16, 16)).shape == (1, 3)


# --------------------------------------------------------------------------- the commands take the new names
def test_evaluate_knn_and_compare_take_the_new_names(tiny_hub, tmp_path, capsys):
    from vitzoo.cli import main
    from vitzoo.compare import CompareConfig, run_compare

    common = ["--dataset", "digits", "--max-train-samples", "60", "--max-eval-samples", "20", "--protocol", "knn"]
    assert main(["evaluate", "dinov3-vits16", *common, "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["accuracy"] <= 1 and result["feature_dim"] == 32
    # DeiT III without a backend: vitzoo picks timm, the one that runs it
    config = CompareConfig(models="ijepa-vith14,deit3-small", dataset="digits", protocol="knn", k=5,
                           max_train_samples=60, max_eval_samples=20, output_dir=str(tmp_path / "cmp"))
    rows = run_compare(config, progress=False, echo=lambda _: None)
    assert {row["model"]: row["status"] for row in rows} == {"ijepa-vith14": "ok", "deit3-small": "ok"}
    ijepa = next(row for row in rows if row["model"] == "ijepa-vith14")
    assert ijepa["published_license"] == "cc-by-nc-4.0" and ijepa["published_imagenet_linear_top1"] == 79.3


def test_finetune_deit3_from_scratch_on_timm(tmp_path):
    from recipe_runs import COMMON

    from vitzoo import methods

    results = methods.run("finetune", ["--model", "deit3-small", "--backend", "timm", *COMMON, "--epochs", "1",
                             "--output-dir", str(tmp_path / "run")])
    assert results["steps"] == 64 // 16 and 0 <= results["eval"]["accuracy"] <= 1
    zoo = vitzoo.load(tmp_path / "run" / "model")
    assert zoo.backend == "timm" and zoo.spec.family == "deit3" and len(zoo.id2label) == 10
    assert zoo.model.blocks[0].ls1.gamma.shape == (32,)  # layer scale kept


@pytest.mark.parametrize(("teacher", "backend"), [("deit3-small", "timm"), ("dinov2-small-reg", "transformers"),
                                                    ("dinov3-vits16", "timm")])
def test_distill_with_a_new_teacher(tiny_hub, tmp_path, teacher, backend):
    """A new name as DeiT teacher (random head for the dataset, as the recipe's tests do): frozen, and
    the student trains. DINOv3's classifier only exists on timm."""
    from recipe_runs import COMMON

    from vitzoo import methods

    results = methods.run("distill", ["--method", "deit", "--model", "deit-tiny-distilled", *COMMON, "--teacher", teacher,
                            "--teacher-backend", backend, "--teacher-scratch", "--epochs", "1",
                            "--output-dir", str(tmp_path / "run")])
    assert results["distillation_token"] and results["steps"] == 64 // 16
