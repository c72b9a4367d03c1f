"""Executors: the functions that run the tasks of task trees, found by their executor id.

``@executor("fetch_data")`` registers a plain or ``async`` function taking the task's
inputs (a dict, merged with its dependencies' results) and returning its result. A task
runs the executor its name names (or ``params['executor_id']`` / ``schemas['method']``,
as apflow's own code does). The built-in ``system_info_executor`` describes this machine.
"""

from __future__ import annotations

import inspect
import platform
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeflow.errors import ParameterError, UnknownExecutorError, did_you_mean
from pipeflow.sysinfo import RESOURCES, system_info


@dataclass(frozen=True)
class ExecutorSpec:
    """A registered executor.

    Attributes:
        id: its executor id.
        func: the function (plain or ``async``) taking the inputs dict.
        cancelable: whether ``cancel_task`` may stop it while it runs (else it is marked
            cancelled at once, allowed to finish, and its result discarded).
        retries: attempts made again after a failure, within one run.
        retry_delay: seconds before each retry.
        timeout: seconds after which a running attempt is stopped (None: no limit).
        description: what it does (its docstring's first line unless given).
    """

    id: str
    func: Callable[[dict[str, Any]], Any]
    cancelable: bool = False
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    description: str = ""

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function."""
        return inspect.iscoroutinefunction(self.func)


_EXECUTORS: dict[str, ExecutorSpec] = {}
_LOCK = threading.Lock()


def executor(executor_id: str, *, cancelable: bool = False, retries: int = 0,
             retry_delay: float = 0.0, timeout: float | None = None,
             description: str | None = None, replace: bool = True
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a function as the executor ``executor_id``.

    Args:
        executor_id: the id tasks name (their ``name``).
        cancelable: ``cancel_task`` stops it within about a second while it runs.
        retries: how often a failed attempt is tried again within a run.
        retry_delay: seconds before each retry.
        timeout: seconds after which a running attempt is stopped and the task fails.
        description: shown by ``pipeflow tasks executors`` (default: the docstring).
        replace: a second registration of the id replaces the first (a notebook cell
            run again); False makes it an error.

    Returns:
        A decorator returning the function unchanged.

    Raises:
        ParameterError: a bad id or option, or the id taken with ``replace=False``.

    Example:
        >>> @executor("double")
        ... def double(inputs):
        ...     return {"value": inputs["value"] * 2}
    """
    if not isinstance(executor_id, str) or not executor_id.strip():
        raise ParameterError(
            f"@executor needs an executor id, a non-empty string, not {executor_id!r}: "
            f"@executor('fetch_data').")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ParameterError(f"retries of executor {executor_id!r} must be an int >= 0, "
                             f"not {retries!r}.")
    for name, value in (("retry_delay", retry_delay), ("timeout", timeout)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0 or (name == "timeout" and value == 0)):
            raise ParameterError(f"{name} of executor {executor_id!r} must be a positive "
                                 f"number of seconds, not {value!r}.")

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(func):
            raise ParameterError(f"@executor({executor_id!r}) decorates a function, not "
                                 f"{func!r}.")
        doc = (inspect.getdoc(func) or "").strip().splitlines()
        spec = ExecutorSpec(executor_id, func, bool(cancelable), retries, float(retry_delay),
                            None if timeout is None else float(timeout),
                            description if description is not None else (doc[0] if doc else ""))
        with _LOCK:
            if not replace and executor_id in _EXECUTORS:
                raise ParameterError(
                    f"the executor id {executor_id!r} is taken (by "
                    f"{_EXECUTORS[executor_id].func.__qualname__}); pick another id or pass "
                    f"replace=True.")
            _EXECUTORS[executor_id] = spec
        return func

    return register


def unregister(executor_id: str) -> None:
    """Forget the executor ``executor_id`` (nothing happens if there is none)."""
    with _LOCK:
        _EXECUTORS.pop(executor_id, None)


def registered() -> dict[str, ExecutorSpec]:
    """The registered executors, by id."""
    with _LOCK:
        return dict(_EXECUTORS)


def get(executor_id: str) -> ExecutorSpec:
    """The executor ``executor_id``.

    Raises:
        UnknownExecutorError: no executor has that id (with the closest ids).
    """
    spec = _EXECUTORS.get(executor_id)
    if spec is None:
        raise UnknownExecutorError(unknown_message(executor_id))
    return spec


def unknown_message(executor_id: str, who: str = "") -> str:
    """Why ``executor_id`` cannot run and how to fix it."""
    known = sorted(_EXECUTORS)
    return (f"{who}no executor has the id {executor_id!r}.{did_you_mean(executor_id, known)} "
            f"Register one with @executor({executor_id!r}) on a function taking the inputs "
            f"dict (in the process that runs the tree), or name a registered executor. "
            f"Registered: {', '.join(known) or 'none'}.")


# -- the built-in executor ------------------------------------------------------------------------

@executor("system_info_executor")
def system_info_executor(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """This machine's CPU, memory or disk (``inputs['resource']``: cpu, memory, disk, all)."""
    resource = inputs.get("resource", "all")
    if resource not in RESOURCES:
        return {"error": f"Input validation failed: resource must be one of "
                         f"{', '.join(RESOURCES)}, not {resource!r}",
                "validation_error": f"resource: {resource!r} is not one of "
                                    f"{list(RESOURCES)}"}
    if resource == "all":
        return {"cpu": _cpu(), "memory": _memory(), "disk": _disk()}
    return {"cpu": _cpu, "memory": _memory, "disk": _disk}[resource]()


def _cpu() -> dict[str, Any]:
    info = system_info("cpu")
    return {"system": platform.system(), "brand": platform.processor() or platform.machine(),
            "cores": info.get("physical_cores"), "threads": info.get("logical_cores"),
            **info}


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f}Gi"


def _memory() -> dict[str, Any]:
    info = system_info("memory")
    return {"system": platform.system(), "total": _gib(info["total"]),
            "total_gb": round(info["total"] / 1e9, 2), "total_bytes": info["total"], **{
                k: v for k, v in info.items() if k != "total"}}


def _disk() -> dict[str, Any]:
    info = system_info("disk")
    return {"system": platform.system(), "total": _gib(info["total"]),
            "used": _gib(info["used"]), "available": _gib(info["free"]),
            "used_percent": f"{info['percent']:.0f}%", "total_bytes": info["total"],
            "path": info.get("path")}
