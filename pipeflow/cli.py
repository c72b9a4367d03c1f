"""The ``pipeflow`` command: preview, run, reset and compare flows from the shell.

Example::

    pipeflow preview tasks:TaskTrain -p model=gbm --dir data
    pipeflow run -n tasks:TaskTrain --params params.yaml      # dry run: exit 1 if work is due
    pipeflow run tasks:TaskTrain -p model=gbm -p do_preprocess=False
    pipeflow run tasks:TaskTrain -g alpha=0.1,1.0 -g model=ols,gbm    # a WorkflowMulti grid
    pipeflow results tasks:TaskTrain -g alpha=0.1,1.0 --json
    pipeflow reset tasks:TaskTrain --task TaskPreprocess --downstream --yes
    pipeflow history --status failed --last 5 --json
    pipeflow dag tasks:TaskTrain -o flow.svg                           # a picture of the flow

Exit codes: 0 done, 1 a task failed (or another error of the run), 2 bad input (an
argument, a parameter value, a params file, a confirmation only ``--yes`` can give), 130
interrupted by Ctrl-C, 143 stopped by SIGTERM. ``run -n`` follows ``make -q``: 0 nothing to
run, 1 something would run, 2 an error. Errors are one ``Error:`` message, never a
traceback. With ``--json`` standard output holds only the JSON document (see
``docs/command-line.md`` for its schema); anything else goes to standard error.
"""

from __future__ import annotations

import ast
import contextlib
import datetime
import functools
import importlib
import io
import json
import os
import pathlib
import re
import signal
import sys
import sysconfig
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import luigi
from click.shell_completion import CompletionItem

from pipeflow import display, graph, operations, runstore, settings, storage
from pipeflow.display.dag import GROUP_ABOVE
from pipeflow.errors import (
    ConfirmationError,
    ParameterError,
    PipeflowError,
    RunCancelledError,
    TaskFailedError,
    did_you_mean,
    first_line,
)
from pipeflow.options import IF_LOCKED, RunOptions
from pipeflow.parameters import MASK, accepted, check_value, is_secret, parse_value
from pipeflow.plan import Status
from pipeflow.trees import commands as tree_commands
from pipeflow.workflow import Workflow, WorkflowMulti, expand_params

#: the key of a params file that holds a grid (a WorkflowMulti), not a parameter
GRID_KEY = "grid"
#: the suffixes a params file may have, by format
PARAMS_FORMATS = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON", ".toml": "TOML"}


class _Refused(click.ClickException):
    """Bad input: one ``Error:`` line and exit code 2 (click's usage text left out)."""

    exit_code = 2


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: stops a run the way Ctrl-C does."""


# -- the target and its parameters -----------------------------------------------------------

def _load_task(target: str) -> type[luigi.Task]:
    """The task class TARGET (``MODULE:CLASS``) names, its module imported.

    What the module prints while it is imported goes to standard error (standard output
    may be a ``--json`` document or a picture).

    Raises:
        click.ClickException: the module exists but importing it failed (a missing
            dependency, a SyntaxError, any exception): one line with the file and line of
            the user's code, exit 1.
        _Refused: TARGET is not ``MODULE:CLASS``, no module of that name exists, it calls
            ``sys.exit()`` while imported, or it has no such task class (exit 2).
    """
    module_name, _, cls_name = target.partition(":")
    if not (cls_name.strip() and module_name.strip()):
        raise click.BadParameter(f"{target!r}: write MODULE:TASKCLASS, e.g. tasks:TaskTrain")
    if module_name.endswith(".py"):
        raise _Refused(f"TARGET {target!r}: name the module, not its file: "
                       f"{module_name[:-3]}:{cls_name}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        with _stdout_to_stderr():
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name
                                     or module_name.startswith(exc.name + ".")):
            raise _Refused(
                f"TARGET {target!r}: there is no module {module_name!r} in the working "
                f"directory ({os.getcwd()}) or on the Python path. Run pipeflow in the folder "
                f"of {module_name.replace('.', '/')}.py, or add its folder to PYTHONPATH."
            ) from None
        raise click.ClickException(_import_failed(module_name, exc)) from None
    except SystemExit as exc:
        raise _Refused(
            f"TARGET {target!r}: importing module {module_name!r} called sys.exit({exc.code!r})"
            f"{_at(_user_frame(exc))}, so its tasks cannot be loaded. Guard the module's "
            f"script code with: if __name__ == '__main__':") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed: say where, briefly
        raise click.ClickException(_import_failed(module_name, exc)) from None
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, luigi.Task)):
        classes = sorted(n for n, v in vars(module).items()
                         if isinstance(v, type) and issubclass(v, luigi.Task)
                         and v.__module__ == module.__name__)
        listed = f" Its task classes: {', '.join(classes)}." if classes else ""
        raise _Refused(f"TARGET {target!r}: module {module_name!r} has no task class "
                       f"{cls_name!r}.{did_you_mean(cls_name, classes)}{listed}")
    return cls


def _import_failed(module_name: str, exc: BaseException) -> str:
    """The one line saying where importing the user's module failed, and how."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return (f"importing {module_name!r} failed at {exc.filename}:{exc.lineno}: "
                f"SyntaxError: {exc.msg}")
    return f"importing {module_name!r} failed{_at(_user_frame(exc))}: {first_line(exc)}"


#: folders whose frames are not the user's code (the standard library, installed packages,
#: pipeflow itself)
_NOT_USERS = tuple(
    {str(pathlib.Path(p).resolve()) + os.sep for p in (
        *(str(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib",
                                                   "platlib")),
        str(pathlib.Path(__file__).parent))})


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The deepest frame of the user's code in ``exc``'s traceback (else its deepest)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<")]
    for frame in reversed(frames):
        with contextlib.suppress(OSError, ValueError):
            if not str(pathlib.Path(frame.filename).resolve()).startswith(_NOT_USERS):
                return frame
    return frames[-1] if frames else None


def _at(frame: traceback.FrameSummary | None) -> str:
    """`` at FILE:LINE`` of a frame ('' without one)."""
    return "" if frame is None else f" at {frame.filename}:{frame.lineno}"


def _parse(cls: type[luigi.Task], name: str, param: luigi.Parameter, text: str,
           option: str = "-p") -> Any:
    """The value of ``-p name=text`` for ``cls``: the rules of Python's, a command-line hint.

    Raises:
        ParameterError: ``text`` is not a value of the parameter: the message names the
            task class, the parameter, the value (``***`` for a secret) and the form to use.
    """
    try:
        return parse_value(cls, name, text)
    except ParameterError as exc:
        form, example = _form(param)
        raise ParameterError(f"{exc} On the command line: {option} {name}={example} ({form})."
                             ) from None


