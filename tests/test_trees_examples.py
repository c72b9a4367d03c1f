"""Every code example of apflow's two reference pages, run on pipeflow.trees.

The pages are /work/shared/reference/apflow-task-orchestration-guide.txt ("the guide") and
apflow-dependencies-tutorial.txt ("the tutorial"). Each test is the page's example with
one change, the import (``from apflow import ...`` / ``from aipartnerupflow import ...``
becomes ``from pipeflow.trees import ...``), plus what the page leaves out, said in a
``# completed:`` comment: executors for the names the examples use (they record their
start order and inputs), a tree and a distribute_task_tree call where the page stops
after creating tasks, a definition for a variable the page never defines. The pages'
bare ``create_task(...)`` (no ``await``) is bound to ``task_repository.create_now``
(pipeflow's synchronous create_task), and those examples run with ``run_sync``.

What is asserted: the order tasks ran in (recorded start/end order and the stored
``started_at``/``completed_at``), their statuses, the inputs each executor received
(apflow 0.18's merge rule: dict results merged into inputs, later dependencies win, a
``result`` key unwrapped, anything else under ``inputs[dep_id]``), their results, and for
``system_info_executor`` apflow's result keys.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from pipeflow.errors import CycleError, TaskNotFoundError
from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor, run_sync
from pipeflow.trees import executors as registry

CPU_KEYS = {"system", "brand", "cores"}
MEMORY_KEYS = {"system", "total"}
DISK_KEYS = {"system", "total", "used", "available", "used_percent"}


class Recorder:
    """Registers recording executors; unregisters them (restoring what was there) at the end.

    ``log`` holds ``(event, name, inputs)`` tuples in the order they happened, ``event``
    being ``"start"`` or ``"end"`` (``"end"`` is logged just before the executor returns
    or raises). The list is guarded by a lock: executors run on worker threads.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, dict[str, Any]]] = []
        self._saved: dict[str, registry.ExecutorSpec | None] = {}

    def add(self, name: str, result: Any = None, *, fail: str | None = None,
            body: Callable[[dict[str, Any]], Any] | None = None) -> None:
        """Register the executor ``name``.

        Args:
            name: the executor id.
            result: what it returns (default ``{f"{name}_out": f"{name} ok"}``); a
                function of the inputs is called.
            fail: raise ``RuntimeError(fail)`` instead of returning.
            body: called with the inputs between start and end (e.g. a barrier wait).
        """
        if name not in self._saved:
            self._saved[name] = registry.registered().get(name)

        def run(inputs: dict[str, Any]) -> Any:
            with self.lock:
                self.log.append(("start", name, copy.deepcopy(inputs)))
            try:
                if body is not None:
                    body(inputs)
                if fail is not None:
                    raise RuntimeError(fail)
                if callable(result):
                    return result(inputs)
                return {f"{name}_out": f"{name} ok"} if result is None else result
            finally:
                with self.lock:
                    self.log.append(("end", name, {}))

        executor(name)(run)

    def add_all(self, names: Iterable[str]) -> None:
        """Register default recording executors for ``names``."""
        for n in names:
            self.add(n)

    def restore(self) -> None:
        """Unregister what this recorder registered; put back what it replaced."""
        for name, spec in self._saved.items():
            registry.unregister(name)
            if spec is not None:
                executor(spec.id, cancelable=spec.cancelable, retries=spec.retries,
                         retry_delay=spec.retry_delay, timeout=spec.timeout,
                         description=spec.description)(spec.func)

    # -- reading the log -------------------------------------------------------------------------
    def starts(self) -> list[str]:
        """Executor names in the order they started."""
        with self.lock:
            return [n for e, n, _ in self.log if e == "start"]

    def events(self) -> list[tuple[str, str]]:
        """``(event, name)`` in order."""
        with self.lock:
            return [(e, n) for e, n, _ in self.log]

    def inputs(self, name: str) -> dict[str, Any]:
        """The inputs the (single) run of ``name`` received."""
        with self.lock:
            got = [i for e, n, i in self.log if e == "start" and n == name]
        assert len(got) == 1, f"{name} started {len(got)} times: {self.events()}"
        return got[0]

    def index(self, event: str, name: str) -> int:
        """Position of the (single) ``event`` of ``name`` in the log."""
        ev = self.events()
        hits = [i for i, x in enumerate(ev) if x == (event, name)]
        assert len(hits) == 1, f"{event} {name}: {len(hits)} times in {ev}"
        return hits[0]

    def before(self, first: str, then: str) -> bool:
        """``first`` ended before ``then`` started."""
        return self.index("end", first) < self.index("start", then)


@pytest.fixture
def rec():
    """A recorder; its executors are unregistered after the test."""
    r = Recorder()
    yield r
    r.restore()


def done_before(first, then) -> bool:
    """The stored task ``first`` reached its final state before ``then`` started."""
    return first.completed_at is not None and then.started_at is not None \
        and first.completed_at <= then.started_at


# == the guide: Creating Task Trees ===============================================================

def test_guide_basic_task_tree_single_system_info_task(capsys):
    async def main():
        db = create_session()
        task_manager = TaskManager(db)

        # Create a task
        task = await task_manager.task_repository.create_task(
            name="system_info_executor",  # Executor ID
            user_id="user123",
            priority=2,
            inputs={"resource": "cpu"}
        )

        # Build task tree (even single tasks need a tree)
        task_tree = TaskTreeNode(task)

        # Execute
        await task_manager.distribute_task_tree(task_tree)

        # Get result
        result = await task_manager.task_repository.get_task_by_id(task.id)
        print(f"Status: {result.status}")
        print(f"Result: {result.result}")
        return result

    result = asyncio.run(main())
    assert result.status == "completed"
    assert result.error is None and result.progress == 1.0
    assert CPU_KEYS <= set(result.result)
    assert result.user_id == "user123" and result.priority == 2
    assert result.inputs == {"resource": "cpu"}
    assert result.started_at <= result.completed_at
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Status: completed"
    assert out[1] == f"Result: {result.result}"


