"""Commit records: which files a successful run published, with their size and content hash.

After a task's run succeeds and its outputs are published, one small JSON file (the commit
record ``.{task_id}.commit.json``, in ``{location}/.pipeflow/commits/`` in a folder mirroring
the task's, so the task folder holds only outputs) is written last. A task is
complete only when that record exists and every file it lists is still what was committed:

* a status check compares each file's size, mtime and inode with the record and re-hashes
  the file only when they differ (a ``touch`` is not a change; an edit is);
* loading always re-hashes, so data changed outside pipeflow is never served, and a pickle
  is unpickled only from bytes whose hash matches.

Hashes are xxHash3-128 (tens of GB/s; a corruption check, not a signature).

The record itself is not fsynced: it only names files that were fsynced before it was
written, and it is checked against their contents. Lost in a power cut, the task simply
runs again; torn, it is unreadable and the task runs again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import pathlib
import stat
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

import xxhash

from pipeflow import storage
from pipeflow.errors import MetadataError

#: suffix of commit records (hidden files: their names start with a dot)
RECORD_SUFFIX = ".commit.json"
#: key of the metadata file (``saveMeta``) in a record; output names never contain "/"
META_KEY = "/meta"
_VERSION = 1
_CHUNK = 1 << 20
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
#: how a record is opened: never through a symlink, never blocking (a FIFO in its place)
_READ_FLAGS = (os.O_RDONLY | _CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_NONBLOCK", 0))
#: the largest commit record read (records of tasks with 100,000 inputs take a few MB)
MAX_RECORD = 1 << 28
#: compact JSON (one encoder, not one per call as json.dumps makes for non-default options)
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """The content hash of ``data`` (hex)."""
    return xxhash.xxh3_128_hexdigest(data)


def hash_file(path: str | os.PathLike[str]) -> str:
    """The content hash of the file at ``path`` (hex).

    Raises:
        NotAFileError: something else than a regular file is there (a FIFO, a folder).
    """
    if storage.is_remote(path):
        return hash_bytes(_remote_bytes(os.fspath(path)))
    fd, st = open_file(path)
    try:
        return _hash_fd(fd, st.st_size)
    finally:
        os.close(fd)


def _remote_bytes(url: str) -> bytes:
    """The bytes of a remote file (downloaded: a rehash reads it all).

    Raises:
        FileNotFoundError: there is none.
        RemoteFileError: the file system failed.
    """
    data = storage.cat(url)
    if data is None:
        raise FileNotFoundError(f"{url!r} does not exist")
    return data


class NotAFileError(MetadataError):
    """A file pipeflow reads or hashes is a folder, a FIFO, a socket or a device.

    Attributes:
        kind: what is there, in words (``"a FIFO"``).
    """

    def __init__(self, path: str, kind: str):
        super().__init__(
            f"{path!r} is {kind}, not a file: it was replaced outside pipeflow by {kind} "
            f"(pipeflow reads only regular files there, and never deletes a folder or a "
            f"special file: move or delete it yourself)")
        self.kind = kind


def open_file(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """Open the regular file at ``path`` to read it: never blocking (a FIFO in its place).

    The one way pipeflow opens a file to hash it. Returns the descriptor (the caller
    closes it) and its ``fstat``.

    Raises:
        NotAFileError: it is not a regular file (a folder, a FIFO, a socket, a device).
        OSError: it cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _CLOEXEC | _NONBLOCK)
    except IsADirectoryError:
        raise NotAFileError(os.fspath(path), "a folder") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotAFileError(os.fspath(path), _kind(st.st_mode))
    return fd, st


def _hash_fd(fd: int, size: int) -> str:
    if size <= _CHUNK:  # most outputs: one read, no buffer to allocate
        return hash_bytes(os.read(fd, size + 1))
    h = xxhash.xxh3_128()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(fd, "rb", buffering=0, closefd=False) as fh:
        while n := fh.readinto(view):
            h.update(view[:n])
    return h.hexdigest()


