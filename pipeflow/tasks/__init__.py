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
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import luigi
import luigi.util
from luigi.task import flatten
from luigi.task_register import Register

from pipeflow import cache, display, graph, layout, settings
from pipeflow.errors import (
    IncompleteTaskError,
    MissingMetadataError,
    ParameterError,
    PipeflowError,
    SaveError,
    StaleOutputWarning,
    TaskLockedError,
    listing,
    warn,
)
from pipeflow.fingerprint import fingerprint_of, remember
from pipeflow.graph import optional
from pipeflow.integrity import (
    META_KEY,
    RECORD_SUFFIX,
    CommitRecord,
    FileRecord,
    read_record,
    temp_owner,
    uncommit,
    write_record,
)
from pipeflow.locks import TaskLock
from pipeflow.parameters import accepted, check_undeclared, check_value, missing_parameter
from pipeflow.plan import Plan, Status, build_plan
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
    Staging,
    os_fix,
    os_reason,
)


class _TaskMeta(Register):
    """luigi's task metaclass, plus a cache of each class's parameters and folder.

    luigi recomputes ``get_params()`` with ``dir()`` on every call, several times per task
    instantiation: tens of microseconds each, most of the cost of building a large graph.
    Setting or deleting any attribute of a task class bumps ``generation``, which
    invalidates every cache, so classes extended later (``@inherits``) stay correct.
    """

    generation: ClassVar[int] = 0

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
            return super().__call__(*args, **kwargs)
        try:
            key = (cls, _TaskMeta.generation, frozenset(kwargs.items()))
            hit = cache.get(key)
        except TypeError:  # unhashable values: luigi's path only
            return super().__call__(*args, **kwargs)
        if hit is None:
            hit = cache[key] = super().__call__(*args, **kwargs)
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
        key: Any = (cls, _TaskMeta.generation, frozenset(kwargs.items()), "home", home.key,
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


_PARAMS: dict[type, tuple[int, list[tuple[str, luigi.Parameter]]]] = {}
#: attributes that decide where a task's outputs go, also when set on an instance
_LAYOUT_ATTRS = frozenset({"path", "target_dir", "target_ext", "task_group", "save_attrib",
                           "persist", "target_class"})

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
_FOLDERS: dict[tuple[object, ...], tuple[pathlib.Path, pathlib.Path]] = {}


class _Owner:
    """Names a task in an error message, computed only when a message is built."""

    def __init__(self, task: luigi.Task):
        self.task = task

    def __str__(self) -> str:
        return graph.describe(self.task)


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
        """Luigi's parameter resolution, with pipeflow's errors for typos and gaps."""
        names = {n for n, _ in params}
        if not names.issuperset(kwargs):  # typos raise; the rest is ignored, as in d6tflow
            check_undeclared(kwargs, [cls], f"{cls.__name__}(...)", of=cls.__name__)
        kwargs = {n: check_value(cls, n, p, kwargs[n]) for n, p in params if n in kwargs}
        slots: list[tuple[str, luigi.Parameter]] = []
        if args:  # positional values fill the positional parameters in order, as in luigi
            slots = [(n, p) for n, p in params if p.positional]
            args = tuple(check_value(cls, n, p, a) for (n, p), a in zip(slots, args)) + args[
                len(slots):]
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
    def _overrides(self) -> tuple[tuple[str, Any], ...] | None:
        """Layout attributes set on this instance (d6tflow code sets ``task.target_dir``).

        Looked up where outputs are placed rather than caught when set: a ``__setattr__``
        would slow every task's instantiation (luigi sets its attributes one by one).
        """
        d = self.__dict__
        if _LAYOUT_ATTRS.isdisjoint(d):
            return None
        return tuple((k, d[k]) for k in sorted(_LAYOUT_ATTRS.intersection(d)))

    def _context(self) -> layout.FlowContext:
        """The flow context placing this task: its home if it has one, else the current one."""
        home = self.__dict__.get(layout.HOME)
        return layout.current() if home is None else home

    def _folder(self) -> pathlib.Path:
        """The folder of this task's outputs."""
        return self._folders()[0]

    def _folders(self) -> tuple[pathlib.Path, pathlib.Path]:
        """The folder of the outputs, and the one of the commit record and lock."""
        # They depend on the class and the flow context, never on parameter values.
        ctx = self._context()
        if self._overrides() is not None:
            return self._compute_folders(ctx)
        key = (type(self), ctx.key, settings.dirpath, _TaskMeta.generation)
        folders = _FOLDERS.get(key)
        if folders is None:
            if len(_FOLDERS) > 4096:  # stale keys (old data dirs, generations) pile up
                _FOLDERS.clear()
            folders = _FOLDERS[key] = self._compute_folders(ctx)
        return folders

    def _location(self, ctx: layout.FlowContext) -> pathlib.Path:
        """The folder this task's outputs go below (see :mod:`pipeflow.layout`)."""
        if ctx.places and not self._pinned:
            return ctx.base()
        own = layout.location(self.path, "path", _Owner(self))
        return settings.dirpath if own is None else own

    def _compute_folders(self, ctx: layout.FlowContext) -> tuple[pathlib.Path, pathlib.Path]:
        owner = _Owner(self)
        parts: list[str] = []
        group = layout.folder_name(self.task_group, "task_group", owner)
        if group is not None:
            parts.append(group)
        parts += layout.safe_parts(self.target_dir or self.task_family, "target_dir", owner)
        where = self._location(ctx)
        return where.joinpath(*parts), layout.records_folder(where, parts)

    def _stem(self, key: str) -> str:
        if settings.save_with_param and getattr(self, "save_attrib", True):
            return f"{self.task_id}-{key}"
        return key

    def _targets(self) -> dict[str, DataTarget]:
        """The output targets by name, for the flow context in force (memoized)."""
        key = (self._context().key, settings.dirpath, settings.save_with_param,
               _TaskMeta.generation, self._overrides())
        memo = self.__dict__.get("_pipeflow_targets")
        if memo is not None and memo[0] == key:
            return memo[1]
        persist = self._persist()
        folder = self._folder()
        ext = f".{self.target_ext}" if self.target_ext else ""
        targets = {k: self.target_class(folder / layout.fit_name(self._stem(k), ext))
                   for k in persist}
        targets[META_KEY] = PickleTarget(folder / layout.fit_name(self._stem("meta"), ".pickle"))
        for k, t in targets.items():
            t.owner, t.key = self, k
        self.__dict__["_pipeflow_targets"] = (key, targets)
        return targets

    def _persist(self) -> list[str]:
        """The output names, checked: distinct plain names."""
        persist = self.persist
        if (not isinstance(persist, (list, tuple)) or not persist
                or not all(isinstance(k, str) and k and not k.startswith(".")
                           and not set(k) & {"/", "\\", "\0"} for k in persist)
                or len(set(persist)) != len(persist)):
            raise PipeflowError(
                f"{type(self).__name__}.persist = {persist!r} is not a list of distinct output "
                f"names (plain names: no '/', '\\' or NUL, not starting with '.'). Write e.g. "
                f"persist = ['data'] or persist = ['model', 'scores']."
            )
        return list(persist)

    def _outputs(self) -> dict[str, DataTarget]:
        return {k: t for k, t in self._targets().items() if k != META_KEY}

    def _meta_target(self) -> DataTarget:
        return self._targets()[META_KEY]

    def _record_path(self) -> pathlib.Path:
        """The commit record: a hidden file beside the outputs, written last by a run."""
        path = self._file_names()[2]
        memo = self.__dict__.get("_pipeflow_record")
        if memo is None or memo[0] is not path:
            memo = self.__dict__["_pipeflow_record"] = (path, pathlib.Path(path))
        return memo[1]  # type: ignore[no-any-return]

    def _file_backed(self) -> bool:
        """Whether the outputs are files (checked against the commit record)."""
        return self.target_class.exists is DataTarget.exists

    def task_lock(self) -> TaskLock:
        """The lock held while this task runs or its outputs are reset or saved by hand."""
        record = self._file_names()[2]
        return TaskLock(os.path.dirname(record), os.path.basename(record))

    def display_name(self) -> str:
        """The task with its parameters, as shown in messages: ``Train(model='xgb')``."""
        return graph.describe(self)

    def output(self) -> DataTarget | dict[str, DataTarget]:
        """The output target, or a dict of them by name when ``persist`` has several."""
        outputs = self._outputs()
        return outputs["data"] if list(self.persist) == ["data"] else outputs

    @_at_home
    def input(self) -> Any:
        """The output targets of the required tasks (same shape as ``requires()``)."""
        return luigi.task.getpaths(graph.unwrap(self.requires()))

    @property
    def flows(self) -> Mapping[str, Any]:
        """Workflows attached with ``Workflow.attach_flow``, by name."""
        return self._context().flows

    # -- status ------------------------------------------------------------------------------
    def own_state(self) -> tuple[bool, str | None]:
        """Whether this task's own outputs are complete, and if not, why (when notable).

        File outputs count only when the task's commit record lists them and each file is
        still the one committed (size, mtime and inode compared; re-hashed when they
        differ). Upstream tasks and change detection are not considered.

        Returns:
            ``(complete, reason)``; the reason is None when there is nothing to explain
            (e.g. the task never ran).
        """
        done, reason, _record = self.output_state()
        return done, reason

    def output_state(self) -> tuple[bool, str | None, CommitRecord | None]:
        """:meth:`own_state` plus the commit record (None if there is no valid one)."""
        if (not self._file_backed()
                or (self.external and not os.path.exists(self._file_names()[2]))):
            return all(t.exists() for t in self._outputs().values()), None, None
        # Plain files: string paths, no target objects (the hot path on large graphs).
        folder, names, record_path = self._file_names()
        record, problem = read_record(record_path)
        if record is None:
            if problem is None and os.path.exists(os.path.join(folder, names[0][1])):
                problem = ("its output files exist but no successful pipeflow run committed "
                           "them (left by a crashed run, or written by another tool): it "
                           "runs again")
            return False, problem, None
        touched: dict[str, FileRecord] = {}
        for k, name in names:
            recs = record.files.get(k)
            if not recs or recs[0].name != name:
                return False, f"output {k!r} is not in its commit record", record
            for rec in recs:
                problem, now = rec.verify(folder, rehash=False)
                if problem is not None:
                    return False, f"output {k!r}: {problem}", record
                if now is not rec:
                    touched[rec.name] = now
        if touched:
            self._restat(record, touched)
        return True, None, record

    def _restat(self, record: CommitRecord, touched: dict[str, FileRecord]) -> None:
        """Record the new mtime and inode of files touched (or copied) with the same content.

        The next status check then compares them without hashing them again. Best
        effort: skipped while the task runs (its lock is taken) or if anything changed
        meanwhile; the record is only ever rewritten with files that hash the same.
        """
        lock = self.task_lock()
        if not lock.acquire():
            return
        try:
            path = self._record_path()
            if read_record(path)[0] != record:
                return
            folder = self._file_names()[0]
            # unchanged since they were hashed (their new stat still matches): no rehash
            if any(now.problem(folder, rehash=False) for now in touched.values()):
                return
            files = {key: tuple(touched.get(r.name, r) for r in recs)
                     for key, recs in record.files.items()}
            write_record(path, CommitRecord(record.task, files, record.fingerprint))
        except OSError:
            return  # a read-only data dir: hash again next time
        finally:
            lock.release()

    def _file_names(self) -> tuple[str, list[tuple[str, str]], str]:
        """Folder, (output name, file name) pairs and commit record, as strings (memoized).

        The hot path of status checks and runs on large graphs: plain strings, no target
        objects.
        """
        key = (self._context().key, settings.dirpath, settings.save_with_param,
               _TaskMeta.generation, self._overrides())
        memo = self.__dict__.get("_pipeflow_names")
        if memo is not None and memo[0] == key:
            return memo[1]  # type: ignore[no-any-return]
        ext = f".{self.target_ext}" if self.target_ext else ""
        ident = (self.task_id if settings.save_with_param and getattr(self, "save_attrib", True)
                 else self.task_family)
        out, own = self._folders()
        folder = os.fspath(out)
        value = (folder, [(k, layout.fit_name(self._stem(k), ext)) for k in self._persist()],
                 os.path.join(own, layout.fit_name(f".{ident}", RECORD_SUFFIX)))
        self.__dict__["_pipeflow_names"] = (key, value)
        return value

    def own_complete(self) -> bool:
        """Whether every output of this task is committed and intact (upstream ignored)."""
        return self.own_state()[0]

    @_at_home
    def complete(self, cascade: bool = True) -> bool:
        """Whether the task is complete.

        Args:
            cascade: with ``settings.check_dependencies`` on, also require every upstream
                task to be complete (checked in one linear pass over the graph).
        """
        if not cascade or self.external:
            return self.own_complete()
        plan = build_plan(graph.build([self]))
        return plan.status_of(self) is Status.COMPLETE

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
        outputs = self._outputs()
        if list(self.persist) == ["data"]:
            outputs["data"].save(data, **kwargs)
            return
        expected = list(self.persist)
        example = self._save_call()[len("self.save("):-1]
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
        for k in expected:
            outputs[k]._check(data[k])
        for k in expected:
            outputs[k].save(data[k], **kwargs)

    def metaSave(self, data: Any) -> None:
        """Store metadata (any picklable object) beside the outputs; reset removes it too."""
        self.metadata = data
        self._meta_target().save(data)

    def saveMeta(self, data: Any) -> None:
        """Same as :meth:`metaSave`."""
        self.metaSave(data)

    def _get_meta_path(self, task: Any = None) -> pathlib.Path:
        """The metadata file of ``task`` (default: this task): d6tflow's private helper.

        Kept because d6tflow code (its own tests among it) reads metadata files with it.
        """
        return (self if task is None else task)._meta_target().path  # type: ignore[no-any-return]

    # -- loading -------------------------------------------------------------------------------
    def _load_own(self, keys: Iterable[str] | None, as_dict: bool, cached: bool) -> Any:
        outputs = self._outputs()
        if list(self.persist) == ["data"]:
            return outputs["data"].load(cached=cached)
        one = isinstance(keys, str)  # keys='xx': that output itself (d6tflow)
        if isinstance(keys, str):
            wanted = [keys]
        else:
            wanted = list(self.persist) if keys is None else list(keys)
        unknown = [k for k in wanted if k not in outputs]
        if unknown:
            raise KeyError(
                f"{graph.describe(self)} has no output {unknown[0]!r}; its outputs are "
                f"{list(self.persist)}"
            )
        data = {k: outputs[k].load(cached=cached) for k in wanted}
        if one and not as_dict:
            return data[wanted[0]]
        return data if as_dict else list(data.values())

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
        """
        plan = build_plan(graph.build([self]))
        pos = plan.graph.position(self)
        status = plan.status[pos]
        if status is Status.PENDING or not plan.own[pos]:
            raise _incomplete(self, plan)
        if status is Status.STALE:
            warn(
                f"{graph.describe(self)} is stale ({plan.reasons.get(pos)})"
                f": these outputs were made before that change. Run the flow to bring them "
                f"up to date: flow.run().", StaleOutputWarning)
        return self._load_own(keys, as_dict, cached)

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
            (``{index: data}`` with ``as_dict``).
        """
        reqs = self.requires()
        if task is not None:
            try:
                req = reqs[task]
            except (KeyError, IndexError, TypeError):
                names = list(reqs) if isinstance(reqs, Mapping) else (
                    list(range(len(reqs))) if isinstance(reqs, (list, tuple)) else [])
                raise KeyError(
                    f"{graph.describe(self)}.inputLoad(task={task!r}): requires() has no such "
                    f"entry; it has {names}."
                ) from None
            return _load_outputs(req, keys, as_dict, cached)
        if isinstance(reqs, (luigi.Task, graph.Optional)):
            return _load_outputs(reqs, keys, as_dict, cached)
        if isinstance(reqs, Mapping):
            if isinstance(keys, str) and not as_dict:  # one requirement by name (d6tflow)
                return _load_outputs(reqs[keys], None, as_dict, cached)
            names = list(reqs) if keys is None else [keys] if isinstance(keys, str) else list(keys)
            return {n: _load_outputs(reqs[n], None, as_dict, cached) for n in names}
        items = list(flatten(reqs))
        if not items:
            raise PipeflowError(
                f"{graph.describe(self)}.inputLoad(): this task requires nothing, so there is "
                f"no input to load. Declare requires() or use @pipeflow.requires(...)."
            )
        data = [_load_outputs(r, keys, as_dict, cached) for r in items]
        return dict(enumerate(data)) if as_dict else data

    @_at_home
    def metaLoad(self) -> Any:
        """Load the metadata of the tasks this task requires (same shape as requires())."""
        reqs: Any = graph.unwrap(self.requires())
        if isinstance(reqs, Mapping):
            return {k: t.outputLoadMeta() for k, t in reqs.items()}
        if not isinstance(reqs, (list, tuple)):
            return reqs.outputLoadMeta()
        return [t.outputLoadMeta() for t in flatten(reqs)]

    @_at_home
    def outputLoadMeta(self) -> Any:
        """Load the metadata this task saved with ``saveMeta``."""
        if not self.own_complete():
            raise _incomplete(self, build_plan(graph.build([self])))
        meta = self._meta_target()
        if self._committed_record(META_KEY) is None:
            raise MissingMetadataError(
                f"{graph.describe(self)} has no metadata at {str(meta.path)!r}: its run() did "
                f"not call self.saveMeta(...). Add that call and reset the task to rerun it."
            )
        return meta.load()

    @_at_home
    def outputLoadAllMeta(self) -> dict[str, Any]:
        """Metadata of this task and every upstream task that saved some, by task family."""
        out: dict[str, Any] = {}
        for t in graph.build([self]).nodes:
            if isinstance(t, TaskData) and t._committed_record(META_KEY) is not None:
                out[t.task_family] = t._meta_target().load()
        return out

    # -- resetting -----------------------------------------------------------------------------
    def invalidate(self, confirm: bool = True) -> bool:
        """Delete this task's outputs and metadata so that it runs again.

        Args:
            confirm: ask before deleting (needs an interactive terminal or notebook).

        Returns:
            True if the outputs were deleted, False if the user declined.
        """
        if self.external:
            raise PipeflowError(
                f"{graph.describe(self)} is external: its outputs are made outside this flow, "
                f"so pipeflow does not delete them. Delete the files by hand if you mean to."
            )
        record, _ = read_record(self._record_path())
        folder = self._folder()
        files = [str(folder / n) for n in record.file_names()] if record else []
        files += [str(t.path) for t in self._outputs().values()
                  if isinstance(t, CacheTarget) and t.exists()]
        if confirm and not display.confirm(
            f"Delete the outputs of {graph.describe(self)}?", files, "confirm=False"
        ):
            return False
        self.delete_outputs()
        return True

    def reset(self, confirm: bool = True) -> bool:
        """Same as :meth:`invalidate`."""
        return self.invalidate(confirm=confirm)

    def delete_outputs(self) -> None:
        """Delete the committed outputs and metadata, without asking.

        Only files this task's commit record lists are deleted (the record first, so the
        task is never left looking complete), never a symlink's target and never a folder.

        Raises:
            TaskLockedError: the task is running right now, here or in another process.
        """
        with self._locked(f"reset {graph.describe(self)}"):
            self._uncommit()
            for t in self._outputs().values():
                if isinstance(t, CacheTarget):
                    t.invalidate()

    @contextlib.contextmanager
    def _locked(self, doing: str) -> Iterator[None]:
        """Hold the task's lock for the block, or raise at once if it is taken."""
        lock = self.task_lock()
        if not lock.acquire():
            raise TaskLockedError(
                f"cannot {doing}: the task is being run (or reset) by another process or "
                f"thread right now. Wait for that to finish, then try again."
            )
        try:
            yield
        finally:
            lock.release()

    def adopt_outputs(self) -> bool:
        """Commit output files that exist but no pipeflow run committed (d6tflow data dirs).

        Use it once, after switching from d6tflow, for outputs you know are whole: a file
        at the output path may be a partial write, and pipeflow cannot tell. Outputs that
        are already committed are left as they are.

        Returns:
            True if the outputs were adopted; False if there was nothing to adopt (already
            committed, or some output file is missing).

        Raises:
            TaskLockedError: the task is running right now.
        """
        if self.external or not self._file_backed() or self._record_path().exists():
            return False
        targets = {k: t for k, t in self._targets().items() if t.path.exists()}
        if any(k not in targets for k in self.persist):
            return False
        with self._locked(f"adopt the outputs of {graph.describe(self)}"):
            files = {k: tuple(FileRecord.of(p) for p in t.files() if p.exists())
                     for k, t in targets.items()}
            write_record(self._record_path(), self._record(files))
        return True

    def has_outputs(self) -> bool:
        """Whether anything of this task is stored: a commit record or an in-memory output."""
        return self._record_path().exists() or any(
            isinstance(t, CacheTarget) and t.exists() for t in self._outputs().values())

    def _uncommit(self) -> None:
        """Delete the commit record, then the files it lists (the task's lock is held)."""
        path = self._file_names()[2]
        if not os.path.lexists(path):
            return
        folder = layout.ensure_inside(self._folder(), self.data_root())
        for file in uncommit(path, folder):
            cache.data.pop(file, None)

    def data_root(self) -> pathlib.Path:
        """The location this task's files live below; nothing of it is deleted outside it."""
        return self._location(self._context())

    def _committed_record(self, key: str) -> tuple[FileRecord, ...] | None:
        record, _ = read_record(self._record_path())
        return record.files.get(key) if record is not None else None

    # -- the target's side: commit records ----------------------------------------------------
    def committed_files(self, target: DataTarget) -> tuple[FileRecord, ...] | None:
        """The files of one of this task's outputs as last committed.

        None for an external task's output without a commit record (files made outside
        pipeflow): it is read as it is.

        Raises:
            IncompleteTaskError: no successful run committed that output.
        """
        record, problem = read_record(self._record_path())
        recs = record.files.get(target.key) if record is not None else None
        if record is None and problem is None and self.external:
            return None  # made outside pipeflow, with no record to check against
        if not recs:
            what = "its metadata" if target.key == META_KEY else f"output {target.key!r}"
            raise IncompleteTaskError(
                f"cannot load {what} of {graph.describe(self)} ({str(target.path)!r}): "
                f"{problem or 'no successful run of the task committed it'}. Run the flow "
                f"first: flow.run() (or pipeflow.run({graph.describe(self)}))."
            )
        return recs

    def record_save(self, target: DataTarget, publish: Any) -> None:
        """Publish a save made by hand (outside a run) and add it to the commit record.

        Args:
            target: the output saved.
            publish: puts the staged files in place and returns their records.

        Raises:
            TaskLockedError: the task is running right now.
        """
        with self._locked(f"save {str(target.path)!r} of {graph.describe(self)} by hand"):
            path = self._record_path()
            record, _ = read_record(path)
            files = dict(record.files) if record is not None else {}
            files.pop(target.key, None)
            fp = fingerprint_of(self)
            write_record(path, CommitRecord(graph.describe(self), files, fp))
            files[target.key] = tuple(publish())
            write_record(path, CommitRecord(graph.describe(self), files, fp))

    # -- the engine's side (see pipeflow.engines.local) ----------------------------------------
    def owned_paths(self) -> list[pathlib.Path]:
        """Paths this task's run publishes (saves to them are staged until success)."""
        return [p for t in self._targets().values() for p in t.files()] + [self._record_path()]

    def clean_orphans(self, scan: Callable[[pathlib.Path], list[str]]) -> None:
        """Delete temp files a crashed run of this task left (its lock is held).

        Args:
            scan: lists the hidden temp-file names in a folder.
        """
        for folder in self._folders():
            names = scan(folder)
            mine = {p.name for p in self.owned_paths()} if names else set()
            for name in names:
                if temp_owner(name) in mine:
                    (folder / name).unlink(missing_ok=True)

    def prepare_run(self) -> None:
        """Before running: uncommit, and remove stale files, so only this run can count."""
        self.abort_run()

    def abort_run(self) -> None:
        """After a failed or stopped run: uncommit, and remove what it wrote to final paths.

        A worker stopped between writing the commit record and reporting success leaves a
        record the engine did not accept: it is removed first.
        """
        self._uncommit()
        for t in self._targets().values():
            if isinstance(t, CacheTarget) or any(os.path.lexists(p) for p in t.files()):
                t.invalidate()

    def commit_run(self, published: dict[pathlib.Path, FileRecord]) -> None:
        """After a successful run published its files: write the commit record, last."""
        files: dict[str, tuple[FileRecord, ...]] = {}
        file_backed = self._file_backed()
        for key, t in self._targets().items():
            if key != META_KEY and not file_backed:
                continue
            recs = [published[p] for p in t.files() if p in published]
            if not recs and key != META_KEY and t.path.exists():
                recs = [FileRecord.of(t.path)]  # written by run() straight to the path
            if recs:
                files[key] = tuple(recs)
        if not files:
            return
        path = self._record_path()
        try:
            write_record(path, self._record(files))
            remember(os.fspath(path), files)
        except OSError as exc:
            raise SaveError(
                f"{graph.describe(self)}: could not write its commit record {str(path)!r}: "
                f"{os_reason(exc)}. The run's outputs do not count and were removed. "
                f"{os_fix(exc, path.parent)}"
            ) from exc

    def _record(self, files: dict[str, tuple[FileRecord, ...]]) -> CommitRecord:
        """The commit record of ``files``, with what they are made from now."""
        return CommitRecord(graph.describe(self), files, fingerprint_of(self))

    def missing_outputs(self, stg: Staging) -> list[DataTarget]:
        """Outputs the run neither saved nor wrote."""
        return [t for t in self._outputs().values() if not (stg.saved(t.path) or t.exists())]

    def _save_call(self) -> str:
        """The ``self.save(...)`` call run() must make, for error messages."""
        if list(self.persist) == ["data"]:
            return "self.save(data)"
        return "self.save({" + ", ".join(f"'{k}': ..." for k in self.persist) + "})"

    def describe_outputs(self, missing: list[DataTarget]) -> str:
        """The MissingOutputError message: which outputs are there and which are not."""
        outputs = self._outputs()
        lines = []
        for k, t in outputs.items():
            lines.append(f"    {'missing' if t in missing else 'ok     '}  {k}: {t.path}")
        n = len(missing)
        call = self._save_call()
        return (
            f"{graph.describe(self)} finished run() but did not write {n} of its "
            f"{len(outputs)} output{'s' if len(outputs) > 1 else ''}:\n" + "\n".join(lines)
            + f"\n{type(self).__name__}.persist = {list(self.persist)}, so run() must call "
            f"{call}. The task is marked failed."
        )


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


def _load_outputs(task: Any, keys: Iterable[str] | None, as_dict: bool, cached: bool) -> Any:
    if isinstance(task, graph.Optional):
        # an optional upstream task that failed (or was skipped) left no output: None
        inner = task.task
        done = inner.own_complete() if hasattr(inner, "own_complete") else inner.complete()
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

    def own_complete(self) -> bool:
        """A group has no outputs of its own."""
        return True

    def complete(self, cascade: bool = True) -> bool:
        """Whether every grouped task is complete."""
        with layout.at_home(self.members()):
            return build_plan(graph.build([self])).status_of(self) is Status.COMPLETE

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
