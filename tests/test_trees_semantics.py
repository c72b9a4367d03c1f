"""pipeflow.trees' semantics, as decided in apflow-core-semantics.md's Decision lines.

Ordering (priorities among ready tasks, dependencies first, parent_id never), optional and
required dependencies, the merge of results into inputs, errors raised before anything
runs, re-runs, task outcomes, streaming events, TaskTreeNode's status and progress, the
repository's calls, cancel_task's replies; and a property test over random trees.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_trees_examples import Recorder

from pipeflow.errors import CycleError, ParameterError, TaskNotFoundError, UnknownExecutorError
from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor, run_sync
from pipeflow.trees import executors as registry


@pytest.fixture
def rec():
    """A recorder; its executors are unregistered after the test."""
    r = Recorder()
    yield r
    r.restore()


@pytest.fixture
def tm(tmp_path):
    """A task manager on a store of the test's own."""
    return TaskManager(create_session(tmp_path / "tasks.db"))


def make(tm, name, **fields):
    """Create a task (synchronously)."""
    return tm.task_repository.create_now(name, **fields)


def tree_of(*tasks):
    """A flat tree: the first task with the others as its children."""
    root = TaskTreeNode(tasks[0])
    for t in tasks[1:]:
        root.add_child(TaskTreeNode(t))
    return root


def run(tm, tree, **kw):
    """distribute_task_tree, synchronously; returns the refreshed tree."""
    return run_sync(tm.distribute_task_tree(tree, **kw))


def get(tm, task):
    return run_sync(tm.task_repository.get_task_by_id(task.id))


def snapshot(tm):
    """Every stored task as a dict (to check that nothing changed)."""
    return [t.to_dict() for t in run_sync(tm.task_repository.query_tasks())]


# == priorities =================================================================================

def test_priorities_order_ready_tasks_one_worker(rec, tm):
    names = ["p3a", "p0a", "p2a", "p1", "p3b", "p0b", "p2b"]
    rec.add_all(names)
    tasks = [make(tm, n, priority=int(n[1])) for n in names]
    run(tm, tree_of(*tasks), workers=1)
    # plain ascending priority, 0 first; ties in tree order
    assert rec.starts() == ["p0a", "p0b", "p1", "p2a", "p2b", "p3a", "p3b"]


def test_priorities_order_tasks_that_become_ready_later(rec, tm):
    rec.add_all(["a", "b", "c", "d"])
    a = make(tm, "a", priority=2)
    b = make(tm, "b", priority=0, dependencies=[a.id])
    c = make(tm, "c", priority=1)
    d = make(tm, "d", priority=3)
    run(tm, tree_of(d, b, a, c), workers=1)
    # ready at first: c(1) a(2) d(3); once a is done b(0) beats d(3)
    assert rec.starts() == ["c", "a", "b", "d"]


def test_priorities_order_claims_with_default_workers(rec, tm):
    names = ["p3", "p2", "p1", "p0"]
    rec.add_all(names)
    tasks = [make(tm, n, priority=int(n[1])) for n in names]
    tree = run(tm, tree_of(*tasks))
    started = {n.task.name: n.task.started_at for n in tree}
    assert sorted(started, key=started.__getitem__) == ["p0", "p1", "p2", "p3"]


def test_default_priority_is_2(tm):
    assert make(tm, "x").priority == 2


# == dependencies ===============================================================================

def test_optional_dependency_is_waited_for(rec, tm):
    gate = threading.Event()
    rec.add("slow", body=lambda _i: gate.wait(5) or True)
    rec.add("waiter")
    rec.add("opener", body=lambda _i: gate.set())
    slow = make(tm, "slow", priority=3)
    waiter = make(tm, "waiter", priority=0, dependencies=[{"id": slow.id, "required": False}])
    opener = make(tm, "opener", priority=3)
    run(tm, tree_of(waiter, slow, opener))
    assert rec.before("slow", "waiter")
    assert get(tm, waiter).status == "completed"


