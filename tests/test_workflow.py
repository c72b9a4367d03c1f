"""Workflow: preview text, run results, failures, forcing, resets, paths, parameters."""

from __future__ import annotations

import io
import pathlib
import re

import pandas as pd
import pytest

import pipeflow
import pipeflow as d6tflow
from pipeflow.errors import ConfirmationError, ParameterError, TaskFailedError, UnsafePathError

RUNS: list[str] = []


class TaskGetData(d6tflow.tasks.TaskPqPandas):
    def run(self):
        RUNS.append("get")
        self.save(pd.DataFrame({"x": range(10)}))


@d6tflow.requires(TaskGetData)
class TaskPreprocess(d6tflow.tasks.TaskCachePandas):
    do_preprocess = d6tflow.BoolParameter(default=True)

    def run(self):
        RUNS.append("pre")
        df = self.inputLoad()
        self.save(df * 2 if self.do_preprocess else df)


@d6tflow.requires(TaskPreprocess)
class TaskTrain(d6tflow.tasks.TaskPickle):
    model = d6tflow.Parameter(default="ols")

    def run(self):
        RUNS.append("train")
        self.save({"model": self.model, "sum": int(self.inputLoad().x.sum())})


@pytest.fixture(autouse=True)
def _clear_runs():
    RUNS.clear()


def test_preview_text_matches_d6tflow(capsys):
    flow = d6tflow.Workflow(TaskTrain, {"do_preprocess": False})
    p = flow.preview()
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "└─--[TaskTrain-{'do_preprocess': 'False', 'model': 'ols'} (PENDING)]",
        "   └─--[TaskPreprocess-{} (PENDING)]",
        "      └─--[TaskGetData-{} (PENDING)]",
    ]
    assert "\033[" not in out  # no colour codes when not a terminal
    assert p.counts() == {"COMPLETE": 0, "STALE": 0, "PENDING": 3}
    assert [t.task_family for t in p.tasks("PENDING")] == ["TaskTrain", "TaskPreprocess",
                                                           "TaskGetData"]
    assert "<b" in p._repr_html_()


def test_a_preview_kept_in_a_variable_shows_in_the_next_notebook_cell(monkeypatch, capsys):
    # Regression: `p = flow.preview()` in one cell, then `p` in the next showed nothing the
    # first time (the "printed already" flag waited for a display that never came).
    import sys
    import types

    shown = []
    shell = types.SimpleNamespace(execution_count=1)
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    display_mod = types.ModuleType("IPython.display")
    display_mod.HTML = lambda text: text
    display_mod.display = lambda bundle, raw=False: shown.append(bundle["text/html"])
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)

    class Shown(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"a": 1})

    p = pipeflow.Workflow(Shown).preview()  # cell 1: `p = flow.preview()` prints the tree
    assert "Shown" in capsys.readouterr().out
    shell.execution_count = 2  # cell 2: `p`
    p._ipython_display_()
    assert len(shown) == 1 and "Shown" in shown[0]
    shell.execution_count = 3  # cell 3: `flow.preview()` as the cell's last line prints
    pipeflow.Workflow(Shown).preview()._ipython_display_()  # ... and is not drawn twice
    assert len(shown) == 1


def test_preview_colours_only_on_a_terminal(monkeypatch, capsys):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    fake = Tty()
    monkeypatch.setattr("sys.stdout", fake)
    d6tflow.Workflow(TaskTrain).preview()
    assert "\033[94mPENDING\033[0m" in fake.getvalue()


def test_run_executes_upstream_then_nothing_when_complete(capsys):
    flow = d6tflow.Workflow(TaskTrain, {"model": "rf"})
    result = flow.run()
    assert result and result.scheduling_succeeded
    assert RUNS == ["get", "pre", "train"]
    assert flow.outputLoad() == {"model": "rf", "sum": 90}
    assert flow.complete()
    RUNS.clear()
    again = flow.run()
    assert RUNS == []
    assert [r.task.task_family for r in again.by_state("up_to_date")] == ["TaskTrain"]
    out = capsys.readouterr().out
    lines = [ln for ln in flow.preview().text().splitlines()]
    assert all(ln.count("COMPLETE") == 1 for ln in lines)
    assert "PENDING" not in out and "COMPLETE" not in out


