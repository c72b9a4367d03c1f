"""How the run history reads to a person: human units, local times, a readable attempt.

:func:`duration_text`, :func:`size_text` and :func:`when_text` turn the history's numbers
(seconds, bytes, UTC timestamps) into text such as ``2 min 05 s``, ``312 MiB`` and
``2026-11-21 20:14:03`` (local time); a missing value is ``""``. :func:`attempt_text` and
:func:`attempt_html` render one recorded attempt (``pipeflow.last_error``,
``pipeflow.last_run``). The table of :func:`pipeflow.history` is drawn by
:mod:`pipeflow.display.frame` (which needs pandas; this module does not).
"""

from __future__ import annotations

import datetime
import html
import math
import os
import zoneinfo
from collections.abc import Mapping
from typing import Any

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def missing(value: Any) -> bool:
    """Whether ``value`` is an empty cell: None, NaN, NaT or pandas' NA."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pandas.NA: its comparisons are NA, which has no truth value
        return True


def duration_text(seconds: Any) -> str:
    """``12 ms``, ``3.46 s``, ``10.5 s``, ``2 min 05 s``, ``2 h 03 min``, ``3 d 04 h``."""
    if missing(seconds):
        return ""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    if not math.isfinite(s):
        return str(s)
    if s < 0:
        return "-" + duration_text(-s)
    if s < 1:
        ms = round(s * 1000)
        return "<1 ms" if ms == 0 and s > 0 else f"{ms} ms"
    if s < 10:
        return f"{s:.2f} s"
    if s < 59.95:
        return f"{s:.1f} s"
    whole = round(s)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = round(s / 60)
    if minutes < 24 * 60:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    hours = round(s / 3600)
    return f"{hours // 24} d {hours % 24:02d} h"


def size_text(size: Any) -> str:
    """A size in bytes in binary units, three significant digits: ``312 MiB``, ``1.50 GiB``."""
    if missing(size):
        return ""
    try:
        n = float(size)
    except (TypeError, ValueError):
        return str(size)
    if not math.isfinite(n):
        return str(n)
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in _UNITS:
        n /= 1024
        if abs(n) < 999.5 or unit == _UNITS[-1]:
            digits = 2 if abs(n) < 9.995 else 1 if abs(n) < 99.95 else 0
            return f"{n:.{digits}f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def local_zone() -> datetime.tzinfo:
    """This machine's time zone (daylight saving included), as the history shows times.

    Its IANA name when it can be told (``TZ``, ``/etc/localtime``): a frame of such times
    can be saved anywhere (``to_parquet`` needs a named zone). Else the system's rules as
    ``dateutil`` reads them. Read each time: a notebook's ``TZ`` may change.
    """
    name = _zone_name()
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
    from dateutil.tz import tzlocal  # a dependency of pandas

    return tzlocal()


def _zone_name() -> str | None:
    """The IANA name of the local time zone (``Europe/Paris``), or None."""
    tz = os.environ.get("TZ")
    if tz is not None:
        tz = tz.lstrip(":")
        if not tz:
            return "UTC"  # TZ set but empty: UTC, as the C library reads it
        return tz.split("/zoneinfo/", 1)[1] if "/zoneinfo/" in tz else tz
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:  # pragma: no cover
        return None
    return target.split("/zoneinfo/", 1)[1] if "/zoneinfo/" in target else None


def when_text(moment: Any) -> str:
    """A time as the history shows it: local time to the second, ``2026-11-21 20:14:03``."""
    if missing(moment):
        return ""
    if isinstance(moment, datetime.datetime):
        if moment.tzinfo is not None:
            moment = moment.astimezone(local_zone())
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return str(moment)


def error_text(error_type: Any, message: Any) -> str | None:
    """An error in one line: its type and the first line of its message (None: no error)."""
    if missing(error_type):
        return None
    first = "" if missing(message) else str(message).strip().split("\n")[0].rstrip()
    return f"{error_type}: {first}" if first else str(error_type)


def _facts(attempt: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The headline of an attempt, and its other facts (each a short phrase)."""
    task = attempt.get("task") or attempt.get("task_id") or "?"
    status = attempt.get("status") or "?"
    if not missing(attempt.get("finished")):
        when = f"at {when_text(attempt.get('finished'))}"
    elif not missing(attempt.get("started")):
        when = f"(started at {when_text(attempt.get('started'))})"
    else:
        when = ""
    head = f"{task} {status} {when}".rstrip()
    if not missing(attempt.get("attempt")):
        head += f" (attempt {attempt.get('attempt')})"
    facts = []
    for key, label, shown in (("duration", "took", duration_text),
                              ("cpu_time", "CPU time", duration_text),
                              ("peak_memory", "peak memory", size_text)):
        if not missing(attempt.get(key)):
            facts.append(f"{label} {shown(attempt.get(key))}")
    if attempt.get("run_id"):
        facts.append(f"run {attempt.get('run_id')}")
    return head, facts


def _error(attempt: Mapping[str, Any]) -> str | None:
    """What went wrong, as text: the traceback, else the type and whole message."""
    tb = attempt.get("traceback")
    if not missing(tb) and str(tb).strip():
        return str(tb).rstrip("\n")
    if missing(attempt.get("error_type")):
        return None
    message = attempt.get("error_message")
    return f"{attempt.get('error_type')}: {message}" if not missing(message) and message else (
        str(attempt.get("error_type")))


def attempt_text(attempt: Mapping[str, Any]) -> str:
    """A recorded attempt as plain text: what, when, how long, and its traceback as lines.

    Example:
        ``Bad() failed at 2026-11-21 20:14:03 (attempt 1)`` / ``took 12 ms, CPU time 10
        ms, peak memory 112 MiB, run 3f2a...`` / the traceback.
    """
    head, facts = _facts(attempt)
    lines = [head, ", ".join(facts)] if facts else [head]
    if not missing(attempt.get("reason")) and attempt.get("reason"):
        lines.append(f"reason: {attempt.get('reason')}")
    error = _error(attempt)
    if error is not None:
        lines += ["", error]
    return "\n".join(lines)


_STATUS_COLOURS = {"failed": "#c62828", "crashed": "#c62828", "retried": "#ef6c00",
                   "cancelled": "#ef6c00", "skipped": "#757575", "completed": "#2e7d32",
                   "up_to_date": "#2e7d32"}


def attempt_html(attempt: Mapping[str, Any]) -> str:
    """A recorded attempt as HTML for a notebook: the same facts, the traceback in a <pre>."""
    esc = html.escape
    task = attempt.get("task") or attempt.get("task_id") or "?"
    status = str(attempt.get("status") or "?")
    head, facts = _facts(attempt)
    rest = head[len(f"{task} {status}"):]
    colour = _STATUS_COLOURS.get(status, "inherit")
    parts = [f'<div class="pipeflow-attempt"><div><b>{esc(str(task))}</b> '
             f'<span style="color: {colour}; font-weight: bold">{esc(status)}</span>'
             f"{esc(rest)}</div>"]
    if facts:
        parts.append(f"<div>{esc(', '.join(facts))}</div>")
    if not missing(attempt.get("reason")) and attempt.get("reason"):
        parts.append(f"<div>reason: {esc(str(attempt.get('reason')))}</div>")
    error = _error(attempt)
    if error is not None:
        parts.append(f'<pre style="white-space:pre-wrap;overflow-wrap:anywhere">{esc(error)}</pre>')
    parts.append("</div>")
    return "".join(parts)


__all__ = ["attempt_html", "attempt_text", "duration_text", "error_text", "local_zone",
           "missing", "size_text", "when_text"]
