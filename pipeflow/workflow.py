"""``Workflow`` and ``WorkflowMulti``: a task class plus parameters, previewed, run, loaded.

A Workflow hands its parameters to every task class it instantiates (each class takes the
parameters it declares) and places outputs under its ``path``/``env`` without touching any
task instance, so two Workflows never leak settings into each other.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import pathlib
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import luigi

from pipeflow import contract, display, graph, layout, operations, runstore, settings
from pipeflow.display import rich
from pipeflow.display.dag import GROUP_ABOVE, Dag
from pipeflow.display.preview import Preview
from pipeflow.display.rich import FlowPreviews, FlowResets, FlowResults, Reset
from pipeflow.engines import CancelToken
from pipeflow.errors import (
    IncompleteTaskError,
    MissingTaskError,
    OutputError,
    ParameterError,
    listing,
)
from pipeflow.events import RunResult
from pipeflow.options import RunOptions, flag
from pipeflow.parameters import MASK, check_undeclared, check_value, is_secret
from pipeflow.tasks import TaskAggregator, TaskData, located

if TYPE_CHECKING:
    import pandas as pd

TaskArg = Any  # a task class, a task instance, or None for the default task


class Workflow:
    """A pipeline: a default task class and the parameters to run it with.

    Args:
        task: the default task class (the most downstream task you want). A dict here is
            taken as ``params`` (d6tflow code writes ``Workflow({...})``, then
            ``set_default``).
        params: parameters, handed to every task class that declares them. A near-miss of
            a declared name (``learning_rat``) is an error with a "did you mean"; any other
            name no task of the flow declares is ignored with an
            :class:`~pipeflow.errors.UnusedParameterWarning` (d6tflow code shares one params
            dict across flows).
        path: the folder for this flow's outputs instead of the data dir, relative to the
            working directory or absolute (``path='data/exp1'`` writes
            ``data/exp1/Train/...``), as in d6tflow.
        env: environment name: outputs go below ``{path}/env={env}`` (without ``path``:
            below the default task class's ``path``, or the data dir).

    Example:
        >>> flow = pipeflow.Workflow(TaskTrain, {"model": "ols"})  # doctest: +SKIP
        >>> flow.preview()                                      # doctest: +SKIP
        >>> flow.run()                                          # doctest: +SKIP
        >>> model = flow.outputLoad()                           # doctest: +SKIP
        >>> flow.reset(TaskPreprocess)                          # doctest: +SKIP
    """

    def __init__(self, task: type[luigi.Task] | None = None,
                 params: Mapping[str, Any] | None = None,
                 path: str | pathlib.Path | None = None, env: str | None = None) -> None:
        if isinstance(task, Mapping) and params is None:
            task, params = None, task
        if task is not None:
            _check_task_class(task, "Workflow(task=...)")
        if params is not None and not isinstance(params, Mapping):
            raise ParameterError(
                f"Workflow params must be a dict of parameter values, not "
                f"{type(params).__name__}. For several parameter sets use WorkflowMulti."
            )
        self.default_task = task
        self.params: dict[str, Any] = dict(params or {})
        self.path = path
        self.env = env
        owner = f"Workflow({getattr(task, '__name__', None)})"
        root = layout.location(path, "path", owner)
        if root is not None:
            settings.check_folder(root, "path", owner)
        env_name = layout.folder_name(env, "env", owner)
        if root is None and env_name is not None and task is not None:
            # d6tflow: an env without a path goes below the default task's own folder
            own = getattr(task, "path", None)
            root = layout.location(own, "path", task.__name__) if isinstance(
                own, (str, os.PathLike)) else None
        self._flows: dict[str, Any] = {}
        self._context = layout.FlowContext(root, env_name, {})
        self._checked: set[type[luigi.Task]] = set()
        self._ignored: set[str] = set()
        self._tokens: weakref.WeakSet[CancelToken] = weakref.WeakSet()
        if task is not None:
            self._check_params(task)

    # -- tasks ---------------------------------------------------------------------------------
    def _instantiate(self, cls: type[luigi.Task]) -> luigi.Task:
        names = {n for n, _ in cls.get_params()}
        kwargs = {k: v for k, v in self.params.items() if k in names}
        ctx = self._context
        if (ctx.places or ctx.flows) and issubclass(cls, TaskData):
            return located(cls, ctx, (), kwargs)  # keeps the flow's location outside it too
        return cls(**kwargs)

    def _check_params(self, cls: type[luigi.Task]) -> None:
        if not self.params or cls in self._checked:
            return
        roots = [cls] if self.default_task in (None, cls) else [self.default_task, cls]
        classes: dict[type[luigi.Task], None] = {}
        for root in roots:
            for c in graph.build([self._instantiate(root)]).families():
                classes.setdefault(c, None)
        check_undeclared(self.params, list(classes), f"Workflow({roots[0].__name__}, params)",
                         self._ignored)
        self._checked.add(cls)

    def get_task(self, task: TaskArg = None) -> Any:
        """The task instance for ``task`` (default: the default task) with this flow's params.

        Raises:
            ParameterError: a parameter no task of the flow declares, or a missing value.
        """
        if isinstance(task, luigi.Task):
            return contract.current_task(task)
        cls = self.default_task if task is None else task
        if cls is None:
            raise MissingTaskError(
                "this Workflow has no default task: pass a task class "
                "(flow.run(TaskTrain)) or set one (Workflow(TaskTrain) / flow.set_default())."
            )
        _check_task_class(cls, "Workflow task")
        cls = contract.newest_class(cls)  # a class redefined since: its newest definition
        self._check_params(cls)
        return self._instantiate(cls)

    def _tasks(self, tasks: TaskArg) -> list[Any]:
        items = tasks if isinstance(tasks, (list, tuple)) else [tasks]
        return [self.get_task(t) for t in items]

    def set_default(self, task: type[luigi.Task]) -> None:
        """Make ``task`` the default task of the flow."""
        _check_task_class(task, "set_default")
        self._check_params(task)
        self.default_task = task

    def attach_flow(self, flow: Any = None, flow_name: str = "flow") -> None:
        """Make another Workflow available to this flow's tasks as ``self.flows[flow_name]``."""
        self._flows[flow_name] = flow
        ctx = self._context
        self._context = layout.FlowContext(ctx.root, ctx.env, dict(self._flows))

    # -- context -------------------------------------------------------------------------------
    def context(self) -> layout.FlowContext:
        """The flow context this Workflow runs its tasks in (path, env, attached flows)."""
        return self._context

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        with layout.flow_context(self._context):
            yield

    # -- status and running --------------------------------------------------------------------
    def preview(self, tasks: TaskArg = None, indent: str = "", last: bool = True,
                show_params: bool = True, clip_params: bool = False,
                print_it: bool = True) -> Preview:
        """Print and return the status tree of the flow (or of ``tasks``)."""
        with self._active():
            return operations.preview(self._tasks(tasks), indent, last, show_params,
                                      clip_params, print_it)

    def dag(self, tasks: TaskArg = None, group: bool = True,
            group_above: int = GROUP_ABOVE) -> Dag:
        """A picture of the flow (or of ``tasks``), coloured by status.

        See :func:`pipeflow.dag`: Jupyter shows it inline; ``.save("flow.svg")`` (or
        ``.png``, ``.dot``, ``.mmd``) writes it.
        """
        with self._active():
            return operations.dag(self._tasks(tasks), group, group_above)

    def run(self, tasks: TaskArg = None, **options: Any) -> RunResult | None:
        """Run the flow: every task upstream of ``tasks`` that is not complete.

        Args:
            tasks: the task class (or list of them) to run; default: the default task.
            **options: the options of :func:`pipeflow.run` (``forced`` takes task classes,
                ``workers``, ``executor``, ``if_locked``, ``callbacks``...); a misspelt
                one raises :class:`~pipeflow.errors.ParameterError`. Another thread (or a
                callback) can stop the run with :meth:`cancel`.

        Returns:
            The :class:`~pipeflow.events.RunResult` (None if a confirmation was declined).
        """
        opts = RunOptions.of(**options)
        token = opts.cancel or CancelToken()  # flow.cancel() stops it too
        self._tokens.add(token)
        try:
            with self._active():
                return operations.run_with(self._tasks(tasks), opts.but(cancel=token))
        finally:
            self._tokens.discard(token)

    def start(self, tasks: TaskArg = None, **options: Any) -> operations.RunHandle:
        """Start :meth:`run` in the background; return a handle to watch, cancel, wait.

        Iterating the handle yields the run's events as they happen. In a notebook, a later
        cell can call ``flow.cancel()`` or ``handle.cancel()``.
        """
        with self._active():
            handle = operations.start(self._tasks(tasks), **options)
        self._tokens.add(handle.token)
        return handle

    def cancel(self) -> None:
        """Cancel this flow's runs in progress: no new task starts, running ones stop."""
        for token in list(self._tokens):
            token.cancel()

    def history(self, tasks: TaskArg = None, **filters: Any) -> Any:
        """Recorded attempts of the flow's tasks: see :func:`pipeflow.history`.

        A compact table by default; ``full=True`` for every recorded column, raw.
        """
        with self._active():
            nodes = graph.build(self._tasks(tasks)).nodes
        return runstore.history(tasks=nodes, **filters)

    def adopt(self, tasks: TaskArg = None) -> list[luigi.Task]:
        """Commit existing d6tflow outputs of the flow: see :func:`pipeflow.adopt`."""
        with self._active():
            return operations.adopt(self._tasks(tasks))

    def complete(self, task: TaskArg = None, cascade: bool = True) -> bool:
        """Whether ``task`` (default: the default task) is complete."""
        with self._active():
            return bool(self.get_task(task).complete(cascade=cascade))

    # -- outputs ---------------------------------------------------------------------------------
    def output(self, task: TaskArg = None) -> Any:
        """The output target(s) of ``task``."""
        with self._active():
            return self.get_task(task).output()

    def outputPath(self, task: TaskArg = None) -> Any:
        """The output path of ``task``, or a dict of paths when it has several outputs."""
        out = self.output(task)
        if isinstance(out, dict):
            return {k: v.path for k, v in out.items()}
        return out.path

    def outputLoad(self, task: TaskArg = None, keys: Any = None, as_dict: bool = False,
                   cached: bool = False) -> Any:
        """Load the output(s) of ``task`` (default: the default task)."""
        with self._active():
            return self.get_task(task).outputLoad(keys=keys, as_dict=as_dict, cached=cached)

    def outputLoadAll(self, task: TaskArg = None, keys: Any = None, as_dict: bool = False,
                      cached: bool = False) -> dict[str, Any]:
        """Load the outputs of ``task`` and every task upstream of it, by task family."""
        with self._active():
            out: dict[str, Any] = {}
            for t in operations.taskflow_upstream(self.get_task(task)):
                if isinstance(t, TaskData):
                    out[type(t).__name__] = t.outputLoad(keys=keys, as_dict=as_dict,
                                                         cached=cached)
            return out

    def outputLoadMeta(self, task: TaskArg = None) -> Any:
        """Load the metadata ``task`` saved with ``saveMeta``."""
        with self._active():
            return self.get_task(task).outputLoadMeta()

    def outputLoadAllMeta(self, task: TaskArg = None) -> dict[str, Any]:
        """Metadata of ``task`` and every upstream task that saved some, by family."""
        with self._active():
            return self.get_task(task).outputLoadAllMeta()

    def expected_files(self) -> set[pathlib.Path]:
        """Every file the default task's flow writes (used by ``invalidate_orphans``)."""
        with self._active():
            return operations.expected_files(self.get_task())

    # -- resetting -------------------------------------------------------------------------------
    def reset(self, task: TaskArg = None, confirm: bool = False) -> Reset:
        """Delete the outputs of ``task`` (a class or a list of classes) so it runs again.

        Returns:
            A :class:`~pipeflow.display.rich.Reset` naming the tasks whose outputs were
            deleted (``reset 1 task: Train(alpha=0.5)``); truthy unless the user declined.
        """
        with self._active():
            deleted: list[luigi.Task] = []
            declined = False
            for t in self._tasks(task):
                had = operations._deletable(t.members() if isinstance(t, TaskAggregator)
                                            else [t])
                if t.reset(confirm=confirm):
                    deleted += had
                else:
                    declined = True
            return Reset(deleted, declined)

    def reset_upstream(self, task: TaskArg = None, confirm: bool = False) -> Reset:
        """Delete the outputs of ``task`` and of every task upstream of it.

        Returns:
            A :class:`~pipeflow.display.rich.Reset` naming the tasks whose outputs were
            deleted; truthy unless the user declined.
        """
        with self._active():
            root = self.get_task(task)
            doomed = operations._deletable(operations.taskflow_upstream(root)[::-1])
            done = operations.invalidate_upstream(root, confirm=confirm)
            return Reset(doomed if done else [], declined=not done)

    def reset_downstream(self, task: TaskArg, task_downstream: TaskArg = None,
                         confirm: bool = False) -> Reset:
        """Delete the outputs of ``task`` and of everything downstream of it.

        Downstream stops at ``task_downstream`` (default: the default task).

        Returns:
            A :class:`~pipeflow.display.rich.Reset` naming the tasks whose outputs were
            deleted; truthy unless the user declined.
        """
        with self._active():
            last = self.get_task(task_downstream)
            doomed = operations._deletable(
                sorted(operations.taskflow_downstream(task, last), key=lambda t: t.task_id))
            done = operations.invalidate_downstream(task, last, confirm=confirm)
            return Reset(doomed if done else [], declined=not done)


def _resets(done: Any) -> Any:
    """Resets of several flows (a dict) as one display; one flow's Reset as it is."""
    return FlowResets(done) if isinstance(done, dict) else done


def _check_task_class(task: Any, where: str) -> None:
    if isinstance(task, type) and issubclass(task, luigi.Task):
        return
    if isinstance(task, luigi.Task):
        raise ParameterError(
            f"{where} takes a task class, not the instance {graph.describe(task)}: write "
            f"Workflow({type(task).__name__}, params) and the flow instantiates it."
        )
    if isinstance(task, (list, tuple)):
        raise ParameterError(
            f"{where} takes one task class, not a {type(task).__name__} of them: a Workflow "
            f"has one default task. Pass several tasks to run: flow.run([TaskA, TaskB])."
        )
    raise ParameterError(f"{where} takes a task class, not {task!r}.")


def expand_params(params: Any, secret: Collection[str] = (),
                  task: type[luigi.Task] | None = None) -> dict[Any, dict[str, Any]]:
    """Normalise WorkflowMulti params to ``{flow_name: params}``.

    Accepts ``{name: params}``, a list of params (named 0, 1, ...) or a grid
    ``{'a': [1, 2], 'b': [3]}`` (every combination, named ``'a=1,b=3'``...). Values of
    ``secret`` parameters are never put in a name: they show as ``***1``, ``***2``...

    Raises:
        ParameterError: ``params`` has none of those shapes, or two values of a grid are one
            value to the parameter (``1`` and ``'1'`` to a plain Parameter, which identifies
            a value by its text): their flows would be one task, so one flow would be lost.
    """
    if isinstance(params, (list, tuple)):
        if not all(isinstance(p, Mapping) for p in params):
            raise ParameterError("WorkflowMulti params as a list must be a list of dicts.")
        return {i: dict(p) for i, p in enumerate(params)}
    if isinstance(params, Mapping) and params:
        values = list(params.values())
        if all(isinstance(v, Mapping) for v in values):
            return {k: dict(v) for k, v in params.items()}
        if all(isinstance(v, (list, tuple)) and v for v in values):
            keys = list(params)
            for k, vs in zip(keys, values):
                _check_distinct(task, k, vs, k in secret)
            shown = [[f"{MASK}{i + 1}" if k in secret else v for i, v in enumerate(vs)]
                     for k, vs in zip(keys, values)]
            flows = {
                ",".join(f"{k}={v}" for k, v in zip(keys, names)): dict(zip(keys, combo))
                for combo, names in zip(itertools.product(*values), itertools.product(*shown))
            }
            if len(flows) < math.prod(len(vs) for vs in values):
                grid = list(params) if secret else params
                raise ParameterError(
                    f"WorkflowMulti grid {grid!r}: two "
                    f"combinations of its values get the same flow name (a value's text holds "
                    f"',' or '='), so one flow would be lost. Pass {{flow_name: params}} "
                    f"instead, naming each flow.")
            return flows
    raise ParameterError(
        f"WorkflowMulti params must be {{flow_name: params}}, a list of params, or a grid "
        f"{{'param': [values...]}} (non-empty lists); got {params!r}."
    )


def _check_distinct(task: type[luigi.Task] | None, name: str, values: Iterable[Any],
                    secret: bool) -> None:
    """ParameterError if two grid values of parameter ``name`` are one value to ``task``.

    A value is identified as the task id holds it: the parameter's text of its checked value
    (a plain Parameter's is ``str(value)``, so ``1`` and ``'1'`` are one task); a parameter
    the default task does not declare is identified by ``str(value)``.
    """
    param = dict(task.get_params()).get(name) if task is not None else None
    seen: dict[str, Any] = {}
    for value in values:
        text = (str(value) if param is None or task is None
                else param.serialize(check_value(task, name, param, value)))
        if text not in seen:
            seen[text] = value
            continue
        first = seen[text]
        if secret:
            shown = "two of its values"
        elif first == value and type(first) is type(value):
            shown = f"the value {value!r} twice"
        else:
            shown = f"the values {first!r} and {value!r}, which are one value to it"
        where = (f"parameter {name!r}" if task is None or param is None
                 else f"{task.__name__}'s parameter {name!r}")
        plain = param is None or type(param) in (luigi.Parameter, luigi.OptionalParameter)
        fix = ("A plain Parameter identifies a value by its text (str(value)), as in luigi "
               "and d6tflow, so they are one task and their flows would share outputs. Give "
               "each value once, or declare the parameter typed (luigi.IntParameter, "
               "FloatParameter, BoolParameter...) to tell them apart." if plain
               else "They are one task, so their flows would share outputs. Give each value "
                    "once.")
        raise ParameterError(f"WorkflowMulti grid: {where} has {shown} (both written "
                             f"{MASK if secret else repr(text)} in the task id). {fix}")


def _d6tflow_names(given: Any, flows: Mapping[Any, Mapping[str, Any]]) -> dict[str, Any]:
    """d6tflow's names of a grid's flows (``'model_ols_scale_False'``, keys sorted) -> ours.

    A name two flows would share (values with underscores can collide) is left out.
    """
    if not (isinstance(given, Mapping) and given
            and all(isinstance(v, (list, tuple)) for v in given.values())):
        return {}
    out: dict[str, Any] = {}
    clashes: set[str] = set()
    for name, params in flows.items():
        alias = "_".join(f"{k}_{params[k]}" for k in sorted(params))
        if alias in out:
            clashes.add(alias)
        out[alias] = name
    return {a: n for a, n in out.items() if a not in clashes and a not in flows}


def _flatten(data: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """``data`` on one level: nested dicts give dotted names (``cv.mean``)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v})
    return out


def _as_row(data: Any, name: str, prefix: str = "") -> dict[str, Any] | None:
    """``data`` as the columns of one row (a scalar in column ``name``), or None if it cannot be."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        if len(data) != 1:
            return None
        data = data.iloc[0]
    if isinstance(data, pd.Series):
        data = data.to_dict()
    if isinstance(data, Mapping):
        return _flatten(data, prefix)
    return {name: data} if pd.api.types.is_scalar(data) else None


def _no_row(flow: Any, task: luigi.Task, key: str | None, data: Any,
            persist: list[str]) -> OutputError:
    """The error for an output that cannot be one row of :meth:`WorkflowMulti.results`."""
    shape = getattr(data, "shape", None)
    size = (f" of shape {tuple(shape)}" if shape is not None
            else f" of length {len(data)}" if hasattr(data, "__len__") else "")
    what = f"output {key!r}" if len(persist) > 1 else "output"
    other = next((k for k in persist if k != key), persist[0])
    fix = (f"pass keys= to choose an output that can (its outputs are {persist}), e.g. "
           f"flows.results({task.task_family}, keys={other!r})" if len(persist) > 1
           else "make the task save a dict of metrics (self.save({'accuracy': ...})), or "
           "pick a task that does: flows.results(task=...)")
    kind = type(data).__name__
    return OutputError(
        f"results(): in flow {flow!r}, the {what} of {graph.describe(task)} is "
        f"{'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind}{size}, which cannot be one row "
        f"of the results table (a row takes a dict, a scalar, a Series or a one-row "
        f"DataFrame). To fix it, {fix}."
    )


def _column(values: list[Any], index: pd.Index) -> pd.Series:
    """A parameter column; ints with gaps stay ints (nullable ``Int64``), not floats."""
    import pandas as pd

    present = [v for v in values if v is not None]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in present)
    gaps = 0 < len(present) < len(values)
    return pd.Series(values, index=index, dtype="Int64" if ints and gaps else None)


class WorkflowMulti:
    """The same flow for several parameter sets; tasks shared by flows run once.

    Args:
        task: the default task class.
        params: ``{flow_name: params}``, a list of params, or a grid
            ``{'model': ['ols', 'gbm'], 'alpha': [0.1, 1]}`` (cartesian product).
        path: sub-folder of the data dir for the outputs.
        env: environment name.

    Example:
        >>> flows = pipeflow.WorkflowMulti(TaskTrain, {"model": ["ols", "gbm"]})  # doctest: +SKIP
        >>> flows.run()                                                     # doctest: +SKIP
        >>> scores = flows.outputLoad(TaskEvaluate)  # {'model=ols': ..., 'model=gbm': ...}
    """

    def __init__(self, task: type[luigi.Task] | None = None, params: Any = None,
                 path: str | pathlib.Path | None = None, env: str | None = None) -> None:
        if task is not None:
            _check_task_class(task, "WorkflowMulti(task=...)")
        secret = {n for n, p in task.get_params() if is_secret(p)} if task is not None else ()
        self.params = expand_params(params, secret, task)
        self.default_task = task
        self.workflow_objs: dict[Any, Workflow] = {
            name: Workflow(task, p, path=path, env=env) for name, p in self.params.items()
        }
        self._aliases = _d6tflow_names(params, self.params)
        self._tokens: weakref.WeakSet[CancelToken] = weakref.WeakSet()

    def get_flow(self, flow: Any) -> Workflow:
        """The Workflow of one parameter set.

        A grid's flows are named ``'model=ols,scale=False'``; d6tflow's names for them
        (``'model_ols_scale_False'``) are accepted too.

        Raises:
            ParameterError: there is no flow of that name.
        """
        name = self._aliases.get(flow, flow) if flow not in self.workflow_objs else flow
        try:
            return self.workflow_objs[name]
        except (KeyError, TypeError):
            raise ParameterError(
                f"this WorkflowMulti has no flow named {flow!r}; its flows are "
                f"{list(self.workflow_objs)}."
            ) from None

    def _select(self, flow: Any) -> dict[Any, Workflow]:
        if flow is None:
            return dict(self.workflow_objs)
        names = flow if isinstance(flow, list) else [flow]
        if not names:
            raise ParameterError(
                f"flow=[] selects no flow; pass a flow name, a list of them, or None for every "
                f"flow: {list(self.workflow_objs)}.")
        return {n: self.get_flow(n) for n in names}

    def _each(self, flow: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        out = {n: getattr(wf, method)(*args, **kwargs) for n, wf in self._select(flow).items()}
        return out if flow is None or isinstance(flow, list) else out[flow]

    def set_default(self, task: type[luigi.Task]) -> None:
        """Make ``task`` the default task of every flow."""
        self.default_task = task
        self._each(None, "set_default", task)

    def attach_flow(self, flow: Any = None, flow_name: str = "flow") -> None:
        """Attach another Workflow to every flow (see :meth:`Workflow.attach_flow`)."""
        self._each(None, "attach_flow", flow, flow_name)

    def get_task(self, task: TaskArg = None, flow: Any = None) -> Any:
        """The task instance per flow (``{flow_name: task}``; one task if ``flow`` given)."""
        return self._each(flow, "get_task", task)

    def preview(self, tasks: TaskArg = None, flow: Any = None, indent: str = "",
                last: bool = True, show_params: bool = True, clip_params: bool = False,
                print_it: bool = True) -> Any:
        """Show and return each flow's status tree.

        In a terminal or a script each flow's tree is printed, after a ``flow 'name':``
        line. In a notebook one table is shown instead, a row per flow (its parameters,
        how many tasks are complete, stale, pending); ``previews[name]`` shows a flow's tree.

        Returns:
            A :class:`~pipeflow.display.rich.FlowPreviews` (a dict ``{flow_name: Preview}``
            that displays as that table), or one Preview when ``flow`` names a single flow.
        """
        notebook = print_it and rich.draws_html()
        if flow is not None and not isinstance(flow, list):
            wf = self.get_flow(flow)
            if print_it and not notebook:
                display.emit(f"flow {flow!r}:")
            return wf.preview(tasks, indent, last, show_params, clip_params, print_it)
        out = {}
        for name, wf in self._select(flow).items():
            if print_it and not notebook:
                display.emit(f"flow {name!r}:")
            out[name] = wf.preview(tasks, indent, last, show_params, clip_params,
                                   print_it and not notebook)
        secret = {n for p in out.values() for c in p.plan.graph.families()
                  for n, param in c.get_params() if is_secret(param)}
        previews = FlowPreviews(out, self.params, secret)
        if notebook:
            rich.show(previews._plain(), previews._repr_html_())
            previews.mark_shown()
        return previews

    def dag(self, tasks: TaskArg = None, flow: Any = None, group: bool = True,
            group_above: int = GROUP_ABOVE) -> Dag:
        """One picture of the selected flows (all by default): shared tasks drawn once.

        See :func:`pipeflow.dag`; ``flow`` is a flow name or a list of them.
        """
        selected = self._select(flow)
        first = next(iter(selected.values()))
        with first._active():
            roots = [t for wf in selected.values() for t in wf._tasks(tasks)]
            return operations.dag(roots, group, group_above)

    def run(self, tasks: TaskArg = None, flow: Any = None, **options: Any) -> Any:
        """Run the selected flows (all by default) as one run, so shared tasks run once.

        Args:
            tasks: the task class (or list of them) to run; default: the default task.
            flow: a flow name or a list of names (default: every flow).
            **options: the options of :func:`pipeflow.run`.

        Returns:
            A :class:`~pipeflow.display.rich.FlowResults`: ``{flow_name: RunResult}``
            (each restricted to that flow's tasks), truthy when every flow succeeded, that
            a notebook shows as one table (a row per flow); or one RunResult when ``flow``
            names a single flow.
        """
        opts = RunOptions.of(**options)
        selected = self._select(flow)
        first = next(iter(selected.values()))
        roots: dict[Any, list[luigi.Task]] = {}
        token = opts.cancel or CancelToken()  # flows.cancel() stops it too
        self._tokens.add(token)
        try:
            with first._active():
                for name, wf in selected.items():
                    roots[name] = wf._tasks(tasks)
                result = operations.run_with([t for ts in roots.values() for t in ts],
                                             opts.but(cancel=token))
        finally:
            self._tokens.discard(token)
        if result is None:
            return None
        nodes = {name: graph.build(ts).nodes for name, ts in roots.items()}
        out = {name: result.subset(t.task_id for t in ns) for name, ns in nodes.items()}
        if flow is not None and not isinstance(flow, list):
            return out[flow]
        secret = {n for ns in nodes.values() for c in {type(t) for t in ns}
                  for n, param in c.get_params() if is_secret(param)}
        return FlowResults(out, self.params, secret)

    def history(self, tasks: TaskArg = None, flow: Any = None, **filters: Any) -> Any:
        """Recorded attempts of the tasks of the selected flows: see :func:`pipeflow.history`.

        One table for all the selected flows, newest first; a task the flows share (an
        upstream task without the swept parameters) counts once.

        Args:
            tasks: the task class (or list of them) whose flow to look at; default: the
                default task (its upstream tasks included).
            flow: a flow name or a list of names (default: every flow).
            **filters: the filters of :func:`pipeflow.history`: ``status``, ``run``,
                ``last``, ``family``, and ``full=True`` for every recorded column, raw
                (a compact table by default).

        Raises:
            ParameterError: no flow of that name, or a filter :func:`pipeflow.history`
                refuses.

        Example:
            >>> flows.history(status="failed")                 # doctest: +SKIP
            >>> flows.history(flow="model=gbm", full=True)     # doctest: +SKIP
        """
        nodes: dict[str, luigi.Task] = {}
        for wf in self._select(flow).values():
            with wf._active():
                for t in graph.build(wf._tasks(tasks)).nodes:
                    nodes.setdefault(t.task_id, t)
        return runstore.history(tasks=list(nodes.values()), **filters)

    def cancel(self) -> None:
        """Cancel the runs of these flows in progress."""
        for token in list(self._tokens):
            token.cancel()

    def complete(self, task: TaskArg = None, flow: Any = None, cascade: bool = True) -> Any:
        """Whether ``task`` is complete, per flow."""
        return self._each(flow, "complete", task, cascade=cascade)

    def output(self, task: TaskArg = None, flow: Any = None) -> Any:
        """The output target(s) of ``task``, per flow."""
        return self._each(flow, "output", task)

    def outputPath(self, task: TaskArg = None, flow: Any = None) -> Any:
        """The output path(s) of ``task``, per flow."""
        return self._each(flow, "outputPath", task)

    def outputLoad(self, task: TaskArg = None, flow: Any = None, keys: Any = None,
                   as_dict: bool = False, cached: bool = False) -> Any:
        """Load ``task``'s output(s), per flow (``{flow_name: data}``)."""
        return self._each(flow, "outputLoad", task, keys=keys, as_dict=as_dict, cached=cached)

    def outputLoadAll(self, task: TaskArg = None, flow: Any = None, keys: Any = None,
                      as_dict: bool = False, cached: bool = False) -> Any:
        """Load the outputs of ``task`` and its upstream tasks, per flow."""
        return self._each(flow, "outputLoadAll", task, keys=keys, as_dict=as_dict,
                          cached=cached)

    def outputLoadMeta(self, task: TaskArg = None, flow: Any = None) -> Any:
        """Load ``task``'s metadata, per flow."""
        return self._each(flow, "outputLoadMeta", task)

    def outputLoadAllMeta(self, task: TaskArg = None, flow: Any = None) -> Any:
        """Metadata of ``task`` and its upstream tasks, per flow."""
        return self._each(flow, "outputLoadAllMeta", task)

    def results(self, task: TaskArg = None, keys: str | Iterable[str] | None = None,
                flow: Any = None, *, missing: str = "raise") -> pd.DataFrame:
        """The flows side by side: a row per flow, its parameters, then ``task``'s output.

        The output (default task's by default) becomes columns: a dict one per key (nested
        dicts as ``cv.mean``), a scalar one named ``output`` (the task family if a parameter
        is called that), a Series or one-row DataFrame one per item. A task with several
        outputs shows those in ``keys`` (all by default), prefixed with the output name
        (``train.acc``) unless ``keys`` names one. An output column named like a parameter
        is prefixed ``output.``. Secret parameters show as ``***``.

        Args:
            task: the task whose output to show (default: the default task).
            keys: the output(s) to show of a task with several outputs (as in outputLoad).
            flow: a flow name or list of names (default: every flow).
            missing: for a flow whose task is not complete: ``"raise"`` an error, ``"skip"``
                the row, or keep it with ``"nan"`` outputs.

        Returns:
            A DataFrame indexed by flow name (index ``flow``), rows in the flows' order.

        Raises:
            IncompleteTaskError: ``missing="raise"`` and the task of some flows is not complete.
            OutputError: an output cannot be one row (say, a multi-row DataFrame).
            ParameterError: ``missing`` is not one of the allowed values.

        Example:
            >>> flows = WorkflowMulti(Evaluate, {"model": ["ols", "gbm"]})  # doctest: +SKIP
            >>> flows.run()                                                # doctest: +SKIP
            >>> flows.results().sort_values("score", ascending=False)      # doctest: +SKIP
                       model  score
            flow
            model=gbm    gbm   0.95
            model=ols    ols   0.90
        """
        if missing not in ("raise", "skip", "nan"):
            raise ParameterError(f"results(missing={missing!r}): missing must be 'raise', "
                                 f"'skip' or 'nan'.")
        selected = self._select(flow)
        tasks = {name: wf.get_task(task) for name, wf in selected.items()}
        family = next((t.task_family for t in tasks.values()), "output")
        defaults = [wf.get_task() for wf in selected.values()] if self.default_task else []
        secret = {n for c in graph.build([*tasks.values(), *defaults]).families()
                  for n, p in c.get_params() if is_secret(p)}
        wanted = [keys] if isinstance(keys, str) else keys
        loaded: dict[Any, Any] = {}
        incomplete: dict[Any, IncompleteTaskError] = {}
        for name, wf in selected.items():
            try:
                loaded[name] = wf.outputLoad(tasks[name], keys=wanted, as_dict=True)
            except IncompleteTaskError as exc:
                incomplete[name] = exc
        if incomplete and missing == "raise":
            raise IncompleteTaskError(
                f"results(): {family} is not complete in {len(incomplete)} of {len(selected)} "
                f"flows:{listing([repr(n) for n in incomplete])}\nRun them first: "
                f"flows.run(), or pass missing='skip' to leave them out or missing='nan' to "
                f"show them with empty outputs."
            ) from next(iter(incomplete.values()))
        params = {k: None for n in selected for k in self.params[n]}
        scalar = family if "output" in params else "output"
        rows: dict[Any, dict[str, Any]] = {}
        for name, data in loaded.items():
            task = tasks[name]
            persist = task._store.persist() if isinstance(task, TaskData) else ["data"]
            prefixed = len(persist) > 1 and len(data) != 1  # not one output chosen by keys=
            rows[name] = {}
            for key, value in data.items() if len(persist) > 1 else [(None, data)]:
                row = _as_row(value, str(key), f"{key}.") if prefixed else _as_row(value, scalar)
                if row is None:
                    raise _no_row(name, tasks[name], key, value, persist)
                rows[name].update(row)
        names = [n for n in selected if n in rows or missing == "nan"]
        import pandas as pd

        index = pd.Index(names, name="flow", tupleize_cols=False)
        frame = {k: _column([(MASK if k in secret else self.params[n][k])
                             if k in self.params[n] else None for n in names], index)
                 for k in params}
        for c in {c: None for row in rows.values() for c in row}:
            values = [rows.get(n, {}).get(c, math.nan) for n in names]
            frame[f"output.{c}" if c in params else c] = pd.Series(values, index=index)
        return pd.DataFrame(frame, index=index)

    def reset(self, task: TaskArg = None, flow: Any = None, confirm: bool = False) -> Any:
        """Delete ``task``'s outputs, per flow.

        Returns:
            A :class:`~pipeflow.display.rich.FlowResets` (``{flow_name: Reset}``, a line
            per flow), or one Reset when ``flow`` names a single flow.
        """
        self._check_reset(flow, task, confirm)
        return _resets(self._each(flow, "reset", task, confirm=confirm))

    def reset_upstream(self, task: TaskArg = None, flow: Any = None,
                       confirm: bool = False) -> Any:
        """Delete the outputs of ``task`` and its upstream tasks, per flow (as :meth:`reset`)."""
        self._check_reset(flow, task, confirm)
        return _resets(self._each(flow, "reset_upstream", task, confirm=confirm))

    def reset_downstream(self, task: TaskArg, task_downstream: TaskArg = None,
                         flow: Any = None, confirm: bool = False) -> Any:
        """Delete the outputs of ``task`` and everything downstream of it, per flow.

        Returns as :meth:`reset`.
        """
        self._check_reset(flow, task_downstream, confirm)
        return _resets(self._each(flow, "reset_downstream", task, task_downstream,
                                  confirm=confirm))

    def _check_reset(self, flow: Any, tasks: TaskArg, confirm: Any) -> None:
        """Check a reset's arguments in every flow before any flow deletes anything.

        Raises:
            ParameterError: ``confirm`` is not a bool, or a task is not one of the flows'.
        """
        flag(confirm, "confirm")
        for wf in self._select(flow).values():
            with wf._active():
                wf._tasks(tasks)

    def expected_files(self) -> set[pathlib.Path]:
        """Every file the flows write (used by ``invalidate_orphans``)."""
        out: set[pathlib.Path] = set()
        for wf in self.workflow_objs.values():
            out |= wf.expected_files()
        return out
