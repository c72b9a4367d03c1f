#!/usr/bin/env python
"""Time pipeflow.run with workers=1 and workers=2 on independent CPU-bound tasks.

``--tasks`` (default 8) independent tasks, each a :class:`pipeflow.tasks.TaskPickle` with
``IntParameter``s ``i`` and ``n`` (the step count) that spends about ``--seconds``
(default 0.5) in a pure-Python loop (calibrated once at startup on this machine) and saves
a small dict; a
:class:`pipeflow.tasks.TaskAggregator` groups them. Rows, each measured in a fresh data dir
(``pipeflow.set_dir(tempdir)``) so that every task runs:

* ``serial loop``: the same work functions called one after another in this process (the
  floor of ``workers=1``).
* ``pipeflow workers=1``: ``pipeflow.run(root, workers=1)``.
* ``pipeflow workers=2``: ``pipeflow.run(root, workers=2)`` with pipeflow's default
  executor for several workers.
* ``pipeflow workers=2, executor='thread'``: only if ``pipeflow.run`` has an ``executor``
  keyword (checked with ``inspect.signature``); otherwise a note says it was skipped.
* ``ProcessPoolExecutor(2).map``: the same work functions on
  ``concurrent.futures.ProcessPoolExecutor(2)``, pool start-up included (the floor of
  ``workers=2``).

Every task records its process id and start/end wall-clock times, so the table also shows
how many processes ran the tasks and how many overlapped at most. The loaded results are
checked against the serial loop's; the script exits non-zero if a run fails or a result is
wrong. Medians over ``--repeat`` repetitions; the order of the rows rotates between
repetitions. The task classes live at module level so that process workers can find them.

    python benchmarks/bench_parallel.py                    # 8 tasks x 0.5 s, 3 repetitions
    python benchmarks/bench_parallel.py --quick            # 4 tasks x 0.2 s, 1 repetition
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import gc
import inspect
import multiprocessing
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from _common import add_run_options, load_average, pipeflow_commit, wait_quiet

import pipeflow
import pipeflow.tasks

GOAL = 1.8  # workers=1 / workers=2 on a 2-core machine


# -- the work ----------------------------------------------------------------------------

def burn(n: int, seed: int = 0) -> int:
    """Pure-Python CPU work (holds the GIL): ``n`` steps of a small LCG."""
    x = seed
    for k in range(n):
        x = (x * 1103515245 + k) & 0x7FFFFFFF
    return x


def work(n: int, i: int) -> dict[str, Any]:
    """One task's work and where/when it ran."""
    start = time.time()
    x = burn(n, seed=i)
    return {"i": i, "x": x, "pid": os.getpid(), "start": start, "end": time.time()}


def calibrate(seconds: float) -> tuple[int, list[float]]:
    """Steps of :func:`burn` that take about ``seconds`` here, and 3 timings of it."""
    n = 50_000
    while True:  # grow until one call takes >= 50 ms, for a usable rate
        t0 = time.perf_counter()
        burn(n)
        dt = time.perf_counter() - t0
        if dt >= 0.05:
            break
        n *= 2
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        burn(n)
        rates.append(n / (time.perf_counter() - t0))
    steps = max(1, int(max(rates) * seconds))
    checks = []
    for _ in range(3):
        t0 = time.perf_counter()
        burn(steps)
        checks.append(time.perf_counter() - t0)
    return steps, checks


# -- the tasks (module level, so that process workers can import them) ---------------------

class Work(pipeflow.tasks.TaskPickle):
    """``n`` steps of CPU work; saves what it computed and where it ran."""

    i = pipeflow.IntParameter()
    n = pipeflow.IntParameter()

    def run(self) -> None:
        self.save(work(self.n, self.i))


class AllWork(pipeflow.tasks.TaskAggregator):
    """Groups ``tasks`` independent Work tasks."""

    tasks = pipeflow.IntParameter()
    n = pipeflow.IntParameter()

    def run(self) -> Any:
        for i in range(self.tasks):
            yield Work(i=i, n=self.n)


class BenchFailure(Exception):
    """A run failed or a result is wrong."""


# -- measuring ---------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    times: list[float] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # distinct worker processes, per repeat
    overlap: list[int] = field(default_factory=list)  # peak tasks running at once
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def peak_overlap(records: list[dict[str, Any]]) -> int:
    """The largest number of tasks whose [start, end] intervals overlap."""
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records],
                    key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


def record(row: Row, elapsed: float, records: list[dict[str, Any]],
           expected: dict[int, int]) -> None:
    got = {r["i"]: r["x"] for r in records}
    if got != expected:
        wrong = sorted(k for k in expected if got.get(k) != expected[k])
        raise BenchFailure(f"{row.name}: wrong or missing results for tasks {wrong}")
    row.times.append(elapsed)
    row.pids.append(len({r["pid"] for r in records}))
    row.overlap.append(peak_overlap(records))


