"""Command codes, the command-log layout and the flat integer parameter vector shared by the reference
(:mod:`.ref`) and fast (:mod:`.fast`) controllers.

The checker (:mod:`.checker`) deliberately does not use the parameter vector: it reads the preset itself.
"""

from __future__ import annotations

import numpy as np

from .config import HbmPresetConfig

# command codes in the log
ACT, PRE, PREA, RD, WR, REF = 0, 1, 2, 3, 4, 5
CMD_NAMES = ("ACT", "PRE", "PREA", "RD", "WR", "REF")
ROW_CMDS = (ACT, PRE, PREA, REF)
COL_CMDS = (RD, WR)

# command-log columns (int64 array of shape (n, 7))
LOG_COLUMNS = ("cycle", "cmd", "channel", "bankgroup", "bank", "row", "col")

# parameter-vector indices
(P_NBG, P_NBA, P_TBL, P_TCL, P_TCWL, P_TRCDRD, P_TRCDWR, P_TRP, P_TRAS, P_TRC, P_TRRD_S, P_TRRD_L, P_TCCD_S,
 P_TCCD_L, P_TFAW, P_TWR, P_TWTR_S, P_TWTR_L, P_TRTP, P_TRTW, P_TRFC, P_TREFI, P_RQ, P_WQ, P_WHI, P_WLO,
 P_CLOSED, P_POSTPONE, N_PARAMS) = range(29)


def param_vector(cfg: HbmPresetConfig) -> np.ndarray:
    """The preset as a flat int64 vector indexed by the ``P_*`` constants."""
    o, t, c = cfg.organization, cfg.timing, cfg.controller
    p = np.zeros(N_PARAMS, dtype=np.int64)
    p[P_NBG], p[P_NBA], p[P_TBL] = o.bankgroups, o.banks_per_group, o.burst_cycles
    p[P_TCL], p[P_TCWL], p[P_TRCDRD], p[P_TRCDWR] = t.tCL, t.tCWL, t.tRCDRD, t.tRCDWR
    p[P_TRP], p[P_TRAS], p[P_TRC] = t.tRP, t.tRAS, t.tRC
    p[P_TRRD_S], p[P_TRRD_L], p[P_TCCD_S], p[P_TCCD_L], p[P_TFAW] = t.tRRD_S, t.tRRD_L, t.tCCD_S, t.tCCD_L, t.tFAW
    p[P_TWR], p[P_TWTR_S], p[P_TWTR_L], p[P_TRTP], p[P_TRTW] = t.tWR, t.tWTR_S, t.tWTR_L, t.tRTP, t.tRTW
    p[P_TRFC], p[P_TREFI] = t.tRFC, t.tREFI
    p[P_RQ], p[P_WQ], p[P_WHI], p[P_WLO] = c.read_queue, c.write_queue, c.write_high_watermark, c.write_low_watermark
    p[P_CLOSED] = 1 if c.page_policy == "closed" else 0
    p[P_POSTPONE] = c.refresh_postpone_max
    return p


def refresh_offset(channel: int, n_channels: int, trefi: int) -> int:
    """Refresh phase of a channel: channels are staggered evenly across one tREFI."""
    return channel * trefi // max(n_channels, 1)
