"""Dotted field paths into a configuration schema: the one place that checks, reads, writes, copies and
scales them (``--set`` overrides, sweep axes, ``compare`` resource groups, ``what-it-takes`` scalings, HBM
preset overrides).

A path names a field of a pydantic schema (:class:`~infsim.config.schema.ChipConfig`, the HBM preset
schema) by its dotted attribute names: a value (``hbm.bandwidth_gbps``), a whole section (``hbm``), or a
key of a mapping field (``tensor_engine.macs_per_pe_per_cycle.bf16``; a mapping keyed by a ``Literal``
accepts only those keys, one keyed by ``str`` any key). Every operation checks the path against the
*schema*, not against the data, so a field that a file leaves at its default can be set like any other,
and an unknown path fails naming the nearest valid one ("did you mean ...", by :mod:`difflib`).

Operations work on plain data (a YAML mapping or a ``model_dump()``) that the caller then validates with
the schema; :meth:`FieldPaths.get` also reads a validated model. :meth:`FieldPaths.scale` multiplies a
numeric field by a factor: a leading ``/`` divides instead (``/dma.fixed_latency_ns``: a latency that
shrinks as a resource improves), a trailing ``.*`` scales every value of a mapping field
(``tensor_engine.macs_per_pe_per_cycle.*``), and an integer field stays an integer (truncated).

Left out: indexing into tuple or list fields (``links.torus_dims`` is set as a whole); values are not
checked here (the schema's validation does that, once, after every change).
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Iterable, Mapping, MutableMapping
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from infsim.errors import ConfigError

_MISSING: Any = object()  # get() without a default: raise when unset
_ABSENT: Any = object()


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The one of ``choices`` closest to ``word`` (a likely typo of it), or ``None`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``' (did you mean X?)'`` for the closest of ``choices`` to ``word``, or ``''`` when none is close."""
    c = closest(word, choices)
    return f" (did you mean {c}?)" if c else ""


