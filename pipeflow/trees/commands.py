"""``pipeflow tasks ...``: the task trees of :mod:`pipeflow.trees` from the shell.

Example::

    pipeflow tasks create tree.json                 # prints the new tasks' ids
    pipeflow tasks list --root t-root               # the tree under a task
    pipeflow tasks run t-root --module executors    # import executors.py, run the tree
    pipeflow tasks show t-after --json
    pipeflow tasks cancel t-after --message "not needed"
    pipeflow tasks executors --module executors

The task store is ``.pipeflow/tasks.db`` in the data dir (``--dir``, as the other
commands) unless ``--store FILE`` names another. Queries (``list``, ``show``,
``executors``) create nothing. Exit codes are ``pipeflow run``'s: 0 done, 1 a task failed
or was left pending (``cancel``: nothing to cancel), 2 bad input (an unknown task id, a
file that is not JSON, an unknown executor), 130 Ctrl-C. Errors are one ``Error:`` line on
standard error.

``pipeflow.cli`` adds the group to the ``pipeflow`` command and hands it its error
handling (signals, exit codes) through ``ctx.meta[GUARD]``; this module does not import
``pipeflow.cli`` (the layers go one way).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import importlib.util
import json
import os
import pathlib
import sqlite3
import sys
import sysconfig
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import click
from click.shell_completion import CompletionItem

from pipeflow import settings, storage
from pipeflow.errors import (
    CycleError,
    ParameterError,
    PipeflowError,
    TaskNotFoundError,
    UnknownExecutorError,
    did_you_mean,
    first_line,
)
from pipeflow.trees import executors as registry
from pipeflow.trees import model as m
from pipeflow.trees.manager import DEFAULT_WORKERS, TaskManager, run_sync
from pipeflow.trees.node import TaskTreeNode
from pipeflow.trees.repository import TaskRepository
from pipeflow.trees.store import DEFAULT_NAME, TaskStore, open_store

#: the ``ctx.meta`` key of the error handling ``pipeflow.cli`` gives its commands
GUARD = "pipeflow.guard"
#: the fields of each record of ``list --json``, in order
LIST_FIELDS = ("id", "name", "status", "priority", "user_id", "parent_id", "dependencies",
               "progress", "error", "created_at", "updated_at")
#: the fields a task of a ``create`` file may have
FILE_FIELDS = ("id", "key", "name", "user_id", "parent_id", "priority", "dependencies",
               "inputs", "params", "schemas")
#: how many tasks ``list`` shows unless ``--limit`` says otherwise
DEFAULT_LIMIT = 50
#: lines of a result ``show`` prints before abridging it
SHOWN_LINES = 20
#: characters of a line ``show`` prints before abridging it
SHOWN_WIDTH = 200
#: the order of the statuses in the summary of ``run``
_SUMMARY_ORDER = (m.COMPLETED, m.FAILED, m.CANCELLED, m.PENDING, m.IN_PROGRESS)
_PRIORITY_NAMES = {0: "urgent", 1: "high", 2: "normal", 3: "low"}


class BadInput(click.ClickException):
    """Bad input: one ``Error:`` line and exit code 2."""

    exit_code = 2


# -- errors, signals -----------------------------------------------------------------------------

#: errors that mean the command line or a file named something wrong (exit 2)
_BAD_INPUT = (ParameterError, TaskNotFoundError, UnknownExecutorError, CycleError)


@contextlib.contextmanager
def _guard(what: str, after: str = "") -> Iterator[None]:
    """Run a command: its errors become one ``Error:`` line and an exit code.

    Bad input (a :data:`_BAD_INPUT` error) exits 2. The rest (other errors, Ctrl-C,
    SIGTERM) is left to the handling ``pipeflow.cli`` put in ``ctx.meta[GUARD]`` (the
    ``pipeflow`` command's: 1 for an error, 130 for Ctrl-C, 143 for SIGTERM), or, for the
    group used alone, to :func:`_plain_guard`.
    """
    ctx = click.get_current_context(silent=True)
    outer: Callable[[str, str], Any] = (ctx.meta.get(GUARD) if ctx is not None else None
                                        ) or _plain_guard
    with outer(what, after):
        try:
            yield
        except _BAD_INPUT as exc:
            raise BadInput(f"{type(exc).__name__}: {exc}") from None
        except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as cat
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(141) from None  # 128 + SIGPIPE, a shell's code


@contextlib.contextmanager
def _plain_guard(what: str, after: str = "") -> Iterator[None]:
    """The error handling of the group used without ``pipeflow.cli``: one line, no traceback."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"{what}: interrupted by Ctrl-C{after}.", err=True)
        raise click.exceptions.Exit(130) from None
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except PipeflowError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise click.ClickException(f"{what} failed: {first_line(exc)} (at "
                                   f"{where.filename}:{where.lineno}).") from None


# -- the store -------------------------------------------------------------------------------------

def _use_dir(data_dir: str | None) -> None:
    """Make ``data_dir`` the data dir (creating nothing: the store's folder is made on use)."""
    if data_dir is not None:
        settings.dir = data_dir


def _store_path(store: str | None) -> pathlib.Path:
    """The store file a command uses: ``--store``, else the data dir's."""
    if store is not None:
        return pathlib.Path(store).absolute()
    if isinstance(settings.dirpath, storage.RemotePath):  # (never SQLite on a store:
        return storage.state_folder(settings.dirpath) / DEFAULT_NAME  # open_store's place)
    return (settings.dirpath / ".pipeflow" / DEFAULT_NAME).absolute()


def shown_path(path: pathlib.Path) -> str:
    """A path for messages: relative to the working directory when it is under it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(pathlib.Path.cwd()))
    return str(path)


def _existing_store(store: str | None) -> TaskStore:
    """The store, which must exist (a query or a run creates none).

    Raises:
        BadInput: there is no store file there.
    """
    path = _store_path(store)
    if not path.is_file():
        raise BadInput(f"no task store at {shown_path(path)}: there are no tasks yet. Create "
                       f"them with pipeflow tasks create FILE (or name the store with --store "
                       f"FILE).")
    return open_store(path)


# -- loading the user's executors ----------------------------------------------------------------

#: folders whose frames are not the user's code (the standard library, installed packages,
#: pipeflow itself)
_NOT_USERS = tuple(
    {str(pathlib.Path(p).resolve()) + os.sep for p in (
        *(str(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib",
                                                   "platlib")),
        str(pathlib.Path(__file__).parents[1]))})


def _user_frame(exc: BaseException) -> str:
    """`` at FILE:LINE`` of the deepest frame of the user's code in ``exc``'s traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<")]
    for frame in reversed(frames):
        with contextlib.suppress(OSError, ValueError):
            if not str(pathlib.Path(frame.filename).resolve()).startswith(_NOT_USERS):
                return f" at {frame.filename}:{frame.lineno}"
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def load_executors(modules: Sequence[str]) -> None:
    """Import the modules (names, or ``.py`` files) whose ``@executor`` functions register.

    What they print while imported goes to standard error (standard output may be a
    ``--json`` document).

    Raises:
        ParameterError: no such module or file, or it calls ``sys.exit()`` (exit 2).
        click.ClickException: importing it failed (one line with the file and line, exit 1).
    """
    for spec in modules:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                _import(spec)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
                nearby = [p.stem for p in pathlib.Path().glob("*.py")]
                raise BadInput(
                    f"--module {spec}: there is no module {spec!r} in the working directory "
                    f"({os.getcwd()}) or on the Python path.{did_you_mean(spec, nearby)} Run "
                    f"pipeflow in the folder of {spec.replace('.', '/')}.py, add its folder "
                    f"to PYTHONPATH, or give its file: --module "
                    f"path/to/{spec.replace('.', '/')}.py.") from None
            raise click.ClickException(
                f"importing {spec!r} failed{_user_frame(exc)}: {first_line(exc)}") from None
        except SyntaxError as exc:
            raise click.ClickException(f"importing {spec!r} failed at {exc.filename}:"
                                       f"{exc.lineno}: SyntaxError: {exc.msg}") from None
        except SystemExit as exc:
            raise BadInput(
                f"--module {spec}: importing it called sys.exit({exc.code!r})"
                f"{_user_frame(exc)}. Guard its script code with: if __name__ == "
                f"'__main__':") from None
        except (ParameterError, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - the user's module failed: say where
            raise click.ClickException(
                f"importing {spec!r} failed{_user_frame(exc)}: {first_line(exc)}") from None


def _import(spec: str) -> None:
    """Import one module name or ``.py`` file (a file under its stem, its folder on the path)."""
    if not (spec.endswith(".py") or "/" in spec or os.sep in spec):
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        importlib.import_module(spec)
        return
    path = pathlib.Path(spec)
    if not path.is_file():
        raise BadInput(f"--module {spec}: there is no file {spec!r} (relative to "
                             f"{os.getcwd()}).")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        where = getattr(loaded, "__file__", None)
        if where and pathlib.Path(where).resolve() == path.resolve():
            return  # imported already
        raise BadInput(
            f"--module {spec}: its name {name!r} is the module imported from "
            f"{where or 'Python itself'}; rename the file.")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    found = importlib.util.spec_from_file_location(name, path)
    if found is None or found.loader is None:
        raise BadInput(f"--module {spec}: Python cannot import {spec!r} as a module.")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        found.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


# -- completion ------------------------------------------------------------------------------------

def _complete_id(ctx: click.Context, param: click.Parameter, incomplete: str
                 ) -> list[CompletionItem]:
    """The ids of stored tasks (the store read without changing or creating anything)."""
    store = ctx.params.get("store")
    home = ctx.params.get("data_dir")
    path = (pathlib.Path(store) if store else
            pathlib.Path(home or settings.dirpath) / ".pipeflow" / DEFAULT_NAME)
    if not path.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro",
                                                uri=True, timeout=1)) as db:
            rows = db.execute("SELECT id FROM tasks WHERE substr(id, 1, ?) = ? ORDER BY seq "
                              "LIMIT 200", (len(incomplete), incomplete)).fetchall()
    except sqlite3.Error:
        return []
    return [CompletionItem(r[0]) for r in rows]


