"""The task repository: creating, reading, changing and deleting stored tasks.

Every call commits at once. What a task may hold is checked here, before anything is
stored: its name, priority and status, its dependencies (each must exist; no cycle), its
parent (must exist), its inputs (JSON).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from pipeflow.errors import CycleError, ParameterError, TaskNotFoundError, did_you_mean
from pipeflow.trees import model as m
from pipeflow.trees.node import TaskTreeNode
from pipeflow.trees.store import TaskStore, now

#: fields create_task takes besides name
_CREATE = tuple(f for f in m.FIELDS if f != "name")
#: fields update_task may change
_UPDATE = tuple(f for f in m.FIELDS if f not in ("id", "created_at"))


class TaskRepository:
    """Stored tasks: ``create_task``, ``get_task_by_id``, ``update_task`` and the rest.

    Args:
        db: the task store (from :func:`~pipeflow.trees.create_session`).

    Example:
        >>> repo = TaskManager(create_session()).task_repository      # doctest: +SKIP
        >>> t = await repo.create_task(name="fetch_data", inputs={"n": 1})  # doctest: +SKIP
    """

    def __init__(self, db: TaskStore) -> None:
        if not isinstance(db, TaskStore):
            raise ParameterError(
                f"the task repository needs the session from create_session(), not {db!r}.")
        self.db = db

    # -- create ----------------------------------------------------------------------------------
    async def create_task(self, name: str, **fields: Any) -> m.TaskModel:
        """Store a new task and return it.

        Args:
            name: its executor id (see :func:`~pipeflow.trees.executor`).
            **fields: any task field: ``user_id``, ``parent_id``, ``priority`` (default 2),
                ``dependencies``, ``inputs``, ``params``, ``schemas``, ``id`` (default a
                new uuid4), ``status``...

        Raises:
            ParameterError: an unknown field (with a did-you-mean), a bad value, inputs
                that are not JSON, an id in use.
            TaskNotFoundError: a dependency or the parent does not exist.
        """
        return self.create_now(name, **fields)

    def create_now(self, name: str, **fields: Any) -> m.TaskModel:
        """:meth:`create_task`, without ``await`` (for synchronous code)."""
        return self.db.insert(self.checked_new(name, fields))

    def checked_new(self, name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A new task's fields, checked and completed with defaults."""
        unknown = [k for k in fields if k not in _CREATE]
        if unknown:
            raise ParameterError(
                f"create_task() got an unknown field {unknown[0]!r}."
                f"{did_you_mean(unknown[0], _CREATE)} A task's fields: "
                f"{', '.join(m.FIELDS)}.")
        name = m.check_name(name)
        task_id = fields.get("id") or str(uuid.uuid4())
        if not isinstance(task_id, str):
            raise ParameterError(f"a task id is a string, not {task_id!r}.")
        who = f"task {name!r}"
        fields = {k: _check_field(k, v, who) for k, v in fields.items()}
        stamp = now()
        out: dict[str, Any] = {
            "id": task_id, "name": name, "user_id": fields.get("user_id"),
            "parent_id": fields.get("parent_id"),
            "priority": m.check_priority(fields.get("priority", m.DEFAULT_PRIORITY), who),
            "dependencies": m.check_dependencies(fields.get("dependencies"), who),
            "inputs": m.check_json(fields.get("inputs") or {}, "inputs", who),
            "params": m.check_json(fields.get("params"), "params", who),
            "schemas": m.check_json(fields.get("schemas"), "schemas", who),
            "result": m.check_json(fields.get("result"), "result", who),
            "error": fields.get("error"),
            "status": m.check_status(fields.get("status", m.PENDING), who),
            "progress": float(fields.get("progress") or 0.0),  # checked above
            "created_at": fields.get("created_at") or stamp,
            "updated_at": fields.get("updated_at") or stamp,
            "started_at": fields.get("started_at"),
            "completed_at": fields.get("completed_at"),
            "has_children": bool(fields.get("has_children", False)),
            "task_tree_id": fields.get("task_tree_id"),
            "original_task_id": fields.get("original_task_id"),
            "origin_type": fields.get("origin_type") or "create",
            "has_references": bool(fields.get("has_references", False)),
        }
        if not isinstance(out["inputs"], Mapping):
            raise ParameterError(f"inputs of {who} must be a dict, not {out['inputs']!r}.")
        if out["user_id"] is not None and not isinstance(out["user_id"], str):
            raise ParameterError(f"user_id of {who} must be a string, not {out['user_id']!r}.")
        if out["origin_type"] not in m.ORIGINS:
            raise ParameterError(f"origin_type of {who} must be one of "
                                 f"{', '.join(m.ORIGINS)}, not {out['origin_type']!r}.")
        if any(d["id"] == task_id for d in out["dependencies"]):
            raise CycleError(f"{who} (id {task_id!r}) depends on itself.", [task_id, task_id])
        self._check_exist([d["id"] for d in out["dependencies"]], who, "a dependency")
        if out["parent_id"] is not None:
            self._check_exist([out["parent_id"]], who, "the parent")
        return out

    def _check_exist(self, ids: list[str], who: str, what: str) -> None:
        if not ids:
            return
        found = self.db.existing(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise TaskNotFoundError(
                f"{what} of {who} does not exist: no task has the id {missing[0]!r} in the "
                f"task store.{did_you_mean(missing[0], self.db.ids())} Create that task "
                f"first and use its .id.", missing[0])

    # -- read ------------------------------------------------------------------------------------
    async def get_task_by_id(self, task_id: str) -> m.TaskModel | None:
        """The task (a fresh snapshot), or None if there is none."""
        return self.db.get(task_id_of(task_id))

    async def get_tasks_by_ids(self, task_ids: Iterable[str]) -> list[m.TaskModel]:
        """The tasks that exist among ``task_ids``, in that order."""
        if isinstance(task_ids, (str, bytes)):
            raise ParameterError(
                f"get_tasks_by_ids() takes a list of ids, not the single id {task_ids!r}: "
                f"get_tasks_by_ids([{task_ids!r}]) (or get_task_by_id).")
        ids = [task_id_of(i) for i in task_ids]
        found = self.db.many(ids)
        return [found[i] for i in ids if i in found]

    async def query_tasks(self, limit: int | None = None, offset: int = 0,
                          **where: Any) -> list[m.TaskModel]:
        """Tasks whose fields equal ``where`` (e.g. ``user_id='u1', status='failed'``)."""
        return self.db.query(where, limit, offset)

    async def get_child_tasks(self, task_id: str) -> list[m.TaskModel]:
        """The tasks whose parent is ``task_id``, oldest first."""
        return self.db.children([task_id_of(task_id)])

    async def get_root_task(self, task: m.TaskModel | str) -> m.TaskModel:
        """The root of the stored tree ``task`` belongs to (following ``parent_id``)."""
        return self.root_of(task)

    def root_of(self, task: m.TaskModel | str) -> m.TaskModel:
        """:meth:`get_root_task`, without ``await``."""
        row = self.db.need(task.id if isinstance(task, m.TaskModel) else task_id_of(task))
        seen = {row.id}
        while row.parent_id:
            parent = self.db.get(row.parent_id)
            if parent is None or parent.id in seen:
                break
            seen.add(parent.id)
            row = parent
        return row

    async def build_task_tree(self, task: m.TaskModel | str) -> TaskTreeNode:
        """The stored tree under ``task`` (its ``parent_id`` descendants) as nodes."""
        return self.tree_of(task)

    def tree_of(self, task: m.TaskModel | str) -> TaskTreeNode:
        """:meth:`build_task_tree`, without ``await``."""
        root = TaskTreeNode(self.db.need(
            task.id if isinstance(task, m.TaskModel) else task_id_of(task)))
        level = [root]
        seen = {root.task.id}
        while level:
            by_id = {n.task.id: n for n in level}
            nxt = []
            for child in self.db.children(list(by_id)):
                if child.id in seen:
                    continue
                seen.add(child.id)
                node = by_id[str(child.parent_id)].add_child(TaskTreeNode(child))
                nxt.append(node)
            level = nxt
        return root

    async def get_all_tasks_in_tree(self, task: m.TaskModel | str) -> list[m.TaskModel]:
        """Every task of the stored tree ``task`` belongs to, root first."""
        return self.tree_of(self.root_of(task)).to_list()

    # -- change ----------------------------------------------------------------------------------
    async def update_task(self, task_id: str, **fields: Any) -> m.TaskModel:
        """Change fields of a task and return it.

        Raises:
            TaskNotFoundError: there is no such task.
            ParameterError: an unknown field or a bad value.
            CycleError: new dependencies would make a cycle (the message gives it).
        """
        return self.update_now(task_id, **fields)

    def update_now(self, task_id: str, **fields: Any) -> m.TaskModel:
        """:meth:`update_task`, without ``await``."""
        task = self.db.need(task_id_of(task_id))
        who = f"task {task.name!r} ({task_id})"
        unknown = [k for k in fields if k not in _UPDATE]
        if unknown:
            raise ParameterError(
                f"update_task() cannot change {unknown[0]!r}."
                f"{did_you_mean(unknown[0], _UPDATE)} It changes: {', '.join(_UPDATE)}.")
        if task.origin_type == "archive":
            raise ParameterError(
                f"{who} is an archive: archives are read-only. Copy it "
                f"(TaskCreator.from_copy) to change or run it again.")
        checked: dict[str, Any] = {}
        for name, value in fields.items():
            value = _check_field(name, value, who)
            if name == "dependencies":
                self._check_exist([d["id"] for d in value], who, "a dependency")
                self._check_no_cycle(task_id, value, who)
            elif name == "parent_id" and value is not None:
                if value == task_id:
                    raise ParameterError(f"{who} cannot be its own parent.")
                self._check_exist([value], who, "the parent")
                self._check_no_parent_cycle(task_id, value, who)
            checked[name] = value
        if checked.get("status") == m.PENDING and "error" not in checked:
            checked["error"] = None
        self.db.update(task_id, checked)
        return self.db.need(task_id)

    def _check_no_parent_cycle(self, task_id: str, parent_id: str, who: str) -> None:
        """Refuse a parent that is ``task_id`` itself or one of its descendants."""
        chain = [task_id, parent_id]
        seen = set(chain)
        row = self.db.get(parent_id)
        while row is not None and row.parent_id:
            if row.parent_id == task_id:
                chain.append(task_id)
                raise CycleError(
                    f"{who} would be its own ancestor: {' -> '.join(chain)}. A task's parent "
                    f"cannot be one of its descendants; pick another parent or None.", chain)
            if row.parent_id in seen:  # an older cycle above: stop
                break
            chain.append(row.parent_id)
            seen.add(row.parent_id)
            row = self.db.get(row.parent_id)

    def _check_no_cycle(self, task_id: str, deps: list[dict[str, Any]], who: str) -> None:
        """Refuse dependencies through which ``task_id`` would depend on itself."""
        came: dict[str, str | None] = {}
        stack: list[str] = []
        for d in deps:
            if d["id"] not in came:
                came[d["id"]] = None
                stack.append(d["id"])
        while stack:  # level by level: one read per level, not one per task
            if task_id in stack:
                back = [task_id]
                while came[back[-1]] is not None:
                    back.append(came[back[-1]])  # type: ignore[arg-type]
                cycle = [task_id, *reversed(back)]
                raise CycleError(
                    f"{who} would depend on itself through its dependencies, so it could "
                    f"never run: {' -> '.join(cycle)}. Remove one of these dependencies.",
                    cycle)
            found = self.db.dependencies_of(stack)
            level, stack = stack, []
            for cur in level:
                for d in found.get(cur, ()):
                    if d["id"] not in came:
                        came[d["id"]] = cur
                        stack.append(d["id"])

    async def delete_task(self, task_id: str) -> bool:
        """Delete a task; False if there was none.

        Raises:
            ParameterError: other tasks depend on it or are its children.
        """
        return self.delete_now(task_id)

    def delete_now(self, task_id: str) -> bool:
        """:meth:`delete_task`, without ``await``."""
        if self.db.get(task_id_of(task_id)) is None:
            return False
        kids = self.db.children([task_id])
        if kids:
            raise ParameterError(
                f"task {task_id!r} has {len(kids)} child task(s) (e.g. {kids[0].id!r}); "
                f"delete them first.")
        users = [t for t in self.db.query({}) if any(d["id"] == task_id
                                                     for d in t.dependencies)]
        if users:
            raise ParameterError(
                f"task {users[0].id!r} depends on task {task_id!r}; change its dependencies "
                f"(update_task) before deleting it.")
        return self.db.delete(task_id)


def _check_field(name: str, value: Any, who: str) -> Any:
    """One task field as given to ``create_task`` or ``update_task``, checked.

    Raises:
        ParameterError: what the field may not hold, said with the field and the task.
    """
    if name == "name":
        return m.check_name(value)
    if name == "priority":
        return m.check_priority(value, who)
    if name == "status":
        return m.check_status(value, who)
    if name == "dependencies":
        return m.check_dependencies(value, who)
    if name == "inputs":
        value = m.check_json({} if value is None else value, name, who)
        if not isinstance(value, Mapping):
            raise ParameterError(
                f"inputs of {who} must be a dict, not {value!r}.")
        return value
    if name == "params":
        m.check_run_params(m.check_json(value, name, who), who)
        return value
    if name in m.JSON_FIELDS:
        return m.check_json(value, name, who)
    if name == "progress":
        return 0.0 if value is None else m.check_progress(value, who)
    if name in m.TIME_FIELDS:
        return m.check_time(value, name, who)
    if name in ("id", "parent_id", "task_tree_id", "original_task_id"):
        return m.check_text(value, name, who, kind="a task id (a string)")
    if name in ("user_id", "error"):
        return m.check_text(value, name, who)
    if name == "origin_type":
        if value not in m.ORIGINS:
            raise ParameterError(f"origin_type of {who} must be one of "
                                 f"{', '.join(m.ORIGINS)}, not {value!r}.")
        return value
    if name in ("has_children", "has_references"):
        if not isinstance(value, bool):
            raise ParameterError(f"{name} of {who} must be True or False, not {value!r}.")
        return value
    return value


def task_id_of(task_id: object) -> str:
    """``task_id`` if it is a task id (a string), else a clear error."""
    if not isinstance(task_id, str):
        raise ParameterError(
            f"a task id is a string, not {task_id!r}: pass task.id (e.g. "
            f"get_task_by_id(task.id)).")
    return m.check_text(task_id, "id", "a task")  # type: ignore[return-value]
