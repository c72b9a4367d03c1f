"""Reliability: commit records, corruption, malicious pickles, disk errors, locks, secrets.

Crash (kill -9) and two-process tests live in test_crash.py and test_concurrency.py.
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import pickle
import resource
import signal
import threading
import time

import pandas as pd
import pytest

import pipeflow
from pipeflow.errors import (
    CorruptOutputError,
    IncompleteTaskError,
    ParameterError,
    TaskFailedError,
    TaskLockedError,
    UnsafePathError,
)
from pipeflow.locks import TaskLock

FRAME = pd.DataFrame({"x": range(200), "y": [f"v{i}" for i in range(200)]})


class PqOut(pipeflow.tasks.TaskPqPandas):
    def run(self):
        self.save(FRAME)


class CsvOut(pipeflow.tasks.TaskCSVPandas):
    def run(self):
        self.save(FRAME.set_index("y"))


class CsvGzOut(pipeflow.tasks.TaskCSVGZPandas):
    def run(self):
        self.save(FRAME)


class JsonOut(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"rows": list(range(200)), "name": "json"})


class PickleOut(pipeflow.tasks.TaskPickle):
    def run(self):
        self.save({"model": list(range(200))})


class ExcelOut(pipeflow.tasks.TaskExcelPandas):
    def run(self):
        self.save(FRAME)


FORMATS = [PqOut, CsvOut, CsvGzOut, JsonOut, PickleOut, ExcelOut]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _flip, _empty], ids=["truncated", "flipped",
                                                                    "zero-length"])
@pytest.mark.parametrize("cls", FORMATS, ids=lambda c: c.__name__)
def test_corrupted_output_is_not_complete_and_never_loaded(cls, damage):
    pipeflow.run(cls())
    expected = cls().outputLoad()
    path = cls().output().path
    damage(path)

    assert not cls().complete()
    preview = str(pipeflow.preview(cls(), print_it=False))
    assert f"(STALE)] - output 'data': {path.name} was changed outside pipeflow" in preview
    with pytest.raises(IncompleteTaskError, match="was changed outside pipeflow"):
        cls().outputLoad()
    with pytest.raises(CorruptOutputError) as info:
        cls().output().load()
    msg = str(info.value)
    assert f"cannot load output 'data' of {cls.__name__}()" in msg
    assert str(path) in msg and f"flow.reset({cls.__name__})" in msg

    assert pipeflow.run(cls())  # the next run recomputes it
    got = cls().outputLoad()
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected)
    else:
        assert got == expected


def test_change_with_restored_mtime_is_caught_when_loading():
    """A same-size edit with mtime put back passes the cheap status check, never a load."""
    pipeflow.run(PqOut())
    path = PqOut().output().path
    st = path.stat()
    _flip(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(CorruptOutputError, match="no longer matches the hash"):
        PqOut().output().load()


def test_touch_without_change_stays_complete():
    pipeflow.run(JsonOut())
    path = JsonOut().output().path
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert JsonOut().complete()
    assert JsonOut().outputLoad()["name"] == "json"


def test_outputs_without_a_commit_record_do_not_count(data_dir):
    """d6tflow counted any file at the output path as complete, even a partial one."""
    path = PqOut().output().path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 truncated garbage")
    assert not PqOut().complete()
    preview = str(pipeflow.preview(PqOut(), print_it=False))
    assert "no successful pipeflow run committed them" in preview
    assert pipeflow.run(PqOut())
    pd.testing.assert_frame_equal(PqOut().outputLoad(), FRAME)


def test_damaged_commit_record_means_not_complete():
    pipeflow.run(JsonOut())
    record = JsonOut()._store.record_file()
    record.write_text('{"v": 1, "files": {"data": [["x"')
    assert not JsonOut().complete()
    assert "commit record is damaged" in str(pipeflow.preview(JsonOut(), print_it=False))
    assert pipeflow.run(JsonOut())
    assert JsonOut().complete()


class _Payload:
    """Unpickling this runs code: it creates the file named in ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    pipeflow.run(PickleOut())
    path = PickleOut().output().path
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CorruptOutputError, match="it was not unpickled"):
        PickleOut().output().load()
    with pytest.raises(IncompleteTaskError):
        PickleOut().outputLoad()
    assert not marker.exists()

    # planted where no run ever committed anything: not complete, recomputed, never read
    class Planted(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save("clean")

    target = Planted().output().path
    target.parent.mkdir(parents=True)
    target.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(IncompleteTaskError):
        Planted().output().load()
    assert pipeflow.run(Planted()) and Planted().outputLoad() == "clean"
    assert not marker.exists()


def test_planted_metadata_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class WithMeta(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"a": 1})
            self.saveMeta({"rows": 1})

    pipeflow.run(WithMeta())
    assert WithMeta().outputLoadMeta() == {"rows": 1}
    WithMeta()._store.meta_target().path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CorruptOutputError):
        WithMeta().outputLoadMeta()
    assert not marker.exists()


