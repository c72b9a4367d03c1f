"""The status of every task in a graph, computed in one pass, and what a run executes.

Each task's own outputs are checked once; ``check_dependencies`` is applied by propagating
along the topological order, never by recursion, so status checks are linear in the size of
the graph (d6tflow re-checks shared upstream tasks once per path: exponential on stacked
diamonds). A :class:`Plan` says what a run executes (preview, run, summary and progress
bar all read that one answer) and grows when a run adds the tasks a ``run()`` yields;
:func:`assess` judges one task without building its graph. How a plan is shown is
:mod:`pipeflow.display.preview`'s business.

A task is COMPLETE when a successful run committed its outputs, they are intact, and
nothing they were made from has changed since (see :mod:`pipeflow.fingerprint`); STALE
when it has committed outputs that no longer count (its code, parameters or upstream
outputs changed, its files were edited, or an upstream task is itself out of date), and
PENDING when nothing valid was committed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import luigi

from pipeflow import fingerprint, settings
from pipeflow.contract import TaskContract, adapt, current_task, refresh_classes
from pipeflow.graph import Graph, build, describe, requirement_edges


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
        cascade: whether ``check_dependencies`` applied.
    """

    graph: Graph
    own: list[bool] = field(default_factory=list)
    status: list[Status] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    to_run: frozenset[int] = frozenset()
    up_to_date: tuple[int, ...] = ()
    cascade: bool = True
    _digests: list[str | None] = field(default_factory=list, repr=False)
    _ran: set[int] = field(default_factory=set, repr=False)

    def missing_upstream(self, task: luigi.Task) -> list[luigi.Task]:
        """Tasks upstream of (or equal to) ``task`` whose own outputs are missing."""
        up = self.graph.upstream([self.graph.position(task)])
        return [self.graph.nodes[i] for i in sorted(up) if not self.own[i]]

    def extend(self, tasks: Sequence[luigi.Task], taken: Collection[int] = ()
               ) -> tuple[list[int], set[int], list[int]]:
        """Add ``tasks`` (and their upstream tasks) to the graph and assess the new ones.

        A run calls this with the requirements a ``run()`` yields: they join the run.

        Args:
            tasks: the tasks to add (those already in the graph keep their position).
            taken: positions the run has already dealt with (to run, or reported done):
                the walk below does not enter them.

        Returns:
            The positions of ``tasks``; what a run must now execute (walking down from
            ``tasks`` as from the roots); and the complete tasks that walk met.
        """
        known = len(self.status)
        positions = self.graph.extend(tasks)
        self._assess(known)
        run, done = _what_runs(self.graph, self.status,
                               [p for p in positions if p not in taken], taken)
        return positions, set(run), list(done)

    def would_run(self, redo: Collection[int] = ()) -> frozenset[int]:
        """What a run would execute if the tasks at ``redo`` were not complete (a dry run).

        Args:
            redo: positions of tasks a run would redo (``forced``, and what is downstream
                of them), whatever their status.
        """
        if not redo:
            return self.to_run
        status = [Status.PENDING if i in redo else s for i, s in enumerate(self.status)]
        return _what_runs(self.graph, status, self.graph.roots)[0]

    def ran(self, pos: int) -> None:
        """Note that the task at ``pos`` ran in the run using this plan.

        Its status is looked at again if tasks added later depend on it.
        """
        self._ran.add(pos)

    def _assess(self, start: int) -> None:
        """Compute the status of every node from position ``start`` on (one pass)."""
        graph = self.graph
        if self._ran:  # tasks that ran since: fresh statuses for the new tasks using them
            used = {d for pos in range(start, len(graph.nodes)) for d in graph.deps[pos]}
            for pos in sorted(used & self._ran):
                self._ran.discard(pos)
                self.own[pos], self.status[pos], reason, self._digests[pos] = self._one(pos)
                self.reasons.pop(pos, None)
                if reason is not None:
                    self.reasons[pos] = reason
        for pos in range(start, len(graph.nodes)):
            mine, state, reason, digest = self._one(pos)
            if reason is not None:
                self.reasons[pos] = reason
            self.own.append(mine)
            self.status.append(state)
            self._digests.append(digest)

    def _one(self, pos: int) -> tuple[bool, Status, str | None, str | None]:
        """Own outputs intact, status, reason and outputs digest of the node at ``pos``."""
        graph, status, digests = self.graph, self.status, self._digests
        nodes, deps = graph.nodes, graph.deps[pos]
        task = nodes[pos]
        c = adapt(task)
        if c.group:
            mine, reason, record = True, None, None
            digest = fingerprint.combine([digests[d] for d in deps])
        else:
            mine, reason, record = c.output_state()
            digest = (None if record is None or not graph.dependents[pos]
                      else fingerprint.outputs_digest(record.files))
        state, reason = _own_status(c, mine, reason, record,
                                    lambda: [(nodes[d], digests[d]) for d in deps])
        required = graph.required(pos)
        if state is Status.COMPLETE and required and _cascades(c, self.cascade):
            state, reason = _behind(
                [(nodes[d], status[d]) for d in required]) or (state, reason)
        return mine, state, reason, digest


