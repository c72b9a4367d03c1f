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


#: what only the task contract (pipeflow/contract.py) and the tasks package may probe
TASK_ATTRIBUTES = {"_file_names", "own_complete", "output_state", "task_lock", "_pipeflow_group",
                   "external", "priority", "retries", "retry_delay", "timeout", "prepare_run",
                   "commit_run", "abort_run", "owned_paths", "missing_outputs",
                   "describe_outputs", "_outputs", "members", "version",
                   "detect_code_changes", "detect_data_changes", "persist", "target_class",
                   "_store", "clean_orphans", "record_path"}


def test_only_the_task_contract_probes_task_attributes():
    """The engine, plan, graph, history... reach tasks through pipeflow.contract.adapt only."""
    import ast

    offenders = []
    for path in sorted((ROOT / "pipeflow").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "pipeflow/contract.py" or rel.startswith("pipeflow/tasks/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in TASK_ATTRIBUTES):
                offenders.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "\n".join(offenders)
