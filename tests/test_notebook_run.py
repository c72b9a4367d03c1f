"""What a run shows in a notebook: a truthful progress bar, short errors, a one-line Stop.

The notebook tests execute cells in a real Jupyter kernel (nbclient) running this venv's
Python; the unit tests feed events to the progress sink and render errors without one.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap

import pytest

import pipeflow
from pipeflow import errors
from pipeflow.display.progress import ProgressBar
from pipeflow.events import Event, EventKind

ANSI = re.compile(r"\x1b\[[0-9;]*m")

# -- running cells in a real kernel ------------------------------------------------------------


def run_cells(tmp_path, cells: list[str], timeout: int = 120) -> list[dict]:
    """Execute ``cells`` in a fresh kernel of this venv; the executed cells (their outputs)."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    spec_dir = tmp_path / "kernels" / "pipeflow-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pipeflow test", "language": "python"}))
    setup = textwrap.dedent(f"""\
        import os, signal, threading, time, warnings
        warnings.simplefilter("always")
        import pipeflow
        pipeflow.set_dir({str(tmp_path / 'nbdata')!r})
        def stop_in(seconds):  # the notebook's Stop button: SIGINT to the kernel
            threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT)).start()
        """)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c)
                                         for c in [setup, *cells]])
    km = KernelManager(kernel_name="pipeflow-test", kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[str(tmp_path / "kernels")]))
    client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:  # nbclient leaves the kernel process running: stop it (tests after this
        # one check that no child process is left)
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return [dict(c) for c in nb.cells[1:]]


def texts(cell: dict) -> str:
    """Everything a cell shows as text (streams, plain-text displays, the error), no ANSI."""
    parts = []
    for o in cell["outputs"]:
        if o["output_type"] == "stream":
            parts.append(o["text"])
        elif o["output_type"] in ("display_data", "execute_result"):
            parts.append(str(o["data"].get("text/plain", "")))
        elif o["output_type"] == "error":
            parts.append("\n".join(o["traceback"]))
    return ANSI.sub("", "\n".join(parts))


def error_lines(cell: dict) -> list[str]:
    errs = [o for o in cell["outputs"] if o["output_type"] == "error"]
    assert len(errs) == 1, cell["outputs"]
    return ANSI.sub("", "\n".join(errs[0]["traceback"])).splitlines()


def bars(cell: dict) -> list[dict]:
    """The progress bars a cell shows (their final state: nbclient applies the updates)."""
    return [o for o in cell["outputs"] if o["output_type"] == "display_data"
            and "pipeflow-progress" in o["data"].get("text/html", "")]


TASKS = """\
import pipeflow, time
class Up(pipeflow.tasks.TaskPickle):
    n = pipeflow.IntParameter(default=0)
    def run(self):
        self.save(self.n)
class Bad(pipeflow.tasks.TaskPickle):
    def requires(self):
        return [Up(n=1), Up(n=2)]
    def run(self):
        d = {}
        d['missing']
class After(pipeflow.tasks.TaskPickle):
    def requires(self):
        return Bad()
    def run(self):
        self.save(1)
class Slow(pipeflow.tasks.TaskPickle):
    n = pipeflow.IntParameter(default=0)
    def requires(self):
        return Up(n=100 + self.n)
    def run(self):
        for _ in range(300):  # busy in Python: a cancel stops it at once
            time.sleep(0.1)
        self.save(1)
"""


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """A failing run (inline, thread and process executors), then full_traceback()."""
    tmp = tmp_path_factory.mktemp("failing")
    return run_cells(tmp, [
        TASKS,
        "pipeflow.Workflow(After).run()",
        "pipeflow.full_traceback()",
        "pipeflow.Workflow(After).run(workers=2, executor='thread')",
        "pipeflow.Workflow(After).run(workers=2, executor='process')",
        "pipeflow.Workflow(After).run(wrokers=2)",
    ])


