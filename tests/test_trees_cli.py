"""Issue 13, the shell: ``pipeflow tasks list|show|create|run|cancel|executors``.

The executors live in a module written into the test's folder (the working directory) and
loaded with ``--module``, as a user's would be. Commands run with click's ``CliRunner``
(stdout and stderr read apart, as a shell pipes them), and twice as real processes (the
installed ``pipeflow`` script: a pipe into ``create -``, a run, Ctrl-C).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from pipeflow import settings
from pipeflow.cli import main
from pipeflow.trees import TaskManager, create_session, run_sync
from pipeflow.trees import executors as registry
from pipeflow.trees.commands import tasks as tasks_group

MODULE = "tcli_exec"
EXECUTORS = '''
import asyncio
from pipeflow.trees import executor

print("the executors module prints while imported")

@executor("tcli_double")
def double(inputs):
    """Double the value."""
    return {"value": inputs.get("value", 1) * 2}

@executor("tcli_fail")
def fail(inputs):
    raise ValueError("no good: " + str(inputs.get("why", "?")) + "\\nsecond line")

@executor("tcli_big")
def big(inputs):
    return {"rows": list(range(3000))}

@executor("tcli_frame")
def frame(inputs):
    import pandas as pd
    return pd.DataFrame({"a": [1, 2]})

@executor("tcli_wait", cancelable=True, description="Wait (for the Ctrl-C test).")
async def wait(inputs):
    await asyncio.sleep(inputs.get("seconds", 60))
    return {"waited": True}
'''
IDS = ("tcli_double", "tcli_fail", "tcli_big", "tcli_frame", "tcli_wait")

#: a tree: t-root -> (t-twice, t-boom, t-after); t-after requires t-boom, optionally t-twice
TREE = [
    {"key": "root", "id": "t-root", "name": "tcli_double", "user_id": "u1",
     "inputs": {"value": 3}},
    {"id": "t-twice", "name": "tcli_double", "parent_id": "root", "dependencies": ["root"],
     "priority": 1, "user_id": "u1"},
    {"key": "boom", "id": "t-boom", "name": "tcli_fail", "parent_id": "t-root",
     "user_id": "u2", "inputs": {"why": "test"}},
    {"id": "t-after", "name": "tcli_double", "parent_id": "root",
     "dependencies": [{"id": "boom", "required": True}, {"id": "t-twice", "required": False}]},
]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Invoke ``pipeflow`` in tmp_path (the cwd); no traceback may ever show."""
    (tmp_path / f"{MODULE}.py").write_text(EXECUTORS)
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()

    def invoke(*args, **kwargs):
        out = runner.invoke(main, [str(a) for a in args], prog_name="pipeflow", **kwargs)
        assert "Traceback" not in out.output, out.output
        assert out.exception is None or isinstance(out.exception, SystemExit), \
            repr(out.exception)
        return out

    yield invoke
    for executor_id in IDS:
        registry.unregister(executor_id)
    sys.modules.pop(MODULE, None)


@pytest.fixture
def store_file(data_dir):
    """The default task store of the test's data dir (not created)."""
    return data_dir / ".pipeflow" / "tasks.db"


def _error_line(out):
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, out.output
    assert not [ln for ln in out.stdout.splitlines() if ln.startswith("Error")], out.stdout
    return lines[0]


def _create(cli, tmp_path, tasks, *extra):
    (tmp_path / "tree.json").write_text(json.dumps(tasks, indent=2))
    return cli("tasks", "create", "tree.json", *extra)


def _statuses(store):
    return {t.id: t.status for t in store.query({})}


# -- queries create nothing ------------------------------------------------------------------------

def test_queries_on_a_fresh_data_dir_create_nothing(cli, store_file, tmp_path):
    out = cli("tasks", "list")
    assert out.exit_code == 0 and out.stderr == ""
    assert out.stdout == ("no task store at data/.pipeflow/tasks.db (no task was created there "
                          "yet: pipeflow tasks create FILE)\n")
    out = cli("tasks", "list", "--json")
    assert out.exit_code == 0 and json.loads(out.stdout) == []
    for command in (("show", "t1"), ("cancel", "t1"), ("run", "t1")):
        out = cli("tasks", *command)
        assert out.exit_code == 2, out.output
        assert _error_line(out) == (
            "Error: no task store at data/.pipeflow/tasks.db: there are no tasks yet. Create "
            "them with pipeflow tasks create FILE (or name the store with --store FILE).")
    elsewhere = tmp_path / "other" / "x.db"
    out = cli("tasks", "list", "--store", elsewhere)
    assert out.exit_code == 0 and "no task store at other/x.db " in out.stdout
    assert not store_file.exists() and not elsewhere.parent.exists()
    assert not (tmp_path / "d2").exists()
    out = cli("tasks", "list", "--dir", tmp_path / "d2")
    assert out.exit_code == 0 and "no task store at d2/.pipeflow/tasks.db " in out.stdout
    assert not (tmp_path / "d2").exists()


