#!/usr/bin/env python
"""Time the commit protocol's overhead: the same workloads on a baseline revision and now.

Compared side by side in one run: baseline, a git revision (``--baseline-rev``, default
``eff2dea``, the last commit before the commit protocol: per-task manifest with content
hashes, cross-process locks, temp-file cleanup) in a temp ``git worktree``; current, this
repository's working tree, or another revision (``--current-rev``) in a second worktree.

Each measurement runs in a fresh ``sys.executable`` child (``bench_commit.py --child ...``)
that puts the source root first on ``sys.path``, imports pipeflow, fails unless
``pipeflow.__file__`` is in that tree (pipeflow is installed editable), runs this file's
workload code and prints JSON. Timings exclude interpreter start-up and imports.

* ``run10k``: ``pipeflow.run`` of N trivial TaskPickle tasks (shapes as in
  bench_scheduling.py), all pending, fresh data dir, luigi's instance cache cleared; then
  the no-op re-run (everything complete) in the same child.
* ``parquet``: a TaskPqPandas whose run() saves a 2,000,000 x 10 frame (float64, int64,
  string, category) built before timing, via ``pipeflow.run``; then ``outputLoad()``.

Repetitions alternate baseline and current (A B A B ...); medians and the ratio
current/baseline are reported. Goals: run, all pending <= 1.10x; parquet save <= 1.05x.

    python benchmarks/bench_commit.py                     # run10k x5, parquet x7
    python benchmarks/bench_commit.py --quick             # 1,000 tasks, 200,000 rows, x2
    python benchmarks/bench_commit.py --shapes chain,wide,diamond --check-goal
    python benchmarks/bench_commit.py --current-rev HEAD  # two revisions, no working tree
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from typing import Any

from _shapes import SHAPES, shape_deps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: row -> the most current/baseline may be
GOALS = {"run, all pending": 1.10, "parquet save (run)": 1.05}


# -- the child: import pipeflow from --src, run one workload, print JSON -----------------

def import_pipeflow(src: str) -> types.ModuleType:
    sys.path.insert(0, src)
    import pipeflow

    expected = os.path.realpath(os.path.join(src, "pipeflow", "__init__.py"))
    if os.path.realpath(pipeflow.__file__ or "") != expected:
        raise SystemExit(f"imported pipeflow from {pipeflow.__file__}, expected {expected}")
    return pipeflow


def timed(fn: Any) -> tuple[float, Any]:
    import luigi.task_register

    luigi.task_register.Register.clear_instance_cache()
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def work_run10k(pf: types.ModuleType, spec: dict[str, Any]) -> dict[str, float]:
    deps = shape_deps(spec["shape"], spec["n"])

    class CommitBenchTask(pf.tasks.TaskPickle):
        i = pf.IntParameter()

        def requires(self) -> list[Any]:
            return [CommitBenchTask(i=j) for j in deps[self.i]]

        def run(self) -> None:
            self.save(self.i)

    root = len(deps) - 1
    seconds, result = timed(lambda: pf.run(CommitBenchTask(i=root), progress=False))
    if not result or len(result.by_state("completed")) != len(deps):
        raise SystemExit(f"run did not complete {len(deps)} tasks: {result!r}")
    again, result = timed(lambda: pf.run(CommitBenchTask(i=root), progress=False))
    if not result or result.by_state("completed"):
        raise SystemExit(f"no-op re-run ran tasks: {result!r}")
    return {"run, all pending": seconds, "no-op re-run, all complete": again}


def make_frame(rows: int, seed: int = 0) -> Any:
    """10 columns: 4 float64 (one with NaNs), 4 int64, 1 string (object), 1 category."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    noisy = rng.normal(0.0, 1.0, rows)
    noisy[rng.random(rows) < 0.05] = np.nan
    words = np.array([f"key_{k:05d}" for k in range(10_000)], dtype=object)
    return pd.DataFrame({
        "f_normal": rng.normal(100.0, 15.0, rows), "f_uniform": rng.random(rows),
        "f_price": np.round(rng.lognormal(3.0, 1.0, rows), 2), "f_nan": noisy,
        "i_id": np.arange(rows, dtype=np.int64), "i_small": rng.integers(0, 100, rows),
        "i_large": rng.integers(-(2**40), 2**40, rows, dtype=np.int64),
        "i_sorted": np.sort(rng.integers(0, 10**12, rows, dtype=np.int64)),
        "s_key": words[rng.integers(0, len(words), rows)],
        "c_cat": pd.Categorical.from_codes(rng.integers(0, 50, rows),
                                           [f"cat_{k:02d}" for k in range(50)]),
    })