def test_optional_dependency_skipped_does_not_block(rec, tm):
    rec.add("broken", fail="no")
    rec.add_all(["skipped", "tolerant"])
    broken = make(tm, "broken")
    skipped = make(tm, "skipped", dependencies=[broken.id])
    tolerant = make(tm, "tolerant", dependencies=[{"id": skipped.id, "required": False}],
                    inputs={"k": 1})
    run(tm, tree_of(tolerant, skipped, broken))
    assert [get(tm, t).status for t in (broken, skipped, tolerant)] == [
        "failed", "pending", "completed"]
    assert rec.inputs("tolerant") == {"k": 1}


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_failed_required_dependency_leaves_dependents_pending_transitively(rec, tm, how):
    rec.add("first", fail="boom")
    rec.add_all(["second", "third", "side"])
    first = make(tm, "first")
    second = make(tm, "second", dependencies=[first.id], inputs={"s": 2})
    third = make(tm, "third", dependencies=[{"id": second.id, "required": True}],
                 inputs={"t": 3})
    side = make(tm, "side")
    if how == "cancelled":
        run_sync(tm.cancel_task(first.id))
    untouched = [get(tm, t).to_dict() for t in (second, third)]
    tree = run(tm, tree_of(first, second, third, side))
    assert [n.task.to_dict() for n in tree.children[:2]] == untouched  # not even updated_at
    f, s, t, x = (n.task for n in tree)
    assert f.status == how
    for row, inputs in ((s, {"s": 2}), (t, {"t": 3})):
        assert (row.status, row.error, row.started_at, row.result) == (
            "pending", None, None, None)
        assert row.inputs == inputs
        assert row.progress == 0.0
    assert x.status == "completed"
    assert sorted(rec.starts()) == (["side"] if how == "cancelled" else ["first", "side"])


def test_completed_with_none_result_satisfies_dependents(rec, tm):
    rec.add("returns_none", result=lambda _i: None)
    rec.add("after")
    a = make(tm, "returns_none")
    b = make(tm, "after", dependencies=[a.id], inputs={"own": 1})
    tree = run(tm, tree_of(b, a))
    assert [n.task.status for n in tree] == ["completed", "completed"]
    assert tree.children[0].task.result is None
    assert rec.inputs("after") == {"own": 1}  # a None result merges nothing


def test_merge_rule_unwraps_result_key_and_keeps_non_dicts_by_id(rec, tm):
    rec.add("wrapped", {"result": {"x": 1, "shared": "w"}, "meta": "dropped"})
    rec.add("listy", [1, 2])
    rec.add("scalar", {"result": 5})
    rec.add("flat", {"shared": "flat", "own": "overwritten"})
    rec.add("sink")
    w, li, sc, fl = (make(tm, n) for n in ("wrapped", "listy", "scalar", "flat"))
    sink = make(tm, "sink", inputs={"own": "mine", "keep": 1},
                dependencies=[w.id, li.id, sc.id, fl.id])
    run(tm, tree_of(sink, w, li, sc, fl))
    expected = {"own": "overwritten", "keep": 1, "x": 1, "shared": "flat",
                li.id: [1, 2], sc.id: 5}
    assert rec.inputs("sink") == expected
    assert get(tm, sink).inputs == expected


def test_parent_never_orders_child_runs_though_parent_failed(rec, tm):
    rec.add("parent", fail="parent broke")
    rec.add("kid")
    parent = make(tm, "parent")
    kid = make(tm, "kid", parent_id=parent.id)
    tree = run(tm, tree_of(parent, kid))
    assert [n.task.status for n in tree] == ["failed", "completed"]


def test_parent_may_depend_on_its_own_child(rec, tm):
    rec.add("boss", lambda i: {"saw": i["kid_out"]})
    rec.add("kid2", {"kid_out": 42})
    boss = make(tm, "boss")
    kid = make(tm, "kid2", parent_id=boss.id)
    run_sync(tm.task_repository.update_task(boss.id, dependencies=[kid.id]))
    tree = run_sync(tm.task_repository.build_task_tree(boss))
    run(tm, tree)
    assert rec.before("kid2", "boss")
    assert get(tm, boss).result == {"saw": 42}


def test_dependency_outside_the_tree_is_found_in_the_store_and_run(rec, tm):
    rec.add("far", {"far": 1})
    rec.add("near", lambda i: {"near": i["far"] + 1})
    rec.add("here", lambda i: {"here": i["near"] + 1})
    far = make(tm, "far")
    near = make(tm, "near", dependencies=[far.id])
    here = make(tm, "here", dependencies=[near.id])
    tree = run(tm, TaskTreeNode(here))
    assert rec.starts() == ["far", "near", "here"]
    assert tree.task.result == {"here": 3}
    assert get(tm, far).status == "completed"


# == errors before anything runs ================================================================

def test_unknown_executor_raises_before_anything_runs(rec, tm):
    rec.add("fetch_data")
    ok = make(tm, "fetch_data")
    bad = make(tm, "fetch_dat", dependencies=[ok.id])
    before = snapshot(tm)
    with pytest.raises(UnknownExecutorError,
                       match=r"task 'fetch_dat' \(.*\) cannot run: no executor has the id "
                             r"'fetch_dat'\. Did you mean 'fetch_data'\?"):
        run(tm, tree_of(ok, bad))
    assert snapshot(tm) == before
    assert rec.starts() == []


