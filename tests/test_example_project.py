"""End-to-end run of example_project/run.py in a subprocess, outputs in tmp_path."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = ROOT / "example_project" / "run.py"
MODELS = ["ols", "ridge", "knn", "rf", "gbm"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(data_dir: pathlib.Path, output_dir: pathlib.Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PIPEFLOW_EXAMPLE_DIR": str(data_dir),
        "PIPEFLOW_EXAMPLE_OUTPUT": str(output_dir),
    }
    return subprocess.run([sys.executable, str(RUN)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_example_project_runs_end_to_end_and_then_runs_nothing(tmp_path):
    data_dir, output_dir = tmp_path / "data", tmp_path / "output"

    first = run_example(data_dir, output_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "ran successfully" in out
    assert "(PENDING)" in out  # the preview of the first run shows work to do

    # the comparison table: one row per flow, every model with and without preprocessing
    table = out.split("Model comparison", 1)[1]
    for model in MODELS:
        for pre in (True, False):
            assert f"model={model},do_preprocess={pre}" in table

    png = output_dir / "model_comparison.png"
    assert png.is_file()
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 10_000
    assert (output_dir / "model_comparison.csv").is_file()

    # outputs went to the data dir given by the environment, nowhere else
    assert list(data_dir.rglob("*.parquet")) and list(data_dir.rglob("*.json"))

    second = run_example(data_dir, output_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "ran successfully" not in second.stdout
    assert "already done" in second.stdout
    assert "(PENDING)" not in second.stdout
    # the second run loads the stored metrics: the same table
    assert second.stdout.split("Model comparison", 1)[1] == table
