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
import decimal
import difflib
import enum
import fractions
import functools
import itertools
import linecache
import math
import numbers
import os
import pathlib
import re
import traceback
import types
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
    (it is shown as ``***``). That holds for every spelling of the value: as written,
    backslash-escaped (``repr``, ``ascii()``, JSON...) or %-encoded any number of times, its
    first or last 12 or more characters when the rest was cut off, and for each leaf of a
    dict, list or tuple value. An exception of a failed task that quotes it (in its message,
    args, notes, file name, chain, type name, or a traceback frame's file, function or source
    line) reaches you as a redacted copy of the same type. It is not
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
#: the note on a redacted error whose traceback left frames out (pipeflow's words: unmasked)
LEFT_OUT = "({n} traceback frame(s) left out: they show a secret parameter value)"
#: pipeflow's own notes in a text being redacted: kept as they are (they show no value)
LEFT_OUT_NOTE = _OWN = re.compile(re.escape(LEFT_OUT).replace(re.escape("{n}"), r"\d+"))


def is_secret(param: luigi.Parameter) -> bool:
    """Whether a parameter's value must never be shown."""
    return isinstance(param, SecretParameter)


def _secret_texts(task: luigi.Task) -> tuple[str, ...]:
    """The text of each secret parameter value of ``task``, longest first (to redact).

    For a dict, list, tuple or set: each leaf value, recursively (keys are not secret); for
    bytes, the text they decode to; for a value that is not text, its ``str`` and ``repr``.
    Empty values, ``None``, booleans and values made only of ``*`` hide nothing. Made once
    per task instance.
    """
    d = task.__dict__
    hit = d.get("_pipeflow_secrets")
    if hit is None:
        found: set[str] = set()
        for name, param in task.get_params():
            if is_secret(param) and name in task.param_kwargs:
                for leaf in _leaves(task.param_kwargs[name]):
                    found |= _texts(leaf)
        hit = d["_pipeflow_secrets"] = tuple(sorted(
            (t for t in found if t.strip("*")), key=lambda t: (-len(t), t)))
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


def _texts(value: Any) -> set[str]:
    """The texts ``value`` shows as (each is then found in any escaped spelling)."""
    if isinstance(value, bytes):
        return {value.decode("utf-8", "backslashreplace")}
    if isinstance(value, str):
        return {value}
    return {_safe(str, value), _safe(repr, value)} - {""}


def _safe(show: Any, value: Any) -> str:
    try:
        return str(show(value))
    except Exception:  # noqa: BLE001 - a value that cannot show itself shows nothing
        return ""


# -- finding a secret in text ----------------------------------------------------------------
#
# A secret shows in text raw or escaped, often several times over: repr() of an exception
# whose message holds a repr (KeyError(f"{token!r}")), JSON of that, a URL of it. Rather than
# listing forms, each character of the value is matched in any of its spellings: itself; a
# backslash escape with any number of backslashes before it (\', \\\', \n, \\n, \xe9,
# \\u00e9, \U0001f600, a JSON surrogate pair, the UTF-8 bytes as \xc3\xa9); %-encoded any
# number of times (%27, %2527, + for a space). So text matches when some way of decoding it
# gives the value, however deep the escaping. A value cut short (CPython keeps 200
# characters of a repr in int()'s message; libraries print value[:50] + "...") shows only its
# start or end: those are masked too when at least FRAGMENT characters long.
#
# Cost: one regular expression per task's values, compiled on its first failure. A run of
# backslashes in the text is matched by one repetition only (the value's own backslashes
# and the escape of the character after them are one unit; a match starts at the start of
# such a run), so the time is about linear in the text, not polynomial in its backslashes.

#: the shortest start or end of a longer secret value that is masked where the rest was cut
FRAGMENT = 12
#: how far back, in characters of text per character of the value, the start of the end of a
#: cut value is looked for: an escaped character takes fewer on average unless escaped more
#: than three times (eight backslashes); what lies further back is not masked
_WIDEST = 16
#: more starts or ends of a cut value than this in one text: masked from the first on
_MOST_CUTS = 64
#: one backslash, as such or %-encoded (any number of times)
_BACKSLASH = r"(?:\\|%(?:25)*5[cC])"
#: not just after a backslash (a match including it starts earlier)
_RUN_START = r"(?<!\\)(?<!%5[cC])(?<!%255[cC])(?<!%25255[cC])"
_NAMED = {"\n": "n", "\r": "r", "\t": "t", "\b": "b", "\f": "f", "\v": "v", "\a": "a"}


def _hex(number: int, width: int) -> str:
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d
                   for d in f"{number:0{width}x}")


def _spellings(char: str) -> tuple[list[str], list[str]]:
    """Regular expressions for ``char`` (not a backslash): itself, and escaped.

    The escaped ones are what follows the backslashes of an escape (``n`` for a newline).
    """
    if char.isascii() and (char.isalnum() or char == "_"):
        return [char], []  # no encoding changes it
    raw = char.encode("utf-8", "surrogatepass")
    spelled = [re.escape(char)]
    if char not in ".-~":  # what %-encoding keeps
        spelled.append("".join(f"%(?:25)*{_hex(b, 2)}" for b in raw))
    if char == " ":
        spelled.append(r"\+|%(?:25)*2[bB]")  # quote_plus(), then maybe %-encoded
    point = ord(char)
    bodies = [_NAMED[char]] if char in _NAMED else []
    if char.isascii() and not char.isalnum():
        bodies.append(re.escape(char))  # \' \" \/ and what re.escape() does
        if char not in ".-~":  # ... then %-encoded: json.dumps, then quote(): %5C%22
            bodies.append(f"%(?:25)*{_hex(point, 2)}")
    if point < 0x100:
        bodies.append("x" + _hex(point, 2))
    if point < 0x10000:
        bodies.append("u" + _hex(point, 4))
    else:
        low = point - 0x10000
        bodies += ["U" + _hex(point, 8), f"u{_hex(0xD800 + (low >> 10), 4)}{_BACKSLASH}+"
                   f"u{_hex(0xDC00 + (low & 0x3FF), 4)}"]
    if not char.isascii():
        bodies.append(f"{_BACKSLASH}+".join("x" + _hex(b, 2) for b in raw))
    return spelled, bodies


