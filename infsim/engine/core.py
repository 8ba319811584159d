"""The cycle engine's timing rules, and the simpy reference engine that defines them (``mode='plain'``):
every instruction stream of a program as a process, coupled by semaphores.

Streams and timing rules
------------------------
A stream is ``(core, engine, queue)`` (:meth:`Program.streams`). Time is integer picoseconds.

* **Compute streams** (tensor, vector, scalar, gpsimd, sync) run in order. Instruction ``i`` starts at
  ``start_i = max(free_i, crossing times of its waits)`` where ``free_i = start_{i-1} + busy_{i-1}``
  (``busy`` = issue interval, :mod:`infsim.engine.costs`); it completes at ``start_i + lat_i``.
  ``barrier`` adds 1 to its semaphore at its start (its arrival) and then waits for ``k * count`` (the
  k-th barrier of the stream on that semaphore).
* **DMA queues** are served by the DMA engines of their core, round-robin in arbitration chunks, with the
  memory model timing the HBM side (rules in :mod:`infsim.engine.dma_arbiter`).
* **Collective queues** (``cc``): a collective starts when every member of its group has reached it
  (waits satisfied, stream free) and lasts the collective model's duration (rules in
  :mod:`infsim.engine.rendezvous`; the model from :func:`infsim.engine.collectives.make_collectives`).
* **Semaphores** are monotonic counters; a wait ``(sem, v)`` is satisfied from the instant the
  running total of applied signals reaches ``v`` (:mod:`infsim.engine.semaphores`). **Signals of one
  stream are applied in program order**: instruction ``i``'s signals (a barrier's arrival included)
  take effect at ``max(its completion (arrival), when the stream's previous signalling instruction's
  took effect)`` (:meth:`~infsim.engine.streams.StreamState.signal_time`). So when one stream is the
  only signaller of a semaphore and adds 1 per instruction, ``sem >= n`` means "its n-th signalling
  instruction has completed": a zero-latency nop or a short matmul never wakes a waiter before the
  longer instructions ahead of it (the hardware's counting scheme; the ISA docs specify it).

Engines (``mode``)
------------------
* ``'plain'`` (this module, :func:`run_engine`): the reference model, simpy. Every compute and collective
  stream is a process that yields a timeout per instruction, signals are timed events
  (:class:`~infsim.engine.semaphores.Semaphores`), the DMA engines are :class:`~infsim.engine.dma_arbiter.DmaArbiter`
  and collectives :class:`~infsim.engine.rendezvous.CollectiveRendezvous`. It *defines* the timing.
* ``'numba'`` (the default; :mod:`infsim.engine.numba_engine`): the same rules in one compiled kernel over
  all streams, DMA engines, HBM rate profiles and collectives, many times faster
  (``benchmarks/results/engine_speed.json``); equal to the reference in every start and finish time
  (tested on random and lowered programs). A memory model the kernel cannot time (one that replaces
  :meth:`~infsim.engine.memory.simple.SimpleMemory.transfer`) runs on the reference.

The reference's parts share the run's per-stream and per-instruction state
(:class:`~infsim.engine.streams.StreamState`), so each can be driven on its own; this module creates them
and runs the compute and collective streams. Left out: instruction fetch and decode, the sequencers' own
queues (an engine issues its next instruction as soon as the previous one's issue interval ends and its
waits hold), and everything the parts leave out.

Busy / stall / idle per stream: busy = sum of issue intervals (DMA: engine occupancy, collective:
duration); stall = time an instruction waited past its stream's free time (semaphores, collective
partners; DMA also the shared engine); idle = the rest of the run.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from infsim.config.schema import ChipConfig
from infsim.errors import InfsimError
from infsim.isa.opcodes import Engine
from infsim.isa.program import Program

from .collectives import CollectiveTiming, make_collectives
from .costs import Costs
from .dma_arbiter import DmaArbiter, DmaQueue
from .events import Env
from .memory import MemoryModel
from .rendezvous import CollectiveRendezvous
from .semaphores import Semaphores
from .streams import (
    EngineRun,
    StreamState,
    StreamStats,
    barrier_targets,
    deadlock_error,
)


def _pairs(sem: np.ndarray, val: np.ndarray, i: int) -> list[tuple[int, int]]:
    """The ``(semaphore, value)`` slots of instruction ``i`` that are used (semaphore >= 0)."""
    return [(int(sem[i, j]), int(val[i, j])) for j in range(sem.shape[1]) if sem[i, j] >= 0]


class Simulator:
    """Runs one program on one chip (see the module docstring). Use :func:`run_engine`."""

    def __init__(self, program: Program, chip: ChipConfig, costs: Costs, *, memory: MemoryModel,
                 collectives: CollectiveTiming | None = None, log_memory: bool = False):
        self.program = program
        self.chip = chip
        self.costs = costs
        self.env = Env()
        nsem = max(len(program.semaphores), 1)
        self.sems = Semaphores(self.env, nsem)
        self.memory = memory
        memory.reset(max(program.num_chips, 1), log=log_memory)
        self.coll = collectives if collectives is not None else make_collectives(chip)
        ins = program.instr
        self.n = len(ins)
        self.op = ins["op"].astype(np.int64)
        self.streams = program.streams()
        self.keys = list(self.streams)
        ns = len(self.keys)
        self.done = [False] * ns
        self.blocked: list[Any] = [None] * ns
        self.stats = [StreamStats(k, len(self.streams[k])) for k in self.keys]
        self.start = np.zeros(self.n, dtype=np.int64)
        self.end = np.zeros(self.n, dtype=np.int64)
        self.occ_end = np.zeros(self.n, dtype=np.int64)  # end of engine occupancy (compute: start + busy)
        # waits / signals / barriers
        self.wsem = ins["wsem"].astype(np.int64)
        self.wval = ins["wval"].astype(np.int64)
        self.ssem = ins["ssem"].astype(np.int64)
        self.sval = ins["sval"].astype(np.int64)
        self.barrier_target = barrier_targets(program)
        self.state = StreamState(self.env, self.done, self.blocked, self.stats, self.start, self.end, self.occ_end)
        self.rendezvous = CollectiveRendezvous(self.env, program, self.coll, costs.cc_src_bytes, costs.cc_dst_bytes)

    def _waits(self, i: int) -> list[tuple[int, int]]:
        return _pairs(self.wsem, self.wval, i)

    def _signals(self, i: int) -> list[tuple[int, int]]:
        return _pairs(self.ssem, self.sval, i)

    # ---- run ----------------------------------------------------------------------------------------
    def run(self) -> EngineRun:
        env = self.env
        dma_keys = []
        for k, key in enumerate(self.keys):
            eng = key[1]
            if eng == int(Engine.dma):
                dma_keys.append(k)
            elif eng == int(Engine.cc):
                env.process(self._cc_proc(k))
            else:
                env.process(self._compute(k))
        access = self.memory.access(self.program, self.costs)
        queues = [DmaQueue(k, self.keys[k][0], self.keys[k][2], self.streams[self.keys[k]], self.op, self.costs,
                           self.wsem, self.wval, self.ssem, self.sval, access) for k in dma_keys]
        dma = DmaArbiter(env, self.sems, self.memory, self.chip.dma, self.state, queues)
        dma.start()
        env.run()
        self._check_deadlock()
        total = int(self.end.max()) if self.n else 0
        for st in self.stats:
            idx = self.streams[st.key]
            st.end_ps = int(self.end[idx].max()) if len(idx) else 0
        return EngineRun(self.start, self.end, self.occ_end, self.stats, total, list(self.memory.bytes_read),
                         list(self.memory.bytes_written), self.rendezvous.link_bytes, self.memory.log,
                         {self.keys[k]: e for k, e in dma.engine_of().items()})

    # ---- compute streams -----------------------------------------------------------------------------------
    def _compute(self, k: int) -> Generator[simpy.Event, Any, None]:
        env, sems = self.env, self.sems
        idx = self.streams[self.keys[k]].tolist()
        busy_a, lat_a = self.costs.busy_ps, self.costs.lat_ps
        sig_time = self.state.signal_time
        stall = busy_sum = 0
        for i in idx:
            free = env.now
            waits = self._waits(i)
            bt = int(self.barrier_target[i])
            if bt >= 0:
                waits.append((-2, bt))  # marker: barrier arrival then wait
            for s, v in waits:
                if s == -2:
                    s = int(self.program.instr["i0"][i])
                    sems.signal(s, sig_time(k, env.now), 1)
                while not sems.holds(s, v):
                    self.blocked[k] = (i, s, v)
                    yield sems.wait(s, v)
                    self.blocked[k] = None
            start = env.now
            stall += start - free
            b, lt = int(busy_a[i]), int(lat_a[i])
            self.start[i] = start
            self.end[i] = start + lt
            self.occ_end[i] = start + b
            sig = self._signals(i)
            if sig:
                at = sig_time(k, start + lt)
                for s, inc in sig:
                    sems.signal(s, at, inc)
            busy_sum += b
            yield env.timeout(b)
        self.stats[k].busy_ps = busy_sum
        self.stats[k].stall_ps = stall
        self.done[k] = True

    # ---- collective queues -------------------------------------------------------------------------------
    def _cc_proc(self, k: int) -> Generator[simpy.Event, Any, None]:
        env, sems = self.env, self.sems
        st = self.stats[k]
        sig_time = self.state.signal_time
        for i in self.streams[self.keys[k]].tolist():
            free = env.now
            for s, v in self._waits(i):
                while not sems.holds(s, v):
                    self.blocked[k] = (i, s, v)
                    yield sems.wait(s, v)
                    self.blocked[k] = None
            if self.rendezvous.plan.rdv_of[i] < 0:  # a nop (anything but a collective takes no time here)
                self.start[i] = self.end[i] = self.occ_end[i] = env.now
                st.stall_ps += env.now - free
                for s, inc in self._signals(i):
                    sems.signal(s, sig_time(k, env.now), inc)
                continue
            rdv, complete = self.rendezvous.arrive(i)
            if not complete:
                self.blocked[k] = (i, "collective", rdv)
                yield rdv.event
                self.blocked[k] = None
            start = env.now
            end = rdv.end
            st.stall_ps += start - free
            st.busy_ps += end - start
            self.start[i] = start
            self.end[i] = self.occ_end[i] = end
            for s, inc in self._signals(i):
                sems.signal(s, sig_time(k, end), inc)
            yield env.timeout(end - start)
        self.done[k] = True

    # ---- deadlock ----------------------------------------------------------------------------------
    def _check_deadlock(self) -> None:
        stuck: list[tuple[int, tuple | None]] = []
        for k in range(len(self.keys)):
            if self.done[k]:
                continue
            b = self.blocked[k]
            if b is not None and b[1] == "collective":
                b = ("collective", b[0], b[2].members, sorted(b[2].arrived))
            elif b is not None:
                b = ("sem", *b)
            stuck.append((k, b))
        if stuck:
            raise deadlock_error(self.program, self.keys, stuck, self.sems.total)


MODES = ("numba", "plain")


def run_engine(program: Program, chip: ChipConfig, costs: Costs, *, mode: str = "numba", memory: MemoryModel,
               collectives: CollectiveTiming | None = None, log_memory: bool = False) -> EngineRun:
    """Simulate ``program`` on ``chip`` with precomputed ``costs`` on the engine ``mode`` (module docstring:
    ``'numba'``, the default, or ``'plain'``, the reference; both give the same result)."""
    if mode not in MODES:
        raise InfsimError(f"unknown engine mode '{mode}' (expected one of {', '.join(MODES)})")
    if mode == "numba":
        from .numba_engine import run_numba, supports

        if supports(memory):
            return run_numba(program, chip, costs, memory=memory, collectives=collectives, log_memory=log_memory)
    return Simulator(program, chip, costs, memory=memory, collectives=collectives, log_memory=log_memory).run()
