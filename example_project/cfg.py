"""Configuration of the example project: paths, defaults and the model grid.

Values that change *what a task computes* (test size, seed, preprocessing, model) are task
parameters whose defaults come from here, so they are part of each output's file name:
changing them produces new outputs instead of silently reusing stale ones.
"""

import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent

# where pipeflow stores task outputs; override with --data-dir or $PIPEFLOW_EXAMPLE_DIR
data_dir = pathlib.Path(os.environ.get("PIPEFLOW_EXAMPLE_DIR") or HERE / "data")
# where the report (chart + table) goes; override with --output-dir or
# $PIPEFLOW_EXAMPLE_OUTPUT. Kept out of the data dir: pipeflow.invalidate_orphans() would
# delete any file under the data dir that no task produces.
output_dir = pathlib.Path(os.environ.get("PIPEFLOW_EXAMPLE_OUTPUT") or HERE / "output")

# data split
test_size = 0.25
seed = 42  # one seed for the split and for every stochastic model: reproducible results

# defaults of the single-flow run
do_preprocess = True
model = "ols"

# the grid compared by WorkflowMulti (names are defined in tasks.MODELS)
models = ["ols", "ridge", "knn", "rf", "gbm"]
preprocess_options = [True, False]

# metric used to rank the flows (higher is better)
main_metric = "r2"
