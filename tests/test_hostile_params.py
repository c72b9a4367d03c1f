"""Issue 11, kind 7: hostile parameter values.

Every parameter class luigi and pipeflow ship either accepts a value that round-trips exactly
(normalize -> serialize -> parse gives back the same value and task id) or raises a
ParameterError naming the task class, the parameter, the value (masked when secret), what was
expected and the fix. Never a raw exception, never a value the parameter does not mean.
"""

import datetime
import enum
import inspect
import math
import operator
import pathlib
import warnings
from collections.abc import Mapping

import luigi
import luigi.date_interval
import luigi.parameter as lp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeflow
import pipeflow.parameters
from pipeflow.errors import ParameterError, PipeflowError
from pipeflow.parameters import (
    MASK,
    _same,  # equal and of the same types, at any depth
)


class Color(enum.Enum):
    red = 1
    blue = 2


class NamedByTaskParameter(pipeflow.tasks.TaskJson):
    """A task class a TaskParameter can name (its family is unique)."""


#: how the fuzz test builds each shipped parameter class (several ways for some)
FACTORIES: dict[type, list[dict]] = {
    lp.Parameter: [{}, {"significant": False}],
    lp.StrParameter: [{}],
    lp.OptionalParameter: [{}],
    lp.OptionalStrParameter: [{}],
    pipeflow.SecretParameter: [{}],
    lp.BoolParameter: [{}],
    lp.OptionalBoolParameter: [{}],
    lp.IntParameter: [{}],
    lp.OptionalIntParameter: [{}],
    lp.FloatParameter: [{}],
    lp.OptionalFloatParameter: [{}],
    lp.NumericalParameter: [
        {"var_type": int, "min_value": 0, "max_value": 10},
        {"var_type": float, "min_value": -1.5, "max_value": 2.5, "left_op": operator.lt,
         "right_op": operator.le},
    ],
    lp.OptionalNumericalParameter: [{"var_type": int, "min_value": 0, "max_value": 10}],
    lp.ChoiceParameter: [{"choices": ["a", "b"]}, {"choices": [1, 2], "var_type": int}],
    lp.OptionalChoiceParameter: [{"choices": ["a", "b"]}],
    lp.ChoiceListParameter: [{"choices": ["a", "b"]}],
    lp.EnumParameter: [{"enum": Color}],
    lp.EnumListParameter: [{"enum": Color}],
    lp.DateParameter: [{}, {"interval": 3}],
    lp.MonthParameter: [{}],
    lp.YearParameter: [{}],
    lp.DateHourParameter: [{}],
    lp.DateMinuteParameter: [{}, {"interval": 15}],
    lp.DateSecondParameter: [{}],
    lp.DateIntervalParameter: [{}],
    lp.TimeDeltaParameter: [{}],
    lp.TaskParameter: [{}],
    lp.ListParameter: [{}],
    lp.OptionalListParameter: [{}],
    lp.TupleParameter: [{}],
    lp.OptionalTupleParameter: [{}],
    lp.DictParameter: [{}],
    lp.OptionalDictParameter: [{}],
    lp.PathParameter: [{}],
    lp.OptionalPathParameter: [{}],
}


def shipped_parameter_classes() -> set[type]:
    """Every public Parameter class luigi.parameter and pipeflow.parameters define."""
    found = set()
    for module in (lp, pipeflow.parameters):
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, lp.Parameter)
                    and obj.__module__ == module.__name__ and not name.startswith("_")):
                found.add(obj)
    return found


def test_the_fuzz_test_covers_every_shipped_parameter_class():
    missing = shipped_parameter_classes() - set(FACTORIES)
    names = sorted(c.__name__ for c in missing)
    assert not missing, f"add these parameter classes to FACTORIES: {names}"


TASKS = [
    type(f"P{cls.__name__}{i}", (pipeflow.tasks.TaskJson,),
         {"p": cls(**kwargs), "__module__": __name__})
    for cls, variants in FACTORIES.items() for i, kwargs in enumerate(variants)
]

