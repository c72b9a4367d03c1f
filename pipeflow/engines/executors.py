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
import io
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from pipeflow import cache, layout
from pipeflow.errors import PipeflowError, WorkerTaskError, shown
from pipeflow.publishing import Interrupted, Stop, attempt


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
        self._inline_stop: Stop | None = None  # and the stop signal of its attempt

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was requested."""
        return self._event.is_set()

    def cancel(self) -> None:
        """Request cancellation: no new task starts and running tasks are stopped."""
        self._event.set()
        with self._lock:
            if self._inline_thread is not None:
                if self._inline_stop is not None:  # first: it may catch the interrupt
                    self._inline_stop.fire()
                raise_in_thread(self._inline_thread, Interrupted)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True early if cancelled."""
        return self._event.wait(seconds)

    @contextlib.contextmanager
    def _inline(self, stop: Stop | None = None) -> Any:
        """Mark the current thread as running a task in-process (interruptible).

        A cancel fires ``stop`` (the attempt's) before it interrupts the thread.
        """
        me = threading.get_ident()
        with self._lock:
            self._inline_thread = me
            self._inline_stop = stop
        try:
            if self.cancelled:
                if stop is not None:
                    stop.fire()
                raise Interrupted()
            yield
        finally:
            # After this no interruption is sent; one sent just before is delivered at the
            # thread's next Python call, still inside the executor's try block.
            with self._lock:
                self._inline_thread = None
                self._inline_stop = None


def _run_attempt(stop: Stop, run: Callable[[Any], bool | list[Any]], task: Any
                 ) -> bool | list[Any]:
    """Run one attempt that ``stop`` stops; raise :class:`Interrupted` if it was stopped.

    Whatever ``run`` returned or raised: an attempt whose stop fired (its ``run()`` may
    have caught the interrupt) has been stopped, and its outcome is that.
    """
    try:
        with attempt(stop):
            ran = run(task)
    except (Exception, SystemExit):  # sys.exit() in run() is the task's failure
        stop.check()
        raise
    stop.check()
    return ran


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
    needs: list[Any] = field(default_factory=list)  # yielded by run(), not complete yet
    memory: dict[Any, Any] = field(default_factory=dict)  # cache outputs made in a worker
    usage: dict[str, float] = field(default_factory=dict)  # cpu_time (s), peak_memory (bytes)

    @classmethod
    def of(cls, ran: bool | list[Any], **kw: Any) -> Outcome:
        """The outcome of an attempt whose :attr:`Work.run` returned ``ran``."""
        if isinstance(ran, list):
            return cls(needs=ran, **kw)
        return cls(saved=ran, **kw)



