"""Spec tests for outputs on fsspec file systems (issue 14), written before the code.

What a demanding user expects once ``pipeflow.set_dir("s3://bucket/data")`` works: everything
the user docs promise for a local data dir (formats, Workflow/WorkflowMulti, path/env,
change detection, reset, atomic publishing, crash safety, hostile input, secrets) holds on
S3 (a real moto server on 127.0.0.1) and on ``memory://``.

What lands on S3 is inspected with boto3 (``S3.keys``), never through pipeflow. The layout
expected is the local one (``docs/tasks-and-targets.md#where-outputs-go``) with the location
being the URL: outputs at ``{url}/{Family}/{task_id}-{name}.{ext}``, metadata beside them,
commit records in ``{url}/.pipeflow/commits/{Family}/.{task_id}.commit.json``; the run
history stays local (never an object in the bucket).

Names not decided when these tests were written (the lead reconciles; each is said where
used): ``pipeflow.settings.storage_options`` (a dict handed to fsspec), the error classes
for a bad location (any ``PipeflowError`` is accepted, the message is pinned), and where
the local state lives (any folder named ``.pipeflow`` or ``pipeflow`` below the working
directory or ``$HOME`` is accepted as "the documented local state").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

import pipeflow
import pipeflow.tasks.h5
from pipeflow import settings
from pipeflow.errors import PipeflowError
from pipeflow.targets import DataTarget

# moto accepts any credentials: these stand for a user's real ones, so that a test can
# look for them in every message, repr and log. The access key id counts as a secret too.
ACCESS_KEY = "AKIAPFSPEC7QX2KEYID9"
SECRET_KEY = "pfSpec/s3cr3t+Val-9f8e7d6c5b4a"
TOKEN = "pfSpecSessionTok3n-1a2b3c4d5e6f"
SECRETS = (ACCESS_KEY, SECRET_KEY, TOKEN)

#: exception modules that must never reach a user of a public call (translated at the edge)
RAW_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "urllib3", "gcsfs",
               "adlfs", "pyarrow", "luigi", "builtins")


def _options(endpoint: str) -> dict[str, Any]:
    return {"key": ACCESS_KEY, "secret": SECRET_KEY, "token": TOKEN,
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def _set_storage_options(value: dict[str, Any] | None) -> None:
    # undecided name: pipeflow.settings.storage_options (the brief's design)
    settings.storage_options = {} if value is None else value


def _no_secret(text: str, where: str = "") -> None:
    for secret in SECRETS:
        assert secret not in text, f"a credential shows in {where or 'the text'}: {text!r}"
        assert urllib.parse.quote(secret, safe="") not in text, where
        assert repr(secret)[1:-1] not in text or secret.isalnum(), where


def _check_user_error(exc: BaseException, url: str) -> None:
    """A pipeflow error naming ``url``, no credential in it, no raw library exception."""
    assert isinstance(exc, PipeflowError), f"raw {type(exc).__module__}.{type(exc).__name__}: {exc}"
    assert not type(exc).__module__.startswith(RAW_MODULES[:-1])
    message = str(exc)
    assert url in message, f"the message does not name {url!r}: {message}"
    _no_secret(message, "the error message")
    _no_secret(repr(exc), "the error's repr")


def _no_url_folders(root: pathlib.Path) -> None:
    """No local folder named like a URL scheme (``s3:``, ``gs:``, ``memory:``, ``foo:``)."""
    bad = [p for p in root.rglob("*") if p.name.endswith(":") or p.name in ("s3", "gs", "foo")]
    assert bad == [], f"a URL became local folders: {bad}"


# -- where things are ------------------------------------------------------------------------

class Store:
    """A data dir on S3 (moto), memory:// or a local folder, inspected without pipeflow.

    Args:
        url: the data dir as given to ``set_dir``.
        listing: every object below the data dir, relative to it.
        read, write: the bytes of one object, relative to the data dir.
        everything: every object of the bucket (or memory root), ``bucket/key``.
    """

    def __init__(self, url: str, listing: Callable[[], set[str]],
                 read: Callable[[str], bytes], write: Callable[[str, bytes], None],
                 everything: Callable[[], set[str]] | None = None) -> None:
        self.url = url.rstrip("/")
        self._listing, self.read, self.write = listing, read, write
        self._everything = everything or (lambda: set())

    def all(self) -> set[str]:
        """Every object of the bucket (memory root), ``bucket/key``; empty for a folder."""
        return self._everything()

    def rel(self) -> set[str]:
        """Every object below the data dir, relative to it."""
        return self._listing()

    def outputs(self) -> set[str]:
        """Objects below the data dir that are not pipeflow's own (in a ``.pipeflow/``)."""
        return {k for k in self.rel() if ".pipeflow" not in k.split("/")[:-1]}

    def records(self) -> set[str]:
        return {k for k in self.rel() if k.startswith(".pipeflow/") and
                k.endswith(".commit.json")}


def _s3_store(server: Any, url: str) -> Store:
    client = server.client()
    bucket, _, prefix = url.split("://", 1)[1].rstrip("/").partition("/")

    def everything() -> set[str]:
        return {f"{bucket}/{k}" for k in server.keys(bucket)}

    def listing() -> set[str]:
        return {k[len(prefix) + 1:] for k in server.keys(bucket, prefix + "/")}

    def read(rel: str) -> bytes:
        return client.get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"].read()

    def write(rel: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=data)

    return Store(url, listing, read, write, everything)


def _memory_store(url: str) -> Store:
    import fsspec

    fs = fsspec.filesystem("memory")
    root = "/" + url.split("://", 1)[1].rstrip("/")
    top = "/" + root.strip("/").split("/")[0]

    def everything() -> set[str]:
        return {p.lstrip("/") for p in fs.find(top)}

    def listing() -> set[str]:
        return {p[len(root) + 1:] for p in fs.find(root)}

    def read(rel: str) -> bytes:
        return fs.cat_file(f"{root}/{rel}")

    def write(rel: str, data: bytes) -> None:
        fs.pipe_file(f"{root}/{rel}", data)

    return Store(url, listing, read, write, everything)


def _local_store(folder: pathlib.Path) -> Store:
    def listing() -> set[str]:
        return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
                if p.is_file() and p.name != "history.db" and not p.name.startswith("history.db-")}

    def write(rel: str, data: bytes) -> None:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)

    return Store(str(folder), listing, lambda rel: (folder / rel).read_bytes(), write)


@pytest.fixture
def s3(s3_server, s3_bucket):
    """The data dir is ``s3://{new bucket}/data``; credentials in storage_options."""
    _set_storage_options(_options(s3_server.endpoint))
    url = f"{s3_bucket}/data"
    pipeflow.set_dir(url)
    yield _s3_store(s3_server, url)
    with contextlib.suppress(Exception):
        _set_storage_options(None)


@pytest.fixture
def memory():
    """The data dir is ``memory://pf-{uuid}/data``."""
    url = f"memory://pf-{uuid.uuid4().hex[:10]}/data"
    pipeflow.set_dir(url)
    return _memory_store(url)


@pytest.fixture
def local(data_dir):
    """The control: today's local data dir, which these tests describe as it works now."""
    return _local_store(pathlib.Path(data_dir).resolve())


@pytest.fixture(params=["local", "s3", "memory"])
def store(request):
    """Each test on S3 (moto), on memory://, and locally (the control: passes today)."""
    return request.getfixturevalue(request.param)


# -- a flow used throughout --------------------------------------------------------------------

RAN: list[str] = []  # task families in the order their run() was called, in this process


class RsLoad(pipeflow.tasks.TaskPqPandas):
    def run(self):
        RAN.append("RsLoad")
        self.save(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}))
        self.saveMeta({"rows": 4})


@pipeflow.requires(RsLoad)
class RsScale(pipeflow.tasks.TaskPqPandas):
    factor = pipeflow.FloatParameter(default=10.0)

    def run(self):
        RAN.append("RsScale")
        self.save(self.inputLoad() * self.factor)


@pipeflow.requires(RsScale)
class RsStats(pipeflow.tasks.TaskJson):
    def run(self):
        RAN.append("RsStats")
        self.save({"mean": float(self.inputLoad()["x"].mean())})


@pytest.fixture(autouse=True)
def _clear_ran():
    RAN.clear()
    yield
    RAN.clear()


def _own(task: Any, names: list[str], ext: str, meta: bool = False,
         extra: tuple[str, ...] = ()) -> set[str]:
    """The objects a committed data task owns, relative to its location (the local layout)."""
    fam, tid = task.task_family, task.task_id
    own = {f"{fam}/{tid}-{n}.{ext}" for n in names}
    own |= {f"{fam}/{x}" for x in extra}
    if meta:
        own.add(f"{fam}/{tid}-meta.pickle")
    return own | {f".pipeflow/commits/{fam}/.{tid}.commit.json"}


def _flow_keys() -> dict[str, set[str]]:
    return {"RsLoad": _own(RsLoad(), ["data"], "parquet", meta=True),
            "RsScale": _own(RsScale(), ["data"], "parquet"),
            "RsStats": _own(RsStats(), ["data"], "json")}


def _without_locks(keys: set[str]) -> set[str]:
    # a lock object under .pipeflow/ (conditional writes) is the implementer's choice
    return {k for k in keys if not (k.startswith(".pipeflow/") and "lock" in k.rsplit("/", 1)[-1])}


def _states(flow: Any, task: Any = None) -> dict[str, tuple[str, str | None]]:
    preview = flow.preview(task, print_it=False) if task else flow.preview(print_it=False)
    return {r.task.task_family: (str(r.status), r.reason) for r in preview.rows}


# -- set_dir with a URL ------------------------------------------------------------------------

def test_set_dir_keeps_the_url_and_creates_no_local_folder(s3_server, s3_bucket, tmp_path):
    _set_storage_options(_options(s3_server.endpoint))
    try:
        url = f"{s3_bucket}/team/data"
        pipeflow.set_dir(url)
        assert settings.dir == url
        assert str(RsLoad().output().path) == f"{url}/RsLoad/{RsLoad().task_id}-data.parquet"
        _no_url_folders(tmp_path)
        # a trailing slash names the same folder
        pipeflow.set_dir(url + "/")
        assert str(RsLoad().output().path) == f"{url}/RsLoad/{RsLoad().task_id}-data.parquet"
    finally:
        _set_storage_options(None)


def test_settings_dir_assignment_takes_a_url_too(s3):
    settings.dir = s3.url
    pipeflow.run(RsLoad(), execution_summary=False)
    assert s3.rel() >= _own(RsLoad(), ["data"], "parquet", meta=True)


# -- every format round trip -------------------------------------------------------------------

def _frame() -> pd.DataFrame:
    return pd.DataFrame({"i": [1, 2, 3], "f": [0.5, 1.5, -2.0], "s": ["a", "é", "☃ 名"]})