def test_guide_hierarchical_task_tree(rec):
    rec.add_all(["root_task", "child_task_1", "child_task_2"])

    async def main():
        db = create_session()
        task_manager = TaskManager(db)
        # Create root task
        root_task = await task_manager.task_repository.create_task(
            name="root_task",
            user_id="user123",
            priority=1
        )

        # Create child tasks
        child1 = await task_manager.task_repository.create_task(
            name="child_task_1",
            user_id="user123",
            parent_id=root_task.id,  # Child of root
            priority=2,
            inputs={"step": 1}
        )

        child2 = await task_manager.task_repository.create_task(
            name="child_task_2",
            user_id="user123",
            parent_id=root_task.id,  # Also child of root
            priority=2,
            inputs={"step": 2}
        )

        # Build tree
        root = TaskTreeNode(root_task)
        root.add_child(TaskTreeNode(child1))
        root.add_child(TaskTreeNode(child2))

        # Execute
        await task_manager.distribute_task_tree(root)
        repo = task_manager.task_repository
        return [await repo.get_task_by_id(t.id) for t in (root_task, child1, child2)], root

    (root_task, child1, child2), root = asyncio.run(main())
    assert [t.status for t in (root_task, child1, child2)] == ["completed"] * 3
    assert sorted(rec.starts()) == ["child_task_1", "child_task_2", "root_task"]
    assert rec.inputs("root_task") == {}
    assert rec.inputs("child_task_1") == {"step": 1}
    assert rec.inputs("child_task_2") == {"step": 2}
    assert child1.result == {"child_task_1_out": "child_task_1 ok"}
    # nothing depends on anything: priority 1 (the root) is claimed first
    assert root_task.started_at < child1.started_at
    assert root_task.started_at < child2.started_at
    assert root_task.has_children and child1.parent_id == root_task.id
    # the nodes' tasks are refreshed by the run
    assert root.calculate_status() == "completed" and root.task.status == "completed"


# == the guide: Dependencies ======================================================================

def test_guide_basic_dependency(rec):
    rec.add("fetch_data", lambda i: {"data": [1, 2, 3], "source": i["url"]})
    rec.add("process_data", lambda i: {"count": len(i["data"]), "did": i["operation"]})

    async def main():
        task_manager = TaskManager(create_session())  # completed: the page's session
        # Task 1: Fetch data
        fetch_task = await task_manager.task_repository.create_task(
            name="fetch_data",
            user_id="user123",
            priority=1,
            inputs={"url": "https://api.example.com/data"}
        )

        # Task 2: Process data (depends on Task 1)
        process_task = await task_manager.task_repository.create_task(
            name="process_data",
            user_id="user123",
            parent_id=fetch_task.id,
            dependencies=[{"id": fetch_task.id, "required": True}],  # Waits for fetch_task
            priority=2,
            inputs={"operation": "analyze"}
        )

        # Build tree
        task_tree = TaskTreeNode(fetch_task)
        task_tree.add_child(TaskTreeNode(process_task))

        # Execute
        # Execution order: fetch_task → process_task (automatic!)
        await task_manager.distribute_task_tree(task_tree)
        repo = task_manager.task_repository
        return await repo.get_task_by_id(fetch_task.id), await repo.get_task_by_id(
            process_task.id)

    fetch, process = asyncio.run(main())
    assert rec.events() == [("start", "fetch_data"), ("end", "fetch_data"),
                            ("start", "process_data"), ("end", "process_data")]
    assert (fetch.status, process.status) == ("completed", "completed")
    merged = {"operation": "analyze", "data": [1, 2, 3],
              "source": "https://api.example.com/data"}
    assert rec.inputs("process_data") == merged
    assert process.inputs == merged  # the merged inputs are stored
    assert fetch.inputs == {"url": "https://api.example.com/data"}
    assert process.result == {"count": 3, "did": "analyze"}
    assert done_before(fetch, process)


def test_guide_sequential_pipeline(rec):
    rec.add("fetch_data", {"rows": [1, 2, 3]})
    rec.add("process_data", lambda i: {"total": sum(i["rows"])})
    rec.add("save_results", lambda i: {"saved": i["total"]})

    async def main():
        task_manager = TaskManager(create_session())  # completed: the page's session
        # Step 1: Fetch
        fetch = await task_manager.task_repository.create_task(
            name="fetch_data",
            user_id="user123",
            priority=1
        )

        # Step 2: Process (depends on fetch)
        process = await task_manager.task_repository.create_task(
            name="process_data",
            user_id="user123",
            parent_id=fetch.id,
            dependencies=[{"id": fetch.id, "required": True}],
            priority=2
        )

        # Step 3: Save (depends on process)
        save = await task_manager.task_repository.create_task(
            name="save_results",
            user_id="user123",
            parent_id=fetch.id,
            dependencies=[{"id": process.id, "required": True}],
            priority=3
        )

        # Build pipeline
        root = TaskTreeNode(fetch)
        root.add_child(TaskTreeNode(process))
        root.add_child(TaskTreeNode(save))

        # Execute
        # Order: Fetch → Process → Save (automatic!)
        await task_manager.distribute_task_tree(root)
        return [n.task for n in root]  # completed: the nodes' tasks, refreshed by the run

    fetch, process, save = asyncio.run(main())
    assert rec.events() == [(e, n) for n in ("fetch_data", "process_data", "save_results")
                            for e in ("start", "end")]
    assert [t.status for t in (fetch, process, save)] == ["completed"] * 3
    assert rec.inputs("process_data") == {"rows": [1, 2, 3]}
    # only direct dependencies are merged: save sees process's result, not fetch's
    assert rec.inputs("save_results") == {"total": 6}
    assert save.result == {"saved": 6}
    assert done_before(fetch, process) and done_before(process, save)


def test_guide_multiple_dependencies(rec):
    rec.add("root_task")
    rec.add("task1", {"a": 1, "shared": "from task1"})
    rec.add("task2", {"b": 2, "shared": "from task2"})
    rec.add("task3", lambda i: {"sum": i["a"] + i["b"]})

    async def main():
        task_manager = TaskManager(create_session())  # completed: the page's session
        # completed: the page uses root_task.id without defining root_task
        root_task = await task_manager.task_repository.create_task(
            name="root_task", user_id="user123")
        # Task 1
        task1 = await task_manager.task_repository.create_task(
            name="task1",
            user_id="user123",
            priority=1
        )

        # Task 2
        task2 = await task_manager.task_repository.create_task(
            name="task2",
            user_id="user123",
            priority=1
        )

        # Task 3 depends on BOTH Task 1 and Task 2
        task3 = await task_manager.task_repository.create_task(
            name="task3",
            user_id="user123",
            parent_id=root_task.id,
            dependencies=[
                {"id": task1.id, "required": True},
                {"id": task2.id, "required": True}
            ],
            priority=2
        )
        # completed: the page builds no tree and runs nothing
        root = TaskTreeNode(root_task)
        for t in (task1, task2, task3):
            root.add_child(TaskTreeNode(t))
        await task_manager.distribute_task_tree(root)
        return [n.task for n in root]

    root_task, task1, task2, task3 = asyncio.run(main())
    assert [t.status for t in (root_task, task1, task2, task3)] == ["completed"] * 4
    assert rec.before("task1", "task3") and rec.before("task2", "task3")
    # both results merged in list order: task2's "shared" wins
    assert rec.inputs("task3") == {"a": 1, "b": 2, "shared": "from task2"}
    assert task3.result == {"sum": 3}
    assert done_before(task1, task3) and done_before(task2, task3)


