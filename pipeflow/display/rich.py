"""Rich displays for notebooks: HTML for previews, run results, flow sweeps and resets.

Every object here shows **once** per notebook cell: what ``preview()`` (or a run's summary)
already put in a cell is not drawn again when the same object is the cell's value; the
object kept in a variable shows in any later cell. Outside a notebook nothing here draws
anything: terminals and scripts get the text they always had.

The HTML is small and self-contained: inline styles (no ``<style>`` or script, which some
notebook viewers strip), every value escaped, secret parameter values masked. Each display
also carries a ``text/plain`` version, which frontends without HTML (``jupyter console``,
an IPython terminal) show instead.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import luigi

from pipeflow.contract import describe
from pipeflow.display import in_notebook
from pipeflow.events import NOTEBOOK, STATE_WORDS, RunResult, TaskState
from pipeflow.parameters import MASK, redact

#: the plan's statuses (``preview()``): colour of each
STATUS_COLORS = {"COMPLETE": "#1a7f37", "STALE": "#9a6700", "PENDING": "#0969da"}
#: a run's task states (``RunResult``): colour of each
STATE_COLORS: dict[TaskState, str] = {
    TaskState.COMPLETED: "#1a7f37",
    TaskState.UP_TO_DATE: "#57606a",
    TaskState.FAILED: "#cf222e",
    TaskState.SKIPPED: "#bc4c00",
    TaskState.CANCELLED: "#8250df",
    TaskState.IN_PROGRESS: "#0969da",
    TaskState.QUEUED: "#6e7781",
}
#: colour of how a run ended
VERDICT_COLORS = {"success": "#1a7f37", "cancelled": "#8250df", "failed": "#cf222e"}
#: rows an HTML table shows at most (a 10,000-task preview stays light); the rest is counted
MAX_ROWS = 500
#: characters of one shown value (a parameter, a reason, an error line) at most
MAX_VALUE = 160

_FONT = ("font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,"
         "sans-serif;font-size:13px")


def esc(value: Any, limit: int = MAX_VALUE) -> str:
    """``str(value)`` clipped to ``limit`` characters and escaped for HTML (quotes too)."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=True)


def badge(text: str, color: str) -> str:
    """A coloured label (white on ``color``: readable on light and dark themes)."""
    return (f'<span style="background:{color};color:#fff;border-radius:3px;padding:1px 6px;'
            f'font-size:11px;font-weight:600;white-space:nowrap">{esc(text)}</span>')


def muted(text: str) -> str:
    """Secondary text (parameters, reasons), escaped."""
    return f'<span style="color:#6e7781">{esc(text)}</span>'


def table(head: Sequence[str], rows: Iterable[Sequence[str]], footer: str,
          kind: str, total: int | None = None) -> str:
    """An HTML table; cells of ``rows`` are HTML already, ``head`` and ``footer`` plain text.

    Args:
        head: column titles.
        rows: the rows (at most :data:`MAX_ROWS` are drawn).
        footer: the line under the table (counts).
        kind: the CSS class (``pipeflow-preview``...), for people styling their notebook.
        total: how many rows there are (to say how many were left out).
    """
    cell = ("padding:2px 10px 2px 4px;text-align:left;vertical-align:top;border:none;"
            "overflow-wrap:anywhere")
    out = [f'<div class="{kind}" style="{_FONT}">',
           '<table style="border-collapse:collapse;margin:0">',
           "<thead><tr>" + "".join(
               f'<th style="{cell};border-bottom:1px solid #d0d7de">{esc(h)}</th>'
               for h in head) + "</tr></thead><tbody>"]
    shown = 0
    for row in rows:
        if shown == MAX_ROWS:
            break
        out.append("<tr>" + "".join(f'<td style="{cell}">{c}</td>' for c in row) + "</tr>")
        shown += 1
    out.append("</tbody></table>")
    more = "" if total is None or total <= shown else f" ({total - shown} more rows not shown)"
    out.append(f'<div style="margin-top:4px;color:#57606a">{esc(footer + more, 10_000)}</div>')
    out.append("</div>")
    return "".join(out)


