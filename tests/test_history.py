"""The run history: what is recorded, queries, pruning, concurrency, failure to write."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading

import hypothesis
import pandas as pd
import pytest
from hypothesis import strategies as st

import pipeflow
from pipeflow import runstore
from pipeflow.errors import RunCancelledError, TaskFailedError


class Good(pipeflow.tasks.TaskJson):
    token = pipeflow.SecretParameter(default="hist-secret-value")

    def run(self):
        self.save({"ok": 1})


@pipeflow.requires(Good)
class Bad(pipeflow.tasks.TaskJson):
    def run(self):
        raise ValueError(f"cannot log in with {self.token}")


class Flaky(pipeflow.tasks.TaskJson):
    retries = 1
    marker = pipeflow.Parameter()

    def run(self):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise OSError("transient")
        self.save({"ok": 2})


def test_completed_and_failed_attempts_are_recorded(data_dir):
    with pytest.raises(TaskFailedError):
        pipeflow.run(Bad(token="s3cr3t-pw"))
    h = pipeflow.history(full=True)
    assert list(h["task"]) == ["Bad()", "Good()"]
    bad, good = h.iloc[0], h.iloc[1]
    assert (bad["status"], bad["error_type"]) == ("failed", "ValueError")
    assert bad["error_message"] == "cannot log in with ***"
    assert "s3cr3t-pw" not in bad["traceback"] and "ValueError" in bad["traceback"]
    assert good["status"] == "completed" and pd.isna(good["error_type"])
    assert json.loads(good["params"]) == {"token": "***"}
    assert good["duration"] >= 0 and good["cpu_time"] >= 0 and good["peak_memory"] > 0
    outputs = json.loads(good["outputs"])
    assert outputs["data"][0]["file"] == Good().output().path.name
    assert outputs["data"][0]["size"] == Good().output().path.stat().st_size
    run = pipeflow.runs(full=True).iloc[0]
    assert run["status"] == "failed" and run["roots"] == '["Bad()"]'
    assert run["run_id"] == bad["run_id"] and run["pipeflow_version"]
    assert run["finished"] >= run["started"]
    assert pipeflow.last_error(Bad())["error_message"] == "cannot log in with ***"
    assert pipeflow.last_run(Good())["status"] == "completed"
    db = data_dir / ".pipeflow" / "history.db"
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    assert not any(b"s3cr3t-pw" in f.read_bytes() for f in db.parent.rglob("*") if f.is_file())


def test_retried_attempt_is_recorded_with_its_error(tmp_path):
    pipeflow.run(Flaky(marker=str(tmp_path / "m")))
    h = pipeflow.history(family=Flaky, full=True)
    assert list(h["status"]) == ["completed", "retried"]
    assert list(h["attempt"]) == [2, 1]
    assert h.iloc[1]["error_type"] == "OSError"
    assert pipeflow.last_error(Flaky(marker=str(tmp_path / "m")))["error_message"] == (
        "transient")


def test_cancelled_attempts_and_up_to_date_tasks_are_recorded(tmp_path):
    started = threading.Event()

    class Slow(pipeflow.tasks.TaskJson):
        def run(self):
            started.set()
            for _ in range(500):
                __import__("time").sleep(0.01)
            self.save({})

    handle = pipeflow.start(Slow())
    assert started.wait(10)
    handle.cancel()
    with pytest.raises(RunCancelledError):
        handle.result(10)
    pipeflow.run(Good())
    pipeflow.run(Good())
    h = pipeflow.history()
    assert h.set_index("task")["status"].to_dict()["Slow()"] == "cancelled"
    assert list(h[h["task"] == "Good()"]["status"]) == ["up_to_date", "completed"]
    assert list(pipeflow.runs()["status"]) == ["success", "success", "cancelled"]


def test_queries_filter_by_family_status_run_and_last():
    pipeflow.run(Good())
    with pytest.raises(TaskFailedError):
        pipeflow.run(Bad())
    first_run = pipeflow.runs().iloc[-1]["run_id"]
    assert list(pipeflow.history(run=first_run)["task"]) == ["Good()"]
    assert list(pipeflow.history(status="failed")["task"]) == ["Bad()"]
    assert list(pipeflow.history(family=["Good"], last=1)["status"]) == ["up_to_date"]
    assert len(pipeflow.history(last=2)) == 2
    flow = pipeflow.Workflow(Good)
    assert set(flow.history()["task"]) == {"Good()"}


def test_prune_keeps_the_last_runs():
    for _ in range(4):
        pipeflow.run(Good())
    assert pipeflow.prune_history(keep=2) == 2
    assert len(pipeflow.runs()) == 2 and len(pipeflow.history()) == 2


def test_history_that_cannot_be_written_never_fails_a_run(tmp_path):
    pipeflow.settings.history = str(tmp_path)  # a folder: SQLite cannot open it
    try:
        with pytest.warns(RuntimeWarning, match="cannot be written"):
            assert pipeflow.run(Good())
        Good().reset(confirm=False)
        assert pipeflow.run(Good())  # warned once already
        pipeflow.settings.history = False
        assert pipeflow.run(Bad(), abort=False) is not None
        assert pipeflow.history().empty
    finally:
        pipeflow.settings.history = True


class Writer(pipeflow.tasks.TaskJson):
    proc = pipeflow.IntParameter()
    i = pipeflow.IntParameter()

    def run(self):
        self.save({"i": self.i})


class WriterRoot(pipeflow.tasks.TaskJson):
    proc = pipeflow.IntParameter()

    def requires(self):
        return [Writer(proc=self.proc, i=i) for i in range(TASKS)]

    def run(self):
        self.save({})


TASKS = 25


def _writer_process(proc, go):
    runstore.FLUSH_EVERY = 0  # a transaction per event: as much contention as possible
    go.wait(30)
    try:
        pipeflow.run(WriterRoot(proc=proc))
        code = 0
    except BaseException:  # noqa: BLE001 - the parent checks the exit code
        code = 1
    os._exit(code)


def test_eight_concurrent_writer_processes_lose_no_rows():
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=_writer_process, args=(n, go)) for n in range(8)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    h = pipeflow.history()
    assert len(h) == 8 * (TASKS + 1)
    assert (h["status"] == "completed").all()
    assert h.groupby("run_id").size().tolist() == [TASKS + 1] * 8
    assert list(pipeflow.runs()["status"]) == ["success"] * 8


def test_cli_history_lists_attempts_with_filters(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pipeflow.cli import main

    (tmp_path / "cli_hist_tasks.py").write_text(
        "import pipeflow\n"
        "class HistOk(pipeflow.tasks.TaskJson):\n"
        "    def run(self):\n"
        "        self.save({})\n"
        "class HistBad(pipeflow.tasks.TaskJson):\n"
        "    def run(self):\n"
        "        raise KeyError('no such column')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()
    where = ["--dir", str(tmp_path / "d")]
    out = runner.invoke(main, ["history", *where])
    assert out.exit_code == 0, out.output
    assert "no recorded attempts match" in out.output
    assert runner.invoke(main, ["run", "cli_hist_tasks:HistOk", *where]).exit_code == 0
    assert runner.invoke(main, ["run", "cli_hist_tasks:HistBad", *where]).exit_code == 1
    out = runner.invoke(main, ["history", *where])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "status" in lines[0] and "duration" in lines[0]
    assert "HistBad()" in lines[1] and "failed" in lines[1] and "KeyError" in lines[1]
    assert "HistOk()" in lines[2] and "completed" in lines[2] and "MiB" in lines[2]
    out = runner.invoke(main, ["history", *where, "--status", "failed", "--errors"])
    assert "HistOk" not in out.output
    assert "KeyError: 'no such column'" in out.output  # the traceback
    out = runner.invoke(main, ["history", *where, "--family", "HistOk"])
    assert "HistBad" not in out.output and "HistOk()" in out.output


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    files=st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.lists(st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 2**62),
                           st.text(alphabet="0123456789abcdef", max_size=32)),
                 min_size=1, max_size=3),
        max_size=4))
def test_outputs_column_is_the_json_of_the_record_files(files):
    """The hand-written JSON of the outputs column is json.dumps's, for any names."""
    from pipeflow.integrity import CommitRecord, FileRecord
    from pipeflow.runstore import outputs_json

    record = CommitRecord("T()", {k: tuple(FileRecord(n, size, 0, 0, d) for n, size, d in recs)
                                  for k, recs in files.items()})
    expected = json.dumps({k: [{"file": r.name, "size": r.size, "hash": r.digest} for r in recs]
                           for k, recs in record.files.items()})
    assert outputs_json(record) == expected
    assert json.loads(outputs_json(record)) == json.loads(expected)
