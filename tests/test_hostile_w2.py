"""Issue 11, kind 3: an attempt stopped by its timeout or a cancel never commits.

A task whose ``run()`` catches the interrupt pipeflow raises in its thread (a bare
``except:``) used to go on, save and commit its output, and the run reported success.
Once a timeout or cancel has fired for an attempt, that attempt publishes nothing: its
``save()`` raises, its commit is refused (staged temp files withdrawn), and its outcome is
the timeout or cancel, whatever its ``run()`` returned.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

import pipeflow
from pipeflow.errors import TaskTimeoutError

#: how long a swallowing run() goes on after the interrupt (seconds)
SWALLOW = 2.0
#: a bound on the wall time of a run, generous for a loaded machine
SLACK = 20.0


def _swallow(seconds: float) -> None:
    """Sleep ``seconds`` in small steps, swallowing every interrupt (a hostile task)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except:  # noqa: E722 - the point: it catches pipeflow's interrupt too
            pass


class Late(pipeflow.tasks.TaskJson):
    """Runs past its timeout, swallowing the interrupt, then saves."""

    timeout = 0.5

    def run(self):
        _swallow(self.timeout + SWALLOW)
        self.save({"late": True})


class LateNoSave(pipeflow.tasks.TaskJson):
    """Runs past its timeout, swallowing the interrupt, then returns without saving."""

    timeout = 0.5

    def run(self):
        _swallow(self.timeout + SWALLOW)


class Slow(pipeflow.tasks.TaskJson):
    """Swallows a cancel, then saves (no timeout)."""

    def run(self):
        _swallow(1.0 + SWALLOW)
        self.save({"late": True})


ATTEMPTS: list[int] = []


class Retried(pipeflow.tasks.TaskJson):
    """Attempt 1 overruns its timeout swallowing the interrupt; attempt 2 is quick."""

    timeout = 1.0
    retries = 1

    def run(self):
        ATTEMPTS.append(1)
        n = len(ATTEMPTS)
        if n == 1:
            _swallow(self.timeout + SWALLOW)
        self.save({"attempt": n})


def _temps() -> list[str]:
    root = pipeflow.settings.dir
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if ".tmp-" in f]


def _rows(task) -> list[tuple[str, str | None]]:
    """(status, error type) of the task's history rows, by attempt."""
    hist = pipeflow.history(full=True)
    rows = hist[hist["task_id"] == task.task_id].sort_values("attempt")
    return [(s, e if isinstance(e, str) else None)
            for s, e in zip(rows["status"], rows["error_type"])]


@pytest.mark.parametrize("executor,workers", [(None, 1), ("thread", 2)])
@pytest.mark.parametrize("cls", [Late, LateNoSave])
def test_timed_out_attempt_that_swallows_the_interrupt_commits_nothing(cls, executor, workers):
    t0 = time.monotonic()
    result = pipeflow.run(cls(), workers=workers, executor=executor, abort=False)
    took = time.monotonic() - t0
    res = result.tasks[cls().task_id]
    assert not result.success
    assert res.state.value == "failed"
    assert isinstance(res.error, TaskTimeoutError)
    assert not cls().complete()
    assert not cls().output().exists()
    assert _temps() == []
    assert _rows(cls()) == [("failed", "TaskTimeoutError")]
    # the thread cannot be killed: the run waits for its run() to end, no longer
    assert took < cls.timeout + SWALLOW + SLACK


@pytest.mark.parametrize("executor,workers", [(None, 1), ("thread", 2)])
def test_cancelled_attempt_that_swallows_the_interrupt_commits_nothing(executor, workers):
    token = pipeflow.CancelToken()
    timer = threading.Timer(1.0, token.cancel)
    timer.start()
    t0 = time.monotonic()
    try:
        result = pipeflow.run(Slow(), workers=workers, executor=executor, abort=False,
                              cancel=token)
    finally:
        timer.cancel()
    took = time.monotonic() - t0
    assert not result.success
    assert result.tasks[Slow().task_id].state.value == "cancelled"
    assert not Slow().complete()
    assert not Slow().output().exists()
    assert _temps() == []
    assert [s for s, _ in _rows(Slow())] == ["cancelled"]
    hist = pipeflow.runs()
    assert list(hist["status"])[-1] == "cancelled"
    assert took < 1.0 + SWALLOW + SLACK


@pytest.mark.parametrize("executor,workers", [(None, 1), ("thread", 2)])
def test_timed_out_attempt_never_commits_before_its_retry(executor, workers):
    ATTEMPTS.clear()
    result = pipeflow.run(Retried(), workers=workers, executor=executor, abort=False)
    res = result.tasks[Retried().task_id]
    assert result.success, result.summary()
    assert res.state.value == "completed"
    assert res.attempts == 2
    assert isinstance(res.retried_errors[0][0], TaskTimeoutError)
    assert Retried().outputLoad() == {"attempt": 2}
    assert _temps() == []
    assert _rows(Retried()) == [("retried", "TaskTimeoutError"), ("completed", None)]
    hist = pipeflow.history()
    assert not hist["reason"].fillna("").str.contains("another process").any()


SAVE_ERRORS: list[BaseException] = []


class SavesTwice(pipeflow.tasks.TaskJson):
    """Swallows the interrupt, then its save raises: it swallows that too, and returns."""

    timeout = 0.5

    def run(self):
        _swallow(self.timeout + 1.0)
        try:
            self.save({"late": True})
        except BaseException as exc:  # noqa: BLE001 - a hostile task hides it
            SAVE_ERRORS.append(exc)


class Converts(pipeflow.tasks.TaskJson):
    """Turns the interrupt into an error of its own."""

    timeout = 0.5

    def run(self):
        try:
            time.sleep(self.timeout + 5.0)
        except BaseException as exc:
            raise ValueError("the feed broke") from exc


@pytest.mark.parametrize("executor,workers", [(None, 1), ("thread", 2)])
def test_save_of_a_stopped_attempt_raises_and_leaves_no_temp_file(executor, workers):
    SAVE_ERRORS.clear()
    result = pipeflow.run(SavesTwice(), workers=workers, executor=executor, abort=False)
    res = result.tasks[SavesTwice().task_id]
    assert res.state.value == "failed"
    assert isinstance(res.error, TaskTimeoutError)
    assert len(SAVE_ERRORS) == 1 and "stopped" in str(SAVE_ERRORS[0])
    assert not SavesTwice().complete()
    assert not SavesTwice().output().exists()
    assert _temps() == []


@pytest.mark.parametrize("executor,workers", [(None, 1), ("thread", 2)])
def test_stopped_attempt_outcome_is_the_timeout_whatever_run_raised(executor, workers):
    result = pipeflow.run(Converts(), workers=workers, executor=executor, abort=False)
    res = result.tasks[Converts().task_id]
    assert res.state.value == "failed"
    assert isinstance(res.error, TaskTimeoutError), res.error
    assert _rows(Converts()) == [("failed", "TaskTimeoutError")]


def test_process_workers_still_kill_a_timed_out_task_at_once():
    t0 = time.monotonic()
    result = pipeflow.run(Late(), workers=2, abort=False)
    res = result.tasks[Late().task_id]
    assert isinstance(res.error, TaskTimeoutError)
    assert not Late().complete()
    assert _temps() == []
    assert time.monotonic() - t0 < Late.timeout + SWALLOW + SLACK
