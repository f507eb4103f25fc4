"""Files: writes that never leave a half-written file or folder behind and never replace a file vitzoo did
not write, the one JSON reader, and the one test of whether a name means a local path."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fnmatch
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vitzoo.errors import BadInputError, DiskFullError

# a dataset or model argument ending like one of these is a local file, never a Hub id
LOCAL_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".txt")


# the marker vitzoo writes in every model folder, convert output and Hub export
VITZOO_FILE = "vitzoo.json"
# what transformers' and timm's save_pretrained write for a vision model, and vitzoo's marker beside them
MODEL_FILES = ("config.json", "preprocessor_config.json", "generation_config.json", VITZOO_FILE, "model.safetensors",
               "model.safetensors.index.json", "model-*-of-*.safetensors")


@dataclasses.dataclass(frozen=True)
class FolderKind:
    """One kind of folder vitzoo writes whole: what to call it, the names (glob patterns) of the files it
    writes there, and how to recognise a folder it wrote (`recognise(folder)`). In a folder of its kind,
    the files named by `files` are vitzoo's own; any other file is someone else's."""

    label: str
    files: tuple[str, ...]
    recognise: Callable[[str], bool]

    def owns(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.files)


def _vitzoo_marker(folder: str) -> dict[str, Any] | None:
    """The folder's vitzoo.json, if vitzoo wrote it (a JSON object with vitzoo_version)."""
    try:
        meta = read_json(os.path.join(folder, VITZOO_FILE))
    except (OSError, BadInputError):
        return None
    return meta if isinstance(meta, dict) and "vitzoo_version" in meta else None


def _marked(test: Callable[[dict[str, Any]], bool]) -> Callable[[str], bool]:
    return lambda folder: (meta := _vitzoo_marker(folder)) is not None and test(meta)


HUB_EXPORT = FolderKind("vitzoo export (vitzoo push)", (*MODEL_FILES, "README.md"),
                        _marked(lambda meta: "hub_repo_id" in meta))
CONVERTED = FolderKind("vitzoo convert output", MODEL_FILES,
                       _marked(lambda meta: "converted_from" in meta and "hub_repo_id" not in meta))
MODEL_FOLDER = FolderKind("vitzoo model folder (save_pretrained)", MODEL_FILES,
                          _marked(lambda meta: not {"converted_from", "hub_repo_id"} & meta.keys()))
# the kinds a refusal can name when a folder holds vitzoo's output of another kind than the one being written
MARKED_KINDS = (MODEL_FOLDER, CONVERTED, HUB_EXPORT)


def _some(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def check_folder(
    path: str | os.PathLike,
    kind: FolderKind,
    *,
    overwrite: bool = False,
    reading: Iterable[str | os.PathLike] = (),
    option: str = "",
    overwrite_hint: str | None = None,
) -> str:
    """The real path where `kind` may be written in place of `path`, or a BadInputError that says why not.

    Accepted: a folder that does not exist or is empty, or that holds vitzoo's own output of `kind`; with
    `overwrite`, also vitzoo's own output of another kind. Refused whatever `overwrite` says: a folder
    holding any file vitzoo did not write (those files are never replaced: a writer that kept them would
    leave them mixed with a new model, and one that dropped them would lose them), the current folder, the
    home folder and any folder holding either (a filesystem root among them), and a folder equal to or
    holding one of `reading` (the source being read). `option` names the argument in messages ("--output"),
    `overwrite_hint` the way to pass `overwrite` ("--overwrite"), if the caller has one.
    """
    where = f"{option} {os.fspath(path)}".strip()
    target = os.path.realpath(path)
    protected = [(os.getcwd(), "the current folder"), (os.path.expanduser("~"), "your home folder"),
                 *((os.fspath(folder), "the model it reads") for folder in reading)]
    for folder, what in protected:
        real = os.path.realpath(folder)
        if real == target or real.startswith(target.rstrip(os.sep) + os.sep):
            raise BadInputError(f"{where} is {what} or holds it ({real}); writing a {kind.label} there would "
                                "replace it, so choose a new folder")
    if not os.path.exists(target):
        return target
    if not os.path.isdir(target):
        raise BadInputError(f"{where} is a file, not a folder; choose a new folder")
    names = sorted(os.listdir(target))
    if not names:
        return target
    found = next((candidate for candidate in (kind, *MARKED_KINDS) if candidate.recognise(target)), None)
    foreign = names if found is None else [name for name in names if not found.owns(name)]
    if foreign:
        even = f", even with {overwrite_hint}" if overwrite_hint else ""
        raise BadInputError(f"{where} is not a {kind.label}: it holds files vitzoo did not write ({_some(foreign)}), "
                            f"which it never replaces{even}; choose a new or empty folder, or move those files away")
    if found is not kind and not overwrite:
        way = f"replace it with {overwrite_hint}, or choose" if overwrite_hint else "choose"
        raise BadInputError(f"{where} holds a {found.label}, not a {kind.label}; {way} another folder")
    return target


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, kind: FolderKind, **checks: Any) -> Iterator[str]:
    """Yield a scratch folder beside `path`; on success it takes the place of `path` in one rename.

    Only where `check_folder(path, kind, **checks)` accepts `path`, checked before the block and again
    before the rename (files may have arrived meanwhile), so the folder it replaces holds vitzoo's own
    files only. If the block raises, `path` keeps its old content and the scratch folder is removed; a
    full disk is a DiskFullError saying so. Scratch folders that a killed writer left beside `path` are
    removed first.
    """
    target = check_folder(path, kind, **checks)
    parent, base = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    _remove_left_behind(parent, base)
    tmp = _scratch(parent, base, "tmp")
    try:
        yield tmp
        check_folder(path, kind, **checks)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(error):
            raise _disk_full_error(target) from None
        raise
    old = None
    if os.path.isdir(target) and os.listdir(target):
        old = _scratch(parent, base, "old")
        os.rmdir(old)
        os.replace(target, old)
    elif os.path.isdir(target):
        os.rmdir(target)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# a scratch folder's name: `.NAME.tmp-PID@HOST-XXXXXXXX` (the write in progress) or `.NAME.old-...` (the content it
