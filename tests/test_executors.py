"""The process executor's pool of long-lived forked workers.

Through the engine (``pipeflow.run``): workers are reused, a worker that dies fails only its
task, cancel/timeout/Ctrl-C kill and replace workers and leave no child process, in-memory
outputs travel between workers, usage is per attempt, SIGINT is ignored in workers.

Directly (a :class:`ProcessExecutor` with a small :class:`Work`): how tasks reach workers
(inherited, pickled, or a new fork for a task a worker cannot load), a worker dying while
idle, and workers not outliving a killed parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import types

import luigi
import psutil
import pytest

import pipeflow
from pipeflow import layout
from pipeflow.engines.executors import Outcome, ProcessExecutor, Work
from pipeflow.errors import RunCancelledError, TaskTimeoutError


def _children() -> list[psutil.Process]:
    """Child processes of this test process still alive (zombies are not)."""
    alive = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _pids(path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _note_pid(path) -> None:
    with open(path, "a") as fh:  # one append per write: safe from several processes
        fh.write(f"{os.getpid()}\n")


@pytest.fixture(autouse=True)
def no_children_left():
    """Every test here must leave no child process behind."""
    yield
    deadline = time.monotonic() + 2
    while _children() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _children() == []


# -- through the engine ---------------------------------------------------------------------

def test_workers_are_reused_across_tasks():
    class Where(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter()

        def run(self):
            time.sleep(0.02)
            self.save(os.getpid())

    tasks = [Where(n=i) for i in range(8)]
    assert pipeflow.run(tasks, workers=2)
    pids = [t.outputLoad() for t in tasks]
    assert os.getpid() not in pids  # really in worker processes
    assert len(set(pids)) <= 2  # two workers ran all eight tasks
    assert _children() == []  # and are gone after the run


def test_workers_1_with_process_executor_runs_in_one_worker_process():
    class Where(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter()

        def run(self):
            self.save(os.getpid())

    tasks = [Where(n=i) for i in range(4)]
    assert pipeflow.run(tasks, workers=1, executor="process")
    pids = {t.outputLoad() for t in tasks}
    assert len(pids) == 1 and os.getpid() not in pids


@pytest.mark.parametrize(("how", "code"), [("sigkill", -9), ("exit", 3), ("segfault", -11)])
def test_a_worker_that_dies_fails_only_its_task_and_is_replaced(how, code, tmp_path):
    log = tmp_path / "pids"

    class Dies(pipeflow.tasks.TaskJson):
        priority = 0  # runs first

        def run(self):
            _note_pid(log)
            if how == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif how == "exit":
                os._exit(3)
            else:
                import ctypes
                import faulthandler

                faulthandler.disable()  # pytest's handler would print a traceback
                ctypes.string_at(0)  # a segmentation fault

    class Fine(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter()

        def run(self):
            self.save(os.getpid())

    fine = [Fine(n=i) for i in range(3)]
    result = pipeflow.run([Dies(), *fine], workers=1, executor="process", abort=False)
    dead = result.tasks[Dies().task_id]
    assert dead.state == "failed"
    assert f"worker process running a task died with exit code {code}" in str(dead.error)
    assert [result.tasks[t.task_id].state for t in fine] == ["completed"] * 3
    (died,) = _pids(log)
    assert _gone(died)
    assert not {t.outputLoad() for t in fine} & {died, os.getpid()}  # in a new worker


def test_a_killed_worker_among_several_fails_only_its_task():
    class Maybe(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter()

        def run(self):
            time.sleep(0.05)
            if self.n == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            self.save(self.n)

    tasks = [Maybe(n=i) for i in range(8)]
    result = pipeflow.run(tasks, workers=2, abort=False)
    states = {t.n: result.tasks[t.task_id].state.value for t in tasks}
    assert states == {n: "failed" if n == 3 else "completed" for n in range(8)}


def test_timeout_kills_the_worker_and_a_new_one_runs_the_next_tasks(tmp_path, stored):
    log = tmp_path / "pids"

    class Hangs(pipeflow.tasks.TaskPickle):
        priority = 0
        timeout = 0.5

        def run(self):
            _note_pid(log)
            self.save("partial")  # staged: must never be published
            time.sleep(30)

    class After(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter()

        def run(self):
            self.save(os.getpid())

    after = [After(n=i) for i in range(2)]
    started = time.monotonic()
    result = pipeflow.run([Hangs(), *after], workers=1, executor="process", abort=False)
    assert time.monotonic() - started < 5
    res = result.tasks[Hangs().task_id]
    assert res.state == "failed" and isinstance(res.error, TaskTimeoutError)
    (hung,) = _pids(log)
    assert _gone(hung)  # killed, not left sleeping
    assert [result.tasks[t.task_id].state for t in after] == ["completed"] * 2
    assert hung not in {t.outputLoad() for t in after}
    assert stored() and not [p for p in stored() if "Hangs" in str(p)]  # nothing partial


def _sleepers(log):
    class Sleeps(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter()

        def run(self):
            _note_pid(log)
            self.save(self.n)  # staged: must vanish when stopped
            time.sleep(30)

    return [Sleeps(n=i) for i in range(4)]


def test_cancel_kills_the_busy_workers_and_leaves_no_child(tmp_path, stored):
    log = tmp_path / "pids"
    token = pipeflow.CancelToken()
    threading.Timer(0.5, token.cancel).start()
    started = time.monotonic()
    with pytest.raises(RunCancelledError):
        pipeflow.run(_sleepers(log), workers=2, cancel=token)
    assert time.monotonic() - started < 3
    assert len(_pids(log)) == 2 and all(_gone(p) for p in _pids(log))
    assert _children() == []
    assert not stored()


def test_ctrl_c_kills_the_workers_and_leaves_no_child(tmp_path, stored):
    log = tmp_path / "pids"
    main = threading.get_ident()
    threading.Timer(0.5, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        pipeflow.run(_sleepers(log), workers=2)
    assert len(_pids(log)) == 2 and all(_gone(p) for p in _pids(log))
    assert _children() == []
    assert not stored()


def test_sigint_is_ignored_in_workers():
    class Interrupted(pipeflow.tasks.TaskPickle):
        def run(self):
            os.kill(os.getpid(), signal.SIGINT)  # the parent handles Ctrl-C, not workers
            time.sleep(0.05)
            self.save("survived")

    assert pipeflow.run(Interrupted(), workers=2)
    assert Interrupted().outputLoad() == "survived"


def test_cache_outputs_travel_between_workers_and_back_to_the_caller():
    class Part(pipeflow.tasks.TaskCache):
        n = pipeflow.IntParameter()

        def run(self):
            time.sleep(0.2)  # both parts run at once, so in two workers
            self.save({"n": self.n, "pid": os.getpid()})

    class Both(pipeflow.tasks.TaskCache):
        def requires(self):
            return [Part(n=1), Part(n=2)]

        def run(self):  # runs in one worker, needs the part the other one made
            parts = self.inputLoad()
            self.save({"total": sum(p["n"] for p in parts),
                       "pids": [p["pid"] for p in parts], "pid": os.getpid()})

    class Top(pipeflow.tasks.TaskJson):
        def requires(self):
            return Both()

        def run(self):
            self.save(self.inputLoad())

    assert pipeflow.run(Top(), workers=2)
    both = Top().outputLoad()
    assert both["total"] == 3
    assert len(set(both["pids"])) == 2  # the parts were made in two different workers
    assert os.getpid() not in [*both["pids"], both["pid"]]
    assert Part(n=2).outputLoad()["n"] == 2 and Both().outputLoad()["total"] == 3  # caller


def test_unpicklable_cache_output_fails_its_task_and_the_worker_goes_on():
    class Gen(pipeflow.tasks.TaskCache):
        priority = 0

        def run(self):
            self.save({"lock": threading.Lock(), "pid": os.getpid()})

    class Next(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(os.getpid())

    result = pipeflow.run([Gen(), Next()], workers=1, executor="process", abort=False)
    res = result.tasks[Gen().task_id]
    assert res.state == "failed"
    assert "cannot be sent back from its worker process" in str(res.error)
    assert result.tasks[Next().task_id].state == "completed"
    assert Next().outputLoad() != os.getpid()


def test_usage_is_that_of_each_attempt_not_of_the_worker():
    class Heavy(pipeflow.tasks.TaskPickle):
        priority = 0

        def run(self):
            block = bytearray(200 * 1024 * 1024)
            block[::4096] = b"x" * len(block[::4096])  # touch every page
            end = time.process_time() + 0.4
            while time.process_time() < end:
                pass
            del block
            self.save(os.getpid())

    class Light(pipeflow.tasks.TaskPickle):
        def run(self):
            time.sleep(0.05)
            self.save(os.getpid())

    result = pipeflow.run([Heavy(), Light()], workers=1, executor="process")
    assert Heavy().outputLoad() == Light().outputLoad()  # one worker ran both
    heavy = result.tasks[Heavy().task_id].usage
    light = result.tasks[Light().task_id].usage
    assert heavy["cpu_time"] >= 0.35
    assert light["cpu_time"] < 0.2  # not the worker's cumulative time
    if os.access("/proc/self/clear_refs", os.W_OK):  # Linux: the peak is reset per attempt
        assert light["peak_memory"] < heavy["peak_memory"] - 100 * 1024 * 1024


# -- a ProcessExecutor directly --------------------------------------------------------------

STOPPED: list = []


def _work() -> Work:
    """Runs a task's ``run()``; its in-memory 'outputs' say which process ran it."""
    return Work(
        run=lambda task: task.run() or True,
        fail=lambda exc, task: Outcome(exc, "".join(traceback.format_exception(exc))),
        stopped=STOPPED.append,
        timed_out=lambda task: TimeoutError(task.task_id),
        memory=lambda task: {("ran", task.task_id): os.getpid()},
    )


