"""Bare simpy events for the engine's callbacks (cheaper than a ``Timeout`` or a ``Process``), the event
priority the DMA arbiter uses to act after everything else of an instant, and :class:`Env`, the simpy
environment on the engine's integer clock.

Models nothing by itself: the ordering rules it provides are what makes the engine's results independent
of simpy's event-queue order (see :mod:`infsim.engine.dma_arbiter`).
"""

from __future__ import annotations

from typing import Any

import simpy
from simpy.events import NORMAL, EventPriority

LOW_PRIORITY = EventPriority(2)  # after simpy's URGENT (0) and NORMAL (1) events of the same instant


class Env(simpy.Environment):
    """A simpy environment whose clock is an integer (picoseconds in the engine).

    Every delay the engine schedules is an ``int`` and the clock starts at 0, so ``now`` stays an ``int``;
    this class only says so to the type checker (simpy types its clock ``int | float``).
    """

    _now: int

    @property
    def now(self) -> int:
        return self._now


def call_at(env: Env, delay: int, fn: Any, priority: EventPriority = NORMAL) -> None:
    """Run ``fn(event)`` ``delay`` time units from now (one bare simpy event, cheaper than a Timeout)."""
    ev = simpy.Event(env)
    ev._ok = True
    ev._value = None
    ev.callbacks.append(fn)
    env.schedule(ev, priority, delay)
