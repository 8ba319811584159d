"""The result of a simulation (both fidelities): :class:`SimResult`, and :func:`build_result`, which
assembles it (energy included) from either fidelity's timing.

Units are in every name. ``*_cycles`` are **tensor-engine clock cycles** of the simulated chip
(``clock_ghz``), for every engine, so busy/stall/idle of engines with other clocks compare directly with
``total_cycles``; ``*_ns`` are nanoseconds. Internally the engine keeps integer picoseconds.

``to_dict()`` is the stable ``infsim sim --json`` output (keep these names): ``total_cycles``,
``total_ns``, ``engines`` (per engine ``busy_cycles``, ``instructions``, plus ``stall_cycles``,
``idle_cycles``, ``busy_ns``, ``utilization``), ``hbm_bytes_read``, ``hbm_bytes_written``, ``energy_j``,
plus ``hbm_gbps``, ``power_w``, ``energy_breakdown_j``, ``energy_by_class_j``, ``collectives`` (each distinct
collective with the algorithm it ran) and run metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.engine.costs import Costs
from infsim.hw.energy import energy_report, per_instruction_pj
from infsim.isa.opcodes import Engine
from infsim.isa.program import Program


def ps_to_cycles(ps: int, clock_ghz: float) -> int:
    """Integer cycles (rounded up) of ``ps`` picoseconds at ``clock_ghz``."""
    khz = int(round(clock_ghz * 1e6))
    return (int(ps) * khz + 999_999_999) // 1_000_000_000


@dataclass
class EngineStat:
    """One stream: a compute engine of a core, or one DMA / collective queue."""

    core: int
    engine: str
    queue: int
    instructions: int
    busy_ps: int
    stall_ps: int
    end_ps: int

    @property
    def name(self) -> str:
        if self.engine in (Engine.dma.name, Engine.cc.name):
            return f"core{self.core}.{self.engine}{self.queue}"
        return f"core{self.core}.{self.engine}"


@dataclass
class SimResult:
    """Cycles, per-engine activity, HBM traffic and energy of one simulated program."""

    chip: str
    fidelity: str
    clock_ghz: float
    total_ps: int
    engines: list[EngineStat]
    hbm_bytes_read: int
    hbm_bytes_written: int
    link_bytes: int
    energy_breakdown_j: dict[str, float]
    energy_by_class_j: dict[str, float]
    num_instructions: int
    wall_s: float = 0.0
    timeline: Any = field(default=None, repr=False)  # per-instruction times for traces (trace=True)
    costs: Any = field(default=None, repr=False)  # per-instruction costs (with trace=True; for breakdowns)
    #: distinct collectives of the program with the algorithm each ran (:mod:`infsim.engine.collectives.report`)
    collectives: list[dict[str, Any]] = field(default_factory=list)
    #: collective instruction index -> the algorithm it ran (for traces)
    collective_algorithm: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def total_ns(self) -> float:
        return self.total_ps / 1000.0

    @property
    def total_cycles(self) -> int:
        return ps_to_cycles(self.total_ps, self.clock_ghz)

    @property
    def hbm_gbps(self) -> float:
        """Achieved HBM bandwidth over the whole run (GB/s = bytes per ns)."""
        return (self.hbm_bytes_read + self.hbm_bytes_written) / self.total_ns if self.total_ps else 0.0

    @property
    def energy_j(self) -> float:
        return float(sum(self.energy_breakdown_j.values()))

    @property
    def power_w(self) -> float:
        return self.energy_j / (self.total_ps * 1e-12) if self.total_ps else 0.0

    def cycles(self, ps: int) -> int:
        return ps_to_cycles(ps, self.clock_ghz)

    def engine_dict(self, e: EngineStat) -> dict[str, Any]:
        idle = max(self.total_ps - e.busy_ps - e.stall_ps, 0)
        return {
            "core": e.core,
            "engine": e.engine,
            "queue": e.queue,
            "instructions": e.instructions,
            "busy_cycles": self.cycles(e.busy_ps),
            "stall_cycles": self.cycles(e.stall_ps),
            "idle_cycles": self.cycles(idle),
            "busy_ns": e.busy_ps / 1000.0,
            "utilization": e.busy_ps / self.total_ps if self.total_ps else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "chip": self.chip,
            "fidelity": self.fidelity,
            "clock_ghz": self.clock_ghz,
            "total_cycles": self.total_cycles,
            "total_ns": self.total_ns,
            "engines": {e.name: self.engine_dict(e) for e in self.engines},
            "hbm_bytes_read": int(self.hbm_bytes_read),
            "hbm_bytes_written": int(self.hbm_bytes_written),
            "hbm_gbps": self.hbm_gbps,
            "link_bytes": int(self.link_bytes),
            "energy_j": self.energy_j,
            "power_w": self.power_w,
            "energy_breakdown_j": dict(self.energy_breakdown_j),
            "energy_by_class_j": dict(self.energy_by_class_j),
            "num_instructions": self.num_instructions,
            "wall_s": self.wall_s,
            "collectives": list(self.collectives),
        }

    def engine_table(self) -> Any:
        """A pandas DataFrame, one row per engine/queue (cycles in tensor-engine clock cycles)."""
        import pandas as pd

        rows = [{"name": e.name, **self.engine_dict(e)} for e in self.engines]
        return pd.DataFrame(rows).set_index("name") if rows else pd.DataFrame()


@dataclass
class Timeline:
    """Per-instruction start/end (ps), the streams and the HBM transfer log of a run (for traces)."""

    start_ps: np.ndarray
    end_ps: np.ndarray  # completion (signals applied)
    occ_end_ps: np.ndarray  # end of engine occupancy (compute: issue interval; DMA: data moved)
    op: np.ndarray
    streams: dict[tuple[int, int, int], np.ndarray]
    memory_log: list[tuple[int, int, int, int, bool]] | None


def build_result(program: Program, chip: ChipConfig, costs: Costs, *, fidelity: str, total_ps: int,
                 stream_stats: list[tuple[tuple[int, int, int], int, int, int, int]], hbm_read: int, hbm_write: int,
                 link_bytes: int, wall_s: float, timeline: Timeline | None) -> SimResult:
    """Assemble a :class:`SimResult` (shared by both fidelities).

    ``stream_stats``: ``(key, instructions, busy_ps, stall_ps, end_ps)`` per stream.
    """
    engines = [EngineStat(k[0], Engine(k[1]).name, k[2], n, b, s, e) for k, n, b, s, e in stream_stats]
    hbm_bytes = np.zeros(len(program))
    hbm_bytes[costs.dma_rows] = costs.hbm_read.values + costs.hbm_write.values
    pj = per_instruction_pj(chip.energy, costs.macs, costs.mac_dtype, costs.sbuf_bytes, costs.psum_bytes, hbm_bytes,
                            costs.vector_ops, costs.scalar_ops)
    rep = energy_report(chip.energy, program.instr["op"], pj, link_bytes, total_ps, max(program.num_chips, 1),
                        chip.static_power_w)
    del hbm_bytes
    return SimResult(chip.name, fidelity, chip.tensor_engine.clock_ghz, int(total_ps), engines, int(hbm_read),
                     int(hbm_write), int(link_bytes), rep.by_component, rep.by_class, len(program), wall_s, timeline,
                     costs if timeline is not None else None)
