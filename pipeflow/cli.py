"""The ``pipeflow`` command: preview, run and reset a flow from the shell.

Example::

    pipeflow preview tasks:TaskTrain -p model=gbm --dir data
    pipeflow run tasks:TaskTrain -p model=gbm -p do_preprocess=False
    pipeflow reset tasks:TaskPreprocess --yes
    pipeflow history --status failed --last 5
    pipeflow dag tasks:TaskTrain -o flow.svg

Exit codes: 0 done, 1 a task failed (or another error of the run), 2 bad input (an
argument, a parameter value, a confirmation only ``--yes`` can give), 130 interrupted by
Ctrl-C, 143 stopped by SIGTERM. Errors are one ``Error:`` message, never a traceback.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import click
import luigi

from pipeflow import display, operations, runstore, settings
from pipeflow.errors import (
    ConfirmationError,
    ParameterError,
    PipeflowError,
    did_you_mean,
    first_line,
)
from pipeflow.options import IF_LOCKED, RunOptions
from pipeflow.parameters import accepted, parse_value
from pipeflow.workflow import Workflow


class _Refused(click.ClickException):
    """Bad input: one ``Error:`` line and exit code 2 (click's usage text left out)."""

    exit_code = 2


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: stops a run the way Ctrl-C does."""


def _load_task(target: str) -> type[luigi.Task]:
    module_name, _, cls_name = target.partition(":")
    if not (cls_name.strip() and module_name.strip()):
        raise click.BadParameter(f"{target!r}: write MODULE:TASKCLASS, e.g. tasks:TaskTrain")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed: say where, briefly
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise click.ClickException(
            f"importing {module_name!r} failed at {where.filename}:{where.lineno}: "
            f"{first_line(exc)}") from None
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, luigi.Task)):
        raise click.BadParameter(f"{module_name} has no task class {cls_name!r}")
    return cls


def _params(cls: type[luigi.Task], items: tuple[str, ...]) -> dict[str, Any]:
    declared = dict(cls.get_params())
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: write NAME=VALUE", param_hint="'-p'")
        if name not in declared:
            raise ParameterError(
                f"{cls.__name__} has no parameter {name!r} (-p {name}=...)."
                f"{did_you_mean(name, declared)} {accepted([cls])}.")
        out[name] = _parse(cls, name, declared[name], value)
    return out


def _parse(cls: type[luigi.Task], name: str, param: luigi.Parameter, text: str) -> Any:
    """The value of ``-p name=text`` for ``cls``: the rules of Python's, a command-line hint.

    Raises:
        ParameterError: ``text`` is not a value of the parameter: the message names the
            task class, the parameter, the value (``***`` for a secret) and the form to use.
    """
    try:
        return parse_value(cls, name, text)
    except ParameterError as exc:
        form, example = _form(param)
        raise ParameterError(f"{exc} On the command line: -p {name}={example} ({form})."
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


def _flow(target: str, params: tuple[str, ...]) -> Workflow:
    cls = _load_task(target)
    return Workflow(cls, _params(cls, params))


def _use_dir(data_dir: str | None, create: bool) -> None:
    """Make ``data_dir`` the data dir; only commands that write create it."""
    if data_dir is None:
        return
    if create:
        operations.set_dir(data_dir)
    else:
        settings.dir = data_dir


_target = click.argument("target")
_param = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                      help="A parameter of the flow (repeatable).")
_dir = click.option("--dir", "data_dir", default=None,
                    type=click.Path(file_okay=False, dir_okay=True),
                    help="The data dir (default: data).")


class _Main(click.Group):
    """The command group; it knows whether the process ends with the command."""

    #: run as the ``pipeflow`` program (arguments from ``sys.argv``, exiting when done), not
    #: called in a process that goes on (tests, ``CliRunner``): signals that arrive once a
    #: command was stopped are then ignored until the process exits
    exits = False

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        _Main.exits = args is None and kwargs.get("standalone_mode", True) and not rest
        return super().main(args, *rest, **kwargs)


@click.group(cls=_Main)
@click.version_option(package_name="pipeflow")
def main() -> None:
    """Preview, run and reset pipeflow flows. TARGET is MODULE:TASKCLASS."""


@main.command()
@_target
@_param
@_dir
def preview(target: str, params: tuple[str, ...], data_dir: str | None) -> None:
    """Show the status tree of TARGET's flow."""
    with _guard(f"pipeflow preview {target}"):
        flow = _flow(target, params)
        _use_dir(data_dir, create=False)
        flow.preview()


@main.command()
@_target
@_param
@_dir
@click.option("--workers", default="1", show_default=True, help="Tasks run at once.")
@click.option("--forced-all", is_flag=True, help="Rerun TARGET itself.")
@click.option("--summary/--no-summary", default=True, help="Print the execution summary.")
@click.option("--if-locked", type=click.Choice(IF_LOCKED), default="wait",
              show_default=True,
              help="A task another process is running: wait for it, or fail at once.")
def run(target: str, params: tuple[str, ...], data_dir: str | None, workers: str,
        forced_all: bool, summary: bool, if_locked: str) -> None:
    """Run TARGET and everything upstream of it that is not complete."""
    with _guard(f"pipeflow run {target}", "; tasks that finished keep their outputs, the "
                "stopped ones left none: run it again to finish"):
        options = {"workers": _whole(workers), "forced_all": forced_all,
                   "execution_summary": summary, "if_locked": if_locked}
        RunOptions.of(**options)  # checked before anything is loaded or created
        flow = _flow(target, params)
        _use_dir(data_dir, create=True)
        flow.run(**options)


@main.command()
@_target
@_param
@_dir
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(target: str, params: tuple[str, ...], data_dir: str | None, yes: bool) -> None:
    """Delete TARGET's outputs so that it runs again."""
    with _guard(f"pipeflow reset {target}"):
        flow = _flow(target, params)
        _use_dir(data_dir, create=False)
        flow.reset(confirm=not yes)


@main.command()
@_target
@_param
@_dir
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Write the picture to this file (.svg, .png, .dot or .mmd).")
@click.option("--format", "fmt", type=click.Choice(["svg", "png", "dot", "mmd"]), default=None,
              help="The format (default: the output's extension; dot on standard output).")
@click.option("--no-group", is_flag=True, help="Draw every task (no 'Train × 120' boxes).")
def dag(target: str, params: tuple[str, ...], data_dir: str | None, output: str | None,
        fmt: str | None, no_group: bool) -> None:
    """Draw TARGET's flow, coloured by status: Graphviz, Mermaid, SVG or PNG."""
    with _guard(f"pipeflow dag {target}"):
        if output is None and fmt == "png":
            raise ParameterError("a PNG is not text: write it to a file with -o FILE.png.")
        flow = _flow(target, params)
        _use_dir(data_dir, create=False)
        picture = flow.dag(group=not no_group)
        if output is not None:
            written = picture.save(output, format=fmt)
            click.echo(f"{picture.summary()}: written to {written}", err=True)
        else:
            click.echo({"svg": picture.to_svg, "mmd": picture.to_mermaid}.get(
                fmt or "dot", picture.to_dot)(), nl=False)


@main.command()
@_dir
@click.option("--family", multiple=True, help="Only this task family (repeatable).")
@click.option("--status", type=click.Choice(runstore.ATTEMPT_STATUSES), default=None,
              help="Only attempts that ended so.")
@click.option("--run", "run_id", default=None, help="Only this run (its run_id).")
@click.option("--last", default=20, show_default=True, help="How many attempts (0: all).")
@click.option("--errors", is_flag=True, help="Show each failed attempt's traceback.")
def history(data_dir: str | None, family: tuple[str, ...], status: str | None,
            run_id: str | None, last: int, errors: bool) -> None:
    """Show the task attempts recorded in the run history, newest first."""
    with _guard("pipeflow history"):
        _use_dir(data_dir, create=False)  # a query creates nothing
        df = runstore.history(family=list(family) or None, status=status, run=run_id,
                              last=None if last == 0 else last)
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


def _table(df: Any) -> str:
    """The attempts as a text table; a missing time or size shows empty."""
    import pandas as pd

    def shown(fmt: str, scale: float = 1.0) -> Callable[[Any], str]:
        return lambda v: "" if pd.isna(v) else fmt.format(v / scale)

    out = df[["finished", "task", "status", "duration", "cpu_time", "peak_memory",
              "error_type", "reason"]].copy()
    out["finished"] = out["finished"].dt.strftime("%Y-%m-%d %H:%M:%S")
    for col in ("duration", "cpu_time"):
        out[col] = out[col].map(shown("{:.2f}s"))
    out["peak_memory"] = out["peak_memory"].map(shown("{:,.0f} MiB", 2**20))
    return str(out.fillna("").to_string(index=False))


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


@contextlib.contextmanager
def _guard(what: str, after: str = "") -> Iterator[None]:
    """Run a command: its errors become one ``Error:`` line and an exit code, never a traceback.

    Bad input exits 2; any other pipeflow error (a task failed) 1; Ctrl-C 130 and SIGTERM 143,
    each with one line on standard error saying what was interrupted. Signals after the
    first are ignored until the process exits.
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
        raise click.ClickException(f"{type(exc).__name__}: {text}") from None
    finally:
        for sig, handler in previous.items():  # the process exits after a stop: ignored
            signal.signal(sig, signal.SIG_IGN if stop.stopping and _Main.exits
                          else signal.SIG_DFL if handler is None else handler)
