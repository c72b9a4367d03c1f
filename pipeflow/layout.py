"""Where outputs live: the flow context and safe paths under the data dir.

Output files keep d6tflow's layout::

    {data dir}/{path}/env={env}/{task_group}/{TaskFamily or target_dir}/{task_id}-{key}.{ext}

``path`` and ``env`` come from the Workflow running the task (or the task class's ``path``
attribute when no Workflow gives one). They travel in a :class:`FlowContext` held in a
context variable rather than being written onto task instances: luigi caches task
instances by parameters, so writing a Workflow's path onto one would leak it into every
other Workflow using the same task (a d6tflow bug).

Nothing a user passes (path, env, task_group, target_dir) may place a file outside the data
dir: absolute paths outside it and ``..`` raise :class:`~pipeflow.errors.UnsafePathError`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import pathlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeflow import settings
from pipeflow.errors import UnsafePathError

#: longest file or folder name most file systems accept, in bytes
NAME_MAX = 255
#: longest output file name: leaves room for the temp-file and index-sidecar decorations
#: (``.{name}.index.json.tmp-XXXXXXXX``) that are written beside it
OUTPUT_NAME_MAX = NAME_MAX - 40


@dataclass(frozen=True)
class FlowContext:
    """What a Workflow contributes to its tasks while it previews, runs or loads them.

    Attributes:
        path: sub-folder of the data dir for the flow's outputs (already validated).
        env: environment name; outputs go below ``env={env}``.
        flows: other Workflows attached with ``attach_flow``, by name.
    """

    path: tuple[str, ...] = ()
    env: str | None = None
    flows: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> tuple[object, ...]:
        """Hashable identity of the places this context puts outputs."""
        return (self.path, self.env)


_DEFAULT = FlowContext()
_CURRENT: contextvars.ContextVar[FlowContext] = contextvars.ContextVar(
    "pipeflow_flow_context", default=_DEFAULT  # noqa: B039 - frozen, never mutated
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


def safe_parts(value: object, what: str, owner: object) -> tuple[str, ...]:
    """Split a user-given relative location into folder names that stay inside the data dir.

    Args:
        value: a str or Path (or None/empty for "nothing").
        what: the name of the setting, for the error message (``'path'``, ``'env'``...).
        owner: who gave it (a task or a Workflow), for the error message.

    Returns:
        The folder names, in order.

    Raises:
        UnsafePathError: for an absolute path outside the data dir, a ``..`` component, or a
            folder name longer than the file system allows.
    """
    if value is None or value == "":
        return ()
    text = str(value)
    try:
        os.fsencode(text)
        bad = "\x00" in text
    except UnicodeError:
        bad = True
    if bad:
        raise UnsafePathError(
            f"{owner}: {what}={text!r} contains a NUL byte or characters that cannot be "
            f"encoded as a file name. Use a plain folder name."
        )
    path = pathlib.PurePath(text)
    if path.is_absolute():
        root = settings.dirpath.resolve()
        resolved = pathlib.Path(path).resolve()
        if resolved != root and root not in resolved.parents:
            raise UnsafePathError(
                f"{owner}: {what}={str(value)!r} is an absolute path outside the data dir "
                f"{str(root)!r}, so outputs would land outside it. Give {what} relative to "
                f"the data dir (e.g. {what}='experiments'), or change the data dir with "
                f"pipeflow.set_dir({str(value)!r})."
            )
        path = resolved.relative_to(root)
    parts = tuple(p for p in path.parts if p not in ("", "."))
    if ".." in parts:
        raise UnsafePathError(
            f"{owner}: {what}={str(value)!r} contains '..', which could place or delete files "
            f"outside the data dir {str(settings.dirpath)!r}. Use a plain sub-folder name."
        )
    for part in parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UnsafePathError(
                f"{owner}: {what}={str(value)!r} has a folder name the file system cannot "
                f"store (over {NAME_MAX} bytes). Use a shorter name."
            )
    return parts


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


def ensure_inside(path: pathlib.Path, root: pathlib.Path | None = None) -> pathlib.Path:
    """Check that ``path`` (symlinks resolved) lies inside ``root`` (default: the data dir).

    Raises:
        UnsafePathError: when it does not, e.g. a folder symlinked out of the data dir.
    """
    root_resolved = (root or settings.dirpath).resolve()
    resolved = path.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise UnsafePathError(
            f"{str(path)!r} resolves to {str(resolved)!r}, outside the data dir "
            f"{str(root_resolved)!r} (a symlink?). pipeflow never writes or deletes there; "
            f"remove the link or move the data dir."
        )
    return path
