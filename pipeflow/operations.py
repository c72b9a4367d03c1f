"""Module-level operations on task instances (d6tflow's functional API).

``pipeflow.preview``, ``pipeflow.run``, ``taskflow_upstream``/``downstream`` and the
``invalidate_*`` functions. :class:`pipeflow.Workflow` delegates to these.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import luigi

from pipeflow import cache, display, graph, layout, runstore, settings, storage
from pipeflow.contract import adapt
from pipeflow.display import rich
from pipeflow.display.dag import GROUP_ABOVE, Dag, build_dag
from pipeflow.display.preview import Preview, build_preview, cell_number, use_color
from pipeflow.display.progress import ProgressBar, StartingCell
from pipeflow.engines import CancelToken, Engine, LocalEngine, LuigiEngine
from pipeflow.engines.luigi import scheduler_url as luigid_url
from pipeflow.errors import (
    MissingInputError,
    ParameterError,
    RemoteTraceback,
    RunCancelledError,
    RunInterrupted,
    TaskFailedError,
    TaskLockedError,
    TaskTimeoutError,
    first_line,
    listing,
)
from pipeflow.events import Event, EventKind, RunResult, Sink, TaskState
from pipeflow.integrity import RECORD_SUFFIX, read_record
from pipeflow.options import RunOptions, flag
from pipeflow.parameters import LEFT_OUT_NOTE
from pipeflow.plan import Plan, Status, build_plan
from pipeflow.publishing import os_reason, unpublish
from pipeflow.tasks import TaskData


def set_dir(dir: str | os.PathLike[str] | None = None) -> pathlib.Path | storage.RemotePath:
    """Set (and create) the data directory every output lives under.

    Args:
        dir: the directory; None keeps the current one (``settings.dir``, default ``data``).
            Any fsspec URL puts outputs on that file system (``s3://bucket/prefix``,
            ``gs://``, ``abfs://``, ``memory://``; options in
            ``pipeflow.settings.storage_options``): its bucket is checked, nothing created.

    Returns:
        The data directory as a Path.

    Raises:
        ParameterError: ``dir`` is a URL fsspec cannot use (unknown protocol, its extra
            not installed: the message names it) or a ``pathlib.Path`` of a URL (a
            ``file://`` URL names the local folder it spells); it starts or ends with white
            space or holds a NUL byte; a file is in its place; or it cannot be created.
            The data dir in force is kept.
        StorageAccessError: a remote ``dir`` whose bucket is missing or whose credentials
            are refused (the data dir in force is kept, nothing is created).
    """
    path = (settings.dirpath if dir is None
            else settings.location_path(dir, "dir", "pipeflow.set_dir"))
    if isinstance(path, storage.RemotePath):
        # nothing to create on an object store; its bucket must be there (nothing local
        # is created either way)
        storage.check_reachable(path)
        if dir is not None:
            settings.dir = os.fspath(path)
        return settings.dirpath
    try:
        settings.check_folder(path, "dir", "pipeflow.set_dir")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(
            f"pipeflow.set_dir: dir={str(path)!r} cannot be created ({os_reason(exc)}). The data "
            f"dir stays {settings.dir!r}. Choose a folder this process can create.") from exc
    except ParameterError as exc:
        raise ParameterError(f"{exc} The data dir stays {settings.dir!r}.") from None
    if dir is not None:
        settings.dir = os.fspath(path)
    return settings.dirpath


def as_list(tasks: Any) -> list[Any]:
    """A task or a list/tuple of tasks, as a list."""
    return list(tasks) if isinstance(tasks, (list, tuple)) else [tasks]


def preview(tasks: Any, indent: str = "", last: bool = True, show_params: bool = True,
            clip_params: bool = False, print_it: bool = True) -> Preview:
    """Print the status tree of one or more tasks and return it.

    Args:
        tasks: a task instance or a list of them.
        indent: prefix of every line.
        last: draw the roots as last children.
        show_params: show parameters.
        clip_params: show only one parameter per task.
        print_it: show the tree now: in a notebook as an HTML table, elsewhere (a
            terminal, a script, captured standard output) printed as text. The returned
            :class:`~pipeflow.display.preview.Preview` has it too; in a notebook it shows
            once per cell (as the cell's value right after, it draws nothing more).
    """
    roots = as_list(tasks)
    with layout.at_home(roots):
        plan = build_plan(graph.build(roots))
    _explain_failures(plan)
    result = build_preview(plan, roots, show_params, clip_params, indent, last)
    if print_it:
        if rich.draws_html():
            rich.show(result.text(), result._repr_html_())
        else:
            display.emit(result.text(color=use_color()))
        result.printed = True
        result.mark_shown()
    return result


def dag(tasks: Any, group: bool = True, group_above: int = GROUP_ABOVE) -> Dag:
    """A picture of the flow of one or more tasks, coloured by status.

    Jupyter shows it inline (hover a box for its parameters, status and why);
    ``.save("flow.svg")`` writes it (``.png``, ``.dot``, ``.mmd`` too).

    Args:
        tasks: a task instance or a list of them (their upstream tasks are drawn too; a
            task several others need is drawn once).
        group: draw a family's many instances at the same depth as one box ("Train × 120",
            with per-status counts); False draws every task.
        group_above: how many instances make a group (more than this).

    Returns:
        The :class:`~pipeflow.display.dag.Dag`.

    Example:
        >>> pipeflow.dag(TaskEvaluate(model="ols")).save("flow.svg")  # doctest: +SKIP
    """
    roots = as_list(tasks)
    with layout.at_home(roots):
        plan = build_plan(graph.build(roots))
    nodes = plan.graph.nodes
    failed = runstore.last_failures(
        [nodes[i].task_id for i, s in enumerate(plan.status) if s is not Status.COMPLETE])
    failures = {i: failed[t.task_id] for i, t in enumerate(nodes) if t.task_id in failed}
    return build_dag(plan, failures, group, group_above)


def _explain_failures(plan: Plan) -> None:
    """Pending tasks whose last recorded run failed say so (from the run history)."""
    nodes = plan.graph.nodes
    unexplained = [i for i, s in enumerate(plan.status)
                   if s is Status.PENDING and plan.own[i] is False and i not in plan.reasons]
    failed = runstore.last_failures([nodes[i].task_id for i in unexplained])
    for i in unexplained:
        why = failed.get(nodes[i].task_id)
        if why is not None:
            plan.reasons[i] = f"last run failed: {why}"


def run(tasks: Any, forced: Any = None, forced_all: bool = False,
        forced_all_upstream: bool = False, confirm: bool = False, workers: int = 1,
        abort: bool = True, execution_summary: bool | None = None, *,
        executor: str | None = None, cancel: CancelToken | None = None,
        callbacks: Sequence[Callable[[Any], None]] = (), progress: bool | None = None,
        engine: Engine | None = None, if_locked: str = "wait", local_scheduler: bool = True,
        scheduler_host: str | None = None, scheduler_port: int | None = None,
        scheduler_url: str | None = None, **unknown: Any) -> RunResult | None:
    """Run one or more tasks and everything upstream of them that is not complete.

    Args:
        tasks: a task instance or a list of them.
        forced: task(s) or task class(es) to rerun, with every task between them and
            ``tasks``.
        forced_all: rerun ``tasks`` themselves.
        forced_all_upstream: rerun everything upstream of ``tasks`` too.
        confirm: ask before deleting the outputs of forced tasks.
        workers: how many tasks may run at once.
        abort: raise :class:`~pipeflow.errors.TaskFailedError` when a task fails (and
            :class:`~pipeflow.errors.RunCancelledError` when the run is cancelled).
        execution_summary: print the execution summary (default
            ``settings.execution_summary``).
        executor: ``'process'`` (the default with several workers) or ``'thread'``.
        cancel: a :class:`~pipeflow.engines.CancelToken` to cancel the run with.
        callbacks: functions called with every :class:`~pipeflow.events.Event`.
        progress: show a progress bar (default: when a person is watching, i.e. a
            terminal or a notebook).
        engine: the engine to run on (default: the embedded :class:`LocalEngine`).
        if_locked: when a task is being run by another process (another notebook or
            terminal): ``'wait'`` for it and reuse its output (default), or ``'fail'`` that
            task at once with :class:`~pipeflow.errors.TaskLockedError`.
        local_scheduler: True (default) runs on this machine (the embedded engine);
            False shares the run with every process making the same call against one
            luigi central scheduler (``luigid``): each task runs once in total, and each
            call returns when the whole flow has finished (see docs/scaling-out.md).
        scheduler_host: luigid's host (with ``local_scheduler=False``; default: luigi's
            ``[core] default-scheduler-host``, ``localhost``).
        scheduler_port: luigid's port (default: luigi's ``[core]
            default-scheduler-port``, 8082).
        scheduler_url: luigid's URL (``http://host:port/``), instead of host and port.
        **unknown: nothing: a misspelt option is refused with a "did you mean".

    Returns:
        The :class:`~pipeflow.events.RunResult`, truthy when everything succeeded; None if
        the user declined the confirmation.

    Raises:
        ParameterError: an option that does not exist (with a "did you mean"), or
            ``scheduler_*`` options with ``local_scheduler=True``.
        SchedulerUnreachableError: luigid does not answer (nothing runs).
        SchedulerLostError: luigid stopped answering during the run.
    """
    if unknown:
        RunOptions.of(**unknown)  # raises, naming the misspelt option
    options = RunOptions(
        forced=forced, forced_all=forced_all, forced_all_upstream=forced_all_upstream,
        confirm=confirm, workers=workers, abort=abort, execution_summary=execution_summary,
        executor=executor, cancel=cancel, callbacks=callbacks, progress=progress,
        engine=engine, if_locked=if_locked, local_scheduler=local_scheduler,
        scheduler_host=scheduler_host, scheduler_port=scheduler_port,
        scheduler_url=scheduler_url)
    return run_with(as_list(tasks), options)


def run_with(roots: list[Any], options: RunOptions) -> RunResult | None:
    """Run ``roots`` and what they need: :func:`run` with its options in one object.

    Raises:
        TaskFailedError: a task failed (with ``options.abort``).
        RunCancelledError: the run was cancelled (with ``options.abort``).
    """
    with layout.at_home(roots):
        return _run(roots, options)


def _run(roots: list[Any], o: RunOptions) -> RunResult | None:
    layout.recheck()  # every folder is checked against its location again, once
    engine = o.engine or _engine(o)
    if isinstance(engine, LuigiEngine):
        engine.connect()  # an unreachable luigid fails before anything is deleted or run
    g = graph.build(roots)
    forced_tasks = _forced(g, roots, o.forced, o.forced_all, o.forced_all_upstream)
    if forced_tasks:
        _check_settings(g.nodes)  # before deleting anything
        if not _delete_outputs(forced_tasks, o.confirm, "rerun"):
            return None
    plan = build_plan(g)
    _check_external_inputs(plan)
    _check_settings(t for t, s in zip(g.nodes, plan.status) if s is not Status.COMPLETE)
    sinks: list[Sink] = []
    if o.progress or (o.progress is None and display.watched()):
        sinks.append(ProgressBar())  # first: drawn when a callback (start()'s) sees an event
    sinks.extend(o.callbacks)
    store = runstore.history_path()
    if store is not None:
        sinks.append(runstore.HistorySink(roots, store))
    seen = RunResult("")  # what happened, also when the run ends with Ctrl-C
    try:
        result = engine.run(plan, [seen, *sinks])
    except KeyboardInterrupt as exc:
        if type(exc) is not KeyboardInterrupt:  # e.g. the CLI's SIGTERM: left as it is
            raise
        raise interrupted(seen) from exc
    summary = (settings.execution_summary if o.execution_summary is None
               else o.execution_summary)
    if summary:
        display.emit(result.summary())
        result.shown_in = cell_number()  # a notebook cell shows it once (display.rich)
    if o.abort and not result:
        if result.by_state("cancelled") and not result.by_state("failed"):
            n = len(result.by_state("cancelled"))
            raise RunCancelledError(
                f"the run was cancelled: {n} task(s) did not finish (their partial outputs "
                f"were removed). Completed tasks keep their outputs; run again to finish.",
                result,
            )
        raise _failure(result, roots)
    return result


def _engine(o: RunOptions) -> Engine:
    """The engine the options ask for: embedded, or luigid's (``local_scheduler=False``)."""
    if o.local_scheduler:
        return LocalEngine(o.workers, o.executor, o.cancel, o.if_locked)
    url = luigid_url(o.scheduler_url, o.scheduler_host, o.scheduler_port)
    return LuigiEngine(url, o.workers, o.executor, o.cancel, o.if_locked)


