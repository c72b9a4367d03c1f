"""Issue 11: parameter identity, inputLoad(keys=...), Excel big ints, unsafe persist names.

Found by an adversarial tester, each reproduced on the code before the fix.
"""

from __future__ import annotations

import datetime

import luigi
import pandas as pd
import pytest

import pipeflow
from pipeflow.errors import (
    ParameterError,
    PipeflowError,
    SaveError,
    UnknownNameError,
    UnsafePathError,
)


# -- 1. parameter identity -----------------------------------------------------------------------
class Plain(pipeflow.tasks.TaskJson):
    b = luigi.Parameter(default="x")

    def run(self):
        self.save({"b": repr(self.b)})


class Typed(pipeflow.tasks.TaskJson):
    b = luigi.IntParameter(default=0)

    def run(self):
        self.save({"b": self.b})


@pytest.mark.parametrize("one, other", [
    (1, "1"), (None, "None"), (True, "True"), (1.5, "1.5"), ((1, 2), "(1, 2)"),
])
def test_a_plain_parameter_identifies_a_value_by_its_text(one, other):
    """luigi's and d6tflow's rule, documented in docs/parameters.md: one task id per text."""
    assert Plain(b=one).task_id == Plain(b=other).task_id


def test_workflow_multi_grid_whose_values_share_a_task_is_refused():
    """Was: WorkflowMulti(T, {'b': [1, '1']}) silently collapsed to one flow."""
    with pytest.raises(ParameterError) as info:
        pipeflow.WorkflowMulti(Plain, {"b": [1, "1"]})
    msg = str(info.value)
    assert "'1'" in msg and "1" in msg and "'b'" in msg and "IntParameter" in msg


def test_workflow_multi_grid_typed_values_that_read_as_one_are_refused():
    with pytest.raises(ParameterError, match="'b'"):
        pipeflow.WorkflowMulti(Typed, {"b": [1, "1"]})


def test_workflow_multi_grid_of_distinct_values_still_works():
    flows = pipeflow.WorkflowMulti(Plain, {"b": ["1", "2"], "c": [1]})
    assert list(flows.workflow_objs) == ["b=1,c=1", "b=2,c=1"]
    flows = pipeflow.WorkflowMulti(Typed, {"b": [1, 2]})
    flows.run()
    assert flows.outputLoad() == {"b=1": {"b": 1}, "b=2": {"b": 2}}


class F(pipeflow.tasks.TaskJson):
    x = luigi.FloatParameter(default=0.0)


def test_float_minus_zero_is_zero():
    """Was: F(x=-0.0) shared F()'s task id, and F().x then returned -0.0 (instance cache)."""
    neg = F(x=-0.0)
    assert str(neg.x) == "0.0"
    assert neg.task_id == F().task_id
    assert str(F().x) == "0.0"
    luigi.task_register.Register.clear_instance_cache()
    assert str(F().x) == "0.0"
    assert str(F(x=-0.0).x) == "0.0"


class TD(pipeflow.tasks.TaskJson):
    d = luigi.TimeDeltaParameter(default=datetime.timedelta(0))


def test_timedelta_with_nanoseconds_is_refused():
    """Was: pd.Timedelta('1ns') silently became 0 (the default's task id)."""
    with pytest.raises(ParameterError, match="nanosecond"):
        TD(d=pd.Timedelta("1ns"))
    assert TD(d=pd.Timedelta("1s")).d == datetime.timedelta(seconds=1)
    assert TD(d=pd.Timedelta("1s")).task_id == TD(d=datetime.timedelta(seconds=1)).task_id


class DI(pipeflow.tasks.TaskJson):
    d = luigi.DateIntervalParameter()


@pytest.mark.parametrize("value", ["2020-01-05-2020-01-01", 2020])
def test_date_interval_inverted_or_an_int_is_refused(value):
    with pytest.raises(ParameterError, match="DI"):
        DI(d=value)


def test_date_interval_valid_values_are_accepted():
    assert str(DI(d="2020-01-01-2020-01-05").d) == "2020-01-01-2020-01-05"
    assert str(DI(d="2020-W03").d) == "2020-W03"
    assert str(DI(d="2020").d) == "2020"


# -- 2. inputLoad(keys=...) ------------------------------------------------------------------------
class A(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"a": 1})


class B(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"b": 2})


class Two(pipeflow.tasks.TaskJson):
    persist = ["x", "y"]

    def run(self):
        self.save({"x": {"x": 1}, "y": {"y": 2}})


