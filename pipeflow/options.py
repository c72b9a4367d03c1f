"""The options of a run, checked once: ``pipeflow.run``, ``flow.run``, ``flows.run``, ``start``.

Every way of starting a run hands its options over as one frozen :class:`RunOptions`, so
each option is declared, defaulted and checked in one place; a misspelt option is an error
with a "did you mean", never silently ignored.

Example:
    >>> RunOptions.of(workers=2, executor="thread").workers
    2
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeflow.errors import ParameterError, did_you_mean

#: how a task attempt may run besides in the calling thread
EXECUTORS = ("process", "thread")
#: what to do when another process runs the same task
IF_LOCKED = ("wait", "fail")


@dataclass(frozen=True)
class RunOptions:
    """How to run: see :func:`pipeflow.run` for what each option does.

    Attributes:
        forced: task(s) or class(es) to rerun, with everything between them and the roots.
        forced_all: rerun the roots themselves.
        forced_all_upstream: rerun everything upstream of the roots too.
        confirm: ask before deleting the outputs of forced tasks.
        workers: how many tasks may run at once (1 or more).
        abort: raise when a task fails or the run is cancelled.
        execution_summary: print the summary (None: ``settings.execution_summary``).
        executor: ``'process'``, ``'thread'`` or None (processes with several workers).
        cancel: a :class:`~pipeflow.engines.CancelToken`.
        callbacks: functions called with every event.
        progress: show a progress bar (None: when a person is watching).
        engine: the engine to run on (None: the embedded one).
        if_locked: ``'wait'`` for a task another process runs, or ``'fail'`` it at once.
    """

    forced: Any = None
    forced_all: bool = False
    forced_all_upstream: bool = False
    confirm: bool = False
    workers: int = 1
    abort: bool = True
    execution_summary: bool | None = None
    executor: str | None = None
    cancel: Any = None
    callbacks: Sequence[Callable[[Any], None]] = ()
    progress: bool | None = None
    engine: Any = None
    if_locked: str = "wait"

    def __post_init__(self) -> None:
        workers = self.workers
        try:
            count = None if isinstance(workers, bool) else operator.index(workers)
        except TypeError:  # (numpy integers are whole numbers too)
            count = None
        if count is None or count < 1:
            raise ParameterError(
                f"workers must be a whole number of at least 1, not {workers!r}: it is how "
                f"many tasks run at the same time. Pass e.g. workers=2.")
        object.__setattr__(self, "workers", count)
        if self.executor is not None and self.executor not in EXECUTORS:
            raise ParameterError(
                f"executor must be one of {', '.join(map(repr, EXECUTORS))} or None, not "
                f"{self.executor!r}.{did_you_mean(str(self.executor), EXECUTORS)}")
        if self.if_locked not in IF_LOCKED:
            raise ParameterError(
                f"if_locked must be one of {', '.join(map(repr, IF_LOCKED))}, not "
                f"{self.if_locked!r}: 'wait' for a task another process is running, or "
                f"'fail' it at once.{did_you_mean(str(self.if_locked), IF_LOCKED)}")
        object.__setattr__(self, "callbacks", tuple(self.callbacks))

    @classmethod
    def of(cls, **options: Any) -> RunOptions:
        """Options from keywords, refusing unknown names.

        Raises:
            ParameterError: an option that does not exist (with a "did you mean") or a
                value it does not take.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        for name in options:
            if name not in names:
                raise ParameterError(
                    f"run() has no option {name!r}.{did_you_mean(name, names)} Its options: "
                    f"{', '.join(sorted(names))}.")
        return cls(**options)

    def but(self, **changes: Any) -> RunOptions:
        """A copy with some options changed."""
        return dataclasses.replace(self, **changes)


__all__ = ["EXECUTORS", "IF_LOCKED", "RunOptions"]
