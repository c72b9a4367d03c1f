"""Issue 11, follow-ups of kinds 7 and 10: signals during a run with workers, errors raised by
``requires()``, huge ``last`` counts, exceptions whose ``str()`` fails, bad data-dir
arguments and an empty CLI module name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from click.testing import CliRunner
from test_hostile_cli import _env, _script

import pipeflow
from pipeflow.cli import main
from pipeflow.errors import ParameterError, RequirementError, TaskFailedError

TASKS = '''
import os, time
import pipeflow

class Slow(pipeflow.tasks.TaskJson):
    i = pipeflow.IntParameter(default=0)
    def run(self):
        open(os.environ["SLOW_MARKER"] + str(self.i), "w").close()
        time.sleep(120)
        self.save({})

class Two(pipeflow.tasks.TaskJson):
    def requires(self):
        return [Slow(i=1), Slow(i=2)]
    def run(self):
        self.save({})

class Ok(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"ok": 1})

class BadInit(pipeflow.tasks.TaskJson):
    def requires(self):
        raise RuntimeError("oops")
    def run(self):
        self.save({})
'''


# -- 1. two signals during a run ----------------------------------------------------------------

@pytest.mark.parametrize("sig,code,workers,target,gap", [
    (signal.SIGINT, 130, "2", "Two", 0.05), (signal.SIGTERM, 143, "2", "Two", 0.05),
    (signal.SIGINT, 130, "2", "Two", 0.4), (signal.SIGTERM, 143, "2", "Two", 0.4),
    (signal.SIGINT, 130, "1", "Slow", 0.02), (signal.SIGTERM, 143, "1", "Slow", 0.02),
])
def test_two_signals_to_the_process_group(tmp_path, sig, code, workers, target, gap):
    (tmp_path / "c2_tasks.py").write_text(TASKS)
    proc = subprocess.Popen([_script(), "run", f"c2_tasks:{target}", "--workers", workers,
                             "--dir", str(tmp_path / "d")], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    markers = ["started1", "started2"] if target == "Two" else ["started0"]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / m).exists() for m in markers):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the tasks never started"
            time.sleep(0.05)
        os.killpg(proc.pid, sig)
        time.sleep(gap)
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(0.5)  # a worker's late traceback would reach the pipe we already read: none
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err and "Aborted!" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0], err
    assert not list((tmp_path / "d").rglob("*.json"))


# -- 2. requires() raises ----------------------------------------------------------------------

class BadInit(pipeflow.tasks.TaskJson):
    def requires(self):
        raise RuntimeError("oops")

    def run(self):
        self.save({})


class BadGen(pipeflow.tasks.TaskJson):
    def requires(self):
        yield Fine()
        raise ValueError("midway")

    def run(self):
        self.save({})


class Fine(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"fine": 1})


@pytest.mark.parametrize("call", ["run", "preview", "inputLoad"])
@pytest.mark.parametrize("cls,kind,text", [(BadInit, RuntimeError, "oops"),
                                           (BadGen, ValueError, "midway")])
def test_requires_raising_names_the_task(data_dir, call, cls, kind, text):
    with pytest.raises(RequirementError) as info:
        if call == "run":
            pipeflow.run(cls())
        elif call == "preview":
            pipeflow.preview(cls())
        else:
            cls().inputLoad()
    msg = str(info.value)
    assert f"{cls.__name__}().requires() raised {kind.__name__}: {text}" in msg, msg
    assert isinstance(info.value.__cause__, kind)
    assert not Fine().complete()  # nothing ran


class SecretReq(pipeflow.tasks.TaskJson):
    token = pipeflow.SecretParameter(default="hunter2-very-secret")

    def requires(self):
        raise RuntimeError(f"cannot reach key={self.token}")


def test_requires_raising_a_secret_is_redacted(data_dir):
    with pytest.raises(RequirementError) as info:
        pipeflow.run(SecretReq())
    err = info.value
    seen = [str(err), repr(err.__cause__), str(err.__cause__)]
    assert not any("hunter2" in s for s in seen), seen
    assert "SecretReq" in str(err) and "***" in str(err)
    assert isinstance(err.__cause__, RuntimeError)


def test_cli_requires_raising(tmp_path):
    (tmp_path / "c2_tasks.py").write_text(TASKS)
    proc = subprocess.run([_script(), "run", "c2_tasks:BadInit", "--dir", str(tmp_path / "d")],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Error: RequirementError: BadInit().requires() raised RuntimeError: oops" in (
        proc.stderr)


# -- 3. huge last --------------------------------------------------------------------------------

def test_huge_last_means_all(data_dir):
    pipeflow.run(Fine())
    assert len(pipeflow.history(last=2**63)) == len(pipeflow.history())
    assert len(pipeflow.runs(last=2**63)) == len(pipeflow.runs()) == 1
    assert len(pipeflow.history(last=10**30)) == len(pipeflow.history())


def test_cli_history_huge_last(data_dir):
    pipeflow.run(Fine())
    out = CliRunner().invoke(main, ["history", "--dir", str(data_dir), "--last",
                                    "99999999999999999999"])
    assert out.exit_code == 0, out.output
    assert "Fine" in out.output
    assert "Traceback" not in out.output


# -- 4. an exception whose __str__ raises --------------------------------------------------------

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("str fails")


class RaisesUnprintable(pipeflow.tasks.TaskJson):
    def run(self):
        raise Unprintable()


class Sibling(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"s": 1})


class BothUnprintable(pipeflow.tasks.TaskJson):
    def requires(self):
        return [RaisesUnprintable(), Sibling()]

    def run(self):
        self.save({})


@pytest.mark.parametrize("executor", [None, "thread", "process"])
def test_unprintable_exception_fails_only_its_task(data_dir, executor, capsys):
    from pipeflow.errors import first_line

    result = pipeflow.run(BothUnprintable(), abort=False, workers=2, executor=executor,
                          execution_summary=True)
    assert not result and Sibling().complete()
    failed = result.by_state("failed")
    assert [type(r.task).__name__ for r in failed] == ["RaisesUnprintable"]
    assert "<unprintable Unprintable>" in first_line(failed[0].error)
    hist = pipeflow.history(full=True)
    row = hist[hist["status"] == "failed"].iloc[0]
    assert row["error_type"].endswith("Unprintable")
    assert "<unprintable Unprintable>" in row["error_message"]
    assert "Traceback" in row["traceback"]
    captured = capsys.readouterr()
    assert "<unprintable Unprintable>" in captured.out + captured.err
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(BothUnprintable(), workers=2, executor=executor)
    assert "Unprintable: <unprintable Unprintable>" in str(info.value)


def test_first_line_of_an_unprintable_exception():
    from pipeflow.errors import first_line, shown

    assert first_line(Unprintable()) == "Unprintable: <unprintable Unprintable>"
    assert shown(Unprintable()) == "<unprintable Unprintable>"
    assert shown(ValueError("a")) == "a"


# -- 5. data-dir arguments -------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["", 5, 1.5, ["data"], b""])
def test_set_dir_refuses_bad_locations(data_dir, bad):
    before = pipeflow.settings.dir
    with pytest.raises(ParameterError):
        pipeflow.set_dir(bad)
    assert pipeflow.settings.dir == before


def test_workflow_env_must_be_text(data_dir):
    with pytest.raises(ParameterError, match="env"):
        pipeflow.Workflow(Fine, env=5)


def test_cli_empty_dir_is_refused(tmp_path):
    (tmp_path / "c2_tasks.py").write_text(TASKS)
    proc = subprocess.run([_script(), "run", "c2_tasks:Ok", "--dir", ""], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.json"))


# -- 6. empty module name ----------------------------------------------------------------------

@pytest.mark.parametrize("target", [":NoDef", " :NoDef"])
def test_cli_empty_module_name(data_dir, target):
    out = CliRunner().invoke(main, ["run", target, "--dir", str(data_dir)])
    assert out.exit_code == 2, out.output
    assert "MODULE:TASKCLASS" in out.output
    assert "Traceback" not in out.output
