"""Writers of whole folders (save_pretrained, `vitzoo convert --output`, push's export, a run's model/) never
delete a file vitzoo did not write, clean up only the scratch folders vitzoo left, and meet a full disk with
one line that says what is intact."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import subprocess
import sys

import pytest
import torch
from recipe_runs import ARCH, COMMON
from test_faults import one_line_error

import vitzoo
from vitzoo import publish
from vitzoo.cli import main as cli
from vitzoo.errors import BadInputError, DiskFullError
from vitzoo.io import atomic_write_bytes

MODEL_FILES = ["config.json", "model.safetensors", "preprocessor_config.json", "vitzoo.json"]
TIMM_FILES = ["config.json", "model.safetensors", "vitzoo.json"]
PIXELS = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def tiny(seed: int = 0) -> vitzoo.ZooModel:
    torch.manual_seed(seed)
    return vitzoo.load("deit-tiny", pretrained=False, num_labels=3, image_size=16, config_overrides=ARCH)


@pytest.fixture(scope="module")
def zoo() -> vitzoo.ZooModel:
    return tiny()


def listing(folder) -> dict[str, str]:
    """Every file under `folder` (hidden ones too), by relative path, with its SHA-256; folders as "folder"."""
    found = {}
    for root, folders, names in os.walk(folder):
        found.update({os.path.relpath(os.path.join(root, name), folder): "folder" for name in folders})
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def user_project(folder) -> None:
    os.makedirs(os.path.join(folder, "src"), exist_ok=True)
    with open(os.path.join(folder, "src", "a.py"), "w") as handle:
        handle.write("print('mine')\n")
    with open(os.path.join(folder, "run.py"), "w") as handle:
        handle.write("import vitzoo\n")


# --------------------------------------------------------------------------- save_pretrained
def test_save_pretrained_into_the_current_folder_refuses_and_deletes_nothing(zoo, tmp_path, monkeypatch):
    project, home = tmp_path / "project", tmp_path / "home"
    user_project(project)
    user_project(home)
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(home))
    before = listing(tmp_path)
    for target, named in ((".", "current folder"), ("..", "current folder"), (os.sep, "current folder"),
                          (str(home), "home folder")):
        for overwrite in (False, True):
            with pytest.raises(BadInputError, match=f"is the {named}|is your {named}") as refusal:
                zoo.save_pretrained(target, overwrite=overwrite)
            assert "choose a new folder" in str(refusal.value)
    assert listing(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["home", "project"]


def test_save_pretrained_refuses_a_folder_with_foreign_files_even_with_overwrite(zoo, tmp_path):
    user_project(tmp_path / "mine")
    (tmp_path / "mine" / "config.json").write_text("{}")  # a name vitzoo writes, but not vitzoo's file
    zoo.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "notes.txt").write_text("keep me")  # someone's file in a model folder
    before = listing(tmp_path)
    for folder, foreign in (("mine", "config.json, run.py, src"), ("model", "notes.txt")):
        for overwrite in (False, True):
            with pytest.raises(BadInputError, match="files vitzoo did not write") as refusal:
                tiny(1).save_pretrained(tmp_path / folder, overwrite=overwrite)
            message = str(refusal.value)
            assert f"({foreign})" in message and "even with overwrite=True" in message
            assert "choose a new or empty folder" in message and "\n" not in message
    assert listing(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["mine", "model"]


def test_save_pretrained_twice_replaces_its_own_folder(zoo, tmp_path):
    folder = tmp_path / "model"
    tiny(1).save_pretrained(folder)
    zoo.save_pretrained(folder)  # its own earlier output: replaced without overwrite
    assert sorted(os.listdir(folder)) == MODEL_FILES and os.listdir(tmp_path) == ["model"]  # no scratch left
    assert torch.equal(vitzoo.load(folder).logits(PIXELS), zoo.logits(PIXELS))
    os.makedirs(tmp_path / "empty")
    zoo.save_pretrained(tmp_path / "empty")  # an empty folder is taken
    assert sorted(os.listdir(tmp_path / "empty")) == MODEL_FILES


def test_overwrite_replaces_another_vitzoo_output_whole_and_nothing_else(zoo, tmp_path):
    """A convert output is vitzoo's too, of another kind: refused without overwrite, replaced with it (none of
    its files stays mixed with the model), while the folder beside it is untouched."""
    zoo.save_pretrained(tmp_path / "model")
    assert cli(["convert", str(tmp_path / "model"), "--to", "timm", "--output", str(tmp_path / "timm")]) == 0
    assert sorted(os.listdir(tmp_path / "timm")) == TIMM_FILES
    other = tiny(1)
    timm_before, model_before = listing(tmp_path / "timm"), listing(tmp_path / "model")
    with pytest.raises(BadInputError, match="holds a vitzoo convert output, not a vitzoo model folder .*overwrite=True"):
        other.save_pretrained(tmp_path / "timm")
    assert listing(tmp_path / "timm") == timm_before
    other.save_pretrained(tmp_path / "timm", overwrite=True)
    assert sorted(os.listdir(tmp_path / "timm")) == MODEL_FILES
    assert torch.equal(vitzoo.load(tmp_path / "timm").logits(PIXELS), other.logits(PIXELS))
    assert listing(tmp_path / "model") == model_before and sorted(os.listdir(tmp_path)) == ["model", "timm"]


def test_scratch_left_by_a_killed_writer_is_removed_and_nothing_else(zoo, tmp_path):
    """`.model.tmp-*` folders of a writer that is gone go at the next write to `model`; a live writer's
    scratch, a file of that name and folders merely named alike stay."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])  # a pid that no longer runs
    ended.wait()
    host = socket.gethostname()
    left = [f".model.tmp-{ended.pid}@{host}-abcd_123", ".model.tmp-k2j4h5g6",  # the latter: before pids were named
            f".model.old-{ended.pid}@{host}-zzzz9999"]
    kept = [f".model.tmp-{os.getpid()}@{host}-live1234", ".model.tmp-notes", ".model.tmp-my_files_", ".other.tmp-k2j4h5g6",
            f".model.tmp-{ended.pid}@another-host-abcd1234"]
    zoo.save_pretrained(tmp_path / "model")
    for name in left + kept:
        os.makedirs(tmp_path / name / "sub")
        (tmp_path / name / "sub" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".model.tmp-filefile").write_text("a file, not a scratch folder")
    zoo.save_pretrained(tmp_path / "model")
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, ".model.tmp-filefile", "model"])
    partial = {"sub": "folder", "sub/model.safetensors": hashlib.sha256(b"partial").hexdigest()}
    assert all(listing(tmp_path / name) == partial for name in kept)