def _form(param: luigi.Parameter) -> tuple[str, str]:
    """How a value of ``param`` is written on the command line, and an example."""
    fmt = getattr(param, "date_format", None)
    if isinstance(fmt, str):
        readable = fmt
        for code, shown in (("%Y", "YYYY"), ("%m", "MM"), ("%d", "DD"), ("%H", "HH"),
                            ("%M", "mm"), ("%S", "ss")):
            readable = readable.replace(code, shown)
        return (f"a date written {readable}",
                datetime.datetime(2024, 1, 31, 13, 45, 30).strftime(fmt))
    choices = getattr(param, "_choices", None) or list(getattr(
        getattr(param, "_enum", None), "__members__", ()))
    if isinstance(choices, (set, frozenset)):
        choices = sorted(choices, key=str)
    if choices:
        return f"one of {', '.join(map(str, choices))}", str(next(iter(choices)))
    for kind, form, example in _FORMS:
        if isinstance(param, kind):
            return form, str(getattr(param, "_min_value", example))
    return f"a value of a {type(param).__name__}", "..."


_FORMS: list[tuple[type, str, str]] = [
    (luigi.BoolParameter, "true or false", "true"),
    (luigi.IntParameter, "a whole number", "3"),
    (luigi.FloatParameter, "a number", "0.5"),
    (luigi.NumericalParameter, "a number in its range", "0"),
    (luigi.DictParameter, "a JSON object", '\'{"a": 1}\''),
    (luigi.ListParameter, "a JSON list", "'[1, 2]'"),
    (luigi.TupleParameter, "a JSON list", "'[1, 2]'"),
    (luigi.TimeDeltaParameter, "a duration", "'1 day 2 hours'"),
]


def _read_params_file(path: pathlib.Path) -> dict[str, Any]:
    """The mapping a YAML, JSON or TOML params file holds (by its suffix).

    Raises:
        ParameterError: the file cannot be read, its suffix is not one of
            :data:`PARAMS_FORMATS`, its syntax is wrong (with the line and column), or it
            does not hold a mapping of names to values.
    """
    kind = PARAMS_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ParameterError(
            f"params file {str(path)!r}: pipeflow reads {', '.join(PARAMS_FORMATS)} files "
            f"(YAML, JSON or TOML, by the suffix), not {path.suffix or 'a file without one'!r}. "
            f"Rename it, or give values with -p NAME=VALUE.")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParameterError(f"params file {str(path)!r} does not exist (relative to "
                             f"{os.getcwd()}).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(f"params file {str(path)!r} cannot be read: {first_line(exc)}."
                             ) from None
    try:
        data = _parse_text(kind, text)
    except _SyntaxProblem as exc:
        raise ParameterError(
            f"params file {str(path)!r} is not valid {kind}: {exc.where}{exc.problem}. Fix "
            f"the file.") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ParameterError(
            f"params file {str(path)!r} must hold a mapping of parameter names to values "
            f"(e.g. 'alpha: 0.1' in YAML), not a {type(data).__name__}.")
    grid = data.get(GRID_KEY)
    for key in [*data, *(grid if isinstance(grid, Mapping) else ())]:
        if not isinstance(key, str):
            where = f"'{GRID_KEY}' has" if key not in data or (
                isinstance(grid, Mapping) and key in grid) else "has"
            raise ParameterError(
                f"params file {str(path)!r}: {where} the key {key!r} (a "
                f"{type(key).__name__}), which is not a parameter name. Write parameter "
                f"names as text, e.g. 'alpha: 0.1' in YAML.")
    return dict(data)


@dataclass
class _SyntaxProblem(Exception):
    """What is wrong in a params file and where (``line 3, column 7: ``)."""

    where: str
    problem: str


def _parse_text(kind: str, text: str) -> Any:
    """``text`` parsed as ``kind`` (YAML, JSON or TOML); _SyntaxProblem if it is not."""
    if kind == "JSON":
        try:
            return json.loads(text, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as exc:
            raise _SyntaxProblem(f"line {exc.lineno}, column {exc.colno}: ", exc.msg) from None
    if kind == "TOML":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            # its message ends with "(at line 3, column 7)"
            raise _SyntaxProblem("", str(exc)) from None
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc)
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start is not None:
            problem += (f" ({context} that starts at line {start.line + 1}, column "
                        f"{start.column + 1})")
        raise _SyntaxProblem(where, problem) from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members as a dict; _SyntaxProblem if a key is given twice."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _SyntaxProblem("", f"the key {key!r} is given twice in one object (the "
                                     f"second would silently win): keep one")
        out[key] = value
    return out


