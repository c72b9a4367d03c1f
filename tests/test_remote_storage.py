"""Outputs on any fsspec file system (issue 14): ``memory://`` (fast) and a real S3 endpoint.

The S3 endpoint is moto in server mode on 127.0.0.1 (``s3_server``/``s3_bucket`` fixtures,
tests/servers.py). The local state folder (history, locks, temp files being uploaded) is
``tmp_path/state`` (the ``data_dir`` fixture).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import fsspec
import pandas as pd
import pytest
from click.testing import CliRunner

import pipeflow
from pipeflow import settings, storage
from pipeflow.cli import main
from pipeflow.errors import (
    CorruptOutputError,
    IncompleteTaskError,
    ParameterError,
    SaveError,
    StorageAccessError,
    TaskFailedError,
    TaskLockedError,
)

RAN: list[str] = []
SOURCE = {"value": 1}


class RsPrices(pipeflow.tasks.TaskPqPandas):
    def run(self):
        RAN.append("RsPrices")
        self.save(pd.DataFrame({"p": [1.5, 2.5, SOURCE["value"] * 1.0]}))


@pipeflow.requires(RsPrices)
class RsTable(pipeflow.tasks.TaskCSVPandas):
    def run(self):
        RAN.append("RsTable")
        df = self.inputLoad()
        self.save(df.set_index(pd.Index(["a", "b", "c"], name="k")) * 2)


@pipeflow.requires(RsTable)
class RsModel(pipeflow.tasks.TaskPickle):
    def run(self):
        RAN.append("RsModel")
        self.save({"total": float(self.inputLoad()["p"].sum()), "rows": 3})
        self.saveMeta({"note": "fitted"})


@pipeflow.requires(RsModel)
class RsReport(pipeflow.tasks.TaskJson):
    def run(self):
        RAN.append("RsReport")
        self.save({"total": self.inputLoad()["total"]})


class TextTarget(pipeflow.targets.DataTarget):
    """A user format: reads and writes local paths only."""

    def read(self, path, **kwargs):
        return pathlib.Path(path).read_text()

    def write(self, data, path, **kwargs):
        pathlib.Path(path).write_text(data)


class RsText(pipeflow.tasks.TaskData):
    target_class = TextTarget
    target_ext = "txt"
    persist = ["head", "body"]

    def run(self):
        RAN.append("RsText")
        self.save({"head": "title", "body": "x" * 1000})


@pytest.fixture(autouse=True)
def _reset_ran():
    RAN.clear()
    SOURCE["value"] = 1
    yield


def _memory_keys(url: str) -> list[str]:
    fs = fsspec.filesystem("memory")
    root = url.split("://", 1)[1]
    return sorted(p.split(root, 1)[1] for p in fs.find("/" + root))


@pytest.fixture
def mem(data_dir):
    """The data dir is a fresh ``memory://`` location; removed afterwards."""
    url = f"memory://pf-{uuid.uuid4().hex[:10]}/data"
    pipeflow.set_dir(url)
    yield url
    top = "/" + url.split("://", 1)[1].split("/")[0]
    if fsspec.filesystem("memory").exists(top):
        fsspec.filesystem("memory").rm(top, recursive=True)


@pytest.fixture
def s3(s3_server, s3_bucket, data_dir):
    """The data dir is ``{bucket}/data`` on the moto S3 server."""
    settings.storage_options = s3_server.storage_options
    pipeflow.set_dir(f"{s3_bucket}/data")
    return f"{s3_bucket}/data"


@pytest.fixture(params=["mem", "s3"])
def remote(request):
    return request.getfixturevalue(request.param)


def _keys(url: str, s3_server=None) -> list[str]:
    if url.startswith("memory://"):
        return _memory_keys(url)
    fs = storage.filesystem("s3")
    fs.invalidate_cache()
    root = url.split("://", 1)[1]
    return sorted(p.split(root, 1)[1] for p in fs.find(root))


