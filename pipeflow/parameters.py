"""luigi's parameter classes, re-exported so task code needs one import.

Example:
    >>> import pipeflow
    >>> class Train(pipeflow.tasks.TaskPickle):
    ...     model = pipeflow.Parameter(default="ols")
    ...     alpha = pipeflow.FloatParameter(default=0.1)
"""

import builtins
import contextlib
import datetime
import difflib
import json
import traceback
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import luigi
from luigi.parameter import (
    BoolParameter,
    ChoiceParameter,
    DateHourParameter,
    DateIntervalParameter,
    DateMinuteParameter,
    DateParameter,
    DateSecondParameter,
    DictParameter,
    EnumParameter,
    FloatParameter,
    IntParameter,
    ListParameter,
    MonthParameter,
    NumericalParameter,
    OptionalParameter,
    Parameter,
    TaskParameter,
    TimeDeltaParameter,
    TupleParameter,
    YearParameter,
)

from pipeflow.errors import ParameterError, UnusedParameterWarning, did_you_mean, warn

__all__ = [
    "BoolParameter",
    "ChoiceParameter",
    "DateHourParameter",
    "DateIntervalParameter",
    "DateMinuteParameter",
    "DateParameter",
    "DateSecondParameter",
    "DictParameter",
    "EnumParameter",
    "FloatParameter",
    "IntParameter",
    "ListParameter",
    "MonthParameter",
    "NumericalParameter",
    "OptionalParameter",
    "Parameter",
    "SecretParameter",
    "TaskParameter",
    "TimeDeltaParameter",
    "TupleParameter",
    "YearParameter",
]


class SecretParameter(luigi.Parameter):
    """A parameter whose value must never be shown or stored: passwords, tokens, API keys.

    Its value is given to ``run()`` as usual, but it never appears in file names, task ids,
    previews, logs, error messages, the execution summary or any record pipeflow writes
    (it is shown as ``***``). That holds for every form of the value: ``str``, ``repr``,
    ``ascii()``, JSON, URL-encoded and backslash-escaped, and for each leaf of a dict, list
    or tuple value. An exception of a failed task that quotes it (in its message, args,
    notes, file name, chain...) reaches you as a redacted copy of the same type. It is not
    *significant*: it does not change which outputs a task has, so two runs differing only
    in a secret share their outputs. If the secret selects different data (say, another
    account), add a plain parameter naming that data.

    Example:
        >>> class Fetch(pipeflow.tasks.TaskPqPandas):          # doctest: +SKIP
        ...     table = pipeflow.Parameter()
        ...     token = pipeflow.SecretParameter()
        ...     def run(self):
        ...         self.save(download(self.table, auth=self.token))
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["significant"] = False
        kwargs.setdefault("visibility", luigi.parameter.ParameterVisibility.PRIVATE)
        super().__init__(*args, **kwargs)


#: what a secret looks like wherever it would be shown
MASK = "***"


def is_secret(param: luigi.Parameter) -> bool:
    """Whether a parameter's value must never be shown."""
    return isinstance(param, SecretParameter)


def secret_forms(task: luigi.Task) -> tuple[str, ...]:
    """Every text form of ``task``'s secret parameter values, longest first (to redact).

    For each value (for a dict, list, tuple or set: each leaf value, recursively; keys are
    not secret): its ``str`` and ``repr``, ``ascii()``, JSON, URL-encoded and
    ``unicode_escape`` forms, and how it shows inside a longer quoted string. Empty
    strings, ``None`` and booleans are no secrets. Made once per task instance.
    """
    d = task.__dict__
    hit = d.get("_pipeflow_secret_forms")
    if hit is None:
        found: set[str] = set()
        for name, param in task.get_params():
            if is_secret(param) and name in task.param_kwargs:
                for leaf in _leaves(task.param_kwargs[name]):
                    found |= _forms(leaf)
        found = {f for f in found if f.strip("*")}  # the mask itself hides nothing
        hit = d["_pipeflow_secret_forms"] = tuple(sorted(found, key=lambda f: (-len(f), f)))
    return hit  # type: ignore[no-any-return]


def _leaves(value: Any, depth: int = 0) -> Iterable[Any]:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, Mapping) and depth < 20:
        for v in value.values():
            yield from _leaves(v, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)) and depth < 20:
        for v in value:
            yield from _leaves(v, depth + 1)
    else:
        yield value