# -- where we are ------------------------------------------------------------------------------

def cell_number() -> int | None:
    """IPython's execution count (the notebook cell running now), None outside IPython."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if get is not None else None
    return getattr(shell, "execution_count", None)


def draws_html() -> bool:
    """Whether output goes to a notebook that draws HTML (a Jupyter kernel, stdout its own).

    False in a terminal, a script, an IPython terminal, and inside
    ``contextlib.redirect_stdout`` in a notebook (code that captures the printed text tree,
    as d6tflow's tests do, still gets it).
    """
    iostream = sys.modules.get("ipykernel.iostream")
    return (iostream is not None and in_notebook()
            and isinstance(sys.stdout, iostream.OutStream))


def show(text: str, rich: str) -> None:
    """Display ``rich`` (HTML) in the notebook, with ``text`` for frontends without HTML."""
    from IPython.display import display  # only called inside IPython

    display({"text/plain": text, "text/html": rich}, raw=True)


class ShownOnce:
    """Mixin: an object drawn once per notebook cell.

    ``_shown_in`` is the cell in which it was drawn already (by ``preview()``, or a run's
    summary); as that cell's value it then shows nothing. Subclasses give ``_repr_html_``
    and ``_plain`` (the text frontends without HTML show).
    """

    _shown_in: int | None = None

    def mark_shown(self) -> None:
        """Record that this cell shows it already."""
        self._shown_in = cell_number()

    def _repr_html_(self) -> str:  # pragma: no cover - always overridden
        raise NotImplementedError

    def _plain(self) -> str:  # pragma: no cover - always overridden
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        if self._shown_in is not None and self._shown_in == cell_number():
            return
        show(self._plain(), self._repr_html_())


# -- run results -----------------------------------------------------------------------------

def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def state_badge(state: TaskState, n: int | None = None) -> str:
    """``3 ran`` (or ``ran``) in the state's colour."""
    words = STATE_WORDS[state] if n is None else f"{n} {STATE_WORDS[state]}"
    return badge(words, STATE_COLORS[state])


def run_result_html(result: RunResult) -> str:
    """The run: how it ended, counts by state in colour, its duration, what did not finish.

    Each failed, cancelled or skipped task is a row with its first error line (or why it
    did not run); the full tracebacks stay on the result.
    """
    verdict = result.verdict
    counts = " ".join(state_badge(s, n) for s, n in result.counts().items())
    took = "" if result.duration is None else f" in {_duration(result.duration)}"
    head = (f'<div style="{_FONT}"><b>pipeflow run</b> '
            f"{badge(verdict, VERDICT_COLORS[verdict])} {counts or muted('no task')}"
            f"{muted(took)}</div>")
    bad = [r for r in result.tasks.values()
           if r.state in (TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED)]
    if not bad:
        return f'<div class="pipeflow-run">{head}</div>'
    rows = [[f"<code>{esc(redact(describe(r.task), r.task))}</code>", state_badge(r.state),
             esc(redact(_first_line(r.error), r.task)) if r.error is not None
             else muted(r.reason or "")]
            for r in bad]
    failed = len(result.by_state(TaskState.FAILED))
    footer = (f"{failed} failed: result.by_state('failed')[0].traceback is the full "
              f"traceback" if failed else f"{len(bad)} did not finish")
    return (f'<div class="pipeflow-run">{head}'
            + table(["task", "state", "error"], rows, footer, "pipeflow-run-failures",
                    len(rows))
            + "</div>")


def _first_line(error: BaseException | None) -> str:
    from pipeflow.errors import first_line

    return first_line(error) if error is not None else ""


def _show_run_result(result: RunResult) -> None:
    if result.shown_in is not None and result.shown_in == cell_number():
        return  # its execution summary printed in this cell already
    show(repr(result), run_result_html(result))


NOTEBOOK["html"] = run_result_html
NOTEBOOK["show"] = _show_run_result


# -- WorkflowMulti ---------------------------------------------------------------------------

def _flow_params(params: Mapping[str, Any], secret: Iterable[str]) -> dict[str, str]:
    hidden = set(secret)
    return {k: MASK if k in hidden else str(v) for k, v in params.items()}


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [head, *rows])


