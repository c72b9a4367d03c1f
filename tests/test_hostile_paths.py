"""Hostile file systems and locations (issue 11, kinds 1, 9 and lock files of kind 5).

The location a user names (the data dir, a Workflow's, class's or instance's ``path``) is
trusted, symlink or not; everything pipeflow derives below it (env folder, task_group, task
folders, names from the task family, ``.pipeflow/commits`` records, lock files, temp files)
must stay inside its real path, else ``UnsafePathError`` before anything is written.
"""

from __future__ import annotations

import os
import pathlib
import threading

import pytest

import pipeflow
from pipeflow import settings
from pipeflow.errors import ParameterError, TaskFailedError, UnsafePathError
from pipeflow.locks import LOCK_FILE, TaskLock


class HostileOut(pipeflow.tasks.TaskJson):
    n = pipeflow.IntParameter(default=1)

    def run(self):
        self.save({"n": self.n})


class HostileUp(pipeflow.tasks.TaskJson):
    def run(self):
        self.save({"up": 1})


class HostileDown(pipeflow.tasks.TaskJson):
    def requires(self):
        return HostileUp()

    def run(self):
        self.save({"down": 1})


def files_below(root: pathlib.Path) -> list[str]:
    """Every entry below ``root`` (links not followed), relative."""
    out = []
    for folder, dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(folder, n), root) for n in dirs + files]
    return sorted(out)


def spell(path: pathlib.Path, relative: bool) -> str:
    """``path`` relative to the working directory (the tests' tmp_path) or absolute."""
    return os.path.relpath(path) if relative else str(path)


def assert_names(exc: BaseException, *words: str) -> None:
    text = str(exc)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"


# -- kind 1: folders derived below the location that point out of it --------------------------

@pytest.mark.parametrize("relative", [False, True])
def test_a_task_folder_linked_out_is_refused_before_anything_is_written(
        data_dir, outside, relative):
    pipeflow.set_dir(spell(data_dir, relative))
    (data_dir / "HostileOut").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError) as info:
        pipeflow.run(HostileOut(n=7))
    assert_names(info.value, "HostileOut(n=7)", "HostileOut", str(outside), "symlink")
    assert files_below(outside) == []
    with pytest.raises(UnsafePathError):
        HostileOut(n=7).save({"n": 1})  # by hand: refused too
    assert files_below(outside) == []


@pytest.mark.parametrize("relative", [False, True])
def test_a_records_folder_linked_out_is_refused(data_dir, outside, relative):
    pipeflow.set_dir(spell(data_dir, relative))
    commits = data_dir / ".pipeflow" / "commits"
    commits.mkdir(parents=True)
    (commits / "HostileOut").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError) as info:
        pipeflow.run(HostileOut())
    assert_names(info.value, "HostileOut(", str(outside))
    assert files_below(outside) == []


def test_pipeflow_own_folder_linked_out_is_refused(data_dir, outside):
    (data_dir / ".pipeflow").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        pipeflow.run(HostileOut())
    assert not any(p.endswith((".commit.json", LOCK_FILE)) for p in files_below(outside))


@pytest.mark.parametrize("relative", [False, True])
def test_an_env_folder_linked_out_is_refused(data_dir, outside, relative):
    pipeflow.set_dir(spell(data_dir, relative))
    (data_dir / "env=prod").symlink_to(outside, target_is_directory=True)
    flow = pipeflow.Workflow(HostileOut, env="prod")
    with pytest.raises(UnsafePathError) as info:
        flow.run()
    assert_names(info.value, "HostileOut(", "env=prod", str(outside))
    assert files_below(outside) == []


@pytest.mark.parametrize("relative", [False, True])
def test_a_task_folder_linked_out_of_a_workflow_path_is_refused(tmp_path, outside, relative):
    root = tmp_path / "exp"
    (root / "HostileOut").parent.mkdir()
    (root / "HostileOut").symlink_to(outside, target_is_directory=True)
    flow = pipeflow.Workflow(HostileOut, path=spell(root, relative))
    with pytest.raises(UnsafePathError) as info:
        flow.run()
    assert_names(info.value, "HostileOut(", str(outside))
    assert files_below(outside) == []


@pytest.mark.parametrize("relative", [False, True])
def test_a_task_group_folder_linked_out_is_refused(data_dir, outside, relative):
    class Grouped(pipeflow.tasks.TaskJson):
        task_group = "grp"

        def run(self):
            self.save({"a": 1})

    pipeflow.set_dir(spell(data_dir, relative))
    (data_dir / "grp").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        pipeflow.run(Grouped())
    assert files_below(outside) == []