def _run(ex: ProcessExecutor, tasks, first: int = 0) -> dict[int, Outcome]:
    """Start ``tasks`` together (positions from ``first``) and wait for all of them."""
    for k, task in enumerate(tasks):
        ex.start(first + k, task, None)
    done: dict[int, Outcome] = {}
    deadline = time.monotonic() + 30
    while len(done) < len(tasks):
        assert time.monotonic() < deadline, "the attempts never ended"
        done.update(ex.collect(0.1))
    return done


def _ran_in(out: Outcome, task) -> int:
    assert out.error is None, out.traceback
    return out.memory[("ran", task.task_id)]


class Ping(luigi.Task):
    """A luigi task whose class is importable (pickled by reference)."""

    n = luigi.IntParameter()

    def run(self):
        time.sleep(0.05)


class Nap(luigi.Task):
    seconds = luigi.FloatParameter()

    def run(self):
        time.sleep(self.seconds)


def test_workers_are_forked_lazily_and_as_many_as_attempts_run_at_once():
    ex = ProcessExecutor(_work())
    assert _children() == []  # nothing forked before an attempt starts
    try:
        outs = _run(ex, [Ping(n=0), Ping(n=1)])
        pool = {_ran_in(outs[k], Ping(n=k)) for k in (0, 1)}
        assert len(pool) == 2 and ex.forked == 2
        for rnd in range(3):  # later attempts reuse the two workers
            tasks = [Ping(n=10 * rnd + 2), Ping(n=10 * rnd + 3)]
            first = 2 + 2 * rnd
            outs = _run(ex, tasks, first=first)
            assert {_ran_in(outs[first + k], t) for k, t in enumerate(tasks)} <= pool
        assert ex.forked == 2
        assert {p.pid for p in _children()} == pool
    finally:
        ex.close()
    assert _children() == []


