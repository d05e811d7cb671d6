"""Model identity: which model a result or a cached score belongs to.

An identity is a name plus the fields that decide the model's scores. MRB's own adapters and the
presets declare theirs in `settings()` (adapter, checkpoint, revision, a digest of the weights,
dtype, every option that reaches the model). A user's object or function gets its fields from its
code and its state, fingerprinted structurally: the code objects (not their addresses), closure
cells, defaults, the globals the code reads (helper functions, classes and modules: a module written
by the user by the sha256 of its file, an installed one by its version), and the instance's
attributes. A `version` or an overridden `settings()` stands in for the state, which is how an
object whose state MRB cannot read (a loaded model, a tokenizer, a client) is made identifiable.

When MRB cannot fingerprint some part of a model it cannot prove that model equal to any other:
the identity is *unproven*, its scores are never reused, and a results folder refuses to file it
under a name that another run already holds (`--overwrite always` replaces it).
"""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import fractions
import functools
import hashlib
import json
import re
import sys
import sysconfig
import types
import uuid
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import packages_distributions, version
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mrb.rerankers.base import Reranker

ARRAY_BUDGET = 64 << 20  # most bytes of arrays and tensors hashed for one model
NODE_BUDGET = 200_000  # most values visited for one model
# Class attributes that describe the class object rather than the model.
_CLASS_NOISE = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__doc__",
        "__module__",
        "__qualname__",
        "__annotations__",
        "__static_attributes__",
        "__firstlineno__",
        "__slots__",
        "__orig_bases__",
        "__parameters__",
        "__abstractmethods__",
        "_abc_impl",
        "__match_args__",
        "__dataclass_fields__",
        "__dataclass_params__",
        "__hash__",
    }
)
# Immutable values whose repr says everything about them.
_VALUE_TYPES = (
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
    range,
    slice,
    type(Ellipsis),
    type(NotImplemented),
)


class Unprovable(Exception):
    """A part of a model that MRB cannot fingerprint, with where it sits (``model.tokenizer``)."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(where, why)
        self.where, self.why = where, why

    def __str__(self) -> str:
        return f"{self.where} {self.why}"


def canonical_json(payload: Any) -> str:
    """`payload` as JSON with sorted keys (what every digest in MRB is taken of)."""
    return json.dumps(payload, sort_keys=True, default=str)


def short_digest(payload: Any) -> str:
    """16 hex digits of the sha256 of `payload` as canonical JSON."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelIdentity:
    """A model's name and the fields that decide its scores; `unproven` says why MRB cannot prove it
    equal to any other model (None when it can)."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    unproven: str | None = None

    @property
    def digest(self) -> str | None:
        """What keys the score cache and marks the results: None for an unproven identity."""
        return None if self.unproven else short_digest({"name": self.name, **self.fields})

    def same_model(self, other: ModelIdentity) -> bool:
        """True only when both are proven and equal."""
        return self.digest is not None and self.digest == other.digest

    def differences(self, other: ModelIdentity) -> list[str]:
        """The fields in which `other` differs from this identity (``unproven`` when either is)."""
        if self.unproven or other.unproven:
            return ["unproven"]
        keys = sorted(set(self.fields) | set(other.fields))
        return [k for k in keys if canonical_json(self.fields.get(k)) != canonical_json(other.fields.get(k))]

    def advice(self) -> str:
        """For an unproven identity: why, and what makes the model identifiable."""
        return (
            f"MRB cannot fingerprint model {self.name!r}: {self.unproven}. Give it a version (mrb.evaluate(..., "
            "version='…') or a `version` attribute) or a settings() method returning what decides its scores, so that its "
            "results can be told apart from another model's and its run can resume"
        )

    def to_json(self) -> str:
        return canonical_json({"name": self.name, "digest": self.digest, "fields": self.fields, "unproven": self.unproven})

    @classmethod
    def from_json(cls, text: str) -> ModelIdentity:
        data = json.loads(text)
        return cls(data["name"], data.get("fields") or {}, data.get("unproven"))


def identify(reranker: Reranker) -> ModelIdentity:
    """The identity of a reranker: see the module docstring for what goes in."""
    from mrb.rerankers.base import CallableReranker
    from mrb.rerankers.fallback import Fallback

    if isinstance(reranker, Fallback):  # the model's own identity, and how it is fed what it lacks
        inner = identify(reranker.inner)
        return ModelIdentity(inner.name, {**inner.fields, "fallback": reranker.mode}, inner.unproven)
    target: Any = reranker.fn if isinstance(reranker, CallableReranker) else reranker
    owner = target.__self__ if isinstance(target, types.MethodType) else target
    function = isinstance(owner, types.FunctionType | functools.partial)
    fields: dict[str, Any] = {
        "definition": f"function {_qualified(owner)}" if function else f"instance of {_qualified(type(owner))}"
    }
    if reranker.version is not None:
        fields["version"] = str(reranker.version)
    if reranker.declares_settings():
        fields["settings"] = reranker.settings()
    if _is_own(type(owner)):
        return ModelIdentity(reranker.name, fields)  # MRB's adapters: settings() is their identity
    walker = _Walker()
    try:
        fields["code"] = walker.code(owner)
        if "version" not in fields and not _settings_written_for(reranker):
            fields["state"] = walker.digest(_state(owner), "state")
    except Unprovable as exc:
        return ModelIdentity(reranker.name, fields, str(exc))
    return ModelIdentity(reranker.name, fields)


def _settings_written_for(reranker: Reranker) -> bool:
    """Whether the reranker's `settings()` were declared by the user for this model (a settings callable, or a
    method of one of their classes), and so stand in for its state. Settings inherited from an MRB adapter do
    not: they cannot know what a user's subclass adds."""
    from mrb.rerankers.base import CallableReranker

    if isinstance(reranker, CallableReranker) or not reranker.declares_settings():
        return reranker.declares_settings()
    definer = next(k for k in type(reranker).__mro__ if "settings" in vars(k))
    return not _is_own(definer)


