"""Where outputs live: the flow context, task locations and safe names.

Output files keep d6tflow's layout::

    {location}/env={env}/{task_group}/{TaskFamily or target_dir}/{task_id}-{key}.{ext}

The *location* is a folder, relative to the working directory or absolute, as in d6tflow:
a Workflow's ``path`` (``Workflow(Train, path='data/exp1')``), else a task instance's
``path`` (``Train(path=...)``), else the task class's ``path`` attribute, else the data dir
(``pipeflow.set_dir``). A Workflow with an ``env`` but no ``path`` uses its default task
class's ``path`` or the data dir. These folders are the programmer's own code, so any folder
is accepted; what is not the programmer's code cannot climb out of them: ``env`` names and
``task_group`` are single folder names (no ``..``, no separator), ``target_dir`` stays below
the location, and parameter values only ever appear inside file names (luigi's task id).

A Workflow's location travels in a :class:`FlowContext` held in a context variable rather
than being written onto task instances: luigi caches task instances by parameters, so writing
a Workflow's path onto one would leak it into every other Workflow using the same task (a
d6tflow bug). A task instance made with a location of its own (``Train(path=...)``, or
returned by ``flow.get_task()``) carries its context as its *home*: outside any flow it acts
as if inside its flow.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeflow import settings, storage
from pipeflow.errors import ParameterError, UnsafePathError

#: longest file or folder name most file systems accept, in bytes
NAME_MAX = 255
#: longest output file name: leaves room for the temp-file and index-sidecar decorations
#: (``.{name}.index.json.tmp-XXXXXXXX``) that are written beside it
OUTPUT_NAME_MAX = NAME_MAX - 40
#: the instance attribute holding a task's home context
HOME = "_pipeflow_home"


@dataclass(frozen=True)
class FlowContext:
    """What a Workflow contributes to its tasks while it previews, runs or loads them.

    Attributes:
        root: the folder replacing the data dir for the flow's outputs (relative to the
            working directory, or absolute); None: each task's own location.
        env: environment name; outputs go below ``{root}/env={env}``.
        flows: other Workflows attached with ``attach_flow``, by name.
    """

    root: pathlib.Path | None = None
    env: str | None = None
    flows: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: hashable identity of the places this context puts outputs (computed once: it is
    #: part of every output path lookup)
    key: tuple[object, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.root, self.env))

    @property
    def places(self) -> bool:
        """Whether this context decides where its tasks' outputs go."""
        return self.root is not None or bool(self.env)

    def top(self) -> pathlib.Path:
        """The location named by the user (its ``path``, else the data dir), env left out."""
        return settings.dirpath if self.root is None else self.root

    def base(self) -> pathlib.Path:
        """The folder outputs go below (env folder included) when :attr:`places` is set."""
        root = self.top()
        return root / f"env={self.env}" if self.env else root


DEFAULT = FlowContext()
_CURRENT: contextvars.ContextVar[FlowContext] = contextvars.ContextVar(
    "pipeflow_flow_context", default=DEFAULT  # noqa: B039 - frozen, never mutated
)


def current() -> FlowContext:
    """Return the flow context in force (the default one outside any Workflow call)."""
    return _CURRENT.get()