def test_tasks_made_or_defined_after_the_pool_started(tmp_path, monkeypatch):
    class EarlyLocal(luigi.Task):  # defined in a function, before the pool started
        k = luigi.IntParameter()

        def run(self):
            pass

    monkeypatch.syspath_prepend(str(tmp_path))  # the worker's sys.path has it too
    ex = ProcessExecutor(_work())
    try:
        (first,) = _run(ex, [Ping(n=0)]).values()
        worker = _ran_in(first, Ping(n=0))

        # a new instance of a class the worker knows: pickled, run by the same worker
        late = Ping(n=99)
        assert _ran_in(_run(ex, [late], first=1)[1], late) == worker

        # a new instance of a class defined in a function before the fork: the class is
        # named by identity (pickle cannot name it), run by the same worker
        local = EarlyLocal(k=1)
        assert _ran_in(_run(ex, [local], first=10)[10], local) == worker

        # a class from a module first imported after the pool started: pickled, and the
        # worker imports the module
        (tmp_path / "late_module.py").write_text(textwrap.dedent("""
            import time
            import luigi

            class LateImported(luigi.Task):
                def run(self):
                    time.sleep(0.01)
        """))
        import late_module

        task = late_module.LateImported()
        assert _ran_in(_run(ex, [task], first=2)[2], task) == worker

        # a class defined after the fork, as in __main__ or a notebook cell: it pickles
        # here but the worker cannot find it, so a new fork (which inherits it) runs it
        cell = types.ModuleType("notebook_cell")
        exec(textwrap.dedent("""
            import luigi

            class DefinedLater(luigi.Task):
                def run(self):
                    pass
        """), cell.__dict__)
        monkeypatch.setitem(sys.modules, "notebook_cell", cell)
        task = cell.DefinedLater()
        newer = _ran_in(_run(ex, [task], first=3)[3], task)
        assert newer != worker and _gone(worker)  # it replaced the worker that could not

        # a class defined in a function after the newest worker was forked: a new fork too
        class Local(luigi.Task):
            def run(self):
                pass

        task = Local()
        newest = _ran_in(_run(ex, [task], first=5)[5], task)
        assert newest not in (worker, newer) and _gone(newer)

        # and the pool goes on with one worker: the newest
        task = Ping(n=5)
        assert _ran_in(_run(ex, [task], first=6)[6], task) == newest
        assert [p.pid for p in _children()] == [newest]
    finally:
        ex.close()


