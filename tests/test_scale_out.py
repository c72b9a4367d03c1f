"""Scale-out end to end (issue 14): one flow, three processes, one luigid, one S3 bucket.

A real ``luigid`` and a real S3 endpoint (moto's server) run on 127.0.0.1 (fixtures in
``conftest.py``, servers in ``servers.py``). A small flow module (12 tasks: a diamond and a
chain, parquet/csv/json/pickle outputs and metadata) is written to disk; every ``run()``
appends one line (family, parameters, process id, runner) to a run log opened with
``O_APPEND``. Three processes ("machines", each in a folder of its own) run it at once
through luigid onto the bucket, each through another spelling of the keywords
(``pipeflow.run(scheduler_url=)``, ``Workflow.run(scheduler_host=, scheduler_port=,
workers=2)``, ``pipeflow.run(scheduler_host=, scheduler_port=)``). One task blocks until a
marker file appears; the process running it is SIGKILLed there, so the kill happens
mid-task every time, without timing guesses. Then:

* every task ran exactly once; the killed one's task once more, in another process, with
  luigid's stock `retry_delay` (900 s): the task does not wait for it;
* the two surviving calls returned a successful RunResult naming every task of the flow,
  and their run history (kept on their machine) lists what each of them ran;
* luigid knows every task as DONE (the work really went through it);
* a fresh process previews all 12 tasks complete and loads every output from S3, values
  exact; no temp object is left in the bucket and no local folder named ``s3:`` exists;
* every process started is gone (process groups empty).

Also: a reset (or ``forced_all``) followed at once by a rerun through luigid really reruns
(luigid ignores "run it again" for ``stable_done_cooldown_secs`` after DONE), and an
unreachable scheduler fails within seconds with a pipeflow error naming it (luigi's stock
RPC retries would take ~62 s and end in a raw ``RPCError``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import luigi
import psutil
import pytest
from servers import free_port, luigid

import pipeflow
from pipeflow.errors import PipeflowError

#: generous upper bounds for waiting on another process (a busy 2-core machine)
DEADLINE = 90.0

#: a run that hangs (luigid never handing a task out) fails the test instead of the suite
pytestmark = pytest.mark.timeout(4 * DEADLINE)

#: seconds a task's lease on S3 lasts unless renewed (stock 60): the killed runner's lease
#: on its task expires this long after its last renewal, then a survivor takes it over
LEASE = 6.0
N = 40  # rows of Source
STEPS = 7  # length of the chain
#: the chain's values: v(0) = 1, v(i) = 2 v(i-1) + i
CHAIN = [1, 3, 8, 19, 42, 89, 184]
SUM_X = sum(i * i for i in range(N))
#: the family of each task of the flow, sorted
FAMILIES = sorted(["Source", "Left", "Right", "Join", "Final"] + ["Step"] * STEPS)

FLOW = '''
"""The flow the scale-out test runs in several processes (written by tests/test_scale_out.py)."""

import json
import os
import time

import pandas as pd

import pipeflow


def log_run(task):
    """One line per run() call, appended atomically (O_APPEND) to $RUNLOG."""
    line = json.dumps({"family": task.task_family, "params": task.to_str_params(),
                       "pid": os.getpid(), "runner": os.environ.get("RUNNER", "test"),
                       "time": time.time()})
    fd = os.open(os.environ["RUNLOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)
    if os.environ.get("BLOCK") == task.task_family:
        # held here until the test creates $MARKER (after killing the first process here)
        deadline = time.monotonic() + 120
        while not os.path.exists(os.environ["MARKER"]):
            if time.monotonic() > deadline:
                raise RuntimeError("the marker file never appeared")
            time.sleep(0.02)


class Source(pipeflow.tasks.TaskPqPandas):
    n = pipeflow.IntParameter(default=40)
    persist = ["data", "labels"]

    def run(self):
        log_run(self)
        i = list(range(self.n))
        self.save({"data": pd.DataFrame({"i": i, "x": [k * k for k in i]}),
                   "labels": pd.DataFrame({"i": i, "y": [k % 3 for k in i]})})
        self.saveMeta({"rows": self.n})


class Left(pipeflow.tasks.TaskCSVPandas):
    n = pipeflow.IntParameter(default=40)

    def requires(self):
        return Source(n=self.n)

    def run(self):
        log_run(self)
        data, labels = self.inputLoad()
        self.save(data.merge(labels, on="i").assign(x2=lambda d: d.x * 2))


class Right(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter(default=40)

    def requires(self):
        return Source(n=self.n)

    def run(self):
        log_run(self)
        data = self.inputLoad(keys=["data"])[0]
        self.save({"sum_x": int(data.x.sum()), "count": len(data)})


class Join(pipeflow.tasks.TaskPickle):
    n = pipeflow.IntParameter(default=40)

    def requires(self):
        return {"left": Left(n=self.n), "right": Right(n=self.n)}

    def run(self):
        log_run(self)
        got = self.inputLoad()
        self.save({"sum_x2": int(got["left"].x2.sum()), "sum_x": got["right"]["sum_x"],
                   "rows": Source(n=self.n).outputLoadMeta()["rows"]})


class Step(pipeflow.tasks.TaskJson):
    i = pipeflow.IntParameter()

    def requires(self):
        return Step(i=self.i - 1) if self.i > 0 else []

    def run(self):
        log_run(self)
        before = self.inputLoad()["value"] if self.i > 0 else 0
        self.save({"i": self.i, "value": 2 * before + self.i if self.i > 0 else 1})


class Final(pipeflow.tasks.TaskPqPandas):
    n = pipeflow.IntParameter(default=40)
    steps = pipeflow.IntParameter(default=7)

    def requires(self):
        return {"join": Join(n=self.n), "chain": Step(i=self.steps - 1)}

    def run(self):
        log_run(self)
        got = self.inputLoad()
        join = got["join"]
        self.save(pd.DataFrame({"name": ["sum_x", "sum_x2", "chain", "rows"],
                                "value": [join["sum_x"], join["sum_x2"],
                                          got["chain"]["value"], join["rows"]]}))
'''

RUNNER = '''
"""One "machine": runs the flow through luigid, or (check) previews and loads it."""

import json
import os
import socket
import sys
import time

if os.environ.get("HOST_NAME"):  # as if on a machine of its own (leases, luigid's workers)
    socket.gethostname = lambda: os.environ["HOST_NAME"]

import pipeflow
import scaleflow

mode = sys.argv[1]
pipeflow.set_dir(os.environ["DATA_URL"])
pipeflow.settings.storage_options = json.loads(os.environ["STORAGE_OPTIONS"])
pipeflow.settings.execution_summary = False
if os.environ.get("REMOTE_LEASE"):
    pipeflow.settings.remote_lease = float(os.environ["REMOTE_LEASE"])


def records(df):
    return json.loads(df.to_json(orient="records"))


if mode == "check":
    flow = scaleflow.Final()
    status = pipeflow.preview(flow, print_it=False).status()
    source = scaleflow.Source()
    out = {
        "status": {k: str(v) for k, v in status.items()},
        "Final": records(flow.outputLoad()),
        "Join": scaleflow.Join().outputLoad(),
        "Left": records(scaleflow.Left().outputLoad()),
        "Right": scaleflow.Right().outputLoad(),
        "Source": {k: records(v) for k, v in source.outputLoad(as_dict=True).items()},
        "SourceMeta": source.outputLoadMeta(),
        "Step": [scaleflow.Step(i=i).outputLoad() for i in range(7)],
    }
    print(json.dumps(out))
    sys.exit(0)

open(os.environ["READY"], "w").close()
deadline = time.monotonic() + 90
while not os.path.exists(os.environ["GO"]):  # all three start their run together
    if time.monotonic() > deadline:
        sys.exit("never told to go")
    time.sleep(0.01)



def note_waits(event):
    """Write down each task this run waits for because another process runs it."""
    if event.kind.value == "task_waiting" and "another process" in (event.reason or ""):
        with open(os.environ["EVENTS"], "a") as f:
            f.write(f"{os.environ['RUNNER']} waits for {event.task.task_family}\\n")


host, port = os.environ.get("SCHED_HOST"), int(os.environ.get("SCHED_PORT") or 0)
if mode == "local":  # no luigid: the embedded engine, guarded by leases on S3
    result = pipeflow.run(scaleflow.Final(), workers=2, callbacks=[note_waits])
elif mode == "url":
    result = pipeflow.run(scaleflow.Final(), local_scheduler=False,
                          scheduler_url=os.environ["SCHED_URL"])
elif mode == "workflow":
    flow = pipeflow.Workflow(scaleflow.Final, {"n": 40})
    result = flow.run(local_scheduler=False, scheduler_host=host, scheduler_port=port,
                      workers=2)
else:
    result = pipeflow.run([scaleflow.Final()], local_scheduler=False, scheduler_host=host,
                          scheduler_port=port, workers=1)
history = pipeflow.history(full=True)
print(json.dumps({
    "success": bool(result),
    "verdict": result.verdict,
    "states": {k: r.state.value for k, r in result.tasks.items()},
    "summary": result.summary(),
    "history": [[r["family"], r["status"]] for _, r in history.iterrows()],
}))
'''


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.02)


def read_log(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def group_members(pgid: int) -> list[psutil.Process]:
    """The processes still alive in process group ``pgid`` (zombies count as gone)."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


