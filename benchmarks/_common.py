"""Helpers shared by the benchmark scripts: what was measured, and a quiet machine."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pipeflow


def pipeflow_commit() -> str:
    """``git rev-parse --short HEAD`` of the pipeflow checkout, ``+dirty`` if pipeflow/ has
    uncommitted changes (the sources measured are then not exactly that commit)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(pipeflow.__file__)))
    try:
        rev = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "pipeflow"],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on this machine skews the timings."""
    try:
        return "load average " + "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def wait_quiet(max_seconds: float, threshold: float = 0.5) -> None:
    """Wait (up to ``max_seconds``) until the 1-minute load average is below ``threshold``."""
    deadline = time.monotonic() + max_seconds
    while max_seconds > 0 and os.getloadavg()[0] >= threshold:
        if time.monotonic() >= deadline:
            print(f"note: still busy after --wait-quiet {max_seconds:g}s ({load_average()});"
                  f" measuring anyway", file=sys.stderr, flush=True)
            return
        time.sleep(5)


def add_run_options(ap: argparse.ArgumentParser, goal_help: str, tmp_help: str) -> None:
    """The options every goal-checking benchmark takes: --check-goal, --wait-quiet, --tmpdir."""
    ap.add_argument("--check-goal", action="store_true",
                    help=f"also exit non-zero (2) if {goal_help}")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the 1-minute load average to drop "
                         "below 0.5 (default 0: do not wait)")
    ap.add_argument("--tmpdir", default=None, help=tmp_help)