def test_in_memory_outputs_a_worker_cannot_load_get_a_new_worker(monkeypatch):
    # Worker A cannot unpickle an output made by a worker forked after its class was
    # defined: A is replaced by a new fork for its next attempt, which then runs fine.
    ex = ProcessExecutor(_work())
    try:
        first = _run(ex, [Nap(seconds=0.2), Nap(seconds=0.21)])  # two workers
        a, b = (_ran_in(first[k], t) for k, t in ((0, Nap(seconds=0.2)),
                                                   (1, Nap(seconds=0.21))))
        cell = types.ModuleType("notebook_cell2")
        exec(textwrap.dedent("""
            import luigi

            class Point:
                def __init__(self, x):
                    self.x = x

            class MakesPoint(luigi.Task):
                def run(self):
                    pass
        """), cell.__dict__)
        monkeypatch.setitem(sys.modules, "notebook_cell2", cell)
        maker = cell.MakesPoint()
        ex.work = Work(ex.work.run, ex.work.fail, ex.work.stopped, ex.work.timed_out,
                       lambda task: {("point", task.task_id): cell.Point(1),
                                     ("ran", task.task_id): os.getpid()})
        made = _ran_in(_run(ex, [maker], first=2)[2], maker)  # by a new fork
        assert made not in (a, b)
        ex.work = _work()
        # two attempts at once: one goes to the worker still left from before (a or b),
        # which is sent the Point and cannot load it, so a new fork runs that attempt
        tasks = [Nap(seconds=0.1), Nap(seconds=0.11)]
        outs = _run(ex, tasks, first=3)
        ran = {_ran_in(outs[3 + k], t) for k, t in enumerate(tasks)}
        assert made in ran and not ran & {a, b}
        assert _gone(a) and _gone(b)
    finally:
        ex.close()


def test_a_worker_that_died_while_idle_is_replaced():
    ex = ProcessExecutor(_work())
    try:
        (out,) = _run(ex, [Ping(n=0)]).values()
        worker = _ran_in(out, Ping(n=0))
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not _gone(worker):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        (out,) = _run(ex, [Ping(n=1)], first=1).values()
        assert _ran_in(out, Ping(n=1)) != worker
    finally:
        ex.close()


def test_stop_kills_the_worker_and_cleans_up():
    STOPPED.clear()
    ex = ProcessExecutor(_work())
    try:
        task = Nap(seconds=30)
        ex.start(0, task, None)
        time.sleep(0.3)
        (worker,) = _children()
        ex.stop(0, task)
        assert STOPPED == [task]
        assert _gone(worker.pid) and ex.collect(0) == []
        (out,) = _run(ex, [Ping(n=0)], first=1).values()
        assert _ran_in(out, Ping(n=0)) != worker.pid
    finally:
        ex.close()


def test_close_kills_busy_and_idle_workers():
    ex = ProcessExecutor(_work())
    _run(ex, [Ping(n=0)])
    ex.start(1, Nap(seconds=30), None)
    ex.start(2, Nap(seconds=31), None)
    time.sleep(0.2)
    assert len(_children()) == 2
    ex.close()
    assert _children() == []


