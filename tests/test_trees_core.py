"""The task store's claims and results, and the engine seams task trees rely on."""

from __future__ import annotations

import asyncio
import multiprocessing
import os

import luigi
import pandas as pd
import pytest

import pipeflow
from pipeflow.engines import LocalEngine
from pipeflow.errors import TaskCancelledError, TaskStoreError
from pipeflow.events import EventKind
from pipeflow.graph import build
from pipeflow.plan import build_plan
from pipeflow.trees import TaskManager, TaskModel, TaskTreeNode, create_session, executor
from pipeflow.trees import model as m
from pipeflow.trees import store as stores
from pipeflow.trees.executors import unregister
from pipeflow.trees.store import Owner, TaskStore


@pytest.fixture
def db(tmp_path):
    return TaskStore(tmp_path / "tasks.db")


def _new(db: TaskStore, **fields):
    tm = TaskManager(db)
    return tm.task_repository.create_now(fields.pop("name", "core_noop"), **fields)


# -- claims ---------------------------------------------------------------------------------------

def test_a_claim_is_taken_once_and_refused_to_others_while_the_owner_lives(db):
    t = _new(db)
    me, other = Owner.make("run-a"), Owner.make("run-b")
    assert db.claim(t.id, me) == "claimed"
    assert db.get(t.id).status == "in_progress"
    assert db.claim(t.id, other) == "busy"  # same live process, another run
    assert db.claim(t.id, me) == "claimed"  # the owner may claim again (a retry)
    assert db.complete(t.id, me, {"x": 1})
    assert db.claim(t.id, other) == "completed"
    assert db.get(t.id).result == {"x": 1}


def test_a_dead_processes_claim_is_settled_failed_and_taken_over(db):
    t = _new(db)
    p = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    p.start()
    p.join()
    dead = f"{stores._HOST}|{p.pid}|1.000|tok"
    assert db.claim(t.id, dead) == "claimed"
    assert not Owner.alive(dead)
    row = db.get(t.id)  # readers never see it "running"
    assert row.status == "failed"
    assert f"pid {p.pid}" in row.error and "interrupted" in row.error
    u = _new(db)
    db.claim(u.id, dead)
    assert db.claim(u.id, Owner.make("run-c")) == "claimed"  # a new run takes it over


def test_a_completion_by_a_lost_claim_is_refused(db):
    t = _new(db)
    me = Owner.make("run-a")
    db.claim(t.id, me)
    db.update(t.id, {"status": "cancelled", "error": "stop"})
    assert not db.complete(t.id, me, {"late": True})
    row = db.get(t.id)
    assert (row.status, row.result, row.error) == ("cancelled", None, "stop")


# -- results --------------------------------------------------------------------------------------