TEXT_KINDS = (lp.Parameter, lp.StrParameter, lp.OptionalParameter, lp.OptionalStrParameter,
              pipeflow.SecretParameter)


def _param(task_cls):
    return dict(task_cls.get_params())["p"]


def _is_text(param) -> bool:
    return type(param) in TEXT_KINDS


def _means(param, given_value, held) -> None:
    """The accepted value is what the parameter means (type, range, choices)."""
    if held is None:
        assert given_value is None or given_value == "", (param, given_value)
        return
    checks = [
        (lp.TaskParameter, lambda: isinstance(held, type) and issubclass(held, luigi.Task)),
        (lp.EnumListParameter, lambda: type(held) is tuple and all(isinstance(v, Color)
                                                                   for v in held)),
        (lp.EnumParameter, lambda: isinstance(held, Color)),
        (lp.ChoiceListParameter, lambda: type(held) is tuple and all(v in param._choices
                                                                     for v in held)),
        (lp.ChoiceParameter, lambda: type(held) is param._var_type and held in param._choices),
        (lp.NumericalParameter, lambda: type(held) is param._var_type
         and param._left_op(param._min_value, held) and param._right_op(held, param._max_value)),
        (lp.BoolParameter, lambda: type(held) is bool),
        (lp.IntParameter, lambda: type(held) is int),
        (lp.FloatParameter, lambda: type(held) is float and not math.isnan(held)),
        (lp.DateIntervalParameter, lambda: isinstance(held, luigi.date_interval.DateInterval)),
        (lp.TimeDeltaParameter, lambda: type(held) is datetime.timedelta),
        (lp._DatetimeParameterBase, lambda: type(held) is datetime.datetime
         and held.tzinfo is None),
        (lp._DateParameterBase, lambda: type(held) is datetime.date),
        (lp.DictParameter, lambda: isinstance(held, Mapping)),
        (lp.ListParameter, lambda: type(held) is tuple),
        (lp.PathParameter, lambda: isinstance(held, pathlib.PurePath)),
        (lp.StrParameter, lambda: type(held) is str),
    ]
    for base, check in checks:
        if isinstance(param, base):
            assert check(), f"{type(param).__name__} accepted {given_value!r} as {held!r}"
            break
    if isinstance(param, (lp.IntParameter, lp.FloatParameter, lp.NumericalParameter)) \
            and not isinstance(given_value, str):
        assert held == given_value  # a number is never rounded or clamped silently