class Machines:
    """Runner processes, each in a session (process group) and a folder of its own."""

    def __init__(self, root: pathlib.Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, mode: str, **extra: str) -> subprocess.Popen[str]:
        home = self.root / f"machine-{name}"
        home.mkdir(exist_ok=True)
        # its own host name and local state (run history, task locks): as if on a machine
        # of its own, so that the lease a killed runner leaves on S3 holds until it expires
        env = {**self.env, "RUNNER": name, "READY": str(self.root / f"ready-{name}"),
               "PIPEFLOW_STATE_DIR": str(home / "state"), "HOST_NAME": f"machine-{name}",
               "REMOTE_LEASE": str(LEASE), **extra}
        with open(home / "stderr.txt", "w") as err:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, str(self.root / "code" / "runner.py"), mode], cwd=home,
                env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        self.procs[name] = proc
        return proc

    def finish(self, name: str, timeout: float = DEADLINE) -> dict[str, Any]:
        """Wait for a runner; its JSON report (it must exit 0)."""
        proc = self.procs[name]
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(name)
            raise AssertionError(f"runner {name} did not return within {timeout:.0f} s; "
                                 f"stderr:\n{self.stderr(name)}") from None
        assert proc.returncode == 0, f"runner {name} exited {proc.returncode}:\n{self.stderr(name)}"
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def alive(self) -> bool:
        """True; raises, with its error output, if a runner ended before it should have."""
        for name, proc in self.procs.items():
            if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                raise AssertionError(f"runner {name} exited {proc.returncode}:\n"
                                     f"{self.stderr(name)}")
        return True

    def stderr(self, name: str) -> str:
        return (self.root / f"machine-{name}" / "stderr.txt").read_text()[-6000:]

    def kill(self, name: str) -> None:
        """SIGKILL the runner's whole process group (it and any worker it forked)."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        for p in group_members(proc.pid):
            with contextlib.suppress(psutil.Error):
                p.kill()

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None or group_members(proc.pid):
                self.kill(name)


@pytest.fixture
def flow_code(tmp_path: pathlib.Path) -> pathlib.Path:
    """The flow module and the runner script, in ``tmp_path/code``."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "scaleflow.py").write_text(textwrap.dedent(FLOW))
    (code / "runner.py").write_text(textwrap.dedent(RUNNER))
    return code


