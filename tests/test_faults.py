"""Run folders you can trust: bad inputs and faults each get one clear line (exit code 2 on the CLI, no
traceback), resuming never unpickles anything, one run per folder, broken checkpoints are skipped
or named, a full disk keeps the previous checkpoint."""

from __future__ import annotations

import errno
import json
import os
import pickle

import pytest
import torch
from recipe_runs import COMMON
from safetensors.torch import load_file
from vitzoo.recipes import finetune

from vitzoo.cli import main as cli
from vitzoo.training import checkpoint as checkpoint_module
from vitzoo.training.objective import Callback

RUN = ["--model", "deit-tiny", *COMMON]


class Crash(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, context, path):
        if context.state.step == self.step:
            raise KeyboardInterrupt("simulated crash")


def one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()  # what earlier runs printed
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(("flags", "named"), [
    (["--epochs", "0"], "--epochs must be positive, got 0"),
    (["--epochs", "-3"], "--epochs must be positive"),
    (["--learning-rate", "-1"], "--learning-rate must be 0 or more, got -1.0"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--warmup-ratio", "1.5"], "--warmup-ratio must be in [0, 1)"),
    (["--val-fraction", "1"], "--val-fraction must be in (0, 1)"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
    (["--layer-decay", "0"], "--layer-decay must be in (0, 1]"),
])
def test_out_of_range_flags_are_one_line_errors(tmp_path, capsys, flags, named):
    folder = tmp_path / "never"
    err = one_line_error(capsys, ["finetune", *RUN, *flags, "--output-dir", str(folder)])
    assert named in err and err.startswith("vitzoo finetune: error:")
    assert not folder.exists()


def test_output_dir_that_is_a_file_or_under_one(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("not a folder")
    assert "is a file" in one_line_error(capsys, ["finetune", *RUN, "--output-dir", str(file)])
    assert "cannot be created" in one_line_error(capsys, ["finetune", *RUN, "--output-dir", str(file / "run")])


# --------------------------------------------------------------------------- one run per folder
def test_a_folder_with_another_run_is_refused_then_resumed_or_overwritten(tmp_path, capsys):
    folder = str(tmp_path / "run")
    first = finetune.main([*RUN, "--epochs", "1", "--checkpoint-steps", "1", "--keep-checkpoints", "10",
                           "--output-dir", folder])
    before = sorted(os.listdir(folder))
    err = one_line_error(capsys, ["finetune", "--model", "vit-base-in21k", *COMMON, "--output-dir", folder])
    assert "holds another run" in err and "--resume auto" in err and "--overwrite" in err
    assert sorted(os.listdir(folder)) == before  # nothing overwritten, appended or pruned
    assert len(open(os.path.join(folder, "metrics.jsonl")).read().splitlines()) == first["steps"] + 1
    # --overwrite clears the old run first: its high-step checkpoints cannot outlive the new run's own
    second = finetune.main([*RUN, "--epochs", "1", "--batch-size", "32", "--overwrite", "--output-dir", folder])
    assert second["steps"] == 2
    assert os.listdir(os.path.join(folder, "checkpoints")) == ["step-00000002"]
    events = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
    assert max(e["step"] for e in events) == 2


def test_a_folder_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    import socket

    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / ".vitzoo.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "earlier"}))
    err = one_line_error(capsys, ["finetune", *RUN, "--epochs", "1", "--output-dir", str(folder)])
    assert f"in use by another run (pid {os.getppid()}" in err
    assert not (folder / "checkpoints").exists()
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "started": "earlier"}))  # gone
    finetune.main([*RUN, "--epochs", "1", "--output-dir", str(folder)])
    assert not lock.exists()  # released at the end