class MarkdownTarget(DataTarget):
    """The user format of docs/tasks-and-targets.md#your-own-format, unchanged: it reads
    and writes a local ``path`` with pathlib, as user code written for a local dir does."""

    accepts = "a str"

    def read(self, path, **kwargs):
        return pathlib.Path(path).read_text(encoding="utf-8")

    def write(self, data, path, **kwargs):
        pathlib.Path(path).write_text(data, encoding="utf-8")

    def check(self, data):
        if not isinstance(data, str):
            raise TypeError("Expected a str.")


class TaskMarkdown(pipeflow.tasks.TaskData):
    target_class = MarkdownTarget
    target_ext = "md"


class RsParquet(pipeflow.tasks.TaskPqPandas):
    def run(self):
        self.save(_frame())


class RsCSV(pipeflow.tasks.TaskCSVPandas):
    def run(self):
        self.save(_frame().set_index("s"))  # an index: a sidecar file beside the csv


class RsCSVGZ(pipeflow.tasks.TaskCSVGZPandas):
    def run(self):
        self.save(_frame())


class RsJson(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"a": [1, 2.5, None, "x"], "nested": {"k": True}, "u": "naïve ☃"})


class RsPickle(pipeflow.tasks.TaskPickle):
    def run(self):
        self.save({"tuple": (1, 2), "set": {1, 2}, "frame": _frame()})
        self.saveMeta({"kind": "pickle"})


class RsExcel(pipeflow.tasks.TaskExcelPandas):
    def run(self):
        self.save(_frame())


class RsReport(TaskMarkdown):
    title = pipeflow.Parameter(default="Weekly report")

    def run(self):
        self.save(f"# {self.title}\n\nAll good.\n")


class RsSplit(pipeflow.tasks.TaskPqPandas):
    persist = ["train", "test"]

    def run(self):
        df = pd.DataFrame({"x": range(10)})
        self.save({"train": df.iloc[:8], "test": df.iloc[8:]})


class RsH5(pipeflow.tasks.h5.TaskH5Pandas):
    """HDF5 needs a local file to write and read (PyTables): it must still work on S3."""

    def run(self):
        self.save(_frame())


def _equal(got: Any, want: Any) -> None:
    if isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want)
    elif isinstance(want, dict) and any(isinstance(v, pd.DataFrame) for v in want.values()):
        assert got.keys() == want.keys()
        for k in want:
            _equal(got[k], want[k])
    else:
        assert got == want


_CSV_INDEXED = _frame().set_index("s")
FORMATS = {
    # cls: (persist names, ext, extra files beside the output, what load gives, direct reader)
    "parquet": (RsParquet, ["data"], "parquet", (), _frame(),
                lambda b: pd.read_parquet(io.BytesIO(b))),
    "csv": (RsCSV, ["data"], "csv", ("sidecar",), _CSV_INDEXED,
            lambda b: pd.read_csv(io.BytesIO(b), index_col="s")),
    "csv.gz": (RsCSVGZ, ["data"], "csv.gz", (), _frame(),
               lambda b: pd.read_csv(io.BytesIO(b), compression="gzip")),
    "json": (RsJson, ["data"], "json", (), {"a": [1, 2.5, None, "x"], "nested": {"k": True},
                                            "u": "naïve ☃"}, lambda b: json.loads(b)["data"]),
    "pickle": (RsPickle, ["data"], "pkl", ("meta",),
               {"tuple": (1, 2), "set": {1, 2}, "frame": _frame()}, pickle.loads),
    "excel": (RsExcel, ["data"], "xlsx", (), _frame(),
              lambda b: pd.read_excel(io.BytesIO(b))),
    "user DataTarget": (RsReport, ["data"], "md", (), "# Weekly report\n\nAll good.\n",
                        lambda b: b.decode("utf-8")),
    "h5": (RsH5, ["data"], "hdf5", (), _frame(), None),
    "persist": (RsSplit, ["train", "test"], "parquet", (),
                {"train": pd.DataFrame({"x": range(8)}),
                 "test": pd.DataFrame({"x": range(8, 10)}, index=range(8, 10))},
                None),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_saves_to_the_store_and_loads_back(store, fmt, tmp_path):
    cls, names, ext, extra, want, direct = FORMATS[fmt]
    task = cls()
    assert not task.complete()
    result = pipeflow.run(task, execution_summary=False)
    assert [r.state.value for r in result.tasks.values()] == ["completed"]
    assert task.complete()

    sidecars = tuple(f".{task.task_id}-data.{ext}.index.json" for x in extra if x == "sidecar")
    assert _without_locks(store.rel()) == _own(task, names, ext, meta="meta" in extra,
                                               extra=sidecars)
    # output().path is the object's URL, not a local path (nor a Path that collapsed '//')
    paths = {n: str(t.path) for n, t in task.output().items()} if len(names) > 1 else {
        "data": str(task.output().path)}
    assert paths == {n: f"{store.url}/{cls.__name__}/{task.task_id}-{n}.{ext}" for n in names}

    loaded = task.outputLoad(as_dict=True) if len(names) > 1 else task.outputLoad()
    _equal(loaded, want)
    if direct is not None:  # the object really is that format (read without pipeflow)
        got = direct(store.read(f"{cls.__name__}/{task.task_id}-data.{ext}"))
        _equal(got, want if fmt != "csv" else _CSV_INDEXED)
    if "meta" in extra:
        assert task.outputLoadMeta() == {"kind": "pickle"}
    # a second load reads the store again: same answer
    pipeflow.data.clear()
    _equal(task.outputLoad(as_dict=True) if len(names) > 1 else task.outputLoad(), want)
    _no_url_folders(tmp_path)


def test_multiple_outputs_load_in_persist_order_and_by_key(store):
    pipeflow.run(RsSplit(), execution_summary=False)
    train, test = RsSplit().outputLoad()
    assert (len(train), len(test)) == (8, 2)
    only = RsSplit().outputLoad(keys=["test"], as_dict=True)
    assert list(only) == ["test"]
    assert only["test"]["x"].tolist() == [8, 9]


def test_in_memory_tasks_write_nothing_to_the_store(store):
    class RsCached(pipeflow.tasks.TaskCache):
        def run(self):
            self.save({"k": 1})

    pipeflow.run(RsCached(), execution_summary=False)
    assert RsCached().outputLoad() == {"k": 1}
    assert store.outputs() == set()


def test_a_refused_save_publishes_nothing_and_names_the_url(store):
    class RsWrongType(pipeflow.tasks.TaskPqPandas):
        def run(self):
            self.save({"not": "a DataFrame"})

    result = pipeflow.run(RsWrongType(), abort=False, execution_summary=False)
    error = result.by_state("failed")[0].error
    assert isinstance(error, pipeflow.errors.SaveError)
    url = f"{store.url}/RsWrongType/{RsWrongType().task_id}-data.parquet"
    assert f"to '{url}'" in str(error)
    assert "Nothing was written" in str(error)
    assert store.outputs() == set() and store.records() == set()
    assert not RsWrongType().complete()


def test_a_run_that_fails_after_saving_leaves_nothing_that_counts(store):
    class RsFlaky(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"rows": 3})
            raise ValueError("lost the database connection")

    pipeflow.run(RsFlaky(), abort=False, execution_summary=False)
    assert (RsFlaky().complete(), RsFlaky().output().exists()) == (False, False)
    assert store.outputs() == set() and store.records() == set()


# -- Workflow, WorkflowMulti -------------------------------------------------------------------

def test_workflow_preview_run_load_reset_on_the_store(store):
    flow = pipeflow.Workflow(RsStats, {"factor": 10.0})
    preview = flow.preview(print_it=False)
    assert preview.counts() == {"COMPLETE": 0, "PENDING": 3, "STALE": 0}
    assert "RsStats" in preview.text() and "PENDING" in preview.text()

    result = flow.run(execution_summary=False)
    assert RAN == ["RsLoad", "RsScale", "RsStats"]
    assert {r.task.task_family: r.state.value for r in result.tasks.values()} == {
        "RsLoad": "completed", "RsScale": "completed", "RsStats": "completed"}
    assert flow.preview(print_it=False).counts() == {"COMPLETE": 3, "PENDING": 0, "STALE": 0}
    keys = _flow_keys()
    assert _without_locks(store.rel()) == keys["RsLoad"] | keys["RsScale"] | keys["RsStats"]

    assert flow.outputLoad() == {"mean": 25.0}
    assert flow.outputLoad(RsScale)["x"].tolist() == [10.0, 20.0, 30.0, 40.0]
    assert list(flow.outputLoadAll()) == ["RsStats", "RsScale", "RsLoad"]
    assert flow.outputLoadMeta(RsLoad) == {"rows": 4}
    assert flow.outputLoadAllMeta() == {"RsLoad": {"rows": 4}}
    assert str(flow.outputPath()) == f"{store.url}/RsStats/{RsStats().task_id}-data.json"
    assert flow.complete() and flow.complete(RsLoad)

    flow.reset([RsScale, RsStats], confirm=False)
    assert (flow.complete(RsLoad), flow.complete(RsScale), flow.complete()) == (True, False, False)
    assert _without_locks(store.rel()) == keys["RsLoad"]
    assert _states(flow) == {"RsStats": ("PENDING", None), "RsScale": ("PENDING", None),
                             "RsLoad": ("COMPLETE", None)}
    RAN.clear()
    result = flow.run(execution_summary=False)
    assert RAN == ["RsScale", "RsStats"]
    assert {r.task.task_family: r.state.value for r in result.tasks.values()} == {
        "RsLoad": "up_to_date", "RsScale": "completed", "RsStats": "completed"}
    assert flow.outputLoad() == {"mean": 25.0}


def test_reset_upstream_and_downstream_and_forced_runs(store):
    flow = pipeflow.Workflow(RsStats)
    flow.run(execution_summary=False)
    keys = _flow_keys()
    flow.reset_downstream(RsScale, confirm=False)
    assert _without_locks(store.rel()) == keys["RsLoad"]
    flow.run(execution_summary=False)
    flow.reset_upstream(RsScale, confirm=False)
    assert _without_locks(store.rel()) == keys["RsStats"]
    assert _states(flow)["RsLoad"] == ("PENDING", None)
    flow.run(execution_summary=False)
    RAN.clear()
    flow.run(forced=RsScale, execution_summary=False)
    assert RAN == ["RsScale", "RsStats"]  # the forced task and what it makes stale
    assert _without_locks(store.rel()) == keys["RsLoad"] | keys["RsScale"] | keys["RsStats"]
    assert flow.outputLoad() == {"mean": 25.0}


def test_workflow_multi_on_the_store(store):
    flows = pipeflow.WorkflowMulti(RsStats, {"small": {"factor": 1.0}, "big": {"factor": 3.0}})
    results = flows.run(execution_summary=False)
    assert {name: bool(r) for name, r in results.items()} == {"small": True, "big": True}
    assert RAN.count("RsLoad") == 1  # shared by both flows: runs once
    assert flows.outputLoad() == {"small": {"mean": 2.5}, "big": {"mean": 7.5}}
    assert flows.outputLoad(RsScale, flow="big")["x"].tolist() == [3.0, 6.0, 9.0, 12.0]
    assert {n: p.counts()["COMPLETE"] for n, p in flows.preview(print_it=False).items()} == {
        "small": 3, "big": 3}
    scale_ids = {RsScale(factor=f).task_id for f in (1.0, 3.0)}
    assert {k for k in store.outputs() if k.startswith("RsScale/")} == {
        f"RsScale/{tid}-data.parquet" for tid in scale_ids}
    flows.reset(RsScale, flow="big", confirm=False)
    assert flows.complete(flow="small") and not flows.complete(flow="big")


