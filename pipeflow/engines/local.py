"""The embedded engine: runs a plan on this machine, in dependency order.

* Dependencies decide the order; among tasks that are ready at the same time the lowest
  ``priority`` (0 urgent ... 3 low, 2 by default) starts first, ties in graph order.
* When a task fails, every task that requires it (transitively) is skipped; a task that
  requires it only optionally runs anyway; tasks that do not depend on it still run.
* ``workers=1`` runs tasks in this process, one at a time (breakpoints work). With more
  workers, tasks run in a pool of forked worker processes by default (real CPU
  parallelism), or in threads with ``executor='thread'``.
* A ``run()`` that yields requirements (luigi's dynamic dependencies) is suspended when
  they are not complete: they join the run as ordinary tasks (events, summary, history,
  workers, locks), and the task runs again from the start once they are done.
* A run can be cancelled (:class:`CancelToken`, Ctrl-C); running tasks are stopped, their
  partial outputs removed. Tasks may be retried (``retries``/``retry_delay``) and timed
  out (``timeout``).
"""

from __future__ import annotations

import heapq
import inspect
import multiprocessing
import os
import pathlib
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import luigi
from luigi.task import flatten, getpaths

from pipeflow import cache, fingerprint
from pipeflow import graph as graphs
from pipeflow.contract import TaskContract, adapt
from pipeflow.engines.executors import (
    CancelToken,
    NotRetried,
    Outcome,
    Work,
    make_executor,
)
from pipeflow.errors import (
    CycleError,
    NoOutputWarning,
    PipeflowError,
    RequirementError,
    RunCancelledError,
    SaveError,
    TaskCancelledError,
    TaskLockedError,
    TaskTimeoutError,
    UnsafePathError,
    warn,
)
from pipeflow.events import Event, EventKind, RunResult, Sink
from pipeflow.options import RunOptions
from pipeflow.parameters import redact, redact_error
from pipeflow.plan import Plan, Status
from pipeflow.publishing import os_fix, os_reason, staging

#: seconds between attempts to take the lock of a task running elsewhere
LOCK_POLL = 0.05
#: the reason on the completed event of a task whose run() saved nothing
NO_OUTPUT = "run() saved no output: it stays incomplete and runs again next time"


@dataclass
class _Running:
    deadline: float | None


class LocalEngine:
    """Runs tasks on this machine.

    Args:
        workers: how many tasks may run at the same time.
        executor: ``'process'`` (default with several workers: a pool of forked worker
            processes) or ``'thread'``; with ``workers=1`` tasks run in this process unless
            an executor is given.
        cancel: a token to cancel the run with.
        if_locked: what to do when a task is being run by another process (or thread):
            ``'wait'`` (default) for it to finish and reuse its output, or ``'fail'`` the
            task at once with :class:`~pipeflow.errors.TaskLockedError`.

    Example:
        >>> result = LocalEngine(workers=2).run(plan, sinks=[])  # doctest: +SKIP
    """

    def __init__(self, workers: int = 1, executor: str | None = None,
                 cancel: CancelToken | None = None, if_locked: str = "wait") -> None:
        RunOptions(workers=workers, executor=executor, if_locked=if_locked)  # checks them
        self.if_locked = if_locked
        self.workers = int(workers)
        if executor is None:
            executor = "process" if self.workers > 1 else "inline"
        if executor == "process" and "fork" not in multiprocessing.get_all_start_methods():
            raise PipeflowError(
                "process workers need the 'fork' start method, which this platform lacks. "
                "Use executor='thread' (or workers=1)."
            )
        self.executor = executor
        self.cancel = cancel or CancelToken()

    # -- the run loop ---------------------------------------------------------------------
    def run(self, plan: Plan, sinks: Sequence[Sink]) -> RunResult:
        """Run every pending task of ``plan`` needed by its roots."""
        result = RunResult(uuid.uuid4().hex[:12])
        all_sinks: list[Sink] = [result, *sinks]

        def emit(kind: EventKind, task: luigi.Task | None = None, **kw: Any) -> None:
            event = Event(kind, result.run_id, task=task, **kw)
            for sink in all_sinks:
                sink(event)

        run = self._new_run(plan, emit)
        emit(EventKind.RUN_STARTED, total=len(run.to_run))
        died: BaseException | None = None
        try:
            with graphs.running(plan.graph):  # the commits read their upstream tasks here
                run.loop()
        except BaseException as exc:  # the run ends with it: its history must say so
            died = exc
            self._ending(exc, result)
            raise
        finally:
            emit(EventKind.RUN_FINISHED, error=died)
        return result

    def _new_run(self, plan: Plan, emit: Callable[..., None]) -> _Run:
        """The state of one run (another engine keeps this one's machinery, but not its turns)."""
        return _Run(self, plan, emit)

    def _ending(self, exc: BaseException, result: RunResult) -> None:
        """Called with the exception that ends a run early, and the run's result so far."""


