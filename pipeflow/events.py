"""Run events and what is built from them: the run result and the execution summary.

The engine emits one :class:`Event` per state change; every consumer (the result, the
summary, user callbacks) reads that one stream.
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import luigi

from pipeflow.errors import ParameterError, did_you_mean, first_line, listing
from pipeflow.graph import describe


class EventKind(str, enum.Enum):
    """What happened."""

    RUN_STARTED = "run_started"
    RUN_FINISHED = "run_finished"
    TASK_UP_TO_DATE = "task_up_to_date"
    TASK_STARTED = "task_started"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_SKIPPED = "task_skipped"
    TASK_RETRYING = "task_retrying"
    TASK_CANCELLED = "task_cancelled"
    TASK_WAITING = "task_waiting"
    TASK_ADDED = "task_added"


class TaskState(str, enum.Enum):
    """Where a task of a run ended up (or is).

    ``QUEUED``: waiting for its turn (for a worker, a retry, a lock held elsewhere, or the
    requirements its ``run()`` yielded). Not the plan's ``Status.PENDING``, which says a
    task's outputs are missing.
    """

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    UP_TO_DATE = "up_to_date"


#: how a person reads each state (the result's text, its notebook display), in display order
STATE_WORDS = {
    TaskState.COMPLETED: "ran",
    TaskState.UP_TO_DATE: "already done",
    TaskState.FAILED: "failed",
    TaskState.SKIPPED: "not run (upstream failed)",
    TaskState.CANCELLED: "cancelled",
    TaskState.IN_PROGRESS: "running",
    TaskState.QUEUED: "queued",
}

#: how a notebook shows a :class:`RunResult`, installed by :mod:`pipeflow.display.rich`
#: (the domain knows nothing of HTML): ``"html"`` renders it, ``"show"`` displays it
NOTEBOOK: dict[str, Callable[[Any], Any]] = {}

_STATE_OF = {
    EventKind.TASK_UP_TO_DATE: TaskState.UP_TO_DATE,
    EventKind.TASK_STARTED: TaskState.IN_PROGRESS,
    EventKind.TASK_COMPLETED: TaskState.COMPLETED,
    EventKind.TASK_FAILED: TaskState.FAILED,
    EventKind.TASK_SKIPPED: TaskState.SKIPPED,
    EventKind.TASK_RETRYING: TaskState.QUEUED,
    EventKind.TASK_CANCELLED: TaskState.CANCELLED,
    EventKind.TASK_WAITING: TaskState.QUEUED,
    EventKind.TASK_ADDED: TaskState.QUEUED,
}


@dataclass(frozen=True)
class Event:
    """One state change of a run.

    Attributes:
        kind: what happened.
        run_id: the run it belongs to.
        time: when (``time.time()``).
        task: the task concerned (None for run events).
        error: the exception of a failed task; with RUN_FINISHED, the exception the run
            ended with, if any (Ctrl-C, or an error in a callback).
        traceback: its formatted traceback.
        reason: why a task was skipped, is retried, waits, joined the run (TASK_ADDED: the
            task whose ``run()`` yielded it) or (when it starts) runs again.
        total: with RUN_STARTED, how many tasks the run will try to run; with TASK_ADDED,
            how many now (a ``run()`` that yields requirements adds tasks to its run).
        usage: when an attempt ends, ``cpu_time`` (seconds) and ``peak_memory`` (bytes, of
            the process that ran it).
    """

    kind: EventKind
    run_id: str
    time: float = field(default_factory=time.time)
    task: luigi.Task | None = None
    error: BaseException | None = None
    traceback: str | None = None
    reason: str | None = None
    total: int | None = None
    usage: Mapping[str, float] | None = None

    @property
    def task_id(self) -> str | None:
        """The task's id, if any."""
        return None if self.task is None else self.task.task_id

    @property
    def family(self) -> str | None:
        """The task's family (class name), if any."""
        return None if self.task is None else self.task.task_family

    @property
    def params(self) -> dict[str, str]:
        """The task's significant parameters, as strings."""
        return {} if self.task is None else self.task.to_str_params(only_significant=True)


Sink = Callable[[Event], None]

#: tasks listed per group in the execution summary; the rest are counted
SUMMARY_MAX_LINES = 25


