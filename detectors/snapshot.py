"""The state of live objects as bytes, and back into fresh objects of the same code.

Detect keeps a fall in progress, an open inactivity wait, every elder's row in numpy
arrays inside its detectors, rosters and alert book. :func:`freeze` walks the attributes
of such objects and writes them as one ``.npz`` file (arrays as they are, everything
else as JSON beside them); :func:`thaw` writes them back into objects *built fresh by
the running code* — it never creates an object or imports code from the data (no
pickle), so a snapshot can only set values of attributes the code already has.

What the walk takes, per attribute:

* numpy arrays and scalars, ``bool``/``int``/``float``/``str``/``None``, lists, tuples
  and dicts of those;
* objects (instances with ``__dict__`` or ``__slots__``): their attributes, recursively;
  an object reached twice (the care table every detector shares) is stored once and
  must be shared in the fresh objects too;
* pydantic models inside lists and dicts (alerts in their grace window), by value; a
  model held directly as an attribute is *configuration* (detector settings, the care
  table) and is left as the fresh object has it;
* skipped: functions set on an instance (a benchmark's timers) and the names a class
  lists in ``_SCRATCH`` (buffers reused between batches);
* an object with a ``settle()`` method is asked to settle first: to move what it holds
  outside its state (the fall detector's frames kept by reference) into it.

:func:`thaw` refuses (:class:`SnapshotMismatch`) a snapshot whose objects do not have the
same attributes, classes, array dtypes and ranks as the fresh ones: after an upgrade
that changed a detector's state the caller starts fresh instead of resuming garbage.

>>> import numpy as np
>>> class Rows:
...     def __init__(self) -> None:
...         self.seen = np.zeros(0)
...         self.names: dict[str, int] = {}
>>> live = Rows()
>>> live.seen, live.names = np.array([1.5, np.nan]), {"e1": 0, "e2": 1}
>>> blob = freeze({"rows": live}, meta={"seq": 41})
>>> fresh = Rows()
>>> thaw({"rows": fresh}, blob)[0]
{'seq': 41}
>>> fresh.seen.tolist()[0], fresh.names
(1.5, {'e1': 0, 'e2': 1})
"""

from __future__ import annotations

import importlib
import io
import json
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel

from homecare.errors import DataError

__all__ = ["FORMAT", "SnapshotMismatch", "freeze", "read_meta", "thaw"]

FORMAT = 1
"""Of the encoding below; a snapshot of another format is refused."""
_PLAIN = frozenset({str, int, float, bool, type(None)})
"""Values JSON holds as they are (a list or a str-keyed dict of them is written whole)."""
_MODEL_MODULES = ("homecare.", "detectors.")
"""Where a pydantic model stored by value may come from."""


class SnapshotMismatch(DataError):
    """The snapshot does not fit the running code's objects; the message says where."""


def _skipped(obj: object) -> frozenset[str]:
    return frozenset(getattr(type(obj), "_SCRATCH", ()))