def interrupted(result: RunResult) -> KeyboardInterrupt:
    """The one-line error of a run stopped by Ctrl-C or a notebook's Stop button.

    In IPython (a notebook), a :class:`~pipeflow.errors.RunInterrupted`, shown as that one
    line. Elsewhere a plain ``KeyboardInterrupt`` with the same message: Python exits with
    the status of an interrupt (130) only for that exact class, and scripts rely on it.
    """
    how = "Stop" if display.in_notebook() else "Ctrl-C"
    cancelled = result.by_state("cancelled")
    stopped = [graph.describe(r.task) for r in cancelled if r.started is not None]
    waiting = len(cancelled) - len(stopped)
    done = len(result.by_state("completed"))
    parts = []
    if stopped:
        more = f" and {len(stopped) - 3} more" if len(stopped) > 3 else ""
        parts.append(f"{', '.join(stopped[:3])}{more} did not finish; "
                     f"{'its' if len(stopped) == 1 else 'their'} partial outputs were removed")
    if waiting:
        parts.append(f"{waiting} queued task(s) did not start")
    what = "; ".join(parts) if parts else "nothing was running"
    kept = (f"{done} finished task{'s keep their' if done != 1 else ' keeps its'} outputs"
            if done else "No task had finished")
    message = f"Run cancelled ({how}): {what}. {kept}; run again to finish."
    return RunInterrupted(message, result) if display.in_ipython() else KeyboardInterrupt(message)


