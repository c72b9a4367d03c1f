"""Every public exception pipeflow raises.

Each error says what went wrong, why, and how to fix it, naming the task (with its
parameters) and the file involved where there is one. All derive from
:class:`PipeflowError`, so ``except pipeflow.errors.PipeflowError`` catches them all.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from collections.abc import Iterable, Sequence


class PipeflowError(Exception):
    """Base class of every pipeflow error.

    Example:
        >>> try:
        ...     raise PipeflowError("boom")
        ... except PipeflowError as exc:
        ...     str(exc)
        'boom'
    """


class CycleError(PipeflowError):
    """The task graph has a cycle, so no run order exists.

    Attributes:
        cycle: the task ids along the cycle, first and last equal.
    """

    def __init__(self, message: str, cycle: list[str]):
        super().__init__(message)
        self.cycle = cycle


class RequirementError(PipeflowError, TypeError):
    """``requires()`` returned something that is not a task."""


class RedefinitionError(RequirementError):
    """A task class was redefined in a way the tasks defined against it cannot follow.

    A notebook cell run again or a module reloaded: its parameters no longer fit, or it is
    no longer a task. The message names the cell (or module) to run again. Raised before
    anything runs or is deleted.
    """


class MissingTaskError(PipeflowError, RuntimeError):
    """A Workflow was asked for its default task, but it has none."""


class ParameterError(PipeflowError, ValueError):
    """A parameter name or value does not fit the tasks it is given to."""


class UnknownNameError(ParameterError, KeyError):
    """A name given does not exist: an output of a task, an entry of its ``requires()``.

    Also a ``KeyError``, so code catching one (as for a dict) keeps working.
    """

    def __str__(self) -> str:
        return Exception.__str__(self)  # not KeyError's quoted repr


class UnsafePathError(PipeflowError, ValueError):
    """A task's files would land outside its location, or in a place pipeflow must not use.

    Raised before anything is read, written or deleted: a name (env, task_group,
    target_dir, the task family) that would climb out of the location or that no file
    system can store; a folder below the location (env folder, task folder,
    ``.pipeflow/commits``) that is a symlink resolving outside it; a task's lock file that
    is a symlink, a folder or anything but a plain file.
    """


class OutputError(PipeflowError):
    """Base class of errors about a task's outputs."""


class MissingOutputError(OutputError):
    """A task finished ``run()`` without saving every declared output."""


class MissingInputError(OutputError):
    """An external task's output, needed by the flow, does not exist."""


class MissingMetadataError(OutputError, RuntimeError):
    """Metadata was requested from a task whose run did not save any (``saveMeta``)."""


class SaveError(OutputError, ValueError):
    """``save()`` was called with data or keys the task's targets cannot store."""


class LoadError(OutputError):
    """A committed output could not be read back by its format.

    The file is the one its task committed (its hash matched), but the format's reader
    failed on it: an object pickle cannot rebuild (its class was renamed or removed, its
    ``__init__`` takes other arguments), reader arguments the format does not accept, or a
    file written by another tool in a form the reader does not handle. The cause is chained.
    """


class IncompleteTaskError(OutputError, RuntimeError):
    """Output was requested from a task that is not complete."""


class CorruptOutputError(OutputError):
    """An output file is no longer what its task's last successful run committed.

    It was changed, truncated or replaced outside pipeflow; it is never loaded (nor, for a
    pickle, unpickled). Reset the task and run it again.
    """


class MetadataError(OutputError):
    """Pipeflow's own record of a task's outputs is in the way or cannot be used.

    Something that is not a file pipeflow wrote sits where a task's commit record or one of
    its outputs goes (a folder, say). Pipeflow never deletes what it does not own: move or
    delete it, then run the task again.
    """


class HistoryError(PipeflowError):
    """The run history file is damaged, not a pipeflow history, or cannot be read.

    The message names the file and how to fix it (move it away, or turn the history off
    with ``pipeflow.settings.history = False``).
    """


