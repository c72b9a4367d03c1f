"""Hostile names and places, second round (issue 11, kinds 1, 5 and 9).

Every name pipeflow builds a file or folder name from (``target_ext``, ``target_dir``,
``task_group``, ``persist``, the task family) is checked by one function before anything is
written; the run history is never opened through a symlink; a task family is a (dotted)
identifier, and ``FlowExport`` never writes a name or value into code but as a literal or a
checked identifier; a URL is refused however it is spelt; a file where a folder must be is a
clear error; ``set_dir`` with a bad folder keeps the previous setting.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sqlite3
import warnings

import luigi
import pytest
from test_hostile_paths import files_below

import pipeflow
from pipeflow import layout, runstore, settings
from pipeflow.errors import (
    HistoryError,
    MetadataError,
    ParameterError,
    PipeflowError,
    SaveError,
    TaskFailedError,
    UnsafePathError,
)


class Plain2(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"a": 1})


def cause(exc: BaseException) -> BaseException:
    """The task's own error behind a TaskFailedError."""
    return exc.__cause__ if isinstance(exc, TaskFailedError) and exc.__cause__ else exc


def assert_names(exc: BaseException, *words: str) -> None:
    text = str(exc)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"


# -- 1. target_ext (and every other name part) --------------------------------------------------

@pytest.mark.parametrize("ext", ["json/../../../victim", "json/../../victim", "a/b", "a\\b",
                                 "a\x00b", "x" * 300])
def test_a_target_ext_that_is_not_a_plain_name_is_refused_before_anything_is_written(
        tmp_path, ext):
    class BadExt(pipeflow.tasks.TaskJson):
        target_ext = ext

        def run(self):
            self.save({"a": 1})

    victim = tmp_path / "victim"
    victim.write_text("keep")
    with pytest.raises(UnsafePathError) as info:
        pipeflow.run(BadExt())
    assert_names(info.value, "BadExt", "target_ext")
    assert victim.read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["data", "victim"]
    assert not any("BadExt" in p for p in files_below(tmp_path / "data"))


class ExtFromParam(pipeflow.tasks.TaskJson):
    fmt = pipeflow.Parameter(default="json")

    @property
    def target_ext(self):
        return self.fmt

    def run(self):
        self.save({"a": 1})


def test_a_target_ext_property_returning_a_parameter_value_is_checked_per_task(tmp_path):
    victim = tmp_path / "victim2"
    victim.write_text("keep")
    with pytest.raises(UnsafePathError) as info:
        pipeflow.run(ExtFromParam(fmt="json/../../../victim2"))
    assert_names(info.value, "ExtFromParam", "target_ext", "json/../../../victim2")
    assert victim.read_text() == "keep"
    assert not (tmp_path / "data" / "ExtFromParam").exists()
    # a plain value is fine, and still the same class
    assert pipeflow.run(ExtFromParam(fmt="txt"))
    assert ExtFromParam(fmt="txt").output().path.name.endswith("-data.txt")
    with pytest.raises(UnsafePathError):
        ExtFromParam(fmt="..").output()  # '.' names only: '{stem}...' is fine, '..' is not


def test_a_target_ext_set_on_an_instance_is_checked():
    task = Plain2()
    task.target_ext = "json/../../x"
    try:
        with pytest.raises(UnsafePathError, match="target_ext"):
            task.output()
    finally:
        del task.target_ext


def test_usual_extensions_still_work(data_dir):
    class Gz2(pipeflow.tasks.TaskJson):
        target_ext = "json.gz.v2"

        def run(self):
            self.save({"a": 1})

    assert pipeflow.run(Gz2())
    assert Gz2().output().path.name.endswith("-data.json.gz.v2")


