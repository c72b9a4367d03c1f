"""Where a data task's outputs live, and its side of the commit protocol.

A :class:`TaskStore` is a data task's answer to :class:`pipeflow.contract.TaskContract`:
its folders, file names and commit record (in the flow context in force, or the task's
home), whether its outputs are committed and intact, its lock, and what a run does before
and after ``run()``. It is also the *owner* of the task's targets: they ask it for the files
a load may read and hand it the saves made by hand.

``TaskData`` keeps the user's API (``save``, ``outputLoad``, ``inputLoad``, ``reset``...) and
reaches all of this through ``task._store``.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Callable, Container, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from luigi.task import flatten

from pipeflow import cache, graph, layout, settings, storage
from pipeflow.contract import Changes, changes_of, requires_of
from pipeflow.errors import (
    IncompleteTaskError,
    MetadataError,
    MissingOutputError,
    ParameterError,
    PipeflowError,
    SaveError,
    TaskLockedError,
    UnsafePathError,
)
from pipeflow.fingerprint import fingerprint_of
from pipeflow.integrity import (
    META_KEY,
    RECORD_SUFFIX,
    CommitRecord,
    FileRecord,
    NotAFileError,
    distrust,
    read_record,
    temp_owner,
    write_record,
)
from pipeflow.locks import TaskLock
from pipeflow.options import seconds, whole_number
from pipeflow.publishing import Staging, os_fix, os_reason, task_lock, unpublish, withdraw
from pipeflow.targets import CacheTarget, DataTarget, PickleTarget

if TYPE_CHECKING:
    from pipeflow.tasks import TaskData

_T = TypeVar("_T")

#: attributes that decide where a task's outputs go, also when set on an instance
LAYOUT_ATTRS = frozenset({"path", "target_dir", "target_ext", "task_group", "save_attrib",
                          "persist", "target_class"})

#: longest ``target_ext``, in bytes: file names stay within the file system's limit with it
EXT_MAX = 64
#: extensions and output names found to be plain names (each checked once)
_EXTS: set[str] = set()
_OUTPUT_NAMES: set[str] = set()

#: (class, context, data dir, generation) -> (output folder, records folder, location)
_FOLDERS: dict[tuple[object, ...], tuple[pathlib.Path, pathlib.Path, pathlib.Path]] = {}


class _lazy(Generic[_T]):
    """A value computed on first access, then kept in the instance's ``__dict__``.

    ``functools.cached_property`` without its lock: Python 3.11 takes an RLock on every
    first access, a tenth of a run's cost on trivial tasks. Two threads computing the same
    value at once both store an equal one.
    """

    def __init__(self, func: Callable[[Any], _T]):
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    @overload
    def __get__(self, obj: None, cls: type | None = None) -> _lazy[_T]: ...
    @overload
    def __get__(self, obj: object, cls: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, cls: type | None = None) -> _T | _lazy[_T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


class _Owner:
    """Names a task in an error message, computed only when a message is built."""

    def __init__(self, task: Any):
        self.task = task

    def __str__(self) -> str:
        return graph.describe(self.task)


class _Layout:
    """Every path of a task in one flow context: computed once, then read.

    The strings (status checks of large graphs need only those) are made at once; the
    target objects and the paths a run publishes on first use.

    Attributes:
        root: the location (its ``path`` or the data dir) every folder lies below.
        folder: the output folder.
        names: (output name, file name) pairs.
        record: the commit record's path.
    """

    def __init__(self, store: TaskStore, root: pathlib.Path, out: pathlib.Path,
                 own: pathlib.Path, names: list[tuple[str, str]], meta: str, record_name: str):
        self._store = store
        self.root = root
        self._out = out
        self._own = own
        self._record_name = record_name
        self.folder = os.fspath(out)
        self.names = names
        self.meta = meta
        self.record = os.path.join(os.fspath(own), record_name)
        #: on a remote file system (its files are checked through :mod:`pipeflow.storage`)
        self.remote = isinstance(out, storage.RemotePath)
        #: whether a file is at a path (a string): ``os.path.lexists`` on local disk
        self.lexists: Callable[[str], bool] = storage.exists if self.remote else os.path.lexists
        #: the last commit record found to list only the task's own files (read_record
        #: returns the same object while the file is unchanged: checked once per version)
        self.sound: CommitRecord | None = None

    @_lazy
    def paths(self) -> list[tuple[str, str]] | None:
        """(name, path) of each output and of the metadata, as strings.

        None when the format keeps more than one file per output (then ask :attr:`files`).
        """
        if self._store.task.target_class.files is not DataTarget.files:
            return None
        join = os.path.join
        return [*((k, join(self.folder, n)) for k, n in self.names),
                (META_KEY, join(self.folder, self.meta))]

    @_lazy
    def record_file(self) -> pathlib.Path:
        """The commit record's path as a Path."""
        return _child(self._own, self._record_name)

    @_lazy
    def main(self) -> dict[str, pathlib.Path]:
        """Output name (and META_KEY) -> the path of its main file (the target's ``path``)."""
        out = self._out
        main = {k: _child(out, name) for k, name in self.names}
        main[META_KEY] = _child(out, self.meta)
        return main

    @_lazy
    def own_names(self) -> frozenset[str]:
        """The names of the task's files in its output folder: all a record may list."""
        if self.paths is not None:
            return frozenset([*(n for _k, n in self.names), self.meta])
        return frozenset(p.name for p in self.owned if p.parent == self._out)

    @_lazy
    def targets(self) -> dict[str, DataTarget]:
        """Output name (and META_KEY) -> target."""
        store = self._store
        make = store.task.target_class
        targets = {k: (PickleTarget if k == META_KEY else make)(path)
                   for k, path in self.main.items()}
        for k, t in targets.items():
            t.owner, t.key = store, k
        return targets

    @_lazy
    def outputs(self) -> dict[str, DataTarget]:
        """The targets of the outputs (no metadata)."""
        return {k: t for k, t in self.targets.items() if k != META_KEY}

    @_lazy
    def files(self) -> dict[str, list[str]]:
        """Output name -> its files' paths, as strings."""
        return {k: [os.fspath(p) for p in t.files()] for k, t in self.targets.items()}

    @_lazy
    def owned(self) -> set[pathlib.Path]:
        """Every path a run publishes: outputs, sidecars, metadata, commit record."""
        if self.paths is not None:  # one file per output: no target objects needed
            return {*self.main.values(), self.record_file}
        return {p for t in self.targets.values() for p in t.files()} | {self.record_file}


