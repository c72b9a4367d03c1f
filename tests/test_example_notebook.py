"""The example project's notebook, executed in a real Jupyter kernel, and its chart.

``example_project/pipeline.ipynb`` is executed with nbclient in a real IPython kernel (this
interpreter, listening on 127.0.0.1 only), in a copy of the example project under tmp_path,
and what each cell shows is checked. Cells are found by a tag in their metadata (Jupyter:
View > Cell toolbar > Tags), never by position: to check one more thing about a cell, add
one line to ``CHECKS``: ``"tag": checker``, where ``checker(cell)`` gets the executed cell
(use ``text(cell)``, ``html(cell)``, ``error(cell)``) and asserts.

The committed notebook must have no outputs (they are made here, not stored in git).
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import os
import pathlib
import re
import shutil
import sys
from collections.abc import Callable

import matplotlib  # noqa: F401
import nbformat
import pandas as pd
import pytest
import sklearn  # noqa: F401 - the notebook's; installed by the test command: fails, not skips
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.util import run_sync

import pipeflow.errors

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example_project"
NOTEBOOK = EXAMPLE / "pipeline.ipynb"
MODELS = ["ols", "ridge", "knn", "rf", "gbm"]


# -- the chart ----------------------------------------------------------------------------------

def load_chart():
    spec = importlib.util.spec_from_file_location("example_chart", EXAMPLE / "chart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results_table(scores: dict[tuple[str, bool], float], metric: str = "r2") -> pd.DataFrame:
    """A table shaped like ``flows.results(TaskEvaluate)``: a row per flow."""
    rows = [{"model": m, "do_preprocess": p, metric: v} for (m, p), v in scores.items()]
    index = [f"model={r['model']},do_preprocess={r['do_preprocess']}" for r in rows]
    return pd.DataFrame(rows, index=pd.Index(index, name="flow"))


# the shape of the example's results: four models within a few hundredths, one far below
CLUSTER_AND_OUTLIER = {("ridge", True): 0.4859, ("ridge", False): 0.4837,
                       ("rf", True): 0.4847, ("rf", False): 0.4855,
                       ("ols", True): 0.4849, ("ols", False): 0.4849,
                       ("gbm", True): 0.4577, ("gbm", False): 0.4601,
                       ("knn", True): 0.4500, ("knn", False): 0.3088}
# every score within 0.005: on a 0..1 axis nothing would differ
ALL_CLOSE = {("ols", True): 0.481, ("ols", False): 0.481, ("ridge", True): 0.483,
             ("ridge", False): 0.482, ("rf", True): 0.486, ("rf", False): 0.485}
# a model worse than predicting the mean (negative R²): the axis crosses 0
NEGATIVE = {("ols", True): 0.48, ("ols", False): 0.47, ("knn", True): 0.1,
            ("knn", False): -0.2}


@pytest.mark.parametrize("scores", [CLUSTER_AND_OUTLIER, ALL_CLOSE, NEGATIVE],
                         ids=["cluster-and-outlier", "all-close", "negative"])
def test_chart_axis_spans_the_results_so_their_differences_show(scores):
    chart = load_chart()
    table = results_table(scores)
    fig = chart.comparison_figure(table)
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    values = table["r2"]
    assert low < values.min() and values.max() < high, "every score is on the chart"
    spread = values.max() - values.min()
    # the results fill most of the axis: any difference between two flows is drawn at
    # least 3/4 of its share of their spread (a 0..1 axis drew the example's at 1/3)
    assert spread >= 0.75 * (high - low), (low, high, spread)
    label = ax.get_xlabel()
    if low > 0:
        assert "does not start at 0" in label, label
    else:
        assert "does not start at 0" not in label, label
    # the exact values are written on the chart, and each model has its row, best on top
    texts = {t.get_text() for t in ax.texts}
    assert {f"{v:.3f}" for v in values} <= texts
    best = table.groupby("model")["r2"].max().sort_values()
    assert [t.get_text() for t in ax.get_yticklabels()] == list(best.index)  # bottom to top


def test_chart_of_identical_scores_and_of_an_error_metric():
    chart = load_chart()
    same = chart.comparison_figure(results_table({("ols", True): 0.5, ("ols", False): 0.5}))
    low, high = same.axes[0].get_xlim()
    assert low < 0.5 < high
    rmse = results_table({("ols", True): 53.3, ("ols", False): 53.4, ("knn", True): 55.1,
                          ("knn", False): 61.8}, metric="rmse")
    ax = chart.comparison_figure(rmse, metric="rmse").axes[0]
    assert "lower is better" in ax.get_xlabel()
    # lower is better: the best (lowest) model is the top row
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "ols"


def test_save_chart_writes_a_png(tmp_path):
    chart = load_chart()
    path = chart.save_chart(results_table(CLUSTER_AND_OUTLIER), tmp_path / "out" / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the committed notebook ---------------------------------------------------------------------

def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def name_of(cell) -> str:
    """A code cell's name: its one tag other than ``raises-exception``."""
    names = [t for t in cell.metadata.get("tags", []) if t != "raises-exception"]
    assert len(names) == 1, f"a code cell needs exactly one name tag, has {names}:\n{cell.source}"
    return names[0]