def test_a_failing_run_shows_the_users_frames_and_the_message_only(failing):
    lines = error_lines(failing[1])
    text = "\n".join(lines)
    assert len(lines) <= 15, text
    assert "d['missing']" in text and "KeyError: 'missing'" in text  # the user's line
    assert "pipeflow.Workflow(After).run()" in text  # the cell's line
    assert "TaskFailedError" in text and "Bad(): KeyError: 'missing'" in text
    assert "pipeflow/" not in text and "engines" not in text  # no library frame
    assert "pipeflow.full_traceback()" in text  # the full one is one call away
    assert "TqdmWarning" not in "\n".join(texts(c) for c in failing)


def test_the_full_traceback_prints_in_the_next_cell(failing):
    full = texts(failing[2])
    assert "pipeflow/engines/" in full and "pipeflow/operations.py" in full
    assert "d['missing']" in full and "TaskFailedError" in full
    assert len(full.splitlines()) > len(error_lines(failing[1]))


@pytest.mark.parametrize("cell", [3, 4], ids=["thread", "process"])
def test_worker_failures_show_the_users_frames_too(failing, cell):
    lines = error_lines(failing[cell])
    text = "\n".join(lines)
    assert len(lines) <= 15, text
    assert "d['missing']" in text, text  # from a worker process too (its traceback text)
    assert "KeyError: 'missing'" in text
    assert "pipeflow/" not in text and "executors" not in text


def test_other_pipeflow_errors_are_short(failing):
    lines = error_lines(failing[5])
    text = "\n".join(lines)
    assert len(lines) <= 6, text
    assert "ParameterError" in text and "wrokers" in text and "workers" in text
    assert "pipeflow/" not in text


def test_a_failed_runs_bar_is_marked_failed_with_its_counts(failing):
    (bar,) = bars(failing[1])
    plain = bar["data"]["text/plain"]
    assert "FAILED" in plain
    assert "2 done, 1 failed, 1 skipped" in plain  # Up(1), Up(2); Bad; After
    assert 'data-state="failed"' in bar["data"]["text/html"]
    assert "#16a34a" not in bar["data"]["text/html"]  # not green


@pytest.fixture(scope="module")
def stops(tmp_path_factory):
    """Stop-button runs on every executor, during a background run's result() too."""
    tmp = tmp_path_factory.mktemp("stops")
    return run_cells(tmp, [
        TASKS,
        "stop_in(1.5)\npipeflow.Workflow(Slow, {'n': 1}).run()",
        "stop_in(1.5)\npipeflow.Workflow(Slow, {'n': 2}).run(workers=2, executor='thread')",
        "stop_in(2.5)\npipeflow.Workflow(Slow, {'n': 3}).run(workers=2, executor='process')",
        "h = pipeflow.Workflow(Slow, {'n': 4}).start()\nstop_in(1.5)\nh.result()",
        "import glob\nprint(sorted(os.path.basename(p) for p in glob.glob("
        "os.path.join(pipeflow.settings.dir, '**', 'Slow*'), recursive=True)))",
        "try:\n    stop_in(1)\n    pipeflow.Workflow(Slow, {'n': 0}).run()\n"
        "except KeyboardInterrupt as e:\n    print('caught', type(e).__mro__[1].__name__)",
    ])


@pytest.mark.parametrize("cell", [1, 2, 3, 4], ids=["inline", "thread", "process", "start"])
def test_the_stop_button_prints_one_line(stops, cell):
    lines = [ln for ln in error_lines(stops[cell]) if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"RunInterrupted: Run cancelled (Stop): Slow(n={cell}) did not finish")
    assert "partial outputs were removed" in lines[0]
    assert "1 finished task keeps its outputs" in lines[0]  # its Up(n=100 + n)


@pytest.mark.parametrize("cell", [1, 2, 3, 4], ids=["inline", "thread", "process", "start"])
def test_a_stopped_runs_bar_is_marked_cancelled(stops, cell):
    (bar,) = bars(stops[cell])
    assert "CANCELLED" in bar["data"]["text/plain"], bar["data"]["text/plain"]
    assert "1 done, 1 cancelled" in bar["data"]["text/plain"]
    assert 'data-state="cancelled"' in bar["data"]["text/html"]


def test_nothing_partial_is_kept_and_it_is_still_a_keyboard_interrupt(stops):
    assert texts(stops[5]).strip() == "[]"  # no output (nor temp file) of Slow
    assert "caught KeyboardInterrupt" in texts(stops[6])


