"""Public simulation API: ``simulate(program, chip) -> SimResult``.

``fidelity='cycle'`` runs the simpy engine (:mod:`infsim.engine.core`) with the hardware models;
``fidelity='analytical'`` evaluates closed forms without an event loop (:mod:`infsim.analytical`).
Both return a :class:`~infsim.result.SimResult`. ``memory`` names the HBM model behind the memory
interface (:mod:`infsim.engine.memory`); ``trace=True`` keeps per-instruction times in
``result.timeline`` for :func:`infsim.trace.write_trace`. ``mode`` selects the engine's fast path or
its plain per-instruction model (same results; the latter is for tests).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from infsim.config import ChipConfig, load_chip
from infsim.engine.costs import Costs, compute_costs
from infsim.engine.memory import MemoryModel, make_memory
from infsim.errors import InfsimError
from infsim.hw.energy import energy_report, per_instruction_pj
from infsim.isa.opcodes import Engine
from infsim.isa.program import Program
from infsim.result import EngineStat, SimResult, Timeline

FIDELITIES = ("cycle", "analytical")


def _chip(chip: ChipConfig | str | Path) -> ChipConfig:
    return chip if isinstance(chip, ChipConfig) else load_chip(chip)


def _check(program: Program, chip: ChipConfig) -> None:
    if program.cores_per_chip > chip.cores_per_chip:
        raise InfsimError(f"program places {program.cores_per_chip} cores per chip but chip '{chip.name}' has "
                          f"{chip.cores_per_chip}")


def build_result(program: Program, chip: ChipConfig, costs: Costs, *, fidelity: str, total_ps: int,
                 stream_stats: list[tuple[tuple[int, int, int], int, int, int, int]], hbm_read: int, hbm_write: int,
                 link_bytes: int, wall_s: float, timeline: Timeline | None) -> SimResult:
    """Assemble a :class:`SimResult` (shared by both fidelities).

    ``stream_stats``: ``(key, instructions, busy_ps, stall_ps, end_ps)`` per stream.
    """
    engines = [EngineStat(k[0], Engine(k[1]).name, k[2], n, b, s, e) for k, n, b, s, e in stream_stats]
    pj = per_instruction_pj(chip.energy, costs.macs, costs.mac_dtype, costs.sbuf_bytes, costs.psum_bytes,
                            (costs.hbm_read + costs.hbm_write).astype(np.float64), costs.vector_ops, costs.scalar_ops)
    rep = energy_report(chip.energy, program.instr["op"].astype(np.int64), pj, link_bytes, total_ps,
                        max(program.num_chips, 1))
    return SimResult(chip.name, fidelity, chip.tensor_engine.clock_ghz, int(total_ps), engines, int(hbm_read),
                     int(hbm_write), int(link_bytes), rep.by_component, rep.by_class, len(program), wall_s, timeline)


def simulate(program: Program, chip: ChipConfig | str | Path, *, fidelity: str = "cycle",
             memory: str | MemoryModel = "dram", trace: bool = False, mode: str = "fast") -> SimResult:
    """Simulate ``program`` on ``chip`` (a ChipConfig, preset name or YAML path).

    ``memory`` is a registered model name (``infsim.engine.memory.MEMORY_MODELS``) or a
    :class:`~infsim.engine.memory.MemoryModel` instance (reset before the run).
    """
    if fidelity not in FIDELITIES:
        raise InfsimError(f"unknown fidelity '{fidelity}' (expected one of {', '.join(FIDELITIES)})")
    cfg = _chip(chip)
    _check(program, cfg)
    t0 = time.perf_counter()
    costs = compute_costs(program, cfg)
    if fidelity == "analytical":
        from infsim.analytical import analyze
        from infsim.engine.dram_memory import effective_hbm_gbps

        gbps = effective_hbm_gbps(cfg) if memory == "dram" else cfg.hbm.bandwidth_gbps
        return analyze(program, cfg, costs=costs, trace=trace, t0=t0, hbm_gbps=gbps)
    from infsim.engine.core import run_engine

    mem = make_memory(memory, cfg) if isinstance(memory, str) else memory
    run = run_engine(program, cfg, costs, mode=mode, memory=mem, log_memory=trace)
    stats = [(s.key, s.instructions, s.busy_ps, s.stall_ps, s.end_ps) for s in run.streams]
    timeline = None
    if trace:
        timeline = Timeline(run.start_ps, run.end_ps, run.occ_end_ps, program.instr["op"].copy(), program.streams(),
                            run.memory_log)
    return build_result(program, cfg, costs, fidelity="cycle", total_ps=run.total_ps, stream_stats=stats,
                        hbm_read=sum(run.hbm_bytes_read), hbm_write=sum(run.hbm_bytes_written),
                        link_bytes=run.link_bytes, wall_s=time.perf_counter() - t0, timeline=timeline)
