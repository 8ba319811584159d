"""HBM run statistics and energy.

Energy follows DRAMsim3's IDD-based accounting (``[DS3-HBM2]`` in ``docs/references.md``), per channel,
with currents in mA, VDD in V and time in ns so that each product is in pJ:

- activate (one ACT+PRE pair): ``VDD x (IDD0 x tRC - (IDD3N x tRAS + IDD2N x (tRC - tRAS))) x tCK``
- read burst: ``VDD x (IDD4R - IDD3N) x tBL x tCK``; write burst: ``VDD x (IDD4W - IDD3N) x tBL x tCK``
- all-bank refresh: ``VDD x (IDD5AB - IDD3N) x tRFC x tCK``
- background: ``VDD x (IDD3N x cycles with a bank open + IDD2N x other cycles) x tCK``

Left out: I/O and termination energy (not in the IDDs), power-down states, the PHY and controller.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .config import HbmPresetConfig
from .protocol import ACT, CMD_NAMES, RD, REF, WR


@dataclass
class HbmStats:
    """Summary of one HBM simulation. Units are in the names; energies in joules."""

    preset: str
    stacks: int
    channels: int
    requests: int
    bytes: int
    elapsed_ns: float
    elapsed_cycles: int
    peak_gbps: float
    achieved_gbps: float
    efficiency: float
    row_hit_rate: float
    avg_latency_ns: float
    p99_latency_ns: float
    avg_latency_from_arrival_ns: float
    channel_utilization: list[float]
    commands: dict[str, int]
    energy_j: dict[str, float]
    pj_per_bit: float
    wall_s: float
    commands_per_s: float
    extrapolated: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def command_energy_pj(cfg: HbmPresetConfig) -> dict[str, float]:
    """Energy per ACT, RD burst, WR burst and REF in pJ, and background power terms in pJ per cycle."""
    e, t, o = cfg.energy, cfg.timing, cfg.organization
    tck = o.tck_ns
    v = e.vdd_v
    return {
        "activate": v * (e.idd0_ma * t.tRC - (e.idd3n_ma * t.tRAS + e.idd2n_ma * (t.tRC - t.tRAS))) * tck,
        "read": v * (e.idd4r_ma - e.idd3n_ma) * o.burst_cycles * tck,
        "write": v * (e.idd4w_ma - e.idd3n_ma) * o.burst_cycles * tck,
        "refresh": v * (e.idd5ab_ma - e.idd3n_ma) * t.tRFC * tck,
        "active_standby_per_cycle": v * e.idd3n_ma * tck,
        "precharge_standby_per_cycle": v * e.idd2n_ma * tck,
    }


def build_stats(cfg: HbmPresetConfig, stacks: int, arrive_cyc: np.ndarray, admit: np.ndarray,
                complete: np.ndarray, channel: np.ndarray, counts: np.ndarray, open_cycles: np.ndarray,
                wall_s: float) -> HbmStats:
    """Stats from per-request cycles and per-channel command counts (``counts[ch, cmd]``)."""
    o = cfg.organization
    nch = o.channels * stacks
    tck = o.tck_ns
    n = len(complete)
    start = int(arrive_cyc.min()) if n else 0
    end = int(complete.max()) if n else 0
    elapsed = max(end - start, 1)
    nbytes = n * o.access_bytes
    peak = o.stack_peak_gbps * stacks
    achieved = nbytes / (elapsed * tck) if n else 0.0
    tot = counts.sum(axis=0)
    cols = int(tot[RD] + tot[WR])
    hit = max(0.0, 1.0 - tot[ACT] / cols) if cols else 0.0
    lat = (complete - admit) * tck
    lat_arr = (complete - arrive_cyc) * tck
    util = [float((counts[c, RD] + counts[c, WR]) * o.burst_cycles / elapsed) for c in range(nch)]
    ej = command_energy_pj(cfg)
    bg_cycles = elapsed * nch
    open_total = float(np.minimum(open_cycles, elapsed).sum())
    energy = {
        "activate": float(tot[ACT]) * ej["activate"] * 1e-12,
        "read": float(tot[RD]) * ej["read"] * 1e-12,
        "write": float(tot[WR]) * ej["write"] * 1e-12,
        "refresh": float(tot[REF]) * ej["refresh"] * 1e-12,
        "background": (open_total * ej["active_standby_per_cycle"]
                       + (bg_cycles - open_total) * ej["precharge_standby_per_cycle"]) * 1e-12,
    }
    energy["total"] = sum(energy.values())
    ncmd = int(tot.sum())
    return HbmStats(
        preset=cfg.name, stacks=stacks, channels=nch, requests=n, bytes=nbytes,
        elapsed_ns=elapsed * tck, elapsed_cycles=elapsed, peak_gbps=peak, achieved_gbps=achieved,
        efficiency=achieved / peak, row_hit_rate=hit,
        avg_latency_ns=float(lat.mean()) if n else 0.0,
        p99_latency_ns=float(np.percentile(lat, 99)) if n else 0.0,
        avg_latency_from_arrival_ns=float(lat_arr.mean()) if n else 0.0,
        channel_utilization=util, commands={CMD_NAMES[i]: int(tot[i]) for i in range(len(CMD_NAMES))},
        energy_j=energy, pj_per_bit=energy["total"] * 1e12 / (nbytes * 8) if n else 0.0,
        wall_s=wall_s, commands_per_s=ncmd / wall_s if wall_s > 0 else 0.0,
    )
