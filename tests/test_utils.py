"""pipeflow.utils: d6tflow.utils' parameter generators, print_tree, traverse, to_parquet."""

from __future__ import annotations

import itertools

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeflow
import pipeflow as d6tflow
import pipeflow.utils
from pipeflow.errors import ParameterError, PipeflowError
from pipeflow.utils import (
    generate_exps_for_multi_param,
    params_generator_multiple,
    params_generator_single,
    print_tree,
    to_parquet,
    traverse,
)

# -- params_generator_single ----------------------------------------------------------------------

def test_single_generator_numbers_the_sets_and_adds_the_base():
    base = {"model": "ols"}
    assert params_generator_single({"alpha": [0.1, 1.0, 10.0]}, base) == {
        0: {"alpha": 0.1, "model": "ols"},
        1: {"alpha": 1.0, "model": "ols"},
        2: {"alpha": 10.0, "model": "ols"},
    }
    assert base == {"model": "ols"}
    assert params_generator_single({"param": ["a", "b"]}) == {0: {"param": "a"},
                                                               1: {"param": "b"}}
    assert params_generator_single({"n": range(2)}, {}) == {0: {"n": 0}, 1: {"n": 1}}


@pytest.mark.parametrize("args, match", [
    (({},), r"params_generator_single takes a non-empty dict of parameter names and the "
            r"values to try, e\.g\. \{'alpha': \[0\.1, 1\.0\]\}; got \{\}"),
    ((None,), r"takes a non-empty dict.*got None"),
    (({"a": [1], "b": [2]},), r"varies one parameter, but got \['a', 'b'\]\. For every "
                              r"combination of several parameters use "
                              r"params_generator_multiple"),
    (({"a": "xyz"},), r"the values of 'a' must be a list of values to try, not str 'xyz'\. "
                      r"Write \{'a': \['xyz'\]\}"),
    (({"a": 3},), r"the values of 'a' must be a list of values to try, not int 3"),
    (({"a": []},), r"'a' has an empty list of values"),
    (({1: [1]},), r"parameter names must be non-empty strings, not 1"),
    (({"a": [1]}, {"a": 2}), r"\['a'\] are both varied and fixed in params_base"),
    (({"a": [1]}, [("b", 2)]), r"params_base must be a dict of fixed parameter values, not "
                               r"list"),
])
def test_single_generator_errors(args, match):
    with pytest.raises(ParameterError, match=match):
        params_generator_single(*args)


@given(st.lists(st.integers() | st.text(max_size=5), min_size=1, max_size=10),
       st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(), max_size=3))
def test_single_generator_keeps_every_value_in_order(values, base):
    out = params_generator_single({"p": values}, base)
    assert list(out) == list(range(len(values)))
    assert [out[i]["p"] for i in out] == values
    assert all(p == {"p": v, **base} for p, v in zip(out.values(), values))


# -- params_generator_multiple --------------------------------------------------------------------

def test_multiple_generator_names_sets_as_d6tflow():
    out = params_generator_multiple({"model": ["ols", "gbm"], "scale": [False, True]})
    assert out == {
        "model_ols_scale_False": {"model": "ols", "scale": False},
        "model_ols_scale_True": {"model": "ols", "scale": True},
        "model_gbm_scale_False": {"model": "gbm", "scale": False},
        "model_gbm_scale_True": {"model": "gbm", "scale": True},
    }
    assert list(out) == ["model_ols_scale_False", "model_ols_scale_True",
                         "model_gbm_scale_False", "model_gbm_scale_True"]
    # names sorted, the first varies slowest, whatever order the dict has
    assert list(params_generator_multiple({"z": [1, 2], "a": ["x"], "m": [3, 4]})) == [
        "a_x_m_3_z_1", "a_x_m_3_z_2", "a_x_m_4_z_1", "a_x_m_4_z_2"]
    assert generate_exps_for_multi_param is params_generator_multiple


