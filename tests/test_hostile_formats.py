"""Issue 11, kind 7 (outputs): hostile data given to every format's save(), odd requires().

Every format either stores what it is given so that ``load()`` returns it (as exactly as
the format promises: docs/tasks-and-targets.md, "What each format keeps"), or refuses it at
``save()`` with a :class:`~pipeflow.errors.SaveError` naming the task, the output and the
fix, with nothing published. Never a raw pandas/pyarrow/pickle/openpyxl exception, never a
committed output that cannot be loaded.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import math
import pathlib
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeflow
import pipeflow.tasks.h5
from pipeflow.errors import (
    LoadError,
    PipeflowError,
    RequirementError,
    SaveError,
    TaskFailedError,
)
from pipeflow.targets import DataTarget
from pipeflow.tasks import TaskData

# -- the formats ---------------------------------------------------------------------------


def _format_classes() -> list[type[TaskData]]:
    """Every task class pipeflow ships to store a format (found, not listed): no run()."""
    found: dict[str, type[TaskData]] = {}
    stack: list[type] = [TaskData]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("pipeflow.tasks"):
                stack.append(sub)
                if sub.target_class is not DataTarget and "run" not in vars(sub):
                    found[sub.__name__] = sub
    return [found[k] for k in sorted(found)]


FORMATS = _format_classes()

#: what load() gives back, per format (docs/tasks-and-targets.md, "What each format keeps")
FIDELITY = {
    "TaskCache": "exact",
    "TaskCachePandas": "exact",
    "TaskPickle": "exact",
    "TaskPqPandas": "typed",
    "TaskH5Pandas": "typed",
    "TaskJson": "json",
    "TaskCSVPandas": "csv",
    "TaskCSVGZPandas": "csv",
    "TaskExcelPandas": "excel",
}


def test_every_shipped_format_has_a_documented_fidelity():
    names = {c.__name__ for c in FORMATS}
    assert {"TaskPqPandas", "TaskCSVPandas", "TaskPickle", "TaskH5Pandas"} <= names
    assert names == set(FIDELITY), "a new format: say (and document) what it keeps"
    doc = pathlib.Path(__file__).parents[1].joinpath("docs", "tasks-and-targets.md").read_text()
    section = doc.split("## What each format keeps", 1)[1].split("\n## ", 1)[0]
    for name in names:
        assert f"`{name.split('.')[-1]}`" in section or name in section, name


#: one task class per format, with a parameter (messages must show it)
FUZZ = {
    cls.__name__: type(f"Fuzz{cls.__name__}", (cls,), {
        "n": pipeflow.IntParameter(), "__module__": __name__,
        "run": lambda self: None})
    for cls in FORMATS
}
_COUNTER = itertools.count()

FIX_WORDS = re.compile(r"\b(Convert|Rename|Flatten|Shorten|Make|Save|save it|save the frame|"
                       r"Add a column|pick a task class|Clean|clean)\b")


def _task_files(task: TaskData) -> list[pathlib.Path]:
    folder = task._store.folder()
    return sorted(p for p in folder.glob("*") if task.task_id in p.name)


def _assert_clean_refusal(task: TaskData, exc: SaveError) -> None:
    """The SaveError names the task (with parameters), the output and a fix; nothing left."""
    msg = str(exc)
    assert task.display_name() in msg, msg
    assert "'data'" in msg, msg
    assert FIX_WORDS.search(msg), msg
    assert not task.complete()
    assert _task_files(task) == [], _task_files(task)  # no output, sidecar or temp file
    assert not task._store.record_file().exists()


# -- comparing what was saved with what loads ----------------------------------------------

def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, types included (1 is not 1.0 nor True)."""
    if a is b:  # (an in-memory output no deep copy can be made of is kept as it is)
        return True
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, pd.DataFrame):
        try:
            pd.testing.assert_frame_equal(a, b)
        except AssertionError:
            return False
        return True
    if isinstance(a, pd.Series):
        try:
            pd.testing.assert_series_equal(a, b)
        except AssertionError:
            return False
        return True
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return a is b


