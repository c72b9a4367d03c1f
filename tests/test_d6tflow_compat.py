"""d6tflow code runs unchanged (issue 9): one or more regression tests per mechanism.

Each section names the item of the issue it pins. d6tflow's own suite runs in
``test_d6tflow_suite.py``; these tests pin the same behaviour with pipeflow's own code, plus
the strict cases d6tflow gets silently wrong.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import warnings

import luigi
import pandas as pd
import pytest

import pipeflow
import pipeflow as d6tflow
from pipeflow import settings
from pipeflow.errors import (
    MissingDependencyError,
    MissingTaskError,
    ParameterError,
    UnsafePathError,
    UnusedParameterWarning,
)


class Raw(d6tflow.tasks.TaskPqPandas):
    def run(self):
        self.save(pd.DataFrame({"a": range(10)}))


@d6tflow.requires(Raw)
class Doubled(d6tflow.tasks.TaskPqPandas):
    factor = d6tflow.IntParameter(default=2)

    def run(self):
        df = self.inputLoad()
        df["a"] = df["a"] * self.factor  # changes the loaded frame in place
        self.save(df)


# -- 1. Workflow path: a folder relative to the working directory, as in d6tflow ---------------

def test_workflow_path_is_a_folder_of_the_working_directory(tmp_path, data_dir):
    flow = d6tflow.Workflow(Doubled, path="data/data2")
    flow.run()
    assert flow.outputPath() == pathlib.Path("data/data2/Doubled") / (
        Doubled().task_id + "-data.parquet")
    assert (tmp_path / "data" / "data2" / "Raw").is_dir()  # upstream tasks too
    assert not (data_dir / "Doubled").exists()
    # d6tflow's env: below the path, or below the data dir without one
    assert d6tflow.Workflow(Doubled, path="data/data2", env="prod").outputPath().parent == \
        pathlib.Path("data/data2/env=prod/Doubled")
    assert d6tflow.Workflow(Doubled, env="prod").outputPath().parent == \
        data_dir / "env=prod" / "Doubled"


def test_class_path_and_env_below_the_default_tasks_path(tmp_path):
    class Placed(d6tflow.tasks.TaskJson):
        path = "placed/here"

        def run(self):
            self.save({"ok": 1})

    pipeflow.run(Placed())
    assert (tmp_path / "placed" / "here" / "Placed").is_dir()
    # an env without a path goes below the default task's own folder (d6tflow)
    flow = d6tflow.Workflow(Placed, env="dev")
    assert flow.outputPath().parent == pathlib.Path("placed/here/env=dev/Placed")


def test_flow_tasks_keep_their_location_outside_the_flow(tmp_path):
    flow = d6tflow.Workflow(Doubled, {"factor": 3}, path="exp")
    flow.run()
    task = flow.get_task()
    # used on its own, the task still knows where its flow put it and its inputs
    assert task.output().path.parent == pathlib.Path("exp/Doubled")
    assert task.complete()
    assert task.outputLoad()["a"].tolist() == [3 * i for i in range(10)]
    assert d6tflow.preview(task, print_it=False).counts()["COMPLETE"] == 2
    # ... without moving luigi's shared instance of the same parameters (d6tflow's leak)
    plain = Doubled(factor=3)
    assert plain is not task and plain.task_id == task.task_id
    assert plain.output().path.parent == settings.dirpath / "Doubled"
    assert not plain.complete()


def test_task_instance_path_places_that_instance(tmp_path):
    here = Raw(path="instance/dir")
    assert here.output().path.parent == pathlib.Path("instance/dir/Raw")
    assert Raw(path="instance/dir") is here  # the same keywords give the same instance
    assert Raw().output().path.parent == settings.dirpath / "Raw"
    pipeflow.run(here)
    assert (tmp_path / "instance" / "dir" / "Raw").is_dir()
    assert not Raw().complete()


def test_tasks_from_flows_with_other_locations_cannot_share_a_run():
    a = d6tflow.Workflow(Doubled, path="a").get_task()
    b = d6tflow.Workflow(Doubled, {"factor": 5}, path="b").get_task()
    with pytest.raises(ParameterError, match=r"come from places with different locations: "
                                             r"\(path='a'\); \(path='b'\)"):
        pipeflow.run([a, b])
    # a task of the data dir with one of a flow's: its location would be taken over
    with pytest.raises(ParameterError, match=r"\(path='a'\); \(the data dir\)"):
        pipeflow.run([a, Raw()])
    assert not (pathlib.Path("a") / "Raw").exists()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"env": "../up"}, "env='../up' must be a single folder name"),
    ({"env": "a/b"}, "env='a/b' must be a single folder name"),
    ({"env": ".."}, "env='..' must be a single folder name"),
])
def test_env_names_never_climb_out(kwargs, match):
    with pytest.raises(UnsafePathError, match=match):
        d6tflow.Workflow(Doubled, **kwargs)


def test_task_group_never_climbs_out():
    class Up(d6tflow.tasks.TaskJson):
        task_group = "../../etc"

    with pytest.raises(UnsafePathError, match="task_group='../../etc' must be a single folder"):
        Up().output()


def test_parameter_values_stay_inside_the_task_folder():
    class Named(d6tflow.tasks.TaskJson):
        name = d6tflow.Parameter()

    path = Named(name="../../../etc/passwd").output().path
    assert path.parent == settings.dirpath / "Named"


def test_reset_of_a_flow_with_a_path_deletes_only_what_pipeflow_committed(tmp_path):
    flow = d6tflow.Workflow(Raw, path="mine")
    flow.run()
    folder = tmp_path / "mine" / "Raw"
    notes = folder / "notes.txt"
    notes.write_text("mine")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [flow.outputPath().name, "notes.txt"])  # the task folder holds outputs only
    flow.reset()
    assert notes.read_text() == "mine"
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert not flow.complete()


# -- 2. parameters a Workflow passes that a task does not declare -------------------------------

def test_a_near_miss_of_a_declared_parameter_is_an_error():
    with pytest.raises(ParameterError, match="has a parameter 'factr' that no task declares. "
                                             "Did you mean 'factor'"):
        d6tflow.Workflow(Doubled, {"factr": 3})


def test_a_prefix_missing_is_a_near_miss_too():
    class Prep(d6tflow.tasks.TaskJson):
        do_preprocess = d6tflow.BoolParameter(default=True)

    with pytest.raises(ParameterError, match="Did you mean 'do_preprocess'"):
        d6tflow.Workflow(Prep, {"preprocess": False})


def test_other_undeclared_parameters_are_ignored_with_one_warning():
    shared = {"factor": 3, "model": "ols", "n_estimators": 100}  # one dict for several flows
    with pytest.warns(UnusedParameterWarning) as caught:
        flow = d6tflow.Workflow(Doubled, shared)
        flow.preview(print_it=False)
        flow.get_task()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("Workflow(Doubled, params): 'model', 'n_estimators' are not "
                              "parameters of any task of this flow, so they are ignored")
    assert "Doubled accepts: factor (int, default 2)" in message
    assert flow.get_task().factor == 3


def test_direct_instantiation_ignores_an_undeclared_keyword_given_with_its_lookalike():
    class Insignificant(d6tflow.tasks.TaskCache):
        param = d6tflow.IntParameter(significant=False)

    with pytest.warns(UnusedParameterWarning, match="'param2' is not a parameter of "
                                                    "Insignificant, so it is ignored"):
        task = Insignificant(param=1, param2=1)  # d6tflow's tests do this
    assert task.param == 1
    with pytest.raises(ParameterError, match="Did you mean 'param'"):
        Insignificant(parm=1)  # a typo: 'param' is not given


# -- 3. a run() that saves nothing: tests in test_tasks.py; here through worker processes ------

def test_a_run_saving_nothing_in_a_worker_process_stays_incomplete():
    class Checks(d6tflow.tasks.TaskPqPandas):
        def requires(self):
            return Raw()

        def run(self):
            assert self.inputLoad()["a"].sum() == 45

    with pytest.warns(pipeflow.errors.NoOutputWarning, match=r"Checks\(\): run\(\) finished "):
        result = pipeflow.run([Checks(), Doubled()], workers=2)
    assert result and not Checks().complete() and Doubled().complete()


# -- 4. cached loads are fresh objects ----------------------------------------------------------

def test_cached_loads_never_return_an_object_an_earlier_caller_changed():
    settings.cached = True  # restored by the conftest fixture
    pipeflow.run(Raw())
    for _ in range(3):  # d6tflow returned 0, 2, 4...; then 0, 4, 8...: the shared frame
        Doubled().reset(confirm=False)
        pipeflow.run(Doubled())
        assert Doubled().outputLoad()["a"].tolist() == [2 * i for i in range(10)]
    first = Raw().output().load()
    first.loc[0, "a"] = 999  # an in-place edit of the values
    assert Raw().output().load().loc[0, "a"] == 0
    assert Raw().output().load(cached=True) is Raw().output().load(cached=True)


def test_in_memory_outputs_are_fresh_too():
    class Mem(d6tflow.tasks.TaskCache):
        def run(self):
            data = {"rows": [1, 2]}
            self.save(data)
            data["rows"].append(3)  # after saving: not part of the output

    pipeflow.run(Mem())
    loaded = Mem().outputLoad()
    assert loaded == {"rows": [1, 2]}
    loaded["rows"].append(4)
    assert Mem().outputLoad() == {"rows": [1, 2]}


# -- 5. typed parameters with default=None -------------------------------------------------------

def test_typed_parameters_with_a_none_default_pass_upstream():
    class Columns(d6tflow.tasks.TaskJson):
        columns = d6tflow.ListParameter(default=None)
        limit = d6tflow.IntParameter(default=None)

        def run(self):
            self.save({"columns": self.columns, "limit": self.limit})

    @d6tflow.requires(Columns)
    class UsesColumns(d6tflow.tasks.TaskJson):
        def run(self):
            self.save(self.inputLoad())

    @d6tflow.inherits(Columns)
    class Inherits(d6tflow.tasks.TaskJson):
        def requires(self):
            return self.clone(Columns)

        def run(self):
            self.save(self.inputLoad())

    pipeflow.run([UsesColumns(), Inherits()])
    assert UsesColumns().outputLoad() == {"columns": None, "limit": None}
    assert Inherits().outputLoad() == {"columns": None, "limit": None}
    with pytest.raises(ParameterError, match="'limit' must be an int"):
        Columns(limit="lots")


# -- 6. TaskAggregator with @requires ------------------------------------------------------------

def test_an_aggregator_with_requires_groups_what_run_yields():
    @d6tflow.requires(Doubled)  # passes 'factor' on, as d6tflow's docs do
    class Both(d6tflow.tasks.TaskAggregator):
        def run(self):
            yield self.clone(Doubled)
            yield Doubled(factor=self.factor + 1)  # not in requires(): runs too

    both = Both(factor=4)
    assert not both.complete()
    pipeflow.run(both)
    assert both.complete()
    assert [df["a"].iloc[1] for df in both.outputLoad()] == [4, 5]
    assert [o.path for o in both.output()] == [Doubled(factor=4).output().path,
                                               Doubled(factor=5).output().path]
    assert both.reset(confirm=False)
    assert not Doubled(factor=4).complete() and not Doubled(factor=5).complete()


# -- 7. CSV index round trip with load arguments -------------------------------------------------

class IndexedCsv(d6tflow.tasks.TaskCSVPandas):
    def run(self):
        frame = pd.DataFrame({"day": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
                              "v": [1, 2, 3]}).set_index("day")
        self.save(frame)


def test_csv_index_survives_load_arguments():
    pipeflow.run(IndexedCsv())
    plain = IndexedCsv().output().load()
    for kwargs in ({"low_memory": False}, {"parse_dates": ["day"]}):
        loaded = IndexedCsv().output().load(**kwargs)
        assert list(loaded.columns) == ["v"], kwargs
        pd.testing.assert_frame_equal(loaded, plain)


def test_a_frame_loaded_without_its_index_saves_again():
    pipeflow.run(IndexedCsv())
    raw = IndexedCsv().output().load(usecols=None, index_col=None)  # the file as written

    class Filtered(d6tflow.tasks.TaskCSVPandas):
        def run(self):
            frame = raw.copy()
            frame["__index_level_0__"] = frame["v"] * 10
            self.save(frame[frame["v"] > 1])  # a filtered frame: its index is not 0..n

    pipeflow.run(Filtered())
    out = Filtered().outputLoad()
    assert list(out.index) == [1, 2]
    assert out["__index_level_0__"].tolist() == [20, 30]


# -- 8. modules d6tflow code imports -------------------------------------------------------------

def test_hdf5_tasks_round_trip():
    from pipeflow.tasks.h5 import TaskH5Pandas

    class Stored(TaskH5Pandas):
        def run(self):
            self.save(pd.DataFrame({"a": [1.5, 2.5]}, index=[10, 20]))

    pipeflow.run(Stored())
    assert Stored().output().path.suffix == ".hdf5"
    pd.testing.assert_frame_equal(Stored().outputLoad(),
                                  pd.DataFrame({"a": [1.5, 2.5]}, index=[10, 20]))


def test_hdf5_without_pytables_says_what_to_install(monkeypatch):
    from pipeflow.targets.h5 import H5PandasTarget

    monkeypatch.setitem(__import__("sys").modules, "tables", None)  # import tables fails
    with pytest.raises(MissingDependencyError, match=r"H5PandasTarget needs the package "
                                                     r"'tables'.*'h5' extra: pip install "
                                                     r"'tables'"):
        H5PandasTarget("x.hdf5").write(pd.DataFrame({"a": [1]}), pathlib.Path("x.hdf5"))


# -- 10. print(flow.preview()) ------------------------------------------------------------------

def test_printing_a_preview_shows_the_tree_once(capsys):
    flow = d6tflow.Workflow(Doubled)
    print(flow.preview())  # an idiom of d6tflow's docs
    out = capsys.readouterr().out
    assert out.count("Doubled-") == 1 and out.count("Raw-") == 1
    assert out.rstrip().endswith("2 tasks: 0 complete, 0 stale, 2 pending")
    quiet = flow.preview(print_it=False)
    assert str(quiet) == quiet.text() and "Doubled-" in str(quiet)


# -- 11. private helpers and exception types d6tflow code relies on ------------------------------

def test_get_meta_path_reads_the_metadata_file():
    class WithMeta(d6tflow.tasks.TaskCache):
        def run(self):
            self.save(1)
            self.metaSave({"rows": 3})

    task = WithMeta()
    pipeflow.run(task)
    with open(task._get_meta_path(task), "rb") as fh:
        assert pickle.load(fh) == {"rows": 3}
    assert task._get_meta_path() == task._get_meta_path(task)


def test_no_default_task_is_a_runtime_error_and_a_list_is_refused():
    with pytest.raises(RuntimeError, match="this Workflow has no default task") as info:
        d6tflow.Workflow(params={"factor": 1}).run()
    assert isinstance(info.value, MissingTaskError)
    with pytest.raises(RuntimeError):
        d6tflow.WorkflowMulti(params={"a": {}, "b": {}}).run()
    with pytest.raises(ParameterError, match="takes one task class, not a list of them"):
        d6tflow.Workflow(task=[Raw, Doubled])


def test_workflow_takes_a_params_dict_as_its_first_argument():
    flow = d6tflow.Workflow({"factor": 7})  # d6tflow code, then set_default
    flow.set_default(Doubled)
    assert flow.get_task().factor == 7


def test_d6tflow_grid_flow_names_are_accepted():
    flows = d6tflow.WorkflowMulti(Doubled, {"factor": [1, 2]})
    assert flows.get_task(flow="factor_2").factor == 2
    assert flows.get_flow("factor=2") is flows.get_flow("factor_2")


def test_in_memory_output_paths_are_strings_and_keys_pick_one_output():
    class Pair(d6tflow.tasks.TaskCache):
        persist = ["xx", "yy"]

        def run(self):
            self.save({"xx": pd.DataFrame({"a": [1]}), "yy": pd.DataFrame({"b": [2]})})

    pipeflow.run(Pair())
    assert d6tflow.Workflow(Pair).outputPath() == {
        "xx": os.fspath(settings.dirpath / "Pair" / f"{Pair().task_id}-xx.cache"),
        "yy": os.fspath(settings.dirpath / "Pair" / f"{Pair().task_id}-yy.cache")}
    assert isinstance(Pair().outputLoad(keys="xx"), pd.DataFrame)
    assert isinstance(Pair().outputLoad(keys=["xx"]), list)
    with pytest.raises(KeyError, match="has no output 'zz'"):
        Pair().outputLoad(keys="zz")


def test_instance_layout_attributes_are_honoured():
    task = Raw()
    assert task.output().path.parent == settings.dirpath / "Raw"  # remembered, then changed
    try:
        task.target_dir, task.target_ext = "elsewhere", "pq"
        assert task.output().path == settings.dirpath / "elsewhere" / f"{task.task_id}-data.pq"
        task.save_attrib = False
        assert task.output().path == settings.dirpath / "elsewhere" / "data.pq"
        task.run()  # outside a run: saved by hand
        assert task.output().path.exists()
    finally:
        luigi.task_register.Register.clear_instance_cache()
    assert Raw().output().path.parent == settings.dirpath / "Raw"


def test_no_warning_for_declared_parameters():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d6tflow.Workflow(Doubled, {"factor": 2}).preview(print_it=False)


def _reset_with_prompt(tmp_path, stdin):
    import subprocess
    import sys

    script = tmp_path / "reset_prompt.py"
    script.write_text(
        "import pipeflow as d6tflow\n"
        f"d6tflow.set_dir({str(tmp_path / 'd')!r})\n"
        "class Prompted(d6tflow.tasks.TaskJson):\n"
        "    def run(self):\n"
        "        self.save({'a': 1})\n"
        "d6tflow.run(Prompted(), execution_summary=False, progress=False)\n"
        "Prompted().reset()  # confirm=True: asks\n"
        "print('complete' if Prompted().complete() else 'reset')\n")
    return subprocess.run([sys.executable, str(script)], stdin=stdin, capture_output=True,
                          text=True, cwd=tmp_path, timeout=60, check=False)


def test_piped_answers_confirm_a_reset_as_in_d6tflow(tmp_path):
    read, write = os.pipe()  # as `yes | python flow.py`
    os.write(write, b"y\n")
    os.close(write)
    try:
        out = _reset_with_prompt(tmp_path, read)
    finally:
        os.close(read)
    assert out.returncode == 0, out.stderr
    assert "Delete the outputs of Prompted()? (y/n)" in out.stdout
    assert out.stdout.rstrip().endswith("reset")


def test_no_answer_from_dev_null_is_a_clear_error(tmp_path):
    import subprocess

    out = _reset_with_prompt(tmp_path, subprocess.DEVNULL)
    assert out.returncode == 1
    assert "ConfirmationError: Delete the outputs of Prompted()? This needs confirmation" in \
        out.stderr and "Pass confirm=False" in out.stderr


def test_positional_values_are_checked_like_keywords():
    import datetime

    class Dated(d6tflow.tasks.TaskJson):
        dt_start = d6tflow.DateParameter(default=datetime.date(2020, 1, 1))
        do_preprocess = d6tflow.BoolParameter(default=True)

    assert Dated(datetime.date(2021, 5, 1)).dt_start == datetime.date(2021, 5, 1)
    # d6tflow-template code once passed a flag positionally: it lands in dt_start
    with pytest.raises(ParameterError, match=r"Dated: parameter 'dt_start' must be a date, "
                                             r"but got False \(bool\)"):
        Dated(False)


def test_a_message_starting_with_a_newline_still_shows_in_the_summary():
    class LoadsRemovedDataset(d6tflow.tasks.TaskJson):
        def run(self):  # sklearn's load_boston raises ImportError("\n`load_boston` has...")
            raise ImportError("\n`load_boston` has been removed from scikit-learn")

    with pytest.raises(pipeflow.errors.TaskFailedError,
                       match=r"LoadsRemovedDataset\(\): ImportError: `load_boston` has been "
                             r"removed") as info:
        pipeflow.run(LoadsRemovedDataset())
    assert "- LoadsRemovedDataset(): ImportError: `load_boston` has been removed" in \
        info.value.result.summary()


def test_locks_follow_the_folder_not_the_working_directory(tmp_path):
    from pipeflow.locks import TaskLock

    (tmp_path / "a" / "rel").mkdir(parents=True)
    (tmp_path / "b" / "rel").mkdir(parents=True)
    os.chdir(tmp_path / "a")
    first = TaskLock("rel", ".T.commit.json")
    assert first.acquire()
    try:
        os.chdir(tmp_path / "b")  # same relative folder name, another folder
        other = TaskLock("rel", ".T.commit.json")
        assert other.acquire()  # not the lock held in a/rel
        other.release()
        os.chdir(tmp_path / "a")
        assert not TaskLock("rel", ".T.commit.json").acquire()  # this one is held
    finally:
        first.release()
        os.chdir(tmp_path)
    assert (tmp_path / "b" / "rel" / ".pipeflow.lock").exists()


def test_cleaning_the_data_dir_covers_flows_placed_inside_it(data_dir):
    settings.dir = "data"  # relative, as d6tflow users set it (cwd is the test's tmp dir)
    inside = d6tflow.Workflow(Raw, path="data/exp")  # a location inside the data dir
    kept = d6tflow.Workflow(Doubled)
    inside.run()
    kept.run()
    assert inside.complete() and kept.complete()
    assert d6tflow.invalidate_orphans(kept, confirm=False)
    assert not inside.complete() and kept.complete()  # the nested flow's outputs were orphans
    inside.run()
    assert d6tflow.invalidate_all(confirm=False)
    assert not inside.complete() and not kept.complete()
    assert not [p for p in pathlib.Path("data").rglob("*.parquet")]


def test_warnings_name_the_users_line_not_pipeflows():
    class Quiet(d6tflow.tasks.TaskJson):
        n = d6tflow.IntParameter(default=1)

        def run(self):
            pass

    with pytest.warns(UnusedParameterWarning) as direct:
        Quiet(n=2, unrelated_setting=1)
    with pytest.warns(UnusedParameterWarning) as flow:
        d6tflow.Workflow(Quiet, {"other_knob": 1}).get_task()
    with pytest.warns(pipeflow.errors.NoOutputWarning) as ran:
        d6tflow.Workflow(Quiet).run()
    for caught in (direct, flow, ran):
        assert [pathlib.Path(w.filename).name for w in caught] == ["test_d6tflow_compat.py"]


def test_located_instances_say_where_they_are_like_d6tflow():
    assert Raw(path="inst").path == "inst"
    assert d6tflow.Workflow(Doubled, path="wf", env="dev").get_task().path == \
        os.fspath(pathlib.Path("wf/env=dev"))
    assert Raw().path is None  # luigi's shared instance is left alone


def test_imported_stubs_stay_where_the_producer_wrote_them(data_dir, tmp_path):
    producer = d6tflow.Workflow(Raw)
    producer.run()
    export = tmp_path / "export" / "stubs.py"
    export.parent.mkdir()
    d6tflow.FlowExport(flows=producer, save=True, path_export=export).generate()
    shared = d6tflow.FlowImport(export, module="stubs_pinned", path_data=data_dir)

    @d6tflow.requires(shared.Raw)
    class Consumer(d6tflow.tasks.TaskJson):
        def run(self):
            self.save({"rows": len(self.inputLoad())})

    flow = d6tflow.Workflow(Consumer, path="mine", env="x")  # the consumer's own folder
    flow.run()
    assert flow.outputLoad() == {"rows": 10}
    assert flow.outputPath().parent == pathlib.Path("mine/env=x/Consumer")


def test_d6tflow_leftovers_work():
    with pytest.warns(UserWarning, match="settings.check_crc is a d6tflow setting that has no "
                                         "effect"):
        settings.check_crc = True
    with pytest.raises(AttributeError, match="Did you mean 'check_dependencies'"):
        settings.check_dependecies = False
    printed = d6tflow.show(Doubled())
    assert printed.counts()["PENDING"] == 2
    with pytest.raises(RuntimeError, match="has no metadata"):  # d6tflow: a RuntimeError too
        pipeflow.run(Raw())
        Raw().outputLoadMeta()

    @d6tflow.inherits(Raw)
    class Child(d6tflow.tasks.TaskJson):
        def run(self):
            self.save({"n": len(self.inputLoad())})

    with pytest.warns(DeprecationWarning, match="replaced by @pipeflow.requires"):
        d6tflow.clone_parent(Child)
    pipeflow.run(Child())
    assert Child().outputLoad() == {"n": 10}