@functools.cache
def _strict_loader() -> type:
    """The YAML SafeLoader refusing duplicate keys and aliases (``*name``), with _SyntaxProblem.

    Aliases can expand a small file into billions of values ("billion laughs"); a params
    file has no need of them.
    """
    import yaml

    class Strict(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                mark = event.start_mark
                raise _SyntaxProblem(
                    f"line {mark.line + 1}, column {mark.column + 1}: ",
                    f"the alias *{event.anchor} repeats values given elsewhere (a YAML "
                    f"anchor &{event.anchor}); pipeflow reads params files without aliases: "
                    f"write the values out")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                with contextlib.suppress(TypeError):  # an unhashable key: yaml says so
                    if key in seen:
                        mark = key_node.start_mark
                        first = seen[key].start_mark
                        raise _SyntaxProblem(
                            f"line {mark.line + 1}, column {mark.column + 1}: ",
                            f"the key {key!r} is given twice (first at line "
                            f"{first.line + 1}; the second would silently win): keep one")
                    seen[key] = key_node
            return super().construct_mapping(node, deep)

    return Strict


#: a ``--params`` value that is ``NAME=VALUE[,NAME=VALUE...]`` (Kedro's form), not a file
_PAIRS = re.compile(r"^\s*[A-Za-z_]\w*\s*=")
#: where a Kedro-style ``--params`` list splits: a comma followed by the next ``NAME=``
_NEXT_PAIR = re.compile(r",(?=\s*[A-Za-z_]\w*\s*=)")


def _is_pairs(value: str) -> bool:
    """Whether a ``--params`` value is Kedro's ``a=1,b=2`` rather than a file path."""
    return (bool(_PAIRS.match(value)) and not os.path.exists(value)
            and pathlib.Path(value).suffix.lower() not in PARAMS_FORMATS)


@dataclass
class _Given:
    """The parameters and grid given on the command line and in params files.

    ``typed`` and ``grid`` hold values already typed (from a file or JSON, checked the way
    Python's ``Workflow(Task, params)`` checks them); ``texts`` the ``-p`` values to parse.
    ``origin`` says where each name came from, for the messages.
    """

    typed: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    grid: dict[str, list[tuple[Any, bool]]] = field(default_factory=dict)  # (value, is_text)
    origin: dict[str, str] = field(default_factory=dict)


def _gather(files: Sequence[str], params: Sequence[str], grids: Sequence[str]) -> _Given:
    """Read ``--params`` (files, then Kedro-style pairs), ``-p`` and ``-g``: later wins.

    A ``-p`` or ``-g`` of a name replaces the same name from a file (a value or a grid);
    the same name given both with ``-p`` and ``-g`` is an error.
    """
    given = _Given()
    pairs: list[str] = []
    for item in files:
        if _is_pairs(item):
            pairs += [p for p in _NEXT_PAIR.split(item) if p.strip()]
            continue
        path = pathlib.Path(item)
        data = _read_params_file(path)
        has_grid = GRID_KEY in data
        grid = data.pop(GRID_KEY, None)
        for name, value in data.items():
            given.grid.pop(name, None)
            given.typed[name] = value
            given.origin[name] = f"in {item}"
        if not has_grid:
            continue
        if not isinstance(grid, Mapping) or not all(
                isinstance(v, list) and v for v in grid.values()):
            raise ParameterError(
                f"params file {item!r}: '{GRID_KEY}' must map each parameter to a non-empty "
                f"list of its values (e.g. {GRID_KEY}: {{alpha: [0.1, 1.0]}}), not {grid!r}.")
        for name, values in grid.items():
            given.typed.pop(name, None)
            given.grid[name] = [(v, False) for v in values]
            given.origin[name] = f"in {item} ({GRID_KEY})"
    cli: dict[str, str] = {}
    for item in [*pairs, *params]:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: write NAME=VALUE", param_hint="'-p'")
        given.typed.pop(name, None)
        given.grid.pop(name, None)
        given.texts[name] = value
        given.origin[name] = "-p"
        cli[name] = "-p"
    for item in grids:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise click.BadParameter(f"{item!r}: write NAME=V1,V2 or NAME='[V1, V2]'",
                                     param_hint="'-g'")
        if cli.get(name) == "-p":
            raise ParameterError(
                f"{name!r} is given both with -p (one value) and -g (a grid): keep one.")
        if cli.get(name) == "-g":
            raise ParameterError(
                f"-g {name} is given twice (the second would replace the first): give all "
                f"its values in one, e.g. -g {name}=V1,V2,V3.")
        given.typed.pop(name, None)
        given.texts.pop(name, None)
        given.grid[name] = _grid_values(name, values)
        given.origin[name] = "-g"
        cli[name] = "-g"
    return given


def _grid_values(name: str, values: str) -> list[tuple[Any, bool]]:
    """The values of ``-g name=values``: a JSON list, or text split at the commas."""
    if values.lstrip().startswith("["):
        try:
            parsed = json.loads(values)
        except json.JSONDecodeError as exc:
            raise ParameterError(
                f"-g {name}={values}: a value starting with '[' is read as a JSON list, and "
                f"this one is not valid JSON ({exc.msg} at column {exc.colno}). Write e.g. "
                f"-g '{name}=[0.1, 1.0]', or -g {name}=0.1,1.0.") from None
        if not isinstance(parsed, list) or not parsed:
            raise ParameterError(f"-g {name}={values}: the JSON list is empty.")
        return [(v, False) for v in parsed]
    return [(v.strip(), True) for v in values.split(",")]


def _declared(cls: type[luigi.Task], given: _Given) -> dict[str, tuple[type, luigi.Parameter]]:
    """Every parameter of the flow's task classes: name -> (declaring class, parameter).

    The target's own parameters come first; the others are found in the classes of the
    target's graph, built with the values of the target's own parameters given so far (a
    graph that cannot be built yet leaves only the target's).
    """
    out = {n: (cls, p) for n, p in cls.get_params()}
    if all(n in out for n in given.origin):
        return out
    known: dict[str, Any] = {}
    for name, (_, param) in out.items():
        with contextlib.suppress(Exception):
            if name in given.texts:
                known[name] = parse_value(cls, name, given.texts[name])
            elif name in given.typed:
                known[name] = check_value(cls, name, param, given.typed[name])
            elif name in given.grid:
                value, text = given.grid[name][0]
                known[name] = (parse_value(cls, name, value) if text
                               else check_value(cls, name, param, value))
    try:
        families = graph.build([Workflow(cls, known).get_task()]).families()
    except Exception:  # noqa: BLE001 - the run itself reports what is wrong with the flow
        families = [cls]
    for c in families:
        for n, p in c.get_params():
            out.setdefault(n, (c, p))
    return out


def _resolve(cls: type[luigi.Task], given: _Given) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The checked fixed values and grid of the flow of ``cls``.

    Raises:
        ParameterError: a name no task of the flow declares (with a did-you-mean and what
            the classes accept), or a value that is not one of its parameter (the message
            Python's ``Workflow(Task, params)`` gives, plus where the value came from).
    """
    declared = _declared(cls, given)
    for name, where in given.origin.items():
        if name not in declared:
            classes = list(dict.fromkeys(c for c, _ in declared.values())) or [cls]
            whose = (f"{cls.__name__} has no parameter {name!r}" if classes == [cls] else
                     f"no task of {cls.__name__}'s flow has a parameter {name!r}")
            form = f"-p {name}=..." if where == "-p" else f"-g {name}=..." if where == "-g" \
                else where
            raise ParameterError(f"{whose} ({form}).{did_you_mean(name, declared)} "
                                 f"{accepted(classes)}.")
    fixed: dict[str, Any] = {}
    for name, text in given.texts.items():
        owner, param = declared[name]
        fixed[name] = _parse(owner, name, param, text)
    for name, value in given.typed.items():
        fixed[name] = _typed(declared[name], name, value, given.origin[name])
    grid: dict[str, list[Any]] = {}
    for name, values in given.grid.items():
        owner, param = declared[name]
        grid[name] = [_parse(owner, name, param, v, "-g") if text
                      else _typed(declared[name], name, v, given.origin[name])
                      for v, text in values]
    return fixed, grid


def _typed(declared: tuple[type, luigi.Parameter], name: str, value: Any, origin: str) -> Any:
    """A typed value (a file's, a JSON list's) checked as ``Workflow(Task, params)`` checks it."""
    owner, param = declared
    try:
        return check_value(owner, name, param, value)
    except ParameterError as exc:
        where = "with -g" if origin == "-g" else origin
        raise ParameterError(f"{exc} (That value of {name!r} is given {where}.)") from None


@dataclass
class _Flow:
    """The flow of a command: the target with its parameters, or a grid of them."""

    target: str
    cls: type[luigi.Task]
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]

    @functools.cached_property
    def multi(self) -> WorkflowMulti | None:
        """The WorkflowMulti of a grid (None without one)."""
        if not self.grid:
            return None
        secret = {n for n, p in self.cls.get_params() if is_secret(p)}
        names = expand_params(self.grid, secret, self.cls)
        return WorkflowMulti(self.cls, {n: {**self.fixed, **p} for n, p in names.items()})

    @functools.cached_property
    def single(self) -> Workflow:
        """The Workflow of the target with the fixed values."""
        return Workflow(self.cls, self.fixed)

    def flows(self) -> dict[str, Workflow]:
        """Each flow by name: a grid's ``'alpha=0.1,model=ols'``..., else one named ``''``."""
        multi = self.multi
        return {"": self.single} if multi is None else dict(multi.workflow_objs)

    def roots(self) -> list[luigi.Task]:
        """The root task of each flow."""
        return [wf.get_task() for wf in self.flows().values()]

    def families(self) -> list[type[luigi.Task]]:
        """The task classes of the flows."""
        return graph.build(self.roots()).families()


def _spec(target: str, params: Sequence[str], files: Sequence[str] = (),
          grids: Sequence[str] = ()) -> _Flow:
    """The flow a command names: TARGET, its ``-p``, ``--params`` and ``-g``, all checked.

    What the user's code prints meanwhile (importing the module, building the flow) goes
    to standard error: standard output may be a ``--json`` document or a picture.
    """
    with _stdout_to_stderr():
        cls = _load_task(target)
        fixed, grid = _resolve(cls, _gather(files, params, grids))
        flow = _Flow(target, cls, fixed, grid)
        flow.flows()  # Python's checks of the whole flow (Workflow(Task, params)), now
    return flow


def _flow(target: str, params: Sequence[str], files: Sequence[str] = ()) -> Workflow:
    """The Workflow of TARGET with its ``-p`` and ``--params`` values (no grid).

    For a command that takes one flow (its signature is the one commands used before
    ``--params`` and ``-g``); the commands here use :func:`_spec`.
    """
    return _spec(target, params, files).single


def _task_class(flow: _Flow, name: str, option: str) -> type[luigi.Task]:
    """The task class ``name`` (a family of the flow, or MODULE:CLASS) names.

    Raises:
        ParameterError: no task of the flow is of that family: the message lists them.
    """
    families = flow.families()
    family = _load_task(name).get_task_family() if ":" in name else name
    for cls in families:
        if cls.get_task_family() == family:
            return cls
    names = sorted({c.get_task_family() for c in families})
    raise ParameterError(
        f"{option} {name}: {family!r} is not a task of {flow.target}'s flow."
        f"{did_you_mean(family, names)} Its tasks are: {', '.join(names)}.")


def _use_dir(data_dir: str | None, create: bool) -> None:
    """Make ``data_dir`` the data dir; only commands that write create it."""
    if data_dir is None:
        return
    if create:
        operations.set_dir(data_dir)
    else:
        settings.dir = data_dir


# -- completion: read the user's files, never import them ---------------------------------------

#: files and bytes completion reads at most (a TAB must stay quick)
_COMPLETE_FILES, _COMPLETE_BYTES = 200, 2_000_000


def _module_tree(module: str) -> ast.Module | None:
    """The parsed source of ``module`` in the working directory (None if absent/unreadable)."""
    base = pathlib.Path(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        try:
            if path.is_file() and path.stat().st_size <= _COMPLETE_BYTES:
                return ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
            return None
    return None


def _task_classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    """The classes of a module that look like tasks (a base or decorator naming a task)."""
    out = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
            continue
        words = " ".join(ast.unparse(x) for x in [*node.bases, *node.decorator_list])
        if "Task" in words or "requires" in words or "inherits" in words:
            out[node.name] = node
    return out


def _complete_target(ctx: click.Context, param: click.Parameter, incomplete: str
                     ) -> list[CompletionItem]:
    """MODULE:CLASS for the task classes of the ``.py`` files in the working directory."""
    out: list[CompletionItem] = []
    with contextlib.suppress(OSError):
        files = sorted(pathlib.Path().glob("*.py"))[:_COMPLETE_FILES]
        for path in files:
            if not path.stem.isidentifier() or not (
                    path.stem.startswith(incomplete) or incomplete.startswith(path.stem)):
                continue
            tree = _module_tree(path.stem)
            for name in _task_classes(tree) if tree is not None else ():
                value = f"{path.stem}:{name}"
                if value.startswith(incomplete):
                    out.append(CompletionItem(value))
    return out


def _param_names(module: str, cls_name: str) -> list[str]:
    """The parameters ``cls_name`` declares in ``module``'s source, with its bases' there."""
    tree = _module_tree(module)
    if tree is None:
        return []
    classes = _task_classes(tree)
    names: dict[str, None] = {}
    todo, seen = [cls_name], set()
    while todo:
        node = classes.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        for stmt in node.body:
            if (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)
                    and "Parameter" in ast.unparse(stmt.value.func)):
                names.update({t.id: None for t in stmt.targets if isinstance(t, ast.Name)})
        for expr in [*node.bases, *node.decorator_list]:
            calls = [expr] if not isinstance(expr, ast.Call) else [expr.func, *expr.args]
            todo += [ast.unparse(c).rsplit(".", 1)[-1] for c in calls]
    return list(names)


def _target_of(ctx: click.Context) -> str:
    """TARGET of the command line being completed ('' if not given yet).

    Click leaves it unparsed when the word being completed is an option's value; the words
    are then read from ``COMP_WORDS``, which click's bash, zsh and fish scripts all set.
    """
    given = ctx.params.get("target")
    if given:
        return str(given)
    words = os.environ.get("COMP_WORDS", "").split()
    return next((w for w in words[2:] if re.fullmatch(r"[\w.]+:\w+", w)), "")


def _complete_param(ctx: click.Context, param: click.Parameter, incomplete: str
                    ) -> list[CompletionItem]:
    """``NAME=`` for the parameters of TARGET's class (read from its source)."""
    module, _, cls_name = _target_of(ctx).partition(":")
    if not (module and cls_name) or "=" in incomplete:
        return []
    return [CompletionItem(f"{n}=") for n in _param_names(module, cls_name)
            if n.startswith(incomplete)]


def _complete_task(ctx: click.Context, param: click.Parameter, incomplete: str
                   ) -> list[CompletionItem]:
    """The task classes of TARGET's module (for ``--forced`` and ``--task``)."""
    module = _target_of(ctx).partition(":")[0]
    tree = _module_tree(module) if module else None
    names = _task_classes(tree) if tree is not None else {}
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


# -- options shared by the commands ---------------------------------------------------------------

_target = click.argument("target", shell_complete=_complete_target)
_param = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                      shell_complete=_complete_param,
                      help="A parameter of the flow (repeatable); beats --params.")
def _complete_file(ctx: click.Context, param: click.Parameter, incomplete: str
                   ) -> list[CompletionItem]:
    """File names: the shell completes them (click's ``file`` completion type)."""
    return [CompletionItem(incomplete, type="file")]


_params_file = click.option(
    "--params", "params_files", multiple=True, metavar="FILE|NAME=VALUE,...",
    shell_complete=_complete_file,
    help="A YAML, JSON or TOML file of parameters (by suffix; a 'grid:' key holds a grid), "
         "or Kedro's a=1,b=2 (repeatable).")
_grid = click.option("-g", "--grid", "grids", multiple=True, metavar="NAME=V1,V2",
                     shell_complete=_complete_param,
                     help="Sweep a parameter over values: a WorkflowMulti of every combination "
                          "(repeatable; NAME='[V1, V2]' as JSON for values with commas).")
_dir = click.option("--dir", "data_dir", default=None,
                    type=click.Path(file_okay=False, dir_okay=True),
                    help="The data dir (default: data).")
_json = click.option("--json", "as_json", is_flag=True,
                     help="Print a JSON document on standard output (and nothing else).")


def _flow_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """TARGET, -p, --params, -g and --dir: the options naming a flow."""
    for option in (_dir, _grid, _params_file, _param, _target):
        command = option(command)
    return command


class _Main(click.Group):
    """The command group; it knows whether the process ends with the command."""

    #: run as the ``pipeflow`` program (arguments from ``sys.argv``, exiting when done), not
    #: called in a process that goes on (tests, ``CliRunner``): signals that arrive once a
    #: command was stopped are then ignored until the process exits
    exits = False

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        _Main.exits = args is None and kwargs.get("standalone_mode", True) and not rest
        return super().main(args, *rest, **kwargs)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pipeflow")
def main() -> None:
    """Preview, run, reset and compare pipeflow flows. TARGET is MODULE:TASKCLASS.

    \b
    Examples:
      pipeflow preview tasks:Train -p model=gbm
      pipeflow run -n tasks:Train                 # dry run: exit 1 if work is due
      pipeflow run tasks:Train --params params.yaml --cores 4
      pipeflow run tasks:Train -g alpha=0.1,1.0   # a sweep (WorkflowMulti)
      pipeflow results tasks:Train -g alpha=0.1,1.0
      pipeflow reset tasks:Train --task Prepare --downstream --yes
      pipeflow history --status failed --last 5
      pipeflow preview tasks:Train --json | jq .to_run
      pipeflow tasks run t-root --module executors   # a task tree (pipeflow.trees)

    \b
    Exit codes: 0 done, 1 a task failed, 2 bad input, 130 Ctrl-C, 143 SIGTERM
    (run -n: 0 nothing to run, 1 something would run, 2 error).
    Shell completion: eval "$(_PIPEFLOW_COMPLETE=bash_source pipeflow)" (zsh_source,
    fish_source); see docs/command-line.md.
    """
    # the tasks group (pipeflow.trees.commands) handles its errors as these commands do
    click.get_current_context().meta[tree_commands.GUARD] = _guard


main.add_command(tree_commands.tasks)


# -- preview and the dry run ---------------------------------------------------------------------

@main.command()
@_flow_options
@_json
def preview(target: str, params: tuple[str, ...], params_files: tuple[str, ...],
            grids: tuple[str, ...], data_dir: str | None, as_json: bool) -> None:
    """Show the status tree of TARGET's flow.

    \b
    Examples:
      pipeflow preview tasks:Train -p model=gbm
      pipeflow preview tasks:Train --params params.yaml --json | jq '.tasks[].status'
    """
    with _guard(f"pipeflow preview {target}"):
        flow = _spec(target, params, params_files, grids)
        _use_dir(data_dir, create=False)
        if as_json:
            with _stdout_to_stderr():
                shown = _plan_rows(flow, ())
            _print_json(shown)
        elif flow.multi is not None:
            flow.multi.preview()
        else:
            flow.single.preview()


def _shown_params(task: luigi.Task) -> dict[str, str]:
    """A task's significant parameters as text, secret ones as ``***``."""
    params = dict(task.get_params())
    return {n: MASK if is_secret(params[n]) else v
            for n, v in task.to_str_params(only_significant=True).items()}


def _plan_rows(flow: _Flow, forced: Sequence[str], forced_all: bool = False) -> dict[str, Any]:
    """The preview of ``flow`` as the JSON document (``--json``) and the dry run read it.

    ``will_run`` says which tasks a run with these ``--forced`` tasks would execute.
    """
    roots = flow.roots()
    shown = operations.preview(roots, print_it=False)
    plan = shown.plan
    g = plan.graph
    reasons = {r.task.task_id: r.reason for r in shown.rows if not r.reference}
    start = {g.position(t) for t in roots} if forced_all else set()
    for name in forced:
        family = _task_class(flow, name, "--forced").task_family
        start |= {i for i, t in enumerate(g.nodes) if t.task_family == family}
    redo = g.downstream(start) if start else set()
    runs = plan.would_run(redo)
    tasks = []
    for i, t in enumerate(g.nodes):
        why = "forced" if i in redo else reasons.get(t.task_id)
        tasks.append({"task": graph.describe(t), "task_id": t.task_id,
                      "family": t.task_family, "params": _shown_params(t),
                      "status": str(plan.status[i]), "reason": why, "will_run": i in runs})
    counts = {s.value: sum(1 for x in tasks if x["status"] == s.value) for s in Status}
    return {"target": flow.target, "flows": _flow_names(flow), "tasks": tasks,
            "counts": counts, "to_run": len(runs)}


def _flow_names(flow: _Flow) -> dict[str, Any]:
    """Each flow's parameters by name (a grid's flows; one flow named ``''`` without one)."""
    secret = {n for n, p in flow.cls.get_params() if is_secret(p)}
    return {name: {k: MASK if k in secret else v if isinstance(v, (int, float, bool, str))
                   else str(v) for k, v in wf.params.items()}
            for name, wf in flow.flows().items()}


def _dry_run(flow: _Flow, forced: Sequence[str], forced_all: bool, as_json: bool) -> None:
    """Say what a run would execute; exit 1 when something would run, 0 when nothing would."""
    with _stdout_to_stderr():
        shown = _plan_rows(flow, forced, forced_all)
    if as_json:
        _print_json({**shown, "dry_run": True})
    else:
        due = [t for t in shown["tasks"] if t["will_run"]]
        n = len(shown["tasks"])
        if not due:
            click.echo(f"Nothing to run: the {n} task{'s' if n != 1 else ''} of "
                       f"{flow.target} are complete.")
        else:
            click.echo(f"Would run {len(due)} of {n} task{'s' if n != 1 else ''} "
                       f"(upstream first):")
            for t in due:
                forced = t["reason"] == "forced"
                why = f" - {t['reason']}" if t["reason"] and not forced else ""
                click.echo(f"    {t['task']} ({t['status']}{', forced' if forced else ''}){why}")
        click.echo("This was a dry run (-n): nothing ran and nothing was deleted.", err=True)
    raise click.exceptions.Exit(1 if shown["to_run"] else 0)


# -- run -----------------------------------------------------------------------------------------

@main.command()
@_flow_options
@click.option("-n", "--dry-run", is_flag=True,
              help="Show what would run and exit 1 if something would, 0 if nothing (make "
                   "-q), 2 on an error; nothing runs or is deleted.")
@click.option("-j", "--workers", "--cores", "workers", default="1", show_default=True,
              metavar="N",
              help="Tasks run at once (--cores, -j: Snakemake's names).")
@click.option("--forced", multiple=True, metavar="TASK", shell_complete=_complete_task,
              help="Rerun this task (a family name or MODULE:CLASS) and everything between "
                   "it and TARGET (repeatable).")
@click.option("--forced-all", is_flag=True, help="Rerun TARGET itself.")
@click.option("--summary/--no-summary", default=True, help="Print the execution summary.")
@click.option("--if-locked", type=click.Choice(IF_LOCKED), default="wait",
              show_default=True,
              help="A task another process is running: wait for it, or fail at once.")
@_json
def run(target: str, params: tuple[str, ...], params_files: tuple[str, ...],
        grids: tuple[str, ...], data_dir: str | None, dry_run: bool, workers: str,
        forced: tuple[str, ...], forced_all: bool, summary: bool, if_locked: str,
        as_json: bool) -> None:
    """Run TARGET and everything upstream of it that is not complete.

    \b
    Examples:
      pipeflow run tasks:Train -p model=gbm --cores 4
      pipeflow run -n tasks:Train             # what would run (exit 1: something would)
      pipeflow run tasks:Train --params params.yaml -p alpha=0.5
      pipeflow run tasks:Train -g alpha=0.1,1.0 -g model=ols,gbm
      pipeflow run tasks:Train --forced Prepare --json > result.json
    """
    what = f"pipeflow run {'-n ' if dry_run else ''}{target}"
    after = ("" if dry_run else "; tasks that finished keep their outputs, the stopped ones "
             "left none: run it again to finish")
    with _guard(what, after, failure_code=2 if dry_run else 1):
        options = {"workers": _whole(workers), "forced_all": forced_all,
                   "execution_summary": summary and not as_json, "if_locked": if_locked}
        RunOptions.of(**options)  # checked before anything is loaded or created
        flow = _spec(target, params, params_files, grids)
        if dry_run:
            _use_dir(data_dir, create=False)
            _dry_run(flow, forced, forced_all, as_json)
        families = [_task_class(flow, f, "--forced").task_family for f in forced]
        if families:
            options["forced"] = families
        _use_dir(data_dir, create=True)
        _run(flow, options, as_json)


def _run(flow: _Flow, options: dict[str, Any], as_json: bool) -> None:
    """Run the flow (a WorkflowMulti for a grid); with ``as_json`` print the result as JSON."""
    multi = flow.multi
    result: Any = None
    try:
        with _stdout_to_stderr() if as_json else contextlib.nullcontext():
            result = (multi.run(**options) if multi is not None
                      else flow.single.run(**options))
    except (TaskFailedError, RunCancelledError) as exc:
        if as_json:
            _print_json(_run_json(flow, exc.result))
        raise
    if as_json:
        whole = result if multi is None else _merged(result)
        _print_json(_run_json(flow, whole))


def _merged(results: Mapping[str, Any]) -> Any:
    """One RunResult of a WorkflowMulti's per-flow results (the run they were cut from)."""
    first = next(iter(results.values()))
    whole = type(first)(first.run_id)
    whole.started, whole.finished = first.started, first.finished
    for r in results.values():
        whole.tasks.update(r.tasks)
    return whole


def _run_json(flow: _Flow, result: Any) -> dict[str, Any]:
    """A RunResult as the JSON document of ``run --json``."""
    tasks = []
    for r in result.tasks.values():
        tasks.append({
            "task": graph.describe(r.task), "task_id": r.task.task_id,
            "family": r.task.task_family, "params": _shown_params(r.task),
            "state": r.state.value, "reason": r.reason,
            "error": None if r.error is None else first_line(r.error),
            "duration": r.duration, "attempts": r.attempts})
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    out: dict[str, Any] = {"run_id": result.run_id, "success": bool(result.success),
                           "target": flow.target, "tasks": tasks, "counts": counts}
    if flow.grid:
        ids = {t["task_id"]: t["state"] for t in tasks}
        bad = {"failed", "skipped", "cancelled", "queued"}
        out["flows"] = {}
        for name, wf in flow.flows().items():
            mine = [t.task_id for t in graph.build([wf.get_task()]).nodes if t.task_id in ids]
            out["flows"][name] = {"success": not any(ids[i] in bad for i in mine),
                                  "task_ids": mine}
    return out


# -- reset ---------------------------------------------------------------------------------------

@main.command()
@_flow_options
@click.option("--task", "tasks", multiple=True, metavar="TASK", shell_complete=_complete_task,
              help="Reset this task of the flow (a family name or MODULE:CLASS) instead of "
                   "TARGET (repeatable).")
@click.option("--upstream", is_flag=True,
              help="Also reset everything upstream of the task (its inputs, recursively).")
@click.option("--downstream", is_flag=True,
              help="Also reset everything between --task and TARGET (what was made from it).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(target: str, params: tuple[str, ...], params_files: tuple[str, ...],
          grids: tuple[str, ...], data_dir: str | None, tasks: tuple[str, ...],
          upstream: bool, downstream: bool, yes: bool) -> None:
    """Delete the outputs of TARGET (or of --task) so that it runs again.

    \b
    Examples:
      pipeflow reset tasks:Train --yes
      pipeflow reset tasks:Train --upstream --yes         # Train and all its inputs
      pipeflow reset tasks:Train --task Prepare --yes     # only Prepare
      pipeflow reset tasks:Train --task Prepare --downstream --yes   # Prepare..Train
    """
    with _guard(f"pipeflow reset {target}"):
        if upstream and downstream:
            raise ParameterError("--upstream and --downstream go one way each: pass one. "
                                 "(To reset the whole flow: --upstream without --task.)")
        if downstream and not tasks:
            raise ParameterError(
                f"--downstream needs --task: the task whose downstream to reset, up to "
                f"TARGET. E.g. pipeflow reset {target} --task TASK --downstream.")
        if (upstream or downstream) and len(tasks) > 1:
            raise ParameterError(f"--{'upstream' if upstream else 'downstream'} takes one "
                                 f"--task, not {len(tasks)}.")
        flow = _spec(target, params, params_files, grids)
        classes = [_task_class(flow, t, "--task") for t in tasks]
        _use_dir(data_dir, create=False)
        home = pathlib.Path(os.fspath(settings.dir))
        if not storage.is_remote(settings.dir) and not home.is_dir():
            # nothing to delete there, and nothing to create (a URL: the store says)
            click.echo(f"Nothing was deleted: the data dir {home} does not exist.")
            return
        where: Any = flow.multi if flow.grid else flow.single
        confirm = not yes
        before = _committed(flow)
        if upstream:
            done = where.reset_upstream(classes[0] if classes else None, confirm=confirm)
        elif downstream:
            done = where.reset_downstream(classes[0], confirm=confirm)
        else:
            done = where.reset(classes or None, confirm=confirm)
        if not done:  # declined (a Reset, or a grid's FlowResets, is falsy then)
            click.echo("Nothing was deleted (not confirmed).")
            return
        gone = [t for t in before if t not in _committed(flow)]
        n = len(gone)
        click.echo(f"Deleted the outputs of {n} task{'' if n == 1 else 's'}"
                   + (":" + "".join(f"\n    {t}" for t in gone) if gone else "."))


def _committed(flow: _Flow) -> list[str]:
    """The tasks of the flow(s) whose own outputs are committed, described, upstream first."""
    plan = operations.preview(flow.roots(), print_it=False).plan
    return [graph.describe(t) for t, own in zip(plan.graph.nodes, plan.own) if own]


# -- results -------------------------------------------------------------------------------------

@main.command()
@_flow_options
@click.option("--task", "task", default=None, metavar="TASK", shell_complete=_complete_task,
              help="Show this task's output instead of TARGET's.")
@click.option("--keys", multiple=True, metavar="KEY",
              help="The output(s) to show of a task with several (repeatable).")
@click.option("--missing", type=click.Choice(["raise", "skip", "nan"]), default="raise",
              show_default=True,
              help="A flow whose task is not complete: an error, left out, or empty values.")
@_json
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
def results(target: str, params: tuple[str, ...], params_files: tuple[str, ...],
            grids: tuple[str, ...], data_dir: str | None, task: str | None,
            keys: tuple[str, ...], missing: str, as_json: bool, as_csv: bool) -> None:
    """The sweep table: one row per flow, its parameters and TARGET's output.

    The flows are those of the same -p/--params/-g as `pipeflow run` (WorkflowMulti.results).

    \b
    Examples:
      pipeflow results tasks:Evaluate -g alpha=0.1,1.0 -g model=ols,gbm
      pipeflow results tasks:Evaluate --params sweep.yaml --json | jq '.[0]'
      pipeflow results tasks:Evaluate --params sweep.yaml --csv > results.csv
    """
    with _guard(f"pipeflow results {target}"):
        if as_json and as_csv:
            raise ParameterError("--json and --csv are two formats: pass one.")
        flow = _spec(target, params, params_files, grids)
        cls = _task_class(flow, task, "--task") if task else None
        _use_dir(data_dir, create=False)
        multi = flow.multi or WorkflowMulti(flow.cls, {_single_name(flow): flow.fixed})
        with _stdout_to_stderr():
            df = multi.results(cls, keys=list(keys) or None, missing=missing)
        if as_json:
            _print_json(_result_records(df))
        elif as_csv:
            click.echo(df.to_csv(), nl=False)
        elif df.empty:  # no flow has run (--missing skip), or none has outputs (nan)
            n = len(multi.workflow_objs)
            which = f"none of the {n} flows has" if n > 1 else "the flow has not"
            click.echo(f"No results yet: {which} run. Run it first: pipeflow run {target} "
                       f"(with the same -p, --params and -g).", err=True)
        else:
            click.echo(df.to_string())


def _result_records(df: Any) -> list[dict[str, Any]]:
    """The rows of the results table as JSON records: exact numbers, dates as text.

    Floats keep every digit (Python's shortest round-trip form), a float column's whole
    numbers with gaps (``--missing nan``) stay ints, a date without a time is
    ``YYYY-MM-DD`` as in the table, other timestamps ISO 8601; NaN, NaT and infinities are
    null (JSON has none of them).
    """
    import pandas as pd

    out = []
    for row in df.reset_index().to_dict(orient="records"):
        rec = {}
        for name, value in row.items():
            if isinstance(value, pd.Timestamp):
                value = (value.date().isoformat() if value == value.normalize()
                         and value.tzinfo is None else value.isoformat())
            elif hasattr(value, "item") and not isinstance(value, (list, dict)):
                value = value.item()  # a numpy scalar
            if value is not None and not isinstance(value, (str, list, dict, tuple)):
                with contextlib.suppress(TypeError, ValueError):
                    if pd.isna(value):
                        value = None
            rec[str(name)] = value
        out.append(rec)
    for name in df.reset_index().columns:  # ints a gap turned into floats
        column = df.reset_index()[name]
        if column.dtype.kind == "f" and column.isna().any():
            values = [r[str(name)] for r in out if r[str(name)] is not None]
            if values and all(float(v).is_integer() for v in values):
                for r in out:
                    if r[str(name)] is not None:
                        r[str(name)] = int(r[str(name)])
    return out


def _single_name(flow: _Flow) -> str:
    """The name of the one flow of a command without a grid: its parameters, or 'default'."""
    secret = {n for n, p in flow.cls.get_params() if is_secret(p)}
    return ",".join(f"{k}={MASK if k in secret else v}" for k, v in flow.fixed.items()
                    ) or "default"


# -- history -------------------------------------------------------------------------------------

#: the fields of each record ``history --json`` prints, in order (a stable schema)
HISTORY_FIELDS = ("run_id", "task_id", "family", "task", "params", "attempt", "status",
                  "started", "finished", "duration", "cpu_time", "peak_memory", "error_type",
                  "error_message", "reason", "traceback")


#: the formats ``pipeflow dag`` writes, by extension
_DAG_FORMATS = ("svg", "png", "dot", "mmd")


@main.command()
@_flow_options
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Write the picture to this file (.svg, .png, .dot or .mmd).")
@click.option("--format", "fmt", type=click.Choice(["svg", "png", "dot", "mmd"]), default=None,
              help="The format (default: the output's extension; dot on standard output).")
@click.option("--no-group", is_flag=True, help="Draw every task (no 'Train × 120' boxes).")
@click.option("--group-above", type=click.IntRange(min=1), default=GROUP_ABOVE,
              show_default=True, metavar="N",
              help="Group a family's instances into one box when there are more than N.")
def dag(target: str, params: tuple[str, ...], params_files: tuple[str, ...],
        grids: tuple[str, ...], data_dir: str | None, output: str | None, fmt: str | None,
        no_group: bool, group_above: int) -> None:
    """Draw TARGET's flow (a grid's flows in one picture), coloured by status.

    \b
    Examples:
      pipeflow dag tasks:Train -o flow.svg        # also .png, .dot, .mmd
      pipeflow dag tasks:Train -g alpha=0.1,1.0 --format mmd > flow.mmd
      pipeflow dag tasks:Train | dot -Tpdf > flow.pdf
    """
    with _guard(f"pipeflow dag {target}"):
        if output is None and fmt == "png":
            raise ParameterError("a PNG is not text: write it to a file with -o FILE.png.")
        suffix = pathlib.Path(output or "").suffix.lower().lstrip(".")
        if fmt is not None and suffix in _DAG_FORMATS and suffix != fmt:
            raise ParameterError(
                f"--format {fmt} and -o {output} disagree: the file's extension says "
                f"{suffix}. Drop --format (the extension picks it), or name the file "
                f"*.{fmt}.")
        flow = _spec(target, params, params_files, grids)
        _use_dir(data_dir, create=False)
        with _stdout_to_stderr():  # what the user's code prints is not the picture
            drawn = flow.single if flow.multi is None else flow.multi
            picture = drawn.dag(group=not no_group, group_above=group_above)
            if output is not None:
                written = picture.save(output, format=fmt)
                click.echo(f"{picture.summary()}: written to {written}", err=True)
                return
            text = {"svg": picture.to_svg, "mmd": picture.to_mermaid}.get(
                fmt or "dot", picture.to_dot)()
        click.echo(text, nl=not text.endswith("\n"))


@main.command()
@_dir
@click.option("--family", multiple=True, help="Only this task family (repeatable).")
@click.option("--status", type=click.Choice(runstore.ATTEMPT_STATUSES), default=None,
              help="Only attempts that ended so.")
@click.option("--run", "run_id", default=None, help="Only this run (its run_id).")
@click.option("--last", default=20, show_default=True, help="How many attempts (0: all).")
@click.option("--errors", is_flag=True, help="Show each failed attempt's traceback.")
@_json
def history(data_dir: str | None, family: tuple[str, ...], status: str | None,
            run_id: str | None, last: int, errors: bool, as_json: bool) -> None:
    """Show the task attempts recorded in the run history, newest first.

    \b
    Examples:
      pipeflow history --last 5
      pipeflow history --status failed --errors --last 1
      pipeflow history --family Train --json | jq '.[].duration'
    """
    with _guard("pipeflow history"):
        _use_dir(data_dir, create=False)  # a query creates nothing
        df = _history_frame(family=list(family) or None, status=status, run=run_id,
                            last=None if last == 0 else last)
        if as_json:
            _print_json(_history_records(df))
            return
        if df.empty:
            where = runstore.history_path()
            why = ("the history is off" if where is None else
                   f"no run history at {where}" if not where.exists() else f"history: {where}")
            click.echo(f"no recorded attempts match ({why})")
            return
        click.echo(_table(df))
        if errors:
            for row in df[df["traceback"].notna()].itertuples():
                click.echo(f"\n--- {row.task} ({row.run_id}) ---\n{row.traceback}")


def _history_frame(**query: Any) -> Any:
    """The attempts the history command shows: every column (the one call of the history)."""
    return runstore.history(**query, full=True)


def _history_records(df: Any) -> list[dict[str, Any]]:
    """The attempts as JSON records with the fields of :data:`HISTORY_FIELDS`."""
    import pandas as pd

    out = []
    for row in df.to_dict(orient="records"):
        rec: dict[str, Any] = {}
        for name in HISTORY_FIELDS:
            value = row.get(name)
            if isinstance(value, pd.Timestamp):
                value = value.isoformat()
            elif value is not None and not isinstance(value, (str, list, dict)) and pd.isna(
                    value):
                value = None
            elif hasattr(value, "item"):
                value = value.item()  # a numpy number
            if name in ("attempt", "peak_memory") and isinstance(value, float):
                value = int(value)  # a whole number (a float in a column with gaps)
            if name == "params" and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            rec[name] = value
        out.append(rec)
    return out


def _table(df: Any) -> str:
    """The attempts as a text table, in the units and local times ``pipeflow.history()`` shows."""
    from pipeflow.display import history as shown

    out = df[["finished", "task", "status", "duration", "cpu_time", "peak_memory",
              "reason"]].copy()
    out.insert(6, "error", [shown.error_text(t, m) or "" for t, m in
                            zip(df["error_type"], df["error_message"])])
    out["finished"] = [shown.when_text(v) for v in df["finished"]]
    for col in ("duration", "cpu_time"):
        out[col] = out[col].map(shown.duration_text)
    out["peak_memory"] = out["peak_memory"].map(shown.size_text)
    return str(out.fillna("").to_string(index=False))


# -- output, errors and signals --------------------------------------------------------------------

def _print_json(data: Any) -> None:
    """``data`` as JSON on standard output: NaN as null, values JSON lacks (dates) as text."""
    click.echo(json.dumps(_plain(data), indent=2, default=str, allow_nan=False))


def _plain(data: Any) -> Any:
    """``data`` with every float NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(data, float):
        return None if data != data or data in (float("inf"), float("-inf")) else data
    if isinstance(data, Mapping):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return data


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Within the block, what would go to standard output goes to standard error.

    ``--json`` keeps standard output for the document: summaries, prompts and what tasks
    print go to standard error, also from worker processes (file descriptor 1 is pointed at
    2 when it is a real one).
    """
    sys.stdout.flush()
    saved: int | None = None
    try:
        fd = sys.stdout.fileno()
        err = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        fd = err = -1
    if fd >= 0 and err >= 0:
        saved = os.dup(fd)
        os.dup2(err, fd)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, fd)
            os.close(saved)