@contextlib.contextmanager
def flow_context(ctx: FlowContext) -> Iterator[FlowContext]:
    """Make ``ctx`` the flow context for the duration of the ``with`` block."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def home_of(task: object) -> FlowContext | None:
    """The home context of a task instance made with a location of its own (else None)."""
    return getattr(task, "__dict__", {}).get(HOME)


@contextlib.contextmanager
def at_home(tasks: Iterable[object]) -> Iterator[None]:
    """Outside any flow, act in the home context of ``tasks`` (the tasks they require too).

    Inside a flow (a Workflow call, a run) the flow's context stays: its tasks were placed
    there. Tasks from different homes cannot share a graph outside a flow: where their
    common upstream tasks live would be ambiguous.

    Raises:
        ParameterError: ``tasks`` come from Workflows with different locations.
    """
    if current() is not DEFAULT:
        yield
        return
    homes: dict[tuple[object, ...], FlowContext] = {}
    for task in tasks:
        if not hasattr(task, "data_root"):
            continue  # not a pipeflow task: it has no location
        home = home_of(task) or DEFAULT
        if home.key not in homes or home.flows:
            homes[home.key] = home
    if len(homes) > 1:
        where = "; ".join(f"({describe_context(h)})" for h in homes.values())
        raise ParameterError(
            f"these tasks come from places with different locations: {where}. Where the "
            f"tasks they require live would be ambiguous, so they cannot run or load together "
            f"outside a flow. Run or load them through their own Workflows (flow.run(), "
            f"flow.outputLoad()), or one location at a time."
        )
    home = next(iter(homes.values()), DEFAULT)
    if home is DEFAULT:
        yield
        return
    with flow_context(home):
        yield


def describe_context(ctx: FlowContext) -> str:
    """``path='data/exp', env='prod'`` for messages."""
    parts = [f"path={str(ctx.root)!r}"] if ctx.root is not None else []
    parts += [f"env={ctx.env!r}"] if ctx.env else []
    return ", ".join(parts) or "the data dir"


def location(value: object, what: str, owner: object) -> Any:
    """Check a folder the programmer gave (a ``path``): any folder, if it can be a file name.

    Args:
        value: a str or Path (or None/empty for "none given").
        what: the name of the setting, for the error message.
        owner: who gave it (a task or a Workflow), for the error message.

    Returns:
        The folder as given (relative to the working directory, or absolute), or None.

    Raises:
        UnsafePathError: it contains a NUL byte or cannot be encoded as a file name, or a
            folder name longer than the file system allows.
        ParameterError: a URL fsspec cannot use (see :func:`pipeflow.storage.parse`); a
            local ``file://`` URL gives the folder it names, any other URL a
            :class:`~pipeflow.storage.RemotePath`.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ParameterError(
            f"{owner}: {what}={value!r} must be a folder (a str or pathlib.Path), not "
            f"{type(value).__name__}."
        )
    text = os.fspath(value)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    _check_encodable(text, what, owner)
    path = settings.location_path(text, what, owner)
    for part in path.parts[isinstance(path, storage.RemotePath):]:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UnsafePathError(
                f"{owner}: {what}={text[:80]!r}... has a folder name the file system cannot "
                f"store (over {NAME_MAX} bytes). Use a shorter name."
            )
    return path


#: how :func:`name_part` names each setting in its messages, and an example of it
_KINDS = {"env": ("single folder name", "env='prod'"),
          "task_group": ("single folder name", "task_group='models'"),
          "target_dir": ("relative sub-folder of plain names", "target_dir='models/fit'"),
          "target_ext": ("plain file extension", "target_ext='csv' or 'csv.gz'"),
          "persist": ("plain output name", "persist=['data']")}


def name_part(value: object, what: str, owner: object, prefix: str = "",
              limit: int = NAME_MAX) -> str:
    """Check one name a file or folder name is built from: the one rule for all of them.

    ``env``, ``task_group``, each folder of ``target_dir``, ``target_ext`` and each output
    name (``persist``) go through it: a plain name that cannot climb out of its folder.

    Args:
        value: the name.
        what: the setting it comes from, for the error message.
        owner: who gave it (a task or a Workflow), for the error message.
        prefix: what is written before it in the file system (``env=``), counted in its
            length.
        limit: the longest ``prefix + value`` allowed, in bytes.

    Returns:
        The name.

    Raises:
        UnsafePathError: not a str, empty, ``.`` or ``..``, contains a slash or backslash or NUL,
            cannot be encoded as a file name, or is longer than ``limit`` bytes.
    """
    if not isinstance(value, str) or not value:
        raise UnsafePathError(
            f"{owner}: {what}={value!r} must be a non-empty str: it names files or folders.")
    _check_encodable(value, what, owner)
    if "/" in value or "\\" in value or os.sep in value or value in (".", ".."):
        kind, example = _KINDS.get(what, ("plain name", f"{what}='x'"))
        raise UnsafePathError(
            f"{owner}: {what}={value!r} must be a {kind}: it may not contain '/' or '\\' or "
            f"be '.' or '..', which could place or delete files outside the flow's folder. "
            f"Use a plain name such as {example}."
        )
    if len(os.fsencode(prefix + value)) > limit:
        raise UnsafePathError(
            f"{owner}: {what}={value[:40]!r}... is a name the file system cannot store "
            f"(over {limit} bytes). Use a shorter name."
        )
    return value


