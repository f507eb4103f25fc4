"""Files: writes that never leave a half-written file or folder behind, the one JSON reader, and
the one test of whether a name means a local path."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from vitzoo.errors import BadInputError

# a dataset or model argument ending like one of these is a local file, never a Hub id
LOCAL_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".txt")


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yield a scratch folder beside `path`; on success it replaces `path` in one rename.

    If the block raises, `path` keeps its old content and the scratch folder is removed.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
        os.rmdir(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
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