# --------------------------------------------------------------------------- checkpoints
class Payload:
    """Unpickling this writes a marker file: proof that code from a checkpoint ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def rewrite_manifest(path: str) -> None:
    """What an attacker would do: make the manifest match the planted files."""
    files = sorted(name for name in os.listdir(path) if name != "manifest.json")
    manifest = {"files": {name: {"size": os.path.getsize(os.path.join(path, name)),
                                 "sha256": checkpoint_module._sha256(os.path.join(path, name))} for name in files}}
    with open(os.path.join(path, "manifest.json"), "w") as handle:
        json.dump(manifest, handle)


def test_resuming_never_unpickles_a_checkpoint_file(tmp_path):
    folder = str(tmp_path / "run")
    finetune.main([*RUN, "--epochs", "1", "--ema-decay", "0.9", "--output-dir", folder])
    checkpoint = checkpoint_module.latest_checkpoint(folder)
    marker = str(tmp_path / "code-ran")
    originals = {name: open(os.path.join(checkpoint, name), "rb").read() for name in os.listdir(checkpoint)}
    assert all(name.endswith((".json", ".safetensors")) for name in originals)
    # Accelerate's pickled files, planted beside ours: never read
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin", "sampler.bin"):
        with open(os.path.join(checkpoint, name), "wb") as handle:
            pickle.dump(Payload(marker), handle)
    rewrite_manifest(checkpoint)
    resumed = finetune.main([*RUN, "--epochs", "1", "--ema-decay", "0.9", "--resume", checkpoint, "--output-dir", folder])
    assert resumed["steps"] == 4 and not os.path.exists(marker)
    # every file a resume reads, replaced by a pickle in turn (with a matching manifest): a clear error, no code
    for name in originals:
        for planted in os.listdir(checkpoint):
            if planted.endswith((".pkl", ".bin")):
                os.remove(os.path.join(checkpoint, planted))
        for original, data in originals.items():
            with open(os.path.join(checkpoint, original), "wb") as handle:
                handle.write(data)
        with open(os.path.join(checkpoint, name), "wb") as handle:
            pickle.dump(Payload(marker), handle)
        if name != "manifest.json":
            rewrite_manifest(checkpoint)
        with pytest.raises(checkpoint_module.CheckpointError):
            finetune.main([*RUN, "--epochs", "1", "--ema-decay", "0.9", "--resume", checkpoint, "--output-dir", folder])
        assert not os.path.exists(marker), name


def test_a_broken_newest_checkpoint_falls_back_to_the_intact_one(tmp_path, capsys):
    argv = [*RUN, "--epochs", "2", "--checkpoint-steps", "3", "--keep-checkpoints", "10", "--mixup", "0.3", "--seed", "2"]
    straight = str(tmp_path / "straight")
    finetune.main([*argv, "--output-dir", straight])
    resumed = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        finetune.main([*argv, "--output-dir", resumed], callbacks=[Crash(6)])
    newest = checkpoint_module.latest_checkpoint(resumed)
    assert newest.endswith("step-00000006")
    weights = os.path.join(newest, "model.safetensors")
    with open(weights, "r+b") as handle:
        handle.truncate(os.path.getsize(weights) // 2)
    # named explicitly: a clear error
    err = one_line_error(capsys, ["finetune", *argv, "--resume", newest, "--output-dir", resumed])
    assert "model.safetensors" in err and "truncated" in err
    # --resume auto: says which it skipped and why, continues from step 4 and ends as the uninterrupted run
    with pytest.warns(UserWarning, match="skipping the broken checkpoint .*step-00000006"):
        results = finetune.main([*argv, "--resume", "auto", "--output-dir", resumed])
    assert results["steps"] == 8
    expected = load_file(os.path.join(straight, "model", "model.safetensors"))
    got = load_file(os.path.join(resumed, "model", "model.safetensors"))
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_resuming_another_model_names_both(tmp_path, capsys):
    folder = str(tmp_path / "run")
    finetune.main([*RUN, "--epochs", "1", "--output-dir", folder])
    other = "hidden_size=48,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"
    argv = [a if a != COMMON[2] else other for a in RUN]
    err = one_line_error(capsys, ["finetune", *argv, "--epochs", "2", "--resume", "auto", "--output-dir", folder])
    assert "is for deit-tiny (hidden 32" in err and "this run builds deit-tiny (hidden 48" in err


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = str(tmp_path / "run")
    real = checkpoint_module.save_file

    def fill_up(tensors, path, *args, **kwargs):
        if "step-00000008" in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", fill_up)
    with pytest.raises(checkpoint_module.DiskFullError, match="no space left on device in .*step-00000004 is intact"):
        finetune.main([*RUN, "--epochs", "2", "--output-dir", folder])
    names = os.listdir(os.path.join(folder, "checkpoints"))
    assert names == ["step-00000004"]  # the partial .tmp-step-00000008 is gone
    assert checkpoint_module.verify(os.path.join(folder, "checkpoints", "step-00000004")) is None
    monkeypatch.setattr(checkpoint_module, "save_file", real)
    assert finetune.main([*RUN, "--epochs", "2", "--resume", "auto", "--output-dir", folder])["steps"] == 8


@pytest.mark.parametrize("argv", [
    ["push", "somewhere", "--repo-id", "a/b", "--hub-token", "hf_abcdefghijklmnopqrstuvwxyz0123"],
    ["finetune", "--epochs", "hf_abcdefghijklmnopqrstuvwxyz0123"],
    ["finetune", "--hub-token", "hf_abcdefghijklmnopqrstuvwxyz0123"],
])
def test_errors_never_echo_a_token(capsys, argv):
    try:
        code = cli(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    assert code == 2
    captured = capsys.readouterr()
    assert "hf_abcdefghij" not in captured.err + captured.out


def test_a_run_folder_loads_as_its_model(tmp_path):
    import vitzoo

    folder = str(tmp_path / "run")
    finetune.main([*RUN, "--epochs", "1", "--output-dir", folder])
    pixels = torch.randn(2, 3, 16, 16)
    from_run, from_model = vitzoo.load(folder), vitzoo.load(os.path.join(folder, "model"))
    assert torch.equal(from_run.logits(pixels), from_model.logits(pixels))
    assert cli(["predict", folder, str(tmp_path / "missing.png")]) == 2  # the run loads; the image is what fails