def measure_serial(row: Row, n: int, tasks: int, expected: dict[int, int]) -> None:
    gc.collect()
    t0 = time.perf_counter()
    records = [work(n, i) for i in range(tasks)]
    elapsed = time.perf_counter() - t0
    if not expected:
        expected.update({r["i"]: r["x"] for r in records})
    record(row, elapsed, records, expected)


def measure_pool(row: Row, n: int, tasks: int, workers: int,
                 expected: dict[int, int]) -> None:
    gc.collect()
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(workers) as pool:
        records = list(pool.map(work, [n] * tasks, range(tasks)))
    elapsed = time.perf_counter() - t0
    record(row, elapsed, records, expected)


def measure_pipeflow(row: Row, n: int, tasks: int, run_kwargs: dict[str, Any],
                     expected: dict[int, int], tmp_root: str | None) -> None:
    data = tempfile.mkdtemp(prefix="pipeflow-bench-parallel-", dir=tmp_root)
    try:
        pipeflow.set_dir(data)
        root = AllWork(tasks=tasks, n=n)
        gc.collect()
        t0 = time.perf_counter()
        result = pipeflow.run(root, execution_summary=False, **run_kwargs)
        elapsed = time.perf_counter() - t0
        done = [r for r in result.by_state("completed") if isinstance(r.task, Work)]
        if not result or len(done) != tasks:
            raise BenchFailure(f"{row.name}: the run completed {len(done)} of {tasks} tasks: "
                               f"{result!r}")
        records = [Work(i=i, n=n).outputLoad() for i in range(tasks)]
        record(row, elapsed, records, expected)
    finally:
        shutil.rmtree(data, ignore_errors=True)


# -- reporting ---------------------------------------------------------------------------

def run_executor_param() -> inspect.Parameter | None:
    return inspect.signature(pipeflow.run).parameters.get("executor")


def header(args: argparse.Namespace, commit: str) -> str:
    ex = run_executor_param()
    ex_note = (f"pipeflow.run has executor= (default {ex.default!r})" if ex is not None
               else "pipeflow.run has no executor= keyword")
    return "\n".join([
        "pipeflow parallel speed-up benchmark",
        f"date:      {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"command:   {shlex.join([sys.executable, *sys.argv])}",
        f"python:    {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.platform()}",
        f"versions:  pipeflow {pipeflow.__version__} (commit {commit}), "
        f"luigi {version('luigi')}, pyarrow {version('pyarrow')}, pandas {version('pandas')}",
        f"cpus:      os.cpu_count()={os.cpu_count()}, {load_average()} at start, "
        f"multiprocessing start method {multiprocessing.get_start_method()!r}",
        f"settings:  tasks={args.tasks}, seconds={args.seconds}, repeat={args.repeat}, "
        f"pipeflow.settings.fsync={pipeflow.settings.fsync}; {ex_note}",
    ])


def table(rows: list[Row], baselines: dict[str, tuple[str, str]]) -> str:
    """``baselines``: row name -> (name of the row compared with, how the ratio reads)."""
    by_name = {r.name: r for r in rows}
    cols = ["run", "median s", "min s", "max s", "processes", "max overlap", "ratio",
            "ratio is", "note"]
    lines = []
    for r in rows:
        ratio, what = "", ""
        if r.name in baselines:
            other, what = baselines[r.name]
            base = by_name.get(other)
            if base is not None and base.times:
                num, den = ((base.median, r.median) if what.startswith("speed-up")
                            else (r.median, base.median))
                ratio = f"{num / den:.2f}x"
            else:
                ratio, what = "", ""
        pids = sorted(set(r.pids))
        overlap = sorted(set(r.overlap))
        lines.append([
            r.name, f"{r.median:.3f}", f"{min(r.times):.3f}", f"{max(r.times):.3f}",
            "/".join(map(str, pids)), "/".join(map(str, overlap)), ratio, what, r.note,
        ])
    widths = [max(len(c), *(len(line[k]) for line in lines)) for k, c in enumerate(cols)]
    right = {1, 2, 3, 4, 5, 6}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if k in right else c.ljust(w)
                         for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(cols), fmt(["-" * w for w in widths]), *map(fmt, lines)])


