"""The simpy engine: every instruction stream of a program as a process, coupled by semaphores.

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

The parts share the run's per-stream and per-instruction state (:class:`~infsim.engine.streams.StreamState`),
so each can be driven on its own; this module creates them and runs the compute and collective streams.
Left out: instruction fetch and decode, the sequencers' own queues (an engine issues its next instruction
as soon as the previous one's issue interval ends and its waits hold), and everything the parts leave out.

Busy / stall / idle per stream: busy = sum of issue intervals (DMA: engine occupancy, collective:
duration); stall = time an instruction waited past its stream's free time (semaphores, collective
partners; DMA also the shared engine); idle = the rest of the run.

The fast path (``mode='fast'``) and why it is exact
---------------------------------------------------
``mode='per_instruction'`` is the plain model: a compute stream yields a simpy timeout per instruction
and signals are applied by timed events (:class:`~infsim.engine.semaphores.PlainSems`). The fast path
gives the same start and finish time for every instruction with far fewer events:

1. A compute stream keeps a local clock ``t >= env.now`` and runs ahead of simulated time. Instructions
   with no waits, no signals and no barrier are skipped in bulk with prefix sums of ``busy``; their
   start times are reconstructed afterwards (they can only start at their stream's free time).
2. Signals are not events: :class:`~infsim.engine.semaphores.FastSems` keeps, per semaphore, the
   applied total plus the sorted list of known future signals (time, increment). The *known crossing*
   ``c`` of a wait is the time the known signals reach its value. Every signal not yet known has a time
   ``>=`` the local clock of the stream that will produce it (``>= env.now`` for a stream that is
   blocked), because a stream's completions never precede its clock. Counters only grow, so unknown
   signals can only move the true crossing *earlier* than ``c``. Hence:

   * ``c <= t``: the true crossing is ``<= t``, the instruction starts at ``t`` (exact);
   * ``c > t`` and every other stream that can signal this semaphore (precomputed from the program)
     has a lower bound ``max(t_local, env.now) + lat_min >= c`` on its next signal (``lat_min``: the
     smallest start-to-signal latency among its remaining signalling instructions, a suffix minimum;
     0 for barrier arrivals and collectives): no unknown signal can precede ``c``, so the crossing is
     exactly ``c`` (exact; the test is :meth:`~infsim.engine.streams.StreamState.final`);
   * otherwise the stream blocks on a simpy event fired at the known crossing (rescheduled earlier
     when a new signal lowers it). When it fires at ``env.now = c``, every process has advanced to
     ``c``, so all signals before ``c`` are known and the crossing is final.

3. Shared resources (DMA engines, HBM, collectives) are not run ahead: the DMA arbiter acts at
   ``env.now`` after all other events of the instant, and sees exactly the semaphore state the plain
   model sees at that instant (all signals with time ``<= now`` are known by then). A blocked DMA
   queue whose crossing is known and final just schedules the arbiter at that instant.
4. A fast-path stream is a generator driven by the semaphore waiter itself (resumed inside the event
   that fires at the crossing), not a simpy Process: one event per block instead of two. Waiters
   satisfied by a signal of the current instant are resumed as separate events (no nesting).

Both modes share the DMA arbiter, memory model and collective rendezvous, so their only difference is how
compute-stream times are found — and the rules above give the same ``max(free, crossing)`` per
instruction. ``tests/test_engine_fastpath.py`` checks equality of every start and finish time on
random multi-stream programs.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
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
from .events import Env, call_at
from .memory import MemoryModel
from .rendezvous import CollectiveRendezvous
from .semaphores import NEVER, SAT, FastSems, PlainSems, Semaphores
from .streams import (
    EngineRun,
    StreamState,
    StreamStats,
    barrier_targets,
    deadlock_error,
    signal_latency_bounds,
    signalers,
    stream_ids,
)


def _pairs(sem: np.ndarray, val: np.ndarray, i: int) -> list[tuple[int, int]]:
    """The ``(semaphore, value)`` slots of instruction ``i`` that are used (semaphore >= 0)."""
    return [(int(sem[i, j]), int(val[i, j])) for j in range(sem.shape[1]) if sem[i, j] >= 0]


class Simulator:
    """Runs one program on one chip (see the module docstring). Use :func:`run_engine`."""

    def __init__(self, program: Program, chip: ChipConfig, costs: Costs, *, mode: str = "fast",
                 memory: MemoryModel, collectives: CollectiveTiming | None = None, log_memory: bool = False):
        if mode not in ("fast", "per_instruction"):
            raise InfsimError(f"unknown engine mode '{mode}' (expected fast or per_instruction)")
        self.program = program
        self.chip = chip
        self.costs = costs
        self.mode = mode
        self.env = Env()
        nsem = max(len(program.semaphores), 1)
        self.sems: Semaphores = FastSems(self.env, nsem) if mode == "fast" else PlainSems(self.env, nsem)
        self.memory = memory
        memory.reset(max(program.num_chips, 1), log=log_memory)
        self.coll = collectives if collectives is not None else make_collectives(chip)
        ins = program.instr
        self.n = len(ins)
        self.op = ins["op"].astype(np.int64)
        self.streams = program.streams()
        self.keys = list(self.streams)
        ns = len(self.keys)
        self.t_local = [0] * ns
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
        ptr, lst = signalers(program, stream_ids(program), nsem)
        self.signalers = [lst[ptr[s]:ptr[s + 1]].tolist() for s in range(nsem)]
        self._sig_suffix = signal_latency_bounds(program, chip, costs, self.barrier_target)
        # lower bound on (next signal time - next start) of each stream, at its current position
        self.lat_min = [int(self._sig_suffix[self.streams[key][0]]) if len(self.streams[key]) else 0
                        for key in self.keys]
        self.state = StreamState(self.env, self.signalers, self.t_local, self.lat_min, self.done, self.blocked,
                                 self.stats, self.start, self.end, self.occ_end)
        self._final = self.state.final
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
            elif self.mode == "fast":
                gen = self._fast_compute(k)
                call_at(env, 0, lambda _e, gen=gen: self._drive(gen))
            else:
                env.process(self._plain_compute(k))
        access = self.memory.access(self.program, self.costs)
        queues = [DmaQueue(k, self.keys[k][0], self.keys[k][2], self.streams[self.keys[k]], self.op, self.costs,
                           self.wsem, self.wval, self.ssem, self.sval, self._sig_suffix, access) for k in dma_keys]
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

    # ---- compute streams: fast path -------------------------------------------------------------------
    def _drive(self, gen: Any) -> None:
        """Run a fast-path stream until it blocks; it resumes from the waiter's callback at the crossing.

        A lighter "process" than simpy's: the generator yields ``(sem, value)`` and is resumed directly by
        the semaphore waiter (inside the event that fires at the crossing), saving one event per block.
        """
        try:
            s, v, c = gen.send(None)
        except StopIteration:
            return
        self.sems.register(s, v, c, lambda: self._drive(gen))

    def _fast_compute(self, k: int) -> Iterator[tuple[int, int, int]]:
        env, sems = self.env, self.sems
        assert isinstance(sems, FastSems)  # this driver runs only in mode 'fast'
        idx = self.streams[self.keys[k]]
        busy = self.costs.busy_ps[idx]
        lat = self.costs.lat_ps[idx]
        inter = ((self.wsem[idx] >= 0).any(axis=1) | (self.ssem[idx] >= 0).any(axis=1)
                 | (self.barrier_target[idx] >= 0))
        inter[0] = True
        pos = np.flatnonzero(inter)
        cum = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(busy, out=cum[1:])
        gidx = idx[pos]
        pos_l = pos.tolist()
        cum_l = cum[pos].tolist()
        cum_next = cum[pos + 1].tolist()
        lat_l = lat[pos].tolist()
        w0s, w0v = self.wsem[gidx, 0].tolist(), self.wval[gidx, 0].tolist()
        w1s, w1v = self.wsem[gidx, 1].tolist(), self.wval[gidx, 1].tolist()
        s0s, s0v = self.ssem[gidx, 0].tolist(), self.sval[gidx, 0].tolist()
        s1s, s1v = self.ssem[gidx, 1].tolist(), self.sval[gidx, 1].tolist()
        bar_t = self.barrier_target[gidx].tolist()
        bar_s = self.program.instr["i0"][gidx].astype(np.int64).tolist()
        gl = gidx.tolist()
        sigsuf = self._sig_suffix[gidx].tolist()
        starts = np.zeros(len(pos_l), dtype=np.int64)
        crossing, signal, final = sems.crossing, sems.signal, self._final
        sig_time = self.state.signal_time
        applied = sems.applied
        t = 0
        prev_cum = 0  # cum at the position after the last processed interesting instruction
        stall = 0
        for j in range(len(pos_l)):
            t += cum_l[j] - prev_cum
            free = t
            for wi in range(3):
                if wi == 0:
                    s, v = w0s[j], w0v[j]
                elif wi == 1:
                    s, v = w1s[j], w1v[j]
                else:
                    v = bar_t[j]
                    if v < 0:
                        break
                    s = bar_s[j]
                    signal(s, sig_time(k, t), 1)  # barrier arrival, then wait for k * count
                if s < 0 or applied[s] >= v:
                    continue
                c = crossing(s, v)
                if c == SAT or c <= t:
                    continue
                if c != NEVER and final(s, c, k):
                    t = c
                    continue
                while True:
                    self.t_local[k] = t
                    self.lat_min[k] = sigsuf[j]
                    self.blocked[k] = (gl[j], s, v)
                    yield (s, v, c)  # c: the known crossing (> now) or NEVER, just computed
                    self.blocked[k] = None
                    now = env.now
                    if now > t:
                        t = now
                    c = crossing(s, v)
                    if c == SAT or c <= t:
                        break
            stall += t - free
            starts[j] = t
            if s0s[j] >= 0 or s1s[j] >= 0:
                at = sig_time(k, t + lat_l[j])
                if s0s[j] >= 0:
                    signal(s0s[j], at, s0v[j])
                if s1s[j] >= 0:
                    signal(s1s[j], at, s1v[j])
            prev_cum = cum_next[j]
            t += prev_cum - cum_l[j]
        # reconstruct every start of the stream from the recorded ones
        last = np.zeros(len(idx), dtype=np.int64)
        last[pos] = pos
        last = np.maximum.accumulate(last)
        rec = np.zeros(len(idx), dtype=np.int64)
        rec[pos] = starts
        st = rec[last] + cum[:-1] - cum[last]
        self.start[idx] = st
        self.end[idx] = st + lat
        self.occ_end[idx] = st + busy
        self.stats[k].busy_ps = int(busy.sum())
        self.stats[k].stall_ps = stall
        self.done[k] = True
        self.t_local[k] = NEVER

    # ---- compute streams: plain per-instruction model ---------------------------------------------------------
    def _plain_compute(self, k: int) -> Generator[simpy.Event, Any, None]:
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
                while sems.crossing(s, v) != SAT:
                    self.t_local[k] = env.now
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
            self.t_local[k] = start + b
            yield env.timeout(b)
        self.stats[k].busy_ps = busy_sum
        self.stats[k].stall_ps = stall
        self.done[k] = True
        self.t_local[k] = NEVER


    # ---- collective queues -------------------------------------------------------------------------------
    def _cc_proc(self, k: int) -> Generator[simpy.Event, Any, None]:
        env, sems = self.env, self.sems
        st = self.stats[k]
        sig_time = self.state.signal_time
        for i in self.streams[self.keys[k]].tolist():
            free = env.now
            for s, v in self._waits(i):
                while sems.crossing(s, v) != SAT:
                    self.t_local[k] = env.now
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
                self.t_local[k] = env.now
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
            self.t_local[k] = end
            yield env.timeout(end - start)
        self.done[k] = True
        self.t_local[k] = NEVER

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


def run_engine(program: Program, chip: ChipConfig, costs: Costs, *, mode: str = "fast", memory: MemoryModel,
               collectives: CollectiveTiming | None = None, log_memory: bool = False) -> EngineRun:
    """Simulate ``program`` on ``chip`` with precomputed ``costs`` (see the module docstring)."""
    return Simulator(program, chip, costs, mode=mode, memory=memory, collectives=collectives,
                     log_memory=log_memory).run()
