#!/usr/bin/env python
"""Time TaskPqPandas save + load against calling pyarrow directly, and compare compressions.

Part 1, pipeflow against direct pyarrow, same compression (default: pipeflow's own,
``pipeflow.targets.PqPandasTarget.compression``), each with and without fsync:

* ``pipeflow TaskPqPandas``: ``pipeflow.run(Big(), execution_summary=False)`` after
  ``Big().reset(confirm=False)`` (save), then ``Big().outputLoad()`` (load), with
  ``pipeflow.settings.fsync`` on (pipeflow's default) and off. ``Big.run()`` does
  ``self.save(df)``; the frame is built once, before any timing.
* ``pyarrow direct``: ``pa.Table.from_pandas(df)`` + ``pq.write_table(table, path,
  compression=C)``, then ``pq.read_table(path).to_pandas()``.
* ``pandas direct``: ``df.to_parquet(path, engine='pyarrow', compression=C)``, then
  ``pd.read_parquet(path)``.

"with fsync" for the direct variants means an explicit ``os.fsync`` of the written file,
the way pipeflow does it (reopen, fsync). The baseline of each fsync setting is the faster
of the two direct variants (lower median save+load).

Part 2, compressions (``snappy``, ``zstd``, ``gzip``, ``lz4``, ``None``) through direct
pyarrow: write time, the fsync of the written file (timed separately), read time and file
size, with ratios against snappy.

A warm-up round runs every variant once, untimed, and checks each loaded frame against the
saved one (``pd.testing.assert_frame_equal``); the script exits non-zero if a check fails.
Then medians over ``--repeat`` timed repetitions; the order of the variants rotates
between repetitions.

    python benchmarks/bench_parquet.py                  # 2,000,000 rows, 5 repetitions
    python benchmarks/bench_parquet.py --quick          # 200,000 rows, 2 repetitions
"""

from __future__ import annotations

import argparse
import datetime
import gc
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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from _common import add_run_options, load_average, pipeflow_commit, wait_quiet

import pipeflow
import pipeflow.targets
import pipeflow.tasks

COMPRESSIONS: tuple[str | None, ...] = ("snappy", "zstd", "gzip", "lz4", None)
GOAL = 1.15  # pipeflow save+load <= GOAL x direct pyarrow, same compression

#: the frame every variant saves; built once in main(), before any timing
DF: pd.DataFrame | None = None
#: keyword arguments Big.run() passes to self.save (compression when not pipeflow's default)
SAVE_KWARGS: dict[str, Any] = {}


class Big(pipeflow.tasks.TaskPqPandas):
    """Saves the module-level frame as parquet."""

    def run(self) -> None:
        self.save(DF, **SAVE_KWARGS)


class BenchFailure(Exception):
    """A loaded frame differs from the saved one, or a run failed."""


# -- the data ----------------------------------------------------------------------------

def make_frame(rows: int, data: str = "random", seed: int = 0) -> pd.DataFrame:
    """10 columns: 4 float64, 3 int64, 2 strings (1,000 and 20,000 distinct), 1 datetime.

    ``data='random'``: the numbers are mostly full-entropy random draws (floats at full
    precision, 40-bit integers), the worst case for compression. ``data='repetitive'``:
    the same columns with few distinct values (rounded floats, integers from 10,000 values,
    timestamps at whole seconds), closer to typical business or sensor data.
    """
    rng = np.random.default_rng(seed)
    cities = np.array([f"city_{k:04d}" for k in range(1_000)], dtype=object)
    users = np.array([f"user_{k:06d}_{rng.integers(1e9):09d}" for k in range(20_000)],
                     dtype=object)
    noisy = rng.normal(0.0, 1.0, rows)
    noisy[rng.random(rows) < 0.05] = np.nan
    large = rng.integers(-(2**40), 2**40, rows, dtype=np.int64)
    event_us = np.sort(rng.integers(0, 365 * 86400 * 10**6, rows))
    floats = {
        "f_normal": rng.normal(100.0, 15.0, rows),
        "f_uniform": rng.random(rows),
        "f_price": np.round(rng.lognormal(3.0, 1.0, rows), 2),
        "f_nan": noisy,
    }
    if data == "repetitive":
        floats = {"f_normal": np.round(floats["f_normal"], 1),
                  "f_uniform": np.round(floats["f_uniform"], 3),
                  "f_price": floats["f_price"], "f_nan": np.round(noisy, 2)}
        large = rng.choice(large[:10_000], rows)
        event_us = event_us // 10**6 * 10**6
    elif data != "random":
        raise ValueError(f"unknown data kind {data!r}")
    frame = pd.DataFrame({
        **floats,
        "i_id": np.arange(rows, dtype=np.int64),
        "i_small": rng.integers(0, 100, rows, dtype=np.int64),
        "i_large": large,
        "s_city": pd.array(cities[rng.integers(0, len(cities), rows)], dtype="str"),
        "s_user": pd.array(users[rng.integers(0, len(users), rows)], dtype="str"),
        "t_event": pd.Timestamp("2024-01-01") + pd.to_timedelta(event_us, unit="us"),
    })
    return frame