def test_the_flow_context_applies_in_workers():
    seen: dict = {}
    ctx = layout.FlowContext(root="elsewhere", env="dev")
    work = Work(run=lambda task: True, fail=_work().fail, stopped=STOPPED.append,
                timed_out=_work().timed_out,
                memory=lambda task: {"ctx": layout.current()})
    with layout.flow_context(ctx):
        ex = ProcessExecutor(work)
    try:
        seen.update(_run(ex, [Ping(n=0)])[0].memory)
    finally:
        ex.close()
    assert seen["ctx"] == ctx


# -- in other interpreters -------------------------------------------------------------------

def _script(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_task_defined_in_main_after_the_pool_started(tmp_path):
    proc = _script(tmp_path, """
        import os, time, traceback
        import luigi
        from pipeflow.engines.executors import Outcome, ProcessExecutor, Work

        class Early(luigi.Task):
            def run(self):
                pass

        WORK = Work(run=lambda t: t.run() or True,
                    fail=lambda e, t: Outcome(e, "".join(traceback.format_exception(e))),
                    stopped=lambda t: None, timed_out=lambda t: TimeoutError(),
                    memory=lambda t: {t.task_id: os.getpid()})

        def run(ex, pos, task):
            ex.start(pos, task, None)
            while True:
                for _, out in ex.collect(0.1):
                    assert out.error is None, out.traceback
                    return out.memory[task.task_id]

        if __name__ == "__main__":
            ex = ProcessExecutor(WORK)
            first = run(ex, 0, Early())

            class Later(luigi.Task):  # in __main__, after the worker was forked
                x = luigi.IntParameter()
                def run(self):
                    pass

            later = run(ex, 1, Later(x=1))
            again = run(ex, 2, Later(x=2))  # the new worker knows Later: reused
            ex.close()
            print(first != os.getpid(), later != first, again == later)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
@pytest.mark.parametrize("busy", [True, False])
def test_workers_do_not_outlive_a_killed_parent(tmp_path, busy):
    proc = _script(tmp_path, f"""
        import os, signal, sys, time, traceback
        import luigi
        from pipeflow.engines.executors import Outcome, ProcessExecutor, Work

        class Nap(luigi.Task):
            seconds = luigi.FloatParameter()
            def run(self):
                time.sleep(self.seconds)

        if __name__ == "__main__":
            ex = ProcessExecutor(Work(
                run=lambda t: t.run() or True,
                fail=lambda e, t: Outcome(e, "".join(traceback.format_exception(e))),
                stopped=lambda t: None, timed_out=lambda t: TimeoutError(),
                memory=lambda t: {{}}))
            ex.start(0, Nap(seconds=0.01), None)
            ex.start(1, Nap(seconds=0.02), None)
            while len(ex.running) > 0:
                ex.collect(0.1)
            if {busy}:
                ex.start(2, Nap(seconds=60), None)
                ex.start(3, Nap(seconds=61), None)
            print(*sorted(w.proc.pid for w in [*ex.idle, *ex.running.values()]), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in pids):
        assert time.monotonic() < deadline, "a worker outlived its parent"
        time.sleep(0.05)


def test_thread_attempt_that_timed_out_neither_hides_nor_undoes_its_retry(tmp_path):
    # Regression: a stopped thread's position stayed marked stopped, so the retry's result
    # (same position) was dropped and reported as a second timeout; and a thread still
    # blocked when the engine moved on cleaned up later, without the lock, withdrawing the
    # retry's committed outputs.
    marker = tmp_path / "attempts"

    class SlowFirst(pipeflow.tasks.TaskJson):
        timeout = 0.3
        retries = 1

        def run(self):
            n = int(marker.read_text()) if marker.exists() else 0
            marker.write_text(str(n + 1))
            if n == 0:
                time.sleep(1.5)  # one C call: the interruption lands when it returns
            self.save({"attempt": n})

    result = pipeflow.run(SlowFirst(), workers=2, executor="thread")
    assert result
    (res,) = result.tasks.values()
    assert res.state.value == "completed" and res.attempts == 2
    assert len(res.retried_errors) == 1
    assert isinstance(res.retried_errors[0][0], TaskTimeoutError)
    time.sleep(0.2)
    assert SlowFirst().complete()
    assert SlowFirst().outputLoad() == {"attempt": 1}
