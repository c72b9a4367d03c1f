"""Gaps an adversarial tester found in issue 12's notebook features.

An instance of a class redefined since follows the newest class everywhere (not only in
``run``/``preview``); ``WorkflowMulti.history()``; ``last_error``/``last_run`` given a class;
the summary of a background run stays with its progress bar in the cell that started it.
"""

from __future__ import annotations

import sys
import warnings

import pytest
from test_notebook_run import bars, run_cells, texts
from test_redefinition import Notebook

import pipeflow
from pipeflow.errors import ParameterError, StaleOutputWarning, TaskFailedError

A = """
import pipeflow as d6tflow

class A(d6tflow.tasks.TaskJson):
    def run(self):
        self.save({'v': 1})
"""

B = """
class B(d6tflow.tasks.TaskJson):
    def requires(self):
        return A()
    def run(self):
        self.save({'v': self.inputLoad()['v'] + 1})
"""

B_V2 = """
class B(d6tflow.tasks.TaskJson):
    def requires(self):
        return A()
    def run(self):
        self.save({'v': self.inputLoad()['v'] + 100})
"""

B_REQ = """
@d6tflow.requires(A)
class B(d6tflow.tasks.TaskJson):
    def run(self):
        self.save({'v': self.inputLoad()['v'] + 1})
"""

B_REQ_V2 = """
@d6tflow.requires(A)
class B(d6tflow.tasks.TaskJson):
    def run(self):
        self.save({'v': self.inputLoad()['v'] + 100})
"""


@pytest.fixture
def nb(monkeypatch):
    book = Notebook()
    monkeypatch.setitem(sys.modules, "__main__", book.module)
    return book


def _stale_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    return value, [str(w.message) for w in caught if issubclass(w.category, StaleOutputWarning)]


# -- 1. an instance kept from before a redefinition ----------------------------------------------

@pytest.fixture(params=[(B, B_V2), (B_REQ, B_REQ_V2)], ids=["requires", "@requires"])
def kept(nb, request):
    """``t = B()`` run, then B redefined (its run adds 100) and ``t`` run again."""
    first, second = request.param
    nb.run(A)
    nb.run(first)
    nb.run("t = B(); d6tflow.run(t)")
    nb.run(second)
    return nb


def test_a_kept_instance_loads_without_a_stale_warning_after_running(kept):
    pipeflow.run(kept["t"])
    value, stale = _stale_warnings(kept["t"].outputLoad)
    assert value == {"v": 101}
    assert stale == []


def test_a_kept_instance_is_complete_as_the_new_class_is(kept):
    pipeflow.run(kept["t"])
    kept.run("now = B()")
    assert kept["t"].complete() is True
    assert kept["now"].complete() is True
    assert kept["t"].complete(cascade=False) is True


def test_a_kept_instance_is_stale_before_running_for_the_new_code(kept):
    # before running: stale because the code of the new class changed, as preview says
    assert kept["t"].complete() is False
    assert kept["B"]().complete() is False
    rows = pipeflow.preview(kept["t"], print_it=False).rows
    said = next(r.reason for r in rows if r.task.task_family == "B")
    _, stale = _stale_warnings(kept["t"].outputLoad)
    assert len(stale) == 1
    assert said and said in stale[0]


def test_run_summary_and_warning_name_the_same_change(kept, capsys):
    # the reason a run gives for rerunning B is the reason the warning gives for its output
    plan = pipeflow.preview(kept["t"], print_it=False)
    said = next(r.reason for r in plan.rows if r.task.task_family == "B")
    _, stale = _stale_warnings(kept["B"]().outputLoad)
    assert len(stale) == 1 and said in stale[0]
    _, stale_old = _stale_warnings(kept["t"].outputLoad)
    assert stale_old == stale
    assert "removed" not in said and "added" not in said


def test_a_kept_instance_reset_resets_the_new_class(kept):
    pipeflow.run(kept["t"])
    assert kept["t"].reset(confirm=False) is True
    assert kept["B"]().complete() is False
    assert kept["t"].complete() is False