def _forms(value: Any) -> set[str]:
    """The ways ``value`` can show in text."""
    if isinstance(value, bytes):
        out = {repr(value)[2:-1]}
        value = value.decode("utf-8", "backslashreplace")
    else:
        out = set() if isinstance(value, str) else {_safe(repr, value)}
    text = _safe(str, value)
    if not text:
        return set()
    out.add(text)
    quoted = [repr(text), ascii(text), json.dumps(text), json.dumps(text, ensure_ascii=False),
              repr(text.encode("utf-8", "surrogatepass"))[1:]]
    for q in quoted:  # masking what is inside the quotes keeps them: KeyError('***')
        inner = q[1:-1]
        out.add(inner)
        if q[0] == "'":  # inside a longer string whose repr is in double quotes
            out.add(inner.replace("\\'", "'"))
        else:  # ... or in single quotes
            out.add(inner.replace("'", "\\'"))
    out |= {urllib.parse.quote(text, safe=""), urllib.parse.quote(text),
            urllib.parse.quote_plus(text), text.encode("unicode_escape").decode("ascii")}
    return {f for f in out if f}


def _safe(show: Any, value: Any) -> str:
    try:
        return str(show(value))
    except Exception:  # noqa: BLE001 - a value that cannot show itself shows nothing
        return ""


def redact(text: str, task: luigi.Task) -> str:
    """``text`` with every form of each secret parameter value of ``task`` as ``***``.

    Repeats until no form is left (masking one occurrence can join text around it into
    another), so the result never contains one. Values of any length are masked: a very
    short one (a few characters) also masks unrelated text that happens to contain it.
    """
    forms = secret_forms(task)
    while True:
        found = [f for f in forms if f in text]
        if not found:
            return text
        for f in found:
            text = text.replace(f, MASK)


def redact_error(exc: BaseException, task: luigi.Task) -> BaseException:
    """``exc`` as users may see it: without ``task``'s secret parameter values.

    When anything ``exc`` shows (its str, repr, args, notes, ``OSError.filename``,
    ``SyntaxError.text`` and other attributes, its cause, context or group members)
    contains a secret, the result is a copy of the same type (``isinstance`` and the type's
    name hold) whose every text is redacted; its other attributes become their redacted
    ``repr``. The traceback is kept, but the local variables of its finished frames are
    cleared (they may hold the secret). Without a secret in it, ``exc`` itself is returned.
    """
    if not secret_forms(task):
        return exc
    try:
        return _Scrubber(task).error(exc, {})
    except Exception:  # noqa: BLE001 - never let the secret out: describe it instead
        from pipeflow.errors import PipeflowError

        return PipeflowError(redact(f"{type(exc).__name__}: {_safe(str, exc)}", task))


#: exception groups (Python 3.11+)
_GROUPS: tuple[type, ...] = tuple(
    g for g in [getattr(builtins, "BaseExceptionGroup", None)] if g is not None)

#: attributes builtin exceptions show in their text (OSError, SyntaxError, ImportError...)
_SHOWN_ATTRS = ("errno", "strerror", "filename", "filename2", "msg", "lineno", "offset",
                "text", "end_lineno", "end_offset", "name", "path", "obj", "encoding",
                "object", "start", "end", "reason", "code", "value")