@pytest.fixture(scope="module")
def background(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("background")
    return run_cells(tmp, [
        TASKS + "class Wait(pipeflow.tasks.TaskPickle):\n    def run(self):\n"
        "        time.sleep(1.5)\n        self.save(1)",
        "h = pipeflow.Workflow(Wait).start()",
        "time.sleep(0.3)\nprint('another cell')",
        "time.sleep(2.5)\nh.result()",
        "pipeflow.Workflow(Wait).run()",
        "pipeflow.Workflow(Up).run(progress=True)\npipeflow.Workflow(Up).run(progress=True)",
    ])


def test_a_background_runs_bar_stays_in_the_cell_that_started_it(background):
    assert len(bars(background[1])) == 1
    assert "pipeflow: done 1/1 tasks (1 done)" in bars(background[1])[0]["data"]["text/plain"]
    assert not bars(background[2]) and not bars(background[3])
    assert "pipeflow:" not in texts(background[2]) + texts(background[3])  # no text bar


def test_a_run_with_nothing_to_do_draws_no_bar(background):
    for cell in background[4:]:
        assert len(bars(cell)) == (1 if "progress=True" in cell["source"] else 0)
        assert "0/0" not in texts(cell) and "?task/s" not in texts(cell)
    assert "TqdmWarning" not in "\n".join(texts(c) for c in background)


# -- the progress sink, fed events -------------------------------------------------------------


class Fed(pipeflow.tasks.TaskPickle):
    pass


def feed(bar: ProgressBar, *kinds: tuple[EventKind, int | None], error=None) -> None:
    for kind, total in kinds:
        task = None if kind in (EventKind.RUN_STARTED, EventKind.RUN_FINISHED) else Fed()
        bar(Event(kind, "r", task=task, total=total,
                  error=error if kind is EventKind.RUN_FINISHED else None))


class _Recorder:
    def __init__(self, bar):
        self.draws = []

    def draw(self, final):
        self.draws.append(final)


@pytest.fixture
def recorded(monkeypatch):
    import pipeflow.display.progress as progress

    made = []

    def view(bar):
        made.append(_Recorder(bar))
        return made[-1]

    monkeypatch.setattr(progress, "_HtmlView", view)
    monkeypatch.setattr(progress, "_TextView", view)
    return made


def test_sink_ends_failed_with_the_real_counts(recorded):
    bar = ProgressBar(notebook=True, interval=0)
    k = EventKind
    feed(bar, (k.RUN_STARTED, 7), (k.TASK_STARTED, None), *[(k.TASK_COMPLETED, None)] * 3,
         (k.TASK_FAILED, None), (k.TASK_SKIPPED, None), (k.TASK_SKIPPED, None),
         (k.TASK_CANCELLED, None), (k.RUN_FINISHED, None))
    assert bar.state == "FAILED"
    assert bar.text() == "pipeflow: FAILED 3/7 tasks (3 done, 1 failed, 2 skipped, 1 cancelled)"
    assert 'data-state="failed"' in bar.html() and "width:42.9%" in bar.html()
    assert recorded[0].draws[-1] is True


def test_sink_ends_cancelled_on_a_stop_and_green_only_on_success(recorded):
    bar = ProgressBar(notebook=True, interval=0)
    k = EventKind
    feed(bar, (k.RUN_STARTED, 2), (k.TASK_COMPLETED, None), (k.TASK_CANCELLED, None),
         (k.RUN_FINISHED, None), error=KeyboardInterrupt())
    assert bar.state == "CANCELLED" and "1 done, 1 cancelled" in bar.text()
    ok = ProgressBar(notebook=True, interval=0)
    feed(ok, (k.RUN_STARTED, 2), (k.TASK_COMPLETED, None), (k.TASK_COMPLETED, None),
         (k.RUN_FINISHED, None))
    assert ok.state == "done" and 'data-state="success"' in ok.html()
    assert "#16a34a" in ok.html() and "#16a34a" not in bar.html()


def test_sink_draws_nothing_when_nothing_runs(recorded):
    bar = ProgressBar(notebook=False)
    k = EventKind
    feed(bar, (k.RUN_STARTED, 0), (k.TASK_UP_TO_DATE, None), (k.RUN_FINISHED, None))
    assert recorded == []


def test_terminal_bar_is_marked_with_the_counts(capsys):
    bar = ProgressBar(notebook=False, interval=0)
    k = EventKind
    feed(bar, (k.RUN_STARTED, 3), (k.TASK_COMPLETED, None), (k.TASK_FAILED, None),
         (k.TASK_SKIPPED, None), (k.RUN_FINISHED, None))
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "pipeflow FAILED" in last and "1 done, 1 failed, 1 skipped" in last
    assert "100%" not in last


# -- short tracebacks, without a kernel --------------------------------------------------------


def _user_code():
    d = {}
    return d["missing"]


def test_render_traceback_keeps_the_users_frames_and_hides_pipeflows():
    class Bad(pipeflow.tasks.TaskPickle):
        def run(self):
            _user_code()

    with pytest.raises(errors.TaskFailedError) as caught:
        pipeflow.run(Bad())
    lines = [ANSI.sub("", ln) for ln in caught.value._render_traceback_()]
    text = "\n".join(lines)
    assert 'return d["missing"]' in text and "KeyError: 'missing'" in text
    assert "pipeflow.run(Bad())" in text  # this test's own line: user code
    assert "pipeflow/engines" not in text and "pipeflow/operations" not in text
    assert lines[-1].startswith(tuple("0123456789")) and "pipeflow.full_traceback()" in text
    assert len(lines) <= 15


def test_render_traceback_reads_a_worker_process_traceback():
    class BadInWorker(pipeflow.tasks.TaskPickle):
        def run(self):
            _user_code()

    with pytest.raises(errors.TaskFailedError) as caught:
        pipeflow.run(BadInWorker(), workers=2, executor="process")
    cause = caught.value.__cause__
    assert isinstance(cause, KeyError) and isinstance(cause.__cause__, errors.RemoteTraceback)
    text = ANSI.sub("", "\n".join(caught.value._render_traceback_()))
    assert 'return d["missing"]' in text and "executors.py" not in text


def test_full_traceback_prints_the_last_error_shown(capsys):
    try:
        pipeflow.run(pipeflow.tasks.TaskPickle(), wrokers=1)
    except errors.ParameterError as exc:
        exc._render_traceback_()
    pipeflow.full_traceback()
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "pipeflow/options.py" in err


def test_run_interrupted_is_a_keyboard_interrupt_of_one_line():
    exc = errors.RunInterrupted("Run cancelled (Ctrl-C): X() did not finish.")
    assert isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Exception)
    assert [ANSI.sub("", ln) for ln in exc._render_traceback_()] == [
        "RunInterrupted: Run cancelled (Ctrl-C): X() did not finish."]


