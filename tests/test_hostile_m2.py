"""Issue 11, damaged metadata (m2): a corrupt output found by a load, non-files at output
paths on adopt, a foreign SQLite file at the history path, a read-only history pruned."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import warnings

import pandas as pd
import pytest

import pipeflow
from pipeflow import runstore
from pipeflow.errors import CorruptOutputError, HistoryError, MetadataError


class M2A(pipeflow.tasks.TaskCSVPandas):
    def run(self):
        self.save(pd.DataFrame({"a": [1, 2]}))


@pipeflow.requires(M2A)
class M2B(pipeflow.tasks.TaskCSVPandas):
    def run(self):
        self.save(self.inputLoad() * 10)


def _edit_keeping_stat(path):
    """Change a byte, keep the size and restore the mtime: a status check cannot see it."""
    st = os.stat(path)
    data = open(path, "rb").read()
    with open(path, "r+b") as fh:
        fh.write(data.replace(b"2", b"9"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- 1. a corrupt output found by a load does not count as complete any more ---------------

def test_corrupt_output_found_by_a_load_is_recomputed(data_dir, capsys):
    pipeflow.run(M2B(), execution_summary=False)
    path = M2A().output().path
    _edit_keeping_stat(path)
    assert M2A().complete()  # not seen by the status check (size, mtime, inode)
    with pytest.raises(CorruptOutputError):
        M2A().outputLoad()
    assert not M2A().complete()
    assert path.exists()  # the user's changed file is never deleted by the check
    capsys.readouterr()
    pipeflow.preview(M2B())
    text = capsys.readouterr().out
    assert "M2A" in text and "STALE" in text and "changed outside pipeflow" in text, text
    # in a new process too: the commit record says so
    here = os.path.dirname(__file__)
    code = (f"import sys, pipeflow; sys.path.insert(0, {here!r}); import test_hostile_m2 as t;"
            f"pipeflow.set_dir({str(data_dir)!r}); print('COMPLETE', t.M2A().complete())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert "COMPLETE False" in out.stdout, out.stdout + out.stderr
    res = pipeflow.run(M2B(), forced=M2B(), execution_summary=False)
    assert res
    assert M2A().outputLoad()["a"].tolist() == [1, 2]
    assert M2B().outputLoad()["a"].tolist() == [10, 20]
    assert M2A().complete() and M2B().complete()


def test_corrupt_output_found_by_an_input_load_fails_once(data_dir):
    pipeflow.run(M2B(), execution_summary=False)
    _edit_keeping_stat(M2A().output().path)
    with pytest.raises(pipeflow.errors.TaskFailedError):
        pipeflow.run(M2B(), forced=M2B(), execution_summary=False)
    assert not M2A().complete()
    assert pipeflow.run(M2B(), forced=M2B(), execution_summary=False)
    assert M2B().outputLoad()["a"].tolist() == [10, 20]


def test_corrupt_output_while_the_task_runs_elsewhere_is_remembered_here(data_dir):
    pipeflow.run(M2A(), execution_summary=False)
    _edit_keeping_stat(M2A().output().path)
    record = M2A()._store.record_file()
    before = record.read_bytes()
    with M2A()._store.locked("test"):  # held: the record cannot be rewritten now
        with pytest.raises(CorruptOutputError):
            M2A().outputLoad()
        assert not M2A().complete()
    assert record.read_bytes() == before
    assert not M2A().complete()


# -- 2. adopt() on a FIFO or a folder at an output path ------------------------------------

def _adopt_in_thread():
    box = {}

    def go():
        try:
            box["result"] = pipeflow.adopt(M2A())
        except BaseException as exc:
            box["error"] = exc

    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(60)
    assert not th.is_alive(), "adopt() blocked"
    return box


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_adopt_refuses_a_non_file_at_an_output_path(kind, data_dir):
    path = M2A().output().path
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    box = _adopt_in_thread()
    err = box.get("error")
    assert isinstance(err, MetadataError), box
    what = "a FIFO" if kind == "fifo" else "a folder"
    assert what in str(err) and "M2A" in str(err) and str(path) in str(err), str(err)
    assert not M2A()._store.record_file().exists()
    assert (path.is_fifo() if kind == "fifo" else path.is_dir())


# -- 3. a SQLite file that is not a history ------------------------------------------------

def _foreign_history():
    path = runstore.history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
        conn.execute("INSERT INTO customers VALUES (1, 'x')")
    conn.close()
    return path


def _tables(path):
    with sqlite3.connect(path) as conn:
        names = {r for (r,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    return names


def test_foreign_sqlite_file_is_not_a_history(data_dir):
    path = _foreign_history()
    for query in (pipeflow.history, pipeflow.runs, lambda: pipeflow.last_run(M2A()),
                  lambda: pipeflow.prune_history(keep=1)):
        with pytest.raises(HistoryError) as info:
            query()
        assert str(path) in str(info.value) and "not a pipeflow run history" in str(info.value)
    runstore.HistorySink._warned.discard(str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pipeflow.run(M2A(), execution_summary=False)
        assert pipeflow.run(M2A(), forced=M2A(), execution_summary=False)
    hist = [w for w in caught if "history" in str(w.message)]
    assert len(hist) == 1, [str(w.message) for w in caught]
    assert "not a pipeflow run history" in str(hist[0].message)
    assert _tables(path) == {"customers"}
    assert M2A().complete()


def test_empty_history_file_is_still_adopted(data_dir):
    path = runstore.history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    assert len(pipeflow.runs()) == 0
    pipeflow.run(M2A(), execution_summary=False)
    assert len(pipeflow.runs()) == 1


# -- 4. prune_history on a read-only history -------------------------------------------------

_PRUNE = '''
import sys, pipeflow
pipeflow.set_dir(sys.argv[1])
try:
    pipeflow.prune_history(keep=0)
    print("RESULT ok")
except pipeflow.errors.PipeflowError as exc:
    print("RESULT", type(exc).__name__, exc)
except BaseException as exc:
    print("RESULT raw", type(exc).__name__, exc)
'''


def test_prune_read_only_history_says_read_only(tmp_path, data_dir, on_read_only_mount):
    pipeflow.run(M2A(), execution_summary=False)
    pipeflow.run(M2A(), forced=M2A(), execution_summary=False)
    (tmp_path / "prune.py").write_text(_PRUNE)
    proc = on_read_only_mount(data_dir, sys.executable, tmp_path / "prune.py", data_dir)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stdout + proc.stderr
    text = line[0]
    assert "HistoryError" in text, text
    assert "read-only" in text and "damaged" not in text, text
    assert len(pipeflow.runs()) == 2


def test_saving_the_corrupt_output_by_hand_makes_the_task_complete_again(data_dir):
    pipeflow.run(M2A(), execution_summary=False)
    _edit_keeping_stat(M2A().output().path)
    with pytest.raises(CorruptOutputError):
        M2A().outputLoad()
    assert not M2A().complete()
    M2A().save(pd.DataFrame({"a": [1, 2]}))
    assert M2A().complete()
    assert M2A().outputLoad()["a"].tolist() == [1, 2]
