"""Commit records and file hashes (pipeflow/integrity.py)."""

from __future__ import annotations

import array
import itertools
import json
import os
import pathlib
import pickle
import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeflow.integrity import (
    META_KEY,
    CommitRecord,
    FileRecord,
    HashingFile,
    committed_record,
    hash_bytes,
    hash_file,
    read_record,
    seal,
    temp_owner,
    uncommit,
    write_record,
)
from pipeflow.publishing import _new_temp

FIXTURES = [HealthCheck.function_scoped_fixture]
#: characters of file names: any but "/" and NUL (and lone surrogates, not encodable)
NAME_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="/\x00")
_counter = itertools.count()
BIG = random.Random(0).randbytes(3 * (1 << 20) + 7)  # several read chunks, and a partial one


def _fresh(tmp_path: pathlib.Path) -> pathlib.Path:
    """A new empty folder (hypothesis reuses one tmp_path for every example)."""
    folder = tmp_path / f"ex{next(_counter)}"
    folder.mkdir()
    return folder


def _write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.write_bytes(data)
    return path


# -- hashes ---------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURES)
@given(st.binary(max_size=5000))
@example(b"")
@example(b"\x00")
@example(bytes(1 << 20))  # exactly one chunk: the single-read path
@example(bytes(1 << 20) + b"\x01")  # one byte more: the chunked path
@example(BIG)
def test_hash_file_equals_hash_bytes(tmp_path, data):
    path = _write(tmp_path / f"f{next(_counter)}", data)
    digest = hash_file(path)
    assert digest == hash_bytes(data)
    assert digest == hash_file(str(path))
    assert hash_bytes(bytearray(data)) == digest
    assert hash_bytes(memoryview(data)) == digest


def test_hashes_tell_contents_apart(tmp_path):
    digests = {hash_bytes(b""), hash_bytes(b"\x00"), hash_bytes(b"a"), hash_bytes(b"b"),
               hash_bytes(BIG), hash_bytes(BIG[:-1] + bytes([BIG[-1] ^ 1]))}
    assert len(digests) == 6
    assert all(len(d) == 32 and int(d, 16) >= 0 for d in digests)  # 128-bit hex
    changed = bytearray(BIG)
    changed[1 << 20] ^= 0xFF  # a byte in the second chunk
    assert hash_file(_write(tmp_path / "big", bytes(changed))) != hash_bytes(BIG)


def test_hash_file_of_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "missing")


def _open_new(path: pathlib.Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURES)
@given(st.lists(st.binary(max_size=3000), max_size=8), st.booleans())
@example([BIG, b"tail"], False)
def test_hashing_file_records_what_was_written(tmp_path, chunks, fsync):
    path = tmp_path / f"h{next(_counter)}"
    fd = _open_new(path)
    try:
        fh = HashingFile(fd)
        for chunk in chunks:
            assert fh.write(chunk) == len(chunk)
        rec = fh.record("final.bin", fsync)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    assert path.read_bytes() == data
    st_ = path.stat()
    assert rec == FileRecord("final.bin", len(data), st_.st_mtime_ns, st_.st_ino, hash_file(path))
    assert rec.digest == hash_bytes(data)


def test_hashing_file_takes_any_buffer_as_its_bytes(tmp_path):
    path = tmp_path / "typed"
    numbers = array.array("d", [1.5, -2.0, 3.25])
    grid = memoryview(bytes(range(12))).cast("B", (3, 4))  # two-dimensional
    fd = _open_new(path)
    try:
        fh = HashingFile(fd)
        assert fh.write(numbers) == numbers.itemsize * len(numbers)
        assert fh.write(grid) == 12
        assert fh.write(bytearray(b"end")) == 3
        rec = fh.record(path.name, False)
    finally:
        os.close(fd)
    expected = numbers.tobytes() + bytes(range(12)) + b"end"
    assert path.read_bytes() == expected
    assert rec.digest == hash_bytes(expected) == hash_file(path)
    assert rec.size == len(expected)


