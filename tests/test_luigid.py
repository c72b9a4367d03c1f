"""pipeflow through luigi's central scheduler (luigid): a real luigid on 127.0.0.1 per test.

Several processes share one run; each task runs once in total; each call returns when its
flow has finished; luigid's quirks (cooldown after DONE, dead workers, workers leaving
early, ids shared across locations, unreachable or dying scheduler) are handled.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pipeflow
from pipeflow.engines import luigi as luigid_engine
from pipeflow.errors import (
    ParameterError,
    RemoteTaskError,
    SchedulerLostError,
    SchedulerUnreachableError,
    TaskFailedError,
)
from pipeflow.events import EventKind, TaskState

#: a flow the tests and their subprocesses share: every run() appends a line to RUNS
FLOW = textwrap.dedent('''
    import os, pathlib, time
    import pipeflow

    RUNS = pathlib.Path(os.environ["PIPEFLOW_TEST_RUNS"])
    HOLD = pathlib.Path(os.environ["PIPEFLOW_TEST_HOLD"])


    def note(name):
        with open(RUNS, "a") as fh:  # one short append per line: safe across processes
            fh.write(f"{name} {os.getpid()}\\n")


    def held(deadline=60):
        """Wait while the test holds the task (a file exists); whether it did."""
        if not HOLD.exists():
            return False
        note("blocked")
        end = time.monotonic() + deadline
        while HOLD.exists():
            if time.monotonic() > end:
                raise TimeoutError("the test never let the task go")
            time.sleep(0.02)
        return True


    class Leaf(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter()

        def run(self):
            note(f"Leaf{self.n}")
            if self.n == 0:  # the task a test holds (and kills its worker in)
                held()
            self.save(self.n * 10)


    class Total(pipeflow.tasks.TaskPickle):
        size = pipeflow.IntParameter(default=6)

        def requires(self):
            return [Leaf(n=i) for i in range(self.size)]

        def run(self):
            note("Total")
            self.save(sum(self.inputLoad()))


    class Gather(pipeflow.tasks.TaskPickle):
        def run(self):
            note("Gather")
            leaf = yield Leaf(n=0)  # a dynamic dependency
            self.save(leaf.load() + 1)
''')

#: what each subprocess runs: the shared flow against luigid
WORKER = textwrap.dedent('''
    import sys
    import pipeflow
    import flowmod

    pipeflow.set_dir(sys.argv[2])
    result = pipeflow.run(flowmod.Total(), local_scheduler=False, scheduler_url=sys.argv[1],
                          execution_summary=False, progress=False)
    print("RESULT", {k: r.state.value for k, r in result.tasks.items()})
''')


@pytest.fixture
def flow(tmp_path, monkeypatch):
    """The shared flow as a module (importable here and by the subprocesses)."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "flowmod.py").write_text(FLOW)
    (folder / "worker.py").write_text(WORKER)
    monkeypatch.setenv("PIPEFLOW_TEST_RUNS", str(tmp_path / "runs.txt"))
    monkeypatch.setenv("PIPEFLOW_TEST_HOLD", str(tmp_path / "hold"))
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("flowmod", None)
    import flowmod

    yield flowmod
    sys.modules.pop("flowmod", None)


def runs(tmp_path: pathlib.Path) -> list[tuple[str, int]]:
    path = tmp_path / "runs.txt"
    lines = path.read_text().split("\n") if path.exists() else []
    return [(n, int(p)) for n, p in (line.split() for line in lines if line)]