def _own_status(c: TaskContract, mine: bool, reason: str | None, record: Any,
                upstream: Callable[[], list[tuple[luigi.Task, str | None]]]
                ) -> tuple[Status, str | None]:
    """A task's status from its own outputs (and, for change detection, its inputs')."""
    state = Status.COMPLETE if mine else Status.STALE if record else Status.PENDING
    if mine and record is not None and record.fingerprint and not c.external:
        code = fingerprint.detects(c.changes.code, settings.detect_code_changes)
        data = fingerprint.detects(c.changes.data, settings.detect_data_changes)
        if code or data:
            reason = fingerprint.changes(record.fingerprint, c.task, upstream(), code, data)
            if reason is not None:
                state = Status.STALE
    return state, reason


def _cascades(c: TaskContract, cascade: bool) -> bool:
    """Whether an upstream task out of date makes this task out of date too.

    A contract may opt out with ``cascades = False`` (a task tree's stored task: once
    completed it stays completed when what it depends on runs again).
    """
    return c.group or (cascade and not c.external and c.cascades)


def _behind(required: list[tuple[luigi.Task, Status]]) -> tuple[Status, str | None] | None:
    """The status a complete task takes from its required tasks (None: they are complete)."""
    behind = [(t, s) for t, s in required if s is not Status.COMPLETE]
    if not behind:
        return None
    if any(s is Status.PENDING for _, s in behind):
        return Status.PENDING, None
    return Status.STALE, f"upstream {describe(behind[0][0])} is out of date"


@dataclass(frozen=True)
class Verdict:
    """The status of one task (see :func:`assess`).

    Attributes:
        own: its own outputs are committed and intact.
        status: COMPLETE, STALE or PENDING, as a plan of its graph would say.
        reason: why its outputs do not count, when there is something to explain.
    """

    own: bool
    status: Status
    reason: str | None


