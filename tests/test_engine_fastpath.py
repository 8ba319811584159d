"""The engine's fast path gives exactly the per-instruction model's times (module docstring of
infsim.engine.core), on random multi-stream programs with waits, signals, barriers, DMA queues sharing
engines and HBM, and collectives; deadlocks are reported identically by both."""

from __future__ import annotations

import numpy as np
from engine_programs import random_programs, synthetic_program
from hypothesis import given
from hypothesis import strategies as st

from infsim.config import load_chip
from infsim.engine.core import run_engine
from infsim.engine.costs import compute_costs
from infsim.engine.memory.simple import SimpleMemory
from infsim.isa import DeadlockError

CHIPS = {
    "inf2": load_chip("inf2"),
    # a slow HBM makes DMA contention (and ties in the memory model) matter
    "slowhbm": load_chip("inf2", {"hbm.bandwidth_gbps": 40.0, "dma.engines_per_core": 2}),
    # small arbitration chunks: transfers of queues sharing an engine interleave chunk by chunk
    "chunked": load_chip("inf2", {"dma.engines_per_core": 2, "dma.arbitration_bytes": 512}),
    # zero latencies and overheads: many events fall on the same instant (ties)
    "zerolat": load_chip("inf2", {"dma.fixed_latency_ns": 0, "hbm.latency_ns": 0, "dma.descriptor_overhead_ns": 0,
                                  "vector_engine.fixed_overhead_cycles": 0, "gpsimd_engine.fixed_overhead_cycles": 0,
                                  "scalar_engine.fixed_overhead_cycles": 0, "links.collective_step_overhead_ns": 0,
                                  "links.intra_chip_latency_ns": 0}),
}


def _run(program, chip, mode):
    costs = compute_costs(program, chip)
    try:
        return run_engine(program, chip, costs, mode=mode, memory=SimpleMemory(chip))
    except DeadlockError as e:
        return e


def _same(program, chip) -> None:
    a = _run(program, chip, "fast")
    b = _run(program, chip, "per_instruction")
    if isinstance(a, Exception) or isinstance(b, Exception):
        assert type(a) is type(b) and str(a) == str(b)
        return
    assert a.total_ps == b.total_ps
    np.testing.assert_array_equal(a.start_ps, b.start_ps)
    np.testing.assert_array_equal(a.end_ps, b.end_ps)
    for x, y in zip(a.streams, b.streams):
        assert (x.key, x.busy_ps, x.stall_ps, x.end_ps) == (y.key, y.busy_ps, y.stall_ps, y.end_ps)


@given(random_programs(), st.sampled_from(sorted(CHIPS)))
def test_fast_path_equals_per_instruction(program, chip_name) -> None:
    _same(program, CHIPS[chip_name])


def test_fast_path_equals_per_instruction_synthetic() -> None:
    p = synthetic_program(3000, cores=2)
    for chip in CHIPS.values():
        _same(p, chip)


def test_deterministic() -> None:
    p = synthetic_program(2000, cores=2)
    a = _run(p, CHIPS["slowhbm"], "fast")
    b = _run(p, CHIPS["slowhbm"], "fast")
    np.testing.assert_array_equal(a.end_ps, b.end_ps)


def test_deterministic_across_hash_seeds() -> None:
    import os
    import subprocess
    import sys

    code = ("import hashlib\nfrom infsim.engine.synthetic import synthetic_program\nfrom infsim.sim import simulate\n"
            "r = simulate(synthetic_program(3000), 'inf2', trace=True)\n"
            "print(r.total_ps, hashlib.sha1(r.timeline.end_ps.tobytes()).hexdigest())")
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        outs.add(out.stdout)
    assert len(outs) == 1
