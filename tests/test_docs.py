"""Docs that cannot rot: every example in README.md and docs/*.md is run or parsed by the real code.

- Every fenced ```python block runs, in this process, in a fresh namespace, in a temporary working
  directory, over the tiny offline Hub cache (the `tiny_hub` fixture), so `vitzoo.load("deit-small")`
  finds a checkpoint. The working directory holds `cat.jpg`, `a.jpg` and `b.png` (photos bundled with
  scikit-learn), the "images of yours" the examples name. A block that must not run (one that uploads
  to the Hub) says so in its fence, ```python no-run; those are listed as skipped tests and kept few.
- Every command line of a ```bash block that starts `vitzoo ...`, `python recipes/NAME.py ...` or
  `accelerate launch ... recipes/NAME.py ...` is parsed by the parser that will read it: the CLI's
  (`vitzoo.cli.build_parser`), the recipe's (`vitzoo.methods.parse` + its value checks) and
  Accelerate's launcher (`launch_command_parser`). Abbreviated flags are not accepted, so a renamed or
  removed flag fails here. `\\` continuations, `# comments`, variables the block sets (`A="..."`,
  `ARCH=...`) and `...` placeholders (dropped) are handled as a shell would.
- A ```console block shows a command (`$ vitzoo ...`) and the error it prints: the command must be
  refused, with that message.
- README.md stays a front page: at most 200 lines, linking every guide in docs/; relative links and
  their #anchors resolve; the zoo table equals `vitzoo list --format markdown`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 200
MAX_NO_RUN = 3  # blocks that must not run are the exception
RECIPE_NAMES = ("finetune", "distill", "pretrain")


# --------------------------------------------------------------------------- markdown
@dataclass
class Block:
    doc: str  # path relative to the repository, e.g. docs/zoo.md
    line: int  # line number of the first line of code (1-based)
    language: str
    flags: tuple[str, ...]  # the info string's other words, e.g. ("no-run",)
    code: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`]*)$")


def fenced_blocks(text: str, doc: str) -> list[Block]:
    """Every fenced code block of a markdown text (CommonMark fences: ``` or ~~~, closed by a fence at
    least as long)."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        fence, info = match.group(1), match.group(2).split()
        end = index + 1
        while end < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        language = info[0].lower() if info else ""
        blocks.append(Block(doc, index + 2, language, tuple(info[1:]), "\n".join(lines[index + 1:end]) + "\n"))
        index = end + 1
    return blocks


def doc_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def all_blocks() -> list[Block]:
    return [block for path in DOC_FILES for block in fenced_blocks(path.read_text(encoding="utf-8"), doc_name(path))]


# --------------------------------------------------------------------------- shell lines
@dataclass
class Command:
    where: str  # doc:line
    text: str  # the line as written (continuations joined)
    argv: list[str]  # after variables, comments and `...` are dealt with


ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")
VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
SEPARATORS = {"&&", "||", ";", "|", "&"}


def shell_words(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # words split at blanks and at && ; | (comments dropped)
    return list(lexer)


def shell_lines(code: str, first_line: int) -> list[tuple[int, str]]:
    """(line number, logical line) with `\\` continuations joined; blank and comment lines dropped."""
    out, pending, start = [], "", first_line
    for offset, raw in enumerate(code.splitlines()):
        if not pending:
            start = first_line + offset
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line, pending = (pending + raw).strip(), ""
        if line and not line.startswith("#"):
            out.append((start, line))
    return out


def commands(block: Block) -> list[Command]:
    """The commands of a shell block, one per pipeline segment, with the block's own variables expanded."""
    variables: dict[str, str] = {}
    found = []
    for number, line in shell_lines(block.code, block.line):
        expanded = VARIABLE.sub(lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), line)
        words = shell_words(expanded)
        if len(words) == 1 and ASSIGNMENT.match(words[0]):  # NAME=value on its own line sets a variable
            name, value = words[0].split("=", 1)
            variables[name] = value
            continue
        segment: list[str] = []
        for word in [*words, ";"]:
            if word not in SEPARATORS:
                segment.append(word)
                continue
            while segment and ASSIGNMENT.match(segment[0]):  # VAR=value command ...: the environment
                segment.pop(0)
            if segment:
                found.append(Command(f"{block.doc}:{number}", line, [w for w in segment if w != "..."]))
            segment = []
    return found


# --------------------------------------------------------------------------- the parsers
class Rejected(Exception):
    """A documented command line that its parser refuses."""


def _no_abbreviations(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Docs spell flags in full: a flag renamed to a longer name must not pass as an abbreviation."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)
    return parser


def _parse(parse, argv: list[str]):
    """Run an argparse-based parser; its exit (an error, or --help) becomes a value or a Rejected."""
    stderr, stdout = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            return parse(argv)
    except SystemExit as exit_:
        if exit_.code in (0, None):  # --help, --version
            return None
        raise Rejected(stderr.getvalue().strip() or f"exit {exit_.code}") from None


def check_recipe(recipe: str, argv: list[str]) -> None:
    """A recipe's command line, as `vitzoo RECIPE` and `recipes/RECIPE.py` read it, values checked too."""
    from vitzoo.errors import VitzooError
    from vitzoo.methods import parse
    from vitzoo.training.arguments import check_arguments

    try:
        args = _parse(lambda a: parse(recipe, a), argv)
        if args is not None:
            check_arguments(args)
    except VitzooError as error:
        raise Rejected(f"vitzoo {recipe}: error: {error}") from None


def check_vitzoo(argv: list[str]) -> None:
    from vitzoo.cli import build_parser

    if argv and argv[0] in RECIPE_NAMES:
        check_recipe(argv[0], argv[1:])
    else:
        _parse(_no_abbreviations(build_parser()).parse_args, argv)


def recipe_of(script: str) -> str:
    match = re.fullmatch(r"(?:\./)?recipes/(\w+)\.py", script)
    if not match or match.group(1) not in RECIPE_NAMES:
        raise Rejected(f"{script} is not one of recipes/{{{','.join(RECIPE_NAMES)}}}.py")
    return match.group(1)


def check_accelerate(argv: list[str]) -> None:
    """`accelerate launch [its flags] recipes/NAME.py [the recipe's flags]`."""
    from accelerate.commands.launch import launch_command_parser

    args = _parse(_no_abbreviations(launch_command_parser()).parse_args, argv)
    if args is None:
        return
    if args.config_file and not (ROOT / args.config_file).is_file():
        raise Rejected(f"--config_file {args.config_file}: no such file in the repository")
    check_recipe(recipe_of(args.training_script), list(args.training_script_args))


def check_command(argv: list[str]) -> bool:
    """Parse one documented command; False when it is not one this test knows (pip, bash, hf, ...)."""
    if argv[:1] == ["vitzoo"]:
        check_vitzoo(argv[1:])
    elif argv[:2] == ["accelerate", "launch"]:
        check_accelerate(argv[2:])
    elif argv[:1] in (["python"], ["python3"]) and len(argv) > 1 and argv[1].startswith(("recipes/", "./recipes/")):
        check_recipe(recipe_of(argv[1]), argv[2:])
    else:
        return False
    return True


def check_markdown(text: str, doc: str) -> tuple[int, list[str]]:
    """Parse every command of the ```bash blocks of a markdown text: (commands checked, failures), each
    failure naming the doc, the line, the command and the parser's message."""
    checked, failures = 0, []
    for block in fenced_blocks(text, doc):
        if block.language not in ("bash", "sh", "shell"):
            continue
        for command in commands(block):
            try:
                checked += check_command(command.argv)
            except Rejected as error:
                failures.append(f"{command.where}: `{command.text}`\n    {error}")
    return checked, failures


# --------------------------------------------------------------------------- (a) python blocks
PYTHON_BLOCKS = [block for block in all_blocks() if block.language in ("python", "py")]


@pytest.fixture
def example_files(tmp_path, monkeypatch):
    """A working directory with the images the examples name, as a reader's would have them."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    Image.fromarray(china).save(tmp_path / "cat.jpg")
    Image.fromarray(china).save(tmp_path / "a.jpg")
    Image.fromarray(flower).save(tmp_path / "b.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.where for block in PYTHON_BLOCKS])
def test_python_block_runs(block, tiny_hub, example_files):
    if "no-run" in block.flags:
        pytest.skip(f"```python no-run: {block.where}")
    code = compile(block.code, block.where, "exec")
    exec(code, {"__name__": "__docs__"})  # a fresh namespace per block


def test_python_blocks_are_found_and_no_run_is_rare():
    where = {block.where for block in PYTHON_BLOCKS}
    assert any(name.startswith("README.md:") for name in where), "the front page's tour lost its Python example"
    no_run = [block.where for block in PYTHON_BLOCKS if "no-run" in block.flags]
    assert len(no_run) <= MAX_NO_RUN, f"too many ```python no-run blocks: {no_run}"
    unknown = {flag for block in PYTHON_BLOCKS for flag in block.flags} - {"no-run"}
    assert not unknown, f"unknown fence words {unknown}: use ```python or ```python no-run"


# --------------------------------------------------------------------------- (b) command lines
@pytest.mark.parametrize("path", DOC_FILES, ids=[doc_name(path) for path in DOC_FILES])
def test_command_lines_parse(path):
    checked, failures = check_markdown(path.read_text(encoding="utf-8"), doc_name(path))
    assert not failures, f"{len(failures)} command(s) in {doc_name(path)} rejected by their parser:\n" + "\n".join(failures)


def test_every_kind_of_command_is_checked():
    """The extraction finds the commands it should (a silent empty check would pass anything)."""
    kinds = {"vitzoo": 0, "recipe": 0, "accelerate": 0}
    for block in all_blocks():
        if block.language == "bash":
            for command in commands(block):
                if command.argv[:1] == ["vitzoo"]:
                    kinds["recipe" if command.argv[1:2] and command.argv[1] in RECIPE_NAMES else "vitzoo"] += 1
                elif command.argv[:2] == ["accelerate", "launch"]:
                    kinds["accelerate"] += 1
    assert kinds["vitzoo"] >= 10 and kinds["recipe"] >= 10 and kinds["accelerate"] >= 4, kinds


BROKEN = [  # (what is wrong, the bash block's code, what the failure must name, the line it is on)
    ("a misspelled recipe flag", "vitzoo finetune --model deit-tiny --epoch 3", "--epoch", 7),
    ("a flag of another method", "vitzoo distill --method dino --teacher deit-small", "--teacher", 7),
    ("a value out of range", "vitzoo pretrain --method mae --mask-ratio 1.5", "--mask-ratio", 7),
    ("a misspelled CLI flag", "vitzoo compare --protocl knn", "--protocl", 7),
    ("an abbreviated CLI flag", "vitzoo bench --model deit-tiny", "--model", 7),
    ("a misspelled launcher flag", "accelerate launch --num_process 2 recipes/finetune.py", "--num_process", 7),
    ("a recipe flag under the launcher", 'A="--model deit-tiny --scatch"\naccelerate launch recipes/finetune.py $A ...',
     "--scatch", 8),
    ("a missing launch config", "accelerate launch --config_file recipes/accelerate_configs/tpu.yaml recipes/finetune.py",
     "tpu.yaml", 7),
    ("a script that is no recipe", "accelerate launch recipes/train.py --model deit-tiny", "recipes/train.py", 7),
    ("a continued line", "python recipes/distill.py --method deit \\\n    --distill-typ soft", "--distill-typ", 7),
]


@pytest.mark.parametrize("code,flag,line", [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_the_checker_rejects_a_broken_snippet(code, flag, line):
    """The same checker, on small markdown texts with one mistake each: it must fail, naming the place."""
    text = f"# A guide\n\nSome prose.\n\n```bash\n# a comment\n{code}   # trailing comment\n```\n"
    checked, failures = check_markdown(text, "docs/broken.md")
    assert len(failures) == 1, failures
    assert failures[0].startswith(f"docs/broken.md:{line}: `") and flag in failures[0], failures[0]


def test_the_checker_passes_the_same_snippet_fixed():
    fixed = ('```bash\nA="--model deit-tiny --scratch"\naccelerate launch --num_processes 2 recipes/finetune.py $A ... '
             "--epochs 3\nvitzoo finetune --model deit-tiny --epochs 3 && vitzoo compare --models deit-tiny\n```\n")
    assert check_markdown(fixed, "docs/fixed.md") == (3, [])


def test_console_examples_print_what_they_show():
    """```console blocks: `$ command` then the error it prints; the command must be refused with that text."""
    shown = 0
    for block in all_blocks():
        if block.language != "console":
            continue
        lines = block.code.splitlines()
        for index, line in enumerate(lines):
            if not line.startswith("$ "):
                continue
            expected = []
            for following in lines[index + 1:]:
                if following.startswith("$ "):
                    break
                expected.append(following.strip())
            with pytest.raises(Rejected) as refused:
                check_command(shell_words(line[2:]))
            for text in filter(None, expected):
                assert text in str(refused.value), f"{block.where}: `{line}` now prints:\n{refused.value}"
            shown += 1
    assert shown >= 1


# --------------------------------------------------------------------------- (c) the front page and links
def test_readme_is_a_front_page_linking_every_guide():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= MAX_README_LINES, f"README.md has {len(readme.splitlines())} lines"
    linked = set(re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)", readme))
    guides = {doc_name(path) for path in DOC_FILES if path.parent.name == "docs"}
    missing = sorted(guides - linked - {"docs/architecture.md"})
    assert not missing, f"README.md does not link these guides: {missing}"
    ci = (ROOT / ".ci" / "run").read_text()
    for block in fenced_blocks(readme, "README.md")[:2]:  # the two commands, as CI runs them
        assert block.code.strip() in ci.splitlines(), f"README.md:{block.line} is not what .ci/run runs"


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found, seen = set(), {}
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match and not inside:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


@pytest.mark.parametrize("path", DOC_FILES, ids=[doc_name(path) for path in DOC_FILES])
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{doc_name(path)} links to what does not exist: {broken}"


def test_zoo_table_is_the_registry():
    """docs/zoo.md's table of every name is `vitzoo list --format markdown`, row for row."""
    from vitzoo.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["list", "--format", "markdown"]) == 0
    table = out.getvalue().strip()
    assert table.startswith("| name |") and table in (ROOT / "docs" / "zoo.md").read_text(encoding="utf-8"), (
        "docs/zoo.md's registry table differs from `vitzoo list --format markdown`; paste that command's output"
    )


def test_helper_handles_shell_syntax():
    block = Block("docs/x.md", 10, "bash", (), 'ARCH=a=1,b=2\nOMP_NUM_THREADS=1 vitzoo x --y $ARCH \\\n  --z "two words" # note\n'
                  "pip install -e . && vitzoo list ; echo ${ARCH}\n")
    found = [(c.where, c.argv) for c in commands(block)]
    assert found == [("docs/x.md:11", ["vitzoo", "x", "--y", "a=1,b=2", "--z", "two words"]),
                     ("docs/x.md:13", ["pip", "install", "-e", "."]), ("docs/x.md:13", ["vitzoo", "list"]),
                     ("docs/x.md:13", ["echo", "a=1,b=2"])]