def test_pickle_dumps_through_a_hashing_file(tmp_path):
    obj = {"a": list(range(1000)), "b": BIG[:200_000], "c": "é" * 10}
    path = tmp_path / "obj.pkl"
    fd = _open_new(path)
    try:
        fh = HashingFile(fd)
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[arg-type]
        rec = fh.record(path.name, True)
    finally:
        os.close(fd)
    assert pickle.loads(path.read_bytes()) == obj
    assert rec.digest == hash_file(path)
    assert rec.size == path.stat().st_size


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.parametrize("data", [b"", b"abc", BIG])
def test_seal_describes_the_file_under_its_final_name(tmp_path, fsync, data, monkeypatch):
    path = _write(tmp_path / ".out.csv.tmp-123", data)
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    rec = seal(path, "out.csv", fsync)
    assert len(synced) == (1 if fsync else 0)
    assert rec == FileRecord.of(path, "out.csv")
    assert rec.name == "out.csv"
    assert rec.size == len(data)
    assert rec.digest == hash_bytes(data)


# -- FileRecord -----------------------------------------------------------------------------

def test_file_record_of_describes_the_file(tmp_path):
    path = _write(tmp_path / "out.csv", b"a,b\n1,2\n")
    st_ = path.stat()
    rec = FileRecord.of(path)
    assert rec == FileRecord("out.csv", 8, st_.st_mtime_ns, st_.st_ino, hash_bytes(b"a,b\n1,2\n"))
    assert FileRecord.of(path, "other.csv").name == "other.csv"
    assert FileRecord.of(path, "other.csv").digest == rec.digest


@pytest.mark.parametrize("rehash", [False, True])
def test_an_intact_file_has_no_problem(tmp_path, rehash):
    rec = FileRecord.of(_write(tmp_path / "out.bin", b"payload"))
    assert rec.problem(str(tmp_path), rehash=rehash) is None
    problem, now = rec.verify(str(tmp_path), rehash=rehash)
    assert problem is None
    assert now is rec


@pytest.mark.parametrize("rehash", [False, True])
def test_a_touched_file_is_fine_and_gets_a_new_stat(tmp_path, rehash):
    path = _write(tmp_path / "out.bin", b"payload")
    rec = FileRecord.of(path)
    os.utime(path, ns=(rec.mtime_ns + 5_000_000_000, rec.mtime_ns + 5_000_000_000))
    problem, now = rec.verify(str(tmp_path), rehash=rehash)
    assert problem is None
    assert now == FileRecord(rec.name, rec.size, rec.mtime_ns + 5_000_000_000, rec.ino,
                             rec.digest)
    # the new record is current: no further re-hash needed, and it verifies as itself
    problem, again = now.verify(str(tmp_path), rehash=False)
    assert problem is None and again is now


def test_a_copy_with_the_same_content_is_fine_and_gets_the_new_inode(tmp_path):
    path = _write(tmp_path / "out.bin", b"payload")
    rec = FileRecord.of(path)
    _write(tmp_path / "copy", b"payload").replace(path)
    problem, now = rec.verify(str(tmp_path), rehash=False)
    assert problem is None
    assert now.ino == path.stat().st_ino != rec.ino
    assert (now.name, now.size, now.digest) == (rec.name, rec.size, rec.digest)


def test_a_same_size_edit_is_found_when_the_stat_changed(tmp_path):
    path = _write(tmp_path / "out.bin", b"payload")
    rec = FileRecord.of(path)
    path.write_bytes(b"PAYLOAD")
    os.utime(path, ns=(rec.mtime_ns + 1_000_000, rec.mtime_ns + 1_000_000))
    for rehash in (False, True):
        problem, now = rec.verify(str(tmp_path), rehash=rehash)
        assert "out.bin was changed outside pipeflow" in problem
        assert "hash" in problem
        assert now is rec


def test_a_same_size_edit_hidden_from_stat_needs_rehash(tmp_path):
    # same size, same inode, mtime put back: only the hash can tell (loading always
    # re-hashes; a status check trusts the stat)
    path = _write(tmp_path / "out.bin", b"payload")
    rec = FileRecord.of(path)
    with open(path, "r+b") as fh:
        fh.write(b"PAY")
    os.utime(path, ns=(rec.mtime_ns, rec.mtime_ns))
    assert path.stat().st_ino == rec.ino
    assert rec.problem(str(tmp_path), rehash=False) is None
    assert "changed outside pipeflow" in rec.problem(str(tmp_path), rehash=True)


