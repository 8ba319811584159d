"""The engine's parts driven on their own, outside :class:`~infsim.engine.core.Simulator`: semaphores, the DMA
arbiter (with a memory model) and the collective rendezvous. Each gives the same times as inside a full
run, which is what lets another engine (or a test) reuse one part at a time."""

from __future__ import annotations

import numpy as np
import simpy

from infsim.config import load_chip
from infsim.engine.costs import compute_costs
from infsim.engine.dma_arbiter import DmaArbiter, DmaQueue
from infsim.engine.memory.dram import DramMemory
from infsim.engine.rendezvous import CollectiveRendezvous
from infsim.engine.semaphores import Semaphores
from infsim.engine.streams import StreamState, StreamStats, barrier_targets
from infsim.isa import DType, Program, hbm, make, sbuf
from infsim.isa.opcodes import Op
from infsim.sim import simulate

INF2 = load_chip("inf2")


def test_semaphores_wake_a_waiter_at_the_crossing() -> None:
    env = simpy.Environment()
    sems = Semaphores(env, 1)
    woken: list[int] = []
    sems.signal(0, 10, 1)
    sems.signal(0, 5, 1)
    sems.wait_cb(0, 2, lambda: woken.append(env.now))
    assert not sems.holds(0, 1) and sems.total[0] == 2
    env.run()
    assert woken == [10] and sems.holds(0, 2) and not sems.holds(0, 3)


def _dma_program() -> Program:
    """Two 128 KiB reads on queues 0 and 16 (the same DMA engine), the second waiting on a semaphore that a
    nop on queue 1 signals."""
    p = Program(1, 2)
    p.add_tensor("x", "bf16", (128, 512))
    p.append(make("nop", engine="dma", queue=1, signals=[("go", 1)]))
    p.append(make("dma_copy", sbuf(128, 512, DType.bf16), hbm("x", 128, 512, DType.bf16), queue=0))
    p.append(make("dma_copy", sbuf(128, 512, DType.bf16), hbm("x", 128, 512, DType.bf16), queue=16,
                  waits=[("go", 1)]))
    return p


def test_dma_arbiter_alone_matches_the_engine() -> None:
    p = _dma_program()
    costs = compute_costs(p, INF2)
    env = simpy.Environment()
    sems = Semaphores(env, len(p.semaphores))
    memory = DramMemory(INF2)
    memory.reset(1)
    streams = p.streams()
    keys = list(streams)
    n = len(p)
    ins = p.instr
    state = StreamState(env, done=[False] * len(keys), blocked=[None] * len(keys),
                        stats=[StreamStats(k, len(streams[k])) for k in keys], start=np.zeros(n, np.int64),
                        end=np.zeros(n, np.int64), occ_end=np.zeros(n, np.int64))
    cols = [ins[c].astype(np.int64) for c in ("op", "wsem", "wval", "ssem", "sval")]
    access = memory.access(p, costs)  # the memory model's per-instruction efficiencies, computed before the run
    queues = [DmaQueue(k, key[0], key[2], streams[key], cols[0], costs, *cols[1:], access)
              for k, key in enumerate(keys)]
    arbiter = DmaArbiter(env, sems, memory, INF2.dma, state, queues)
    arbiter.start()
    env.run()
    assert all(state.done)
    full = simulate(p, INF2, trace=True)
    assert state.start.tolist() == full.timeline.start_ps.tolist()
    assert state.end.tolist() == full.timeline.end_ps.tolist()
    assert arbiter.engine_of() == {0: 0, 1: 1, 2: 0}  # queues 0 and 16 share engine 0
    assert state.start[2] > state.start[1]  # it waits a chunk behind queue 0 on the shared engine


class _FixedTiming:
    def duration_ps(self, op: Op, members: tuple[int, ...], src_bytes: int, dst_bytes: int,
                    cores_per_chip: int) -> tuple[int, int]:
        return 1000, src_bytes


def test_rendezvous_alone_starts_at_the_last_arrival() -> None:
    p = Program(2, 2)
    p.add_group("g", (0, 1))
    for c in (0, 1):
        p.append(make("all_reduce", sbuf(128, 8, DType.fp32), sbuf(128, 8, DType.fp32, offset=64), group="g", core=c))
    env = simpy.Environment()
    rdv = CollectiveRendezvous(env, p, _FixedTiming(), np.array([100, 300]), np.array([100, 300]))
    first, done = rdv.arrive(0)
    assert not done and not first.event.triggered

    def late() -> simpy.events.ProcessGenerator:
        yield env.timeout(5)
        second, complete = rdv.arrive(1)
        assert complete and second is first

    env.process(late())
    env.run()
    assert first.event.triggered and first.end == 5 + 1000
    assert rdv.link_bytes == 2 * 300  # the larger size, for each member
    assert not rdv.pending


def test_barrier_targets() -> None:
    p = Program(1, 2)
    for _ in range(2):
        p.append(make("barrier", sem="b", count=3))
        p.append(make("nop", engine="vector"))
    assert barrier_targets(p).tolist() == [3, -1, 6, -1]