@functools.lru_cache(maxsize=4096)
def _unit(backslashes: int, char: str, first: bool = False) -> str:
    """A regular expression for ``backslashes`` backslashes then ``char`` (may be empty).

    ``first``: it starts a match, which then starts where a run of backslashes starts.
    """
    start = _RUN_START if first else ""
    if not char:
        return f"(?:{start}{_BACKSLASH}{{{backslashes},}})"
    spelled, bodies = _spellings(char)
    if backslashes:  # its own backslashes and those escaping the character: one run
        return f"(?:{start}{_BACKSLASH}{{{backslashes},}}(?:{'|'.join(spelled + bodies)}))"
    if not bodies:
        return spelled[0]
    return f"(?:{'|'.join(spelled)}|{start}{_BACKSLASH}+(?:{'|'.join(bodies)}))"


def _units(value: str) -> list[tuple[int, str]]:
    """``value`` as (number of backslashes, the character after them or '') units."""
    out, run = [], 0
    for char in value:
        if char == "\\":
            run += 1
        else:
            out.append((run, char))
            run = 0
    if run:
        out.append((run, ""))
    return out


def _spelled(units: list[tuple[int, str]]) -> str:
    """A regular expression for a value's ``units`` in any escaped or %-encoded spelling."""
    return "".join(_unit(k, c, i == 0) for i, (k, c) in enumerate(units))


