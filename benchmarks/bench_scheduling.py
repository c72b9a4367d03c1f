#!/usr/bin/env python
"""Time pipeflow's preview and run on graphs of trivial tasks, against same-run baselines.

Shapes (N tasks each, the root included):

* ``chain``: task i requires task i-1 (depth N).
* ``wide``: one root requiring N-1 independent leaves.
* ``diamond``: layers of width 10, each task requiring all 10 tasks of the layer before
  (N/10 layers), plus a root requiring the last layer (N+1 tasks).

Per shape and repeat, in a fresh data dir: preview (all pending), run (everything), no-op
re-run (everything complete), preview (all complete), ``pipeflow.graph.build`` alone. The
baselines, measured in the same process: a plain loop writing the same number of pickle
files atomically (mkstemp, fsync as ``pipeflow.settings.fsync``, os.replace), a plain
``os.stat`` loop over the files the run wrote, and instantiating N plain luigi tasks (the
CPU floor of any luigi-based graph walk). Optionally (``--luigi``) the same graph as plain
luigi tasks run with ``luigi.build(local_scheduler=True)``.

Every timed operation starts with luigi's task-instance cache cleared, so it includes
creating the N task instances, as a fresh process would. Medians over ``--repeat``
repetitions are reported; the ratios compare medians measured in this run.

    python benchmarks/bench_scheduling.py --n 10000 --repeat 3
    python benchmarks/bench_scheduling.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import pickle
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, ClassVar

import luigi
import luigi.format
import luigi.task_register
from _shapes import SHAPES, shape_deps

import pipeflow
from pipeflow import graph as pf_graph
from pipeflow.tasks import TaskPickle

LUIGI_AUTO_MAX_N = 2000  # --luigi defaults to on up to this N (luigi's scheduler is O(N^2))


#: the order of the rows of a shape in the table
OP_ORDER = [
    "preview, all pending", "run, all pending", "no-op re-run, all complete",
    "preview, all complete", "graph.build only (no file access)",
    "atomic write loop (floor)", "2 atomic writes per task (floor)", "os.stat loop (floor)",
    "instantiate N luigi.Tasks (floor)",
    "luigi.build, all pending", "luigi.build, all complete",
]


class BenchFailure(Exception):
    """A run failed or a result was not what the graph implies."""


# -- graph shapes -------------------------------------------------------------------------

# -- the tasks ---------------------------------------------------------------------------

class BenchTask(TaskPickle):
    """A trivial pipeflow task: saves its own index."""

    shape = pipeflow.Parameter()
    i = pipeflow.IntParameter()
    DEPS: ClassVar[dict[str, list[tuple[int, ...]]]] = {}

    def requires(self) -> list[BenchTask]:
        return [BenchTask(shape=self.shape, i=j) for j in BenchTask.DEPS[self.shape][self.i]]

    def run(self) -> None:
        self.save(self.i)


class LuigiBenchTask(luigi.Task):
    """The same trivial task as a plain luigi task with a LocalTarget."""

    shape = luigi.Parameter()
    i = luigi.IntParameter()
    ROOT: ClassVar[str] = ""

    def requires(self) -> list[LuigiBenchTask]:
        return [LuigiBenchTask(shape=self.shape, i=j) for j in BenchTask.DEPS[self.shape][self.i]]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(os.path.join(self.ROOT, self.shape, f"{self.i}.pkl"),
                                 format=luigi.format.Nop)

    def run(self) -> None:
        with self.output().open("w") as fh:
            pickle.dump(self.i, fh, protocol=pickle.HIGHEST_PROTOCOL)


# -- measuring -------------------------------------------------------------------------

@dataclass
class Row:
    shape: str
    tasks: int
    op: str
    times: list[float] = field(default_factory=list)
    baseline: str | None = None  # op name of the row this one is compared with
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)


class Bench:
    def __init__(self, tmp_root: str | None) -> None:
        self.tmp_root = tmp_root
        self.rows: dict[tuple[str, str], Row] = {}

    def row(self, shape: str, tasks: int, op: str, baseline: str | None = None,
            note: str = "") -> Row:
        key = (shape, op)
        if key not in self.rows:
            self.rows[key] = Row(shape, tasks, op, baseline=baseline, note=note)
        return self.rows[key]

    def fresh_dir(self) -> str:
        return tempfile.mkdtemp(prefix="pipeflow-bench-", dir=self.tmp_root)

    def timed(self, row: Row, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` once, cold: luigi instance cache cleared, garbage collected."""
        luigi.task_register.Register.clear_instance_cache()
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        row.times.append(time.perf_counter() - t0)
        return out


