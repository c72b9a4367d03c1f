"""Crash safety with real processes and real signals.

* ``kill -9`` at random moments while a task writes large outputs (parquet, csv, json,
  pickle; several outputs plus metadata): a task never reports complete unless its outputs
  load back exactly as saved, the next run recomputes it and leaves no temp file behind.
* Ctrl-C (SIGINT to the main thread) during a run, with workers=1 and with process
  workers: KeyboardInterrupt promptly, no child process, no temp file, finished upstream
  work kept, and the next run in the same interpreter succeeds.

``pytest -s tests/test_crash.py`` prints one summary line per format.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import threading
import time
import traceback

import luigi
import numpy as np
import pandas as pd
import psutil
import pytest

import pipeflow
from pipeflow.plan import Status

FORK = multiprocessing.get_context("fork")
UNIFORM_POINTS = 20  # kill delays uniform in [0, 1.1 T]
LATE_POINTS = 6  # kill delays in [0.8 T, 1.0 T], where outputs are published and committed
RECOVER_EVERY = 3  # run the task in the parent after every 3rd kill (and after the last)


# -- the data each format's task saves --------------------------------------------------------

def _frame(seed: int, n: int, floats: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {
        "i": np.arange(n, dtype="int64"),
        "x": rng.integers(-10**12, 10**12, n),
        "s": [f"row-{v}" for v in rng.integers(0, 10**7, n)],
    }
    if floats:  # CSV text does not promise float round trips, so CSV gets none
        cols["f"] = rng.random(n)
    return pd.DataFrame(cols)


def _build(fmt: str) -> dict:
    """Outputs and metadata for one format: deterministic, big enough to take a while."""
    if fmt == "parquet":
        outputs = {"a": _frame(1, 300_000), "b": _frame(2, 300_000)}
    elif fmt == "csv":
        indexed = _frame(4, 100_000, floats=False).set_index("i")  # + an index sidecar file
        outputs = {"a": _frame(3, 100_000, floats=False), "b": indexed}
    elif fmt == "json":
        outputs = {k: [{"i": i, "k": k, "s": f"v{(i * 7919 + seed) % 100_003}", "l": [i, -i]}
                       for i in range(8_000)]
                   for seed, k in enumerate("abc")}
    else:  # pickle
        outputs = {
            "a": [(i, f"s{i}", i * 0.5) for i in range(200_000)],
            "b": {f"k{i}": [i, str(i)] for i in range(40_000)},
            "c": _frame(5, 600_000),
        }
    return {"outputs": outputs, "meta": {"format": fmt, "outputs": sorted(outputs)}}


_DATA: dict[str, dict] = {}


def _data(fmt: str) -> dict:
    # Built in the parent before any fork, so children save the very same objects.
    if fmt not in _DATA:
        _DATA[fmt] = _build(fmt)
    return _DATA[fmt]


class _Saves:
    fmt = ""

    def run(self):
        data = _data(self.fmt)
        self.save(data["outputs"])
        self.saveMeta(data["meta"])


class CrashParquet(_Saves, pipeflow.tasks.TaskPqPandas):
    fmt = "parquet"
    persist = ["a", "b"]


class CrashCSV(_Saves, pipeflow.tasks.TaskCSVPandas):
    fmt = "csv"
    persist = ["a", "b"]


class CrashJson(_Saves, pipeflow.tasks.TaskJson):
    fmt = "json"
    persist = ["a", "b", "c"]


class CrashPickle(_Saves, pipeflow.tasks.TaskPickle):
    fmt = "pickle"
    persist = ["a", "b", "c"]


TASKS = {"parquet": CrashParquet, "csv": CrashCSV, "json": CrashJson, "pickle": CrashPickle}


# -- helpers ----------------------------------------------------------------------------------

def _temp_files(root) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if ".tmp-" in p.name)


def _fresh(cls):
    luigi.task_register.Register.clear_instance_cache()
    return cls()


def _reports_complete(task) -> bool:
    by_task = task.complete()
    by_preview = pipeflow.preview(task, print_it=False).status()[task.task_id] is Status.COMPLETE
    return by_task or by_preview


def _problem(task, fmt: str) -> str | None:
    """Why the task's stored outputs differ from what it saves (None: identical)."""
    expected = _data(fmt)
    try:
        loaded = task.outputLoad(as_dict=True)
        meta = task.outputLoadMeta()
    except Exception as exc:  # noqa: BLE001 - reported as a wrong output
        return f"loading failed: {type(exc).__name__}: {exc}"
    if sorted(loaded) != sorted(expected["outputs"]):
        return f"outputs {sorted(loaded)}"
    for key, want in expected["outputs"].items():
        got = loaded[key]
        if isinstance(want, pd.DataFrame):
            try:
                pd.testing.assert_frame_equal(got, want, check_exact=True)
            except AssertionError as exc:
                return f"output {key!r} differs: {exc}"
        elif got != want:
            return f"output {key!r} differs"
    if meta != expected["meta"]:
        return f"metadata differs: {meta!r}"
    return None


def _child(task) -> None:
    code = 1
    try:
        pipeflow.run(task, progress=False)
        code = 0
    except BaseException:  # noqa: BLE001 - the parent sees the exit code
        traceback.print_exc()
    finally:
        os._exit(code)  # never pytest's atexit handlers in a fork


