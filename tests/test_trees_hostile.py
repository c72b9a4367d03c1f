"""Hostile input to pipeflow.trees: every bad value gets a clear pipeflow error, never a raw one."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3

import pytest

from pipeflow.errors import CycleError, ParameterError, TaskStoreError
from pipeflow.trees import TaskManager, TaskTreeNode, create_session, executor, run_sync
from pipeflow.trees import store as stores
from pipeflow.trees.executors import unregister

IDS = ("hostile_ok", "hostile_big", "hostile_sync_coro", "hostile_deep", "hostile_hugeint")


@pytest.fixture(autouse=True)
def _executors():
    @executor("hostile_ok")
    def ok(inputs):
        return {"ok": 1}

    @executor("hostile_big")
    def big(inputs):
        return {"x": "a" * (stores.INLINE_LIMIT + 10)}

    async def later():
        return {"never": 1}

    @executor("hostile_sync_coro")
    def sync_coro(inputs):
        return later()

    @executor("hostile_deep")
    def deep_result(inputs):
        return _deep(5000)

    @executor("hostile_hugeint")
    def huge_int(inputs):
        return {"n": 10 ** 5000}

    yield
    for i in IDS:
        unregister(i)


def _deep(levels):
    out: dict = {}
    cur = out
    for _ in range(levels):
        cur["a"] = {}
        cur = cur["a"]
    return out


@pytest.fixture
def tm(tmp_path):
    return TaskManager(create_session(tmp_path / "tasks.db"))


# -- fields of create_task and update_task --------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "match"), [
    ("progress", "abc", r"progress of task 'hostile_ok' must be a number from 0\.0 to 1\.0"),
    ("progress", math.nan, r"progress of task 'hostile_ok' must be a number from 0\.0 to 1\.0"),
    ("progress", 5, r"progress of task 'hostile_ok' must be a number from 0\.0 to 1\.0"),
    ("error", {"a": 1}, r"error of task 'hostile_ok' must be a string \(or None\)"),
    ("parent_id", 5, r"parent_id of task 'hostile_ok' must be a task id \(a string\)"),
    ("task_tree_id", [1], r"task_tree_id of task 'hostile_ok' must be a task id"),
    ("original_task_id", [1], r"original_task_id of task 'hostile_ok' must be a task id"),
    ("created_at", "yesterday", r"created_at of task 'hostile_ok' must be a datetime or ISO"),
    ("id", "\ud800", r"id of task 'hostile_ok' cannot be stored: '\\ud800' holds"),
    ("user_id", "u\udcff", r"user_id of task 'hostile_ok' cannot be stored"),
])
def test_a_bad_field_at_creation_is_a_parameter_error(tm, field, value, match):
    with pytest.raises(ParameterError, match=match):
        tm.task_repository.create_now("hostile_ok", **{field: value})


@pytest.mark.parametrize(("field", "value", "match"), [
    ("progress", "x", r"progress of task 'hostile_ok' \(t\) must be a number from 0\.0"),
    ("user_id", [1], r"user_id of task 'hostile_ok' \(t\) must be a string"),
    ("error", [1], r"error of task 'hostile_ok' \(t\) must be a string"),
    ("started_at", "nope", r"started_at of task 'hostile_ok' \(t\) must be a datetime or ISO"),
    ("origin_type", "bogus", r"origin_type of task 'hostile_ok' \(t\) must be one of create"),
    ("inputs", [1], r"inputs of task 'hostile_ok' \(t\) must be a dict"),
])
def test_a_bad_field_in_update_task_is_a_parameter_error_and_changes_nothing(tm, field, value,
                                                                            match):
    repo = tm.task_repository
    repo.create_now("hostile_ok", id="t", inputs={"a": 1})
    with pytest.raises(ParameterError, match=match):
        repo.update_now("t", **{field: value})
    t = repo.db.get("t")
    assert (t.progress, t.inputs, t.origin_type, t.user_id) == (0.0, {"a": 1}, "create", None)


def test_a_task_id_that_is_not_a_string_is_a_parameter_error(tm):
    with pytest.raises(ParameterError, match=r"a task id is a string, not 5"):
        tm.task_repository.update_now(5, priority=1)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"a task id is a string, not \['t'\]"):
        run_sync(tm.task_repository.get_task_by_id(["t"]))  # type: ignore[arg-type]


def test_update_task_refuses_a_parent_cycle(tm):
    repo = tm.task_repository
    repo.create_now("hostile_ok", id="a")
    repo.create_now("hostile_ok", id="b", parent_id="a")
    repo.create_now("hostile_ok", id="c", parent_id="b")
    with pytest.raises(CycleError, match=r"task 'hostile_ok' \(a\) would be its own ancestor: "
                                         r"a -> c -> b -> a\. "):
        repo.update_now("a", parent_id="c")
    assert repo.db.get("a").parent_id is None
    assert [n.task.id for n in repo.tree_of("a")] == ["a", "b", "c"]


# -- query_tasks ----------------------------------------------------------------------------------

def test_query_tasks_with_a_value_sqlite_cannot_compare_is_a_parameter_error(tm):
    repo = tm.task_repository
    repo.create_now("hostile_ok", id="q")
    with pytest.raises(ParameterError, match=r"query_tasks\(\) compares user_id with a string, "
                                             r"number or None, not \{'a': 1\}"):
        run_sync(repo.query_tasks(user_id={"a": 1}))
    with pytest.raises(ParameterError, match=r"limit of query_tasks\(\) must be a whole number"):
        run_sync(repo.query_tasks(limit="x"))  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"tasks cannot be looked up by '1=1; DROP"):
        run_sync(repo.query_tasks(**{"1=1; DROP TABLE tasks; --": 1}))
    assert [t.id for t in run_sync(repo.query_tasks())] == ["q"]


# -- the store -----------------------------------------------------------------------------------

def test_a_store_opened_through_a_symlink_is_the_same_store_with_the_same_results(tmp_path):
    real = tmp_path / "real.db"
    create_session(real)
    (tmp_path / "link.db").symlink_to(real)
    tm = TaskManager(create_session(tmp_path / "link.db"))
    t = tm.task_repository.create_now("hostile_big", id="big")
    run_sync(tm.distribute_task_tree(TaskTreeNode(t), progress=False))
    assert create_session(real) is create_session(tmp_path / "link.db")
    assert len(create_session(real).get("big").result["x"]) == stores.INLINE_LIMIT + 10
    assert not (tmp_path / "link.db.results").exists()


# -- executors ------------------------------------------------------------------------------------

def test_a_plain_executor_returning_a_coroutine_fails_saying_to_use_async_def(tm):
    t = tm.task_repository.create_now("hostile_sync_coro", id="sc")
    run_sync(tm.distribute_task_tree(TaskTreeNode(t), progress=False))
    row = tm.task_repository.db.get("sc")
    assert row.status == "failed"
    assert row.error.startswith(
        "executor 'hostile_sync_coro' is a plain function but returned a coroutine")
    assert "async def" in row.error


def test_inputs_nested_too_deep_or_with_a_huge_int_are_parameter_errors(tm):
    with pytest.raises(ParameterError, match=r"inputs of task 'hostile_ok' must be JSON .*: "
                                             r"inputs\['a'\].*\.\.\. nests dicts/lists more "
                                             r"than 500 levels deep"):
        tm.task_repository.create_now("hostile_ok", inputs=_deep(5000))
    with pytest.raises(ParameterError, match=r"inputs\['n'\] is an integer too long to write "
                                             r"as text \(over 4300 digits\)"):
        tm.task_repository.create_now("hostile_ok", inputs={"n": 10 ** 5000})
    assert tm.task_repository.create_now("hostile_ok", inputs=_deep(400)).inputs == _deep(400)
    assert tm.task_repository.create_now("hostile_ok", id="none", inputs=None).inputs == {}
    assert tm.task_repository.update_now("none", inputs=None).inputs == {}
    assert tm.task_repository.update_now("none", progress=None).progress == 0.0


def test_a_result_nested_too_deep_fails_clearly_and_a_huge_int_result_is_kept(tm):
    repo = tm.task_repository
    deep = repo.create_now("hostile_deep", id="deep")
    huge = repo.create_now("hostile_hugeint", id="huge")
    root = TaskTreeNode(deep)
    root.add_child(TaskTreeNode(huge))
    run_sync(tm.distribute_task_tree(root, progress=False))
    row = repo.db.get("deep")
    assert row.status == "failed"
    assert row.error.startswith("the result of task 'deep' (a dict) can be stored neither "
                                "as JSON nor pickled")
    assert repo.db.get("huge").status == "completed"
    assert repo.db.get("huge").result == {"n": 10 ** 5000}


def test_cancel_task_with_a_message_that_is_not_text_is_a_parameter_error(tm):
    tm.task_repository.create_now("hostile_ok", id="c")
    with pytest.raises(ParameterError, match=r"error_message of cancel_task\(\) is the text"):
        tm.cancel_now("c", error_message=["why"])  # type: ignore[arg-type]
    assert tm.task_repository.db.get("c").status == "pending"


def test_a_store_deleted_while_a_tree_runs_is_reported_not_silently_written_to(tmp_path):
    path = tmp_path / "gone.db"
    tm = TaskManager(create_session(path))

    @executor("hostile_deleter")
    def deleter(inputs):
        path.unlink()
        return {"ok": 1}

    try:
        t = tm.task_repository.create_now("hostile_deleter")
        with pytest.raises(TaskStoreError, match=r"gone\.db' was deleted or replaced while this "
                                                 r"process used it"):
            run_sync(tm.distribute_task_tree(TaskTreeNode(t), progress=False))
    finally:
        unregister("hostile_deleter")
    # then the store at that path is used again: a new, empty one
    assert create_session(path).ids() == []
    assert tm.task_repository.create_now("hostile_ok", id="again").id == "again"
    assert path.exists()


def test_a_duplicate_id_says_so_without_the_sqlite_error_attached(tm):
    tm.task_repository.create_now("hostile_ok", id="dup")
    with pytest.raises(ParameterError, match=r"a task with id 'dup' exists already") as info:
        tm.task_repository.create_now("hostile_ok", id="dup")
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(("params", "match"), [
    ({"timeout": "x"}, r"params\['timeout'\] of task 'hostile_ok' must be a number of seconds, "
                       r"more than 0, or None, not 'x'"),
    ({"retries": -5}, r"params\['retries'\] of task 'hostile_ok' must be a whole number >= 0"),
    ({"retry_delay": -1}, r"params\['retry_delay'\] of task 'hostile_ok' must be a number"),
])
def test_bad_run_overrides_in_params_are_refused_at_creation_and_before_a_run(tm, params, match):
    repo = tm.task_repository
    with pytest.raises(ParameterError, match=match):
        repo.create_now("hostile_ok", params=params)
    # a task stored another way (an older store, the CLI, a copy) is refused before running
    t = repo.create_now("hostile_ok", id="p")
    repo.db.update("p", {"params": params})
    with pytest.raises(ParameterError, match=match.replace("'hostile_ok'", r"'hostile_ok' \(p\)")):
        run_sync(tm.distribute_task_tree(TaskTreeNode(t), progress=False))
    assert repo.db.get("p").status == "pending"


def test_workers_that_is_not_a_number_is_a_parameter_error_before_anything_runs(tm):
    t = tm.task_repository.create_now("hostile_ok", id="w")
    with pytest.raises(ParameterError, match=r"workers must be a whole number of at least 1, "
                                             r"not '2'"):
        run_sync(tm.distribute_task_tree(TaskTreeNode(t), workers="2"))  # type: ignore[arg-type]
    assert tm.task_repository.db.get("w").status == "pending"


def test_an_executor_raising_system_exit_fails_its_task_and_says_so(tm):
    @executor("hostile_exit")
    def leave(inputs):
        raise SystemExit(3)

    try:
        t = tm.task_repository.create_now("hostile_exit", id="x")
        after = tm.task_repository.create_now("hostile_ok", id="after")
        root = TaskTreeNode(t)
        root.add_child(TaskTreeNode(after))
        run_sync(tm.distribute_task_tree(root, progress=False))
    finally:
        unregister("hostile_exit")
    row = tm.task_repository.db.get("x")
    assert (row.status, row.error) == ("failed", "SystemExit: 3")
    assert tm.task_repository.db.get("after").status == "completed"


def test_hooks_that_are_not_functions_are_refused_by_the_task_manager(tmp_path):
    db = create_session(tmp_path / "tasks.db")
    with pytest.raises(ParameterError, match=r"pre_hooks of TaskManager holds 5, which is not "
                                             r"a function: each is called as hook\(task\)"):
        TaskManager(db, pre_hooks=[5])
    with pytest.raises(ParameterError, match=r"post_hooks of TaskManager is a list of "
                                             r"functions, not <built-in function print>"):
        TaskManager(db, post_hooks=print)  # type: ignore[arg-type]
    assert TaskManager(db, pre_hooks=(print,)).pre_hooks == [print]


def test_get_tasks_by_ids_with_one_id_string_is_refused_not_read_letter_by_letter(tm):
    repo = tm.task_repository
    for i in ("A", "B", "AB"):
        repo.create_now("hostile_ok", id=i)
    with pytest.raises(ParameterError, match=r"get_tasks_by_ids\(\) takes a list of ids, not "
                                             r"the single id 'AB'"):
        run_sync(repo.get_tasks_by_ids("AB"))
    assert [t.id for t in run_sync(repo.get_tasks_by_ids(["AB", "nope", "A"]))] == ["AB", "A"]


def test_a_deep_parent_chain_is_checked_for_cycles_quickly(tm):
    repo = tm.task_repository
    repo.create_now("hostile_ok", id="n0")
    for i in range(1, 300):
        repo.create_now("hostile_ok", id=f"n{i}", parent_id=f"n{i - 1}")
    with pytest.raises(CycleError, match=r"\(n0\) would be its own ancestor: n0 -> n299 -> "
                                         r"n298 -> "):
        repo.update_now("n0", parent_id="n299")
    repo.create_now("hostile_ok", id="other")
    assert repo.update_now("n0", parent_id="other").parent_id == "other"
    assert repo.root_of("n299").id == "other"


def test_a_store_changed_by_another_program_says_what_to_check(tmp_path):
    path = tmp_path / "other.db"
    repo = TaskManager(create_session(path)).task_repository
    repo.create_now("hostile_ok", id="j")
    with contextlib.closing(sqlite3.connect(path)) as other:  # another program's doing
        other.execute("DROP TABLE tasks")
    for call in (repo.db.ids, lambda: repo.create_now("hostile_ok")):
        with pytest.raises(TaskStoreError, match=r"other\.db'.*no such table: tasks\. Check "
                                                 r"that the file is a pipeflow task store that "
                                                 r"nothing else overwrote"):
            call()


@pytest.mark.parametrize("kind", ["plain", "cancelable", "async"])
def test_an_executor_running_a_tree_that_holds_its_own_task_fails_instead_of_hanging(tm, kind):
    repo = tm.task_repository

    def body(inputs):
        inner = repo.create_now("hostile_ok", id=f"inner-{kind}")
        done = run_sync(tm.distribute_task_tree(TaskTreeNode(inner), progress=False))
        assert done.task.status == "completed"  # a run of other tasks is fine
        me = repo.db.get(inputs["me"])
        run_sync(tm.distribute_task_tree(TaskTreeNode(me), progress=False))

    async def abody(inputs):
        inner = repo.create_now("hostile_ok", id=f"inner-{kind}")
        done = await tm.distribute_task_tree(TaskTreeNode(inner), progress=False)
        assert done.task.status == "completed"
        dependent = repo.create_now("hostile_ok", dependencies=[inputs["me"]])
        await tm.distribute_task_tree(TaskTreeNode(dependent), progress=False)

    func = abody if kind == "async" else body
    executor("hostile_self", cancelable=kind == "cancelable")(func)
    try:
        t = repo.create_now("hostile_self", id="me", inputs={"me": "me"})
        run_sync(asyncio.wait_for(tm.distribute_task_tree(TaskTreeNode(t), progress=False), 20))
    finally:
        unregister("hostile_self")
    row = repo.db.get("me")
    assert row.status == "failed"
    held = "depends on that task" if kind == "async" else "holds that task"
    assert row.error.startswith(f"the executor of task 'hostile_self' (me) started a run of "
                                f"a tree that {held}: the run would wait for the task to "
                                f"finish, and the task for the run, for ever.")
    assert repo.db.get(f"inner-{kind}").status == "completed"
