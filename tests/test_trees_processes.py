"""Task trees across processes: persistence, crash-resume, cancellation, contention.

Real subprocesses run this file as a script (``python test_trees_processes.py ACTION
STORE JSON``): it registers the same executors as the tests, so every process can run
the trees. Executors append their task's tag to an ``O_APPEND`` log file, one line per
execution, so the tests count executions across all processes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pandas as pd

import pipeflow
from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor
from pipeflow.trees import executors as registry
from pipeflow.trees.store import TaskStore

HERE = pathlib.Path(__file__).resolve()
IDS = ("procs_step", "procs_frame", "procs_boom", "procs_error_dict", "procs_block",
       "procs_gate", "procs_sleep_cancelable", "procs_async_cancelable", "procs_busy",
       "procs_timeout", "procs_c_sleep_timeout", "procs_flaky", "procs_flaky_once",
       "procs_quick_cancelable")


# -- executors (registered in the test process and in every subprocess) ------------------------

def log(path: str, line: str) -> None:
    """Append one line to ``path`` atomically (O_APPEND: safe across processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _touch(path: str | None) -> None:
    if path:
        pathlib.Path(path).write_text("x")


def _wait_for(path: str, seconds: float = 30.0) -> None:
    """Sleep in small steps (interruptible) until ``path`` exists."""
    end = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.01)


@executor("procs_step")
def step(inputs: dict[str, Any]) -> dict[str, Any]:
    """Log the tag, sleep a little if asked, return a dict naming the tag."""
    if inputs.get("sleep"):
        time.sleep(inputs["sleep"])
    log(inputs["log"], inputs["tag"])
    return {f"from_{inputs['tag']}": inputs["tag"]}


@executor("procs_frame")
def frame(inputs: dict[str, Any]) -> pd.DataFrame:
    """A DataFrame result (kept as a file beside the store)."""
    log(inputs["log"], inputs["tag"])
    return pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", inputs.get("from_a", "?")]})


@executor("procs_boom")
def boom(inputs: dict[str, Any]) -> None:
    """Raise."""
    log(inputs["log"], inputs["tag"])
    raise ValueError(f"boom: {inputs['tag']} got bad input")


@executor("procs_error_dict")
def error_dict(inputs: dict[str, Any]) -> dict[str, Any]:
    """Report an error by returning a dict with 'error'."""
    log(inputs["log"], inputs["tag"])
    return {"error": "nope", "detail": 7}


@executor("procs_block")
def block(inputs: dict[str, Any]) -> dict[str, Any]:
    """Log, then (when PROCS_BLOCK is set) write the marker file and sleep for good."""
    log(inputs["log"], inputs["tag"])
    if os.environ.get("PROCS_BLOCK"):
        _touch(inputs["marker"])
        time.sleep(120)
    return {"blocked": False}


@executor("procs_gate")
def gate(inputs: dict[str, Any]) -> dict[str, Any]:
    """Log, write the marker, wait (in small sleeps) for the gate file, return."""
    log(inputs["log"], inputs["tag"])
    _touch(inputs.get("marker"))
    _wait_for(inputs["gate"])
    return {"gated": inputs["tag"]}


@executor("procs_sleep_cancelable", cancelable=True)
def sleep_cancelable(inputs: dict[str, Any]) -> dict[str, Any]:
    """Log, mark, sleep 30 s in one C call (only a cancel ends it early)."""
    log(inputs["log"], inputs["tag"])
    _touch(inputs.get("marker"))
    time.sleep(30)
    return {"slept": True}


@executor("procs_async_cancelable", cancelable=True)
async def async_cancelable(inputs: dict[str, Any]) -> dict[str, Any]:
    """Log, mark, await a 30 s sleep."""
    log(inputs["log"], inputs["tag"])
    _touch(inputs.get("marker"))
    await asyncio.sleep(30)
    return {"slept": True}


@executor("procs_quick_cancelable", cancelable=True)
def quick_cancelable(inputs: dict[str, Any]) -> dict[str, Any]:
    """Cancelable, done in 0.3 s."""
    log(inputs["log"], inputs["tag"])
    time.sleep(0.3)
    return {"quick": True}