def test_a_dataframe_result_is_kept_in_a_file_and_read_back_by_another_store_object(db):
    t = _new(db)
    me = Owner.make("run")
    db.claim(t.id, me)
    frame = pd.DataFrame({"a": [1, 2, 3]})
    assert db.complete(t.id, me, frame)
    files = list(db.results_dir.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pkl"
    again = TaskStore(db.path)
    pd.testing.assert_frame_equal(again.get(t.id).result, frame)


def test_a_large_json_result_goes_to_a_file_too(db, monkeypatch):
    monkeypatch.setattr(stores, "INLINE_LIMIT", 100)
    t = _new(db)
    me = Owner.make("run")
    db.claim(t.id, me)
    big = {"values": list(range(100))}
    db.complete(t.id, me, big)
    assert db._read("SELECT result, result_file FROM tasks WHERE id = ?", (t.id,))[0][0] is None
    assert db.get(t.id).result == big


def test_a_task_model_refuses_unknown_fields():
    t = TaskModel({"id": "x", "name": "n", "status": "pending"})
    with pytest.raises(AttributeError, match="no field 'stauts'. Did you mean 'status'"):
        t.stauts = "completed"


def test_a_store_path_that_is_a_folder_or_url_is_refused(tmp_path):
    with pytest.raises(pipeflow.errors.ParameterError, match="is a folder"):
        TaskStore(tmp_path)
    with pytest.raises(pipeflow.errors.ParameterError, match="not the URL"):
        create_session("s3://bucket/tasks.db")


def test_a_store_file_that_is_not_sqlite_is_a_clear_error(tmp_path):
    bad = tmp_path / "tasks.db"
    bad.write_text("not a database at all" * 100)
    with pytest.raises(TaskStoreError, match="tasks.db"):
        TaskStore(bad)


# -- the engine seam: one task cancelled ---------------------------------------------------------

class _Cancelled(luigi.Task):
    def run(self):
        raise TaskCancelledError("stopped by the user")

    def complete(self):
        return False


class _NeedsIt(luigi.Task):
    def requires(self):
        return _Cancelled()

    def complete(self):
        return False

    def run(self):
        pass


class _NeedsItOptionally(luigi.Task):
    ran = []

    def requires(self):
        return pipeflow.optional(_Cancelled())

    def complete(self):
        return bool(self.ran)

    def run(self):
        self.ran.append(True)


def test_a_task_cancelled_alone_is_cancelled_and_what_requires_it_is_skipped():
    _NeedsItOptionally.ran.clear()
    plan = build_plan(build([_NeedsIt(), _NeedsItOptionally()]))
    events = []
    LocalEngine().run(plan, [events.append])
    kinds = {(e.kind, e.task.task_family) for e in events if e.task is not None}
    assert (EventKind.TASK_CANCELLED, "_Cancelled") in kinds
    assert (EventKind.TASK_SKIPPED, "_NeedsIt") in kinds
    assert (EventKind.TASK_COMPLETED, "_NeedsItOptionally") in kinds
    cancelled = next(e for e in events if e.kind is EventKind.TASK_CANCELLED)
    assert cancelled.reason == "stopped by the user"
    skipped = next(e for e in events if e.kind is EventKind.TASK_SKIPPED)
    assert skipped.reason == "upstream task _Cancelled() was cancelled"


# -- end to end -----------------------------------------------------------------------------------

def test_a_tree_runs_on_the_engine_and_its_events_name_the_executor(tmp_path):
    seen = []

    @executor("core_fetch")
    def fetch(inputs):
        return {"rows": inputs["n"] * 2}

    @executor("core_total")
    async def total(inputs):
        await asyncio.sleep(0)
        return inputs["rows"] + 1

    async def main():
        tm = TaskManager(create_session(tmp_path / "t.db"))
        repo = tm.task_repository
        a = await repo.create_task(name="core_fetch", inputs={"n": 3})
        b = await repo.create_task(name="core_total", parent_id=a.id,
                                   dependencies=[{"id": a.id, "required": True}])
        root = TaskTreeNode(a)
        root.add_child(TaskTreeNode(b))
        back = await tm.distribute_task_tree(root, callbacks=[seen.append])
        assert back is root and root.calculate_status() == "completed"
        return await repo.get_task_by_id(b.id), tm.last_result

    try:
        row, result = asyncio.run(main())
    finally:
        unregister("core_fetch")
        unregister("core_total")
    assert (row.status, row.result, row.inputs) == ("completed", 7, {"rows": 6})
    assert row.progress == 1.0 and row.completed_at is not None
    started = [e.family for e in seen if e.kind is EventKind.TASK_STARTED]
    assert started == ["core_fetch", "core_total"]
    assert result.success and len(result.by_state("completed")) == 2
    assert m.COMPLETED == "completed"


def test_a_result_file_stays_in_the_results_folder_whatever_the_task_id(db):
    t = _new(db, id="../../escape/..\\x")
    me = Owner.make("run")
    db.claim(t.id, me)
    db.complete(t.id, me, {1, 2, 3})  # a set: not JSON, so a file
    files = [p for p in db.path.parent.rglob("*.pkl")]
    assert len(files) == 1 and files[0].parent == db.results_dir
    assert db.get(t.id).result == {1, 2, 3}


def test_trees_run_on_process_workers_too(tmp_path):
    @executor("core_pid")
    def pid(inputs):
        return {"pid": os.getpid(), "i": inputs["i"]}

    async def main():
        tm = TaskManager(create_session(tmp_path / "t.db"), workers=2, executor="process")
        repo = tm.task_repository
        root = await repo.create_task(name="core_pid", inputs={"i": 0})
        node = TaskTreeNode(root)
        for i in range(1, 4):
            node.add_child(TaskTreeNode(await repo.create_task(
                name="core_pid", parent_id=root.id, inputs={"i": i})))
        await tm.distribute_task_tree(node)
        return [n.task for n in node]

    try:
        rows = asyncio.run(main())
    finally:
        unregister("core_pid")
    assert [r.status for r in rows] == ["completed"] * 4
    assert sorted(r.result["i"] for r in rows) == [0, 1, 2, 3]
    assert all(r.result["pid"] != os.getpid() for r in rows)


def test_a_bad_executor_kind_is_refused(db):
    with pytest.raises(pipeflow.errors.ParameterError, match="'thread' or 'process'"):
        TaskManager(db, executor="inline")