def counts(tmp_path: pathlib.Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, _ in runs(tmp_path):
        out[name] = out.get(name, 0) + 1
    return out


def wait_for(condition, what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def shared(url: str, **kw):
    return dict(local_scheduler=False, scheduler_url=url, **kw)


# -- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    (dict(scheduler_host="h"), r"scheduler_host='h' names a central scheduler \(luigid\), "
                               r"but local_scheduler=True runs on this machine alone"),
    (dict(local_scheduler=True, scheduler_port=8082), r"scheduler_port=8082 names"),
    (dict(local_scheduler=False, scheduler_port=0),
     r"scheduler_port must be a whole number of at least 1, not 0"),
    (dict(local_scheduler=False, scheduler_port=70000),
     r"scheduler_port must be a TCP port from 1 to 65535, not 70000"),
    (dict(local_scheduler=False, scheduler_port="8082"),
     r"scheduler_port must be a whole number of at least 1, not '8082'"),
    (dict(local_scheduler=False, scheduler_host="http://h:1"),
     r"scheduler_host must be a host name or IP address"),
    (dict(local_scheduler=False, scheduler_url="localhost:8082"),
     r"scheduler_url must be luigid's http\(s\) URL, such as 'http://localhost:8082/', "
     r"not 'localhost:8082'"),
    (dict(local_scheduler=False, scheduler_url="http://h:1/", scheduler_port=2),
     r"scheduler_url='http://h:1/' and scheduler_host/scheduler_port both name luigid"),
    (dict(local_scheduler="no"), r"local_scheduler must be True or False, not 'no'"),
    (dict(local_scheduler=False, engine=pipeflow.engines.LocalEngine()),
     r"engine= and local_scheduler=False both say where to run"),
])
def test_bad_scheduler_options_are_refused_before_anything_runs(flow, tmp_path, options,
                                                                 message):
    with pytest.raises(ParameterError, match=message):
        pipeflow.run(flow.Leaf(n=1), **options)
    with pytest.raises(ParameterError, match=message):
        pipeflow.Workflow(flow.Leaf, {"n": 1}).run(**options)
    assert runs(tmp_path) == []


def test_an_unreachable_scheduler_is_a_clear_error_within_seconds(flow, tmp_path):
    from servers import free_port

    port = free_port()  # nobody listens there
    url = f"http://127.0.0.1:{port}/"
    started = time.monotonic()
    with pytest.raises(SchedulerUnreachableError,
                       match=rf"luigi's central scheduler at http://127\.0\.0\.1:{port}/ "
                             rf"cannot be reached: nothing accepts connections there "
                             rf"\(connection refused\)\. Nothing was run\. Start it with "
                             rf"`luigid --port {port}`") as info:
        pipeflow.run(flow.Total(size=2), local_scheduler=False, scheduler_host="127.0.0.1",
                     scheduler_port=port, forced_all=True)
    assert time.monotonic() - started < 10
    assert info.value.__cause__ is None and info.value.url == url
    assert runs(tmp_path) == []
    assert not (tmp_path / "data" / "Total").exists()


def test_another_server_at_the_address_is_not_taken_for_luigid(flow, tmp_path):
    import http.server

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        with pytest.raises(SchedulerUnreachableError,
                           match=r"cannot be reached: it answered HTTP 501 where luigid "
                                 r"answers its API \(is another server on that port\?\)"):
            pipeflow.run(flow.Leaf(n=1), **shared(url))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert runs(tmp_path) == []


# -- one process ---------------------------------------------------------------------------------

def test_one_process_runs_the_flow_with_the_same_result_events_and_history(
        flow, tmp_path, luigid_server):
    events = []
    result = pipeflow.run(flow.Total(size=3), callbacks=[events.append],
                          **shared(luigid_server.url))
    assert result
    assert {r.task.task_id: r.state for r in result.tasks.values()} == {
        t.task_id: TaskState.COMPLETED for t in [*[flow.Leaf(n=i) for i in range(3)],
                                                 flow.Total(size=3)]}
    assert pipeflow.Workflow(flow.Total, {"size": 3}).outputLoad() == 30
    assert counts(tmp_path) == {"Leaf0": 1, "Leaf1": 1, "Leaf2": 1, "Total": 1}
    kinds = [e.kind for e in events if e.task is not None
             and e.task.task_id == flow.Total(size=3).task_id]
    assert kinds == [EventKind.TASK_STARTED, EventKind.TASK_COMPLETED]
    assert events[0].kind is EventKind.RUN_STARTED and events[0].total == 4
    assert events[-1].kind is EventKind.RUN_FINISHED
    history = pipeflow.history(full=True)
    assert sorted(history["family"]) == ["Leaf", "Leaf", "Leaf", "Total"]
    # luigid's page shows the graph: families, parameters, dependencies, all done
    tasks = luigid_server.rpc("task_list", limit=False)
    total = [v for v in tasks.values() if v["name"] == "Total"]
    assert [(t["params"], t["status"]) for t in total] == [({"size": "3"}, "DONE")]
    graph = luigid_server.rpc("dep_graph", task_id=[k for k, v in tasks.items()
                                                    if v["name"] == "Total"][0])
    assert sorted(v["params"]["n"] for v in graph.values() if v["name"] == "Leaf") == [
        "0", "1", "2"]
    # a second call finds everything complete
    again = pipeflow.run(flow.Total(size=3), **shared(luigid_server.url))
    assert {r.state for r in again.tasks.values()} == {TaskState.UP_TO_DATE}
    assert counts(tmp_path)["Total"] == 1


