"""DRAM-command-level HBM model: presets (organisation, timing), per-channel FR-FCFS controllers (plain
Python reference and numba fast model with identical command logs), an independent timing checker,
request patterns, statistics with IDD-based energy, and a steady-state shortcut for bulk transfers.

Public API: :class:`HbmModel` (``simulate``, ``run_pattern``, ``stream_time_ns``), :class:`HbmResult`,
:class:`HbmStats`, :func:`load_hbm_preset`, :func:`check_log`.
"""

from .checker import Violation, check_log
from .config import HbmPresetConfig, hbm_preset_names, load_hbm_preset
from .model import HbmModel, HbmResult
from .patterns import PATTERNS
from .stats import HbmStats

__all__ = ["PATTERNS", "HbmModel", "HbmPresetConfig", "HbmResult", "HbmStats", "Violation", "check_log",
           "hbm_preset_names", "load_hbm_preset"]