def test_a_script_stopped_by_ctrl_c_exits_130_saying_what_was_stopped(tmp_path):
    # A plain script keeps Python's traceback and exit status (130: only a plain
    # KeyboardInterrupt gets it), with the one line of what was cancelled at the end.
    import subprocess

    script = tmp_path / "flow.py"
    script.write_text(textwrap.dedent(f"""\
        import os, signal, threading, time, pipeflow
        pipeflow.set_dir({str(tmp_path / 'data')!r})
        class Slow(pipeflow.tasks.TaskPickle):
            def run(self):
                for _ in range(300):
                    time.sleep(0.1)
                self.save(1)
        threading.Timer(1, os.kill, (os.getpid(), signal.SIGINT)).start()
        pipeflow.run(Slow())
        """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode in (130, -2), proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == ("KeyboardInterrupt: Run cancelled (Ctrl-C): Slow() did not finish; its "
                    "partial outputs were removed. No task had finished; run again to finish.")
    assert "Traceback (most recent call last)" in proc.stderr


def test_a_process_that_imported_ipykernel_is_not_taken_for_a_notebook():
    # pipeflow took "ipykernel was imported" for "a notebook": a script or test that merely
    # imported it (jupyter_client does, to find the python3 kernel) drew progress bars into
    # its log and took /dev/null for a person who answers prompts
    import subprocess

    code = ("import ipykernel.kernelapp, IPython\n"
            "from pipeflow import display\n"
            "print(display.watched(), display._interactive(), display.in_notebook())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.stdout.split() == ["False", "False", "False"], proc.stderr