def _complete_file(ctx: click.Context, param: click.Parameter, incomplete: str
                   ) -> list[CompletionItem]:
    """File names: the shell completes them."""
    return [CompletionItem(incomplete, type="file")]


# -- options ---------------------------------------------------------------------------------------

_store = click.option("--store", default=None, type=click.Path(dir_okay=False),
                      shell_complete=_complete_file,
                      help="The task store (an SQLite file; default: .pipeflow/tasks.db in "
                           "the data dir).")
_dir = click.option("--dir", "data_dir", default=None,
                    type=click.Path(file_okay=False, dir_okay=True),
                    help="The data dir (default: data).")
_json = click.option("--json", "as_json", is_flag=True,
                     help="Print a JSON document on standard output (and nothing else).")
_modules = click.option("-m", "--module", "modules", multiple=True, metavar="MODULE|FILE.py",
                        shell_complete=_complete_file,
                        help="Import this module (or file) first: its @executor functions "
                             "register (repeatable).")


def _print_json(data: Any) -> None:
    """``data`` as JSON on standard output (values JSON lacks, e.g. dates, as text)."""
    click.echo(json.dumps(data, indent=2, default=str))


def _when(value: dt.datetime | None) -> str:
    """A time as the history shows it: local time to the second."""
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@click.group()
def tasks() -> None:
    """The tasks of task trees (pipeflow.trees): list, show, create, run, cancel.

    \b
    Examples:
      pipeflow tasks create tree.json               # prints the new tasks' ids
      pipeflow tasks list --root t-root             # the tree under a task
      pipeflow tasks run t-root --module executors  # imports executors.py first
      pipeflow tasks show t-after --json
      pipeflow tasks cancel t-after

    The store is .pipeflow/tasks.db in the data dir (--dir), or --store FILE.
    """


