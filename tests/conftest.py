"""Shared fixtures: every test gets its own data dir and clean global state."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pathlib
import shlex
import shutil
import subprocess
import traceback
from collections.abc import Iterator

import luigi
import pytest

import pipeflow
from pipeflow import cache, settings
from pipeflow.locks import TaskLock

_DEFAULTS = {
    "cached": False,
    "save_with_param": True,
    "check_dependencies": True,
    "execution_summary": False,
    "fsync": False,
    "detect_code_changes": True,
    "detect_data_changes": True,
    "history": True,
    "storage_options": {},
    "remote_lease": 60.0,
}


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    """A fresh data dir, default settings, an empty cache; cwd is tmp_path.

    The local state folder (what stays on this machine when the data dir is remote) is
    ``tmp_path/state/pipeflow``, also for subprocesses (``XDG_STATE_HOME``).
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPEFLOW_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    old = {k: getattr(settings, k) for k in [*_DEFAULTS, "dir", "state_dir"]}
    for k, v in _DEFAULTS.items():
        setattr(settings, k, v)
    settings.state_dir = None
    path = pipeflow.set_dir(tmp_path / "data")
    cache.data.clear()
    luigi.task_register.Register.clear_instance_cache()
    yield path
    for k, v in old.items():
        setattr(settings, k, v)
    cache.data.clear()


@pytest.fixture
def stored(data_dir):
    """Lists the files under a folder (default: the data dir), pipeflow's own left out.

    Task lock files (``.pipeflow.lock``) are never deleted by design: removing a lock file
    others may hold open would let two holders in at once. ``.pipeflow/`` holds the run
    history.
    """

    def files(root=None):
        root = data_dir if root is None else root
        return sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".pipeflow.lock"
                      and ".pipeflow" not in p.relative_to(root).parts)

    return files


def pytest_terminal_summary(terminalreporter):
    """Show the pass count of d6tflow's own suite (tests/test_d6tflow_suite.py) at the end."""
    for kind in ("passed", "failed"):
        for report in terminalreporter.getreports(kind):
            for name, value in getattr(report, "user_properties", ()):
                if name == "d6tflow_suite":
                    terminalreporter.write_line(f"d6tflow's own test suite on pipeflow: {value}")


@contextlib.contextmanager
def _held_by_child(folder: str | pathlib.Path, name: str) -> Iterator[bool]:
    """A forked child tries to take the lock and keeps it until the block ends.

    Yields whether the child took it.
    """
    ours, theirs = multiprocessing.get_context("fork").Pipe()

    def target() -> None:
        try:
            lock = TaskLock(folder, name)
            theirs.send(lock.acquire())
            with contextlib.suppress(EOFError):
                theirs.recv()  # until told, or the parent is gone
            lock.release()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(0)

    proc = multiprocessing.get_context("fork").Process(target=target)
    proc.start()
    try:
        assert ours.poll(30), "the child never answered"
        yield ours.recv()
    finally:
        with contextlib.suppress(OSError):
            ours.send("release")
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
        ours.close()


@pytest.fixture
def held_by_child():
    """``with held_by_child(folder, name) as took:``: a forked process holds that task lock."""
    return _held_by_child


@pytest.fixture
def on_read_only_mount():
    """Run a command with one folder mounted read-only: a real EROFS, in a mount namespace.

    Skips where unshare(1)/mount(8) or mount namespaces are not available. Returns
    ``run(folder, *argv) -> subprocess.CompletedProcess`` (text output, 300 s timeout).
    """
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(8) to make a read-only mount")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode()}")

    def run(folder, *argv):
        d = shlex.quote(str(folder))
        script = (f"mount --bind {d} {d} && mount -o remount,ro,bind {d} && exec "
                  + " ".join(shlex.quote(str(a)) for a in argv))
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=300)

    return run


@pytest.fixture
def outside(tmp_path):
    """A folder beside the data dir that nothing pipeflow does may touch."""
    where = tmp_path / "outside"
    where.mkdir()
    return where


@pytest.fixture
def jupyter_kernel(tmp_path, monkeypatch) -> str:
    """The name of a kernelspec running this interpreter (this virtualenv's pipeflow).

    Found through ``JUPYTER_PATH``; nbclient starts the kernel on 127.0.0.1 and shuts it
    down when the notebook is done.
    """
    import json
    import sys

    spec = tmp_path / "jupyter" / "kernels" / "pipeflow-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pipeflow test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "pipeflow-test"


@pytest.fixture
def kernel_manager(jupyter_kernel):
    """A KernelManager of :func:`jupyter_kernel` (nbclient starts it); shut down afterwards."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=jupyter_kernel)
    yield km
    if km.has_kernel:
        km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def s3_server():
    """An S3 endpoint (moto's server) on 127.0.0.1 for one test module; see tests/servers.py.

    Per module, not per session: a server left running is a child process of the test
    process, and later modules (tests/test_executors.py) check that none is left.
    """
    from servers import s3

    with s3() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A new empty bucket on :func:`s3_server`; this process's AWS environment points at it."""
    import uuid

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return s3_server.bucket(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def luigid_server(tmp_path):
    """luigid on 127.0.0.1 at a free port for one test (fast dead-worker settings)."""
    from servers import luigid

    with luigid(tmp_path / "luigid") as server:
        yield server