class _Run:
    """The state of one run: what waits, what is ready, what runs."""

    def __init__(self, engine: LocalEngine, plan: Plan, emit: Callable[..., None]):
        self.engine = engine
        self.plan = plan
        self.g = plan.graph
        self.emit = emit
        g = self.g
        # The plan says what runs (preview, the summary and the progress bar say the same)
        self.to_run: set[int] = set(plan.to_run)
        self.up_to_date: list[int] = list(plan.up_to_date)
        # Code fingerprints for the commit records, once, here: forked workers inherit
        # them instead of each hashing its task class's code again
        self.contracts = {i: adapt(g.nodes[i]) for i in self.to_run}
        firsts = {type(c.task): c for c in self.contracts.values() if c.record_path()}
        for cls, c in firsts.items():
            if c.changes.tracks_code:
                fingerprint.code_fingerprint(cls, c.changes.version)
        self.priority = {i: c.priority for i, c in self.contracts.items()}
        self.waiting = {i: sum(1 for d in g.deps[i] if d in self.to_run) for i in self.to_run}
        self.ready: list[tuple[int, int]] = [(self.priority[i], i)
                                             for i, n in self.waiting.items() if n == 0]
        heapq.heapify(self.ready)
        self.delayed: list[tuple[float, int]] = []  # (when, pos) retries waiting
        self.attempts: dict[int, int] = {}
        self.finished: set[int] = set()
        self.done: set[int] = set(self.up_to_date)  # finished well (or found complete)
        self.running: dict[int, _Running] = {}
        # Requirements yielded by run(): what each suspended task waits for, who waits
        # for each requirement, and how often a task found its requirements done already
        self.yielded: dict[int, set[int]] = {}
        self.yielders: dict[int, list[int]] = {}
        self.resumed: dict[int, int] = {}
        self.executor = make_executor(engine.executor, _WORK, engine.cancel)
        self.locks: dict[int, Any] = {}  # task locks held, by position
        self.waited: set[int] = set()  # tasks that found their lock taken
        self.temps: dict[pathlib.Path, list[str]] = {}  # temp files per folder, listed once
        # The commit record of each task to run whose own outputs were complete (it runs
        # because an upstream task does), as it was when planned: if it has changed when
        # the task is about to start, another process has rerun the task meanwhile. A task
        # planned without a valid record that has one by then was run elsewhere too.
        self.records = {i: _signature(self.contracts[i]) for i in self.to_run if plan.own[i]}

    # -- transitions ------------------------------------------------------------------------
    def _join(self, pos: int) -> None:
        """Make the task at ``pos`` (new in the graph) one of this run's tasks to run."""
        c = self.contracts[pos] = adapt(self.g.nodes[pos])
        self.priority[pos] = c.priority
        self.to_run.add(pos)
        if self.plan.own[pos]:
            self.records[pos] = _signature(c)

    def _release(self, i: int, only_optional: bool = False) -> None:
        """``i`` has finished: its dependents wait for one task less."""
        if not only_optional:
            for j in self.yielders.pop(i, ()):
                waits = self.yielded.get(j)
                if waits is None:  # skipped meanwhile: another of its yields failed
                    continue
                waits.discard(i)
                if not waits:
                    del self.yielded[j]
                    heapq.heappush(self.ready, (self.priority[j], j))
        for j in self.g.dependents[i]:
            if only_optional and i not in self.g.optional[j]:
                continue
            if j in self.waiting and j not in self.finished:
                self.waiting[j] -= 1
                if self.waiting[j] == 0:
                    heapq.heappush(self.ready, (self.priority[j], j))

    def _finish(self, i: int, out: Outcome) -> None:
        task = self.g.nodes[i]
        self.running.pop(i, None)
        lock = self.locks.pop(i, None)
        if lock is not None:
            lock.release()
        if out.cancelled:
            self.finished.add(i)
            self.emit(EventKind.TASK_CANCELLED, task)
            return
        if isinstance(out.error, TaskCancelledError):  # this task alone was cancelled
            self.finished.add(i)
            self.emit(EventKind.TASK_CANCELLED, task, reason=str(out.error))
            self._doom(i, f"upstream task {graphs.describe(task)} was cancelled")
            return
        if out.error is None and out.needs:
            self._suspend(i, out.needs)
            return
        if out.error is None:
            cache.data.update(out.memory)
            self.finished.add(i)
            self.done.add(i)
            self.plan.ran(i)
            reason = None
            if not out.saved:
                reason = NO_OUTPUT
                warn(f"{graphs.describe(task)}: run() finished without saving any of its "
                     f"outputs, so it stays incomplete and runs again next time. If it should "
                     f"produce data, call self.save(...) in run().", NoOutputWarning)
            self.emit(EventKind.TASK_COMPLETED, task, usage=out.usage, reason=reason)
            self._release(i)
            return
        c = self.contracts[i]
        retries = c.retries
        tried = self.attempts.get(i, 0)  # 0: it failed before run() was called
        if 0 < tried <= retries and not isinstance(out.error, (NotRetried, TaskLockedError)):
            delay = c.retry_delay
            self.emit(EventKind.TASK_RETRYING, task, error=out.error, traceback=out.traceback,
                      usage=out.usage,
                      reason=f"attempt {self.attempts[i]} of {retries + 1} failed; "
                             f"retrying in {delay:g}s")
            heapq.heappush(self.delayed, (time.monotonic() + delay, i))
            return
        self._fail(i, out)

    def _fail(self, i: int, out: Outcome) -> None:
        """``i`` failed for good: report it and skip what requires it."""
        task = self.g.nodes[i]
        self.finished.add(i)
        self.emit(EventKind.TASK_FAILED, task, error=out.error, traceback=out.traceback,
                  usage=out.usage)
        self._doom(i, f"upstream task {graphs.describe(task)} failed")

    def _doom(self, i: int, reason: str) -> None:
        """``i`` did not finish well: skip every task that requires it, transitively.

        A task whose ``run()`` yielded ``i`` requires it too.
        """
        g, yielders = self.g, self.yielders
        seen, stack = {i}, [i]
        while stack:
            k = stack.pop()
            for j in (*g.required_dependents[k], *yielders.get(k, ())):
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        doomed = [j for j in sorted(seen - {i}) if j in self.to_run and j not in self.finished]
        for j in doomed:
            self.finished.add(j)
            self.yielded.pop(j, None)
            self.emit(EventKind.TASK_SKIPPED, g.nodes[j], reason=reason)
        # Tasks needing these only optionally go on without them (each released once).
        for j in [i, *doomed]:
            self._release(j, only_optional=True)

    def _suspend(self, i: int, needs: list[Any]) -> None:
        """``run()`` of ``i`` yielded requirements that are not complete: they join the run.

        ``i`` waits for them and then runs again from the start (as in luigi).
        """
        task = self.g.nodes[i]
        self.attempts[i] -= 1  # not a failed attempt: retries are not used up
        try:
            positions, new, complete = self.plan.extend(needs, self.to_run | self.done)
        except PipeflowError as exc:  # a cycle, or a requires() returning a non-task
            self._fail(i, _failure(exc, task))  # retrying cannot fix either
            return
        name = graphs.describe(task)
        for p in sorted(new):
            self._join(p)
        for p in sorted(new):
            self.emit(EventKind.TASK_ADDED, self.g.nodes[p], total=len(self.to_run),
                      reason=f"required by {name} (yielded by its run())")
        for p in complete:
            if p not in self.done:
                self.done.add(p)
                self.emit(EventKind.TASK_UP_TO_DATE, self.g.nodes[p])
        for p in sorted(new):
            self.waiting[p] = sum(1 for d in self.g.deps[p]
                                  if d in self.to_run and d not in self.finished)
        for p in sorted(new):
            bad = [d for d in self.g.required(p)
                   if d in self.finished and d not in self.done]
            if bad:
                self._finish_skipped(p, bad[0])
            elif self.waiting[p] == 0:
                heapq.heappush(self.ready, (self.priority[p], p))
        failed = [p for p in positions if p in self.finished and p not in self.done]
        if failed:
            self._finish_skipped(i, failed[0])
            return
        waits = {p for p in positions if p not in self.done}
        if not waits:
            # The run has them all done, but run() found one incomplete: once may be a
            # race with another process; twice is a task whose complete() disagrees.
            self.resumed[i] = self.resumed.get(i, 0) + 1
            if self.resumed[i] > 1:
                self._fail(i, _failure(RequirementError(
                    f"{name}: its run() yields {_listed(self.g.nodes[p] for p in positions)}, "
                    f"which this run completed, yet complete() still says one is not "
                    f"complete. Check its complete() (or output()), or yield tasks "
                    f"whose outputs their run() saves."), task))
                return
            heapq.heappush(self.ready, (self.priority[i], i))
            return
        loop = self._path_back(i, waits)
        if loop:
            names = " -> ".join(graphs.describe(self.g.nodes[p]) for p in [i, *loop])
            self._fail(i, _failure(CycleError(
                f"the tasks have a cycle through what run() yields, so no run order exists:"
                f"\n    {names}\n{name}.run() yields a task that needs {name} done first. "
                f"Remove one of these requirements.",
                [self.g.nodes[p].task_id for p in [i, *loop]]), task))
            return
        self.yielded[i] = waits
        for p in waits:
            self.yielders.setdefault(p, []).append(i)
        self.emit(EventKind.TASK_WAITING, task,
                  reason=f"waiting for what its run() yielded: "
                         f"{_listed(self.g.nodes[p] for p in sorted(waits))}")

    def _path_back(self, i: int, starts: set[int]) -> list[int]:
        """A path from ``starts`` back to ``i`` through unfinished requirements, if any."""
        g, yielded = self.g, self.yielded
        parent: dict[int, int | None] = {p: None for p in starts}
        stack = list(starts)
        while stack:
            k = stack.pop()
            if k == i:
                path: list[int] = []
                at: int | None = k
                while at is not None:
                    path.append(at)
                    at = parent[at]
                return path[::-1]
            for d in (*g.deps[k], *yielded.get(k, ())):
                if d not in parent and d not in self.finished and d not in self.done:
                    parent[d] = k
                    stack.append(d)
        return []

    def _finish_skipped(self, i: int, because: int) -> None:
        """Skip ``i`` (and what requires it): the task at ``because`` did not finish well."""
        self.finished.add(i)
        self.yielded.pop(i, None)
        reason = f"upstream task {graphs.describe(self.g.nodes[because])} failed"
        self.emit(EventKind.TASK_SKIPPED, self.g.nodes[i], reason=reason)
        self._doom(i, reason)

    def _lock(self, i: int) -> bool:
        """Take the task's lock; False if it must wait (or failed: it is then finished)."""
        task = self.g.nodes[i]
        c = self.contracts[i]
        lock = c.lock()
        if lock is None:
            return True
        try:
            taken = lock.acquire()
        except UnsafePathError as exc:  # its lock file is a symlink, a folder...
            self._finish(i, _failure(exc))
            return False
        except PipeflowError as exc:  # a claim refused: cancelled, or failed elsewhere
            self._finish(i, _failure(exc, task))
            return False
        except OSError as exc:  # its folder cannot be created or written
            self._finish(i, _failure(SaveError(
                f"{graphs.describe(task)} cannot create its lock file in {lock.folder!r}: "
                f"{os_reason(exc)}. Nothing was run. {os_fix(exc, pathlib.Path(lock.folder))}")))
            return False
        if not taken:
            if self.engine.if_locked == "fail":
                self._finish(i, _failure(TaskLockedError(
                    f"{graphs.describe(task)} is being run by another process (or thread) "
                    f"right now, and this run was asked not to wait (if_locked='fail'). Run "
                    f"again when it is done, or with if_locked='wait' to wait for it and "
                    f"reuse its output.")))
                return False
            if i not in self.waited:
                self.waited.add(i)
                self.emit(EventKind.TASK_WAITING, task,
                          reason="running in another process or thread; waiting for it")
            heapq.heappush(self.delayed, (time.monotonic() + LOCK_POLL, i))
            return False
        self.locks[i] = lock
        # Another process may have run it meanwhile: reuse its output.
        now = _signature(c)
        if now is not None and now != self.records.get(i) and c.output_state()[0]:
            lock.release()
            del self.locks[i]
            self.finished.add(i)
            self.done.add(i)
            self.emit(EventKind.TASK_UP_TO_DATE, task,
                      reason="completed by another process while this run waited")
            self._release(i)
            return False
        c.clean_orphans(self._temp_files)
        return True

    def _temp_files(self, folder: pathlib.Path) -> list[str]:
        """The temp files in ``folder``, listed once per run (folders may be large)."""
        names = self.temps.get(folder)
        if names is None:
            try:
                names = [e.name for e in os.scandir(folder)
                         if e.name.startswith(".") and ".tmp-" in e.name]
            except OSError:
                names = []
            self.temps[folder] = names
        return names

    def _start(self, i: int) -> None:
        task = self.g.nodes[i]
        if not self._lock(i):
            return
        self.attempts[i] = self.attempts.get(i, 0) + 1
        timeout = self.contracts[i].timeout
        run = _Running(time.monotonic() + timeout if timeout else None)
        self.running[i] = run
        stale = self.plan.status[i] is Status.STALE
        self.emit(EventKind.TASK_STARTED, task,
                  reason=f"stale: {self.plan.reasons.get(i)}" if stale else None)
        self.executor.start(i, task, run.deadline)

    def _cancel_rest(self) -> None:
        for i in list(self.running):
            self.executor.stop(i, self.g.nodes[i])
            self._finish(i, Outcome(cancelled=True))
        for i in sorted(self.to_run - self.finished):
            self.finished.add(i)
            self.emit(EventKind.TASK_CANCELLED, self.g.nodes[i])

    # -- the loop -----------------------------------------------------------------------------
    def loop(self) -> None:
        token = self.engine.cancel
        for i in sorted(self.up_to_date):
            self.emit(EventKind.TASK_UP_TO_DATE, self.g.nodes[i])
        try:
            while self.ready or self.running or self.delayed:
                if token.cancelled:
                    self._cancel_rest()
                    return
                now = time.monotonic()
                while self.delayed and self.delayed[0][0] <= now:
                    i = heapq.heappop(self.delayed)[1]
                    heapq.heappush(self.ready, (self.priority[i], i))
                while self.ready and len(self.running) < self.engine.workers:
                    i = heapq.heappop(self.ready)[1]
                    if i not in self.finished:
                        self._start(i)
                        for done_i, out in self.executor.collect(0):
                            self._finish(done_i, out)
                        if token.cancelled:
                            break
                wake = [r.deadline for r in self.running.values() if r.deadline]
                wake += [when for when, _ in self.delayed]
                timeout = max(0.0, min([*wake, now + 0.1]) - time.monotonic())
                for done_i, out in self.executor.collect(timeout if self.running else 0):
                    self._finish(done_i, out)
                if not self.running and not self.ready and self.delayed:
                    token.wait(max(0.0, self.delayed[0][0] - time.monotonic()))
                now = time.monotonic()
                for i, run in list(self.running.items()):
                    if run.deadline is not None and now >= run.deadline:
                        task = self.g.nodes[i]
                        self.executor.stop(i, task)
                        self._finish(i, _failure(_timeout_error(task)))
            if token.cancelled:  # the last running task was stopped: report what waited
                self._cancel_rest()
        except KeyboardInterrupt:
            token._event.set()
            self._cancel_rest()
            raise
        finally:
            self.executor.close()
            for lock in self.locks.values():
                lock.release()