def test_committed_notebook_is_valid_and_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    for cell in code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, (
            f"cell {name_of(cell)!r} has outputs: strip them before committing "
            f"(jupyter nbconvert --clear-output --inplace {NOTEBOOK.relative_to(ROOT)})")
        assert "execution" not in cell.metadata  # timings some front ends store
    names = [name_of(cell) for cell in code_cells(nb)]
    assert len(names) == len(set(names)), names
    # the file as git keeps it: nbformat's own layout, so an edit in Jupyter makes a small diff
    assert NOTEBOOK.read_text(encoding="utf-8") == nbformat.writes(nb) + "\n", (
        "save the notebook with Jupyter (or nbformat.write): its layout keeps diffs small")


# -- executing it in a real kernel --------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def text(cell) -> str:
    """Everything a cell shows as text: streams, text/plain, text/html, errors (no colours)."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts += [out.data.get("text/plain", ""), out.data.get("text/html", "")]
        elif out.output_type == "error":
            parts += [f"{out.ename}: {out.evalue}", *out.traceback]
    return ANSI.sub("", "\n".join(parts))


def errors(cell) -> list:
    return [out for out in cell.outputs if out.output_type == "error"]


def mime_types(cell) -> set[str]:
    return {mime for out in cell.outputs if out.output_type in ("execute_result", "display_data")
            for mime in out.data}


def exception_class(name: str) -> type[BaseException]:
    """The class an error output's ``ename`` names: a pipeflow error or a builtin one."""
    cls = getattr(pipeflow.errors, name, None) or getattr(builtins, name, None)
    assert isinstance(cls, type) and issubclass(cls, BaseException), f"unknown exception {name}"
    return cls


Check = Callable[[object], None]


def shows(*parts: str) -> Check:
    """The cell shows every one of ``parts`` (case-insensitive)."""
    def check(cell):
        shown = text(cell).lower()
        missing = [p for p in parts if p.lower() not in shown]
        assert not missing, f"{missing} not shown; the cell shows:\n{text(cell)}"
    return check


def shows_one_of(*parts: str) -> Check:
    def check(cell):
        shown = text(cell).lower()
        assert any(p.lower() in shown for p in parts), f"none of {parts} in:\n{text(cell)}"
    return check


def lacks(*parts: str) -> Check:
    def check(cell):
        shown = text(cell).lower()
        present = [p for p in parts if p.lower() in shown]
        assert not present, f"{present} shown; the cell shows:\n{text(cell)}"
    return check


def displays(mime: str) -> Check:
    def check(cell):
        assert mime in mime_types(cell), f"no {mime} output, only {mime_types(cell)}"
    return check


def raised(base: type[BaseException], *parts: str) -> Check:
    """The cell ended with an exception of class ``base`` (or a subclass) mentioning ``parts``."""
    def check(cell):
        found = errors(cell)
        assert len(found) == 1, f"expected one error, got {len(found)}:\n{text(cell)}"
        assert issubclass(exception_class(found[0].ename), base), found[0].ename
        message = f"{found[0].ename}: {found[0].evalue}"
        missing = [p for p in parts if p not in message]
        assert not missing, f"{missing} not in the error {message!r}"
    return check