@pytest.mark.parametrize("persist", [["a/b"], [".."], ["x\x00"], ["a\\b"], ["x" * 300]])
def test_persist_names_go_through_the_same_check(persist):
    class BadPersist(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({k: 1 for k in self.persist})

    BadPersist.persist = persist
    with pytest.raises(PipeflowError) as info:
        pipeflow.run(BadPersist())
    assert_names(info.value, "persist")


# -- 7. nothing inside pipeflow's own folder ----------------------------------------------------

@pytest.mark.parametrize("attr,value", [("target_dir", ".pipeflow"),
                                        ("target_dir", ".pipeflow/commits/X"),
                                        ("target_dir", "./.pipeflow"),
                                        ("target_dir", ".PipeFlow"),
                                        ("task_group", ".pipeflow")])
def test_outputs_are_never_placed_in_pipeflows_own_folder(data_dir, attr, value):
    class Intruder(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"a": 1})

    setattr(Intruder, attr, value)
    with pytest.raises(UnsafePathError) as info:
        pipeflow.run(Intruder())
    assert_names(info.value, "Intruder", attr, ".pipeflow")
    assert [p for p in files_below(data_dir) if "Intruder" in p or "X" in p] == []
    with pytest.raises(UnsafePathError):
        pipeflow.Workflow(Intruder, env="prod").run()


def test_a_pipeflow_folder_below_a_group_or_deeper_is_fine(data_dir):
    class Deep(pipeflow.tasks.TaskJson):
        target_dir = "a/.pipeflow"

        def run(self):
            self.save({"a": 1})

    assert pipeflow.run(Deep())
    assert (data_dir / "a" / ".pipeflow").is_dir()


# -- 2. the run history is never opened through a symlink -------------------------------------

@pytest.mark.parametrize("dangling", [False, True])
def test_a_history_symlink_is_never_written_through(data_dir, outside, dangling):
    own = data_dir / ".pipeflow"
    own.mkdir(exist_ok=True)
    target = outside / "h.db"
    if not dangling:
        target.write_bytes(b"")
    (own / "history.db").symlink_to(target)
    with pytest.warns(RuntimeWarning, match="is a symlink") as warned:
        assert pipeflow.run(Plain2())
        Plain2().reset(confirm=False)
        assert pipeflow.run(Plain2())  # warned once per file
    assert len([w for w in warned if "history" in str(w.message)]) == 1
    assert_names(warned[0].message, str(own / "history.db"))
    assert files_below(outside) == ([] if dangling else ["h.db"])
    if not dangling:
        assert target.read_bytes() == b""
    assert (own / "history.db").is_symlink()  # never replaced or deleted
    with pytest.raises(HistoryError) as info:
        pipeflow.history()
    assert_names(info.value, "history.db", "is a symlink")
    with pytest.raises(HistoryError):
        pipeflow.runs()
    with pytest.raises(HistoryError):
        pipeflow.prune_history(keep=0)
    assert files_below(outside) == ([] if dangling else ["h.db"])


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_symlinked_history_side_file_is_never_written_through(data_dir, outside, suffix):
    assert pipeflow.run(Plain2())  # a real history exists
    path = runstore.history_path()
    side = pathlib.Path(f"{path}{suffix}")
    side.unlink(missing_ok=True)
    victim = outside / "victim"
    victim.write_bytes(b"keep")
    side.symlink_to(victim)
    Plain2().reset(confirm=False)
    with pytest.warns(RuntimeWarning, match="is a symlink"):
        assert pipeflow.run(Plain2())
    assert victim.read_bytes() == b"keep"
    assert files_below(outside) == ["victim"]
    with pytest.raises(HistoryError, match="is a symlink"):
        pipeflow.history()
    assert victim.read_bytes() == b"keep"


