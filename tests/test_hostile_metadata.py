"""Issue 11, kinds 5 and 6: damaged metadata and prune_history.

Commit records that are damaged, not regular files, huge or unreadable; records listing
files the task does not own; an output replaced by a folder; a damaged, read-only or
half-made run history; a read-only data dir; ``prune_history`` arguments and runs still
going. Each case gives a clear pipeflow error or is repaired, never hangs, and never
deletes what pipeflow does not own.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pipeflow
from pipeflow import integrity, runstore
from pipeflow.errors import (
    HistoryError,
    MetadataError,
    ParameterError,
    PipeflowError,
    TaskFailedError,
)


class Out(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter(default=1)

    def run(self):
        self.save({"n": self.n})


class Two(pipeflow.tasks.TaskPickle):
    persist = ["a", "b"]

    def run(self):
        self.save({"a": 1, "b": 2})
        self.saveMeta({"m": 1})


def _record(task) -> pathlib.Path:
    return pathlib.Path(task._store.record_path())


def _in_thread(func, timeout=20.0):
    """Run ``func`` in a daemon thread; fail the test if it does not return in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{func} hung (still running after {timeout} s)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _reason(task) -> str | None:
    return task._store.output_state()[1]


# -- damaged commit records: pinned (fixed earlier) -------------------------------------------

@pytest.mark.parametrize("text", [
    '{"v":1,"task":"x","files":[]}',
    '{"v":1,"task":"x","files":{"data":[["Out\\u0000.json",1,1,1,"ab"]]}}',
    '{"v":1,"task":"x","files":' + "[" * 100000 + "]" * 100000 + "}",
    '{"v":1,"task":"x","files":{"data":[["../../x",1,1,1,"ab"]]}}',
    '{"v":1,"task":"x","files":{"data":[["/etc/passwd",1,1,1,"ab"]]}}',
], ids=["files-list", "nul-name", "deep", "dotdot", "absolute"])
def test_damaged_record_reads_as_damaged_and_the_task_runs_again(text):
    pipeflow.run(Out())
    rec = _record(Out())
    rec.write_text(text)
    assert not Out().complete()
    assert "damaged" in _reason(Out())
    assert pipeflow.run(Out())
    assert Out().complete() and Out().outputLoad() == {"n": 1}


# -- a record that is not a regular file -------------------------------------------------------

def test_fifo_in_place_of_the_record_never_hangs():
    pipeflow.run(Out())
    rec = _record(Out())
    rec.unlink()
    os.mkfifo(rec)
    assert _in_thread(lambda: Out().complete()) is False
    assert "not a regular file" in _in_thread(lambda: _reason(Out()))
    _in_thread(lambda: pipeflow.preview(Out()))
    with pytest.raises(PipeflowError, match="not a regular file"):
        _in_thread(lambda: Out().outputLoad())
    assert _in_thread(lambda: pipeflow.run(Out()))  # our record's path: replaced
    assert Out().complete()


def test_symlinked_record_is_never_followed(tmp_path):
    pipeflow.run(Out())
    rec = _record(Out())
    good = tmp_path / "elsewhere.json"
    good.write_bytes(rec.read_bytes())  # a valid record, but not the task's file
    rec.unlink()
    rec.symlink_to(good)
    assert not Out().complete()
    assert "symlink" in _reason(Out())
    rec.unlink()
    rec.symlink_to("/dev/zero")  # followed, it would be read forever
    assert _in_thread(lambda: Out().complete()) is False
    assert _in_thread(lambda: pipeflow.run(Out()))
    assert good.exists() and not rec.is_symlink() and Out().complete()


def test_huge_record_is_not_read(monkeypatch):
    pipeflow.run(Out())
    rec = _record(Out())
    with open(rec, "r+b") as fh:
        fh.truncate(3 << 30)  # sparse: 3 GB of NUL bytes
    reads = []
    real = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real(fd, n))
    assert _in_thread(lambda: Out().complete()) is False
    assert "too large" in _reason(Out())
    assert sum(reads) <= integrity.MAX_RECORD
    monkeypatch.undo()
    assert pipeflow.run(Out()) and Out().complete()


