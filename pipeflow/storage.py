"""Files on a remote file system (any fsspec URL): the one seam between pipeflow and fsspec.

Local folders keep their own code paths (``os`` calls on ``pathlib.Path`` objects and
strings, nothing of this module on the hot path). A data dir (or a ``path``) that is an
fsspec URL (``s3://bucket/prefix``, ``gs://``, ``abfs://``, ``memory://``) is a
:class:`RemotePath`; the modules that touch files (:mod:`pipeflow.integrity`,
:mod:`pipeflow.publishing`, the task store, the targets) ask :func:`is_remote` once and
then call the functions here: stat (:func:`info`), read (:func:`cat`, :func:`get`), write
(:func:`pipe`, :func:`put`, :func:`create`: a conditional PUT), delete (:func:`rm`),
list (:func:`find`).

Task locks on stores that write conditionally (S3) are also *leases* (see
:class:`pipeflow.publishing.RemoteTaskLock`), and a commit record keeps each object's
version tag (:func:`tag_of`: its ETag) where a local file's record keeps its inode.

What stays on this machine (never on the remote file system): temp files being written
(:func:`staging_folder`), task locks (:func:`lock_folder`), the run history and the task-tree
store (:func:`state_folder`), all below the *local state folder* (``settings.state_dir``:
``$PIPEFLOW_STATE_DIR``, else ``$XDG_STATE_HOME/pipeflow``, else
``~/.local/state/pipeflow``).

A remote path is a URL string wherever pipeflow passes paths as strings, so ``"://" in
path`` tells a remote path from a local one: local paths never contain ``//`` (pathlib
collapses it, file names are built from task ids, which luigi makes of word characters).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import posixpath
import re
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from pipeflow.errors import ParameterError, StorageAccessError, StorageDependencyError

#: ``scheme://``: a URL, not a folder name
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")

#: the extra to install for a protocol fsspec implements in another package
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "abfs": "azure", "az": "azure",
          "abfss": "azure", "adl": "azure"}
#: the package implementing a protocol fsspec leaves to others
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs",
            "az": "adlfs", "abfss": "adlfs", "adl": "adlfs"}
#: a bucket (container) name: what S3, GCS and Azure all accept
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{1,254}")
#: protocols fsspec reads but cannot write: refused as locations of outputs
READ_ONLY = frozenset(["http", "https", "github", "git", "zip", "tar", "libarchive",
                       "reference", "dbfs+ro"])
#: protocols whose first URL component is a bucket (or container) that must exist
BUCKETS = frozenset(["s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"])

#: the options handed to every fsspec file system (``settings.storage_options``)
options: dict[str, Any] = {}
#: the local state folder (``settings.state_dir``); None: the default one
state_dir: pathlib.Path | None = None

_lock = threading.Lock()
_FS: dict[tuple[str, str, int], Any] = {}
#: roots found reachable (cleared at each run's start by ``layout.recheck``)
_REACHED: set[tuple[str, str]] = set()


class RemoteFileError(StorageAccessError, OSError):
    """A remote file system refused or failed an operation (the network, permissions).

    A :class:`~pipeflow.errors.StorageAccessError` where it reaches the user, and an
    ``OSError`` (errno None), so the code that turns OS errors into ``SaveError`` /
    ``LoadError`` messages naming the task handles it; its text names the URL, never the
    storage options.
    """


class RemotePath:
    """A file or folder on a remote file system, named by its URL: path arithmetic only.

    Offers what pipeflow asks of a :class:`pathlib.Path` on the way to the seam functions:
    ``/``, ``joinpath``, ``parent``, ``name``, ``parts``, ``with_name``, ``relative_to``;
    ``os.fspath`` and ``str`` give the URL. It is not a ``PurePath``, so no code can turn
    it into a local path by accident (``pathlib.Path(remote)`` would keep its parts).

    Example:
        >>> p = RemotePath("s3://team/data") / "Train" / "x.parquet"
        >>> str(p), p.name, str(p.parent)
        ('s3://team/data/Train/x.parquet', 'x.parquet', 's3://team/data/Train')
    """

    __slots__ = ("url", "protocol", "_root", "_path")

    def __init__(self, url: str):
        # split by hand: '#' and '?' are plain characters of folder and file names here
        # (parse() refused a query or fragment in the URL the user gave)
        scheme, _, rest = url.partition("://")
        netloc, slash, path = rest.partition("/")
        self.protocol = scheme.lower()
        self._root = f"{self.protocol}://{netloc}"
        self._path = re.sub("/+", "/", slash + path).rstrip("/")
        self.url = self._root + self._path

    # -- pathlib's arithmetic -------------------------------------------------------------
    def __truediv__(self, name: str | os.PathLike[str]) -> RemotePath:
        return self.joinpath(name)

    def joinpath(self, *names: str | os.PathLike[str]) -> RemotePath:
        """This path with ``names`` appended (each may hold ``/``, never ``..``)."""
        text = self.url
        for name in names:
            part = os.fspath(name).strip("/")
            if part:
                text = f"{text}/{part}"
        return RemotePath(text)

    @property
    def parent(self) -> RemotePath:
        """The folder holding this path (the bucket root is its own parent)."""
        return RemotePath(self._root + posixpath.dirname(self._path))

    @property
    def name(self) -> str:
        """The last component."""
        return posixpath.basename(self._path)

    @property
    def suffix(self) -> str:
        """The file extension (``.parquet``)."""
        return posixpath.splitext(self.name)[1]

    @property
    def parts(self) -> tuple[str, ...]:
        """The root (``s3://bucket``), then each folder name."""
        return (self._root, *(p for p in self._path.split("/") if p))

    def with_name(self, name: str) -> RemotePath:
        """The path of ``name`` beside this one."""
        return self.parent / name

    def relative_to(self, other: RemotePath | str) -> pathlib.PurePosixPath:
        """This path below ``other``, as relative folder names.

        Raises:
            ValueError: it does not lie below ``other``.
        """
        base = os.fspath(other).rstrip("/")
        if self.url == base:
            return pathlib.PurePosixPath(".")
        if not self.url.startswith(base + "/"):
            raise ValueError(f"{self.url!r} is not below {base!r}")
        return pathlib.PurePosixPath(self.url[len(base) + 1:])

    def as_posix(self) -> str:
        """The URL (what ``pathlib`` gives for a path written into code)."""
        return self.url

    def is_absolute(self) -> bool:
        """Always: a URL names one place whatever the working directory."""
        return True

    # -- the seam's file operations, for code written against pathlib -------------------
    def exists(self) -> bool:
        """Whether a file (or a folder) is there."""
        return exists(self.url)

    def is_symlink(self) -> bool:
        """Never: remote file systems have no symlinks pipeflow follows."""
        return False

    def unlink(self, missing_ok: bool = False) -> None:
        """Delete the file."""
        rm(self.url, missing_ok=missing_ok)

    def read_text(self, encoding: str = "utf-8") -> str:
        """The file's text."""
        data = cat(self.url)
        if data is None:
            raise FileNotFoundError(f"{self.url!r} does not exist")
        return data.decode(encoding)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: object stores have no folders (a prefix exists with its files)."""

    # -- identity ----------------------------------------------------------------------------
    def __fspath__(self) -> str:
        return self.url

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(("RemotePath", self.url))

    def __lt__(self, other: RemotePath) -> bool:
        return self.url < other.url


#: the longest object key a store takes, in bytes (S3: 1024)
KEY_MAX = {"s3": 1024, "s3a": 1024, "gs": 1024, "gcs": 1024, "abfs": 1024, "az": 1024}


def key_problem(url: str) -> str | None:
    """Why the store cannot take an object at ``url`` (its key too long), or None."""
    protocol, _, rest = url.partition("://")
    limit = KEY_MAX.get(protocol.lower())
    key = rest.partition("/")[2]
    if limit is not None and len(key.encode()) > limit:
        return (f"its key is {len(key.encode()):,} bytes, and {protocol}:// keys hold at most "
                f"{limit} bytes")
    return None


def tag_of(found: Mapping[str, Any]) -> int:
    """A number standing for an object's version (its ETag, else its modification time).

    Kept in a commit record where a local file's inode is, so a status check sees a
    same-size edit without reading the object; 0 when the store gives neither.
    """
    for k in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        value = found.get(k)
        if value is not None:
            digest = hashlib.blake2b(str(value).encode(), digest_size=7).digest()
            return int.from_bytes(digest, "big") or 1
    return 0


def is_remote(path: object) -> bool:
    """Whether ``path`` (a str, a Path or a RemotePath) names a remote file."""
    if isinstance(path, RemotePath):
        return True
    return isinstance(path, str) and "://" in path


def parse(text: str, what: str, who: object = "") -> RemotePath:
    """Check a remote URL the user gave (a data dir, a ``path``) and return it.

    Raises:
        ParameterError: it has a query or fragment, a ``..`` or ``.`` component, no
            bucket, or a protocol fsspec does not know or whose package is not installed
            (naming the extra to install).
    """
    named = f"{who}: " if who else ""
    split = urllib.parse.urlsplit(text)
    protocol = split.scheme.lower()
    if split.query or split.fragment:
        raise ParameterError(
            f"{named}{what}={text!r} has a query or fragment ('?...', '#...'): a storage "
            f"location is a plain URL such as 's3://bucket/prefix'. Put options in "
            f"pipeflow.settings.storage_options.")
    if any(p in (".", "..") for p in split.path.split("/")):
        raise ParameterError(
            f"{named}{what}={text!r} has a '.' or '..' folder: a storage URL names its "
            f"folder plainly (no '..' could climb out of it). Write e.g. 's3://bucket/data'.")
    if protocol in BUCKETS and not _BUCKET.fullmatch(split.netloc):
        why = "names no bucket" if not split.netloc else "has no valid bucket name"
        raise ParameterError(
            f"{named}{what}={text!r} {why}: write {protocol}://BUCKET/prefix (a bucket "
            f"name is letters, digits, '.', '-' and '_').")
    if not (split.netloc + split.path).strip("/") or any(
            c.isspace() or c == "\x00" for c in split.netloc + split.path):
        raise ParameterError(
            f"{named}{what}={text!r} names no folder (or has white space in it): write "
            f"{protocol}://bucket/prefix.")
    if protocol in READ_ONLY:
        raise ParameterError(
            f"{named}{what}={text!r} is a {protocol}:// URL: a read-only file system, where "
            f"no output can be written. Use a storage URL such as s3://bucket/prefix, or a "
            f"local folder.")
    filesystem_class(protocol, f"{named}{what}={text!r}")
    return RemotePath(text)


def filesystem_class(protocol: str, where: str) -> type:
    """Fsspec's implementation of ``protocol``.

    Raises:
        ParameterError: unknown protocol, or its package is not installed.
    """
    import fsspec

    try:
        return fsspec.get_filesystem_class(protocol)  # type: ignore[no-any-return]
    except ValueError:
        known = ", ".join(f"{p}://" for p in ("s3", "gs", "abfs", "az", "memory", "file"))
        raise ParameterError(
            f"{where}: fsspec knows no file system for the protocol {protocol!r}. Use a "
            f"storage URL such as {known}, or install the fsspec implementation of "
            f"{protocol}://.") from None
    except ImportError as exc:
        extra = EXTRAS.get(protocol)
        package = PACKAGES.get(protocol) or exc.name or "its fsspec implementation"
        fix = (f"pip install 'pipeflow[{extra}]'" if extra
               else f"pip install {package}")
        raise StorageDependencyError(
            f"{where}: the {protocol}:// file system needs the package {package}, which is "
            f"not installed. Install it: {fix}.") from None


def configure(opts: Mapping[str, Any] | None) -> None:
    """Use ``opts`` for every file system from now on (``settings.storage_options``)."""
    global options
    with _lock:
        options = dict(opts or {})
        _FS.clear()
        _REACHED.clear()


def filesystem(protocol: str) -> Any:
    """The fsspec file system for ``protocol``, made with :data:`options` (one per process)."""
    key = (protocol, _options_key(), os.getpid())
    fs = _FS.get(key)
    if fs is None:
        import fsspec

        opts = dict(options) if protocol not in ("memory", "file", "local") else {}
        if protocol not in ("memory", "file", "local"):
            # (fsspec's instance cache would keep a client made before credentials were
            # set; this module keeps one per options and drops it after a failure)
            opts["skip_instance_cache"] = True
        with _lock:
            fs = _FS[key] = fsspec.filesystem(protocol, **opts)
    return fs


def _forget(protocol: str) -> None:
    """Make the next use of ``protocol`` build a new client (after a failure)."""
    with _lock:
        for key in [k for k in _FS if k[0] == protocol]:
            del _FS[key]


def _options_key() -> str:
    try:
        return json.dumps(options, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(id(options))


def _fs(url: str) -> Any:
    return filesystem(url.split("://", 1)[0].lower())


def _failure(url: str, doing: str, exc: BaseException) -> RemoteFileError:
    """A library's error as a :class:`RemoteFileError` naming the URL (never the options)."""
    _forget(url.split("://", 1)[0].lower())
    return RemoteFileError(
        f"{doing} {url!r} failed: {_reason(exc)}. Check the connection to the store and "
        f"the credentials (pipeflow.settings.storage_options, or the environment), then "
        f"try again.")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for secret in _secrets():
        text = text.replace(secret, "***")
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _secrets() -> list[str]:
    """Every string value among the storage options (keys, tokens): never shown."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str) and len(value) >= 4:
            found.append(value)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                if k not in ("endpoint_url", "region_name", "anon"):
                    walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(options)
    return found


# -- file operations (URL strings) -----------------------------------------------------------
def info(url: str) -> dict[str, Any] | None:
    """The file's details (``size``, and ``ETag``/``mtime`` when the store gives them).

    Returns:
        None when nothing is there.

    Raises:
        RemoteFileError: the file system failed (network, permissions).
    """
    fs = _fs(url)
    try:
        return fs.info(url)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None
    except Exception as exc:
        raise _failure(url, "reading the details of", exc) from None


def exists(url: str) -> bool:
    """Whether a file (or folder) is at ``url``."""
    return info(url) is not None


def cat(url: str) -> bytes | None:
    """The bytes of the file at ``url`` (one GET), or None when there is none."""
    fs = _fs(url)
    try:
        return fs.cat_file(url)  # type: ignore[no-any-return]
    except (FileNotFoundError, IsADirectoryError):
        return None
    except Exception as exc:
        raise _failure(url, "reading", exc) from None


def pipe(url: str, data: bytes) -> None:
    """Write ``data`` as the file at ``url`` (one PUT)."""
    fs = _fs(url)
    try:
        fs.pipe_file(url, data)
    except Exception as exc:
        raise _failure(url, "writing", exc) from None


def put(local: str | os.PathLike[str], url: str) -> None:
    """Upload the local file ``local`` to ``url``."""
    fs = _fs(url)
    if getattr(fs, "async_impl", False) and hasattr(fs, "_abort_mpu"):  # S3
        return _put_stoppable(fs, os.fspath(local), url)
    try:
        fs.put_file(os.fspath(local), url)
    except Exception as exc:
        raise _failure(url, "uploading to", exc) from None


def _put_stoppable(fs: Any, local: str, url: str) -> None:
    """An S3 upload that Ctrl-C stops, leaving no incomplete multipart upload behind.

    fsspec runs the upload in its own thread, and Ctrl-C in this one would leave it running
    (or, the process exiting, a multipart upload never completed nor aborted: stored and
    billed, but in no listing). Here it is cancelled, and what it started is aborted.
    """
    import asyncio
    import concurrent.futures

    bucket, key, _ = fs.split_path(url)
    job = asyncio.run_coroutine_threadsafe(fs._put_file(local, url), fs.loop)
    try:
        while True:  # (waits in slices, so that Ctrl-C reaches this thread)
            try:
                job.result(timeout=1)
                return
            except concurrent.futures.TimeoutError:
                continue
    except Exception as exc:
        raise _failure(url, "uploading to", exc) from None
    except BaseException:  # Ctrl-C (KeyboardInterrupt), SystemExit: stop it, then abort
        job.cancel()
        with contextlib.suppress(Exception):
            concurrent.futures.wait([job], timeout=10)
            found = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
            for upload in found.get("Uploads", []):
                if upload.get("Key") == key:  # (the task's lease keeps other runners off)
                    fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key,
                               UploadId=upload["UploadId"])
        raise


def get(url: str, local: str | os.PathLike[str]) -> bool:
    """Download ``url`` to the local file ``local``; False when there is no such file."""
    fs = _fs(url)
    try:
        fs.get_file(url, os.fspath(local))
    except FileNotFoundError:
        return False
    except Exception as exc:
        raise _failure(url, "downloading", exc) from None
    return True


#: protocols whose stores write an object only if none is there, atomically (S3's
#: ``If-None-Match: *``; the memory file system, one process): task leases use them
LEASES = frozenset(["s3", "s3a", "memory"])


def create(url: str, data: bytes) -> bool:
    """Write ``data`` at ``url`` only if nothing is there (one conditional PUT).

    Returns:
        False when something is there already.
    """
    fs = _fs(url)
    try:
        fs.pipe_file(url, data, mode="create")
    except FileExistsError:
        return False
    except Exception as exc:
        raise _failure(url, "writing", exc) from None
    return True


#: the memory file system's writes that must see what is there first (one process)
_memory_cas = threading.Lock()


def read_tagged(url: str) -> tuple[bytes, str] | None:
    """The bytes of a small file and a tag naming that version of it, or None when absent.

    The tag (S3's ETag; a content hash on the memory file system) is read before the bytes,
    so it never names a newer version than the bytes: :func:`replace` with it then refuses.
    """
    if url.startswith("memory://"):
        data = cat(url)
        return None if data is None else (data, hashlib.sha256(data).hexdigest())
    found = info(url)
    data = cat(url)
    if found is None or data is None:
        return None
    return data, str(found.get("ETag") or found.get("etag") or "")


def replace(url: str, data: bytes, tag: str) -> bool:
    """Write ``data`` at ``url`` only if the file there is still the version ``tag`` names.

    One conditional PUT on S3 (``If-Match``); on the memory file system, a compare and a
    write under a lock. Used to take over a lease whose holder died: of several processes
    that found the same expired lease, exactly one replaces it.

    Returns:
        False when the file changed (or vanished) since ``tag`` was read.
    """
    fs = _fs(url)
    if url.startswith("memory://"):
        with _memory_cas:
            now = cat(url)
            if now is None or hashlib.sha256(now).hexdigest() != tag:
                return False
            pipe(url, data)
            return True
    if not tag:
        return False  # a store that gives no version tag cannot replace conditionally
    try:
        fs.pipe_file(url, data, IfMatch=tag)
    except FileNotFoundError:
        return False
    except Exception as exc:
        error = getattr(exc.__cause__ or exc.__context__, "response", {}).get("Error", {})
        if error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise _failure(url, "writing", exc) from None
    return True


def rm(url: str, missing_ok: bool = True) -> None:
    """Delete the file at ``url`` (never a folder)."""
    fs = _fs(url)
    try:
        fs.rm_file(url)
    except FileNotFoundError:
        if not missing_ok:
            raise
    except Exception as exc:
        raise _failure(url, "deleting", exc) from None


def find(url: str) -> list[str]:
    """Every file below the folder ``url``, as URLs (one recursive listing)."""
    fs = _fs(url)
    protocol = url.split("://", 1)[0]
    try:
        fs.invalidate_cache(url)
        found = fs.find(url)
    except FileNotFoundError:
        return []
    except Exception as exc:
        raise _failure(url, "listing", exc) from None
    root = fs._strip_protocol(url).rstrip("/")
    prefix = url.rstrip("/")
    return [prefix + str(f)[len(root):] if str(f).startswith(root) else f"{protocol}://{f}"
            for f in found]


def check_reachable(root: RemotePath) -> None:
    """Check once per run that the location's bucket exists and can be read.

    Raises:
        StorageAccessError: the bucket is missing, the credentials are refused, or the
            store cannot be reached; naming the URL, never the credentials.
    """
    key = (root.url, _options_key())
    if key in _REACHED:
        return
    if root.protocol in BUCKETS:
        bucket = root.parts[0]
        fs = filesystem(root.protocol)
        try:
            fs.info(bucket)  # one request: missing buckets and refused credentials fail here
            ok = True
        except FileNotFoundError:
            ok = False
        except Exception as exc:
            _forget(root.protocol)
            raise StorageAccessError(
                f"the storage location {root.url!r} cannot be used: {_reason(exc)}. Nothing "
                f"was run or written. Check the credentials (pipeflow.settings."
                f"storage_options, or the AWS_*/GOOGLE_*/AZURE_* environment) and the "
                f"endpoint, and that this machine can reach it.") from None
        if not ok:
            raise StorageAccessError(
                f"the storage location {root.url!r} cannot be used: its bucket {bucket!r} "
                f"does not exist (or these credentials may not see it). Nothing was run or "
                f"written. Create the bucket, or fix the URL (pipeflow.set_dir(...)) or the "
                f"credentials (pipeflow.settings.storage_options).")
    _REACHED.add(key)


def forget_reached() -> None:
    """Check every location again at its next use (each run's start)."""
    _REACHED.clear()


# -- the local state folder -------------------------------------------------------------------
def default_state_dir() -> pathlib.Path:
    """``$PIPEFLOW_STATE_DIR``, else ``$XDG_STATE_HOME/pipeflow``, else ``~/.local/state/...``.

    (``~/.local/state/pipeflow``.)
    """
    env = os.environ.get("PIPEFLOW_STATE_DIR")
    if env:
        return pathlib.Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".local" / "state"
    return base / "pipeflow"


def state_root() -> pathlib.Path:
    """The local state folder in force (``settings.state_dir``, else the default)."""
    return state_dir if state_dir is not None else default_state_dir()


def slug(url: str) -> str:
    """A folder name for ``url``: its safe characters, then a short hash of all of it."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", url).strip("._")[:60]
    return f"{safe}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def state_folder(url: str | RemotePath) -> pathlib.Path:
    """This machine's folder for a remote data dir (its run history, its task store)."""
    return state_root() / slug(os.fspath(url))


def _keyed(kind: str, folder: str) -> str:
    return os.path.join(os.fspath(state_root()), kind,
                        hashlib.sha256(folder.encode()).hexdigest()[:24])


def staging_folder(folder: str) -> str:
    """The local folder where files bound for the remote ``folder`` are written first."""
    return _keyed("staging", folder.rstrip("/"))


def lock_folder(folder: str) -> str:
    """The local folder holding the locks of the tasks whose records are in ``folder``."""
    return _keyed("locks", folder.rstrip("/"))


def read_folder() -> str:
    """A local folder for downloads being read (each load makes its own subfolder)."""
    return os.path.join(os.fspath(state_root()), "reading")
