"""Targets: how one output is stored (parquet, CSV, JSON, pickle, memory, your own format).

A target reads and writes one format; publishing its files atomically (temp file, staging
while the task runs, the move into place) is :mod:`pipeflow.publishing`'s. pandas is
imported when a DataFrame format first reads or writes, not when pipeflow is imported.

Write your own format by subclassing :class:`DataTarget` and implementing ``read`` and
``write`` (and optionally ``check``).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import numbers
import os
import pathlib
import pickle
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Protocol

from pipeflow import cache, publishing, settings, storage
from pipeflow.errors import (
    CorruptOutputError,
    IncompleteTaskError,
    LoadError,
    MissingDependencyError,
    PipeflowError,
    SaveError,
)
from pipeflow.integrity import FileRecord, hash_bytes
from pipeflow.layout import ensure_inside
from pipeflow.publishing import Writer

if TYPE_CHECKING:
    import pandas as pd


def _pandas() -> Any:
    import pandas

    return pandas


class Owner(Protocol):
    """The task a target belongs to: it keeps the commit record of the target's files."""

    def display_name(self) -> str:
        """The task with its parameters, for messages."""

    def data_root(self) -> pathlib.Path:
        """The folder the task's files live below (nothing outside it is deleted)."""

    def committed_files(self, target: DataTarget) -> Sequence[FileRecord] | None:
        """The files of ``target`` its last run committed (None: unchecked; raises if none)."""

    def record_save(self, target: DataTarget,
                    publish: Callable[[], list[FileRecord]]) -> None:
        """Publish a save made outside a run (``task.save()`` by hand) and record it."""

    def found_corrupt(self, target: DataTarget, records: Sequence[FileRecord],
                      problem: str) -> None:
        """A load found ``target``'s files changed since committed: no longer complete."""


_PATH = type(pathlib.Path())  # this platform's concrete Path class


