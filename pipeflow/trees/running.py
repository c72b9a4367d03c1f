"""How a task tree runs on pipeflow's engine: each stored task as a luigi task.

A stored task becomes a :class:`TreeTask` (a ``luigi.Task`` whose ``requires()`` are its
dependencies, optional ones through :func:`pipeflow.optional`), answering the engine
through :class:`TreeContract`. So trees get the engine's ordering (dependencies, then
priority), workers, retries, timeouts, cancellation, events, run history and progress
bar, exactly as task classes do. What differs is where the state lives:

* *complete* means ``status == 'completed'`` in the task store;
* the task's *lock* is its claim in the store (:meth:`TaskStore.claim`): one process
  runs a task, others wait for it and reuse its result;
* the *commit* is the row update that stores the result (after its file, if any);
* failures, cancellations and what never ran reach the store through
  :class:`StoreSink`, an event consumer like the history.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import datetime as dt
import inspect
import os
import pathlib
import threading
import time
from collections.abc import Callable, Container, Mapping
from typing import Any, ClassVar

import luigi

from pipeflow import contract
from pipeflow.contract import Changes
from pipeflow.engines.executors import raise_in_thread
from pipeflow.errors import (
    PipeflowError,
    TaskCancelledError,
    TaskFailedError,
    TreeTaskError,
)
from pipeflow.events import Event, EventKind
from pipeflow.integrity import CommitRecord
from pipeflow.publishing import _STOP, Interrupted
from pipeflow.trees import executors as registry
from pipeflow.trees import model as m
from pipeflow.trees.store import TaskStore, open_store

#: seconds between looks at the store for a cancel made by another process
STORE_POLL = 0.5
#: seconds between looks at this process's cancel requests and the attempt's stop signal
POLL = 0.05

#: cancel requests made in this process: task id -> message (read by running attempts)
CANCELS: dict[str, str] = {}
#: the event loop each run's async executors run on (the caller's), by claim owner
LOOPS: dict[str, tuple[int, asyncio.AbstractEventLoop]] = {}
#: the stored tasks whose executors are running in this call chain: a run started from
#: inside an executor must not include them (it would wait for them, and they for it)
RUNNING: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "pipeflow_trees_running", default=())


class TreeTask(luigi.Task):
    """One stored task of a tree, as the engine runs it (made by :func:`tasks_for`).

    Not made by users: ``TaskManager.distribute_task_tree`` makes one per stored task.
    """

    store = luigi.Parameter(significant=False, description="the task store's file")
    key = luigi.Parameter(description="the stored task's id")
    claim = luigi.Parameter(default="", significant=False,
                            description="the owner its claim is made as (one per run)")

    _tree_params: ClassVar[list[tuple[str, luigi.Parameter]] | None] = None

    @classmethod
    def get_params(cls) -> list[tuple[str, luigi.Parameter]]:
        """Its parameters, computed once.

        luigi runs ``dir()`` on every call, several times per instance: most of the cost
        of making a tree's tasks.
        """
        if cls is not TreeTask:  # a subclass (none in pipeflow): luigi's own way
            return super().get_params()
        if TreeTask._tree_params is None:
            TreeTask._tree_params = super().get_params()
        return list(TreeTask._tree_params)

    @property
    def task_family(self) -> str:  # type: ignore[override]
        """Its executor id: what the history, the progress bar and the summary show."""
        row = self.__dict__.get("row")
        return row.executor_id if row is not None else "TreeTask"

    def requires(self) -> list[Any]:
        """Its dependencies (optional ones wrapped by :func:`pipeflow.optional`)."""
        return list(self.__dict__.get("deps", ()))

    def run(self) -> None:
        """Run its executor on its inputs merged with its dependencies' results."""
        store = open_store(self.store)
        row = store.need(self.key)
        spec = registry.get(row.executor_id)
        inputs = merged_inputs(store, row)
        if row.dependencies:
            store.set_inputs(self.key, inputs)
        pre, post, loop = self.__dict__.get("hooks", ((), (), None))
        for hook in pre:
            _hook(hook, loop, row)
        result = _call(spec, inputs, self)
        if isinstance(result, Mapping) and "error" in result:
            raise TreeTaskError(str(result["error"]), dict(result))
        sig = store.signature(self.key)
        if sig is not None and sig[0] == m.CANCELLED:  # while it ran: no post hook, no result
            now = store.get(self.key)
            raise TaskCancelledError((now.error if now else None) or "Cancelled by user")
        for hook in post:
            _hook(hook, loop, row, inputs, result)
        self.__dict__["result"] = result


