"""Public simulation API: ``simulate(program, chip) -> SimResult``.

``fidelity='cycle'`` runs the cycle engine (:mod:`infsim.engine.core`) with the hardware models;
``fidelity='analytical'`` runs the program-level analytical model, closed forms per instruction and a
dependency scoreboard without an event loop (:mod:`infsim.fidelity.program`; see :mod:`infsim.fidelity`).
Both return a :class:`~infsim.result.SimResult`. ``memory`` names the HBM model behind the memory
interface (:mod:`infsim.engine.memory`; default: the chip's ``hbm.memory_model``); ``trace=True`` keeps
per-instruction times in ``result.timeline`` for :func:`infsim.trace.write_trace`. ``mode`` selects the
cycle engine: ``'numba'`` (the default: one compiled kernel, :mod:`infsim.engine.numba_engine`) or
``'plain'`` (the simpy reference model that defines the timing); both give the same result, instruction
by instruction.
"""

from __future__ import annotations

import time
from pathlib import Path

from infsim.config import ChipConfig, load_chip
from infsim.engine.collectives import make_collectives
from infsim.engine.collectives.report import algorithm_of, program_collectives, summarize
from infsim.engine.core import run_engine
from infsim.engine.costs import Costs, compute_costs
from infsim.engine.memory import MemoryModel, make_memory
from infsim.errors import InfsimError
from infsim.isa.program import Program
from infsim.result import SimResult, Timeline, build_result

FIDELITIES = ("cycle", "analytical")


def _chip(chip: ChipConfig | str | Path) -> ChipConfig:
    return chip if isinstance(chip, ChipConfig) else load_chip(chip)


def _check(program: Program, chip: ChipConfig) -> None:
    if program.cores_per_chip > chip.cores_per_chip:
        raise InfsimError(f"program places {program.cores_per_chip} cores per chip but chip '{chip.name}' has "
                          f"{chip.cores_per_chip}")


def simulate(program: Program, chip: ChipConfig | str | Path, *, fidelity: str = "cycle",
             memory: str | MemoryModel | None = None, trace: bool = False, mode: str = "numba",
             memory_log: bool | None = None) -> SimResult:
    """Simulate ``program`` on ``chip`` (a ChipConfig, preset name or YAML path).

    ``memory_log``: keep the HBM transfer log in ``result.timeline`` (cycle fidelity; default: with ``trace``).
    A trace file shows it; a caller that wants only the per-instruction times passes ``False`` (on a 70B
    program the log is several hundred MB).

    ``memory`` is a registered model name (``infsim.engine.memory.MEMORY_MODELS``), a
    :class:`~infsim.engine.memory.MemoryModel` instance (reset before the run), or ``None`` for the chip's
    ``hbm.memory_model``.
    """
    if fidelity not in FIDELITIES:
        raise InfsimError(f"unknown fidelity '{fidelity}' (expected one of {', '.join(FIDELITIES)})")
    cfg = _chip(chip)
    _check(program, cfg)
    t0 = time.perf_counter()
    mem = memory if memory is not None and not isinstance(memory, str) else make_memory(cfg, memory)
    costs = compute_costs(program, cfg)
    if fidelity == "analytical":
        from infsim.fidelity.program import analyze  # (its compiled scoreboard: only this fidelity loads it)

        return _report_collectives(analyze(program, cfg, costs=costs, memory=mem, trace=trace, t0=t0), program, cfg,
                                   costs)
    run = run_engine(program, cfg, costs, mode=mode, memory=mem, log_memory=trace if memory_log is None else memory_log)
    stats = [(s.key, s.instructions, s.busy_ps, s.stall_ps, s.end_ps) for s in run.streams]
    timeline = None
    if trace:
        timeline = Timeline(run.start_ps, run.end_ps, run.occ_end_ps, program.instr["op"].copy(), program.streams(),
                            run.memory_log)
    res = build_result(program, cfg, costs, fidelity="cycle", total_ps=run.total_ps, stream_stats=stats,
                       hbm_read=sum(run.hbm_bytes_read), hbm_write=sum(run.hbm_bytes_written),
                       link_bytes=run.link_bytes, wall_s=time.perf_counter() - t0, timeline=timeline)
    return _report_collectives(res, program, cfg, costs)


def _report_collectives(res: SimResult, program: Program, cfg: ChipConfig, costs: Costs) -> SimResult:
    """Fill ``res.collectives`` (and, with a trace, the algorithm of every collective instruction)."""
    calls = program_collectives(program, costs.cc_src_bytes, costs.cc_dst_bytes)
    if not calls:
        return res
    model = make_collectives(cfg)
    res.collectives = summarize(model, calls.values(), program.cores_per_chip, cfg.lnc)
    if res.timeline is not None:
        res.collective_algorithm = {i: algorithm_of(model, c, program.cores_per_chip) for i, c in calls.items()}
    return res