def test_a_flow_of_a_kept_instance_follows_the_new_class(kept):
    kept.run("flow = d6tflow.Workflow(B)")
    flow = kept["flow"]
    flow.run()
    assert flow.complete() is True
    assert kept["t"].complete() is True
    _, stale = _stale_warnings(flow.outputLoad)
    assert stale == []


def test_requires_redefined_as_a_method_summary_and_warning_agree(nb, capsys):
    # cell 1 with @requires, cell 2 with a requires() method: the run says the code of
    # B.requires was added; the output of the kept instance is then up to date (the warning
    # said "code removed: B.requires", judged with the old class)
    nb.run(A)
    nb.run(B_REQ)
    nb.run("t = B(); d6tflow.run(t)")
    nb.run(B_V2)
    _, before = _stale_warnings(nb["t"].outputLoad)
    assert len(before) == 1 and "code added: B.requires" in before[0]
    summary = pipeflow.run(nb["t"], execution_summary=False).summary()
    assert "code added: B.requires" in summary
    value, after = _stale_warnings(nb["t"].outputLoad)
    assert value == {"v": 101}
    assert after == []


# -- 2. WorkflowMulti.history() ------------------------------------------------------------------

class GapPrep(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"rows": 3})


@pipeflow.requires(GapPrep)
class GapFit(pipeflow.tasks.TaskJson):
    model = pipeflow.Parameter(default="ols")

    def run(self):
        if self.model == "bad":
            raise KeyError("no such column")
        self.save({"model": self.model})


class GapOther(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"x": 1})


def _sweep():
    flows = pipeflow.WorkflowMulti(GapFit, {"model": ["ols", "gbm", "bad"]})
    with pytest.raises(TaskFailedError):
        flows.run()
    pipeflow.run(GapOther())  # not in the flows: never in their history
    return flows


def test_workflow_multi_history_lists_the_attempts_of_its_flows():
    flows = _sweep()
    table = flows.history()
    shown = set(table["task"])
    assert shown == {"GapPrep()", "GapFit(model='ols')", "GapFit(model='gbm')",
                     "GapFit(model='bad')"}
    assert list(table["task"]).count("GapPrep()") == 1  # shared by the flows: once
    # the same compact table a Workflow's history is
    assert list(table.columns) == list(pipeflow.Workflow(GapFit).history().columns)


def test_workflow_multi_history_of_one_flow_with_filters_and_full():
    flows = _sweep()
    mine = flows.history(flow="model=bad")
    assert set(mine["task"]) == {"GapPrep()", "GapFit(model='bad')"}
    failed = flows.history(status="failed")
    assert list(failed["task"]) == ["GapFit(model='bad')"]
    assert "KeyError" in failed["error"].iloc[0]
    full = flows.history(status="failed", full=True)
    assert "traceback" in full.columns and "no such column" in full["traceback"].iloc[0]
    assert len(flows.history(last=2)) == 2
    assert set(flows.history(GapPrep)["task"]) == {"GapPrep()"}
    with pytest.raises(ParameterError, match="no flow named"):
        flows.history(flow="model=xgb")


def test_workflow_multi_history_has_a_docstring():
    doc = pipeflow.WorkflowMulti.history.__doc__ or ""
    assert "full" in doc and "flow" in doc


# -- 3. last_error / last_run / history(tasks=) given a class -------------------------------------

@pytest.mark.parametrize("call", ["last_error", "last_run"])
def test_last_error_of_a_class_suggests_an_instance(call):
    _sweep()
    with pytest.raises(ParameterError) as caught:
        getattr(pipeflow, call)(GapFit)
    message = str(caught.value)
    assert "GapFit()" in message
    assert "[<class" not in message and "tasks must be" not in message
    assert call in message


@pytest.mark.parametrize("call", ["last_error", "last_run"])
def test_last_error_of_something_else_says_what_it_needs(call):
    with pytest.raises(ParameterError) as caught:
        getattr(pipeflow, call)("GapFit")
    message = str(caught.value)
    assert "'GapFit'" in message and "task instance" in message
    assert "[" not in message.split(":")[0]