# -- main --------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=None,
                    help="independent tasks (default 8; 4 with --quick)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="target CPU time per task (default 0.5; 0.2 with --quick)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="repetitions; medians are reported (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 4 tasks x 0.2 s, 1 repetition unless given")
    add_run_options(ap, f"the speed-up is below {GOAL}x", "where the temp data dirs go")
    args = ap.parse_args(argv)
    args.tasks = args.tasks if args.tasks is not None else (4 if args.quick else 8)
    args.seconds = args.seconds if args.seconds is not None else (0.2 if args.quick else 0.5)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if args.tasks < 1 or args.repeat < 1 or args.seconds <= 0:
        ap.error("--tasks and --repeat must be >= 1, --seconds > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pipeflow.settings.execution_summary = False
    commit = pipeflow_commit()  # of the sources imported, before any waiting
    wait_quiet(args.wait_quiet)
    print(header(args, commit), flush=True)

    n, checks = calibrate(args.seconds)
    print(f"calibration: burn(n={n:,}) (pure-Python loop, holds the GIL) took "
          f"{statistics.median(checks):.3f}s median of 3 "
          f"({', '.join(f'{c:.3f}' for c in checks)}) for a target of {args.seconds}s; "
          f"{args.tasks} tasks = {args.tasks * statistics.median(checks):.2f}s of CPU work",
          flush=True)

    workers = 2
    ex = run_executor_param()
    serial = Row("serial loop (in-process, floor)", note="the work functions, one by one")
    w1 = Row("pipeflow workers=1")
    w2 = Row("pipeflow workers=2",
             note=(f"default executor (executor={ex.default!r})" if ex is not None
                   else "no executor= keyword: pipeflow's only executor"))
    wt = Row("pipeflow workers=2, executor='thread'") if ex is not None else None
    pool = Row(f"ProcessPoolExecutor({workers}).map (floor)", note="pool start-up included")
    rows = [r for r in (serial, w1, w2, wt, pool) if r is not None]
    expected: dict[int, int] = {}
    # the serial loop must run first once: it provides the expected results
    measure_serial(Row("warm-up"), n, args.tasks, expected)

    steps: list[tuple[Row, Callable[[], None]]] = [
        (serial, lambda: measure_serial(serial, n, args.tasks, expected)),
        (w1, lambda: measure_pipeflow(w1, n, args.tasks, {"workers": 1}, expected,
                                      args.tmpdir)),
        (w2, lambda: measure_pipeflow(w2, n, args.tasks, {"workers": workers}, expected,
                                      args.tmpdir)),
        (pool, lambda: measure_pool(pool, n, args.tasks, workers, expected)),
    ]
    if wt is not None:
        steps.insert(3, (wt, lambda: measure_pipeflow(
            wt, n, args.tasks, {"workers": workers, "executor": "thread"}, expected,
            args.tmpdir)))

    started = time.perf_counter()
    try:
        for rep in range(args.repeat):
            shift = rep % len(steps)
            for row, step in steps[shift:] + steps[:shift]:
                t0 = time.perf_counter()
                step()
                print(f"  repeat {rep + 1}/{args.repeat} {row.name}: "
                      f"{time.perf_counter() - t0:.2f}s", file=sys.stderr, flush=True)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    baselines = {
        w1.name: (serial.name, "time vs serial loop"),
        w2.name: (w1.name, "speed-up vs workers=1"),
        pool.name: (serial.name, "speed-up vs serial loop"),
    }
    if wt is not None:
        baselines[wt.name] = (w1.name, "speed-up vs workers=1")
    print()
    print(f"{args.tasks} independent tasks of ~{args.seconds}s CPU each, medians of "
          f"{args.repeat}; 'processes' = distinct process ids that ran the tasks, "
          f"'max overlap' = most tasks running at once (values over the repeats)")
    print()
    print(table(rows, baselines))
    print()
    speedup = w1.median / w2.median
    print(f"speed-up workers=1 / workers=2: {speedup:.2f}x (goal >= {GOAL}x on a 2-core "
          f"machine) -> {'MET' if speedup >= GOAL else 'NOT MET'}")
    print(f"pipeflow workers=2 vs the ProcessPoolExecutor({workers}) floor: "
          f"{w2.median / pool.median:.2f}x the time "
          f"(the floor's own speed-up over the serial loop: "
          f"{serial.median / pool.median:.2f}x)")
    if wt is None:
        print("note: pipeflow.run has no executor= keyword, so the executor='thread' row was "
              "skipped; workers=2 runs on pipeflow's only executor")
    else:
        print(f"speed-up workers=1 / workers=2 executor='thread': "
              f"{w1.median / wt.median:.2f}x")
    print("checks: every run completed all tasks with the expected results: OK")
    print(f"\ntotal wall time {time.perf_counter() - started:.1f}s; {load_average()} at end")
    if args.check_goal and speedup < GOAL:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
