"""Loading configurations: preset names or YAML paths (chip presets here, HBM presets through the same
functions), dotted ``--set`` overrides (checked by :mod:`infsim.config.paths`), and errors that name
``file: field: message``, or ``--set FIELD=VALUE: message`` for an override."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from infsim.errors import ConfigError
from infsim.userfiles import parse_yaml, read_text

from .paths import CHIP_PATHS, closest
from .schema import ChipConfig

M = TypeVar("M", bound=BaseModel)

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names(directory: Path = PRESET_DIR) -> list[str]:
    """Names of the presets (``*.yaml``) in ``directory`` (default: the chip presets), sorted."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def resolve_preset(name_or_path: str | Path, directory: Path = PRESET_DIR, what: str = "chip") -> Path:
    """The file of a preset name (``directory/NAME.yaml``) or of a YAML path; ``what`` names the kind of
    preset in the error (``unknown chip 'inf9' (did you mean inf1?; presets: ...; or a YAML path)``)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"{p}: no such file")
        return p
    cand = directory / f"{name_or_path}.yaml"
    if not cand.is_file():
        names = preset_names(directory)
        near = closest(str(name_or_path), names)
        hint = f"did you mean {near}?; " if near else ""
        raise ConfigError(f"unknown {what} '{name_or_path}' ({hint}presets: {', '.join(names)}; or a YAML path)")
    return cand


def parse_override(text: str) -> tuple[str, Any]:
    """``'hbm.bandwidth_gbps=1600'`` -> ``('hbm.bandwidth_gbps', 1600)`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected FIELD=VALUE (e.g. hbm.bandwidth_gbps=1600)")
    key, val = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {shorten(text)}: empty field name")
    return key, parse_yaml(val, f"--set {shorten(text)}", error=ConfigError)


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (``...`` marks the cut), for echoing user input in errors; characters
    that do not print (control characters, line and record separators) are escaped (``\\x1e``), so the error
    stays one line."""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def override_labels(overrides: Mapping[str, Any], flag: str = "override") -> dict[str, str]:
    """How errors name each override: ``{'hbm.x': 'override hbm.x=1'}`` (``flag`` e.g. ``--set``)."""
    return {k: f"{flag} {k}={shorten(str(v))}" for k, v in overrides.items()}


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any],
                    labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return a copy of chip ``data`` with each dotted ``FIELD: value`` of ``overrides`` set.

    A field the schema does not know raises ``ConfigError('override FIELD=VALUE: no such field (did you
    mean ...)')`` (``labels`` may name each override otherwise); the values are checked by :func:`validate`.
    """
    return CHIP_PATHS.apply(data, overrides, labels or override_labels(overrides))


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
#: the same on libyaml's C parser where PyYAML has it (parse_yaml's fast path; else the same Python loader)
_UniqueKeyCLoader: Any = type("_UniqueKeyCLoader", (getattr(yaml, "CSafeLoader", yaml.SafeLoader),), {})
_UniqueKeyCLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_raw(name_or_path: str | Path, directory: Path = PRESET_DIR, what: str = "chip") -> tuple[dict[str, Any], Path]:
    """Read a preset (by name, from ``directory``) or a YAML file into a plain mapping (no validation);
    errors name ``file:line``, and a key given twice is an error."""
    path = resolve_preset(name_or_path, directory, what)
    text = read_text(path, f"{what} YAML", error=ConfigError)
    data = parse_yaml(text, str(path), _UniqueKeyLoader, error=ConfigError,  # a SafeLoader subclass
                      fast_loader=_UniqueKeyCLoader)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data, path


def _format_error(err: Any, source: str, labels: Mapping[str, str]) -> str:
    loc = ".".join(str(x) for x in err["loc"])
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    for key, label in labels.items():  # an error in (or naming) an overridden field blames the override
        if loc == key or loc.startswith(key + "."):
            return f"{label}: {msg}" if loc == key else f"{label}: {loc}: {msg}"
        if not loc or key.startswith(loc + "."):  # a check across fields of ``loc``: does it name ``key``?
            rel = key[len(loc) + 1:] if loc else key
            if re.search(rf"(?<![\w.]){re.escape(rel)}(?!\w)", msg):
                return f"{label}: {msg}" if not loc else f"{label}: {loc}: {msg}"
    inp = err.get("input")
    if err.get("type") not in ("missing", "extra_forbidden") and isinstance(inp, str | int | float | bool):
        shown = repr(inp)
        msg += f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})"
    return f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}"


def validate_model(schema: type[M], data: Mapping[str, Any], source: str,
                   labels: Mapping[str, str] | None = None) -> M:
    """Validate ``data`` as a ``schema``; errors are ``source: field: message`` joined by ``'; '``. An error
    in a field that ``labels`` names (dotted field -> how to name it, e.g. ``'--set hbm.bandwidth_gbps=-1'``),
    or whose message names that field, reads ``LABEL: message`` instead.
    """
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        msgs = [_format_error(err, source, labels or {}) for err in e.errors()]
        raise ConfigError("; ".join(msgs)) from None


def validate(data: Mapping[str, Any], source: str, labels: Mapping[str, str] | None = None) -> ChipConfig:
    """:func:`validate_model` for a :class:`ChipConfig`."""
    return validate_model(ChipConfig, data, source, labels)


def load_chip(name_or_path: str | Path | ChipConfig, overrides: Mapping[str, Any] | list[str] | None = None,
              labels: Mapping[str, str] | None = None) -> ChipConfig:
    """Load a preset by name or a YAML file by path, apply ``overrides`` and validate.

    ``overrides`` is a mapping of dotted field names to values (errors name them ``override FIELD=VALUE``,
    or as ``labels`` says), or a list of ``FIELD=VALUE`` strings (errors name them ``--set FIELD=VALUE``, as
    the CLI flag).
    """
    if isinstance(name_or_path, ChipConfig):
        if not overrides:
            return name_or_path
        data, source = name_or_path.model_dump(), name_or_path.name
    else:
        data, path = load_raw(name_or_path)
        source = str(path)
    if not overrides:
        labels = {}
    else:
        if isinstance(overrides, list):
            pairs = [(text, *parse_override(text)) for text in overrides]
            overrides = {k: v for _, k, v in pairs}
            labels = {k: f"--set {shorten(text.strip())}" for text, k, _ in pairs}
        else:
            labels = {**override_labels(overrides), **(labels or {})}
        data = apply_overrides(data, overrides, labels)
    return validate(data, source, labels)
