"""The pure graph: order, cycles, bad requirements, and scale without recursion."""

from __future__ import annotations

import sys

import luigi
import pytest

import pipeflow
from pipeflow import graph
from pipeflow.errors import CycleError, RequirementError


class Load(pipeflow.tasks.TaskPickle):
    def run(self):
        self.save(1)


class Features(pipeflow.tasks.TaskPickle):
    window = pipeflow.IntParameter(default=7)

    def requires(self):
        return Load()


class Train(pipeflow.tasks.TaskPickle):
    model = pipeflow.Parameter(default="xgb")

    def requires(self):
        return {"f": Features(), "l": Load()}


def test_build_is_topological_and_dedupes_shared_tasks():
    g = graph.build([Train()])
    assert [t.task_family for t in g.nodes] == ["Load", "Features", "Train"]
    assert g.deps[g.position(Train())] == (g.position(Features()), g.position(Load()))
    assert g.roots == [2]
    assert g.downstream([0]) == {0, 1, 2}
    assert g.upstream([1]) == {0, 1}


def test_build_touches_no_files(tmp_path):
    graph.build([Train()])
    assert not any(tmp_path.rglob("*.pkl"))


class CycA(pipeflow.tasks.TaskPickle):
    model = pipeflow.Parameter(default="xgb")

    def requires(self):
        return CycB()


class CycB(pipeflow.tasks.TaskPickle):
    window = pipeflow.IntParameter(default=7)

    def requires(self):
        return CycC()


class CycC(pipeflow.tasks.TaskPickle):
    def requires(self):
        return CycA()


def test_cycle_error_prints_the_path_before_anything_runs(data_dir):
    with pytest.raises(CycleError) as info:
        pipeflow.run(CycA())
    msg = str(info.value)
    assert "the task graph has a cycle, so no run order exists" in msg
    assert "CycA(model='xgb') -> CycB(window=7) -> CycC() -> CycA(model='xgb')" in msg
    assert "CycC.requires() returns CycA(model='xgb'), which already depends on CycC()" in msg
    assert info.value.cycle[0] == info.value.cycle[-1]
    assert not any(data_dir.rglob("*"))


def test_self_requirement_is_a_cycle():
    class Selfish(pipeflow.tasks.TaskPickle):
        def requires(self):
            return self

    with pytest.raises(CycleError, match=r"Selfish\(\) -> Selfish\(\)"):
        graph.build([Selfish()])


def test_requires_returning_a_class_says_to_instantiate():
    class Bad(pipeflow.tasks.TaskPickle):
        def requires(self):
            return Load

    with pytest.raises(RequirementError, match=r"returned the class Load instead of a task "
                                                r"instance\. Write Load\(\)"):
        graph.build([Bad()])


def test_requires_returning_a_non_task_names_type_and_value():
    class Bad(pipeflow.tasks.TaskPickle):
        def requires(self):
            return [Load(), "features.csv"]

    with pytest.raises(RequirementError,
                       match=r"Bad\(\)\.requires\(\) returned 'features.csv' \(type str\)"):
        graph.build([Bad()])


class Link(pipeflow.tasks.TaskPickle):
    i = pipeflow.IntParameter()

    def requires(self):
        return Link(i=self.i - 1) if self.i > 0 else []

    def run(self):
        self.save(self.i)


def test_10000_task_chain_previews_and_runs_without_recursion(data_dir):
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # far below the chain length: any recursion would fail
    try:
        root = Link(i=9999)
        assert len(graph.build([root])) == 10_000
        p = pipeflow.preview(root, print_it=False)
        assert p.counts() == {"COMPLETE": 0, "STALE": 0, "PENDING": 10_000}
        result = pipeflow.run(root)
        assert len(result.by_state("completed")) == 10_000
        assert root.complete()
        assert root.outputLoad() == 9999
    finally:
        sys.setrecursionlimit(limit)


class Diamond(pipeflow.tasks.TaskPickle):
    """Level k has two tasks, each requiring both tasks of level k-1."""

    level = pipeflow.IntParameter()
    side = pipeflow.IntParameter(default=0)
    calls = []

    def requires(self):
        if self.level == 0:
            return []
        return [Diamond(level=self.level - 1, side=0), Diamond(level=self.level - 1, side=1)]

    def complete(self, cascade=True):
        Diamond.calls.append(self.task_id)
        return super().complete(cascade)

    def run(self):
        self.save(self.level)


def test_40_stacked_diamonds_status_is_linear(data_dir):
    root = Diamond(level=40)
    g = graph.build([root])
    assert len(g) == 81
    p = pipeflow.preview(root, print_it=False)
    # one line per edge (158) plus the root; each task is drawn once, then referenced
    assert len(p.rows) == 159
    assert len(p.tasks()) == 81
    assert sum(r.reference for r in p.rows) == 78
    result = pipeflow.run(root)
    assert len(result.by_state("completed")) == 81
    Diamond.calls.clear()
    assert root.complete()
    # complete() of the root does one pass; it never recurses into shared tasks
    assert Diamond.calls == [root.task_id]


def test_graph_of_plain_luigi_tasks(tmp_path):
    class Plain(luigi.ExternalTask):
        def output(self):
            return luigi.LocalTarget(str(tmp_path / "x"))

    class Uses(pipeflow.tasks.TaskPickle):
        def requires(self):
            return Plain()

    assert [t.task_family for t in graph.build([Uses()]).nodes] == ["Plain", "Uses"]


def test_extend_appends_new_tasks_in_order_and_keeps_positions():
    g = graph.build([Features()])
    before = list(g.nodes)
    assert g.dependents[0] == (1,)  # computed now: must be recomputed after extending
    positions = g.extend([Train(), Load()])
    assert g.nodes[:2] == before  # existing positions keep their meaning
    assert [t.task_family for t in g.nodes] == ["Load", "Features", "Train"]
    assert positions == [2, 0]
    assert g.dependents[0] == (1, 2) and g.dependents[1] == (2,)
    assert g.required_dependents[1] == (2,)
    assert g.roots == [1]  # extending adds tasks, not roots
    assert g.extend([Load()]) == [0] and len(g) == 3  # nothing new: nothing added


def test_a_failed_extend_leaves_the_graph_as_it_was():
    class Bad(pipeflow.tasks.TaskPickle):
        def requires(self):
            return [Load(), "not a task"]

    class Extra(pipeflow.tasks.TaskPickle):  # new, added before Bad fails
        def requires(self):
            return Load()

    class Top(pipeflow.tasks.TaskPickle):
        def requires(self):
            return [Extra(), Features(), Bad()]

    g = graph.build([Train()])
    snapshot = (list(g.nodes), dict(g.index), list(g.deps), list(g.optional))
    with pytest.raises(RequirementError):
        g.extend([Top()])
    assert "Extra" not in str(g.index)
    assert (list(g.nodes), dict(g.index), list(g.deps), list(g.optional)) == snapshot