def _json_form(obj: Any) -> Any:
    """What JSON gives back: tuples as lists, keys as strings (documented)."""
    import json

    if isinstance(obj, dict):
        return {json.loads(json.dumps({k: 0})).popitem()[0]: _json_form(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_form(v) for v in obj]
    return obj


def _typed_form(df: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """What parquet/HDF5 promise to give back for ``df`` (besides object columns)."""
    out = df.copy()
    for j in range(out.shape[1]):
        col = out.iloc[:, j]
        if (fmt == "TaskPqPandas" and isinstance(col.dtype, pd.CategoricalDtype)
                and len(col.dtype.categories) == 0):
            out.isetitem(j, col.astype(object))  # no categories: nothing to keep
        elif fmt == "TaskPqPandas" and col.dtype.kind == "M" and "[s" in str(col.dtype):
            # parquet's coarsest time unit is the millisecond
            out.isetitem(j, col.astype(str(col.dtype).replace("[s", "[ms")))
    return out


def _check_typed(fmt: str, saved: pd.DataFrame, loaded: pd.DataFrame) -> None:
    """Columns, index and dtypes kept; object columns: their values (dtype re-inferred)."""
    expected = _typed_form(saved, fmt)
    assert list(loaded.columns) == list(saved.columns)
    objects = [j for j, dtype in enumerate(saved.dtypes) if pd.api.types.is_object_dtype(dtype)]
    others = [j for j in range(saved.shape[1]) if j not in objects]
    if any(pd.api.types.is_object_dtype(saved.index.get_level_values(i))
           for i in range(saved.index.nlevels)):  # object index: its values, re-inferred
        assert list(loaded.index.names) == list(saved.index.names)
        assert all(_same_value(g, w) for g, w in zip(loaded.index, saved.index))
        assert len(loaded) == len(saved)
        loaded = loaded.set_axis(saved.index, axis=0)
    pd.testing.assert_frame_equal(loaded.iloc[:, others], expected.iloc[:, others],
                                  check_column_type=False, check_index_type="equiv",
                                  check_freq=False)
    for j in objects:
        got, want = loaded.iloc[:, j].astype(object), saved.iloc[:, j]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert (pd.isna(g) and pd.isna(w)) if pd.isna(w) is True else _same_value(g, w), \
                (g, w)


def _same_value(a: Any, b: Any) -> bool:
    """Equal values (1 == 1.0), NaN-aware; parquet's lists as arrays, dicts as structs."""
    if isinstance(b, (list, tuple)) and isinstance(a, (list, tuple, np.ndarray)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(b, dict) and isinstance(a, dict):  # a struct: every key of the column
        return all(k in a and _same_value(a[k], v) for k, v in b.items()) and all(
            v is None for k, v in a.items() if k not in b)
    try:
        return bool(a == b) or (pd.isna(a) is True and pd.isna(b) is True)
    except (TypeError, ValueError):
        return False


def _no_freq(index: pd.Index) -> pd.Index:
    """A DatetimeIndex's ``freq`` is not data: no format keeps it (documented)."""
    return index._with_freq(None) if isinstance(index, pd.DatetimeIndex) else index


def _text_reference(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """What pandas itself makes of the frame's values written as CSV / Excel cells."""
    flat = df.reset_index(drop=True)
    if kind == "csv":
        text = flat.to_csv(index=False, lineterminator="\r\n")  # every \r, \n quoted
        try:
            return pd.read_csv(io.StringIO(text), skip_blank_lines=False)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
    buf = io.BytesIO()
    flat.to_excel(buf, index=False)
    buf.seek(0)
    return pd.read_excel(buf)


def _check_round_trip(fmt: str, saved: Any, loaded: Any) -> None:
    kind = FIDELITY[fmt]
    if kind == "exact":
        if isinstance(saved, (pd.DataFrame, pd.Series, np.ndarray, list, dict, tuple)) or \
                saved is None or isinstance(saved, (int, float, str, bytes)):
            assert _same(loaded, saved), (saved, loaded)
        return
    if kind == "json":
        assert _same(loaded, _json_form(saved)), (saved, loaded)
        return
    assert isinstance(loaded, pd.DataFrame)
    if kind == "typed":
        _check_typed(fmt, saved, loaded)
        return
    # CSV and Excel: same rows, same column names (as text), same index, and each value
    # what pandas' own reading of the written text/cells gives
    assert loaded.shape == saved.shape, (loaded.shape, saved.shape)
    assert [str(c) for c in loaded.columns] == [str(c) for c in saved.columns]
    if saved.index.dtype.kind in "iufMm" or isinstance(saved.index, pd.MultiIndex):
        pd.testing.assert_index_equal(_no_freq(loaded.index), _no_freq(saved.index),
                                      exact=False, check_names=True)
    else:
        assert [str(v) for v in loaded.index] == [str(v) for v in saved.index]
        assert list(loaded.index.names) == list(saved.index.names)
    if saved.shape[1] == 0:
        return
    ref = _text_reference(saved, kind)
    got = loaded.reset_index(drop=True)
    got.columns = ref.columns
    if kind == "excel" and len(ref) < len(got):  # trailing empty rows: restored as NaN
        assert got.iloc[len(ref):].isna().all().all()
        got = got.iloc[:len(ref)]
    pd.testing.assert_frame_equal(got, ref, check_dtype=False)


# -- hostile data ---------------------------------------------------------------------------

N = st.integers(0, 4)
LABELS = st.one_of(
    st.sampled_from(["a", "b", "", " ", "a.1", "x\ny", "Unnamed: 0", "é", "0",
                     "__index_level_0__"]),
    st.integers(-1, 2), st.sampled_from([1.5, None, True]))


def _column(kind: str, n: int) -> st.SearchStrategy[pd.Series]:
    if kind == "int":
        return st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n).map(
            lambda v: pd.Series(v, dtype="int64"))
    if kind == "float":
        return st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n,
                        max_size=n).map(lambda v: pd.Series(v, dtype="float64"))
    if kind == "str":
        return st.lists(st.one_of(st.text(max_size=6), st.sampled_from(
            ["NA", "null", "x" * 40_000, "a\x00b", "01", "1e5", ""])), min_size=n,
            max_size=n).map(lambda v: pd.Series(v, dtype=object))
    if kind == "bool":
        return st.lists(st.booleans(), min_size=n, max_size=n).map(pd.Series)
    if kind == "datetime":
        return st.lists(st.one_of(st.datetimes(), st.none()), min_size=n, max_size=n).map(
            lambda v: pd.Series(pd.to_datetime(v)))
    if kind == "tz":
        return st.lists(st.datetimes(), min_size=n, max_size=n).map(
            lambda v: pd.Series(pd.to_datetime(v)).dt.tz_localize("UTC"))
    if kind == "category":
        return st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n).map(
            lambda v: pd.Series(pd.Categorical(v)))
    if kind == "mixed":
        return st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none(),
                                  st.floats(allow_nan=True)), min_size=n, max_size=n).map(
            lambda v: pd.Series(v, dtype=object))
    if kind == "timedelta":
        days = st.timedeltas(min_value=dt.timedelta(days=-10**5),
                             max_value=dt.timedelta(days=10**5))
        return st.lists(st.one_of(days, st.none()), min_size=n, max_size=n).map(
            lambda v: pd.Series(pd.to_timedelta(v)))
    if kind == "Int64":
        return st.lists(st.one_of(st.integers(-10, 10), st.none()), min_size=n,
                        max_size=n).map(lambda v: pd.Series(v, dtype="Int64"))
    if kind == "boolean":
        return st.lists(st.one_of(st.booleans(), st.none()), min_size=n, max_size=n).map(
            lambda v: pd.Series(v, dtype="boolean"))
    if kind == "string":
        return st.lists(st.one_of(st.text(max_size=4), st.none()), min_size=n,
                        max_size=n).map(lambda v: pd.Series(v, dtype="string"))
    if kind == "uint":
        return st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n).map(
            lambda v: pd.Series(v, dtype="uint64"))
    if kind == "complex":
        return st.lists(st.complex_numbers(allow_nan=False, allow_infinity=False), min_size=n,
                        max_size=n).map(lambda v: pd.Series(v, dtype="complex128"))
    if kind == "bytes":
        return st.lists(st.binary(max_size=4), min_size=n, max_size=n).map(
            lambda v: pd.Series(v, dtype=object))
    if kind == "nested":
        return st.lists(st.one_of(st.lists(st.integers(0, 3), max_size=2),
                                  st.dictionaries(st.sampled_from("xy"), st.integers(0, 3))),
                        min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype=object))
    if kind == "period":
        return st.lists(st.integers(0, 100), min_size=n, max_size=n).map(
            lambda v: pd.Series(pd.PeriodIndex.from_ordinals(v, freq="D")))
    assert kind == "none"
    return st.just(pd.Series([None] * n, dtype=object))


