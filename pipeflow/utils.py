"""Helpers d6tflow code imports from ``d6tflow.utils``.

* :func:`params_generator_single` and :func:`params_generator_multiple` (alias
  :func:`generate_exps_for_multi_param`) build the ``{flow_name: params}`` dicts
  :class:`pipeflow.WorkflowMulti` (and the functional ``flow.run(multi_params=...)``) take;
* :func:`print_tree` returns the status tree :func:`pipeflow.preview` prints;
* :func:`traverse` lists a task and everything upstream of it;
* :func:`to_parquet` writes a DataFrame to parquet (gzip, as d6tflow did), atomically.

Example:
    >>> from pipeflow.utils import params_generator_multiple, params_generator_single
    >>> params_generator_single({"alpha": [0.1, 1.0]}, {"model": "ols"})
    {0: {'alpha': 0.1, 'model': 'ols'}, 1: {'alpha': 1.0, 'model': 'ols'}}
    >>> list(params_generator_multiple({"model": ["ols", "gbm"], "scale": [False]}))
    ['model_ols_scale_False', 'model_gbm_scale_False']
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import luigi

from pipeflow import graph, operations
from pipeflow.errors import ParameterError

__all__ = [
    "generate_exps_for_multi_param",
    "params_generator_multiple",
    "params_generator_single",
    "print_tree",
    "to_parquet",
    "traverse",
]


def _values(name: str, values: Any, where: str) -> list[Any]:
    """The values of one parameter of a grid, as a non-empty list."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ParameterError(
            f"{where}: the values of '{name}' must be a list of values to try, not "
            f"{type(values).__name__} {values!r}. Write {{'{name}': [{values!r}]}} for a "
            f"single value."
        )
    out = list(values)
    if not out:
        raise ParameterError(
            f"{where}: '{name}' has an empty list of values, so there would be no parameter "
            f"set at all. Give at least one value: {{'{name}': [...]}}."
        )
    return out


def _grid(dict_: Any, where: str, example: str) -> dict[str, list[Any]]:
    if not isinstance(dict_, Mapping) or not dict_:
        raise ParameterError(
            f"{where} takes a non-empty dict of parameter names and the values to try, e.g. "
            f"{example}; got {dict_!r}."
        )
    for name in dict_:
        if not isinstance(name, str) or not name:
            raise ParameterError(
                f"{where}: parameter names must be non-empty strings, not {name!r}. "
                f"Write e.g. {example}."
            )
    return {name: _values(name, values, where) for name, values in dict_.items()}


def _base(params_base: Any, grid: Mapping[str, Any], where: str) -> dict[str, Any]:
    if params_base is None:
        return {}
    if not isinstance(params_base, Mapping):
        raise ParameterError(
            f"{where}: params_base must be a dict of fixed parameter values, not "
            f"{type(params_base).__name__}."
        )
    both = sorted(set(params_base) & set(grid))
    if both:
        raise ParameterError(
            f"{where}: {both} are both varied and fixed in params_base, so every parameter "
            f"set would get the same value. Remove them from params_base (or from the "
            f"varied values)."
        )
    return dict(params_base)


def params_generator_single(dict_: Mapping[str, Iterable[Any]],
                            params_base: Mapping[str, Any] | None = None
                            ) -> dict[int, dict[str, Any]]:
    """Parameter sets varying one parameter: ``{0: {name: v0, ...}, 1: {name: v1, ...}}``.

    Args:
        dict_: one parameter name and the values to try, ``{'alpha': [0.1, 1.0]}``.
        params_base: fixed values added to every set.

    Returns:
        ``{index: params}`` in the order of the values (as d6tflow).

    Raises:
        ParameterError: ``dict_`` is empty, has several names (d6tflow silently used the
            first: use :func:`params_generator_multiple`), or its values are not a
            non-empty list; ``params_base`` also fixes the varied parameter (d6tflow let it
            override every value).

    Example:
        >>> params_generator_single({"alpha": [0.1, 1.0]}, {"model": "ols"})
        {0: {'alpha': 0.1, 'model': 'ols'}, 1: {'alpha': 1.0, 'model': 'ols'}}
    """
    where = "params_generator_single"
    grid = _grid(dict_, where, "{'alpha': [0.1, 1.0]}")
    if len(grid) > 1:
        raise ParameterError(
            f"{where} varies one parameter, but got {list(grid)}. For every combination of "
            f"several parameters use params_generator_multiple({dict(dict_)!r})."
        )
    base = _base(params_base, grid, where)
    ((name, values),) = grid.items()
    return {i: {name: v, **base} for i, v in enumerate(values)}


