"""The ``pipeflow`` command: preview, run and reset a flow from the shell.

Example::

    pipeflow preview tasks:TaskTrain -p model=gbm --dir data
    pipeflow run tasks:TaskTrain -p model=gbm -p do_preprocess=False
    pipeflow reset tasks:TaskPreprocess --yes
    pipeflow history --status failed --last 5
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click
import luigi

from pipeflow import operations, runstore
from pipeflow.errors import PipeflowError
from pipeflow.workflow import Workflow


def _load_task(target: str) -> type[luigi.Task]:
    module_name, _, cls_name = target.partition(":")
    if not cls_name:
        raise click.BadParameter(f"{target!r}: write MODULE:TASKCLASS, e.g. tasks:TaskTrain")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import module {module_name!r}: {exc}") from exc
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
            raise click.BadParameter(f"{item!r}: write NAME=VALUE")
        out[name] = declared[name].parse(value) if name in declared else value
    return out


def _flow(target: str, params: tuple[str, ...], data_dir: str | None) -> Workflow:
    if data_dir:
        operations.set_dir(data_dir)
    cls = _load_task(target)
    return Workflow(cls, _params(cls, params))


_target = click.argument("target")
_param = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                      help="A parameter of the flow (repeatable).")
_dir = click.option("--dir", "data_dir", default=None, help="The data dir (default: data).")


@click.group()
@click.version_option(package_name="pipeflow")
def main() -> None:
    """Preview, run and reset pipeflow flows. TARGET is MODULE:TASKCLASS."""


@main.command()
@_target
@_param
@_dir
def preview(target: str, params: tuple[str, ...], data_dir: str | None) -> None:
    """Show the status tree of TARGET's flow."""
    _guard(lambda: _flow(target, params, data_dir).preview())


@main.command()
@_target
@_param
@_dir
@click.option("--workers", default=1, show_default=True, help="Tasks run at once.")
@click.option("--forced-all", is_flag=True, help="Rerun TARGET itself.")
@click.option("--summary/--no-summary", default=True, help="Print the execution summary.")
@click.option("--if-locked", type=click.Choice(["wait", "fail"]), default="wait",
              show_default=True,
              help="A task another process is running: wait for it, or fail at once.")
def run(target: str, params: tuple[str, ...], data_dir: str | None, workers: int,
        forced_all: bool, summary: bool, if_locked: str) -> None:
    """Run TARGET and everything upstream of it that is not complete."""
    _guard(lambda: _flow(target, params, data_dir).run(
        workers=workers, forced_all=forced_all, execution_summary=summary,
        if_locked=if_locked))


@main.command()
@_target
@_param
@_dir
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(target: str, params: tuple[str, ...], data_dir: str | None, yes: bool) -> None:
    """Delete TARGET's outputs so that it runs again."""
    _guard(lambda: _flow(target, params, data_dir).reset(confirm=not yes))


_STATUSES = ["completed", "failed", "retried", "cancelled", "skipped", "up_to_date",
             "crashed"]


@main.command()
@_dir
@click.option("--family", multiple=True, help="Only this task family (repeatable).")
@click.option("--status", type=click.Choice(_STATUSES), default=None,
              help="Only attempts that ended so.")
@click.option("--run", "run_id", default=None, help="Only this run (its run_id).")
@click.option("--last", default=20, show_default=True, help="How many attempts (0: all).")
@click.option("--errors", is_flag=True, help="Show each failed attempt's traceback.")
def history(data_dir: str | None, family: tuple[str, ...], status: str | None,
            run_id: str | None, last: int, errors: bool) -> None:
    """Show the task attempts recorded in the run history, newest first."""
    if data_dir:
        operations.set_dir(data_dir)
    try:
        df = runstore.history(family=list(family) or None, status=status, run=run_id,
                              last=last or None)
    except PipeflowError as exc:  # a damaged history file: say which, and what to do
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    if df.empty:
        where = runstore.history_path()
        click.echo(f"no recorded attempts match (history: {where or 'off'})")
        return
    shown = df[["finished", "task", "status", "duration", "cpu_time", "peak_memory",
                "error_type", "reason"]].copy()
    shown["finished"] = shown["finished"].dt.strftime("%Y-%m-%d %H:%M:%S")
    shown["duration"] = shown["duration"].map(lambda s: "" if s != s else f"{s:.2f}s")
    shown["cpu_time"] = shown["cpu_time"].map(lambda s: "" if s != s else f"{s:.2f}s")
    shown["peak_memory"] = shown["peak_memory"].map(
        lambda b: "" if b != b else f"{b / 2**20:,.0f} MiB")
    click.echo(shown.fillna("").to_string(index=False))
    if errors:
        for row in df[df["traceback"].notna()].itertuples():
            click.echo(f"\n--- {row.task} ({row.run_id}) ---\n{row.traceback}")


def _guard(action: Any) -> None:
    try:
        action()
    except PipeflowError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
