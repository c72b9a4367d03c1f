"""Publishing files atomically: temp files, staging during a run, the move into place.

Every file is written to a temp file beside its final path (``.{name}.tmp-XXXX``, created
exclusively), fsynced (``settings.fsync``), then ``os.replace``-d into place, so a reader
never sees half a file. While a task runs under the engine its saves are *staged*: the temp
files are published only after ``run()`` returned and every declared output was saved
(:class:`Staging`), so a ``run()`` that raises after ``save()`` leaves nothing that looks
complete. The engine needs only this module, never the formats of :mod:`pipeflow.targets`.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import os
import pathlib
import re
import threading
from collections.abc import Callable, Container, Iterator
from typing import Any, BinaryIO

from pipeflow import cache, settings, storage
from pipeflow.errors import SaveError
from pipeflow.integrity import RECORD_SUFFIX as _RECORD_SUFFIX
from pipeflow.integrity import FileRecord, HashingFile, seal, uncommit
from pipeflow.locks import TaskLock


class Stream:
    """Writes one file to an open binary file object instead of a path.

    The temp file is then opened once, and hashed as it is written instead of being read
    back (what pickle and JSON outputs use).

    Args:
        dump: called with a writable binary file object.
    """

    __slots__ = ("dump",)

    def __init__(self, dump: Callable[[BinaryIO], None]):
        self.dump = dump


#: writes one file: called with the temp file's path, or a :class:`Stream`
Writer = Callable[[pathlib.Path], None] | Stream
#: a temp file (a string for streams, a Path for writers given a path)
Temp = str | pathlib.Path
#: final path -> (temp file, its record), or None to delete the final path at publication
Staged = dict[pathlib.Path, "tuple[Temp, FileRecord] | None"]
#: the task saving, for error messages (``"Train(): "``), or a function that gives it
Who = str | Callable[[], str]


class Interrupted(BaseException):
    """Raised inside an attempt to stop it (a cancel or its timeout).

    Raised into the attempt's thread by the executor, and by every later ``save()`` and
    the commit of an attempt whose :class:`Stop` has fired (its ``run()`` may have caught
    the first one).
    """


class Stop:
    """The stop signal of one attempt: once fired, the attempt publishes nothing.

    The executor fires it before it interrupts the attempt's thread, so even a ``run()``
    that catches the interrupt cannot save or commit afterwards (see :class:`Staging`).
    """

    __slots__ = ("_fired",)

    def __init__(self) -> None:
        self._fired = threading.Event()

    def fire(self) -> None:
        """Stop the attempt: from now on its saves and its commit raise :class:`Interrupted`."""
        self._fired.set()

    @property
    def fired(self) -> bool:
        """Whether the attempt was stopped."""
        return self._fired.is_set()

    def check(self) -> None:
        """Raise :class:`Interrupted` if the attempt was stopped."""
        if self._fired.is_set():
            raise Interrupted(
                "this attempt was stopped (its timeout, or the run was cancelled): nothing it "
                "saves is kept")


_STOP: contextvars.ContextVar[Stop | None] = contextvars.ContextVar(
    "pipeflow_stop", default=None
)


@contextlib.contextmanager
def attempt(stop: Stop) -> Iterator[Stop]:
    """Run the block as one attempt that ``stop`` stops (used by the executors)."""
    token = _STOP.set(stop)
    try:
        yield stop
    finally:
        _STOP.reset(token)


class Staging:
    """The outputs one running task has saved so far, published together by :meth:`commit`.

    An attempt whose :class:`Stop` has fired (see :func:`attempt`) can neither stage nor
    commit: its saves and its commit raise :class:`Interrupted`, its temp files deleted.

    Attributes:
        owned: final paths of the running task's outputs; saves to other paths publish at once.
        files: final path -> staged temp file (``None``: delete the final path at commit).
        records: final path -> size and hash of the staged temp file.
        memory: the in-memory targets' objects, by their key in ``pipeflow.data``.
        stop: the stop signal of the attempt (None outside an executor).
    """

    def __init__(self, owned: Container[pathlib.Path]):
        self.owned = owned
        self.stop = _STOP.get()
        self.files: dict[pathlib.Path, Temp | None] = {}
        self.records: dict[pathlib.Path, FileRecord] = {}
        self.memory: dict[pathlib.Path | str, Any] = {}

    def owns(self, path: pathlib.Path) -> bool:
        """Whether a save to ``path`` belongs to the running task (and is staged)."""
        return path in self.owned

    def saved(self, path: pathlib.Path | str) -> bool:
        """Whether ``path`` was saved during this run."""
        return path in self.files or path in self.memory

    def take(self, staged: Staged) -> None:
        """Keep ``staged`` files until :meth:`commit` (replacing earlier saves of them).

        Raises:
            Interrupted: the attempt was stopped; ``staged`` is deleted.
        """
        if self.stop is not None and self.stop.fired:
            discard(staged)
            self.stop.check()
        for final, item in staged.items():
            old = self.files.get(final)
            if old is not None:
                _unlink(old)
            self.files[final] = None if item is None else item[0]
            self.records.pop(final, None)
            if item is not None:
                self.records[final] = item[1]

    def commit(self) -> dict[pathlib.Path, FileRecord]:
        """Publish every staged file and in-memory object; return the published files.

        Raises:
            Interrupted: the attempt was stopped; nothing is published, its temp files are
                deleted.
        """
        if self.stop is not None and self.stop.fired:
            self.rollback()
            self.stop.check()
        for final, tmp in self.files.items():
            _move(tmp, final)
            cache.data.pop(final, None)
            if tmp is not None and isinstance(final, storage.RemotePath):
                self.records[final] = _stamped(self.records[final], final)
        published = self.records
        self.files, self.records = {}, {}
        cache.data.update(self.memory)
        self.memory.clear()
        return published

    def rollback(self) -> None:
        """Delete every staged temp file; nothing of this run is published."""
        for tmp in self.files.values():
            if tmp is not None:
                _unlink(tmp)
        self.files.clear()
        self.records.clear()
        self.memory.clear()


_STAGING: contextvars.ContextVar[Staging | None] = contextvars.ContextVar(
    "pipeflow_staging", default=None
)


def current() -> Staging | None:
    """The staging of the task running in this context (None outside a run)."""
    return _STAGING.get()


@contextlib.contextmanager
def staging(owned: Container[pathlib.Path]) -> Iterator[Staging]:
    """Stage saves to ``owned`` paths for the duration of the block (used by the engine)."""
    stg = Staging(owned)
    token = _STAGING.set(stg)
    try:
        yield stg
    except BaseException:
        stg.rollback()
        raise
    finally:
        _STAGING.reset(token)


def stage(writers: dict[pathlib.Path, Writer | None], who: Who = "") -> Staged:
    """Write every file to a temp file beside its final path: all of them, or none.

    Args:
        writers: final path -> writer (None: the final path is to be deleted).
        who: the task, for error messages (``"Train(): "``), or a function giving it.

    Raises:
        SaveError: a file cannot be written; no temp file is left behind.
    """
    staged: Staged = {}
    try:
        for final, writer in writers.items():
            staged[final] = None if writer is None else write_temp(final, writer, who)
    except BaseException:
        discard(staged)
        raise
    return staged


def discard(staged: Staged) -> None:
    """Delete the temp files of ``staged``."""
    for item in staged.values():
        if item is not None:
            _unlink(item[0])


def _unlink(path: Temp) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def publish(staged: Staged, main: pathlib.Path) -> list[FileRecord]:
    """Move staged files into place, ``main`` last; return their records, ``main``'s first."""
    for final in sorted(staged, key=lambda f: f == main):
        item = staged[final]
        _move(None if item is None else item[0], final)
        cache.data.pop(final, None)
        if item is not None and isinstance(final, storage.RemotePath):
            staged[final] = (item[0], _stamped(item[1], final))
    return [item[1] for _f, item in sorted(staged.items(), key=lambda x: x[0] != main)
            if item is not None]


