"""luigi's central scheduler (``luigid``) as an engine: several processes share one run.

Each process making the same call (``pipeflow.run(tasks, local_scheduler=False, ...)``, on
this machine or others) registers the flow's tasks with luigid and asks it, whenever it
has a free worker, which task to run next. luigid hands each task to one worker at a time,
so each runs once in total. Everything else is the embedded engine's: a task this process
is given runs through :func:`pipeflow.engines.local.execute` (staging, publish, commit
record last) on the same executors, with the same locks, retries, timeouts, cancellation
and events. Only "which ready task may start now" is luigid's answer.

What luigid does and how this engine deals with it:

* A luigi worker leaves as soon as nothing is runnable *for it*; here a call returns only
  when every task of its flow has finished, here or elsewhere: it polls luigid's task list
  (which also makes luigid notice dead workers) and reports a task another process ran as
  ``task_up_to_date`` with the reason ``ran on another worker, {worker id}``; one that failed
  elsewhere as ``task_failed`` with a :class:`~pipeflow.errors.RemoteTaskError`.
* For ``stable_done_cooldown_secs`` after a task is DONE, luigid ignores claims that it
  must run again: a task luigid calls DONE whose commit record says otherwise (it was
  reset, or is stale) is put back by disabling it and registering it again (luigid takes
  a worker's "disabled" at once, and a disabled task back as pending).
* A task a dead worker finished but never reported is handed out again: its commit record
  is checked before it runs (as the embedded engine does after waiting for a lock).
* luigid knows tasks by id alone: the id registered is luigi's ``task_id`` followed by a
  digest of where the task's commit record lives (its ``Workflow`` ``path``/``env``).
* A task whose worker died comes back FAILED after ``worker_disconnect_delay``; it is
  registered again at once (not after luigid's ``retry_delay``).
* Assistant mode is never used; an unreachable scheduler is a
  :class:`~pipeflow.errors.SchedulerUnreachableError` within seconds, and one that stops
  answering mid-run a :class:`~pipeflow.errors.SchedulerLostError` (running tasks finish and
  commit first; nothing else starts).
"""

from __future__ import annotations

import getpass
import hashlib
import heapq
import json
import os
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import luigi

from pipeflow import graph as graphs
from pipeflow.contract import adapt
from pipeflow.engines.executors import CancelToken, Outcome
from pipeflow.engines.local import LocalEngine, _failure, _Run, _signature, _timeout_error
from pipeflow.errors import (
    RemoteTaskError,
    SchedulerError,
    SchedulerLostError,
    SchedulerUnreachableError,
    first_line,
)
from pipeflow.events import EventKind, RunResult, Sink
from pipeflow.options import shown_url
from pipeflow.parameters import is_secret, redact
from pipeflow.plan import Plan

#: seconds between looks at luigid's task list while other workers run this flow's tasks
POLL = 0.25
#: tasks of a flow that add a second between polls (a poll reads luigid's whole task list)
POLL_SCALE = 4000
#: seconds between pings (luigid forgets a worker after ``worker_disconnect_delay``)
PING = 1.0
#: seconds a call to luigid may take to connect
CONNECT_TIMEOUT = 5.0
#: seconds of failed calls after which luigid counts as gone (mid-run)
LOST_AFTER = 5.0
#: seconds of failed calls after which luigid counts as unreachable (when a run starts)
UNREACHABLE_AFTER = 1.0
#: seconds a task luigid calls done elsewhere may stay unseen here (a shared file system
#: may show another machine's file late) before it fails here: the data dir is not shared
NOT_SEEN_GRACE = 60.0
#: how pipeflow marks the explanation it leaves on a task it reports FAILED to luigid
MARK = "pipeflow:"
#: what luigid calls its task states
DONE, PENDING, RUNNING, FAILED, DISABLED = "DONE", "PENDING", "RUNNING", "FAILED", "DISABLED"

HOW_TO_START = ("Start it with `luigid --port {port}` (add `--background` to detach; "
                "`luigid --help` for more) on that machine, check the host and port, or "
                "run with local_scheduler=True to run on this machine alone.")


