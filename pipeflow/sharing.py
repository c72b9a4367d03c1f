"""Sharing a flow's outputs with people who do not have its code.

``FlowExport`` writes importable external task stubs; ``FlowImport`` loads them and points
them at the producer's data dir.

A consumer of your outputs does not need your code: the stubs declare the same families,
parameters and formats, so they compute the same file names, and ``external = True`` means
pipeflow only ever reads them.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import keyword
import os
import pathlib
import sys
import types
import unicodedata
from collections.abc import Iterable
from typing import Any

import luigi

from pipeflow import display, graph, layout, parameters, settings, storage
from pipeflow import tasks as task_classes
from pipeflow.errors import PipeflowError
from pipeflow.publishing import write_atomic
from pipeflow.tasks import TaskData


class FlowExport:
    """Generate Python source declaring external stubs of a flow's tasks.

    Args:
        tasks: task instance(s) to export.
        flows: Workflow(s) or WorkflowMulti(s); every task of their flows is exported.
        save: write the code to ``path_export`` when :meth:`generate` runs.
        path_export: where to write it.

    Example:
        >>> code = pipeflow.FlowExport(flows=flow, save=True,
        ...                            path_export="tasks_export.py").generate()  # doctest: +SKIP
    """

    def __init__(self, tasks: Any = None, flows: Any = None, save: bool = False,
                 path_export: str | os.PathLike[str] = "tasks_export.py") -> None:
        if tasks is None and flows is None:
            raise PipeflowError("FlowExport needs tasks=... or flows=... to export.")
        self.tasks = tasks
        self.flows = flows
        self.save = save
        self.path_export = pathlib.Path(path_export)

    def _collect(self) -> list[tuple[luigi.Task, pathlib.Path]]:
        """(task, the folder its outputs go below) for each task to export, upstream first."""
        found: list[tuple[luigi.Task, pathlib.Path]] = []
        for t in _as_list(self.tasks):
            with layout.at_home([t]):
                found.append((t, t.data_root() if isinstance(t, TaskData) else settings.dirpath))
        for flow in _as_list(self.flows):
            workflows = getattr(flow, "workflow_objs", None)
            for wf in workflows.values() if workflows else [flow]:
                with layout.flow_context(wf.context()):
                    nodes = graph.build([wf.get_task()]).nodes
                    found += [(t, t.data_root()) for t in nodes if isinstance(t, TaskData)]
        return found

    def generate(self) -> str:
        """Return the generated module source; print it, or write it when ``save`` is set.

        Without ``save`` the code is printed, as d6tflow does, so that
        ``FlowExport(tasks=...).generate()`` in a notebook shows it.
        """
        imports = {"import pipeflow"}
        blocks: list[str] = []
        seen: set[type[luigi.Task]] = set()
        for task, where in self._collect():
            cls = type(task)
            if cls in seen or not isinstance(task, TaskData) or not getattr(cls, "export", True):
                continue
            seen.add(cls)
            blocks.append(_stub(task, where, imports))
        header = (
            '"""External task stubs exported by pipeflow.\n\n'
            "Load an output with e.g. ``module.Task(param=...).outputLoad()`` after\n"
            "``pipeflow.set_dir(<the producer's data dir>)``, or use pipeflow.FlowImport.\n"
            '"""\n'
        )
        code = (header + "\n".join(sorted(imports)) + "\n\n"
                + "#: the producer's data dir; FlowImport(path_data=...) moves what lies below it\n"
                + f"PRODUCER_DATA_DIR = {os.fspath(settings.dirpath)!r}\n\n\n"
                + "\n\n".join(blocks))
        if self.save:
            target = self.path_export

            def write(p: pathlib.Path) -> None:
                p.write_text(code, encoding="utf-8")

            write_atomic(target, write)
        else:
            display.emit(code)
        return code


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _stub(task: TaskData, where: pathlib.Path, imports: set[str]) -> str:
    """The source of ``task``'s external stub.

    Nothing reaches the code but checked identifiers and literals (``str.__repr__`` of exact
    strings, ``repr`` of exact numbers): a class or parameter name, a value or a path can
    never run code when the export is imported.

    Raises:
        PipeflowError: a name is not an identifier, or a setting not a str.
    """
    cls = type(task)
    base: Any = next(c for c in cls.__mro__ if c.__module__ == task_classes.__name__)
    name = _identifier(cls.__name__, "class name", cls)
    persist = task.persist
    if not isinstance(persist, (list, tuple)) or not all(isinstance(k, str) for k in persist):
        raise PipeflowError(f"FlowExport: {name}.persist = {persist!r} is not a list of names.")
    lines = [f"class {name}(pipeflow.tasks.{base.__name__}):", "    external = True",
             f"    persist = [{', '.join(_text(k, 'persist', cls) for k in persist)}]"]
    if cls.target_class is not base.target_class:
        tc = cls.target_class
        module = ".".join(_identifier(m, "target_class module", cls)
                          for m in str(tc.__module__).split("."))
        tc_name = _identifier(tc.__name__, "target_class name", cls)
        imports.add(f"from {module} import {tc_name}")
        lines.append(f"    target_class = {tc_name}")
    if task.target_ext != base.target_ext:
        lines.append(f"    target_ext = {_text(task.target_ext, 'target_ext', cls)}")
    if where != settings.dirpath:
        lines.append(f"    path = {_text(where.as_posix(), 'path', cls)}")
    for attr in ("task_group", "target_dir"):
        value = getattr(task, attr)
        if value:
            lines.append(f"    {attr} = {_text(value, attr, cls)}")
    namespace = cls.get_task_namespace()
    if namespace:
        lines.append(f"    task_namespace = {_text(namespace, 'task_namespace', cls)}")
    for pname, p in cls.get_params():
        if p.significant:
            pname = _identifier(pname, "parameter name", cls)
            lines.append(f"    {pname} = {_param_code(p, getattr(task, pname), cls)}")
    return "\n".join(lines) + "\n"


