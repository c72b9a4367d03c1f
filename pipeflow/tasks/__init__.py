"""Task classes: parameters, ``requires()``, outputs and a ``run()`` that loads and saves.

Subclass one of the format classes (``TaskPqPandas``, ``TaskCSVPandas``, ``TaskJson``,
``TaskPickle``, ``TaskCache``...) or :class:`TaskData` with your own ``target_class``.

Example:
    >>> import pandas as pd, pipeflow
    >>> class GetData(pipeflow.tasks.TaskPqPandas):
    ...     def run(self):
    ...         self.save(pd.DataFrame({"x": [1, 2, 3]}))
    >>> @pipeflow.requires(GetData)
    ... class Double(pipeflow.tasks.TaskPqPandas):
    ...     factor = pipeflow.IntParameter(default=2)
    ...     def run(self):
    ...         self.save(self.inputLoad() * self.factor)
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import luigi
import luigi.util
from luigi.task import flatten
from luigi.task_register import Register

from pipeflow import contract, display, graph, layout
from pipeflow.errors import (
    IncompleteTaskError,
    MissingMetadataError,
    ParameterError,
    PipeflowError,
    RequirementError,
    SaveError,
    StaleOutputWarning,
    UnknownNameError,
    listing,
    warn,
)
from pipeflow.graph import optional
from pipeflow.integrity import META_KEY
from pipeflow.options import flag
from pipeflow.parameters import (
    accepted,
    check_undeclared,
    check_value,
    kwargs_key,
    missing_parameter,
    resolved_value,
    value_key,
)
from pipeflow.plan import Plan, Status, assess, build_plan
from pipeflow.targets import (
    CacheTarget,
    CSVGZPandasTarget,
    CSVPandasTarget,
    DataTarget,
    ExcelPandasTarget,
    JsonTarget,
    PdCacheTarget,
    PickleTarget,
    PqPandasTarget,
)
from pipeflow.tasks.store import TaskStore, meta_clash

#: pipeflow's own source folder
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class _TaskMeta(Register):
    """luigi's task metaclass, plus a cache of each class's parameters and folder.

    luigi recomputes ``get_params()`` with ``dir()`` on every call, several times per task
    instantiation: tens of microseconds each, most of the cost of building a large graph.
    Setting or deleting any attribute of a task class bumps ``generation``, which
    invalidates every cache, so classes extended later (``@inherits``) stay correct.
    """

    generation: ClassVar[int] = 0

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any],
                 **kwargs: Any) -> None:
        super().__init__(name, bases, namespace, **kwargs)
        # where it is defined: tells a redefinition (a cell run again, a module reloaded)
        # from a module defining two classes of one name (see contract.record_site)
        where = sys._getframe(1).f_code.co_filename
        if where.startswith(_HERE):  # made by pipeflow (a functional step): its function's
            where = next((f.__code__.co_filename for f in namespace.values()
                          if isinstance(f, types.FunctionType)), where)
        contract.record_site(cls, where)

    def __setattr__(cls, name: str, value: Any) -> None:
        _TaskMeta.generation += 1
        super().__setattr__(name, value)

    def __delattr__(cls, name: str) -> None:
        _TaskMeta.generation += 1
        super().__delattr__(name)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        """Cached instantiation as in luigi, with a fast lookup by the keywords as given.

        luigi resolves every parameter (config files included) before it can look an
        instance up in its cache: most of the cost of walking a large graph. The same
        keywords always resolve to the same instance, so that instance is also filed under
        the keywords themselves, in luigi's own cache (cleared along with it).
        """
        if "path" in kwargs and "path" not in cls._param_names():
            # d6tflow's Train(path=...): this instance's outputs (and, run or loaded through
            # it, its upstream tasks') live in that folder
            path = kwargs.pop("path")
            root = layout.location(path, "path", f"{cls.__name__}(path=...)")
            return located(cls, layout.FlowContext(root=root), args,  # type: ignore[arg-type]
                           kwargs)
        cache = cls._Register__instance_cache  # type: ignore[attr-defined]
        if cache is None or args:
            return cls._instance(args, kwargs)
        try:
            key = (cls, _TaskMeta.generation, kwargs_key(kwargs))
            hit = cache.get(key)
        except TypeError:  # unhashable values: luigi's path only
            return cls._instance(args, kwargs)
        if hit is None:
            hit = cache[key] = cls._instance(args, kwargs)
        return hit

    def _instance(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Luigi's instance cache, keyed by the resolved values *and their types*.

        luigi keys it by the values alone, so ``T(p=True)`` got the cached ``T(p=1)`` (and
        ``T(p=(1,))`` a ``T(p=(True,))``): equal in Python, other tasks to luigi's task id.
        """
        cache = cls._Register__instance_cache  # type: ignore[attr-defined]
        if cache is None:
            return super(Register, cls).__call__(*args, **kwargs)
        values = cls.get_param_values(cls.get_params(), args, kwargs)  # type: ignore[attr-defined]
        try:
            key = (cls, "resolved", value_key(tuple(values)))
            hit = cache.get(key)
        except TypeError:  # unhashable values: a new instance each time, as in luigi
            return super(Register, cls).__call__(*args, **kwargs)
        if hit is None:
            hit = cache[key] = super(Register, cls).__call__(*args, **kwargs)
        return hit

    def _param_names(cls) -> frozenset[str]:
        return frozenset(n for n, _ in cls.get_params())  # type: ignore[attr-defined]


