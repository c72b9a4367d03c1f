"""The pipeline: get data -> split -> preprocess -> train -> evaluate.

Each task declares its parameters and what it requires; pipeflow works out the order, runs
only what is not complete yet and stores every output under the data dir, one file per
parameter set::

    TaskGetData                   raw diabetes data (sklearn, no network)
      TaskSplit                   train / test split          test_size, seed
        TaskPreprocess            optional standard scaling   do_preprocess
          TaskTrain               fitted sklearn regressor    model
            TaskEvaluate          test metrics (JSON)

The data set is sklearn's diabetes regression data (442 patients, 10 baseline variables,
target: disease progression one year later), loaded unscaled so that preprocessing matters.
"""

import time

import cfg
import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import StandardScaler

import pipeflow as d6tflow

TARGET = "target"

# model name -> factory(seed). Hyperparameters live here, next to the code that uses them:
# change one and every TaskTrain is STALE (they all read MODELS) and refits at the next run.
MODELS = {
    "ols": lambda seed: LinearRegression(),
    "ridge": lambda seed: Ridge(alpha=1.0),
    "knn": lambda seed: KNeighborsRegressor(n_neighbors=10),
    "rf": lambda seed: RandomForestRegressor(
        n_estimators=200, min_samples_leaf=3, random_state=seed, n_jobs=1),
    "gbm": lambda seed: GradientBoostingRegressor(
        n_estimators=200, learning_rate=0.05, max_depth=2, subsample=0.8, random_state=seed),
}


def make_model(name, seed):
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return factory(seed)


def split_xy(df):
    return df.drop(columns=[TARGET]), df[TARGET]


class TaskGetData(d6tflow.tasks.TaskPqPandas):
    """Raw features and target in one DataFrame."""

    def run(self):
        df = load_diabetes(as_frame=True, scaled=False).frame
        self.save(df)


@d6tflow.requires(TaskGetData)
class TaskSplit(d6tflow.tasks.TaskPqPandas):
    """Hold out a test set (two outputs: train and test)."""

    test_size = d6tflow.FloatParameter(default=cfg.test_size)
    seed = d6tflow.IntParameter(default=cfg.seed)
    persist = ["train", "test"]

    def run(self):
        df = self.inputLoad()
        train, test = train_test_split(df, test_size=self.test_size, random_state=self.seed)
        self.save({"train": train, "test": test})


@d6tflow.requires(TaskSplit)
class TaskPreprocess(d6tflow.tasks.TaskPqPandas):
    """Standard-scale the features; the scaler is fit on the training set only (no leakage)."""

    do_preprocess = d6tflow.BoolParameter(default=cfg.do_preprocess)
    persist = ["train", "test"]

    def run(self):
        data = self.inputLoad(as_dict=True)
        train, test = data["train"].copy(), data["test"].copy()
        if self.do_preprocess:
            features = train.columns.drop(TARGET)
            scaler = StandardScaler().fit(train[features])
            train[features] = scaler.transform(train[features])
            test[features] = scaler.transform(test[features])
        self.save({"train": train, "test": test})


@d6tflow.requires(TaskPreprocess)
class TaskTrain(d6tflow.tasks.TaskPickle):
    """Fit one regressor on the training set."""

    model = d6tflow.Parameter(default=cfg.model)

    def run(self):
        train, _test = self.inputLoad()
        x, y = split_xy(train)
        model = make_model(self.model, self.seed)
        start = time.perf_counter()
        model.fit(x, y)
        self.save(model)
        self.saveMeta({
            "estimator": type(model).__name__,
            "hyperparameters": model.get_params(),
            "features": list(x.columns),
            "n_train": len(x),
            "fit_seconds": round(time.perf_counter() - start, 4),
        })


@d6tflow.requires({"model": TaskTrain, "data": TaskPreprocess})
class TaskEvaluate(d6tflow.tasks.TaskJson):
    """Score the model on the held-out test set (and on train, to show overfitting)."""

    def run(self):
        inputs = self.inputLoad(as_dict=True)
        model, data = inputs["model"], inputs["data"]
        metrics = {}
        for part in ("test", "train"):
            x, y = split_xy(data[part])
            pred = model.predict(x)
            suffix = "" if part == "test" else "_train"
            metrics[f"r2{suffix}"] = float(r2_score(y, pred))
            metrics[f"rmse{suffix}"] = float(np.sqrt(mean_squared_error(y, pred)))
            metrics[f"mae{suffix}"] = float(mean_absolute_error(y, pred))
        metrics["n_test"] = len(data["test"])
        self.save(metrics)


def feature_weights(model, features):
    """Coefficients of a linear model as a Series sorted by size (empty for other models)."""
    coef = getattr(model, "coef_", None)
    if coef is None:
        return pd.Series(dtype=float)
    weights = pd.Series(coef, index=features)
    return weights.reindex(weights.abs().sort_values(ascending=False).index)
