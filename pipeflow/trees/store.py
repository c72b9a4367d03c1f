"""The task store: every task of every tree, in one SQLite file, shared by processes.

* Every change is committed at once (WAL journal; several processes may read and write).
* A task is run by one process at a time: :meth:`TaskStore.claim` moves it from
  ``pending`` to ``in_progress`` atomically and records the claiming run (its *owner*:
  host, process id and start time, run token). A task left ``in_progress`` by a process
  that has died is recognised (:meth:`TaskStore.settle`) and marked ``failed`` with the
  reason, so it is never reported as running and a re-run executes it again.
* A result is kept as JSON in the row, or, when it is not JSON (a DataFrame) or larger
  than :data:`INLINE_LIMIT`, pickled to a file beside the store (written to a temp file,
  fsynced and renamed into place before the row that names it is committed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pathlib
import pickle
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import psutil

from pipeflow import settings, storage
from pipeflow.errors import ParameterError, TaskNotFoundError, TaskStoreError, did_you_mean
from pipeflow.publishing import write_atomic
from pipeflow.trees import model as m

#: results whose JSON text is longer than this (characters) are kept in a file
INLINE_LIMIT = 1 << 20
#: the file name of the default store, in the data dir's ``.pipeflow`` folder
DEFAULT_NAME = "tasks.db"
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    user_id TEXT,
    parent_id TEXT,
    priority INTEGER NOT NULL DEFAULT 2,
    dependencies TEXT NOT NULL DEFAULT '[]',
    inputs TEXT NOT NULL DEFAULT '{}',
    params TEXT,
    schemas TEXT,
    result TEXT,
    result_file TEXT,
    error TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    progress REAL NOT NULL DEFAULT 0,
    created_at TEXT,
    started_at TEXT,
    updated_at TEXT,
    completed_at TEXT,
    has_children INTEGER NOT NULL DEFAULT 0,
    task_tree_id TEXT,
    original_task_id TEXT,
    origin_type TEXT NOT NULL DEFAULT 'create',
    has_references INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_parent ON tasks(parent_id);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

_COLUMNS = ("id", "name", "user_id", "parent_id", "priority", "dependencies", "inputs",
            "params", "schemas", "result", "result_file", "error", "status", "progress",
            "created_at", "started_at", "updated_at", "completed_at", "has_children",
            "task_tree_id", "original_task_id", "origin_type", "has_references", "owner",
            "version")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM tasks"

_HOST = socket.gethostname()
#: what to check when SQLite refuses a read or a write
_HINT = ("Check that the file is a pipeflow task store that nothing else overwrote, that its "
         "folder is writable and the disk not full; if it is damaged, move it away and "
         "create_session() makes a new one.")


def now() -> dt.datetime:
    """The current time, UTC."""
    return dt.datetime.now(dt.timezone.utc)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat()
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value).isoformat()
    raise ParameterError(f"a timestamp must be a datetime or ISO text, not {value!r}.")


def _time(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


class Owner:
    """Who claimed a task: this process (host, pid, start time) and a run's token."""

    _me: tuple[int, str] | None = None  # (pid, "host|pid|start|") of this process

    @staticmethod
    def _prefix() -> str:
        """``host|pid|start|`` of this process (looked up once per process)."""
        me = Owner._me
        pid = os.getpid()
        if me is None or me[0] != pid:  # first use, or a forked child
            proc = psutil.Process(pid)
            me = Owner._me = (pid, f"{_HOST}|{pid}|{proc.create_time():.3f}|")
        return me[1]

    @staticmethod
    def make(token: str) -> str:
        """The owner text of a claim by this process for the run ``token``."""
        return Owner._prefix() + token

    @staticmethod
    def alive(owner: str | None) -> bool:
        """Whether the process named in ``owner`` still runs (other hosts: assumed so)."""
        if not owner:
            return False
        if owner.startswith(Owner._prefix()):  # this process: alive, no need to ask psutil
            return True
        try:
            host, pid, started, _ = owner.split("|", 3)
        except ValueError:
            return False
        if host != _HOST:
            return True
        try:
            proc = psutil.Process(int(pid))
            # a killed process its parent has not reaped yet (a zombie) is dead too
            return (f"{proc.create_time():.3f}" == started
                    and proc.status() != psutil.STATUS_ZOMBIE)
        except (psutil.Error, ValueError):
            return False

    @staticmethod
    def pid(owner: str | None) -> str:
        """The process id named in ``owner`` (for messages)."""
        parts = (owner or "").split("|")
        return parts[1] if len(parts) > 1 else "?"