def test_guide_dependency_types_required_and_optional(rec):
    rec.add("task1", fail="task1 broke")
    rec.add("needs_task1")
    rec.add("tolerates_task1")

    async def main():
        tm = TaskManager(create_session())
        repo = tm.task_repository
        # completed: the page shows only the dependencies= lists; a failing task1 and
        # one dependent for each list
        task1 = await repo.create_task(name="task1")
        required = await repo.create_task(name="needs_task1", dependencies=[
            {"id": task1.id, "required": True}  # Must complete successfully
        ])
        optional = await repo.create_task(name="tolerates_task1", dependencies=[
            {"id": task1.id, "required": False}  # Can execute even if task1 fails
        ], inputs={"mine": 1})
        root = TaskTreeNode(task1)
        root.add_child(TaskTreeNode(required))
        root.add_child(TaskTreeNode(optional))
        await tm.distribute_task_tree(root)
        return [n.task for n in root]

    task1, required, optional = asyncio.run(main())
    assert (task1.status, task1.error) == ("failed", "task1 broke")
    # "If dependency fails, dependent task does NOT execute": it stays pending, untouched
    assert (required.status, required.error, required.started_at) == ("pending", None, None)
    assert required.inputs == {}
    # "If dependency fails, dependent task still executes"; after it failed (waited for)
    assert optional.status == "completed"
    assert rec.before("task1", "tolerates_task1")
    assert rec.inputs("tolerates_task1") == {"mine": 1}  # nothing merged from the failure
    assert "needs_task1" not in rec.starts()
    assert done_before(task1, optional)


@pytest.mark.parametrize("primary_fails", [False, True], ids=["primary-ok", "primary-fails"])
def test_guide_optional_dependency_fallback(rec, primary_fails):
    if primary_fails:
        rec.add("primary_task", fail="primary down")
    else:
        rec.add("primary_task", {"answer": "from primary"})
    rec.add("fallback_task", lambda i: {"got": i.get("answer")})

    async def main():
        task_manager = TaskManager(create_session())  # completed: the page's session
        # Primary task
        primary = await task_manager.task_repository.create_task(
            name="primary_task",
            user_id="user123",
            priority=1
        )

        # Fallback task (runs even if primary fails)
        fallback = await task_manager.task_repository.create_task(
            name="fallback_task",
            user_id="user123",
            dependencies=[{"id": primary.id, "required": False}],  # Optional
            priority=2
        )
        # completed: the page builds no tree and runs nothing
        root = TaskTreeNode(primary)
        root.add_child(TaskTreeNode(fallback))
        await task_manager.distribute_task_tree(root)
        return [n.task for n in root]

    primary, fallback = asyncio.run(main())
    assert primary.status == ("failed" if primary_fails else "completed")
    assert fallback.status == "completed"
    # "Task waits for dependency to complete (or fail)"
    assert rec.events() == [("start", "primary_task"), ("end", "primary_task"),
                            ("start", "fallback_task"), ("end", "fallback_task")]
    assert done_before(primary, fallback)
    if primary_fails:
        assert rec.inputs("fallback_task") == {}
        assert fallback.result == {"got": None}
    else:
        assert rec.inputs("fallback_task") == {"answer": "from primary"}
        assert fallback.result == {"got": "from primary"}


# == the guide: Priorities ========================================================================

@pytest.mark.parametrize("workers", [None, 1], ids=["default-workers", "one-worker"])
def test_guide_basic_priority_urgent_before_normal(rec, workers):
    rec.add_all(["urgent_task", "normal_task"])

    async def main():
        db = create_session()  # completed: the page's session and manager
        task_manager = TaskManager(db) if workers is None else TaskManager(db, workers=workers)
        # Urgent task (executes first)
        urgent = await task_manager.task_repository.create_task(
            name="urgent_task",
            user_id="user123",
            priority=0  # Highest priority
        )

        # Normal task (executes after urgent)
        normal = await task_manager.task_repository.create_task(
            name="normal_task",
            user_id="user123",
            priority=2  # Normal priority
        )
        # completed: the page runs nothing. The normal task is put first in the tree, so
        # only its priority can start the urgent one first.
        root = TaskTreeNode(normal)
        root.add_child(TaskTreeNode(urgent))
        await task_manager.distribute_task_tree(root)
        repo = task_manager.task_repository
        return await repo.get_task_by_id(urgent.id), await repo.get_task_by_id(normal.id)

    urgent, normal = asyncio.run(main())
    assert (urgent.status, normal.status) == ("completed", "completed")
    # Execution Order: 1. Urgent task (priority 0) 2. Normal task (priority 2)
    assert urgent.started_at < normal.started_at  # claimed first, with any number of workers
    if workers == 1:
        assert rec.events() == [("start", "urgent_task"), ("end", "urgent_task"),
                                ("start", "normal_task"), ("end", "normal_task")]


def test_guide_priority_with_dependencies(rec):
    rec.add("task1", {"first": True})
    rec.add("task2")

    async def main():
        task_manager = TaskManager(create_session())  # completed: the page's session
        # Task 1 (priority 2, no dependencies)
        task1 = await task_manager.task_repository.create_task(
            name="task1",
            user_id="user123",
            priority=2
        )

        # Task 2 (priority 0, depends on Task 1)
        task2 = await task_manager.task_repository.create_task(
            name="task2",
            user_id="user123",
            dependencies=[{"id": task1.id, "required": True}],
            priority=0  # Higher priority, but still waits for Task 1!
        )
        # completed: the page runs nothing; task2 first in the tree
        root = TaskTreeNode(task2)
        root.add_child(TaskTreeNode(task1))
        await task_manager.distribute_task_tree(root)
        return [n.task for n in root]

    task2, task1 = asyncio.run(main())
    assert rec.events() == [("start", "task1"), ("end", "task1"),
                            ("start", "task2"), ("end", "task2")]
    assert (task1.status, task2.status) == ("completed", "completed")
    assert rec.inputs("task2") == {"first": True}
    assert done_before(task1, task2)


# == the guide: Common Patterns (bare create_task: synchronous, run with run_sync) ================

def sync_manager():
    """The pages' bare ``create_task(...)``: pipeflow's synchronous ``create_now``."""
    tm = TaskManager(create_session())
    return tm, tm.task_repository.create_now


def test_guide_pattern1_sequential_pipeline(rec):
    rec.add("step1", {"extracted": [3, 4]})
    rec.add("step2", lambda i: {"transformed": [x * 10 for x in i["extracted"]]})
    rec.add("step3", lambda i: {"loaded": len(i["transformed"])})
    tm, create_task = sync_manager()  # completed: the page's manager

    task1 = create_task(name="step1")
    task2 = create_task(
        name="step2",
        dependencies=[{"id": task1.id, "required": True}]
    )
    task3 = create_task(
        name="step3",
        dependencies=[{"id": task2.id, "required": True}]
    )
    # completed: the page runs nothing
    root = TaskTreeNode(task1)
    root.add_child(TaskTreeNode(task2))
    root.add_child(TaskTreeNode(task3))
    run_sync(tm.distribute_task_tree(root))

    assert rec.events() == [(e, n) for n in ("step1", "step2", "step3")
                            for e in ("start", "end")]
    assert rec.inputs("step2") == {"extracted": [3, 4]}
    assert rec.inputs("step3") == {"transformed": [30, 40]}
    assert [n.task.status for n in root] == ["completed"] * 3
    assert root.children[1].task.result == {"loaded": 2}


