"""Every public exception pipeflow raises.

Each error says what went wrong, why, and how to fix it, naming the task (with its
parameters) and the file involved where there is one. All derive from
:class:`PipeflowError`, so ``except pipeflow.errors.PipeflowError`` catches them all.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
import sysconfig
import traceback
import warnings
from collections.abc import Iterable, Sequence


class PipeflowError(Exception):
    """Base class of every pipeflow error.

    In a notebook (IPython), a pipeflow error shows short: the frames of your code (the
    cell, your modules) and the message, pipeflow's and other libraries' frames hidden;
    :func:`full_traceback` prints every frame. A plain ``python script.py`` shows Python's
    usual traceback.

    Example:
        >>> try:
        ...     raise PipeflowError("boom")
        ... except PipeflowError as exc:
        ...     str(exc)
        'boom'
    """

    def _render_traceback_(self) -> list[str]:
        """The lines IPython shows for this error: :func:`short_traceback`, in colour."""
        return _rendered(self)


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


class StorageAccessError(PipeflowError):
    """A remote storage location (``s3://bucket/prefix``) cannot be used.

    Its bucket does not exist, the credentials are refused, or the store cannot be
    reached. Raised before any task runs, nothing written; the message names the URL,
    never the credentials.
    """


class MissingDependencyError(PipeflowError, ImportError):
    """A format needs an optional package that is not installed (its extra names it)."""


class StorageDependencyError(MissingDependencyError, ParameterError):
    """A storage URL's file system needs a package that is not installed (``gs://``: gcsfs).

    The message names the package and the extra that installs it (``pipeflow[gcs]``).
    Also a :class:`ParameterError`: the URL given cannot be used as it stands.
    """


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


class SchedulerError(PipeflowError, RuntimeError):
    """luigi's central scheduler (``luigid``) could not be used for a run.

    Attributes:
        url: the scheduler's URL.
        result: the :class:`pipeflow.events.RunResult` so far (None when nothing started).
    """

    def __init__(self, message: str, url: str, result: object = None):
        super().__init__(message)
        self.url = url
        self.result = result


class SchedulerUnreachableError(SchedulerError):
    """luigid did not answer when the run started: nothing was run."""


class SchedulerLostError(SchedulerError):
    """luigid stopped answering during a run: tasks that finished keep their outputs."""


class RemoteTaskError(PipeflowError):
    """A task of this run failed in another process sharing the run through luigid.

    Its traceback is in that process's output and run history; this one only knows its
    first line (as luigid keeps it).
    """

    no_traceback = "it failed in another process (its traceback is in that process's output)"


class RunInterrupted(KeyboardInterrupt):
    """A run was stopped by Ctrl-C or a notebook's Stop button (a ``KeyboardInterrupt``).

    Raised once the run has cleaned up: the tasks that were running are stopped and their
    partial outputs removed; finished tasks keep their outputs. Its message says which
    tasks did not finish. In a notebook it shows as that one line (:func:`full_traceback`
    prints where the run was when it was stopped). Still a ``KeyboardInterrupt``: code
    catching that keeps working. Raised in IPython only: elsewhere (a script, the
    ``pipeflow`` command) a run stopped by Ctrl-C raises a plain ``KeyboardInterrupt`` with
    the same message, as Python exits with the status of an interrupt (130) only for that.

    Attributes:
        result: the :class:`pipeflow.events.RunResult` of the run (None if it had not
            started).
    """

    def __init__(self, message: str, result: object = None):
        super().__init__(message)
        self.result = result

    def _render_traceback_(self) -> list[str]:
        """One line in a notebook: what was stopped, and that nothing partial was kept."""
        _remember(self)
        return [f"{_RED}{type(self).__name__}{_RESET}: {shown(self)}"]


class TaskNotFoundError(PipeflowError, ValueError):
    """A task id names no task in the task store (:mod:`pipeflow.trees`).

    Attributes:
        task_id: the id that was looked for.
    """

    def __init__(self, message: str, task_id: str):
        super().__init__(message)
        self.task_id = task_id


class TaskStoreError(PipeflowError):
    """The task store of :mod:`pipeflow.trees` (an SQLite file) cannot be opened or written."""


class UnknownExecutorError(PipeflowError, LookupError):
    """A stored task names an executor id that no ``@executor`` registered."""


class TaskCancelledError(PipeflowError):
    """A task of a task tree was cancelled (``TaskManager.cancel_task``) before it finished."""


class LinkDeniedError(PipeflowError, ValueError):
    """A link (``TaskCreator.from_link``/``from_mixed``) to another user's tasks was refused."""


class TreeTaskError(PipeflowError):
    """An executor of a task tree reported an error: it returned a dict with an ``error`` key.

    Attributes:
        result: the dict it returned (stored as the task's result).
    """

    def __init__(self, message: str, result: object = None):
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.result))


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



