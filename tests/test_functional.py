"""pipeflow.functional: d6tflow's decorator API (flow.task / requires / params / persists)."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

import pipeflow
import pipeflow as d6tflow
from pipeflow.errors import (
    ConfirmationError,
    IncompleteTaskError,
    ParameterError,
    PipeflowError,
    TaskFailedError,
    UnusedParameterWarning,
)
from pipeflow.functional import Step, Workflow

CALLS: list[str] = []


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


def frame(n: int = 3, col: str = "a") -> pd.DataFrame:
    return pd.DataFrame({col: range(n)})


# -- the d6tflow test, in spirit ---------------------------------------------------------------

def test_d6tflow_style_flow_with_persists_dict_requires_and_global_params():
    flow = Workflow()

    @flow.task(d6tflow.tasks.TaskCache)
    @flow.persists(["left", "right"])
    def source_one(task):
        task.save({"left": frame(), "right": frame()})

    @flow.task(d6tflow.tasks.TaskCache)
    @flow.persists(["left", "right"])
    def source_two(task):
        task.save({"left": frame(), "right": frame()})

    @flow.task(d6tflow.tasks.TaskCache)
    @flow.requires(source_one)
    def middle(task):
        upstream = task.inputLoad(as_dict=True)
        task.save({"fresh": frame(), "upstream": upstream})

    @flow.task(d6tflow.tasks.TaskCache)
    @flow.requires({"x": source_two, "y": middle})
    @flow.persists(["result"])
    def combine(task):
        inputs = task.inputLoad(as_dict=True)
        assert inputs["x"]["left"].equals(frame()) and inputs["x"]["right"].equals(frame())
        assert inputs["y"]["fresh"].equals(frame())
        assert inputs["y"]["upstream"]["left"].equals(frame())
        assert task.factor == 7
        CALLS.append("combine")
        task.save({"result": frame(4)})

    flow.add_global_params(factor=d6tflow.IntParameter(default=0))
    flow.run([combine, source_one], forced_all_upstream=True, confirm=False,
             params={"factor": 7})
    flow.run(combine, forced_all_upstream=True, confirm=False, params={"factor": 7})
    assert CALLS == ["combine", "combine"]
    loaded = flow.outputLoad(combine)
    assert isinstance(loaded, list) and loaded[0].equals(frame(4))
    assert flow.outputLoad(combine, as_dict=True)["result"].equals(frame(4))


# -- flow.task ----------------------------------------------------------------------------------

@pytest.mark.parametrize("task_type", [
    pipeflow.tasks.TaskCache, pipeflow.tasks.TaskPqPandas, pipeflow.tasks.TaskCSVPandas,
    pipeflow.tasks.TaskPickle,
])
def test_step_becomes_a_task_class_named_after_the_function(task_type):
    flow = Workflow()

    @flow.task(task_type)
    def load_numbers(task):
        CALLS.append(type(task).__name__)
        task.save(frame())

    assert isinstance(load_numbers, Step)
    cls = load_numbers.task_class
    assert cls.__name__ == "load_numbers" and cls.task_family == "load_numbers"
    assert issubclass(cls, task_type) and flow.steps == {"load_numbers": cls}
    result = flow.run(load_numbers)
    assert result and CALLS == ["load_numbers"]
    assert flow.outputLoad(load_numbers).equals(frame())
    assert flow.get_task(load_numbers).complete()


def test_user_subclass_as_task_type_keeps_its_attributes():
    class Results(pipeflow.tasks.TaskJson):
        persist = ["scores", "info"]
        task_group = "results"

    flow = Workflow()

    @flow.task(Results)
    def evaluate(task):
        task.save({"scores": {"acc": 0.9}, "info": {"n": 3}})

    flow.run(evaluate)
    assert flow.outputLoad(evaluate, as_dict=True) == {"scores": {"acc": 0.9},
                                                       "info": {"n": 3}}
    path = flow.get_task(evaluate).output()["scores"].path
    assert path.parent.parent.name == "results" and path.parent.name == "evaluate"


def test_step_stays_callable_and_its_class_works_with_class_based_api():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskCache)
    def answer(task):
        """The answer."""
        task.save(42)
        return "called"

    class Fake:
        def save(self, data):
            CALLS.append(data)

    assert answer(Fake()) == "called" and CALLS == [42]
    assert answer.__name__ == "answer" and answer.__doc__ == "The answer."
    assert answer.task_class.__doc__ == "The answer."
    assert "answer" in repr(answer) and "TaskCache" in repr(answer)
    wf = pipeflow.Workflow(answer.task_class)
    wf.run()
    assert wf.outputLoad() == 42


@pytest.mark.parametrize("bad, match", [
    (int, r"@flow.task\(<class 'int'>\): it is not a task class\. Pass a pipeflow task "
          r"class, e\.g\. @flow.task\(pipeflow.tasks.TaskCache\)"),
    ("TaskCache", r"it is not a task class"),
    (pipeflow.tasks.TaskAggregator, r"it is a luigi task class but not a pipeflow data task"),
    (pipeflow.tasks.TaskData, r"it has no storage format \(its target_class is the abstract "
                              r"DataTarget\)"),
    (None, r"@flow.task\(\) needs the task type of the step"),
])
def test_task_type_must_be_a_pipeflow_data_task_class(bad, match):
    flow = Workflow()
    with pytest.raises(ParameterError, match=match):
        flow.task(bad)


def test_task_type_errors_for_instances_bare_decorator_and_external_types():
    flow = Workflow()
    with pytest.raises(ParameterError, match=r"takes a task class, not the instance"):
        flow.task(pipeflow.tasks.TaskCache())

    with pytest.raises(ParameterError, match=r"@flow.task is used without a task type above "
                                             r"get_data.*Write @flow.task\(pipeflow"):
        @flow.task
        def get_data(task):
            pass

    class Outside(pipeflow.tasks.TaskCSVPandas):
        external = True

    with pytest.raises(ParameterError, match=r"it is external .* would never run"):
        flow.task(Outside)
    assert flow.steps == {}


def test_step_function_must_take_one_argument_and_have_a_name():
    flow = Workflow()
    with pytest.raises(ParameterError, match=r"must take exactly one argument, the task "
                                             r"instance \(`def no_args\(task\): \.\.\.`\)"):
        @flow.task(pipeflow.tasks.TaskCache)
        def no_args():
            pass

    with pytest.raises(ParameterError, match=r"'<lambda>' is not a valid name"):
        flow.task(pipeflow.tasks.TaskCache)(lambda task: None)

    with pytest.raises(ParameterError, match=r"@flow.task decorates functions"):
        flow.task(pipeflow.tasks.TaskCache)(print)


def test_decorators_above_flow_task_are_errors():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskCache)
    def first(task):
        task.save(1)

    for decorator in (lambda: flow.requires(first), lambda: flow.params(n=pipeflow.IntParameter()),
                      lambda: flow.persists(["a"])):
        with pytest.raises(ParameterError, match=r"is not below a @flow.task\(\.\.\.\) "
                                                 r"decorator.*must be the outermost"):
            decorator()

    with pytest.raises(ParameterError, match=r"already a complete step .* Put @flow.task"):
        @flow.task(pipeflow.tasks.TaskCache)
        @flow.task(pipeflow.tasks.TaskCache)
        def twice(task):
            pass


def test_a_decorator_applies_to_one_function_only():
    flow = Workflow()
    decorator = flow.task(pipeflow.tasks.TaskCache)

    def one(task):
        task.save(1)

    def two(task):
        task.save(2)

    decorator(one)
    with pytest.raises(ParameterError, match=r"applied to a second function"):
        decorator(two)


def test_redefining_a_step_replaces_it_and_its_changed_code_makes_it_stale():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskJson)
    def numbers(task):
        task.save({"n": 1})

    flow.run(numbers)
    old = numbers.task_class

    @flow.task(pipeflow.tasks.TaskJson)  # noqa: F811 - a notebook cell run again, edited
    def numbers(task):
        task.save({"n": 2})

    assert numbers.task_class is not old and flow.steps["numbers"] is numbers.task_class
    preview = flow.preview(numbers, print_it=False)
    assert preview.counts()["STALE"] == 1
    flow.run(numbers)
    assert flow.outputLoad(numbers) == {"n": 2}


# -- flow.requires ------------------------------------------------------------------------------

def _sources(flow):
    @flow.task(pipeflow.tasks.TaskPqPandas)
    def left(task):
        task.save(frame(3, "a"))

    @flow.task(pipeflow.tasks.TaskPqPandas)
    def right(task):
        task.save(frame(3, "b"))

    return left, right


def test_requires_one_step_loads_its_data():
    flow = Workflow()
    left, _ = _sources(flow)

    @flow.task(pipeflow.tasks.TaskPqPandas)
    @flow.requires(left)
    def double(task):
        task.save(task.inputLoad() * 2)

    flow.run(double)
    assert flow.outputLoad(double)["a"].tolist() == [0, 2, 4]


def test_requires_several_steps_gives_a_list_and_a_dict_gives_a_dict():
    flow = Workflow()
    left, right = _sources(flow)

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.requires(left, right)
    def as_list(task):
        first, second = task.inputLoad()
        task.save(list(first.columns) + list(second.columns))

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.requires({"l": left, "r": right})
    def as_dict(task):
        data = task.inputLoad()
        task.save(sorted(data))

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.requires(l=left, r=right)
    def as_keywords(task):
        task.save(sorted(task.inputLoad()))

    flow.run([as_list, as_dict, as_keywords])
    assert flow.outputLoad(as_list) == ["a", "b"]
    assert flow.outputLoad(as_dict) == ["l", "r"] == flow.outputLoad(as_keywords)


def test_requires_passes_parameters_upstream():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.params(n=pipeflow.IntParameter(default=2))
    def make(task):
        task.save(frame(task.n))

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.requires(make)
    def count(task):
        task.save(len(task.inputLoad()))

    assert dict(count.task_class.get_params())["n"] is dict(make.task_class.get_params())["n"]
    flow.run(count, params={"n": 5})
    assert flow.outputLoad(count) == 5 and flow.outputLoad(make).equals(frame(5))
    assert flow.get_task(make, {"n": 5}).complete()
    assert not flow.get_task(make).complete()  # n=2 never ran


def test_requires_a_class_based_task():
    class Base(pipeflow.tasks.TaskCache):
        def run(self):
            self.save(10)

    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.requires(Base)
    def plus_one(task):
        task.save(task.inputLoad() + 1)

    flow.run(plus_one)
    assert flow.outputLoad(plus_one) == 11
    assert flow.outputLoadAll(plus_one) == {"plus_one": 11, "Base": 10}


def test_requires_errors():
    flow = Workflow()
    other = Workflow()

    def plain(task):
        pass

    @other.task(pipeflow.tasks.TaskCache)
    def foreign(task):
        task.save(1)

    @flow.task(pipeflow.tasks.TaskCache)
    def mine(task):
        task.save(1)

    cases = [
        ((plain,), {}, r"@flow.requires\(plain\): plain is not a step of this flow \(it has no "
                       r"@flow.task decorator\)\. Decorate it with @flow.task"),
        ((foreign,), {}, r"foreign is a step of another functional Workflow.*"
                         r"@flow.requires\(foreign.task_class\)"),
        (("mine",), {}, r"takes step functions of this flow \(or a dict of them\), not 'mine'"),
        ((), {}, r"@flow.requires\(\) names no step"),
        ((mine,), {"b": mine}, r"takes steps or a dict of steps, not both"),
        (({"a": plain},), {}, r"plain is not a step of this flow"),
    ]
    for args, kwargs, match in cases:
        flow.task(pipeflow.tasks.TaskCache)
        with pytest.raises(ParameterError, match=match):
            flow.requires(*args, **kwargs)

    flow.task(pipeflow.tasks.TaskCache)
    flow.requires(mine)
    with pytest.raises(ParameterError, match=r"@flow.requires is used twice on one step"):
        flow.requires(mine)


# -- flow.params and add_global_params --------------------------------------------------------

def test_params_are_attached_the_way_luigi_3_5_expects():
    flow = Workflow()
    shared = pipeflow.IntParameter(default=1)

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.params(alpha=shared, label=pipeflow.Parameter(default="x"))
    def first(task):
        task.save((task.alpha, task.label))

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.params(beta=shared)  # the same object under another name: copied, not renamed
    def second(task):
        task.save(task.beta)

    assert dict(first.task_class.get_params())["alpha"]._attribute_name == "alpha"
    assert dict(second.task_class.get_params())["beta"]._attribute_name == "beta"
    flow.run([first, second], params={"alpha": 3, "beta": 4})
    assert flow.outputLoad(first) == (3, "x") and flow.outputLoad(second) == 4
    flow.run(first)
    assert flow.outputLoad(first) == (1, "x")


def test_params_errors():
    flow = Workflow()
    cases = [
        ({"n": 3}, r"@flow.params\(n=3\): the value must be a parameter object.*"
                   r"@flow.params\(n=pipeflow.Parameter\(default=3\)\)"),
        ({"save": pipeflow.Parameter()}, r"'save' cannot be a parameter name: it would replace "
                                         r"TaskCache.save, which the task needs"),
        ({"persist": pipeflow.Parameter()}, r"it would replace TaskCache.persist"),
        ({"_hidden": pipeflow.Parameter()}, r"must be a plain name not starting with '_'"),
    ]
    for params, match in cases:
        flow.task(pipeflow.tasks.TaskCache)
        with pytest.raises(ParameterError, match=match):
            flow.params(**params)

    flow.task(pipeflow.tasks.TaskCache)
    flow.params(n=pipeflow.IntParameter(default=1))
    with pytest.raises(ParameterError, match=r"parameter 'n' is declared twice on one step"):
        flow.params(n=pipeflow.IntParameter(default=2))


def test_parameter_values_are_checked_when_running():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.params(count=pipeflow.IntParameter(default=1))
    def step(task):
        task.save(task.count)

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.params(needed=pipeflow.IntParameter())
    def strict(task):
        task.save(task.needed)

    with pytest.raises(ParameterError, match=r"has a parameter 'cuont' that no task declares\. "
                                             r"Did you mean 'count'\?"):
        flow.run(step, params={"cuont": 2})
    with pytest.raises(ParameterError, match=r"parameter 'count' must be an int, but got 2\.5"):
        flow.run(step, params={"count": 2.5})
    with pytest.raises(ParameterError, match=r"flow.run\(strict\): strict needs a value for its "
                                             r"parameter needed \(int, required\).*Pass it: "
                                             r"params=\{'needed': \.\.\.\}"):
        flow.run(strict)
    with pytest.raises(ParameterError, match=r"params must be a dict of parameter values"):
        flow.run(step, params=[("count", 2)])
    with pytest.raises(ParameterError, match=r"strict needs a value for its parameter needed "
                                             r"\(int, required\), which has no default "
                                             r"\(params has 'neded': a typo\?\)"):
        flow.run(strict, params={"neded": 9})
    flow.run(strict, params={"needed": 9})
    assert flow.outputLoad(strict) == 9


def test_parameters_no_step_declares_are_ignored_with_a_warning_once():
    flow, base, scaled = _counting_flow()
    with pytest.warns(UnusedParameterWarning, match=r"flow.run\(base\): 'shared_setting' is "
                                                    r"not a parameter of any step of this run, "
                                                    r"so it is ignored \(d6tflow code shares "
                                                    r"one params dict across flows\)"):
        flow.run(base, params={"shared_setting": 1})
    assert CALLS == ["base"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.run(base, params={"shared_setting": 2})  # warned once per flow and name
        flow.run(scaled, params={"shared_setting": 2, "multiplier": 3})
    assert flow.outputLoad(scaled)["a"].tolist() == [0, 3, 6]


def test_global_params_reach_steps_defined_before_and_after():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskCache)
    def before(task):
        task.save(task.scale)

    flow.add_global_params(scale=pipeflow.IntParameter(default=1))

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.requires(before)
    def after(task):
        task.save(task.inputLoad() + task.scale)

    @flow.task(pipeflow.tasks.TaskCache)
    def alone(task):
        task.save(task.scale)

    flow.run([after, alone], params={"scale": 5})
    assert flow.outputLoad(before) == 5 and flow.outputLoad(after) == 10
    assert flow.outputLoad(alone) == 5
    with pytest.raises(ParameterError, match=r"the value must be a parameter object"):
        flow.add_global_params(scale=3)
    with pytest.raises(ParameterError, match=r"it would replace TaskData.run"):
        flow.add_global_params(run=pipeflow.Parameter())


def test_a_steps_own_parameter_wins_over_a_global_one_and_globals_can_be_replaced():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.params(level=pipeflow.IntParameter(default=10))
    def own(task):
        task.save(task.level)

    @flow.task(pipeflow.tasks.TaskCache)
    def plain(task):
        task.save(task.level)

    flow.add_global_params(level=pipeflow.IntParameter(default=1))
    flow.run([own, plain])
    assert flow.outputLoad(own) == 10 and flow.outputLoad(plain) == 1

    flow.add_global_params(level=pipeflow.IntParameter(default=2))
    flow.run([own, plain])
    assert flow.outputLoad(own) == 10 and flow.outputLoad(plain) == 2


# -- flow.persists ------------------------------------------------------------------------------

def test_persists_names_the_outputs():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskPickle)
    @flow.persists(["model", "scores"])
    def train(task):
        task.save({"model": "m", "scores": [1, 2]})

    assert train.task_class.persist == ["model", "scores"]
    flow.run(train)
    assert flow.outputLoad(train) == ["m", [1, 2]]
    assert flow.outputLoad(train, keys=["scores"], as_dict=True) == {"scores": [1, 2]}
    assert set(flow.get_task(train).output()) == {"model", "scores"}


@pytest.mark.parametrize("value, match", [
    ("a1", r"@flow.persists\('a1'\): it takes a list of output names, not str\. Write "
           r"@flow.persists\(\['a1', 'a2'\]\) or @flow.persists\(\['a1'\]\)"),
    (3, r"it takes a list of output names, not int"),
    ([], r"output names must be a non-empty list of distinct plain names"),
    (["a", "a"], r"distinct plain names"),
    (["a/b"], r"no '/'"),
])
def test_persists_errors(value, match):
    flow = Workflow()
    flow.task(pipeflow.tasks.TaskCache)
    with pytest.raises(ParameterError, match=match):
        flow.persists(value)


def test_persists_twice_is_an_error():
    flow = Workflow()
    flow.task(pipeflow.tasks.TaskCache)
    flow.persists(["a"])
    with pytest.raises(ParameterError, match=r"@flow.persists is used twice on one step"):
        flow.persists(["b"])


# -- running ------------------------------------------------------------------------------------

def _counting_flow():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskPqPandas)
    def base(task):
        CALLS.append("base")
        task.save(frame())

    @flow.task(pipeflow.tasks.TaskPqPandas)
    @flow.requires(base)
    @flow.params(multiplier=pipeflow.IntParameter(default=1))
    def scaled(task):
        CALLS.append(f"scaled{task.multiplier}")
        task.save(task.inputLoad() * task.multiplier)

    return flow, base, scaled


def test_run_returns_the_run_result_and_passes_options_to_pipeflow_run():
    flow, base, scaled = _counting_flow()
    result = flow.run(scaled, params={"multiplier": 2})
    assert result and sorted(r.task.task_family for r in result.by_state("completed")) == [
        "base", "scaled"]
    assert CALLS == ["base", "scaled2"]
    flow.run(scaled, params={"multiplier": 2})
    assert CALLS == ["base", "scaled2"]  # complete: nothing runs
    flow.run(scaled, params={"multiplier": 2}, forced=base)  # a step function as forced
    assert CALLS == ["base", "scaled2", "base", "scaled2"]
    flow.run(scaled, {"multiplier": 2}, None, None, True)  # positional forced, forced_all
    assert CALLS[-1] == "scaled2" and len(CALLS) == 5
    flow.run("scaled", params={"multiplier": 2}, forced_all_upstream=True)  # by name
    assert CALLS[-2:] == ["base", "scaled2"]


def test_run_with_multi_params_runs_shared_tasks_once_and_loads_per_set():
    flow, base, scaled = _counting_flow()
    sets = {"double": {"multiplier": 2}, "triple": {"multiplier": 3}}
    results = flow.run(scaled, multi_params=sets)
    assert set(results) == {"double", "triple"} and all(results.values())
    assert sorted(CALLS) == ["base", "scaled2", "scaled3"]
    loaded = flow.outputLoad(scaled)
    assert loaded["double"]["a"].tolist() == [0, 2, 4]
    assert loaded["triple"]["a"].tolist() == [0, 3, 6]
    everything = flow.outputLoadAll(scaled)
    assert set(everything) == {"double", "triple"}
    assert set(everything["triple"]) == {"scaled", "base"}
    assert flow.params_used["scaled"] == [{"multiplier": 2}, {"multiplier": 3}]
    # a later single run switches outputLoad back to one result
    flow.run(scaled, params={"multiplier": 4})
    assert flow.outputLoad(scaled)["a"].tolist() == [0, 4, 8]


def test_run_errors():
    flow, base, scaled = _counting_flow()

    def plain(task):
        pass

    with pytest.raises(ParameterError, match=r"flow.run: 'scaeld' is not a step of this flow\. "
                                             r"Did you mean 'scaled'\? Its steps are "
                                             r"\['base', 'scaled'\]"):
        flow.run("scaeld")
    with pytest.raises(ParameterError, match=r"flow.run: plain is not a step of this flow"):
        flow.run(plain)
    with pytest.raises(ParameterError, match=r"flow.run: no step given"):
        flow.run([])
    with pytest.raises(ParameterError, match=r"both params and multi_params are given"):
        flow.run(scaled, params={"multiplier": 2}, multi_params={"a": {"multiplier": 2}})
    with pytest.raises(ParameterError, match=r"multi_params must be a non-empty dict of "
                                             r"parameter sets by name.*params_generator_multiple"):
        flow.run(scaled, multi_params={"multiplier": [1, 2]})
    with pytest.raises(ParameterError, match=r"\(multi_params 'a'\) has a parameter "
                                             r"'multiplyer' that no task declares\. Did you "
                                             r"mean 'multiplier'\?"):
        flow.run(scaled, multi_params={"a": {"multiplyer": 2}})
    assert CALLS == []


def test_a_failing_step_raises_task_failed_error_with_the_cause():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskCache)
    def broken(task):
        raise ValueError("bad data")

    with pytest.raises(TaskFailedError, match=r"broken\(\): ValueError: bad data") as info:
        flow.run(broken)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(IncompleteTaskError, match=r"cannot load broken\(\)"):
        flow.outputLoad(broken)


def test_steps_run_in_parallel_worker_processes():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskJson)
    @flow.params(k=pipeflow.IntParameter(default=0))
    def square(task):
        task.save({"v": task.k ** 2})

    results = flow.run(square, multi_params={str(k): {"k": k} for k in range(4)}, workers=2)
    assert all(results.values())
    assert flow.outputLoad(square) == {str(k): {"v": k * k} for k in range(4)}


# -- loading ------------------------------------------------------------------------------------

def test_output_load_of_a_step_never_run_is_a_runtime_error():
    flow, base, scaled = _counting_flow()
    with pytest.raises(IncompleteTaskError, match=r"flow.outputLoad\(scaled\): scaled has not "
                                                  r"been run by this flow yet.*"
                                                  r"flow.run\(scaled\)") as info:
        flow.outputLoad(scaled)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, PipeflowError)
    with pytest.raises(IncompleteTaskError, match=r"flow.outputLoadAll\(base\): base has not"):
        flow.outputLoadAll(base)


def test_output_load_uses_the_last_run_params_or_the_ones_given():
    flow, base, scaled = _counting_flow()
    flow.run(scaled, params={"multiplier": 2})
    flow.run(scaled, params={"multiplier": 3})
    assert flow.outputLoad(scaled)["a"].tolist() == [0, 3, 6]
    assert flow.outputLoad(scaled, params={"multiplier": 2})["a"].tolist() == [0, 2, 4]
    assert flow.outputLoad(base)["a"].tolist() == [0, 1, 2]  # upstream of what ran
    by_name = flow.outputLoad(scaled, params={"x": {"multiplier": 2}, "y": {"multiplier": 3}})
    assert by_name["y"]["a"].tolist() == [0, 3, 6]
    with pytest.raises(IncompleteTaskError, match=r"cannot load scaled\(multiplier=9\)"):
        flow.outputLoad(scaled, params={"multiplier": 9})
    with pytest.raises(ParameterError, match=r"has a parameter 'multiplyer'"):
        flow.outputLoad(scaled, params={"multiplyer": 2})


def test_output_load_all_keys_by_step_name():
    flow, base, scaled = _counting_flow()
    flow.run(scaled, params={"multiplier": 2})
    loaded = flow.outputLoadAll(scaled)
    assert list(loaded) == ["scaled", "base"]
    assert loaded["scaled"]["a"].tolist() == [0, 2, 4]


# -- preview ------------------------------------------------------------------------------------

def test_preview_prints_the_tree_of_each_parameter_set(capsys):
    flow, base, scaled = _counting_flow()
    preview = flow.preview(scaled)
    assert capsys.readouterr().out.splitlines() == [
        "└─--[scaled-{'multiplier': '1'} (PENDING)]",
        "   └─--[base-{} (PENDING)]",
    ]
    assert preview.counts()["PENDING"] == 2
    flow.preview(scaled, params={"one": {"multiplier": 1}, "two": {"multiplier": 2}})
    out = capsys.readouterr().out
    assert "[scaled-{'multiplier': '1'} (PENDING)]" in out
    assert "[scaled-{'multiplier': '2'} (PENDING)]" in out
    flow.run(scaled, params={"multiplier": 5})
    quiet = flow.preview(scaled, print_it=False)
    assert capsys.readouterr().out == ""
    assert [t.param_kwargs for t in quiet.tasks("COMPLETE")] == [{"multiplier": 5}, {}]
    with pytest.raises(ParameterError, match=r"flow.preview\(scaled\) has a parameter "
                                             r"'multiplir'"):
        flow.preview(scaled, params={"multiplir": 1})


# -- reset and delete ---------------------------------------------------------------------------

def test_reset_without_params_resets_every_parameter_set_run_so_far():
    flow, base, scaled = _counting_flow()
    flow.run(scaled, multi_params={"a": {"multiplier": 2}, "b": {"multiplier": 3}})
    assert flow.reset(scaled) is True
    assert not flow.get_task(scaled, {"multiplier": 2}).complete()
    assert not flow.get_task(scaled, {"multiplier": 3}).complete()
    assert flow.get_task(base).complete()
    CALLS.clear()
    flow.run(scaled, multi_params={"a": {"multiplier": 2}, "b": {"multiplier": 3}})
    assert sorted(CALLS) == ["scaled2", "scaled3"]


def test_reset_with_params_resets_that_set_only_and_reset_by_name():
    flow, base, scaled = _counting_flow()
    flow.run(scaled, multi_params={"a": {"multiplier": 2}, "b": {"multiplier": 3}})
    flow.reset(scaled, params={"multiplier": 2})
    assert not flow.get_task(scaled, {"multiplier": 2}).complete()
    assert flow.get_task(scaled, {"multiplier": 3}).complete()
    flow.reset("base", confirm=False)
    assert not flow.get_task(base).complete()
    assert not flow.get_task(scaled, {"multiplier": 3}).complete()  # through its input


def test_reset_of_a_step_never_run_does_nothing_and_confirm_needs_a_terminal():
    flow, base, scaled = _counting_flow()
    assert flow.reset(scaled) is True
    flow.run(scaled)
    with pytest.raises(ConfirmationError, match=r"pass confirm=False|Pass confirm=False"):
        flow.reset(scaled, confirm=True)
    assert flow.get_task(scaled).complete()


def test_reset_all_resets_every_step_run():
    flow, base, scaled = _counting_flow()
    flow.run(scaled, params={"multiplier": 2})
    assert flow.resetAll(confirm=False) is True
    assert not flow.get_task(base).complete()
    assert not flow.get_task(scaled, {"multiplier": 2}).complete()


def test_delete_removes_committed_outputs_only(data_dir, stored):
    flow, base, scaled = _counting_flow()
    flow.run(scaled, params={"multiplier": 2})
    flow.run(scaled)  # the default set, multiplier=1
    folder = flow.get_task(scaled).output().path.parent
    mine = folder / "notes.txt"
    mine.write_text("mine, not pipeflow's")
    before = stored()
    assert flow.delete(scaled) is True
    assert not flow.get_task(scaled).complete()
    assert not flow.get_task(scaled, {"multiplier": 2}).complete()
    assert flow.get_task(base).complete()
    after = stored()
    assert mine in after and mine.read_text() == "mine, not pipeflow's"
    assert not [p for p in after if p.parent == folder and p.suffix == ".parquet"]
    assert len(after) < len(before)
    assert flow.deleteAll() is True
    assert not flow.get_task(base).complete()
    assert mine.exists()


def test_delete_all_covers_memory_outputs_and_default_parameter_sets():
    flow = Workflow()

    @flow.task(pipeflow.tasks.TaskCache)
    def in_memory(task):
        task.save({"x": 1})

    @flow.task(pipeflow.tasks.TaskCache)
    @flow.params(required=pipeflow.IntParameter())
    def needs_value(task):
        task.save(task.required)

    pipeflow.run(in_memory.task_class())  # run outside the flow: the default set
    assert flow.get_task(in_memory).complete()
    assert flow.deleteAll() is True  # needs_value has no default set: skipped
    assert not flow.get_task(in_memory).complete()


def test_errors_name_the_step_and_are_pipeflow_errors():
    flow, base, scaled = _counting_flow()
    other = Workflow()

    @other.task(pipeflow.tasks.TaskCache)
    def elsewhere(task):
        task.save(1)

    for call in (lambda: flow.reset(elsewhere), lambda: flow.preview(elsewhere),
                 lambda: flow.outputLoad(elsewhere), lambda: flow.delete("nope")):
        with pytest.raises(PipeflowError, match=r"is a step of another functional Workflow|"
                                                r"'nope' is not a step of this flow"):
            call()
    assert repr(flow) == "<pipeflow.functional.Workflow with steps ['base', 'scaled']>"
