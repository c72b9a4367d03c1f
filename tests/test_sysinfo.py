"""System information: system_info(), the SystemInfo task, the snapshot kept with each run."""

from __future__ import annotations

import json
import os
import platform
import re
import sqlite3
import threading
import time

import psutil
import pytest

import pipeflow
from pipeflow import runstore, settings
from pipeflow.errors import ParameterError

CPU_KEYS = {"logical_cores", "physical_cores", "available_cores", "frequency_mhz", "load_1m",
            "load_5m", "load_15m"}
MEMORY_KEYS = {"total", "available", "used", "percent", "swap_total", "swap_used"}
DISK_KEYS = {"data_dir", "path", "total", "used", "free", "percent"}
PLATFORM_KEYS = {"system", "release", "machine", "python", "pipeflow", "hostname", "pid"}


class Good(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"ok": 1})


def _leaves(d):
    for value in d.values():
        if isinstance(value, dict):
            yield from _leaves(value)
        else:
            yield value


# -- system_info() -------------------------------------------------------------------------------

def test_cpu_figures_are_plausible():
    cpu = pipeflow.system_info("cpu")
    assert set(cpu) <= CPU_KEYS
    assert cpu["logical_cores"] == psutil.cpu_count(logical=True)
    assert 1 <= cpu["available_cores"] <= cpu["logical_cores"]
    if hasattr(os, "sched_getaffinity"):
        assert cpu["available_cores"] == len(os.sched_getaffinity(0))
    if "physical_cores" in cpu:
        assert 1 <= cpu["physical_cores"] <= cpu["logical_cores"]
    if hasattr(os, "getloadavg"):
        assert {"load_1m", "load_5m", "load_15m"} <= set(cpu)
        assert all(isinstance(cpu[k], float) and cpu[k] >= 0
                   for k in ("load_1m", "load_5m", "load_15m"))
    if "frequency_mhz" in cpu:
        assert cpu["frequency_mhz"] > 0


def test_memory_figures_match_psutil():
    mem = pipeflow.system_info("memory")
    assert set(mem) == MEMORY_KEYS
    assert mem["total"] == psutil.virtual_memory().total
    assert mem["swap_total"] == psutil.swap_memory().total
    assert 0 < mem["available"] <= mem["total"] and 0 < mem["used"] <= mem["total"]
    assert 0 <= mem["swap_used"] <= mem["swap_total"] or mem["swap_total"] == 0
    assert 0.0 <= mem["percent"] <= 100.0
    assert all(isinstance(mem[k], int) for k in MEMORY_KEYS - {"percent"})


def test_disk_is_the_partition_of_the_data_dir(data_dir):
    disk = pipeflow.system_info("disk")
    assert set(disk) == DISK_KEYS
    assert disk["data_dir"] == disk["path"] == str(data_dir.absolute())
    usage = psutil.disk_usage(str(data_dir))
    assert disk["total"] == usage.total and isinstance(disk["total"], int)
    assert 0 <= disk["used"] <= disk["total"] and 0 <= disk["free"] <= disk["total"]
    assert 0.0 <= disk["percent"] <= 100.0


def test_disk_of_a_data_dir_not_made_yet_is_measured_at_its_nearest_folder(tmp_path):
    settings.dir = str(tmp_path / "not" / "there" / "yet")
    disk = pipeflow.system_info("disk")
    assert disk["data_dir"] == str(tmp_path / "not" / "there" / "yet")
    assert disk["path"] == str(tmp_path)
    assert disk["total"] == psutil.disk_usage(str(tmp_path)).total
    assert not (tmp_path / "not").exists()  # looking creates nothing


def test_relative_data_dir_is_reported_absolute(tmp_path):
    settings.dir = "rel_data"  # cwd is tmp_path
    disk = pipeflow.system_info("disk")
    assert disk["data_dir"] == str(tmp_path / "rel_data") and disk["path"] == str(tmp_path)