def test_execution_summary_lists_what_happened(capsys):
    class Boom(d6tflow.tasks.TaskPickle):
        def run(self):
            raise ZeroDivisionError("division by zero")

    class Fine(d6tflow.tasks.TaskPickle):
        def run(self):
            self.save(1)

    @d6tflow.requires({"boom": Boom, "fine": Fine})
    class After(d6tflow.tasks.TaskPickle):
        def run(self):
            self.save(2)

    pipeflow.run(TaskGetData())
    capsys.readouterr()
    result = pipeflow.run([TaskGetData(), After()], abort=False, execution_summary=True)
    out = capsys.readouterr().out
    assert not result
    assert "* 1 already done (outputs existed):\n    - TaskGetData()" in out
    assert re.search(r"\* 1 ran successfully:\n    - Fine\(\) in \d", out)
    assert "* 1 failed:\n    - Boom(): ZeroDivisionError: division by zero" in out
    assert "* 1 did not run because an upstream task failed:\n    - After()" in out
    assert "COMPLETE" not in out and "PENDING" not in out
    assert result.tasks[After().task_id].reason == "upstream task Boom() failed"


def test_failure_raises_chained_error_and_independent_tasks_still_run():
    class Fails(d6tflow.tasks.TaskPickle):
        def run(self):
            raise KeyError("no such column")

    class Independent(d6tflow.tasks.TaskPickle):
        def run(self):
            self.save("ok")

    with pytest.raises(TaskFailedError, match=r"1 task\(s\) failed.*\n    Fails\(\): KeyError") \
            as info:
        pipeflow.run([Fails(), Independent()])
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, KeyError)
    assert Independent().complete()
    res = info.value.result
    assert res.tasks[Fails().task_id].state == "failed"
    assert "KeyError" in res.tasks[Fails().task_id].traceback


def test_rerun_after_failure_runs_only_what_is_incomplete():
    state = {"fail": True}

    @d6tflow.requires(TaskGetData)
    class Flaky(d6tflow.tasks.TaskPickle):
        def run(self):
            RUNS.append("flaky")
            if state["fail"]:
                raise RuntimeError("flaky")
            self.save(1)

    with pytest.raises(TaskFailedError):
        pipeflow.run(Flaky())
    assert RUNS == ["get", "flaky"]
    state["fail"] = False
    RUNS.clear()
    assert pipeflow.run(Flaky())
    assert RUNS == ["flaky"]


def test_forced_options():
    flow = d6tflow.Workflow(TaskTrain)
    flow.run()
    RUNS.clear()
    flow.run(forced_all=True)
    assert RUNS == ["train"]
    RUNS.clear()
    flow.run(forced=TaskPreprocess)
    assert RUNS == ["pre", "train"]
    RUNS.clear()
    flow.run(forced_all_upstream=True)
    assert RUNS == ["get", "pre", "train"]
    with pytest.raises(ValueError, match="is not a task of this flow"):
        flow.run(forced=TaskPqOther)


class TaskPqOther(d6tflow.tasks.TaskPickle):
    pass


def test_confirm_without_terminal_raises_instead_of_eoferror():
    flow = d6tflow.Workflow(TaskTrain)
    flow.run()
    with pytest.raises(ConfirmationError, match="Pass confirm=False"):
        flow.run(forced_all=True, confirm=True)
    with pytest.raises(ConfirmationError, match="standard input is not a terminal"):
        TaskGetData().reset()
    assert TaskGetData().complete()


def test_reset_reset_upstream_reset_downstream():
    flow = d6tflow.Workflow(TaskTrain)
    flow.run()
    flow.reset(TaskGetData)
    assert not flow.complete()  # check_dependencies: downstream counts as pending
    assert flow.complete(TaskTrain, cascade=False)
    flow.run()
    RUNS.clear()
    flow.reset_downstream(TaskPreprocess)
    assert flow.complete(TaskGetData) and not flow.complete(TaskTrain, cascade=False)
    flow.run()
    assert RUNS == ["pre", "train"]
    flow.reset_upstream(TaskTrain)
    assert not flow.complete(TaskGetData)
    flow.run()
    flow.reset([TaskTrain, TaskGetData])
    assert not flow.complete(TaskGetData) and not flow.complete(TaskTrain, cascade=False)


def test_check_dependencies_off_looks_only_at_own_outputs():
    flow = d6tflow.Workflow(TaskTrain)
    flow.run()
    flow.reset(TaskGetData)
    d6tflow.settings.check_dependencies = False
    assert flow.preview(print_it=False).counts() == {"COMPLETE": 2, "STALE": 0, "PENDING": 1}
    RUNS.clear()
    flow.run()
    assert RUNS == []


