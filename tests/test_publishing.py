"""Publishing files atomically (pipeflow/publishing.py): temp files, staging, the move."""

from __future__ import annotations

import errno
import itertools
import os
import pathlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pipeflow
from pipeflow import cache
from pipeflow.errors import SaveError
from pipeflow.integrity import (
    CommitRecord,
    FileRecord,
    hash_bytes,
    hash_file,
    read_record,
    temp_owner,
    write_record,
)
from pipeflow.locks import TaskLock, _offset
from pipeflow.publishing import (
    Staging,
    Stream,
    current,
    discard,
    os_fix,
    os_reason,
    publish,
    stage,
    staging,
    task_lock,
    unpublish,
    withdraw,
    write_atomic,
    write_temp,
)

FIXTURES = [HealthCheck.function_scoped_fixture]
#: characters of file names: any but "/" and NUL (and lone surrogates, not encodable)
NAME_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="/\x00")
_counter = itertools.count()


def _fresh(tmp_path: pathlib.Path) -> pathlib.Path:
    """A new empty folder (hypothesis reuses one tmp_path for every example)."""
    folder = tmp_path / f"ex{next(_counter)}"
    folder.mkdir()
    return folder


def _names(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _temps(folder: pathlib.Path) -> list[str]:
    return [n for n in _names(folder) if ".tmp-" in n]


def writes(data: bytes):
    """A path writer of ``data``."""
    return lambda path: path.write_bytes(data)


def streams(data: bytes, pieces: int = 3):
    """A Stream writer of ``data``, in ``pieces`` writes."""
    step = max(1, -(-len(data) // pieces))

    def dump(fh):
        for i in range(0, len(data), step):
            fh.write(data[i:i + step])

    return Stream(dump)


def fails(exc: BaseException, after: bytes = b"partial"):
    """A path writer that writes some bytes, then raises ``exc``."""

    def writer(path):
        path.write_bytes(after)
        raise exc

    return writer


# -- stage, publish, discard ----------------------------------------------------------------

def test_stage_writes_hidden_temps_beside_and_publishes_nothing(tmp_path):
    folder = _fresh(tmp_path)
    a, b = folder / "a.csv", folder / "b.pkl"
    staged = stage({a: writes(b"aaa"), b: streams(b"bbbb")})
    assert set(staged) == {a, b}
    assert not a.exists() and not b.exists()
    for final, item in staged.items():
        tmp, rec = item
        tmp = pathlib.Path(tmp)
        assert tmp.parent == final.parent
        assert tmp.name.startswith(f".{final.name}.tmp-")
        assert temp_owner(tmp.name) == final.name
        assert rec.name == final.name
        assert rec.digest == hash_file(tmp)
        assert rec.size == tmp.stat().st_size
    assert len(_temps(folder)) == 2


def test_publish_moves_temps_into_place_with_their_records(tmp_path):
    folder = _fresh(tmp_path)
    a, b, main = folder / "a.csv", folder / "b.pkl", folder / "main.parquet"
    staged = stage({a: writes(b"aaa"), main: writes(b"main"), b: streams(b"bbbb")})
    records = publish(staged, main)
    assert _names(folder) == ["a.csv", "b.pkl", "main.parquet"]  # no temp left
    assert [r.name for r in records] == ["main.parquet", "a.csv", "b.pkl"]  # main's first
    for rec in records:
        path = folder / rec.name
        assert rec.digest == hash_file(path)
        assert rec.size == path.stat().st_size
        assert rec.ino == path.stat().st_ino  # the very file written, moved
        assert rec.problem(str(folder), rehash=True) is None
    assert a.read_bytes() == b"aaa" and b.read_bytes() == b"bbbb"
    assert main.read_bytes() == b"main"


def test_publish_moves_main_last(tmp_path, monkeypatch):
    folder = _fresh(tmp_path)
    main, a, b = folder / "main", folder / "a", folder / "b"
    staged = stage({main: writes(b"m"), a: writes(b"a"), b: writes(b"b")})
    moved: list[pathlib.Path] = []
    real = os.replace

    def spy(src, dst):
        moved.append(pathlib.Path(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    publish(staged, main)
    assert moved[-1] == main
    assert sorted(moved) == sorted([main, a, b])


def test_publish_replaces_old_files_and_drops_their_cached_copies(tmp_path):
    folder = _fresh(tmp_path)
    a, gone = folder / "a", folder / "gone"
    a.write_bytes(b"old")
    gone.write_bytes(b"old")
    cache.data[a] = "stale object"
    cache.data[gone] = "stale object"
    cache.data["other"] = "kept"
    staged = stage({a: writes(b"new"), gone: None})
    assert staged[gone] is None
    assert a.read_bytes() == b"old"  # staging leaves the published file alone
    records = publish(staged, a)
    assert [r.name for r in records] == ["a"]
    assert a.read_bytes() == b"new"
    assert not gone.exists()  # None: deleted at publication
    assert a not in cache.data and gone not in cache.data
    assert cache.data["other"] == "kept"


def test_stage_creates_a_missing_folder(tmp_path):
    final = tmp_path / "x" / "y" / "out.bin"
    records = publish(stage({final: writes(b"1")}), final)
    assert final.read_bytes() == b"1"
    assert records[0].digest == hash_bytes(b"1")


def test_discard_removes_the_temps_and_keeps_published_files(tmp_path):
    folder = _fresh(tmp_path)
    a = folder / "a"
    a.write_bytes(b"published")
    staged = stage({a: writes(b"new"), folder / "b": streams(b"b"), folder / "c": None})
    assert len(_temps(folder)) == 2
    discard(staged)
    assert _names(folder) == ["a"]
    assert a.read_bytes() == b"published"
    discard(staged)  # again: harmless


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES)
@given(data=st.binary(max_size=4000), stream=st.booleans(), pieces=st.integers(1, 5))
@example(data=b"", stream=True, pieces=1)
@example(data=b"", stream=False, pieces=1)
def test_published_file_and_record_match_the_bytes(tmp_path, data, stream, pieces):
    folder = _fresh(tmp_path)
    final = folder / "out.bin"
    writer = streams(data, pieces) if stream else writes(data)
    (rec,) = publish(stage({final: writer}), final)
    assert _names(folder) == ["out.bin"]
    assert final.read_bytes() == data
    assert rec.digest == hash_bytes(data) == hash_file(final)
    assert rec.size == len(data)
    assert rec.name == "out.bin"


def test_stream_and_path_writers_give_the_same_file_and_record(tmp_path):
    data = os.urandom(300_000)
    one, two = _fresh(tmp_path), _fresh(tmp_path)
    (by_path,) = publish(stage({one / "f": writes(data)}), one / "f")
    (by_stream,) = publish(stage({two / "f": streams(data, 7)}), two / "f")
    assert (one / "f").read_bytes() == (two / "f").read_bytes() == data
    assert (by_path.name, by_path.size, by_path.digest) == (
        by_stream.name, by_stream.size, by_stream.digest)


# -- errors while staging -------------------------------------------------------------------

def test_a_failing_writer_leaves_no_temp_and_publishes_nothing(tmp_path):
    folder = _fresh(tmp_path)
    a, b, c = folder / "a", folder / "b", folder / "c"
    b.write_bytes(b"previous")
    with pytest.raises(KeyError, match="bad data"):  # not an OS error: raised as it is
        stage({a: writes(b"a"), b: fails(KeyError("bad data")), c: writes(b"c")})
    assert _names(folder) == ["b"]
    assert b.read_bytes() == b"previous"


def test_a_failing_stream_leaves_no_temp(tmp_path):
    folder = _fresh(tmp_path)

    def dump(fh):
        fh.write(b"half")
        raise ValueError("cannot encode")

    with pytest.raises(ValueError, match="cannot encode"):
        stage({folder / "a": writes(b"a"), folder / "b": Stream(dump)})
    assert _names(folder) == []


def test_an_interrupt_while_writing_leaves_no_temp(tmp_path):
    folder = _fresh(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        stage({folder / "a": writes(b"a"), folder / "b": fails(KeyboardInterrupt())})
    assert _names(folder) == []


@pytest.mark.parametrize("stream", [False, True])
def test_an_os_error_becomes_a_save_error(tmp_path, stream):
    folder = _fresh(tmp_path)
    error = OSError(errno.ENOSPC, "No space left on device")
    if stream:
        def dump(fh):
            fh.write(b"x")
            raise error
        writer = Stream(dump)
    else:
        writer = fails(error)
    with pytest.raises(SaveError) as info:
        stage({folder / "ok": writes(b"1"), folder / "out.bin": writer}, who="Train(): ")
    message = str(info.value)
    assert message.startswith("Train(): could not write ")
    assert "out.bin" in message
    assert "No space left on device" in message
    assert "Nothing was published" in message
    assert "full" in message  # the fix
    assert info.value.__cause__ is error
    assert isinstance(info.value, ValueError)  # SaveError is a ValueError too
    assert _names(folder) == []


def test_who_is_called_only_on_error(tmp_path):
    folder = _fresh(tmp_path)
    calls: list[int] = []

    def who():
        calls.append(1)
        return "Task(x=1): "

    stage({folder / "a": writes(b"a")}, who=who)
    assert calls == []
    with pytest.raises(SaveError, match=r"^Task\(x=1\): could not write"):
        stage({folder / "b": fails(OSError(errno.EIO, "I/O error"))}, who=who)
    assert calls == [1]


def test_a_real_os_error_becomes_a_save_error(tmp_path):
    (tmp_path / "file").write_bytes(b"not a folder")
    with pytest.raises(SaveError, match="Not a directory") as info:
        stage({tmp_path / "file" / "out.csv": writes(b"x")})
    assert isinstance(info.value.__cause__, OSError)


# -- write_temp -----------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_write_temp_returns_a_hidden_temp_beside_and_its_record(tmp_path, stream):
    folder = _fresh(tmp_path)
    final = folder / "model.pkl"
    tmp, rec = write_temp(final, streams(b"abc") if stream else writes(b"abc"))
    # a stream's temp is a string, a path writer's a Path
    assert isinstance(tmp, str if stream else pathlib.Path)
    tmp = pathlib.Path(tmp)
    assert tmp.parent == folder
    assert tmp.name.startswith(".model.pkl.tmp-")
    assert temp_owner(tmp.name) == "model.pkl"
    assert tmp.read_bytes() == b"abc"
    assert not final.exists()
    st_ = tmp.stat()
    assert rec == FileRecord("model.pkl", 3, st_.st_mtime_ns, st_.st_ino, hash_bytes(b"abc"))


def test_write_temp_names_are_unique(tmp_path):
    folder = _fresh(tmp_path)
    temps = {os.fspath(write_temp(folder / "f", writes(b""))[0]) for _ in range(20)}
    assert len(temps) == 20
    assert not (folder / "f").exists()


@pytest.mark.parametrize("exc", [OSError(errno.EACCES, "Permission denied"), RuntimeError("x")])
@pytest.mark.parametrize("stream", [False, True])
def test_write_temp_removes_its_temp_on_error(tmp_path, exc, stream):
    folder = _fresh(tmp_path)

    def dump(fh):
        fh.write(b"x")
        raise exc

    writer = Stream(dump) if stream else fails(exc)
    with pytest.raises(SaveError if isinstance(exc, OSError) else RuntimeError):
        write_temp(folder / "f", writer)
    assert _names(folder) == []


@pytest.mark.parametrize("stream", [False, True])
def test_fsync_setting_syncs_each_file_once(tmp_path, monkeypatch, stream):
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    folder = _fresh(tmp_path)
    final = folder / "f"
    writer = streams(b"data") if stream else writes(b"data")
    monkeypatch.setattr(pipeflow.settings, "fsync", False)
    discard(stage({final: writer}))
    assert synced == []
    monkeypatch.setattr(pipeflow.settings, "fsync", True)
    (rec,) = publish(stage({final: writer}), final)
    assert len(synced) == 1
    assert final.read_bytes() == b"data"
    assert rec.digest == hash_file(final)


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES)
@given(st.text(NAME_CHARS, min_size=1, max_size=40)
       .filter(lambda n: n not in (".", "..")))
@example(".hidden")
@example("x.tmp-1")
def test_temp_of_any_file_name_is_hidden_beside_it(tmp_path, name):
    folder = _fresh(tmp_path)
    final = folder / name
    tmp, rec = write_temp(final, streams(b"x"))
    base = os.path.basename(tmp)
    assert os.path.dirname(tmp) == str(folder)
    assert base.startswith(".") and ".tmp-" in base
    assert temp_owner(base) == name
    assert rec.name == name
    (published,) = publish({final: (tmp, rec)}, final)
    assert _names(folder) == [name]
    assert published.problem(str(folder), rehash=True) is None


# -- write_atomic ---------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_write_atomic_writes_whole_files(tmp_path, stream):
    folder = _fresh(tmp_path)
    path = folder / "sub" / "shared.json"
    write_atomic(path, streams(b"{}") if stream else writes(b"{}"))
    assert path.read_bytes() == b"{}"
    write_atomic(str(path), streams(b"[1]") if stream else writes(b"[1]"))  # a str path
    assert path.read_bytes() == b"[1]"
    assert _names(path.parent) == ["shared.json"]


@pytest.mark.parametrize("exc, raised", [(OSError(errno.EROFS, "Read-only file system"),
                                          SaveError),
                                         (TypeError("not serializable"), TypeError)])
def test_write_atomic_failure_leaves_the_previous_file(tmp_path, exc, raised):
    folder = _fresh(tmp_path)
    path = folder / "shared.json"
    write_atomic(path, writes(b"previous"))
    with pytest.raises(raised):
        write_atomic(path, fails(exc, after=b"half"))
    assert path.read_bytes() == b"previous"
    assert _names(folder) == ["shared.json"]


# -- Staging --------------------------------------------------------------------------------

def test_current_is_the_staging_inside_the_block_only(tmp_path):
    assert current() is None
    with staging({tmp_path / "a"}) as outer:
        assert isinstance(outer, Staging)
        assert current() is outer
        with staging(set()) as inner:
            assert current() is inner is not outer
        assert current() is outer
    assert current() is None


def test_staging_owns_only_its_paths(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with staging({a}) as stg:
        assert stg.owns(a)
        assert not stg.owns(b)


def test_staged_saves_are_published_by_commit_only(tmp_path):
    folder = _fresh(tmp_path)
    a, b = folder / "a", folder / "b"
    b.write_bytes(b"old b")
    cache.data[b] = "stale"
    with staging({a, b, "mem-key"}) as stg:
        assert not stg.saved(a)
        stg.take(stage({a: writes(b"first")}))
        stg.take(stage({a: writes(b"second"), b: None}))  # a saved again; b deleted
        stg.memory["mem-key"] = {"x": 1}
        assert stg.saved(a) and stg.saved(b) and stg.saved("mem-key")
        assert not a.exists()
        assert b.read_bytes() == b"old b"
        assert len(_temps(folder)) == 1  # the first save of a is gone already
        assert "mem-key" not in cache.data
        published = stg.commit()
    assert a.read_bytes() == b"second"
    assert not b.exists()
    assert b not in cache.data
    assert cache.data["mem-key"] == {"x": 1}
    assert set(published) == {a}
    assert published[a].digest == hash_file(a)
    assert _names(folder) == ["a"]
    assert stg.files == {} and stg.records == {} and stg.memory == {}


def test_rollback_removes_temps_and_publishes_nothing(tmp_path):
    folder = _fresh(tmp_path)
    a = folder / "a"
    a.write_bytes(b"previous")
    with staging({a}) as stg:
        stg.take(stage({a: streams(b"new"), folder / "b": writes(b"b")}))
        stg.memory["k"] = 1
        stg.rollback()
        assert not stg.saved(a) and not stg.saved("k")
        assert stg.commit() == {}  # nothing left to publish
    assert _names(folder) == ["a"]
    assert a.read_bytes() == b"previous"
    assert "k" not in cache.data


def test_an_exception_in_the_block_rolls_back(tmp_path):
    folder = _fresh(tmp_path)
    a = folder / "a"
    with pytest.raises(RuntimeError, match="run failed"), staging({a}) as stg:
        stg.take(stage({a: writes(b"a"), folder / "b": streams(b"b")}))
        stg.memory["k"] = 1
        assert len(_temps(folder)) == 2
        raise RuntimeError("run failed")
    assert _names(folder) == []
    assert current() is None
    assert stg.files == {} and stg.memory == {}
    assert "k" not in cache.data


def test_a_block_that_ends_without_commit_leaves_temps_to_the_caller(tmp_path):
    # only an exception rolls back; the engine commits or rolls back itself
    folder = _fresh(tmp_path)
    with staging({folder / "a"}) as stg:
        stg.take(stage({folder / "a": writes(b"a")}))
    assert len(_temps(folder)) == 1
    stg.rollback()
    assert _names(folder) == []


# -- task locks and unpublishing ------------------------------------------------------------

def _commit(folder: pathlib.Path, record_path: pathlib.Path, names: list[str]) -> CommitRecord:
    """Publish files ``names`` in ``folder`` and write their commit record."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = stage({folder / n: writes(n.encode()) for n in names})
    recs = publish(staged, folder / names[0])
    record = CommitRecord("T()", {"out": tuple(recs)})
    write_record(record_path, record)
    return record


def test_task_lock_is_the_lock_of_the_records_folder_and_name(tmp_path):
    path = tmp_path / "commits" / ".T_1.commit.json"
    lock = task_lock(path)
    assert isinstance(lock, TaskLock)
    assert lock.folder == str(tmp_path / "commits")
    assert lock.offset == _offset(".T_1.commit.json")
    assert task_lock(str(path)).offset == lock.offset
    assert task_lock(tmp_path / "commits" / ".T_2.commit.json").offset != lock.offset
    with task_lock(path) as held:
        assert held
        assert TaskLock(tmp_path / "commits", ".T_1.commit.json").acquire() is False
        assert task_lock(path).acquire() is False
    assert task_lock(path).acquire() is True


def test_unpublish_removes_the_record_and_its_files(tmp_path):
    folder = tmp_path / "task"
    record_path = tmp_path / "commits" / ".T.commit.json"
    _commit(folder, record_path, ["a.csv", "b.csv"])
    (folder / "other.csv").write_bytes(b"not the task's")
    cache.data[folder / "a.csv"] = "loaded"
    cache.data[folder / "other.csv"] = "loaded"
    assert unpublish(record_path, folder) is True
    assert not record_path.exists()
    assert _names(folder) == ["other.csv"]
    assert folder / "a.csv" not in cache.data
    assert cache.data[folder / "other.csv"] == "loaded"
    assert task_lock(record_path).acquire() is True  # released afterwards


def test_unpublish_without_a_record_deletes_nothing(tmp_path):
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "a.csv").write_bytes(b"a")
    assert unpublish(tmp_path / "commits" / ".T.commit.json", folder) is True
    assert _names(folder) == ["a.csv"]


def test_unpublish_while_the_task_runs_here_deletes_nothing(tmp_path):
    folder = tmp_path / "task"
    record_path = tmp_path / "commits" / ".T.commit.json"
    record = _commit(folder, record_path, ["a.csv"])
    with task_lock(record_path) as held:
        assert held
        assert unpublish(record_path, folder) is False
    assert read_record(record_path) == (record, None)
    assert _names(folder) == ["a.csv"]


def test_unpublish_while_another_process_holds_the_lock_deletes_nothing(tmp_path,
                                                                       held_by_child):
    folder = tmp_path / "task"
    record_path = tmp_path / "commits" / ".T.commit.json"
    record = _commit(folder, record_path, ["a.csv", "b.csv"])
    lock = task_lock(record_path)
    with held_by_child(lock.folder, record_path.name) as took:  # the lock task_lock names
        assert took is True
        assert unpublish(record_path, folder) is False
        assert read_record(record_path) == (record, None)
        assert _names(folder) == ["a.csv", "b.csv"]
    assert unpublish(record_path, folder) is True
    assert not record_path.exists()
    assert _names(folder) == []


def test_withdraw_needs_no_lock_and_removes_record_and_files(tmp_path):
    folder = tmp_path / "task"
    record_path = tmp_path / "commits" / ".T.commit.json"
    _commit(folder, record_path, ["a.csv"])
    cache.data[folder / "a.csv"] = "loaded"
    with task_lock(record_path) as held:  # the caller holds it
        assert held
        withdraw(record_path, folder)
    assert not record_path.exists()
    assert _names(folder) == []
    assert folder / "a.csv" not in cache.data
    withdraw(record_path, folder)  # no record: nothing to do


def test_withdraw_removes_a_dangling_record_link(tmp_path):
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "a.csv").write_bytes(b"a")
    record_path = tmp_path / ".T.commit.json"
    record_path.symlink_to(tmp_path / "nowhere")
    withdraw(record_path, folder)
    assert not os.path.lexists(record_path)
    assert _names(folder) == ["a.csv"]


# -- OS errors in words ---------------------------------------------------------------------

@pytest.mark.parametrize("code, reason_words, fix_words", [
    (errno.ENOSPC, ["space"], ["full", "set_dir"]),
    (errno.EDQUOT, ["quota"], ["full"]),
    (errno.EACCES, ["permission"], ["may not write", "permissions", "/data/out"]),
    (errno.EPERM, ["not permitted"], ["may not write", "/data/out"]),
    (errno.EROFS, ["read-only"], ["may not write", "/data/out"]),
    (errno.EFBIG, ["too large"], ["ulimit"]),
    (errno.EIO, ["input/output"], ["check the data dir"]),
    (9999, ["9999"], ["check the data dir"]),
])
def test_os_reason_and_fix_in_words(code, reason_words, fix_words):
    exc = OSError(code, os.strerror(code))
    reason = os_reason(exc).lower()
    fix = os_fix(exc, pathlib.Path("/data/out")).lower()
    for word in reason_words:
        assert word in reason
    for word in fix_words:
        assert word.lower() in fix


def test_os_errors_without_an_errno_are_read_from_the_message():
    # pyarrow puts the errno only in its message
    exc = OSError("IOError: [Errno 28] No space left on device. Detail: write failed")
    assert exc.errno is None
    assert os_reason(exc) == os.strerror(errno.ENOSPC)
    assert "full" in os_fix(exc, pathlib.Path("/x"))
    plain = OSError("something odd")
    assert os_reason(plain) == "something odd"
    assert "check the data dir" in os_fix(plain, pathlib.Path("/x")).lower()


def test_fixes_differ_by_cause():
    folder = pathlib.Path("/x")
    fixes = {os_fix(OSError(code, "e"), folder)
             for code in (errno.ENOSPC, errno.EACCES, errno.EFBIG, errno.EIO)}
    assert len(fixes) == 4
