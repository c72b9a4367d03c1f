"""Rich displays (issue 12, item 5): what a person sees in a notebook, shown once.

The HTML is parsed (not matched as text) to check its structure, escaping, colours and that
no secret is in it; one test runs a real Jupyter kernel (nbclient) and checks each cell's
outputs as a notebook stores them.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from html.parser import HTMLParser

import pytest

import pipeflow
from pipeflow.display import rich
from pipeflow.errors import TaskFailedError

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
SECRET = "hunter2-very-secret-token"


# -- a small DOM, enough to check what the HTML is -------------------------------------------

class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str) -> list[Node]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if c.tag == tag:
                    out.append(c)
                out += c.all(tag)
        return out

    def style(self) -> dict[str, str]:
        pairs = [p.split(":", 1) for p in (self.attrs.get("style") or "").split(";") if ":" in p]
        return {k.strip(): v.strip() for k, v in pairs}


class _Parser(HTMLParser):
    VOID = {"br", "img", "hr", "meta", "input"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("root", {}, None)
        self.at = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.at)
        self.at.children.append(node)
        if tag not in self.VOID:
            self.at = node

    def handle_endtag(self, tag):
        assert self.at.tag == tag, f"</{tag}> closes <{self.at.tag}>: the HTML is not well formed"
        self.at = self.at.parent

    def handle_data(self, data):
        self.at.children.append(data)


def parse(markup: str) -> Node:
    p = _Parser()
    p.feed(markup)
    p.close()
    assert p.at is p.root, "an element is not closed"
    return p.root


def rows(doc: Node) -> list[list[Node]]:
    return [tr.all("td") for tr in doc.all("tbody")[0].all("tr")]


def column(doc: Node, title: str) -> list[str]:
    """The texts of one column of the (first) table, by its title."""
    at = [th.text() for th in doc.all("th")].index(title)
    return [r[at].text() for r in rows(doc)]


def badge_colors(doc: Node) -> dict[str, str]:
    """text -> background colour of every coloured label."""
    return {n.text(): n.style()["background"] for n in doc.all("span")
            if "background" in n.style()}


# -- the tasks ----------------------------------------------------------------------------------

class GetData(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"x": 1})


@pipeflow.requires(GetData)
class Train(pipeflow.tasks.TaskJson):
    alpha = pipeflow.FloatParameter(default=1.0)
    label = pipeflow.Parameter(default="plain")
    token = pipeflow.SecretParameter(default="")

    def run(self):
        self.save({"m": self.inputLoad()["x"] * self.alpha})


@pipeflow.requires(GetData)
class Broken(pipeflow.tasks.TaskJson):
    def run(self):
        raise KeyError("missing column 'price'")


@pipeflow.requires(Broken)
class AfterBroken(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({})


# -- preview -------------------------------------------------------------------------------------

def test_preview_html_is_a_table_of_task_status_and_reason_with_a_count_line():
    flow = pipeflow.Workflow(Train, {"alpha": 0.5})
    pipeflow.run(GetData())
    p = flow.preview(print_it=False)
    doc = parse(p._repr_html_())
    assert [th.text() for th in doc.all("th")] == ["task", "status", "why"]
    table = rows(doc)
    assert len(table) == len(p.rows) == 2
    assert "Train" in table[0][0].text() and "alpha=0.5" in table[0][0].text()
    assert "GetData" in table[1][0].text()
    assert [r[1].text() for r in table] == ["PENDING", "COMPLETE"]
    colors = badge_colors(doc)
    assert colors["PENDING"] != colors["COMPLETE"]
    # the child row is indented under its parent
    pad = [float(r[0].all("span")[0].style()["padding-left"].rstrip("em")) for r in table]
    assert pad[1] > pad[0]
    assert doc.all("div")[-1].text() == p.summary() == "2 tasks: 1 complete, 0 stale, 1 pending"
    assert not doc.all("pre")  # not the text tree in a <pre>


def test_preview_html_gives_the_stale_reason(data_dir):
    pipeflow.run(Train())
    # change GetData's output behind pipeflow's back: it and Train are stale
    path = GetData().output().path
    path.write_text(json.dumps({"x": 2}))
    p = pipeflow.preview(Train(), print_it=False)
    table = rows(parse(p._repr_html_()))
    assert [r[1].text() for r in table] == [str(r.status) for r in p.rows] == ["STALE"] * 2
    assert [r[2].text() for r in table] == [r.reason for r in p.rows]
    assert "changed outside pipeflow" in table[1][2].text()
    assert table[0][2].text() == "upstream GetData() is out of date"


def test_preview_html_colours_each_status():
    class Done(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({})

    pipeflow.run([Done(), GetData()])
    pipeflow.settings.check_dependencies = True
    GetData().output().path.write_text("{}")  # STALE: changed outside pipeflow
    doc = parse(pipeflow.preview([Train(), Done()], print_it=False)._repr_html_())
    colors = {s: c for s, c in badge_colors(doc).items() if s in rich.STATUS_COLORS}
    assert colors == rich.STATUS_COLORS
    assert len(set(colors.values())) == 3


def test_preview_html_escapes_hostile_values_and_hides_secrets():
    task = Train(label=HOSTILE, token=SECRET)
    markup = pipeflow.preview(task, print_it=False)._repr_html_()
    doc = parse(markup)
    assert not doc.all("script") and not doc.all("img")
    assert HOSTILE in rows(doc)[0][0].text()  # shown as text, as written
    assert SECRET not in markup


def test_a_shared_task_is_one_row_and_then_see_above():
    class A(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({})

    @pipeflow.requires(A)
    class B(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({})

    @pipeflow.requires(A, B)
    class C(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({})

    p = pipeflow.preview(C(), print_it=False)
    table = rows(parse(p._repr_html_()))
    assert [r[1].text() for r in table].count("see above") == 1
    assert p.summary().startswith("3 tasks")


def test_a_huge_preview_draws_at_most_max_rows_and_counts_the_rest(monkeypatch):
    monkeypatch.setattr(rich, "MAX_ROWS", 2)
    p = pipeflow.preview(Train(), print_it=False)
    p.rows = p.rows * 3  # 6 rows
    doc = parse(p._repr_html_())
    assert len(rows(doc)) == 2
    assert "4 more rows not shown" in doc.all("div")[-1].text()


def test_the_text_tree_is_unchanged_outside_a_notebook(capsys):
    p = pipeflow.Workflow(Train, {"alpha": 0.5}).preview()
    out = capsys.readouterr().out
    assert out.splitlines() == ["└─--[Train-{'alpha': '0.5', 'label': 'plain'} (PENDING)]",
                                "   └─--[GetData-{} (PENDING)]"]
    assert str(p) == p.summary()  # print(flow.preview()) draws the tree once
    assert not rich.draws_html()


# -- RunResult -------------------------------------------------------------------------------

def test_run_result_text_says_how_it_ended_in_words():
    ok = pipeflow.run(Train())
    assert repr(ok) == "<RunResult success: 2 ran>"
    again = pipeflow.run(Train())
    assert repr(again) == "<RunResult success: 1 already done>"
    bad = pipeflow.run(AfterBroken(), abort=False)
    assert repr(bad) == "<RunResult failed: 1 already done, 1 failed, 1 not run (upstream failed)>"


def test_run_result_html_counts_states_in_colour_and_lists_failures():
    bad = pipeflow.run([AfterBroken(), Train()], abort=False)
    doc = parse(bad._repr_html_())
    colors = badge_colors(doc)
    assert colors["failed"] == rich.VERDICT_COLORS["failed"]
    assert colors["2 ran"] == rich.STATE_COLORS[pipeflow.events.TaskState.COMPLETED]
    assert colors["1 failed"] == rich.STATE_COLORS[pipeflow.events.TaskState.FAILED]
    assert len(set(colors.values())) >= 3
    head = doc.all("div")[1].text()
    assert re.search(r" in \d+\.\d\ds$", head)  # the duration
    table = rows(doc)
    assert [r[0].text() for r in table] == ["Broken()", "AfterBroken()"]
    assert table[0][2].text() == "KeyError: \"missing column 'price'\""
    assert "failed" in table[1][2].text() or table[1][1].text() == "not run (upstream failed)"


def test_run_result_html_of_a_success_has_no_failure_table_and_escapes():
    ok = pipeflow.run(Train(label=HOSTILE, token=SECRET))
    markup = ok._repr_html_()
    doc = parse(markup)
    assert not doc.all("table") and not doc.all("script")
    assert badge_colors(doc)["success"] == rich.VERDICT_COLORS["success"]
    assert SECRET not in markup


def test_a_failed_error_line_with_hostile_text_is_escaped():
    class Hostile(pipeflow.tasks.TaskJson):
        def run(self):
            raise ValueError(HOSTILE)

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Hostile())
    doc = parse(info.value.result._repr_html_())
    assert not doc.all("script") and not doc.all("img")
    assert HOSTILE in rows(doc)[0][2].text()


# -- WorkflowMulti ---------------------------------------------------------------------------

def _multi():
    return pipeflow.WorkflowMulti(Train, {"alpha": [0.1, 0.2], "token": [SECRET]})


def test_multi_preview_is_a_dict_of_previews_shown_as_one_table(capsys):
    m = _multi()
    previews = m.preview()
    out = capsys.readouterr().out
    assert out.count("PENDING") == 4  # the text trees, d6tflow style, outside a notebook
    assert [line for line in out.splitlines() if line.startswith("flow ")] == [
        "flow 'alpha=0.1,token=***1':", "flow 'alpha=0.2,token=***1':"]
    one = m.preview(flow="alpha=0.1,token=***1")
    assert capsys.readouterr().out.startswith("flow 'alpha=0.1,token=***1':\n└─--[Train-")
    assert isinstance(one, pipeflow.display.preview.Preview)
    assert isinstance(previews, dict) and list(previews) == list(m.params)
    assert previews["alpha=0.1,token=***1"].counts()["PENDING"] == 2
    doc = parse(previews._repr_html_())
    assert len(doc.all("table")) == 1
    assert [th.text() for th in doc.all("th")] == ["flow", "alpha", "token", "complete",
                                                  "stale", "pending", "status"]
    table = rows(doc)
    assert [[c.text() for c in r] for r in table] == [
        ["alpha=0.1,token=***1", "0.1", "***", "0", "0", "2", "2 to run"],
        ["alpha=0.2,token=***1", "0.2", "***", "0", "0", "2", "2 to run"],
    ]
    text = repr(previews)
    assert "alpha=0.1,token=***1" in text and "<Preview" not in text
    assert SECRET not in previews._repr_html_() + text


def test_print_of_a_multi_preview_drawn_in_this_cell_prints_its_count_line(monkeypatch):
    # print(flows.preview()) in a notebook drew the table, then printed the same table as
    # text: the count line only, as print(flow.preview()) does
    previews = _multi().preview(print_it=False)
    assert str(previews) == repr(previews)  # not drawn anywhere yet: the table as text
    monkeypatch.setattr(rich, "cell_number", lambda: 7)
    previews.mark_shown()
    assert str(previews) == "2 flows: 0 up to date, 2 with tasks to run; previews[name] " \
                            "shows a flow's tree"
    monkeypatch.setattr(rich, "cell_number", lambda: 8)  # a later cell: the table again
    assert str(previews) == repr(previews)


def test_long_unbroken_text_wraps_in_tables_and_tracebacks():
    # a 300-character word in an error ran off the right edge of the notebook
    html = rich.table(["task"], [["x" * 300]], "1 task", "pipeflow-test")
    assert all("overflow-wrap:anywhere" in td.attrs.get("style", "")
               for td in parse(html).all("td"))
    from pipeflow.display.history import attempt_html

    pre = parse(attempt_html({"task": "T()", "status": "failed", "error_type": "ValueError",
                              "error_message": "é" * 300, "traceback": "é" * 300}))
    assert "overflow-wrap:anywhere" in pre.all("pre")[0].attrs["style"]


def test_multi_run_is_a_dict_of_results_shown_as_one_table():
    m = _multi()
    results = m.run()
    assert isinstance(results, dict) and results and all(results.values())
    assert results["alpha=0.1,token=***1"].by_state("completed")
    doc = parse(results._repr_html_())
    assert len(doc.all("table")) == 1
    table = rows(doc)
    assert [r[0].text() for r in table] == list(m.params)
    assert column(doc, "result") == ["success", "success"]
    text = repr(results)
    assert "<RunResult" not in text and "success" in text
    assert SECRET not in results._repr_html_() + text
    single = m.run(flow="alpha=0.1,token=***1")  # one flow: its RunResult, as before
    assert isinstance(single, pipeflow.events.RunResult)


class Fragile(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter()

    def run(self):
        if self.n == 2:
            raise ZeroDivisionError(f"n={self.n} <bad>")
        self.save({"n": self.n})


def test_multi_run_with_a_failed_flow_shows_its_error_in_its_row():
    m = pipeflow.WorkflowMulti(Fragile, {"n": [1, 2]})
    results = m.run(abort=False)
    assert not results and results["n=1"] and not results["n=2"]
    doc = parse(results._repr_html_())
    assert column(doc, "result") == ["success", "failed"]
    assert column(doc, "error") == ["", "Fragile(n=2): ZeroDivisionError: n=2 <bad>"]
    assert badge_colors(doc)["failed"] == rich.VERDICT_COLORS["failed"]
    assert doc.all("div")[-1].text() == "2 flows: 1 succeeded, 1 did not"
    assert "Fragile(n=2): ZeroDivisionError" in repr(results)


def test_functional_multi_params_run_shows_as_one_table():
    flow = pipeflow.functional.Workflow()

    @flow.task(pipeflow.tasks.TaskJson)
    @flow.params(k=pipeflow.IntParameter(default=1))
    def step(task):
        task.save({"k": task.k})

    results = flow.run(step, multi_params={"a": {"k": 1}, "b": {"k": 2}})
    assert isinstance(results, dict) and results["a"] and results["b"]
    doc = parse(results._repr_html_())
    assert column(doc, "flow") == ["a", "b"] and column(doc, "k") == ["1", "2"]
    assert column(doc, "result") == ["success", "success"]


# -- resets ----------------------------------------------------------------------------------

def test_reset_says_what_it_deleted_and_stays_truthy():
    flow = pipeflow.Workflow(Train, {"alpha": 0.5})
    flow.run()
    done = flow.reset(GetData)
    assert done and done == True  # noqa: E712 - d6tflow code compares with True
    assert {done, True} == {True}  # d6tflow's WorkflowMulti.reset made a set of them
    assert repr(done) == "reset 1 task: GetData()"
    assert "True" not in repr(done) and "True" not in done._repr_html_()
    assert repr(flow.reset(GetData)) == "reset: no outputs to delete"
    flow.run()
    up = flow.reset_upstream(Train)
    assert repr(up) == "reset 2 tasks: GetData(), Train(alpha=0.5, label='plain')"
    flow.run()
    down = flow.reset_downstream(GetData)
    assert set(t.task_family for t in down.tasks) == {"GetData", "Train"}


def test_a_declined_reset_is_false_and_says_so(monkeypatch):
    flow = pipeflow.Workflow(Train)
    flow.run()
    monkeypatch.setattr(pipeflow.display, "_interactive", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    with contextlib.redirect_stdout(io.StringIO()):
        declined = flow.reset_upstream(Train, confirm=True)
    assert not declined and declined == False  # noqa: E712
    assert repr(declined) == "reset declined: nothing was deleted"
    assert GetData().complete()


def test_multi_reset_is_a_line_per_flow():
    m = _multi()
    m.run()
    resets = m.reset(Train)
    assert isinstance(resets, dict) and resets
    assert repr(resets).splitlines() == [
        "alpha=0.1,token=***1: reset 1 task: Train(alpha=0.1, label='plain')",
        "alpha=0.2,token=***1: reset 1 task: Train(alpha=0.2, label='plain')",
    ]


# -- in a real kernel ------------------------------------------------------------------------

CELLS = [
    f"""import contextlib, io
