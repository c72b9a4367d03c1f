"""Issue 12, the shell: every ``pipeflow`` command and exit code, params files, grids,
``--json``, ``--forced``, resets up and down, ``results``, completion, one real shell run.

A small tasks module (Prepare -> Train -> Evaluate) is written into the test's folder (the
working directory) and the commands are run with click's ``CliRunner``; stdout and stderr
are read apart, as a shell pipes them.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import warnings

import pytest
from click.testing import CliRunner

import pipeflow
from pipeflow import cli as cli_module
from pipeflow.cli import main
from pipeflow.errors import ParameterError

MODULE = "clicmd_tasks"
TASKS = '''
import os
import pipeflow

class Prepare(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter(default=3)
    def run(self):
        print("prepare prints to stdout")
        self.save({"rows": self.n})

@pipeflow.requires(Prepare)
class Train(pipeflow.tasks.TaskJson):
    alpha = pipeflow.FloatParameter(default=0.1)
    model = pipeflow.Parameter(default="ols")
    def run(self):
        self.save({"coef": self.alpha * self.inputLoad()["rows"]})

@pipeflow.requires(Train)
class Evaluate(pipeflow.tasks.TaskJson):
    when = pipeflow.DateParameter(default=None)
    def run(self):
        if os.environ.get("CLICMD_FAIL"):
            raise ValueError("evaluation broke")
        self.save({"score": self.inputLoad()["coef"] * 2, "model": self.model})

class Secretive(pipeflow.tasks.TaskJson):
    token = pipeflow.SecretParameter(default="hunter2")
    def run(self):
        self.save({})
'''
T = f"{MODULE}:Evaluate"


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Invoke ``pipeflow`` in tmp_path (the cwd); no traceback may ever show."""
    (tmp_path / f"{MODULE}.py").write_text(TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CLICMD_FAIL", raising=False)
    runner = CliRunner()

    def invoke(*args, **kwargs):
        out = runner.invoke(main, [str(a) for a in args], prog_name="pipeflow", **kwargs)
        assert "Traceback" not in out.output, out.output
        assert out.exception is None or isinstance(out.exception, SystemExit), \
            repr(out.exception)
        return out

    return invoke


def _error_line(out):
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, out.output
    assert not [ln for ln in out.stdout.splitlines() if ln.startswith("Error")], out.stdout
    return lines[0]


def _outputs(data_dir):
    """The task families with a committed output file."""
    return sorted({p.parent.name for p in data_dir.rglob("*.json")
                   if ".pipeflow" not in p.parts})


# -- help --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [[], ["preview"], ["run"], ["reset"], ["results"],
                                     ["history"]])
def test_every_help_lists_examples(cli, command):
    out = cli(*command, "--help")
    assert out.exit_code == 0
    assert "Examples:" in out.stdout and "pipeflow " in out.stdout
    if not command:
        assert "Exit codes" in out.stdout and "_PIPEFLOW_COMPLETE" in out.stdout


# -- run -n: a dry run, make -q's exit codes ----------------------------------------------------

def test_dry_run_says_what_would_run_and_exits_1_then_0_after_a_run(cli, data_dir):
    out = cli("run", "-n", T)
    assert out.exit_code == 1, out.output
    assert "Would run 3 of 3 tasks" in out.stdout
    lines = out.stdout.splitlines()
    order = [next(i for i, ln in enumerate(lines) if f"{f}(" in ln)
             for f in ("Prepare", "Train", "Evaluate")]
    assert order == sorted(order)  # upstream first
    assert "dry run" in out.stderr and "dry run" not in out.stdout
    assert _outputs(data_dir) == []  # nothing ran
    assert cli("run", T).exit_code == 0
    out = cli("run", "--dry-run", T)
    assert out.exit_code == 0, out.output
    assert "Nothing to run" in out.stdout
    out = cli("run", "-n", T, "-p", "alpha=0.5")  # a new parameter: Train and Evaluate due
    assert out.exit_code == 1
    assert "Would run 2 of 3" in out.stdout and "Prepare" not in out.stdout


def test_dry_run_of_a_missing_dir_creates_nothing(cli, tmp_path):
    out = cli("run", "-n", T, "--dir", tmp_path / "nothere")
    assert out.exit_code == 1
    assert not (tmp_path / "nothere").exists()