class _Owned:
    """The paths a run of the task publishes, as a container: ``path in owned``.

    A save through one of the task's own targets is recognised by its path object, with
    no path hashed and no set built; any other path is looked up in :attr:`_Layout.owned`.
    """

    __slots__ = ("_lay",)

    def __init__(self, lay: _Layout):
        self._lay = lay

    def __contains__(self, path: object) -> bool:
        lay = self._lay
        main = lay.main
        return any(p is path for p in main.values()) or path in lay.owned


class TaskStore:
    """A data task's outputs, commit record and lock: the engine-facing side of the task.

    Attributes:
        task: the task.
    """

    group = False
    cascades = True
    timeout_setting: str | None = None

    def __init__(self, task: TaskData):
        self.task = task
        # (identities for the hot path, the full key, the layout)
        self._memo: tuple[tuple[Any, ...], tuple[Any, ...], _Layout] | None = None

    # -- the contract's settings --------------------------------------------------------------
    @property
    def external(self) -> bool:
        """Its outputs are made outside the flow."""
        return bool(self.task.external)

    @property
    def priority(self) -> int:
        """0 urgent .. 3 low (a class attribute or a parameter).

        Raises:
            PipeflowError: any other value.
        """
        value = self.task.priority
        if isinstance(value, bool) or value not in (0, 1, 2, 3):
            raise PipeflowError(
                f"{graph.describe(self.task)} has priority={value!r}; priorities are 0 "
                f"(urgent), 1 (high), 2 (normal, the default) or 3 (low)."
            )
        return int(value)

    @property
    def retries(self) -> int:
        """Retries of a failed attempt within a run.

        Raises:
            ParameterError: not a whole number of at least 0.
        """
        return self._setting("retries", whole_number, 0,  # type: ignore[no-any-return]
                             ": it is how many times a failed attempt is tried again.")

    @property
    def retry_delay(self) -> float:
        """Seconds before each retry.

        Raises:
            ParameterError: not a number of seconds of at least 0.
        """
        return self._setting("retry_delay", seconds, False,  # type: ignore[no-any-return]
                             ": it is how long to wait before each retry.")

    @property
    def timeout(self) -> float | None:
        """Seconds an attempt may run (None: no limit).

        Raises:
            ParameterError: not None or a number of seconds above 0.
        """
        value = self.task.timeout
        if value is None:
            return None
        return self._setting("timeout", seconds, True,  # type: ignore[no-any-return]
                             ": it is how long an attempt may run (None: no limit).")

    def _setting(self, name: str, check: Callable[..., Any], *args: Any) -> Any:
        """A run setting of the task's class, checked (``None`` counts as 0)."""
        value = getattr(self.task, name)
        try:
            return check(0 if value is None else value, name, *args)
        except ParameterError as exc:  # named here: describing the task costs
            raise ParameterError(
                f"{type(self.task).__name__}.{exc} Fix it in the class "
                f"({graph.describe(self.task)} has it).") from None

    @property
    def changes(self) -> Changes:
        """How change detection treats the task."""
        return changes_of(type(self.task))

    def requirements(self) -> list[Any]:
        """``requires()`` flattened."""
        return list(flatten(requires_of(self.task)))

    # -- where outputs live -------------------------------------------------------------------
    def overrides(self) -> tuple[tuple[str, Any], ...] | None:
        """Layout attributes set on the task instance (d6tflow code sets ``task.target_dir``).

        Looked up where outputs are placed rather than caught when set: a ``__setattr__``
        would slow every task's instantiation (luigi sets its attributes one by one).
        """
        d = self.task.__dict__
        if LAYOUT_ATTRS.isdisjoint(d):
            return None
        return tuple((k, d[k]) for k in sorted(LAYOUT_ATTRS.intersection(d)))

    def context(self) -> layout.FlowContext:
        """The flow context placing the task: its home if it has one, else the current one."""
        home = self.task.__dict__.get(layout.HOME)
        return layout.current() if home is None else home

    def _key(self) -> tuple[Any, ...]:
        """What the memoized paths depend on (checked at every lookup: kept cheap)."""
        task = self.task
        home = task.__dict__.get(layout.HOME)
        ctx = layout.current() if home is None else home
        # the generation of task classes (bumped by any class change), on their metaclass
        return (ctx.key, settings.dirpath, settings.save_with_param,
                type(type(task)).generation, self.overrides())

    def folder(self) -> pathlib.Path:
        """The folder of the task's outputs."""
        return self.folders()[0]

    def folders(self) -> tuple[pathlib.Path, pathlib.Path]:
        """The folder of the outputs, and the one of the commit record and lock."""
        out, own, _root = self._places()
        return out, own

    def _places(self) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
        """:meth:`folders`, and the location they lie below (its ``path`` or the data dir)."""
        # They depend on the class and the flow context, never on parameter values.
        ctx = self.context()
        if self.overrides() is not None:
            return self._compute_folders(ctx)
        cls = type(self.task)
        key = (cls, ctx.key, settings.dirpath, type(cls).generation)
        folders = _FOLDERS.get(key)
        if folders is None:
            if len(_FOLDERS) > 4096:  # stale keys (old data dirs, generations) pile up
                _FOLDERS.clear()
            folders = _FOLDERS[key] = self._compute_folders(ctx)
        return folders

    def location(self, ctx: layout.FlowContext | None = None) -> pathlib.Path:
        """The folder the task's outputs go below, env folder included (see :mod:`.layout`)."""
        return self._locate(ctx)[1]

    def _locate(self, ctx: layout.FlowContext | None = None) -> tuple[pathlib.Path, pathlib.Path]:
        """The location the user named (trusted, even a symlink), and :meth:`location`."""
        ctx = self.context() if ctx is None else ctx
        task = self.task
        if ctx.places and not task._pinned:
            return ctx.top(), ctx.base()
        own = layout.location(task.path, "path", _Owner(task))
        where = settings.dirpath if own is None else own
        return where, where

    def _compute_folders(
            self, ctx: layout.FlowContext) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
        task = self.task
        owner = _Owner(task)
        namespace = type(task).get_task_namespace()
        family = layout.family_name(task.task_family, namespace, owner)
        layout.family_name(type(task).get_task_family(), namespace, owner)  # starts task_id
        parts = layout.task_parts(task.task_group, task.target_dir, family, owner)
        root, where = self._locate(ctx)
        return where.joinpath(*parts), layout.records_folder(where, parts), root

    def _stem(self, key: str) -> str:
        task = self.task
        if settings.save_with_param and getattr(task, "save_attrib", True):
            return f"{task.task_id}-{key}"
        return key

    def persist(self) -> list[str]:
        """The output names, checked: distinct plain names.

        Raises:
            PipeflowError: ``persist`` is not a list of distinct names, or one of them
                would share its file with the task's metadata.
            UnsafePathError: a name is not a plain file name (``'..'``, ``'a/b'``, a NUL,
                a leading ``'.'``, which pipeflow's own files use).
        """
        clash = meta_clash(self.task)
        if clash:
            raise PipeflowError(clash)
        persist = self.task.persist
        if (not isinstance(persist, (list, tuple)) or not persist
                or not all(isinstance(k, str) and k for k in persist)
                or len(set(persist)) != len(persist)):
            raise PipeflowError(
                f"{type(self.task).__name__}.persist = {persist!r} is not a list of distinct "
                f"output names (plain names: no '/', '\\' or NUL, not starting with '.'). Write "
                f"e.g. persist = ['data'] or persist = ['model', 'scores']."
            )
        owner = type(self.task).__name__
        for k in persist:
            if k not in _OUTPUT_NAMES:
                layout.name_part(k, "persist", owner)
                if k.startswith("."):
                    raise UnsafePathError(
                        f"{owner}: persist={k!r} must be a plain name not starting with '.': "
                        f"names starting with '.' are pipeflow's own files (.pipeflow.lock, "
                        f"the commit record). Rename the output, e.g. {k.lstrip('.') or 'data'!r}.")
                _OUTPUT_NAMES.add(k)
        return list(persist)

    def _layout(self) -> _Layout:
        """Every path of the task, for the flow context in force (memoized)."""
        memo = self._memo
        task = self.task
        d = task.__dict__
        home = d.get(layout.HOME)
        ctx = layout.current() if home is None else home
        if memo is not None:
            # The hot path (a dozen lookups per task in a run): the very objects of last
            # time, compared by identity, and no layout attribute set on the instance.
            fast = memo[0]
            if (fast[0] is ctx and fast[1] is settings.dirpath
                    and fast[2] is settings.save_with_param
                    and fast[3] == type(type(task)).generation
                    and fast[5] == layout.generation
                    and fast[4] and LAYOUT_ATTRS.isdisjoint(d)):
                return memo[2]
        key = self._key()
        lay = memo[2] if memo is not None and memo[1] == key else self._make_layout()
        # its folders resolve inside its location (once per folder and run: cheap)
        layout.check_inside(lay.root, (lay._out, lay._own), _Owner(task))
        fast = (ctx, settings.dirpath, settings.save_with_param, type(type(task)).generation,
                key[-1] is None,  # (the hot path needs no override, then and now)
                layout.generation)
        self._memo = (fast, key, lay)
        return lay

    def _make_layout(self) -> _Layout:
        task = self.task
        out, own, root = self._places()
        ext = task.target_ext
        if ext:
            if not (isinstance(ext, str) and ext in _EXTS):  # once per value (a property
                layout.name_part(ext, "target_ext", _Owner(task), limit=EXT_MAX)  # may vary)
                if len(_EXTS) > 4096:
                    _EXTS.clear()
                _EXTS.add(ext)
            ext = f".{ext}"
        else:
            ext = ""
        names = [(k, layout.fit_name(self._stem(k), ext)) for k in self.persist()]
        ident = (task.task_id if settings.save_with_param and getattr(task, "save_attrib", True)
                 else task.task_family)
        meta = layout.fit_name(self._stem(META_STEM), f".{META_EXT}")
        return _Layout(self, root, out, own, names, meta,
                       layout.fit_name(f".{ident}", RECORD_SUFFIX))

    def targets(self) -> dict[str, DataTarget]:
        """The output targets by name (and the metadata's), for the context in force."""
        return self._layout().targets

    def outputs(self) -> dict[str, DataTarget]:
        """The output targets by name (no metadata)."""
        return self._layout().outputs

    def meta_target(self) -> DataTarget:
        """The target of the metadata (``saveMeta``)."""
        return self._layout().targets[META_KEY]

    def file_names(self) -> tuple[str, list[tuple[str, str]], str]:
        """Folder, (output name, file name) pairs and commit record, as strings.

        The hot path of status checks on large graphs: plain strings, no target objects.
        """
        lay = self._layout()
        return lay.folder, lay.names, lay.record

    def record_path(self) -> str:
        """The commit record's path (written last by a successful run)."""
        return self._layout().record

    def signature(self) -> tuple[int, int] | None:
        """Identity of the commit record file (mtime, inode); None when there is none.

        On a remote file system: its size and a hash of its ETag (or modification time).
        """
        lay = self._layout()
        if lay.remote:
            try:
                found = storage.info(lay.record)
            except OSError:
                return None
            if found is None:
                return None
            tag = next((found[k] for k in ("ETag", "etag", "mtime", "LastModified", "created")
                        if found.get(k) is not None), "")
            return (int(found.get("size") or 0), hash(str(tag)))
        try:
            st = os.stat(lay.record)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def record_file(self) -> pathlib.Path:
        """The commit record's path as a :class:`pathlib.Path`."""
        return self._layout().record_file

    def file_backed(self) -> bool:
        """Whether the outputs are files (checked against the commit record)."""
        return self.task.target_class.exists is DataTarget.exists

    def data_root(self) -> pathlib.Path:
        """The location the task's files live below: its ``path`` or the data dir.

        The env folder is left out: it is derived, so checked like the task folders.
        Nothing is read, written or deleted outside it.
        """
        return self._locate()[0]

    def display_name(self) -> str:
        """The task with its parameters, as shown in messages."""
        return graph.describe(self.task)

    # -- status ---------------------------------------------------------------------------------
    def output_state(self) -> tuple[bool, str | None, CommitRecord | None]:
        """Whether the task's own outputs are complete, why not (when notable), its record.

        File outputs count only when the commit record lists them and each file is still the
        one committed (size, mtime and inode compared; re-hashed when they differ).
        """
        if (not self.file_backed()
                or (self.task.external and not self._exists(self.record_path()))):
            return all(t.exists() for t in self.outputs().values()), None, None
        # Plain files: string paths, no target objects (the hot path on large graphs).
        lay = self._layout()
        folder, names = lay.folder, lay.names
        record, problem = read_record(lay.record)
        if record is None:
            if problem is None and self._exists(os.path.join(folder, names[0][1])):
                problem = ("its output files exist but no successful pipeflow run committed "
                           "them (left by a crashed run, or written by another tool): it "
                           "runs again")
            return False, problem, None
        if record.bad is not None:  # a load found a file changed (see found_corrupt)
            return False, f"{record.bad}: it runs again", record
        if lay.sound is not record:
            foreign = self._foreign(record)
            if foreign is not None:
                return False, foreign, record
        touched: dict[str, FileRecord] = {}
        for k, name in names:
            recs = record.files.get(k)
            if not recs or recs[0].name != name:
                return False, f"output {k!r} is not in its commit record", record
            for rec in recs:
                problem, now = rec.verify(folder, rehash=False)
                if problem is not None:
                    return False, f"output {k!r}: {problem}", record
                if now is not rec:
                    touched[rec.name] = now
        if touched:
            self._restat(record, touched)
        return True, None, record

    def _exists(self, path: str) -> bool:
        """``os.path.exists``, or its remote file system's answer."""
        return storage.exists(path) if self._layout().remote else os.path.exists(path)

    def _foreign(self, record: CommitRecord) -> str | None:
        """Why ``record`` cannot be the task's: it lists a file that is not one of its own.

        Such a record was edited or forged; nothing it lists outside the task's outputs is
        ever deleted (see :func:`pipeflow.integrity.uncommit`).
        """
        lay = self._layout()
        if lay.sound is record:
            return None
        # the usual layout: compare with its few names (no set made per task: status checks
        # of large graphs pass here once per task)
        own: Container[str] = (
            [*(n for _k, n in lay.names), lay.meta] if lay.paths is not None else lay.own_names)
        for recs in record.files.values():
            for rec in recs:
                if rec.name not in own:
                    return (f"its commit record is damaged: it lists {rec.name!r}, which is "
                            f"not one of its outputs (an edited record?): it runs again")
        lay.sound = record
        return None

    def complete(self) -> bool:
        """Whether every output is committed and intact (upstream tasks not considered)."""
        return self.output_state()[0]

    def found_corrupt(self, target: DataTarget, records: Sequence[FileRecord],
                      problem: str) -> None:
        """A load re-hashed ``target``'s files and found ``problem``: the task is not complete.

        The one place that acts on it: the commit record is rewritten (under the task's
        lock) to say so, so every process sees the task stale and the next run computes
        it again; with the lock taken, or in a read-only data dir, this process remembers
        it. The changed file itself is left as it is.

        Args:
            target: the output loaded.
            records: the files of ``target`` as committed (the ones checked).
            problem: what was found, naming the file.
        """
        path = self.record_file()
        record, _ = read_record(path)
        if record is None or tuple(record.files.get(target.key, ())) != tuple(records):
            return  # committed again since it was checked
        lock = self.lock()
        try:
            held = lock.acquire()
        except (OSError, UnsafePathError):  # a read-only data dir, a lock that is no file
            held = False
        try:
            distrust(path, record, f"{_label(target.key)}: {problem}", held)
        finally:
            if held:
                lock.release()

    def _restat(self, record: CommitRecord, touched: dict[str, FileRecord]) -> None:
        """Record the new mtime and inode of files touched (or copied) with the same content.

        The next status check then compares them without hashing them again. Best
        effort: skipped while the task runs (its lock is taken) or if anything changed
        meanwhile, or in a read-only data dir (no lock file can be opened there); the record
        is only ever rewritten with files that hash the same.
        """
        lock = self.lock()
        try:
            held = lock.acquire()
        except (OSError, UnsafePathError):  # read-only data dir / a lock that is no plain file:
            return  # hash them again next time (a run or reset says what is wrong)
        if not held:
            return
        path = self.record_file()
        try:
            if read_record(path)[0] != record:
                return
            folder = self.file_names()[0]
            # unchanged since they were hashed (their new stat still matches): no rehash
            if any(now.problem(folder, rehash=False) for now in touched.values()):
                return
            files = {key: tuple(touched.get(r.name, r) for r in recs)
                     for key, recs in record.files.items()}
            with contextlib.suppress(OSError):  # a read-only record: hash again next time
                write_record(path, CommitRecord(record.task, files, record.fingerprint))
        finally:
            lock.release()

    def committed(self, key: str) -> tuple[FileRecord, ...] | None:
        """The files of output ``key`` (or :data:`META_KEY`) as committed, if any."""
        record, _ = read_record(self.record_file())
        return record.files.get(key) if record is not None else None

    def has_outputs(self) -> bool:
        """Whether anything of the task is stored: a commit record or an in-memory output."""
        return self.record_file().exists() or any(
            isinstance(t, CacheTarget) and t.exists() for t in self.outputs().values())

    def stored_files(self) -> list[str]:
        """What a reset would delete, for the confirmation prompt."""
        record, _ = read_record(self.record_file())
        folder = self.folder()
        own = self._layout().own_names  # what a reset may delete, whatever the record lists
        files = [str(folder / n) for n in record.file_names() if n in own] if record else []
        return files + [str(t.path) for t in self.outputs().values()
                        if isinstance(t, CacheTarget) and t.exists()]

    # -- locks and deleting ---------------------------------------------------------------------
    def lock(self) -> TaskLock:
        """The lock held while the task runs or its outputs are reset or saved by hand."""
        return task_lock(self.record_path(), _Owner(self.task))

    @contextlib.contextmanager
    def locked(self, doing: str) -> Iterator[None]:
        """Hold the task's lock for the block, or raise at once if it is taken.

        Raises:
            TaskLockedError: the task is being run (or reset) elsewhere right now.
            SaveError: its lock file cannot be opened (a read-only data dir, say).
        """
        lock = self.lock()
        try:
            held = lock.acquire()
        except OSError as exc:
            folder = pathlib.Path(lock.folder)
            raise SaveError(
                f"cannot {doing}: its lock file in {lock.folder!r} cannot be opened: "
                f"{os_reason(exc)}. Nothing was changed. {os_fix(exc, folder)}") from exc
        if not held:
            raise _locked(doing)
        try:
            yield
        finally:
            lock.release()

    def delete_outputs(self) -> None:
        """Delete the committed outputs and metadata, without asking.

        Only files the commit record lists are deleted (the record first, so the task is
        never left looking complete), never a symlink's target and never a folder.

        Raises:
            TaskLockedError: the task is running right now, here or in another process.
        """
        folder = self._inside()
        if not unpublish(self.record_path(), folder, self._layout().own_names,
                         _Owner(self.task)):
            raise _locked(f"reset {graph.describe(self.task)}")
        for t in self.outputs().values():
            if isinstance(t, CacheTarget):
                t.invalidate()

    def _uncommit(self) -> None:
        """Delete the commit record, then the files it lists (the task's lock is held)."""
        path = self.record_path()
        if self._layout().lexists(path):
            withdraw(path, self._inside(), self._layout().own_names)

    def _inside(self) -> pathlib.Path:
        """The output folder, after checking now that both folders lie inside the location.

        Raises:
            UnsafePathError: one of them resolves outside it (a symlink out of it).
        """
        out, own, root = self._places()
        owner = _Owner(self.task)
        layout.ensure_inside(own, root, owner)
        return layout.ensure_inside(out, root, owner)

    def adopt(self) -> bool:
        """Commit output files that exist but no pipeflow run committed (d6tflow data dirs).

        Returns:
            True if the outputs were adopted; False if there was nothing to adopt.

        Raises:
            TaskLockedError: the task is running right now.
        """
        if self.task.external or not self.file_backed() or self.record_file().exists():
            return False
        targets = {k: t for k, t in self.targets().items() if t.path.exists()}
        if any(k not in targets for k in self.persist()):
            return False
        with self.locked(f"adopt the outputs of {graph.describe(self.task)}"):
            try:
                files = {k: tuple(FileRecord.of(p) for p in t.files() if p.exists())
                         for k, t in targets.items()}
            except NotAFileError as exc:
                raise MetadataError(
                    f"cannot adopt the outputs of {graph.describe(self.task)}: {exc}; "
                    f"nothing was adopted.") from None
            write_record(self.record_file(), self._commit_record(files))
        return True

    # -- the targets' side: commit records -----------------------------------------------------
    def committed_files(self, target: DataTarget) -> tuple[FileRecord, ...] | None:
        """The files of one of the task's outputs as last committed.

        None for an external task's output without a commit record (files made outside
        pipeflow): it is read as it is.

        Raises:
            IncompleteTaskError: no successful run committed that output.
        """
        record, problem = read_record(self.record_file())
        if record is not None:
            problem = self._foreign(record)
            if problem is not None:
                record = None
        recs = record.files.get(target.key) if record is not None else None
        if record is None and problem is None and self.task.external:
            return None  # made outside pipeflow, with no record to check against
        if not recs:
            who = graph.describe(self.task)
            what = _label(target.key)
            raise IncompleteTaskError(
                f"cannot load {what} of {who} ({str(target.path)!r}): "
                f"{problem or 'no successful run of the task committed it'}. Run the flow "
                f"first: flow.run() (or pipeflow.run({who}))."
            )
        return recs

    def record_save(self, target: DataTarget, publish: Any) -> None:
        """Publish a save made by hand (outside a run) and add it to the commit record.

        Args:
            target: the output saved.
            publish: puts the staged files in place and returns their records.

        Raises:
            TaskLockedError: the task is running right now.
        """
        who = graph.describe(self.task)
        self._inside()  # checked now, not as of the last run: nothing is written outside
        with self.locked(f"save {str(target.path)!r} of {who} by hand"):
            path = self.record_file()
            record, _ = read_record(path)
            files = dict(record.files) if record is not None else {}
            files.pop(target.key, None)
            fp = fingerprint_of(self.task)
            # a changed file a load found in another output still stands (see found_corrupt)
            bad = (record.bad if record is not None and record.bad is not None
                   and not record.bad.startswith(f"{_label(target.key)}:") else None)
            write_record(path, CommitRecord(who, files, fp, bad))
            files[target.key] = tuple(publish())
            write_record(path, CommitRecord(who, files, fp, bad))

    # -- a run ----------------------------------------------------------------------------------
    def owned_paths(self) -> list[pathlib.Path]:
        """Paths the task's run publishes (saves to them are staged until success)."""
        return list(self._layout().owned)

    def clean_orphans(self, scan: Callable[[pathlib.Path], list[str]]) -> None:
        """Delete temp files a crashed run of the task left (its lock is held).

        Args:
            scan: lists the hidden temp-file names in a folder.
        """
        for folder in self.folders():
            if isinstance(folder, storage.RemotePath):  # its temp files are on local disk
                folder = pathlib.Path(storage.staging_folder(folder.url))
            names = scan(folder)
            mine = {p.name for p in self.owned_paths()} if names else set()
            for name in names:
                if temp_owner(name) in mine:
                    (folder / name).unlink(missing_ok=True)

    def prepare_run(self) -> Container[pathlib.Path]:
        """Before an attempt: uncommit and remove stale files, so only this run can count.

        Returns:
            The paths the attempt's saves are staged for.

        Raises:
            MetadataError: a file is in the place of the task's folder (or a parent's).
        """
        out = self.folder()
        # one stat when the folder is there (in-memory outputs have no folder, object
        # stores no folders to be in the way of)
        blocker = (settings.in_the_way(out) if self.file_backed()
                   and not self._layout().remote else None)
        if blocker is not None:
            raise MetadataError(
                f"{graph.describe(self.task)} cannot run: a file is in the place of its task "
                f"folder {str(blocker)!r} (its outputs go in {str(out)!r}). pipeflow never "
                f"deletes a file it did not make: move it (or delete it), then run the task "
                f"again.")
        self.abort_run(starting=True)
        return _Owned(self._layout())

    def abort_run(self, starting: bool = False) -> None:
        """After a failed or stopped attempt: uncommit, remove what it wrote to final paths.

        A worker stopped between writing the commit record and reporting success leaves a
        record the engine did not accept: it is removed first.

        Args:
            starting: called before an attempt (by :meth:`prepare_run`): a folder in the
                place of an output is an error then (it is never deleted, and nothing
                could be published there).

        Raises:
            MetadataError: a folder is in the place of the commit record, or (``starting``)
                of an output.
        """
        lay = self._layout()
        lexists = lay.lexists
        if lexists(lay.record):
            self._uncommit()
        paths = lay.paths
        if paths is not None and self.file_backed():  # strings only: no target objects
            for k, path in paths:
                if lexists(path):
                    if starting:
                        self._no_folder(path)
                    lay.targets[k].invalidate()
            return
        for k, files in lay.files.items():
            t = lay.targets[k]
            if isinstance(t, CacheTarget) or any(lexists(f) for f in files):
                if starting:
                    for f in files:
                        self._no_folder(f)
                t.invalidate()

    def _no_folder(self, path: str) -> None:
        """Raise if a folder (not a symlink to one) is where the output ``path`` goes."""
        if os.path.isdir(path) and not os.path.islink(path):
            raise MetadataError(
                f"{graph.describe(self.task)} cannot run: a folder is in the place of its "
                f"output {path!r}. Pipeflow never deletes a folder it did not make: move or "
                f"delete it, then run the task again.")

    def clean_stopped(self) -> None:
        """After an attempt stopped midway: its staged temp files, then as :meth:`abort_run`."""
        for path in self.owned_paths():
            parent = path.parent
            if isinstance(parent, storage.RemotePath):  # its temp files are on local disk
                parent = pathlib.Path(storage.staging_folder(parent.url))
            with contextlib.suppress(OSError):
                for tmp in parent.glob(f".{path.name}.tmp-*"):
                    tmp.unlink(missing_ok=True)
        self.abort_run()

    def finish_run(self, staged: Staging) -> bool:
        """After ``run()`` returned: publish what it saved and write the commit record, last.

        Returns:
            False when ``run()`` saved none of the outputs (nothing is published, the
            metadata neither: the task stays incomplete); True once committed.

        Raises:
            MissingOutputError: it saved some outputs but not all (nothing is published).
            SaveError: the commit record cannot be written.
        """
        outputs = self.outputs()
        missing = [t for t in outputs.values() if not (staged.saved(t.path) or t.exists())]
        if missing and len(missing) == len(outputs):
            staged.rollback()
            return False
        if missing:
            raise MissingOutputError(self.describe_missing(missing))
        self._commit(staged.commit())
        return True

    def _commit(self, published: dict[pathlib.Path, FileRecord]) -> None:
        files: dict[str, tuple[FileRecord, ...]] = {}
        file_backed = self.file_backed()
        lay = self._layout()
        if file_backed and lay.paths is not None:  # one file per output: no targets needed
            for key, path in lay.main.items():
                rec = published.get(path)
                if rec is not None:
                    files[key] = (rec,)
                elif key != META_KEY and path.exists():
                    files[key] = (FileRecord.of(path),)  # written by run() to the path
        else:
            for key, t in self.targets().items():
                if key != META_KEY and not file_backed:
                    continue
                recs = [published[p] for p in t.files() if p in published]
                if not recs and key != META_KEY and t.path.exists():
                    recs = [FileRecord.of(t.path)]  # written by run() straight to the path
                if recs:
                    files[key] = tuple(recs)
        if not files:
            return
        try:
            write_record(lay.record, self._commit_record(files))
        except OSError as exc:
            path = self.record_file()
            raise SaveError(
                f"{graph.describe(self.task)}: could not write its commit record "
                f"{str(path)!r}: {os_reason(exc)}. The run's outputs do not count and were "
                f"removed. {os_fix(exc, path.parent)}"
            ) from exc

    def _commit_record(self, files: dict[str, tuple[FileRecord, ...]]) -> CommitRecord:
        """The commit record of ``files``, with what they are made from now."""
        return CommitRecord(graph.describe(self.task), files, fingerprint_of(self.task))

    def memory_outputs(self) -> dict[Any, Any]:
        """The in-memory outputs made in this process (handed back from a worker)."""
        return {t.path: cache.data[t.path] for t in self.outputs().values()
                if isinstance(t, CacheTarget) and t.path in cache.data}

    def save_call(self) -> str:
        """The ``self.save(...)`` call run() must make, for error messages."""
        persist = self.persist()
        if persist == ["data"]:
            return "self.save(data)"
        return "self.save({" + ", ".join(f"'{k}': ..." for k in persist) + "})"

    def describe_missing(self, missing: list[DataTarget]) -> str:
        """The MissingOutputError message: which outputs are there and which are not."""
        outputs = self.outputs()
        lines = [f"    {'missing' if t in missing else 'ok     '}  {k}: {t.path}"
                 for k, t in outputs.items()]
        persist = self.persist()
        return (
            f"{graph.describe(self.task)} finished run() but did not write {len(missing)} of "
            f"its {len(outputs)} output{'s' if len(outputs) > 1 else ''}:\n" + "\n".join(lines)
            + f"\n{type(self.task).__name__}.persist = {persist}, so run() must call "
            f"{self.save_call()}. The task is marked failed."
        )