def machine_env(tmp_path: pathlib.Path, code: pathlib.Path, sched: Any, s3: Any,
                url: str) -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **s3.env, "PYTHONPATH": pythonpath,
           "RUNLOG": str(tmp_path / "runs.log"), "MARKER": str(tmp_path / "marker"),
           "GO": str(tmp_path / "go"), "DATA_URL": url,
           "STORAGE_OPTIONS": json.dumps(s3.storage_options)}
    if sched is not None:
        env |= {"SCHED_URL": sched.url, "SCHED_HOST": sched.host, "SCHED_PORT": str(sched.port)}
    return env


@pytest.fixture
def stock_retry_luigid(tmp_path):
    """luigid with the stock ``retry_delay`` (900 s): a dead worker's task must not wait for
    it (pipeflow registers it again at once); ``worker_disconnect_delay`` stays 3 s."""
    with luigid(tmp_path / "luigid", {"retry_delay": "900"}) as server:
        yield server


def test_three_machines_share_a_flow_and_survive_a_kill_mid_task(
        tmp_path, flow_code, stock_retry_luigid, s3_server, s3_bucket):
    luigid_server = stock_retry_luigid
    bucket = s3_bucket.removeprefix("s3://")
    url = f"{s3_bucket}/team/data"
    env = machine_env(tmp_path, flow_code, luigid_server, s3_server, url)
    log = tmp_path / "runs.log"
    machines = Machines(tmp_path, env)
    modes = {"a": "url", "b": "workflow", "c": "hostport"}
    try:
        for name, mode in modes.items():
            machines.start(name, mode, BLOCK="Left")
        wait_for(lambda: machines.alive() and all((tmp_path / f"ready-{n}").exists()
                                                  for n in modes),
                 "the three runners to import the flow")
        (tmp_path / "go").touch()

        # the first process to run Left blocks in it: kill that process there
        first = wait_for(lambda: machines.alive() and [r for r in read_log(log)
                                                       if r["family"] == "Left"],
                         "a runner to start Left")
        assert len(first) == 1, first
        victim = first[0]["runner"]
        machines.kill(victim)
        # it leaves its lease on Left behind (as a dead machine would): it must expire
        leases = [k for k in s3_server.keys(bucket, "team/data/")
                  if k.endswith(".lease.json") and "/.Left_" in k]
        assert len(leases) == 1, leases
        lease = json.loads(s3_server.client().get_object(Bucket=bucket, Key=leases[0])[
            "Body"].read())
        assert lease["host"] == f"machine-{victim}", lease
        assert [r for r in read_log(log) if r["family"] == "Left"] == first, \
            "Left started twice while its first runner was alive"
        (tmp_path / "marker").touch()
        survivors = sorted(set(modes) - {victim})
        reports = {name: machines.finish(name) for name in survivors}
    finally:
        machines.stop_all()

    # every task ran exactly once; Left once more, after the kill, by a survivor
    runs = read_log(log)
    counted = collections.Counter((r["family"], r["params"].get("i")) for r in runs)
    expected = {(f, None): 1 for f in ("Source", "Right", "Join", "Final")}
    expected |= {("Step", str(i)): 1 for i in range(STEPS)}
    expected[("Left", None)] = 2
    assert dict(counted) == expected, runs
    lefts = [r for r in runs if r["family"] == "Left"]
    assert lefts[0]["runner"] == victim and lefts[1]["runner"] in survivors, lefts
    assert len({r["runner"] for r in runs}) >= 2

    # the surviving calls waited for the whole flow and report all of it
    flow_ids = None
    for name, report in reports.items():
        assert report["success"] and report["verdict"] == "success", (name, report["summary"])
        assert len(report["states"]) == 12, (name, report["states"])
        flow_ids = flow_ids or set(report["states"])
        assert set(report["states"]) == flow_ids
        assert set(report["states"].values()) <= {"completed", "up_to_date"}, report["states"]
        ran_here = sorted(r["family"] for r in runs if r["runner"] == name)
        completed = sorted(f for f, s in report["history"] if s == "completed")
        assert completed == ran_here, (name, report["history"], ran_here)
        # what ran elsewhere is recorded here as up to date: the history names every task
        elsewhere = sorted(f for f, s in report["history"] if s == "up_to_date")
        assert sorted(completed + elsewhere) == FAMILIES, (name, report["history"])
    assert flow_ids is not None

    # luigid saw every task through to DONE, and has the graph its web page draws
    # (luigid's id: the task_id, then a digest of where its outputs live)
    done = luigid_server.rpc("task_list", status="DONE", upstream_status="")
    assert {lid.split(".")[0] for lid in done} == flow_ids  # type: ignore[union-attr]
    final_id = next(lid for lid in done if lid.startswith("Final_"))  # type: ignore[union-attr]
    graph = luigid_server.rpc("dep_graph", task_id=final_id)
    assert set(graph) == set(done)  # type: ignore[arg-type]
    assert {d.split("_")[0] for d in graph[final_id]["deps"]} == {  # type: ignore[index]
        "Join", "Step"}

    # a fresh process: all complete, every value exact, loaded from S3; nothing ran
    fresh = tmp_path / "machine-fresh"
    fresh.mkdir()
    check = subprocess.run([sys.executable, str(flow_code / "runner.py"), "check"],
                           cwd=fresh, env={**env, "PIPEFLOW_STATE_DIR": str(fresh / "state")},
                           capture_output=True, text=True, timeout=DEADLINE)
    assert check.returncode == 0, check.stderr[-6000:]
    seen = json.loads(check.stdout.strip().splitlines()[-1])
    assert set(seen["status"]) == flow_ids
    assert set(seen["status"].values()) == {"COMPLETE"}, seen["status"]
    assert seen["Final"] == [{"name": "sum_x", "value": SUM_X},
                             {"name": "sum_x2", "value": 2 * SUM_X},
                             {"name": "chain", "value": CHAIN[-1]},
                             {"name": "rows", "value": N}]
    assert seen["Join"] == {"sum_x2": 2 * SUM_X, "sum_x": SUM_X, "rows": N}
    assert seen["Right"] == {"sum_x": SUM_X, "count": N}
    assert seen["Left"] == [{"i": i, "x": i * i, "y": i % 3, "x2": 2 * i * i} for i in range(N)]
    assert seen["Source"] == {"data": [{"i": i, "x": i * i} for i in range(N)],
                              "labels": [{"i": i, "y": i % 3} for i in range(N)]}
    assert seen["SourceMeta"] == {"rows": N}
    assert seen["Step"] == [{"i": i, "value": v} for i, v in enumerate(CHAIN)]
    assert read_log(log) == runs

    # outputs on S3, nothing half-written, nothing on local disk named after the URL
    keys = s3_server.keys(bucket, "team/data/")
    assert {k.split("/")[2] for k in keys} >= {"Source", "Left", "Right", "Join", "Step",
                                               "Final"}, keys
    assert not [k for k in keys if ".tmp-" in k or k.endswith(".lease.json")], keys
    assert not [p for p in tmp_path.rglob("s3:*")]

    # everything started is stopped
    for name, proc in machines.procs.items():
        assert proc.returncode is not None, name
        assert not group_members(proc.pid), (name, group_members(proc.pid))


