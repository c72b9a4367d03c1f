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
import pathlib
import pickle
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

import pipeflow
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
        """Objects below the data dir that are not pipeflow's own (``.pipeflow/``)."""
        return {k for k in self.rel() if not k.startswith(".pipeflow/")}

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
