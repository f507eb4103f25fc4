"""Curves for every run: metrics.jsonl events become per-step and per-evaluation curves,
`curves.png` is drawn by the engine for every recipe, and `vitzoo plot` overlays several runs."""

from __future__ import annotations

import json
import os

import pytest
from recipe_runs import METHODS

from vitzoo.cli import main as cli
from vitzoo.plots import run_curves

EVENTS = [
    {"step": 0, "epoch": 0, "eval": True, "knn_accuracy": 0.5},
    {"step": 1, "epoch": 0.5, "loss": 2.0, "lr": 1e-3, "teacher_entropy": 3.1, "images_per_second": 10.0},
    {"step": 2, "epoch": 1, "loss": 1.5, "lr": 5e-4, "teacher_entropy": 2.9, "images_per_second": 11.0},
    {"step": 2, "epoch": 1, "eval": True, "knn_accuracy": 0.7, "samples": 32},
]


def test_events_become_curves_per_step_and_per_evaluation():
    curves = run_curves(EVENTS)
    assert curves["loss"] == [(1, 2.0), (2, 1.5)]
    assert curves["lr"] == [(1, 1e-3), (2, 5e-4)]
    assert curves["teacher_entropy"] == [(1, 3.1), (2, 2.9)]
    assert curves["eval knn_accuracy"] == [(0, 0.5), (1, 0.7)]
    assert "images_per_second" not in curves and "eval samples" not in curves


@pytest.mark.parametrize("method", list(METHODS))
def test_every_recipe_draws_curves_png(tmp_path, method):
    recipe, argv = METHODS[method]
    folder = tmp_path / method
    recipe.main([*argv, "--epochs", "1", "--output-dir", str(folder)])
    assert (folder / "curves.png").stat().st_size > 1000


def test_vitzoo_plot_draws_two_runs_together(tmp_path, capsys):
    recipe, argv = METHODS["finetune"]
    for seed in ("0", "1"):
        recipe.main([*argv, "--epochs", "1", "--seed", seed, "--output-dir", str(tmp_path / f"seed{seed}")])
    output = tmp_path / "both.png"
    assert cli(["plot", str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--output", str(output), "--labels", "a,b"]) == 0
    assert output.stat().st_size > 1000 and "curves of 2 run(s)" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert cli(["plot", str(tmp_path / "empty")]) == 2
    assert "vitzoo plot: error: " in (err := capsys.readouterr().err) and "has no metrics.jsonl" in err
    assert cli(["plot", str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--labels", "a"]) == 2
    assert "--labels names 1 runs, 2 were given" in capsys.readouterr().err
    with open(tmp_path / "seed0" / "metrics.jsonl") as handle:
        assert any(json.loads(line).get("eval") for line in handle)
    assert os.path.exists(tmp_path / "seed0" / "curves.png")