def test_a_history_setting_naming_a_symlink_is_refused_too(tmp_path, outside):
    real = outside / "h.db"
    link = tmp_path / "link.db"
    link.symlink_to(real)
    settings.history = str(link)
    with pytest.warns(RuntimeWarning, match="is a symlink"):
        assert pipeflow.run(Plain2())
    assert not real.exists()
    settings.history = str(real)  # the real file is fine
    Plain2().reset(confirm=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert pipeflow.run(Plain2())
    assert len(pipeflow.runs()) == 1
    with sqlite3.connect(real) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


# -- 3. task families -------------------------------------------------------------------------

def _make_class(name, namespace=None):
    body = {"__module__": __name__, "run": lambda self: self.save({"a": 1})}
    if namespace is not None:
        body["task_namespace"] = namespace
    return type(pipeflow.tasks.TaskJson)(name, (pipeflow.tasks.TaskJson,), body)


EVIL = ("Evil(pipeflow.tasks.TaskJson):\n    import os; open('PWNED','w')\nclass Evil2")


@pytest.mark.parametrize("name", ["Bad\nName", "Bad(Name)", "a b", "x／y", "1abc", EVIL])
def test_a_task_family_must_be_an_identifier(data_dir, name):
    cls = _make_class(name)
    with pytest.raises(UnsafePathError) as info:
        pipeflow.run(cls())
    assert_names(info.value, repr(name)[:20])
    assert files_below(data_dir) in ([], [".pipeflow"], [".pipeflow/history.db"],
                                     [".pipeflow", ".pipeflow/history.db"])


@pytest.mark.parametrize("namespace", ["..", ".", "a..b", "team-x", "a.", ".a", "ns／x"])
def test_a_task_namespace_must_be_dotted_identifiers(data_dir, namespace):
    cls = _make_class("Spaced2", namespace)
    with pytest.raises(UnsafePathError) as info:
        pipeflow.run(cls())
    assert_names(info.value, "task_namespace", repr(namespace))
    assert not any("Spaced2" in p for p in files_below(data_dir))


@pytest.mark.parametrize("name,namespace", [("Données", None), ("Train", "team.project"),
                                            ("Modèle", "équipe.x_1")])
def test_unicode_and_dotted_identifiers_are_fine(data_dir, name, namespace):
    cls = _make_class(name, namespace)
    assert pipeflow.run(cls())
    family = f"{namespace}.{name}" if namespace else name
    assert (data_dir / family).is_dir()


def test_flow_export_never_writes_a_class_name_into_code(tmp_path):
    cls = _make_class(EVIL)
    export = tmp_path / "evil_export.py"
    with pytest.raises(PipeflowError) as info:
        pipeflow.FlowExport(tasks=cls(), save=True, path_export=export).generate()
    assert_names(info.value, "class name")
    assert not export.exists()
    assert not (tmp_path / "PWNED").exists()


class _Sneaky(str):
    """A string whose repr is code."""

    def __repr__(self):
        return "__import__('pathlib').Path('PWNED').touch() or 'x'"

    def __str__(self):
        return _Sneaky(str.__str__(self))


def test_flow_export_writes_values_only_as_literals(tmp_path, data_dir):
    class Shared2(pipeflow.tasks.TaskJson):
        name = pipeflow.Parameter(default="a")
        n = pipeflow.IntParameter(default=1)

        def run(self):
            self.save({"a": 1})

    Shared2.task_group = _Sneaky("grp")
    Shared2.target_dir = _Sneaky("dir")
    try:
        task = Shared2(name=_Sneaky("v"))
        export = tmp_path / "sneaky_export.py"
        code = pipeflow.FlowExport(tasks=task, save=True, path_export=export).generate()
        assert "__import__" not in code
        pipeflow.FlowImport(export, module="sneaky_export")
        assert not (tmp_path / "PWNED").exists()
    finally:
        del Shared2.task_group, Shared2.target_dir


def test_flow_export_refuses_a_parameter_name_that_is_not_an_identifier(tmp_path):
    body = {"__module__": __name__, "run": lambda self: self.save({"a": 1}),
            "x = 1\nimport os; open('PWNED', 'w')\ny": luigi.Parameter(default="v")}
    Named2 = type(pipeflow.tasks.TaskJson)("Named2", (pipeflow.tasks.TaskJson,), body)
    export = tmp_path / "named_export.py"
    with pytest.raises(PipeflowError) as info:
        pipeflow.FlowExport(tasks=Named2(), save=True, path_export=export).generate()
    assert_names(info.value, "parameter name")
    assert not export.exists() and not (tmp_path / "PWNED").exists()


def test_flow_export_of_odd_but_plain_values_round_trips(tmp_path, data_dir):
    class Odd2(pipeflow.tasks.TaskJson):
        s = pipeflow.Parameter(default="x")

        def run(self):
            self.save({"s": self.s})

    value = "a'\"\n\\)\n# import os"
    assert pipeflow.run(Odd2(s=value))
    export = tmp_path / "odd_export.py"
    pipeflow.FlowExport(tasks=Odd2(s=value), save=True, path_export=export).generate()
    shared = pipeflow.FlowImport(export, module="odd_export")
    assert shared.Odd2().task_id == Odd2(s=value).task_id
    assert shared.Odd2().outputLoad() == {"s": value}


# -- 4. URLs however they are spelt -----------------------------------------------------------

@pytest.mark.parametrize("value", [pathlib.Path("s3://bucket/data"), " s3://b", "s3://b ",
                                   "\ts3://b/x", pathlib.Path("gs://bk/x"), "s3:/b/x",
                                   pathlib.Path("file://localhost/tmp/x")])
def test_a_url_in_any_spelling_is_refused_by_set_dir(tmp_path, data_dir, value):
    with pytest.raises(ParameterError) as info:
        pipeflow.set_dir(value)
    assert_names(info.value, "set_dir")
    assert settings.dirpath == data_dir
    assert sorted(os.listdir(tmp_path)) == ["data"]


@pytest.mark.parametrize("value", [pathlib.Path("gs://bk/x"), " gs://bk/x"])
def test_a_url_in_any_spelling_is_refused_as_a_workflow_path(tmp_path, value):
    with pytest.raises(ParameterError, match="URL|space"):
        pipeflow.Workflow(Plain2, path=value).run()
    with pytest.raises(ParameterError, match="URL|space"):
        Plain2(path=value)
    assert sorted(os.listdir(tmp_path)) == ["data"]


@pytest.mark.parametrize("value", ["data ", " data", "data\n"])
def test_a_location_with_surrounding_whitespace_is_refused(tmp_path, data_dir, value):
    with pytest.raises(ParameterError) as info:
        pipeflow.set_dir(value)
    assert_names(info.value, repr(value), "space")
    assert settings.dirpath == data_dir
    with pytest.raises(ParameterError):
        settings.history = value
    assert settings.history is True
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_a_url_is_refused_as_the_history_setting():
    with pytest.raises(ParameterError, match="URL"):
        settings.history = pathlib.Path("s3://b/h.db")
    assert settings.history is True


def test_colons_inside_folder_names_and_drive_like_names_are_fine(tmp_path):
    assert pipeflow.set_dir("a:b/data") == pathlib.Path("a:b/data")
    assert pipeflow.set_dir(tmp_path / "x:" / "data").is_dir()
    assert pipeflow.set_dir("file:///" + str(tmp_path / "f").lstrip("/")) == tmp_path / "f"


# -- 5. a file where a folder must be ---------------------------------------------------------

@pytest.mark.parametrize("committed", [True, False])
def test_a_file_in_the_place_of_the_task_folder_is_a_clear_error(data_dir, committed):
    if committed:
        assert pipeflow.run(Plain2())
    shutil.rmtree(data_dir / "Plain2", ignore_errors=True)
    (data_dir / "Plain2").write_text("not a folder")
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Plain2())
    err = cause(info.value)
    assert isinstance(err, MetadataError), f"{type(err).__name__}: {err}"
    assert_names(err, "Plain2()", str(data_dir / "Plain2"), "file", "move")
    assert (data_dir / "Plain2").read_text() == "not a folder"


