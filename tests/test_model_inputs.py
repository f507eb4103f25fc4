"""Model folders and API inputs: each bad one is one line naming what is wrong and what to do, and nothing is
ever unpickled beyond tensors (docs/reliability.md)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from recipe_runs import ARCH
from safetensors.torch import load_file

import vitzoo
from vitzoo.cli import main as cli

TINY = dict(pretrained=False, num_labels=3, image_size=16, config_overrides=ARCH, precision="fp32")
BACKENDS = ("transformers", "timm")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{backend: (a tiny model, the folder save_pretrained wrote for it)}, built once: tests damage copies."""
    root = tmp_path_factory.mktemp("saved")
    models = {}
    for backend in BACKENDS:
        torch.manual_seed(0)
        zoo = vitzoo.load("deit-tiny", backend=backend, **TINY)
        models[backend] = zoo, zoo.save_pretrained(root / backend)
    return models


def copy_of(saved, backend: str, tmp_path) -> str:
    return shutil.copytree(saved[backend][1], str(tmp_path / f"{backend}-copy"))


def one_error_line(capsys, argv: list[str]) -> str:
    """rc 2 and one error line on stderr, no traceback; `predict` may say first which model it loads."""
    capsys.readouterr()
    assert cli(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in lines), lines
    errors = [line for line in lines if not line.startswith("loading ")]
    assert len(errors) == 1 and errors[0].startswith(f"vitzoo {argv[0]}: error: "), lines
    return errors[0]


class Planted:
    """What a crafted pickle holds: unpickling it creates `marker` (code run from a model file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def pickle_weights(folder: str, extra: dict | None = None) -> str:
    """The folder's weights as pytorch_model.bin (plus `extra` entries), as older repositories hold them."""
    path = os.path.join(folder, "pytorch_model.bin")
    torch.save({**load_file(os.path.join(folder, "model.safetensors")), **(extra or {})}, path)
    return path


# --------------------------------------------------------------------------- damaged model folders
def truncate(path: str, keep: float = 0.5) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