import pipeflow
pipeflow.set_dir(DATA)
pipeflow.settings.execution_summary = True

class GetData(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({{"x": 1}})

@pipeflow.requires(GetData)
class Train(pipeflow.tasks.TaskJson):
    alpha = pipeflow.FloatParameter(default=1.0)
    token = pipeflow.SecretParameter(default="")
    def run(self):
        self.save({{"m": self.inputLoad()["x"] * self.alpha}})

class Bad(pipeflow.tasks.TaskJson):
    def run(self):
        raise KeyError("nope")

flow = pipeflow.Workflow(Train, {{"alpha": 0.5, "token": {SECRET!r}}})""",
    "flow.preview()",                                   # 1
    "print(flow.preview())",                            # 2
    "p = flow.preview()",                               # 3
    "p",                                                # 4
    "flow.run()",                                       # 5
    "r = flow.run()",                                   # 6
    "r",                                                # 7
    "flow.reset(GetData)",                              # 8
    "m = pipeflow.WorkflowMulti(Train, {'alpha': [0.1, 0.2]})\nm.preview()",  # 9
    "m.run()",                                          # 10
    "res = m.run(execution_summary=False)\nres",        # 11
    "with contextlib.redirect_stdout(io.StringIO()) as buf:\n"
    "    flow.preview()\nprint(buf.getvalue().count('└─--['))",  # 12
    "pipeflow.Workflow(Bad).run(abort=False, execution_summary=False)",  # 13
    "m.reset(Train)",                                   # 14
    "flow.preview(print_it=False)",                     # 15
]


def _outputs(cell):
    kinds = [(o["output_type"], o.get("name")) for o in cell["outputs"]]
    # (the progress bar is a display of its own, tested in tests/test_notebook_run.py)
    rich_out = [o for o in cell["outputs"] if o["output_type"] in ("display_data",
                                                                    "execute_result")
                and "data-state=" not in o["data"].get("text/html", "")]
    stdout = "".join(o["text"] for o in cell["outputs"]
                     if o["output_type"] == "stream" and o["name"] == "stdout")
    return kinds, rich_out, stdout


def test_a_notebook_shows_each_display_once_as_html(tmp_path, kernel_manager):
    kernel = kernel_manager
    import nbformat
    from nbclient import NotebookClient

    cells = [CELLS[0].replace("DATA", repr(str(tmp_path / "nbdata"))), *CELLS[1:]]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=120, km=kernel, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
    out = [_outputs(c) for c in nb.cells]
    everything = json.dumps([c["outputs"] for c in nb.cells])
    assert SECRET not in everything
    assert "<Preview" not in everything and "True" not in everything

    def one_html(i):
        _, shown, stdout = out[i]
        assert len(shown) == 1, (i, out[i])
        return parse(shown[0]["data"]["text/html"]), shown[0]["data"]["text/plain"], stdout

    # 1: flow.preview() draws one HTML table, not the text tree on stdout
    doc, plain, stdout = one_html(1)
    assert [r[1].text() for r in rows(doc)] == ["PENDING", "PENDING"]
    assert "└─--" not in stdout and stdout == ""
    assert "└─--[Train" in plain  # frontends without HTML get the text tree
    # 2: print(flow.preview()): the table once, then the count line
    doc, _, stdout = one_html(2)
    assert stdout == "2 tasks: 0 complete, 0 stale, 2 pending\n"
    # 3, 4: kept in a variable, it shows in the next cell
    one_html(3)
    doc, _, stdout = one_html(4)
    assert len(rows(doc)) == 2 and stdout == ""
    # 5: run: the summary once, no echo of the result
    kinds, shown, stdout = out[5]
    assert stdout.count("===== pipeflow execution summary =====") == 2 and not shown
    # 7: the result in a later cell: its HTML
    doc, plain, _ = one_html(7)
    assert badge_colors(doc)["success"] == rich.VERDICT_COLORS["success"]
    assert plain == "<RunResult success: 1 already done>"  # without HTML: the text
    # 8: reset says what it deleted, not True
    _, shown, stdout = out[8]
    assert len(shown) == 1 and "True" not in json.dumps(shown)
    assert shown[0]["data"]["text/plain"] == "reset 1 task: GetData()"
    # 9: multi preview: one table, a row per flow, no text trees
    doc, _, stdout = one_html(9)
    assert len(doc.all("table")) == 1 and len(rows(doc)) == 2 and stdout == ""
    # 10: multi run: its summary once, no dict of results
    _, shown, stdout = out[10]
    assert stdout.count("Result: success") == 1 and not shown
    # 11: without a printed summary the results show as one table
    doc, _, _ = one_html(11)
    assert len(doc.all("table")) == 1 and column(doc, "result") == ["success"] * 2
    # 12: captured stdout still gets the text tree (d6tflow's tests read it)
    _, shown, stdout = out[12]
    assert not shown and stdout == "2\n"
    # 13: a failed run's result: failed badge and the error line
    doc, _, _ = one_html(13)
    assert badge_colors(doc)["failed"] == rich.VERDICT_COLORS["failed"]
    assert "KeyError" in rows(doc)[0][2].text()
    # 14: multi reset: a line per flow
    _, shown, _ = out[14]
    assert len(shown) == 1 and shown[0]["data"]["text/plain"].count("reset 1 task") == 2
    # 15: print_it=False: the value shows once, as HTML
    doc, _, stdout = one_html(15)
    assert len(rows(doc)) == 2 and stdout == ""