# -- create ----------------------------------------------------------------------------------------

def test_create_stores_a_tree_with_keys_and_prints_its_ids(cli, tmp_path, store_file):
    out = _create(cli, tmp_path, TREE)
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == ["t-root", "t-twice", "t-boom", "t-after"]
    assert out.stderr == "created 4 tasks in data/.pipeflow/tasks.db\n"
    store = create_session(store_file)
    after = store.need("t-after")
    assert after.dependencies == [{"id": "t-boom", "required": True},
                                  {"id": "t-twice", "required": False}]
    assert after.parent_id == "t-root" and after.priority == 2 and after.status == "pending"
    assert store.need("t-twice").dependencies == [{"id": "t-root", "required": True}]
    assert store.need("t-twice").priority == 1
    assert store.need("t-root").has_children is True
    assert store.need("t-boom").inputs == {"why": "test"}


def test_create_gives_new_ids_to_tasks_without_one_and_json_maps_keys(cli, tmp_path,
                                                                     store_file):
    tasks = [{"key": "a", "name": "tcli_double"},
             {"key": "b", "name": "tcli_double", "dependencies": ["a"], "parent_id": "a"}]
    out = _create(cli, tmp_path, tasks, "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [(d["key"], d["name"]) for d in doc] == [("a", "tcli_double"), ("b", "tcli_double")]
    assert all(UUID.match(d["id"]) for d in doc) and doc[0]["id"] != doc[1]["id"]
    store = create_session(store_file)
    assert store.need(doc[1]["id"]).dependencies == [{"id": doc[0]["id"], "required": True}]
    assert store.need(doc[1]["id"]).parent_id == doc[0]["id"]
    # one object (not a list) from standard input; a stored task named by its id
    one = {"name": "tcli_double", "dependencies": [doc[1]["id"]], "inputs": {"value": 2}}
    out = cli("tasks", "create", "-", input=json.dumps(one))
    assert out.exit_code == 0, out.output
    (new_id,) = out.stdout.split()
    assert store.need(new_id).dependencies == [{"id": doc[1]["id"], "required": True}]


@pytest.mark.parametrize("tasks,message", [
    ([{"name": "tcli_double", "id": "x"}, {"name": "tcli_double", "dependencies": ["xx"]}],
     "tree.json, task #2 ('tcli_double'): TaskNotFoundError: dependency 'xx' is neither a key "
     "or id of an earlier task of the file nor a task in the store. Did you mean 'x'?"),
    ([{"name": "tcli_double", "dependencies": ["later"]}, {"key": "later", "name": "t"}],
     "tree.json, task #1 ('tcli_double'): ParameterError: dependency 'later' names task #2 of "
     "the file, which comes later: put the tasks a task depends on (and its parent) before it."),
    ([{"key": "me", "name": "tcli_double", "parent_id": "me"}],
     "tree.json, task #1 ('tcli_double'): ParameterError: parent 'me' names the task itself."),
    ([{"name": "tcli_double", "priorty": 1}],
     "tree.json, task #1 ('tcli_double'): ParameterError: unknown field 'priorty'. Did you "
     "mean 'priority'? A task of a file has: id, key, name, user_id, parent_id, priority, "
     "dependencies, inputs, params, schemas."),
    ([{"name": "tcli_double", "priority": 7}],
     "tree.json, task #1 ('tcli_double'): ParameterError: priority of task 'tcli_double' must "
     "be 0 (urgent), 1 (high), 2 (normal) or 3 (low), not 7."),
    ([{"key": "a", "name": "n"}, {"key": "a", "name": "n"}],
     "tree.json, task #2 ('n'): ParameterError: the key 'a' is given to task #1 too: give "
     "each task its own key."),
    ([{"name": "n", "id": "a"}, {"name": "n", "id": "a"}],
     "tree.json, task #2 ('n'): ParameterError: the id 'a' is given to task #1 too: give "
     "each task its own id."),
    ([{"name": "n"}, "not a task"],
     "tree.json, task #2: ParameterError: a task is a JSON object such as {\"name\": "
     "\"fetch_data\", \"inputs\": {}}, not 'not a task'."),
    ([{"inputs": {}}],
     "tree.json, task #1: ParameterError: a task needs a name (its executor id), a non-empty "
     "string, not None: create_task(name='fetch_data', ...)."),
    ([], "tree.json holds no task: give one task object or a list of them."),
    ({"name": "n", "inputs": [1]},
     "tree.json, task #1 ('n'): ParameterError: inputs of task 'n' must be a dict, not [1]."),
])
def test_create_refuses_bad_input_and_stores_nothing(cli, tmp_path, store_file, tasks,
                                                     message):
    create_session(store_file)  # an existing, empty store
    out = _create(cli, tmp_path, tasks)
    assert out.exit_code == 2, out.output
    assert _error_line(out) == f"Error: {message}"
    assert out.stdout == ""
    assert create_session(store_file).query({}) == []


def test_create_is_all_or_nothing_against_the_store(cli, tmp_path, store_file):
    assert _create(cli, tmp_path, [{"id": "taken", "name": "n"}]).exit_code == 0
    out = _create(cli, tmp_path, [{"id": "fresh", "name": "n"}, {"id": "taken", "name": "n"}])
    assert out.exit_code == 2
    assert _error_line(out) == (
        f"Error: tree.json, task #2 ('n'): ParameterError: the id 'taken' is taken by a task "
        f"of the store {str(store_file)!r}: leave id out to get a new one, or pick another.")
    assert [t.id for t in create_session(store_file).query({})] == ["taken"]
    out = _create(cli, tmp_path, [{"key": "taken", "name": "n"}])
    assert out.exit_code == 2
    assert _error_line(out) == (
        "Error: tree.json, task #1 ('n'): ParameterError: the key 'taken' is the id of a task "
        "in the store: a reference to it would be ambiguous. Pick another key.")
    out = _create(cli, tmp_path, [{"key": "a", "id": "a", "name": "n"},
                                  {"key": "b", "name": "n", "parent_id": "taken"},
                                  {"key": "a2", "id": "b", "name": "n"}])
    assert out.exit_code == 2
    assert _error_line(out) == (
        "Error: tree.json, task #2 ('n'): ParameterError: the key 'b' is the id of task #3: "
        "a reference to it would be ambiguous. Pick another key.")


def test_create_reports_json_syntax_errors_with_line_and_column(cli, tmp_path):
    (tmp_path / "bad.json").write_text('[\n  {"name": "a"}\n  {"name": "b"}\n]\n')
    out = cli("tasks", "create", tmp_path / "bad.json")
    assert out.exit_code == 2
    assert _error_line(out) == (f"Error: {tmp_path / 'bad.json'} is not valid JSON: line 3, "
                                f"column 3: Expecting ',' delimiter. Fix the file.")
    out = cli("tasks", "create", "-", input='{"name": "a", "name": "b"}')
    assert out.exit_code == 2
    assert _error_line(out) == ("Error: standard input is not valid JSON: the key 'name' is "
                                "given twice in one object (the second would silently win): "
                                "keep one. Fix the file.")
    out = cli("tasks", "create", tmp_path / "nothere.json")
    assert out.exit_code == 2
    assert _error_line(out) == (f"Error: {tmp_path / 'nothere.json'} does not exist (relative "
                                f"to {tmp_path}).")


# -- list ------------------------------------------------------------------------------------------

def test_list_shows_one_line_per_task_and_filters(cli, tmp_path):
    assert _create(cli, tmp_path, TREE).exit_code == 0
    out = cli("tasks", "list")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "PRIORITY", "USER", "PARENT",
                                "UPDATED"]
    rows = [ln.split() for ln in lines[1:]]
    assert [r[:6] for r in rows] == [
        ["t-root", "tcli_double", "pending", "2", "u1", "-"],
        ["t-twice", "tcli_double", "pending", "1", "u1", "t-root"],
        ["t-boom", "tcli_fail", "pending", "2", "u2", "t-root"],
        ["t-after", "tcli_double", "pending", "2", "-", "t-root"]]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", " ".join(r[6:])) for r in rows)
    out = cli("tasks", "list", "--user", "u1", "--json")
    doc = json.loads(out.stdout)
    assert [d["id"] for d in doc] == ["t-root", "t-twice"]
    assert list(doc[1]) == ["id", "name", "status", "priority", "user_id", "parent_id",
                            "dependencies", "progress", "error", "created_at", "updated_at"]
    assert doc[1]["dependencies"] == [{"id": "t-root", "required": True}]
    out = cli("tasks", "list", "--limit", "2")
    assert [ln.split()[0] for ln in out.stdout.splitlines()[1:]] == ["t-boom", "t-after"]
    assert out.stderr == "(the newest 2 tasks; --limit 0 shows all)\n"
    out = cli("tasks", "list", "--status", "failed")
    assert out.exit_code == 0 and out.stdout == "no tasks match (status failed)\n"
    out = cli("tasks", "list", "--status", "faild")
    assert out.exit_code == 2 and "'faild' is not one of" in out.stderr