class RunHandle:
    """A run going on in a background thread: watch its events, cancel it, wait for it.

    Iterating yields every :class:`~pipeflow.events.Event` as it happens; leaving the
    loop early (``break``) cancels the run.

    Attributes:
        token: the run's :class:`~pipeflow.engines.CancelToken`.

    Example:
        >>> handle = flow.start()          # returns at once          # doctest: +SKIP
        >>> for event in handle:                                     # doctest: +SKIP
        ...     print(event.kind, event.task_id)
        >>> handle.result()                                          # doctest: +SKIP
    """

    _END = object()

    def __init__(self, start: Callable[[CancelToken, Sink], RunResult | None]):
        import queue
        import threading

        self.token = CancelToken()
        self._events: queue.Queue[Any] = queue.Queue()
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._started = threading.Event()
        self._ended = threading.Event()

        def sink(event: Event) -> None:
            self._events.put(event)
            if event.kind is EventKind.RUN_STARTED:
                self._started.set()

        def body() -> None:
            try:
                self._result = start(self.token, sink)
            except BaseException as exc:  # noqa: BLE001 - handed to result()
                self._error = exc
            finally:
                self._started.set()
                self._ended.set()
                self._events.put(self._END)

        self._thread = threading.Thread(target=body, name="pipeflow-run", daemon=True)
        self._thread.start()

    def __iter__(self) -> Any:
        try:
            while True:
                item = self._events.get()
                if item is self._END:
                    return
                yield item
        finally:
            if not self._ended.is_set():
                self.cancel()

    def cancel(self) -> None:
        """Cancel the run: no new task starts, running tasks are stopped."""
        self.token.cancel()

    def wait_started(self, timeout: float | None = None) -> bool:
        """Wait until the run has started (its plan made, its progress bar drawn) or ended."""
        return self._started.wait(timeout)

    def wait_ended(self, timeout: float | None = None) -> bool:
        """Wait until the run has ended (at most ``timeout`` seconds); whether it has."""
        return self._ended.wait(timeout)

    def done(self) -> bool:
        """Whether the run has ended."""
        return self._ended.is_set()

    def result(self, timeout: float | None = None) -> RunResult | None:
        """Wait for the run to end; return its result or raise its error.

        Ctrl-C (a notebook's Stop button) while waiting cancels the run, waits for its
        cleanup, and raises the interrupt (its message says what was stopped).

        Raises:
            TimeoutError: the run did not end within ``timeout`` seconds.
            KeyboardInterrupt: interrupted while waiting (in IPython a
                :class:`~pipeflow.errors.RunInterrupted`).
        """
        try:
            self._ended.wait(timeout)  # (not join(): Ctrl-C in a join breaks the thread's state)
        except KeyboardInterrupt as exc:
            self.cancel()
            try:
                self._ended.wait()  # its cleanup: the stopped tasks' partial outputs go
            except KeyboardInterrupt:
                message = ("Run cancelled: it is still stopping in the background (a task "
                           "busy in a long call stops when the call returns); "
                           "handle.result() waits for it.")
                raise (RunInterrupted(message) if display.in_ipython()
                       else KeyboardInterrupt(message)) from exc
            outcome = getattr(self._error, "result", None)  # (a failed RunResult is falsy)
            outcome = self._result if outcome is None else outcome
            raise interrupted(outcome if isinstance(outcome, RunResult)
                              else RunResult("")) from exc
        if not self._ended.is_set():
            raise TimeoutError(f"the run did not finish within {timeout}s")
        if self._error is not None:
            raise self._error
        return self._result


