"""The in-memory store behind cache targets and cached loads (``pipeflow.data``).

Keys are output paths, values the stored objects. What is handed out is :func:`fresh`: a
load never returns an object an earlier caller could have changed in place (d6tflow shared
them: a task that edited a loaded DataFrame changed what every later load returned), unless
the caller asks for the stored object itself with ``load(cached=True)``.
"""

from __future__ import annotations

import copy
import pathlib
import sys
from typing import Any

data: dict[pathlib.Path | str, Any] = {}

_IMMUTABLE = (str, bytes, int, float, complex, bool, type(None), frozenset)


def fresh(obj: Any) -> Any:
    """An object equal to ``obj`` that shares nothing mutable with it.

    pandas objects are copied lazily where pandas copies on write (pandas >= 3, or the
    option turned on), so this costs next to nothing; other objects are deep-copied. An
    object that cannot be copied is returned as it is.
    """
    if isinstance(obj, _IMMUTABLE):
        return obj
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(obj, (pandas.DataFrame, pandas.Series, pandas.Index)):
        return obj.copy(deep=not _copy_on_write(pandas))
    try:
        return copy.deepcopy(obj)
    except Exception:  # noqa: BLE001 - locks, sockets, C objects: nothing better to give
        return obj


def _copy_on_write(pandas: Any) -> bool:
    if int(pandas.__version__.split(".")[0]) >= 3:
        return True
    return pandas.options.mode.copy_on_write is True