class TaskStore:
    """An SQLite file holding tasks; one connection per thread and process.

    Args:
        path: the database file (created with its folder when missing).

    Example:
        >>> store = TaskStore("data/.pipeflow/tasks.db")  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path).expanduser().resolve()  # symlinks: the real file
        if self.path.is_dir():
            raise ParameterError(
                f"the task store {str(self.path)!r} is a folder; give a file path such as "
                f"{str(self.path / DEFAULT_NAME)!r}.")
        self.results_dir = self.path.with_name(self.path.name + ".results")
        self._pool: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._pool_pid = os.getpid()
        #: the store file's identity when this process first opened it (a deleted or
        #: replaced file is refused, not written to), and whether it was replaced
        self._file_id: tuple[int, int] | None = None
        self._replaced = False
        self._generation = 0
        with self._tx() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                       (str(_SCHEMA_VERSION),))

    def __repr__(self) -> str:
        return f"TaskStore({str(self.path)!r})"

    # -- connections -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if self._replaced:  # the file was deleted: a new store
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
        except (sqlite3.Error, OSError) as exc:
            raise TaskStoreError(
                f"cannot open the task store {str(self.path)!r}: {exc}. Check that the "
                f"folder is writable and the file is an SQLite database (or pass another "
                f"path to create_session()).") from exc
        return db

    @property
    def generation(self) -> int:
        """How often this process found the store file deleted or replaced (see ``_db``)."""
        return self._generation

    def replaced_error(self) -> TaskStoreError:
        """The error for a store file deleted or replaced while this process used it."""
        return TaskStoreError(
            f"the task store {str(self.path)!r} was deleted or replaced while this "
            f"process used it; what was to be written now is not (it would have gone to "
            f"the deleted file and been lost). Do not delete the store while trees run. "
            f"The next call uses the file now at that path (a new, empty store if none).")

    def _inode(self) -> tuple[int, int] | None:
        """The store file's identity (device, inode); None when it is gone."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection of this process for one read or transaction, then given back.

        Connections are pooled, not kept per thread: a tree's attempts each run on a new
        thread, and opening a connection per attempt cost more than the attempt's own
        reads and writes. One is used by one thread at a time; a forked process opens its
        own (its parent's are never used).
        """
        pid = os.getpid()
        if self._pool_pid != pid:  # new, or forked: the parent's connections stay unused
            self._pool_lock = threading.Lock()
            self._pool = []
            self._pool_pid = pid
        if self._file_id is not None and self._inode() != self._file_id:
            # SQLite would go on using the deleted file, and every later change be lost
            with self._pool_lock:
                stale, self._pool = self._pool, []
                self._generation += 1
            for conn in stale:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._file_id, self._replaced = None, True
            raise self.replaced_error()
        with self._pool_lock:
            db = self._pool.pop() if self._pool else None
            generation = self._generation
        if db is None:
            db = self._connect()
            if self._file_id is None:
                self._file_id = self._inode()
        try:
            yield db
        finally:
            if (db.in_transaction or self._pool_pid != pid  # a failed rollback: not reused
                    or generation != self._generation):  # a connection to a deleted file
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            else:
                with self._pool_lock:
                    self._pool.append(db)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (taken at once, so concurrent writers queue, not fail)."""
        with self._db() as db:
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise TaskStoreError(
                    f"the task store {str(self.path)!r} refused a change: {exc}. {_HINT}") from exc

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._db() as db:
                return db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise TaskStoreError(
                f"cannot read the task store {str(self.path)!r}: {exc}. {_HINT}") from exc

    # -- rows <-> tasks --------------------------------------------------------------------------
    def _model(self, row: tuple[Any, ...]) -> m.TaskModel:
        r = dict(zip(_COLUMNS, row))
        fields: dict[str, Any] = {}
        for name in m.FIELDS:
            value = r.get(name)
            if name in m.JSON_FIELDS:
                value = None if value is None else json.loads(value)
            elif name in m.TIME_FIELDS:
                value = _time(value)
            elif name in ("has_children", "has_references"):
                value = bool(value)
            fields[name] = value
        loader = None
        if r["result_file"]:
            path = self.results_dir / r["result_file"]
            loader = lambda: _load_result(path)  # noqa: E731 - read when asked for
        elif (r["origin_type"] == "link" and r["result"] is None
              and r["original_task_id"]):
            loader = self.link_result_loader(r["id"], r["original_task_id"])
        return m.TaskModel(fields, loader)

    def link_result_loader(self, link_id: str, original_id: str) -> Callable[[], Any]:
        """What reads a link's result: its original's (a link holds no result of its own)."""
        def load() -> Any:
            original = self.get(original_id)
            if original is None:
                raise TaskStoreError(
                    f"task {link_id!r} is a link to task {original_id!r}, which is no longer "
                    f"in the task store {str(self.path)!r}, so it has no result. Delete the "
                    f"link, or copy a tree that still has the original.")
            return original.result
        return load

    def get(self, task_id: str) -> m.TaskModel | None:
        """The task ``task_id`` (None if there is none); a dead claim is settled first."""
        rows = self._read(f"{_SELECT} WHERE id = ?", (task_id,))
        if not rows:
            return None
        if _stuck(rows) and self.settle([task_id]):
            rows = self._read(f"{_SELECT} WHERE id = ?", (task_id,))
        return self._model(rows[0])

    def need(self, task_id: str, what: str = "task") -> m.TaskModel:
        """The task ``task_id``, or :class:`TaskNotFoundError`."""
        task = self.get(task_id)
        if task is None:
            raise TaskNotFoundError(
                f"no {what} with id {task_id!r} in the task store {str(self.path)!r}."
                f"{did_you_mean(task_id, self.ids())}", task_id)
        return task

    def many(self, ids: Iterable[str]) -> dict[str, m.TaskModel]:
        """The tasks among ``ids`` that exist, by id (dead claims settled)."""
        ids = list(dict.fromkeys(ids))
        out: dict[str, m.TaskModel] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows = self._read(f"{_SELECT} WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            stuck = _stuck(rows)
            if stuck and self.settle(stuck):
                rows = self._read(
                    f"{_SELECT} WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            out.update((r[0], self._model(r)) for r in rows)
        return out

    def existing(self, ids: Iterable[str]) -> set[str]:
        """The ids among ``ids`` that name a stored task (a light read: no rows built)."""
        ids = list(dict.fromkeys(ids))
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update(r[0] for r in self._read(
                f"SELECT id FROM tasks WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def dependencies_of(self, ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """The stored dependencies of the tasks among ``ids`` that exist, by id."""
        ids = list(dict.fromkeys(ids))
        out: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            out.update((i, json.loads(d)) for i, d in self._read(
                f"SELECT id, dependencies FROM tasks WHERE id IN "
                f"({','.join('?' * len(chunk))})", chunk))
        return out

    def ids(self) -> list[str]:
        """Every task id (for suggestions)."""
        return [r[0] for r in self._read("SELECT id FROM tasks ORDER BY seq")]

    def children(self, parent_ids: Sequence[str]) -> list[m.TaskModel]:
        """The tasks whose ``parent_id`` is one of ``parent_ids``, in creation order."""
        out: list[m.TaskModel] = []
        for start in range(0, len(parent_ids), 500):
            chunk = list(parent_ids[start:start + 500])
            sql = f"{_SELECT} WHERE parent_id IN ({','.join('?' * len(chunk))}) ORDER BY seq"
            rows = self._read(sql, chunk)
            stuck = [r[0] for r in rows if r[_COLUMNS.index("status")] == m.IN_PROGRESS]
            if stuck and self.settle(stuck):  # dead claims are never shown as running
                rows = self._read(sql, chunk)
            out += [self._model(r) for r in rows]
        return out

    def query(self, where: Mapping[str, Any], limit: int | None = None,
              offset: int = 0, order: str = "seq") -> list[m.TaskModel]:
        """Tasks whose fields equal ``where`` (None matches NULL), oldest first."""
        clauses, args = [], []
        for name, value in where.items():
            if name not in _COLUMNS:
                raise ParameterError(
                    f"tasks cannot be looked up by {name!r}.{did_you_mean(name, m.FIELDS)}")
            if value is None:
                clauses.append(f"{name} IS NULL")
            elif not isinstance(value, (str, int, float)):
                raise ParameterError(
                    f"query_tasks() compares {name} with a string, number or None, not "
                    f"{value!r}: e.g. query_tasks(user_id='u1', status='failed').")
            else:
                if isinstance(value, str):
                    m.check_text(value, name, "query_tasks()")
                clauses.append(f"{name} = ?")
                args.append(value)
        sql = _SELECT + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        sql += f" ORDER BY {order}"
        for what, n in (("limit", limit), ("offset", offset)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
                raise ParameterError(
                    f"{what} of query_tasks() must be a whole number (or None for limit), "
                    f"not {n!r}.")
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        rows = self._read(sql, args)
        stuck = _stuck(rows)
        if stuck and self.settle(stuck):
            return self.query(where, limit, offset, order)
        return [self._model(r) for r in rows]

    # -- writes ----------------------------------------------------------------------------------
    def insert(self, fields: Mapping[str, Any]) -> m.TaskModel:
        """Add a task (fields already checked); its parent is marked ``has_children``."""
        row = _row(fields)
        with self._tx() as db:
            try:
                db.execute(f"INSERT INTO tasks ({', '.join(row)}) VALUES "
                           f"({', '.join('?' * len(row))})", list(row.values()))
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc):
                    raise
                raise ParameterError(
                    f"a task with id {fields['id']!r} exists already in the task store; "
                    f"leave id out to get a new one (or use another id).") from None
            if fields.get("parent_id"):
                db.execute("UPDATE tasks SET has_children = 1 WHERE id = ?",
                           (fields["parent_id"],))
        return self.need(fields["id"])

    def insert_many(self, rows: Sequence[Mapping[str, Any]],
                    referenced: Iterable[str] = ()) -> None:
        """Add several checked tasks in one transaction (copies, links, archives).

        A result that is not JSON (or too large) is written to its file first.

        Args:
            rows: the new tasks' fields.
            referenced: ids of existing tasks to mark ``has_references`` in the same
                transaction (the tasks the new ones were made from).
        """
        todo = [dict(f) for f in rows]
        if not todo:
            return
        files: list[str] = []
        try:
            for fields in todo:
                result = fields.get("result")
                if result is not None and not (m.is_json(result)
                                               and len(m.dumps(result)) <= INLINE_LIMIT):
                    _, file = self._keep(fields["id"], result)
                    fields["result"], fields["result_file"] = None, file
                    files.append(str(file))
            with self._tx() as db:
                for fields in todo:
                    row = _row(fields)
                    try:
                        db.execute(f"INSERT INTO tasks ({', '.join(row)}) VALUES "
                                   f"({', '.join('?' * len(row))})", list(row.values()))
                    except sqlite3.IntegrityError as exc:
                        raise ParameterError(
                            f"a task with id {fields['id']!r} exists already in the task "
                            f"store; nothing was added.") from exc
                parents = {f["parent_id"] for f in todo if f.get("parent_id")}
                for p in parents:
                    db.execute("UPDATE tasks SET has_children = 1 WHERE id = ?", (p,))
                for task_id in dict.fromkeys(referenced):
                    db.execute("UPDATE tasks SET has_references = 1 WHERE id = ?",
                               (task_id,))
        except BaseException:
            for file in files:
                with contextlib.suppress(OSError):
                    (self.results_dir / file).unlink()
            raise

    def update(self, task_id: str, fields: Mapping[str, Any],
               when: Mapping[str, Any] | None = None) -> bool:
        """Change fields of a task (already checked), optionally only if ``when`` holds.

        Returns:
            Whether the task was changed (False: it does not exist or ``when`` failed).
        """
        row = _row(fields)
        row["updated_at"] = now().isoformat()
        sets = ", ".join(f"{k} = ?" for k in row) + ", version = version + 1"
        args = list(row.values())
        sql = f"UPDATE tasks SET {sets} WHERE id = ?"
        args.append(task_id)
        for k, v in (when or {}).items():
            if isinstance(v, tuple):
                sql += f" AND {k} IN ({','.join('?' * len(v))})"
                args += list(v)
            else:
                sql += f" AND {k} = ?"
                args.append(v)
        with self._tx() as db:
            changed = db.execute(sql, args).rowcount > 0
            if changed and fields.get("parent_id"):
                db.execute("UPDATE tasks SET has_children = 1 WHERE id = ?",
                           (fields["parent_id"],))
        return changed

    def delete(self, task_id: str) -> bool:
        """Remove a task (and its result file)."""
        task = self._read("SELECT result_file, parent_id FROM tasks WHERE id = ?", (task_id,))
        if not task:
            return False
        with self._tx() as db:
            db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
            parent = task[0][1]
            if parent:
                db.execute("UPDATE tasks SET has_children = EXISTS (SELECT 1 FROM tasks "
                           "WHERE parent_id = ?) WHERE id = ?", (parent, parent))
        if task[0][0]:
            with contextlib.suppress(OSError):
                (self.results_dir / task[0][0]).unlink()
        return True

    # -- the lifecycle ---------------------------------------------------------------------------
    def claim(self, task_id: str, owner: str) -> str:
        """Try to start the task for ``owner``.

        Returns:
            ``'claimed'`` (it is now ``in_progress``, owned by ``owner``), ``'busy'``
            (another live process runs it), or its final status (``'completed'``,
            ``'failed'``, ``'cancelled'``): it must not run again here.
        """
        stamp = now().isoformat()
        with self._tx() as db:
            row = db.execute("SELECT status, owner FROM tasks WHERE id = ?",
                             (task_id,)).fetchone()
            if row is None:
                raise TaskNotFoundError(
                    f"the task {task_id!r} was deleted from the task store while its tree "
                    f"ran.", task_id)
            status, held = row
            if status == m.IN_PROGRESS and held != owner:
                if Owner.alive(held):
                    return "busy"
                status = m.PENDING  # a dead process's claim: taken over
            if status in m.FINAL:
                return str(status)
            db.execute("UPDATE tasks SET status = ?, owner = ?, started_at = ?, "
                       "updated_at = ?, error = NULL, version = version + 1 WHERE id = ?",
                       (m.IN_PROGRESS, owner, stamp, stamp, task_id))
        return "claimed"

    def signature(self, task_id: str) -> tuple[str, int] | None:
        """(status, version) of the task: changes whenever the task does."""
        rows = self._read("SELECT status, version FROM tasks WHERE id = ?", (task_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def complete(self, task_id: str, owner: str, result: Any) -> bool:
        """Commit the result of a claimed task; False if it is no longer ``owner``'s."""
        text, file = self._keep(task_id, result)
        stamp = now().isoformat()
        with self._tx() as db:
            changed = db.execute(
                "UPDATE tasks SET status = ?, result = ?, result_file = ?, error = NULL, "
                "progress = 1.0, completed_at = ?, updated_at = ?, owner = NULL, "
                "version = version + 1 WHERE id = ? AND status = ? AND owner = ?",
                (m.COMPLETED, text, file, stamp, stamp, task_id, m.IN_PROGRESS,
                 owner)).rowcount > 0
        if not changed and file:
            with contextlib.suppress(OSError):
                (self.results_dir / file).unlink()
        return changed

    def fail(self, task_id: str, owner: str | None, error: str, result: Any = None,
             status: str = m.FAILED) -> bool:
        """Mark a task failed (or cancelled) with ``error``; only its owner's claim if given."""
        text, file = self._keep(task_id, result)
        stamp = now().isoformat()
        sql = ("UPDATE tasks SET status = ?, error = ?, result = ?, result_file = ?, "
               "completed_at = ?, updated_at = ?, owner = NULL, version = version + 1 "
               "WHERE id = ?")
        args: list[Any] = [status, error, text, file, stamp, stamp, task_id]
        if owner is not None:
            sql += " AND status = ? AND owner = ?"
            args += [m.IN_PROGRESS, owner]
        with self._tx() as db:
            return db.execute(sql, args).rowcount > 0

    def release(self, task_id: str, owner: str) -> None:
        """Give a claim back (the attempt ended without an outcome): pending again."""
        with self._tx() as db:
            db.execute("UPDATE tasks SET status = ?, owner = NULL, version = version + 1 "
                       "WHERE id = ? AND status = ? AND owner = ?",
                       (m.PENDING, task_id, m.IN_PROGRESS, owner))

    def release_all(self, owner: str) -> int:
        """Give back every claim ``owner`` (one run) still holds: pending again.

        One transaction for the whole run (a run's end released each of its tasks in a
        transaction of its own, though nearly all had completed).

        Returns:
            How many claims were given back.
        """
        with self._tx() as db:
            return int(db.execute(
                "UPDATE tasks SET status = ?, owner = NULL, version = version + 1 "
                "WHERE owner = ? AND status = ?", (m.PENDING, owner, m.IN_PROGRESS)).rowcount)

    def set_inputs(self, task_id: str, inputs: Mapping[str, Any]) -> None:
        """Save the inputs a task runs with (merged with its dependencies' results)."""
        with self._tx() as db:
            db.execute("UPDATE tasks SET inputs = ? WHERE id = ?",
                       (m.dumps(_json_view(inputs)), task_id))

    def settle(self, ids: Iterable[str]) -> int:
        """Mark ``failed`` the tasks among ``ids`` left ``in_progress`` by a dead process.

        Returns:
            How many were settled.
        """
        ids = list(ids)
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows += self._read(f"SELECT id, owner FROM tasks WHERE status = ? AND id IN "
                               f"({','.join('?' * len(chunk))})", [m.IN_PROGRESS, *chunk])
        dead = [(i, o) for i, o in rows if not Owner.alive(o)]
        settled = 0
        for task_id, owner in dead:
            if owner:
                why = (f"interrupted: the process running it (pid {Owner.pid(owner)}) ended "
                       f"before it finished. Run its tree again to run it again.")
                settled += self.fail(task_id, owner, why)
                continue
            # no run ever claimed it: its status was set by hand
            why = ("marked in_progress without a run running it (status set by create_task "
                   "or update_task; only a run sets in_progress). Run its tree to run it, "
                   "or set its status to pending or completed.")
            stamp = now().isoformat()
            with self._tx() as db:  # only if still unclaimed (a run may have claimed it)
                settled += db.execute(
                    "UPDATE tasks SET status = ?, error = ?, completed_at = ?, updated_at = ?,"
                    " version = version + 1 WHERE id = ? AND status = ? AND owner IS NULL",
                    (m.FAILED, why, stamp, stamp, task_id, m.IN_PROGRESS)).rowcount
        return settled

    def reset_for_rerun(self, ids: Iterable[str]) -> list[str]:
        """Make the failed and cancelled tasks among ``ids`` pending again (a re-run).

        Returns:
            The ids reset.
        """
        ids = list(ids)
        reset: list[str] = []
        stamp = now().isoformat()
        with self._tx() as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found = db.execute(
                    f"SELECT id FROM tasks WHERE status IN (?, ?) AND origin_type != "
                    f"'archive' AND id IN ({marks})", [m.FAILED, m.CANCELLED, *chunk]
                ).fetchall()
                reset += [r[0] for r in found]
                db.execute(
                    f"UPDATE tasks SET status = ?, error = NULL, result = NULL, "
                    f"result_file = NULL, progress = 0, completed_at = NULL, updated_at = ?,"
                    f" version = version + 1 WHERE status IN (?, ?) AND origin_type != "
                    f"'archive' AND id IN ({marks})",
                    [m.PENDING, stamp, m.FAILED, m.CANCELLED, *chunk])
        return reset

    # -- results ---------------------------------------------------------------------------------
    def _keep(self, task_id: str, result: Any) -> tuple[str | None, str | None]:
        """(JSON text, file name) to store ``result`` as; a file is written first, atomically."""
        if result is None:
            return None, None
        if m.is_json(result):
            text = m.dumps(result)
            if len(text) <= INLINE_LIMIT:
                return text, None
        name = f"{_safe(task_id)}-{uuid.uuid4().hex[:8]}.pkl"
        try:
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - a result that cannot be kept at all
            raise ParameterError(
                f"the result of task {task_id!r} (a {type(result).__qualname__}) can be stored "
                f"neither as JSON nor pickled: {exc}. Return plain values, a DataFrame, or "
                f"an object pickle can save.") from exc
        def write(path: pathlib.Path) -> None:
            pathlib.Path(path).write_bytes(data)

        write_atomic(self.results_dir / name, write)
        return None, name


def _safe(task_id: str) -> str:
    """A file-name stem from a task id (ids are any text: never a path)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_"
                   for c in task_id)[:64] or "task"


_STATUS = _COLUMNS.index("status")
_OWNER = _COLUMNS.index("owner")


def _stuck(rows: Iterable[tuple[Any, ...]]) -> list[str]:
    """Ids of the rows ``in_progress`` whose claim may be a dead process's (to settle).

    A claim of this process is alive (no further read); others are checked by settle().
    """
    return [r[0] for r in rows if r[_STATUS] == m.IN_PROGRESS and not (
        r[_OWNER] and r[_OWNER].startswith(Owner._prefix()))]


def _load_result(path: pathlib.Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)  # noqa: S301 - written by this store
    except OSError as exc:
        raise TaskStoreError(
            f"the result file {str(path)!r} of a task is gone or unreadable: {exc}. Run the "
            f"task again (reset it with update_task(id, status='pending')).") from exc


def _row(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Store columns for checked task fields."""
    row: dict[str, Any] = {}
    for name, value in fields.items():
        if name in m.JSON_FIELDS:
            if name == "result" and value is not None and not m.is_json(value):
                raise ParameterError("a result that is not JSON is stored by complete().")
            row[name] = None if value is None else m.dumps(value)
        elif name in m.TIME_FIELDS:
            row[name] = _iso(value)
        elif name in ("has_children", "has_references"):
            row[name] = int(bool(value))
        else:
            row[name] = value
    return row


def _json_view(value: Any) -> Any:
    """``value`` with what is not JSON replaced by a short description (saved inputs)."""
    if m.is_json(value):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_view(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_view(v) for v in value]
    return f"<{type(value).__qualname__}: not stored as JSON>"


#: stores opened in this process, by path, and by the text of that path when given as
#: text (one object per file)
_OPEN: dict[pathlib.Path | str, TaskStore] = {}
_OPEN_LOCK = threading.Lock()


def open_store(path: str | os.PathLike[str] | None = None) -> TaskStore:
    """The store at ``path`` (default: ``tasks.db`` in the data dir's ``.pipeflow`` folder)."""
    if path is None:
        path = (storage.state_folder(settings.dirpath) / DEFAULT_NAME
                if isinstance(settings.dirpath, storage.RemotePath)  # (never SQLite remotely)
                else settings.dirpath / ".pipeflow" / DEFAULT_NAME)
    elif not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise ParameterError(
            f"create_session() takes the path of an SQLite file (or nothing, for the data "
            f"dir's default), not {path!r}.")
    if "://" in os.fspath(path):
        raise ParameterError(
            f"create_session() takes a file path, not the URL {os.fspath(path)!r}: pipeflow's "
            f"task store is an SQLite file (e.g. create_session('tasks.db')).")
    if isinstance(path, str):  # the engine's tasks name their store by its absolute path
        known = _OPEN.get(path)
        if known is not None:
            return known
    # a symlink and its target are one store (one results folder, beside the real file)
    key = pathlib.Path(path).expanduser().resolve()
    with _OPEN_LOCK:
        store = _OPEN.get(key)
        if store is None:
            store = _OPEN[key] = TaskStore(key)
        if isinstance(path, str) and os.path.isabs(path):
            _OPEN[path] = store
        return store
