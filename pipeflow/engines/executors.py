"""Executors: where one attempt of a task runs (in process, on a thread, in a worker process).

The engine (:mod:`pipeflow.engines.local`) decides what runs and when; an executor only
starts an attempt, reports how it ended (an :class:`Outcome`), and stops it on cancel or
timeout. What an attempt does is handed in as :class:`Work`, so executors know nothing of
tasks beyond running them.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import multiprocessing
import os
import pickle
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from pipeflow import layout
from pipeflow.errors import PipeflowError

#: the kinds of executor ``LocalEngine(executor=...)`` takes; "inline" is workers=1's default
EXECUTORS = ("process", "thread")


class CancelToken:
    """Cancels a run from another thread, a callback or a second notebook cell.

    Example:
        >>> token = CancelToken()                              # doctest: +SKIP
        >>> threading.Timer(5, token.cancel).start()            # doctest: +SKIP
        >>> pipeflow.run(Train(), cancel=token)                 # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._inline_thread: int | None = None  # thread running a task in-process

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was requested."""
        return self._event.is_set()

    def cancel(self) -> None:
        """Request cancellation: no new task starts and running tasks are stopped."""
        self._event.set()
        with self._lock:
            if self._inline_thread is not None:
                raise_in_thread(self._inline_thread, Interrupted)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True early if cancelled."""
        return self._event.wait(seconds)

    @contextlib.contextmanager
    def _inline(self) -> Any:
        """Mark the current thread as running a task in-process (interruptible)."""
        me = threading.get_ident()
        with self._lock:
            self._inline_thread = me
        try:
            if self.cancelled:
                raise Interrupted()
            yield
        finally:
            # After this no interruption is sent; one sent just before is delivered at the
            # thread's next Python call, still inside the executor's try block.
            with self._lock:
                self._inline_thread = None


class Interrupted(BaseException):
    """Raised inside an in-process task to stop it (cancellation or timeout)."""


def raise_in_thread(ident: int, exc: type[BaseException]) -> None:
    """Raise ``exc`` in the thread ``ident`` at its next check."""
    # CPython raises it in that thread at its next check (a call or a loop iteration).
    # Never pass NULL to clear: under a profiler or tracer CPython 3.11 then spins.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))


@dataclass
class Outcome:
    """How one attempt ended."""

    error: BaseException | None = None
    traceback: str | None = None
    cancelled: bool = False
    saved: bool = True  # False: run() saved no output (the task stays incomplete)
    memory: dict[Any, Any] = field(default_factory=dict)  # cache outputs made in a worker
    usage: dict[str, float] = field(default_factory=dict)  # cpu_time (s), peak_memory (bytes)



@dataclass(frozen=True)
class Work:
    """What an executor does with a task, supplied by the engine.

    Attributes:
        run: one attempt of the task; returns False when it saved no output.
        fail: the outcome of an attempt that raised (secrets redacted).
        stopped: clean up after an attempt that was stopped midway (partial outputs).
        timed_out: the error of an attempt stopped by its timeout.
        memory: the in-memory outputs a worker process made, to hand back.
    """

    run: Callable[[Any], bool]
    fail: Callable[[BaseException, Any], Outcome]
    stopped: Callable[[Any], None]
    timed_out: Callable[[Any], BaseException]
    memory: Callable[[Any], dict[Any, Any]]


class Executor(Protocol):
    """Runs attempts: ``start`` one, ``collect`` those that ended, ``stop`` one, ``close``."""

    def start(self, pos: int, task: Any, deadline: float | None) -> None:
        """Start an attempt of ``task`` (the run's position ``pos``)."""

    def collect(self, timeout: float) -> list[tuple[int, Outcome]]:
        """The attempts that ended, waiting up to ``timeout`` seconds for one."""

    def stop(self, pos: int, task: Any) -> None:
        """Stop the attempt at ``pos`` (its outcome is the caller's to report)."""

    def close(self) -> None:
        """Stop everything still running; free the executor's resources."""