def test_missing_dependency_id_raises_before_anything_runs(rec, tm):
    rec.add_all(["one", "two"])
    one = make(tm, "one")
    two = make(tm, "two")
    # create_task and update_task refuse unknown ids; a store changed behind their back
    tm.db.update(two.id, {"dependencies": [{"id": "ghost", "required": True}]})
    before = snapshot(tm)
    with pytest.raises(TaskNotFoundError,
                       match=f"task 'two' \\({two.id}\\) depends on 'ghost', which is not in "
                             "the task store"):
        run(tm, tree_of(one, two))
    assert snapshot(tm) == before
    assert rec.starts() == []


def test_cycle_raises_with_its_path_before_anything_runs(rec, tm):
    rec.add_all(["a", "b", "c", "free"])
    a = make(tm, "a")
    b = make(tm, "b", dependencies=[a.id])
    c = make(tm, "c", dependencies=[b.id])
    free = make(tm, "free")
    with pytest.raises(CycleError, match="would depend on itself"):
        run_sync(tm.task_repository.update_task(a.id, dependencies=[c.id]))
    tm.db.update(a.id, {"dependencies": [{"id": c.id, "required": True}]})  # behind its back
    before = snapshot(tm)
    with pytest.raises(CycleError) as err:
        run(tm, tree_of(free, a, b, c))
    text = str(err.value)
    assert "cycle" in text and "Nothing ran" in text
    cycle = err.value.cycle
    assert cycle[0] == cycle[-1] and set(cycle) == {a.id, b.id, c.id} and len(cycle) == 4
    assert " -> ".join(f"{ {a.id: 'a', b.id: 'b', c.id: 'c'}[i]}({i})" for i in cycle) in text
    assert snapshot(tm) == before
    assert rec.starts() == []


def test_refused_tree_does_not_reset_failed_tasks(rec, tm):
    rec.add("flaky", fail="once")
    flaky = make(tm, "flaky")
    run(tm, TaskTreeNode(flaky))
    assert get(tm, flaky).status == "failed"
    archive = make(tm, "flaky", origin_type="archive")
    before = snapshot(tm)
    with pytest.raises(ParameterError, match="is an archive that did not complete"):
        run(tm, tree_of(flaky, archive))
    assert snapshot(tm) == before  # the failed task was not reset for a re-run


def test_inputs_not_json_are_refused_at_create_task(tm):
    with pytest.raises(ParameterError,
                       match=r"inputs of task 'x' must be JSON .*: inputs\['when'\] is a "
                             r"datetime.datetime"):
        make(tm, "x", inputs={"when": dt.datetime(2024, 1, 1)})
    with pytest.raises(ParameterError, match=r"inputs\[1\] \(int, not str\)|has the key 1"):
        make(tm, "x", inputs={1: "a"})
    assert snapshot(tm) == []
    t = make(tm, "x", inputs={"ok": [1, 2.5, None, True]})
    with pytest.raises(ParameterError, match=r"inputs\['s'\] is a builtins.set"):
        run_sync(tm.task_repository.update_task(t.id, inputs={"s": {1}}))
    assert get(tm, t).inputs == {"ok": [1, 2.5, None, True]}


# == re-runs and outcomes =======================================================================

def test_rerun_after_failure_runs_failed_and_pending_only(rec, tm):
    state = {"broken": True}

    def flaky(inputs):
        if state["broken"]:
            raise RuntimeError("not yet")
        return {"flaky": "fixed"}

    rec.add("base", {"base": 1})
    rec.add("flaky", result=flaky)
    rec.add("after", lambda i: {"saw": (i["base"], i["flaky"])})
    rec.add("other")
    base = make(tm, "base")
    fl = make(tm, "flaky", dependencies=[base.id])
    after = make(tm, "after", dependencies=[fl.id, base.id])
    other = make(tm, "other")
    tree = tree_of(base, fl, after, other)
    run(tm, tree)
    assert [n.task.status for n in tree] == ["completed", "failed", "pending", "completed"]
    assert tree.children[0].task.error == "not yet"
    first_done = get(tm, base).completed_at
    state["broken"] = False
    run(tm, tree)
    assert [n.task.status for n in tree] == ["completed"] * 4
    assert rec.starts() == ["base", "other", "flaky", "flaky", "after"] or sorted(
        rec.starts()) == ["after", "base", "flaky", "flaky", "other"]
    assert rec.starts().count("base") == 1 and rec.starts().count("other") == 1
    assert get(tm, base).completed_at == first_done
    assert get(tm, after).result == {"saw": [1, "fixed"]}
    assert tree.children[0].task.error is None


