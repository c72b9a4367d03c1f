"""The embedded engine: order, priorities, optional dependencies, workers, cancellation,
retries, timeouts, events."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

import pipeflow
from pipeflow.errors import RunCancelledError, TaskFailedError
from pipeflow.events import EventKind


def _log(path, name):
    with open(path, "a") as fh:  # append-only: works from worker processes too
        fh.write(name + "\n")


def _order(path):
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def log(tmp_path):
    return tmp_path / "order.log"


def make_leaves(log, priorities):
    class Leaf(pipeflow.tasks.TaskPickle):
        name = pipeflow.Parameter()
        priority = pipeflow.IntParameter(default=2)

        def run(self):
            _log(log, self.name)
            self.save(self.name)

    return [Leaf(name=n, priority=p) for n, p in priorities]


def test_priorities_break_ties_among_ready_tasks(log):
    leaves = make_leaves(log, [("low", 3), ("normal", 2), ("urgent", 0), ("high", 1),
                               ("normal2", 2)])
    pipeflow.run(leaves)
    assert _order(log) == ["urgent", "high", "normal", "normal2", "low"]


def test_dependencies_win_over_priority(log):
    class Slow(pipeflow.tasks.TaskPickle):
        priority = 3

        def run(self):
            _log(log, "slow-upstream")
            self.save(1)

    @pipeflow.requires(Slow)
    class Urgent(pipeflow.tasks.TaskPickle):
        priority = 0

        def run(self):
            _log(log, "urgent-downstream")
            self.save(2)

    class Normal(pipeflow.tasks.TaskPickle):
        def run(self):
            _log(log, "normal")
            self.save(3)

    pipeflow.run([Urgent(), Normal()])
    order = _order(log)
    assert order.index("slow-upstream") < order.index("urgent-downstream")
    assert order == ["normal", "slow-upstream", "urgent-downstream"]


def test_bad_priority_is_an_error():
    class Odd(pipeflow.tasks.TaskPickle):
        priority = 7

    with pytest.raises(pipeflow.errors.PipeflowError, match=r"priority=7; priorities are 0"):
        pipeflow.run(Odd())


class Source(pipeflow.tasks.TaskJson):
    fail = pipeflow.BoolParameter(default=False)

    def run(self):
        if self.fail:
            raise ConnectionError("feed down")
        self.save({"rows": 3})


def test_optional_upstream_failure_still_runs_downstream_with_none():
    class Report(pipeflow.tasks.TaskJson):
        def requires(self):
            return {"main": Source(), "extra": pipeflow.optional(Source(fail=True))}

        def run(self):
            data = self.inputLoad()
            self.save({"main": data["main"], "extra": data["extra"]})

    result = pipeflow.run(Report(), abort=False)
    assert result.tasks[Report().task_id].state == "completed"
    assert result.tasks[Source(fail=True).task_id].state == "failed"
    assert Report().outputLoad() == {"main": {"rows": 3}, "extra": None}
    assert not result  # a task failed, even though the downstream ran


def test_preview_says_why_a_failed_optional_input_of_a_complete_task_does_not_run():
    # Regression: it said check_dependencies was off (and to turn it on) while it was on.
    class Report2(pipeflow.tasks.TaskJson):
        def requires(self):
            return {"main": Source(), "extra": pipeflow.optional(Source(fail=True))}

        def run(self):
            self.save({"ok": 1})

    pipeflow.run(Report2(), abort=False)
    assert pipeflow.settings.check_dependencies
    (row,) = [r for r in pipeflow.preview(Report2(), print_it=False).rows
              if r.task == Source(fail=True)]
    assert row.reason.startswith("not run: only complete tasks need it, as an optional input")
    assert "check_dependencies" not in row.reason
    pipeflow.settings.check_dependencies = False
    (row,) = [r for r in pipeflow.preview(Report2(), print_it=False).rows
              if r.task == Source(fail=True)]
    assert "check_dependencies is off" in row.reason


def test_every_way_to_start_a_run_takes_the_same_options():
    # Regressions: pipeflow.run raised a raw TypeError for a misspelt option; numpy integers
    # were refused as workers; flow.run(cancel=token) ignored the token; start(cancel=)
    # ignored it too (start makes its own token).
    import numpy as np

    from pipeflow.engines import CancelToken
    from pipeflow.errors import ParameterError

    with pytest.raises(ParameterError, match="Did you mean 'workers'"):
        pipeflow.run(Source(), worker=2)
    assert pipeflow.run(Source(), workers=np.int64(2))
    token = CancelToken()
    token.cancel()
    with pytest.raises(RunCancelledError):
        pipeflow.Workflow(Source, {"fail": False}).run(forced_all=True, cancel=token)
    with pytest.raises(RunCancelledError):
        pipeflow.WorkflowMulti(Source, {"a": {"fail": False}}).run(forced_all=True,
                                                                  cancel=token)
    with pytest.raises(ParameterError, match="handle.cancel"):
        pipeflow.start(Source(), cancel=CancelToken())
    with pytest.raises(ParameterError, match="handle.cancel"):
        pipeflow.Workflow(Source).start(cancel=CancelToken())


def test_optional_upstream_success_is_loaded_and_runs_first(log):
    class Enrich(pipeflow.tasks.TaskJson):
        def run(self):
            time.sleep(0.2)
            _log(log, "enrich")
            self.save({"e": 1})

    class Use(pipeflow.tasks.TaskJson):
        def requires(self):
            return pipeflow.optional(Enrich())

        def run(self):
            _log(log, "use")
            self.save({"got": self.inputLoad()})

    pipeflow.run(Use(), workers=2, executor="thread")
    assert _order(log) == ["enrich", "use"]
    assert Use().outputLoad() == {"got": {"e": 1}}


def test_required_failure_skips_transitively_but_optional_edge_does_not():
    @pipeflow.requires(Source)
    class Mid(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({})

    @pipeflow.requires(Mid)
    class Top(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({})

    class Tolerant(pipeflow.tasks.TaskJson):
        def requires(self):
            return pipeflow.optional(Mid(fail=True))

        def run(self):
            self.save({"mid": self.inputLoad()})

    result = pipeflow.run([Top(fail=True), Tolerant()], abort=False)
    states = {r.task.task_family: r.state.value for r in result.tasks.values()}
    assert states == {"Source": "failed", "Mid": "skipped", "Top": "skipped",
                      "Tolerant": "completed"}
    assert Tolerant().outputLoad() == {"mid": None}


def test_optional_requires_a_task_instance():
    with pytest.raises(pipeflow.errors.RequirementError, match="takes a task instance"):
        pipeflow.optional(Source)


def test_retries_rerun_a_failing_task_and_record_each_attempt(tmp_path):
    counter = tmp_path / "attempts"

    class Flaky(pipeflow.tasks.TaskJson):
        retries = 2
        retry_delay = 0.05

        def run(self):
            _log(counter, "x")
            if len(_order(counter)) < 3:
                raise TimeoutError("try again")
            self.save({"ok": True})

    events = []
    result = pipeflow.run(Flaky(), callbacks=[events.append])
    res = result.tasks[Flaky().task_id]
    assert res.state == "completed" and res.attempts == 3
    assert [type(e).__name__ for e, _ in res.retried_errors] == ["TimeoutError"] * 2
    kinds = [e.kind for e in events if e.task is not None]
    assert kinds == [EventKind.TASK_STARTED, EventKind.TASK_RETRYING] * 2 + [
        EventKind.TASK_STARTED, EventKind.TASK_COMPLETED]


def test_retries_exhausted_fail_the_task():
    class Always(pipeflow.tasks.TaskJson):
        retries = 1

        def run(self):
            raise ValueError("nope")

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Always())
    assert info.value.result.tasks[Always().task_id].attempts == 2


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_timeout_stops_a_task_and_leaves_nothing(executor, stored):
    class Hangs(pipeflow.tasks.TaskPickle):
        timeout = 0.5

        def run(self):
            self.save("partial")  # staged, must never be published
            for _ in range(400):
                time.sleep(0.01)

    started = time.monotonic()
    kw = {} if executor == "inline" else {"workers": 2, "executor": executor}
    result = pipeflow.run(Hangs(), abort=False, **kw)
    elapsed = time.monotonic() - started
    res = result.tasks[Hangs().task_id]
    assert res.state == "failed"
    assert isinstance(res.error, pipeflow.errors.TaskTimeoutError)
    assert "ran longer than its timeout of 0.5s" in str(res.error)
    assert elapsed < 3
    assert not stored()


def _long_tasks(log):
    class Long(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter()

        def run(self):
            _log(log, f"start-{self.n}")
            self.save(self.n)  # staged: must vanish when cancelled
            for _ in range(1000):
                time.sleep(0.01)
            _log(log, f"end-{self.n}")

    return [Long(n=i) for i in range(4)]


@pytest.mark.parametrize(("workers", "executor"), [(1, None), (2, "thread"), (2, "process")])
def test_cancel_from_another_thread(workers, executor, log, stored):
    tasks = _long_tasks(log)
    token = pipeflow.CancelToken()
    timer = threading.Timer(0.5, token.cancel)
    timer.start()
    started = time.monotonic()
    with pytest.raises(RunCancelledError, match="the run was cancelled") as info:
        pipeflow.run(tasks, workers=workers, executor=executor, cancel=token)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, elapsed  # promptly, not after the 10 s tasks
    states = [r.state.value for r in info.value.result.tasks.values()]
    assert set(states) == {"cancelled"} and len(states) == 4
    assert not any("end-" in line for line in _order(log))
    assert len([x for x in _order(log) if x.startswith("start-")]) == workers
    deadline = time.monotonic() + 2
    while [t for t in threading.enumerate() if t.name.startswith("pipeflow-")]:
        assert time.monotonic() < deadline, "a task thread kept running after the cancel"
        time.sleep(0.02)
    import multiprocessing

    assert multiprocessing.active_children() == []
    assert not stored()  # no output, no temp file


@pytest.mark.parametrize(("workers", "executor"), [(1, None), (2, "thread"), (2, "process")])
def test_cancelling_the_last_running_task_reports_the_tasks_waiting_for_it(workers, executor):
    """Regression: when the only running task was stopped, the loop ended with nothing
    ready, and the tasks waiting for it were missing from the result and the summary."""
    token = pipeflow.CancelToken()
    threading.Timer(0.3, token.cancel).start()

    class Slow(pipeflow.tasks.TaskPickle):
        def run(self):
            time.sleep(5)
            self.save(1)

    @pipeflow.requires(Slow)
    class After(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(2)

    with pytest.raises(RunCancelledError) as info:
        pipeflow.run(After(), cancel=token, workers=workers, executor=executor)
    result = info.value.result
    assert {r.task.task_family: r.state.value for r in result.tasks.values()} == {
        "Slow": "cancelled", "After": "cancelled"}
    assert "Scheduled 2 tasks" in result.summary()


def test_workflow_cancel_from_a_callback(log):
    class Step(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter()

        def run(self):
            _log(log, f"ran-{self.n}")
            self.save(self.n)

    class All(pipeflow.tasks.TaskAggregator):
        def run(self):
            for n in range(5):
                yield Step(n=n)

    flow = pipeflow.Workflow(All)

    def stop_after_two(event):
        if event.kind is EventKind.TASK_COMPLETED and len(_order(log)) == 2:
            flow.cancel()

    result = flow.run(callbacks=[stop_after_two], abort=False)
    assert _order(log) == ["ran-0", "ran-1"]
    assert len(result.by_state("completed")) == 2
    assert len(result.by_state("cancelled")) == 4  # 3 steps and the aggregator
    assert Step(n=0).complete() and not Step(n=2).complete()
    flow.run()  # re-execution runs only what is missing
    assert _order(log) == ["ran-0", "ran-1", "ran-2", "ran-3", "ran-4"]


def test_keyboard_interrupt_cancels_and_propagates(log, stored):
    tasks = _long_tasks(log)
    main = threading.get_ident()
    threading.Timer(0.4, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pipeflow.run(tasks, workers=2)
    assert time.monotonic() - started < 2.5
    import multiprocessing

    assert multiprocessing.active_children() == []
    time.sleep(0.2)
    assert not stored()


def test_start_streams_events_and_can_be_cancelled_by_leaving_the_loop(log):
    tasks = _long_tasks(log)
    handle = pipeflow.start(tasks)
    kinds = []
    for event in handle:
        kinds.append(event.kind)
        if event.kind is EventKind.TASK_STARTED:
            break  # leaving the loop cancels the run
    with pytest.raises(RunCancelledError):
        handle.result(timeout=5)
    assert handle.done()
    assert kinds[:2] == [EventKind.RUN_STARTED, EventKind.TASK_STARTED]


def test_workflow_start_and_result():
    class Hello(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"hi": 1})

    flow = pipeflow.Workflow(Hello)
    handle = flow.start()
    events = list(handle)
    assert handle.result()
    assert events[0].kind is EventKind.RUN_STARTED and events[0].total == 1
    assert events[-1].kind is EventKind.RUN_FINISHED
    assert flow.outputLoad() == {"hi": 1}


def test_events_carry_task_identity_timing_and_errors():
    class Bad(pipeflow.tasks.TaskJson):
        x = pipeflow.IntParameter(default=4)

        def run(self):
            raise ArithmeticError("bad maths")

    events = []
    pipeflow.run(Bad(), callbacks=[events.append], abort=False)
    failed = [e for e in events if e.kind is EventKind.TASK_FAILED][0]
    assert failed.family == "Bad" and failed.params == {"x": "4"}
    assert failed.task_id == Bad().task_id
    assert isinstance(failed.error, ArithmeticError)
    assert "ArithmeticError: bad maths" in failed.traceback
    assert events[0].time <= failed.time <= events[-1].time


def test_cache_outputs_made_in_worker_processes_reach_downstream_and_caller():
    class Mem(pipeflow.tasks.TaskCache):
        n = pipeflow.IntParameter()

        def run(self):
            self.save({"n": self.n, "pid": os.getpid()})

    class Sum(pipeflow.tasks.TaskJson):
        def requires(self):
            return [Mem(n=1), Mem(n=2)]

        def run(self):
            parts = self.inputLoad()
            self.save({"total": sum(p["n"] for p in parts),
                       "pids": sorted({p["pid"] for p in parts})})

    pipeflow.run(Sum(), workers=2)
    out = Sum().outputLoad()
    assert out["total"] == 3
    assert os.getpid() not in out["pids"]  # really made in worker processes
    assert Mem(n=1).outputLoad()["n"] == 1  # usable by the caller too


def test_unpicklable_cache_output_in_a_worker_fails_clearly():
    class Gen(pipeflow.tasks.TaskCache):
        def run(self):
            self.save(threading.Lock())

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Gen(), workers=2)
    assert "cannot be sent back from its worker process" in str(info.value.__cause__)


def test_worker_process_that_dies_is_reported():
    class Dies(pipeflow.tasks.TaskJson):
        def run(self):
            os._exit(3)

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Dies(), workers=2)
    assert "died with exit code 3" in str(info.value.__cause__)


def test_progress_bar_counts_tasks(capsys):
    class One(pipeflow.tasks.TaskJson):
        k = pipeflow.IntParameter()

        def run(self):
            self.save({"k": self.k})

    pipeflow.run([One(k=1), One(k=2)], progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "pipeflow" in err


def test_progress_bar_in_a_notebook_without_ipywidgets_is_text_without_a_warning(monkeypatch):
    # Regression: tqdm.auto in a Jupyter kernel without ipywidgets warned "IProgress not
    # found" at every first run before falling back to text.
    import importlib.util

    import tqdm.auto
    import tqdm.std

    from pipeflow.display.progress import bar_class

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ipywidgets" else real(name, *a))
    assert bar_class() is tqdm.std.tqdm
    # with ipywidgets too: a notebook draws pipeflow's own HTML bar, never tqdm's widget
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert bar_class() is tqdm.std.tqdm


def test_invalid_workers_and_executor():
    with pytest.raises(ValueError, match="workers must be"):
        pipeflow.run(Source(), workers=0)
    with pytest.raises(ValueError, match="executor must be one of"):
        pipeflow.run(Source(), executor="gpu")


def test_result_json_friendly_summary_of_states():
    pipeflow.run(Source())
    result = pipeflow.run(Source())
    assert json.dumps({k: v.state.value for k, v in result.tasks.items()})


def test_runs_under_a_profiler(tmp_path):
    """Regression: clearing a pending thread interruption made CPython spin under cProfile."""
    import subprocess
    import sys

    code = (
        "import cProfile, pipeflow\n"
        f"pipeflow.set_dir({str(tmp_path / 'd')!r})\n"
        "class T(pipeflow.tasks.TaskJson):\n"
        "    def run(self):\n"
        "        self.save({'a': 1})\n"
        "cProfile.run('pipeflow.run([T()], execution_summary=False, progress=False)', "
        f"{str(tmp_path / 'prof')!r})\n"
        "print('finished')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "finished"


def test_tasks_defined_in_main_run_on_process_workers(tmp_path):
    """Notebook/script tasks live in __main__; forked workers must still find them."""
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(
        "import os, pipeflow\n"
        f"pipeflow.set_dir({str(tmp_path / 'd')!r})\n"
        "class Part(pipeflow.tasks.TaskCache):\n"
        "    n = pipeflow.IntParameter()\n"
        "    def run(self):\n"
        "        self.save(os.getpid())\n"
        "class Join(pipeflow.tasks.TaskJson):\n"
        "    def requires(self):\n"
        "        return [Part(n=i) for i in range(3)]\n"
        "    def run(self):\n"
        "        self.save({'pids': self.inputLoad()})\n"
        "if __name__ == '__main__':\n"
        "    pipeflow.run(Join(), workers=2, execution_summary=False, progress=False)\n"
        "    pids = Join().outputLoad()['pids']\n"
        "    print(len(pids), os.getpid() not in pids)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "True"]


def test_preview_says_what_run_leaves_alone_with_check_dependencies_off():
    """One plan answer: preview, run, summary and progress agree on what runs (issue 10)."""
    import pipeflow

    class Up(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"a": 1})

    @pipeflow.requires(Up)
    class Down(pipeflow.tasks.TaskJson):
        def run(self):
            self.save(self.inputLoad())

    pipeflow.run(Down())
    Up().reset(confirm=False)
    pipeflow.settings.check_dependencies = False  # restored by the conftest fixture
    preview = pipeflow.preview(Down(), print_it=False)
    up_row = next(r for r in preview.rows if r.task.task_family == "Up")
    assert str(up_row.status) == "PENDING"
    assert up_row.reason.startswith("not run: the tasks that need it are complete")
    assert preview.plan.to_run == frozenset()
    events = []
    result = pipeflow.run(Down(), callbacks=[events.append])
    assert [e.total for e in events if e.kind.value == "run_started"] == [0]
    assert not result.by_state("completed") and not Up().complete()
    pipeflow.settings.check_dependencies = True
    assert pipeflow.preview(Down(), print_it=False).plan.to_run == frozenset({0, 1})