@pytest.mark.parametrize("relative", [False, True])
def test_a_linked_data_dir_or_workflow_path_is_trusted(tmp_path, relative):
    real = tmp_path / "big" / "data"
    real.mkdir(parents=True)
    link = tmp_path / "data-link"
    link.symlink_to(real, target_is_directory=True)
    pipeflow.set_dir(spell(link, relative))
    assert pipeflow.run(HostileDown())
    assert HostileDown().outputLoad() == {"down": 1}
    flow = pipeflow.Workflow(HostileOut, path=spell(link / "exp", relative), env="e1")
    assert flow.run()
    assert flow.outputLoad() == {"n": 1}
    assert (real / "exp" / "env=e1" / "HostileOut").is_dir()
    flow.reset(confirm=False)
    assert not flow.complete()
    pipeflow.invalidate_all(confirm=False)
    assert not HostileDown().complete()


def test_a_folder_linked_inside_the_location_is_accepted(data_dir):
    real = data_dir / "shared"
    real.mkdir()
    (data_dir / "HostileOut").symlink_to(real, target_is_directory=True)
    assert pipeflow.run(HostileOut())
    assert any(p.name.startswith("HostileOut") for p in real.iterdir())


def test_a_folder_linked_out_after_a_run_is_refused_at_the_next_run(data_dir, outside):
    assert pipeflow.run(HostileOut())
    HostileOut().reset(confirm=False)
    folder = data_dir / "HostileOut"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    folder.symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        pipeflow.run(HostileOut())
    assert files_below(outside) == []


def test_a_linked_env_folder_is_not_deleted_through(data_dir, outside):
    flow = pipeflow.Workflow(HostileOut, env="prod")
    assert flow.run()
    env = data_dir / "env=prod"
    env.rename(outside / "env=prod")
    env.symlink_to(outside / "env=prod", target_is_directory=True)
    kept = files_below(outside)
    with pytest.raises(UnsafePathError):
        flow.reset(confirm=False)
    assert files_below(outside) == kept


# -- kind 1: names built from the task family -----------------------------------------------

@pytest.mark.parametrize("namespace", ["../../outside/x", "a/b", "../..", "x\\y", "..", "."])
@pytest.mark.parametrize("target_dir", [None, "folder"])
def test_a_task_namespace_that_is_not_a_plain_name_is_refused(
        tmp_path, outside, namespace, target_dir):
    class Spaced(pipeflow.tasks.TaskJson):
        task_namespace = namespace

        def run(self):
            self.save({"a": 1})

    Spaced.target_dir = target_dir
    with pytest.raises(UnsafePathError) as info:
        pipeflow.run(Spaced())
    assert_names(info.value, "task_namespace", repr(namespace))
    assert files_below(outside) == []
    assert not (tmp_path / "x.Spaced").exists()
    assert files_below(tmp_path / "data") in ([], [".pipeflow"])


@pytest.mark.parametrize("namespace", ["team.project", "équipe.v2"])
def test_a_dotted_task_namespace_is_fine(data_dir, namespace):
    class Dotted(pipeflow.tasks.TaskJson):
        task_namespace = namespace

        def run(self):
            self.save({"a": 1})

    assert pipeflow.run(Dotted())
    assert Dotted().outputLoad() == {"a": 1}
    assert (data_dir / f"{namespace}.Dotted").is_dir()


def test_a_task_family_that_is_not_a_plain_name_is_refused(outside):
    class Family(pipeflow.tasks.TaskJson):
        @classmethod
        def get_task_family(cls):
            return "../outside/Family"

        def run(self):
            self.save({"a": 1})

    with pytest.raises(UnsafePathError) as info:
        pipeflow.run(Family())
    assert_names(info.value, "../outside/Family")
    assert files_below(outside) == []


# -- kind 1: lock files and pipeflow's temp files are never followed --------------------------

def test_a_dangling_lock_file_link_is_refused_and_its_target_not_created(data_dir, tmp_path):
    records = data_dir / ".pipeflow" / "commits" / "HostileOut"
    records.mkdir(parents=True)
    target = tmp_path / "created-by-pipeflow"
    (records / LOCK_FILE).symlink_to(target)
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(HostileOut())
    cause = info.value.__cause__
    assert isinstance(cause, UnsafePathError)
    assert_names(cause, "HostileOut(", LOCK_FILE, str(target), "symlink")
    assert not os.path.lexists(target)
    with pytest.raises(UnsafePathError):
        HostileOut().save({"n": 2})
    assert not os.path.lexists(target)