def test_output_helpers():
    flow = d6tflow.Workflow(TaskTrain)
    flow.run()
    all_out = flow.outputLoadAll()
    assert set(all_out) == {"TaskTrain", "TaskPreprocess", "TaskGetData"}
    assert flow.outputPath(TaskGetData) == flow.output(TaskGetData).path
    assert flow.get_task(TaskTrain) is TaskTrain()


def test_parameter_typo_is_an_error_with_suggestion():
    with pytest.raises(ParameterError) as info:
        d6tflow.Workflow(TaskTrain, {"do_preprocss": False})
    msg = str(info.value)
    assert "has a parameter 'do_preprocss' that no task declares." in msg
    assert "Did you mean 'do_preprocess'?" in msg
    assert "TaskTrain accepts: do_preprocess (bool, default True), model (str, default 'ols')" \
        in msg


def test_param_declared_only_upstream_is_accepted():
    flow = d6tflow.Workflow(TaskTrain, {"do_preprocess": False})
    assert flow.get_task(TaskPreprocess).do_preprocess is False


def test_workflow_takes_classes_not_instances():
    with pytest.raises(ParameterError, match="takes a task class, not the instance"):
        d6tflow.Workflow(TaskTrain())


def test_path_and_env_do_not_leak_between_workflows(data_dir, tmp_path):
    a = d6tflow.Workflow(TaskTrain, path="exp1", env="dev")
    b = d6tflow.Workflow(TaskTrain)
    a.run()
    # path is a folder relative to the working directory (tmp_path here), as in d6tflow
    assert a.outputPath(TaskGetData) == pathlib.Path("exp1/env=dev/TaskGetData") / (
        TaskGetData().task_id + "-data.parquet")
    assert (tmp_path / a.outputPath(TaskGetData)).exists()
    assert not b.complete()
    assert b.outputPath(TaskGetData).parent == data_dir / "TaskGetData"
    b.run()
    assert a.outputLoad() == b.outputLoad()
    assert a.outputPath() != b.outputPath()


@pytest.mark.parametrize("kwargs", [{"env": "../x"}, {"env": "a/b"}, {"env": ".."}])
def test_env_is_a_single_folder_name(kwargs):
    with pytest.raises(UnsafePathError, match="must be a single folder name"):
        d6tflow.Workflow(TaskTrain, **kwargs)


def test_workflow_path_is_relative_to_the_working_directory_or_absolute(data_dir, tmp_path):
    flow = d6tflow.Workflow(TaskGetData, path="data/data2")
    flow.run()
    assert flow.outputPath().parent == pathlib.Path("data/data2/TaskGetData")
    assert (tmp_path / "data" / "data2" / "TaskGetData").is_dir()
    elsewhere = tmp_path / "elsewhere"
    flow = d6tflow.Workflow(TaskGetData, path=elsewhere, env="prod")
    flow.run()
    assert flow.outputPath().parent == elsewhere / "env=prod" / "TaskGetData"
    assert flow.outputLoad().equals(d6tflow.Workflow(TaskGetData, path="data/data2").outputLoad())
    # nothing of either flow went to the data dir
    assert not (data_dir / "TaskGetData").exists()


def test_task_group_and_target_dir_stay_inside(data_dir):
    class Grouped(d6tflow.tasks.TaskPickle):
        task_group = "models"

        def run(self):
            self.save(1)

    class Escapes(d6tflow.tasks.TaskPickle):
        task_group = "../../tmp"

    class Nested(d6tflow.tasks.TaskPickle):
        target_dir = "a/../../b"

    pipeflow.run(Grouped())
    assert Grouped().output().path.parent == data_dir / "models" / "Grouped"
    with pytest.raises(UnsafePathError, match="task_group='../../tmp' must be a single folder"):
        Escapes().output()
    with pytest.raises(UnsafePathError, match="target_dir='a/../../b' must be a relative sub"):
        Nested().output()


def test_families_with_underscores_get_their_own_folders():
    class Model_A(d6tflow.tasks.TaskPickle):  # noqa: N801 - the name is the point
        def run(self):
            self.save("a")

    class Model_B(d6tflow.tasks.TaskPickle):  # noqa: N801
        def run(self):
            self.save("b")

    pipeflow.run([Model_A(), Model_B()])
    assert Model_A().output().path.parent.name == "Model_A"
    assert Model_B().output().path.parent.name == "Model_B"
    assert (Model_A().outputLoad(), Model_B().outputLoad()) == ("a", "b")