class _Flows(dict, ShownOnce):  # type: ignore[type-arg]
    """A dict of one result per flow (d6tflow code indexes it) that displays as one table."""

    def __init__(self, items: Mapping[Any, Any], params: Mapping[Any, Mapping[str, Any]],
                 secret: Iterable[str] = ()) -> None:
        super().__init__(items)
        self._params = {n: _flow_params(params.get(n, {}), secret) for n in items}
        self._names = list(dict.fromkeys(k for p in self._params.values() for k in p))

    def _columns(self, value: Any) -> list[tuple[str, str]]:  # (text, html) per column
        raise NotImplementedError  # pragma: no cover

    def _head(self) -> list[str]:
        raise NotImplementedError  # pragma: no cover

    def _footer(self) -> str:
        raise NotImplementedError  # pragma: no cover

    def _rows(self) -> list[tuple[list[str], list[str]]]:
        out = []
        width = len(self._head())
        for name, value in self.items():
            params = [self._params[name].get(k, "") for k in self._names]
            cols = self._columns(value)[:width]
            out.append(([str(name), *params, *(t for t, _ in cols)],
                        [f"<b>{esc(name)}</b>", *(esc(p) for p in params),
                         *(h for _, h in cols)]))
        return out

    def _plain(self) -> str:
        rows = self._rows()
        return (_text_table(["flow", *self._names, *self._head()], [t for t, _ in rows])
                + "\n" + self._footer())

    def _repr_html_(self) -> str:
        rows = self._rows()
        return table(["flow", *self._names, *self._head()], [h for _, h in rows],
                     self._footer(), self._kind, len(rows))

    _kind = "pipeflow-flows"

    def __repr__(self) -> str:
        return self._plain()

    def __str__(self) -> str:
        # ``print(flows.preview())`` in the notebook cell that drew the table already:
        # the count line only (as a Preview does), not the same table again as text
        if self._shown_in is not None and self._shown_in == cell_number():
            return self._footer()
        return self._plain()


class FlowPreviews(_Flows):
    """What ``WorkflowMulti.preview()`` returns: ``{flow_name: Preview}``, shown as one table.

    A row per flow: its parameters and how many of its tasks are complete, stale and
    pending. ``previews[name]`` is that flow's :class:`~pipeflow.display.preview.Preview`
    (its tree).
    """

    _kind = "pipeflow-flow-previews"

    def _head(self) -> list[str]:
        return ["complete", "stale", "pending", "status"]

    def _columns(self, value: Any) -> list[tuple[str, str]]:
        c = value.counts()
        todo = c["STALE"] + c["PENDING"]
        word, color = (("up to date", STATUS_COLORS["COMPLETE"]) if not todo else
                       (f"{todo} to run", STATUS_COLORS["PENDING"] if not c["STALE"]
                        else STATUS_COLORS["STALE"]))
        return [(str(c["COMPLETE"]), str(c["COMPLETE"])), (str(c["STALE"]), str(c["STALE"])),
                (str(c["PENDING"]), str(c["PENDING"])), (word, badge(word, color))]

    def _footer(self) -> str:
        n = len(self)
        ready = sum(1 for p in self.values() if not p.counts()["STALE"] + p.counts()["PENDING"])
        return (f"{n} flow{'s' if n != 1 else ''}: {ready} up to date, {n - ready} with "
                f"tasks to run; previews[name] shows a flow's tree")