def located(cls: type[luigi.Task], home: layout.FlowContext, args: tuple[Any, ...] = (),
            kwargs: Mapping[str, Any] | None = None) -> luigi.Task:
    """An instance of ``cls`` that carries ``home`` (a Workflow's or its own location).

    It is not luigi's shared instance of those parameters: writing a location onto that one
    would move the outputs of every other flow using it (d6tflow's leak). The same class,
    keywords and home give the same instance.
    """
    kwargs = dict(kwargs or {})
    cache = cls._Register__instance_cache  # type: ignore[attr-defined]
    try:
        key: Any = (cls, _TaskMeta.generation, kwargs_key(kwargs), "home", home.key,
                    id(home.flows) if home.flows else None)
        hit = cache.get(key) if cache is not None and not args else None
    except TypeError:  # unhashable values: a new instance each time
        key, hit = None, None
    if hit is None:
        hit = type.__call__(cls, *args, **kwargs)  # luigi's construction, without its cache
        hit.__dict__[layout.HOME] = home
        if home.places:  # d6tflow code reads self.path (this instance is nobody else's)
            hit.path = os.fspath(home.base())
        if key is not None and cache is not None and not args:
            cache[key] = hit
    return hit


def _check_positional(cls: type[luigi.Task], slots: list[tuple[str, luigi.Parameter]],
                      args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """ParameterError for more positional values than slots, or a name given twice."""
    names = [n for n, _ in slots]
    if len(args) > len(slots):
        raise ParameterError(
            f"{cls.__name__} takes at most {len(slots)} value(s) by position "
            f"({', '.join(names) or 'none'}), but got {len(args)}. Pass values by name, e.g. "
            f"{cls.__name__}({names[0] if names else 'name'}=...).\n{accepted([cls])}")
    twice = [n for n in names[:len(args)] if n in kwargs]
    if twice:
        raise ParameterError(
            f"{cls.__name__}: parameter '{twice[0]}' was given twice, by position and by name. "
            f"Pass it once, e.g. {cls.__name__}({twice[0]}=...).")


_PARAMS: dict[type, tuple[int, list[tuple[str, luigi.Parameter]]]] = {}
#: the last resolution of parameter values, (key, values), for luigi's second ask
_LAST_VALUES: list[Any] = [None]
F = TypeVar("F", bound=Callable[..., Any])


def _at_home(method: F) -> F:
    """Run a method that looks at other tasks in the instance's home context (if it has one).

    An instance made with a location (``Train(path=...)``, ``flow.get_task()``) then finds
    the tasks it requires where its flow put them, also when used outside the flow.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if layout.HOME not in self.__dict__:
            return method(self, *args, **kwargs)
        with layout.at_home([self]):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _newest(method: F) -> F:
    """Run a method on the same task of its class's newest definition (a notebook cell re-run).

    An instance kept in a variable from before its class was redefined then says what
    ``run()`` and ``preview()`` of it say (they follow the newest class too).

    Raises:
        RedefinitionError: the class was redefined in a way the task cannot follow.
    """
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        current = contract.current_task(self)
        if current is not self:
            return getattr(current, name)(*args, **kwargs)
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class TaskData(luigi.Task, metaclass=_TaskMeta):
    """Base class of tasks whose outputs are data pipeflow stores and loads.

    Attributes:
        persist: names of the outputs; ``['data']`` (the default) means one output, saved
            with ``self.save(obj)``; several names mean ``self.save({'a': ..., 'b': ...})``.
        target_class: the :class:`~pipeflow.targets.DataTarget` subclass storing outputs.
        target_ext: file extension of the outputs.
        external: outputs are produced outside this flow; pipeflow never runs or deletes it.
        path: sub-folder of the data dir for this class's outputs (a Workflow's ``path``
            takes precedence).
        target_dir: folder name used instead of the task family.
        task_group: folder grouping tasks (organisation only: it implies no order).
        priority: among tasks ready at the same time, lower runs first: 0 urgent, 1 high,
            2 normal (default), 3 low. Dependencies always come first. May be a parameter.
        retries: how many times a failing ``run()`` is tried again within the same run.
        retry_delay: seconds to wait before each retry.
        timeout: seconds after which a running task is stopped and fails (None: no limit).
        version: pin the code to this version string: the task goes stale when the version
            changes, and edits to its code are not looked at (None: they are).
        detect_code_changes: check this task's code and parameters for changes (None:
            follow ``settings.detect_code_changes``; False: never).
        detect_data_changes: check this task's upstream outputs for changes (None: follow
            ``settings.detect_data_changes``).

    Example:
        >>> class Train(TaskPickle):
        ...     persist = ["model", "scores"]
        ...     def run(self):
        ...         self.save({"model": {"w": 1}, "scores": [0.9]})
    """

    target_class: ClassVar[type[DataTarget]] = DataTarget
    target_ext: ClassVar[str] = "ext"
    persist: ClassVar[list[str]] = ["data"]
    external: ClassVar[bool] = False
    path: ClassVar[str | None] = None
    target_dir: ClassVar[str | None] = None
    task_group: ClassVar[str | None] = None
    priority: Any = 2
    retries: ClassVar[int] = 0
    retry_delay: ClassVar[float] = 0
    timeout: ClassVar[float | None] = None
    version: ClassVar[str | None] = None
    detect_code_changes: ClassVar[bool | None] = None
    detect_data_changes: ClassVar[bool | None] = None
    metadata: Any = None
    #: its ``path`` is where another project's outputs are (set by FlowImport): a flow's
    #: path or env does not move it
    _pinned: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse, at class definition, an output whose file would be the metadata's.

        Raises:
            PipeflowError: an output named ``meta`` with the extension ``pickle``.
        """
        super().__init_subclass__(**kwargs)
        clash = meta_clash(cls)
        if clash:
            raise PipeflowError(clash)

    # -- parameters ------------------------------------------------------------------------
    @classmethod
    def get_params(cls) -> list[tuple[str, luigi.Parameter]]:
        """The class parameters, as luigi computes them, cached (see :class:`_TaskMeta`)."""
        hit = _PARAMS.get(cls)
        if hit is None or hit[0] != _TaskMeta.generation:
            hit = (_TaskMeta.generation, super().get_params())
            _PARAMS[cls] = hit
        return list(hit[1])

    @classmethod
    def get_param_values(
        cls, params: list[tuple[str, luigi.Parameter]], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> list[tuple[str, Any]]:
        """Luigi's parameter resolution, with pipeflow's errors for typos and gaps.

        luigi resolves the same keywords twice per new instance (to look up its instance
        cache, then in ``__init__``): the second call reuses the first's answer, once.
        """
        try:
            key: Any = (cls, _TaskMeta.generation, value_key(args), kwargs_key(kwargs))
            hash(key)  # (values that compare oddly, e.g. arrays, are unhashable too)
        except TypeError:  # unhashable values
            key = None
        last = _LAST_VALUES[0]
        if key is not None and last is not None and last[0] == key:
            _LAST_VALUES[0] = None
            return list(last[1])
        values = cls._resolve(params, args, kwargs)
        if key is not None:
            _LAST_VALUES[0] = (key, values)
        return list(values)

    @classmethod
    def _resolve(
        cls, params: list[tuple[str, luigi.Parameter]], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> list[tuple[str, Any]]:
        names = {n for n, _ in params}
        if not names.issuperset(kwargs):  # typos raise; the rest is ignored, as in d6tflow
            check_undeclared(kwargs, [cls], f"{cls.__name__}(...)", of=cls.__name__)
        kwargs = {n: check_value(cls, n, p, kwargs[n]) for n, p in params if n in kwargs}
        slots: list[tuple[str, luigi.Parameter]] = []
        if args:  # positional values fill the positional parameters in order, as in luigi
            slots = [(n, p) for n, p in params if p.positional]
            _check_positional(cls, slots, args, kwargs)
            args = tuple(check_value(cls, n, p, a) for (n, p), a in zip(slots, args))
        given = set(kwargs).union(n for (n, _), _ in zip(slots, args))
        for name, p in params:  # a default or configured value obeys the same rule
            if name not in given:
                value = resolved_value(cls, name, p)
                if value is not luigi.parameter._no_value:
                    kwargs[name] = value
        try:
            return super().get_param_values(params, args, kwargs)
        except (ValueError, TypeError) as exc:  # a parameter's own validation (choices...)
            raise ParameterError(
                f"{cls.__name__}: a parameter value was refused: {exc}\n{accepted([cls])}"
            ) from exc
        except luigi.parameter.MissingParameterException:
            positional = {n for (n, _), _ in zip(slots, args)}
            for name, p in params:
                if (name not in kwargs and name not in positional
                        and not p.has_task_value(cls.get_task_family(), name)):
                    raise missing_parameter(cls, name) from None
            raise

    # -- where outputs live -------------------------------------------------------------------
    @property
    def _store(self) -> TaskStore:
        """This task's outputs, commit record and lock (see :mod:`pipeflow.tasks.store`)."""
        return contract.adapt(self)  # type: ignore[return-value]

    def display_name(self) -> str:
        """The task with its parameters, as shown in messages: ``Train(model='xgb')``."""
        return graph.describe(self)

    @_newest
    def data_root(self) -> pathlib.Path:
        """The folder this task's outputs go below: its flow's ``path``, its own or the data dir."""
        return self._store.location()

    @_newest
    def output(self) -> DataTarget | dict[str, DataTarget]:
        """The output target, or a dict of them by name when ``persist`` has several."""
        outputs = self._store.outputs()
        return outputs["data"] if list(self.persist) == ["data"] else outputs

    @_newest
    @_at_home
    def input(self) -> Any:
        """The output targets of the required tasks (same shape as ``requires()``).

        Nested lists and dicts keep their shape; a ``None`` entry stays ``None``.
        """
        return _map_requires(self, contract.requires_of(self), lambda t: _unwrapped(t).output())

    @property
    def flows(self) -> Mapping[str, Any]:
        """Workflows attached with ``Workflow.attach_flow``, by name."""
        return self._store.context().flows

    # -- status ------------------------------------------------------------------------------
    @_newest
    @_at_home
    def complete(self, cascade: bool = True) -> bool:
        """Whether the task is complete.

        Args:
            cascade: with ``settings.check_dependencies`` on, also require every upstream
                task to be complete (checked in one linear pass over the graph).
        """
        if not cascade or self.external:
            return self._store.complete()
        return assess(self).status is Status.COMPLETE

    # -- saving --------------------------------------------------------------------------------
    def save(self, data: Any, **kwargs: Any) -> None:
        """Store the task's output(s).

        Args:
            data: the object for a single-output task; for several outputs a dict with
                exactly the ``persist`` names as keys.
            **kwargs: passed to the target's writer (e.g. ``compression='zstd'``).

        Raises:
            SaveError: keys do not match ``persist`` or a value has a type its target
                cannot store; nothing is written in either case.
        """
        store = self._store
        outputs = store.outputs()
        if list(self.persist) == ["data"]:
            outputs["data"].save(data, **kwargs)
            return
        expected = list(self.persist)
        example = store.save_call()[len("self.save("):-1]
        if not isinstance(data, Mapping):
            raise SaveError(
                f"{graph.describe(self)}: persist = {expected}, so save() takes a dict "
                f"{example}, not a {type(data).__name__}. Nothing was written."
            )
        missing = [k for k in expected if k not in data]
        extra = [k for k in data if k not in outputs]
        if missing or extra:
            raise SaveError(
                f"{graph.describe(self)}: save() keys must match persist = {expected}; "
                f"missing {missing}, unexpected {extra}. Call self.save({example}). "
                f"Nothing was written."
            )
        # every output written (and checked) before any is published: all or nothing
        staged: list[tuple[DataTarget, Any]] = []
        try:
            for k in expected:
                staged.append((outputs[k], outputs[k]._stage(data[k], **kwargs)))
        except BaseException:
            for target, files in staged:
                target._discard(files)
            raise
        for i, (target, files) in enumerate(staged):
            try:
                target._publish(files)
            except BaseException:
                for later, rest in staged[i + 1:]:
                    later._discard(rest)
                raise

    def metaSave(self, data: Any) -> None:
        """Store metadata (any picklable object) beside the outputs; reset removes it too."""
        self.metadata = data
        self._store.meta_target().save(data)

    def saveMeta(self, data: Any) -> None:
        """Same as :meth:`metaSave`."""
        self.metaSave(data)

    def _get_meta_path(self, task: Any = None) -> pathlib.Path:
        """The metadata file of ``task`` (default: this task): d6tflow's private helper.

        Kept because d6tflow code (its own tests among it) reads metadata files with it.
        """
        return (self if task is None else task)._store.meta_target().path  # type: ignore[no-any-return]

    # -- loading -------------------------------------------------------------------------------
    def _load_own(self, keys: Iterable[str] | None, as_dict: bool, cached: bool) -> Any:
        outputs = self._store.outputs()
        named = _key_names(self, keys, "outputLoad")
        unknown = [k for k in named or () if k not in outputs]
        if unknown:
            raise UnknownNameError(
                f"{graph.describe(self)} has no output {unknown[0]!r} (keys={keys!r}); its "
                f"outputs are {list(self.persist)}. Pass names of those, or leave keys out "
                f"to load them all."
            )
        if list(self.persist) == ["data"]:
            return outputs["data"].load(cached=cached)
        one = isinstance(keys, str)  # keys='xx': that output itself (d6tflow)
        wanted = list(self.persist) if named is None else named
        data = {k: outputs[k].load(cached=cached) for k in wanted}
        if one and not as_dict:
            return data[wanted[0]]
        return data if as_dict else list(data.values())

    @_newest
    @_at_home
    def outputLoad(self, keys: Iterable[str] | None = None, as_dict: bool = False,
                   cached: bool = False) -> Any:
        """Load this task's output(s).

        Args:
            keys: names of the outputs to load (default: all); one name as a string loads
                that output alone (not in a list).
            as_dict: return ``{name: data}`` instead of a list for several outputs.
            cached: keep the loaded data in memory and reuse it.

        Raises:
            IncompleteTaskError: the task (or, with check_dependencies, an upstream task)
                is pending; the message lists what is missing. The outputs of a stale task
                are loaded, with a :class:`~pipeflow.errors.StaleOutputWarning`.
            UnknownNameError: ``keys`` names no output of the task.
            ParameterError: ``keys`` is not a name nor a list of names.
        """
        verdict = assess(self)
        if verdict.status is Status.PENDING or not verdict.own:
            raise _incomplete(self, build_plan(graph.build([self])))
        if verdict.status is Status.STALE:
            warn(
                f"{graph.describe(self)} is stale ({verdict.reason})"
                f": these outputs were made before that change. Run the flow to bring them "
                f"up to date: flow.run().", StaleOutputWarning)
        return self._load_own(keys, as_dict, cached)

    @_newest
    @_at_home
    def inputLoad(self, keys: Iterable[str] | None = None, task: Any = None,
                  cached: bool = False, as_dict: bool = False) -> Any:
        """Load the outputs of the tasks this task requires.

        Args:
            keys: output names to load from a single requirement, or requirement names to
                load from a dict ``requires()``.
            task: load only this requirement (a key of a dict, an index of a list).
            cached: keep loaded data in memory and reuse it.
            as_dict: return dicts instead of lists for multi-output and list requirements.

        Returns:
            For one requirement: its data (a list/dict if it has several outputs). For a
            dict ``requires()``: ``{name: data}``. For a list: ``[data, ...]``
            (``{index: data}`` with ``as_dict``). Lists nested in ``requires()`` load as
            the same nested lists; a nested dict as a task with several outputs does (a
            list in order, a dict with ``as_dict``, as in d6tflow); a ``None`` entry (no
            requirement) loads as ``None``.

        Raises:
            UnknownNameError: ``keys`` or ``task`` names no requirement (dict) or no output
                (a task with one output has the one output ``'data'``).
            ParameterError: ``keys`` is not a name nor a list of names.
        """
        named = _key_names(self, keys, "inputLoad")
        reqs = contract.requires_of(self)  # a generator read to a list
        if task is not None:
            try:
                req = reqs[task]
            except (KeyError, IndexError, TypeError):
                names = list(reqs) if isinstance(reqs, Mapping) else (
                    list(range(len(reqs))) if isinstance(reqs, (list, tuple)) else [])
                raise UnknownNameError(
                    f"{graph.describe(self)}.inputLoad(task={task!r}): requires() has no such "
                    f"entry; it has {names}."
                ) from None
            return self._load_inputs(req, keys, as_dict, cached)
        if isinstance(reqs, (luigi.Task, graph.Optional)):
            return self._load_inputs(reqs, keys, as_dict, cached)
        if isinstance(reqs, Mapping):
            unknown = [n for n in named or () if n not in reqs]
            if unknown:
                raise UnknownNameError(
                    f"{graph.describe(self)}.inputLoad(keys={keys!r}): requires() has no entry "
                    f"{unknown[0]!r}; it has {list(reqs)}. Pass names of those, or leave keys "
                    f"out to load them all."
                )
            if isinstance(keys, str) and not as_dict:  # one requirement by name (d6tflow)
                return self._load_inputs(reqs[keys], None, as_dict, cached)
            return {n: self._load_inputs(reqs[n], None, as_dict, cached)
                    for n in (list(reqs) if named is None else named)}
        if not flatten(reqs):
            raise PipeflowError(
                f"{graph.describe(self)}.inputLoad(): this task requires nothing, so there is "
                f"no input to load. Declare requires() or use @pipeflow.requires(...)."
            )
        data = [self._load_inputs(r, keys, as_dict, cached) for r in reqs]
        return dict(enumerate(data)) if as_dict else data

    def _load_inputs(self, reqs: Any, keys: Iterable[str] | None, as_dict: bool,
                     cached: bool) -> Any:
        """Load a requirement, or a nested list/dict of them, keeping its shape.

        A nested dict loads as a task with several outputs does, as d6tflow loads it: a
        list in order, a dict with ``as_dict``.
        """
        return _map_requires(self, reqs, lambda t: _load_outputs(t, keys, as_dict, cached),
                             dicts_as_lists=not as_dict)

    @_newest
    @_at_home
    def metaLoad(self) -> Any:
        """Load the metadata of the tasks this task requires (same shape as requires())."""
        return _map_requires(self, contract.requires_of(self),
                             lambda t: _unwrapped(t).outputLoadMeta())

    @_newest
    @_at_home
    def outputLoadMeta(self) -> Any:
        """Load the metadata this task saved with ``saveMeta``."""
        store = self._store
        if not store.complete():
            raise _incomplete(self, build_plan(graph.build([self])))
        meta = store.meta_target()
        if store.committed(META_KEY) is None:
            raise MissingMetadataError(
                f"{graph.describe(self)} has no metadata at {str(meta.path)!r}: its run() did "
                f"not call self.saveMeta(...). Add that call and reset the task to rerun it."
            )
        return meta.load()

    @_newest
    @_at_home
    def outputLoadAllMeta(self) -> dict[str, Any]:
        """Metadata of this task and every upstream task that saved some, by task family."""
        out: dict[str, Any] = {}
        for t in graph.build([self]).nodes:
            if isinstance(t, TaskData) and t._store.committed(META_KEY) is not None:
                out[t.task_family] = t._store.meta_target().load()
        return out

    # -- resetting -----------------------------------------------------------------------------
    @_newest
    def invalidate(self, confirm: bool = True) -> bool:
        """Delete this task's outputs and metadata so that it runs again.

        Args:
            confirm: ask before deleting (needs an interactive terminal or notebook).

        Returns:
            True if the outputs were deleted, False if the user declined.

        Raises:
            ParameterError: ``confirm`` is not True or False.
        """
        confirm = flag(confirm, "confirm")
        if self.external:
            raise PipeflowError(
                f"{graph.describe(self)} is external: its outputs are made outside this flow, "
                f"so pipeflow does not delete them. Delete the files by hand if you mean to."
            )
        if confirm and not display.confirm(
            f"Delete the outputs of {graph.describe(self)}?", self._store.stored_files(),
            "confirm=False"
        ):
            return False
        self._store.delete_outputs()
        return True

    def reset(self, confirm: bool = True) -> bool:
        """Same as :meth:`invalidate`."""
        return self.invalidate(confirm=confirm)


contract.register(TaskData, TaskStore)
contract.register_locator(lambda cls, home, kwargs: located(cls, home, (), kwargs))


def _incomplete(task: luigi.Task, plan: Plan) -> IncompleteTaskError:
    lines = []
    for t in plan.missing_upstream(task):
        reason = plan.reasons.get(plan.graph.position(t))
        lines.append(graph.describe(t) + (f": {reason}" if reason else ""))
    return IncompleteTaskError(
        f"cannot load {graph.describe(task)}: it is not complete. Tasks whose outputs are "
        f"missing or not intact:{listing(lines)}\nRun the flow first: flow.run() (or "
        f"pipeflow.run({graph.describe(task)}))."
    )


def _unwrapped(task: Any) -> Any:
    """The task of an optional requirement, or the task itself."""
    return task.task if isinstance(task, graph.Optional) else task


def _map_requires(owner: luigi.Task, struct: Any, leaf: Callable[[Any], Any],
                  dicts_as_lists: bool = False) -> Any:
    """``leaf(task)`` for each task of a ``requires()`` result, keeping its shape.

    Dicts stay dicts (with ``dicts_as_lists``, lists of their values in order), lists
    lists, tuples tuples, however nested; ``None`` (no requirement: the graph skips it
    too) stays ``None``.

    Raises:
        RequirementError: an entry is neither a task nor a list, tuple, dict or None.
    """
    if struct is None:
        return None
    if isinstance(struct, (luigi.Task, graph.Optional)):
        return leaf(struct)
    if isinstance(struct, Mapping):
        if dicts_as_lists:
            return [_map_requires(owner, v, leaf, True) for v in struct.values()]
        return {k: _map_requires(owner, v, leaf) for k, v in struct.items()}
    if isinstance(struct, tuple):
        return tuple(_map_requires(owner, v, leaf, dicts_as_lists) for v in struct)
    if isinstance(struct, list):
        return [_map_requires(owner, v, leaf, dicts_as_lists) for v in struct]
    what = (f"the class {struct.__name__} instead of a task instance; write {struct.__name__}()"
            if isinstance(struct, type) else f"{struct!r} (type {type(struct).__name__}), "
            f"which is not a task")
    raise RequirementError(
        f"{graph.describe(owner)}.requires() returned {what}. requires() must return a task "
        f"instance, or a list, tuple or dict of task instances (None entries are skipped)."
    )


def _key_names(task: luigi.Task, keys: Any, call: str) -> list[str] | None:
    """``keys`` given to ``call`` as a list of names (None: all), or a ParameterError.

    Raises:
        ParameterError: ``keys`` is not None, a str, nor an iterable of str.
    """
    if keys is None:
        return None
    if isinstance(keys, str):
        return [keys]
    names = None
    if not isinstance(keys, (bytes, Mapping)):
        with contextlib.suppress(TypeError):
            names = list(keys)
    if names is None or not all(isinstance(k, str) for k in names):
        raise ParameterError(
            f"{graph.describe(task)}.{call}(keys={keys!r}): keys takes a name or a list of "
            f"names (str), e.g. keys='data' or keys=['model', 'scores']."
        )
    return names


def _load_outputs(task: Any, keys: Iterable[str] | None, as_dict: bool, cached: bool) -> Any:
    if isinstance(task, graph.Optional):
        # an optional upstream task that failed (or was skipped) left no output: None
        inner = task.task
        done = contract.adapt(inner).output_state()[0]
        return _load_outputs(inner, keys, as_dict, cached) if done else None
    if isinstance(task, TaskData):
        return task._load_own(keys, as_dict, cached)
    if isinstance(task, TaskAggregator):
        return task.outputLoad(keys, as_dict, cached)
    raise PipeflowError(
        f"{graph.describe(task)} is not a pipeflow task, so its output {task.output()!r} has "
        f"no loader. Read the file yourself from self.input().path."
    )


class TaskCache(TaskData):
    """Output kept in memory (``pipeflow.data``): any Python object."""

    target_class = CacheTarget
    target_ext = "cache"


class TaskCachePandas(TaskData):
    """Output kept in memory: a pandas DataFrame."""

    target_class = PdCacheTarget
    target_ext = "cache"


class TaskJson(TaskData):
    """Output stored as JSON."""

    target_class = JsonTarget
    target_ext = "json"


class TaskPickle(TaskData):
    """Output stored as a pickle (any picklable object: models, dicts...)."""

    target_class = PickleTarget
    target_ext = "pkl"


class TaskCSVPandas(TaskData):
    """A DataFrame stored as CSV (its index survives the round trip)."""

    target_class = CSVPandasTarget
    target_ext = "csv"


class TaskCSVGZPandas(TaskData):
    """A DataFrame stored as gzip-compressed CSV."""

    target_class = CSVGZPandasTarget
    target_ext = "csv.gz"


class TaskExcelPandas(TaskData):
    """A DataFrame stored as an Excel sheet (needs the ``excel`` extra)."""

    target_class = ExcelPandasTarget
    target_ext = "xlsx"


class TaskPqPandas(TaskData):
    """A DataFrame stored as parquet."""

    target_class = PqPandasTarget
    target_ext = "parquet"


class TaskAggregator(luigi.Task):
    """Groups tasks: ``run()`` yields them; the aggregator is complete when they all are.

    Grouping implies no order among the yielded tasks. ``@pipeflow.requires(...)`` on an
    aggregator passes its parameters on, as in d6tflow's docs; the group is still what
    ``run()`` yields.

    Example:
        >>> class AllModels(TaskAggregator):
        ...     def run(self):
        ...         yield Train(model="ols")
        ...         yield Train(model="gbm")
    """

    _pipeflow_group: ClassVar[bool] = True

    def members(self) -> list[Any]:
        """The grouped tasks: what ``run()`` yields, in order."""
        return list(flatten(list(self.run() or ())))

    def requires(self) -> list[Any]:
        """The grouped tasks (what ``run()`` yields)."""
        return self.members()

    def run(self) -> Any:
        """Yield the tasks to group; implement this."""
        return iter(())

    def complete(self, cascade: bool = True) -> bool:
        """Whether every grouped task is complete."""
        with layout.at_home(self.members()):
            return assess(self).status is Status.COMPLETE

    def output(self) -> list[Any]:
        """The grouped tasks' outputs."""
        return [t.output() for t in self.members()]

    def outputLoad(self, keys: Iterable[str] | None = None, as_dict: bool = False,
                   cached: bool = False) -> list[Any]:
        """Load every grouped task's output(s), in the order ``run()`` yields them."""
        return [t.outputLoad(keys, as_dict, cached) for t in self.members()]

    def invalidate(self, confirm: bool = True) -> bool:
        """Reset every grouped task.

        Returns:
            True if every grouped task was reset (False if the user declined one).
        """
        done = True
        for t in self.members():
            done = bool(t.invalidate(confirm=confirm)) and done
        return done

    def reset(self, confirm: bool = True) -> bool:
        """Same as :meth:`invalidate`."""
        return self.invalidate(confirm=confirm)


# -- declaring requirements ------------------------------------------------------------------

def _check_classes(what: str, classes: Iterable[Any]) -> None:
    for c in classes:
        if not (isinstance(c, type) and issubclass(c, luigi.Task)):
            hint = (f"pass the class {type(c).__name__}, not an instance"
                    if isinstance(c, luigi.Task) else "pass task classes")
            raise ParameterError(f"pipeflow.{what}() got {c!r}: {hint}.")


class _dict_inherits:
    def __init__(self, tasks: Mapping[Any, type[luigi.Task]]):
        self.tasks = dict(tasks)

    def __call__(self, cls: type[luigi.Task]) -> type[luigi.Task]:
        for parent in self.tasks.values():
            for name, param in parent.get_params():
                if not hasattr(cls, name):
                    setattr(cls, name, param)
        tasks = self.tasks

        def clone_parents_dict(self_: luigi.Task, **kwargs: Any) -> dict[Any, luigi.Task]:
            return {k: self_.clone(cls=t, **kwargs) for k, t in tasks.items()}

        cls.clone_parents_dict = clone_parents_dict  # type: ignore[attr-defined]
        return cls


def inherits(*tasks: Any, **kw_tasks: type[luigi.Task]) -> Any:
    """Class decorator: the class takes over the parameters of the given task classes.

    Accepts task classes, or one dict ``{'name': TaskClass}`` (then
    ``self.clone_parents_dict()`` gives ``{'name': TaskClass(...)}``).
    """
    if len(tasks) == 1 and isinstance(tasks[0], Mapping):
        _check_classes("inherits", tasks[0].values())
        return _dict_inherits(tasks[0])
    _check_classes("inherits", [*tasks, *kw_tasks.values()])
    return luigi.util.inherits(*tasks, **kw_tasks)


def clone_parent(cls: type[luigi.Task]) -> type[luigi.Task]:
    """d6tflow's older decorator: ``requires()`` returns ``self.clone_parent()``.

    Kept for d6tflow code; the class must also be decorated with ``@inherits(Parent)``.
    Prefer ``@pipeflow.requires(Parent)``, which does both.
    """
    warnings.warn("clone_parent is replaced by @pipeflow.requires(...)", DeprecationWarning,
                  stacklevel=2)

    def requires_(self_: luigi.Task) -> luigi.Task:
        return self_.clone_parent()  # type: ignore[attr-defined, no-any-return]

    cls.requires = requires_  # type: ignore[method-assign]
    return cls


def requires(*tasks: Any, **kw_tasks: type[luigi.Task]) -> Any:
    """Class decorator: the class inherits the parameters of, and requires, the given tasks.

    ``@requires(A)`` requires ``A(...)``; ``@requires(A, B)`` a list; ``@requires({'a': A,
    'b': B})`` (or ``@requires(a=A, b=B)``) a dict, loaded as a dict by ``inputLoad()``.
    Parameters are passed on to the required tasks.
    """
    if len(tasks) == 1 and isinstance(tasks[0], Mapping):
        base = inherits(tasks[0])

        def decorate(cls: type[luigi.Task]) -> type[luigi.Task]:
            cls = base(cls)

            def requires_(self_: luigi.Task) -> dict[Any, luigi.Task]:
                return self_.clone_parents_dict()  # type: ignore[attr-defined, no-any-return]

            cls.requires = requires_  # type: ignore[method-assign]
            return cls

        return decorate
    _check_classes("requires", [*tasks, *kw_tasks.values()])
    return luigi.util.requires(*tasks, **kw_tasks)


__all__ = [
    "TaskAggregator", "TaskCSVGZPandas", "TaskCSVPandas", "TaskCache", "TaskCachePandas",
    "TaskData", "TaskExcelPandas", "TaskJson", "TaskPickle", "TaskPqPandas", "clone_parent",
    "inherits", "optional", "requires",
]
