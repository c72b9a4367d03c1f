"""pipeflow.dag / Workflow.dag / `pipeflow dag`: a picture of the flow.

The SVG is parsed (xml.etree) and its boxes, arrows and hover titles checked; the other
formats are checked for what a reader of them relies on.
"""

from __future__ import annotations

import random
import re
import struct
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pipeflow
from pipeflow.cli import main
from pipeflow.display.dag import COLORS
from pipeflow.errors import ParameterError, TaskFailedError

SVG = "{http://www.w3.org/2000/svg}"


# -- tasks ------------------------------------------------------------------------------------
class DagRaw(pipeflow.tasks.TaskPqPandas):
    def run(self):
        self.save(pd.DataFrame({"x": [random.random()]}))


@pipeflow.requires(DagRaw)
class DagClean(pipeflow.tasks.TaskPqPandas):
    def run(self):
        self.save(self.inputLoad())


class DagFails(pipeflow.tasks.TaskPqPandas):
    def run(self):
        raise KeyError("no column 'price' in the input")


class DagNever(pipeflow.tasks.TaskPqPandas):
    def run(self):
        self.save(pd.DataFrame({"x": [1]}))


class DagAll(pipeflow.tasks.TaskAggregator):
    def requires(self):
        return [DagClean(), DagFails(), DagNever()]

    def run(self):
        yield from self.requires()


class DagOptional(pipeflow.tasks.TaskPqPandas):
    def requires(self):
        return {"raw": DagRaw(), "extra": pipeflow.optional(DagNever())}

    def run(self):
        self.save(self.inputLoad()["raw"])


class DagLeft(pipeflow.tasks.TaskPqPandas):
    def requires(self):
        return DagRaw()

    def run(self):
        self.save(self.inputLoad())


class DagRight(DagLeft):
    pass


class DagTop(pipeflow.tasks.TaskPqPandas):
    def requires(self):
        return [DagLeft(), DagRight()]

    def run(self):
        self.save(self.inputLoad()[0])


class DagTrain(pipeflow.tasks.TaskPqPandas):
    i = pipeflow.IntParameter()
    model = pipeflow.Parameter(default="ols")

    def requires(self):
        return DagRaw()

    def run(self):
        self.save(pd.DataFrame({"i": [self.i]}))


class DagReport(pipeflow.tasks.TaskPqPandas):
    n = pipeflow.IntParameter()

    def requires(self):
        return [DagTrain(i=i) for i in range(self.n)]

    def run(self):
        self.save(pd.DataFrame({"n": [self.n]}))


class DagSecret(pipeflow.tasks.TaskPqPandas):
    table = pipeflow.Parameter()
    token = pipeflow.SecretParameter()

    def run(self):
        self.save(pd.DataFrame({"x": [1]}))


class DagUsesSecret(pipeflow.tasks.TaskPqPandas):
    table = pipeflow.Parameter()
    token = pipeflow.SecretParameter()

    def requires(self):
        return self.clone(DagSecret)

    def run(self):
        raise ValueError(f"login refused for token {self.token}")


class DagHostile(pipeflow.tasks.TaskPqPandas):
    value = pipeflow.Parameter()

    def run(self):
        self.save(pd.DataFrame({"x": [1]}))


@pipeflow.requires(DagHostile)
class DagHostileDown(pipeflow.tasks.TaskPqPandas):
    def run(self):
        self.save(pd.DataFrame({"x": [1]}))


# -- helpers ----------------------------------------------------------------------------------
def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode("utf-8"))


def boxes(root: ET.Element) -> dict[str, ET.Element]:
    """id -> the <g class="node ..."> of each box."""
    return {g.get("id"): g for g in root.iter(f"{SVG}g")
            if (g.get("class") or "").startswith("node ")}


def by_family(root: ET.Element) -> dict[str, ET.Element]:
    out: dict[str, ET.Element] = {}
    for g in boxes(root).values():
        assert g.get("data-family") not in out, "a family drawn twice"
        out[g.get("data-family")] = g
    return out


def title(el: ET.Element) -> str:
    return el.find(f"{SVG}title").text or ""


