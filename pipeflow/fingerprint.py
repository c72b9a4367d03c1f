"""Change detection: what a task's outputs were made from, and what has changed since.

When a run commits a task, its commit record also stores a *fingerprint* of what made the
outputs:

* ``params``: its significant parameter values (secret parameters are never significant,
  so never stored);
* ``code``: one hash per piece of the user's own code the task runs -- every method and
  public data attribute of the task class and of its base classes from the user's project,
  plus the functions, classes and constants of the project that those call or use,
  followed transitively
  (library code, i.e. the standard library, anything in ``site-packages`` and pipeflow or
  luigi themselves, is left out). A class may pin ``version = "2"`` instead, or opt out
  with ``detect_code_changes = False``;
* ``up``: for each upstream task, a hash of the outputs it had when this task ran.

Code is hashed as compiled (byte code, names, constants, default values), so comments,
blank lines, formatting and docstrings are not changes, and what is hashed is exactly what
runs: a module edited on disk but not reloaded in a notebook still shows its old code,
until it is reloaded. Constants are hashed by their value in the running process; a
list, dict or set as it was when first looked at (changing one in place is state, binding
a new one is a change). Each
Python version compiles differently: after a Python upgrade, tasks are stale once (the
reason says so). Task classes a task refers to (in ``requires()``) are not its code: they
are upstream tasks, followed through their outputs.

Code fingerprints are computed once per class per status check or run (:func:`refresh`
starts a new one), so a notebook's redefined function or a reloaded module is seen on the
next preview.
"""

from __future__ import annotations

import dis
import inspect
import os
import sys
import sysconfig
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import luigi
import xxhash

from pipeflow.contract import adapt
from pipeflow.graph import describe, requirement_edges, upstream_of
from pipeflow.integrity import COMPACT_JSON, CommitRecord, committed_record

#: folders that hold installed libraries
_LIB_PARTS = frozenset(["site-packages", "dist-packages"])
_LITERALS = (int, float, complex, str, bytes, bool, type(None))
#: byte code is compared, and each Python version compiles its own
_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
#: class attributes that say how to schedule a task, not what it computes
_NOT_CODE = frozenset(["priority", "retries", "retry_delay", "timeout", "resources",
                       "version", "detect_code_changes", "detect_data_changes",
                       "worker_timeout", "disabled", "owner_email", "accepts_messages"])
#: most reasons listed in one message
_SHOWN = 3

_code_cache: dict[tuple[type, str | None], dict[str, str]] = {}
_module_kind: dict[str, bool] = {}
#: record path -> (its stat, the outputs digest it gives)
_digests: dict[str, tuple[CommitRecord, str]] = {}
#: id -> (list, dict or set, its text when first looked at): kept for the process
_first_seen: dict[int, tuple[Any, str]] = {}


def refresh() -> None:
    """Forget computed code fingerprints: the next check re-reads the code."""
    _code_cache.clear()
    _module_kind.clear()
    _digests.clear()


def _short(text: str | bytes) -> str:
    return xxhash.xxh3_64_hexdigest(text.encode() if isinstance(text, str) else text)


# -- which code is the user's project ------------------------------------------------------------

def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get("stdlib"), paths.get("platstdlib")}
    for mod in (luigi, sys.modules["pipeflow"]):
        roots.add(os.path.dirname(getattr(mod, "__file__", "") or ""))
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


_LIB_ROOTS: tuple[str, ...] | None = None


def is_project_module(name: str | None, file: str | None = None) -> bool:
    """Whether the module called ``name`` is the user's own code (not a library).

    ``__main__`` (scripts, notebooks) is; modules without a file (built in), in the standard
    library, in a ``site-packages``/``dist-packages`` folder, and pipeflow and luigi are not.

    Args:
        name: the module's name.
        file: where the code was read from, for a module that is not in ``sys.modules``
            (loaded straight from a file).
    """
    global _LIB_ROOTS
    if not name:
        return False
    hit = _module_kind.get(name)
    if hit is not None:
        return hit
    module = sys.modules.get(name)
    if module is not None:
        file = getattr(module, "__file__", None)
    if name == "__main__":
        mine = True
    elif not file or not file.endswith(".py"):
        mine = False
    else:
        if _LIB_ROOTS is None:
            _LIB_ROOTS = _library_roots()
        real = os.path.realpath(file)
        mine = (not real.startswith(_LIB_ROOTS)
                and _LIB_PARTS.isdisjoint(real.split(os.sep)))
    _module_kind[name] = mine
    return mine