# -- executing one task ------------------------------------------------------------------------

def execute(task: luigi.Task) -> bool | list[luigi.Task]:
    """Run one attempt: stale outputs removed, saves staged, outputs checked, published.

    Returns:
        False when ``run()`` saved none of the task's outputs (d6tflow's tests write such
        tasks to check their inputs): nothing is published and the task stays incomplete,
        so it runs again next time. The tasks ``run()`` yielded, when they are not all
        complete: nothing is published; the engine runs them, then this task again.
        True otherwise.

    Raises:
        MissingOutputError: ``run()`` saved some but not all of the outputs (nothing is
            published).
    """
    c = adapt(task)
    if c.group:
        return True  # groups have nothing of their own to run
    owned = c.prepare_run()
    try:
        with staging(owned) as stg:
            ret = task.run()
            if inspect.isgenerator(ret):
                needs = _serve(ret)
                if needs:
                    stg.rollback()
                    c.abort_run()
                    return needs
            return c.finish_run(stg)
    except BaseException:
        c.abort_run()
        raise


def _serve(gen: Any) -> list[luigi.Task]:
    """Drive a ``run()`` that yields requirements (luigi's dynamic dependencies).

    Each yield gets the outputs of what it yielded, once all of it is complete.

    Returns:
        The yielded tasks, when some are not complete: the engine runs them and then this
        task again (``run()`` starts over, as in luigi). An empty list when ``run()``
        finished.
    """
    send = None
    while True:
        try:
            req = gen.send(send)
        except StopIteration:
            return []
        tasks = flatten(req)
        odd = next((t for t in tasks if not isinstance(t, luigi.Task)), None)
        if odd is not None:
            raise RequirementError(
                f"run() yielded {odd!r} (type {type(odd).__name__}), which is not a task. "
                f"Yield a task instance, or a list, tuple or dict of task instances.")
        if not all(t.complete() for t in tasks):
            gen.close()
            return list(dict.fromkeys(tasks))
        send = getpaths(req)