class HashingFile:
    """A write-only binary file on an open descriptor that hashes what is written to it.

    Formats that write to a file object (pickle) or produce bytes (JSON) write through it,
    so a new output is opened once and never read back to be hashed. Only ``write`` is
    offered: what ``pickle.dump`` needs.
    """

    __slots__ = ("_fd", "_hash")

    def __init__(self, fd: int):
        self._fd = fd
        self._hash = xxhash.xxh3_128()

    def write(self, data: Any) -> int:
        """Write all of ``data`` (bytes-like) and hash it."""
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self._hash.update(view)
        size = len(view)
        done = os.write(self._fd, view)
        while done < size:
            done += os.write(self._fd, view[done:])
        return size

    def record(self, name: str, fsync: bool) -> FileRecord:
        """Flush (``fsync``) and describe the file written, under the final ``name``."""
        if fsync:
            os.fsync(self._fd)
        st = os.fstat(self._fd)
        return FileRecord(name, st.st_size, st.st_mtime_ns, st.st_ino, self._hash.hexdigest())


def seal(path: pathlib.Path, name: str, fsync: bool) -> FileRecord:
    """Finish a freshly written temp file: fsync it and describe it, with one open.

    Args:
        path: the temp file.
        name: the final file name to record.
        fsync: flush it to disk.
    """
    fd, st = open_file(path)
    try:
        if fsync:
            os.fsync(fd)
            st = os.fstat(fd)
        return FileRecord(name, st.st_size, st.st_mtime_ns, st.st_ino, _hash_fd(fd, st.st_size))
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FileRecord:
    """One committed file.

    Attributes:
        name: file name, in the task's output folder.
        size: size in bytes.
        mtime_ns: modification time when committed.
        ino: inode number when committed.
        digest: content hash (:func:`hash_file`).
    """

    name: str
    size: int
    mtime_ns: int
    ino: int
    digest: str

    @classmethod
    def of(cls, path: pathlib.Path, name: str | None = None) -> FileRecord:
        """Describe the file at ``path`` (recorded under ``name``, default its own name).

        Raises:
            NotAFileError: it is not a regular file (a folder, a FIFO: never blocks).
            OSError: it cannot be read.
        """
        if storage.is_remote(path):
            data = _remote_bytes(os.fspath(path))
            return cls(name or path.name, len(data), 0, 0, hash_bytes(data))
        fd, st = open_file(path)
        try:
            digest = _hash_fd(fd, st.st_size)
        finally:
            os.close(fd)
        return cls(name or path.name, st.st_size, st.st_mtime_ns, st.st_ino, digest)

    def problem(self, folder: str, rehash: bool) -> str | None:
        """Why the file in ``folder`` is no longer what was committed (None: it is).

        Args:
            folder: the task's output folder.
            rehash: always compare the content hash (otherwise only when size, mtime or
                inode changed).
        """
        return self.verify(folder, rehash)[0]

    def verify(self, folder: str, rehash: bool) -> tuple[str | None, FileRecord]:
        """:meth:`problem`, and the record as the file is now.

        Returns:
            ``(problem, record)``; when the file was touched or copied but its content is
            the same, ``record`` has its new mtime and inode (store it, and the next check
            need not hash the file again); otherwise it is this record.
        """
        path = os.path.join(folder, self.name)
        if "://" in folder:
            return self._verify_remote(path, rehash), self
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"{self.name} was deleted outside pipeflow", self
        except OSError as exc:
            return f"{self.name} cannot be read ({exc.strerror})", self
        if not stat.S_ISREG(st.st_mode):
            return f"{self.name} was replaced outside pipeflow by {_kind(st.st_mode)}", self
        if st.st_size != self.size:
            return (f"{self.name} was changed outside pipeflow (size {self.size:,} bytes "
                    f"when committed, now {st.st_size:,})"), self
        same_stat = st.st_mtime_ns == self.mtime_ns and st.st_ino == self.ino
        if not rehash and same_stat:
            return None, self
        try:
            same = hash_file(path) == self.digest
        except NotAFileError as exc:  # swapped in since the stat
            return f"{self.name} was replaced outside pipeflow by {exc.kind}", self
        except OSError as exc:
            return f"{self.name} cannot be read ({exc.strerror})", self
        if not same:
            return (f"{self.name} was changed outside pipeflow (its content no longer "
                    f"matches the hash recorded when it was committed)"), self
        if same_stat:
            return None, self
        return None, FileRecord(self.name, self.size, st.st_mtime_ns, st.st_ino, self.digest)


    def _verify_remote(self, url: str, rehash: bool) -> str | None:
        """:meth:`verify` on a remote file system: its size, and (``rehash``) its content."""
        try:
            size = storage.size(url)
            if size is None:
                return f"{self.name} was deleted outside pipeflow"
            if size != self.size:
                return (f"{self.name} was changed outside pipeflow (size {self.size:,} bytes "
                        f"when committed, now {size:,})")
            if rehash and hash_bytes(_remote_bytes(url)) != self.digest:
                return (f"{self.name} was changed outside pipeflow (its content no longer "
                        f"matches the hash recorded when it was committed)")
        except FileNotFoundError:
            return f"{self.name} was deleted outside pipeflow"
        return None  # (a store that cannot be reached raises RemoteFileError)