# -- in this process: reruns within luigid's cooldown, an unreachable scheduler ---------------

class Counted(pipeflow.tasks.TaskPickle):
    """Appends a line to $RUNLOG per run() call; saves its parameter."""

    k = pipeflow.IntParameter(default=1)

    def run(self) -> None:
        with open(os.environ["RUNLOG"], "a") as f:
            f.write(f"{self.task_family} {self.k} {os.getpid()}\n")
        self.save({"k": self.k})


class CountedDown(pipeflow.tasks.TaskPickle):
    """Downstream of Counted."""

    k = pipeflow.IntParameter(default=1)

    def requires(self) -> luigi.Task:
        return Counted(k=self.k)

    def run(self) -> None:
        with open(os.environ["RUNLOG"], "a") as f:
            f.write(f"{self.task_family} {self.k} {os.getpid()}\n")
        self.save({"k": self.inputLoad()["k"] + 1})


@pytest.fixture
def runlog(tmp_path, monkeypatch) -> Callable[[], list[str]]:
    path = tmp_path / "runs.log"
    monkeypatch.setenv("RUNLOG", str(path))
    return lambda: path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def slow_cooldown_luigid(tmp_path):
    """luigid that ignores "run it again" for an hour after DONE (stock: 10 s), so that the
    rerun below falls inside that window however slow this machine is."""
    with luigid(tmp_path / "luigid-cooldown", {"stable_done_cooldown_secs": "3600"}) as server:
        yield server