class _Cut:
    """Finds the start or the end of a long value that was cut off (FRAGMENT or more)."""

    def __init__(self, value: str):
        self.units = _units(value)
        sizes = [k + len(c) for k, c in self.units]
        n = len(self.units)
        #: how many units its shortest start and end masked have
        self.least_head = next(i for i in range(1, n + 1) if sum(sizes[:i]) >= FRAGMENT)
        self.least_tail = next(i for i in range(1, n + 1) if sum(sizes[n - i:]) >= FRAGMENT)
        self.sizes = sizes
        # its first and last FRAGMENT characters, also where the cut split a backslash from
        # the character it escapes ('...0\\' of '...0\\0')
        self.head = re.compile(_spelled(_units(value[:FRAGMENT])))
        self.tail = re.compile(_spelled(_units(value[-FRAGMENT:])))
        self.known: dict[int, re.Pattern[str]] = {}

    def part(self, count: int) -> re.Pattern[str]:
        """The pattern of the value's first ``count`` units.

        A negative ``count``: of its last ``-count`` units, anchored at the end of the text
        searched.
        """
        hit = self.known.get(count)
        if hit is None:
            units = self.units[:count] if count > 0 else self.units[count:]
            hit = self.known[count] = re.compile(_spelled(units) + ("" if count > 0 else r"\Z"))
        return hit

    def find(self, text: str) -> bool:
        return bool(self.head.search(text) or self.tail.search(text))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where a cut value shows in ``text``: (start, end) of its longest starts and ends.

        Text showing more than _MOST_CUTS of them (built to be slow to search) is masked
        from the first to its end.
        """
        heads = list(itertools.islice(self.head.finditer(text), _MOST_CUTS + 1))
        tails = list(itertools.islice(self.tail.finditer(text), _MOST_CUTS + 1))
        if len(heads) + len(tails) > _MOST_CUTS:
            return [(min(m.start() for m in heads + tails), len(text))]
        n = len(self.units)
        out = []
        for m in heads:  # then the longest start of the value there
            lo, hi, end = self.least_head, n - 1, m.end()  # the whole was masked before
            while lo < hi:
                mid = (lo + hi + 1) // 2
                hit = self.part(mid).match(text, m.start())
                lo, hi, end = (mid, hi, hit.end()) if hit else (lo, mid - 1, end)
            out.append((m.start(), end))
        for m in tails:  # the longest end of the value ending there
            lo, hi, start = self.least_tail, n - 1, m.start()
            while lo < hi:
                mid = (lo + hi + 1) // 2
                back = sum(self.sizes[n - mid:n - self.least_tail]) * _WIDEST
                found = self.part(-mid).search(text, max(0, m.start() - back), m.end())
                lo, hi, start = (mid, hi, found.start()) if found else (lo, mid - 1, start)
            out.append((start, m.end()))
        return out


class _Matcher:
    """Finds and masks the secret values ``values`` (texts) in any spelling."""

    def __init__(self, values: tuple[str, ...]):
        self.whole = re.compile("|".join(_spelled(_units(v)) for v in values))
        self.each = [re.compile(_spelled(_units(v))) for v in values]
        self.cut = [_Cut(v) for v in values if len(v) > FRAGMENT]

    def find(self, text: str) -> bool:
        if _OWN.search(text) is not None:  # pipeflow's own words do not count
            return self.redact(text) != text
        return bool(self.whole.search(text)) or any(c.find(text) for c in self.cut)

    def redact(self, text: str) -> str:
        """``text`` masked, pipeflow's own notes (:data:`_OWN`) kept as they are.

        The text between the notes is masked; if a value still shows outside them (across
        a note's edge), all of it is masked, the notes too.
        """
        own = [m.span() for m in _OWN.finditer(text)]
        if not own:
            return self._redact(text)
        parts: list[str] = []
        at = 0
        for start, end in own:
            parts += [self._redact(text[at:start]), text[start:end]]
            at = end
        out = "".join(parts) + self._redact(text[at:])
        return self._redact(text) if self._shows_outside(out) else out

    def _shows_outside(self, text: str) -> bool:
        """Whether a value shows in ``text`` other than inside one of pipeflow's notes."""
        own = [m.span() for m in _OWN.finditer(text)]

        def inside(start: int, end: int) -> bool:
            return any(s <= start and end <= e for s, e in own)

        for pattern in self.each:
            pos = 0
            while (m := pattern.search(text, pos)) is not None:
                if not inside(*m.span()):
                    return True
                pos = m.start() + 1
        return any(not inside(*span) for c in self.cut for span in c.spans(text))

    def _redact(self, text: str) -> str:
        # repeats: masking can join the text around a value into another one; it ends, as
        # each round masks a character other than * or shortens a run of them
        while True:
            masked = self.whole.sub(MASK, text)
            spans = sorted(s for c in self.cut for s in c.spans(masked))
            parts: list[str] = []
            at = 0
            for start, end in spans:
                if parts and start <= at:  # overlaps or touches the one masked last
                    at = max(at, end)
                else:
                    parts += [masked[at:start], MASK]
                    at = end
            masked = "".join(parts) + masked[at:]
            if masked == text:
                return text
            text = masked


@functools.lru_cache(maxsize=64)
def _matcher(values: tuple[str, ...]) -> _Matcher:
    return _Matcher(values)


def redact(text: str, task: luigi.Task) -> str:
    """``text`` with each secret parameter value of ``task`` masked as ``***``.

    A value is found in any spelling: raw, or escaped and %-encoded any number of times
    (``repr``, ``ascii()``, JSON, URL-encoding, ``repr`` of a text holding a ``repr``...);
    each leaf of a dict, list or tuple value; ``str`` and ``repr`` of a value that is not
    text. A value longer than :data:`FRAGMENT` characters that was cut off (a message that
    keeps its first 200 characters) is masked from its first or up to its last FRAGMENT
    characters on. Repeats until nothing is found. Values of any length are masked: a very
    short one (a few characters) also masks unrelated text that happens to contain it.
    """
    values = _secret_texts(task)
    return _matcher(values).redact(text) if values else text


def redact_error(exc: BaseException, task: luigi.Task) -> BaseException:
    """``exc`` as users may see it: without ``task``'s secret parameter values.

    When anything ``exc`` shows contains a secret (its str, repr, args, notes,
    ``OSError.filename``, ``SyntaxError.text`` and other attributes, its type's name,
    qualified name or module, its cause, context or group members, or its traceback: a
    frame's file name, function name or source line), the result is a copy of the same type
    (``isinstance`` holds; the type's name is kept, masked where it shows the secret) whose
    every text is redacted (see :func:`redact`); its other attributes become their redacted
    ``repr``. Its traceback leaves out the frames that show a secret; a note on the copy
    counts them (:data:`LEFT_OUT`, pipeflow's words: never masked, it shows no value). The
    local variables of the traceback's finished frames are cleared (they may hold the
    secret). Without a secret in it, ``exc`` itself is returned.
    """
    if not _secret_texts(task):
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
        self.match = _matcher(_secret_texts(task))

    def leaks(self, text: str) -> bool:
        return self.match.find(text)

    def text(self, text: str) -> str:
        return self.match.redact(text)

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
        kind = type(exc)
        own = [_safe(str, exc), _safe(repr, exc), *map(str, getattr(exc, "__notes__", ())),
               *(_safe(f, v) for v in shown for f in (str, repr)),
               kind.__name__, kind.__qualname__, kind.__module__]
        frames = _frames(exc.__traceback__)
        hidden = [any(map(self.leaks, texts)) for _, texts in frames]
        out = exc
        if (any(map(self.leaks, own)) or any(hidden)
                or (members is not None and scrubbed != list(members))):
            out = done[id(exc)] = self.copy(exc, scrubbed)
            if any(hidden):
                self.hide_frames(out, frames, hidden)
        for link in ("__cause__", "__context__"):
            old = getattr(exc, link)
            if old is not None:
                new = self.error(old, done)
                if new is not old or out is not exc:
                    setattr(out, link, new)
        if out is not exc:
            out.__suppress_context__ = exc.__suppress_context__
        return out

    def hide_frames(self, out: BaseException, frames: list[tuple[types.TracebackType,
                                                                  list[str]]],
                    hidden: list[bool]) -> None:
        """Leave the frames that show a secret out of ``out``'s traceback; count them.

        They are not printed anywhere (masked, a frame of pipeflow's would show in a short
        traceback, and a user's frame twice): the note says how many were left out.
        """
        kept = None
        for (tb, _), hide in reversed(list(zip(frames, hidden))):
            if not hide:
                kept = types.TracebackType(kept, tb.tb_frame, tb.tb_lasti, tb.tb_lineno)
        out.__traceback__ = kept
        notes = list(getattr(out, "__notes__", []))
        # pipeflow's own words, composed after redaction: not masked (see _OWN)
        notes.append(LEFT_OUT.format(n=hidden.count(True)))
        with contextlib.suppress(Exception):
            out.__notes__ = notes  # type: ignore[attr-defined]

    def copy(self, exc: BaseException, members: list[BaseException] | None) -> BaseException:
        cls = getattr(type(exc), "_pipeflow_redacted_of", type(exc))
        args = tuple(self.value(a) for a in exc.args)
        if members is not None:
            args = (self.text(str(exc.args[0]) if exc.args else ""), tuple(members))
        names = (self.text(cls.__name__), self.text(cls.__qualname__),
                 self.text(cls.__module__))
        try:
            out = _new(_redacted_class(cls, names), args, members)
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


def _frames(tb: types.TracebackType | None
            ) -> list[tuple[types.TracebackType, list[str]]]:
    """Each entry of a traceback, with what a formatted traceback shows of it.

    That is the file name, the function's name and the source line; for a module's frame
    (whose variables are its globals, which are not cleared), its plain values too.
    """
    out = []
    while tb is not None:
        code = tb.tb_frame.f_code
        line = _safe(lambda at: linecache.getline(at.tb_frame.f_code.co_filename,
                                                  at.tb_lineno, at.tb_frame.f_globals), tb)
        texts = [code.co_filename, code.co_name, getattr(code, "co_qualname", ""), line]
        if code.co_name == "<module>":
            texts += [_safe(repr, v) for v in list(tb.tb_frame.f_globals.values())
                      if isinstance(v, (str, bytes, int, float))]
        out.append((tb, texts))
        tb = tb.tb_next
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


_REDACTED: dict[tuple[type, tuple[str, str, str]], type] = {}


def _redacted_class(cls: type[BaseException],
                    names: tuple[str, str, str]) -> type[BaseException]:
    """A subclass of ``cls`` that shows the texts it was given.

    It is named ``names``: the name, qualified name and module of ``cls``, redacted.
    """
    kind = _REDACTED.get((cls, names))
    if kind is None:
        ns = {"__str__": lambda self: self._pipeflow_str,
              "__repr__": lambda self: self._pipeflow_repr,
              "__reduce__": _reduce_redacted,
              "__module__": names[2], "__qualname__": names[1],
              "__doc__": cls.__doc__, "_pipeflow_redacted_of": cls}
        meta: Any = type(cls)
        kind = _REDACTED[cls, names] = meta(names[0], (cls,), ns)
    return kind


def _reduce_redacted(self: BaseException) -> tuple[Any, ...]:
    """Pickle a redacted copy (to send it back from a worker process) by its texts."""
    state = dict(vars(self))
    members = getattr(self, "exceptions", None) if isinstance(self, _GROUPS) else None
    attrs = {a: getattr(self, a) for a in _SHOWN_ATTRS
             if a not in state and hasattr(self, a) and not isinstance(getattr(self, a),
                                                                        BaseException)}
    kind = type(self)
    names = (kind.__name__, kind.__qualname__, kind.__module__)
    return (_rebuild_redacted, (self._pipeflow_redacted_of, names,  # type: ignore
                                self.args, None if members is None else list(members),
                                {**attrs, **state}))


def _rebuild_redacted(cls: type[BaseException], names: tuple[str, str, str],
                      args: tuple[Any, ...], members: list[BaseException] | None,
                      state: dict[str, Any]) -> BaseException:
    out = _new(_redacted_class(cls, names), args, members)
    for name, value in state.items():
        with contextlib.suppress(Exception):
            setattr(out, name, value)
    return out


# -- checking parameter values ---------------------------------------------------------------
#
# The rule, for every parameter class luigi and pipeflow ship (and the classes users derive
# from them): a value is accepted when it means what the parameter means and survives being
# stored as text (normalize -> serialize -> parse gives back the same value, so the same
# task_id); anything else is a ParameterError naming the task class, the parameter, the value
# (masked when secret), what was expected and how to fix it. Sensible conversions luigi makes
# (an int for a float, a list for a tuple, a datetime for a date) and a few of pipeflow's own
# (numpy and pandas scalars to Python's, a string parsed as the command line would) are kept.

#: the modules whose parameter classes pipeflow knows the meaning of
_SHIPPED = ("luigi.parameter", __name__)


class _Refused(Exception):
    """A value does not fit its parameter: ``expected`` (``an int``), ``why`` (or ``''``)."""

    def __init__(self, expected: str, why: str = "") -> None:
        super().__init__(expected, why)
        self.expected = expected
        self.why = why


def check_value(cls: type[luigi.Task], name: str, param: luigi.Parameter, value: Any) -> Any:
    """Check a value given to a parameter and return it normalized, as the task will hold it.

    A string given to a typed parameter is parsed the way the command line would (``'3'`` for
    an IntParameter), so values read from files or the CLI work; numpy and pandas scalars
    become Python's. A value is accepted only if it means what the parameter means (its type,
    range, choices) and round-trips exactly through the text luigi stores it as (the task id).

    Args:
        cls: the task class the value is given to (named in the error).
        name: the parameter's name.
        param: the parameter object of ``cls``.
        value: the value given.

    Returns:
        The normalized value to use.

    Raises:
        ParameterError: the value does not fit the parameter, with what was expected and the fix.
    """
    return _checked(cls, name, param, value, "got")


def _checked(cls: type[luigi.Task], name: str, param: luigi.Parameter, value: Any,
             origin: str) -> Any:
    """:func:`_check`, with a refusal as the ParameterError (``origin``: see wrong_value)."""
    try:
        return _check(param, value)
    except _Refused as refused:
        raise wrong_value(cls, name, param, value, refused.expected, refused.why,
                          origin) from None
    except RecursionError:
        raise wrong_value(cls, name, param, value, _expected(param, _kind(type(param))),
                          "it is nested too deeply", origin) from None


def parse_value(cls: type[luigi.Task], name: str, text: str) -> Any:
    """The value of ``cls``'s parameter ``name`` written as ``text`` (a command line, a file).

    The same rules and errors as :func:`check_value`: ``'3'`` for an IntParameter is ``3``,
    ``'[1, 2]'`` for a ListParameter is ``(1, 2)``, ``''`` for an optional parameter is None;
    a plain Parameter takes the text as it is.

    Raises:
        ParameterError: ``cls`` declares no parameter ``name`` (with a did-you-mean), or the
            text is not a value of it.
    """
    params = dict(cls.get_params())
    if name not in params:
        raise unknown_parameter(name, [cls], f"{cls.__name__}")
    return check_value(cls, name, params[name], text)


_ATOMS = frozenset({str, int, float, bool, type(None)})


def value_key(value: Any) -> Any:
    """A hashable key of ``value`` that tells apart equal values of other types, at any depth.

    ``1``, ``1.0`` and ``True`` are equal in Python but other values to a parameter (another
    task id), so caches of task instances are keyed by this, not by the values.

    Raises:
        TypeError: ``value`` holds something unhashable, or is nested too deeply (no key: do
            not cache).
    """
    try:
        return _value_key(value)
    except RecursionError:
        raise TypeError("nested too deeply to key") from None


def _value_key(value: Any) -> Any:
    kind = type(value)
    if kind is float and value == 0:  # -0.0 == 0.0, but a plain Parameter's text differs
        return kind, value, math.copysign(1.0, value)
    if kind in _ATOMS:
        return kind, value
    if kind is tuple or kind is list:
        return kind, tuple([_value_key(v) for v in value])
    if isinstance(value, Mapping):  # in order: a DictParameter's order is in its task id
        return kind, tuple((_value_key(k), _value_key(v)) for k, v in value.items())
    if isinstance(value, (set, frozenset)):
        return kind, frozenset(_value_key(v) for v in value)
    hash(value)
    return kind, value


def kwargs_key(kwargs: Mapping[str, Any]) -> frozenset[tuple[str, Any]]:
    """:func:`value_key` of keyword arguments, whose order does not matter.

    Raises:
        TypeError: a value holds something unhashable.
    """
    return frozenset([(k, value_key(v)) for k, v in kwargs.items()])


def resolved_value(cls: type[luigi.Task], name: str, param: luigi.Parameter) -> Any:
    """The value a parameter not given takes (config file, default), checked like a given one.

    Returns:
        The checked value, or luigi's ``_no_value`` when the parameter has none.

    Raises:
        ParameterError: the configured value cannot be read, or the value does not fit (the
            message says it is the default or the configured value).
    """
    try:
        value = param._get_value(cls.get_task_family(), name)
    except Exception as exc:  # noqa: BLE001 - a config value luigi cannot parse
        raise ParameterError(
            f"{cls.__name__}: the configured value of parameter '{name}' cannot be read: "
            f"{_clip(str(exc), 200)}. Fix it in the [{cls.get_task_family()}] section of the "
            f"luigi config, or pass {name}=... to {cls.__name__}."
        ) from None
    if value is luigi.parameter._no_value:
        return value
    if value is not param._default:
        return _checked(cls, name, param, value, "its configured value is")
    hit = param.__dict__.get("_pipeflow_default")  # checked once per parameter object
    if hit is None or hit[0] is not value:
        hit = param.__dict__["_pipeflow_default"] = (
            value, _checked(cls, name, param, value, "its default is"))
    return hit[1]


def _check(param: Any, value: Any) -> Any:
    kind = _kind(type(param))
    optional = issubclass(kind, luigi.parameter.OptionalParameterMixin)
    if value is None and (optional or param._default is None):
        return None  # default=None declares None a legal value (d6tflow code relies on it)
    if kind in _TEXT_KINDS:
        value = _check_text(param, kind, value, optional)
        if _own_methods(param, kind):
            return value
        normalized = _call(param.normalize, value, _expected(param, kind))
        _call(param.serialize, normalized, _expected(param, kind))
        return normalized
    if isinstance(value, str):
        value = _parse(param, value, optional)
        if value is None:
            return None
    value = _scalar(value)
    value = _coerce(param, kind, value)
    normalized = _call(param.normalize, value, _expected(param, kind))
    _round_trip(param, kind, normalized)
    return normalized


_KINDS: dict[type, tuple[type, bool]] = {}  # parameter class -> (its kind, own methods)


def _kind(param_type: type) -> type:
    """The nearest class of ``param_type`` whose meaning pipeflow knows (luigi's, its own)."""
    hit = _KINDS.get(param_type)
    if hit is None:
        shipped = [c for c in param_type.__mro__ if c.__module__ in _SHIPPED]
        # a secret of a type (class SecretInt(SecretParameter, IntParameter)) is checked
        # as that type; the secret's value is masked in every message
        kind = next((c for c in shipped if c not in (SecretParameter, Parameter)), shipped[0])
        own = all(getattr(param_type, m) is getattr(kind, m)
                  for m in ("parse", "serialize", "normalize"))
        hit = _KINDS[param_type] = (kind, own)
    return hit[0]


# plain text: the value is (or is written as) text; None is (OptionalParameter) a legal value
_TEXT_KINDS: tuple[type, ...] = (
    Parameter, luigi.parameter.StrParameter, OptionalParameter,
    luigi.parameter.OptionalStrParameter, SecretParameter,
)


def _check_text(param: Any, kind: type, value: Any, optional: bool) -> Any:
    if optional and isinstance(value, str) and value == "":
        return None  # what luigi reads '' back as; the task id is the same
    if isinstance(value, str):
        return value
    if kind is luigi.parameter.StrParameter:
        raise _Refused("a str", "a StrParameter takes text only")
    if param.significant and not is_secret(param):
        value = _plain(value)
    # else not in the task id: any object may be passed (luigi's way to hand one over)
    try:
        str(value), repr(value)  # luigi writes every value given into its messages
    except Exception as exc:  # noqa: BLE001 - e.g. an int too long to write out
        raise _Refused("a str", _clip(str(exc), 200)) from None
    return value


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars made Python's, if its text is the same in every process.

    A plain Parameter's task id is ``str(value)``: a set's order changes from one process to
    the next, a plain object's text holds its memory address, a big array's text is
    abridged. So those would never find their outputs again (or find another value's).
    An object whose text is its own (a scikit-learn model's repr, say) is kept, as in d6tflow.
    """
    value = _scalar(value)
    if isinstance(value, (str, bytes, int, float, complex, decimal.Decimal, fractions.Fraction,
                          datetime.date, datetime.time, datetime.timedelta, enum.Enum,
                          pathlib.PurePath)) or value is None:
        return value
    if isinstance(value, type):
        return value  # '<class 'module.Name'>': the same in every process
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return items if type(value) is list else tuple(items) if type(value) is tuple else value
    if isinstance(value, Mapping):
        plain = {_plain(k): _plain(v) for k, v in value.items()}
        return plain if type(value) is dict else value
    if isinstance(value, (set, frozenset)):
        raise _Refused("a str", "a set is written in a different order by each process, so "
                                "its task would not find its outputs again; pass sorted(...) "
                                "as a list")
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ is the user's; say what it means
        text = " at 0x"
    if " at 0x" not in text and "..." not in text:
        return value  # its own text, the same in every process (a model's repr, say)
    kind = type(value).__name__
    raise _Refused("a str", f"{_article(kind)} {kind} has no text that identifies it (its "
                            f"str() holds a memory address or is abridged, and the task id is "
                            f"built from it); pass a str that names it, or declare the "
                            f"parameter significant=False to hand over an object")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _scalar(value: Any) -> Any:
    """A numpy scalar as the Python scalar it holds; a pandas Timestamp as a datetime."""
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        if isinstance(value, numbers.Number) or type(value).__name__ in ("bool_", "bool"):
            return value.item()
    if module.startswith("pandas") and isinstance(value, datetime.datetime):
        if getattr(value, "nanosecond", 0):
            raise _Refused("a datetime", "it has nanoseconds, which a datetime cannot hold")
        return datetime.datetime(value.year, value.month, value.day, value.hour, value.minute,
                                 value.second, value.microsecond, value.tzinfo)
    if module.startswith("pandas") and isinstance(value, datetime.timedelta):
        if getattr(value, "nanoseconds", 0):
            raise _Refused("a timedelta", "it has nanoseconds, which a timedelta cannot hold "
                                          "(it counts whole microseconds); round it first, "
                                          "e.g. value.round('us')")
        return datetime.timedelta(days=value.days, seconds=value.seconds,
                                  microseconds=value.microseconds)
    return value


def _parse(param: Any, text: str, optional: bool) -> Any:
    """A string given to a typed parameter, read as the command line would."""
    if optional and text == "":
        return None
    try:
        return param.parse(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
        kind = _kind(type(param))
        if issubclass(kind, (ChoiceParameter, EnumParameter)):
            raise _Refused(_expected(param, kind)) from None  # the expected says it all
        why = f"'{_clip(text)}' cannot be read as one"
        detail = str(exc).strip()
        if detail and not detail.startswith(("invalid literal", "could not convert")):
            why += f" ({_clip(detail)})"
        raise _Refused(_expected(param, kind), why) from None


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _coerce(param: Any, kind: type, value: Any) -> Any:
    """``value`` as the type ``kind`` holds, or _Refused: the sensible conversions only."""
    expected = _expected(param, kind)
    if issubclass(kind, TaskParameter):
        if isinstance(value, type) and issubclass(value, luigi.Task):
            return value
        why = (f"pass the class {type(value).__name__}, not an instance of it"
               if isinstance(value, luigi.Task) else "")
        raise _Refused(expected, why)
    if issubclass(kind, luigi.parameter.EnumListParameter):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, param._enum)
                                                           for v in value):
            raise _Refused(expected)
        return tuple(value)
    if issubclass(kind, EnumParameter):
        if not isinstance(value, param._enum):
            raise _Refused(expected)
        return value
    if issubclass(kind, luigi.parameter.ChoiceListParameter):
        if not isinstance(value, (list, tuple)):
            raise _Refused(expected)
        return tuple(_choice(param, _scalar(v), expected) for v in value)
    if issubclass(kind, ChoiceParameter):
        return _choice(param, value, expected)
    if issubclass(kind, NumericalParameter):
        number = _number(value, param._var_type, expected)
        if not (param._left_op(param._min_value, number)
                and param._right_op(number, param._max_value)):
            raise _Refused(expected, "it is out of range")
        return number
    if issubclass(kind, BoolParameter):
        if type(value) is not bool:
            raise _Refused(expected)
        return value
    if issubclass(kind, IntParameter):
        return _number(value, int, expected)
    if issubclass(kind, FloatParameter):
        return _number(value, float, expected)
    if issubclass(kind, DateIntervalParameter):
        if not isinstance(value, luigi.date_interval.DateInterval):
            raise _Refused(expected)
        if value.date_a > value.date_b:
            raise _Refused(expected, f"it is inverted: it starts ({value.date_a}) after it "
                                     f"ends ({value.date_b}); write the earlier date first")
        return value
    if issubclass(kind, TimeDeltaParameter):
        if not isinstance(value, datetime.timedelta):
            raise _Refused(expected)
        return value
    if issubclass(kind, luigi.parameter._DatetimeParameterBase):
        if not isinstance(value, datetime.date):
            raise _Refused(expected)
        if isinstance(value, datetime.datetime) and value.tzinfo is not None:
            raise _Refused(expected, "it has a time zone, and the task id holds none; pass "
                                     "value.astimezone(datetime.timezone.utc).replace("
                                     "tzinfo=None)")
        return value
    if issubclass(kind, luigi.parameter._DateParameterBase):
        allowed: tuple[type, ...] = (datetime.date,)
        if issubclass(kind, MonthParameter):
            allowed = (datetime.date, luigi.date_interval.Month)
        elif issubclass(kind, YearParameter):
            allowed = (datetime.date, luigi.date_interval.Year)
        if not isinstance(value, allowed):
            raise _Refused(expected)
        return value
    if issubclass(kind, DictParameter):
        if not isinstance(value, Mapping):
            raise _Refused(expected)
        return _json(value, expected)
    if issubclass(kind, ListParameter):  # TupleParameter too
        if not isinstance(value, (list, tuple)):
            raise _Refused(expected)
        return _json(value, expected)
    if issubclass(kind, luigi.parameter.PathParameter):
        if not isinstance(value, (str, os.PathLike)):
            raise _Refused(expected)
        return value
    return value  # a kind this table does not know: its own normalize decides


def _choice(param: Any, value: Any, expected: str) -> Any:
    var_type = param._var_type
    if var_type in (int, float):
        value = _number(value, var_type, expected)
    elif type(value) is not var_type:
        raise _Refused(expected)
    if value not in param._choices:
        raise _Refused(expected)
    return value


def _number(value: Any, var_type: type, expected: str) -> Any:
    """``value`` as an int or a float, exactly; never a bool, nan or a rounded int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused(expected)
    if var_type is int:
        if not isinstance(value, int):
            whole = math.isfinite(value) and float(value).is_integer()
            raise _Refused(expected, f"pass int({value!r}) if that is what you mean" if whole
                           else "")
        return int(value)
    if var_type is float:
        if isinstance(value, int):
            try:
                as_float = float(value)
            except OverflowError:
                raise _Refused(expected, "it is too large for a float") from None
            if int(as_float) != value if math.isfinite(as_float) else True:
                raise _Refused(expected, "a float cannot hold it exactly")
            return as_float
        if value == 0:
            return 0.0  # -0.0 is 0.0 (equal, so one task; its text would differ)
        if math.isnan(value):
            raise _Refused(expected, "nan is not equal to itself, so a task given it could "
                                     "never be found again; pass None (with default=None) "
                                     "for a missing value")
        return float(value)
    if not isinstance(value, var_type):
        raise _Refused(expected)
    return value


def _json(value: Any, expected: str) -> Any:
    """A list or dict value with numpy scalars made Python's; _Refused if JSON cannot hold it."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Refused(expected, f"its key {key!r} is not a str, and JSON (which the "
                                         f"task id is written in) has only str keys")
            out[key] = _json(item, expected)
        return out
    if isinstance(value, (list, tuple)):
        return [_json(v, expected) for v in value]
    value = _scalar(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused(expected, f"it holds {value!r}, which JSON cannot hold")
    if value is None or isinstance(value, (str, int, float)):
        return value
    what = "a set has no order; pass sorted(...) as a list" if isinstance(
        value, (set, frozenset)) else "JSON holds str, int, float, bool, None, lists and dicts"
    raise _Refused(expected, f"it holds a {type(value).__name__}, which JSON cannot hold ({what})")


def _call(method: Any, value: Any, expected: str) -> Any:
    """``method(value)`` with luigi's own refusals (choices, schema, range) as _Refused."""
    try:
        return method(value)
    except _Refused:
        raise
    except Exception as exc:  # noqa: BLE001 - luigi's (and jsonschema's) refusals vary
        raise _Refused(expected, _clip(str(exc).strip() or type(exc).__name__, 200)) from None


def _round_trip(param: Any, kind: type, value: Any) -> None:
    """_Refused unless ``value`` comes back the same from the text luigi stores it as."""
    expected = _expected(param, kind)
    text = _call(param.serialize, value, expected)
    if not isinstance(text, str):
        raise _Refused(expected, f"it is written as a {type(text).__name__}, not as text")
    if not _own_methods(param, kind) or issubclass(kind, TaskParameter):
        return  # a class of the user's own (its methods decide); a task class by family name
    try:
        back = param.normalize(param.parse(text))
    except Exception:  # noqa: BLE001
        back = _UNREADABLE
    if not _same(back, value):
        shown = "cannot be read back" if back is _UNREADABLE else f"reads back as {back!r}"
        raise _Refused(expected, f"it would be stored as '{_clip(text)}', which {shown}, so the "
                                 f"task could not be found again")


_UNREADABLE = object()


def _own_methods(param: Any, kind: type) -> bool:
    """Whether ``param`` reads, writes and normalizes values as its shipped ``kind`` does."""
    _kind(type(param))
    return _KINDS[type(param)][1]


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types, at every depth (1, 1.0 and True are not the same)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _expected(param: Any, kind: type) -> str:
    """What a parameter takes, for messages: ``an int``, ``one of 'a', 'b'``... (cached)."""
    hit = param.__dict__.get("_pipeflow_expected")
    if hit is None:
        hit = param.__dict__["_pipeflow_expected"] = _describe_expected(param, kind)
    return hit  # type: ignore[no-any-return]


def _describe_expected(param: Any, kind: type) -> str:
    if issubclass(kind, luigi.parameter.EnumListParameter):
        return f"a list of members of {param._enum.__name__}"
    if issubclass(kind, EnumParameter):
        return f"a member of {param._enum.__name__}"
    if issubclass(kind, luigi.parameter.ChoiceListParameter):
        return f"a list of values from {_choices(param)}"
    if issubclass(kind, ChoiceParameter):
        return f"one of {_choices(param)}"
    if issubclass(kind, NumericalParameter):
        return f"a number ({param._permitted_range})"
    for base, what in _WHAT:
        if issubclass(kind, base):
            return what
    return f"a value of {type(param).__name__}"


def _choices(param: Any) -> str:
    return ", ".join(sorted(repr(c) for c in param._choices))


# (parameter class, what it takes): subclasses before their bases
_WHAT: list[tuple[type, str]] = [
    (BoolParameter, "a bool"),
    (IntParameter, "an int"),
    (FloatParameter, "a float"),
    (DateHourParameter, "a datetime (to the hour)"),
    (DateMinuteParameter, "a datetime (to the minute)"),
    (DateSecondParameter, "a datetime (to the second)"),
    (MonthParameter, "a date (its month)"),
    (YearParameter, "a date (its year)"),
    (DateParameter, "a date"),
    (DateIntervalParameter, "a date interval"),
    (TimeDeltaParameter, "a timedelta (whole seconds)"),
    (TaskParameter, "a task class (the class, not an instance)"),
    (TupleParameter, "a tuple"),
    (ListParameter, "a list"),
    (DictParameter, "a dict"),
    (luigi.parameter.PathParameter, "a path"),
    (luigi.parameter.StrParameter, "a str"),
    (Parameter, "a str"),  # last: every class is one
]

#: a value that fits, for the "Pass e.g." of a message
_EXAMPLES = {
    "a bool": "True", "an int": "3", "a float": "0.5", "a list": "[1, 2]", "a tuple": "(1, 2)",
    "a dict": "{'a': 1}", "a date": "datetime.date(2024, 1, 31)",
    "a date (its month)": "datetime.date(2024, 1, 1)",
    "a date (its year)": "datetime.date(2024, 1, 1)",
    "a datetime (to the hour)": "datetime.datetime(2024, 1, 31, 12)",
    "a datetime (to the minute)": "datetime.datetime(2024, 1, 31, 12, 30)",
    "a datetime (to the second)": "datetime.datetime(2024, 1, 31, 12, 30, 5)",
    "a date interval": "'2024-01' (a month; or a year, '2024-W05', '2024-01-31')",
    "a timedelta (whole seconds)": "datetime.timedelta(hours=1)",
    "a task class (the class, not an instance)": "MyTask", "a path": "'data/in.csv'",
    "a str": "'abc'",
}


def _example(param: Any, what: str) -> str:
    if isinstance(param, (EnumParameter, luigi.parameter.EnumListParameter)):
        members = list(param._enum.__members__)
        if members:
            one = f"{param._enum.__name__}.{members[0]}"
            return f"[{one}]" if isinstance(param, luigi.parameter.EnumListParameter) else one
    if isinstance(param, ChoiceParameter) and param._choices:
        one = repr(sorted(param._choices, key=repr)[0])
        return f"[{one}]" if isinstance(param, luigi.parameter.ChoiceListParameter) else one
    if isinstance(param, NumericalParameter):
        low = param._min_value
        return repr(low if param._left_op(low, low) else param._var_type(
            (low + param._max_value) / 2))
    return _EXAMPLES.get(what, "...")


def wrong_value(cls: type[luigi.Task], name: str, param: luigi.Parameter, value: Any,
                what: str, why: str = "", origin: str = "got") -> ParameterError:
    """The error for a value that does not fit its parameter (masked when it is a secret).

    Args:
        cls: the task class the value was given to.
        name: the parameter's name.
        param: the parameter object.
        value: the value refused.
        what: what the parameter takes (``an int``).
        why: the detail ('' for none).
        origin: where the value came from: ``got`` (given), ``its default is``...
    """
    secret = is_secret(param)
    try:
        shown = MASK if secret else f"{_clip(repr(value), 200)} ({type(value).__name__})"
    except Exception:  # noqa: BLE001 - a value whose repr fails is still refused
        shown = f"a {type(value).__name__}"
    if secret and why:
        why = "it does not fit"
    return ParameterError(
        f"{cls.__name__}: parameter '{name}' must be {what}, but {origin} {shown}"
        f"{': ' + why if why else ''}. {cls.__name__} declares {describe_param(name, param)}. "
        f"{'Pass' if origin == 'got' else 'Fix it in the class, or pass'} e.g. "
        f"{cls.__name__}({name}={_example(param, what)})."
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