def _hook(hook: Callable[..., Any], loop: asyncio.AbstractEventLoop | None, *args: Any) -> None:
    """Call a pre/post hook; an async one on the caller's loop (or a loop of its own)."""
    out = hook(*args)
    if inspect.isawaitable(out):
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(out, loop).result()  # type: ignore[arg-type]
        else:
            asyncio.run(out)  # type: ignore[arg-type]


def tasks_for(store: TaskStore, rows: Mapping[str, m.TaskModel], owner: str
              ) -> dict[str, TreeTask]:
    """One :class:`TreeTask` per stored task, its dependencies wired."""
    where = str(store.path)
    made: dict[str, TreeTask] = {}
    for task_id, row in rows.items():
        # made past luigi's instance cache: a run's tasks are its own (and not kept after it)
        t = type.__call__(TreeTask, store=where, key=task_id, claim=owner)
        t.__dict__["row"] = row
        t.__dict__["_pipeflow_name"] = f"{row.executor_id}[{task_id}]"
        made[task_id] = t
    for task_id, row in rows.items():
        made[task_id].__dict__["deps"] = [
            made[d["id"]] if d["required"] else contract.Optional(made[d["id"]])
            for d in row.dependencies]
    return made


def merged_inputs(store: TaskStore, row: m.TaskModel) -> dict[str, Any]:
    """The task's inputs with its direct dependencies' results merged in (apflow 0.18's rule).

    For each dependency in list order that completed with a result: a dict result with a
    ``result`` key contributes that value; a dict is merged into the inputs (its keys win
    over the task's own and earlier dependencies'); anything else is stored under the
    dependency's id.
    """
    inputs = dict(row.inputs or {})
    deps = store.many(d["id"] for d in row.dependencies)
    for d in row.dependencies:
        dep = deps.get(d["id"])
        if dep is None or dep.status != m.COMPLETED:
            continue
        r = dep.result
        if r is None:
            continue
        if isinstance(r, Mapping) and "result" in r:
            r = r["result"]
        if isinstance(r, Mapping):
            inputs.update(r)
        else:
            inputs[d["id"]] = r
    return inputs


# -- calling an executor ------------------------------------------------------------------------

def _call(spec: registry.ExecutorSpec, inputs: dict[str, Any], task: TreeTask) -> Any:
    """Run the executor; a cancel (this process's or the store's) stops a cancelable one.

    A plain function runs on a thread of its own, watched: a cancel (of a cancelable one),
    its timeout, or the run being stopped (Ctrl-C, SIGTERM) then ends the task even while
    the function is blocked in a long call (it goes on in the background; what it returns
    is dropped). Called in the engine's thread, a blocked function kept Ctrl-C waiting.
    """
    mark = RUNNING.set((*RUNNING.get(), task.key))
    try:
        return _call_marked(spec, inputs, task)
    finally:
        RUNNING.reset(mark)


def _call_marked(spec: registry.ExecutorSpec, inputs: dict[str, Any], task: TreeTask) -> Any:
    key, store = task.key, task.store
    if spec.is_async:
        return _await(spec, inputs, task)
    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()  # the thread sees RUNNING (a run it starts checks it)

    def body() -> None:
        try:
            box["result"] = ctx.run(spec.func, inputs)
        except BaseException as exc:  # noqa: BLE001 - handed to the attempt
            box["error"] = exc

    here = contextvars.copy_context()  # the function sees the attempt's context
    t = threading.Thread(target=here.run, args=(body,), name=f"trees-executor-{spec.id}",
                         daemon=True)
    t.start()

    def ended(seconds: float) -> bool:
        t.join(seconds)
        return not t.is_alive()

    try:
        _watch(ended, key, store, cancelable=spec.cancelable)
    except BaseException:
        if t.is_alive() and t.ident is not None:
            raise_in_thread(t.ident, Interrupted)
            t.join(0.2)  # a function in a long C call goes on in the background
        raise
    if "error" in box:
        raise box["error"]
    return _plain_result(spec, box.get("result"))