def _outcome(task_cls, value) -> None:
    """The property: round-trips exactly, or a pipeflow error naming task, parameter, fix."""
    param = _param(task_cls)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            task = task_cls(p=value)
    except PipeflowError as exc:
        message = str(exc)
        assert isinstance(exc, ParameterError)
        assert task_cls.__name__ in message and "parameter 'p'" in message, message
        assert "Pass e.g." in message and "must be" in message, message
        return
    held = task.p
    if _is_text(param):
        if param.significant:  # the task id is the text: the same from the text
            assert "at 0x" not in str(held)
            again = task_cls(p=param.parse(param.serialize(held)))
            assert again.task_id == task.task_id
        return
    _means(param, value, held)
    if held is None:
        return
    text = param.serialize(held)
    assert _same(param.normalize(param.parse(text)), held) or isinstance(param, lp.TaskParameter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = task_cls(p=text)  # what the command line or a file gives
    assert back.task_id == task.task_id
    assert _same(back.p, held) or back.p is held


_odd_text = st.text(alphabet="\x00\n/\\.:,-TWPDHMS0123456789abrdeu ", max_size=12)
_looks_typed = st.sampled_from([
    "2020-01-02", "2020-W03", "2020-01", "2020", "2020-13-45", "2020-01-02T03", "2020-01-02T0304",
    "2020-01-02T030405", "2015-11-04-2015-12-04", "1 h", "P1DT2H", "3600", "[1, 2]",
    '{"a": 1}', '{"a": [1, {"b": null}]}', "((1, 2), (3, 4))", "true", "False", "yes", "red",
    "Color.red", "a,b", "a", "b", "1", "2", "NamedByTaskParameter", "Nope", "nan", "inf",
    "-inf", "1e400", "3", "3.0", " 3 ", "", "None", "null", "/a/b", "../x",
])
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-20, 20), st.integers(), st.floats(),
    st.integers(-2 ** 80, 2 ** 80), st.text(max_size=8), _odd_text, _looks_typed,
    st.binary(max_size=3), st.dates(),
    st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)), st.timedeltas(),
    st.sampled_from(list(Color)), st.just(NamedByTaskParameter), st.just(luigi.Task),
    st.builds(pathlib.PurePosixPath, st.text(max_size=6)),
    st.integers(-2 ** 40, 2 ** 40).map(np.int64), st.floats(width=32).map(np.float32),
    st.booleans().map(np.bool_),
    st.datetimes(min_value=datetime.datetime(1700, 1, 1),
                 max_value=datetime.datetime(2200, 1, 1)).map(pd.Timestamp),
    st.builds(object), st.just(lambda: 1), st.just(np.arange(3)),
    st.sampled_from([luigi.date_interval.Month(2020, 1), luigi.date_interval.Year(2021),
                     luigi.date_interval.Date(2020, 1, 2)]),
)
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=3) | st.integers(0, 3), inner, max_size=3),
    st.frozensets(st.integers(0, 5), max_size=3), st.sets(st.text(max_size=2), max_size=3),
), max_leaves=5)


@settings(max_examples=2500, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.sampled_from(TASKS), _values)
def test_every_parameter_class_round_trips_a_value_or_explains(task_cls, value):
    _outcome(task_cls, value)


@pytest.mark.parametrize("task_cls", TASKS, ids=lambda c: c.__name__)
def test_every_parameter_class_on_hostile_values(task_cls):
    """The same property, every class against a fixed list (the fuzz test samples)."""
    for value in [None, True, 2, 1.5, float("nan"), float("inf"), 10 ** 30, "3", "", "a\x00b",
                  "x\ny", "../x", [1, 2], {"a": 1}, {1, 2}, [{1}], {"a": {1}}, [object()],
                  object(), datetime.date(2020, 1, 2), datetime.datetime(2020, 1, 2, 3, 4, 5),
                  datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone.utc),
                  datetime.timedelta(hours=1), pathlib.Path("/a/b"), np.int64(3),
                  np.float64(0.5), np.bool_(True), pd.Timestamp("2020-01-02 03:04:05"),
                  Color.red, NamedByTaskParameter, NamedByTaskParameter(), b"ab",
                  np.array([1, 2]), lambda: 1, "2020-01-02", "2020-W03", [np.int64(1)],
                  {"a": [1, (2, 3)]}, 10 ** 5000]:
        _outcome(task_cls, value)


# -- the reported cases, one by one ----------------------------------------------------------

class Hostile(pipeflow.tasks.TaskJson):
    task = pipeflow.TaskParameter(default=NamedByTaskParameter)
    items = pipeflow.ListParameter(default=[])
    pair = pipeflow.TupleParameter(default=())
    mapping = pipeflow.DictParameter(default={})
    interval = pipeflow.DateIntervalParameter(default=luigi.date_interval.Year(2020))
    share = pipeflow.NumericalParameter(default=0.5, var_type=float, min_value=0.0,
                                        max_value=1.0, left_op=operator.lt,
                                        right_op=operator.le)
    n = pipeflow.IntParameter(default=1)
    rate = pipeflow.FloatParameter(default=0.5)
    flag = pipeflow.BoolParameter(default=False)
    level = pipeflow.ChoiceParameter(choices=[1, 2], var_type=int, default=1)
    color = pipeflow.EnumParameter(enum=Color, default=Color.red)
    day = pipeflow.DateParameter(default=datetime.date(2020, 1, 1))
    month = pipeflow.MonthParameter(default=datetime.date(2020, 1, 1))
    hour = pipeflow.DateHourParameter(default=datetime.datetime(2020, 1, 1))
    wait = pipeflow.TimeDeltaParameter(default=datetime.timedelta(0))
    limit = lp.OptionalIntParameter(default=None)
    label = pipeflow.Parameter(default="x")
    where = lp.PathParameter(default="data")

    def run(self):
        self.save({"n": self.n})