def test_priorities_break_ties_through_luigid(tmp_path, luigid_server):
    log = tmp_path / "order.txt"

    class Job(pipeflow.tasks.TaskPickle):
        name = pipeflow.Parameter()
        priority = pipeflow.IntParameter(default=2)

        def run(self):
            with open(log, "a") as fh:
                fh.write(self.name + "\n")
            self.save(1)

    jobs = [Job(name=n, priority=p) for n, p in
            [("low", 3), ("normal", 2), ("urgent", 0), ("high", 1)]]
    # d6tflow's spelling: host and port
    pipeflow.run(jobs, local_scheduler=False, scheduler_host=luigid_server.host,
                 scheduler_port=luigid_server.port)
    assert log.read_text().split() == ["urgent", "high", "normal", "low"]


def test_reset_then_rerun_within_luigids_cooldown_runs_the_task_again(flow, tmp_path):
    """luigid ignores "pending" for stable_done_cooldown_secs after DONE (here an hour)."""
    from servers import luigid

    with luigid(tmp_path / "cool", {"stable_done_cooldown_secs": "3600"}) as server:
        pipeflow.run(flow.Total(size=2), **shared(server.url))
        flow.Total(size=2).reset(confirm=False)
        handle = pipeflow.start(flow.Total(size=2), **shared(server.url))
        result = handle.result(timeout=60)  # (without the fix: waits for the hour)
        assert result.tasks[flow.Total(size=2).task_id].state is TaskState.COMPLETED
        assert counts(tmp_path)["Total"] == 2
        handle = pipeflow.start(flow.Total(size=2), forced_all_upstream=True,
                                **shared(server.url))
        handle.result(timeout=60)
    assert counts(tmp_path) == {"Leaf0": 2, "Leaf1": 2, "Total": 3}
    assert pipeflow.Workflow(flow.Total, {"size": 2}).outputLoad() == 10


def test_process_workers_share_the_run_through_luigid(flow, tmp_path, luigid_server):
    result = pipeflow.run(flow.Total(size=5), workers=3, **shared(luigid_server.url))
    assert {r.state for r in result.tasks.values()} == {TaskState.COMPLETED}
    assert counts(tmp_path) == {**{f"Leaf{i}": 1 for i in range(5)}, "Total": 1}
    assert len({p for _, p in runs(tmp_path)} - {os.getpid()}) >= 1  # forked workers ran them
    assert pipeflow.Workflow(flow.Total, {"size": 5}).outputLoad() == 100


def test_secrets_never_reach_luigid(tmp_path, luigid_server):
    class Fetch(pipeflow.tasks.TaskPickle):
        table = pipeflow.Parameter()
        token = pipeflow.SecretParameter()

        def run(self):
            raise PermissionError(f"token {self.token} was refused")

    with pytest.raises(TaskFailedError, match=r"token \*\*\* was refused"):
        pipeflow.run(Fetch(table="sales", token="hunter2-very-secret"),
                     **shared(luigid_server.url))
    [(lid, info)] = luigid_server.rpc("task_list", limit=False).items()
    assert info["params"] == {"table": "sales"}
    error = luigid_server.rpc("fetch_error", task_id=lid)["error"]
    assert "token *** was refused" in error and "hunter2" not in error
    assert "hunter2" not in json.dumps(luigid_server.rpc("task_list", limit=False))