@pytest.mark.timeout(60)  # without luigid's cooldown handled, the rerun waits forever
@pytest.mark.parametrize("storage", ["local", "s3"])
@pytest.mark.parametrize("how", ["reset", "forced_all"])
def test_rerun_right_after_a_run_through_luigid_really_reruns(
        how, storage, request, runlog, slow_cooldown_luigid, tmp_path, monkeypatch):
    if storage == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("PIPEFLOW_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setattr(pipeflow.settings, "storage_options",
                            request.getfixturevalue("s3_server").storage_options)
        pipeflow.set_dir(f"{bucket}/data")
    keywords = {"local_scheduler": False, "scheduler_url": slow_cooldown_luigid.url}
    task = CountedDown(k=3)
    first = pipeflow.run(task, **keywords)
    assert first and {r.state.value for r in first.tasks.values()} == {"completed"}
    assert [line.rsplit(" ", 1)[0] for line in runlog()] == ["Counted 3", "CountedDown 3"]

    if how == "reset":
        task.reset(confirm=False)
        second = pipeflow.run(task, **keywords)
    else:
        second = pipeflow.run(task, forced_all=True, **keywords)
    assert second
    assert {k: r.state.value for k, r in second.tasks.items()} == {
        Counted(k=3).task_id: "up_to_date", task.task_id: "completed"}
    assert [line.rsplit(" ", 1)[0] for line in runlog()] == [
        "Counted 3", "CountedDown 3", "CountedDown 3"]
    assert task.outputLoad() == {"k": 4}
    assert pipeflow.preview(task, print_it=False).counts()["COMPLETE"] == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("spelling", ["host_port", "url", "workflow"])
