"""Graph shapes of the trivial-task benchmarks (no pipeflow import: children import this
before choosing which pipeflow to import)."""

from __future__ import annotations

SHAPES = ("chain", "wide", "diamond")
WIDTH = 10  # width of a diamond layer


def shape_deps(shape: str, n: int) -> list[tuple[int, ...]]:
    """For each task index, the indices it requires; the root is the last index."""
    if n < 2:
        raise ValueError("--n must be at least 2")
    if shape == "chain":
        return [()] + [(i - 1,) for i in range(1, n)]
    if shape == "wide":
        return [()] * (n - 1) + [tuple(range(n - 1))]
    if shape == "diamond":
        layers = max(1, n // WIDTH)
        deps: list[tuple[int, ...]] = [()] * WIDTH
        for layer in range(1, layers):
            previous = tuple(range((layer - 1) * WIDTH, layer * WIDTH))
            deps.extend([previous] * WIDTH)
        deps.append(tuple(range((layers - 1) * WIDTH, layers * WIDTH)))
        return deps
    raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
