"""Property tests of output paths: inside their location, storable, never shared by mistake.

A task's *location* is the folder the programmer chose (a Workflow's or the class's ``path``,
relative to the working directory or absolute, as in d6tflow) or the data dir. Whatever
parameter values, ``env`` or ``task_group``/``target_dir`` are given, every path a task owns
(outputs, index sidecars, metadata, commit record) must lie (lexically and resolved) inside
that location, with no ``..`` below it and every folder or file name at most 255 bytes (file
names leaving room for the temp-file decoration written beside them) -- or the setting must be
refused with a :class:`~pipeflow.errors.PipeflowError` that names it. ``env`` and
``task_group`` are single folder names. Distinct parameter values must own disjoint sets of
files (with ``save_with_param`` on).
"""

from __future__ import annotations

import os
import pathlib
import re
import tempfile

import luigi
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import pipeflow
from pipeflow import layout
from pipeflow.errors import PipeflowError, UnsafePathError

NAME_MAX = 255
#: ``tempfile.mkstemp(prefix=f".{name}.tmp-")`` adds a dot, ``.tmp-`` and 8 random characters
TEMP_DECORATION = len(".") + len(".tmp-") + 8
#: stands for the (per-test) data dir inside generated paths; replaced when the test runs
DATA = "\ue000DATA\ue000"

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.filter_too_much])
SLOW = settings(FAST, max_examples=20)


# -- task classes (module level: luigi registers task classes by name) -------------------------

class PathPropTask(pipeflow.tasks.TaskPickle):
    p = pipeflow.Parameter()

    def run(self):
        self.save(self.p)


class PathPropPair(pipeflow.tasks.TaskCSVPandas):
    """Two parameters, two CSV outputs (each with an index sidecar file)."""

    persist = ["train", "test"]
    p = pipeflow.Parameter()
    q = pipeflow.Parameter(default="")

    def run(self):
        self.save({"train": pd.DataFrame({"v": [self.p]}), "test": pd.DataFrame({"v": [self.q]})})


class PathPropTyped(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter()
    x = pipeflow.FloatParameter()


class PathPropAttrs(pipeflow.tasks.TaskPickle):
    """Its class-level path/task_group/target_dir are set by the tests (and restored)."""

    p = pipeflow.Parameter(default="v")


#: a legal folder name (240 bytes), but every file stem built from it must be shortened
LONG_FAMILY = "PathPropLong" + "X" * 228
PathPropLong = type(pipeflow.tasks.TaskPickle)(
    LONG_FAMILY, (pipeflow.tasks.TaskPickle,),
    {"p": pipeflow.Parameter(), "__module__": __name__},
)

TEXT_CLASSES = [PathPropTask, PathPropPair, PathPropLong]


def make(cls, a, b=""):
    """An instance of one of TEXT_CLASSES with the given value(s)."""
    return cls(p=a, q=b) if cls is PathPropPair else cls(p=a)


# -- strategies -------------------------------------------------------------------------------

TOKENS = ["..", ".", "/", "\\", "\x00", "", " ", "\t", "\n", "~", "=", "-", "env=", "../",
          "/..", "./", "//", "é", "日本語", "🙂", "\u202e", "\u0301", "x" * 255, "é" * 128,
          "🙂" * 64, "x" * 256]

#: arbitrary text: plain unicode, awkward fragments glued together, and long repetitions
TEXT = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=12)), max_size=12).map("".join),
    st.builds(lambda unit, n, tail: (unit * n)[:3000] + tail,
              st.sampled_from(["x", "é", "🙂", "/", "../", "a/", " ", "\x00", "\\"]),
              st.integers(0, 3000), st.text(max_size=4)),
)

#: locations: TEXT, absolute paths anywhere, and absolute paths starting with the data dir
LOCATIONS = st.one_of(
    TEXT,
    TEXT.map(lambda s: "/" + s),
    TEXT.map(lambda s: DATA + "/" + s),
    st.just(DATA),
)


def place(value, as_path=False):
    """Fill the data dir into a generated location (optionally as a pathlib.Path)."""
    if value is None:
        return None
    value = value.replace(DATA, str(pipeflow.settings.dirpath))
    return pathlib.Path(value) if as_path else value