def work_parquet(pf: types.ModuleType, spec: dict[str, Any]) -> dict[str, float]:
    frame = make_frame(spec["rows"])

    class CommitBenchFrame(pf.tasks.TaskPqPandas):
        def run(self) -> None:
            self.save(frame)

    save, result = timed(lambda: pf.run(CommitBenchFrame(), progress=False))
    if not result or len(result.by_state("completed")) != 1:
        raise SystemExit(f"parquet run failed: {result!r}")
    load, loaded = timed(lambda: CommitBenchFrame().outputLoad())
    if loaded.shape != frame.shape or loaded["i_large"].sum() != frame["i_large"].sum():
        raise SystemExit(f"loaded frame {loaded.shape} differs from the saved {frame.shape}")
    return {"parquet save (run)": save, "parquet load": load}


def child(argv: list[str]) -> int:
    """``--child WORKLOAD --src ROOT --spec JSON``: print {"file", "rows"} as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=("probe", "run10k", "parquet"), required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--spec", default="{}")
    args = ap.parse_args(argv)
    spec = json.loads(args.spec)
    pf = import_pipeflow(args.src)
    rows: dict[str, float] = {}
    if args.child != "probe":
        import luigi.task_register  # noqa: F401  (imported before timing)

        pf.set_dir(spec["data"])
        pf.settings.fsync = spec["fsync"]
        pf.settings.execution_summary = False
        rows = (work_run10k if args.child == "run10k" else work_parquet)(pf, spec)
    print(json.dumps({"file": pf.__file__, "version": pf.__version__, "rows": rows}))
    return 0


# -- the parent ------------------------------------------------------------------------

def git(*args: str) -> str:
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()


def run_child(workload: str, src: str, spec: dict[str, Any], tmpdir: str | None) -> dict:
    data = tempfile.mkdtemp(prefix="pipeflow-bench-commit-", dir=tmpdir)
    try:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", workload, "--src", src,
               "--spec", json.dumps({**spec, "data": data})]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{workload} child on {src} failed (rc {proc.returncode}):\n"
                               f"{proc.stderr.strip()}\n{proc.stdout.strip()}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(data, ignore_errors=True)


def load_common() -> types.ModuleType:
    """benchmarks/_common.py; it imports pipeflow: if the working tree's does not import
    (edits in progress), stand in a stub so pipeflow_commit() still finds the repository."""
    try:
        import _common
    except Exception as exc:
        print(f"note: working-tree pipeflow does not import ({exc!r})", file=sys.stderr)
        for name in [m for m in sys.modules if m == "pipeflow" or m.startswith("pipeflow.")]:
            del sys.modules[name]
        stub = types.ModuleType("pipeflow")
        stub.__file__ = os.path.join(REPO, "pipeflow", "__init__.py")
        sys.modules["pipeflow"] = stub
        import _common
    return _common


def parse_args(argv: list[str], common: types.ModuleType) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--baseline-rev", default="eff2dea", help="git revision (default eff2dea)")
    ap.add_argument("--current-rev", default=None,
                    help="compare this git revision instead of the working tree")
    ap.add_argument("--workloads", default="run10k,parquet", help="subset of run10k,parquet")
    ap.add_argument("--shapes", default="chain", help=f"run10k shapes, of {','.join(SHAPES)}")
    ap.add_argument("--n", type=int, default=None, help="run10k tasks (default 10000)")
    ap.add_argument("--rows", type=int, default=None, help="parquet rows (default 2000000)")
    ap.add_argument("--repeat", type=int, default=None, help="run10k repetitions (default 5)")
    ap.add_argument("--repeat-parquet", type=int, default=None,
                    help="parquet repetitions (default 7)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1,000 tasks, 200,000 rows, 2 repetitions unless given")
    ap.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True,
                    help="pipeflow.settings.fsync in the children (default: on)")
    common.add_run_options(ap, "a goal (current/baseline median ratio) is not met",
                           "where the temp data dirs go (default: tempfile's default)")
    args = ap.parse_args(argv)
    quick = args.quick
    args.n = args.n or (1000 if quick else 10_000)
    args.rows = args.rows or (200_000 if quick else 2_000_000)
    args.repeat = args.repeat or (2 if quick else 5)
    args.repeat_parquet = args.repeat_parquet or (2 if quick else 7)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.shapes = [s for s in args.shapes.split(",") if s]
    if set(args.workloads) - {"run10k", "parquet"} or set(args.shapes) - set(SHAPES):
        ap.error(f"--workloads of run10k,parquet; --shapes of {','.join(SHAPES)}")
    if args.n < 2 or args.rows < 1:
        ap.error("--n must be >= 2 and --rows >= 1")
    return args


def table(times: dict[tuple[str, str], dict[str, list[float]]]) -> tuple[str, bool]:
    cols = ["workload", "row", "baseline s", "current s", "ratio", "goal", "verdict", "n"]
    lines, all_met = [], True
    for (workload, row), sides in times.items():
        base, cur = statistics.median(sides["baseline"]), statistics.median(sides["current"])
        ratio = cur / base if base > 0 else float("inf")
        goal, verdict = GOALS.get(row), ""
        if goal is not None:
            verdict = "met" if ratio <= goal else "NOT met"
            all_met = all_met and ratio <= goal
        lines.append([workload, row, f"{base:.3f}", f"{cur:.3f}", f"{ratio:.3f}x",
                      f"<= {goal:.2f}x" if goal else "", verdict, str(len(sides["current"]))])
    widths = [max(len(c), *(len(line[k]) for line in lines)) for k, c in enumerate(cols)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if 2 <= k <= 4 else c.ljust(w)
                         for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(cols), fmt(["-" * w for w in widths]), *map(fmt, lines)]), all_met


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        return child(argv)
    common = load_common()
    args = parse_args(argv, common)
    base_sha = git("rev-parse", "--verify", f"{args.baseline_rev}^{{commit}}")
    cur_sha = git("rev-parse", "--verify", f"{args.current_rev}^{{commit}}") \
        if args.current_rev else None
    trees = tempfile.mkdtemp(prefix="pipeflow-bench-commit-trees-")
    added: list[str] = []
    try:
        srcs = {"baseline": os.path.join(trees, "baseline"), "current": REPO}
        if cur_sha:
            srcs["current"] = os.path.join(trees, "current")
        for side, sha in (("baseline", base_sha), ("current", cur_sha)):
            if sha:
                git("worktree", "add", "--detach", srcs[side], sha)
                added.append(srcs[side])
        probes = {side: run_child("probe", src, {}, args.tmpdir) for side, src in srcs.items()}
        current = f"{args.current_rev} = {cur_sha[:12]}" if cur_sha else \
            f"working tree {REPO} (pipeflow_commit() = {common.pipeflow_commit()})"
        print("\n".join([
            "pipeflow commit-protocol overhead benchmark",
            f"date:      {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"command:   {shlex.join([sys.executable, *sys.argv])}",
            f"python:    {platform.python_version()} ({platform.python_implementation()}), "
            f"{platform.platform()}",
            f"baseline:  {args.baseline_rev} = {base_sha[:12]}",
            f"current:   {current}",
            *(f"imported:  {side}: pipeflow {p['version']} from {p['file']}"
              for side, p in probes.items()),
            f"settings:  n={args.n}, shapes={','.join(args.shapes)}, rows={args.rows}, "
            f"repeat={args.repeat} (parquet {args.repeat_parquet}), fsync={args.fsync}, "
            f"workloads={','.join(args.workloads)}, "
            f"data dirs under {args.tmpdir or tempfile.gettempdir()}",
        ]), flush=True)
        common.wait_quiet(args.wait_quiet)
        print(f"load:      {common.load_average()} (before measuring)", flush=True)
        jobs: list[tuple[str, str, dict[str, Any], int]] = []
        if "run10k" in args.workloads:
            jobs += [(f"run10k {s}", "run10k", {"shape": s, "n": args.n}, args.repeat)
                     for s in args.shapes]
        if "parquet" in args.workloads:
            jobs.append(("parquet", "parquet", {"rows": args.rows}, args.repeat_parquet))
        times: dict[tuple[str, str], dict[str, list[float]]] = {}
        started = time.perf_counter()
        for label, workload, spec, repeat in jobs:
            for rep in range(repeat):
                for side in ("baseline", "current"):
                    out = run_child(workload, srcs[side], {**spec, "fsync": args.fsync},
                                    args.tmpdir)
                    if out["file"] != probes[side]["file"]:
                        raise RuntimeError(f"{side} imported {out['file']}")
                    for row, seconds in out["rows"].items():
                        times.setdefault((label, row), {"baseline": [], "current": []})
                        times[(label, row)][side].append(seconds)
                print(f"  {label} repeat {rep + 1}/{repeat}: " + ", ".join(
                    f"{row} {v['baseline'][-1]:.3f}/{v['current'][-1]:.3f}s"
                    for (lab, row), v in times.items() if lab == label),
                    file=sys.stderr, flush=True)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"FAILED: {exc}\n{getattr(exc, 'stderr', '') or ''}", file=sys.stderr)
        return 1
    finally:
        for tree in added:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", tree],
                           capture_output=True)
        shutil.rmtree(trees, ignore_errors=True)
    text, all_met = table(times)
    print()
    print(text)
    print(f"\ntotal wall time {time.perf_counter() - started:.1f}s; medians over n "
          f"repetitions; ratio = current median / baseline median; {common.load_average()}")
    return 2 if args.check_goal and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