@dataclass(frozen=True)
class CommitRecord:
    """What one successful run of a task published.

    Attributes:
        task: the task, as shown to users (never secret parameter values).
        files: output name (or :data:`META_KEY`) -> the files making up that output.
        fingerprint: what the outputs were made from (see :mod:`pipeflow.fingerprint`);
            None in records written before change detection existed.
        bad: why the files no longer are what was committed, found by a load that
            re-hashed them (see :func:`distrust`); None: nothing found. A record with
            one does not make its task complete.
    """

    task: str
    files: Mapping[str, tuple[FileRecord, ...]]
    fingerprint: Mapping[str, Any] | None = None
    bad: str | None = None

    def to_json(self) -> str:
        """Serialize (compact JSON)."""
        files = {k: [[r.name, r.size, r.mtime_ns, r.ino, r.digest] for r in recs]
                 for k, recs in self.files.items()}
        doc: dict[str, Any] = {"v": _VERSION, "task": self.task, "files": files}
        if self.fingerprint is not None:
            doc["fp"] = self.fingerprint
        if self.bad is not None:
            doc["bad"] = self.bad
        return COMPACT_JSON.encode(doc)

    @classmethod
    def from_json(cls, text: str | bytes) -> CommitRecord:
        """Parse a record written by :meth:`to_json`.

        Raises:
            ValueError: the text is not a record this version understands.
            KeyError, TypeError, OverflowError, RecursionError: fields of the wrong shape,
                infinite numbers, or nesting deeper than the JSON parser goes.
        """
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("v") != _VERSION:
            raise ValueError("not a pipeflow commit record of a known version")
        listed = doc.get("files")
        if not isinstance(listed, dict):
            raise ValueError("the record lists no files")
        files = {}
        for key, recs in listed.items():
            files[key] = tuple(FileRecord(str(n), int(s), int(m), int(i), str(d))
                               for n, s, m, i, d in recs)
            if any(os.sep in r.name or "\0" in r.name or r.name in ("", ".", "..")
                   for r in files[key]):
                raise ValueError("a file name in the record is not a plain name")
        fp = doc.get("fp")
        bad = doc.get("bad")
        return cls(str(doc.get("task", "")), files, fp if isinstance(fp, dict) else None,
                   None if bad is None else str(bad))

    def file_names(self) -> list[str]:
        """Every committed file name."""
        return [r.name for recs in self.files.values() for r in recs]


