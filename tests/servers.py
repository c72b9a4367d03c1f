"""Real servers on 127.0.0.1 for the scale-out tests: luigi's central scheduler and an S3 endpoint.

Each is a context manager that starts the server on a free port in a subprocess of its own,
waits until it answers, and stops it (and checks it is gone) on exit::

    with luigid() as sched, s3() as store:
        store.bucket("team")
        env = {**os.environ, **store.env}           # for subprocesses
        pipeflow.settings.storage_options = store.storage_options
        pipeflow.run(tasks, local_scheduler=False, scheduler_url=sched.url)

Fixtures wrapping them (``luigid_server``, ``s3_server``) are in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

#: seconds a server gets to answer after it was started
START_TIMEOUT = 60.0

#: scheduler settings that make a dead worker's task come back in seconds, not minutes
FAST_SCHEDULER = {
    "worker_disconnect_delay": "3",
    "retry_delay": "1",
    "remove_delay": "600",
    "disable_window": "3600",
    "retry_count": "999",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: pathlib.Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not answer {url} within {START_TIMEOUT} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode is not None


@dataclass
class Luigid:
    """A running luigid.

    Attributes:
        host: 127.0.0.1.
        port: its port.
        url: ``http://127.0.0.1:{port}/``.
        config: the luigi config file it reads (``[scheduler]`` settings).
        log: its output.
    """

    host: str
    port: int
    config: pathlib.Path
    log: pathlib.Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def kill(self) -> None:
        """Stop the scheduler now (as if its machine died)."""
        self.proc.kill()
        self.proc.wait(10)

    def rpc(self, method: str, **args: object) -> object:
        """Call the scheduler's JSON API (``task_list``, ``graph``...) and return its response."""
        import json
        import urllib.parse

        query = urllib.parse.urlencode({"data": json.dumps(args)})
        with urllib.request.urlopen(f"{self.url}api/{method}?{query}", timeout=10) as r:
            return json.loads(r.read())["response"]


@contextlib.contextmanager
def luigid(folder: str | os.PathLike[str] | None = None,
           settings: Mapping[str, str] | None = None) -> Iterator[Luigid]:
    """Start ``luigid`` on 127.0.0.1 at a free port; stop it on exit.

    Args:
        folder: where its config, state file and log go (a temp folder by default).
        settings: ``[scheduler]`` settings, on top of :data:`FAST_SCHEDULER`.
    """
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="luigid-"))
        root = pathlib.Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        config = root / "luigi.cfg"
        lines = ["[scheduler]", f"state_path = {root / 'luigid.pickle'}",
                 "record_task_history = false"]
        lines += [f"{k} = {v}" for k, v in {**FAST_SCHEDULER, **(settings or {})}.items()]
        config.write_text("\n".join(lines) + "\n")
        port = free_port()
        log = root / "luigid.log"
        env = {**os.environ, "LUIGI_CONFIG_PATH": str(config)}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from luigi.cmdline import luigid; luigid()",
                 "--address", "127.0.0.1", "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            server = Luigid("127.0.0.1", port, config, log, proc)
            _wait_http(f"{server.url}api/task_list?data=%7B%7D", proc, log)
            yield server
        finally:
            _stop(proc)


@dataclass
class S3:
    """A running S3 endpoint (moto in server mode).

    Attributes:
        endpoint: ``http://127.0.0.1:{port}``.
        env: the environment a client process needs (credentials, region, endpoint).
        storage_options: what ``pipeflow.settings.storage_options`` (or s3fs) needs.
    """

    endpoint: str
    log: pathlib.Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    @property
    def storage_options(self) -> dict[str, object]:
        return {"key": "testing", "secret": "testing",
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    def client(self):  # type: ignore[no-untyped-def]
        """A boto3 S3 client talking to this endpoint."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def bucket(self, name: str) -> str:
        """Create bucket ``name``; return ``s3://{name}``."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` below ``prefix``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset endpoint)."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass


@contextlib.contextmanager
def s3(folder: str | os.PathLike[str] | None = None) -> Iterator[S3]:
    """Start moto's S3 server on 127.0.0.1 at a free port; stop it on exit."""
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="moto-"))
        root = pathlib.Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = root / "moto.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            server = S3(f"http://127.0.0.1:{port}", log, proc)
            _wait_http(f"{server.endpoint}/moto-api/", proc, log)
            yield server
        finally:
            _stop(proc)
