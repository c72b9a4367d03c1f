"""Run history: what ran, when, for how long, with what result, in an embedded SQLite file.

Every ``run()`` is recorded in ``{data dir}/.pipeflow/history.db`` (``settings.history``
turns it off or moves it): the run (start, end, status, host, user, pipeflow version, the
root tasks and their parameters, and a snapshot of the machine's CPUs, memory, disk space
and platform from :func:`pipeflow.system_info`, taken as it starts) and every task attempt
(task id, family, parameters with secrets shown as ``***``, status, start, end, duration,
CPU time, peak memory of the process that ran it, error type, message and traceback, the
committed outputs with size and hash), plus each state change with its time. A snapshot
that cannot be read is stored as NULL: it never fails a run.

It is a consumer of the run's events like the progress bar: rows are buffered and written
in short ``BEGIN IMMEDIATE`` transactions (every half second while there are rows to
write, also during one long task, and when the run ends), with a busy timeout, so parallel
workers and several processes on one machine share the file without "database is locked"
errors. A history that cannot be written never fails
a run: pipeflow warns once and goes on.

Query it with :func:`history` and :func:`runs` (pandas DataFrames), or ``flow.history()``.
Queries open the file read-only (a read-only data dir can be queried); a file that is
damaged or not a history is a :class:`~pipeflow.errors.HistoryError` naming it, and one
without tables (empty, half made) reads as an empty history. A SQLite file holding other
tables and none of pipeflow's is another program's: every query raises HistoryError and
a run warns once and records nothing in it.

A run whose process died without finishing it (``kill -9``, power loss) would stay
``running`` forever: each run records the process that owns it (host, pid, process start
time), and the next run or query on the same host marks a ``running`` run whose owner is
gone ``crashed``, with a ``crashed`` attempt for each task it had in progress.

Files written before the ``system`` column existed gain it (empty for their old runs) the
first time a run is recorded in them; until then :func:`runs` shows it as None.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import importlib.metadata
import json
import numbers
import os
import pathlib
import socket
import sqlite3
import stat
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import luigi

from pipeflow import layout, settings, storage
from pipeflow.contract import adapt
from pipeflow.display.history import attempt_html, attempt_text, error_text, local_zone, missing
from pipeflow.errors import HistoryError, ParameterError, did_you_mean, shown
from pipeflow.events import Event, EventKind
from pipeflow.graph import describe
from pipeflow.integrity import CommitRecord, read_record
from pipeflow.options import whole_number
from pipeflow.parameters import MASK, is_secret, redact
from pipeflow.sysinfo import system_info

if TYPE_CHECKING:
    import pandas as pd

_encode_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
#: seconds between two writes of buffered rows during a run
FLUSH_EVERY = 0.5
#: how long a writer waits for another process's transaction before giving up
BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started REAL, finished REAL, status TEXT, host TEXT,
    user TEXT, pipeflow_version TEXT, roots TEXT, params TEXT, system TEXT, owner TEXT);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, task_id TEXT NOT NULL,
    family TEXT, task TEXT, params TEXT, attempt INTEGER, status TEXT, started REAL,
    finished REAL, duration REAL, cpu_time REAL, peak_memory REAL, error_type TEXT,
    error_message TEXT, traceback TEXT, reason TEXT, outputs TEXT);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, task_id TEXT NOT NULL,
    state TEXT, time REAL, task TEXT);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts (run_id);
CREATE INDEX IF NOT EXISTS attempts_task ON attempts (task_id, finished);
CREATE INDEX IF NOT EXISTS changes_run ON changes (run_id);
"""
#: columns added since the first version: files made before gain them
_ADDED = {"runs": ["system", "owner"], "changes": ["task"]}

_ENDS = {EventKind.TASK_COMPLETED: "completed", EventKind.TASK_FAILED: "failed",
         EventKind.TASK_RETRYING: "retried", EventKind.TASK_CANCELLED: "cancelled",
         EventKind.TASK_SKIPPED: "skipped", EventKind.TASK_UP_TO_DATE: "up_to_date"}
#: how an attempt can end: the ``status`` column of :func:`history` (``crashed``: it was in
#: progress when the process running it died)
ATTEMPT_STATUSES = (*_ENDS.values(), "crashed")
_STATES = {**_ENDS, EventKind.TASK_STARTED: "in_progress", EventKind.TASK_WAITING: "waiting",
           EventKind.TASK_RETRYING: "queued", EventKind.TASK_ADDED: "queued"}


def history_path() -> pathlib.Path | None:
    """Where the history is kept (None: ``settings.history`` is off).

    Raises:
        UnsafePathError: the data dir's ``.pipeflow`` folder is a symlink out of it.
    """
    where = settings.history
    if where is False or where is None:
        return None
    if where is True:
        if isinstance(settings.dirpath, storage.RemotePath):
            # never SQLite on an object store: this machine's state folder for that URL
            return storage.state_folder(settings.dirpath) / "history.db"
        # pipeflow's own folder of the data dir: it must not lead out of it (a symlink)
        own = layout.ensure_inside(settings.dirpath / layout.OWN_DIR, settings.dirpath,
                                   "the run history")
        return own / "history.db"
    return pathlib.Path(where)


