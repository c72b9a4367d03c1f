"""The status of every task in a graph, computed in one pass, and the preview built on it.

Each task's own outputs are checked once; ``check_dependencies`` is applied by propagating
along the topological order, never by recursion, so status checks are linear in the size of
the graph (d6tflow re-checks shared upstream tasks once per path: exponential on stacked
diamonds).

A task is COMPLETE when a successful run committed its outputs, they are intact, and
nothing they were made from has changed since (see :mod:`pipeflow.fingerprint`); STALE
when it has committed outputs that no longer count (its code, parameters or upstream
outputs changed, its files were edited, or an upstream task is itself out of date), and
PENDING when nothing valid was committed.
"""

from __future__ import annotations

import enum
import html
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import luigi

from pipeflow import fingerprint, settings
from pipeflow.contract import adapt
from pipeflow.graph import Graph, describe


class Status(str, enum.Enum):
    """Status of a task before a run."""

    COMPLETE = "COMPLETE"
    PENDING = "PENDING"
    STALE = "STALE"

    def __str__(self) -> str:
        return self.value


@dataclass
class Plan:
    """Status of each task of a graph.

    Attributes:
        graph: the graph.
        own: for each node, whether its own outputs are committed and intact.
        status: for each node, COMPLETE, STALE or PENDING.
        reasons: node -> why its outputs do not count (changed outside pipeflow, code
            changed...), for the nodes where there is something to explain.
        to_run: the nodes a run executes: walking down from the roots, every task that is
            not complete, stopping at complete ones (as luigi does: with
            ``check_dependencies`` off, a complete task's upstream is left alone).
        up_to_date: the complete nodes that walk reached (a run reports them done).
    """

    graph: Graph
    own: list[bool]
    status: list[Status]
    reasons: dict[int, str] = field(default_factory=dict)
    to_run: frozenset[int] = frozenset()
    up_to_date: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.to_run and not self.up_to_date:
            self.to_run, self.up_to_date = _what_runs(self.graph, self.status)

    def status_of(self, task: luigi.Task) -> Status:
        """Status of a task of the graph."""
        return self.status[self.graph.position(task)]

    def missing_upstream(self, task: luigi.Task) -> list[luigi.Task]:
        """Tasks upstream of (or equal to) ``task`` whose own outputs are missing."""
        up = self.graph.upstream([self.graph.position(task)])
        return [self.graph.nodes[i] for i in sorted(up) if not self.own[i]]


def _what_runs(graph: Graph, status: list[Status]) -> tuple[frozenset[int], tuple[int, ...]]:
    """What a run of ``graph`` executes, and the complete tasks it meets on the way."""
    to_run: set[int] = set()
    up_to_date: list[int] = []
    seen: set[int] = set(graph.roots)
    stack = list(graph.roots)
    while stack:
        i = stack.pop()
        if status[i] is Status.COMPLETE:
            up_to_date.append(i)
            continue
        to_run.add(i)
        for d in graph.deps[i]:
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return frozenset(to_run), tuple(sorted(up_to_date))


