"""The numba engine gives exactly the reference engine's results (module docstrings of infsim.engine.numba_engine
and infsim.engine.core): every instruction's start, end and end of engine occupancy, the total, per-stream
busy/stall/end, HBM bytes per chip and link bytes, and identical deadlock reports. On random multi-stream
programs with waits, signals, barriers, DMA queues sharing engines and HBM, and collectives (hypothesis), on
the synthetic program, and on lowered ones (Llama decode and prefill, GPT-2 with tensor parallelism over two
chips); plus the cases that once told the engines apart."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from engine_programs import random_programs, synthetic_program
from hypothesis import given
from hypothesis import strategies as st

from infsim.config import load_chip
from infsim.engine.core import run_engine
from infsim.engine.costs import compute_costs
from infsim.engine.memory import make_memory
from infsim.engine.memory.simple import SimpleMemory
from infsim.errors import InfsimError
from infsim.isa import DeadlockError, DType, Program, hbm, make, psum, sbuf
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.spec import load_model

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


def _run(program, chip, mode, memory=SimpleMemory, log=False):
    costs = compute_costs(program, chip)
    try:
        return run_engine(program, chip, costs, mode=mode, memory=memory(chip), log_memory=log)
    except (DeadlockError, InfsimError) as e:
        return e


def _same(program, chip, memory=SimpleMemory, log=False):
    a = _run(program, chip, "numba", memory, log)
    b = _run(program, chip, "plain", memory, log)
    if isinstance(a, Exception) or isinstance(b, Exception):
        assert type(a) is type(b) and str(a) == str(b)
        return a
    assert a.total_ps == b.total_ps
    np.testing.assert_array_equal(a.start_ps, b.start_ps)
    np.testing.assert_array_equal(a.end_ps, b.end_ps)
    np.testing.assert_array_equal(a.occ_end_ps, b.occ_end_ps)
    for x, y in zip(a.streams, b.streams, strict=True):
        assert (x.key, x.instructions, x.busy_ps, x.stall_ps, x.end_ps) == \
            (y.key, y.instructions, y.busy_ps, y.stall_ps, y.end_ps)
    assert (a.hbm_bytes_read, a.hbm_bytes_written, a.link_bytes) == (b.hbm_bytes_read, b.hbm_bytes_written,
                                                                    b.link_bytes)
    assert a.dma_engine_of == b.dma_engine_of
    assert a.memory_log == b.memory_log
    return a


@given(random_programs(), st.sampled_from(sorted(CHIPS)))
def test_numba_equals_reference(program, chip_name) -> None:
    _same(program, CHIPS[chip_name])


@given(random_programs(max_instructions=12, cores=(2,)))
def test_numba_equals_reference_with_the_dram_model_and_the_memory_log(program) -> None:
    _same(program, CHIPS["slowhbm"], memory=make_memory, log=True)


def test_numba_equals_reference_synthetic() -> None:
    p = synthetic_program(3000, cores=2)
    for chip in CHIPS.values():
        _same(p, chip)
    _same(p, CHIPS["inf2"], memory=make_memory, log=True)


LLAMA2 = dataclasses.replace(load_model("llama-2-7b"), layers=1)


@pytest.mark.parametrize("model,phase,batch,context,tp", [
    (LLAMA2, "decode", 1, 2048, 2),  # where the old simpy fast path started 4 DMA nops 1.57 us late
    (LLAMA2, "prefill", 1, 128, 2),
    ("gpt2", "decode", 4, 128, 4),  # tensor parallel over two inf2 chips: collectives between chips
], ids=["llama-decode", "llama-prefill", "gpt2-tp4"])
def test_numba_equals_reference_lowered(model, phase, batch, context, tp) -> None:
    spec = load_model(model) if isinstance(model, str) else model
    if isinstance(model, str):
        spec = dataclasses.replace(spec, layers=2)
    chip = CHIPS["inf2"]
    program = lower(spec, Workload.make(phase, batch, context, tp=tp), chip).program
    assert program.num_chips == (2 if tp > 2 else 1)
    _same(program, chip, memory=make_memory)


def test_deterministic() -> None:
    p = synthetic_program(2000, cores=2)
    a = _run(p, CHIPS["slowhbm"], "numba")
    b = _run(p, CHIPS["slowhbm"], "numba")
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
    old simpy fast path started the waiter at that transfer's end instead of at 0)."""
    p = Program(1, 2)
    dst, src = sbuf(128, 512, DType.bf16), sbuf(128, 512, DType.bf16, offset=4096)
    p.append(make("nop", engine="dma", queue=0, signals=[("S", 1)]))
    p.append(make("dma_copy", dst, src, queue=0, signals=[("S", 1)]))
    p.append(make("dma_copy", dst, src, queue=0, signals=[("T", 1)]))
    p.append(make("dma_copy", sbuf(128, 64, DType.bf16), sbuf(128, 64, DType.bf16, offset=8192), queue=1,
                  waits=[("S", 1)]))
    assert _same(p, CHIPS["inf2"]).start_ps[3] == 0


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
    r = _same(p, CHIPS["inf2"])
    assert r.end_ps[1] < r.end_ps[0] and r.start_ps[2] == r.end_ps[0]  # the nop finished first
    assert r.end_ps[4] < r.end_ps[3] and r.start_ps[5] == r.end_ps[3]  # so did the short matmul


