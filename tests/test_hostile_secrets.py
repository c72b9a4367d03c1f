"""Issue 11, kind 2: a secret parameter's value never leaves a task, in any string form.

A probe matrix: ways a task's failure can carry its secret (leak forms) x executors. Each
probe runs the task and looks for the secret, and each of its escaped forms, everywhere a
user or a log could see text: the raised error and its whole chain (str, repr, args, notes,
``traceback.format_exception``), the ``RunResult`` and its summary, ``pipeflow.history()``
rows, the SQLite history file's bytes, the ``pipeflow history`` CLI, stdout/stderr and logs.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
import urllib.parse
import warnings

import luigi
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import pipeflow
from pipeflow import cli
from pipeflow.errors import RequirementError, TaskFailedError
from pipeflow.parameters import MASK, redact

#: quotes, a backslash, non-ASCII, a newline, a percent sign and a space: every escaping
#: scheme (repr, ascii, JSON, URL, unicode_escape) changes it
TOKEN = "tok'en\"-\\x-é€-\n-%2F 9Zq"
#: a plain one too: the raw form and the escaped forms are all the same
PLAIN = "plainTOKEN7731"


def forms(secret: str) -> set[str]:
    """Every string form of ``secret`` a message, log or record could show (made here, not
    by pipeflow, so the test does not trust the code it checks)."""
    out = {secret, repr(secret), ascii(secret), json.dumps(secret),
           json.dumps(secret, ensure_ascii=False), urllib.parse.quote(secret),
           urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
           secret.encode("unicode_escape").decode("ascii"), repr(secret.encode())}
    for quoted in [repr(secret), ascii(secret), json.dumps(secret),
                   json.dumps(secret, ensure_ascii=False), repr(secret.encode())[1:]]:
        out.add(quoted[1:-1])  # what shows inside a longer quoted string
    # inside a longer string whose repr uses the other quote
    out.add(repr(secret + "'\"")[1:-4])  # single quotes, ' escaped
    out.add(repr(secret + "'")[1:-3 if '"' in secret else -2])
    return {f for f in out if f}


def leaks(secret: str, texts: list[str]) -> list[tuple[str, str]]:
    """(form, where) for every form of ``secret`` found in ``texts``."""
    found = []
    for text in texts:
        for f in forms(secret):
            if f in text:
                found.append((f, text[max(0, text.index(f) - 60):text.index(f) + 60]))
    return found


# -- the ways a failing task can carry its secret ----------------------------------------

class Custom(Exception):
    """An exception whose message comes from its own ``__str__``, not from its args."""

    def __init__(self, token):
        super().__init__()
        self.token = token

    def __str__(self):
        return f"server said no to {self.token}"


class TwoArgs(Exception):
    """Cannot be unpickled by default (its __init__ takes two arguments)."""

    def __init__(self, code, msg):
        super().__init__(f"{code}: {msg}")
        self.code = code


def _chained(token):
    try:
        raise OSError(f"handshake failed key={token}")
    except OSError as exc:
        raise ConnectionError("cannot reach the vault") from exc


def _context(token):
    try:
        raise OSError(f"handshake failed key={token}")
    except OSError:
        raise ConnectionError("cannot reach the vault")  # noqa: B904 - implicit chaining


def _note(token):
    exc = ValueError("refused")
    exc.__notes__ = [f"token was {token}"]  # what exc.add_note() does (Python 3.11+)
    raise exc


def _syntax(token):
    compile(f"x = ({token!r} +", "<config>", "exec")


LEAKS = {
    "oserror_filename": lambda t: open(f"/vault/{t}/k"),  # noqa: SIM115
    "oserror_filename2": lambda t: __import__("os").rename(f"/nope/{t}", f"/nope2/{t}"),
    "chained_cause": _chained,
    "chained_context": _context,
    "keyerror": lambda t: {}[t],
    "repr_in_message": lambda t: (_ for _ in ()).throw(ValueError(f"bad token {t!r}")),
    "note": _note,
    "custom_str": lambda t: (_ for _ in ()).throw(Custom(t)),
    "url_encoded": lambda t: (_ for _ in ()).throw(
        ValueError(f"GET https://api/?key={urllib.parse.quote(t, safe='')}")),
    "json_escaped": lambda t: (_ for _ in ()).throw(ValueError(json.dumps({"key": t}))),
    "ascii_escaped": lambda t: (_ for _ in ()).throw(ValueError(ascii(t))),
    "unicode_escaped": lambda t: (_ for _ in ()).throw(
        ValueError(t.encode("unicode_escape").decode())),
    "bytes_arg": lambda t: (_ for _ in ()).throw(ValueError(t.encode())),
    "tuple_args": lambda t: (_ for _ in ()).throw(RuntimeError("auth", {"token": t})),
    "two_arg_init": lambda t: (_ for _ in ()).throw(TwoArgs(401, f"token {t} expired")),
    "syntax_error": _syntax,
}


class Leaky(pipeflow.tasks.TaskJson):
    form = luigi.Parameter()
    token = pipeflow.SecretParameter()

    def run(self):
        LEAKS[self.form](self.token)


class LeakyDict(pipeflow.tasks.TaskJson):
    """A secret whose value is a dict: its leaves are secrets too."""

    how = luigi.Parameter()
    creds = pipeflow.SecretParameter()

    def run(self):
        if self.how == "leaf":
            raise PermissionError(f"login refused for password {self.creds['password']}")
        if self.how == "whole":
            raise PermissionError(f"login refused with {self.creds}")
        raise KeyError(self.creds["password"])


EXECUTORS = {"inline": {}, "thread": {"executor": "thread"}, "process": {"workers": 2}}


def _everything_shown(data_dir, run_kwargs, task, capfd, caplog):
    """Run ``task`` (it fails) and gather every text a user, a log or a file could show."""
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with pytest.raises(TaskFailedError) as info:
            pipeflow.run(task, execution_summary=True, **run_kwargs)
    err = info.value
    texts = [str(err), repr(err), "".join(traceback.format_exception(err))]
    seen, stack = set(), [err]
    while stack:  # the whole chain: causes, contexts, their args and notes
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        texts += [str(e), repr(e), repr(e.args), *map(str, e.args),
                  *map(str, getattr(e, "__notes__", [])),
                  *(str(getattr(e, a, "")) for a in ("filename", "filename2", "text"))]
        stack += [e.__cause__, e.__context__]
    result = err.result
    texts += [repr(result), result.summary()]
    for r in result.tasks.values():
        texts += [repr(r.error), str(r.error), r.traceback or "", repr(r.retried_errors),
                  repr(r.task), str(r.task), r.task.task_id]
    df = pipeflow.history(last=50, full=True)
    assert (df["status"] == "failed").any()
    texts += [df.to_csv(), df.to_json(date_format="iso")]
    texts += [repr(pipeflow.history(last=50)), pipeflow.history(last=50)._repr_html_()]
    for path in data_dir.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
            texts.append(repr(path.read_bytes()))
    shown = CliRunner().invoke(cli.main, ["history", "--dir", str(data_dir), "--errors",
                                          "--last", "0"])
    assert shown.exit_code == 0, shown.output
    out, errout = capfd.readouterr()
    texts += [shown.output, out, errout, caplog.text, *(str(w.message) for w in warned)]
    return err, texts


@pytest.mark.parametrize("executor", list(EXECUTORS))
@pytest.mark.parametrize("form", list(LEAKS))
@pytest.mark.parametrize("token", [TOKEN, PLAIN], ids=["escapable", "plain"])
def test_a_failing_task_never_shows_its_secret(data_dir, capfd, caplog, form, executor,
                                               token):
    err, texts = _everything_shown(data_dir, EXECUTORS[executor], Leaky(form=form, token=token),
                                   capfd, caplog)
    assert not leaks(token, texts)
    cause = err.__cause__
    # the user's error keeps its type (name and class) and the shape of its message
    assert type(cause).__name__ == {"oserror_filename": "FileNotFoundError",
                                    "oserror_filename2": "FileNotFoundError",
                                    "chained_cause": "ConnectionError",
                                    "chained_context": "ConnectionError",
                                    "keyerror": "KeyError", "custom_str": "Custom",
                                    "tuple_args": "RuntimeError", "two_arg_init": "TwoArgs",
                                    "syntax_error": "SyntaxError"}.get(form, "ValueError")
    assert isinstance(cause, {"keyerror": KeyError, "custom_str": Custom,
                              "two_arg_init": TwoArgs}.get(form, Exception))
    assert MASK in "".join(texts)
    if form == "keyerror":
        assert str(cause) == "'***'" and repr(cause) == "KeyError('***')"
    if form == "oserror_filename":
        assert cause.filename == "/vault/***/k" and cause.errno == 2


@pytest.mark.parametrize("executor", list(EXECUTORS))
@pytest.mark.parametrize("how", ["leaf", "whole", "keyerror"])
def test_a_secret_dict_hides_its_leaves(data_dir, capfd, caplog, how, executor):
    creds = {"user": "ann", "password": TOKEN, "pin": 918273}
    _, texts = _everything_shown(data_dir, EXECUTORS[executor], LeakyDict(how=how, creds=creds),
                                 capfd, caplog)
    assert not leaks(TOKEN, texts)
    assert not leaks("918273", texts)
    assert not leaks(repr(creds), texts)


def test_a_retried_attempt_hides_the_secret_too(data_dir, capfd, caplog):
    class Flaky(Leaky):
        retries = 1
        retry_delay = 0

    _, texts = _everything_shown(data_dir, {}, Flaky(form="custom_str", token=TOKEN),
                                 capfd, caplog)
    assert not leaks(TOKEN, texts)
    assert (pipeflow.history()["status"] == "retried").any()


def test_frames_of_a_failed_task_keep_no_secret_locals(data_dir):
    class Holds(pipeflow.tasks.TaskJson):
        token = pipeflow.SecretParameter()

        def run(self):
            token = self.token  # noqa: F841 - a local a debugger or --showlocals would show
            raise ValueError("nothing secret here")

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Holds(token=TOKEN))
    shown = "".join(traceback.TracebackException.from_exception(
        info.value, capture_locals=True).format())
    assert "nothing secret here" in shown
    assert "Holds.run" in shown or "in run" in shown  # the frames are still there
    assert not leaks(TOKEN, [shown])


# -- requires() returning the secret by mistake --------------------------------------------

class Wrong(pipeflow.tasks.TaskJson):
    token = pipeflow.SecretParameter()

    def requires(self):
        return self.token

    def run(self):
        self.save({})


class YieldsWrong(pipeflow.tasks.TaskJson):
    token = pipeflow.SecretParameter()

    def run(self):
        yield Wrong(token=self.token)
        self.save({})


@pytest.mark.parametrize("token", [TOKEN, PLAIN], ids=["escapable", "plain"])
def test_requires_returning_the_secret_does_not_quote_it(data_dir, token):
    texts = []
    with pytest.raises(RequirementError) as info:
        pipeflow.run(Wrong(token=token))
    texts += [str(info.value), repr(info.value),
              "".join(traceback.format_exception(info.value))]
    assert "Wrong().requires() returned" in str(info.value)
    assert "(type str)" in str(info.value)
    with pytest.raises(RequirementError) as info:
        pipeflow.preview(Wrong(token=token), print_it=False)
    texts.append(str(info.value))
    with pytest.raises(TaskFailedError) as failed:
        pipeflow.run(YieldsWrong(token=token))
    texts += [str(failed.value), "".join(traceback.format_exception(failed.value)),
              failed.value.result.summary(), pipeflow.history(full=True).to_csv()]
    assert not leaks(token, texts)


# -- the redaction itself, over any value --------------------------------------------------

_SECRETS = st.text(min_size=1, max_size=24).filter(lambda s: s.strip("*"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=_SECRETS, before=st.text(max_size=10), after=st.text(max_size=10),
       how=st.sampled_from(["raw", "repr", "ascii", "json", "json_u", "url", "url_plus",
                            "unicode_escape", "bytes", "in_repr", "in_ascii", "in_json"]))
def test_redact_removes_every_form_of_any_secret(secret, before, after, how):
    class T(luigi.Task):
        token = pipeflow.SecretParameter()

    shown = {
        "raw": secret, "repr": repr(secret), "ascii": ascii(secret), "json": json.dumps(secret),
        "json_u": json.dumps(secret, ensure_ascii=False),
        "url": urllib.parse.quote(secret, safe=""), "url_plus": urllib.parse.quote_plus(secret),
        "unicode_escape": secret.encode("unicode_escape").decode(),
        "bytes": repr(secret.encode()), "in_repr": repr(f"k={secret}!"),
        "in_ascii": ascii(f"k={secret}'"), "in_json": json.dumps({"k": secret}),
    }[how]
    text = redact(before + shown + after, T(token=secret))
    assert not leaks(secret, [text])


# -- more places a secret could surface --------------------------------------------------

class InGroup(pipeflow.tasks.TaskJson):
    token = pipeflow.SecretParameter()

    def run(self):
        members = [ValueError(f"call 1 with {self.token}"), KeyError(self.token)]
        raise ExceptionGroup("several calls failed", members)  # noqa: F821 - Python 3.11+


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11+")
@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_an_exception_group_hides_the_secret_in_its_members(data_dir, capfd, caplog, executor):
    err, texts = _everything_shown(data_dir, EXECUTORS[executor], InGroup(token=TOKEN),
                                   capfd, caplog)
    group = err.__cause__
    assert isinstance(group, ExceptionGroup)  # noqa: F821 - Python 3.11+
    assert [type(e).__name__ for e in group.exceptions] == ["ValueError", "KeyError"]
    assert isinstance(group.exceptions[1], KeyError)
    texts += [repr(e) for e in group.exceptions]
    assert not leaks(TOKEN, texts)
    assert "call 1 with ***" in "".join(texts)


class RequiresRaises(pipeflow.tasks.TaskJson):
    token = pipeflow.SecretParameter()

    def requires(self):
        raise LookupError(f"no upstream for {self.token}")

    def run(self):
        self.save({})


def test_requires_raising_with_the_secret_does_not_show_it(data_dir):
    for call in (lambda t: pipeflow.run(t), lambda t: pipeflow.preview(t, print_it=False)):
        with pytest.raises(RequirementError) as info:  # naming the task, the error chained
            call(RequiresRaises(token=TOKEN))
        err = info.value
        assert isinstance(err.__cause__, LookupError)
        texts = ["".join(traceback.format_exception(err)), repr(err), repr(err.__context__),
                 repr(err.__cause__), repr(err.__cause__.__context__)]
        assert "no upstream for ***" in str(err) and "no upstream for ***" in str(err.__cause__)
        assert not leaks(TOKEN, texts)


def test_the_cli_never_shows_the_secret(data_dir):
    target = f"{Leaky.__module__}:Leaky"
    runner = CliRunner()
    texts = []
    for args in (["run", target, "-p", "form=keyerror", "-p", f"token={TOKEN}"],
                 ["run", target, "-p", "form=note", "-p", f"token={TOKEN}", "--workers", "2"],
                 ["run", target, "-p", "form=keyerror", "-p", f"tokn={TOKEN}"],
                 ["preview", target, "-p", "form=keyerror", "-p", f"token={TOKEN}"],
                 ["history", "--errors", "--last", "0"]):
        shown = runner.invoke(cli.main, [*args, "--dir", str(data_dir)])
        texts += [shown.output, "".join(traceback.format_exception(shown.exception))
                  if shown.exception is not None and not isinstance(shown.exception, SystemExit)
                  else ""]
    assert "KeyError" in texts[0]
    assert not leaks(TOKEN, texts)


class Holder(luigi.Task):
    token = pipeflow.SecretParameter()


def _raised(how, secret):
    try:
        if how == "custom":
            raise Custom(secret)
        if how == "note":
            _note(secret)
        if how == "chained":
            _chained(secret)
        if how == "oserror":
            raise FileNotFoundError(2, "No such file", f"/v/{secret}", f"/w/{secret}")
        if how == "keyerror":
            raise KeyError(secret)
        raise ValueError(f"bad {secret!r} / {ascii(secret)} / {json.dumps(secret)}")
    except Exception as exc:  # noqa: BLE001
        return exc


#: a secret as short as ")" or "e" is masked too, but it is also part of the text Python and
#: pipeflow write around it (punctuation, type names): no test can tell those apart
#: names Python and pipeflow write around any error (attribute names of the redacted copy): a
#: secret that is part of one cannot be told apart from it (docs/reliability.md says so)
_FIXED_NAMES = ("__notes__", "_pipeflow_str", "_pipeflow_repr", "__traceback__", "__cause__",
                "__context__")
_LONGER_SECRETS = st.text(min_size=8, max_size=24).filter(
    lambda s: sum(c.isalnum() for c in s) >= 4 and sum(c.isalpha() for c in s) >= 2
    # (a secret of digits only turns up inside the history's timings: '0.00129000000006')
    and not any(s in n for n in _FIXED_NAMES))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=_LONGER_SECRETS,
       how=st.sampled_from(["custom", "note", "chained", "oserror", "keyerror", "format"]))
def test_redact_error_leaves_no_form_of_any_secret(secret, how):
    from pipeflow.parameters import redact_error

    exc = _raised(how, secret)
    clean = redact_error(exc, Holder(token=secret))
    assert type(clean).__name__ == type(exc).__name__
    assert isinstance(clean, type(exc))
    # frames show source lines and file names, which any short secret may be part of
    for e in (clean, clean.__cause__, clean.__context__):
        if e is not None:
            e.__traceback__ = None
    texts = ["".join(traceback.format_exception(clean)), repr(clean), repr(clean.args),
             repr(clean.__cause__), repr(clean.__context__), repr(vars(clean))]
    if isinstance(clean, OSError):
        texts += [repr(clean.filename), repr(clean.filename2)]
    assert not leaks(secret, texts)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(secret=_LONGER_SECRETS, form=st.sampled_from(sorted(LEAKS)))
@example(secret="complete", form="keyerror")  # a word of pipeflow's own failure message
def test_any_secret_value_stays_hidden_end_to_end(data_dir, secret, form):
    # a secret that is part of what pipeflow writes around ANY secret (a word of its own
    # messages, such as "complete", or of the history's column names) cannot be told apart
    # from it: the same texts made with a neutral secret say which these are
    assume(not leaks(secret, _texts_of_a_failure(form, "Zq9XwVbTk7")))
    assert not leaks(secret, _texts_of_a_failure(form, secret))


def _texts_of_a_failure(form: str, secret: str) -> list[str]:
    """Everything a person can see of a Leaky task's failure with ``secret``."""
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Leaky(form=form, token=secret), execution_summary=False)
    err = info.value
    texts = [str(err), "".join(traceback.format_exception(err)), err.result.summary(),
             repr(err.__cause__), repr(err.__cause__.args),
             pipeflow.history(run=err.result.run_id, full=True).to_csv()]
    compact = pipeflow.history(run=err.result.run_id)
    texts += [repr(compact), compact._repr_html_()]
    return texts + [r.traceback or "" for r in err.result.tasks.values()]