def test_list_root_shows_the_tree(cli, tmp_path, store_file):
    assert _create(cli, tmp_path, [*TREE, {"id": "t-leaf", "name": "tcli_double",
                                           "parent_id": "t-boom"}]).exit_code == 0
    out = cli("tasks", "list", "--root", "t-root")
    assert out.exit_code == 0, out.output
    assert out.stdout == (
        "t-root  tcli_double  pending  priority 2  user u1\n"
        "├── t-twice  tcli_double  pending  priority 1  user u1\n"
        "├── t-boom  tcli_fail  pending  priority 2  user u2\n"
        "│   └── t-leaf  tcli_double  pending  priority 2\n"
        "└── t-after  tcli_double  pending  priority 2\n")
    out = cli("tasks", "list", "--root", "t-root", "--user", "u2")
    assert out.stdout == ("t-root  tcli_double  pending  priority 2  user u1\n"
                          "└── t-boom  tcli_fail  pending  priority 2  user u2\n")
    doc = json.loads(cli("tasks", "list", "--root", "t-boom", "--json").stdout)
    assert doc["id"] == "t-boom" and [c["id"] for c in doc["children"]] == ["t-leaf"]
    assert doc["children"][0]["children"] == []
    out = cli("tasks", "list", "--root", "t-rot")
    assert out.exit_code == 2
    assert _error_line(out) == (f"Error: TaskNotFoundError: no task with id 't-rot' in the "
                                f"task store {str(store_file)!r}. Did you mean 't-root'?")
    out = cli("tasks", "list", "--root", "t-root", "--limit", "3")
    assert out.exit_code == 2
    assert _error_line(out) == ("Error: --limit applies to the list of tasks; --root shows "
                                "the whole tree: pass one.")