# -- list ------------------------------------------------------------------------------------------

def _record(t: m.TaskModel) -> dict[str, Any]:
    """A task as a record of ``list --json``."""
    out: dict[str, Any] = {}
    for name in LIST_FIELDS:
        value = getattr(t, name)
        out[name] = _iso(value) if isinstance(value, dt.datetime) else value
    return out


@tasks.command("list")
@click.option("--status", type=click.Choice(m.STATUSES), default=None,
              help="Only tasks of this status.")
@click.option("--user", "user_id", default=None, metavar="USER", help="Only this user's tasks.")
@click.option("--root", "root_id", default=None, metavar="ID", shell_complete=_complete_id,
              help="Show the tree under this task (its parent_id descendants).")
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help=f"Show the newest N tasks (default {DEFAULT_LIMIT}; 0: all).")
@_json
@_store
@_dir
def list_tasks(status: str | None, user_id: str | None, root_id: str | None,
               limit: int | None, as_json: bool, store: str | None,
               data_dir: str | None) -> None:
    """List stored tasks: one line each (oldest first), or the tree under --root.

    \b
    Examples:
      pipeflow tasks list --status failed
      pipeflow tasks list --user u1 --limit 0 --json
      pipeflow tasks list --root t-root
    """
    with _guard("pipeflow tasks list"):
        if root_id is not None and limit is not None:
            raise BadInput("--limit applies to the list of tasks; --root shows the whole "
                           "tree: pass one.")
        _use_dir(data_dir)
        path = _store_path(store)
        if not path.is_file():  # a query creates nothing
            if root_id is not None:
                _existing_store(store)
            if as_json:
                _print_json([])
            else:
                click.echo(f"no task store at {shown_path(path)} (no task was created there yet: "
                           f"pipeflow tasks create FILE)")
            return
        db = open_store(path)
        where = {k: v for k, v in (("status", status), ("user_id", user_id)) if v is not None}
        if root_id is not None:
            _show_tree(TaskRepository(db).tree_of(root_id), where, as_json)
            return
        n = DEFAULT_LIMIT if limit is None else limit
        rows = db.query(where, limit=n + 1 if n else None, order="seq DESC")
        more = bool(n) and len(rows) > n
        rows = list(reversed(rows[:n] if n else rows))
        if as_json:
            _print_json([_record(t) for t in rows])
            return
        if not rows:
            given = ", ".join(f"{'user' if k == 'user_id' else k} {v}" for k, v in where.items())
            click.echo(f"no tasks match ({given})" if given else f"no tasks in {shown_path(path)}")
            return
        table = [("ID", "NAME", "STATUS", "PRIORITY", "USER", "PARENT", "UPDATED")]
        table += [(t.id, t.name, t.status, str(t.priority), t.user_id or "-",
                   t.parent_id or "-", _when(t.updated_at)) for t in rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        for r in table:
            click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if more:
            click.echo(f"(the newest {n} tasks; --limit 0 shows all)", err=True)


def _tree_line(t: m.TaskModel) -> str:
    user = f"  user {t.user_id}" if t.user_id else ""
    return f"{t.id}  {t.name}  {t.status}  priority {t.priority}{user}"


#: levels of a tree ``list --root`` indents; a deeper task's line shows its last levels only
SHOWN_LEVELS = 12


def _show_tree(root: TaskTreeNode, where: Mapping[str, Any], as_json: bool) -> None:
    """Print the tree (a node is shown if it or a task under it matches ``where``).

    Without recursion: a chain of tasks can be thousands of levels deep. A line deeper than
    :data:`SHOWN_LEVELS` levels starts with ``··· `` and its last levels, and ends with its
    level, so that it stays readable.
    """
    order: list[TaskTreeNode] = []  # parents before their children
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    kept: set[int] = set()
    for node in reversed(order):  # children first
        if all(getattr(node.task, k) == v for k, v in where.items()) or any(
                id(c) in kept for c in node.children):
            kept.add(id(node))

    def kids(node: TaskTreeNode) -> list[TaskTreeNode]:
        return [c for c in node.children if id(c) in kept]

    if as_json:
        records = {id(n): {**_record(n.task), "children": []} for n in order}
        for node in order:
            records[id(node)]["children"] = [records[id(c)] for c in kids(node)]
        depth = _depth(root)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 4 * depth + 1000))  # json nests a level a call
        try:
            _print_json(records[id(root)])
        finally:
            sys.setrecursionlimit(limit)
        return
    click.echo(_tree_line(root.task))
    todo: list[tuple[TaskTreeNode, tuple[str, ...], bool]] = [
        (c, (), i == len(kids(root)) - 1) for i, c in reversed(list(enumerate(kids(root))))]
    while todo:
        node, levels, last = todo.pop()
        branch = "└── " if last else "├── "
        if len(levels) < SHOWN_LEVELS:
            click.echo(f"{''.join(levels)}{branch}{_tree_line(node.task)}")
        else:
            click.echo(f"··· {''.join(levels[-(SHOWN_LEVELS // 2):])}{branch}"
                       f"{_tree_line(node.task)}  (level {len(levels) + 1})")
        below = (*levels, "    " if last else "│   ")
        children = kids(node)
        todo.extend((c, below, i == len(children) - 1)
                    for i, c in reversed(list(enumerate(children))))


