#!/usr/bin/env python
"""Time pipeflow through luigid (1 and 3 processes) and on S3, against the same work without.

Part 1, tasks per second: ``--n`` (default 200) trivial tasks in one ``--shape`` (default
``wide``: a root requiring N-1 independent leaves; ``chain`` and ``diamond`` as in
bench_scheduling.py), each a :class:`pipeflow.tasks.TaskPickle` saving its index to a
fresh local data dir; with ``--work S`` each task first waits S seconds in ``run()``
(standing for real work), which shows what sharing a flow between processes buys. Every
row runs in fresh child processes that import everything, say they are ready and wait for
one "go" file, so that interpreter start-up and imports are not timed; the time is from
"go" to the last child's return:

* ``embedded engine, 1 process``: ``pipeflow.run(root)`` (the baseline).
* ``luigid, 1 process``: ``pipeflow.run(root, local_scheduler=False, scheduler_url=...)``.
* ``luigid, 3 processes``: the same call in 3 processes at once, sharing the work.
* ``plain luigi via luigid, 1 process`` (``--luigi``, on by default): the same graph of
  plain ``luigi.Task``s with ``luigi.LocalTarget`` outputs (no fsync, no commit record),
  ``luigi.build([root], scheduler_url=..., workers=1)``: what luigid itself costs.

A fresh luigid (``tests/servers.py``, 127.0.0.1, a free port, ``record_task_history``
off) serves each luigid measurement and is stopped after it. Each task appends one line to
a run log (``O_APPEND``); the script checks that every task ran exactly once, that every
call succeeded and that a preview afterwards shows all N complete, and exits non-zero
otherwise.

Part 2, S3 (moto's server on 127.0.0.1, ``tests/servers.py``): save + load of a
``--rows`` (default 1,000,000) row, 10-column frame (bench_parquet.py's ``make_frame``):

* ``pipeflow TaskPqPandas on s3://``: ``pipeflow.set_dir('s3://bench/...')``,
  ``settings.storage_options`` pointing at the endpoint; ``pipeflow.run(Big(rep=k))``
  (save, commit record included), then ``Big(rep=k).outputLoad()`` (load).
* ``s3fs + pyarrow direct``: ``pa.Table.from_pandas(df)`` +
  ``pq.write_table(table, path, filesystem=s3fs.S3FileSystem(...), compression=C)``,
  then ``pq.read_table(path, filesystem=fs).to_pandas()``; same codec as pipeflow.

Every loaded frame is compared with the saved one. Medians over ``--repeat`` repetitions;
the order of the rows rotates between repetitions. moto keeps objects in memory, so part 2
measures the client side and loopback HTTP, not a real network.

    python benchmarks/bench_scale_out.py                 # N=200, 1,000,000 rows, 3 repetitions
    python benchmarks/bench_scale_out.py --quick         # N=60, 100,000 rows, 1 repetition
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import pathlib
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # servers.py: luigid and moto on 127.0.0.1

import luigi  # noqa: E402
from _common import add_run_options, load_average, pipeflow_commit, wait_quiet  # noqa: E402
from _shapes import SHAPES, shape_deps  # noqa: E402

import pipeflow  # noqa: E402
import pipeflow.targets  # noqa: E402
import pipeflow.tasks  # noqa: E402

CHILD_TIMEOUT = 600.0  # seconds a child may take before the run counts as failed


class BenchFailure(Exception):
    """A run failed, or what it left is wrong."""


# -- part 1's tasks (module level: the children import this file) -------------------------

_DEPS: list[tuple[int, ...]] = []


def _log(family: str, i: int) -> None:
    path = os.environ.get("BENCH_RUNLOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{family} {i} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


def _work() -> None:
    """What a task does besides saving: ``--work`` seconds of waiting (I/O, a remote call).

    A wait, not CPU: the three processes stand for three machines, which this 2-core
    machine could not give CPU work each.
    """
    seconds = float(os.environ.get("BENCH_WORK", "0"))
    if seconds:
        time.sleep(seconds)


class Trivial(pipeflow.tasks.TaskPickle):
    """Task ``i`` of a graph of ``n`` in ``shape``; saves ``i``."""

    shape = pipeflow.Parameter()
    n = pipeflow.IntParameter()
    i = pipeflow.IntParameter()

    def requires(self) -> list[Trivial]:
        return [Trivial(shape=self.shape, n=self.n, i=j) for j in _DEPS[self.i]]

    def run(self) -> None:
        _log("Trivial", self.i)
        _work()
        self.save(self.i)


class PlainTrivial(luigi.Task):
    """The same task in plain luigi: a LocalTarget, no pipeflow."""

    shape = luigi.Parameter()
    n = luigi.IntParameter()
    i = luigi.IntParameter()
    root = luigi.Parameter(significant=False)

    def requires(self) -> list[PlainTrivial]:
        return [PlainTrivial(shape=self.shape, n=self.n, i=j, root=self.root)
                for j in _DEPS[self.i]]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(os.path.join(self.root, f"{self.i}.txt"))

    def run(self) -> None:
        _log("PlainTrivial", self.i)
        _work()
        with self.output().open("w") as f:
            f.write(str(self.i))


def child(argv: list[str]) -> int:
    """A child of part 1: ``--child MODE SHAPE N DATA_DIR READY GO [SCHEDULER_URL]``."""
    mode, shape, n, data, ready, go = argv[:6]
    url = argv[6] if len(argv) > 6 else None
    _DEPS[:] = shape_deps(shape, int(n))
    pipeflow.set_dir(data)
    pipeflow.settings.execution_summary = False
    pathlib.Path(ready).touch()
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.002)
    start = time.time()
    if mode == "plain":
        ok = luigi.build([PlainTrivial(shape=shape, n=int(n), i=int(n) - 1, root=data)],
                         scheduler_url=url, workers=1, log_level="ERROR")
    else:
        root = Trivial(shape=shape, n=int(n), i=int(n) - 1)
        keywords: dict[str, Any] = {} if mode == "embedded" else {
            "local_scheduler": False, "scheduler_url": url}
        ok = bool(pipeflow.run(root, progress=False, **keywords))
    print(json.dumps({"start": start, "end": time.time(), "ok": ok}))
    return 0


# -- measuring -----------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    unit: str  # what is counted per second, or "" for none
    times: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)  # e.g. save/load times
    count: int = 0  # tasks, for tasks per second
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def part(self, name: str) -> str:
        values = self.parts.get(name)
        return f"{statistics.median(values):.3f}" if values else ""


@contextlib.contextmanager
def fresh_luigid(root: str) -> Iterator[Any]:
    from servers import luigid

    with luigid(tempfile.mkdtemp(prefix="luigid-", dir=root)) as server:
        yield server


def run_children(mode: str, processes: int, shape: str, n: int, data: str, tmp: str,
                 url: str | None) -> float:
    """Start ``processes`` children, let them go at once; seconds from go to the last end."""
    log = os.path.join(tmp, f"runs-{uuid.uuid4().hex}.log")
    env = {**os.environ, "BENCH_RUNLOG": log, "PIPEFLOW_STATE_DIR": os.path.join(tmp, "state")}
    ready = [os.path.join(tmp, f"ready-{uuid.uuid4().hex}") for _ in range(processes)]
    go = os.path.join(tmp, f"go-{uuid.uuid4().hex}")
    procs = []
    try:
        for flag in ready:
            cmd = [sys.executable, __file__, "--child", mode, shape, str(n), data, flag, go]
            procs.append(subprocess.Popen(cmd + ([url] if url else []), env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not all(os.path.exists(f) for f in ready):
            for p in procs:
                if p.poll() is not None:
                    raise BenchFailure(f"{mode}: a child exited {p.returncode} before the "
                                       f"start:\n{p.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise BenchFailure(f"{mode}: the children were not ready in time")
            time.sleep(0.01)
        started = time.time()
        pathlib.Path(go).touch()
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=CHILD_TIMEOUT)
            if p.returncode != 0:
                raise BenchFailure(f"{mode}: a child exited {p.returncode}:\n{err[-3000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if not all(r["ok"] for r in reports):
        raise BenchFailure(f"{mode} x{processes}: a call did not succeed: {reports}")
    with open(log) as f:
        lines = [line.split()[1] for line in f]
    if sorted(map(int, lines)) != list(range(n)):
        twice = sorted({x for x in lines if lines.count(x) > 1})
        raise BenchFailure(f"{mode} x{processes}: {len(lines)} run() calls for {n} tasks "
                           f"(run more than once: {twice[:10]})")
    return max(r["end"] for r in reports) - started


def check_complete(shape: str, n: int, data: str) -> None:
    _DEPS[:] = shape_deps(shape, n)
    pipeflow.set_dir(data)
    luigi.task_register.Register.clear_instance_cache()
    counts = pipeflow.preview(Trivial(shape=shape, n=n, i=n - 1), print_it=False).counts()
    if counts.get("COMPLETE") != n:
        raise BenchFailure(f"after the run, the preview says {counts}, not {n} complete")


def measure_tasks(row: Row, mode: str, processes: int, args: argparse.Namespace,
                  tmp: str) -> None:
    data = tempfile.mkdtemp(prefix="data-", dir=tmp)
    try:
        if mode == "embedded":
            elapsed = run_children(mode, processes, args.shape, args.n, data, tmp, None)
        else:
            with fresh_luigid(tmp) as server:
                elapsed = run_children(mode, processes, args.shape, args.n, data, tmp,
                                       server.url)
        if mode != "plain":
            check_complete(args.shape, args.n, data)
        elif len(os.listdir(data)) != args.n:
            raise BenchFailure(f"plain luigi left {len(os.listdir(data))} files, not {args.n}")
        row.times.append(elapsed)
        row.count = args.n
    finally:
        shutil.rmtree(data, ignore_errors=True)


# part 2

_FRAME: dict[str, Any] = {}


class Big(pipeflow.tasks.TaskPqPandas):
    """Saves the frame built before any timing."""

    rep = pipeflow.IntParameter()

    def run(self) -> None:
        self.save(_FRAME["df"])


def measure_pipeflow_s3(row: Row, rep: int, url: str) -> None:
    import pandas as pd

    pipeflow.set_dir(url)
    gc.collect()
    t0 = time.perf_counter()
    result = pipeflow.run(Big(rep=rep), execution_summary=False, progress=False)
    t1 = time.perf_counter()
    loaded = Big(rep=rep).outputLoad()
    t2 = time.perf_counter()
    if not result:
        raise BenchFailure(f"{row.name}: the run failed: {result!r}")
    pd.testing.assert_frame_equal(loaded, _FRAME["df"])
    row.times.append(t2 - t0)
    row.parts.setdefault("save", []).append(t1 - t0)
    row.parts.setdefault("load", []).append(t2 - t1)


def measure_direct_s3(row: Row, rep: int, bucket: str, options: dict[str, Any]) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    path = f"{bucket}/direct/{rep}-{uuid.uuid4().hex}.parquet"
    compression = pipeflow.targets.PqPandasTarget.compression
    gc.collect()
    t0 = time.perf_counter()
    pq.write_table(pa.Table.from_pandas(_FRAME["df"]), path, filesystem=fs,
                   compression=compression)
    t1 = time.perf_counter()
    loaded = pq.read_table(path, filesystem=fs).to_pandas()
    t2 = time.perf_counter()
    pd.testing.assert_frame_equal(loaded, _FRAME["df"])
    row.times.append(t2 - t0)
    row.parts.setdefault("save", []).append(t1 - t0)
    row.parts.setdefault("load", []).append(t2 - t1)


# -- reporting -------------------------------------------------------------------------------

def header(args: argparse.Namespace, commit: str) -> str:
    return "\n".join([
        "pipeflow scale-out benchmark (luigid, S3)",
        f"date:      {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"command:   {shlex.join([sys.executable, *sys.argv])}",
        f"python:    {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.platform()}",
        f"versions:  pipeflow {pipeflow.__version__} (commit {commit}), "
        f"luigi {version('luigi')}, s3fs {version('s3fs')}, moto {version('moto')}, "
        f"pyarrow {version('pyarrow')}, pandas {version('pandas')}",
        f"cpus:      os.cpu_count()={os.cpu_count()}, {load_average()} at start",
        f"settings:  n={args.n}, shape={args.shape}, rows={args.rows:,}, "
        f"repeat={args.repeat}, pipeflow.settings.fsync={pipeflow.settings.fsync}",
    ])


def table(rows: list[Row], baselines: dict[str, str], parts: list[str]) -> str:
    """``baselines``: row name -> name of the row its ratio (this / that) compares with."""
    by_name = {r.name: r for r in rows}
    cols = ["run", "median s", "min s", "max s", *[f"{p} s" for p in parts]]
    cols += ["tasks/s"] if any(r.count for r in rows) else []
    cols += ["ratio", "ratio vs", "note"]
    lines = []
    for r in rows:
        base = by_name.get(baselines.get(r.name, ""))
        ratio = f"{r.median / base.median:.2f}x" if base is not None and base.times else ""
        cells = [r.name, f"{r.median:.3f}", f"{min(r.times):.3f}", f"{max(r.times):.3f}",
                 *[r.part(p) for p in parts]]
        if "tasks/s" in cols:
            cells.append(f"{r.count / r.median:.0f}" if r.count else "")
        cells += [ratio, base.name if base is not None else "", r.note]
        lines.append(cells)
    widths = [max(len(c), *(len(line[k]) for line in lines)) for k, c in enumerate(cols)]
    right = set(range(1, len(cols) - 2))

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if k in right else c.ljust(w)
                         for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(cols), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def rotate(steps: list[tuple[Row, Callable[[int], None]]], repeat: int) -> None:
    for rep in range(repeat):
        shift = rep % len(steps)
        for row, step in steps[shift:] + steps[:shift]:
            t0 = time.perf_counter()
            step(rep)
            print(f"  repeat {rep + 1}/{repeat} {row.name}: {time.perf_counter() - t0:.2f}s",
                  file=sys.stderr, flush=True)


# -- main --------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="tasks in part 1 (default 200; 60 "
                    "with --quick)")
    ap.add_argument("--shape", choices=SHAPES, default="wide",
                    help="graph shape of part 1 (default wide)")
    ap.add_argument("--rows", type=int, default=None,
                    help="rows of part 2's frame (default 1,000,000; 100,000 with --quick)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="repetitions; medians are reported (default 3; 1 with --quick)")
    ap.add_argument("--parts", default="tasks,s3",
                    help="what to measure: tasks, s3 or both (default tasks,s3)")
    ap.add_argument("--luigi", action=argparse.BooleanOptionalAction, default=True,
                    help="also time plain luigi tasks through luigid (default on)")
    ap.add_argument("--work", type=float, default=0.0,
                    help="seconds each task of part 1 waits in run(), standing for real "
                    "work (default 0: trivial tasks)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: N=60, 100,000 rows, 1 repetition unless given")
    add_run_options(ap, "never (no goal is set for this benchmark)",
                    "where the temp data dirs and server folders go")
    args = ap.parse_args(argv)
    args.n = args.n if args.n is not None else (60 if args.quick else 200)
    args.rows = args.rows if args.rows is not None else (100_000 if args.quick else 1_000_000)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if args.work < 0:
        ap.error("--work >= 0")
    os.environ["BENCH_WORK"] = repr(args.work)  # the children read it
    if args.n < 2 or args.repeat < 1 or args.rows < 1 or not args.parts <= {"tasks", "s3"}:
        ap.error("--n >= 2, --repeat >= 1, --rows >= 1, --parts from tasks,s3")
    return args


def part_tasks(args: argparse.Namespace, tmp: str) -> str:
    embedded = Row("embedded engine, 1 process", "tasks", note="pipeflow.run(root)")
    one = Row("luigid, 1 process", "tasks", note="local_scheduler=False, scheduler_url=")
    three = Row("luigid, 3 processes", "tasks", note="the same call in 3 processes at once")
    plain = Row("plain luigi via luigid, 1 process", "tasks",
                note="luigi.build, LocalTarget, no pipeflow")
    steps: list[tuple[Row, Callable[[int], None]]] = [
        (embedded, lambda rep: measure_tasks(embedded, "embedded", 1, args, tmp)),
        (one, lambda rep: measure_tasks(one, "luigid", 1, args, tmp)),
        (three, lambda rep: measure_tasks(three, "luigid", 3, args, tmp)),
    ]
    if args.luigi:
        steps.append((plain, lambda rep: measure_tasks(plain, "plain", 1, args, tmp)))
    rotate(steps, args.repeat)
    rows = [row for row, _ in steps]
    baselines = {one.name: embedded.name, three.name: one.name, plain.name: embedded.name}
    return "\n".join([
        f"Part 1: {args.n} tasks ({args.shape}; each waits {args.work:g} s in run()), "
        f"local data dir, from 'go' to the "
        f"last process's return; medians of {args.repeat}; ratio = this time / that time",
        "",
        table(rows, baselines, []),
        "",
        f"luigid, 1 process vs the embedded engine: {one.median / embedded.median:.2f}x the "
        f"time; 3 processes vs 1: {one.median / three.median:.2f}x the speed",
    ])


def part_s3(args: argparse.Namespace, tmp: str) -> str:
    from bench_parquet import frame_mb, make_frame
    from servers import s3

    _FRAME["df"] = make_frame(args.rows)
    piped = Row("pipeflow TaskPqPandas on s3://", "", note="run() + outputLoad()")
    direct = Row("s3fs + pyarrow direct", "",
                 note=f"write_table/read_table, {pipeflow.targets.PqPandasTarget.compression}")
    with s3(tempfile.mkdtemp(prefix="moto-", dir=tmp)) as server:
        bucket = server.bucket("bench")
        pipeflow.settings.storage_options = server.storage_options
        pipeflow.settings.state_dir = os.path.join(tmp, "state")  # history, locks, staging
        options = server.storage_options
        url = f"{bucket}/pipeflow"
        # warm-up, untimed: connections, imports, moto's first bucket writes
        measure_pipeflow_s3(Row("warm-up", ""), -1, url)
        measure_direct_s3(Row("warm-up", ""), -1, bucket, options)
        rotate([(piped, lambda rep: measure_pipeflow_s3(piped, rep, url)),
                (direct, lambda rep: measure_direct_s3(direct, rep, bucket, options))],
               args.repeat)
    def ratio(part: str) -> str:
        mine, theirs = piped.parts[part], direct.parts[part]
        return f"{statistics.median(mine) / statistics.median(theirs):.2f}x"

    return "\n".join([
        f"Part 2: save + load of a {args.rows:,}-row frame ({frame_mb(_FRAME['df']):.0f} MB "
        f"in memory) on S3 (moto server, 127.0.0.1); medians of {args.repeat}; "
        f"ratio = this time / that time",
        "",
        table([piped, direct], {piped.name: direct.name}, ["save", "load"]),
        "",
        f"pipeflow on S3 vs s3fs + pyarrow direct: {piped.median / direct.median:.2f}x the "
        f"time (save {ratio('save')}, load {ratio('load')})",
    ])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pipeflow.settings.execution_summary = False
    commit = pipeflow_commit()
    wait_quiet(args.wait_quiet)
    print(header(args, commit), flush=True)
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="pipeflow-bench-scale-out-", dir=args.tmpdir)
    try:
        if "tasks" in args.parts:
            print("\n" + part_tasks(args, tmp), flush=True)
        if "s3" in args.parts:
            print("\n" + part_s3(args, tmp), flush=True)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nchecks: every task ran once, every call succeeded, every loaded frame equals the "
          "saved one: OK")
    print(f"\ntotal wall time {time.perf_counter() - started:.1f}s; {load_average()} at end")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2:]))
    sys.exit(main())