def test_same_task_in_two_locations_gets_two_luigid_ids(tmp_path, luigid_server):
    log = tmp_path / "order.txt"

    class Place(pipeflow.tasks.TaskPickle):
        def run(self):
            with open(log, "a") as fh:
                fh.write("ran\n")
            self.save(1)

    one = pipeflow.Workflow(Place, path="one")
    two = pipeflow.Workflow(Place, path="two")
    assert one.run(**shared(luigid_server.url))
    assert two.run(**shared(luigid_server.url))
    assert log.read_text().split() == ["ran", "ran"]
    assert one.complete() and two.complete()
    ids = [k for k, v in luigid_server.rpc("task_list", limit=False).items()
           if v["name"] == "Place"]
    assert len(ids) == 2 and all(k.startswith(Place().task_id + ".") for k in ids)


def test_optional_dependency_that_fails_lets_the_downstream_run(tmp_path, luigid_server):
    class Flaky(pipeflow.tasks.TaskPickle):
        def run(self):
            raise ValueError("flaky source down")

    class Report(pipeflow.tasks.TaskPickle):
        def requires(self):
            return pipeflow.optional(Flaky())

        def run(self):
            self.save("report without flaky")

    result = pipeflow.run(Report(), abort=False, **shared(luigid_server.url))
    assert result.tasks[Flaky().task_id].state is TaskState.FAILED
    assert result.tasks[Report().task_id].state is TaskState.COMPLETED
    assert Report().outputLoad() == "report without flaky"


def test_dynamic_dependencies_and_workflow_multi(tmp_path, luigid_server):
    class Part(pipeflow.tasks.TaskPickle):
        k = pipeflow.IntParameter()

        def run(self):
            self.save(self.k)

    class Gather(pipeflow.tasks.TaskPickle):
        k = pipeflow.IntParameter()

        def run(self):
            parts = yield [Part(k=self.k), Part(k=self.k + 1)]
            self.save(sum(p.load() for p in parts))

    multi = pipeflow.WorkflowMulti(Gather, {"a": {"k": 1}, "b": {"k": 5}})
    results = multi.run(**shared(luigid_server.url, workers=2, executor="thread"))
    assert results
    assert multi.outputLoad() == {"a": 3, "b": 11}
    states = luigid_server.rpc("task_list", limit=False)
    assert {v["status"] for v in states.values()} == {"DONE"}
    assert sorted(v["params"]["k"] for v in states.values() if v["name"] == "Part") == [
        "1", "2", "5", "6"]


def test_a_failure_is_reported_to_luigid_and_the_next_call_retries_it(
        tmp_path, luigid_server):
    marker = tmp_path / "fixed"

    class Fragile(pipeflow.tasks.TaskPickle):
        def run(self):
            if not marker.exists():
                raise ValueError("input not there yet")
            self.save(1)

    with pytest.raises(TaskFailedError, match=r"Fragile\(\): ValueError: input not there"):
        pipeflow.run(Fragile(), **shared(luigid_server.url))
    [info] = luigid_server.rpc("task_list", limit=False).values()
    assert info["status"] == "FAILED"
    marker.touch()
    assert pipeflow.run(Fragile(), **shared(luigid_server.url))


# -- several processes ---------------------------------------------------------------------------