def _depth(root: TaskTreeNode) -> int:
    """How many levels the tree has below its root."""
    deepest, level = 0, [root]
    while level:
        level = [c for n in level for c in n.children]
        deepest += bool(level)
    return deepest


# -- show ------------------------------------------------------------------------------------------

def _result_value(t: m.TaskModel) -> tuple[Any, bool]:
    """(the result, whether it is JSON); a result file that cannot be read: its error."""
    try:
        value = t.result
    except PipeflowError as exc:
        return f"<unreadable: {exc}>", False
    return value, m.is_json(value)


def _abridged(text: str, task_id: str, what: str = "result") -> list[str]:
    """``text``'s lines, the first :data:`SHOWN_LINES` of a long one and a note.

    A line longer than :data:`SHOWN_WIDTH` characters is cut there, with a note.
    """
    lines = [line if len(line) <= SHOWN_WIDTH else
             f"{line[:SHOWN_WIDTH]}... (abridged: {len(line):,} characters; pipeflow tasks "
             f"show {task_id} --json prints all of it)" for line in text.splitlines() or [""]]
    if len(lines) <= SHOWN_LINES:
        return lines
    return [*lines[:SHOWN_LINES],
            f"... (abridged: the {what} is {len(lines):,} lines; pipeflow tasks show "
            f"{task_id} --json prints all of it)"]


