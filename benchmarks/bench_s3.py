#!/usr/bin/env python
"""Time TaskPqPandas save + load on S3 against s3fs + pyarrow directly (issue 14).

An S3 endpoint (moto in server mode, tests/servers.py) is started on 127.0.0.1 for the run
and stopped at the end. Variants, each saving and loading the same frame:

* ``pipeflow TaskPqPandas``: ``pipeflow.run(Big())`` with the data dir ``s3://bench/data``
  after ``Big().reset()`` (save: written to a local temp file and hashed, uploaded on
  commit, then the commit record), then ``Big().outputLoad()`` (load: the commit record,
  a download to a local temp file checked against its hash, ``pd.read_parquet``).
* ``s3fs + pyarrow direct``: ``pq.write_table(table, key, filesystem=fs)`` through an
  s3fs file system, then ``pq.read_table(key, filesystem=fs).to_pandas()``.
* ``pandas + storage_options``: ``df.to_parquet('s3://...', storage_options=...)``, then
  ``pd.read_parquet('s3://...', storage_options=...)``.

The baseline is the faster direct variant (median save+load). A warm-up round checks each
loaded frame against the saved one. Medians over ``--repeat`` repetitions, the order of the
variants rotating.

    python benchmarks/bench_s3.py               # 1,000,000 rows, 3 repetitions
    python benchmarks/bench_s3.py --quick       # 100,000 rows, 2 repetitions
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from _common import load_average, pipeflow_commit
from bench_parquet import make_frame

import pipeflow

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from servers import s3  # noqa: E402

DF: pd.DataFrame | None = None


class Big(pipeflow.tasks.TaskPqPandas):
    """Saves the module-level frame as parquet."""

    def run(self) -> None:
        self.save(DF)


def main() -> int:
    global DF
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeat = 100_000, 2
    DF = make_frame(args.rows)
    with tempfile.TemporaryDirectory() as tmp, s3(pathlib.Path(tmp, "moto")) as server:
        os.environ.update(server.env)
        server.bucket("bench")
        opts = server.storage_options
        pipeflow.settings.storage_options = opts
        pipeflow.settings.state_dir = os.path.join(tmp, "state")
        pipeflow.settings.execution_summary = False
        pipeflow.settings.history = False
        pipeflow.set_dir("s3://bench/data")
        import s3fs

        fs = s3fs.S3FileSystem(**opts)
        compression = pipeflow.targets.PqPandasTarget.compression

        def pipeflow_save() -> None:
            Big().reset(confirm=False)
            pipeflow.run(Big())

        def pipeflow_load() -> pd.DataFrame:
            return Big().outputLoad()

        def arrow_save() -> None:
            pq.write_table(pa.Table.from_pandas(DF), "bench/direct.parquet", filesystem=fs,
                           compression=compression)

        def arrow_load() -> pd.DataFrame:
            return pq.read_table("bench/direct.parquet", filesystem=fs).to_pandas()

        def pandas_save() -> None:
            DF.to_parquet("s3://bench/pandas.parquet", storage_options=opts,
                          compression=compression)

        def pandas_load() -> pd.DataFrame:
            return pd.read_parquet("s3://bench/pandas.parquet", storage_options=opts)

        variants: dict[str, tuple[Callable[[], None], Callable[[], Any]]] = {
            "pipeflow TaskPqPandas": (pipeflow_save, pipeflow_load),
            "s3fs + pyarrow direct": (arrow_save, arrow_load),
            "pandas + storage_options": (pandas_save, pandas_load),
        }
        for save, load in variants.values():  # warm-up, checked
            save()
            pd.testing.assert_frame_equal(load(), DF, check_dtype=False)
        times: dict[str, list[tuple[float, float]]] = {n: [] for n in variants}
        names = list(variants)
        for r in range(args.repeat):
            for name in names[r % len(names):] + names[:r % len(names)]:
                save, load = variants[name]
                t0 = time.perf_counter()
                save()
                t1 = time.perf_counter()
                load()
                t2 = time.perf_counter()
                times[name].append((t1 - t0, t2 - t1))
    print(f"# S3 (moto on 127.0.0.1) parquet save+load, {args.rows:,} rows, "
          f"median of {args.repeat}; pipeflow {pipeflow_commit()}; {load_average()}")
    med = {n: (statistics.median(s for s, _ in v), statistics.median(ld for _, ld in v),
               statistics.median(s + ld for s, ld in v)) for n, v in times.items()}
    base = min(med[n][2] for n in names[1:])
    print(f"{'variant':28} {'save s':>8} {'load s':>8} {'total s':>8} {'x base':>7}")
    for n in names:
        s, ld, total = med[n]
        print(f"{n:28} {s:8.3f} {ld:8.3f} {total:8.3f} {total / base:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
