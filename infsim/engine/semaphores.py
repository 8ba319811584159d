"""Semaphores of the engine: monotonic counters whose waits are satisfied from the instant the running total
of applied signals reaches the waited value.

A signal ``(sem, time, inc)`` adds ``inc`` at ``time`` (when the signalling instruction's signals take
effect: its completion, or later while earlier signals of its stream are pending; the engine computes
it, :meth:`infsim.engine.streams.StreamState.signal_time`); a
wait ``(sem, v)`` holds from the first instant the total is ``>= v``. Two implementations with the same
interface (``signal``, ``crossing``, ``wait``, ``wait_cb``, ``register``, ``total``):

* :class:`PlainSems` -- the textbook model: every signal is a timed simpy event that adds to the counter and
  wakes the waiters it satisfies (the engine's ``per_instruction`` mode, the reference);
* :class:`FastSems` -- signals are not events: each semaphore keeps the applied total and the sorted list of
  known future signals, so the *known crossing* of a wait (the time the known signals reach its value) is
  computed directly, and a waiter is woken by one event at that crossing (moved earlier when a new signal
  lowers it). Why this gives the same times as :class:`PlainSems` is argued in :mod:`infsim.engine.core`
  ("The fast path"); it needs the caller's lookahead (which streams can still signal) for that.

Left out: semaphore hardware costs (a signal or wait takes no time of its own; instruction latencies carry
it), counter width and wrap-around, and decrements (the ISA's semaphores only count up).
"""

from __future__ import annotations

import bisect
from typing import Any

import simpy

from .events import Env, call_at

SAT = -1  # crossing(): the wait holds now
NEVER = 1 << 62  # crossing(): the known signals never reach the value


class _Waiter:
    __slots__ = ("sem", "value", "cb", "sched", "fired")

    def __init__(self, sem: int, value: int, cb: Any):
        self.sem = sem
        self.value = value
        self.cb = cb
        self.sched = NEVER
        self.fired = False



class FastSems:
    """Semaphores holding known future signals (see "The fast path" in the module docstring)."""

    def __init__(self, env: Env, nsem: int):
        self.env = env
        self.applied = [0] * nsem
        self.total = [0] * nsem
        self.pt: list[list[int]] = [[] for _ in range(nsem)]  # times of the known future signals, sorted
        self.pv: list[list[int]] = [[] for _ in range(nsem)]  # their increments
        self.cum: list[list[int]] = [[] for _ in range(nsem)]  # running sums of pv (cum[j] = pv[0] + .. + pv[j])
        self.head = [0] * nsem
        self.waiters: list[list[_Waiter]] = [[] for _ in range(nsem)]

    def signal(self, s: int, time: int, inc: int) -> None:
        self.total[s] += inc
        if time <= self.env.now:
            self.applied[s] += inc
        else:
            pt, pv, cum = self.pt[s], self.pv[s], self.cum[s]
            if not pt or time >= pt[-1]:
                pt.append(time)
                pv.append(inc)
                cum.append((cum[-1] if cum else 0) + inc)
            else:  # out of order (rare): insert, and redo the running sums from there
                k = bisect.bisect_right(pt, time, self.head[s])
                pt.insert(k, time)
                pv.insert(k, inc)
                cum.insert(k, 0)
                acc = cum[k - 1] if k else 0
                for j in range(k, len(pv)):
                    acc += pv[j]
                    cum[j] = acc
        if self.waiters[s]:
            self._recheck(s, time)

    def crossing(self, s: int, v: int) -> int:
        """``SAT`` if ``sem >= v`` now, else the known crossing time (``NEVER`` if not reached).

        O(log n) in the known future signals: the signals due by now are applied by a binary search on
        their times, and the first one whose running sum reaches ``v`` by a binary search on the running
        sums (a linear scan made long semaphore chains quadratic)."""
        ap = self.applied[s]
        if ap >= v:
            return SAT
        pt = self.pt[s]
        h0 = h = self.head[s]
        n = len(pt)
        if h < n:
            cum = self.cum[s]
            now = self.env.now
            if pt[h] <= now:
                h = bisect.bisect_right(pt, now, h)
                ap += cum[h - 1] - (cum[h0 - 1] if h0 else 0)
                self.applied[s] = ap
                if h > 256 and 2 * h > n:  # drop the applied prefix (amortised O(1) per signal)
                    base = cum[h - 1]
                    del pt[:h]
                    del self.pv[s][:h]
                    del cum[:h]
                    for j in range(len(cum)):
                        cum[j] -= base
                    h = 0
                    n = len(pt)
                self.head[s] = h
            if ap >= v:
                return SAT
            # first j >= h with ap + cum[j] - cum[h - 1] >= v
            j = bisect.bisect_left(cum, v - ap + (cum[h - 1] if h else 0), h, n)
            if j < n:
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
        call_at(self.env, c - self.env.now, lambda _e, w=w: self._fire(w))

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
                call_at(self.env, 0, lambda _e, w=w: self._fire(w))
            elif c < w.sched:
                self._schedule(w, c)


class PlainSems:
    """Textbook semaphores: every signal is a timed event that adds to the counter and wakes waiters."""

    def __init__(self, env: Env, nsem: int):
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


Semaphores = FastSems | PlainSems
