"""Task trees in a real Jupyter kernel: top-level ``await``, ``run_sync``, the progress bar.

One notebook runs in a kernel of this venv (nbclient, as in test_notebook_run): it
registers executors in a cell, creates and runs a tree with top-level ``await`` (an async
executor among them, run on the kernel's own event loop), runs another with ``run_sync``
(inside the kernel's running loop), and runs a failing executor, which must show a clean
result (status ``failed`` and the error text), not a traceback. Nothing is cancelled.
"""

from __future__ import annotations

import re

import pytest
from test_notebook_run import run_cells  # a fresh kernel of this venv, data dir set

ANSI = re.compile(r"\x1b\[[0-9;]*m")

REGISTER = """\
import asyncio
from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor, run_sync

@executor("nb_fetch")
def nb_fetch(inputs):
    return {"rows": list(range(inputs["n"]))}

@executor("nb_total")
async def nb_total(inputs):          # async: runs on the caller's event loop
    await asyncio.sleep(0.05)
    return {"total": sum(inputs["rows"]) * inputs.get("scale", 1)}

@executor("nb_broken")
def nb_broken(inputs):
    raise ValueError(f"bad row {inputs['row']}: not a number")

@executor("nb_refuses")
def nb_refuses(inputs):
    return {"error": "quota exceeded", "retry_after": 60}

tm = TaskManager(create_session())
repo = tm.task_repository
print("registered")
"""

AWAIT = """\
fetch = await repo.create_task(id="fetch", name="nb_fetch", inputs={"n": 5})
total = await repo.create_task(id="total", name="nb_total", parent_id="fetch",
                               inputs={"scale": 10}, dependencies=[{"id": "fetch"}])
tree = TaskTreeNode(fetch)
tree.add_child(TaskTreeNode(total))
await tm.distribute_task_tree(tree)
done = await repo.get_task_by_id("total")
print("await:", done.status, done.result, tree.calculate_status())
"""

RUN_SYNC = """\
loop = asyncio.get_running_loop()     # the kernel's loop runs: run_sync must still work
fetch2 = run_sync(repo.create_task(id="fetch2", name="nb_fetch", inputs={"n": 3}))
total2 = run_sync(repo.create_task(id="total2", name="nb_total", dependencies=["fetch2"]))
tree2 = TaskTreeNode(total2)
tree2.add_child(TaskTreeNode(fetch2))
out = run_sync(tm.distribute_task_tree(tree2))
print("run_sync:", out.task.status, out.task.result, loop.is_running())
"""

FAILING = """\
broken = await repo.create_task(id="broken", name="nb_broken", inputs={"row": 7})
after = await repo.create_task(id="after", name="nb_fetch", inputs={"n": 1},
                               dependencies=["broken"])
refuses = await repo.create_task(id="refuses", name="nb_refuses")
tree3 = TaskTreeNode(broken)
tree3.add_child(TaskTreeNode(after))
tree3.add_child(TaskTreeNode(refuses))
result = await tm.distribute_task_tree(tree3)
for node in result:
    print("failing:", node.task.id, node.task.status, node.task.error, node.task.result)
"""

FAILING_SYNC = """\
again = run_sync(tm.distribute_task_tree(tree3))   # a re-run: they fail again, cleanly
print("again:", [(n.task.id, n.task.status) for n in again])
"""

STREAMING = """\
queue = asyncio.Queue()
tm.streaming_callbacks.set_streaming_context(queue)
s = await repo.create_task(id="streamed", name="nb_fetch", inputs={"n": 2})
await tm.distribute_task_tree_with_streaming(TaskTreeNode(s))
print("events:", [queue.get_nowait()["type"] for _ in range(queue.qsize())])
"""

UNKNOWN = """\
typo = await repo.create_task(id="typo", name="nb_fetc")
await tm.distribute_task_tree(TaskTreeNode(typo))
"""

UNKNOWN_SYNC = "run_sync(tm.distribute_task_tree(TaskTreeNode(typo)))"