def _whole(text: str) -> Any:
    """``--workers`` as an int when it is one, else as given (RunOptions says what is wrong)."""
    try:
        return int(text)
    except ValueError:
        return text


class _Stopper:
    """The Ctrl-C and SIGTERM handler of a command: the first signal stops it.

    The first raises in the main thread; any later one is ignored (the shutdown the first
    started is under way: a second exception would escape it as a traceback, or kill the
    process by the signal).
    """

    def __init__(self) -> None:
        self.stopping = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.stopping:
            return
        self.stopping = True
        raise _Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _failed(code: int, message: str) -> click.ClickException:
    """The error a command ends with: one ``Error:`` line, exit ``code`` (1, or 2)."""
    return _Refused(message) if code == 2 else click.ClickException(message)


#: a message's pointer to a traceback printed above it (Python shows it, the shell not)
_SHOWN_ABOVE = re.compile(r" ?\((?:its|the) traceback (?:is shown|prints) above[^)]*\)")


@contextlib.contextmanager
def _guard(what: str, after: str = "", failure_code: int = 1) -> Iterator[None]:
    """Run a command: its errors become one ``Error:`` line and an exit code, never a traceback.

    Bad input exits 2; any other error (a task failed) ``failure_code`` (1; ``run -n``
    uses 2, as ``make -q``); Ctrl-C 130 and SIGTERM 143, each with one line on standard
    error saying what was interrupted. Signals after the first are ignored until the
    process exits.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    stop = _Stopper()
    previous = ({sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
                if main_thread else {})
    try:
        with display.skip_hint("--yes"):
            yield
    except KeyboardInterrupt as exc:
        stop.stopping = True  # a KeyboardInterrupt raised otherwise (e.g. by a prompt)
        term = isinstance(exc, _Terminated)
        how = "SIGTERM" if term else "Ctrl-C"
        click.echo(f"{what}: interrupted by {how}{after}.", err=True)
        raise click.exceptions.Exit(143 if term else 130) from None
    except (ParameterError, ConfirmationError, luigi.parameter.ParameterException) as exc:
        raise _Refused(f"{type(exc).__name__}: {exc}") from None
    except PipeflowError as exc:  # (the shell shows no traceback: say where it is)
        text = str(exc).replace(operations.CHAINED, "Its traceback: pipeflow history --errors "
                                                    "--status failed --last 1.")
        if exc.__cause__ is not None and _SHOWN_ABOVE.search(text):
            # the shell shows no traceback above the error: say where it happened instead
            frame = _user_frame(exc.__cause__)
            text = _SHOWN_ABOVE.sub(f" (it happened{_at(frame)})" if frame else "", text)
        raise _failed(failure_code, f"{type(exc).__name__}: {text}") from None
    except click.ClickException as exc:
        if exc.exit_code == 1 and failure_code != 1:
            raise _failed(failure_code, exc.message) from None
        raise
    except (click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a user's output() raising: one line
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise _failed(failure_code, f"{what} failed: {first_line(exc)} (at "
                                    f"{where.filename}:{where.lineno}).") from None
    finally:
        for sig, handler in previous.items():  # the process exits after a stop: ignored
            signal.signal(sig, signal.SIG_IGN if stop.stopping and _Main.exits
                          else signal.SIG_DFL if handler is None else handler)