KINDS = ["int", "float", "str", "bool", "datetime", "tz", "category", "mixed", "none",
         "timedelta", "Int64", "boolean", "string", "uint", "complex", "bytes", "nested",
         "period"]


def _index(kind: str, n: int) -> pd.Index | None:
    if kind == "default":
        return None
    if kind == "range5":
        return pd.RangeIndex(5, 5 + n)
    if kind == "int":
        return pd.Index(np.arange(n) * 7, name="id")
    if kind == "str":
        return pd.Index([f"r{i}" for i in range(n)], name="key")
    if kind == "dates":
        return pd.DatetimeIndex(pd.date_range("2024-01-01", periods=n), name="day")
    if kind == "dup":
        return pd.Index([1] * n, name="id")
    if kind == "mixed":
        return pd.Index([1, "a", 2.5, "b"][:n] + ["z"] * max(0, n - 4), dtype=object)
    if kind == "named_like_column":
        return pd.Index(np.arange(n), name=0)
    assert kind == "multi"
    return pd.MultiIndex.from_arrays([np.arange(n), [f"s{i}" for i in range(n)]],
                                     names=["i", "s"])


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(N)
    kinds = draw(st.lists(st.sampled_from(KINDS), max_size=3))
    cols = [draw(_column(k, n)) for k in kinds]
    labels = draw(st.lists(LABELS, min_size=len(cols), max_size=len(cols)))
    df = pd.DataFrame({i: c.reset_index(drop=True) for i, c in enumerate(cols)},
                      index=pd.RangeIndex(n))
    if draw(st.booleans()) and len(cols) >= 1:
        df.columns = pd.MultiIndex.from_arrays([["g"] * len(cols), [str(x) for x in labels]])
    else:
        df.columns = pd.Index(labels, dtype=object) if cols else df.columns
    index = _index(draw(st.sampled_from(["default", "range5", "int", "str", "dates", "multi",
                                         "dup", "mixed", "named_like_column"])), n)
    if index is not None:
        df.index = index
    return df