def _attrs(obj: object) -> dict[str, Any]:
    """An object's state attributes: ``__dict__`` and ``__slots__``, minus what is skipped."""
    names: list[str] = list(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        names += [s for s in getattr(cls, "__slots__", ()) if s not in ("__dict__", "__weakref__")]
    skip = _skipped(obj)
    out: dict[str, Any] = {}
    for name in names:
        if name in skip or not hasattr(obj, name):
            continue
        value = getattr(obj, name)
        if isinstance(value, types.FunctionType | types.MethodType | types.BuiltinFunctionType):
            continue  # set on the instance (wrappers): behaviour, not state
        if isinstance(value, BaseModel):
            continue  # configuration: the fresh object's is the running one's
        out[name] = value
    return out


def _is_object(value: object) -> bool:
    return hasattr(value, "__dict__") or hasattr(type(value), "__slots__")


class _Freezer:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.seen: dict[int, int] = {}  # id(object) → its index
        self.keep: list[object] = []  # the objects indexed, alive while freezing

    def enc(self, value: Any, path: str) -> Any:
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"{path}: an array of Python objects is not state we can save")
            key = f"a{len(self.arrays)}"
            self.arrays[key] = value
            return {"$a": key}
        if isinstance(value, np.generic):
            return {"$s": value.dtype.str, "v": value.item()}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list):
            if all(type(v) in _PLAIN for v in value):  # rosters' ids: JSON as they are
                return value
            return [self.enc(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"$t": [self.enc(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, dict):
            plain = all(type(v) in _PLAIN for v in value.values())
            if plain and all(type(k) is str for k in value):
                return {"$j": value}  # rosters' rows, sites: a JSON object as it is
            return {"$d": [[self.enc(k, path), self.enc(v, f"{path}[{k!r}]")]
                           for k, v in value.items()]}  # fmt: skip
        if isinstance(value, BaseModel):
            cls = type(value)
            return {"$m": f"{cls.__module__}:{cls.__qualname__}",
                    "v": value.model_dump(mode="json")}  # fmt: skip
        if _is_object(value):
            ref = self.seen.get(id(value))
            if ref is not None:
                return {"$r": ref}
            self.seen[id(value)] = len(self.keep)
            self.keep.append(value)
            settle = getattr(value, "settle", None)
            if callable(settle):
                settle()
            attrs = {k: self.enc(v, f"{path}.{k}") for k, v in _attrs(value).items()}
            return {"$o": type(value).__qualname__, "i": self.seen[id(value)], "v": attrs}
        raise TypeError(f"{path}: {type(value).__name__} is not state we can save")


def freeze(roots: Mapping[str, object], *, meta: Mapping[str, Any] | None = None) -> bytes:
    """``roots`` (named objects or values) and ``meta`` (JSON) as one ``.npz`` in bytes."""
    f = _Freezer()
    tree = {"format": FORMAT, "meta": dict(meta or {}),
            "roots": {name: f.enc(v, name) for name, v in roots.items()}}  # fmt: skip
    buf = io.BytesIO()
    arrays: dict[str, Any] = {"__tree__": np.frombuffer(json.dumps(tree).encode(), np.uint8),
                              **f.arrays}  # fmt: skip
    np.savez(buf, **arrays)
    return buf.getvalue()


def read_meta(blob: bytes) -> dict[str, Any]:
    """Only the ``meta`` of a snapshot (:class:`SnapshotMismatch` if it is none)."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            return dict(json.loads(z["__tree__"].tobytes())["meta"])
    except (ValueError, OSError, KeyError) as exc:
        raise SnapshotMismatch(f"not a snapshot: {exc}") from exc


class _Thawer:
    """Decodes a saved tree against the fresh objects, noting the attributes to set; they
    are set only once all of it fitted (:meth:`apply`)."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.objects: dict[int, object] = {}
        self.writes: list[tuple[object, str, Any]] = []

    def dec(self, current: Any, enc: Any, path: str) -> Any:
        """The value ``enc`` describes, written into ``current`` where it is an object."""
        if isinstance(enc, list):
            items = current if isinstance(current, list) and len(current) == len(enc) else None
            if not (items and _is_object(items[0])) and all(type(e) in _PLAIN for e in enc):
                return list(enc)  # plain values, as written
            return [self.dec(items[i] if items else None, e, f"{path}[{i}]")
                    for i, e in enumerate(enc)]  # fmt: skip
        if not isinstance(enc, dict):
            if isinstance(current, np.ndarray) or (current is not None and _is_object(current)):
                raise SnapshotMismatch(f"{path}: saved a plain value, the code has "
                                       f"{type(current).__name__}")  # fmt: skip
            return enc
        if "$a" in enc:
            array = self.arrays[enc["$a"]]
            if current is not None:
                if not isinstance(current, np.ndarray):
                    raise SnapshotMismatch(f"{path}: saved an array, the code has "
                                           f"{type(current).__name__}")  # fmt: skip
                if (current.dtype, current.ndim) != (array.dtype, array.ndim):
                    raise SnapshotMismatch(
                        f"{path}: saved {array.dtype} with {array.ndim} dimensions, the code "
                        f"has {current.dtype} with {current.ndim}"
                    )
            return array
        if "$s" in enc:
            return np.dtype(enc["$s"]).type(enc["v"])
        if "$t" in enc:
            return tuple(self.dec(None, e, f"{path}[{i}]") for i, e in enumerate(enc["$t"]))
        if "$j" in enc:
            return dict(enc["$j"])
        if "$d" in enc:
            return {self.dec(None, k, path): self.dec(None, v, f"{path}[{k!r}]")
                    for k, v in enc["$d"]}  # fmt: skip
        if "$m" in enc:
            return _model(enc["$m"], path).model_validate(enc["v"])
        if "$r" in enc:
            if current is None or current is not self.objects.get(enc["$r"]):
                raise SnapshotMismatch(f"{path}: saved as shared with another object, not here")
            return current
        if "$o" in enc:
            return self._object(current, enc, path)
        raise SnapshotMismatch(f"{path}: unknown encoding {sorted(enc)}")

    def _object(self, current: Any, enc: dict[str, Any], path: str) -> Any:
        if current is None or not _is_object(current):
            raise SnapshotMismatch(f"{path}: saved a {enc['$o']}, the code has none here")
        if type(current).__qualname__ != enc["$o"]:
            raise SnapshotMismatch(f"{path}: saved a {enc['$o']}, the code has "
                                   f"{type(current).__qualname__}")  # fmt: skip
        self.objects[enc["i"]] = current
        have = _attrs(current)
        saved: dict[str, Any] = enc["v"]
        if set(have) != set(saved):
            raise SnapshotMismatch(
                f"{path} ({enc['$o']}): attributes differ: saved only "
                f"{sorted(set(saved) - set(have))}, the code only {sorted(set(have) - set(saved))}"
            )
        for name, e in saved.items():
            value = self.dec(have[name], e, f"{path}.{name}")
            if value is not have[name]:
                self.writes.append((current, name, value))
        return current

    def apply(self) -> None:
        for obj, name, value in self.writes:
            setattr(obj, name, value)


def _model(name: str, path: str) -> type[BaseModel]:
    """A pydantic model class of ours, named ``module:qualname``."""
    module, _, qualname = name.partition(":")
    if not module.startswith(_MODEL_MODULES):
        raise SnapshotMismatch(f"{path}: a model from {module} is not ours")
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        raise SnapshotMismatch(f"{path}: {name} is not a model of the running code")
    return cls


def thaw(roots: Mapping[str, object], blob: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write a :func:`freeze` snapshot into the fresh ``roots`` (the same names); return its
    meta and the value of every root (a plain value, such as a float, cannot be written
    in place: the caller takes it from there).

    Raises :class:`SnapshotMismatch`, having written nothing, when the snapshot does not
    fit the objects."""
    try:
        z = np.load(io.BytesIO(blob), allow_pickle=False)
        with z:
            tree = json.loads(z["__tree__"].tobytes())
            arrays = {k: z[k] for k in z.files if k != "__tree__"}
    except (ValueError, OSError, KeyError) as exc:
        raise SnapshotMismatch(f"not a snapshot: {exc}") from exc
    if tree.get("format") != FORMAT:
        raise SnapshotMismatch(f"snapshot format {tree.get('format')}, the code reads {FORMAT}")
    saved: dict[str, Any] = tree["roots"]
    if set(saved) != set(roots):
        raise SnapshotMismatch(f"saved {sorted(saved)}, the code has {sorted(roots)}")
    t = _Thawer(arrays)
    values = {name: t.dec(roots[name], enc, name) for name, enc in saved.items()}
    t.apply()
    return dict(tree["meta"]), values
