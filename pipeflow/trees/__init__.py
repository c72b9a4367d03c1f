"""apflow-style task trees on pipeflow's engine.

Tasks made as data at run time (from a service, a queue, a notebook), named by an
executor id, with inputs, dependencies (``{"id": ..., "required": bool}``), an
organisational ``parent_id`` and a ``user_id``; kept in a task store (an SQLite file) and
run as a tree by the same engine that runs task classes.

Example:
    >>> from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor
    >>> @executor("fetch_data")
    ... def fetch_data(inputs):
    ...     return {"rows": 3}
    >>> async def main():                                          # doctest: +SKIP
    ...     tm = TaskManager(create_session())
    ...     t = await tm.task_repository.create_task(name="fetch_data", inputs={})
    ...     await tm.distribute_task_tree(TaskTreeNode(t))
    ...     return (await tm.task_repository.get_task_by_id(t.id)).result
"""

from pipeflow.trees.creator import TaskCreator
from pipeflow.trees.executors import ExecutorSpec, executor, system_info_executor
from pipeflow.trees.manager import StreamingCallbacks, TaskManager, create_session, run_sync
from pipeflow.trees.model import STATUSES, TaskModel
from pipeflow.trees.node import TaskTreeNode
from pipeflow.trees.repository import TaskRepository
from pipeflow.trees.store import TaskStore

__all__ = ["STATUSES", "ExecutorSpec", "StreamingCallbacks", "TaskCreator", "TaskManager",
           "TaskModel", "TaskRepository", "TaskStore", "TaskTreeNode", "create_session",
           "executor", "run_sync", "system_info_executor"]