def start(tasks: Any, **options: Any) -> RunHandle:
    """Start :func:`run` in a background thread; return a :class:`RunHandle` once it runs.

    It returns as soon as the run has started (what it runs is known and its progress
    bar drawn, so that in a notebook the bar shows in the cell that started the run), or
    has ended before (its error is raised by ``handle.result()``).

    Args:
        tasks: a task instance or a list of them.
        **options: the options of :func:`run` (except ``cancel``: use the handle).
    """
    opts = RunOptions.of(**options)  # a bad option fails here, not in the thread
    if opts.cancel is not None:
        raise ParameterError(
            "start() makes its own cancel token: call handle.cancel() (or flow.cancel()) "
            "on what it returns instead of passing cancel=.")
    with layout.at_home(as_list(tasks)):
        ctx = layout.current()
    summary = (settings.execution_summary if opts.execution_summary is None
               else opts.execution_summary)
    cell: StartingCell | None = None
    bar: ProgressBar | None = None
    if summary and display.in_notebook():
        # the summary goes with the bar into this cell, not into the cell running at the end
        bar = (ProgressBar() if opts.progress or (opts.progress is None and display.watched())
               else None)
        cell = StartingCell(bar)
        opts = opts.but(progress=False, execution_summary=False,
                        callbacks=[*([bar] if bar is not None else []), *opts.callbacks])
    shown_in = cell_number()

    def go(token: CancelToken, sink: Sink) -> RunResult | None:
        with layout.flow_context(ctx):
            # the bar first: drawn before start() returns (the sink says the run started)
            run_opts = (opts.but(cancel=token, callbacks=[sink, *opts.callbacks]) if bar is None
                        else opts.but(cancel=token, callbacks=[bar, sink, *opts.callbacks[1:]]))
            if cell is None:
                return run_with(as_list(tasks), run_opts)
            try:
                result = run_with(as_list(tasks), run_opts)
            except BaseException as exc:
                ended = getattr(exc, "result", None)
                cell.finish(_summary_of(ended, shown_in) if isinstance(ended, RunResult) else
                            f"pipeflow: the run ended with {type(exc).__name__}: "
                            f"handle.result() raises it.")
                raise
            cell.finish(_summary_of(result, shown_in) if result is not None else
                        "pipeflow: the run did not start (nothing was confirmed).")
            return result

    handle = RunHandle(go)
    handle.wait_started()
    if cell is not None:
        if bar is not None and not bar.drawn():  # nothing to run: it ends at once
            handle.wait_ended(10)
        cell.claim()
    return handle


