"""Global settings, d6tflow-compatible: ``pipeflow.settings.check_dependencies = False``.

Attributes:
    dir: the data directory (str). Every output lives below it. Default ``'data'``. A
        local folder, or any fsspec URL (``s3://bucket/prefix``, ``gs://``, ``abfs://``,
        ``memory://``): outputs, metadata and commit records then live on that file system
        (see :mod:`pipeflow.storage`); a ``file://`` URL is turned into the local path it
        names.
    dirpath: the same directory as a :class:`pathlib.Path` (a
        :class:`pipeflow.storage.RemotePath` for a URL); setting either updates both.
    storage_options: options handed to the fsspec file system of a remote data dir (e.g.
        ``{'key': ..., 'secret': ..., 'client_kwargs': {'endpoint_url': ...}}`` for S3);
        fsspec's and the storage library's own configuration (``AWS_*`` variables...) apply
        too. Never shown in messages.
    state_dir: this machine's folder for what stays local when the data dir is remote
        (run history, task-tree store, temp files being uploaded, task locks), one
        subfolder per data-dir URL. None (default): ``$PIPEFLOW_STATE_DIR``, else
        ``$XDG_STATE_HOME/pipeflow``, else ``~/.local/state/pipeflow``.
    remote_lease: seconds a task's lease on a remote store (S3) stays valid unless renewed
        (default 60; renewed every third of it while the task runs). The lease keeps two
        runners on different machines without luigid from running one task at once; a
        runner that dies leaves it to expire. 0 or False: no leases (luigid, or one
        machine, guards alone).
    cached: keep loaded outputs in memory (``pipeflow.data``) and reuse them.
    save_with_param: put the task id (family, parameters, hash) in output file names.
    check_dependencies: a task whose upstream is not complete counts as pending.
    execution_summary: print the execution summary after ``run()``.
    log_level: level of the ``pipeflow`` and ``luigi`` loggers, e.g. ``'WARNING'``.
    fsync: fsync each output file before publishing it (durable across power loss).
    detect_code_changes: a task whose code or parameters changed since its outputs were
        committed is stale and runs again (see :mod:`pipeflow.fingerprint`).
    detect_data_changes: a task whose upstream outputs changed since its outputs were
        committed is stale and runs again.
    history: record runs in ``{dir}/.pipeflow/history.db`` (True, the default; for a
        remote data dir, ``history.db`` in its local state folder), in another SQLite file
        (its path), or not at all (False).

A misspelt setting (``settings.check_dependecies = False``) raises an AttributeError with a
suggestion instead of being silently ignored.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import stat
import sys
import types
import urllib.parse
from typing import Any

from pipeflow import storage
from pipeflow.errors import ParameterError, did_you_mean, warn

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

dir: str = "data"
dirpath: pathlib.Path = pathlib.Path("data")
cached: bool = False
save_with_param: bool = True
check_dependencies: bool = True
execution_summary: bool = True
log_level: str = "WARNING"
fsync: bool = True
history: bool | str = True
detect_code_changes: bool = True
detect_data_changes: bool = True
storage_options: dict[str, Any] = {}
state_dir: str | None = None
remote_lease: float = 60.0

#: d6tflow settings pipeflow has no use for (d6tpipe, its CRC check...): accepted, with a
#: warning, so that d6tflow code setting them runs
D6TFLOW_ONLY = frozenset(["check_crc", "isinit", "isinitpipe", "db", "uri", "api",
                          "pipe_default_name", "pipes"])
_warned: set[str] = set()

_NAMES = frozenset(
    ["dir", "dirpath", "cached", "save_with_param", "check_dependencies", "execution_summary",
     "log_level", "fsync", "history", "detect_code_changes", "detect_data_changes",
     "storage_options", "state_dir", "remote_lease"]
)


#: ``scheme://``: a URL, not a folder name
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
#: a first path component that is a URL scheme (``s3:`` of ``Path('s3://b')``, which pathlib
#: spells ``s3:/b``); one letter is a Windows drive, not a scheme
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+:")


def local_path(value: str | os.PathLike[str], what: str, who: object = "") -> pathlib.Path:
    """The local folder or file ``value`` names; the one place locations are checked.

    For settings that must be local (the history, the state folder): a URL (``s3://``)
    would otherwise become a local folder named ``s3:``; :func:`location_path` accepts
    remote locations. A ``file://`` URL (no host, or
    ``localhost``) names the local absolute path it spells, percent-escapes decoded. A URL
    wrapped in a :class:`pathlib.Path` (which turns ``s3://b`` into ``s3:/b``) is still a
    URL: any first component that is a scheme (``s3:``) is refused.

    Args:
        value: a path, or a URL.
        what: the setting or argument, for the error message.
        who: who gave it (a task, a Workflow), for the error message.

    Raises:
        ParameterError: ``value`` is not a str, bytes or path; is empty (an unset
            environment variable, ``"$DATA_DIR"``, is the usual cause: the current folder
            is named ``"."``); is a URL other than a local ``file://`` one; starts or ends
            with white space, or contains a NUL byte.
    """
    named = f"{who}: " if who else ""
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise ParameterError(
            f"{named}{what}={value!r} must be a folder (a str or pathlib.Path), not "
            f"{type(value).__name__}.")
    text = os.fspath(value)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text:
        raise ParameterError(
            f"{named}{what} is empty: no folder is named ''. An unset environment variable "
            f"(\"$DATA_DIR\") is the usual cause; name the folder, e.g. {what}='data' "
            f"({what}='.' for the current folder).")
    if "\x00" in text or text != text.strip():
        why = ("contains a NUL byte" if "\x00" in text
               else "starts or ends with white space (a stray space or newline?)")
        raise ParameterError(
            f"{named}{what}={text!r} {why}: no folder is named so on purpose. Name the folder "
            f"without it, e.g. {what}={text.strip().replace(chr(0), '') or 'data'!r}.")
    if not _URL.match(text):
        first = pathlib.PurePath(text).parts[:1]
        if not (first and _SCHEME.fullmatch(first[0])):
            return pathlib.Path(text)
        raise ParameterError(
            f"{named}{what}={text!r} is a URL whose '//' collapsed (a pathlib.Path of a "
            f"URL?), and pipeflow does not turn a URL into a local folder. Give a remote "
            f"location as a str ({what}='s3://bucket/prefix'), or use a local folder.")
    url = urllib.parse.urlsplit(text)
    if url.scheme.lower() == "file" and url.netloc in ("", "localhost") and not (
            url.query or url.fragment):
        return pathlib.Path(urllib.parse.unquote(url.path))
    raise ParameterError(
        f"{named}{what}={text!r} is a URL, but this setting is a local file or folder of "
        f"this machine (pipeflow does not turn a URL into a local folder). Use a local "
        f"path; file:///absolute/path URLs name local ones."
    )


def location_path(value: str | os.PathLike[str], what: str,
                  who: object = "") -> pathlib.Path | storage.RemotePath:
    """A folder where outputs may live: a local folder, or a remote fsspec URL.

    As :func:`local_path`, except that a URL other than ``file://`` gives a
    :class:`~pipeflow.storage.RemotePath` (checked by :func:`pipeflow.storage.parse`).

    Raises:
        ParameterError: as :func:`local_path`; or a URL of an unknown protocol, of one
            whose package is not installed (naming the extra), or with a query, a ``..``
            or no bucket.
    """
    if isinstance(value, storage.RemotePath):
        return value
    if isinstance(value, str) and _URL.match(value) and not value[:7].lower() == "file://":
        if "\x00" in value or value != value.strip():
            return local_path(value, what, who)  # (its message)
        return storage.parse(value, what, who)
    return local_path(value, what, who)


def in_the_way(folder: str | os.PathLike[str]) -> pathlib.Path | None:
    """What stands where ``folder`` or one of its parents must be a folder (a file), if any.

    Walks up from ``folder`` to the first entry that exists: one ``stat`` when the folder
    is there. A symlink to a folder counts as a folder; a dangling one is in the way.
    """
    here = pathlib.Path(folder)
    while True:
        try:
            mode = os.stat(here).st_mode
        except (FileNotFoundError, NotADirectoryError):
            if os.path.islink(here):
                return here
            if here.parent == here:
                return None
            here = here.parent
            continue
        except OSError:  # cannot tell (permissions...): whoever writes there says why
            return None
        return None if stat.S_ISDIR(mode) else here


def check_folder(path: Any, what: str, who: object = "") -> Any:
    """Refuse a folder setting with a file in its place (or in a parent's).

    Raises:
        ParameterError: naming the file in the way.
    """
    if isinstance(path, storage.RemotePath):
        return path  # no folders to be in the way of on an object store
    blocker = in_the_way(path)
    if blocker is None:
        return path
    named = f"{who}: " if who else ""
    where = "" if blocker == path else f" ({str(blocker)!r} is not)"
    raise ParameterError(
        f"{named}{what}={str(path)!r} is not a folder{where}: a file (or a link to nothing) "
        f"is in the place of a folder on its path. Name another folder, or move "
        f"{str(blocker)!r} away.")


def _apply_log_level(level: str) -> None:
    for name in ("pipeflow", "luigi", "luigi-interface"):
        logging.getLogger(name).setLevel(level)


class _SettingsModule(types.ModuleType):
    """Module type that validates assignments and keeps ``dir``/``dirpath`` in sync."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in ("__class__",):
            super().__setattr__(name, value)
            return
        if name in D6TFLOW_ONLY:
            if name not in _warned:
                _warned.add(name)
                warn(f"pipeflow.settings.{name} is a d6tflow setting that has no effect in "
                     f"pipeflow; the value is kept but not used.", UserWarning)
            super().__setattr__(name, value)
            return
        if name not in _NAMES:
            raise AttributeError(
                f"pipeflow.settings has no setting '{name}'.{did_you_mean(name, _NAMES)} "
                f"Settings: {', '.join(sorted(_NAMES))}"
            )
        if name in ("dir", "dirpath"):
            path = check_folder(location_path(value, f"pipeflow.settings.{name}"),
                                f"pipeflow.settings.{name}")
            given = os.fspath(value) if isinstance(value, (str, os.PathLike)) else str(value)
            super().__setattr__("dir", str(path) if _URL.match(str(given)) else given)
            super().__setattr__("dirpath", path)
            return
        if name == "storage_options":
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ParameterError(
                    f"pipeflow.settings.storage_options must be a dict of fsspec options "
                    f"(e.g. {{'anon': True}}), not {type(value).__name__}.")
            storage.configure(value)
            super().__setattr__(name, value)
            return
        if name == "state_dir":
            path = None if value is None else local_path(value, "pipeflow.settings.state_dir")
            storage.state_dir = path
            super().__setattr__(name, None if path is None else str(path))
            return
        if name == "history" and isinstance(value, (str, os.PathLike)):
            path = local_path(value, "pipeflow.settings.history")
            value = str(path) if _URL.match(str(value)) else value
        if name == "remote_lease":
            if value is False or value is None:
                value = 0.0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    0 <= value < float("inf")):
                raise ParameterError(
                    f"pipeflow.settings.remote_lease must be a number of seconds (0: no "
                    f"leases), not {value!r}.")
            value = float(value)
        if name == "log_level":
            level = str(value).upper()
            if level not in _LEVELS:
                raise ParameterError(
                    f"pipeflow.settings.log_level must be one of {', '.join(_LEVELS)}, "
                    f"not {value!r}"
                )
            _apply_log_level(level)
            value = level
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _SettingsModule