def _signature(c: TaskContract) -> Any:
    """Identity of a task's committed state (None if it has none): see the contract."""
    return c.signature()


def _listed(tasks: Any) -> str:
    names = [graphs.describe(t) for t in tasks]
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _timeout_error(task: luigi.Task) -> TaskTimeoutError:
    c = adapt(task)
    where = c.timeout_setting or f"{type(task).__name__}.timeout"
    return TaskTimeoutError(
        f"{graphs.describe(task)} ran longer than its timeout of {c.timeout:g}s and "
        f"was stopped; its partial outputs were removed. Raise {where} if it needs longer."
    )


def _failure(exc: BaseException, task: luigi.Task | None = None) -> Outcome:
    """The outcome of a failed attempt: no text of it shows a secret parameter value.

    The error itself is replaced by a redacted copy when it (or its chain) quotes one, so
    the summary, the history, the result and the error the user catches are all clean.
    """
    if task is None:
        return Outcome(exc, "".join(traceback.format_exception(exc)))
    exc = redact_error(exc, task)
    return Outcome(exc, redact("".join(traceback.format_exception(exc)), task))


_WORK = Work(run=execute, fail=lambda exc, task: _failure(exc, task),
             stopped=lambda task: adapt(task).clean_stopped(), timed_out=_timeout_error,
             memory=lambda task: adapt(task).memory_outputs())

__all__ = ["CancelToken", "LocalEngine", "RunCancelledError", "execute"]
