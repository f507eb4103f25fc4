"""The `vitzoo` command as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import vitzoo
from vitzoo.cli import build_parser, main


@pytest.fixture
def image_file(tmp_path, sample_image):
    path = tmp_path / "china.png"
    Image.fromarray(sample_image).save(path)
    return str(path)


def test_list_json_has_every_spec(capsys):
    assert main(["list", "--format", "json"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in specs] == vitzoo.list_models()
    deit = next(s for s in specs if s["name"] == "deit-small")
    assert deit["hub_id"] == "facebook/deit-small-patch16-224" and deit["architecture"]["hidden_size"] == 384
    assert deit["paper"]["url"].startswith("https://arxiv.org/")


def test_list_markdown_and_family(capsys):
    assert main(["list", "--family", "dino", "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 4 and all(line.startswith("|") for line in lines)


def test_info(capsys):
    assert main(["info", "deit-small-distilled"]) == 0
    out = capsys.readouterr().out
    for expected in ("facebook/deit-small-distilled-patch16-224", "22,436,432", "apache-2.0", "hidden 384",
                     "distillation token", "deit_small_distilled_patch16_224.fb_in1k"):
        assert expected in out
    assert main(["info", "deit-smal"]) == 2
    assert "deit-small" in capsys.readouterr().err


def test_predict_and_embed_on_tiny_hub(tiny_hub, image_file, tmp_path, capsys):
    assert main(["predict", "deit-small", image_file, image_file, "--top-k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert list(results) == [image_file] and len(results[image_file]) == 3
    output = str(tmp_path / "emb.npy")
    assert main(["embed", "dino-vits16", image_file, image_file, "--output", output]) == 0
    array = np.load(output)
    assert array.shape == (2, 32)
    assert np.allclose(array[0], vitzoo.load("dino-vits16").embed(image_file).numpy()[0], atol=1e-5)


def test_predict_undecodable_image(tiny_hub, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["predict", "deit-small", str(bad)]) == 2
    assert "cannot decode" in capsys.readouterr().err


def test_predict_without_cached_weights_is_one_clear_error(tmp_path, image_file):
    """A fresh process with an empty cache and no network: non-zero exit, no traceback."""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "vitzoo.cli", "predict", "deit-small", image_file],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "facebook/deit-small-patch16-224" in done.stderr and str(tmp_path / "empty-cache") in done.stderr
    assert "--scratch" in done.stderr and "Traceback" not in done.stderr
    scratch = subprocess.run([sys.executable, "-m", "vitzoo.cli", "predict", "deit-small", image_file, "--scratch"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert scratch.returncode == 0, scratch.stderr
    assert len([line for line in scratch.stdout.splitlines() if line.startswith("  0.")]) == 5
    assert "RANDOM" in scratch.stderr


def test_every_command_explains_every_flag():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        if name in ("finetune", "distill", "pretrain"):  # recipes: their dataclass help, checked in test_finetune
            continue
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"vitzoo {name} {action.option_strings or action.dest} has no help"


def test_every_package_is_installed():
    """pyproject lists packages explicitly: none may be missing, and the scripts in recipes/ are not one (the
    library never imports them; `python -m vitzoo` runs the same code from an install)."""
    import tomllib

    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "pyproject.toml"), "rb") as handle:
        setuptools = tomllib.load(handle)["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    root = os.path.dirname(vitzoo.__file__)
    found = {"vitzoo"} | {
        "vitzoo." + os.path.relpath(folder, root).replace(os.sep, ".")
        for folder, _, files in os.walk(root)
        if "__init__.py" in files and folder != root and "__pycache__" not in folder
    }
    assert found <= listed and "vitzoo.recipes" not in listed
    assert "recipes" not in setuptools.get("package-dir", {}).values()
