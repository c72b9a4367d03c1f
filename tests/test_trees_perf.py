"""The task-tree run path's speed-ups keep its behaviour (see benchmarks/bench_trees.py).

* the store pools its SQLite connections (not one per thread: each attempt ran on a new
  thread and opened one);
* a claim of this process is known alive without asking the OS;
* with one worker the tasks run on the run's own thread (no thread per attempt), and a
  cancel or a timeout still stops a running task;
* ``TreeTask.get_params`` is computed once.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import luigi
import psutil
import pytest

from pipeflow.errors import CycleError, TaskNotFoundError
from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor
from pipeflow.trees import executors as registry
from pipeflow.trees import store as store_mod
from pipeflow.trees.running import TreeTask
from pipeflow.trees.store import Owner

IDS = ("perf_step", "perf_thread", "perf_slow", "perf_sleepy")
SEEN_THREADS: list[str] = []


@pytest.fixture(autouse=True)
def _executors():
    @executor("perf_step")
    def step(inputs):
        return {"value": inputs.get("value", -1) + 1}

    @executor("perf_thread")
    def where(inputs):
        SEEN_THREADS.append(threading.current_thread().name)
        return {"value": inputs.get("value", -1) + 1}

    @executor("perf_slow", cancelable=True)
    def slow(inputs):
        for _ in range(400):
            time.sleep(0.01)
        return {"done": True}

    @executor("perf_sleepy", timeout=0.3)
    def sleepy(inputs):
        for _ in range(400):
            time.sleep(0.01)
        return {"done": True}

    yield
    for i in IDS:
        registry.unregister(i)


def _chain(tm: TaskManager, name: str, n: int) -> TaskTreeNode:
    repo = tm.task_repository
    root = repo.create_now(name)
    prev = None
    kids = []
    for _ in range(n - 1):
        t = repo.create_now(name, parent_id=root.id,
                            dependencies=[{"id": prev, "required": True}] if prev else [])
        prev = t.id
        kids.append(t)
    root = repo.update_now(root.id, dependencies=[{"id": prev, "required": True}])
    node = TaskTreeNode(root)
    for t in kids:
        node.add_child(TaskTreeNode(t))
    return node


def test_connections_are_pooled_not_one_per_thread(tmp_path):
    db = create_session(tmp_path / "t.db")
    opened = []
    real = db._connect

    def counting():
        opened.append(1)
        return real()

    db._connect = counting  # type: ignore[method-assign]
    tm = TaskManager(db)
    t = tm.task_repository.create_now("perf_step")

    def read() -> None:
        for _ in range(5):
            assert db.get(t.id).status == "pending"

    threads = [threading.Thread(target=read) for _ in range(20)]
    for th in threads:
        th.start()
        th.join()  # one after another: one connection serves them all
    assert len(opened) <= 1


def test_a_connection_is_not_shared_by_two_threads_at_once(tmp_path):
    db = create_session(tmp_path / "t.db")
    with db._db() as a, db._db() as b:
        assert a is not b
    with db._db() as c:
        assert c in (a, b)


def test_a_forked_process_opens_its_own_connection(tmp_path):
    db = create_session(tmp_path / "t.db")
    t = TaskManager(db).task_repository.create_now("perf_step")
    with db._db() as parent_conn:
        pass
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reads through a connection of its own
        try:
            with db._db() as conn:
                ok = conn is not parent_conn and db.get(t.id) is not None
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    with db._db() as again:  # the parent still uses its own
        assert again is parent_conn


def test_this_process_claim_is_alive_without_asking_the_os(monkeypatch):
    mine = Owner.make("run1")

    def boom(*a, **k):
        raise AssertionError("psutil asked about this process")

    monkeypatch.setattr(store_mod.psutil, "Process", boom)
    assert Owner.alive(mine) is True


def test_a_dead_process_claim_is_still_recognised():
    p = psutil.Popen(["python3", "-c", "pass"])
    p.wait()
    started = f"{psutil.Process().create_time():.3f}"
    dead = f"{store_mod._HOST}|{p.pid}|{started}|tok"
    assert Owner.alive(dead) is False
    assert Owner.alive(f"{store_mod._HOST}|{os.getpid()}|1.000|tok") is False  # pid reused


def test_tree_task_params_are_luigis():
    assert TreeTask.get_params() == luigi.Task.get_params.__func__(TreeTask)
    assert TreeTask.get_params() is not TreeTask.get_params()  # a copy each call


@pytest.mark.parametrize("workers", [1, 3])
def test_chain_runs_in_order_with_any_workers(tmp_path, workers):
    tm = TaskManager(create_session(tmp_path / "t.db"), workers=workers)
    SEEN_THREADS.clear()
    root = _chain(tm, "perf_thread", 30)
    asyncio.run(tm.distribute_task_tree(root, progress=False))
    assert root.task.status == "completed"
    assert root.task.result == {"value": 29}
    assert all(n.task.status == "completed" for n in root)
    assert len(SEEN_THREADS) == 30
    if workers == 1:  # one by one on the run's own thread, not a thread per attempt
        assert len(set(SEEN_THREADS)) == 1
        assert not SEEN_THREADS[0].startswith("pipeflow-")


def test_one_worker_cancel_stops_a_running_task(tmp_path):
    tm = TaskManager(create_session(tmp_path / "t.db"), workers=1)
    t = tm.task_repository.create_now("perf_slow")

    async def go() -> float:
        run = asyncio.ensure_future(tm.distribute_task_tree(TaskTreeNode(t), progress=False))
        while (await tm.task_repository.get_task_by_id(t.id)).status != "in_progress":
            await asyncio.sleep(0.02)
        t0 = time.monotonic()
        out = await tm.cancel_task(t.id, "stop it")
        assert out["status"] == "cancelled"
        await run
        return time.monotonic() - t0

    took = asyncio.run(go())
    row = tm.db.get(t.id)
    assert (row.status, row.error) == ("cancelled", "stop it")
    assert took < 2.0


def test_one_worker_timeout_fails_the_task(tmp_path):
    tm = TaskManager(create_session(tmp_path / "t.db"), workers=1)
    t = tm.task_repository.create_now("perf_sleepy")
    asyncio.run(tm.distribute_task_tree(TaskTreeNode(t), progress=False))
    row = tm.db.get(t.id)
    assert row.status == "failed"
    assert "timeout of 0.3s" in row.error


def test_a_cycle_through_a_long_chain_is_found_with_its_path(tmp_path):
    tm = TaskManager(create_session(tmp_path / "t.db"))
    repo = tm.task_repository
    first = repo.create_now("perf_step")
    ids = [first.id]
    for _ in range(50):
        ids.append(repo.create_now("perf_step", dependencies=[{"id": ids[-1]}]).id)
    with pytest.raises(CycleError, match="would depend on itself") as info:
        repo.update_now(first.id, dependencies=[{"id": ids[-1]}])
    assert info.value.cycle == [first.id, *reversed(ids[1:]), first.id]
    assert repo.update_now(ids[10], dependencies=[{"id": ids[0]}]).dependencies == [
        {"id": ids[0], "required": True}]


def test_a_missing_dependency_is_named(tmp_path):
    tm = TaskManager(create_session(tmp_path / "t.db"))
    real = tm.task_repository.create_now("perf_step")
    with pytest.raises(TaskNotFoundError, match="no task has the id 'nope'"):
        tm.task_repository.create_now("perf_step", dependencies=[{"id": real.id},
                                                                 {"id": "nope"}])


def test_a_runs_end_gives_back_only_its_own_claims_in_one_go(tmp_path):
    db = create_session(tmp_path / "t.db")
    repo = TaskManager(db).task_repository
    a, b, c, done = (repo.create_now("perf_step") for _ in range(4))
    mine, other = Owner.make("run-a"), Owner.make("run-b")
    assert [db.claim(t.id, mine) for t in (a, b, done)] == ["claimed"] * 3
    assert db.claim(c.id, other) == "claimed"
    assert db.complete(done.id, mine, {"x": 1})
    assert db.release_all(mine) == 2
    assert [db.get(t.id).status for t in (a, b, c, done)] == [
        "pending", "pending", "in_progress", "completed"]
    assert db._read("SELECT owner FROM tasks WHERE id = ?", (a.id,)) == [(None,)]