def _stamped(rec: FileRecord, final: Any) -> FileRecord:
    """``rec`` of a file just uploaded, with the object's version tag where the inode goes."""
    found = storage.info(final.url)
    if found is None:
        return rec
    return FileRecord(rec.name, rec.size, 0, storage.tag_of(found), rec.digest)


def _move(tmp: Temp | None, final: pathlib.Path) -> None:
    """Put ``tmp`` at ``final`` (None: delete ``final``).

    Raises:
        SaveError: the file system refused (say, a folder is in the way).
    """
    try:
        if isinstance(final, storage.RemotePath):
            # uploaded to its final key (an object appears whole or not at all); the
            # commit record, written after every output, is what makes it count
            if tmp is None:
                final.unlink(missing_ok=True)
            else:
                storage.put(tmp, final.url)
                _unlink(tmp)
        elif tmp is None:
            final.unlink(missing_ok=True)
        else:
            os.replace(tmp, final)
    except OSError as exc:
        raise SaveError(
            f"cannot publish {str(final)!r}: {os_reason(exc)}. Nothing of this save counts. "
            f"{os_fix(exc, final.parent)}"
        ) from exc


def write_temp(final: pathlib.Path, writer: Writer, who: Who = "") -> tuple[Temp, FileRecord]:
    """Write a temp file beside ``final`` with ``writer``; return it and its record.

    Args:
        final: where the file is to be published.
        writer: writes it (given the temp file's path, or a file object for a Stream).
        who: the task, for error messages (or a function giving it, called on error).

    Raises:
        SaveError: the disk is full, permission is denied, or another OS error; no temp
            file is left behind.
    """
    tmp: Temp | None = None
    if isinstance(final, storage.RemotePath):
        too_long = storage.key_problem(final.url)
        if too_long is not None:
            raise SaveError(
                f"{_who(who)}cannot save {final.url!r}: {too_long}. Nothing was written. "
                f"Use shorter folder names (target_dir, task_group, env) or a shorter "
                f"data dir prefix.")
    try:
        if isinstance(writer, Stream):
            # strings, not Paths: a stream needs no path object (a hot path)
            where = os.fspath(final)
            name = os.path.basename(where)
            tmp, fd = _new_temp(where, keep_open=True)
            try:
                fh = HashingFile(fd)
                writer.dump(fh)  # type: ignore[arg-type]
                # (a staged copy of a remote output needs no fsync: the store keeps it)
                return tmp, fh.record(name, settings.fsync and "://" not in where)
            finally:
                os.close(fd)
        tmp = path = pathlib.Path(_new_temp(os.fspath(final))[0])
        writer(path)
        return path, seal(path, final.name,
                          settings.fsync and not isinstance(final, storage.RemotePath))
    except OSError as exc:
        if tmp is not None:
            _unlink(tmp)
        raise SaveError(
            f"{_who(who)}could not write {str(final)!r}: {os_reason(exc)}. Nothing was "
            f"published and no partial file was left. {os_fix(exc, final.parent)}"
        ) from exc
    except BaseException:
        if tmp is not None:
            _unlink(tmp)
        raise