@pytest.mark.parametrize("rehash", [False, True])
def test_a_size_change_is_always_found(tmp_path, rehash):
    path = _write(tmp_path / "out.bin", b"payload")
    rec = FileRecord.of(path)
    path.write_bytes(b"payload and more")
    os.utime(path, ns=(rec.mtime_ns, rec.mtime_ns))
    problem, now = rec.verify(str(tmp_path), rehash=rehash)
    assert "out.bin was changed outside pipeflow" in problem
    assert "size 7 bytes" in problem and "now 16" in problem
    assert now is rec


def test_sizes_in_problems_are_grouped(tmp_path):
    rec = FileRecord("big.bin", 1_234_567, 0, 0, "0" * 32)
    _write(tmp_path / "big.bin", b"x")
    assert "1,234,567" in rec.problem(str(tmp_path), rehash=False)


@pytest.mark.parametrize("rehash", [False, True])
def test_a_deleted_file_is_found(tmp_path, rehash):
    path = _write(tmp_path / "out.bin", b"payload")
    rec = FileRecord.of(path)
    path.unlink()
    problem, now = rec.verify(str(tmp_path), rehash=rehash)
    assert problem == "out.bin was deleted outside pipeflow"
    assert now is rec


def test_a_replaced_file_with_other_content_is_found(tmp_path):
    path = _write(tmp_path / "out.bin", b"payload")
    rec = FileRecord.of(path)
    _write(tmp_path / "other", b"PAYLOAD").replace(path)
    os.utime(path, ns=(rec.mtime_ns, rec.mtime_ns))  # only the inode differs
    assert "changed outside pipeflow" in rec.problem(str(tmp_path), rehash=False)


def test_an_unreadable_file_is_a_problem_not_an_error(tmp_path):
    # a folder where the file was, of the recorded size: stat works, it is not a file
    (tmp_path / "out.bin").mkdir()
    size = (tmp_path / "out.bin").stat().st_size
    rec = FileRecord("out.bin", size, 0, 0, "0" * 32)
    problem, now = rec.verify(str(tmp_path), rehash=True)
    assert problem == "out.bin was replaced outside pipeflow by a folder"
    assert now is rec
    # the folder given is a file: stat fails with another error than "not found"
    _write(tmp_path / "plain", b"x")
    problem = FileRecord("out.bin", 1, 0, 0, "0" * 32).problem(str(tmp_path / "plain"), True)
    assert problem.startswith("out.bin cannot be read (")


@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURES)
@given(old=st.binary(max_size=300), new=st.binary(max_size=300), keep_mtime=st.booleans())
@example(old=b"abc", new=b"abc", keep_mtime=False)
@example(old=b"abc", new=b"abd", keep_mtime=True)
def test_verify_with_rehash_flags_exactly_the_content_changes(tmp_path, old, new, keep_mtime):
    folder = _fresh(tmp_path)
    path = _write(folder / "out", old)
    rec = FileRecord.of(path)
    with open(path, "r+b") as fh:  # in place: same inode
        fh.write(new)
        fh.truncate()
    if keep_mtime:
        os.utime(path, ns=(rec.mtime_ns, rec.mtime_ns))
    problem, now = rec.verify(str(folder), rehash=True)
    assert (problem is None) == (new == old)
    if problem is None:
        assert now == FileRecord.of(path)
    # without rehash: a change is missed only when size and stat are all unchanged
    quick = rec.problem(str(folder), rehash=False)
    if new != old and (len(new) != len(old) or path.stat().st_mtime_ns != rec.mtime_ns):
        assert quick is not None
    if new == old:
        assert quick is None


# -- CommitRecord ---------------------------------------------------------------------------

PLAIN_NAMES = st.text(NAME_CHARS, min_size=1, max_size=30).filter(lambda n: n not in (".", ".."))
DIGESTS = st.text("0123456789abcdef", min_size=32, max_size=32)
FILE_RECORDS = st.builds(FileRecord, PLAIN_NAMES, st.integers(0, 2**63), st.integers(),
                         st.integers(0, 2**64), DIGESTS)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
COMMIT_RECORDS = st.builds(
    CommitRecord,
    st.text(max_size=40),
    st.dictionaries(st.text(max_size=20) | st.just(META_KEY),
                    st.lists(FILE_RECORDS, max_size=3).map(tuple), max_size=4),
    st.none() | st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=4),
)