def test_guide_pattern2_fan_out_runs_in_parallel(rec):
    # each task waits at a barrier for the other three: the run completes only if all
    # four run at the same time (a task that waited alone fails: BrokenBarrierError)
    barrier = threading.Barrier(4, timeout=20)
    for name in ("root", "task1", "task2", "task3"):
        rec.add(name, body=lambda _i: barrier.wait())
    tm, create_task = sync_manager()  # completed: the page's manager

    root = create_task(name="root")
    task1 = create_task(name="task1", parent_id=root.id)  # No dependencies
    task2 = create_task(name="task2", parent_id=root.id)  # No dependencies
    task3 = create_task(name="task3", parent_id=root.id)  # No dependencies
    # completed: the tree, built from the parent_id links, and the run
    tree = run_sync(tm.task_repository.build_task_tree(root))
    assert [n.task.id for n in tree] == [root.id, task1.id, task2.id, task3.id]
    run_sync(tm.distribute_task_tree(tree))

    assert [n.task.status for n in tree] == ["completed"] * 4
    # all four started before any ended
    assert [e for e, _ in rec.events()] == ["start"] * 4 + ["end"] * 4


def test_guide_pattern3_fan_in(rec):
    for i in (1, 2, 3):
        rec.add(f"task{i}", {f"part{i}": i})
    rec.add("final", lambda i: {"total": i["part1"] + i["part2"] + i["part3"]})
    tm, create_task = sync_manager()  # completed: the page's manager

    task1 = create_task(name="task1")
    task2 = create_task(name="task2")
    task3 = create_task(name="task3")

    final = create_task(
        name="final",
        dependencies=[
            {"id": task1.id, "required": True},
            {"id": task2.id, "required": True},
            {"id": task3.id, "required": True}
        ]
    )
    # completed: a tree of the four tasks, and the run
    root = TaskTreeNode(final)
    for t in (task1, task2, task3):
        root.add_child(TaskTreeNode(t))
    run_sync(tm.distribute_task_tree(root))

    for i in (1, 2, 3):
        assert rec.before(f"task{i}", "final")
    assert rec.starts()[-1] == "final"
    assert rec.inputs("final") == {"part1": 1, "part2": 2, "part3": 3}
    assert root.task.status == "completed" and root.task.result == {"total": 6}


def test_guide_pattern4_complex_workflow(rec):
    for i in (1, 2, 3, 5):
        rec.add(f"task{i}", {f"t{i}": i})
    rec.add("root")
    rec.add("task4", lambda i: {"t4": i["t1"] + i["t2"] + i["t3"]})
    rec.add("final", lambda i: {"answer": i["t4"] * 100 + i["t5"]})
    tm, create_task = sync_manager()  # completed: the page's manager

    root = create_task(name="root")
    task1 = create_task(name="task1", parent_id=root.id)
    task2 = create_task(name="task2", parent_id=root.id)
    task3 = create_task(name="task3", parent_id=root.id)

    task4 = create_task(
        name="task4",
        parent_id=root.id,
        dependencies=[
            {"id": task1.id, "required": True},
            {"id": task2.id, "required": True},
            {"id": task3.id, "required": True}
        ]
    )

    task5 = create_task(name="task5", parent_id=root.id)

    final = create_task(
        name="final",
        parent_id=root.id,
        dependencies=[
            {"id": task4.id, "required": True},
            {"id": task5.id, "required": True}
        ]
    )
    # completed: the tree from the parent_id links, and the run
    tree = run_sync(tm.task_repository.build_task_tree(root))
    assert len(tree) == 7
    run_sync(tm.distribute_task_tree(tree))

    assert [n.task.status for n in tree] == ["completed"] * 7
    for t in ("task1", "task2", "task3"):
        assert rec.before(t, "task4")
    assert rec.before("task4", "final") and rec.before("task5", "final")
    assert rec.inputs("task4") == {"t1": 1, "t2": 2, "t3": 3}
    assert rec.inputs("final") == {"t4": 6, "t5": 5}  # direct dependencies only
    assert run_sync(tm.task_repository.get_task_by_id(final.id)).result == {"answer": 605}


@pytest.mark.parametrize("primary_fails", [False, True], ids=["primary-ok", "primary-fails"])
def test_guide_pattern5_conditional_execution(rec, primary_fails):
    rec.add("primary", {"primary": "ok"}, fail="primary down" if primary_fails else None)
    rec.add("fallback", {"fallback": "ok"})
    rec.add("success", lambda i: {"used": sorted(i)})
    tm, create_task = sync_manager()  # completed: the page's manager

    primary = create_task(name="primary")
    fallback = create_task(name="fallback")

    success = create_task(
        name="success",
        dependencies=[
            {"id": primary.id, "required": False},  # Optional
            {"id": fallback.id, "required": False}  # Optional
        ]
    )
    # completed: a tree and the run
    root = TaskTreeNode(success)
    root.add_child(TaskTreeNode(primary))
    root.add_child(TaskTreeNode(fallback))
    run_sync(tm.distribute_task_tree(root))

    success_row, primary_row, fallback_row = (n.task for n in root)
    assert primary_row.status == ("failed" if primary_fails else "completed")
    assert (fallback_row.status, success_row.status) == ("completed", "completed")
    # both optional dependencies are waited for
    assert rec.before("primary", "success") and rec.before("fallback", "success")
    expected = ["fallback"] if primary_fails else ["fallback", "primary"]
    assert success_row.result == {"used": expected}


# == the guide: Best Practices (the runnable snippets) ============================================

def test_guide_best_practice_2_priorities(rec):
    rec.add_all(["process_payment", "process_data", "cleanup"])
    tm = TaskManager(create_session(), workers=1)  # completed: one worker shows the order
    create_task = tm.task_repository.create_now

    # Critical payment processing
    payment = create_task(name="process_payment", priority=0)

    # Normal data processing
    data = create_task(name="process_data", priority=2)

    # Background cleanup
    cleanup = create_task(name="cleanup", priority=3)
    # completed: a tree (in the reverse of priority order) and the run
    root = TaskTreeNode(cleanup)
    root.add_child(TaskTreeNode(data))
    root.add_child(TaskTreeNode(payment))
    run_sync(tm.distribute_task_tree(root))

    assert rec.starts() == ["process_payment", "process_data", "cleanup"]
    assert [n.task.status for n in root] == ["completed"] * 3