class FlowResults(_Flows):
    """What ``WorkflowMulti.run()`` returns: ``{flow_name: RunResult}``, shown as one table.

    A row per flow: its parameters, how its tasks ended, and the first error of a failed
    flow. Truthy when every flow succeeded.
    """

    _kind = "pipeflow-flow-results"

    def _failed(self) -> bool:
        return any(r.by_state(TaskState.FAILED) for r in self.values())

    def _head(self) -> list[str]:
        return ["result", "tasks", "error"] if self._failed() else ["result", "tasks"]

    def _columns(self, value: Any) -> list[tuple[str, str]]:
        word = value.verdict
        counts = value.counts()
        text = ", ".join(f"{n} {STATE_WORDS[s]}" for s, n in counts.items())
        failed = value.by_state(TaskState.FAILED)
        error = (f"{describe(failed[0].task)}: {_first_line(failed[0].error)}"
                 if failed else "")
        if failed:
            error = redact(error, failed[0].task)
        return [(word, badge(word, VERDICT_COLORS[word])),
                (text, " ".join(state_badge(s, n) for s, n in counts.items())),
                (error, esc(error))]

    def _footer(self) -> str:
        n = len(self)
        ok = sum(1 for r in self.values() if r)
        return f"{n} flow{'s' if n != 1 else ''}: {ok} succeeded, {n - ok} did not"

    def __bool__(self) -> bool:
        return all(bool(r) for r in self.values())

    def _ipython_display_(self) -> None:
        shown = {r.shown_in for r in self.values()}
        if len(shown) == 1 and None not in shown and shown == {cell_number()}:
            return  # the run's summary printed in this cell
        show(self._plain(), self._repr_html_())


# -- resets ----------------------------------------------------------------------------------

class Reset(ShownOnce):
    """What a flow's ``reset()`` returns: the tasks whose outputs were deleted.

    Truthy unless the user declined the confirmation (d6tflow code writes
    ``assert flow.reset(Task)``); shows as ``reset 2 tasks: GetData(), Train(alpha=0.5)``
    rather than a bare ``True``.

    Attributes:
        tasks: the tasks whose outputs were deleted (none when nothing was there to delete).
        declined: the user answered no: nothing was deleted.
    """

    def __init__(self, tasks: Sequence[luigi.Task], declined: bool = False) -> None:
        self.tasks = list(tasks)
        self.declined = declined

    def __bool__(self) -> bool:
        return not self.declined

    def __eq__(self, other: object) -> bool:
        if isinstance(other, bool):  # `flow.reset(X) == True`, as in d6tflow
            return bool(self) is other
        if isinstance(other, Reset):
            return self.tasks == other.tasks and self.declined == other.declined
        return NotImplemented

    def __hash__(self) -> int:
        return hash(bool(self))  # equal to True or False, so hashed as they are

    def _plain(self) -> str:
        if self.declined:
            return "reset declined: nothing was deleted"
        if not self.tasks:
            return "reset: no outputs to delete"
        n = len(self.tasks)
        names = [redact(describe(t), t) for t in self.tasks]
        shown = ", ".join(names[:10]) + (f" and {n - 10} more" if n > 10 else "")
        return f"reset {n} task{'s' if n != 1 else ''}: {shown}"

    def _repr_html_(self) -> str:
        return f'<div class="pipeflow-reset" style="{_FONT}">{esc(self._plain(), 2000)}</div>'

    def __repr__(self) -> str:
        return self._plain()

    __str__ = __repr__


class FlowResets(dict, ShownOnce):  # type: ignore[type-arg]
    """What ``WorkflowMulti.reset()`` returns: ``{flow_name: Reset}``, shown as one line each."""

    def __bool__(self) -> bool:
        return all(bool(r) for r in self.values())

    def _plain(self) -> str:
        return "\n".join(f"{name}: {r._plain()}" for name, r in self.items()) or "reset: no flow"

    def _repr_html_(self) -> str:
        return (f'<div class="pipeflow-reset" style="{_FONT}">'
                + "<br>".join(f"<b>{esc(n)}</b>: {esc(r._plain(), 2000)}" for n, r in self.items())
                + "</div>")

    def __repr__(self) -> str:
        return self._plain()

    __str__ = __repr__


__all__ = ["STATE_COLORS", "STATUS_COLORS", "FlowPreviews", "FlowResets", "FlowResults",
           "Reset", "ShownOnce", "badge", "cell_number", "draws_html", "esc",
           "run_result_html", "show", "state_badge", "table"]