def assess(task: luigi.Task, check_dependencies: bool | None = None) -> Verdict:
    """The status of one task, looking upstream only as far as that status depends on.

    The same answer as ``build_plan(graph.build([task]))`` gives for ``task``, without
    building the graph: a task whose own outputs do not count is not looked past, and
    upstream tasks are visited only below complete ones (with ``check_dependencies``) or
    one level up (their outputs, for change detection). ``complete()`` and
    ``outputLoad()`` use it. A task of a class redefined since is judged as the same
    task of the newest definition (as a run would run it).

    Raises:
        RedefinitionError: its class was redefined in a way it cannot follow.
        CycleError: ``requires()`` loops back (found by building the graph, as a plan would).
        RequirementError: a ``requires()`` returned something that is not a task.
    """
    cascade = settings.check_dependencies if check_dependencies is None else check_dependencies
    fingerprint.refresh()
    refresh_classes()
    task = current_task(task)  # an instance kept from before its class was redefined
    own: dict[str, tuple[bool, str | None, Any]] = {}
    digests: dict[str, str | None] = {}
    edges: dict[str, list[tuple[luigi.Task, bool]]] = {}
    done: dict[str, tuple[Status, str | None]] = {}

    def own_of(t: luigi.Task) -> tuple[bool, str | None, Any]:
        tid = t.task_id
        if tid not in own:
            c = adapt(t)
            own[tid] = (True, None, None) if c.group else c.output_state()
        return own[tid]

    def edges_of(t: luigi.Task) -> list[tuple[luigi.Task, bool]]:
        if t.task_id not in edges:
            edges[t.task_id] = list(dict.fromkeys(requirement_edges(t)))
        return edges[t.task_id]

    def digest_of(t: luigi.Task) -> str | None:
        # a group's digest combines its members' (a short walk through groups only)
        stack, order = [t], []
        while stack:
            u = stack.pop()
            if u.task_id in digests or u in order:
                continue
            order.append(u)
            if adapt(u).group:
                stack.extend(d for d, _ in edges_of(u))
        for u in reversed(order):
            if u.task_id in digests:
                continue
            if adapt(u).group:
                digests[u.task_id] = fingerprint.combine(
                    [digests[d.task_id] for d in _distinct(edges_of(u))])
            else:
                record = own_of(u)[2]
                digests[u.task_id] = (None if record is None
                                      else fingerprint.outputs_digest(record.files))
        return digests[t.task_id]

    # Depth first; a task is judged once the required tasks its status depends on are.
    stack: list[luigi.Task] = [task]
    on_stack: set[str] = set()
    while stack:
        t = stack[-1]
        tid = t.task_id
        if tid in done:
            stack.pop()
            continue
        c = adapt(t)
        mine, reason, record = own_of(t)
        state, reason = _own_status(
            c, mine, reason, record,
            lambda t=t: [(d, digest_of(d)) for d in _distinct(edges_of(t))])  # type: ignore[misc]
        required = [d for d, opt in edges_of(t) if not opt] \
            if state is Status.COMPLETE and _cascades(c, cascade) else []
        waiting = [d for d in required if d.task_id not in done]
        if waiting:
            if tid in on_stack:  # came back to it with its requirements not judged: a cycle
                return _full(task, cascade)
            on_stack.add(tid)
            stack.extend(waiting)
            continue
        stack.pop()
        on_stack.discard(tid)
        if required:
            state, reason = _behind([(d, done[d.task_id][0]) for d in required]) or (state, reason)
        done[tid] = (state, reason)
    state, reason = done[task.task_id]
    return Verdict(own_of(task)[0], state, reason)


def _distinct(edges: list[tuple[luigi.Task, bool]]) -> list[luigi.Task]:
    """The upstream tasks of ``edges``, each once, in order (as a graph's ``deps``)."""
    return list({d.task_id: d for d, _ in edges}.values())


def _full(task: luigi.Task, cascade: bool) -> Verdict:
    """The verdict from a whole plan (which raises the cycle error, if there is one)."""
    plan = build_plan(build([task]), cascade)
    pos = plan.graph.position(task)
    return Verdict(plan.own[pos], plan.status[pos], plan.reasons.get(pos))


def _what_runs(graph: Graph, status: list[Status], starts: Sequence[int],
               taken: Collection[int] = ()) -> tuple[frozenset[int], tuple[int, ...]]:
    """What a run from ``starts`` executes, and the complete tasks it meets on the way.

    Positions in ``taken`` are not entered (a run already has them).
    """
    to_run: set[int] = set()
    up_to_date: list[int] = []
    seen: set[int] = set(taken) | set(starts)
    stack = list(dict.fromkeys(starts))
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
    fingerprint.refresh()
    refresh_classes()
    plan = Plan(graph, cascade=cascade)
    plan._assess(0)
    plan.to_run, plan.up_to_date = _what_runs(graph, plan.status, graph.roots)
    return plan


__all__ = ["Plan", "Status", "Verdict", "assess", "build_plan"]
