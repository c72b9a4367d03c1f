"""How long ``pipeflow.dag()`` takes, and its layout against grandalf's, side by side.

``pipeflow.dag()`` lays the graph out itself (``display.dag.layered_layout``): no Graphviz,
no dependency. This measures, for sweep-shaped flows of N tasks (a shared data task, N/2
training tasks in two families, a report), the whole call (graph, plan, grouping, layout)
and the SVG, grouped and ungrouped; and the layout step alone against grandalf's Sugiyama
layout of the same boxes and edges (when grandalf is installed: ``pip install grandalf``;
it is not a dependency of pipeflow). Medians of ``--repeat`` runs.

    .venv/bin/python benchmarks/bench_dag.py --sizes 100,500,1000 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from _common import load_average, pipeflow_commit

import pipeflow
from pipeflow.display import dag as dag_module


def flow_of(n: int) -> Any:
    """The root of a sweep of ``n`` tasks (about): data -> n/2 x (fit, score) -> report."""

    class BenchData(pipeflow.tasks.TaskJson):
        def run(self) -> None:
            self.save({})

    @pipeflow.requires(BenchData)
    class BenchFit(pipeflow.tasks.TaskJson):
        i = pipeflow.IntParameter()

        def run(self) -> None:
            self.save({})

    @pipeflow.requires(BenchFit)
    class BenchScore(pipeflow.tasks.TaskJson):
        def run(self) -> None:
            self.save({})

    class BenchReport(pipeflow.tasks.TaskJson):
        k = pipeflow.IntParameter()

        def requires(self) -> list[Any]:
            return [BenchScore(i=i) for i in range(self.k)]

    return BenchReport(k=max(1, (n - 2) // 2))


def svg_of(root: Any, group: bool) -> str:
    return pipeflow.dag(root, group=group).to_svg()


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def grandalf_layout(sizes: list[tuple[float, float]], edges: list[tuple[int, int]]) -> None:
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import SugiyamaLayout

    class View:
        def __init__(self, w: float, h: float) -> None:
            self.w, self.h = w, h

    vs = [Vertex(i) for i in range(len(sizes))]
    for v, (w, h) in zip(vs, sizes):
        v.view = View(w, h)
    g = Graph(vs, [Edge(vs[a], vs[b]) for a, b in edges])
    for part in g.C:
        layout = SugiyamaLayout(part)
        layout.init_all()
        layout.draw(4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,500,1000", help="task counts (comma-separated)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    try:
        import grandalf  # noqa: F401
        has_grandalf = True
    except ImportError:
        has_grandalf = False
    print(f"pipeflow {pipeflow_commit()}, Python {sys.version.split()[0]}, {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        pipeflow.set_dir(tmp)
        head = (f"{'tasks':>6} {'dag() grouped':>14} {'dag() + svg, ungrouped':>23} "
                f"{'svg KB':>7} {'layout':>9}" + (f" {'grandalf':>9} {'ratio':>6}"
                                                   if has_grandalf else ""))
        print(head)
        for n in (int(x) for x in args.sizes.split(",")):
            root = flow_of(n)
            grouped = median_seconds(partial(svg_of, root, True), args.repeat)
            flat = median_seconds(partial(svg_of, root, False),
                                  args.repeat)
            picture = pipeflow.dag(root, group=False)
            size = len(picture.to_svg()) / 1000
            sizes = [picture._box_size(node) for node in picture.nodes]
            edges = [(e.src, e.dst) for e in picture.edges]
            layers = [node.layer for node in picture.nodes]
            ours = median_seconds(partial(dag_module.layered_layout, layers, sizes, edges),
                                  args.repeat)
            line = (f"{picture.n_tasks:>6} {grouped:>13.3f}s {flat:>22.3f}s {size:>7.0f} "
                    f"{ours:>8.3f}s")
            if has_grandalf:
                theirs = median_seconds(partial(grandalf_layout, sizes, edges),
                                        max(1, args.repeat // 2))
                line += f" {theirs:>8.3f}s {theirs / ours:>5.0f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
