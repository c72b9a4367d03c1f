"""Change detection: a task whose code, parameters or upstream outputs changed since its
outputs were committed is STALE, says why, and reruns with everything downstream of it.

The user's project is written to real module files and (re)imported, as a user editing code
between two runs would: the fingerprints come from the source files.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest

import pipeflow
from pipeflow import fingerprint
from pipeflow.errors import StaleOutputWarning
from pipeflow.plan import Status

_ids = itertools.count()


class Project:
    """A user's project: modules in a folder on sys.path, written and re-imported."""

    def __init__(self, root, prefix):
        self.root = root
        self.prefix = prefix
        self.loaded = []

    def name(self, short):
        return f"{self.prefix}_{short}"

    def write(self, short, text, folder=None):
        """Write module ``short`` (its text may say ``{p}_other`` for sibling modules)."""
        folder = folder or self.root
        path = folder / f"{self.name(short)}.py"
        path.write_text(text.replace("{p}", self.prefix))
        importlib.invalidate_caches()
        return path

    def edit(self, short, text):
        """Rewrite module ``short`` and re-import it, as a user editing it would."""
        self.write(short, text)
        return self.load(short)

    def load(self, short):
        """Import module ``short``, or re-import it if it was imported before."""
        name = self.name(short)
        if name in sys.modules:
            return importlib.reload(sys.modules[name])
        self.loaded.append(name)
        return importlib.import_module(name)


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # edits within one second
    proj = Project(root, f"chg{next(_ids)}")
    yield proj
    for name in proj.loaded:
        sys.modules.pop(name, None)


HELPERS = textwrap.dedent("""
    WINDOW = 3


    def make_lags(x):
        return shift(x) + WINDOW


    def shift(x):
        return x * 10
""")

TASKS = textwrap.dedent("""
    import pipeflow
    import {p}_helpers as helpers


    class Prepare(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(helpers.make_lags(1))


    @pipeflow.requires(Prepare)
    class Train(pipeflow.tasks.TaskPickle):
        factor = pipeflow.IntParameter(default=2)

        def run(self):
            self.save(self.inputLoad() * self.factor)
""")


def setup_flow(project, tasks=TASKS, helpers=HELPERS):
    project.write("helpers", helpers)
    project.write("tasks", tasks)
    project.load("helpers")
    mod = project.load("tasks")
    flow = pipeflow.Workflow(mod.Train)
    flow.run()
    return mod, flow


def states(flow):
    """family -> (status, reason) from a fresh preview."""
    preview = flow.preview(print_it=False)
    return {r.task.task_family: (str(r.status), r.reason) for r in preview.rows}


def test_a_fresh_run_is_complete_and_records_what_it_was_made_from(project):
    mod, flow = setup_flow(project)
    assert states(flow) == {"Train": ("COMPLETE", None), "Prepare": ("COMPLETE", None)}
    train = flow.get_task()
    record = json.loads(train._store.record_file().read_text())
    fp = record["fp"]
    assert fp["params"] == {"factor": "2"}
    assert set(fp["code"]) == {"python", "Train.run"}
    prepare = mod.Prepare()
    assert list(fp["up"]) == [prepare.task_id]
    code = json.loads(prepare._store.record_file().read_text())["fp"]["code"]
    helpers = project.name("helpers")
    assert set(code) == {"python", "Prepare.run", f"helper {helpers}.make_lags",
                         f"helper {helpers}.shift", f"constant {helpers}.WINDOW"}


def test_editing_a_task_method_makes_it_stale_and_a_run_reruns_it_and_downstream(project):
    mod, flow = setup_flow(project)
    mod = project.edit("tasks", TASKS.replace("helpers.make_lags(1)", "helpers.make_lags(2)"))
    flow = pipeflow.Workflow(mod.Train)
    assert states(flow) == {
        "Train": ("STALE", "upstream Prepare() is out of date"),
        "Prepare": ("STALE", "code changed: Prepare.run"),
    }
    assert not flow.complete()
    result = flow.run()
    assert {r.task.task_family: r.state.value for r in result.tasks.values()} == {
        "Prepare": "completed", "Train": "completed"}
    assert result.tasks[mod.Prepare().task_id].reason == "stale: code changed: Prepare.run"
    recorded = pipeflow.history(family="Prepare", last=1).iloc[0]
    assert recorded["reason"] == "stale: code changed: Prepare.run"
    assert flow.outputLoad() == (20 + 3) * 2
    assert states(flow) == {"Train": ("COMPLETE", None), "Prepare": ("COMPLETE", None)}


