"""`vitzoo evaluate`: frozen-feature k-NN and linear probe as JSON, features cached."""

from __future__ import annotations

import json
import os

import pytest

from vitzoo.cli import main

OVERRIDES = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"
COMMON = ["--dataset", "digits", "--image-size", "16", "--max-train-samples", "120", "--max-eval-samples", "40"]


def test_knn_json_and_cache(tiny_hub, tmp_path, capsys):
    cache, output = str(tmp_path / "cache"), str(tmp_path / "knn.json")
    args = ["evaluate", "dino-vits16", *COMMON, "--protocol", "knn", "--ks", "10,20,500", "--cache-dir", cache]
    assert main([*args, "--output", output]) == 0
    printed = json.loads(capsys.readouterr().out)
    with open(output) as handle:
        saved = json.load(handle)
    assert printed == saved
    assert set(saved["knn"]) == {"10", "20"}  # k above the train size dropped
    assert 0 <= saved["accuracy"] <= 1 and saved["accuracy"] == saved["knn"]["20"]["accuracy"]
    assert saved["train_samples"] == 120 and saved["eval_samples"] == 40 and saved["feature_dim"] == 32
    files = sorted(os.listdir(cache))
    assert len(files) == 2  # train and eval features, extracted once
    stamps = [os.path.getmtime(os.path.join(cache, f)) for f in files]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["knn"] == saved["knn"]
    assert [os.path.getmtime(os.path.join(cache, f)) for f in files] == stamps  # read back, not recomputed


def test_linear_probe(tiny_hub, tmp_path, capsys):
    args = ["evaluate", "deit-tiny", "--scratch", "--config-overrides", OVERRIDES, *COMMON, "--protocol", "linear",
            "--epochs", "5", "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"] == "linear" and 0 <= result["accuracy"] <= 1


def test_bad_ks(tiny_hub, tmp_path, capsys):
    assert main(["evaluate", "dino-vits16", *COMMON, "--ks", "x", "--cache-dir", str(tmp_path)]) == 2
    assert "--ks" in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["knn"])
def test_help_lists_protocols(protocol, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert protocol in capsys.readouterr().out