def _run_in_child(task, kill_after: float | None) -> tuple[int, float]:
    """Run the task in a forked child, SIGKILLed after ``kill_after`` seconds (if alive)."""
    proc = FORK.Process(target=_child, args=(task,))
    started = time.monotonic()
    proc.start()
    if kill_after is not None:
        time.sleep(kill_after)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    proc.join(60)
    assert not proc.is_alive(), "the child did not end"
    return proc.exitcode, time.monotonic() - started


# -- kill -9 at random moments ----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(TASKS))
def test_kill_9_never_leaves_a_task_complete_with_wrong_outputs(fmt, data_dir):
    cls = TASKS[fmt]
    _data(fmt)

    # A first run in this process imports whatever the writers import lazily, so that
    # forked children start warm, and shows the data round-trips exactly.
    assert pipeflow.run(_fresh(cls), progress=False)
    assert _problem(_fresh(cls), fmt) is None
    _fresh(cls).reset(confirm=False)

    # Forked runs nobody kills: how long the task takes (T, the median of three).
    durations = []
    for _ in range(3):
        code, took = _run_in_child(_fresh(cls), None)
        assert code == 0
        durations.append(took)
        task = _fresh(cls)
        assert _reports_complete(task)
        assert _temp_files(data_dir) == []
        task.reset(confirm=False)
        assert not _fresh(cls).complete()
    duration = sorted(durations)[1]

    rng = random.Random(f"kill-9-{fmt}")
    delays = [rng.uniform(0, 1.1 * duration) for _ in range(UNIFORM_POINTS)]
    delays += [rng.uniform(0.8 * duration, 1.0 * duration) for _ in range(LATE_POINTS)]
    killed = completed = debris = recoveries = 0
    wrong: list[str] = []
    for n, delay in enumerate(delays):
        code, _ = _run_in_child(_fresh(cls), delay)
        assert code in (0, -signal.SIGKILL), f"the child failed (exit code {code})"
        task = _fresh(cls)
        if _reports_complete(task):
            completed += 1
            problem = _problem(task, fmt)
            if problem is not None:
                wrong.append(f"kill after {delay:.3f}s (T={duration:.3f}s): {problem}")
            task.reset(confirm=False)
            continue
        assert code != 0, "a run that finished left its task incomplete"
        killed += 1
        debris += bool(_temp_files(data_dir))
        if n % RECOVER_EVERY == RECOVER_EVERY - 1 or n == len(delays) - 1:
            # The next run recomputes the task and removes what the killed runs left.
            recoveries += 1
            result = pipeflow.run(task, progress=False)
            assert result
            assert result.tasks[task.task_id].state == "completed"
            task = _fresh(cls)
            assert task.complete()
            assert _problem(task, fmt) is None
            assert _temp_files(data_dir) == []
            task.reset(confirm=False)
        # else: the next child starts on top of what this killed run left
    print(f"\n[kill -9 {fmt}] kill points: {len(delays)}, killed before complete: {killed} "
          f"(left temp files: {debris}), completed: {completed}, complete but WRONG: "
          f"{len(wrong)}; T={duration:.3f}s, recovery runs: {recoveries}")
    assert wrong == []
    assert killed > 0  # some kills did land before the commit


# -- Ctrl-C -----------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_the_run_cleanly_and_the_next_run_works(workers, data_dir, tmp_path):
    log = tmp_path / "runs.log"
    started = tmp_path / "slow-started"
    fast = tmp_path / "fast"
    frame = _frame(7, 200_000)

    def note(name):
        with open(log, "a") as fh:
            fh.write(name + "\n")

    class Quick(pipeflow.tasks.TaskPickle):
        def run(self):
            note("quick")
            self.save(list(range(1000)))

    @pipeflow.requires(Quick)
    class Slow(pipeflow.tasks.TaskPqPandas):
        persist = ["a", "b"]

        def run(self):
            note("slow")
            self.save({"a": frame, "b": frame.head(10)})  # temp files exist from here on
            self.saveMeta({"n": len(self.inputLoad())})
            started.touch()
            for _ in range(3000):
                if fast.exists():
                    break
                time.sleep(0.01)

    running = threading.Event()
    running.set()
    sent: list[float] = []

    def interrupt():
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        if running.is_set():  # never interrupt pytest itself
            sent.append(time.monotonic())
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    timer = threading.Timer(0, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeflow.run(Slow(), workers=workers, progress=False)
        caught = time.monotonic()
    finally:
        running.clear()
        timer.join()
    assert sent, "the slow task never started"
    assert caught - sent[0] < 2.0, f"KeyboardInterrupt took {caught - sent[0]:.2f}s"

    me = psutil.Process()
    deadline = time.monotonic() + 1.0
    while me.children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert me.children(recursive=True) == []
    assert _temp_files(data_dir) == []
    luigi.task_register.Register.clear_instance_cache()
    assert Quick().complete()
    assert not Slow().complete()
    assert log.read_text().split() == ["quick", "slow"]

    fast.touch()
    result = pipeflow.run(Slow(), workers=workers, progress=False)
    assert result
    luigi.task_register.Register.clear_instance_cache()
    assert Slow().complete()
    a, b = Slow().outputLoad()
    pd.testing.assert_frame_equal(a, frame)
    pd.testing.assert_frame_equal(b, frame.head(10))
    assert Slow().outputLoadMeta() == {"n": 1000}
    assert log.read_text().split() == ["quick", "slow", "slow"]  # Quick was not rerun
    assert _temp_files(data_dir) == []
    assert me.children(recursive=True) == []
