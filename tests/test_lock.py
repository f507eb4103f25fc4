""".vitzoo.lock: one owner per folder, whatever the lock file holds and however many processes race for it.

The races need processes (a kernel lock is per process), so a few workers are forked once and run every
trial, released together by a barrier; each trial starts from a lock file a dead run left behind."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from vitzoo.errors import BadInputError
from vitzoo.training.lock import FolderInUseError, FolderLock

WORKERS = 4
TRIALS = 100
# what a dead run can leave: a full record, nothing (a disk that filled), garbage, JSON of another shape
LEFTOVERS = [json.dumps({"pid": 2**22 + 7, "host": "gone", "started": "earlier"}).encode(), b"", b"\x00\xffnot json", b"[1, 2]"]


def _racer(folders: list[str], start, tried, results) -> None:
    for folder in folders:
        start.wait()
        lock = FolderLock(folder)
        try:
            lock.acquire()
            owned = True
        except FolderInUseError:
            owned = False
        tried.wait()  # an owner holds on until every racer has tried
        results.put((folder, os.getpid(), owned))
        tried.wait()  # the next trial's lock file is laid only once this one is given up
        lock.release()


def test_racing_for_a_dead_runs_lock_gives_exactly_one_owner_every_time(tmp_path):
    context = multiprocessing.get_context("fork")
    folders = []
    for trial in range(TRIALS):
        folder = tmp_path / f"run-{trial}"
        folder.mkdir()
        (folder / ".vitzoo.lock").write_bytes(LEFTOVERS[trial % len(LEFTOVERS)])
        folders.append(str(folder))
    start, tried = context.Barrier(WORKERS), context.Barrier(WORKERS)
    results = context.Queue()
    workers = [context.Process(target=_racer, args=(folders, start, tried, results)) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    owners: dict[str, int] = dict.fromkeys(folders, 0)
    for _ in range(TRIALS * WORKERS):
        folder, _pid, owned = results.get(timeout=60)
        owners[folder] += owned
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sorted(set(owners.values())) == [1], {f: n for f, n in owners.items() if n != 1}
    assert not any(os.path.exists(os.path.join(folder, ".vitzoo.lock")) for folder in folders)  # each owner let go


def test_the_lock_names_its_holder_and_goes_when_the_holder_dies(tmp_path):
    context = multiprocessing.get_context("fork")
    held, done = context.Event(), context.Event()

    def hold() -> None:
        FolderLock(str(tmp_path)).acquire()
        held.set()
        done.wait(30)
        os._exit(0)  # dies holding it: no release, as under kill -9

    holder = context.Process(target=hold)
    holder.start()
    assert held.wait(30)
    with pytest.raises(FolderInUseError, match=rf"in use by another run \(pid {holder.pid} on "):
        FolderLock(str(tmp_path)).acquire()
    done.set()
    holder.join(30)
    lock = FolderLock(str(tmp_path))
    lock.acquire()  # the record still names the dead holder; the kernel lock went with it
    assert json.loads(open(tmp_path / ".vitzoo.lock").read())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / ".vitzoo.lock").exists()


def test_a_run_of_this_process_that_never_let_go_does_not_lock_out_the_next(tmp_path):
    crashed = FolderLock(str(tmp_path))
    crashed.acquire()  # an exception ended that run before it released
    again = FolderLock(str(tmp_path))
    again.acquire()
    assert not crashed.held and again.held
    again.release()


def test_a_lock_file_that_cannot_be_opened_is_one_line_saying_how_to_clear_it(tmp_path):
    (tmp_path / ".vitzoo.lock").mkdir()  # what no run writes, but a hand or a sync tool can leave
    with pytest.raises(BadInputError, match=r"cannot open its lock file .*\(Is a directory\); if no run uses this "
                                            "folder, delete that file"):
        FolderLock(str(tmp_path)).acquire()
