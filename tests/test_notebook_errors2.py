"""Short tracebacks stay true: a short secret, a failure without a traceback, full_traceback().

A short secret value masks the user's text where it shows (the documented policy) but never
pipeflow's own words and counts, and frames said to be left out are not printed; a run's error
claims a traceback above it only when there is one; ``pipeflow.full_traceback()`` says which
error it prints. The notebook tests run cells in a real kernel (nbclient) of this venv.
"""

from __future__ import annotations

import re
import traceback

import pytest
from test_notebook_run import error_lines, run_cells, texts

import pipeflow
from pipeflow import errors
from pipeflow.parameters import redact, redact_error

NOTE = re.compile(r"\((\S+) traceback frame\(s\) left out: they show a secret parameter value")

CELLS = [
    # 1: a secret that is a word of pipeflow's code and of the user's ('run')
    """\
import pipeflow as d6tflow, os, time
class Auth(d6tflow.tasks.TaskJson):
    token = d6tflow.SecretParameter()
    def run(self): raise ValueError("server said: invalid request for user")
d6tflow.Workflow(Auth, {'token': 'run'}).run()""",
    # 2: a one-digit secret
    """\
class Auth1(d6tflow.tasks.TaskJson):
    token = d6tflow.SecretParameter()
    def run(self): raise ValueError("error 2026 at step 1")
d6tflow.Workflow(Auth1, {'token': '1'}).run()""",
    # 3
    "print(d6tflow.last_error(Auth1(token='1')))",
    # 4: a worker process that dies without a traceback
    """\
class Dies(d6tflow.tasks.TaskJson):
    def run(self): os._exit(3)
d6tflow.Workflow(Dies).run(workers=2, executor='process')""",
    # 5: a task stopped by its timeout
    """\
class Sleepy(d6tflow.tasks.TaskJson):
    timeout = 1
    def run(self): time.sleep(30)
d6tflow.Workflow(Sleepy).run()""",
    # 6: an ordinary failure, then (7) an error that is not pipeflow's, then (8) the full one
    """\
class Bad2(d6tflow.tasks.TaskJson):
    def run(self): raise KeyError('x')
d6tflow.Workflow(Bad2).run()""",
    "1/0",
    "d6tflow.full_traceback()",
]


@pytest.fixture(scope="module")
def nb(tmp_path_factory):
    return run_cells(tmp_path_factory.mktemp("errors2"), CELLS)


# -- A: a short secret masks the user's text, not pipeflow's structure ------------------------

def test_a_word_secret_leaves_out_frames_without_printing_them(nb):
    text = "\n".join(error_lines(nb[0]))
    note = NOTE.search(text)
    assert note and note[1].isdigit(), text  # the count is pipeflow's: never masked
    assert "pipeflow/" not in text and "executors" not in text, text  # short mode still hides
    assert text.count('raise ValueError("server said') <= 1, text  # the user's frame once
    assert "ValueError: server said: invalid request for user" in text
    assert "pipeflow.full_traceback() prints the full traceback." in text
    assert "1 task(s) failed" in text


def test_a_one_digit_secret_masks_the_users_text_not_pipeflows_counts(nb):
    text = "\n".join(error_lines(nb[1]))
    assert "error 2026 at step ***" in text and "step 1" not in text, text  # the policy
    note = NOTE.search(text)
    assert note and note[1].isdigit(), text
    assert "1 task(s) failed" in text, text
    assert "ipykernel_" not in text and "pipeflow/" not in text, text  # no frame printed


def test_last_error_keeps_the_notes_count(nb):
    text = texts(nb[2])
    assert "error 2026 at step ***" in text and "step 1" not in text, text
    note = NOTE.search(text)
    assert note and note[1].isdigit(), text


def test_left_out_frames_are_not_listed_and_the_secret_does_not_show():
    class Hidden(pipeflow.tasks.TaskJson):
        token = pipeflow.SecretParameter()

        def run(self):
            raise ValueError(f"bad token {self.token}")

    task = Hidden(token="token")  # the secret shows in run()'s source line: left out
    try:
        task.run()
    except ValueError as exc:
        shown = redact_error(exc, task)
    full = "".join(traceback.format_exception(shown))
    assert "token" not in full and "bad *** ***" in full, full
    note = NOTE.search(full)
    assert note and note[1] == "1", full
    assert "raise ValueError" not in full  # left out means not printed


def test_a_secret_inside_pipeflows_note_is_still_masked_across_its_edge():
    class Edge(pipeflow.tasks.TaskJson):
        token = pipeflow.SecretParameter()

    task = Edge(token="value)\nnext")  # a note's last word, then the user's text
    text = "(1 traceback frame(s) left out: they show a secret parameter value)\nnext line"
    assert "value)\nnext" not in redact(text, task)
    one = Edge(token="1")
    assert redact(text + " step 1", one) == text + " step ***"


# -- B: "its traceback prints above it" only when it does ------------------------------------

def test_a_dead_worker_is_not_said_to_have_a_traceback(nb):
    text = "\n".join(error_lines(nb[3]))
    assert "died with exit code 3" in text
    assert "prints above" not in text, text
    assert "no traceback" in text and "died before it could report" in text, text


def test_a_timeout_is_not_said_to_have_a_traceback(nb):
    text = "\n".join(error_lines(nb[4]))
    assert "TaskTimeoutError" in text
    assert "prints above" not in text, text
    assert "no traceback" in text and "timeout" in text.split("no traceback", 1)[1], text


def test_a_failure_with_frames_still_points_above(nb):
    text = "\n".join(error_lines(nb[5]))
    assert "raise KeyError('x')" in text and "its traceback prints above it" in text


def test_a_secret_failure_whose_frames_were_all_left_out_does_not_point_above(nb):
    text = "\n".join(error_lines(nb[0]))
    assert "prints above" not in text, text


# -- C: full_traceback() says which error it prints ------------------------------------------

def test_full_traceback_names_the_error_it_prints_and_its_cell(nb):
    out = texts(nb[7]).strip().splitlines()
    count = nb[5]["execution_count"]
    head = out[0]
    assert head.startswith(f"The last pipeflow error shown short (cell [{count}]): "
                           "TaskFailedError: 1 task(s) failed"), out[:3]
    later = "\n".join(out[:4])
    assert "ZeroDivisionError" in later, later  # says a later error was not this one
    assert "Traceback (most recent call last)" in "\n".join(out)
    assert "raise KeyError('x')" in "\n".join(out)


def test_full_traceback_of_a_given_error_names_it(capsys):
    try:
        raise errors.ParameterError("bad value\nsecond line")
    except errors.ParameterError as exc:
        pipeflow.full_traceback(exc)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Full traceback of ParameterError: bad value", err[:2]
    assert "Traceback (most recent call last)" in err[1]
