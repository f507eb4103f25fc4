"""Run folders you can trust: bad inputs and faults each get one clear line (exit code 2 on the CLI, no
traceback), resuming never unpickles anything, one run per folder, broken checkpoints are skipped
or named, a full disk keeps the previous checkpoint."""

from __future__ import annotations

import errno
import json
import os
import pickle

import numpy as np
import pytest
import torch
from recipe_runs import COMMON
from safetensors.torch import load_file

from vitzoo import methods
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
    (["--epochs", "0"], "--epochs must be in [1, 100000], got 0"),
    (["--epochs", "-3"], "--epochs must be in [1, 100000]"),
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
    first = methods.run("finetune", [*RUN, "--epochs", "1", "--checkpoint-steps", "1", "--keep-checkpoints", "10",
                           "--output-dir", folder])
    before = sorted(os.listdir(folder))
    err = one_line_error(capsys, ["finetune", "--model", "vit-base-in21k", *COMMON, "--output-dir", folder])
    assert "holds another run" in err and "--resume auto" in err and "--overwrite" in err
    assert sorted(os.listdir(folder)) == before  # nothing overwritten, appended or pruned
    assert len(open(os.path.join(folder, "metrics.jsonl")).read().splitlines()) == first["steps"] + 1
    # --overwrite clears the old run first: its high-step checkpoints cannot outlive the new run's own
    second = methods.run("finetune", [*RUN, "--epochs", "1", "--batch-size", "32", "--overwrite", "--output-dir", folder])
    assert second["steps"] == 2
    assert os.listdir(os.path.join(folder, "checkpoints")) == ["step-00000002"]
    events = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
    assert max(e["step"] for e in events) == 2


def test_a_folder_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    import fcntl
    import socket

    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / ".vitzoo.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "earlier"}))
    holder = os.open(lock, os.O_RDWR)  # a live run holds the kernel lock on the file
    fcntl.flock(holder, fcntl.LOCK_EX)
    err = one_line_error(capsys, ["finetune", *RUN, "--epochs", "1", "--output-dir", str(folder)])
    assert f"in use by another run (pid {os.getppid()}" in err
    assert not (folder / "checkpoints").exists()
    os.close(holder)  # that run is gone: its record stays, naming a live pid, and counts for nothing
    methods.run("finetune", [*RUN, "--epochs", "1", "--output-dir", str(folder)])
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
    methods.run("finetune", [*RUN, "--epochs", "1", "--ema-decay", "0.9", "--output-dir", folder])
    checkpoint = checkpoint_module.latest_checkpoint(folder)
    marker = str(tmp_path / "code-ran")
    originals = {name: open(os.path.join(checkpoint, name), "rb").read() for name in os.listdir(checkpoint)}
    assert all(name.endswith((".json", ".safetensors")) for name in originals)
    # Accelerate's pickled files, planted beside ours: never read
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin", "sampler.bin"):
        with open(os.path.join(checkpoint, name), "wb") as handle:
            pickle.dump(Payload(marker), handle)
    rewrite_manifest(checkpoint)
    resumed = methods.run("finetune", [*RUN, "--epochs", "1", "--ema-decay", "0.9", "--resume", checkpoint, "--output-dir", folder])
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
            methods.run("finetune", [*RUN, "--epochs", "1", "--ema-decay", "0.9", "--resume", checkpoint, "--output-dir", folder])
        assert not os.path.exists(marker), name


def test_a_broken_newest_checkpoint_falls_back_to_the_intact_one(tmp_path, capsys):
    argv = [*RUN, "--epochs", "2", "--checkpoint-steps", "3", "--keep-checkpoints", "10", "--mixup", "0.3", "--seed", "2"]
    straight = str(tmp_path / "straight")
    methods.run("finetune", [*argv, "--output-dir", straight])
    resumed = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        methods.run("finetune", [*argv, "--output-dir", resumed], callbacks=[Crash(6)])
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
        results = methods.run("finetune", [*argv, "--resume", "auto", "--output-dir", resumed])
    assert results["steps"] == 8
    expected = load_file(os.path.join(straight, "model", "model.safetensors"))
    got = load_file(os.path.join(resumed, "model", "model.safetensors"))
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_resuming_another_model_names_both(tmp_path, capsys):
    folder = str(tmp_path / "run")
    methods.run("finetune", [*RUN, "--epochs", "1", "--output-dir", folder])
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
        methods.run("finetune", [*RUN, "--epochs", "2", "--output-dir", folder])
    names = os.listdir(os.path.join(folder, "checkpoints"))
    assert names == ["step-00000004"]  # the partial .tmp-step-00000008 is gone
    assert checkpoint_module.verify(os.path.join(folder, "checkpoints", "step-00000004")) is None
    monkeypatch.setattr(checkpoint_module, "save_file", real)
    assert methods.run("finetune", [*RUN, "--epochs", "2", "--resume", "auto", "--output-dir", folder])["steps"] == 8


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
    methods.run("finetune", [*RUN, "--epochs", "1", "--output-dir", folder])
    pixels = torch.randn(2, 3, 16, 16)
    from_run, from_model = vitzoo.load(folder), vitzoo.load(os.path.join(folder, "model"))
    assert torch.equal(from_run.logits(pixels), from_model.logits(pixels))
    assert cli(["predict", folder, str(tmp_path / "missing.png")]) == 2  # the run loads; the image is what fails