# -- show ------------------------------------------------------------------------------------------

def test_show_prints_every_field_and_the_dependencies_statuses(cli, tmp_path, store_file):
    assert _create(cli, tmp_path, TREE).exit_code == 0
    assert cli("tasks", "run", "t-root", "--module", MODULE).exit_code == 1
    out = cli("tasks", "show", "t-after")
    assert out.exit_code == 0, out.output
    text = out.stdout
    for line in ("id:            t-after", "name:          tcli_double",
                 "status:        pending", "priority:      2 (normal)",
                 "user:          -", "parent:        t-root", "origin:        create",
                 "progress:      0%", "inputs:        {}", "result:        -",
                 "error:         -", "dependencies:",
                 "  t-boom  tcli_fail  failed  required",
                 "  t-twice  tcli_double  completed  optional"):
        assert line in text.splitlines(), text
    out = cli("tasks", "show", "t-boom")
    assert "error:         no good: test" in out.stdout.splitlines()
    assert "               second line" in out.stdout.splitlines()
    doc = json.loads(cli("tasks", "show", "t-twice", "--json").stdout)
    assert doc["id"] == "t-twice" and doc["status"] == "completed"
    assert doc["result"] == {"value": 12} and doc["inputs"] == {"value": 6}
    assert doc["dependency_status"] == {"t-root": "completed"}
    assert doc["executor"] == "tcli_double" and doc["completed_at"].endswith("+00:00")
    assert {"created_at", "started_at", "updated_at", "parent_id", "user_id", "schemas",
            "params", "origin_type", "task_tree_id"} <= set(doc)
    out = cli("tasks", "show", "t-twic")
    assert out.exit_code == 2
    assert _error_line(out) == (f"Error: TaskNotFoundError: no task with id 't-twic' in the "
                                f"task store {str(store_file)!r}. Did you mean 't-twice'?")


