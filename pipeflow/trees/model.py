"""A stored task of a task tree (:class:`TaskModel`) and the checks on what it may hold.

The fields are apflow's (``id``, ``name``, ``user_id``, ``parent_id``, ``priority``,
``dependencies``, ``inputs``, ``params``, ``schemas``, ``result``, ``error``, ``status``,
``progress``, the timestamps, ``origin_type``, ``original_task_id``...). A
:class:`TaskModel` is a snapshot: read the task again
(``task_repository.get_task_by_id``) to see later changes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipeflow.errors import ParameterError, did_you_mean

#: the lifecycle of a stored task
PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = (
    "pending", "in_progress", "completed", "failed", "cancelled")
STATUSES = (PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
#: statuses a task never leaves by itself (a re-run may start failed/cancelled ones again)
FINAL = (COMPLETED, FAILED, CANCELLED)
#: how a task came to be
ORIGINS = ("create", "copy", "link", "archive")
#: priorities: 0 urgent, 1 high, 2 normal (the default), 3 low
PRIORITIES = (0, 1, 2, 3)
DEFAULT_PRIORITY = 2

#: fields held as JSON text in the store
JSON_FIELDS = ("dependencies", "inputs", "params", "schemas", "result")
#: fields held as timestamps
TIME_FIELDS = ("created_at", "started_at", "updated_at", "completed_at")
#: every field a task has, in the order shown
FIELDS = ("id", "name", "user_id", "parent_id", "priority", "dependencies", "inputs",
          "params", "schemas", "result", "error", "status", "progress", *TIME_FIELDS,
          "has_children", "task_tree_id", "original_task_id", "origin_type",
          "has_references")


class TaskModel:
    """One stored task: a snapshot of its row in the task store.

    Attributes:
        id: its id (a uuid4 string unless given).
        name: its name, which is also its executor id (unless ``params['executor_id']``
            or ``schemas['method']`` names another).
        user_id: who it belongs to (None: nobody in particular).
        parent_id: its parent in the tree (organisation only: never an order).
        priority: 0 urgent, 1 high, 2 normal, 3 low; lower starts first among ready tasks.
        dependencies: ``[{"id": ..., "required": bool}, ...]``: what must finish first.
        inputs: what its executor gets (after a run: merged with its dependencies' results).
        params, schemas: apflow's executor configuration (JSON, kept as given).
        result: what its executor returned (None until it completed).
        error: why it failed or was cancelled.
        status: ``pending``, ``in_progress``, ``completed``, ``failed`` or ``cancelled``.
        progress: 0.0 to 1.0 (1.0 once completed).
        created_at, started_at, updated_at, completed_at: UTC datetimes (or None).
        has_children: some task names it as ``parent_id``.
        task_tree_id: the id of the tree it was made in (copies: the new tree's root).
        original_task_id: for a copy, link or archive, the task it was made from.
        origin_type: ``create``, ``copy``, ``link`` or ``archive``.
        has_references: copies, links or archives were made of it.

    Example:
        >>> t = await tm.task_repository.get_task_by_id(task_id)  # doctest: +SKIP
        >>> t.status, t.result                                     # doctest: +SKIP
        ('completed', {'cores': 8})
    """

    __slots__ = (*FIELDS, "_result_loader")

    id: str
    name: str
    user_id: str | None
    parent_id: str | None
    priority: int
    dependencies: list[dict[str, Any]]
    inputs: dict[str, Any]
    params: dict[str, Any] | None
    schemas: dict[str, Any] | None
    error: str | None
    status: str
    progress: float
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    updated_at: dt.datetime | None
    completed_at: dt.datetime | None
    has_children: bool
    task_tree_id: str | None
    original_task_id: str | None
    origin_type: str
    has_references: bool

    def __init__(self, fields: Mapping[str, Any],
                 result_loader: Callable[[], Any] | None = None) -> None:
        for name in FIELDS:
            object.__setattr__(self, name, fields.get(name))
        object.__setattr__(self, "_result_loader", result_loader)

    def __getattribute__(self, name: str) -> Any:
        if name == "result":
            loader = object.__getattribute__(self, "_result_loader")
            if loader is not None:  # a large or non-JSON result: read from its file once
                object.__setattr__(self, "result", loader())
                object.__setattr__(self, "_result_loader", None)
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in FIELDS:
            raise AttributeError(f"a task has no field {name!r}.{did_you_mean(name, FIELDS)}")
        if name == "result":
            object.__setattr__(self, "_result_loader", None)
        object.__setattr__(self, name, value)

    @property
    def executor_id(self) -> str:
        """Its executor: ``params['executor_id']``, ``schemas['method']``, or its name."""
        for holder, key in ((self.params, "executor_id"), (self.schemas, "method")):
            if isinstance(holder, Mapping) and isinstance(holder.get(key), str) and holder[key]:
                return holder[key]  # type: ignore[no-any-return]
        return self.name

    def to_dict(self) -> dict[str, Any]:
        """Every field, timestamps as ISO text (JSON-ready unless the result is not)."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, dt.datetime) else value
        return out

    def __repr__(self) -> str:
        return (f"TaskModel(id={self.id!r}, name={self.name!r}, status={self.status!r}, "
                f"priority={self.priority!r})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskModel) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


# -- checks on what a task may hold ---------------------------------------------------------------

def check_name(name: object) -> str:
    """A task's name: a non-empty string."""
    if not isinstance(name, str) or not name.strip():
        raise ParameterError(
            f"a task needs a name (its executor id), a non-empty string, not {name!r}: "
            f"create_task(name='fetch_data', ...).")
    return check_text(name, "name", "a task")  # type: ignore[return-value]


def check_priority(priority: object, who: str = "a task") -> int:
    """A priority: an int from 0 (urgent) to 3 (low)."""
    if isinstance(priority, bool) or not isinstance(priority, int) or priority not in PRIORITIES:
        raise ParameterError(
            f"priority of {who} must be 0 (urgent), 1 (high), 2 (normal) or 3 (low), not "
            f"{priority!r}.")
    return priority


def check_status(status: object, who: str = "a task") -> str:
    """A lifecycle status."""
    if status not in STATUSES:
        raise ParameterError(
            f"status of {who} must be one of {', '.join(STATUSES)}, not {status!r}."
            f"{did_you_mean(str(status), STATUSES)}")
    return status  # type: ignore[return-value]


def check_progress(progress: object, who: str = "a task") -> float:
    """A progress: a finite number from 0.0 to 1.0."""
    if (isinstance(progress, bool) or not isinstance(progress, (int, float))
            or not 0.0 <= progress <= 1.0):
        raise ParameterError(
            f"progress of {who} must be a number from 0.0 to 1.0 (0.5: half done), not "
            f"{progress!r}.")
    return float(progress)


def check_text(value: object, field: str, who: str = "a task", *,
               kind: str = "a string") -> str | None:
    """An optional text field (``user_id``, ``error``, an id...): None or storable text.

    Text is stored as UTF-8, so a lone surrogate (from a bad decode) is
    refused here rather than by SQLite.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParameterError(f"{field} of {who} must be {kind} (or None), not {value!r}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ParameterError(
            f"{field} of {who} cannot be stored: {value!r} holds {exc.object[exc.start]!r}, "
            f"which is not a character UTF-8 can hold (a lone surrogate, usually from "
            f"decoding bytes with errors='surrogateescape'). Decode the text properly or "
            f"replace that character.") from None
    return value


def check_time(value: object, field: str, who: str = "a task") -> dt.datetime | None:
    """An optional timestamp: a datetime, or ISO text such as ``'2026-01-31T12:00:00'``."""
    if value is None or isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ParameterError(
        f"{field} of {who} must be a datetime or ISO text such as '2026-01-31T12:00:00+00:00', "
        f"not {value!r}.")


def check_dependencies(deps: object, who: str = "a task") -> list[dict[str, Any]]:
    """Dependencies as apflow writes them, made uniform: ``[{"id": str, "required": bool}]``.

    A bare id string means a required dependency; ``required`` missing means True.
    """
    if deps is None:
        return []
    if isinstance(deps, (str, bytes, Mapping)) or not isinstance(deps, Iterable):
        raise ParameterError(
            f"dependencies of {who} must be a list such as [{{'id': other.id, 'required': "
            f"True}}], not {deps!r}.")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for d in deps:
        if isinstance(d, str):
            d = {"id": d, "required": True}
        if not isinstance(d, Mapping) or not isinstance(d.get("id"), str) or not d["id"]:
            raise ParameterError(
                f"each dependency of {who} is {{'id': <task id>, 'required': True|False}} "
                f"(or a task id), not {d!r}.")
        check_text(d["id"], "a dependency id", who)
        required = d.get("required", True)
        if not isinstance(required, bool):
            raise ParameterError(
                f"'required' of the dependency on {d['id']!r} of {who} must be True or "
                f"False, not {required!r}.")
        extra = set(d) - {"id", "required"}
        if extra:
            raise ParameterError(
                f"a dependency of {who} has unknown key(s) {sorted(extra)}: write "
                f"{{'id': {d['id']!r}, 'required': {required}}}.")
        if d["id"] in seen:
            raise ParameterError(f"{who} lists the dependency {d['id']!r} twice.")
        seen.add(d["id"])
        out.append({"id": d["id"], "required": required})
    return out


def check_run_params(params: object, who: str = "a task") -> None:
    """The overrides a task's ``params`` may hold: ``retries``, ``retry_delay``, ``timeout``."""
    if not isinstance(params, Mapping):
        return
    retries = params.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ParameterError(
            f"params['retries'] of {who} must be a whole number >= 0 (how many times a "
            f"failed attempt is tried again), not {retries!r}.")
    for key, least in (("retry_delay", "0 or more"), ("timeout", "more than 0")):
        value = params.get(key)
        if value is None:
            continue
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value < 0 or (key == "timeout" and value == 0)):
            raise ParameterError(
                f"params[{key!r}] of {who} must be a number of seconds, {least}, or None, "
                f"not {value!r}.")


def check_json(value: object, field: str, who: str = "a task") -> Any:
    """``value`` unchanged if it can be stored as JSON, else a clear error naming where."""
    where = _not_json(value, field)
    if where is not None:
        raise ParameterError(
            f"{field} of {who} must be JSON (dicts with string keys, lists, strings, "
            f"numbers, True/False/None): {where}. Pass plain values (e.g. a file path "
            f"instead of a DataFrame).")
    return value


#: how deeply JSON values may nest (deeper ones would exhaust Python's recursion limit)
MAX_DEPTH = 500


def _not_json(value: object, path: str, depth: int = 0) -> str | None:
    """Where ``value`` stops being JSON (None: it is JSON)."""
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, int):
        if value.bit_length() > 10_000:  # past ~3000 digits: can Python write it?
            try:
                repr(value)
            except ValueError:
                return (f"{path} is an integer too long to write as text (over "
                        f"{sys.get_int_max_str_digits()} digits)")
        return None
    if depth >= MAX_DEPTH and isinstance(value, (Mapping, list, tuple)):
        short = path if len(path) <= 60 else f"{path[:60]}..."
        return f"{short} nests dicts/lists more than {MAX_DEPTH} levels deep"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r}"
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path} has the key {k!r} ({type(k).__name__}, not str)"
            bad = _not_json(v, f"{path}[{k!r}]", depth + 1)
            if bad:
                return bad
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            bad = _not_json(v, f"{path}[{i}]", depth + 1)
            if bad:
                return bad
        return None
    return f"{path} is a {type(value).__module__}.{type(value).__qualname__}"


def is_json(value: object) -> bool:
    """Whether ``value`` can be stored as JSON as it is."""
    return _not_json(value, "") is None


def dumps(value: object) -> str:
    """JSON text of a checked value."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