def test_a_lock_file_link_to_an_existing_file_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    folder = tmp_path / "locks"
    folder.mkdir()
    (folder / LOCK_FILE).symlink_to(victim)
    with pytest.raises(UnsafePathError) as info:
        TaskLock(folder, ".T.commit.json").acquire()
    assert_names(info.value, str(folder / LOCK_FILE), str(victim))
    assert victim.read_text() == "keep"


def test_a_lock_file_replaced_by_a_directory_is_a_clear_error(data_dir):
    assert pipeflow.run(HostileOut())
    pipeflow.run(HostileOut(n=2))
    lock = data_dir / ".pipeflow" / "commits" / "HostileOut" / LOCK_FILE
    assert lock.is_file()
    # a fresh process: the lock file is opened anew (this one keeps it open)
    result: list[BaseException | None] = []

    def fresh_process_view():
        import pipeflow.locks as locks

        saved = dict(locks._fds)
        locks._fds.clear()
        try:
            lock.unlink()
            lock.mkdir()
            (lock / "junk").write_text("x")
            try:
                HostileOut(n=3).reset(confirm=False)
                result.append(None)
            except BaseException as exc:  # noqa: BLE001 - inspected below
                result.append(exc)
        finally:
            locks._fds.clear()
            locks._fds.update(saved)

    t = threading.Thread(target=fresh_process_view)
    t.start()
    t.join(60)
    assert not t.is_alive(), "hangs"
    assert isinstance(result[0], UnsafePathError), result
    assert_names(result[0], "HostileOut(n=3)", str(lock), "directory")


def test_a_lock_file_that_is_a_directory_fails_the_task_cleanly(data_dir):
    records = data_dir / ".pipeflow" / "commits" / "HostileOut"
    (records / LOCK_FILE).mkdir(parents=True)
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(HostileOut(n=4))
    assert isinstance(info.value.__cause__, UnsafePathError)
    assert_names(info.value.__cause__, "HostileOut(n=4)", LOCK_FILE, "directory")


def test_a_fifo_in_place_of_the_lock_file_is_refused_without_hanging(tmp_path):
    folder = tmp_path / "locks"
    folder.mkdir()
    os.mkfifo(folder / LOCK_FILE)
    with pytest.raises(UnsafePathError) as info:
        TaskLock(folder, ".T.commit.json").acquire()
    assert_names(info.value, str(folder / LOCK_FILE))


def test_a_planted_commit_temp_file_link_is_not_followed(data_dir, tmp_path):
    assert pipeflow.run(HostileOut())
    record = HostileOut()._store.record_file()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (record.parent / f".{record.name}.tmp-commit").symlink_to(victim)
    # a by-hand save rewrites the existing record through its temp file
    HostileOut().save({"n": 5})
    assert victim.read_text() == "keep"
    assert HostileOut().outputLoad() == {"n": 5}


# -- kind 9: URLs are remote locations, never local folders --------------------------------
# (Issue 14: a URL fsspec can write to is a remote data dir or path; see
# tests/test_remote_storage.py. What cannot be one is refused at once, nothing created.)

REFUSED_URLS = ["https://host/data", "file://otherhost/data", "nosuch://b/x", "s3:///data",
                "s3://b/data/../../x", "memory://"]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_set_dir_refuses_a_url_that_names_no_writable_location(tmp_path, url):
    before = settings.dirpath
    with pytest.raises(ParameterError) as info:
        pipeflow.set_dir(url)
    assert_names(info.value, repr(url)[1:-1])
    assert settings.dirpath == before
    assert sorted(os.listdir(tmp_path)) == ["data"]


@pytest.mark.parametrize("url", ["s3://b/data", "memory://hostile/x"])
def test_a_url_is_never_a_local_history_or_a_local_folder(tmp_path, url):
    with pytest.raises(ParameterError, match="local file or folder of this machine"):
        settings.history = url
    with pytest.raises(ParameterError, match="collapsed"):
        settings.dir = pathlib.Path(url)  # pathlib turns s3://b into s3:/b: no URL any more
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_workflow_and_task_paths_that_are_urls_write_there_only(tmp_path):
    url = "memory://hostile-paths/x"
    flow = pipeflow.Workflow(HostileOut, path=url)
    flow.run(execution_summary=False)
    assert str(flow.outputPath()).startswith(url + "/HostileOut/")

    class Remote(pipeflow.tasks.TaskJson):
        path = url + "/cls"

        def run(self):
            self.save({"a": 1})

    pipeflow.run(Remote(), execution_summary=False)
    assert Remote().outputLoad() == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["data", "state"]  # this machine's state only
    import fsspec

    fsspec.filesystem("memory").rm("/hostile-paths", recursive=True)