def _who(who: Who) -> str:
    return who() if callable(who) else who


def _new_temp(final: str, keep_open: bool = False) -> tuple[str, int]:
    """Create an empty temp file ``.{name}.tmp-XXXXXXXXXXXX`` beside ``final``, exclusively.

    Created with the normal file mode (what the umask allows), so no chmod is needed when
    it is published. Returns it, and its open descriptor with ``keep_open`` (else -1).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    folder, name = os.path.split(final)
    if "://" in folder:  # bound for a remote file system: written on local disk first
        folder = storage.staging_folder(folder)
    for attempt in range(100):
        tmp = os.path.join(folder, f".{name}.tmp-{os.urandom(6).hex()}")
        try:
            fd = os.open(tmp, flags, 0o666)
            if keep_open:
                return tmp, fd
            os.close(fd)
            return tmp, -1
        except FileExistsError:
            continue
        except FileNotFoundError:
            if attempt:
                raise
            os.makedirs(folder, exist_ok=True)  # the first output in this folder
    raise FileExistsError(f"no free temp-file name beside {str(final)!r}")


def write_atomic(path: str | os.PathLike[str], writer: Writer) -> None:
    """Write a file that belongs to no task atomically (temp file beside it, then rename).

    Raises:
        SaveError: it cannot be written (nothing is left behind).
    """
    final = pathlib.Path(path)
    publish(stage({final: writer}), final)


def task_lock(record: str | os.PathLike[str], who: object = None) -> TaskLock:
    """The lock of the task whose commit record is (or will be) at ``record``.

    The record's path names the task within its folder: the one place a lock's identity
    is decided, for runs and resets alike. ``who`` names the task in error messages.
    On a remote store that writes conditionally (S3), the lock is also a lease object
    beside the record (:class:`RemoteTaskLock`): it guards runners on other machines.
    """
    where = os.fspath(record)
    if ("://" in where and settings.remote_lease
            and where.split("://", 1)[0].lower() in storage.LEASES):
        return RemoteTaskLock(where, who)
    return TaskLock(*_lock_place(where), who)


#: the suffix replacing the commit record's for a task's lease object
LEASE_SUFFIX = ".lease.json"
_leases: dict[str, bytes] = {}  # lease URL -> the content this process wrote
_lease_mutex = threading.Lock()
_lease_renewer: threading.Thread | None = None
#: set when this process holds no lease any more: the renewer ends at once, not a period later
_lease_idle = threading.Event()
# lease URL -> the lock its renewal, its release and lease_lost() hold: a renewal rewrites the
# object, then records what it wrote; a check or a release between the two would compare the
# store's new content with the old one, and take the lease for lost (or leave it behind)
_lease_guards: dict[str, threading.Lock] = {}


def _forget_leases() -> None:
    global _lease_mutex, _lease_renewer, _lease_idle
    _lease_mutex = threading.Lock()
    _leases.clear()  # a forked child holds none (its parent renews them)
    _lease_guards.clear()
    _lease_renewer = None
    _lease_idle = threading.Event()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_leases)


class RemoteTaskLock(TaskLock):
    """A task's lock on a remote store: the local OS lock, then a lease object.

    The local lock (in this machine's state folder, keyed by the record's URL) guards the
    processes of this machine; the lease, ``.{task_id}.lease.json`` beside the commit
    record, written with a conditional PUT (``If-None-Match: *``), guards runners on other
    machines. It names its holder and when it expires; the holder renews it every third
    of ``settings.remote_lease`` and deletes it on release. A lease whose holder died is taken
    over once it has expired (the clocks of the machines must agree within seconds).

    Args:
        record: the commit record's URL.
        who: the task, named in error messages.
    """

    def __init__(self, record: str, who: object = None):
        folder, name = _lock_place(record)
        super().__init__(folder, name, who)
        self.lease = _lease_url(record)

    def acquire(self) -> bool:
        """Take the local lock, then the lease; whether both were taken (never waits).

        Raises:
            UnsafePathError: the local lock file is not a plain file.
            OSError: the lock file or the lease cannot be written.
        """
        if not super().acquire():
            return False
        try:
            taken = _take_lease(self.lease)
        except BaseException:
            super().release()
            raise
        if not taken:
            super().release()
        return taken

    def release(self) -> None:
        """Delete the lease, then give the local lock back (no-op when not held)."""
        if not self.held:
            return
        try:
            _drop_lease(self.lease)
        finally:
            super().release()


def _take_lease(url: str) -> bool:
    data = _lease_data()
    if not storage.create(url, data):
        found = storage.read_tagged(url)
        if found is None:  # released meanwhile
            if not storage.create(url, data):
                return False
        elif not _expired(found[0]):
            return False
        # its holder died: taken over (see RemoteTaskLock), only if nobody else took it
        # over since it was read (deleting it, then creating, would let two in at once)
        elif not storage.replace(url, data, found[1]):
            return False
    with _lease_mutex:
        _leases[url] = data
        _lease_idle.clear()
        _lease_guards.setdefault(url, threading.Lock())
        _start_renewer()
    return True


def _guard(url: str) -> contextlib.AbstractContextManager[object]:
    """The lock of lease ``url`` held by this process (a no-op when it holds none)."""
    with _lease_mutex:
        guard = _lease_guards.get(url)
    return contextlib.nullcontext() if guard is None else guard


def _drop_lease(url: str) -> None:
    with _guard(url):
        with _lease_mutex:
            mine = _leases.pop(url, None)
        if mine is not None and storage.cat(url) == mine:
            storage.rm(url)
    with _lease_mutex:
        if url not in _leases:
            _lease_guards.pop(url, None)
        if not _leases:
            _lease_idle.set()


def _lease_data() -> bytes:
    import json
    import socket
    import time

    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "started": _started(os.getpid()),
                       "expires": time.time() + settings.remote_lease,
                       "nonce": os.urandom(6).hex()}).encode()


def _started(pid: int) -> float | None:
    """When process ``pid`` of this machine started (None: no such process)."""
    import psutil

    try:
        return round(float(psutil.Process(pid).create_time()), 3)
    except (psutil.Error, OSError):
        return None


def _expired(data: bytes) -> bool:
    """Whether a lease no longer holds: past its time, or its holder (here) is gone.

    A lease written on this machine names its process (pid and start time): when that
    process is gone (killed, crashed), the lease is void at once, without waiting.
    """
    import json
    import socket
    import time

    try:
        doc = json.loads(data)
        if float(doc["expires"]) < time.time():
            return True
        if doc.get("host") == socket.gethostname():
            return _started(int(doc["pid"])) != doc.get("started")
        return False
    except (ValueError, KeyError, TypeError):
        return True  # not a lease pipeflow wrote (a torn write): nobody holds it


def _start_renewer() -> None:
    """Start the renewing thread unless it runs (called holding ``_lease_mutex``)."""
    global _lease_renewer
    if _lease_renewer is None or not _lease_renewer.is_alive():
        _lease_renewer = threading.Thread(target=_renew_leases, name="pipeflow-leases",
                                          daemon=True)
        _lease_renewer.start()


def _renew_leases() -> None:
    global _lease_renewer
    while True:
        _lease_idle.wait(max(settings.remote_lease, 0.3) / 3)
        with _lease_mutex:
            held = dict(_leases)
            if not held:
                # decided under the mutex: a lease taken from now on starts a new renewer
                _lease_renewer = None
                return
        for url in held:
            with _guard(url), contextlib.suppress(OSError):  # (the next round tries again)
                with _lease_mutex:
                    mine = _leases.get(url)
                if mine is None:
                    continue  # released meanwhile
                found = storage.read_tagged(url)
                if found is None or found[0] != mine:
                    continue  # lost (taken over while this process was paused): never rewritten
                data = _lease_data()
                if not storage.replace(url, data, found[1]):
                    continue  # taken over between the read and the write
                with _lease_mutex:
                    if url in _leases:
                        _leases[url] = data


def lease_lost(record: str) -> bool:
    """Whether this runner held the lease of the task whose record is ``record``, and lost it.

    A runner paused (or cut off) for longer than ``settings.remote_lease`` finds its lease
    taken over, or gone: it must then publish nothing, and delete nothing. False when the
    task has no lease (a local store, leases off) or this process cannot tell.

    Raises:
        RemoteFileError: the store cannot be reached.
    """
    if "://" not in record or not settings.remote_lease or \
            record.split("://", 1)[0].lower() not in storage.LEASES:
        return False
    url = _lease_url(record)
    with _guard(url):  # (not while the renewer rewrites it)
        with _lease_mutex:
            mine = _leases.get(url)
        found = storage.cat(url)
    if mine is not None:
        return found != mine
    if found is None:
        return False  # (no lease known here: a forked worker whose parent holds none)
    import json
    import socket

    try:  # a forked worker: its parent (the engine) holds the lease
        doc = json.loads(found)
        return not (doc.get("host") == socket.gethostname()
                    and doc.get("pid") in (os.getpid(), os.getppid()))
    except (ValueError, TypeError, AttributeError):
        return True


def _lease_url(record: str) -> str:
    return (record[:-len(_RECORD_SUFFIX)] if record.endswith(_RECORD_SUFFIX)
            else record) + LEASE_SUFFIX


@functools.lru_cache(maxsize=1 << 14)
def _lock_place(record: str) -> tuple[str, str]:
    """(folder, name) of the lock of the task whose record is at ``record`` (a hot path).

    A remote record's lock is an OS lock in this machine's state folder, keyed by the
    record's folder URL: it guards the processes of this machine (across machines, luigid
    hands each task to one worker).
    """
    folder = os.path.dirname(record)
    if "://" in folder:
        folder = storage.lock_folder(folder)
    return folder, os.path.basename(record)



def unpublish(record: str | os.PathLike[str], folder: pathlib.Path,
              allowed: Container[str] | None = None, who: object = None) -> bool:
    """Under the task's lock, delete its commit record, then the files it lists.

    The record is read under the lock (a run may just have committed). In-memory copies
    of the deleted files are dropped. ``folder`` must have been checked to lie inside the
    task's location; only names in ``allowed`` (the task's own files, when given) are
    deleted, whatever the record lists.

    Returns:
        False, deleting nothing, when the task's lock is held elsewhere (it is running).

    Raises:
        UnsafePathError: the task's lock file is not a plain file (``who`` names the task).
        SaveError: the file system refused (a read-only data dir, say).
    """
    try:
        with task_lock(record, who) as held:
            if not held:
                return False
            withdraw(record, folder, allowed)
    except OSError as exc:
        raise SaveError(
            f"{'' if who is None else f'{who}: '}cannot delete the outputs committed by "
            f"{os.fspath(record)!r}: {os_reason(exc)}. {os_fix(exc, folder)}"
        ) from exc
    return True


def withdraw(record: str | os.PathLike[str], folder: pathlib.Path,
             allowed: Container[str] | None = None) -> None:
    """As :func:`unpublish`, for a caller that holds the task's lock already."""
    if storage.exists(os.fspath(record)) if storage.is_remote(os.fspath(record)) \
            else os.path.lexists(record):
        for file in uncommit(record, folder, allowed):
            cache.data.pop(file, None)