def usage(cpu_time: float | None) -> dict[str, float]:
    """CPU seconds of an attempt (None: this whole process) and the process's peak memory."""
    try:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        peak = ru.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        cpu = ru.ru_utime + ru.ru_stime if cpu_time is None else cpu_time
    except ImportError:  # Windows: psutil knows the peak working set
        import psutil

        proc = psutil.Process()
        peak = getattr(proc.memory_info(), "peak_wset", proc.memory_info().rss)
        cpu = sum(proc.cpu_times()[:2]) if cpu_time is None else cpu_time
    return {"cpu_time": cpu, "peak_memory": float(peak)}



def make_executor(kind: str, work: Work, cancel: CancelToken) -> Executor:
    """The executor of ``kind``: ``'process'``, ``'thread'`` or ``'inline'``."""
    if kind == "process":
        return ProcessExecutor(work)
    if kind == "thread":
        return ThreadExecutor(work)
    return InlineExecutor(work, cancel)


class InlineExecutor:
    """Runs each attempt right away in the calling thread (workers=1).

    Cancelling (or a timeout) raises :class:`Interrupted` in this thread at its next Python
    instruction; a task blocked in one long C call stops when that call returns.
    """

    def __init__(self, work: Work, cancel: CancelToken):
        self.work = work
        self.cancel = cancel
        self.done: list[tuple[int, Outcome]] = []

    def start(self, pos: int, task: Any, deadline: float | None) -> None:
        """Run the attempt now; its outcome is collected next."""
        cpu = time.process_time()
        timer = None
        if deadline is not None:
            me = threading.get_ident()
            timer = threading.Timer(deadline - time.monotonic(),
                                    lambda: raise_in_thread(me, Interrupted))
        try:
            with self.cancel._inline():
                if timer is not None:
                    timer.start()
                try:
                    saved = self.work.run(task)
                finally:
                    if timer is not None:  # a timer that fired delivers here, not later
                        timer.cancel()
                        timer.join()
            out = Outcome(saved=saved)
        except Interrupted:
            self.work.stopped(task)
            out = (Outcome(cancelled=True) if self.cancel.cancelled
                   else self.work.fail(self.work.timed_out(task), None))
        except Exception as exc:
            out = self.work.fail(exc, task)
        out.usage = usage(time.process_time() - cpu)
        self.done.append((pos, out))

    def collect(self, timeout: float) -> list[tuple[int, Outcome]]:
        """The attempts run since the last call."""
        done, self.done = self.done, []
        return done

    def stop(self, pos: int, task: Any) -> None:
        """Nothing to stop: an inline attempt has ended when the engine sees it."""

    def close(self) -> None:
        """Nothing to free."""


class ThreadExecutor:
    """Runs attempts on threads (``executor='thread'``), each in a copy of the context."""

    def __init__(self, work: Work):
        self.work = work
        self.results: queue.Queue[tuple[int, Outcome]] = queue.Queue()
        self.threads: dict[int, threading.Thread] = {}
        self.stopped: set[int] = set()

    def start(self, pos: int, task: Any, deadline: float | None) -> None:
        """Start the attempt on a new daemon thread."""
        ctx = contextvars.copy_context()
        work = self.work

        def body() -> None:
            cpu = time.thread_time()
            try:
                out = Outcome(saved=ctx.run(work.run, task))
            except Interrupted:
                work.stopped(task)
                out = Outcome(cancelled=True)
            except BaseException as exc:  # noqa: BLE001 - reported, never lost
                out = work.fail(exc, task)
            out.usage = usage(time.thread_time() - cpu)
            self.results.put((pos, out))

        t = threading.Thread(target=body, name=f"pipeflow-{task.task_family}", daemon=True)
        self.threads[pos] = t
        t.start()

    def collect(self, timeout: float) -> list[tuple[int, Outcome]]:
        """The attempts that ended (not those stopped), waiting up to ``timeout``."""
        out = []
        try:
            item = self.results.get(timeout=timeout) if timeout > 0 else self.results.get_nowait()
            out.append(item)
            while True:
                out.append(self.results.get_nowait())
        except queue.Empty:
            pass
        return [(i, o) for i, o in out if i not in self.stopped]

    def stop(self, pos: int, task: Any) -> None:
        """Interrupt the attempt's thread and give it a second to end."""
        t = self.threads.get(pos)
        if t is not None and t.is_alive() and t.ident is not None:
            self.stopped.add(pos)
            raise_in_thread(t.ident, Interrupted)
            t.join(1.0)

    def close(self) -> None:
        """Give running threads a moment (they are daemons)."""
        for t in self.threads.values():
            t.join(0.1)


