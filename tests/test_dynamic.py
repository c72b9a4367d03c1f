"""Requirements yielded by run() (luigi's dynamic dependencies) are tasks of the same run.

A run() that yields tasks that are not complete is suspended: they join the run (events,
summary, history, progress, workers, locks), and the task runs again from the start once
they are done, as in luigi.
"""

from __future__ import annotations

import os
import threading
import time

import luigi
import pytest

import pipeflow
from pipeflow.contract import adapt
from pipeflow.errors import RequirementError, TaskFailedError, TaskLockedError
from pipeflow.events import EventKind, TaskState


def _log(path, line):
    with open(path, "a") as fh:  # one append per line: safe from workers too
        fh.write(line + "\n")


def _lines(path):
    return path.read_text().split("\n")[:-1] if path.exists() else []


@pytest.fixture
def log(tmp_path):
    return tmp_path / "calls.log"


def _flow(log, sleep=0.0):
    class Leaf(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter(default=1)

        def run(self):
            _log(log, f"leaf {self.n} {time.time()} start")
            time.sleep(sleep)
            _log(log, f"leaf {self.n} {time.time()} end")
            self.save(self.n * 10)

    class Dyn(pipeflow.tasks.TaskPickle):
        ns = pipeflow.ListParameter(default=[1])

        def run(self):
            _log(log, "dyn run() called")
            targets = yield [Leaf(n=n) for n in self.ns]
            self.save(sum(t.load() for t in targets))

    @pipeflow.requires(Dyn)
    class Report(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(self.inputLoad() + 1)

    return Leaf, Dyn, Report


def test_yielded_tasks_are_in_the_events_summary_and_history(log):
    Leaf, Dyn, Report = _flow(log)
    events = []
    result = pipeflow.run(Report(), callbacks=[events.append])
    assert result
    assert Report().outputLoad() == 11
    assert [r.task.task_family for r in result.by_state("completed")].count("Leaf") == 1
    assert result.tasks[Leaf().task_id].state is TaskState.COMPLETED
    assert "Scheduled 3 tasks" in result.summary()
    # upstream first, also for what a run() yielded (the summary lists in this order)
    assert [r.task.task_family for r in result.tasks.values()] == ["Leaf", "Dyn", "Report"]
    added = [e for e in events if e.kind is EventKind.TASK_ADDED]
    assert [e.task.task_id for e in added] == [Leaf().task_id]
    assert added[0].total == 3  # the run now tries 3 tasks (it started with 2)
    assert "Dyn" in added[0].reason
    waiting = [e for e in events if e.kind is EventKind.TASK_WAITING]
    assert waiting and waiting[0].task.task_id == Dyn().task_id
    assert "Leaf" in waiting[0].reason
    history = pipeflow.history()
    assert set(history["family"]) == {"Leaf", "Dyn", "Report"}
    assert set(history["status"]) == {"completed"}


def test_run_starts_over_once_its_requirements_are_done_without_using_retries(log):
    Leaf, Dyn, _ = _flow(log)
    result = pipeflow.run(Dyn())  # retries = 0: the suspension is not a failed attempt
    assert result
    assert _lines(log).count("dyn run() called") == 2
    assert [x.split()[-1] for x in _lines(log) if x.startswith("leaf")] == ["start", "end"]
    assert result.tasks[Dyn().task_id].attempts == 2  # run() was called twice
    assert Dyn().outputLoad() == 10
    # complete requirements: run() is called once, nothing is added
    Dyn().reset(confirm=False)
    log.unlink()
    events = []
    assert pipeflow.run(Dyn(), callbacks=[events.append])
    assert _lines(log) == ["dyn run() called"]
    assert not [e for e in events if e.kind is EventKind.TASK_ADDED]


def test_successive_yields_each_join_the_run(log):
    class Step(pipeflow.tasks.TaskJson):
        n = pipeflow.IntParameter()

        def run(self):
            self.save({"n": self.n})

    class Walk(pipeflow.tasks.TaskJson):
        def run(self):
            _log(log, "walk")
            total = 0
            for n in range(3):
                total += (yield Step(n=n)).load()["n"]
            self.save({"total": total})

    result = pipeflow.run(Walk())
    assert result
    assert Walk().outputLoad() == {"total": 3}
    assert _lines(log) == ["walk"] * 4  # one suspension per yield, then to the end
    assert len(result.by_state("completed")) == 4


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_yielded_tasks_run_in_parallel_on_the_run_s_workers(log, executor):
    Leaf, Dyn, _ = _flow(log, sleep=0.6)
    assert pipeflow.run(Dyn(ns=[1, 2]), workers=2, executor=executor)
    spans = {}
    for line in _lines(log):
        if line.startswith("leaf"):
            _, n, when, what = line.split()
            spans.setdefault(n, {})[what] = float(when)
    (a, b) = spans.values()
    overlap = min(a["end"], b["end"]) - max(a["start"], b["start"])
    assert overlap > 0.3, f"the two yielded tasks did not run side by side: {spans}"
    assert Dyn(ns=[1, 2]).outputLoad() == 30


def test_a_failing_yielded_task_fails_and_skips_what_needs_it(log):
    class Bad(pipeflow.tasks.TaskPickle):
        def run(self):
            raise OSError("the source is down")

    class Dyn(pipeflow.tasks.TaskPickle):
        def run(self):
            yield Bad()
            self.save(1)

    @pipeflow.requires(Dyn)
    class After(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(2)

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(After())
    result = info.value.result
    assert [r.task.task_family for r in result.by_state("failed")] == ["Bad"]
    skipped = {r.task.task_family: r.reason for r in result.by_state("skipped")}
    assert set(skipped) == {"Dyn", "After"}
    assert "Bad" in skipped["Dyn"]
    assert not Dyn().complete()


def test_a_yielded_task_locked_elsewhere_follows_if_locked(log):
    Leaf, Dyn, _ = _flow(log)
    lock = adapt(Leaf()).lock()
    assert lock.acquire()
    try:
        started = time.monotonic()
        with pytest.raises(TaskFailedError) as info:
            pipeflow.run(Dyn(), if_locked="fail")
        assert time.monotonic() - started < 5
        failed = info.value.result.by_state("failed")
        assert [r.task.task_family for r in failed] == ["Leaf"]
        assert isinstance(failed[0].error, TaskLockedError)
        # with if_locked="wait" the run waits for the lock, then runs Leaf itself
        threading.Timer(0.5, lock.release).start()
        assert pipeflow.run(Dyn(), if_locked="wait")
    finally:
        lock.release()
    assert Dyn().outputLoad() == 10


def test_a_yielded_task_already_run_in_this_run_is_not_run_again(log):
    Leaf, Dyn, _ = _flow(log)

    class Both(pipeflow.tasks.TaskAggregator):
        def run(self):
            yield Leaf()
            yield Dyn()

    assert pipeflow.run(Both())
    assert [x for x in _lines(log) if x.endswith("start")] and \
        sum(1 for x in _lines(log) if x.endswith("start")) == 1


def test_yielding_something_that_is_not_a_task_fails_with_a_clear_error():
    class Odd(pipeflow.tasks.TaskPickle):
        def run(self):
            yield "data.csv"
            self.save(1)

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Odd())
    error = info.value.result.by_state("failed")[0].error
    assert isinstance(error, RequirementError)
    assert "'data.csv'" in str(error) and "not a task" in str(error)


def test_a_yielded_task_that_never_says_complete_fails_instead_of_looping(log):
    class Never(luigi.Task):
        def run(self):
            _log(log, "never")

        def complete(self):
            return False

    class Dyn(pipeflow.tasks.TaskPickle):
        def run(self):
            yield Never()
            self.save(1)

    started = time.monotonic()
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Dyn())
    assert time.monotonic() - started < 10
    error = info.value.result.by_state("failed")[0].error
    assert isinstance(error, RequirementError)
    assert "Never()" in str(error) and "complete()" in str(error)


def test_cancelling_while_a_task_waits_for_its_yielded_tasks(log):
    token = pipeflow.CancelToken()

    class Slow(pipeflow.tasks.TaskPickle):
        def run(self):
            token.cancel()
            time.sleep(5)
            self.save(1)

    class Dyn(pipeflow.tasks.TaskPickle):
        def run(self):
            yield Slow()
            self.save(2)

    started = time.monotonic()
    with pytest.raises(pipeflow.errors.RunCancelledError) as info:
        pipeflow.run(Dyn(), cancel=token)
    assert time.monotonic() - started < 4
    result = info.value.result
    assert {r.task.task_family for r in result.by_state("cancelled")} == {"Slow", "Dyn"}
    assert not Slow().complete() and not Dyn().complete()
    assert not [p for p in os.listdir(pipeflow.settings.dirpath) if ".tmp-" in p]


def test_a_cycle_through_yielded_tasks_fails_the_task_with_the_cycle():
    class Loop(pipeflow.tasks.TaskPickle):
        def run(self):
            yield Top()
            self.save(1)

    @pipeflow.requires(Loop)
    class Up(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(2)

    class Top(pipeflow.tasks.TaskPickle):
        def requires(self):
            return Up()

        def run(self):
            self.save(3)

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Loop())
    failed = info.value.result.by_state("failed")
    assert failed and "cycle" in str(failed[0].error)


def test_a_task_waiting_on_two_yields_is_skipped_once_when_one_fails(log):
    """Regression: when one yielded task failed, the other finishing later hit a KeyError."""

    class Bad(pipeflow.tasks.TaskPickle):
        def run(self):
            raise ValueError("bad input")

    class Slow(pipeflow.tasks.TaskPickle):
        def run(self):
            time.sleep(0.5)
            self.save(1)

    class Dyn(pipeflow.tasks.TaskPickle):
        def run(self):
            yield [Bad(), Slow()]
            self.save(2)

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Dyn(), workers=2, executor="thread")
    states = {r.task.task_family: r.state.value for r in info.value.result.tasks.values()}
    assert states == {"Bad": "failed", "Slow": "completed", "Dyn": "skipped"}


def test_errors_in_what_run_yields_are_not_retried(log):
    class Loop(pipeflow.tasks.TaskPickle):
        retries = 3

        def run(self):
            _log(log, "loop")
            yield Top()
            self.save(1)

    class Top(pipeflow.tasks.TaskPickle):
        def requires(self):
            return Loop()

        def run(self):
            self.save(3)

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Loop())
    assert _lines(log) == ["loop"]  # failed at once: a cycle does not go away on retry
    failed = info.value.result.by_state("failed")
    assert [r.task.task_family for r in failed] == ["Loop"]
    assert "Loop() -> Top() -> Loop()" in str(failed[0].error)