def _nested(depth):
    outer = inner = []
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


def _refused(match, **kwargs):
    with pytest.raises(ParameterError, match=match) as info:
        Hostile(**kwargs)
    message = str(info.value)
    assert message.startswith("Hostile: parameter ") and "Pass e.g. Hostile(" in message
    return message


@pytest.mark.parametrize(("kwargs", "match"), [
    # raw errors before (AttributeError, TypeError from json, luigi's own ValueErrors)
    ({"task": "NamedByTaskParameter2"}, r"'task' must be a task class \(the class, not an "
                                        r"instance\), but got "
                                        r"'NamedByTaskParameter2' \(str\)"),
    ({"task": 3}, r"'task' must be a task class \(the class, not an instance\), but got 3 "
                  r"\(int\)"),
    ({"task": NamedByTaskParameter()}, r"pass the class NamedByTaskParameter, not an instance"),
    ({"items": [{1, 2}]}, r"'items' must be a list, .*it holds a set, which JSON cannot hold "
                          r"\(a set has no order; pass sorted\(\.\.\.\) as a list\)"),
    ({"items": [object()]}, r"'items' must be a list, .*it holds a object, which JSON"),
    ({"pair": (1, {2})}, r"'pair' must be a tuple"),
    ({"mapping": {"a": {1}}}, r"'mapping' must be a dict, .*it holds a set"),
    ({"mapping": {1: "a"}}, r"its key 1 is not a str"),
    ({"items": [float("nan")]}, r"it holds nan, which JSON cannot hold"),
    ({"hour": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)},
     r"it has a time zone.*astimezone"),
    ({"wait": datetime.timedelta(days=-1)}, r"'wait' must be a timedelta .*could not be found"),
    ({"day": "2024-13-45"}, r"'day' must be a date, but got '2024-13-45' \(str\): "
                            r"'2024-13-45' cannot be read as one"),
    # silently accepted before
    ({"interval": 3}, r"'interval' must be a date interval, but got 3 \(int\)"),
    ({"interval": "soon"}, r"'interval' must be a date interval, but got 'soon'"),
    ({"interval": datetime.date(2020, 1, 2)}, r"'interval' must be a date interval"),
    ({"share": 0.0}, r"'share' must be a number \(float in \(0\.0, 1\.0\]\), but got 0\.0 "
                     r"\(float\): it is out of range"),
    ({"share": 1.5}, r"it is out of range"),
    ({"share": "2"}, r"'share' must be a number"),
    ({"level": True}, r"'level' must be one of 1, 2, but got True \(bool\)"),
    ({"level": 3}, r"'level' must be one of 1, 2, but got 3"),
    ({"color": 1}, r"'color' must be a member of Color, but got 1 \(int\).*Color\.red"),
    ({"n": 1.5}, r"'n' must be an int, but got 1\.5 \(float\)\. "),
    ({"n": 3.0}, r"'n' must be an int, but got 3\.0 \(float\): pass int\(3\.0\)"),
    ({"n": True}, r"'n' must be an int, but got True \(bool\)"),
    ({"rate": float("nan")}, r"'rate' must be a float, but got nan \(float\): nan is not equal "
                             r"to itself"),
    ({"rate": 2 ** 60 + 1}, r"a float cannot hold it exactly"),
    ({"rate": 10 ** 400}, r"it is too large for a float"),
    ({"flag": "yes"}, r"'flag' must be a bool, but got 'yes' \(str\)"),
    ({"flag": 2}, r"'flag' must be a bool, but got 2 \(int\)"),
    ({"wait": datetime.timedelta(microseconds=5)}, r"'wait' must be a timedelta \(whole seconds\)"
                                                   r".*which reads back as"),
    ({"label": {1, 2}}, r"'label' must be a str.*a set is written in a different order"),
    ({"label": object()}, r"'label' must be a str.*has no text that identifies it"),
    ({"label": lambda: 1}, r"'label' must be a str.*a function has no text"),
    ({"label": np.arange(5000)}, r"'label' must be a str.*ndarray has no text"),
    ({"label": 10 ** 5000}, r"'label' must be a str.*Exceeds the limit"),
    ({"where": 3}, r"'where' must be a path, but got 3 \(int\)"),
    ({"items": _nested(5000)}, r"'items' must be a list, but got a list: it is nested too deeply"),
    ({"label": _nested(5000)}, r"'label' must be a str, but got a list: it is nested too deeply"),
    ({"day": datetime.date(1, 1, 1)}, r"stored as '1-01-01', which cannot be read back"),
])
def test_a_hostile_value_is_a_parameter_error(kwargs, match):
    _refused(match, **kwargs)