def read_record(path: str | os.PathLike[str]) -> tuple[CommitRecord | None, str | None]:
    """Read the commit record at ``path``, at most once per version of the file.

    A record this process wrote or read already, unchanged since (same size, mtime and
    inode), costs one ``stat``: status checks in a session that ran the flow, the run
    history and change detection all ask for records a run has just committed.

    Returns:
        ``(record, None)``; ``(None, None)`` when there is none; ``(None, reason)`` when
        it exists but cannot be used.
    """
    key = os.fspath(path)
    if "://" in key:
        return _read_remote_record(key)
    try:
        st = os.lstat(key)
    except FileNotFoundError:
        _WRITTEN.pop(key, None)
        return None, None
    except OSError as exc:
        return None, f"its commit record cannot be read ({exc.strerror})"
    version = (st.st_size, st.st_mtime_ns, st.st_ino)
    hit = _DISTRUSTED.get(key) or _KNOWN.get(key)
    if hit is not None and hit[0] == version:  # (a regular file when it was read)
        return hit[1], None
    _WRITTEN.pop(key, None)  # someone else's version now
    _DISTRUSTED.pop(key, None)
    odd = _odd(st)
    if odd is not None:
        return None, odd
    record, problem = _read_record(key)
    if record is not None:
        _know(key, version, record)
    return record, problem


def _read_remote_record(key: str) -> tuple[CommitRecord | None, str | None]:
    """:func:`read_record` on a remote file system: one GET, parsed once per content."""
    data = storage.cat(key)  # (an unreachable store raises: never taken for "not run")
    if data is None:
        _WRITTEN.pop(key, None)
        _REMOTE.pop(key, None)
        return None, None
    hit = _REMOTE_DISTRUSTED.get(key) or _REMOTE.get(key)
    if hit is not None and hit[0] == data:
        return hit[1], None
    _WRITTEN.pop(key, None)
    _REMOTE_DISTRUSTED.pop(key, None)
    if len(data) > MAX_RECORD:
        return None, "its commit record is too large to be one pipeflow wrote"
    try:
        record = CommitRecord.from_json(data.decode())
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return None, "its commit record is damaged (a crash during a write, or an edit)"
    if len(_REMOTE) > 65536:
        _REMOTE.clear()
    _REMOTE[key] = (data, record)
    return record, None


def _odd(st: os.stat_result) -> str | None:
    """Why what is at a record's path cannot be a record pipeflow wrote (None: it may be)."""
    if stat.S_ISREG(st.st_mode):
        if st.st_size > MAX_RECORD:
            return (f"its commit record is too large to be one pipeflow wrote "
                    f"({st.st_size:,} bytes): it was replaced outside pipeflow")
        return None
    if stat.S_ISDIR(st.st_mode):
        return ("a folder is in the place of its commit record (pipeflow never deletes a "
                "folder: move or delete it)")
    return (f"its commit record is not a regular file but {_kind(st.st_mode)} (pipeflow "
            f"never writes one there, nor reads through one)")


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def _read_record(path: str) -> tuple[CommitRecord | None, str | None]:
    try:
        # os-level calls: a status check reads one record per task, and io.open's buffered
        # file object costs several times the read itself. Never through a symlink, never
        # blocking on a FIFO swapped in since the lstat, never more than MAX_RECORD bytes.
        fd = os.open(path, _READ_FLAGS)
        try:
            odd = _odd(os.fstat(fd))
            if odd is not None:
                return None, odd
            chunks = [os.read(fd, 1 << 16)]
            size = len(chunks[0])
            while len(chunks[-1]) == 1 << 16 and (chunk := os.read(fd, 1 << 16)):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RECORD:
                    return None, "its commit record is too large to be one pipeflow wrote"
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink swapped in since the lstat
            return None, "its commit record is a symlink (pipeflow never writes one there)"
        return None, f"its commit record cannot be read ({exc.strerror})"
    try:
        return CommitRecord.from_json(b"".join(chunks).decode()), None
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        # (infinite numbers overflow int(); deeply nested text exhausts json's recursion)
        return None, "its commit record is damaged (a crash during a write, or an edit)"