def test_editing_a_helper_in_another_module_followed_transitively(project):
    _, flow = setup_flow(project)
    # shift() is called by make_lags(), which Prepare.run calls
    project.edit("helpers", HELPERS.replace("x * 10", "x * 100"))
    helpers = project.name("helpers")
    assert states(flow)["Prepare"] == ("STALE", f"code changed: helper {helpers}.shift")
    flow.run()
    assert flow.outputLoad() == (100 + 3) * 2


def test_editing_a_constant_of_the_project_is_a_code_change(project):
    _, flow = setup_flow(project)
    project.edit("helpers", HELPERS.replace("WINDOW = 3", "WINDOW = 4"))
    helpers = project.name("helpers")
    assert states(flow)["Prepare"] == ("STALE", f"code changed: constant {helpers}.WINDOW")


def test_comments_blank_lines_and_docstrings_are_not_changes(project):
    _, flow = setup_flow(project)
    edited = HELPERS.replace(
        "def shift(x):\n    return x * 10",
        'def shift(x):\n    """Now documented."""\n\n    # a comment\n'
        "    return (x *\n            10)")
    assert edited != HELPERS
    project.edit("helpers", "\n\n# header comment\n" + edited)
    assert states(flow) == {"Train": ("COMPLETE", None), "Prepare": ("COMPLETE", None)}


def test_editing_a_library_function_is_not_a_change(project, tmp_path):
    site = tmp_path / "venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    sys.path.insert(0, str(site))
    try:
        project.write("fakelib", "def scale(x):\n    return x * 2\n", folder=site)
        project.load("fakelib")
        tasks = TASKS.replace("import pipeflow\n", "import pipeflow\nimport {p}_fakelib\n")
        tasks = tasks.replace("helpers.make_lags(1)", "{p}_fakelib.scale(1)")
        mod, flow = setup_flow(project, tasks=tasks)
        code = json.loads(mod.Prepare()._store.record_file().read_text())["fp"]["code"]
        assert list(code) == ["python", "Prepare.run"]  # the library is not project code
        project.write("fakelib", "def scale(x):\n    return x * 3\n", folder=site)
        project.load("fakelib")
        assert states(flow)["Prepare"] == ("COMPLETE", None)
    finally:
        sys.path.remove(str(site))


def test_pipeflow_pandas_and_the_standard_library_are_not_project_code():
    import collections

    import pandas as pd

    assert not fingerprint.is_project_module("pandas")
    assert not fingerprint.is_project_module("collections")
    assert not fingerprint.is_project_module("pipeflow.tasks")
    assert not fingerprint.is_project_module("luigi")
    assert not fingerprint.is_project_module("sys")  # built in
    assert fingerprint.is_project_module("__main__")
    assert fingerprint.is_project_module(__name__)  # the tests are a project
    assert pd and collections


def test_an_upstream_task_class_is_not_code_of_its_downstream(project):
    mod, _ = setup_flow(project)
    code = json.loads(mod.Train()._store.record_file().read_text())["fp"]["code"]
    assert not any("Prepare" in item for item in code)


def test_changed_upstream_output_makes_downstream_stale_unless_it_is_the_same(project):
    mod, flow = setup_flow(project)
    # the upstream runs again on its own and writes the same data: nothing to redo
    pipeflow.run(mod.Prepare(), forced_all=True)
    assert states(flow)["Train"] == ("COMPLETE", None)
    # ... and now different data (its code reads a file the project changed)
    project.edit("helpers", HELPERS.replace("WINDOW = 3", "WINDOW = 5"))
    pipeflow.run(mod.Prepare())
    assert states(flow) == {
        "Train": ("STALE", "upstream Prepare() changed"),
        "Prepare": ("COMPLETE", None),
    }
    flow.run()
    assert flow.outputLoad() == (10 + 5) * 2


def test_output_edited_by_hand_is_stale_and_not_loaded(project):
    mod, flow = setup_flow(project)
    path = mod.Prepare().output().path
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    status, reason = states(flow)["Prepare"]
    assert status == "STALE"
    assert reason.startswith(f"output 'data': {path.name} was changed outside pipeflow")
    with pytest.raises(pipeflow.errors.IncompleteTaskError, match="changed outside pipeflow"):
        mod.Prepare().outputLoad()
    flow.run()
    assert mod.Prepare().outputLoad() == 13