def folder_name(value: object, what: str, owner: object) -> str | None:
    """Check a single folder name that must not climb out (an ``env``, a ``task_group``).

    Returns:
        The name, or None when none was given (None or empty).

    Raises:
        ParameterError: ``value`` is not a str.
        UnsafePathError: as :func:`name_part`.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ParameterError(
            f"{owner}: {what}={value!r} must be a folder name (a str), not "
            f"{type(value).__name__}. Write e.g. {what}={str(value)!r}.")
    return name_part(value, what, owner, "env=" if what == "env" else "")


def _check_encodable(text: str, what: str, owner: object) -> None:
    try:
        os.fsencode(text)
        bad = "\x00" in text
    except UnicodeError:
        bad = True
    if bad:
        raise UnsafePathError(
            f"{owner}: {what}={text[:80]!r} contains a NUL byte or characters that cannot be "
            f"encoded as a file name. Use a plain folder name."
        )


#: pipeflow's own folder at the top of a location: run history, commit records, task locks
OWN_DIR = ".pipeflow"
#: below it, a tree mirroring the task folders, holding their commit records and lock files
RECORDS_DIR = "commits"


def records_folder(location: pathlib.Path, parts: Iterable[str]) -> pathlib.Path:
    """Where the commit records and lock of the task folder ``location/parts`` live.

    They are kept out of the task folders, so a task folder holds its outputs only (d6tflow
    code lists them, and a reset leaves the folder empty).
    """
    return location.joinpath(OWN_DIR, RECORDS_DIR, *parts)


def output_folder(record: pathlib.Path, location: pathlib.Path) -> pathlib.Path:
    """The task folder whose commit record is ``record`` (inverse of :func:`records_folder`).

    Raises:
        ValueError: ``record`` does not lie in ``location``'s records tree.
    """
    rel = record.parent.relative_to(location / OWN_DIR / RECORDS_DIR)
    return location / rel


def safe_parts(value: object, what: str, owner: object) -> tuple[str, ...]:
    """Split a relative sub-folder (a ``target_dir``) into names that stay below its parent.

    Args:
        value: a str or Path (or None/empty for "nothing").
        what: the name of the setting, for the error message.
        owner: who gave it, for the error message.

    Returns:
        The folder names, in order.

    Raises:
        UnsafePathError: an absolute path, a ``..`` component, or a folder name
            :func:`name_part` refuses.
    """
    if value is None or value == "":
        return ()
    text = str(value)
    _check_encodable(text, what, owner)
    path = pathlib.PurePath(text)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafePathError(
            f"{owner}: {what}={text[:80]!r} must be a relative sub-folder without '..': it "
            f"could otherwise place or delete files outside the flow's folder. Use a plain "
            f"folder name."
        )
    return tuple(name_part(p, what, owner) for p in path.parts if p not in ("", "."))


def fit_name(stem: str, suffix: str) -> str:
    """Return ``stem + suffix``, shortened with a hash past ``OUTPUT_NAME_MAX`` bytes.

    Distinct long stems stay distinct: the hash covers the whole original stem.
    """
    name = stem + suffix
    if len(name.encode()) <= OUTPUT_NAME_MAX:
        return name
    digest = hashlib.sha256(stem.encode()).hexdigest()[:16]
    budget = OUTPUT_NAME_MAX - len(suffix.encode()) - len(digest) - 1
    short = stem.encode()[:budget].decode(errors="ignore")
    return f"{short}~{digest}{suffix}"


def ensure_inside(path: pathlib.Path, root: pathlib.Path | None = None,
                  owner: object = None) -> pathlib.Path:
    """Check that ``path`` (symlinks resolved) lies inside ``root`` (default: the data dir).

    ``root`` itself may be a symlink (the location a user names is trusted); what lies
    below it must resolve inside its real path. Relative and absolute spellings of the same
    folders give the same answer.

    Args:
        path: a folder below ``root``.
        root: the location (default: the data dir).
        owner: the task, named in the error message.

    Raises:
        UnsafePathError: when it does not, e.g. a folder symlinked out of its location.
    """
    root = settings.dirpath if root is None else root
    if isinstance(path, storage.RemotePath) or isinstance(root, storage.RemotePath):
        return _remote_inside(path, root, owner)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if _within(real, real_root):
        return path
    who = f"{owner}: " if owner is not None else ""
    raise UnsafePathError(
        f"{who}its folder {str(path)!r} resolves to {real!r}, outside its location "
        f"{str(root)!r} (real path {real_root!r}){_link(path, root)}. pipeflow reads, "
        f"writes and deletes a task's files only below its location, so nothing was written "
        f"or deleted. Remove the link (or make it point inside the "
        f"location), or name the folder it points to as the location (pipeflow.set_dir(...) "
        f"or path=...)."
    )


def _remote_inside(path: Any, root: Any, owner: object) -> Any:
    """:func:`ensure_inside` on a remote file system: no symlinks there, only prefixes.

    The URL's folder names were checked when the path was built (no ``..``); what is
    checked here is that ``path`` lies below ``root`` on the same file system.
    """
    if isinstance(path, storage.RemotePath) and isinstance(root, storage.RemotePath):
        try:
            path.relative_to(root)
            return path
        except ValueError:
            pass
    who = f"{owner}: " if owner is not None else ""
    raise UnsafePathError(
        f"{who}its folder {str(path)!r} lies outside its location {str(root)!r}. pipeflow "
        f"reads, writes and deletes a task's files only below its location, so nothing was "
        f"written or deleted.")


def _link(path: pathlib.Path, root: pathlib.Path) -> str:
    """``: 'data/x' is a symlink to '/elsewhere'`` for the first link below ``root``."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return ": a symlink?"
    here = root
    for part in parts:
        here = here / part
        if here.is_symlink():
            return f": {str(here)!r} is a symlink to {os.readlink(here)!r}"
    return ": a symlink?"