def test_a_file_in_the_place_of_a_group_folder_is_a_clear_error(data_dir):
    class Grouped2(pipeflow.tasks.TaskJson):
        task_group = "grp"

        def run(self):
            self.save({"a": 1})

    (data_dir / "grp").write_text("not a folder")
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Grouped2())
    err = cause(info.value)
    assert isinstance(err, MetadataError), f"{type(err).__name__}: {err}"
    assert_names(err, str(data_dir / "grp"), "move")


def test_a_file_in_the_place_of_the_records_folder_is_a_clear_error(data_dir):
    assert pipeflow.run(Plain2())
    records = data_dir / layout.OWN_DIR / layout.RECORDS_DIR / "Plain2"
    shutil.rmtree(records)
    records.write_text("not a folder")
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Plain2(), forced_all=True)
    err = cause(info.value)
    assert isinstance(err, (SaveError, MetadataError)), f"{type(err).__name__}: {err}"
    assert_names(err, str(records), "file is in the place of the folder")
    assert "A folder is in the way" not in str(err)
    assert records.read_text() == "not a folder"


# -- 6. set_dir with a bad folder keeps the previous setting ----------------------------------

@pytest.mark.parametrize("bad", ["afile", "afile/sub", "a\x00b"])
def test_set_dir_with_a_bad_folder_is_a_parameter_error_and_keeps_the_setting(
        tmp_path, data_dir, bad):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ParameterError) as info:
        pipeflow.set_dir(bad)
    assert_names(info.value, repr(bad))
    assert settings.dirpath == data_dir and settings.dir == str(data_dir)
    with pytest.raises(ParameterError):
        settings.dir = bad
    with pytest.raises(ParameterError):
        settings.dirpath = pathlib.Path(bad)
    assert settings.dirpath == data_dir and settings.dir == str(data_dir)
    assert pipeflow.run(Plain2())  # the setting in force still works