@pytest.mark.parametrize("args", [["-p", "alpha=fast"], ["--forced", "Nope"],
                                  ["-p", "zz=1"]])
def test_dry_run_errors_exit_2(cli, args):
    out = cli("run", "-n", T, *args)
    assert out.exit_code == 2, out.output
    _error_line(out)


def test_dry_run_a_broken_module_exits_2_not_1(cli, tmp_path):
    (tmp_path / "clicmd_broken.py").write_text("raise RuntimeError('boom')\n")
    out = cli("run", "-n", "clicmd_broken:X")
    assert out.exit_code == 2  # 1 would read as "something would run"
    assert "RuntimeError: boom" in _error_line(out)
    out = cli("run", "clicmd_broken:X")
    assert out.exit_code == 1  # a plain run keeps 1 for "it failed"


def test_dry_run_json(cli):
    out = cli("run", "-n", T, "--json")
    assert out.exit_code == 1
    doc = json.loads(out.stdout)
    assert doc["dry_run"] is True and doc["to_run"] == 3
    assert [t["will_run"] for t in doc["tasks"]] == [True, True, True]


def test_dry_run_with_forced_counts_the_forced_tasks(cli):
    assert cli("run", T).exit_code == 0
    out = cli("run", "-n", T, "--forced", "Train")
    assert out.exit_code == 1
    assert "Would run 2 of 3" in out.stdout
    assert "    Train(n=3, alpha=0.1, model='ols') (COMPLETE, forced)" in out.stdout.splitlines()
    out = cli("run", "-n", T, "--forced-all")
    assert out.exit_code == 1 and "Would run 1 of 3" in out.stdout


# -- params: -p, files of each format, Kedro's a=1,b=2 --------------------------------------------

def _score(data_dir):
    """The scores of every committed Evaluate output, sorted."""
    return sorted(json.loads(p.read_text())["data"]["score"]
                  for p in data_dir.rglob("Evaluate_*-data.json")
                  if ".pipeflow" not in p.parts)


PARAM_FILES = {
    "p.yaml": "alpha: 0.5\nmodel: gbm\nn: 4\nwhen: 2024-02-29\n",
    "p.yml": "alpha: 0.5\nmodel: gbm\nn: 4\nwhen: '2024-02-29'\n",
    "p.json": '{"alpha": 0.5, "model": "gbm", "n": 4, "when": "2024-02-29"}',
    "p.toml": 'alpha = 0.5\nmodel = "gbm"\nn = 4\nwhen = 2024-02-29\n',
}


@pytest.mark.parametrize("name", list(PARAM_FILES))
def test_params_file_of_each_format(cli, tmp_path, data_dir, name):
    (tmp_path / name).write_text(PARAM_FILES[name])
    out = cli("run", T, "--params", name)
    assert out.exit_code == 0, out.output
    assert _score(data_dir) == [4.0]  # 0.5 * 4 * 2
    out = cli("preview", T, "--params", name, "--json")
    doc = json.loads(out.stdout)
    evaluate = doc["tasks"][-1]
    assert evaluate["params"]["when"] == "2024-02-29" and evaluate["status"] == "COMPLETE"


@pytest.mark.parametrize("name,text,line", [
    ("bad.yaml", "alpha: 0.5\nmodel: [gbm\n", "line 3"),
    ("bad.json", '{"alpha": 0.5,\n "model": }', "line 2"),
    ("bad.toml", 'alpha = 0.5\nmodel = \n', "line 2"),
])
def test_params_file_with_bad_syntax_exits_2_naming_file_and_line(cli, tmp_path, name, text,
                                                                   line):
    (tmp_path / name).write_text(text)
    out = cli("run", T, "--params", name)
    assert out.exit_code == 2
    err = _error_line(out)
    assert name in err and line in err and "not valid" in err


@pytest.mark.parametrize("name,text", [
    ("w.yaml", "alpha: fast\n"), ("w.json", '{"alpha": "fast"}'), ("w.toml", 'alpha = "fast"'),
    ("n.yaml", "n: 1.5\n"), ("b.json", '{"n": true}'),
])
def test_params_file_wrong_type_gives_pythons_message(cli, tmp_path, name, text):
    (tmp_path / name).write_text(text)
    out = cli("run", T, "--params", name)
    assert out.exit_code == 2
    err = _error_line(out)
    data = cli_module._read_params_file(tmp_path / name)
    with pytest.raises(ParameterError) as python:
        pipeflow.Workflow(sys.modules[MODULE].Evaluate, data)
    assert str(python.value) in err  # the same message, plus where the value came from
    assert name in err


