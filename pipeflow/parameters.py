"""luigi's parameter classes, re-exported so task code needs one import.

Example:
    >>> import pipeflow
    >>> class Train(pipeflow.tasks.TaskPickle):
    ...     model = pipeflow.Parameter(default="ols")
    ...     alpha = pipeflow.FloatParameter(default=0.1)
"""

from collections.abc import Iterable

import luigi
from luigi.parameter import (
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
    TaskParameter,
    TimeDeltaParameter,
    TupleParameter,
    YearParameter,
)

from pipeflow.errors import ParameterError, did_you_mean

__all__ = [
    "BoolParameter",
    "ChoiceParameter",
    "DateHourParameter",
    "DateIntervalParameter",
    "DateMinuteParameter",
    "DateParameter",
    "DateSecondParameter",
    "DictParameter",
    "EnumParameter",
    "FloatParameter",
    "IntParameter",
    "ListParameter",
    "MonthParameter",
    "NumericalParameter",
    "OptionalParameter",
    "Parameter",
    "TaskParameter",
    "TimeDeltaParameter",
    "TupleParameter",
    "YearParameter",
]


# -- describing parameters in error messages ----------------------------------------------

_TYPE_NAMES = {
    "Parameter": "str",
    "IntParameter": "int",
    "FloatParameter": "float",
    "BoolParameter": "bool",
    "NumericalParameter": "number",
    "OptionalParameter": "str or None",
}


def type_name(param: luigi.Parameter) -> str:
    """Short type of a parameter for messages: ``int``, ``float``, ``date``..."""
    for cls in type(param).__mro__:
        if cls.__name__ in _TYPE_NAMES:
            return _TYPE_NAMES[cls.__name__]
        if cls.__name__.endswith("Parameter") and cls.__module__.startswith("luigi"):
            return cls.__name__[: -len("Parameter")].lower() or "str"
    return type(param).__name__


def describe_param(name: str, param: luigi.Parameter) -> str:
    """``learning_rate (float, default 0.05)`` or ``model (str, required)``."""
    default = param._default
    if default is luigi.parameter._no_value:
        return f"{name} ({type_name(param)}, required)"
    return f"{name} ({type_name(param)}, default {default!r})"


def accepted(classes: Iterable[type[luigi.Task]]) -> str:
    """What each class accepts: ``Train accepts: alpha (float, default 0.1), model (str, ...)``."""
    lines = []
    for cls in classes:
        params = sorted(cls.get_params())
        described = ", ".join(describe_param(n, p) for n, p in params) or "no parameters"
        lines.append(f"{cls.__name__} accepts: {described}")
    return "\n".join(lines)


def unknown_parameter(name: str, classes: list[type[luigi.Task]], where: str) -> ParameterError:
    """The error for a parameter that none of ``classes`` declares."""
    names = {n for cls in classes for n, _ in cls.get_params()}
    return ParameterError(
        f"{where} has a parameter '{name}' that no task declares."
        f"{did_you_mean(name, names)}\n{accepted(classes)}"
    )


def missing_parameter(cls: type[luigi.Task], name: str) -> ParameterError:
    """The error for a required parameter given no value."""
    params = dict(cls.get_params())
    return ParameterError(
        f"{cls.__name__} needs a value for its parameter "
        f"{describe_param(name, params[name])}, which has no default. Pass it, e.g. "
        f"Workflow({cls.__name__}, {{'{name}': ...}}) or {cls.__name__}({name}=...)."
    )