# replaces, while it is removed); before the writer's pid and host were in it, `.NAME.tmp-XXXXXXXX`
_SCRATCH = re.compile(r"(?:(?P<pid>\d+)@(?P<host>.+)-)?[a-z0-9_]{8}")


def _scratch(parent: str, base: str, role: str) -> str:
    return tempfile.mkdtemp(prefix=f".{base}.{role}-{os.getpid()}@{socket.gethostname()}-", dir=parent)


def _remove_left_behind(parent: str, base: str) -> None:
    """Remove the scratch folders beside `parent/base` whose writer is gone (killed mid-write). Only folders
    named as vitzoo names its scratch folders, written by a process of this host that no longer runs (or by a
    vitzoo that did not name its pid) are touched. An `.old-` folder with no `base` beside it is the previous
    content a kill caught between the two renames: it is put back rather than removed."""
    host = socket.gethostname()
    for name in sorted(os.listdir(parent)):
        for role in ("old", "tmp"):
            prefix = f".{base}.{role}-"
            match = _SCRATCH.fullmatch(name[len(prefix):]) if name.startswith(prefix) else None
            folder = os.path.join(parent, name)
            if match is None or os.path.islink(folder) or not os.path.isdir(folder):
                continue
            if match["pid"] is not None and (match["host"] != host or _alive(int(match["pid"]))):
                continue
            if role == "old" and not os.path.exists(os.path.join(parent, base)):
                os.replace(folder, os.path.join(parent, base))
            else:
                shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill would end the process there: never judge, never remove
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def disk_full(error: BaseException) -> bool:
    """Whether `error` says the disk (or the quota) is full: an OSError, or the text torch's and
    safetensors' writers turn it into."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(sign in str(error) for sign in ("No space left", "StorageFull", "code: 28", "unexpected pos"))


def _disk_full_error(path: str) -> DiskFullError:
    kept = "its previous content is intact" if os.path.exists(path) else "nothing was written there"
    return DiskFullError(f"no space left on device while writing {path}: {kept}; free some space and try again")


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: never a half-written file."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if disk_full(error):
            raise _disk_full_error(path) from None
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: str) -> Any:
    """The JSON value in `path`. A file that is not valid JSON is a BadInputError naming it; a missing
    or unreadable file raises OSError (a caller to whom an absent file is normal catches it)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except ValueError as error:  # json.JSONDecodeError, or bytes that are not UTF-8 text
        raise BadInputError(f"{path} is not valid JSON ({error}); was it written completely?") from None


def is_local_path(name: str) -> bool:
    """Whether a dataset or model argument names a local file or folder rather than a Hub id: it exists,
    starts like a path (`/`, `.`, `~`, `\\`), has more than one `/` (a Hub id has one) or ends like a data file."""
    return (
        os.path.exists(os.path.expanduser(name))
        or name.startswith(("/", ".", "~", "\\"))
        or name.count("/") > 1
        or os.path.splitext(name)[1].lower() in LOCAL_FILE_SUFFIXES
    )


def check_output_file(path: str, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written where it is named: a folder of that
    name, or a file where one of its folders should be. An existing file of that name is the file asked for
    and is replaced atomically."""
    if os.path.isdir(path):
        raise BadInputError(f"{option} {path} is a folder; name a file to write")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise BadInputError(f"{option} {path}: {parent} is a file, not a folder; choose another place")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"{option} {path}: {parent} is not writable; choose another place")