class UnknownFieldError(ConfigError):
    """A dotted path that names nothing in the schema. ``reason`` is the message without the path, for
    callers that name the path their own way (``--set hbm.x=1: no such field``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _unwrap(ann: Any) -> Any:
    """``X | None`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) != 1:
                return ann
            ann = args[0]
        else:
            return ann


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _mapping_types(ann: Any) -> tuple[tuple[str, ...] | None, Any] | None:
    """For a ``dict[K, V]`` annotation: (the allowed keys when ``K`` is a ``Literal``, else ``None``; ``V``)."""
    if typing.get_origin(ann) is not dict:
        return None
    args = typing.get_args(ann)
    key, val = (args[0], args[1]) if len(args) == 2 else (Any, Any)
    key = _unwrap(key)
    keys = tuple(str(k) for k in typing.get_args(key)) if typing.get_origin(key) is typing.Literal else None
    return keys, val


def _is_int(ann: Any) -> bool:
    return _unwrap(ann) is int


class FieldPaths:
    """Dotted paths into one pydantic schema (e.g. ``FieldPaths(ChipConfig)``)."""

    def __init__(self, schema: type[BaseModel]) -> None:
        self.schema = schema

    # ---- the schema's paths ---------------------------------------------------------------------------
    def _walk(self, prefix: str, ann: Any, out: list[tuple[str, bool]]) -> None:
        ann = _unwrap(ann)
        if _is_model(ann):
            for name, f in ann.model_fields.items():
                path = f"{prefix}{name}"
                sub = _unwrap(f.annotation)
                mt = _mapping_types(sub)
                leaf = not _is_model(sub) and (mt is None or mt[0] is None)
                out.append((path, leaf))
                if not leaf:
                    self._walk(path + ".", sub, out)
            return
        mt = _mapping_types(ann)
        if mt and mt[0]:
            for key in mt[0]:
                out.append((f"{prefix}{key}", True))

    @cached_property
    def _all(self) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        self._walk("", self.schema, out)
        return out

    def paths(self) -> list[str]:
        """Every valid path: sections, values and the keys of ``Literal``-keyed mappings, in schema order."""
        return [p for p, _ in self._all]

    def leaves(self) -> list[str]:
        """Every path that holds one value: a field that is neither a section nor a ``Literal``-keyed mapping
        (those contribute one leaf per allowed key); a ``str``-keyed mapping is one leaf."""
        return [p for p, leaf in self._all if leaf]

    def annotation(self, path: str) -> Any:
        """The type annotation of the field at ``path``; :class:`UnknownFieldError` if it names nothing."""
        parts = path.split(".")
        ann: Any = self.schema
        for i, part in enumerate(parts):
            ann = _unwrap(ann)
            done = ".".join(parts[:i])
            if not part:
                raise UnknownFieldError(path, "no such field" + did_you_mean(path, self.paths()))
            if _is_model(ann):
                f = ann.model_fields.get(part)
                if f is None:
                    raise UnknownFieldError(path, "no such field" + did_you_mean(path, self.paths()))
                ann = f.annotation
                continue
            mt = _mapping_types(ann)
            if mt is None:
                raise UnknownFieldError(path, f"no such field ({done} is a single value, with no fields below it)")
            keys, ann = mt
            if keys is not None and part not in keys:
                raise UnknownFieldError(path, f"no such key '{part}' in {done} (one of {', '.join(keys)})")
        return ann

    def check(self, path: str) -> list[str]:
        """The parts of ``path`` after checking that it names a field (or mapping key) of the schema."""
        self.annotation(path)
        return path.split(".")

    # ---- values -------------------------------------------------------------------------------------
    def get(self, data: Mapping[str, Any] | BaseModel, path: str, default: Any = _MISSING) -> Any:
        """The value at ``path`` in plain data or a validated model. A valid path that the data leaves
        unset (a section a file omits, a mapping key it lacks) gives ``default``, or raises without one."""
        node: Any = data
        for part in self.check(path):
            if isinstance(node, BaseModel):
                node = getattr(node, part)
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                if default is _MISSING:
                    raise ConfigError(f"{path}: not set")
                return default
        return node

    def set(self, data: MutableMapping[str, Any], path: str, value: Any) -> None:
        """Set ``path`` in plain data, creating the sections the data leaves out (or sets to null)."""
        parts = self.check(path)
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value

    def take(self, dst: MutableMapping[str, Any], src: Mapping[str, Any] | BaseModel, path: str) -> None:
        """Make ``path`` in ``dst`` what it is in ``src``: a copy of its value, or absent where ``src``
        leaves it unset (a mapping key ``src`` lacks)."""
        value = self.get(src, path, default=_ABSENT)
        if value is not _ABSENT:
            self.set(dst, path, copy.deepcopy(value.model_dump() if isinstance(value, BaseModel) else value))
            return
        parts = path.split(".")
        node: Any = dst
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, MutableMapping):
            node.pop(parts[-1], None)

    def scale(self, data: MutableMapping[str, Any], path: str, factor: float) -> None:
        """Multiply the numeric field at ``path`` by ``factor`` (``/path``: divide; ``path.*``: every value of
        a mapping field). Integer fields are truncated to integers."""
        divide = path.startswith("/")
        body = path[1:] if divide else path
        if body.endswith(".*"):
            field = body[:-2]
            mt = _mapping_types(_unwrap(self.annotation(field)))
            if mt is None:
                raise ConfigError(f"{path}: {field} is not a mapping (a trailing .* scales every value of one)")
            targets = [f"{field}.{k}" for k in self.get(data, field)]
            ann = mt[1]
        else:
            targets = [body]
            ann = self.annotation(body)
        for t in targets:
            v = self.get(data, t)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"{path}: {t} is not a number ({v!r})")
            new = v / factor if divide else v * factor
            self.set(data, t, int(new) if _is_int(ann) else new)

    def apply(self, data: Mapping[str, Any], overrides: Mapping[str, Any],
              labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A deep copy of ``data`` with every ``path: value`` of ``overrides`` set. An unknown path raises
        ``ConfigError('LABEL: no such field (did you mean ...)')``, ``LABEL`` from ``labels`` (e.g.
        ``--set hbm.x=1``) or the path itself."""
        out = copy.deepcopy(dict(data))
        for path, value in overrides.items():
            try:
                self.check(path)
            except UnknownFieldError as e:
                raise ConfigError(f"{(labels or {}).get(path, path)}: {e.reason}") from None
            self.set(out, path, value)
        return out


def _chip_paths() -> FieldPaths:
    from .schema import ChipConfig

    return FieldPaths(ChipConfig)


#: paths into :class:`~infsim.config.schema.ChipConfig`
CHIP_PATHS = _chip_paths()