def _state(target: Any) -> Any:
    """What a function or an object holds besides its code: closure cells and defaults, or attributes."""
    if isinstance(target, types.FunctionType):
        cells = [c.cell_contents if _filled(c) else "<empty cell>" for c in target.__closure__ or ()]
        return {
            "closure": dict(zip(target.__code__.co_freevars, cells)),
            "defaults": target.__defaults__,
            "kwdefaults": target.__kwdefaults__,
        }
    if isinstance(target, functools.partial):
        return {"function": _state(target.func), "args": target.args, "keywords": target.keywords}
    return {k: v for k, v in _attributes(target).items() if k != "name"}


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _attributes(obj: Any) -> dict[str, Any]:
    """An object's instance attributes: its ``__dict__`` and any ``__slots__``."""
    out = dict(getattr(obj, "__dict__", {}))
    for klass in type(obj).__mro__:
        for slot in getattr(klass, "__slots__", ()):
            if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                out[slot] = getattr(obj, slot)
    return out


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', None) or type(obj).__qualname__}"


@cache
def _distributions() -> dict[str, list[str]]:
    return dict(packages_distributions())


@cache
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(str(Path(paths[k]).resolve()) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)


def installed_as(module_name: str) -> str | None:
    """``numpy==2.3.1`` for a module of an installed distribution, ``python==3.11.7`` for the standard
    library, None for the user's own code (a script, a notebook, a project folder)."""
    top = module_name.partition(".")[0]
    if top == "mrb":
        return "mrb"  # MRB's own code: its adapters declare what decides their scores in settings()
    if top in sys.stdlib_module_names or top == "builtins":
        return f"python=={sys.version.split()[0]}"
    module = sys.modules.get(module_name) or sys.modules.get(top)
    path = getattr(module, "__file__", None)
    dists = _distributions().get(top)
    if dists and (path is None or str(Path(path).resolve()).startswith(_library_roots())):
        return ",".join(f"{d}=={version(d)}" for d in sorted(set(dists)))
    return None


def _is_own(cls: type) -> bool:
    """Whether a class is MRB's own (its identity is what its settings() declare)."""
    return cls.__module__ == "mrb" or cls.__module__.startswith("mrb.")