class Unrebuildable(Exception):
    """Pickles, but unpickling calls __init__ with one argument: it fails."""

    def __init__(self, code: int, msg: str):
        super().__init__(f"{code}: {msg}")


def _deep(depth: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(depth):
        out = [out]
    return out


OBJECTS = st.sampled_from([
    "none", "series", "dict", "list", "tuple", "generator", "lambda", "set", "bytes",
    "deep", "error", "array", "key_clash", "int_keys", "nan", "text", "nested",
])


def _object(name: str) -> Any:
    return {
        "none": lambda: None,
        "series": lambda: pd.Series([1, 2], name="s"),
        "dict": lambda: {"a": 1, "b": [1.5, None, "x"]},
        "list": lambda: [1, "a", None, 2.5],
        "tuple": lambda: (1, 2),
        "generator": lambda: (i for i in range(3)),
        "lambda": lambda: (lambda x: x),
        "set": lambda: {1, 2},
        "bytes": lambda: b"\x00\x01",
        "deep": lambda: _deep(3000),
        "error": lambda: Unrebuildable(3, "boom"),
        "array": lambda: np.arange(3),
        "key_clash": lambda: {1: "a", "1": "b"},
        "int_keys": lambda: {1: "a", 2: {3: "b"}},
        "nan": lambda: float("nan"),
        "text": lambda: "x" * 100_000,
        "nested": lambda: {"frames": [pd.DataFrame({"a": [1]})]},
    }[name]()


def _save_and_check(fmt: str, data: Any) -> str:
    """Save ``data`` by hand; it loads back as promised, or the save is a clean refusal."""
    task = FUZZ[fmt](n=next(_COUNTER))
    try:
        task.save(data)
    except SaveError as exc:
        _assert_clean_refusal(task, exc)
        return "refused"
    try:
        loaded = task.outputLoad()
    except LoadError as exc:  # committed something that cannot be loaded
        raise AssertionError(f"{fmt}: saved, then: {exc}") from exc
    _check_round_trip(fmt, data, loaded)
    return "stored"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(FUZZ)),
       data=st.one_of(frames(), OBJECTS))