# -- disk full and permission denied: real OS errors, in a forked child -----------------------

def _in_child(fn, *args):
    """Run ``fn(*args)`` in a forked process; return what it returned (str) or raise."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def body():
        try:
            send.send(("ok", fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - sent to the parent
            send.send(("error", f"{type(exc).__name__}: {exc}"))
        os._exit(0)

    proc = ctx.Process(target=body)
    proc.start()
    kind, value = recv.recv()
    proc.join(10)
    return kind, value


class Big(pipeflow.tasks.TaskPqPandas):
    def run(self):
        self.save(pd.DataFrame({"x": range(300_000), "y": [1.5] * 300_000}))


def _run_with_file_size_limit(limit):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        pipeflow.run(Big())
    except TaskFailedError as exc:
        return str(exc.__cause__)
    return "no error"


def test_file_too_large_for_the_process_fails_cleanly(data_dir, stored):
    kind, msg = _in_child(_run_with_file_size_limit, 64 * 1024)
    assert kind == "ok"
    assert msg.startswith("Big(): could not write ")
    assert str(Big().output().path) in msg
    assert "File too large" in msg and "Nothing was published and no partial file was left" in msg
    assert "'ulimit -f'" in msg
    assert not Big().complete()
    assert not [p for p in stored() if ".tmp-" in p.name]
    assert pipeflow.run(Big())  # without the limit it works


def _run_without_permission():
    if os.geteuid() == 0:
        os.setuid(65534)  # root ignores permissions: drop to nobody for a real EACCES
    try:
        pipeflow.run(JsonOut())
    except TaskFailedError as exc:
        return str(exc.__cause__)
    except Exception:
        import traceback
        return traceback.format_exc()
    return "no error"


@pytest.fixture
def open_data_dir():
    """A data dir that an unprivileged user can reach (pytest's tmp dirs are 0700)."""
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="pipeflow-perm-")
    os.chmod(root, 0o755)
    pipeflow.set_dir(root)
    yield pathlib.Path(root)
    shutil.rmtree(root)


def test_permission_denied_names_the_folder_and_the_fix(open_data_dir, stored):
    folder = JsonOut().output().path.parent
    folder.mkdir(parents=True)
    records = JsonOut()._store.record_file().parent  # its lock and record: writable
    records.mkdir(parents=True)
    records.chmod(0o777)
    (records / ".pipeflow.lock").touch(mode=0o666)
    (records / ".pipeflow.lock").chmod(0o666)
    folder.chmod(0o555)
    try:
        kind, msg = _in_child(_run_without_permission)
    finally:
        folder.chmod(0o755)
    assert kind == "ok", msg
    assert msg.startswith("JsonOut(): could not write ") and "Permission denied" in msg
    assert f"may not write in {str(folder)!r}" in msg and "pipeflow.set_dir" in msg
    assert not stored(open_data_dir)


def test_unwritable_data_dir_fails_the_task_before_running_it(open_data_dir, stored):
    open_data_dir.chmod(0o555)
    try:
        kind, msg = _in_child(_run_without_permission)
    finally:
        open_data_dir.chmod(0o755)
    assert kind == "ok", msg
    assert msg.startswith("JsonOut() cannot create its lock file in ")
    assert "Permission denied. Nothing was run." in msg and "pipeflow.set_dir" in msg


# -- locks ------------------------------------------------------------------------------------

