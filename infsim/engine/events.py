"""Bare simpy events for the engine's callbacks (cheaper than a ``Timeout`` or a ``Process``), and the event
priority the DMA arbiter uses to act after everything else of an instant.

Models nothing by itself: the ordering rules it provides are what makes the engine's results independent
of simpy's event-queue order (see :mod:`infsim.engine.dma_arbiter`).
"""

from __future__ import annotations

from typing import Any

import simpy

LOW_PRIORITY = 2  # after simpy's URGENT (0) and NORMAL (1) events of the same instant


def call_at(env: simpy.Environment, delay: int, fn: Any, priority: int = 1) -> None:
    """Run ``fn(event)`` ``delay`` time units from now (one bare simpy event, cheaper than a Timeout)."""
    ev = simpy.Event(env)
    ev._ok = True
    ev._value = None
    ev.callbacks.append(fn)
    env.schedule(ev, priority, delay)