# -- a flow on the store ---------------------------------------------------------------------
def test_a_flow_runs_loads_and_previews_complete_on_the_store(remote, data_dir, tmp_path):
    flow = pipeflow.Workflow(RsReport)
    flow.run()
    assert RAN == ["RsPrices", "RsTable", "RsModel", "RsReport"]
    assert flow.outputLoad() == {"total": 8.0 + 2 * SOURCE["value"]}
    table = flow.outputLoad(RsTable)
    assert list(table.index) == ["a", "b", "c"] and table.index.name == "k"
    assert list(table["p"]) == [3.0, 5.0, 2.0]
    assert flow.outputLoad(RsModel) == {"total": 10.0, "rows": 3}
    assert RsModel().outputLoadMeta() == {"note": "fitted"}
    tid = {c: c().task_id for c in (RsPrices, RsTable, RsModel, RsReport)}
    assert _keys(remote) == sorted([
        f"/.pipeflow/commits/RsModel/.{tid[RsModel]}.commit.json",
        f"/.pipeflow/commits/RsPrices/.{tid[RsPrices]}.commit.json",
        f"/.pipeflow/commits/RsReport/.{tid[RsReport]}.commit.json",
        f"/.pipeflow/commits/RsTable/.{tid[RsTable]}.commit.json",
        f"/RsModel/{tid[RsModel]}-data.pkl",
        f"/RsModel/{tid[RsModel]}-meta.pickle",
        f"/RsPrices/{tid[RsPrices]}-data.parquet",
        f"/RsReport/{tid[RsReport]}-data.json",
        f"/RsTable/.{tid[RsTable]}-data.csv.index.json",
        f"/RsTable/{tid[RsTable]}-data.csv",
    ])
    # nothing of the flow on local disk but this machine's state (history, locks)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.*"))
    state = tmp_path / "state" / "pipeflow"
    assert storage.state_root() == state
    assert (storage.state_folder(remote) / "history.db").is_file()
    assert not [p for p in state.rglob("*") if ".tmp-" in p.name]
    # a fresh look (no record cached in this process) finds everything complete
    from pipeflow import integrity

    integrity._REMOTE.clear()
    integrity._WRITTEN.clear()
    RAN.clear()
    flow.run()
    assert RAN == []


def test_reset_and_data_change_detection_on_the_store(remote):
    flow = pipeflow.Workflow(RsReport)
    flow.run()
    RAN.clear()
    flow.reset(RsTable, confirm=False)
    assert not RsTable().complete() and RsPrices().complete()
    flow.run()
    assert RAN == ["RsTable", "RsModel", "RsReport"]  # a task run again cascades
    RAN.clear()
    SOURCE["value"] = 7
    prices = pipeflow.Workflow(RsPrices)
    prices.reset(RsPrices, confirm=False)
    prices.run()  # another flow changes the upstream data on the store
    assert RAN == ["RsPrices"]
    RAN.clear()
    flow.run()  # the records' upstream digests differ: every dependent runs again
    assert RAN == ["RsTable", "RsModel", "RsReport"]
    assert flow.outputLoad() == {"total": 8.0 + 14.0}


def test_a_file_changed_on_the_store_is_not_served(mem):
    flow = pipeflow.Workflow(RsModel)
    flow.run()
    target = RsModel().output()["data"] if isinstance(RsModel().output(), dict) \
        else RsModel().output()
    url = str(target.path)
    fs = fsspec.filesystem("memory")
    data = fs.cat_file(url)
    fs.pipe_file(url, bytes(b ^ 1 for b in data))  # same size, other content
    assert not RsModel().complete()  # (a new version of the object: its content is hashed)
    with pytest.raises(IncompleteTaskError, match="changed outside pipeflow"):
        flow.outputLoad(RsModel)
    target = RsModel().output()
    with pytest.raises(CorruptOutputError, match="changed outside pipeflow") as err:
        target.load()  # the target itself: the content is checked as it is read
    assert url in str(err.value)
    RAN.clear()
    flow.run()  # the load marked the record: the task runs again
    assert RAN == ["RsModel"]
    assert flow.outputLoad(RsModel) == {"total": 10.0, "rows": 3}
    fs.pipe_file(url, b"short")  # another size: a status check sees it
    assert not RsModel().complete()


def test_a_user_format_reads_and_writes_local_paths_only(remote):
    flow = pipeflow.Workflow(RsText)
    flow.run()
    assert flow.outputLoad() == ["title", "x" * 1000]
    assert str(RsText().output()["head"].path).startswith(remote + "/RsText/")


def test_cached_loads_on_the_store(mem):
    flow = pipeflow.Workflow(RsModel)
    flow.run()
    first = RsModel().outputLoad(cached=True)
    assert RsModel().outputLoad(cached=True) is first
    assert first == {"total": 10.0, "rows": 3}


def test_workflow_multi_and_a_workflow_path_that_is_a_url(mem, data_dir):
    other = mem.replace("/data", "/exp")
    flow = pipeflow.Workflow(RsModel, path=other)
    flow.run()
    assert _keys(other) and all("RsModel" in k or "RsTable" in k or "RsPrices" in k
                                for k in _keys(other))
    assert not RsModel().complete()  # the data dir is another place
    multi = pipeflow.WorkflowMulti(RsModel, {"a": {}, "b": {}}, path=other)
    assert multi.outputLoad(RsModel) == {"a": {"total": 10.0, "rows": 3},
                                         "b": {"total": 10.0, "rows": 3}}


