"""Tasks and targets: formats, save/load shapes, metadata, errors."""

from __future__ import annotations

import pathlib

import pandas as pd
import pytest

import pipeflow
from pipeflow.errors import (
    IncompleteTaskError,
    MissingOutputError,
    NoOutputWarning,
    ParameterError,
    SaveError,
)

DF = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})

FORMATS = [
    (pipeflow.tasks.TaskPqPandas, DF, "parquet"),
    (pipeflow.tasks.TaskCSVPandas, DF, "csv"),
    (pipeflow.tasks.TaskCSVGZPandas, DF, "csv.gz"),
    (pipeflow.tasks.TaskExcelPandas, DF, "xlsx"),
    (pipeflow.tasks.TaskJson, {"x": [1, 2], "y": "z"}, "json"),
    (pipeflow.tasks.TaskPickle, {"model": object.__name__, "w": [1.5]}, "pkl"),
    (pipeflow.tasks.TaskCache, {"any": "thing"}, "cache"),
    (pipeflow.tasks.TaskCachePandas, DF, "cache"),
]


def _equal(a, b):
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize(("base", "value", "ext"), FORMATS)
def test_each_format_round_trips_and_uses_d6tflow_layout(base, value, ext, data_dir):
    class Fmt(base):
        def run(self):
            self.save(value)

    task = Fmt()
    assert not task.complete()
    assert pipeflow.run(task)
    _equal(task.outputLoad(), value)
    path = task.output().path
    assert pathlib.Path(path) == data_dir / "Fmt" / f"{task.task_id}-data.{ext}"
    if ext != "cache":
        assert path.exists()
        assert not list(path.parent.glob(".*tmp-*"))
        # the task folder holds the outputs only (d6tflow code lists it)
        assert [p.name for p in path.parent.iterdir()] == [path.name]
    else:
        assert isinstance(path, str)  # as in d6tflow, where it is a luigi LocalTarget path


@pytest.mark.parametrize("index", [
    pd.Index(["x", "y", "z"], name="key"),
    pd.date_range("2024-01-01", periods=3, name="date"),
    pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)], names=["g", None]),
    pd.Index([10, 20, 30]),
])
@pytest.mark.parametrize("base", [pipeflow.tasks.TaskCSVPandas, pipeflow.tasks.TaskCSVGZPandas,
                                  pipeflow.tasks.TaskExcelPandas])
def test_csv_and_excel_keep_the_index(base, index):
    df = DF.set_index(index)

    class Indexed(base):
        def run(self):
            self.save(df)

    pipeflow.run(Indexed())
    pd.testing.assert_frame_equal(Indexed().outputLoad(), df, check_freq=False)


def test_csv_default_index_writes_a_clean_file():
    class Clean(pipeflow.tasks.TaskCSVPandas):
        def run(self):
            self.save(DF)

    pipeflow.run(Clean())
    assert Clean().output().path.read_text().splitlines()[0] == "a,b"
    assert not Clean().output().sidecar().exists()


def test_multiple_outputs_save_and_load_as_list_or_dict():
    class Multi(pipeflow.tasks.TaskPickle):
        persist = ["model", "scores"]

        def run(self):
            self.save({"model": {"w": 1}, "scores": [0.9]})

    pipeflow.run(Multi())
    assert Multi().outputLoad() == [{"w": 1}, [0.9]]
    assert Multi().outputLoad(as_dict=True) == {"model": {"w": 1}, "scores": [0.9]}
    assert Multi().outputLoad(keys=["scores"]) == [[0.9]]
    assert set(Multi().output()) == {"model", "scores"}
    with pytest.raises(KeyError, match="has no output 'score'"):
        Multi().outputLoad(keys=["score"])


def test_save_keys_must_match_persist_and_nothing_is_written(data_dir, stored):
    class Two(pipeflow.tasks.TaskPickle):
        persist = ["a", "b"]

    with pytest.raises(SaveError, match=r"save\(\) keys must match persist = \['a', 'b'\]; "
                                        r"missing \['b'\], unexpected \['c'\]"):
        Two().save({"a": 1, "c": 2})
    with pytest.raises(SaveError, match=r"save\(\) takes a dict \{'a': \.\.\., 'b': \.\.\.\}"):
        Two().save([1, 2])
    assert not any(data_dir.rglob("*.pkl"))


