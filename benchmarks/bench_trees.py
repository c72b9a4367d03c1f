#!/usr/bin/env python
"""Time task trees (``pipeflow.trees``): N tasks created and run as one tree, against the
same graph as task classes, and against apflow itself when it is installed in a venv.

Shapes (as in bench_scheduling.py; index N-1 is the sink):

* ``chain``: task i depends on task i-1.
* ``wide``: N-1 independent tasks, and the root depending on all of them.
* ``diamond``: layers of width 10, each task depending on the 10 tasks of the layer before,
  and the root depending on the last layer (N+1 tasks).

The tree, per shape and repeat, in a fresh store file: the root is created first (no
dependencies), then the N-1 others with ``parent_id=root.id`` and their dependencies, then
``update_task(root.id, dependencies=...)`` (an aggregating root, apflow's pattern); the
``TaskTreeNode`` has every task as a child of the root. Timed separately: *create* (the N
``create_task`` awaits, the update, the nodes) and *run* (``distribute_task_tree``). Every
task runs the executor ``bench_step``: ``{"value": inputs.get("value", -1) + 1}`` (its
inputs merged with its dependencies' results by apflow's rule), so the chain's root ends
with ``value == N-1``; the run is checked (every task completed, the root's value).

The task-class equivalent: one ``TaskJson`` class, an instance per node whose
``requires()`` are its dependencies and whose ``run()`` merges its inputs' saved dicts the
same way, calls the same function and saves its result; ``pipeflow.run(root)``. Task
classes build their graph inside ``run``, so "run" is the whole thing for them.

Workers: trees run on thread workers (``TaskManager``'s default: 8). Both are measured at
each ``--workers`` count: trees with ``workers=w``; task classes with ``workers=1`` inline
(their default) and ``workers>1`` with ``executor='thread'``.

apflow (``--apflow PYTHON``, a venv's python with ``apflow==0.18.2``): the same tree in a
child process, with apflow's ``create_session(path=...)`` (DuckDB), ``TaskManager``,
``create_task`` (``params={'executor_id': 'bench_step'}``, ``parent_id=root``) and
``distribute_task_tree``. apflow re-reads the whole stored tree after every completed task
(its run time grows faster than N^2), so it is measured at ``--apflow-n`` sizes (default
10,20) and compared with pipeflow's trees at the same sizes.

    python benchmarks/bench_trees.py --n 10000 --repeat 3 --tmpdir /dev/shm
    python benchmarks/bench_trees.py --quick
    python benchmarks/bench_trees.py --quick --apflow /tmp/apflow-venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import gc
import json
import os
import platform
import pstats
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import luigi.task_register
from _common import load_average, pipeflow_commit, wait_quiet
from _shapes import SHAPES, shape_deps

import pipeflow
from pipeflow.tasks import TaskJson
from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor
from pipeflow.trees.manager import DEFAULT_WORKERS

EXECUTOR_ID = "bench_step"
#: the most trees' run (all pending) may take, as a multiple of task classes' (same workers)
GOAL = 2.0
#: the goal is about large trees: below this many tasks a run's fixed costs (a thread, the
#: run history, the store's first connection) are most of it
GOAL_MIN_N = 1000


class BenchFailure(Exception):
    """A run failed or its results are not what the graph implies."""


def step(inputs: Mapping[str, Any]) -> dict[str, int]:
    """What every task does: one more than the merged ``value`` (0 without dependencies)."""
    return {"value": int(inputs.get("value", -1)) + 1}


executor(EXECUTOR_ID, description="bench_trees.py: one more than the merged value")(step)


def merge(inputs: dict[str, Any], results: list[Any], ids: list[Any]) -> dict[str, Any]:
    """apflow 0.18's merge rule, as pipeflow.trees.running.merged_inputs applies it."""
    for dep_id, r in zip(ids, results):
        if r is None:
            continue
        if isinstance(r, Mapping) and "result" in r:
            r = r["result"]
        if isinstance(r, Mapping):
            inputs.update(r)
        else:
            inputs[dep_id] = r
    return inputs


def expected_root_value(shape: str, deps: list[tuple[int, ...]]) -> int:
    """The root's ``value`` after a run: the length of its longest dependency path."""
    depth = [0] * len(deps)
    for i, d in enumerate(deps):
        depth[i] = 1 + max((depth[j] for j in d), default=-1)
    return depth[-1]


# -- task classes -----------------------------------------------------------------------------