def _summary_of(result: RunResult, cell: int | None) -> str:
    """A background run's summary, shown in the cell that started it (``cell``)."""
    result.shown_in = cell
    return result.summary()


def _check_settings(tasks: Iterable[luigi.Task]) -> None:
    """Read the run settings of ``tasks`` now, so that a bad one fails before the run starts.

    Raises:
        PipeflowError: a task's ``priority``, ``retries``, ``retry_delay`` or ``timeout`` is
            not a value it takes (the error names the class and the setting).
    """
    for t in tasks:
        c = adapt(t)
        c.priority, c.retries, c.retry_delay, c.timeout  # noqa: B018 - each checks its value


#: where a failed run's error points at the first failure's traceback (Python: printed above)
CHAINED = "The first failure is chained to this error (its traceback prints above it)."
#: said instead of CHAINED when the first failure has no traceback to print, and why
NO_TRACEBACK = "The first failure has no traceback: {why}."


def _chained(first: BaseException | None, text: str | None) -> str:
    """CHAINED when ``first`` (or its worker's ``text``) has frames, else why it has none."""
    if first is None:
        return CHAINED
    if (first.__traceback__ is not None or isinstance(first.__cause__, RemoteTraceback)
            or (text and "Traceback (most recent call" in text)):
        return CHAINED
    why = getattr(first, "no_traceback", None)
    if not isinstance(why, str):
        if isinstance(first, TaskTimeoutError):
            why = "it was stopped by its timeout, not raised by its code"
        elif any(LEFT_OUT_NOTE.fullmatch(str(note))
                 for note in getattr(first, "__notes__", ())):
            why = "its frames were left out, as they show a secret parameter value"
        else:
            why = "only its message is known"
    return NO_TRACEBACK.format(why=why)