def rect(g: ET.Element) -> tuple[float, float, float, float]:
    r = g.find(f"{SVG}rect")
    return tuple(float(r.get(k)) for k in ("x", "y", "width", "height"))


def edges(root: ET.Element) -> list[ET.Element]:
    return [p for p in root.iter(f"{SVG}path") if "edge" in (p.get("class") or "")]


def dot_outside_strings(dot: str) -> str:
    """Graphviz source with each quoted string emptied; raises if quotes do not pair up."""
    bare = re.sub(r'"(?:[^"\\\n]|\\.)*"', "", dot)
    assert '"' not in bare, "an unescaped quote"
    return bare


def check_geometry(root: ET.Element) -> None:
    """Upstream boxes above the boxes needing them; no two boxes overlap."""
    bx = {k: rect(g) for k, g in boxes(root).items()}
    for e in edges(root):
        (_, sy, _, sh), (_, ty, _, _) = bx[e.get("data-from")], bx[e.get("data-to")]
        assert sy + sh < ty, "an arrow does not point down"
    items = sorted(bx.values())
    for i, (x, y, w, h) in enumerate(items):
        for x2, y2, _w2, h2 in items[i + 1:]:
            if x2 >= x + w:
                break
            assert y2 >= y + h or y >= y2 + h2, "two boxes overlap"


# -- statuses ---------------------------------------------------------------------------------
def test_each_status_has_its_colour_and_its_reason_on_hover():
    pipeflow.run(DagClean())
    pipeflow.run(DagRaw(), forced=DagRaw())  # new data upstream: DagClean is now stale
    with pytest.raises(TaskFailedError):
        pipeflow.run(DagFails())
    dag = pipeflow.dag(DagAll())
    root = parse(dag.to_svg())
    fams = by_family(root)
    expect = {"DagRaw": "complete", "DagClean": "stale", "DagFails": "failed",
              "DagNever": "pending"}
    for fam, status in expect.items():
        g = fams[fam]
        assert g.get("data-status") == status
        assert status in g.get("class").split()
        assert g.find(f"{SVG}rect").get("fill") == COLORS[status][0]
        assert fam in title(g)
    assert "changed" in title(fams["DagClean"]) or "upstream" in title(fams["DagClean"])
    assert "KeyError" in title(fams["DagFails"]) and "price" in title(fams["DagFails"])
    # a legend naming each status
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend")
    words = " ".join(t.text for t in legend.iter(f"{SVG}text"))
    for word in ("complete", "pending", "stale", "failed last time", "optional"):
        assert word in words
    check_geometry(root)


def test_repr_is_short_and_says_how_to_save():
    dag = pipeflow.dag(DagAll())
    text = repr(dag)
    assert len(text) < 200 and "\n" not in text
    assert "5 tasks" in text and "5 pending" in text and ".save(" in text
    assert str(dag) == text


def test_notebook_shows_it_once_as_inline_svg():
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(pipeflow.dag(DagAll()))
    assert set(data) == {"text/plain", "text/html"}  # one rich representation: drawn once
    html = data["text/html"]
    assert html.count("<svg") == 1
    svg = html[html.index("<svg"):html.rindex("</svg>") + 6]
    assert len(boxes(parse(svg))) == 5


# -- edges ------------------------------------------------------------------------------------
def test_optional_edges_are_dashed_everywhere():
    dag = pipeflow.dag(DagOptional())
    root = parse(dag.to_svg())
    key = {g.get("data-family"): k for k, g in boxes(root).items()}
    kinds = {(e.get("data-from"), e.get("data-to")): e for e in edges(root)}
    opt = kinds[(key["DagNever"], key["DagOptional"])]
    req = kinds[(key["DagRaw"], key["DagOptional"])]
    assert "optional" in opt.get("class") and opt.get("stroke-dasharray")
    assert "required" in req.get("class") and req.get("stroke-dasharray") is None
    dot = dag.to_dot()
    assert f"{key['DagNever']} -> {key['DagOptional']} [style=dashed];" in dot
    assert f"{key['DagRaw']} -> {key['DagOptional']};" in dot
    mmd = dag.to_mermaid()
    assert f"{key['DagNever']} -.-> {key['DagOptional']}" in mmd
    assert f"{key['DagRaw']} --> {key['DagOptional']}" in mmd