def _plain_result(spec: registry.ExecutorSpec, result: Any) -> Any:
    """What a plain executor returned; a coroutine means it should have been ``async def``."""
    if inspect.iscoroutine(result):
        result.close()  # never awaited: no "was never awaited" warning later
        raise TypeError(
            f"executor {spec.id!r} is a plain function but returned a coroutine "
            f"({result.__qualname__}), which pipeflow does not await: declare it with "
            f"'async def' (pipeflow awaits async executors), or return the value itself.")
    return result


def _await(spec: registry.ExecutorSpec, inputs: dict[str, Any], task: TreeTask) -> Any:
    """Run an async executor on the caller's event loop (or a loop of its own)."""
    coro = spec.func(inputs)
    if not inspect.isawaitable(coro):
        return coro
    coro = _marked(coro, RUNNING.get())
    home = LOOPS.get(task.claim)
    fut: concurrent.futures.Future[Any]
    if home is not None and home[0] == os.getpid() and home[1].is_running():
        fut = asyncio.run_coroutine_threadsafe(coro, home[1])  # type: ignore[arg-type,type-var]
    else:  # a worker process, or no caller loop: a loop of its own, in this thread
        return _on_a_loop_here(coro, task.key, task.store, spec.cancelable)
    try:
        _watch(lambda timeout: bool(concurrent.futures.wait([fut], timeout)[0]), task.key,
               task.store, cancelable=spec.cancelable)
    except BaseException:
        fut.cancel()
        raise
    try:
        return fut.result()
    except concurrent.futures.CancelledError as exc:
        raise TaskCancelledError(CANCELS.get(task.key) or "Task was cancelled") from exc


async def _marked(awaitable: Any, running: tuple[str, ...]) -> Any:
    """Await ``awaitable`` with :data:`RUNNING` set (a loop's task has its own context)."""
    RUNNING.set(running)
    return await awaitable


def _on_a_loop_here(coro: Any, key: str, store: str, cancelable: bool) -> Any:
    """Run ``coro`` on an event loop of its own in this thread, stopped as :func:`_watch` is.

    No thread is started: the engine stops an attempt by raising in its thread, which then
    reaches the loop (a thread of its own could neither be stopped nor, when started as the
    engine raised, be started at all).
    """
    loop = asyncio.new_event_loop()
    main = loop.create_task(coro)
    check = _checker(key, store, cancelable)
    try:
        while not main.done():
            loop.run_until_complete(asyncio.wait([main], timeout=POLL))
            if not main.done():
                check()
        return main.result()
    except asyncio.CancelledError as exc:
        raise TaskCancelledError(CANCELS.get(key) or "Task was cancelled") from exc
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        with contextlib.suppress(BaseException):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _watch(done: Callable[[float], bool], key: str, store: str, cancelable: bool = True
           ) -> None:
    """Wait until ``done(timeout)`` says the call ended; raise if stopped or cancelled."""
    check = _checker(key, store, cancelable)
    while not done(POLL):
        check()


def _checker(key: str, store: str, cancelable: bool = True) -> Callable[[], None]:
    """A check to call often: it raises when the attempt is stopped or the task cancelled."""
    stop = _STOP.get()
    next_look = time.monotonic() + STORE_POLL
    db = open_store(store)

    def check() -> None:
        nonlocal next_look
        if stop is not None:
            stop.check()
        if not cancelable:
            return
        if key in CANCELS:
            raise TaskCancelledError(CANCELS[key])
        if time.monotonic() >= next_look:
            next_look = time.monotonic() + STORE_POLL
            sig = db.signature(key)
            if sig is not None and sig[0] == m.CANCELLED:
                row = db.get(key)
                raise TaskCancelledError((row.error if row else None) or "Cancelled by user")

    return check


# -- the contract ---------------------------------------------------------------------------------

