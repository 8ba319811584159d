"""Chip configurations: schema, presets and loading (``load_chip('inf2', ['hbm.bandwidth_gbps=1600'])``), and
dotted field paths into the schema (:data:`CHIP_PATHS`, :mod:`infsim.config.paths`)."""

from .loader import apply_overrides, load_chip, parse_override, preset_names
from .paths import CHIP_PATHS, FieldPaths
from .schema import ChipConfig

__all__ = ["CHIP_PATHS", "ChipConfig", "FieldPaths", "apply_overrides", "load_chip", "parse_override", "preset_names"]