def params_generator_multiple(params_dict: Mapping[str, Iterable[Any]],
                              params_base: Mapping[str, Any] | None = None
                              ) -> dict[str, dict[str, Any]]:
    """Every combination of the given values, named as d6tflow names them.

    Parameter names are sorted; the first varies slowest. A set is named by its names
    and values joined with ``_``: ``{'model': ['ols'], 'scale': [False]}`` gives
    ``'model_ols_scale_False'``, the names ``d6tflow.WorkflowMulti`` gave a grid.

    Args:
        params_dict: parameter names and the values to try,
            ``{'model': ['ols', 'gbm'], 'scale': [False, True]}``.
        params_base: fixed values added to every set.

    Returns:
        ``{flow_name: params}``, one per combination.

    Raises:
        ParameterError: ``params_dict`` is empty, a name is not a string, a value list is
            empty or not a list, two combinations would get the same name (repeated values,
            or values printing alike such as ``1`` and ``'1'``), or ``params_base`` fixes a
            varied parameter.

    Example:
        >>> grid = params_generator_multiple({"scale": [True], "model": ["ols", "gbm"]})
        >>> grid["model_gbm_scale_True"]
        {'model': 'gbm', 'scale': True}
        >>> list(grid)
        ['model_ols_scale_True', 'model_gbm_scale_True']
    """
    where = "params_generator_multiple"
    grid = _grid(params_dict, where, "{'model': ['ols', 'gbm'], 'scale': [False, True]}")
    base = _base(params_base, grid, where)
    names = sorted(grid)
    out: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, combo))
        flow = "_".join(f"{n}_{v}" for n, v in params.items())
        if flow in out:
            raise ParameterError(
                f"{where}: the parameter sets {out[flow]!r} and {params!r} would both be "
                f"named {flow!r}, so one would hide the other. Remove repeated values, or "
                f"name the sets yourself: {{'name': {{...}}, ...}}."
            )
        out[flow] = {**params, **base}
    return out


#: d6tflow's name for :func:`params_generator_multiple`
generate_exps_for_multi_param = params_generator_multiple


def _check_task(task: Any, where: str) -> None:
    if isinstance(task, luigi.Task):
        return
    if isinstance(task, type) and issubclass(task, luigi.Task):
        raise ParameterError(
            f"{where} takes a task instance, not the class {task.__name__}: write "
            f"{where}({task.__name__}()) (with its parameters)."
        )
    raise ParameterError(f"{where} takes a task instance (e.g. Train()), not {task!r}.")


def print_tree(task: luigi.Task | list[luigi.Task], indent: str = "", last: bool = True,
               show_params: bool = True, clip_params: bool = False, *,
               color: bool = False) -> str:
    """The status tree of ``task`` and its upstream tasks, as :func:`pipeflow.preview` shows it.

    Nothing is printed. d6tflow's version started with a blank line and always had colour
    codes; this one has colour codes only with ``color=True``.

    Args:
        task: a task instance (or a list of them).
        indent: prefix of every line.
        last: draw the root as a last child (``└─--``) rather than ``|--``.
        show_params: show parameters.
        clip_params: show only one parameter per task.
        color: colour the status words (ANSI codes).

    Returns:
        The tree, one line per task: ``└─--[Train-{'model': 'ols'} (PENDING)]``.

    Raises:
        ParameterError: ``task`` is not a task instance.
    """
    for t in task if isinstance(task, list) else [task]:
        _check_task(t, "print_tree")
    preview = operations.preview(task, indent=indent, last=last, show_params=show_params,
                                 clip_params=clip_params, print_it=False)
    return preview.text(color=color)


def traverse(t: luigi.Task, path: list[luigi.Task] | None = None) -> list[luigi.Task]:
    """``t`` and every task upstream of it, each once.

    ``t`` comes first, and every task comes before the tasks it requires (d6tflow walked
    depth first, which could list a shared upstream task before one that requires it;
    the tasks are the same). No status is checked and no file is read.

    Args:
        t: a task instance.
        path: tasks to list first (d6tflow's accumulator); tasks already in it are not
            repeated.

    Returns:
        The tasks.

    Raises:
        ParameterError: ``t`` is not a task instance.
        CycleError: the requirements loop.
    """
    _check_task(t, "traverse")
    out = list(path or [])
    seen = {x.task_id for x in out if isinstance(x, luigi.Task)}
    for node in reversed(graph.build([t]).nodes):
        if node.task_id not in seen:
            seen.add(node.task_id)
            out.append(node)
    return out


def to_parquet(df: Any, path: str | os.PathLike[str], **kwargs: Any) -> pathlib.Path:
    """Write a DataFrame to a parquet file (gzip-compressed with pyarrow, as d6tflow did).

    The parent folders are created. The file is written to a temporary name beside
    ``path`` and renamed into place, so a crash never leaves a partial file at ``path``.

    Args:
        df: the pandas DataFrame.
        path: the file to write.
        **kwargs: passed to ``DataFrame.to_parquet`` (they override ``compression='gzip'``
            and ``engine='pyarrow'``).

    Returns:
        ``path`` as a Path.

    Raises:
        ParameterError: ``df`` has no ``to_parquet`` method (not a DataFrame).
    """
    if not callable(getattr(df, "to_parquet", None)):
        raise ParameterError(
            f"to_parquet(df, path) takes a pandas DataFrame, not {type(df).__name__}. Convert "
            f"it first, e.g. to_parquet(pd.DataFrame(data), path)."
        )
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
    try:
        df.to_parquet(tmp, **{"compression": "gzip", "engine": "pyarrow", **kwargs})
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return target
