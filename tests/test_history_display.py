"""What a person sees of the run history: a compact ``history()``, a readable ``last_error``.

``history()`` and ``runs()`` return a compact DataFrame by default (columns for a person,
numbers kept numeric, shown in human units, empty cells empty, times in local time);
``full=True`` returns every recorded column with the raw types. ``last_error`` and
``last_run`` return an :class:`~pipeflow.runstore.Attempt`: readable text in a terminal, HTML
in a notebook, and still a mapping (``err["traceback"]``).
"""

from __future__ import annotations

import html.parser
import json
import sqlite3
import time

import pandas as pd
import pytest

import pipeflow
import pipeflow.display.history
from pipeflow.errors import TaskFailedError

SECRET = "hd-s3cr3t-pw-77"
EMPTY_SHOWN = ("NaN", "NaT", "None", "<NA>", "nan")

COMPACT = ["finished", "task", "status", "attempt", "duration", "cpu_time", "peak_memory",
           "error", "reason", "started", "family", "run_id"]
FULL = ["run_id", "task_id", "family", "task", "params", "attempt", "status", "started",
        "finished", "duration", "cpu_time", "peak_memory", "error_type", "error_message",
        "traceback", "reason", "outputs"]


class HdGood(pipeflow.tasks.TaskJson):
    token = pipeflow.SecretParameter(default="unused-default")
    model = pipeflow.Parameter(default="gbm")

    def run(self):
        self.save({"ok": 1})


@pipeflow.requires(HdGood)
class HdBad(pipeflow.tasks.TaskJson):
    def run(self):
        raise ValueError(f"cannot log in with {self.token}\nsecond line of the message")


def _run_both():
    with pytest.raises(TaskFailedError):
        pipeflow.run(HdBad(token=SECRET, model="gbm"))


class _Cells(html.parser.HTMLParser):
    """The header and body cells of the first table of an HTML document, and <pre> texts."""

    def __init__(self):
        super().__init__()
        self.headers, self.rows, self.pres = [], [], []
        self._cell = None
        self._pre = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = (tag, [])
        elif tag == "pre":
            self._pre = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            kind, parts = self._cell
            self.rows[-1].append((kind, "".join(parts)))
            self._cell = None
        elif tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1].append(data)
        if self._pre is not None:
            self._pre.append(data)

    def table(self):
        """(column headers, body rows as lists of cell texts), the index left out."""
        head = [text for _, text in self.rows[0]][1:]
        body = [[text for _, text in row][1:] for row in self.rows[1:]]
        return head, body


def _parse(markup):
    p = _Cells()
    p.feed(markup)
    return p


# -- the compact frame ----------------------------------------------------------------------


def test_history_is_compact_with_typed_columns():
    _run_both()
    h = pipeflow.history()
    assert list(h.columns) == COMPACT and len(h.columns) <= 12
    assert isinstance(h, pd.DataFrame)
    assert list(h["task"]) == ["HdBad(model='gbm')", "HdGood(model='gbm')"]
    assert list(h["status"]) == ["failed", "completed"]
    # numbers stay numbers: seconds and bytes, so they filter, sort and sum
    assert pd.api.types.is_float_dtype(h["duration"]) and pd.api.types.is_float_dtype(
        h["cpu_time"])
    assert pd.api.types.is_integer_dtype(h["peak_memory"]) and h["peak_memory"].min() > 2**20
    assert pd.api.types.is_integer_dtype(h["attempt"])
    for col in ("started", "finished"):
        assert isinstance(h[col].dtype, pd.DatetimeTZDtype)
    # the error: its type and the first line of its message, the secret masked
    assert h["error"].iloc[0] == "ValueError: cannot log in with ***"
    assert pd.isna(h["error"].iloc[1])
    full = pipeflow.history(full=True)
    assert list(h["run_id"]) == list(full["run_id"])
    assert list(h["duration"]) == list(full["duration"])
    assert list(h["peak_memory"]) == [int(v) for v in full["peak_memory"]]


WIDE = ("display.width", 300, "display.max_columns", 50)


