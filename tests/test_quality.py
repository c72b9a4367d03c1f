"""Repository checks that CI runs with the tests: lint, types, layering, docs build."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not installed: install the dev extra (pip install -e '.[dev]')")
        return found
    return str(path)


def test_ruff_is_clean():
    proc = _run(_tool("ruff"), "check", "pipeflow", "tests", "benchmarks", "example_project")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean():
    proc = _run(_tool("mypy"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_layers_are_one_way():
    proc = _run(_tool("lint-imports"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_docs_build_in_strict_mode(tmp_path):
    # not -q: it silences the warnings --strict is meant to turn into a failure
    proc = _run(_tool("mkdocs"), "build", "--strict", "-d", str(tmp_path / "site"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    assert (tmp_path / "site" / "index.html").exists()
