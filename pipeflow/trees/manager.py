"""The task manager: runs task trees on pipeflow's engine, streams their events, cancels.

``distribute_task_tree(tree)`` runs every task of the tree (and any stored task they
depend on that is not in it) in dependency order, priorities ordering the ready ones; it
returns when nothing more can start. A failed or cancelled required dependency leaves its
dependents ``pending``; an optional one does not hold them back. Calling it again re-runs
the failed and cancelled tasks and what waited for them, and reuses completed results.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pipeflow import operations
from pipeflow.engines import CancelToken, LocalEngine
from pipeflow.errors import (
    CycleError,
    ParameterError,
    TaskNotFoundError,
    UnknownExecutorError,
)
from pipeflow.events import Event, RunResult
from pipeflow.options import RunOptions
from pipeflow.trees import executors as registry
from pipeflow.trees import model as m
from pipeflow.trees.node import TaskTreeNode
from pipeflow.trees.repository import TaskRepository, task_id_of
from pipeflow.trees.running import CANCELS, LOOPS, RUNNING, StoreSink, StreamSink, tasks_for
from pipeflow.trees.store import Owner, TaskStore, open_store

T = TypeVar("T")

#: how many tasks of a tree run at once by default (on threads)
DEFAULT_WORKERS = 8


def create_session(path: str | os.PathLike[str] | None = None) -> TaskStore:
    """The task store: an SQLite file every process on this machine can share.

    Args:
        path: the file (created when missing). Default: ``tasks.db`` in the data dir's
            ``.pipeflow`` folder (``pipeflow.set_dir`` moves it).

    Returns:
        The store, to give to :class:`TaskManager` (or :class:`TaskCreator`).

    Raises:
        ParameterError: ``path`` is not a file path (a URL, a folder, empty).
        TaskStoreError: the file cannot be opened as an SQLite database.

    Example:
        >>> db = create_session()                          # doctest: +SKIP
        >>> db = create_session("/srv/jobs/tasks.db")      # doctest: +SKIP
    """
    return open_store(path)


class StreamingCallbacks:
    """Where ``distribute_task_tree_with_streaming`` sends its events.

    Example:
        >>> queue = asyncio.Queue()                                   # doctest: +SKIP
        >>> tm.streaming_callbacks.set_streaming_context(queue)       # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] | None = None
        self.context: Any = None
        self.callbacks: list[Callable[[dict[str, Any]], Any]] = []

    def set_streaming_context(self, queue: asyncio.Queue[dict[str, Any]] | None,
                              context: Any = None) -> None:
        """Send events to ``queue`` (an ``asyncio.Queue``; None: stop sending)."""
        if queue is not None and not hasattr(queue, "put_nowait"):
            raise ParameterError(
                f"set_streaming_context() takes an asyncio.Queue, not {queue!r}.")
        self.queue = queue
        self.context = context

    def add_callback(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Also call ``callback(event)`` for each event (on the caller's event loop)."""
        if not callable(callback):
            raise ParameterError(f"add_callback() takes a function, not {callback!r}.")
        self.callbacks.append(callback)

    async def deliver(self, event: dict[str, Any]) -> None:
        """Hand one event to the queue and the callbacks (on the event loop).

        ``await queue.put(event)``, as apflow: a full bounded queue holds the run's later
        events back until its reader takes one; none is dropped. Async callbacks are
        awaited, in order.
        """
        queue = self.queue
        if queue is not None:
            if isinstance(queue, asyncio.Queue):
                await queue.put(event)
            else:
                queue.put_nowait(event)
        for cb in self.callbacks:
            out = cb(event)
            if inspect.isawaitable(out):
                await out


class TaskManager:
    """Runs task trees stored in a task store.

    Args:
        db: the task store (:func:`create_session`).
        root_task_id: accepted for apflow compatibility (unused).
        pre_hooks: functions called with each task (a :class:`TaskModel`) before its
            executor runs (plain or async).
        post_hooks: functions called with ``(task, inputs, result)`` after it completed.
        executor_instances: accepted for apflow compatibility (unused).
        use_demo: accepted for apflow compatibility; True is refused (no demo results).
        workers: how many tasks run at once.
        executor: ``'thread'`` (default: async executors run on the caller's event loop,
            plain ones on threads) or ``'process'`` (a pool of forked worker processes, for
            CPU-bound executors; async executors then run on a loop in the worker).

    Attributes:
        task_repository: the stored tasks (:class:`TaskRepository`).
        streaming_callbacks: where streamed events go (:class:`StreamingCallbacks`).

    Example:
        >>> tm = TaskManager(create_session())                # doctest: +SKIP
        >>> await tm.distribute_task_tree(root)               # doctest: +SKIP
    """

    def __init__(self, db: TaskStore, root_task_id: str | None = None,
                 pre_hooks: Sequence[Callable[..., Any]] | None = None,
                 post_hooks: Sequence[Callable[..., Any]] | None = None,
                 executor_instances: Any = None, use_demo: bool = False, *,
                 workers: int = DEFAULT_WORKERS, executor: str = "thread") -> None:
        if use_demo:
            raise ParameterError(
                "use_demo=True is not supported: pipeflow runs the real executors. Register "
                "stand-ins with @executor for a demo.")
        if executor not in ("thread", "process"):
            raise ParameterError(
                f"executor must be 'thread' or 'process' for task trees, not {executor!r}.")
        RunOptions(workers=workers, executor=executor)
        for kind, hooks, call in (("pre_hooks", pre_hooks, "hook(task)"),
                                  ("post_hooks", post_hooks, "hook(task, inputs, result)")):
            if hooks is not None and (isinstance(hooks, (str, bytes)) or callable(hooks)
                                      or not isinstance(hooks, Sequence)):
                raise ParameterError(
                    f"{kind} of TaskManager is a list of functions, not {hooks!r}: "
                    f"TaskManager(db, {kind}=[my_hook]).")
            bad = [h for h in hooks or () if not callable(h)]
            if bad:
                raise ParameterError(
                    f"{kind} of TaskManager holds {bad[0]!r}, which is not a function: each "
                    f"is called as {call} (plain or async).")
        self.db = db
        self.task_repository = TaskRepository(db)
        self.streaming_callbacks = StreamingCallbacks()
        self.root_task_id = root_task_id
        self.pre_hooks = list(pre_hooks or ())
        self.post_hooks = list(post_hooks or ())
        self.workers = int(workers)
        self.executor = executor
        self.last_result: RunResult | None = None

    # -- running --------------------------------------------------------------------------------
    async def distribute_task_tree(self, task_tree: TaskTreeNode, use_callback: bool = True,
                                   *, workers: int | None = None, progress: bool | None = None,
                                   callbacks: Sequence[Callable[[Event], None]] = (),
                                   execution_summary: bool = False) -> TaskTreeNode:
        """Run the tree; return it (its nodes' tasks refreshed) when nothing more can start.

        Args:
            task_tree: the tree (its root node).
            use_callback: accepted for apflow compatibility (events always flow).
            workers: tasks run at once (default: the manager's).
            progress: show a progress bar (default: when a person is watching).
            callbacks: functions called with every engine :class:`~pipeflow.events.Event`.
            execution_summary: print pipeflow's execution summary at the end.

        Raises:
            UnknownExecutorError: a task names no registered executor (nothing ran).
            TaskNotFoundError: a dependency id names no stored task (nothing ran).
            CycleError: the dependencies have a cycle (nothing ran).
        """
        await self._run(task_tree, None, workers, progress, callbacks, execution_summary)
        return task_tree

    async def distribute_task_tree_with_streaming(
            self, task_tree: TaskTreeNode, use_callback: bool = True, *,
            workers: int | None = None, progress: bool | None = None,
            callbacks: Sequence[Callable[[Event], None]] = (),
            execution_summary: bool = False) -> None:
        """:meth:`distribute_task_tree`, sending events to ``streaming_callbacks``' queue.

        Events are dicts with ``type`` (``progress``, ``task_start``, ``task_completed``,
        ``task_failed``, ``final``), ``task_id``, ``status``, ``timestamp`` (UTC ISO) and,
        by type, ``result``, ``error``, ``progress``, ``message``, ``final``.

        Every event is delivered (``await queue.put(event)``, in order) before this
        returns, so a bounded queue needs a reader running meanwhile (another task), as in
        apflow.
        """
        loop = asyncio.get_running_loop()
        sc = self.streaming_callbacks
        # the engine's thread hands events to this loop in order; one task delivers them
        # (awaiting a full queue), so none is lost and their order is kept
        inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def put(event: dict[str, Any] | None) -> None:
            loop.call_soon_threadsafe(inbox.put_nowait, event)

        async def pump() -> None:
            while (event := await inbox.get()) is not None:
                await sc.deliver(event)

        pumping = asyncio.ensure_future(pump())
        sink = StreamSink(self.db, task_tree.task.id, put)
        try:
            await self._run(task_tree, sink, workers, progress, callbacks, execution_summary)
        except BaseException:
            pumping.cancel()
            raise
        sink.finish(task_tree.calculate_status(), task_tree.calculate_progress())
        put(None)
        await pumping  # every event is delivered before this returns

    async def _run(self, tree: TaskTreeNode, stream: StreamSink | None, workers: int | None,
                   progress: bool | None, callbacks: Sequence[Callable[[Event], None]],
                   summary: bool) -> None:
        if not isinstance(tree, TaskTreeNode):
            raise ParameterError(
                f"distribute_task_tree() takes a TaskTreeNode, not {tree!r}: "
                f"distribute_task_tree(TaskTreeNode(task)).")
        n = self.workers if workers is None else workers
        RunOptions(workers=n)  # a bad count is a ParameterError, before anything runs
        rows = self.prepare(tree)
        owner = Owner.make(uuid.uuid4().hex)
        loop = asyncio.get_running_loop()
        LOOPS[owner] = (os.getpid(), loop)
        token = CancelToken()
        made = tasks_for(self.db, rows, owner)
        for t in made.values():
            t.__dict__["hooks"] = (self.pre_hooks, self.post_hooks, loop)
        sinks: list[Callable[[Event], None]] = [StoreSink(self.db, owner)]
        if stream is not None:
            sinks.append(stream)
        sinks.extend(callbacks)
        # one worker: the tasks run one by one on the run's own thread (as task classes do
        # with workers=1), not each on a thread started for it: that cost more per task
        # than the task's own store reads and writes (see docs/benchmarks.md)
        kind = self.executor if n > 1 else None
        options = RunOptions(workers=n, executor=kind, cancel=token, callbacks=sinks,
                             progress=progress, abort=False, execution_summary=summary,
                             engine=LocalEngine(n, kind, token))
        roots = [made[n.task.id] for n in tree]
        generation = self.db.generation
        job = asyncio.ensure_future(asyncio.to_thread(operations.run_with, roots, options))
        try:
            self.last_result = await asyncio.shield(job)
        except asyncio.CancelledError:
            # the caller gave up (task.cancel(), Ctrl-C): stop the run too, and wait until
            # the engine has stopped its running tasks and stored them as cancelled; only
            # then are this run's remaining claims given back (never-started tasks stay
            # pending). A second cancel stops the waiting.
            token.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.shield(job)
            raise
        finally:
            for task_id in made:
                CANCELS.pop(task_id, None)
            LOOPS.pop(owner, None)
            self.db.release_all(owner)  # claims of tasks it did not finish (it ended early)
        if self.db.generation != generation:  # what the run stored went to a deleted file
            raise self.db.replaced_error()
        fresh = self.db.many(n.task.id for n in tree)
        for node in tree:
            node.task = fresh.get(node.task.id, node.task)

    def prepare(self, tree: TaskTreeNode) -> dict[str, m.TaskModel]:
        """Check the tree and mark its failed and cancelled tasks for a re-run.

        Returns:
            Every task the run covers (the tree's, and stored tasks they depend on), by id.

        Raises:
            UnknownExecutorError, TaskNotFoundError, CycleError: before anything ran.
        """
        ids = [n.task.id for n in tree]
        rows = self.db.many(ids)
        missing = [i for i in ids if i not in rows]
        if missing:
            raise TaskNotFoundError(
                f"the tree's task {missing[0]!r} is not in the task store "
                f"{str(self.db.path)!r} (deleted, or made with another session).", missing[0])
        # stored tasks the tree depends on join it (as task classes' requires() do)
        todo = [d["id"] for r in rows.values() for d in r.dependencies if d["id"] not in rows]
        while todo:
            found = self.db.many(todo)
            gone = [i for i in todo if i not in found]
            if gone:
                who = next(r for r in rows.values()
                           if any(d["id"] == gone[0] for d in r.dependencies))
                raise TaskNotFoundError(
                    f"task {who.name!r} ({who.id}) depends on {gone[0]!r}, which is not in "
                    f"the task store. Fix its dependencies (update_task) or create that "
                    f"task.", gone[0])
            rows.update(found)
            todo = [d["id"] for r in found.values() for d in r.dependencies
                    if d["id"] not in rows]
        _check_acyclic(rows)
        mine = [i for i in RUNNING.get() if i in rows]
        if mine:
            r = rows[mine[0]]
            raise ParameterError(
                f"the executor of task {r.name!r} ({r.id}) started a run of a tree that "
                f"{'holds that task' if r.id in ids else 'depends on that task'}: the run "
                f"would wait for the task to finish, and the task for the run, for ever. "
                f"Run only tasks that do not need it (e.g. new tasks created for the inner "
                f"run), or give it dependencies instead of running them from its executor.")
        known = registry.registered()
        for r in rows.values():
            if r.status != m.COMPLETED:
                m.check_run_params(r.params, f"task {r.name!r} ({r.id})")
            if r.status != m.COMPLETED and r.executor_id not in known:
                raise UnknownExecutorError(registry.unknown_message(
                    r.executor_id, f"task {r.name!r} ({r.id}) cannot run: "))
        archived = [r for r in rows.values() if r.origin_type == "archive"
                    and r.status != m.COMPLETED]
        if archived:
            raise ParameterError(
                f"task {archived[0].id!r} is an archive that did not complete; archives are "
                f"read-only and never run. Copy it (TaskCreator.from_copy) to run it.")
        # failed tasks, and tasks stopped while they ran, run again; a task cancelled
        # before it ever started stays cancelled (set its status to pending to run it)
        redo = [r.id for r in rows.values() if r.status == m.FAILED
                or (r.status == m.CANCELLED and r.started_at is not None)]
        if redo:
            self.db.reset_for_rerun(redo)
            rows.update(self.db.many(redo))
        return rows

    # -- cancelling ------------------------------------------------------------------------------
    async def cancel_task(self, task_id: str, error_message: str | None = None
                          ) -> dict[str, Any]:
        """Cancel a task: a pending one never starts; a running cancelable one is stopped.

        A running task whose executor is not cancelable is marked cancelled at once; it
        finishes, and its result is discarded. Tasks requiring a cancelled task stay
        ``pending``.

        Returns:
            ``{"status": "cancelled", "message": ...}``, or ``{"status": "failed",
            "message": ..., "error"|"current_status": ...}`` when there is nothing to
            cancel (never raises for that).
        """
        return self.cancel_now(task_id, error_message)

    def cancel_now(self, task_id: str, error_message: str | None = None) -> dict[str, Any]:
        """:meth:`cancel_task`, without ``await``."""
        if error_message is not None and not isinstance(error_message, str):
            raise ParameterError(
                f"error_message of cancel_task() is the text stored as the task's error, not "
                f"{error_message!r}: cancel_task(task_id, error_message='why').")
        row = self.db.get(task_id_of(task_id))
        if row is None:
            return {"status": "failed", "message": f"Task {task_id} not found",
                    "error": "Task not found"}
        if row.status in m.FINAL:
            return {"status": "failed",
                    "message": f"Task {task_id} is already {row.status}, cannot cancel",
                    "current_status": row.status}
        message = error_message or "Cancelled by user"
        changed = self.db.update(task_id, {"status": m.CANCELLED, "error": message,
                                           "completed_at": m.dt.datetime.now(
                                               m.dt.timezone.utc)},
                                 when={"status": (m.PENDING, m.IN_PROGRESS)})
        if not changed:  # it finished meanwhile
            now = self.db.get(task_id)
            status = now.status if now else "deleted"
            return {"status": "failed",
                    "message": f"Task {task_id} is already {status}, cannot cancel",
                    "current_status": status}
        CANCELS[task_id] = message
        return {"status": "cancelled", "message": message}


def run_sync(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code (a script, a notebook cell).

    Runs it with ``asyncio.run``; when an event loop already runs in this thread (a
    notebook), runs it on a new loop in a helper thread and waits.

    Example:
        >>> task = run_sync(tm.task_repository.create_task(name="fetch"))  # doctest: +SKIP
        >>> run_sync(tm.distribute_task_tree(TaskTreeNode(task)))          # doctest: +SKIP
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_wrap(awaitable))
    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()  # the helper thread sees this thread's context

    def body() -> None:
        try:
            box["value"] = ctx.run(asyncio.run, _wrap(awaitable))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=body, name="pipeflow-run-sync")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


async def _wrap(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _check_acyclic(rows: dict[str, m.TaskModel]) -> None:
    """Raise :class:`CycleError` naming a cycle among the dependencies of ``rows``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in rows:
        if start in state:
            continue
        path: list[str] = []
        stack: list[tuple[str, Any]] = [(start, iter(rows[start].dependencies))]
        state[start] = 1
        path.append(start)
        while stack:
            node, deps = stack[-1]
            nxt = next(deps, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            d = nxt["id"]
            if state.get(d) == 1:
                cycle = path[path.index(d):] + [d]
                names = " -> ".join(f"{rows[i].name}({i})" for i in cycle)
                raise CycleError(
                    f"the tasks' dependencies have a cycle, so none of them can ever run: "
                    f"{names}. Remove one of these dependencies (update_task). Nothing ran.",
                    cycle)
            if d not in state and d in rows:
                state[d] = 1
                path.append(d)
                stack.append((d, iter(rows[d].dependencies)))