class DataTarget:
    """Base class of every output format: a path plus ``read``/``write``.

    Subclass it for your own format; pipeflow takes care of atomic publishing, staging,
    caching and deletion.

    Attributes:
        path: the final location of the output.

    Example:
        >>> import pathlib
        >>> class TextTarget(DataTarget):
        ...     def read(self, path, **kwargs):
        ...         return pathlib.Path(path).read_text()
        ...     def write(self, data, path, **kwargs):
        ...         pathlib.Path(path).write_text(data)
        ...     def check(self, data):
        ...         if not isinstance(data, str):
        ...             raise TypeError("TextTarget stores str")
    """

    #: what ``check`` accepts, named in error messages
    accepts: ClassVar[str] = "any object"
    #: how to fix data this format failed to write, for the SaveError message
    fix: ClassVar[str] = ("Convert the data to what this format stores, or save it with a "
                          "task class whose format stores it (TaskPickle stores any "
                          "picklable object).")

    def __init__(self, path: str | os.PathLike[str]):
        if type(path) is _PATH:
            self.path = path
        elif isinstance(path, storage.RemotePath) or storage.is_remote(path):
            self.path = storage.RemotePath(os.fspath(path))  # type: ignore[assignment]
        else:
            self.path = pathlib.Path(path)
        #: the task whose output this is (set by the task), and the output's name
        self.owner: Owner | None = None
        self.key = "data"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # -- to implement in a subclass ------------------------------------------------------
    def read(self, path: pathlib.Path, **kwargs: Any) -> Any:
        """Read the object stored at ``path``."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement read(path); subclasses of DataTarget "
            f"must implement read(path, **kwargs) and write(data, path, **kwargs)"
        )

    def write(self, data: Any, path: pathlib.Path, **kwargs: Any) -> None:
        """Write ``data`` to ``path`` (a fresh temp file; pipeflow publishes it)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement write(data, path); subclasses of "
            f"DataTarget must implement read(path, **kwargs) and write(data, path, **kwargs)"
        )

    def verify(self, path: pathlib.Path) -> None:
        """Check that the file just written at ``path`` (a temp file) reads back.

        Called before it is published; raising refuses the save (a SaveError). The base
        class checks nothing: formats whose writer can succeed on data their reader then
        fails on (pickle) read the file here.
        """

    def check(self, data: Any) -> None:
        """Refuse data this format cannot store; called before any byte is written.

        Raise ``TypeError`` when ``data`` is of a type the format does not store, and
        ``ValueError`` when its content cannot be stored faithfully (say which part, and how
        to fix it). Either becomes a :class:`~pipeflow.errors.SaveError`.
        """

    # -- the public API --------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether the output has been published."""
        if type(self.path) is _PATH:
            return os.path.exists(self.path)
        return storage.exists(os.fspath(self.path))

    def files(self) -> list[pathlib.Path]:
        """Every file that makes up this output (the main one first)."""
        return [self.path]

    def load(self, fun: Any = None, cached: bool = False, **kwargs: Any) -> Any:
        """Load the output.

        Args:
            fun: a reader ``fun(path, **kwargs)`` replacing :meth:`read` (d6tflow style);
                a bool here is taken as ``cached`` (d6tflow's positional call).
            cached: keep the loaded object in ``pipeflow.data`` and return that very
                object (shared with every other ``cached=True`` load: do not change it in
                place). With ``settings.cached`` on, loads are kept in memory too, but each
                load returns its own copy (cheap for DataFrames: pandas copies on write).
            **kwargs: passed to the reader.

        Raises:
            IncompleteTaskError: the output does not exist.
            LoadError: the format could not read the committed file back.
        """
        if isinstance(fun, bool):
            cached, fun = fun, None
        use_cache = cached or settings.cached
        if use_cache and self.path in cache.data:
            obj = cache.data[self.path]
            return obj if cached else cache.fresh(obj)
        records = self.owner.committed_files(self) if self.owner is not None else None
        if isinstance(self.path, storage.RemotePath):
            obj = self._read_remote(records, fun, kwargs)
        elif records is not None:
            obj = self._read_verified(records, fun, kwargs)
        elif not self.exists():
            raise IncompleteTaskError(
                f"cannot load {str(self.path)!r}: it does not exist, so the task that writes "
                f"it has not run or was reset. Run the flow first (flow.run())."
            )
        else:
            obj = self._read(fun, kwargs)
        if use_cache:
            cache.data[self.path] = obj
            return obj if cached else cache.fresh(obj)
        return obj

    def save(self, data: Any, fun: Any = None, **kwargs: Any) -> pathlib.Path:
        """Store ``data`` atomically.

        Args:
            data: the object to store.
            fun: name of a method of ``data`` that writes it to a path, e.g. ``'to_csv'``
                (d6tflow style); by default :meth:`write` is used.
            **kwargs: passed to the writer.

        Returns:
            The output path.

        Raises:
            SaveError: ``data`` cannot be stored in this format: its type, its content, or
                the writer failed on it (nothing is written or published).
        """
        self._publish(self._stage(data, fun, **kwargs))
        return self.path

    def _stage(self, data: Any, fun: Any = None, **kwargs: Any) -> Any:
        """First half of :meth:`save`: check and write ``data``, publish nothing yet.

        Returns what :meth:`_publish` publishes (or :meth:`_discard` throws away).
        """
        if isinstance(fun, str):
            method = fun

            def writer(p: pathlib.Path) -> None:
                getattr(data, method)(p, **kwargs)

            return self._write(lambda: {self.path: writer}, verify=False)
        self._check(data)
        return self._write(lambda: self._writers(data, **kwargs))

    def _discard(self, staged: Any) -> None:
        """Throw away what :meth:`_stage` wrote."""
        publishing.discard(staged)

    def invalidate(self) -> bool:
        """Delete the output (all its files). Returns True when nothing remains.

        Raises:
            UnsafePathError: its folder resolves outside its task's location (a symlink).
        """
        root = self.owner.data_root() if self.owner is not None else None
        for path in self.files():
            if path.is_symlink() or path.exists():
                ensure_inside(path.parent, root)
                path.unlink(missing_ok=True)
            cache.data.pop(path, None)
        return not self.exists()

    # -- internals ---------------------------------------------------------------------------
    def _read_verified(self, records: Sequence[FileRecord], fun: Any,
                       kwargs: dict[str, Any]) -> Any:
        """Read the output after checking every file against its commit record."""
        folder = str(self.path.parent)
        for rec in records:
            problem = rec.problem(folder, rehash=True)
            if problem is not None:
                if self.owner is not None:  # the task is not complete any more
                    self.owner.found_corrupt(self, records, problem)
                raise self._corrupt(problem)
        return self._read(fun, kwargs)

    def _read_remote(self, records: Sequence[FileRecord] | None, fun: Any,
                     kwargs: dict[str, Any]) -> Any:
        """Download the output's files to a local temp folder, check them, read them there.

        Each file is checked against its commit record (size and content hash) as it is
        on local disk, and read by the format's own reader (or ``fun``) from there: every
        format, your own too, reads remote outputs unchanged. The temp folder is removed
        afterwards.
        """
        remote: Any = self.path
        base = storage.read_folder()
        os.makedirs(base, exist_ok=True)
        folder = tempfile.mkdtemp(prefix="load-", dir=base)
        try:
            local = copy.copy(self)
            local.path = pathlib.Path(folder, remote.name)
            local.__dict__["_shown"] = remote
            wanted = {r.name: r for r in records} if records is not None else None
            for src, dst in zip(self.files(), local.files()):
                if wanted is not None and src.name not in wanted:
                    continue  # (an optional sidecar not written)
                try:
                    found = storage.get(os.fspath(src), dst)
                except OSError as exc:
                    raise LoadError(
                        f"cannot load output {self.key!r} of {self._owner_name()}: "
                        f"downloading {str(src)!r} failed ({exc}). Nothing was loaded; "
                        f"check the connection to the storage, then load again.") from exc
                if wanted is None:
                    if not found and src == remote:
                        raise IncompleteTaskError(
                            f"cannot load {str(remote)!r}: it does not exist, so the task "
                            f"that writes it has not run or was reset. Run the flow first "
                            f"(flow.run()).")
                    continue
                rec = wanted[src.name]
                problem = (rec.problem(folder, rehash=True) if found
                           else f"{rec.name} was deleted outside pipeflow")
                if problem is not None:
                    if self.owner is not None and records is not None:
                        self.owner.found_corrupt(self, records, problem)
                    raise self._corrupt(problem)
            return local._read(fun, kwargs)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _owner_name(self) -> str:
        return self.owner.display_name() if self.owner is not None else "the task"

    def _shown_path(self) -> Any:
        """The path named in messages (a remote output's URL, not its local copy)."""
        return self.__dict__.get("_shown", self.path)

    def _read(self, fun: Any, kwargs: dict[str, Any]) -> Any:
        """Read the file with ``fun`` or :meth:`read`; a reader's failure is a LoadError."""
        try:
            return fun(self.path, **kwargs) if callable(fun) else self.read(self.path, **kwargs)
        except PipeflowError:
            raise
        except OSError as exc:
            if exc.errno is None:  # a library's own error about the content (pyarrow)
                raise self._unreadable(exc) from exc
            raise self._corrupt(f"{self.path.name} cannot be read ({exc.strerror})") from exc
        except Exception as exc:
            raise self._unreadable(exc) from exc

    def _unreadable(self, exc: BaseException) -> LoadError:
        who = self.owner.display_name() if self.owner is not None else "the task"
        args = "" if isinstance(exc, pickle.UnpicklingError) else (
            "the reader arguments given to load(), or ")
        return LoadError(
            f"cannot load output {self.key!r} of {who} with {type(self).__name__}: "
            f"{_cause(exc)}. The file is the one the task committed, but the format cannot "
            f"read it back. File: {str(self._shown_path())!r}. Check {args}the code its "
            f"objects need "
            f"(classes renamed or removed since it was saved); to write it again: "
            f"flow.reset({who.split('(')[0]}) then flow.run()."
        )

    def _corrupt(self, problem: str) -> CorruptOutputError:
        who = self.owner.display_name() if self.owner is not None else "the task"
        return CorruptOutputError(
            f"cannot load output {self.key!r} of {who}: {problem}, so it no longer holds "
            f"what the task's last successful run saved; it was not loaded. "
            f"File: {str(self._shown_path())!r}. Reset the task and run it again: "
            f"flow.reset({who.split('(')[0]}) then flow.run() (or {who}.reset())."
        )

    def _who(self) -> str:
        return f"{self.owner.display_name()}: " if self.owner is not None else ""

    def _what(self) -> str:
        """``output 'data' of Train(model='x') as PqPandasTarget`` (for messages)."""
        who = f" of {self.owner.display_name()}" if self.owner is not None else ""
        return f"output {self.key!r}{who} as {type(self).__name__}"

    def _check(self, data: Any) -> None:
        try:
            self.check(data)
        except TypeError as exc:
            raise SaveError(
                f"cannot save {self._what()} to {str(self.path)!r}: it is a "
                f"{type(data).__module__}.{type(data).__qualname__}, but {type(self).__name__} "
                f"stores {self.accepts}. {exc} Nothing was written. Convert the data, or pick "
                f"a task class whose target stores this type (e.g. TaskPickle)."
            ) from exc
        except ValueError as exc:
            raise SaveError(
                f"cannot save {self._what()} to {str(self.path)!r}: {exc} Nothing was written."
            ) from exc

    def _unstorable(self, exc: BaseException) -> SaveError:
        return SaveError(
            f"cannot save {self._what()} to {str(self.path)!r}: the writer failed: "
            f"{_cause(exc)}. Nothing was written. {self.fix}"
        )

    def _writers(self, data: Any, **kwargs: Any) -> dict[pathlib.Path, Writer | None]:
        """The files to publish for ``data``: final path -> writer (None: delete it)."""

        def writer(p: pathlib.Path) -> None:
            self.write(data, p, **kwargs)

        return {self.path: writer}

    def _write(self, writers: Callable[[], dict[pathlib.Path, Writer | None]],
               verify: bool = True) -> publishing.Staged:
        """Write the files (``writers()`` gives them) to temp files beside their places.

        A writer's failure, or (``verify``) a written file :meth:`verify` cannot read
        back, is a SaveError naming the task, output, format and fix; the temp files are
        gone, nothing is published. Saved by hand (not by a run, whose folders were
        checked), the folder is checked to lie inside the task's location first.
        """
        stg = publishing.current()
        if self.owner is not None and not (stg is not None and stg.owns(self.path)):
            ensure_inside(self.path.parent, self.owner.data_root(), self.owner.display_name())
        try:
            staged = publishing.stage(writers(), self._who)
        except PipeflowError:
            raise
        except Exception as exc:
            raise self._unstorable(exc) from exc
        item = staged.get(self.path)
        if verify and item is not None:
            try:
                self.verify(pathlib.Path(item[0]))
            except BaseException as exc:
                publishing.discard(staged)
                if isinstance(exc, PipeflowError) or not isinstance(exc, Exception):
                    raise
                raise SaveError(
                    f"cannot save {self._what()} to {str(self.path)!r}: it was written, but "
                    f"reading it back failed ({_cause(exc)}), so it would not load. Nothing "
                    f"was published. {self.fix}"
                ) from exc
        return staged

    def _publish(self, staged: publishing.Staged) -> None:
        """Publish files :meth:`_write` staged (or hand them to the running task's staging)."""
        stg = publishing.current()
        if stg is not None and stg.owns(self.path):
            stg.take(staged)
            return
        if self.owner is None:
            publishing.publish(staged, self.path)
            return
        try:
            self.owner.record_save(self, lambda: publishing.publish(staged, self.path))
        except BaseException:
            publishing.discard(staged)
            raise