def test_workflow_path_and_env_on_s3_with_a_local_data_dir(s3_server, s3_bucket, data_dir,
                                                           tmp_path):
    """A flow whose path is an S3 URL; the data dir (and so the history) stays local."""
    _set_storage_options(_options(s3_server.endpoint))
    try:
        exp = f"{s3_bucket}/experiments"
        dev = pipeflow.Workflow(RsStats, {"factor": 10.0}, path=exp, env="dev")
        plain = pipeflow.Workflow(RsStats, {"factor": 10.0})
        assert str(dev.outputPath()) == f"{exp}/env=dev/RsStats/{RsStats().task_id}-data.json"
        dev.run(execution_summary=False)
        where = _s3_store(s3_server, f"{exp}/env=dev")
        keys = _flow_keys()
        assert _without_locks(where.rel()) == keys["RsLoad"] | keys["RsScale"] | keys["RsStats"]
        assert {k.split("/", 1)[1] for k in where.all()} == {
            f"experiments/env=dev/{k}" for k in where.rel()}
        task = dev.get_task()
        assert str(task.output().path) == str(dev.outputPath())
        assert (task.complete(), plain.complete()) == (True, False)
        assert task.outputLoad() == {"mean": 25.0}
        # the history stays in the local data dir, and nothing else lands there
        local = [p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file()]
        assert [p for p in local if p.parts[0] != ".pipeflow"] == []
        assert len(pipeflow.history(family="RsStats")) == 1
        _no_url_folders(tmp_path)
        # env is still a single folder name
        with pytest.raises(pipeflow.errors.UnsafePathError, match=r"env='\.\./prod'"):
            pipeflow.Workflow(RsStats, path=exp, env="../prod")
        dev.reset(RsStats, confirm=False)
        assert _without_locks(where.rel()) == keys["RsLoad"] | keys["RsScale"]
        # a WorkflowMulti takes path and env the same way
        grid = pipeflow.WorkflowMulti(RsStats, {"factor": [1.0, 3.0]}, path=exp, env="grid")
        grid.run(execution_summary=False)
        assert grid.outputLoad() == {"factor=1.0": {"mean": 2.5}, "factor=3.0": {"mean": 7.5}}
        assert {k.split("/")[0] for k in _s3_store(s3_server, f"{exp}/env=grid").outputs()} == {
            "RsLoad", "RsScale", "RsStats"}
    finally:
        _set_storage_options(None)


def test_two_workflows_on_two_prefixes_do_not_share_outputs(s3):
    a = pipeflow.Workflow(RsStats, path=f"{s3.url}/a")
    b = pipeflow.Workflow(RsStats, path=f"{s3.url}/b")
    a.run(execution_summary=False)
    assert a.complete() and not b.complete()
    assert _states(b) == {"RsStats": ("PENDING", None), "RsScale": ("PENDING", None),
                          "RsLoad": ("PENDING", None)}
    b.run(execution_summary=False)
    b.reset(RsLoad, confirm=False)
    assert a.complete(RsLoad) and not b.complete(RsLoad)


# -- bad locations: a pipeflow error naming the URL, before any task runs ------------------------

def _first_error(url: str, tmp_path: pathlib.Path, run: Callable[[], Any] | None = None
                 ) -> BaseException:
    """``set_dir(url)``, then a run of RsStats: the first error (either may raise it).

    Either way no task's run() was called and no local folder is named after the URL; a
    set_dir that refuses keeps the data dir in force.
    """
    old = settings.dir
    try:
        pipeflow.set_dir(url)
    except Exception as exc:  # noqa: BLE001 - what it is is checked by the caller
        assert settings.dir == old
        error: BaseException = exc
    else:
        try:
            (run or (lambda: pipeflow.run(RsStats(), execution_summary=False)))()
        except Exception as exc:  # noqa: BLE001
            error = exc
        else:
            raise AssertionError(f"neither set_dir({url!r}) nor the run raised")
    assert RAN == [], f"tasks ran before the bad location was reported: {RAN}"
    _no_url_folders(tmp_path)
    return error


def test_a_missing_bucket_is_a_clear_error_before_any_task_runs(s3_server, s3_bucket, tmp_path):
    _set_storage_options(_options(s3_server.endpoint))
    try:
        url = f"s3://pf-no-such-bucket-{uuid.uuid4().hex[:8]}/data"
        error = _first_error(url, tmp_path)
        _check_user_error(error, url)
        assert "bucket" in str(error).lower() and "exist" in str(error).lower()
        assert s3_server.keys(s3_bucket.split("://")[1]) == []
    finally:
        _set_storage_options(None)


def test_bad_credentials_are_a_clear_error_before_any_task_runs(tmp_path, monkeypatch):
    """A second moto server that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT=0)."""
    from servers import s3 as s3_endpoint

    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    with s3_endpoint(tmp_path / "moto-auth") as strict:
        monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
        _set_storage_options(_options(strict.endpoint))
        try:
            url = "s3://team-bucket/data"
            error = _first_error(url, tmp_path)
            _check_user_error(error, url)
            assert any(w in str(error).lower() for w in (
                "credential", "access denied", "forbidden", "not authori", "access key"))
        finally:
            _set_storage_options(None)


@pytest.mark.timeout(120)
def test_an_unreachable_endpoint_is_a_clear_error_within_seconds(tmp_path):
    from servers import free_port

    port = free_port()  # nobody listens there
    options = _options(f"http://127.0.0.1:{port}")
    # one attempt, so the test stays short (botocore's default retries take ~10 s per call);
    # a user's config_kwargs pass through to botocore
    options["config_kwargs"] = {"connect_timeout": 2, "retries": {"max_attempts": 1}}
    _set_storage_options(options)
    try:
        url = "s3://team-bucket/data"
        box: list[BaseException] = []
        worker = threading.Thread(target=lambda: box.append(_first_error(url, tmp_path)),
                                  daemon=True)
        worker.start()
        worker.join(90)  # a guard against a hang, not a speed goal
        assert not worker.is_alive(), "set_dir/run hung on an endpoint nobody listens on"
        assert box, "the check itself failed (see the thread's traceback above)"
        _check_user_error(box[0], url)
        assert f"127.0.0.1:{port}" in str(box[0])  # the endpoint it could not reach
    finally:
        _set_storage_options(None)


def test_an_unknown_protocol_is_refused_by_set_dir(tmp_path):
    old = settings.dir
    with pytest.raises(PipeflowError) as info:
        pipeflow.set_dir("foo://x/data")
    _check_user_error(info.value, "foo://x/data")
    assert "foo" in str(info.value) and "protocol" in str(info.value).lower()
    assert settings.dir == old
    _no_url_folders(tmp_path)
    with pytest.raises(PipeflowError, match="foo://x/data"):
        pipeflow.Workflow(RsStats, path="foo://x/data").run(execution_summary=False)
    assert RAN == []


