"""Chip configurations: schema, presets and loading (``load_chip('inf2', ['hbm.bandwidth_gbps=1600'])``)."""

from .loader import apply_overrides, load_chip, parse_override, preset_names
from .schema import ChipConfig

__all__ = ["ChipConfig", "apply_overrides", "load_chip", "parse_override", "preset_names"]
