"""Runs that restart (issue 28): a resume that cannot resume says so and keeps the run as it was, a resume on
other data is refused, a finished run resumed gets a lost model/ back and keeps its results.json, checkpoint JSON
of the wrong shape counts as broken, a training split smaller than one batch is refused before training, and
SIGINT/SIGTERM end the step, save a checkpoint, free the folder and exit 130/143."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest
import torch
from recipe_runs import COMMON
from safetensors.torch import load_file
from test_faults import one_line_error, rewrite_manifest, write_images

from vitzoo import methods
from vitzoo.cli import main as cli
from vitzoo.data import load_splits
from vitzoo.training import checkpoint as checkpoint_module
from vitzoo.training.engine import RunFolder
from vitzoo.training.fit import describe_data
from vitzoo.training.objective import Callback

RUN = ["--model", "deit-tiny", *COMMON, "--epochs", "1", "--checkpoint-steps", "2"]  # checkpoints at steps 2 and 4
LOCK = ".vitzoo.lock"
MAIN = types.SimpleNamespace(is_main_process=True)  # all a RunFolder asks of its accelerator before training


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("finished") / "run")
    methods.run("finetune", [*RUN, "--output-dir", folder])
    return folder


@pytest.fixture
def run_copy(finished_run, tmp_path) -> str:
    """A copy of the finished tiny run of 4 steps (evaluated at step 4), for one test to change."""
    return shutil.copytree(finished_run, str(tmp_path / "run"))


def snapshot(folder: str) -> dict[str, bytes]:
    """Every file of the run folder (the lock aside), by path, with its bytes."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name != LOCK:
                path = os.path.join(root, name)
                found[os.path.relpath(path, folder)] = open(path, "rb").read()
    return found


def checkpoint(folder: str, step: int) -> str:
    return os.path.join(folder, "checkpoints", f"step-{step:08d}")


def read_lines(path: str) -> list[str]:
    try:
        with open(path) as handle:
            return handle.readlines()
    except FileNotFoundError:
        return []


def write_state(path: str, state) -> None:
    """Replace a checkpoint's trainer_state.json and make its manifest match, as a hand edit that knows the format would."""
    with open(os.path.join(path, "trainer_state.json"), "w") as handle:
        json.dump(state, handle)
    rewrite_manifest(path)


# --------------------------------------------------------------------------- case 1
def test_resume_auto_without_a_usable_checkpoint_stops_and_keeps_the_run(run_copy, capsys, tmp_path):
    weights = os.path.join(checkpoint(run_copy, 4), "model.safetensors")
    with open(weights, "r+b") as handle:
        handle.truncate(100)
    os.remove(os.path.join(checkpoint(run_copy, 2), "manifest.json"))
    before = snapshot(run_copy)
    err = one_line_error(capsys, ["finetune", *RUN, "--resume", "auto", "--output-dir", run_copy])
    assert "holds a run (args.json, metrics.jsonl, results.json, checkpoints, model) but no checkpoint" in err
    assert re.search(r"skipped \S*step-00000004: model.safetensors has 100 bytes.*"
                     r"skipped \S*step-00000002: it has no manifest.json.*--overwrite", err), err
    assert snapshot(run_copy) == before and not os.path.exists(os.path.join(run_copy, LOCK))

    shutil.rmtree(os.path.join(run_copy, "checkpoints"))  # the checkpoints removed: the same refusal
    before = snapshot(run_copy)
    err = one_line_error(capsys, ["finetune", *RUN, "--resume", "auto", "--output-dir", run_copy])
    assert "(args.json, metrics.jsonl, results.json, model) but no checkpoint to continue it from (checkpoints/ holds none)" in err
    assert snapshot(run_copy) == before

    # what is not refused: --overwrite clears the run first; a folder with no run is a new run
    cleared = RunFolder(run_copy, MAIN, resume="auto", overwrite=True)
    assert cleared.resume_from() is None and os.listdir(run_copy) == [LOCK]
    cleared.release()
    empty = RunFolder(str(tmp_path / "new"), MAIN, resume="auto")
    assert empty.resume_from() is None
    empty.release()