class Claim:
    """A stored task's claim, used by the engine as the task's lock."""

    def __init__(self, task: TreeTask) -> None:
        self.task = task
        self.folder = str(open_store(task.store).path.parent)

    def acquire(self) -> bool:
        """Claim the task; False while another live process runs it.

        A task completed meanwhile is not claimed (the engine then finds it complete and
        reuses its result).

        Raises:
            TaskCancelledError: it was cancelled before it could start.
            TaskFailedError: another process ran it and it failed.
        """
        t = self.task
        store = open_store(t.store)
        # A cancel request left from an earlier state of the task (cancelled while pending,
        # then set pending again) must not stop this run: forget it before claiming. A
        # cancel made now either finds the task pending (the claim then fails) or claimed
        # (its request is recorded after this line, and kept).
        CANCELS.pop(t.key, None)
        got = store.claim(t.key, t.claim)
        if got in ("claimed", m.COMPLETED):
            return True
        if got == "busy":
            return False
        row = store.get(t.key)
        error = row.error if row is not None else None
        if got == m.CANCELLED:
            raise TaskCancelledError(error or "Cancelled by user")
        raise TaskFailedError(
            f"{contract.describe(t)} was run by another process at the same time and "
            f"failed there: {error}", None)

    def release(self) -> None:
        """Nothing: the outcome (or the end of the run) settles the claim."""


class TreeContract:
    """What the engine needs from a :class:`TreeTask`: its ``TaskContract``."""

    group = False
    external = False
    #: a completed stored task stays completed when a task it depends on runs again
    #: (a re-run keeps completed tasks); the plan does not make it run again
    cascades = False
    changes = Changes(code=False, data=False)

    def __init__(self, task: TreeTask) -> None:
        self.task = task
        row = task.__dict__.get("row")
        if row is None:
            row = open_store(task.store).need(task.key)
            task.__dict__["row"] = row
        self.priority = row.priority if row.priority in m.PRIORITIES else m.DEFAULT_PRIORITY
        spec = registry.registered().get(row.executor_id)
        params = row.params if isinstance(row.params, Mapping) else {}
        self.retries = int(params.get("retries", spec.retries if spec else 0))
        self.retry_delay = float(params.get("retry_delay", spec.retry_delay if spec else 0))
        timeout = params.get("timeout", spec.timeout if spec else None)
        self.timeout = None if timeout is None else float(timeout)
        #: where the timeout is set, for the error when it fires (not the TreeTask class)
        self.timeout_setting = (f"@executor({row.executor_id!r}, timeout=...) or the task's "
                                f"params['timeout']")

    def requirements(self) -> list[Any]:
        """Its dependencies."""
        return self.task.requires()

    def record_path(self) -> str | None:
        """None: its state is a row of the task store, not a file."""
        return None

    def output_state(self) -> tuple[bool, str | None, CommitRecord | None]:
        """Complete when its stored status is ``completed``."""
        row = self.task.__dict__["row"]
        return row.status == m.COMPLETED, None, None

    def signature(self) -> Any:
        """(status, version) in the store, now; the task's snapshot is refreshed."""
        t = self.task
        store = open_store(t.store)
        sig = store.signature(t.key)
        if sig is not None and sig[0] == m.COMPLETED:
            fresh = store.get(t.key)
            if fresh is not None:
                t.__dict__["row"] = fresh
        return sig

    def lock(self) -> Claim:
        """Its claim in the store."""
        return Claim(self.task)

    def prepare_run(self) -> Container[pathlib.Path]:
        """Nothing to uncommit; no file is staged."""
        return ()

    def finish_run(self, staged: Any) -> bool:
        """Store the result and mark the task completed (its commit).

        Raises:
            TaskCancelledError: it was cancelled while it ran (its result is discarded).
        """
        t = self.task
        store = open_store(t.store)
        result = t.__dict__.pop("result", None)
        if not store.complete(t.key, t.claim, result):
            row = store.get(t.key)
            if row is not None and row.status == m.CANCELLED:
                raise TaskCancelledError(row.error or "Cancelled by user")
            raise TaskFailedError(
                f"{contract.describe(t)} finished, but its claim in the task store was lost "
                f"(status now {row.status if row else 'deleted'!r}); its result was not "
                f"kept.", None)
        return True

    def abort_run(self) -> None:
        """Nothing to undo: the failure is stored by :class:`StoreSink`."""

    def clean_stopped(self) -> None:
        """Nothing to undo."""

    def clean_orphans(self, scan: Callable[[pathlib.Path], list[str]]) -> None:
        """No temp files."""

    def memory_outputs(self) -> dict[Any, Any]:
        """None."""
        return {}