def _is_project(obj: Any) -> bool:
    """Whether a function or class is the user's own code."""
    if isinstance(obj, type):
        code = next((f.__code__ for _, f in _functions_of(obj)), None)
    else:
        code = getattr(obj, "__code__", None)
    return is_project_module(getattr(obj, "__module__", None),
                             code.co_filename if code is not None else None)


# -- hashing one function -----------------------------------------------------------------------

def _function_hash(func: types.FunctionType) -> str:
    """Hash of the code a function runs, as compiled.

    Its byte code, names, constants (the docstring left out) and default argument values:
    comments and layout never reach byte code, and a module edited on disk but not
    reloaded still shows the code that would run.
    """
    defaults = [_stable(d) if _is_data(d, 1) else type(d).__name__
                for d in [*(func.__defaults__ or ()), *(func.__kwdefaults__ or {}).items()]]
    return _short(_code_text(func.__code__) + "|" + ",".join(defaults))


def _code_text(code: types.CodeType) -> str:
    """The instructions of ``code`` with their arguments resolved (constants, names).

    Resolved rather than raw byte code: whether a function has a docstring shifts the
    indices of its constants, not what it does.
    """
    return "\n".join(f"{ins.opname} {_stable(ins.argval)}"
                     for ins in dis.get_instructions(code))


def _stable(value: Any) -> str:
    """A ``repr`` that is the same in every process.

    Sets and dicts in a fixed order, functions by their code, classes by name: never a
    memory address or an order that depends on string hashing.
    """
    if isinstance(value, types.CodeType):
        return _code_text(value)
    if isinstance(value, types.FunctionType):
        return f"function {_function_hash(value)}"
    if isinstance(value, type):
        return f"class {value.__module__}.{value.__qualname__}"
    if isinstance(value, dict):
        return "{" + ",".join(sorted(f"{_stable(k)}:{_stable(v)}"
                                     for k, v in value.items())) + "}"
    if isinstance(value, (frozenset, set)):
        return "{" + ",".join(sorted(map(_stable, value))) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(map(_stable, value)) + ")"
    return repr(value)


def _names(code: types.CodeType) -> Iterator[str]:
    """Global and attribute names a code object (and those nested in it) uses."""
    yield from code.co_names
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _names(c)


def _functions_of(klass: type) -> Iterator[tuple[str, types.FunctionType]]:
    """The functions a class defines itself (methods, static/class methods, properties)."""
    for name, attr in vars(klass).items():
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if isinstance(attr, property):
            for part, f in (("", attr.fget), (".setter", attr.fset), (".deleter", attr.fdel)):
                if isinstance(f, types.FunctionType):
                    yield name + part, f
        elif isinstance(attr, types.FunctionType):
            yield name, attr


def _label(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", getattr(obj, "__name__", "?"))
    return qual if module in (None, "__main__") else f"{module}.{qual}"


def _is_task_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, luigi.Task)


def code_fingerprint(cls: type, version: str | None = None) -> dict[str, str]:
    """Hashes of the project code a task class runs, by name (see the module docstring).

    With a ``version`` pin, the pin stands for the code, which is not looked at.

    Names are ``Class.method`` for the task class and its project base classes,
    ``helper module.function`` (or ``helper module.Class.method``) for what they use, and
    ``constant module.NAME`` for simple module-level values.
    """
    hit = _code_cache.get((cls, version))
    if hit is not None:
        return hit
    if version is not None:  # the pin stands for the code
        result = _code_cache[(cls, version)] = {"version": version}
        return result
    items: dict[str, str] = {}
    seen: set[int] = set()
    todo: list[types.FunctionType] = []

    def add_function(label: str, func: types.FunctionType) -> None:
        func = inspect.unwrap(func)
        if id(func) in seen or not _is_project(func):
            return
        seen.add(id(func))
        items[label] = _function_hash(func)
        todo.append(func)

    def add_class(klass: type, prefix: str) -> None:
        if id(klass) in seen:
            return
        seen.add(id(klass))
        # the task's own classes by their names (``Train.run``); helpers with their module
        owner = _label(klass) if prefix else klass.__qualname__
        for name, func in _functions_of(klass):
            add_function(f"{prefix}{owner}.{name}", func)
        for name, value in vars(klass).items():  # ``features = ["age", "bmi"]``
            if not name.startswith("_") and name not in _NOT_CODE and _is_data(value):
                items[f"{prefix}{owner}.{name}"] = _short(_data_text(value))

    def add_value(name: str, value: Any, module: str, names: set[str]) -> None:
        """A global a function uses (``names``: the other names it uses, for ``mod.attr``)."""
        if isinstance(value, types.FunctionType):
            add_function(f"helper {_label(value)}", value)
        elif isinstance(value, type):
            if not _is_task_class(value) and _is_project(value):
                add_class(value, "helper ")
        elif isinstance(value, types.ModuleType):
            if is_project_module(value.__name__):
                for attr in sorted(names & vars(value).keys()):
                    add_value(attr, vars(value)[attr], value.__name__, set())
        elif _is_data(value):
            items[f"constant {_label_in(module, name)}"] = _short(_data_text(value))
            for member in _members(value):  # their own code is in the constant's hash
                if isinstance(member, type):
                    add_value(name, member, module, set())
                elif id(member) not in seen and _is_project(member):
                    seen.add(id(member))
                    todo.append(member)  # ... but follow what they call

    for klass in cls.__mro__:
        if _is_project(klass):
            add_class(klass, "")
    while todo:
        func = todo.pop()
        names = set(_names(func.__code__))
        globals_ = func.__globals__
        for name in sorted(names):
            if name in globals_:
                add_value(name, globals_[name], func.__module__, names)
        for cell in func.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(value, types.FunctionType):
                add_function(f"helper {_label(value)}", value)
    result = {"python": _PYTHON, **dict(sorted(items.items()))}
    _code_cache[(cls, version)] = result
    return result