def test_sensible_values_are_accepted_as_luigi_normalizes_them():
    task = Hostile(task="NamedByTaskParameter", items=[np.int64(1), (2, 3)], pair=[1, 2],
                   mapping={"a": [1, 2]}, interval="2020-01", share=1, n=np.int64(3),
                   rate=1, flag=np.bool_(True), level="2", color="blue",
                   day=pd.Timestamp("2021-05-01 10:00"),
                   month=datetime.datetime(2020, 7, 9, 3), hour=pd.Timestamp("2020-01-01 05:30"),
                   wait="1 h", limit="", label=3, where=pathlib.Path("a/b"))
    assert task.task is NamedByTaskParameter
    assert task.items == (1, (2, 3)) and type(task.items[0]) is int
    assert task.pair == (1, 2) and task.mapping == {"a": (1, 2)}
    assert task.interval == luigi.date_interval.Month(2020, 1)
    assert task.share == 1.0 and type(task.share) is float
    assert task.n == 3 and type(task.n) is int
    assert task.rate == 1.0 and type(task.rate) is float
    assert task.flag is True and task.level == 2 and task.color is Color.blue
    assert task.day == datetime.date(2021, 5, 1) and type(task.day) is datetime.date
    assert task.month == datetime.date(2020, 7, 1)
    assert task.hour == datetime.datetime(2020, 1, 1, 5) and type(task.hour) is datetime.datetime
    assert task.wait == datetime.timedelta(hours=1) and task.limit is None
    assert task.label == 3  # d6tflow code passes numbers to a plain Parameter
    assert task.where == pathlib.Path("a/b")
    assert Hostile(rate=float("inf")).rate == math.inf
    assert Hostile(n=10 ** 30).n == 10 ** 30


def test_an_int_and_a_float_are_one_float_parameter_value_one_task():
    assert Hostile(rate=1) is Hostile(rate=1.0)
    assert Hostile(rate=1).task_id == Hostile(rate="1.0").task_id


def test_an_equal_value_of_another_type_is_not_served_from_the_instance_cache():
    # luigi's and pipeflow's instance caches were keyed by value only: True == 1
    assert Hostile(n=1).n == 1
    with pytest.raises(ParameterError, match="'n' must be an int, but got True"):
        Hostile(n=True)
    plain_int, plain_bool = Hostile(label=1), Hostile(label=True)
    assert plain_bool.label is True and plain_int.task_id != plain_bool.task_id
    assert Hostile(items=(True,)).items == (True,) and Hostile(items=(1,)).items == (1,)


def test_an_insignificant_plain_parameter_takes_any_object():
    class WithHandle(pipeflow.tasks.TaskJson):
        handle = pipeflow.Parameter(significant=False, default=None)

    handle = object()
    assert WithHandle(handle=handle).handle is handle