def test_multiple_generator_takes_one_parameter_and_a_base():
    # d6tflow's generator raised IndexError for a single parameter
    assert params_generator_multiple({"b": [1, 2]}) == {"b_1": {"b": 1}, "b_2": {"b": 2}}
    assert params_generator_multiple({"b": (1,)}, {"fixed": 0}) == {"b_1": {"b": 1, "fixed": 0}}


@pytest.mark.parametrize("args, match", [
    (({},), r"params_generator_multiple takes a non-empty dict of parameter names and the "
            r"values to try"),
    (({"a": [1, 1]},), r"the parameter sets \{'a': 1\} and \{'a': 1\} would both be named "
                       r"'a_1', so one would hide the other"),
    (({"a": [1, "1"], "b": [0]},), r"would both be named 'a_1_b_0'"),
    (({"a": [], "b": [1]},), r"'a' has an empty list of values, so there would be no "
                             r"parameter set"),
    (({"a": "ab"},), r"the values of 'a' must be a list"),
    (({"a": {"x": 1}},), r"the values of 'a' must be a list of values to try, not dict"),
    (({"a": [1]}, {"a": 0}), r"\['a'\] are both varied and fixed"),
])
def test_multiple_generator_errors(args, match):
    with pytest.raises(ParameterError, match=match):
        params_generator_multiple(*args)


NAMES = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
VALUES = st.lists(st.integers(-5, 50) | st.booleans() | st.text("xyz", max_size=3),
                  min_size=1, max_size=4, unique_by=str)


@settings(max_examples=200)
@given(st.dictionaries(NAMES, VALUES, min_size=1, max_size=4))
def test_multiple_generator_is_exactly_the_cartesian_product(grid):
    try:
        out = params_generator_multiple(grid)
    except ParameterError as exc:
        # only when two distinct combinations print alike (e.g. names 'a' and 'a_1')
        assert "would both be named" in str(exc)
        return
    keys = sorted(grid)
    expected = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    assert list(out.values()) == expected
    assert len(out) == len(expected) == len(set(out))
    for name, params in out.items():
        assert name == "_".join(f"{k}_{params[k]}" for k in keys)
        assert list(params) == keys


@given(VALUES, VALUES)
def test_multiple_generator_names_are_unique_for_plain_names(first, second):
    out = params_generator_multiple({"first": first, "second": second})
    assert len(out) == len(first) * len(second)
    assert {(p["first"], p["second"]) for p in out.values()} == set(
        itertools.product(first, second))


class Train(d6tflow.tasks.TaskCache):
    model = d6tflow.Parameter(default="ols")
    scale = d6tflow.BoolParameter(default=False)

    def run(self):
        self.save(f"{self.model}-{self.scale}")


def test_generated_sets_give_workflow_multi_d6tflows_flow_names():
    flows = d6tflow.WorkflowMulti(
        Train, pipeflow.utils.params_generator_multiple({"model": ["ols", "gbm"],
                                                         "scale": [False, True]}))
    assert flows.get_task(flow="model_gbm_scale_True").param_kwargs == {"model": "gbm",
                                                                       "scale": True}
    flows.run()
    assert flows.outputLoad(flow="model_ols_scale_False") == "ols-False"
    single = d6tflow.WorkflowMulti(Train, d6tflow.utils.params_generator_single(
        {"model": ["a", "b"]}, {"scale": True}))
    single.run()
    assert single.outputLoad() == {0: "a-True", 1: "b-True"}


# -- print_tree and traverse ----------------------------------------------------------------------

class Source(d6tflow.tasks.TaskCache):
    def run(self):
        self.save(1)


@d6tflow.requires(Source)
class Left(d6tflow.tasks.TaskCache):
    size = d6tflow.IntParameter(default=1)
    label = d6tflow.Parameter(default="l")

    def run(self):
        self.save(2)


@d6tflow.requires(Source)
class Right(d6tflow.tasks.TaskCache):
    def run(self):
        self.save(3)


