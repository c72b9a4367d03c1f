"""TaskCreator: copies, links, archives and mixed trees made from stored task trees."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from pipeflow.errors import LinkDeniedError, ParameterError, TaskNotFoundError, TaskStoreError
from pipeflow.trees import TaskCreator, TaskManager, TaskTreeNode, create_session, executor
from pipeflow.trees import executors as registry

CALLS: list[str] = []
FAIL: set[str] = set()


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def executors():
    CALLS.clear()
    FAIL.clear()

    @executor("cr_step")
    def step(inputs):
        CALLS.append(inputs.get("label", "?"))
        if inputs.get("label") in FAIL:
            raise RuntimeError(f"{inputs['label']} broke")
        return {"out_" + inputs.get("label", "?"): inputs.get("n", 0) + 1}

    @executor("cr_frame")
    def frame(inputs):
        CALLS.append("frame")
        return pd.DataFrame({"x": [1, 2, 3]})

    @executor("cr_rows")
    def rows(inputs):
        CALLS.append("rows")
        frames = [v for v in inputs.values() if isinstance(v, pd.DataFrame)]
        return {"rows": sum(len(f) for f in frames)}

    yield
    for name in ("cr_step", "cr_frame", "cr_rows"):
        registry.unregister(name)


@pytest.fixture
def db(tmp_path):
    return create_session(tmp_path / "t.db")


@pytest.fixture
def tm(db):
    return TaskManager(db, workers=2)


@pytest.fixture
def creator(db):
    return TaskCreator(db)


def make_tree(tm, user_id="u1", n=0):
    """root <- (a, b); b depends on a; root depends on b (a chain under one root)."""
    repo = tm.task_repository

    async def build():
        root = await repo.create_task(name="cr_step", user_id=user_id,
                                      inputs={"label": "root", "n": n})
        a = await repo.create_task(name="cr_step", user_id=user_id, parent_id=root.id,
                                   priority=1, inputs={"label": "a"})
        b = await repo.create_task(name="cr_step", user_id=user_id, parent_id=root.id,
                                   inputs={"label": "b"},
                                   dependencies=[{"id": a.id, "required": True}])
        root = await repo.update_task(root.id, dependencies=[{"id": b.id, "required": True}])
        return root, a, b

    return run(build())


def node_of(repo, task):
    return run(repo.build_task_tree(task))


def ran(tm, tree):
    return run(tm.distribute_task_tree(tree))


# -- copy -----------------------------------------------------------------------------------------

def test_copy_gets_new_ids_remapped_structure_and_dependencies(tm, creator):
    root, a, b = make_tree(tm)
    copy = run(creator.from_copy(root))
    tasks = copy.to_list()
    assert len(tasks) == 3
    assert not {t.id for t in tasks} & {root.id, a.id, b.id}
    c = {t.original_task_id: t for t in tasks}
    assert copy.task is not None and copy.task.id == c[root.id].id
    assert c[root.id].parent_id is None
    assert c[a.id].parent_id == c[root.id].id and c[b.id].parent_id == c[root.id].id
    assert c[b.id].dependencies == [{"id": c[a.id].id, "required": True}]
    assert c[root.id].dependencies == [{"id": c[b.id].id, "required": True}]
    assert [n.task.original_task_id for n in copy.children] == [a.id, b.id]
    assert {t.origin_type for t in tasks} == {"copy"}
    assert {t.task_tree_id for t in tasks} == {c[root.id].id}
    assert c[root.id].has_children and not c[a.id].has_children
    assert (c[a.id].name, c[a.id].user_id, c[a.id].priority, c[a.id].inputs) == (
        "cr_step", "u1", 1, {"label": "a"})
    stored = run(tm.task_repository.get_task_by_id(c[b.id].id))
    assert stored is not None and stored.dependencies == c[b.id].dependencies


def test_copy_of_a_completed_tree_is_reset_and_runs_fully_again(tm, creator):
    root, a, b = make_tree(tm)
    ran(tm, node_of(tm.task_repository, root))
    assert CALLS == ["a", "b", "root"]
    copy = run(creator.from_copy(root))
    for t in copy.to_list():
        assert (t.status, t.result, t.error, t.progress) == ("pending", None, None, 0.0)
        assert (t.started_at, t.completed_at) == (None, None)
        assert t.created_at is not None
    CALLS.clear()
    done = ran(tm, copy)
    assert CALLS == ["a", "b", "root"]
    assert done.calculate_status() == "completed"
    assert done.task.result == {"out_root": 1}
    source = run(tm.task_repository.get_task_by_id(root.id))
    assert source.status == "completed" and source.origin_type == "create"


def test_copy_of_a_completed_task_drops_inputs_merged_under_dependency_ids(tm, creator):
    repo = tm.task_repository

    @executor("cr_num")
    def num(inputs):
        return 7

    try:
        first = run(repo.create_task(name="cr_num"))
        second = run(repo.create_task(name="cr_step", parent_id=first.id,
                                      inputs={"label": "s"}, dependencies=[first.id]))
        ran(tm, node_of(repo, first))
        merged = run(repo.get_task_by_id(second.id)).inputs
        assert merged == {"label": "s", first.id: 7}
        copy = run(creator.from_copy(first))
        assert copy.children[0].task.inputs == {"label": "s"}
    finally:
        registry.unregister("cr_num")


def test_copy_of_a_failed_tree_runs_again_and_the_source_stays_failed(tm, creator):
    root, a, b = make_tree(tm)
    FAIL.add("b")
    ran(tm, node_of(tm.task_repository, root))
    got = {t.id: t for t in run(tm.task_repository.get_tasks_by_ids([root.id, a.id, b.id]))}
    assert (got[a.id].status, got[b.id].status, got[root.id].status) == (
        "completed", "failed", "pending")
    copy = run(creator.from_copy(root))
    assert {t.status for t in copy.to_list()} == {"pending"}
    assert {t.error for t in copy.to_list()} == {None}
    FAIL.clear()
    CALLS.clear()
    ran(tm, copy)
    assert CALLS == ["a", "b", "root"]
    assert copy.calculate_status() == "completed"
    assert run(tm.task_repository.get_task_by_id(b.id)).status == "failed"


def test_copy_marks_the_source_has_references_in_the_store(tm, creator):
    root, a, b = make_tree(tm)
    assert not root.has_references
    run(creator.from_copy(root))
    got = run(tm.task_repository.get_tasks_by_ids([root.id, a.id, b.id]))
    assert [t.has_references for t in got] == [True, True, True]


def test_copy_of_a_copy_points_to_the_copy_it_was_made_from(tm, creator):
    root, _, _ = make_tree(tm)
    first = run(creator.from_copy(root))
    second = run(creator.from_copy(first.task))
    assert second.task.original_task_id == first.task.id
    assert second.children[0].task.original_task_id == first.children[0].task.id
    assert run(tm.task_repository.get_task_by_id(first.task.id)).has_references


def test_repeated_copies_of_one_source_keep_their_dependencies(tm, creator):
    root, a, b = make_tree(tm)
    copies = [run(creator.from_copy(root)) for _ in range(3)]
    for copy in copies:
        c = {t.original_task_id: t for t in copy.to_list()}
        assert c[b.id].dependencies == [{"id": c[a.id].id, "required": True}]
    source = run(tm.task_repository.get_task_by_id(b.id))
    assert source.dependencies == [{"id": a.id, "required": True}]


def test_copy_keeps_optional_dependencies_optional(tm, creator):
    repo = tm.task_repository
    root = run(repo.create_task(name="cr_step", inputs={"label": "r"}))
    kid = run(repo.create_task(name="cr_step", parent_id=root.id,
                               dependencies=[{"id": root.id, "required": False}]))
    copy = run(creator.from_copy(root))
    assert copy.children[0].task.dependencies == [{"id": copy.task.id, "required": False}]
    assert kid.id != copy.children[0].task.id


def test_a_root_copy_drops_dependencies_on_other_stored_trees(tm, creator):
    repo = tm.task_repository
    other = run(repo.create_task(name="cr_step", inputs={"label": "other"}))
    root = run(repo.create_task(name="cr_step", inputs={"label": "r"}))
    kid = run(repo.create_task(name="cr_step", parent_id=root.id, inputs={"label": "k"},
                               dependencies=[other.id, root.id]))
    copy = run(creator.from_copy(root))
    assert len(copy) == 2
    assert copy.children[0].task.dependencies == [{"id": copy.task.id, "required": True}]
    assert run(repo.get_task_by_id(kid.id)).dependencies[0]["id"] == other.id
    ran(tm, copy)
    assert CALLS == ["r", "k"]  # the other tree was not run


def test_not_recursive_copies_the_task_alone_without_parent_or_dependencies(tm, creator):
    root, a, b = make_tree(tm)
    one = run(creator.from_copy(b, _recursive=False))
    assert len(one) == 1
    assert (one.task.original_task_id, one.task.parent_id, one.task.dependencies) == (
        b.id, None, [])
    assert one.task.task_tree_id == one.task.id


def subtree_case(tm):
    """root <- (x <- (s <- s1), y); s1 depends on x (outside s's subtree); y depends on s."""
    repo = tm.task_repository

    async def build():
        root = await repo.create_task(name="cr_step", inputs={"label": "root"})
        x = await repo.create_task(name="cr_step", parent_id=root.id, inputs={"label": "x"})
        s = await repo.create_task(name="cr_step", parent_id=x.id, inputs={"label": "s"})
        s1 = await repo.create_task(name="cr_step", parent_id=s.id, inputs={"label": "s1"},
                                    dependencies=[x.id])
        y = await repo.create_task(name="cr_step", parent_id=root.id, inputs={"label": "y"},
                                   dependencies=[s.id])
        return root, x, s, s1, y

    return run(build())


def test_a_subtree_copy_includes_the_tasks_it_depends_on(tm, creator):
    root, x, s, s1, y = subtree_case(tm)
    copy = run(creator.from_copy(s))
    c = {t.original_task_id: t for t in copy.to_list()}
    assert set(c) == {s.id, s1.id, x.id}
    assert copy.task.id == c[s.id].id and copy.task.parent_id is None
    # x's parent was not copied: its copy goes under the new root
    assert c[x.id].parent_id == c[s.id].id and c[s1.id].parent_id == c[s.id].id
    assert c[s1.id].dependencies == [{"id": c[x.id].id, "required": True}]
    ran(tm, copy)
    assert sorted(CALLS) == ["s", "s1", "x"]


def test_a_subtree_copy_with_an_outside_dependency_and_no_auto_include_is_refused(
        tm, creator, db):
    root, x, s, s1, y = subtree_case(tm)
    before = len(db.ids())
    with pytest.raises(ParameterError, match=r"task 'cr_step' \(" + s1.id + r"\) depends on "
                       r"'cr_step' \(" + x.id + r"\), which is outside it\. Pass "
                       r"_auto_include_deps=True"):
        run(creator.from_copy(s, _auto_include_deps=False))
    assert len(db.ids()) == before
    # a subtree without outside dependencies copies as it is
    alone = run(creator.from_copy(s1, _auto_include_deps=False, _recursive=False))
    assert alone.task.dependencies == []


def test_include_dependents_adds_the_tasks_depending_on_the_copied_ones(tm, creator):
    root, x, s, s1, y = subtree_case(tm)
    copy = run(creator.from_copy(s, _include_dependents=True))
    c = {t.original_task_id: t for t in copy.to_list()}
    assert set(c) == {s.id, s1.id, x.id, y.id}
    assert c[y.id].dependencies == [{"id": c[s.id].id, "required": True}]
    assert c[y.id].parent_id == copy.task.id
    without = run(creator.from_copy(s))
    assert y.id not in {t.original_task_id for t in without.to_list()}


def test_include_dependents_follows_dependents_of_dependents(tm, creator):
    root, x, s, s1, y = subtree_case(tm)
    z = run(tm.task_repository.create_task(name="cr_step", parent_id=x.id,
                                           inputs={"label": "z"}, dependencies=[y.id]))
    copy = run(creator.from_copy(s, _include_dependents=True))
    c = {t.original_task_id: t for t in copy.to_list()}
    assert set(c) == {s.id, s1.id, x.id, y.id, z.id}
    assert c[z.id].dependencies == [{"id": c[y.id].id, "required": True}]
    assert c[z.id].parent_id == c[x.id].id  # its parent was taken too: kept under it
    ran(tm, copy)
    assert CALLS.index("y") > CALLS.index("s") and CALLS.index("z") > CALLS.index("y")


def test_copy_overrides_apply_to_every_task_and_are_checked(tm, creator):
    root, a, b = make_tree(tm)
    copy = run(creator.from_copy(root, user_id="u2", priority=0))
    assert {(t.user_id, t.priority) for t in copy.to_list()} == {("u2", 0)}
    with pytest.raises(ParameterError, match=r"unknown keyword 'prority'\. Did you mean "
                                             r"'priority'\?"):
        run(creator.from_copy(root, prority=1))
    with pytest.raises(ParameterError, match=r"priority of the copy override must be 0"):
        run(creator.from_copy(root, priority=7))
    with pytest.raises(ParameterError, match=r"inputs of the copy override must be JSON"):
        run(creator.from_copy(root, inputs={"f": object()}))
    with pytest.raises(ParameterError, match=r"from_copy\(\) sets 'status' itself"):
        run(creator.from_copy(root, status="completed"))
    with pytest.raises(ParameterError, match=r"unknown keyword '_recursiv'\. Did you mean "
                                             r"'_recursive'\?"):
        run(creator.from_copy(root, _recursiv=False))


def test_copy_refuses_what_is_not_a_stored_task(tm, creator):
    with pytest.raises(TaskNotFoundError, match=r"no task with id 'nope'"):
        run(creator.from_copy("nope"))
    with pytest.raises(ParameterError, match=r"takes a task .* or its id, not 3"):
        run(creator.from_copy(3))
    with pytest.raises(ParameterError, match=r"_recursive is True or False, not 'no'"):
        run(creator.from_copy("nope", _recursive="no"))
    with pytest.raises(ParameterError, match=r"needs the session from create_session"):
        TaskCreator("t.db")


def test_copy_accepts_a_task_id(tm, creator):
    root, _, _ = make_tree(tm)
    assert len(run(creator.from_copy(root.id))) == 3


# -- unsaved --------------------------------------------------------------------------------------

def test_unsaved_copy_writes_nothing_and_can_be_saved_once_after_edits(tm, creator, db):
    root, a, b = make_tree(tm)
    before = set(db.ids())
    draft = run(creator.from_copy(root, _save=False))
    assert set(db.ids()) == before
    assert not run(tm.task_repository.get_task_by_id(root.id)).has_references
    assert {t.origin_type for t in draft.to_list()} == {"copy"}
    assert all(run(tm.task_repository.get_task_by_id(t.id)) is None for t in draft.to_list())
    with pytest.raises(TaskNotFoundError, match=r"not in the task store"):
        ran(tm, draft)
    draft.task.inputs = {"label": "edited"}
    saved = run(creator.save_task_tree(draft))
    assert set(db.ids()) == before | {t.id for t in draft.to_list()}
    assert saved.task.inputs == {"label": "edited"}
    assert run(tm.task_repository.get_task_by_id(root.id)).has_references
    ran(tm, saved)
    assert CALLS == ["a", "b", "edited"]
    with pytest.raises(ParameterError, match=r"is stored already"):
        run(creator.save_task_tree(draft))


def test_save_task_tree_checks_edited_fields(tm, creator):
    root, _, _ = make_tree(tm)
    draft = run(creator.from_copy(root, _save=False))
    draft.task.priority = 9
    with pytest.raises(ParameterError, match=r"priority of task 'cr_step' .* must be 0"):
        run(creator.save_task_tree(draft))
    draft.task.priority = 2
    draft.task.dependencies = [{"id": "missing", "required": True}]
    with pytest.raises(TaskNotFoundError, match=r"task 'cr_step' \(.*\) names the task "
                                                r"'missing' \(a dependency or its parent\), "
                                                r"which is neither in this tree nor in the "
                                                r"task store"):
        run(creator.save_task_tree(draft))


def test_an_unsaved_mixed_tree_saves_its_links_without_results(tm, creator, db):
    root, a, b = make_tree(tm)
    ran(tm, node_of(tm.task_repository, root))
    draft = run(creator.from_mixed(root, _save=False, _link_task_ids=[a.id]))
    link = next(t for t in draft.to_list() if t.origin_type == "link")
    assert link.result == {"out_a": 1}  # read (resolved) before saving
    saved = run(creator.save_task_tree(draft))
    assert db._read("SELECT result FROM tasks WHERE id = ?", (link.id,)) == [(None,)]
    CALLS.clear()
    ran(tm, saved)
    assert CALLS == ["b", "root"]


# -- link -----------------------------------------------------------------------------------------

def test_link_of_a_completed_tree_shares_its_results(tm, creator):
    root, a, b = make_tree(tm)
    ran(tm, node_of(tm.task_repository, root))
    link = run(creator.from_link(root))
    c = {t.original_task_id: t for t in link.to_list()}
    assert set(c) == {root.id, a.id, b.id}
    assert not {t.id for t in link.to_list()} & {root.id, a.id, b.id}
    assert {t.origin_type for t in link.to_list()} == {"link"}
    assert {(t.status, t.progress, t.error) for t in link.to_list()} == {
        ("completed", 1.0, None)}
    done_a = run(tm.task_repository.get_task_by_id(a.id))
    assert (c[a.id].started_at, c[a.id].completed_at) == (done_a.started_at,
                                                         done_a.completed_at)
    assert link.calculate_status() == "completed" and link.calculate_progress() == 1.0
    assert c[b.id].dependencies == [{"id": c[a.id].id, "required": True}]
    assert c[a.id].parent_id == link.task.id and link.task.parent_id is None
    # the row holds no data of its own ...
    raw = tm.db._read("SELECT inputs, params, schemas, result, result_file FROM tasks "
                      "WHERE id = ?", (c[a.id].id,))
    assert raw == [("{}", None, None, None, None)]
    assert (c[a.id].params, c[a.id].schemas) == (None, None)
    # ... and reading its result gives the original's
    got = run(tm.task_repository.get_task_by_id(c[a.id].id))
    assert got.result == {"out_a": 1}
    assert got.to_dict()["result"] == {"out_a": 1}
    assert run(tm.task_repository.get_task_by_id(a.id)).has_references
    CALLS.clear()
    ran(tm, link)  # nothing to run: every link is completed
    assert CALLS == []
    draft = run(creator.from_link(a, _save=False))  # unsaved, it reads the original's too
    assert draft.task.result == {"out_a": 1}


def test_a_copy_of_a_link_takes_the_originals_data_and_runs(tm, creator):
    root, a, b = make_tree(tm)
    ran(tm, node_of(tm.task_repository, root))
    link = run(creator.from_link(root))
    again = run(creator.from_copy(link.task))
    c = {n.task.inputs["label"]: n.task for n in again}
    assert set(c) == {"root", "a", "b"}
    assert c["a"].original_task_id == a.id  # a link stands for its original
    assert {t.status for t in again.to_list()} == {"pending"}
    CALLS.clear()
    ran(tm, again)
    assert CALLS == ["a", "b", "root"]


def test_link_of_a_link_points_to_the_original(tm, creator):
    root, a, b = make_tree(tm)
    ran(tm, node_of(tm.task_repository, root))
    first = run(creator.from_link(root))
    second = run(creator.from_link(first.task))
    assert second.task.original_task_id == root.id
    assert second.task.result == {"out_root": 1}


def test_link_refuses_a_tree_that_did_not_complete(tm, creator, db):
    root, a, b = make_tree(tm)
    FAIL.add("b")
    ran(tm, node_of(tm.task_repository, root))
    before = len(db.ids())
    with pytest.raises(ParameterError, match=r"only a fully completed task tree can be "
                       r"linked: task 'cr_step' \(" + b.id + r"\) is failed \(and 1 other "
                       r"task\(s\) are not completed\)\. Run the tree"):
        run(creator.from_link(root))
    pending = make_tree(tm)[0]
    with pytest.raises(ParameterError, match=r"can be linked: task 'cr_step' \(.*\) is "
                                             r"pending"):
        run(creator.from_link(pending))
    assert len(db.ids()) == before + 3


def test_link_user_id_rule(tm, creator):
    root, a, b = make_tree(tm, user_id="u1")
    ran(tm, node_of(tm.task_repository, root))
    with pytest.raises(LinkDeniedError, match=r"Deny linking to a different user's task: "
                       r"task 'cr_step' \(.*\) belongs to user 'u1', not 'u2'"):
        run(creator.from_link(root, user_id="u2"))
    assert issubclass(LinkDeniedError, ValueError)
    same = run(creator.from_link(root, user_id="u1"))
    assert {t.user_id for t in same.to_list()} == {"u1"}
    kept = run(creator.from_link(root))
    assert {t.user_id for t in kept.to_list()} == {"u1"}
    # one task of another user in the tree is enough to refuse
    run(tm.task_repository.update_task(b.id, user_id="u9"))
    with pytest.raises(LinkDeniedError, match=r"belongs to user 'u9', not 'u1'"):
        run(creator.from_link(root, user_id="u1"))


def test_link_refuses_data_overrides(tm, creator):
    root, _, _ = make_tree(tm)
    ran(tm, node_of(tm.task_repository, root))
    with pytest.raises(ParameterError, match=r"from_link\(\) cannot set inputs: a link holds "
                                             r"no inputs of its own"):
        run(creator.from_link(root, inputs={"x": 1}))
    link = run(creator.from_link(root, priority=3))
    assert {t.priority for t in link.to_list()} == {3}


def test_link_of_a_dataframe_result_reads_the_original_file(tm, creator, db):
    repo = tm.task_repository
    src = run(repo.create_task(name="cr_frame"))
    user = run(repo.create_task(name="cr_rows", parent_id=src.id, dependencies=[src.id]))
    ran(tm, node_of(repo, src))
    assert run(repo.get_task_by_id(user.id)).result == {"rows": 3}
    link = run(creator.from_link(src))
    got = run(repo.get_task_by_id(link.task.id))
    pd.testing.assert_frame_equal(got.result, pd.DataFrame({"x": [1, 2, 3]}))
    assert len(list(db.results_dir.iterdir())) == 1  # no second file: the link reads the first


def test_a_link_whose_original_was_deleted_says_so(tm, creator):
    repo = tm.task_repository
    src = run(repo.create_task(name="cr_step", inputs={"label": "solo"}))
    ran(tm, TaskTreeNode(src))
    link = run(creator.from_link(src))
    assert run(repo.delete_task(src.id))
    got = run(repo.get_task_by_id(link.task.id))
    with pytest.raises(TaskStoreError, match=r"is a link to task '" + src.id + r"', which is "
                                             r"no longer in the task store"):
        _ = got.result


# -- archive --------------------------------------------------------------------------------------

def test_archive_keeps_state_and_data_as_a_read_only_copy(tm, creator):
    root, a, b = make_tree(tm)
    ran(tm, node_of(tm.task_repository, root))
    source = {t.id: t for t in run(tm.task_repository.get_tasks_by_ids([root.id, a.id, b.id]))}
    arc = run(creator.from_archive(root))
    c = {t.original_task_id: t for t in arc.to_list()}
    assert set(c) == {root.id, a.id, b.id}
    assert {t.origin_type for t in arc.to_list()} == {"archive"}
    for old, new in c.items():
        s = source[old]
        assert new.id != old
        assert (new.status, new.result, new.progress, new.inputs) == (
            s.status, s.result, s.progress, s.inputs)
        assert (new.started_at, new.completed_at) == (s.started_at, s.completed_at)
    assert c[b.id].dependencies == [{"id": c[a.id].id, "required": True}]
    with pytest.raises(ParameterError, match=r"is an archive: archives are read-only"):
        run(tm.task_repository.update_task(c[a.id].id, status="pending"))
    CALLS.clear()
    ran(tm, arc)  # never re-runs
    assert CALLS == []
    assert run(tm.task_repository.get_task_by_id(c[a.id].id)).completed_at == (
        source[a.id].completed_at)


def test_archive_refuses_an_unfinished_tree_and_takes_no_overrides(tm, creator):
    root, a, b = make_tree(tm)
    with pytest.raises(ParameterError, match=r"only a fully completed task tree can be "
                                             r"archived: task 'cr_step' \(" + root.id):
        run(creator.from_archive(root))
    with pytest.raises(TypeError):
        run(creator.from_archive(root, user_id="u2"))


def test_archive_of_a_dataframe_result_is_frozen_in_its_own_file(tm, creator, db):
    repo = tm.task_repository
    src = run(repo.create_task(name="cr_frame"))
    ran(tm, TaskTreeNode(src))
    arc = run(creator.from_archive(src))
    assert len(list(db.results_dir.iterdir())) == 2
    # the source runs again with another result; the archive keeps the old one
    run(repo.update_task(src.id, status="pending"))

    @executor("cr_frame")
    def frame(inputs):
        return pd.DataFrame({"x": [9]})

    ran(tm, TaskTreeNode(run(repo.get_task_by_id(src.id))))
    pd.testing.assert_frame_equal(run(repo.get_task_by_id(src.id)).result,
                                  pd.DataFrame({"x": [9]}))
    pd.testing.assert_frame_equal(run(repo.get_task_by_id(arc.task.id)).result,
                                  pd.DataFrame({"x": [1, 2, 3]}))


def test_a_copy_of_an_archive_runs_again(tm, creator):
    root, _, _ = make_tree(tm)
    ran(tm, node_of(tm.task_repository, root))
    arc = run(creator.from_archive(root))
    again = run(creator.from_copy(arc.task))
    assert {t.status for t in again.to_list()} == {"pending"}
    assert again.task.original_task_id == arc.task.id
    CALLS.clear()
    ran(tm, again)
    assert CALLS == ["a", "b", "root"]


# -- mixed ----------------------------------------------------------------------------------------

def test_mixed_links_only_the_ids_named_and_copies_the_rest(tm, creator):
    root, a, b = make_tree(tm)
    ran(tm, node_of(tm.task_repository, root))
    mix = run(creator.from_mixed(root, _link_task_ids=[a.id]))
    c = {t.original_task_id: t for t in mix.to_list()}
    assert (c[a.id].origin_type, c[b.id].origin_type, c[root.id].origin_type) == (
        "link", "copy", "copy")
    assert (c[a.id].status, c[b.id].status, c[root.id].status) == (
        "completed", "pending", "pending")
    assert c[b.id].dependencies == [{"id": c[a.id].id, "required": True}]
    CALLS.clear()
    ran(tm, mix)
    assert CALLS == ["b", "root"]  # the linked task is not run again
    assert run(tm.task_repository.get_task_by_id(c[b.id].id)).inputs == {
        "label": "b", "out_a": 1}


def test_mixed_copy_gets_a_linked_dataframe_as_input(tm, creator):
    repo = tm.task_repository
    src = run(repo.create_task(name="cr_frame"))
    user = run(repo.create_task(name="cr_rows", parent_id=src.id, dependencies=[src.id]))
    ran(tm, node_of(repo, src))
    mix = run(creator.from_mixed(src, _link_task_ids=[src.id]))
    CALLS.clear()
    ran(tm, mix)
    assert CALLS == ["rows"]
    assert run(repo.get_task_by_id(mix.children[0].task.id)).result == {"rows": 3}
    assert user.id != mix.children[0].task.id


def test_mixed_user_id_rule_applies_to_the_linked_tasks(tm, creator):
    root, a, b = make_tree(tm, user_id="u1")
    ran(tm, node_of(tm.task_repository, root))
    with pytest.raises(LinkDeniedError, match=r"different user's task: task 'cr_step' \("
                                              + a.id + r"\) belongs to user 'u1', not 'u2'"):
        run(creator.from_mixed(root, _link_task_ids=[a.id], user_id="u2"))
    # no links: any user may copy
    mine = run(creator.from_mixed(root, user_id="u2"))
    assert {(t.user_id, t.origin_type) for t in mine.to_list()} == {("u2", "copy")}
    mine = run(creator.from_mixed(root, _link_task_ids=[a.id], user_id="u1",
                                  inputs={"label": "z"}))
    c = {t.original_task_id: t for t in mine.to_list()}
    assert c[root.id].inputs == {"label": "z"}
    assert run(tm.task_repository.get_task_by_id(c[a.id].id)).result == {"out_a": 1}


def test_mixed_refuses_links_to_unfinished_or_unknown_tasks(tm, creator):
    root, a, b = make_tree(tm)
    with pytest.raises(ParameterError, match=r"can be linked: task 'cr_step' \(" + a.id
                       + r"\) is pending"):
        run(creator.from_mixed(root, _link_task_ids=[a.id]))
    with pytest.raises(ParameterError, match=r"_link_task_ids names 'zzz', which is not "
                                             r"among the 3 task\(s\) of the new tree"):
        run(creator.from_mixed(root, _link_task_ids=["zzz"]))
    with pytest.raises(ParameterError, match=r"_link_task_ids is a list of task ids"):
        run(creator.from_mixed(root, _link_task_ids=a.id))
    # unfinished tasks may be copied in a mixed tree
    assert {t.origin_type for t in run(creator.from_mixed(root)).to_list()} == {"copy"}


# -- size -----------------------------------------------------------------------------------------

def test_a_50_task_tree_copies_in_one_transaction(tm, creator, db, monkeypatch):
    repo = tm.task_repository
    root = run(repo.create_task(name="cr_step", inputs={"label": "t0"}))
    prev = root
    for i in range(1, 50):
        prev = run(repo.create_task(name="cr_step", parent_id=root.id, inputs={"label": f"t{i}"},
                                    dependencies=[prev.id]))
    ran(tm, node_of(repo, root))
    writes = []
    real = type(db)._tx

    def counting(self):
        writes.append(1)
        return real(self)

    monkeypatch.setattr(type(db), "_tx", counting)
    copy = run(creator.from_copy(root))
    assert len(writes) == 1  # the 50 rows and the sources' has_references: one transaction
    assert len(copy) == 50
    c = {t.original_task_id: t for t in copy.to_list()}
    assert all(len(n.task.dependencies) == 1 for n in copy.children)
    assert c[prev.id].dependencies[0]["id"] in {t.id for t in copy.to_list()}