@tasks.command()
@click.argument("task_id", metavar="ID", shell_complete=_complete_id)
@_json
@_store
@_dir
def show(task_id: str, as_json: bool, store: str | None, data_dir: str | None) -> None:
    """Show every field of task ID, its result and error, its dependencies' statuses.

    \b
    Examples:
      pipeflow tasks show t-after
      pipeflow tasks show t-after --json | jq .result
    """
    with _guard(f"pipeflow tasks show {task_id}"):
        _use_dir(data_dir)
        db = _existing_store(store)
        t = db.need(task_id)
        deps = db.many(d["id"] for d in t.dependencies)
        result, is_json = _result_value(t)
        if as_json:
            doc = t.to_dict()
            doc["result"] = result if is_json else (
                result if isinstance(result, str) else
                f"<{type(result).__module__}.{type(result).__qualname__}: not JSON; read it "
                f"in Python: task_repository.get_task_by_id({task_id!r})>")
            doc["executor"] = t.executor_id
            doc["dependency_status"] = {d["id"]: deps[d["id"]].status if d["id"] in deps
                                        else None for d in t.dependencies}
            _print_json(doc)
            return
        executor_note = "" if t.executor_id == t.name else f"  (executor {t.executor_id})"
        rows: list[tuple[str, str]] = [
            ("id", t.id), ("name", t.name + executor_note), ("status", t.status),
            ("priority", f"{t.priority} ({_PRIORITY_NAMES.get(t.priority, '?')})"),
            ("user", t.user_id or "-"), ("parent", t.parent_id or "-"),
            ("children", "yes" if t.has_children else "no"),
            ("tree", t.task_tree_id or "-"),
            ("origin", t.origin_type + (f" of {t.original_task_id}" if t.original_task_id
                                        else "")),
            ("progress", f"{(t.progress or 0) * 100:.0f}%"),
            ("created", _when(t.created_at)), ("started", _when(t.started_at)),
            ("updated", _when(t.updated_at)), ("completed", _when(t.completed_at)),
            ("inputs", json.dumps(t.inputs, indent=2)),
        ]
        for name in ("params", "schemas"):
            value = getattr(t, name)
            if value is not None:
                rows.append((name, json.dumps(value, indent=2)))
        if result is None:
            shown = "-"
        elif is_json:
            shown = json.dumps(result, indent=2)
        else:
            shown = (result if isinstance(result, str) else
                     f"a {type(result).__module__}.{type(result).__qualname__} (not JSON):\n"
                     f"{result!r}")
        rows.append(("result", shown))
        rows.append(("error", t.error or "-"))
        for label, text in rows:
            lines = _abridged(text, task_id, label)
            click.echo(f"{label + ':':<14} {lines[0]}".rstrip())
            for line in lines[1:]:
                click.echo(f"{'':<15}{line}".rstrip())
        if not t.dependencies:
            click.echo(f"{'dependencies:':<14} -")
            return
        click.echo("dependencies:")
        for d in t.dependencies:
            dep = deps.get(d["id"])
            name, state = (dep.name, dep.status) if dep else ("?", "missing")
            click.echo(f"  {d['id']}  {name}  {state}  "
                       f"{'required' if d['required'] else 'optional'}")


# -- create ----------------------------------------------------------------------------------------