def _start_worker(tmp_path, url, env=None):
    code = tmp_path / "code"
    return subprocess.Popen(
        [sys.executable, str(code / "worker.py"), url, str(tmp_path / "data")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(code), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def stock_retry_delay(tmp_path):
    """luigid with its stock retry_delay (900 s): a crashed worker's task must not wait it."""
    from servers import luigid

    with luigid(tmp_path / "stock", {"retry_delay": "900"}) as server:
        yield server


def test_three_processes_share_the_run_and_survive_one_killed_mid_task(
        flow, tmp_path, stock_retry_delay):
    luigid_server = stock_retry_delay
    (tmp_path / "hold").touch()
    procs = [_start_worker(tmp_path, luigid_server.url) for _ in range(3)]
    try:
        wait_for(lambda: any(n == "blocked" for n, _ in runs(tmp_path)), "Leaf0 to start")
        [victim_pid] = [p for n, p in runs(tmp_path) if n == "blocked"]
        [victim] = [p for p in procs if p.pid == victim_pid]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        (tmp_path / "hold").unlink()  # the rerun of Leaf0 (elsewhere) goes straight through
        outs = {}
        for p in procs:
            if p is not victim:
                out, err = p.communicate(timeout=90)
                assert p.returncode == 0, err
                outs[p.pid] = out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    c = counts(tmp_path)
    assert c == {"Leaf0": 2, "blocked": 1, **{f"Leaf{i}": 1 for i in range(1, 6)}, "Total": 1}
    assert [p for n, p in runs(tmp_path) if n == "Leaf0"][1] != victim_pid
    # each surviving call returned with the whole flow complete
    for out in outs.values():
        states = eval(out.split("RESULT ", 1)[1])  # noqa: S307 - our own dict
        assert set(states.values()) <= {"completed", "up_to_date"}
        assert len(states) == 7
    # a fresh process sees everything complete and loads it
    check = subprocess.run(
        [sys.executable, "-c", "import sys, pipeflow, flowmod; pipeflow.set_dir(sys.argv[1]);"
         "p = pipeflow.preview(flowmod.Total(), print_it=False);"
         "print(pipeflow.Workflow(flowmod.Total).outputLoad(), 'COMPLETE' in str(p),"
         " 'PENDING' in str(p))", str(tmp_path / "data")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "code")},
        capture_output=True, text=True, timeout=60)
    assert check.stdout.split() == ["150", "True", "False"], check.stderr


def test_tasks_run_by_another_process_show_as_ran_on_another_worker(
        flow, tmp_path, luigid_server):
    """Two calls at once: each task once in total; this call's result names the others."""
    (tmp_path / "hold").touch()
    other = _start_worker(tmp_path, luigid_server.url)
    try:
        wait_for(lambda: any(n == "blocked" for n, _ in runs(tmp_path)), "Leaf0 to start")
        opened = threading.Timer(1.0, (tmp_path / "hold").unlink)
        opened.start()
        result = pipeflow.run(flow.Total(), **shared(luigid_server.url))
        opened.join()
        out, err = other.communicate(timeout=60)
        assert other.returncode == 0, err
    finally:
        if other.poll() is None:
            other.kill()
            other.wait(10)
    assert counts(tmp_path) == {"blocked": 1, **{f"Leaf{i}": 1 for i in range(6)}, "Total": 1}
    leaf0 = result.tasks[flow.Leaf(n=0).task_id]
    assert leaf0.state is TaskState.UP_TO_DATE
    assert leaf0.reason.startswith("ran on another worker, pipeflow-")
    assert str(other.pid) in leaf0.reason
    mine = {r.task.task_id for r in result.by_state("completed")}
    theirs = eval(out.split("RESULT ", 1)[1])  # noqa: S307 - our own dict
    assert mine == {k for k, v in theirs.items() if v == "up_to_date"}


def test_a_task_a_dead_worker_committed_but_never_reported_is_not_run_again(
        flow, tmp_path, luigid_server):
    """The other process commits Leaf0, then dies before telling luigid."""
    script = tmp_path / "code" / "dies.py"
    script.write_text(textwrap.dedent('''
        import os, signal, sys
        import pipeflow, flowmod

        def die(event):
            if event.kind.value == "task_completed" and event.family == "Leaf":
                os.kill(os.getpid(), signal.SIGKILL)  # committed, not reported

        pipeflow.set_dir(sys.argv[2])
        pipeflow.run(flowmod.Total(size=1), local_scheduler=False, scheduler_url=sys.argv[1],
                     callbacks=[die], progress=False)
    '''))
    (tmp_path / "hold").touch()
    dies = subprocess.Popen(
        [sys.executable, str(script), luigid_server.url, str(tmp_path / "data")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "code")})
    try:
        wait_for(lambda: any(n == "blocked" for n, _ in runs(tmp_path)), "Leaf0 to start")

        def open_gate(event):
            if event.kind is EventKind.RUN_STARTED:  # planned: Leaf0 is not complete yet
                (tmp_path / "hold").unlink()

        result = pipeflow.run(flow.Total(size=1), callbacks=[open_gate],
                              **shared(luigid_server.url))
        assert dies.wait(30) == -signal.SIGKILL
    finally:
        if dies.poll() is None:
            dies.kill()
            dies.wait(10)
    assert counts(tmp_path) == {"Leaf0": 1, "blocked": 1, "Total": 1}
    leaf0 = result.tasks[flow.Leaf(n=0).task_id]
    assert leaf0.state is TaskState.UP_TO_DATE
    assert leaf0.reason == "completed by another process while this run waited"