# --------------------------------------------------------------------------- case 2
def test_resuming_on_other_data_is_refused_naming_both(run_copy, capsys):
    before = snapshot(run_copy)
    err = one_line_error(capsys, ["finetune", *RUN, "--dataset", "synthetic:80:16", "--resume", "auto",
                                  "--output-dir", run_copy])
    assert re.search(r"step-00000004 was trained on digits \(train 64, eval 32 images, 10 classes, fingerprint \w+\), "
                     r"this run loads synthetic:80:16 \(train 64, eval 16 images", err), err
    # the same dataset and split sizes, other images (another seed draws them): the fingerprint tells them apart
    err = one_line_error(capsys, ["finetune", *RUN, "--seed", "7", "--resume", "auto", "--output-dir", run_copy])
    fingerprints = re.findall(r"train 64, eval 32 images, 10 classes, fingerprint (\w+)", err)
    assert len(fingerprints) == 2 and fingerprints[0] != fingerprints[1], err
    assert snapshot(run_copy) == before  # args.json and results.json as the first dataset left them


def test_the_data_fingerprint_reads_the_files_under_their_folder(tmp_path):
    write_images(tmp_path / "a" / "data" / "cat", 4)
    write_images(tmp_path / "a" / "data" / "dog", 4, value=100)
    shutil.copytree(tmp_path / "a" / "data", tmp_path / "moved")
    args = types.SimpleNamespace(dataset="data")
    here, moved = (describe_data(args, load_splits(str(path), seed=0)) for path in (tmp_path / "a" / "data",
                                                                                      tmp_path / "moved"))
    assert here == moved
    os.rename(tmp_path / "moved" / "dog" / "3.png", tmp_path / "moved" / "dog" / "9.png")  # another file
    assert describe_data(args, load_splits(str(tmp_path / "moved"), seed=0))["fingerprint"] != here["fingerprint"]


# --------------------------------------------------------------------------- cases 3 and 5
def test_a_finished_run_whose_model_is_gone_gets_it_back(run_copy, capsys):
    original = load_file(os.path.join(run_copy, "model", "model.safetensors"))
    results = open(os.path.join(run_copy, "results.json"), "rb").read()
    shutil.rmtree(os.path.join(run_copy, "model"))
    methods.run("finetune", [*RUN, "--resume", "auto", "--output-dir", run_copy])
    rebuilt = load_file(os.path.join(run_copy, "model", "model.safetensors"))
    assert rebuilt.keys() == original.keys() and all(torch.equal(rebuilt[key], original[key]) for key in original)
    out = capsys.readouterr().out
    assert "model was missing: rebuilt from" in out and f"model in {os.path.join(run_copy, 'model')}" in out
    assert open(os.path.join(run_copy, "results.json"), "rb").read() == results

    # model/ held an earlier step than the newest checkpoint: nothing to rebuild it from, said in one line
    write_state(checkpoint(run_copy, 4), {**json.load(open(os.path.join(checkpoint(run_copy, 4), "trainer_state.json"))),
                                          "best": {"accuracy": 0.5, "step": 2, "epoch": 0.5}})
    shutil.rmtree(os.path.join(run_copy, "model"))
    err = one_line_error(capsys, ["finetune", *RUN, "--resume", "auto", "--output-dir", run_copy])
    assert "model is missing: it held the weights of step 2" in err and "resuming from step 4" in err
    assert "--overwrite" in err and not os.path.exists(os.path.join(run_copy, "model"))


def test_resuming_a_finished_run_leaves_its_results_untouched(run_copy):
    saved = {name: open(os.path.join(run_copy, name), "rb").read() for name in ("results.json", "metrics.jsonl")}
    results = methods.run("finetune", [*RUN, "--resume", "auto", "--output-dir", run_copy])
    assert {name: open(os.path.join(run_copy, name), "rb").read() for name in saved} == saved
    assert results == json.loads(saved["results.json"])  # its timings included, not this call's


# --------------------------------------------------------------------------- case 4
def test_keep_checkpoints_zero_is_refused_naming_the_range(capsys, tmp_path):
    err = one_line_error(capsys, ["finetune", *RUN, "--keep-checkpoints", "0", "--output-dir", str(tmp_path / "run")])
    assert "--keep-checkpoints must be positive, got 0" in err and not (tmp_path / "run").exists()
    with pytest.raises(SystemExit):
        cli(["finetune", "--help"])
    assert re.search(r"--keep-checkpoints.*\s+.*1 or more", capsys.readouterr().out)


# --------------------------------------------------------------------------- case 6
def test_a_training_split_smaller_than_the_batch_is_refused_before_training(capsys, tmp_path):
    folder = tmp_path / "run"
    err = one_line_error(capsys, ["finetune", *RUN, "--max-train-samples", "10", "--output-dir", str(folder)])
    assert "the training split has 10 images, fewer than --batch-size 16" in err and "lower --batch-size" in err
    assert not folder.exists()  # nothing was written, so the folder the run made went with the refusal