def _failure(result: RunResult, roots: Sequence[luigi.Task] = ()) -> TaskFailedError:
    failed = result.by_state("failed")
    skipped = result.by_state("skipped")
    lines = [f"    {graph.describe(r.task)}: {first_line(r.error)}"
             for r in failed]
    first = failed[0].error if failed else None
    text = failed[0].traceback if failed else None
    done = (TaskState.COMPLETED, TaskState.UP_TO_DATE)
    finished = bool(roots) and all(
        r.task_id in result.tasks and result.tasks[r.task_id].state in done for r in roots)
    # (the tasks asked for finished: what failed was only an optional input of theirs)
    how = ("though the tasks asked for finished (they needed it only as an optional input)"
           if finished else "so the run did not finish")
    message = (
        f"{len(failed)} task(s) failed, {how}:\n" + "\n".join(lines)
        + (f"\n{len(skipped)} downstream task(s) did not run because of it." if skipped else "")
        + f"\n{_chained(first, text)} Fix it and run again: only what is not complete reruns."
    )
    err = TaskFailedError(message, result)
    if first is not None:
        if (first.__traceback__ is None and first.__cause__ is None and text
                and "Traceback (most recent call" in text):
            first.__cause__ = RemoteTraceback(text)  # from a worker process: its frames
        err.__cause__ = first
    return err


def _forced(g: graph.Graph, roots: list[luigi.Task], forced: Any, forced_all: bool,
            forced_all_upstream: bool) -> list[luigi.Task]:
    if forced_all_upstream:
        return list(g.nodes)
    start: set[int] = set()
    if forced_all:
        start |= {g.position(r) for r in roots}
    for f in as_list(forced) if forced is not None else []:
        matched = _matching(g, f)
        if not matched:
            raise ParameterError(
                f"forced={getattr(f, '__name__', f)!r} is not a task of this flow, so there "
                f"is nothing to rerun. The flow has: "
                f"{', '.join(sorted({t.task_family for t in g.nodes}))}."
            )
        start |= matched
    return [g.nodes[i] for i in sorted(g.downstream(start))]


def _matching(g: graph.Graph, item: Any) -> set[int]:
    """Positions of ``item`` in ``g``: an instance by task_id, a class by family."""
    if isinstance(item, luigi.Task):
        return {g.index[item.task_id]} if item.task_id in g.index else set()
    family = getattr(item, "task_family", item)
    return {i for i, t in enumerate(g.nodes) if t.task_family == family}


def _deletable(tasks: Iterable[luigi.Task]) -> list[TaskData]:
    """The tasks whose outputs pipeflow may delete and that have some."""
    return [t for t in tasks
            if isinstance(t, TaskData) and not t.external and t._store.has_outputs()]


def _delete_outputs(tasks: Iterable[luigi.Task], confirm: bool, verb: str) -> bool:
    confirm = flag(confirm, "confirm")
    doomed = _deletable(tasks)
    if not doomed:
        return True
    if confirm and not display.confirm(
        f"Delete the outputs of {len(doomed)} task(s) to {verb} them?",
        [graph.describe(t) for t in doomed], "confirm=False",
    ):
        return False
    for t in doomed:
        t._store.delete_outputs()
    return True