def test_a_secret_value_refused_by_its_own_check_is_masked():
    class Token(pipeflow.SecretParameter):
        def normalize(self, x):
            if not str(x).startswith("tok_"):
                raise ValueError(f"bad token {x}")
            return x

    class Api(pipeflow.tasks.TaskJson):
        token = Token()

    assert Api(token="tok_1").token == "tok_1"
    with pytest.raises(ParameterError) as info:
        Api(token="s3cr3t-value")
    message = str(info.value)
    assert "s3cr3t-value" not in message and MASK in message
    assert "Api: parameter 'token'" in message and "Pass e.g." in message


def test_a_bad_default_is_explained_as_the_default():
    class BadDefault(pipeflow.tasks.TaskJson):
        n = pipeflow.IntParameter(default=1.5)

    with pytest.raises(ParameterError, match=r"BadDefault: parameter 'n' must be an int, but its "
                                             r"default is 1\.5 \(float\)\. .*Fix it in the "
                                             r"class, or pass e\.g\. BadDefault\(n=3\)"):
        BadDefault()
    assert BadDefault(n=2).n == 2


def test_optional_parameters_take_none_and_the_empty_text_as_none():
    class Opt(pipeflow.tasks.TaskJson):
        text = pipeflow.OptionalParameter(default="x")
        count = lp.OptionalIntParameter(default=1)
        items = lp.OptionalListParameter(default=None)

    task = Opt(text="", count=None, items="")
    assert (task.text, task.count, task.items) == (None, None, None)
    assert task.task_id == Opt(text=None, count="", items=None).task_id


# -- every way a value reaches a task --------------------------------------------------------

def test_workflow_get_task_and_multi_grids_check_values():
    with pytest.raises(ParameterError, match=r"Hostile: parameter 'n' must be an int"):
        pipeflow.Workflow(Hostile, {"n": 1.5}).get_task()
    with pytest.raises(ParameterError, match=r"Hostile: parameter 'interval' must be a date"):
        pipeflow.Workflow(Hostile, {"interval": 3}).get_task()
    with pytest.raises(ParameterError, match=r"Hostile: parameter 'share' must be a number"):
        pipeflow.WorkflowMulti(Hostile, {"share": [0.5, 7]}).get_task()
    grid = pipeflow.WorkflowMulti(Hostile, {"n": list(np.arange(1, 3))})
    assert sorted(t.n for t in grid.get_task().values()) == [1, 2]


def test_requires_inherits_and_clone_pass_normalized_values_on():
    @pipeflow.requires(Hostile)
    class Down(pipeflow.tasks.TaskJson):
        def run(self):
            self.save(self.inputLoad())

    @pipeflow.inherits(Hostile)
    class Cloned(pipeflow.tasks.TaskJson):
        def requires(self):
            return self.clone(Hostile)

        def run(self):
            self.save(self.inputLoad())

    down = Down(items=[1, [2]], mapping={"a": {"b": 1}}, task=NamedByTaskParameter,
                hour=datetime.datetime(2020, 1, 1, 5, 30))
    assert down.requires().items == (1, (2,)) and down.requires().mapping == {"a": {"b": 1}}
    assert down.requires().task_id == Hostile(items=[1, [2]], mapping={"a": {"b": 1}},
                                              hour=datetime.datetime(2020, 1, 1, 5)).task_id
    assert Cloned(n=4).requires() is Hostile(n=4)
    with pytest.raises(ParameterError, match=r"Down: parameter 'n' must be an int"):
        Down(n="four")
    with pytest.raises(ParameterError, match=r"Hostile: parameter 'n' must be an int"):
        Down().clone(Hostile, n=2.5)


def test_run_takes_tasks_whose_values_were_checked(tmp_path):
    pipeflow.set_dir(tmp_path)
    pipeflow.run(Hostile(n=np.int64(5)))
    assert Hostile(n=5).outputLoad() == {"n": 5}


# -- the one function the CLI reuses -------------------------------------------------------