def test_rerun_keeps_a_task_cancelled_before_it_started(rec, tm):
    rec.add_all(["never", "waits"])
    never = make(tm, "never")
    waits = make(tm, "waits", dependencies=[never.id])
    run_sync(tm.cancel_task(never.id))
    tree = tree_of(never, waits)
    run(tm, tree)
    run(tm, tree)
    assert [n.task.status for n in tree] == ["cancelled", "pending"]
    run_sync(tm.task_repository.update_task(never.id, status="pending"))
    run(tm, tree)
    assert [n.task.status for n in tree] == ["completed", "completed"]
    assert rec.starts() == ["never", "waits"]


def test_executor_raising_fails_with_error_text(rec, tm):
    rec.add("raiser", fail="disk full")
    t = make(tm, "raiser")
    row = run(tm, TaskTreeNode(t)).task
    assert (row.status, row.error, row.result, row.progress) == (
        "failed", "disk full", None, 0.0)
    assert row.completed_at is not None


def test_dict_with_error_fails_and_keeps_the_result(rec, tm):
    rec.add("soft_fail", {"error": "quota exceeded", "partial": [1, 2]})
    rec.add("needs_it")
    t = make(tm, "soft_fail")
    d = make(tm, "needs_it", dependencies=[t.id])
    tree = run(tm, tree_of(t, d))
    row = tree.task
    assert (row.status, row.error) == ("failed", "quota exceeded")
    assert row.result == {"error": "quota exceeded", "partial": [1, 2]}
    assert row.progress == 0.0
    assert tree.children[0].task.status == "pending"


# == streaming ==================================================================================

def stream(tm, tree):
    async def main():
        queue: asyncio.Queue = asyncio.Queue()
        tm.streaming_callbacks.set_streaming_context(queue)
        out = await tm.distribute_task_tree_with_streaming(tree, use_callback=True)
        assert out is None
        events = []
        while not queue.empty():
            events.append(queue.get_nowait())
        return events

    return asyncio.run(main())


def test_streaming_events_and_fields(rec, tm):
    rec.add("s1", {"v": 1})
    rec.add("s2", {"v": 2})
    a = make(tm, "s1")
    b = make(tm, "s2", dependencies=[a.id])
    tree = tree_of(a, b)
    events = stream(tm, tree)
    assert [(e["type"], e["task_id"]) for e in events] == [
        ("progress", a.id), ("task_start", a.id), ("task_completed", a.id),
        ("task_start", b.id), ("task_completed", b.id), ("final", a.id)]
    for e in events:
        stamp = dt.datetime.fromisoformat(e["timestamp"])
        assert stamp.utcoffset() == dt.timedelta(0)
    assert [dt.datetime.fromisoformat(e["timestamp"]) for e in events] == sorted(
        dt.datetime.fromisoformat(e["timestamp"]) for e in events)
    first = events[0]
    assert (first["status"], first["progress"], first["message"]) == (
        "in_progress", 0.0, "Task tree execution started")
    assert {e["status"] for e in events if e["type"] == "task_start"} == {"in_progress"}
    done = [e for e in events if e["type"] == "task_completed"]
    assert [(e["status"], e["result"], e["final"]) for e in done] == [
        ("completed", {"v": 1}, True), ("completed", {"v": 2}, True)]
    last = events[-1]
    assert (last["status"], last["result"], last["final"]) == (
        "completed", {"progress": 1.0}, True)


def test_streaming_a_tree_left_pending_ends_with_progress(rec, tm):
    rec.add("bad", fail="x")
    rec.add("blocked")
    rec.add("fine")
    root = make(tm, "fine")
    bad = make(tm, "bad")
    blocked = make(tm, "blocked", dependencies=[bad.id])
    # the root's children: one failed -> the tree failed
    events = stream(tm, tree_of(root, bad, blocked))
    assert events[-1]["type"] == "final" and events[-1]["status"] == "failed"
    assert events[-1]["error"] == "Task tree execution failed"
    failed = [e for e in events if e["type"] == "task_failed"]
    assert [(e["task_id"], e["status"], e["error"], e["final"]) for e in failed] == [
        (bad.id, "failed", "x", True)]
    assert blocked.id not in {e["task_id"] for e in events}
    # a tree whose only child stays pending (its dependency cancelled) ends with progress
    gate = make(tm, "bad")
    run_sync(tm.cancel_task(gate.id))
    waiting = make(tm, "blocked", dependencies=[gate.id])
    events = stream(tm, tree_of(make(tm, "fine"), waiting, ))
    assert events[-1]["type"] == "progress" and events[-1]["status"] == "pending"


