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
import math
import numbers
import operator
import re
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
        local_scheduler: True (default): run on this machine with the embedded engine.
            False: share the run with other processes through luigi's central scheduler
            (``luigid``) at ``scheduler_url`` (or ``scheduler_host``/``scheduler_port``;
            neither: luigi's ``[core]`` configuration, by default ``localhost:8082``).
        scheduler_host: luigid's host name or IP address (with ``local_scheduler=False``).
        scheduler_port: luigid's port (with ``local_scheduler=False``).
        scheduler_url: luigid's URL, ``http://host:port/`` (luigi's ``[core] scheduler_url``
            form); instead of ``scheduler_host``/``scheduler_port``.
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
    local_scheduler: bool = True
    scheduler_host: str | None = None
    scheduler_port: int | None = None
    scheduler_url: str | None = dataclasses.field(default=None, repr=False)  # (a password)

    def __post_init__(self) -> None:
        fix = object.__setattr__
        fix(self, "workers", whole_number(
            self.workers, "workers", 1,
            ": it is how many tasks run at the same time. Pass e.g. workers=2."))
        if self.executor is not None and self.executor not in EXECUTORS:
            raise ParameterError(
                f"executor must be one of {', '.join(map(repr, EXECUTORS))} or None, not "
                f"{self.executor!r}.{did_you_mean(str(self.executor), EXECUTORS)}")
        if self.if_locked not in IF_LOCKED:
            raise ParameterError(
                f"if_locked must be one of {', '.join(map(repr, IF_LOCKED))}, not "
                f"{self.if_locked!r}: 'wait' for a task another process is running, or "
                f"'fail' it at once.{did_you_mean(str(self.if_locked), IF_LOCKED)}")
        for name in ("forced_all", "forced_all_upstream", "confirm", "abort"):
            fix(self, name, flag(getattr(self, name), name))
        for name in ("execution_summary", "progress"):
            value = getattr(self, name)
            fix(self, name, None if value is None else flag(value, name, " or None"))
        callbacks = self.callbacks
        if callable(callbacks) or isinstance(callbacks, (str, bytes)) or not all(
                callable(f) for f in _iterable(callbacks)):
            shown = getattr(callbacks, "__name__", None) if callable(callbacks) else None
            raise ParameterError(
                f"callbacks must be a list of functions taking an event, not {callbacks!r}."
                + (f" Pass callbacks=[{shown}]." if shown else ""))
        fix(self, "callbacks", tuple(callbacks))
        if self.cancel is not None and not callable(getattr(self.cancel, "cancel", None)):
            raise ParameterError(
                f"cancel must be a pipeflow.engines.CancelToken or None, not {self.cancel!r}.")
        if self.engine is not None and not callable(getattr(self.engine, "run", None)):
            raise ParameterError(
                f"engine must be an engine (an object with run(plan, sinks)) or None, not "
                f"{self.engine!r}.")
        self._check_scheduler()

    def _check_scheduler(self) -> None:
        """The luigid options: each of the right type, and used only where they mean something.

        Options naming a scheduler with ``local_scheduler=True`` are refused rather than
        ignored (luigi ignores them), so a run meant to be shared never runs alone.
        """
        fix = object.__setattr__
        fix(self, "local_scheduler", flag(self.local_scheduler, "local_scheduler"))
        given = [n for n in ("scheduler_host", "scheduler_port", "scheduler_url")
                 if getattr(self, n) is not None]
        if self.local_scheduler and given:
            raise ParameterError(
                f"{given[0]}={shown_url(getattr(self, given[0]))!r} names a central scheduler "
                f"(luigid), "
                f"but local_scheduler=True runs on this machine alone and would ignore it. "
                f"Pass local_scheduler=False to share the run through luigid, or leave out "
                f"{' and '.join(given)}.")
        if self.engine is not None and not self.local_scheduler:
            raise ParameterError(
                "engine= and local_scheduler=False both say where to run. Pass one of them: "
                "local_scheduler=False runs on luigid (pipeflow.engines.LuigiEngine).")
        if self.scheduler_url is not None and (self.scheduler_host is not None
                                               or self.scheduler_port is not None):
            raise ParameterError(
                f"scheduler_url={shown_url(self.scheduler_url)!r} and scheduler_host/"
                f"scheduler_port both "
                f"name luigid. Pass either scheduler_url='http://host:port/' or "
                f"scheduler_host= and scheduler_port=.")
        host = self.scheduler_host
        if host is not None and (not isinstance(host, str) or not host.strip()
                                 or host != host.strip() or any(c in host for c in "/:@ ")):
            raise ParameterError(
                f"scheduler_host must be a host name or IP address, such as 'localhost' or "
                f"'10.0.0.5', not {host!r} (no scheme, port or path: pass a whole URL as "
                f"scheduler_url=, a port as scheduler_port=).")
        if self.scheduler_port is not None:
            port = whole_number(self.scheduler_port, "scheduler_port", 1,
                                ": it is the TCP port luigid listens on (8082 by default).")
            if port > 65535:
                raise ParameterError(
                    f"scheduler_port must be a TCP port from 1 to 65535, not {port}: it is "
                    f"the port luigid listens on (8082 by default).")
            fix(self, "scheduler_port", port)
        url = self.scheduler_url
        if url is not None:
            import urllib.parse

            parts = None
            if isinstance(url, str) and url == url.strip():
                try:
                    parts = urllib.parse.urlsplit(url)
                    parts.port  # noqa: B018 - raises on a bad port
                except ValueError:
                    parts = None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ParameterError(
                    f"scheduler_url must be luigid's http(s) URL, such as "
                    f"'http://localhost:8082/', not {shown_url(url)!r}.")

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