def test_parse_value_reads_text_with_the_same_rules_and_errors():
    from pipeflow.parameters import parse_value

    assert parse_value(Hostile, "n", "3") == 3
    assert parse_value(Hostile, "items", "[1, 2]") == (1, 2)
    assert parse_value(Hostile, "day", "2024-02-29") == datetime.date(2024, 2, 29)
    assert parse_value(Hostile, "label", "3") == "3"
    assert parse_value(Hostile, "limit", "") is None
    assert parse_value(Hostile, "task", "NamedByTaskParameter") is NamedByTaskParameter
    with pytest.raises(ParameterError, match=r"Hostile: parameter 'n' must be an int, but got "
                                             r"'abc' \(str\): 'abc' cannot be read as one"):
        parse_value(Hostile, "n", "abc")
    with pytest.raises(ParameterError, match=r"parameter 'day' must be a date, but got "
                                             r"'2024-13-45'"):
        parse_value(Hostile, "day", "2024-13-45")
    with pytest.raises(ParameterError, match=r"a parameter 'nn' that no task declares\. "
                                             r"Did you mean 'n'\?"):
        parse_value(Hostile, "nn", "3")


def test_dict_values_in_another_order_are_other_tasks_not_a_cached_one():
    first = Hostile(mapping={"a": 1, "b": 2})
    second = Hostile(mapping={"b": 2, "a": 1})  # luigi's frozen dicts compare equal
    assert list(second.mapping) == ["b", "a"]
    assert second.task_id != first.task_id
    assert Hostile(mapping={"b": 2, "a": 1}) is second


def test_too_many_or_doubled_positional_values_are_parameter_errors():
    class Few(pipeflow.tasks.TaskJson):  # luigi raised its own ParameterException for these
        n = pipeflow.IntParameter()

    with pytest.raises(ParameterError, match=r"Few takes at most 1 value\(s\) by position "
                                             r"\(n\), but got 2\. Pass values by name"):
        Few(1, 2)
    with pytest.raises(ParameterError, match=r"Few: parameter 'n' was given twice, by position "
                                             r"and by name\. Pass it once"):
        Few(1, n=1)
    assert Few(4).n == 4 and Few("5").n == 5


def test_a_configured_value_obeys_the_same_rules():
    class Configured(pipeflow.tasks.TaskJson):
        n = pipeflow.IntParameter(default=1)
        share = pipeflow.NumericalParameter(default=0.5, var_type=float, min_value=0.0,
                                            max_value=1.0)

    config = luigi.configuration.get_config()
    config.add_section("Configured")
    try:
        config.set("Configured", "n", "abc")
        with pytest.raises(ParameterError, match=r"Configured: the configured value of "
                                                 r"parameter 'n' cannot be read: .*Fix it in "
                                                 r"the \[Configured\] section"):
            Configured()
        config.set("Configured", "n", "7")
        assert Configured().n == 7
    finally:
        config.remove_section("Configured")


class _Model:
    """Stands for a scikit-learn estimator: its text is its own, the same in every process."""

    def __init__(self, c):
        self.c = c

    def __repr__(self):
        return f"Model(C={self.c})"


def test_an_object_whose_text_is_its_own_is_kept_as_in_d6tflow():
    class Fit(pipeflow.tasks.TaskJson):
        model = pipeflow.Parameter()

    t = Fit(model=_Model(1))
    assert t.model.c == 1 and t.to_str_params()["model"] == "Model(C=1)"
    assert Fit(model=_Model(2)).task_id != t.task_id
    assert Fit(model=np.arange(3)).task_id != t.task_id  # a small array's text is whole


def test_a_typed_secret_is_checked_as_its_type_and_masked():
    class SecretInt(pipeflow.SecretParameter, luigi.IntParameter):
        pass

    class Login(pipeflow.tasks.TaskJson):
        pin = SecretInt(default=0)

    assert Login(pin="1234").pin == 1234
    with pytest.raises(ParameterError, match=r"'pin' must be an int") as info:
        Login(pin="hunter2")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
