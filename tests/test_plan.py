"""The plan: one status per task, what a run executes, growing a plan, and the verdict on
one task (``assess``), which must agree with a whole plan while looking at less.
"""

from __future__ import annotations

import itertools
import os

import luigi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeflow
from pipeflow import graph
from pipeflow.plan import Status, assess, build_plan

SPECS: dict[str, dict] = {}
_keys = itertools.count()


class Node(pipeflow.tasks.TaskPickle):
    """Node ``i`` of the random DAG ``key``: its value depends on a version one can bump."""

    key = pipeflow.Parameter()
    i = pipeflow.IntParameter()

    def requires(self):
        spec = SPECS[self.key]
        return [pipeflow.optional(Node(key=self.key, i=d)) if opt else Node(key=self.key, i=d)
                for d, opt in spec["deps"][self.i]]

    def run(self):
        self.save(SPECS[self.key]["version"].get(self.i, 0))


class Group(pipeflow.tasks.TaskAggregator):
    key = pipeflow.Parameter()
    ids = pipeflow.ListParameter()

    def run(self):
        for m in self.ids:
            yield Node(key=self.key, i=m)


@st.composite
def worlds(draw):
    """A DAG, what ran, and what happened to its outputs since."""
    n = draw(st.integers(1, 8))
    deps = []
    for i in range(n):
        ups = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        deps.append([(d, draw(st.booleans())) for d in ups])
    return {
        "deps": deps,
        "ran": draw(st.lists(st.integers(0, n - 1), max_size=3)),
        "rerun": draw(st.sets(st.integers(0, n - 1), max_size=2)),  # new value, same code
        "reset": draw(st.sets(st.integers(0, n - 1), max_size=2)),
        "edited": draw(st.sets(st.integers(0, n - 1), max_size=2)),  # file changed by hand
        "group": draw(st.lists(st.integers(0, n - 1), unique=True, max_size=3)),
        "cascade": draw(st.booleans()),
    }


def _make(world):
    key = f"w{next(_keys)}"
    SPECS[key] = {"deps": world["deps"], "version": {}}
    nodes = [Node(key=key, i=i) for i in range(len(world["deps"]))]
    if world["ran"]:
        pipeflow.run([nodes[i] for i in world["ran"]], execution_summary=False,
                     progress=False, abort=False)
    for i in sorted(world["rerun"]):
        if nodes[i].complete(cascade=False):
            SPECS[key]["version"][i] = 1
            nodes[i].reset(confirm=False)
            pipeflow.run(nodes[i], execution_summary=False, progress=False, abort=False)
    for i in sorted(world["reset"]):
        nodes[i].reset(confirm=False)
    for i in sorted(world["edited"]):
        path = nodes[i].output().path
        if path.exists():
            path.write_bytes(path.read_bytes() + b"x")
    tasks = [*nodes]
    if world["group"]:
        tasks.append(Group(key=key, ids=world["group"]))
    return tasks


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=worlds())
def test_assess_agrees_with_a_whole_plan(world):
    tasks = _make(world)
    luigi.task_register.Register.clear_instance_cache()
    for task in tasks:
        plan = build_plan(graph.build([task]), world["cascade"])
        pos = plan.graph.position(task)
        verdict = assess(task, world["cascade"])
        assert (verdict.own, verdict.status, verdict.reason) == (
            plan.own[pos], plan.status[pos], plan.reasons.get(pos)), task


def test_assess_does_not_look_past_a_task_whose_outputs_do_not_count(monkeypatch):
    """A pending task's upstream tasks are not visited (complete() is cheap when missing)."""
    world = {"deps": [[]] + [[(i, False)] for i in range(199)], "version": {}}
    SPECS["chain"] = world
    top = Node(key="chain", i=199)
    asked = []
    real = graph.requirement_edges
    monkeypatch.setattr("pipeflow.plan.requirement_edges",
                        lambda t: asked.append(t) or real(t))
    assert assess(top).status is Status.PENDING
    assert asked == []  # not even its own requirements
    assert not top.complete()
    pipeflow.run(top, execution_summary=False, progress=False)
    assert assess(top).status is Status.COMPLETE
    assert len(asked) == 200  # complete with check_dependencies: the whole chain, once each


def test_a_plan_grows_with_the_tasks_a_run_adds():
    SPECS["grow"] = {"deps": [[], [(0, False)], [(1, False)], []], "version": {}}
    n = [Node(key="grow", i=i) for i in range(4)]
    pipeflow.run(n[0], execution_summary=False, progress=False)
    plan = build_plan(graph.build([n[1]]))
    assert plan.to_run == {1} and plan.up_to_date == (0,)
    positions, run, complete = plan.extend([n[2], n[0], n[3]], taken={0, 1})
    assert positions == [2, 0, 3]
    assert run == {2, 3} and complete == []  # 0 and 1 are the run's already
    assert [plan.status[p] for p in positions] == [Status.PENDING, Status.COMPLETE,
                                                   Status.PENDING]
    fresh = build_plan(graph.build([n[1], n[2], n[3]]))
    assert plan.status == fresh.status and plan.own == fresh.own


def test_statuses_of_tasks_that_ran_are_fresh_for_tasks_added_after():
    """A task added mid-run that depends on one the run made is judged on the new output."""
    SPECS["fresh"] = {"deps": [[], [(0, False)]], "version": {}}
    a, b = Node(key="fresh", i=0), Node(key="fresh", i=1)
    pipeflow.run(b, execution_summary=False, progress=False)
    plan = build_plan(graph.build([a]))  # before a reruns: a complete
    SPECS["fresh"]["version"][0] = 5
    a.reset(confirm=False)
    pipeflow.run(a, execution_summary=False, progress=False)
    plan.ran(0)
    _, _, _ = plan.extend([b])
    assert plan.status[1] is Status.STALE  # b was made from a's old output
    assert "changed" in plan.reasons[1]


def test_check_dependencies_off_runs_what_is_missing_and_leaves_the_rest():
    SPECS["off"] = {"deps": [[], [(0, False)]], "version": {}}
    a, b = Node(key="off", i=0), Node(key="off", i=1)
    pipeflow.run(b, execution_summary=False, progress=False)
    a.reset(confirm=False)
    on = build_plan(graph.build([b]), check_dependencies=True)
    off = build_plan(graph.build([b]), check_dependencies=False)
    assert on.to_run == {0, 1} and on.up_to_date == ()
    assert off.status == [Status.PENDING, Status.COMPLETE]
    assert off.to_run == frozenset() and off.up_to_date == (1,)


@pytest.fixture(autouse=True)
def _clean_specs():
    yield
    for k in [k for k in SPECS if not k.startswith("w")]:
        del SPECS[k]


def test_settings_default_is_used_when_not_given():
    SPECS["dflt"] = {"deps": [[], [(0, False)]], "version": {}}
    a, b = Node(key="dflt", i=0), Node(key="dflt", i=1)
    pipeflow.run(b, execution_summary=False, progress=False)
    os.remove(a.output().path)
    pipeflow.settings.check_dependencies = False
    assert assess(b).status is Status.COMPLETE and b.complete()
    pipeflow.settings.check_dependencies = True
    assert assess(b).status is Status.STALE and not b.complete()  # a changed outside