#: SQLite's files beside the history: never opened through a link either
_SIDE_FILES = ("-wal", "-shm", "-journal")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _regular(path: pathlib.Path) -> None:
    """Refuse a history that is not a regular file, or is (or has a side file that is) a link.

    SQLite would block on a FIFO; through a symlink it would create or write the file, and
    its ``-wal``/``-shm`` files, wherever the link points (outside the data dir, say).

    Raises:
        HistoryError: the history or one of its side files is a symlink.
        sqlite3.OperationalError: it is a folder, a FIFO, a socket or a device.
    """
    for name in (os.fspath(path), *(f"{path}{side}" for side in _SIDE_FILES)):
        if os.path.islink(name):
            raise HistoryError(
                f"the run history {str(path)!r} cannot be used: {name!r} is a symlink (to "
                f"{os.readlink(name)!r}). pipeflow never opens its history or its "
                f"-wal/-shm/-journal files through a link, which could make it write outside "
                f"the data dir. Remove the link (the next run starts a new history), or name "
                f"the real file: pipeflow.settings.history = '/path/to/history.db'.")
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        raise sqlite3.OperationalError("a folder is in its place")
    if not stat.S_ISREG(mode):
        raise sqlite3.OperationalError("not a regular file (a FIFO, a socket or a device)")