def test_a_shared_task_is_drawn_once():
    root = parse(pipeflow.dag(DagTop()).to_svg())
    fams = [g.get("data-family") for g in boxes(root).values()]
    assert sorted(fams) == ["DagLeft", "DagRaw", "DagRight", "DagTop"]
    assert len(edges(root)) == 4
    check_geometry(root)


# -- grouping ---------------------------------------------------------------------------------
def test_many_instances_become_one_box_with_counts():
    pipeflow.run([DagTrain(i=0), DagTrain(i=1)])
    with pytest.raises(TaskFailedError):
        pipeflow.run(DagFails())
    dag = pipeflow.dag(DagReport(n=20))
    root = parse(dag.to_svg())
    fams = by_family(root)
    train = fams["DagTrain"]
    assert train.get("data-tasks") == "20"
    texts = [t.text for t in train.iter(f"{SVG}text")]
    assert "DagTrain × 20" in texts[0]
    assert "18 pending" in texts[1] and "2 complete" in texts[1]
    assert train.get("data-status") == "pending"  # the worst status of the group
    bar = {r.get("class"): r for r in train.iter(f"{SVG}rect") if r.get("class")}
    assert set(bar) == {"complete", "pending"}
    assert float(bar["pending"].get("width")) == pytest.approx(
        9 * float(bar["complete"].get("width")), abs=0.5)
    assert "varying: i (20 values)" in title(train)
    assert "DagTrain(i=5, model='ols'): PENDING" in title(train)
    assert len(edges(root)) == 2  # raw -> train group -> report, deduplicated
    assert dag.counts == {"complete": 3, "pending": 19}
    # turned off: every task
    flat = parse(pipeflow.dag(DagReport(n=20), group=False).to_svg())
    assert len(boxes(flat)) == 22 and len(edges(flat)) == 40
    check_geometry(flat)


def test_grouping_threshold():
    assert len(pipeflow.dag(DagReport(n=6)).nodes) == 8
    assert len(pipeflow.dag(DagReport(n=7)).nodes) == 3
    assert len(pipeflow.dag(DagReport(n=7), group_above=7).nodes) == 9
    with pytest.raises(ParameterError, match="group_above"):
        pipeflow.dag(DagReport(n=7), group_above=0)


def test_labels_show_what_distinguishes_instances():
    dag = pipeflow.dag(DagReport(n=3))
    labels = {n.lines for n in dag.nodes if n.family == "DagTrain"}
    assert labels == {("DagTrain", f"i={i}") for i in range(3)}  # model is the same: left out
    one = pipeflow.dag(DagTrain(i=4, model="x" * 100)).nodes[-1]
    assert one.lines[0] == "DagTrain"
    assert "i=4" in one.lines[1] and "…" in one.lines[1] and len(one.lines[1]) <= 44


def test_hundreds_of_tasks_stay_small_and_readable():
    # (how long it takes is measured by benchmarks/bench_dag.py, not asserted here)
    class DagWide(pipeflow.tasks.TaskPqPandas):
        n = pipeflow.IntParameter()

        def requires(self):
            return [DagTrain(i=i, model=m) for i in range(self.n) for m in ("a", "b")]

    dag = pipeflow.dag(DagWide(n=250))  # 502 tasks
    svg = dag.to_svg()
    assert dag.n_tasks == 502 and len(dag.nodes) == 3
    assert len(svg) < 20_000
    flat = pipeflow.dag(DagWide(n=250), group=False)
    svg = flat.to_svg()
    assert len(flat.nodes) == 502
    assert len(svg) < 600_000
    check_geometry(parse(svg))


