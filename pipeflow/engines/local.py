"""The embedded engine: runs a plan in this process, in dependency order.

Ready tasks run in topological order (``workers=1``) or on a thread pool (``workers>1``).
When a task fails, every task that depends on it is skipped; tasks that do not depend on it
still run.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import heapq
import inspect
import traceback
import uuid
from collections.abc import Callable, Sequence

import luigi
from luigi.task import flatten, getpaths

from pipeflow import graph as graphs
from pipeflow.errors import MissingOutputError, TaskFailedError
from pipeflow.events import Event, EventKind, RunResult, Sink
from pipeflow.plan import Plan, Status, build_plan, is_group
from pipeflow.targets import staging


class LocalEngine:
    """Runs tasks in this process.

    Args:
        workers: how many tasks may run at the same time (threads when above 1).

    Example:
        >>> result = LocalEngine(workers=1).run(plan, sinks=[])  # doctest: +SKIP
    """

    def __init__(self, workers: int = 1) -> None:
        if int(workers) < 1:
            raise ValueError(f"workers must be at least 1, not {workers!r}")
        self.workers = int(workers)

    def run(self, plan: Plan, sinks: Sequence[Sink]) -> RunResult:
        """Run every pending task of ``plan`` needed by its roots."""
        result = RunResult(uuid.uuid4().hex[:12])
        sinks = [result, *sinks]

        def emit(kind: EventKind, task: luigi.Task | None = None, **kw: object) -> None:
            event = Event(kind, result.run_id, task=task, **kw)  # type: ignore[arg-type]
            for sink in sinks:
                sink(event)

        emit(EventKind.RUN_STARTED)
        try:
            self._run_plan(plan, emit)
        finally:
            emit(EventKind.RUN_FINISHED)
        return result

    def _run_plan(self, plan: Plan, emit: Callable[..., None]) -> None:
        g = plan.graph
        # Walk down from the roots, stopping at tasks that are already complete (as luigi
        # does): with check_dependencies off, a complete task's upstream is not rebuilt.
        to_run: set[int] = set()
        seen: set[int] = set(g.roots)
        stack = list(g.roots)
        up_to_date: list[int] = []
        while stack:
            i = stack.pop()
            if plan.status[i] is Status.COMPLETE:
                up_to_date.append(i)
                continue
            to_run.add(i)
            for d in g.deps[i]:
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        for i in sorted(up_to_date):
            emit(EventKind.TASK_UP_TO_DATE, g.nodes[i])

        waiting = {i: sum(1 for d in g.deps[i] if d in to_run) for i in to_run}
        ready = [i for i, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        finished: set[int] = set()

        def finish(i: int, error: BaseException | None, tb: str | None) -> None:
            task = g.nodes[i]
            finished.add(i)
            if error is None:
                emit(EventKind.TASK_COMPLETED, task)
                for j in g.dependents[i]:
                    if j in waiting:
                        waiting[j] -= 1
                        if waiting[j] == 0:
                            heapq.heappush(ready, j)
                return
            emit(EventKind.TASK_FAILED, task, error=error, traceback=tb)
            for j in sorted(g.downstream([i]) & to_run):
                if j not in finished:
                    finished.add(j)
                    emit(EventKind.TASK_SKIPPED, g.nodes[j],
                         reason=f"upstream task {graphs.describe(task)} failed")

        pool = cf.ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        running: dict[cf.Future[tuple[BaseException | None, str | None]], int] = {}
        try:
            while ready or running:
                while ready and len(running) < self.workers:
                    i = heapq.heappop(ready)
                    if i in finished:
                        continue
                    emit(EventKind.TASK_STARTED, g.nodes[i])
                    if pool is None:
                        finish(i, *self._attempt(g.nodes[i]))
                    else:
                        ctx = contextvars.copy_context()
                        running[pool.submit(ctx.run, self._attempt, g.nodes[i])] = i
                if running:
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        finish(running.pop(fut), *fut.result())
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _attempt(self, task: luigi.Task) -> tuple[BaseException | None, str | None]:
        """Run one task; return (error, formatted traceback), both None on success."""
        try:
            self._execute(task)
        except Exception as exc:  # the task's failure is reported, not raised here
            return exc, "".join(traceback.format_exception(exc))
        return None, None

    def _execute(self, task: luigi.Task) -> None:
        if is_group(task):
            return  # groups have nothing of their own to run
        prepare = getattr(task, "prepare_run", None)
        if prepare is not None:
            prepare()
        owned = set(task.owned_paths()) if hasattr(task, "owned_paths") else set()
        try:
            with staging(owned) as stg:
                ret = task.run()
                if inspect.isgenerator(ret):
                    self._run_dynamic(ret)
                missing = (
                    task.missing_outputs(stg) if hasattr(task, "missing_outputs")
                    else [o for o in flatten(task.output()) if not o.exists()]
                )
                if missing:
                    raise MissingOutputError(_missing_message(task, missing))
                stg.commit()
        except BaseException:
            abort = getattr(task, "abort_run", None)
            if abort is not None:
                abort()
            raise

    def _run_dynamic(self, gen: object) -> None:
        """Serve a ``run()`` that yields requirements (luigi's dynamic dependencies)."""
        send = None
        while True:
            try:
                req = gen.send(send)  # type: ignore[attr-defined]
            except StopIteration:
                return
            sub = build_plan(graphs.build(flatten(req)))
            result = LocalEngine(self.workers).run(sub, sinks=[])
            if not result:
                failed = [graphs.describe(r.task) for r in result.by_state("failed")]
                raise TaskFailedError(
                    f"dynamic requirements failed: {', '.join(failed)}", result
                ) from next((r.error for r in result.by_state("failed")), None)
            send = getpaths(req)


def _missing_message(task: luigi.Task, missing: list[object]) -> str:
    describe = getattr(task, "describe_outputs", None)
    if describe is not None:
        return describe(missing)
    paths = ", ".join(str(getattr(m, "path", m)) for m in missing)
    return (f"{graphs.describe(task)} finished run() but did not write its outputs: {paths}. "
            f"The task is marked failed.")


__all__ = ["LocalEngine", "TaskFailedError"]
