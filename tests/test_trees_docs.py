import asyncio, time
import pytest
from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor
from pipeflow.trees import executors as registry

def test_a_tree_task_timeout_says_where_its_timeout_is_set(tmp_path):
    @executor("docs-slow", timeout=0.2)
    def slow(inputs):
        for _ in range(100):
            time.sleep(0.02)
    try:
        tm = TaskManager(create_session(tmp_path / "t.db"))
        t = tm.task_repository.create_now("docs-slow")
        asyncio.run(tm.distribute_task_tree(TaskTreeNode(t)))
        row = tm.db.get(t.id)
    finally:
        registry.unregister("docs-slow")
    assert row.status == "failed"
    assert "ran longer than its timeout of 0.2s" in row.error
    assert "TreeTask.timeout" not in row.error
    assert "@executor('docs-slow', timeout=...) or the task's params['timeout']" in row.error
