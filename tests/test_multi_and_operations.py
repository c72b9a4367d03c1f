"""WorkflowMulti, module-level operations, invalidation, sharing, settings, import."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

import pipeflow
import pipeflow as d6tflow
from pipeflow.errors import ParameterError

RUNS: list[str] = []


class Source(d6tflow.tasks.TaskPqPandas):
    def run(self):
        RUNS.append("source")
        self.save(pd.DataFrame({"x": range(4)}))


@d6tflow.requires(Source)
class Fit(d6tflow.tasks.TaskJson):
    model = d6tflow.Parameter(default="ols")
    alpha = d6tflow.FloatParameter(default=1.0)

    def run(self):
        RUNS.append(f"fit-{self.model}-{self.alpha}")
        self.save({"model": self.model, "alpha": self.alpha, "n": len(self.inputLoad())})


@pytest.fixture(autouse=True)
def _clear():
    RUNS.clear()


def test_multi_grid_runs_shared_tasks_once():
    flows = d6tflow.WorkflowMulti(Fit, {"model": ["ols", "gbm"], "alpha": [0.1, 1.0]})
    assert list(flows.params) == ["model=ols,alpha=0.1", "model=ols,alpha=1.0",
                                  "model=gbm,alpha=0.1", "model=gbm,alpha=1.0"]
    results = flows.run()
    assert RUNS.count("source") == 1
    assert len(RUNS) == 5
    assert all(results.values())
    out = flows.outputLoad()
    assert out["model=gbm,alpha=0.1"] == {"model": "gbm", "alpha": 0.1, "n": 4}
    assert flows.outputLoad(Fit, "model=ols,alpha=1.0")["model"] == "ols"
    assert flows.get_flow("model=ols,alpha=0.1").complete()
    with pytest.raises(ParameterError, match="has no flow named 'nope'"):
        flows.get_flow("nope")


def test_multi_dict_and_list_params_and_flow_selection(capsys):
    named = d6tflow.WorkflowMulti(Fit, {"a": {"model": "ols"}, "b": {"model": "rf"}})
    assert named.run(flow="b")
    assert RUNS == ["source", "fit-rf-1.0"]
    assert named.complete() == {"a": False, "b": True}
    listed = d6tflow.WorkflowMulti(Fit, [{"model": "ols"}, {"model": "rf"}])
    assert list(listed.params) == [0, 1]
    previews = listed.preview()
    assert previews[1].counts() == {"COMPLETE": 2, "STALE": 0, "PENDING": 0}
    assert "flow 0:" in capsys.readouterr().out
    listed.reset(Fit, flow=1)
    assert listed.complete(Fit, 1) is False


def test_multi_rejects_bad_params():
    with pytest.raises(ParameterError, match="WorkflowMulti params must be"):
        d6tflow.WorkflowMulti(Fit, {"model": "ols"})
    with pytest.raises(ParameterError, match="Did you mean 'model'"):
        d6tflow.WorkflowMulti(Fit, {"modle": ["ols"]})


def test_taskflow_upstream_and_downstream():
    up = pipeflow.taskflow_upstream(Fit())
    assert [t.task_family for t in up] == ["Fit", "Source"]
    assert pipeflow.taskflow_upstream(Fit(), only_complete=True) == []
    down = pipeflow.taskflow_downstream(Source(), Fit())
    assert down == {Source(), Fit()}


def test_invalidate_upstream_and_downstream():
    pipeflow.run(Fit())
    assert pipeflow.invalidate_downstream(Source(), Fit(), confirm=False)
    assert not Source().complete() and not Fit().complete(cascade=False)
    pipeflow.run(Fit())
    assert pipeflow.invalidate_upstream(Fit(), confirm=False)
    assert not Source().complete()


def test_invalidate_all_deletes_every_committed_output_only(data_dir, stored):
    pipeflow.run(Fit())
    (data_dir / "notes.txt").write_text("user file")
    assert pipeflow.invalidate_all(confirm=False)
    assert stored() == [data_dir / "notes.txt"]  # not written by pipeflow: kept
    assert data_dir.exists()
    assert not pipeflow.data


def test_invalidate_all_never_follows_symlinks_out(data_dir, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.csv").write_text("1")
    (data_dir / "link").symlink_to(outside, target_is_directory=True)
    pipeflow.invalidate_all(confirm=False)
    assert (outside / "keep.csv").exists()


def test_invalidate_orphans_keeps_files_of_given_flows(data_dir):
    keep = d6tflow.Workflow(Fit, {"model": "keep"})
    drop = d6tflow.Workflow(Fit, {"model": "drop"})
    keep.run()
    drop.run()
    assert pipeflow.invalidate_orphans(keep, confirm=False)
    assert keep.complete()
    assert not drop.complete(Fit, cascade=False)
    assert drop.complete(Source)  # shared with the kept flow


def test_confirm_prompt_answered_no_keeps_outputs(monkeypatch):
    pipeflow.run(Fit())
    monkeypatch.setattr("pipeflow.display._interactive", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert pipeflow.invalidate_all() is False
    assert Fit().complete()
    assert pipeflow.run(Fit(), forced_all=True, confirm=True) is None
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert Fit().reset() is True
    assert not Fit().complete()


def test_module_level_preview_and_run_accept_lists(capsys):
    p = pipeflow.preview([Source(), Fit()])
    assert [r.task.task_family for r in p.rows] == ["Source", "Fit", "Source"]
    assert p.rows[2].reference and "(see above)" in capsys.readouterr().out
    result = pipeflow.run([Source(), Fit()], execution_summary=False)
    assert len(result.by_state("completed")) == 2


def test_flow_export_and_import_read_producer_outputs(data_dir, tmp_path):
    flow = d6tflow.Workflow(Fit, {"model": "gbm"}, env="prod")
    flow.run()
    export = tmp_path / "shared" / "tasks_export.py"
    export.parent.mkdir()
    code = pipeflow.FlowExport(flows=flow, save=True, path_export=export).generate()
    assert export.read_text() == code
    assert "class Fit(pipeflow.tasks.TaskJson):" in code
    assert "    external = True" in code
    assert "    model = pipeflow.Parameter(default='gbm')" in code
    # where the producer's tasks wrote, as the producer names it; and its data dir
    assert f"    path = '{data_dir.as_posix()}/env=prod'" in code
    assert f"PRODUCER_DATA_DIR = {str(data_dir)!r}" in code
    compile(code, "tasks_export.py", "exec")
    # the consumer sees the producer's data dir at another place
    moved = data_dir.rename(tmp_path / "copied")
    pipeflow.set_dir(tmp_path / "consumer")
    shared = pipeflow.FlowImport(export, module="shared_tasks", path_data="../copied")
    assert shared.dirpath == export.parent / "../copied"  # relative to the module, as d6tflow
    assert shared.Fit().outputLoad() == {"model": "gbm", "alpha": 1.0, "n": 4}
    assert shared.Fit().output().path.parent == shared.dirpath / "env=prod" / "Fit"
    assert shared.tasks.Fit is shared.Fit  # d6tflow's attribute access to .tasks
    assert shared.Fit().task_id == flow.get_task().task_id
    assert moved.exists()
    with pytest.raises(AttributeError, match="has no task 'Nope'"):
        shared.Nope  # noqa: B018


def test_flow_export_without_save_prints_the_code(capsys):
    code = pipeflow.FlowExport(tasks=Source()).generate()
    assert capsys.readouterr().out == code + "\n"  # d6tflow's collaboration page relies on it


def test_flow_export_of_single_task_prints_code():
    code = pipeflow.FlowExport(tasks=Source()).generate()
    assert "class Source(pipeflow.tasks.TaskPqPandas):" in code
    assert "class Fit" not in code


def test_settings_typo_raises_and_dir_syncs(tmp_path):
    with pytest.raises(AttributeError, match="Did you mean 'check_dependencies'"):
        pipeflow.settings.check_dependecies = False
    pipeflow.settings.dir = str(tmp_path / "x")
    assert pipeflow.settings.dirpath == tmp_path / "x"
    with pytest.raises(ValueError, match="log_level must be one of"):
        pipeflow.settings.log_level = "LOUD"
    pipeflow.settings.log_level = "info"
    assert pipeflow.settings.log_level == "INFO"
    pipeflow.settings.log_level = "WARNING"


def test_import_prints_nothing_and_opens_no_network():
    code = ("import socket\n"
            "def deny(*a, **k): raise AssertionError('network call')\n"
            "socket.socket.connect = deny\n"
            "import pipeflow, pipeflow.cli\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_public_api_is_d6tflow_complete():
    names = ["set_dir", "preview", "run", "taskflow_upstream", "taskflow_downstream",
             "invalidate_upstream", "invalidate_downstream", "invalidate_all",
             "invalidate_orphans", "requires", "inherits", "data", "settings", "Workflow",
             "WorkflowMulti", "FlowExport", "FlowImport", "Parameter", "IntParameter",
             "FloatParameter", "BoolParameter", "DateParameter", "MonthParameter",
             "YearParameter", "DateHourParameter", "DateMinuteParameter",
             "DateSecondParameter", "DateIntervalParameter", "TimeDeltaParameter",
             "TaskParameter", "EnumParameter", "DictParameter", "ListParameter",
             "TupleParameter", "NumericalParameter", "ChoiceParameter", "OptionalParameter"]
    assert [n for n in names if not hasattr(pipeflow, n)] == []
    task_names = ["TaskData", "TaskCache", "TaskCachePandas", "TaskPqPandas", "TaskCSVPandas",
                  "TaskCSVGZPandas", "TaskJson", "TaskPickle", "TaskExcelPandas",
                  "TaskAggregator"]
    assert [n for n in task_names if not hasattr(pipeflow.tasks, n)] == []
    target_names = ["CacheTarget", "PdCacheTarget", "DataTarget", "PqPandasTarget",
                    "CSVPandasTarget", "CSVGZPandasTarget", "JsonTarget", "PickleTarget",
                    "ExcelPandasTarget"]
    assert [n for n in target_names if not hasattr(pipeflow.targets, n)] == []


def test_cli_preview_run_reset(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pipeflow.cli import main

    (tmp_path / "cli_tasks.py").write_text(
        "import pipeflow\n"
        "class Hello(pipeflow.tasks.TaskJson):\n"
        "    n = pipeflow.IntParameter(default=1)\n"
        "    def run(self):\n"
        "        self.save({'n': self.n})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()
    args = ["cli_tasks:Hello", "-p", "n=3", "--dir", str(tmp_path / "d")]
    out = runner.invoke(main, ["preview", *args])
    assert out.exit_code == 0, out.output
    assert "[Hello-{'n': '3'} (PENDING)]" in out.output
    out = runner.invoke(main, ["run", *args])
    assert out.exit_code == 0, out.output
    assert "* 1 ran successfully" in out.output
    assert runner.invoke(main, ["preview", *args]).output.count("COMPLETE") == 1
    assert runner.invoke(main, ["reset", *args, "--yes"]).exit_code == 0
    out = runner.invoke(main, ["run", "cli_tasks:Hello", "-p", "nn=3"])
    assert out.exit_code == 2  # bad input
    assert "Did you mean 'n'?" in out.output
    import cli_tasks

    pipeflow.set_dir(tmp_path / "d")
    lock = cli_tasks.Hello(n=3)._store.lock()
    assert lock.acquire()  # as if another process were running it
    try:
        out = runner.invoke(main, ["run", *args, "--if-locked", "fail"])
    finally:
        lock.release()
    assert out.exit_code == 1
    assert "TaskLockedError: Hello(n=3) is being run by another process" in out.output