def test_a_minus_p_beats_the_file_and_unknown_names_get_did_you_mean(cli, tmp_path, data_dir):
    (tmp_path / "p.yaml").write_text("alpha: 0.5\nn: 4\n")
    assert cli("run", T, "--params", "p.yaml", "-p", "alpha=1.0").exit_code == 0
    assert _score(data_dir) == [8.0]  # 1.0 * 4 * 2
    (tmp_path / "typo.yaml").write_text("alpah: 0.5\n")
    out = cli("run", T, "--params", "typo.yaml")
    assert out.exit_code == 2
    err = _error_line(out)
    assert "'alpah'" in err and "Did you mean 'alpha'?" in err and "typo.yaml" in err
    out = cli("run", T, "-p", "alpah=0.5")
    assert out.exit_code == 2 and "Did you mean 'alpha'?" in _error_line(out)


def test_inherited_parameters_are_accepted_on_the_command_line(cli, data_dir):
    # n is Prepare's; Evaluate has it through @requires
    assert cli("run", T, "-p", "n=5").exit_code == 0
    assert _score(data_dir) == [1.0]


def test_params_file_problems_exit_2(cli, tmp_path):
    for args, words in [
        (["--params", "missing.yaml"], ["missing.yaml", "does not exist"]),
        (["--params", "p.ini"], ["p.ini", ".yaml"]),
    ]:
        (tmp_path / "p.ini").write_text("a=1")
        out = cli("run", T, *args)
        assert out.exit_code == 2, out.output
        err = _error_line(out)
        assert all(w in err for w in words), err
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    out = cli("run", T, "--params", "list.yaml")
    assert out.exit_code == 2 and "mapping" in _error_line(out)


def test_kedro_style_params_pairs(cli, data_dir):
    out = cli("run", T, "--params", "alpha=0.5,n=4,model=a,b")
    assert out.exit_code == 0, out.output
    assert _score(data_dir) == [4.0]
    doc = json.loads(cli("preview", T, "--params", "alpha=0.5,n=4,model=a,b", "--json").stdout)
    assert doc["tasks"][-1]["params"]["model"] == "a,b"  # a comma not before NAME= stays
    assert doc["tasks"][-1]["status"] == "COMPLETE"


# -- grids and results ---------------------------------------------------------------------------

def test_grid_from_the_shell_runs_a_workflow_multi_and_results_shows_it(cli, data_dir):
    out = cli("results", T, "-g", "alpha=0.5,1.0", "-g", "model=ols,gbm")
    assert out.exit_code == 1  # nothing ran yet
    assert "not complete in 4 of 4 flows" in _error_line(out)
    out = cli("run", "-n", T, "-g", "alpha=0.5,1.0", "-g", "model=ols,gbm")
    assert out.exit_code == 1 and "Would run 9 of 9" in out.stdout  # Prepare shared
    out = cli("run", T, "-g", "alpha=0.5,1.0", "-g", "model=ols,gbm")
    assert out.exit_code == 0, out.output
    assert len(_score(data_dir)) == 4
    out = cli("results", T, "-g", "alpha=0.5,1.0", "-g", "model=ols,gbm")
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    assert "score" in lines[0] and "alpha" in lines[0]
    assert any(ln.startswith("alpha=1.0,model=gbm") and "6.0" in ln for ln in lines)
    records = json.loads(cli("results", T, "-g", "alpha=0.5,1.0", "-g", "model=ols,gbm",
                             "--json").stdout)
    assert len(records) == 4
    assert {(r["flow"], r["alpha"], r["score"]) for r in records} >= {
        ("alpha=0.5,model=ols", 0.5, 3.0), ("alpha=1.0,model=gbm", 1.0, 6.0)}
    csv = cli("results", T, "-g", "alpha=0.5,1.0", "-g", "model=ols,gbm", "--csv").stdout
    assert csv.splitlines()[0].startswith("flow,") and len(csv.splitlines()) == 5
    assert cli("run", "-n", T, "-g", "alpha=0.5,1.0", "-g", "model=ols,gbm").exit_code == 0