@pytest.mark.parametrize(("url", "package", "extra"), [
    ("gs://team-bucket/data", "gcsfs", "gcs"),
    ("abfs://team-container/data", "adlfs", "azure"),
])
def test_a_protocol_whose_package_is_missing_names_the_extra(url, package, extra, tmp_path,
                                                            monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed: import fails
    old = settings.dir
    with pytest.raises(pipeflow.errors.MissingDependencyError) as info:
        pipeflow.set_dir(url)
    _check_user_error(info.value, url)
    assert package in str(info.value) and f"pipeflow[{extra}]" in str(info.value)
    assert settings.dir == old
    _no_url_folders(tmp_path)


@pytest.mark.parametrize("url", ["s3://", "s3:///data", "s3:// bucket/data"])
def test_a_url_without_a_valid_bucket_is_refused(url, tmp_path):
    old = settings.dir
    with pytest.raises(PipeflowError, match=re_escape(url)):
        pipeflow.set_dir(url)
    assert settings.dir == old
    _no_url_folders(tmp_path)


def re_escape(text: str) -> str:
    return re.escape(repr(text)[1:-1])


def test_a_workflow_path_on_a_missing_bucket_fails_before_any_task_runs(s3_server, s3_bucket,
                                                                         tmp_path):
    _set_storage_options(_options(s3_server.endpoint))
    try:
        url = f"s3://pf-no-such-bucket-{uuid.uuid4().hex[:8]}/exp"
        with pytest.raises(PipeflowError) as info:
            pipeflow.Workflow(RsStats, path=url).run(execution_summary=False)
        _check_user_error(info.value, url)
        assert RAN == []
        _no_url_folders(tmp_path)
    finally:
        _set_storage_options(None)


@pytest.mark.parametrize("value", ["key=abc", ["secret", SECRET_KEY], 42])
def test_storage_options_must_be_a_dict(value):
    with pytest.raises(pipeflow.errors.ParameterError, match="storage_options") as info:
        _set_storage_options(value)  # type: ignore[arg-type]
    _no_secret(str(info.value))


# -- secrets: storage_options credentials never shown ----------------------------------------

def test_credentials_never_show_in_reprs_previews_results_errors_logs_or_records(
        s3, capsys, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="pipeflow")
    caplog.set_level(logging.DEBUG, logger="luigi-interface")

    class RsBroken(pipeflow.tasks.TaskPqPandas):
        def run(self):
            self.save(42)

    flow = pipeflow.Workflow(RsStats)
    shown = [repr(flow), str(flow), repr(flow.get_task()), str(flow.output()),
             repr(flow.output()), repr(flow.outputPath())]
    preview = flow.preview()
    shown += [str(preview), repr(preview), preview.text(), preview._repr_html_() or ""]
    result = flow.run(execution_summary=True)
    shown += [repr(result), result.summary(), result._repr_html_() or ""]
    failed = pipeflow.run(RsBroken(), abort=False, execution_summary=True)
    error = failed.by_state("failed")[0].error
    shown += [str(error), repr(error), failed.summary(), failed.by_state("failed")[0].traceback]
    with pytest.raises(PipeflowError) as info:
        RsBroken().outputLoad()
    shown += [str(info.value), pipeflow.history().to_string(), repr(pipeflow.runs())]
    shown += [str(pipeflow.last_error(RsBroken()) or "")]
    shown += [s3.read(k).decode("latin-1") for k in s3.records()]
    out = capsys.readouterr()
    shown += [out.out, out.err, caplog.text]
    for i, text in enumerate(shown):
        _no_secret(str(text), f"shown[{i}]")


# -- nothing local but the documented local state --------------------------------------------

def _local_files(root: pathlib.Path) -> set[pathlib.Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def _is_local_state(rel: pathlib.Path, root: pathlib.Path | None = None) -> bool:
    """Whether a new local file is the documented local state (history, locks).

    Undecided when written: where that state lives. Accepted: below ``$PIPEFLOW_STATE_DIR``
    (the test setup's state folder), or below any folder named ``.pipeflow`` or ``pipeflow``
    (``~/.local/state/pipeflow``, ``./.pipeflow``).
    """
    env = os.environ.get("PIPEFLOW_STATE_DIR")
    if env and root is not None:
        with contextlib.suppress(ValueError):
            (root / rel).resolve().relative_to(pathlib.Path(env).resolve())
            return True
    return any(part in (".pipeflow", "pipeflow") for part in rel.parts[:-1])


def test_nothing_is_written_locally_but_the_local_state(s3, tmp_path, monkeypatch):
    import tempfile

    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    before = _local_files(tmp_path)

    flow = pipeflow.Workflow(RsStats)
    flow.preview(print_it=False)
    flow.run(execution_summary=False)
    flow.outputLoadAll()
    pipeflow.run([RsSplit(), RsCSV(), RsReport(), RsPickle()], execution_summary=False)
    RsCSV().outputLoad()
    RsReport().outputLoad()
    flow.reset(RsScale, confirm=False)
    flow.run(execution_summary=False)
    assert len(pipeflow.history(family="RsScale")) == 2  # the history works, locally

    new = _local_files(tmp_path) - before
    assert sorted(str(p) for p in new if not _is_local_state(p, tmp_path)) == []
    assert [p for p in new if p.name.endswith(".commit.json")] == []  # records are on S3
    assert sorted(tmp.rglob("*")) == []  # staging leaves nothing in the temp folder
    _no_url_folders(tmp_path)
    assert s3.all() == {f"{s3.url.split('://')[1].split('/')[0]}/data/{k}" for k in s3.rel()}
    assert not any("history" in k for k in s3.rel())  # the run history is not on S3


# -- another machine: a fresh process ----------------------------------------------------------

FRESH_TASKS = textwrap.dedent("""
    import pandas as pd
    import pipeflow


    class FrLoad(pipeflow.tasks.TaskPqPandas):
        def run(self):
            self.save(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}))
            self.saveMeta({"rows": 4})


    @pipeflow.requires(FrLoad)
    class FrScale(pipeflow.tasks.TaskCSVPandas):
        factor = pipeflow.FloatParameter(default=10.0)

        def run(self):
            self.save(self.inputLoad() * self.factor)


    @pipeflow.requires(FrScale)
    class FrStats(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"mean": float(self.inputLoad()["x"].mean())})
""")

MACHINE_CHILD = textwrap.dedent("""
    import json, os, sys
    import pipeflow
    import rs_machine_tasks as mod

    pipeflow.settings.execution_summary = False
    # no storage_options: the usual botocore configuration (AWS_* environment) is enough
    pipeflow.set_dir(sys.argv[1])
    flow = pipeflow.Workflow(mod.FrStats, {"factor": 10.0})
    if sys.argv[2] == "run":
        flow.run()
        print(json.dumps({}))
    else:  # look, load, then reset FrScale
        out = {"counts": flow.preview(print_it=False).counts(), "complete": flow.complete(),
               "stats": flow.outputLoad(), "scale": flow.outputLoad(mod.FrScale)["x"].tolist(),
               "meta": flow.outputLoadMeta(mod.FrLoad), "path": str(flow.outputPath())}
        flow.reset(mod.FrScale, confirm=False)
        print(json.dumps(out))
""")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder on sys.path for the user's modules (shared with subprocesses)."""
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    names: list[str] = []

    def write(name: str, text: str):
        (root / f"{name}.py").write_text(text)
        import importlib

        importlib.invalidate_caches()
        if name in sys.modules:
            return importlib.reload(sys.modules[name])
        names.append(name)
        return importlib.import_module(name)

    write.root = root  # type: ignore[attr-defined]
    yield write
    for name in names:
        sys.modules.pop(name, None)


def _child_env(s3_server: Any, project_root: pathlib.Path, home: pathlib.Path) -> dict[str, str]:
    env = {**os.environ, **s3_server.env, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(project_root), *sys.path])}
    # another machine: its own default local state (below its HOME), not this process's
    for name in ("PIPEFLOW_STATE_DIR", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        env.pop(name, None)
    return env


# -- crash safety: the commit record is the last object written ------------------------------

CRASH_TASKS = textwrap.dedent("""
    import pandas as pd
    import pipeflow

    N = 20_000


    def frame(k):
        return pd.DataFrame({"i": range(N), "k": [k] * N, "f": [i / 7 for i in range(N)]})


    class CrashSplit(pipeflow.tasks.TaskPqPandas):
        persist = ["a", "b", "c"]

        def run(self):
            self.save({k: frame(k) for k in self.persist})
            self.saveMeta({"n": N})
""")

# The child blocks, at the moment its mode names, inside the S3 request that would write the
# object (a botocore 'before-send' hook on every session, so the request is never sent), and
# tells the parent, which SIGKILLs it there: a machine dying mid-save, at a chosen point.
CRASH_CHILD = textwrap.dedent("""
    import json, os, sys, time, urllib.parse
    import aiobotocore.session

    mode, marker, url, family, task_id = sys.argv[1:6]
    root = url.split("://", 1)[1].rstrip("/")          # bucket/prefix
    outputs = {f"/{root}/{family}/{task_id}-{k}.parquet" for k in "abc"}
    record = f"/{root}/.pipeflow/commits/{family}/.{task_id}.commit.json"
    written = []

    def hook(request, **kwargs):
        if request.method not in ("PUT", "POST"):
            return None
        path = urllib.parse.unquote(urllib.parse.urlsplit(request.url).path)
        if not path.startswith(f"/{root}/"):
            return None
        block = (mode == "first-write"
                 or (mode == "second-output" and path in outputs and written
                     and path != written[0])
                 or (mode == "record" and path == record))
        if path in outputs and path not in written:
            written.append(path)
        if block:
            with open(marker, "w") as f:
                f.write(json.dumps({"path": path, "written": written}))
            time.sleep(600)  # until killed
        return None

    init = aiobotocore.session.AioSession.__init__

    def hooked(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.register("before-send.s3", hook)

    aiobotocore.session.AioSession.__init__ = hooked

    import pipeflow
    import rs_crash_tasks as mod

    pipeflow.settings.execution_summary = False
    pipeflow.settings.storage_options = json.loads(os.environ["PF_SPEC_OPTIONS"])
    pipeflow.set_dir(url)
    pipeflow.run(mod.CrashSplit())
    print("finished without being stopped")
""")


@pytest.mark.parametrize("mode", ["second-output", "record"])
def test_a_save_killed_midway_leaves_the_task_incomplete_and_the_next_run_completes_it(
        s3, s3_server, project, tmp_path, mode):
    mod = project("rs_crash_tasks", CRASH_TASKS)
    task = mod.CrashSplit()
    marker = tmp_path / f"blocked-{mode}.json"
    child_home = tmp_path / "child"
    child_home.mkdir()
    env = _child_env(s3_server, project.root, child_home)
    env["PF_SPEC_OPTIONS"] = json.dumps(_options(s3_server.endpoint))
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, mode, str(marker), s3.url, task.task_family,
         task.task_id], cwd=child_home, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() or not marker.read_text():
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"the child ended ({proc.returncode}) before the "
                                     f"{mode} point:\n{out}\n{err}")
            assert time.monotonic() < deadline, "the child never reached the point"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    blocked = json.loads(marker.read_text())
    if mode == "record":  # every output was in place, only the record was missing
        assert {f"{task.task_family}/{task.task_id}-{k}.parquet" for k in "abc"} <= s3.rel()
        assert blocked["path"].endswith(".commit.json")

    assert not task.complete()
    status = _states(pipeflow.Workflow(mod.CrashSplit))["CrashSplit"][0]
    assert status == "PENDING"
    with pytest.raises(pipeflow.errors.IncompleteTaskError, match="not complete"):
        task.outputLoad()

    # if_locked="fail": whatever the killed process held (its OS lock, a lease object on
    # S3) does not count as held. On one machine a dead holder is known to be dead (host
    # and pid), so the next run neither fails nor waits for a lease to expire; locally "there
    # is never a stale lock to remove by hand" (docs/reliability.md)
    result = pipeflow.run(task, execution_summary=False, if_locked="fail", abort=False)
    assert [(r.state.value, r.error) for r in result.tasks.values()] == [("completed", None)]
    loaded = task.outputLoad(as_dict=True)
    for k in "abc":
        pd.testing.assert_frame_equal(loaded[k], mod.frame(k))
    assert task.outputLoadMeta() == {"n": mod.N}
    # no temp or orphan object anywhere in the bucket: exactly the task's own objects
    assert _without_locks(s3.rel()) == _own(task, ["a", "b", "c"], "parquet", meta=True)
    bucket = s3.url.split("://")[1].split("/")[0]
    assert {k for k in s3.all() if not k.startswith(f"{bucket}/data/")} == set()


# -- change detection on the store -------------------------------------------------------------

CHANGE_TASKS = textwrap.dedent("""
    import pathlib

    import pipeflow


    class Prepare(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(int(pathlib.Path("input.txt").read_text()) * 10)


    @pipeflow.requires(Prepare)
    class Train(pipeflow.tasks.TaskPickle):
        factor = pipeflow.IntParameter(default=2)

        def run(self):
            self.save(self.inputLoad() * self.factor)
""")


@pytest.fixture
def changes(s3, project, tmp_path):
    (tmp_path / "input.txt").write_text("1")  # cwd is tmp_path
    mod = project("rs_change_tasks", CHANGE_TASKS)
    flow = pipeflow.Workflow(mod.Train)
    flow.run(execution_summary=False)
    assert flow.outputLoad() == 20
    return mod, flow


def test_edited_code_makes_the_task_stale_and_a_run_reruns_it_and_downstream(changes, project):
    mod, flow = changes
    mod = project("rs_change_tasks", CHANGE_TASKS.replace("* 10)", "* 100)"))
    flow = pipeflow.Workflow(mod.Train)
    assert _states(flow) == {"Train": ("STALE", "upstream Prepare() is out of date"),
                             "Prepare": ("STALE", "code changed: Prepare.run")}
    result = flow.run(execution_summary=False)
    assert {r.task.task_family: r.state.value for r in result.tasks.values()} == {
        "Prepare": "completed", "Train": "completed"}
    assert result.tasks[mod.Prepare().task_id].reason == "stale: code changed: Prepare.run"
    assert flow.outputLoad() == 200
    assert _states(flow) == {"Train": ("COMPLETE", None), "Prepare": ("COMPLETE", None)}


def test_a_changed_parameter_default_with_params_left_out_of_file_names(s3, project, tmp_path):
    (tmp_path / "input.txt").write_text("1")
    settings.save_with_param = False
    mod = project("rs_change_tasks", CHANGE_TASKS)
    pipeflow.Workflow(mod.Train).run(execution_summary=False)
    mod = project("rs_change_tasks", CHANGE_TASKS.replace("default=2", "default=3"))
    flow = pipeflow.Workflow(mod.Train)
    assert _states(flow)["Train"] == ("STALE", "parameter factor changed: 2 -> 3")
    flow.run(execution_summary=False)
    assert flow.outputLoad() == 30
    assert {k for k in s3.outputs()} == {"Prepare/data.pkl", "Train/data.pkl"}