@executor("procs_busy")
def busy(inputs: dict[str, Any]) -> dict[str, Any]:
    """Not cancelable: log, mark, wait for the gate, return a result."""
    log(inputs["log"], inputs["tag"])
    _touch(inputs.get("marker"))
    _wait_for(inputs["gate"])
    return {"finished": inputs["tag"]}


@executor("procs_timeout", timeout=0.5)
def too_slow(inputs: dict[str, Any]) -> dict[str, Any]:
    """Runs 30 s in small (interruptible) sleeps: its 0.5 s timeout stops it."""
    log(inputs["log"], inputs["tag"])
    for _ in range(3000):
        time.sleep(0.01)
    return {"late": True}


@executor("procs_c_sleep_timeout", timeout=0.5)
def too_slow_in_c(inputs: dict[str, Any]) -> dict[str, Any]:
    """Sleeps 30 s in one C call: its 0.5 s timeout must still end the task."""
    log(inputs["log"], inputs["tag"])
    time.sleep(30)
    return {"late": True}


def _flaky(inputs: dict[str, Any]) -> dict[str, Any]:
    log(inputs["log"], inputs["tag"])
    tries = pathlib.Path(inputs["log"]).read_text().split().count(inputs["tag"])
    if tries <= inputs.get("fail_times", 2):
        raise RuntimeError(f"flaky: attempt {tries} failed")
    return {"attempts": tries}


executor("procs_flaky", retries=2)(_flaky)
executor("procs_flaky_once")(_flaky)  # no retries of its own: params decide


# -- the subprocess side ------------------------------------------------------------------------

def _create(tm: TaskManager, spec: list[dict[str, Any]]) -> None:
    for t in spec:
        tm.task_repository.create_now(t.pop("name"), **t)


def _describe(store: TaskStore) -> dict[str, Any]:
    out = {}
    for t in store.query({}):
        result = t.result
        if isinstance(result, pd.DataFrame):
            result = {"frame": result.to_dict("list")}
        out[t.id] = {"status": t.status, "result": result, "error": t.error}
    return out


def main(argv: list[str]) -> None:
    """``ACTION STORE JSON``: create, run, create_run, cancel or read (prints JSON)."""
    action, where, arg = argv[0], argv[1], json.loads(argv[2]) if len(argv) > 2 else {}
    pipeflow.set_dir(pathlib.Path(where).parent / "data")
    db = create_session(where)
    tm = TaskManager(db)

    async def go() -> Any:
        if action in ("create", "create_run"):
            _create(tm, arg["tasks"])
        if action in ("run", "create_run"):
            tree = await tm.task_repository.build_task_tree(arg["root"])
            await tm.distribute_task_tree(tree, workers=arg.get("workers"), progress=False)
        if action == "cancel":
            return await tm.cancel_task(arg["id"], arg.get("message"))
        if action == "read":
            return _describe(db)
        return None

    print(json.dumps(asyncio.run(go())))


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)

# -- helpers of the tests -----------------------------------------------------------------------

import pytest  # noqa: E402 - after main(): the subprocesses do not need it