#: the file name of a task's metadata: ``{stem}`` as for outputs, then this
META_STEM, META_EXT = "meta", "pickle"


def meta_clash(task: Any) -> str | None:
    """Why ``task`` (a task or task class) has an output whose file is its metadata's.

    Outputs are ``{stem}-{name}.{target_ext}`` and the metadata ``{stem}-meta.pickle``, so
    an output named ``meta`` of a format with the extension ``pickle`` would share the
    metadata's file (``saveMeta`` overwriting it, ``outputLoad`` returning the metadata).
    """
    persist = getattr(task, "persist", None)
    if (isinstance(persist, (list, tuple)) and META_STEM in persist
            and getattr(task, "target_ext", None) == META_EXT):
        name = task.__name__ if isinstance(task, type) else type(task).__name__
        return (
            f"{name} has an output named {META_STEM!r} (persist = {list(persist)!r}) stored "
            f"with the extension {META_EXT!r}: its file would be the task's metadata file "
            f"({{task_id}}-{META_STEM}.{META_EXT}, written by saveMeta), so one would "
            f"overwrite the other. Rename the output (e.g. persist = "
            f"{[('metadata' if k == META_STEM else k) for k in persist]!r}) or use another "
            f"target_ext (TaskPickle's is 'pkl')."
        )
    return None


def _locked(doing: str) -> TaskLockedError:
    return TaskLockedError(
        f"cannot {doing}: the task is being run (or reset) by another process or thread "
        f"right now. Wait for that to finish, then try again.")


def _child(folder: pathlib.Path, name: str) -> pathlib.Path:
    """``folder / name`` for a plain file name, without parsing it again (a hot path)."""
    make = getattr(folder, "_make_child_relpath", None)  # pathlib's own, for iterdir()
    return make(name) if make is not None else folder / name  # type: ignore[no-any-return]


def _label(key: str) -> str:
    """An output (or the metadata) in messages: ``output 'data'``, ``its metadata``."""
    return "its metadata" if key == META_KEY else f"output {key!r}"