def test_an_unreachable_scheduler_fails_within_seconds_with_a_pipeflow_error(
        spelling, runlog, data_dir):
    port = free_port()  # nobody listens there
    task = CountedDown(k=5)
    t0 = time.monotonic()
    with pytest.raises(PipeflowError, match=rf"127\.0\.0\.1:{port}") as info:
        if spelling == "host_port":
            pipeflow.run(task, local_scheduler=False, scheduler_host="127.0.0.1",
                         scheduler_port=port)
        elif spelling == "url":
            pipeflow.run(task, local_scheduler=False, scheduler_url=f"http://127.0.0.1:{port}/")
        else:
            pipeflow.Workflow(CountedDown, {"k": 5}).run(
                local_scheduler=False, scheduler_host="127.0.0.1", scheduler_port=port)
    elapsed = time.monotonic() - t0
    # luigi's stock retries take ~62 s; "within seconds" leaves room for a busy machine
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert "luigid" in str(info.value)
    assert not isinstance(info.value, luigi.rpc.RPCError)
    assert runlog() == []
    assert not task.complete()
    assert not [p for p in data_dir.rglob("*") if p.is_file() and ".pipeflow" not in p.parts]


# -- docs/scaling-out.md's worked example, against the real servers ---------------------------

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "scaling-out.md"


def doc_blocks() -> dict[str, str]:
    """The page's Python blocks whose first line is a file name comment (``# churn.py``),
    by that name, and the block that loads from S3 afterwards as ``load``."""
    found = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S):
        first = block.splitlines()[0]
        if re.fullmatch(r"# \w+\.py", first):
            found[first[2:]] = block
        elif "outputLoad()" in block and "churn" in block and "local_scheduler" not in block:
            found["load"] = block
    return found


