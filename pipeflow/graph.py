"""The task graph: pure, iterative, no file access.

``build(roots)`` instantiates nothing new: it walks ``requires()`` of the given task
instances with an explicit stack (no recursion, so a 10,000-task chain is fine), dedupes
tasks by ``task_id``, detects cycles and returns the tasks in topological order (every task
after all of its upstream tasks).

Example:
    >>> g = build([Train()])          # doctest: +SKIP
    >>> [describe(t) for t in g.nodes]  # doctest: +SKIP
    ['Load()', 'Features(window=7)', "Train(model='xgb')"]
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import luigi

from pipeflow.contract import (
    Optional,
    adapt,
    check_classes,
    current_task,
    describe,
    refresh_classes,
)
from pipeflow.errors import CycleError, RequirementError
from pipeflow.parameters import redact


def optional(task: luigi.Task) -> Optional:
    """Mark a requirement optional, inside ``requires()``.

    An optional upstream task must finish (succeed or fail) before the downstream task
    starts, and the downstream task runs either way: ``inputLoad()`` gives ``None`` for an
    optional input that failed. Its status does not make the downstream task pending.

    Example:
        >>> def requires(self):  # doctest: +SKIP
        ...     return {"prices": Prices(), "news": pipeflow.optional(NewsFeed())}
    """
    return Optional(task)


def unwrap(struct: object) -> object:
    """``struct`` (a requires() result) with every optional marker replaced by its task."""
    if isinstance(struct, Optional):
        return struct.task
    if isinstance(struct, dict):
        return {k: unwrap(v) for k, v in struct.items()}
    if isinstance(struct, (list, tuple)):
        return type(struct)(unwrap(v) for v in struct)
    return struct


def requirement_edges(task: luigi.Task) -> list[tuple[luigi.Task, bool]]:
    """(upstream task, is optional) for each requirement of ``task``, flattened.

    A group's members (what an aggregator's ``run()`` yields) are requirements too, also
    when ``@requires`` gave it a ``requires()`` of its own (d6tflow's docs do this to pass
    parameters on).

    Raises:
        RequirementError: something that is not a task instance was returned.
    """
    out: list[tuple[luigi.Task, bool]] = []
    for dep in adapt(task).requirements():
        if isinstance(dep, Optional):
            out.append((dep.task, True))
        elif isinstance(dep, luigi.Task):
            out.append((dep, False))
        else:
            raise RequirementError(_bad_requirement(task, dep))
    return out


def _bad_requirement(task: luigi.Task, dep: object) -> str:
    where = f"{describe(task)}.requires() returned"
    if isinstance(dep, type) and issubclass(dep, luigi.Task):
        return (
            f"{where} the class {dep.__name__} instead of a task instance. Write "
            f"{dep.__name__}() (or self.clone({dep.__name__}) to pass parameters on)."
        )
    return redact(
        f"{where} {dep!r} (type {type(dep).__name__}), which is not a task. requires() must "
        f"return a task instance, or a list, tuple or dict of task instances.", task)


@dataclass
class Graph:
    """A task DAG in topological order.

    Attributes:
        nodes: the tasks, each after all of its upstream tasks.
        index: task_id -> position in ``nodes``.
        deps: for each node, the positions of the tasks it requires.
        roots: positions of the tasks the graph was built from.
        optional: for each node, the positions among its ``deps`` it requires only
            optionally (required by another path of the same node wins).
    """

    nodes: list[luigi.Task]
    index: dict[str, int]
    deps: list[tuple[int, ...]]
    roots: list[int] = field(default_factory=list)
    optional: list[frozenset[int]] = field(default_factory=list)

    def required(self, pos: int) -> tuple[int, ...]:
        """The positions ``pos`` requires (not optionally)."""
        opt = self.optional[pos] if self.optional else frozenset()
        return tuple(d for d in self.deps[pos] if d not in opt)

    @cached_property
    def required_dependents(self) -> list[tuple[int, ...]]:
        """For each node, the positions of the tasks that require it (not optionally)."""
        out: list[list[int]] = [[] for _ in self.nodes]
        for i in range(len(self.nodes)):
            for d in self.required(i):
                out[d].append(i)
        return [tuple(x) for x in out]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[luigi.Task]:
        return iter(self.nodes)

    def __contains__(self, task: object) -> bool:
        return isinstance(task, luigi.Task) and task.task_id in self.index

    @cached_property
    def dependents(self) -> list[tuple[int, ...]]:
        """For each node, the positions of the tasks that require it."""
        out: list[list[int]] = [[] for _ in self.nodes]
        for i, ds in enumerate(self.deps):
            for d in ds:
                out[d].append(i)
        return [tuple(x) for x in out]

    def position(self, task: luigi.Task) -> int:
        """Position of ``task`` in the graph (KeyError if absent)."""
        return self.index[task.task_id]

    def upstream(self, starts: Iterable[int]) -> set[int]:
        """The given positions and everything they require, transitively."""
        return closure(starts, self.deps)

    def downstream(self, starts: Iterable[int]) -> set[int]:
        """The given positions and everything that requires them, transitively."""
        return closure(starts, self.dependents)

    def families(self) -> list[type[luigi.Task]]:
        """The distinct task classes in the graph, in topological order of first use."""
        seen: dict[type[luigi.Task], None] = {}
        for t in self.nodes:
            seen.setdefault(type(t), None)
        return list(seen)

    def extend(self, tasks: Iterable[luigi.Task]) -> list[int]:
        """Add ``tasks`` and everything upstream of them that is not in the graph yet.

        New tasks are appended, each after its upstream tasks, so the order stays
        topological and existing positions keep their meaning (a run adds the tasks a
        ``run()`` yields this way). Returns the positions of ``tasks``, in order.

        Raises:
            CycleError: ``requires()`` loops back to a task already on the path.
            RequirementError: a ``requires()`` returned something that is not a task.
        """
        nodes, index, deps, optional = self.nodes, self.index, self.deps, self.optional
        before = len(nodes)
        on_path: dict[str, int] = {}  # task_id -> depth on the DFS stack
        wanted: list[str] = []
        try:
            for root in tasks:
                if not isinstance(root, luigi.Task):
                    raise RequirementError(
                        f"expected a task instance, got {root!r} (type "
                        f"{type(root).__name__}). Pass e.g. Train() rather than Train, or "
                        f"use pipeflow.Workflow(Train).")
                root = current_task(root)  # of its class's newest definition
                wanted.append(root.task_id)
                if root.task_id in index:
                    continue
                # Each frame: (task, its requirement edges, next requirement to visit)
                stack: list[tuple[luigi.Task, list[tuple[luigi.Task, bool]], int]] = [
                    (root, requirement_edges(root), 0)]
                on_path[root.task_id] = 0
                while stack:
                    task, reqs, i = stack[-1]
                    if i < len(reqs):
                        stack[-1] = (task, reqs, i + 1)
                        dep = reqs[i][0]
                        tid = dep.task_id
                        if tid in index:
                            continue
                        if tid in on_path:
                            raise _cycle_error([f[0] for f in stack[on_path[tid]:]], dep)
                        on_path[tid] = len(stack)
                        stack.append((dep, requirement_edges(dep), 0))
                        continue
                    stack.pop()
                    del on_path[task.task_id]
                    index[task.task_id] = len(nodes)
                    nodes.append(task)
                    deps.append(tuple(dict.fromkeys(index[r.task_id] for r, _ in reqs)))
                    required = {index[r.task_id] for r, opt in reqs if not opt}
                    optional.append(frozenset(index[r.task_id] for r, opt in reqs if opt)
                                    - required)
        except BaseException:
            # Leave the graph as it was: a failed extension adds nothing.
            for task in nodes[before:]:
                del index[task.task_id]
            del nodes[before:], deps[before:], optional[before:]
            raise
        if len(nodes) > before:
            for name in ("dependents", "required_dependents"):
                self.__dict__.pop(name, None)  # derived from the edges: recomputed on use
        return [index[t] for t in wanted]


def closure(starts: Iterable[int], edges: Sequence[Sequence[int]]) -> set[int]:
    """The ``starts`` and every position reachable from them along ``edges``."""
    seen = set(starts)
    stack = list(seen)
    while stack:
        for nxt in edges[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def build(roots: Iterable[luigi.Task]) -> Graph:
    """Build the graph of ``roots`` and everything upstream of them.

    Raises:
        CycleError: ``requires()`` loops back to a task already on the path.
        RequirementError: a ``requires()`` returned something that is not a task.
    """
    refresh_classes()
    graph = Graph([], {}, [])
    graph.roots = list(dict.fromkeys(graph.extend(roots)))
    check_classes(graph.families(), lambda cls: _dependent(graph, cls))
    return graph


def _dependent(graph: Graph, cls: type) -> luigi.Task | None:
    """A task of ``graph`` that requires a task of ``cls`` (None: only roots are)."""
    for pos, task in enumerate(graph.nodes):
        if type(task) is cls:
            for dep in graph.dependents[pos]:
                return graph.nodes[dep]
    return None


def _cycle_error(path: list[luigi.Task], back_to: luigi.Task) -> CycleError:
    chain = [*path, back_to]
    names = " -> ".join(describe(t) for t in chain)
    last = path[-1]
    return CycleError(
        f"the task graph has a cycle, so no run order exists:\n    {names}\n"
        f"{last.task_family}.requires() returns {describe(back_to)}, which already depends "
        f"on {describe(last)}. Remove one of these requirements.",
        [t.task_id for t in chain],
    )


_RUNNING: contextvars.ContextVar[Graph | None] = contextvars.ContextVar(
    "pipeflow_running_graph", default=None)


@contextlib.contextmanager
def running(graph: Graph) -> Iterator[None]:
    """Make ``graph`` the graph of the run in progress (see :func:`upstream_of`)."""
    token = _RUNNING.set(graph)
    try:
        yield
    finally:
        _RUNNING.reset(token)


def upstream_of(task: luigi.Task) -> list[luigi.Task]:
    """The tasks ``task`` requires.

    From the graph of the run in progress when the task is in it (``requires()`` is not
    called again), else from ``requires()``.
    """
    graph = _RUNNING.get()
    if graph is not None:
        pos = graph.index.get(task.task_id)
        if pos is not None and graph.nodes[pos] is task:
            return [graph.nodes[d] for d in graph.deps[pos]]
    return list(dict.fromkeys(dep for dep, _ in requirement_edges(task)))
