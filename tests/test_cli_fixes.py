"""Issue 12, what an adversarial tester of the ``pipeflow`` command found, fixed.

``sys.exit()`` in a task's ``run()`` is that task's failure; import-time prints stay off
standard output; ``results --json`` keeps floats exact; a failing ``requires()`` and a
module that fails to import say where; params files refuse bad keys, duplicates and YAML
aliases; ``reset`` of a missing data dir creates nothing; ``dag`` refuses a format that
contradicts the file's extension; ``--params`` completes file names.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import pipeflow
from pipeflow.cli import main
from pipeflow.errors import TaskFailedError

EXITS = '''
import sys
import pipeflow

class E(pipeflow.tasks.TaskJson):
    mode = pipeflow.Parameter(default="ok")
    def run(self):
        if self.mode == "exit":
            sys.exit(0)
        if self.mode == "exit3":
            sys.exit(3)
        self.save({"mode": self.mode})
'''

NOISY = '''
import pipeflow
print("IMPORT-TIME PRINT")

class N(pipeflow.tasks.TaskJson):
    x = pipeflow.FloatParameter(default=0.1)
    def run(self):
        self.save({"x": self.x + 0.2, "tiny": 1e-12, "r2": 0.4849058889476753, "n": 3})
'''

CERR = '''
import pipeflow

class X(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({})

class Y(pipeflow.tasks.TaskJson):
    def requires(self):
        raise KeyError("requires blew up")
    def run(self):
        self.save({})
'''

PLAIN = '''
import pipeflow

class Train(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter(default=1)
    cols = pipeflow.ListParameter(default=[])
    def run(self):
        self.save({"n": self.n})
'''


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Invoke ``pipeflow`` in tmp_path; modules written there are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    runner = CliRunner()

    def invoke(*args, **kwargs):
        out = runner.invoke(main, [str(a) for a in args], prog_name="pipeflow", **kwargs)
        assert "Traceback" not in out.output, out.output
        return out

    yield invoke
    for name in set(sys.modules) - before:
        if name.startswith("fx_"):
            del sys.modules[name]


def _write(tmp_path, name, text):
    (tmp_path / f"{name}.py").write_text(text)


def _error(out):
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, out.output
    assert "Usage:" not in out.stderr, out.stderr
    return lines[0]


# -- 1. sys.exit() in run() is that task's failure ------------------------------------------

@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("mode", ["exit", "exit3"])
def test_sys_exit_in_run_is_a_failed_task(cli, tmp_path, workers, mode):
    _write(tmp_path, "fx_exits", EXITS)
    out = cli("run", "fx_exits:E", "-p", f"mode={mode}", "-j", workers, "--dir",
              tmp_path / "d", "--json")
    assert out.exit_code == 1, out.output
    doc = json.loads(out.stdout)
    assert doc["success"] is False
    assert [t["state"] for t in doc["tasks"]] == ["failed"]
    assert "SystemExit" in doc["tasks"][0]["error"]


def test_sys_exit_in_run_leaves_the_rest_of_a_grid_running(cli, tmp_path):
    _write(tmp_path, "fx_exits2", EXITS)
    out = cli("run", "fx_exits2:E", "-g", "mode=exit,ok", "--dir", tmp_path / "d")
    assert out.exit_code == 1, out.output
    assert _error(out) and "SystemExit" in out.stderr
    assert list((tmp_path / "d").rglob("*ok*.json")) or any(
        "ok" in p.read_text() for p in (tmp_path / "d").rglob("*.json"))


@pytest.mark.parametrize("executor", [None, "thread", "process"])
def test_sys_exit_in_run_raises_task_failed_in_python(tmp_path, monkeypatch, executor):
    _write(tmp_path, "fx_exits_api", EXITS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import fx_exits_api

    options = {} if executor is None else {"workers": 2, "executor": executor}
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(fx_exits_api.E(mode="exit"), **options)
    assert "SystemExit" in str(info.value)
    del sys.modules["fx_exits_api"]


def test_sys_exit_at_import_is_a_usage_error_naming_the_module(cli, tmp_path):
    _write(tmp_path, "fx_exit_import", "import sys\nsys.exit(0)\n")
    out = cli("run", "-n", "fx_exit_import:X")
    assert out.exit_code == 2, out.output
    line = _error(out)
    assert "fx_exit_import" in line and "sys.exit" in line


# -- 2. import-time prints never reach a machine-readable standard output -------------------

@pytest.mark.parametrize("args", [
    ["preview", "--json"], ["run", "-n", "--json"], ["run", "--json"],
    ["results", "--json", "--missing", "nan"], ["results", "--csv", "--missing", "nan"],
    ["dag", "--format", "svg"], ["dag", "--format", "mmd"], ["dag"]])
def test_import_time_prints_go_to_stderr(cli, tmp_path, args):
    _write(tmp_path, "fx_noisy", NOISY)
    out = cli(args[0], "fx_noisy:N", *args[1:], "--dir", tmp_path / "d")
    assert out.exit_code in (0, 1), out.output
    assert "IMPORT-TIME PRINT" not in out.stdout
    assert "IMPORT-TIME PRINT" in out.stderr
    if "--json" in args:
        json.loads(out.stdout)


# -- 3. results --json keeps floats exact -------------------------------------------------------

def test_results_json_floats_are_exact(cli, tmp_path):
    _write(tmp_path, "fx_exact", NOISY)
    assert cli("run", "fx_exact:N", "--dir", tmp_path / "d").exit_code == 0
    out = cli("results", "fx_exact:N", "--json", "--dir", tmp_path / "d")
    assert out.exit_code == 0, out.output
    row = json.loads(out.stdout)[0]
    assert row["x"] == 0.1 + 0.2 and row["tiny"] == 1e-12
    assert row["r2"] == 0.4849058889476753
    assert row["n"] == 3 and isinstance(row["n"], int)


def test_results_json_missing_nan_keeps_ints(cli, tmp_path):
    _write(tmp_path, "fx_exact2", NOISY)
    where = ["--dir", tmp_path / "d"]
    assert cli("run", "fx_exact2:N", "-p", "x=0.5", *where).exit_code == 0
    out = cli("results", "fx_exact2:N", "-g", "x=0.5,0.7", "--missing", "nan", "--json", *where)
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    done = [r for r in rows if r.get("n") is not None]
    assert len(done) == 1 and done[0]["n"] == 3 and isinstance(done[0]["n"], int)
    assert any(r.get("n") is None for r in rows)


# -- 4. a failing requires() says where -----------------------------------------------------------

def test_failing_requires_says_where_in_the_shell(cli, tmp_path):
    _write(tmp_path, "fx_cerr", CERR)
    out = cli("preview", "fx_cerr:Y", "--dir", tmp_path / "d")
    assert out.exit_code == 1, out.output
    line = _error(out)
    assert "requires blew up" in line
    assert "above" not in line
    assert "fx_cerr.py:10" in line


# -- 5. a module that fails to import, or does not exist ----------------------------------------

def test_missing_dependency_of_the_module_exits_1_with_file_and_line(cli, tmp_path):
    _write(tmp_path, "fx_depmiss", "import os\nimport nonexistent_dep_xyz\n")
    out = cli("preview", "fx_depmiss:X")
    assert out.exit_code == 1, out.output
    line = _error(out)
    assert "fx_depmiss.py:2" in line and "nonexistent_dep_xyz" in line


def test_syntax_error_is_located_in_the_file(cli, tmp_path):
    _write(tmp_path, "fx_syntax", "x = 1\n\ndef f(:\n    pass\n")
    out = cli("preview", "fx_syntax:X")
    assert out.exit_code == 1, out.output
    line = _error(out)
    assert "fx_syntax.py:3" in line and "SyntaxError" in line
    assert "frozen" not in line


def test_a_module_that_does_not_exist_is_a_usage_error_with_a_hint(cli, tmp_path):
    out = cli("preview", "fx_nowhere:X")
    assert out.exit_code == 2, out.output
    line = _error(out)
    assert "fx_nowhere" in line and "working directory" in line
    _write(tmp_path, "fx_tasks", PLAIN)
    out = cli("preview", "fx_tasks.py:Train")
    assert out.exit_code == 2, out.output
    assert "fx_tasks:Train" in _error(out)


# -- 6, 7, 9. params files: keys, duplicates, aliases ----------------------------------------------

@pytest.mark.parametrize("name,text,words", [
    ("k4.yaml", "grid:\n  1: [2]\n", ["k4.yaml", "1"]),
    ("kn.yaml", "grid: {null: [1]}\n", ["kn.yaml", "None"]),
    ("top.yaml", "1: 2\n", ["top.yaml", "1"]),
    ("gnull.yaml", "grid: null\n", ["gnull.yaml", "grid"]),
    ("dup.yaml", "n: 1\nn: 2\n", ["dup.yaml", "'n'", "line 2"]),
    ("dup.json", '{"n": 1, "n": 5}', ["dup.json", "'n'"]),
    ("dupg.yaml", "grid:\n  n: [1]\n  n: [2]\n", ["dupg.yaml", "'n'"]),
])
def test_bad_params_files_exit_2_naming_the_file_and_key(cli, tmp_path, name, text, words):
    _write(tmp_path, "fx_plain", PLAIN)
    (tmp_path / name).write_text(text)
    out = cli("run", "-n", "fx_plain:Train", "--params", name)
    assert out.exit_code == 2, out.output
    line = _error(out)
    for word in words:
        assert word in line, line
    assert "not a dict" not in line and "TypeError" not in line


def test_a_repeated_grid_option_is_refused(cli, tmp_path):
    _write(tmp_path, "fx_plain2", PLAIN)
    out = cli("run", "-n", "fx_plain2:Train", "-g", "n=1,2", "-g", "n=3")
    assert out.exit_code == 2, out.output
    assert "-g n" in _error(out)


def test_yaml_aliases_are_refused_quickly(cli, tmp_path):
    _write(tmp_path, "fx_plain3", PLAIN)
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, cur in zip("abcdef", "bcdefg"):
        text += f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]\n"
    text += "grid: {cols: [*g]}\n"
    (tmp_path / "laughs.yaml").write_text(text)
    started = time.monotonic()
    out = cli("run", "-n", "fx_plain3:Train", "--params", "laughs.yaml")
    assert time.monotonic() - started < 10
    assert out.exit_code == 2, out.output
    line = _error(out)
    assert "laughs.yaml" in line and "alias" in line


# -- 8. reset -------------------------------------------------------------------------------------

def test_reset_of_a_missing_dir_creates_nothing(cli, tmp_path):
    _write(tmp_path, "fx_plain4", PLAIN)
    out = cli("reset", "fx_plain4:Train", "--dir", tmp_path / "typo_dir", "--yes")
    assert out.exit_code == 0, out.output
    assert "Nothing was deleted" in out.output and "typo_dir" in out.output
    assert not (tmp_path / "typo_dir").exists()


def _pipeflow(tmp_path, *args, **kwargs):
    script = pathlib.Path(sys.executable).with_name("pipeflow")
    return subprocess.run([str(script), *map(str, args)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, **kwargs)


def test_reset_answered_no_says_nothing_was_deleted(tmp_path):
    _write(tmp_path, "fx_plain5", PLAIN)
    where = ["--dir", tmp_path / "d"]
    assert _pipeflow(tmp_path, "run", "fx_plain5:Train", *where).returncode == 0
    proc = _pipeflow(tmp_path, "reset", "fx_plain5:Train", *where, input="n\n")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing was deleted" in proc.stdout and "Deleted the outputs" not in proc.stdout
    assert list((tmp_path / "d").rglob("*.json"))


# -- 10. dag's -o and --format, --params completion ------------------------------------------------

def test_dag_format_contradicting_the_extension_is_refused(cli, tmp_path):
    _write(tmp_path, "fx_plain6", PLAIN)
    out = cli("dag", "fx_plain6:Train", "--format", "svg", "-o", "x.mmd")
    assert out.exit_code == 2, out.output
    assert "x.mmd" in _error(out) and "svg" in _error(out)
    assert not (tmp_path / "x.mmd").exists()


def test_params_completes_file_names(tmp_path, monkeypatch):
    (tmp_path / "sweep.yaml").write_text("n: 1\n")
    env = {**os.environ, "_PIPEFLOW_COMPLETE": "bash_complete",
           "COMP_WORDS": "pipeflow run fx:Train --params sw", "COMP_CWORD": "4"}
    script = pathlib.Path(sys.executable).with_name("pipeflow")
    proc = subprocess.run([str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.stdout.splitlines() == ["file,sw"], proc.stdout + proc.stderr


def test_console_script_json_and_svg_hold_only_the_document(tmp_path):
    _write(tmp_path, "fx_noisy_sh", NOISY)
    proc = _pipeflow(tmp_path, "preview", "fx_noisy_sh:N", "--json", "--dir", tmp_path / "d")
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)
    assert "IMPORT-TIME PRINT" in proc.stderr
    proc = _pipeflow(tmp_path, "dag", "fx_noisy_sh:N", "--format", "svg", "--dir",
                     tmp_path / "d")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.lstrip().startswith("<"), proc.stdout[:80]


def test_console_script_sys_exit_in_run_fails_the_task(tmp_path):
    _write(tmp_path, "fx_exits_sh", EXITS)
    proc = _pipeflow(tmp_path, "run", "fx_exits_sh:E", "-p", "mode=exit", "--dir",
                     tmp_path / "d")
    assert proc.returncode == 1, proc.stderr
    assert "SystemExit" in proc.stderr and "Traceback" not in proc.stderr


def test_a_wrong_task_class_name_says_which_there_are(cli, tmp_path):
    # `pipeflow run tasks:train` printed click's usage and "tasks has no task class 'train'"
    _write(tmp_path, "fx_names", "import pipeflow\n\n"
           "class Train(pipeflow.tasks.TaskJson):\n    pass\n\n"
           "class Prepare(pipeflow.tasks.TaskJson):\n    pass\n\nNOT_A_TASK = 1\n")
    out = cli("preview", "fx_names:train", "--dir", tmp_path / "d")
    assert out.exit_code == 2, out.output
    assert _error(out) == ("Error: TARGET 'fx_names:train': module 'fx_names' has no task "
                           "class 'train'. Did you mean 'Train'? Its task classes: Prepare, "
                           "Train.")


def test_results_before_any_run_says_so_instead_of_an_empty_frame(cli, tmp_path):
    # `pipeflow results --missing skip` before a run printed pandas' "Empty DataFrame /
    # Columns: [] / Index: []"
    _write(tmp_path, "fx_none", "import pipeflow\n\n"
           "class Score(pipeflow.tasks.TaskJson):\n"
           "    alpha = pipeflow.FloatParameter(default=0.1)\n\n"
           "    def run(self):\n        self.save({'score': self.alpha})\n")
    for args in (["--missing", "skip"], ["--missing", "nan"], ["-g", "alpha=0.1,0.2",
                                                               "--missing", "skip"]):
        out = cli("results", "fx_none:Score", "--dir", tmp_path / "d", *args)
        assert out.exit_code == 0, out.output
        assert out.stdout == "" and "Empty DataFrame" not in out.output
        flows = "none of the 2 flows has" if "-g" in args else "the flow has not"
        assert out.stderr == (f"No results yet: {flows} run. Run it first: pipeflow run "
                              f"fx_none:Score (with the same -p, --params and -g).\n")
    out = cli("results", "fx_none:Score", "--dir", tmp_path / "d", "--missing", "skip",
              "--json")
    assert out.exit_code == 0 and out.stdout.strip() == "[]"