def scheduler_url(url: str | None = None, host: str | None = None,
                  port: int | None = None) -> str:
    """The URL of luigid from pipeflow's options, completed the way ``luigi.build`` does.

    Args:
        url: ``scheduler_url`` (wins when given).
        host: ``scheduler_host`` (default: luigi's ``[core] default-scheduler-host``).
        port: ``scheduler_port`` (default: luigi's ``[core] default-scheduler-port``).
    """
    if url:
        return url
    core = luigi.interface.core()
    if host is None and port is None and core.scheduler_url:
        return str(core.scheduler_url)
    return f"http://{host or core.scheduler_host}:{port or core.scheduler_port}/"


class _Down(Exception):
    """luigid did not answer (the cause is chained)."""


class _Client:
    """Calls to luigid's JSON API through luigi's own ``RemoteScheduler``.

    luigi retries a failed call 3 times 30 s apart; here a call is retried for ``patience``
    seconds at most, so a dead scheduler is noticed in seconds.
    """

    def __init__(self, url: str, patience: float):
        self.url = url
        self.patience = patience
        from luigi import rpc  # (imports requests: not when pipeflow is imported)

        self.rpc = rpc.RemoteScheduler(url, connect_timeout=CONNECT_TIMEOUT)
        # RPCError: no connection; ValueError/KeyError: an answer that is not luigid's
        # JSON (another server at that address)
        self.errors = (rpc.RPCError, OSError, ValueError, KeyError)
        # luigi's own retries (3 x 30 s) are replaced by ours (its config names them
        # rpc-retry-attempts/rpc-retry-wait; a run must not change the user's config)
        self.rpc._rpc_retry_attempts = 1
        self.rpc._rpc_retry_wait = 0
        self.rpc._rpc_log_retries = False

    def call(self, method: str, **args: Any) -> Any:
        """Call ``method``; raises :class:`_Down` once luigid failed for ``patience`` s."""
        give_up = time.monotonic() + self.patience
        while True:
            try:
                return getattr(self.rpc, method)(**args)
            except self.errors as exc:
                if time.monotonic() >= give_up:
                    raise _Down(_reason(exc)) from exc
                time.sleep(0.2)

    def close(self) -> None:
        self.rpc.close()


def _reason(exc: BaseException) -> str:
    """What went wrong with a call, in words (no traceback of luigi's or requests')."""
    inner = getattr(exc, "sub_exception", None) or exc
    if isinstance(exc, (ValueError, KeyError)):
        return "it answered, but not as luigid does (is another server on that port?)"
    text = str(inner)
    status = getattr(getattr(inner, "response", None), "status_code", None)
    if status is not None:
        return (f"it answered HTTP {status} where luigid answers its API (is another server "
                f"on that port?)")
    if "SSLError" in text or "SSL" in type(inner).__name__:
        return ("the TLS (https) handshake failed (luigid serves plain http:// unless a "
                "proxy in front of it adds TLS)")
    if "BadStatusLine" in text or "RemoteDisconnected" in text:
        return "it answered, but not in HTTP (is another kind of server on that port?)"
    if "Connection refused" in text or "NewConnectionError" in text:
        return "nothing accepts connections there (connection refused)"
    if "timed out" in text.lower() or "timeout" in type(inner).__name__.lower():
        return f"it did not answer within {CONNECT_TIMEOUT:g}s"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "its host name is not known"
    return f"{type(inner).__name__}: {first_line(inner)}"