class _Scrubber:
    def __init__(self, task: luigi.Task):
        self.task = task
        self.forms = secret_forms(task)

    def leaks(self, text: str) -> bool:
        return any(f in text for f in self.forms)

    def text(self, text: str) -> str:
        return redact(text, self.task)

    def value(self, value: Any) -> Any:
        """An attribute or arg of an exception that is being copied."""
        if value is None or isinstance(value, (bool, int, float)):
            return MASK if self.leaks(repr(value)) else value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, BaseException):
            return self.error(value, {})
        shown = _safe(repr, value)
        if isinstance(value, bytes) and not self.leaks(shown):
            return value
        return self.text(shown)

    def error(self, exc: BaseException, done: dict[int, BaseException]) -> BaseException:
        """``exc``, or a redacted copy; ``done``: what was already scrubbed, by id."""
        if id(exc) in done:
            return done[id(exc)]
        done[id(exc)] = exc  # a chain that loops back to it
        with contextlib.suppress(Exception):
            traceback.clear_frames(exc.__traceback__)
        members = getattr(exc, "exceptions", None) if isinstance(exc, _GROUPS) else None
        scrubbed = None if members is None else [self.error(e, done) for e in members]
        shown = [*exc.args, *vars(exc).values(), *(_attr(exc, a) for a in _SHOWN_ATTRS)]
        own = [_safe(str, exc), _safe(repr, exc), *map(str, getattr(exc, "__notes__", ())),
               *(_safe(f, v) for v in shown for f in (str, repr))]
        out = exc
        if any(map(self.leaks, own)) or (members is not None and scrubbed != list(members)):
            out = done[id(exc)] = self.copy(exc, scrubbed)
        for link in ("__cause__", "__context__"):
            old = getattr(exc, link)
            if old is not None:
                new = self.error(old, done)
                if new is not old or out is not exc:
                    setattr(out, link, new)
        if out is not exc:
            out.__suppress_context__ = exc.__suppress_context__
        return out

    def copy(self, exc: BaseException, members: list[BaseException] | None) -> BaseException:
        cls = getattr(type(exc), "_pipeflow_redacted_of", type(exc))
        args = tuple(self.value(a) for a in exc.args)
        if members is not None:
            args = (self.text(str(exc.args[0]) if exc.args else ""), tuple(members))
        try:
            out = _new(_redacted_class(cls), args, members)
        except Exception:  # noqa: BLE001 - a type that cannot be copied: describe it
            from pipeflow.errors import PipeflowError

            out = PipeflowError(self.text(f"{cls.__name__}: {_safe(str, exc)}"))
            out.__traceback__ = exc.__traceback__
            return out
        for name in _SHOWN_ATTRS:
            if name in vars(cls) or any(name in vars(b) for b in cls.__mro__
                                        if b.__module__ == "builtins"):
                with contextlib.suppress(Exception):
                    setattr(out, name, self.value(getattr(exc, name)))
        for name, value in vars(exc).items():
            if name == "__notes__":
                value = [self.text(str(n)) for n in value]
            else:
                value = self.value(value)
            with contextlib.suppress(Exception):
                setattr(out, name, value)
        out._pipeflow_str = self.text(_safe(str, exc))  # type: ignore[attr-defined]
        out._pipeflow_repr = self.text(_safe(repr, exc))  # type: ignore[attr-defined]
        out.__traceback__ = exc.__traceback__
        return out


def _attr(exc: BaseException, name: str) -> Any:
    try:
        return getattr(exc, name, None)
    except Exception:  # noqa: BLE001 - a property that raises shows nothing
        return None


def _new(kind: type[BaseException], args: tuple[Any, ...],
         members: list[BaseException] | None) -> BaseException:
    """An instance of ``kind`` (a redacted copy's class) with ``args``; no ``__init__``."""
    if members is not None:
        out = kind.__new__(kind, args[0], members)
    else:
        try:
            out = kind.__new__(kind)
        except TypeError:  # a __new__ that wants the arguments
            out = kind.__new__(kind, *args)
    out.args = args
    return out


_REDACTED: dict[type, type] = {}


def _redacted_class(cls: type[BaseException]) -> type[BaseException]:
    """A subclass of ``cls`` of the same name that shows the texts it was given."""
    kind = _REDACTED.get(cls)
    if kind is None:
        ns = {"__str__": lambda self: self._pipeflow_str,
              "__repr__": lambda self: self._pipeflow_repr,
              "__reduce__": _reduce_redacted,
              "__module__": cls.__module__, "__qualname__": cls.__qualname__,
              "__doc__": cls.__doc__, "_pipeflow_redacted_of": cls}
        meta: Any = type(cls)
        kind = _REDACTED[cls] = meta(cls.__name__, (cls,), ns)
    return kind


def _reduce_redacted(self: BaseException) -> tuple[Any, ...]:
    """Pickle a redacted copy (to send it back from a worker process) by its texts."""
    state = dict(vars(self))
    members = getattr(self, "exceptions", None) if isinstance(self, _GROUPS) else None
    attrs = {a: getattr(self, a) for a in _SHOWN_ATTRS
             if a not in state and hasattr(self, a) and not isinstance(getattr(self, a),
                                                                        BaseException)}
    return (_rebuild_redacted, (self._pipeflow_redacted_of, self.args,  # type: ignore
                                None if members is None else list(members), {**attrs, **state}))


def _rebuild_redacted(cls: type[BaseException], args: tuple[Any, ...],
                      members: list[BaseException] | None,
                      state: dict[str, Any]) -> BaseException:
    out = _new(_redacted_class(cls), args, members)
    for name, value in state.items():
        with contextlib.suppress(Exception):
            setattr(out, name, value)
    return out