def test_the_worked_example_of_the_docs_runs_as_documented(tmp_path, luigid_server, s3_server,
                                                           s3_bucket):
    blocks = doc_blocks()
    assert set(blocks) == {"churn.py", "run_churn.py", "load"}, sorted(blocks)

    def ours(code: str) -> str:  # the page's bucket and scheduler -> the test's servers
        return (code.replace("s3://acme-analytics/churn", f"{s3_bucket}/churn")
                .replace("http://scheduler.internal:8082/", luigid_server.url))

    code = tmp_path / "code"
    code.mkdir()
    (code / "churn.py").write_text(blocks["churn.py"])
    (code / "run_churn.py").write_text(ours(blocks["run_churn.py"]))
    (code / "load.py").write_text(ours(blocks["load"]) + "print(len(df), list(df.columns))\n")
    env = {**os.environ, **s3_server.env, "PYTHONPATH": str(code)}
    procs = []
    try:
        for person in ("ann", "bob", "cem"):
            home = tmp_path / person
            home.mkdir()
            procs.append(subprocess.Popen(
                [sys.executable, str(code / "run_churn.py")], cwd=home, text=True,
                env={**env, "PIPEFLOW_STATE_DIR": str(home / "state")},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True))
        outputs = [p.communicate(timeout=DEADLINE) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-6000:]
        lines = out.strip().splitlines()
        assert lines[:2] == ["===== pipeflow execution summary =====", "Scheduled 7 tasks:"]
        assert "Result: success, every scheduled task ran or was already done." in lines
        assert re.fullmatch(r"<RunResult success: (\d ran, )?\d already done>|"
                            r"<RunResult success: 7 ran>", lines[-2]), out
        assert lines[-1] == "{'eu': 104, 'us': 169, 'apac': 65}", out

    load = subprocess.run([sys.executable, str(code / "load.py")], cwd=tmp_path, text=True,
                          env={**env, "PIPEFLOW_STATE_DIR": str(tmp_path / "state")},
                          capture_output=True, timeout=DEADLINE)
    assert load.returncode == 0, load.stderr[-6000:]
    assert load.stdout.splitlines()[-1] == "300 ['customer', 'region', 'months', 'long_term']"
    assert "COMPLETE" in load.stdout and "PENDING" not in load.stdout


def test_without_luigid_two_machines_on_s3_run_each_task_once(tmp_path, flow_code, s3_server,
                                                              s3_bucket):
    """The embedded engine on two "machines" (host names of their own, local state of their
    own) sharing one S3 data dir: the lease on a running task makes the other machine wait
    for it and reuse its output instead of running it too."""
    url = f"{s3_bucket}/solo/data"
    env = {k: v for k, v in machine_env(tmp_path, flow_code, None, s3_server, url).items()
           if not k.startswith("SCHED_")}
    env["EVENTS"] = str(tmp_path / "events.log")
    log, events = tmp_path / "runs.log", tmp_path / "events.log"
    machines = Machines(tmp_path, env)
    try:
        for name in ("a", "b"):
            machines.start(name, "local", BLOCK="Left")
        wait_for(lambda: machines.alive() and all((tmp_path / f"ready-{n}").exists()
                                                  for n in ("a", "b")),
                 "the two runners to import the flow")
        (tmp_path / "go").touch()
        first = wait_for(lambda: machines.alive() and [r for r in read_log(log)
                                                       if r["family"] == "Left"],
                         "a runner to start Left")
        other = ({"a", "b"} - {first[0]["runner"]}).pop()
        def waits() -> bool:
            lefts = [r["runner"] for r in read_log(log) if r["family"] == "Left"]
            assert lefts == [first[0]["runner"]], f"Left started twice: {lefts}"
            return events.exists() and f"{other} waits for Left" in events.read_text()

        # the other machine reaches Left (nothing else is left for it) and waits for it
        wait_for(lambda: machines.alive() and waits(), "the other runner to wait for Left")
        (tmp_path / "marker").touch()
        reports = {name: machines.finish(name) for name in ("a", "b")}
    finally:
        machines.stop_all()

    runs = read_log(log)
    assert sorted(r["family"] for r in runs) == FAMILIES, runs
    for name, report in reports.items():
        assert report["success"], (name, report["summary"])
        assert len(report["states"]) == 12
    keys = s3_server.keys(s3_bucket.removeprefix("s3://"), "solo/data/")
    assert not [k for k in keys if ".tmp-" in k or k.endswith(".lease.json")], keys
    for name, proc in machines.procs.items():
        assert not group_members(proc.pid), name