@contextlib.contextmanager
def _connect(path: pathlib.Path, create: bool) -> Iterator[sqlite3.Connection]:
    """A connection to the history; ``create``: make the file and its tables if missing.

    Raises:
        HistoryError: the history (or a side file) is a symlink.
    """
    if create and not os.path.lexists(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # private from the start: SQLite gives its -wal/-shm files the same permissions;
        # never through a link (a dangling one would create its target)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o600))
    _regular(path)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        _own(conn, path)
        if create:
            conn.executescript(_SCHEMA)
            _upgrade(conn)
        yield conn
    finally:
        conn.close()


def _upgrade(conn: sqlite3.Connection) -> None:
    """Add the columns that files made by earlier versions lack (see ``_ADDED``)."""
    if not _missing(conn):
        return
    conn.execute("BEGIN IMMEDIATE")  # another process may be upgrading the same file
    try:
        for table, column in _missing(conn):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _missing(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    have = {table: _columns(conn, table) for table in _ADDED}
    return [(table, column) for table, columns in _ADDED.items()  # in the order they came
            for column in columns if column not in have[table]]


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _write(conn: sqlite3.Connection, statements: Sequence[tuple[str, list[tuple[Any, ...]]]]
           ) -> None:
    """Run ``statements`` in one short write transaction."""
    conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock later
    try:
        for sql, rows in statements:
            if rows:
                conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _params(task: luigi.Task) -> str:
    """The task's parameters as JSON, secrets as ``***`` (made once per task instance)."""
    d = task.__dict__
    hit = d.get("_pipeflow_params_json")
    if hit is None:
        out = {}
        for name, param in task.get_params():
            if name in task.param_kwargs:
                value = task.param_kwargs[name]
                out[name] = MASK if is_secret(param) else param.serialize(value)
        hit = d["_pipeflow_params_json"] = json.dumps(out)
    return hit  # type: ignore[no-any-return]


def _outputs(task: luigi.Task) -> str | None:
    path = adapt(task).record_path()
    if path is None:
        return None
    # committed a moment ago, by this process (known: one stat) or by a worker (read once)
    record = read_record(path)[0]
    return None if record is None else outputs_json(record)


def outputs_json(record: CommitRecord) -> str:
    """The history's ``outputs`` column: each output's files with size and hash, as JSON."""
    # written out by hand (one row per task of a run): json.dumps of the same dict is
    # several times slower; the names are escaped by json's own string encoder
    enc = _encode_string
    return "{" + ", ".join(
        enc(k) + ": [" + ", ".join(
            f'{{"file": {enc(r.name)}, "size": {int(r.size)}, "hash": {enc(r.digest)}}}'
            for r in recs) + "]"
        for k, recs in record.files.items()) + "}"


def _system() -> str | None:
    """The machine snapshot stored with a run, as JSON; None if it cannot be read."""
    try:
        return json.dumps(system_info("all"))
    except Exception:  # noqa: BLE001 - a snapshot is never worth failing a run for
        return None


#: held while a history is written: writes go one at a time, in order, and a worker
#: process is never forked in the middle of one (it would inherit SQLite's locks held)
_writing = threading.Lock()


def _before_fork() -> None:
    _writing.acquire()


def _after_fork_in_parent() -> None:
    _writing.release()


def _after_fork_in_child() -> None:
    global _writing
    _writing = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


class HistorySink:
    """An event sink writing one run's history (see the module docstring).

    Events are buffered as they come; the buffer is written when an event arrives half a
    second or more after the last write, by a timer thread when none arrives for that long
    (one long task), and when the run ends.

    Args:
        roots: the tasks the run was asked for.
        path: the SQLite file.
    """

    _warned: set[str] = set()

    def __init__(self, roots: Sequence[luigi.Task], path: pathlib.Path):
        self.path = path
        self.roots = list(roots)
        self.pending: list[tuple[str, list[tuple[Any, ...]]]] = []
        self.attempts: list[tuple[Any, ...]] = []
        self.changes: list[tuple[Any, ...]] = []
        self.started: dict[str, float] = {}
        self.tries: dict[str, int] = {}
        self.why: dict[str, str] = {}
        self.last_flush = time.monotonic()
        self.broken = False
        self.ended: set[str] = set()  # how attempts of this run ended
        self.settled = False  # crashed runs of others marked (at the first write)
        self.buffer_lock = threading.Lock()  # the buffers: the run's thread and the timer
        self.stopped = threading.Event()
        self.timer: threading.Thread | None = None

    def __call__(self, event: Event) -> None:
        """Record an event; write the buffered rows now and then."""
        if self.broken:
            return
        with self.buffer_lock:
            if event.kind is EventKind.RUN_STARTED:
                self._run_row(event, "running")
            elif event.kind is EventKind.RUN_FINISHED:
                self.pending.append((
                    "UPDATE runs SET finished = ?, status = ? WHERE run_id = ?",
                    [(event.time, self._status(event.error), event.run_id)]))
            elif event.task is not None:
                self._task_event(event)
        if event.kind is EventKind.RUN_STARTED:
            self.timer = threading.Thread(target=self._tick, name="pipeflow-history",
                                          daemon=True)
            self.timer.start()
        elif event.kind is EventKind.RUN_FINISHED:
            self.stopped.set()
            if self.timer is not None:
                self.timer.join()
            self._flush()
        elif time.monotonic() - self.last_flush >= FLUSH_EVERY:
            self._flush()

    def _tick(self) -> None:
        """The timer thread: write rows left waiting, half a second after the last write.

        Rows that arrive later than that after a write are written by the event itself.
        """
        while True:
            with self.buffer_lock:
                waiting = bool(self.pending or self.attempts or self.changes)
            wait = self.last_flush + FLUSH_EVERY - time.monotonic() if waiting else FLUSH_EVERY
            if self.stopped.wait(max(wait, 0.01)):
                return
            if time.monotonic() - self.last_flush >= FLUSH_EVERY:
                self._flush()

    # -- internals ------------------------------------------------------------------------
    def _status(self, error: BaseException | None) -> str:
        if isinstance(error, KeyboardInterrupt):
            return "cancelled"
        if error is not None or "failed" in self.ended or "skipped" in self.ended:
            return "failed"
        return "cancelled" if "cancelled" in self.ended else "success"

    def _run_row(self, event: Event, status: str) -> None:
        try:
            version = importlib.metadata.version("pipeflow")
        except importlib.metadata.PackageNotFoundError:  # run from a source tree
            version = "unknown"
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name in some containers
            user = str(os.getuid()) if hasattr(os, "getuid") else "?"
        roots = json.dumps([describe(t) for t in self.roots])
        params = json.dumps([json.loads(_params(t)) for t in self.roots])
        self.pending.append((
            "INSERT OR REPLACE INTO runs (run_id, started, finished, status, host, user, "
            "pipeflow_version, roots, params, system, owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(event.run_id, event.time, None, status, _HOST, user,
              version, roots, params, _system(), _owner())]))

    def _task_event(self, event: Event) -> None:
        task = event.task
        assert task is not None
        tid = task.task_id
        state = _STATES.get(event.kind)
        if event.kind is EventKind.TASK_STARTED:  # what a crashed attempt is recorded with
            self.changes.append((event.run_id, tid, state, event.time, json.dumps(
                [task.task_family, describe(task), _params(task)])))
        elif state is not None:
            self.changes.append((event.run_id, tid, state, event.time, None))
        if event.kind is EventKind.TASK_STARTED:
            self.started[tid] = event.time
            self.tries[tid] = self.tries.get(tid, 0) + 1
            if event.reason is not None:  # why it runs again (stale outputs)
                self.why[tid] = event.reason
            return
        status = _ENDS.get(event.kind)
        if status is None:
            return
        self.ended.add(status)
        started = self.started.pop(tid, None)
        usage = event.usage or {}
        err = event.error
        message = None if err is None else redact(shown(err), task)
        self.attempts.append((
            event.run_id, tid, task.task_family, describe(task), _params(task),
            self.tries.get(tid), status, started, event.time,
            None if started is None else event.time - started,
            usage.get("cpu_time"), usage.get("peak_memory"),
            None if err is None else redact(type(err).__name__, task), message,
            None if event.traceback is None else redact(event.traceback, task),
            event.reason or self.why.get(tid),
            _outputs(task) if status == "completed" else None,
        ))

    def _flush(self) -> None:
        with _writing:
            with self.buffer_lock:
                if self.broken or not (self.pending or self.attempts or self.changes):
                    return
                statements = [
                    *self.pending,
                    ("INSERT INTO attempts (run_id, task_id, family, task, params, attempt, "
                     "status, started, finished, duration, cpu_time, peak_memory, "
                     "error_type, error_message, traceback, reason, outputs) VALUES "
                     "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self.attempts),
                    ("INSERT INTO changes (run_id, task_id, state, time, task) "
                     "VALUES (?, ?, ?, ?, ?)", self.changes)]
                self.pending, self.attempts, self.changes = [], [], []
                self.last_flush = time.monotonic()
            try:
                with _connect(self.path, create=True) as conn:
                    if not self.settled:
                        self.settled = True
                        with contextlib.suppress(Exception):  # best effort, never fatal
                            _settle(conn)
                    _write(conn, statements)
            except (sqlite3.Error, OSError, HistoryError) as exc:
                self.broken = True
                key = str(self.path)
                if key not in HistorySink._warned:
                    HistorySink._warned.add(key)
                    warnings.warn(
                        f"pipeflow: the run history {key!r} cannot be written ({exc}); runs "
                        f"go on without it. Fix the file or its folder, or turn the history "
                        f"off with pipeflow.settings.history = False.", RuntimeWarning,
                        stacklevel=2)


# -- runs whose process died -------------------------------------------------------------------

_HOST = socket.gethostname()
_me: tuple[int, str] | None = None  # (pid, owner JSON) of this process


def _pid_space() -> str | None:
    """This process's PID namespace (Linux): containers sharing a host name differ here."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _owner() -> str:
    """Who owns a run started in this process: host, PID namespace, pid, start time (JSON)."""
    global _me
    pid = os.getpid()
    if _me is None or _me[0] != pid:  # once per process (a fork is another process)
        import psutil

        since = psutil.Process(pid).create_time()
        _me = (pid, json.dumps({"host": _HOST, "ns": _pid_space(), "pid": pid,
                                "since": since}))
    return _me[1]


def _gone(owner: str | None) -> bool:
    """Whether the process that owned a run has ended (False when it cannot be told).

    Only a process of this host and PID namespace can be checked; a pid now used by
    another process (its start time differs) counts as gone.
    """
    try:
        who = json.loads(owner or "")
        host, pid, since = who["host"], int(who["pid"]), float(who["since"])
    except (ValueError, KeyError, TypeError):
        return False  # recorded before owners were, or unreadable
    if host != _HOST or who.get("ns") != _pid_space():
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() == psutil.STATUS_ZOMBIE or abs(proc.create_time() - since) > 1.0
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # not ours to inspect
        return False


def _settle(conn: sqlite3.Connection) -> None:
    """Mark ``crashed`` the ``running`` runs whose owner is gone, and their tasks in progress.

    A task in progress (its last change ``in_progress``) gets a ``crashed`` attempt, with
    the family, description and parameters recorded when it started.
    """
    rows = conn.execute("SELECT run_id, owner FROM runs WHERE status = 'running'").fetchall()
    dead = [(run_id, owner) for run_id, owner in rows if _gone(owner)]
    if not dead:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for run_id, owner in dead:
            cur = conn.execute("UPDATE runs SET status = 'crashed' WHERE run_id = ? AND "
                               "status = 'running'", (run_id,))
            if cur.rowcount == 0:  # another process settled it meanwhile
                continue
            who = json.loads(owner)
            reason = (f"the process running it (pid {who['pid']} on {who['host']}) ended "
                      f"without finishing the run: it was killed or crashed")
            states = conn.execute("SELECT task_id, state, time, task FROM changes WHERE "
                                  "run_id = ? ORDER BY id", (run_id,)).fetchall()
            last: dict[str, tuple[str, float, str | None]] = {}
            tries: dict[str, int] = {}
            for tid, state, when, task in states:
                last[tid] = (state, when, task)
                tries[tid] = tries.get(tid, 0) + (state == "in_progress")
            crashed = []
            for tid, (state, when, task) in last.items():
                if state != "in_progress":
                    continue
                try:
                    family, name, params = json.loads(task or "")
                except (ValueError, TypeError):
                    family = name = params = None
                crashed.append((run_id, tid, family, name, params, tries[tid], "crashed",
                                when, reason))
            conn.executemany(
                "INSERT INTO attempts (run_id, task_id, family, task, params, attempt, "
                "status, started, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", crashed)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# -- queries ------------------------------------------------------------------------------------

def _pandas() -> Any:
    import pandas  # only when the history is queried: pipeflow imports without pandas

    return pandas


@contextlib.contextmanager
def _reader(path: pathlib.Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the history: a query never writes, nor creates a file.

    So the history of a read-only data dir (a copy, a read-only mount) can be queried.
    A file in WAL mode whose ``-shm`` file cannot be made there is read as it is on disk
    (``immutable``: the part of the last run still in its ``-wal`` file is not seen).
    """
    _regular(path)
    uri = path.absolute().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    try:
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc):
                raise
            conn.close()  # a WAL file with no -shm file, and none can be made (read-only)
            conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=BUSY_TIMEOUT)
        _own(conn, path)
        yield conn
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r for (r,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


#: the tables of a history (``_SCHEMA``)
_OWN_TABLES = frozenset({"runs", "attempts", "changes"})


def _own(conn: sqlite3.Connection, path: pathlib.Path) -> None:
    """Refuse a SQLite file that has tables but none of a history's: someone else's data.

    An empty file, or one without tables (a crash while it was made), is a history still
    to be made; pipeflow's tables are never added to another program's database.

    Raises:
        HistoryError: the file holds other tables and none of pipeflow's.
    """
    tables = {t for t in _tables(conn) if not t.startswith("sqlite_")}
    if tables and not tables & _OWN_TABLES:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise HistoryError(
            f"the run history {str(path)!r} is a SQLite database but not a pipeflow run "
            f"history: it holds other tables ({shown}) and none of pipeflow's, so pipeflow "
            f"neither reads nor writes it. Move it away (the next run starts a new "
            f"history there), keep the history elsewhere with pipeflow.settings.history = "
            f"'/path/to/history.db', or turn it off with pipeflow.settings.history = False.")


def _unreadable(path: pathlib.Path, exc: BaseException, doing: str = "read") -> HistoryError:
    """The error of a history file that cannot be used (damaged, not SQLite, a folder)."""
    reason = str(exc.__cause__ or exc)  # pandas wraps SQLite's error: the SQL is noise
    return HistoryError(
        f"the run history {str(path)!r} cannot be {doing} ({reason}): it is damaged, or not a "
        f"pipeflow run history. Move it away (the next run starts a new one), or turn the "
        f"history off with pipeflow.settings.history = False.")


def _query(sql: str, args: Sequence[Any], table: str) -> pd.DataFrame:
    """Run a query on ``table`` of the history (empty when there is none).

    Raises:
        HistoryError: the history file cannot be read (damaged, not SQLite, a folder).
    """
    pd = _pandas()
    path = history_path()
    try:
        if path is not None and os.path.lexists(path):
            _settle_if_writable(path)
            with _reader(path) as conn:
                if table in _tables(conn):  # a half-made file has none: nothing recorded
                    return pd.read_sql_query(sql, conn, params=list(args))
    except (sqlite3.Error, pd.errors.DatabaseError, OSError) as exc:
        raise _unreadable(path, exc) from exc  # type: ignore[arg-type]
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.executescript(_SCHEMA)
        return pd.read_sql_query(sql, conn, params=list(args))


def _settle_if_writable(path: pathlib.Path) -> None:
    """Mark crashed runs before a query, where the file can be written (best effort).

    A read-only, damaged or half-made history is left as it is: the query that follows
    reads it read-only and says what is wrong with it.
    """
    if not os.access(path, os.W_OK):
        return
    with contextlib.suppress(sqlite3.Error, OSError, HistoryError):
        with _connect(path, create=False) as conn:
            if "runs" in _tables(conn):
                _settle(conn)


def _times(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for col in columns:
        df[col] = _pandas().to_datetime(df[col], unit="s", utc=True)
    return df


def history(family: str | type | Sequence[Any] | None = None, status: str | None = None,
            run: str | None = None, last: int | None = None,
            tasks: Iterable[luigi.Task] | luigi.Task | None = None,
            full: bool = False) -> pd.DataFrame:
    """Task attempts recorded in the run history, newest first.

    Args:
        family: only these task families (a name, a task class, or a list of them).
        status: only attempts that ended so: ``'completed'``, ``'failed'``, ``'retried'``,
            ``'cancelled'``, ``'skipped'``, ``'up_to_date'`` or ``'crashed'`` (in progress
            when the process running it died; no ``finished`` time).
        run: only this run (its ``run_id``).
        last: only the ``last`` most recent attempts (None: all).
        tasks: only these task instances (a list of them, or one).
        full: every recorded column with its raw value, instead of the compact table.

    Returns:
        By default, a compact table for a person, one row per attempt: ``finished``
        (local time, time-zone aware: a plain string such as ``"2026-11-21 09:00"``
        compares in local time; empty for a crashed attempt), ``task`` (its family and
        significant parameters, ``Train(model='gbm')``; secret values are never shown),
        ``status``, ``attempt`` (1 for the first try), ``duration`` and ``cpu_time``
        (seconds, float), ``peak_memory`` (bytes, integer), ``error`` (its type and the
        first line of its message, ``KeyError: 'x'``), ``reason`` (why it was skipped, or
        why a stale task ran again), ``started`` (local time), ``family``, ``run_id``.
        The numbers stay numbers
        (sort, filter and sum them); the table *displays* them in human units (``2 min 05
        s``, ``312 MiB``), with empty cells empty. It is a ``pandas.DataFrame`` subclass
        (:class:`pipeflow.display.frame.HistoryFrame`) that only displays differently.

        With ``full=True``, a plain DataFrame of every recorded column: run_id, task_id,
        family, task, params (JSON, secrets as ``***``), attempt, status, started,
        finished (UTC), duration, cpu_time (seconds), peak_memory (bytes, float),
        error_type, error_message, traceback, reason, outputs (JSON); missing values are
        NaN/NaT/None.

    Raises:
        ParameterError: an argument of the wrong type (a task class among ``tasks``: the
            message suggests the instance ``Train()`` or ``family=Train``), ``last`` below
            0, an unknown status, ``full`` not a bool.

    Example:
        >>> pipeflow.history(status="failed", last=5)      # doctest: +SKIP
        >>> pipeflow.history().sort_values("duration").tail(3)  # the slowest  # doctest: +SKIP
        >>> pipeflow.history(full=True)["traceback"]        # doctest: +SKIP
    """
    where, args = [], []
    last = _count(last, "attempts")
    _check_full(full, "history")
    if status is not None and status not in ATTEMPT_STATUSES:
        raise ParameterError(
            f"status must be one of {', '.join(map(repr, ATTEMPT_STATUSES))}, not "
            f"{status!r}.{did_you_mean(str(status), ATTEMPT_STATUSES)}")
    if run is not None and not isinstance(run, str):
        raise ParameterError(f"run must be a run_id (a str, from pipeflow.runs()), not {run!r}.")
    if family is not None:
        names = [getattr(f, "task_family", getattr(f, "__name__", f))
                 for f in (family if isinstance(family, (list, tuple)) else [family])]
        if not all(isinstance(n, str) for n in names):
            raise ParameterError(
                f"family must be a task family name, a task class or a list of them, not "
                f"{family!r}.")
        where.append(f"family IN ({', '.join('?' * len(names))})")
        args += names
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if run is not None:
        where.append("run_id = ?")
        args.append(run)
    if tasks is not None:
        ids = [t.task_id for t in _task_list(tasks)]
        where.append(f"task_id IN ({', '.join('?' * len(ids))})")
        args += ids
    sql = "SELECT * FROM attempts" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY COALESCE(finished, started) DESC, id DESC"  # crashed: no finish
    if last is not None:
        sql += " LIMIT ?"
        args.append(last)
    df = _times(_query(sql, args, "attempts").drop(columns=["id"]), ["started", "finished"])
    return df if full else _compact_attempts(df)


def _task_list(tasks: Any) -> list[luigi.Task]:
    """``history(tasks=...)``: one task instance or an iterable of them, checked."""
    if isinstance(tasks, luigi.Task):
        return [tasks]
    items: list[Any] = ([tasks] if isinstance(tasks, (type, str, bytes))
                        or not isinstance(tasks, Iterable) else list(tasks))
    classes = [t for t in items if isinstance(t, type) and issubclass(t, luigi.Task)]
    if classes:
        name = classes[0].__name__
        raise ParameterError(
            f"history(tasks=...) takes task instances, and {name} is a task class: pass "
            f"{name}() (with its parameters, e.g. {name}(model='gbm')) for that task, or "
            f"history(family={name}) for every task of the class.")
    wrong = [t for t in items if not isinstance(t, luigi.Task)]
    if wrong:
        raise ParameterError(
            f"history(tasks=...) takes task instances (e.g. tasks=[Train()]), not "
            f"{wrong[0]!r}.")
    return items


def _one_task(task: Any, call: str) -> luigi.Task:
    """The task of ``last_error(task)``/``last_run(task)``, checked."""
    if isinstance(task, luigi.Task):
        return task
    if isinstance(task, type) and issubclass(task, luigi.Task):
        name = task.__name__
        raise ParameterError(
            f"{call}({name}): {name} is a task class; {call} takes one task instance: "
            f"pipeflow.{call}({name}()) (with its parameters, e.g. {name}(model='gbm')). For "
            f"every task of the class: pipeflow.history(family={name}).")
    raise ParameterError(
        f"{call}() takes one task instance (e.g. pipeflow.{call}(Train())), not {task!r}.")


def _compact_attempts(df: pd.DataFrame) -> pd.DataFrame:
    """The compact history (see :func:`history`) made from the full one."""
    from pipeflow.display.frame import HistoryFrame

    pd = _pandas()
    zone = local_zone()
    return HistoryFrame({
        "finished": df["finished"].dt.tz_convert(zone),
        "task": df["task"],
        "status": df["status"],
        "attempt": pd.to_numeric(df["attempt"]).astype("Int64"),
        "duration": pd.to_numeric(df["duration"]).astype("float64"),
        "cpu_time": pd.to_numeric(df["cpu_time"]).astype("float64"),
        "peak_memory": pd.to_numeric(df["peak_memory"]).round().astype("Int64"),
        "error": pd.Series([error_text(t, m) for t, m in zip(df["error_type"],
                                                              df["error_message"])],
                           index=df.index, dtype="str"),
        "reason": df["reason"],
        "started": df["started"].dt.tz_convert(zone),
        "family": df["family"],
        "run_id": df["run_id"],
    }, index=df.index)


def _count(last: Any, what: str) -> int | None:
    """``last`` checked; one past SQLite's largest integer means "all" (it has no more rows)."""
    return None if last is None else min(_SQLITE_MAX, whole_number(
        last, "last", 0, f": it is how many of the most recent {what} to show (None: all)."))


def _check_full(full: Any, query: str) -> None:
    """``full`` is True or False (a string such as ``"no"`` would read as True)."""
    if not isinstance(full, bool):
        raise ParameterError(
            f"{query}(full={full!r}): full is True (every recorded column, raw) or False "
            f"(the compact table), e.g. pipeflow.{query}(full=True).")


#: the largest integer SQLite stores (a LIMIT above it overflows)
_SQLITE_MAX = 2**63 - 1


def runs(last: int | None = None, full: bool = False) -> pd.DataFrame:
    """The recorded runs, newest first.

    Args:
        last: only the ``last`` most recent runs (None: all).
        full: every recorded column with its raw value, instead of the compact table.

    Returns:
        By default, a compact table for a person, one row per run: ``started`` (local
        time, time-zone aware), ``status``, ``tasks`` (the tasks it was asked for,
        ``Train(model='gbm'), Report()``), ``duration`` (seconds, float; shown as ``2 min
        05 s``), ``finished`` (local time), ``host``, ``user``, ``run_id``; a
        ``pandas.DataFrame`` subclass displayed like :func:`history`'s.

        With ``full=True``, a plain DataFrame: run_id, started, finished (UTC), status,
        host, user, pipeflow_version, roots (JSON), params (JSON), system. ``system`` is
        the machine snapshot taken when the run started, already parsed: the dict
        :func:`pipeflow.system_info` returns for ``'all'``, or None when it could not be
        read (and for runs recorded before pipeflow kept it).

        ``status`` is ``'running'``, ``'success'``, ``'failed'``, ``'cancelled'``, or
        ``'crashed'``: the process running it on this host ended without finishing it
        (killed, out of memory); ``finished`` is then empty.

    Raises:
        ParameterError: ``last`` is not a whole number of at least 0, or ``full`` not a
            bool.

    Example:
        >>> pipeflow.runs(last=5)                            # doctest: +SKIP
        >>> pipeflow.runs(last=1, full=True).iloc[0]["system"]["memory"]["available"]
        ... # doctest: +SKIP
        22589730816
    """
    last = _count(last, "runs")
    _check_full(full, "runs")
    sql = "SELECT * FROM runs ORDER BY started DESC" + (" LIMIT ?" if last is not None else "")
    df = _times(_query(sql, [] if last is None else [last], "runs"), ["started", "finished"])
    if "system" not in df.columns:  # a file from before the column, not written to since
        df["system"] = None
    df = df.drop(columns=["owner"], errors="ignore")  # kept to tell crashed runs
    df["system"] = [_snapshot(s) for s in df["system"]]
    return df if full else _compact_runs(df)


def _compact_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The compact table of runs (see :func:`runs`) made from the full one."""
    from pipeflow.display.frame import HistoryFrame

    zone = local_zone()
    return HistoryFrame({
        "started": df["started"].dt.tz_convert(zone),
        "status": df["status"],
        "tasks": _pandas().Series([_roots_text(r) for r in df["roots"]], index=df.index,
                                  dtype="str"),
        "duration": (df["finished"] - df["started"]).dt.total_seconds().astype("float64"),
        "finished": df["finished"].dt.tz_convert(zone),
        "host": df["host"],
        "user": df["user"],
        "run_id": df["run_id"],
    }, index=df.index)


def _roots_text(roots: Any) -> str | None:
    """A run's ``roots`` JSON as one line: ``Train(model='gbm'), Report()``."""
    try:
        names = json.loads(roots)
    except (TypeError, ValueError):
        return None if roots is None else str(roots)
    return ", ".join(map(str, names)) if isinstance(names, list) else str(names)


def _snapshot(text: Any) -> Any:
    """A stored machine snapshot, parsed (None: none, or not JSON)."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Attempt(Mapping[str, Any]):
    """One recorded attempt of a task: what :func:`last_run` and :func:`last_error` return.

    It reads as text in a terminal (``print(err)``, or the echo of a cell) and as HTML in a
    notebook: the task, how it ended and when (local time), the attempt number, duration,
    CPU time and peak memory in human units, the run, and for an attempt that raised its
    traceback as real lines. Its fields are the columns of ``pipeflow.history(full=True)``,
    as attributes (``err.traceback``) or keys (``err["traceback"]``, ``dict(err)``), with
    None for an empty value.

    Attributes:
        run_id: the run it was part of (see :func:`runs`).
        task_id: the task's id.
        family: the task's family (its class name).
        task: the task with its significant parameters, ``Train(model='gbm')``.
        params: every parameter as JSON, secret values as ``***``.
        attempt: 1 for the first try, 2 for the first retry...
        status: how it ended: ``completed``, ``failed``, ``retried``, ``cancelled``,
            ``skipped``, ``up_to_date`` or ``crashed``.
        started: when it started (a UTC ``pandas.Timestamp``).
        finished: when it ended (UTC; None for a crashed attempt).
        duration: seconds from start to end.
        cpu_time: CPU seconds it used.
        peak_memory: the peak memory of the process that ran it, in bytes.
        error_type: the type of the exception it raised.
        error_message: the exception's message (secret values as ``***``).
        traceback: the exception's traceback, as text (secret values as ``***``).
        reason: why it was skipped, or why a stale task ran again.
        outputs: for a completed task, its committed files with size and hash (JSON).
    """

    run_id: str
    task_id: str
    family: str | None = None
    task: str | None = None
    params: str | None = None
    attempt: int | None = None
    status: str | None = None
    started: Any = None
    finished: Any = None
    duration: float | None = None
    cpu_time: float | None = None
    peak_memory: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    reason: str | None = None
    outputs: str | None = None

    @classmethod
    def _of(cls, row: Mapping[str, Any]) -> Attempt:
        """The attempt of a row of ``history(full=True)``; empty cells become None."""
        values: dict[str, Any] = {
            f.name: (None if missing(row.get(f.name)) else row.get(f.name))
            for f in dataclasses.fields(cls)}
        if values["attempt"] is not None:
            values["attempt"] = int(values["attempt"])
        return cls(**values)

    def __getitem__(self, key: str) -> Any:
        if key not in _ATTEMPT_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_ATTEMPT_FIELDS)

    def __len__(self) -> int:
        return len(_ATTEMPT_FIELDS)

    def __repr__(self) -> str:
        """The attempt as text: what, when, how long, and its traceback as lines."""
        return attempt_text(self)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        """The attempt as HTML, for a notebook."""
        return attempt_html(self)


_ATTEMPT_FIELDS = tuple(f.name for f in dataclasses.fields(Attempt))


def last_run(task: luigi.Task) -> Attempt | None:
    """The most recent recorded attempt of ``task``, or None.

    Returns:
        An :class:`Attempt`: shown as readable text (or HTML in a notebook), its fields
        reachable as attributes or keys (``last_run(t)["status"]``).

    Raises:
        ParameterError: ``task`` is not a task instance (a task class: the message
            suggests ``Train()``).
    """
    df = history(tasks=[_one_task(task, "last_run")], last=1, full=True)
    return None if df.empty else Attempt._of(df.iloc[0].to_dict())


def last_error(task: luigi.Task) -> Attempt | None:
    """The most recent attempt of ``task`` that raised (failed, or retried), or None.

    Returns:
        An :class:`Attempt`: shown as the task, when it failed and its traceback as real
        lines (HTML in a notebook); ``err["traceback"]``, ``err.error_message``... give
        the raw values.

    Raises:
        ParameterError: ``task`` is not a task instance (a task class: the message
            suggests ``Train()``).

    Example:
        >>> pipeflow.last_error(Train(model="gbm"))            # doctest: +SKIP
        Train(model='gbm') failed at 2026-11-21 20:14:03 (attempt 1)
        took 12 ms, CPU time 10 ms, peak memory 112 MiB, run 3f2a...
        <BLANKLINE>
        Traceback (most recent call last):
          ...
        KeyError: 'no such column'
    """
    df = history(tasks=[_one_task(task, "last_error")], full=True)
    df = df[df["error_type"].notna()]
    return None if df.empty else Attempt._of(df.iloc[0].to_dict())


def last_failures(task_ids: Sequence[str]) -> dict[str, str]:
    """Tasks whose most recent recorded attempt failed: task_id -> ``'Error: message'``.

    Retried attempts do not count: only how an attempt finally ended.
    """
    path = history_path()
    out: dict[str, str] = {}
    if path is None or not path.exists() or not task_ids:
        return out
    ids = list(task_ids)
    with contextlib.suppress(sqlite3.Error, OSError, HistoryError), _reader(path) as conn:
        for start in range(0, len(ids), 500):  # SQLite's limit on bound values
            chunk = ids[start:start + 500]
            # SQLite: the bare columns come from the row holding MAX(finished)
            rows = conn.execute(
                f"SELECT task_id, status, error_type, error_message, MAX(finished) "
                f"FROM attempts WHERE status != 'retried' AND task_id IN "
                f"({', '.join('?' * len(chunk))}) GROUP BY task_id", chunk)
            for tid, status, etype, message, _ in rows:
                if status == "failed":
                    first = (message or "").strip().split("\n")[0]
                    out[tid] = f"{etype}: {first}" if etype else "failed"
    return out


def prune_history(keep: int) -> int:
    """Keep only the ``keep`` most recent runs, and every run still going.

    A run still going (status ``running`` in :func:`runs`) is never removed, however old:
    its rows are still being written. A run whose process on this host is gone is marked
    ``crashed`` first, and pruned as a finished run.

    Args:
        keep: how many of the most recent runs to keep (0: remove every finished run).

    Returns:
        How many runs were removed.

    Raises:
        ParameterError: ``keep`` is not a non-negative whole number.
        HistoryError: the history file is damaged, not a pipeflow history, or read-only.

    Example:
        >>> pipeflow.prune_history(keep=100)  # doctest: +SKIP
        3
    """
    if isinstance(keep, bool) or not isinstance(keep, numbers.Integral) or keep < 0:
        raise ParameterError(
            f"prune_history(keep={keep!r}): keep is how many of the most recent runs to keep, "
            f"a whole number >= 0 (0 removes every finished run), e.g. "
            f"pipeflow.prune_history(keep=100).")
    path = history_path()
    if path is None or not os.path.lexists(path):
        return 0
    try:
        with _connect(path, create=True) as conn:
            _settle(conn)  # a run whose process is gone is crashed, not still going
            # the newest first; a run still going stays, whatever its place
            old = [r for (r, status) in conn.execute(
                "SELECT run_id, status FROM runs ORDER BY started DESC LIMIT -1 OFFSET ?",
                (min(int(keep), 2**63 - 1),)) if status != "running"]  # SQLite's widest
            _write(conn, [(f"DELETE FROM {table} WHERE run_id = ?", [(r,) for r in old])
                          for table in ("changes", "attempts", "runs")])
    except (sqlite3.Error, OSError) as exc:
        if _read_only(path):
            raise HistoryError(
                f"the run history {str(path)!r} cannot be pruned: it is read-only (a "
                f"read-only mount, or no write permission on the file or its folder "
                f"{str(path.parent)!r}; SQLite: {exc}). Nothing was removed. Prune it where "
                f"it can be written: make the file and its folder writable, or copy the "
                f"data dir and prune the copy.") from exc
        raise _unreadable(path, exc, "pruned") from exc
    return len(old)


def _read_only(path: pathlib.Path) -> bool:
    """Whether the history file or its folder (SQLite's side files) is read-only to us.

    By permissions, or a read-only mount (which binds root too).
    """
    return not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))


__all__ = ["Attempt", "HistorySink", "history", "history_path", "last_error", "last_failures",
           "last_run", "prune_history", "runs"]
