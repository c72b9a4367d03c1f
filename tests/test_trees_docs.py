"""docs/task-trees.md: its examples run and print what the page says; it covers the API.

The page's Python blocks run with the docs harness of ``test_docs_examples`` (one
namespace per page, a scratch folder with the data dir ``data``, only the built-in
executors registered; blocks that ``await`` at top level run with ``asyncio.run``), and
every printed output shown on the page is compared. The quick start also runs as what it
says it is, a script, in a fresh interpreter.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import subprocess
import sys
import time

import pytest
from test_docs_examples import (  # the shared harness (tests/ is on sys.path under pytest)
    BUILT_IN_EXECUTORS,
    describe,
    normalize,
    parse,
    run_in_scratch,
)

from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor
from pipeflow.trees import executors as registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = "docs/task-trees.md"
TEXT = (ROOT / PAGE).read_text(encoding="utf-8")
#: the page's words, whatever the line breaks
WORDS = " ".join(TEXT.split())


@pytest.fixture(scope="module")
def real_defaults(tmp_path_factory):
    """pipeflow's settings as a fresh interpreter has them (as test_docs_examples reads them)."""
    script = ("import json; from pipeflow import settings as s; "
              "print(json.dumps({n: getattr(s, n) for n in sorted(s._NAMES) if n != 'dirpath'}))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path_factory.mktemp("defaults"),
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_every_example_of_the_page_runs_and_prints_what_the_page_shows(tmp_path, real_defaults):
    blocks = parse(PAGE, TEXT)
    assert len(blocks) >= 15
    assert not [b.line for b in blocks if "norun" in b.markers], "every block must run"
    awaiting = [b for b in blocks if re.search(r"(?m)^(?!\s*(async )?def )\S.*\bawait ", b.code)]
    assert len(awaiting) >= 10  # the page's examples await at top level, as a notebook does
    # every block shows its output, but the setup of the errors section
    unchecked = [b.line for b in blocks if b.output is None]
    assert len(unchecked) == 1, unchecked
    before = registry.registered()
    mismatches = run_in_scratch(PAGE, blocks, tmp_path, real_defaults)
    if mismatches:
        pytest.fail(describe(PAGE, mismatches), pytrace=False)
    assert registry.registered() == before  # the page's executors are forgotten after it
    # the default store is under the data dir, as the quick start's comment says
    assert (tmp_path / "example1" / "data" / ".pipeflow" / "tasks.db").is_file()


def test_the_quick_start_runs_as_a_script_in_a_fresh_interpreter(tmp_path):
    quick = parse(PAGE, TEXT)[0]
    assert "asyncio.run(main())" in quick.code and quick.output is not None
    (tmp_path / "quick_start.py").write_text(quick.code, encoding="utf-8")
    proc = subprocess.run([sys.executable, "quick_start.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert normalize(proc.stdout + proc.stderr) == normalize(quick.output)
    assert (tmp_path / "data" / ".pipeflow" / "tasks.db").is_file()


def _section(title: str) -> str:
    """The text of the section ``title``, up to the next heading of its level or higher."""
    lines = TEXT.splitlines()
    starts = [i for i, line in enumerate(lines) if re.fullmatch(rf"#+ {re.escape(title)}", line)]
    assert len(starts) == 1, f"no single section {title!r}"
    level = len(lines[starts[0]].split(" ")[0])
    body = []
    for line in lines[starts[0] + 1:]:
        heading = re.match(r"(#+) ", line)
        if heading and len(heading[1]) <= level:
            break
        body.append(line)
    return "\n".join(body)


@pytest.mark.parametrize("heading", [
    "Task trees or task classes?", "Quick start", "The API", "Executors: `@executor`",
    "The task store: `create_session` and `TaskManager`", "Tasks: `tm.task_repository`",
    "Trees: `TaskTreeNode`", "Running: `distribute_task_tree`", "Cancelling: `cancel_task`",
    "The built-in `system_info_executor`", "Synchronous code: `run_sync`", "Command line",
    "Semantics", "Dependencies decide the order, `parent_id` never",
    "Required and optional dependencies", "Priorities", "The lifecycle",
    "How dependency results reach the inputs", "Results: in the store or in a file",
    "Running a tree again", "Errors before anything runs", "Copies, links and archives",
    "Several processes, crashes and cancellation", "Differences from apflow",
])
def test_the_page_has_its_sections(heading):
    assert re.search(rf"(?m)^#+ {re.escape(heading)}$", TEXT), heading


def test_no_section_is_left_a_placeholder():
    assert "TODO" not in TEXT
    for title in ["Copies, links and archives", "Several processes, crashes and cancellation"]:
        assert len(_section(title).strip().splitlines()) > 10, title


def test_the_command_line_section_links_to_the_cli_page():
    assert "(command-line.md#task-trees-pipeflow-tasks)" in _section("Command line")


@pytest.mark.parametrize("name", [
    # executors and their options
    "@executor", "cancelable", "retries", "retry_delay", "timeout", "system_info_executor",
    # the store, the manager, the repository
    "create_session(path=None)", "TaskManager(db, workers=8, executor=\"thread\")",
    "create_task(name, **fields)",
    "get_task_by_id", "update_task", "delete_task", "query_tasks", "build_task_tree",
    "get_all_tasks_in_tree", "get_root_task", "task_repository", "streaming_callbacks",
    # trees, running, streaming, cancelling, synchronous callers
    "TaskTreeNode", "add_child", "calculate_status", "distribute_task_tree",
    "distribute_task_tree_with_streaming", "set_streaming_context", "task_start",
    "task_completed", "task_failed", "`final`", "cancel_task", "Task not found",
    "cannot cancel", "current_status", "run_sync",
    # copies, links, archives
    "TaskCreator(db)", "from_copy", "from_link", "from_archive", "from_mixed",
    "_link_task_ids", "LinkDeniedError", "save_task_tree",
])
def test_the_page_names_every_part_of_the_api(name):
    assert name in WORDS, name


@pytest.mark.parametrize("decision", [
    "`name` is the executor id", "starts first among ready tasks",
    "waited for until they finish", "by id, anywhere in the store",
    "reset: `pending`, no result, progress 0", "re-runs failed and stopped tasks",
    "`UnknownExecutorError` with suggestions, before anything runs",
    "`TaskNotFoundError`, `CycleError` (with the path)", "2, as the docs say",
    "only the ids listed are links", "new read-only tasks",
])
def test_the_differences_from_apflow_give_each_decision(decision):
    assert decision in " ".join(_section("Differences from apflow").split()), decision


def test_every_public_name_of_pipeflow_trees_a_user_calls_is_on_the_page():
    import pipeflow.trees

    internal = {"ExecutorSpec", "STATUSES", "TaskStore", "TaskRepository", "TaskModel",
                "StreamingCallbacks"}  # reached through the documented objects
    for name in set(pipeflow.trees.__all__) - internal:
        assert f"`{name}" in TEXT or f"{name}(" in TEXT, name


# -- the harness features the page relies on --------------------------------------------------

AWAITING = """\
```python
import asyncio

from pipeflow.trees import executor


@executor("docs-harness-probe")
def probe(inputs):
    return inputs


async def twice(x):
    await asyncio.sleep(0)
    return 2 * x

print(await twice(21))
```

<!-- output -->
```text
42
```

<!-- raises -->
```python
await asyncio.sleep(0)
raise KeyError("inside a coroutine")
```

<!-- output -->
```text
Traceback (most recent call last):
  ...
KeyError: 'inside a coroutine'
```

```python
from pipeflow.trees import executors

print(sorted(executors.registered()))
```

<!-- output -->
```text
['docs-harness-probe', 'system_info_executor']
```
"""


def test_the_harness_runs_top_level_await_and_starts_with_the_built_in_executors(
        tmp_path, real_defaults):
    assert set(BUILT_IN_EXECUTORS) == {"system_info_executor"}

    @executor("docs-registered-outside")
    def outside(inputs):
        return inputs

    try:
        before = registry.registered()
        problems = run_in_scratch("page.md", parse("page.md", AWAITING), tmp_path, real_defaults)
        assert problems == [], describe("page.md", problems)
        assert registry.registered() == before  # the page's probe is gone, outside is back
    finally:
        registry.unregister("docs-registered-outside")


# -- claims of the page its examples do not show -------------------------------------------

@pytest.fixture
def tree_executors():
    """Executors for the claims below (unregistered afterwards)."""
    calls: list[str] = []

    @executor("docs-claims-ok")
    def ok(inputs):
        calls.append("ok")
        return {"seen": sorted(inputs)}

    @executor("docs-claims-slow", timeout=30)
    def slow(inputs):
        for _ in range(100):
            time.sleep(0.02)
        return {"slow": True}

    yield calls
    for name in ("docs-claims-ok", "docs-claims-slow"):
        registry.unregister(name)


def test_params_override_the_executors_timeout(tmp_path, tree_executors):
    assert "A task's `params` can override `retries`, `retry_delay` and `timeout`" in WORDS
    tm = TaskManager(create_session(tmp_path / "t.db"))
    task = tm.task_repository.create_now("docs-claims-slow", params={"timeout": 0.2})
    asyncio.run(tm.distribute_task_tree(TaskTreeNode(task)))
    row = tm.db.get(task.id)
    assert row.status == "failed" and "timeout of 0.2s" in row.error


def test_an_optional_dependency_cancelled_before_the_run_does_not_hold_its_dependent(
        tmp_path, tree_executors):
    assert "but runs whether it completed, failed or was cancelled" in WORDS
    tm = TaskManager(create_session(tmp_path / "t.db"))
    repo = tm.task_repository
    repo.create_now("docs-claims-ok", id="optional", inputs={"from_optional": 1})
    repo.create_now("docs-claims-ok", id="user", inputs={"own": 1},
                    dependencies=[{"id": "optional", "required": False}])
    assert asyncio.run(tm.cancel_task("optional"))["status"] == "cancelled"
    asyncio.run(tm.distribute_task_tree(TaskTreeNode(tm.db.need("user"))))
    assert tm.db.need("optional").status == "cancelled"  # cancelled before it started
    user = tm.db.need("user")
    assert (user.status, user.result) == ("completed", {"seen": ["own"]})
    assert tree_executors == ["ok"]


def test_pre_and_post_hooks_see_the_task_its_inputs_and_its_result(tmp_path, tree_executors):
    seen = []

    async def pre(task):  # an async hook runs on the caller's loop
        seen.append(("pre", task.id))

    tm = TaskManager(create_session(tmp_path / "t.db"), pre_hooks=[pre], post_hooks=[
        lambda task, inputs, result: seen.append(("post", task.id, inputs, result))])
    task = tm.task_repository.create_now("docs-claims-ok", id="h", inputs={"a": 1})
    asyncio.run(tm.distribute_task_tree(TaskTreeNode(task)))
    assert seen == [("pre", "h"), ("post", "h", {"a": 1}, {"seen": ["a"]})]


# -- bugs found while writing the page --------------------------------------------------------

def test_a_tree_task_timeout_says_where_its_timeout_is_set(tmp_path):
    @executor("docs-slow", timeout=0.2)
    def slow(inputs):
        for _ in range(100):  # Python code: the timeout stops it at once
            time.sleep(0.02)

    try:
        tm = TaskManager(create_session(tmp_path / "t.db"))
        task = tm.task_repository.create_now("docs-slow")
        asyncio.run(tm.distribute_task_tree(TaskTreeNode(task)))
        row = tm.db.get(task.id)
    finally:
        registry.unregister("docs-slow")
    assert row.status == "failed"
    assert "ran longer than its timeout of 0.2s" in row.error
    assert "TreeTask.timeout" not in row.error  # a class the user never wrote
    assert "Raise @executor('docs-slow', timeout=...) or the task's params['timeout']" in row.error


def test_post_hooks_are_not_called_for_a_task_cancelled_while_it_ran(tmp_path):
    # the page: post_hooks are "called with the task, its inputs and its result after it
    # completed"; a task cancelled while its (not cancelable) executor ran never completes
    started = asyncio.Event()
    hooked = []

    @executor("docs-uncancelable")
    def work(inputs):
        loop.call_soon_threadsafe(started.set)
        for _ in range(20):
            time.sleep(0.02)
        return {"done": True}

    async def main():
        tm = TaskManager(create_session(tmp_path / "t.db"),
                         post_hooks=[lambda task, inputs, result: hooked.append(task.id)])
        task = await tm.task_repository.create_task(id="w", name="docs-uncancelable")

        async def cancel():
            await started.wait()
            return await tm.cancel_task("w")

        _, reply = await asyncio.gather(tm.distribute_task_tree(TaskTreeNode(task)), cancel())
        return reply, await tm.task_repository.get_task_by_id("w")

    loop = asyncio.new_event_loop()
    try:
        reply, row = loop.run_until_complete(main())
    finally:
        loop.close()
        registry.unregister("docs-uncancelable")
    assert reply == {"status": "cancelled", "message": "Cancelled by user"}
    assert (row.status, row.error, row.result) == ("cancelled", "Cancelled by user", None)
    assert hooked == []