@pipeflow.requires({"a": A, "b": B})
class D(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({})


@pipeflow.requires(A, B)
class L(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({})


@pipeflow.requires(Two)
class One(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({})


@pytest.fixture
def built():
    pipeflow.run([D(), L(), One()])


def test_inputload_dict_unknown_key_is_unknown_name_error(built):
    """Was: a raw KeyError."""
    with pytest.raises(UnknownNameError) as info:
        D().inputLoad(keys=["nope"])
    assert "'nope'" in str(info.value) and "'a'" in str(info.value) and "D()" in str(info.value)
    with pytest.raises(UnknownNameError):
        D().inputLoad(keys="nope")


@pytest.mark.parametrize("keys", [5, [5], 3.5])
def test_inputload_keys_not_names_is_parameter_error(built, keys):
    """Was: a raw TypeError."""
    for task in (D(), L(), One()):
        with pytest.raises(ParameterError, match="keys"):
            task.inputLoad(keys=keys)


def test_inputload_list_of_single_output_tasks_refuses_unknown_keys(built):
    """Was: keys=['x'] silently ignored, everything returned."""
    with pytest.raises(UnknownNameError, match="'x'"):
        L().inputLoad(keys=["x"])
    with pytest.raises(UnknownNameError, match="'x'"):
        A().outputLoad(keys=["x"])


def test_inputload_keys_that_mean_something_still_work(built):
    assert D().inputLoad(keys=["b"]) == {"b": {"b": 2}}
    assert D().inputLoad(keys="a") == {"a": 1}
    assert One().inputLoad(keys=["y"]) == [{"y": 2}]
    assert One().inputLoad(keys="x") == {"x": 1}
    assert L().inputLoad() == [{"a": 1}, {"b": 2}]
    assert L().inputLoad(keys=["data"]) == [{"a": 1}, {"b": 2}]


# -- 3. Excel and big integers -------------------------------------------------------------------
class Xl(pipeflow.tasks.TaskExcelPandas):
    pass


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"id": [2**53 + 1, 900719925474099307]}),
    pd.DataFrame({"id": pd.Series([2**64 - 1], dtype="uint64")}),
    pd.DataFrame({"id": pd.array([-(2**53) - 1, None], dtype="Int64")}),
    pd.DataFrame({"id": pd.Series([2**60, "x"], dtype=object)}),
    pd.DataFrame({"v": [1]}, index=pd.Index([2**62], name="k")),
])
def test_excel_integers_beyond_2_53_are_a_save_error(frame):
    """Was: silently saved and loaded back changed (and uint64 max as a float)."""
    with pytest.raises(SaveError) as info:
        Xl().save(frame)
    msg = str(info.value)
    assert "2**53" in msg and "parquet" in msg.lower()
    assert ("'id'" in msg) or ("index" in msg)
    assert not Xl().complete()


def test_excel_integers_up_to_2_53_round_trip():
    df = pd.DataFrame({"id": [2**53, -(2**53), 0]})
    Xl().save(df)
    back = Xl().outputLoad()
    assert back["id"].tolist() == [2**53, -(2**53), 0]


# -- 4. unsafe persist names -----------------------------------------------------------------------
@pytest.mark.parametrize("names", [[".."], ["../../out/x"], ["a/b"], ["."], [".hidden"]])
def test_unsafe_persist_names_are_unsafe_path_errors(names):
    """Was: '..' and '../../out/x' raised a plain PipeflowError, unlike 'a/b'."""

    class P(pipeflow.tasks.TaskJson):
        @property
        def persist(self):
            return names

        def run(self):
            self.save({k: {} for k in names})

    with pytest.raises(UnsafePathError):
        P().output()
    with pytest.raises(UnsafePathError):
        pipeflow.run(P())


def test_persist_that_is_not_a_list_of_names_stays_a_pipeflow_error():
    class Q(pipeflow.tasks.TaskJson):
        persist = ["a", "a"]

    with pytest.raises(PipeflowError, match="distinct"):
        Q().output()


class Two2(pipeflow.tasks.TaskJson):
    b = luigi.Parameter(default="x")
    c = luigi.Parameter(default="y")


def test_workflow_multi_grid_combinations_with_one_name_are_refused():
    """Two distinct combinations whose flow names are equal would be one flow: refused."""
    with pytest.raises(ParameterError, match="same flow name"):
        pipeflow.WorkflowMulti(Two2, {"b": ["1,c=2", "1"], "c": ["1", "2,c=1"]})


class Sec(pipeflow.tasks.TaskJson):
    s = pipeflow.SecretParameter(default="x")


def test_workflow_multi_grid_secret_collision_shows_no_value():
    with pytest.raises(ParameterError) as info:
        pipeflow.WorkflowMulti(Sec, {"s": [12345678, "12345678"]})
    assert "12345678" not in str(info.value)


def test_plain_parameter_minus_zero_and_zero_keep_their_own_instances():
    """The instance cache told -0.0 and 0.0 apart like their task ids do (texts differ)."""
    neg, pos = Plain(b=-0.0), Plain(b=0.0)
    assert neg.task_id != pos.task_id
    assert str(Plain(b=0.0).b) == "0.0" and str(Plain(b=-0.0).b) == "-0.0"