def test_every_format_round_trips_or_refuses_cleanly(fmt, data):
    """The property: exact (per the format's documented fidelity) or a clean SaveError."""
    _save_and_check(fmt, _object(data) if isinstance(data, str) else data)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=frames())
def test_dataframe_formats_round_trip_or_refuse_hostile_frames(data):
    """Every DataFrame format gets the same hostile frame."""
    for fmt in sorted(FUZZ):
        try:
            _save_and_check(fmt, data)
        except AssertionError as exc:
            raise AssertionError(f"{fmt}: {exc}") from exc


# -- the cases of the issue, one by one -----------------------------------------------------

class Pq(pipeflow.tasks.TaskPqPandas):
    n = pipeflow.IntParameter(default=1)


class Csv(pipeflow.tasks.TaskCSVPandas):
    n = pipeflow.IntParameter(default=1)


class Xl(pipeflow.tasks.TaskExcelPandas):
    n = pipeflow.IntParameter(default=1)


class Pkl(pipeflow.tasks.TaskPickle):
    n = pipeflow.IntParameter(default=1)


class Js(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter(default=1)


def _refused(task: TaskData, data: Any, *needles: str) -> str:
    with pytest.raises(SaveError) as info:
        task.save(data)
    _assert_clean_refusal(task, info.value)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, msg
    assert info.value.__cause__ is None or not isinstance(info.value.__cause__, SaveError)
    return msg


@pytest.mark.parametrize("columns, needle", [
    ([0, "a"], "not all strings"),
    (["a", "a"], "not distinct"),
])
def test_parquet_mixed_or_duplicate_column_names_are_a_save_error(columns, needle):
    """Was: a raw ValueError (duplicates), or [0, 'a'] silently loaded as ['0', 'a']."""
    _refused(Pq(n=3), pd.DataFrame([[1, 2]], columns=columns), needle, "Pq(n=3)",
             "PqPandasTarget")


def test_parquet_column_mixing_types_is_a_save_error_naming_the_column():
    """Was: a raw pyarrow ArrowInvalid."""
    msg = _refused(Pq(), pd.DataFrame({"a": pd.Series([1, "x"], dtype=object)}),
                   "ArrowInvalid", "astype(str)")
    assert "column a" in msg


def test_parquet_rows_without_columns_is_a_save_error():
    """Was: committed, and loaded with no rows."""
    _refused(Pq(), pd.DataFrame(index=range(3)), "no columns")


@pytest.mark.parametrize("data", [(i for i in range(3)), lambda x: x],
                         ids=["generator", "lambda"])
def test_pickle_of_a_generator_or_lambda_is_a_save_error(data):
    """Was: a raw TypeError / PicklingError."""
    _refused(Pkl(n=2), data, "Pkl(n=2)", "PickleTarget", "a list instead of a generator")


def test_pickle_that_cannot_be_rebuilt_is_refused_at_save():
    """Was: committed; every load then raised a raw TypeError from the exception's __init__."""
    msg = _refused(Pkl(), Unrebuildable(3, "boom"), "reading it back failed",
                   "missing 1 required positional argument")
    assert "Nothing was published" in msg


def test_excel_multiindex_columns_and_time_zones_are_a_save_error():
    """Was: a raw NotImplementedError / ValueError from pandas."""
    multi = pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "b"), ("a", "c")]))
    _refused(Xl(), multi, "MultiIndex", "Flatten")
    tz = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=2, tz="UTC")})
    _refused(Xl(), tz, "column 't'", "time zone", "tz_localize(None)")