#: the environment of the subprocesses: bytecode cached (once, outside the worktree), so
#: each starts faster than by compiling pipeflow again
_ENV: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _module_setup(tmp_path_factory):
    _ENV.update(os.environ)
    _ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    _ENV["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    yield
    for i in IDS:
        registry.unregister(i)


def spawn(action: str, store: pathlib.Path, arg: Any = None, env: dict[str, str] | None = None
          ) -> subprocess.Popen[str]:
    """Start this file as a subprocess doing ``action`` on ``store``."""
    return subprocess.Popen(
        [sys.executable, str(HERE), action, str(store), json.dumps(arg or {})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**_ENV, **(env or {})})


def finish(proc: subprocess.Popen[str], timeout: float = 50) -> Any:
    """Wait for ``proc``; it must succeed; its printed JSON."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert "locked" not in err, err
    return json.loads(out.strip().splitlines()[-1])


def call(action: str, store: pathlib.Path, arg: Any = None, **kw: Any) -> Any:
    """Run this file as a subprocess doing ``action``; its printed JSON."""
    return finish(spawn(action, store, arg, **kw))


def wait_file(path: pathlib.Path, seconds: float = 30) -> None:
    """Wait until ``path`` exists (a marker written by an executor)."""
    end = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def executions(log_path: pathlib.Path) -> collections.Counter[str]:
    """How often each tag was executed, over all processes."""
    if not log_path.exists():
        return collections.Counter()
    return collections.Counter(log_path.read_text().split())


def task(name: str, tid: str, logp: pathlib.Path, deps: tuple[Any, ...] = (),
         parent: str | None = None, **inputs: Any) -> dict[str, Any]:
    """A task spec: ``deps`` are ids (required) or ``(id, False)`` (optional)."""
    dependencies = [{"id": d, "required": True} if isinstance(d, str)
                    else {"id": d[0], "required": d[1]} for d in deps]
    return {"name": name, "id": tid, "parent_id": parent, "dependencies": dependencies,
            "inputs": {"log": str(logp), "tag": tid, **inputs}}


def statuses(store: TaskStore | dict[str, Any], ids: Any) -> dict[str, str]:
    """The status of each task."""
    if isinstance(store, dict):
        return {i: store[i]["status"] for i in ids}
    return {i: store.need(i).status for i in ids}


def no_in_progress(store: TaskStore) -> None:
    """No task of ``store`` is reported as running."""
    assert [t.id for t in store.query({}) if t.status == "in_progress"] == []


# -- 1. persistence ---------------------------------------------------------------------------

def test_a_tree_made_and_run_by_one_process_is_seen_whole_by_others(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    spec = [task("procs_step", "a", logp),
            task("procs_frame", "b", logp, deps=("a",), parent="a"),
            task("procs_boom", "c", logp, parent="a"),
            task("procs_step", "d", logp, deps=("c",), parent="a"),
            task("procs_error_dict", "e", logp, parent="a")]
    call("create_run", path, {"tasks": spec, "root": "a"})
    expected_status = {"a": "completed", "b": "completed", "c": "failed", "d": "pending",
                       "e": "failed"}

    seen = call("read", path)  # a third process
    assert statuses(seen, "abcde") == expected_status
    assert seen["a"]["result"] == {"from_a": "a"}
    assert seen["b"]["result"] == {"frame": {"x": [1, 2, 3], "y": ["a", "b", "a"]}}
    assert seen["c"]["error"] == "boom: c got bad input"
    assert seen["e"] == {"status": "failed", "result": {"error": "nope", "detail": 7},
                         "error": "nope"}
    assert seen["d"]["error"] is None and seen["d"]["result"] is None

    # this process: the session's store, and a store object of its own on the same file
    for db in (create_session(path), TaskStore(path)):
        tm = TaskManager(db)
        got = {i: asyncio.run(tm.task_repository.get_task_by_id(i)) for i in "abcde"}
        assert {i: t.status for i, t in got.items()} == expected_status
        pd.testing.assert_frame_equal(
            got["b"].result, pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "a"]}))
        assert got["b"].inputs["from_a"] == "a"  # the merged inputs were kept
        assert got["c"].error == "boom: c got bad input"
    files = list((tmp_path / "t.db.results").iterdir())
    assert [f.name.startswith("b-") and f.suffix == ".pkl" for f in files] == [True]
    assert executions(logp) == {"a": 1, "b": 1, "c": 1, "e": 1}


def test_two_task_managers_of_one_process_share_the_file(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    tm1 = TaskManager(create_session(path))
    _create(tm1, [task("procs_step", "a", logp), task("procs_step", "b", logp, deps=("a",),
                                                          parent="a")])
    asyncio.run(tm1.distribute_task_tree(tm1.task_repository.tree_of("a")))
    tm2 = TaskManager(TaskStore(path))
    b = asyncio.run(tm2.task_repository.get_task_by_id("b"))
    assert (b.status, b.result, b.inputs["from_a"]) == ("completed", {"from_b": "b"}, "a")
    # tm2 runs the tree again: nothing re-executes
    asyncio.run(tm2.distribute_task_tree(tm2.task_repository.tree_of("a")))
    assert executions(logp) == {"a": 1, "b": 1}


def test_a_rerun_keeps_a_completed_task_whose_dependency_runs_again(tmp_path):
    """Regression: it was planned to run again, found completed by its claim, ran anyway
    and failed with 'its claim in the task store was lost'."""
    path, logp = tmp_path / "t.db", tmp_path / "log"
    tm = TaskManager(create_session(path))
    _create(tm, [task("procs_step", "up", logp),
                 task("procs_step", "down", logp, deps=("up",), parent="up")])
    _run_tree(tm, "up")
    tm.task_repository.update_now("up", status="pending")
    _run_tree(tm, "up")
    assert tm.last_result is not None and tm.last_result.by_state("failed") == []
    down = tm.db.need("down")
    assert (down.status, down.result, down.error) == ("completed", {"from_down": "down"}, None)
    assert executions(logp) == {"up": 2, "down": 1}


# -- 2. crash-resume ----------------------------------------------------------------------------

def test_a_killed_process_leaves_no_task_running_and_a_rerun_runs_exactly_the_rest(tmp_path):
    path, logp, marker = tmp_path / "t.db", tmp_path / "log", tmp_path / "blocked"
    spec = [task("procs_step", "t1", logp),
            task("procs_step", "t2", logp, deps=("t1",), parent="t1"),
            task("procs_block", "t3", logp, deps=("t2",), parent="t1", marker=str(marker)),
            task("procs_step", "t4", logp, deps=("t3",), parent="t1"),
            task("procs_step", "t5", logp, deps=("t4", ("t2", False)), parent="t1")]
    ids = ["t1", "t2", "t3", "t4", "t5"]
    proc = spawn("create_run", path, {"tasks": spec, "root": "t1"}, env={"PROCS_BLOCK": "1"})
    try:
        wait_file(marker)
        # while it runs, this process sees it running (a live claim is left alone)
        assert TaskStore(path).need("t3").status == "in_progress"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    seen = call("read", path)
    assert statuses(seen, ids) == {"t1": "completed", "t2": "completed", "t3": "failed",
                                   "t4": "pending", "t5": "pending"}
    assert seen["t3"]["error"] == (
        f"interrupted: the process running it (pid {proc.pid}) ended before it finished. "
        f"Run its tree again to run it again.")
    assert executions(logp) == {"t1": 1, "t2": 1, "t3": 1}

    db = TaskStore(path)
    tm = TaskManager(db)
    asyncio.run(tm.distribute_task_tree(tm.task_repository.tree_of("t1")))
    assert set(statuses(db, ids).values()) == {"completed"}
    assert db.need("t5").result == {"from_t5": "t5"}
    assert executions(logp) == {"t1": 1, "t2": 1, "t3": 2, "t4": 1, "t5": 1}


def test_a_task_left_running_by_a_dead_process_is_taken_over_by_a_run(tmp_path):
    """The claim of a dead owner is settled when the run reads it (no read before)."""
    path, logp, marker = tmp_path / "t.db", tmp_path / "log", tmp_path / "blocked"
    spec = [task("procs_block", "k", logp, marker=str(marker))]
    proc = spawn("create_run", path, {"tasks": spec, "root": "k"}, env={"PROCS_BLOCK": "1"})
    try:
        wait_file(marker)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    db = TaskStore(path)
    tm = TaskManager(db)
    asyncio.run(tm.distribute_task_tree(TaskTreeNode(db.need("k"))))
    k = db.need("k")
    assert (k.status, k.result, k.error) == ("completed", {"blocked": False}, None)
    assert executions(logp) == {"k": 2}


def test_a_dead_processs_task_is_not_running_in_the_stored_tree_either(tmp_path):
    """Regression: child tasks (get_child_tasks, build_task_tree) were read without
    settling dead claims, so the tree still showed the task in_progress."""
    path, logp, marker = tmp_path / "t.db", tmp_path / "log", tmp_path / "blocked"
    spec = [task("procs_step", "r", logp),
            task("procs_block", "k", logp, deps=("r",), parent="r", marker=str(marker))]
    proc = spawn("create_run", path, {"tasks": spec, "root": "r"}, env={"PROCS_BLOCK": "1"})
    try:
        wait_file(marker)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    repo = TaskManager(TaskStore(path)).task_repository
    tree = asyncio.run(repo.build_task_tree("r"))
    assert [(n.task.id, n.task.status) for n in tree] == [("r", "completed"),
                                                          ("k", "failed")]
    assert tree.calculate_status() != "in_progress"
    [k] = asyncio.run(repo.get_child_tasks("r"))
    assert (k.status, k.error) == ("failed", (
        f"interrupted: the process running it (pid {proc.pid}) ended before it finished. "
        f"Run its tree again to run it again."))


# -- 3. cancellation ----------------------------------------------------------------------------

async def _run_and_cancel(tm: TaskManager, root: TaskTreeNode, marker: pathlib.Path,
                          task_id: str, message: str) -> tuple[dict[str, Any], float]:
    run = asyncio.ensure_future(tm.distribute_task_tree(root, progress=False))
    while not marker.exists():
        assert not run.done(), run.exception()
        await asyncio.sleep(0.02)
    started = time.monotonic()
    answer = await tm.cancel_task(task_id, message)
    await run
    return answer, time.monotonic() - started


@pytest.mark.parametrize("name", ["procs_sleep_cancelable", "procs_async_cancelable"])
def test_a_running_cancelable_task_is_stopped_within_a_second(tmp_path, name):
    path, logp, marker = tmp_path / "t.db", tmp_path / "log", tmp_path / "m"
    tm = TaskManager(create_session(path))
    _create(tm, [task(name, "s", logp, marker=str(marker)),
                 task("procs_step", "needs", logp, deps=("s",), parent="s"),
                 task("procs_step", "maybe", logp, deps=(("s", False),), parent="s")])
    answer, took = asyncio.run(_run_and_cancel(tm, tm.task_repository.tree_of("s"), marker,
                                               "s", "User requested cancellation"))
    assert answer == {"status": "cancelled", "message": "User requested cancellation"}
    assert took < 3
    db = tm.db
    s = db.need("s")
    assert (s.status, s.error, s.result) == ("cancelled", "User requested cancellation", None)
    assert statuses(db, ["needs", "maybe"]) == {"needs": "pending", "maybe": "completed"}
    assert executions(logp) == {"s": 1, "maybe": 1}
    no_in_progress(db)


def test_a_running_task_that_is_not_cancelable_finishes_and_its_result_is_discarded(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    marker, gate_file = tmp_path / "m", tmp_path / "gate"
    tm = TaskManager(create_session(path))
    _create(tm, [task("procs_busy", "b", logp, marker=str(marker), gate=str(gate_file)),
                 task("procs_step", "after", logp, deps=("b",), parent="b")])

    async def scenario() -> None:
        run = asyncio.ensure_future(tm.distribute_task_tree(tm.task_repository.tree_of("b")))
        while not marker.exists():
            await asyncio.sleep(0.02)
        assert await tm.cancel_task("b", "stop it") == {"status": "cancelled",
                                                        "message": "stop it"}
        now = tm.db.need("b")  # marked at once, while it still runs
        assert (now.status, now.error) == ("cancelled", "stop it")
        gate_file.write_text("open")
        await run

    asyncio.run(scenario())
    b = tm.db.need("b")
    assert (b.status, b.error, b.result) == ("cancelled", "stop it", None)
    assert tm.db.need("after").status == "pending"
    assert executions(logp) == {"b": 1}  # it finished; "after" never started
    no_in_progress(tm.db)


def test_a_pending_task_cancelled_while_its_tree_runs_never_starts(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    marker, gate_file = tmp_path / "m", tmp_path / "gate"
    tm = TaskManager(create_session(path))
    _create(tm, [task("procs_gate", "first", logp, marker=str(marker), gate=str(gate_file)),
                 task("procs_step", "second", logp, deps=("first",), parent="first"),
                 task("procs_step", "third", logp, deps=("second",), parent="first"),
                 task("procs_step", "other", logp, deps=(("second", False),),
                      parent="first")])

    async def scenario() -> None:
        run = asyncio.ensure_future(tm.distribute_task_tree(
            tm.task_repository.tree_of("first")))
        while not marker.exists():
            await asyncio.sleep(0.02)
        assert (await tm.cancel_task("second"))["status"] == "cancelled"
        gate_file.write_text("open")
        await run

    asyncio.run(scenario())
    assert statuses(tm.db, ["first", "second", "third", "other"]) == {
        "first": "completed", "second": "cancelled", "third": "pending", "other": "completed"}
    assert tm.db.need("second").error == "Cancelled by user"
    assert executions(logp) == {"first": 1, "other": 1}
    # a re-run keeps it cancelled (it never started) until it is set pending again
    asyncio.run(tm.distribute_task_tree(tm.task_repository.tree_of("first")))
    assert tm.db.need("second").status == "cancelled"
    tm.task_repository.update_now("second", status="pending")
    asyncio.run(tm.distribute_task_tree(tm.task_repository.tree_of("first")))
    assert statuses(tm.db, ["second", "third"]) == {"second": "completed",
                                                    "third": "completed"}
    assert executions(logp) == {"first": 1, "other": 1, "second": 1, "third": 1}


def test_a_task_cancelled_before_its_run_runs_once_set_pending_again(tmp_path):
    """Regression: the cancel stayed in the process's cancel requests, so the run it was
    reset for was cancelled at once (cancelable executors)."""
    path, logp = tmp_path / "t.db", tmp_path / "log"
    tm = TaskManager(create_session(path))
    _create(tm, [task("procs_quick_cancelable", "q", logp)])
    assert asyncio.run(tm.cancel_task("q", "not now"))["status"] == "cancelled"
    tm.task_repository.update_now("q", status="pending")
    _run_tree(tm, "q")
    q = tm.db.need("q")
    assert (q.status, q.result, q.error) == ("completed", {"quick": True}, None)
    assert executions(logp) == {"q": 1}


def test_cancel_task_from_another_process_stops_a_running_cancelable_task(tmp_path):
    path, logp, marker = tmp_path / "t.db", tmp_path / "log", tmp_path / "m"
    tm = TaskManager(create_session(path))
    _create(tm, [task("procs_sleep_cancelable", "s", logp, marker=str(marker)),
                 task("procs_step", "next", logp, deps=("s",), parent="s")])

    async def scenario() -> float:
        run = asyncio.ensure_future(tm.distribute_task_tree(tm.task_repository.tree_of("s")))
        while not marker.exists():
            await asyncio.sleep(0.02)
        answer = await asyncio.to_thread(
            call, "cancel", path, {"id": "s", "message": "stopped from elsewhere"})
        assert answer == {"status": "cancelled", "message": "stopped from elsewhere"}
        cancelled = time.monotonic()
        await run
        return time.monotonic() - cancelled

    assert asyncio.run(scenario()) < 3
    s = tm.db.need("s")
    assert (s.status, s.error) == ("cancelled", "stopped from elsewhere")
    assert tm.db.need("next").status == "pending"
    assert executions(logp) == {"s": 1}


# -- 4. contention ------------------------------------------------------------------------------

def test_eight_processes_running_one_tree_execute_each_task_exactly_once(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    rnd = random.Random(13)
    ids = [f"n{i:02d}" for i in range(60)]
    spec = [task("procs_step", ids[0], logp, sleep=0.005)]
    for i in range(1, 60):
        deps = tuple(rnd.sample(ids[:i], min(i, rnd.choice([0, 1, 1, 2]))))
        if i % 7 == 0 and ids[i - 1] not in deps:
            deps = (*deps, (ids[i - 1], False))
        spec.append(task("procs_step", ids[i], logp, deps=deps, parent=ids[0], sleep=0.005))
    tm = TaskManager(create_session(path))
    _create(tm, spec)
    procs = [spawn("run", path, {"root": ids[0], "workers": 4}) for _ in range(8)]
    for p in procs:
        finish(p)
    assert executions(logp) == {i: 1 for i in ids}
    assert set(statuses(tm.db, ids).values()) == {"completed"}
    no_in_progress(tm.db)


def test_eight_processes_creating_and_running_their_own_trees_at_once(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    specs = []
    for p in range(8):
        ids = [f"p{p}-{i}" for i in range(12)]
        specs.append([task("procs_step", ids[0], logp)] + [
            task("procs_step", ids[i], logp, deps=(ids[i - 1],) if i % 3 else (),
                 parent=ids[0]) for i in range(1, 12)])
    procs = [spawn("create_run", path, {"tasks": s, "root": s[0]["id"]}) for s in specs]
    for proc in procs:
        finish(proc)
    db = TaskStore(path)
    rows = db.query({})
    assert len(rows) == 96
    assert {t.status for t in rows} == {"completed"}
    assert executions(logp) == {t.id: 1 for t in rows}


def test_a_run_waiting_for_another_process_reuses_what_that_one_completed(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    marker, gate_file = tmp_path / "m", tmp_path / "gate"
    spec = [task("procs_gate", "x", logp, marker=str(marker), gate=str(gate_file)),
            task("procs_step", "y", logp, deps=("x",), parent="x")]
    proc = spawn("create_run", path, {"tasks": spec, "root": "x"})
    events: list[tuple[str, str, str | None]] = []
    try:
        wait_file(marker)
        db = TaskStore(path)
        tm = TaskManager(db)

        def note(e: Any) -> None:
            if getattr(e.task, "key", None) == "x":
                events.append((e.kind.name, e.task.key, e.reason))

        async def scenario() -> None:
            run = asyncio.ensure_future(tm.distribute_task_tree(
                tm.task_repository.tree_of("x"), progress=False, callbacks=[note]))
            while not events:
                assert not run.done(), run.exception()
                await asyncio.sleep(0.02)
            gate_file.write_text("open")
            await asyncio.wait_for(run, 30)

        asyncio.run(scenario())
        finish(proc)
    finally:
        proc.kill()
        proc.communicate()
    assert events == [
        ("TASK_WAITING", "x", "running in another process or thread; waiting for it"),
        ("TASK_UP_TO_DATE", "x", "completed by another process while this run waited")]
    assert statuses(db, ["x", "y"]) == {"x": "completed", "y": "completed"}
    assert db.need("y").inputs["gated"] == "x"
    assert executions(logp) == {"x": 1, "y": 1}


# -- 5. timeouts and retries --------------------------------------------------------------------

def _run_tree(tm: TaskManager, root: str) -> None:
    asyncio.run(tm.distribute_task_tree(tm.task_repository.tree_of(root), progress=False))


@pytest.mark.parametrize("name", ["procs_timeout", "procs_c_sleep_timeout"])
def test_an_executor_timeout_fails_the_task(tmp_path, name):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    tm = TaskManager(create_session(path))
    _create(tm, [task(name, "slow", logp), task("procs_step", "then", logp, deps=("slow",),
                                                  parent="slow")])
    started = time.monotonic()
    _run_tree(tm, "slow")
    assert time.monotonic() - started < 15  # not the executor's 30 s
    slow = tm.db.need("slow")
    assert slow.status == "failed"
    assert slow.error is not None
    assert slow.error == (
        f"{name}[slow] ran longer than its timeout of 0.5s and was stopped; its partial "
        f"outputs were removed. Raise @executor({name!r}, timeout=...) or the task's "
        f"params['timeout'] if it needs longer.")
    assert tm.db.need("then").status == "pending"
    no_in_progress(tm.db)


def test_retries_of_an_executor_make_a_flaky_task_complete(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    tm = TaskManager(create_session(path))
    _create(tm, [task("procs_flaky", "f", logp)])
    _run_tree(tm, "f")
    f = tm.db.need("f")
    assert (f.status, f.result, f.error) == ("completed", {"attempts": 3}, None)
    assert executions(logp) == {"f": 3}


def test_params_retries_and_timeout_override_the_executors(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    tm = TaskManager(create_session(path))
    _create(tm, [{**task("procs_flaky_once", "more", logp), "params": {"retries": 2}},
                 {**task("procs_flaky", "fewer", logp), "params": {"retries": 0}},
                 {**task("procs_timeout", "longer", logp, fail_times=0),
                  "params": {"timeout": 0.1}}])
    for root in ("more", "fewer", "longer"):
        _run_tree(tm, root)
    assert tm.db.need("more").result == {"attempts": 3}
    fewer = tm.db.need("fewer")
    assert (fewer.status, fewer.error) == ("failed", "flaky: attempt 1 failed")
    longer = tm.db.need("longer")
    assert longer.status == "failed"
    assert "ran longer than its timeout of 0.1s" in (longer.error or "")
    assert executions(logp) == {"more": 3, "fewer": 1, "longer": 1}


# -- 6. history and progress --------------------------------------------------------------------

def test_tree_runs_are_in_the_run_history_and_the_progress_bar_works(tmp_path, capsys):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    tm = TaskManager(create_session(path))
    _create(tm, [task("procs_step", "h1", logp),
                 task("procs_boom", "h2", logp, deps=("h1",), parent="h1"),
                 task("procs_step", "h3", logp, deps=("h2",), parent="h1")])
    asyncio.run(tm.distribute_task_tree(tm.task_repository.tree_of("h1"), progress=True))
    rows = pipeflow.history(full=True)
    got = sorted(zip(rows["family"], rows["status"]))
    assert got == [("procs_boom", "failed"), ("procs_step", "completed"),
                   ("procs_step", "skipped")]
    assert len(pipeflow.runs()) == 1
    capsys.readouterr()  # drawn without an error


# -- 7. the awaiting coroutine cancelled, Ctrl-C ------------------------------------------------

def test_cancelling_the_awaiting_coroutine_stops_the_run_and_a_rerun_finishes(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    gate_file = tmp_path / "gate"
    tm = TaskManager(create_session(path))
    _create(tm, [task("procs_gate", "g1", logp, marker=str(tmp_path / "m1"),
                      gate=str(gate_file)),
                 task("procs_gate", "g2", logp, marker=str(tmp_path / "m2"),
                      gate=str(gate_file), parent="g1"),
                 task("procs_step", "later", logp, deps=("g1", "g2"), parent="g1")])

    async def scenario() -> None:
        run = asyncio.ensure_future(tm.distribute_task_tree(tm.task_repository.tree_of("g1")))
        while not ((tmp_path / "m1").exists() and (tmp_path / "m2").exists()):
            await asyncio.sleep(0.02)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run

    asyncio.run(scenario())
    assert statuses(tm.db, ["g1", "g2", "later"]) == {
        "g1": "cancelled", "g2": "cancelled", "later": "pending"}
    assert tm.db.need("g1").error == "the run was cancelled while it ran"
    no_in_progress(tm.db)
    gate_file.write_text("open")
    _run_tree(tm, "g1")
    assert set(statuses(tm.db, ["g1", "g2", "later"]).values()) == {"completed"}
    assert executions(logp) == {"g1": 2, "g2": 2, "later": 1}


def test_ctrl_c_in_a_process_running_a_tree_leaves_nothing_running(tmp_path):
    path, logp = tmp_path / "t.db", tmp_path / "log"
    marker, gate_file = tmp_path / "m", tmp_path / "gate"
    spec = [task("procs_gate", "g", logp, marker=str(marker), gate=str(gate_file)),
            task("procs_step", "after", logp, deps=("g",), parent="g")]
    proc = spawn("create_run", path, {"tasks": spec, "root": "g"})
    try:
        wait_file(marker)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    db = TaskStore(path)
    assert statuses(db, ["g", "after"]) == {"g": "cancelled", "after": "pending"}
    assert db.need("g").error == "the run was cancelled while it ran"
    no_in_progress(db)
    gate_file.write_text("open")
    tm = TaskManager(db)
    asyncio.run(tm.distribute_task_tree(tm.task_repository.tree_of("g")))
    assert statuses(db, ["g", "after"]) == {"g": "completed", "after": "completed"}
    assert executions(logp) == {"g": 2, "after": 1}


def test_a_run_waiting_for_a_task_another_process_runs_takes_it_over_when_that_one_dies(
        tmp_path):
    path, logp, marker = tmp_path / "t.db", tmp_path / "log", tmp_path / "blocked"
    spec = [task("procs_block", "k", logp, marker=str(marker)),
            task("procs_step", "after", logp, deps=("k",), parent="k")]
    proc = spawn("create_run", path, {"tasks": spec, "root": "k"}, env={"PROCS_BLOCK": "1"})
    waiting: list[str] = []
    try:
        wait_file(marker)
        db = TaskStore(path)
        tm = TaskManager(db)

        async def scenario() -> None:
            run = asyncio.ensure_future(tm.distribute_task_tree(
                tm.task_repository.tree_of("k"), progress=False,
                callbacks=[lambda e: waiting.append(e.kind.name)
                           if e.kind.name == "TASK_WAITING" else None]))
            while not waiting:
                assert not run.done(), run.exception()
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGKILL)  # not reaped yet: a zombie is dead too
            await asyncio.wait_for(run, 30)

        asyncio.run(scenario())
    finally:
        proc.kill()
        proc.communicate()
    assert statuses(db, ["k", "after"]) == {"k": "completed", "after": "completed"}
    assert executions(logp) == {"k": 2, "after": 1}
