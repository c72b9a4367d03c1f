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
import sqlite3
import subprocess
import sys
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
    path.unlink()
    os.mkfifo(path)
    assert _in_thread(lambda: Empty().complete()) is False
    with pytest.raises(PipeflowError):
        _in_thread(lambda: Empty().outputLoad())


# -- the run history: damaged, half-made, read-only ---------------------------------------------

class Boom(pipeflow.tasks.TaskJson):
    def run(self):
        raise ValueError("boom")


def _queries():
    """Every public history query, each as a callable."""
    return {
        "history": lambda: pipeflow.history(),
        "runs": lambda: pipeflow.runs(),
        "last_error": lambda: pipeflow.last_error(Out()),
        "last_run": lambda: pipeflow.last_run(Out()),
        "prune": lambda: pipeflow.prune_history(keep=1),
    }


def _cli_history(data_dir):
    from click.testing import CliRunner

    from pipeflow.cli import main

    return CliRunner().invoke(main, ["history", "--dir", str(data_dir)])


def _damage(path: pathlib.Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"\x13\x37 this is not SQLite " * 500)
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
        for extra in ("-wal", "-shm"):
            pathlib.Path(f"{path}{extra}").unlink(missing_ok=True)
    elif how == "header":  # right magic, garbage after it
        data = bytearray(path.read_bytes())
        data[16:] = os.urandom(len(data) - 16)
        path.write_bytes(bytes(data))
        for extra in ("-wal", "-shm"):
            pathlib.Path(f"{path}{extra}").unlink(missing_ok=True)


@pytest.mark.parametrize("how", ["garbage", "truncated", "header"])
def test_damaged_history_is_a_clear_error_and_never_fails_a_run(how, data_dir):
    for n in range(3):
        pipeflow.run(Out(n=n))
    path = runstore.history_path()
    _damage(path, how)
    for name, query in _queries().items():
        with pytest.raises(HistoryError) as info:
            query()
        assert str(path) in str(info.value), name
        assert "settings.history = False" in str(info.value), name
        assert "Move it away" in str(info.value), name
    out = _cli_history(data_dir)
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "HistoryError" in out.output and str(path) in out.output, out.output
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        assert pipeflow.run(Out(n=9))
    assert Out(n=9).complete()


def test_garbage_history_error_names_the_file():
    pipeflow.run(Out())
    path = runstore.history_path()
    _damage(path, "garbage")
    with pytest.raises(HistoryError, match="history"):
        pipeflow.history()
    with pytest.raises(HistoryError):
        pipeflow.runs()


@pytest.mark.parametrize("how", ["empty", "no-tables"])
def test_half_made_history_reads_as_empty_and_runs_record_in_it(how):
    # (a file holding other tables is another program's: test_hostile_m2.py)
    path = runstore.history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "empty":
        path.write_bytes(b"")
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version = 1")
        conn.close()
    assert pipeflow.history().empty
    assert pipeflow.runs().empty
    assert pipeflow.last_error(Out()) is None
    assert pipeflow.last_run(Out()) is None
    assert pipeflow.prune_history(keep=0) == 0
    pipeflow.run(Out())
    assert len(pipeflow.runs()) == 1 and len(pipeflow.history()) == 1


def test_older_history_without_the_system_column_is_read():
    path = runstore.history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(runstore._SCHEMA.replace(", system TEXT", ""))
        conn.execute("INSERT INTO runs (run_id, started, status) VALUES ('old', 1, 'success')")
    conn.close()
    df = pipeflow.runs(full=True)
    assert list(df["run_id"]) == ["old"] and df["system"].iloc[0] is None
    pipeflow.run(Out())
    assert len(pipeflow.runs()) == 2


def test_damaged_system_snapshot_is_none():
    pipeflow.run(Out())
    with sqlite3.connect(runstore.history_path()) as conn:
        conn.execute("UPDATE runs SET system = '{not json'")
    conn.close()
    assert pipeflow.runs(full=True)["system"].iloc[0] is None


def test_history_file_replaced_by_a_folder_is_a_clear_error():
    pipeflow.run(Out())
    path = runstore.history_path()
    for extra in ("", "-wal", "-shm"):
        pathlib.Path(f"{path}{extra}").unlink(missing_ok=True)
    path.mkdir()
    with pytest.raises(HistoryError, match="folder"):
        pipeflow.history()
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        assert pipeflow.run(Out(n=2))


# -- prune_history ---------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", [-1, True, False, "2", 1.5, None, [2]])
def test_prune_history_refuses_a_bad_keep_and_deletes_nothing(keep):
    for n in range(3):
        pipeflow.run(Out(n=n))
    with pytest.raises(ParameterError, match="keep"):
        pipeflow.prune_history(keep=keep)
    assert len(pipeflow.runs()) == 3 and len(pipeflow.history()) == 3


