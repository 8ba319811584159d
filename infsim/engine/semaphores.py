"""Semaphores of the simpy reference engine: monotonic counters whose waits are satisfied from the instant
the running total of applied signals reaches the waited value.

A signal ``(sem, time, inc)`` adds ``inc`` at ``time`` (when the signalling instruction's signals take
effect: its completion, or later while earlier signals of its stream are pending; the engine computes
it, :meth:`infsim.engine.streams.StreamState.signal_time`) as a timed simpy event, which wakes the waiters
it satisfies; a wait ``(sem, v)`` holds from the first instant the total is ``>= v``. The numba engine
keeps the same counters as sorted lists of known signals (:mod:`infsim.engine.kernel`).

Left out: semaphore hardware costs (a signal or wait takes no time of its own; instruction latencies carry
it), counter width and wrap-around, and decrements (the ISA's semaphores only count up).
"""

from __future__ import annotations

from typing import Any

import simpy

from .events import Env

NEVER = 1 << 62  # a time later than any event of a run


class Semaphores:
    """Counters ``value[s]``; ``total[s]`` also counts the signals given but not yet applied."""

    def __init__(self, env: Env, nsem: int):
        self.env = env
        self.value = [0] * nsem
        self.total = [0] * nsem
        self.waiters: list[list[tuple[int, Any]]] = [[] for _ in range(nsem)]

    def signal(self, s: int, time: int, inc: int) -> None:
        """Add ``inc`` to ``s`` at ``time`` (``>= now``), as an event of that instant."""
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

    def holds(self, s: int, v: int) -> bool:
        """``s >= v`` now."""
        return self.value[s] >= v

    def wait(self, s: int, v: int) -> simpy.Event:
        """An event that fires at the instant ``s >= v`` holds."""
        ev = self.env.event()
        self.wait_cb(s, v, ev.succeed)
        return ev

    def wait_cb(self, s: int, v: int, cb: Any) -> None:
        """Call ``cb()`` at the instant ``s >= v`` holds (at once if it holds now)."""
        if self.value[s] >= v:
            cb()
        else:
            self.waiters[s].append((v, cb))
