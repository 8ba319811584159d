"""DRAM-command-level HBM model: presets (organisation, timing), per-channel FR-FCFS controllers (plain
Python reference and numba fast model with identical command logs), an independent timing checker,
request patterns, statistics with IDD-based energy, and a steady-state shortcut for bulk transfers.

Public API: :class:`HbmModel` (``simulate``, ``run_pattern``, ``stream_time_ns``), :class:`HbmResult`,
:class:`HbmStats`, :func:`load_hbm_preset`, :func:`check_log`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checker import Violation, check_log
    from .config import HbmPresetConfig, hbm_preset_names, load_hbm_preset
    from .model import HbmModel, HbmResult
    from .patterns import PATTERNS
    from .stats import HbmStats

__all__ = ["PATTERNS", "HbmModel", "HbmPresetConfig", "HbmResult", "HbmStats", "Violation", "check_log",
           "hbm_preset_names", "load_hbm_preset"]

# the public names, imported from their modules on first use: a cycle-fidelity run needs only the presets and
# the closed forms (cached DRAM probes), not the command-level model and its numba kernels
_FROM = {"Violation": "checker", "check_log": "checker", "HbmPresetConfig": "config", "hbm_preset_names": "config",
         "load_hbm_preset": "config", "HbmModel": "model", "HbmResult": "model", "PATTERNS": "patterns",
         "HbmStats": "stats"}


def __getattr__(name: str) -> Any:
    if name in _FROM:
        return getattr(importlib.import_module(f"{__name__}.{_FROM[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