# -- short tracebacks in notebooks ----------------------------------------------------------------

class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text.

    An exception that comes back from a worker process (``executor='process'``) has lost
    its frames; this, chained as its ``__cause__`` (as ``concurrent.futures`` does), shows
    them: Python prints it above the exception, and a notebook's short traceback takes the
    user's frames from it.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


_RED, _GREEN, _RESET = "\x1b[0;31m", "\x1b[0;32m", "\x1b[0m"
#: where a frame of a traceback printed as text starts
_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>.+)$')
#: the last error shown short, for full_traceback(), and the cell (execution count) it was in
_LAST: list[tuple[BaseException, int | None]] = []
#: one line at the end of a short traceback
HIDDEN = "{n} library frame(s) hidden: pipeflow.full_traceback() prints the full traceback."


def _library_dirs() -> tuple[tuple[str, ...], str]:
    """Folders whose code is not the user's (the Python installation, packages); pipeflow's."""
    own = os.path.dirname(os.path.abspath(__file__)) + os.sep
    dirs = {own}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(Exception):
            dirs.add(os.path.abspath(sysconfig.get_paths()[key]) + os.sep)
    for name in ("luigi", "IPython", "ipykernel"):
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            dirs.add(os.path.dirname(os.path.abspath(file)) + os.sep)
    return tuple(sorted(dirs)), own


def is_library(filename: str) -> bool:
    """Whether a frame of ``filename`` is library code (pipeflow, Python's, a package's)."""
    if filename.startswith("<frozen") or filename.startswith("<string"):
        return filename.startswith("<frozen")
    dirs, _own = _library_dirs()
    return os.path.abspath(filename).startswith(dirs)


def _frames(error: BaseException) -> list[tuple[str, int, str, str]]:
    """(file, line, function, code) of each frame of ``error``, outermost first."""
    if error.__traceback__ is not None:
        return [(f.filename, f.lineno or 0, f.name, (f.line or "").strip())
                for f in traceback.extract_tb(error.__traceback__)]
    remote = error.__cause__
    if isinstance(remote, RemoteTraceback):
        return text_frames(remote.text)
    return []


def text_frames(text: str) -> list[tuple[str, int, str, str]]:
    """The frames of a traceback printed as text (its last exception's)."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call")]
    out: list[tuple[str, int, str, str]] = []
    for i in range(starts[-1] if starts else 0, len(lines)):
        m = _FRAME.match(lines[i])
        if m:
            code = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith(
                "    ") else ""
            out.append((m["file"], int(m["line"]), m["name"], code))
    return out


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from (or while handling), oldest first."""
    out: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, RemoteTraceback):
            out.append(current)
        current = (current.__cause__ if current.__cause__ is not None
                   else None if current.__suppress_context__ else current.__context__)
    return out[::-1]


def _where(filename: str, line: int, name: str, color: bool) -> str:
    label = None
    shell = _ipython()
    if shell is not None:
        with contextlib.suppress(Exception):
            label = shell.compile.format_code_name(filename)  # type: ignore[attr-defined]
    place = f"{label[0]} {label[1]}" if label else f'File "{filename}"'
    if color:
        place = f"{_GREEN}{place}{_RESET}"
    return f"  {place}, line {line}, in {name}"