def build_plan(graph: Graph, check_dependencies: bool | None = None) -> Plan:
    """Compute every task's status in one pass over ``graph``.

    Args:
        graph: the graph.
        check_dependencies: a task with a pending or stale upstream task is pending or
            stale too; defaults to ``settings.check_dependencies``. Groups (aggregators)
            always follow their upstream tasks; external tasks never do.
    """
    cascade = settings.check_dependencies if check_dependencies is None else check_dependencies
    code_on, data_on = settings.detect_code_changes, settings.detect_data_changes
    fingerprint.refresh()
    nodes = graph.nodes
    own: list[bool] = []
    status: list[Status] = []
    reasons: dict[int, str] = {}
    digests: list[str | None] = []  # each node's outputs, for its dependents' data checks
    for pos, task in enumerate(nodes):
        c = adapt(task)
        external, group = c.external, c.group
        if group:
            mine, reason, record = True, None, None
            digests.append(fingerprint.combine([digests[d] for d in graph.deps[pos]]))
        else:
            mine, reason, record = c.output_state()
            digests.append(None if record is None or not graph.dependents[pos]
                           else fingerprint.outputs_digest(record.files))
        state = Status.COMPLETE if mine else Status.STALE if record else Status.PENDING
        if mine and record is not None and record.fingerprint and not external:
            code = fingerprint.detects(c.changes.code, code_on)
            data = fingerprint.detects(c.changes.data, data_on)
            if code or data:
                reason = fingerprint.changes(
                    record.fingerprint, task,
                    [(nodes[d], digests[d]) for d in graph.deps[pos]], code, data)
                if reason is not None:
                    state = Status.STALE
        deps = graph.required(pos)
        if (state is Status.COMPLETE and deps
                and (group or (cascade and not external))):
            behind = [d for d in deps if status[d] is not Status.COMPLETE]
            if any(status[d] is Status.PENDING for d in behind):
                state = Status.PENDING
            elif behind:
                state = Status.STALE
                reason = f"upstream {describe(nodes[behind[0]])} is out of date"
        if reason is not None:
            reasons[pos] = reason
        own.append(mine)
        status.append(state)
    return Plan(graph, own, status, reasons)


# -- preview -------------------------------------------------------------------------------

_COLORS = {"COMPLETE": "\033[92m", "PENDING": "\033[94m", "STALE": "\033[93m"}
_END = "\033[0m"
#: why a task that is not complete does not run (check_dependencies off)
NOT_RUN = ("not run: the tasks that need it are complete, and check_dependencies is off "
           "(pipeflow.settings.check_dependencies = True reruns it)")
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


class Preview:
    """What ``preview()`` shows: a tree of tasks with their status, usable in code.

    ``preview.text()`` is the text tree (also ``str(preview)`` unless ``preview()`` already
    printed it), ``preview._repr_html_()`` its notebook rendering.

    Attributes:
        rows: one :class:`PreviewRow` per line, in display order.
        plan: the plan the preview was made from.
        printed: ``preview()`` printed the tree; ``str()`` then gives the one-line
            :meth:`summary`, so ``print(flow.preview())`` shows the tree once.

    Example:
        >>> p = flow.preview()        # doctest: +SKIP
        >>> p.counts()                # doctest: +SKIP
        {'COMPLETE': 1, 'PENDING': 2}
        >>> [describe(t) for t in p.tasks("PENDING")]  # doctest: +SKIP
    """

    def __init__(self, rows: list[PreviewRow], plan: Plan):
        self.rows = rows
        self.plan = plan
        self._printed = False  # printed by preview(), not yet shown again in a notebook
        self.printed = False  # preview() printed the tree: str() gives the summary line

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

    def _repr_html_(self) -> str:
        colors = {Status.COMPLETE: "#1a7f37", Status.PENDING: "#0969da",
                  Status.STALE: "#9a6700"}
        lines = []
        for r in self.rows:
            plain = html.escape(r.text())
            if not r.reference:
                word = str(r.status)
                plain = plain.replace(
                    f"({word})]", f'(<b style="color:{colors[r.status]}">{word}</b>)]'
                )
            lines.append(plain)
        return "<pre>" + "\n".join(lines) + "</pre>"

    def _ipython_display_(self) -> None:
        # preview() has already printed the tree; showing the returned object as the
        # cell's result would draw it twice. Later displays (``p`` in a new cell) show it.
        if self._printed:
            self._printed = False
            return
        from IPython.display import HTML, display  # only reached inside IPython

        display(HTML(self._repr_html_()))


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
                why = NOT_RUN + (f"; {why}" if why else "")
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


__all__ = ["Plan", "Preview", "PreviewRow", "Status", "build_plan", "build_preview",
           "describe"]