@settings(max_examples=100, deadline=None)
@given(COMMIT_RECORDS)
def test_commit_record_json_round_trip(rec):
    text = rec.to_json()
    assert CommitRecord.from_json(text) == rec
    assert CommitRecord.from_json(text.encode()) == rec
    doc = json.loads(text)
    assert doc["v"] == 1
    assert ("fp" in doc) == (rec.fingerprint is not None)
    assert text == json.dumps(doc, separators=(",", ":"))  # compact


def test_file_names_lists_every_file_in_order():
    rec = CommitRecord("T()", {
        "a": (FileRecord("a.csv", 1, 0, 0, "0" * 32),),
        "b": (FileRecord("b.parquet", 1, 0, 0, "1" * 32), FileRecord("b.json", 1, 0, 0, "2" * 32)),
        META_KEY: (FileRecord("meta.pkl", 1, 0, 0, "3" * 32),),
    })
    assert rec.file_names() == ["a.csv", "b.parquet", "b.json", "meta.pkl"]
    assert CommitRecord("T()", {}).file_names() == []


GOOD = CommitRecord("T()", {"out": (FileRecord("out.csv", 3, 4, 5, "f" * 32),)}, {"code": "x"})


def _doc(**changes):
    doc = json.loads(GOOD.to_json())
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize("text", [
    "",
    "not json",
    GOOD.to_json()[:-1],  # torn
    "[]",
    "null",
    '"text"',
    "{}",
    _doc(v=2),
    _doc(v="1"),
    '{"v": 1}',  # no files
    _doc(files={"out": 5}),
    _doc(files={"out": [5]}),
    _doc(files={"out": [["out.csv", 3, 4, 5]]}),  # a field missing
    _doc(files={"out": [["out.csv", 3, 4, 5, "f", 6]]}),  # one too many
    _doc(files={"out": [["out.csv", "three", 4, 5, "f"]]}),
    _doc(files={"out": [["out.csv", None, 4, 5, "f"]]}),
    _doc(files={"out": [["out.csv", 3, 4, float("nan"), "f"]]}),
    _doc(files={"out": [["../out.csv", 3, 4, 5, "f"]]}),
    _doc(files={"out": [["a/b", 3, 4, 5, "f"]]}),
    _doc(files={"out": [["", 3, 4, 5, "f"]]}),
    _doc(files={"out": [[".", 3, 4, 5, "f"]]}),
    _doc(files={"out": [["..", 3, 4, 5, "f"]]}),
    b'{"v": 1, "files": {"\xff": []}}',
])
def test_from_json_rejects_what_is_not_a_record(text, tmp_path):
    with pytest.raises((ValueError, KeyError, TypeError, UnicodeDecodeError)):
        CommitRecord.from_json(text)
    path = tmp_path / ".T.commit.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert read_record(path) == (None, "its commit record is damaged (a crash during a write, "
                                       "or an edit)")


BUGGY_RECORDS = [
    pytest.param(_doc(files=[]), id="files-a-list"),
    pytest.param(_doc(files=None), id="files-null"),
    pytest.param(_doc(files="x"), id="files-a-string"),
    pytest.param(_doc(files={"out": [["out.csv", 1e400, 4, 5, "f"]]}), id="size-infinite"),
    pytest.param('{"v": 1, "files": {"out": [["out.csv", Infinity, 4, 5, "f"]]}}',
                 id="size-Infinity"),
    pytest.param("[" * 100_000 + "]" * 100_000, id="deeply-nested"),
]


# regression: these raised AttributeError, OverflowError or RecursionError
@pytest.mark.parametrize("text", BUGGY_RECORDS)
def test_read_record_reports_any_damaged_record(text, tmp_path):
    path = tmp_path / ".T.commit.json"
    path.write_text(text)
    assert read_record(path) == (None, "its commit record is damaged (a crash during a "
                                       "write, or an edit)")


def test_from_json_keeps_only_an_object_as_fingerprint():
    assert CommitRecord.from_json(_doc(fp=[1, 2])).fingerprint is None
    assert CommitRecord.from_json(_doc(fp="x")).fingerprint is None
    assert CommitRecord.from_json(_doc(fp={"a": [1]})).fingerprint == {"a": [1]}
    doc = json.loads(GOOD.to_json())
    del doc["fp"], doc["task"]
    rec = CommitRecord.from_json(json.dumps(doc))
    assert rec.fingerprint is None and rec.task == ""
    assert rec.files == GOOD.files


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@given(st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode())
       | st.builds(lambda files: json.dumps({"v": 1, "files": files}).encode(),
                   st.dictionaries(st.text(max_size=5), st.lists(
                       st.lists(st.none() | st.booleans() | st.integers()
                                | st.text(max_size=5) | st.floats(allow_infinity=False),
                                max_size=6), max_size=2), max_size=3)))
