"""pipeflow: file-target pipelines for data scientists, d6tflow-compatible.

``import pipeflow as d6tflow`` lets d6tflow code run unchanged.
"""

# functional and utils too: d6tflow code calls d6tflow.utils... after a plain import d6tflow
from pipeflow import errors, functional, settings, targets, tasks, utils
from pipeflow.cache import data
from pipeflow.engines import CancelToken
from pipeflow.errors import full_traceback
from pipeflow.operations import (
    adopt,
    dag,
    invalidate_all,
    invalidate_downstream,
    invalidate_orphans,
    invalidate_upstream,
    preview,
    run,
    set_dir,
    show,
    start,
    taskflow_downstream,
    taskflow_upstream,
)
from pipeflow.parameters import (
    BoolParameter,
    ChoiceParameter,
    DateHourParameter,
    DateIntervalParameter,
    DateMinuteParameter,
    DateParameter,
    DateSecondParameter,
    DictParameter,
    EnumParameter,
    FloatParameter,
    IntParameter,
    ListParameter,
    MonthParameter,
    NumericalParameter,
    OptionalParameter,
    Parameter,
    SecretParameter,
    TaskParameter,
    TimeDeltaParameter,
    TupleParameter,
    YearParameter,
)
from pipeflow.runstore import history, last_error, last_run, prune_history, runs
from pipeflow.sharing import FlowExport, FlowImport
from pipeflow.sysinfo import system_info
from pipeflow.tasks import clone_parent, inherits, optional, requires
from pipeflow.tasks.system import SystemInfo
from pipeflow.workflow import Workflow, WorkflowMulti

__version__ = "0.1.0"

__all__ = [
    "BoolParameter", "CancelToken", "ChoiceParameter", "DateHourParameter", "DateIntervalParameter",
    "DateMinuteParameter", "DateParameter", "DateSecondParameter", "DictParameter",
    "EnumParameter", "FloatParameter", "FlowExport", "FlowImport", "IntParameter",
    "ListParameter", "MonthParameter", "NumericalParameter", "OptionalParameter", "Parameter",
    "SecretParameter", "SystemInfo", "TaskParameter", "TimeDeltaParameter", "TupleParameter",
    "Workflow",
    "WorkflowMulti",
    "YearParameter", "__version__", "adopt", "clone_parent", "dag", "data", "errors",
    "full_traceback", "functional", "history",
    "inherits",
    "invalidate_all", "last_error", "last_run", "prune_history", "runs",
    "invalidate_downstream", "invalidate_orphans", "invalidate_upstream", "optional",
    "preview", "requires", "run", "set_dir", "settings", "show", "start", "system_info",
    "targets",
    "taskflow_downstream",
    "taskflow_upstream", "tasks", "utils",
]
