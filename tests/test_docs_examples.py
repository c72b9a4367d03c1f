"""The code examples in the docs run, and print what the docs say they print.

Each page (README.md, docs/*.md) is one test. Its Python blocks run top to bottom in one
namespace, as a script runs them: in a scratch folder, with pipeflow as a fresh interpreter
has it (its real default settings, read from a fresh interpreter, with the data dir
``data``; an empty in-memory cache; only the built-in task-tree executors registered).
Blocks in other languages (bash, text, toml) are not run.

A block may ``await`` at top level, as a notebook cell (or ``python -m asyncio``) may: it
then runs with ``asyncio.run``, each such block on a new event loop.

Markers are HTML comments on the line(s) directly above a code fence:

``<!-- output -->``
    above a ``text`` block: what the Python block just before it (only blank lines between)
    prints, standard output and standard error together as a terminal shows them, compared
    after the substitutions in ``NORMALIZE``. A Python block without one must still run
    without an error; what it prints is not compared.
``<!-- raises -->``
    the block ends with an exception. Its output ends with the traceback's head, ``  ...``
    for the frames and the exception line(s), as ``traceback.format_exception_only`` gives
    them (after whatever the block printed first).
``<!-- process -->``
    the block starts another Python process in the same folder (sharing.md: the consumer
    imports what the producer exported): from there on, a new namespace, pipeflow's default
    settings and data dir, an empty cache, no task instances, only the built-in task-tree
    executors; the files stay. Simulated in
    this process.
``<!-- new -->``
    a new, self-contained example: as ``process``, and in a new empty folder (its output
    must not see earlier examples' files: reset-and-rerun.md lists every file below data/).
``<!-- norun -->``
    a fragment not meant to run (placeholders, names defined nowhere): skipped; it may not
    have an output.

What a script would have is set explicitly: the namespace is a module ``__main__`` (task
classes are ``__main__.X``; code change detection treats it as project code), standard input
is /dev/null (nobody can answer a confirmation), standard output is not a terminal (no
colours, no progress bar), warnings go to standard error under Python's default filters.
Everything is restored afterwards. Known limits: output written by forked worker processes
is not captured (no documented output has any), and ``new``/``process`` only reset the state
named above: other per-process state of pipeflow (open lock files, fingerprint caches) and
luigi's class registry carry over, which no documented output shows.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import difflib
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import traceback
import types
import warnings
from unittest import mock

import pytest
from luigi.task_register import Register

from pipeflow import cache, settings
from pipeflow.trees import executors

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]

#: substitutions applied to documented and actual output alike, in this order
NORMALIZE: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"(?m)^(    - .+?) in \d+\.\d+s(?= |$)"), r"\1 in <duration>",
     "the time a task spent in run(), in the execution summary: '    - Load() in 0.02s'"),
    (re.compile(r"(?m)[ \t]+$"), "",
     "trailing spaces: invisible on the page, and editors strip them (pandas pads headers)"),
    (re.compile(r"\n+\Z"), "",
     "blank lines at the very end: a text block cannot show them (print('...\\n') last)"),
]

#: the task-tree executors a fresh interpreter has (those pipeflow.trees registers itself)
BUILT_IN_EXECUTORS = {k: v for k, v in executors.registered().items()
                      if v.func.__module__.startswith("pipeflow.")}

#: (page, number of the Python block in the page, from 1) -> (a line of that block, why it
#: is not run). The line guards against the numbering shifting when blocks are added.
ALLOWED: dict[tuple[str, int], tuple[str, str]] = {}

MARKERS = frozenset(["output", "raises", "process", "new", "norun"])
PYTHON = frozenset(["python", "py"])
_MARKER = re.compile(r"<!--\s*([a-z-]+)\s*-->")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^`\s]*)[^`]*$")
_TRACEBACK_HEAD = "Traceback (most recent call last):\n  ...\n"
# what Python installs when no -W option or PYTHONWARNINGS is given
_DEFAULT_FILTERS = [("default", DeprecationWarning, "__main__"),
                    ("ignore", DeprecationWarning, ""),
                    ("ignore", PendingDeprecationWarning, ""),
                    ("ignore", ImportWarning, ""),
                    ("ignore", ResourceWarning, "")]


class DocFormatError(Exception):
    """A marker or fence the harness cannot make sense of."""


@dataclasses.dataclass
class Block:
    """One Python code block of a page."""

    number: int  # among the page's Python blocks, from 1
    line: int  # of the opening fence
    code: str
    markers: frozenset[str]
    output: str | None = None
    output_line: int | None = None  # of the output's opening fence


@dataclasses.dataclass
class Mismatch:
    """A block whose behaviour differs from the page."""

    block: Block
    problem: str
    expected: str
    actual: str  # in the page's convention: what it printed, then the exception's head
    traceback: str | None = None  # the full traceback of an exception the page did not expect


def parse(page: str, text: str) -> list[Block]:
    """The Python blocks of a page, with their markers and documented outputs."""
    lines = text.splitlines()
    blocks: list[Block] = []
    markers: list[tuple[str, int]] = []
    last: Block | None = None  # the Python block an output below would belong to
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        marker = _MARKER.fullmatch(line.strip())
        fence = _FENCE.match(line)
        if marker:
            if marker[1] not in MARKERS:
                raise DocFormatError(f"{page}:{number}: unknown marker {line.strip()!r}; "
                                     f"known: {sorted(MARKERS)}")
            markers.append((marker[1], number))
        elif fence:
            close = _closing_fence(lines, i, fence["fence"])
            if close is None:
                raise DocFormatError(f"{page}:{number}: code fence never closed")
            indent = len(fence["indent"])
            body = "\n".join(raw[indent:] if not raw[:indent].strip() else raw.lstrip()
                             for raw in lines[i + 1:close])
            lang = fence["lang"].lower()
            names = [name for name, _ in markers]
            if "output" in names:
                _attach_output(page, number, names, lang, last, body)
                last = None
            elif lang in PYTHON:
                block = Block(len(blocks) + 1, number, body + "\n", frozenset(names))
                if "norun" in names and len(names) > 1:
                    raise DocFormatError(f"{page}:{number}: norun with other markers {names}")
                blocks.append(block)
                last = block
            elif names:
                raise DocFormatError(f"{page}:{number}: marker(s) {names} above a {lang or 'plain'}"
                                     f" block; they apply to Python blocks")
            else:
                last = None
            markers = []
            i = close
        elif markers:
            raise DocFormatError(f"{page}:{markers[-1][1]}: marker not directly above a code "
                                 f"fence (line {number} comes between)")
        elif line.strip():
            last = None  # prose: an output below it belongs to no block
        i += 1
    if markers:
        raise DocFormatError(f"{page}:{markers[-1][1]}: marker at the end of the page")
    return blocks


def _closing_fence(lines: list[str], start: int, fence: str) -> int | None:
    for j in range(start + 1, len(lines)):
        stripped = lines[j].strip()
        if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
            return j
    return None


def _attach_output(page: str, number: int, names: list[str], lang: str, block: Block | None,
                   body: str) -> None:
    if names != ["output"]:
        raise DocFormatError(f"{page}:{number}: output goes alone, not with {names}")
    if lang != "text":
        raise DocFormatError(f"{page}:{number}: an output is a text block, not {lang!r}")
    if block is None:
        raise DocFormatError(f"{page}:{number}: output not right below a Python block (only "
                             f"blank lines may come between)")
    if "norun" in block.markers:
        raise DocFormatError(f"{page}:{number}: output of a norun block, which does not run")
    block.output, block.output_line = body, number


def normalize(text: str) -> str:
    """Apply the ``NORMALIZE`` substitutions."""
    for pattern, replacement, _ in NORMALIZE:
        text = pattern.sub(replacement, text)
    return text


# -- running a page ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_defaults(tmp_path_factory):
    """pipeflow's settings as a fresh interpreter has them (the tests' conftest changes some)."""
    script = ("import json; from pipeflow import settings as s; "
              "print(json.dumps({n: getattr(s, n) for n in sorted(s._NAMES) if n != 'dirpath'}))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path_factory.mktemp("defaults"),
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


class Session:
    """The state a script starts with, set up again for each ``new`` or ``process`` block."""

    def __init__(self, base: pathlib.Path, monkeypatch: pytest.MonkeyPatch, defaults: dict):
        self.base, self.monkeypatch, self.defaults = base, monkeypatch, defaults
        self.folders = 0
        self.namespace: dict = {}

    def start(self, new_folder: bool) -> None:
        if new_folder:
            self.folders += 1
            folder = self.base / f"example{self.folders}"
            folder.mkdir(parents=True)
            self.monkeypatch.chdir(folder)
        for name, value in self.defaults.items():
            self.monkeypatch.setattr(settings, name, value)  # restored after the page
        cache.data.clear()
        Register.clear_instance_cache()
        executors._EXECUTORS.clear()  # the built-in executors only (restored after the page)
        executors._EXECUTORS.update(BUILT_IN_EXECUTORS)
        _default_warning_filters()  # also forgets which warnings were shown (once per place)
        main = types.ModuleType("__main__")
        self.monkeypatch.setitem(sys.modules, "__main__", main)
        self.namespace = main.__dict__


def _default_warning_filters() -> None:
    warnings.resetwarnings()
    for action, category, module in _DEFAULT_FILTERS:
        warnings.filterwarnings(action, category=category, module=module, append=True)


@contextlib.contextmanager
def _script_warnings():
    """Warnings as a script shows them: on (the current) standard error, default filters."""
    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():  # undoes the filters and the showwarning below
        _default_warning_filters()
        warnings.showwarning = show  # pytest records warnings instead of showing them
        yield


def execute(block: Block, path: pathlib.Path, namespace: dict) -> tuple[str, BaseException | None]:
    """Run a block; what it printed, and the exception it ended with, if any."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            # padded so that tracebacks and warnings point at the page's own lines
            code = compile("\n" * block.line + block.code, str(path), "exec",
                           flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            awaiting = eval(code, namespace)  # a coroutine when the block awaits at top level
            if awaiting is not None:
                asyncio.run(awaiting)
        except (Exception, SystemExit) as exc:
            return out.getvalue(), exc
    return out.getvalue(), None


def check_block(block: Block, path: pathlib.Path, namespace: dict) -> Mismatch | None:
    """Run a block and compare it with the page."""
    printed, exc = execute(block, path, namespace)
    raises = "raises" in block.markers
    expected = "" if block.output is None else block.output
    if exc is None and raises:
        return Mismatch(block, "did not raise, the page says it raises", expected, printed)
    if exc is not None:
        printed += _TRACEBACK_HEAD + "".join(traceback.format_exception_only(exc))
        if not raises:
            assert exc.__traceback__ is not None
            frames = exc.__traceback__.tb_next  # from the block's own line on
            full = "".join(traceback.format_exception(type(exc), exc, frames))
            return Mismatch(block, f"raised {type(exc).__name__}, the page does not say it "
                            f"raises", expected, printed, full)
    if block.output is not None and normalize(printed) != normalize(expected):
        return Mismatch(block, "output differs", expected, printed)
    return None


def run_page(page: str, blocks: list[Block], session: Session) -> list[Mismatch]:
    """Run the page's blocks in order; the blocks that differ from the page."""
    path = ROOT / page
    mismatches = []
    with _script_warnings():
        session.start(new_folder=True)
        for block in blocks:
            if "norun" in block.markers or (page, block.number) in ALLOWED:
                continue
            if "new" in block.markers or "process" in block.markers:
                session.start(new_folder="new" in block.markers)
            mismatch = check_block(block, path, session.namespace)
            if mismatch is not None:
                mismatches.append(mismatch)
    return mismatches


def describe(page: str, mismatches: list[Mismatch]) -> str:
    """The failure message: the first mismatch in full, the others by line."""
    first = mismatches[0]
    block = first.block
    where = f"{page}:{block.line}"
    documented = f"{page}:{block.output_line}" if block.output_line else f"{where} (no output)"
    diff = difflib.unified_diff(normalize(first.expected).splitlines(),
                                normalize(first.actual).splitlines(),
                                fromfile=f"documented ({documented})", tofile="actual",
                                lineterm="", n=3)
    lines = [f"{where}: Python block {block.number} {first.problem}", *diff]
    if first.traceback is not None:
        lines += ["", "the full traceback:", first.traceback.rstrip()]
    if len(mismatches) > 1:
        lines += ["", "later blocks that differ too (maybe as a consequence): "
                  + ", ".join(f"{page}:{m.block.line} ({m.problem})" for m in mismatches[1:])]
    return "\n".join(lines)


def _check_allowed(page: str, blocks: list[Block]) -> None:
    by_number = {b.number: b for b in blocks}
    for (allowed_page, number), (line, reason) in ALLOWED.items():
        if allowed_page != page:
            continue
        block = by_number.get(number)
        assert block is not None and line in block.code, (
            f"ALLOWED entry ({page!r}, {number}) is stale: that block does not contain {line!r}")
        assert "norun" not in block.markers, (
            f"ALLOWED entry ({page!r}, {number}) is redundant: the page marks it norun")
        assert reason


def run_in_scratch(page: str, blocks: list[Block], base: pathlib.Path,
                   defaults: dict) -> list[Mismatch]:
    """``run_page`` in folders below ``base``, stdin /dev/null; everything restored after."""
    before = {name: getattr(settings, name) for name in defaults}
    with pytest.MonkeyPatch.context() as mp, open(os.devnull, encoding="utf-8") as stdin, \
            mock.patch.dict(executors._EXECUTORS):  # the page's executors are forgotten after
        mp.setattr(sys, "stdin", stdin)
        try:
            return run_page(page, blocks, Session(base, mp, defaults))
        finally:
            for name in [n for n, m in sys.modules.items()
                         if base in pathlib.Path(getattr(m, "__file__", None) or "/").parents]:
                del sys.modules[name]  # modules the page imported from its folder (FlowImport)
            cache.data.clear()
            Register.clear_instance_cache()
            mp.undo()
            assert {name: getattr(settings, name) for name in defaults} == before


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_match_behaviour(page, tmp_path, real_defaults):
    assert {allowed_page for allowed_page, _ in ALLOWED} <= set(PAGES)
    blocks = parse(page, (ROOT / page).read_text(encoding="utf-8"))
    _check_allowed(page, blocks)
    mismatches = run_in_scratch(page, blocks, tmp_path, real_defaults)
    if mismatches:
        pytest.fail(describe(page, mismatches), pytrace=False)


# -- the harness itself --------------------------------------------------------------------------

PAGE = """\
Intro.

```python
print("a")
```

<!-- output -->
```text
a
```

<!-- new -->
<!-- raises -->
```python
raise ValueError("b")
```

<!-- output -->
```text
Traceback (most recent call last):
  ...
ValueError: b
```

```bash
echo not python
```
"""


def test_parse_attaches_outputs_and_markers():
    first, second = parse("page.md", PAGE)
    assert (first.line, first.code, first.markers, first.output) == (3, 'print("a")\n',
                                                                     frozenset(), "a")
    assert second.markers == {"new", "raises"} and second.output_line == 19
    assert second.output == "Traceback (most recent call last):\n  ...\nValueError: b"


@pytest.mark.parametrize("page, message", [
    (PAGE.replace("<!-- new -->", "<!-- nwe -->"), "unknown marker"),
    (PAGE.replace("<!-- new -->\n", "<!-- new -->\n\n"), "not directly above"),
    (PAGE.replace("\n<!-- output -->\n```text\na", "\nProse.\n<!-- output -->\n```text\na"),
     "not right below a Python block"),
    (PAGE + "\n<!-- output -->\n```text\nx\n```\n", "not right below a Python block"),
    (PAGE.replace("```bash", "<!-- raises -->\n```bash"), "apply to Python blocks"),
    (PAGE.replace("<!-- new -->", "<!-- norun -->"), "norun with other markers"),
    (PAGE + "\n```python\nx = 1\n", "never closed"),
])
def test_parse_rejects_what_it_cannot_make_sense_of(page, message):
    with pytest.raises(DocFormatError, match=message):
        parse("page.md", page)


def test_check_block_compares_output_and_exceptions(tmp_path):
    path = tmp_path / "page.md"
    ok, raises = parse("page.md", PAGE)
    assert check_block(ok, path, {}) is None
    assert check_block(raises, path, {}) is None
    ok.output = "b"
    assert check_block(ok, path, {}).problem == "output differs"
    raises.output = raises.output.replace("b", "c")
    assert check_block(raises, path, {}).problem == "output differs"
    raises.markers = frozenset()
    unexpected = check_block(raises, path, {})
    assert unexpected.problem == "raised ValueError, the page does not say it raises"
    assert unexpected.actual == "Traceback (most recent call last):\n  ...\nValueError: b\n"
    assert unexpected.traceback.startswith("Traceback")
    assert 'page.md", line 15' in unexpected.traceback and __file__ not in unexpected.traceback
    ok.markers = frozenset(["raises"])
    assert check_block(ok, path, {}).problem == "did not raise, the page says it raises"


def test_normalize_touches_only_durations_and_trailing_space():
    summary = "    - Load() in 0.02s\n    - Scale(factor=10) in 12.50s (stale: code changed)\n"
    assert normalize(summary) == ("    - Load() in <duration>\n"
                                  "    - Scale(factor=10) in <duration> (stale: code changed)")
    assert normalize("x   \ny\n\n") == "x\ny"
    for text in ["took 0.02s", "- Load() in 0.02s", "    - Load() in 0.02", " a\n b"]:
        assert normalize(text) == text


SESSIONS = """\
```python
import pathlib
import warnings

import pipeflow

pipeflow.settings.execution_summary = False
pathlib.Path("kept.txt").write_text("x")
x = 1
for _ in range(2):
    warnings.warn("shown once")
print(__name__, input.__module__)
```

<!-- output -->
```text
ROOT/page.md:11: UserWarning: shown once
__main__ builtins
```

<!-- process -->
```python
import pathlib
import sys

import pipeflow

assert "x" not in globals() and pathlib.Path("kept.txt").exists()
assert pipeflow.settings.execution_summary is True and pipeflow.settings.dir == "data"
assert sys.stdin.read() == ""
x = 2
```

<!-- new -->
```python
import pathlib

assert "x" not in globals() and not pathlib.Path("kept.txt").exists()
```
"""


def test_new_and_process_start_over_as_documented(tmp_path, real_defaults):
    page = SESSIONS.replace("ROOT", str(ROOT))
    assert run_in_scratch("page.md", parse("page.md", page), tmp_path, real_defaults) == []
    assert (tmp_path / "example1" / "kept.txt").exists()
    # the same blocks without the markers: one namespace, one folder, the setting kept
    same = page.replace("<!-- process -->\n", "").replace("<!-- new -->\n", "")
    problems = run_in_scratch("page.md", parse("page.md", same), tmp_path / "x", real_defaults)
    assert [(m.block.number, m.problem) for m in problems] == [
        (2, "raised AssertionError, the page does not say it raises"),
        (3, "raised AssertionError, the page does not say it raises")]