def test_prune_history_takes_numpy_integers_and_zero():
    import numpy as np
    for n in range(3):
        pipeflow.run(Out(n=n))
    assert pipeflow.prune_history(keep=np.int64(2)) == 1
    assert pipeflow.prune_history(keep=0) == 2
    assert pipeflow.runs().empty and pipeflow.history().empty


class Slow(pipeflow.tasks.TaskJson):
    gate = pipeflow.Parameter()

    def run(self):
        time.sleep(0.7)  # the history flushes at the next event after 0.5 s
        self.save({"slow": 1})


@pipeflow.requires(Slow)
class Held(pipeflow.tasks.TaskJson):
    def run(self):
        deadline = time.monotonic() + 60
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.save({"held": 1})


def test_prune_history_never_removes_a_run_still_going(tmp_path):
    for n in range(3):
        pipeflow.run(Out(n=n))
    gate = tmp_path / "gate"
    worker = threading.Thread(target=lambda: pipeflow.run(Held(gate=str(gate))), daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            df = pipeflow.runs()
            if (df["status"] == "running").any():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run never showed as running in the history")
        running = df.loc[df["status"] == "running", "run_id"].iloc[0]
        assert pipeflow.prune_history(keep=0) == 3
        assert list(pipeflow.runs()["run_id"]) == [running]
    finally:
        gate.touch()
        worker.join(60)
    assert not worker.is_alive()
    df = pipeflow.runs()
    assert list(df["run_id"]) == [running] and df["status"].iloc[0] == "success"
    assert set(pipeflow.history(run=running)["family"]) == {"Slow", "Held"}


def test_prune_history_keeps_a_stored_running_row_whatever_its_age():
    for n in range(4):
        pipeflow.run(Out(n=n))
    oldest = pipeflow.runs()["run_id"].iloc[-1]
    with sqlite3.connect(runstore.history_path()) as conn:
        conn.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (oldest,))
    conn.close()
    assert pipeflow.prune_history(keep=1) == 2
    assert set(pipeflow.runs()["run_id"]) == {oldest, pipeflow.runs()["run_id"].iloc[0]}


def test_prune_history_keeps_everything_for_a_keep_beyond_sqlites_integers():
    pipeflow.run(Out())
    assert pipeflow.prune_history(keep=10**30) == 0  # was a raw OverflowError
    assert len(pipeflow.runs()) == 1


def test_prune_history_removes_a_running_row_whose_process_is_gone():
    import json
    import sys

    for n in range(3):
        pipeflow.run(Out(n=n))
    oldest = pipeflow.runs()["run_id"].iloc[-1]
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = json.dumps({"host": runstore._HOST, "ns": runstore._pid_space(),
                       "pid": int(child.stdout), "since": 0.0})
    with sqlite3.connect(runstore.history_path()) as conn:
        conn.execute("UPDATE runs SET status = 'running', owner = ? WHERE run_id = ?",
                     (dead, oldest))
    conn.close()
    assert pipeflow.prune_history(keep=1) == 2  # the dead run counts as finished
    assert oldest not in set(pipeflow.runs()["run_id"])


def test_invalidate_all_never_deletes_pipeflows_own_files_a_record_lists():
    pipeflow.run(Out())
    folder = Out()._store.folder()
    rec = _record(Out())
    hidden = [".pipeflow.lock", rec.name, ".Out.json.tmp-abcdef"]
    for name in hidden:
        (folder / name).write_text("pipeflow's own, never an output")
    _list_in_record(Out(), hidden)
    pipeflow.invalidate_all(confirm=False)
    for name in hidden:
        assert (folder / name).exists(), name
    assert not Out().output().path.exists() and not rec.exists()


# -- a read-only data dir ---------------------------------------------------------------------

_RO_TASKS = '''
import pipeflow

class RoA(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"a": 1})

@pipeflow.requires(RoA)
class RoB(pipeflow.tasks.TaskPickle):
    persist = ["x", "y"]
    def run(self):
        self.save({"x": self.inputLoad()["a"], "y": 2})
        self.saveMeta({"m": 3})

class RoNew(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"new": 1})
'''

_RO_CHECK = '''
import json, os, sys, time, warnings
sys.path.insert(0, sys.argv[2])
import pipeflow
from ro_tasks import RoA, RoB, RoNew
pipeflow.settings.execution_summary = False
pipeflow.set_dir(sys.argv[1])
out = {}
def attempt(name, func):
    try:
        out[name] = ["ok", repr(func())]
    except pipeflow.errors.PipeflowError as exc:
        out[name] = ["pipeflow", type(exc).__name__, str(exc)]
    except BaseException as exc:
        out[name] = ["raw", type(exc).__name__, str(exc)]
try:
    open(os.path.join(sys.argv[1], "probe"), "w")
    out["writable"] = True
except OSError as exc:
    out["writable"] = exc.errno
flow = pipeflow.Workflow(RoB)
attempt("complete", lambda: RoB().complete())
attempt("flow.complete", lambda: flow.complete())
attempt("preview", lambda: str(pipeflow.preview(RoB())))
attempt("outputLoad", lambda: RoB().outputLoad())
attempt("outputLoadMeta", lambda: RoB().outputLoadMeta())
attempt("inputLoad", lambda: RoB().inputLoad())
attempt("history", lambda: len(pipeflow.history()))
attempt("runs", lambda: len(pipeflow.runs()))
attempt("last_run", lambda: pipeflow.last_run(RoA())["status"])
attempt("new.complete", lambda: RoNew().complete())
attempt("new.preview", lambda: str(pipeflow.preview(RoNew())))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    attempt("run", lambda: pipeflow.run(RoNew()))
out["warnings"] = [str(w.message) for w in caught]
attempt("reset", lambda: RoA().reset(confirm=False))
attempt("after.complete", lambda: RoB().complete())
print("RESULT" + json.dumps(out))
'''