@dataclass(frozen=True)
class Work:
    """What an executor does with a task, supplied by the engine.

    Attributes:
        run: one attempt of the task; returns False when it saved no output, or the
            tasks its ``run()`` yielded when they are not complete yet (see
            :meth:`Outcome.of`).
        fail: the outcome of an attempt that raised (secrets redacted).
        stopped: clean up after an attempt that was stopped midway (partial outputs).
        timed_out: the error of an attempt stopped by its timeout.
        memory: the in-memory outputs a worker process made, to hand back.
    """

    run: Callable[[Any], bool | list[Any]]
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

    Cancelling (or a timeout) fires the attempt's :class:`~pipeflow.publishing.Stop`, then
    raises :class:`Interrupted` in this thread at its next Python instruction; a task
    blocked in one long C call stops when that call returns. A ``run()`` that catches the
    interrupt goes on, but it can no longer save or commit, and its outcome is the cancel
    or the timeout.
    """

    def __init__(self, work: Work, cancel: CancelToken):
        self.work = work
        self.cancel = cancel
        self.done: list[tuple[int, Outcome]] = []

    def start(self, pos: int, task: Any, deadline: float | None) -> None:
        """Run the attempt now; its outcome is collected next."""
        cpu = time.process_time()
        timer = None
        stop = Stop()
        if deadline is not None:
            me = threading.get_ident()

            def fire() -> None:
                stop.fire()  # first: run() may catch the interrupt
                raise_in_thread(me, Interrupted)

            timer = threading.Timer(deadline - time.monotonic(), fire)
        try:
            with self.cancel._inline(stop):
                if timer is not None:
                    timer.start()
                try:
                    saved = _run_attempt(stop, self.work.run, task)
                finally:
                    if timer is not None:  # a timer that fired delivers here, not later
                        timer.cancel()
                        timer.join()
            stop.check()  # a cancel or timer that fired as run() returned
            out = Outcome.of(saved)
        except Interrupted:
            self.work.stopped(task)
            out = (Outcome(cancelled=True) if self.cancel.cancelled
                   else self.work.fail(self.work.timed_out(task), None))
        except (Exception, SystemExit) as exc:  # sys.exit() in run(): the task failed
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
        self.results: queue.Queue[tuple[int, Outcome, threading.Thread]] = queue.Queue()
        self.threads: dict[int, threading.Thread] = {}
        self.stops: dict[int, Stop] = {}  # the stop signal of each position's attempt
        # the threads of stopped attempts (not their positions: a retry reuses the position)
        self.stopped: set[threading.Thread] = set()

    def start(self, pos: int, task: Any, deadline: float | None) -> None:
        """Start the attempt on a new daemon thread."""
        ctx = contextvars.copy_context()
        work = self.work
        stop = self.stops[pos] = Stop()

        def body() -> None:
            cpu = time.thread_time()
            try:
                try:
                    out = Outcome.of(ctx.run(_run_attempt, stop, work.run, task))
                except Interrupted:
                    work.stopped(task)
                    out = Outcome(cancelled=True)
                except BaseException as exc:  # noqa: BLE001 - reported, never lost
                    out = work.fail(exc, task)
                out.usage = usage(time.thread_time() - cpu)
                self.results.put((pos, out, threading.current_thread()))
            except Interrupted:  # stopped (close) just after its attempt ended
                pass

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
        return [(i, o) for i, o, t in out if t not in self.stopped]

    def stop(self, pos: int, task: Any) -> None:
        """Interrupt the attempt's thread and wait until it has ended.

        A thread cannot be killed: one blocked in a long C call ends when that call
        returns, and one whose ``run()`` catches the interrupt goes on until its ``run()``
        returns or saves (a save of a stopped attempt raises). Until then the task's lock
        stays held, so its cleanup (staged files, what it wrote) cannot touch the outputs
        of a retry or of another run. An attempt that ended just before it was stopped,
        its outcome not yet collected, is withdrawn too (its outcome is the caller's).
        """
        t = self.threads.get(pos)
        if t is None:
            return
        self.stops[pos].fire()  # first: its run() may catch the interrupt
        self.stopped.add(t)
        if t.is_alive() and t.ident is not None:
            raise_in_thread(t.ident, Interrupted)
            t.join()
        else:  # it ended before it was stopped: what it committed is withdrawn
            with contextlib.suppress(Exception):
                self.work.stopped(task)

    def close(self) -> None:
        """Stop the threads still running (the run ended early) and wait until they end.

        The engine releases the task locks after this: a thread still running could
        otherwise publish or clean up without its task's lock.
        """
        for pos, t in self.threads.items():
            if t.is_alive() and t.ident is not None:
                self.stops[pos].fire()
                raise_in_thread(t.ident, Interrupted)
        for t in self.threads.values():
            t.join()


class ProcessExecutor:
    """Runs attempts in a pool of long-lived forked worker processes (``executor='process'``).

    * **The pool.** Workers are forked lazily, from the engine's thread, when an attempt
      starts and no worker is idle: the pool grows to as many workers as attempts run at
      once (the engine's ``workers``), and a run that starts none forks none. Each worker
      runs attempt after attempt until :meth:`close` kills it. Workers are daemon processes,
      ignore SIGINT (the engine handles Ctrl-C) and, on Linux, are killed by the OS if the
      thread that forked them dies (elsewhere a thread of each worker exits it within
      0.2 s of the parent's death); each also exits when its pipe to the parent closes.
    * **Handing a task over.** A worker is a fork of this process, so it holds every task
      instance that luigi's instance cache held when it was forked (and the task that
      forked it): such a task is named by its ``id()`` (the executor keeps those instances
      alive, so no other object can take their address meanwhile). Any other task is
      pickled (a class defined in a function by identity, as the worker has it too if it
      was defined before the fork). One that does not pickle here, or does not unpickle
      there (its class was defined in ``__main__``, a notebook cell or a function after
      the worker was forked), goes to a newly forked worker, which inherits it, in place of
      an idle one.
    * **In-memory outputs** (cache targets) made in a worker come back with the outcome
      (``Work.memory``) and are forwarded to every other worker with its next attempt, so
      downstream tasks find them wherever they run.
    * **Stopping and crashes.** Stopping an attempt (cancel, timeout) kills its worker and
      cleans up after it (``Work.stopped``); a worker that dies (killed, out of memory,
      ``os._exit``) fails only the attempt it was running. A new worker is forked when one
      is next needed.
    * **Usage** is per attempt: the CPU time of the attempt and, where the OS can reset a
      process's peak (Linux), the worker's peak memory during the attempt; elsewhere the
      worker's peak so far.
    """

    def __init__(self, work: Work):
        self.work = work
        self.ctx = multiprocessing.get_context("fork")
        self.flow = layout.current()
        self.idle: list[_Worker] = []
        self.running: dict[int, _Worker] = {}  # position -> the worker running it
        self.shared: list[_Shared] = []  # in-memory outputs sent back, in order
        self.pruned = 0  # shared[:pruned] no longer keep their pickle
        self.done: list[tuple[int, Outcome]] = []  # attempts that ended without a worker
        self.forked = 0

    # -- the Executor interface -----------------------------------------------------------
    def start(self, pos: int, task: Any, deadline: float | None) -> None:
        """Hand the attempt to an idle worker, or to a new one forked for it."""
        self._hand(pos, task, fork=False)

    def collect(self, timeout: float) -> list[tuple[int, Outcome]]:
        """The attempts whose worker reported or died, waiting up to ``timeout``."""
        done, self.done = self.done, []
        if not self.running:
            return done
        by_obj: dict[Any, _Worker] = {}
        for w in self.running.values():
            by_obj[w.conn] = w
            by_obj[w.proc.sentinel] = w
        handled: set[int] = set()
        for obj in wait(list(by_obj), timeout=0 if done else timeout):
            w = by_obj[obj]
            if id(w) in handled or w.pos is None or self.running.get(w.pos) is not w:
                continue
            handled.add(id(w))
            pos = w.pos
            out = self._receive(w)
            if out is not None:
                done.append((pos, out))
        return done

    def stop(self, pos: int, task: Any) -> None:
        """Kill the worker running the attempt (a new one is forked when needed), clean up."""
        self.done = [(i, o) for i, o in self.done if i != pos]
        w = self.running.pop(pos, None)
        if w is None:
            return
        self._discard(w, terminate=True)
        self.work.stopped(task)

    def close(self) -> None:
        """Kill every worker, busy or idle, and reap them."""
        workers = [*self.running.values(), *self.idle]
        self.running.clear()
        self.idle.clear()
        for w in workers:
            with contextlib.suppress(Exception):
                if w.proc.exitcode is None:
                    w.proc.kill()
        for w in workers:
            self._discard(w)
        self.shared.clear()
        self.done.clear()

    # -- handing attempts over ------------------------------------------------------------
    def _hand(self, pos: int, task: Any, fork: bool) -> None:
        while True:
            worker, handle = (None, None) if fork else self._pick(task)
            new = worker is None
            if worker is None or handle is None:
                worker, handle = self._fork(task), (_REF, id(task))
            worker.pos, worker.task = pos, task
            self.running[pos] = worker  # before sending: stop(pos) finds it if interrupted
            if self._send(worker, handle):
                return
            del self.running[pos]
            self._discard(worker)  # it died while idle
            if new:
                self.done.append((pos, self.work.fail(PipeflowError(
                    "a new worker process died before it could be handed its task."), None)))
                return

    def _pick(self, task: Any) -> tuple[_Worker | None, tuple[str, Any] | None]:
        """An idle worker and how to name ``task`` to it; (None, None): fork a new one."""
        ref = id(task)
        for k in range(len(self.idle) - 1, -1, -1):
            if self.idle[k].inherited.get(ref) is task:
                return self.idle.pop(k), (_REF, ref)
        if not self.idle:
            return None, None
        try:
            payload = _dumps(task)  # a class defined in a function: by identity
        except Exception:  # noqa: BLE001 - e.g. an attribute that does not pickle
            self._discard(self.idle.pop(0))  # a fork inheriting the task takes its place
            return None, None
        return self.idle.pop(), (_PICKLED, payload)

    def _fork(self, task: Any) -> _Worker:
        inherited = _inherited_tasks(task)
        conn, child = self.ctx.Pipe(duplex=True)
        # the child closes the parent's ends of every pipe, so that each worker sees its
        # pipe close when the parent goes
        ends = [w.conn for w in (*self.idle, *self.running.values())] + [conn]
        self.forked += 1
        proc = self.ctx.Process(
            target=_serve, name=f"pipeflow-worker-{self.forked}", daemon=True,
            args=(child, ends, self.work, self.flow, inherited,
                  [s.memory for s in self.shared], os.getpid()))
        with _signals_blocked():  # until the worker drops the handlers it inherits
            proc.start()
        child.close()
        return _Worker(proc, conn, inherited, len(self.shared))

    def _send(self, w: _Worker, handle: tuple[str, Any]) -> bool:
        """Send the attempt and the in-memory outputs it lacks; False if it is dead."""
        fresh = [s for s in self.shared[w.seen:] if s.origin is not w]
        try:
            if not w.proc.is_alive():
                return False
            w.conn.send_bytes(pickle.dumps((*handle, len(fresh))))
            for s in fresh:
                assert s.blob is not None  # kept until every live worker has it
                w.conn.send_bytes(s.blob)
        except OSError:
            return False
        w.seen = len(self.shared)
        low = min(x.seen for x in (*self.idle, *self.running.values()))
        for s in self.shared[self.pruned:low]:
            s.blob = None
        self.pruned = max(self.pruned, low)
        return True

    # -- what comes back ------------------------------------------------------------------
    def _receive(self, w: _Worker) -> Outcome | None:
        """The outcome ``w`` reports or its death means; None: nothing ended yet."""
        pos, task = w.pos, w.task
        assert pos is not None
        try:
            header = pickle.loads(w.conn.recv_bytes()) if w.conn.poll() else None
            blob = w.conn.recv_bytes() if header and header[0] == _DONE and header[2] else None
        except (EOFError, OSError):
            header = None
        if header is None:
            w.proc.join(1.0)
            if w.proc.exitcode is None:
                return None  # still running: the pipe just has nothing yet
            del self.running[pos]
            code = w.proc.exitcode
            self._discard(w)
            died = PipeflowError(
                f"the worker process running a task died with exit code {code} "
                f"before reporting (killed, out of memory, or os._exit in the task).")
            died.no_traceback = (  # type: ignore[attr-defined]
                "its worker process died before it could report a traceback")
            return self.work.fail(died, None)
        del self.running[pos]
        if header[0] != _DONE:  # it cannot load the task or the outputs it was sent
            self._discard(w)
            self._hand(pos, task, fork=True)  # a new fork inherits both
            return None
        w.pos = w.task = None
        self.idle.append(w)
        try:
            out: Outcome = pickle.loads(header[1])
        except Exception as exc:  # noqa: BLE001 - e.g. a class only the worker has
            return _unreadable(exc, header[3], task, self.work)
        if blob is not None:
            try:
                out.memory = pickle.loads(blob)
            except Exception as exc:  # noqa: BLE001 - e.g. a class only it knows
                return _unsendable(exc, task, self.work)
            self.shared.append(_Shared(w, out.memory, blob))
        return out

    def _discard(self, w: _Worker, terminate: bool = False) -> None:
        """Kill ``w`` (``terminate``: SIGTERM first) and reap it."""
        if w in self.idle:
            self.idle.remove(w)
        proc = w.proc
        with contextlib.suppress(Exception):
            if proc.exitcode is None and terminate:
                proc.terminate()
                proc.join(1.0)
            if proc.exitcode is None:
                proc.kill()
            proc.join(5.0)
        w.conn.close()
        with contextlib.suppress(ValueError):
            proc.close()  # its sentinel; ValueError if it somehow still runs


#: how a task is named to a worker: its id() (inherited) or its pickle
_REF, _PICKLED = "ref", "pickled"
#: what a worker answers: the attempt's outcome, or that it cannot load the task (then
#: the pool forks a new worker for it) or the in-memory outputs it was sent (it then exits)
_DONE, _UNLOADABLE, _UNSYNCED = "done", "unloadable", "unsynced"


@dataclass(eq=False)
class _Worker:
    """A worker process of a :class:`ProcessExecutor`, as the parent sees it."""

    proc: Any  # multiprocessing's Process
    conn: Connection  # the parent's end of its pipe
    inherited: dict[int, Any]  # id -> task instance it inherited (kept alive here)
    seen: int  # how many of the executor's shared outputs it holds
    pos: int | None = None  # the attempt it runs, if any
    task: Any = None


@dataclass(eq=False)
class _Shared:
    """In-memory outputs a worker sent back, to forward to the other workers."""

    origin: _Worker
    memory: dict[Any, Any]
    blob: bytes | None  # their pickle, dropped once every live worker has them


def _inherited_tasks(task: Any) -> dict[int, Any]:
    """The task instances a worker forked now inherits, by id.

    Those of luigi's instance cache (every task made through its class) and ``task``.
    """
    from luigi.task_register import Register

    caches = {id(c): c for c in (getattr(Register, "_Register__instance_cache", None),
                                 getattr(type(task), "_Register__instance_cache", None))
              if c}
    found = {id(t): t for c in caches.values() for t in list(c.values())}
    found[id(task)] = task
    return found


class NotRetried(PipeflowError):
    """A failure that retrying cannot fix."""


# -- inside a worker process ------------------------------------------------------------------

def _serve(conn: Connection, ends: list[Connection], work: Work, flow: layout.FlowContext,
           inherited: dict[int, Any], memories: list[dict[Any, Any]], parent: int) -> None:
    """Body of a worker process: run the attempts the parent sends until its pipe closes."""
    try:
        _detach(ends, parent)
        for memory in memories:  # outputs the parent received, maybe not yet in its cache
            cache.data.update(memory)
        while True:
            try:
                kind, payload, count = pickle.loads(conn.recv_bytes())
                blobs = [conn.recv_bytes() for _ in range(count)]
            except (EOFError, OSError):
                break  # the parent closed the pool, or died
            try:
                for blob in blobs:
                    cache.data.update(pickle.loads(blob))
            except Exception as exc:  # noqa: BLE001 - its cache can no longer be kept whole
                conn.send_bytes(pickle.dumps((_UNSYNCED, repr(exc))))
                break
            try:
                task = inherited[payload] if kind == _REF else pickle.loads(payload)
            except Exception as exc:  # noqa: BLE001 - e.g. a class it never saw
                conn.send_bytes(pickle.dumps((_UNLOADABLE, repr(exc))))
                continue
            out, outputs, failure = _attempt(work, task, flow)
            conn.send_bytes(pickle.dumps((_DONE, out, outputs is not None, failure)))
            if outputs is not None:
                conn.send_bytes(outputs)
            del task
    except BaseException:  # noqa: BLE001 - the parent reports the death of a busy worker
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
        os._exit(1)
    os._exit(0)  # skip the parent's atexit handlers, inherited by fork


#: signals a worker must not handle with the parent's handlers (the CLI's raises in them)
_STOPS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block Ctrl-C and SIGTERM in this thread: a worker forked meanwhile starts so."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _detach(ends: list[Connection], parent: int) -> None:
    """Make a new worker independent of its parent's signals and pipes.

    It was forked with Ctrl-C and SIGTERM blocked (:func:`_signals_blocked`): a signal sent
    to the whole process group before this runs waits, then meets the worker's own handling
    (never the parent's handlers, which raise in the parent's code).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us on Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # SIGTERM ends a worker quietly
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    for end in ends:  # the parent's ends: EOF reaches each worker when the parent goes
        end.close()
    signalled = False  # SIGKILL when the thread that forked us dies (Linux)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            signalled = ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0
    if os.getppid() != parent:  # it died before that took effect
        os._exit(0)
    if not signalled:  # elsewhere (macOS): a thread watches for the parent's death
        threading.Thread(target=_orphaned, args=(parent,), daemon=True).start()


def _orphaned(parent: int) -> None:
    """In a worker without a parent-death signal: exit within 0.2 s of the parent."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def _attempt(work: Work, task: Any, flow: layout.FlowContext
             ) -> tuple[bytes, bytes | None, tuple[str, str | None] | None]:
    """Run one attempt; its outcome and in-memory outputs, pickled (see :func:`_encode`)."""
    reset = _reset_peak()
    cpu = time.process_time()
    with layout.flow_context(flow):
        try:
            saved = work.run(task)
            out = Outcome.of(saved, memory=work.memory(task))
        except BaseException as exc:  # noqa: BLE001 - everything is reported
            out = work.fail(exc, task)
    out.usage = usage(time.process_time() - cpu)  # this attempt's, not the worker's
    peak = _peak_memory() if reset else None
    if peak is not None:
        out.usage["peak_memory"] = peak
    return _encode(out, task, work)


def _encode(out: Outcome, task: Any, work: Work
            ) -> tuple[bytes, bytes | None, tuple[str, str | None] | None]:
    """The pickles of an outcome and of its in-memory outputs (None: it has none).

    And, for a failed attempt, its error as text (``Type: message`` and the traceback):
    the parent falls back on it if it cannot unpickle the error (a class only this worker
    has). An error that does not pickle, or not back, is sent as that text right away.
    """
    memory, out.memory = out.memory, {}
    blob = None
    if memory:
        try:
            blob = pickle.dumps(memory, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - the task fails, clearly
            out = _unsendable(exc, task, work, out.usage)
    failure = None if out.error is None else (_described(out.error), out.traceback)
    try:
        data = _dumps(out)
        if out.error is not None:
            pickle.loads(data)  # an exception that pickles may still not unpickle
        return data, blob, failure
    except Exception as exc:  # noqa: BLE001 - fall back to a description
        if failure is None:  # what run() yielded does not pickle
            out = _unsendable(exc, task, work, out.usage, what="yielded tasks")
        else:
            out = Outcome(WorkerTaskError(failure[0]), failure[1], usage=out.usage)
        return pickle.dumps(out), blob, None


def _described(error: BaseException) -> str:
    """``Type: message`` of an exception (one whose ``str()`` fails too)."""
    text = shown(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _ForkPickler(pickle.Pickler):
    """Pickles task classes defined in a function by identity (for the parent to read).

    A worker is a fork of the parent: a class the parent defined before the fork is the
    same object at the same address in both, though pickle cannot name it. The tasks a
    ``run()`` yields are sent back this way.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type) and "<locals>" in obj.__qualname__:
            return _class_by_id, (id(obj), obj.__qualname__)
        return NotImplemented


def _dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _ForkPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _class_by_id(ident: int, qualname: str) -> type:
    """In the parent: the task class a worker named by identity."""
    from luigi.task_register import Register

    for cls in Register._reg:
        if id(cls) == ident and cls.__qualname__ == qualname:
            return cls
    raise pickle.UnpicklingError(
        f"the worker process named the task class {qualname}, which this process does not "
        f"have (defined in the worker after it started?)")


def _unsendable(exc: BaseException, task: Any, work: Work,
                used: dict[str, float] | None = None, what: str = "in-memory outputs"
                ) -> Outcome:
    """The failure of a task whose in-memory outputs (or yielded tasks) do not pickle."""
    from pipeflow.graph import describe

    if what == "yielded tasks":
        text = (f"{describe(task)}: the tasks its run() yielded cannot be sent back from its "
                f"worker process: {type(exc).__name__}: {exc}. Yield tasks whose classes "
                f"and parameters pickle, or run with executor='thread' or workers=1.")
    else:
        text = (f"{describe(task)} produced an in-memory (cache) output that cannot be sent "
                f"back from its worker process: {exc}. Use a file format (e.g. TaskPickle), "
                f"or run with executor='thread' or workers=1.")
    out = work.fail(NotRetried(text), task)  # task: its secrets are masked in the text
    out.usage = dict(used or {})
    return out


def _unreadable(exc: BaseException, failure: tuple[str, str | None] | None, task: Any,
                work: Work) -> Outcome:
    """In the parent: the failure of an attempt whose outcome it cannot unpickle."""
    from pipeflow.graph import describe

    if failure is not None:  # the task raised an exception of a class only its worker has
        out = work.fail(WorkerTaskError(failure[0]), task)
        out.traceback = failure[1]
        return out
    return work.fail(NotRetried(
        f"{describe(task)}: what its run() yielded cannot be read back from its worker "
        f"process ({type(exc).__name__}: {exc}). A task class defined after the run "
        f"started (in a function, a notebook cell, or run() itself) is unknown to this "
        f"process: define it at module level, or run with executor='thread' or "
        f"workers=1."), None)


def _reset_peak() -> bool:
    """Reset this process's peak memory (Linux); whether it could."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_memory() -> float | None:
    """This process's peak memory since the last reset (Linux), in bytes."""
    with contextlib.suppress(OSError, ValueError, IndexError), \
            open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmHWM:"):
                return float(int(line.split()[1]) * 1024)
    return None