def test_read_record_of_any_bytes_is_a_record_or_a_reason(tmp_path, data):
    path = tmp_path / f".T{next(_counter)}.commit.json"
    path.write_bytes(data)
    record, problem = read_record(path)
    if record is None:
        assert problem == "its commit record is damaged (a crash during a write, or an edit)"
    else:
        assert problem is None
        assert CommitRecord.from_json(record.to_json()) == record
        assert all("/" not in n and n not in ("", ".", "..") for n in record.file_names())


# regression: a NUL in a name was accepted, and verify() then raised ValueError
def test_a_file_name_with_nul_makes_the_record_damaged(tmp_path):
    path = tmp_path / ".T.commit.json"
    path.write_text(_doc(files={"out": [["a\x00b", 3, 4, 5, "f" * 32]]}))
    assert read_record(path) == (None, "its commit record is damaged (a crash during a "
                                       "write, or an edit)")


def test_read_record_missing_and_unreadable(tmp_path):
    assert read_record(tmp_path / "missing.commit.json") == (None, None)
    assert read_record(tmp_path / "nofolder" / "x.commit.json") == (None, None)
    (tmp_path / "file").write_text("x")
    record, problem = read_record(tmp_path / "file" / "x.commit.json")
    assert record is None
    assert problem == "its commit record cannot be read (Not a directory)"
    (tmp_path / "dir.commit.json").mkdir()
    record, problem = read_record(tmp_path / "dir.commit.json")
    assert record is None
    assert problem.startswith("a folder is in the place of its commit record")


def test_read_record_reads_records_larger_than_one_read(tmp_path):
    files = {f"out{i}": (FileRecord(f"f{i}.csv" + "x" * 100, i, i, i, "a" * 32),)
             for i in range(1000)}
    rec = CommitRecord("T()", files, {"k": "v" * 70_000})
    path = tmp_path / ".T.commit.json"
    write_record(path, rec)
    assert path.stat().st_size > 3 * (1 << 16)
    assert read_record(path) == (rec, None)


def test_read_record_of_a_record_of_exactly_one_read(tmp_path):
    base = CommitRecord("T()", {}, {"k": ""})
    pad = (1 << 16) - len(base.to_json())
    rec = CommitRecord("T()", {}, {"k": "v" * pad})
    assert len(rec.to_json()) == 1 << 16
    path = tmp_path / ".T.commit.json"
    write_record(path, rec)
    assert read_record(path) == (rec, None)


# -- write_record, read_record's memory, committed_record ------------------------------------

@settings(max_examples=50, deadline=None, suppress_health_check=FIXTURES)
@given(COMMIT_RECORDS, COMMIT_RECORDS)
def test_write_record_then_read_record(tmp_path, first, second):
    folder = _fresh(tmp_path)
    path = folder / ".T.commit.json"
    write_record(path, first)
    assert read_record(path) == (first, None)
    write_record(path, second)  # over an existing record: atomically, through a temp file
    assert read_record(path) == (second, None)
    assert [p.name for p in folder.iterdir()] == [path.name]


def test_write_record_creates_a_missing_folder(tmp_path):
    path = tmp_path / "a" / "b" / ".T.commit.json"
    write_record(path, GOOD)
    assert read_record(path) == (GOOD, None)


def test_write_record_over_a_crashed_writers_temp_file(tmp_path):
    path = tmp_path / ".T.commit.json"
    write_record(path, GOOD)
    stale = tmp_path / f".{path.name}.tmp-commit"
    stale.write_text("half a rec")
    other = CommitRecord("U()", {})
    write_record(path, other)
    assert read_record(path) == (other, None)
    assert not stale.exists()


def test_write_record_leaves_no_temp_when_the_replace_fails(tmp_path, monkeypatch):
    path = _fresh(tmp_path) / ".T.commit.json"
    write_record(path, GOOD)

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_record(path, CommitRecord("U()", {}))
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert read_record(path) == (GOOD, None)


