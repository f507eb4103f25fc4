"""One run per folder: `.vitzoo.lock`, held by the operating system for as long as the run lives.

The lock is a kernel lock (`flock`) on the file, not the file's existence. The kernel drops it the moment
its process ends, however it ends (`kill -9`, a crash, a full disk), so a lock left behind is never stale
in a way that needs guessing from pids, hosts or ages, and two processes that find a dead run's lock at
the same instant cannot both take it: `flock` grants it to one. The pid, host and start time written
inside are for the message a second run gets, nothing decides on them, so an empty or garbled file (a
disk that filled while it was written) is simply taken over.

A holder removes the file before it lets go. A process that opened the file just before that removal
can then lock a file that no longer has a name; it checks that the path still names the file it locked,
and tries again if not, so ownership always goes with the file at `.vitzoo.lock`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from typing import Any

from vitzoo.errors import BadInputError

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


LOCK_NAME = ".vitzoo.lock"

# Locks this process holds, by path: a run of this process that ended in an exception before it let go
# (an interactive session, a test, compare's next training) must not lock the next run of the same process out.
_HELD: dict[str, FolderLock] = {}


class FolderInUseError(BadInputError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """The lock of one run folder. `acquire()` takes it or raises FolderInUseError naming the holder;
    `release()` gives it up (safe to call twice)."""

    def __init__(self, folder: str, *, option: str = "--output-dir") -> None:
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.option = option
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        key = os.path.realpath(self.path)
        earlier = _HELD.pop(key, None)
        if earlier is not None:
            earlier.release()
        # a bounded loop: each turn that does not end is a holder that let go between our open and our lock
        for _ in range(100):
            fd = self._open()
            if not _try_lock(fd):
                holder = _record(fd)
                os.close(fd)
                raise FolderInUseError(self._in_use_message(holder))
            if self._names(fd):
                self._fd = fd
                self._write_record()
                _HELD[key] = self
                return
            os.close(fd)
        raise FolderInUseError(f"{self.option} {self.folder}: its lock changed hands 100 times while this run tried to "
                               "take it; wait for the other runs to finish, or choose another folder")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD.pop(os.path.realpath(self.path), None)
        try:
            if self._names(fd):
                os.remove(self.path)  # while still locked, so nobody locks the old file under this name
        except OSError:
            pass  # a folder removed or made read-only under the run: the kernel lock goes with the close anyway
        os.close(fd)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if os.path.exists(self.path):
                raise BadInputError(f"{self.option} {self.folder}: cannot open its lock file {self.path} ({error.strerror}); "
                                    "if no run uses this folder, delete that file, or choose another folder") from None
            raise BadInputError(f"{self.option} {self.folder}: cannot create its lock file {self.path} "
                                f"({error.strerror}); choose a writable folder with free space") from None

    def _names(self, fd: int) -> bool:
        """Whether the path still names the file open as `fd`."""
        try:
            on_disk, ours = os.stat(self.path), os.fstat(fd)
        except OSError:
            return False
        return (on_disk.st_dev, on_disk.st_ino) == (ours.st_dev, ours.st_ino)

    def _write_record(self) -> None:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, record, 0)
        except OSError as error:
            # the kernel lock already guards the folder; the record only names the holder in messages
            warnings.warn(f"could not write who holds {self.path} ({error.strerror}); the folder is locked all the same",
                          stacklevel=3)

    def _in_use_message(self, holder: dict[str, Any]) -> str:
        who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
               if holder.get("pid") else "its holder did not record itself")
        return (f"{self.option} {self.folder} is in use by another run ({who}); wait for it to finish, or choose "
                "another folder (the lock goes away by itself when that process ends, however it ends)")


def _record(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
