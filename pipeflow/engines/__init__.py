"""Engines run a plan.

``LocalEngine`` (embedded, in-process) is the default; ``LuigiEngine`` shares a run with
other processes through luigi's central scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pipeflow.events import RunResult, Sink
from pipeflow.plan import Plan


class Engine(Protocol):
    """Something that runs the pending tasks of a plan and reports events to sinks."""

    def run(self, plan: Plan, sinks: Sequence[Sink]) -> RunResult:
        """Run what ``plan`` says is pending; return the result."""
        ...


from pipeflow.engines.local import CancelToken, LocalEngine  # noqa: E402
from pipeflow.engines.luigi import LuigiEngine  # noqa: E402

__all__ = ["CancelToken", "Engine", "LocalEngine", "LuigiEngine", "RunResult"]