def test_layout_of_a_random_dag_points_down_without_overlaps():
    rnd = random.Random(7)
    made: list[type] = []
    for k in range(60):
        deps = rnd.sample(made, min(len(made), rnd.randint(0, 3)))

        def requires(self, deps=deps):
            return [d() for d in deps]

        made.append(type(f"DagRnd{k}", (pipeflow.tasks.TaskPqPandas,),
                         {"requires": requires, "run": lambda self: None}))
    root = parse(pipeflow.dag([m() for m in made]).to_svg())
    assert len(boxes(root)) == 60
    check_geometry(root)


# -- secrets ----------------------------------------------------------------------------------
SECRET = 'hunter2<&"\'»Ω-tok'


def test_secret_parameters_never_appear():
    with pytest.raises(TaskFailedError):
        pipeflow.run(DagUsesSecret(table="sales", token=SECRET))
    dag = pipeflow.dag(DagUsesSecret(table="sales", token=SECRET))
    assert any(n.status == "failed" for n in dag.nodes)
    texts = {"svg": dag.to_svg(), "dot": dag.to_dot(), "mmd": dag.to_mermaid(),
             "repr": repr(dag), "html": dag._repr_html_()}
    forms = {SECRET, "hunter2", "hunter2&lt;", "hunter2#60;", 'hunter2<&\\"'}
    for name, text in texts.items():
        for form in forms:
            assert form not in text, (name, form)
    assert "login refused" in title(by_family(parse(texts["svg"]))["DagUsesSecret"])


# -- hostile values ---------------------------------------------------------------------------
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=300))
@example('<script>alert("x")</script>&amp;')
@example("\x00\x01\x1b]0;\ud800\udfff\ufffe")
@example("漢字" * 200)
@example("a\nb\r\tc")
@example("]]><!--")
@example("#quot; --> n0")
def test_svg_is_well_formed_for_any_parameter_value(value):
    dag = pipeflow.dag([DagHostileDown(value=value), DagHostileDown(value=value + "2")])
    root = parse(dag.to_svg())
    assert len(boxes(root)) == 4
    for g in boxes(root).values():
        for t in g.iter(f"{SVG}text"):
            assert len(t.text) <= 44
    bare = dot_outside_strings(dag.to_dot())  # fails if a quote is left unescaped
    assert bare.count("{") == bare.count("}") == 1 and bare.count(" -> ") == 2
    assert len(re.findall(r"^  n\d+ \[label=, fillcolor=, color=, tooltip=\];$", bare,
                          re.M)) == 4
    mmd = dag.to_mermaid().splitlines()
    node_lines = [line for line in mmd if line.startswith("  n") and '["' in line]
    assert len(node_lines) == 4
    for line in node_lines:
        label = line[line.index('["') + 2:line.rindex('"]')]
        bare = re.sub(r"#\d+;", "", label.replace("<br/>", ""))  # entity codes are safe
        assert not set(bare) & set('"[]<>`|{};#&')
    assert sum(" --> " in line for line in mmd) == 2