def test_grid_json_list_form_allows_commas_and_a_grid_in_the_params_file(cli, tmp_path):
    out = cli("run", T, "-g", 'model=["a,b", "c"]', "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert sorted(doc["flows"]) == ["model=a,b", "model=c"] and doc["success"]
    (tmp_path / "sweep.yaml").write_text("n: 4\ngrid:\n  alpha: [0.5, 1.0]\n")
    assert cli("run", T, "--params", "sweep.yaml").exit_code == 0
    records = json.loads(cli("results", T, "--params", "sweep.yaml", "--json").stdout)
    assert [(r["flow"], r["n"], r["score"]) for r in records] == [
        ("alpha=0.5", 4, 4.0), ("alpha=1.0", 4, 8.0)]
    # -p beats the file's grid of the same name: one flow, a single run
    records = json.loads(cli("results", T, "--params", "sweep.yaml", "-p", "alpha=0.5",
                             "--json").stdout)
    assert len(records) == 1 and records[0]["score"] == 4.0


@pytest.mark.parametrize("args,words", [
    (["-g", "alpha=fast,1"], ["'fast'", "-g alpha="]),
    (["-g", "alpha=[0.1,"], ["JSON list"]),
    (["-g", "alpha"], ["NAME=V1,V2"]),
    (["-g", "alpha=1,2", "-p", "alpha=3"], ["both"]),
    (["-g", "alpah=1,2"], ["Did you mean 'alpha'?"]),
])
def test_bad_grids_exit_2(cli, args, words):
    out = cli("run", T, *args)
    assert out.exit_code == 2, out.output
    assert all(w in out.stderr for w in words), out.stderr


def test_results_missing_skip_and_task(cli):
    assert cli("run", T, "-p", "alpha=0.5").exit_code == 0
    out = cli("results", T, "-g", "alpha=0.5,1.0", "--missing", "skip", "--json")
    assert out.exit_code == 0
    assert [r["flow"] for r in json.loads(out.stdout)] == ["alpha=0.5"]
    out = cli("results", T, "-g", "alpha=0.5", "--task", "Train", "--json")
    assert json.loads(out.stdout)[0]["coef"] == 1.5
    out = cli("results", T, "-p", "alpha=0.5")  # no grid: one row
    assert out.exit_code == 0 and "alpha=0.5" in out.stdout


# -- --forced ------------------------------------------------------------------------------------

def test_forced_reruns_the_task_and_what_follows(cli, data_dir):
    assert cli("run", T).exit_code == 0
    out = cli("run", T, "--forced", "Train", "--json")
    assert out.exit_code == 0, out.output
    states = {t["family"]: t["state"] for t in json.loads(out.stdout)["tasks"]}
    assert states == {"Prepare": "up_to_date", "Train": "completed", "Evaluate": "completed"}
    out = cli("run", T, "--forced", f"{MODULE}:Prepare", "--json")
    assert {t["state"] for t in json.loads(out.stdout)["tasks"]} == {"completed"}


def test_an_unknown_forced_task_is_a_usage_error_listing_the_families(cli, data_dir):
    assert cli("run", T).exit_code == 0
    before = sorted(p.stat().st_mtime_ns for p in data_dir.rglob("*.json"))
    out = cli("run", T, "--forced", "Trian")
    assert out.exit_code == 2
    err = _error_line(out)
    assert "Did you mean 'Train'?" in err and "Evaluate, Prepare, Train" in err
    out = cli("run", T, "--forced", f"{MODULE}:Secretive")
    assert out.exit_code == 2 and "'Secretive' is not a task" in _error_line(out)
    assert sorted(p.stat().st_mtime_ns for p in data_dir.rglob("*.json")) == before


# -- reset ---------------------------------------------------------------------------------------

def test_reset_upstream_and_downstream(cli, data_dir):
    assert cli("run", T).exit_code == 0
    assert _outputs(data_dir) == ["Evaluate", "Prepare", "Train"]
    out = cli("reset", T, "--task", "Train", "--downstream", "--yes")
    assert out.exit_code == 0
    assert out.stdout.splitlines() == [
        "Deleted the outputs of 2 tasks:", "    Train(n=3, alpha=0.1, model='ols')",
        "    Evaluate(n=3, alpha=0.1, model='ols', when=None)"]
    assert _outputs(data_dir) == ["Prepare"]
    assert cli("run", T).exit_code == 0
    assert cli("reset", T, "--task", "Train", "--upstream", "--yes").exit_code == 0
    assert _outputs(data_dir) == ["Evaluate"]
    assert cli("run", T).exit_code == 0
    assert cli("reset", T, "--task", "Prepare", "--yes").exit_code == 0
    assert _outputs(data_dir) == ["Evaluate", "Train"]
    assert cli("run", T).exit_code == 0
    assert cli("reset", T, "--upstream", "--yes").exit_code == 0
    assert _outputs(data_dir) == []
    out = cli("reset", T, "--upstream", "--yes")
    assert out.exit_code == 0 and out.stdout == "Deleted the outputs of 0 tasks.\n"


def test_reset_of_a_grid(cli, data_dir):
    assert cli("run", T, "-g", "alpha=0.5,1.0").exit_code == 0
    assert cli("reset", T, "-g", "alpha=0.5,1.0", "--yes").exit_code == 0
    assert _outputs(data_dir) == ["Prepare", "Train"]


@pytest.mark.parametrize("args,words", [
    (["--upstream", "--downstream"], ["pass one"]),
    (["--downstream"], ["--downstream needs --task"]),
    (["--task", "Nope", "--yes"], ["'Nope' is not a task", "Evaluate, Prepare, Train"]),
    (["--task", "Train", "--task", "Prepare", "--upstream"], ["one --task"]),
    ([], ["Pass --yes"]),
])
def test_reset_bad_input_exits_2_and_deletes_nothing(cli, data_dir, args, words):
    assert cli("run", T).exit_code == 0
    out = cli("reset", T, *args)
    assert out.exit_code == 2, out.output
    assert all(w in _error_line(out) for w in words)
    assert _outputs(data_dir) == ["Evaluate", "Prepare", "Train"]


# -- --json: only JSON on stdout -----------------------------------------------------------------

def test_preview_json_schema(cli):
    out = cli("preview", T, "-p", "alpha=0.5", "--json")
    assert out.exit_code == 0
    doc = json.loads(out.stdout)
    assert set(doc) == {"target", "flows", "tasks", "counts", "to_run"}
    assert doc["counts"] == {"COMPLETE": 0, "PENDING": 3, "STALE": 0} and doc["to_run"] == 3
    assert doc["flows"] == {"": {"alpha": 0.5}}
    assert [t["family"] for t in doc["tasks"]] == ["Prepare", "Train", "Evaluate"]
    assert set(doc["tasks"][0]) == {"task", "task_id", "family", "params", "status", "reason",
                                    "will_run"}


def test_run_json_keeps_what_tasks_print_off_stdout(cli):
    out = cli("run", T, "--json")
    assert out.exit_code == 0
    doc = json.loads(out.stdout)  # the task's print went elsewhere
    assert "prepare prints to stdout" in out.stderr
    assert doc["success"] is True and doc["counts"] == {"completed": 3}
    assert set(doc["tasks"][0]) == {"task", "task_id", "family", "params", "state", "reason",
                                    "error", "duration", "attempts"}
    assert "execution summary" not in out.output  # --json turns the summary off


def test_run_json_of_a_failed_run_exits_1_with_the_document(cli, monkeypatch):
    monkeypatch.setenv("CLICMD_FAIL", "1")
    out = cli("run", T, "--json")
    assert out.exit_code == 1
    doc = json.loads(out.stdout)
    assert doc["success"] is False
    failed = [t for t in doc["tasks"] if t["state"] == "failed"]
    assert failed[0]["family"] == "Evaluate" and "evaluation broke" in failed[0]["error"]
    assert _error_line(out).startswith("Error: TaskFailedError: 1 task(s) failed")
    assert "ValueError: evaluation broke" in out.stderr


def test_history_json(cli):
    assert json.loads(cli("history", "--json").stdout) == []
    assert cli("run", T).exit_code == 0
    out = cli("history", "--json", "--last", "2")
    records = json.loads(out.stdout)
    assert len(records) == 2
    assert list(records[0]) == list(cli_module.HISTORY_FIELDS)
    assert records[0]["status"] == "completed" and isinstance(records[0]["params"], dict)
    assert isinstance(records[0]["attempt"], int)


def test_secrets_stay_hidden_in_json_and_results(cli):
    out = cli("preview", f"{MODULE}:Secretive", "-p", "token=s3cr3t-value", "--json")
    assert out.exit_code == 0
    assert "s3cr3t-value" not in out.output and "***" in out.stdout
    assert cli("run", f"{MODULE}:Secretive", "-p", "token=s3cr3t-value").exit_code == 0
    out = cli("results", f"{MODULE}:Secretive", "-p", "token=s3cr3t-value", "--json")
    assert out.exit_code == 0, out.output
    assert "s3cr3t-value" not in out.output and json.loads(out.stdout)[0]["token"] == "***"


# -- exit codes of every command -----------------------------------------------------------------

COMMANDS = {"preview": ["preview", T], "run": ["run", T], "reset": ["reset", T, "--yes"],
            "results": ["results", T], "history": ["history"], "dry-run": ["run", "-n", T]}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_ctrl_c_exits_130_for_every_command(cli, monkeypatch, name):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "_history_frame" if name == "history" else "_load_task",
                        interrupt)
    out = cli(*COMMANDS[name])
    assert out.exit_code == 130, out.output
    assert "interrupted by Ctrl-C" in out.stderr and out.stdout == ""


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "history"])
def test_bad_input_exits_2_for_every_command(cli, name):
    out = cli(*COMMANDS[name], "-p", "alpha=fast")
    assert out.exit_code == 2
    assert "-p alpha=0.5 (a number)" in _error_line(out)


