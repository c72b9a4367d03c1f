"""WorkflowMulti.results(): the flows of a sweep side by side in one DataFrame."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import pipeflow
from pipeflow.errors import IncompleteTaskError, OutputError, ParameterError

SECRET = "s3cr3t-Sweep-Token"


class SweepData(pipeflow.tasks.TaskPqPandas):
    def run(self):
        self.save(pd.DataFrame({"x": range(10)}))


@pipeflow.requires(SweepData)
class SweepTrain(pipeflow.tasks.TaskJson):
    lr = pipeflow.FloatParameter(default=0.1)
    depth = pipeflow.IntParameter(default=3)

    def run(self):
        rows = len(self.inputLoad())
        self.save({"score": self.lr * self.depth, "cv": {"mean": self.depth + 0.5,
                                                         "fold": {"k": rows}}})


@pipeflow.requires(SweepTrain)
class SweepScalar(pipeflow.tasks.TaskPickle):
    def run(self):
        self.save(np.float64(self.inputLoad()["score"] * 10))


@pipeflow.requires(SweepTrain)
class SweepNamedLikeParam(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"lr": "echo", "score": self.lr})


class SweepSplit(pipeflow.tasks.TaskPickle):
    depth = pipeflow.IntParameter(default=3)
    persist = ["train", "test", "n"]

    def run(self):
        self.save({"train": {"acc": 0.9 + self.depth / 100}, "test": {"acc": self.depth / 10},
                   "n": self.depth * 2})


class SweepSplitTable(pipeflow.tasks.TaskPickle):
    depth = pipeflow.IntParameter(default=3)
    persist = ["metrics", "predictions"]

    def run(self):
        self.save({"metrics": {"acc": self.depth / 10},
                   "predictions": pd.DataFrame({"y": [0.0] * 5})})


class SweepTable(pipeflow.tasks.TaskPickle):
    n = pipeflow.IntParameter(default=1)

    def run(self):
        self.save(pd.DataFrame({"y": range(self.n)}))


class SweepSeries(pipeflow.tasks.TaskPickle):
    n = pipeflow.IntParameter(default=1)

    def run(self):
        self.save(pd.Series({"mae": self.n / 2, "rmse": self.n / 4}))


class SweepList(pipeflow.tasks.TaskPickle):
    n = pipeflow.IntParameter(default=1)

    def run(self):
        self.save([self.n, self.n])


class SweepFetch(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter(default=1)
    token = pipeflow.SecretParameter(default="")

    def run(self):
        self.save({"got": self.n * 100, "authorised": bool(self.token)})


def test_grid_gives_a_row_per_flow_with_its_params_and_metrics():
    flows = pipeflow.WorkflowMulti(SweepTrain, {"lr": [0.1, 0.5], "depth": [2, 4]})
    flows.run()
    frame = flows.results()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == list(flows.params)
    assert frame.index.name == "flow"
    assert list(frame.columns) == ["lr", "depth", "score", "cv.mean", "cv.fold.k"]
    assert frame["depth"].dtype == "int64" and frame["lr"].dtype == "float64"
    for name, params in flows.params.items():
        row = frame.loc[name]
        assert (row["lr"], row["depth"]) == (params["lr"], params["depth"])
        assert row["score"] == pytest.approx(params["lr"] * params["depth"])
        assert row["cv.mean"] == params["depth"] + 0.5
        assert row["cv.fold.k"] == 10


def test_sorting_by_a_metric_orders_the_flows():
    flows = pipeflow.WorkflowMulti(SweepTrain, {"lr": [0.1, 0.5], "depth": [2, 4]})
    flows.run()
    ranked = flows.results().sort_values("score", ascending=False)
    assert list(ranked.index) == ["lr=0.5,depth=4", "lr=0.5,depth=2", "lr=0.1,depth=4",
                                  "lr=0.1,depth=2"]


def test_scalar_output_is_one_column_named_output():
    flows = pipeflow.WorkflowMulti(SweepScalar, {"lr": [0.1, 0.5]})
    flows.run()
    frame = flows.results()
    assert list(frame.columns) == ["lr", "output"]
    assert frame["output"].tolist() == pytest.approx([3.0, 15.0])
    trained = flows.results(SweepTrain)  # another task than the default one
    assert trained["score"].tolist() == pytest.approx([0.3, 1.5])


def test_output_column_named_like_a_param_is_prefixed():
    flows = pipeflow.WorkflowMulti(SweepNamedLikeParam, {"lr": [0.1, 0.5]})
    flows.run()
    frame = flows.results()
    assert list(frame.columns) == ["lr", "output.lr", "score"]
    assert frame["lr"].tolist() == [0.1, 0.5]
    assert frame["output.lr"].tolist() == ["echo", "echo"]


def test_list_and_dict_params_keep_python_types():
    listed = pipeflow.WorkflowMulti(SweepTrain, [{"lr": 0.5, "depth": 2}, {"lr": 0.25}])
    listed.run()
    frame = listed.results()
    assert list(frame.index) == [0, 1]
    assert frame.loc[0, "depth"] == 2 and pd.isna(frame.loc[1, "depth"])
    assert frame["depth"].dtype == "Int64"  # ints with a gap stay ints
    assert frame["score"].tolist() == [1.0, 0.75]  # flow 1 ran with the default depth 3
    named = pipeflow.WorkflowMulti(SweepTrain, {"small": {"depth": 1}, "big": {"depth": 5}})
    named.run()
    frame = named.results()
    assert list(frame.index) == ["small", "big"]
    assert list(frame.columns[:1]) == ["depth"] and frame["depth"].dtype == "int64"
    assert frame["score"].tolist() == pytest.approx([0.1, 0.5])


def test_keys_choose_an_output_of_a_multi_output_task():
    flows = pipeflow.WorkflowMulti(SweepSplit, {"depth": [2, 5]})
    flows.run()
    test = flows.results(keys="test")
    assert list(test.columns) == ["depth", "acc"]
    assert test["acc"].tolist() == [0.2, 0.5]
    assert flows.results(keys=["n"])["output"].tolist() == [4, 10]
    two = flows.results(keys=["train", "n"])
    assert list(two.columns) == ["depth", "train.acc", "n"]
    assert two["train.acc"].tolist() == pytest.approx([0.92, 0.95])


def test_multi_output_without_keys_is_merged_with_the_output_name_as_prefix():
    flows = pipeflow.WorkflowMulti(SweepSplit, {"depth": [2, 5]})
    flows.run()
    frame = flows.results()
    assert list(frame.columns) == ["depth", "train.acc", "test.acc", "n"]
    assert frame.loc["depth=5"].tolist() == pytest.approx([5, 0.95, 0.5, 10])
    tables = pipeflow.WorkflowMulti(SweepSplitTable, {"depth": [2, 5]})
    tables.run()
    with pytest.raises(OutputError, match=r"(?s)output 'predictions' of SweepSplitTable"
                                          r"\(depth=2\) is a DataFrame of shape \(5, 1\).*"
                                          r"pass keys=.*keys='metrics'"):
        tables.results()
    assert tables.results(keys="metrics")["acc"].tolist() == [0.2, 0.5]


def test_series_and_one_row_frames_become_columns():
    series = pipeflow.WorkflowMulti(SweepSeries, {"n": [2, 4]})
    series.run()
    assert series.results()[["mae", "rmse"]].values.tolist() == [[1.0, 0.5], [2.0, 1.0]]
    one_row = pipeflow.WorkflowMulti(SweepTable, {"n": [1]})
    one_row.run()
    assert one_row.results().to_dict("list") == {"n": [1], "y": [0]}


def test_an_output_that_is_no_row_is_a_clear_error():
    tables = pipeflow.WorkflowMulti(SweepTable, {"n": [1, 3]})
    tables.run()
    with pytest.raises(OutputError, match=r"(?s)in flow 'n=3', the output of SweepTable\(n=3\) "
                                          r"is a DataFrame of shape \(3, 1\), which cannot be "
                                          r"one row.*dict of metrics"):
        tables.results()
    lists = pipeflow.WorkflowMulti(SweepList, {"n": [1]})
    lists.run()
    with pytest.raises(OutputError, match="is a list of length 2"):
        lists.results()


def test_missing_raise_skip_nan():
    flows = pipeflow.WorkflowMulti(SweepTrain, {"depth": [1, 2, 3]})
    flows.run(flow="depth=2")
    with pytest.raises(IncompleteTaskError, match=r"(?s)SweepTrain is not complete in 2 of 3 "
                                                  r"flows:.*'depth=1'.*'depth=3'.*flows\.run\(\)"
                                                  r".*missing='skip'.*missing='nan'"):
        flows.results()
    skipped = flows.results(missing="skip")
    assert list(skipped.index) == ["depth=2"]
    assert skipped["score"].tolist() == pytest.approx([0.2])
    kept = flows.results(missing="nan")
    assert list(kept.index) == ["depth=1", "depth=2", "depth=3"]
    assert kept["depth"].tolist() == [1, 2, 3]
    assert math.isnan(kept.loc["depth=1", "score"]) and math.isnan(kept.loc["depth=3", "cv.mean"])
    assert kept.loc["depth=2", "cv.mean"] == 2.5
    with pytest.raises(ParameterError, match="'raise', 'skip' or 'nan'"):
        flows.results(missing="ignore")


def test_secret_parameters_are_masked_and_never_in_the_frame():
    grid = pipeflow.WorkflowMulti(SweepFetch, {"n": [1, 2], "token": [SECRET]})
    grid.run()
    listed = pipeflow.WorkflowMulti(SweepFetch, [{"n": 1, "token": SECRET}, {"n": 2}])
    for frame in (grid.results(), listed.results()):
        assert frame["n"].tolist() == [1, 2]
        assert frame["got"].tolist() == [100, 200]
        shown = frame.reset_index().to_csv() + repr(frame.to_dict()) + frame.to_string()
        assert SECRET not in shown
    assert grid.results()["token"].tolist() == ["***", "***"]
    assert listed.results()["token"].tolist()[0] == "***"


def test_flow_selects_a_subset_in_the_given_order():
    flows = pipeflow.WorkflowMulti(SweepTrain, {"lr": [0.1, 0.5], "depth": [2, 4]})
    flows.run(flow=["lr=0.5,depth=4", "lr=0.1,depth=2"])
    some = flows.results(flow=["lr=0.5,depth=4", "lr=0.1,depth=2"])
    assert list(some.index) == ["lr=0.5,depth=4", "lr=0.1,depth=2"]
    assert some["score"].tolist() == pytest.approx([2.0, 0.2])
    one = flows.results(flow="lr=0.1,depth=2")
    assert one.shape[0] == 1 and one.loc["lr=0.1,depth=2", "depth"] == 2
    with pytest.raises(ParameterError, match="has no flow named"):
        flows.results(flow="nope")
