"""A task tree as the caller builds it: :class:`TaskTreeNode`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeflow.errors import ParameterError
from pipeflow.trees import model as m


class TaskTreeNode:
    """A stored task and its child nodes: what ``distribute_task_tree`` runs.

    The tree is the set of tasks to run; parent and child never order anything (only
    dependencies do).

    Args:
        task: a :class:`~pipeflow.trees.TaskModel` (from ``create_task``).

    Example:
        >>> root = TaskTreeNode(fetch)                 # doctest: +SKIP
        >>> root.add_child(TaskTreeNode(process))      # doctest: +SKIP
        >>> [n.task.name for n in root]                # doctest: +SKIP
        ['fetch_data', 'process_data']
    """

    def __init__(self, task: m.TaskModel) -> None:
        if not isinstance(task, m.TaskModel):
            raise ParameterError(
                f"TaskTreeNode takes a task made by task_repository.create_task(), not "
                f"{task!r}.")
        self.task = task
        self.children: list[TaskTreeNode] = []

    def add_child(self, child: TaskTreeNode) -> TaskTreeNode:
        """Add ``child`` under this node; returns it."""
        if not isinstance(child, TaskTreeNode):
            raise ParameterError(
                f"add_child() takes a TaskTreeNode, not {child!r}: add_child(TaskTreeNode(task)).")
        if any(n is self for n in child):
            raise ParameterError("add_child() would put a node under itself.")
        self.children.append(child)
        return child

    def remove_child(self, child: TaskTreeNode) -> None:
        """Take ``child`` out of this node's children."""
        self.children.remove(child)

    def has_children(self) -> bool:
        """Whether the node has children."""
        return bool(self.children)

    def __iter__(self) -> Iterator[TaskTreeNode]:
        """The nodes, this one first, depth first (pre-order)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def to_list(self) -> list[m.TaskModel]:
        """The tasks, pre-order."""
        return [n.task for n in self]

    def to_mapping(self) -> dict[str, Any]:
        """The tree as nested dicts: the task's fields and ``children``."""
        out = self.task.to_dict()
        out["children"] = [c.to_mapping() for c in self.children]
        return out

    to_dict = to_mapping

    def calculate_status(self) -> str:
        """The tree's status: a node with children reports its children only.

        All completed: completed; any failed: failed; any in progress: in_progress; else
        pending.
        """
        if not self.children:
            return self.task.status
        states = [c.calculate_status() for c in self.children]
        if all(s == m.COMPLETED for s in states):
            return m.COMPLETED
        if m.FAILED in states:
            return m.FAILED
        if m.IN_PROGRESS in states:
            return m.IN_PROGRESS
        return m.PENDING

    def calculate_progress(self) -> float:
        """The mean progress of the children (recursively); a leaf's own progress."""
        if not self.children:
            return float(self.task.progress or 0.0)
        return sum(c.calculate_progress() for c in self.children) / len(self.children)

    def __repr__(self) -> str:
        return f"TaskTreeNode({self.task!r}, children={len(self.children)})"