def remove_tree(root):
    """Delete a folder tree without recursion: generated paths nest up to 1,500 folders deep."""
    folders, stack = [], [str(root)]
    while stack:
        folder = stack.pop()
        folders.append(folder)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    os.unlink(entry.path)
    for folder in reversed(folders):
        os.rmdir(folder)


# -- checks -----------------------------------------------------------------------------------

def assert_safe(paths, root=None):
    """Every path lies inside ``root`` (default: the data dir); every name below it fits."""
    paths = [pathlib.Path(p) for p in paths]
    assert paths, "a task owns no paths at all"
    base = pipeflow.settings.dirpath if root is None else pathlib.Path(root)
    real_root = pathlib.Path(os.path.realpath(base))
    for path in paths:
        real = pathlib.Path(os.path.realpath(path))
        assert real_root in real.parents, f"{str(path)!r} resolves to {str(real)!r}, outside {base}"
        parts = path.relative_to(base).parts  # lexically below the location, too
        assert parts, f"{str(path)!r} is the location itself"
        for part in parts:
            assert part not in ("", ".", ".."), f"{str(path)!r} has a {part!r} component"
            assert "\x00" not in part
            assert len(os.fsencode(part)) <= NAME_MAX, (
                f"{len(os.fsencode(part))}-byte name {part[:40]!r}... in {str(path)[:200]!r}"
            )
        assert len(os.fsencode(path.name)) + TEMP_DECORATION <= NAME_MAX, (
            f"no room for the temp file beside {path.name!r}"
        )


def single_name(value):
    """Whether ``value`` is acceptable as an env or task_group: one plain folder name."""
    return not value or not ("/" in value or "\\" in value or value in (".", "..")
                             or "\x00" in value)