def test_a_process_that_dies_while_its_run_waits_for_what_it_yielded(
        flow, tmp_path, luigid_server):
    """Gather yields Leaf0; its process dies running Leaf0: this call runs both."""
    script = tmp_path / "code" / "gather.py"
    script.write_text(textwrap.dedent('''
        import sys
        import pipeflow, flowmod

        pipeflow.set_dir(sys.argv[2])
        pipeflow.run(flowmod.Gather(), local_scheduler=False, scheduler_url=sys.argv[1],
                     progress=False)
    '''))
    (tmp_path / "hold").touch()
    proc = subprocess.Popen(
        [sys.executable, str(script), luigid_server.url, str(tmp_path / "data")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "code")})
    try:
        wait_for(lambda: any(n == "blocked" for n, _ in runs(tmp_path)), "Leaf0 to start")
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    (tmp_path / "hold").unlink()
    handle = pipeflow.start(flow.Gather(), **shared(luigid_server.url))
    result = handle.result(timeout=60)
    assert result.tasks[flow.Gather().task_id].state is TaskState.COMPLETED
    assert result.tasks[flow.Leaf(n=0).task_id].state is TaskState.COMPLETED
    assert flow.Gather().outputLoad() == 1
    assert counts(tmp_path) == {"Gather": 3, "Leaf0": 2, "blocked": 1}
    assert [n for n, _ in runs(tmp_path)] == ["Gather", "Leaf0", "blocked",  # killed
                                             "Gather", "Leaf0", "Gather"]


def test_a_failure_in_another_process_fails_this_call_too(tmp_path, luigid_server, flow):
    script = tmp_path / "code" / "fails.py"
    script.write_text(textwrap.dedent('''
        import sys
        import pipeflow, flowmod

        class Bad(pipeflow.tasks.TaskPickle):
            def requires(self):
                return flowmod.Leaf(n=3)

            def run(self):
                flowmod.held()
                raise ValueError("bad input in row 7")

        pipeflow.set_dir(sys.argv[2])
        pipeflow.run(Bad(), local_scheduler=False, scheduler_url=sys.argv[1], progress=False)
    '''))
    (tmp_path / "hold").touch()
    proc = subprocess.Popen(
        [sys.executable, str(script), luigid_server.url, str(tmp_path / "data")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "code")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(n == "Leaf3" for n, _ in runs(tmp_path)), "Leaf3 to run")
        sys.path.insert(0, str(tmp_path / "code"))
        wait_for(lambda: any(v["name"] == "Bad" and v["status"] == "RUNNING"
                             for v in luigid_server.rpc("task_list", limit=False).values()),
                 "Bad to start")
        import importlib.util
        spec = importlib.util.spec_from_file_location("fails_mod", script)
        assert spec is not None
        # the same task class here (the script's __main__.Bad): its id is family + params
        src = script.read_text().split("pipeflow.set_dir")[0]
        ns: dict = {"__name__": "__main__"}
        exec(compile(src, str(script), "exec"), ns)  # noqa: S102 - our own test code
        threading.Timer(0.5, (tmp_path / "hold").unlink).start()
        with pytest.raises(TaskFailedError, match=r"failed in another process sharing this "
                           r"run through luigid .*bad input in row 7") as info:
            pipeflow.run(ns["Bad"](), **shared(luigid_server.url))
        assert isinstance(info.value.__cause__, RemoteTaskError)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert counts(tmp_path) == {"Leaf3": 1, "blocked": 1}


