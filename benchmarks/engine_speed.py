"""Engine speed: instructions simulated per second on a synthetic 1,000,000-instruction program.

The program is :func:`infsim.engine.synthetic.synthetic_program` (2 cores; per tile 2 DMA loads, 4
matmuls, 1 activation, 2 vector ops, a store every fourth tile: ~22 % DMA, ~44 % matmul). Timed
phases: program build (not counted), per-instruction cost precompute, the event engine (fast path), the
whole ``simulate`` call (cycle fidelity), and the analytical fidelity. A smaller run of the plain
per-instruction engine is timed for comparison and checked to give the same total.

Writes ``benchmarks/results/engine_speed.json``. Run: ``python benchmarks/engine_speed.py [N]``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from infsim.config import load_chip
from infsim.engine.core import run_engine
from infsim.engine.costs import compute_costs
from infsim.engine.memory.simple import SimpleMemory
from infsim.engine.synthetic import synthetic_program
from infsim.sim import simulate

OUT = Path(__file__).parent / "results" / "engine_speed.json"


def _best(fn, repeat: int = 2) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _variant(chip, n: int, k_tiles: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """A matmul-heavier mix (k_tiles accumulating matmuls per tile): fast path vs per-instruction model."""
    prog = synthetic_program(n, k_tiles=k_tiles)
    costs = compute_costs(prog, chip)
    fast_s, fast = _best(lambda: run_engine(prog, chip, costs, memory=SimpleMemory(chip)), 1)
    small = synthetic_program(min(n, 100_000), k_tiles=k_tiles)
    cs = compute_costs(small, chip)
    plain_s, plain = _best(lambda: run_engine(small, chip, cs, mode="per_instruction", memory=SimpleMemory(chip)), 1)
    fs_s, fs = _best(lambda: run_engine(small, chip, cs, memory=SimpleMemory(chip)), 1)
    assert plain.total_ps == fs.total_ps  # type: ignore[attr-defined]
    return {"k_tiles": k_tiles, "instructions": len(prog), "engine_s": round(fast_s, 3),
            "engine_instructions_per_s": round(len(prog) / fast_s),
            "per_instruction_mode_speedup_100k": round(plain_s / fs_s, 2)}


def _lowered(chip) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """A real lowered program: one Llama-2-7B decode step (batch 1, context 512, TP 2 on one inf2 chip)."""
    try:
        from infsim.models.graph import Workload
        from infsim.models.lower.transformer import lower
        from infsim.models.spec import load_model
    except ImportError as e:  # the lowering is another package's; the benchmark still runs without it
        return {"skipped": str(e)}
    t = time.perf_counter()
    prog = lower(load_model("llama-2-7b"), Workload("decode", 1, 1, 512, tp=2), chip).program
    lower_s = time.perf_counter() - t
    cyc_s, cyc = _best(lambda: simulate(prog, chip), 1)
    ana_s, ana = _best(lambda: simulate(prog, chip, fidelity="analytical"), 1)
    return {"instructions": len(prog), "lower_s": round(lower_s, 3), "simulate_s": round(cyc_s, 3),
            "instructions_per_s": round(len(prog) / cyc_s), "total_ns": cyc.total_ns,  # type: ignore[attr-defined]
            "analytical_s": round(ana_s, 3), "analytical_total_ns": ana.total_ns}  # type: ignore[attr-defined]


def main(n: int = 1_000_000) -> dict:  # type: ignore[type-arg]
    chip = load_chip("inf2")
    simulate(synthetic_program(2000), chip)  # warm numba caches
    simulate(synthetic_program(2000), chip, fidelity="analytical")
    t = time.perf_counter()
    prog = synthetic_program(n)
    build_s = time.perf_counter() - t
    costs_s, costs = _best(lambda: compute_costs(prog, chip))
    engine_s, run = _best(lambda: run_engine(prog, chip, costs, memory=SimpleMemory(chip)))
    sim_s, res = _best(lambda: simulate(prog, chip))
    ana_s, ana = _best(lambda: simulate(prog, chip, fidelity="analytical"))
    small = synthetic_program(min(n, 100_000))
    c_small = compute_costs(small, chip)
    plain_s, plain = _best(lambda: run_engine(small, chip, c_small, mode="per_instruction", memory=SimpleMemory(chip)),
                           1)
    fast_small_s, fast_small = _best(lambda: run_engine(small, chip, c_small, memory=SimpleMemory(chip)), 1)
    assert plain.total_ps == fast_small.total_ps  # type: ignore[attr-defined]
    n_instr = len(prog)
    out = {
        "program": "infsim.engine.synthetic.synthetic_program (2 cores, tiled GEMM + eviction + vector mix)",
        "instructions": n_instr,
        "chip": "inf2",
        "total_cycles": res.total_cycles,  # type: ignore[attr-defined]
        "analytical_total_cycles": ana.total_cycles,  # type: ignore[attr-defined]
        "build_s": round(build_s, 3),
        "costs_s": round(costs_s, 3),
        "engine_s": round(engine_s, 3),
        "simulate_s": round(sim_s, 3),
        "instructions_per_s": round(n_instr / sim_s),
        "engine_instructions_per_s": round(n_instr / engine_s),
        "analytical_s": round(ana_s, 3),
        "analytical_instructions_per_s": round(n_instr / ana_s),
        "per_instruction_mode": {"instructions": len(small), "engine_s": round(plain_s, 3),
                                 "instructions_per_s": round(len(small) / plain_s),
                                 "fast_path_s": round(fast_small_s, 3),
                                 "speedup": round(plain_s / fast_small_s, 2)},
        "prefill_like_mix": _variant(chip, n, k_tiles=16),
        "llama2_7b_decode": _lowered(chip),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    result = main(n)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