def test_changed_parameter_default_with_params_left_out_of_file_names(project):
    pipeflow.settings.save_with_param = False  # one file per family: the same path
    _, flow = setup_flow(project)
    mod = project.edit("tasks", TASKS.replace("default=2", "default=3"))
    flow = pipeflow.Workflow(mod.Train)
    assert states(flow)["Train"] == ("STALE", "parameter factor changed: 2 -> 3")
    flow.run()
    assert flow.outputLoad() == 13 * 3


def test_changed_parameter_default_with_params_in_file_names_is_a_new_task(project):
    _, flow = setup_flow(project)
    mod = project.edit("tasks", TASKS.replace("default=2", "default=3"))
    assert states(pipeflow.Workflow(mod.Train)) == {
        "Train": ("PENDING", None), "Prepare": ("COMPLETE", None)}


def test_version_pins_the_code(project):
    pinned = TASKS.replace("class Prepare(pipeflow.tasks.TaskPickle):\n",
                           "class Prepare(pipeflow.tasks.TaskPickle):\n    version = '1'\n")
    _, flow = setup_flow(project, tasks=pinned)
    mod = project.edit("tasks", pinned.replace("make_lags(1)", "make_lags(2)"))
    flow = pipeflow.Workflow(mod.Train)
    assert states(flow)["Prepare"] == ("COMPLETE", None)  # edits under a pinned version
    mod = project.edit("tasks", pinned.replace("version = '1'", "version = '2'"))
    flow = pipeflow.Workflow(mod.Train)
    assert states(flow)["Prepare"] == ("STALE", "version changed: 1 -> 2")


def test_a_class_can_opt_out_of_code_checks(project):
    opted = TASKS.replace("class Prepare(pipeflow.tasks.TaskPickle):\n",
                          "class Prepare(pipeflow.tasks.TaskPickle):\n"
                          "    detect_code_changes = False\n")
    mod, flow = setup_flow(project, tasks=opted)
    assert "code" not in json.loads(mod.Prepare()._store.record_file().read_text())["fp"]
    project.edit("helpers", HELPERS.replace("x * 10", "x * 11"))
    assert states(flow)["Prepare"] == ("COMPLETE", None)


def test_settings_switch_each_kind_of_check_off(project):
    mod, flow = setup_flow(project)
    project.edit("helpers", HELPERS.replace("x * 10", "x * 11"))
    pipeflow.settings.detect_code_changes = False  # d6tflow: outputs exist, so complete
    assert states(flow) == {"Train": ("COMPLETE", None), "Prepare": ("COMPLETE", None)}
    pipeflow.run(mod.Prepare(), forced_all=True)  # new upstream data
    assert states(flow)["Train"] == ("STALE", "upstream Prepare() changed")
    pipeflow.settings.detect_data_changes = False
    assert states(flow)["Train"] == ("COMPLETE", None)
    with pytest.raises(AttributeError, match="detect_code_changes"):
        pipeflow.settings.detect_code_change = True


def test_stale_outputs_load_with_a_warning(project):
    mod, flow = setup_flow(project)
    project.edit("helpers", HELPERS.replace("x * 10", "x * 11"))
    with pytest.warns(StaleOutputWarning, match=r"Prepare\(\) is stale \(code changed: help"):
        assert flow.outputLoad(mod.Prepare) == 13
    with pytest.warns(StaleOutputWarning, match="upstream Prepare"):
        assert flow.outputLoad() == 26


def test_preview_shows_stale_tasks_and_counts_them(project):
    _, flow = setup_flow(project)
    project.edit("helpers", HELPERS.replace("x * 10", "x * 11"))
    preview = flow.preview(print_it=False)
    assert preview.counts() == {"COMPLETE": 0, "PENDING": 0, "STALE": 2}
    assert "[Prepare-{} (STALE)] - code changed: helper" in str(preview)
    assert "\033[93mSTALE" in preview.text(color=True)
    assert ">STALE</span>" in preview._repr_html_()
    assert "code changed: helper" in preview._repr_html_()