def test_tasks_shared_by_two_threads_run_once(tmp_path):
    log = tmp_path / "runs.log"
    planned = threading.Barrier(3)  # both runs have planned (no task ran yet), and the test

    class Slow(pipeflow.tasks.TaskJson):
        i = pipeflow.IntParameter()

        def run(self):
            with open(log, "a") as fh:
                fh.write(f"{self.i}\n")
            time.sleep(0.02)
            self.save({"i": self.i})

    class Top(pipeflow.tasks.TaskJson):
        def requires(self):
            return [Slow(i=i) for i in range(10)]

        def run(self):
            self.save({"n": len(self.inputLoad())})

    results = []

    def once_planned(event):  # a run starts running tasks only when both have planned, so
        # neither finds Slow(i=0) complete already when planning (on a loaded machine the
        # second thread could plan late): one runs it, the other waits for it and reuses it
        if event.kind.value == "run_started":
            planned.wait(30)

    threads = [threading.Thread(target=lambda: results.append(
        pipeflow.run(Top(), callbacks=[once_planned]))) for _ in range(2)]
    for t in threads:
        t.start()
    planned.wait(30)
    for t in threads:
        t.join(30)
    assert len(results) == 2 and all(results)
    lines = log.read_text().split()
    assert sorted(lines) == sorted(str(i) for i in range(10))  # each exactly once
    states = [r.tasks[Slow(i=0).task_id].state for r in results]
    assert sorted(states) == ["completed", "up_to_date"]
    reused = next(r for r in results if r.tasks[Slow(i=0).task_id].state == "up_to_date")
    assert reused.tasks[Slow(i=0).task_id].reason == (
        "completed by another process while this run waited")


def test_if_locked_fail_fails_fast_and_reset_refuses_while_running():
    lock = JsonOut()._store.lock()
    assert lock.acquire()
    try:
        started = time.monotonic()
        with pytest.raises(TaskFailedError) as info:
            pipeflow.run(JsonOut(), if_locked="fail")
        assert time.monotonic() - started < 2
        cause = info.value.__cause__
        assert isinstance(cause, TaskLockedError)
        assert str(cause).startswith("JsonOut() is being run by another process (or thread) "
                                     "right now, and this run was asked not to wait")
        with pytest.raises(TaskLockedError,
                           match=r"cannot reset JsonOut\(\): the task is being run"):
            JsonOut().reset(confirm=False)
        with pytest.raises(TaskLockedError, match="cannot save .* by hand"):
            JsonOut().save({"a": 1})
        with pytest.raises(ValueError, match="if_locked must be one of"):
            pipeflow.run(JsonOut(), if_locked="never")
    finally:
        lock.release()
    assert pipeflow.run(JsonOut())


def test_waiting_run_proceeds_when_the_holder_lets_go():
    lock = JsonOut()._store.lock()
    assert lock.acquire()
    events = []

    def watch(event):  # the holder lets go once the run waits (no timer: load-proof)
        events.append(event)
        if event.kind.value == "task_waiting":
            lock.release()

    assert pipeflow.run(JsonOut(), callbacks=[watch])
    kinds = [e.kind.value for e in events if e.task is not None]
    assert kinds == ["task_waiting", "task_started", "task_completed"]