def test_long_parameter_values_and_class_names_give_valid_distinct_names():
    class AVeryLongTaskClassNameThatGoesOnAndOnForeverAndEverAndEverAndEverAndEverAndEver(
            d6tflow.tasks.TaskPickle):
        text = d6tflow.Parameter()
        persist = ["a_really_long_output_name_" * 4]

        def run(self):
            self.save({self.persist[0]: self.text})

    cls = AVeryLongTaskClassNameThatGoesOnAndOnForeverAndEverAndEverAndEverAndEverAndEver
    one, two = cls(text="x" * 5000), cls(text="x" * 4999 + "y")
    pipeflow.run([one, two])
    p1 = next(iter(one.output().values())).path
    p2 = next(iter(two.output().values())).path
    assert p1 != p2
    assert len(p1.name.encode()) <= 255
    assert one.outputLoad() == ["x" * 5000]


def test_attach_flow_makes_outputs_of_another_flow_available():
    source = d6tflow.Workflow(TaskGetData)
    source.run()

    class UsesOther(d6tflow.tasks.TaskPickle):
        def run(self):
            self.save(len(self.flows["src"].outputLoad()))

    flow = d6tflow.Workflow(UsesOther)
    flow.attach_flow(source, "src")
    flow.run()
    assert flow.outputLoad() == 10


def test_no_default_task_error():
    with pytest.raises(pipeflow.errors.PipeflowError, match="has no default task"):
        d6tflow.Workflow().run()
    flow = d6tflow.Workflow()
    flow.set_default(TaskGetData)
    assert flow.run()


def test_workflow_metadata_helpers():
    class Meta(d6tflow.tasks.TaskPickle):
        def run(self):
            self.save(1)
            self.saveMeta({"rows": 1})

    flow = d6tflow.Workflow(Meta)
    flow.run()
    assert flow.outputLoadMeta() == {"rows": 1}
    assert flow.outputLoadAllMeta() == {"Meta": {"rows": 1}}


def test_calling_run_directly_outside_the_engine_publishes_outputs():
    task = TaskGetData()
    task.run()  # d6tflow habit while debugging: no engine, no staging
    assert task.complete()
    assert len(task.outputLoad()) == 10


def test_multi_per_flow_helpers(data_dir):
    flows = d6tflow.WorkflowMulti(TaskTrain, {"a": {"model": "x"}, "b": {"model": "y"}},
                                  path="sweep")
    tasks = flows.get_task()
    assert tasks["a"].model == "x" and tasks["b"].model == "y"
    paths = flows.outputPath()
    assert paths["a"] != paths["b"]
    assert paths["a"].is_relative_to("sweep")
    flows.run(flow="a")
    assert flows.outputLoadAll(flow="a")["TaskTrain"]["model"] == "x"


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_workers_run_independent_tasks_concurrently_and_skip_only_downstream(executor, tmp_path):
    import time

    class Meet(d6tflow.tasks.TaskPickle):
        """Each side waits until the other side has started: only possible in parallel."""

        side = d6tflow.IntParameter()

        def run(self):
            (tmp_path / f"started-{self.side}").touch()
            deadline = time.monotonic() + 10
            while not (tmp_path / f"started-{1 - self.side}").exists():
                assert time.monotonic() < deadline, "the other task never ran alongside"
                time.sleep(0.01)
            self.save(self.side)

    class Broken(d6tflow.tasks.TaskPickle):
        def run(self):
            raise ValueError("broken")

    @d6tflow.requires(Broken)
    class AfterBroken(d6tflow.tasks.TaskPickle):
        def run(self):
            self.save(1)

    result = pipeflow.run([Meet(side=0), Meet(side=1), AfterBroken()], workers=2,
                          executor=executor, abort=False)
    states = {r.task.task_family + str(getattr(r.task, "side", "")): r.state.value
              for r in result.tasks.values()}
    assert states == {"Meet0": "completed", "Meet1": "completed", "Broken": "failed",
                      "AfterBroken": "skipped"}
    assert Meet(side=0).outputLoad() == 0 and Meet(side=1).outputLoad() == 1
    assert isinstance(result.tasks[Broken().task_id].error, ValueError)