def frame_mb(frame: pd.DataFrame) -> float:
    return frame.memory_usage(deep=True).sum() / 1e6


# -- the variants ------------------------------------------------------------------------

def fsync_file(path: str) -> None:
    """Flush ``path`` to disk the way pipeflow does: reopen it and fsync."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@dataclass
class Variant:
    name: str
    fsync: bool
    save: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    size: int = 0


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def check_equal(what: str, loaded: pd.DataFrame) -> None:
    try:
        pd.testing.assert_frame_equal(loaded, DF)
    except AssertionError as exc:
        raise BenchFailure(f"{what}: the loaded frame differs from the saved one:\n{exc}") \
            from exc


def run_pipeflow(v: Variant, data_dir: str, check: bool) -> None:
    pipeflow.set_dir(data_dir)
    default_fsync = pipeflow.settings.fsync
    pipeflow.settings.fsync = v.fsync
    try:
        Big().reset(confirm=False)
        elapsed, result = timed(lambda: pipeflow.run(Big(), execution_summary=False))
        if not result or len(result.by_state("completed")) != 1:
            raise BenchFailure(f"{v.name}: pipeflow.run did not complete Big: {result!r}")
        path = str(Big().output().path)
        load_s, loaded = timed(lambda: Big().outputLoad())
    finally:
        pipeflow.settings.fsync = default_fsync
    record(v, elapsed, load_s, os.path.getsize(path))
    if check:
        check_equal(v.name, loaded)


def run_direct(v: Variant, kind: str, path: str, compression: str | None, check: bool) -> None:
    if os.path.exists(path):
        os.unlink(path)

    def save() -> None:
        if kind == "pyarrow":
            table = pa.Table.from_pandas(DF)
            pq.write_table(table, path, compression=compression)
        else:
            DF.to_parquet(path, engine="pyarrow", compression=compression)
        if v.fsync:
            fsync_file(path)

    def load() -> pd.DataFrame:
        if kind == "pyarrow":
            return pq.read_table(path).to_pandas()
        return pd.read_parquet(path, engine="pyarrow")

    save_s, _ = timed(save)
    load_s, loaded = timed(load)
    record(v, save_s, load_s, os.path.getsize(path))
    if check:
        check_equal(v.name, loaded)


def record(v: Variant, save_s: float, load_s: float, size: int) -> None:
    v.save.append(save_s)
    v.load.append(load_s)
    v.total.append(save_s + load_s)
    v.size = size


@dataclass
class Codec:
    compression: str | None
    write: list[float] = field(default_factory=list)
    fsync: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)
    size: int = 0

    @property
    def label(self) -> str:
        return str(self.compression)


def run_codec(c: Codec, path: str, check: bool) -> None:
    if os.path.exists(path):
        os.unlink(path)

    def write() -> None:
        pq.write_table(pa.Table.from_pandas(DF), path, compression=c.compression)

    write_s, _ = timed(write)
    fsync_s, _ = timed(lambda: fsync_file(path))
    read_s, loaded = timed(lambda: pq.read_table(path).to_pandas())
    c.write.append(write_s)
    c.fsync.append(fsync_s)
    c.read.append(read_s)
    c.size = os.path.getsize(path)
    if check:
        check_equal(f"compression={c.label}", loaded)


# -- reporting ---------------------------------------------------------------------------

def med(xs: list[float]) -> float:
    return statistics.median(xs)


def sec(x: float) -> str:
    """Seconds with 3 decimals, 4 below 0.1 s (small frames)."""
    return f"{x:.3f}" if x >= 0.1 else f"{x:.4f}"


def mb(size: int) -> str:
    return f"{size / 1e6:.1f}" if size >= 10e6 else f"{size / 1e6:.3f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def render(cols: list[str], lines: list[list[str]], right: set[int]) -> str:
    widths = [max(len(c), *(len(line[k]) for line in lines)) for k, c in enumerate(cols)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if k in right else c.ljust(w)
                         for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(cols), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def header(args: argparse.Namespace, commit: str) -> str:
    return "\n".join([
        "pipeflow parquet I/O benchmark",
        f"date:      {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"command:   {shlex.join([sys.executable, *sys.argv])}",
        f"python:    {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.platform()}",
        f"versions:  pipeflow {pipeflow.__version__} (commit {commit}), "
        f"pyarrow {pa.__version__}, pandas {pd.__version__}, numpy {np.__version__}, "
        f"luigi {version('luigi')}",
        f"cpus:      os.cpu_count()={os.cpu_count()}, {load_average()} at start",
        f"settings:  rows={args.rows:,}, data={args.data}, repeat={args.repeat}, "
        f"compression={args.compression} (PqPandasTarget.compression="
        f"{pipeflow.targets.PqPandasTarget.compression!r}), "
        f"temp dirs under {args.tmpdir or tempfile.gettempdir()}",
    ])


def io_table(variants: list[Variant], baselines: dict[bool, Variant]) -> str:
    cols = ["variant", "fsync", "save med s", "load med s", "total med s", "total min",
            "total max", "file MB", "save ratio", "load ratio", "total ratio", "ratio vs"]
    lines = []
    for v in variants:
        base = baselines[v.fsync]
        is_base = v is base
        lines.append([
            v.name, "on" if v.fsync else "off", sec(med(v.save)), sec(med(v.load)),
            sec(med(v.total)), sec(min(v.total)), sec(max(v.total)),
            mb(v.size),
            "" if is_base else ratio(med(v.save), med(base.save)),
            "" if is_base else ratio(med(v.load), med(base.load)),
            "" if is_base else ratio(med(v.total), med(base.total)),
            "(baseline)" if is_base else f"{base.name}, fsync {'on' if v.fsync else 'off'}",
        ])
    return render(cols, lines, right=set(range(2, 11)))


def codec_table(codecs: list[Codec]) -> str:
    ref = next(c for c in codecs if c.compression == "snappy")
    cols = ["compression", "write med s", "fsync med s", "read med s", "write+read s",
            "file MB", "write vs snappy", "read vs snappy", "w+r vs snappy", "size vs snappy"]
    lines = []
    for c in codecs:
        wr = med(c.write) + med(c.read)
        ref_wr = med(ref.write) + med(ref.read)
        lines.append([
            c.label, sec(med(c.write)), sec(med(c.fsync)), sec(med(c.read)), sec(wr),
            mb(c.size), ratio(med(c.write), med(ref.write)),
            ratio(med(c.read), med(ref.read)), ratio(wr, ref_wr), ratio(c.size, ref.size),
        ])
    return render(cols, lines, right=set(range(1, 10)))


# -- main --------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=None,
                    help="rows of the frame (default 2,000,000; 200,000 with --quick)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="repetitions; medians are reported (default 5; 2 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 200,000 rows, 2 repeats")
    ap.add_argument("--data", choices=("random", "repetitive"), default="random",
                    help="random: mostly full-entropy numbers (default); repetitive: the same "
                         "columns with few distinct values (see make_frame)")
    ap.add_argument("--compression", default=None,
                    help="compression of part 1 (default: PqPandasTarget.compression); "
                         "'none' for no compression")
    ap.add_argument("--codecs", default="snappy,zstd,gzip,lz4,none",
                    help="compressions of part 2, comma-separated ('none': uncompressed; "
                         "default: snappy,zstd,gzip,lz4,none); snappy is always included, "
                         "as the reference")
    ap.add_argument("--no-codecs", dest="codecs", action="store_const", const="",
                    help="skip part 2 (the compression comparison)")
    add_run_options(ap, f"pipeflow is above {GOAL}x the baseline", "where the temp dirs go")
    args = ap.parse_args(argv)
    args.rows = args.rows if args.rows is not None else (200_000 if args.quick else 2_000_000)
    args.repeat = args.repeat if args.repeat is not None else (2 if args.quick else 5)
    if args.compression is None:
        args.compression = pipeflow.targets.PqPandasTarget.compression
    elif args.compression.lower() == "none":
        args.compression = None
    if args.codecs:
        wanted = [None if c.strip().lower() == "none" else c.strip().lower()
                  for c in args.codecs.split(",") if c.strip()]
        bad = [c for c in wanted if c not in COMPRESSIONS]
        if bad:
            ap.error(f"--codecs: unknown {bad}; choose from snappy,zstd,gzip,lz4,none")
        args.codecs = [c for c in COMPRESSIONS if c in wanted or c == "snappy"]
    else:
        args.codecs = []
    if args.rows < 1 or args.repeat < 1:
        ap.error("--rows and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    global DF
    args = parse_args(argv)
    pipeflow.settings.execution_summary = False
    commit = pipeflow_commit()  # of the sources imported, before any waiting
    wait_quiet(args.wait_quiet)
    print(header(args, commit), flush=True)

    t0 = time.perf_counter()
    DF = make_frame(args.rows, args.data)
    print(f"frame:     {args.rows:,} rows x {DF.shape[1]} columns, {frame_mb(DF):.0f} MB in "
          f"memory, built in {time.perf_counter() - t0:.1f}s; dtypes: "
          + ", ".join(f"{k}={v}" for k, v in DF.dtypes.value_counts().items()), flush=True)
    if args.compression != pipeflow.targets.PqPandasTarget.compression:
        SAVE_KWARGS["compression"] = args.compression

    pf = [Variant("pipeflow TaskPqPandas", fsync) for fsync in (True, False)]
    direct = {(kind, fsync): Variant(f"{kind} direct", fsync)
              for kind in ("pyarrow", "pandas") for fsync in (True, False)}
    codecs = [Codec(c) for c in args.codecs]

    work = tempfile.mkdtemp(prefix="pipeflow-bench-parquet-", dir=args.tmpdir)
    started = time.perf_counter()
    try:
        steps: list[Callable[[bool], None]] = []
        for v in pf:
            steps.append(lambda check, v=v: run_pipeflow(
                v, tempfile.mkdtemp(prefix="data-", dir=work), check))
        for (kind, _fsync), v in direct.items():
            steps.append(lambda check, kind=kind, v=v: run_direct(
                v, kind, os.path.join(work, f"direct-{kind}.parquet"), args.compression, check))
        for c in codecs:
            steps.append(lambda check, c=c: run_codec(
                c, os.path.join(work, f"codec-{c.label}.parquet"), check))
        # round 0 is a warm-up (imports, allocator, page cache) that also checks every
        # loaded frame; its times are discarded
        for rep in range(-1, args.repeat):
            t_rep = time.perf_counter()
            shift = max(rep, 0) % len(steps)
            for step in steps[shift:] + steps[:shift]:
                step(rep < 0)
                # the previous data dirs are not needed any more
                for name in os.listdir(work):
                    if name.startswith("data-"):
                        shutil.rmtree(os.path.join(work, name), ignore_errors=True)
            if rep < 0:
                for item in [*pf, *direct.values(), *codecs]:
                    for times in vars(item).values():
                        if isinstance(times, list):
                            times.clear()
            label = "warm-up + checks" if rep < 0 else f"repeat {rep + 1}/{args.repeat}"
            print(f"  {label}: {time.perf_counter() - t_rep:.1f}s", file=sys.stderr,
                  flush=True)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    baselines = {
        fsync: min((direct[("pyarrow", fsync)], direct[("pandas", fsync)]),
                   key=lambda v: med(v.total))
        for fsync in (True, False)
    }
    variants = [pf[0], direct[("pyarrow", True)], direct[("pandas", True)],
                pf[1], direct[("pyarrow", False)], direct[("pandas", False)]]
    print()
    print(f"Part 1: save + load, compression={args.compression}, medians of {args.repeat}; "
          f"ratios vs the faster direct variant with the same fsync setting")
    print()
    print(io_table(variants, baselines))
    print()
    pf_on, pf_off = pf
    base_on, base_off = baselines[True], baselines[False]
    fs_pf = med(pf_on.save) - med(pf_off.save)
    fs_direct = med(direct[("pyarrow", True)].save) - med(direct[("pyarrow", False)].save)
    print(f"fsync cost (median save with fsync - without): pipeflow {fs_pf * 1e3:+.1f} ms, "
          f"pyarrow direct {fs_direct * 1e3:+.1f} ms, for a {pf_on.size / 1e6:.2f} MB file")
    print(f"pipeflow default (fsync on) vs the fastest direct save+load without fsync: "
          f"{ratio(med(pf_on.total), med(base_off.total))}")
    failed_goal = False
    for v, base in ((pf_on, base_on), (pf_off, base_off)):
        r = med(v.total) / med(base.total)
        met = r <= GOAL
        failed_goal |= not met
        print(f"goal (save+load <= {GOAL}x direct, same compression), fsync "
              f"{'on ' if v.fsync else 'off'}: {r:.2f}x vs {base.name} -> "
              f"{'MET' if met else 'NOT MET'}")
    print("checks: every loaded frame equals the saved one (assert_frame_equal, warm-up "
          "round): OK")

    if codecs:
        print()
        print(f"Part 2: compressions via pyarrow direct (pa.Table.from_pandas + "
              f"pq.write_table; pq.read_table().to_pandas()), medians of {args.repeat}; "
              f"fsync timed separately, not included in write")
        print()
        print(codec_table(codecs))
    print()
    print(f"total wall time {time.perf_counter() - started:.1f}s; {load_average()} at end")
    if args.check_goal and failed_goal:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
