"""New trees made from stored ones: copies, links, archives (:class:`TaskCreator`).

apflow's ``TaskCreator`` with its names and keyword options:

* :meth:`TaskCreator.from_copy`: new tasks to run again (status ``pending``, no result);
* :meth:`TaskCreator.from_link`: new tasks that share a completed tree's results;
* :meth:`TaskCreator.from_archive`: a frozen, read-only copy of a completed tree;
* :meth:`TaskCreator.from_mixed`: links for the ids named, copies for the rest.

What is copied is the source task and, with ``_recursive``, its *stored* subtree (the
tasks whose ``parent_id`` chain leads to it). The source's stored tree (from its root) is
the scope in which dependencies are followed: ``_auto_include_deps`` adds the tasks of
that tree the selection depends on, ``_include_dependents`` the tasks of that tree that
depend on the selection. A dependency on a task outside the new tree's tasks (another
stored tree) is dropped. Every new task gets a new id; parents and dependencies are
remapped to the new ids; the copy of the source is the new root (``parent_id`` None) and
a task whose parent was not copied is put under it.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pipeflow.errors import LinkDeniedError, ParameterError, TaskNotFoundError, did_you_mean
from pipeflow.trees import model as m
from pipeflow.trees.node import TaskTreeNode
from pipeflow.trees.repository import TaskRepository
from pipeflow.trees.store import TaskStore, now

#: fields an override may set, on every task made (data ones: copies only)
OVERRIDES = ("name", "user_id", "priority", "inputs", "params", "schemas")
#: overrides a link takes (a link holds no inputs, params or schemas of its own)
LINK_OVERRIDES = ("name", "user_id", "priority")
#: the state a link or an archive keeps from its source
_KEEP_STATE = ("status", "error", "progress", "started_at", "completed_at")

#: what each way does, for messages
_VERB = {"copy": "copy", "link": "link", "archive": "archive", "mixed": "copy"}
_DONE = {"link": "linked", "archive": "archived"}
#: how far a chain of links is followed (links are made to non-links, so 1 is usual)
_MAX_LINK_DEPTH = 100


class TaskCreator:
    """Makes new trees from stored ones: copies, links, archives, and a mix of them.

    Args:
        db: the task store (from :func:`~pipeflow.trees.create_session`).

    Example:
        >>> creator = TaskCreator(create_session())                     # doctest: +SKIP
        >>> again = await creator.from_copy(root_task, user_id="u2")    # doctest: +SKIP
        >>> await TaskManager(db).distribute_task_tree(again)           # doctest: +SKIP
    """

    def __init__(self, db: TaskStore) -> None:
        if not isinstance(db, TaskStore):
            raise ParameterError(
                f"TaskCreator needs the session from create_session(), not {db!r}: "
                f"TaskCreator(create_session()).")
        self.db = db
        self.task_repository = TaskRepository(db)

    # -- the four ways ---------------------------------------------------------------------------
    async def from_copy(self, _original_task: m.TaskModel | str, _save: bool = True,
                        _recursive: bool = True, _auto_include_deps: bool = True,
                        _include_dependents: bool = False, **overrides: Any
                        ) -> TaskTreeNode:
        """Copy a task (and its subtree) as new tasks to run again.

        The copies have new ids, the source's name, inputs, params, schemas, user_id and
        priority, and a fresh state: status ``pending``, result, error and timestamps
        None, progress 0. ``origin_type`` is ``'copy'``, ``original_task_id`` the source's
        id; the source gets ``has_references=True``. Works on trees in any state.

        Args:
            _original_task: the task to copy (or its id).
            _save: store the copies (False: return them unsaved, see
                :meth:`save_task_tree`).
            _recursive: copy its stored subtree too (False: the task alone, without
                dependencies).
            _auto_include_deps: also copy the tasks of its stored tree that the copied
                ones depend on (False: such a dependency is an error).
            _include_dependents: also copy the tasks of its stored tree that depend on the
                copied ones.
            **overrides: fields set on every copy: ``name``, ``user_id``, ``priority``,
                ``inputs``, ``params``, ``schemas``.

        Returns:
            The new tree (its root is the copy of ``_original_task``).

        Raises:
            TaskNotFoundError: the task is not in the store.
            ParameterError: a bad override, or a dependency outside the subtree with
                ``_auto_include_deps=False``.
        """
        return self._make(_original_task, "copy", _save, _recursive, _auto_include_deps,
                          _include_dependents, overrides, ())

    async def from_link(self, _original_task: m.TaskModel | str, _save: bool = True,
                        _recursive: bool = True, _auto_include_deps: bool = True,
                        _include_dependents: bool = False, **overrides: Any
                        ) -> TaskTreeNode:
        """Link a completed task (and its subtree): new tasks sharing its results.

        A link has a new id, ``origin_type='link'``, ``original_task_id`` the task it
        stands for (a link of a link stands for the first one's original), the source's
        status (``completed``), and no data of its own: its row holds no inputs, params,
        schemas or result. Reading its ``result`` gives the original's (resolved by the
        task store when read).

        Args:
            _original_task: the task to link (or its id); every task linked must be
                completed.
            _save, _recursive, _auto_include_deps, _include_dependents: as
                :meth:`from_copy`.
            **overrides: ``name``, ``user_id``, ``priority``. With ``user_id=``, every
                linked task must belong to that user.

        Returns:
            The new tree of links.

        Raises:
            ParameterError: a task to link is not completed, or a bad override.
            LinkDeniedError: ``user_id=`` differs from a linked task's user_id.
        """
        return self._make(_original_task, "link", _save, _recursive, _auto_include_deps,
                          _include_dependents, overrides, None)

    async def from_archive(self, _original_task: m.TaskModel | str, _save: bool = True,
                           _recursive: bool = True, _auto_include_deps: bool = True,
                           _include_dependents: bool = False) -> TaskTreeNode:
        """Archive a completed task (and its subtree): a frozen, read-only copy.

        The archive's tasks have new ids, ``origin_type='archive'``, ``original_task_id``
        set, and the source's data and state (status, result, error, progress,
        timestamps) as they are now. ``update_task`` refuses to change them and
        ``distribute_task_tree`` never runs them; copy an archive to run it again.

        Args:
            _original_task: the task to archive (or its id); every task archived must be
                completed.
            _save, _recursive, _auto_include_deps, _include_dependents: as
                :meth:`from_copy`.

        Returns:
            The archive's tree.

        Raises:
            ParameterError: a task to archive is not completed.
        """
        return self._make(_original_task, "archive", _save, _recursive, _auto_include_deps,
                          _include_dependents, {}, ())

    async def from_mixed(self, _original_task: m.TaskModel | str, _save: bool = True,
                         _recursive: bool = True, _link_task_ids: Iterable[str] | None = None,
                         _auto_include_deps: bool = True, _include_dependents: bool = False,
                         **overrides: Any) -> TaskTreeNode:
        """Copy a tree, linking the tasks named in ``_link_task_ids`` instead of copying them.

        Links and copies are made as by :meth:`from_link` and :meth:`from_copy`; a copy
        depending on a linked task gets the link's (the original's) result when it runs.

        Args:
            _original_task: the tree's task (or its id).
            _link_task_ids: ids of source tasks to link (each must be completed and among
                the tasks the new tree takes); the rest are copied. None or empty: all
                copied.
            _save, _recursive, _auto_include_deps, _include_dependents: as
                :meth:`from_copy`.
            **overrides: as :meth:`from_copy`; ``inputs``, ``params`` and ``schemas``
                apply to the copies only. With ``user_id=``, every linked task must belong
                to that user.

        Returns:
            The new tree.

        Raises:
            ParameterError: a linked task is not completed or not in the tree, a bad
                override.
            LinkDeniedError: ``user_id=`` differs from a linked task's user_id.
        """
        if _link_task_ids is None:
            links: tuple[str, ...] = ()
        elif isinstance(_link_task_ids, (str, bytes)) or not isinstance(
                _link_task_ids, Iterable):
            raise ParameterError(
                f"_link_task_ids is a list of task ids, not {_link_task_ids!r}: "
                f"_link_task_ids=[task.id].")
        else:
            links = tuple(_link_task_ids)
        return self._make(_original_task, "mixed", _save, _recursive, _auto_include_deps,
                          _include_dependents, overrides, links)

    async def save_task_tree(self, task_tree: TaskTreeNode) -> TaskTreeNode:
        """Store a tree made with ``_save=False`` (edited or not), in one transaction.

        Args:
            task_tree: the unsaved tree (its tasks' fields may have been changed).

        Returns:
            The tree as stored (fresh snapshots).

        Raises:
            ParameterError: a task of it is stored already, or holds a bad value.
        """
        if not isinstance(task_tree, TaskTreeNode):
            raise ParameterError(
                f"save_task_tree() takes the TaskTreeNode a from_*(..., _save=False) call "
                f"returned, not {task_tree!r}.")
        tasks = task_tree.to_list()
        stored = self.db.many(t.id for t in tasks)
        if stored:
            raise ParameterError(
                f"task {next(iter(stored))!r} of this tree is stored already: "
                f"save_task_tree() saves a tree made with _save=False, once.")
        ids = {t.id for t in tasks}
        rows = [_checked_row(t) for t in tasks]
        named = {(r["name"], r["id"], d["id"]) for r in rows for d in r["dependencies"]
                 if d["id"] not in ids}
        named |= {(r["name"], r["id"], r["parent_id"]) for r in rows
                  if r["parent_id"] is not None and r["parent_id"] not in ids}
        found = self.db.many(i for _, _, i in named)
        for name, task_id, missing in sorted(n for n in named if n[2] not in found):
            raise TaskNotFoundError(
                f"task {name!r} ({task_id}) names the task {missing!r} (a dependency or "
                f"its parent), which is neither in this tree nor in the task store. Fix it "
                f"before saving.", missing)
        referenced = [t.original_task_id for t in tasks if t.original_task_id]
        return self._store(rows, referenced, task_tree.task.id)

    # -- how ------------------------------------------------------------------------------------
    def _make(self, source: m.TaskModel | str, kind: str, save: bool, recursive: bool,
              auto_deps: bool, dependents: bool, overrides: Mapping[str, Any],
              links: Collection[str] | None) -> TaskTreeNode:
        """Make the new tree: ``kind`` is copy, link, archive or mixed (``links`` named)."""
        for flag, value in (("_save", save), ("_recursive", recursive),
                            ("_auto_include_deps", auto_deps),
                            ("_include_dependents", dependents)):
            if not isinstance(value, bool):
                raise ParameterError(f"{flag} is True or False, not {value!r}.")
        if isinstance(source, m.TaskModel):
            source_id = source.id
        elif isinstance(source, str):
            source_id = source
        else:
            raise ParameterError(
                f"from_{kind}() takes a task (from get_task_by_id or create_task) or its id, "
                f"not {source!r}.")
        over = _checked_overrides(kind, overrides)
        src = self.db.need(source_id)
        chosen = self._select(src, kind, recursive, auto_deps, dependents)
        if links is None:  # from_link: every task is a link
            links = [t.id for t in chosen]
        link_set = set(links)
        unknown = [i for i in links if i not in {t.id for t in chosen}]
        if unknown:
            raise ParameterError(
                f"_link_task_ids names {unknown[0]!r}, which is not among the "
                f"{len(chosen)} task(s) of the new tree."
                f"{did_you_mean(str(unknown[0]), [t.id for t in chosen])} Name ids of the "
                f"source tree's tasks.")
        if kind in ("link", "archive"):
            _all_completed(chosen, kind)
        elif link_set:
            _all_completed([t for t in chosen if t.id in link_set], "link")
        if link_set and "user_id" in over:
            _check_owner([t for t in chosen if t.id in link_set], over["user_id"])

        new_id = {t.id: str(uuid.uuid4()) for t in chosen}
        tree_id = new_id[src.id]
        stamp = now()
        originals = {t.id: self._original(t) for t in chosen}
        rows: list[dict[str, Any]] = []
        for t in chosen:
            as_link = t.id in link_set
            what = "link" if as_link else ("archive" if kind == "archive" else "copy")
            original = originals[t.id]
            data = original if t.origin_type == "link" else t  # a link's data is its original's
            deps = [{"id": new_id[d["id"]], "required": bool(d["required"])}
                    for d in t.dependencies if d["id"] in new_id]
            parent = None if t.id == src.id else new_id.get(str(t.parent_id), tree_id)
            row: dict[str, Any] = {
                "id": new_id[t.id], "name": t.name, "user_id": t.user_id,
                "parent_id": parent, "priority": t.priority, "dependencies": deps,
                "inputs": {}, "params": None, "schemas": None, "result": None,
                "error": None, "status": m.PENDING, "progress": 0.0,
                "created_at": stamp, "updated_at": stamp, "started_at": None,
                "completed_at": None, "has_children": False, "task_tree_id": tree_id,
                "original_task_id": original.id, "origin_type": what,
                "has_references": False,
            }
            if what == "link":  # the state is the original's; the data stays there
                row.update({f: getattr(t, f) for f in _KEEP_STATE})
            else:
                row["params"] = copy.deepcopy(data.params)
                row["schemas"] = copy.deepcopy(data.schemas)
                inputs = copy.deepcopy(dict(data.inputs or {}))
                if what == "copy":  # what a run merged in under a dependency's id
                    for d in (*t.dependencies, *data.dependencies):
                        inputs.pop(d["id"], None)
                else:
                    row.update({f: getattr(t, f) for f in _KEEP_STATE})
                    row["result"] = t.result
                row["inputs"] = inputs
            for field, value in over.items():
                if what != "link" or field in LINK_OVERRIDES:
                    row[field] = copy.deepcopy(value)
            rows.append(row)
        parents = {r["parent_id"] for r in rows}
        for r in rows:
            r["has_children"] = r["id"] in parents
        if save:
            return self._store(rows, [o.id for o in originals.values()], tree_id)
        return _tree([self._model(r) for r in rows], tree_id)

    def _select(self, source: m.TaskModel, kind: str, recursive: bool, auto_deps: bool,
                dependents: bool) -> list[m.TaskModel]:
        """The source tasks the new tree is made of, the source first, in tree order."""
        if not recursive:
            return [source]
        chosen = self.task_repository.tree_of(source).to_list()
        if source.parent_id is None:  # the whole stored tree: nothing of it is left out
            return chosen
        whole = self.task_repository.tree_of(self.task_repository.root_of(source)).to_list()
        by_id = {t.id: t for t in whole}
        inside = {t.id for t in chosen}
        if dependents:  # tasks of the stored tree depending on the subtree, transitively
            grew = True
            while grew:
                more = [t for t in whole if t.id not in inside
                        and any(d["id"] in inside for d in t.dependencies)]
                inside.update(t.id for t in more)
                grew = bool(more)
        while True:  # dependencies inside the stored tree but outside the selection
            outside = [(t, d["id"]) for t in whole if t.id in inside
                       for d in t.dependencies if d["id"] in by_id and d["id"] not in inside]
            if not outside:
                break
            if not auto_deps:
                t, dep = outside[0]
                raise ParameterError(
                    f"cannot {_VERB[kind]} the subtree of task {source.name!r} "
                    f"({source.id}) alone: task {t.name!r} ({t.id}) depends on "
                    f"{by_id[dep].name!r} ({dep}), which is outside it. Pass "
                    f"_auto_include_deps=True to take that task too, or _recursive=False to "
                    f"take the task alone.")
            inside.update(dep for _, dep in outside)
        first = {t.id for t in chosen}
        return chosen + [t for t in whole if t.id in inside and t.id not in first]

    def _original(self, task: m.TaskModel) -> m.TaskModel:
        """The task a new one stands for: ``task``, or for a link the task it links."""
        seen = {task.id}
        while task.origin_type == "link" and task.original_task_id:
            found = self.db.get(task.original_task_id)
            if found is None or found.id in seen or len(seen) > _MAX_LINK_DEPTH:
                break
            seen.add(found.id)
            task = found
        return task

    def _model(self, row: Mapping[str, Any]) -> m.TaskModel:
        """An unsaved task (a link reads its original's result, as a stored one does)."""
        loader = None
        if row["origin_type"] == "link" and row["result"] is None:
            loader = self.db.link_result_loader(row["id"], row["original_task_id"])
        return m.TaskModel(row, loader)

    def _store(self, rows: list[dict[str, Any]], referenced: list[str],
               root_id: str) -> TaskTreeNode:
        """Insert ``rows`` and mark ``referenced`` in one transaction; the stored tree."""
        self.db.insert_many(rows, referenced=referenced)
        fresh = self.db.many(r["id"] for r in rows)
        return _tree([fresh[r["id"]] for r in rows], root_id)


# -- helpers ---------------------------------------------------------------------------------------

def _checked_overrides(kind: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides, checked as create_task checks those fields."""
    allowed = LINK_OVERRIDES if kind == "link" else OVERRIDES
    out: dict[str, Any] = {}
    who = f"the {kind} override"
    for name, value in overrides.items():
        if name not in allowed:
            if name in OVERRIDES:
                raise ParameterError(
                    f"from_link() cannot set {name}: a link holds no {name} of its own (it "
                    f"shares its original's). Copy the task (from_copy) to change its {name}.")
            if name in m.FIELDS or name.lstrip("_") in m.FIELDS:
                raise ParameterError(
                    f"from_{kind}() sets {name!r} itself; it takes as overrides only "
                    f"{', '.join(allowed)}. Change {name} afterwards with update_task() "
                    f"(copies only).")
            raise ParameterError(
                f"from_{kind}() got an unknown keyword {name!r}."
                f"{did_you_mean(name, [*allowed, '_save', '_recursive', '_auto_include_deps', '_include_dependents', '_link_task_ids'])}"  # noqa: E501
                f" Overrides are task fields set on every new task: {', '.join(allowed)}.")
        if name == "name":
            value = m.check_name(value)
        elif name == "priority":
            value = m.check_priority(value, who)
        elif name == "user_id":
            if value is not None and not isinstance(value, str):
                raise ParameterError(f"user_id of {who} must be a string, not {value!r}.")
        elif name == "inputs":
            value = m.check_json(value or {}, "inputs", who)
            if not isinstance(value, Mapping):
                raise ParameterError(f"inputs of {who} must be a dict, not {value!r}.")
        else:
            value = m.check_json(value, name, who)
        out[name] = value
    return out


def _all_completed(tasks: list[m.TaskModel], kind: str) -> None:
    """Refuse to link or archive a task that is not completed (naming a failed one first)."""
    rank = {m.FAILED: 0, m.CANCELLED: 0, m.IN_PROGRESS: 1}
    unfinished = sorted((t for t in tasks if t.status != m.COMPLETED),
                        key=lambda t: rank.get(t.status, 2))
    if unfinished:
        t = unfinished[0]
        more = (f" (and {len(unfinished) - 1} other task(s) are not completed)"
                if len(unfinished) > 1 else "")
        raise ParameterError(
            f"only a fully completed task tree can be {_DONE[kind]}: task {t.name!r} ({t.id}) "
            f"is {t.status}{more}. Run the tree until every task completed, or copy it "
            f"(from_copy), which works in any state.")


def _check_owner(tasks: list[m.TaskModel], user_id: str | None) -> None:
    """Refuse links for ``user_id`` to tasks of another user (apflow's rule)."""
    for t in tasks:
        if t.user_id != user_id:
            raise LinkDeniedError(
                f"Deny linking to a different user's task: task {t.name!r} ({t.id}) belongs "
                f"to user {t.user_id!r}, not {user_id!r}. A link shares its original's "
                f"result, so only tasks of the user_id given can be linked: leave user_id= "
                f"out to keep the owner's, or copy the task (from_copy) for this user.")


def _checked_row(task: m.TaskModel) -> dict[str, Any]:
    """The fields of an unsaved task, checked (save_task_tree)."""
    who = f"task {task.name!r} ({task.id})"
    row = {f: getattr(task, f) for f in m.FIELDS if f != "result"}
    # a link holds no result of its own (what it reads is its original's)
    row["result"] = None if row["origin_type"] == "link" else task.result
    row["name"] = m.check_name(row["name"])
    row["priority"] = m.check_priority(row["priority"], who)
    row["status"] = m.check_status(row["status"], who)
    row["dependencies"] = m.check_dependencies(row["dependencies"], who)
    for name in ("inputs", "params", "schemas"):
        row[name] = m.check_json(row[name], name, who)
    if not isinstance(row["inputs"], Mapping):
        raise ParameterError(f"inputs of {who} must be a dict, not {row['inputs']!r}.")
    if row["user_id"] is not None and not isinstance(row["user_id"], str):
        raise ParameterError(f"user_id of {who} must be a string, not {row['user_id']!r}.")
    if row["origin_type"] not in m.ORIGINS:
        raise ParameterError(f"origin_type of {who} must be one of {', '.join(m.ORIGINS)}, "
                             f"not {row['origin_type']!r}.")
    return row


def _tree(tasks: list[m.TaskModel], root_id: str) -> TaskTreeNode:
    """The nodes of ``tasks`` linked as their ``parent_id`` says, from ``root_id``."""
    nodes = {t.id: TaskTreeNode(t) for t in tasks}
    root = nodes[root_id]
    for t in tasks:
        if t.id != root.task.id:
            nodes.get(str(t.parent_id), root).add_child(nodes[t.id])
    return root