class LuigiEngine(LocalEngine):
    """Runs tasks through luigi's central scheduler, shared with other processes.

    Args:
        url: luigid's URL (``http://host:port/``); see :func:`scheduler_url`.
        workers: how many tasks this process runs at the same time.
        executor: as for :class:`~pipeflow.engines.LocalEngine`.
        cancel: a token to cancel the run with (running tasks are stopped and handed back
            to luigid, so another process can run them).
        if_locked: as for :class:`~pipeflow.engines.LocalEngine`.

    Example:
        >>> pipeflow.run(Train(), local_scheduler=False,               # doctest: +SKIP
        ...              scheduler_url="http://scheduler.internal:8082/")
    """

    def __init__(self, url: str, workers: int = 1, executor: str | None = None,
                 cancel: CancelToken | None = None, if_locked: str = "wait") -> None:
        super().__init__(workers, executor, cancel, if_locked)
        self.url = url
        self.shown = shown_url(url)  # (what messages show: no password)
        self.host = socket.gethostname()
        self.worker_id = (f"pipeflow-{self.host}-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def connect(self) -> None:
        """Check luigid answers and register this process as one of its workers.

        Raises:
            SchedulerUnreachableError: it did not answer within a few seconds.
        """
        client = _Client(self.url, UNREACHABLE_AFTER)
        try:
            client.call("add_worker", worker=self.worker_id, info=self._info())
            # (add_worker answers null; ping's answer tells luigid from another JSON API)
            reply = client.call("ping", worker=self.worker_id)
        except _Down as exc:
            raise self._unreachable(str(exc)) from None
        finally:
            client.close()
        if not isinstance(reply, dict) or "rpc_messages" not in reply:
            raise self._unreachable(_reason(ValueError(reply)))

    def _info(self) -> list[tuple[str, Any]]:
        user = "?"
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name: luigid only shows it
            pass
        return [("host", self.host), ("username", user), ("pid", os.getpid()),
                ("workers", self.workers), ("salt", "pipeflow")]

    def _unreachable(self, why: str) -> SchedulerUnreachableError:
        try:
            port = urllib.parse.urlsplit(self.url).port or 8082
        except ValueError:
            port = 8082
        return SchedulerUnreachableError(
            f"luigi's central scheduler at {self.shown} cannot be reached: {why}. Nothing "
            f"was run. " + HOW_TO_START.format(port=port), self.shown)

    def run(self, plan: Plan, sinks: Sequence[Sink]) -> RunResult:
        """Run the pending tasks of ``plan``, shared with every process asking luigid."""
        self.connect()
        return super().run(plan, sinks)

    def _new_run(self, plan: Plan, emit: Callable[..., None]) -> _Run:
        return _Shared(self, plan, emit)

    def _ending(self, exc: BaseException, result: RunResult) -> None:
        if isinstance(exc, SchedulerError):  # (what had finished when luigid was lost)
            exc.result = result


class _Shared(_Run):
    """One run's state, its turns taken from luigid."""

    def __init__(self, engine: LuigiEngine, plan: Plan, emit: Callable[..., None]):
        super().__init__(engine, plan, emit)
        self.luigid = engine
        self.tell = emit  # the sinks
        self.emit = self._emit
        self.client = _Client(engine.url, LOST_AFTER)
        self.lids: list[str] = []
        self.by_lid: dict[str, int] = {}
        self._name_all()
        self.registered: set[int] = set()  # told to luigid
        self.claimed: set[int] = set()  # luigid handed them to this process
        self.fresh: set[int] = set()  # seen not DONE in luigid since registered
        self.workers_seen: dict[int, str] = {}  # who luigid last said runs a task
        self.unseen: dict[int, float] = {}  # done elsewhere, outputs not seen here: since
        self.dropped: dict[int, set[int]] = {}  # optional deps that did not finish well
        self.lost: str | None = None  # why luigid is considered gone
        self.next_ask = 0.0
        self.next_poll = 0.0
        self.stop_ping = threading.Event()
        self.pinger = threading.Thread(target=self._ping, name="pipeflow-luigid-ping",
                                       daemon=True)

    # -- names and registration ---------------------------------------------------------------
    def _name_all(self) -> None:
        """The id of every node for luigid: task_id, then a digest of where its outputs live."""
        g = self.g
        for i in range(len(self.lids), len(g.nodes)):
            t = g.nodes[i]
            where = adapt(t).record_path()
            if where is not None and "://" not in str(where):
                where = os.path.abspath(where)  # (a relative data dir: per working dir)
            if where is None:
                deps = [self.lids[d] for d in g.deps[i]]
                if any(d != g.nodes[p].task_id for d, p in zip(deps, g.deps[i])):
                    where = "requires:" + "|".join(sorted(deps))
            lid = t.task_id
            if where is not None:
                lid += "." + hashlib.sha256(str(where).encode()).hexdigest()[:10]
            self.lids.append(lid)
            self.by_lid[lid] = i

    def _register(self, i: int, status: str = PENDING) -> None:
        t = self.g.nodes[i]
        c = adapt(t)
        gone = self.dropped.get(i, set())
        for d in self.g.deps[i]:
            if d not in self.registered and d in self.done:  # (complete, met by a yield)
                self._register(d, DONE)
        shown = t.to_str_params(only_significant=True)
        params = {name: ("***" if is_secret(p) else shown.get(name, ""))
                  for name, p in t.get_params() if p.significant}
        self.client.call(
            "add_task", worker=self.luigid.worker_id, task_id=self.lids[i], status=status,
            runnable=True, deps=[self.lids[d] for d in self.g.deps[i] if d not in gone],
            priority=3 - int(c.priority), family=t.task_family, module=t.task_module,
            params=params, assistant=False)
        self.registered.add(i)
        if status == PENDING:
            self.fresh.discard(i)

    def _reset(self, i: int) -> None:
        """Make luigid take as pending a task it calls DONE but whose record says otherwise.

        luigid ignores "pending" for ``stable_done_cooldown_secs`` after DONE, but takes
        "disabled" from a worker at once, and a task a worker disabled back as pending.
        """
        self._register(i, DISABLED)
        self._register(i)

    def _report(self, i: int, status: str, kind: str = "", error: str = "") -> None:
        """Tell luigid how a task this process was handed ended (never raises)."""
        if self.lost:
            return
        expl = None
        if status == FAILED:
            expl = MARK + json.dumps({"kind": kind, "worker": self.luigid.worker_id,
                                      "host": self.luigid.host, "pid": os.getpid(),
                                      "error": error})
        try:
            self.client.call("add_task", worker=self.luigid.worker_id, task_id=self.lids[i],
                             status=status, expl=expl, runnable=True, assistant=False,
                             family=self.g.nodes[i].task_family)
        except _Down as exc:
            self.lost = str(exc)

    # -- events: what this process did, told to luigid too -------------------------------------
    def _emit(self, kind: EventKind, task: luigi.Task | None = None, **kw: Any) -> None:
        self.tell(kind, task, **kw)
        if task is None:
            return
        i = self.g.index.get(task.task_id)
        if i is None:
            return
        if kind is EventKind.TASK_ADDED:
            self._name_all()
            if not self.lost:
                try:
                    self._register(i)
                except _Down as exc:
                    self.lost = str(exc)
            return
        if kind in (EventKind.TASK_COMPLETED, EventKind.TASK_UP_TO_DATE):
            if i in self.claimed:
                self.claimed.discard(i)
                self._report(i, DONE)
        elif kind in (EventKind.TASK_FAILED, EventKind.TASK_SKIPPED, EventKind.TASK_CANCELLED):
            if i in self.claimed:
                self.claimed.discard(i)
                if kind is EventKind.TASK_FAILED:
                    error = kw.get("error")
                    self._report(i, FAILED, "failed",
                                 redact(first_line(error), task) if error else "")
                else:
                    self._report(i, FAILED, "released")
            self._drop_optional(i)

    def _drop_optional(self, i: int) -> None:
        """``i`` did not finish well: tasks needing it only optionally may run without it."""
        optional = self.g.optional
        for j in self.g.dependents[i]:
            if optional and i in optional[j] and j in self.to_run and j not in self.finished:
                self.dropped.setdefault(j, set()).add(i)
                if not self.lost:
                    try:
                        self._register(j)
                    except _Down as exc:
                        self.lost = str(exc)

    def _suspend(self, i: int, needs: list[Any]) -> None:
        """``run()`` of ``i`` yielded tasks that are not complete: they join the run.

        ``i`` stays this process's in luigid (shown running) while it waits for them, so
        that if this process dies, luigid hands ``i`` to another, whose ``run()`` yields
        them again. The new edges show on luigid's page.
        """
        super()._suspend(i, needs)
        if i in self.yielded and i in self.claimed and not self.lost:
            try:
                self.client.call("add_task", worker=self.luigid.worker_id,
                                 task_id=self.lids[i], status=RUNNING, runnable=True,
                                 new_deps=[self.lids[p] for p in sorted(self.yielded[i])],
                                 assistant=False)
            except _Down as exc:
                self.lost = str(exc)

    # -- what others did ---------------------------------------------------------------------
    def _done_here(self, i: int) -> bool:
        """Whether the commit record says ``i`` was run since this run planned it."""
        c = self.contracts.get(i) or adapt(self.g.nodes[i])
        now = _signature(c)
        if now is None:
            return c.record_path() is None and bool(c.output_state()[0])
        return bool(now != self.records.get(i) and c.output_state()[0])

    def _intact(self, i: int) -> bool:
        """Whether the task's outputs are complete now (its commit record, or luigi's say)."""
        return bool((self.contracts.get(i) or adapt(self.g.nodes[i])).output_state()[0])

    def _ran_elsewhere(self, i: int, who: str) -> None:
        self.finished.add(i)
        self.done.add(i)
        self.plan.ran(i)
        self.yielded.pop(i, None)
        self.emit(EventKind.TASK_UP_TO_DATE, self.g.nodes[i], reason=f"ran on another worker, "
                  f"{who}" if who else "ran on another worker")
        self._release(i)

    def _seen_here(self, i: int, who: str) -> None:
        """``i`` ran elsewhere since this run registered it: done once its outputs show here.

        They may show late on a shared file system; if they never do, this machine does not
        see the data dir the others write to, and ``i`` fails here (its dependents would
        fail to load it, and running again would not help).
        """
        if self._intact(i):
            self.unseen.pop(i, None)
            self._ran_elsewhere(i, who)
            return
        since = self.unseen.setdefault(i, time.monotonic())
        if time.monotonic() - since < NOT_SEEN_GRACE:
            return
        self.unseen.pop(i, None)
        task = self.g.nodes[i]
        try:  # (where its first output goes: the folder a person looks in)
            where = next((str(t.path) for t in luigi.task.flatten(task.output())
                          if getattr(t, "path", None)), adapt(task).record_path())
        except Exception:  # noqa: BLE001 - a user's output() failing: no folder to name
            where = None
        folder = "the data dir" if where is None else (
            os.path.dirname(where) if "://" in where else
            os.path.dirname(os.path.abspath(where)))
        exc = RemoteTaskError(
            f"{graphs.describe(task)} ran on another worker ({who or 'unknown'}), but its "
            f"outputs are not in {folder} on this machine after {NOT_SEEN_GRACE:g}s. Every "
            f"process sharing a run through luigid must see the same data dir: set_dir() to "
            f"a folder all machines mount at the same path, or to a URL such as "
            f"'s3://bucket/data'.")
        self._fail(i, Outcome(exc, None))

    def _failed_elsewhere(self, i: int, why: str) -> None:
        task = self.g.nodes[i]
        exc = RemoteTaskError(
            f"{graphs.describe(task)} failed in another process sharing this run through "
            f"luigid ({self.luigid.shown}): {why}. Its traceback is in that process's output "
            f"and run history. Fix it and run again: only what is not complete reruns.")
        self._fail(i, Outcome(exc, None))

    def _poll(self) -> None:
        """Read luigid's task list (luigid also drops dead workers then) and catch up."""
        tasks = self.client.call("task_list", status="", upstream_status="", limit=False)
        for i in sorted(self.registered):
            if i not in self.to_run and i not in self.done:
                continue
            info = tasks.get(self.lids[i])
            if i in self.done:
                # complete here, yet luigid lost it or its (dead) worker failed it: say it is
                # done, so the tasks needing it are handed out (not when someone registered
                # it again as pending: another call may have reset it)
                if (info is None or info["status"] == FAILED) and self._intact(i):
                    self._register(i, DONE)
                continue
            if i in self.finished or i in self.claimed or i in self.running:
                continue
            if info is None:  # forgotten (pruned, or luigid restarted without its state)
                self._register(i)
                continue
            status = info["status"]
            if status == DONE:
                if self._done_here(i):
                    self._ran_elsewhere(i, self._who(info))
                elif i in self.fresh:
                    self._seen_here(i, self._who(info))
                else:  # DONE from before a reset (or before it went stale)
                    self._reset(i)
            elif status == FAILED:
                why = self._failure(i, info)
                if why is None:  # its worker died, or handed it back: run it again
                    self._register(i)
                else:
                    self._failed_elsewhere(i, why)
            elif status == DISABLED:
                if info.get("re_enable_able"):
                    self._failed_elsewhere(i, "luigid disabled it after too many failures "
                                              "(its [scheduler] retry_count)")
                else:
                    self._register(i)
            else:
                self.fresh.add(i)
                if status == RUNNING:
                    self.workers_seen[i] = self._who(info)

    def _who(self, info: dict[str, Any]) -> str:
        worker = info.get("worker_running") or ""
        return str(worker)

    def _failure(self, i: int, info: dict[str, Any]) -> str | None:
        """Why a FAILED task failed, if a worker reported it failed (None: run it again)."""
        reply = self.client.call("fetch_error", task_id=self.lids[i])
        expl = (reply or {}).get("error") or ""
        if not isinstance(expl, str) or not expl.startswith(MARK):
            return None if info.get("worker_running") is None else "failed (luigi reports)"
        try:
            mark = json.loads(expl[len(MARK):])
        except ValueError:
            return None
        if mark.get("kind") != "failed" or mark.get("worker") != info.get("worker_running"):
            return None
        return f"on {mark.get('host')} (pid {mark.get('pid')}): {mark.get('error')}"

    # -- turns --------------------------------------------------------------------------------
    def _ask(self) -> bool:
        """Ask luigid for a task to run; whether it handed one over."""
        reply = self.client.call(
            "get_work", worker=self.luigid.worker_id, host=self.luigid.host,
            assistant=False, current_tasks=[self.lids[i] for i in sorted(self.claimed)])
        lid = (reply or {}).get("task_id")
        if not lid:
            return False
        i = self.by_lid.get(lid)
        if i is None or i not in self.to_run or i in self.finished:
            if i is not None and i in self.done:
                self._register(i, DONE)
            else:  # not this run's to do: give it back
                self.client.call(
                    "add_task", worker=self.luigid.worker_id, task_id=lid, status=FAILED,
                    expl=MARK + json.dumps({"kind": "declined"}), assistant=False)
            return True
        self.claimed.add(i)
        self.fresh.add(i)
        # luigid says its requirements are done: catch up with them
        stale = []
        for d in (*self.g.deps[i], *sorted(self.yielded.get(i, ()))):
            if d in self.finished or d in self.done or d in self.dropped.get(i, ()):
                continue
            if self._done_here(d):
                self._ran_elsewhere(d, self.workers_seen.get(d, ""))
            elif d in self.fresh:  # (outputs not seen here yet: the polls wait for them,
                pass  # then release ``i``, held here meanwhile)
            else:
                stale.append(d)
        if stale:  # DONE in luigid from before a reset: those run first
            for d in stale:
                self._reset(d)
            self.claimed.discard(i)
            self.client.call("add_task", worker=self.luigid.worker_id, task_id=lid,
                             status=PENDING, runnable=True, assistant=False,
                             new_deps=[self.lids[d] for d in stale])
            return True
        if (self.waiting.get(i, 0) == 0 and i not in self.yielded
                and all(j != i for _, j in self.ready)):  # (ready here already: once)
            heapq.heappush(self.ready, (self.priority[i], i))
        return True

    def _ping(self) -> None:
        client = _Client(self.luigid.url, LOST_AFTER)
        try:
            while not self.stop_ping.wait(PING):
                try:
                    client.call("ping", worker=self.luigid.worker_id)
                except _Down as exc:
                    self.lost = str(exc)
                    return
        finally:
            client.close()

    def _left(self) -> bool:
        """Whether tasks of this run wait for luigid (not finished, not held here)."""
        return bool(self.to_run - self.finished - self.claimed)

    def _cancel_rest(self, reason: str | None = None) -> None:
        for i in list(self.running):
            self.executor.stop(i, self.g.nodes[i])
            self._finish(i, Outcome(cancelled=True))
        for i in sorted(self.to_run - self.finished):
            self.finished.add(i)
            self.emit(EventKind.TASK_CANCELLED, self.g.nodes[i], reason=reason)

    # -- the loop -----------------------------------------------------------------------------
    def loop(self) -> None:
        token = self.engine.cancel
        try:
            try:
                # upstream first, so that luigid knows each dependency when it is named;
                # of the complete tasks, only those a task to run needs directly
                needed = {d for i in self.to_run for d in self.g.deps[i]} - self.to_run
                for i in range(len(self.g.nodes)):
                    if i in self.to_run or i in needed:
                        self._register(i, PENDING if i in self.to_run else DONE)
                for i in sorted(self.up_to_date):
                    self.emit(EventKind.TASK_UP_TO_DATE, self.g.nodes[i])
                self._poll()  # DONE from before a reset is put back before anyone asks
            except _Down as exc:
                self.lost = str(exc)
            self.pinger.start()
            self._turns(token)
        except KeyboardInterrupt:
            token._event.set()
            self._cancel_rest()
            raise
        finally:
            self.stop_ping.set()
            self.executor.close()
            for lock in self.locks.values():
                lock.release()
            for i in sorted(self.claimed):  # (an error above): hand them back
                self._report(i, FAILED, "released")
            if not self.lost:
                try:
                    self.client.call("disable_worker", worker=self.luigid.worker_id)
                except _Down:
                    pass
            self.client.close()
        if self.lost:
            done = len(self.done)
            raise SchedulerLostError(
                f"luigi's central scheduler at {self.luigid.shown} stopped answering during the "
                f"run: {self.lost}. Tasks that finished keep their outputs ({done} of the "
                f"run's tasks are complete); the rest did not start here. Start luigid again "
                f"(it reloads its state file) and rerun: only what is not complete runs.",
                self.luigid.shown)

    def _turns(self, token: CancelToken) -> None:
        workers = self.engine.workers
        while not self.to_run <= self.finished:
            if token.cancelled:
                self._cancel_rest()
                return
            if self.lost and not self.running:
                self._cancel_rest(reason=f"luigid at {self.luigid.shown} stopped answering")
                return
            now = time.monotonic()
            while self.delayed and self.delayed[0][0] <= now:
                i = heapq.heappop(self.delayed)[1]
                heapq.heappush(self.ready, (self.priority[i], i))
            later = []
            while self.ready and len(self.running) < workers:
                i = heapq.heappop(self.ready)[1]
                if i in self.finished or i in self.running:
                    continue
                if i not in self.claimed:
                    later.append(i)  # ready here, but luigid decides who runs it
                    continue
                self._start(i)
                for done_i, out in self.executor.collect(0):
                    self._finish(done_i, out)
                    self.next_ask = 0.0
                if token.cancelled:
                    break
            for i in later:
                heapq.heappush(self.ready, (self.priority[i], i))
            if self.lost:
                pass
            elif len(self.running) < workers and self._left() and now >= self.next_ask:
                try:
                    if self._ask():
                        continue
                except _Down as exc:
                    self.lost = str(exc)
                    continue
                self.next_ask = now + POLL
            if not self.lost and now >= self.next_poll and self._left():
                try:
                    self._poll()
                except _Down as exc:
                    self.lost = str(exc)
                    continue
                # (the whole task list each time: less often for large flows)
                self.next_poll = now + POLL + len(self.registered) / POLL_SCALE
                self.next_ask = 0.0  # something may have become ready
            wake = [r.deadline for r in self.running.values() if r.deadline]
            wake += [when for when, _ in self.delayed]
            if not self.lost and self._left():  # (else nothing to ask or poll for: a
                # past next_ask or next_poll would wake the loop at once, forever)
                wake.append(self.next_poll)
                if len(self.running) < workers:
                    wake.append(self.next_ask)
            timeout = max(0.0, min([*wake, now + POLL]) - time.monotonic())
            if self.running:
                for done_i, out in self.executor.collect(timeout):
                    self._finish(done_i, out)
                    self.next_ask = 0.0
            else:
                token.wait(timeout)
            now = time.monotonic()
            for i, run in list(self.running.items()):
                if run.deadline is not None and now >= run.deadline:
                    task = self.g.nodes[i]
                    self.executor.stop(i, task)
                    self._finish(i, _failure(_timeout_error(task)))


__all__ = ["LuigiEngine", "scheduler_url"]