def count_files(folder: str, suffix: str) -> list[str]:
    """Paths of the files ending in ``suffix`` below ``folder`` (iterative walk)."""
    out = []
    for base, _dirs, files in os.walk(folder):
        out.extend(os.path.join(base, f) for f in files if f.endswith(suffix))
    return out


def measure_pipeflow(bench: Bench, shape: str, tasks: int) -> None:
    root_i = tasks - 1
    data = bench.fresh_dir()
    try:
        pipeflow.set_dir(data)

        def root() -> BenchTask:
            return BenchTask(shape=shape, i=root_i)

        row = bench.row(shape, tasks, "preview, all pending", baseline="os.stat loop (floor)")
        p = bench.timed(row, lambda: pipeflow.preview(root(), print_it=False))
        if p.counts() != {"COMPLETE": 0, "PENDING": tasks, "STALE": 0}:
            raise BenchFailure(f"{shape}: fresh preview counts {p.counts()}, expected "
                               f"{tasks} pending")

        row = bench.row(shape, tasks, "run, all pending",
                        baseline="2 atomic writes per task (floor)")
        result = bench.timed(row, lambda: pipeflow.run(root(), execution_summary=False))
        if not result or len(result.by_state("completed")) != tasks:
            raise BenchFailure(f"{shape}: run did not complete {tasks} tasks: {result!r}")
        files = count_files(data, ".pkl")
        if len(files) != tasks:
            raise BenchFailure(f"{shape}: run wrote {len(files)} files, expected {tasks}")

        row = bench.row(shape, tasks, "no-op re-run, all complete",
                        baseline="os.stat loop (floor)")
        result = bench.timed(row, lambda: pipeflow.run(root(), execution_summary=False))
        if not result or result.by_state("completed"):
            raise BenchFailure(f"{shape}: no-op re-run ran tasks: {result!r}")

        row = bench.row(shape, tasks, "preview, all complete", baseline="os.stat loop (floor)")
        p = bench.timed(row, lambda: pipeflow.preview(root(), print_it=False))
        if p.counts() != {"COMPLETE": tasks, "PENDING": 0, "STALE": 0}:
            raise BenchFailure(f"{shape}: preview after the run counts {p.counts()}")

        row = bench.row(shape, tasks, "graph.build only (no file access)",
                        baseline="instantiate N luigi.Tasks (floor)")
        g = bench.timed(row, lambda: pf_graph.build([root()]))
        if len(g) != tasks:
            raise BenchFailure(f"{shape}: graph has {len(g)} tasks, expected {tasks}")

        row = bench.row(shape, tasks, "os.stat loop (floor)", note="over the files run wrote")
        bench.timed(row, lambda: [os.stat(f) for f in files])
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _write_atomic(folder: str, name: str, data: bytes, fsync: bool) -> None:
    final = os.path.join(folder, name)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.tmp-")
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


