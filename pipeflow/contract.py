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
import sys
import types
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import luigi
from luigi.parameter import _no_value
from luigi.task import flatten
from luigi.task_register import Register

from pipeflow import layout
from pipeflow.errors import PipeflowError, RedefinitionError, RequirementError, first_line
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
        cascades: a required task out of date makes it out of date too (with
            ``check_dependencies``); False for a task that, once complete, stays complete
            (a task tree's stored task).
        timeout_setting: where its timeout is set, named when the timeout fires (None: the
            task class's ``timeout`` attribute).
    """

    task: luigi.Task
    group: bool
    external: bool
    priority: int
    retries: int
    retry_delay: float
    timeout: float | None
    changes: Changes
    cascades: bool
    timeout_setting: str | None

    def requirements(self) -> list[Any]:
        """What it requires (``requires()`` flattened; a group's members too)."""

    def record_path(self) -> str | None:
        """Its commit record (None: it has none, e.g. a plain luigi task)."""

    def output_state(self) -> tuple[bool, str | None, CommitRecord | None]:
        """Whether its own outputs are complete, why not (when notable), its record."""

    def signature(self) -> Any:
        """Identity of its committed state now (None: it keeps none).

        When it differs from what it was when the run was planned, another process has
        run the task meanwhile (the engine then reuses what that process made).
        """

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


class Optional:
    """Marks a requirement optional: see :func:`pipeflow.optional`."""

    __slots__ = ("task",)

    def __init__(self, task: luigi.Task):
        if not isinstance(task, luigi.Task):
            raise RequirementError(
                f"pipeflow.optional() takes a task instance, not {task!r}: write "
                f"optional({getattr(task, '__name__', 'Task')}())."
            )
        self.task = task

    def __repr__(self) -> str:
        return f"optional({describe(self.task)})"


#: what ``requires()`` returns as is; anything else iterable (a generator) is read here
_STRUCTS = (luigi.Task, Mapping, list, tuple, str)


def requires_of(task: luigi.Task) -> Any:
    """``task.requires()``, a generator read to a list; its errors name the task.

    A task of a class redefined since (a notebook cell run again, a module reloaded) is
    replaced by the same task of the newest definition: see :func:`current_task`.

    Raises:
        RequirementError: ``requires()`` (or the generator it returned) raised: the message
            names the task and the error; the error (a copy without the task's secret
            parameter values, when it quotes one) is chained as ``__cause__``. A pipeflow
            error (e.g. a bad parameter of a required task) propagates as it is.
        RedefinitionError: it requires a task of a class redefined in a way it cannot
            follow (see :func:`current_task`).
    """
    shown: BaseException
    try:
        reqs = task.requires()
        if reqs is not None and not isinstance(reqs, _STRUCTS) and isinstance(reqs, Iterable):
            reqs = list(reqs)
    except PipeflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: say whose, keep its frames
        shown = redact_error(exc, task)
    else:
        if _redefined():
            return _current_struct(reqs, task)
        return reqs
    # raised here, not above: the redacted copy must not chain the original
    raise RequirementError(redact(
        f"{describe(task)}.requires() raised {first_line(shown)}. Fix requires() (its "
        f"traceback is shown above this error).", task)) from shown


# -- redefined task classes ----------------------------------------------------------------------
#
# A notebook cell run again (or a module reloaded) makes a new class; what was defined
# against the old one (``@requires(GetData)``, a Workflow's default task, an instance made
# earlier) still holds the old class object. The newest definition is what the class's
# module binds its name to now. Verdicts are cached per class; the cache is dropped when
# luigi's class registry changes (a task class was defined) and at each graph build or
# status check (:func:`refresh_classes`), so nothing costs per task while no class was
# redefined.

#: (id, length) of luigi's class registry the verdicts were made with
_REG_SEEN: tuple[int, int] = (0, -1)
#: class -> its verdict (see :func:`_newest`)
_VERDICTS: dict[type, Any] = {}
#: whether some task class is known to have a newer definition (else nothing is looked at)
_REDEFINED = False
#: makes the instance of a class with a task's home (set by :mod:`pipeflow.tasks`)
_LOCATE: Callable[[type, Any, dict[str, Any]], Any] | None = None


@dataclass(frozen=True)
class _Misfit:
    """A class redefined in a way its existing tasks cannot follow."""

    newest: type | None  # None: no longer a task class
    why: str


def register_locator(locate: Callable[[type, Any, dict[str, Any]], Any]) -> None:
    """Declare how to make an instance carrying a home context (``tasks.located``)."""
    global _LOCATE
    _LOCATE = locate


def refresh_classes() -> None:
    """Look again at which task classes were redefined (at each build or status check)."""
    _VERDICTS.clear()
    _redefined()


def _redefined() -> bool:
    """Whether some task class has a newer definition (rescanned when the registry grew)."""
    reg = Register._reg
    key = (id(reg), len(reg))
    if key != _REG_SEEN:
        _scan(reg, key)
    return _REDEFINED


def _scan(reg: list[Any], key: tuple[int, int]) -> None:
    """Whether any registered task class is no longer what its module binds its name to."""
    global _REG_SEEN, _REDEFINED
    _REG_SEEN = key
    _VERDICTS.clear()
    _REDEFINED = any(_bound(cls) is not cls and _newest(cls) is not None for cls in reg)


#: the class attribute holding where a pipeflow task class was defined (see :func:`record_site`)
_SITE = "_pipeflow_site"


def record_site(cls: type, filename: str | None) -> None:
    """Note where ``cls`` is being defined: the code file and this execution of its module.

    Called by pipeflow's task metaclass as the class is made. Two classes of one name
    defined by one execution of one file (a module that reuses a class name) are two
    classes; a notebook cell run again (another cell file) or a module reloaded (a new
    execution) makes a redefinition.
    """
    module = sys.modules.get(cls.__module__)
    type.__setattr__(cls, _SITE, (filename, getattr(module, "__spec__", None)))


def _site(cls: type) -> tuple[str | None, Any]:
    """(code file, module spec at definition) of ``cls``; other classes: their methods' file."""
    hit = cls.__dict__.get(_SITE)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    code = next((f.__code__ for f in vars(cls).values() if isinstance(f, types.FunctionType)),
                None)
    return (None if code is None else code.co_filename), None


def _same_execution(old: type, new: type) -> bool:
    """Whether both classes were made by one execution of one file (not a redefinition)."""
    a, b = _site(old), _site(new)
    return a[0] is not None and a[0] == b[0] and a[1] is b[1]


def _bound(cls: type) -> Any:
    """What ``cls``'s module binds its qualified name to now (None: nothing, or unknown)."""
    qualname = cls.__qualname__
    if "<locals>" in qualname:  # made by a function: each call's class is its own
        return None
    obj: Any = sys.modules.get(cls.__module__)
    for part in qualname.split("."):
        if obj is None:
            return None
        namespace = getattr(obj, "__dict__", None)
        obj = namespace.get(part) if isinstance(namespace, Mapping) else None
    return obj


def _newest(cls: type) -> type | _Misfit | None:
    """None (``cls`` is current), its newest class, or a :class:`_Misfit`.

    The newest definition is what the class's module binds its qualified name to now, when
    that is a class of the same module and qualified name (a functional step: its task
    class). A class made inside a function is never superseded (each call makes its own),
    nor one whose name now holds something else (a value), nor one whose module is not
    imported (code run in a namespace of its own).
    """
    obj = _bound(cls)
    if obj is None or obj is cls:
        return None
    step = getattr(obj, "task_class", None)  # a functional step names its task class
    if isinstance(step, type) and not isinstance(obj, type):
        obj = step
    if obj is cls or not isinstance(obj, type) or obj.__qualname__ != cls.__qualname__ or (
            obj.__module__ != cls.__module__):
        return None
    if _same_execution(cls, obj):
        return None  # a module that defines two classes of one name: two classes
    if not issubclass(obj, luigi.Task):
        return _Misfit(None, f"{cls.__qualname__} was redefined and is no longer a task "
                             f"class")
    problem = _params_misfit(cls, obj) if issubclass(cls, luigi.Task) else None
    if problem:
        return _Misfit(obj, f"{cls.__qualname__} was redefined and {problem}")
    return obj


def _params_misfit(old: type[luigi.Task], new: type[luigi.Task]) -> str | None:
    """Why tasks of ``old`` cannot become tasks of ``new`` with the same parameters."""
    before = dict(old.get_params())
    after = dict(new.get_params())
    removed = [n for n in before if n not in after]
    required = [n for n, p in after.items()
                if n not in before and p._default is _no_value]  # noqa: SLF001
    for names, says in ((removed, "its parameter{s} {names} {were} removed"),
                        (required, "it has a new required parameter{s} {names} (no "
                                   "default)")):
        if names:
            many = len(names) > 1
            return says.format(s="s" if many else "", names=", ".join(names),
                               were="were" if many else "was")
    return None


def _verdict(cls: type) -> type | _Misfit | None:
    try:
        return _VERDICTS[cls]  # type: ignore[no-any-return]
    except KeyError:
        verdict = _VERDICTS[cls] = _newest(cls)
        return verdict


def newest_class(cls: Any) -> Any:
    """The newest definition of a task class (``cls`` itself unless redefined since).

    A class whose parameters changed is still replaced (its tasks are made anew from it).

    Raises:
        RedefinitionError: it was redefined as something that is not a task.
    """
    if not _redefined() and not isinstance(_bound(cls), type):
        return cls
    verdict = _verdict(cls)
    if isinstance(verdict, _Misfit):
        if verdict.newest is None:
            raise RedefinitionError(_message(verdict.why, None, cls))
        return verdict.newest
    return cls if verdict is None else verdict


def check_classes(classes: Iterable[type], dependent: Callable[[type], Any]) -> None:
    """Raise for a class of ``classes`` redefined as something that is not a task.

    A task class redefined as a task is caught as tasks are required (a new class
    registers); one redefined as a plain class is looked for here, once per class.

    Args:
        classes: the task classes of a graph.
        dependent: for a class, a task that requires one of its tasks (None: a root).
    """
    for cls in classes:
        if isinstance(_bound(cls), type):
            verdict = _verdict(cls)
            if isinstance(verdict, _Misfit):
                raise RedefinitionError(_message(verdict.why, dependent(cls), cls))


def current_task(task: Any, by: Any = None) -> Any:
    """``task``, or the same task (same parameters) of its class's newest definition.

    Args:
        task: a task instance (anything else is returned as it is).
        by: the task whose ``requires()`` gave it (named in the error), None for a root.

    Raises:
        RedefinitionError: its class was redefined in a way it cannot follow (a parameter
            removed, a new one without default, no longer a task); nothing was run or
            deleted. The message names the cell (or module) to run again.
    """
    if not _redefined():
        return task
    verdict = _verdict(type(task))
    if verdict is None:
        return task
    if isinstance(verdict, _Misfit):
        raise RedefinitionError(_message(verdict.why, by, type(task), task))
    kwargs = dict(task.param_kwargs)
    home = task.__dict__.get(layout.HOME)
    try:
        if home is not None and _LOCATE is not None:
            return _LOCATE(verdict, home, kwargs)
        return verdict(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a parameter value the new class refuses
        raise RedefinitionError(_message(
            f"{verdict.__qualname__} was redefined and does not accept the parameters of "
            f"{describe(task)}: {first_line(exc)}", by, type(task), task)) from exc


def _message(why: str, by: Any, cls: type, task: Any = None) -> str:
    """What to do about a redefinition a task cannot follow: which cell to run again."""
    name = cls.__qualname__
    owner = type(by) if by is not None else None
    if owner is None:
        made = (f"{describe(task)} was made from the previous {name}" if task is not None
                else f"this flow was made with the previous {name}")
        fix = (f"make it again from the new {name} (re-run the cell that made it)"
               if task is not None else "re-run the cell that made the flow")
        if why.endswith("no longer a task class"):
            fix = f"define {name} as a task class again, or leave it out of the flow"
    else:
        made = f"{describe(by)} requires the previous {name}"
        if owner.__module__ == "__main__":
            fix = (f"re-run the cell defining {owner.__qualname__} (it was defined against "
                   f"the previous {name})")
        else:
            fix = (f"reload the module {owner.__module__} that defines {owner.__qualname__} "
                   f"(importlib.reload), or restart the kernel")
    return f"{why}; {made}.\nTo fix it, {fix}. Nothing was run or deleted."


def _current_struct(struct: Any, by: Any) -> Any:
    """A ``requires()`` result with each task of a redefined class replaced."""
    if isinstance(struct, luigi.Task):
        return current_task(struct, by)
    if isinstance(struct, Optional):
        new = current_task(struct.task, by)
        return struct if new is struct.task else Optional(new)
    if isinstance(struct, Mapping):
        return {k: _current_struct(v, by) for k, v in struct.items()}
    if isinstance(struct, (list, tuple)):
        return type(struct)(_current_struct(v, by) for v in struct)
    return struct


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
    cascades = True
    timeout_setting: str | None = None

    def __init__(self, task: luigi.Task):
        self.task = task

    def requirements(self) -> list[Any]:
        """``requires()`` flattened."""
        return list(flatten(requires_of(self.task)))

    def record_path(self) -> str | None:
        """None: no commit record."""
        return None

    def signature(self) -> Any:
        """None: no committed state of pipeflow's."""
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
            deps += [m for m in _current_struct(members(), self.task) if m not in deps]
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


__all__ = ["Changes", "FileRecord", "GroupTask", "Optional", "PlainTask", "TaskContract",
           "adapt", "changes_of", "current_task", "is_group", "newest_class",
           "refresh_classes", "register", "register_locator"]