def test_record_folder_in_place_of_the_record_is_a_clear_error_and_kept():
    pipeflow.run(Out())
    rec = _record(Out())
    rec.unlink()
    rec.mkdir()
    (rec / "keep.txt").write_text("not pipeflow's")
    assert not Out().complete()
    assert "folder" in _reason(Out())
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Out())
    cause = info.value.__cause__ or info.value
    assert isinstance(cause, MetadataError), repr(cause)
    assert str(rec) in str(cause) and "folder" in str(cause)
    with pytest.raises(MetadataError, match="folder"):
        Out().reset(confirm=False)
    assert (rec / "keep.txt").read_text() == "not pipeflow's"


def test_unreadable_record_is_reported(monkeypatch):
    # tests run as root, which permissions do not stop: the EACCES is injected
    pipeflow.run(Out())
    rec = os.fspath(_record(Out()))
    real = os.open

    def deny(path, *a, **k):
        if os.fspath(path) == rec:
            raise PermissionError(13, "Permission denied", path)
        return real(path, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    from pipeflow import integrity
    integrity._KNOWN.clear()
    assert not Out().complete()
    assert "Permission denied" in _reason(Out())
    with pytest.raises(PipeflowError, match="Permission denied"):
        Out().outputLoad()


# -- a record listing files the task does not own ---------------------------------------------

def _list_in_record(task, names):
    rec = _record(task)
    doc = json.loads(rec.read_text())
    for name in names:
        doc["files"].setdefault("data", []).append([name, 1, 1, 1, "00"])
    rec.write_text(json.dumps(doc))


@pytest.mark.parametrize("how", ["reset", "run", "forced"])
def test_record_listing_foreign_files_never_deletes_them(how):
    pipeflow.run(Out())
    folder = Out()._store.folder()
    rec = _record(Out())
    foreign = [".pipeflow.lock", "notes.txt", rec.name, "Out-n_1.json.bak"]
    for name in foreign:
        (folder / name).write_text("not an output of Out")
    lock = rec.parent / ".pipeflow.lock"
    assert lock.exists()
    _list_in_record(Out(), [*foreign, lock.name])
    assert not Out().complete()
    assert "not one of its outputs" in _reason(Out())
    if how == "reset":
        Out().reset(confirm=False)
    elif how == "run":
        assert pipeflow.run(Out())
    else:
        assert pipeflow.run(Out(), forced=Out())
    for name in foreign:
        assert (folder / name).read_text() == "not an output of Out", name
    assert lock.exists()


def test_uncommit_deletes_only_allowed_names(tmp_path):
    from pipeflow.integrity import CommitRecord, FileRecord, uncommit, write_record

    (tmp_path / "out.json").write_text("x")
    (tmp_path / "other").write_text("y")
    rec = tmp_path / ".rec.commit.json"
    write_record(rec, CommitRecord("t", {"data": (
        FileRecord("out.json", 1, 1, 1, "0"), FileRecord("other", 1, 1, 1, "0"))}))
    removed = uncommit(rec, tmp_path, allowed={"out.json"})
    assert removed == [tmp_path / "out.json"]
    assert (tmp_path / "other").exists() and not rec.exists()


# -- an output replaced by a folder ---------------------------------------------------------------

def test_output_replaced_by_a_folder():
    pipeflow.run(Out())
    path = Out().output().path
    path.unlink()
    path.mkdir()
    (path / "mine.txt").write_text("keep")
    assert not Out().complete()
    assert "folder" in _reason(Out())
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Out())
    cause = info.value.__cause__
    assert isinstance(cause, PipeflowError), repr(cause)
    assert str(path) in str(cause) and "folder" in str(cause)
    assert (path / "mine.txt").read_text() == "keep"


def test_output_replaced_by_a_fifo_never_hangs():
    class Empty(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(b"")

    pipeflow.run(Empty())
    path = Empty().output().path
    size = path.stat().st_size
    path.unlink()
    os.mkfifo(path)
    assert size >= 0
    assert _in_thread(lambda: Empty().complete()) is False
    with pytest.raises(PipeflowError):
        _in_thread(lambda: Empty().outputLoad())