def all_of(*checks: Check) -> Check:
    def check(cell):
        for one in checks:
            one(cell)
    return check


def a_row_per_flow(cell) -> None:
    shows(*[f"model={m},do_preprocess={p}" for m in MODELS for p in (True, False)])(cell)


#: what each code cell of the notebook must show, by its name tag. One line per cell: every
#: code cell has an entry, and a cell not tagged ``raises-exception`` must not raise.
def bar(state: str | None) -> Check:
    """The run's progress bar ended in ``state`` (None: the cell drew no bar)."""
    def check(cell):
        states = re.findall(r'data-state="([a-z]+)"', "\n".join(
            out.data.get("text/html", "") for out in cell.outputs
            if out.output_type in ("execute_result", "display_data")))
        if state is None:
            assert not states, f"a progress bar was drawn: {states}"
        else:
            assert states and states[-1] == state, f"the bar ended {states}, not {state}"
    return check


def stdout_of(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream"
                   and o.name == "stdout")


def html_once(cell) -> None:
    """The cell draws one HTML display besides the progress bar, and prints no text tree."""
    shown = [o for o in cell.outputs if o.output_type in ("execute_result", "display_data")
             and "data-state=" not in o.data.get("text/html", "")]
    assert len(shown) == 1 and "text/html" in shown[0].data, [o.output_type for o in shown]
    assert "└─--" not in stdout_of(cell), stdout_of(cell)


def short_traceback(most: int, *parts: str) -> Check:
    """The error shows at most ``most`` lines, ``parts`` among them, and no pipeflow frame."""
    def check(cell):
        (error,) = errors(cell)
        lines = ANSI.sub("", "\n".join(error.traceback)).splitlines()
        assert len(lines) <= most, "\n".join(lines)
        shown = "\n".join(lines)
        assert not re.search(r"pipeflow[/\\](engines|operations|workflow)", shown), shown
        missing = [p for p in parts if p not in shown]
        assert not missing, f"{missing} not in:\n{shown}"
    return check


def compact_history(cell) -> None:
    """The history shows as an HTML table of at most 12 columns, no NaN/NaT/None cells."""
    html = next(o.data["text/html"] for o in cell.outputs
                if o.output_type == "execute_result")
    header = re.search(r"<thead>.*?</thead>", html, re.S)
    assert header is not None, html[:500]
    columns = re.findall(r"<th[^>]*>([^<]*)</th>", header.group(0))
    assert 5 <= len([c for c in columns if c]) <= 12, columns
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", html)
    assert cells and not {"NaN", "NaT", "None", "<NA>"} & set(cells), cells


def svg_dag(cell) -> None:
    """The sweep's picture: one inline SVG with the grouped tasks, coloured by status."""
    html = "".join(o.data.get("text/html", "") for o in cell.outputs
                   if o.output_type in ("execute_result", "display_data"))
    assert html.count("<svg") == 1, html[:300]
    assert "TaskTrain × 10" in html and "TaskEvaluate × 10" in html, html[:2000]