@pytest.mark.parametrize(("base", "bad"), [
    (pipeflow.tasks.TaskPqPandas, {"not": "a frame"}),
    (pipeflow.tasks.TaskCSVPandas, [1, 2]),
    (pipeflow.tasks.TaskJson, {"when": pd.Timestamp("2024-01-01")}),
    (pipeflow.tasks.TaskCachePandas, "text"),
])
def test_save_of_unsupported_type_fails_before_writing(base, bad, stored):
    class Typed(base):
        pass

    with pytest.raises(SaveError, match="Nothing was written"):
        Typed().save(bad)
    assert not stored()


def test_save_checks_every_output_before_writing_any(stored):
    class Pair(pipeflow.tasks.TaskPqPandas):
        persist = ["good", "bad"]

    with pytest.raises(SaveError):
        Pair().save({"good": DF, "bad": "not a frame"})
    assert not stored()


def test_run_saving_nothing_finishes_warns_and_stays_incomplete(stored):
    """d6tflow's tests write tasks whose run() only checks its inputs (issue 9, item 3)."""
    calls = []

    class Checker(pipeflow.tasks.TaskPickle):
        persist = ["model", "scores"]

        def run(self):
            calls.append(1)
            self.saveMeta({"checked": True})  # metadata alone is not an output

    with pytest.warns(NoOutputWarning, match=r"Checker\(\): run\(\) finished without saving any "
                                             r"of its outputs, so it stays incomplete"):
        result = pipeflow.run(Checker())
    assert result  # the run succeeded
    (done,) = result.by_state("completed")
    assert done.reason == "run() saved no output: it stays incomplete and runs again next time"
    assert not Checker().complete()
    assert stored() == []  # nothing published, the metadata neither
    with pytest.warns(NoOutputWarning):
        pipeflow.run(Checker())
    assert len(calls) == 2  # it runs again next time


def test_run_saving_some_outputs_fails_with_missing_output_error(stored):
    class Forgetful(pipeflow.tasks.TaskPickle):
        persist = ["model", "scores"]

        def run(self):
            self.output()["model"].save({"w": 1})  # forgets "scores"

    with pytest.raises(pipeflow.errors.TaskFailedError) as info:
        pipeflow.run(Forgetful())
    cause = info.value.__cause__
    assert isinstance(cause, MissingOutputError)
    assert "Forgetful() finished run() but did not write 1 of its 2 outputs" in str(cause)
    assert "missing  scores:" in str(cause) and "ok       model:" in str(cause)
    assert "so run() must call self.save({'model': ..., 'scores': ...})" in str(cause)
    assert stored() == []  # nothing published


def test_failed_run_after_save_leaves_nothing_complete(stored):
    class SaveThenFail(pipeflow.tasks.TaskPqPandas):
        def run(self):
            self.save(DF)
            self.saveMeta({"rows": 3})
            raise ValueError("bad model")

    with pytest.raises(pipeflow.errors.TaskFailedError):
        pipeflow.run(SaveThenFail())
    assert not SaveThenFail().complete()
    assert not stored()


def test_save_through_another_target_of_the_same_path_is_staged_too(stored):
    # A run() that builds its own target for its output path (not the task's target object)
    # is staged all the same: a failure after it publishes nothing.
    class OwnTarget(pipeflow.tasks.TaskPickle):
        fail = pipeflow.BoolParameter(default=True)

        def run(self):
            pipeflow.targets.PickleTarget(pathlib.Path(str(self.output().path))).save({"a": 1})
            if self.fail:
                raise ValueError("after the save")

    with pytest.raises(pipeflow.errors.TaskFailedError):
        pipeflow.run(OwnTarget())
    assert not stored()
    assert pipeflow.run(OwnTarget(fail=False))
    assert OwnTarget(fail=False).outputLoad() == {"a": 1}


def test_failed_run_after_direct_write_to_output_path_leaves_nothing():
    class DirectWrite(pipeflow.tasks.TaskCSVPandas):
        def run(self):
            self.output().path.parent.mkdir(parents=True, exist_ok=True)
            DF.to_csv(self.output().path, index=False)
            raise RuntimeError("crash after writing")

    with pytest.raises(pipeflow.errors.TaskFailedError):
        pipeflow.run(DirectWrite())
    assert not DirectWrite().output().path.exists()


