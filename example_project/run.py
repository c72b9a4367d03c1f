"""Run the example pipeline: one flow, then a grid of flows comparing models.

Usage (from the repo root or from example_project/)::

    python example_project/run.py [--data-dir DIR] [--output-dir DIR]

Running it again runs nothing: every output already exists. Delete the data dir (or call
``flow.reset(...)``) to recompute.
"""

import argparse
import pathlib
import sys

import cfg
import chart
import tasks

import pipeflow as d6tflow


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=pathlib.Path, default=cfg.data_dir,
                        help="where task outputs are stored (default: %(default)s, "
                             "or $PIPEFLOW_EXAMPLE_DIR)")
    parser.add_argument("--output-dir", type=pathlib.Path, default=cfg.output_dir,
                        help="where the chart and the results table go (default: "
                             "%(default)s, or $PIPEFLOW_EXAMPLE_OUTPUT)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    d6tflow.set_dir(args.data_dir)
    print(f"data dir: {args.data_dir}")

    # 1. one flow: preview what would run, run it, use its outputs
    flow = d6tflow.Workflow(tasks.TaskEvaluate, {"do_preprocess": True, "model": "ols"})
    flow.preview()
    flow.run()

    metrics = flow.outputLoad()  # the default task: TaskEvaluate
    model = flow.outputLoad(tasks.TaskTrain)
    _train, test = flow.outputLoad(tasks.TaskPreprocess)  # several outputs: a list
    meta = flow.outputLoadMeta(tasks.TaskTrain)
    print(f"\n{meta['estimator']} fit on {meta['n_train']} rows x {len(meta['features'])} "
          f"features, tested on {len(test)} rows:")
    print("  " + ", ".join(f"{k}={metrics[k]:.3f}" for k in ("r2", "rmse", "mae")))
    weights = tasks.feature_weights(model, meta["features"]).head(3)
    print("  largest (standardized) coefficients: "
          + ", ".join(f"{k}={v:+.1f}" for k, v in weights.items()))

    # 2. a grid of flows: every model, with and without preprocessing. It runs as one
    # run, so the tasks the flows share (data, split, preprocessing) run once.
    flows = d6tflow.WorkflowMulti(
        tasks.TaskEvaluate, {"model": cfg.models, "do_preprocess": cfg.preprocess_options})
    flows.run()

    # a row per flow: its parameters, then TaskEvaluate's metrics dict as columns
    table = flows.results(tasks.TaskEvaluate).sort_values(cfg.main_metric, ascending=False)
    columns = ["r2", "rmse", "mae", "r2_train"]
    print(f"\nModel comparison on the test set, best {cfg.main_metric} first:")
    print(table[columns].to_string(float_format="{:.3f}".format))

    args.output_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output_dir / "model_comparison.csv")
    png = chart.save_chart(table, args.output_dir / "model_comparison.png", cfg.main_metric)
    best = table.iloc[0]
    print(f"\nbest flow: {table.index[0]} ({cfg.main_metric}={best[cfg.main_metric]:.3f})")
    print(f"chart: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
