"""Redefining a task class in a later notebook cell (issue 12, item 2).

A notebook is simulated by executing code strings ("cells") one after another in one module
namespace registered as ``__main__`` (IPython runs cells in ``__main__`` too); one test runs
the same cells in a real Jupyter kernel.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import types

import pytest

import pipeflow
from pipeflow.errors import PipeflowError, RedefinitionError

HEADER = """
import pandas as pd
import pipeflow as d6tflow
"""

GET_DATA = """
class GetData(d6tflow.tasks.TaskPqPandas):
    def run(self):
        self.save(pd.DataFrame({"x": [1, 2, 3]}))
"""

GET_DATA_V2 = """
class GetData(d6tflow.tasks.TaskPqPandas):
    def run(self):
        self.save(pd.DataFrame({"x": [10, 20, 30]}))
"""

TRAIN = """
@d6tflow.requires(GetData)
class Train(d6tflow.tasks.TaskJson):
    def run(self):
        self.save({"total": int(self.inputLoad()["x"].sum())})
"""


class Notebook:
    """Cells executed one after another in one ``__main__`` namespace."""

    def __init__(self, name: str = "__main__"):
        self.module = types.ModuleType(name)
        self.ns = self.module.__dict__
        self.count = 0

    def run(self, code: str) -> None:
        # each cell its own code file name, as IPython gives them
        self.count += 1
        exec(compile(textwrap.dedent(code), f"<cell-{self.count}>", "exec"), self.ns)

    def __getitem__(self, name: str):
        return self.ns[name]


@pytest.fixture
def nb(monkeypatch):
    book = Notebook()
    monkeypatch.setitem(sys.modules, "__main__", book.module)
    book.run(HEADER)
    return book


def _statuses(preview) -> dict[str, str]:
    return {row.task.task_family: str(row.status) for row in preview.rows if not row.reference}


def _started(result) -> list[str]:
    return sorted(r.task.task_family for r in result.by_state("completed"))


@pytest.fixture
def ran(nb):
    """GetData, Train and a flow of Train, run once; GetData then redefined."""
    nb.run(GET_DATA)
    nb.run(TRAIN)
    nb.run("flow = d6tflow.Workflow(Train)")
    nb["flow"].run()
    assert nb["flow"].outputLoad() == {"total": 6}
    return nb


# -- the bug: dependents bound to the old class ------------------------------------------------

def test_preview_after_redefinition_shows_the_upstream_task_stale(ran):
    ran.run(GET_DATA_V2)
    flow = ran["flow"]
    got = _statuses(flow.preview(print_it=False))
    assert got["GetData"] == "STALE"
    assert got["Train"] != "COMPLETE"
    # the same answer whichever way the task is named
    assert _statuses(flow.preview(ran["Train"], print_it=False)) == got


def test_run_after_redefinition_runs_the_new_code_and_its_dependents(ran):
    ran.run(GET_DATA_V2)
    flow = ran["flow"]
    result = flow.run()
    assert _started(result) == ["GetData", "Train"]
    assert flow.outputLoad() == {"total": 60}
    assert list(flow.outputLoad(ran["GetData"])["x"]) == [10, 20, 30]
    assert set(_statuses(flow.preview(print_it=False)).values()) == {"COMPLETE"}
    assert _started(flow.run()) == []


def test_the_preview_reason_names_the_code_change(ran):
    ran.run(GET_DATA_V2)
    rows = {r.task.task_family: r for r in ran["flow"].preview(print_it=False).rows}
    assert "code changed" in (rows["GetData"].reason or "")
    assert "GetData.run" in (rows["GetData"].reason or "")


def test_a_redefinition_with_the_same_code_changes_nothing(ran):
    ran.run(GET_DATA)  # the cell re-run unchanged
    flow = ran["flow"]
    assert set(_statuses(flow.preview(print_it=False)).values()) == {"COMPLETE"}
    assert _started(flow.run()) == []


def test_a_redefined_root_class_is_used_by_an_existing_flow(ran):
    ran.run("""
    @d6tflow.requires(GetData)
    class Train(d6tflow.tasks.TaskJson):
        def run(self):
            self.save({"total": int(self.inputLoad()["x"].sum()) * 2})
    """)
    flow = ran["flow"]
    assert _statuses(flow.preview(print_it=False))["Train"] == "STALE"
    assert _started(flow.run()) == ["Train"]
    assert flow.outputLoad() == {"total": 12}


def test_run_of_an_instance_made_before_the_redefinition(ran):
    ran.run("train = Train()")
    ran.run(GET_DATA_V2)
    result = pipeflow.run(ran["train"])
    assert _started(result) == ["GetData", "Train"]
    assert ran["flow"].outputLoad() == {"total": 60}


def test_run_of_an_instance_of_a_class_redefined_since(ran):
    ran.run("old_getdata = GetData()")
    ran.run(GET_DATA_V2)
    pipeflow.run(ran["old_getdata"])
    assert list(ran["flow"].outputLoad(ran["GetData"])["x"]) == [10, 20, 30]


def test_inputs_load_the_new_format_when_the_class_changed_format(ran):
    ran.run("""
    class GetData(d6tflow.tasks.TaskCSVPandas):
        def run(self):
            self.save(pd.DataFrame({"x": [5, 5]}))
    """)
    flow = ran["flow"]
    assert _started(flow.run()) == ["GetData", "Train"]
    assert flow.outputLoad() == {"total": 10}
    assert str(flow.outputPath(ran["GetData"])).endswith(".csv")
    # Train's own view of its input is the new class's output
    assert str(ran["Train"]().input().path).endswith(".csv")


def test_reset_and_output_load_of_the_redefined_class(ran, stored):
    ran.run(GET_DATA_V2)
    flow = ran["flow"]
    flow.run()
    flow.reset(ran["GetData"])
    got = _statuses(flow.preview(print_it=False))
    assert got["GetData"] == "PENDING"
    flow.run()
    assert list(flow.outputLoad(ran["GetData"])["x"]) == [10, 20, 30]


#: GetData with a parameter (n) its dependents inherit
GET_DATA_N = """
class GetData(d6tflow.tasks.TaskPqPandas):
    n = d6tflow.IntParameter(default=1)
    def run(self):
        self.save(pd.DataFrame({"x": [self.n]}))