class ClassStep(TaskJson):
    """The tree's node as a task class: requires its dependencies, merges, saves."""

    shape = pipeflow.Parameter()
    i = pipeflow.IntParameter()
    DEPS: ClassVar[dict[str, list[tuple[int, ...]]]] = {}

    def requires(self) -> list[ClassStep]:
        return [ClassStep(shape=self.shape, i=j) for j in ClassStep.DEPS[self.shape][self.i]]

    def run(self) -> None:
        deps = ClassStep.DEPS[self.shape][self.i]
        inputs: dict[str, Any] = {"i": self.i}
        if deps:
            loaded = self.inputLoad()
            merge(inputs, loaded if isinstance(loaded, list) else [loaded], list(deps))
        self.save(step(inputs))


# -- measuring --------------------------------------------------------------------------------

@dataclass
class Row:
    shape: str
    tasks: int
    op: str
    times: list[float] = field(default_factory=list)
    baseline: str | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: dict[tuple[str, int, str], Row] = {}
        self.profiled = False

    def row(self, shape: str, tasks: int, op: str, baseline: str | None = None,
            note: str = "") -> Row:
        key = (shape, tasks, op)
        if key not in self.rows:
            self.rows[key] = Row(shape, tasks, op, baseline=baseline, note=note)
        return self.rows[key]

    def fresh_dir(self) -> str:
        return tempfile.mkdtemp(prefix="pipeflow-bench-trees-", dir=self.args.tmpdir)


def _cold() -> None:
    luigi.task_register.Register.clear_instance_cache()
    gc.collect()


async def _create_tree(tm: TaskManager, deps: list[tuple[int, ...]]) -> TaskTreeNode:
    repo = tm.task_repository
    n = len(deps)
    root = await repo.create_task(name=EXECUTOR_ID, inputs={"i": n - 1})
    ids: list[str] = [""] * n
    ids[n - 1] = root.id
    made = []
    for i in range(n - 1):
        t = await repo.create_task(
            name=EXECUTOR_ID, parent_id=root.id, inputs={"i": i},
            dependencies=[{"id": ids[j], "required": True} for j in deps[i]])
        ids[i] = t.id
        made.append(t)
    root = await repo.update_task(
        root.id, dependencies=[{"id": ids[j], "required": True} for j in deps[n - 1]])
    node = TaskTreeNode(root)
    for t in made:
        node.add_child(TaskTreeNode(t))
    return node


def measure_tree(bench: Bench, shape: str, deps: list[tuple[int, ...]], workers: int,
                 profile: bool = False) -> None:
    n = len(deps)
    data = bench.fresh_dir()
    try:
        db = create_session(os.path.join(data, "tasks.db"))
        tm = TaskManager(db, workers=workers)
        created = bench.row(shape, n, "trees: create (create_task x N)",
                            note="+ update_task(root) + nodes; once per workers count")
        how = "on the run's thread" if workers == 1 else "thread workers"
        ran = bench.row(shape, n, f"trees: run, workers={workers}",
                        baseline=f"classes: run, workers={workers}",
                        note=f"distribute_task_tree ({how})")
        total = bench.row(shape, n, f"trees: create + run, workers={workers}",
                          baseline=f"classes: run, workers={workers}")

        async def go() -> TaskTreeNode:
            _cold()
            t0 = time.perf_counter()
            root = await _create_tree(tm, deps)
            t1 = time.perf_counter()
            prof = ThreadProfiles() if profile else None
            if prof is not None:
                prof.start()
            await tm.distribute_task_tree(root, progress=False)
            if prof is not None:
                prof.stop()
            t2 = time.perf_counter()
            created.times.append(t1 - t0)
            ran.times.append(t2 - t1)
            total.times.append(t2 - t0)
            if prof is not None:
                report_profile(prof, bench.args.profile, f"trees {shape} N={n} w={workers}")
            return root

        root = asyncio.run(go())
        done = db._read("SELECT COUNT(*) FROM tasks WHERE status = 'completed'")[0][0]
        if done != n:
            raise BenchFailure(f"trees {shape}: {done} of {n} tasks completed")
        got = db.need(root.task.id).result
        want = expected_root_value(shape, deps)
        if got != {"value": want}:
            raise BenchFailure(f"trees {shape}: the root's result is {got!r}, expected "
                               f"{{'value': {want}}}")
    finally:
        from pipeflow.trees import store as _store

        with _store._OPEN_LOCK:
            for key in [k for k in _store._OPEN if str(k).startswith(data)]:
                _store._OPEN.pop(key)
        shutil.rmtree(data, ignore_errors=True)