def test_a_file_url_names_a_local_folder(tmp_path):
    where = tmp_path / "local data"
    pipeflow.set_dir(where.as_uri())
    assert settings.dirpath == where and settings.dir == str(where)
    assert pipeflow.run(HostileOut())
    assert (where / "HostileOut").is_dir()
    flow = pipeflow.Workflow(HostileOut, path=(tmp_path / "exp").as_uri())
    assert flow.run()
    assert (tmp_path / "exp" / "HostileOut").is_dir()
    pipeflow.set_dir("file://localhost" + str(tmp_path / "other"))
    assert settings.dirpath == tmp_path / "other"
    settings.history = (tmp_path / "runs.db").as_uri()
    assert settings.history == str(tmp_path / "runs.db")
    assert pipeflow.run(HostileOut(n=2))
    assert (tmp_path / "runs.db").is_file()


def test_names_with_a_colon_that_are_not_urls_stay_folders(tmp_path):
    pipeflow.set_dir("s3:bucket")  # no '//': a plain (odd) folder name
    assert pipeflow.run(HostileOut())
    assert (tmp_path / "s3:bucket" / "HostileOut").is_dir()


def test_a_relative_data_dir_is_checked_again_after_a_change_of_directory(tmp_path, outside):
    (tmp_path / "one").mkdir()
    os.chdir(tmp_path / "one")
    pipeflow.set_dir("data")
    assert pipeflow.run(HostileOut())
    (tmp_path / "two" / "data").mkdir(parents=True)
    (tmp_path / "two" / "data" / "HostileOut").symlink_to(outside, target_is_directory=True)
    os.chdir(tmp_path / "two")
    with pytest.raises(UnsafePathError):
        pipeflow.run(HostileOut(), forced=HostileOut())
    assert files_below(outside) == []


def test_folders_are_resolved_once_per_run_not_per_task(data_dir, monkeypatch):
    tasks = [HostileOut(n=i) for i in range(40)]
    assert pipeflow.run(tasks)
    calls: list[str] = []
    real = os.path.realpath

    def counting(path, *args, **kwargs):
        if os.fspath(path).startswith(str(data_dir)):
            calls.append(os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", counting)
    assert pipeflow.run(tasks)  # up to date: one folder pair, 40 tasks
    assert len(calls) <= 6, calls  # a handful (location, folders, history), not per task
    HostileOut(n=1).reset(confirm=False)
    calls.clear()
    assert pipeflow.run(tasks)  # one task runs again
    assert len(calls) <= 6, calls


@pytest.mark.parametrize("relative", [False, True])
def test_a_task_folder_linked_out_of_a_task_or_class_path_is_refused(tmp_path, outside, relative):
    root = tmp_path / "own"
    root.mkdir()
    (root / "HostileOut").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        pipeflow.run(HostileOut(path=spell(root, relative)))

    class ClassPath(pipeflow.tasks.TaskJson):
        path = spell(root, relative)

        def run(self):
            self.save({"a": 1})

    (root / "ClassPath").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        pipeflow.run(ClassPath())
    assert files_below(outside) == []


def test_the_run_history_is_not_written_through_a_linked_pipeflow_folder(
        data_dir, tmp_path, outside):
    (data_dir / ".pipeflow").symlink_to(outside, target_is_directory=True)
    flow = pipeflow.Workflow(HostileOut, path=tmp_path / "exp")  # its records are elsewhere
    with pytest.raises(UnsafePathError) as info:
        flow.run()
    assert_names(info.value, "history", str(outside))
    assert files_below(outside) == []
    settings.history = False  # no history: nothing to write there
    assert flow.run()


def test_a_yielded_task_whose_folder_is_linked_out_fails_its_parent_cleanly(data_dir, outside):
    class Yielded(pipeflow.tasks.TaskJson):
        def run(self):
            self.save({"a": 1})

    class Yielding(pipeflow.tasks.TaskJson):
        def run(self):
            yield Yielded()
            self.save({"b": 2})

    (data_dir / "Yielded").symlink_to(outside, target_is_directory=True)
    with pytest.raises(TaskFailedError) as info:
        pipeflow.run(Yielding())
    assert isinstance(info.value.__cause__, UnsafePathError)
    assert_names(info.value.__cause__, "Yielded()", str(outside))
    assert files_below(outside) == []