# --------------------------------------------------------------------------- case 7
@pytest.mark.parametrize(("state", "reason"), [
    ([], "its trainer_state.json is unusable: it holds a JSON list, not an object"),
    ({"step": "x", "epoch": 1}, "its trainer_state.json is unusable: its 'step' is 'x', not int"),
    ({"step": 4, "best": [0.5]}, "its 'best' is [0.5], not dict or NoneType"),
])
def test_checkpoint_json_of_the_wrong_shape_is_a_broken_checkpoint(tmp_path, state, reason):
    path = str(tmp_path / "checkpoints" / "step-00000004")
    os.makedirs(path)
    write_state(path, state)
    assert reason in checkpoint_module.verify(path)


def test_a_wrong_shape_is_skipped_under_auto_and_named_under_a_path(run_copy, capsys):
    newest = checkpoint(run_copy, 4)
    write_state(newest, {"step": "x"})
    folder = RunFolder(run_copy, MAIN, resume="auto")
    with pytest.warns(UserWarning, match=r"skipping the broken checkpoint \S*step-00000004: its trainer_state.json is "
                                         r"unusable: its 'step' is 'x'"):
        assert folder.resume_from() == checkpoint(run_copy, 2)
    folder.release()
    err = one_line_error(capsys, ["finetune", *RUN, "--resume", newest, "--output-dir", run_copy])
    assert f"cannot resume from {newest}: its trainer_state.json is unusable" in err
    with open(os.path.join(newest, "manifest.json"), "w") as handle:
        json.dump([], handle)
    assert "its manifest.json is not of the shape vitzoo writes" in checkpoint_module.verify(newest)


# --------------------------------------------------------------------------- signals (case 8)
class SignalAt(Callback):
    """Sends this process `number` after optimizer step `step`, as Ctrl-C or a scheduler would."""

    def __init__(self, number: int, step: int) -> None:
        self.number, self.step = number, step

    def on_step(self, context) -> None:
        if context.state.step == self.step:
            signal.raise_signal(self.number)


def test_sigint_ends_the_step_saves_it_and_exits_130(tmp_path, capsys, monkeypatch):
    folder = str(tmp_path / "run")
    plain = methods.run
    monkeypatch.setattr(methods, "run", lambda recipe, argv: plain(recipe, argv, callbacks=[SignalAt(signal.SIGINT, 3)]))
    handler = signal.getsignal(signal.SIGINT)
    assert cli(["finetune", *RUN, "--epochs", "2", "--output-dir", folder]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "vitzoo finetune: interrupted at step 3; resume with --resume auto"
    assert "Traceback" not in err and signal.getsignal(signal.SIGINT) is handler
    assert [os.path.basename(path) for path in checkpoint_module.list_checkpoints(folder)] == ["step-00000002",
                                                                                              "step-00000003"]
    assert checkpoint_module.verify(checkpoint(folder, 3)) is None
    assert not os.path.exists(os.path.join(folder, LOCK)) and not os.path.exists(os.path.join(folder, "results.json"))


def test_sigterm_in_a_real_process_exits_143_and_resumes(tmp_path, capsys):
    folder = str(tmp_path / "run")
    command = [sys.executable, "-m", "vitzoo.cli", "finetune", *RUN, "--epochs", "300", "--output-dir", folder]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics, deadline = os.path.join(folder, "metrics.jsonl"), time.monotonic() + 120
    while not any('"loss"' in line for line in read_lines(metrics)):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 143, err[-2000:]
    last = err.strip().splitlines()[-1]
    stopped = re.fullmatch(r"vitzoo finetune: interrupted at step (\d+); resume with --resume auto", last)
    assert stopped and "Traceback" not in err, err[-2000:]
    step = int(stopped.group(1))
    assert checkpoint_module.verify(checkpoint(folder, step)) is None and not os.path.exists(os.path.join(folder, LOCK))
    epochs = step // 4 + 2  # at least one more step
    results = methods.run("finetune", [*RUN, "--epochs", str(epochs), "--resume", "auto", "--output-dir", folder])
    assert f"resumed from {checkpoint(folder, step)}: epoch {step // 4}, step {step}" in capsys.readouterr().out
    assert results["steps"] == 4 * epochs