def test_metadata_save_load_and_reset_removes_it():
    class WithMeta(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(1)
            self.saveMeta({"rows": 10})

    @pipeflow.requires(WithMeta)
    class Child(pipeflow.tasks.TaskPickle):
        def run(self):
            assert self.metaLoad() == {"rows": 10}
            self.save(2)
            self.metaSave({"child": True})

    pipeflow.run(Child())
    assert WithMeta().outputLoadMeta() == {"rows": 10}
    assert Child().outputLoadAllMeta() == {"WithMeta": {"rows": 10}, "Child": {"child": True}}
    meta_path = WithMeta()._store.meta_target().path
    assert meta_path.name == f"{WithMeta().task_id}-meta.pickle"
    WithMeta().reset(confirm=False)
    assert not meta_path.exists()
    assert not WithMeta().output().path.exists()


def test_output_load_meta_without_meta_says_how_to_fix():
    class NoMeta(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(1)

    pipeflow.run(NoMeta())
    with pytest.raises(pipeflow.errors.OutputError, match=r"did not call self\.saveMeta"):
        NoMeta().outputLoadMeta()


def test_output_load_of_incomplete_task_names_missing_upstream():
    class Up(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(1)

    @pipeflow.requires(Up)
    class Down(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(2)

    with pytest.raises(IncompleteTaskError, match=r"(?s)cannot load Down\(\): it is not "
                                                  r"complete.*Up\(\).*flow\.run\(\)"):
        Down().outputLoad()


def test_cached_output_load_reuses_the_object():
    class Frame(pipeflow.tasks.TaskPqPandas):
        def run(self):
            self.save(DF)

    pipeflow.run(Frame())
    first = Frame().outputLoad(cached=True)
    assert Frame().outputLoad(cached=True) is first
    assert Frame().outputLoad() is not first
    assert Frame().output().path in pipeflow.data
    pipeflow.run(Frame(), forced_all=True)
    assert Frame().outputLoad(cached=True) is not first  # rerun drops the stale cache entry


def test_unknown_parameter_on_direct_instantiation_suggests_the_name():
    class Train(pipeflow.tasks.TaskPickle):
        learning_rate = pipeflow.FloatParameter(default=0.05)
        model = pipeflow.Parameter()

    with pytest.raises(ParameterError) as info:
        Train(model="xgb", learning_rat=0.1)
    msg = str(info.value)
    assert "'learning_rat'" in msg and "Did you mean 'learning_rate'?" in msg
    assert "Train accepts: learning_rate (float, default 0.05), model (str, required)" in msg


def test_missing_parameter_value_is_explained():
    class Needs(pipeflow.tasks.TaskPickle):
        model = pipeflow.Parameter()

    with pytest.raises(ParameterError, match=r"Needs needs a value for its parameter model "
                                             r"\(str, required\)"):
        Needs()


def test_persist_must_be_a_list_of_names():
    class Wrong(pipeflow.tasks.TaskPickle):
        persist = "data"

    with pytest.raises(pipeflow.errors.PipeflowError, match="is not a list of distinct output"):
        Wrong().output()


def test_user_defined_target_format():
    class TextTarget(pipeflow.targets.DataTarget):
        accepts = "str"

        def read(self, path, **kwargs):
            return path.read_text()

        def write(self, data, path, **kwargs):
            path.write_text(data)

        def check(self, data):
            if not isinstance(data, str):
                raise TypeError("TextTarget stores str")

    class Text(pipeflow.tasks.TaskData):
        target_class = TextTarget
        target_ext = "txt"

        def run(self):
            self.save("hello")

    pipeflow.run(Text())
    assert Text().outputLoad() == "hello"
    with pytest.raises(SaveError, match="TextTarget stores str"):
        Text().save(3)


def test_d6tflow_style_target_with_fun_arguments():
    class CsvTarget(pipeflow.targets.DataTarget):
        def load(self, cached=False, **kwargs):
            return super().load(pd.read_csv, cached, **kwargs)

        def save(self, df, **kwargs):
            return super().save(df, "to_csv", index=False, **kwargs)

    class Old(pipeflow.tasks.TaskData):
        target_class = CsvTarget
        target_ext = "csv"

        def run(self):
            self.save(DF)

    pipeflow.run(Old())
    pd.testing.assert_frame_equal(Old().outputLoad(), DF)


def test_external_task_is_never_run_and_never_deleted(data_dir):
    class Raw(pipeflow.tasks.TaskCSVPandas):
        external = True

    @pipeflow.requires(Raw)
    class Clean(pipeflow.tasks.TaskCSVPandas):
        def run(self):
            self.save(self.inputLoad())

    with pytest.raises(pipeflow.errors.MissingInputError,
                       match=r"(?s)external inputs that do not exist.*Raw\(\): .*Raw"):
        pipeflow.run(Clean())
    Raw().output().path.parent.mkdir(parents=True)
    DF.to_csv(Raw().output().path, index=False)
    assert pipeflow.run(Clean())
    with pytest.raises(pipeflow.errors.PipeflowError, match="is external"):
        Raw().reset(confirm=False)
    assert Raw().output().path.exists()


def test_aggregator_groups_tasks_and_loads_them():
    class Part(pipeflow.tasks.TaskPickle):
        n = pipeflow.IntParameter()

        def run(self):
            self.save(self.n * 10)

    class All(pipeflow.tasks.TaskAggregator):
        def run(self):
            yield Part(n=1)
            yield Part(n=2)

    assert not All().complete()
    assert pipeflow.run(All())
    assert All().complete()
    assert All().outputLoad() == [10, 20]
    All().reset(confirm=False)
    assert not Part(n=1).complete()


def test_dynamic_requirements_yielded_from_run():
    class Leaf(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(5)

    class Dyn(pipeflow.tasks.TaskPickle):
        def run(self):
            target = yield Leaf()
            self.save(target.load() + 1)

    assert pipeflow.run(Dyn())
    assert Dyn().outputLoad() == 6


@pytest.mark.parametrize("base", [pipeflow.tasks.TaskJson, pipeflow.tasks.TaskCSVPandas])
def test_output_names_near_the_limit_leave_room_for_temp_files(base):
    """Regression: a 250-byte output name failed with ENAMETOOLONG on its temp file."""
    key = "a" * 250
    value = {"v": 1} if base is pipeflow.tasks.TaskJson else DF.set_index("a")

    class Wide(base):
        persist = [key]

        def run(self):
            self.save({key: value})

    assert pipeflow.run(Wide())
    assert len(Wide().output()[key].path.name.encode()) <= 255
    _equal(Wide().outputLoad()[0], value)


def test_parameters_added_to_a_class_later_are_seen():
    """get_params() is cached per class; extending a class afterwards must invalidate it."""

    class Late(pipeflow.tasks.TaskPickle):
        a = pipeflow.IntParameter(default=1)

    class Donor(pipeflow.tasks.TaskPickle):
        b = pipeflow.IntParameter(default=2)

    assert [n for n, _ in Late.get_params()] == ["a"]
    Late.b = Donor.b  # what @inherits does after the class exists
    assert [n for n, _ in Late.get_params()] == ["a", "b"]
    assert Late(b=5).b == 5
    del Late.b
    assert [n for n, _ in Late.get_params()] == ["a"]


def test_json_files_keep_d6tflow_layout_both_ways():
    class Doc(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"data": 5, "other": [1]})

    pipeflow.run(Doc())
    import json

    path = Doc().output().path
    assert json.loads(path.read_text()) == {"data": {"data": 5, "other": [1]}}
    assert Doc().outputLoad() == {"data": 5, "other": [1]}
    path.write_text(json.dumps({"data": {"written": "by d6tflow"}}))
    assert pipeflow.targets.JsonTarget(path).load() == {"written": "by d6tflow"}


def test_instance_cache_fast_path_keeps_luigi_semantics():
    import luigi

    class Keyed(pipeflow.tasks.TaskPickle):
        a = pipeflow.IntParameter(default=1)
        d = pipeflow.DictParameter(default={})

    first = Keyed(a=2)
    assert Keyed(a=2) is first and Keyed(a=2) is Keyed(2)
    assert Keyed(a=3) is not first
    assert Keyed(d={"x": 1}) is Keyed(d={"x": 1})  # unhashable value: luigi's own path
    luigi.task_register.Register.clear_instance_cache()
    assert Keyed(a=2) is not first  # cleared together with luigi's cache


def test_save_by_hand_onto_a_folder_is_a_save_error_and_leaves_no_temp():
    # Regression: the move into place raised a raw IsADirectoryError from task.save().
    class Blocked(pipeflow.tasks.TaskJson):
        pass

    path = Blocked().output().path
    path.mkdir(parents=True)
    with pytest.raises(pipeflow.errors.SaveError, match=r"cannot publish .*Is a directory"):
        Blocked().save({"a": 1})
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