#: records this process wrote or read, by path: ((size, mtime, inode), record)
_KNOWN: dict[str, tuple[tuple[int, int, int], CommitRecord]] = {}
#: records this process wrote, by path, until it sees another version there (a forked
#: worker starts with none: its parent's may be replaced by other workers meanwhile)
_WRITTEN: dict[str, CommitRecord] = {}
#: records found bad by a load that could not be rewritten to say so (a read-only data dir,
#: the task's lock taken), by path: ((size, mtime, inode), the record with ``bad`` set)
_DISTRUSTED: dict[str, tuple[tuple[int, int, int], CommitRecord]] = {}
#: remote records this process wrote or read, by URL: (their bytes, the record)
_REMOTE: dict[str, tuple[bytes, CommitRecord]] = {}
#: remote records found bad by a load that could not rewrite them (as _DISTRUSTED)
_REMOTE_DISTRUSTED: dict[str, tuple[bytes, CommitRecord]] = {}
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WRITTEN.clear)


def committed_record(path: str | os.PathLike[str]) -> CommitRecord | None:
    """The record this process last committed at ``path``, else the one there now.

    No ``stat`` for a record this process wrote and has not seen replaced since (every
    run's plan reads the records of its tasks first, a task's inputs are checked against
    their records when loaded, and a forked worker starts knowing none): the upstream
    digests a downstream task's commit record keeps. Should another process replace it
    meanwhile, the digest kept is the one of what this process made, so the downstream
    task is found stale, never wrongly current.
    """
    key = os.fspath(path)
    record = _WRITTEN.get(key)
    return record if record is not None else read_record(key)[0]


def _know(path: str, version: tuple[int, int, int], record: CommitRecord) -> None:
    if len(_KNOWN) > 65536:  # a long-lived process working through many data dirs
        _KNOWN.clear()
        _WRITTEN.clear()
    _KNOWN[path] = (version, record)


def _wrote(path: str, version: tuple[int, int, int], record: CommitRecord) -> None:
    _know(path, version, record)
    _WRITTEN[path] = record
    _DISTRUSTED.pop(path, None)


def distrust(path: str | os.PathLike[str], record: CommitRecord, problem: str,
             held: bool) -> None:
    """Record that the files of ``record`` (at ``path``) no longer are what was committed.

    A load that re-hashed them found it (a status check compares size, mtime and inode
    only, so an edit that keeps them is seen by loads alone): from now on the record does
    not make its task complete, so the next run computes the task again. The files are
    left as they are (the user's edit is never deleted here).

    Args:
        path: the commit record.
        record: the record as read when its files were checked.
        problem: what the load found, naming the output and the file.
        held: the caller holds the task's lock: the record is rewritten to say so (seen
            by every process). Otherwise, or when it cannot be written (a read-only data
            dir), only this process remembers it, while the record is unchanged.
    """
    key = os.fspath(path)
    now, _ = read_record(key)
    if now is None or now != record or now.bad is not None:
        return  # replaced since it was checked (a run), or known already
    marked = dataclasses.replace(record, bad=problem)
    if held:
        with contextlib.suppress(OSError):
            write_record(key, marked)
            return
    if "://" in key:
        seen = _REMOTE.get(key)
        if seen is not None:
            _REMOTE_DISTRUSTED[key] = (seen[0], marked)
        return
    try:
        st = os.lstat(key)
    except OSError:
        return
    _DISTRUSTED[key] = ((st.st_size, st.st_mtime_ns, st.st_ino), marked)