class MissingDependencyError(PipeflowError, ImportError):
    """A format needs an optional package that is not installed (its extra names it)."""


class StaleOutputWarning(UserWarning):
    """Outputs were loaded from a task that is stale: what they were made from has changed.

    The outputs are intact, just out of date; ``flow.run()`` makes them current.
    """


class UnusedParameterWarning(UserWarning):
    """A parameter was given that no task it was given to declares, so it is ignored.

    d6tflow code shares one params dict across flows, so such names are ignored with this
    warning; a near-miss of a declared name (``learning_rat``) is a
    :class:`ParameterError` instead.
    """


class NoOutputWarning(UserWarning):
    """A task's ``run()`` saved none of its outputs: it stays incomplete and runs again."""


class TaskLockedError(PipeflowError):
    """The task is being run (or reset) by another process or thread right now."""


class ConfirmationError(PipeflowError, RuntimeError):
    """A destructive operation needs confirmation but nobody can answer the prompt."""


class TaskFailedError(PipeflowError, RuntimeError):
    """One or more tasks failed during ``run()``.

    The first failure's exception is chained as ``__cause__`` so its traceback shows.

    Attributes:
        result: the :class:`pipeflow.engines.RunResult` of the run.
    """

    def __init__(self, message: str, result: object):
        super().__init__(message)
        self.result = result


class RunCancelledError(PipeflowError):
    """The run was cancelled (``flow.cancel()``, a cancel token) before it finished.

    Attributes:
        result: the :class:`pipeflow.events.RunResult`, with the cancelled tasks.
    """

    def __init__(self, message: str, result: object):
        super().__init__(message)
        self.result = result


class TaskTimeoutError(PipeflowError):
    """A task ran longer than its ``timeout`` and was stopped."""


class WorkerTaskError(PipeflowError):
    """A task failed in a worker process with an exception that cannot be sent back as is.

    Some exceptions do not survive the trip from a worker process (``executor='process'``)
    to the run: one whose ``__init__`` takes other arguments than its message, one holding
    a lock, a lambda or a generator, one of a class the parent process does not have. The
    task fails with this error instead: its message is the original's ``Type: message``,
    its traceback the original's, as text.
    """


def listing(items: Sequence[str], limit: int = 10, prefix: str = "\n    ") -> str:
    """Items one per line (each after ``prefix``), the ones past ``limit`` counted."""
    shown = "".join(f"{prefix}{item}" for item in items[:limit])
    more = f"{prefix}... and {len(items) - limit} more" if len(items) > limit else ""
    return shown + more


def shown(error: BaseException) -> str:
    """``str(error)``, or ``<unprintable Type>`` when the exception's ``__str__`` fails.

    Every place pipeflow shows a user's exception goes through this: a broken ``__str__``
    must fail only its task, not the run reporting it.
    """
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - the user's __str__ raised: describe it instead
        return f"<unprintable {type(error).__name__}>"
    return text if isinstance(text, str) else f"<unprintable {type(error).__name__}>"


def first_line(error: BaseException | None) -> str:
    """``Type: first non-empty line of the message`` (some messages start with a newline)."""
    if error is None:
        return "no error recorded"
    text = next((ln.strip() for ln in shown(error).splitlines() if ln.strip()), "")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return `` Did you mean 'x'?`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


#: code whose frames a warning skips, to point at the user's line that caused it
_INTERNAL = (os.path.dirname(os.path.abspath(__file__)) + os.sep,)


def warn(message: str, category: type[Warning]) -> None:
    """Issue a warning attributed to the first caller outside pipeflow and luigi.

    A warning raised deep in pipeflow (a run, a task's instantiation through luigi) then
    names the line of the user's script or notebook cell, not pipeflow's internals.
    """
    internal: tuple[str, ...] = _INTERNAL
    luigi_file = getattr(sys.modules.get("luigi"), "__file__", None)
    if luigi_file:
        internal = (*internal, os.path.dirname(os.path.abspath(luigi_file)) + os.sep)
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            internal):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)