# --------------------------------------------------------------------------- full disk
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_saving_a_model_keeps_the_previous_one(zoo, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    zoo.save_pretrained(folder)
    before = listing(tmp_path)
    monkeypatch.setattr(type(zoo.model), "save_pretrained", no_space)
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {folder}: its previous content is "
                                            "intact; free some space"):
        tiny(1).save_pretrained(folder)
    assert listing(tmp_path) == before and os.listdir(tmp_path) == ["model"]  # the scratch folder went too

    # a kill between the two renames left the previous model in `.model.old-*` and no `model`: it is put back
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    os.rename(folder, tmp_path / f".model.old-{ended.pid}@{socket.gethostname()}-abcd1234")
    with pytest.raises(DiskFullError, match="its previous content is intact"):
        tiny(1).save_pretrained(folder)
    assert listing(tmp_path) == before


def test_a_full_disk_in_convert_is_one_line(zoo, tmp_path, monkeypatch, capsys):
    zoo.save_pretrained(tmp_path / "model")
    monkeypatch.setattr("timm.models.save_for_hf", no_space)
    assert cli(["convert", str(tmp_path / "model"), "--to", "timm", "--output", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # the refusal alone: no progress line before it, no traceback
    assert err[0] == (f"vitzoo convert: error: no space left on device while writing {tmp_path / 't'}: nothing was "
                      "written there; free some space and try again")
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_atomic_write_bytes_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_bytes(str(path), b"old")
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError, match="results.json: its previous content is intact"):
        atomic_write_bytes(str(path), b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["results.json"]


def test_curves_png_on_a_full_disk_never_stops_the_run(tmp_path, monkeypatch, capsys):
    import vitzoo.io

    real = vitzoo.io.atomic_write_bytes

    def full_for_curves(path, data):
        if path.endswith("curves.png"):
            raise DiskFullError(f"no space left on device while writing {path}: nothing was written there")
        return real(path, data)

    monkeypatch.setattr(vitzoo.io, "atomic_write_bytes", full_for_curves)
    run = tmp_path / "run"
    assert cli(["finetune", "--model", "deit-tiny", *COMMON, "--max-train-samples", "32", "--max-eval-samples", "16",
                "--epochs", "1", "--output-dir", str(run)]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: curves.png not updated")]
    assert len(warnings) == 1, out  # drawn after the evaluation and at the end: said once
    assert "no space left on device" in warnings[0] and "the run goes on without it" in warnings[0]
    assert os.path.isfile(run / "results.json") and sorted(os.listdir(run / "model")) == MODEL_FILES
    assert not os.path.exists(run / "curves.png")


# --------------------------------------------------------------------------- a run's model/
def test_a_runs_model_folder_never_loses_a_foreign_file(zoo, tmp_path):
    from accelerate import Accelerator

    from vitzoo.training.engine import save_model

    model_dir = tmp_path / "run" / "model"
    save_model(Accelerator(cpu=True), zoo, zoo.model, str(model_dir))
    save_model(Accelerator(cpu=True), zoo, zoo.model, str(model_dir))  # the run's next best: replaced
    (model_dir / "notes.txt").write_text("mine")
    before = listing(tmp_path)
    with pytest.raises(BadInputError, match=r"model is not a vitzoo model folder .*\(notes.txt\)"):
        save_model(Accelerator(cpu=True), zoo, zoo.model, str(model_dir))
    assert listing(tmp_path) == before


# --------------------------------------------------------------------------- vitzoo convert
def test_convert_refuses_its_own_source_folder_and_what_holds_it(zoo, tmp_path, capsys):
    model, run = tmp_path / "run" / "model", tmp_path / "run"
    zoo.save_pretrained(model)
    before = listing(tmp_path)
    for source, output in ((model, model), (model, run), (run, model), (run, run)):
        err = one_line_error(capsys, ["convert", str(source), "--to", "timm", "--output", str(output), "--overwrite"])
        assert f"--output {output} is the model it reads or holds it" in err and "choose a new folder" in err
    assert listing(tmp_path) == before


def test_convert_into_a_foreign_folder_is_refused_before_loading(tmp_path, capsys):
    user_project(tmp_path / "mine")
    before = listing(tmp_path)
    for flags in ([], ["--overwrite"]):
        # pretrained deit-tiny is not in this offline cache: the folder is refused before any load is tried
        err = one_line_error(capsys, ["convert", "deit-tiny", "--to", "timm", "--output", str(tmp_path / "mine"),
                                      *flags])
        assert f"--output {tmp_path / 'mine'} is not a vitzoo convert output" in err
        assert "(run.py, src)" in err and "even with --overwrite" in err
    assert listing(tmp_path) == before


def test_convert_overwrite_replaces_its_own_earlier_output_and_a_model_folder(zoo, tmp_path, capsys):
    zoo.save_pretrained(tmp_path / "model")
    tiny(1).save_pretrained(tmp_path / "saved")
    output = str(tmp_path / "timm")
    assert cli(["convert", str(tmp_path / "model"), "--to", "timm", "--output", output]) == 0
    first = listing(output)
    (tmp_path / "timm" / "model.safetensors").write_bytes(b"damaged")
    assert cli(["convert", str(tmp_path / "model"), "--to", "timm", "--output", output, "--overwrite"]) == 0
    assert listing(output) == first and sorted(os.listdir(tmp_path)) == ["model", "saved", "timm"]

    saved = listing(tmp_path / "saved")
    err = one_line_error(capsys, ["convert", str(tmp_path / "model"), "--to", "timm", "--output",
                                  str(tmp_path / "saved")])
    assert "holds a vitzoo model folder (save_pretrained), not a vitzoo convert output; replace it with --overwrite" in err
    assert listing(tmp_path / "saved") == saved
    assert cli(["convert", str(tmp_path / "model"), "--to", "timm", "--output", str(tmp_path / "saved"),
                "--overwrite"]) == 0
    assert listing(tmp_path / "saved") == first


def test_convert_help_names_overwrite(capsys):
    with pytest.raises(SystemExit):
        cli(["convert", "--help"])
    assert "--overwrite" in capsys.readouterr().out


# --------------------------------------------------------------------------- push's export folder
def test_export_refuses_another_vitzoo_folder_and_replaces_its_own(zoo, tmp_path):
    training = {"recipe": "finetune", "dataset": "digits", "base_model": "deit-tiny", "pretrained": False}
    zoo.save_pretrained(tmp_path / "model", extra_metadata={"training": training})
    zoo.save_pretrained(tmp_path / "other")
    other = listing(tmp_path / "other")
    with pytest.raises(BadInputError, match="--export-dir .*other holds a vitzoo model folder .* choose another folder"):
        publish.export_model(tmp_path / "model", "someone/x", tmp_path / "other")
    assert listing(tmp_path / "other") == other
    first = publish.export_model(tmp_path / "model", "someone/x", tmp_path / "export")
    again = publish.export_model(tmp_path / "model", "someone/y", tmp_path / "export")
    assert [name for name, _ in again.files] == [name for name, _ in first.files]
    assert sorted(os.listdir(tmp_path)) == ["export", "model", "other"]


# --------------------------------------------------------------------------- vitzoo compare's run folders
def test_compare_starts_a_run_of_other_settings_over_without_deleting_the_folder(tmp_path, monkeypatch):
    """A run folder of other settings is trained again with --overwrite (the run folder clears its own run
    files), not deleted whole: a file someone put there stays."""
    from vitzoo.compare.config import CompareConfig
    from vitzoo.compare.runner import _finetune_one
    from vitzoo.methods import finetune

    calls = []

    def train(arguments, callbacks):
        calls.append((arguments.resume, arguments.overwrite))
        return {"eval": {"accuracy": 0.5, "top5": 1.0}}

    monkeypatch.setattr(finetune, "train", train)
    config = CompareConfig(models=["deit-tiny"], dataset="digits", scratch=True, epochs=1, output_dir=str(tmp_path))
    run_dir, _ = _finetune_one("deit-tiny", config, config.seed, None)
    with open(os.path.join(run_dir, "notes.txt"), "w") as handle:
        handle.write("mine")
    _finetune_one("deit-tiny", config, config.seed, None)  # same settings, no results.json: resumed
    config.epochs = 2
    _finetune_one("deit-tiny", config, config.seed, None)
    assert calls == [("auto", False), ("auto", False), (None, True)]
    assert open(os.path.join(run_dir, "notes.txt")).read() == "mine"