def test_a_memory_model_the_kernel_cannot_time_runs_on_the_reference() -> None:
    class Doubling(SimpleMemory):
        def transfer(self, chip, start_ps, nbytes, is_write, addr, max_gbps=None, eff=1.0):  # type: ignore[no-untyped-def]
            return super().transfer(chip, start_ps, 2 * nbytes, is_write, addr, max_gbps, eff)

    p = synthetic_program(500)
    a, b = _run(p, CHIPS["inf2"], "numba", Doubling), _run(p, CHIPS["inf2"], "plain", Doubling)
    assert a.total_ps == b.total_ps > _run(p, CHIPS["inf2"], "numba").total_ps


def test_unknown_mode() -> None:
    with pytest.raises(InfsimError, match="unknown engine mode 'fast' \\(expected one of numba, plain\\)"):
        run_engine(Program(1, 2), CHIPS["inf2"], compute_costs(Program(1, 2), CHIPS["inf2"]), mode="fast",
                   memory=SimpleMemory(CHIPS["inf2"]))


def test_numba_equals_reference_with_dram_patterns_and_read_write_mixing() -> None:
    """The ``dram`` model's per-transfer inputs reach the kernel: strided access-pattern efficiencies (not
    just the streaming ones) and the pool's read/write mixing cost. Each one changes the numba engine's
    result when removed, and with both the engine equals the reference."""
    chip = CHIPS["slowhbm"]
    p = synthetic_program(3000, cores=2)
    mem = make_memory(chip)
    access = mem.access(p, compute_costs(p, chip))
    stream_r, stream_w = mem.eff_read, mem.eff_write
    assert mem.kappa > 0
    assert ((access.read_eff != 1.0) & (access.read_eff != stream_r)).any()  # a strided pattern
    assert (access.write_eff != 1.0).any()  # reads and writes share the pool

    class NoMixing(type(mem)):  # type: ignore[misc]
        def __init__(self, chip):  # type: ignore[no-untyped-def]
            super().__init__(chip)
            self.kappa = 0.0

    class StreamOnly(type(mem)):  # type: ignore[misc]
        def access(self, program, costs):  # type: ignore[no-untyped-def]
            a = super().access(program, costs)
            return type(a)(np.where(a.read_eff != 1.0, stream_r, 1.0), np.where(a.write_eff != 1.0, stream_w, 1.0))

    full = _same(p, chip, memory=make_memory, log=True)
    for variant in (NoMixing, StreamOnly):
        other = _same(p, chip, memory=variant)
        assert other.total_ps != full.total_ps, variant.__name__