def _check_external_inputs(plan: Any) -> None:
    missing = [t for t, s in zip(plan.graph.nodes, plan.status)
               if s is Status.PENDING and adapt(t).external
               and not plan.own[plan.graph.position(t)]]
    if missing:
        lines = []
        for t in missing:
            outs = luigi.task.flatten(t.output())
            paths = ", ".join(str(getattr(o, "path", o)) for o in outs if not o.exists())
            lines.append(f"    {graph.describe(t)}: {paths}")
        raise MissingInputError(
            "the flow needs external inputs that do not exist, so nothing was run:\n"
            + "\n".join(lines)
            + "\nExternal tasks are produced outside this flow: create these files (or point "
            "pipeflow.set_dir() / FlowImport at the folder holding them)."
        )


def adopt(tasks: Any) -> list[luigi.Task]:
    """Commit outputs written by d6tflow (or a crashed run) for ``tasks`` and their upstream.

    pipeflow counts only outputs a successful run committed, so a data dir written by
    d6tflow shows everything as pending. If you know those files are whole, adopt them
    once; otherwise let pipeflow recompute them.

    Args:
        tasks: a task instance or a list of them; their upstream tasks are adopted too.

    Returns:
        The tasks whose outputs were adopted.
    """
    with layout.at_home(as_list(tasks)):
        return [t for t in graph.build(as_list(tasks)).nodes
                if isinstance(t, TaskData) and t._store.adopt()]


def taskflow_upstream(task: luigi.Task, only_complete: bool = False) -> list[luigi.Task]:
    """``task`` and every task upstream of it (downstream first).

    Args:
        task: the task.
        only_complete: keep only complete tasks.
    """
    with layout.at_home([task]):
        plan = build_plan(graph.build([task]))
    return [t for t, s in zip(reversed(plan.graph.nodes), reversed(plan.status))
            if not only_complete or s is Status.COMPLETE]


def show(tasks: Any) -> Preview:
    """Print the status tree of one or more tasks: d6tflow's name for :func:`preview`."""
    return preview(tasks)


def taskflow_downstream(task: Any, task_downstream: luigi.Task,
                        only_complete: bool = False) -> set[luigi.Task]:
    """Tasks of ``task``'s family in ``task_downstream``'s flow, and everything between.

    Args:
        task: a task (or class); its family is what is looked for.
        task_downstream: the downstream task whose flow is searched.
        only_complete: keep only complete tasks.
    """
    family = getattr(task, "task_family", None)
    if not isinstance(family, str):
        raise ParameterError(
            f"taskflow_downstream() takes a task or a task class to look for, not {task!r}.")
    with layout.at_home([task_downstream]):
        plan = build_plan(graph.build([task_downstream]))
    g = plan.graph
    found = g.downstream(i for i, t in enumerate(g.nodes) if t.task_family == family)
    return {g.nodes[i] for i in found if not only_complete or plan.status[i] is Status.COMPLETE}


def invalidate_upstream(task: luigi.Task, confirm: bool = False) -> bool:
    """Delete the outputs of ``task`` and of every task upstream of it.

    Args:
        task: the task.
        confirm: ask first (d6tflow's default, False, does not).

    Returns:
        False if the user declined, else True.
    """
    with layout.at_home([task]):
        return _delete_outputs(taskflow_upstream(task), confirm, "reset")


def invalidate_downstream(task: Any, task_downstream: luigi.Task,
                          confirm: bool = False) -> bool:
    """Delete the outputs of ``task`` and of every task between it and ``task_downstream``.

    Args:
        task: a task (or class); its family is what is looked for.
        task_downstream: the downstream task whose flow is searched.
        confirm: ask first (d6tflow's default, False, does not).

    Returns:
        False if the user declined, else True.
    """
    with layout.at_home([task_downstream]):
        return _delete_outputs(taskflow_downstream(task, task_downstream), confirm, "reset")


