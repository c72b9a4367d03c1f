"""What ``preview()`` shows: the status tree of a plan, as text, in colour, or as HTML."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import luigi

from pipeflow.display import rich
from pipeflow.display.rich import cell_number
from pipeflow.parameters import redact
from pipeflow.plan import Plan, Status

_COLORS = {"COMPLETE": "\033[92m", "PENDING": "\033[94m", "STALE": "\033[93m"}
_END = "\033[0m"
#: why a task that is not complete does not run (check_dependencies off)
NOT_RUN = ("not run: the tasks that need it are complete, and check_dependencies is off "
           "(pipeflow.settings.check_dependencies = True reruns it)")
#: why a pending optional input of complete tasks does not run (check_dependencies on)
OPTIONAL_NOT_RUN = ("not run: only complete tasks need it, as an optional input (it runs "
                    "with the next run of a task that needs it)")
#: deeper levels are not indented further, so a 10,000-task chain stays readable
MAX_INDENT_DEPTH = 30


@dataclass(frozen=True)
class PreviewRow:
    """One line of a preview.

    Attributes:
        task: the task.
        status: its status.
        depth: distance from the root of its tree.
        last: whether it is the last requirement of its parent.
        params: the parameters shown (those differing from the parent's).
        reference: the task was drawn above already (shared by several parents).
        prefix: the tree-drawing characters before the task.
        reason: why its outputs do not count, when notable (e.g. changed outside pipeflow).
    """

    task: luigi.Task
    status: Status
    depth: int
    last: bool
    params: dict[str, str]
    reference: bool
    prefix: str
    reason: str | None = None

    def text(self, color: bool = False) -> str:
        """The line, d6tflow style: ``└─--[Train-{'model': 'xgb'} (PENDING)]``."""
        name = f"{self.task.task_family}-{self.params}"
        if self.reference:
            return f"{self.prefix}[{name} (see above)]"
        word = str(self.status)
        if color:
            word = _COLORS[word] + word + _END
        why = f" - {self.reason}" if self.reason else ""
        return f"{self.prefix}[{name} ({word})]{why}"


class Preview(rich.ShownOnce):
    """What ``preview()`` shows: a tree of tasks with their status, usable in code.

    ``preview.text()`` is the text tree (also ``str(preview)`` unless ``preview()`` already
    showed it), ``preview._repr_html_()`` its notebook rendering: a table with the status
    in colour. In a notebook the preview shows once per cell: as the value of the cell in
    which ``preview()`` drew it, it shows nothing more; kept in a variable, it shows in any
    later cell.

    Attributes:
        rows: one :class:`PreviewRow` per line, in display order.
        plan: the plan the preview was made from.
        printed: ``preview()`` showed the tree (printed it, or drew it in a notebook);
            ``str()`` then gives the one-line :meth:`summary`, so ``print(flow.preview())``
            shows the tree once.

    Example:
        >>> p = flow.preview()        # doctest: +SKIP
        >>> p.counts()                # doctest: +SKIP
        {'COMPLETE': 1, 'PENDING': 2}
        >>> [describe(t) for t in p.tasks("PENDING")]  # doctest: +SKIP
    """

    def __init__(self, rows: list[PreviewRow], plan: Plan):
        self.rows = rows
        self.plan = plan
        self.printed = False  # preview() showed the tree: str() gives the summary line

    def tasks(self, status: Status | str | None = None) -> list[luigi.Task]:
        """The distinct tasks shown, optionally only those with ``status``."""
        want = None if status is None else Status(str(status))
        return [r.task for r in self.rows if not r.reference and want in (None, r.status)]

    def status(self) -> dict[str, Status]:
        """task_id -> status for every task shown."""
        return {r.task.task_id: r.status for r in self.rows if not r.reference}

    def counts(self) -> dict[str, int]:
        """Number of distinct tasks per status."""
        out = {s.value: 0 for s in Status}
        for r in self.rows:
            if not r.reference:
                out[r.status.value] += 1
        return out

    def text(self, color: bool = False) -> str:
        """The tree as text, one line per task."""
        return "\n".join(r.text(color) for r in self.rows)

    def summary(self) -> str:
        """One line of counts: ``3 tasks: 1 complete, 0 stale, 2 pending``."""
        c = self.counts()
        n = len(self.tasks())
        return (f"{n} task{'s' if n != 1 else ''}: {c['COMPLETE']} complete, {c['STALE']} "
                f"stale, {c['PENDING']} pending")

    def __str__(self) -> str:
        # ``print(flow.preview())`` (a d6tflow idiom) would otherwise draw the tree twice:
        # once printed, the preview stringifies as its summary; .text() is always the tree.
        return self.summary() if self.printed else self.text()

    def __repr__(self) -> str:
        c = self.counts()
        n = len(self.tasks())
        return (f"<Preview of {n} tasks: {c['COMPLETE']} done, {c['STALE']} stale, "
                f"{c['PENDING']} to run>")

    def _plain(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        """The tree as an HTML table: task (family and parameters), status, why."""
        return preview_html(self)


def preview_html(preview: Preview) -> str:
    """``preview`` as an HTML table: a row per line of the tree, a count line under it.

    Each row: the task (indented by its depth; its family, then the parameters that differ
    from its parent's), its status in colour, and why it is stale or does not run. A task
    drawn above already (shared by several parents) is a grey "see above" row. Values are
    escaped and secret parameter values masked; past :data:`~pipeflow.display.rich.MAX_ROWS`
    rows the rest is counted (``preview.text()`` has them all).
    """
    rows = []
    for r in preview.rows[: rich.MAX_ROWS]:
        depth = min(r.depth, MAX_INDENT_DEPTH)
        glyph = rich.muted("└ ") if r.depth else ""
        deep = rich.muted(f"[{r.depth}] ") if r.depth > MAX_INDENT_DEPTH else ""
        params = ", ".join(f"{k}={v}" for k, v in r.params.items())
        params = redact(params, r.task) if params else ""
        name = f"<b>{rich.esc(r.task.task_family)}</b>"
        if r.reference:
            name = f'<span style="color:#6e7781">{rich.esc(r.task.task_family)}</span>'
        task = (f'<span style="padding-left:{depth * 1.2:.1f}em;white-space:nowrap">{glyph}'
                f"{deep}{name}</span> {rich.muted(params)}")
        if r.reference:
            rows.append([task, '<span style="color:#6e7781;white-space:nowrap">see above</span>',
                         ""])
            continue
        word = str(r.status)
        why = rich.esc(redact(r.reason, r.task)) if r.reason else ""
        rows.append([task, rich.badge(word, rich.STATUS_COLORS[word]), why])
    return rich.table(["task", "status", "why"], rows, preview.summary(), "pipeflow-preview",
                      len(preview.rows))


def build_preview(
    plan: Plan,
    roots: Sequence[luigi.Task],
    show_params: bool = True,
    clip_params: bool = False,
    indent: str = "",
    last: bool = True,
) -> Preview:
    """Lay out the tree of each root: a task shared by several parents is drawn once.

    Args:
        plan: statuses of the graph containing ``roots``.
        roots: the tasks whose trees to draw.
        show_params: show parameters at all.
        clip_params: show only the first parameter of each task.
        indent: prefix of every line (d6tflow compatibility).
        last: draw the roots as last children (d6tflow compatibility).
    """
    graph = plan.graph
    rows: list[PreviewRow] = []
    drawn: set[int] = set()
    str_params: dict[int, dict[str, str]] = {}  # each task's parameters, computed once

    def params_of(pos: int) -> dict[str, str]:
        if pos not in str_params:
            str_params[pos] = graph.nodes[pos].to_str_params(only_significant=True)
        return str_params[pos]

    for root in roots:
        # Each frame: (position, depth, is last child, prefix indent, parent's params)
        stack: list[tuple[int, int, bool, str, dict[str, str] | None]] = [
            (graph.position(root), 0, last, indent, None)
        ]
        while stack:
            pos, depth, is_last, ind, parent_params = stack.pop()
            task = graph.nodes[pos]
            params = _shown_params(params_of(pos), parent_params, show_params, clip_params)
            branch = "└─--" if is_last else "|--"
            shown_ind = ind if depth <= MAX_INDENT_DEPTH else ind + f"[{depth}]"
            ref = pos in drawn
            why = None if ref else plan.reasons.get(pos)
            if not ref and plan.status[pos] is not Status.COMPLETE and pos not in plan.to_run:
                why = ((NOT_RUN if not plan.cascade else OPTIONAL_NOT_RUN)
                       + (f"; {why}" if why else ""))
            rows.append(PreviewRow(task, plan.status[pos], depth, is_last, params, ref,
                                   shown_ind + branch, why))
            if ref:
                continue
            drawn.add(pos)
            child_ind = ind + ("   " if is_last else "|  ") if depth < MAX_INDENT_DEPTH else ind
            children = graph.deps[pos]
            for k in range(len(children) - 1, -1, -1):
                stack.append((children[k], depth + 1, k == len(children) - 1, child_ind,
                              params_of(pos)))
    return Preview(rows, plan)


def _shown_params(
    params: dict[str, str], parent: dict[str, str] | None, show: bool, clip: bool
) -> dict[str, str]:
    if not show:
        return {}
    if parent is not None:
        params = {k: v for k, v in params.items() if parent.get(k) != v}
    if clip and len(params) > 1:
        params = dict([next(iter(params.items()))])
    return params


def use_color() -> bool:
    """Colour codes only when standard output is a terminal."""
    return sys.stdout.isatty()


__all__ = ["NOT_RUN", "OPTIONAL_NOT_RUN", "Preview", "PreviewRow", "build_preview", "cell_number",
           "preview_html",
           "use_color"]