@dataclass
class TaskResult:
    """What happened to one task in a run.

    Attributes:
        task: the task.
        state: its final state.
        started: start time, if it ran.
        finished: end time, if it ran.
        error: the exception, if it failed.
        traceback: the formatted traceback, if it failed.
        reason: why it was skipped, or why it ran again (stale outputs).
        attempts: how many times ``run()`` was called.
        retried_errors: (error, traceback) of each failed attempt that was retried.
        usage: ``cpu_time`` (seconds) and ``peak_memory`` (bytes) of the last attempt.
    """

    task: luigi.Task
    state: TaskState = TaskState.QUEUED
    started: float | None = None
    finished: float | None = None
    error: BaseException | None = None
    traceback: str | None = None
    reason: str | None = None
    attempts: int = 0
    retried_errors: list[tuple[BaseException, str | None]] = field(default_factory=list)
    usage: Mapping[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds spent in ``run()``, if it ran."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


def _detail(r: TaskResult) -> str:
    if r.error is not None:
        return f": {first_line(r.error)}"
    if r.state is TaskState.UP_TO_DATE and r.reason:
        return f" ({r.reason})"
    took = "" if r.duration is None else f" in {r.duration:.2f}s"
    return took + (f" ({r.reason})" if r.reason and r.state is TaskState.COMPLETED else "")


class RunResult:
    """The outcome of ``run()``: truthy when every scheduled task succeeded.

    Attributes:
        run_id: identifier of the run.
        tasks: task_id -> :class:`TaskResult`, upstream first.
        started: start time of the run.
        finished: end time of the run.

    Example:
        >>> result = flow.run()                      # doctest: +SKIP
        >>> assert result                            # doctest: +SKIP
        >>> [r.task for r in result.by_state("failed")]  # doctest: +SKIP
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.tasks: dict[str, TaskResult] = {}
        self.started: float | None = None
        self.finished: float | None = None
        #: the notebook cell (IPython's execution count) its execution summary printed in:
        #: as that cell's value the result shows nothing more (a later cell shows it)
        self.shown_in: int | None = None

    def __call__(self, event: Event) -> None:
        """Record an event (the result is an event sink)."""
        if event.kind is EventKind.RUN_STARTED:
            self.started = event.time
        elif event.kind is EventKind.RUN_FINISHED:
            self.finished = event.time
        elif event.task is not None:
            res = self.tasks.setdefault(event.task.task_id, TaskResult(event.task))
            res.state = _STATE_OF[event.kind]
            if event.kind is EventKind.TASK_STARTED:
                # listed by last start: a task starts after its upstream tasks (also those
                # its run() yielded, which it runs again after), so upstream stays first
                self.tasks[event.task.task_id] = self.tasks.pop(event.task.task_id)
                res.started = event.time
                res.attempts += 1
                res.reason = event.reason
            elif event.kind in (EventKind.TASK_COMPLETED, EventKind.TASK_FAILED):
                res.finished = event.time
                res.error, res.traceback = event.error, event.traceback
                res.usage = event.usage or {}
                res.reason = event.reason or res.reason
            elif event.kind in (EventKind.TASK_SKIPPED, EventKind.TASK_CANCELLED,
                                EventKind.TASK_UP_TO_DATE, EventKind.TASK_WAITING,
                                EventKind.TASK_ADDED):
                res.reason = event.reason
            elif event.kind is EventKind.TASK_RETRYING and event.error is not None:
                res.retried_errors.append((event.error, event.traceback))

    def by_state(self, state: TaskState | str) -> list[TaskResult]:
        """The results of tasks that ended in ``state``."""
        try:
            want = TaskState(state)
        except ValueError:
            names = [s.value for s in TaskState]
            raise ParameterError(
                f"by_state() takes one of {', '.join(names)}, not {state!r}."
                f"{did_you_mean(str(state), names)}") from None
        return [r for r in self.tasks.values() if r.state is want]

    @property
    def success(self) -> bool:
        """True when no task failed, was skipped or was cancelled."""
        bad = (TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED, TaskState.QUEUED)
        return not any(r.state in bad for r in self.tasks.values())

    #: luigi's name for the same thing (d6tflow code reads it)
    scheduling_succeeded = success

    def __bool__(self) -> bool:
        return self.success

    @property
    def verdict(self) -> str:
        """How the run ended: ``'success'``, ``'cancelled'`` (nothing failed) or ``'failed'``."""
        if self.success:
            return "success"
        if self.by_state(TaskState.CANCELLED) and not self.by_state(TaskState.FAILED):
            return "cancelled"
        return "failed"

    def counts(self) -> dict[TaskState, int]:
        """How many tasks ended in each state (states no task is in left out)."""
        found: dict[TaskState, int] = {}
        for r in self.tasks.values():
            found[r.state] = found.get(r.state, 0) + 1
        return {s: found[s] for s in STATE_WORDS if s in found}

    @property
    def duration(self) -> float | None:
        """Seconds from the run's start to its end, if it ended."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {STATE_WORDS[s]}" for s, n in self.counts().items())
        return f"<RunResult {self.verdict}: {counts or 'no task'}>"

    def _repr_html_(self) -> str | None:
        render = NOTEBOOK.get("html")
        return None if render is None else render(self)  # type: ignore[no-any-return]

    def _ipython_display_(self) -> None:
        show = NOTEBOOK.get("show")
        if show is None:
            sys.stdout.write(repr(self) + "\n")  # not reached: pipeflow.display.rich sets it
        else:
            show(self)

    def subset(self, task_ids: Iterable[str]) -> RunResult:
        """The same run restricted to some tasks (e.g. one flow of a WorkflowMulti)."""
        out = RunResult(self.run_id)
        out.started, out.finished = self.started, self.finished
        out.shown_in = self.shown_in
        wanted = set(task_ids)
        out.tasks = {k: v for k, v in self.tasks.items() if k in wanted}
        return out

    def summary(self) -> str:
        """The execution summary: what was already done, ran, failed and did not run."""
        groups = [
            (TaskState.UP_TO_DATE, "already done (outputs existed)"),
            (TaskState.COMPLETED, "ran successfully"),
            (TaskState.FAILED, "failed"),
            (TaskState.SKIPPED, "did not run because an upstream task failed"),
            (TaskState.CANCELLED, "cancelled"),
        ]
        lines = ["===== pipeflow execution summary =====",
                 f"Scheduled {len(self.tasks)} task{'' if len(self.tasks) == 1 else 's'}:"]
        for state, label in groups:
            results = self.by_state(state)
            if not results:
                continue
            lines.append(f"* {len(results)} {label}:" + listing(
                [f"- {describe(r.task)}{_detail(r)}" for r in results], SUMMARY_MAX_LINES))
        if self.success:
            lines.append("Result: success, every scheduled task ran or was already done.")
        elif self.by_state(TaskState.CANCELLED) and not self.by_state(TaskState.FAILED):
            lines.append("Result: cancelled before the run finished.")
        else:
            lines.append(f"Result: failed, {len(self.by_state(TaskState.FAILED))} task(s) failed.")
        lines.append("===== pipeflow execution summary =====")
        return "\n".join(lines)