def test_a_changed_upstream_output_makes_downstream_stale_unless_it_is_the_same(changes,
                                                                               tmp_path):
    mod, flow = changes
    pipeflow.run(mod.Prepare(), forced_all=True, execution_summary=False)  # same bytes
    assert _states(flow)["Train"] == ("COMPLETE", None)
    (tmp_path / "input.txt").write_text("5")
    pipeflow.run(mod.Prepare(), forced_all=True, execution_summary=False)
    assert _states(flow) == {"Train": ("STALE", "upstream Prepare() changed"),
                             "Prepare": ("COMPLETE", None)}
    flow.run(execution_summary=False)
    assert flow.outputLoad() == 100


def test_an_object_replaced_outside_pipeflow_is_stale_and_never_loaded(changes, s3):
    mod, flow = changes
    prepare = mod.Prepare()
    rel = f"Prepare/{prepare.task_id}-data.pkl"
    name = rel.rsplit("/", 1)[1]
    s3.write(rel, pickle.dumps(999))  # another machine (or a person) replaced it
    status, reason = _states(flow)["Prepare"]
    assert status == "STALE"
    assert reason.startswith(f"output 'data': {name} was changed outside pipeflow")
    with pytest.raises(PipeflowError, match="changed outside pipeflow"):
        prepare.outputLoad()
    flow.run(execution_summary=False)
    assert prepare.outputLoad() == 10 and flow.outputLoad() == 20


def test_an_object_deleted_outside_pipeflow_makes_the_task_run_again(changes, s3, s3_server):
    mod, flow = changes
    bucket, prefix = s3.url.split("://")[1].split("/", 1)
    s3_server.client().delete_object(Bucket=bucket,
                                     Key=f"{prefix}/Prepare/{mod.Prepare().task_id}-data.pkl")
    assert not mod.Prepare().complete()
    assert _states(flow)["Prepare"][0] in ("STALE", "PENDING")
    with pytest.raises(PipeflowError):
        mod.Prepare().outputLoad()
    flow.run(execution_summary=False)
    assert flow.outputLoad() == 20 and mod.Prepare().complete()


# -- reset deletes exactly the task's own objects ----------------------------------------------

def _foreign(tid: str, object_store: bool) -> set[str]:
    """Objects a user (or another tool) put under the data dir; no reset may touch them."""
    keys = {
        "RsScale/notes.txt",
        f"RsScale/{tid}-data.parquet.bak",
        f"RsScale/{tid}-data.parquet~",
        f"RsScale/{tid}-other.parquet",
        f"RsScale/{tid}-meta.pickle.old",
        "RsScaleX/x.parquet",
        "RsScale.parquet",
        f".pipeflow/commits/RsScale/.{tid}.commit.json.bak",
        ".pipeflow/commits/RsScale/README",
        ".pipeflow/commits/RsScaleX/.x.commit.json",
        f"env=x/RsScale/{tid}-data.parquet",
        f"sub/RsScale/{tid}-data.parquet",
    }
    if object_store:  # a key that is also a "folder": only object stores allow both
        keys |= {f"RsScale/{tid}-data.parquet/child", "RsScale", f"RsScale/{tid}"}
    return keys


def test_reset_deletes_exactly_the_tasks_own_objects(store, s3_server):
    flow = pipeflow.Workflow(RsStats)
    flow.run(execution_summary=False)
    tid = RsScale().task_id
    foreign = _foreign(tid, object_store=store.url.startswith("s3://"))
    for k in sorted(foreign):
        store.write(k, b"not pipeflow's")
    outside: set[str] = set()
    if store.url.startswith("s3://"):  # beside the data dir, in the same bucket
        bucket = store.url.split("://")[1].split("/")[0]
        client = s3_server.client()
        for key in (f"data-old/RsScale/{tid}-data.parquet", f"{tid}-data.parquet",
                    f"RsScale/{tid}-data.parquet"):
            client.put_object(Bucket=bucket, Key=key, Body=b"x")
            outside.add(f"{bucket}/{key}")
        # a key that only names the data dir's folder through '..': S3 keys are plain text
        dotted = f"data/../RsScale/{tid}-data.parquet"
        client.put_object(Bucket=bucket, Key=dotted, Body=b"not pipeflow's")
        outside.add(f"{bucket}/{dotted}")
        foreign.add(dotted[len("data/"):])
    before = store.rel()
    everything = store.all()
    own = _flow_keys()

    flow.reset(RsScale, confirm=False)
    assert _without_locks(before - store.rel()) == own["RsScale"]
    assert foreign <= store.rel()
    root = store.url.split("://")[-1]
    assert store.all() >= outside
    assert store.all() == everything - {f"{root}/{o}" for o in own["RsScale"]} or \
        not store.url.startswith("s3://")

    flow.run(execution_summary=False)
    flow.run(forced=RsScale, execution_summary=False)
    flow.reset_upstream(RsStats, confirm=False)
    assert foreign <= store.rel()
    assert _without_locks(store.rel()) == _without_locks(foreign)
    assert store.all() >= outside
    for k in sorted(foreign):
        assert store.read(k) == b"not pipeflow's"


# -- hostile parameter values stay under the prefix ------------------------------------------

class RsEcho(pipeflow.tasks.TaskJson):
    value = pipeflow.Parameter()

    def run(self):
        self.save({"value": self.value})


HOSTILE = ["../../escape", "..%2F..%2Fescape", "%2e%2e%2f%2e%2e%2f", "a/b/../../../c",
           "/abs/path", "naïve ☃ 名前 🚀", "x" * 1000, "back\\slash\\..\\..", "?query=1#frag",
           "*[glob]?{a,b}", "s3://other-bucket/x", "  spaced  ", "semi;colon|pipe&amp",
           ".pipeflow", "..", "%00", "\u202eevil", "tab\tand\nnewline"]


def test_hostile_parameter_values_stay_under_the_prefix(store, s3_server, tmp_path):
    other = None
    if store.url.startswith("s3://"):
        other = s3_server.bucket(f"other-{uuid.uuid4().hex[:8]}").split("://")[1]
    values = [f"s3://{other}/x" if other else "memory://other/x", *HOSTILE]
    if other:  # S3 costs a few requests per value: the ones a URL or a key could misread
        values = [v for v in values if re.search(r"[%?#*\\ ./]|[^\x00-\x7f]", v)][:10]
    local_before = _local_files(tmp_path)
    accepted = []
    for value in values:
        try:
            task = RsEcho(value=value)
            pipeflow.run(task, execution_summary=False)
        except pipeflow.errors.ParameterError:
            continue  # refused as it is locally: fine
        accepted.append(task)
        assert task.outputLoad() == {"value": value}
        assert str(task.output().path).startswith(f"{store.url}/RsEcho/")
    assert len(accepted) >= len(values) - 3, "most of these values are fine locally"
    rel = store.rel()
    assert {k.split("/")[0] for k in rel} <= {"RsEcho", ".pipeflow"}
    assert {k.split("/")[:3] == [".pipeflow", "commits", "RsEcho"] for k in rel
            if k.startswith(".pipeflow/")} <= {True}
    if "://" in store.url:
        root = store.url.split("://")[1]
        assert {k for k in store.all() if not k.startswith(root + "/")} == set()
        assert {p for p in _local_files(tmp_path) - local_before
                if not _is_local_state(p, tmp_path)} == set()
    if other:
        assert s3_server.keys(other) == []
    for task in accepted:  # each reset removes exactly that task's objects
        before = store.rel()
        task.reset(confirm=False)
        assert _without_locks(before - store.rel()) == _own(task, ["data"], "json")
    assert _without_locks(store.rel()) == set()


def test_hostile_env_and_path_pieces_are_refused_on_the_store(store):
    for env in ("../prod", "a/b", "..", ".", "x\\..\\y"):
        with pytest.raises(pipeflow.errors.UnsafePathError, match="env="):
            pipeflow.Workflow(RsStats, env=env)
    assert store.rel() == set()


# -- a property: random outputs and parameter values round-trip on memory:// ------------------

PAYLOAD: dict[str, Any] = {}


class RsAny(pipeflow.tasks.TaskJson):
    value = pipeflow.Parameter()

    def run(self):
        self.save(PAYLOAD["data"])


def test_random_outputs_and_parameter_values_round_trip_and_reset_cleanly():
    import luigi
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    # an explicit alphabet: hypothesis' default one costs seconds to build in a fresh process
    alphabet = st.sampled_from(list("abcXYZ09 _-./\\%#?*[]{}:;=&+~'\"\t\néü☃名🚀\u202e\x00"))
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-2**53, 2**53) |
        st.floats(allow_nan=False, allow_infinity=False) | st.text(alphabet, max_size=20),
        lambda inner: st.lists(inner, max_size=4) |
        st.dictionaries(st.text(alphabet, max_size=8), inner, max_size=4),
        max_leaves=12)

    @hsettings(max_examples=6, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=json_values, value=st.text(alphabet, max_size=40))
    def check(data, value):
        luigi.task_register.Register.clear_instance_cache()
        PAYLOAD["data"] = data
        try:
            task = RsAny(value=value)
        except pipeflow.errors.ParameterError:
            return
        pipeflow.run(task, execution_summary=False)
        assert task.outputLoad() == data
        assert _without_locks(where.rel()) == _own(task, ["data"], "json")
        assert {k for k in where.all() if not k.startswith(url.split("://")[1] + "/")} == set()
        task.reset(confirm=False)
        assert _without_locks(where.rel()) == set()
        assert not task.complete()

    url = f"memory://pf-{uuid.uuid4().hex[:10]}/data"  # each example leaves it empty
    pipeflow.set_dir(url)
    where = _memory_store(url)
    check()


# -- cleaning up the data dir on the store -----------------------------------------------------

def test_invalidate_all_and_orphans_delete_committed_outputs_only(store):
    flows = pipeflow.WorkflowMulti(RsStats, {"small": {"factor": 1.0}, "big": {"factor": 3.0}})
    flows.run(execution_summary=False)
    mine = {"notes/readme.txt", "RsScale/my-own-file.csv", ".pipeflow/commits/RsScale/README"}
    for k in sorted(mine):
        store.write(k, b"mine")
    keep = pipeflow.Workflow(RsStats, {"factor": 1.0})
    pipeflow.invalidate_orphans(keep, confirm=False)
    big = _own(RsScale(factor=3.0), ["data"], "parquet") | _own(RsStats(factor=3.0), ["data"],
                                                                  "json")
    assert not (store.rel() & big)
    assert keep.complete() and not flows.complete(flow="big")
    assert mine <= store.rel()
    pipeflow.invalidate_all(confirm=False)
    assert _without_locks(store.rel()) - {k for k in store.rel() if k.endswith("README")} == {
        k for k in mine if not k.endswith("README")}
    assert not keep.complete(RsLoad)


# -- the command line --------------------------------------------------------------------------