def test_history_tasks_given_classes_suggests_instances_or_family():
    _sweep()
    with pytest.raises(ParameterError) as caught:
        pipeflow.history(tasks=[GapFit])
    message = str(caught.value)
    assert "GapFit()" in message and "family=" in message
    assert "<class" not in message


def test_history_tasks_accepts_one_task_instance():
    _sweep()
    table = pipeflow.history(tasks=GapFit(model="bad"))
    assert list(table["task"]) == ["GapFit(model='bad')"]
    with pytest.raises(ParameterError, match="task instance"):
        pipeflow.history(tasks=42)


# -- 4. a background run's summary stays with its bar in the cell that started it ---------------

WAIT = """\
import time
import pipeflow
class Wait(pipeflow.tasks.TaskPickle):
    n = pipeflow.IntParameter(default=0)
    def run(self):
        time.sleep(1.5)
        self.save(self.n)
"""

SUMMARY = "pipeflow execution summary"


@pytest.fixture(scope="module")
def background(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("background_summary")
    return run_cells(tmp, [
        WAIT,
        "handle = pipeflow.Workflow(Wait).start()",                      # 1: cell A
        "print('working'); time.sleep(3); print('done waiting')",       # 2: cell B
        "quiet = pipeflow.Workflow(Wait, {'n': 1}).start(progress=False)",  # 3
        "print('busy'); time.sleep(3); print('still here')",            # 4
        "idle = pipeflow.Workflow(Wait).start()",                        # 5: nothing to run
        "print('next'); time.sleep(1)",                                  # 6
        "print(handle.result().summary() is not None)",                  # 7
    ])


def _all_text(cell: dict) -> str:
    html = "\n".join(str(o["data"].get("text/html", "")) for o in cell["outputs"]
                     if o["output_type"] in ("display_data", "execute_result"))
    return texts(cell) + "\n" + html


def test_a_background_runs_summary_is_in_the_cell_that_started_it(background):
    cell_a, cell_b = background[1], background[2]
    assert SUMMARY in _all_text(cell_a)
    assert "Wait(n=0) in" in _all_text(cell_a)  # the task that ran, as the summary lists it
    assert SUMMARY not in _all_text(cell_b)
    assert "working" in _all_text(cell_b) and "done waiting" in _all_text(cell_b)
    # still one bar in cell A, ending green
    assert len(bars(cell_a)) == 1
    assert 'data-state="success"' in bars(cell_a)[0]["data"]["text/html"]


def test_without_a_bar_the_summary_is_still_in_the_starting_cell(background):
    assert SUMMARY in _all_text(background[3])
    assert "Wait(n=1) in" in _all_text(background[3])
    assert SUMMARY not in _all_text(background[4])


def test_a_background_run_with_nothing_to_do_says_so_in_its_cell(background):
    assert SUMMARY in _all_text(background[5])
    assert SUMMARY not in _all_text(background[6])
    assert SUMMARY not in _all_text(background[7])


def test_outside_a_notebook_a_background_run_prints_its_summary(capsys):
    handle = pipeflow.Workflow(GapOther).start(execution_summary=True)
    assert handle.result()
    assert SUMMARY in capsys.readouterr().out


class GapNews(pipeflow.tasks.TaskJson):
    def run(self):
        raise ConnectionError("feed down")


class GapPrices(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"p": 1})


class GapReport(pipeflow.tasks.TaskJson):
    def requires(self):
        return {"prices": GapPrices(), "news": pipeflow.optional(GapNews())}

    def run(self):
        self.save({"ok": True})


def test_a_failed_optional_input_does_not_say_the_run_did_not_finish(data_dir):
    # the report finished without its optional news feed: the error said "so the run did
    # not finish" next to a summary listing the report as ran successfully
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(GapReport(), execution_summary=False)
    message = str(info.value)
    assert message.startswith("1 task(s) failed, though the tasks asked for finished (they "
                              "needed it only as an optional input):\n    GapNews(): "
                              "ConnectionError: feed down"), message
    assert GapReport().complete()