def shown_url(url: Any) -> Any:
    """``url`` as it may be shown: a password in it (``http://user:pw@host/``) as ``***``.

    Anything that is not such a URL is returned as it is.

    Example:
        >>> shown_url("http://alice:pw@sched:8082/")
        'http://alice:***@sched:8082/'
    """
    if not isinstance(url, str) or "@" not in url:
        return url
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.password is None:
        # (unparsable, or no password: mask whatever sits between "://" and "@" after ":")
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
    user, _, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(
        netloc=f"{user.partition(':')[0]}:***@{host}"))


def _iterable(value: Any) -> list[Any]:
    try:
        return list(value)
    except TypeError:
        return [None]  # not callable: refused


def whole_number(value: Any, name: str, minimum: int, why: str = ".") -> int:
    """``value`` as an int if it is a whole number of at least ``minimum``.

    Numpy integers are whole numbers; bools, floats and strings are not.

    Args:
        value: what was given.
        name: how the caller named it, for the message (``workers``, ``Train.retries``).
        minimum: the smallest value allowed.
        why: the end of the message: what it is for and how to fix it.

    Raises:
        ParameterError: anything else.
    """
    try:
        count = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        count = None
    if count is None or count < minimum:
        raise ParameterError(
            f"{name} must be a whole number of at least {minimum}, not {value!r}{why}")
    return count


def seconds(value: Any, name: str, positive: bool, why: str = ".") -> float | None:
    """``value`` as a float if it is a finite number of seconds (None stays None).

    Args:
        value: what was given.
        name: how the caller named it, for the message.
        positive: above 0 (a timeout); else 0 or more (a delay).
        why: the end of the message: what it is for and how to fix it.

    Raises:
        ParameterError: anything else (a string, a bool, inf, nan, too small).
    """
    if value is None:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    number = float(value) if ok else math.nan
    if not (math.isfinite(number) and (number > 0 if positive else number >= 0)):
        raise ParameterError(
            f"{name} must be a number of seconds {'above' if positive else 'of at least'} 0"
            f", not {value!r}{why}")
    return number


def flag(value: Any, name: str, alternatives: str = "") -> bool:
    """``value`` as a bool if it is one (numpy bools, 0 and 1 too): never a string.

    ``forced_all="False"`` would be true, and delete outputs: it is refused.

    Raises:
        ParameterError: anything else.
    """
    if isinstance(value, bool) or (type(value).__name__ in ("bool", "bool_")
                                   and type(value).__module__ == "numpy"):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ParameterError(f"{name} must be True or False{alternatives}, not {value!r}.")


__all__ = ["EXECUTORS", "IF_LOCKED", "RunOptions", "flag", "seconds", "shown_url",
           "whole_number"]