def test_records_from_before_change_detection_still_count(project):
    mod, flow = setup_flow(project)
    for task in (mod.Prepare(), mod.Train()):
        path = task._store.record_file()
        doc = json.loads(path.read_text())
        del doc["fp"]
        path.write_text(json.dumps(doc))
    project.edit("helpers", HELPERS.replace("x * 10", "x * 11"))
    assert states(flow) == {"Train": ("COMPLETE", None), "Prepare": ("COMPLETE", None)}


def test_same_code_imported_under_another_module_name_is_not_a_change(project, tmp_path):
    """A flow run as a script (``__main__``), then imported from a notebook."""
    project.write("helpers", HELPERS)
    path = project.write("tasks", TASKS + textwrap.dedent("""

        if __name__ == "__main__":
            import sys
            pipeflow.set_dir(sys.argv[1])
            pipeflow.settings.execution_summary = False
            pipeflow.run(Train())
    """))
    env = {**os.environ, "PYTHONPATH": str(project.root)}
    proc = subprocess.run([sys.executable, str(path), str(pipeflow.settings.dirpath)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    project.load("helpers")
    mod = project.load("tasks")
    flow = pipeflow.Workflow(mod.Train)
    assert states(flow) == {"Train": ("COMPLETE", None), "Prepare": ("COMPLETE", None)}
    # ... while an edit between the two processes is seen
    project.edit("helpers", HELPERS.replace("x * 10", "x * 12"))
    assert states(flow)["Prepare"][0] == "STALE"


def test_aggregated_upstream_changes_reach_downstream(project):
    tasks = TASKS + textwrap.dedent("""

        class Both(pipeflow.tasks.TaskAggregator):
            def run(self):
                yield Prepare()
                yield Train()


        @pipeflow.requires(Both)
        class Report(pipeflow.tasks.TaskJson):
            def run(self):
                first, second = self.inputLoad()
                self.save({"sum": first + second})
    """)
    project.write("helpers", HELPERS)
    project.write("tasks", tasks)
    project.load("helpers")
    mod = project.load("tasks")
    flow = pipeflow.Workflow(mod.Report)
    flow.run()
    pipeflow.settings.detect_code_changes = False  # only the data change below counts
    project.edit("helpers", HELPERS.replace("WINDOW = 3", "WINDOW = 4"))
    pipeflow.run(mod.Train(), forced_all_upstream=True)
    assert states(flow)["Report"] == ("STALE", "upstream Both() changed")
    flow.run()
    assert flow.outputLoad() == {"sum": 14 + 28}


def test_code_fingerprints_are_computed_once_per_check(project, monkeypatch):
    _, flow = setup_flow(project)
    calls = []
    real = fingerprint._function_hash
    monkeypatch.setattr(fingerprint, "_function_hash", lambda f: calls.append(f) or real(f))
    flow.preview(print_it=False)
    assert len(calls) == len({id(f) for f in calls}) == 4  # 2 run()s, make_lags, shift


def test_status_enum_has_stale():
    assert Status("STALE") is Status.STALE


def test_a_touched_output_is_hashed_once_then_compared_by_stat_again(project, monkeypatch):
    mod, _ = setup_flow(project)
    task = mod.Prepare()
    path = task.output().path
    before = path.stat()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
    hashed = []
    real = pipeflow.integrity.hash_file
    monkeypatch.setattr(pipeflow.integrity, "hash_file", lambda p: hashed.append(p) or real(p))
    assert task._store.output_state()[:2] == (True, None)
    assert len(hashed) == 1  # the touch made it look, once
    record = json.loads(task._store.record_file().read_text())
    assert record["files"]["data"][0][2] == before.st_mtime_ns + 5_000_000_000
    hashed.clear()
    assert task._store.output_state()[:2] == (True, None)
    assert hashed == []
    # an edit is still seen
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 9_000_000_000))
    assert task._store.complete() is False


FLAKY = textwrap.dedent("""
    import os
    import pipeflow


    class Flaky(pipeflow.tasks.TaskPickle):
        def run(self):
            if os.environ.get("FLAKY_FAIL"):
                raise ValueError("the source is down\\nsecond line")
            self.save(1)
""")