class _Walker:
    """Structural fingerprints of Python values, stable across processes (no ids, addresses or set order)."""

    def __init__(self) -> None:
        self.array_bytes = 0
        self.nodes = 0
        self._seen: dict[int, str] = {}  # id → digest (or a placeholder while it is being walked)
        self._stack: list[Any] = []  # the values being walked
        self._keep: list[Any] = []  # walked values, kept alive so that their ids stay unique

    def digest(self, value: Any, where: str) -> str:
        return short_digest(self.value(value, where))

    def code(self, target: Any) -> str:
        """The fingerprint of what a function, class or object runs: code objects and the globals they read."""
        if isinstance(target, functools.partial):
            return self.code(target.func)
        if isinstance(target, types.FunctionType):
            return self.digest(self._function(target, with_state=False), "code")
        return self.digest(self._class(target if isinstance(target, type) else type(target), "code"), "code")

    def value(self, value: Any, where: str) -> Any:
        """A plain value as itself; anything compound as the digest of its structure, so that an object
        reached along two paths (or from a set, in any order) is written the same way each time."""
        self.nodes += 1
        if self.nodes > NODE_BUDGET:
            raise Unprovable(where, f"is part of more than {NODE_BUDGET} values, too many to fingerprint")
        if value is None or isinstance(value, bool | int | str):
            return [type(value).__name__, value]
        if isinstance(value, float | complex):
            return [type(value).__name__, repr(value)]
        if isinstance(value, bytes | bytearray):
            return [type(value).__name__, hashlib.sha256(value).hexdigest()]
        if isinstance(value, _VALUE_TYPES):
            return ["value", _qualified(type(value)), repr(value)]
        if isinstance(value, enum.Enum):
            return ["enum", _qualified(type(value)), self.value(value.value, where)]
        if isinstance(value, PurePath):
            return ["path", str(value)]
        if isinstance(value, re.Pattern):
            return ["regex", repr(value.pattern), value.flags]
        key = id(value)
        if key in self._seen:
            return ["ref", self._seen[key]]
        self._seen[key] = f"cycle at depth {len(self._stack)}"
        self._stack.append(value)  # keeps it alive, so its id is not reused while the walk lasts
        try:
            digest = short_digest(self._compound(value, where))
        finally:
            self._stack.pop()
        self._seen[key] = digest
        self._keep.append(value)
        return ["ref", digest]

    def _compound(self, value: Any, where: str) -> Any:
        if isinstance(value, list | tuple | collections.deque):
            return [type(value).__name__, [self.value(v, f"{where}[{i}]") for i, v in enumerate(value)]]
        if isinstance(value, dict):
            items = [[self.value(k, where), self.value(v, f"{where}[{k!r}]")] for k, v in value.items()]
            return [type(value).__name__, sorted(items, key=canonical_json)]
        if isinstance(value, set | frozenset):
            return [type(value).__name__, sorted((self.value(v, where) for v in value), key=canonical_json)]
        if isinstance(value, types.FunctionType):
            return self._function(value, with_state=True)
        if isinstance(value, functools.partial):
            return ["partial", self.value(value.func, where), self.value(value.args, where), self.value(value.keywords, where)]
        if isinstance(value, types.MethodType):
            return ["method", self.value(value.__func__, where), self.value(value.__self__, f"{where}.__self__")]
        if isinstance(value, types.BuiltinFunctionType | types.BuiltinMethodType):
            owner = value.__self__
            bound = None if owner is None or isinstance(owner, types.ModuleType) else self.value(owner, f"{where}.__self__")
            return ["builtin", _qualified(value), bound]
        if isinstance(value, staticmethod | classmethod):
            return [type(value).__name__, self.value(value.__func__, where)]
        if isinstance(value, property):
            return ["property", *(self.value(f, where) for f in (value.fget, value.fset, value.fdel))]
        if isinstance(value, types.ModuleType):
            return self._module(value, where)
        if isinstance(value, type):
            return self._class(value, where)
        array = self._array(value, where)
        if array is not None:
            return array
        attributes = _attributes(value)
        if not attributes and not hasattr(value, "__dict__"):
            raise Unprovable(where, f"is a {_qualified(type(value))}, which MRB cannot fingerprint")
        return [
            "object",
            self.value(type(value), where),
            {k: self.value(v, f"{where}.{k}") for k, v in sorted(attributes.items())},
        ]

    def _code_object(self, code: types.CodeType) -> Any:
        consts = [self._code_object(c) if isinstance(c, types.CodeType) else self.value(c, "code") for c in code.co_consts]
        return [
            "code",
            code.co_code.hex(),
            consts,
            list(code.co_names),
            list(code.co_varnames),
            list(code.co_freevars),
            list(code.co_cellvars),
            code.co_argcount,
            code.co_kwonlyargcount,
            code.co_flags,
        ]

    def _function(self, fn: types.FunctionType, *, with_state: bool) -> Any:
        read = _global_names(fn.__code__)
        globals_read = {
            name: self.value(fn.__globals__[name], f"{fn.__qualname__}: global {name}")
            for name in sorted(read)
            if name in fn.__globals__
        }
        out = ["function", fn.__qualname__, self._code_object(fn.__code__), globals_read]
        if with_state:
            out.append(self.value(_state(fn), fn.__qualname__))
        return out

    def _module(self, module: types.ModuleType, where: str) -> Any:
        installed = installed_as(module.__name__)
        if installed is not None:
            return ["module", module.__name__, installed]
        path = getattr(module, "__file__", None)
        if path is None or not Path(path).is_file():
            raise Unprovable(where, f"is the module {module.__name__}, which has no source file to fingerprint")
        return ["module", module.__name__, hashlib.sha256(Path(path).read_bytes()).hexdigest()]

    def _class(self, cls: type, where: str) -> Any:
        installed = installed_as(cls.__module__)
        if installed is not None:
            return ["class", _qualified(cls), installed]
        bases = [self.value(b, where) for b in cls.__bases__ if b is not object]
        attrs = {k: self.value(v, f"{cls.__qualname__}.{k}") for k, v in sorted(vars(cls).items()) if k not in _CLASS_NOISE}
        return ["class", _qualified(cls), bases, attrs]

    def _array(self, value: Any, where: str) -> Any:
        """numpy arrays and torch tensors by dtype, shape and the sha256 of their bytes (within the budget)."""
        numpy = sys.modules.get("numpy")
        torch = sys.modules.get("torch")
        if numpy is not None and isinstance(value, numpy.generic):
            return ["numpy-scalar", str(value.dtype), repr(value.item())]
        if torch is not None and isinstance(value, torch.Tensor):
            flat = value.detach().to("cpu").contiguous()
            data = flat.reshape(-1).view(torch.uint8).numpy().tobytes()
            return self._bytes(["tensor", str(value.dtype), list(value.shape)], data, where)
        if numpy is not None and isinstance(value, numpy.ndarray):
            if value.dtype.hasobject:
                return ["ndarray", list(value.shape), [self.value(v, where) for v in value.ravel().tolist()]]
            return self._bytes(["ndarray", str(value.dtype), list(value.shape)], numpy.ascontiguousarray(value).tobytes(), where)
        return None

    def _bytes(self, head: list[Any], data: bytes, where: str) -> Any:
        self.array_bytes += len(data)
        if self.array_bytes > ARRAY_BUDGET:
            raise Unprovable(where, f"holds more than {ARRAY_BUDGET >> 20} MiB of arrays or tensors, too much to fingerprint")
        return [*head, hashlib.sha256(data).hexdigest()]