def test_lock_of_a_killed_process_is_released_by_the_os(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()

    def hold():
        TaskLock(tmp_path, "task-x").acquire()
        ready.set()
        time.sleep(60)

    proc = ctx.Process(target=hold)
    proc.start()
    assert ready.wait(10)
    assert not TaskLock(tmp_path, "task-x").acquire()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    lock = TaskLock(tmp_path, "task-x")
    assert lock.acquire()
    lock.release()


def test_temp_files_of_a_crashed_run_are_cleaned_by_the_next_run(data_dir, stored):
    folder = JsonOut().output().path.parent
    folder.mkdir(parents=True)
    mine = folder / f".{JsonOut().output().path.name}.tmp-crashed1"
    record_tmp = folder / f".{JsonOut()._store.record_file().name}.tmp-crashed2"
    other = folder / ".SomebodyElse-data.json.tmp-running"
    for p in (mine, record_tmp, other):
        p.write_text("partial")
    assert pipeflow.run(JsonOut())
    assert not mine.exists() and not record_tmp.exists()
    assert other.exists()  # not this task's: its owner may still be writing it


# -- safe deletes ----------------------------------------------------------------------------

def test_reset_deletes_only_committed_files_and_never_follows_symlinks(data_dir, tmp_path):
    pipeflow.run(JsonOut())
    out = JsonOut().output().path
    precious = tmp_path / "precious.json"
    precious.write_text("keep me")
    out.unlink()
    out.symlink_to(precious)  # someone replaced the output by a link out of the data dir
    notes = out.parent / "notes.txt"
    notes.write_text("mine")
    JsonOut().reset(confirm=False)
    assert precious.read_text() == "keep me"
    assert not out.is_symlink() and not out.exists()
    assert notes.exists() and out.parent.is_dir()


def test_reset_refuses_a_task_folder_linked_out_of_the_data_dir(data_dir, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    pipeflow.run(JsonOut())
    folder = JsonOut().output().path.parent
    for f in folder.iterdir():
        f.rename(outside / f.name)
    folder.rmdir()
    folder.symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="resolves to .*, outside .*a symlink"):
        JsonOut().reset(confirm=False)
    assert (outside / JsonOut().output().path.name).exists()


def test_persist_names_must_be_plain_names():
    class Sneaky(pipeflow.tasks.TaskJson):
        persist = ["../../escape"]

    with pytest.raises(UnsafePathError) as info:  # was a plain PipeflowError (issue 11)
        Sneaky().output()
    assert "must be a plain output name: it may not contain '/'" in str(info.value)


# -- parameter values ----------------------------------------------------------------------------

class Typed(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter(default=1)
    rate = pipeflow.FloatParameter(default=0.5)
    flag = pipeflow.BoolParameter(default=False)
    items = pipeflow.ListParameter(default=[])
    kind = pipeflow.ChoiceParameter(choices=["a", "b"], default="a")

    def run(self):
        self.save({"n": self.n})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 2.5}, "Typed: parameter 'n' must be an int, but got 2.5 (float). Typed declares "
                 "n (int, default 1). Pass e.g. Typed(n=3)."),
    ({"n": True}, "parameter 'n' must be an int, but got True (bool)"),
    ({"rate": "fast"}, "parameter 'rate' must be a float, but got 'fast' (str)"),
    ({"flag": 1}, "parameter 'flag' must be a bool, but got 1 (int)"),
    ({"items": "x"}, "parameter 'items' must be a list, but got 'x' (str)"),
    ({"kind": "z"}, "Typed: parameter 'kind' must be one of 'a', 'b', but got 'z' (str). Typed "
                    "declares kind (choice, default 'a'). Pass e.g. Typed(kind='a')."),
])
def test_wrong_parameter_value_type_is_explained(kwargs, message):
    with pytest.raises(ParameterError) as info:
        Typed(**kwargs)
    assert message in str(info.value)


def test_parameter_strings_are_parsed_like_the_command_line():
    assert Typed(n="3").n == 3 and Typed(rate="0.25").rate == 0.25
    assert Typed(flag="true").flag is True and Typed(items="[1, 2]").items == (1, 2)
    with pytest.raises(ParameterError, match="parameter 'n' must be an int"):
        pipeflow.Workflow(Typed, {"n": 7.5})


# -- secrets --------------------------------------------------------------------------------------

SECRET = "hunter2-Secret-Token"


class Login(pipeflow.tasks.TaskJson):
    user = pipeflow.Parameter(default="ann")
    token = pipeflow.SecretParameter(default="default-secret-value")

    def run(self):
        if self.token != "right":
            raise PermissionError(f"login refused for token {self.token}")
        self.save({"ok": True})


def test_secret_never_appears_in_names_ids_previews_errors_or_records(data_dir, capsys):
    task = Login(token=SECRET)
    assert task.token == SECRET  # the task itself sees it
    assert task.task_id == Login().task_id  # not significant: not in the id
    shown = [task.task_id, repr(task), str(pipeflow.preview(task, print_it=False)),
             *map(str, task._store.owned_paths())]
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(task, execution_summary=True)
    result = info.value.result
    res = result.tasks[task.task_id]
    shown += [str(info.value), str(info.value.__cause__), res.traceback, result.summary(),
              capsys.readouterr().out]
    assert "login refused for token ***" in str(info.value.__cause__)
    with pytest.raises(ParameterError) as wrong:
        Login(tokn=SECRET)
    shown.append(str(wrong.value))
    assert "token (secret, default ***)" in str(wrong.value)
    ok = Login(token="right")
    assert pipeflow.run(ok)
    shown += [p.read_text(errors="replace") for p in data_dir.rglob("*") if p.is_file()]
    shown += [p.name for p in data_dir.rglob("*")]
    multi = pipeflow.WorkflowMulti(Login, {"user": ["ann"], "token": [SECRET, "right"]})
    shown += [str(n) for n in multi.params]
    assert list(multi.params) == ["user=ann,token=***1", "user=ann,token=***2"]
    leaks = [s for s in shown if SECRET in s or "default-secret-value" in s]
    assert not leaks