class _Duplicate(ValueError):
    """A JSON object gives a key twice."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(f"the key {key!r} is given twice in one object (the second "
                             f"would silently win): keep one")
        out[key] = value
    return out


def _read_json(source: str) -> tuple[str, Any]:
    """(how to name it, the JSON value) of a file, or of standard input for ``-``."""
    if source == "-":
        label, text = "standard input", sys.stdin.read()
    else:
        label = source
        try:
            text = pathlib.Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BadInput(f"{source} does not exist (relative to {os.getcwd()}).") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"{source} cannot be read: {first_line(exc)}.") from None
    try:
        return label, json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{label} is not valid JSON: line {exc.lineno}, column {exc.colno}: "
                       f"{exc.msg}. Fix the file.") from None
    except _Duplicate as exc:
        raise BadInput(f"{label} is not valid JSON: {exc}. Fix the file.") from None


def plan_tasks(repo: TaskRepository, data: Any, label: str = "the file"
               ) -> list[tuple[str | None, dict[str, Any]]]:
    """The checked rows of the tasks a ``create`` file describes, nothing stored yet.

    ``data`` is one task object or a list of them. A task's ``parent_id`` and the ids in
    its ``dependencies`` name an earlier task of the file (by its ``key`` or its ``id``)
    or a task already in the store (by its id). ``key`` is a name used within the file
    only; ``id`` is the stored id (a new uuid4 when missing).

    Returns:
        (key, fields) of each task, in the file's order.

    Raises:
        BadInput: anything wrong, with the task's position in the file.
    """
    items = data if isinstance(data, list) else [data]
    if not items:
        raise BadInput(f"{label} holds no task: give one task object or a list of them.")
    keys: dict[str, int] = {}   # key -> position (1-based)
    ids: dict[str, int] = {}    # explicit or new id -> position
    by_position: dict[int, str] = {}
    for i, item in enumerate(items, 1):
        where = _where(label, i, item)
        if not isinstance(item, dict):
            raise BadInput(f"{where}: ParameterError: a task is a JSON object such as "
                           f"{{\"name\": \"fetch_data\", \"inputs\": {{}}}}, not {item!r}.")
        unknown = [k for k in item if k not in FILE_FIELDS]
        if unknown:
            raise BadInput(f"{where}: ParameterError: unknown field {unknown[0]!r}."
                           f"{did_you_mean(unknown[0], FILE_FIELDS)} A task of a file has: "
                           f"{', '.join(FILE_FIELDS)}.")
        for field, seen in (("key", keys), ("id", ids)):
            value = item.get(field)
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                raise BadInput(f"{where}: ParameterError: {field} must be a non-empty "
                               f"string, not {value!r}.")
            if value in seen:
                raise BadInput(f"{where}: ParameterError: the {field} {value!r} is given to "
                               f"task #{seen[value]} too: give each task its own {field}.")
            seen[value] = i
        by_position[i] = item.get("id") or str(uuid.uuid4())
        ids.setdefault(by_position[i], i)
    for key, i in keys.items():
        if key in ids and ids[key] != i:
            raise BadInput(f"{_where(label, i, items[i - 1])}: ParameterError: the key "
                           f"{key!r} is the id of task #{ids[key]}: a reference to it would "
                           f"be ambiguous. Pick another key.")
    clash = repo.db.many(keys)
    if clash:
        first = min(clash, key=lambda k: keys[k])
        raise BadInput(f"{_where(label, keys[first], items[keys[first] - 1])}: ParameterError: "
                       f"the key {first!r} is the id of a task in the store: a reference to it "
                       f"would be ambiguous. Pick another key.")
    taken = repo.db.many(i for i in ids)
    if taken:
        first = min(taken, key=lambda i: ids[i])
        raise BadInput(f"{_where(label, ids[first], items[ids[first] - 1])}: ParameterError: "
                       f"the id {first!r} is taken by a task of the store "
                       f"{str(repo.db.path)!r}: leave id out to get a new one, or pick "
                       f"another.")
    refs = {d for item in items for d in _references(item)}
    stored = repo.db.many(r for r in refs if r not in keys and r not in ids)
    out: list[tuple[str | None, dict[str, Any]]] = []
    for i, item in enumerate(items, 1):
        where = _where(label, i, item)

        def resolve(ref: str, what: str, i: int = i, where: str = where) -> str:
            """The id ``ref`` (a key or id of an earlier task of the file, a stored id) names."""
            pos = keys.get(ref, ids.get(ref))
            if pos is not None:
                if pos == i:
                    raise BadInput(f"{where}: ParameterError: {what} {ref!r} names the task "
                                   f"itself.")
                if pos > i:
                    raise BadInput(
                        f"{where}: ParameterError: {what} {ref!r} names task #{pos} of the "
                        f"file, which comes later: put the tasks a task depends on (and its "
                        f"parent) before it.")
                return by_position[pos]
            if ref in stored:
                return ref
            known = [*keys, *(k for k, p in ids.items() if p < i), *repo.db.ids()]
            raise BadInput(
                f"{where}: TaskNotFoundError: {what} {ref!r} is neither a key or id of an "
                f"earlier task of the file nor a task in the store.{did_you_mean(ref, known)}")

        try:
            deps = m.check_dependencies(item.get("dependencies"), f"task {item.get('name')!r}")
            resolved = [{"id": resolve(d["id"], "dependency"), "required": d["required"]}
                        for d in deps]
            resolved = m.check_dependencies(resolved, f"task {item.get('name')!r}")
            parent = item.get("parent_id")
            if parent is not None and not isinstance(parent, str):
                raise ParameterError(f"parent_id must be a task id or key, not {parent!r}.")
            parent_id = resolve(parent, "parent") if parent else None
            fields = {k: v for k, v in item.items()
                      if k not in ("key", "name", "dependencies", "parent_id")}
            fields["id"] = by_position[i]
            # the references to tasks of the file are checked above; the store's by create
            checked = repo.checked_new(item.get("name"), {  # type: ignore[arg-type]
                **fields, "dependencies": [d for d in resolved if d["id"] in stored],
                "parent_id": parent_id if parent_id in stored else None})
        except _BAD_INPUT as exc:
            raise BadInput(f"{where}: {type(exc).__name__}: {exc}") from None
        checked["dependencies"] = resolved
        checked["parent_id"] = parent_id
        out.append((item.get("key"), checked))
    return out


def _where(label: str, i: int, item: Any) -> str:
    """``tree.json, task #2 ('fetch_data')``: a task of a file, for messages."""
    name = item.get("name") if isinstance(item, dict) else None
    return f"{label}, task #{i}" + (f" ({name!r})" if isinstance(name, str) else "")