def test_all_has_every_section_and_is_plain_json():
    info = pipeflow.system_info()
    assert set(info) == {"cpu", "memory", "disk", "platform"}
    assert set(info["cpu"]) == set(pipeflow.system_info("cpu"))
    assert set(info["memory"]) == MEMORY_KEYS and set(info["disk"]) == DISK_KEYS
    assert set(info["platform"]) == PLATFORM_KEYS
    plat = info["platform"]
    assert plat["pid"] == os.getpid() and plat["python"] == platform.python_version()
    assert plat["system"] == platform.system() and plat["machine"] == platform.machine()
    assert isinstance(plat["pipeflow"], str) and plat["pipeflow"]
    assert all(type(v) in (int, float, str) for v in _leaves(info))
    assert json.loads(json.dumps(info)) == info


def test_resource_names_are_case_insensitive():
    assert set(pipeflow.system_info("MeMoRy")) == MEMORY_KEYS
    assert set(pipeflow.system_info("DISK")) == DISK_KEYS
    assert set(pipeflow.system_info("All")) == {"cpu", "memory", "disk", "platform"}


@pytest.mark.parametrize("bad", ["gpu", "", "memory ", None, 3])
def test_unknown_resource_says_what_is_allowed(bad):
    with pytest.raises(ParameterError, match=(
            rf"resource={re.escape(repr(bad))}.*one of 'all', 'cpu', 'memory', 'disk'.*"
            r"pipeflow\.system_info\('memory'\)")):
        pipeflow.system_info(bad)


def test_unknown_resource_is_also_a_value_error():
    with pytest.raises(ValueError, match="gpu"):
        pipeflow.system_info("gpu")


def test_reading_is_cheap_and_never_samples_cpu_utilisation(monkeypatch):
    def sampling(*args, **kwargs):
        raise AssertionError("cpu_percent/cpu_times_percent must not be called")

    monkeypatch.setattr(psutil, "cpu_percent", sampling)
    monkeypatch.setattr(psutil, "cpu_times_percent", sampling)
    monkeypatch.setattr(time, "sleep", sampling)
    pipeflow.system_info()  # warm up: imports, cached core count and version
    best = min(_timed(pipeflow.system_info) for _ in range(5))
    assert best < 0.010


def _timed(fun):
    start = time.perf_counter()
    fun()
    return time.perf_counter() - start


def test_figures_the_platform_lacks_are_left_out(monkeypatch):
    def no_freq():
        raise NotImplementedError

    monkeypatch.setattr(psutil, "cpu_freq", no_freq)
    monkeypatch.delattr(os, "getloadavg")
    cpu = pipeflow.system_info("cpu")
    assert not {"frequency_mhz", "load_1m", "load_5m", "load_15m"} & set(cpu)
    assert cpu["logical_cores"] == psutil.cpu_count()


# -- the SystemInfo task ---------------------------------------------------------------------------

def test_system_info_task_saves_one_resource_as_json():
    flow = pipeflow.Workflow(pipeflow.SystemInfo, {"resource": "memory"})
    flow.run()
    saved = flow.outputLoad()
    assert set(saved) == MEMORY_KEYS
    assert saved["total"] == psutil.virtual_memory().total
    path = flow.outputPath()
    assert path.suffix == ".json" and json.loads(path.read_text())["data"] == saved
    assert flow.complete()


def test_system_info_task_defaults_to_everything(data_dir):
    flow = pipeflow.Workflow(pipeflow.SystemInfo)
    flow.run()
    saved = flow.outputLoad()
    assert set(saved) == {"cpu", "memory", "disk", "platform"}
    assert saved["disk"]["data_dir"] == str(data_dir.absolute())
    assert saved["platform"]["pid"] == os.getpid()


def test_system_info_task_refuses_an_unknown_resource():
    with pytest.raises(ValueError, match="gpu"):
        pipeflow.SystemInfo(resource="gpu")


# -- the snapshot stored with every run ------------------------------------------------------------