def test_excel_control_characters_and_overlong_strings_are_a_save_error():
    """Was: a raw openpyxl IllegalCharacterError; a 40,000-character string silently cut."""
    _refused(Xl(), pd.DataFrame({"a": ["x\x01y"]}), "IllegalCharacterError", "control")
    _refused(Xl(), pd.DataFrame({"a": ["x" * 40_000]}), "32767")


def test_excel_trailing_empty_rows_are_kept():
    """Was: rows whose cells were all empty at the end of the sheet were lost on loading."""
    df = pd.DataFrame({"a": [1.0, np.nan, np.nan], "b": ["x", "", None]})
    Xl().save(df)
    loaded = Xl().outputLoad()
    assert loaded.shape == (3, 2)
    assert loaded["a"].iloc[0] == 1.0 and loaded.iloc[1:].isna().all().all()


EMPTY = {"empty": pd.DataFrame(), "rows-no-columns": pd.DataFrame(index=range(3)),
         "columns-no-rows": pd.DataFrame({"a": pd.Series([], dtype="int64")})}


class EmptyCsv(pipeflow.tasks.TaskCSVPandas):
    case = pipeflow.Parameter()

    def run(self):
        self.save(EMPTY[self.case])


@pytest.mark.parametrize("case", sorted(EMPTY))
def test_empty_frame_as_csv_loads_back(case):
    """Was: committed, then every load raised pandas' EmptyDataError."""
    df = EMPTY[case]
    pipeflow.run(EmptyCsv(case=case))
    loaded = EmptyCsv(case=case).outputLoad()
    assert loaded.shape == df.shape
    assert [str(c) for c in loaded.columns] == [str(c) for c in df.columns]
    assert list(loaded.index) == list(df.index)


def test_csv_rows_of_blanks_are_kept():
    """Was: a row holding only ' ' in a one-column frame vanished on loading."""
    Csv().save(pd.DataFrame({"a": [" ", "x"]}))
    assert Csv().outputLoad()["a"].tolist() == [" ", "x"]


def test_csv_duplicate_and_empty_column_names_are_a_save_error():
    """Was: committed; loaded as ['a', 'a.1'] / ['Unnamed: 0']."""
    _refused(Csv(), pd.DataFrame([[1, 2]], columns=["a", "a"]), "not distinct")
    _refused(Csv(), pd.DataFrame([[1, 2]], columns=[0, "0"]), "not distinct")
    _refused(Csv(), pd.DataFrame({"": [1]}), "empty")


def test_json_keys_that_collide_as_strings_and_deep_nesting_are_a_save_error():
    """Was: {1: 'a', '1': 'b'} committed with one value lost; deep nesting a raw RecursionError."""
    _refused(Js(), {1: "a", "1": "b"}, "same string '1'")
    _refused(Js(), _deep(5000), "nested too deeply")


def test_a_save_error_in_a_run_fails_the_task_and_publishes_nothing(stored):
    class Mixed(pipeflow.tasks.TaskPqPandas):
        def run(self):
            self.save(pd.DataFrame({"a": pd.Series([1, "x"], dtype=object)}))

    result = pipeflow.run(Mixed(), abort=False)
    error = result.by_state("failed")[0].error
    assert isinstance(error, SaveError) and "Mixed()" in str(error)
    assert not Mixed().complete()
    assert stored() == []


def test_load_of_an_unreadable_committed_file_is_a_load_error():
    """A reader's failure on a committed file is a LoadError naming the task and output."""
    Csv(n=4).save(pd.DataFrame({"a": [1]}))
    with pytest.raises(LoadError) as info:
        Csv(n=4).output().load(no_such_reader_argument=1)
    assert "Csv(n=4)" in str(info.value) and "'data'" in str(info.value)


# -- requires() with nested containers and None ---------------------------------------------

class Up(pipeflow.tasks.TaskJson):
    k = pipeflow.IntParameter()

    def run(self):
        self.save({"k": self.k})


class Nested(pipeflow.tasks.TaskJson):
    def requires(self):
        return {"x": [Up(k=1), Up(k=2)], "y": None, "z": {"w": (Up(k=3),)}}

    def run(self):
        self.save(self.inputLoad())