# -- saving -----------------------------------------------------------------------------------
def test_save_each_format(tmp_path):
    pipeflow.run(DagRaw())
    dag = pipeflow.dag(DagReport(n=3))
    for ext in ("svg", "png", "dot", "mmd"):
        path = tmp_path / f"flow.{ext}"
        assert dag.save(path) == path
    assert len(boxes(parse((tmp_path / "flow.svg").read_text("utf-8")))) == 5
    png = (tmp_path / "flow.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert 200 < width < 3000 and 150 < height < 3000 and len(png) > 5_000
    dot = dot_outside_strings((tmp_path / "flow.dot").read_text("utf-8"))
    assert dot.startswith("digraph") and dot.count("{") == dot.count("}") == 1
    assert len(re.findall(r"^  n\d+ -> n\d+", dot, re.M)) == len(dag.edges) == 6
    mmd = (tmp_path / "flow.mmd").read_text("utf-8")
    assert mmd.startswith("flowchart TB")
    assert len(re.findall(r"^  n\d+ --> n\d+$", mmd, re.M)) == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_save_replaces_a_file_and_writes_exactly_the_path(tmp_path):
    path = tmp_path / "My Flow.SVG"
    path.write_text("old")
    pipeflow.dag(DagRaw()).save(str(path))
    assert parse(path.read_text("utf-8")).tag == f"{SVG}svg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["My Flow.SVG", "data"]  # no temp
    pipeflow.dag(DagRaw()).save(tmp_path / "picture", format="dot")
    assert (tmp_path / "picture").read_text().startswith("digraph")
    # the permissions any program gives a new file (not a temp file's private 0600)
    (tmp_path / "reference").write_text("x")
    assert (tmp_path / "picture").stat().st_mode == (tmp_path / "reference").stat().st_mode


def test_save_errors_say_what_to_do(tmp_path):
    dag = pipeflow.dag(DagRaw())
    with pytest.raises(ParameterError) as err:
        dag.save(tmp_path / "flow.pdf")
    for ext in (".svg", ".png", ".dot", ".mmd", "'.pdf'"):
        assert ext in str(err.value)
    with pytest.raises(ParameterError, match="does not exist"):
        dag.save(tmp_path / "nowhere" / "flow.svg")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ParameterError, match="does not exist"):
        dag.save(tmp_path / "afile" / "flow.svg")
    with pytest.raises(ParameterError, match="folder"):
        dag.save(tmp_path)
    with pytest.raises(ParameterError, match="svg, png, dot, mmd"):
        dag.save(tmp_path / "x.svg", format="jpeg")


