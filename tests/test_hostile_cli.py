"""Issue 11, kinds 7, 8 and 10: bad API arguments and CLI input, data loss on bad arguments,
the ``pipeflow`` command (history formatting, confirmation, Ctrl-C and SIGTERM).

Every bad argument is a :class:`~pipeflow.errors.ParameterError` raised before anything is
touched (committed outputs byte-identical, no run recorded); the CLI exits 2 with a message
and never a traceback.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import pipeflow
from pipeflow import runstore
from pipeflow.cli import main
from pipeflow.errors import ParameterError, PipeflowError


class Kept(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter(default=1)

    def run(self):
        self.save({"n": self.n})


@pipeflow.requires(Kept)
class KeptDown(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"down": self.inputLoad()["n"]})


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(pathlib.Path(root).rglob("*"))
            if p.is_file() and not p.name.startswith(("history.db", ".pipeflow.lock"))}


@pytest.fixture
def committed(data_dir):
    """KeptDown and Kept run once: the outputs a bad argument must not touch."""
    pipeflow.run(KeptDown())
    before = _snapshot(data_dir)
    assert len(before) >= 4  # two outputs and two commit records
    runs_before = len(pipeflow.runs())

    def unchanged():
        assert _snapshot(data_dir) == before
        assert len(pipeflow.runs()) == runs_before

    return unchanged


# -- kind 7/8: every run option is checked before anything is touched --------------------------

def _fn(event):
    pass


BAD_OPTIONS = [
    ("workers", 0), ("workers", -1), ("workers", "x"), ("workers", "2"), ("workers", 2.0),
    ("workers", True), ("workers", None),
    ("executor", "proces"), ("executor", 1),
    ("if_locked", "wiat"), ("if_locked", None),
    ("forced_all", "False"), ("forced_all_upstream", "no"), ("confirm", "no"),
    ("abort", "x"), ("execution_summary", "x"), ("progress", "yes"),
    ("callbacks", _fn), ("callbacks", [1]), ("callbacks", "f"),
    ("cancel", "x"), ("engine", "x"),
    ("forced", pipeflow.tasks.TaskJson),
]


@pytest.mark.parametrize("name,value", BAD_OPTIONS,
                         ids=[f"{n}={v!r}" for n, v in BAD_OPTIONS])
@pytest.mark.parametrize("entry", ["run", "flow.run", "flows.run", "start", "flow.start"])
def test_a_bad_option_is_refused_before_any_output_is_deleted(committed, entry, name, value):
    options = {"forced_all": True, name: value}
    if name == "forced_all":
        options["forced_all_upstream"] = True
    with pytest.raises(ParameterError) as info:
        if entry == "run":
            pipeflow.run(KeptDown(), **options)
        elif entry == "flow.run":
            pipeflow.Workflow(KeptDown).run(**options)
        elif entry == "flows.run":
            pipeflow.WorkflowMulti(KeptDown, {"a": {}}).run(**options)
        elif entry == "start":
            pipeflow.start(KeptDown(), **options).result(60)
        else:
            pipeflow.Workflow(KeptDown).start(**options).result(60)
    assert name in str(info.value)
    committed()


def test_option_messages_name_the_option_the_value_and_a_fix():
    with pytest.raises(ParameterError, match=r"workers must be a whole number of at least 1, "
                                             r"not 'x'"):
        pipeflow.run(Kept(), workers="x")
    with pytest.raises(ParameterError, match=r"Did you mean 'process'\?"):
        pipeflow.run(Kept(), executor="proces")
    with pytest.raises(ParameterError, match=r"forced_all must be True or False, not 'False'"):
        pipeflow.run(Kept(), forced_all="False")
    with pytest.raises(ParameterError, match=r"callbacks=\[_fn\]"):
        pipeflow.run(Kept(), callbacks=_fn)


def test_numpy_whole_numbers_and_bools_are_accepted(data_dir):
    assert pipeflow.run(Kept(), workers=np.int64(1), forced_all=np.bool_(True),
                        confirm=np.bool_(False))
    assert pipeflow.run(Kept(), workers=1, abort=1, forced_all=0)


@pytest.mark.parametrize("attr,value", [
    ("retries", "x"), ("retries", "2"), ("retries", -1), ("retries", 1.5), ("retries", True),
    ("retry_delay", "x"), ("retry_delay", -1), ("retry_delay", float("nan")),
    ("timeout", "x"), ("timeout", "10"), ("timeout", 0), ("timeout", -1),
    ("timeout", float("inf")), ("timeout", True)])
def test_a_task_with_a_bad_retries_or_timeout_is_refused_before_its_outputs_go(
        committed, monkeypatch, attr, value):
    monkeypatch.setattr(Kept, attr, value)
    with pytest.raises(ParameterError) as info:
        pipeflow.run(KeptDown(), forced_all_upstream=True)
    assert f"Kept.{attr}" in str(info.value) and repr(value) in str(info.value)
    committed()


def test_a_bad_retries_is_refused_when_the_task_is_due_too(data_dir, monkeypatch):
    monkeypatch.setattr(Kept, "retries", "x")
    with pytest.raises(ParameterError, match="Kept.retries"):
        pipeflow.run(KeptDown())
    assert pipeflow.runs().empty  # nothing started


def test_good_retries_and_timeouts_work(data_dir, monkeypatch):
    monkeypatch.setattr(Kept, "retries", np.int32(2))
    monkeypatch.setattr(Kept, "timeout", 30)
    monkeypatch.setattr(Kept, "retry_delay", 0)
    assert pipeflow.run(KeptDown())


# -- kind 8: resets and other destructive calls check their arguments first --------------------

@pytest.mark.parametrize("call", [
    lambda: pipeflow.Workflow(KeptDown).reset(confirm="no"),
    lambda: pipeflow.Workflow(KeptDown).reset_upstream(confirm="no"),
    lambda: pipeflow.Workflow(KeptDown).reset_downstream(Kept, confirm="no"),
    lambda: pipeflow.WorkflowMulti(KeptDown, {"a": {}}).reset(confirm="no"),
    lambda: pipeflow.WorkflowMulti(KeptDown, {"a": {}}).reset_upstream(confirm=None),
    lambda: pipeflow.WorkflowMulti(KeptDown, {"a": {}, "b": {"n": 2}}).reset(
        [KeptDown, "Kept"]),
    lambda: pipeflow.WorkflowMulti(KeptDown, {"a": {}}).run(flow=[]),
    lambda: pipeflow.invalidate_upstream(KeptDown(), confirm="no"),
    lambda: pipeflow.invalidate_downstream(Kept(), KeptDown(), confirm="no"),
    lambda: pipeflow.invalidate_all(confirm="no"),
    lambda: pipeflow.invalidate_orphans([], confirm=False),
    lambda: KeptDown().reset(confirm="no"),
    lambda: pipeflow.invalidate_downstream("Kept", KeptDown()),
    lambda: pipeflow.Workflow(KeptDown).reset_downstream(None),
], ids=["flow.reset", "flow.reset_upstream", "flow.reset_downstream", "flows.reset",
        "flows.reset_upstream", "flows.reset-bad-list", "flows.run-no-flow",
        "invalidate_upstream", "invalidate_downstream", "invalidate_all",
        "invalidate_orphans-nothing-kept", "task.reset", "invalidate_downstream-not-a-task",
        "flow.reset_downstream-None"])
def test_a_bad_reset_argument_deletes_nothing(committed, call):
    with pytest.raises(PipeflowError):
        call()
    committed()


# -- kind 7: history queries ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"last": "x"}, "last must be a whole number of at least 0, not 'x'"),
    ({"last": -1}, "not -1"),
    ({"last": 1.5}, "not 1.5"),
    ({"last": True}, "not True"),
    ({"status": "faild"}, "Did you mean 'failed'"),
    ({"status": 3}, "status must be one of"),
    ({"run": 3}, "run must be a run_id"),
    ({"tasks": ["Kept"]}, "takes task instances"),
    ({"family": 3}, "family must be"),
])
def test_history_query_arguments_are_checked(data_dir, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        pipeflow.history(**kwargs)


@pytest.mark.parametrize("last", ["x", -1, 2.5, False])
def test_runs_query_argument_is_checked(data_dir, last):
    with pytest.raises(ParameterError, match="last must be a whole number of at least 0"):
        pipeflow.runs(last=last)


def test_last_zero_means_no_rows_everywhere_and_numpy_counts_work(committed):
    assert pipeflow.history(last=0).empty and pipeflow.runs(last=0).empty
    assert len(pipeflow.history(last=np.int64(1))) == 1
    assert len(pipeflow.runs(last=np.int64(1))) == 1
    assert len(pipeflow.history(status="completed", family=[Kept, "KeptDown"])) == 2


def test_queries_create_nothing(tmp_path):
    pipeflow.set_dir(tmp_path / "fresh")
    os.rmdir(tmp_path / "fresh")
    assert pipeflow.history().empty and pipeflow.runs().empty
    assert not (tmp_path / "fresh").exists()


# -- the CLI: bad input exits 2 with a message, never a traceback ------------------------------

TASKS = '''
import datetime, os, time
import pipeflow

class SecretInt(pipeflow.SecretParameter, pipeflow.IntParameter):
    pass

class Hello(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter(default=1)
    when = pipeflow.DateParameter(default=datetime.date(2024, 1, 1))
    x = pipeflow.FloatParameter(default=0.5)
    flag = pipeflow.BoolParameter(default=False)
    token = SecretInt(default=0)
    def run(self):
        self.save({"n": self.n})

class Slow(pipeflow.tasks.TaskJson):
    def run(self):
        open(os.environ["SLOW_MARKER"], "w").close()
        time.sleep(120)
        self.save({})

class Interrupted(pipeflow.tasks.TaskJson):
    def run(self):
        raise KeyboardInterrupt

class Fails(pipeflow.tasks.TaskJson):
    def run(self):
        raise ValueError("nope")
'''


@pytest.fixture
def cli(tmp_path, monkeypatch):
    (tmp_path / "hostile_cli_tasks.py").write_text(TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()

    def invoke(*args, **kwargs):
        out = runner.invoke(main, list(args), **kwargs)
        assert "Traceback" not in out.output, out.output
        assert not isinstance(out.exception, Exception) or isinstance(out.exception, SystemExit), \
            repr(out.exception)
        return out

    return invoke


def _error_line(out):
    lines = [ln for ln in out.output.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, out.output
    return lines[0]


@pytest.mark.parametrize("param,words", [
    ("n=abc", ["Hello", "'n'", "'abc'", "whole number", "-p n=3"]),
    ("n=1.5", ["Hello", "'n'", "'1.5'", "whole number"]),
    ("when=2024-13-45", ["Hello", "'when'", "'2024-13-45'", "YYYY-MM-DD", "2024-01-31"]),
    ("x=fast", ["Hello", "'x'", "'fast'", "number", "-p x=0.5"]),
    ("flag=maybe", ["Hello", "'flag'", "'maybe'", "true or false"]),
])
def test_cli_a_value_that_does_not_parse_is_a_usage_error(cli, tmp_path, param, words):
    out = cli("run", "hostile_cli_tasks:Hello", "-p", param, "--dir", str(tmp_path / "d"))
    assert out.exit_code == 2, out.output
    line = _error_line(out)
    for word in words:
        assert word in line, line
    assert not (tmp_path / "d").exists()  # nothing created for a refused command


def test_cli_a_secret_value_that_does_not_parse_is_not_shown(cli, tmp_path):
    out = cli("run", "hostile_cli_tasks:Hello", "-p", "token=hunter2")
    assert out.exit_code == 2
    assert "hunter2" not in out.output and "***" in out.output


@pytest.mark.parametrize("args,words", [
    (["-p", "n"], ["NAME=VALUE"]),
    (["-p", "zz=3"], ["'zz'", "Hello accepts"]),
    (["-p", "nn=3"], ["'nn'", "Did you mean 'n'?"]),
    (["--workers", "0"], ["workers must be a whole number of at least 1, not 0"]),
    (["--workers", "-1"], ["workers must be a whole number of at least 1, not -1"]),
    (["--workers", "x"], ["workers must be a whole number of at least 1, not 'x'"]),
])
def test_cli_run_bad_input_exits_2(cli, tmp_path, args, words):
    out = cli("run", "hostile_cli_tasks:Hello", *args, "--dir", str(tmp_path / "d"))
    assert out.exit_code == 2, out.output
    for word in words:
        assert word in out.output, out.output
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("command", ["run", "preview", "reset", "history"])
def test_cli_dir_that_is_a_file_exits_2(cli, tmp_path, command):
    (tmp_path / "afile").write_text("mine")
    target = [] if command == "history" else ["hostile_cli_tasks:Hello"]
    out = cli(command, *target, "--dir", str(tmp_path / "afile"))
    assert out.exit_code == 2, out.output
    assert "afile" in out.output and "is a file" in out.output
    assert (tmp_path / "afile").read_text() == "mine"


def test_cli_choices_are_listed_and_a_broken_module_is_one_error(cli, tmp_path):
    (tmp_path / "hostile_cli_more.py").write_text(
        "import pipeflow\n"
        "class More(pipeflow.tasks.TaskJson):\n"
        "    c = pipeflow.ChoiceParameter(choices=['b', 'a'], default='a')\n"
        "    def run(self):\n"
        "        self.save({})\n")
    (tmp_path / "hostile_cli_broken.py").write_text("x = 1\nraise NameError('oops')\n")
    out = cli("run", "hostile_cli_more:More", "-p", "c=z")
    assert out.exit_code == 2
    line = _error_line(out)
    assert "parameter 'c' must be one of 'a', 'b', but got 'z'" in line
    assert "On the command line: -p c=a (one of a, b)." in line
    out = cli("run", "hostile_cli_broken:X")
    assert out.exit_code == 1
    assert "hostile_cli_broken.py:2: NameError: oops" in _error_line(out)


def test_cli_queries_of_a_missing_dir_create_nothing(cli, tmp_path):
    missing = tmp_path / "nothere"
    out = cli("history", "--dir", str(missing))
    assert out.exit_code == 0, out.output
    assert f"no run history at {missing}" in out.output
    out = cli("preview", "hostile_cli_tasks:Hello", "--dir", str(missing))
    assert out.exit_code == 0, out.output
    assert "PENDING" in out.output
    assert not missing.exists()


def test_cli_history_shows_rows_without_a_duration(cli, tmp_path):
    where = ["--dir", str(tmp_path / "d")]
    assert cli("run", "hostile_cli_tasks:Hello", *where).exit_code == 0
    assert cli("run", "hostile_cli_tasks:Hello", *where).exit_code == 0  # up to date
    out = cli("history", *where, "--last", "1")
    assert out.exit_code == 0, out.output
    assert "up_to_date" in out.output and "Hello(" in out.output
    out = cli("history", *where, "--status", "up_to_date")
    assert out.exit_code == 0 and "up_to_date" in out.output
    out = cli("history", *where, "--status", "cancelled")
    assert out.exit_code == 0 and "no recorded attempts match" in out.output
    out = cli("history", *where, "--last", "-1")
    assert out.exit_code == 2
    assert "last must be a whole number of at least 0, not -1" in out.output


def test_cli_reset_without_yes_tells_how_to_proceed_on_the_command_line(cli, tmp_path):
    where = ["--dir", str(tmp_path / "d")]
    assert cli("run", "hostile_cli_tasks:Hello", *where).exit_code == 0
    out = cli("reset", "hostile_cli_tasks:Hello", *where)
    assert out.exit_code == 2, out.output
    assert "Pass --yes" in _error_line(out) and "confirm=False" not in out.output
    assert list((tmp_path / "d").rglob("*.json"))  # kept
    assert cli("reset", "hostile_cli_tasks:Hello", *where, "--yes").exit_code == 0
    assert not list((tmp_path / "d").rglob("*.json"))
    # the API keeps its own hint
    pipeflow.set_dir(tmp_path / "d")
    pipeflow.run(Kept())
    with pytest.raises(pipeflow.errors.ConfirmationError, match="Pass confirm=False"):
        Kept().reset(confirm=True)


def test_cli_ctrl_c_exits_130_with_one_line(cli, tmp_path):
    out = cli("run", "hostile_cli_tasks:Interrupted", "--dir", str(tmp_path / "d"))
    assert out.exit_code == 130, out.output
    assert "Aborted!" not in out.output
    assert "interrupted" in out.output and "hostile_cli_tasks:Interrupted" in out.output


# -- the real console script ---------------------------------------------------------------

def _script():
    script = pathlib.Path(sys.executable).with_name("pipeflow")
    assert script.exists(), f"the pipeflow console script is not installed at {script}"
    return str(script)


def _env(tmp_path):
    return {**os.environ, "PYTHONPATH": str(tmp_path), "SLOW_MARKER": str(tmp_path / "started")}


def test_console_script_bad_value_exits_2_without_traceback(tmp_path):
    (tmp_path / "hostile_cli_tasks.py").write_text(TASKS)
    proc = subprocess.run([_script(), "run", "hostile_cli_tasks:Hello", "-p", "n=abc",
                           "--dir", str(tmp_path / "d")], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "'abc'" in proc.stderr


@pytest.mark.parametrize("answers,code,kept", [(None, 2, True), ("n\n", 0, True),
                                               ("", 2, True), ("y\n", 0, False)])
def test_console_script_reset_prompt(tmp_path, answers, code, kept):
    (tmp_path / "hostile_cli_tasks.py").write_text(TASKS)
    where = ["--dir", str(tmp_path / "d")]
    run = subprocess.run([_script(), "run", "hostile_cli_tasks:Hello", *where], cwd=tmp_path,
                         env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    proc = subprocess.run([_script(), "reset", "hostile_cli_tasks:Hello", *where],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120, check=False,
                          **({"stdin": subprocess.DEVNULL} if answers is None
                             else {"input": answers}))
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "confirm=False" not in proc.stderr
    if code == 2:
        assert "Pass --yes" in proc.stderr
    assert bool(list((tmp_path / "d").rglob("*.json"))) is kept


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_console_script_signal_during_a_run(tmp_path, sig, code):
    (tmp_path / "hostile_cli_tasks.py").write_text(TASKS)
    proc = subprocess.Popen([_script(), "run", "hostile_cli_tasks:Slow", "--dir",
                             str(tmp_path / "d")], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err and "Aborted!" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "interrupted" in lines[0] and "hostile_cli_tasks:Slow" in lines[0]
    # the stopped task left nothing committed behind, and it runs again from scratch
    assert not list((tmp_path / "d").rglob("*.json"))


def test_dates_in_the_cli_round_trip(cli, tmp_path):
    where = ["--dir", str(tmp_path / "d")]
    out = cli("run", "hostile_cli_tasks:Hello", "-p", "when=2024-02-29", "-p", "n=7", *where)
    assert out.exit_code == 0, out.output
    import hostile_cli_tasks

    pipeflow.set_dir(tmp_path / "d")
    assert hostile_cli_tasks.Hello(n=7, when=datetime.date(2024, 2, 29)).complete()
    assert runstore.history_path() is not None


def test_cli_failed_run_says_where_the_traceback_is(cli, tmp_path):
    out = cli("run", "hostile_cli_tasks:Fails", "--dir", str(tmp_path / "d"))
    assert out.exit_code == 1
    assert "Fails(): ValueError: nope" in out.output
    assert "prints above" not in out.output  # the shell shows no traceback above it
    assert "pipeflow history --errors --status failed --last 1" in out.output
    shown = CliRunner().invoke(main, ["history", "--errors", "--status", "failed", "--last",
                                      "1", "--dir", str(tmp_path / "d")])
    assert shown.exit_code == 0 and "Traceback" in shown.output  # that command shows it
    assert "ValueError: nope" in shown.output