def test_the_command_line_runs_previews_and_reports_errors_with_a_url_dir(
        s3, s3_server, project):
    from click.testing import CliRunner

    from pipeflow.cli import main

    project("rs_cli_tasks", FRESH_TASKS)
    _set_storage_options(None)  # the command line has only the environment's AWS settings
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        out = runner.invoke(main, list(args), prog_name="pipeflow")
        assert "Traceback" not in out.output, out.output
        assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
        _no_secret(out.output)
        return out

    out = invoke("run", "rs_cli_tasks:FrStats", "--dir", s3.url, "--no-summary")
    assert out.exit_code == 0, out.output
    assert {k.split("/")[0] for k in s3.outputs()} == {"FrLoad", "FrScale", "FrStats"}
    out = invoke("run", "rs_cli_tasks:FrStats", "--dir", s3.url, "--dry-run")
    assert out.exit_code == 0, out.output  # nothing would run
    missing = f"s3://pf-no-such-bucket-{uuid.uuid4().hex[:8]}/data"
    out = invoke("run", "rs_cli_tasks:FrStats", "--dir", missing, "--no-summary")
    assert out.exit_code != 0
    assert missing in out.output
    assert "Error" in out.output


# -- two runners at once, without luigid -------------------------------------------------------

RACE_TASKS = textwrap.dedent("""
    import os
    import time

    import pandas as pd
    import pipeflow


    def note(name):  # one line per run() call, appended atomically by every process
        fd = os.open(os.environ["PF_SPEC_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{name} {os.getpid()}\\n".encode())
        os.close(fd)


    class RaceLoad(pipeflow.tasks.TaskPqPandas):
        part = pipeflow.IntParameter()

        def run(self):
            note(f"RaceLoad{self.part}")
            time.sleep(0.2)  # both runners reach the same tasks at the same time
            self.save(pd.DataFrame({"part": [self.part] * 100, "x": range(100)}))


    class RaceJoin(pipeflow.tasks.TaskPqPandas):
        def requires(self):
            return [RaceLoad(part=i) for i in range(4)]

        def run(self):
            note("RaceJoin")
            self.save(pd.concat(self.inputLoad(), ignore_index=True))
""")

RACE_CHILD = textwrap.dedent("""
    import json, os, sys, time
    import pipeflow
    import rs_race_tasks as mod

    pipeflow.settings.storage_options = json.loads(os.environ["PF_SPEC_OPTIONS"])
    pipeflow.set_dir(sys.argv[1])
    while not os.path.exists(sys.argv[2]):  # start together
        time.sleep(0.01)
    result = pipeflow.run(mod.RaceJoin(), execution_summary=False)
    print(json.dumps(sorted(r.state.value for r in result.tasks.values())))
""")