NAMES = ["register", "await", "run_sync", "failing", "failing_sync", "streaming", "unknown",
         "unknown_sync"]


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """The notebook, executed in a fresh kernel (warnings always shown); its cells by name."""
    done = run_cells(tmp_path_factory.mktemp("trees-notebook"),
                     [REGISTER, AWAIT, RUN_SYNC, FAILING, FAILING_SYNC, STREAMING, UNKNOWN,
                      UNKNOWN_SYNC])
    return dict(zip(NAMES, done, strict=True))


def printed(cell) -> str:
    return ANSI.sub("", "".join(o["text"] for o in cell["outputs"]
                                if o["output_type"] == "stream" and o["name"] == "stdout"))


def errors(cell) -> list[str]:
    """Tracebacks and standard error the cell showed (none expected)."""
    out = ["\n".join(o["traceback"]) for o in cell["outputs"] if o["output_type"] == "error"]
    out += [o["text"] for o in cell["outputs"]
            if o["output_type"] == "stream" and o["name"] == "stderr"]
    return [ANSI.sub("", e) for e in out]


def bars(cell) -> list[dict]:
    """The HTML progress bars the cell shows (final state: nbclient applies the updates)."""
    return [o["data"] for o in cell["outputs"]
            if o["output_type"] in ("display_data", "execute_result")
            and "pipeflow-progress" in o["data"].get("text/html", "")]


@pytest.mark.parametrize("name", NAMES[:6])
def test_no_cell_shows_a_traceback_or_an_error(cells, name):
    assert errors(cells[name]) == []


def test_executors_register_in_a_cell(cells):
    assert printed(cells["register"]) == "registered\n"
    assert bars(cells["register"]) == []


def test_top_level_await_runs_the_tree_with_an_async_executor_on_the_kernels_loop(cells):
    assert printed(cells["await"]) == "await: completed {'total': 100} completed\n"


def test_top_level_await_shows_one_finished_progress_bar(cells):
    (bar,) = bars(cells["await"])
    assert 'data-state="success"' in bar["text/html"]
    assert "pipeflow: done 2/2 tasks (2 done)" in bar["text/plain"]


def test_run_sync_works_inside_the_kernels_running_loop(cells):
    assert printed(cells["run_sync"]) == "run_sync: completed {'total': 3} True\n"


def test_run_sync_shows_its_progress_bar_in_its_own_cell(cells):
    (bar,) = bars(cells["run_sync"])
    assert 'data-state="success"' in bar["text/html"]
    assert "pipeflow: done 2/2 tasks (2 done)" in bar["text/plain"]


def test_a_failing_executor_shows_a_clean_result_not_a_traceback(cells):
    assert printed(cells["failing"]).splitlines() == [
        "failing: broken failed bad row 7: not a number None",
        "failing: after pending None None",
        "failing: refuses failed quota exceeded {'error': 'quota exceeded', 'retry_after': 60}",
    ]
    (bar,) = bars(cells["failing"])
    assert 'data-state="failed"' in bar["text/html"]
    assert "2 failed" in bar["text/plain"] and "1 skipped" in bar["text/plain"]


def test_a_failing_rerun_through_run_sync_is_clean_too(cells):
    assert printed(cells["failing_sync"]) == (
        "again: [('broken', 'failed'), ('after', 'pending'), ('refuses', 'failed')]\n")
    (bar,) = bars(cells["failing_sync"])
    assert 'data-state="failed"' in bar["text/html"]


def test_streaming_in_a_cell_puts_the_events_on_the_queue(cells):
    assert printed(cells["streaming"]) == (
        "events: ['progress', 'task_start', 'task_completed', 'final']\n")
    (bar,) = bars(cells["streaming"])
    assert 'data-state="success"' in bar["text/html"]


@pytest.mark.parametrize("name", ["unknown", "unknown_sync"])
def test_an_error_found_before_the_run_is_short_with_awaited_and_run_sync_calls(cells, name):
    (error,) = errors(cells[name])
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) <= 4, error
    assert ("UnknownExecutorError: task 'nb_fetc' (typo) cannot run: no executor has the id "
            "'nb_fetc'. Did you mean 'nb_fetch'?") in error
    assert "pipeflow/" not in error and "threading" not in error  # no library frames
    assert "pipeflow.full_traceback()" in error
    assert bars(cells[name]) == []  # nothing ran