def test_compact_rendering_shows_human_units_and_empty_cells_empty():
    _run_both()
    h = pipeflow.history()
    with pd.option_context(*WIDE):
        text = repr(h)
        assert str(h) == text
    head, body = _parse(h._repr_html_()).table()
    assert head == COMPACT
    for shown in (text, *(cell for row in body for cell in row)):
        assert not any(word in shown for word in EMPTY_SHOWN), shown
    cells = {col: [row[i] for row in body] for i, col in enumerate(head)}
    assert all(c.endswith(("MiB", "GiB")) for c in cells["peak_memory"]), cells
    assert all(c.endswith((" ms", " s")) for c in cells["duration"]), cells
    assert cells["error"] == ["ValueError: cannot log in with ***", ""]
    assert cells["reason"] == ["", ""]
    # a time to the second, in local time, without a time zone suffix
    assert all(len(c) == 19 and c[10] == " " for c in cells["finished"]), cells
    for rendering in (text, h._repr_html_()):
        assert "MiB" in rendering and "HdGood(model=&#x27;gbm&#x27;)" in rendering or (
            "HdGood(model='gbm')" in rendering)


def test_human_units_of_durations_and_sizes():
    _run_both()
    h = pipeflow.history()
    h["duration"] = [0.0123, 7384.0]
    h["cpu_time"] = [125.0, 3.456]
    h["peak_memory"] = pd.array([3 * 2**30 // 2, 312 * 2**20], dtype="Int64")
    head, body = _parse(h._repr_html_()).table()
    cells = {col: [row[i] for row in body] for i, col in enumerate(head)}
    assert cells["duration"] == ["12 ms", "2 h 03 min"]
    assert cells["cpu_time"] == ["2 min 05 s", "3.46 s"]
    assert cells["peak_memory"] == ["1.50 GiB", "312 MiB"]
    with pd.option_context(*WIDE):
        text = repr(h)
    for shown in ("12 ms", "2 h 03 min", "2 min 05 s", "3.46 s", "1.50 GiB", "312 MiB"):
        assert shown in text


def test_sorting_by_duration_sorts_the_numbers_and_keeps_the_display():
    _run_both()
    pipeflow.run(HdGood(model="ols"))
    h = pipeflow.history()
    h["duration"] = [9.0, 65.0, 10.5]  # as text "9.00 s" > "65 s" > "10.5 s"
    ordered = h.sort_values("duration", ascending=False)
    assert list(ordered["duration"]) == [65.0, 10.5, 9.0]
    head, body = _parse(ordered._repr_html_()).table()
    assert [row[head.index("duration")] for row in body] == ["1 min 05 s", "10.5 s", "9.00 s"]
    slow = h[h["duration"] > 10]
    with pd.option_context(*WIDE):
        assert len(slow) == 2 and "1 min 05 s" in repr(slow)
    expected = {}
    for family, seconds in zip(h["family"], [9.0, 65.0, 10.5]):
        expected[family] = expected.get(family, 0) + seconds
    assert h.groupby("family")["duration"].sum().to_dict() == expected


def test_times_are_local_time(monkeypatch, tmp_path):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30 all year round, no daylight saving
    time.tzset()
    try:
        pipeflow.run(HdGood())
        h = pipeflow.history()
        full = pipeflow.history(full=True)
        assert h["finished"].iloc[0] == full["finished"].iloc[0]  # the same instant
        assert h["finished"].iloc[0].utcoffset().total_seconds() == 5.5 * 3600
        local = h["finished"].iloc[0].strftime("%Y-%m-%d %H:%M:%S")
        utc = full["finished"].iloc[0].strftime("%Y-%m-%d %H:%M:%S")
        with pd.option_context(*WIDE):
            assert local != utc and local in repr(h) and utc not in repr(h)
        # a plain string compares in local time
        assert len(h[h["finished"] >= local[:16]]) == 1
        # the zone has its name: the table can be saved as Parquet and read back
        h.to_parquet(tmp_path / "h.parquet")
        back = pd.read_parquet(tmp_path / "h.parquet")
        assert back["finished"].iloc[0] == h["finished"].iloc[0]
        assert str(back["finished"].dtype) == str(h["finished"].dtype)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_full_is_the_raw_history():
    _run_both()
    full = pipeflow.history(full=True)
    assert list(full.columns) == FULL
    assert type(full) is pd.DataFrame
    assert str(full["started"].dtype).endswith("UTC]")
    db = pipeflow.runstore.history_path()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT params, traceback, outputs, peak_memory, started "
                            "FROM attempts ORDER BY id DESC").fetchall()
    assert list(full["params"]) == [r[0] for r in rows]
    assert json.loads(full["params"].iloc[1]) == {"token": "***", "model": "gbm"}
    assert full["traceback"].iloc[0] == rows[0][1]
    assert full["outputs"].iloc[1] == rows[1][2]
    assert list(full["peak_memory"]) == [r[3] for r in rows]
    assert [t.timestamp() for t in full["started"]] == pytest.approx([r[4] for r in rows])
    flow = pipeflow.Workflow(HdBad, {"token": SECRET})
    assert list(flow.history(full=True).columns) == FULL
    assert list(flow.history().columns) == COMPACT


def test_secrets_never_shown_compact_or_full():
    _run_both()
    for df in (pipeflow.history(), pipeflow.history(full=True), pipeflow.runs(),
               pipeflow.runs(full=True)):
        for shown in (repr(df), df.to_csv(), df.to_string()):
            assert SECRET not in shown
        if hasattr(df, "_repr_html_"):
            assert SECRET not in (df._repr_html_() or "")
    for found in (pipeflow.last_error(HdBad()), pipeflow.last_run(HdGood())):
        assert SECRET not in repr(found) and SECRET not in found._repr_html_()
        assert SECRET not in str(dict(found))


def test_empty_history_is_compact_and_shows_nothing_missing():
    h = pipeflow.history()
    assert h.empty and list(h.columns) == COMPACT
    assert not any(word in repr(h) for word in EMPTY_SHOWN)
    assert list(pipeflow.history(full=True).columns) == FULL
    assert pipeflow.runs().empty and pipeflow.last_error(HdBad()) is None
    assert pipeflow.last_run(HdGood()) is None


def test_crashed_like_missing_values_show_empty():
    """An attempt without an end (crashed): its finished time and duration show empty."""
    _run_both()
    h = pipeflow.history()
    h.loc[h.index[0], ["finished", "duration", "cpu_time", "peak_memory"]] = None
    head, body = _parse(h._repr_html_()).table()
    first = dict(zip(head, body[0]))
    assert [first[c] for c in ("finished", "duration", "cpu_time", "peak_memory")] == [""] * 4
    assert not any(word in repr(h) for word in EMPTY_SHOWN)


# -- runs() -----------------------------------------------------------------------------------


def test_runs_is_compact_and_full_keeps_everything():
    _run_both()
    r = pipeflow.runs()
    assert list(r.columns) == ["started", "status", "tasks", "duration", "finished", "host",
                               "user", "run_id"]
    assert r["tasks"].iloc[0] == "HdBad(model='gbm')"
    assert r["status"].iloc[0] == "failed"
    assert pd.api.types.is_float_dtype(r["duration"]) and r["duration"].iloc[0] >= 0
    assert not any(word in repr(r) for word in EMPTY_SHOWN)
    head, _ = _parse(r._repr_html_()).table()
    assert head == list(r.columns)
    full = pipeflow.runs(full=True)
    assert list(full.columns) == ["run_id", "started", "finished", "status", "host", "user",
                                  "pipeflow_version", "roots", "params", "system"]
    assert full["roots"].iloc[0] == '["HdBad(model=\'gbm\')"]'
    assert isinstance(full["system"].iloc[0], dict)


# -- last_error and last_run ----------------------------------------------------------------


def test_last_error_reads_as_text_with_real_traceback_lines():
    _run_both()
    err = pipeflow.last_error(HdBad())
    text = repr(err)
    assert str(err) == text
    lines = text.splitlines()
    assert lines[0].startswith("HdBad(model='gbm') failed")
    assert "attempt 1" in lines[0]
    assert "ValueError: cannot log in with ***" in lines
    assert "second line of the message" in text
    assert "Traceback (most recent call last):" in lines
    assert any(line.strip().startswith('File "') for line in lines)
    assert "Traceback (most recent call last):\\n" not in text  # not one escaped string
    # when, in local time, to the second
    when = err.finished.tz_convert(pipeflow.display.history.local_zone()).strftime(
        "%Y-%m-%d %H:%M:%S")
    assert when in lines[0]


def test_last_error_html_shows_the_task_error_and_traceback():
    _run_both()
    err = pipeflow.last_error(HdBad())
    markup = err._repr_html_()
    parsed = _parse(markup)
    assert "HdBad(model=&#x27;gbm&#x27;)" in markup or "HdBad(model='gbm')" in markup
    assert len(parsed.pres) == 1
    tb = parsed.pres[0]
    assert tb.splitlines()[0] == "Traceback (most recent call last):"
    assert tb == err["traceback"].rstrip("\n") or tb == err["traceback"]
    assert "ValueError: cannot log in with ***" in markup
    assert "<script" not in markup


def test_last_error_keeps_dict_access():
    _run_both()
    err = pipeflow.last_error(HdBad())
    assert err["error_type"] == "ValueError" and err.error_type == "ValueError"
    assert err["error_message"].startswith("cannot log in with ***")
    assert "ValueError" in err["traceback"]
    assert list(dict(err)) == FULL and set(err) == set(FULL) and len(err) == len(FULL)
    assert err.get("no such key") is None
    assert json.loads(err["params"]) == {"token": "***", "model": "gbm"}
    assert err["status"] == "failed" and err["attempt"] == 1
    with pytest.raises(KeyError):
        err["no such key"]


def test_last_run_is_readable_and_a_mapping():
    _run_both()
    run = pipeflow.last_run(HdGood())
    assert run["status"] == "completed" and run.status == "completed"
    assert run["error_type"] is None and run.traceback is None
    assert json.loads(run["outputs"])["data"][0]["file"] == HdGood().output().path.name
    text = repr(run)
    assert text.splitlines()[0].startswith("HdGood(model='gbm') completed")
    assert "MiB" in text and "Traceback" not in text
    assert not any(word in text for word in EMPTY_SHOWN)
    assert "<pre" not in run._repr_html_() and "completed" in run._repr_html_()


# -- a notebook, in a real kernel ----------------------------------------------------------


def test_history_in_a_notebook_shows_a_readable_table(tmp_path, jupyter_kernel):
    import nbformat
    from nbclient import NotebookClient

    data = tmp_path / "nbdata"
    cells = [
        f"import pipeflow\npipeflow.set_dir({str(data)!r})\n"
        "class Ok(pipeflow.tasks.TaskJson):\n"
        "    def run(self):\n        self.save({'a': 1})\n"
        "class Bad(pipeflow.tasks.TaskJson):\n"
        "    def run(self):\n        raise KeyError('no such column')\n"
        "pipeflow.run(Ok())\n"
        "try:\n    pipeflow.run(Bad())\nexcept Exception:\n    pass",
        "pipeflow.history()",
        "pipeflow.last_error(Bad())",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=120, kernel_name=jupyter_kernel,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # starts the kernel, runs every cell, shuts the kernel down
    assert client.km is None or not client.km.is_alive()
    shown = [o for o in nb.cells[1].outputs if o["output_type"] == "execute_result"]
    assert len(shown) == 1
    markup = shown[0]["data"]["text/html"]
    head, body = _parse(markup).table()
    assert head == COMPACT
    assert [row[head.index("task")] for row in body] == ["Bad()", "Ok()"]
    assert body[0][head.index("error")] == "KeyError: 'no such column'"
    for word in EMPTY_SHOWN:
        assert word not in markup and word not in shown[0]["data"]["text/plain"]
    assert "MiB" in markup
    err = [o for o in nb.cells[2].outputs if o["output_type"] == "execute_result"][0]
    assert "Traceback (most recent call last):" in _parse(err["data"]["text/html"]).pres[0]
    assert err["data"]["text/plain"].splitlines()[0].startswith("Bad() failed")


@pytest.mark.parametrize("query", [pipeflow.history, pipeflow.runs])
@pytest.mark.parametrize("full", ["no", 1, None])
def test_full_must_be_a_bool(query, full):
    with pytest.raises(pipeflow.errors.ParameterError, match=r"full is True .* or False"):
        query(full=full)


def test_the_notebook_table_shows_a_long_task_whole():
    # pandas cut every cell at 50 characters: the parameters that tell the rows apart (the
    # model of Train(test_size=0.25, seed=42, do_preprocess=True, model='ridge')) were cut
    model = "a-model-whose-name-comes-after-fifty-characters-of-other-text"
    pipeflow.run(HdGood(model=model))
    head, body = _parse(pipeflow.history()._repr_html_()).table()
    task = body[0][head.index("task")]
    assert task == f"HdGood(model='{model}')", task
