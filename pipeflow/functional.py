"""d6tflow's functional API: pipeline steps written as decorated functions.

``from pipeflow.functional import Workflow`` replaces ``from d6tflow.functional import
Workflow``. Each ``@flow.task(TaskType)`` function becomes a task class named after the
function, whose ``run()`` calls the function with the task instance; ``@flow.requires``,
``@flow.params`` and ``@flow.persists`` add dependencies, parameters and output names.

The task class is built once, when the decorators are applied, with its parameters in the
class namespace (so luigi >= 3.5, which names parameters through ``__set_name__``, accepts
them). d6tflow's own functional module adds them afterwards and fails on luigi >= 3.5.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import luigi

from pipeflow import graph, operations
from pipeflow.display.preview import Preview
from pipeflow.display.rich import FlowResults
from pipeflow.errors import (
    IncompleteTaskError,
    ParameterError,
    did_you_mean,
)
from pipeflow.events import RunResult
from pipeflow.parameters import TYPO_CUTOFF, check_undeclared, describe_param, is_secret
from pipeflow.targets import DataTarget
from pipeflow.tasks import TaskData
from pipeflow.tasks import requires as _requires

__all__ = ["Step", "Workflow"]

#: what the flow methods take to name a step: its function, its name or its task class
StepRef = Any

_EXAMPLE_TYPE = "pipeflow.tasks.TaskCache"


class Step:
    """A function decorated with ``@flow.task``: still callable, and names its task class.

    Pass it to the flow's methods (``flow.run(step)``) and to ``@flow.requires``. Calling it
    calls the original function.

    Attributes:
        task_class: the task class built from the function (usable like any task class,
            e.g. ``pipeflow.Workflow(step.task_class)``).
        flow: the functional :class:`Workflow` the step belongs to.
    """

    def __init__(self, func: Callable[..., Any], task_class: type[TaskData],
                 flow: Workflow) -> None:
        functools.update_wrapper(self, func)
        self.task_class = task_class
        self.flow = flow

    __name__: str
    __wrapped__: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the original function."""
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        base = self.task_class.__mro__[1].__name__
        return f"<pipeflow step {self.task_class.__name__} ({base})>"


@dataclass
class _Spec:
    """What the decorators of one step say, gathered before the task class is built."""

    task_type: type[TaskData]
    requires: tuple[Any, ...] | None = None
    requires_dict: dict[Any, type[luigi.Task]] | None = None
    params: dict[str, luigi.Parameter] = field(default_factory=dict)
    persist: list[str] | None = None
    step: Step | None = None