def test_history_bad_input_exits_2(cli):
    out = cli("history", "--last", "-1")
    assert out.exit_code == 2 and "last must be" in _error_line(out)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_an_unexpected_error_is_one_line_exit_1(cli, monkeypatch, name):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli_module, "_history_frame" if name == "history" else "_spec", broken)
    out = cli(*COMMANDS[name])
    assert out.exit_code == (2 if name == "dry-run" else 1), out.output
    assert "RuntimeError: disk on fire" in _error_line(out)


def test_a_failed_task_exits_1_and_ok_exits_0(cli, monkeypatch):
    assert cli("preview", T).exit_code == 0
    assert cli("history").exit_code == 0
    monkeypatch.setenv("CLICMD_FAIL", "1")
    out = cli("run", T)
    assert out.exit_code == 1 and "TaskFailedError" in _error_line(out)
    assert "ValueError: evaluation broke" in out.stderr
    monkeypatch.delenv("CLICMD_FAIL")
    assert cli("run", T).exit_code == 0
    assert cli("results", T).exit_code == 0
    assert cli("reset", T, "--yes").exit_code == 0


def test_cores_is_workers(cli):
    out = cli("run", T, "--cores", "0")
    assert out.exit_code == 2 and "workers must be a whole number" in _error_line(out)
    assert cli("run", T, "--cores", "2", "--json").exit_code == 0