def test_guide_best_practice_3_explicit_dependencies(rec):
    rec.add_all(["task1", "task2"])
    tm, create_task = sync_manager()  # completed: the page's manager
    task1 = create_task(name="task1")  # completed: the page writes create_task(...)
    task2 = create_task(
        name="task2",
        dependencies=[{"id": task1.id, "required": True}]  # Explicit
    )
    root = TaskTreeNode(task2)  # completed: task2 first in the tree, and the run
    root.add_child(TaskTreeNode(task1))
    run_sync(tm.distribute_task_tree(root))

    assert rec.events() == [("start", "task1"), ("end", "task1"),
                            ("start", "task2"), ("end", "task2")]
    assert rec.inputs("task2") == {"task1_out": "task1 ok"}


def test_guide_best_practice_4_parent_for_organisation_dependencies_for_order(rec):
    rec.add_all(["root", "child", "other_task"])
    tm, create_task = sync_manager()  # completed: the page's manager
    # completed: the page's dependency id "other_task" must name a stored task
    create_task(name="other_task", id="other_task")

    root = create_task(name="root")
    child = create_task(
        name="child",
        parent_id=root.id,  # Organizational
        dependencies=[{"id": "other_task", "required": True}]  # Execution
    )
    # completed: the tree from the parent_id links (other_task is not in it) and the run
    tree = run_sync(tm.task_repository.build_task_tree(root))
    run_sync(tm.distribute_task_tree(tree))

    assert rec.before("other_task", "child")
    other = run_sync(tm.task_repository.get_task_by_id("other_task"))
    assert other.status == "completed"  # found in the store and run, though not in the tree
    assert [n.task.status for n in tree] == ["completed", "completed"]
    assert rec.inputs("child") == {"other_task_out": "other_task ok"}
    assert child.parent_id == root.id


def test_guide_best_practice_5_handle_errors_gracefully(rec, capsys):
    rec.add("fetch_data")
    rec.add("process_data", fail="bad row 7")
    rec.add("save_results")

    async def main():
        task_manager = TaskManager(create_session())
        repo = task_manager.task_repository
        # completed: a tree to check (the page starts from one)
        fetch = await repo.create_task(name="fetch_data")
        process = await repo.create_task(name="process_data", dependencies=[fetch.id])
        save = await repo.create_task(name="save_results", dependencies=[process.id])
        task_tree = TaskTreeNode(fetch)
        task_tree.add_child(TaskTreeNode(process))
        task_tree.add_child(TaskTreeNode(save))
        tasks = task_tree.to_list()  # completed: the page's `tasks` is never defined

        await task_manager.distribute_task_tree(task_tree)

        # Check all tasks
        for task in tasks:
            result = await task_manager.task_repository.get_task_by_id(task.id)
            if result.status == "failed":
                print(f"Task {task.id} failed: {result.error}")
                # Handle failure appropriately
        return [n.task for n in task_tree]

    fetch, process, save = asyncio.run(main())
    assert capsys.readouterr().out == f"Task {process.id} failed: bad row 7\n"
    assert [fetch.status, process.status, save.status] == ["completed", "failed", "pending"]
    assert process.result is None and process.progress == 0.0
    assert "save_results" not in rec.starts()


# == the guide: Advanced Topics ===================================================================

def test_guide_cancel_task_as_written_unknown_id():
    async def main():
        task_manager = TaskManager(create_session())  # completed: the page's manager
        result = await task_manager.cancel_task(
            task_id="task_123",
            error_message="User requested cancellation"
        )
        return result

    assert asyncio.run(main()) == {"status": "failed", "message": "Task task_123 not found",
                                   "error": "Task not found"}


def test_guide_cancel_task_pending_task_never_runs(rec):
    rec.add_all(["task_123_exec", "after_123"])

    async def main():
        task_manager = TaskManager(create_session())
        repo = task_manager.task_repository
        # completed: a stored task with the page's id, and a task that needs it
        t = await repo.create_task(name="task_123_exec", id="task_123")
        after = await repo.create_task(name="after_123", dependencies=[t.id])
        result = await task_manager.cancel_task(
            task_id="task_123",
            error_message="User requested cancellation"
        )
        tree = TaskTreeNode(t)
        tree.add_child(TaskTreeNode(after))
        await task_manager.distribute_task_tree(tree)
        return result, [n.task for n in tree]

    result, (t, after) = asyncio.run(main())
    assert result == {"status": "cancelled", "message": "User requested cancellation"}
    assert (t.status, t.error) == ("cancelled", "User requested cancellation")
    assert t.started_at is None and t.completed_at is not None
    assert (after.status, after.error, after.started_at) == ("pending", None, None)
    assert rec.starts() == []


def test_guide_streaming_execution(rec):
    rec.add("fetch_data", {"rows": 2})
    rec.add("process_data", fail="cannot process")

    async def main():
        task_manager = TaskManager(create_session())
        repo = task_manager.task_repository
        # completed: a tree, and a queue for the events (apflow's set_streaming_context)
        fetch = await repo.create_task(name="fetch_data")
        process = await repo.create_task(name="process_data", parent_id=fetch.id,
                                         dependencies=[{"id": fetch.id, "required": True}])
        task_tree = TaskTreeNode(fetch)
        task_tree.add_child(TaskTreeNode(process))
        queue: asyncio.Queue = asyncio.Queue()
        task_manager.streaming_callbacks.set_streaming_context(queue)

        # Execute with streaming
        await task_manager.distribute_task_tree_with_streaming(
            task_tree,
            use_callback=True
        )
        events = []
        while not queue.empty():
            events.append(queue.get_nowait())
        return fetch, process, events

    fetch, process, events = asyncio.run(main())
    assert [(e["type"], e["task_id"], e["status"]) for e in events] == [
        ("progress", fetch.id, "in_progress"),
        ("task_start", fetch.id, "in_progress"),
        ("task_completed", fetch.id, "completed"),
        ("task_start", process.id, "in_progress"),
        ("task_failed", process.id, "failed"),
        ("final", fetch.id, "failed"),
    ]
    assert events[2]["result"] == {"rows": 2} and events[2]["final"] is True
    assert events[4]["error"] == "cannot process" and events[4]["final"] is True
    assert events[5]["error"] == "Task tree execution failed"


# == the tutorial =================================================================================

def rows(tm, *tasks):
    """The stored tasks, now."""
    return [run_sync(tm.task_repository.get_task_by_id(t.id)) for t in tasks]