def _count_opens(monkeypatch, path: pathlib.Path, fail: bool = False) -> list[str]:
    """Watch (or forbid) opening ``path``: how a record read is seen from outside."""
    opened: list[str] = []
    real = os.open

    def watched(p, *args, **kwargs):
        if os.fspath(p) == str(path):
            opened.append(os.fspath(p))
            if fail:
                raise PermissionError(13, "Permission denied")
        return real(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", watched)
    return opened


def test_a_record_just_written_is_known_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / ".T.commit.json"
    write_record(path, GOOD)
    opened = _count_opens(monkeypatch, path, fail=True)
    assert read_record(path)[0] is GOOD
    assert read_record(str(path))[0] is GOOD
    assert opened == []
    monkeypatch.undo()
    other = CommitRecord("U()", {"out": (FileRecord("o", 1, 2, 3, "4" * 32),)})
    write_record(path, other)  # replaced by this process: known too
    opened = _count_opens(monkeypatch, path, fail=True)
    assert read_record(path)[0] is other
    assert opened == []


def test_a_record_is_read_once_per_version(tmp_path, monkeypatch):
    path = tmp_path / ".T.commit.json"
    path.write_text(GOOD.to_json())  # written by another process
    opened = _count_opens(monkeypatch, path)
    first = read_record(path)[0]
    assert first == GOOD
    assert read_record(path)[0] is first
    assert len(opened) == 1
    # another writer replaces it: a new version, read again
    newer = CommitRecord("T()", {"out": (FileRecord("out.csv", 9, 9, 9, "e" * 32),)})
    tmp = tmp_path / "other-writer"
    tmp.write_text(newer.to_json())
    tmp.replace(path)
    assert read_record(path)[0] == newer
    assert len(opened) == 2
    assert read_record(path)[0] == newer
    assert len(opened) == 2


def test_read_record_after_a_write_by_another_writer(tmp_path):
    path = tmp_path / ".T.commit.json"
    write_record(path, GOOD)
    assert read_record(path)[0] is GOOD
    newer = CommitRecord("V()", {})
    (tmp_path / "w").write_text(newer.to_json())
    (tmp_path / "w").replace(path)
    assert read_record(path)[0] == newer
    path.unlink()
    assert read_record(path)[0] is None
    path.write_text("damaged")
    assert read_record(path)[0] is None


def test_a_damaged_record_is_none_and_not_remembered(tmp_path):
    path = tmp_path / ".T.commit.json"
    path.write_text("{")
    assert read_record(path)[0] is None
    (tmp_path / "w").write_text(GOOD.to_json())
    (tmp_path / "w").replace(path)
    assert read_record(path)[0] == GOOD


def test_a_record_this_process_committed_needs_no_io(tmp_path, monkeypatch):
    path = tmp_path / ".T.commit.json"
    write_record(path, GOOD)

    def no_io(*args, **kwargs):
        raise AssertionError("file system touched")

    with monkeypatch.context() as patched:  # undone before the fixtures' teardown
        patched.setattr(os, "stat", no_io)
        patched.setattr(os, "open", no_io)
        assert committed_record(path) is GOOD
        assert committed_record(str(path)) is GOOD


def test_committed_record_follows_what_this_process_has_seen_since(tmp_path):
    path = tmp_path / ".T.commit.json"
    assert committed_record(path) is None
    path.write_text(GOOD.to_json())  # another process's record: read from the file
    assert committed_record(path) == GOOD
    write_record(path, GOOD)
    newer = CommitRecord("T()", {"out": (FileRecord("out.csv", 9, 9, 9, "e" * 32),)})
    (tmp_path / "w").write_text(newer.to_json())
    (tmp_path / "w").replace(path)  # replaced by another process ...
    assert committed_record(path) is GOOD  # ... unseen: still what this process made
    assert read_record(path) == (newer, None)  # a status check sees the new version
    assert committed_record(path) == newer
    write_record(path, GOOD)
    path.unlink()  # deleted by another process, seen by a status check
    assert read_record(path) == (None, None)
    assert committed_record(path) is None
    write_record(path, GOOD)
    uncommit(path, tmp_path)  # deleted by this process
    assert committed_record(path) is None


# -- uncommit -------------------------------------------------------------------------------

def test_uncommit_removes_the_record_then_its_files(tmp_path):
    folder = tmp_path / "task"
    folder.mkdir()
    for name in ("a.csv", "b.pkl", "meta.pkl", "keep.txt"):
        _write(folder / name, name.encode())
    rec = CommitRecord("T()", {
        "a": (FileRecord.of(folder / "a.csv"),),
        "b": (FileRecord.of(folder / "b.pkl"), FileRecord("gone.bin", 1, 0, 0, "0" * 32)),
        META_KEY: (FileRecord.of(folder / "meta.pkl"),),
    })
    path = tmp_path / "records" / ".T.commit.json"
    write_record(path, rec)
    removed = uncommit(path, folder)
    assert removed == [folder / "a.csv", folder / "b.pkl", folder / "gone.bin",
                       folder / "meta.pkl"]
    assert not path.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    assert uncommit(path, folder) == []  # again: nothing left


def test_after_uncommit_a_new_record_is_read_even_if_its_stat_matches(tmp_path, monkeypatch):
    # A file system may give the next record the deleted one's inode, and a coarse clock the
    # same mtime: the record this process knew must not be taken for the new one.
    path = tmp_path / ".T.commit.json"
    old = CommitRecord("T()", {"a": (FileRecord("a.csv", 1, 2, 3, "1" * 32),)})
    new = CommitRecord("T()", {"a": (FileRecord("a.csv", 1, 2, 3, "2" * 32),)})
    assert len(old.to_json()) == len(new.to_json())
    write_record(path, old)
    st = os.stat(path)
    uncommit(path, tmp_path)
    path.write_text(new.to_json())  # another process's record
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    real_stat = os.stat

    def same_inode(p, *a, **k):
        out = real_stat(p, *a, **k)
        if os.fspath(p) == str(path):  # as if the inode number had been reused
            values = list(out)
            values[1] = st.st_ino
            return os.stat_result(values, {"st_mtime_ns": out.st_mtime_ns})
        return out

    monkeypatch.setattr(os, "stat", same_inode)
    assert read_record(path) == (new, None)


def test_uncommit_of_a_damaged_record_removes_only_the_record(tmp_path):
    _write(tmp_path / "a.csv", b"a")
    path = _write(tmp_path / ".T.commit.json", b"{damaged")
    assert uncommit(path, tmp_path) == []
    assert not path.exists()
    assert (tmp_path / "a.csv").exists()


def test_uncommit_removes_a_symlink_not_its_target(tmp_path):
    target = _write(tmp_path / "target.csv", b"precious")
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "out.csv").symlink_to(target)
    path = tmp_path / ".T.commit.json"
    write_record(path, CommitRecord("T()", {"out": (FileRecord("out.csv", 8, 0, 0, "0" * 32),)}))
    assert uncommit(path, folder) == [folder / "out.csv"]
    assert not (folder / "out.csv").is_symlink()
    assert target.read_bytes() == b"precious"