def test_png_of_hostile_labels(tmp_path):
    # matplotlib would read $...$ as maths (and fail on a bad formula)
    dag = pipeflow.dag([DagHostileDown(value=r"$\frac{1}{$ 50%"), DagHostile(value="\ud800<&>")])
    dag.save(tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_png_without_matplotlib_says_what_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mpl(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(pipeflow.errors.MissingDependencyError, match="pip install matplotlib"):
        pipeflow.dag(DagRaw()).to_png()


# -- Workflow / WorkflowMulti -----------------------------------------------------------------
def test_workflow_and_multi_dag():
    flow = pipeflow.Workflow(DagTrain, {"i": 1, "model": "gbm"})
    assert [n.family for n in flow.dag().nodes] == ["DagRaw", "DagTrain"]
    assert flow.dag().nodes[1].lines == ("DagTrain", "i=1, model=gbm")
    multi = pipeflow.WorkflowMulti(DagTrain, {"i": [1, 2], "model": ["a", "b"]})
    dag = multi.dag()
    assert [n.family for n in dag.nodes].count("DagRaw") == 1  # shared: drawn once
    assert len(dag.nodes) == 5 and len(dag.edges) == 4
    assert {n.lines[1] for n in dag.nodes[1:]} == {"i=1, model=a", "i=1, model=b",
                                                    "i=2, model=a", "i=2, model=b"}
    one = multi.dag(flow="i=1,model=a")
    assert len(one.nodes) == 2


def test_importing_pipeflow_does_not_import_matplotlib():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import pipeflow, sys; "
                          "print('matplotlib' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the command line -------------------------------------------------------------------------
CLI_TASKS = '''
import pandas as pd
import pipeflow

class Load(pipeflow.tasks.TaskPqPandas):
    def run(self):
        self.save(pd.DataFrame({"x": [1]}))

class Fit(pipeflow.tasks.TaskPqPandas):
    model = pipeflow.Parameter(default="ols")
    def requires(self):
        return {"load": Load(), "extra": pipeflow.optional(Load())}
    def run(self):
        self.save(self.inputLoad()["load"])

class Many(pipeflow.tasks.TaskAggregator):
    def requires(self):
        return [Fit(model=str(i)) for i in range(8)]
'''


@pytest.fixture
def cli(tmp_path):
    (tmp_path / "dag_cli_tasks.py").write_text(CLI_TASKS)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, ["dag", *args])

    return invoke


def test_cli_prints_dot_mermaid_or_svg(cli):
    out = cli("dag_cli_tasks:Fit", "-p", "model=gbm")
    assert out.exit_code == 0, out.output
    assert out.output.startswith("digraph") and out.output.count(" -> ") == 1
    assert "model=gbm" in out.output
    out = cli("dag_cli_tasks:Fit", "--format", "mmd")
    assert out.exit_code == 0 and out.output.startswith("flowchart TB")
    out = cli("dag_cli_tasks:Fit", "--format", "svg")
    assert out.exit_code == 0 and len(boxes(parse(out.output))) == 2


def test_cli_writes_a_file(cli, tmp_path):
    out = cli("dag_cli_tasks:Fit", "-o", "flow.png")
    assert out.exit_code == 0, out.output
    assert (tmp_path / "flow.png").read_bytes()[:4] == b"\x89PNG"
    assert "written to flow.png" in out.output
    out = cli("dag_cli_tasks:Fit", "--output", "flow.mmd", "--dir", str(tmp_path / "data"))
    assert out.exit_code == 0 and (tmp_path / "flow.mmd").read_text().startswith("flowchart")


def test_cli_groups_unless_told_not_to(cli):
    out = cli("dag_cli_tasks:Many", "--format", "mmd")
    assert out.exit_code == 0 and "Fit × 8" in out.output
    out = cli("dag_cli_tasks:Many", "--format", "mmd", "--no-group")
    assert out.exit_code == 0 and "×" not in out.output
    assert len(re.findall(r'\["Fit<br/>model=\d"\]', out.output)) == 8
    # --group-above: Python's group_above= (8 instances are not more than 8)
    out = cli("dag_cli_tasks:Many", "--format", "mmd", "--group-above", "8")
    assert out.exit_code == 0 and "×" not in out.output
    out = cli("dag_cli_tasks:Many", "--format", "mmd", "--group-above", "7")
    assert out.exit_code == 0 and "Fit × 8" in out.output
    out = cli("dag_cli_tasks:Many", "--group-above", "0")
    assert out.exit_code == 2 and "--group-above" in out.output


def test_cli_errors_and_exit_codes(cli):
    out = cli("dag_cli_tasks:Fit", "-o", "flow.txt")
    assert out.exit_code == 2 and "Error: ParameterError" in out.output
    assert ".svg" in out.output and "Traceback" not in out.output
    out = cli("dag_cli_tasks:Fit", "--format", "png")
    assert out.exit_code == 2 and "-o FILE.png" in out.output
    out = cli("dag_cli_tasks:Fit", "-p", "modle=x")
    assert out.exit_code == 2 and "model" in out.output
    out = cli("dag_cli_tasks:Fit", "-o", "no/such/folder/flow.svg")
    assert out.exit_code == 2 and "does not exist" in out.output


# -- a real notebook kernel -------------------------------------------------------------------
def test_a_notebook_cell_shows_the_picture_once(tmp_path, kernel_manager):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "import pandas as pd, pipeflow\n"
        f"pipeflow.set_dir({str(tmp_path / 'nbdata')!r})\n"
        "class NbLoad(pipeflow.tasks.TaskPqPandas):\n"
        "    def run(self): self.save(pd.DataFrame({'x': [1]}))\n"
        "@pipeflow.requires(NbLoad)\n"
        "class NbFit(pipeflow.tasks.TaskPqPandas):\n"
        "    def run(self): self.save(self.inputLoad())",
        "pipeflow.dag(NbFit())",
        "flow = pipeflow.Workflow(NbFit)\nflow.dag()",
        "print(flow.dag())",
    )]
    km = kernel_manager
    try:
        NotebookClient(nb, km=km, timeout=60, allow_errors=False).execute()
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    assert not km.is_alive()
    for cell in nb.cells[1:3]:
        assert len(cell.outputs) == 1, cell.outputs
        out = cell.outputs[0]
        assert out.output_type == "execute_result"
        assert out.data["text/html"].count("<svg") == 1
        assert "image/svg+xml" not in out.data
        assert len(boxes(parse(out.data["text/html"][out.data["text/html"].index("<svg"):
                                                     -len("</div>")]))) == 2
    printed = nb.cells[3].outputs
    assert len(printed) == 1 and printed[0].output_type == "stream"
    assert printed[0].text.startswith("<Dag 2 tasks (2 pending)") and printed[0].text.count(
        "\n") == 1