def test_a_pending_task_whose_last_run_failed_says_so(project, monkeypatch):
    project.write("flaky", FLAKY)
    mod = project.load("flaky")
    flow = pipeflow.Workflow(mod.Flaky)
    assert states(flow) == {"Flaky": ("PENDING", None)}
    monkeypatch.setenv("FLAKY_FAIL", "1")
    with pytest.raises(pipeflow.errors.TaskFailedError):
        flow.run()
    assert states(flow) == {
        "Flaky": ("PENDING", "last run failed: ValueError: the source is down")}
    monkeypatch.delenv("FLAKY_FAIL")
    flow.run()
    assert states(flow) == {"Flaky": ("COMPLETE", None)}
    flow.reset(confirm=False)
    assert states(flow) == {"Flaky": ("PENDING", None)}  # the last run succeeded
    pipeflow.settings.history = False
    monkeypatch.setenv("FLAKY_FAIL", "1")
    with pytest.raises(pipeflow.errors.TaskFailedError):
        flow.run()
    pipeflow.settings.history = True
    assert states(flow) == {"Flaky": ("PENDING", None)}  # unknown: not recorded


WIDE = textwrap.dedent("""
    import pipeflow


    class Leaf(pipeflow.tasks.TaskPickle):
        i = pipeflow.IntParameter()

        def run(self):
            self.save(self.i)


    class Top(pipeflow.tasks.TaskPickle):
        def requires(self):
            return [Leaf(i=i) for i in range(4)]

        def run(self):
            self.save(sum(self.inputLoad()))
""")


def test_worker_processes_reuse_the_code_fingerprints_of_the_run(project, monkeypatch, tmp_path):
    project.write("wide", WIDE)
    mod = project.load("wide")
    log = tmp_path / "hashed.log"
    real = fingerprint._function_hash

    def logged(func):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return real(func)

    monkeypatch.setattr(fingerprint, "_function_hash", logged)
    flow = pipeflow.Workflow(mod.Top)
    flow.run(workers=2, executor="process")
    assert flow.outputLoad() == 6
    assert set(log.read_text().split()) == {str(os.getpid())}  # never in a worker
    record = json.loads(mod.Leaf(i=0)._store.record_file().read_text())
    assert set(record["fp"]["code"]) == {"python", "Leaf.run"}


def test_a_module_edited_on_disk_but_not_reloaded_is_judged_by_the_code_that_runs(project):
    """A notebook without autoreload keeps running the old code: its outputs are current,
    and recording the new source for them would hide the change after a restart."""
    _, flow = setup_flow(project)
    project.write("helpers", HELPERS.replace("x * 10", "x * 11"))
    assert states(flow)["Prepare"] == ("COMPLETE", None)
    project.load("helpers")  # reloaded: now the edit runs
    assert states(flow)["Prepare"][0] == "STALE"


def test_a_python_upgrade_is_a_code_change_that_says_so(project):
    mod, flow = setup_flow(project)
    path = mod.Prepare()._store.record_file()
    doc = json.loads(path.read_text())
    doc["fp"]["code"]["python"] = "3.9"
    path.write_text(json.dumps(doc))
    status, reason = states(flow)["Prepare"]
    assert status == "STALE"
    assert reason.startswith(f"Python changed: 3.9 -> {sys.version_info[0]}.{sys.version_info[1]}")


REGISTRY = textwrap.dedent("""
    import pipeflow


    def base(x):
        return x + 1


    MODELS = {"small": lambda x: base(x) * 2, "big": lambda x: base(x) * 20}
    WEIGHTS = (0.5, 0.25)
    LOG = []  # state: what a run appends here is no change


    class Fit(pipeflow.tasks.TaskPickle):
        model = pipeflow.Parameter(default="small")

        def run(self):
            LOG.append(self.model)
            self.save(MODELS[self.model](1) * WEIGHTS[0])
""")


def test_registries_and_constants_are_code_but_lists_changed_in_place_are_not(project):
    mod = project.edit("registry", REGISTRY)
    flow = pipeflow.Workflow(mod.Fit)
    flow.run()
    assert flow.outputLoad() == 2.0
    name = project.name("registry")
    code = json.loads(mod.Fit()._store.record_file().read_text())["fp"]["code"]
    assert {f"constant {name}.MODELS", f"constant {name}.WEIGHTS",
            f"helper {name}.base"} <= set(code)  # base() is reached through the lambdas
    assert mod.LOG == ["small"]
    mod.LOG.append("something else")  # changed in place: taken as first seen
    assert states(flow)["Fit"] == ("COMPLETE", None)
    mod.LOG = ["rebound"]  # a new object: seen
    assert states(flow)["Fit"] == ("STALE", f"code changed: constant {name}.LOG")
    mod.LOG = []
    assert states(flow)["Fit"] == ("COMPLETE", None)
    for old, new, item in [("base(x) * 20", "base(x) * 30", "MODELS"),
                           ("(0.5, 0.25)", "(0.5, 0.3)", "WEIGHTS"),
                           ("x + 1", "x + 2", "base")]:
        mod = project.edit("registry", REGISTRY.replace(old, new))
        status, reason = states(pipeflow.Workflow(mod.Fit))["Fit"]
        assert status == "STALE", item
        assert item in reason