def write_floor(folder: str, tasks: int, shape: str, fsync: bool, record: bool = False) -> None:
    """Write ``tasks`` tiny pickles atomically, the way a target publishes one file.

    With ``record``, each also gets a small JSON commit record written atomically beside it:
    the least a committed task must do (issue 10's floor).
    """
    os.makedirs(folder, exist_ok=True)
    for i in range(tasks):
        name = f"BenchTask_{shape}_{i}_0123456789-data.pkl"
        _write_atomic(folder, name, pickle.dumps(i, protocol=pickle.HIGHEST_PROTOCOL), fsync)
        if record:
            _write_atomic(folder, f".{name}.commit.json",
                          b'{"v":1,"files":{"data":[["%s",5,0,0,"0"]]}}' % name.encode(),
                          fsync)


def measure_floor(bench: Bench, shape: str, tasks: int) -> None:
    row = bench.row(shape, tasks, "instantiate N luigi.Tasks (floor)",
                    note="plain luigi task, cold instance cache")
    made = bench.timed(row, lambda: [LuigiBenchTask(shape=shape, i=i) for i in range(tasks)])
    if len(set(made)) != tasks:
        raise BenchFailure(f"{shape}: instantiated {len(set(made))} distinct tasks")
    data = bench.fresh_dir()
    try:
        fsync = pipeflow.settings.fsync
        row = bench.row(shape, tasks, "atomic write loop (floor)",
                        note=f"mkstemp+write+{'fsync+' if fsync else ''}replace")
        bench.timed(row, lambda: write_floor(os.path.join(data, "BenchTask"), tasks, shape,
                                             fsync))
        row = bench.row(shape, tasks, "2 atomic writes per task (floor)",
                        note="output + commit record, each mkstemp+write+"
                             f"{'fsync+' if fsync else ''}replace")
        bench.timed(row, lambda: write_floor(os.path.join(data, "BenchTask2"), tasks, shape,
                                             fsync, record=True))
    finally:
        shutil.rmtree(data, ignore_errors=True)


def measure_luigi(bench: Bench, shape: str, tasks: int) -> None:
    root_i = tasks - 1
    data = bench.fresh_dir()
    try:
        LuigiBenchTask.ROOT = data

        def build() -> bool:
            return bool(luigi.build([LuigiBenchTask(shape=shape, i=root_i)],
                                    local_scheduler=True, workers=1, log_level="ERROR"))

        row = bench.row(shape, tasks, "luigi.build, all pending", baseline="run, all pending",
                        note="no fsync")
        if not bench.timed(row, build):
            raise BenchFailure(f"{shape}: luigi.build failed")
        written = len(count_files(data, ".pkl"))
        if written != tasks:
            raise BenchFailure(f"{shape}: luigi wrote {written} files, expected {tasks}")
        row = bench.row(shape, tasks, "luigi.build, all complete",
                        baseline="no-op re-run, all complete",
                        note="checks the root only")
        if not bench.timed(row, build):
            raise BenchFailure(f"{shape}: luigi.build (complete) failed")
    finally:
        shutil.rmtree(data, ignore_errors=True)


# -- reporting -------------------------------------------------------------------------