# -- temp_owner -----------------------------------------------------------------------------

@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@given(PLAIN_NAMES.filter(lambda n: len(n.encode()) <= 200))
@example("out.csv")
@example("x.tmp-abc")
@example(".hidden")
@example(".T.commit.json")
def test_temp_owner_of_a_temp_file_is_its_final_name(tmp_path, name):
    folder = _fresh(tmp_path)
    tmp, fd = _new_temp(os.path.join(folder, name))
    assert fd == -1
    assert os.path.dirname(tmp) == str(folder)
    assert os.path.exists(tmp)
    assert temp_owner(os.path.basename(tmp)) == name
    assert temp_owner(os.path.basename(tmp) + "x") == name  # whatever the random part


@settings(max_examples=100, deadline=None)
@given(PLAIN_NAMES)
def test_temp_owner_of_other_names_is_none(name):
    if not name.startswith("."):
        assert temp_owner(name) is None
    if ".tmp-" not in name:
        assert temp_owner(name) is None
        assert temp_owner("." + name) is None


@pytest.mark.parametrize("name, owner", [
    (".out.csv.tmp-0123456789ab", "out.csv"),
    ("..T.commit.json.tmp-commit", ".T.commit.json"),  # write_record's temp
    (".a.tmp-b.tmp-c", "a.tmp-b"),
    ("out.csv", None),
    (".out.csv", None),
    (".tmp-123", None),
    ("out.csv.tmp-123", None),
    (".pipeflow.lock", None),
])
def test_temp_owner_examples(name, owner):
    assert temp_owner(name) == owner