def test_streaming_without_a_queue_drops_events(rec, tm):
    rec.add("alone")
    t = make(tm, "alone")
    asyncio.run(tm.distribute_task_tree_with_streaming(TaskTreeNode(t)))
    assert get(tm, t).status == "completed"


# == TaskTreeNode ===============================================================================

def node(tm, status, progress=0.0):
    """A node whose task snapshot has ``status`` and ``progress``.

    Set on the snapshot: a stored task ``in_progress`` with no live run claiming it reads
    back as failed (interrupted), so it cannot be made through create_task.
    """
    n = TaskTreeNode(make(tm, "n"))
    n.task.status, n.task.progress = status, progress
    return n


@pytest.mark.parametrize(("states", "expected"), [
    (["completed", "completed"], "completed"),
    (["completed", "failed", "in_progress"], "failed"),
    (["completed", "in_progress", "pending"], "in_progress"),
    (["completed", "pending"], "pending"),
    (["completed", "cancelled"], "pending"),
])
def test_calculate_status_reports_the_children(tm, states, expected):
    root = node(tm, "failed")  # its own status is ignored when it has children
    for s in states:
        root.add_child(node(tm, s))
    assert root.calculate_status() == expected


def test_calculate_status_and_progress_recursive(tm):
    leaf = node(tm, "in_progress", 0.25)
    assert leaf.calculate_status() == "in_progress" and leaf.calculate_progress() == 0.25
    root = node(tm, "pending", 0.9)
    mid = root.add_child(node(tm, "completed", 1.0))
    mid.add_child(node(tm, "completed", 1.0))
    mid.add_child(node(tm, "pending", 0.0))
    root.add_child(node(tm, "completed", 1.0))
    assert mid.calculate_progress() == 0.5
    assert root.calculate_progress() == 0.75
    assert mid.calculate_status() == "pending" and root.calculate_status() == "pending"
    assert [n.task.id for n in root] == [n.task.id for n in (root, mid, *mid.children,
                                                                root.children[1])]
    assert len(root.to_list()) == 5 and root.has_children()
    assert root.to_mapping()["children"][0]["children"][1]["status"] == "pending"


# == the repository =============================================================================

def test_create_task_with_id_get_and_update(tm):
    repo = tm.task_repository
    t = run_sync(repo.create_task(name="x", id="my-id", user_id="u1", inputs={"a": 1}))
    assert (t.id, t.status, t.progress, t.dependencies, t.result, t.error) == (
        "my-id", "pending", 0.0, [], None, None)
    with pytest.raises(ParameterError, match="a task with id 'my-id' exists already"):
        run_sync(repo.create_task(name="x", id="my-id"))
    assert run_sync(repo.get_task_by_id("nope")) is None
    u = run_sync(repo.update_task("my-id", priority=0, inputs={"a": 2}))
    assert (u.priority, u.inputs, u.user_id) == (0, {"a": 2}, "u1")
    assert get(tm, u).priority == 0
    with pytest.raises(TaskNotFoundError, match="no task with id 'nope'") as err:
        run_sync(repo.update_task("nope", priority=1))
    assert isinstance(err.value, ValueError)  # apflow raises ValueError
    with pytest.raises(ParameterError, match="create_task\\(\\) got an unknown field 'prio'"):
        run_sync(repo.create_task(name="x", prio=1))


# == cancel_task's replies ======================================================================

def test_cancel_task_replies(rec, tm):
    rec.add("ok")
    rec.add("ko", fail="broken")
    done = make(tm, "ok")
    failed = make(tm, "ko")
    run(tm, tree_of(done, failed))
    pending = make(tm, "ok")
    unknown = run_sync(tm.cancel_task("nope"))
    assert unknown == {"status": "failed", "message": "Task nope not found",
                       "error": "Task not found"}
    for t, status in ((done, "completed"), (failed, "failed")):
        before = get(tm, t).to_dict()
        assert run_sync(tm.cancel_task(t.id, "stop")) == {
            "status": "failed", "message": f"Task {t.id} is already {status}, cannot cancel",
            "current_status": status}
        assert get(tm, t).to_dict() == before
    assert run_sync(tm.cancel_task(pending.id)) == {"status": "cancelled",
                                                   "message": "Cancelled by user"}
    row = get(tm, pending)
    assert (row.status, row.error) == ("cancelled", "Cancelled by user")
    assert run_sync(tm.cancel_task(pending.id)) == {
        "status": "failed", "message": f"Task {pending.id} is already cancelled, cannot cancel",
        "current_status": "cancelled"}