def test_show_abridges_a_large_result(cli, tmp_path):
    assert _create(cli, tmp_path, [{"id": "big", "name": "tcli_big"}]).exit_code == 0
    assert cli("tasks", "run", "big", "--module", MODULE).exit_code == 0
    out = cli("tasks", "show", "big")
    lines = out.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("result:"))
    shown = [ln for ln in lines[start:] if not ln.startswith("error:")]
    assert len(shown) <= 22
    assert any("(abridged: the result is 3,004 lines; pipeflow tasks show big --json prints "
               "all of it)" in ln for ln in shown), out.stdout
    assert len(json.loads(cli("tasks", "show", "big", "--json").stdout)["result"]["rows"]) \
        == 3000


def test_show_describes_a_result_that_is_not_json(cli, tmp_path):
    assert _create(cli, tmp_path, [{"id": "df", "name": "tcli_frame"}]).exit_code == 0
    assert cli("tasks", "run", "df", "--module", MODULE).exit_code == 0
    lines = cli("tasks", "show", "df").stdout.splitlines()
    start = lines.index("result:        a pandas.DataFrame (not JSON):")
    assert lines[start + 1:start + 4] == ["                  a", "               0  1",
                                          "               1  2"]
    doc = json.loads(cli("tasks", "show", "df", "--json").stdout)
    assert doc["result"] == ("<pandas.DataFrame: not JSON; read it in Python: "
                             "task_repository.get_task_by_id('df')>")


# -- run -------------------------------------------------------------------------------------------