class NestedList(pipeflow.tasks.TaskJson):
    def requires(self):
        return [Up(k=1), [Up(k=2), None], None]

    def run(self):
        self.save({"all": self.inputLoad()})


def test_nested_requires_load_as_the_same_nested_structure():
    """Was: a raw AttributeError ('list' object has no attribute ...) in inputLoad()."""
    pipeflow.run(Nested())
    # a dict nested in a dict loads as a task with several outputs (d6tflow): a list...
    assert Nested().outputLoad() == {"x": [{"k": 1}, {"k": 2}], "y": None,
                                     "z": [[{"k": 3}]]}
    assert Nested().inputLoad() == {"x": [{"k": 1}, {"k": 2}], "y": None,
                                    "z": [({"k": 3},)]}
    # ... or, with as_dict, a dict
    assert Nested().inputLoad(as_dict=True)["z"] == {"w": ({"k": 3},)}
    assert Nested().inputLoad(task="x") == [{"k": 1}, {"k": 2}]
    assert Nested().inputLoad(task="z") == [({"k": 3},)]
    paths = Nested().input()
    assert paths["y"] is None and paths["x"][1].path == Up(k=2).output().path


def test_none_in_requires_is_skipped_by_the_graph_and_loads_as_none():
    pipeflow.run(NestedList())
    assert NestedList().outputLoad() == {"all": [{"k": 1}, [{"k": 2}, None], None]}
    assert {t.task_id for t in pipeflow.graph.build([NestedList()]).nodes} == {
        NestedList().task_id, Up(k=1).task_id, Up(k=2).task_id}


def test_metaload_follows_nested_requires():
    class Meta(pipeflow.tasks.TaskJson):
        k = pipeflow.IntParameter()

        def run(self):
            self.save({})
            self.saveMeta({"m": self.k})

    class Down(pipeflow.tasks.TaskJson):
        def requires(self):
            return {"a": [Meta(k=1), Meta(k=2)], "b": None}

        def run(self):
            self.save({"meta": self.metaLoad()})

    pipeflow.run(Down())
    assert Down().outputLoad() == {"meta": {"a": [{"m": 1}, {"m": 2}], "b": None}}


def test_a_non_task_inside_requires_is_a_requirement_error():
    class Odd(pipeflow.tasks.TaskJson):
        def requires(self):
            return {"x": ["not a task", Up(k=1)]}

    with pytest.raises(RequirementError, match="not a task"):
        Odd().inputLoad()


# -- an output named like the metadata ------------------------------------------------------

def test_an_output_whose_file_would_be_the_metadata_file_is_refused_at_definition():
    """Was: output and metadata shared one file; outputLoad() returned the metadata."""
    with pytest.raises(PipeflowError, match="metadata file") as info:
        class Clash(pipeflow.tasks.TaskPickle):
            target_ext = "pickle"
            persist = ["meta", "model"]
    assert "persist = ['metadata', 'model']" in str(info.value)


def test_an_output_named_meta_set_on_an_instance_is_refused_before_any_file():
    class Fine(pipeflow.tasks.TaskPickle):
        persist = ["meta", "model"]

        def run(self):
            self.save({"meta": "OUT", "model": 1})
            self.saveMeta({"m": 1})

    pipeflow.run(Fine())  # 'meta' with .pkl: distinct from the metadata's .pickle
    assert Fine().outputLoad() == ["OUT", 1] and Fine().outputLoadMeta() == {"m": 1}
    task = Fine()
    task.target_ext = "pickle"
    with pytest.raises(PipeflowError, match="metadata file"):
        task.output()


def test_failures_are_not_raw_when_run_through_the_engine():
    class Gen(pipeflow.tasks.TaskPickle):
        def run(self):
            self.save(i for i in range(2))

    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Gen())
    assert isinstance(info.value.__cause__, SaveError)


def test_several_outputs_saved_by_hand_are_all_published_or_none(stored):
    """Was: the outputs before the one the writer failed on were published and committed."""

    class Two(pipeflow.tasks.TaskPickle):
        persist = ["a", "b"]

    with pytest.raises(SaveError, match="output 'b' of Two"):
        Two().save({"a": 1, "b": lambda: 0})
    assert stored() == []  # 'a' not published, no temp file of either
    assert not Two().output()["a"].exists()
    Two().save({"a": 1, "b": 2})
    assert Two().outputLoad() == [1, 2]