# -- checking parameter values ---------------------------------------------------------------

# (parameter class, accepted types, how the type is named): subclasses before their bases
_EXPECTED: list[tuple[type[Any], tuple[type, ...], str]] = [
    (BoolParameter, (bool,), "a bool"),
    (IntParameter, (int,), "an int"),
    (FloatParameter, (int, float), "a float"),
    (DateHourParameter, (datetime.datetime,), "a datetime"),
    (DateMinuteParameter, (datetime.datetime,), "a datetime"),
    (DateSecondParameter, (datetime.datetime,), "a datetime"),
    (DateParameter, (datetime.date,), "a date"),
    (MonthParameter, (datetime.date,), "a date"),
    (YearParameter, (datetime.date,), "a date"),
    (TimeDeltaParameter, (datetime.timedelta,), "a timedelta"),
    (ListParameter, (list, tuple), "a list"),
    (TupleParameter, (list, tuple), "a tuple"),
    (DictParameter, (Mapping,), "a dict"),
]


def check_value(cls: type[luigi.Task], name: str, param: luigi.Parameter, value: Any) -> Any:
    """Check (and, from a string, parse) a value given to a typed parameter.

    A string is parsed the way the command line would (``'3'`` for an IntParameter), so
    values read from files or the CLI work; anything else must already have the type.

    Returns:
        The value to use.

    Raises:
        ParameterError: the value does not fit the parameter's type.
    """
    expected = _expected(param)
    if expected is None:
        return value  # a plain Parameter takes any value (d6tflow code passes numbers)
    types, what, optional = expected
    if type(value) in types or (value is None and (optional or param._default is None)):
        return value  # default=None declares None a legal value (d6tflow code relies on it)
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return value
    if isinstance(value, datetime.datetime) and datetime.date in types:
        return value
    if isinstance(value, str):
        try:
            return param.parse(value)
        except Exception:  # noqa: BLE001 - any parse failure is the same user error
            pass
    raise wrong_value(cls, name, param, value, what)


_EXPECTED_BY_CLASS: dict[type, tuple[tuple[type, ...], str, bool] | None] = {}


def _expected(param: luigi.Parameter) -> tuple[tuple[type, ...], str, bool] | None:
    """(accepted types, how they are named, None allowed) for a parameter; cached per class."""
    if isinstance(param, EnumParameter):
        return (param._enum,), f"a member of {param._enum.__name__}", False
    kind = type(param)
    if kind not in _EXPECTED_BY_CLASS:
        hit = next(((types, what) for base, types, what in _EXPECTED if issubclass(kind, base)),
                   None)
        optional = any("Optional" in c.__name__ for c in kind.__mro__)
        _EXPECTED_BY_CLASS[kind] = None if hit is None else (*hit, optional)
    return _EXPECTED_BY_CLASS[kind]


def wrong_value(cls: type[luigi.Task], name: str, param: luigi.Parameter, value: Any,
                what: str) -> ParameterError:
    """The error for a value that does not fit its parameter."""
    shown = MASK if is_secret(param) else f"{value!r} ({type(value).__name__})"
    example = {"a bool": "True", "an int": "3", "a float": "0.5", "a list": "[1, 2]",
               "a tuple": "(1, 2)", "a dict": "{'a': 1}"}.get(what, "...")
    if isinstance(param, EnumParameter):
        members = list(param._enum.__members__)
        example = f"{param._enum.__name__}.{members[0]}" if members else example
    return ParameterError(
        f"{cls.__name__}: parameter '{name}' must be {what}, but got {shown}. "
        f"{cls.__name__} declares {describe_param(name, param)}. Pass e.g. "
        f"{cls.__name__}({name}={example})."
    )


# -- describing parameters in error messages ----------------------------------------------

_TYPE_NAMES = {
    "SecretParameter": "secret",
    "Parameter": "str",
    "IntParameter": "int",
    "FloatParameter": "float",
    "BoolParameter": "bool",
    "NumericalParameter": "number",
    "OptionalParameter": "str or None",
}


def type_name(param: luigi.Parameter) -> str:
    """Short type of a parameter for messages: ``int``, ``float``, ``date``..."""
    for cls in type(param).__mro__:
        if cls.__name__ in _TYPE_NAMES:
            return _TYPE_NAMES[cls.__name__]
        if cls.__name__.endswith("Parameter") and cls.__module__.startswith("luigi"):
            return cls.__name__[: -len("Parameter")].lower() or "str"
    return type(param).__name__