def _global_names(code: types.CodeType) -> set[str]:
    """Names a code object (and the code nested in it) may read as globals."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def checkpoint_identity(checkpoint: str, revision: str | None = None) -> dict[str, Any]:
    """What `from_pretrained(checkpoint, revision=…)` loads, cheaply: a local folder by `checkpoint_listing`,
    a hub repo by the commit its revision resolves to in the local hub cache or, when not cached, on the hub
    (None when neither answers: then the checkpoint cannot load either). Adapters load that commit, so what
    loads is what was identified, before and after its download."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return {"folder": checkpoint_listing(path)}
    if revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision):
        return {"commit": revision}
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "adapter_config.json"):
        try:
            found = try_to_load_from_cache(checkpoint, filename, revision=revision)
        except ValueError:  # not a repo id
            return {"commit": None}
        if isinstance(found, str):
            return {"commit": Path(found).parent.name}  # …/snapshots/<commit>/config.json
    from huggingface_hub import HfApi

    try:
        return {"commit": HfApi().model_info(checkpoint, revision=revision).sha}
    except Exception:  # offline, unreachable, gated or no such repo: loading says which
        return {"commit": None}


def checkpoint_listing(folder: Path) -> dict[str, Any]:
    """A cheap digest of a local checkpoint folder: each file's name, size and modification time (no
    reading of the weights), as the identity of what `from_pretrained` loads from it."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts)
    listing = [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return {"files": len(listing), "bytes": sum(row[1] for row in listing), "digest": short_digest(listing)}
