"""Loading chip configurations: preset names or YAML paths, dotted ``--set`` overrides, and errors
that name ``file: field: message``."""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from infsim.errors import ConfigError

from .schema import ChipConfig

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    """Names of the chip presets shipped in the package, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.exists():
            raise ConfigError(f"{p}: no such file")
        return p
    cand = PRESET_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        raise ConfigError(f"unknown chip '{name_or_path}' (presets: {', '.join(preset_names())}; or a YAML path)")
    return cand


def parse_override(text: str) -> tuple[str, Any]:
    """``'hbm.bandwidth_gbps=1600'`` -> ``('hbm.bandwidth_gbps', 1600)`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected FIELD=VALUE (e.g. hbm.bandwidth_gbps=1600)")
    key, val = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': empty field name")
    try:
        return key, yaml.safe_load(val)
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': cannot parse value: {e}") from None


def _unwrap(ann: Any) -> Any:
    """``X | None`` -> ``X`` (the one non-None member of an optional annotation)."""
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _bad_prefix(parts: list[str]) -> str | None:
    """Walk the dotted field path through the :class:`ChipConfig` schema (not through the YAML, so a field
    that a file leaves at its default can be overridden too). Returns ``None`` if the path names a field or a
    key of a free-form mapping field (``energy.mac_pj.bf16``; pydantic judges the key), else the first
    prefix that names nothing."""
    ann: Any = ChipConfig
    for i, part in enumerate(parts):
        ann = _unwrap(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = ann.model_fields.get(part)
            if field is None:
                return ".".join(parts[: i + 1])
            ann = field.annotation
        elif typing.get_origin(ann) is dict:
            ann = typing.get_args(ann)[1] if typing.get_args(ann) else Any
        else:
            return ".".join(parts[: i + 1])
    return None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], source: str = "<overrides>") -> dict[str, Any]:
    """Return a copy of ``data`` with each dotted ``FIELD: value`` of ``overrides`` set.

    A field name that the schema does not know raises ``ConfigError('source: field: no such field')``; the
    values themselves are checked later, by :func:`validate`.
    """
    out = copy.deepcopy(data)
    for key, val in overrides.items():
        parts = key.split(".")
        if any(not p for p in parts):
            raise ConfigError(f"{source}: {key}: no such field")
        bad = _bad_prefix(parts)
        if bad is not None:
            raise ConfigError(f"{source}: {bad}: no such field")
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}  # a section the file leaves out (or sets to null)
            node = node[part]
        node[parts[-1]] = val
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a mapping key given twice (YAML would silently keep the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # unhashable key: construct_mapping below reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_raw(name_or_path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read a preset or YAML file into a plain mapping (no validation); errors name ``file:line``."""
    path = _resolve(name_or_path)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data, path


def _format_error(err: Any, source: str, overridden: set[str]) -> str:
    loc = ".".join(str(x) for x in err["loc"])
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    inp = err.get("input")
    if err.get("type") not in ("missing", "extra_forbidden") and isinstance(inp, str | int | float | bool):
        shown = repr(inp)
        msg += f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})"
    if loc and any(loc == k or loc.startswith(k + ".") for k in overridden):
        msg += " [from --set]"
    return f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}"


def validate(data: dict[str, Any], source: str, overridden: set[str] | None = None) -> ChipConfig:
    """Validate ``data`` as a :class:`ChipConfig`; errors are ``source: field: message`` joined by ``'; '``.

    ``overridden`` (dotted field names set by ``--set``) marks errors in those fields ``[from --set]``.
    """
    try:
        return ChipConfig.model_validate(data)
    except ValidationError as e:
        msgs = [_format_error(err, source, overridden or set()) for err in e.errors()]
        raise ConfigError("; ".join(msgs)) from None


def load_chip(name_or_path: str | Path | ChipConfig, overrides: dict[str, Any] | list[str] | None = None) -> ChipConfig:
    """Load a preset by name or a YAML file by path, apply ``overrides`` and validate.

    ``overrides`` is a mapping of dotted field names to values, or a list of ``FIELD=VALUE`` strings.
    """
    if isinstance(name_or_path, ChipConfig):
        if not overrides:
            return name_or_path
        data, source = name_or_path.model_dump(), name_or_path.name
    else:
        data, path = load_raw(name_or_path)
        source = str(path)
    if overrides:
        if isinstance(overrides, list):
            overrides = dict(parse_override(o) for o in overrides)
        data = apply_overrides(data, overrides, source)
    return validate(data, source, set(overrides or ()))