@d6tflow.requires(Left, Right)
class Top(d6tflow.tasks.TaskCache):
    def run(self):
        self.save(4)


def test_print_tree_returns_the_preview_text_without_printing(capsys):
    text = print_tree(Top())
    assert capsys.readouterr().out == ""
    assert text.splitlines() == [
        "└─--[Top-{'size': '1', 'label': 'l'} (PENDING)]",
        "   |--[Left-{} (PENDING)]",
        "   |  └─--[Source-{} (PENDING)]",
        "   └─--[Right-{} (PENDING)]",
        "      └─--[Source-{} (see above)]",
    ]
    assert text == pipeflow.preview(Top(), print_it=False).text()
    pipeflow.run(Left(size=3))
    capsys.readouterr()
    assert print_tree(Left(size=3), indent="> ", last=False).splitlines() == [
        "> |--[Left-{'size': '3', 'label': 'l'} (COMPLETE)]",
        "> |  └─--[Source-{} (COMPLETE)]",
    ]
    assert print_tree(Left(), show_params=False).splitlines()[0] == "└─--[Left-{} (PENDING)]"
    assert print_tree(Left(), clip_params=True).splitlines()[0] == (
        "└─--[Left-{'size': '1'} (PENDING)]")
    assert "\033[92mCOMPLETE\033[0m" in print_tree(Source(), color=True)
    assert len(print_tree([Left(), Right()]).splitlines()) == 4


def test_traverse_lists_each_task_once_before_what_it_requires():
    tasks = traverse(Top())
    assert tasks[0] == Top()
    assert sorted(t.task_family for t in tasks) == ["Left", "Right", "Source", "Top"]
    position = {t.task_id: i for i, t in enumerate(tasks)}
    for t in tasks:
        for dep in pipeflow.graph.build([t]).nodes[:-1]:
            assert position[dep.task_id] > position[t.task_id]
    assert traverse(Source()) == [Source()]
    assert traverse(Left(), [Top()]) == [Top(), Left(), Source()]
    assert traverse(Left(), [Source()]) == [Source(), Left()]


@pytest.mark.parametrize("func", [print_tree, traverse])
def test_print_tree_and_traverse_take_task_instances(func):
    with pytest.raises(ParameterError, match=rf"{func.__name__} takes a task instance, not the "
                                             rf"class Top: write {func.__name__}\(Top\(\)\)"):
        func(Top)
    with pytest.raises(ParameterError, match=r"takes a task instance \(e\.g\. Train\(\)\), "
                                             r"not 'Top'"):
        func("Top")


# -- to_parquet -----------------------------------------------------------------------------------

def test_to_parquet_writes_gzip_parquet_and_creates_folders(tmp_path):
    df = pd.DataFrame({"a": range(5), "b": list("abcde")})
    path = to_parquet(df, tmp_path / "deep" / "er" / "out.parquet")
    assert path == tmp_path / "deep" / "er" / "out.parquet"
    assert pd.read_parquet(path).equals(df)
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "GZIP"
    to_parquet(df, str(path), compression="snappy")
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "SNAPPY"
    assert [p.name for p in path.parent.iterdir()] == ["out.parquet"]


def test_to_parquet_leaves_nothing_behind_when_writing_fails(tmp_path):
    df = pd.DataFrame({"a": [1]})
    with pytest.raises(Exception):  # noqa: B017 - the writer's own error
        to_parquet(df, tmp_path / "out" / "bad.parquet", compression="no-such-codec")
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(ParameterError, match=r"to_parquet\(df, path\) takes a pandas "
                                             r"DataFrame, not dict"):
        to_parquet({"a": [1]}, tmp_path / "x.parquet")


def test_utils_errors_are_pipeflow_errors():
    with pytest.raises(PipeflowError):
        params_generator_multiple({})
    with pytest.raises(ValueError):  # ParameterError is also a ValueError
        params_generator_single({})