# --------------------------------------------------------------------------- data
def write_images(folder, count, value=0, size=(8, 8)):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", size, (value + index, 0, 0)).save(folder / f"{index}.png")


def test_links_are_not_followed_into_other_classes_and_no_file_counts_twice(tmp_path):
    from vitzoo.data import load_splits

    root = tmp_path / "data"
    write_images(root / "a", 2, value=10)
    write_images(root / "b", 2, value=100)
    (root / "a" / "up").symlink_to("..", target_is_directory=True)  # a loop back over every class
    (root / "b" / "copy.png").symlink_to(root / "a" / "0.png")  # one file under two names
    splits = load_splits(str(root), seed=0, val_fraction=0.5)
    assert len(splits.train) + len(splits.eval) == 4 and splits.num_classes == 2
    firsts = sorted(int(item[0][0, 0, 0]) for split in (splits.train, splits.eval) for item in split)
    assert firsts == [10, 11, 100, 101]


def test_the_label_set_comes_from_the_training_split(tmp_path):
    from vitzoo.data import load_splits

    root = tmp_path / "data"
    write_images(root / "train" / "cat", 3)
    write_images(root / "train" / "dog", 3)
    (root / "train" / "empty").mkdir()
    write_images(root / "test" / "cat", 2)
    with pytest.warns(UserWarning, match="empty hold no images"):
        splits = load_splits(str(root), seed=0, eval_split="test")
    assert splits.id2label == {0: "cat", 1: "dog"} and len(splits.eval) == 2
    write_images(root / "test" / "bird", 2)
    with pytest.raises(Exception, match="'test' split has class folder\\(s\\) bird that the training split"):
        load_splits(str(root), seed=0, eval_split="test")


def test_exif_orientation_is_applied_and_huge_images_are_refused(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from vitzoo.errors import BadInputError
    from vitzoo.images import open_image

    array = np.zeros((20, 10, 3), np.uint8)
    array[:5] = 255  # a white band at the top of a 10 wide, 20 high picture
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
    image.save(tmp_path / "portrait.jpg", exif=exif, quality=95)
    upright = np.asarray(open_image(tmp_path / "portrait.jpg"))
    assert upright.shape == (10, 20, 3) and upright[:, -5:].mean() > 200 and upright[:, :5].mean() < 50
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (64, 64)).save(tmp_path / "huge.png")
    with pytest.raises(BadInputError, match="too large to decode safely"):
        open_image(tmp_path / "huge.png")


def test_the_done_line_counts_skipped_files(tmp_path, capsys):
    root = tmp_path / "data"
    for name in ("a", "b"):
        write_images(root / name, 20, size=(16, 16))
    (root / "a" / "broken.png").write_bytes(b"not an image at all")
    methods.run("finetune", ["--model", "deit-tiny", *COMMON[:7], "--dataset", str(root), "--batch-size", "8", "--epochs", "1",
                   "--val-fraction", "0.2", "--output-dir", str(tmp_path / "run")])
    done = [line for line in capsys.readouterr().out.splitlines() if line.startswith("done:")]
    assert done and done[0].endswith("; 1 unreadable image file(s) skipped")


