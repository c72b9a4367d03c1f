"""What the machine running pipeflow has: CPUs, memory, disk space, platform.

:func:`system_info` reads it with psutil into a plain, JSON-ready dict; the built-in task
:class:`pipeflow.SystemInfo` (:mod:`pipeflow.tasks.system`) saves it as a JSON output, and
every run recorded in the run history keeps a snapshot of it (the ``system`` column of
:func:`pipeflow.runs`).

Reading it is cheap (well under a millisecond on a typical machine): nothing here waits or
samples over an interval, so CPU *utilisation* is not included; the load average says how
busy the machine has been.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import pathlib
import platform
import socket
from typing import Any

import psutil

from pipeflow import settings
from pipeflow.errors import ParameterError

#: what :func:`system_info` can report
RESOURCES = ("all", "cpu", "memory", "disk")


def system_info(resource: str = "all") -> dict[str, Any]:
    """Describe this machine's CPUs, memory or disk space, or all of it.

    Every value is an int, a float or a str (sizes in bytes, frequencies in MHz), so the
    dict can be saved as JSON as it is. A figure the platform cannot give (e.g. the CPU
    frequency inside some containers) is left out rather than set to None.

    Args:
        resource: what to describe, in any case:

            * ``'cpu'``: ``logical_cores``, ``physical_cores``, ``available_cores`` (the
              cores this process may run on), ``frequency_mhz`` and ``load_1m``,
              ``load_5m``, ``load_15m`` (the load average).
            * ``'memory'``: ``total``, ``available``, ``used``, ``percent`` (used),
              ``swap_total``, ``swap_used``.
            * ``'disk'``: the partition holding the data dir (``pipeflow.settings.dir``, or
              its nearest existing parent folder if it does not exist yet): ``data_dir``,
              ``path`` (the folder measured), ``total``, ``used``, ``free``, ``percent``.
            * ``'all'`` (default): ``{'cpu': {...}, 'memory': {...}, 'disk': {...},
              'platform': {...}}``, ``platform`` giving ``system``, ``release``,
              ``machine``, ``python``, ``pipeflow`` (versions), ``hostname`` and ``pid``.

    Returns:
        The description: for one resource its figures, for ``'all'`` one dict per section.

    Raises:
        ParameterError: ``resource`` is not one of ``'all'``, ``'cpu'``, ``'memory'``,
            ``'disk'``.

    Example:
        >>> info = pipeflow.system_info("memory")
        >>> info["available"] > 0
        True
        >>> sorted(pipeflow.system_info())
        ['cpu', 'disk', 'memory', 'platform']
    """
    name = _resource_name(resource)
    if name == "cpu":
        return _cpu()
    if name == "memory":
        return _memory()
    if name == "disk":
        return _disk()
    return {"cpu": _cpu(), "memory": _memory(), "disk": _disk(), "platform": _platform()}


# -- internals ----------------------------------------------------------------------------------

def _resource_name(resource: object) -> str:
    name = resource.lower() if isinstance(resource, str) else None
    if name in RESOURCES:
        return name
    allowed = ", ".join(repr(r) for r in RESOURCES)
    raise ParameterError(
        f"system_info() got resource={resource!r}, which it cannot describe. resource must "
        f"be one of {allowed} (in any case). Pass e.g. pipeflow.system_info('memory'), or "
        f"pipeflow.system_info() for everything."
    )


@functools.lru_cache(maxsize=1)
def _physical_cores() -> int | None:
    # reads one sysfs file per CPU on Linux: slow on big machines, and fixed while we run
    return psutil.cpu_count(logical=False)


@functools.lru_cache(maxsize=1)
def _pipeflow_version() -> str:
    try:
        return importlib.metadata.version("pipeflow")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def _cpu() -> dict[str, Any]:
    info: dict[str, Any] = {}
    logical = psutil.cpu_count(logical=True) or os.cpu_count()
    if logical:
        info["logical_cores"] = int(logical)
    physical = _physical_cores()
    if physical:
        info["physical_cores"] = int(physical)
    if hasattr(os, "sched_getaffinity"):
        info["available_cores"] = len(os.sched_getaffinity(0))
    elif logical:
        info["available_cores"] = int(logical)
    try:
        freq = psutil.cpu_freq()
    except (AttributeError, NotImplementedError, OSError, RuntimeError):
        freq = None  # no cpufreq in this VM or container
    if freq is not None and freq.current:
        info["frequency_mhz"] = float(freq.current)
    try:
        load = os.getloadavg()
    except (AttributeError, OSError):  # Windows; or unreadable
        load = None
    if load is not None:
        info.update(load_1m=float(load[0]), load_5m=float(load[1]), load_15m=float(load[2]))
    return info


def _memory() -> dict[str, Any]:
    mem = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {"total": int(mem.total), "available": int(mem.available), "used": int(mem.used),
            "percent": float(mem.percent), "swap_total": int(swap.total),
            "swap_used": int(swap.used)}


def _disk() -> dict[str, Any]:
    data_dir = pathlib.Path(os.path.abspath(settings.dirpath))
    path = data_dir
    while not path.is_dir() and path != path.parent:
        path = path.parent
    usage = psutil.disk_usage(str(path))
    return {"data_dir": str(data_dir), "path": str(path), "total": int(usage.total),
            "used": int(usage.used), "free": int(usage.free), "percent": float(usage.percent)}


def _platform() -> dict[str, Any]:
    return {"system": platform.system(), "release": platform.release(),
            "machine": platform.machine(), "python": platform.python_version(),
            "pipeflow": _pipeflow_version(), "hostname": socket.gethostname(),
            "pid": os.getpid()}


__all__ = ["RESOURCES", "system_info"]