def not_a_folder_name(location):
    """Whether a location is refused as such: white space around it, or a URL however spelt."""
    if location is None:
        return False
    text = os.fspath(location)
    first = pathlib.PurePath(text).parts[:1]
    return (text != text.strip() or re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", text) is not None
            or bool(first and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]+:", first[0])))


def assert_clear_refusal(exc, *settings_named):
    """A refused location is refused with a PipeflowError that says which setting it was."""
    assert isinstance(exc, PipeflowError), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert any(name in message for name in settings_named), message


def fresh():
    """Forget cached task instances (each example starts from scratch)."""
    luigi.task_register.Register.clear_instance_cache()


def owned(task):
    return set(task._store.owned_paths())


def assert_disjoint(t1, t2):
    p1, p2 = owned(t1), owned(t2)
    assert p1.isdisjoint(p2), sorted(map(str, p1 & p2))
    r1 = {os.path.realpath(p) for p in p1}
    r2 = {os.path.realpath(p) for p in p2}
    assert r1.isdisjoint(r2)
    # still distinct on case-insensitive file systems (macOS, Windows)
    assert {str(p).casefold() for p in p1}.isdisjoint({str(p).casefold() for p in p2})


# -- 1. parameter values -----------------------------------------------------------------------

@FAST
@given(cls=st.sampled_from(TEXT_CLASSES), a=TEXT, b=TEXT)
@example(cls=PathPropTask, a="../../../../etc/passwd", b="")
@example(cls=PathPropTask, a="/etc/passwd\x00", b="")
@example(cls=PathPropPair, a="x" * 3000, b="🙂" * 3000)
@example(cls=PathPropLong, a="é" * 3000, b="")
def test_text_parameter_values_stay_inside_and_fit(cls, a, b):
    fresh()
    assert_safe(make(cls, a, b)._store.owned_paths())


@FAST
@given(n=st.integers(), x=st.floats(allow_nan=False))  # nan is refused (test_hostile_params)
@example(n=-(10 ** 3000), x=float("inf"))
@example(n=0, x=float("-inf"))
def test_typed_parameter_values_stay_inside_and_fit(n, x):
    fresh()
    assert_safe(PathPropTyped(n=n, x=x)._store.owned_paths())


def test_owned_paths_cover_outputs_sidecars_metadata_and_commit_record():
    task = PathPropPair(p="a", q="b")
    names = {p.name for p in task._store.owned_paths()}
    data = {f"{task.task_id}-train.csv", f"{task.task_id}-test.csv"}
    assert data <= names
    assert {f".{n}.index.json" for n in data} <= names
    assert f"{task.task_id}-meta.pickle" in names
    assert any(n.startswith(".") and n.endswith(".commit.json") for n in names)


# -- 2. distinct values, distinct files ----------------------------------------------------------

@FAST
@given(cls=st.sampled_from(TEXT_CLASSES), first=st.tuples(TEXT, TEXT), second=st.tuples(TEXT, TEXT))
@example(cls=PathPropTask, first=("a/b", ""), second=("a_b", ""))
@example(cls=PathPropTask, first=("A", ""), second=("a", ""))
@example(cls=PathPropPair, first=("a", "b_c"), second=("a_b", "c"))
def test_distinct_text_values_own_disjoint_paths(cls, first, second):
    if cls is not PathPropPair:
        first, second = (first[0], ""), (second[0], "")
    assume(first != second)
    fresh()
    assert_disjoint(make(cls, *first), make(cls, *second))


@FAST
@given(cls=st.sampled_from(TEXT_CLASSES),
       prefix=st.builds(lambda unit, n: unit * n,
                        st.sampled_from(["x", "é", "🙂", "/", " ", "\x00"]), st.integers(0, 3000)),
       a=st.text(max_size=3), b=st.text(max_size=3))
@example(cls=PathPropTask, prefix="x" * 2000, a="a", b="b")
@example(cls=PathPropPair, prefix="x" * 2000, a="a", b="b")
@example(cls=PathPropLong, prefix="x" * 2000, a="a", b="b")
def test_values_sharing_a_long_prefix_own_disjoint_paths(cls, prefix, a, b):
    assume(a != b)
    fresh()
    assert_disjoint(make(cls, prefix + a), make(cls, prefix + b))


@FAST
@given(first=st.tuples(st.integers(), st.floats(allow_nan=False)),
       second=st.tuples(st.integers(), st.floats(allow_nan=False)))
@example(first=(10 ** 40, 1.0), second=(10 ** 40 + 1, 1.0))
@example(first=(1, 0.1 + 0.2), second=(1, 0.3))
def test_distinct_typed_values_own_disjoint_paths(first, second):
    # values equal under == (0.0 and -0.0) are one task to luigi's instance cache
    assume(first != second)
    fresh()
    assert_disjoint(PathPropTyped(n=first[0], x=first[1]),
                    PathPropTyped(n=second[0], x=second[1]))


@pytest.mark.parametrize("cls", [PathPropTask, PathPropLong], ids=["short", "long_family"])
def test_explicit_long_values_differing_only_at_the_end(cls):
    t1, t2 = cls(p="x" * 2000 + "a"), cls(p="x" * 2000 + "b")
    assert t1.task_id != t2.task_id
    assert_safe(t1._store.owned_paths())
    assert_safe(t2._store.owned_paths())
    assert_disjoint(t1, t2)
    if cls is PathPropLong:  # the names were shortened: only the digest tells them apart
        for p in t1._store.owned_paths():
            assert "~" in p.name
            assert len(p.name.encode()) <= layout.OUTPUT_NAME_MAX


# -- 3. Workflow path/env and class-level locations ---------------------------------------------

def location_of(path, env=None):
    """Where a flow with ``path``/``env`` puts its outputs (before the task folders)."""
    root = pipeflow.settings.dirpath if path is None or path == "" else pathlib.Path(path)
    return root / f"env={env}" if env else root


@FAST
@given(path=st.one_of(st.none(), LOCATIONS), env=st.one_of(st.none(), TEXT),
       as_path=st.booleans(), value=st.sampled_from(["v", "../v", "x" * 300]))
@example(path=None, env="../x", as_path=False, value="v")
@example(path=None, env="a/../../b", as_path=False, value="v")
@example(path=None, env="/etc", as_path=False, value="v")
@example(path=None, env="", as_path=False, value="v")
@example(path=None, env="..", as_path=False, value="v")
@example(path=None, env="x" * 251, as_path=False, value="v")
@example(path=None, env="x" * 252, as_path=False, value="v")
@example(path="../outside", env=None, as_path=True, value="v")
@example(path="/etc", env=None, as_path=False, value="v")
@example(path=DATA + "/../outside", env=None, as_path=False, value="v")
@example(path=DATA + "/sub/../ok", env="prod", as_path=True, value="v")
@example(path="/\x00", env=None, as_path=False, value="v")
def test_workflow_outputs_stay_below_its_path_and_env(path, env, as_path, value):
    fresh()
    try:
        flow = pipeflow.Workflow(PathPropTask, {"p": value}, path=place(path, as_path), env=env)
        files = flow.expected_files()
        mine = flow.get_task()._store.owned_paths()  # the task carries the flow's location
    except Exception as exc:  # noqa: BLE001 - which exception is exactly what is checked
        assert_clear_refusal(exc, "path", "env")
        assert not single_name(env) or "\x00" in (path or "") or not_a_folder_name(
            place(path, as_path)) or len(os.fsencode(
            f"env={env}")) > NAME_MAX or any(len(os.fsencode(p)) > NAME_MAX for p in
                                               pathlib.Path(place(path) or ".").parts)
        return
    assert single_name(env), f"env={env!r} climbs out but was accepted"
    assert files == set(mine)
    assert_safe(files, location_of(place(path, as_path), env))


@FAST
@given(path=st.one_of(st.none(), LOCATIONS), task_group=st.one_of(st.none(), LOCATIONS),
       target_dir=st.one_of(st.none(), LOCATIONS), env=st.one_of(st.none(), TEXT))
@example(path="..", task_group=None, target_dir=None, env=None)
@example(path=None, task_group="../..", target_dir=None, env=None)
@example(path=None, task_group=None, target_dir="a/../../b", env=None)
@example(path=None, task_group=None, target_dir=".", env=None)
@example(path=None, task_group="/tmp", target_dir=None, env=None)
@example(path=None, task_group="a/b", target_dir=None, env=None)
@example(path=None, task_group=None, target_dir="x" * 256, env=None)
@example(path=DATA + "/../x", task_group=None, target_dir=None, env="prod")
def test_class_level_locations_are_refused_or_stay_inside(path, task_group, target_dir, env):
    fresh()
    values = {"path": place(path), "task_group": place(task_group),
              "target_dir": place(target_dir)}
    try:
        for name, value in values.items():
            setattr(PathPropAttrs, name, value)
        # on its own (the class-level path counts) and in a Workflow (its env applies)
        for where in ("class", "workflow"):
            try:
                if where == "class":
                    paths = PathPropAttrs()._store.owned_paths()
                    root = location_of(values["path"])
                else:
                    paths = pipeflow.Workflow(PathPropAttrs, env=env).expected_files()
                    root = location_of(values["path"], env)
            except Exception as exc:  # noqa: BLE001 - which exception is exactly what is checked
                assert_clear_refusal(exc, "path", "task_group", "target_dir", "env")
                continue
            assert single_name(values["task_group"])
            assert ".." not in pathlib.PurePath(values["target_dir"] or ".").parts
            assert_safe(paths, root)
    finally:
        for name in values:
            setattr(PathPropAttrs, name, None)
        fresh()


@pytest.mark.parametrize("setting", ["path", "env", "task_group"])
def test_undecodable_names_are_refused_cleanly_or_stay_inside(setting):
    # '\udcff' is how Python spells a non-UTF-8 byte of a file name (os.listdir, sys.argv)
    value = "bad\udcff"
    try:
        if setting == "task_group":
            PathPropAttrs.task_group = value
            paths = PathPropAttrs()._store.owned_paths()
        else:
            paths = pipeflow.Workflow(PathPropTask, {"p": "v"}, **{setting: value}).expected_files()
    except Exception as exc:  # noqa: BLE001 - which exception is exactly what is checked
        assert_clear_refusal(exc, setting)
        return
    finally:
        PathPropAttrs.task_group = None
        fresh()
    assert_safe(paths, location_of(value) if setting == "path" else
                location_of(None, value if setting == "env" else None))


def test_refusals_are_unsafe_path_errors_that_name_the_value():
    for kwargs in ({"env": "../x"}, {"env": "a/../../b"}, {"env": "/etc"}, {"env": "x" * 300},
                   {"env": ".."}, {"path": "a\x00b"}):
        with pytest.raises(UnsafePathError) as info:
            pipeflow.Workflow(PathPropTask, {"p": "v"}, **kwargs)
        (name, value), = kwargs.items()
        assert name in str(info.value) and value[:20].replace("\x00", "\\x00") in str(info.value)


# -- 4. without parameters in file names --------------------------------------------------------

@FAST
@given(cls=st.sampled_from(TEXT_CLASSES), a=TEXT, b=TEXT,
       path=st.one_of(st.none(), LOCATIONS), env=st.one_of(st.none(), TEXT))
@example(cls=PathPropTask, a="../../x", b="", path="..", env=None)
@example(cls=PathPropLong, a="x" * 3000, b="", path=None, env="x" * 251)
def test_without_params_in_names_paths_still_stay_inside(cls, a, b, path, env):
    pipeflow.settings.save_with_param = False  # restored by the conftest fixture
    fresh()
    task = make(cls, a, b)
    assert_safe(task._store.owned_paths())
    names = {p.name for p in task._store.owned_paths()}
    ext = task.target_ext
    assert {f"{k}.{ext}" for k in task.persist} <= names  # just {key}.{ext}
    assert "meta.pickle" in names
    try:
        flow = pipeflow.Workflow(cls, {"p": a}, path=place(path), env=env)
        files = flow.expected_files()
    except Exception as exc:  # noqa: BLE001 - which exception is exactly what is checked
        assert_clear_refusal(exc, "path", "env")
        return
    assert_safe(files, location_of(place(path), env))


# -- the file system agrees ------------------------------------------------------------------

#: relative folders below the working directory (a run writes there: nothing climbing out)
BELOW = st.lists(st.one_of(st.sampled_from(["a", "é", "x" * 200, " b ", "日本語", "a.b"]),
                           st.text(st.characters(blacklist_characters="/\\\x00",
                                                 blacklist_categories=["Cs"]),
                                   min_size=1, max_size=20).filter(
                               lambda t: t not in (".", ".."))),
                 min_size=1, max_size=6).map("/".join)


@SLOW
@given(value=TEXT, env=st.one_of(st.none(), TEXT), path=st.one_of(st.none(), BELOW))
@example(value="x" * 2000 + "a", env="x" * 251, path="é" * 127)
@example(value="../../escape\x00", env="..", path="./a/./b/")
@example(value="deep", env=None, path="a/" * 900)  # regression: left a tree pytest cannot delete
def test_runs_write_only_the_paths_they_own(value, env, path, tmp_path):
    fresh()
    # a new data dir and working directory per example (the conftest fixture restores both)
    data_dir = pipeflow.set_dir(tempfile.mkdtemp(dir=tmp_path, prefix="data-"))
    os.chdir(tempfile.mkdtemp(dir=tmp_path, prefix="cwd-"))
    try:
        flow = pipeflow.Workflow(PathPropTask, {"p": value}, path=path, env=env)
        flow.expected_files()
    except PipeflowError:
        assume(False)  # refusals are covered above; here the accepted ones are run
    try:
        check_run_writes_only_owned_paths(flow, data_dir, value, tmp_path,
                                          location_of(path and os.path.abspath(path), env))
    finally:
        remove_tree(data_dir)  # now: pytest's recursive rmtree fails on 1,000-level folders
        remove_tree(os.getcwd())


def check_run_writes_only_owned_paths(flow, data_dir, value, tmp_path, location):
    before = {p for p in tmp_path.rglob("*") if ".hypothesis" not in p.parts}
    flow.run()
    after = {p for p in tmp_path.rglob("*") if ".hypothesis" not in p.parts}
    written = {p for p in after - before if p.is_file() and p.name != ".pipeflow.lock"
               and "history.db" not in p.name}
    owned_paths = {pathlib.Path(os.path.abspath(p)) for p in flow.expected_files()}
    assert written, "the run wrote nothing"
    assert written <= owned_paths, sorted(map(str, written - owned_paths))
    # every new file lies in the flow's location (the run history in the data dir)
    assert all(location in p.parents or data_dir in p.parents
               for p in after - before if p.is_file())
    assert_safe(written, location)
    assert flow.outputLoad() == value
    assert flow.complete()
