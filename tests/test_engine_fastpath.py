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
from infsim.isa import DeadlockError, DType, Program, hbm, make, psum, sbuf

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


def test_zero_time_signals_pending_keep_a_crossing_open() -> None:
    """A DMA nop's zero-time signal is applied after the round of DMA decisions of its instant; a transfer
    the same queue issues in that round must not make the queue look unable to signal before its end (the
    fast path once started the waiter at that transfer's end instead of at 0)."""
    p = Program(1, 2)
    copy = {"dst": sbuf(128, 512, DType.bf16), "src": sbuf(128, 512, DType.bf16, offset=4096), "queue": 0}
    p.append(make("nop", engine="dma", queue=0, signals=[("S", 1)]))
    p.append(make("dma_copy", copy["dst"], copy["src"], queue=0, signals=[("S", 1)]))
    p.append(make("dma_copy", copy["dst"], copy["src"], queue=0, signals=[("T", 1)]))
    p.append(make("dma_copy", sbuf(128, 64, DType.bf16), sbuf(128, 64, DType.bf16, offset=8192), queue=1,
                  waits=[("S", 1)]))
    _same(p, CHIPS["inf2"])
    assert _run(p, CHIPS["inf2"], "fast").start_ps[3] == 0


def test_signals_of_a_stream_take_effect_in_program_order() -> None:
    """A nop behind a long transfer on the same queue, and a short matmul behind a long one: their signals
    wait for the earlier instruction's (no early wake-up of the waiter)."""
    p = Program(1, 2)
    p.add_tensor("x", "bf16", (128, 4096))
    p.append(make("dma_copy", sbuf(128, 4096, DType.bf16), hbm("x", 128, 4096, DType.bf16), queue=0,
                  signals=[("d", 1)]))
    p.append(make("nop", engine="dma", queue=0, signals=[("d", 1)]))
    p.append(make("tensor_copy", sbuf(1, 1, DType.bf16), sbuf(1, 1, DType.bf16, offset=64), waits=[("d", 2)]))
    p.append(make("matmul", psum(128, 512), sbuf(128, 128, DType.bf16), sbuf(128, 512, DType.bf16, offset=8192),
                  signals=[("m", 1)]))
    p.append(make("matmul", psum(1, 1, offset=4096), sbuf(1, 1, DType.bf16, offset=16384),
                  sbuf(1, 1, DType.bf16, offset=16448), signals=[("m", 1)]))
    p.append(make("activate", sbuf(1, 1, DType.bf16), psum(1, 1, offset=4096), func="exp", waits=[("m", 2)]))
    for mode in ("fast", "per_instruction"):
        r = _run(p, CHIPS["inf2"], mode)
        assert r.end_ps[1] < r.end_ps[0] and r.start_ps[2] == r.end_ps[0]  # the nop finished first
        assert r.end_ps[4] < r.end_ps[3] and r.start_ps[5] == r.end_ps[3]  # so did the short matmul
    _same(p, CHIPS["inf2"])