def _read_only_check(tmp_path, data_dir, on_read_only_mount):
    """Run _RO_CHECK on ``data_dir`` mounted read-only (a real EROFS, in a mount namespace)."""
    (tmp_path / "ro_check.py").write_text(_RO_CHECK)
    proc = on_read_only_mount(data_dir, sys.executable, tmp_path / "ro_check.py", data_dir,
                              tmp_path)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stdout + proc.stderr
    return json.loads(line[0][len("RESULT"):])


def test_read_only_data_dir_reads_and_refuses_writes_clearly(tmp_path, data_dir, monkeypatch,
                                                              on_read_only_mount):
    import errno

    (tmp_path / "ro_tasks.py").write_text(_RO_TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import ro_tasks

    pipeflow.run(ro_tasks.RoB())
    path = ro_tasks.RoA().output().path
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: same content
    res = _read_only_check(tmp_path, data_dir, on_read_only_mount)
    assert res["writable"] == errno.EROFS, res
    for name in ["complete", "flow.complete", "outputLoad", "outputLoadMeta", "inputLoad",
                 "history", "runs", "last_run", "new.complete", "preview", "new.preview"]:
        assert res[name][0] == "ok", (name, res[name])
    assert res["complete"][1] == res["flow.complete"][1] == "True"
    assert res["outputLoad"][1] == "[1, 2]"
    assert res["outputLoadMeta"][1] == "{'m': 3}"
    assert res["history"][1] == "2" and res["runs"][1] == "1"
    assert res["new.complete"][1] == "False"
    for name in ["run", "reset"]:
        assert res[name][0] == "pipeflow", (name, res[name])
        assert "read-only" in res[name][2].lower() or "Read-only" in res[name][2], res[name]
    assert res["after.complete"] == ["ok", "True"]


def test_record_listing_foreign_files_is_not_loaded_nor_offered_for_deletion():
    pipeflow.run(Out())
    folder = Out()._store.folder()
    (folder / "notes.txt").write_text("x")
    _list_in_record(Out(), ["notes.txt"])
    with pytest.raises(PipeflowError, match="not one of its outputs"):
        Out().outputLoad()
    listed = Out()._store.stored_files()
    assert str(folder / "notes.txt") not in listed
    assert str(Out().output().path) in listed


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-fifo"])
def test_history_that_is_not_a_regular_file_never_hangs(kind, tmp_path):
    pipeflow.run(Out())
    path = runstore.history_path()
    for extra in ("", "-wal", "-shm"):
        pathlib.Path(f"{path}{extra}").unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.mkfifo(tmp_path / "fifo")
        path.symlink_to(tmp_path / "fifo")
    for query in _queries().values():
        # (a symlink is refused as such: never opened, whatever it points to)
        with pytest.raises(HistoryError, match="not a regular file" if kind == "fifo"
                           else "is a symlink"):
            _in_thread(query)
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        assert _in_thread(lambda: pipeflow.run(Out(n=3)))


def test_reset_still_deletes_a_hidden_sidecar_the_format_owns():
    import pandas as pd

    class Frame(pipeflow.tasks.TaskCSVPandas):
        def run(self):
            self.save(pd.DataFrame({"a": [1, 2]}).set_index("a"))

    pipeflow.run(Frame())
    target = Frame().output()
    assert target.path.exists() and target.sidecar().exists()
    Frame().reset(confirm=False)
    assert not target.path.exists() and not target.sidecar().exists()
    pipeflow.run(Frame())
    assert Frame().complete()
    pipeflow.invalidate_all(confirm=False)
    assert not target.path.exists() and not target.sidecar().exists()


def test_pipeflows_own_names_match_the_lock_file_and_own_dir():
    from pipeflow import layout, locks
    from pipeflow.integrity import pipeflows_own

    assert pipeflows_own(locks.LOCK_FILE) and pipeflows_own(layout.OWN_DIR)
    assert pipeflows_own(".T_1.commit.json") and pipeflows_own(".T-data.csv.tmp-0a1b2c3d4e5f")
    assert not pipeflows_own(".T-data.csv.index.json") and not pipeflows_own("T-data.csv")