class ThreadProfiles:
    """cProfile of this thread and of every thread started meanwhile (the engine's run
    thread, its attempt threads), merged."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = [cProfile.Profile()]
        self._run = threading.Thread.run

    def start(self) -> None:
        profiles, run = self.profiles, self._run

        def profiled(thread: threading.Thread) -> None:
            p = cProfile.Profile()
            profiles.append(p)
            p.enable()
            try:
                run(thread)
            finally:
                p.disable()

        threading.Thread.run = profiled  # type: ignore[method-assign]
        self.profiles[0].enable()

    def stop(self) -> None:
        self.profiles[0].disable()
        threading.Thread.run = self._run  # type: ignore[method-assign]


def report_profile(prof: ThreadProfiles, path: str, what: str) -> None:
    stats = pstats.Stats(prof.profiles[0], stream=sys.stderr)
    for p in prof.profiles[1:]:
        with contextlib.suppress(TypeError):  # a thread still running: no stats yet
            stats.add(p)
    stats.dump_stats(path)
    print(f"\ncProfile of {what} (all threads, {len(prof.profiles)} profiles) saved to "
          f"{path}; top 40 by own time:", file=sys.stderr)
    stats.sort_stats("tottime").print_stats(40)


def measure_classes(bench: Bench, shape: str, deps: list[tuple[int, ...]],
                    workers: int) -> None:
    n = len(deps)
    data = bench.fresh_dir()
    try:
        pipeflow.set_dir(data)
        ClassStep.DEPS[shape] = deps
        how = "inline (default)" if workers == 1 else "executor='thread'"
        row = bench.row(shape, n, f"classes: run, workers={workers}",
                        note=f"pipeflow.run, TaskJson, {how}")
        _cold()
        t0 = time.perf_counter()
        result = pipeflow.run(ClassStep(shape=shape, i=n - 1), workers=workers,
                              executor=None if workers == 1 else "thread",
                              execution_summary=False, progress=False)
        row.times.append(time.perf_counter() - t0)
        if not result or len(result.by_state("completed")) != n:
            raise BenchFailure(f"classes {shape}: the run did not complete {n} tasks")
        got = ClassStep(shape=shape, i=n - 1).outputLoad()
        want = expected_root_value(shape, deps)
        if got != {"value": want}:
            raise BenchFailure(f"classes {shape}: the root saved {got!r}, expected "
                               f"{{'value': {want}}}")
    finally:
        shutil.rmtree(data, ignore_errors=True)


# -- apflow, in its own venv -------------------------------------------------------------------

APFLOW_CHILD = r'''
import asyncio, json, logging, sys, time
logging.disable(logging.CRITICAL)
from apflow import TaskManager, create_session
from apflow.core.base import BaseTask
from apflow.core.extensions.decorators import executor_register
from apflow.core.types import TaskTreeNode
import apflow

@executor_register()
class BenchStep(BaseTask):
    id = "bench_step"
    name = "bench step"
    type = "stdio"

    async def execute(self, inputs):
        return {"value": int(inputs.get("value", -1)) + 1}

async def main(path, deps):
    logging.disable(logging.CRITICAL)
    db = create_session(path=path)
    tm = TaskManager(db)
    repo = tm.task_repository
    p = {"executor_id": "bench_step"}
    n = len(deps)
    t0 = time.perf_counter()
    root = await repo.create_task(name="bench_step", params=p, inputs={"i": n - 1})
    ids = [None] * n
    ids[n - 1] = root.id
    made = []
    for i in range(n - 1):
        t = await repo.create_task(name="bench_step", params=p, parent_id=root.id,
                                   inputs={"i": i},
                                   dependencies=[{"id": ids[j], "required": True}
                                                 for j in deps[i]])
        ids[i] = t.id
        made.append(t)
    root = await repo.update_task(
        root.id, dependencies=[{"id": ids[j], "required": True} for j in deps[n - 1]])
    node = TaskTreeNode(root)
    for t in made:
        node.add_child(TaskTreeNode(t))
    t1 = time.perf_counter()
    await tm.distribute_task_tree(node)
    t2 = time.perf_counter()
    done = 0
    for i in ids:
        r = await repo.get_task_by_id(i)
        done += r.status == "completed"
    r = await repo.get_task_by_id(root.id)
    print(json.dumps({"create": t1 - t0, "run": t2 - t1, "completed": done,
                      "root": r.result, "version": apflow.__version__}))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
'''


def apflow_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import apflow; print(apflow.__version__)"],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise BenchFailure(f"--apflow {python}: cannot import apflow: "
                           f"{out.stderr.strip().splitlines()[-1:]}")
    return out.stdout.strip()


def measure_apflow(bench: Bench, shape: str, deps: list[tuple[int, ...]]) -> None:
    n = len(deps)
    data = bench.fresh_dir()
    try:
        script = os.path.join(data, "apflow_child.py")
        with open(script, "w") as fh:
            fh.write(APFLOW_CHILD)
        out = subprocess.run(
            [bench.args.apflow, script, os.path.join(data, "tasks.duckdb"),
             json.dumps([list(d) for d in deps])],
            capture_output=True, text=True, timeout=3600, cwd=data)
        if out.returncode != 0:
            raise BenchFailure(f"apflow {shape} N={n} failed:\n{out.stderr[-3000:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
        want = expected_root_value(shape, deps)
        if got["completed"] != n or got["root"] != {"value": want}:
            raise BenchFailure(f"apflow {shape} N={n}: {got['completed']} completed, root "
                               f"{got['root']!r} (expected {n}, {{'value': {want}}})")
        bench.row(shape, n, "apflow: create (create_task x N)",
                  baseline="trees: create (create_task x N)",
                  note="DuckDB, child process").times.append(got["create"])
        bench.row(shape, n, "apflow: run", baseline="trees: run, workers=8",
                  note="distribute_task_tree").times.append(got["run"])
    finally:
        shutil.rmtree(data, ignore_errors=True)


# -- reporting --------------------------------------------------------------------------------

def header(args: argparse.Namespace, extra: str) -> str:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return "\n".join([
        "pipeflow task-tree benchmark",
        f"date:      {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"command:   {shlex.join([sys.executable, *sys.argv])}",
        f"python:    {platform.python_version()}, {platform.platform()}",
        f"versions:  pipeflow {pipeflow.__version__} (source {pipeflow_commit()}){extra}",
        f"cpus:      os.cpu_count()={os.cpu_count()}, usable={usable}; {load_average()}",
        f"settings:  N={args.n}, repeat={args.repeat}, shapes={','.join(args.shapes)}, "
        f"workers={','.join(map(str, args.workers))}, "
        f"pipeflow.settings.fsync={pipeflow.settings.fsync}, "
        f"temp dirs under {args.tmpdir or tempfile.gettempdir()}",
    ])


def table(bench: Bench) -> str:
    cols = ["shape", "tasks", "operation", "median s", "min s", "max s", "us/task", "ratio",
            "ratio vs", "note"]
    lines = []
    keys = sorted({(r.shape, r.tasks) for r in bench.rows.values()},
                  key=lambda k: (SHAPES.index(k[0]), -k[1]))
    for shape, n in keys:
        for row in [r for r in bench.rows.values() if (r.shape, r.tasks) == (shape, n)]:
            ratio, vs = "", ""
            base = bench.rows.get((shape, n, row.baseline)) if row.baseline else None
            if base is not None and base.median > 0:
                ratio, vs = f"{row.median / base.median:.2f}x", row.baseline or ""
            lines.append([shape, str(n), row.op, f"{row.median:.3f}", f"{min(row.times):.3f}",
                          f"{max(row.times):.3f}", f"{row.median / n * 1e6:.0f}", ratio, vs,
                          row.note])
    widths = [max(len(c), *(len(line[k]) for line in lines)) for k, c in enumerate(cols)]
    right = {1, 3, 4, 5, 6, 7}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if k in right else c.ljust(w)
                         for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [fmt(cols), fmt(["-" * w for w in widths])]
    previous = None
    for line in lines:
        if previous is not None and line[:2] != previous:
            out.append("")
        previous = line[:2]
        out.append(fmt(line))
    return "\n".join(out)


def goal_misses(bench: Bench) -> list[str]:
    misses = []
    for row in bench.rows.values():
        if row.op.startswith("trees: run,") and row.baseline and row.tasks >= GOAL_MIN_N:
            base = bench.rows.get((row.shape, row.tasks, row.baseline))
            if base is not None and row.median > GOAL * base.median:
                misses.append(f"{row.shape} N={row.tasks} {row.op}: "
                              f"{row.median / base.median:.2f}x > {GOAL:g}x")
    return misses


# -- main -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="tasks per graph (default 10000)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="repetitions; medians are reported (default 3, 1 with --quick)")
    ap.add_argument("--shapes", default=",".join(SHAPES),
                    help=f"comma-separated subset of {','.join(SHAPES)}")
    ap.add_argument("--workers", default=f"1,{DEFAULT_WORKERS}",
                    help=f"comma-separated worker counts (default 1,{DEFAULT_WORKERS})")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: N=500 and 1 repetition unless given")
    ap.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True,
                    help="pipeflow.settings.fsync (default: on, pipeflow's default)")
    ap.add_argument("--apflow", default=None, metavar="PYTHON",
                    help="also run the tree on apflow: the python of a venv with apflow")
    ap.add_argument("--apflow-n", default="10,20",
                    help="tree sizes for the apflow comparison (default 10,20)")
    ap.add_argument("--profile", default=None, metavar="FILE",
                    help="cProfile the first trees run (first shape, first workers) into "
                         "FILE and print its top functions on standard error")
    ap.add_argument("--check-goal", action="store_true",
                    help=f"exit 2 if a trees run takes more than {GOAL:g}x task classes'")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the 1-minute load average to drop "
                         "below 0.5")
    ap.add_argument("--tmpdir", default=None,
                    help="where the temp stores and data dirs go (e.g. /dev/shm)")
    args = ap.parse_args(argv)
    args.n = args.n if args.n is not None else (500 if args.quick else 10_000)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    bad = [s for s in args.shapes if s not in SHAPES]
    if bad or not args.shapes:
        ap.error(f"--shapes: unknown {bad}; choose from {','.join(SHAPES)}")
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
        args.apflow_n = [int(w) for w in args.apflow_n.split(",") if w.strip()]
    except ValueError:
        ap.error("--workers and --apflow-n take comma-separated whole numbers")
    if args.repeat < 1 or args.n < 2 or not args.workers or min(args.workers) < 1:
        ap.error("--repeat and --workers must be >= 1 and --n >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pipeflow.settings.execution_summary = False
    pipeflow.settings.fsync = args.fsync
    extra = ""
    if args.apflow:
        try:
            extra = f", apflow {apflow_version(args.apflow)} ({args.apflow})"
        except (BenchFailure, OSError) as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
    wait_quiet(args.wait_quiet)
    print(header(args, extra), flush=True)
    bench = Bench(args)
    started = time.perf_counter()
    plan: list[tuple[str, Callable[[], None]]] = []
    for shape in args.shapes:
        deps = shape_deps(shape, args.n)
        for w in args.workers:
            plan.append((f"{shape} classes w={w}",
                         lambda s=shape, d=deps, w=w: measure_classes(bench, s, d, w)))
            plan.append((f"{shape} trees w={w}",
                         lambda s=shape, d=deps, w=w: measure_tree(bench, s, d, w)))
    small: list[tuple[str, Callable[[], None]]] = []
    if args.apflow:
        for shape in args.shapes:
            for n in args.apflow_n:
                deps = shape_deps(shape, n)
                small.append((f"{shape} N={n} trees",
                              lambda s=shape, d=deps: measure_tree(bench, s, d,
                                                                   DEFAULT_WORKERS)))
                small.append((f"{shape} N={n} apflow",
                              lambda s=shape, d=deps: measure_apflow(bench, s, d)))
    try:
        if args.profile:
            shape = args.shapes[0]
            measure_tree(Bench(args), shape, shape_deps(shape, args.n), args.workers[0],
                         profile=True)
        for rep in range(args.repeat):
            for what, fn in plan + small:
                t0 = time.perf_counter()
                fn()
                print(f"  repeat {rep + 1}/{args.repeat} {what}: "
                      f"{time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    print(table(bench))
    print()
    print(f"total wall time {time.perf_counter() - started:.1f}s; {load_average()}; "
          f"us/task = median s / tasks; ratio = median / median of the 'ratio vs' row "
          f"(same shape and N); goal: trees run <= {GOAL:g}x task classes at the same workers "
          f"(N >= {GOAL_MIN_N})")
    misses = goal_misses(bench)
    for miss in misses:
        print(f"goal missed: {miss}")
    return 2 if misses and args.check_goal else 0


if __name__ == "__main__":
    sys.exit(main())