def test_every_run_stores_a_system_snapshot(data_dir):
    pipeflow.run(Good())
    pipeflow.run(Good())
    runs = pipeflow.runs(full=True)
    assert len(runs) == 2
    for system in runs["system"]:
        assert set(system) == {"cpu", "memory", "disk", "platform"}
        assert system["memory"]["total"] == psutil.virtual_memory().total
        assert system["disk"]["data_dir"] == str(data_dir.absolute())
        assert system["platform"]["pid"] == os.getpid()
    with sqlite3.connect(data_dir / ".pipeflow" / "history.db") as conn:
        (raw,) = conn.execute("SELECT system FROM runs LIMIT 1").fetchone()
    assert json.loads(raw)["memory"]["total"] == psutil.virtual_memory().total


def test_runs_of_an_empty_history_have_the_system_column():
    assert "system" in pipeflow.runs(full=True).columns and pipeflow.runs(full=True).empty


def test_failed_snapshot_never_fails_the_run(monkeypatch):
    def broken():
        raise psutil.AccessDenied()

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    with pytest.raises(psutil.AccessDenied):
        pipeflow.system_info("memory")  # called directly, the error shows
    assert pipeflow.run(Good())
    run = pipeflow.runs(full=True).iloc[0]
    assert run["status"] == "success" and run["system"] is None
    assert list(pipeflow.history()["status"]) == ["completed"]


def test_unexpected_snapshot_error_never_fails_the_run(monkeypatch):
    def broken(resource="all"):
        raise RuntimeError("no /proc here")

    monkeypatch.setattr(runstore, "system_info", broken)
    assert pipeflow.run(Good())
    assert pipeflow.runs(full=True).iloc[0]["system"] is None


# -- history files made before the system column ---------------------------------------------------

_OLD_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, started REAL, finished REAL, status TEXT, host TEXT,
    user TEXT, pipeflow_version TEXT, roots TEXT, params TEXT);
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, task_id TEXT NOT NULL,
    family TEXT, task TEXT, params TEXT, attempt INTEGER, status TEXT, started REAL,
    finished REAL, duration REAL, cpu_time REAL, peak_memory REAL, error_type TEXT,
    error_message TEXT, traceback TEXT, reason TEXT, outputs TEXT);
CREATE TABLE changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, task_id TEXT NOT NULL,
    state TEXT, time REAL);
INSERT INTO runs VALUES ('oldrun', 1000.0, 1001.0, 'success', 'h', 'u', '0.0.1',
                         '["Good()"]', '[{}]');
"""


@pytest.fixture
def old_db(data_dir):
    path = data_dir / ".pipeflow" / "history.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.executescript(_OLD_SCHEMA)
    conn.close()
    return path


def _columns(path):
    with sqlite3.connect(path) as conn:
        cols = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    conn.close()
    return cols


def test_old_history_file_is_readable_before_any_new_run(old_db):
    runs = pipeflow.runs(full=True)
    assert list(runs["run_id"]) == ["oldrun"] and runs.iloc[0]["system"] is None
    assert "system" not in _columns(old_db)  # reading changes nothing


def test_old_history_file_gains_the_system_column(old_db):
    assert pipeflow.run(Good())
    assert _columns(old_db)[-2:] == ["system", "owner"]  # added in the order they came
    runs = pipeflow.runs(full=True)
    assert list(runs["run_id"])[-1] == "oldrun" and len(runs) == 2
    new, old = runs.iloc[0], runs.iloc[1]
    assert new["system"]["memory"]["total"] == psutil.virtual_memory().total
    assert new["status"] == "success" and new["roots"] == '["Good()"]'
    assert old["system"] is None and old["status"] == "success" and old["host"] == "h"
    assert pipeflow.run(Good())  # and keeps working once upgraded
    assert len(pipeflow.runs()) == 3 and _columns(old_db).count("system") == 1


def test_concurrent_upgrades_of_an_old_file_do_not_clash(old_db):
    barrier = threading.Barrier(6)
    errors = []

    def upgrade():
        try:
            barrier.wait(10)
            with runstore._connect(old_db, create=True):
                pass
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert _columns(old_db).count("system") == 1
