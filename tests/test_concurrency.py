"""Two processes, one data dir: every task runs once, in one of them.

Real interpreters (``subprocess``) run the same flow against the same data dir at the
same moment; a task being run by one of them is waited for (and its output reused) by the
other, or, with ``if_locked='fail'``, fails at once with TaskLockedError.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import subprocess
import sys
import time

import luigi
import pytest

import pipeflow
from pipeflow.errors import TaskFailedError, TaskLockedError

N_TASKS = 50
STARTUP = 60  # seconds a fresh interpreter may take to import everything (generous)
SLOW_SECONDS = 3

# The flow, a module both the subprocesses and this test process import. Each run() logs
# "<task_id> <pid> <process name>" to a shared append-only file, in one write.
FLOW = '''
import os
import pathlib
import sys
import time

import pipeflow

N_TASKS = {n_tasks}
SLOW_SECONDS = {slow_seconds}


def root():
    return pipeflow.settings.dirpath.parent


def log_run(task):
    fd = os.open(root() / "runs.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        name = os.environ.get("FLOW_PROCESS_NAME", "test")  # forked workers inherit it
        os.write(fd, f"{{task.task_id}} {{os.getpid()}} {{name}}\\n".encode())
    finally:
        os.close(fd)


class Node(pipeflow.tasks.TaskJson):
    """50 tasks in a binary tree: Node(0) is upstream of all, the leaves are independent."""

    n = pipeflow.IntParameter()

    def requires(self):
        return [Node(n=(self.n - 1) // 2)] if self.n > 0 else []

    def run(self):
        log_run(self)
        time.sleep(0.02)  # widen the race
        self.save({{"n": self.n, "pid": os.getpid()}})


class Slow(pipeflow.tasks.TaskJson):
    def run(self):
        log_run(self)
        (root() / "slow-started").touch()
        time.sleep(SLOW_SECONDS)
        self.save({{"pid": os.getpid()}})


def main():
    data, workers, what, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    # the process's name travels in the environment: a module global it assigned would be
    # a constant of the flow's code with another value in each process (a code change)
    os.environ["FLOW_PROCESS_NAME"] = name
    pipeflow.set_dir(data)
    pipeflow.settings.execution_summary = False
    if what == "nodes":
        (root() / f"ready-{{name}}").touch()
        deadline = time.monotonic() + {startup}
        while not (root() / "go").exists():  # start together with the other process
            if time.monotonic() > deadline:
                sys.exit("never got the go")
            time.sleep(0.001)
        pipeflow.run([Node(n=i) for i in range(N_TASKS)], workers=workers, progress=False)
    else:
        pipeflow.run(Slow(), workers=workers, progress=False)
        (root() / "slow-done").write_text(repr(time.time()))


if __name__ == "__main__":
    main()
'''

_ids = itertools.count()


@pytest.fixture
def flow(tmp_path):
    """The flow module, written to tmp_path and imported here too (same task ids)."""
    path = tmp_path / "flow.py"
    path.write_text(FLOW.format(n_tasks=N_TASKS, slow_seconds=SLOW_SECONDS, startup=STARTUP))
    spec = importlib.util.spec_from_file_location(f"pipeflow_concurrency_flow_{next(_ids)}",
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.path = path
    return module


def _start(flow, data_dir, workers, what, name="other"):
    return subprocess.Popen(
        [sys.executable, str(flow.path), str(data_dir), str(workers), what, name],
        cwd=flow.path.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(proc, timeout=120):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def _log_lines(tmp_path):
    log = tmp_path / "runs.log"
    return log.read_text().splitlines() if log.exists() else []


def _temp_files(root):
    return sorted(str(p) for p in root.rglob("*") if ".tmp-" in p.name)


@contextlib.contextmanager
def _reaped(*procs):
    """Kill and reap any of ``procs`` still running when the block ends."""
    try:
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _wait_for(path, procs, timeout=STARTUP):
    deadline = time.monotonic() + timeout
    while not path.exists():
        for p in procs:
            assert p.poll() is None, f"the subprocess ended early: {_finish(p)}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


# -- the same flow in two processes at once ---------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_two_processes_share_a_flow_and_run_each_task_once(workers, flow, data_dir, tmp_path):
    procs = [_start(flow, data_dir, workers, "nodes", name) for name in "AB"]
    with _reaped(*procs):
        deadline = time.monotonic() + STARTUP
        while len(list(tmp_path.glob("ready-*"))) < 2:
            for p in procs:
                assert p.poll() is None, f"a subprocess ended early: {_finish(p)}"
            assert time.monotonic() < deadline, "the subprocesses never got ready"
            time.sleep(0.01)
        (tmp_path / "go").touch()
        results = [_finish(p) for p in procs]
    for code, _out, err in results:
        assert code == 0, err

    lines = _log_lines(tmp_path)
    ids = [line.split()[0] for line in lines]
    luigi.task_register.Register.clear_instance_cache()
    nodes = [flow.Node(n=i) for i in range(N_TASKS)]
    ran_twice = sorted({i for i in ids if ids.count(i) > 1})
    per_process = {name: sum(line.split()[2] == name for line in lines) for name in "AB"}
    print(f"\n[two processes, workers={workers}] runs logged: {len(lines)}, distinct tasks: "
          f"{len(set(ids))}, run twice: {len(ran_twice)}, runs per process: {per_process}")
    assert ran_twice == []
    assert len(lines) == N_TASKS
    assert sorted(ids) == sorted(t.task_id for t in nodes)
    pid_of = {line.split()[0]: int(line.split()[1]) for line in lines}
    for t in nodes:
        assert t.complete(), t.task_id
        # the stored output is the one written by the run that was logged
        assert t.outputLoad() == {"n": t.n, "pid": pid_of[t.task_id]}
    assert _temp_files(data_dir) == []


# -- a task another process is running --------------------------------------------------------

def test_if_locked_fail_fails_at_once_with_task_locked_error(flow, data_dir, tmp_path):
    other = _start(flow, data_dir, 1, "slow")
    with _reaped(other):
        _wait_for(tmp_path / "slow-started", [other])
        started = time.monotonic()
        with pytest.raises(TaskFailedError) as info:
            pipeflow.run(flow.Slow(), progress=False, if_locked="fail")
        elapsed = time.monotonic() - started
        still_running = other.poll() is None
        code, _out, err = _finish(other)
    assert code == 0, err
    assert still_running, "the other process was done before the check: no lock was held"
    assert elapsed < 1.0, f"if_locked='fail' took {elapsed:.2f}s: it must not wait"

    chain = []
    exc: BaseException | None = info.value
    while exc is not None and len(chain) < 20:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    chain += [r.error for r in info.value.result.by_state("failed") if r.error is not None]
    locked = [e for e in chain if isinstance(e, TaskLockedError)]
    assert locked, f"no TaskLockedError in {[type(e).__name__ for e in chain]}"
    message = str(locked[0])
    assert "Slow" in message
    assert "another process" in message, message

    # The other process's run was not disturbed, and this one ran nothing.
    assert [line.split()[1] for line in _log_lines(tmp_path)] == [str(other.pid)]
    luigi.task_register.Register.clear_instance_cache()
    assert flow.Slow().complete()
    assert flow.Slow().outputLoad() == {"pid": other.pid}
    assert _temp_files(data_dir) == []


def test_if_locked_wait_waits_for_the_other_process_and_reuses_its_output(flow, data_dir,
                                                                         tmp_path):
    other = _start(flow, data_dir, 1, "slow")
    with _reaped(other):
        _wait_for(tmp_path / "slow-started", [other])
        started = time.monotonic()
        result = pipeflow.run(flow.Slow(), progress=False)  # if_locked='wait', the default
        returned = time.time()
        elapsed = time.monotonic() - started
        code, _out, err = _finish(other)
    assert code == 0, err
    done = float((tmp_path / "slow-done").read_text())

    assert result
    assert result.tasks[flow.Slow().task_id].state == "up_to_date"
    assert elapsed > SLOW_SECONDS / 2, "it did not wait for the other process"
    assert returned - done < 1.0, "it went on waiting long after the other process finished"
    assert [line.split()[1] for line in _log_lines(tmp_path)] == [str(other.pid)]  # one run
    luigi.task_register.Register.clear_instance_cache()
    assert flow.Slow().outputLoad() == {"pid": other.pid}
    assert _temp_files(data_dir) == []