def _records_under(root: pathlib.Path) -> dict[pathlib.Path, pathlib.Path]:
    """Every commit record below ``root``, with the location it belongs to.

    A location (the data dir, or a flow's ``path`` inside it) keeps its records in its own
    ``.pipeflow/commits`` tree; symlinked folders are not followed.
    """
    out: dict[pathlib.Path, pathlib.Path] = {}
    if isinstance(root, storage.RemotePath):  # one listing of every file below it
        marker = f"/{layout.OWN_DIR}/{layout.RECORDS_DIR}/"
        for url in storage.find(root.url):
            name = url.rsplit("/", 1)[-1]
            if marker in url and name.startswith(".") and name.endswith(RECORD_SUFFIX):
                location = url.split(marker, 1)[0]
                out[storage.RemotePath(url)] = storage.RemotePath(location)  # type: ignore
        return dict(sorted(out.items()))
    for folder, dirs, _files in os.walk(root, followlinks=False):
        if os.path.basename(folder) == layout.OWN_DIR:
            dirs[:] = []  # pipeflow's own folder: its commits tree is read below
            location = pathlib.Path(folder).parent
            tree = pathlib.Path(folder, layout.RECORDS_DIR)
            for sub, _d, files in os.walk(tree, followlinks=False):
                out.update((pathlib.Path(sub, f), location) for f in files
                           if f.startswith(".") and f.endswith(RECORD_SUFFIX))
    return dict(sorted(out.items()))


def _remove(records: dict[pathlib.Path, pathlib.Path], root: pathlib.Path, confirm: bool,
            what: str) -> bool:
    """Delete what the given commit records (record -> its location) list, each under its lock.

    Only committed files are deleted (the record first); folders, lock files, temp files of
    running tasks and files pipeflow did not commit stay.
    """
    confirm = flag(confirm, "confirm")
    listed = {rec: (read_record(rec)[0], layout.output_folder(rec, where))
              for rec, where in records.items()}
    files = [str(folder / n) for rec, (r, folder) in listed.items() if r
             for n in r.file_names()]
    if confirm and records and not display.confirm(
        f"Delete the {what} of {len(records)} task(s) under {str(root)!r}?", files,
        "confirm=False",
    ):
        return False
    busy = []
    for rec, (record, folder) in listed.items():
        layout.ensure_inside(folder, records[rec])
        if not unpublish(rec, folder, who=record.task if record else None):
            busy.append(record.task if record else str(rec))
    if busy:
        raise TaskLockedError(
            f"{len(busy)} task(s) are running right now, so their outputs were kept:"
            f"{listing(busy)}\nRun the reset again once they have finished."
        )
    return True


def invalidate_all(confirm: bool = True) -> bool:
    """Delete every output pipeflow committed under the data dir (and every in-memory output).

    Files pipeflow did not write (your own files in the data dir, external inputs) are kept.

    Returns:
        False if the user declined, else True.
    """
    root = settings.dirpath
    records = _records_under(root) if root.exists() else {}
    if not _remove(records, root, confirm, "outputs"):
        return False
    cache.data.clear()
    return True


def invalidate_orphans(flows: Any, confirm: bool = True) -> bool:
    """Delete every committed output under the data dir that no task of ``flows`` produces.

    Args:
        flows: the flows to keep: a Workflow, a WorkflowMulti, a task instance, or a list
            of them. The outputs of every other task under the data dir are deleted.
        confirm: ask first.

    Returns:
        False if the user declined, else True.
    """
    if not as_list(flows):
        raise ParameterError(
            "invalidate_orphans() was given no flow to keep, so every output would be "
            "deleted. Pass the flows whose outputs to keep, or call invalidate_all() to "
            "delete everything.")
    keep: set[str] = set()  # absolute: flows may name their folders relatively
    for item in as_list(flows):
        keep |= {_absolute(p) for p in expected_files(item)}
    root = settings.dirpath
    records = {r: where for r, where in (_records_under(root) if root.exists() else {}).items()
               if _absolute(r) not in keep}
    if not _remove(records, root, confirm, "orphaned outputs"):
        return False
    for key in [k for k in cache.data if _absolute(k) not in keep]:
        del cache.data[key]
    return True


def _absolute(path: Any) -> str:
    """A path made absolute (a remote URL is already)."""
    text = os.fspath(path)
    return text if storage.is_remote(text) else os.path.abspath(text)


def expected_files(item: Any) -> set[pathlib.Path]:
    """Every file the tasks of ``item`` (a flow or a task) write, in its flow context."""
    own = getattr(item, "expected_files", None)
    if own is not None:
        return set(own())
    out: set[pathlib.Path] = set()
    for t in graph.build([item]).nodes:
        if isinstance(t, TaskData):
            out.update(t._store.owned_paths())
    return out