def test_stable_reprs_do_not_depend_on_the_process():
    script = ("from pipeflow import fingerprint as f;"
              "print(f._stable({'b': frozenset({'x', 'y', 'z'}), 'a': [1, {'q', 'r'}]}))")
    outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1


OPTIONAL = textwrap.dedent("""
    import os
    import pipeflow


    class News(pipeflow.tasks.TaskPickle):
        def run(self):
            if os.environ.get("NEWS_DOWN"):
                raise ConnectionError("feed down")
            self.save(["headline"])


    class Prices(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save([1, 2])


    class Report(pipeflow.tasks.TaskPickle):
        def requires(self):
            return {"prices": Prices(), "news": pipeflow.optional(News())}

        def run(self):
            data = self.inputLoad()
            self.save({"n_prices": len(data["prices"]), "news": data["news"]})
""")


def test_an_optional_upstream_that_succeeds_later_makes_its_downstream_stale(project,
                                                                              monkeypatch):
    project.write("optional", OPTIONAL)
    mod = project.load("optional")
    flow = pipeflow.Workflow(mod.Report)
    monkeypatch.setenv("NEWS_DOWN", "1")
    with pytest.raises(pipeflow.errors.TaskFailedError):
        flow.run()
    assert flow.outputLoad() == {"n_prices": 2, "news": None}
    monkeypatch.delenv("NEWS_DOWN")
    pipeflow.run(mod.News())
    assert states(flow)["Report"] == (
        "STALE", "upstream News() has outputs it did not have when this task last ran")
    flow.run()
    assert flow.outputLoad() == {"n_prices": 2, "news": ["headline"]}


ATTRS = textwrap.dedent("""
    import pipeflow


    class Select(pipeflow.tasks.TaskPickle):
        columns = ["age", "bmi"]
        priority = 1

        def run(self):
            self.save(list(self.columns))
""")


def test_class_attributes_are_code_but_scheduling_attributes_are_not(project):
    mod = project.edit("attrs", ATTRS)
    flow = pipeflow.Workflow(mod.Select)
    flow.run()
    mod = project.edit("attrs", ATTRS.replace("priority = 1", "priority = 0"))
    assert states(pipeflow.Workflow(mod.Select))["Select"] == ("COMPLETE", None)
    mod = project.edit("attrs", ATTRS.replace('["age", "bmi"]', '["age", "bmi", "bp"]'))
    assert states(pipeflow.Workflow(mod.Select))["Select"] == (
        "STALE", "code changed: Select.columns")


# Regression: a record this process had committed in an inline run was trusted in the
# next run (by the history, and by forked workers that inherited it) after a worker had
# replaced it: the history listed the old outputs, and a downstream task's commit kept
# the old upstream digest, so it was found stale right after a successful run.
class _Edited(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"made": "by run()", "pid": os.getpid()})


class _Slow(pipeflow.tasks.TaskJson):
    def run(self):
        import time

        time.sleep(0.3)
        self.save({"x": 1})


@pipeflow.requires(_Edited, _Slow)
class _Uses(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"d": 1})  # does not load its inputs


def _edit(task):
    with open(task.output().path, "w") as fh:
        fh.write('{"edited": "by hand, and longer than before"}')


def test_records_replaced_by_workers_are_not_taken_from_memory():
    pipeflow.run(_Uses())  # inline: this process commits every record
    _edit(_Edited())
    _edit(_Slow())
    assert pipeflow.plan.assess(_Uses()).status is Status.STALE
    assert pipeflow.run(_Uses(), workers=2, executor="process")
    assert pipeflow.plan.assess(_Uses()).status is Status.COMPLETE
    on_disk = pipeflow.integrity.read_record(_Edited()._store.record_path())[0]
    listed = json.loads(pipeflow.last_run(_Edited())["outputs"])
    assert listed["data"][0]["hash"] == on_disk.files["data"][0].digest