def test_the_cli_takes_a_url_for_dir(mem, tmp_path, monkeypatch):
    (tmp_path / "rscli.py").write_text(textwrap.dedent('''
        import pipeflow
        class Hello(pipeflow.tasks.TaskJson):
            def run(self):
                self.save({"hi": 1})
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    url = mem.replace("/data", "/cli")
    out = CliRunner().invoke(main, ["run", "rscli:Hello", "--dir", url])
    assert out.exit_code == 0, out.output
    assert [k.rsplit(".", 1)[-1] for k in _memory_keys(url)] == ["json", "json"]
    out = CliRunner().invoke(main, ["preview", "rscli:Hello", "--dir", url])
    assert out.exit_code == 0 and "COMPLETE" in out.output, out.output


def test_the_task_lock_is_local_and_keyed_by_the_url(mem, tmp_path):
    pipeflow.Workflow(RsPrices).run()
    lock = RsPrices()._store.lock()
    assert lock.folder.startswith(str(tmp_path / "state" / "pipeflow" / "locks"))
    assert lock.folder == RsPrices()._store.lock().folder
    with lock as held:
        assert held
        with pytest.raises(TaskLockedError, match="being run"):
            pipeflow.Workflow(RsPrices).reset(RsPrices, confirm=False)
    assert RsPrices().complete()


# -- bad input -----------------------------------------------------------------------------
def test_unknown_protocols_and_missing_extras_are_parameter_errors(data_dir):
    with pytest.raises(ParameterError, match="no file system for the protocol 'nosuch'"):
        pipeflow.set_dir("nosuch://bucket/data")
    with pytest.raises(ParameterError, match=r"pip install 'pipeflow\[gcs\]'"):
        pipeflow.set_dir("gs://bucket/data")
    with pytest.raises(ParameterError, match=r"'\.\.' folder"):
        pipeflow.set_dir("memory://b/data/../other")
    with pytest.raises(ParameterError, match="names no bucket"):
        pipeflow.set_dir("s3:///data")
    with pytest.raises(ParameterError, match=r"'\.\.' folder"):
        pipeflow.Workflow(RsPrices, path="memory://b/x/../../y").run()
    assert settings.dirpath == data_dir


def test_a_missing_bucket_fails_before_anything_runs_or_is_created(s3_server, s3_bucket,
                                                                   tmp_path, data_dir):
    settings.storage_options = s3_server.storage_options
    url = f"s3://no-such-{uuid.uuid4().hex[:8]}/data"
    with pytest.raises(StorageAccessError, match="does not exist") as err:
        pipeflow.set_dir(url)
    assert url.split("/data")[0] in str(err.value) and settings.dirpath == data_dir
    settings.dir = url  # (a setting is not checked when assigned: the run checks it)
    with pytest.raises(StorageAccessError, match="Nothing was run or written"):
        pipeflow.Workflow(RsPrices).run()
    assert RAN == []
    assert not (tmp_path / "state").exists()


def test_an_unreachable_store_names_the_url_never_the_credentials(data_dir, tmp_path):
    from servers import free_port

    settings.storage_options = {
        "key": "AKIAEXAMPLEKEY123", "secret": "s3cr3t-never-shown",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}",
                          "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        "retries": 1}
    with pytest.raises(StorageAccessError) as err:
        pipeflow.set_dir("s3://team-bucket/data")
    text = str(err.value) + repr(err.value.__cause__)
    assert "s3://team-bucket/data" in text
    assert "s3cr3t-never-shown" not in text and "AKIAEXAMPLEKEY123" not in text
    assert not (tmp_path / "state").exists()


def test_a_failed_upload_fails_the_task_and_leaves_nothing_that_counts(s3, monkeypatch):
    real = storage.put

    def flaky(local, url):
        if "-data.csv" in url:
            raise storage.RemoteFileError(f"uploading to {url!r} failed: EndpointConnectionError")
        real(local, url)

    monkeypatch.setattr(storage, "put", flaky)
    flow = pipeflow.Workflow(RsTable)
    with pytest.raises(TaskFailedError) as err:
        flow.run()
    text = str(err.value)
    assert "RsTable" in text and "EndpointConnectionError" in text, text
    assert not RsTable().complete() and RsPrices().complete()
    assert not [k for k in _keys(s3) if "RsTable/.Rs" in k and k.endswith("commit.json")]
    monkeypatch.setattr(storage, "put", real)
    flow.run()
    assert list(flow.outputLoad()["p"]) == [3.0, 5.0, 2.0]


def test_a_save_by_hand_that_fails_to_upload_is_a_save_error(mem, monkeypatch):
    def broken(local, url):
        raise storage.RemoteFileError(f"uploading to {url!r} failed: ConnectionResetError")

    monkeypatch.setattr(storage, "put", broken)
    with pytest.raises(SaveError, match="cannot publish 'memory://.*RsPrices.*parquet'"):
        RsPrices().save(pd.DataFrame({"p": [1.0]}))
    assert not RsPrices().complete()


# -- a process killed mid-upload ---------------------------------------------------------------
CRASH = '''
import json, os, pathlib, sys, time
import pandas as pd
import pipeflow
from pipeflow import storage

class RsTwo(pipeflow.tasks.TaskPqPandas):
    persist = ["a", "b"]
    def run(self):
        self.save({"a": pd.DataFrame({"x": [1, 2]}), "b": pd.DataFrame({"y": [3, 4]})})

if __name__ == "__main__":
    pipeflow.settings.storage_options = json.loads(os.environ["RS_OPTIONS"])
    pipeflow.set_dir(sys.argv[1])
    real = storage.put
    def put(local, url):
        real(local, url)
        pathlib.Path(sys.argv[2]).write_text(url)  # one output is up: kill me now
        time.sleep(120)
    storage.put = put
    pipeflow.Workflow(RsTwo).run()
'''


def test_a_process_killed_mid_upload_leaves_nothing_complete(s3, s3_server, tmp_path):
    """Its lease names a process of this machine that is gone: void at once."""
    (tmp_path / "rscrash.py").write_text(CRASH)
    marker = tmp_path / "uploaded"
    env = {**os.environ, "RS_OPTIONS": json.dumps(s3_server.storage_options)}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "rscrash.py"), s3, str(marker)],
                            env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the runner exited before it uploaded anything"
            assert time.monotonic() < deadline, "no upload within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    keys = _keys(s3)
    assert len(keys) == 2
    assert keys[0].endswith(".lease.json") and keys[1].endswith("-a.parquet")  # no record
    spec = importlib.util.spec_from_file_location("rscrash", tmp_path / "rscrash.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rscrash"] = mod
    try:
        spec.loader.exec_module(mod)
        flow = pipeflow.Workflow(mod.RsTwo)
        ok, why, _ = mod.RsTwo()._store.output_state()
        assert not ok and "no successful pipeflow run committed them" in why
        staging = pathlib.Path(storage.staging_folder(s3 + "/RsTwo"))
        assert [p.name for p in staging.iterdir() if ".tmp-" in p.name]  # the killed one's
        flow.run(if_locked="fail")  # the dead runner's lease does not hold
        assert [p.name for p in staging.iterdir() if ".tmp-" in p.name] == []
        got = flow.outputLoad()
        assert list(got[0]["x"]) == [1, 2] and list(got[1]["y"]) == [3, 4]
        assert len(_keys(s3)) == 3  # a, b and the commit record (the lease is gone)
    finally:
        sys.modules.pop("rscrash", None)


def test_invalidate_all_and_orphans_on_the_store(remote):
    pipeflow.Workflow(RsReport).run()
    pipeflow.Workflow(RsText).run()
    assert pipeflow.invalidate_orphans(pipeflow.Workflow(RsText), confirm=False)
    assert RsText().complete() and not RsPrices().complete()
    assert [k for k in _keys(remote) if "RsText" not in k] == []
    assert pipeflow.invalidate_all(confirm=False)
    assert _keys(remote) == []


def test_forked_workers_write_to_the_store(s3):
    flow = pipeflow.Workflow(RsReport)
    flow.run(workers=2, executor="process")
    assert flow.outputLoad() == {"total": 10.0}
    assert RsReport().complete()


def test_a_lease_on_s3_guards_a_task_across_machines(s3, tmp_path):
    pipeflow.Workflow(RsPrices).run()
    settings.state_dir = str(tmp_path / "machine-a")
    lock = RsPrices()._store.lock()
    assert lock.acquire()
    try:
        lease = lock.lease
        assert lease.endswith(".lease.json") and json.loads(storage.cat(lease))["pid"] == \
            os.getpid()
        settings.state_dir = str(tmp_path / "machine-b")  # another machine's local locks
        with pytest.raises(TaskLockedError, match="being run"):
            pipeflow.Workflow(RsPrices).reset(RsPrices, confirm=False)
        assert RsPrices().complete()
    finally:
        lock.release()
    assert storage.cat(lease) is None
    # a lease whose holder died (expired) is taken over
    storage.pipe(lease, json.dumps({"host": "gone", "pid": 1, "expires": 0}).encode())
    pipeflow.Workflow(RsPrices).reset(RsPrices, confirm=False)
    assert not RsPrices().complete() and storage.cat(lease) is None


def test_history_and_task_store_stay_in_the_local_state_folder(mem, tmp_path):
    from pipeflow import runstore
    from pipeflow.trees.store import open_store

    folder = tmp_path / "state" / "pipeflow" / storage.slug(mem)
    assert storage.state_folder(mem) == folder
    assert folder.name.startswith("memory_pf-") and len(folder.name) <= 71
    assert runstore.history_path() == folder / "history.db"
    assert open_store().path == folder / "tasks.db"
    settings.state_dir = str(tmp_path / "elsewhere")
    assert runstore.history_path() == tmp_path / "elsewhere" / storage.slug(mem) / "history.db"
    with pytest.raises(ParameterError, match="local file or folder"):
        settings.state_dir = "s3://bucket/state"


def test_a_consumer_reads_a_producers_outputs_on_s3_through_flowimport(s3, tmp_path,
                                                                      data_dir):
    producer = pipeflow.Workflow(RsPrices)
    producer.run()
    export = tmp_path / "export" / "rs_stubs.py"
    export.parent.mkdir()
    pipeflow.FlowExport(flows=producer, save=True, path_export=export).generate()
    assert f"PRODUCER_DATA_DIR = {s3!r}" in export.read_text()
    pipeflow.set_dir(data_dir)  # the consumer's own data dir is local
    shared = pipeflow.FlowImport(export, module="rs_stubs", path_data=s3)
    assert str(shared.dirpath) == s3

    @pipeflow.requires(shared.RsPrices)
    class RsConsumer(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"rows": len(self.inputLoad())})

    flow = pipeflow.Workflow(RsConsumer)
    flow.run()
    assert flow.outputLoad() == {"rows": 3}
    assert str(flow.outputPath()).startswith(str(data_dir))
    sys.modules.pop("rs_stubs", None)


@pytest.mark.parametrize("where", ["s3", "mem"])
def test_two_runners_taking_over_one_expired_lease_never_both_hold_it(where, request,
                                                                     monkeypatch):
    # A and B both find the same expired lease. A takes it over first; B, which judged the
    # old one expired before A wrote, must not take it too (a delete-then-create takeover
    # let B delete A's fresh lease and create its own: both ran the task).
    from pipeflow import publishing

    request.getfixturevalue(where)
    lease = RsPrices()._store.lock().lease
    storage.pipe(lease, json.dumps({"host": "gone", "pid": 1, "expires": 0}).encode())
    expired = publishing._expired
    a_took: list[bool] = []

    def b_judges(data):
        verdict = expired(data)
        if not a_took:  # A gets in between B's read and B's write
            a_took.append(False)
            a_took[0] = publishing._take_lease(lease)
        return verdict

    monkeypatch.setattr(publishing, "_expired", b_judges)
    b_took = publishing._take_lease(lease)
    assert a_took == [True] and b_took is False
    a_lease = json.loads(storage.cat(lease))
    assert a_lease["pid"] == os.getpid() and a_lease["expires"] > 0
    publishing._drop_lease(lease)
    assert storage.cat(lease) is None


def test_the_lease_renewer_ends_as_soon_as_no_lease_is_held(mem):
    # It slept a third of remote_lease (20 s) before noticing: a thread named pipeflow-*
    # outlived every run that used a lease (the engine's own tests check none is left).
    import threading

    from pipeflow import publishing

    settings.remote_lease = 60.0
    pipeflow.Workflow(RsPrices).run()
    lock = RsPrices()._store.lock()
    assert lock.acquire()
    assert [t for t in threading.enumerate() if t.name == "pipeflow-leases"]
    lock.release()
    renewer = publishing._lease_renewer
    if renewer is not None:
        renewer.join(5)  # far less than the 20 s it slept
        assert not renewer.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "pipeflow-leases"]
    # and a lease taken afterwards is renewed by a new renewer
    assert lock.acquire()
    try:
        assert publishing._lease_renewer is not None and publishing._lease_renewer.is_alive()
    finally:
        lock.release()
