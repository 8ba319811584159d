"""DMA arbitration: the DMA engines of every core serving their queues, with the memory model timing the HBM
side of each transfer.

Rules (integer picoseconds):

* Queue ``q`` of a core runs on DMA engine ``q % dma.engines_per_core`` of that core. An engine moves one
  chunk at a time; when several queues share an engine it takes their heads round-robin, one chunk of at
  most ``dma.arbitration_bytes`` per turn (the whole transfer when that is unset), so a small transfer on
  one queue waits at most a chunk behind a large one on another.
* A transfer starts when its engine is free and its waits are satisfied; each chunk occupies the engine
  until ``max(chunk start + its engine time, its memory data end)`` where the memory model (shared by every
  DMA engine of the chip, :mod:`infsim.engine.memory`) times the HBM side; the HBM latency does not occupy
  the engine (requests pipeline). The transfer completes at ``max(last chunk's occupancy end, every
  chunk's data end + HBM latency) + dma.fixed_latency_ns``, when its signals are applied.
* All DMA decisions of one instant are taken in a canonical order (core, engine) after every other event of
  that instant (a low-priority simpy event), so the memory model sees requests in time order and ties
  never depend on event-queue order. A ``nop`` on a DMA queue takes no time; its signals are applied as a
  separate event of the same instant (after that round of decisions).

A queue's busy time is its engine occupancy; its stall time is the time a transfer waited past the queue's
free time (semaphores and the shared engine). Engine times per transfer (descriptors, bytes at the engine
bandwidth) come from :mod:`infsim.hw.dma` through :mod:`infsim.engine.costs`. Left out: descriptor queues
of finite depth, DMA to SBUF bank conflicts, and any arbitration between the engines of a core other than
what they share through the memory model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from infsim.config.schema import DmaConfig
from infsim.isa.opcodes import Op

from .costs import Costs
from .events import LOW_PRIORITY, Env, call_at
from .memory import HbmAccess, MemoryModel
from .semaphores import Semaphores
from .streams import StreamState


class DmaQueue:
    """One DMA queue: its instructions as per-field Python lists (fast scalar access) and its state.

    ``idx``: the queue's instructions in program order; ``op``, ``wsem``/``wval``, ``ssem``/``sval``: the
    program's opcode and wait/signal columns; ``access``: the memory model's
    per-instruction access-pattern efficiencies, passed with each transfer.
    """

    def __init__(self, sid: int, core: int, queue: int, idx: np.ndarray, op: np.ndarray, costs: Costs,
                 wsem: np.ndarray, wval: np.ndarray, ssem: np.ndarray, sval: np.ndarray,
                 access: HbmAccess):
        c = costs
        self.sid = sid
        self.core = core
        self.queue = queue
        self.n = len(idx)
        self.i = idx.tolist()
        self.nop = (op[idx] != int(Op.dma_copy)).tolist()
        self.d = c.dma_engine_ps[idx].tolist()
        self.rb, self.rc, self.ra = c.hbm_read[idx].tolist(), c.hbm_read_chip[idx].tolist(), \
            c.hbm_read_addr[idx].tolist()
        self.wb, self.wc, self.wa = c.hbm_write[idx].tolist(), c.hbm_write_chip[idx].tolist(), \
            c.hbm_write_addr[idx].tolist()
        self.re, self.we = access.read_eff[idx].tolist(), access.write_eff[idx].tolist()
        self.w0s, self.w0v = wsem[idx, 0].tolist(), wval[idx, 0].tolist()
        self.w1s, self.w1v = wsem[idx, 1].tolist(), wval[idx, 1].tolist()
        self.s0s, self.s0v = ssem[idx, 0].tolist(), sval[idx, 0].tolist()
        self.s1s, self.s1v = ssem[idx, 1].tolist(), sval[idx, 1].tolist()
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
class DmaEngine:
    """One DMA engine of a core and the queues (stream ids) it serves round-robin."""

    core: int
    engine: int
    queues: list[int]
    free: int = 0
    rr: int = 0
    index: int = 0


class DmaArbiter:
    """The DMA engines of a run serving ``queues`` (see the module docstring).

    Writes each transfer's start/end/occupancy and its queue's busy/stall time into ``state``, applies its
    signals to ``sems`` and asks ``memory`` for the HBM side. :meth:`start` schedules the first decisions;
    it must be called once, after the other processes of the run are created.
    """

    def __init__(self, env: Env, sems: Semaphores, memory: MemoryModel, dma: DmaConfig,
                 state: StreamState, queues: list[DmaQueue]):
        self.env = env
        self.sems = sems
        self.memory = memory
        self.start_ps, self.end, self.occ_end = state.start, state.end, state.occ_end
        self.stats = state.stats
        self.done, self.blocked = state.done, state.blocked
        self._signal_time: Callable[[int, int], int] = state.signal_time
        self._queues: dict[int, DmaQueue] = {}
        engines: dict[tuple[int, int], DmaEngine] = {}
        per_core = dma.engines_per_core
        for q in queues:
            self._queues[q.sid] = q
            eng = engines.setdefault((q.core, q.queue % per_core), DmaEngine(q.core, q.queue % per_core, []))
            eng.queues.append(q.sid)
        self._engines = [engines[key] for key in sorted(engines)]
        for n, e in enumerate(self._engines):
            e.index = n
            for k in e.queues:
                self._queues[k].engine = n
        self._fixed_ps = int(round(dma.fixed_latency_ns * 1000))
        self._chunk_bytes = dma.arbitration_bytes or 0
        self._flush_at: dict[int, list[int]] = {}

    def start(self) -> None:
        """Schedule the first round of decisions of every engine (at time 0)."""
        for e in self._engines:
            self._schedule_flush(0, e.index)

    def engine_of(self) -> dict[int, int]:
        """Stream id of each queue -> the DMA engine of its core that serves it."""
        return {k: e.engine for e in self._engines for k in e.queues}

    def _schedule_flush(self, t: int, e: int) -> None:
        lst = self._flush_at.get(t)
        if lst is None:
            self._flush_at[t] = [e]
            call_at(self.env, t - self.env.now, self._flush, LOW_PRIORITY)
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

    def _head_ready(self, e: DmaEngine, q: DmaQueue) -> bool:
        """True if the head of ``q`` has all its waits satisfied now; otherwise the queue waits for the first
        unsatisfied one (and asks for a round when it holds) and this returns False."""
        p = q.pos
        holds = self.sems.holds
        for s, v in ((q.w0s[p], q.w0v[p]), (q.w1s[p], q.w1v[p])):
            if s >= 0 and not holds(s, v):
                self.blocked[q.sid] = (q.i[p], s, v)
                q.waiting = True
                self.sems.wait_cb(s, v, lambda q=q: self._on_ready(q))
                return False
        return True

    def _on_ready(self, q: DmaQueue) -> None:
        q.waiting = False
        self.blocked[q.sid] = None
        self._schedule_flush(max(self.env.now, self._engines[q.engine].free), q.engine)

    def _issue(self, e: DmaEngine, q: DmaQueue, now: int) -> None:
        p = q.pos
        i = q.i[p]
        st = self.stats[q.sid]
        if q.rem < 0:  # the transfer's first chunk
            st.stall_ps += now - q.free
            self.start_ps[i] = now
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
                end = self.memory.transfer(q.rc[p], now, crb, False, q.ra[p], rb / max(d, 1) * 1000.0, q.re[p])
                occ = max(occ, end - lat)
                q.data_end = max(q.data_end, end)
            if cwb:
                end = self.memory.transfer(q.wc[p], now, cwb, True, q.wa[p], wb / max(d, 1) * 1000.0, q.we[p])
                occ = max(occ, end - lat)
                q.data_end = max(q.data_end, end)
            data_end = occ
            e.free = occ
            q.free = occ
            st.busy_ps += occ - now
            if q.rem > 0:  # more chunks: the engine takes the next queue's turn first
                return
            q.rem = -1
            comp = max(occ, q.data_end) + self._fixed_ps
        e.free = data_end
        q.free = data_end
        q.pos = p + 1
        self.end[i] = comp
        self.occ_end[i] = data_end
        if q.s0s[p] >= 0 or q.s1s[p] >= 0:
            at = self._signal_time(q.sid, comp)  # after the queue's earlier signals (program order)
            if at == now:
                # a zero-time completion (nop): apply its signals as a separate event of this instant, after
                # this round of DMA decisions (the queue is not done until then).
                sig = [(q.s0s[p], q.s0v[p]), (q.s1s[p], q.s1v[p])]
                q.deferred += 1
                call_at(self.env, 0, lambda _e, q=q, sig=sig: self._deferred_signals(q, sig))
            else:
                if q.s0s[p] >= 0:
                    self.sems.signal(q.s0s[p], at, q.s0v[p])
                if q.s1s[p] >= 0:
                    self.sems.signal(q.s1s[p], at, q.s1v[p])
        if q.pos >= q.n and not q.deferred:
            self.done[q.sid] = True

    def _deferred_signals(self, q: DmaQueue, sig: list[tuple[int, int]]) -> None:
        now = self.env.now
        q.deferred -= 1
        if not q.deferred and q.pos >= q.n:
            self.done[q.sid] = True
        for s, v in sig:
            if s >= 0:
                self.sems.signal(s, now, v)