def test_adopt_commits_existing_d6tflow_outputs_once():
    class Up(pipeflow.tasks.TaskCSVPandas):
        def run(self):
            self.save(FRAME)

    @pipeflow.requires(Up)
    class Down(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"rows": len(self.inputLoad())})

    # what a d6tflow data dir looks like: plain files, no commit records
    Up().output().path.parent.mkdir(parents=True)
    FRAME.to_csv(Up().output().path, index=False)
    flow = pipeflow.Workflow(Down)
    assert flow.preview(print_it=False).counts() == {"COMPLETE": 0, "STALE": 0, "PENDING": 2}
    assert flow.adopt() == [Up()]  # Down has no files: nothing to adopt
    assert Up().complete()
    pd.testing.assert_frame_equal(Up().outputLoad(), FRAME)
    assert flow.adopt() == []  # already committed
    assert flow.run()
    assert Down().outputLoad() == {"rows": 200}


def test_changing_a_location_attribute_after_instantiation_moves_the_outputs(data_dir):
    class Moved(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"a": 1})

    task = Moved()
    before = task.output().path
    Moved.task_group = "group"
    try:
        assert task.output().path == data_dir / "group" / "Moved" / before.name
        assert task._store.record_file().parent == (
            data_dir / ".pipeflow" / "commits" / "group" / "Moved")
    finally:
        del Moved.task_group
    assert task.output().path == before


@pytest.mark.parametrize("value", ["/\x00", "a\x00b"])
@pytest.mark.parametrize("where", ["path", "env"])
def test_nul_in_locations_is_an_unsafe_path_error(where, value):
    with pytest.raises(UnsafePathError, match=f"{where}=.*NUL byte or characters that cannot"):
        pipeflow.Workflow(JsonOut, **{where: value})


def test_tuple_persist_is_held_to_the_commit_record_too():
    class Pair(pipeflow.tasks.TaskJson):
        persist = ("a", "b")

        def run(self):
            self.save({"a": 1, "b": 2})

    for target in Pair().output().values():  # files at the output paths, never committed
        target.path.parent.mkdir(parents=True, exist_ok=True)
        target.path.write_text('{"data": 0}')
    assert not Pair().complete()
    assert pipeflow.run(Pair()) and Pair().outputLoad() == [1, 2]


def test_file_system_without_locks_degrades_to_in_process_locking(monkeypatch, tmp_path):
    import errno

    from pipeflow import locks

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "fcntl", no_locks)
    monkeypatch.setattr(locks.fcntl, "lockf", no_locks)
    first = TaskLock(tmp_path / "nfs", "task")
    with pytest.warns(RuntimeWarning, match="does not support file locks"):
        assert first.acquire()
    assert not TaskLock(tmp_path / "nfs", "task").acquire()  # still exclusive in-process
    first.release()
    assert TaskLock(tmp_path / "nfs", "task").acquire()


def test_commit_record_that_cannot_be_written_fails_the_task_cleanly(monkeypatch, stored):
    import errno

    def disk_full(path, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeflow.tasks.store, "write_record", disk_full)
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(JsonOut())
    msg = str(info.value.__cause__)
    assert msg.startswith("JsonOut(): could not write its commit record ")
    assert "No space left on device. The run's outputs do not count and were removed." in msg
    assert "The disk (or your quota) is full" in msg
    assert not JsonOut().complete()
    assert not stored()


def test_aborting_a_run_that_already_committed_removes_the_record_first(stored):
    """A worker stopped after writing its record but before reporting success."""
    pipeflow.run(JsonOut())
    assert JsonOut()._store.record_file().exists()
    JsonOut()._store.abort_run()
    assert not JsonOut().complete()
    assert not stored()