def test_tutorial_part2_first_dependency(capsys):
    seen = {}

    async def main():
        db = create_session()
        task_manager = TaskManager(db)
        seen["tm"] = task_manager

        # Task 1: Get CPU info (no dependencies)
        cpu_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            priority=1,
            inputs={"resource": "cpu"}
        )

        # Task 2: Get memory info (depends on CPU task)
        memory_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            parent_id=cpu_task.id,  # Organizational
            dependencies=[{"id": cpu_task.id, "required": True}],  # Execution: waits for CPU
            priority=2,
            inputs={"resource": "memory"}
        )

        # Build tree
        root = TaskTreeNode(cpu_task)
        root.add_child(TaskTreeNode(memory_task))

        # Execute
        # TaskManager will:
        # 1. Execute cpu_task first (no dependencies)
        # 2. Wait for cpu_task to complete
        # 3. Then execute memory_task (dependency satisfied)
        await task_manager.distribute_task_tree(root)

        # Check results
        cpu_result = await task_manager.task_repository.get_task_by_id(cpu_task.id)
        memory_result = await task_manager.task_repository.get_task_by_id(memory_task.id)

        print(f"CPU task: {cpu_result.status}")
        print(f"Memory task: {memory_result.status}")
        seen["rows"] = cpu_result, memory_result

    asyncio.run(main())
    assert capsys.readouterr().out == "CPU task: completed\nMemory task: completed\n"
    cpu, memory = seen["rows"]
    assert done_before(cpu, memory)
    assert CPU_KEYS <= set(cpu.result) and "brand" not in memory.result
    assert MEMORY_KEYS <= set(memory.result)
    # apflow 0.18's rule for executors without schemas: the CPU dict merged into inputs
    assert memory.inputs == {"resource": "memory", **cpu.result}


def test_tutorial_part3_three_step_pipeline(capsys):
    seen = {}

    async def main():
        db = create_session()
        task_manager = TaskManager(db)

        # Step 1: Fetch data
        fetch_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            priority=1,
            inputs={"resource": "cpu"}
        )

        # Step 2: Process data (depends on fetch)
        process_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            parent_id=fetch_task.id,
            dependencies=[{"id": fetch_task.id, "required": True}],
            priority=2,
            inputs={"resource": "memory"}
        )

        # Step 3: Save results (depends on process)
        save_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            parent_id=fetch_task.id,
            dependencies=[{"id": process_task.id, "required": True}],
            priority=3,
            inputs={"resource": "disk"}
        )

        # Build pipeline
        root = TaskTreeNode(fetch_task)
        root.add_child(TaskTreeNode(process_task))
        root.add_child(TaskTreeNode(save_task))

        # Execute
        # Order: Fetch → Process → Save (automatic!)
        await task_manager.distribute_task_tree(root)

        print("Pipeline completed!")
        seen["tasks"] = [n.task for n in root]  # completed: keep what to check

    asyncio.run(main())
    assert capsys.readouterr().out == "Pipeline completed!\n"
    fetch, process, save = seen["tasks"]
    assert [t.status for t in (fetch, process, save)] == ["completed"] * 3
    assert done_before(fetch, process) and done_before(process, save)
    assert CPU_KEYS <= set(fetch.result)
    assert MEMORY_KEYS <= set(process.result)
    assert DISK_KEYS <= set(save.result)
    assert save.inputs == {"resource": "disk", **process.result}  # direct dependency only


def test_tutorial_part4_multiple_dependencies(capsys):
    seen = {}

    async def main():
        db = create_session()
        task_manager = TaskManager(db)

        # Task 1: Get CPU info
        cpu_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            priority=1,
            inputs={"resource": "cpu"}
        )

        # Task 2: Get memory info
        memory_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            priority=1,
            inputs={"resource": "memory"}
        )

        # Task 3: Get disk info
        disk_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            priority=1,
            inputs={"resource": "disk"}
        )

        # Task 4: Aggregate all (depends on ALL three)
        aggregate_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            parent_id=cpu_task.id,
            dependencies=[
                {"id": cpu_task.id, "required": True},
                {"id": memory_task.id, "required": True},
                {"id": disk_task.id, "required": True}
            ],
            priority=2,
            inputs={"resource": "all"}
        )

        # Build tree
        root = TaskTreeNode(cpu_task)
        root.add_child(TaskTreeNode(memory_task))
        root.add_child(TaskTreeNode(disk_task))
        root.add_child(TaskTreeNode(aggregate_task))

        # Execute
        # Tasks 1, 2, 3 run in parallel (no dependencies)
        # Task 4 waits for ALL of them to complete
        await task_manager.distribute_task_tree(root)

        print("All tasks completed!")
        seen["tasks"] = [n.task for n in root]  # completed: keep what to check

    asyncio.run(main())
    assert capsys.readouterr().out == "All tasks completed!\n"
    cpu, memory, disk, aggregate = seen["tasks"]
    assert [t.status for t in seen["tasks"]] == ["completed"] * 4
    for dep in (cpu, memory, disk):
        assert done_before(dep, aggregate)
    assert set(aggregate.result) == {"cpu", "memory", "disk"}
    assert CPU_KEYS <= set(aggregate.result["cpu"])
    assert MEMORY_KEYS <= set(aggregate.result["memory"])
    assert DISK_KEYS <= set(aggregate.result["disk"])
    # merged in list order: disk's "total" overwrites memory's
    assert aggregate.inputs == {"resource": "all", **cpu.result, **memory.result,
                                **disk.result}
    assert aggregate.inputs["total"] == disk.result["total"]


@pytest.mark.parametrize("primary_fails", [False, True], ids=["as-written", "primary-fails"])
def test_tutorial_part5_optional_dependencies(primary_fails):
    seen = {}

    async def main():
        db = create_session()
        task_manager = TaskManager(db)

        # Primary task
        primary_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            priority=1,
            # completed: a second run with a resource system_info_executor refuses, to
            # check the page's "Even if primary_task fails"
            inputs={"resource": "gpu" if primary_fails else "cpu"}
        )

        # Fallback task (runs even if primary fails)
        fallback_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            parent_id=primary_task.id,
            dependencies=[{"id": primary_task.id, "required": False}],  # Optional!
            priority=2,
            inputs={"resource": "memory"}
        )

        # Final task (works with either primary or fallback)
        final_task = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            parent_id=primary_task.id,
            dependencies=[
                {"id": primary_task.id, "required": False},  # Optional
                {"id": fallback_task.id, "required": False}  # Optional
            ],
            priority=3,
            inputs={"resource": "disk"}
        )

        # Build tree
        root = TaskTreeNode(primary_task)
        root.add_child(TaskTreeNode(fallback_task))
        root.add_child(TaskTreeNode(final_task))

        # Execute
        # Even if primary_task fails, fallback_task and final_task will still run
        await task_manager.distribute_task_tree(root)
        seen["tasks"] = [n.task for n in root]  # completed: keep what to check

    asyncio.run(main())
    primary, fallback, final = seen["tasks"]
    assert (fallback.status, final.status) == ("completed", "completed")
    assert done_before(primary, fallback)  # optional dependencies are waited for
    assert done_before(primary, final) and done_before(fallback, final)
    assert MEMORY_KEYS <= set(fallback.result) and DISK_KEYS <= set(final.result)
    if primary_fails:
        assert primary.status == "failed"
        assert primary.error.startswith("Input validation failed")
        assert set(primary.result) == {"error", "validation_error"}  # the dict is kept
        assert fallback.inputs == {"resource": "memory"}  # nothing from the failure
        assert final.inputs == {"resource": "disk", **fallback.result}
    else:
        assert primary.status == "completed" and CPU_KEYS <= set(primary.result)
        assert fallback.inputs == {"resource": "memory", **primary.result}
        assert final.inputs == {"resource": "disk", **primary.result, **fallback.result}