def _errno(exc: OSError) -> int | None:
    """The errno of an OS error, also when a library only put it in the message (pyarrow)."""
    if exc.errno is not None:
        return exc.errno
    match = re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)
    return int(match.group(1)) if match else None


def os_reason(exc: OSError) -> str:
    """What an OS error means, in words (``No space left on device``)."""
    code = _errno(exc)
    return os.strerror(code) if code is not None else str(exc)


def os_fix(exc: OSError, folder: pathlib.Path) -> str:
    """How to fix an OS error met while writing in ``folder``."""
    code = _errno(exc)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return ("The disk (or your quota) is full: free some space, or move the data dir "
                "with pipeflow.set_dir(...).")
    if code == errno.EFBIG:
        return ("The file is larger than this process or file system allows (see "
                "'ulimit -f'): raise the limit or save smaller outputs.")
    if code in (errno.ENOTDIR, errno.EEXIST) and (
            blocker := settings.in_the_way(folder)) is not None:
        return (f"A file is in the place of the folder {str(blocker)!r}: pipeflow never "
                f"deletes a file it did not make. Move it, then try again.")
    if code in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
        return ("A folder is in the way of the file: pipeflow never deletes a folder it did "
                "not make. Move or delete it, then try again.")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"This process may not write in {str(folder)!r}: fix the folder's "
                f"permissions, or choose a data dir you can write with pipeflow.set_dir(...).")
    return "Check the data dir's file system, then run the task again."