DAMAGE = {  # case: (file damaged, how, what the message says about it)
    "truncated safetensors": ("model.safetensors", truncate, "is damaged (Error while deserializing header"),
    "safetensors header cut": ("model.safetensors", lambda p: truncate(p, 0.0001), "is damaged"),
    "config.json not JSON": ("config.json", lambda p: open(p, "w").write("{'model_type': 'deit'"), "is not valid JSON"),
    "vitzoo.json not JSON": ("vitzoo.json", lambda p: open(p, "w").write("{\"spec\": "), "is not valid JSON"),
    "config.json {}": ("config.json", lambda p: open(p, "w").write("{}"), "names no model_type"),
    "config.json a list": ("config.json", lambda p: open(p, "w").write("[1, 2]"), "must hold a JSON object, not a list"),
    "vitzoo.json without a spec's fields": ("vitzoo.json", lambda p: open(p, "w").write('{"spec": {"name": "x"}}'),
                                            "does not describe a model"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_model_folder_is_one_line_naming_the_file(saved, tmp_path, backend, case):
    folder = copy_of(saved, backend, tmp_path)
    name, damage, said = DAMAGE[case]
    damage(os.path.join(folder, name))
    with pytest.raises(vitzoo.BadInputError) as error:
        vitzoo.load(folder)
    message = str(error.value)
    assert os.path.join(folder, name) in message and said in message and "\n" not in message


def test_a_timm_folder_without_its_weights_file(saved, tmp_path):
    """The same error as a transformers folder's (tests/test_zoo.py), before timm is handed any file."""
    folder = copy_of(saved, "timm", tmp_path)
    os.remove(os.path.join(folder, "model.safetensors"))
    with pytest.raises(vitzoo.WeightsNotFoundError, match=f"{folder} has a config.json but no weights file"):
        vitzoo.load(folder)


def photo(tmp_path) -> str:
    from PIL import Image

    path = str(tmp_path / "photo.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    return path


def test_a_damaged_folder_on_the_command_line(saved, tmp_path, capsys):
    """`vitzoo predict DIR` and `vitzoo finetune --model DIR`: exit 2, one line naming the file."""
    folder = copy_of(saved, "timm", tmp_path)  # timm's own loader used to fail inside vitzoo's handler
    truncate(os.path.join(folder, "model.safetensors"))
    err = one_error_line(capsys, ["predict", folder, photo(tmp_path)])
    assert f"{folder}/model.safetensors is damaged" in err
    err = one_error_line(capsys, ["finetune", "--model", folder, "--dataset", "digits", "--max-train-samples", "64",
                                  "--max-eval-samples", "32", "--num-workers", "0", "--output-dir", str(tmp_path / "run")])
    assert f"{folder}/model.safetensors is damaged" in err


# --------------------------------------------------------------------------- what is unpickled
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_folder_with_only_pytorch_model_bin_loads_the_same_weights(saved, tmp_path, backend):
    zoo, _ = saved[backend]
    folder = copy_of(saved, backend, tmp_path)
    pickle_weights(folder)
    os.remove(os.path.join(folder, "model.safetensors"))
    pixels = torch.rand(2, 3, 16, 16)
    assert torch.equal(vitzoo.load(folder, precision="fp32").logits(pixels), zoo.logits(pixels))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_crafted_pickle_never_runs(saved, tmp_path, backend):
    """A pytorch_model.bin whose unpickling would create a file: refused by name, the file never appears; beside
    a model.safetensors it is never even opened."""
    marker = str(tmp_path / "code-ran")
    folder = copy_of(saved, backend, tmp_path)
    path = pickle_weights(folder, {"payload": Planted(marker)})
    zoo = vitzoo.load(folder, precision="fp32")  # safetensors first: the pickle is not read
    assert torch.equal(zoo.logits(torch.zeros(1, 3, 16, 16)), saved[backend][0].logits(torch.zeros(1, 3, 16, 16)))
    os.remove(os.path.join(folder, "model.safetensors"))
    with pytest.raises(vitzoo.BadInputError) as error:
        vitzoo.load(folder)
    assert f"{path} was not loaded: it is a pickle that needs io.open" in str(error.value)
    assert "weights_only=True" in str(error.value) and "model.safetensors" in str(error.value)
    assert not os.path.exists(marker)


def test_a_damaged_pickle_is_named(saved, tmp_path):
    folder = copy_of(saved, "transformers", tmp_path)
    path = pickle_weights(folder)
    os.remove(os.path.join(folder, "model.safetensors"))
    truncate(path)
    with pytest.raises(vitzoo.BadInputError, match=f"{path} cannot be read as PyTorch weights"):
        vitzoo.load(folder)


def test_pickles_need_a_torch_whose_weights_only_is_safe(saved, tmp_path, monkeypatch):
    """torch before 2.6 could be made to run code even with weights_only=True (CVE-2025-32434)."""
    folder = copy_of(saved, "transformers", tmp_path)
    path = pickle_weights(folder)
    os.remove(os.path.join(folder, "model.safetensors"))
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(vitzoo.BadInputError, match=f"{path} is a pickle, and reading one safely needs torch 2.6"):
        vitzoo.load(folder)


# --------------------------------------------------------------------------- what names a model
def test_a_model_named_by_neither_a_str_nor_a_path():
    with pytest.raises(vitzoo.BadInputError, match="must be named by a str .* got int 123"):
        vitzoo.load(123)


def test_a_hub_id_not_in_the_cache_while_offline(capsys, tmp_path):
    with pytest.raises(vitzoo.WeightsNotFoundError) as error:
        vitzoo.load("someone/vit-nobody-cached")
    message = str(error.value)
    assert "not in the local Hub cache" in message and "HF_HUB_OFFLINE=1" in message
    assert "`hf download someone/vit-nobody-cached`" in message and "local folder" in message
    assert "HF_HUB_OFFLINE=1" in one_error_line(capsys, ["predict", "someone/vit-nobody-cached", photo(tmp_path)])
    with pytest.raises(vitzoo.UnknownModelError, match="unknown model 'deit-smal'.*Did you mean: deit-small"):
        vitzoo.load("deit-smal")  # not a Hub id: no slash


def test_a_hub_id_in_the_cache_loads_and_its_damaged_weights_are_named(saved, tmp_path):
    """A repository outside the registry, as `hf download` leaves it in the Hub cache (no vitzoo.json)."""
    from tiny_hub import snapshot_dir

    zoo, folder = saved["transformers"]
    for repo, damaged in (("vitzoo-tests/cached-deit", False), ("vitzoo-tests/cached-deit-cut", True)):
        snapshot = snapshot_dir(os.environ["HF_HUB_CACHE"], repo)
        for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
            shutil.copy(os.path.join(folder, name), snapshot)
        if damaged:
            truncate(os.path.join(snapshot, "model.safetensors"))
            with pytest.raises(vitzoo.BadInputError, match=f"{snapshot}/model.safetensors is damaged"):
                vitzoo.load(repo)
            continue
        again = vitzoo.load(repo, precision="fp32")
        assert again.spec.name == again.spec.hub_id == repo
        pixels = torch.rand(2, 3, 16, 16)
        assert torch.equal(again.logits(pixels), zoo.logits(pixels))


# --------------------------------------------------------------------------- images given to predict, embed, attention_maps
@pytest.mark.parametrize("backend", BACKENDS)
def test_float_pixels_are_always_values_in_0_1(saved, backend):
    """A float batch, a list of float images and the same images as uint8 give the same results, at the model's
    size or another (resized like any image)."""
    zoo, _ = saved[backend]
    for size in (16, 17):
        uint8 = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8)
        floats = uint8.float() / 255
        expected = zoo.embed(uint8)
        assert torch.equal(zoo.embed(floats), expected) and torch.equal(zoo.embed(list(floats)), expected)
    assert torch.equal(zoo.embed(floats.permute(0, 2, 3, 1).numpy()), expected)  # a BxHxWxC array
    assert torch.equal(zoo.attention_maps(floats), zoo.attention_maps(uint8))
    assert zoo.predict(floats) == zoo.predict(uint8)
    # normalised as preprocess does it: what logits, features and attention take
    assert torch.equal(zoo.features(zoo.preprocess(floats)), expected)


@pytest.mark.parametrize(("images", "said"), [
    (torch.rand(2, 3, 16, 16) * 255, "got values in [0"),
    (torch.randn(2, 3, 16, 16), "model.logits(pixel_values), model.features(...) or model.attention(...)"),
    ([torch.rand(3, 16, 16), torch.full((3, 16, 16), -0.25)], "got values in [-0.25, -0.25]"),
    (np.full((2, 16, 16, 3), 2.0, np.float32), "got values in [2, 2]"),
    (torch.full((1, 3, 16, 16), float("nan")), "NaN or infinite"),
    (torch.zeros(2, 2, 16, 16, dtype=torch.uint8), "1, 3 or 4 channels, got 2 (a tensor of shape (2, 16, 16), read as CxHxW)"),
    (np.zeros((2, 16, 16, 2), np.uint8), "got 2 (an array of shape (16, 16, 2), read as HxWxC)"),
])
def test_images_that_are_not_pixels_are_one_line(saved, images, said):
    zoo, _ = saved["transformers"]
    for method in (zoo.predict, zoo.embed, zoo.attention_maps):
        with pytest.raises(vitzoo.BadInputError) as error:
            method(images)
        assert said in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_images_give_empty_results(saved, backend):
    zoo, _ = saved[backend]
    dim = zoo.embed(np.zeros((16, 16, 3), np.uint8)).shape[-1]
    maps = zoo.attention_maps(np.zeros((16, 16, 3), np.uint8)).shape[1:]
    for empty in ([], (), torch.zeros(0, 3, 16, 16, dtype=torch.uint8), torch.zeros(0, 3, 16, 16)):
        assert zoo.predict(empty) == []
        vectors, attention = zoo.embed(empty), zoo.attention_maps(empty)
        assert vectors.shape == (0, dim) and vectors.dtype == torch.float32 and vectors.device == zoo.device
        assert attention.shape == (0, *maps)
    with pytest.raises(vitzoo.BadInputError, match="at least one image"):
        vitzoo.precision_agreement(zoo, [], "bf16")