# -- shell completion ----------------------------------------------------------------------------

@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F"),
                                          ("zsh", "#compdef pipeflow"),
                                          ("fish", "complete --no-files --command pipeflow")])
def test_completion_scripts(cli, shell, marker):
    out = cli(env={"_PIPEFLOW_COMPLETE": f"{shell}_source"})
    assert out.exit_code == 0
    assert marker in out.stdout and "_PIPEFLOW_COMPLETE" in out.stdout


def _complete(cli, words):
    out = cli(env={"_PIPEFLOW_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(words),
                   "COMP_CWORD": str(len(words) - 1)})
    assert out.exit_code == 0
    return [ln.split(",", 1)[1] for ln in out.stdout.splitlines()]


def test_completion_of_targets_params_and_tasks_reads_the_source_without_importing(
        cli, tmp_path):
    (tmp_path / "clicmd_side.py").write_text(
        "open('imported.txt', 'w').close()\nimport pipeflow\n"
        "class Side(pipeflow.tasks.TaskJson):\n    k = pipeflow.IntParameter()\n")
    assert _complete(cli, ["pipeflow", "run", "clicmd_"]) == [
        "clicmd_side:Side", f"{MODULE}:Prepare", f"{MODULE}:Train", f"{MODULE}:Evaluate",
        f"{MODULE}:Secretive"]
    assert _complete(cli, ["pipeflow", "run", f"{MODULE}:E"]) == [f"{MODULE}:Evaluate"]
    # Evaluate's own parameter and those it inherits through @requires in the same file
    assert _complete(cli, ["pipeflow", "run", T, "-p", ""]) == [
        "when=", "alpha=", "model=", "n="]
    assert _complete(cli, ["pipeflow", "run", T, "-g", "al"]) == ["alpha="]
    assert _complete(cli, ["pipeflow", "run", T, "--forced", "Tr"]) == ["Train"]
    assert _complete(cli, ["pipeflow", "run", "clicmd_side:Side", "-p", ""]) == ["k="]
    assert not (tmp_path / "imported.txt").exists()  # TAB never runs the user's module


