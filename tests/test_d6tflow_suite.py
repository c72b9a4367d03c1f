"""d6tflow's own test suite, run against pipeflow: the yardstick of ``import pipeflow as d6tflow``.

d6tflow's sdist on the package index ships its tests. This test downloads it, swaps the
imports to pipeflow (``import d6tflow`` -> ``import pipeflow as d6tflow``, ``from d6tflow...``
-> ``from pipeflow...``, ``import d6tflow.x`` -> ``import pipeflow.x``), and runs the tests in
a scratch directory, in a virtual environment of their own: they were written against
scikit-learn < 1.2 (``load_boston``), so that environment has it, with NumPy 1 and pandas 2
(which also exercises pipeflow on pandas 2). Nothing of d6tflow is stored in this repository.

The sdist's three ``TestFlowImport`` tests need a file the sdist does not ship
(``tests/for_import.py``); ``TestFlowExports`` compares generated code that names the
library. Every other test must pass.

Run it alone with ``python -m pytest tests/test_d6tflow_suite.py -s``; run the same swapped
tests from another checkout of d6tflow (say, the head of github d6t/d6tflow) with
``python tests/test_d6tflow_suite.py PATH/TO/d6tflow``. The environment and the download are
kept in ``.d6tflow-suite/`` (or ``$PIPEFLOW_D6TFLOW_CACHE``) between runs.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSION = "0.2.8"
#: passes required (the sdist has 63 tests once TestFlowExports is deselected)
THRESHOLD = 60
#: the only tests allowed to fail, and why
EXPECTED_FAILURES = {
    "tests/test_workflow.py::TestFlowImport::test_import_dirpath": "needs tests/for_import.py",
    "tests/test_workflow.py::TestFlowImport::test_import_tasks": "needs tests/for_import.py",
    "tests/test_workflow.py::TestFlowImport::test_import_to_flow": "needs tests/for_import.py",
}
#: what the tests import besides pipeflow, as they were written (scikit-learn < 1.2)
REQUIREMENTS = ["pytest>=8", "fuckit", "d6tcollect", "scikit-learn==1.1.3", "numpy<2",
                "pandas>=2.0,<3", "pyarrow>=14,<20", "scipy<1.14", "tables>=3.8"]
DESELECT = "not TestFlowExports"


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PIPEFLOW_D6TFLOW_CACHE", ROOT / ".d6tflow-suite"))


def _pip(python: pathlib.Path | str, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def sdist() -> pathlib.Path:
    """d6tflow's sdist, downloaded once."""
    folder = cache_dir() / "sdist"
    found = sorted(folder.glob(f"d6tflow-{VERSION}.tar.gz"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        _pip(sys.executable, "download", "--no-deps", "--no-binary", ":all:",
             f"d6tflow=={VERSION}", "-d", str(folder))
        found = sorted(folder.glob(f"d6tflow-{VERSION}.tar.gz"))
    return found[0]


def environment() -> pathlib.Path:
    """The Python of the suite's environment: pipeflow (this checkout) plus REQUIREMENTS."""
    venv = cache_dir() / "venv"
    python = venv / "bin" / "python"
    stamp = venv / "pipeflow-stamp"
    setup = (ROOT / "setup.cfg").read_bytes() + "\n".join(REQUIREMENTS).encode()
    want = hashlib.sha256(setup).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    _pip(python, "install", *REQUIREMENTS, "-e", str(ROOT))
    stamp.write_text(want)
    return python


def swap_imports(text: str) -> str:
    """d6tflow's test code with its imports pointing at pipeflow (and LF line endings)."""
    text = text.replace("\r\n", "\n")
    text = re.sub(r"^(\s*)import d6tflow\.(\w[\w.]*)", r"\1import pipeflow.\2", text, flags=re.M)
    text = re.sub(r"^(\s*)import d6tflow\b(?!\.)", r"\1import pipeflow as d6tflow", text,
                  flags=re.M)
    return re.sub(r"^(\s*)from d6tflow\b", r"\1from pipeflow", text, flags=re.M)


def prepare(source: pathlib.Path, scratch: pathlib.Path) -> pathlib.Path:
    """Copy d6tflow's tests (a checkout or the sdist) into ``scratch``, imports swapped."""
    tests = scratch / "tests"
    tests.mkdir(parents=True)
    if source.is_dir():
        files = {p.name: p.read_bytes() for p in (source / "tests").glob("*.py")}
    else:
        with tarfile.open(source) as tar:
            files = {pathlib.PurePath(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
                     for m in tar.getmembers()
                     if re.fullmatch(r"[^/]+/tests/[^/]+\.py", m.name) and m.isfile()}
    for name, data in files.items():
        (tests / name).write_text(swap_imports(data.decode()))
    return tests


def run_suite(source: pathlib.Path, scratch: pathlib.Path) -> dict[str, str]:
    """Run d6tflow's tests from ``source`` against pipeflow; return ``{test id: outcome}``."""
    python = environment()
    prepare(source, scratch)
    report = scratch / "report.xml"
    env = {**os.environ, "HOME": str(scratch),  # d6tcollect writes below $HOME on import
           "D6TCOLLECT_SVR": "http://127.0.0.1:9",  # and would phone home: never reachable
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([str(python), "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider",
                    "-k", DESELECT, f"--junitxml={report}", "-W", "ignore::DeprecationWarning"],
                   cwd=scratch, env=env, capture_output=True, text=True, timeout=900,
                   check=False)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        module, _, cls = path.rpartition("/")
        test_id = f"{module}.py::{cls}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcomes[test_id] = ("failed" if kinds & {"failure", "error"} else
                             "skipped" if "skipped" in kinds else "passed")
    return outcomes


@pytest.mark.slow
def test_d6tflow_own_test_suite_passes_on_pipeflow(tmp_path, record_property):
    outcomes = run_suite(sdist(), tmp_path / "scratch")
    passed = [t for t, o in outcomes.items() if o == "passed"]
    failed = sorted(t for t, o in outcomes.items() if o != "passed")
    record_property("d6tflow_suite", f"{len(passed)} of {len(outcomes)} passed")
    print(f"d6tflow {VERSION}'s test suite on pipeflow: {len(passed)} of {len(outcomes)} "
          f"passed")
    assert len(outcomes) == 63, sorted(outcomes)  # the sdist's tests, all collected
    unexpected = [t for t in failed if t not in EXPECTED_FAILURES]
    assert not unexpected, f"d6tflow tests failing on pipeflow: {unexpected}"
    assert len(passed) >= THRESHOLD


if __name__ == "__main__":  # python tests/test_d6tflow_suite.py [d6tflow checkout or sdist]
    import tempfile

    where = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else sdist()
    with tempfile.TemporaryDirectory() as scratch:
        results = run_suite(where, pathlib.Path(scratch))
    for test, outcome in sorted(results.items()):
        if outcome != "passed":
            print(f"{outcome:7} {test}")
    ok = sum(o == "passed" for o in results.values())
    print(f"{ok} of {len(results)} passed")
    sys.exit(0 if ok == len(results) or all(
        t in EXPECTED_FAILURES for t, o in results.items() if o != "passed") else 1)