def source_revision() -> str:
    """The git commit of the pipeflow sources measured, with ``+dirty`` for local changes."""
    where = os.path.dirname(os.path.abspath(pipeflow.__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where,
                             capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=where,
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def header(args: argparse.Namespace, n: int) -> str:
    try:
        cpus_usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus_usable = os.cpu_count()
    command = shlex.join([sys.executable, *sys.argv])
    return "\n".join([
        "pipeflow scheduling benchmark",
        f"date:      {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"command:   {command}",
        f"python:    {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.platform()}",
        f"versions:  pipeflow {pipeflow.__version__} (source {source_revision()}), "
        f"luigi {version('luigi')}",
        f"cpus:      os.cpu_count()={os.cpu_count()}, usable={cpus_usable}",
        f"settings:  N={n}, repeat={args.repeat}, shapes={','.join(args.shapes)}, "
        f"luigi={'on' if args.luigi else 'off'}, "
        f"pipeflow.settings.fsync={pipeflow.settings.fsync}, "
        f"temp dirs under {args.tmpdir or tempfile.gettempdir()}",
    ])


def table(bench: Bench, shapes: list[str]) -> str:
    cols = ["shape", "tasks", "operation", "median s", "min s", "max s", "us/task", "ratio",
            "ratio vs", "note"]
    lines = []
    for shape in shapes:
        rows = [r for r in bench.rows.values() if r.shape == shape]
        rows.sort(key=lambda r: OP_ORDER.index(r.op) if r.op in OP_ORDER else len(OP_ORDER))
        for row in rows:
            ratio, vs = "", ""
            base = bench.rows.get((shape, row.baseline)) if row.baseline else None
            if base is not None and base.median > 0:
                r = row.median / base.median
                ratio = f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"
                vs = row.baseline or ""
            lines.append([
                shape, str(row.tasks), row.op, f"{row.median:.3f}", f"{min(row.times):.3f}",
                f"{max(row.times):.3f}", f"{row.median / row.tasks * 1e6:.1f}", ratio, vs,
                row.note,
            ])
    widths = [max(len(c), *(len(line[k]) for line in lines)) for k, c in enumerate(cols)]
    right = {1, 3, 4, 5, 6, 7}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if k in right else c.ljust(w)
                         for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [fmt(cols), fmt(["-" * w for w in widths])]
    previous = None
    for line in lines:
        if previous is not None and line[0] != previous:
            out.append("")
        previous = line[0]
        out.append(fmt(line))
    return "\n".join(out)


# -- main ------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="tasks per graph (default 10000)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="repetitions; medians are reported (default 3, 1 with --quick)")
    ap.add_argument("--shapes", default=",".join(SHAPES),
                    help=f"comma-separated subset of {','.join(SHAPES)}")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: N=500 and 1 repetition unless given")
    ap.add_argument("--luigi", action=argparse.BooleanOptionalAction, default=None,
                    help=f"also time plain luigi (default: on when N <= {LUIGI_AUTO_MAX_N})")
    ap.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True,
                    help="pipeflow.settings.fsync for the pipeflow runs and the write floor "
                         "(default: on, pipeflow's default)")
    ap.add_argument("--tmpdir", default=None, help="where the temp data dirs go")
    args = ap.parse_args(argv)
    args.n = args.n if args.n is not None else (500 if args.quick else 10_000)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    bad = [s for s in args.shapes if s not in SHAPES]
    if bad or not args.shapes:
        ap.error(f"--shapes: unknown {bad}; choose from {','.join(SHAPES)}")
    if args.repeat < 1 or args.n < 2:
        ap.error("--repeat must be >= 1 and --n >= 2")
    if args.luigi is None:
        args.luigi = args.n <= LUIGI_AUTO_MAX_N
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pipeflow.settings.execution_summary = False
    pipeflow.settings.fsync = args.fsync
    print(header(args, args.n), flush=True)

    sizes = {}
    for shape in args.shapes:
        BenchTask.DEPS[shape] = shape_deps(shape, args.n)
        sizes[shape] = len(BenchTask.DEPS[shape])

    bench = Bench(args.tmpdir)
    started = time.perf_counter()
    try:
        for rep in range(args.repeat):
            for shape in args.shapes:
                t0 = time.perf_counter()
                measure_floor(bench, shape, sizes[shape])
                measure_pipeflow(bench, shape, sizes[shape])
                if args.luigi:
                    measure_luigi(bench, shape, sizes[shape])
                print(f"  repeat {rep + 1}/{args.repeat} {shape}: "
                      f"{time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # report and exit non-zero, keeping the traceback
        import traceback

        traceback.print_exc()
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    print()
    print(table(bench, args.shapes))
    print()
    print(f"total wall time {time.perf_counter() - started:.1f}s; us/task = median s / tasks; "
          f"ratio = median / median of the 'ratio vs' row of the same shape")
    return 0


if __name__ == "__main__":
    sys.exit(main())
