"""The simpy engine: every instruction stream of a program as a process, coupled by semaphores.

Streams and timing rules
------------------------
A stream is ``(core, engine, queue)`` (:meth:`Program.streams`). Time is integer picoseconds.

* **Compute streams** (tensor, vector, scalar, gpsimd, sync) run in order. Instruction ``i`` starts at
  ``start_i = max(free_i, crossing times of its waits)`` where ``free_i = start_{i-1} + busy_{i-1}``
  (``busy`` = issue interval, :mod:`infsim.engine.costs`); it completes at ``start_i + lat_i``, when
  its signals are applied. ``barrier`` adds 1 to its semaphore at its start and then waits for
  ``k * count`` (the k-th barrier of the stream on that semaphore).
* **DMA queues**: queue ``q`` of a core runs on DMA engine ``q % dma.engines_per_core`` of that core.
  An engine moves one chunk at a time; when several queues share an engine it takes their heads
  round-robin, one chunk of at most ``dma.arbitration_bytes`` per turn (the whole transfer when that is
  unset), so a small transfer on one queue waits at most a chunk behind a large one on another. A
  transfer starts when its engine is free and its waits are satisfied; each chunk occupies the engine
  until ``max(chunk start + its engine time, its memory data end)`` where the memory model (shared by
  every DMA engine of the chip, :mod:`infsim.engine.memory`) times the HBM side; the HBM latency does
  not occupy the engine (requests pipeline). The transfer completes at ``max(last chunk's occupancy
  end, every chunk's data end + HBM latency) + dma.fixed_latency_ns``.
  All DMA decisions of one instant are taken in a canonical order (core, engine) after every other
  event of that instant (a low-priority simpy event), so the memory model sees requests in time order
  and ties never depend on event-queue order. A ``nop`` on a DMA queue takes no time; its signals are
  applied as a separate event of the same instant (after that round of decisions).
* **Collective queues** (``cc``): a collective starts when every member of its group has reached it
  (waits satisfied, stream free) and lasts ``CollectiveTiming.duration_ps`` (the link model of
  :func:`infsim.engine.collectives.make_collectives`); ``send``/``recv`` pair up by (sender, receiver,
  tag) in order.
* **Semaphores** are monotonic counters; a wait ``(sem, v)`` is satisfied from the instant the
  running total of completed signals reaches ``v``.

Busy / stall / idle per stream: busy = sum of issue intervals (DMA: engine occupancy, collective:
duration); stall = time an instruction waited past its stream's free time (semaphores, collective
partners; DMA also the shared engine); idle = the rest of the run.

The fast path (``mode='fast'``) and why it is exact
---------------------------------------------------
``mode='per_instruction'`` is the plain model: a compute stream yields a simpy timeout per
instruction and signals are applied by timed events (:class:`PlainSems`). The fast path gives the same
start and finish time for every instruction with far fewer events:

1. A compute stream keeps a local clock ``t >= env.now`` and runs ahead of simulated time. Instructions
   with no waits, no signals and no barrier are skipped in bulk with prefix sums of ``busy``; their
   start times are reconstructed afterwards (they can only start at their stream's free time).
2. Signals are not events: :class:`FastSems` keeps, per semaphore, the applied total plus the sorted
   list of known future signals (time, increment). The *known crossing* ``c`` of a wait is the time the
   known signals reach its value. Every signal not yet known has a time ``>=`` the local clock of the
   stream that will produce it (``>= env.now`` for a stream that is blocked), because a stream's
   completions never precede its clock. Counters only grow, so unknown signals can only move the true
   crossing *earlier* than ``c``. Hence:

   * ``c <= t``: the true crossing is ``<= t``, the instruction starts at ``t`` (exact);
   * ``c > t`` and every other stream that can signal this semaphore (precomputed from the program)
     has a lower bound ``max(t_local, env.now) + lat_min >= c`` on its next signal (``lat_min``: the
     smallest start-to-signal latency among its remaining signalling instructions, a suffix minimum;
     0 for barrier arrivals and collectives): no unknown signal can precede ``c``, so the crossing is
     exactly ``c`` (exact);
   * otherwise the stream blocks on a simpy event fired at the known crossing (rescheduled earlier
     when a new signal lowers it). When it fires at ``env.now = c``, every process has advanced to
     ``c``, so all signals before ``c`` are known and the crossing is final.

3. Shared resources (DMA engines, HBM, collectives) are not run ahead: the DMA controller acts at
   ``env.now`` after all other events of the instant, and sees exactly the semaphore state the plain
   model sees at that instant (all signals with time ``<= now`` are known by then). A blocked DMA
   queue whose crossing is known and final just schedules the controller at that instant.
4. A fast-path stream is a generator driven by the semaphore waiter itself (resumed inside the event
   that fires at the crossing), not a simpy Process: one event per block instead of two. Waiters
   satisfied by a signal of the current instant are resumed as separate events (no nesting).

Both modes share the DMA controller, memory model and collectives, so their only difference is how
compute-stream times are found — and the rules above give the same ``max(free, crossing)`` per
instruction. ``tests/test_engine_fastpath.py`` checks equality of every start and finish time on
random multi-stream programs.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from infsim.config.schema import ChipConfig
from infsim.engine.collectives import CollectiveTiming, make_collectives
from infsim.engine.costs import Costs
from infsim.engine.memory import MemoryModel
from infsim.errors import InfsimError
from infsim.isa.errors import DeadlockError
from infsim.isa.opcodes import Engine, Op
from infsim.isa.program import Program

SAT = -1
NEVER = 1 << 62
_LOW_PRIORITY = 2  # after simpy's URGENT (0) and NORMAL (1) events of the same instant


# ---- semaphores -------------------------------------------------------------------------------------

class _Waiter:
    __slots__ = ("sem", "value", "cb", "sched", "fired")

    def __init__(self, sem: int, value: int, cb: Any):
        self.sem = sem
        self.value = value
        self.cb = cb
        self.sched = NEVER
        self.fired = False


def _call_at(env: simpy.Environment, delay: int, fn: Any, priority: int = 1) -> None:
    """Run ``fn(event)`` ``delay`` ps from now (one bare simpy event, cheaper than a Timeout)."""
    ev = simpy.Event(env)
    ev._ok = True
    ev._value = None
    ev.callbacks.append(fn)
    env.schedule(ev, priority, delay)


class FastSems:
    """Semaphores holding known future signals (see "The fast path" in the module docstring)."""

    def __init__(self, env: simpy.Environment, nsem: int):
        self.env = env
        self.applied = [0] * nsem
        self.total = [0] * nsem
        self.pt: list[list[int]] = [[] for _ in range(nsem)]
        self.pv: list[list[int]] = [[] for _ in range(nsem)]
        self.head = [0] * nsem
        self.waiters: list[list[_Waiter]] = [[] for _ in range(nsem)]

    def signal(self, s: int, time: int, inc: int) -> None:
        self.total[s] += inc
        if time <= self.env.now:
            self.applied[s] += inc
        else:
            pt = self.pt[s]
            if not pt or time >= pt[-1]:
                pt.append(time)
                self.pv[s].append(inc)
            else:
                k = bisect.bisect_right(pt, time, self.head[s])
                pt.insert(k, time)
                self.pv[s].insert(k, inc)
        if self.waiters[s]:
            self._recheck(s, time)

    def crossing(self, s: int, v: int) -> int:
        """``SAT`` if ``sem >= v`` now, else the known crossing time (``NEVER`` if not reached)."""
        ap = self.applied[s]
        if ap >= v:
            return SAT
        pt = self.pt[s]
        h = self.head[s]
        n = len(pt)
        if h < n:
            pv = self.pv[s]
            now = self.env.now
            while h < n and pt[h] <= now:
                ap += pv[h]
                h += 1
            if h != self.head[s]:
                self.applied[s] = ap
                if h > 256 and 2 * h > n:
                    del pt[:h]
                    del pv[:h]
                    h = 0
                    n = len(pt)
                self.head[s] = h
            if ap >= v:
                return SAT
            need = v - ap
            for j in range(h, n):
                need -= pv[j]
                if need <= 0:
                    return pt[j]
        return NEVER

    def wait(self, s: int, v: int) -> simpy.Event:
        """An event that fires at the instant ``sem >= v`` holds."""
        ev = self.env.event()
        self.wait_cb(s, v, ev.succeed)
        return ev

    def wait_cb(self, s: int, v: int, cb: Any) -> None:
        """Call ``cb()`` at the instant ``sem >= v`` holds (at once if it holds now)."""
        c = self.crossing(s, v)
        if c == SAT:
            cb()
            return
        self.register(s, v, c, cb)

    def register(self, s: int, v: int, c: int, cb: Any) -> None:
        """Register a waiter whose known crossing ``c`` (> now, or ``NEVER``) was just computed."""
        w = _Waiter(s, v, cb)
        self.waiters[s].append(w)
        if c != NEVER:
            self._schedule(w, c)

    def _schedule(self, w: _Waiter, c: int) -> None:
        w.sched = c
        _call_at(self.env, c - self.env.now, lambda _e, w=w: self._fire(w))

    def _fire(self, w: _Waiter) -> None:
        if not w.fired:
            w.fired = True
            self.waiters[w.sem].remove(w)
            w.cb()

    def _recheck(self, s: int, time: int) -> None:
        total = self.total[s]
        for w in list(self.waiters[s]):
            if time >= w.sched or total < w.value:
                continue  # cannot move the known crossing earlier / not reachable by the known signals
            c = self.crossing(s, w.value)
            if c == SAT:  # a signal at this very instant: resume the waiter as its own event (no nesting)
                w.sched = self.env.now
                _call_at(self.env, 0, lambda _e, w=w: self._fire(w))
            elif c < w.sched:
                self._schedule(w, c)


class PlainSems:
    """Textbook semaphores: every signal is a timed event that adds to the counter and wakes waiters."""

    def __init__(self, env: simpy.Environment, nsem: int):
        self.env = env
        self.value = [0] * nsem
        self.total = [0] * nsem
        self.waiters: list[list[tuple[int, Any]]] = [[] for _ in range(nsem)]

    def signal(self, s: int, time: int, inc: int) -> None:
        self.total[s] += inc
        tmo = self.env.timeout(time - self.env.now)
        tmo.callbacks.append(lambda _e: self._apply(s, inc))

    def _apply(self, s: int, inc: int) -> None:
        self.value[s] += inc
        v = self.value[s]
        keep = []
        fire = []
        for need, cb in self.waiters[s]:
            if need <= v:
                fire.append(cb)
            else:
                keep.append((need, cb))
        self.waiters[s] = keep
        for cb in fire:
            cb()

    def crossing(self, s: int, v: int) -> int:
        return SAT if self.value[s] >= v else NEVER

    def wait(self, s: int, v: int) -> simpy.Event:
        ev = self.env.event()
        self.wait_cb(s, v, ev.succeed)
        return ev

    def wait_cb(self, s: int, v: int, cb: Any) -> None:
        if self.value[s] >= v:
            cb()
        else:
            self.waiters[s].append((v, cb))

    def register(self, s: int, v: int, c: int, cb: Any) -> None:
        """Register a waiter for ``sem >= v`` (not satisfied now; ``c`` is ignored)."""
        self.waiters[s].append((v, cb))


# ---- results of a run ---------------------------------------------------------------------------------

@dataclass
class StreamStats:
    key: tuple[int, int, int]
    instructions: int
    busy_ps: int = 0
    stall_ps: int = 0
    end_ps: int = 0


@dataclass
class EngineRun:
    """Raw timing of one run: per-instruction start/end and per-stream totals."""

    start_ps: np.ndarray
    end_ps: np.ndarray
    occ_end_ps: np.ndarray
    streams: list[StreamStats]
    total_ps: int
    hbm_bytes_read: list[int]
    hbm_bytes_written: list[int]
    link_bytes: int
    memory_log: list[tuple[int, int, int, int, bool]] | None
    dma_engine_of: dict[tuple[int, int, int], int] = field(default_factory=dict)


# ---- the simulator ----------------------------------------------------------------------------------------

class _Queue:
    """One DMA queue: its instructions as per-field Python lists (fast scalar access) and its state."""

    def __init__(self, sid: int, sim: Simulator, idx: np.ndarray):
        c = sim.costs
        self.sid = sid
        self.n = len(idx)
        self.i = idx.tolist()
        self.nop = (sim.op[idx] != int(Op.dma_copy)).tolist()
        self.d = c.dma_engine_ps[idx].tolist()
        self.rb, self.rc, self.ra = c.hbm_read[idx].tolist(), c.hbm_read_chip[idx].tolist(), \
            c.hbm_read_addr[idx].tolist()
        self.wb, self.wc, self.wa = c.hbm_write[idx].tolist(), c.hbm_write_chip[idx].tolist(), \
            c.hbm_write_addr[idx].tolist()
        self.w0s, self.w0v = sim.wsem[idx, 0].tolist(), sim.wval[idx, 0].tolist()
        self.w1s, self.w1v = sim.wsem[idx, 1].tolist(), sim.wval[idx, 1].tolist()
        self.s0s, self.s0v = sim.ssem[idx, 0].tolist(), sim.sval[idx, 0].tolist()
        self.s1s, self.s1v = sim.ssem[idx, 1].tolist(), sim.sval[idx, 1].tolist()
        self.sigsuf = sim._sig_suffix[idx].tolist()
        self.pos = 0
        self.waiting = False
        self.free = 0
        self.engine = 0
        self.deferred = 0  # zero-time completions whose signals are still to be applied
        # the head transfer in progress (chunked arbitration): engine time and bytes left, latest data end
        self.rem = -1
        self.rem_rb = self.rem_wb = 0
        self.data_end = 0


@dataclass
class _DmaEngine:
    core: int
    engine: int
    queues: list[int]
    free: int = 0
    rr: int = 0
    index: int = 0


class _Rendezvous:
    __slots__ = ("op", "members", "arrived", "event", "end", "src_bytes", "dst_bytes", "key")

    def __init__(self, env: simpy.Environment, key: tuple, op: Op, members: tuple[int, ...]):
        self.key = key
        self.op = op
        self.members = members
        self.arrived: dict[int, int] = {}
        self.event = env.event()
        self.end = 0
        self.src_bytes = 0
        self.dst_bytes = 0


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
        self.env = simpy.Environment()
        nsem = max(len(program.semaphores), 1)
        self.sems: FastSems | PlainSems = FastSems(self.env, nsem) if mode == "fast" else PlainSems(self.env, nsem)
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
        self.link_bytes = 0
        # waits / signals / barriers
        self.wsem = ins["wsem"].astype(np.int64)
        self.wval = ins["wval"].astype(np.int64)
        self.ssem = ins["ssem"].astype(np.int64)
        self.sval = ins["sval"].astype(np.int64)
        self.barrier_target = self._barrier_targets(ins)
        self.signalers = self._signalers(ins, nsem)
        self._sig_suffix = self._signal_latency_bounds()
        # lower bound on (next signal time - next start) of each stream, at its current position
        self.lat_min = [int(self._sig_suffix[self.streams[key][0]]) if len(self.streams[key]) else 0
                        for key in self.keys]
        self._rdv: dict[tuple, _Rendezvous] = {}

    # ---- static analysis --------------------------------------------------------------------------
    def _barrier_targets(self, ins: np.ndarray) -> np.ndarray:
        """``k * count`` for the k-th barrier of a stream on a semaphore (-1 for non-barriers)."""
        out = np.full(self.n, -1, dtype=np.int64)
        bar = np.flatnonzero(self.op == int(Op.barrier))
        if len(bar) == 0:
            return out
        seen: dict[tuple[int, int, int, int], int] = {}
        cores, engs, qs = ins["core"], ins["engine"], ins["queue"]
        for i in bar.tolist():
            sem = int(ins["i0"][i])
            key = (int(cores[i]), int(engs[i]), int(qs[i]), sem)
            seen[key] = seen.get(key, 0) + 1
            out[i] = seen[key] * int(ins["i1"][i])
        return out

    def _signalers(self, ins: np.ndarray, nsem: int) -> list[list[int]]:
        sid = np.empty(self.n, dtype=np.int64)
        for k, key in enumerate(self.keys):
            sid[self.streams[key]] = k
        pairs = []
        for j in range(self.ssem.shape[1]):
            m = self.ssem[:, j] >= 0
            pairs.append(self.ssem[m, j] * (len(self.keys) + 1) + sid[m])
        bar = self.op == int(Op.barrier)
        pairs.append(ins["i0"][bar].astype(np.int64) * (len(self.keys) + 1) + sid[bar])
        allp = np.unique(np.concatenate(pairs)) if pairs else np.zeros(0, dtype=np.int64)
        out: list[list[int]] = [[] for _ in range(nsem)]
        for p in allp.tolist():
            out[p // (len(self.keys) + 1)].append(p % (len(self.keys) + 1))
        return out

    def _signal_latency_bounds(self) -> np.ndarray:
        """Per instruction, a lower bound on (time of the next signal of its stream - its start), taken over
        it and the rest of its stream: its latency if it signals (DMA: fixed latency + engine time; barrier
        arrival and collectives: 0), suffix-minimum along the stream."""
        c = self.costs
        inf = NEVER
        sig = (self.ssem >= 0).any(axis=1)
        own = np.where(sig, c.lat_ps, inf)
        dma = self.op == int(Op.dma_copy)
        fixed = int(round(self.chip.dma.fixed_latency_ns * 1000))
        own = np.where(dma & sig, c.dma_engine_ps + fixed, own)
        cc = np.isin(self.op, [int(Op.all_reduce), int(Op.all_gather), int(Op.reduce_scatter), int(Op.send),
                               int(Op.recv)])
        own = np.where((cc & sig) | (self.barrier_target >= 0), 0, own)
        own = np.where((self.op == int(Op.nop)) & sig, 0, own)
        out = np.empty(self.n, dtype=np.int64)
        for idx in self.streams.values():
            out[idx] = np.minimum.accumulate(own[idx][::-1])[::-1]
        return out

    def _final(self, s: int, c: int, me: int) -> bool:
        """True when no signal on ``s`` still unknown can come before ``c`` (module docstring)."""
        now = self.env.now
        t_local, done, lat_min = self.t_local, self.done, self.lat_min
        for m in self.signalers[s]:
            if m == me or done[m]:
                continue
            lb = t_local[m]
            if lb < now:
                lb = now
            if lb + lat_min[m] < c:
                return False
        return True

    def _waits(self, i: int) -> list[tuple[int, int]]:
        w = []
        for j in range(self.wsem.shape[1]):
            s = int(self.wsem[i, j])
            if s >= 0:
                w.append((s, int(self.wval[i, j])))
        return w

    def _signals(self, i: int) -> list[tuple[int, int]]:
        out = []
        for j in range(self.ssem.shape[1]):
            s = int(self.ssem[i, j])
            if s >= 0:
                out.append((s, int(self.sval[i, j])))
        return out

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
                _call_at(env, 0, lambda _e, gen=gen: self._drive(gen))
            else:
                env.process(self._plain_compute(k))
        self._setup_dma(dma_keys)
        env.run()
        self._check_deadlock()
        total = int(self.end.max()) if self.n else 0
        for st in self.stats:
            idx = self.streams[st.key]
            st.end_ps = int(self.end[idx].max()) if len(idx) else 0
        return EngineRun(self.start, self.end, self.occ_end, self.stats, total, list(self.memory.bytes_read),
                         list(self.memory.bytes_written), self.link_bytes, self.memory.log,
                         {self.keys[k]: e.engine for e in self._engines for k in e.queues})

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

    def _fast_compute(self, k: int):  # type: ignore[no-untyped-def]
        env, sems = self.env, self.sems
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
                    signal(s, t, 1)  # barrier arrival, then wait for k * count
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
            comp = t + lat_l[j]
            if s0s[j] >= 0:
                signal(s0s[j], comp, s0v[j])
            if s1s[j] >= 0:
                signal(s1s[j], comp, s1v[j])
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
    def _plain_compute(self, k: int):  # type: ignore[no-untyped-def]
        env, sems = self.env, self.sems
        idx = self.streams[self.keys[k]].tolist()
        busy_a, lat_a = self.costs.busy_ps, self.costs.lat_ps
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
                    sems.signal(s, env.now, 1)
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
            for s, inc in self._signals(i):
                sems.signal(s, start + lt, inc)
            busy_sum += b
            self.t_local[k] = start + b
            yield env.timeout(b)
        self.stats[k].busy_ps = busy_sum
        self.stats[k].stall_ps = stall
        self.done[k] = True
        self.t_local[k] = NEVER

    # ---- DMA controller --------------------------------------------------------------------------------
    def _setup_dma(self, dma_keys: list[int]) -> None:
        per_core = self.chip.dma.engines_per_core
        self._queues: dict[int, _Queue] = {}
        engines: dict[tuple[int, int], _DmaEngine] = {}
        for k in dma_keys:
            core, _e, q = self.keys[k]
            self._queues[k] = _Queue(k, self, self.streams[self.keys[k]])
            eng = engines.setdefault((core, q % per_core), _DmaEngine(core, q % per_core, []))
            eng.queues.append(k)
        self._engines = [engines[key] for key in sorted(engines)]
        for n, e in enumerate(self._engines):
            e.index = n
            for k in e.queues:
                self._queues[k].engine = n
        self._fixed_ps = int(round(self.chip.dma.fixed_latency_ns * 1000))
        self._chunk_bytes = self.chip.dma.arbitration_bytes or 0
        self._flush_at: dict[int, list[int]] = {}
        for e in self._engines:
            self._schedule_flush(0, e.index)

    def _schedule_flush(self, t: int, e: int) -> None:
        lst = self._flush_at.get(t)
        if lst is None:
            self._flush_at[t] = [e]
            _call_at(self.env, t - self.env.now, self._flush, _LOW_PRIORITY)
        else:
            lst.append(e)

    def _flush(self, _ev: simpy.Event) -> None:
        """DMA decisions of this instant, engines in canonical order (runs after every other event of it)."""
        now = self.env.now
        todo = self._flush_at.pop(now)
        if len(todo) > 1:
            todo = sorted(set(todo))
        for ei in todo:
            e = self._engines[ei]
            queues = e.queues
            nq = len(queues)
            while e.free <= now:
                issued = False
                for r in range(nq):
                    q = self._queues[queues[(e.rr + r) % nq]]
                    if q.waiting or q.pos >= q.n or not self._head_ready(e, q):
                        continue
                    self._issue(e, q, now)
                    e.rr = (e.rr + r + 1) % nq
                    issued = True
                    break
                if not issued:
                    break
            if e.free > now:
                # plan the next look: at e.free if some head is ready now, else when a head becomes ready
                need = False
                for k in queues:
                    q = self._queues[k]
                    if not q.waiting and q.pos < q.n and self._head_ready(e, q):
                        need = True
                if need:
                    self._schedule_flush(e.free, ei)

    def _head_ready(self, e: _DmaEngine, q: _Queue) -> bool:
        """True if the head of ``q`` has all its waits satisfied now; otherwise arrange a look at the engine
        when they will be (a flush at the known final crossing, or a waiter) and return False."""
        p = q.pos
        crossing = self.sems.crossing
        blocked = None
        c = SAT
        s = q.w0s[p]
        if s >= 0:
            c = crossing(s, q.w0v[p])
            if c != SAT:
                blocked = (s, q.w0v[p])
        s = q.w1s[p]
        if blocked is None and s >= 0:
            c = crossing(s, q.w1v[p])
            if c != SAT:
                blocked = (s, q.w1v[p])
        if blocked is None:
            return True
        self.blocked[q.sid] = (q.i[p], blocked[0], blocked[1])
        # the queue itself is a signaller to consider while a zero-time completion's signals are pending
        if c != NEVER and self._final(blocked[0], c, -1 if q.deferred else q.sid):
            # the crossing is known and final: look again exactly then (no waiter needed)
            self._schedule_flush(max(c, e.free), e.index)
            return False
        q.waiting = True
        self.sems.register(blocked[0], blocked[1], c, lambda q=q: self._on_ready(q))
        return False

    def _on_ready(self, q: _Queue) -> None:
        q.waiting = False
        self.blocked[q.sid] = None
        self._schedule_flush(max(self.env.now, self._engines[q.engine].free), q.engine)

    def _issue(self, e: _DmaEngine, q: _Queue, now: int) -> None:
        p = q.pos
        i = q.i[p]
        st = self.stats[q.sid]
        if q.rem < 0:  # the transfer's first chunk
            st.stall_ps += now - q.free
            self.start[i] = now
        if q.nop[p]:
            data_end = comp = now
        else:
            d = q.d[p]
            rb, wb = q.rb[p], q.wb[p]
            if q.rem < 0:
                q.rem, q.rem_rb, q.rem_wb, q.data_end = d, rb, wb, now
            nbytes = max(rb, wb, 1)
            cb = self._chunk_bytes
            if cb and nbytes > cb and q.rem * nbytes > cb * d:
                # one chunk of cb bytes; the last chunk takes what is left (no rounding drift)
                cd = d * cb // nbytes
                crb, cwb = min(q.rem_rb, rb * cb // nbytes), min(q.rem_wb, wb * cb // nbytes)
            else:
                cd, crb, cwb = q.rem, q.rem_rb, q.rem_wb
            q.rem -= cd
            q.rem_rb -= crb
            q.rem_wb -= cwb
            occ = now + cd
            lat = self.memory.latency_ps
            if crb:
                end = self.memory.transfer(q.rc[p], now, crb, False, q.ra[p], rb / max(d, 1) * 1000.0)
                occ = max(occ, end - lat)
                q.data_end = max(q.data_end, end)
            if cwb:
                end = self.memory.transfer(q.wc[p], now, cwb, True, q.wa[p], wb / max(d, 1) * 1000.0)
                occ = max(occ, end - lat)
                q.data_end = max(q.data_end, end)
            data_end = occ
            e.free = occ
            q.free = occ
            st.busy_ps += occ - now
            self.t_local[q.sid] = occ
            if q.rem > 0:  # more chunks: the engine takes the next queue's turn first
                self.lat_min[q.sid] = 0  # a safe lower bound while the transfer is in progress
                return
            q.rem = -1
            comp = max(occ, q.data_end) + self._fixed_ps
        e.free = data_end
        q.free = data_end
        q.pos = p + 1
        self.end[i] = comp
        self.occ_end[i] = data_end
        self.t_local[q.sid] = data_end
        if p + 1 < q.n:
            self.lat_min[q.sid] = q.sigsuf[p + 1]
        if comp == now and (q.s0s[p] >= 0 or q.s1s[p] >= 0):
            # a zero-time completion (nop): apply its signals as a separate event of this instant, after
            # this round of DMA decisions, whatever the semaphore implementation. Until then the queue
            # may still signal at this instant (lower bound 0 ahead of now, not done).
            sig = [(q.s0s[p], q.s0v[p]), (q.s1s[p], q.s1v[p])]
            q.deferred += 1
            self.lat_min[q.sid] = 0
            _call_at(self.env, 0, lambda _e, q=q, sig=sig: self._deferred_signals(q, sig))
        else:
            if q.s0s[p] >= 0:
                self.sems.signal(q.s0s[p], comp, q.s0v[p])
            if q.s1s[p] >= 0:
                self.sems.signal(q.s1s[p], comp, q.s1v[p])
        if q.pos >= q.n and not q.deferred:
            self.done[q.sid] = True
            self.t_local[q.sid] = NEVER

    def _deferred_signals(self, q: _Queue, sig: list[tuple[int, int]]) -> None:
        now = self.env.now
        q.deferred -= 1
        if not q.deferred:
            if q.pos < q.n:
                self.lat_min[q.sid] = q.sigsuf[q.pos]
            else:
                self.done[q.sid] = True
                self.t_local[q.sid] = NEVER
        for s, v in sig:
            if s >= 0:
                self.sems.signal(s, now, v)

    # ---- collective queues -------------------------------------------------------------------------------
    def _cc_key(self, i: int, core: int, seqs: dict[tuple, int]) -> tuple[tuple, Op, tuple[int, ...]]:
        ins = self.program.instr
        op = Op(int(self.op[i]))
        if op in (Op.send, Op.recv):
            peer = int(ins["i0"][i])
            tag = int(ins["i1"][i])
            pair = (core, peer) if op == Op.send else (peer, core)
            base = ("p2p", pair[0], pair[1], tag, op)
            n = seqs.get(base, 0)
            seqs[base] = n + 1
            return ("p2p", pair[0], pair[1], tag, n), op, pair
        gid = int(ins["i0"][i])
        members = self.program.groups[list(self.program.groups)[gid]]
        if core not in members:
            raise InfsimError(f"instruction {i}: core {core} runs {op.name} on group "
                              f"'{list(self.program.groups)[gid]}' but is not a member {members}")
        base = ("group", gid)
        n = seqs.get(base, 0)
        seqs[base] = n + 1
        return ("group", gid, n), op, members

    def _cc_proc(self, k: int):  # type: ignore[no-untyped-def]
        env, sems = self.env, self.sems
        core = self.keys[k][0]
        seqs: dict[tuple, int] = {}
        st = self.stats[k]
        for i in self.streams[self.keys[k]].tolist():
            free = env.now
            for s, v in self._waits(i):
                while sems.crossing(s, v) != SAT:
                    self.t_local[k] = env.now
                    self.blocked[k] = (i, s, v)
                    yield sems.wait(s, v)
                    self.blocked[k] = None
            if self.op[i] == int(Op.nop):
                self.start[i] = self.end[i] = self.occ_end[i] = env.now
                st.stall_ps += env.now - free
                for s, inc in self._signals(i):
                    sems.signal(s, env.now, inc)
                continue
            key, op, members = self._cc_key(i, core, seqs)
            rdv = self._rdv.get(key)
            if rdv is None:
                rdv = self._rdv[key] = _Rendezvous(env, key, op, members)
            elif op not in (Op.send, Op.recv) and rdv.op != op:
                raise InfsimError(f"instruction {i}: core {core} issues {op.name} where group peers issue "
                                  f"{rdv.op.name} (collective #{key[2]} of the group)")
            rdv.arrived[core] = i
            rdv.src_bytes = max(rdv.src_bytes, int(self.costs.cc_src_bytes[i]))
            rdv.dst_bytes = max(rdv.dst_bytes, int(self.costs.cc_dst_bytes[i]))
            if len(rdv.arrived) == len(members):
                dur, link_b = self.coll.duration_ps(rdv.op, members, rdv.src_bytes, rdv.dst_bytes,
                                                    self.program.cores_per_chip)
                rdv.end = env.now + dur
                self.link_bytes += link_b * (len(members) if op not in (Op.send, Op.recv) else 1)
                del self._rdv[key]
                rdv.event.succeed()
            else:
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
                sems.signal(s, end, inc)
            self.t_local[k] = end
            yield env.timeout(end - start)
        self.done[k] = True
        self.t_local[k] = NEVER

    # ---- deadlock ----------------------------------------------------------------------------------
    def _check_deadlock(self) -> None:
        stuck = [k for k in range(len(self.keys)) if not self.done[k]]
        if not stuck:
            return
        lines = []
        names = self.program.semaphores
        for k in stuck:
            core, eng, q = self.keys[k]
            where = f"core {core} engine {Engine(eng).name} queue {q}"
            b = self.blocked[k]
            if b is None:
                lines.append(f"{where}: did not finish")
                continue
            i = b[0]
            opname = Op(int(self.op[i])).name
            if b[1] == "collective":
                rdv = b[2]
                lines.append(f"{where}: instruction {i} ({opname}) waits for collective partners: "
                             f"arrived cores {sorted(rdv.arrived)} of {list(rdv.members)}")
            else:
                s, v = b[1], b[2]
                cur = self.sems.total[s]
                lines.append(f"{where}: instruction {i} ({opname}) waits on semaphore '{names[s]}' >= {v} "
                             f"(current value {cur})")
        raise DeadlockError("deadlock: " + "; ".join(lines))


def run_engine(program: Program, chip: ChipConfig, costs: Costs, *, mode: str = "fast", memory: MemoryModel,
               collectives: CollectiveTiming | None = None, log_memory: bool = False) -> EngineRun:
    """Simulate ``program`` on ``chip`` with precomputed ``costs`` (see the module docstring)."""
    return Simulator(program, chip, costs, mode=mode, memory=memory, collectives=collectives,
                     log_memory=log_memory).run()