def test_run_runs_the_stored_tree_and_exits_1_when_a_task_failed(cli, tmp_path, store_file):
    assert _create(cli, tmp_path, TREE).exit_code == 0
    out = cli("tasks", "run", "t-root", "--module", MODULE)
    assert out.exit_code == 1, out.output
    assert out.stdout == (
        "tree t-root: 4 tasks: 2 completed, 1 failed, 1 pending\n"
        "  failed    t-boom (tcli_fail): no good: test\n"
        "  pending   t-after (tcli_double): waits for t-boom (failed)\n")
    assert _error_line(out) == (
        "Error: the tree t-root did not complete (1 failed, 1 pending). Fix the failed tasks "
        "and run it again: completed tasks are kept, failed ones run again.")
    assert "the executors module prints while imported" in out.stderr
    store = create_session(store_file)
    assert _statuses(store) == {"t-root": "completed", "t-twice": "completed",
                                "t-boom": "failed", "t-after": "pending"}
    assert store.need("t-twice").result == {"value": 12}
    # the failing task's executor is replaced: a re-run finishes the tree
    (tmp_path / "tcli_fix.py").write_text(
        "from pipeflow.trees import executor\n"
        "@executor('tcli_fail')\ndef fixed(inputs):\n    return {'fixed': True}\n")
    out = cli("tasks", "run", "t-root", "--module", MODULE, "--module",
              tmp_path / "tcli_fix.py", "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)  # only the document on stdout (the module's print: stderr)
    assert doc["root"] == "t-root" and doc["success"] is True
    assert doc["counts"] == {"pending": 0, "in_progress": 0, "completed": 4, "failed": 0,
                             "cancelled": 0}
    assert [(t["id"], t["status"], t["error"]) for t in doc["tasks"]] == [
        ("t-root", "completed", None), ("t-twice", "completed", None),
        ("t-boom", "completed", None), ("t-after", "completed", None)]
    assert store.need("t-after").inputs == {"fixed": True, "value": 12}
    sys.modules.pop("tcli_fix", None)


def test_run_refuses_bad_input_before_anything_runs(cli, tmp_path, store_file):
    assert _create(cli, tmp_path, TREE).exit_code == 0
    out = cli("tasks", "run", "t-root")  # no --module: the executors are unknown
    assert out.exit_code == 2
    assert re.match(r"Error: UnknownExecutorError: task 'tcli_double' \(t-\w+\) cannot run: "
                    r"no executor has the id 'tcli_double'\. ", _error_line(out))
    out = cli("tasks", "run", "t-root", "--module", "tcli_exe")
    assert out.exit_code == 2
    assert _error_line(out) == (
        f"Error: --module tcli_exe: there is no module 'tcli_exe' in the working directory "
        f"({tmp_path}) or on the Python path. Did you mean 'tcli_exec'? Run pipeflow in the "
        f"folder of tcli_exe.py, add its folder to PYTHONPATH, or give its file: --module "
        f"path/to/tcli_exe.py.")
    out = cli("tasks", "run", "t-root", "--module", "gone.py")
    assert out.exit_code == 2
    assert _error_line(out) == (f"Error: --module gone.py: there is no file 'gone.py' "
                                f"(relative to {tmp_path}).")
    (tmp_path / "tcli_broken.py").write_text("import os\n\nraise RuntimeError('no config')\n")
    out = cli("tasks", "run", "t-root", "--module", "tcli_broken")
    assert out.exit_code == 1
    assert _error_line(out) == (f"Error: importing 'tcli_broken' failed at "
                                f"{tmp_path / 'tcli_broken.py'}:3: RuntimeError: no config")
    out = cli("tasks", "run", "t-roo", "--module", MODULE)
    assert out.exit_code == 2
    assert "Did you mean 't-root'?" in _error_line(out)
    out = cli("tasks", "run", "t-root", "--module", MODULE, "--workers", "0")
    assert out.exit_code == 2 and "0 is not in the range x>=1" in out.stderr
    assert set(_statuses(create_session(store_file)).values()) == {"pending"}


# -- cancel ----------------------------------------------------------------------------------------

def test_cancel(cli, tmp_path, store_file):
    assert _create(cli, tmp_path, TREE).exit_code == 0
    out = cli("tasks", "cancel", "t-after", "--message", "not needed")
    assert out.exit_code == 0, out.output
    assert out.stdout == "cancelled t-after: not needed\n"
    store = create_session(store_file)
    assert store.need("t-after").status == "cancelled"
    assert store.need("t-after").error == "not needed"
    out = cli("tasks", "cancel", "t-after")
    assert out.exit_code == 1
    assert out.stdout == "Task t-after is already cancelled, cannot cancel\n"
    doc = json.loads(cli("tasks", "cancel", "t-after", "--json").stdout)
    assert doc == {"status": "failed", "message": "Task t-after is already cancelled, "
                   "cannot cancel", "current_status": "cancelled"}
    out = cli("tasks", "cancel", "t-boo")
    assert out.exit_code == 2
    assert "Did you mean 't-boom'?" in _error_line(out)
    # a task cancelled before it started stays cancelled when its tree runs
    out = cli("tasks", "run", "t-root", "--module", MODULE)
    assert out.exit_code == 1
    assert "  cancelled t-after (tcli_double): not needed" in out.stdout.splitlines()


# -- executors -------------------------------------------------------------------------------------

def test_executors_lists_the_registered_executors(cli):
    out = cli("tasks", "executors", "--module", MODULE)
    assert out.exit_code == 0, out.output
    rows = {ln.split()[0]: ln for ln in out.stdout.splitlines()[1:]}
    assert out.stdout.splitlines()[0].split() == ["ID", "KIND", "DESCRIPTION"]
    assert rows["tcli_double"].split(None, 2)[1:] == ["sync", "Double the value."]
    assert rows["tcli_wait"].split(None, 2)[1:] == ["async,cancelable",
                                                   "Wait (for the Ctrl-C test)."]
    assert "system_info_executor" in rows
    doc = {d["id"]: d for d in json.loads(
        cli("tasks", "executors", "--module", MODULE, "--json").stdout)}
    assert doc["tcli_wait"] == {"id": "tcli_wait", "description": "Wait (for the Ctrl-C test).",
                                "async": True, "cancelable": True, "retries": 0,
                                "retry_delay": 0.0, "timeout": None}


# -- completion, the group alone -------------------------------------------------------------------

def _complete(cli, words):
    out = cli(env={"_PIPEFLOW_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(words),
                   "COMP_CWORD": str(len(words) - 1)})
    assert out.exit_code == 0
    return [ln.split(",", 1)[1] for ln in out.stdout.splitlines() if ln]


def test_completion_of_commands_and_task_ids(cli, tmp_path, store_file):
    assert _complete(cli, ["pipeflow", "ta"]) == ["tasks"]
    assert _complete(cli, ["pipeflow", "tasks", ""]) == [
        "cancel", "create", "executors", "list", "run", "show"]
    assert _complete(cli, ["pipeflow", "tasks", "show", "t-"]) == []  # no store: none
    assert not store_file.exists()
    assert _create(cli, tmp_path, TREE).exit_code == 0
    assert _complete(cli, ["pipeflow", "tasks", "show", "t-b"]) == ["t-boom"]
    assert _complete(cli, ["pipeflow", "tasks", "list", "--root", "t-"]) == [
        "t-root", "t-twice", "t-boom", "t-after"]


def test_the_group_alone_still_gives_one_error_line(tmp_path):
    out = CliRunner().invoke(tasks_group, ["show", "x", "--store", str(tmp_path / "no.db")])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert out.stderr.startswith("Error: no task store at no.db: there are no tasks yet.")


# -- real processes --------------------------------------------------------------------------------

def _script():
    script = pathlib.Path(sys.executable).with_name("pipeflow")
    assert script.exists(), f"the pipeflow console script is not installed at {script}"
    return script


def test_a_real_shell_pipes_json_into_create_and_runs_the_tree(tmp_path):
    (tmp_path / f"{MODULE}.py").write_text(EXECUTORS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def sh(*args, stdin=None):
        return subprocess.run([str(_script()), "tasks", *args, "--dir", str(tmp_path / "d")],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              input=stdin, timeout=120, check=False)

    made = sh("create", "-", stdin=json.dumps(TREE[:2]))
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == ["t-root", "t-twice"]
    ran = sh("run", "t-root", "--module", f"{MODULE}.py")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "tree t-root: 2 tasks: 2 completed\n"
    shown = sh("show", "t-twice", "--json")
    assert json.loads(shown.stdout)["result"] == {"value": 12}
    bad = sh("show", "t-twise")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("Error: TaskNotFoundError: no task with id 't-twise'")


def test_ctrl_c_stops_a_tree_run_with_exit_130(tmp_path):
    (tmp_path / f"{MODULE}.py").write_text(EXECUTORS)
    store = tmp_path / "s.db"
    db = create_session(store)
    run_sync(TaskManager(db).task_repository.create_task(
        name="tcli_wait", id="w", inputs={"seconds": 60}))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([str(_script()), "tasks", "run", "w", "--module", MODULE,
                             "--store", str(store), "--dir", str(tmp_path / "d")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while db.need("w").status != "in_progress" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert db.need("w").status == "in_progress"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        "pipeflow tasks run w: interrupted by Ctrl-C; completed tasks are kept: run it again "
        "to finish.")
    assert db.need("w").status != "in_progress"


def test_the_default_store_follows_the_data_dir(cli, tmp_path):
    settings_dir = settings.dirpath
    out = cli("tasks", "create", "-", "--dir", tmp_path / "other",
              input='{"id": "o", "name": "n"}')
    assert out.exit_code == 0, out.output
    assert (tmp_path / "other" / ".pipeflow" / "tasks.db").exists()
    assert not (settings_dir / ".pipeflow" / "tasks.db").exists()


# -- a fix in pipeflow.trees.running -----------------------------------------------------------

def test_a_cancelled_async_executor_on_a_loop_of_its_own_stops(tmp_path):
    """Regression: without the caller's loop (a worker process; a Ctrl-C that stopped it
    as the task started), an async executor ran on a ThreadPoolExecutor's loop that
    cancelling could not stop: the process then waited for it at exit (a Ctrl-C'd
    ``pipeflow tasks run`` hung until the executor finished)."""
    import asyncio
    import threading
    import types

    from pipeflow.errors import TaskCancelledError
    from pipeflow.trees import running

    started, stopped = threading.Event(), threading.Event()

    async def work(inputs):
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    spec = registry.ExecutorSpec("tcli_own_loop", work, cancelable=True)
    create_session(tmp_path / "s.db")
    task = types.SimpleNamespace(key="tcli-k1", store=str(tmp_path / "s.db"), claim="none")

    def cancel_once_started():
        if started.wait(10):
            running.CANCELS["tcli-k1"] = "stop"

    threading.Thread(target=cancel_once_started, daemon=True).start()
    try:
        with pytest.raises(TaskCancelledError, match="stop"):
            running._await(spec, {}, task)
        assert stopped.wait(5), "the executor's coroutine was not cancelled"
    finally:
        running.CANCELS.pop("tcli-k1", None)