#: (location, folder, working directory if they are relative) found inside their location
_INSIDE: set[tuple[str, str, str]] = set()
#: bumped when a folder checked before must be checked again: task layouts then recheck
generation = 0
_cwd = ""


def _within(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def recheck() -> None:
    """Resolve again every folder found inside its location (each run starts with this).

    One ``realpath`` per distinct folder, however many tasks live in it. When one of them
    now resolves outside (a folder replaced by a symlink since), or the working directory
    changed, every task checks its folders again before it is read or written.
    """
    global generation, _cwd
    storage.forget_reached()
    roots: dict[str, str] = {}
    moved = []
    for key in list(_INSIDE):  # (a copy: runs started in other threads may add to it)
        top, folder, cwd = key
        top = os.path.join(cwd, top)
        if top not in roots:
            roots[top] = os.path.realpath(top)
        if not _within(os.path.realpath(os.path.join(cwd, folder)), roots[top]):
            moved.append(key)
    cwd = os.getcwd()
    if moved or cwd != _cwd:
        _INSIDE.difference_update(moved)
        _cwd = cwd
        generation += 1


def check_inside(root: pathlib.Path, folders: Iterable[pathlib.Path], owner: object) -> None:
    """:func:`ensure_inside` for the folders of a task's layout, resolved once.

    Folders found inside are resolved again by :func:`recheck` only, once per run.

    Raises:
        UnsafePathError: a folder resolves outside ``root`` (a symlink out of it).
    """
    global generation
    if isinstance(root, storage.RemotePath):
        storage.check_reachable(root)  # once per run: a missing bucket fails before any task
        for folder in folders:
            ensure_inside(folder, root, owner)
        return
    top = os.fspath(root)
    cwd = "" if os.path.isabs(top) else os.getcwd()
    for folder in folders:
        key = (top, os.fspath(folder), cwd)
        if key not in _INSIDE:
            ensure_inside(folder, root, owner)
            if len(_INSIDE) > 1 << 14:  # forgotten folders are checked again by every task
                _INSIDE.clear()
                generation += 1
            _INSIDE.add(key)


def family_name(family: str, namespace: object, owner: object) -> str:
    """Check a task family: it names the task's folder and starts its file names.

    A family is an identifier or identifiers joined by dots (``namespace.ClassName``):
    unicode identifiers are fine; separators, spaces, ``..``, newlines are not.

    Args:
        family: the family (``namespace.ClassName``, or what ``get_task_family`` returns).
        namespace: the class's ``task_namespace``, for the error message.
        owner: the task, for the error message.

    Raises:
        UnsafePathError: it is not (dotted) identifiers, or is longer than a folder name.
    """
    if family in _FAMILIES:
        return family
    if isinstance(family, str) and all(part.isidentifier() for part in family.split(".")) \
            and len(os.fsencode(family)) <= NAME_MAX:
        _FAMILIES.add(family)
        return family
    given = f"task_namespace={namespace!r}" if namespace else "get_task_family()"
    raise UnsafePathError(
        f"{owner}: its task family {family!r} ({given}) names its folder and files, so it "
        f"must be an identifier (the class name) or identifiers joined by dots "
        f"(namespace.ClassName), at most {NAME_MAX} bytes: anything else could place files "
        f"outside the flow's folder, or run code where the family is written (FlowExport). "
        f"Use a class name and a dotted task_namespace such as task_namespace='team.project'."
    )


#: families found to be (dotted) identifiers (checked once per family)
_FAMILIES: set[str] = set()


def task_parts(group: object, target_dir: object, family: str,
               owner: object) -> tuple[str, ...]:
    """The folder names of a task's folder below its location, checked.

    They are ``task_group``, then ``target_dir`` or the task family.

    Raises:
        UnsafePathError: one is refused by :func:`name_part`, or the first is pipeflow's own
            folder (``.pipeflow``: its records, locks and history).
    """
    named = folder_name(group, "task_group", owner)
    parts: tuple[str, ...] = (named,) if named is not None else ()
    parts += safe_parts(target_dir or family, "target_dir", owner)
    if parts and parts[0].casefold() == OWN_DIR:
        what = "task_group" if named is not None else "target_dir"
        raise UnsafePathError(
            f"{owner}: {what}={(group if named is not None else target_dir)!r} would put its "
            f"outputs in {OWN_DIR!r}, pipeflow's own folder (run history, commit records, "
            f"locks), where they could damage or be taken for pipeflow's files. Use another "
            f"folder name."
        )
    return parts