class ProcessExecutor:
    """Runs each attempt in a forked worker process (``executor='process'``)."""

    def __init__(self, work: Work):
        self.work = work
        self.ctx = multiprocessing.get_context("fork")
        self.procs: dict[int, tuple[Any, Connection]] = {}
        self.flow = layout.current()

    def start(self, pos: int, task: Any, deadline: float | None) -> None:
        """Fork a worker for the attempt."""
        recv, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_worker_main, args=(self.work, task, send, self.flow),
                                name=f"pipeflow-{task.task_family}", daemon=True)
        proc.start()
        send.close()
        self.procs[pos] = (proc, recv)

    def collect(self, timeout: float) -> list[tuple[int, Outcome]]:
        """The attempts whose worker reported or died, waiting up to ``timeout``."""
        if not self.procs:
            return []
        by_conn = {conn: pos for pos, (_p, conn) in self.procs.items()}
        by_sentinel = {p.sentinel: pos for pos, (p, _c) in self.procs.items()}
        ready = wait([*by_conn, *by_sentinel], timeout=timeout)
        done: dict[int, Outcome] = {}
        for obj in ready:
            pos = by_conn.get(obj) if isinstance(obj, Connection) else by_sentinel.get(obj)
            if pos is None or pos in done:
                continue
            proc, conn = self.procs[pos]
            try:
                out = conn.recv() if conn.poll() else None
            except (EOFError, OSError):
                out = None
            if out is None:
                proc.join(1.0)
                if proc.exitcode is None:
                    continue  # still running: the pipe just has nothing yet
                err = PipeflowError(
                    f"the worker process running a task died with exit code {proc.exitcode} "
                    f"before reporting (killed, out of memory, or os._exit in the task)."
                )
                out = self.work.fail(err, None)
            proc.join(5.0)
            conn.close()
            del self.procs[pos]
            done[pos] = out
        return list(done.items())

    def stop(self, pos: int, task: Any) -> None:
        """Terminate (then kill) the attempt's worker and clean up after it."""
        proc, conn = self.procs.pop(pos, (None, None))
        if proc is None or conn is None:
            return
        proc.terminate()
        proc.join(1.0)
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)
        conn.close()
        self.work.stopped(task)

    def close(self) -> None:
        """Kill the workers still running."""
        for pos in list(self.procs):
            proc, conn = self.procs.pop(pos)
            proc.kill()
            proc.join(1.0)
            conn.close()


class NotRetried(PipeflowError):
    """A failure that retrying cannot fix."""


def _worker_main(work: Work, task: Any, send: Connection, flow: layout.FlowContext) -> None:
    """Body of a worker process: run the task, report the outcome through the pipe."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us on Ctrl-C
    with layout.flow_context(flow):
        try:
            saved = work.run(task)
            out = Outcome(saved=saved, memory=work.memory(task))
        except BaseException as exc:  # noqa: BLE001 - everything is reported
            out = work.fail(exc, task)
    out.usage = usage(None)  # the worker process ran only this task
    try:
        send.send(_picklable(out, task, work))
    finally:
        send.close()
    os._exit(0)  # skip the parent's atexit handlers, inherited by fork


def _picklable(out: Outcome, task: Any, work: Work) -> Outcome:
    try:
        pickle.dumps(out)
        return out
    except Exception as exc:  # noqa: BLE001 - fall back to a description
        if out.error is None:
            from pipeflow.graph import describe

            return work.fail(NotRetried(
                f"{describe(task)} produced an in-memory (cache) output that cannot be sent "
                f"back from its worker process: {exc}. Use a file format (e.g. TaskPickle), "
                f"or run with executor='thread' or workers=1."), None)
        remote = PipeflowError(f"{type(out.error).__name__}: {out.error}")
        return Outcome(remote, out.traceback)
