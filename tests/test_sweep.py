"""A generated sweep over every command: each numeric flag given values outside any domain it could have
(negative, not a number, infinite, not a number at all) and each path flag given a path that cannot serve.

Every case must end with exit code 2 and one line on stderr that names the flag or path, before any work:
no traceback, and nothing created, changed or deleted in the folder the command runs in. The cases are read
from the parsers themselves, so a flag added tomorrow joins the sweep without a line here.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import typing

import pytest
from recipe_runs import METHODS

from vitzoo.cli import build_parser
from vitzoo.cli import main as cli
from vitzoo.methods import RECIPES, arguments_class

BAD_INTS = ["-1", "1.5", "abc"]
BAD_FLOATS = ["-1", "nan", "inf", "abc"]
MISSING = "no-such-folder/no-such-file.png"


def _run(argv: list[str]) -> int:
    try:
        return cli(argv)
    except SystemExit as exit_:  # argparse refuses by exiting
        return int(exit_.code or 0)


def _tree(root: str) -> dict[str, str]:
    """Every file under `root` with a hash of its content: what a refused command must leave as it was."""
    found = {}
    for folder, subfolders, files in os.walk(root):
        for name in files + [d for d in subfolders if not os.listdir(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = (hashlib.sha256(open(path, "rb").read()).hexdigest()
                                                  if os.path.isfile(path) else "folder")
    return found


@pytest.fixture
def workdir(tmp_path, monkeypatch, sample_image):
    """A folder a user works in: an image, a script, a run folder of theirs; the command runs from here."""
    from PIL import Image

    Image.fromarray(sample_image[:64, :64]).save(tmp_path / "cat.jpg")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('mine')\n")
    (tmp_path / "notes.txt").write_text("a file where a folder is expected\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused_in_one_line(capsys, workdir, argv: list[str], named: str) -> None:
    before = _tree(str(workdir))
    capsys.readouterr()
    code = _run(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"{argv} exited {code}: {err[-2000:]}"
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert named in err, err
    assert _tree(str(workdir)) == before, f"{argv} changed the folder it ran in"


# --------------------------------------------------------------------------- the subcommands (argparse)
# each subcommand's required arguments, as a user would give them
REQUIRED = {
    "bench": [], "compare": [], "list": [], "info": ["deit-tiny"], "parity": ["deit-tiny", "--scratch"],
    "convert": ["deit-tiny", "--scratch", "--to", "timm", "--output", "export"],
    "evaluate": ["deit-tiny", "--scratch"], "predict": ["deit-tiny", "--scratch", "cat.jpg"],
    "embed": ["deit-tiny", "--scratch", "cat.jpg", "--output", "vectors.safetensors"],
    "plot": ["src"], "push": ["src", "--repo-id", "you/model", "--dry-run"],
}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {name: sub for name, sub in choices.items() if name not in RECIPES}


def _numeric(action: argparse.Action) -> list[str]:
    kind = getattr(action, "type", None)
    if kind is float or getattr(kind, "number", None) is float:
        return BAD_FLOATS
    if kind is int or getattr(kind, "number", None) is int:
        return BAD_INTS
    return []


SUBCOMMAND_CASES = [
    pytest.param(name, action.option_strings[-1], value, id=f"{name} {action.option_strings[-1]} {value}")
    for name, sub in _subcommands().items() for action in sub._actions if action.option_strings
    for value in _numeric(action)
]


def test_every_subcommand_is_in_the_sweep():
    assert set(_subcommands()) == set(REQUIRED)


@pytest.mark.parametrize(("command", "flag", "value"), SUBCOMMAND_CASES)
def test_subcommand_numeric_flags_out_of_domain(capsys, workdir, command, flag, value):
    refused_in_one_line(capsys, workdir, [command, *REQUIRED[command], flag, value], flag)


# --------------------------------------------------------------------------- the recipes (dataclasses)
def _number_type(annotation: typing.Any) -> type | None:
    if isinstance(annotation, str):
        annotation = annotation.replace(" | None", "")
        return {"int": int, "float": float}.get(annotation)
    return annotation if annotation in (int, float) else None


def _recipe_cases() -> list:
    """Each numeric field once, in the first method that has it (the check is shared by all)."""
    seen, cases = set(), []
    for method, (module, base) in METHODS.items():
        recipe = module.name
        cls = arguments_class(recipe, None if recipe == "finetune" else method)
        for field in dataclasses.fields(cls):
            kind = _number_type(field.type)
            if kind is None or field.name in seen:
                continue
            seen.add(field.name)
            for value in BAD_INTS if kind is int else BAD_FLOATS:
                flag = "--" + field.name.replace("_", "-")
                cases.append(pytest.param(recipe, base, flag, value, id=f"{method} {flag} {value}"))
    return cases


@pytest.mark.parametrize(("recipe", "base", "flag", "value"), _recipe_cases())
def test_recipe_numeric_flags_out_of_domain(capsys, workdir, recipe, base, flag, value):
    refused_in_one_line(capsys, workdir, [recipe, *base, "--epochs", "1", flag, value, "--output-dir", "run"], flag)


# --------------------------------------------------------------------------- paths
FINETUNE = METHODS["finetune"][1]
PATH_CASES = [
    (["finetune", *FINETUNE, "--dataset", f"./{MISSING}", "--output-dir", "run"], MISSING),
    (["finetune", *FINETUNE, "--output-dir", "notes.txt"], "notes.txt"),
    (["finetune", *FINETUNE, "--output-dir", "notes.txt/run"], "notes.txt"),
    (["finetune", *FINETUNE, "--config", MISSING, "--output-dir", "run"], MISSING),
    (["finetune", *FINETUNE, "--resume", MISSING, "--output-dir", "run"], MISSING),
    (["finetune", "--model", f"./{MISSING}", "--dataset", "digits", "--output-dir", "run"], MISSING),
    (["distill", *METHODS["deit"][1][:-3], "--teacher", f"./{MISSING}", "--output-dir", "run"], MISSING),
    (["distill", *METHODS["deit"][1], "--label-map", MISSING.replace(".png", ".json"), "--output-dir", "run"],
     MISSING.replace(".png", ".json")),
    (["pretrain", *METHODS["beit"][1], "--tokenizer", f"./{MISSING}", "--output-dir", "run"], MISSING),
    (["predict", "deit-tiny", "--scratch", MISSING], MISSING),
    (["predict", f"./{MISSING}", "cat.jpg"], MISSING),
    (["embed", "deit-tiny", "--scratch", "cat.jpg", "--output", "notes.txt/v.safetensors"], "notes.txt"),
    (["evaluate", "deit-tiny", "--scratch", "--dataset", f"./{MISSING}"], MISSING),
    (["compare", "--models", "deit-tiny", "--scratch", "--dataset", f"./{MISSING}", "--output-dir", "cmp"], MISSING),
    (["convert", f"./{MISSING}", "--to", "timm", "--output", "export"], MISSING),
    (["convert", "deit-tiny", "--scratch", "--to", "timm", "--output", "."], "."),
    (["convert", "deit-tiny", "--scratch", "--to", "timm", "--output", "src"], "src"),
    (["push", MISSING, "--repo-id", "you/model", "--dry-run"], MISSING),
    (["plot", MISSING], MISSING),
    (["bench", "--models", "deit-tiny", "--data-dir", MISSING], MISSING),
    (["bench", "--models", "deit-tiny", "--output", "notes.txt/bench.json"], "notes.txt"),
    (["evaluate", "deit-tiny", "--scratch", "--output", "notes.txt/knn.json"], "notes.txt"),
    (["plot", "src", "--output", "src"], "src is a folder"),
]


@pytest.mark.parametrize(("argv", "named"), PATH_CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in PATH_CASES])
def test_path_flags_that_cannot_serve(capsys, workdir, tiny_hub, argv, named):
    refused_in_one_line(capsys, workdir, argv, named)


# --------------------------------------------------------------------------- failures after the run folder opened
def test_a_run_that_fails_after_opening_its_folder_leaves_no_trace(capsys, workdir, tiny_hub):
    """A damaged model is found only when it loads, after the run folder is made and locked: the refusal
    gives both back, so the user's folder looks as it did."""
    import vitzoo

    model = vitzoo.load("deit-tiny", task="classification")
    model.save_pretrained("mine")
    with open("mine/model.safetensors", "r+b") as handle:
        handle.truncate(100)
    refused_in_one_line(capsys, workdir, ["finetune", "--model", "mine", "--dataset", "digits", "--max-train-samples",
                                          "32", "--output-dir", "runs/new"], "model.safetensors")
    assert not os.path.exists("runs")


def test_overwrite_never_deletes_a_file_someone_put_in_the_run(capsys, workdir, tiny_hub):
    from recipe_runs import finetune

    finetune.main([*FINETUNE, "--epochs", "1", "--output-dir", "run"])
    with open("run/model/notes.txt", "w") as handle:
        handle.write("mine\n")
    refused_in_one_line(capsys, workdir, ["finetune", *FINETUNE, "--epochs", "1", "--overwrite", "--output-dir", "run"],
                        "notes.txt")
    os.remove("run/model/notes.txt")
    assert cli(["finetune", *FINETUNE, "--epochs", "1", "--overwrite", "--output-dir", "run"]) == 0
