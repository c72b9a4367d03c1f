"""`pipeflow tasks` used from a shell: deep trees, output piped into `head`."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time

from click.testing import CliRunner

from pipeflow.cli import main


def _chain(n: int) -> list[dict]:
    """A tree n levels deep: each task the child of the one before."""
    items = [{"id": "d-0", "name": "system_info_executor"}]
    items += [{"id": f"d-{i}", "name": "system_info_executor", "parent_id": f"d-{i - 1}"}
              for i in range(1, n)]
    return items


def _create(tmp_path, items) -> list[str]:
    store = tmp_path / "t.db"
    (tmp_path / "tree.json").write_text(json.dumps(items))
    out = CliRunner().invoke(main, ["tasks", "create", str(tmp_path / "tree.json"),
                                    "--store", str(store)], prog_name="pipeflow")
    assert out.exit_code == 0, out.output
    return ["--store", str(store)]


def test_list_root_of_a_very_deep_tree_prints_it(tmp_path):
    """A 1,500-level tree: list --root printed a RecursionError instead of the tree."""
    store = _create(tmp_path, _chain(1500))
    out = CliRunner().invoke(main, ["tasks", "list", "--root", "d-0", *store],
                             prog_name="pipeflow")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert len(lines) == 1500
    assert lines[-1].endswith("d-1499  system_info_executor  pending  priority 2  (level 1499)")
    doc = CliRunner().invoke(main, ["tasks", "list", "--root", "d-0", "--json", *store],
                             prog_name="pipeflow")
    assert doc.exit_code == 0, doc.output
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # json.loads, too, nests a call a level
    try:
        node, depth = json.loads(doc.output), 0
    finally:
        sys.setrecursionlimit(limit)
    while node["children"]:
        node, depth = node["children"][0], depth + 1
    assert (node["id"], depth) == ("d-1499", 1499)


def test_list_root_of_a_deep_tree_stays_narrow(tmp_path):
    """A 110-level tree: the indentation made lines 470 characters wide."""
    store = _create(tmp_path, _chain(110))
    out = CliRunner().invoke(main, ["tasks", "list", "--root", "d-0", *store],
                             prog_name="pipeflow")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[3] == "        └── d-3  system_info_executor  pending  priority 2"
    assert lines[50].startswith("··· ") and lines[50].endswith("(level 50)")


def test_output_piped_into_head_is_no_error(tmp_path):
    """`pipeflow tasks list | head -1`: 'Error: ... BrokenPipeError' on standard error."""
    store = _create(tmp_path, _chain(3000))
    pipeflow = pathlib.Path(sys.executable).parent / "pipeflow"
    shell = (f"{pipeflow} tasks list --root d-0 {' '.join(store)} | head -1;"
             f" echo $? ${{PIPESTATUS[0]}}")
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.stderr == ""
    assert done.stdout.splitlines()[0] == "d-0  system_info_executor  pending  priority 2"
    assert done.stdout.splitlines()[1] == "0 141"


def test_ctrl_c_stops_a_run_whose_executor_blocks(tmp_path):
    """Ctrl-C while a plain executor blocks in a long call: the run hung until it returned."""
    (tmp_path / "blocking.py").write_text(
        "import time\nfrom pipeflow.trees import executor\n\n"
        "@executor('probe_blocks')\ndef probe_blocks(inputs):\n"
        "    time.sleep(600)\n    return {}\n")
    store = _create(tmp_path, [{"id": "b-1", "name": "probe_blocks"}])
    pipeflow = pathlib.Path(sys.executable).parent / "pipeflow"
    run = subprocess.Popen([str(pipeflow), "tasks", "run", "b-1", "-m", "blocking.py", *store],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        from pipeflow.trees import create_session
        db = create_session(store[1])
        for _ in range(600):  # until it runs
            if db.get("b-1").status == "in_progress":
                break
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, err
    assert "interrupted by Ctrl-C" in err
    assert db.get("b-1").status != "in_progress"


def test_show_abridges_one_very_long_line(tmp_path):
    """A 100,000-character string among the inputs filled the terminal with one line."""
    store = _create(tmp_path, [{"id": "long-1", "name": "system_info_executor",
                                "inputs": {"text": "x" * 100_000, "n": 1}}])
    out = CliRunner().invoke(main, ["tasks", "show", "long-1", *store], prog_name="pipeflow")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert max(len(line) for line in lines) <= 320
    text = next(line for line in lines if '"text"' in line)
    assert text.endswith("... (abridged: 100,013 characters; pipeflow tasks show long-1 --json "
                         "prints all of it)")
    assert '  "n": 1' in out.output


def test_run_ending_with_a_cancelled_task_does_not_say_fix_the_failed_ones(tmp_path):
    """Nothing failed: 'Fix the failed tasks' pointed at tasks that do not exist."""
    store = _create(tmp_path, [{"key": "r", "id": "x-1", "name": "system_info_executor"},
                               {"id": "x-2", "name": "system_info_executor", "parent_id": "r",
                                "dependencies": ["r"]}])
    cancelled = CliRunner().invoke(main, ["tasks", "cancel", "x-2", *store],
                                   prog_name="pipeflow")
    assert cancelled.exit_code == 0, cancelled.output
    out = CliRunner().invoke(main, ["tasks", "run", "x-1", *store], prog_name="pipeflow")
    assert out.exit_code == 1
    assert out.output.splitlines()[-1] == (
        "Error: the tree x-1 did not complete (1 cancelled). Completed tasks are kept; a task "
        "cancelled before it started stays cancelled until its status is set to pending, one "
        "stopped while it ran runs again when you run the tree again.")


def test_cancel_json_of_an_unknown_id_is_bad_input_as_the_docs_say(tmp_path):
    """The docs promised apflow's {"error": "Task not found"} answer; it is exit 2."""
    store = _create(tmp_path, [{"id": "k-1", "name": "system_info_executor"}])
    out = CliRunner().invoke(main, ["tasks", "cancel", "nope", "--json", *store],
                             prog_name="pipeflow")
    assert out.exit_code == 2
    assert "TaskNotFoundError: no task with id 'nope'" in out.output
    docs = (pathlib.Path(__file__).parents[1] / "docs" / "command-line.md").read_text()
    bullet = docs[docs.index("- **cancel**: apflow's answer"):].split("\n- ")[0]
    assert '"error"' not in bullet and "exit 2" in bullet