def _identifier(name: object, what: str, cls: type) -> str:
    """``name``, if it can be written into code as a name (an identifier, no keyword).

    Python reads identifiers back NFKC-normalised (``ﬁt`` as ``fit``): a name that is not
    would name another class or parameter, so it is refused too.

    Raises:
        PipeflowError: it cannot.
    """
    if (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)
            and unicodedata.normalize("NFKC", name) == name):  # as Python reads it back
        return str.__str__(name)  # an exact str, whatever its class
    raise PipeflowError(
        f"FlowExport: the {what} {name!r} (of task class {cls.__qualname__!r}) is not a "
        f"Python identifier, so it cannot be written into the exported code (it could run "
        f"code when the export is imported). Rename it to a plain name.")


def _text(value: object, what: str, cls: type) -> str:
    """A string setting as a Python string literal (``str.__repr__``: no custom repr).

    Raises:
        PipeflowError: it is not a str (or a path).
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return str.__repr__(value)
    raise PipeflowError(
        f"FlowExport: {cls.__qualname__}.{what} = {value!r} is not a str, so it cannot be "
        f"exported. Make it a str.")


def _param_code(p: luigi.Parameter, value: Any, cls: type) -> str:
    """Source for a parameter declaration whose default is ``value``.

    The task id depends only on the serialized value, so a parameter class that cannot be
    rebuilt from source (choices, enums, custom classes) is exported as a plain
    ``Parameter`` holding the serialized string: same id, same files. Only exact str, int,
    float and bool values are written as literals.
    """
    name = type(p).__name__
    serialized = _text(str(p.serialize(value)), "parameter value", cls)
    simple = (type(p).__module__.startswith("luigi") and name in parameters.__all__
              and name not in ("ChoiceParameter", "EnumParameter", "NumericalParameter",
                               "TaskParameter"))
    if not simple:
        return f"pipeflow.Parameter(default={serialized})"
    if type(value) in (str, int, float, bool):
        literal = repr(value)  # the built-in repr of an exact type
        try:
            if ast.literal_eval(literal) == value:
                return f"pipeflow.{name}(default={literal})"
        except (ValueError, SyntaxError):
            pass
    return f"pipeflow.{name}(default=pipeflow.{name}().parse({serialized}))"


class FlowImport:
    """Import task stubs written by :class:`FlowExport` and read the producer's outputs.

    Args:
        path: the exported ``.py`` file, or the folder holding ``{module}.py``.
        module: the name to import it as (default: the file name).
        path_data: the producer's data dir (relative to the folder holding the module, as
            in d6tflow, or absolute): the stubs read there what the producer wrote below
            its data dir.

    Attributes:
        module: the imported module.
        tasks: its task classes by name (also reachable as attributes: ``.tasks.Train``).
        dirpath: ``path_data`` resolved as above (None without it), for
            ``Workflow(path=imported.dirpath)``.

    Example:
        >>> shared = pipeflow.FlowImport(
        ...     "tasks_export.py", path_data="/shared/data")  # doctest: +SKIP
        >>> shared.TaskTrain(model="ols").outputLoad()  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], module: str | None = None,
                 path_data: str | os.PathLike[str] | None = None) -> None:
        file = pathlib.Path(path)
        if file.is_dir():
            if module is None:
                raise PipeflowError(f"FlowImport({str(path)!r}) is a folder: name the module.")
            file = file / (module if str(module).endswith(".py") else f"{module}.py")
        if not file.is_file():
            raise PipeflowError(
                f"FlowImport: {str(file)!r} does not exist. Generate it with "
                f"FlowExport(..., save=True, path_export=...)."
            )
        name = (module or file.stem).removesuffix(".py")
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        self.module: types.ModuleType = mod
        self.tasks: _Tasks = _Tasks(
            (n, c) for n, c in vars(mod).items()
            if isinstance(c, type) and issubclass(c, TaskData) and c.__module__ == name
        )
        #: where the producer's outputs are read (None: the consumer's data dir)
        self.dirpath: Any = None
        if path_data is not None:
            data = settings.location_path(path_data, "path_data", "FlowImport")
            self.dirpath = data if data.is_absolute() else file.parent / data
            producer = getattr(mod, "PRODUCER_DATA_DIR", None)
            for cls in self.tasks.values():
                if not cls.external:
                    raise PipeflowError(
                        f"FlowImport: {cls.__name__} is not external; only external stubs can "
                        f"read another project's data dir."
                    )
                cls.path = _moved(cls.path, producer, self.dirpath)  # type: ignore[misc]
                cls._pinned = True  # a consumer flow's path/env does not move it

    def __getattr__(self, name: str) -> type[TaskData]:
        try:
            return self.__dict__["tasks"][name]
        except KeyError:
            raise AttributeError(
                f"the imported flow has no task {name!r}; it has {list(self.tasks)}"
            ) from None

    def __dir__(self) -> Iterable[str]:
        return [*super().__dir__(), *self.tasks]


class _Tasks(dict):  # type: ignore[type-arg]
    """The imported task classes by name, also as attributes (``shared.tasks.Train``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"the imported flow has no task {name!r}; it has {list(self)}") from None


def _moved(own: Any, producer: Any, data: Any) -> Any:
    """A stub's location on the consumer's side.

    What lay below the producer's data dir now lies below ``data``; a stub without a
    location reads ``data`` itself.
    """
    if own is None:
        return data
    if storage.is_remote(own) or storage.is_remote(producer):
        own_url, base = os.fspath(own), os.fspath(producer or "").rstrip("/")
        if base and own_url.startswith(base + "/"):
            return data / own_url[len(base) + 1:]
        return storage.RemotePath(own_url) if storage.is_remote(own_url) else pathlib.Path(own)
    own_path = pathlib.Path(own)
    if producer is not None:
        with contextlib.suppress(ValueError):
            return data / own_path.relative_to(producer)
    return own_path