# == a property: random trees ===================================================================

@st.composite
def dags(draw):
    """Random trees: tasks with priorities, required/optional edges to earlier tasks, a
    parent (organisation only), some failing and some cancelled before the run; the
    tree's order and the workers."""
    n = draw(st.integers(1, 30))
    tasks = []
    for i in range(n):
        deps = draw(st.lists(st.tuples(st.integers(0, max(0, i - 1)), st.booleans()),
                             max_size=min(i, 4), unique_by=lambda d: d[0])) if i else []
        fate = draw(st.sampled_from(["ok"] * 6 + ["fails"] * 2 + ["cancelled"]))
        parent = draw(st.none() | st.integers(0, i - 1)) if i else None  # never an order
        tasks.append({"priority": draw(st.integers(0, 3)), "fate": fate, "deps": deps,
                      "parent": parent})
    order = draw(st.permutations(range(n)))
    workers = draw(st.sampled_from([1, 2, 8]))
    return tasks, order, workers


@settings(max_examples=int(os.environ.get("TREES_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=dags())
def test_random_trees_respect_dependencies(spec, tmp_path):
    tasks, order, workers = spec
    log: list[tuple[str, int]] = []
    lock = threading.Lock()

    def body(inputs):
        me = inputs["me"]
        with lock:
            log.append(("start", me))
        try:
            if inputs["fate"] == "fails":
                raise RuntimeError(f"task {me} fails")
            return [me]  # not a dict: merged under inputs[<its id>]
        finally:
            with lock:
                log.append(("end", me))

    executor("prop_node")(body)
    try:
        tm = TaskManager(create_session(tmp_path / f"{uuid.uuid4().hex}.db"))
        made = []
        for i, t in enumerate(tasks):
            parent = None if t["parent"] is None else made[t["parent"]].id
            made.append(make(tm, "prop_node", priority=t["priority"], parent_id=parent,
                             inputs={"me": i, "fate": t["fate"]},
                             dependencies=[{"id": made[d].id, "required": r}
                                           for d, r in t["deps"]]))
            if t["fate"] == "cancelled":
                assert run_sync(tm.cancel_task(made[-1].id))["status"] == "cancelled"
        nodes = [made[i] for i in order]
        run(tm, tree_of(*nodes), workers=workers)
    finally:
        registry.unregister("prop_node")

    rows = [get(tm, t) for t in made]
    pos = {e: k for k, e in enumerate(log)}
    assert len(pos) == len(log)  # no task started twice
    # what should have happened, in creation order (dependencies come first)
    blocked: list[bool] = []  # a required dependency failed, was cancelled, or is blocked
    for i, t in enumerate(tasks):
        bad = any(r and (blocked[d] or tasks[d]["fate"] != "ok") for d, r in t["deps"])
        blocked.append(bad)
        row = rows[i]
        if t["fate"] == "cancelled" or bad:
            assert ("start", i) not in pos, f"task {i} ran though it should not"
            assert row.started_at is None and row.result is None
            assert row.inputs == {"me": i, "fate": t["fate"]}
            assert (row.status, row.error) == (
                ("cancelled", "Cancelled by user") if t["fate"] == "cancelled"
                else ("pending", None))
            continue
        assert row.status == ("failed" if t["fate"] == "fails" else "completed"), (i, row.error)
        for d, _r in t["deps"]:
            dep = rows[d]
            if blocked[d] or tasks[d]["fate"] == "cancelled":
                assert dep.status in ("pending", "cancelled")
                continue  # an optional dependency that never ran
            assert pos[("end", d)] < pos[("start", i)], f"{i} started before {d} ended"
            assert dep.completed_at <= row.started_at
        expected = {"me": i, "fate": t["fate"]}
        for d, _r in t["deps"]:
            if rows[d].status == "completed":
                expected[made[d].id] = [d]
        assert row.inputs == expected
    if workers == 1:
        # one at a time: each task started had the lowest priority number of the tasks
        # surely ready then (not started, not blocked, every dependency finished or
        # skipped before). When a task skipped because of a cancelled one is not known.
        fin: dict[int, int | None] = {}
        for i, t in enumerate(tasks):
            if t["fate"] == "cancelled":
                fin[i] = None
            elif blocked[i]:
                causes = [fin[d] for d, r in t["deps"]
                          if r and (blocked[d] or tasks[d]["fate"] != "ok")]
                fin[i] = None if None in causes else min(causes)  # type: ignore[type-var]
            else:
                fin[i] = pos[("end", i)]
        for (event, j), p in pos.items():
            if event != "start":
                continue
            ready = [k for k, t in enumerate(tasks) if not blocked[k]
                     and t["fate"] != "cancelled" and pos[("start", k)] >= p
                     and all(fin[d] is not None and fin[d] < p for d, _r in t["deps"])]
            assert all(tasks[j]["priority"] <= tasks[k]["priority"] for k in ready), (j, ready)


# == cancelling a running task, streamed; concurrent runs; async executors =====================

@pytest.mark.parametrize("cancelable", [False, True], ids=["not-cancelable", "cancelable"])
def test_cancel_running_task_streams_task_failed_and_blocks_dependents(rec, tm, cancelable):
    started, go = threading.Event(), threading.Event()

    def body(_inputs):
        started.set()
        go.wait(10)
        return {"late": True}

    executor("long_job", cancelable=cancelable)(body)
    rec.add("after_long")
    try:
        job = make(tm, "long_job")
        after = make(tm, "after_long", dependencies=[job.id])
        tree = tree_of(job, after)

        async def main():
            queue: asyncio.Queue = asyncio.Queue()
            tm.streaming_callbacks.set_streaming_context(queue)
            running = asyncio.ensure_future(tm.distribute_task_tree_with_streaming(tree))
            assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
            reply = await tm.cancel_task(job.id, "User requested cancellation")
            go.set()
            await running
            events = []
            while not queue.empty():
                events.append(queue.get_nowait())
            return reply, events

        reply, events = asyncio.run(main())
    finally:
        registry.unregister("long_job")
        go.set()
    assert reply == {"status": "cancelled", "message": "User requested cancellation"}
    row = get(tm, job)
    assert (row.status, row.error, row.result) == (
        "cancelled", "User requested cancellation", None)  # a late result is discarded
    assert get(tm, after).status == "pending"
    assert rec.starts() == []
    assert [(e["type"], e["task_id"]) for e in events] == [
        ("progress", job.id), ("task_start", job.id), ("task_failed", job.id),
        ("progress", job.id)]
    assert events[2]["final"] is True and events[2]["error"] == "User requested cancellation"


def test_rerun_runs_a_task_stopped_while_it_ran(rec, tm):
    started, go = threading.Event(), threading.Event()
    calls = []

    def body(_inputs):
        calls.append(1)
        if len(calls) == 1:
            started.set()
            go.wait(10)
        return {"run": len(calls)}

    executor("stoppable", cancelable=True)(body)
    try:
        job = make(tm, "stoppable")

        async def main():
            running = asyncio.ensure_future(tm.distribute_task_tree(TaskTreeNode(job)))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
            await tm.cancel_task(job.id)
            await running
            go.set()
            assert get(tm, job).status == "cancelled"
            return await tm.distribute_task_tree(TaskTreeNode(job))

        tree = asyncio.run(main())
    finally:
        registry.unregister("stoppable")
        go.set()
    assert (tree.task.status, tree.task.result) == ("completed", {"run": 2})


def test_two_concurrent_runs_share_a_task_and_run_it_once(rec, tm):
    gate = threading.Event()
    rec.add("shared", {"shared": 1}, body=lambda _i: gate.wait(0.3))
    rec.add("left", lambda i: {"left": i["shared"]})
    rec.add("right", lambda i: {"right": i["shared"]})
    shared = make(tm, "shared")
    left = make(tm, "left", dependencies=[shared.id])
    right = make(tm, "right", dependencies=[shared.id])

    async def main():
        return await asyncio.gather(tm.distribute_task_tree(tree_of(left, shared)),
                                    tm.distribute_task_tree(tree_of(right, shared)))

    asyncio.run(main())
    assert sorted(rec.starts()) == ["left", "right", "shared"]
    assert get(tm, left).result == {"left": 1} and get(tm, right).result == {"right": 1}


def test_async_executor_runs_on_the_callers_loop(rec, tm):
    loops = []

    async def fetch(inputs):
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return {"n": inputs["n"] + 1}

    executor("async_fetch")(fetch)
    rec.add("after_async", lambda i: {"got": i["n"]})
    try:
        a = make(tm, "async_fetch", inputs={"n": 1})
        b = make(tm, "after_async", dependencies=[a.id])

        async def main():
            out = await tm.distribute_task_tree(tree_of(a, b))
            return out, asyncio.get_running_loop()

        tree, loop = asyncio.run(main())
    finally:
        registry.unregister("async_fetch")
    assert loops == [loop]
    assert [n.task.status for n in tree] == ["completed", "completed"]
    assert tree.children[0].task.result == {"got": 2}


def test_distribute_returns_the_same_tree(rec, tm):
    rec.add("x1")
    tree = TaskTreeNode(make(tm, "x1"))
    assert run(tm, tree) is tree


def test_streaming_to_a_bounded_queue_loses_no_event(rec, tm):
    # apflow awaits queue.put(event): a full queue holds the events back, none is lost
    names = [f"b{i}" for i in range(6)]
    rec.add_all(names)
    tasks = [make(tm, n) for n in names]

    async def main():
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        tm.streaming_callbacks.set_streaming_context(queue)
        got = []

        async def consume():  # a slow reader: the queue is full most of the time
            while True:
                await asyncio.sleep(0.01)
                event = await queue.get()
                got.append(event)
                if event["type"] == "final":
                    return

        reader = asyncio.ensure_future(consume())
        await tm.distribute_task_tree_with_streaming(tree_of(*tasks))
        await asyncio.wait_for(reader, 10)
        return got

    events = asyncio.run(main())
    assert [e["type"] for e in events].count("task_completed") == 6
    assert len(events) == 1 + 6 * 2 + 1


def test_streaming_callbacks_are_awaited_in_order_before_the_call_returns(rec, tm):
    rec.add_all(["c1", "c2"])
    a = make(tm, "c1")
    b = make(tm, "c2", dependencies=[a.id])
    seen_sync, seen_async = [], []

    async def slow_callback(event):
        await asyncio.sleep(0.001)
        seen_async.append(event["type"])

    async def main():
        tm.streaming_callbacks.add_callback(lambda e: seen_sync.append(e["type"]))
        tm.streaming_callbacks.add_callback(slow_callback)
        await tm.distribute_task_tree_with_streaming(tree_of(a, b))
        return list(seen_async)  # as it was when the call returned

    expected = ["progress", "task_start", "task_completed", "task_start", "task_completed",
                "final"]
    assert asyncio.run(main()) == expected
    assert seen_sync == expected


@pytest.mark.parametrize("kind", ["cancelable", "async"])
def test_task_cancelled_while_pending_then_set_pending_runs(tm, kind):
    # regression: the cancel request stayed in the process's cancel list, so the task was
    # stopped as soon as it started again and was left pending, silently
    if kind == "async":
        async def body(_inputs):
            await asyncio.sleep(0.3)
            return {"ran": kind}
    else:
        def body(_inputs):
            threading.Event().wait(0.3)
            return {"ran": kind}
    executor("uncancelled", cancelable=True)(body)
    try:
        t = make(tm, "uncancelled")
        assert run_sync(tm.cancel_task(t.id))["status"] == "cancelled"
        run_sync(tm.task_repository.update_task(t.id, status="pending"))
        row = run(tm, TaskTreeNode(t)).task
    finally:
        registry.unregister("uncancelled")
    assert (row.status, row.error, row.result) == ("completed", None, {"ran": kind})


def test_status_in_progress_set_by_hand_reads_back_failed_with_the_reason(tm):
    # regression: the reason given was "the process running it (pid ?) ended"
    t = make(tm, "x", status="in_progress")
    row = get(tm, t)
    assert row.status == "failed"
    assert row.error.startswith("marked in_progress without a run running it (status set "
                                "by create_task or update_task")
    u = make(tm, "x")
    run_sync(tm.task_repository.update_task(u.id, status="in_progress"))
    assert get(tm, u).status == "failed"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_outcomes_of_async_and_sync_executors(tm, kind):
    def make_exec(behaviour):
        if kind == "async":
            async def f(_inputs):
                await asyncio.sleep(0)
                return behaviour()
        else:
            def f(_inputs):
                return behaviour()
        return f

    def boom():
        raise ValueError("bad value 3")

    executor("o_raise")(make_exec(boom))
    executor("o_error")(make_exec(lambda: {"error": "soft", "n": 1}))
    executor("o_ok")(make_exec(lambda: 7))
    try:
        raised, errored, ok = make(tm, "o_raise"), make(tm, "o_error"), make(tm, "o_ok")
        tree = run(tm, tree_of(ok, raised, errored))
    finally:
        for name in ("o_raise", "o_error", "o_ok"):
            registry.unregister(name)
    ok_row, raised_row, errored_row = (n.task for n in tree)
    assert (ok_row.status, ok_row.result, ok_row.progress) == ("completed", 7, 1.0)
    assert (raised_row.status, raised_row.error, raised_row.result) == (
        "failed", "bad value 3", None)
    assert (errored_row.status, errored_row.error, errored_row.result) == (
        "failed", "soft", {"error": "soft", "n": 1})