# -- found by the property test ---------------------------------------------------------------

def test_csv_string_with_a_carriage_return_stays_one_row():
    """Was: 'x\\ry' written unquoted, read back as a line break: an extra row."""
    Csv().save(pd.DataFrame({"a": ["x\ry", "z"], "b": [1, 2]}))
    loaded = Csv().outputLoad()
    assert loaded["a"].tolist() == ["x\ry", "z"] and loaded["b"].tolist() == [1, 2]


def test_csv_without_carriage_returns_keeps_plain_line_ends():
    Csv().save(pd.DataFrame({"a": ["x\ny", "z"]}))
    assert b"\r" not in Csv().output().path.read_bytes()


def test_parquet_index_name_that_is_not_a_string_is_a_save_error():
    """Was: index named 0 beside a column 0 committed, then every load raised ArrowInvalid."""
    df = pd.DataFrame({0: [1, 2]}, index=pd.Index([5, 6], name=0))
    _refused(Pq(), df, "index has a name that is not a string")


def test_hdf5_column_named_none_and_nullable_dtypes_are_a_save_error():
    """Was: a column named None loaded as NaN; an empty Int64 column committed unreadable."""
    class H5(pipeflow.tasks.h5.TaskH5Pandas):
        n = pipeflow.IntParameter(default=1)

    df = pd.DataFrame([[0.0, 0, 1.0]], columns=pd.Index(["a", "b", None], dtype=object))
    _refused(H5(), df, "named None")
    _refused(H5(), pd.DataFrame({"a": pd.Series([], dtype="Int64")}), "nullable dtype Int64")


def test_excel_number_beyond_what_a_cell_holds_is_a_save_error():
    """Was: 1.7e308 committed, then every load raised OverflowError."""
    _refused(Xl(), pd.DataFrame({"a": [1.7e308]}), "largest number")


def test_pickle_is_read_back_only_when_it_holds_objects_of_other_packages(monkeypatch):
    """The read-back that proves a pickle loads costs a load: only where it can fail."""
    reads: list[pathlib.Path] = []
    real = pipeflow.targets.PickleTarget.read
    monkeypatch.setattr(pipeflow.targets.PickleTarget, "read",
                        lambda self, path, **kw: (reads.append(path), real(self, path, **kw))[1])
    Pkl(n=5).save({"frame": pd.DataFrame({"a": [1]}), "array": np.zeros(3), "x": [1, "a"]})
    assert reads == []
    Pkl(n=6).save({"error": ValueError("fine"), "when": dt.datetime(2024, 1, 1)})
    assert reads == []  # builtins' own exception rebuilds
    Pkl(n=7).save([_deep(3)])
    assert reads == []
    Pkl(n=8).save({"mine": Up(k=1).output()})
    assert len(reads) == 1  # an object of another package: read back with the format's read


def test_a_pickle_format_of_your_own_is_read_back_with_its_own_reader():
    import gzip
    import pickle

    class GzPickle(pipeflow.targets.PickleTarget):
        def write(self, data, path, **kwargs):
            with gzip.open(path, "wb") as fh:
                pickle.dump(data, fh)

        def read(self, path, **kwargs):
            with gzip.open(path, "rb") as fh:
                return pickle.load(fh)

    class Gz(pipeflow.tasks.TaskData):
        target_class = GzPickle
        target_ext = "pkl.gz"

    Gz().save({"a": 1})
    assert Gz().outputLoad() == {"a": 1}
    with pytest.raises(SaveError, match="reading it back failed"):
        Gz().save(Unrebuildable(1, "x"))


def test_a_committed_file_that_cannot_be_opened_is_a_corrupt_output_error(monkeypatch):
    from pipeflow.errors import CorruptOutputError

    Csv(n=9).save(pd.DataFrame({"a": [1]}))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pd, "read_csv", denied)
    with pytest.raises(CorruptOutputError, match="cannot be read"):
        Csv(n=9).outputLoad()
