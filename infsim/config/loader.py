"""Loading chip configurations: preset names or YAML paths, dotted ``--set`` overrides, and errors
that name ``file: field: message``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infsim.errors import ConfigError

from .schema import ChipConfig

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
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


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], source: str = "<overrides>") -> dict[str, Any]:
    out = copy.deepcopy(data)
    for key, val in overrides.items():
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])}: no such field")
            node = node[part]
        if not isinstance(node, dict) or (parts[-1] not in node and not _is_dict_field(parts)):
            raise ConfigError(f"{source}: {key}: no such field")
        node[parts[-1]] = val
    return out


def _is_dict_field(parts: list[str]) -> bool:
    # free-form mapping fields (keys are dtypes / function names) may gain new keys
    return len(parts) >= 2 and parts[-2] in ("macs_per_pe_per_cycle", "mac_pj", "func_cost")


def load_raw(name_or_path: str | Path) -> tuple[dict[str, Any], Path]:
    path = _resolve(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data, path


def validate(data: dict[str, Any], source: str) -> ChipConfig:
    try:
        return ChipConfig.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            msgs.append(f"{source}: {loc}: {err['msg']}")
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
    return validate(data, source)