"""


def test_workflow_multi_uses_the_new_class(nb):
    nb.run(GET_DATA_N)
    nb.run(TRAIN)
    nb.run("flows = d6tflow.WorkflowMulti(Train, {'n': [1, 2]})")
    flows = nb["flows"]
    flows.run()
    assert flows.outputLoad() == {"n=1": {"total": 1}, "n=2": {"total": 2}}
    nb.run("""
    class GetData(d6tflow.tasks.TaskPqPandas):
        n = d6tflow.IntParameter(default=1)
        def run(self):
            self.save(pd.DataFrame({"x": [self.n * 100]}))
    """)
    flows.run()
    assert flows.outputLoad() == {"n=1": {"total": 100}, "n=2": {"total": 200}}


# -- parameters that no longer fit: say which cell to re-run -----------------------------------

def _files(root):
    return sorted((p.relative_to(root).as_posix(), p.stat().st_mtime_ns)
                  for p in root.rglob("*") if p.is_file() and ".pipeflow" not in p.parts)


@pytest.mark.parametrize("new_cell, why", [
    ("""
    class GetData(d6tflow.tasks.TaskPqPandas):
        n = d6tflow.IntParameter()
        def run(self):
            self.save(pd.DataFrame({"x": [self.n]}))
    """, "parameter n"),
], ids=["new-required-parameter"])
def test_parameters_that_no_longer_fit_say_which_cell_to_rerun(ran, data_dir, new_cell, why):
    ran.run(new_cell)
    flow = ran["flow"]
    before = _files(data_dir)
    for call in (lambda: flow.preview(print_it=False), flow.run,
                 lambda: pipeflow.run(ran["Train"]())):
        with pytest.raises(RedefinitionError) as info:
            call()
        text = str(info.value)
        assert "GetData" in text and "Train" in text, text
        assert "re-run the cell defining Train" in text, text
        assert why in text, text
    assert _files(data_dir) == before  # nothing ran, nothing was deleted


def test_a_removed_parameter_says_which_cell_to_rerun(nb, data_dir):
    nb.run(GET_DATA_N)
    nb.run(TRAIN)
    nb.run("flow = d6tflow.Workflow(Train)")
    nb["flow"].run()
    nb.run(GET_DATA_V2)  # n is gone
    before = _files(data_dir)
    with pytest.raises(RedefinitionError) as info:
        nb["flow"].run()
    text = str(info.value)
    assert "parameter n" in text and "removed" in text, text
    assert "re-run the cell defining Train" in text, text
    assert "Train(n=1)" in text, text
    assert _files(data_dir) == before


def test_a_new_parameter_with_a_default_fits(ran):
    ran.run("""
    class GetData(d6tflow.tasks.TaskPqPandas):
        scale = d6tflow.IntParameter(default=3)
        def run(self):
            self.save(pd.DataFrame({"x": [self.scale]}))
    """)
    flow = ran["flow"]
    assert _started(flow.run()) == ["GetData", "Train"]
    assert flow.outputLoad() == {"total": 3}


def test_a_class_redefined_as_something_else_is_an_error(ran, data_dir):
    ran.run("""
    class GetData:
        pass
    """)
    before = _files(data_dir)
    with pytest.raises(RedefinitionError) as info:
        ran["flow"].preview(print_it=False)
    text = str(info.value)
    assert "GetData" in text and "no longer a task" in text, text
    assert "re-run the cell defining Train" in text, text
    with pytest.raises(RedefinitionError):
        ran["flow"].run()
    assert _files(data_dir) == before


def test_the_error_is_a_pipeflow_error_with_a_short_message(ran):
    ran.run(textwrap.dedent("""
    class GetData(d6tflow.tasks.TaskPqPandas):
        n = d6tflow.IntParameter()
    """))
    with pytest.raises(PipeflowError) as info:
        ran["flow"].run()
    assert len(str(info.value).splitlines()) <= 4


# -- what is not a redefinition ------------------------------------------------------------------

def test_the_same_name_in_another_module_is_another_class(ran, monkeypatch):
    other = Notebook("other_cells")
    monkeypatch.setitem(sys.modules, "other_cells", other.module)
    other.run(HEADER)
    other.run(GET_DATA_V2)  # a GetData of another module, defined later
    flow = ran["flow"]
    assert set(_statuses(flow.preview(print_it=False)).values()) == {"COMPLETE"}
    assert _started(flow.run()) == []
    assert flow.outputLoad() == {"total": 6}


def test_classes_made_inside_a_function_are_each_their_own(nb):
    nb.run("""
    def make(value):
        class Source(d6tflow.tasks.TaskJson):
            def run(self):
                self.save({"v": value})
        @d6tflow.requires(Source)
        class Use(d6tflow.tasks.TaskJson):
            def run(self):
                self.save(self.inputLoad())
        return Source, Use

    S1, U1 = make(1)
    S2, U2 = make(2)
    """)
    # the two Source classes share a qualname and a family (so a path); they are not
    # redefinitions of each other: each Use keeps its own Source
    assert nb["U1"]().requires().__class__ is nb["S1"]
    pipeflow.run(nb["U1"]())
    assert nb["U1"]().outputLoad() == {"v": 1}
    assert not pipeflow.Workflow(nb["U1"]).preview(print_it=False).plan.to_run


def test_a_reloaded_module_counts_as_a_redefinition(tmp_path, monkeypatch):
    src = tmp_path / "mods"
    src.mkdir()
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (src / "steps_redef.py").write_text(HEADER + textwrap.dedent(GET_DATA))
    (src / "flow_redef.py").write_text(HEADER + "from steps_redef import GetData\n" + TRAIN)
    monkeypatch.delitem(sys.modules, "steps_redef", raising=False)
    monkeypatch.delitem(sys.modules, "flow_redef", raising=False)
    steps = importlib.import_module("steps_redef")
    flow_mod = importlib.import_module("flow_redef")
    flow = pipeflow.Workflow(flow_mod.Train)
    flow.run()
    assert flow.outputLoad() == {"total": 6}
    (src / "steps_redef.py").write_text(HEADER + textwrap.dedent(GET_DATA_V2) + "\n# v2\n")
    importlib.invalidate_caches()
    importlib.reload(steps)
    assert _started(flow.run()) == ["GetData", "Train"]
    assert flow.outputLoad() == {"total": 60}
    # with a parameter that no longer fits: reload the module of the dependent
    (src / "steps_redef.py").write_text(HEADER + textwrap.dedent("""
        class GetData(d6tflow.tasks.TaskPqPandas):
            n = d6tflow.IntParameter()
        """))
    importlib.invalidate_caches()
    importlib.reload(steps)
    with pytest.raises(RedefinitionError) as info:
        flow.run()
    assert "reload the module flow_redef" in str(info.value), str(info.value)


# -- a real Jupyter kernel --------------------------------------------------------------------

@pytest.mark.slow
def test_redefinition_in_a_real_jupyter_kernel(tmp_path, jupyter_kernel):
    import nbformat
    from nbclient import NotebookClient

    data = tmp_path / "nbdata"
    cells = [
        HEADER + f"d6tflow.set_dir({str(data)!r})",
        GET_DATA, TRAIN,
        "flow = d6tflow.Workflow(Train)\nflow.run(progress=False);",
        GET_DATA_V2,
        "p = flow.preview(print_it=False)\n"
        "print('STATUS', sorted((r.task.task_family, str(r.status)) for r in p.rows))",
        "flow.run(progress=False)\nprint('TOTAL', flow.outputLoad())",
        "class GetData(d6tflow.tasks.TaskPqPandas):\n    n = d6tflow.IntParameter()",
        "flow.run(progress=False)",
    ]
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(book, timeout=120, kernel_name=jupyter_kernel, allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    def text(i):
        return "".join(o.get("text", "") for o in book.cells[i].outputs
                       if o.output_type == "stream")

    errors = {i: o for i, c in enumerate(book.cells) for o in c.outputs
              if o.output_type == "error"}
    assert set(errors) == {8}, {i: (o.ename, o.evalue) for i, o in errors.items()}
    assert "('GetData', 'STALE')" in text(5), text(5)
    assert "TOTAL {'total': 60}" in text(6), text(6)
    assert errors[8].ename == "RedefinitionError"
    assert "re-run the cell defining Train" in errors[8].evalue


# -- other ways of requiring ----------------------------------------------------------------------

def test_an_optional_requirement_of_a_redefined_class(nb):
    nb.run("""
    class Extra(d6tflow.tasks.TaskJson):
        def run(self):
            self.save({"v": 1})
    EXTRA = Extra  # a reference kept at definition time, as @requires keeps one

    class Use(d6tflow.tasks.TaskJson):
        def requires(self):
            return {"extra": d6tflow.optional(EXTRA())}
        def run(self):
            self.save(self.inputLoad()["extra"])
    flow = d6tflow.Workflow(Use)
    """)
    nb["flow"].run()
    assert nb["flow"].outputLoad() == {"v": 1}
    nb.run("""
    class Extra(d6tflow.tasks.TaskJson):
        def run(self):
            self.save({"v": 2})
    """)
    # the optional input is the new class's task: stale (code changed); an optional
    # input does not make its complete dependent run again
    rows = {r.task.task_family: r for r in nb["flow"].preview(print_it=False).rows}
    assert str(rows["Extra"].status) == "STALE"
    assert "code changed: Extra.run" in rows["Extra"].reason
    nb["flow"].run(nb["Extra"])
    assert nb["flow"].outputLoad(nb["Extra"]) == {"v": 2}


def test_a_redefined_functional_step(nb):
    nb.run("""
    from pipeflow.functional import Workflow as Functional
    fflow = Functional()

    @fflow.task(d6tflow.tasks.TaskJson)
    def get_data(task):
        task.save({"v": 1})

    @fflow.task(d6tflow.tasks.TaskJson)
    @fflow.requires(get_data)
    def use(task):
        task.save({"v": task.inputLoad()["v"] * 10})
    """)
    fflow = nb["fflow"]
    fflow.run(nb["use"])
    assert fflow.outputLoad(nb["use"]) == {"v": 10}
    nb.run("""
    @fflow.task(d6tflow.tasks.TaskJson)
    def get_data(task):
        task.save({"v": 2})
    """)
    fflow.run(nb["use"])
    assert fflow.outputLoad(nb["use"]) == {"v": 20}


def test_a_module_that_reuses_a_class_name_keeps_both_classes(tmp_path, monkeypatch):
    # d6tflow's own tests do this: one execution of one file is not a redefinition
    src = tmp_path / "mods"
    src.mkdir()
    monkeypatch.syspath_prepend(str(src))
    (src / "reuse_names.py").write_text(HEADER + textwrap.dedent("""
        class Source(d6tflow.tasks.TaskJson):
            def run(self):
                self.save({"v": "first"})

        @d6tflow.requires(Source)
        class Use(d6tflow.tasks.TaskJson):
            def run(self):
                self.save(self.inputLoad())

        class Source(d6tflow.tasks.TaskJson):
            other = d6tflow.IntParameter(default=0)
            def run(self):
                self.save({"v": "second"})
        """))
    monkeypatch.delitem(sys.modules, "reuse_names", raising=False)
    mod = importlib.import_module("reuse_names")
    pipeflow.run(mod.Use())
    assert mod.Use().outputLoad() == {"v": "first"}