def write_record(path: str | os.PathLike[str], record: CommitRecord) -> None:
    """Write ``record`` at ``path``; the caller holds the task's lock.

    A new record (the usual case: a run deletes the old one before it starts) is written
    in place: a torn or half-flushed record is not valid JSON, so it reads as damaged and
    the task simply runs again. That saves a rename per task, which on ext4 costs more
    than the write. An existing record is replaced atomically through a temp file (whose
    name can be fixed: the lock is held, so any file of that name is a crashed writer's).
    """
    data = record.to_json().encode()
    where = os.fspath(path)
    if "://" in where:  # one PUT: an object store replaces an object atomically
        storage.pipe(where, data)
        _REMOTE[where] = (data, record)
        _WRITTEN[where] = record
        _REMOTE_DISTRUSTED.pop(where, None)
        return
    try:
        _wrote(where, _write_new(where, data, os.O_EXCL), record)
        return
    except FileExistsError:
        pass
    except FileNotFoundError:  # its folder was removed since the lock file was made
        os.makedirs(os.path.dirname(where), exist_ok=True)
        _wrote(where, _write_new(where, data, os.O_EXCL), record)
        return
    tmp = os.path.join(os.path.dirname(where), f".{os.path.basename(where)}.tmp-commit")
    try:
        # a crashed writer's (or a planted link): removed, never written through
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        version = _write_new(tmp, data, os.O_EXCL)
        os.replace(tmp, where)
        _wrote(where, version, record)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_new(path: str, data: bytes, flag: int) -> tuple[int, int, int]:
    """Write ``data`` to a new file; return its (size, mtime, inode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flag | _CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def uncommit(path: str | os.PathLike[str], folder: pathlib.Path,
             allowed: Container[str] | None = None) -> list[pathlib.Path]:
    """Delete a commit record, then the files it lists in ``folder``; return their paths.

    The record goes first, so the task is never left looking complete with part of its
    files. The caller holds the task's lock and has checked that ``folder`` lies inside
    the task's location; ``unlink`` removes a symlink itself, never its target, and a
    folder is never deleted.

    Args:
        path: the commit record.
        folder: the task's output folder.
        allowed: the file names the task owns there (its outputs and metadata); a listed
            name outside them (a damaged or forged record) is left alone, and so is the
            name of a lock, a record or a temp file (:func:`pipeflows_own`) in any case.

    Raises:
        MetadataError: a folder is in the place of the record.
    """
    key = os.fspath(path)
    record, _ = read_record(key)
    if "://" in key:
        storage.rm(key)
        _REMOTE.pop(key, None)
        _WRITTEN.pop(key, None)
        _REMOTE_DISTRUSTED.pop(key, None)
        names = record.file_names() if record else []
        gone = [folder / n for n in names
                if not pipeflows_own(n) and (allowed is None or n in allowed)]
        for file in gone:
            file.unlink(missing_ok=True)
        return gone
    try:
        os.unlink(key)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if not os.path.isdir(key) or os.path.islink(key):
            raise
        raise MetadataError(
            f"cannot remove the commit record {key!r}: a folder is in its place. Pipeflow "
            f"never deletes a folder it did not make: move or delete it yourself, then run "
            f"the task again."
        ) from exc
    _KNOWN.pop(key, None)  # a new record may reuse the inode: never mistake it
    _WRITTEN.pop(key, None)
    _DISTRUSTED.pop(key, None)
    names = record.file_names() if record else []
    removed = [folder / n for n in names
               if not pipeflows_own(n) and (allowed is None or n in allowed)]
    for file in removed:
        with contextlib.suppress(IsADirectoryError):  # never a folder (see the run's check)
            file.unlink(missing_ok=True)
    return removed


def pipeflows_own(name: str) -> bool:
    """Whether ``name`` is one pipeflow gives its own files: never an output's.

    Lock files (``.pipeflow.lock``), commit records and temp files; a record listing one
    is damaged or forged, and it is never deleted as an output.
    """
    # (locks.LOCK_FILE and layout.OWN_DIR, spelt out: those modules are independent of this)
    return (name in (".pipeflow.lock", ".pipeflow") or name.endswith(RECORD_SUFFIX)
            or temp_owner(name) is not None)


def temp_owner(name: str) -> str | None:
    """The final file name a pipeflow temp file ``.{final}.tmp-XXXXXXXX`` stands for."""
    if not name.startswith("."):
        return None
    head, sep, _rand = name.rpartition(".tmp-")
    return head[1:] if sep and head else None