def _references(item: Any) -> list[str]:
    """The ids and keys a task of a file names (its parent, its dependencies)."""
    if not isinstance(item, dict):
        return []
    out = [item["parent_id"]] if isinstance(item.get("parent_id"), str) else []
    deps = item.get("dependencies")
    if isinstance(deps, list):
        for d in deps:
            ref = d.get("id") if isinstance(d, dict) else d
            if isinstance(ref, str):
                out.append(ref)
    return out


@tasks.command()
@click.argument("source", metavar="FILE|-", shell_complete=_complete_file)
@_json
@_store
@_dir
def create(source: str, as_json: bool, store: str | None, data_dir: str | None) -> None:
    """Create tasks from a JSON file (or standard input: -), all or none.

    The file holds one task object or a list of them, with apflow's fields: name (the
    executor id), and optionally id, user_id, parent_id, priority (0-3, default 2),
    dependencies ([{"id": ..., "required": true}] or ids), inputs, params, schemas. A
    "key" names a task within the file: parent_id and dependencies name an earlier task
    of the file by its key or id, or a stored task by its id. Everything is checked
    before anything is stored. Prints the new ids, one a line (--json: a list of
    {"key", "id", "name"}).

    \b
    Examples:
      pipeflow tasks create tree.json
      echo '{"name": "system_info_executor"}' | pipeflow tasks create -
    """
    with _guard("pipeflow tasks create"):
        label, data = _read_json(source)
        _use_dir(data_dir)
        path = _store_path(store)
        repo = TaskRepository(open_store(path))
        planned = plan_tasks(repo, data, label)
        repo.db.insert_many([fields for _, fields in planned])
        if as_json:
            _print_json([{"key": key, "id": f["id"], "name": f["name"]}
                         for key, f in planned])
        else:
            for _, fields in planned:
                click.echo(fields["id"])
        n = len(planned)
        if not as_json:
            click.echo(f"created {n} task{'' if n == 1 else 's'} in {shown_path(path)}",
                       err=True)


# -- run -------------------------------------------------------------------------------------------

def _why_pending(t: m.TaskModel, tasks_by_id: Mapping[str, m.TaskModel]) -> str:
    """Why a task is still pending after a run: the dependencies it waits for."""
    waits = []
    for d in t.dependencies:
        dep = tasks_by_id.get(d["id"])
        if dep is None or dep.status != m.COMPLETED:
            waits.append(f"{d['id']} ({dep.status if dep else 'missing'})")
    return f"waits for {', '.join(waits)}" if waits else "not started"


@tasks.command("run")
@click.argument("root_id", metavar="ROOT_ID", shell_complete=_complete_id)
@_modules
@click.option("-j", "--workers", type=click.IntRange(min=1), default=DEFAULT_WORKERS,
              show_default=True, metavar="N", help="Tasks run at once (threads).")