def _label_in(module: str, name: str) -> str:
    return name if module == "__main__" else f"{module}.{name}"


def _is_data(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is a constant worth hashing.

    Literals, and small containers of literals, functions and classes (a registry such as
    ``MODELS = {"ridge": lambda seed: Ridge(alpha=1.0)}``).
    """
    if isinstance(value, _LITERALS):
        return not isinstance(value, (str, bytes)) or len(value) < 10_000
    if isinstance(value, (types.FunctionType, type)):
        return depth > 0  # on their own they are helpers, not constants
    if depth >= 3:
        return False
    if isinstance(value, dict):
        return len(value) < 1_000 and all(
            _is_data(k, depth + 1) and _is_data(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return len(value) < 1_000 and all(_is_data(v, depth + 1) for v in value)
    return False


def _immutable(value: Any) -> bool:
    if isinstance(value, (tuple, frozenset)):
        return all(_immutable(v) for v in value)
    return not isinstance(value, (list, dict, set))


def _data_text(value: Any) -> str:
    """The stable text of a constant; a list, dict or set as it was when first looked at.

    Such objects are state as often as settings (a log the tasks append to while they
    run): changing one in place later in the same process is not a change of code, while
    binding the name to a new object (running the cell ``PARAMS = {...}`` again) is.
    """
    if _immutable(value):
        return _stable(value)
    hit = _first_seen.get(id(value))
    if hit is None or hit[0] is not value:
        if len(_first_seen) > 10_000:
            _first_seen.clear()
        hit = _first_seen[id(value)] = (value, _stable(value))
    return hit[1]


def _members(value: Any) -> Iterator[Any]:
    """The functions and classes inside a constant container, at any depth."""
    if isinstance(value, (types.FunctionType, type)):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _members(v)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from _members(v)


def params_fingerprint(task: luigi.Task) -> dict[str, str]:
    """The task's significant parameter values, serialized (secrets are never significant).

    Made once per task instance (its parameters never change).
    """
    d = task.__dict__
    hit = d.get("_pipeflow_params_fp")
    if hit is None:
        kwargs = task.param_kwargs
        hit = d["_pipeflow_params_fp"] = {
            name: str(p.serialize(kwargs[name])) for name, p in task.get_params()
            if p.significant and name in kwargs}
    return dict(hit)


def outputs_digest(files: Mapping[str, Any]) -> str:
    """One hash for a commit record's files (output name -> file records with digests)."""
    return _short(COMPACT_JSON.encode(
        {k: [r.digest for r in recs] for k, recs in sorted(files.items())}))


def combine(digests: Sequence[str | None]) -> str | None:
    """The outputs digest of a group of tasks (None if one of them has no outputs)."""
    if any(d is None for d in digests):
        return None
    return _short(",".join(digests))  # type: ignore[arg-type]


def upstream_digests(task: luigi.Task) -> dict[str, str]:
    """task_id -> outputs digest of each upstream task that has committed outputs now."""
    out = {}
    for dep in upstream_of(task):
        digest = _digest_now(dep)
        if digest is not None:
            out[dep.task_id] = digest
    return out


def _digest_now(task: luigi.Task) -> str | None:
    c = adapt(task)
    path = c.record_path()
    if path is not None:
        # a diamond's task has many upstream tasks: each record is read once per version,
        # and not even stat-ed when this process has just committed it
        record = committed_record(path)
        if record is None:
            return None
        hit = _digests.get(path)
        if hit is not None and hit[0] is record:
            return hit[1]
        digest = outputs_digest(record.files)
        _digests[path] = (record, digest)
        return digest
    if c.group:
        return combine([_digest_now(d) for d, _ in requirement_edges(task)])
    return None


def fingerprint_of(task: luigi.Task) -> dict[str, Any]:
    """The fingerprint to store in ``task``'s commit record now."""
    fp: dict[str, Any] = {"params": params_fingerprint(task),
                          "up": upstream_digests(task)}
    changes = adapt(task).changes
    if changes.tracks_code:
        fp["code"] = code_fingerprint(type(task), changes.version)
    return fp


# -- comparing --------------------------------------------------------------------------------

def detects(own: bool | None, enabled: bool) -> bool:
    """Whether a kind of change is checked: the task class's choice, else the setting.

    Args:
        own: the task class's ``detect_code_changes``/``detect_data_changes`` (None: unset).
        enabled: the global setting for that kind.
    """
    return enabled if own is None else bool(own)


def changes(stored: Mapping[str, Any], task: luigi.Task,
            upstream: Sequence[tuple[luigi.Task, str | None]], code: bool, data: bool
            ) -> str | None:
    """Why the outputs made from ``stored`` are out of date, or None if they are not.

    Args:
        stored: the fingerprint in the task's commit record.
        task: the task as it is now.
        upstream: each upstream task with the digest of its outputs now (None: it has
            none, or it is a plain luigi task).
        code: check parameters and code.
        data: check upstream outputs.
    """
    reasons: list[str] = []
    if code:
        reasons += _param_changes(stored.get("params"), params_fingerprint(task))
        code_now = code_fingerprint(type(task), adapt(task).changes.version)
        reasons += _code_changes(stored.get("code"), code_now)
    if data and isinstance(stored.get("up"), dict):
        before = stored["up"]
        for dep, now in upstream:
            if now is None:
                continue  # no outputs: the upstream task's own status says so
            then = before.get(dep.task_id)
            if then is None:
                reasons.append(f"upstream {describe(dep)} has outputs it did not have when "
                               f"this task last ran")
            elif then != now:
                reasons.append(f"upstream {describe(dep)} changed")
        ids = {dep.task_id for dep, _ in upstream}
        gone = [tid for tid in before if tid not in ids]
        if gone:
            reasons.append(f"it no longer requires {len(gone)} task(s) it was made from")
    if not reasons:
        return None
    more = len(reasons) - _SHOWN
    return "; ".join(reasons[:_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _param_changes(before: Any, now: dict[str, str]) -> list[str]:
    if not isinstance(before, dict) or before == now:
        return []
    out = []
    for name in sorted(before.keys() | now.keys()):
        a, b = before.get(name), now.get(name)
        if a == b:
            continue
        if a is None:
            out.append(f"parameter {name} is new")
        elif b is None:
            out.append(f"parameter {name} was removed")
        else:
            out.append(f"parameter {name} changed: {_clip(a)} -> {_clip(b)}")
    return out


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _code_changes(before: Any, now: dict[str, str]) -> list[str]:
    # the same code under other module names is no change: a flow run as a script
    # (``__main__``) and then imported from a notebook
    if not isinstance(before, dict) or before == now or (
            sorted(map(str, before.values())) == sorted(now.values())):
        return []
    if "version" in before or "version" in now:
        then, pinned = before.get("version"), now.get("version")
        if then is None:
            return [f"its code is now pinned to version {pinned}"]
        if pinned is None:
            return [f"its code is no longer pinned to version {then}"]
        return [f"version changed: {then} -> {pinned}"]
    if before.get("python", _PYTHON) != now.get("python", _PYTHON):
        return [f"Python changed: {before['python']} -> {now['python']} (code is compared "
                f"as compiled, and this Python compiles it differently)"]
    changed = [k for k in now if k in before and before[k] != now[k]]
    then, later = set(map(str, before.values())), set(now.values())
    added = [k for k in now if k not in before and now[k] not in then]  # not just renamed
    removed = [k for k in before if k not in now and before[k] not in later]
    return [f"code {what}: {', '.join(keys[:_SHOWN])}"
            + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")
            for what, keys in (("changed", changed), ("added", added), ("removed", removed))
            if keys]


__all__ = ["changes", "code_fingerprint", "combine", "detects", "fingerprint_of",
           "is_project_module", "outputs_digest", "params_fingerprint", "refresh",
           "upstream_digests"]