def _ipython() -> object | None:
    module = sys.modules.get("IPython")
    get = getattr(module, "get_ipython", None)
    return get() if callable(get) else None


def short_traceback(error: BaseException, color: bool = False) -> list[str]:
    """The lines of ``error``'s traceback without library frames (what a notebook shows).

    Each exception of the chain (the first failure of a run, then the run's error) shows
    the frames of the user's code (a notebook cell, their modules) and its message; the
    frames of pipeflow, Python and installed packages are hidden (of an exception raised
    inside a package, its innermost frame stays: where it was raised). A last line counts
    the hidden frames and names :func:`full_traceback`.

    Args:
        error: the exception.
        color: colour the exception names and places (ANSI, as IPython does).
    """
    _dirs, own = _library_dirs()
    lines: list[str] = []
    hidden = 0
    for k, exc in enumerate(_chain(error)):
        if k:
            lines.append("The above exception was the direct cause of:" if exc.__cause__
                         is not None else "During handling of the above exception:")
        frames = _frames(exc)
        keep = [not is_library(f[0]) for f in frames]
        if frames and not keep[-1] and not os.path.abspath(frames[-1][0]).startswith(own):
            keep[-1] = True  # raised inside a package (pandas...): where
        hidden += keep.count(False)
        for (file, line, name, code), kept in zip(frames, keep):
            if kept:
                lines.append(_where(file, line, name, color))
                if code:
                    lines.append(f"    {code}")
        head, sep, rest = "".join(traceback.format_exception_only(exc)).partition(":")
        if color:
            head = f"{_RED}{head}{_RESET}"
        lines.extend((head + sep + rest).rstrip("\n").splitlines())
    if hidden:
        lines.append(HIDDEN.format(n=hidden))
    return lines


def _remember(error: BaseException) -> None:
    _LAST[:] = [(error, _cell_of(error))]


def _cell_of(error: BaseException) -> int | None:
    """The notebook cell (its ``In[n]``) whose code raised ``error``: its first frame's."""
    shell = _ipython()
    if shell is None:
        return None
    for file, _line, _name, _code in _frames(error):
        with contextlib.suppress(Exception):
            label = shell.compile.format_code_name(file)  # type: ignore[attr-defined]
            found = re.fullmatch(r"In ?\[(\d+)\]", str(label[1])) if label else None
            if found:
                return int(found[1])
    return None


def _rendered(error: BaseException) -> list[str]:
    """IPython's lines for ``error`` (the full traceback if shortening it fails)."""
    _remember(error)
    try:
        return short_traceback(error, color=True)
    except Exception:  # noqa: BLE001 - never lose the error for a display problem
        return "".join(traceback.format_exception(error)).splitlines()


def full_traceback(error: BaseException | None = None) -> None:
    """Print the full traceback of the last error a notebook showed short (or of ``error``).

    Every frame, pipeflow's included, as Python prints it: what to attach to a bug report.
    Works in a later cell than the one that failed. A first line names the error printed
    (its type, the first line of its message and the cell it was shown in), and says so
    when a later error (one that was not pipeflow's) was shown in full since.

    Args:
        error: the exception; default: the last pipeflow error shown short in this session
            (else Python's last unhandled error, ``sys.last_value``).

    Example:
        >>> pipeflow.full_traceback()  # doctest: +SKIP
    """
    latest = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if error is not None:
        head = f"Full traceback of {first_line(error)}"
    elif _LAST:
        error, cell = _LAST[0]
        where = f" (cell [{cell}])" if cell is not None else ""
        head = f"The last pipeflow error shown short{where}: {first_line(error)}"
        if latest is not None and latest is not error and latest not in _chain(error):
            head += (f"\n(The later error {first_line(latest)} was not a pipeflow error: "
                     f"Python showed its full traceback.)")
    elif latest is not None:
        error = latest
        head = f"Python's last error: {first_line(error)}"
    else:
        sys.stderr.write("pipeflow.full_traceback(): no error has been shown yet.\n")
        return
    sys.stderr.write(head + "\n" + "".join(traceback.format_exception(error)))
    sys.stderr.flush()