def test_three_runners_at_once_leave_one_complete_correct_flow(s3, s3_server, project,
                                                              tmp_path):
    """Three runners of one flow at once without luigid, two on one machine (its OS locks)
    and one on another (S3's conditional writes): each task runs once, and the result is
    complete, correct, without orphans."""
    mod = project("rs_race_tasks", RACE_TASKS)
    runs, go = tmp_path / "runs.log", tmp_path / "go"
    procs = []
    for machine in (0, 0, 1):
        home = tmp_path / f"machine{machine}"
        home.mkdir(exist_ok=True)
        env = _child_env(s3_server, project.root, home)
        env["PF_SPEC_OPTIONS"] = json.dumps(_options(s3_server.endpoint))
        env["PF_SPEC_RUNS"] = str(runs)
        procs.append(subprocess.Popen([sys.executable, "-c", RACE_CHILD, s3.url, str(go)],
                                      cwd=home, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    go.write_text("go")
    outs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        outs.append(out)
    calls = [line.split()[0] for line in runs.read_text().splitlines()]
    # the issue: "use conditional writes where the store supports them"
    assert sorted(calls) == ["RaceJoin", "RaceLoad0", "RaceLoad1", "RaceLoad2",
                             "RaceLoad3"], calls
    join = mod.RaceJoin()
    assert join.complete()
    frame = join.outputLoad()
    assert sorted(frame["part"].unique().tolist()) == [0, 1, 2, 3] and len(frame) == 400
    expected = _own(join, ["data"], "parquet")
    for i in range(4):
        expected |= _own(mod.RaceLoad(part=i), ["data"], "parquet")
    assert _without_locks(s3.rel()) == expected  # no temp or orphan object


# -- the commit protocol, seen from the wire -------------------------------------------------

@pytest.fixture
def s3_writes(s3, monkeypatch):
    """Every PUT/POST/DELETE this process sends to S3 from now on: (method, key).

    Seen where aiobotocore sends each HTTP request, so file systems and clients made before
    (and cached) are watched too.
    """
    from aiobotocore.httpsession import AIOHTTPSession

    seen: list[tuple[str, str]] = []
    bucket = s3.url.split("://")[1].split("/")[0]
    send = AIOHTTPSession.send

    async def watched(self: Any, request: Any) -> Any:
        if request.method in ("PUT", "POST", "DELETE"):
            path = urllib.parse.unquote(urllib.parse.urlsplit(request.url).path)
            if path.startswith(f"/{bucket}/"):
                seen.append((request.method, path[len(bucket) + 2:]))
        return await send(self, request)

    monkeypatch.setattr(AIOHTTPSession, "send", watched)
    return seen


def test_the_commit_record_is_the_last_object_written_in_one_put(s3, s3_writes):
    task = RsSplit()
    pipeflow.run(task, execution_summary=False)
    record = f"data/.pipeflow/commits/RsSplit/.{task.task_id}.commit.json"
    outputs = {f"data/RsSplit/{task.task_id}-{k}.parquet" for k in ("train", "test")}
    writes = [(m, k) for m, k in s3_writes if m in ("PUT", "POST")]
    to_record = [w for w in writes if w[1] == record]
    assert to_record == [("PUT", record)], writes  # one single PUT
    last_output = max(i for i, (_, k) in enumerate(writes) if k in outputs)
    assert writes.index(("PUT", record)) > last_output, writes
    # after the record, nothing of the task's own is written
    assert not [w for w in writes[writes.index(("PUT", record)) + 1:]
                if w[1].startswith("data/RsSplit/")], writes

    # a reset withdraws the record first: a crash in the middle never leaves a record
    # naming objects that are gone
    s3_writes.clear()
    task.reset(confirm=False)
    deletes = [k for m, k in s3_writes if m in ("DELETE", "POST")]
    assert deletes, s3_writes
    if any(k == record for k in deletes):
        assert deletes.index(record) == 0 or all(
            k not in outputs for k in deletes[:deletes.index(record)]), s3_writes


def test_a_bucket_gone_mid_run_fails_the_task_with_a_pipeflow_error(s3, s3_server):
    bucket = s3.url.split("://")[1].split("/")[0]

    class RsLosesBucket(pipeflow.tasks.TaskJson):
        def run(self):
            client = s3_server.client()
            for key in s3_server.keys(bucket):
                client.delete_object(Bucket=bucket, Key=key)
            client.delete_bucket(Bucket=bucket)
            self.save({"rows": 3})

    result = pipeflow.run(RsLosesBucket(), abort=False, execution_summary=False)
    failed = result.by_state("failed")
    assert [r.task.task_family for r in failed] == ["RsLosesBucket"]
    error = failed[0].error
    assert isinstance(error, PipeflowError), f"{type(error).__module__}.{type(error).__name__}"
    assert f"s3://{bucket}/data" in str(error)
    _no_secret(str(error))
    _no_secret(failed[0].traceback or "")
    s3_server.bucket(bucket)  # back, empty: the task is not complete
    assert not RsLosesBucket().complete()


# -- another machine's writes are seen at once -------------------------------------------------

def test_other_machines_commits_and_resets_are_seen_at_once_and_a_fresh_one_loads(
        s3, s3_server, project, tmp_path):
    """Machine A runs the flow, B (a fresh process, env-only AWS config) previews, loads and
    resets a task; this process, which looked before, sees each change without restarting
    (no stale listing cache)."""
    mod = project("rs_machine_tasks", FRESH_TASKS)
    flow = pipeflow.Workflow(mod.FrStats, {"factor": 10.0})
    assert flow.preview(print_it=False).counts()["PENDING"] == 3
    assert not flow.complete()

    def on_machine(name: str, what: str) -> dict[str, Any]:
        home = tmp_path / name  # another machine: an empty folder, its own HOME and state
        home.mkdir()
        env = _child_env(s3_server, project.root, home)
        proc = subprocess.run([sys.executable, "-c", MACHINE_CHILD, s3.url, what], cwd=home,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        _no_secret(proc.stdout + proc.stderr)
        assert sorted(str(p) for p in _local_files(home) if not _is_local_state(p)) == []
        _no_url_folders(home)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    on_machine("machine-a", "run")
    assert flow.preview(print_it=False).counts() == {"COMPLETE": 3, "PENDING": 0, "STALE": 0}
    assert flow.outputLoad() == {"mean": 25.0}

    out = on_machine("machine-b", "load-reset")
    assert out["counts"] == {"COMPLETE": 3, "PENDING": 0, "STALE": 0}
    assert out["complete"] is True
    assert out["stats"] == {"mean": 25.0}
    assert out["scale"] == [10.0, 20.0, 30.0, 40.0]
    assert out["meta"] == {"rows": 4}
    assert out["path"] == f"{s3.url}/FrStats/{mod.FrStats().task_id}-data.json"

    assert _states(flow) == {"FrStats": ("PENDING", None), "FrScale": ("PENDING", None),
                             "FrLoad": ("COMPLETE", None)}
    with pytest.raises(pipeflow.errors.IncompleteTaskError):
        flow.outputLoad()
    result = flow.run(execution_summary=False)
    assert sorted(r.state.value for r in result.tasks.values()) == [
        "completed", "completed", "up_to_date"]
    assert flow.outputLoad() == {"mean": 25.0}


# -- locations given by task classes and instances; names that need escaping in URLs ----------

def test_a_task_class_or_instance_path_may_be_a_url(s3, s3_server):
    archive = s3.url.rsplit("/", 1)[0] + "/archive"

    class RsArchived(pipeflow.tasks.TaskJson):
        path = archive

        def run(self):
            self.save({"kept": True})

    pipeflow.run(RsArchived(), execution_summary=False)
    where = _s3_store(s3_server, archive)
    assert _without_locks(where.rel()) == _own(RsArchived(), ["data"], "json")
    assert RsArchived().outputLoad() == {"kept": True}
    backup = s3.url.rsplit("/", 1)[0] + "/backup"
    task = RsLoad(path=backup)
    assert str(task.output().path) == f"{backup}/RsLoad/{task.task_id}-data.parquet"
    pipeflow.run(task, execution_summary=False)
    assert _without_locks(_s3_store(s3_server, backup).rel()) == _own(
        task, ["data"], "parquet", meta=True)
    assert task.complete() and not RsLoad().complete()
    assert s3.rel() == set()  # nothing in the data dir


class RsOddNames(pipeflow.tasks.TaskJson):
    task_group = "ingest ü"
    target_dir = "modèles/v1 #2"
    persist = ["a b", "ü", "100%"]
    label = pipeflow.Parameter(default="q?x=1&y=2")

    def run(self):
        self.save({"a b": 1, "ü": 2, "100%": 3})


def test_folder_and_output_names_that_need_escaping_in_a_url(store):
    task = RsOddNames()
    pipeflow.run(task, execution_summary=False)
    folder = "ingest ü/modèles/v1 #2"
    outputs = {f"{folder}/{task.task_id}-{k}.json" for k in task.persist}
    assert store.outputs() == outputs
    assert len(store.records()) == 1
    assert task.outputLoad(as_dict=True) == {"a b": 1, "ü": 2, "100%": 3}
    assert {k: str(t.path) for k, t in task.output().items()} == {
        k: f"{store.url}/{folder}/{task.task_id}-{k}.json" for k in task.persist}
    task.reset(confirm=False)
    assert store.outputs() == set() and store.records() == set()


# -- the endpoint goes away after set_dir ------------------------------------------------------

@pytest.mark.timeout(120)
def test_an_endpoint_that_went_away_gives_pipeflow_errors_not_raw_ones(tmp_path):
    from servers import s3 as s3_endpoint

    with s3_endpoint(tmp_path / "moto-brief") as brief:
        url = brief.bucket("gone-soon") + "/data"
        options = _options(brief.endpoint)
        options["config_kwargs"] = {"connect_timeout": 2, "retries": {"max_attempts": 1}}
        _set_storage_options(options)
        try:
            pipeflow.set_dir(url)
            flow = pipeflow.Workflow(RsStats)
            flow.run(execution_summary=False)
        except BaseException:
            _set_storage_options(None)
            raise
    try:  # the server is stopped: its port is closed now
        calls: dict[str, Callable[[], Any]] = {
            "preview": lambda: flow.preview(print_it=False),
            "outputLoad": flow.outputLoad,
            "reset": lambda: flow.reset(RsStats, confirm=False),
        }
        for name, call in calls.items():
            with pytest.raises(PipeflowError) as info:
                call()
            _check_user_error(info.value, url)
            assert brief.endpoint.split("//")[1] in str(info.value), name
    finally:
        _set_storage_options(None)


@pytest.mark.timeout(120)
def test_changed_storage_options_take_effect_at_once(s3, s3_server):
    from servers import free_port

    flow = pipeflow.Workflow(RsStats)
    flow.run(execution_summary=False)
    good = _options(s3_server.endpoint)
    bad = _options(f"http://127.0.0.1:{free_port()}")
    bad["config_kwargs"] = {"connect_timeout": 1, "retries": {"max_attempts": 1}}
    _set_storage_options(bad)
    with pytest.raises(PipeflowError) as info:
        flow.outputLoad()
    _check_user_error(info.value, s3.url)
    _set_storage_options(good)
    assert flow.complete()
    assert flow.outputLoad() == {"mean": 25.0}


def test_credentials_put_in_the_environment_after_a_failure_are_used(s3_server, s3_bucket,
                                                                     monkeypatch, tmp_path):
    """A notebook user who forgot the AWS variables sets them and tries again."""
    saved = {k: os.environ[k] for k in s3_server.env}
    for k in saved:
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    url = f"{s3_bucket}/data"
    with pytest.raises(PipeflowError, match=re.escape(url)):
        pipeflow.set_dir(url)
        pipeflow.run(RsStats(), execution_summary=False)
    for k, v in saved.items():
        monkeypatch.setenv(k, v)
    pipeflow.set_dir(url)
    pipeflow.run(RsStats(), execution_summary=False)
    assert RsStats().outputLoad() == {"mean": 25.0}


@pytest.mark.parametrize("envs", [("dev#1", "dev#2"), ("q?a", "q?b")])
def test_envs_differing_after_a_hash_or_question_mark_never_share_objects(store, envs):
    """'#' and '?' are plain characters of a folder name, not a URL's fragment or query."""
    one, two = (pipeflow.Workflow(RsLoad, env=e) for e in envs)
    one.run(execution_summary=False)
    assert one.complete() and not two.complete()
    two.run(execution_summary=False)
    assert {k.split("/")[0] for k in store.outputs()} == {f"env={e}" for e in envs}
    one.reset(RsLoad, confirm=False)
    assert two.complete() and not one.complete()
    assert {k.split("/")[0] for k in store.outputs()} == {f"env={envs[1]}"}


def test_glob_characters_in_folder_names_match_nothing_else(store):
    class RsGlob(pipeflow.tasks.TaskJson):
        task_group = "[ab]*"

        def run(self):
            self.save({"n": 1})

    task = RsGlob()
    pipeflow.run(task, execution_summary=False)
    lookalikes = {f"{g}/RsGlob/{task.task_id}-data.json" for g in ("a", "b", "ax", "[ab]x")}
    for k in sorted(lookalikes):
        store.write(k, b"mine")
    assert task.outputLoad() == {"n": 1}
    task.reset(confirm=False)
    assert store.outputs() == lookalikes
    assert not task.complete()


# -- damaged or edited commit records on the store ---------------------------------------------

def test_a_damaged_record_makes_the_task_pending_and_a_run_replaces_it(store):
    flow = pipeflow.Workflow(RsStats)
    flow.run(execution_summary=False)
    record = f".pipeflow/commits/RsScale/.{RsScale().task_id}.commit.json"
    store.write(record, b"{not json")
    status, reason = _states(flow)["RsScale"]
    assert status == "PENDING" and reason
    with pytest.raises(pipeflow.errors.IncompleteTaskError):
        flow.outputLoad(RsScale)
    RAN.clear()
    flow.run(execution_summary=False)
    assert RAN == ["RsScale", "RsStats"]
    assert json.loads(store.read(record))["v"] == 1
    assert flow.outputLoad() == {"mean": 25.0}


def test_an_edited_record_never_widens_what_a_reset_deletes(store):
    flow = pipeflow.Workflow(RsStats)
    flow.run(execution_summary=False)
    tid = RsScale().task_id
    record = f".pipeflow/commits/RsScale/.{tid}.commit.json"
    doc = json.loads(store.read(record))
    foreign = {"RsScale/notes.txt": b"mine", f"RsLoad/{RsLoad().task_id}-data.parquet": None}
    store.write("RsScale/notes.txt", b"mine")
    entry = doc["files"]["data"][0]
    doc["files"]["extra"] = [["notes.txt", 4, *entry[2:]]]
    doc["files"]["up"] = [[f"../RsLoad/{RsLoad().task_id}-data.parquet", *entry[1:]]]
    store.write(record, json.dumps(doc).encode())
    assert _states(flow)["RsScale"][0] == "PENDING"
    flow.reset(RsScale, confirm=False)
    assert set(foreign) <= store.rel()
    assert store.read("RsScale/notes.txt") == b"mine"
    assert flow.complete(RsLoad)


class RsWithToken(pipeflow.tasks.TaskJson):
    table = pipeflow.Parameter(default="sales")
    token = pipeflow.SecretParameter()

    def run(self):
        self.save({"table": self.table, "authorized": bool(self.token)})


def test_secret_parameters_stay_out_of_keys_records_and_messages(store):
    secret = "tok-" + uuid.uuid4().hex
    task = RsWithToken(token=secret)
    result = pipeflow.run(task, execution_summary=False)
    assert task.outputLoad() == {"table": "sales", "authorized": True}
    shown = [*store.rel(), repr(result), result.summary(), str(task.output().path),
             *(store.read(k).decode("utf-8", "replace") for k in store.records())]
    assert not [s for s in shown if secret in s]


# -- a task running on another machine ---------------------------------------------------------

SLOW_TASKS = textwrap.dedent("""
    import os
    import pathlib
    import time

    import pipeflow


    class SlowTask(pipeflow.tasks.TaskJson):
        def run(self):
            folder = pathlib.Path(os.environ["PF_SPEC_SIGNALS"])
            (folder / "started").write_text(str(os.getpid()))
            deadline = time.monotonic() + 90
            while not (folder / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.save({"by": "the other machine"})
""")

SLOW_CHILD = textwrap.dedent("""
    import json, os, sys
    import pipeflow
    import rs_slow_tasks as mod

    pipeflow.settings.storage_options = json.loads(os.environ["PF_SPEC_OPTIONS"])
    pipeflow.set_dir(sys.argv[1])
    pipeflow.run(mod.SlowTask(), execution_summary=False)
""")


def test_a_task_running_on_another_machine_is_locked_here(s3, s3_server, project, tmp_path):
    mod = project("rs_slow_tasks", SLOW_TASKS)
    signals, other = tmp_path / "signals", tmp_path / "machine-b"
    signals.mkdir()
    other.mkdir()
    env = _child_env(s3_server, project.root, other)
    env["PF_SPEC_OPTIONS"] = json.dumps(_options(s3_server.endpoint))
    env["PF_SPEC_SIGNALS"] = str(signals)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, s3.url], cwd=other, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (signals / "started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the other machine never started the task"
            time.sleep(0.05)
        task = mod.SlowTask()
        with pytest.raises(pipeflow.errors.TaskLockedError, match=r"SlowTask\(\)"):
            task.reset(confirm=False)
        result = pipeflow.run(task, if_locked="fail", abort=False, execution_summary=False)
        [failed] = result.by_state("failed")
        assert isinstance(failed.error, pipeflow.errors.TaskLockedError)

        waited: list[Any] = []

        def release_when_waiting(event: Any) -> None:
            if getattr(getattr(event, "kind", None), "value", None) == "task_waiting":
                waited.append(event)
                (signals / "release").write_text("go")

        result = pipeflow.run(task, execution_summary=False, callbacks=[release_when_waiting])
        assert waited, "this run did not report that it waited for the other machine"
        [done] = result.tasks.values()
        assert done.state.value == "up_to_date"
        assert done.reason == "completed by another process while this run waited"
        assert task.outputLoad() == {"by": "the other machine"}
    finally:
        (signals / "release").write_text("go")
        try:
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0


def test_switching_the_data_dir_between_s3_and_a_local_folder(s3, data_dir):
    task = RsLoad()
    pipeflow.run(task, execution_summary=False)
    assert task.complete()
    pipeflow.set_dir(data_dir)  # back to the local folder: nothing there yet
    assert str(task.output().path) == str(pathlib.Path(data_dir) / "RsLoad" /
                                          f"{task.task_id}-data.parquet")
    assert not task.complete()
    RAN.clear()
    pipeflow.run(task, execution_summary=False)
    assert RAN == ["RsLoad"] and task.complete()
    task.reset(confirm=False)
    pipeflow.set_dir(s3.url)  # the S3 outputs are still there, untouched
    assert task.complete()
    assert task.outputLoad()["x"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert _without_locks(s3.rel()) == _own(task, ["data"], "parquet", meta=True)


# -- parallel workers, external inputs, groups -------------------------------------------------

class RsPart(pipeflow.tasks.TaskPqPandas):
    part = pipeflow.IntParameter()

    def run(self):
        self.save(pd.DataFrame({"part": [self.part] * 10}))


class RsParts(pipeflow.tasks.TaskJson):
    def requires(self):
        return [RsPart(part=i) for i in range(4)]

    def run(self):
        self.save({"rows": int(sum(len(df) for df in self.inputLoad()))})


@pytest.mark.timeout(180)
@pytest.mark.parametrize("executor", ["process"])  # threads share one client: no risk
def test_parallel_workers_save_and_load_on_the_store(s3, executor):
    """Forked worker processes inherit this process's S3 client (and its event loop thread):
    they must still work, not hang."""
    pipeflow.run(RsLoad(), execution_summary=False)  # this process has used S3 before forking
    result = pipeflow.run(RsParts(), workers=2, executor=executor, execution_summary=False)
    assert sorted(r.state.value for r in result.tasks.values()) == ["completed"] * 5
    assert RsParts().outputLoad() == {"rows": 40}
    assert {k for k in s3.outputs() if k.startswith("RsPart/")} == {
        f"RsPart/{RsPart(part=i).task_id}-data.parquet" for i in range(4)}


class RsVendorFile(pipeflow.tasks.TaskPqPandas):
    external = True


@pipeflow.requires(RsVendorFile)
class RsUsesVendor(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"rows": len(self.inputLoad())})


def test_an_external_task_reads_an_object_someone_else_put_there(store):
    rel = f"RsVendorFile/{RsVendorFile().task_id}-data.parquet"
    with pytest.raises(pipeflow.errors.MissingInputError, match=re.escape(f"{store.url}/{rel}")):
        pipeflow.run(RsUsesVendor(), execution_summary=False)
    buf = io.BytesIO()
    pd.DataFrame({"x": range(7)}).to_parquet(buf)
    store.write(rel, buf.getvalue())
    pipeflow.run(RsUsesVendor(), execution_summary=False)
    assert RsUsesVendor().outputLoad() == {"rows": 7}
    pipeflow.Workflow(RsUsesVendor).reset_upstream(RsUsesVendor, confirm=False)
    assert rel in store.rel()  # external outputs are never deleted


class RsGroup(pipeflow.tasks.TaskAggregator):
    def run(self):
        yield RsLoad()
        yield RsSplit()


def test_a_group_of_tasks_on_the_store(store):
    pipeflow.run(RsGroup(), execution_summary=False)
    assert RsGroup().complete() and RsLoad().complete() and RsSplit().complete()
    RsSplit().reset(confirm=False)
    assert not RsGroup().complete()


# -- what counts as a change of an object ------------------------------------------------------

class RsSmall(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"v": 1})


def test_same_size_other_bytes_right_after_the_commit_is_a_change(s3, s3_server):
    """Object stores' modification times have a resolution of a second: a same-size edit
    within the second of the commit must still be seen (by the object's ETag or content)."""
    task = RsSmall()
    bucket, prefix = s3.url.split("://")[1].split("/", 1)
    key = f"{prefix}/RsSmall/{task.task_id}-data.json"
    client = s3_server.client()
    for _ in range(5):  # until the edit lands within the commit's second (the case tested)
        pipeflow.run(task, forced_all=True, execution_summary=False)
        committed = client.head_object(Bucket=bucket, Key=key)["LastModified"]
        before = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        after = before.replace(b"1", b"2")
        assert len(after) == len(before) and after != before
        client.put_object(Bucket=bucket, Key=key, Body=after)
        if client.head_object(Bucket=bucket, Key=key)["LastModified"] == committed:
            break
    status, reason = _states(pipeflow.Workflow(RsSmall))["RsSmall"]
    assert status == "STALE" and "changed outside pipeflow" in reason
    assert not task.complete()


def test_an_object_copied_onto_itself_is_not_a_change(s3, s3_server):
    """The object-store 'touch': same bytes, new modification time."""
    task = RsSmall()
    pipeflow.run(task, execution_summary=False)
    bucket, prefix = s3.url.split("://")[1].split("/", 1)
    key = f"{prefix}/RsSmall/{task.task_id}-data.json"
    time.sleep(1.1)  # a later modification time (whole seconds), not a speed assertion
    s3_server.client().copy_object(Bucket=bucket, Key=key, MetadataDirective="REPLACE",
                                   CopySource={"Bucket": bucket, "Key": key},
                                   Metadata={"touched": "yes"})
    assert _states(pipeflow.Workflow(RsSmall))["RsSmall"] == ("COMPLETE", None)
    assert task.outputLoad() == {"v": 1}


@pytest.mark.parametrize("spelling", ["{bucket}//data", "{bucket}/./data/"])
def test_spellings_of_one_location_name_the_same_objects(s3, spelling):
    """As 'data//x' and 'data/x' are one local folder: another spelling of the data dir
    reaches the same outputs, or is refused at once (never a second, parallel location)."""
    pipeflow.run(RsLoad(), execution_summary=False)
    bucket = s3.url.rsplit("/", 1)[0]
    other = spelling.format(bucket=bucket)
    try:
        pipeflow.set_dir(other)
    except pipeflow.errors.ParameterError as exc:
        assert other in str(exc)
        return
    assert RsLoad().complete()
    assert str(RsLoad().output().path) == f"{s3.url}/RsLoad/{RsLoad().task_id}-data.parquet"


def test_a_key_longer_than_the_store_allows_is_a_pipeflow_error_naming_it(s3):
    """S3 keys hold at most 1024 bytes (local paths 4096): a deep target_dir that fits
    locally but not on S3 fails with a pipeflow error naming the task, nothing published."""

    class RsDeep(pipeflow.tasks.TaskJson):
        target_dir = "/".join(["d" * 200] * 5)

        def run(self):
            RAN.append("RsDeep")
            self.save({"n": 1})

    result = pipeflow.run(RsDeep(), abort=False, execution_summary=False)
    errors = [r.error for r in result.tasks.values() if r.error is not None]
    assert len(errors) == 1
    assert isinstance(errors[0], PipeflowError), type(errors[0])
    assert "RsDeep()" in str(errors[0]) and "1024" in str(errors[0])
    assert s3.outputs() == set() and s3.records() == set()
    assert not RsDeep().complete()


def test_system_info_works_with_a_remote_data_dir(s3, tmp_path):
    info = pipeflow.system_info()
    _no_secret(repr(info))
    pipeflow.run(pipeflow.SystemInfo(), execution_summary=False)
    assert pipeflow.SystemInfo().complete()
    _no_url_folders(tmp_path)
    local = [p for p in _local_files(tmp_path) if not _is_local_state(p, tmp_path)]
    assert [p for p in local if p.parts[0] != "data"] == []  # nothing in the working dir
    for path in _local_files(tmp_path):  # no credential in any local file name
        _no_secret(str(path), "a local file name")


def test_a_load_always_checks_the_content_so_an_edited_object_is_never_loaded(store):
    task = RsSmall()
    pipeflow.run(task, execution_summary=False)
    rel = f"RsSmall/{task.task_id}-data.json"
    store.write(rel, store.read(rel).replace(b"1", b"2"))  # same size, other bytes
    with pytest.raises(PipeflowError, match="changed outside pipeflow"):
        task.outputLoad()
    with pytest.raises(PipeflowError, match="changed outside pipeflow"):
        task.output().load()
    # that load recorded the mismatch: from now on the task is not complete, anywhere
    assert not task.complete()
    pipeflow.run(task, execution_summary=False)
    assert task.outputLoad() == {"v": 1}


# -- a runner frozen past its lease ------------------------------------------------------------

FROZEN_TASKS = textwrap.dedent("""
    import os
    import pathlib
    import time

    import pipeflow


    class Frozen(pipeflow.tasks.TaskJson):
        def run(self):
            role = os.environ.get("PF_SPEC_ROLE", "B")
            if role == "A":
                signals = pathlib.Path(os.environ["PF_SPEC_SIGNALS"])
                (signals / "started").write_text("A")
                deadline = time.monotonic() + 90
                while not (signals / "release").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            self.save({"by": role})
""")

FROZEN_CHILD = textwrap.dedent("""
    import json, os, sys
    import pipeflow
    import rs_frozen_tasks as mod

    pipeflow.settings.storage_options = json.loads(os.environ["PF_SPEC_OPTIONS"])
    pipeflow.settings.remote_lease = float(sys.argv[2])
    pipeflow.set_dir(sys.argv[1])
    result = pipeflow.run(mod.Frozen(), abort=False, execution_summary=False)
    print(json.dumps([[r.state.value, type(r.error).__name__ if r.error else None]
                      for r in result.tasks.values()]))
""")


@pytest.mark.timeout(180)
def test_a_runner_frozen_past_its_lease_does_not_publish_over_the_new_holder(
        s3, s3_server, project, tmp_path, monkeypatch):
    """Machine A freezes (SIGSTOP: a laptop lid closed) inside run(); its lease expires; B
    takes the task over and commits. When A wakes it has lost the task: it must not publish
    over B's commit (its attempt fails), and what is left is B's complete, consistent output.
    ``settings.remote_lease`` is the implementer's name for the lease's lifetime."""
    lease = 1.5
    mod = project("rs_frozen_tasks", FROZEN_TASKS)
    monkeypatch.setattr(settings, "remote_lease", lease)
    signals, home = tmp_path / "signals", tmp_path / "machine-a"
    signals.mkdir()
    home.mkdir()
    env = _child_env(s3_server, project.root, home)
    env.update(PF_SPEC_OPTIONS=json.dumps(_options(s3_server.endpoint)), PF_SPEC_ROLE="A",
               PF_SPEC_SIGNALS=str(signals))
    a = subprocess.Popen([sys.executable, "-c", FROZEN_CHILD, s3.url, str(lease)], cwd=home,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    task = mod.Frozen()
    try:
        deadline = time.monotonic() + 120
        while not (signals / "started").exists():
            assert a.poll() is None, a.communicate()
            assert time.monotonic() < deadline, "machine A never started the task"
            time.sleep(0.05)
        os.kill(a.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 60
        while True:  # B: until A's lease has expired and B could take the task
            result = pipeflow.run(task, if_locked="fail", abort=False, execution_summary=False)
            [done] = result.tasks.values()
            if done.state.value == "completed":
                break
            assert isinstance(done.error, pipeflow.errors.TaskLockedError), done.error
            assert time.monotonic() < deadline, "B never got the task after A's lease expired"
            time.sleep(0.3)
        assert task.outputLoad() == {"by": "B"}
    finally:
        (signals / "release").write_text("go")
        with contextlib.suppress(ProcessLookupError):
            os.kill(a.pid, signal.SIGCONT)
        try:
            out, err = a.communicate(timeout=90)
        finally:
            if a.poll() is None:
                a.kill()
                out, err = a.communicate()
    assert a.returncode == 0, err
    # what is left is complete and consistent, and it is B's
    luigi_clear()
    assert task.complete()
    assert task.outputLoad() == {"by": "B"}
    assert _without_locks(s3.rel()) == _own(task, ["data"], "json")  # no lease left behind
    [[state, error]] = json.loads(out.strip().splitlines()[-1])
    assert state == "failed" and error is not None  # A learnt that it lost the task


def luigi_clear() -> None:
    import luigi

    luigi.task_register.Register.clear_instance_cache()