@_json
@_store
@_dir
def run_tree(root_id: str, modules: tuple[str, ...], workers: int, as_json: bool,
             store: str | None, data_dir: str | None) -> None:
    """Run the stored tree under ROOT_ID (and the stored tasks it depends on).

    Completed tasks are kept; failed ones, and ones stopped while they ran, run again.
    Exit 0 when every task of the tree completed, 1 when one failed or was left pending.

    \b
    Examples:
      pipeflow tasks run t-root --module executors
      pipeflow tasks run t-root -m executors.py -m more_executors --workers 2
    """
    with _guard(f"pipeflow tasks run {root_id}",
                after="; completed tasks are kept: run it again to finish"):
        _use_dir(data_dir)
        db = _existing_store(store)
        repo = TaskRepository(db)
        db.need(root_id)  # an unknown id is bad input before any user code runs
        load_executors(modules)
        tree = repo.tree_of(root_id)
        tm = TaskManager(db, workers=workers)
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            run_sync(tm.distribute_task_tree(tree, execution_summary=False))
        nodes = [n.task for n in tree]
        counts = {s: sum(1 for t in nodes if t.status == s) for s in _SUMMARY_ORDER}
        by_id = {t.id: t for t in nodes}
        by_id.update(db.many(d["id"] for t in nodes for d in t.dependencies
                             if d["id"] not in by_id))
        if as_json:
            _print_json({"root": root_id, "success": counts[m.COMPLETED] == len(nodes),
                         "counts": counts,
                         "tasks": [{"id": t.id, "name": t.name, "status": t.status,
                                    "error": t.error} for t in nodes]})
        else:
            n = len(nodes)
            shown = ", ".join(f"{c} {s}" for s, c in counts.items() if c)
            click.echo(f"tree {root_id}: {n} task{'' if n == 1 else 's'}: {shown}")
            for t in nodes:
                if t.status == m.COMPLETED:
                    continue
                why = (_why_pending(t, by_id) if t.status == m.PENDING else
                       (t.error or "").splitlines()[0] if t.error else "-")
                click.echo(f"  {t.status:<9} {t.id} ({t.name}): {why}")
        if counts[m.COMPLETED] != len(nodes):
            left = ", ".join(f"{c} {s}" for s, c in counts.items() if c and s != m.COMPLETED)
            if counts[m.FAILED]:
                hint = ("Fix the failed tasks and run it again: completed tasks are kept, "
                        "failed ones run again.")
            elif counts[m.CANCELLED]:
                hint = ("Completed tasks are kept; a task cancelled before it started stays "
                        "cancelled until its status is set to pending, one stopped while it "
                        "ran runs again when you run the tree again.")
            else:
                hint = "Completed tasks are kept; above: what the pending tasks wait for."
            raise click.ClickException(f"the tree {root_id} did not complete ({left}). {hint}")


# -- cancel ----------------------------------------------------------------------------------------

@tasks.command()
@click.argument("task_id", metavar="ID", shell_complete=_complete_id)
@click.option("--message", default=None, metavar="TEXT",
              help="The reason, stored as its error (default: Cancelled by user).")
@_json
@_store
@_dir
def cancel(task_id: str, message: str | None, as_json: bool, store: str | None,
           data_dir: str | None) -> None:
    """Cancel task ID: a pending one never starts, a running cancelable one stops.

    Exit 0 when it was cancelled, 1 when there was nothing to cancel (it had finished).

    \b
    Examples:
      pipeflow tasks cancel t-after --message "not needed"
    """
    with _guard(f"pipeflow tasks cancel {task_id}"):
        _use_dir(data_dir)
        db = _existing_store(store)
        db.need(task_id)
        out = TaskManager(db).cancel_now(task_id, message)
        if as_json:
            _print_json(out)
        elif out["status"] == m.CANCELLED:
            click.echo(f"cancelled {task_id}: {out['message']}")
        else:
            click.echo(out["message"])
        if out["status"] != m.CANCELLED:
            raise click.exceptions.Exit(1)


# -- executors -------------------------------------------------------------------------------------

@tasks.command()
@_modules
@_json
def executors(modules: tuple[str, ...], as_json: bool) -> None:
    """List the registered executors (the built-in ones, and those of --module).

    \b
    Examples:
      pipeflow tasks executors --module executors
    """
    with _guard("pipeflow tasks executors"):
        load_executors(modules)
        specs = sorted(registry.registered().values(), key=lambda s: s.id)
        if as_json:
            _print_json([{"id": s.id, "description": s.description, "async": s.is_async,
                          "cancelable": s.cancelable, "retries": s.retries,
                          "retry_delay": s.retry_delay, "timeout": s.timeout} for s in specs])
            return
        table = [("ID", "KIND", "DESCRIPTION")]
        for s in specs:
            kind = ["async" if s.is_async else "sync"]
            if s.cancelable:
                kind.append("cancelable")
            if s.retries:
                kind.append(f"retries={s.retries}")
            if s.timeout is not None:
                kind.append(f"timeout={s.timeout:g}s")
            # a docstring's ``literal`` markup, shown as plain text
            table.append((s.id, ",".join(kind), s.description.replace("``", "") or "-"))
        widths = [max(len(r[i]) for r in table) for i in range(2)]
        for r in table:
            click.echo(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}".rstrip())