# -- one real shell run --------------------------------------------------------------------------

def test_the_installed_pipeflow_script_in_a_real_shell(tmp_path):
    script = pathlib.Path(sys.executable).with_name("pipeflow")
    assert script.exists(), f"the pipeflow console script is not installed at {script}"
    (tmp_path / f"{MODULE}.py").write_text(TASKS)
    env = {k: v for k, v in os.environ.items() if k != "CLICMD_FAIL"}
    env["PYTHONPATH"] = str(tmp_path)

    def sh(*args):
        return subprocess.run([str(script), *args, "--dir", str(tmp_path / "d")],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    first = sh("run", "-n", T)
    assert first.returncode == 1 and "Would run 3 of 3" in first.stdout, first.stderr
    ran = sh("run", T, "-p", "alpha=0.5")
    assert ran.returncode == 0, ran.stderr
    assert "execution summary" in ran.stdout
    again = sh("run", "-n", T, "-p", "alpha=0.5")
    assert again.returncode == 0 and "Nothing to run" in again.stdout, again.stderr
    shown = sh("preview", T, "-p", "alpha=0.5", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["to_run"] == 0 and doc["counts"]["COMPLETE"] == 3
    forced = sh("run", T, "-p", "alpha=0.5", "--forced", "Prepare", "--json", "--cores", "2")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["counts"] == {"completed": 3}  # only JSON on stdout
    assert "prepare prints to stdout" in forced.stderr  # printed in a worker process
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        failed = sh("run", T, "--params", "nothere.yaml")
    assert failed.returncode == 2 and failed.stderr.startswith("Error: ")
    assert "Traceback" not in failed.stderr and failed.stdout == ""


# -- docs/command-line.md: its console blocks print what the page says -----------------------------

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "command-line.md"
_FILE_MARK = "<!-- file: "


def _page_parts(text):
    """The files (name -> text) and console blocks ([(command, expected output)]) of a page."""
    files, blocks, pending = {}, [], None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(_FILE_MARK):
            pending = line[len(_FILE_MARK):].removesuffix("-->").strip()
        elif line.startswith("```"):
            close = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            body = lines[i + 1:close]
            if pending is not None:
                files[pending] = "\n".join(body) + "\n"
            elif line.strip() == "```console":
                commands = []
                for ln in body:
                    if ln.startswith("$ "):
                        commands.append([ln[2:], []])
                    else:
                        commands[-1][1].append(ln)
                blocks.append([(c, "\n".join(out)) for c, out in commands])
            pending = None
            i = close
        i += 1
    return files, blocks


def _normalized(text):
    text = re.sub(r"(?m)^(    - .+?) in \d+\.\d+s$", r"\1 in <duration>", text)
    return re.sub(r"(?m)[ \t]+$", "", text).strip("\n")


def _run_page(folder):
    """Run the page's console blocks in ``folder``: [(command, documented, actual)]."""
    files, blocks = _page_parts(PAGE.read_text(encoding="utf-8"))
    for name, text in files.items():
        (folder / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLICMD", "PIPEFLOW"))}
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(folder)
    env["COLUMNS"] = "100"
    out = []
    for block in blocks:
        for command, documented in block:
            proc = subprocess.run(["bash", "-c", command], cwd=folder, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=120, check=False)
            out.append((command, documented, proc.stdout))
    return out


def test_the_command_line_page_shows_what_the_commands_print(tmp_path):
    mismatches = [f"$ {c}\n--- documented\n{d}\n--- actual\n{a}"
                  for c, d, a in _run_page(tmp_path) if _normalized(d) != _normalized(a)]
    assert not mismatches, "\n\n".join(mismatches)