def test_tutorial_part6_complex_dependency_graph(capsys):
    seen = {}

    async def main():
        db = create_session()
        task_manager = TaskManager(db)

        # Create all tasks
        tasks = {}

        # Level 1: Independent tasks
        tasks["fetch1"] = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            priority=1,
            inputs={"resource": "cpu"}
        )

        tasks["fetch2"] = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            priority=1,
            inputs={"resource": "memory"}
        )

        # Level 2: Tasks that depend on Level 1
        tasks["process1"] = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            parent_id=tasks["fetch1"].id,
            dependencies=[{"id": tasks["fetch1"].id, "required": True}],
            priority=2,
            inputs={"resource": "disk"}
        )

        tasks["process2"] = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            parent_id=tasks["fetch2"].id,
            dependencies=[{"id": tasks["fetch2"].id, "required": True}],
            priority=2,
            inputs={"resource": "all"}
        )

        # Level 3: Final task depends on both Level 2 tasks
        tasks["final"] = await task_manager.task_repository.create_task(
            name="system_info_executor",
            user_id="tutorial_user",
            parent_id=tasks["fetch1"].id,
            dependencies=[
                {"id": tasks["process1"].id, "required": True},
                {"id": tasks["process2"].id, "required": True}
            ],
            priority=3,
            inputs={"resource": "cpu"}
        )

        # Build tree
        root = TaskTreeNode(tasks["fetch1"])
        root.add_child(TaskTreeNode(tasks["fetch2"]))
        root.add_child(TaskTreeNode(tasks["process1"]))
        root.add_child(TaskTreeNode(tasks["process2"]))
        root.add_child(TaskTreeNode(tasks["final"]))

        # Execute
        await task_manager.distribute_task_tree(root)

        print("Complex workflow completed!")
        seen["tm"], seen["tasks"] = task_manager, tasks  # completed: keep what to check

    asyncio.run(main())
    assert capsys.readouterr().out == "Complex workflow completed!\n"
    t = dict(zip(seen["tasks"], rows(seen["tm"], *seen["tasks"].values())))
    assert [r.status for r in t.values()] == ["completed"] * 5
    assert done_before(t["fetch1"], t["process1"]) and done_before(t["fetch2"], t["process2"])
    assert done_before(t["process1"], t["final"]) and done_before(t["process2"], t["final"])
    assert DISK_KEYS <= set(t["process1"].result)
    assert set(t["process2"].result) == {"cpu", "memory", "disk"}
    assert CPU_KEYS <= set(t["final"].result)
    # Level 1 (priority 1) is claimed before any Level 2 task could be ready
    assert max(t["fetch1"].started_at, t["fetch2"].started_at) < min(
        t["process1"].started_at, t["process2"].started_at)
    assert t["final"].inputs == {"resource": "cpu", **t["process1"].result,
                                 **t["process2"].result}


def test_tutorial_part7_dependencies_override_priorities(rec):
    rec.add("task1", {"from1": 1})
    rec.add("task2")
    # completed: the page's bare create_task(..., ...) with a manager, a tree and a run
    tm, create_task = sync_manager()

    # Task 1: Priority 2, no dependencies
    task1 = create_task(name="task1", priority=2)

    # Task 2: Priority 0 (higher), but depends on Task 1
    task2 = create_task(
        name="task2",
        priority=0,  # Higher priority
        dependencies=[{"id": task1.id, "required": True}],  # But depends on Task 1!
    )
    root = TaskTreeNode(task2)
    root.add_child(TaskTreeNode(task1))
    run_sync(tm.distribute_task_tree(root))

    assert rec.events() == [("start", "task1"), ("end", "task1"),
                            ("start", "task2"), ("end", "task2")]
    t2, t1 = (n.task for n in root)
    assert (t1.status, t2.status) == ("completed", "completed")
    assert t2.inputs == {"from1": 1}


def test_tutorial_part8_pattern1_sequential(rec):
    rec.add("task1", {"n": 1})
    rec.add("task2", lambda i: {"n": i["n"] + 1})
    rec.add("task3", lambda i: {"n": i["n"] + 1})
    tm, create_task = sync_manager()
    task1 = create_task(name="task1")  # completed: the page never creates task1
    # completed: the page's create_task(...) calls have no name (the executor id)
    task2 = create_task(name="task2", dependencies=[{"id": task1.id, "required": True}])
    task3 = create_task(name="task3", dependencies=[{"id": task2.id, "required": True}])
    root = TaskTreeNode(task3)
    root.add_child(TaskTreeNode(task2))
    root.add_child(TaskTreeNode(task1))
    run_sync(tm.distribute_task_tree(root))

    assert rec.starts() == ["task1", "task2", "task3"]
    assert rec.before("task1", "task2") and rec.before("task2", "task3")
    assert root.task.result == {"n": 3}


def test_tutorial_part8_pattern2_fan_in(rec):
    for i in (1, 2, 3):
        rec.add(f"task{i}", {f"v{i}": i})
    rec.add("final_task", lambda i: {"sum": i["v1"] + i["v2"] + i["v3"]})
    tm, create_task = sync_manager()
    # completed: task1..3 are not created on the page; final has no name there
    task1, task2, task3 = (create_task(name=f"task{i}") for i in (1, 2, 3))
    final = create_task(
        name="final_task",
        dependencies=[
            {"id": task1.id, "required": True},
            {"id": task2.id, "required": True},
            {"id": task3.id, "required": True}
        ]
    )
    run_sync(tm.distribute_task_tree(TaskTreeNode(final)))  # completed: the run

    # task1..3 are not in the tree: found in the store through final's dependencies
    assert sorted(rec.starts()[:3]) == ["task1", "task2", "task3"]
    assert rec.starts()[3] == "final_task"
    assert [r.status for r in rows(tm, task1, task2, task3, final)] == ["completed"] * 4
    assert rows(tm, final)[0].result == {"sum": 6}


def test_tutorial_part8_pattern3_fan_out(rec):
    rec.add("root_task", {"seed": 7})
    for i in (1, 2, 3):
        rec.add(f"task{i}", lambda inp, i=i: {f"out{i}": inp["seed"] * i})
    tm, create_task = sync_manager()
    root_task = create_task(name="root_task")  # completed: root_task is not created there
    task1 = create_task(name="task1", dependencies=[{"id": root_task.id, "required": True}])
    task2 = create_task(name="task2", dependencies=[{"id": root_task.id, "required": True}])
    task3 = create_task(name="task3", dependencies=[{"id": root_task.id, "required": True}])
    tree = TaskTreeNode(root_task)  # completed: the tree and the run
    for t in (task1, task2, task3):
        tree.add_child(TaskTreeNode(t))
    run_sync(tm.distribute_task_tree(tree))

    assert rec.starts()[0] == "root_task"
    for i in (1, 2, 3):
        assert rec.before("root_task", f"task{i}")
        assert rec.inputs(f"task{i}") == {"seed": 7}
    assert [n.task.result for n in tree][1:] == [{"out1": 7}, {"out2": 14}, {"out3": 21}]


