#!/usr/bin/env python
"""Time change detection: status checks with it on against off, and hashing throughput.

Measured side by side in one process:

* ``preview``: ``pipeflow.preview`` of N committed trivial tasks (shapes as in
  bench_scheduling.py) with ``settings.detect_code_changes``/``detect_data_changes`` on,
  against both off (the output-exists check, commit records still read and verified).
  Repetitions alternate on and off; medians and the ratio on/off are reported. Goal: at
  most 2x.
* ``hash``: :func:`pipeflow.integrity.hash_file` of a large file against reading it
  (``readinto`` a reused buffer, the floor for any hash), GB/s. Goal: at least 1 GB/s.
* ``status of a large output``: ``_store.complete()`` of a task whose output is that file, as
  committed (size, mtime and inode compared: no hashing), against after a ``touch``
  (re-hashed once, then recorded as still the same).

    python benchmarks/bench_changes.py                 # 10,000 tasks x 3 shapes, 1 GiB
    python benchmarks/bench_changes.py --quick         # 1,000 tasks, 128 MiB
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from _common import add_run_options, load_average, pipeflow_commit, wait_quiet
from _shapes import SHAPES, shape_deps

import pipeflow
from pipeflow import integrity

PREVIEW_GOAL = 2.0
HASH_GOAL = 1.0  # GB/s


class ChangeBenchTask(pipeflow.tasks.TaskPickle):
    i = pipeflow.IntParameter()

    def requires(self):
        return [ChangeBenchTask(i=d) for d in DEPS[self.i]]

    def run(self):
        self.save(self.i)


class ChangeBenchBig(pipeflow.tasks.TaskPickle):
    def run(self):
        self.save(b"")


DEPS: list[tuple[int, ...]] = []


def bench_preview(shape: str, n: int, repeat: int, tmp: str) -> tuple[float, float]:
    pipeflow.set_dir(os.path.join(tmp, f"data-{shape}"))  # task ids repeat across shapes
    DEPS[:] = shape_deps(shape, n)
    root = ChangeBenchTask(i=n - 1)
    pipeflow.run(root, progress=False)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeat):
        for on in (True, False):
            pipeflow.settings.detect_code_changes = on
            pipeflow.settings.detect_data_changes = on
            t0 = time.perf_counter()
            preview = pipeflow.preview(root, print_it=False)
            times[on].append(time.perf_counter() - t0)
            if preview.counts()["COMPLETE"] != len(preview.tasks()):
                raise SystemExit(f"expected every task complete, got {preview.counts()}")
    return statistics.median(times[True]), statistics.median(times[False])


def write_big(path: str, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)


def read_all(path: str) -> None:
    buf = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass


def bench_hash(path: str, size: int, repeat: int) -> tuple[float, float]:
    read_all(path)  # into the page cache: measure hashing, not the disk
    t_hash, t_read = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        integrity.hash_file(path)
        t_hash.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        read_all(path)
        t_read.append(time.perf_counter() - t0)
    return size / statistics.median(t_hash) / 1e9, size / statistics.median(t_read) / 1e9


def bench_big_status(path: str, repeat: int) -> tuple[float, float]:
    task = ChangeBenchBig()
    pipeflow.run(task, progress=False)
    out = task.output().path
    os.replace(path, out)  # the big file becomes the committed output
    record = task._store.record_file()
    doc = integrity.read_record(record)[0]
    assert doc is not None
    files = {"data": (integrity.FileRecord.of(out),)}
    integrity.write_record(record, integrity.CommitRecord(doc.task, files, doc.fingerprint))
    plain, touched = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        assert task._store.complete()
        plain.append(time.perf_counter() - t0)
        os.utime(out)
        t0 = time.perf_counter()
        assert task._store.complete()
        touched.append(time.perf_counter() - t0)
    return statistics.median(plain), statistics.median(touched)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="1,000 tasks, 128 MiB, 3 repeats")
    add_run_options(ap, f"preview on/off > {PREVIEW_GOAL}x or hashing < {HASH_GOAL} GB/s",
                    "where the throw-away data dir goes")
    args = ap.parse_args()
    if args.quick:
        args.n, args.size_mib, args.repeat = 1_000, 128, 3
    wait_quiet(args.wait_quiet)
    tmp = tempfile.mkdtemp(prefix="pipeflow-bench-changes-", dir=args.tmpdir)
    failed = False
    try:
        pipeflow.set_dir(os.path.join(tmp, "data"))
        pipeflow.settings.execution_summary = False
        pipeflow.settings.history = False
        print(f"pipeflow {pipeflow_commit()}, Python {sys.version.split()[0]}, "
              f"{load_average()}, N={args.n:,}, medians of {args.repeat}")
        print(f"\n{'preview of N committed tasks':32} {'on':>9} {'off':>9} {'on/off':>7}")
        for shape in args.shapes.split(","):
            on, off = bench_preview(shape, args.n, args.repeat, tmp)
            ratio = on / off
            failed |= ratio > PREVIEW_GOAL
            print(f"  {shape:30} {on:8.3f}s {off:8.3f}s {ratio:6.2f}x")
        size = args.size_mib << 20
        big = os.path.join(tmp, "big.bin")
        write_big(big, size)
        gbps, floor = bench_hash(big, size, args.repeat)
        failed |= gbps < HASH_GOAL
        print(f"\nhashing {args.size_mib:,} MiB (page cache)  xxh3-128 {gbps:6.2f} GB/s, "
              f"read alone {floor:6.2f} GB/s, hash/read time {floor / gbps:5.2f}x")
        plain, touched = bench_big_status(big, args.repeat)
        print(f"status of a {args.size_mib:,} MiB output: as committed {plain * 1e6:8.1f} us, "
              f"after a touch {touched * 1e3:8.1f} ms (re-hashed, record refreshed)")
        print(f"\ngoals: preview on/off <= {PREVIEW_GOAL}x, hashing >= {HASH_GOAL} GB/s: "
              f"{'NOT MET' if failed else 'met'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failed and args.check_goal:
        sys.exit(2)


if __name__ == "__main__":
    main()
