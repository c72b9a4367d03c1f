"""Adversarial probes of outputs on S3/fsspec (issue 14), as users who did not write it.

Each test here reproduces a defect found by probing (see the probe-s3 report).
"""

from __future__ import annotations

import threading
import uuid

import pytest

from pipeflow import publishing, settings, storage


@pytest.fixture
def renewal_paused(monkeypatch):
    """Leases renewed every 0.1 s; each renewal pauses right after its PUT succeeded.

    Yields (renewed, resume): ``renewed`` is set when a renewal has rewritten a lease (the
    store holds the new content) but has not finished; ``resume`` lets it finish (it also
    finishes by itself after 1 s, so a fixed lock never hangs the test).
    """
    monkeypatch.setattr(settings, "remote_lease", 0.3)
    real = storage.replace
    renewed, resume = threading.Event(), threading.Event()

    def replace(url: str, data: bytes, tag: str) -> bool:
        done = real(url, data, tag)
        if done and threading.current_thread().name == "pipeflow-leases" \
                and not renewed.is_set():
            renewed.set()
            resume.wait(1.0)
        return done

    monkeypatch.setattr(storage, "replace", replace)
    yield renewed, resume
    resume.set()


def _record() -> str:
    return f"memory://probe-{uuid.uuid4().hex[:8]}/.pipeflow/commits/T/.T_1_abc.commit.json"


def test_a_lease_being_renewed_as_its_task_finishes_is_not_lost(renewal_paused):
    """One runner alone, 500 short tasks on S3: a task finishing while the renewer rewrote its
    lease failed with 'lost its lease ... another runner took the task over' (there was no
    other runner): the check read the lease this process had just written, and compared it
    with the content the renewer had not yet recorded."""
    renewed, resume = renewal_paused
    record = _record()
    lock = publishing.RemoteTaskLock(record, "T(i=1)")
    assert lock.acquire()
    try:
        assert renewed.wait(10), "the lease was never renewed"
        lost = publishing.lease_lost(record)
        resume.set()
        assert lost is False
    finally:
        resume.set()
        lock.release()


def test_a_lease_released_while_it_is_being_renewed_is_deleted(renewal_paused):
    """A task released while the renewer rewrote its lease left the lease behind: the
    release compared the store's (new) content with the old one and kept it, so the task was
    locked (TaskLockedError for anyone, reset included) until the lease expired."""
    renewed, resume = renewal_paused
    record = _record()
    lock = publishing.RemoteTaskLock(record, "T(i=1)")
    assert lock.acquire()
    assert renewed.wait(10), "the lease was never renewed"
    lock.release()
    resume.set()
    assert storage.cat(lock.lease) is None
    again = publishing.RemoteTaskLock(record, "T(i=1)")
    assert again.acquire()
    again.release()


CLI_TASKS = '''
import pipeflow

class Prepare(pipeflow.tasks.TaskJson):
    rows = pipeflow.IntParameter(default=100)
    def run(self):
        self.save({"rows": self.rows})

@pipeflow.requires(Prepare)
class Train(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"score": self.inputLoad()["rows"] / 2})
'''


def test_the_cli_resets_outputs_on_s3(s3_bucket, s3_server, tmp_path, monkeypatch):
    """``pipeflow reset tasks:Train --dir s3://...`` printed 'Nothing was deleted: the data
    dir s3:/bucket/d does not exist.' and deleted nothing: it looked for a local folder."""
    from click.testing import CliRunner

    from pipeflow.cli import main

    (tmp_path / "probe_cli_tasks.py").write_text(CLI_TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(settings, "storage_options", s3_server.storage_options)
    url, bucket = f"{s3_bucket}/d", s3_bucket[len("s3://"):]
    out = CliRunner().invoke(main, ["run", "probe_cli_tasks:Train", "--dir", url])
    assert out.exit_code == 0, out.output
    assert len(s3_server.keys(bucket)) == 4  # two outputs, two commit records
    out = CliRunner().invoke(main, ["reset", "probe_cli_tasks:Train", "--upstream", "--yes",
                                    "--dir", url])
    assert out.exit_code == 0, out.output
    assert out.output == ("Deleted the outputs of 2 tasks:\n    Prepare(rows=100)\n"
                          "    Train(rows=100)\n")
    assert s3_server.keys(bucket) == []
    out = CliRunner().invoke(main, ["reset", "probe_cli_tasks:Train", "--yes", "--dir", url])
    assert out.exit_code == 0, out.output
    assert out.output == "Deleted the outputs of 0 tasks.\n"


def test_the_task_tree_commands_use_the_local_store_of_an_s3_data_dir(
        s3_bucket, s3_server, tmp_path, monkeypatch):
    """``pipeflow tasks list --dir s3://...`` failed with "AttributeError: 'RemotePath' object
    has no attribute 'absolute'", while the Python API (create_session) kept the store in the
    local state folder. The commands must use that same store."""
    import asyncio

    from click.testing import CliRunner

    import pipeflow
    from pipeflow.cli import main
    from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor

    @executor("probe_rows")
    def probe_rows(inputs):
        return {"rows": 3}

    monkeypatch.setattr(settings, "storage_options", s3_server.storage_options)
    url, bucket = f"{s3_bucket}/d", s3_bucket[len("s3://"):]
    out = CliRunner().invoke(main, ["tasks", "list", "--dir", url])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("no task store at ")
    pipeflow.set_dir(url)

    async def make() -> str:
        tm = TaskManager(create_session())
        t = await tm.task_repository.create_task(name="probe_rows", inputs={})
        await tm.distribute_task_tree(TaskTreeNode(t))
        return t.id

    tid = asyncio.run(make())
    out = CliRunner().invoke(main, ["tasks", "list", "--dir", url, "--json"])
    assert out.exit_code == 0, out.output
    import json
    [row] = json.loads(out.output)
    assert (row["id"], row["name"], row["status"]) == (tid, "probe_rows", "completed")
    assert s3_server.keys(bucket) == []  # the store never goes to S3


def test_ctrl_c_during_a_multipart_upload_leaves_no_upload_on_s3(
        s3_bucket, s3_server, tmp_path, monkeypatch):
    """Ctrl-C while a large output was being uploaded (``pipeflow run`` of a 300 MB parquet):
    the message said the stopped task 'left none', but an incomplete multipart upload stayed
    on S3 (billed, and invisible to a listing): fsspec kept uploading in its own thread, and
    the process exited before it finished or aborted."""
    import asyncio
    import os
    import signal

    import s3fs

    monkeypatch.setattr(settings, "storage_options", s3_server.storage_options)
    storage.configure(settings.storage_options)
    started = threading.Event()

    async def slow_parts(self, *args, **kwargs):  # the parts take long: Ctrl-C comes first
        started.set()
        await asyncio.sleep(30)
        raise AssertionError("the upload was not stopped by Ctrl-C")

    monkeypatch.setattr(s3fs.S3FileSystem, "_upload_file_part_concurrent", slow_parts)
    monkeypatch.setattr(s3fs.core, "calculate_chunksize", lambda size, chunksize=None: 5 << 20)
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(11 << 20))

    def ctrl_c() -> None:
        if started.wait(30):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c, daemon=True).start()
    bucket = s3_bucket[len("s3://"):]
    with pytest.raises(KeyboardInterrupt):
        storage.put(local, f"{s3_bucket}/d/big.bin")
    assert started.is_set()
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == []
    assert s3_server.keys(bucket) == []