def test_a_workflow_path_that_is_a_file_is_a_parameter_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    for path in ("afile", "afile/sub", tmp_path / "afile"):
        with pytest.raises(ParameterError) as info:
            pipeflow.Workflow(Plain2, path=path)
        assert_names(info.value, "afile", "not a folder")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("where", ["path", "env"])
def test_a_file_in_the_place_of_a_location_or_env_folder_is_a_clear_error(tmp_path, data_dir,
                                                                         where):
    if where == "path":
        blocker = tmp_path / "afile"
        run = lambda: pipeflow.run(Plain2(path="afile"))  # noqa: E731
    else:
        blocker = data_dir / "env=prod"
        run = pipeflow.Workflow(Plain2, env="prod").run
    blocker.write_text("x")
    with pytest.raises(TaskFailedError) as info:
        run()
    err = cause(info.value)
    assert isinstance(err, (SaveError, MetadataError)), f"{type(err).__name__}: {err}"
    assert_names(err, "Plain2()", f"file is in the place of the folder {str(blocker)!r}")
    assert blocker.read_text() == "x"


class Replacer2(pipeflow.tasks.TaskJson):
    def run(self):
        records = self._store.folders()[1]
        shutil.rmtree(records)
        records.write_text("not a folder")
        self.save({"a": 1})


def test_a_records_folder_replaced_by_a_file_during_the_run_is_a_clear_error(data_dir):
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Replacer2())
    err = cause(info.value)
    assert isinstance(err, (SaveError, MetadataError)), f"{type(err).__name__}: {err}"
    records = data_dir / layout.OWN_DIR / layout.RECORDS_DIR / "Replacer2"
    assert_names(err, "Replacer2()", f"file is in the place of the folder {str(records)!r}")
    assert records.read_text() == "not a folder"
    assert not Replacer2().complete()


@pytest.mark.parametrize("name", ["class", "ﬁt"])
def test_flow_export_refuses_a_class_name_python_would_read_back_otherwise(tmp_path, name):
    cls = _make_class(name)
    with pytest.raises(PipeflowError, match="class name"):
        pipeflow.FlowExport(tasks=cls(), save=True, path_export=tmp_path / "x.py").generate()
    assert not (tmp_path / "x.py").exists()