def describe_param(name: str, param: luigi.Parameter) -> str:
    """``learning_rate (float, default 0.05)`` or ``model (str, required)``."""
    default = param._default
    if default is luigi.parameter._no_value:
        return f"{name} ({type_name(param)}, required)"
    shown = MASK if is_secret(param) else repr(default)
    return f"{name} ({type_name(param)}, default {shown})"


def accepted(classes: Iterable[type[luigi.Task]]) -> str:
    """What each class accepts: ``Train accepts: alpha (float, default 0.1), model (str, ...)``."""
    lines = []
    for cls in classes:
        params = sorted(cls.get_params())
        described = ", ".join(describe_param(n, p) for n, p in params) or "no parameters"
        lines.append(f"{cls.__name__} accepts: {described}")
    return "\n".join(lines)


#: how close an undeclared name must be to a declared one to be taken for its typo
TYPO_CUTOFF = 0.6


def sort_undeclared(given: Iterable[str], declared: Collection[str]) -> tuple[dict[str, str],
                                                                             list[str]]:
    """Split the names in ``given`` that are not in ``declared``: typos and the rest.

    A name is a typo when it is a near-miss of a declared name that was not given itself
    (``learning_rat`` for ``learning_rate``); ``param2`` given along with ``param`` is not a
    typo of it. d6tflow code shares one params dict across flows, so the rest are ignored.

    Returns:
        ``({typo: meant name}, [other undeclared names])``.
    """
    given = list(given)
    free = [d for d in declared if d not in given]
    typos: dict[str, str] = {}
    other: list[str] = []
    for name in given:
        if name in declared:
            continue
        close = difflib.get_close_matches(name, free, n=1, cutoff=TYPO_CUTOFF)
        if close:
            typos[name] = close[0]
        else:
            other.append(name)
    return typos, other


def unknown_parameter(name: str, classes: list[type[luigi.Task]], where: str,
                      meant: str | None = None) -> ParameterError:
    """The error for a parameter that none of ``classes`` declares (``meant``: its fix)."""
    names = {n for cls in classes for n, _ in cls.get_params()}
    hint = f" Did you mean '{meant}'?" if meant else did_you_mean(name, names)
    return ParameterError(
        f"{where} has a parameter '{name}' that no task declares.{hint}\n{accepted(classes)}"
    )


_WARNED: set[tuple[type, str]] = set()  # (class, name) warned about by a direct instantiation


def check_undeclared(given: Iterable[str], classes: list[type[luigi.Task]], where: str,
                     warned: set[Any] | None = None, of: str = "any task of this flow") -> None:
    """Apply the rule for names that none of ``classes`` declares (see :func:`sort_undeclared`).

    Args:
        given: the parameter names given.
        classes: the task classes they were given to.
        where: who gave them, for the messages (``Workflow(Train, params)``).
        warned: names already warned about by the same giver (updated); None: once per class
            and name for the whole process (keywords given to a task class directly).
        of: what the names are not parameters of, for the warning.

    Raises:
        ParameterError: a name is a near-miss of a declared one (a typo), with "did you mean".

    Warns:
        UnusedParameterWarning: once per giver for the other undeclared names (ignored).
    """
    declared = {n for cls in classes for n, _ in cls.get_params()}
    typos, ignored = sort_undeclared(given, declared)
    for typo, meant in typos.items():
        raise unknown_parameter(typo, classes, where, meant)
    if warned is None:
        new = [n for n in ignored if (classes[0], n) not in _WARNED]
        _WARNED.update((classes[0], n) for n in new)
    else:
        new = [n for n in ignored if n not in warned]
        warned.update(new)
    if new:
        one = len(new) == 1
        what = "is not a parameter" if one else "are not parameters"
        warn(
            f"{where}: {', '.join(repr(n) for n in new)} {what} "
            f"of {of}, so {'it is' if one else 'they are'} ignored (d6tflow code shares one "
            f"params dict across flows). If you meant a parameter, check its name.\n"
            f"{accepted(classes)}", UnusedParameterWarning)


def missing_parameter(cls: type[luigi.Task], name: str) -> ParameterError:
    """The error for a required parameter given no value."""
    params = dict(cls.get_params())
    return ParameterError(
        f"{cls.__name__} needs a value for its parameter "
        f"{describe_param(name, params[name])}, which has no default. Pass it, e.g. "
        f"Workflow({cls.__name__}, {{'{name}': ...}}) or {cls.__name__}({name}=...)."
    )