def test_tutorial_part8_pattern4_conditional(rec):
    rec.add("primary", fail="primary down")
    rec.add("fallback", {"value": "from fallback"})
    rec.add("final", lambda i: {"used": i.get("value")})
    tm, create_task = sync_manager()
    # completed: primary and fallback (the first fails); final has no name on the page
    primary = create_task(name="primary")
    fallback = create_task(name="fallback")
    final = create_task(
        name="final",
        dependencies=[
            {"id": primary.id, "required": False},  # Optional
            {"id": fallback.id, "required": False}   # Optional
        ]
    )
    run_sync(tm.distribute_task_tree(TaskTreeNode(final)))

    p, f, fin = rows(tm, primary, fallback, final)
    assert (p.status, f.status, fin.status) == ("failed", "completed", "completed")
    assert rec.before("primary", "final") and rec.before("fallback", "final")
    assert fin.result == {"used": "from fallback"}


def test_tutorial_part10_mistake1_circular_dependency_is_refused():
    tm, create_task = sync_manager()
    # the page's order cannot run as written (task2 does not exist when task1 is made):
    # pipeflow refuses the missing id at once
    with pytest.raises(TaskNotFoundError, match="no task has the id 'task2'"):
        create_task(name="task1", dependencies=[{"id": "task2"}])
    # completed: the cycle made the only way it can be, by changing task1 afterwards
    task1 = create_task(name="task1")
    task2 = create_task(name="task2", dependencies=[{"id": task1.id}])  # Circular!
    with pytest.raises(CycleError, match=f"{task1.id} -> {task2.id} -> {task1.id}"):
        run_sync(tm.task_repository.update_task(task1.id, dependencies=[{"id": task2.id}]))
    assert rows(tm, task1)[0].dependencies == []  # nothing was changed


def test_tutorial_part10_mistake2_missing_dependency_is_refused():
    tm, create_task = sync_manager()
    # Wrong: Task depends on task that doesn't exist ("This will cause errors!")
    with pytest.raises(TaskNotFoundError,
                       match="a dependency of task 'task2' does not exist: no task has the id "
                             "'nonexistent_task'"):
        create_task(name="task2", dependencies=[{"id": "nonexistent_task", "required": True}])
    assert run_sync(tm.task_repository.query_tasks()) == []  # nothing was stored


def test_tutorial_part10_mistake3_parent_child_does_not_order(rec):
    rec.add_all(["parent", "child", "free_child"])
    tm, create_task = sync_manager()
    parent = create_task(name="parent")  # completed: parent is not created on the page
    # Wrong: Thinking parent-child controls execution (it does not: run with the parent
    # failing, the free child still runs)
    free = create_task(name="free_child", parent_id=parent.id)
    # Right: Use dependencies
    child = create_task(
        name="child",
        parent_id=parent.id,  # Organizational
        dependencies=[{"id": parent.id, "required": True}]  # Execution order
    )
    tree = run_sync(tm.task_repository.build_task_tree(parent))
    run_sync(tm.distribute_task_tree(tree))

    assert rec.before("parent", "child")
    assert [r.status for r in rows(tm, parent, free, child)] == ["completed"] * 3
    assert rec.inputs("child") == {"parent_out": "parent ok"}


def test_tutorial_part11_debugging_snippets(rec, capsys):
    rec.add("fetch_data", fail="connection refused")
    rec.add("load_config", {"cfg": 1})
    rec.add("process_data")
    tm, create_task = sync_manager()
    # completed: a task whose required dependency failed (the page's "stuck in pending")
    fetch = create_task(name="fetch_data")
    config = create_task(name="load_config")
    process = create_task(name="process_data", dependencies=[
        {"id": fetch.id, "required": True}, {"id": config.id, "required": True}])
    run_sync(tm.distribute_task_tree(TaskTreeNode(process)))
    task_id = process.id
    capsys.readouterr()

    async def check_dependency_status():
        # After execution, check if dependencies were satisfied
        task = await tm.task_repository.get_task_by_id(task_id)

        print(f"Task status: {task.status}")
        print(f"Dependencies: {task.dependencies}")

        # Check each dependency
        for dep in task.dependencies:
            dep_task = await tm.task_repository.get_task_by_id(dep["id"])
            print(f"Dependency {dep['id']}: {dep_task.status}")
            if dep_task.status == "failed":
                print(f"  Error: {dep_task.error}")

    asyncio.run(check_dependency_status())
    deps = [{"id": fetch.id, "required": True}, {"id": config.id, "required": True}]
    assert capsys.readouterr().out.splitlines() == [
        "Task status: pending",
        f"Dependencies: {deps}",
        f"Dependency {fetch.id}: failed",
        "  Error: connection refused",
        f"Dependency {config.id}: completed",
    ]

    async def why_pending():
        # Check task status
        task = await tm.task_repository.get_task_by_id(task_id)
        print(f"Status: {task.status}")

        # Check dependencies
        for dep in task.dependencies:
            dep_task = await tm.task_repository.get_task_by_id(dep["id"])
            print(f"Dependency {dep['id']}: {dep_task.status}")

    asyncio.run(why_pending())
    assert capsys.readouterr().out.splitlines() == [
        "Status: pending", f"Dependency {fetch.id}: failed",
        f"Dependency {config.id}: completed"]
    assert rec.starts().count("process_data") == 0


def test_tutorial_part9_required_is_the_default(rec):
    rec.add("task1", fail="down")
    rec.add_all(["default_dep", "optional_dep"])
    tm, create_task = sync_manager()
    task1 = create_task(name="task1")  # completed: task1, two dependents and a run
    # "dependencies=[{"id": task1.id, "required": True}]  # Default": leaving it out
    default = create_task(name="default_dep", dependencies=[{"id": task1.id}])
    # "Only use optional when needed"
    optional = create_task(name="optional_dep",
                           dependencies=[{"id": task1.id, "required": False}])  # fallbacks
    assert default.dependencies == [{"id": task1.id, "required": True}]
    run_sync(tm.distribute_task_tree(TaskTreeNode(default)))
    run_sync(tm.distribute_task_tree(TaskTreeNode(optional)))
    t1, d, o = rows(tm, task1, default, optional)
    assert (t1.status, d.status, o.status) == ("failed", "pending", "completed")
    # the second run ran task1 again (a re-run of a failed task): it failed again
    assert rec.starts() == ["task1", "task1", "optional_dep"]