# --------------------------------------------------------------------------- the Python API
TINY_ZOO = dict(pretrained=False, num_labels=3, image_size=16, config_overrides=COMMON[2])


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"image_size": 0}, "image_size must be a positive"),
    ({"image_size": -16}, "image_size must be a positive"),
    ({"config_overrides": {**dict(item.split("=") for item in COMMON[2].split(",")), "patch_size": 0}},
     "patch_size=0 must be at least 1"),
    ({"device": "no-such-device"}, "unknown device"),
])
def test_bad_load_arguments_name_themselves(kwargs, named):
    import vitzoo

    with pytest.raises(vitzoo.BadInputError, match=named):
        vitzoo.load("deit-tiny", **{**TINY_ZOO, **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_asked_for_on_a_machine_without_one():
    import vitzoo

    with pytest.raises(vitzoo.BadInputError, match="sees no CUDA GPU"):
        vitzoo.load("deit-tiny", **TINY_ZOO, device="cuda")


def test_predict_checks_its_arguments_and_float_pixels():
    import vitzoo

    zoo = vitzoo.load("deit-tiny", **TINY_ZOO)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(vitzoo.BadInputError, match="top_k must be a positive"):
        zoo.predict(images, top_k=-1)
    with pytest.raises(vitzoo.BadInputError, match="batch_size must be a positive"):
        zoo.embed(images, batch_size=0)
    with pytest.raises(vitzoo.BadInputError, match="pass uint8 images"):
        zoo.predict(images.float())  # float pixels are values in [0, 1], never 0..255
    assert zoo.predict(images.float() / 255) == zoo.predict(images)


def test_predict_embed_and_attention_go_in_batches_with_the_same_results():
    import vitzoo

    zoo = vitzoo.load("deit-tiny", **TINY_ZOO)
    frames = [np.random.default_rng(i).integers(0, 256, (24, 24, 3), dtype=np.uint8) for i in range(70)]
    sizes = []
    preprocess = zoo.preprocess
    zoo.preprocess = lambda images: (sizes.append(len(images)), preprocess(images))[1]
    one_go = zoo.embed(frames, batch_size=70)
    sizes.clear()
    batched = zoo.embed(frames, batch_size=32)
    assert sizes == [32, 32, 6]
    torch.testing.assert_close(batched, one_go, rtol=1e-5, atol=1e-5)
    assert [p[0]["index"] for p in zoo.predict(frames, batch_size=7)] == [p[0]["index"] for p in zoo.predict(frames)]
    assert zoo.attention_maps(frames, batch_size=16).shape == (70, 2, 4, 4)


def test_predict_memory_stays_flat_in_the_number_of_images(tmp_path):
    """2,048 frames at 224 px: the peak memory of a process predicting them all is within a bound of
    one predicting 256 (without batches the difference would be about 1.2 GB of float pixels)."""
    import subprocess
    import sys

    script = tmp_path / "peak.py"
    script.write_text('''
import resource, sys
import numpy as np, torch
import vitzoo
torch.set_num_threads(1)
zoo = vitzoo.load("deit-tiny", pretrained=False, num_labels=3, image_size=224,
                  config_overrides="hidden_size=16,num_hidden_layers=1,num_attention_heads=1,intermediate_size=16")
frames = [np.full((64, 64, 3), i % 256, np.uint8) for i in range(int(sys.argv[1]))]
assert len(zoo.predict(frames)) == len(frames)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
''')
    peaks = {}
    for count in (256, 2048):
        done = subprocess.run([sys.executable, str(script), str(count)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        peaks[count] = int(done.stdout.split()[-1]) / 1024  # MiB
    frames_mib = (2048 - 256) * 64 * 64 * 3 / 2**20  # the extra input frames themselves: 21 MiB
    assert peaks[2048] - peaks[256] < frames_mib + 100, peaks


def test_cli_predict_batch_size_zero(capsys, tmp_path):
    err = one_line_error(capsys, ["predict", "deit-tiny", "--scratch", str(tmp_path / "x.png"), "--batch-size", "0"])
    assert "argument --batch-size: must be positive, got 0" in err


def test_a_checkpoint_of_an_older_vitzoo_resumes_its_optimizer(tmp_path):
    """Checkpoints now key the optimizer's state by parameter name; one written before that (keyed
    by the optimizer's parameter order) still loads into the same state."""
    import json

    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW([{"params": [model[0].weight]}, {"params": [model[0].bias, *model[1].parameters()],
                                                                      "lr": 1e-2}])
    model(torch.randn(5, 3)).square().sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()  # the old layout: numbered parameters, "<index>.<slot>"
    save_file({f"{index}.{slot}": value.contiguous() for index, values in saved["state"].items()
               for slot, value in values.items()}, str(tmp_path / checkpoint_module.OPTIMIZER_TENSORS))
    with open(tmp_path / checkpoint_module.OPTIMIZER_GROUPS, "w") as handle:
        json.dump({"param_groups": saved["param_groups"], "state": {}}, handle)
    fresh = torch.optim.AdamW([{"params": [model[0].weight]}, {"params": [model[0].bias, *model[1].parameters()]}])
    checkpoint_module._load_optimizer(model, fresh, str(tmp_path))
    assert fresh.param_groups[1]["lr"] == 1e-2
    for parameter in model.parameters():
        for slot in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh.state[parameter][slot], optimizer.state[parameter][slot])