contract.register(TreeTask, TreeContract)


# -- what the engine says, into the store and the stream ----------------------------------------

class StoreSink:
    """Writes what the engine reports to the store: failures, cancellations.

    Completions are written by the attempt itself (its commit); a task skipped because a
    required dependency failed or was cancelled stays ``pending`` (as in apflow).
    """

    def __init__(self, store: TaskStore, owner: str) -> None:
        self.store = store
        self.owner = owner

    def __call__(self, event: Event) -> None:
        """Store a failure or a cancellation."""
        task = event.task
        if not isinstance(task, TreeTask):
            return
        if event.kind is EventKind.TASK_FAILED:
            err = event.error
            if isinstance(err, TaskCancelledError):
                return
            result = err.result if isinstance(err, TreeTaskError) else None
            self.store.fail(task.key, self.owner, _error_text(err), result)
        elif event.kind is EventKind.TASK_CANCELLED and not event.reason:
            # the whole run was cancelled (Ctrl-C, a cancel token): what it was running
            self.store.fail(task.key, self.owner, "the run was cancelled while it ran",
                            status=m.CANCELLED)


def _error_text(err: BaseException | None) -> str:
    if err is None:
        return "failed"
    if isinstance(err, (TreeTaskError, PipeflowError)):
        return str(err)
    text = str(err)
    if not isinstance(err, Exception):  # SystemExit(3), KeyboardInterrupt: "3" says nothing
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if text else type(err).__name__


class StreamSink:
    """Turns engine events into apflow's streaming events, put on the caller's queue."""

    def __init__(self, store: TaskStore, root_id: str,
                 put: Callable[[dict[str, Any]], None]) -> None:
        self.store = store
        self.root_id = root_id
        self.put = put

    def __call__(self, event: Event) -> None:
        """Send the apflow event for an engine event (if it has one)."""
        task = event.task
        kind = event.kind
        stamp = dt.datetime.fromtimestamp(event.time, dt.timezone.utc).isoformat()
        if kind is EventKind.RUN_STARTED:
            self.put({"type": "progress", "task_id": self.root_id, "status": m.IN_PROGRESS,
                      "progress": 0.0, "message": "Task tree execution started",
                      "timestamp": stamp})
            return
        if not isinstance(task, TreeTask):
            return
        base = {"task_id": task.key, "name": task.__dict__["row"].name, "timestamp": stamp}
        if kind is EventKind.TASK_STARTED:
            self.put({"type": "task_start", "status": m.IN_PROGRESS, **base})
        elif kind is EventKind.TASK_COMPLETED:
            row = self.store.get(task.key)
            self.put({"type": "task_completed", "status": m.COMPLETED,
                      "result": row.result if row else None, "final": True, **base})
        elif kind is EventKind.TASK_FAILED:
            self.put({"type": "task_failed", "status": m.FAILED,
                      "error": _error_text(event.error), "final": True, **base})
        elif kind is EventKind.TASK_CANCELLED:
            self.put({"type": "task_failed", "status": m.CANCELLED,
                      "error": event.reason or "Task was cancelled", "final": True, **base})

    def finish(self, status: str, progress: float) -> None:
        """The last event: the tree's status."""
        stamp = dt.datetime.now(dt.timezone.utc).isoformat()
        base = {"task_id": self.root_id, "timestamp": stamp}
        if status == m.COMPLETED:
            self.put({"type": "final", "status": m.COMPLETED,
                      "result": {"progress": progress}, "final": True, **base})
        elif status == m.FAILED:
            self.put({"type": "final", "status": m.FAILED,
                      "error": "Task tree execution failed", "final": True, **base})
        else:
            self.put({"type": "progress", "status": status, "progress": progress,
                      "message": f"Task tree execution ended with the tree {status}", **base})