def _cause(exc: BaseException) -> str:
    """``Type: message`` of a library's exception, shortened to its first lines."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()][:3]
    text = " ".join(ln.strip() for ln in lines).rstrip(".")
    if len(text) > 500:
        text = text[:500] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class CacheTarget(DataTarget):
    """Keeps the object in memory (``pipeflow.data``); nothing is written to disk.

    Its ``path`` is a ``str``, as in d6tflow (where it is a luigi ``LocalTarget`` path): it
    names the object in ``pipeflow.data``, it is not a file. A load returns a copy of the
    object (cheap for DataFrames), so changing it does not change what the next load gets;
    ``load(cached=True)`` returns the stored object itself.

    Example:
        >>> t = CacheTarget("data/Task/Task__99914b932b-data.cache")
        >>> _ = t.save({"a": 1}); t.load()
        {'a': 1}
    """

    path: str  # type: ignore[assignment]

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        self.path = os.fspath(pathlib.Path(path))  # type: ignore[assignment]

    def exists(self) -> bool:
        """Whether the object is in memory."""
        return self.path in cache.data

    def files(self) -> list[pathlib.Path]:
        """The path the object is kept under (no file is written there)."""
        return [pathlib.Path(self.path)]

    def load(self, fun: Any = None, cached: bool = False, **kwargs: Any) -> Any:
        """Return a copy of the object kept in memory (the object itself with ``cached``)."""
        if isinstance(fun, bool):  # d6tflow's positional load(cached)
            cached = fun
        if self.path not in cache.data:
            raise IncompleteTaskError(
                f"cannot load {str(self.path)!r}: it is not in memory, so the task that "
                f"saves it has not run in this Python process (cache outputs live only in "
                f"memory) or was reset. Run the flow first (flow.run())."
            )
        obj = cache.data[self.path]
        return obj if cached else cache.fresh(obj)

    def save(self, data: Any, fun: Any = None, **kwargs: Any) -> str:  # type: ignore[override]
        """Keep a copy of ``data`` in memory (staged until the running task succeeds).

        A copy, so that changing ``data`` afterwards does not change the saved output.
        """
        self._publish(self._stage(data))
        return self.path

    def _stage(self, data: Any, fun: Any = None, **kwargs: Any) -> Any:
        """Check ``data`` and copy it (nothing is kept yet)."""
        self._check(data)
        return cache.fresh(data)

    def _discard(self, staged: Any) -> None:
        """Nothing to throw away: the copy is dropped with the last reference to it."""

    def _publish(self, kept: Any) -> None:  # type: ignore[override]
        """Keep the copy in memory (in the running task's staging during a run)."""
        stg = publishing.current()
        if stg is not None and stg.owns(pathlib.Path(self.path)):
            stg.memory[self.path] = kept
        else:
            cache.data[self.path] = kept

    def invalidate(self) -> bool:
        """Drop the object from memory."""
        cache.data.pop(self.path, None)
        return True


class PdCacheTarget(CacheTarget):
    """Keeps a pandas DataFrame in memory."""

    accepts = "a pandas DataFrame"

    def check(self, data: Any) -> None:
        """Accept only DataFrames."""
        if not isinstance(data, _pandas().DataFrame):
            raise TypeError("Expected a pandas.DataFrame.")


class _PandasFileTarget(DataTarget):
    accepts = "a pandas DataFrame"

    def check(self, data: Any) -> None:
        """Accept only DataFrames whose content the format stores (see :meth:`check_frame`)."""
        if not isinstance(data, _pandas().DataFrame):
            raise TypeError("Expected a pandas.DataFrame.")
        self.check_frame(data)

    def check_frame(self, df: pd.DataFrame) -> None:
        """Raise ValueError (saying how to fix it) for a frame the format would not store."""


def _labels(index: pd.Index) -> list[list[Any]]:
    """The labels of each level of a (Multi)Index."""
    if index.nlevels == 1:
        return [list(index)]
    return [list(index.get_level_values(i)) for i in range(index.nlevels)]


def _duplicates(labels: Sequence[Any]) -> list[Any]:
    seen: set[Any] = set()
    dups = []
    for label in labels:
        if label in seen and label not in dups:
            dups.append(label)
        seen.add(label)
    return dups


_RENAME = ("Rename them (e.g. df.columns = [f'col_{i}' for i in range(df.shape[1])]), or "
           "save the frame with TaskPickle, which stores any DataFrame exactly.")


class PqPandasTarget(_PandasFileTarget):
    """A DataFrame in a parquet file (pyarrow, ``snappy`` compression by default).

    snappy is pyarrow's own default: it writes and reads several times faster than gzip
    (d6tflow's default) for a modestly larger file.
    """

    compression: ClassVar[str | None] = "snappy"
    fix = ("Parquet stores one type per column: convert a column mixing types "
           "(df[col] = df[col].astype(str)), or save the frame with TaskPickle, which stores "
           "any DataFrame exactly.")

    def check_frame(self, df: pd.DataFrame) -> None:
        """Column names distinct and, level by level, all str or all int; index names str.

        Others come back changed (``[0, 'a']`` loads as ``['0', 'a']``) or not at all (an
        index named ``0`` beside a column ``0``); a frame with rows but no columns loads
        with no rows.
        """
        for level in _labels(df.columns):
            if not (all(isinstance(c, str) for c in level)
                    or all(_is_int(c) for c in level)):
                odd = next(c for c in level if not isinstance(c, str))
                raise ValueError(
                    f"its column names are not all strings (nor all integers), e.g. {odd!r} "
                    f"({type(odd).__name__}): parquet keeps names as text, so they would load "
                    f"changed ({odd!r} as {str(odd)!r}). {_RENAME}")
        dups = _duplicates(list(df.columns))
        if dups:
            raise ValueError(
                f"its column names are not distinct ({dups[:5]!r} appear more than once): "
                f"parquet stores each column under its name. {_RENAME}")
        odd_names = [n for n in df.index.names if n is not None and not isinstance(n, str)]
        if odd_names:
            raise ValueError(
                f"its index has a name that is not a string, {odd_names[0]!r}: parquet keeps "
                f"index names as text (so it would load as {str(odd_names[0])!r}, or not at "
                f"all if a column has that name). Rename it (df.index.name = "
                f"{str(odd_names[0])!r}), or save the frame with TaskPickle.")
        if df.shape[1] == 0 and len(df):
            raise ValueError(
                f"it has {len(df)} rows but no columns: parquet counts rows by their column "
                f"values, so it would load with no rows. Add a column, or save the frame with "
                f"TaskPickle.")

    def read(self, path: pathlib.Path, **kwargs: Any) -> pd.DataFrame:
        """Read the parquet file."""
        return _pandas().read_parquet(path, engine="pyarrow", **kwargs)

    def write(self, data: pd.DataFrame, path: pathlib.Path, **kwargs: Any) -> None:
        """Write the parquet file."""
        kwargs.setdefault("compression", self.compression)
        data.to_parquet(path, engine="pyarrow", **kwargs)


class _IndexedTextTarget(_PandasFileTarget):
    """A DataFrame format that cannot store an index itself (CSV, Excel).

    A default RangeIndex is not written, so the file stays clean. Any other index is
    written as leading columns and described in a small sidecar file
    (``.{name}.index.json``) so that loading restores it, names and dtypes included. The
    sidecar also keeps the number of rows where the file alone would lose some (a frame
    with no columns; in Excel, trailing rows with no values).

    Values are stored as text (CSV) or cells (Excel): on loading, pandas infers each
    column's dtype again, as ``read_csv``/``read_excel`` do.
    """

    fix = ("Convert the columns the writer failed on (e.g. df[col] = df[col].astype(str)), "
           "or save the frame with TaskPqPandas or TaskPickle.")

    def check_frame(self, df: pd.DataFrame) -> None:
        """One header row of distinct, non-empty names (as text).

        Others would load changed: a second header row read as data, ``['a', 'a']`` as
        ``['a', 'a.1']``, ``''`` as ``'Unnamed: 0'``.
        """
        if df.columns.nlevels > 1:
            raise ValueError(
                f"its columns are a MultiIndex ({df.columns.nlevels} levels): "
                f"{type(self).__name__} writes one header row, so the column names would "
                f"load as data. Flatten them (df.columns = ['_'.join(map(str, c)) for c in "
                f"df.columns]), or save the frame with TaskPqPandas or TaskPickle.")
        # a missing name (None, NaN) is written as an empty one
        names = ["" if c is None or c != c else str(c) for c in df.columns]
        dups = _duplicates(names)
        if dups:
            raise ValueError(
                f"its column names are not distinct as text ({dups[:5]!r} appear more than "
                f"once): they would load renamed ('a', 'a.1'). {_RENAME}")
        if "" in names:
            raise ValueError(
                f"a column name is empty ({df.columns[names.index('')]!r}): it would load as "
                f"'Unnamed: {names.index('')}'. {_RENAME}")

    def keeps_rows(self, frame: pd.DataFrame) -> bool:
        """Whether the file alone keeps every row of ``frame`` (as written)."""
        return frame.shape[1] > 0

    def sidecar(self) -> pathlib.Path:
        """The file describing the stored index."""
        return self.path.with_name(f".{self.path.name}.index.json")

    def files(self) -> list[pathlib.Path]:
        """The data file and its index sidecar."""
        return [self.path, self.sidecar()]

    def _writers(self, data: Any, **kwargs: Any) -> dict[pathlib.Path, Writer | None]:
        frame, spec = _split_index(data)
        if not self.keeps_rows(frame):
            spec = {**(spec or {}), "rows": len(frame)}

        def write_data(p: pathlib.Path) -> None:
            self.write(frame, p, **kwargs)

        def write_spec(p: pathlib.Path) -> None:
            p.write_text(json.dumps(spec))

        return {self.sidecar(): write_spec if spec else None, self.path: write_data}

    #: reader arguments that choose the columns or index themselves: no index is restored
    CHOOSE_COLUMNS: ClassVar[frozenset[str]] = frozenset(
        {"index_col", "usecols", "names", "header"})

    def read(self, path: pathlib.Path, **kwargs: Any) -> pd.DataFrame:
        """Read the file and restore the index described by the sidecar.

        Reader arguments (``low_memory=False``, ``parse_dates=...``) keep the index; those
        that choose columns or the index themselves (``index_col``, ``usecols``, ``names``,
        ``header``) get the file as written.
        """
        frame = self.read_frame(path, **kwargs)
        sidecar = self.sidecar()
        if not self.CHOOSE_COLUMNS & kwargs.keys() and sidecar.exists():
            frame = _restore_index(frame, json.loads(sidecar.read_text()))
        return frame

    def read_frame(self, path: pathlib.Path, **kwargs: Any) -> pd.DataFrame:
        """Read the file as written (index columns still columns)."""
        raise NotImplementedError


def _is_int(x: Any) -> bool:
    """An integer label (Python's or NumPy's), not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _split_index(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Turn a non-default index into columns; return the frame and how to restore it."""
    idx = df.index
    default = isinstance(idx, _pandas().RangeIndex) and idx.start == 0 and idx.step == 1
    if default and idx.name is None:
        return df, None
    columns: list[str] = []
    taken = {str(c) for c in df.columns}
    for i, name in enumerate(idx.names):
        usable = isinstance(name, str) and name not in taken
        if not usable:  # a frame loaded without its index may hold '__index_level_0__'
            name = f"__index_level_{i}__"
            while name in taken:
                name = f"_{name}"
        columns.append(name)
        taken.add(name)
    flat = df.copy(deep=False)
    flat.index = idx.set_names(columns)
    spec = {
        "columns": columns,
        "names": [n if n is None or isinstance(n, (str, int, float)) else str(n)
                  for n in idx.names],
        "dtypes": [str(idx.get_level_values(i).dtype) for i in range(idx.nlevels)],
    }
    return flat.reset_index(), spec


def _restore_index(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Inverse of :func:`_split_index` (and restores the rows the file did not keep)."""
    rows = spec.get("rows")
    if isinstance(rows, int) and len(df) < rows:
        df = df.reindex(range(rows))
        df.index = _pandas().RangeIndex(rows)
    if "columns" not in spec:
        return df
    for col, dtype in zip(spec["columns"], spec["dtypes"]):
        if col not in df.columns:
            return df
        if dtype.startswith("datetime64"):
            df[col] = _pandas().to_datetime(df[col])
        elif dtype not in ("object", "str", "string"):
            with contextlib.suppress(TypeError, ValueError):
                df[col] = df[col].astype(dtype)
    df = df.set_index(spec["columns"])
    df.index = df.index.set_names(spec["names"])
    return df


class CSVPandasTarget(_IndexedTextTarget):
    """A DataFrame in a CSV file; the index survives the round trip."""

    compression: ClassVar[str | None] = None

    def read_frame(self, path: pathlib.Path, **kwargs: Any) -> pd.DataFrame:
        """Read the CSV file."""
        kwargs.setdefault("compression", self.compression)
        # a line holding only blanks is a row (one column of ' ', or of NaN as older
        # pandas wrote it), not nothing
        kwargs.setdefault("skip_blank_lines", False)
        pandas = _pandas()
        try:
            return pandas.read_csv(path, **kwargs)
        except pandas.errors.EmptyDataError:  # a frame with no columns: nothing to parse
            return pandas.DataFrame()

    def write(self, data: pd.DataFrame, path: pathlib.Path, **kwargs: Any) -> None:
        r"""Write the CSV file.

        Lines end with ``\n``; with ``\r\n`` when a string holds a carriage return, so
        that the string is quoted (unquoted, a reader takes it for a line break).
        """
        kwargs.setdefault("compression", self.compression)
        kwargs.setdefault("index", False)
        if "lineterminator" not in kwargs and _holds(data, "\r"):
            kwargs["lineterminator"] = "\r\n"
        data.to_csv(path, **kwargs)


def _holds(df: pd.DataFrame, char: str) -> bool:
    """Whether a column name or a string value of ``df`` contains ``char``."""
    pandas = _pandas()
    if any(isinstance(c, str) and char in c for c in df.columns):
        return True
    for j in range(df.shape[1]):
        col = df.iloc[:, j]
        if isinstance(col.dtype, pandas.CategoricalDtype):
            col = pandas.Series(col.dtype.categories)
        if isinstance(col.dtype, pandas.StringDtype):
            if col.str.contains(char, regex=False).fillna(False).any():
                return True
        elif col.dtype.kind == "O" and any(isinstance(v, str) and char in v for v in col):
            return True
    return False


class CSVGZPandasTarget(CSVPandasTarget):
    """A DataFrame in a gzip-compressed CSV file."""

    compression = "gzip"


#: the package to pip install for an importable module
_PACKAGES = {"tables": "tables", "openpyxl": "openpyxl"}


def require(module: str, extra: str, target: object) -> None:
    """Check that an optional package a format needs is installed.

    Raises:
        MissingDependencyError: it is not, with the pip command that installs it.
    """
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{type(target).__name__} needs the package {module!r}, which is not installed. "
            f"Install it (pipeflow's {extra!r} extra: pip install {_PACKAGES[module]!r}, or "
            f"pip install -e '.[{extra}]' in a clone of pipeflow)."
        ) from exc


class ExcelPandasTarget(_IndexedTextTarget):
    """A DataFrame in an Excel file (needs the ``excel`` extra: openpyxl)."""

    #: the most characters an Excel cell holds (longer strings are cut when written)
    CELL_MAX: ClassVar[int] = 32767
    #: the largest number an Excel cell holds
    NUMBER_MAX: ClassVar[float] = 9.99999999999999e307
    fix = ("Excel cells cannot hold control characters (other than tab and newline) nor "
           "some types: clean or convert the columns the writer failed on (e.g. "
           "df[col] = df[col].astype(str)), or save the frame with TaskPqPandas or "
           "TaskPickle.")

    def check_frame(self, df: pd.DataFrame) -> None:
        """As for CSV; also no time zones and no string longer than an Excel cell holds.

        Column names are all strings or all integers (a header cell keeps its type, so
        ``[0, 1.5]`` would load as ``[0.0, 1.5]``).
        """
        super().check_frame(df)
        names = list(df.columns)
        if not (all(isinstance(c, str) for c in names) or all(_is_int(c) for c in names)):
            odd = next(c for c in names if not isinstance(c, str))
            raise ValueError(
                f"its column names are not all strings (nor all integers), e.g. {odd!r} "
                f"({type(odd).__name__}): Excel header cells keep numbers as numbers, so "
                f"mixed names would load changed. {_RENAME}")
        import numpy as np  # (pandas' own dependency, imported with it)

        pandas = _pandas()
        index = [df.index.get_level_values(i) for i in range(df.index.nlevels)]
        for name, values in [*((f"index level {i}", v) for i, v in enumerate(index)),
                             *((f"column {c!r}", df.iloc[:, j])
                               for j, c in enumerate(df.columns))]:
            if isinstance(values.dtype, pandas.DatetimeTZDtype):
                raise ValueError(
                    f"{name} holds datetimes with a time zone ({values.dtype.tz}), which "
                    f"Excel cannot store. Convert them to local times first "
                    f"(.dt.tz_localize(None), or .dt.tz_convert(None) for UTC), or save the "
                    f"frame with TaskPqPandas or TaskPickle.")
            big = self._big_int(values)
            if big is not None:
                raise ValueError(
                    f"{name} holds the integer {big}, beyond 2**53 in magnitude: an Excel "
                    f"cell holds a number as a float, which cannot store it exactly, so it "
                    f"would load changed. Store the column as text (df[col] = "
                    f"df[col].astype(str)), or save the frame with TaskPqPandas (parquet) or "
                    f"TaskPickle.")
            if values.dtype.kind == "f":
                numbers = np.abs(values.to_numpy(dtype="float64", na_value=0.0))
                biggest = float(numbers[np.isfinite(numbers)].max(initial=0.0))
                if biggest > self.NUMBER_MAX:
                    raise ValueError(
                        f"{name} holds {biggest!r}, larger than the largest number "
                        f"an Excel cell holds ({self.NUMBER_MAX!r}). Scale it down, or save "
                        f"the frame with TaskPqPandas or TaskPickle.")
            if values.dtype.kind in "OSU" or isinstance(values.dtype, pandas.StringDtype):
                longest = values.map(lambda v: len(v) if isinstance(v, str) else 0).max()
                if longest is not None and longest > self.CELL_MAX:
                    raise ValueError(
                        f"{name} holds a string of {longest} characters; an Excel cell holds "
                        f"at most {self.CELL_MAX}, so it would be cut. Shorten it, or save "
                        f"the frame with TaskCSVPandas, TaskPqPandas or TaskPickle.")
        long_names = [c for c in df.columns if len(str(c)) > self.CELL_MAX]
        if long_names:
            raise ValueError(
                f"a column name has {len(str(long_names[0]))} characters; an Excel cell "
                f"holds at most {self.CELL_MAX}. {_RENAME}")

    #: the largest magnitude of an integer a float (an Excel number) holds exactly, with all
    #: those below it
    INT_EXACT: ClassVar[int] = 2**53

    def _big_int(self, values: pd.Series | pd.Index) -> int | None:
        """The first integer in ``values`` an Excel cell cannot hold exactly, or None."""
        kind = values.dtype.kind
        if kind in "iu":
            present = values[values.notna()] if values.hasnans else values
            if not len(present):
                return None
            low, high = int(present.min()), int(present.max())
            if max(abs(low), abs(high)) <= self.INT_EXACT:
                return None
            return next(int(v) for v in present if abs(int(v)) > self.INT_EXACT)
        if kind == "O":
            return next((int(v) for v in values if isinstance(v, numbers.Integral)
                         and not isinstance(v, bool) and abs(int(v)) > self.INT_EXACT), None)
        return None

    def keeps_rows(self, frame: pd.DataFrame) -> bool:
        """Excel drops trailing rows of empty cells: then their count goes in the sidecar."""
        if frame.shape[1] == 0:
            return False
        if not len(frame):
            return True
        return not all(v is None or v == "" or _pandas().isna(v) is True
                       for v in frame.iloc[-1])

    def read_frame(self, path: pathlib.Path, **kwargs: Any) -> pd.DataFrame:
        """Read the first sheet."""
        require("openpyxl", "excel", self)
        return _pandas().read_excel(path, engine="openpyxl", **kwargs)

    def write(self, data: pd.DataFrame, path: pathlib.Path, **kwargs: Any) -> None:
        """Write one sheet."""
        require("openpyxl", "excel", self)
        kwargs.setdefault("index", False)
        data.to_excel(path, engine="openpyxl", **kwargs)


class JsonTarget(DataTarget):
    """A JSON document (dicts, lists, numbers, strings, booleans, None).

    The file holds ``{"data": obj}``, d6tflow's layout, so data dirs written by d6tflow load
    unchanged and files written here load in d6tflow. As in any JSON, tuples load as lists
    and dict keys as strings (``{1: 'a'}`` as ``{'1': 'a'}``); a dict whose keys would
    become the same string is refused.
    """

    accepts = "JSON-serializable data (dict, list, str, number, bool, None)"

    def check(self, data: Any) -> None:
        """Serialize once to catch unsupported types before writing."""
        try:
            json.dumps(data)
        except RecursionError as exc:
            raise ValueError(
                "it is nested too deeply to be written as JSON (Python's recursion limit). "
                "Flatten it, or save it with TaskPickle.") from exc
        except (TypeError, ValueError) as exc:
            raise TypeError(str(exc)) from exc
        clash = _key_clash(data)
        if clash is not None:
            raise ValueError(
                f"a dict has keys {clash[0]!r} and {clash[1]!r}, which JSON writes as the same "
                f"string {_json_key(clash[0])!r}, so one value would be lost. Make the keys "
                f"distinct as strings, or save it with TaskPickle.")

    def read(self, path: pathlib.Path, **kwargs: Any) -> Any:
        """Parse the JSON file and unwrap ``{"data": obj}``."""
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh, **kwargs)
        return doc["data"] if isinstance(doc, dict) and list(doc) == ["data"] else doc

    def _writers(self, data: Any, **kwargs: Any) -> dict[pathlib.Path, Writer | None]:
        if type(self).write is not JsonTarget.write:  # a subclass writes its own way
            return super()._writers(data, **kwargs)
        kwargs.setdefault("indent", 4)
        # JSON is small next to the objects it is made from: encoded at once, written once
        body = json.dumps({"data": data}, **kwargs).encode("utf-8")

        def dump(fh: BinaryIO) -> None:
            fh.write(body)

        return {self.path: publishing.Stream(dump)}

    def write(self, data: Any, path: pathlib.Path, **kwargs: Any) -> None:
        """Write ``{"data": obj}`` as indented UTF-8 JSON."""
        kwargs.setdefault("indent", 4)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"data": data}, fh, **kwargs)


def _json_key(key: Any) -> str:
    """The string ``json`` writes for a dict key."""
    return next(iter(json.loads(json.dumps({key: 0}))))


def _key_clash(data: Any) -> tuple[Any, Any] | None:
    """Two keys of a dict in ``data`` that JSON writes as the same string, if any."""
    stack = [data]
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict):
            if not all(type(k) is str for k in obj):
                seen: dict[str, Any] = {}
                for k in obj:
                    text = _json_key(k)
                    if text in seen:
                        return seen[text], k
                    seen[text] = k
            stack.extend([v for v in obj.values() if isinstance(v, (dict, list, tuple))])
        elif isinstance(obj, (list, tuple)):
            stack.extend([v for v in obj if isinstance(v, (dict, list, tuple))])
    return None


#: packages whose objects always unpickle where they were pickled
_REBUILDS = frozenset({"builtins", "numpy", "pandas", "pyarrow", "pickle", "datetime",
                       "decimal", "fractions", "collections", "pathlib", "uuid", "zoneinfo",
                       "re"})


class _Pickler(pickle.Pickler):
    """A pickler that notes whether it met an object of another package (``foreign``).

    Only such an object can pickle and then fail to unpickle (an ``__init__`` or
    ``__reduce__`` of its own): a save without any needs no read-back.
    """

    foreign = False

    def reducer_override(self, obj: Any) -> Any:
        """Note the object's package; pickle it as usual."""
        package = type(obj).__module__.partition(".")[0]
        if not self.foreign and package not in _REBUILDS and not package.startswith("_cython"):
            self.foreign = True  # (a Cython function is pickled by name, as a def is)
        return NotImplemented


class PickleTarget(DataTarget):
    """Any picklable Python object (models, dicts, arrays...).

    Unpickling runs code named in the file, so a task's pickle is unpickled only from bytes
    whose hash matches the one pipeflow recorded when it committed them: a file planted or
    altered outside pipeflow is refused before any of it is unpickled.
    """

    fix = ("Pickle stores objects Python can rebuild by name: not generators, lambdas, "
           "functions or classes defined inside functions, open files, locks or "
           "connections, nor exceptions whose __init__ takes other arguments than it passes "
           "to Exception.__init__. Save their data instead (a list instead of a generator, "
           "a module-level def instead of a lambda).")
    #: read each saved file back once before publishing it, so that an object that pickles
    #: but cannot be rebuilt is refused at save(). Skipped when everything pickled is of
    #: Python's, NumPy's, pandas' or pyarrow's own types (they rebuild); False: never.
    verify_saves: ClassVar[bool] = True

    def verify(self, path: pathlib.Path) -> None:
        """Read the file just written back (see :attr:`verify_saves`): it must load."""
        sure = self.__dict__.pop("_rebuilds", False)  # set by the pickler just used
        if self.verify_saves and not sure:
            self.read(path)

    def _read_verified(self, records: Sequence[FileRecord], fun: Any,
                       kwargs: dict[str, Any]) -> Any:
        if callable(fun) or len(records) != 1 or type(self).read is not PickleTarget.read:
            return super()._read_verified(records, fun, kwargs)  # (a subclass reads its way)
        # Hash and unpickle the very same bytes: a file swapped in between cannot slip through.
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise self._corrupt(f"{self.path.name} cannot be read ({exc.strerror})") from exc
        rec = records[0]
        if len(data) != rec.size or hash_bytes(data) != rec.digest:
            raise self._corrupt(
                f"{rec.name} was changed outside pipeflow (its content no longer matches the "
                f"hash recorded when it was committed; it was not unpickled)")
        try:
            return pickle.loads(data, **kwargs)
        except Exception as exc:
            raise self._unreadable(exc) from exc

    def _writers(self, data: Any, **kwargs: Any) -> dict[pathlib.Path, Writer | None]:
        if type(self).write is not PickleTarget.write:  # a subclass writes its own way
            return super()._writers(data, **kwargs)
        kwargs.setdefault("protocol", pickle.HIGHEST_PROTOCOL)

        def dump(fh: BinaryIO) -> None:
            pickler = _Pickler(fh, **kwargs)
            pickler.dump(data)
            self.__dict__["_rebuilds"] = not pickler.foreign

        return {self.path: publishing.Stream(dump)}

    def read(self, path: pathlib.Path, **kwargs: Any) -> Any:
        """Unpickle the file."""
        with open(path, "rb") as fh:
            return pickle.load(fh, **kwargs)

    def write(self, data: Any, path: pathlib.Path, **kwargs: Any) -> None:
        """Pickle ``data`` with the highest protocol."""
        kwargs.setdefault("protocol", pickle.HIGHEST_PROTOCOL)
        with open(path, "wb") as fh:
            pickle.dump(data, fh, **kwargs)