CHECKS: dict[str, Check] = {
    "setup": shows("task outputs go to"),
    "preview": all_of(shows("TaskEvaluate", "TaskGetData", "PENDING"), html_once, bar(None)),
    "run": all_of(shows("success", "TaskGetData", "TaskEvaluate"), lacks("failed"),
                  bar("success"), lacks("<RunResult")),
    "outputs": shows("LinearRegression", "test R²"),
    "rerun": all_of(lacks("ran successfully"), shows_one_of("already done", "up to date"),
                    bar(None), lacks("0task", "<RunResult")),
    "param-preview": all_of(shows("model': 'ridge'", "PENDING", "COMPLETE"), html_once),
    "param-run": all_of(shows("2 ran successfully", "success"), lacks("failed"),
                        bar("success")),
    "sweep": all_of(shows("success"), lacks("failed", "<RunResult"), bar("success")),
    "results": all_of(a_row_per_flow, displays("text/html")),
    "dag": all_of(displays("text/html"), svg_dag),
    "chart": displays("image/png"),
    "history": all_of(shows("TaskEvaluate", "TaskTrain"), compact_history),
    "fail": all_of(raised(pipeflow.errors.TaskFailedError, "TaskResiduals", "model='ridge'",
                          "KeyError", "validation"),
                   short_traceback(20, 'inputs["data"]["validation"]', "KeyError",
                                   "pipeflow.full_traceback()"),
                   bar("failed")),
    "last-error": all_of(shows("KeyError", "validation", "Traceback"), lacks("{'run_id'"),
                         displays("text/html")),
    "fix": all_of(shows("TaskWorstPredicted", "success"), lacks("failed")),
    "cancel": all_of(raised(pipeflow.errors.RunInterrupted, "TaskSearch() did not finish",
                            "partial outputs were removed"),
                     short_traceback(1), bar("cancelled")),
    "after-cancel": shows("TaskSearch", "PENDING"),
    "redefine": all_of(shows("TaskWorstPredicted", "TaskResiduals", "STALE", "code changed"),
                       html_once),
}


#: seconds: a cell (the sweep fits 10 models) and the kernel's start, on a slow, busy machine
CELL_TIMEOUT = 240
STARTUP_TIMEOUT = 180


def execute_notebook(project: pathlib.Path, kernels: pathlib.Path, env: dict) -> object:
    """Execute ``project/pipeline.ipynb`` in a kernel running this interpreter; shut it down."""
    # not named python3: jupyter_client would import ipykernel into this process for that name
    spec = kernels / "pipeflow-tests"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (the tests' interpreter)", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    km = AsyncKernelManager(kernel_name="pipeflow-tests", kernel_spec_manager=specs, ip="127.0.0.1",
                            transport="tcp", connection_file=str(kernels / "connection.json"))
    nb = nbformat.read(project / "pipeline.ipynb", as_version=4)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, startup_timeout=STARTUP_TIMEOUT,
                            allow_errors=True, resources={"metadata": {"path": str(project)}},
                            extra_arguments=["--HistoryManager.hist_file=:memory:"])
    try:
        client.execute(cleanup_kc=True, env=env)  # cleanup_kc: nbclient shuts the kernel down
    finally:
        if km.has_kernel:  # nbclient failed before it could
            run_sync(km.shutdown_kernel)(now=True)
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook executed in a copy of the example project: {name tag: executed cell}."""
    base = tmp_path_factory.mktemp("notebook")
    project = base / "example_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(
        "data", "output", "__pycache__", ".ipynb_checkpoints"))
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    pythonpath = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]  # this pipeflow
    env = {**os.environ,
           "PIPEFLOW_EXAMPLE_DIR": str(base / "data"),
           "PIPEFLOW_EXAMPLE_OUTPUT": str(base / "output"),
           "IPYTHONDIR": str(base / "ipython"),
           "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join(pythonpath)}
    imported = "ipykernel" in sys.modules
    nb = execute_notebook(project, base / "kernels", env)
    assert imported or "ipykernel" not in sys.modules, "executing it imported ipykernel here"
    after = sorted(p.relative_to(project) for p in project.rglob("*"))
    assert after == before, "the notebook wrote next to itself, not in its data dir"
    return {"data": base / "data", "cells": {name_of(c): c for c in code_cells(nb)}}


@pytest.mark.slow
def test_notebook_runs_with_every_cell_checked(executed):
    cells = executed["cells"]
    assert set(CHECKS) == set(cells), "each code cell needs an entry in CHECKS, and only them"
    unexpected = {name: text(cell) for name, cell in cells.items()
                  if errors(cell) and "raises-exception" not in cell.metadata.get("tags", [])}
    assert not unexpected, f"cells that raised:\n{unexpected}"
    # its task outputs went to the data dir it was given
    assert list(executed["data"].rglob("*.parquet")) and list(executed["data"].rglob("*.json"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_cell_shows(executed, name):
    CHECKS[name](executed["cells"][name])
