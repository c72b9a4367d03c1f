"""The one contract between tasks and the machinery that runs them.

The engine, the plan, change detection and the run history never look at a task's
attributes: they ask :func:`adapt` for the task's :class:`TaskContract` and use only that.
Three kinds of task answer it:

* pipeflow's data tasks (``TaskData`` and the format classes): their adapter is registered
  by :mod:`pipeflow.tasks` (:func:`register`) and knows their outputs, commit record, lock
  and the commit protocol of a run;
* groups (``TaskAggregator``, luigi's ``WrapperTask``): nothing of their own to run or
  store; complete when their members are;
* any other luigi task: complete as luigi says (its ``complete()`` or its outputs), run
  as luigi would, never locked or committed.

Example:
    >>> c = adapt(task)                        # doctest: +SKIP
    >>> done, why, record = c.output_state()   # doctest: +SKIP
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import luigi
from luigi.task import flatten

from pipeflow.errors import PipeflowError, RequirementError, first_line
from pipeflow.integrity import CommitRecord, FileRecord
from pipeflow.locks import TaskLock
from pipeflow.parameters import redact, redact_error

#: scheduling priorities: 0 urgent, 1 high, 2 normal (the default), 3 low
PRIORITIES = (0, 1, 2, 3)


@dataclass(frozen=True)
class Changes:
    """How change detection treats a task class (its class attributes, validated).

    Attributes:
        version: a pinned code version (None: the code itself is compared).
        code: check code and parameter changes (None: follow the setting).
        data: check upstream output changes (None: follow the setting).
    """

    version: str | None = None
    code: bool | None = None
    data: bool | None = None

    @property
    def tracks_code(self) -> bool:
        """Whether commit records keep a code fingerprint (not opted out)."""
        return self.code is not False


class TaskContract(Protocol):
    """What the engine, the plan, change detection and the history need from a task.

    Attributes:
        task: the luigi task itself (its id, family and parameters).
        group: it only groups other tasks: nothing of its own to run or store.
        external: its outputs are made outside the flow: never run, reset or locked.
        priority: among tasks ready at the same time, lower starts first (0..3).
        retries: how many times a failed attempt is tried again within the run.
        retry_delay: seconds before each retry.
        timeout: seconds after which a running attempt is stopped (None: no limit).
        changes: how change detection treats it.
    """

    task: luigi.Task
    group: bool
    external: bool
    priority: int
    retries: int
    retry_delay: float
    timeout: float | None
    changes: Changes

    def requirements(self) -> list[Any]:
        """What it requires (``requires()`` flattened; a group's members too)."""

    def record_path(self) -> str | None:
        """Its commit record (None: it has none, e.g. a plain luigi task)."""

    def output_state(self) -> tuple[bool, str | None, CommitRecord | None]:
        """Whether its own outputs are complete, why not (when notable), its record."""

    def lock(self) -> TaskLock | None:
        """The lock held while it runs (None: it is not locked)."""

    def prepare_run(self) -> Container[pathlib.Path]:
        """Before an attempt: uncommit and remove stale files; return the paths it owns."""

    def finish_run(self, staged: Any) -> bool:
        """After ``run()`` returned: check and publish what it saved, commit, last.

        Args:
            staged: the :class:`~pipeflow.publishing.Staging` of the attempt.

        Returns:
            False when it saved none of its outputs (nothing is published; it stays
            incomplete), True when its outputs were published and committed.

        Raises:
            MissingOutputError: it saved some outputs but not all (nothing published).
        """

    def abort_run(self) -> None:
        """After a failed attempt: uncommit, remove what it wrote to final paths."""

    def clean_stopped(self) -> None:
        """After an attempt stopped midway (cancel, timeout): its temp files too."""

    def clean_orphans(self, scan: Callable[[pathlib.Path], list[str]]) -> None:
        """Delete temp files a crashed run of it left (its lock is held)."""

    def memory_outputs(self) -> dict[Any, Any]:
        """Its in-memory outputs made in this process (handed back from workers)."""


_REGISTRY: dict[type, Callable[[Any], Any]] = {}
_BY_CLASS: dict[type, Callable[[Any], Any]] = {}
_MEMO = "_pipeflow_contract"


def register(cls: type, make: Callable[[Any], Any]) -> None:
    """Declare how tasks of ``cls`` (and its subclasses) answer the contract."""
    _REGISTRY[cls] = make
    _BY_CLASS.clear()


def adapt(task: Any) -> TaskContract:
    """The :class:`TaskContract` of ``task`` (made once per task instance)."""
    d = task.__dict__
    hit = d.get(_MEMO)
    if hit is None:
        cls = type(task)
        make = _BY_CLASS.get(cls)
        if make is None:
            make = next((_REGISTRY[c] for c in cls.__mro__ if c in _REGISTRY), None)
            if make is None:
                make = GroupTask if is_group(task) else PlainTask
            _BY_CLASS[cls] = make
        hit = d[_MEMO] = make(task)
    return hit  # type: ignore[no-any-return]


def describe(task: luigi.Task) -> str:
    """Human name of a task with its significant parameters: ``Train(model='xgb')``.

    Made once per task instance (its parameters never change).
    """
    d = task.__dict__
    name = d.get("_pipeflow_name")
    if name is None:
        params = task.param_kwargs
        shown = ", ".join(f"{n}={params[n]!r}" for n, p in task.get_params()
                          if p.significant and n in params)
        name = d["_pipeflow_name"] = f"{task.task_family}({shown})"
    return name  # type: ignore[no-any-return]


#: what ``requires()`` returns as is; anything else iterable (a generator) is read here
_STRUCTS = (luigi.Task, Mapping, list, tuple, str)


def requires_of(task: luigi.Task) -> Any:
    """``task.requires()``, a generator read to a list; its errors name the task.

    Raises:
        RequirementError: ``requires()`` (or the generator it returned) raised: the message
            names the task and the error; the error (a copy without the task's secret
            parameter values, when it quotes one) is chained as ``__cause__``. A pipeflow
            error (e.g. a bad parameter of a required task) propagates as it is.
    """
    shown: BaseException
    try:
        reqs = task.requires()
        if reqs is not None and not isinstance(reqs, _STRUCTS) and isinstance(reqs, Iterable):
            reqs = list(reqs)
        return reqs
    except PipeflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: say whose, keep its frames
        shown = redact_error(exc, task)
    # raised here, not above: the redacted copy must not chain the original
    raise RequirementError(redact(
        f"{describe(task)}.requires() raised {first_line(shown)}. Fix requires() (its "
        f"traceback is shown above this error).", task)) from shown


def is_group(task: Any) -> bool:
    """Whether ``task`` only groups others (an aggregator or luigi WrapperTask).

    A group has nothing of its own to run or store: it is complete when its members
    are, whatever ``check_dependencies`` says. Grouping implies no order among them.
    """
    return isinstance(task, luigi.WrapperTask) or bool(getattr(task, "_pipeflow_group", False))


class _Base:
    """What plain luigi tasks and groups share: no record, no lock, no commit."""

    group = False
    external = False
    priority = 2  # luigi's own priority means something else; pipeflow's default
    retries = 0
    retry_delay = 0.0
    timeout: float | None = None
    changes = Changes(code=False)

    def __init__(self, task: luigi.Task):
        self.task = task

    def requirements(self) -> list[Any]:
        """``requires()`` flattened."""
        return list(flatten(requires_of(self.task)))

    def record_path(self) -> str | None:
        """None: no commit record."""
        return None

    def lock(self) -> TaskLock | None:
        """None: not locked."""
        return None

    def prepare_run(self) -> Container[pathlib.Path]:
        """Nothing to prepare; no path is staged."""
        return ()

    def abort_run(self) -> None:
        """Nothing of pipeflow's to undo."""

    def clean_stopped(self) -> None:
        """Nothing of pipeflow's to undo."""

    def clean_orphans(self, scan: Callable[[pathlib.Path], list[str]]) -> None:
        """No temp files of pipeflow's."""

    def memory_outputs(self) -> dict[Any, Any]:
        """No in-memory outputs."""
        return {}


class PlainTask(_Base):
    """A luigi task pipeflow knows nothing more of: luigi's own notion of complete."""

    def output_state(self) -> tuple[bool, str | None, CommitRecord | None]:
        """Its ``complete()`` if it defines one, else whether all its outputs exist."""
        task = self.task
        if type(task).complete is not luigi.Task.complete:
            return bool(task.complete()), None, None
        outputs = flatten(task.output())
        return bool(outputs) and all(o.exists() for o in outputs), None, None

    def finish_run(self, staged: Any) -> bool:
        """Check its outputs exist (none at all: it saved nothing)."""
        outputs = flatten(self.task.output())
        missing = [o for o in outputs if not o.exists()]
        if missing and len(missing) == len(outputs):
            return False
        if missing:
            from pipeflow.errors import MissingOutputError

            paths = ", ".join(str(getattr(m, "path", m)) for m in missing)
            raise MissingOutputError(
                f"{describe(self.task)} finished run() but did not write its outputs: "
                f"{paths}. The task is marked failed.")
        return True


class GroupTask(_Base):
    """A task that only groups others (``TaskAggregator``, ``WrapperTask``)."""

    group = True

    def requirements(self) -> list[Any]:
        """``requires()`` flattened, plus an aggregator's members (what run() yields)."""
        deps = list(flatten(requires_of(self.task)))
        members = getattr(self.task, "members", None)
        if members is not None:
            deps += [m for m in members() if m not in deps]
        return deps

    def output_state(self) -> tuple[bool, str | None, CommitRecord | None]:
        """Complete on its own: it has no outputs (its members decide)."""
        return True, None, None

    def finish_run(self, staged: Any) -> bool:
        """Nothing to publish."""
        return True


def changes_of(cls: type) -> Changes:
    """The change-detection options a task class declares (its class attributes)."""
    version = getattr(cls, "version", None)
    if isinstance(version, luigi.Parameter):  # a parameter named version: not a pin
        version = None
    return Changes(None if version is None else str(version),
                   getattr(cls, "detect_code_changes", None),
                   getattr(cls, "detect_data_changes", None))


__all__ = ["Changes", "FileRecord", "GroupTask", "PlainTask", "TaskContract", "adapt",
           "changes_of", "is_group", "register"]