class Workflow:
    """A functional flow: steps defined by decorated functions, run and loaded by function.

    Decorate each step with ``@flow.task(TaskType)`` (outermost), then optionally
    ``@flow.requires(...)``, ``@flow.params(...)`` and ``@flow.persists([...])``. The
    decorated function takes one argument, the task instance (``self`` of a task class):
    ``task.inputLoad()``, ``task.save(...)``, ``task.<parameter>``.

    Parameter values given to :meth:`run` go to every step that declares them. A name no
    step of the run declares is a :class:`~pipeflow.errors.ParameterError` when it is a
    near-miss of a declared name (a typo), else ignored with an
    :class:`~pipeflow.errors.UnusedParameterWarning`, as in :class:`pipeflow.Workflow`.
    The flow remembers the parameter sets each step ran with, so :meth:`outputLoad`,
    :meth:`preview` and :meth:`reset` work without repeating them.

    Attributes:
        steps: step name -> task class, in definition order.
        params_used: step name -> the parameter sets the step ran with so far.

    Example:
        >>> import pandas as pd, pipeflow
        >>> from pipeflow.functional import Workflow
        >>> flow = Workflow()
        >>> @flow.task(pipeflow.tasks.TaskPqPandas)
        ... def get_data(task):
        ...     task.save(pd.DataFrame({"a": range(3)}))
        >>> @flow.task(pipeflow.tasks.TaskPqPandas)
        ... @flow.requires(get_data)
        ... @flow.params(multiplier=pipeflow.IntParameter(default=2))
        ... def scale(task):
        ...     task.save(task.inputLoad() * task.multiplier)
        >>> flow.run(scale, params={"multiplier": 3})    # doctest: +SKIP
        >>> flow.outputLoad(scale)                        # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.steps: dict[str, type[TaskData]] = {}
        self.params_used: dict[str, list[dict[str, Any]]] = {}
        self._pending: _Spec | None = None
        self._built: set[type[TaskData]] = set()
        self._global_params: dict[str, luigi.Parameter] = {}
        self._from_global: dict[type[TaskData], set[str]] = {}
        # step name -> ("single", params) or ("multi", {flow_name: params}) of its last run
        self._last: dict[str, tuple[str, Any]] = {}
        self._ignored: set[str] = set()  # undeclared parameter names already warned about

    def __repr__(self) -> str:
        return f"<pipeflow.functional.Workflow with steps {list(self.steps)}>"

    # -- decorators ------------------------------------------------------------------------
    def task(self, task_type: Any = None) -> Callable[[Any], Step]:
        """Make the decorated function a step: a task class of type ``task_type``.

        Must be the outermost decorator of the step. The class is named after the function
        and its ``run()`` calls the function with the task instance.

        Args:
            task_type: a pipeflow task class: ``pipeflow.tasks.TaskCache``,
                ``TaskPqPandas``, ... or your own subclass of one.

        Returns:
            The decorator.

        Raises:
            ParameterError: ``task_type`` is not a pipeflow data task class.

        Example:
            >>> @flow.task(pipeflow.tasks.TaskCache)     # doctest: +SKIP
            ... def get_data(task):
            ...     task.save({"rows": 3})
        """
        _check_task_type(task_type)
        spec = _Spec(task_type)
        self._pending = spec  # an earlier spec never applied (its decoration failed) is dropped
        return self._decorator(spec, "task")

    def requires(self, *steps: Any, **named: Any) -> Callable[[Any], Step]:
        """Declare the steps this step depends on, below ``@flow.task``.

        Works like :func:`pipeflow.requires`: the step inherits the parameters of the steps
        it requires and passes its values on to them. ``task.inputLoad()`` returns the
        input's data for one step, a list for several, a dict for a dict.

        Args:
            *steps: one or more steps of this flow (or task classes), or one dict
                ``{"name": step}``.
            **named: the dict form as keywords: ``requires(a=step1, b=step2)``.

        Returns:
            The decorator.

        Raises:
            ParameterError: used above ``@flow.task``, twice on one step, with nothing, or
                with something that is not a step of this flow.

        Example:
            >>> @flow.task(pipeflow.tasks.TaskCache)      # doctest: +SKIP
            ... @flow.requires({"a": get_data1, "b": get_data2})
            ... def use_data(task):
            ...     data = task.inputLoad()               # {"a": ..., "b": ...}
        """
        spec = self._current("requires")
        if spec.requires is not None or spec.requires_dict is not None:
            raise ParameterError(
                "@flow.requires is used twice on one step, so it is unclear which "
                "dependencies it has. List every dependency in one decorator: "
                "@flow.requires(step1, step2) or @flow.requires({'a': step1, 'b': step2})."
            )
        if len(steps) == 1 and isinstance(steps[0], Mapping) and not named:
            named = dict(steps[0])
            steps = ()
        if steps and named:
            raise ParameterError(
                "@flow.requires takes steps or a dict of steps, not both: the input would be "
                "neither a list nor a dict. Write @flow.requires(step1, step2) or "
                "@flow.requires({'a': step1, 'b': step2})."
            )
        if not steps and not named:
            raise ParameterError(
                "@flow.requires() names no step: there is nothing to depend on. Pass the "
                "step functions: @flow.requires(get_data), or remove the decorator."
            )
        if named:
            spec.requires_dict = {k: self._dependency(v) for k, v in named.items()}
        else:
            spec.requires = tuple(self._dependency(s) for s in steps)
        return self._decorator(spec, "requires")

    def params(self, **params: luigi.Parameter) -> Callable[[Any], Step]:
        """Declare parameters of this step, below ``@flow.task``.

        Args:
            **params: parameter objects by name:
                ``multiplier=pipeflow.IntParameter(default=0)``.

        Returns:
            The decorator.

        Raises:
            ParameterError: used above ``@flow.task``; a value is not a parameter object;
                a name is declared twice or would replace an attribute of the task class.

        Example:
            >>> @flow.task(pipeflow.tasks.TaskCache)     # doctest: +SKIP
            ... @flow.params(multiplier=pipeflow.IntParameter(default=0))
            ... def scale(task):
            ...     task.save(task.multiplier * 2)
        """
        spec = self._current("params")
        for name, param in params.items():
            _check_param(name, param, spec.task_type, "@flow.params")
            if name in spec.params:
                raise ParameterError(
                    f"@flow.params: parameter '{name}' is declared twice on one step. "
                    f"Keep one declaration."
                )
            spec.params[name] = param
        return self._decorator(spec, "params")

    def persists(self, to_persist: Iterable[str]) -> Callable[[Any], Step]:
        """Name the outputs of this step, below ``@flow.task``.

        The step then saves a dict with exactly these keys: ``task.save({'a1': ...,
        'a2': ...})``; ``outputLoad`` returns a list (or a dict with ``as_dict=True``).

        Args:
            to_persist: the output names, e.g. ``['a1', 'a2']``.

        Returns:
            The decorator.

        Raises:
            ParameterError: used above ``@flow.task`` or twice; not a list of distinct
                names.
        """
        spec = self._current("persists")
        if spec.persist is not None:
            raise ParameterError(
                "@flow.persists is used twice on one step. Give every output name in one "
                "decorator: @flow.persists(['a1', 'a2'])."
            )
        names = [to_persist] if isinstance(to_persist, str) else None
        if names is not None or not isinstance(to_persist, Iterable):
            raise ParameterError(
                f"@flow.persists({to_persist!r}): it takes a list of output names, not "
                f"{type(to_persist).__name__}. Write @flow.persists(['a1', 'a2'])"
                + (f" or @flow.persists([{to_persist!r}])." if names else ".")
            )
        persist = list(to_persist)
        if (not persist or len(set(persist)) != len(persist)
                or not all(isinstance(k, str) and k and not k.startswith(".")
                           and not set(k) & {"/", "\\", "\0"} for k in persist)):
            raise ParameterError(
                f"@flow.persists({persist!r}): output names must be a non-empty list of "
                f"distinct plain names (no '/', '\\' or NUL, not starting with '.'), as "
                f"they become file names. Write e.g. @flow.persists(['model', 'scores'])."
            )
        spec.persist = persist
        return self._decorator(spec, "persists")

    def add_global_params(self, **params: luigi.Parameter) -> None:
        """Declare parameters of every step of the flow.

        They are added to every step defined so far and to every step defined later
        (d6tflow adds them to the steps defined so far only). A step that declares a
        parameter of the same name itself (``@flow.params``) keeps its own. Calling this
        again with a name replaces the earlier global parameter.

        Args:
            **params: parameter objects by name:
                ``multiplier=pipeflow.IntParameter(default=0)``.

        Raises:
            ParameterError: a value is not a parameter object, or a name would replace an
                attribute of a step's task class.
        """
        classes: list[type[TaskData]] = [TaskData, *self._built]
        for name, param in params.items():
            for owner in classes:
                _check_param(name, param, owner, "flow.add_global_params")
        for name, param in params.items():
            self._global_params[name] = param
            for cls in self._built:
                given = self._from_global.setdefault(cls, set())
                if name in dict(cls.get_params()) and name not in given:
                    continue  # the step's own (or inherited own) parameter wins
                setattr(cls, name, _bound(param, cls, name))
                given.add(name)

    # -- building steps --------------------------------------------------------------------
    def _current(self, decorator: str) -> _Spec:
        spec = self._pending
        if spec is None or spec.step is not None:
            raise ParameterError(
                f"@flow.{decorator} is not below a @flow.task(...) decorator, so there is no "
                f"step for it to apply to. @flow.task must be the outermost (first) "
                f"decorator:\n    @flow.task({_EXAMPLE_TYPE})\n    @flow.{decorator}(...)\n"
                f"    def my_step(task): ..."
            )
        return spec

    def _decorator(self, spec: _Spec, decorator: str) -> Callable[[Any], Step]:
        def apply(func: Any) -> Step:
            if isinstance(func, Step):
                if func is spec.step:
                    return func
                raise ParameterError(
                    f"@flow.{decorator} is applied to {func.task_class.__name__}, which is "
                    f"already a complete step (its @flow.task is below this decorator, or "
                    f"@flow.task is used twice). Put @flow.task(...) first, once, and the "
                    f"other decorators of the step below it."
                )
            if spec.step is not None:
                raise ParameterError(
                    f"a @flow.{decorator} decorator was applied to a second function; each "
                    f"decorator belongs to the one step below it. Write the decorators "
                    f"again above each function."
                )
            step = self._build(spec, func)
            spec.step = step
            if self._pending is spec:
                self._pending = None
            return step

        return apply

    def _build(self, spec: _Spec, func: Any) -> Step:
        if not isinstance(func, types.FunctionType):
            raise ParameterError(
                f"@flow.task decorates functions `def name(task): ...`, not "
                f"{type(func).__name__} {func!r}."
            )
        name = func.__name__
        if not name.isidentifier():
            raise ParameterError(
                f"@flow.task: the step is named after its function, and {name!r} is not a "
                f"valid name (a lambda?). Define it with `def my_step(task): ...`."
            )
        try:
            inspect.signature(func).bind(None)
        except TypeError:
            raise ParameterError(
                f"@flow.task: {name}{inspect.signature(func)} must take exactly one "
                f"argument, the task instance (`def {name}(task): ...`); its run() calls "
                f"{name}(task)."
            ) from None
        namespace: dict[str, Any] = {
            "run": func,
            "__module__": func.__module__,
            "__qualname__": func.__qualname__,
            "__doc__": func.__doc__,
        }
        if spec.persist is not None:
            namespace["persist"] = spec.persist
        deps = [*(spec.requires or ()), *(spec.requires_dict or {}).values()]
        inherited = {n for dep in deps for n, _ in dep.get_params()}
        # a global parameter a required step declares comes with it (as it is there)
        given = {n for n in self._global_params if n not in spec.params and n not in inherited}
        for pname in given:
            namespace[pname] = _bound(self._global_params[pname], None, pname)
        for pname, param in spec.params.items():
            namespace[pname] = _bound(param, None, pname)
        cls: type[TaskData] = type(name, (spec.task_type,), namespace)
        if spec.requires_dict is not None:
            cls = _requires(spec.requires_dict)(cls)
        elif spec.requires is not None:
            cls = _requires(*spec.requires)(cls)
        self._from_global[cls] = given
        self._built.add(cls)
        self.steps.pop(name, None)  # a redefinition (a notebook cell run again) moves last
        self.steps[name] = cls
        return Step(func, cls, self)

    def _dependency(self, item: Any) -> type[luigi.Task]:
        """The task class a ``@flow.requires`` argument stands for."""
        if isinstance(item, Step):
            if item.flow is not self:
                raise ParameterError(
                    f"@flow.requires({item.__name__}): {item.__name__} is a step of another "
                    f"functional Workflow, not of this one. Define it in this flow, or "
                    f"require its task class: @flow.requires({item.__name__}.task_class)."
                )
            return item.task_class
        if isinstance(item, type) and issubclass(item, luigi.Task):
            return item
        if callable(item) and hasattr(item, "__name__"):
            raise ParameterError(
                f"@flow.requires({item.__name__}): {item.__name__} is not a step of this "
                f"flow (it has no @flow.task decorator). Decorate it with "
                f"@flow.task({_EXAMPLE_TYPE}), and define it before the steps that "
                f"require it."
            )
        raise ParameterError(
            f"@flow.requires takes step functions of this flow (or a dict of them), not "
            f"{item!r}. Write @flow.requires(get_data) or @flow.requires({{'a': get_data}})."
        )

    # -- naming steps and their tasks ------------------------------------------------------
    def _step(self, ref: StepRef, where: str) -> type[TaskData]:
        """The task class of a step given as its function, its name or its class."""
        if isinstance(ref, Step):
            if ref.flow is self:
                return ref.task_class
            raise ParameterError(
                f"{where}: {ref.__name__} is a step of another functional Workflow. Call "
                f"the methods of the Workflow it was defined in."
            )
        if isinstance(ref, type) and ref in self._built:
            return ref
        if isinstance(ref, str) and ref in self.steps:
            return self.steps[ref]
        name = getattr(ref, "__name__", None)
        shown = name if isinstance(name, str) else repr(ref)
        hint = did_you_mean(ref if isinstance(ref, str) else shown, self.steps)
        raise ParameterError(
            f"{where}: {shown} is not a step of this flow.{hint} Its steps are "
            f"{list(self.steps) or 'none yet'}; a step is a function decorated with "
            f"@flow.task({_EXAMPLE_TYPE})."
        )

    def _steps(self, refs: Any, where: str) -> list[type[TaskData]]:
        items = list(refs) if isinstance(refs, (list, tuple)) else [refs]
        if not items:
            raise ParameterError(f"{where}: no step given. Pass a step or a list of steps.")
        return [self._step(r, where) for r in items]

    def _instantiate(self, cls: type[TaskData], params: Mapping[str, Any],
                     where: str) -> TaskData:
        """``cls`` with the values in ``params`` of the parameters it declares."""
        declared = dict(cls.get_params())
        for pname, param in declared.items():
            if (pname not in params and param._default is luigi.parameter._no_value
                    and not param.has_task_value(cls.get_task_family(), pname)):
                close = difflib.get_close_matches(
                    pname, [k for k in params if k not in declared], n=1, cutoff=TYPO_CUTOFF)
                typo = f" (params has {close[0]!r}: a typo?)" if close else ""
                raise ParameterError(
                    f"{where}: {cls.__name__} needs a value for its parameter "
                    f"{describe_param(pname, param)}, which has no default{typo}. Pass it: "
                    f"params={{'{pname}': ...}}, or give it a default in "
                    f"@flow.params({pname}=pipeflow.Parameter(default=...))."
                )
        return cls(**{k: v for k, v in params.items() if k in declared})

    def _tasks(self, classes: list[type[TaskData]], params: Any, where: str,
               check: bool = True) -> list[TaskData]:
        """Instances of ``classes`` for one parameter set.

        With ``check``, a name no task of their graphs declares is an error when it is a
        near-miss of a declared name, else ignored with a warning (once per flow and name).
        """
        if not isinstance(params, Mapping):
            raise ParameterError(
                f"{where}: params must be a dict of parameter values "
                f"({{'multiplier': 2}}), not {type(params).__name__}. For several parameter "
                f"sets use multi_params={{'name': {{...}}, ...}}."
            )
        tasks = [self._instantiate(cls, params, where) for cls in classes]
        if check and params:
            check_undeclared(params, graph.build(tasks).families(), where, self._ignored,
                             of="any step of this run")
        return tasks

    def _param_sets(self, cls: type[TaskData], params: Any,
                    where: str) -> tuple[bool, dict[Any, dict[str, Any]]]:
        """(several sets?, the sets by name) given ``params`` or what the step last ran with.

        Raises:
            IncompleteTaskError: ``params`` is None and this flow has not run the step.
        """
        if params is not None:
            if _is_multi(params, cls):
                return True, {k: dict(v) for k, v in params.items()}
            return False, {None: params}
        last = self._last.get(cls.__name__)
        if last is None:
            raise IncompleteTaskError(
                f"{where}: {cls.__name__} has not been run by this flow yet, so there is no "
                f"output (and no parameter set) to load. Run it first: "
                f"flow.run({cls.__name__}) (what is already complete does not run again), "
                f"or pass params={{...}} to load the outputs of a given parameter set."
            )
        kind, value = last
        return (True, dict(value)) if kind == "multi" else (False, {None: value})

    def get_task(self, func: StepRef, params: Mapping[str, Any] | None = None) -> TaskData:
        """The task instance of a step with ``params`` (default: its default values).

        Args:
            func: the step (its function, its name or its task class).
            params: parameter values; names its graph does not declare are left out (with an
                :class:`~pipeflow.errors.UnusedParameterWarning`).

        Raises:
            ParameterError: not a step of this flow, a typo of a parameter name, or a
                required parameter has no value.
        """
        cls = self._step(func, "flow.get_task")
        return self._tasks([cls], params or {}, f"flow.get_task({cls.__name__})")[0]

    # -- running ---------------------------------------------------------------------------
    def run(self, funcs_to_run: StepRef | list[StepRef], params: Mapping[str, Any] | None = None,
            multi_params: Mapping[Any, Mapping[str, Any]] | None = None, *args: Any,
            **kwargs: Any) -> RunResult | dict[Any, RunResult] | None:
        """Run steps (and every step upstream of them that is not complete).

        Args:
            funcs_to_run: a step or a list of steps.
            params: parameter values, given to every step that declares them.
            multi_params: several parameter sets by name, ``{'exp1': {...}, 'exp2':
                {...}}``, run together in one run (a task shared by several sets runs
                once). Then :meth:`outputLoad` returns a dict by name.
            *args: passed on to :func:`pipeflow.run` (``forced``, ``forced_all``, ...).
            **kwargs: options of :func:`pipeflow.run`: ``forced`` (steps too),
                ``forced_all``, ``forced_all_upstream``, ``confirm``, ``workers``,
                ``abort``, ``execution_summary``, ...

        Returns:
            The :class:`~pipeflow.events.RunResult` (with ``multi_params``, a dict of them
            by name, each for that set's tasks); None if a confirmation was declined.

        Raises:
            ParameterError: a near-miss of a declared parameter name (a typo), a wrong
                value, a missing required value, both ``params`` and ``multi_params``.
            TaskFailedError: a step failed (see :func:`pipeflow.run`).

        Example:
            >>> flow.run(scale, params={"multiplier": 42})                    # doctest: +SKIP
            >>> flow.run([scale, other], forced_all_upstream=True)            # doctest: +SKIP
            >>> flow.run(scale, multi_params={"a": {"multiplier": 1},
            ...                               "b": {"multiplier": 2}})       # doctest: +SKIP
        """
        classes = self._steps(funcs_to_run, "flow.run")
        where = f"flow.run({', '.join(c.__name__ for c in classes)})"
        if params is not None and multi_params is not None:
            raise ParameterError(
                f"{where}: both params and multi_params are given, so it is unclear which "
                f"parameters to run with. Pass one: params={{...}} for one parameter set, "
                f"multi_params={{'name': {{...}}, ...}} for several."
            )
        if "forced" in kwargs and kwargs["forced"] is not None:
            kwargs["forced"] = self._forced(kwargs["forced"])
        if multi_params is None:
            tasks = self._tasks(classes, params or {}, where)
            self._remember(tasks, ("single", dict(params or {})))
            return operations.run(tasks, *args, **kwargs)
        sets = _check_multi(multi_params, where)
        roots = {name: self._tasks(classes, p, f"{where} (multi_params {name!r})")
                 for name, p in sets.items()}
        for name, tasks in roots.items():
            self._remember(tasks, ("multi", sets), sets[name])
        result = operations.run([t for ts in roots.values() for t in ts], *args, **kwargs)
        if result is None:
            return None
        nodes = {name: graph.build(ts).nodes for name, ts in roots.items()}
        secret = {n for ns in nodes.values() for c in {type(t) for t in ns}
                  for n, param in c.get_params() if is_secret(param)}
        # a dict per set that a notebook shows as one table (a row per set), not raw reprs
        return FlowResults({name: result.subset(t.task_id for t in ns)
                            for name, ns in nodes.items()}, sets, secret)

    def _forced(self, forced: Any) -> Any:
        items = forced if isinstance(forced, (list, tuple)) else [forced]
        out = [self._step(f, "flow.run(forced=...)") if isinstance(f, (Step, str)) else f
               for f in items]
        return out if isinstance(forced, (list, tuple)) else out[0]

    def _remember(self, roots: list[TaskData], last: tuple[str, Any],
                  params: Mapping[str, Any] | None = None) -> None:
        """Note what each step in the graph of ``roots`` runs with."""
        used = dict(last[1] if params is None else params)
        for t in graph.build(roots).nodes:
            cls = type(t)
            if cls in self._built:
                self._last[cls.__name__] = last
                sets = self.params_used.setdefault(cls.__name__, [])
                if used not in sets:
                    sets.append(used)

    def preview(self, func_to_preview: StepRef | list[StepRef],
                params: Mapping[str, Any] | None = None, *, show_params: bool = True,
                clip_params: bool = False, print_it: bool = True) -> Preview:
        """Print (and return) the status tree of a step.

        Args:
            func_to_preview: a step or a list of steps.
            params: the parameter values to preview with, or several sets by name
                (``{'exp1': {...}, 'exp2': {...}}``). Default: every parameter set the step
                ran with so far (its default values if it has not run).
            show_params: show parameters.
            clip_params: show only one parameter per task.
            print_it: print the tree (it is returned either way).

        Returns:
            The :class:`~pipeflow.display.preview.Preview`, one tree per parameter set.
        """
        classes = self._steps(func_to_preview, "flow.preview")
        where = f"flow.preview({', '.join(c.__name__ for c in classes)})"
        tasks: list[TaskData] = []
        for cls in classes:
            if params is not None:
                sets = ([dict(v) for v in params.values()] if _is_multi(params, cls)
                        else [params])
            else:
                sets = self.params_used.get(cls.__name__) or [{}]
            for p in sets:
                tasks += self._tasks([cls], p, where, check=params is not None)
        tasks = list({t.task_id: t for t in tasks}.values())  # sets may give the same task
        return operations.preview(tasks, show_params=show_params, clip_params=clip_params,
                                  print_it=print_it)

    # -- loading ---------------------------------------------------------------------------
    def outputLoad(self, func_to_run: StepRef, keys: Iterable[str] | None = None,
                   as_dict: bool = False, cached: bool = False, *,
                   params: Mapping[str, Any] | None = None) -> Any:
        """Load the output(s) of a step, for the parameters it last ran with.

        Args:
            func_to_run: the step.
            keys: names of the outputs to load (default: all).
            as_dict: return ``{name: data}`` instead of a list for several outputs.
            cached: keep the loaded data in memory and reuse it.
            params: load this parameter set (or these sets by name) instead of the last
                run's.

        Returns:
            The data; after a ``multi_params`` run, ``{name: data}`` per parameter set.

        Raises:
            IncompleteTaskError: the step has not been run by this flow (and no
                ``params`` are given), or its outputs are not complete. It is a
                ``RuntimeError``, as d6tflow's error was.
        """
        cls = self._step(func_to_run, "flow.outputLoad")
        where = f"flow.outputLoad({cls.__name__})"
        multi, sets = self._param_sets(cls, params, where)
        out = {name: self._tasks([cls], p, where, check=params is not None)[0]
               .outputLoad(keys=keys, as_dict=as_dict, cached=cached)
               for name, p in sets.items()}
        return out if multi else out[None]

    def outputLoadAll(self, func_to_run: StepRef, keys: Iterable[str] | None = None,
                      as_dict: bool = False, cached: bool = False, *,
                      params: Mapping[str, Any] | None = None) -> dict[Any, Any]:
        """Load the outputs of a step and of every task upstream of it, by task name.

        Args and Raises: as :meth:`outputLoad`.

        Returns:
            ``{task name: data}``; after a ``multi_params`` run, one such dict per
            parameter set, by name.
        """
        cls = self._step(func_to_run, "flow.outputLoadAll")
        where = f"flow.outputLoadAll({cls.__name__})"
        multi, sets = self._param_sets(cls, params, where)
        out: dict[Any, Any] = {}
        for name, p in sets.items():
            task = self._tasks([cls], p, where, check=params is not None)[0]
            out[name] = {t.task_family: t.outputLoad(keys=keys, as_dict=as_dict, cached=cached)
                         for t in operations.taskflow_upstream(task) if isinstance(t, TaskData)}
        return out if multi else out[None]

    # -- resetting and deleting ------------------------------------------------------------
    def reset(self, func_to_reset: StepRef, params: Mapping[str, Any] | None = None,
              confirm: bool = False) -> bool:
        """Delete a step's outputs so it runs again (its downstream steps then run too).

        Args:
            func_to_reset: the step (its function or its name).
            params: reset this parameter set (or these sets by name). Default: every
                parameter set the step ran with so far in this flow; a step this flow has
                not run has nothing to reset (pass ``params={}`` for its default values).
            confirm: ask before deleting.

        Returns:
            False if a confirmation was declined, else True.
        """
        cls = self._step(func_to_reset, "flow.reset")
        where = f"flow.reset({cls.__name__})"
        sets: list[Mapping[str, Any]]
        if params is None:
            sets = list(self.params_used.get(cls.__name__, []))
            check = False
        else:
            sets = [dict(v) for v in params.values()] if _is_multi(params, cls) else [params]
            check = True
        tasks = {t.task_id: t for p in sets for t in self._tasks([cls], p, where, check=check)}
        done = True
        for task in tasks.values():
            done = bool(task.reset(confirm=confirm)) and done
        return done

    def resetAll(self, confirm: bool = False) -> bool:
        """Reset every step, for every parameter set it ran with so far in this flow.

        Returns:
            False if a confirmation was declined, else True.
        """
        done = True
        for name in list(self.steps):
            done = self.reset(name, confirm=confirm) and done
        return done

    def delete(self, func_to_reset: StepRef, confirm: bool = False) -> bool:
        """Delete the outputs of every task of a step this flow knows, so it runs again.

        The tasks are the step with every parameter set it ran with so far in this flow,
        plus its default parameter values (as d6tflow's ``delete`` used). Unlike d6tflow's
        ``delete``, which deleted every file in the step's folder, this goes through
        pipeflow's reset: only outputs a pipeflow run committed for those tasks (and their
        in-memory outputs) are deleted, each task under its lock. Other files in the
        folder, the folder itself and the outputs of parameter sets this flow object never
        ran (an earlier session's) stay: clean those with
        ``pipeflow.invalidate_orphans(...)`` or ``pipeflow.invalidate_all()``.

        Args:
            func_to_reset: the step (its function or its name).
            confirm: ask before deleting.

        Returns:
            False if a confirmation was declined, else True.

        Raises:
            TaskLockedError: a task of the step is running right now.
        """
        return self._delete(self._step(func_to_reset, "flow.delete"), confirm)

    def deleteAll(self, confirm: bool = False) -> bool:
        """:meth:`delete` every step of the flow (same limits: committed outputs only).

        Returns:
            False if a confirmation was declined, else True.
        """
        done = True
        for cls in list(self.steps.values()):
            done = self._delete(cls, confirm) and done
        return done

    def _delete(self, cls: type[TaskData], confirm: bool) -> bool:
        where = f"flow.delete({cls.__name__})"
        sets: list[Mapping[str, Any]] = list(self.params_used.get(cls.__name__, []))
        if {} not in sets:
            sets.append({})
        tasks: dict[str, TaskData] = {}
        for p in sets:
            try:
                task = self._tasks([cls], p, where, check=False)[0]
            except ParameterError:
                continue  # no default for a parameter: the default set does not exist
            tasks.setdefault(task.task_id, task)
        done = True
        for task in tasks.values():
            done = bool(task.reset(confirm=confirm)) and done
        return done


def _check_task_type(task_type: Any) -> None:
    """Raise unless ``task_type`` is a pipeflow data task class a step can be made of."""
    fix = (f"Pass a pipeflow task class, e.g. @flow.task({_EXAMPLE_TYPE}) or "
           f"@flow.task(pipeflow.tasks.TaskPqPandas).")
    if task_type is None:
        raise ParameterError(f"@flow.task() needs the task type of the step. {fix}")
    if isinstance(task_type, types.FunctionType):
        raise ParameterError(
            f"@flow.task is used without a task type above {task_type.__name__}, so the "
            f"format of its output is unknown. Write @flow.task({_EXAMPLE_TYPE}) (with the "
            f"parentheses and the type)."
        )
    if isinstance(task_type, luigi.Task):
        raise ParameterError(
            f"@flow.task takes a task class, not the instance {task_type!r}. Write "
            f"@flow.task({type(task_type).__name__})."
        )
    if not (isinstance(task_type, type) and issubclass(task_type, TaskData)):
        kind = ("a luigi task class but not a pipeflow data task, so its outputs cannot be "
                "saved and loaded" if isinstance(task_type, type)
                and issubclass(task_type, luigi.Task) else "not a task class")
        raise ParameterError(f"@flow.task({task_type!r}): it is {kind}. {fix}")
    if task_type.target_class is DataTarget:
        raise ParameterError(
            f"@flow.task({task_type.__name__}): it has no storage format (its target_class "
            f"is the abstract DataTarget), so the step could not save. {fix}"
        )
    if task_type.external:
        raise ParameterError(
            f"@flow.task({task_type.__name__}): it is external (made outside the flow), so "
            f"pipeflow would never run the step's function. Use a task type with "
            f"external = False."
        )


def _check_param(name: str, param: Any, cls: type, where: str) -> None:
    if not isinstance(param, luigi.Parameter):
        raise ParameterError(
            f"{where}({name}={param!r}): the value must be a parameter object, which "
            f"declares the parameter; its value is given when running. Write "
            f"{where}({name}=pipeflow.Parameter(default={param!r})) (or IntParameter, "
            f"FloatParameter, ...) and flow.run(step, params={{'{name}': ...}})."
        )
    current = getattr(cls, name, None)
    if (name.startswith("_") or not name.isidentifier()
            or (hasattr(cls, name) and not isinstance(current, luigi.Parameter))):
        raise ParameterError(
            f"{where}: '{name}' cannot be a parameter name: "
            + (f"it would replace {cls.__name__}.{name}, which the task needs. "
               if hasattr(cls, name) else "it must be a plain name not starting with '_'. ")
            + "Choose another name."
        )


def _bound(param: luigi.Parameter, cls: type | None, name: str) -> luigi.Parameter:
    """``param`` named ``name`` (a copy if it already serves under another name).

    luigi >= 3.5 finds a parameter's value through the name ``__set_name__`` gave it.
    Class creation calls it for the namespace; a parameter set on an existing class
    (``cls``) gets the call here.
    """
    if getattr(param, "_attribute_name", None) not in (None, name):
        param = copy.copy(param)
    set_name = getattr(param, "__set_name__", None)  # luigi < 3.5 has none
    if cls is not None and set_name is not None:
        set_name(cls, name)
    return param


def _is_multi(params: Any, cls: type[TaskData]) -> bool:
    """Whether ``params`` holds several parameter sets by name rather than values."""
    if not isinstance(params, Mapping) or not params:
        return False
    declared = {n for n, _ in cls.get_params()}
    return (all(isinstance(v, Mapping) for v in params.values())
            and not any(k in declared for k in params))


def _check_multi(multi_params: Any, where: str) -> dict[Any, dict[str, Any]]:
    if (not isinstance(multi_params, Mapping) or not multi_params
            or not all(isinstance(v, Mapping) for v in multi_params.values())):
        raise ParameterError(
            f"{where}: multi_params must be a non-empty dict of parameter sets by name, "
            f"{{'exp1': {{'multiplier': 1}}, 'exp2': {{'multiplier': 2}}}}, not "
            f"{multi_params!r}. For a grid of values, build it with "
            f"pipeflow.utils.params_generator_multiple({{'multiplier': [1, 2]}})."
        )
    return {k: dict(v) for k, v in multi_params.items()}