# -- scheduler trouble and cancelling ----------------------------------------------------------

def test_a_scheduler_that_dies_mid_run_is_a_clear_error_and_nothing_is_lost(
        flow, tmp_path, luigid_server, monkeypatch):
    monkeypatch.setattr(luigid_engine, "LOST_AFTER", 1.0)
    (tmp_path / "hold").touch()

    def kill_scheduler(event):
        if event.kind is EventKind.TASK_STARTED and event.params.get("n") == "0":
            luigid_server.kill()
            (tmp_path / "hold").unlink()

    with pytest.raises(SchedulerLostError,
                       match=rf"luigi's central scheduler at {luigid_server.url} stopped "
                             rf"answering during the run: nothing accepts connections") as info:
        pipeflow.run(flow.Total(size=2), callbacks=[kill_scheduler],
                     **shared(luigid_server.url))
    result = info.value.result
    assert result.tasks[flow.Leaf(n=0).task_id].state is TaskState.COMPLETED
    assert result.tasks[flow.Total(size=2).task_id].state is TaskState.CANCELLED
    assert pipeflow.Workflow(flow.Leaf, {"n": 0}).complete()  # committed, kept
    import sqlite3

    from pipeflow import runstore

    with sqlite3.connect(runstore.history_path()) as db:
        assert [r[0] for r in db.execute("SELECT status FROM runs")] == ["failed"]


def test_cancel_hands_the_running_task_back_to_luigid(flow, tmp_path, luigid_server):
    token = pipeflow.engines.CancelToken()
    (tmp_path / "hold").touch()

    def cancel_when_blocked(event):
        if event.kind is EventKind.TASK_STARTED and event.params.get("n") == "0":
            threading.Timer(0.3, token.cancel).start()

    with pytest.raises(pipeflow.errors.RunCancelledError):
        pipeflow.run(flow.Total(size=1), cancel=token, callbacks=[cancel_when_blocked],
                     **shared(luigid_server.url))
    leaf = [v for v in luigid_server.rpc("task_list", limit=False).values()
            if v["name"] == "Leaf"]
    assert [v["status"] for v in leaf] == ["FAILED"]  # handed back, not RUNNING forever
    (tmp_path / "hold").unlink()
    assert pipeflow.run(flow.Total(size=1), **shared(luigid_server.url))
    assert counts(tmp_path) == {"Leaf0": 2, "blocked": 1, "Total": 1}


def test_ctrl_c_hands_the_running_task_back_to_luigid_at_once(flow, tmp_path, luigid_server):
    (tmp_path / "hold").touch()
    proc = _start_worker(tmp_path, luigid_server.url)
    try:
        wait_for(lambda: any(n == "blocked" for n, _ in runs(tmp_path)), "Leaf0 to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    leaf0 = [(k, v) for k, v in luigid_server.rpc("task_list", limit=False).items()
             if v["name"] == "Leaf" and v["params"] == {"n": "0"}]
    assert [v["status"] for _, v in leaf0] == ["FAILED"]  # not RUNNING until its worker times out
    error = luigid_server.rpc("fetch_error", task_id=leaf0[0][0])["error"]
    assert json.loads(error.removeprefix(luigid_engine.MARK))["kind"] == "released"
    (tmp_path / "hold").unlink()
    result = pipeflow.run(flow.Total(), **shared(luigid_server.url))
    assert result.tasks[flow.Leaf(n=0).task_id].state is TaskState.COMPLETED
    assert counts(tmp_path)["Leaf0"] == 2