def test_progress_bar_names_the_task_that_runs_not_the_one_before(tmp_path):
    """Tasks one after the other: the start of the next came within the bar's redraw
    interval of the end of the one before, so the bar kept naming the finished task (seen in
    a terminal: '1/3 ... p_two[pb-1]' while pb-2 ran)."""
    import luigi

    from pipeflow.display.progress import ProgressBar
    from pipeflow.events import Event, EventKind

    class Step(luigi.Task):
        n = luigi.IntParameter()

    drawn: list[str] = []

    class View:
        def draw(self, final: bool) -> None:
            drawn.append(bar.text())

    bar = ProgressBar(notebook=False, interval=0.2)
    bar(Event(EventKind.RUN_STARTED, "r", total=2))
    bar.view = View()  # type: ignore[assignment]
    bar._last = 0.0
    bar(Event(EventKind.TASK_STARTED, "r", task=Step(n=1)))
    bar(Event(EventKind.TASK_COMPLETED, "r", task=Step(n=1)))
    bar(Event(EventKind.TASK_STARTED, "r", task=Step(n=2)))  # within the interval
    deadline = time.monotonic() + 5
    while "Step(n=2)" not in (drawn[-1] if drawn else "") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert drawn[-1] == "pipeflow: 1/2 tasks, running Step(n=2)"
    bar(Event(EventKind.TASK_COMPLETED, "r", task=Step(n=2)))
    bar(Event(EventKind.RUN_FINISHED, "r"))
    assert drawn[-1] == "pipeflow: done 2/2 tasks (2 done)"
