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
in short ``BEGIN IMMEDIATE`` transactions (at most every half second, and when the run
ends), with a busy timeout, so parallel workers and several processes on one machine share
the file without "database is locked" errors. A history that cannot be written never fails
a run: pipeflow warns once and goes on.

Query it with :func:`history` and :func:`runs` (pandas DataFrames), or ``flow.history()``.

Files written before the ``system`` column existed gain it (empty for their old runs) the
first time a run is recorded in them; until then :func:`runs` shows it as None.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.metadata
import json
import os
import pathlib
import socket
import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import luigi

from pipeflow import settings
from pipeflow.contract import adapt
from pipeflow.errors import ParameterError, did_you_mean
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
    user TEXT, pipeflow_version TEXT, roots TEXT, params TEXT, system TEXT);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, task_id TEXT NOT NULL,
    family TEXT, task TEXT, params TEXT, attempt INTEGER, status TEXT, started REAL,
    finished REAL, duration REAL, cpu_time REAL, peak_memory REAL, error_type TEXT,
    error_message TEXT, traceback TEXT, reason TEXT, outputs TEXT);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, task_id TEXT NOT NULL,
    state TEXT, time REAL);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts (run_id);
CREATE INDEX IF NOT EXISTS attempts_task ON attempts (task_id, finished);
CREATE INDEX IF NOT EXISTS changes_run ON changes (run_id);
"""

_ENDS = {EventKind.TASK_COMPLETED: "completed", EventKind.TASK_FAILED: "failed",
         EventKind.TASK_RETRYING: "retried", EventKind.TASK_CANCELLED: "cancelled",
         EventKind.TASK_SKIPPED: "skipped", EventKind.TASK_UP_TO_DATE: "up_to_date"}
#: how an attempt can end: the ``status`` column of :func:`history`
ATTEMPT_STATUSES = tuple(_ENDS.values())
_STATES = {**_ENDS, EventKind.TASK_STARTED: "in_progress", EventKind.TASK_WAITING: "waiting",
           EventKind.TASK_RETRYING: "queued", EventKind.TASK_ADDED: "queued"}


def history_path() -> pathlib.Path | None:
    """Where the history is kept (None: ``settings.history`` is off)."""
    where = settings.history
    if where is False or where is None:
        return None
    if where is True:
        return settings.dirpath / ".pipeflow" / "history.db"
    return pathlib.Path(where)


@contextlib.contextmanager
def _connect(path: pathlib.Path, create: bool) -> Iterator[sqlite3.Connection]:
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # private from the start: SQLite gives its -wal/-shm files the same permissions
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if create:
            conn.executescript(_SCHEMA)
            _upgrade(conn)
        yield conn
    finally:
        conn.close()


def _upgrade(conn: sqlite3.Connection) -> None:
    """Add the columns that files made by earlier versions lack (``runs.system``)."""
    if "system" in _columns(conn, "runs"):
        return
    conn.execute("BEGIN IMMEDIATE")  # another process may be upgrading the same file
    try:
        if "system" not in _columns(conn, "runs"):
            conn.execute("ALTER TABLE runs ADD COLUMN system TEXT")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


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


class HistorySink:
    """An event sink writing one run's history (see the module docstring).

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

    def __call__(self, event: Event) -> None:
        """Record an event; write the buffered rows now and then."""
        if self.broken:
            return
        if event.kind is EventKind.RUN_STARTED:
            self._run_row(event, "running")
        elif event.kind is EventKind.RUN_FINISHED:
            self.pending.append(("UPDATE runs SET finished = ?, status = ? WHERE run_id = ?",
                                 [(event.time, self._status(), event.run_id)]))
            self._flush()
            return
        elif event.task is not None:
            self._task_event(event)
        if time.monotonic() - self.last_flush >= FLUSH_EVERY:
            self._flush()

    # -- internals ------------------------------------------------------------------------
    def _status(self) -> str:
        if "failed" in self.ended or "skipped" in self.ended:
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
            "pipeflow_version, roots, params, system) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(event.run_id, event.time, None, status, socket.gethostname(), user,
              version, roots, params, _system())]))

    def _task_event(self, event: Event) -> None:
        task = event.task
        assert task is not None
        tid = task.task_id
        state = _STATES.get(event.kind)
        if state is not None:
            self.changes.append((event.run_id, tid, state, event.time))
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
        message = None if err is None else redact(str(err), task)
        self.attempts.append((
            event.run_id, tid, task.task_family, describe(task), _params(task),
            self.tries.get(tid), status, started, event.time,
            None if started is None else event.time - started,
            usage.get("cpu_time"), usage.get("peak_memory"),
            None if err is None else type(err).__name__, message,
            None if event.traceback is None else redact(event.traceback, task),
            event.reason or self.why.get(tid),
            _outputs(task) if status == "completed" else None,
        ))

    def _flush(self) -> None:
        statements = [*self.pending,
                      ("INSERT INTO attempts (run_id, task_id, family, task, params, attempt, "
                       "status, started, finished, duration, cpu_time, peak_memory, "
                       "error_type, error_message, traceback, reason, outputs) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self.attempts),
                      ("INSERT INTO changes (run_id, task_id, state, time) VALUES (?, ?, ?, ?)",
                       self.changes)]
        self.pending, self.attempts, self.changes = [], [], []
        self.last_flush = time.monotonic()
        try:
            with _connect(self.path, create=True) as conn:
                _write(conn, statements)
        except (sqlite3.Error, OSError) as exc:
            self.broken = True
            key = str(self.path)
            if key not in HistorySink._warned:
                HistorySink._warned.add(key)
                warnings.warn(
                    f"pipeflow: the run history {key!r} cannot be written ({exc}); runs go "
                    f"on without it. Fix the file or its folder, or turn the history off "
                    f"with pipeflow.settings.history = False.", RuntimeWarning, stacklevel=2)


# -- queries ------------------------------------------------------------------------------------

def _pandas() -> Any:
    import pandas  # only when the history is queried: pipeflow imports without pandas

    return pandas


def _query(sql: str, args: Sequence[Any]) -> pd.DataFrame:
    path = history_path()
    if path is None or not path.exists():
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            conn.executescript(_SCHEMA)
            return _pandas().read_sql_query(sql, conn, params=list(args))
    with _connect(path, create=False) as conn:
        return _pandas().read_sql_query(sql, conn, params=list(args))


def _times(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for col in columns:
        df[col] = _pandas().to_datetime(df[col], unit="s", utc=True)
    return df


def history(family: str | type | Sequence[Any] | None = None, status: str | None = None,
            run: str | None = None, last: int | None = None,
            tasks: Iterable[luigi.Task] | None = None) -> pd.DataFrame:
    """Task attempts recorded in the run history, newest first.

    Args:
        family: only these task families (a name, a task class, or a list of them).
        status: only attempts that ended so: ``'completed'``, ``'failed'``, ``'retried'``,
            ``'cancelled'``, ``'skipped'`` or ``'up_to_date'``.
        run: only this run (its ``run_id``).
        last: only the ``last`` most recent attempts (None: all).
        tasks: only these task instances.

    Returns:
        One row per attempt: run_id, task_id, family, task, params, attempt, status,
        started, finished, duration, cpu_time, peak_memory, error_type, error_message,
        traceback, reason, outputs.

    Raises:
        ParameterError: an argument of the wrong type, ``last`` below 0, an unknown status.

    Example:
        >>> pipeflow.history(status="failed", last=5)      # doctest: +SKIP
    """
    where, args = [], []
    last = _count(last, "attempts")
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
        tasks = list(tasks)
        if not all(isinstance(t, luigi.Task) for t in tasks):
            raise ParameterError(f"tasks must be task instances, not {tasks!r}.")
        ids = [t.task_id for t in tasks]
        where.append(f"task_id IN ({', '.join('?' * len(ids))})")
        args += ids
    sql = "SELECT * FROM attempts" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY finished DESC, id DESC"
    if last is not None:
        sql += " LIMIT ?"
        args.append(last)
    df = _query(sql, args).drop(columns=["id"])
    return _times(df, ["started", "finished"])


def _count(last: Any, what: str) -> int | None:
    return None if last is None else whole_number(
        last, "last", 0, f": it is how many of the most recent {what} to show (None: all).")


def runs(last: int | None = None) -> pd.DataFrame:
    """The recorded runs, newest first.

    Args:
        last: only the ``last`` most recent runs (None: all).

    Returns:
        One row per run: run_id, started, finished, status, host, user, pipeflow_version,
        roots (JSON), params (JSON), system. ``system`` is the machine snapshot taken when
        the run started, already parsed: the dict :func:`pipeflow.system_info` returns
        for ``'all'``, or None when it could not be read (and for runs recorded before
        pipeflow kept it).

    Raises:
        ParameterError: ``last`` is not a whole number of at least 0.

    Example:
        >>> pipeflow.runs(last=1).iloc[0]["system"]["memory"]["available"]  # doctest: +SKIP
        22589730816
    """
    last = _count(last, "runs")
    sql = "SELECT * FROM runs ORDER BY started DESC" + (" LIMIT ?" if last is not None else "")
    df = _times(_query(sql, [] if last is None else [last]), ["started", "finished"])
    if "system" not in df.columns:  # a file from before the column, not written to since
        df["system"] = None
    df["system"] = [None if _pandas().isna(s) else json.loads(s) for s in df["system"]]
    return df


def last_run(task: luigi.Task) -> dict[str, Any] | None:
    """The most recent recorded attempt of ``task`` (a dict), or None."""
    df = history(tasks=[task], last=1)
    return None if df.empty else df.iloc[0].to_dict()


def last_error(task: luigi.Task) -> dict[str, Any] | None:
    """The most recent attempt of ``task`` that raised (failed, or retried), or None."""
    df = history(tasks=[task])
    df = df[df["error_type"].notna()]
    return None if df.empty else df.iloc[0].to_dict()


def last_failures(task_ids: Sequence[str]) -> dict[str, str]:
    """Tasks whose most recent recorded attempt failed: task_id -> ``'Error: message'``.

    Retried attempts do not count: only how an attempt finally ended.
    """
    path = history_path()
    out: dict[str, str] = {}
    if path is None or not path.exists() or not task_ids:
        return out
    ids = list(task_ids)
    with contextlib.suppress(sqlite3.Error, OSError), _connect(path, create=False) as conn:
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
    """Keep only the ``keep`` most recent runs; return how many runs were removed."""
    path = history_path()
    if path is None or not path.exists():
        return 0
    with _connect(path, create=True) as conn:
        old = [r for (r,) in conn.execute(
            "SELECT run_id FROM runs ORDER BY started DESC LIMIT -1 OFFSET ?", (int(keep),))]
        _write(conn, [(f"DELETE FROM {table} WHERE run_id = ?", [(r,) for r in old])
                      for table in ("changes", "attempts", "runs")])
    return len(old)


__all__ = ["HistorySink", "history", "history_path", "last_error", "last_failures",
           "last_run", "prune_history", "runs"]
