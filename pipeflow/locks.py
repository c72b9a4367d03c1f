"""Task locks: a task runs in one place at a time, across threads and processes.

Two notebooks or terminals running flows that share a task must not both run it. Each
task is locked while it runs (and while its outputs are reset or saved by hand) with a
one-byte range lock in a hidden file of its folder (``.pipeflow.lock``), at an offset
derived from the task's name. On Linux these are open-file-description locks
(``F_OFD_SETLK``): they conflict between threads and processes alike, survive ``fork``
in the worker that inherits them, and are released by the OS when the holder dies, however
it dies, so a lock never needs removing by hand. Elsewhere POSIX record locks
(``lockf``) are used, plus a table of the locks held in this process.

The lock file itself is never deleted: deleting a lock file others may hold open would let
two holders in at once. Nor is it followed: a lock path that is a symlink (which would
create or lock its target), a folder or anything but a plain file is refused with
:class:`~pipeflow.errors.UnsafePathError`; it is never replaced, since replacing a lock
file could also let two holders in at once.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import pathlib
import stat
import struct
import threading
import warnings

from pipeflow.errors import UnsafePathError

try:
    import fcntl
except ImportError:  # Windows: in-process locking only
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".pipeflow.lock"
_OFD = getattr(fcntl, "F_OFD_SETLK", None)

_mutex = threading.Lock()
_fds: dict[str, int] = {}  # folder -> open lock file
_held: set[tuple[str, int]] = set()  # (folder, offset) held by this process


def _forget_after_fork() -> None:
    # A forked worker keeps the inherited descriptors open (the parent's locks stay
    # held while it lives) but must take any lock of its own through new descriptors.
    global _mutex
    _mutex = threading.Lock()
    _fds.clear()
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class TaskLock:
    """The lock of one task.

    Args:
        folder: the task's folder (created if missing).
        name: a name unique to the task within the folder.
        who: the task, named in error messages (anything whose ``str`` names it).

    Example:
        >>> with TaskLock(folder, ".Train_x_123.commit.json") as held:  # doctest: +SKIP
        ...     if held: ...                       # released when the block ends
    """

    def __init__(self, folder: str | pathlib.Path, name: str, who: object = None):
        # absolute: a process that changes directory must keep locking the same file
        folder = os.fspath(folder)
        self.folder = folder if _plain_absolute(folder) else os.path.abspath(folder)
        self.offset = _offset(name)
        self.who = who
        self.held = False

    def acquire(self) -> bool:
        """Take the lock if it is free; return whether it was taken (never waits).

        Raises:
            UnsafePathError: the lock file is a symlink, a folder or not a plain file.
            OSError: its folder cannot be created or the file opened.
        """
        key = (self.folder, self.offset)
        with _mutex:
            if key in _held:
                return False
            fd = _lock_file(self.folder, self.who)
            if fd is not None and not _range_lock(fd, self.offset, take=True):
                return False
            _held.add(key)
        self.held = True
        return True

    def __enter__(self) -> bool:
        """Try to take the lock (never waits); whether it was taken."""
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the lock back (no-op when not held)."""
        if not self.held:
            return
        key = (self.folder, self.offset)
        with _mutex:
            fd = _fds.get(self.folder)
            if fd is not None and key in _held:
                _range_lock(fd, self.offset, take=False)
            _held.discard(key)
        self.held = False


def _plain_absolute(folder: str) -> bool:
    """Whether ``folder`` is absolute and normalized already (abspath would return it)."""
    return (os.sep == "/" and folder.startswith("/") and "//" not in folder
            and not folder.endswith(("/", "/.", "/..")) and "/./" not in folder
            and "/../" not in folder)


@functools.lru_cache(maxsize=1 << 16)
def _offset(name: str) -> int:
    """The byte a task's lock takes in its folder's lock file: derived from its name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2  # a positive off_t


def _lock_file(folder: str, who: object = None) -> int | None:
    if fcntl is None:
        return None
    fd = _fds.get(folder)
    if fd is not None and os.fstat(fd).st_nlink == 0 and not any(k[0] == folder for k in _held):
        # its lock file was deleted (say, the folder removed by hand): a lock on it would
        # no longer exclude anyone opening the file anew
        os.close(_fds.pop(folder))
        fd = None
    if fd is None:
        os.makedirs(folder, exist_ok=True)
        fd = _open_lock_file(os.path.join(folder, LOCK_FILE), who)
        _fds[folder] = fd
    return fd


#: never follow a symlink, never block on a FIFO
_OPEN = (os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
         | getattr(os, "O_NONBLOCK", 0))


def _open_lock_file(path: str, who: object) -> int:
    """Open (or create) the lock file at ``path``: a plain file, never a link's target."""
    try:
        fd = os.open(path, _OPEN, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EOPNOTSUPP):
            raise
        raise _not_a_lock_file(path, who) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_lock_file(path, who)
    return fd


def _not_a_lock_file(path: str, who: object) -> UnsafePathError:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        what = f"a symlink to {os.readlink(path)!r}"
    elif stat.S_ISDIR(mode):
        what = "a directory"
    else:
        what = "not a plain file"
    named = f"{who}: " if who is not None else ""
    return UnsafePathError(
        f"{named}the task lock file {path!r} is {what}. pipeflow creates its lock files as "
        f"plain files and never follows, replaces or deletes one (that could let two runs of "
        f"a task in at once), so the task was not run, reset or saved. Remove {path!r} by "
        f"hand when nothing runs; pipeflow creates a fresh one."
    )


def _range_lock(fd: int, offset: int, take: bool) -> bool:
    try:
        if _OFD is not None:
            kind = fcntl.F_WRLCK if take else fcntl.F_UNLCK
            # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)
            fcntl.fcntl(fd, _OFD, struct.pack("hhqqi4x", kind, os.SEEK_SET, offset, 1, 0))
        else:
            fcntl.lockf(fd, (fcntl.LOCK_EX | fcntl.LOCK_NB) if take else fcntl.LOCK_UN,
                        1, offset, os.SEEK_SET)
    except (BlockingIOError, PermissionError):
        return False
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        _warn_unsupported(fd)
    return True


# errors of file systems without byte-range locks (some network file systems)
_UNSUPPORTED = {errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS}
_warned: set[int] = set()


def _warn_unsupported(fd: int) -> None:
    if fd not in _warned:
        _warned.add(fd)
        warnings.warn(
            "pipeflow: this file system does not support file locks, so tasks are locked "
            "only within this process; do not run the same flow from two processes on this "
            "data dir at the same time.", RuntimeWarning, stacklevel=4)
